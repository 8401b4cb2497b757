//! The local mode: the whole system on one machine, one command, no cluster.
//!
//! It starts a broker (librdkafka's in-process mock cluster, or a real one with `--bootstrap-servers`), creates
//! the three topics with the partitions of `deploy/`, runs patients (the `patient` program, `--patients N` in one
//! child process, following a schedule such as `1,10,3` with `--step 30s`), and autoscales makers (each a
//! `medicine` child process) from the consumer lag exactly as KEDA's ScaledJob in `deploy/` does: every polling
//! interval, min(ceil(lag / lagThreshold), maxReplicaCount) − running makers are started, the lag capped at one
//! threshold per partition. Makers exit by themselves once idle; the autoscaler reaps them.
//!
//! A panel (or a line per second) shows patients, orders/s, lag, makers, tabs/s, latency and overhead, dead
//! letters. At the end it audits every order (read_committed), prints a summary, and writes a JSON time series
//! and an SVG chart.
//!
//! On the mock cluster, transactional offset commits are not kept (librdkafka 2.12's mock), so the makers run
//! at-least-once there and the view says so; exactly-once runs against a real broker.
//!
//! Run: `cargo run --release --bin medicine-pubsub-local -- --patients 3`.

#![forbid(unsafe_code)]

pub mod broker;
pub mod children;
pub mod defaults;
pub mod observe;
pub mod report;
pub mod scaling;
pub mod view;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use tabs::config::{
    parse_duration, parse_positive_duration, LogFormat, DELIVERIES_TOPIC, DLQ_TOPIC, MAKERS_GROUP,
    ORDERS_TOPIC,
};
use tabs::kafka::KafkaArgs;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use crate::broker::Broker;
use crate::children::{Child, Kind};
use crate::defaults::DeployDefaults;
use crate::observe::{LagProbe, Observer};
use crate::report::{RunInfo, RunReport, Sample};
use crate::scaling::ScalerSettings;

/// How the makers deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Guarantee {
    ExactlyOnce,
    AtLeastOnce,
}

impl Guarantee {
    fn as_str(self) -> &'static str {
        match self {
            Self::ExactlyOnce => "exactly-once",
            Self::AtLeastOnce => "at-least-once",
        }
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ViewMode {
    /// A panel on a terminal, a line per second otherwise.
    Auto,
    /// A panel redrawn every second.
    Live,
    /// One line per second.
    Plain,
}

/// Command line of `medicine-pubsub-local`. Defaults marked "deploy/" are read from the Kubernetes manifests.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "medicine-pubsub-local",
    version,
    about = "The whole medicine-pubsub system on one machine: broker, patients, makers autoscaled as KEDA would."
)]
pub struct Config {
    /// Patients ordering: one count (`3`), or a schedule of counts (`1,10,3`), each held for --step.
    #[arg(long, env = "LOCAL_PATIENTS", default_value = "1", value_parser = parse_schedule)]
    pub patients: Schedule,

    /// How long each count of a --patients schedule lasts.
    #[arg(long, env = "LOCAL_STEP", default_value = "30s", value_parser = parse_positive_duration)]
    pub step: Duration,

    /// Stop ordering after this long. Default: at the end of a schedule; a single count orders until Ctrl-C.
    #[arg(long, env = "LOCAL_DURATION", value_parser = parse_positive_duration)]
    pub duration: Option<Duration>,

    /// A real Kafka (host:port) instead of the embedded mock cluster; the topics are created if missing.
    #[arg(long, env = "LOCAL_BOOTSTRAP_SERVERS")]
    pub bootstrap_servers: Option<String>,

    /// The makers' guarantee. Default: exactly-once on a real broker, at-least-once on the embedded one (which
    /// does not keep transactional offsets).
    #[arg(long, env = "LOCAL_GUARANTEE", value_enum)]
    pub guarantee: Option<Guarantee>,

    /// Time between two orders of a patient.
    #[arg(long, env = "ORBITAL_ORDER_PERIOD_SECONDS", default_value = "1", value_parser = parse_positive_duration)]
    pub order_period: Duration,

    /// Largest tabs_count ordered (and accepted).
    #[arg(long, env = "ORBITAL_MAX_TABS_COUNT", default_value_t = tabs::config::MAX_TABS_COUNT,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_tabs_count: u32,

