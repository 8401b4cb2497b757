//! At-least-once publishing: an order's tabs (or a rejected record's dead letter) are handed to an idempotent
//! producer as soon as they are made, and the order counts as finished once Kafka acknowledged every one of them.
//!
//! Acknowledgements are counted in librdkafka's delivery callback (one shared counter per order, no future per
//! record); the last one completes the order's one-shot channel. Completing it never blocks, so the callback may
//! run on any thread: librdkafka's poll thread, or a runtime thread that drops the producer at exit. The
//! producer never gives up on a record (`message.timeout.ms=0`): while Kafka is away the in-flight bound stops
//! the maker instead. A record Kafka refuses for good (too large, unknown topic) fails its order.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use tabs::kafka::{self, ErrorTracker, KafkaArgs, ProducerKind};
use tokio::sync::oneshot;

use crate::broker::{Deliver, OutRecord};
use crate::error::KafkaFailure;

/// The records of one order (or dead letter) awaiting their acknowledgements.
pub struct Pending {
    remaining: AtomicU32,
    failure: Mutex<Option<KafkaFailure>>,
    done: Mutex<Option<oneshot::Sender<Result<(), KafkaFailure>>>>,
}

impl Pending {
    /// Expects `records` acknowledgements; the receiver gets the outcome after the last one.
    pub fn new(records: u32) -> (Arc<Self>, oneshot::Receiver<Result<(), KafkaFailure>>) {
        let (sender, receiver) = oneshot::channel();
        let pending = Arc::new(Self {
            remaining: AtomicU32::new(records),
            failure: Mutex::new(None),
            done: Mutex::new(Some(sender)),
        });
        (pending, receiver)
    }

    /// Ends the order now with `reason` (its records could not all be handed over); later acknowledgements are
    /// ignored.
    fn fail(&self, reason: KafkaFailure) {
        if let Some(done) = self.done.lock().ok().and_then(|mut d| d.take()) {
            let _ = done.send(Err(reason));
        }
    }

    /// Counts one acknowledgement (or refusal). Runs in librdkafka's delivery callback, on whatever thread
    /// serves it: it must never block.
    pub fn acknowledged(&self, result: Result<(), KafkaFailure>) {
        if let Err(reason) = result {
            if let Ok(mut failure) = self.failure.lock() {
                failure.get_or_insert(reason);
            }
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let outcome = match self.failure.lock().ok().and_then(|mut f| f.take()) {
            Some(reason) => Err(reason),
            None => Ok(()),
        };
        if let Some(done) = self.done.lock().ok().and_then(|mut d| d.take()) {
            // A dropped receiver (the order was revoked meanwhile) is fine: nobody waits for it any more.
            let _ = done.send(outcome);
        }
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
                .map_err(|(err, _)| KafkaFailure::Refused(err.to_string())),
        );
    }
}

/// The at-least-once producer.
#[derive(Clone)]
pub struct Publisher {
    producer: Arc<ThreadedProducer<AckContext>>,
}

impl Publisher {
    /// An idempotent producer that never gives up on a record.
    pub fn new(args: &KafkaArgs) -> anyhow::Result<Self> {
        let producer =
            kafka::create_producer(args, &ProducerKind::Persistent, AckContext::default())?;
        Ok(Self {
            producer: Arc::new(producer),
        })
    }

    /// Waits up to `timeout` for records in flight (those of orders abandoned at a drain deadline). Blocking.
    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}

impl Deliver for Publisher {
    async fn deliver(&self, topic: &str, records: Vec<OutRecord>) -> Result<(), KafkaFailure> {
        let count = u32::try_from(records.len())
            .map_err(|_| KafkaFailure::Refused("more records than an order can have".to_owned()))?;
        let (pending, done) = Pending::new(count);
        for (key, payload) in &records {
            loop {
                let mut record: BaseRecord<'_, [u8], [u8], Arc<Pending>> =
                    BaseRecord::with_opaque_to(topic, Arc::clone(&pending)).payload(payload);
                if let Some(key) = key {
                    record = record.key(key.as_slice());
                }
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((err, _))
                        if err.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                    {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((err, _)) => {
                        pending.fail(KafkaFailure::Refused(err.to_string()));
                        break;
                    }
                }
            }
        }
        done.await.unwrap_or_else(|_| {
            Err(KafkaFailure::Refused(
                "the producer dropped the order's acknowledgements".to_owned(),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_last_acknowledgement_completes_the_order_even_on_a_runtime_thread() {
        // A delivery callback can run on a runtime thread (a producer dropped there at exit serves its reports
        // in its drop): it must never block there. It used to `blocking_send`, which panics on a runtime thread.
        let (pending, done) = Pending::new(2);
        pending.acknowledged(Ok(()));
        pending.acknowledged(Ok(()));
        assert_eq!(done.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn a_refused_record_fails_its_order_with_the_reason() {
        let (pending, done) = Pending::new(3);
        pending.acknowledged(Ok(()));
        let too_large = KafkaFailure::Refused("Message size too large".into());
        pending.acknowledged(Err(too_large.clone()));
        pending.acknowledged(Ok(()));
        assert_eq!(done.await.unwrap(), Err(too_large));
    }

    #[tokio::test]
    async fn acknowledgements_after_the_order_is_gone_are_harmless() {
        let (pending, done) = Pending::new(1);
        drop(done);
        pending.acknowledged(Ok(()));
        pending.fail(KafkaFailure::Refused("late".into()));
    }
}
