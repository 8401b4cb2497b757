//! The delivery auditor: reads `tabs.orders` and `tabs.deliveries` (read_committed) over a window of time and
//! reports orders, expected and delivered tabs, missing, duplicated and wrong tabs, tabs of unknown orders,
//! latency and overhead percentiles, and the worst patient's p99. Tests, the local mode, the benchmarks and the
//! fault campaign all judge a run with it.
//!
//! It streams both topics once, keeping a fixed-size record per order (a bitmap of its tabs) and one histogram
//! per patient, so it stays fast and small at millions of records.
//!
//! Run: `tabs-audit --bootstrap-servers 127.0.0.1:9092 --from 15m` (exit 1 when anything is missing,
//! duplicated or wrong).

#![forbid(unsafe_code)]

pub mod ledger;
pub mod liveness;
pub mod reader;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Parser;
use rdkafka::message::Message;
use serde::Serialize;
use tabs::config::{parse_duration, MakingTimeArgs, TabsCountArgs, TelemetryArgs, TopicArgs};
use tabs::kafka::KafkaArgs;
use tabs::messages::{parse_order, DeadLetter, Tab};

pub use ledger::{Audit, Percentiles, Report};
pub use reader::{Start, TopicReader};

/// Orders are looked up this much before the window's start by record time, so an order stamped just inside the
/// window but written a moment later is not missed.
const CLOCK_MARGIN_MS: i64 = 60_000;

/// Command line of `tabs-audit`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "tabs-audit",
    version,
    about = "Audits deliveries: every tab of every order exactly once?"
)]
pub struct Config {
    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub topics: TopicArgs,

    /// Orders placed at or after this point: Unix time in milliseconds, or a duration ago (`15m`). Default: all.
    #[arg(long, value_parser = parse_point_in_time)]
    pub from: Option<i64>,

    /// Orders placed before this point: Unix time in milliseconds, or a duration ago (`1m`). Default: now.
    #[arg(long, value_parser = parse_point_in_time)]
    pub to: Option<i64>,

    #[command(flatten)]
    pub tabs_count: TabsCountArgs,

    #[command(flatten)]
    pub making: MakingTimeArgs,

    /// After reaching the end of the deliveries, wait up to this long for missing tabs still being made.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub wait: Duration,

    /// Accept duplicated tabs (judging an at-least-once run): only missing or wrong tabs fail the audit.
    #[arg(long)]
    pub allow_duplicates: bool,

    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl Config {
    /// An audit of every order of `topics` (its tabs, its dead letters) on a plaintext broker, with the
    /// contract's maximum `tabs_count`, no waiting, JSON logs: where the tests, benchmarks and fault campaign that
    /// audit their own runs start (they set the window and the wait with struct update syntax).
    pub fn for_topics(
        bootstrap: impl Into<String>,
        topics: TopicArgs,
        making_time: Duration,
    ) -> Self {
        Self {
            kafka: KafkaArgs::plaintext(bootstrap),
            topics,
            from: None,
            to: None,
            tabs_count: TabsCountArgs::default(),
            making: MakingTimeArgs {
                tab_making_time: making_time,
            },
            wait: Duration::ZERO,
            allow_duplicates: false,
            json: true,
            telemetry: TelemetryArgs::quiet(),
        }
    }
}

/// Parses a point in time: Unix milliseconds, or a duration ago.
pub fn parse_point_in_time(text: &str) -> Result<i64, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let ago = parse_duration(text).map_err(|_| {
        format!("`{text}` is neither Unix time in milliseconds nor a duration ago (e.g. 15m)")
    })?;
    Ok(now_ms() - i64::try_from(ago.as_millis()).unwrap_or(i64::MAX))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// An audit's result: the verdict and what was read.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    #[serde(flatten)]
    pub report: Report,
    /// Records of the orders topic that are not valid orders (the makers send them to the DLQ).
    pub invalid_orders: u64,
    /// Of those, the ones whose dead letter is on the DLQ topic (by source partition and offset).
    pub dead_lettered: u64,
    /// Invalid records with no dead letter yet: each fails the audit. The first few, as (partition, offset).
    pub missing_dead_letters: u64,
    pub missing_dead_letter_offsets: Vec<(i32, i64)>,
    /// Valid orders placed outside the window (`--from`, `--to`): not audited.
    pub orders_outside_window: u64,
    /// Tabs of orders placed outside the window.
    pub tabs_outside_window: u64,
    /// Records read from both topics.
    pub records_read: u64,
    /// Time the audit took.
    pub elapsed_s: f64,
    /// Whether the verdict passes (duplicates tolerated with `--allow-duplicates`).
    pub passed: bool,
}

