//! The local mode: the whole system on one machine, one command, no cluster.
//!
//! It starts a broker (librdkafka's in-process mock cluster, or a real one with `--bootstrap-servers`), creates
//! the three topics with the partitions of `deploy/`, runs patients (the `patient` program, `--patients N` in one
//! child process, following a schedule such as `1,10,3` with `--step 30s`), and autoscales makers (each a
//! `medicine` child process) from the consumer lag exactly as KEDA's ScaledJob in `deploy/` does: every polling
//! interval, min(ceil(lag / lagThreshold), maxReplicaCount) − running makers are started, the lag capped at one
//! threshold per partition. Makers exit by themselves once idle; the autoscaler reaps them.
//!
//! A panel (ratatui, on the alternate screen) or a line per second shows patients, orders/s, lag, makers,
//! tabs/s, latency and overhead, dead letters, and each child's metrics endpoint. At the end it audits every
//! order (read_committed), prints a summary, and writes a JSON time series, a chart (SVG) and an HTML page.
//!
//! On the mock cluster, transactional offset commits are not kept (librdkafka 2.12's mock), so the makers run
//! at-least-once there and the view says so; exactly-once runs against a real broker.
//!
//! Run: `cargo run --release --bin medicine-pubsub-local -- --patients 3`.

#![forbid(unsafe_code)]

pub mod broker;
pub mod chart;
pub mod children;
mod children_env;
pub mod cli;
pub mod defaults;
mod dev_kafka;
mod logs;
pub mod observe;
pub mod record;
pub mod report;
mod run;
mod summary;
mod targets;
pub mod view;

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tabs::config::{Guarantee, DELIVERIES_TOPIC, DLQ_TOPIC, ORDERS_TOPIC};
use tabs::kafka::KafkaArgs;
use tracing::{info, warn};

use crate::broker::Broker;
pub use crate::cli::{parse_schedule, Config, Schedule, ViewMode};
use audit::liveness::LagProbe;

use crate::observe::Observer;
use crate::record::RunInfo;
use crate::report::RunReport;
use crate::run::{Phase, Run};

/// The whole program: parse, run, exit code (0 when the audit passes, 1 when it does not or the run failed,
/// 2 for invalid flags).
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let config: Config = tabs::config::parse_checked_or_exit(args, Config::validate);
    // While the panel owns the terminal, the local mode's own log lines go to its log file (`logs`).
    let ansi = std::io::stderr().is_terminal() && !view::live_view(config.view);
    tabs::telemetry::init_with_writer(config.log_format, ansi, logs::LogWriter);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "local run failed");
            ExitCode::FAILURE
        }
    }
}

/// The run's broker: the one `--bootstrap-servers` names, else Apache Kafka started for the run (where Java and
/// Maven are, unless `--broker embedded`), else the embedded mock cluster.
async fn choose_broker(config: &Config, report_dir: &std::path::Path) -> anyhow::Result<Broker> {
    use cli::BrokerChoice;
    if let Some(servers) = &config.bootstrap_servers {
        return Ok(Broker::External(servers.clone()));
    }
    let kafka = match config.broker {
        BrokerChoice::Kafka => true,
        BrokerChoice::Embedded => false,
        BrokerChoice::Auto => dev_kafka::DevKafka::available(),
    };
    if kafka {
        return Ok(Broker::Dev(
            dev_kafka::DevKafka::start(&report_dir.join("kafka")).await?,
        ));
    }
    anyhow::ensure!(
        config.guarantee != Some(Guarantee::ExactlyOnce),
        "--guarantee exactly-once needs a real broker and this machine cannot start one (Java and Maven are \
         needed): give --bootstrap-servers host:port"
    );
    if config.broker == BrokerChoice::Auto {
        warn!(
            "Java or Maven is missing: running on librdkafka's embedded mock cluster, at-least-once (duplicates \
             are possible and the audit tolerates them); install both, or give --bootstrap-servers, for exactly-once"
        );
    }
    Broker::embedded()
}

/// Runs the system; returns whether the final audit passed.
pub async fn run(mut config: Config) -> anyhow::Result<bool> {
    let defaults = defaults::load();
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let report_dir = config
        .report_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/local-runs").join(&run_id));
    let broker = choose_broker(&config, &report_dir).await?;
    if !broker.is_embedded() {
        // The guarantee's default, the topic names and the children's broker follow from here.
        config.bootstrap_servers = Some(broker.bootstrap_servers());
    }
    let settings = config.settings(&defaults);
    let config = config.for_run(&run_id, !matches!(broker, Broker::External(_)));
    let bootstrap = broker.bootstrap_servers();
    ensure_topics(&broker, &config, &defaults).await?;

    let report_dir = config
        .report_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/local-runs").join(&run_id));
    let logs = report_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;

    let (observer, probe) = watch(&config, &settings, &bootstrap, &run_id).await?;

    let info = run_info(&config, &settings, &broker, &run_id);
    info!(
        run_id = %info.run_id,
        broker = %info.broker,
        bootstrap = %bootstrap,
        guarantee = %info.guarantee,
        topics = %info.topics,
        schedule = ?config.patients.0,
        report_dir = %report_dir.display(),
        "local run starting"
    );

    let mut run = Run {
        config: &config,
        settings: &settings,
        defaults: &defaults,
        bootstrap,
        run_id,
        logs,
        patients: None,
        patient_count: 0,
        stopping_patients: Vec::new(),
        makers: Vec::new(),
        makers_started: 0,
        step_index: 0,
        phase: Phase::Running,
        interrupted: false,
        started: Instant::now(),
        samples: Vec::new(),
        metric: None,
        lag: 0,
        drain_started_s: None,
        children: Vec::new(),
        targets_file: report_dir.join("prometheus-targets.json"),
    };
    run.set_patients(config.patients.0[0])?;
    let outcome = run.drive(&observer, &probe, &info).await;
    run.stop_all().await;
    outcome?;

    judge_and_report(&run, &observer, &info, &report_dir).await
}

