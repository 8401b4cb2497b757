//! The manifests in deploy/ agree with the product contract (DESIGN.md names, which are the binaries' defaults)
//! and with the binaries themselves: every environment variable is a flag of the binary and its value parses.

use std::time::Duration;

use clap::Parser;
use deploy_check::{container, env, env_value, find, load_manifests, repo_root, Manifest};
use serde_json::Value;
use tabs::config::{parse_duration, DELIVERIES_TOPIC, DLQ_TOPIC, MAKERS_GROUP, ORDERS_TOPIC};
use tabs::kafka::DEFAULT_BOOTSTRAP_SERVERS;

/// The applications' listener (TLS, SCRAM-SHA-512); the binaries' default is the plain one of the contract.
const APPS_BOOTSTRAP_SERVERS: &str = "medicine-pubsub-kafka-bootstrap:9093";

fn manifests() -> Vec<Manifest> {
    load_manifests(&repo_root().join("deploy"))
}

fn patient_pod(manifests: &[Manifest]) -> &Value {
    &find(manifests, "Deployment", "patient-0")["spec"]["template"]["spec"]
}

fn maker_pod(manifests: &[Manifest]) -> &Value {
    &find(manifests, "ScaledJob", "medicine-maker-0")["spec"]["jobTargetRef"]["template"]["spec"]
}

fn trigger(manifests: &[Manifest]) -> &Value {
    let triggers = &find(manifests, "ScaledJob", "medicine-maker-0")["spec"]["triggers"];
    assert_eq!(triggers.as_array().map(Vec::len), Some(1), "one trigger");
    assert_eq!(triggers[0]["type"], "kafka");
    &triggers[0]["metadata"]
}

/// Parses a container's environment as the binary would: each variable is mapped to the flag that reads it,
/// and the resulting command line must parse. Variables no flag reads are an error (a typo in a manifest).
fn parse_env_as<P: Parser>(container: &Value) -> P {
    let command = P::command();
    let mut argv = vec![command.get_name().to_owned()];
    for (name, value) in env(container) {
        let arg = command
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == name.as_str()))
            .unwrap_or_else(|| {
                panic!(
                    "{}: no flag reads environment variable {name}",
                    command.get_name()
                )
            });
        let long = arg.get_long().expect("every flag has a long name");
        // valueFrom (the pod name, a password): any plain value stands for it.
        let value = value.unwrap_or_else(|| "pod-name".into());
        argv.push(format!("--{long}={}", as_mounted(container, &value)));
    }
    P::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?} does not parse: {e}"))
}

/// A path inside one of the container's volume mounts, as the process would find it: a file under a scratch
/// directory standing for the volume (the volumes' contents are checked in tests/security.rs). Anything else is
/// returned as it is.
fn as_mounted(container: &Value, value: &str) -> String {
    let inside = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["mountPath"].as_str())
        .any(|mount| value.starts_with(&format!("{mount}/")));
    if !inside {
        return value.to_owned();
    }
    let file = repo_root()
        .join("target/deploy-check-mounts")
        .join(value.trim_start_matches('/'));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, "a file of a mounted volume\n").unwrap();
    file.display().to_string()
}

fn seconds(value: &Value) -> Duration {
    Duration::from_secs(value.as_u64().expect("a number of seconds"))
}

