//! Benchmark 4: how fast the makers follow a load step. The local mode on the test broker at the deployment's
//! settings (KEDA's polling interval of 5 s, making time 2 s, the in-flight bound at the shipped ratio to the lag
//! threshold, the shipped hand-over bound and surplus exit), with a threshold small enough that 50 patients need
//! several makers; patients step from 1 to 50 just after a poll, the worst moment (KEDA sees the step one whole
//! polling interval later).
//!
//! Two reactions are measured from the step, each compared with one polling interval plus one making time (an
//! autoscaler that saw the step at its next poll and had its makers making at once): when the lag is back under
//! one threshold per running maker (KEDA's own view: it starts no more makers), and when the step's backlog is
//! made (the lag back under what arrives in one making time and half a second: every order is being made or
//! about to be). The makers' logs give their time to join and the orders they began and dropped.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::support::{spawn, strings};

/// The scale-reaction figures.
#[derive(Debug, Clone)]
pub struct Scale {
    pub step_at_s: f64,
    /// Step → lag under one threshold per running maker.
    pub keda_s: f64,
    /// Step → the step's backlog made.
    pub made_s: f64,
    pub reference_s: f64,
    pub lag_threshold: u64,
    pub max_in_flight_orders: u32,
    pub makers_after: u64,
    pub peak_lag: u64,
    /// Makers started by the step: median and longest time from start to their first partitions, in ms.
    pub join_median_ms: u64,
    pub join_max_ms: u64,
    /// Orders the makers began and dropped (made again by another), over the run.
    pub dropped: u64,
    pub audit_passed: bool,
}

/// The lag threshold of the run: small enough that 50 patients need several makers.
const LAG_THRESHOLD: u64 = 16;
const PATIENTS: u32 = 50;
/// Slack over one making time in the "backlog made" reaction: the lag a steady load keeps is what arrives in one
/// making time (and one commit interval).
const STEADY_SLACK: Duration = Duration::from_millis(500);

pub async fn run(bootstrap: &str, step: Duration) -> anyhow::Result<Scale> {
    let defaults = local::defaults::load();
    let (polling, making) = (defaults.polling_interval, Duration::from_secs(2));
    // deploy/ ships the bound at a multiple of the threshold (KEDA's makers then stay under their bound).
    let ratio = defaults.maker_number("MEDECINEPUBSUB_MAX_IN_FLIGHT_ORDERS")
        / defaults.lag_threshold as u32;
    let bound = LAG_THRESHOLD as u32 * ratio.max(1);
    println!(
        "scale reaction: patients 1 -> {PATIENTS} at {step:?}, lagThreshold {LAG_THRESHOLD}, in-flight bound \
         {bound} (deploy/'s ratio {ratio}), polling {polling:?}, making {making:?}"
    );
    let dir = std::env::temp_dir().join(testkit::unique("bench-scale"));
    let report = local_run(bootstrap, &dir, step, bound, polling, making).await?;
    let samples = report["samples"].as_array().context("samples")?;
    let step_at = step.as_secs_f64();
    let after: Vec<&serde_json::Value> = samples
        .iter()
        .filter(|s| num(s, "t_s") >= step_at && s["patients"] == PATIENTS)
        .collect();
    let (keda_s, made_s) = reactions(&after, step_at, making)?;
    let makers = makers_started_after(&dir.join("logs"), &report, step_at)?;
    let mut joins: Vec<u64> = makers.iter().filter_map(|m| m.join_ms).collect();
    joins.sort_unstable();
    let result = Scale {
        step_at_s: step_at,
        keda_s,
        made_s,
        reference_s: (polling + making).as_secs_f64(),
        lag_threshold: LAG_THRESHOLD,
        max_in_flight_orders: bound,
        makers_after: after
            .iter()
            .filter_map(|s| s["makers"].as_u64())
            .max()
            .unwrap_or(0),
        peak_lag: after
            .iter()
            .filter_map(|s| s["lag"].as_u64())
            .max()
            .unwrap_or(0),
        join_median_ms: joins.get(joins.len() / 2).copied().unwrap_or(0),
        join_max_ms: joins.last().copied().unwrap_or(0),
        dropped: dropped_by_makers(&dir.join("logs"))?,
        audit_passed: report["audit_passed"] == true,
    };
    result.print();
    Ok(result)
}

