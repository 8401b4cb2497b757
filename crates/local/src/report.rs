//! The record of a run: one sample per second, written as JSON, and an SVG chart of patients, lag, makers and
//! latency over time.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use audit::Report;
use serde::Serialize;

/// The state of the system during one second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub t_s: f64,
    /// Patients ordering.
    pub patients: u32,
    pub orders_per_s: u64,
    /// Lag of the makers' group, as KEDA reads it (before its partition cap).
    pub lag: u64,
    /// Makers running.
    pub makers: u32,
    pub tabs_per_s: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub overhead_p50_ms: f64,
    pub overhead_p99_ms: f64,
    /// Dead letters written during this second.
    pub dead_letters: u64,
}

/// What the run was, for the report's header.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// Names the run's children (`local-<run id>-…`) and, by default, its report directory.
    pub run_id: String,
    pub broker: String,
    pub guarantee: String,
    /// The run's topics and group (on a real broker, carrying the run id unless `--shared-topics`).
    pub topics: String,
    pub schedule: Vec<u32>,
    pub step_s: f64,
    pub tab_making_time_s: f64,
    pub lag_threshold: u64,
    pub max_makers: u32,
    pub polling_interval_s: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport<'a> {
    pub run: &'a RunInfo,
    pub makers_started: u32,
    pub audit: &'a Report,
    pub audit_passed: bool,
    pub samples: &'a [Sample],
}

/// Writes `report.json` and `report.svg` into `dir`; returns their paths.
pub fn write(dir: &Path, report: &RunReport<'_>) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = dir.join("report.json");
    std::fs::write(&json, serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let svg = dir.join("report.svg");
    std::fs::write(&svg, chart(report.samples, report.run))
        .with_context(|| format!("writing {}", svg.display()))?;
    Ok((json, svg))
}

const WIDTH: f64 = 900.0;
const PANEL_HEIGHT: f64 = 140.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const GAP: f64 = 30.0;

/// An SVG chart: four stacked panels sharing the time axis.
pub fn chart(samples: &[Sample], run: &RunInfo) -> String {
    type Series = fn(&Sample) -> f64;
    let panels: [(&str, Series, &str); 4] = [
        ("patients", |s| f64::from(s.patients), "#1f77b4"),
        ("lag (orders)", |s| s.lag as f64, "#ff7f0e"),
        ("makers running", |s| f64::from(s.makers), "#2ca02c"),
        ("tab latency p99 (ms)", |s| s.latency_p99_ms, "#d62728"),
    ];
    let height = TOP + panels.len() as f64 * (PANEL_HEIGHT + GAP) + 20.0;
    let duration = samples.last().map_or(1.0, |s| s.t_s).max(1.0);
    let plot_width = WIDTH - LEFT - RIGHT;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="22" font-size="14" font-weight="bold">{}</text>"#,
        escape(&format!(
            "medicine-pubsub local run: {}, {}, makers ≤ {}, 1 per {} orders of lag",
            run.broker, run.guarantee, run.max_makers, run.lag_threshold
        ))
    );
    for (index, (title, value, color)) in panels.iter().enumerate() {
        let top = TOP + index as f64 * (PANEL_HEIGHT + GAP);
        let max = samples.iter().map(value).fold(0.0, f64::max);
        let scale_max = nice_ceiling(max);
        let x = |t: f64| LEFT + t / duration * plot_width;
        let y = |v: f64| top + PANEL_HEIGHT - v / scale_max * PANEL_HEIGHT;

        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{top}" width="{plot_width}" height="{PANEL_HEIGHT}" fill="none" stroke="#999"/>"##
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}">{}</text>"#,
            LEFT + 6.0,
            top + 14.0,
            escape(title)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            top + 10.0,
            format_number(scale_max)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">0</text>"#,
            LEFT - 6.0,
            top + PANEL_HEIGHT
        );
        let points: Vec<String> = samples
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.t_s), y(value(s))))
            .collect();
        if !points.is_empty() {
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                points.join(" ")
            );
        }
    }
    let axis_y = TOP + panels.len() as f64 * (PANEL_HEIGHT + GAP) - GAP + 16.0;
    let _ = writeln!(svg, r#"<text x="{LEFT}" y="{axis_y}">0 s</text>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{axis_y}" text-anchor="end">{duration:.0} s</text>"#,
        WIDTH - RIGHT
    );
    svg.push_str("</svg>\n");
    svg
}

/// 1, 2 or 5 times a power of ten, at least `value` (and at least 1).
fn nice_ceiling(value: f64) -> f64 {
    if value <= 1.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&candidate| candidate >= value)
        .unwrap_or(10.0 * magnitude)
}

fn format_number(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.0}k", value / 1000.0)
    } else {
        format!("{value:.0}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> RunInfo {
        RunInfo {
            run_id: "abc".into(),
            topics: "tabs.orders, tabs.deliveries, tabs.dlq; group medicine-makers".into(),
            broker: "embedded <mock> & co".into(),
            guarantee: "at-least-once".into(),
            schedule: vec![1, 10],
            step_s: 30.0,
            tab_making_time_s: 2.0,
            lag_threshold: 256,
            max_makers: 12,
            polling_interval_s: 5.0,
        }
    }

    #[test]
    fn the_chart_is_well_formed_svg_with_four_series() {
        let samples: Vec<Sample> = (0..60)
            .map(|t| Sample {
                t_s: f64::from(t),
                patients: if t < 30 { 1 } else { 10 },
                lag: u64::from(t as u32 * 7),
                makers: (t / 20) as u32,
                latency_p99_ms: 2000.0 + f64::from(t),
                ..Sample::default()
            })
            .collect();
        let svg = chart(&samples, &run());
        let document = roxmltree::Document::parse(&svg).expect("well-formed XML");
        let root = document.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        let lines = root
            .children()
            .filter(|n| n.has_tag_name("polyline"))
            .count();
        assert_eq!(lines, 4);
        assert!(
            svg.contains("embedded &lt;mock&gt; &amp; co"),
            "text is escaped"
        );
    }

    #[test]
    fn an_empty_run_still_makes_a_valid_chart() {
        roxmltree::Document::parse(&chart(&[], &run())).expect("well-formed XML");
    }

    #[test]
    fn scales_round_up_to_one_two_or_five() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(12.0), 20.0);
        assert_eq!(nice_ceiling(2048.0), 5000.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
    }
}