#[test]
fn the_kafka_cluster_has_the_names_the_original_commands_use() {
    let manifests = manifests();
    let kafka = find(&manifests, "Kafka", "medicine-pubsub");
    assert_eq!(kafka["metadata"]["namespace"], "default");
    assert_eq!(kafka["spec"]["kafka"]["version"], "4.3.1");
    let listeners = kafka["spec"]["kafka"]["listeners"].as_array().unwrap();
    let plain = listeners
        .iter()
        .find(|l| l["name"] == "plain")
        .expect("a plain listener");
    assert_eq!(
        (plain["port"].as_u64(), plain["tls"].as_bool()),
        (Some(9092), Some(false))
    );
    let tls = listeners
        .iter()
        .find(|l| l["name"] == "tls")
        .expect("a tls listener");
    assert_eq!(
        (tls["port"].as_u64(), tls["tls"].as_bool()),
        (Some(9093), Some(true))
    );

    let config = &kafka["spec"]["kafka"]["config"];
    assert_eq!(config["group.initial.rebalance.delay.ms"], 0);
    for key in [
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
    ] {
        assert_eq!(config[key], 3, "{key}");
    }
    for key in ["min.insync.replicas", "transaction.state.log.min.isr"] {
        assert_eq!(config[key], 2, "{key}");
    }

    // Pods are <cluster>-<pool>-<id>: the pool must be called `kafka` for medicine-pubsub-kafka-0..2.
    let pool = find(&manifests, "KafkaNodePool", "kafka");
    assert_eq!(
        pool["metadata"]["labels"]["strimzi.io/cluster"],
        "medicine-pubsub"
    );
    assert_eq!(pool["spec"]["replicas"], 3);
    let mut roles: Vec<&str> = pool["spec"]["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    roles.sort_unstable();
    assert_eq!(roles, ["broker", "controller"]);

    // The bootstrap Service Strimzi creates is <cluster>-kafka-bootstrap; the binaries default to it.
    assert_eq!(
        DEFAULT_BOOTSTRAP_SERVERS,
        "medicine-pubsub-kafka-bootstrap:9092"
    );
}

/// A memory quantity of Kubernetes or the JVM in MiB.
fn mebibytes(quantity: &str) -> u64 {
    deploy_check::memory_bytes(quantity) >> 20
}

#[test]
fn a_broker_pod_has_room_for_the_kafka_tool_the_readme_runs_in_it() {
    // `kubectl exec … bin/kafka-console-consumer.sh` starts a second JVM in the broker's container: Kafka's
    // tools run with a 256 MiB heap, and a JVM needs about 150 MiB beyond its heap (a broker about 400 MiB).
    let manifests = manifests();
    let pool = find(&manifests, "KafkaNodePool", "kafka");
    let heap = mebibytes(pool["spec"]["jvmOptions"]["-Xmx"].as_str().unwrap());
    let limit = mebibytes(
        pool["spec"]["resources"]["limits"]["memory"]
            .as_str()
            .unwrap(),
    );
    let needed = heap + 400 + 256 + 150;
    assert!(
        limit >= needed,
        "the broker's memory limit is {limit} MiB; its {heap} MiB heap and a console consumer need {needed} MiB"
    );
}

#[test]
fn the_topics_are_the_contracts_and_replicated() {
    let manifests = manifests();
    for name in [ORDERS_TOPIC, DELIVERIES_TOPIC, DLQ_TOPIC] {
        let topic = find(&manifests, "KafkaTopic", name);
        assert_eq!(
            topic["metadata"]["labels"]["strimzi.io/cluster"], "medicine-pubsub",
            "{name}"
        );
        assert_eq!(topic["spec"]["replicas"], 3, "{name}");
        assert_eq!(topic["spec"]["config"]["min.insync.replicas"], 2, "{name}");
        assert!(topic["spec"]["partitions"].as_u64().unwrap() >= 1);
    }
}

#[test]
fn the_patient_deployment_runs_the_patient_with_a_valid_configuration() {
    let manifests = manifests();
    let deployment = find(&manifests, "Deployment", "patient-0");
    assert_eq!(deployment["metadata"]["namespace"], "default");
    let pod = patient_pod(&manifests);
    let patient = container(pod, "patient");
    assert_eq!(patient["image"], "medicine-pubsub/patient:dev");

    let config: patient::Config = parse_env_as(patient);
    config
        .validate()
        .expect("the manifest's configuration is valid");
    assert_eq!(config.kafka.bootstrap_servers, APPS_BOOTSTRAP_SERVERS);
    assert_eq!(config.topics.orders_topic, ORDERS_TOPIC);
    assert!(
        config.patient_id.is_none(),
        "each replica must get its own patient id"
    );
    for original in [
        "ORBITAL_MAX_TABS_COUNT",
        "ORBITAL_ORDER_PERIOD_SECONDS",
        "MEDECINEPUBSUB_KAFKA_SERVERS",
    ] {
        env_value(patient, original);
    }

    let grace = seconds(&pod["terminationGracePeriodSeconds"]);
    assert!(
        grace > config.flush_timeout,
        "grace period {grace:?} above the flush timeout"
    );
    let metrics = config
        .telemetry
        .metrics_addr
        .expect("metrics and probes are served");
    assert_eq!(patient["ports"][0]["containerPort"], metrics.port());
    assert_eq!(patient["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(patient["livenessProbe"]["httpGet"]["path"], "/healthz");
}

#[test]
fn the_maker_job_runs_the_maker_with_a_valid_configuration() {
    let manifests = manifests();
    let pod = maker_pod(&manifests);
    let medicine = container(pod, "medicine");
    assert_eq!(medicine["image"], "medicine-pubsub/medicine:dev");
    assert_eq!(pod["restartPolicy"], "Never");

    let config: medicine::Config = parse_env_as(medicine);
    config
        .validate()
        .expect("the manifest's configuration is valid");
    assert_eq!(config.kafka.bootstrap_servers, APPS_BOOTSTRAP_SERVERS);
    assert_eq!(config.topics.orders(), ORDERS_TOPIC);
    assert_eq!(config.topics.deliveries_topic, DELIVERIES_TOPIC);
    assert_eq!(config.topics.dlq_topic, DLQ_TOPIC);
    assert_eq!(config.group, MAKERS_GROUP);
    assert_eq!(config.guarantee, tabs::config::Guarantee::ExactlyOnce);
    assert!(
        !config.idle_exit_after.is_zero(),
        "a Job must end when its work is done"
    );

    let grace = seconds(&pod["terminationGracePeriodSeconds"]);
    assert!(
        grace >= config.drain_timeout + Duration::from_secs(10),
        "grace period {grace:?} leaves the drain ({:?}) time to commit and leave the group",
        config.drain_timeout
    );
    let maker_id = medicine["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "MEDECINEPUBSUB_MAKER_ID")
        .expect("MEDECINEPUBSUB_MAKER_ID is set");
    assert_eq!(
        maker_id["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
}

#[test]
fn the_keda_trigger_watches_the_makers_group_and_matches_their_capacity() {
    let manifests = manifests();
    let scaled_job = &find(&manifests, "ScaledJob", "medicine-maker-0")["spec"];
    let trigger = trigger(&manifests);
    let medicine = container(maker_pod(&manifests), "medicine");
    let config: medicine::Config = parse_env_as(medicine);

    for (key, value) in trigger.as_object().unwrap() {
        assert!(
            value.is_string(),
            "trigger metadata {key} must be a string (KEDA reads strings)"
        );
    }
    assert_eq!(trigger["consumerGroup"], config.group.as_str());
    assert_eq!(trigger["topic"], config.topics.orders());
    assert_eq!(
        trigger["offsetResetPolicy"], "earliest",
        "the makers start from the earliest offset"
    );
    let bootstrap = trigger["bootstrapServers"].as_str().unwrap();
    assert!(
        bootstrap == config.kafka.bootstrap_servers
            || bootstrap == "medicine-pubsub-kafka-bootstrap.default.svc:9093",
        "the trigger reads the listener the makers use: {bootstrap}"
    );
    let lag_threshold: u32 = trigger["lagThreshold"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        2 * lag_threshold,
        config.max_in_flight_orders,
        "one maker per half its in-flight capacity of lag: a maker is asked for before the running ones are full"
    );

    let partitions = find(&manifests, "KafkaTopic", ORDERS_TOPIC)["spec"]["partitions"]
        .as_u64()
        .unwrap();
    let max_replicas = scaled_job["maxReplicaCount"].as_u64().unwrap();
    assert!(
        max_replicas <= partitions,
        "more makers than partitions would idle"
    );
    // A maker leaves when surplus by the trigger's own rule: it must know the same numbers.
    assert_eq!(
        config.lag_threshold,
        Some(u64::from(lag_threshold)),
        "MEDECINEPUBSUB_LAG_THRESHOLD is the trigger's lagThreshold"
    );
    assert_eq!(
        u64::from(config.max_makers),
        max_replicas,
        "MEDECINEPUBSUB_MAX_MAKERS is maxReplicaCount"
    );
    assert_eq!(
        config.allow_idle_consumers,
        trigger["allowIdleConsumers"] == "true",
        "MEDECINEPUBSUB_ALLOW_IDLE_CONSUMERS is the trigger's allowIdleConsumers"
    );
    assert!(
        !config.surplus_exit_after.is_zero(),
        "makers leave when surplus"
    );
    assert_eq!(scaled_job["pollingInterval"], 5);
    assert_eq!(scaled_job["rollout"]["strategy"], "gradual");
    assert_eq!(scaled_job["successfulJobsHistoryLimit"], 5);
    assert_eq!(scaled_job["failedJobsHistoryLimit"], 5);
    let job = &scaled_job["jobTargetRef"];
    assert!(job["backoffLimit"].as_u64().is_some());
    assert!(
        job["activeDeadlineSeconds"].as_u64().unwrap() > parse_duration("60s").unwrap().as_secs()
    );
}

#[test]
fn pods_run_locked_down() {
    let manifests = manifests();
    for (pod, name) in [
        (patient_pod(&manifests), "patient"),
        (maker_pod(&manifests), "medicine"),
    ] {
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
        let container = container(pod, name);
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(
            security["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{name}"
        );
        assert_eq!(container["imagePullPolicy"], "IfNotPresent", "{name}");
        assert!(
            container["resources"]["requests"]["cpu"].is_string(),
            "{name}"
        );
        assert!(
            container["resources"]["requests"]["memory"].is_string(),
            "{name}"
        );
        assert!(
            container["resources"]["limits"]["memory"].is_string(),
            "{name}"
        );
    }
}

#[test]
fn everything_lives_in_the_default_namespace() {
    for manifest in manifests() {
        assert_eq!(
            manifest.doc["metadata"]["namespace"],
            "default",
            "{} {} in {}",
            manifest.kind(),
            manifest.name(),
            manifest.file.display()
        );
    }
}
