//! What the user watches: a panel redrawn every second on a terminal, or one plain line per second otherwise.

use std::fmt::Write as _;

use crate::report::Sample;

/// The context a sample is shown in.
pub struct Frame<'a> {
    pub broker: &'a str,
    pub guarantee: &'a str,
    pub step: Option<(usize, usize, u64)>,
    pub phase: &'a str,
    pub makers_started: u32,
    pub lag_threshold: u64,
    pub metric: u64,
    pub total_dead_letters: u64,
}

/// The live panel, preceded by the escape codes that clear the terminal.
pub fn panel(sample: &Sample, frame: &Frame<'_>) -> String {
    let mut text = String::from("\x1b[2J\x1b[H");
    let _ = writeln!(
        text,
        "medicine-pubsub local · {} · {}",
        frame.broker, frame.guarantee
    );
    let step = match frame.step {
        Some((index, count, next_in)) => format!("step {index}/{count}, next in {next_in} s"),
        None => "steady".to_owned(),
    };
    let _ = writeln!(
        text,
        "t = {:.0} s · {step} · {} · Ctrl-C stops cleanly\n",
        sample.t_s, frame.phase
    );
    let row = |text: &mut String, label: &str, value: String| {
        let _ = writeln!(text, "  {label:<12}{value}");
    };
    row(&mut text, "patients", sample.patients.to_string());
    row(&mut text, "orders/s", sample.orders_per_s.to_string());
    row(
        &mut text,
        "lag",
        format!(
            "{} orders (KEDA metric {}, 1 maker per {})",
            sample.lag, frame.metric, frame.lag_threshold
        ),
    );
    row(
        &mut text,
        "makers",
        format!(
            "{} running, {} started",
            sample.makers, frame.makers_started
        ),
    );
    row(&mut text, "tabs/s", sample.tabs_per_s.to_string());
    row(
        &mut text,
        "latency",
        format!(
            "p50 {:.0} ms, p99 {:.0} ms",
            sample.latency_p50_ms, sample.latency_p99_ms
        ),
    );
    row(
        &mut text,
        "overhead",
        format!(
            "p50 {:.0} ms, p99 {:.0} ms",
            sample.overhead_p50_ms, sample.overhead_p99_ms
        ),
    );
    row(&mut text, "DLQ", frame.total_dead_letters.to_string());
    text
}

/// One line per second, for logs and pipes.
pub fn line(sample: &Sample, frame: &Frame<'_>) -> String {
    format!(
        "t={:.0}s phase={} patients={} orders/s={} lag={} makers={} tabs/s={} latency_p50={:.0}ms latency_p99={:.0}ms \
         overhead_p50={:.0}ms overhead_p99={:.0}ms dlq={}",
        sample.t_s,
        frame.phase,
        sample.patients,
        sample.orders_per_s,
        sample.lag,
        sample.makers,
        sample.tabs_per_s,
        sample.latency_p50_ms,
        sample.latency_p99_ms,
        sample.overhead_p50_ms,
        sample.overhead_p99_ms,
        frame.total_dead_letters
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Frame<'static> {
        Frame {
            broker: "embedded",
            guarantee: "at-least-once",
            step: Some((2, 3, 12)),
            phase: "running",
            makers_started: 4,
            lag_threshold: 256,
            metric: 300,
            total_dead_letters: 1,
        }
    }

    #[test]
    fn the_panel_and_the_line_show_every_figure() {
        let sample = Sample {
            t_s: 42.0,
            patients: 10,
            orders_per_s: 10,
            lag: 300,
            makers: 2,
            tabs_per_s: 150,
            latency_p50_ms: 2010.0,
            latency_p99_ms: 2090.0,
            overhead_p50_ms: 10.0,
            overhead_p99_ms: 90.0,
            dead_letters: 0,
        };
        let panel = panel(&sample, &frame());
        for needle in [
            "at-least-once",
            "step 2/3",
            "300 orders",
            "2 running, 4 started",
            "p99 2090 ms",
            "p99 90 ms",
        ] {
            assert!(panel.contains(needle), "{needle} in {panel}");
        }
        let line = line(&sample, &frame());
        assert!(
            line.contains("patients=10") && line.contains("makers=2") && line.contains("dlq=1"),
            "{line}"
        );
    }
}
