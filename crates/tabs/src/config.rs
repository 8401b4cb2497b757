//! Command-line and environment configuration shared by every binary: parsing, durations, the flags several
//! binaries take (topics, the largest tab count, the guarantee, the making time, telemetry), exit codes.
//!
//! Environment variables: the original's names are kept exactly (`MEDECINEPUBSUB_KAFKA_SERVERS`, `ORBITAL_*`);
//! every other one is `MEDECINEPUBSUB_` and the flag's name (`--max-in-flight-orders` is
//! `MEDECINEPUBSUB_MAX_IN_FLIGHT_ORDERS`).

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
/// The largest `--max-tabs-count` accepted: an order's tabs are made at once, each a task.
pub const MAX_TABS_COUNT_LIMIT: u32 = 100_000;

/// Parses the command line and environment into `P`.
///
/// `--help` and `--version` print and exit 0. Any error prints one line naming what to fix (with clap's own
/// hints: the possible values, "a similar argument exists") and exits with [`EXIT_USAGE`], before any network
/// call is made.
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
            _ => usage_exit(one_line(&err.render().to_string())),
        },
    }
}

/// Parses `args` (program name first) and checks them with `check` (what clap cannot: flags that only make sense
/// together, topics that would loop, …): a bad flag exits 2 with one line saying what to fix (see
/// [`parse_from_or_exit`]). How every program of the project starts.
pub fn parse_checked_or_exit<P, I, T>(args: I, check: fn(&P) -> Result<(), String>) -> P
where
    P: Parser,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let parsed: P = parse_from_or_exit(args);
    if let Err(message) = check(&parsed) {
        usage_exit(message);
    }
    parsed
}

/// Prints `error: <message>` on one line and exits with [`EXIT_USAGE`].
pub fn usage_exit(message: impl fmt::Display) -> ! {
    let message = message.to_string();
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    eprintln!("error: {message}");
    std::process::exit(EXIT_USAGE)
}

/// clap's error on one line: the error and its hints (possible values, tips), without the usage and the pointer
/// to `--help`.
fn one_line(text: &str) -> String {
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && !line.starts_with("Usage:")
                && !line.starts_with("For more information")
        })
        .collect();
    if parts.is_empty() {
        "invalid arguments".into()
    } else {
        parts.join(" ")
    }
}

/// Parses a duration: a bare number is seconds and may be fractional (`0.5`, as the original's
/// `ORBITAL_ORDER_PERIOD_SECONDS`); anything else is humantime's (`2s`, `1500ms`, `1m 30s`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("`{text}` is not a duration (negative or out of range)"));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration ({e}); write e.g. 2s, 500ms, 1.5 or 1m"))
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
    humantime::format_duration(duration).to_string()
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
#[command(next_help_heading = "Telemetry")]
pub struct TelemetryArgs {
    /// Log format: `auto` (text on a terminal, JSON otherwise), `text` or `json`. Filter with RUST_LOG.
    #[arg(long, env = "MEDECINEPUBSUB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    /// Serve Prometheus metrics on /metrics and probes on /healthz and /readyz at this address (e.g. 0.0.0.0:9000).
    #[arg(long, env = "MEDECINEPUBSUB_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

impl TelemetryArgs {
    /// JSON logs, no metrics: what tests and tools that drive a binary in-process use.
    pub fn quiet() -> Self {
        Self {
            log_format: LogFormat::Json,
            metrics_addr: None,
        }
    }
}

/// The orders topic, for binaries that only write orders.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Topics")]
pub struct OrdersTopic {
    /// Topic of tab orders.
    #[arg(long, env = "MEDECINEPUBSUB_ORDERS_TOPIC", default_value = ORDERS_TOPIC)]
    pub orders_topic: String,
}

/// The contract's three topics; the defaults are the contract's, tests and benchmarks use their own.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Topics")]
pub struct TopicArgs {
    #[command(flatten)]
    pub orders: OrdersTopic,

    /// Topic the tabs are published to.
    #[arg(long, env = "MEDECINEPUBSUB_DELIVERIES_TOPIC", default_value = DELIVERIES_TOPIC)]
    pub deliveries_topic: String,

    /// Topic rejected records are published to, with their reason.
    #[arg(long, env = "MEDECINEPUBSUB_DLQ_TOPIC", default_value = DLQ_TOPIC)]
    pub dlq_topic: String,
}

impl TopicArgs {
    /// The given topics.
    pub fn new(orders: &str, deliveries: &str, dlq: &str) -> Self {
        Self {
            orders: OrdersTopic {
                orders_topic: orders.to_owned(),
            },
            deliveries_topic: deliveries.to_owned(),
            dlq_topic: dlq.to_owned(),
        }
    }