    /// Time to make a tab. Default: deploy/ (TAB_MAKING_TIME).
    #[arg(long, env = "LOCAL_TAB_MAKING_TIME", value_parser = parse_duration)]
    pub tab_making_time: Option<Duration>,

    /// Orders a maker holds at once. Default: deploy/ (MAX_IN_FLIGHT_ORDERS).
    #[arg(long, env = "LOCAL_MAX_IN_FLIGHT_ORDERS")]
    pub max_in_flight_orders: Option<u32>,

    /// A maker exits after this long without work. Default: deploy/ (IDLE_EXIT_AFTER).
    #[arg(long, env = "LOCAL_IDLE_EXIT_AFTER", value_parser = parse_positive_duration)]
    pub idle_exit_after: Option<Duration>,

    /// How often the autoscaler reads the lag. Default: deploy/ (pollingInterval).
    #[arg(long, env = "LOCAL_POLLING_INTERVAL", value_parser = parse_positive_duration)]
    pub polling_interval: Option<Duration>,

    /// Orders of lag per maker. Default: deploy/ (lagThreshold).
    #[arg(long, env = "LOCAL_LAG_THRESHOLD", value_parser = clap::value_parser!(u64).range(1..))]
    pub lag_threshold: Option<u64>,

    /// Most makers at once. Default: deploy/ (maxReplicaCount).
    #[arg(long, env = "LOCAL_MAX_MAKERS", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_makers: Option<u32>,

    /// Do not cap the lag at one threshold per partition (KEDA's allowIdleConsumers).
    #[arg(long, env = "LOCAL_ALLOW_IDLE_CONSUMERS")]
    pub allow_idle_consumers: bool,

    /// After ordering stops, how long makers get to finish the lag before they are stopped.
    #[arg(long, env = "LOCAL_DRAIN_TIMEOUT", default_value = "120s", value_parser = parse_positive_duration)]
    pub drain_timeout: Duration,

    /// Orders topic.
    #[arg(long, env = "ORDERS_TOPIC", default_value = ORDERS_TOPIC)]
    pub orders_topic: String,

    /// Tabs topic.
    #[arg(long, env = "DELIVERIES_TOPIC", default_value = DELIVERIES_TOPIC)]
    pub deliveries_topic: String,

    /// Dead-letter topic.
    #[arg(long, env = "DLQ_TOPIC", default_value = DLQ_TOPIC)]
    pub dlq_topic: String,

    /// The makers' consumer group.
    #[arg(long, env = "CONSUMER_GROUP", default_value = MAKERS_GROUP)]
    pub group: String,

    /// Where the report, the chart and the children's logs go. Default: target/local-runs/<run id>.
    #[arg(long, env = "LOCAL_REPORT_DIR")]
    pub report_dir: Option<PathBuf>,

    /// Progress display: `auto` (a panel on a terminal), `live` or `plain`.
    #[arg(long, env = "LOCAL_VIEW", value_enum, default_value_t = ViewMode::Auto)]
    pub view: ViewMode,

    /// Log format of the local mode itself (children log to files in the report directory).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
}

/// A list of patient counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(pub Vec<u32>);

/// Parses `3` or `1,10,3`.
pub fn parse_schedule(text: &str) -> Result<Schedule, String> {
    let counts: Result<Vec<u32>, _> = text.split(',').map(|c| c.trim().parse::<u32>()).collect();
    match counts {
        Ok(counts) if !counts.is_empty() && counts.iter().all(|&c| c <= 100_000) => Ok(Schedule(counts)),
        _ => Err(format!("`{text}` is not a patient count or a list of counts (e.g. 3 or 1,10,3; at most 100000)")),
    }
}

/// The settings of a run once defaults from deploy/ are applied.
#[derive(Debug, Clone)]
struct Settings {
    scaler: ScalerSettings,
    polling_interval: Duration,
    making_time: Duration,
    max_in_flight_orders: u32,
    idle_exit_after: Duration,
    guarantee: Guarantee,
}

impl Config {
    /// Checks what the parser cannot, before anything starts.
    pub fn validate(&self) -> Result<(), String> {
        if self.bootstrap_servers.is_none() && self.guarantee == Some(Guarantee::ExactlyOnce) {
            return Err("--guarantee exactly-once needs a real broker (--bootstrap-servers host:port): the embedded \
                        mock cluster does not keep transactional offset commits"
                .into());
        }
        if let Some(servers) = &self.bootstrap_servers {
            KafkaArgs::plaintext(servers.clone()).validate()?;
        }
        Ok(())
    }