/// Runs the audit on a blocking thread.
pub async fn run(config: Config) -> anyhow::Result<Outcome> {
    tokio::task::spawn_blocking(move || audit(&config))
        .await
        .context("audit task")?
}

/// The orders a run judges: placed from `--from` (all, if unset) until `--to` (now, if unset).
struct Window {
    from: Option<i64>,
    to_ms: i64,
}

impl Window {
    fn new(config: &Config) -> Self {
        Self {
            from: config.from,
            to_ms: config.to.unwrap_or_else(now_ms),
        }
    }

    /// Whether an order (or its tab) of this timestamp is judged.
    fn holds_order(&self, order_ts_ns: u64) -> bool {
        let ms = i64::try_from(order_ts_ns / 1_000_000).unwrap_or(i64::MAX);
        self.holds_ms(ms)
    }

    /// Whether a record of this record time is judged (an invalid record has no order timestamp).
    fn holds_record(&self, ms: Option<i64>) -> bool {
        ms.is_none_or(|ms| self.holds_ms(ms))
    }

    fn holds_ms(&self, ms: i64) -> bool {
        self.from.is_none_or(|from| ms >= from) && ms < self.to_ms
    }

    /// Where the topics are read from: a little before the window, for producers' clocks.
    fn start(&self) -> Start {
        self.from
            .map_or(Start::Beginning, |from| Start::Time(from - CLOCK_MARGIN_MS))
    }
}

/// What reading the orders topic found besides the orders.
#[derive(Default)]
struct OrdersRead {
    /// Invalid records (by partition and offset) waiting for their dead letter.
    invalid: BTreeSet<(i32, i64)>,
    invalid_orders: u64,
    outside_window: u64,
    records: u64,
}

/// Reads the orders topic to its end, adding every order in the window to `audit`.
fn read_orders(config: &Config, window: &Window, audit: &mut Audit) -> anyhow::Result<OrdersRead> {
    let mut read = OrdersRead::default();
    let mut orders = TopicReader::open(&config.kafka, config.topics.orders(), window.start(), true)
        .with_context(|| {
            format!(
                "reading {} at {}",
                config.topics.orders(),
                config.kafka.bootstrap_servers
            )
        })?;
    while !orders.caught_up() {
        let Some(message) = orders.next(Duration::from_millis(500))? else {
            continue;
        };
        read.records += 1;
        match parse_order(message.payload(), config.tabs_count.max_tabs_count) {
            Ok(order) if window.holds_order(order.order_timestamp_ns) => audit.add_order(&order),
            Ok(_) => read.outside_window += 1,
            Err(_) if window.holds_record(message.timestamp().to_millis()) => {
                read.invalid_orders += 1;
                read.invalid.insert((message.partition(), message.offset()));
            }
            Err(_) => {}
        }
    }
    Ok(read)
}

