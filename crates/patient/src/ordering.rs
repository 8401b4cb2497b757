//! One patient's orders on its schedule, each sent and its acknowledgement awaited on a task of its own, within
//! the bound on orders pending.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng as _;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use tabs::kafka::TabsContext;
use tabs::messages::{to_json, Order};
use tabs::time::MonotonicStamp;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::metrics::Metrics;

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Orders Kafka acknowledged.
    pub acknowledged: u64,
    /// Orders Kafka refused or that timed out.
    pub failed: u64,
    /// Orders still unacknowledged when the flush timeout ran out.
    pub unacknowledged: u64,
}

/// What the patient tasks share.
pub(crate) struct Shared {
    pub(crate) producer: FutureProducer<TabsContext>,
    pub(crate) topic: String,
    pub(crate) metrics: Metrics,
    /// One permit per order awaiting acknowledgement: bounds memory when Kafka is slow or down.
    pub(crate) pending: Arc<Semaphore>,
    /// Tasks awaiting acknowledgements.
    pub(crate) deliveries: TaskTracker,
}

impl Shared {
    /// Waits up to `flush_timeout` for outstanding acknowledgements and reports what is left.
    pub(crate) async fn finish(&self, flush_timeout: Duration) -> Summary {
        self.deliveries.close();
        let waiting = self.metrics.pending.get();
        if waiting > 0 {
            info!(orders = waiting, timeout = ?flush_timeout, "waiting for acknowledgements");
        }
        let flushed = tokio::time::timeout(flush_timeout, self.deliveries.wait())
            .await
            .is_ok();
        let summary = Summary {
            acknowledged: self.metrics.acknowledged.get(),
            failed: self.metrics.failed.get(),
            unacknowledged: self.metrics.pending.get().max(0) as u64,
        };
        if !flushed {
            warn!(
                orders = summary.unacknowledged,
                "orders still unacknowledged at the flush timeout; they may or may not be in the topic"
            );
            // Let the producer be dropped without blocking on requests that cannot complete.
            self.producer
                .purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
        }
        info!(
            acknowledged = summary.acknowledged,
            failed = summary.failed,
            unacknowledged = summary.unacknowledged,
            "patient stopped"
        );
        summary
    }
}

/// One simulated patient: an order every period until shut down or `--orders` reached.
pub(crate) async fn patient(
    id: String,
    offset: Duration,
    config: Config,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let mut ticks =
        tokio::time::interval_at(tokio::time::Instant::now() + offset, config.order_period);
    // After a stall (broker down, pending bound reached) resume the rhythm; a patient does not order in bursts.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut stamp = MonotonicStamp::default();
    let mut placed = 0u64;
    while config.orders == 0 || placed < config.orders {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => break,
        }
        let permit = tokio::select! {
            permit = Arc::clone(&shared.pending).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let order = Order {
            patient_id: id.clone(),
            order_timestamp_ns: stamp.stamp(),
            tabs_count: rand::rng().random_range(1..=config.tabs_count.max_tabs_count),
        };
        if !send(&shared, order, permit, &shutdown).await {
            break;
        }
        placed += 1;
    }
}

/// Hands `order` to the producer and tracks its acknowledgement, holding `permit` until then. Returns false if
/// shutdown came while the client queue was full (the order was not sent and is not logged).
async fn send(
    shared: &Arc<Shared>,
    order: Order,
    permit: OwnedSemaphorePermit,
    shutdown: &CancellationToken,
) -> bool {
    let payload = to_json(&order);
    let sent_at = Instant::now();
    let delivery = loop {
        let record = FutureRecord::to(&shared.topic)
            .key(order.patient_id.as_bytes())
            .payload(&payload);
        match shared.producer.send_result(record) {
            Ok(delivery) => break delivery,
            Err((err, _)) if err.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                // librdkafka's queue is full: wait for it to drain rather than drop the order.
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(10)) => {}
                    () = shutdown.cancelled() => return false,
                }
            }
            Err((err, _)) => {
                error!(patient_id = %order.patient_id, error = %err, "order could not be sent");
                shared.metrics.failed.inc();
                return true;
            }
        }
    };
    shared.metrics.pending.inc();
    let task_shared = Arc::clone(shared);
    shared.deliveries.spawn(async move {
        let shared = task_shared;
        match delivery.await {
            Ok(Ok(delivered)) => {
                shared.metrics.acknowledged.inc();
                shared
                    .metrics
                    .ack_latency
                    .observe(sent_at.elapsed().as_secs_f64());
                info!(
                    patient_id = %order.patient_id,
                    order_timestamp_ns = order.order_timestamp_ns,
                    tabs_count = order.tabs_count,
                    partition = delivered.partition,
                    offset = delivered.offset,
                    "order acknowledged"
                );
            }
            Ok(Err((err, _))) => {
                shared.metrics.failed.inc();
                error!(
                    patient_id = %order.patient_id,
                    order_timestamp_ns = order.order_timestamp_ns,
                    error = %err,
                    "order not delivered"
                );
            }
            Err(_) => debug!(patient_id = %order.patient_id, "order purged at shutdown"),
        }
        shared.metrics.pending.dec();
        drop(permit);
    });
    true
}
