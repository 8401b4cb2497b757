//! What the children run with: a maker gets the maker container's environment from deploy/, as on Kubernetes,
//! with this run's broker, topics and settings; a patient gets its flags.

use tabs::config::format_duration;

use crate::cli::{Config, Settings};
use crate::defaults::DeployDefaults;

/// Variables of deploy/'s maker container that do not apply to a local child (its metrics address is one of
/// its own, given by the caller).
const NOT_LOCAL: [&str; 3] = [
    "MEDECINEPUBSUB_METRICS_ADDR",
    "MEDECINEPUBSUB_LOG_FORMAT",
    "MEDECINEPUBSUB_MAKER_ID",
];

/// How the cluster's pods connect to Kafka (its TLS listener, their KafkaUser, the cluster CA): a local child
/// connects to this run's broker instead, with no credentials.
const CONNECTION_PREFIX: &str = "MEDECINEPUBSUB_KAFKA_";

/// A maker's environment.
pub fn maker(
    defaults: &DeployDefaults,
    bootstrap: &str,
    config: &Config,
    settings: &Settings,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = defaults
        .maker_env
        .iter()
        .filter(|(k, _)| !NOT_LOCAL.contains(&k.as_str()) && !k.starts_with(CONNECTION_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let overrides = [
        ("MEDECINEPUBSUB_KAFKA_SERVERS", bootstrap.to_owned()),
        (
            "MEDECINEPUBSUB_ORDERS_TOPIC",
            config.topics.orders().to_owned(),
        ),
        (
            "MEDECINEPUBSUB_DELIVERIES_TOPIC",
            config.topics.deliveries_topic.clone(),
        ),
        ("MEDECINEPUBSUB_DLQ_TOPIC", config.topics.dlq_topic.clone()),
        ("MEDECINEPUBSUB_CONSUMER_GROUP", config.group.clone()),
        (
            "MEDECINEPUBSUB_GUARANTEE",
            settings.guarantee.as_str().to_owned(),
        ),
        (
            "MEDECINEPUBSUB_TAB_MAKING_TIME",
            format_duration(settings.making_time),
        ),
        (
            "MEDECINEPUBSUB_MAX_IN_FLIGHT_ORDERS",
            settings.max_in_flight_orders.to_string(),
        ),
        (
            "MEDECINEPUBSUB_IDLE_EXIT_AFTER",
            format_duration(settings.idle_exit_after),
        ),
        // The makers leave when surplus by the rule this run scales by.
        (
            "MEDECINEPUBSUB_LAG_THRESHOLD",
            settings.scaler.lag_threshold.to_string(),
        ),
        (
            "MEDECINEPUBSUB_MAX_MAKERS",
            settings.scaler.max_replicas.to_string(),
        ),
        (
            "MEDECINEPUBSUB_ALLOW_IDLE_CONSUMERS",
            settings.scaler.allow_idle_consumers.to_string(),
        ),
        (
            "MEDECINEPUBSUB_SURPLUS_EXIT_AFTER",
            format_duration(settings.surplus_exit_after),
        ),
        (
            "ORBITAL_MAX_TABS_COUNT",
            config.tabs_count.max_tabs_count.to_string(),
        ),
        ("MEDECINEPUBSUB_STARTUP_TIMEOUT", "30s".to_owned()),
        ("RUST_LOG", "info,librdkafka=error".to_owned()),
    ];
    for (key, value) in overrides {
        env.retain(|(k, _)| k != key);
        env.push((key.to_owned(), value));
    }
    env
}

/// The flags of a patient process running `count` patients named `<id>-1` … `<id>-<count>`.
pub fn patient_args(bootstrap: &str, config: &Config, count: u32, id: &str) -> Vec<String> {
    [
        "--bootstrap-servers",
        bootstrap,
        "--orders-topic",
        config.topics.orders(),
        "--patients",
        &count.to_string(),
        "--order-period",
        &format_duration(config.order_period),
        "--max-tabs-count",
        &config.tabs_count.max_tabs_count.to_string(),
        "--patient-id",
        id,
        "--startup-timeout",
        "30s",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::*;

    /// The maker's configuration from `env`, each variable given as the flag that reads it (no process
    /// environment involved).
    fn as_maker_parses(env: &[(String, String)]) -> medicine::Config {
        let command = medicine::Config::command();
        let mut argv = vec!["medicine".to_owned()];
        for (name, value) in env {
            let Some(arg) = command
                .get_arguments()
                .find(|a| a.get_env().is_some_and(|e| e == name.as_str()))
            else {
                continue;
            };
            let long = arg.get_long().unwrap();
            if arg.get_action().takes_values() {
                argv.push(format!("--{long}={value}"));
            } else if value == "true" {
                argv.push(format!("--{long}"));
            }
        }
        medicine::Config::try_parse_from(argv).unwrap()
    }

    #[test]
    fn a_maker_runs_with_deploy_s_environment_and_this_run_s_broker_and_topics() {
        let defaults = crate::defaults::load();
        let config = Config::try_parse_from(["local", "--orders-topic", "run.orders"]).unwrap();
        let settings = config.settings(&defaults);
        let env = maker(&defaults, "127.0.0.1:1", &config, &settings);
        let get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        assert_eq!(get("MEDECINEPUBSUB_KAFKA_SERVERS"), Some("127.0.0.1:1"));
        assert_eq!(get("MEDECINEPUBSUB_ORDERS_TOPIC"), Some("run.orders"));
        assert_eq!(
            get("MEDECINEPUBSUB_GROUP_PROTOCOL"),
            defaults
                .maker_env
                .get("MEDECINEPUBSUB_GROUP_PROTOCOL")
                .map(String::as_str)
        );
        assert_eq!(get("MEDECINEPUBSUB_METRICS_ADDR"), None);
        // The cluster's way in is not this run's: no TLS, no user, no CA path of a pod.
        assert!(
            defaults
                .maker_env
                .contains_key("MEDECINEPUBSUB_KAFKA_SECURITY_PROTOCOL"),
            "deploy/ sets how the pods connect"
        );
        for name in [
            "MEDECINEPUBSUB_KAFKA_SECURITY_PROTOCOL",
            "MEDECINEPUBSUB_KAFKA_SASL_MECHANISM",
            "MEDECINEPUBSUB_KAFKA_SASL_USERNAME",
            "MEDECINEPUBSUB_KAFKA_SSL_CA_LOCATION",
        ] {
            assert_eq!(get(name), None, "{name}");
        }
        // The makers leave when surplus by the rule this run scales them by, parsed as the maker parses it.
        let scaled =
            Config::try_parse_from(["local", "--lag-threshold", "7", "--max-makers", "3"]).unwrap();
        let settings = scaled.settings(&defaults);
        let env = maker(&defaults, "127.0.0.1:1", &scaled, &settings);
        let maker_config = as_maker_parses(&env);
        assert_eq!(maker_config.lag_threshold, Some(7));
        assert_eq!(maker_config.max_makers, 3);
        assert!(!maker_config.allow_idle_consumers);
        assert_eq!(
            maker_config.surplus_exit_after,
            defaults.maker_duration("MEDECINEPUBSUB_SURPLUS_EXIT_AFTER")
        );
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        let mut unique = names.clone();
        unique.dedup();
        assert_eq!(names.len(), unique.len(), "{names:?}");
    }
}
