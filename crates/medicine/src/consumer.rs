//! The consumer side: the rdkafka context that turns rebalance callbacks into events for the loop and holds a
//! revocation or a lost assignment until the loop hands the partitions back, the partition lists of pause, resume and rewind, and the
//! look at the group that the surplus rule reads.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tabs::kafka::ErrorTracker;
use tokio::sync::Notify;
use tracing::warn;

/// A change of assignment, reported by the rebalance callbacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebalanced {
    Assigned(Vec<i32>),
    /// Held until [`release`](MakerContext::release): the loop commits what it can of them first.
    Revoked(Vec<i32>),
    /// The assignment was lost: held as a revocation is, until [`release`](MakerContext::release), so that
    /// librdkafka rejoins (and fetches the partitions' committed offsets again, if they come back) only once no
    /// commit of this maker carrying them is still on its way to the group coordinator. Already given up when
    /// the consumer is closing or the rebalance failed.
    Lost(Vec<i32>),
}

/// Consumer context: errors to the tracker, rebalances queued for the loop, a revocation or a lost assignment held
/// for the loop.
///
/// librdkafka lets the application acknowledge a revocation later than its callback (the group waits for it, up
/// to the rebalance timeout; KIP-848 moves nothing else meanwhile and the partitions' new owner gets them once
/// acknowledged). The maker uses that to commit the revoked partitions' finished orders, and to finish those
/// about to be, before their next owner reads from the committed offset. While a revocation is held, librdkafka
/// fetches none of this consumer's partitions; the loop bounds the hold (`--handover-timeout`).
#[derive(Default)]
pub struct MakerContext {
    pub errors: Arc<ErrorTracker>,
    pub topic: String,
    events: Mutex<VecDeque<Rebalanced>>,
    /// The revoked or lost partitions not yet handed back, as librdkafka gave them.
    held: Mutex<Option<TopicPartitionList>>,
    /// Closing: revocations are acknowledged at once (nobody is left to hand them over).
    closing: AtomicBool,
    /// Wakes the loop when an event is queued, even while `recv()` has no record to return.
    pub wake: Notify,
}

impl MakerContext {
    /// A context for the orders topic `topic`.
    pub fn new(topic: &str) -> Self {
        Self {
            topic: topic.to_owned(),
            ..Self::default()
        }
    }

    fn partitions(&self, list: &TopicPartitionList) -> Vec<i32> {
        list.elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect()
    }

    fn push(&self, event: Rebalanced) {
        if let Ok(mut events) = self.events.lock() {
            events.push_back(event);
        }
        self.wake.notify_one();
    }

    /// The oldest event not yet taken.
    pub fn take(&self) -> Option<Rebalanced> {
        self.events.lock().ok().and_then(|mut e| e.pop_front())
    }

    /// Hands the held revocation back to the group, if there is one.
    pub fn release<C: Consumer<Self>>(&self, consumer: &C) -> KafkaResult<()> {
        let held = self.held.lock().ok().and_then(|mut held| held.take());
        match held {
            Some(list) => unassign(consumer, &list),
            None => Ok(()),
        }
    }

    /// From now on revocations are acknowledged at once, and the one held is handed back: the consumer is
    /// leaving the group.
    pub fn close<C: Consumer<Self>>(&self, consumer: &C) -> KafkaResult<()> {
        self.closing.store(true, Ordering::SeqCst);
        self.release(consumer)
    }

    fn hold(&self, list: &TopicPartitionList) {
        if let Ok(mut held) = self.held.lock() {
            match held.as_mut() {
                // librdkafka starts no rebalance while one waits for the application: this does not happen,
                // but if it did, both are handed back together.
                Some(earlier) => {
                    for element in list.elements() {
                        earlier.add_partition(element.topic(), element.partition());
                    }
                }
                None => *held = Some(list.clone()),
            }
        }
    }
}

