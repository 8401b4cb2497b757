//! Command-line and environment configuration shared by every binary: parsing, durations, topic names, exit codes.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};

/// Exit code for configuration errors (as `sysexits`' EX_USAGE family and clap use): fix the flags and rerun.
pub const EXIT_USAGE: i32 = 2;

/// Default orders topic.
pub const ORDERS_TOPIC: &str = "tabs.orders";
/// Default deliveries topic.
pub const DELIVERIES_TOPIC: &str = "tabs.deliveries";
/// Default dead-letter topic.
pub const DLQ_TOPIC: &str = "tabs.dlq";
/// Consumer group of the makers.
pub const MAKERS_GROUP: &str = "tabs_makers";
/// Default largest `tabs_count` of an order (`ORBITAL_MAX_TABS_COUNT`, DESIGN.md).
pub const MAX_TABS_COUNT: u32 = 30;

/// Parses the command line and environment into `P`.
///
/// `--help` and `--version` print and exit 0. Any error prints one line naming what to fix and exits with
/// [`EXIT_USAGE`], before any network call is made.
pub fn parse_or_exit<P: Parser>() -> P {
    parse_from_or_exit(std::env::args_os())
}

/// Like [`parse_or_exit`], from the given arguments (the first is the program name).
pub fn parse_from_or_exit<P, I, T>(args: I) -> P
where
    P: Parser,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    match P::try_parse_from(args) {
        Ok(parsed) => parsed,
        Err(err) => match err.kind() {
            clap::error::ErrorKind::DisplayHelp
            | clap::error::ErrorKind::DisplayVersion
            | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => err.exit(),
            _ => usage_exit(first_line(&err.render().to_string())),
        },
    }
}

/// Prints `error: <message>` on one line and exits with [`EXIT_USAGE`].
pub fn usage_exit(message: impl fmt::Display) -> ! {
    let message = message.to_string();
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    eprintln!("error: {message}");
    std::process::exit(EXIT_USAGE)
}

fn first_line(text: &str) -> String {
    text.lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("invalid arguments")
        .trim()
        .to_owned()
}

/// Parses a duration: a number with an optional unit `ms`, `s`, `m` or `h`; a bare number means seconds and may be
/// fractional (`0.5`, `2s`, `1500ms`, `1m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; write e.g. 2s, 500ms, 1.5 or 1m"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`; use ms, s, m or h"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("`{text}` is out of range"))
}

/// Like [`parse_duration`] but refuses zero.
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err(format!("`{text}` must be greater than zero")),
        duration => Ok(duration),
    }
}

/// Formats a duration the way [`parse_duration`] reads it back.
pub fn format_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 && duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable text when stderr is a terminal, JSON lines otherwise (containers).
    Auto,
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging and observability arguments every binary flattens.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Log format: `auto` (text on a terminal, JSON otherwise), `text` or `json`. Filter with RUST_LOG.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    /// Serve Prometheus metrics on /metrics and probes on /healthz and /readyz at this address (e.g. 0.0.0.0:9000).
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

/// Topic names; the defaults are the contract's, tests and benchmarks use their own.
#[derive(Debug, Clone, Args)]
pub struct TopicArgs {
    /// Topic of tab orders.
    #[arg(long, env = "ORDERS_TOPIC", default_value = ORDERS_TOPIC)]
    pub orders_topic: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_bare_seconds_and_units() {
        assert_eq!(parse_duration("1"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_reject_garbage_with_a_hint() {
        assert!(parse_duration("soon").unwrap_err().contains("e.g. 2s"));
        assert!(parse_duration("3 days")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_duration("-1").is_err());
        assert!(parse_positive_duration("0s")
            .unwrap_err()
            .contains("greater than zero"));
    }

    #[test]
    fn formatted_durations_parse_back() {
        for d in [Duration::from_secs(10), Duration::from_millis(1500)] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }

    #[test]
    fn first_line_skips_blank_lines() {
        assert_eq!(first_line("\n error: bad\n\nmore"), "error: bad");
    }
}