/// Reads the deliveries topic to its end (and on, up to `--wait`, while tabs are missing), adding every tab of
/// an order in the window to `audit`. Returns the tabs outside the window and the records read.
fn read_deliveries(
    config: &Config,
    window: &Window,
    audit: &mut Audit,
) -> anyhow::Result<(u64, u64)> {
    let mut deliveries = TopicReader::open(
        &config.kafka,
        &config.topics.deliveries_topic,
        window.start(),
        true,
    )
    .with_context(|| {
        format!(
            "reading {} at {}",
            config.topics.deliveries_topic, config.kafka.bootstrap_servers
        )
    })?;
    let (mut outside_window, mut records) = (0, 0);
    let mut caught_up_at: Option<Instant> = None;
    loop {
        if deliveries.caught_up() {
            let since = *caught_up_at.get_or_insert_with(Instant::now);
            if audit.missing_tabs() == 0 || since.elapsed() >= config.wait {
                break;
            }
        }
        let Some(message) = deliveries.next(Duration::from_millis(200))? else {
            continue;
        };
        records += 1;
        match message.payload().map(serde_json::from_slice::<Tab>) {
            Some(Ok(tab)) if window.holds_order(tab.order_timestamp_ns) => {
                audit.add_tab_at(&tab, message.partition(), message.offset())
            }
            Some(Ok(_)) => outside_window += 1,
            _ => audit.add_malformed_tab(),
        }
    }
    Ok((outside_window, records))
}

/// Runs the audit. Blocking.
pub fn audit(config: &Config) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let window = Window::new(config);
    let mut audit = Audit::new(config.making.tab_making_time);
    // Each reader is dropped (its prefetched records and buffers) before the next opens.
    let mut orders = read_orders(config, &window, &mut audit)?;
    let (tabs_outside_window, tab_records) = read_deliveries(config, &window, &mut audit)?;
    let mut records_read = orders.records + tab_records;

    let invalid = &mut orders.invalid;
    let dead_lettered = invalid.len() as u64;
    if !invalid.is_empty() {
        records_read += find_dead_letters(config, window.start(), invalid)?;
    }
    let dead_lettered = dead_lettered - invalid.len() as u64;

    let report = audit.report();
    let passed = invalid.is_empty()
        && if config.allow_duplicates {
            report.is_at_least_once()
        } else {
            report.is_clean()
        };
    Ok(Outcome {
        report,
        invalid_orders: orders.invalid_orders,
        dead_lettered,
        missing_dead_letters: invalid.len() as u64,
        missing_dead_letter_offsets: invalid.iter().take(10).copied().collect(),
        orders_outside_window: orders.outside_window,
        tabs_outside_window,
        records_read,
        elapsed_s: started.elapsed().as_secs_f64(),
        passed,
    })
}

/// Reads the DLQ topic and takes out of `invalid` every record of the orders topic that has its dead letter,
/// waiting up to `--wait` for letters still to come. Returns the records read.
fn find_dead_letters(
    config: &Config,
    start: Start,
    invalid: &mut BTreeSet<(i32, i64)>,
) -> anyhow::Result<u64> {
    let mut dlq = TopicReader::open(&config.kafka, &config.topics.dlq_topic, start, true)
        .with_context(|| {
            format!(
                "reading {} at {}",
                config.topics.dlq_topic, config.kafka.bootstrap_servers
            )
        })?;
    let mut read = 0;
    let mut caught_up_at: Option<Instant> = None;
    loop {
        if dlq.caught_up() {
            let since = *caught_up_at.get_or_insert_with(Instant::now);
            if invalid.is_empty() || since.elapsed() >= config.wait {
                return Ok(read);
            }
        }
        let Some(message) = dlq.next(Duration::from_millis(200))? else {
            continue;
        };
        read += 1;
        if let Some(Ok(letter)) = message.payload().map(serde_json::from_slice::<DeadLetter>) {
            if letter.source_topic == config.topics.orders() {
                invalid.remove(&(letter.source_partition, letter.source_offset));
            }
        }
    }
}