/// The local mode through the step, its report and logs in `dir`: the run's record.
async fn local_run(
    bootstrap: &str,
    dir: &Path,
    step: Duration,
    bound: u32,
    polling: Duration,
    making: Duration,
) -> anyhow::Result<serde_json::Value> {
    let name = testkit::unique("scale");
    let args = strings(&[
        "--bootstrap-servers",
        bootstrap,
        "--orders-topic",
        &format!("{name}.orders"),
        "--deliveries-topic",
        &format!("{name}.deliveries"),
        "--dlq-topic",
        &format!("{name}.dlq"),
        "--group",
        &format!("{name}.makers"),
        "--patients",
        &format!("1,{PATIENTS}"),
        "--step",
        &format!("{}s", step.as_secs()),
        "--duration",
        &format!("{}s", step.as_secs() * 2),
        "--lag-threshold",
        &LAG_THRESHOLD.to_string(),
        "--max-in-flight-orders",
        &bound.to_string(),
        "--polling-interval",
        &format!("{}s", polling.as_secs()),
        "--tab-making-time",
        &format!("{}s", making.as_secs()),
        "--view",
        "plain",
        "--report-dir",
        dir.to_str().context("UTF-8 temp dir")?,
    ]);
    let mut local = spawn("medicine-pubsub-local", &args, &[]);
    let code = local.exit_code(Duration::from_secs(600)).await;
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).context("report.json")?)?;
    if code != 0 {
        bail!("the local run failed ({code}): {}", local.stderr_text());
    }
    Ok(report)
}

/// Seconds from the step to the lag back under one threshold per maker, and to the step's backlog made, in the
/// samples `after` the step.
fn reactions(
    after: &[&serde_json::Value],
    step_at: f64,
    making: Duration,
) -> anyhow::Result<(f64, f64)> {
    // The first second after the step where `holds` (the step's first second has no new orders yet).
    let first = |what: &str, holds: &dyn Fn(&serde_json::Value) -> bool| {
        after
            .iter()
            .find(|s| num(s, "t_s") > step_at + 1.0 && holds(s))
            .map(|s| num(s, "t_s") - step_at)
            .with_context(|| format!("{what} never happened during the {PATIENTS}-patient step"))
    };
    let keda_s = first("the lag back under one threshold per maker", &|s| {
        let makers = s["makers"].as_u64().unwrap_or(0);
        makers > 0 && s["lag"].as_u64().unwrap_or(u64::MAX) <= LAG_THRESHOLD * makers
    })?;
    // Made once the lag, which the step made grow past what a steady load keeps, is back under it.
    let steady = f64::from(PATIENTS) * (making + STEADY_SLACK).as_secs_f64();
    let lag = |s: &serde_json::Value| s["lag"].as_u64().unwrap_or(u64::MAX) as f64;
    let grown = after
        .iter()
        .find(|s| lag(s) > steady)
        .map(|s| num(s, "t_s"))
        .context(
            "the lag never grew past what a steady load keeps: the step needed no more makers",
        )?;
    let made_s = first("the step's backlog made", &|s| {
        num(s, "t_s") > grown && lag(s) <= steady
    })?;
    Ok((keda_s, made_s))
}

impl Scale {
    fn print(&self) {
        println!(
            "  lag under one threshold per maker {:.1} s after the step (ratio {:.2}), the step's backlog made \
             {:.1} s after it (ratio {:.2}); reference: polling + making = {:.0} s",
            self.keda_s,
            self.keda_s / self.reference_s,
            self.made_s,
            self.made_s / self.reference_s,
            self.reference_s,
        );
        println!(
            "  up to {} makers, peak lag {}; new makers joined in {} ms (median), {} ms (longest); {} orders \
             begun and dropped; audit {}",
            self.makers_after,
            self.peak_lag,
            self.join_median_ms,
            self.join_max_ms,
            self.dropped,
            if self.audit_passed { "passed" } else { "FAILED" }
        );
    }
}

fn num(sample: &serde_json::Value, key: &str) -> f64 {
    sample[key].as_f64().unwrap_or(0.0)
}

/// A maker of the run, from its log.
struct Maker {
    /// From its start to its first non-empty assignment.
    join_ms: Option<u64>,
}

/// The makers started after `step_at` (the run's record says when each child started).
fn makers_started_after(
    logs: &Path,
    report: &serde_json::Value,
    step_at: f64,
) -> anyhow::Result<Vec<Maker>> {
    let children = report["children"].as_array().context("children")?;
    let mut makers = Vec::new();
    for child in children {
        let name = child["name"].as_str().unwrap_or_default();
        if !name.starts_with("maker-") || num(child, "started_s") < step_at {
            continue;
        }
        let join_ms = events(&logs.join(format!("{name}.log")))?
            .iter()
            .find(|e| {
                e["message"] == "partitions assigned" && e["partitions"].as_str() != Some("[]")
            })
            .and_then(|e| e["since_start_ms"].as_u64());
        makers.push(Maker { join_ms });
    }
    Ok(makers)
}

/// Orders begun and dropped, from every maker's exit summary.
fn dropped_by_makers(logs: &Path) -> anyhow::Result<u64> {
    let mut dropped = 0;
    for entry in std::fs::read_dir(logs).context("the run's logs")? {
        let path = entry?.path();
        let is_maker = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("maker-"));
        if is_maker {
            dropped += events(&path)?
                .iter()
                .filter(|e| e["message"] == "maker stopped")
                .filter_map(|e| e["dropped"].as_u64())
                .sum::<u64>();
        }
    }
    Ok(dropped)
}

/// A child's JSON log events.
fn events(path: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect())
}
