//! The record of a run: one sample per second and the audit, written as JSON; the chart (`crate::chart`); and
//! one self-contained HTML page with the chart and a table per step of the patient schedule.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use audit::Report;
use serde::Serialize;

use crate::chart::chart;
use crate::record::{ChildRecord, RunInfo, Sample};

/// One step of the patient schedule, as the report's table shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StepRow {
    /// 1-based.
    pub step: usize,
    pub patients: u32,
    pub from_s: f64,
    pub to_s: f64,
    /// Orders the step's patients placed, and per second over the step.
    pub orders: u64,
    pub orders_per_s: f64,
    /// Makers running at most during the step.
    pub makers: u32,
    /// Overhead of the step's orders' tabs (latency − making time), whenever they were delivered; `None` for a
    /// step without orders.
    pub overhead_p50_ms: Option<f64>,
    pub overhead_p99_ms: Option<f64>,
    pub missing_tabs: u64,
    pub duplicated_tabs: u64,
}

/// The rows of the table: one per step that ran, from its samples and the audit of its orders.
pub fn step_rows(
    run: &RunInfo,
    samples: &[Sample],
    audits: &[(usize, Report)],
    drain_started_s: Option<f64>,
) -> Vec<StepRow> {
    let end = drain_started_s
        .or_else(|| samples.last().map(|s| s.t_s))
        .unwrap_or(0.0);
    run.schedule
        .iter()
        .enumerate()
        .map(|(index, &patients)| {
            let from_s = index as f64 * run.step_s;
            let to_s = if index + 1 == run.schedule.len() {
                end
            } else {
                ((index + 1) as f64 * run.step_s).min(end)
            };
            (index + 1, patients, from_s, to_s)
        })
        .filter(|&(_, _, from_s, to_s)| to_s > from_s)
        .map(|(step, patients, from_s, to_s)| {
            let audit = audits
                .iter()
                .find(|(k, _)| *k == step)
                .map(|(_, report)| report.clone())
                .unwrap_or_default();
            let makers = samples
                .iter()
                .filter(|s| s.t_s > from_s && s.t_s <= to_s + 1.0)
                .map(|s| s.makers)
                .max()
                .unwrap_or(0);
            StepRow {
                step,
                patients,
                from_s,
                to_s,
                orders: audit.orders,
                orders_per_s: (audit.orders as f64 / (to_s - from_s) * 10.0).round() / 10.0,
                makers,
                overhead_p50_ms: (audit.delivered_tabs > 0).then_some(audit.overhead.p50_ms),
                overhead_p99_ms: (audit.delivered_tabs > 0).then_some(audit.overhead.p99_ms),
                missing_tabs: audit.missing_tabs,
                duplicated_tabs: audit.duplicated_tabs,
            }
        })
        .collect()
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport<'a> {
    pub run: &'a RunInfo,
    pub makers_started: u32,
    pub audit: &'a Report,
    pub audit_passed: bool,
    /// Seconds into the run when ordering ended and the makers started to drain the lag.
    pub drain_started_s: Option<f64>,
    pub steps: &'a [StepRow],
    pub children: &'a [ChildRecord],
    pub samples: &'a [Sample],
}

/// The files a report is made of.
pub struct Written {
    pub json: PathBuf,
    pub svg: PathBuf,
    pub html: PathBuf,
}

/// Writes `report.json`, `report.svg` and `report.html` into `dir`.
pub fn write(dir: &Path, report: &RunReport<'_>) -> anyhow::Result<Written> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let written = Written {
        json: dir.join("report.json"),
        svg: dir.join("report.svg"),
        html: dir.join("report.html"),
    };
    std::fs::write(&written.json, serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("writing {}", written.json.display()))?;
    let svg = chart(report.samples, report.run, report.drain_started_s)?;
    std::fs::write(&written.svg, &svg)
        .with_context(|| format!("writing {}", written.svg.display()))?;
    std::fs::write(&written.html, page(report, &svg)?)
        .with_context(|| format!("writing {}", written.html.display()))?;
    Ok(written)
}

const PAGE: &str = include_str!("../templates/report.html");

/// The HTML page: the run, the audit, the chart inline and the table of steps, nothing fetched from elsewhere.
pub fn page(report: &RunReport<'_>, svg: &str) -> anyhow::Result<String> {
    let mut env = minijinja::Environment::new();
    env.add_template("report.html", PAGE)?;
    let text = env
        .get_template("report.html")?
        .render(minijinja::context! {
            report => report,
            chart => minijinja::Value::from_safe_string(svg.to_owned()),
        })?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::tests::{run, samples};

    #[test]
    fn the_page_has_the_chart_and_a_row_per_step() {
        let info = run();
        let samples = samples();
        let audit = |orders| Report {
            orders,
            ..Report::default()
        };
        let audits = vec![(1, audit(30)), (2, audit(300)), (3, audit(15_000))];
        let steps = step_rows(&info, &samples, &audits, Some(90.0));
        assert_eq!(
            steps
                .iter()
                .map(|r| (r.step, r.patients, r.orders))
                .collect::<Vec<_>>(),
            [(1, 1, 30), (2, 10, 300), (3, 500, 15_000)]
        );
        assert_eq!(steps[2].orders_per_s, 500.0);
        let report = Report::default();
        let page = page(
            &RunReport {
                run: &info,
                makers_started: 3,
                audit: &report,
                audit_passed: true,
                drain_started_s: Some(90.0),
                steps: &steps,
                children: &[],
                samples: &samples,
            },
            &chart(&samples, &info, Some(90.0)).unwrap(),
        )
        .unwrap();
        assert!(page.contains("<svg"), "the chart is inline");
        assert!(
            page.contains("embedded &lt;mock&gt; &amp; co"),
            "text is escaped"
        );
        assert_eq!(page.matches("<tr><td>").count(), 3, "{page}");
    }
}
