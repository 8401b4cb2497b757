//! The report's chart: four panels sharing the time axis (patients on a log scale, lag, makers, latency), drawn
//! with plotters as SVG, the steps of the schedule and the drain marked on each.

use plotters::prelude::*;

use crate::record::{RunInfo, Sample};

const WIDTH: u32 = 960;
const PANEL_HEIGHT: u32 = 200;
const TITLE_HEIGHT: u32 = 40;
const FONT: &str = "sans-serif";

/// The latency panel's scale: most seconds in full, an outlier (a cold start, a rebalance) above it noted
/// rather than squashing the rest. Twice the median of the per-second p99, at least the making time plus a
/// second, rounded up to 1, 2 or 5 times a power of ten.
fn latency_cap(samples: &[Sample], making_time_ms: f64) -> f64 {
    let mut p99: Vec<f64> = samples.iter().filter_map(|s| s.latency_p99_ms).collect();
    if p99.is_empty() {
        return nice_ceiling(making_time_ms + 1000.0);
    }
    p99.sort_by(f64::total_cmp);
    let median = p99[p99.len() / 2];
    let max = p99[p99.len() - 1];
    nice_ceiling(max.min((2.0 * median).max(making_time_ms + 1000.0)))
}

/// Where the schedule changed step (seconds, patients of the new step), before ordering ended.
fn step_marks(run: &RunInfo, end_s: f64) -> Vec<(f64, u32)> {
    run.schedule
        .iter()
        .enumerate()
        .skip(1)
        .map(|(index, &patients)| (index as f64 * run.step_s, patients))
        .filter(|&(t, _)| t < end_s)
        .collect()
}

/// The time axis the panels share: its length, and the steps and the drain marked on it.
struct Axis<'m> {
    duration: f64,
    marks: &'m [(f64, u32)],
    drain_started_s: Option<f64>,
}

type Area<'b> = DrawingArea<SVGBackend<'b>, plotters::coord::Shift>;

/// The chart: four panels sharing the time axis (patients on a log scale, lag, makers, latency), the steps and
/// the drain marked on each.
pub fn chart(
    samples: &[Sample],
    run: &RunInfo,
    drain_started_s: Option<f64>,
) -> anyhow::Result<String> {
    let mut svg = String::new();
    let duration = samples.last().map_or(1.0, |s| s.t_s).max(1.0);
    let marks = step_marks(run, drain_started_s.unwrap_or(duration));
    let axis = Axis {
        duration,
        marks: &marks,
        drain_started_s,
    };
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, TITLE_HEIGHT + 4 * PANEL_HEIGHT))
            .into_drawing_area();
        root.fill(&WHITE)?;
        let (title, body) = root.split_vertically(TITLE_HEIGHT);
        title.draw_text(
            &format!(
                "medicine-pubsub local run {}: {}, makers ≤ {}, 1 per {} orders of lag",
                run.run_id,
                if run.guarantee.starts_with("exactly-once") {
                    "exactly-once"
                } else {
                    "at-least-once"
                },
                run.max_makers,
                run.lag_threshold
            ),
            &(FONT, 18).into_font().color(&BLACK),
            (12, 12),
        )?;
        let panels = body.split_evenly((4, 1));
        draw_patients(&panels[0], samples, &axis)?;
        draw_lag(&panels[1], samples, &axis)?;
        draw_makers(&panels[2], samples, &axis)?;
        draw_latency(&panels[3], samples, &axis, run.tab_making_time_s * 1000.0)?;
        root.present()?;
    }
    Ok(svg)
}

/// Patients: a log scale, so 1 and 10 show beside 1,000. Seconds with no patient are left out.
fn draw_patients(area: &Area<'_>, samples: &[Sample], axis: &Axis<'_>) -> anyhow::Result<()> {
    let max_patients = samples.iter().map(|s| s.patients).max().unwrap_or(1).max(1);
    // Up to a power of ten: plotters' log grid is regular only between powers of ten.
    let patients_top = 10f64.powf((f64::from(max_patients) * 1.2).log10().ceil());
    let mut chart = panel(area, "patients ordering (log scale)")
        .build_cartesian_2d(0f64..axis.duration, (0.8f64..patients_top).log_scale())?;
    chart
        .configure_mesh()
        .y_desc("patients")
        .x_desc("seconds")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    for run_of_patients in samples.split(|s| s.patients == 0).filter(|r| !r.is_empty()) {
        chart.draw_series(LineSeries::new(
            run_of_patients
                .iter()
                .map(|s| (s.t_s, f64::from(s.patients))),
            BLUE.stroke_width(2),
        ))?;
    }
    mark(
        &mut chart,
        axis.marks,
        axis.drain_started_s,
        (0.8, patients_top),
        true,
    )
}

