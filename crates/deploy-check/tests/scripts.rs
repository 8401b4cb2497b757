//! The make_*.sh scripts run against stand-in kubectl, minikube, docker and curl commands that record their
//! calls: the order of operations, the pinned versions, idempotence, and clear failures.

use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use deploy_check::{load_manifests, repo_root};

/// The tools the stand-in replaces; the real ones never run in these tests.
const STANDINS: [&str; 4] = ["kubectl", "minikube", "docker", "curl"];

/// A PATH with the system's tools but stand-ins for (some of) `STANDINS`, and a state directory.
struct Sandbox {
    root: PathBuf,
}

impl Sandbox {
    /// `present`: which of the stand-in tools exist; the others are missing from PATH.
    fn new(present: &[&str]) -> Self {
        let root = std::env::temp_dir().join(format!(
            "medicine-pubsub-scripts-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(root.join("state")).unwrap();
        std::fs::File::create(root.join("state/calls.log")).unwrap();
        for dir in ["/usr/local/bin", "/usr/bin", "/bin"] {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let target = bin.join(&name);
                if STANDINS.iter().any(|s| name == *s) || target.exists() {
                    continue;
                }
                let _ = symlink(entry.path(), target);
            }
        }
        let standin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/standin/standin.sh");
        for tool in present {
            symlink(&standin, bin.join(tool)).unwrap();
        }
        Self { root }
    }

    fn run(&self, script: &str, env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(repo_root().join(script));
        command
            .env_clear()
            .env("PATH", self.root.join("bin"))
            .env("HOME", &self.root)
            .env("TMPDIR", self.root.join("state"))
            .env("STANDIN_STATE", self.root.join("state"));
        for (key, value) in env {
            command.env(key, value);
        }
        command
            .output()
            .unwrap_or_else(|e| panic!("running {script}: {e}"))
    }

    /// The recorded calls, with the names of temporary files replaced by `<tmp>` so runs compare.
    fn calls(&self) -> Vec<String> {
        let tmp = self.root.join("state").display().to_string();
        std::fs::read_to_string(self.root.join("state/calls.log"))
            .unwrap()
            .lines()
            .map(|line| {
                line.split(' ')
                    .map(|word| {
                        if word.starts_with(&tmp) {
                            "<tmp>"
                        } else {
                            word
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    fn clear_calls(&self) {
        std::fs::write(self.root.join("state/calls.log"), "").unwrap();
    }

    fn piped_manifests(&self) -> Vec<String> {
        let mut piped: Vec<PathBuf> = std::fs::read_dir(self.root.join("state"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("stdin-")
            })
            .collect();
        piped.sort();
        piped
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts that `expected` appear in `calls` in this order (other calls may come between them).
fn assert_in_order(calls: &[String], expected: &[&str]) {
    let mut position = 0;
    for want in expected {
        match calls[position..]
            .iter()
            .position(|c| c == want || c.starts_with(want))
        {
            Some(found) => position += found + 1,
            None => panic!("`{want}` not found (in order) in:\n{}", calls.join("\n")),
        }
    }
}

const INFRA_SEQUENCE: [&str; 12] = [
    "kubectl config current-context",
    "minikube -p minikube status",
    "kubectl get nodes -o jsonpath=",
    "curl -fsSL https://github.com/strimzi/strimzi-kafka-operator/releases/download/1.2.0/strimzi-cluster-operator-1.2.0.yaml",
    "kubectl apply --server-side --force-conflicts -n default -f -",
    "kubectl -n default rollout status deployment/strimzi-cluster-operator",
    "kubectl apply -k deploy/infra",
    "kubectl apply --server-side --force-conflicts -f https://github.com/kedacore/keda/releases/download/v2.20.2/keda-2.20.2.yaml",
    "kubectl -n default wait kafka/medicine-pubsub --for=condition=Ready",
    "kubectl -n keda rollout status deployment/keda-operator ",
    "kubectl -n keda rollout status deployment/keda-operator-metrics-apiserver",
    "kubectl -n keda rollout status deployment/keda-admission-webhooks",
];

#[test]
fn make_infra_installs_pinned_operators_then_waits_for_kafka_and_keda() {
    let sandbox = Sandbox::new(&STANDINS);
    let output = sandbox.run("make_infra.sh", &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let calls = sandbox.calls();
    assert_in_order(&calls, &INFRA_SEQUENCE);
    assert!(
        calls.iter().any(|c| c.starts_with(
            "kubectl -n default wait kafkatopic -l strimzi.io/cluster=medicine-pubsub"
        )),
        "waits for the topics"
    );
    // Strimzi's release manifest binds roles in `myproject`; the script must move them to `default`.
    let strimzi = &sandbox.piped_manifests()[0];
    assert!(
        strimzi.contains("namespace: default") && !strimzi.contains("myproject"),
        "{strimzi}"
    );
}

#[test]
fn make_infra_is_idempotent() {
    let sandbox = Sandbox::new(&STANDINS);
    assert!(sandbox.run("make_infra.sh", &[]).status.success());
    let first = sandbox.calls();
    sandbox.clear_calls();
    let output = sandbox.run("make_infra.sh", &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        sandbox.calls(),
        first,
        "a second run does the same declarative operations"
    );
    for call in &first {
        assert!(
            !call.starts_with("kubectl create"),
            "create fails on a second run: {call}"
        );
    }
}

#[test]
fn make_infra_says_how_to_start_minikube_when_it_is_not_running() {
    let sandbox = Sandbox::new(&STANDINS);
    let output = sandbox.run("make_infra.sh", &[("STANDIN_MINIKUBE", "Stopped")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("minikube start --cpus=6 --memory=8g"),
        "{}",
        stderr(&output)
    );
    assert!(
        !sandbox.calls().iter().any(|c| c.contains("apply")),
        "nothing applied"
    );
}

#[test]
fn make_infra_refuses_a_node_too_small() {
    let sandbox = Sandbox::new(&STANDINS);
    let output = sandbox.run(
        "make_infra.sh",
        &[("STANDIN_CPUS", "2"), ("STANDIN_MEMORY", "4000000Ki")],
    );
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("2 CPUs") && err.contains("--cpus=6 --memory=8g"),
        "{err}"
    );
}

#[test]
fn scripts_say_so_when_kubectl_is_missing() {
    for script in ["make_infra.sh", "make_deploy.sh", "make_destroy.sh"] {
        let sandbox = Sandbox::new(&["minikube", "docker", "curl"]);
        let output = sandbox.run(script, &[]);
        assert_eq!(output.status.code(), Some(1), "{script}");
        assert!(
            stderr(&output).contains("'kubectl' is not installed"),
            "{script}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn scripts_refuse_a_kubectl_context_other_than_minikube() {
    let sandbox = Sandbox::new(&STANDINS);
    let output = sandbox.run("make_deploy.sh", &[("STANDIN_CONTEXT", "production")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("kubectl config use-context minikube"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn make_build_builds_the_images_the_manifests_run_inside_minikube() {
    let sandbox = Sandbox::new(&STANDINS);
    let output = sandbox.run("make_build.sh", &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let calls = sandbox.calls();
    assert_in_order(
        &calls,
        &[
            "minikube -p minikube status",
            "minikube -p minikube docker-env",
            "docker build",
        ],
    );

    let built: BTreeSet<String> = calls
        .iter()
        .filter(|c| c.starts_with("docker build"))
        .map(|c| {
            assert!(c.contains("-f docker/Dockerfile"), "{c}");
            let words: Vec<&str> = c.split_whitespace().collect();
            let tag = words
                .iter()
                .position(|w| *w == "-t")
                .map(|i| words[i + 1])
                .expect("a tag");
            tag.to_owned()
        })
        .collect();
    let in_manifests: BTreeSet<String> = load_manifests(&repo_root().join("deploy"))
        .iter()
        .flat_map(|m| {
            let doc = &m.doc;
            let pod = if m.kind() == "ScaledJob" {
                &doc["spec"]["jobTargetRef"]["template"]["spec"]
            } else {
                &doc["spec"]["template"]["spec"]
            };
            pod["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c["image"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        built, in_manifests,
        "make_build.sh builds exactly the images deploy/ runs"
    );

    // Every build ran against minikube's Docker daemon.
    let docker_env = std::fs::read_to_string(sandbox.root.join("state/docker-env.log")).unwrap();
    assert!(
        docker_env
            .lines()
            .all(|l| l == "DOCKER_HOST=tcp://192.168.49.2:2376"),
        "{docker_env}"
    );
}

#[test]
fn make_build_needs_a_running_minikube() {
    let sandbox = Sandbox::new(&STANDINS);
    let output = sandbox.run("make_build.sh", &[("STANDIN_MINIKUBE", "Stopped")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("minikube start"),
        "{}",
        stderr(&output)
    );
    assert!(!sandbox.calls().iter().any(|c| c.starts_with("docker")));
}

#[test]
fn make_deploy_needs_the_infrastructure_first() {
    let sandbox = Sandbox::new(&STANDINS);
    let output = sandbox.run("make_deploy.sh", &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("run ./make_infra.sh first"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn make_deploy_applies_the_app_waits_and_restarts_on_a_second_run() {
    let sandbox = Sandbox::new(&STANDINS);
    assert!(sandbox.run("make_infra.sh", &[]).status.success());
    sandbox.clear_calls();

    let output = sandbox.run("make_deploy.sh", &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let calls = sandbox.calls();
    assert_in_order(
        &calls,
        &[
            "kubectl apply -k deploy/app",
            "kubectl -n default rollout status deployment/patient-0",
        ],
    );
    assert!(
        !calls.iter().any(|c| c.contains("rollout restart")),
        "nothing to restart on a first deploy"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("kafka-console-consumer.sh") && stdout.contains("--replicas="),
        "{stdout}"
    );

    sandbox.clear_calls();
    let output = sandbox.run("make_deploy.sh", &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_in_order(
        &sandbox.calls(),
        &[
            "kubectl apply -k deploy/app",
            "kubectl -n default rollout restart deployment/patient-0",
            "kubectl -n default rollout status deployment/patient-0",
        ],
    );
}

#[test]
fn make_destroy_removes_the_app_then_kafka_then_the_operators() {
    let sandbox = Sandbox::new(&STANDINS);
    for run in 0..2 {
        sandbox.clear_calls();
        let output = sandbox.run("make_destroy.sh", &[]);
        assert!(output.status.success(), "run {run}: {}", stderr(&output));
        assert_in_order(
            &sandbox.calls(),
            &[
                "kubectl delete -k deploy/app --ignore-not-found",
                "kubectl delete -k deploy/infra --ignore-not-found",
                "kubectl delete -f https://github.com/kedacore/keda/releases/download/v2.20.2/keda-2.20.2.yaml --ignore-not-found",
                "curl -fsSL https://github.com/strimzi/strimzi-kafka-operator/releases/download/1.2.0/",
                "kubectl delete -n default --ignore-not-found",
            ],
        );
    }
}

#[test]
fn scripts_wait_on_conditions_never_on_sleep() {
    for script in [
        "make_infra.sh",
        "make_build.sh",
        "make_deploy.sh",
        "make_destroy.sh",
    ] {
        let text = std::fs::read_to_string(repo_root().join(script)).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            assert!(
                !line.split_whitespace().any(|w| w == "sleep"),
                "{script} sleeps instead of waiting on a condition: {line}"
            );
        }
    }
}
