//! Benchmark 4: how fast the autoscaler reacts. The local mode on the test broker, KEDA's rule with the
//! deployment's polling interval (5 s) and making time (2 s), a threshold small enough that 50 patients need
//! several makers; load steps from 1 to 50 patients. The reaction is the time from the step until the lag is back
//! under one threshold per running maker, compared with one polling interval plus one making time.

use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::support::spawn;

/// The scale-reaction figures.
#[derive(Debug, Clone)]
pub struct Scale {
    pub step_at_s: f64,
    pub reaction_s: f64,
    pub reference_s: f64,
    pub makers_after: u64,
    pub peak_lag: u64,
    pub lag_threshold: u64,
    pub audit_passed: bool,
}

pub async fn run(bootstrap: &str, step: Duration) -> anyhow::Result<Scale> {
    let (threshold, polling, making) = (16u64, Duration::from_secs(5), Duration::from_secs(2));
    println!("scale reaction: patients 1 -> 50 at {step:?}, lagThreshold {threshold}, polling {polling:?}, making {making:?}");
    let dir = std::env::temp_dir().join(testkit::unique("bench-scale"));
    let name = testkit::unique("scale");
    let args: Vec<String> = [
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
        "1,50",
        "--step",
        &format!("{}s", step.as_secs()),
        "--duration",
        &format!("{}s", step.as_secs() * 2),
        "--lag-threshold",
        &threshold.to_string(),
        "--max-in-flight-orders",
        &threshold.to_string(),
        "--polling-interval",
        &format!("{}s", polling.as_secs()),
        "--tab-making-time",
        &format!("{}s", making.as_secs()),
        "--view",
        "plain",
        "--report-dir",
        dir.to_str().context("UTF-8 temp dir")?,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut local = spawn("medicine-pubsub-local", &args, &[]);
    let code = local.exit_code(Duration::from_secs(600)).await;
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).context("report.json")?)?;
    if code != 0 {
        bail!("the local run failed ({code}): {}", local.stderr_text());
    }
    let samples = report["samples"].as_array().context("samples")?;
    let step_at = step.as_secs_f64();
    let after: Vec<&serde_json::Value> = samples
        .iter()
        .filter(|s| s["t_s"].as_f64().unwrap_or(0.0) >= step_at && s["patients"] == 50)
        .collect();
    let caught_up = after.iter().find(|s| {
        let (lag, makers) = (
            s["lag"].as_u64().unwrap_or(u64::MAX),
            s["makers"].as_u64().unwrap_or(0),
        );
        makers > 0 && lag <= threshold * makers && s["t_s"].as_f64().unwrap_or(0.0) > step_at + 1.0
    });
    let Some(caught_up) = caught_up else {
        bail!("the lag never came back under one threshold per maker during the 50-patient step");
    };
    let reaction = caught_up["t_s"].as_f64().unwrap_or(0.0) - step_at;
    let result = Scale {
        step_at_s: step_at,
        reaction_s: reaction,
        reference_s: (polling + making).as_secs_f64(),
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
        lag_threshold: threshold,
        audit_passed: report["audit_passed"] == true,
    };
    println!(
        "  lag back under one threshold per maker {:.1} s after the step (reference: polling + making = {:.0} s, ratio {:.2}); up to {} makers, peak lag {}",
        result.reaction_s,
        result.reference_s,
        result.reaction_s / result.reference_s,
        result.makers_after,
        result.peak_lag
    );
    Ok(result)
}