fn draw_lag(area: &Area<'_>, samples: &[Sample], axis: &Axis<'_>) -> anyhow::Result<()> {
    let max_lag = nice_ceiling(samples.iter().map(|s| s.lag).max().unwrap_or(0) as f64);
    let mut chart = panel(
        area,
        "lag of the makers' group (orders waiting or being made)",
    )
    .build_cartesian_2d(0f64..axis.duration, 0f64..max_lag)?;
    chart
        .configure_mesh()
        .y_desc("orders")
        .x_desc("seconds")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    chart.draw_series(LineSeries::new(
        samples.iter().map(|s| (s.t_s, s.lag as f64)),
        RGBColor(255, 127, 14).stroke_width(2),
    ))?;
    mark(
        &mut chart,
        axis.marks,
        axis.drain_started_s,
        (0.0, max_lag),
        false,
    )
}

fn draw_makers(area: &Area<'_>, samples: &[Sample], axis: &Axis<'_>) -> anyhow::Result<()> {
    let max_makers = samples.iter().map(|s| s.makers).max().unwrap_or(0).max(1);
    let top = f64::from(max_makers + 1);
    let mut chart =
        panel(area, "makers running").build_cartesian_2d(0f64..axis.duration, 0f64..top)?;
    chart
        .configure_mesh()
        .y_desc("makers")
        .x_desc("seconds")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .y_labels(usize::try_from(max_makers + 2).unwrap_or(12).min(12))
        .draw()?;
    chart.draw_series(LineSeries::new(
        samples.iter().map(|s| (s.t_s, f64::from(s.makers))),
        RGBColor(44, 160, 44).stroke_width(2),
    ))?;
    mark(
        &mut chart,
        axis.marks,
        axis.drain_started_s,
        (0.0, top),
        false,
    )
}

