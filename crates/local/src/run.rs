//! A local run as a state machine: the patient schedule, the autoscaler's polling cycle, the signals, the
//! samples of the view and the report.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use crate::children::{self, Child, Kind};
use crate::children_env;
use crate::cli::{Config, Settings};
use crate::defaults::DeployDefaults;
use audit::liveness::LagProbe;

use crate::observe::Observer;
use crate::record::{ChildRecord, RunInfo, Sample};
use tabs::keda;

use crate::{logs, targets, view};

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
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

/// The state of a run.
pub struct Run<'a> {
    pub config: &'a Config,
    pub settings: &'a Settings,
    pub defaults: &'a DeployDefaults,
    pub bootstrap: String,
    pub run_id: String,
    pub logs: PathBuf,
    pub patients: Option<Child>,
    pub patient_count: u32,
    pub stopping_patients: Vec<tokio::task::JoinHandle<Option<i32>>>,
    pub makers: Vec<Child>,
    pub makers_started: u32,
    pub step_index: usize,
    pub phase: Phase,
    /// A signal asked the run to end.
    pub interrupted: bool,
    pub started: Instant,
    pub samples: Vec<Sample>,
    /// KEDA's metric at the last poll, and when that was.
    pub metric: Option<(u64, Instant)>,
    /// Uncapped lag at the last reading.
    pub lag: u64,
    /// Seconds into the run when ordering ended.
    pub drain_started_s: Option<f64>,
    /// Every child started, for the report.
    pub children: Vec<ChildRecord>,
    /// `prometheus-targets.json`: the running children's metrics endpoints, for Prometheus' file discovery.
    pub targets_file: PathBuf,
}

