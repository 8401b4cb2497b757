//! The local mode's command line, and the run's settings once deploy/'s defaults are applied.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use tabs::config::{
    parse_duration, parse_positive_duration, Guarantee, LogFormat, TabsCountArgs, TopicArgs,
    MAKERS_GROUP,
};
use tabs::kafka::KafkaArgs;

use crate::defaults::DeployDefaults;
use tabs::keda::ScalerSettings;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ViewMode {
    /// A panel on a terminal, a line per second otherwise.
    Auto,
    /// A panel redrawn every second.
    Live,
    /// One line per second.
    Plain,
}

/// Command line of `medicine-pubsub-local`. Defaults marked "deploy/" are read from the Kubernetes manifests.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "medicine-pubsub-local",
    version,
    about = "The whole medicine-pubsub system on one machine: broker, patients, makers autoscaled as KEDA would."
)]
pub struct Config {
    /// Patients ordering: one count (`3`), or a schedule of counts (`1,10,3`), each held for --step.
    #[arg(long, env = "MEDECINEPUBSUB_LOCAL_PATIENTS", default_value = "1", value_parser = parse_schedule)]
    pub patients: Schedule,

    /// How long each count of a --patients schedule lasts.
    #[arg(long, env = "MEDECINEPUBSUB_LOCAL_STEP", default_value = "30s", value_parser = parse_positive_duration)]
    pub step: Duration,

    /// Stop ordering after this long. Default: at the end of a schedule; a single count orders until Ctrl-C.
    #[arg(long, env = "MEDECINEPUBSUB_LOCAL_DURATION", value_parser = parse_positive_duration)]
    pub duration: Option<Duration>,

    /// A Kafka of yours (host:port); the topics are created if missing. Without it, --broker decides.
    #[arg(long, env = "MEDECINEPUBSUB_LOCAL_BOOTSTRAP_SERVERS")]
    pub bootstrap_servers: Option<String>,

    /// Without --bootstrap-servers: `kafka` starts Apache Kafka 4.3.1 for the run (scripts/kafka-dev.sh: Java
    /// and Maven), `embedded` runs librdkafka's mock cluster in this process (at-least-once only), `auto` the
    /// first where Java and Maven are installed.
    #[arg(long, env = "MEDECINEPUBSUB_LOCAL_BROKER", value_enum, default_value_t = BrokerChoice::Auto)]
    pub broker: BrokerChoice,

    /// The makers' guarantee. Default: exactly-once on a real broker, at-least-once on the embedded one (which
    /// does not keep transactional offsets).
    #[arg(long, env = "MEDECINEPUBSUB_LOCAL_GUARANTEE", value_enum)]
    pub guarantee: Option<Guarantee>,

    /// Time between two orders of a patient.
    #[arg(long, env = "ORBITAL_ORDER_PERIOD_SECONDS", default_value = "1", value_parser = parse_positive_duration)]
    pub order_period: Duration,

    #[command(flatten)]
    pub tabs_count: TabsCountArgs,

    /// Time to make a tab. Default: deploy/ (MEDECINEPUBSUB_TAB_MAKING_TIME).
    #[arg(long, env = "MEDECINEPUBSUB_LOCAL_TAB_MAKING_TIME", value_parser = parse_duration)]
    pub tab_making_time: Option<Duration>,

    /// Orders a maker holds at once. Default: deploy/ (MEDECINEPUBSUB_MAX_IN_FLIGHT_ORDERS).
    #[arg(long, env = "MEDECINEPUBSUB_LOCAL_MAX_IN_FLIGHT_ORDERS")]
    pub max_in_flight_orders: Option<u32>,

    /// A maker exits after this long without work. Default: deploy/ (MEDECINEPUBSUB_IDLE_EXIT_AFTER).
    #[arg(long, env = "MEDECINEPUBSUB_LOCAL_IDLE_EXIT_AFTER", value_parser = parse_positive_duration)]
    pub idle_exit_after: Option<Duration>,

    /// How often the autoscaler reads the lag. Default: deploy/ (pollingInterval).
    #[arg(long, env = "MEDECINEPUBSUB_LOCAL_POLLING_INTERVAL", value_parser = parse_positive_duration)]
    pub polling_interval: Option<Duration>,

    /// Orders of lag per maker. Default: deploy/ (lagThreshold).
    #[arg(long, env = "MEDECINEPUBSUB_LOCAL_LAG_THRESHOLD", value_parser = clap::value_parser!(u64).range(1..))]
    pub lag_threshold: Option<u64>,

    /// Most makers at once. Default: deploy/ (maxReplicaCount).
    #[arg(long, env = "MEDECINEPUBSUB_LOCAL_MAX_MAKERS", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_makers: Option<u32>,

