//! What a rewind reads while a transaction that carries offsets is still open, on the real broker: the suspect of
//! the three-node work (RELIABILITY.md). A rewind after a replaced producer once read the group's committed offsets
//! before the new producer's `init_transactions` had settled the old transaction. Had it read the offsets from
//! before that transaction while the transaction then committed, the orders would have been made twice. It cannot:
//! a consumer configured as the maker's (`read_committed`) asks for stable offsets only (KIP-447), and Kafka refuses
//! to answer while a transaction holds pending offsets for the partition, until that transaction is decided. The
//! maker's rewind fails on such an answer instead of reading from the beginning (`seek_to_committed`) and tries
//! again (`read_committed_offsets`).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tabs::kafka::{
    consumer_config, producer_config, ConsumerOptions, GroupProtocol, KafkaArgs, ProducerKind,
};
use testkit::{create_topic, require_broker, unique};

fn offsets(topic: &str, offset: i64) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Offset(offset))
        .unwrap();
    list
}

/// The committed offset of partition 0 as the maker's consumer reads it: `Ok(offset)`, or the refusal.
fn committed(consumer: &BaseConsumer, topic: &str) -> Result<Option<i64>, String> {
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, 0);
    let read = consumer
        .committed_offsets(list, Duration::from_secs(3))
        .map_err(|e| e.to_string())?;
    let element = read.find_partition(topic, 0).expect("partition 0");
    element.error().map_err(|e| e.to_string())?;
    Ok(match element.offset() {
        Offset::Offset(offset) => Some(offset),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn offsets_of_an_open_transaction_are_never_read_from_before_it() {
    let bootstrap = require_broker!();
    let topic = unique("stable");
    let group = unique("stable-group");
    create_topic(&bootstrap, &topic, 1).await;
    let kafka = KafkaArgs::plaintext(bootstrap.clone());
    let consumer: BaseConsumer = consumer_config(
        &kafka,
        &ConsumerOptions {
            group: group.clone(),
            protocol: GroupProtocol::Classic,
            read_committed: true,
            prefetch_kbytes: 1024,
        },
    )
    .create()
    .unwrap();
    let producer: BaseProducer = producer_config(
        &kafka,
        &ProducerKind::Transactional {
            id: unique("stable-txn"),
            timeout: Duration::from_secs(60),
        },
    )
    .create()
    .unwrap();
    let timeout = Duration::from_secs(30);
    let metadata = consumer.group_metadata().expect("group metadata");
    // Begins a transaction carrying the group's offset `offset` for partition 0, left open.
    let open_with = |offset: i64| {
        producer.begin_transaction().unwrap();
        producer
            .send_offsets_to_transaction(&offsets(&topic, offset), &metadata, timeout)
            .unwrap();
    };
    tokio::task::block_in_place(|| {
        producer.init_transactions(timeout).unwrap();
        // Offset 3 committed by a transaction.
        open_with(3);
        producer.commit_transaction(timeout).unwrap();
        assert_eq!(committed(&consumer, &topic), Ok(Some(3)));

        // Offset 5 in a transaction left open: the read is refused, never answered with 3.
        open_with(5);
        let pending = committed(&consumer, &topic);
        assert!(
            pending.is_err(),
            "read {pending:?} while a transaction holds offset 5 open"
        );

        // Decided: aborted, 3 again; committed, 5.
        producer.abort_transaction(timeout).unwrap();
        assert_eq!(committed(&consumer, &topic), Ok(Some(3)));
        open_with(5);
        producer.commit_transaction(timeout).unwrap();
        assert_eq!(committed(&consumer, &topic), Ok(Some(5)));
    });
}
