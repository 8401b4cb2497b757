//! The medicine maker: consumes tab orders from `tabs.orders` (group `tabs_makers`), makes every tab of an order
//! in parallel, and publishes the tabs to `tabs.deliveries`.
//!
//! Delivery guarantee (default `--guarantee exactly-once`): the tabs of a batch of finished orders and the
//! orders' offsets are committed in one Kafka transaction, and a partition's offset only advances over a
//! contiguous prefix of finished orders. A maker killed at any instant loses nothing (uncommitted orders are
//! fetched again by the next maker) and duplicates nothing for `read_committed` readers (an aborted
//! transaction's tabs are never visible). Records that are not valid orders go to `tabs.dlq` in the same
//! transaction, with their reason.
//!
//! Many orders are in flight at once across all assigned partitions, bounded by `--max-in-flight-orders`; at
//! the bound the maker pauses its partitions instead of buffering. Its throughput therefore does not depend on
//! how many partitions it holds.
//!
//! As a Kubernetes Job it exits 0 once idle for `--idle-exit-after` or after `--max-orders` orders; on SIGTERM it
//! stops fetching, finishes what is in flight within `--drain-timeout`, commits, leaves the group and exits 0.
//!
//! Run: `medicine --bootstrap-servers 127.0.0.1:9092 --idle-exit-after 0`.

#![forbid(unsafe_code)]

mod at_least_once;
mod ledger;
mod making;
mod stats;
mod worker;

use std::time::Duration;

use clap::{Parser, ValueEnum};
use tabs::config::{
    parse_duration, parse_positive_duration, TelemetryArgs, TopicArgs, DELIVERIES_TOPIC, DLQ_TOPIC,
    MAKERS_GROUP,
};
use tabs::kafka::{GroupProtocol, KafkaArgs};
use tokio_util::sync::CancellationToken;

pub use stats::Summary;

/// How tabs and offsets reach Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Guarantee {
    /// Tabs and offsets in one transaction: nothing lost, nothing duplicated for read_committed readers.
    ExactlyOnce,
    /// Tabs published as soon as made, offsets committed after their acknowledgements: nothing lost; a crash
    /// can publish an order's tabs twice.
    AtLeastOnce,
}

/// Command line and environment of `medicine`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "medicine",
    version,
    about = "Makes medicine tabs: consumes tab orders, publishes tabs."
)]
pub struct Config {
    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub topics: TopicArgs,

    /// Topic the tabs are published to.
    #[arg(long, env = "DELIVERIES_TOPIC", default_value = DELIVERIES_TOPIC)]
    pub deliveries_topic: String,

    /// Topic rejected records are published to, with their reason.
    #[arg(long, env = "DLQ_TOPIC", default_value = DLQ_TOPIC)]
    pub dlq_topic: String,

    /// Consumer group of the makers.
    #[arg(long, env = "CONSUMER_GROUP", default_value = MAKERS_GROUP)]
    pub group: String,

    /// Consumer group protocol: `consumer` (KIP-848, joins in milliseconds) or `classic`.
    #[arg(long, env = "GROUP_PROTOCOL", value_enum, default_value_t = GroupProtocol::Consumer)]
    pub group_protocol: GroupProtocol,

    /// Delivery guarantee: `exactly-once` (transactions) or `at-least-once`.
    #[arg(long, env = "GUARANTEE", value_enum, default_value_t = Guarantee::ExactlyOnce)]
    pub guarantee: Guarantee,

    /// Largest `tabs_count` accepted; larger orders go to the DLQ.
    #[arg(long, env = "ORBITAL_MAX_TABS_COUNT", default_value_t = tabs::config::MAX_TABS_COUNT,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_tabs_count: u32,

    /// Time to make one tab (all tabs of an order are made at once); 0 for benchmarks.
    #[arg(long, env = "TAB_MAKING_TIME", default_value = "2s", value_parser = parse_duration)]
    pub tab_making_time: Duration,

    /// Most orders fetched and not yet committed; at the bound the maker pauses fetching.
    #[arg(long, env = "MAX_IN_FLIGHT_ORDERS", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_in_flight_orders: u32,

    /// Most time finished orders wait to be committed together in one transaction (exactly-once) or one offset
    /// commit (at-least-once).
    #[arg(long, env = "COMMIT_INTERVAL", default_value = "20ms", value_parser = parse_positive_duration)]
    pub commit_interval: Duration,

    /// Kafka transaction timeout: how long a killed maker's open transaction can hold back readers.
    #[arg(long, env = "TRANSACTION_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub transaction_timeout: Duration,

    /// Name of this maker in logs, dead letters and its transactional id (Kubernetes: the pod name).
    /// Default: `medicine-<random>`.
    #[arg(long, env = "MAKER_ID")]
    pub maker_id: Option<String>,

