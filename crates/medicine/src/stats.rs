//! What the maker counts: Prometheus metrics for dashboards and the summary logged at exit.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram as Hdr;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::progress::WaitingSince;

/// Label of dead letters: the rejection's reason code (a small fixed set).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// Buckets of the overhead histogram, in seconds: fine below the objective's 0.1 s, which must be a bound of its
/// own for the objective's ratio (the alert rules read `le="0.1"`).
const OVERHEAD_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The maker's counters.
pub struct Stats {
    pub orders: Counter,
    pub tabs: Counter,
    pub dead_letters: Family<ReasonLabel, Counter>,
    dead_letters_total: Counter,
    pub in_flight: Gauge,
    pub commits: Counter,
    pub aborts: Counter,
    /// Orders started and dropped before they were committed: made again by whoever reads them next.
    pub dropped: Counter,
    /// Partitions whose committed offset a rewind read back behind this maker's own last commit: the broker lost a
    /// commit it had acknowledged.
    pub lost_commits: Counter,
    /// Orders found committed in the deliveries topic after a rewind whose commits were in doubt: not made again.
    pub already_delivered: Counter,
    /// Commits given up because a step of them did not return in time (the producer replaced).
    pub stuck_commits: Counter,
    latency: Histogram,
    /// Order latency past its making time: what the overhead objective (p99 ≤ 100 ms) is about.
    overhead: Histogram,
    /// Per partition held, since when orders have waited without its committed offset moving (see `progress.rs`).
    pub waiting_since: WaitingSince,
    /// The bound within which a partition with orders waiting moves (see `progress.rs`).
    pub liveness_bound: Gauge<f64, AtomicU64>,
    /// Order latency in microseconds, for the exit summary's percentiles (bounded memory, 3 significant digits).
    latency_us: Mutex<Hdr<u64>>,
}

/// What a maker did, logged at exit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    /// Orders made and committed.
    pub orders: u64,
    /// Tabs made and committed.
    pub tabs: u64,
    /// Records sent to the DLQ.
    pub dead_letters: u64,
    /// Order latency (order timestamp to commit), median, in milliseconds.
    pub latency_p50_ms: f64,
    /// Order latency, 99th percentile, in milliseconds.
    pub latency_p99_ms: f64,
    /// Transactions (or offset commits) that succeeded.
    pub commits: u64,
    /// Transactions aborted.
    pub aborts: u64,
    /// Orders started and dropped uncommitted (a partition lost or handed over unfinished, an abort, the drain
    /// deadline): made again by whoever reads them next.
    pub dropped: u64,
}

