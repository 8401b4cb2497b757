//! Benchmark 2: how many patients one maker serves at the service level, at the in-flight bound deploy/ ships
//! (and, as extra rows, at other bounds). Tabs take 2 s; patients are stepped up; each level is held, then
//! audited (overhead = latency − making time). The capacity is the largest level
//! held with overhead p99 ≤ 100 ms and nothing missing or duplicated. A level not held is tried once more (a
//! pause of the shared machine is not the maker's limit); the search ends at a level not held twice. Every
//! attempt is reported.

use std::time::{Duration, Instant};

use anyhow::bail;

use testkit::Proc;

use crate::support::{broker_pid, now_ns, spawn, strings, usage, Topics};

/// Overhead p99 above this fails a level.
pub const OVERHEAD_P99_LIMIT_MS: f64 = 100.0;

/// One level of patients.
#[derive(Debug, Clone)]
pub struct Level {
    pub patients: u32,
    /// 1, or 2 for the second try of a level not held.
    pub attempt: u32,
    pub orders: u64,
    pub tabs_per_s: f64,
    pub overhead_p50_ms: f64,
    pub overhead_p99_ms: f64,
    pub worst_patient_p99_ms: f64,
    pub missing: u64,
    pub duplicated: u64,
    pub maker_cpu_percent: f64,
    pub broker_cpu_percent: f64,
    pub maker_peak_rss_mib: f64,
    pub patient_peak_rss_mib: f64,
    /// Orders committed per partition over the hold: the largest distance from their mean, in % of it. At a
    /// level not held the maker is at its bound and it measures how fairly the bound is shared; below, it follows
    /// how the patients' keys fall on the partitions.
    pub partition_spread_percent: f64,
    pub held: bool,
}

/// The capacity benchmark's result, at one in-flight bound.
#[derive(Debug, Clone)]
pub struct Capacity {
    /// The maker's `--max-in-flight-orders`.
    pub max_in_flight_orders: u32,
    pub levels: Vec<Level>,
    pub hold: Duration,
}

/// The in-flight bound of the makers deploy/ runs.
pub fn shipped_max_in_flight_orders() -> u32 {
    local::defaults::load().maker_number("MEDECINEPUBSUB_MAX_IN_FLIGHT_ORDERS")
}

impl Capacity {
    /// The largest level held.
    pub fn capacity(&self) -> Option<&Level> {
        self.levels
            .iter()
            .filter(|l| l.held)
            .max_by_key(|l| l.patients)
    }
}

fn percent(cpu: Duration, wall: Duration) -> f64 {
    100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(1e-3)
}

pub async fn run(
    bootstrap: &str,
    max_in_flight_orders: u32,
    levels: &[u32],
    warmup: Duration,
    hold: Duration,
) -> anyhow::Result<Capacity> {
    println!(
        "capacity: one maker (--max-in-flight-orders {max_in_flight_orders}), tabs take 2 s, levels {levels:?}, \
         each held {hold:?} after {warmup:?}"
    );
    let topics = Topics::create(bootstrap, 12).await;
    let group = testkit::unique("bench-capacity");
    let mut args = topics.maker_args(bootstrap, &group);
    let probe = {
        let (kafka, orders, group) = (
            tabs::kafka::KafkaArgs::plaintext(bootstrap),
            topics.orders.clone(),
            group.clone(),
        );
        std::sync::Arc::new(
            tokio::task::spawn_blocking(move || {
                audit::liveness::LagProbe::open(&kafka, &group, &orders)
            })
            .await??,
        )
    };
    args.extend(
        [
            "--tab-making-time",
            "2s",
            "--max-in-flight-orders",
            &max_in_flight_orders.to_string(),
            "--idle-exit-after",
            "0",
        ]
        .iter()
        .map(|s| (*s).to_owned()),
    );
    let mut maker = spawn("medicine", &args, &[("RUST_LOG", "info")]);
    let rig = Rig {
        bootstrap,
        topics: &topics,
        probe,
        warmup,
        hold,
    };
    let mut result = Capacity {
        max_in_flight_orders,
        levels: Vec::new(),
        hold,
    };

    'levels: for &patients in levels {
        for attempt in 1..=2 {
            let level = measure_level(&rig, &mut maker, patients, attempt).await?;
            let held = level.held;
            result.levels.push(level);
            // Let the maker finish this level's orders before the next attempt or level starts.
            tokio::time::sleep(Duration::from_secs(3)).await;
            if held {
                continue 'levels;
            }
        }
        break;
    }
    maker.signal(testkit::nix::sys::signal::Signal::SIGTERM);
    maker.exit_code(Duration::from_secs(60)).await;
    Ok(result)
}

/// What every level runs against.
struct Rig<'a> {
    bootstrap: &'a str,
    topics: &'a Topics,
    /// The makers' committed offsets, per partition.
    probe: std::sync::Arc<audit::liveness::LagProbe>,
    warmup: Duration,
    hold: Duration,
}

