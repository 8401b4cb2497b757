//! The patient: publishes tab orders to `tabs.orders`, one per period for each simulated patient.
//!
//! One process simulates `--patients N` independent patients (ids `<id>-1` … `<id>-N`, or just `<id>` alone),
//! each on its own schedule, offset so they do not fire in lockstep. Orders are keyed by patient id, so one
//! patient's orders stay in one partition, in order; timestamps strictly increase per patient.
//!
//! Delivery: an idempotent producer with `acks=all`. An order is logged as `order acknowledged` only once Kafka
//! has it on every in-sync replica, so every order the log shows is in the topic. On SIGTERM/SIGINT ordering
//! stops and unacknowledged orders get `--flush-timeout` to be acknowledged; any left are reported.
//!
//! Run: `patient --bootstrap-servers 127.0.0.1:9092 --patients 100 --order-period 1`.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rand::Rng as _;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use tabs::config::{
    parse_duration, parse_positive_duration, OrdersTopic, TabsCountArgs, TelemetryArgs,
};
use tabs::kafka::{self, KafkaArgs, ProducerKind, TabsContext};
use tabs::messages::{to_json, Order};
use tabs::metrics;
use tabs::shutdown::Service;
use tabs::time::MonotonicStamp;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

/// Command line and environment of `patient`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "patient",
    version,
    about = "Orders medicine tabs: publishes tab orders to Kafka."
)]
pub struct Config {
    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub topics: OrdersTopic,

    /// Patient id (default: a new UUID). With --patients N > 1, the patients are `<id>-1` … `<id>-N`.
    #[arg(long, env = "ORBITAL_PATIENT_ID", help_heading = "Ordering")]
    pub patient_id: Option<String>,

    #[command(flatten, next_help_heading = "Ordering")]
    pub tabs_count: TabsCountArgs,

    /// Time between two orders of one patient: seconds (fractions allowed) or a duration such as 500ms.
    #[arg(long, env = "ORBITAL_ORDER_PERIOD_SECONDS", default_value = "1", value_parser = parse_positive_duration,
          help_heading = "Ordering")]
    pub order_period: Duration,

    /// Simulated patients in this process, each with its own id and schedule.
    #[arg(long, env = "MEDECINEPUBSUB_PATIENTS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000), help_heading = "Ordering")]
    pub patients: u32,

    /// Stop after this many orders per patient; 0 orders until stopped.
    #[arg(
        long,
        env = "MEDECINEPUBSUB_ORDERS_PER_PATIENT",
        default_value_t = 0,
        help_heading = "Ordering"
    )]
    pub orders: u64,

    /// Most orders awaiting acknowledgement at once; patients wait while it is reached (the broker is slow or
    /// down), so memory stays bounded.
    #[arg(long, env = "MEDECINEPUBSUB_MAX_PENDING_ORDERS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..), help_heading = "Ordering")]
    pub max_pending_orders: u32,

    /// Give up (exit 1) when Kafka or the orders topic cannot be reached within this time.
    #[arg(long, env = "MEDECINEPUBSUB_STARTUP_TIMEOUT", default_value = "60s", value_parser = parse_duration,
          help_heading = "Lifecycle")]
    pub startup_timeout: Duration,

    /// On shutdown, wait at most this long for orders not yet acknowledged.
    #[arg(long, env = "MEDECINEPUBSUB_FLUSH_TIMEOUT", default_value = "10s", value_parser = parse_duration,
          help_heading = "Lifecycle")]
    pub flush_timeout: Duration,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl Config {
    /// Checks what the parser cannot, before any network call.
    pub fn validate(&self) -> Result<(), String> {
        self.kafka.validate()?;
        if let Some(id) = &self.patient_id {
            if id.trim().is_empty() {
                return Err(
                    "--patient-id (ORBITAL_PATIENT_ID) is empty; unset it for a random id".into(),
                );
            }
            if id.len() + 8 > tabs::messages::MAX_PATIENT_ID_BYTES {
                return Err(format!(
                    "--patient-id (ORBITAL_PATIENT_ID) is {} bytes; keep it under {}",
                    id.len(),
                    tabs::messages::MAX_PATIENT_ID_BYTES - 8
                ));
            }
        }
        if self.topics.orders_topic.is_empty() {
            return Err("--orders-topic is empty".into());
        }
        Ok(())
    }

    /// The ids of the simulated patients.
    pub fn patient_ids(&self) -> Vec<String> {
        let base = self
            .patient_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        match self.patients {
            1 => vec![base],
            n => (1..=n).map(|k| format!("{base}-{k}")).collect(),
        }
    }
}

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