impl Run<'_> {
    /// Runs until ordering is over and the makers are done, or Ctrl-C; the panel owns the terminal meanwhile
    /// (and the local mode's log lines go to `logs/local.log`).
    pub async fn drive(
        &mut self,
        observer: &Observer,
        probe: &Arc<LagProbe>,
        info: &RunInfo,
    ) -> anyhow::Result<()> {
        let mut live = None;
        if view::live_view(self.config.view) {
            logs::capture(std::fs::File::create(self.logs.join("local.log")).ok());
            match view::Live::start() {
                Ok(started) => live = Some(started),
                Err(err) => {
                    logs::release();
                    warn!(error = %err, "cannot draw on this terminal; one line per second instead");
                }
            }
        }
        let outcome = self.cycle(observer, probe, info, &mut live).await;
        drop(live);
        logs::release();
        outcome
    }

    async fn cycle(
        &mut self,
        observer: &Observer,
        probe: &Arc<LagProbe>,
        info: &RunInfo,
        live: &mut Option<view::Live>,
    ) -> anyhow::Result<()> {
        let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        // The terminal closed: the run ends as on Ctrl-C (summary, report, children stopped).
        let mut hangup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
        let mut second = tokio::time::interval(Duration::from_secs(1));
        // A late tick (a busy machine) makes one longer sample, not a burst of short ones.
        second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut poll = tokio::time::interval(self.settings.polling_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ordering_time = self.config.ordering_time();
        let mut drain_deadline: Option<Instant> = None;
        second.tick().await;

        loop {
            tokio::select! {
                _ = poll.tick() => {
                    self.autoscale(probe).await?;
                    self.write_targets();
                }
                _ = second.tick() => {
                    self.advance_schedule(ordering_time)?;
                    if self.phase == Phase::Draining && drain_deadline.is_none() {
                        drain_deadline = Some(Instant::now() + self.config.drain_timeout);
                    }
                    self.reap();
                    let sample = self.sample(observer, probe).await;
                    self.samples.push(sample);
                    let metrics = self.endpoints();
                    let events = if live.is_some() { logs::recent() } else { Vec::new() };
                    let frame = view::Frame {
                        broker: &info.broker,
                        guarantee: &info.guarantee,
                        step: self.step_info(),
                        phase: self.phase.as_str(),
                        makers_started: self.makers_started,
                        lag_threshold: self.settings.scaler.lag_threshold,
                        polling_interval_s: self.settings.polling_interval.as_secs_f64(),
                        total_dead_letters: observer.dead_letters(),
                        delivered_tabs: observer.delivered_tabs(),
                        history: &self.samples,
                        metrics: &metrics,
                        events: &events,
                    };
                    match live.as_mut() {
                        Some(live) => live.draw(&frame),
                        None => crate::show(&format!("{}\n", view::line(&frame))),
                    }
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
                _ = hangup.recv() => self.on_signal("SIGHUP").await,
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

    fn step_info(&self) -> Option<view::Step> {
        let schedule = &self.config.patients.0;
        let count = schedule.len();
        (count > 1 && self.phase == Phase::Running).then(|| {
            let next = self.config.step * u32::try_from(self.step_index + 1).unwrap_or(u32::MAX);
            view::Step {
                index: self.step_index + 1,
                count,
                patients: schedule[self.step_index],
                next_in_s: (self.step_index + 1 < count)
                    .then(|| next.saturating_sub(self.started.elapsed()).as_secs()),
            }
        })
    }

    /// The running children, patients first.
    fn running(&self) -> impl Iterator<Item = &Child> {
        self.patients.iter().chain(&self.makers)
    }

    /// The running children's metrics endpoints: (name, address).
    fn endpoints(&self) -> Vec<(String, String)> {
        targets::endpoints(self.running())
    }

    /// Rewrites `prometheus-targets.json` with the running children.
    fn write_targets(&self) {
        targets::write(&self.targets_file, &self.run_id, self.running());
    }

    /// Remembers a child for the report.
    fn record(&mut self, child: &Child) {
        self.children.push(ChildRecord {
            name: child.name.clone(),
            program: child.kind.program(),
            started_s: child.started.duration_since(self.started).as_secs_f64(),
            metrics_addr: child.metrics_addr.clone(),
        });
    }

    /// Replaces the patient process with one running `count` patients (new ids), or none.
    pub fn set_patients(&mut self, count: u32) -> anyhow::Result<()> {
        let previous = self.patients.take();
        if count > 0 {
            let name = format!("patients-{}", self.step_index + 1);
            let args = children_env::patient_args(
                &self.bootstrap,
                self.config,
                count,
                &format!("local-{}-s{}", self.run_id, self.step_index + 1),
            );
            let mut env = vec![("RUST_LOG".to_owned(), "warn".to_owned())];
            env.extend(
                children::free_metrics_addr()
                    .map(|addr| (children::METRICS_ADDR_VAR.to_owned(), addr)),
            );
            let log = self.logs.join(format!("{name}.log"));
            let patients = Child::spawn(Kind::Patient, &name, &args, &env, &log)
                .context("starting patients")?;
            self.record(&patients);
            self.patients = Some(patients);
        }
        self.write_targets();
        self.patient_count = count;
        if let Some(mut previous) = previous {
            self.stopping_patients.push(tokio::spawn(async move {
                previous.stop(Duration::from_secs(20)).await
            }));
        }
        Ok(())
    }

    fn stop_patients(&mut self) {
        if self.drain_started_s.is_none() {
            self.drain_started_s = Some(self.started.elapsed().as_secs_f64());
        }
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
        let metric = keda::scaler_metric(&lags, &self.settings.scaler);
        self.metric = Some((metric, Instant::now()));
        self.reap();
        if self.phase == Phase::Stopping {
            return Ok(());
        }
        let running = u32::try_from(self.makers.len()).unwrap_or(u32::MAX);
        let start = keda::jobs_to_start(metric, running, &self.settings.scaler);
        for _ in 0..start {
            self.start_maker()?;
        }
        if start > 0 {
            info!(
                lag = self.lag,
                metric,
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
        let mut env =
            children_env::maker(self.defaults, &self.bootstrap, self.config, self.settings);
        env.extend(
            children::free_metrics_addr().map(|addr| (children::METRICS_ADDR_VAR.to_owned(), addr)),
        );
        let log = self.logs.join(format!("{name}.log"));
        let maker =
            Child::spawn(Kind::Maker, &name, &args, &env, &log).context("starting a maker")?;
        self.record(&maker);
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
            orders_per_s: second.per_second(second.orders),
            lag: self.lag,
            keda_metric: self.metric.map(|(metric, _)| metric),
            keda_metric_age_s: self
                .metric
                .map(|(_, at)| at.elapsed().as_secs_f64().floor()),
            makers: u32::try_from(self.makers.len()).unwrap_or(u32::MAX),
            tabs_per_s: second.per_second(second.tabs),
            latency_p50_ms: second.latency_p50_ms,
            latency_p99_ms: second.latency_p99_ms,
            overhead_p50_ms: second.overhead_p50_ms,
            overhead_p99_ms: second.overhead_p99_ms,
            dead_letters: second.dead_letters,
        }
    }

    /// Stops whatever still runs, patients first.
    pub async fn stop_all(&mut self) {
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
        .map(|p| keda::partition_lag(p.end, p.committed))
        .collect())
}