    /// A maker that KEDA's rule no longer counts leaves after this long. Default: deploy/
    /// (MEDECINEPUBSUB_SURPLUS_EXIT_AFTER).
    #[arg(long, env = "MEDECINEPUBSUB_LOCAL_SURPLUS_EXIT_AFTER", value_parser = parse_duration)]
    pub surplus_exit_after: Option<Duration>,

    /// Do not cap the lag at one threshold per partition (KEDA's allowIdleConsumers).
    #[arg(long, env = "MEDECINEPUBSUB_LOCAL_ALLOW_IDLE_CONSUMERS")]
    pub allow_idle_consumers: bool,

    /// After ordering stops, how long makers get to finish the lag before they are stopped.
    #[arg(long, env = "MEDECINEPUBSUB_LOCAL_DRAIN_TIMEOUT", default_value = "120s", value_parser = parse_positive_duration)]
    pub drain_timeout: Duration,

    #[command(flatten)]
    pub topics: TopicArgs,

    /// The makers' consumer group.
    #[arg(long, env = "MEDECINEPUBSUB_CONSUMER_GROUP", default_value = MAKERS_GROUP, help_heading = "Topics")]
    pub group: String,

    /// On a real broker, use the topic and group names as given. By default a run there adds `.<run id>` to
    /// them (printed at the start), so that no run sees another's orders.
    #[arg(
        long,
        env = "MEDECINEPUBSUB_LOCAL_SHARED_TOPICS",
        help_heading = "Topics"
    )]
    pub shared_topics: bool,

    /// Where the report, the chart and the children's logs go. Default: target/local-runs/<run id>.
    #[arg(long, env = "MEDECINEPUBSUB_LOCAL_REPORT_DIR")]
    pub report_dir: Option<PathBuf>,

    /// Progress display: `auto` (a panel on a terminal), `live` or `plain`.
    #[arg(long, env = "MEDECINEPUBSUB_LOCAL_VIEW", value_enum, default_value_t = ViewMode::Auto)]
    pub view: ViewMode,

    /// Log format of the local mode itself (children log to files in the report directory).
    #[arg(long, env = "MEDECINEPUBSUB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
}

/// Which broker a run without --bootstrap-servers gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BrokerChoice {
    Auto,
    Kafka,
    Embedded,
}

/// A list of patient counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(pub Vec<u32>);

/// Parses `3` or `1,10,3`.
pub fn parse_schedule(text: &str) -> Result<Schedule, String> {
    let counts: Result<Vec<u32>, _> = text.split(',').map(|c| c.trim().parse::<u32>()).collect();
    match counts {
        Ok(counts) if !counts.is_empty() && counts.iter().all(|&c| c == 0) => Err(format!(
            "`{text}`: no patient would order anything; give at least one (a schedule may pass through 0, e.g. 10,0,10)"
        )),
        Ok(counts) if !counts.is_empty() && counts.iter().all(|&c| c <= 100_000) => Ok(Schedule(counts)),
        _ => Err(format!("`{text}` is not a patient count or a list of counts (e.g. 3 or 1,10,3; at most 100000)")),
    }
}

/// The settings of a run once defaults from deploy/ are applied.
#[derive(Debug, Clone)]
pub struct Settings {
    pub scaler: ScalerSettings,
    pub polling_interval: Duration,
    pub making_time: Duration,
    pub max_in_flight_orders: u32,
    pub idle_exit_after: Duration,
    pub surplus_exit_after: Duration,
    pub guarantee: Guarantee,
}

impl Config {
    /// The names a run uses: on a broker that is not the run's own (`--bootstrap-servers`), unless
    /// `--shared-topics`, the topics and the group carry the run id, so that orders left by another run (or a run
    /// beside it) are never this run's.
    pub fn for_run(mut self, run_id: &str, own_broker: bool) -> Self {
        if !own_broker && !self.shared_topics {
            let own = |name: &str| format!("{name}.{run_id}");
            self.topics = TopicArgs::new(
                &own(self.topics.orders()),
                &own(&self.topics.deliveries_topic),
                &own(&self.topics.dlq_topic),
            );
            self.group = own(&self.group);
        }
        self
    }

    /// Checks what the parser cannot, before anything starts.
    pub fn validate(&self) -> Result<(), String> {
        let embedded = self.bootstrap_servers.is_none() && self.broker == BrokerChoice::Embedded;
        if embedded && self.guarantee == Some(Guarantee::ExactlyOnce) {
            return Err("--guarantee exactly-once needs a real broker (--broker kafka, or --bootstrap-servers \
                        host:port): the embedded mock cluster does not keep transactional offset commits"
                .into());
        }
        if let Some(servers) = &self.bootstrap_servers {
            KafkaArgs::plaintext(servers.clone()).validate()?;
        }
        Ok(())
    }