/// Counters a dashboard plots.
#[derive(Clone)]
struct Metrics {
    acknowledged: Counter,
    failed: Counter,
    pending: Gauge,
    ack_latency: Histogram,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Self {
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

/// The whole `patient` program: parses `args` (program name first), sets up logging and signals, runs, and
/// maps the outcome to an exit code (0 done, 1 failed, 2 invalid configuration). The `patient` binary and the
/// local mode's child processes both run exactly this.
pub fn main<I, T>(args: I) -> std::process::ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let config: Config = tabs::config::parse_from_or_exit(args);
    if let Err(message) = config.validate() {
        tabs::config::usage_exit(message);
    }
    let telemetry = config.telemetry.clone();
    tabs::shutdown::run_service("patient", &telemetry, |service| run(config, service))
}

/// Runs the patients until shut down or each has placed `--orders` orders.
pub async fn run(config: Config, service: Service) -> anyhow::Result<Summary> {
    let shutdown = service.shutdown.clone();
    let context = TabsContext::default();
    let errors = Arc::clone(&context.errors);
    let producer: FutureProducer<TabsContext> =
        kafka::create_producer(&config.kafka, &ProducerKind::Idempotent, context)?;

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    service.serve_metrics(registry).await?;
    let health = &service.health;

    let topic = config.topics.orders_topic.clone();
    info!(servers = %config.kafka.bootstrap_servers, user = config.kafka.principal(), topic, "connecting to Kafka");
    let probe = producer.clone();
    let wait = kafka::wait_for_topics(
        move |topic, timeout| probe.client().fetch_metadata(Some(topic), timeout),
        &errors,
        &config.kafka,
        &[topic.as_str()],
        config.startup_timeout,
        &shutdown,
    )
    .await;
    match wait {
        Ok(_) => {}
        Err(tabs::Error::Cancelled) => return Ok(Summary::default()),
        Err(err) => return Err(err).context("Kafka is not usable"),
    }
    health.set_ready(true);

    let ids = config.patient_ids();
    info!(
        patients = ids.len(),
        first_patient = %ids[0],
        period = ?config.order_period,
        max_tabs_count = config.tabs_count.max_tabs_count,
        orders_per_patient = config.orders,
        topic,
        "patients ordering"
    );

    let shared = Arc::new(Shared {
        producer,
        topic,
        metrics,
        pending: Arc::new(Semaphore::new(config.max_pending_orders as usize)),
        deliveries: TaskTracker::new(),
    });
    let patients = TaskTracker::new();
    let count = ids.len() as u32;
    for (k, id) in ids.into_iter().enumerate() {
        // Spread the first orders over one period so N patients make a steady stream, not N-order bursts.
        let offset = config.order_period.mul_f64(k as f64 / f64::from(count));
        patients.spawn(patient(
            id,
            offset,
            config.clone(),
            Arc::clone(&shared),
            shutdown.clone(),
        ));
    }
    patients.close();
    patients.wait().await;

    health.set_ready(false);
    let summary = shared.finish(config.flush_timeout).await;
    // An order the broker refused is lost to the patient: say so in the exit code, not only in the log.
    anyhow::ensure!(
        summary.failed == 0,
        "{} of {} orders were not delivered to {} as user `{}` (the errors above say why)",
        summary.failed,
        summary.failed + summary.acknowledged + summary.unacknowledged,
        config.kafka.bootstrap_servers,
        config.kafka.principal()
    );
    Ok(summary)
}

/// What the patient tasks share.
struct Shared {
    producer: FutureProducer<TabsContext>,
    topic: String,
    metrics: Metrics,
    /// One permit per order awaiting acknowledgement: bounds memory when Kafka is slow or down.
    pending: Arc<Semaphore>,
    /// Tasks awaiting acknowledgements.
    deliveries: TaskTracker,
}

impl Shared {
    /// Waits up to `flush_timeout` for outstanding acknowledgements and reports what is left.
    async fn finish(&self, flush_timeout: Duration) -> Summary {
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
async fn patient(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("patient").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn one_patient_keeps_its_id_and_many_get_suffixes() {
        assert_eq!(config(&["--patient-id", "p"]).patient_ids(), vec!["p"]);
        assert_eq!(
            config(&["--patient-id", "p", "--patients", "3"]).patient_ids(),
            vec!["p-1", "p-2", "p-3"]
        );
        let random = config(&[]).patient_ids();
        assert!(uuid::Uuid::parse_str(&random[0]).is_ok());
    }

    #[test]
    fn order_period_accepts_fractional_seconds() {
        assert_eq!(
            config(&["--order-period", "0.25"]).order_period,
            Duration::from_millis(250)
        );
        assert_eq!(config(&[]).order_period, Duration::from_secs(1));
    }

    #[test]
    fn rejects_zero_period_zero_patients_and_zero_max_tabs() {
        for args in [
            ["--order-period", "0"],
            ["--patients", "0"],
            ["--max-tabs-count", "0"],
        ] {
            let parsed = Config::try_parse_from(std::iter::once("patient").chain(args));
            assert!(parsed.is_err(), "{args:?}");
        }
    }

    #[test]
    fn rejects_an_empty_patient_id() {
        let err = config(&["--patient-id", " "]).validate().unwrap_err();
        assert!(err.contains("ORBITAL_PATIENT_ID"), "{err}");
    }
}
