//! How a run on the cluster is judged: the makers by the audit and their logs, Kafka's copiers by the orders and
//! the copies compared record by record.

use std::path::Path;
use std::time::{Duration, Instant};

use audit::liveness::Sample;

use super::{copied, keep_logs, MAKING};
use crate::copier::Copiers;
use crate::{findings, Crew, Findings, Harness, Topics};

/// What a run on the cluster is judged with.
pub(super) struct Judging<'a> {
    pub(super) harness: &'a Harness,
    pub(super) topics: &'a Topics,
    pub(super) started: Instant,
    pub(super) samples: &'a [Sample],
    pub(super) disruptions: Vec<std::time::SystemTime>,
    pub(super) bound: Duration,
    pub(super) scenario: String,
}

/// The makers stopped (each must exit 0), the topics audited, and what their logs say of aborts, stuck commits
/// and orders found already delivered.
pub(super) async fn makers_judged(
    mut crew: Crew,
    judging: &Judging<'_>,
    repo_root: &Path,
) -> anyhow::Result<Findings> {
    crew.stop_all(Duration::from_secs(60)).await?;
    let outcome = judging
        .harness
        .audit(judging.topics, MAKING, Duration::ZERO)
        .await?;
    let mut result = findings(
        judging.scenario.clone(),
        judging.started,
        &outcome,
        judging.samples,
        &crew,
        &judging.disruptions,
        judging.bound,
    )?;
    if !result.passed() || std::env::var_os("FAULTS_MAKER_LOG").is_some() {
        keep_logs(repo_root, &crew)?;
    }
    let aborts: u64 = crew
        .running_and_gone()
        .iter()
        .filter_map(|p| p.log_events("maker stopped").first().cloned())
        .filter_map(|e| e.get("aborts").and_then(serde_json::Value::as_u64))
        .sum();
    result
        .notes
        .push(format!("{aborts} transactions aborted and redone"));
    let count = |event: &str| -> usize {
        crew.running_and_gone()
            .iter()
            .map(|p| p.log_events(event).len())
            .sum()
    };
    let stuck_in: Vec<String> = crew
        .running_and_gone()
        .iter()
        .flat_map(|p| p.log_events(medicine::STUCK_IN))
        .filter_map(|e| e.get("call").and_then(|c| c.as_str()).map(str::to_owned))
        .collect();
    result.notes.push(format!(
        "{} commits given up as stuck (in: {}); {} orders found already delivered after a rewind, not made again",
        count(medicine::STUCK_COMMIT),
        stuck_in.join(", "),
        count(medicine::ALREADY_DELIVERED),
    ));
    Ok(result)
}

/// The copiers finished, the orders and the copies compared record by record.
pub(super) async fn copiers_judged(
    mut copiers: Copiers,
    judging: &Judging<'_>,
    output: &str,
) -> anyhow::Result<Findings> {
    copiers.finish(Duration::from_secs(60)).await;
    let mut result = copied(
        judging.harness,
        &judging.topics.orders,
        output,
        judging.started,
        judging.samples,
        &judging.disruptions,
        judging.bound,
    )
    .await?;
    result.scenario.clone_from(&judging.scenario);
    result.makers_started = copiers.runs;
    result.notes.push(copiers.runs_note());
    Ok(result)
}