    fn settings(&self, defaults: &DeployDefaults) -> Settings {
        let max_in_flight_orders = self
            .max_in_flight_orders
            .unwrap_or_else(|| defaults.maker_number("MAX_IN_FLIGHT_ORDERS"));
        Settings {
            scaler: ScalerSettings {
                lag_threshold: self.lag_threshold.unwrap_or(defaults.lag_threshold),
                activation_lag_threshold: defaults.activation_lag_threshold,
                max_replicas: self.max_makers.unwrap_or(defaults.max_replicas),
                allow_idle_consumers: self.allow_idle_consumers || defaults.allow_idle_consumers,
            },
            polling_interval: self.polling_interval.unwrap_or(defaults.polling_interval),
            making_time: self
                .tab_making_time
                .unwrap_or_else(|| defaults.maker_duration("TAB_MAKING_TIME")),
            max_in_flight_orders,
            idle_exit_after: self
                .idle_exit_after
                .unwrap_or_else(|| defaults.maker_duration("IDLE_EXIT_AFTER")),
            guarantee: self
                .guarantee
                .unwrap_or(if self.bootstrap_servers.is_some() {
                    Guarantee::ExactlyOnce
                } else {
                    Guarantee::AtLeastOnce
                }),
        }
    }

    /// When ordering stops, from the start of the run.
    fn ordering_time(&self) -> Option<Duration> {
        self.duration.or_else(|| {
            (self.patients.0.len() > 1)
                .then(|| self.step * u32::try_from(self.patients.0.len()).unwrap_or(u32::MAX))
        })
    }
}

/// The whole program: parse, run, exit code (0 when the audit passes, 1 when it does not or the run failed,
/// 2 for invalid flags).
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let config: Config = tabs::config::parse_from_or_exit(args);
    if let Err(message) = config.validate() {
        tabs::config::usage_exit(message);
    }
    tabs::telemetry::init(config.log_format);
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

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Patients ordering.
    Running,
    /// Ordering over; makers finish the lag and exit when idle.
    Draining,
    /// Ctrl-C: makers are asked to stop now (they finish or hand back what is in flight).
    Stopping,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Draining => "draining",
            Self::Stopping => "stopping",
        }
    }
}

/// Runs the system; returns whether the final audit passed.
pub async fn run(config: Config) -> anyhow::Result<bool> {
    let defaults = defaults::load();
    let settings = config.settings(&defaults);
    let broker = match &config.bootstrap_servers {
        Some(servers) => Broker::External(servers.clone()),
        None => Broker::embedded()?,
    };
    let bootstrap = broker.bootstrap_servers();
    // Each topic gets the partitions its KafkaTopic in deploy/ declares, whatever name it is given here.
    let partitions =
        |deployed_name: &str| defaults.partitions.get(deployed_name).copied().unwrap_or(1);
    broker
        .ensure_topics(&[
            (config.orders_topic.clone(), partitions(ORDERS_TOPIC)),
            (
                config.deliveries_topic.clone(),
                partitions(DELIVERIES_TOPIC),
            ),
            (config.dlq_topic.clone(), partitions(DLQ_TOPIC)),
        ])
        .await?;

    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let report_dir = config
        .report_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/local-runs").join(&run_id));
    let logs = report_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;

    let kafka = KafkaArgs::plaintext(bootstrap.clone());
    let observer = Observer::start(
        kafka.clone(),
        [
            config.orders_topic.clone(),
            config.deliveries_topic.clone(),
            config.dlq_topic.clone(),
        ],
        config.max_tabs_count,
        settings.making_time,
    )
    .await?;
    let probe = {
        let (kafka, group, topic) = (
            kafka.clone(),
            config.group.clone(),
            config.orders_topic.clone(),
        );
        Arc::new(
            tokio::task::spawn_blocking(move || LagProbe::open(&kafka, &group, &topic)).await??,
        )
    };

    let info = RunInfo {
        run_id: run_id.clone(),
        broker: broker.describe(),
        guarantee: match (settings.guarantee, broker.is_embedded()) {
            (Guarantee::AtLeastOnce, true) => {
                "at-least-once (the embedded broker keeps no transactional offsets; use --bootstrap-servers for exactly-once)"
                    .to_owned()
            }
            (guarantee, _) => guarantee.as_str().to_owned(),
        },
        schedule: config.patients.0.clone(),
        step_s: config.step.as_secs_f64(),
        tab_making_time_s: settings.making_time.as_secs_f64(),
        lag_threshold: settings.scaler.lag_threshold,
        max_makers: settings.scaler.max_replicas,
        polling_interval_s: settings.polling_interval.as_secs_f64(),
    };
    info!(
        run_id = %info.run_id,
        broker = %info.broker,
        bootstrap = %bootstrap,
        guarantee = %info.guarantee,
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
        metric: 0,
        lag: 0,
    };
    run.set_patients(config.patients.0[0])?;
    let outcome = run.drive(&observer, &probe, &info).await;
    run.stop_all().await;
    outcome?;

    // Every maker has exited: what they committed is all there is. Let the observer catch up, then judge.
    let deadline = Instant::now() + Duration::from_secs(15);
    while observer.missing_tabs() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(err) = observer.error() {
        warn!(error = %err, "the observer stopped reading; the audit may be incomplete");
    }
    let audit = observer.report();
    let passed = match settings.guarantee {
        Guarantee::ExactlyOnce => audit.is_clean(),
        Guarantee::AtLeastOnce => audit.is_at_least_once(),
    };
    let (json, svg) = report::write(
        &report_dir,
        &RunReport {
            run: &info,
            makers_started: run.makers_started,
            audit: &audit,
            audit_passed: passed,
            samples: &run.samples,
        },
    )?;
    println!(
        "{}",
        summary(&run, &info, &audit, passed, observer.dead_letters())
    );
    println!("  report      {}", json.display());
    println!("  chart       {}", svg.display());
    println!("  logs        {}", run.logs.display());
    Ok(passed)
}