/// Latency, capped: the outliers are drawn at the cap and counted in the caption.
fn draw_latency(
    area: &Area<'_>,
    samples: &[Sample],
    axis: &Axis<'_>,
    making_ms: f64,
) -> anyhow::Result<()> {
    let cap = latency_cap(samples, making_ms);
    let above: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.latency_p99_ms.is_some_and(|v| v > cap))
        .collect();
    let caption = match above.iter().copied().max_by(|a, b| {
        a.latency_p99_ms
            .unwrap_or(0.0)
            .total_cmp(&b.latency_p99_ms.unwrap_or(0.0))
    }) {
        Some(worst) => format!(
            "tab latency p50 and p99 (ms); {} s above {} ms drawn at the top (max {:.0} ms at {:.0} s)",
            above.len(),
            format_number(cap),
            worst.latency_p99_ms.unwrap_or(0.0),
            worst.t_s
        ),
        None => "tab latency p50 and p99 (ms)".to_owned(),
    };
    let mut chart = panel(area, &caption).build_cartesian_2d(0f64..axis.duration, 0f64..cap)?;
    chart
        .configure_mesh()
        .y_desc("ms")
        .x_desc("seconds")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    let p99_color = RGBColor(214, 39, 40);
    let p50_color = RGBColor(148, 103, 189);
    for (name, value, color) in [
        (
            "p99",
            (|s: &Sample| s.latency_p99_ms) as fn(&Sample) -> Option<f64>,
            p99_color,
        ),
        ("p50", |s: &Sample| s.latency_p50_ms, p50_color),
    ] {
        chart
            .draw_series(LineSeries::new(
                samples
                    .iter()
                    .filter_map(|s| value(s).map(|v| (s.t_s, v.min(cap)))),
                color.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart.draw_series(
        above
            .iter()
            .map(|s| TriangleMarker::new((s.t_s, cap), 5, p99_color.filled())),
    )?;
    mark(
        &mut chart,
        axis.marks,
        axis.drain_started_s,
        (0.0, cap),
        false,
    )?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn panel<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    caption: &str,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, (FONT, 14))
        .margin_left(10)
        .margin_right(24)
        .margin_top(4)
        .x_label_area_size(34)
        .y_label_area_size(64);
    builder
}

/// Dashed vertical lines where a step began and where the drain began, labelled on the panel that asks.
fn mark<Y>(
    chart: &mut ChartContext<
        '_,
        SVGBackend<'_>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, Y>,
    >,
    marks: &[(f64, u32)],
    drain_started_s: Option<f64>,
    (low, high): (f64, f64),
    labelled: bool,
) -> anyhow::Result<()>
where
    Y: Ranged<ValueType = f64>,
{
    let grey = RGBColor(90, 90, 90);
    // A step: thin, short dashes, labelled with its patients; the drain: thick, long dashes.
    let steps = marks
        .iter()
        .map(|&(t, patients)| (t, format!("→ {patients}"), (4, 4), grey, 1));
    let drain = drain_started_s.map(|t| (t, "drain".to_owned(), (8, 3), BLACK, 2));
    for (t, label, (dash, gap), color, width) in steps.chain(drain) {
        chart.draw_series(DashedLineSeries::new(
            [(t, low), (t, high)],
            dash,
            gap,
            color.stroke_width(width),
        ))?;
        if labelled {
            chart.draw_series(std::iter::once(Text::new(
                label,
                (t, high),
                (FONT, 12).into_font().color(&color),
            )))?;
        }
    }
    Ok(())
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn run() -> RunInfo {
        RunInfo {
            run_id: "abc".into(),
            topics: "tabs.orders, tabs.deliveries, tabs.dlq; group medicine-makers".into(),
            broker: "embedded <mock> & co".into(),
            guarantee: "at-least-once".into(),
            schedule: vec![1, 10, 500],
            step_s: 30.0,
            tab_making_time_s: 2.0,
            lag_threshold: 256,
            max_makers: 12,
            polling_interval_s: 5.0,
        }
    }

    /// 1 → 10 → 500 patients, 30 s each, then a 20 s drain; one 32 s latency spike at 75 s.
    pub(crate) fn samples() -> Vec<Sample> {
        (0..110)
            .map(|t| Sample {
                t_s: f64::from(t),
                patients: match t {
                    0..30 => 1,
                    30..60 => 10,
                    60..90 => 500,
                    _ => 0,
                },
                lag: u64::from(t as u32 % 40 * 7),
                makers: (t / 20) as u32,
                latency_p50_ms: Some(2010.0),
                latency_p99_ms: Some(if t == 75 {
                    32_000.0
                } else {
                    2050.0 + f64::from(t)
                }),
                ..Sample::default()
            })
            .collect()
    }

    /// The chart rendered to pixels (shapes only; resvg is built without text).
    fn pixels(svg: &str) -> resvg::tiny_skia::Pixmap {
        let tree = resvg::usvg::Tree::from_str(svg, &resvg::usvg::Options::default())
            .expect("the chart is SVG that resvg reads");
        let size = tree.size().to_int_size();
        let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height()).unwrap();
        resvg::render(
            &tree,
            resvg::tiny_skia::Transform::identity(),
            &mut pixmap.as_mut(),
        );
        pixmap
    }

    /// Pixels of about `color`: (x, y).
    fn of_color(pixmap: &resvg::tiny_skia::Pixmap, (r, g, b): (u8, u8, u8)) -> Vec<(u32, u32)> {
        let near = |a: u8, b: u8| a.abs_diff(b) < 40;
        pixmap
            .pixels()
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                p.alpha() > 200 && near(p.red(), r) && near(p.green(), g) && near(p.blue(), b)
            })
            .map(|(i, _)| {
                let i = u32::try_from(i).unwrap();
                (i % pixmap.width(), i / pixmap.width())
            })
            .collect()
    }

    fn median_y(points: &[(u32, u32)], from_x: u32, to_x: u32) -> u32 {
        let mut ys: Vec<u32> = points
            .iter()
            .filter(|(x, _)| (from_x..to_x).contains(x))
            .map(|(_, y)| *y)
            .collect();
        ys.sort_unstable();
        assert!(!ys.is_empty(), "no pixel between x {from_x} and {to_x}");
        ys[ys.len() / 2]
    }

    #[test]
    fn the_chart_renders_every_series_with_one_and_ten_patients_apart() {
        let svg = chart(&samples(), &run(), Some(90.0)).unwrap();
        let pixmap = pixels(&svg);
        let white = of_color(&pixmap, (255, 255, 255)).len();
        let total = (pixmap.width() * pixmap.height()) as usize;
        assert!(white < total, "the chart is not blank");
        for (name, color) in [
            ("patients", (0, 0, 255)),
            ("lag", (255, 127, 14)),
            ("makers", (44, 160, 44)),
            ("latency p99", (214, 39, 40)),
        ] {
            assert!(
                of_color(&pixmap, color).len() > 100,
                "the {name} line is drawn"
            );
        }
        // On the patients panel (log scale), 1 patient and 10 patients are far apart, not both on the floor.
        let blue = of_color(&pixmap, (0, 0, 255));
        let (left, right) = (
            blue.iter().map(|p| p.0).min().unwrap(),
            blue.iter().map(|p| p.0).max().unwrap(),
        );
        let span = right - left;
        let one = median_y(&blue, left, left + span / 4);
        let ten = median_y(&blue, left + span * 2 / 5, left + span * 3 / 5);
        assert!(one > ten + 20, "1 patient at y {one}, 10 at y {ten}");
    }

    #[test]
    fn the_chart_has_ticks_on_both_axes_and_marks_steps_and_drain() {
        let svg = chart(&samples(), &run(), Some(90.0)).unwrap();
        let document = roxmltree::Document::parse(&svg).expect("well-formed XML");
        let texts: Vec<&str> = document
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .collect();
        for needle in [
            "seconds", "patients", "makers", "ms", "drain", "→ 10", "→ 500", "100", "60",
        ] {
            assert!(
                texts.iter().any(|t| t.trim() == needle),
                "{needle:?} among {texts:?}"
            );
        }
        // The spike is capped and noted, not squashing the rest.
        let caption = texts
            .iter()
            .find(|t| t.trim().starts_with("tab latency"))
            .unwrap();
        assert!(
            caption.contains("1 s above") && caption.contains("max 32000 ms at 75 s"),
            "{caption}"
        );
        assert!(latency_cap(&samples(), 2000.0) < 10_000.0);
    }

    #[test]
    fn an_empty_run_still_makes_a_chart() {
        let svg = chart(&[], &run(), None).unwrap();
        roxmltree::Document::parse(&svg).expect("well-formed XML");
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