/// Closes the group side of a consumer when dropped (see [`MakerContext::close`]): whichever way the maker's
/// loop ends, an error included, closing the consumer (which revokes every partition) then never waits for a
/// hand-over that no loop is left to make.
pub struct HandBackOnDrop(pub Arc<StreamConsumer<MakerContext>>);

impl Drop for HandBackOnDrop {
    fn drop(&mut self) {
        if let Err(err) = self.0.context().close(&*self.0) {
            warn!(error = %err, "could not hand revoked partitions back before leaving");
        }
    }
}

/// Gives up `list`: incrementally under a cooperative protocol (KIP-848, cooperative-sticky), else the whole
/// assignment, as an eager protocol revokes it all.
fn unassign<C: Consumer<MakerContext>>(consumer: &C, list: &TopicPartitionList) -> KafkaResult<()> {
    match consumer.rebalance_protocol() {
        RebalanceProtocol::Cooperative => consumer.incremental_unassign(list),
        _ => consumer.unassign(),
    }
}

impl ClientContext for MakerContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.record(&error, reason);
    }
}

impl ConsumerContext for MakerContext {
    /// Replaces rdkafka's own, which acknowledges a revocation at once: here a revocation is held for the loop
    /// unless the assignment is already lost.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        list: &mut TopicPartitionList,
    ) {
        let partitions = self.partitions(list);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let assigned = match consumer.rebalance_protocol() {
                    RebalanceProtocol::Cooperative => consumer.incremental_assign(list),
                    _ => consumer.assign(list),
                };
                match assigned {
                    Ok(()) => self.push(Rebalanced::Assigned(partitions)),
                    Err(err) => {
                        warn!(error = %err, ?partitions, "could not take the assigned partitions")
                    }
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS
                if !self.closing.load(Ordering::SeqCst) =>
            {
                self.hold(list);
                if consumer.assignment_lost() {
                    self.push(Rebalanced::Lost(partitions));
                } else {
                    self.push(Rebalanced::Revoked(partitions));
                }
            }
            _ => {
                if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    warn!(error = ?err, "rebalance error; giving up the partitions");
                }
                if let Err(err) = unassign(consumer, list) {
                    warn!(error = %err, ?partitions, "could not give up the partitions");
                }
                self.push(Rebalanced::Lost(partitions));
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(err) = result {
            // At-least-once only: the orders are made again by whoever reads them next.
            warn!(error = %err, partitions = offsets.count(), "offset commit failed");
        }
    }
}

/// The partition list of `partitions` of `topic`.
pub fn partition_list(topic: &str, partitions: &[i32]) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for &partition in partitions {
        list.add_partition(topic, partition);
    }
    list
}

/// Makes librdkafka fetch again now. A resume alone waits for the fetcher's next wake-up, up to a second
/// (measured: ~750 ms on every resume); a seek of each partition to its current position wakes it at once and
/// changes nothing else, since a paused partition is fetched again from that position anyway.
pub fn restart_fetching(consumer: &StreamConsumer<MakerContext>) {
    let Ok(positions) = consumer.position() else {
        return;
    };
    let mut seeks = TopicPartitionList::new();
    for element in positions.elements() {
        if let Offset::Offset(offset) = element.offset() {
            let _ = seeks.add_partition_offset(
                element.topic(),
                element.partition(),
                Offset::Offset(offset),
            );
        }
    }
    if seeks.count() > 0 {
        if let Err(err) = consumer.seek_partitions(seeks, Duration::ZERO) {
            tracing::debug!(error = %err, "could not nudge the fetcher; it resumes within a second");
        }
    }
}

/// Seeks every assigned partition back to its committed offset (the beginning, for a partition that has none),
/// and returns those offsets by partition. Blocking.
pub fn seek_to_committed(
    consumer: &StreamConsumer<MakerContext>,
    topic: &str,
    timeout: Duration,
) -> KafkaResult<BTreeMap<i32, Option<i64>>> {
    let assignment = consumer.assignment()?;
    if assignment.count() == 0 {
        return Ok(BTreeMap::new());
    }
    let committed = consumer.committed_offsets(assignment, timeout)?;
    seek_to(consumer, topic, &committed, timeout)
}

