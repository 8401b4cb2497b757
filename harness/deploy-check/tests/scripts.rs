//! What can be said of the make_*.sh scripts without a cluster. Everything they do on one is proved by the
//! Kubernetes end-to-end test against the real API server and KEDA operator (harness/kube-dev/tests).

use std::os::unix::fs::symlink;
use std::process::Command;

use deploy_check::{load_manifests, repo_root};

const SCRIPTS: [&str; 4] = [
    "make_infra.sh",
    "make_build.sh",
    "make_deploy.sh",
    "make_destroy.sh",
];

#[test]
fn scripts_say_so_when_kubectl_is_missing() {
    // The machine's tools, without kubectl: the real scripts, nothing stood in.
    let bin = std::env::temp_dir().join(format!("deploy-check-no-kubectl-{}", std::process::id()));
    std::fs::create_dir_all(&bin).unwrap();
    for dir in ["/usr/local/bin", "/usr/bin", "/bin"] {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let target = bin.join(entry.file_name());
            if entry.file_name() != "kubectl" && !target.exists() {
                let _ = symlink(entry.path(), target);
            }
        }
    }
    for script in SCRIPTS {
        let output = Command::new(repo_root().join(script))
            .env("PATH", &bin)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{script}");
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(
            err.contains("'kubectl' is not installed"),
            "{script}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(bin);
}

#[test]
fn scripts_wait_on_conditions_never_on_sleep() {
    for script in SCRIPTS {
        let text = std::fs::read_to_string(repo_root().join(script)).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            assert!(
                !line.split_whitespace().any(|w| w == "sleep"),
                "{script} sleeps instead of waiting on a condition: {line}"
            );
        }
    }
}

#[test]
fn the_scripts_use_keda_s_release_deployment_names() {
    // KEDA 2.20.2's release YAML (what make_infra.sh applies) names them so; the Helm chart's names differ.
    let common = std::fs::read_to_string(repo_root().join("scripts/lib/common.sh")).unwrap();
    assert!(
        common.contains("KEDA_DEPLOYMENTS=(keda-operator keda-metrics-apiserver keda-admission)"),
        "{common}"
    );
    // And they are the Deployments of the release YAML itself, where it is at hand (the end-to-end test waits
    // for them on a real API server).
    let upstream = repo_root().join("../shared/upstream/keda-2.20.2.yaml");
    if let Ok(release) = std::fs::read_to_string(&upstream) {
        let mut deployments: Vec<String> = serde_norway::Deserializer::from_str(&release)
            .filter_map(|doc| serde::Deserialize::deserialize(doc).ok())
            .filter(|doc: &serde_json::Value| doc["kind"] == "Deployment")
            .map(|doc| {
                doc["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        deployments.sort();
        assert_eq!(
            deployments,
            ["keda-admission", "keda-metrics-apiserver", "keda-operator"]
        );
    }
}

#[test]
fn the_scripts_build_and_check_exactly_the_images_deploy_runs() {
    let common = std::fs::read_to_string(repo_root().join("scripts/lib/common.sh")).unwrap();
    let line = common
        .lines()
        .find(|l| l.starts_with("IMAGES=("))
        .expect("IMAGES in scripts/lib/common.sh");
    let mut scripted: Vec<&str> = line
        .trim_start_matches("IMAGES=(")
        .trim_end_matches(')')
        .split_whitespace()
        .collect();
    scripted.sort_unstable();
    let mut deployed: Vec<String> = load_manifests(&repo_root().join("deploy"))
        .iter()
        .flat_map(|m| {
            let pod = if m.kind() == "ScaledJob" {
                &m.doc["spec"]["jobTargetRef"]["template"]["spec"]
            } else {
                &m.doc["spec"]["template"]["spec"]
            };
            pod["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c["image"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    deployed.sort();
    assert_eq!(scripted, deployed);
}

/// The test broker runs with the deployed cluster's group and transaction settings, and the three-node test
/// cluster with its replication too, so what the tests and benchmarks measure (join times, recovery after a kill,
/// exactly-once through broker restarts) is what the cluster does.
#[test]
fn the_test_brokers_run_with_the_deployed_clusters_settings() {
    let script = std::fs::read_to_string(repo_root().join("scripts/kafka-dev.sh")).unwrap();
    let kafka = load_manifests(&repo_root().join("deploy/infra"));
    let config = &kafka
        .iter()
        .find(|m| m.kind() == "Kafka")
        .expect("the Kafka resource")
        .doc["spec"]["kafka"]["config"];
    for key in [
        "group.initial.rebalance.delay.ms",
        "group.consumer.min.heartbeat.interval.ms",
        "group.consumer.heartbeat.interval.ms",
        "group.consumer.assignment.interval.ms",
        "group.consumer.min.session.timeout.ms",
        "group.consumer.session.timeout.ms",
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        // The three-node test cluster's replication (KAFKA_DEV_NODES=3).
        "default.replication.factor",
        "min.insync.replicas",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
    ] {
        let deployed = &config[key];
        assert!(
            !deployed.is_null(),
            "{key} is not set in deploy/infra/kafka.yaml"
        );
        assert!(
            script.contains(&format!("{key}={deployed}")),
            "scripts/kafka-dev.sh does not set {key}={deployed}"
        );
    }
    // The test cluster has the node pool's nodes, each in both of its roles.
    let pool = &kafka
        .iter()
        .find(|m| m.kind() == "KafkaNodePool")
        .expect("the KafkaNodePool resource")
        .doc["spec"];
    let faults =
        std::fs::read_to_string(repo_root().join("harness/faults/src/cluster.rs")).unwrap();
    assert!(
        faults.contains(&format!("pub const NODES: usize = {};", pool["replicas"])),
        "the fault campaign's cluster does not have the node pool's {} nodes",
        pool["replicas"]
    );
    let roles: Vec<&str> = pool["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(roles, ["controller", "broker"]);
    assert!(script.contains("process.roles=broker,controller"));
}
