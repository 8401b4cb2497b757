//! How a scenario ends and is judged: the makers finish the backlog, every process stops, and only then are the
//! topics audited to their ends; the liveness verdict; the patients' acknowledged orders checked against the topic.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::ensure;
use audit::liveness::{Sample, Watch};
use tabs::kafka::KafkaArgs;
use tabs::messages::parse_order;
use testkit::nix::sys::signal::Signal;
use testkit::Proc;

use crate::{Crew, Findings, Harness, Topics};

/// The findings of a scenario from its audit and the samples of its liveness watch.
pub(crate) fn findings(
    scenario: impl Into<String>,
    started: Instant,
    outcome: &audit::Outcome,
    samples: &[Sample],
    crew: &Crew,
    disruptions: &[std::time::SystemTime],
    bound: Duration,
) -> anyhow::Result<Findings> {
    let report = &outcome.report;
    let (frozen, longest_stall) = audit::liveness::stalls_through(
        samples,
        &crew.holdings(),
        &crew.kills(),
        disruptions,
        bound,
    )?;
    Ok(Findings {
        scenario: scenario.into(),
        duration: started.elapsed(),
        orders: report.orders,
        tabs: report.delivered_tabs,
        missing: report.missing_tabs,
        duplicated: report.duplicated_tabs,
        wrong: report.wrong_pow + report.wrong_fields + report.unknown_order_tabs,
        missing_dead_letters: outcome.missing_dead_letters,
        makers_started: crew.started(),
        frozen,
        liveness_bound: bound,
        longest_stall,
        latency_p50_ms: report.latency.p50_ms,
        ..Findings::default()
    })
}

/// How a scenario under the patients' load is judged once they have stopped.
pub(crate) struct Ending {
    pub(crate) scenario: String,
    pub(crate) started: Instant,
    pub(crate) making_time: Duration,
    /// How long the makers get to finish the backlog.
    pub(crate) wait: Duration,
    /// The liveness bound.
    pub(crate) bound: Duration,
}

/// Waits until `group` has committed every record of `topic` (its lag is 0 on every partition), up to `wait`.
/// Returns whether it did; one that did not is judged by the audit (what is missing) and the liveness verdict.
pub(crate) async fn drained(
    bootstrap: &str,
    group: &str,
    topic: &str,
    wait: Duration,
) -> anyhow::Result<bool> {
    let kafka = KafkaArgs::plaintext(bootstrap);
    let (group, topic) = (group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let probe = audit::liveness::LagProbe::open(&kafka, &group, &topic)?;
        let deadline = Instant::now() + wait;
        loop {
            // A failed sample (a broker restarting) is tried again.
            if let Ok(partitions) = probe.sample() {
                if partitions.iter().all(|p| p.lag() == 0) {
                    return Ok(true);
                }
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    })
    .await?
}

/// The end of a scenario, in the order that lets it fail where reality fails: the makers finish the backlog (up
/// to `wait`), the liveness watch ends, every maker is sent SIGTERM (each must exit 0; one that ended otherwise
/// by itself before fails the scenario), and only once every process has stopped is the audit read, to the
/// topics' ends: whatever a drain or a rewind wrote is in it.
pub(crate) async fn wind_down(
    harness: &Harness,
    topics: &Topics,
    crew: &mut Crew,
    watch: Watch,
    ending: &Ending,
) -> anyhow::Result<(audit::Outcome, Vec<Sample>)> {
    drained(
        &harness.bootstrap,
        &topics.group,
        &topics.orders,
        ending.wait,
    )
    .await?;
    let samples = watch.finish()?;
    crew.stop_all(Duration::from_secs(60)).await?;
    let outcome = harness
        .audit(topics, ending.making_time, Duration::ZERO)
        .await?;
    Ok((outcome, samples))
}

/// The end of a scenario whose patients have stopped ([`wind_down`]), its findings, and every order the patients
/// logged as acknowledged found in the orders topic.
pub(crate) async fn conclude(
    harness: &Harness,
    topics: &Topics,
    acknowledged: &HashSet<(String, u64)>,
    mut crew: Crew,
    watch: Watch,
    ending: Ending,
) -> anyhow::Result<Findings> {
    let (outcome, samples) = wind_down(harness, topics, &mut crew, watch, &ending).await?;
    let result = findings(
        ending.scenario,
        ending.started,
        &outcome,
        &samples,
        &crew,
        &[],
        ending.bound,
    )?;
    acknowledged_orders_are_in_the_topic(&harness.bootstrap, topics, acknowledged).await?;
    Ok(result)
}

/// Stops patients with SIGTERM and returns the orders they logged as acknowledged.
pub(crate) async fn stop_patients(patients: &mut Proc) -> anyhow::Result<HashSet<(String, u64)>> {
    patients.signal(Signal::SIGTERM);
    let code = patients.exit_code(Duration::from_secs(60)).await;
    ensure!(
        code == 0,
        "patients exited with {code}: {}",
        patients.stderr_text()
    );
    Ok(patients
        .log_events("order acknowledged")
        .iter()
        .filter_map(|e| {
            Some((
                e.get("patient_id")?.as_str()?.to_owned(),
                e.get("order_timestamp_ns")?.as_u64()?,
            ))
        })
        .collect())
}

/// Every order the patients logged as acknowledged is in the orders topic.
pub(crate) async fn acknowledged_orders_are_in_the_topic(
    bootstrap: &str,
    topics: &Topics,
    acknowledged: &HashSet<(String, u64)>,
) -> anyhow::Result<()> {
    let records = testkit::read_topic(
        bootstrap,
        &topics.orders,
        true,
        acknowledged.len(),
        Duration::from_secs(1),
        Duration::from_secs(60),
    )
    .await;
    let present: HashSet<(String, u64)> = records
        .iter()
        .filter_map(|r| parse_order(r.value.as_deref(), 30).ok())
        .map(|o| (o.patient_id, o.order_timestamp_ns))
        .collect();
    let lost = acknowledged.difference(&present).count();
    ensure!(
        lost == 0,
        "{lost} acknowledged orders are not in {}",
        topics.orders
    );
    Ok(())
}

/// Writes a program's log to `target/fault-logs/<name>.log` of `repo_root` and prints where, with its last 20
/// lines: the whole log is too long for a CI excerpt, and the findings printed after it must stay in sight.
pub(crate) fn keep_log(repo_root: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let dir = repo_root.join("target/fault-logs");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.log"));
    std::fs::write(&path, text)?;
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(20)..];
    eprintln!(
        "{name} log: {} ({} lines; the last {}):\n{}",
        path.display(),
        lines.len(),
        tail.len(),
        tail.join("\n")
    );
    Ok(path)
}
