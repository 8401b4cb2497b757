//! Exactly-once: the transactional producer, and one transaction per batch of finished orders (their tabs, their
//! dead letters and their offsets, committed together or not at all). Every call here blocks: it runs on the
//! blocking pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::TopicPartitionList;
use tabs::kafka::{self, KafkaArgs, ProducerKind};
use tabs::messages::to_json;
use tabs::time::now_ns;
use tracing::{error, warn};

use crate::completion::Outcome;
use crate::doubt::{TransactionContext, Written};
use crate::error::KafkaFailure;

/// Timeout of one blocking call to the broker (transaction steps, committed offsets, seeks).
pub const BROKER_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The transactional producer. A plain (not threaded) producer: its delivery reports are served by the
/// transaction's own flush, which then returns as soon as the last record is acknowledged. (A
/// `ThreadedProducer`'s background thread takes those reports, and rdkafka's flush then sleeps out its 100 ms
/// poll on every transaction.)
pub type TransactionalProducer = Arc<BaseProducer<TransactionContext>>;

/// `init_transactions`, running on the blocking pool.
pub type InitTask = tokio::task::JoinHandle<KafkaResult<()>>;

/// Creates the transactional producer (noting where its records go in `written`, which outlives it) and starts
/// `init_transactions` on the blocking pool; the first transaction waits for the returned task.
pub fn start_producer(
    args: &KafkaArgs,
    kind: &ProducerKind,
    written: &Arc<Written>,
    timeout: Duration,
) -> anyhow::Result<(TransactionalProducer, InitTask)> {
    let context = TransactionContext {
        errors: Arc::default(),
        written: Arc::clone(written),
        step: Arc::default(),
    };
    let producer: TransactionalProducer = Arc::new(kafka::create_producer(args, kind, context)?);
    let init = Arc::clone(&producer);
    let ready = tokio::task::spawn_blocking(move || {
        // Connect first: started on a producer with no broker connection yet, librdkafka's coordinator lookup
        // finds "no broker available" and retries only on its 500 ms timer (measured: first commits at ~520 ms
        // instead of ~200 ms, one start in two).
        let _ = init.client().fetch_metadata(None, timeout);
        init.init_transactions(timeout)
    });
    Ok((producer, ready))
}

/// Topics a transaction writes to.
#[derive(Debug, Clone)]
pub struct Topics {
    pub deliveries: String,
    pub dlq: String,
}

/// Writes the tabs and dead letters of `results` and commits `offsets` in one transaction.
pub fn transact(
    producer: &BaseProducer<TransactionContext>,
    topics: &Topics,
    results: &[Outcome],
    offsets: &TopicPartitionList,
    group: &ConsumerGroupMetadata,
) -> Result<(), KafkaFailure> {
    let step = |call| producer.context().step.enter(Some(call));
    let attempt = || -> KafkaResult<()> {
        step("begin_transaction");
        producer.begin_transaction()?;
        step("send");
        for outcome in results {
            match outcome {
                Outcome::Made { order, tabs } => {
                    for tab in tabs.tabs(order, now_ns) {
                        send(
                            producer,
                            &topics.deliveries,
                            Some(order.patient_id.as_bytes()),
                            &to_json(&tab),
                        )?;
                    }
                }
                Outcome::Rejected { key, letter } => {
                    send(producer, &topics.dlq, key.as_deref(), &to_json(letter))?;
                }
                // Never in a transaction: at-least-once results only.
                Outcome::Delivered { .. } | Outcome::Failed(_) => {}
                Outcome::AlreadyDelivered { .. } => {}
            }
        }
        step("send_offsets_to_transaction");
        retrying(|| producer.send_offsets_to_transaction(offsets, group, BROKER_CALL_TIMEOUT))?;
        step("flush");
        flush(producer, BROKER_CALL_TIMEOUT)?;
        step("commit_transaction");
        retrying(|| producer.commit_transaction(BROKER_CALL_TIMEOUT))
    };
    let ended = match attempt() {
        Ok(()) => Ok(()),
        Err(err) if is_fatal(&err) => Err(KafkaFailure::Fatal(err.to_string())),
        Err(err) => {
            step("abort_transaction");
            match abort(producer) {
                Ok(()) => Err(KafkaFailure::Aborted(err.to_string())),
                Err(abort_err) => {
                    error!(error = %abort_err, "aborting the transaction failed");
                    Err(KafkaFailure::Fatal(err.to_string()))
                }
            }
        }
    };
    // Every delivery report of the transaction has been served (by the flush, the commit or the abort).
    producer.context().written.end_transaction();
    producer.context().step.enter(None);
    ended
}

