//! The topic reader against the real broker: what is queued between records does not end a read early.

use std::time::Duration;

use audit::{Start, TopicReader};
use tabs::kafka::{KafkaArgs, Property};
use testkit::{create_topic, produce, require_broker, unique, RawRecord};

/// librdkafka queues an end of partition after each partition's last record and, with `debug=fetch`, several
/// log lines per fetch, on the queue the records are on. One call of `take_available` must still hand over every
/// record queued; a loop of `next` without a timeout stopped at the first of them (the local mode's observer fell
/// behind for good so, after a broker's fence).
#[tokio::test]
async fn every_queued_record_is_taken_in_one_call_whatever_is_queued_between() {
    let bootstrap = require_broker!();
    let topic = unique("reader");
    create_topic(&bootstrap, &topic, 12).await;
    let keys: Vec<String> = (0..240).map(|i| format!("patient-{i}")).collect();
    let records: Vec<RawRecord<'_>> = keys
        .iter()
        .map(|k| (Some(k.as_bytes()), Some(k.as_bytes())))
        .collect();
    produce(&bootstrap, &topic, &records).await;

    let mut kafka = KafkaArgs::plaintext(&bootstrap);
    kafka
        .kafka_properties
        .push("debug=fetch".parse::<Property>().unwrap());
    let (taken, caught_up) = tokio::task::spawn_blocking(move || {
        let mut reader = TopicReader::open(&kafka, &topic, Start::Beginning, true).unwrap();
        // Time for librdkafka to fetch all of it, with every partition's end and the log lines of its fetches.
        std::thread::sleep(Duration::from_secs(3));
        let mut taken = 0;
        let counted = reader.take_available(10_000, |_| taken += 1).unwrap();
        assert_eq!(counted, taken);
        (taken, reader.caught_up())
    })
    .await
    .unwrap();
    assert_eq!(taken, 240, "records taken in one call");
    assert!(caught_up, "every partition's end was seen");
}
