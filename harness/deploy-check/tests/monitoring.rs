//! The monitoring in `deploy/monitoring/`: the alert rules pass their unit tests in Prometheus' own `promtool`
//! (and those tests catch a broken rule), the PrometheusRule holds the same rules as the plain file, and the
//! PodMonitor and the lag alert agree with the workloads they watch. That the rules load and fire in a real
//! Prometheus against live runs: `crates/local/tests/monitoring.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use deploy_check::{find, load_manifests, repo_root};
use serde_json::Value;

fn monitoring() -> PathBuf {
    repo_root().join("deploy/monitoring")
}

/// `promtool`, or `None` (after saying so) outside CI.
fn promtool() -> Option<PathBuf> {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("promtool"))
        .find(|path| path.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but promtool is missing: run the tests through ./make_test.sh (it installs Debian's \
             prometheus package)"
        );
        eprintln!("SKIPPED: no promtool on PATH (Debian's prometheus package has it)");
    }
    found
}

fn run(program: &Path, args: &[&str], dir: &Path) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rules() -> Value {
    yaml(&monitoring().join("medicine-pubsub.rules.yaml"))
}

fn alert<'a>(rules: &'a Value, name: &str) -> &'a Value {
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .find(|r| r["alert"] == name)
        .unwrap_or_else(|| panic!("no alert {name}"))
}

#[test]
fn the_rules_pass_their_promtool_unit_tests() {
    let Some(promtool) = promtool() else { return };
    let dir = monitoring();
    let checked = run(
        &promtool,
        &["check", "rules", "medicine-pubsub.rules.yaml"],
        &dir,
    );
    assert!(checked.status.success(), "{}", text(&checked));
    let tested = run(
        &promtool,
        &["test", "rules", "tests/medicine-pubsub.rules.test.yaml"],
        &dir,
    );
    assert!(tested.status.success(), "{}", text(&tested));
    // Every alert has tests that fire it and keep it silent.
    let tests = std::fs::read_to_string(dir.join("tests/medicine-pubsub.rules.test.yaml")).unwrap();
    for name in rules()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| r["alert"].as_str())
    {
        assert!(
            tests.matches(&format!("alertname: {name}\n")).count() >= 2,
            "{name} has no test that fires it and one that does not"
        );
    }
}

#[test]
fn the_unit_tests_catch_a_broken_rule() {
    let Some(promtool) = promtool() else { return };
    // Copies of the rules, each with one mistake a person could make; the shipped tests must fail on each.
    let original =
        std::fs::read_to_string(monitoring().join("medicine-pubsub.rules.yaml")).unwrap();
    let mistakes = [
        // Frozen partitions: forgetting that 0 means nothing waits.
        (
            "(medicine_partition_waiting_since_timestamp_seconds > 0)",
            "medicine_partition_waiting_since_timestamp_seconds",
        ),
        // The lag alert counting one maker short of maxReplicaCount.
        (
            "count(medicine_liveness_bound_seconds) >= 12",
            "count(medicine_liveness_bound_seconds) >= 11",
        ),
        // The objective read from the wrong bucket.
        ("{le=\"0.1\"}", "{le=\"0.25\"}"),
        // Dead letters summed without their reason.
        ("sum by (reason) (", "sum ("),
        // A maker's first rejections, counted before its first scrape, missed.
        (
            "unless medicine_dead_letters_total offset 10m",
            "unless medicine_dead_letters_total",
        ),
        // Makers failing counted since ever, not within the last half hour.
        ("offset 30m", "offset 1000m"),
    ];
    let dir = std::env::temp_dir().join(format!("monitoring-mistakes-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("tests")).unwrap();
    std::fs::copy(
        monitoring().join("tests/medicine-pubsub.rules.test.yaml"),
        dir.join("tests/medicine-pubsub.rules.test.yaml"),
    )
    .unwrap();
    for (right, wrong) in mistakes {
        assert!(original.contains(right), "the rules no longer hold {right}");
        std::fs::write(
            dir.join("medicine-pubsub.rules.yaml"),
            original.replace(right, wrong),
        )
        .unwrap();
        let tested = run(
            &promtool,
            &["test", "rules", "tests/medicine-pubsub.rules.test.yaml"],
            &dir,
        );
        assert!(
            !tested.status.success(),
            "the unit tests pass with {wrong:?} in place of {right:?}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_prometheus_rule_holds_the_same_rules_as_the_plain_file() {
    let resource = yaml(&monitoring().join("prometheus-rule.yaml"));
    assert_eq!(resource["kind"], "PrometheusRule");
    assert_eq!(
        resource["spec"]["groups"],
        rules()["groups"],
        "deploy/monitoring/prometheus-rule.yaml's spec.groups differ from medicine-pubsub.rules.yaml's groups"
    );
}

#[test]
fn the_lag_alert_counts_the_scaled_jobs_makers() {
    let manifests = load_manifests(&repo_root().join("deploy"));
    let job = find(&manifests, "ScaledJob", "medicine-maker-0");
    let most = job["spec"]["maxReplicaCount"].as_u64().unwrap();
    let rules = rules();
    let expr = alert(&rules, "MedicineLagGrowingAtMaxMakers")["expr"]
        .as_str()
        .unwrap();
    assert!(
        expr.contains(&format!("count(medicine_liveness_bound_seconds) >= {most}")),
        "maxReplicaCount is {most}: {expr}"
    );
    assert!(
        expr.contains("scaledObject=\"medicine-maker-0\""),
        "KEDA labels the lag with the ScaledJob's name: {expr}"
    );
    let failing = alert(&rules, "MedicineMakersFailing")["expr"]
        .as_str()
        .unwrap();
    assert!(
        failing.contains("pod=~\"medicine-maker-0-.+\""),
        "{failing}"
    );
}

#[test]
fn the_pod_monitor_scrapes_the_patients_and_the_makers_where_their_annotations_say() {
    let manifests = load_manifests(&repo_root().join("deploy"));
    let monitor = find(&manifests, "PodMonitor", "medicine-pubsub");
    let selector = &monitor["spec"]["selector"];
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    let templates = [
        &find(&manifests, "Deployment", "patient-0")["spec"]["template"],
        &find(&manifests, "ScaledJob", "medicine-maker-0")["spec"]["jobTargetRef"]["template"],
    ];
    for template in templates {
        let labels = &template["metadata"]["labels"];
        for (key, value) in selector["matchLabels"].as_object().unwrap() {
            assert_eq!(&labels[key], value, "{key}");
        }
        for expression in selector["matchExpressions"].as_array().unwrap() {
            assert_eq!(expression["operator"], "In");
            let key = expression["key"].as_str().unwrap();
            assert!(
                expression["values"]
                    .as_array()
                    .unwrap()
                    .contains(&labels[key]),
                "{key}={} not selected",
                labels[key]
            );
        }
        let annotations = &template["metadata"]["annotations"];
        let port = template["spec"]["containers"][0]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == endpoint["port"])
            .unwrap_or_else(|| panic!("no port named {}", endpoint["port"]));
        assert_eq!(
            annotations["prometheus.io/port"].as_str(),
            Some(port["containerPort"].to_string().as_str())
        );
        assert_eq!(endpoint["path"], "/metrics");
    }
}
