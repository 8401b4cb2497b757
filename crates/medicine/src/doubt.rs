//! Orders done in Kafka that the group's offsets say are not: the check a maker runs before making orders again.
//!
//! Two faults, both seen in the fault campaign (documentation/RELIABILITY.md), leave a transaction's tabs committed
//! while its offsets are not: on three nodes a killed transaction coordinator, started again, sent `COMMIT` for a
//! transaction to one partition while its successor aborted it everywhere else (the maker, fenced, was told nothing
//! was committed); on a single node a coordinator skipped the `COMMIT` of a partition without a leader. In both the
//! maker rewinds to the group's offsets and would make those orders again: their tabs twice. The producer cannot
//! tell; only the deliveries topic can. So the transactional producer notes where each transaction's tabs went
//! ([`Written`], from its delivery reports), and after a rewind whose outcome was in doubt (a fenced or failed
//! producer, or offsets read back behind the maker's own commits) the maker reads those places `read_committed`
//! ([`delivered_orders`]) and does not make again the orders found there.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::ProducerContext;
use rdkafka::{Offset, TopicPartitionList};
use tabs::kafka::{ErrorTracker, KafkaArgs, ReaderOptions, TabsContext};
use tabs::messages::Tab;

/// An order's identity in the contract: its patient and its timestamp.
pub type OrderKey = (String, u64);

/// Per partition of the deliveries topic, the lowest and the highest offset written.
pub type Span = BTreeMap<i32, (i64, i64)>;

/// How many of the latest transactions [`Written`] remembers: the one whose outcome is in doubt, and those before
/// it whose offsets a broker may have lost (seen: the transaction just before a failed one).
const RECENT_TRANSACTIONS: usize = 16;

/// Kafka's default `transaction.abort.timed.out.transaction.cleanup.interval.ms`: how often a broker looks for
/// transactions past their timeout, to abort them.
pub const BROKER_TIMEOUT_CHECK: Duration = Duration::from_secs(10);

/// After a commit or an abort has returned, its markers may still be on their way to the partitions.
const MARKERS_ON_THEIR_WAY: Duration = Duration::from_secs(2);

/// When a read-back stops waiting for the transactions that hold the deliveries topic back, given the last write
/// of the span it reads and the makers' transaction timeout. A transaction holding back a partition's stable offset
/// below that write began before it, so the broker has decided it, at the latest, one timeout and one of its checks
/// for timed-out transactions later (every maker of a group has the same timeout). Past that, a transaction still
/// undecided is one the broker will not decide by itself: its markers were dropped (seen on a single node stopped
/// mid-commit: `Couldn't find leader endpoint for partitions …`, documentation/RELIABILITY.md). Only the next
/// transaction of the same producer ends it, and waiting for it would hold the maker, the only one who can.
pub fn undecided_after(
    last_write: Instant,
    transaction_timeout: Duration,
    now: Instant,
) -> Instant {
    (last_write + transaction_timeout + BROKER_TIMEOUT_CHECK).max(now + MARKERS_ON_THEIR_WAY)
}

/// Where the transactional producer's records went, from its delivery reports: the transaction being written, and
/// the last [`RECENT_TRANSACTIONS`] ones.
#[derive(Debug)]
pub struct Written {
    topic: String,
    current: Mutex<Span>,
    recent: Mutex<VecDeque<Span>>,
    /// When the last record was acknowledged.
    last_write: Mutex<Option<Instant>>,
}

impl Written {
    /// Notes the records of `topic` (the deliveries topic).
    pub fn new(topic: &str) -> Self {
        Self {
            topic: topic.to_owned(),
            current: Mutex::new(Span::new()),
            recent: Mutex::new(VecDeque::new()),
            last_write: Mutex::new(None),
        }
    }