/// Whether a consumer's error ends its reading for good: the topic gone or forbidden, the group forbidden, a fatal
/// client error. Any other (a broker away or killed, a leader moving) librdkafka gets over by itself, and the
/// reader goes on.
pub fn ends_reading(err: &KafkaError) -> bool {
    matches!(
        err.rdkafka_error_code(),
        Some(
            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition
                | rdkafka::types::RDKafkaErrorCode::TopicAuthorizationFailed
                | rdkafka::types::RDKafkaErrorCode::GroupAuthorizationFailed
                | rdkafka::types::RDKafkaErrorCode::Fatal
        )
    )
}

/// Logged when a rewind finds the group's offsets held back past every transaction's timeout.
pub const UNSTABLE_OFFSETS: &str = "the group's offsets stayed unstable past every transaction's timeout: an offset \
     commit the broker will not complete holds them; rewinding to the offsets committed before it (its orders are \
     made again)";

/// Seeks every assigned partition back to the group's committed offset ([`seek_to_committed`]), reading it as the
/// maker's consumer does (`read_committed`: stable offsets only, KIP-447) for up to `settled`. An offset commit
/// still pending holds such a read back; past every transaction's timeout (`settled`), it is one the broker will
/// not complete (its markers dropped, seen on a single node stopped mid-commit), which only this maker's next
/// transaction ends if it is this maker's: the offsets committed before it are read instead
/// ([`stable_committed_offsets`]), and its orders made again. Blocking.
pub fn rewind_to_committed(
    consumer: &StreamConsumer<MakerContext>,
    (kafka, group, topic): (&tabs::kafka::KafkaArgs, &str, &str),
    settled: Duration,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<i32, Option<i64>>> {
    match seek_to_committed(consumer, topic, settled) {
        Err(KafkaError::MetadataFetch(rdkafka::types::RDKafkaErrorCode::OperationTimedOut)) => {
            warn!(waited = ?settled, "{UNSTABLE_OFFSETS}");
            let stable = stable_committed_offsets(kafka, group, consumer.assignment()?, timeout)
                .context("reading the group's stable offsets")?;
            Ok(seek_to(consumer, topic, &stable, timeout)?)
        }
        other => Ok(other?),
    }
}

/// `group`'s committed offsets of `partitions`, leaving out any offset commit still pending in a transaction: what
/// a `read_uncommitted` client of the group reads (librdkafka asks for stable offsets only for `read_committed`
/// ones, KIP-447). Blocking.
pub fn stable_committed_offsets(
    kafka: &tabs::kafka::KafkaArgs,
    group: &str,
    partitions: TopicPartitionList,
    timeout: Duration,
) -> anyhow::Result<TopicPartitionList> {
    let reader: BaseConsumer = tabs::kafka::create_reader(
        kafka,
        &tabs::kafka::ReaderOptions {
            // Never joins it nor commits to it: it only reads its offsets.
            group: group.to_owned(),
            read_committed: false,
            report_partition_end: false,
        },
        rdkafka::consumer::DefaultConsumerContext,
    )?;
    Ok(reader.committed_offsets(partitions, timeout)?)
}

/// Seeks every partition of `committed` back to its offset there (the beginning, for a partition that has none),
/// and returns those offsets by partition. Blocking.
pub fn seek_to(
    consumer: &StreamConsumer<MakerContext>,
    topic: &str,
    committed: &TopicPartitionList,
    timeout: Duration,
) -> KafkaResult<BTreeMap<i32, Option<i64>>> {
    let mut resumed = BTreeMap::new();
    let mut seeks = TopicPartitionList::new();
    for element in committed.elements() {
        // A partition whose offset could not be read (say, still unstable) must not be read from the beginning.
        element.error()?;
        let committed = match element.offset() {
            Offset::Offset(offset) => Some(offset),
            _ => None,
        };
        if element.topic() == topic {
            resumed.insert(element.partition(), committed);
        }
        // Nothing committed yet: start where a new group starts.
        let offset = committed.map_or(Offset::Beginning, Offset::Offset);
        seeks.add_partition_offset(element.topic(), element.partition(), offset)?;
    }
    consumer.seek_partitions(seeks, timeout)?;
    Ok(resumed)
}

/// KEDA's lag of every partition of `topic` (log end − the group's committed offset, the whole log where
/// nothing is committed) and the members of `group`. Blocking.
pub fn group_view(
    consumer: &StreamConsumer<MakerContext>,
    topic: &str,
    group: &str,
    timeout: Duration,
) -> anyhow::Result<crate::surplus::GroupView> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .context("reading the orders topic's partitions")?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let committed = consumer
        .committed_offsets(partition_list(topic, &partitions), timeout)
        .context("reading the group's committed offsets")?;
    let mut lags = Vec::with_capacity(partitions.len());
    for element in committed.elements() {
        let (_, end) = consumer
            .fetch_watermarks(topic, element.partition(), timeout)
            .context("reading the log end offsets")?;
        let committed = match element.offset() {
            Offset::Offset(offset) => Some(offset),
            _ => None,
        };
        lags.push(tabs::keda::partition_lag(end, committed));
    }
    let described = group_members::describe(consumer.client(), group, timeout)
        .map_err(|err| anyhow::anyhow!("describing group {group}: {err}"))?;
    let me = described.me.context("this maker has no member id yet")?;
    Ok(crate::surplus::GroupView {
        lags,
        members: described.members,
        me,
    })
}