impl Stats {
    /// Creates the counters and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let stats = Self {
            orders: Counter::default(),
            tabs: Counter::default(),
            dead_letters: Family::default(),
            dead_letters_total: Counter::default(),
            in_flight: Gauge::default(),
            commits: Counter::default(),
            aborts: Counter::default(),
            dropped: Counter::default(),
            lost_commits: Counter::default(),
            already_delivered: Counter::default(),
            stuck_commits: Counter::default(),
            latency: Histogram::new(tabs::metrics::latency_buckets()),
            overhead: Histogram::new(OVERHEAD_BUCKETS),
            waiting_since: WaitingSince::default(),
            liveness_bound: Gauge::default(),
            latency_us: Mutex::new(
                Hdr::new_with_bounds(1, 3_600_000_000, 3)
                    .expect("static histogram bounds are valid"),
            ),
        };
        stats.register_work(registry);
        stats.register_commits(registry);
        // Every reason at 0 from the start: a series born at 1 has no increase Prometheus can see, and the
        // dead-letter alert would miss a maker's first rejection.
        for reason in tabs::messages::Rejection::CODES {
            drop(stats.dead_letters.get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            }));
        }
        stats
    }

    /// What the maker does: orders, tabs, dead letters, orders in flight, latency, and how long partitions wait.
    fn register_work(&self, registry: &mut Registry) {
        registry.register(
            "medicine_orders_done",
            "Orders made and committed",
            self.orders.clone(),
        );
        registry.register(
            "medicine_tabs_made",
            "Tabs made and committed",
            self.tabs.clone(),
        );
        registry.register(
            "medicine_dead_letters",
            "Records rejected to the DLQ, by reason",
            self.dead_letters.clone(),
        );
        registry.register(
            "medicine_orders_in_flight",
            "Orders fetched and not yet committed",
            self.in_flight.clone(),
        );
        registry.register(
            "medicine_order_latency_seconds",
            "Order timestamp to commit of its tabs",
            self.latency.clone(),
        );
        registry.register(
            "medicine_order_overhead_seconds",
            "Order latency past its making time (order timestamp to commit, less the making time): the overhead \
             objective is 99 % within 0.1 s",
            self.overhead.clone(),
        );
        registry.register(
            "medicine_partition_waiting_since_timestamp_seconds",
            "Per partition this maker holds, the Unix time since which orders have waited in it without its \
             committed offset moving; 0 when none waits",
            self.waiting_since.clone(),
        );
        registry.register(
            "medicine_liveness_bound_seconds",
            "The time within which a partition with orders waiting moves: 3 making times, the commit interval, \
             the stuck-commit timeout and 5 s",
            self.liveness_bound.clone(),
        );
    }

    /// How its commits fare: committed, aborted, orders dropped, and the broker's faults it met.
    fn register_commits(&self, registry: &mut Registry) {
        registry.register(
            "medicine_transactions_committed",
            "Transactions (exactly-once) or offset commits (at-least-once) that succeeded",
            self.commits.clone(),
        );
        registry.register(
            "medicine_transactions_aborted",
            "Transactions aborted; their orders were made again",
            self.aborts.clone(),
        );
        registry.register(
            "medicine_orders_dropped",
            "Orders started and dropped before their commit (partition lost or handed over unfinished, abort, \
             drain deadline); made again by whoever reads them next",
            self.dropped.clone(),
        );
        registry.register(
            "medicine_broker_lost_commits",
            "Partitions whose committed offset was read back behind this maker's own last commit: the broker lost \
             a commit it had acknowledged, and those orders were made again",
            self.lost_commits.clone(),
        );
        registry.register(
            "medicine_orders_already_delivered",
            "Orders fetched again after a rewind whose commits were in doubt and found committed in the deliveries \
             topic: their offsets committed, not made again",
            self.already_delivered.clone(),
        );
        registry.register(
            "medicine_stuck_commits",
            "Commits given up because a step of them did not return within the transaction timeout: the \
             producer was replaced and the orders made again (those found delivered were not)",
            self.stuck_commits.clone(),
        );
    }

    /// Counts a committed order with `tabs` tabs, its latency and its overhead past `making` (its tabs are made
    /// side by side, in one making time).
    pub fn order_done(&self, tabs: u32, latency: Duration, making: Duration) {
        self.orders.inc();
        self.tabs.inc_by(u64::from(tabs));
        self.latency.observe(latency.as_secs_f64());
        self.overhead
            .observe(latency.saturating_sub(making).as_secs_f64());
        if let Ok(mut hdr) = self.latency_us.lock() {
            hdr.saturating_record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        }
    }

    /// Counts a committed dead letter.
    pub fn dead_letter(&self, reason: &str) {
        self.dead_letters_total.inc();
        self.dead_letters
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The summary so far.
    pub fn summary(&self) -> Summary {
        let (p50, p99) = self
            .latency_us
            .lock()
            .map(|hdr| {
                if hdr.is_empty() {
                    (0.0, 0.0)
                } else {
                    (
                        hdr.value_at_quantile(0.5) as f64 / 1e3,
                        hdr.value_at_quantile(0.99) as f64 / 1e3,
                    )
                }
            })
            .unwrap_or_default();
        Summary {
            orders: self.orders.get(),
            tabs: self.tabs.get(),
            dead_letters: self.dead_letters_total.get(),
            latency_p50_ms: p50,
            latency_p99_ms: p99,
            commits: self.commits.get(),
            aborts: self.aborts.get(),
            dropped: self.dropped.get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reports_counts_and_percentiles() {
        let stats = Stats::register(&mut Registry::default());
        for ms in 1..=100 {
            stats.order_done(2, Duration::from_millis(ms), Duration::ZERO);
        }
        stats.dead_letter("not_json");
        let summary = stats.summary();
        assert_eq!(summary.orders, 100);
        assert_eq!(summary.tabs, 200);
        assert_eq!(summary.dead_letters, 1);
        assert!(
            (49.0..=51.0).contains(&summary.latency_p50_ms),
            "{summary:?}"
        );
        assert!(
            (98.0..=100.5).contains(&summary.latency_p99_ms),
            "{summary:?}"
        );
    }

    #[test]
    fn the_exposition_has_every_dead_letter_reason_at_zero_and_the_overhead_past_the_making_time() {
        let mut registry = Registry::default();
        let stats = Stats::register(&mut registry);
        // 2.05 s for a 2 s making time: 50 ms of overhead, within the 0.1 s bucket; 2.3 s is not.
        stats.order_done(3, Duration::from_millis(2_050), Duration::from_secs(2));
        stats.order_done(3, Duration::from_millis(2_300), Duration::from_secs(2));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for reason in tabs::messages::Rejection::CODES {
            assert!(
                text.contains(&format!(
                    "medicine_dead_letters_total{{reason=\"{reason}\"}} 0"
                )),
                "{reason}: {text}"
            );
        }
        assert!(
            text.contains("medicine_order_overhead_seconds_bucket{le=\"0.1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("medicine_order_overhead_seconds_count 2\n"),
            "{text}"
        );
    }

    #[test]
    fn an_empty_summary_has_zero_latency() {
        let stats = Stats::register(&mut Registry::default());
        assert_eq!(stats.summary(), Summary::default());
    }
}