    fn record(&self, topic: &str, partition: i32, offset: i64) {
        if topic != self.topic {
            return;
        }
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let span = current.entry(partition).or_insert((offset, offset));
        span.0 = span.0.min(offset);
        span.1 = span.1.max(offset);
        *self.last_write.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// When the last record of the topic was acknowledged, if any was.
    pub fn last_write(&self) -> Option<Instant> {
        *self.last_write.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the current transaction (committed, aborted or in doubt): its records join the recent ones.
    pub fn end_transaction(&self) {
        let span = std::mem::take(&mut *self.current.lock().unwrap_or_else(|e| e.into_inner()));
        if span.is_empty() {
            return;
        }
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT_TRANSACTIONS {
            recent.pop_front();
        }
        recent.push_back(span);
    }

    /// Where the recent transactions wrote, all together.
    pub fn recent(&self) -> Span {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let mut all = Span::new();
        for span in recent.iter() {
            for (&partition, &(low, high)) in span {
                let entry = all.entry(partition).or_insert((low, high));
                entry.0 = entry.0.min(low);
                entry.1 = entry.1.max(high);
            }
        }
        all
    }
}

/// The transactional producer's context: errors as every client of the project reports them, where its records
/// went, and the transaction step under way.
#[derive(Debug, Clone)]
pub struct TransactionContext {
    pub errors: Arc<ErrorTracker>,
    pub written: Arc<Written>,
    pub step: Arc<Step>,
}

/// The librdkafka call a transaction is in, and since when: named when a commit is given up as stuck.
#[derive(Debug, Default)]
pub struct Step(Mutex<Option<(&'static str, Instant)>>);

impl Step {
    /// Enters `call` (`None`: between transactions).
    pub fn enter(&self, call: Option<&'static str>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = call.map(|c| (c, Instant::now()));
    }

    /// The call under way and how long it has run.
    pub fn current(&self) -> Option<(&'static str, Duration)> {
        let step = *self.0.lock().unwrap_or_else(|e| e.into_inner());
        step.map(|(call, since)| (call, since.elapsed()))
    }
}

impl ClientContext for TransactionContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.record(&error, reason);
    }
}

impl ProducerContext for TransactionContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        if let Ok(message) = result {
            self.written
                .record(message.topic(), message.partition(), message.offset());
        }
    }
}