/// The state of a run.
struct Run<'a> {
    config: &'a Config,
    settings: &'a Settings,
    defaults: &'a DeployDefaults,
    bootstrap: String,
    run_id: String,
    logs: PathBuf,
    patients: Option<Child>,
    patient_count: u32,
    stopping_patients: Vec<tokio::task::JoinHandle<Option<i32>>>,
    makers: Vec<Child>,
    makers_started: u32,
    step_index: usize,
    phase: Phase,
    /// A signal asked the run to end.
    interrupted: bool,
    started: Instant,
    samples: Vec<Sample>,
    /// KEDA's metric at the last poll.
    metric: u64,
    /// Uncapped lag at the last reading.
    lag: u64,
}

impl Run<'_> {
    /// Runs until ordering is over and the makers are done, or Ctrl-C.
    async fn drive(
        &mut self,
        observer: &Observer,
        probe: &Arc<LagProbe>,
        info: &RunInfo,
    ) -> anyhow::Result<()> {
        let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        let mut second = tokio::time::interval(Duration::from_secs(1));
        let mut poll = tokio::time::interval(self.settings.polling_interval);
        let live = match self.config.view {
            ViewMode::Auto => std::io::stdout().is_terminal(),
            ViewMode::Live => true,
            ViewMode::Plain => false,
        };
        let ordering_time = self.config.ordering_time();
        let mut drain_deadline: Option<Instant> = None;
        second.tick().await;

        loop {
            tokio::select! {
                _ = poll.tick() => {
                    self.autoscale(probe).await?;
                }
                _ = second.tick() => {
                    self.advance_schedule(ordering_time)?;
                    if self.phase == Phase::Draining && drain_deadline.is_none() {
                        drain_deadline = Some(Instant::now() + self.config.drain_timeout);
                    }
                    self.reap();
                    let sample = self.sample(observer, probe).await;
                    let frame = view::Frame {
                        broker: &info.broker,
                        guarantee: &info.guarantee,
                        step: self.step_info(),
                        phase: self.phase.as_str(),
                        makers_started: self.makers_started,
                        lag_threshold: self.settings.scaler.lag_threshold,
                        metric: self.metric,
                        total_dead_letters: observer.dead_letters(),
                    };
                    if live {
                        print!("{}", view::panel(&sample, &frame));
                    } else {
                        println!("{}", view::line(&sample, &frame));
                    }
                    self.samples.push(sample);
                    let done = self.makers.is_empty() && (self.lag == 0 || self.phase == Phase::Stopping);
                    if self.phase != Phase::Running && self.patients_stopped() && done {
                        return Ok(());
                    }
                    if drain_deadline.is_some_and(|d| Instant::now() >= d) && self.phase == Phase::Draining {
                        warn!("makers did not finish the lag within --drain-timeout; stopping them");
                        self.stop_makers();
                    }
                    if self.interrupted && self.phase == Phase::Draining && self.lag == 0 && self.patients_stopped() {
                        // Interrupted: no need to wait for the makers' idle timeout once the lag is done.
                        self.stop_makers();
                    }
                }
                _ = interrupt.recv() => self.on_signal("SIGINT").await,
                _ = terminate.recv() => self.on_signal("SIGTERM").await,
            }
        }
    }

    /// First signal: ordering stops and the makers finish the lag, then stop. Second: the makers stop now
    /// (finishing or handing back what they hold). Third: every child is killed.
    async fn on_signal(&mut self, name: &str) {
        match self.phase {
            Phase::Running | Phase::Draining if !self.interrupted => {
                info!(signal = name, "stopping: patients stop ordering, makers finish the lag (again to stop them now)");
                self.interrupted = true;
                self.stop_patients();
                self.phase = Phase::Draining;
            }
            Phase::Running | Phase::Draining => {
                info!(
                    signal = name,
                    "makers stop now; orders they did not finish stay in the topic"
                );
                self.stop_makers();
            }
            Phase::Stopping => {
                warn!(signal = name, "killing every child now");
                self.kill_all();
            }
        }
    }

    /// Whether every patient process has exited (so no order is still on its way).
    fn patients_stopped(&self) -> bool {
        self.patients.is_none()
            && self
                .stopping_patients
                .iter()
                .all(tokio::task::JoinHandle::is_finished)
    }

    fn stop_makers(&mut self) {
        self.phase = Phase::Stopping;
        for maker in &self.makers {
            maker.terminate();
        }
    }

    fn kill_all(&mut self) {
        // Dropping a child kills it.
        self.makers.clear();
        self.patients = None;
        for task in self.stopping_patients.drain(..) {
            task.abort();
        }
    }

    /// Moves along the patient schedule; ends ordering when it is over.
    fn advance_schedule(&mut self, ordering_time: Option<Duration>) -> anyhow::Result<()> {
        if self.phase != Phase::Running {
            return Ok(());
        }
        let elapsed = self.started.elapsed();
        if ordering_time.is_some_and(|t| elapsed >= t) {
            info!("ordering time over: patients stop, makers finish the lag");
            self.stop_patients();
            self.phase = Phase::Draining;
            return Ok(());
        }
        let schedule = &self.config.patients.0;
        let index = usize::try_from(elapsed.as_nanos() / self.config.step.as_nanos().max(1))
            .unwrap_or(usize::MAX)
            .min(schedule.len() - 1);
        if index != self.step_index {
            self.step_index = index;
            self.set_patients(schedule[index])?;
        }
        Ok(())
    }

    fn step_info(&self) -> Option<(usize, usize, u64)> {
        let count = self.config.patients.0.len();
        (count > 1 && self.phase == Phase::Running).then(|| {
            let next = self.config.step * u32::try_from(self.step_index + 1).unwrap_or(u32::MAX);
            let next_in = next.saturating_sub(self.started.elapsed()).as_secs();
            (self.step_index + 1, count, next_in)
        })
    }

    /// Replaces the patient process with one running `count` patients (new ids), or none.
    fn set_patients(&mut self, count: u32) -> anyhow::Result<()> {
        let previous = self.patients.take();
        if count > 0 {
            let name = format!("patients-{}", self.step_index + 1);
            let args: Vec<String> = [
                "--bootstrap-servers",
                &self.bootstrap,
                "--orders-topic",
                &self.config.orders_topic,
                "--patients",
                &count.to_string(),
                "--order-period",
                &tabs::config::format_duration(self.config.order_period),
                "--max-tabs-count",
                &self.config.max_tabs_count.to_string(),
                "--patient-id",
                &format!("local-{}-s{}", self.run_id, self.step_index + 1),
                "--startup-timeout",
                "30s",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            let env = vec![("RUST_LOG".to_owned(), "warn".to_owned())];
            let log = self.logs.join(format!("{name}.log"));
            self.patients = Some(
                Child::spawn(Kind::Patient, &name, &args, &env, &log)
                    .context("starting patients")?,
            );
        }
        self.patient_count = count;
        if let Some(mut previous) = previous {
            self.stopping_patients.push(tokio::spawn(async move {
                previous.stop(Duration::from_secs(20)).await
            }));
        }
        Ok(())
    }

    fn stop_patients(&mut self) {
        if let Some(mut patients) = self.patients.take() {
            self.stopping_patients.push(tokio::spawn(async move {
                patients.stop(Duration::from_secs(20)).await
            }));
        }
        self.patient_count = 0;
    }

    /// One KEDA polling cycle: read the lag, reap finished makers, start the missing ones.
    async fn autoscale(&mut self, probe: &Arc<LagProbe>) -> anyhow::Result<()> {
        let lags = match read_lags(probe).await {
            Ok(lags) => lags,
            Err(err) => {
                warn!(
                    error = format!("{err:#}"),
                    "could not read the lag; no scaling this cycle"
                );
                return Ok(());
            }
        };
        self.lag = lags.iter().sum();
        self.metric = scaling::scaler_metric(&lags, &self.settings.scaler);
        self.reap();
        if self.phase == Phase::Stopping {
            return Ok(());
        }
        let running = u32::try_from(self.makers.len()).unwrap_or(u32::MAX);
        let start = scaling::jobs_to_start(self.metric, running, &self.settings.scaler);
        for _ in 0..start {
            self.start_maker()?;
        }
        if start > 0 {
            info!(
                lag = self.lag,
                metric = self.metric,
                running,
                started = start,
                "scaled out"
            );
        }
        Ok(())
    }

    fn start_maker(&mut self) -> anyhow::Result<()> {
        self.makers_started += 1;
        let name = format!("maker-{}", self.makers_started);
        let maker_id = format!("local-{}-{name}", self.run_id);
        let args = vec!["--maker-id".to_owned(), maker_id];
        let settings = self.settings;
        // The maker container's environment from deploy/, as on Kubernetes, with this run's broker and topics.
        let mut env: Vec<(String, String)> = self
            .defaults
            .maker_env
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "METRICS_ADDR" | "LOG_FORMAT" | "MAKER_ID"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let overrides = [
            ("MEDECINEPUBSUB_KAFKA_SERVERS", self.bootstrap.clone()),
            ("ORDERS_TOPIC", self.config.orders_topic.clone()),
            ("DELIVERIES_TOPIC", self.config.deliveries_topic.clone()),
            ("DLQ_TOPIC", self.config.dlq_topic.clone()),
            ("CONSUMER_GROUP", self.config.group.clone()),
            ("GUARANTEE", settings.guarantee.as_str().to_owned()),
            (
                "TAB_MAKING_TIME",
                tabs::config::format_duration(settings.making_time),
            ),
            (
                "MAX_IN_FLIGHT_ORDERS",
                settings.max_in_flight_orders.to_string(),
            ),
            (
                "IDLE_EXIT_AFTER",
                tabs::config::format_duration(settings.idle_exit_after),
            ),
            (
                "ORBITAL_MAX_TABS_COUNT",
                self.config.max_tabs_count.to_string(),
            ),
            ("STARTUP_TIMEOUT", "30s".to_owned()),
            ("RUST_LOG", "info,librdkafka=error".to_owned()),
        ];
        for (key, value) in overrides {
            env.retain(|(k, _)| k != key);
            env.push((key.to_owned(), value));
        }
        let log = self.logs.join(format!("{name}.log"));
        let maker =
            Child::spawn(Kind::Maker, &name, &args, &env, &log).context("starting a maker")?;
        self.makers.push(maker);
        Ok(())
    }

    /// Forgets makers that exited (as KEDA counts only running jobs).
    fn reap(&mut self) {
        self.makers.retain_mut(|maker| match maker.try_exit() {
            None => true,
            Some(code) => {
                if code != Some(0) {
                    warn!(maker = %maker.name, ?code, "maker exited with an error; see its log");
                }
                false
            }
        });
    }

    async fn sample(&mut self, observer: &Observer, probe: &Arc<LagProbe>) -> Sample {
        if let Ok(lags) = read_lags(probe).await {
            self.lag = lags.iter().sum();
        }
        let second = observer.take_second();
        Sample {
            t_s: self.started.elapsed().as_secs_f64(),
            patients: self.patient_count,
            orders_per_s: second.orders,
            lag: self.lag,
            makers: u32::try_from(self.makers.len()).unwrap_or(u32::MAX),
            tabs_per_s: second.tabs,
            latency_p50_ms: second.latency_p50_ms,
            latency_p99_ms: second.latency_p99_ms,
            overhead_p50_ms: second.overhead_p50_ms,
            overhead_p99_ms: second.overhead_p99_ms,
            dead_letters: second.dead_letters,
        }
    }

    /// Stops whatever still runs, patients first.
    async fn stop_all(&mut self) {
        self.stop_patients();
        for task in self.stopping_patients.drain(..) {
            let _ = task.await;
        }
        for maker in &mut self.makers {
            maker.stop(Duration::from_secs(30)).await;
        }
        self.makers.clear();
    }
}

