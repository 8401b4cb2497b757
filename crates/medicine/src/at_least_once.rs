//! At-least-once publishing: an order's tabs (or a rejected record's dead letter) are handed to an idempotent
//! producer as soon as they are made, and the order counts as finished once Kafka acknowledged every one of them.
//!
//! Acknowledgements are counted in librdkafka's delivery callback (one shared counter per order, no future per
//! record); the last one reports the order finished to the maker's loop. The producer never gives up on a record
//! (`message.timeout.ms=0`): while Kafka is away the in-flight bound stops the maker instead. A record Kafka
//! refuses for good (too large, unknown topic) fails its order, and the maker exits without committing it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use tabs::kafka::ErrorTracker;
use tokio::sync::mpsc;

use crate::worker::{Completion, Outcome};

/// The producer of at-least-once makers.
pub type Publisher = ThreadedProducer<AckContext>;

/// One order (or dead letter) whose records await their acknowledgements.
pub struct Pending {
    remaining: AtomicU32,
    /// Sent when the last acknowledgement arrives.
    completion: Mutex<Option<Completion>>,
    failure: Mutex<Option<String>>,
    sender: mpsc::Sender<Completion>,
}

impl Pending {
    /// Expects `records` acknowledgements, then sends `completion` on `sender`.
    pub fn new(
        records: u32,
        completion: Completion,
        sender: mpsc::Sender<Completion>,
    ) -> Arc<Self> {
        Arc::new(Self {
            remaining: AtomicU32::new(records),
            completion: Mutex::new(Some(completion)),
            failure: Mutex::new(None),
            sender,
        })
    }

    /// Fails the order now (its records could not all be handed to the producer); acknowledgements of those
    /// that were are then ignored.
    pub async fn fail(&self, reason: String) {
        let completion = self.completion.lock().ok().and_then(|mut c| c.take());
        if let Some(mut completion) = completion {
            completion.outcome = Outcome::Failed(reason);
            let _ = self.sender.send(completion).await;
        }
    }

    /// Counts one acknowledgement (or failure). Runs on librdkafka's polling thread.
    fn acknowledged(&self, result: Result<(), String>) {
        if let Err(reason) = result {
            if let Ok(mut failure) = self.failure.lock() {
                failure.get_or_insert(reason);
            }
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let Some(mut completion) = self.completion.lock().ok().and_then(|mut c| c.take()) else {
            return;
        };
        if let Some(reason) = self.failure.lock().ok().and_then(|mut f| f.take()) {
            completion.outcome = Outcome::Failed(reason);
        }
        // The channel holds one completion per order in flight, so this only waits if the loop is behind; the
        // loop never waits on this thread.
        let _ = self.sender.blocking_send(completion);
    }
}

/// Producer context: counts acknowledgements, reports client errors.
#[derive(Default)]
pub struct AckContext {
    pub errors: Arc<ErrorTracker>,
}

impl ClientContext for AckContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.record(&error, reason);
    }
}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Arc<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Self::DeliveryOpaque) {
        pending.acknowledged(
            result
                .as_ref()
                .map(|_| ())
                .map_err(|(err, _)| err.to_string()),
        );
    }
}

/// Hands records (key, value) to `producer` for `pending`, waiting while librdkafka's queue is full.
pub async fn publish(
    producer: &Publisher,
    topic: &str,
    records: &[(Option<Vec<u8>>, Vec<u8>)],
    pending: &Arc<Pending>,
) -> KafkaResult<()> {
    for (key, payload) in records {
        loop {
            let mut record: BaseRecord<'_, [u8], [u8], Arc<Pending>> =
                BaseRecord::with_opaque_to(topic, Arc::clone(pending)).payload(payload);
            if let Some(key) = key {
                record = record.key(key.as_slice());
            }
            match producer.send(record) {
                Ok(()) => break,
                Err((err, _)) if err.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((err, _)) => return Err(err),
            }
        }
    }
    Ok(())
}