/// Runs `patients` patients against the running maker, holds, audits the hold window.
async fn measure_level(
    rig: &Rig<'_>,
    maker: &mut Proc,
    patients: u32,
    attempt: u32,
) -> anyhow::Result<Level> {
    let Rig {
        bootstrap,
        topics,
        probe,
        warmup,
        hold,
    } = rig;
    let (warmup, hold) = (*warmup, *hold);
    let maker_pid = maker.pid();
    let patient_args = strings(&[
        "--bootstrap-servers",
        bootstrap,
        "--orders-topic",
        &topics.orders,
        "--patients",
        &patients.to_string(),
        "--order-period",
        "1s",
        "--patient-id",
        &testkit::unique("cap"),
    ]);
    let mut patient = spawn("patient", &patient_args, &[("RUST_LOG", "warn")]);
    tokio::time::sleep(warmup).await;

    let from_ms = now_ns() / 1_000_000;
    let (maker_before, broker_before) = (usage(maker_pid), broker_pid().and_then(usage));
    let sample = |probe: std::sync::Arc<audit::liveness::LagProbe>| async move {
        tokio::task::spawn_blocking(move || probe.sample()).await?
    };
    let committed_before = sample(std::sync::Arc::clone(probe)).await?;
    let started = Instant::now();
    tokio::time::sleep(hold).await;
    let wall = started.elapsed();
    let committed_after = sample(std::sync::Arc::clone(probe)).await?;
    let partition_spread_percent = spread(&committed_before, &committed_after);
    let (maker_after, broker_after) = (usage(maker_pid), broker_pid().and_then(usage));
    let patient_usage = usage(patient.pid());
    let to_ms = now_ns() / 1_000_000;
    patient.signal(testkit::nix::sys::signal::Signal::SIGTERM);
    patient.exit_code(Duration::from_secs(60)).await;
    let Some(maker_after) = maker_after else {
        bail!(
            "the maker died during the {patients}-patient level: {}",
            maker.stderr_text()
        );
    };

    let config = audit_config(bootstrap, topics, from_ms, to_ms);
    let outcome = tokio::task::spawn_blocking(move || audit::audit(&config)).await??;
    let report = &outcome.report;
    let cpu = |before, after| cpu_percent(before, after, wall);
    let level = Level {
        patients,
        attempt,
        orders: report.orders,
        tabs_per_s: report.delivered_tabs as f64 / (to_ms - from_ms) as f64 * 1e3,
        overhead_p50_ms: report.overhead.p50_ms,
        overhead_p99_ms: report.overhead.p99_ms,
        worst_patient_p99_ms: report.worst_patient_p99_ms,
        missing: report.missing_tabs,
        duplicated: report.duplicated_tabs,
        maker_cpu_percent: cpu(maker_before, Some(maker_after)),
        broker_cpu_percent: cpu(broker_before, broker_after),
        maker_peak_rss_mib: maker_after.peak_rss_kib as f64 / 1024.0,
        patient_peak_rss_mib: patient_usage.map_or(0.0, |u| u.peak_rss_kib as f64 / 1024.0),
        partition_spread_percent,
        held: report.overhead.p99_ms <= OVERHEAD_P99_LIMIT_MS
            && report.missing_tabs == 0
            && report.duplicated_tabs == 0,
    };
    level.print();
    Ok(level)
}

/// The share of one core a process used between two readings over `wall`.
fn cpu_percent(
    before: Option<crate::support::Usage>,
    after: Option<crate::support::Usage>,
    wall: Duration,
) -> f64 {
    match (before, after) {
        (Some(b), Some(a)) => percent(a.cpu.saturating_sub(b.cpu), wall),
        _ => 0.0,
    }
}

impl Level {
    fn print(&self) {
        println!(
            "  {:>5} patients{}: {:>7.0} tabs/s, overhead p50 {:>6.1} ms p99 {:>7.1} ms, missing {}, duplicated {}, maker CPU {:>5.1} %, broker CPU {:>5.1} %, maker peak RSS {:.0} MiB, partition spread {:.0} % -> {}",
            self.patients,
            if self.attempt > 1 { " (again)" } else { "" },
            self.tabs_per_s,
            self.overhead_p50_ms,
            self.overhead_p99_ms,
            self.missing,
            self.duplicated,
            self.maker_cpu_percent,
            self.broker_cpu_percent,
            self.maker_peak_rss_mib,
            self.partition_spread_percent,
            if self.held { "held" } else { "NOT held" }
        );
    }
}

/// Orders committed per partition between two samples: the largest distance from their mean, in % of it.
fn spread(
    before: &[audit::liveness::PartitionLag],
    after: &[audit::liveness::PartitionLag],
) -> f64 {
    let made: Vec<f64> = before
        .iter()
        .zip(after)
        .map(|(b, a)| (a.committed.unwrap_or(0) - b.committed.unwrap_or(0)) as f64)
        .collect();
    let mean = made.iter().sum::<f64>() / made.len().max(1) as f64;
    made.iter().map(|n| (n - mean).abs()).fold(0.0, f64::max) / mean.max(1.0) * 100.0
}

fn audit_config(bootstrap: &str, topics: &Topics, from_ms: u64, to_ms: u64) -> audit::Config {
    audit::Config {
        from: i64::try_from(from_ms).ok(),
        to: i64::try_from(to_ms).ok(),
        wait: Duration::from_secs(15),
        ..audit::Config::for_topics(
            bootstrap,
            tabs::config::TopicArgs::new(&topics.orders, &topics.deliveries, &topics.dlq),
            Duration::from_secs(2),
        )
    }
}