/// The orders whose tabs `topic` holds, committed, within `span` (and after it, up to the end of what is decided).
///
/// Waits first until every transaction in `span` is decided: until each partition's last stable offset is past
/// its part of `span` (a coordinator still completing the transaction, or aborting a dead producer's, holds it
/// back), at most `timeout`. An undecided span is an error: the caller cannot know and says so.
pub fn delivered_orders(
    kafka: &KafkaArgs,
    group: &str,
    topic: &str,
    span: &Span,
    timeout: Duration,
) -> anyhow::Result<HashSet<OrderKey>> {
    let mut orders = HashSet::new();
    if span.is_empty() {
        return Ok(orders);
    }
    let deadline = Instant::now() + timeout;
    let consumer: BaseConsumer<TabsContext> = tabs::kafka::create_reader(
        kafka,
        &ReaderOptions {
            // Never joined nor committed to: an assigning reader; the maker's own group is one it may use.
            group: group.to_owned(),
            read_committed: true,
            report_partition_end: true,
        },
        TabsContext::default(),
    )?;
    // A read_committed client's end offset is the last stable offset.
    let mut stable = BTreeMap::new();
    for (&partition, &(_, high)) in span {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (_, end) = consumer
                .fetch_watermarks(topic, partition, left.max(Duration::from_millis(100)))
                .with_context(|| {
                    format!("reading the last stable offset of {topic}/{partition}")
                })?;
            if end > high {
                stable.insert(partition, end);
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "{topic}/{partition}: a transaction is still undecided at offset {end} after {timeout:?} \
                     (the recent transactions wrote up to {high}); the broker has not written its markers"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let mut assignment = TopicPartitionList::new();
    for (&partition, &(low, _)) in span {
        assignment.add_partition_offset(topic, partition, Offset::Offset(low))?;
    }
    consumer.assign(&assignment)?;
    let mut open: HashSet<i32> = span.keys().copied().collect();
    while !open.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("reading {topic} back took longer than {timeout:?}");
        }
        match consumer.poll(left.min(Duration::from_millis(500))) {
            None => {}
            Some(Ok(message)) => {
                if let Some(Ok(tab)) = message.payload().map(serde_json::from_slice::<Tab>) {
                    orders.insert((tab.patient_id, tab.order_timestamp_ns));
                }
                if message.offset() + 1 >= stable[&message.partition()] {
                    open.remove(&message.partition());
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                open.remove(&partition);
            }
            // A broker killed or restarting meanwhile: the reader goes on, as the maker's consumer does (a read-back
            // given up on it once made 77 tabs twice on three nodes).
            Some(Err(err)) if !crate::consumer::ends_reading(&err) => {
                tracing::debug!(error = %err, "reading {topic} back: consumer error (retrying)");
            }
            Some(Err(err)) => return Err(err).context(format!("reading {topic} back")),
        }
    }
    Ok(orders)
}

#[cfg(test)]
mod tests {
    use rdkafka::producer::{BaseRecord, Producer};

    #[test]
    fn a_read_back_waits_until_the_broker_has_decided_every_transaction_it_reads() {
        let now = Instant::now();
        let timeout = Duration::from_secs(10);
        // The last write 12 s ago: the broker decides by 8 s from now.
        let written = now - Duration::from_secs(12);
        assert_eq!(
            undecided_after(written, timeout, now),
            now + Duration::from_secs(8)
        );
        // Long past: markers still on their way get their due.
        let written = now - Duration::from_secs(60);
        assert_eq!(
            undecided_after(written, timeout, now),
            now + MARKERS_ON_THEIR_WAY
        );
    }
    use tabs::kafka::ProducerKind;

    use super::*;
    use crate::transactions::{self, TransactionalProducer};

    fn tab(patient: &str, order: u64) -> Vec<u8> {
        tabs::messages::to_json(&Tab {
            patient_id: patient.to_owned(),
            order_timestamp_ns: order,
            order_tabs_count: 1,
            seq_in_order: 1,
            tab_pow: String::new(),
            delivery_timestamp_ns: 0,
        })
    }

    /// Begins a transaction of one tab per order to `topic` (in the partition given, or by key), and waits
    /// until they are all written.
    fn transaction(
        producer: &TransactionalProducer,
        topic: &str,
        orders: &[(&str, u64, Option<i32>)],
    ) {
        producer.begin_transaction().unwrap();
        for &(patient, order, partition) in orders {
            let payload = tab(patient, order);
            let mut record = BaseRecord::to(topic).key(patient).payload(&payload);
            if let Some(partition) = partition {
                record = record.partition(partition);
            }
            producer.send(record).map_err(|(e, _)| e).unwrap();
        }
        while producer.in_flight_count() > 0 {
            producer.poll(Duration::from_millis(5));
        }
    }

    fn producer(kafka: &KafkaArgs, written: &Arc<Written>) -> TransactionalProducer {
        let kind = ProducerKind::Transactional {
            id: testkit::unique("doubt"),
            timeout: Duration::from_secs(60),
        };
        let (producer, init) =
            transactions::start_producer(kafka, &kind, written, Duration::from_secs(30)).unwrap();
        futures::executor::block_on(init).unwrap().unwrap();
        producer
    }

    /// Against the test broker: what was committed is found, what was aborted is not, and a span that a
    /// transaction still open holds back is reported undecided until it ends.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_committed_orders_of_the_recent_transactions_are_read_back() {
        let bootstrap = testkit::require_broker!();
        let topic = testkit::unique("doubt");
        testkit::create_topic(&bootstrap, &topic, 3).await;
        tokio::task::spawn_blocking(move || {
            let kafka = KafkaArgs::plaintext(&bootstrap);
            let written = Arc::new(Written::new(&topic));
            let ours = producer(&kafka, &written);
            // Another producer's transaction, open before ours write: it holds every partition's stable offset.
            let theirs = producer(&kafka, &Arc::new(Written::new("elsewhere")));
            let everywhere: Vec<_> = (0..3).map(|p| ("other", 1, Some(p))).collect();
            transaction(&theirs, &topic, &everywhere);
            transaction(
                &ours,
                &topic,
                &[("a", 1, None), ("b", 2, None), ("c", 3, None)],
            );
            ours.commit_transaction(Duration::from_secs(30)).unwrap();
            written.end_transaction();
            transaction(&ours, &topic, &[("d", 4, None), ("e", 5, None)]);
            ours.abort_transaction(Duration::from_secs(30)).unwrap();
            written.end_transaction();
            let span = written.recent();
            assert!(!span.is_empty());

            let undecided = delivered_orders(&kafka, "g", &topic, &span, Duration::from_secs(2));
            let error = format!("{:#}", undecided.unwrap_err());
            assert!(error.contains("still undecided"), "{error}");

            theirs.commit_transaction(Duration::from_secs(30)).unwrap();
            let found =
                delivered_orders(&kafka, "g", &topic, &span, Duration::from_secs(30)).unwrap();
            let key = |p: &str, t| (p.to_owned(), t);
            for committed in [key("a", 1), key("b", 2), key("c", 3)] {
                assert!(
                    found.contains(&committed),
                    "{committed:?} not found in {found:?}"
                );
            }
            for aborted in [key("d", 4), key("e", 5)] {
                assert!(!found.contains(&aborted), "{aborted:?} found in {found:?}");
            }
        })
        .await
        .unwrap();
    }

    #[test]
    fn the_step_names_the_call_under_way_and_nothing_between_transactions() {
        let step = Step::default();
        assert!(step.current().is_none());
        step.enter(Some("send_offsets_to_transaction"));
        let (call, _) = step.current().expect("a call under way");
        assert_eq!(call, "send_offsets_to_transaction");
        step.enter(None);
        assert!(step.current().is_none());
    }

    #[test]
    fn written_keeps_the_span_of_the_latest_transactions_only() {
        let written = Written::new("deliveries");
        written.record("deliveries", 0, 10);
        written.record("deliveries", 0, 7);
        written.record("dlq", 1, 3);
        written.end_transaction();
        assert_eq!(written.recent(), Span::from([(0, (7, 10))]));
        // An empty transaction (dead letters only) takes no place.
        written.record("dlq", 0, 4);
        written.end_transaction();
        for n in 0..RECENT_TRANSACTIONS as i64 {
            written.record("deliveries", 1, 100 + n);
            written.end_transaction();
        }
        assert_eq!(
            written.recent(),
            Span::from([(1, (100, 100 + RECENT_TRANSACTIONS as i64 - 1))]),
            "the first transaction fell out"
        );
    }
}