    /// The orders topic.
    pub fn orders(&self) -> &str {
        &self.orders.orders_topic
    }

    /// Checks the names: none empty, and neither output topic is the orders topic (the makers would eat their
    /// own output).
    pub fn validate(&self) -> Result<(), String> {
        for (flag, topic) in [
            ("--orders-topic", self.orders()),
            ("--deliveries-topic", &self.deliveries_topic),
            ("--dlq-topic", &self.dlq_topic),
        ] {
            if topic.trim().is_empty() {
                return Err(format!("{flag} is empty"));
            }
        }
        if self.deliveries_topic == self.orders() || self.dlq_topic == self.orders() {
            return Err(
                "--deliveries-topic and --dlq-topic must differ from --orders-topic".into(),
            );
        }
        Ok(())
    }
}

/// The largest `tabs_count` of an order: patients order 1 ..= this, makers reject larger orders to the DLQ, the
/// auditor leaves those out.
#[derive(Debug, Clone, Copy, Args)]
pub struct TabsCountArgs {
    /// Largest `tabs_count` of an order (patients order 1 ..= this; makers send larger ones to the DLQ).
    #[arg(long, env = "ORBITAL_MAX_TABS_COUNT", default_value_t = MAX_TABS_COUNT,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_TABS_COUNT_LIMIT)))]
    pub max_tabs_count: u32,
}

impl Default for TabsCountArgs {
    fn default() -> Self {
        Self {
            max_tabs_count: MAX_TABS_COUNT,
        }
    }
}

/// How tabs and offsets reach Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Guarantee {
    /// Tabs and offsets in one transaction: nothing lost, nothing duplicated for read_committed readers.
    ExactlyOnce,
    /// Tabs published as soon as made, offsets committed after their acknowledgements: nothing lost; a crash
    /// can publish an order's tabs twice.
    AtLeastOnce,
}

impl Guarantee {
    /// As written on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExactlyOnce => "exactly-once",
            Self::AtLeastOnce => "at-least-once",
        }
    }
}

/// The time one tab takes to make (all tabs of an order are made at once): the makers wait it, the auditor
/// subtracts it from latencies to give the overhead.
#[derive(Debug, Clone, Copy, Args)]
pub struct MakingTimeArgs {
    /// Time to make one tab (all tabs of an order are made at once); 0 for benchmarks.
    #[arg(long, env = "MEDECINEPUBSUB_TAB_MAKING_TIME", default_value = "2s", value_parser = parse_duration)]
    pub tab_making_time: Duration,
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
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_reject_garbage_with_a_hint() {
        assert!(parse_duration("soon").unwrap_err().contains("e.g. 2s"));
        assert!(parse_duration("3 fortnights")
            .unwrap_err()
            .contains("is not a duration"));
        assert!(parse_duration("-1").is_err());
        assert!(parse_positive_duration("0s")
            .unwrap_err()
            .contains("greater than zero"));
    }

    #[test]
    fn formatted_durations_parse_back() {
        for d in [
            Duration::from_secs(10),
            Duration::from_millis(1500),
            Duration::from_secs(3600),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        topics: TopicArgs,
        #[arg(long, value_enum, default_value_t = Guarantee::ExactlyOnce)]
        guarantee: Guarantee,
    }

    fn error(args: &[&str]) -> String {
        let err =
            Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied())).unwrap_err();
        one_line(&err.render().to_string())
    }

    #[test]
    fn a_typo_keeps_clap_s_suggestion_on_the_one_line() {
        let line = error(&["--orders-topik", "x"]);
        assert!(
            line.contains("unexpected argument '--orders-topik'"),
            "{line}"
        );
        assert!(
            line.contains("--orders-topic"),
            "the suggestion stays: {line}"
        );
        assert!(!line.contains("Usage:") && !line.contains('\n'), "{line}");
    }

    #[test]
    fn a_bad_value_keeps_the_possible_values_on_the_one_line() {
        let line = error(&["--guarantee", "sometimes"]);
        assert!(line.contains("invalid value 'sometimes'"), "{line}");
        assert!(
            line.contains("exactly-once") && line.contains("at-least-once"),
            "{line}"
        );
    }

    #[test]
    fn topics_must_not_loop() {
        assert!(TopicArgs::new("a", "a", "c")
            .validate()
            .unwrap_err()
            .contains("--deliveries-topic"));
        assert!(TopicArgs::new("a", "b", "")
            .validate()
            .unwrap_err()
            .contains("--dlq-topic is empty"));
        assert_eq!(TopicArgs::new("a", "b", "c").validate(), Ok(()));
    }
}