#[cfg(test)]
mod tests {
    use rdkafka::producer::{BaseProducer, Producer};
    use rdkafka::types::RDKafkaErrorCode;
    use tabs::kafka::{
        consumer_config, producer_config, ConsumerOptions, GroupProtocol, KafkaArgs, ProducerKind,
    };

    use super::*;

    fn partition_zero(topic: &str, offset: Option<i64>) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        match offset {
            Some(offset) => list
                .add_partition_offset(topic, 0, Offset::Offset(offset))
                .unwrap(),
            None => {
                list.add_partition(topic, 0);
            }
        }
        list
    }

    #[test]
    fn only_a_topic_or_group_refused_or_a_fatal_error_ends_a_read() {
        for code in [
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::NotLeaderForPartition,
        ] {
            assert!(
                !ends_reading(&KafkaError::MessageConsumption(code)),
                "{code:?}"
            );
        }
        for code in [
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::Fatal,
        ] {
            assert!(
                ends_reading(&KafkaError::MessageConsumption(code)),
                "{code:?}"
            );
        }
    }

    /// The committed offset of partition 0 as the maker's consumer reads it: `Ok(offset)`, or the refusal.
    fn committed(consumer: &BaseConsumer, topic: &str) -> Result<Option<i64>, String> {
        let read = consumer
            .committed_offsets(partition_zero(topic, None), Duration::from_secs(3))
            .map_err(|e| e.to_string())?;
        let element = read.find_partition(topic, 0).expect("partition 0");
        element.error().map_err(|e| e.to_string())?;
        Ok(match element.offset() {
            Offset::Offset(offset) => Some(offset),
            _ => None,
        })
    }

    /// What a rewind reads while a transaction that carries offsets is still open, on the real broker. A rewind
    /// after a replaced producer once read the group's committed offsets before the new producer's
    /// `init_transactions` had settled the old transaction. Had it read the offsets from before that transaction
    /// while the transaction then committed, the orders would have been made twice. It cannot: a consumer
    /// configured as the maker's (`read_committed`) asks for stable offsets only (KIP-447), and Kafka does not
    /// answer while a transaction holds pending offsets for the partition, until that transaction is decided.
    /// The stable read ([`stable_committed_offsets`]), for an offset commit the broker will never complete, leaves
    /// the pending one out.
    #[tokio::test(flavor = "multi_thread")]
    async fn offsets_of_an_open_transaction_are_never_read_from_before_it_but_by_the_stable_read() {
        let bootstrap = testkit::require_broker!();
        let topic = testkit::unique("stable");
        let group = testkit::unique("stable-group");
        testkit::create_topic(&bootstrap, &topic, 1).await;
        let kafka = KafkaArgs::plaintext(bootstrap.clone());
        tokio::task::block_in_place(|| {
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
                    id: testkit::unique("stable-txn"),
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
                    .send_offsets_to_transaction(
                        &partition_zero(&topic, Some(offset)),
                        &metadata,
                        timeout,
                    )
                    .unwrap();
            };
            let stable = || {
                let read =
                    stable_committed_offsets(&kafka, &group, partition_zero(&topic, None), timeout)
                        .unwrap();
                read.find_partition(&topic, 0).unwrap().offset()
            };
            producer.init_transactions(timeout).unwrap();
            // Offset 3 committed by a transaction.
            open_with(3);
            producer.commit_transaction(timeout).unwrap();
            assert_eq!(committed(&consumer, &topic), Ok(Some(3)));

            // Offset 5 in a transaction left open: the maker's read gets no answer, never 3; the stable read, 3.
            open_with(5);
            let pending = committed(&consumer, &topic);
            assert!(
                pending.is_err(),
                "read {pending:?} while a transaction holds offset 5 open"
            );
            assert_eq!(stable(), Offset::Offset(3));

            // Decided: aborted, 3 again; committed, 5.
            producer.abort_transaction(timeout).unwrap();
            assert_eq!(committed(&consumer, &topic), Ok(Some(3)));
            open_with(5);
            producer.commit_transaction(timeout).unwrap();
            assert_eq!(committed(&consumer, &topic), Ok(Some(5)));
            assert_eq!(stable(), Offset::Offset(5));
        });
    }

    /// The rewind itself, on the test broker: an offset commit held open past `settled` is left out (the offset
    /// committed before it is sought), and once it is decided the rewind reads it as the maker's consumer does.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_rewind_held_by_a_pending_offset_commit_seeks_the_stable_offset() {
        let bootstrap = testkit::require_broker!();
        let topic = testkit::unique("rewind");
        let group = testkit::unique("rewind-group");
        testkit::create_topic(&bootstrap, &topic, 1).await;
        let kafka = KafkaArgs::plaintext(bootstrap.clone());
        tokio::task::block_in_place(|| {
            let consumer: StreamConsumer<MakerContext> = tabs::kafka::create_consumer(
                &kafka,
                &ConsumerOptions {
                    group: group.clone(),
                    protocol: GroupProtocol::Classic,
                    read_committed: true,
                    prefetch_kbytes: 1024,
                },
                MakerContext::new(&topic),
            )
            .unwrap();
            consumer.assign(&partition_zero(&topic, None)).unwrap();
            let producer: BaseProducer = producer_config(
                &kafka,
                &ProducerKind::Transactional {
                    id: testkit::unique("rewind-txn"),
                    timeout: Duration::from_secs(60),
                },
            )
            .create()
            .unwrap();
            let timeout = Duration::from_secs(30);
            let metadata = consumer.group_metadata().expect("group metadata");
            producer.init_transactions(timeout).unwrap();
            for (offset, commit) in [(3, true), (5, false)] {
                producer.begin_transaction().unwrap();
                producer
                    .send_offsets_to_transaction(
                        &partition_zero(&topic, Some(offset)),
                        &metadata,
                        timeout,
                    )
                    .unwrap();
                if commit {
                    producer.commit_transaction(timeout).unwrap();
                }
            }
            let rewind = || {
                rewind_to_committed(
                    &consumer,
                    (&kafka, &group, &topic),
                    Duration::from_secs(2),
                    timeout,
                )
                .unwrap()
            };
            assert_eq!(rewind(), BTreeMap::from([(0, Some(3))]));
            producer.commit_transaction(timeout).unwrap();
            assert_eq!(rewind(), BTreeMap::from([(0, Some(5))]));
        });
    }
}
