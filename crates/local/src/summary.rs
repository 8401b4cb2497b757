//! The summary a run prints at its end.

use crate::record::{RunInfo, Sample};
use crate::run::Run;

/// The summary printed at the end of a run.
pub fn summary(
    run: &Run<'_>,
    info: &RunInfo,
    audit: &audit::Report,
    passed: bool,
    dead_letters: u64,
) -> String {
    let peak = |f: fn(&Sample) -> u64| run.samples.iter().map(f).max().unwrap_or(0);
    // The first tabs wait for the scaler's first poll and a maker's start: say so next to the percentiles.
    let first_tabs = run.samples.iter().find(|s| s.tabs_per_s > 0.0).map_or_else(
        || "no tab delivered".to_owned(),
        |s| format!("first tabs at {:.0} s", s.t_s),
    );
    let schedule: Vec<String> = info.schedule.iter().map(u32::to_string).collect();
    let verdict = if passed { "PASS" } else { "FAIL" };
    format!(
        "\nmedicine-pubsub local run: {:.0} s on {}\n  guarantee   {}\n  topics      {}\n  patients    {}\n  orders      {}  tabs {}  dead letters {}\n  \
         makers      {} started, at most {} at once (1 per {} orders of lag, at most {})\n  lag         at most {} orders\n  \
         latency     p50 {:.0} ms  p99 {:.0} ms  (overhead p50 {:.0} ms  p99 {:.0} ms; every tab, the cold start included: {first_tabs})\n  \
         audit       missing {}  duplicated {}  wrong {}  not this run's {} -> {verdict}",
        run.started.elapsed().as_secs_f64(),
        info.broker,
        info.guarantee,
        info.topics,
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
        audit.wrong_pow + audit.wrong_fields,
        audit.unknown_order_tabs,
    )
}
