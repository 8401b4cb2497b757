//! What the user watches: on a terminal, a panel (ratatui) on the alternate screen, redrawn every second and
//! restored on exit and on panic; otherwise one plain line per second.
//!
//! Rates are per second of real time since the previous sample; a figure with nothing behind it yet is shown
//! as such ("no tabs delivered yet", `-`), never as a zero.

use std::io::{self, IsTerminal as _, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use ratatui::backend::{Backend, CrosstermBackend};
use ratatui::crossterm::cursor::{Hide, Show};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize as _};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Sparkline, Wrap};
use ratatui::Terminal;

use crate::cli::ViewMode;
use crate::record::Sample;

/// Where the run is in its patient schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// 1-based.
    pub index: usize,
    pub count: usize,
    pub patients: u32,
    /// Seconds to the next step; `None` on the last one.
    pub next_in_s: Option<u64>,
}

/// What a sample is shown with.
pub struct Frame<'a> {
    pub broker: &'a str,
    pub guarantee: &'a str,
    /// `None`: one patient count for the whole run.
    pub step: Option<Step>,
    pub phase: &'a str,
    pub makers_started: u32,
    pub lag_threshold: u64,
    pub polling_interval_s: f64,
    pub total_dead_letters: u64,
    /// Tabs delivered since the run started.
    pub delivered_tabs: u64,
    /// Every sample so far, the one to show last.
    pub history: &'a [Sample],
    /// Each running child's Prometheus endpoint: (name, address).
    pub metrics: &'a [(String, String)],
    /// The local mode's last log lines.
    pub events: &'a [String],
}

impl Frame<'_> {
    fn sample(&self) -> Sample {
        self.history.last().copied().unwrap_or_default()
    }
}

/// The words the view uses, explained in one place.
pub const GLOSSARY: &str = "lag: orders waiting or being made (uncommitted) · KEDA metric: the lag capped at one \
     threshold per partition, as the scaler read it at its last poll · latency: delivery - order time of the tabs \
     of the last second · overhead: latency - making time · steady: one patient count until Ctrl-C";

/// Milliseconds, or `-` when there is no figure.
fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.0} ms"))
}

fn schedule(frame: &Frame<'_>) -> String {
    match frame.step {
        None => "steady".to_owned(),
        Some(Step {
            index,
            count,
            patients,
            next_in_s: Some(next),
        }) => format!("step {index}/{count} ({patients} patients), next in {next} s"),
        Some(Step {
            index,
            count,
            patients,
            next_in_s: None,
        }) => format!("step {index}/{count} ({patients} patients), the last"),
    }
}

fn keda_metric(sample: &Sample, frame: &Frame<'_>) -> String {
    match (sample.keda_metric, sample.keda_metric_age_s) {
        (Some(metric), Some(age)) => format!(
            "KEDA metric {metric}, read {age:.0} s ago (polled every {:.0} s; 1 maker per {})",
            frame.polling_interval_s, frame.lag_threshold
        ),
        _ => format!(
            "KEDA metric not read yet (polled every {:.0} s; 1 maker per {})",
            frame.polling_interval_s, frame.lag_threshold
        ),
    }
}

fn latencies(sample: &Sample, frame: &Frame<'_>) -> (String, String) {
    if frame.delivered_tabs == 0 {
        let none = "no tabs delivered yet".to_owned();
        return (none.clone(), none);
    }
    if sample.latency_p50_ms.is_none() {
        let none = "no tabs in the last second".to_owned();
        return (none.clone(), none);
    }
    (
        format!(
            "p50 {}  p99 {}",
            ms(sample.latency_p50_ms),
            ms(sample.latency_p99_ms)
        ),
        format!(
            "p50 {}  p99 {}",
            ms(sample.overhead_p50_ms),
            ms(sample.overhead_p99_ms)
        ),
    )
}

fn bold() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

/// The panel, drawn into `area` of a ratatui frame. Meant for 100 columns and 24 rows; wider shows more
/// history in the sparklines.
pub fn draw(out: &mut ratatui::Frame<'_>, area: Rect, frame: &Frame<'_>) {
    let sample = frame.sample();
    let [header, figures, sparks, metrics, events, glossary] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Length(6),
        Constraint::Length(4),
        Constraint::Length(2),
        Constraint::Length(4),
        Constraint::Min(3),
    ])
    .areas(area);
    draw_header(out, header, frame, &sample);
    draw_figures(out, figures, frame, &sample);
    draw_sparklines(out, sparks, frame);
    draw_endpoints(out, metrics, frame);
    let mut event_lines = vec![Line::from(Span::styled("last log lines", bold()))];
    event_lines.extend(frame.events.iter().map(|e| Line::from(e.clone())));
    out.render_widget(Paragraph::new(event_lines), events);
    out.render_widget(
        Paragraph::new(GLOSSARY)
            .wrap(Wrap { trim: true })
            .style(Style::new().dim()),
        glossary,
    );
}

