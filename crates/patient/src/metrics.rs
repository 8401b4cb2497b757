//! What the patients count, for a dashboard.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tabs::metrics;

/// Counters a dashboard plots.
#[derive(Clone)]
pub(crate) struct Metrics {
    pub(crate) acknowledged: Counter,
    pub(crate) failed: Counter,
    pub(crate) pending: Gauge,
    pub(crate) ack_latency: Histogram,
}

impl Metrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            acknowledged: Counter::default(),
            failed: Counter::default(),
            pending: Gauge::default(),
            ack_latency: Histogram::new(metrics::latency_buckets()),
        };
        registry.register(
            "patient_orders_acknowledged",
            "Orders acknowledged by Kafka",
            metrics.acknowledged.clone(),
        );
        registry.register(
            "patient_order_send_errors",
            "Orders Kafka refused or that timed out",
            metrics.failed.clone(),
        );
        registry.register(
            "patient_orders_pending",
            "Orders sent and not yet acknowledged",
            metrics.pending.clone(),
        );
        registry.register(
            "patient_order_ack_latency_seconds",
            "Time from handing an order to the client to its acknowledgement",
            metrics.ack_latency.clone(),
        );
        metrics
    }
}