    /// Exit 0 after this long with nothing in flight and nothing fetched; 0 runs until signalled.
    #[arg(long, env = "IDLE_EXIT_AFTER", default_value = "10s", value_parser = parse_duration)]
    pub idle_exit_after: Duration,

    /// Exit 0 after this many records (orders and rejected ones) are done; 0 is unlimited.
    #[arg(long, env = "MAX_ORDERS", default_value_t = 0)]
    pub max_orders: u64,

    /// On SIGTERM (or at --max-orders), how long in-flight orders get to finish before they are abandoned
    /// (and redelivered to the next maker).
    #[arg(long, env = "DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Give up (exit 1) when Kafka or the topics cannot be reached within this time.
    #[arg(long, env = "STARTUP_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub startup_timeout: Duration,

    /// Records the consumer may prefetch, in KiB; bounds memory whatever the lag.
    #[arg(long, env = "FETCH_QUEUE_KBYTES", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub fetch_queue_kbytes: u32,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl Config {
    /// Checks what the parser cannot, before any network call.
    pub fn validate(&self) -> Result<(), String> {
        self.kafka.validate()?;
        for (flag, topic) in [
            ("--orders-topic", &self.topics.orders_topic),
            ("--deliveries-topic", &self.deliveries_topic),
            ("--dlq-topic", &self.dlq_topic),
            ("--group", &self.group),
        ] {
            if topic.trim().is_empty() {
                return Err(format!("{flag} is empty"));
            }
        }
        if self.deliveries_topic == self.topics.orders_topic
            || self.dlq_topic == self.topics.orders_topic
        {
            return Err(
                "--deliveries-topic and --dlq-topic must differ from --orders-topic".into(),
            );
        }
        if self.transaction_timeout < Duration::from_secs(1) {
            return Err(
                "--transaction-timeout must be at least 1s (the broker's minimum is 1s)".into(),
            );
        }
        if let Some(id) = &self.maker_id {
            if id.trim().is_empty() {
                return Err("--maker-id (MAKER_ID) is empty; unset it for a random id".into());
            }
        }
        Ok(())
    }

    /// This maker's name: `--maker-id`, or `medicine-<random>`.
    pub fn maker_id(&self) -> String {
        self.maker_id.clone().unwrap_or_else(|| {
            let random = uuid::Uuid::new_v4().simple().to_string();
            format!("medicine-{}", &random[..8])
        })
    }
}

/// The whole `medicine` program: parses `args` (program name first), sets up logging and signals, runs, and
/// maps the outcome to an exit code (0 done, 1 failed, 2 invalid configuration). The `medicine` binary and the
/// local mode's child processes both run exactly this.
pub fn main<I, T>(args: I) -> std::process::ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let config: Config = tabs::config::parse_from_or_exit(args);
    if let Err(message) = config.validate() {
        tabs::config::usage_exit(message);
    }
    tabs::telemetry::init(config.telemetry.log_format);
    tabs::shutdown::run_service("maker", |shutdown| run(config, shutdown))
}

/// Runs the maker until it is idle, has done `--max-orders`, or `shutdown` is cancelled and it has drained.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<Summary> {
    worker::Worker::start(config, shutdown).await?.run().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("medicine").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_follow_the_contract() {
        let config = config(&[]).unwrap();
        assert_eq!(config.topics.orders_topic, "tabs.orders");
        assert_eq!(config.deliveries_topic, "tabs.deliveries");
        assert_eq!(config.dlq_topic, "tabs.dlq");
        assert_eq!(config.group, "tabs_makers");
        assert_eq!(config.guarantee, Guarantee::ExactlyOnce);
        assert_eq!(config.tab_making_time, Duration::from_secs(2));
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn accepts_zero_making_time_and_no_idle_exit() {
        let config = config(&["--tab-making-time", "0", "--idle-exit-after", "0"]).unwrap();
        assert_eq!(config.tab_making_time, Duration::ZERO);
        assert_eq!(config.idle_exit_after, Duration::ZERO);
    }

    #[test]
    fn rejects_zero_in_flight_and_bad_guarantees() {
        assert!(config(&["--max-in-flight-orders", "0"]).is_err());
        assert!(config(&["--guarantee", "sometimes"]).is_err());
        assert!(config(&["--commit-interval", "0"]).is_err());
    }

    #[test]
    fn rejects_topics_that_would_loop() {
        let err = config(&["--deliveries-topic", "tabs.orders"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.contains("--deliveries-topic"), "{err}");
    }

    #[test]
    fn random_maker_ids_are_distinct() {
        let config = config(&[]).unwrap();
        assert_ne!(config.maker_id(), config.maker_id());
        assert!(config.maker_id().starts_with("medicine-"));
    }
}