fn draw_header(out: &mut ratatui::Frame<'_>, area: Rect, frame: &Frame<'_>, sample: &Sample) {
    out.render_widget(
        Paragraph::new(vec![
            Line::from(vec![
                Span::styled("medicine-pubsub local", bold()),
                Span::raw(format!(" · {} · {}", frame.broker, frame.guarantee)),
            ]),
            Line::from(format!(
                "t = {:.0} s · {} · {} · Ctrl-C stops cleanly",
                sample.t_s,
                frame.phase,
                schedule(frame)
            )),
        ])
        .wrap(Wrap { trim: true }),
        area,
    );
}

/// The figures of the last second: patients and throughput, lag, makers, latency and overhead.
fn draw_figures(out: &mut ratatui::Frame<'_>, area: Rect, frame: &Frame<'_>, sample: &Sample) {
    let (latency, overhead) = latencies(sample, frame);
    let row = |label: &str, value: String| {
        Line::from(vec![
            Span::styled(format!("{label:<10}"), bold()),
            Span::raw(value),
        ])
    };
    out.render_widget(
        Paragraph::new(vec![
            row(
                "patients",
                format!(
                    "{:<8}orders/s {:<9.1}tabs/s {:<10.1}DLQ {}",
                    sample.patients,
                    sample.orders_per_s,
                    sample.tabs_per_s,
                    frame.total_dead_letters
                ),
            ),
            row(
                "lag",
                format!("{} orders · {}", sample.lag, keda_metric(sample, frame)),
            ),
            row(
                "makers",
                format!(
                    "{} running, {} started",
                    sample.makers, frame.makers_started
                ),
            ),
            row("latency", latency),
            row("overhead", overhead),
        ]),
        area,
    );
}

/// Lag, makers and overhead over the seconds the width holds.
fn draw_sparklines(out: &mut ratatui::Frame<'_>, area: Rect, frame: &Frame<'_>) {
    let spark_rows = Layout::vertical([Constraint::Length(1); 3]).split(area);
    type Series = fn(&Sample) -> u64;
    let series: [(&str, Series, Color); 3] = [
        ("lag", |s| s.lag, Color::Yellow),
        ("makers", |s| u64::from(s.makers), Color::Green),
        (
            "overhead p99",
            |s| s.overhead_p99_ms.map_or(0, |v| v as u64),
            Color::Red,
        ),
    ];
    for ((name, value, color), row_area) in series.into_iter().zip(spark_rows.iter()) {
        let [label, spark] =
            Layout::horizontal([Constraint::Length(24), Constraint::Min(10)]).areas(*row_area);
        let width = usize::from(spark.width);
        let recent = &frame.history[frame.history.len().saturating_sub(width)..];
        let data: Vec<u64> = recent.iter().map(value).collect();
        let max = data.iter().copied().max().unwrap_or(0);
        out.render_widget(
            Paragraph::new(format!("{name} (max {max})")).style(bold()),
            label,
        );
        out.render_widget(
            Sparkline::default()
                .data(&data)
                .max(max.max(1))
                .style(Style::new().fg(color)),
            spark,
        );
    }
}

/// Where the children serve their metrics.
fn draw_endpoints(out: &mut ratatui::Frame<'_>, area: Rect, frame: &Frame<'_>) {
    let endpoints = if frame.metrics.is_empty() {
        "no child running".to_owned()
    } else {
        frame
            .metrics
            .iter()
            .map(|(name, addr)| format!("{name} {addr}"))
            .collect::<Vec<_>>()
            .join(" · ")
    };
    out.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled("metrics   ", bold()),
            Span::raw(endpoints),
        ]))
        .wrap(Wrap { trim: true }),
        area,
    );
}

/// One line per second, for logs and pipes.
pub fn line(frame: &Frame<'_>) -> String {
    let sample = frame.sample();
    let metric = match (sample.keda_metric, sample.keda_metric_age_s) {
        (Some(metric), Some(age)) => format!("{metric}@{age:.0}s"),
        _ => "-".to_owned(),
    };
    let bare = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}ms"));
    format!(
        "t={:.0}s phase={} patients={} orders/s={:.1} lag={} keda_metric={metric} makers={} tabs/s={:.1} \
         latency_p50={} latency_p99={} overhead_p50={} overhead_p99={} dlq={}",
        sample.t_s,
        frame.phase,
        sample.patients,
        sample.orders_per_s,
        sample.lag,
        sample.makers,
        sample.tabs_per_s,
        bare(sample.latency_p50_ms),
        bare(sample.latency_p99_ms),
        bare(sample.overhead_p50_ms),
        bare(sample.overhead_p99_ms),
        frame.total_dead_letters
    )
}

/// Whether the panel is drawn (else one line per second).
pub fn live_view(mode: ViewMode) -> bool {
    match mode {
        ViewMode::Auto => io::stdout().is_terminal(),
        ViewMode::Live => true,
        ViewMode::Plain => false,
    }
}

/// Whether the alternate screen is up (for the panic hook).
static ON_SCREEN: AtomicBool = AtomicBool::new(false);

