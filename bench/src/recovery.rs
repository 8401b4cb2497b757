//! Benchmark 7: recovery after `kill -9`. Two makers share a group under a steady load; one is killed with
//! SIGKILL with orders in flight. Measured from the kill: when the other maker is given the first of the dead
//! one's partitions, and when the first and the last of them have an order committed again. A dead member keeps
//! its partitions until its session times out, and its open transaction holds its offsets back until the broker
//! aborts it (the transaction timeout, then the broker's abort interval): the reference is the longer of the two,
//! plus one making time, from the settings of the broker measured. On the test broker (the deployed cluster's
//! group and transaction settings) and on a broker with Kafka's defaults, with both group protocols there.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _};
use faults::{Crew, Harness, SecondBroker, Topics};
use tabs::kafka::KafkaArgs;
use testkit::nix::sys::signal::Signal;
use testkit::Proc;

use crate::support::{binary, repo_root};

/// The makers' transaction timeout (their default).
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);
const MAKING: Duration = Duration::from_secs(2);

/// One kill and what followed.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// Which broker settings.
    pub settings: &'static str,
    pub protocol: &'static str,
    /// What the group waits before it gives a dead member's partitions away.
    pub session_timeout: Duration,
    /// The broker's `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    pub abort_interval: Duration,
    /// Partitions the killed maker held.
    pub partitions: usize,
    /// Kill → the survivor is given the first of them.
    pub reassigned_s: f64,
    /// Kill → the first of them has an order committed again.
    pub first_s: f64,
    /// Kill → every one of them has.
    pub all_s: f64,
    pub audit_passed: bool,
}

impl Recovery {
    /// The longer of the session timeout and the transaction's end, plus one making time.
    pub fn reference(&self) -> Duration {
        self.session_timeout
            .max(TRANSACTION_TIMEOUT + self.abort_interval)
            + MAKING
    }
}

/// The three cases: the deployed settings on the test broker at `bootstrap`, then Kafka's defaults (a broker of
/// this benchmark's own) with each group protocol.
pub async fn run(bootstrap: &str) -> anyhow::Result<Vec<Recovery>> {
    let exe = binary("fault-campaign");
    let deployed = Harness::new(exe.clone(), bootstrap);
    let mut results = vec![
        once(
            &deployed,
            "deployed settings",
            Duration::from_secs(10),
            deployed.transaction_cleanup,
        )
        .await?,
    ];
    let defaults = SecondBroker::start_with_defaults(&repo_root()).await?;
    for (protocol, session) in [("consumer", 45), ("classic", 10)] {
        let harness = Harness {
            protocol: Some(protocol),
            transaction_cleanup: Duration::from_secs(10),
            ..Harness::new(exe.clone(), defaults.bootstrap.clone())
        };
        let cleanup = harness.transaction_cleanup;
        // `classic`: the maker's own session.timeout.ms; KIP-848: the broker's.
        results.push(
            once(
                &harness,
                "Kafka's defaults",
                Duration::from_secs(session),
                cleanup,
            )
            .await?,
        );
    }
    Ok(results)
}

async fn once(
    harness: &Harness,
    settings: &'static str,
    session_timeout: Duration,
    abort_interval: Duration,
) -> anyhow::Result<Recovery> {
    let protocol = harness.protocol.unwrap_or("consumer");
    println!("recovery after kill -9: {settings}, {protocol} protocol");
    let topics = Topics::create(&harness.bootstrap).await;
    let making = ["--tab-making-time", "2s", "--idle-exit-after", "0"];
    // About 30 orders/s on 6 partitions: both makers have orders in flight all along.
    let mut patients = harness.patients(&topics, 15, "500ms");
    let mut crew = Crew::default();
    let doomed = crew.add(harness.maker(&topics, &making));
    let survivor = crew.add(harness.maker(&topics, &making));
    committing(&crew, &[doomed, survivor]).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let kafka = KafkaArgs::plaintext(&harness.bootstrap);
    let (group, orders) = (topics.group.clone(), topics.orders.clone());
    let probe = tokio::task::spawn_blocking(move || {
        audit::liveness::LagProbe::open(&kafka, &group, &orders)
    })
    .await??;
    let probe = std::sync::Arc::new(probe);
    let killed_at = SystemTime::now();
    let killed = Instant::now();
    crew.stop(doomed, Signal::SIGKILL, Duration::from_secs(10))
        .await
        .context("the maker did not die")?;
    let at_kill = committed(&probe).await?;
    let held: Vec<i32> = crew
        .holdings()
        .into_iter()
        .filter(|h| h.until.is_some_and(|until| until >= killed_at))
        .map(|h| h.partition)
        .collect();
    if held.is_empty() {
        bail!(
            "the killed maker held no partition: {}",
            crew.proc(doomed).stderr_text()
        );
    }

    let deadline =
        session_timeout.max(TRANSACTION_TIMEOUT + abort_interval) + Duration::from_secs(60);
    let moved = moved_again(&probe, &held, &at_kill, killed, deadline)
        .await
        .with_context(|| crew.proc(survivor).stderr_text())?;
    let reassigned_s = reassigned_after(crew.proc(survivor), killed_at, &held);

    patients.signal(Signal::SIGTERM);
    patients.exit_code(Duration::from_secs(30)).await;
    let outcome = harness
        .audit(&topics, MAKING, Duration::from_secs(30))
        .await?;
    crew.stop_all(Duration::from_secs(30)).await?;
    let times: Vec<f64> = moved.into_iter().flatten().collect();
    let result = Recovery {
        settings,
        protocol,
        session_timeout,
        abort_interval,
        partitions: held.len(),
        reassigned_s,
        first_s: times.iter().copied().fold(f64::INFINITY, f64::min),
        all_s: times.iter().copied().fold(0.0, f64::max),
        audit_passed: outcome.report.is_clean(),
    };
    result.print();
    Ok(result)
}