/// The duplicated orders listed in a report, one line each, under the table's `duplicated tabs` row.
fn duplicate_lines(duplicates: &[ledger::Duplicate]) -> String {
    let mut text = String::new();
    for d in duplicates {
        text += &format!(
            "{:<28}order {} {}: its first tab read at partition {} offset {}, tab {} again at partition {} \
             offset {} (delivered at {} ns)\n",
            "",
            d.patient_id,
            d.order_timestamp_ns,
            d.first.partition,
            d.first.offset,
            d.seq_in_order,
            d.again.partition,
            d.again.offset,
            d.again_delivery_timestamp_ns
        );
    }
    text
}

/// The outcome as a table for people.
pub fn render(outcome: &Outcome) -> String {
    let r = &outcome.report;
    let line = |label: &str, value: String| format!("{label:<28}{value}\n");
    let pct = |p: &Percentiles| {
        format!(
            "p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms
        )
    };
    let mut text = String::new();
    text += &line("orders", r.orders.to_string());
    text += &line("expected tabs", r.expected_tabs.to_string());
    text += &line("delivered tabs", r.delivered_tabs.to_string());
    text += &line(
        "missing tabs",
        format!("{} (in {} orders)", r.missing_tabs, r.incomplete_orders),
    );
    text += &line("duplicated tabs", r.duplicated_tabs.to_string());
    text += &duplicate_lines(&r.duplicates);
    text += &line("wrong tab_pow", r.wrong_pow.to_string());
    text += &line("wrong fields", r.wrong_fields.to_string());
    text += &line("tabs of unknown orders", r.unknown_order_tabs.to_string());
    text += &line(
        "invalid orders",
        format!(
            "{} ({} in the DLQ, {} missing there{})",
            outcome.invalid_orders,
            outcome.dead_lettered,
            outcome.missing_dead_letters,
            if outcome.missing_dead_letter_offsets.is_empty() {
                String::new()
            } else {
                format!(": {:?}", outcome.missing_dead_letter_offsets)
            }
        ),
    );
    text += &line(
        "outside the window",
        format!(
            "{} orders, {} tabs (not audited)",
            outcome.orders_outside_window, outcome.tabs_outside_window
        ),
    );
    text += &line("latency", pct(&r.latency));
    text += &line("overhead", pct(&r.overhead));
    text += &line(
        "worst patient p99",
        match &r.worst_patient {
            Some(p) => format!(
                "{:.1} ms ({p}, of {} patients)",
                r.worst_patient_p99_ms, r.patients
            ),
            None => "-".into(),
        },
    );
    text += &line(
        "read",
        format!(
            "{} records in {:.2} s",
            outcome.records_read, outcome.elapsed_s
        ),
    );
    text += &line(
        "verdict",
        if outcome.passed {
            "PASS".into()
        } else {
            "FAIL".into()
        },
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_in_time_are_unix_milliseconds_or_durations_ago() {
        assert_eq!(parse_point_in_time("1795853039904"), Ok(1795853039904));
        let ago = parse_point_in_time("10m").unwrap();
        let expected = now_ms() - 600_000;
        assert!((expected - 1_000..=expected + 1_000).contains(&ago));
        assert!(parse_point_in_time("yesterday")
            .unwrap_err()
            .contains("duration ago"));
    }

    #[test]
    fn a_duplicated_order_is_shown_with_where_both_copies_were_read() {
        let duplicate = ledger::Duplicate {
            patient_id: "p-1".into(),
            order_timestamp_ns: 7,
            seq_in_order: 2,
            first: ledger::TabAt {
                partition: 3,
                offset: 100,
            },
            again: ledger::TabAt {
                partition: 3,
                offset: 160,
            },
            again_delivery_timestamp_ns: 9,
        };
        let text = duplicate_lines(&[duplicate]);
        assert_eq!(text.lines().count(), 1);
        assert!(
            text.contains("order p-1 7: its first tab read at partition 3 offset 100, tab 2 again at partition 3 offset 160"),
            "{text}"
        );
    }
}