async fn read_lags(probe: &Arc<LagProbe>) -> anyhow::Result<Vec<u64>> {
    let probe = Arc::clone(probe);
    let offsets = tokio::task::spawn_blocking(move || probe.sample()).await??;
    Ok(offsets
        .into_iter()
        .map(|(end, committed)| scaling::partition_lag(end, committed))
        .collect())
}

fn summary(
    run: &Run<'_>,
    info: &RunInfo,
    audit: &audit::Report,
    passed: bool,
    dead_letters: u64,
) -> String {
    let peak = |f: fn(&Sample) -> u64| run.samples.iter().map(f).max().unwrap_or(0);
    let schedule: Vec<String> = info.schedule.iter().map(u32::to_string).collect();
    let verdict = if passed { "PASS" } else { "FAIL" };
    format!(
        "\nmedicine-pubsub local run: {:.0} s on {}\n  guarantee   {}\n  patients    {}\n  orders      {}  tabs {}  dead letters {}\n  \
         makers      {} started, at most {} at once (1 per {} orders of lag, at most {})\n  lag         at most {} orders\n  \
         latency     p50 {:.0} ms  p99 {:.0} ms  (overhead p50 {:.0} ms  p99 {:.0} ms)\n  \
         audit       missing {}  duplicated {}  wrong {} -> {verdict}",
        run.started.elapsed().as_secs_f64(),
        info.broker,
        info.guarantee,
        schedule.join(" -> "),
        audit.orders,
        audit.delivered_tabs,
        dead_letters,
        run.makers_started,
        peak(|s| u64::from(s.makers)),
        info.lag_threshold,
        info.max_makers,
        peak(|s| s.lag),
        audit.latency.p50_ms,
        audit.latency.p99_ms,
        audit.overhead.p50_ms,
        audit.overhead.p99_ms,
        audit.missing_tabs,
        audit.duplicated_tabs,
        audit.wrong_pow + audit.wrong_fields + audit.unknown_order_tabs,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("medicine-pubsub-local").chain(args.iter().copied()))
    }

    #[test]
    fn schedules_are_one_count_or_a_list() {
        assert_eq!(parse_schedule("3"), Ok(Schedule(vec![3])));
        assert_eq!(parse_schedule("1, 10,3"), Ok(Schedule(vec![1, 10, 3])));
        assert!(parse_schedule("1,,3").is_err());
        assert!(parse_schedule("many").unwrap_err().contains("1,10,3"));
    }

    #[test]
    fn a_single_count_orders_until_stopped_and_a_schedule_ends() {
        assert_eq!(config(&["--patients", "3"]).unwrap().ordering_time(), None);
        assert_eq!(
            config(&["--patients", "1,10,3", "--step", "30s"])
                .unwrap()
                .ordering_time(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            config(&["--patients", "3", "--duration", "5s"])
                .unwrap()
                .ordering_time(),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn defaults_come_from_deploy_and_the_guarantee_from_the_broker() {
        let defaults = defaults::load();
        let embedded = config(&[]).unwrap().settings(&defaults);
        assert_eq!(embedded.guarantee, Guarantee::AtLeastOnce);
        assert_eq!(embedded.scaler.lag_threshold, defaults.lag_threshold);
        assert_eq!(embedded.scaler.max_replicas, defaults.max_replicas);
        assert_eq!(embedded.polling_interval, defaults.polling_interval);
        let real = config(&["--bootstrap-servers", "127.0.0.1:9092"])
            .unwrap()
            .settings(&defaults);
        assert_eq!(real.guarantee, Guarantee::ExactlyOnce);
    }

    #[test]
    fn exactly_once_on_the_embedded_broker_is_refused() {
        let err = config(&["--guarantee", "exactly-once"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.contains("--bootstrap-servers"), "{err}");
    }
}