    /// The run's settings: the flags, else deploy/'s values.
    pub fn settings(&self, defaults: &DeployDefaults) -> Settings {
        let max_in_flight_orders = self
            .max_in_flight_orders
            .unwrap_or_else(|| defaults.maker_number("MEDECINEPUBSUB_MAX_IN_FLIGHT_ORDERS"));
        Settings {
            scaler: ScalerSettings {
                lag_threshold: self.lag_threshold.unwrap_or(defaults.lag_threshold),
                activation_lag_threshold: defaults.activation_lag_threshold,
                max_replicas: self.max_makers.unwrap_or(defaults.max_replicas),
                allow_idle_consumers: self.allow_idle_consumers || defaults.allow_idle_consumers,
            },
            polling_interval: self.polling_interval.unwrap_or(defaults.polling_interval),
            making_time: self
                .tab_making_time
                .unwrap_or_else(|| defaults.maker_duration("MEDECINEPUBSUB_TAB_MAKING_TIME")),
            max_in_flight_orders,
            idle_exit_after: self
                .idle_exit_after
                .unwrap_or_else(|| defaults.maker_duration("MEDECINEPUBSUB_IDLE_EXIT_AFTER")),
            surplus_exit_after: self
                .surplus_exit_after
                .unwrap_or_else(|| defaults.maker_duration("MEDECINEPUBSUB_SURPLUS_EXIT_AFTER")),
            guarantee: self
                .guarantee
                .unwrap_or(if self.bootstrap_servers.is_some() {
                    Guarantee::ExactlyOnce
                } else {
                    Guarantee::AtLeastOnce
                }),
        }
    }

    /// When ordering stops, from the start of the run.
    pub fn ordering_time(&self) -> Option<Duration> {
        self.duration.or_else(|| {
            (self.patients.0.len() > 1)
                .then(|| self.step * u32::try_from(self.patients.0.len()).unwrap_or(u32::MAX))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("medicine-pubsub-local").chain(args.iter().copied()))
    }

    #[test]
    fn a_run_on_a_real_broker_owns_its_topics_and_group_unless_told_to_share() {
        let own = config(&["--bootstrap-servers", "k:9092"])
            .unwrap()
            .for_run("abc123", false);
        assert_eq!(own.topics.orders(), "tabs.orders.abc123");
        assert_eq!(own.topics.deliveries_topic, "tabs.deliveries.abc123");
        assert_eq!(own.topics.dlq_topic, "tabs.dlq.abc123");
        assert_eq!(own.group, format!("{MAKERS_GROUP}.abc123"));
        let shared = config(&["--bootstrap-servers", "k:9092", "--shared-topics"])
            .unwrap()
            .for_run("abc123", false);
        assert_eq!(shared.topics.orders(), "tabs.orders");
        // The embedded broker is the run's own already.
        let embedded = config(&[]).unwrap().for_run("abc123", true);
        assert_eq!(embedded.topics.orders(), "tabs.orders");
    }

    #[test]
    fn schedules_are_one_count_or_a_list() {
        assert_eq!(parse_schedule("3"), Ok(Schedule(vec![3])));
        assert_eq!(parse_schedule("1, 10,3"), Ok(Schedule(vec![1, 10, 3])));
        assert!(parse_schedule("1,,3").is_err());
        assert!(parse_schedule("many").unwrap_err().contains("1,10,3"));
        assert!(parse_schedule("0").unwrap_err().contains("at least one"));
        assert!(parse_schedule("0,0").is_err());
        assert_eq!(parse_schedule("10,0,10"), Ok(Schedule(vec![10, 0, 10])));
    }

    #[test]
    fn a_single_count_orders_until_stopped_and_a_schedule_ends() {
        assert_eq!(config(&["--patients", "3"]).unwrap().ordering_time(), None);
        assert_eq!(
            config(&["--patients", "1,10,3", "--step", "30s"])
                .unwrap()
                .ordering_time(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            config(&["--patients", "3", "--duration", "5s"])
                .unwrap()
                .ordering_time(),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn defaults_come_from_deploy_and_the_guarantee_from_the_broker() {
        let defaults = crate::defaults::load();
        let embedded = config(&[]).unwrap().settings(&defaults);
        assert_eq!(embedded.guarantee, Guarantee::AtLeastOnce);
        assert_eq!(embedded.scaler.lag_threshold, defaults.lag_threshold);
        assert_eq!(embedded.scaler.max_replicas, defaults.max_replicas);
        assert_eq!(embedded.polling_interval, defaults.polling_interval);
        let real = config(&["--bootstrap-servers", "127.0.0.1:9092"])
            .unwrap()
            .settings(&defaults);
        assert_eq!(real.guarantee, Guarantee::ExactlyOnce);
    }

    #[test]
    fn exactly_once_on_the_embedded_broker_is_refused() {
        let err = config(&["--guarantee", "exactly-once", "--broker", "embedded"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.contains("--bootstrap-servers"), "{err}");
    }
}
