//! The maker's command line and environment ([`Config`]): parsed, checked, and turned into the loop's settings.

use std::time::Duration;

use clap::Parser;
use tabs::config::{
    parse_duration, parse_positive_duration, Guarantee, MakingTimeArgs, TabsCountArgs,
    TelemetryArgs, TopicArgs, MAKERS_GROUP,
};
use tabs::kafka::{GroupProtocol, KafkaArgs};

use crate::{surplus, worker};

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

    /// Consumer group of the makers.
    #[arg(long, env = "MEDECINEPUBSUB_CONSUMER_GROUP", default_value = MAKERS_GROUP, help_heading = "Topics")]
    pub group: String,

    /// Consumer group protocol: `consumer` (KIP-848, joins in milliseconds) or `classic`.
    #[arg(long, env = "MEDECINEPUBSUB_GROUP_PROTOCOL", value_enum, default_value_t = GroupProtocol::Consumer,
          help_heading = "Topics")]
    pub group_protocol: GroupProtocol,

    /// Delivery guarantee: `exactly-once` (transactions) or `at-least-once`.
    #[arg(long, env = "MEDECINEPUBSUB_GUARANTEE", value_enum, default_value_t = Guarantee::ExactlyOnce,
          help_heading = "Making")]
    pub guarantee: Guarantee,

    #[command(flatten, next_help_heading = "Making")]
    pub tabs_count: TabsCountArgs,

    #[command(flatten, next_help_heading = "Making")]
    pub making: MakingTimeArgs,

    /// Most orders fetched and not yet committed; at the bound the maker pauses fetching.
    #[arg(long, env = "MEDECINEPUBSUB_MAX_IN_FLIGHT_ORDERS", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000), help_heading = "Making")]
    pub max_in_flight_orders: u32,

    /// Most time finished orders wait to be committed together in one transaction (exactly-once) or one offset
    /// commit (at-least-once).
    #[arg(long, env = "MEDECINEPUBSUB_COMMIT_INTERVAL", default_value = "20ms",
          value_parser = parse_positive_duration, help_heading = "Making")]
    pub commit_interval: Duration,

    /// Kafka transaction timeout: how long a killed maker's open transaction can hold back readers.
    #[arg(long, env = "MEDECINEPUBSUB_TRANSACTION_TIMEOUT", default_value = "10s",
          value_parser = parse_positive_duration, help_heading = "Making")]
    pub transaction_timeout: Duration,

    /// Records the consumer may prefetch, in KiB; bounds memory whatever the lag.
    #[arg(long, env = "MEDECINEPUBSUB_FETCH_QUEUE_KBYTES", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_048_576), help_heading = "Making")]
    pub fetch_queue_kbytes: u32,

    /// Name of this maker in logs, dead letters and its transactional id (Kubernetes: the pod name).
    /// Default: `medicine-<random>`.
    #[arg(long, env = "MEDECINEPUBSUB_MAKER_ID", help_heading = "Lifecycle")]
    pub maker_id: Option<String>,

    /// Exit 0 after this long with nothing in flight and nothing fetched; 0 runs until signalled.
    #[arg(long, env = "MEDECINEPUBSUB_IDLE_EXIT_AFTER", default_value = "10s", value_parser = parse_duration,
          help_heading = "Lifecycle")]
    pub idle_exit_after: Duration,

    /// Exit 0 after this many records (orders and rejected ones) are done; 0 is unlimited.
    #[arg(
        long,
        env = "MEDECINEPUBSUB_MAX_ORDERS",
        default_value_t = 0,
        help_heading = "Lifecycle"
    )]
    pub max_orders: u64,

    /// On SIGTERM (or at --max-orders), how long in-flight orders get to finish before they are abandoned
    /// (and redelivered to the next maker).
    #[arg(long, env = "MEDECINEPUBSUB_DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_duration,
          help_heading = "Lifecycle")]
    pub drain_timeout: Duration,

    /// Give up (exit 1) when Kafka or the topics cannot be reached, or the group gives no assignment, within
    /// this time.
    #[arg(long, env = "MEDECINEPUBSUB_STARTUP_TIMEOUT", default_value = "60s", value_parser = parse_duration,
          help_heading = "Lifecycle")]
    pub startup_timeout: Duration,

    /// When the group takes partitions back (a maker joined): their orders in flight that will be made within this
    /// time are finished and committed before the partitions go; the others are handed back at once (their next
    /// owner makes them). Meanwhile this maker fetches nothing new (librdkafka holds it until the hand-over).
    #[arg(long, env = "MEDECINEPUBSUB_HANDOVER_TIMEOUT", default_value = "500ms", value_parser = parse_duration,
          help_heading = "Scaling")]
    pub handover_timeout: Duration,

    /// KEDA's `lagThreshold` for this group. With it, a maker that KEDA's rule no longer counts leaves by
    /// itself (see --surplus-exit-after); without it, makers leave only when idle.
    #[arg(long, env = "MEDECINEPUBSUB_LAG_THRESHOLD", value_parser = clap::value_parser!(u64).range(1..),
          help_heading = "Scaling")]
    pub lag_threshold: Option<u64>,

    /// KEDA's `maxReplicaCount` (with --lag-threshold).
    #[arg(long, env = "MEDECINEPUBSUB_MAX_MAKERS", default_value_t = 12,
          value_parser = clap::value_parser!(u32).range(1..=1000), help_heading = "Scaling")]
    pub max_makers: u32,

    /// KEDA's `allowIdleConsumers` (with --lag-threshold): the lag is not capped at one threshold per partition.
    #[arg(
        long,
        env = "MEDECINEPUBSUB_ALLOW_IDLE_CONSUMERS",
        help_heading = "Scaling"
    )]
    pub allow_idle_consumers: bool,

    /// With --lag-threshold: leave (drain, commit, exit 0) once the group has had more makers than
    /// min(ceil(lag / lag threshold), max makers) for this long, this maker among the surplus; 0 never leaves.
    #[arg(long, env = "MEDECINEPUBSUB_SURPLUS_EXIT_AFTER", default_value = "10s", value_parser = parse_duration,
          help_heading = "Scaling")]
    pub surplus_exit_after: Duration,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl Config {
    /// Checks what the parser cannot, before any network call.
    pub fn validate(&self) -> Result<(), String> {
        self.kafka.validate()?;
        self.topics.validate()?;
        if self.group.trim().is_empty() {
            return Err("--group is empty".into());
        }
        if self.transaction_timeout < Duration::from_secs(1) {
            return Err(
                "--transaction-timeout must be at least 1s (the broker's minimum is 1s)".into(),
            );
        }
        if let Some(id) = &self.maker_id {
            if id.trim().is_empty() {
                return Err(
                    "--maker-id (MEDECINEPUBSUB_MAKER_ID) is empty; unset it for a random id"
                        .into(),
                );
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

    /// What the loop decides with.
    pub(crate) fn settings(&self, maker_id: String) -> worker::Settings {
        worker::Settings {
            maker_id,
            group: self.group.clone(),
            orders_topic: self.topics.orders().to_owned(),
            deliveries_topic: self.topics.deliveries_topic.clone(),
            dlq_topic: self.topics.dlq_topic.clone(),
            max_tabs_count: self.tabs_count.max_tabs_count,
            tab_making_time: self.making.tab_making_time,
            max_in_flight_orders: self.max_in_flight_orders as usize,
            commit_interval: self.commit_interval,
            idle_exit_after: self.idle_exit_after,
            max_orders: self.max_orders,
            drain_timeout: self.drain_timeout,
            handover_timeout: self.handover_timeout,
            startup_timeout: self.startup_timeout,
            // A commit that outlives the transaction's own timeout is doomed (the broker aborts the transaction a
            // moment later) or stuck: given up then, the wait of a stuck one stays within a node failure's
            // liveness bound even when it starts after the failure's first aborted transaction.
            commit_stuck_after: self.transaction_timeout,
            surplus: self.surplus_rule(),
        }
    }

    /// KEDA's rule to leave by, when --lag-threshold names it and --surplus-exit-after is not 0.
    pub(crate) fn surplus_rule(&self) -> Option<surplus::SurplusRule> {
        let lag_threshold = self.lag_threshold?;
        (!self.surplus_exit_after.is_zero()).then_some(surplus::SurplusRule {
            scaler: tabs::keda::ScalerSettings {
                lag_threshold,
                activation_lag_threshold: 0,
                max_replicas: self.max_makers,
                allow_idle_consumers: self.allow_idle_consumers,
            },
            after: self.surplus_exit_after,
        })
    }
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
        assert_eq!(config.topics.orders(), "tabs.orders");
        assert_eq!(config.topics.deliveries_topic, "tabs.deliveries");
        assert_eq!(config.topics.dlq_topic, "tabs.dlq");
        assert_eq!(config.group, "tabs_makers");
        assert_eq!(config.guarantee, Guarantee::ExactlyOnce);
        assert_eq!(config.making.tab_making_time, Duration::from_secs(2));
        assert_eq!(config.tabs_count.max_tabs_count, 30);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn accepts_zero_making_time_and_no_idle_exit() {
        let config = config(&["--tab-making-time", "0", "--idle-exit-after", "0"]).unwrap();
        assert_eq!(config.making.tab_making_time, Duration::ZERO);
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
    fn the_surplus_rule_needs_a_lag_threshold_and_a_time() {
        assert_eq!(config(&[]).unwrap().surplus_rule(), None);
        let rule = config(&["--lag-threshold", "2048"])
            .unwrap()
            .surplus_rule()
            .unwrap();
        assert_eq!(rule.scaler.lag_threshold, 2048);
        assert_eq!(rule.scaler.max_replicas, 12);
        assert_eq!(rule.after, Duration::from_secs(10));
        let off = config(&["--lag-threshold", "2048", "--surplus-exit-after", "0"]).unwrap();
        assert_eq!(off.surplus_rule(), None);
        assert!(config(&["--lag-threshold", "0"]).is_err());
    }

    #[test]
    fn random_maker_ids_are_distinct() {
        let config = config(&[]).unwrap();
        assert_ne!(config.maker_id(), config.maker_id());
        assert!(config.maker_id().starts_with("medicine-"));
    }

    #[test]
    fn help_is_grouped_under_headings() {
        let help = <Config as clap::CommandFactory>::command()
            .render_help()
            .to_string();
        for heading in [
            "Kafka connection:",
            "Topics:",
            "Making:",
            "Lifecycle:",
            "Scaling:",
            "Telemetry:",
        ] {
            assert!(help.contains(heading), "{heading} missing in:\n{help}");
        }
    }
}
