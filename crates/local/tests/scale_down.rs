//! Scaling down in the local mode on the real test broker: after a load falls, the makers KEDA's rule no longer
//! counts leave by themselves (KEDA itself never stops a Job), while a steady load keeps its makers.

use std::time::Duration;

use testkit::serde_json::Value;
use testkit::{require_broker, unique, Proc};

const LOCAL: &str = env!("CARGO_BIN_EXE_medicine-pubsub-local");
const STEP_S: f64 = 30.0;
const THRESHOLD: u64 = 16;

#[tokio::test]
async fn surplus_makers_leave_when_the_load_falls_and_a_steady_load_keeps_its_makers() {
    let bootstrap = require_broker!();
    let dir = std::env::temp_dir().join(unique("medicine-pubsub-scale-down"));
    // 24 patients ordering twice a second, tabs taking 1 s: ~50 orders of lag, three makers' worth; then 2
    // patients, one maker's worth.
    let mut local = Proc::spawn_with_stdout(
        LOCAL,
        &[
            "--bootstrap-servers",
            &bootstrap,
            "--patients",
            "24,2",
            "--step",
            &format!("{STEP_S}s"),
            "--order-period",
            "500ms",
            "--tab-making-time",
            "1s",
            "--lag-threshold",
            &THRESHOLD.to_string(),
            "--max-in-flight-orders",
            &(2 * THRESHOLD).to_string(),
            "--max-makers",
            "6",
            "--polling-interval",
            "1s",
            "--surplus-exit-after",
            "5s",
            "--idle-exit-after",
            "3s",
            "--view",
            "plain",
            "--report-dir",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    let code = local.exit_code(Duration::from_secs(240)).await;
    assert_eq!(code, 0, "stderr:\n{}", local.stderr_text());
    let report: Value = testkit::serde_json::from_str(
        &std::fs::read_to_string(dir.join("report.json")).expect("report.json written"),
    )
    .unwrap();
    let audit = &report["audit"];
    assert_eq!(report["audit_passed"], true, "{audit}");
    assert_eq!(audit["missing_tabs"], 0, "{audit}");
    assert_eq!(audit["duplicated_tabs"], 0, "{audit}");

    let samples: Vec<(f64, u64, u64)> = report["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["t_s"].as_f64().unwrap(),
                s["makers"].as_u64().unwrap(),
                s["lag"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let timeline: Vec<String> = samples
        .iter()
        .map(|(t, makers, lag)| format!("{t:.0}s:{makers}m/{lag}"))
        .collect();
    eprintln!("t:makers/lag {}", timeline.join(" "));

    // Steady load (the second half of the first step, once the scale-out has settled): the maker count never
    // falls and then rises again, i.e. no maker leaves only for KEDA to start another.
    let steady: Vec<u64> = samples
        .iter()
        .filter(|(t, _, _)| *t >= STEP_S / 2.0 && *t < STEP_S)
        .map(|(_, makers, _)| *makers)
        .collect();
    assert!(steady.len() >= 10, "{timeline:?}");
    let fell_then_rose = steady
        .windows(2)
        .skip_while(|w| w[1] >= w[0])
        .any(|w| w[1] > w[0]);
    assert!(
        !fell_then_rose,
        "makers came and went under a steady load: {timeline:?}"
    );
    assert!(
        steady.iter().all(|&m| m >= 2),
        "the steady load needs several makers: {timeline:?}"
    );

    // The load falls: within 30 s the makers are down to the one KEDA's rule asks for, and stay there.
    let after: Vec<&(f64, u64, u64)> = samples
        .iter()
        .filter(|(t, _, _)| *t >= STEP_S && *t < 2.0 * STEP_S)
        .collect();
    let one = after
        .iter()
        .position(|(_, makers, _)| *makers == 1)
        .unwrap_or_else(|| panic!("never down to one maker: {timeline:?}"));
    let reached = after[one].0 - STEP_S;
    eprintln!("down to one maker {reached:.1} s after the load fell");
    assert!(reached <= 30.0, "{reached:.1} s: {timeline:?}");
    assert!(
        after[one..].iter().all(|(_, makers, _)| *makers == 1),
        "the last maker stays while orders come: {timeline:?}"
    );
}
