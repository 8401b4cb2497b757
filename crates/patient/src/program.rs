//! The program: parse, check, wait for the topic, start the patients, and report what was delivered.

use std::sync::Arc;

use anyhow::Context as _;
use prometheus_client::registry::Registry;
use rdkafka::producer::{FutureProducer, Producer as _};
use tabs::kafka::{self, ProducerKind, TabsContext};
use tabs::shutdown::Service;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::ordering::{patient, Shared, Summary};

/// The whole `patient` program: parses `args` (program name first), sets up logging and signals, runs, and
/// maps the outcome to an exit code (0 done, 1 failed, 2 invalid configuration). The `patient` binary and the
/// local mode's child processes both run exactly this.
pub fn main<I, T>(args: I) -> std::process::ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let config: Config = tabs::config::parse_checked_or_exit(args, Config::validate);
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