/// Aborts the open transaction.
///
/// librdkafka's abort drops the records still queued but waits for those in flight, and only the application can
/// serve their delivery reports (this producer takes them as events): called with the whole timeout it would wait
/// it out. So it is called in short steps, each resuming the last, with the reports served in between.
fn abort(producer: &BaseProducer<TransactionContext>) -> KafkaResult<()> {
    const STEP: Duration = Duration::from_millis(200);
    let deadline = Instant::now() + BROKER_CALL_TIMEOUT;
    loop {
        match producer.abort_transaction(STEP) {
            Err(KafkaError::Transaction(e)) if e.is_retriable() && Instant::now() < deadline => {
                let left = deadline.saturating_duration_since(Instant::now());
                // A timeout here only means more reports are to come: the next step serves them.
                let _ = flush(producer, left.min(Duration::from_secs(1)));
            }
            other => return other,
        }
    }
}

fn is_fatal(err: &KafkaError) -> bool {
    match err {
        KafkaError::Transaction(e) => e.is_fatal(),
        other => other.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal),
    }
}

/// Calls a transaction step again while librdkafka says the error is retriable (a coordinator moving, a broker
/// restarting, a timeout).
fn retrying(mut step: impl FnMut() -> KafkaResult<()>) -> KafkaResult<()> {
    // A broker restart makes coordinators unavailable for seconds: keep retrying for as long as one broker call
    // may take, backing off up to a second.
    let deadline = Instant::now() + BROKER_CALL_TIMEOUT;
    let mut backoff = Duration::from_millis(50);
    loop {
        match step() {
            Err(KafkaError::Transaction(e))
                if e.is_retriable() && !group_moved_on(e.code()) && Instant::now() < deadline =>
            {
                warn!(error = %e, "retriable transaction error; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

/// Waits until every record handed to `producer` is acknowledged, serving delivery reports in 1 ms polls, so
/// the wait ends with the last acknowledgement. (rdkafka's own flush polls in 100 ms slices and would add up to
/// 100 ms to every transaction; `commit_transaction` then finds nothing left to flush.)
fn flush(producer: &BaseProducer<TransactionContext>, timeout: Duration) -> KafkaResult<()> {
    let deadline = Instant::now() + timeout;
    while producer.in_flight_count() > 0 {
        if Instant::now() >= deadline {
            return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
        }
        producer.poll(Duration::from_millis(1));
    }
    Ok(())
}

/// Whether the error says the group has moved on from the membership the transaction's offsets were sent with
/// (a rebalance): sending the same offsets again cannot succeed, so the transaction is aborted instead.
fn group_moved_on(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::IllegalGeneration
            | RDKafkaErrorCode::UnknownMemberId
            | RDKafkaErrorCode::RebalanceInProgress
            | RDKafkaErrorCode::FencedInstanceId
            | RDKafkaErrorCode::FencedMemberEpoch
            | RDKafkaErrorCode::StaleMemberEpoch
    )
}

/// Enqueues one record, waiting while librdkafka's queue is full.
fn send(
    producer: &BaseProducer<TransactionContext>,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
) -> KafkaResult<()> {
    loop {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((err, _)) if err.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                // Serve delivery reports until there is room.
                producer.poll(Duration::from_millis(10));
            }
            Err((err, _)) => return Err(err),
        }
    }
}