fn restore_terminal() {
    if ON_SCREEN.swap(false, Ordering::SeqCst) {
        let _ = execute!(io::stdout(), LeaveAlternateScreen, Show);
    }
}

/// The live panel on the alternate screen; the terminal is restored when it is dropped, and before a panic's
/// message is printed.
pub struct Live {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Live {
    pub fn start() -> io::Result<Self> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore_terminal();
                previous(info);
            }));
        });
        execute!(io::stdout(), EnterAlternateScreen, Hide)?;
        ON_SCREEN.store(true, Ordering::SeqCst);
        let terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
        Ok(Self { terminal })
    }

    /// Redraws the panel. A terminal that is gone is no reason to stop the run.
    pub fn draw(&mut self, frame: &Frame<'_>) {
        let _ = self.terminal.draw(|out| draw(out, out.area(), frame));
    }

    /// The size it draws at.
    pub fn size(&self) -> Option<ratatui::layout::Size> {
        self.terminal.backend().size().ok()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        restore_terminal();
    }
}

#[cfg(test)]
mod tests {
    use ratatui::backend::TestBackend;

    use super::*;

    fn sample(t: u32) -> Sample {
        Sample {
            t_s: f64::from(t),
            patients: 10,
            orders_per_s: 10.0,
            lag: 300,
            keda_metric: Some(256),
            keda_metric_age_s: Some(3.0),
            makers: 2,
            tabs_per_s: 150.0,
            latency_p50_ms: Some(2010.0),
            latency_p99_ms: Some(2090.0),
            overhead_p50_ms: Some(10.0),
            overhead_p99_ms: Some(90.0),
            dead_letters: 0,
        }
    }

    fn frame<'a>(history: &'a [Sample], metrics: &'a [(String, String)]) -> Frame<'a> {
        Frame {
            broker: "Apache Kafka 4.3.1, started for the run",
            guarantee: "exactly-once",
            step: Some(Step {
                index: 2,
                count: 3,
                patients: 10,
                next_in_s: Some(12),
            }),
            phase: "running",
            makers_started: 4,
            lag_threshold: 256,
            polling_interval_s: 5.0,
            total_dead_letters: 1,
            delivered_tabs: 4000,
            history,
            metrics,
            events: &[],
        }
    }

    /// The panel as the lines of a terminal of `width` × `height`.
    fn render(frame: &Frame<'_>, width: u16, height: u16) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|out| draw(out, out.area(), frame)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        (0..height)
            .map(|y| (0..width).map(|x| buffer[(x, y)].symbol()).collect())
            .collect()
    }

    #[test]
    fn the_panel_fits_100_columns_with_every_figure_and_the_glossary() {
        let history: Vec<Sample> = (0..120).map(sample).collect();
        let metrics = [
            ("patients-2".to_owned(), "127.0.0.1:41001".to_owned()),
            ("maker-4".to_owned(), "127.0.0.1:41002".to_owned()),
        ];
        let screen = render(&frame(&history, &metrics), 100, 24).join("\n");
        for needle in [
            "exactly-once",
            "step 2/3 (10 patients), next in 12 s",
            "300 orders",
            "KEDA metric 256, read 3 s ago (polled every 5 s; 1 maker per 256)",
            "2 running, 4 started",
            "p99 2090 ms",
            "p99 90 ms",
            "orders/s 10.0",
            "maker-4 127.0.0.1:41002",
            "lag (max 300)",
            // The glossary's last words: nothing of it cut off.
            "one patient count until Ctrl-C",
        ] {
            assert!(screen.contains(needle), "{needle:?} in\n{screen}");
        }
        assert!(screen.contains('█'), "the sparklines are drawn:\n{screen}");
    }

    #[test]
    fn nothing_delivered_yet_is_not_shown_as_zero() {
        let first = Sample {
            latency_p50_ms: None,
            latency_p99_ms: None,
            overhead_p50_ms: None,
            overhead_p99_ms: None,
            keda_metric: None,
            keda_metric_age_s: None,
            ..sample(1)
        };
        let history = [first];
        let mut frame = frame(&history, &[]);
        frame.delivered_tabs = 0;
        frame.step = None;
        let screen = render(&frame, 100, 24).join("\n");
        assert!(screen.contains("no tabs delivered yet"), "{screen}");
        assert!(screen.contains("KEDA metric not read yet"), "{screen}");
        assert!(screen.contains("steady"), "{screen}");
        assert!(!screen.contains("p50 0 ms"), "{screen}");
        let line = line(&frame);
        assert!(
            line.contains("latency_p50=- ") && line.contains("keda_metric=- "),
            "{line}"
        );
    }

    #[test]
    fn the_plain_line_shows_every_figure_with_real_rates() {
        let history = [Sample {
            orders_per_s: 9.5,
            ..sample(42)
        }];
        let line = line(&frame(&history, &[]));
        for needle in [
            "t=42s",
            "patients=10",
            "orders/s=9.5",
            "keda_metric=256@3s",
            "makers=2",
            "latency_p99=2090ms",
            "dlq=1",
        ] {
            assert!(line.contains(needle), "{needle} in {line}");
        }
    }
}