/// Waits until each of `makers` has committed its first orders.
async fn committing(crew: &Crew, makers: &[usize]) -> anyhow::Result<()> {
    for &maker in makers {
        if !crew
            .proc(maker)
            .wait_for_log("first orders committed", Duration::from_secs(60))
            .await
        {
            bail!(
                "a maker never committed: {}",
                crew.proc(maker).stderr_text()
            );
        }
    }
    Ok(())
}

/// Seconds from the kill until the committed offset of each of `held` first moved past where it was at the kill.
async fn moved_again(
    probe: &std::sync::Arc<audit::liveness::LagProbe>,
    held: &[i32],
    at_kill: &BTreeMap<i32, i64>,
    killed: Instant,
    deadline: Duration,
) -> anyhow::Result<Vec<Option<f64>>> {
    let mut moved: Vec<Option<f64>> = vec![None; held.len()];
    while moved.iter().any(Option::is_none) {
        if killed.elapsed() > deadline {
            bail!(
                "the killed maker's partitions {held:?} did not all move again within {deadline:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = committed(probe).await?;
        for (slot, partition) in moved.iter_mut().zip(held) {
            if slot.is_none() && now.get(partition) > at_kill.get(partition) {
                *slot = Some(killed.elapsed().as_secs_f64());
            }
        }
    }
    Ok(moved)
}

/// Seconds from the kill until the survivor's log first says it was given one of `held`.
fn reassigned_after(survivor: &Proc, killed_at: SystemTime, held: &[i32]) -> f64 {
    survivor
        .log_events("partitions assigned")
        .iter()
        .filter_map(|e| {
            let at = log_time(e.get("timestamp")?.as_str()?)?;
            let partitions = testkit::logged_partitions(e.get("partitions")?.as_str()?);
            (at > killed_at && held.iter().any(|p| partitions.contains(p)))
                .then(|| at.duration_since(killed_at).ok())
                .flatten()
        })
        .min()
        .map_or(f64::NAN, |d| d.as_secs_f64())
}

impl Recovery {
    fn print(&self) {
        println!(
            "  {} partitions: given to the other maker {:.1} s after the kill, an order committed again on the \
             first {:.1} s and on all {:.1} s after it (reference: {:.0} s, ratio {:.2}); audit {}",
            self.partitions,
            self.reassigned_s,
            self.first_s,
            self.all_s,
            self.reference().as_secs_f64(),
            self.first_s / self.reference().as_secs_f64(),
            if self.audit_passed { "passed" } else { "FAILED" }
        );
    }
}

/// The group's committed offset of each partition of the probe's topic.
async fn committed(
    probe: &std::sync::Arc<audit::liveness::LagProbe>,
) -> anyhow::Result<BTreeMap<i32, i64>> {
    let probe = std::sync::Arc::clone(probe);
    let lags = tokio::task::spawn_blocking(move || probe.sample()).await??;
    Ok(lags
        .into_iter()
        .map(|p| (p.partition, p.committed.unwrap_or(0)))
        .collect())
}

fn log_time(text: &str) -> Option<SystemTime> {
    let ns = crate::support::parse_log_timestamp(text)?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(ns))
}
