//! The Kubernetes deployment's settings, read from `deploy/` itself at build time: the local mode scales and
//! configures makers exactly as the ScaledJob does, and topics get the partitions the KafkaTopics declare.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

const SCALED_JOB: &str = include_str!("../../../deploy/app/medicine-scaledjob.yaml");
const TOPICS: &str = include_str!("../../../deploy/infra/topics.yaml");

/// What the local mode takes from `deploy/`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployDefaults {
    /// ScaledJob `pollingInterval`.
    pub polling_interval: Duration,
    /// ScaledJob `maxReplicaCount`.
    pub max_replicas: u32,
    /// Kafka trigger `lagThreshold`.
    pub lag_threshold: u64,
    /// Kafka trigger `activationLagThreshold` (0 when absent).
    pub activation_lag_threshold: u64,
    /// Kafka trigger `allowIdleConsumers`.
    pub allow_idle_consumers: bool,
    /// The maker container's plain environment variables.
    pub maker_env: BTreeMap<String, String>,
    /// Partitions of each KafkaTopic, by topic name.
    pub partitions: BTreeMap<String, i32>,
    /// The maker container's memory request, in MiB (`resources.requests.memory`, written `NMi`).
    pub maker_memory_request_mib: u32,
}

impl DeployDefaults {
    /// A maker environment variable as a duration.
    pub fn maker_duration(&self, name: &str) -> Duration {
        self.maker_env
            .get(name)
            .and_then(|v| tabs::config::parse_duration(v).ok())
            .unwrap_or_else(|| {
                panic!("deploy/app/medicine-scaledjob.yaml: {name} is not a duration")
            })
    }

    /// A maker environment variable as a number.
    pub fn maker_number(&self, name: &str) -> u32 {
        self.maker_env
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("deploy/app/medicine-scaledjob.yaml: {name} is not a number"))
    }
}

fn documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| {
            serde::Deserialize::deserialize(doc)
                .expect("deploy/ manifests are YAML (checked by the tests)")
        })
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// Reads the defaults. The manifests are compiled in and checked by this crate's tests, so a malformed one
/// fails the build's tests, not a user's run.
pub fn load() -> DeployDefaults {
    let scaled_job = documents(SCALED_JOB)
        .into_iter()
        .find(|d| d["kind"] == "ScaledJob")
        .expect("a ScaledJob in deploy/app/medicine-scaledjob.yaml");
    let spec = &scaled_job["spec"];
    let trigger = &spec["triggers"][0]["metadata"];
    let number = |v: &Value| v.as_str().and_then(|s| s.parse::<u64>().ok());
    let container = &spec["jobTargetRef"]["template"]["spec"]["containers"][0];
    let maker_env = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|var| {
            Some((
                var["name"].as_str()?.to_owned(),
                var["value"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let partitions = documents(TOPICS)
        .iter()
        .filter(|d| d["kind"] == "KafkaTopic")
        .filter_map(|t| {
            let name = t["spec"]["topicName"]
                .as_str()
                .or(t["metadata"]["name"].as_str())?;
            Some((
                name.to_owned(),
                i32::try_from(t["spec"]["partitions"].as_i64()?).ok()?,
            ))
        })
        .collect();
    DeployDefaults {
        polling_interval: Duration::from_secs(spec["pollingInterval"].as_u64().unwrap_or(30)),
        max_replicas: spec["maxReplicaCount"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(100),
        lag_threshold: number(&trigger["lagThreshold"]).unwrap_or(10),
        activation_lag_threshold: number(&trigger["activationLagThreshold"]).unwrap_or(0),
        allow_idle_consumers: trigger["allowIdleConsumers"].as_str() == Some("true"),
        maker_env,
        partitions,
        maker_memory_request_mib: container["resources"]["requests"]["memory"]
            .as_str()
            .and_then(|m| m.strip_suffix("Mi")?.parse().ok())
            .expect("deploy/app/medicine-scaledjob.yaml: the maker's memory request, in Mi"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_scaled_job_and_topics_of_deploy() {
        let defaults = load();
        assert!(!defaults.polling_interval.is_zero());
        assert_eq!(
            u64::from(defaults.maker_number("MEDECINEPUBSUB_MAX_IN_FLIGHT_ORDERS")),
            2 * defaults.lag_threshold,
            "read the trigger and the container of the same ScaledJob"
        );
        defaults.maker_duration("MEDECINEPUBSUB_TAB_MAKING_TIME");
        defaults.maker_duration("MEDECINEPUBSUB_IDLE_EXIT_AFTER");
        for topic in [
            tabs::config::ORDERS_TOPIC,
            tabs::config::DELIVERIES_TOPIC,
            tabs::config::DLQ_TOPIC,
        ] {
            assert!(
                defaults.partitions.get(topic).is_some_and(|&p| p > 0),
                "{topic}"
            );
        }
        let orders_partitions = defaults.partitions[tabs::config::ORDERS_TOPIC];
        assert!(defaults.max_replicas as i32 <= orders_partitions);
    }
}