/// Creates the run's topics, each with the partitions its KafkaTopic in deploy/ declares, whatever name it is
/// given here.
async fn ensure_topics(
    broker: &Broker,
    config: &Config,
    defaults: &defaults::DeployDefaults,
) -> anyhow::Result<()> {
    let partitions =
        |deployed_name: &str| defaults.partitions.get(deployed_name).copied().unwrap_or(1);
    broker
        .ensure_topics(&[
            (config.topics.orders().to_owned(), partitions(ORDERS_TOPIC)),
            (
                config.topics.deliveries_topic.clone(),
                partitions(DELIVERIES_TOPIC),
            ),
            (config.topics.dlq_topic.clone(), partitions(DLQ_TOPIC)),
        ])
        .await
}

/// The run's watchers: the observer of the three topics (the live audit and the per-step figures), and the lag
/// probe of the makers' group (what KEDA would read).
async fn watch(
    config: &Config,
    settings: &cli::Settings,
    bootstrap: &str,
    run_id: &str,
) -> anyhow::Result<(Observer, Arc<LagProbe>)> {
    let kafka = KafkaArgs::plaintext(bootstrap);
    let observer = Observer::start(
        kafka.clone(),
        [
            config.topics.orders().to_owned(),
            config.topics.deliveries_topic.clone(),
            config.topics.dlq_topic.clone(),
        ],
        config.tabs_count.max_tabs_count,
        settings.making_time,
        observe::StepOf {
            prefix: format!("local-{run_id}-s"),
        },
    )
    .await?;
    let probe = {
        let (kafka, group, topic) = (
            kafka.clone(),
            config.group.clone(),
            config.topics.orders().to_owned(),
        );
        Arc::new(
            tokio::task::spawn_blocking(move || LagProbe::open(&kafka, &group, &topic)).await??,
        )
    };
    Ok((observer, probe))
}

/// What the report says of the run's set-up.
fn run_info(config: &Config, settings: &cli::Settings, broker: &Broker, run_id: &str) -> RunInfo {
    RunInfo {
        run_id: run_id.to_owned(),
        broker: broker.describe(),
        guarantee: match (settings.guarantee, broker.is_embedded()) {
            (Guarantee::AtLeastOnce, true) => {
                "at-least-once (the embedded broker keeps no transactional offsets; use --bootstrap-servers for exactly-once)"
                    .to_owned()
            }
            (guarantee, _) => guarantee.as_str().to_owned(),
        },
        topics: format!(
            "{}, {}, {}; group {}",
            config.topics.orders(),
            config.topics.deliveries_topic,
            config.topics.dlq_topic,
            config.group
        ),
        schedule: config.patients.0.clone(),
        step_s: config.step.as_secs_f64(),
        tab_making_time_s: settings.making_time.as_secs_f64(),
        lag_threshold: settings.scaler.lag_threshold,
        max_makers: settings.scaler.max_replicas,
        polling_interval_s: settings.polling_interval.as_secs_f64(),
    }
}

/// Once every maker has exited (what they committed is all there is): lets the observer catch up, judges, writes
/// the report and says where it is. Returns whether the audit passed.
async fn judge_and_report(
    run: &Run<'_>,
    observer: &Observer,
    info: &RunInfo,
    report_dir: &Path,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while observer.missing_tabs() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(err) = observer.error() {
        warn!(error = %err, "the observer stopped reading; the audit may be incomplete");
    }
    let audit = observer.report();
    let passed = match run.settings.guarantee {
        Guarantee::ExactlyOnce => audit.is_clean(),
        Guarantee::AtLeastOnce => audit.is_at_least_once(),
    };
    let steps = report::step_rows(
        info,
        &run.samples,
        &observer.step_reports(),
        run.drain_started_s,
    );
    let written = report::write(
        report_dir,
        &RunReport {
            run: info,
            makers_started: run.makers_started,
            audit: &audit,
            audit_passed: passed,
            drain_started_s: run.drain_started_s,
            steps: &steps,
            children: &run.children,
            samples: &run.samples,
        },
    )?;
    show(&format!(
        "{}\n  page        {}\n  report      {}\n  chart       {}\n  logs        {}\n",
        summary::summary(run, info, &audit, passed, observer.dead_letters()),
        written.html.display(),
        written.json.display(),
        written.svg.display(),
        run.logs.display()
    ));
    Ok(passed)
}

/// Writes `text` to stdout. A terminal that is gone (closed: writes fail) is no reason to fail the run: the
/// report is written either way.
fn show(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}
