//! The quickstart, end to end, on a real control plane: `make_infra.sh` with the operators' real install YAMLs,
//! `make_deploy.sh`, the real KEDA operator starting maker Jobs from the real lag of a real broker, the original
//! README's commands verbatim, `make_destroy.sh` twice. Runs inside `scripts/kube-dev.sh exec` (make_test.sh does
//! it); what is real and what is a stand-in is in documentation/TESTING.md.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;
use support::{repo_root, Sandbox};

/// The broker's plain listener, as the original's commands name it (the control plane's /etc/hosts maps it to
/// loopback); its clients are the super user ANONYMOUS.
const BOOTSTRAP: &str = "medicine-pubsub-kafka-bootstrap:9092";
/// The applications' listener: TLS and SCRAM-SHA-512, each client a KafkaUser of deploy/infra/users.yaml.
const BOOTSTRAP_TLS: &str = "medicine-pubsub-kafka-bootstrap:9093";
/// The KafkaUsers of deploy/infra/users.yaml.
const USERS: [&str; 4] = [
    "medicine-auditor",
    "medicine-keda",
    "medicine-maker",
    "medicine-patient",
];
/// The overlay's lag threshold (the in-flight bound is twice it, as in deploy/): low, so a dozen patients need
/// several makers.
const LAG_THRESHOLD: i64 = 8;
/// Patients of the scale-out step.
const PATIENTS: u32 = 12;

/// The operators' release YAMLs, as released (test data beside the repository, see its README).
fn upstream() -> PathBuf {
    std::env::var_os("MEDICINE_PUBSUB_UPSTREAM")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/upstream"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs a command to its end, with a bound.
fn run(program: &str, args: &[&str], env: &[(&str, String)], timeout: Duration) -> Output {
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("starting {program}: {e}"));
    let pid = child.id();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(timeout) {
        Ok(output) => output.unwrap_or_else(|e| panic!("{program}: {e}")),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{program} {args:?} did not finish within {timeout:?}")
        }
    }
}

fn kubectl(args: &[&str]) -> String {
    let output = run("kubectl", args, &[], Duration::from_secs(120));
    assert!(
        output.status.success(),
        "kubectl {args:?} failed:\n{}",
        text(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// One key of a Secret, decoded.
fn secret(name: &str, key: &str) -> String {
    kubectl(&[
        "-n",
        "default",
        "get",
        "secret",
        name,
        "-o",
        &format!("go-template={{{{index .data \"{key}\" | base64decode}}}}"),
    ])
}

/// The `.log` files under `dir`, at any depth.
fn log_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(
                std::fs::read_dir(&path)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
        } else if path.extension().is_some_and(|e| e == "log") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The logs of every pod: the real node's (the kubelet's `podLogsDir`, a directory per pod named
/// `<namespace>_<name>_<uid>`).
fn pod_log_files(dir: &std::path::Path) -> Vec<PathBuf> {
    log_files(&dir.join("node/pod-logs"))
}

/// Everything the test's processes wrote: every pod's output, and the control plane's components.
fn all_logs() -> Vec<(PathBuf, String)> {
    let Some(dir) = std::env::var_os("KUBE_DEV_DIR").map(PathBuf::from) else {
        return Vec::new();
    };
    let mut files = log_files(&dir.join("logs"));
    files.extend(pod_log_files(&dir));
    files
        .into_iter()
        .map(|path| {
            let content =
                String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned();
            (path, content)
        })
        .collect()
}

fn kubectl_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&kubectl(&all)).expect("kubectl -o json")
}

/// Runs one of the make_*.sh scripts as a user would, with the operators' YAMLs from local files.
fn script(name: &str, extra: &[(&str, String)]) -> Output {
    let mut env = vec![
        (
            "STRIMZI_INSTALL_MANIFEST",
            upstream()
                .join("strimzi-cluster-operator-1.2.0.yaml")
                .display()
                .to_string(),
        ),
        (
            "KEDA_INSTALL_MANIFEST",
            upstream().join("keda-2.20.2.yaml").display().to_string(),
        ),
    ];
    env.extend(extra.iter().cloned());
    let began = Instant::now();
    let output = run(
        &repo_root().join(name).display().to_string(),
        &[],
        &env,
        Duration::from_secs(600),
    );
    eprintln!(
        "{name}: exit {:?} after {:.1}s",
        output.status.code(),
        began.elapsed().as_secs_f64()
    );
    output
}

fn script_ok(name: &str, extra: &[(&str, String)]) -> String {
    let output = script(name, extra);
    assert!(output.status.success(), "{name} failed:\n{}", text(&output));
    text(&output)
}

/// Waits until `check` holds, up to `timeout`; panics with `what` otherwise.
fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The makers' lag on `tabs.orders`, as KEDA computes it: end offsets minus the group's committed offsets.
struct Lag {
    consumer: BaseConsumer,
}

impl Lag {
    fn new() -> Self {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", BOOTSTRAP)
            .set("group.id", "tabs_makers")
            .set("enable.auto.commit", "false")
            .create()
            .expect("lag reader");
        Self { consumer }
    }

    /// Tabs written so far (end offsets of `tabs.deliveries`, transaction markers included).
    fn deliveries(&self) -> i64 {
        (0..12)
            .filter_map(|p| {
                self.consumer
                    .fetch_watermarks("tabs.deliveries", p, Duration::from_secs(5))
                    .ok()
            })
            .map(|(_, high)| high)
            .sum()
    }

    fn total(&self) -> Option<i64> {
        let metadata = self
            .consumer
            .fetch_metadata(Some("tabs.orders"), Duration::from_secs(5))
            .ok()?;
        let partitions: Vec<i32> = metadata.topics()[0]
            .partitions()
            .iter()
            .map(|p| p.id())
            .collect();
        let mut list = TopicPartitionList::new();
        for &partition in &partitions {
            list.add_partition("tabs.orders", partition);
        }
        let committed = self
            .consumer
            .committed_offsets(list, Duration::from_secs(5))
            .ok()?;
        let mut lag = 0;
        for &partition in &partitions {
            let (low, high) = self
                .consumer
                .fetch_watermarks("tabs.orders", partition, Duration::from_secs(5))
                .ok()?;
            let done = match committed
                .find_partition("tabs.orders", partition)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(offset)) => offset,
                _ => low,
            };
            lag += (high - done).max(0);
        }
        Some(lag)
    }
}

/// One sample of the test's figure.
#[derive(Debug, Clone)]
struct Sample {
    at_s: f64,
    patients: i64,
    lag: i64,
    running_jobs: i64,
    note: String,
}

/// The timeline: sampled every two seconds on a thread, printed at the end (and when the test fails).
struct Timeline {
    samples: Arc<Mutex<Vec<Sample>>>,
    note: Arc<Mutex<String>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

fn running_jobs() -> i64 {
    let jobs = kubectl_json(&["-n", "default", "get", "jobs"]);
    jobs["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|j| j["status"]["active"].as_i64().unwrap_or(0) > 0)
                .count() as i64
        })
        .unwrap_or(0)
}

fn ready_patients() -> i64 {
    let output = run(
        "kubectl",
        &[
            "-n",
            "default",
            "get",
            "deployment",
            "patient-0",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ],
        &[],
        Duration::from_secs(30),
    );
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

impl Timeline {
    fn start() -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let note = Arc::new(Mutex::new(String::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, n, halt) = (samples.clone(), note.clone(), stop.clone());
        std::thread::spawn(move || {
            let lag = Lag::new();
            let began = Instant::now();
            while !halt.load(std::sync::atomic::Ordering::Relaxed) {
                let sample = Sample {
                    at_s: began.elapsed().as_secs_f64(),
                    patients: ready_patients(),
                    lag: lag.total().unwrap_or(-1),
                    running_jobs: running_jobs(),
                    note: std::mem::take(&mut *n.lock().unwrap()),
                };
                s.lock().unwrap().push(sample);
                std::thread::sleep(Duration::from_secs(2));
            }
        });
        Self {
            samples,
            note,
            stop,
        }
    }

    fn mark(&self, note: &str) {
        eprintln!("--- {note}");
        let mut pending = self.note.lock().unwrap();
        if !pending.is_empty() {
            pending.push_str(", ");
        }
        pending.push_str(note);
    }

    fn last(&self) -> Option<Sample> {
        self.samples.lock().unwrap().last().cloned()
    }

    fn render(&self) -> String {
        let samples = self.samples.lock().unwrap();
        let mut out = String::from("\n  t(s)  patients   lag  running makers (one # per Job)\n");
        for s in samples.iter() {
            out += &format!(
                "{:6.0} {:9} {:5}  {:<14}{}\n",
                s.at_s,
                s.patients,
                s.lag,
                "#".repeat(s.running_jobs.max(0) as usize),
                if s.note.is_empty() {
                    String::new()
                } else {
                    format!("  <- {}", s.note)
                }
            );
        }
        out
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        eprintln!("{}", self.render());
        if std::thread::panicking() {
            print_pod_logs();
        }
    }
}

/// What explains the audit's duplicates, from the broker's store first (which producer, so which maker, wrote
/// each copy, and how its transaction ended: `DumpLogSegments`), then from those makers' logs (their rebalances,
/// warnings and errors). Printed with the failure: CI keeps nothing else of the run.
fn duplicates_evidence(report: &Value) -> String {
    let Some(dir) = std::env::var_os("KUBE_DEV_DIR").map(PathBuf::from) else {
        return "KUBE_DEV_DIR is not set: no store to read".into();
    };
    let store = testkit::store::Store::new(
        &repo_root().join("scripts/kafka-dev.sh"),
        &dir.join("kafka"),
    );
    let mut out = String::from("the broker's store on the duplicates:\n");
    let mut makers: Vec<String> = Vec::new();
    for duplicate in report["duplicates"]
        .as_array()
        .into_iter()
        .flatten()
        .take(3)
    {
        out += &format!(
            "order {} {} (tab {} twice)\n",
            duplicate["patient_id"], duplicate["order_timestamp_ns"], duplicate["seq_in_order"]
        );
        for copy in ["first", "again"] {
            let partition = duplicate[copy]["partition"].as_i64().unwrap_or(-1) as i32;
            let offset = duplicate[copy]["offset"].as_i64().unwrap_or(-1);
            match store.trace("tabs.deliveries", partition, offset) {
                Ok(trace) => {
                    out += &format!("  {copy}: {}\n", trace.text);
                    for id in trace.transactional_ids {
                        let maker = id
                            .rsplit_once('.')
                            .map_or(id.as_str(), |(m, _)| m)
                            .to_string();
                        if !makers.contains(&maker) {
                            makers.push(maker);
                        }
                    }
                }
                Err(err) => out += &format!("  {copy}: {err}\n"),
            }
        }
    }
    for maker in makers {
        out += &format!(
            "==== {maker}: rebalances, transactions ended otherwise than committed, warnings\n"
        );
        out += &maker_log_excerpt(&dir, &maker);
    }
    out
}

/// The lines of a maker's log that say what it held and what went wrong.
fn maker_log_excerpt(dir: &std::path::Path, maker: &str) -> String {
    let files: Vec<PathBuf> = pod_log_files(dir)
        .into_iter()
        .filter(|f| f.to_string_lossy().contains(maker))
        .collect();
    if files.is_empty() {
        return format!("no log of {maker} kept\n");
    }
    let telling = |line: &&str| {
        [
            "\"WARN\"",
            "\"ERROR\"",
            "partitions",
            "abort",
            "rewind",
            "draining",
            "stopped",
            "fenced",
        ]
        .iter()
        .any(|word| line.contains(word))
    };
    let mut out = String::new();
    for file in files {
        let content = std::fs::read_to_string(&file).unwrap_or_default();
        let lines: Vec<&str> = content.lines().filter(telling).collect();
        out += &lines[lines.len().saturating_sub(60)..].join("\n");
        out.push('\n');
    }
    out
}

/// On failure: the output of every pod, and the tails of the node's and the control plane's own logs.
fn print_pod_logs() {
    let Some(dir) = std::env::var_os("KUBE_DEV_DIR").map(PathBuf::from) else {
        return;
    };
    for log in pod_log_files(&dir) {
        let content = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = content.lines().collect();
        eprintln!(
            "==== {} (last 30 lines)\n{}",
            log.display(),
            lines[lines.len().saturating_sub(30)..].join("\n")
        );
    }
    for component in [
        "strimzi",
        "kube-controller-manager",
        "kwok",
        "kubelet",
        "kube-proxy",
    ] {
        let content =
            std::fs::read_to_string(dir.join(format!("logs/{component}.log"))).unwrap_or_default();
        let lines: Vec<&str> = content.lines().collect();
        eprintln!(
            "==== {component} (last 20 lines)\n{}",
            lines[lines.len().saturating_sub(20)..].join("\n")
        );
    }
}

/// The patients' and makers' pods as Prometheus' annotation-based pod discovery finds them: each running pod
/// annotated `prometheus.io/scrape: "true"`, at its pod IP and the port its `prometheus.io/port` names, with its
/// pod and program as labels; written to `file` for Prometheus' file discovery (the test's Prometheus has no
/// credentials for Kubernetes' own discovery).
fn write_pod_targets(file: &std::path::Path) {
    let output = run(
        "kubectl",
        &[
            "-n",
            "default",
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/part-of=medicine-pubsub",
            "-o",
            "json",
        ],
        &[],
        Duration::from_secs(10),
    );
    let Ok(pods) = serde_json::from_slice::<Value>(&output.stdout) else {
        return;
    };
    let mut targets = Vec::new();
    for pod in pods["items"].as_array().into_iter().flatten() {
        let meta = &pod["metadata"];
        let annotations = &meta["annotations"];
        if phase(pod) != "Running" || annotations["prometheus.io/scrape"] != "true" {
            continue;
        }
        let (Some(name), Some(ip), Some(port)) = (
            meta["name"].as_str(),
            pod["status"]["podIP"].as_str(),
            annotations["prometheus.io/port"].as_str(),
        ) else {
            continue;
        };
        targets.push(serde_json::json!({
            "targets": [format!("{ip}:{port}")],
            "labels": {"pod": name, "program": meta["labels"]["app.kubernetes.io/name"]},
        }));
    }
    let partial = file.with_extension("partial");
    if std::fs::write(&partial, Value::from(targets).to_string()).is_ok() {
        let _ = std::fs::rename(&partial, file);
    }
}

/// An overlay of deploy/app with a low lag threshold (the makers' copy of it too, and the in-flight bound at
/// twice it, as shipped), so that a dozen patients need several makers: written next to the test's other files,
/// pointing at deploy/app.
fn overlay() -> PathBuf {
    let scaled_job: Value = serde_norway::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/app/medicine-scaledjob.yaml")).unwrap(),
    )
    .unwrap();
    let env = scaled_job["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("the maker's env");
    // A JSON patch of the maker's variable `name` to `value`, tested to be where deploy/app has it.
    let set = |name: &str, value: i64| {
        let index = env
            .iter()
            .position(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("{name} in the maker's env in deploy/app"));
        let path = format!("/spec/jobTargetRef/template/spec/containers/0/env/{index}");
        format!(
            "      - {{op: test, path: {path}/name, value: {name}}}\n      - {{op: replace, path: {path}/value, value: \"{value}\"}}\n"
        )
    };
    let dir = repo_root().join("target/kube-dev/overlay");
    std::fs::create_dir_all(&dir).unwrap();
    let kustomization = format!(
        r#"# Written by harness/kube-dev/tests/quickstart.rs: deploy/app with lagThreshold {LAG_THRESHOLD}.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../../deploy/app
patches:
  - target: {{kind: ScaledJob, name: medicine-maker-0}}
    patch: |
      - {{op: replace, path: /spec/triggers/0/metadata/lagThreshold, value: "{LAG_THRESHOLD}"}}
{}{}"#,
        set("MEDECINEPUBSUB_LAG_THRESHOLD", LAG_THRESHOLD),
        set("MEDECINEPUBSUB_MAX_IN_FLIGHT_ORDERS", 2 * LAG_THRESHOLD),
    );
    std::fs::write(dir.join("kustomization.yaml"), kustomization).unwrap();
    dir
}

/// The images on the node, as `kind load docker-image` puts them there: into the real node's containerd from
/// buildah's store (where scripts/images/build.sh built them from docker/Dockerfile); done once the kubelet
/// reports them in its Node's status, where make_deploy.sh looks.
fn load_images() {
    let socket = format!(
        "{}/run/containerd.sock",
        std::env::var("KUBE_DEV_DIR").unwrap()
    );
    for image in [
        "medicine-pubsub/patient:dev",
        "medicine-pubsub/medicine:dev",
    ] {
        let archive = std::env::temp_dir().join("image.tar");
        let name = format!("docker.io/{image}");
        let output = run(
            "buildah",
            &[
                "push",
                "--quiet",
                image,
                &format!("oci-archive:{}:{name}", archive.display()),
            ],
            &[],
            Duration::from_secs(120),
        );
        assert!(
            output.status.success(),
            "buildah push {image}: {}",
            text(&output)
        );
        let output = run(
            "ctr",
            &[
                "--address",
                &socket,
                "-n",
                "k8s.io",
                "images",
                "import",
                &archive.display().to_string(),
            ],
            &[],
            Duration::from_secs(120),
        );
        assert!(
            output.status.success(),
            "ctr images import {image}: {}",
            text(&output)
        );
        let _ = std::fs::remove_file(archive);
    }
    wait_until(
        "the kubelet reports the images",
        Duration::from_secs(120),
        || {
            let node = kubectl_json(&["get", "node", REAL_NODE]);
            let names: Vec<&str> = node["status"]["images"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|i| i["names"].as_array().into_iter().flatten())
                .filter_map(Value::as_str)
                .collect();
            ["patient", "medicine"].iter().all(|image| {
                names.contains(&format!("docker.io/medicine-pubsub/{image}:dev").as_str())
            })
        },
    );
}

/// Every pod of the application (the patients, KEDA's makers) is the real node's: bound to it, with an address of
/// its bridge. None is the stand-in Node's, where kwok would only pretend to run it.
fn assert_the_application_runs_on_the_real_node() {
    let pods = pods_labelled("app.kubernetes.io/part-of=medicine-pubsub");
    assert!(
        pods.iter().any(|p| phase(p) == "Running"),
        "the application runs"
    );
    for pod in pods.iter().filter(|p| phase(p) == "Running") {
        let ip = pod["status"]["podIP"].as_str().unwrap_or_default();
        assert!(
            pod["spec"]["nodeName"] == REAL_NODE && ip.starts_with(POD_SUBNET),
            "{} is on node {} at {ip}, not on the real node",
            pod["metadata"]["name"],
            pod["spec"]["nodeName"]
        );
    }
}

/// The operators' pods are the real node's, as on a cluster of one node: KEDA's three, from the images built from
/// its source and pulled through the node's registry (their Deployments pull on every start), and the Strimzi
/// operator's stand-in. Only the broker pods are the stand-in Node's, which kwok plays.
fn assert_the_operators_run_on_the_real_node() {
    for (namespace, selector) in [
        ("keda", "app=keda-operator"),
        ("keda", "app=keda-metrics-apiserver"),
        ("keda", "app=keda-admission-webhooks"),
        ("default", "strimzi.io/kind=cluster-operator"),
    ] {
        let pods = kubectl_json(&["-n", namespace, "get", "pods", "-l", selector])["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let ready = |pod: &Value| {
            pod["status"]["containerStatuses"][0]["ready"] == true
                && pod["spec"]["nodeName"] == REAL_NODE
                && pod["status"]["podIP"]
                    .as_str()
                    .is_some_and(|ip| ip.starts_with(POD_SUBNET))
        };
        assert!(
            !pods.is_empty() && pods.iter().all(ready),
            "{selector}: every pod ready on the real node: {pods:#?}"
        );
    }
    for broker in pods_labelled("strimzi.io/kind=Kafka") {
        assert_eq!(broker["spec"]["nodeName"], "kube-dev-node", "{broker}");
    }
}

/// KEDA's metrics server serves the external metrics API through the API server's aggregator: the APIService is
/// Available (the aggregator reached the pod, proved itself with its front-proxy certificate and read the group's
/// discovery) and the group lists through it.
fn assert_the_external_metrics_api_is_served() {
    wait_until(
        "the APIService v1beta1.external.metrics.k8s.io is Available",
        Duration::from_secs(120),
        || {
            let service = kubectl_json(&["get", "apiservice", "v1beta1.external.metrics.k8s.io"]);
            service["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Available" && c["status"] == "True")
        },
    );
    let discovery = kubectl(&["get", "--raw", "/apis/external.metrics.k8s.io/v1beta1"]);
    assert!(discovery.contains("\"APIResourceList\""), "{discovery}");
}

/// KEDA's admission webhook validates the ScaledJob: the shipped one with its trigger repeated under one name is
/// refused, server side in a dry run. The CRD's schema lets it through; only KEDA's validation refuses it, so a
/// webhook that does not answer (its failure policy is Ignore) lets it through and this fails.
fn assert_keda_validates_scaled_jobs() {
    let mut job = kubectl_json(&["-n", "default", "get", "scaledjob", "medicine-maker-0"]);
    job["metadata"] = serde_json::json!({ "name": "medicine-maker-0", "namespace": "default" });
    job.as_object_mut().unwrap().remove("status");
    let mut trigger = job["spec"]["triggers"][0].clone();
    trigger["name"] = "lag".into();
    job["spec"]["triggers"] = serde_json::json!([trigger.clone(), trigger]);
    let file = std::env::temp_dir().join("medicine-maker-0-twice.json");
    std::fs::write(&file, job.to_string()).unwrap();
    let output = run(
        "kubectl",
        &[
            "apply",
            "--dry-run=server",
            "-f",
            &file.display().to_string(),
        ],
        &[],
        Duration::from_secs(60),
    );
    let _ = std::fs::remove_file(file);
    assert!(
        !output.status.success()
            && text(&output).contains("admission webhook \"vscaledjob.kb.io\" denied the request")
            && text(&output).contains("defined multiple times"),
        "KEDA's webhook refuses a ScaledJob with a repeated trigger name: {}",
        text(&output)
    );
}

/// The address of KEDA's operator pod, where it serves its metrics (port 8080).
fn keda_operator_address() -> String {
    let pods = kubectl_json(&["-n", "keda", "get", "pods", "-l", "app=keda-operator"]);
    let ip = pods["items"][0]["status"]["podIP"]
        .as_str()
        .unwrap_or_default();
    assert!(!ip.is_empty(), "KEDA's operator has an address: {pods}");
    format!("{ip}:8080")
}

/// The pods of namespace `default` that `selector` selects.
fn pods_labelled(selector: &str) -> Vec<Value> {
    kubectl_json(&["-n", "default", "get", "pods", "-l", selector])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn maker_pods() -> Vec<Value> {
    pods_labelled("app.kubernetes.io/name=medicine")
}

fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("")
}

/// Runs a README command verbatim (a console consumer never ends by itself) until `enough` lines of JSON came.
fn read_verbatim(command: &str, enough: usize) -> Vec<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let mut child = Command::new(words[0])
        .args(&words[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl exec");
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = Vec::new();
    while lines.len() < enough && Instant::now() < deadline {
        if let Ok(line) = receiver.recv_timeout(Duration::from_millis(500)) {
            if line.starts_with('{') {
                lines.push(line);
            }
        }
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    assert!(
        lines.len() >= enough,
        "`{command}` gave {} JSON lines in 60 s; stderr:\n{}",
        lines.len(),
        String::from_utf8_lossy(&output.stderr)
    );
    lines
}

/// The real node (scripts/kube-dev/node.sh): kubelet, containerd and runc, pods in network namespaces of their own.
const REAL_NODE: &str = "kube-dev-kubelet";
const POD_SUBNET: &str = "10.244.0.";

/// A Job of the ScaledJob's own pod template (as the API server keeps it), labelled for the test: the real node
/// runs it, and it finds the brokers as KEDA's makers do, by the bootstrap Service's name (cluster DNS, then
/// kube-proxy's rules to the Service's endpoint). `memory` replaces the container's memory request and limit.
fn maker_job_on_the_real_node(name: &str, memory: Option<&str>) -> Value {
    let scaled_job = kubectl_json(&["-n", "default", "get", "scaledjob", "medicine-maker-0"]);
    let mut template = scaled_job["spec"]["jobTargetRef"]["template"].clone();
    template["metadata"]["labels"] = serde_json::json!({ "medicine-pubsub.dev/test": name });
    let spec = &mut template["spec"];
    if let Some(memory) = memory {
        let resources = &mut spec["containers"][0]["resources"];
        resources["requests"]["memory"] = memory.into();
        resources["limits"]["memory"] = memory.into();
    }
    serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": name, "namespace": "default" },
        "spec": { "backoffLimit": 0, "template": template },
    })
}

fn apply_json(object: &Value) {
    let file = std::env::temp_dir().join(format!(
        "{}.json",
        object["metadata"]["name"].as_str().unwrap()
    ));
    std::fs::write(&file, object.to_string()).unwrap();
    kubectl(&["apply", "-f", &file.display().to_string()]);
    let _ = std::fs::remove_file(file);
}

/// The pod of Job `name`.
fn job_pod(name: &str) -> Option<Value> {
    pods_labelled(&format!("medicine-pubsub.dev/test={name}"))
        .into_iter()
        .next()
}

/// A line of `/proc/PID/status`.
fn proc_status(pid: &str, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

/// The machine's process of the pod's container, found by the pod's cgroup (cgroup v1, cgroupfs driver: the
/// kubelet names it after the pod's UID).
fn container_process(pod: &Value) -> Option<String> {
    let uid = pod["metadata"]["uid"].as_str()?.to_owned();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid = entry.file_name().to_string_lossy().into_owned();
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (cgroup.contains(&format!("pod{uid}")) && comm.trim() == "medicine").then_some(pid)
        })
}

/// The starved maker's memory limit and the orders written to its partitions: an order of 30 tabs in flight holds
/// about 5 KiB (`medicine-bench memory`; a maker given 1,000 at once peaked at 12 MiB in a cgroup of its own), so
/// 3,000 need about twice the limit.
const STARVED_LIMIT: &str = "10Mi";
const STARVED_LIMIT_BYTES: u64 = 10 << 20;
const STARVED_BACKLOG: usize = 3000;

/// The in-flight bound deploy/ ships (the overlay lowers it).
fn shipped_in_flight_bound() -> String {
    let manifest = std::fs::read_to_string(repo_root().join("deploy/app/medicine-scaledjob.yaml"))
        .expect("the shipped ScaledJob");
    let mut lines = manifest.lines();
    lines
        .find(|l| l.contains("name: MEDECINEPUBSUB_MAX_IN_FLIGHT_ORDERS"))
        .and_then(|_| lines.next())
        .and_then(|l| l.split("value:").nth(1))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .expect("the shipped in-flight bound")
}

/// The partitions a maker's log says it was last given (its JSON lines' `partitions assigned`).
fn assigned_partitions(log: &str) -> Vec<i32> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .rfind(|line| line["message"] == "partitions assigned")
        .and_then(|line| {
            line["partitions"].as_str().map(|list| {
                list.trim_matches(['[', ']'])
                    .split(',')
                    .filter_map(|p| p.trim().parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// The memory limit on the cgroup of process `pid` (cgroup v1), as the kernel enforces it.
fn memory_limit_of(pid: &str) -> Option<u64> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = cgroups.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    })?;
    std::fs::read_to_string(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `count` orders of `tabs` tabs each, spread over `partitions` of `tabs.orders`, by patients of their own.
fn produce_orders_to(partitions: &[i32], count: usize, tabs: u32) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", BOOTSTRAP)
        .set("enable.idempotence", "true")
        .set("linger.ms", "50")
        .create()
        .expect("orders producer");
    let base = tabs::time::now_ns();
    for i in 0..count {
        let partition = partitions[i % partitions.len()];
        // A patient's orders in one partition, as the key decides for patients.
        let order = tabs::messages::Order {
            patient_id: format!("backlog-of-the-starved-maker-{partition}-{}", i % 7),
            order_timestamp_ns: base + i as u64,
            tabs_count: tabs,
        };
        let payload = tabs::messages::to_json(&order);
        let mut record = BaseRecord::to("tabs.orders")
            .key(order.patient_id.as_bytes())
            .payload(payload.as_slice())
            .partition(partition);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, returned)) => {
                    record = returned;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("the backlog written");
}

/// The real kubelet and runtime run the ScaledJob's pod as declared: in its own network (a pod IP), as uid 65532
/// with no capability, no new privileges, the runtime's default seccomp filter and a read-only root; its
/// credentials from the Secret and its CA from the Secret volume, signed in over TLS as `medicine-maker`; its
/// liveness probed on the pod's IP; it leaves by itself as a surplus maker (exit 0). A maker whose memory limit is
/// below what it needs at the shipped in-flight bound is OOMKilled once it has a backlog, as the kubelet reports
/// it. Both Jobs are deleted after.
fn makers_on_the_real_node() {
    // Named as KEDA names the ScaledJob's Jobs: the maker's transactional id is its pod's name, and its user may
    // use only ids of that prefix (deploy/infra/users.yaml; another name is refused, as found here first).
    let extra = "medicine-maker-0-on-the-real-node";
    apply_json(&maker_job_on_the_real_node(extra, None));
    let mut pod = Value::Null;
    wait_until(
        "the real node runs the maker's pod",
        Duration::from_secs(60),
        || {
            pod = job_pod(extra).unwrap_or(Value::Null);
            pod["status"]["containerStatuses"][0]["state"]["running"].is_object()
        },
    );
    let ip = pod["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        ip.starts_with(POD_SUBNET),
        "a pod IP of the node's bridge: {pod}"
    );
    let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
    wait_until("the maker signs in", Duration::from_secs(60), || {
        kubectl(&["logs", &name]).contains(r#""user":"medicine-maker""#)
    });
    let pid = container_process(&pod).expect("the container's process on the machine");
    let uid = proc_status(&pid, "Uid");
    assert!(uid.split_whitespace().all(|id| id == "65532"), "uid: {uid}");
    assert_eq!(proc_status(&pid, "CapEff"), "0000000000000000");
    assert_eq!(proc_status(&pid, "CapBnd"), "0000000000000000");
    assert_eq!(proc_status(&pid, "NoNewPrivs"), "1");
    assert_eq!(
        proc_status(&pid, "Seccomp"),
        "2",
        "the runtime's default seccomp filter"
    );
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .expect("the container's root");
    assert!(
        root.split_whitespace()
            .nth(5)
            .unwrap()
            .split(',')
            .any(|o| o == "ro"),
        "read-only root: {root}"
    );
    // KEDA asks for one maker and the group has two: this one leaves by itself, its liveness probe (on the pod's
    // IP) never failed on the way.
    wait_until("the extra maker exits", Duration::from_secs(120), || {
        pod = job_pod(extra).unwrap_or(Value::Null);
        pod["status"]["containerStatuses"][0]["state"]["terminated"].is_object()
    });
    let status = &pod["status"]["containerStatuses"][0];
    assert_eq!(status["state"]["terminated"]["exitCode"], 0, "{pod}");
    assert_eq!(status["restartCount"], 0, "{pod}");

    // A maker under a memory limit above what its start needs (runc's init and the idle maker need about 4 MiB
    // each, as the kernel's OOM reports show) and below what it needs at the shipped in-flight bound (the overlay
    // lowers it) with a backlog: the orders are written to the partitions it holds once it holds them.
    let starved = "medicine-maker-0-under-its-need";
    let mut job = maker_job_on_the_real_node(starved, Some(STARVED_LIMIT));
    let env = job["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array_mut()
        .expect("the maker's environment");
    for var in env.iter_mut() {
        if var["name"] == "MEDECINEPUBSUB_MAX_IN_FLIGHT_ORDERS" {
            var["value"] = shipped_in_flight_bound().into();
        }
    }
    apply_json(&job);
    let mut held = Vec::new();
    wait_until(
        "the starved maker holds partitions",
        Duration::from_secs(90),
        || {
            pod = job_pod(starved).unwrap_or(Value::Null);
            // Its logs once its container runs (before, kubectl refuses them).
            let running = pod["status"]["containerStatuses"][0]["state"]["running"].is_object();
            held = match pod["metadata"]["name"].as_str() {
                Some(name) if running => assigned_partitions(&kubectl(&["logs", name])),
                _ => Vec::new(),
            };
            !held.is_empty()
        },
    );
    let pid = container_process(&pod).expect("the starved container's process");
    assert_eq!(
        memory_limit_of(&pid),
        Some(STARVED_LIMIT_BYTES),
        "the kubelet put the pod's limit on the container's cgroup"
    );
    produce_orders_to(&held, STARVED_BACKLOG, 30);
    wait_until(
        "the kubelet reports the starved maker OOMKilled",
        Duration::from_secs(90),
        || {
            pod = job_pod(starved).unwrap_or(Value::Null);
            pod["status"]["containerStatuses"][0]["state"]["terminated"].is_object()
        },
    );
    let terminated = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["reason"], "OOMKilled", "{pod}");
    assert_eq!(terminated["exitCode"], 137, "{pod}");
    // Its orders are made by the makers KEDA starts for them (the audit at the end finds each made once).
    wait_until(
        "KEDA starts makers for the starved maker's orders",
        Duration::from_secs(60),
        || running_jobs() >= 2,
    );
    let lag = Lag::new();
    wait_until(
        "the starved maker's orders are made",
        Duration::from_secs(180),
        || lag.total().is_some_and(|l| l < 100),
    );
    for job in [extra, starved] {
        kubectl(&[
            "-n",
            "default",
            "delete",
            "job",
            job,
            "--cascade=foreground",
            "--wait=true",
        ]);
    }
}

#[test]
fn the_quickstart_runs_end_to_end_on_a_real_control_plane() {
    if std::env::var_os("KUBE_DEV_DIR").is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but this test runs outside the control plane: run it through ./make_test.sh \
             (scripts/kube-dev.sh up, then scripts/kube-dev.sh exec -- cargo test ...)"
        );
        eprintln!("SKIPPED: run inside scripts/kube-dev.sh exec (./make_test.sh does)");
        return;
    }
    assert!(
        upstream().join("keda-2.20.2.yaml").is_file(),
        "the operators' release YAMLs are not at {} (set MEDICINE_PUBSUB_UPSTREAM)",
        upstream().display()
    );
    let began = Instant::now();
    let timeline = Timeline::start();

    timeline.mark("make_infra.sh");
    script_ok("make_infra.sh", &[]);
    timeline.mark("make_infra.sh again");
    script_ok("make_infra.sh", &[]);

    // make_infra.sh waited for the users: each is Ready with a Secret of its name holding its password, and the
    // cluster CA the pods trust is published.
    let users = kubectl_json(&["-n", "default", "get", "kafkausers"]);
    let mut names: Vec<&str> = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["metadata"]["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, USERS, "the KafkaUsers of deploy/infra/users.yaml");
    let passwords: Vec<String> = USERS
        .iter()
        .map(|user| {
            let password = secret(user, "password");
            assert!(password.len() >= 32, "{user}'s Secret holds a password");
            password
        })
        .collect();
    assert!(
        secret("medicine-pubsub-cluster-ca-cert", "ca.crt").starts_with("-----BEGIN CERTIFICATE"),
        "the cluster CA is published"
    );
    assert_the_operators_run_on_the_real_node();
    assert_the_external_metrics_api_is_served();

    // Before the images are on the node, make_deploy.sh refuses, and says what to do: from the nodes' images,
    // or on minikube from minikube's own list (a stand-in minikube, on the real API server).
    let refused = script("make_deploy.sh", &[]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("is on no node") && text(&refused).contains("./make_build.sh"),
        "{}",
        text(&refused)
    );
    let minikube = Sandbox::new("minikube", &["minikube"]);
    let refused = minikube.run(
        "make_deploy.sh",
        &[("STANDIN_IMAGES", "docker.io/medicine-pubsub/patient:dev")],
    );
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused)
            .contains("image medicine-pubsub/medicine:dev is on no node of context minikube"),
        "{}",
        text(&refused)
    );
    assert!(minikube
        .calls()
        .iter()
        .any(|c| c.starts_with("minikube -p minikube image ls")));
    load_images();

    // The Prometheus operator's CRDs, as a cluster running the operator has them: make_deploy.sh applies
    // deploy/monitoring's PodMonitor and PrometheusRule, which the API server validates against the CRDs' schemas.
    let operator = upstream().join("prometheus-operator-0.93.0");
    kubectl(&[
        "apply",
        "--server-side",
        "-f",
        &operator
            .join("monitoring.coreos.com_podmonitors.yaml")
            .display()
            .to_string(),
        "-f",
        &operator
            .join("monitoring.coreos.com_prometheusrules.yaml")
            .display()
            .to_string(),
    ]);
    for crd in ["podmonitors", "prometheusrules"] {
        kubectl(&[
            "wait",
            &format!("crd/{crd}.monitoring.coreos.com"),
            "--for=condition=Established",
            "--timeout=60s",
        ]);
    }

    let app = overlay();
    let deploy = [("APP_KUSTOMIZATION", app.display().to_string())];
    timeline.mark("make_deploy.sh");
    script_ok("make_deploy.sh", &deploy);
    assert_keda_validates_scaled_jobs();
    let rule = kubectl_json(&["-n", "default", "get", "prometheusrule", "medicine-pubsub"]);
    let alerts = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(
        alerts, 11,
        "the PrometheusRule as the API server keeps it: {rule}"
    );
    let monitor = kubectl_json(&["-n", "default", "get", "podmonitor", "medicine-pubsub"]);
    assert_eq!(
        monitor["spec"]["podMetricsEndpoints"][0]["port"], "metrics",
        "{monitor}"
    );
    kubectl(&[
        "-n",
        "default",
        "wait",
        "scaledjob/medicine-maker-0",
        "--for=condition=Ready",
        "--timeout=60s",
    ]);

    // One patient: KEDA starts exactly one maker, and it makes the orders.
    wait_until("a maker Job runs", Duration::from_secs(60), || {
        running_jobs() >= 1
    });
    let lag = Lag::new();
    let delivered_before = lag.deliveries();
    let one_maker_since = Instant::now();

    // The original README's commands, verbatim, while the patient orders and the maker delivers.
    let topics = kubectl(&[
        "exec",
        "-it",
        "medicine-pubsub-kafka-0",
        "--",
        "bin/kafka-topics.sh",
        "--list",
        "--bootstrap-server",
        BOOTSTRAP,
    ]);
    for topic in ["tabs.orders", "tabs.deliveries", "tabs.dlq"] {
        assert!(topics.lines().any(|l| l == topic), "{topics}");
        // Served as topics.yaml declares them, by the three brokers: three replicas in sync, two needed.
        let described = kubectl(&[
            "exec",
            "medicine-pubsub-kafka-0",
            "--",
            "bin/kafka-topics.sh",
            "--describe",
            "--topic",
            topic,
            "--bootstrap-server",
            BOOTSTRAP,
        ]);
        assert!(
            described.contains("ReplicationFactor: 3")
                && described.contains("min.insync.replicas=2"),
            "{described}"
        );
        for line in described.lines().filter(|l| l.contains("Leader:")) {
            let field = |name: &str| {
                line.split('\t')
                    .find_map(|f| f.trim().strip_prefix(name))
                    .map(|v| v.trim().split(',').count())
            };
            assert_eq!(field("Isr:"), Some(3), "{line}");
        }
    }
    let orders = read_verbatim(
        "kubectl exec -it medicine-pubsub-kafka-1 -- bin/kafka-console-consumer.sh --bootstrap-server medicine-pubsub-kafka-bootstrap:9092 --topic tabs.orders",
        2,
    );
    let order: Value = serde_json::from_str(&orders[0]).unwrap();
    assert!(
        order["tabs_count"].is_u64() && order["patient_id"].is_string(),
        "{order}"
    );
    let tabs = read_verbatim(
        "kubectl exec -it medicine-pubsub-kafka-1 -- bin/kafka-console-consumer.sh --bootstrap-server medicine-pubsub-kafka-bootstrap:9092 --topic tabs.deliveries",
        2,
    );
    let tab: Value = serde_json::from_str(&tabs[0]).unwrap();
    assert_eq!(tab["tab_pow"].as_str().map(str::len), Some(64), "{tab}");

    while one_maker_since.elapsed() < Duration::from_secs(16) {
        assert_eq!(running_jobs(), 1, "one patient needs one maker");
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(
        lag.deliveries() > delivered_before,
        "the one maker delivers tabs"
    );

    // The maker's pod as the ScaledJob declares it, beside KEDA's: a second maker, and one whose memory limit is
    // below what it needs.
    timeline.mark("makers on the real node");
    makers_on_the_real_node();

    // More patients, exactly as the README says: KEDA starts more makers and the lag comes back down.
    timeline.mark(&format!("--replicas={PATIENTS}"));
    kubectl(&[
        "scale",
        "-n",
        "default",
        "deployment",
        "patient-0",
        &format!("--replicas={PATIENTS}"),
    ]);
    wait_until("KEDA runs several makers", Duration::from_secs(90), || {
        running_jobs() >= 2
    });
    assert_the_application_runs_on_the_real_node();
    // The dashboard's KEDA panel, asked of a real Prometheus scraping the real KEDA operator (its metrics on
    // its pod's :8080) with the shipped alert rules loaded. The other panels:
    // crates/local/tests/monitoring.rs.
    let server = testkit::require_prometheus!();
    // The pods' targets, kept up to date beside the test as pods come and go.
    let targets_file = repo_root().join("target/kube-dev/prometheus-pods.json");
    write_pod_targets(&targets_file);
    let discovering = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let discovery = {
        let (discovering, file) = (Arc::clone(&discovering), targets_file.clone());
        std::thread::spawn(move || {
            while discovering.load(std::sync::atomic::Ordering::Relaxed) {
                write_pod_targets(&file);
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let prometheus = testkit::prometheus::Prometheus::start(
        &server,
        serde_json::json!([
            {
                "job_name": "keda-operator",
                "static_configs": [{"targets": [keda_operator_address()]}],
            },
            {
                "job_name": "medicine-pubsub-pods",
                "file_sd_configs": [{"files": [targets_file], "refresh_interval": "1s"}],
            },
        ]),
        &[testkit::prometheus::shipped_rules()],
    );
    let panels = testkit::dashboard::queries(&testkit::dashboard::shipped());
    let keda_panel: Vec<&testkit::dashboard::Query> =
        panels.iter().filter(|q| q.expr.contains("keda_")).collect();
    assert_eq!(keda_panel.len(), 1, "the dashboard shows KEDA's lag once");
    let lag_query = keda_panel[0].for_prometheus("20s");
    let lag_seen = |check: &dyn Fn(f64) -> bool| {
        let samples = prometheus.query(&lag_query);
        samples.len() == 1 && check(samples[0].value)
    };
    wait_until(
        "Prometheus reads the lag KEDA serves for the ScaledJob",
        Duration::from_secs(60),
        || lag_seen(&|lag| lag >= 0.0),
    );

    // The running makers hold every order waiting (their in-flight bound is twice the threshold): none waits
    // for a maker KEDA has not started.
    let mut held = 0;
    wait_until(
        "the lag stays under the running makers' in-flight bound",
        Duration::from_secs(120),
        || {
            let (jobs, lag) = (running_jobs(), lag.total().unwrap_or(i64::MAX));
            held = if jobs >= 2 && lag < 2 * LAG_THRESHOLD * jobs {
                held + 1
            } else {
                0
            };
            held >= 6
        },
    );
    // The whole dashboard, asked of Prometheus while the makers hold the load: every query answers, the orders
    // per second are the patients' (one order a second each), and the makers counted are the Jobs running.
    let panel = |legend: &str| -> Vec<testkit::prometheus::Sample> {
        let query = panels
            .iter()
            .find(|q| q.legend == legend)
            .unwrap_or_else(|| panic!("no panel query {legend:?}"));
        prometheus.query(&query.for_prometheus("10s"))
    };
    wait_until(
        "Prometheus sees the patients order and the makers the Jobs run",
        Duration::from_secs(60),
        || {
            let ordered = panel("ordered (acknowledged by Kafka)");
            let makers = panel("makers running");
            ordered.len() == 1
                && (f64::from(PATIENTS) * 0.5..=f64::from(PATIENTS) * 1.5)
                    .contains(&ordered[0].value)
                && makers.len() == 1
                && makers[0].value == running_jobs() as f64
        },
    );
    for query in &panels {
        let samples = prometheus.query(&query.for_prometheus("10s"));
        assert!(
            !samples.is_empty() && samples.iter().all(|s| s.value.is_finite()),
            "{query:?} answers {samples:?}"
        );
    }

    // A maker deleted mid-work gets SIGTERM, drains and exits 0; nothing it held is lost (audit below).
    let busy = maker_pods()
        .into_iter()
        .find(|p| phase(p) == "Running")
        .expect("a running maker");
    let busy_name = busy["metadata"]["name"].as_str().unwrap().to_owned();
    timeline.mark(&format!("delete pod {busy_name}"));
    kubectl(&["-n", "default", "delete", "pod", &busy_name, "--wait=false"]);

    // One patient: KEDA's rule asks for one maker, and nothing stops a busy Job. The surplus makers leave by
    // themselves (drain, commit, exit 0; checked with the others below) within 30 s of the backlog being made.
    timeline.mark("--replicas=1");
    kubectl(&[
        "scale",
        "-n",
        "default",
        "deployment",
        "patient-0",
        "--replicas=1",
    ]);
    wait_until("the lag is one patient's", Duration::from_secs(60), || {
        lag.total().is_some_and(|lag| lag < LAG_THRESHOLD)
    });
    let low = Instant::now();
    wait_until(
        "the makers shrink to the one KEDA's rule asks for",
        Duration::from_secs(30),
        || running_jobs() == 1,
    );
    timeline.mark(&format!(
        "1 maker, {:.1} s after the lag fell",
        low.elapsed().as_secs_f64()
    ));

    // No more patients: the makers catch up, exit 0 once idle, their Jobs complete.
    timeline.mark("--replicas=0");
    kubectl(&[
        "scale",
        "-n",
        "default",
        "deployment",
        "patient-0",
        "--replicas=0",
    ]);
    wait_until(
        "the makers catch up and exit",
        Duration::from_secs(120),
        || running_jobs() == 0 && lag.total() == Some(0),
    );
    timeline.mark("idle");
    // The dashboard's lag, as Prometheus reads it from KEDA, is back near 0 (KEDA reads the lag every 5 s).
    wait_until(
        "the dashboard's lag panel comes back to 0",
        Duration::from_secs(30),
        || lag_seen(&|lag| lag == 0.0),
    );
    assert!(
        prometheus.rule_errors().is_empty(),
        "{:?}",
        prometheus.rule_errors()
    );
    discovering.store(false, std::sync::atomic::Ordering::Relaxed);
    discovery.join().expect("the pods' discovery");
    drop(prometheus);
    let jobs = kubectl_json(&["-n", "default", "get", "jobs"]);
    for job in jobs["items"].as_array().unwrap() {
        let complete = job["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Complete" && c["status"] == "True");
        assert!(
            complete,
            "job {} did not complete: {}",
            job["metadata"]["name"], job["status"]
        );
    }
    for pod in maker_pods() {
        let code = &pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"];
        assert_eq!(code, 0, "maker {} exited {code}", pod["metadata"]["name"]);
    }
    // KEDA trims the history to the ScaledJob's successfulJobsHistoryLimit.
    let limit = kubectl_json(&["-n", "default", "get", "scaledjob", "medicine-maker-0"])["spec"]
        ["successfulJobsHistoryLimit"]
        .as_i64()
        .unwrap();
    wait_until(
        "KEDA trims the finished Jobs to the history limit",
        Duration::from_secs(30),
        || {
            kubectl_json(&["-n", "default", "get", "jobs"])["items"]
                .as_array()
                .map_or(0, Vec::len) as i64
                <= limit
        },
    );

    // Every order made, none twice: the project's auditor over everything, signed in as its own user with the
    // password and the CA Strimzi's Secrets hold (the way DEPLOY_INSTRUCTIONS.md runs it).
    let ca = repo_root().join("target/kube-dev/cluster-ca.crt");
    std::fs::write(&ca, secret("medicine-pubsub-cluster-ca-cert", "ca.crt")).unwrap();
    let audit = run(
        &repo_root()
            .join("target/release/tabs-audit")
            .display()
            .to_string(),
        &[
            "--bootstrap-servers",
            BOOTSTRAP_TLS,
            "--security-protocol",
            "SASL_SSL",
            "--sasl-mechanism",
            "SCRAM-SHA-512",
            "--sasl-username",
            "medicine-auditor",
            "--ssl-ca-location",
            &ca.display().to_string(),
            "--json",
        ],
        &[(
            "MEDECINEPUBSUB_KAFKA_SASL_PASSWORD",
            secret("medicine-auditor", "password"),
        )],
        Duration::from_secs(60),
    );
    let report: Value = serde_json::from_slice(&audit.stdout)
        .unwrap_or_else(|e| panic!("tabs-audit output: {e}\n{}", text(&audit)));
    eprintln!(
        "audit: {} orders, {} tabs, missing {}, duplicated {}, overhead p99 {} ms",
        report["orders"],
        report["delivered_tabs"],
        report["missing_tabs"],
        report["duplicated_tabs"],
        report["overhead"]["p99_ms"]
    );
    assert!(report["orders"].as_u64().unwrap() > 0);
    let evidence = || duplicates_evidence(&report);
    assert_eq!(report["missing_tabs"], 0, "{report}");
    assert_eq!(report["duplicated_tabs"], 0, "{report}\n{}", evidence());
    assert_eq!(report["passed"], true, "{report}");

    let maker = maker_pods()
        .into_iter()
        .next()
        .expect("a finished maker in the history");
    let maker_log = kubectl(&["logs", maker["metadata"]["name"].as_str().unwrap()]);
    assert!(maker_log.contains("maker stopped"), "{maker_log}");
    assert!(
        maker_log.contains(r#""user":"medicine-maker""#),
        "the maker names the user it signs in as: {maker_log}"
    );

    // No password in any output: the pods', KEDA's, the stand-ins' and the control plane's.
    let logs = all_logs();
    assert!(
        logs.len() > 5,
        "the logs are where the test looks: {logs:?}"
    );
    for (path, content) in &logs {
        for (user, password) in USERS.iter().zip(&passwords) {
            assert!(
                !content.contains(password.as_str()),
                "{}: holds the password of {user}",
                path.display()
            );
        }
    }

    // A second make_deploy.sh leaves the patients where `kubectl scale` put them.
    script_ok("make_deploy.sh", &deploy);
    assert_eq!(
        kubectl_json(&["-n", "default", "get", "deployment", "patient-0"])["spec"]["replicas"],
        0,
        "make_deploy.sh reset the replica count"
    );

    timeline.mark("make_destroy.sh");
    script_ok("make_destroy.sh", &[]);
    script_ok("make_destroy.sh", &[]);
    let left = kubectl(&["get", "all,crd", "-A", "-o", "name"]);
    let in_default = kubectl(&[
        "-n",
        "default",
        "get",
        "configmap,secret,networkpolicy",
        "-o",
        "name",
    ]);
    let remaining: Vec<&str> = left
        .lines()
        .chain(in_default.lines())
        .filter(|l| {
            !matches!(
                *l,
                "service/kubernetes"
                    | "configmap/kube-root-ca.crt"
                    // The cluster's DNS (kube-system), as on any cluster.
                    | "service/kube-dns"
                    | "deployment.apps/coredns"
            ) && !l.starts_with("replicaset.apps/coredns-")
                && !l.starts_with("pod/coredns-")
                && !l.ends_with(".kwok.x-k8s.io")
                // The Prometheus operator's CRDs are the cluster's, installed above as an operator would.
                && !l.ends_with(".monitoring.coreos.com")
        })
        .collect();
    let monitoring = kubectl(&["get", "podmonitors,prometheusrules", "-A", "-o", "name"]);
    assert!(
        monitoring.trim().is_empty(),
        "make_destroy.sh left {monitoring}"
    );
    assert!(
        remaining.is_empty(),
        "left in the API server: {remaining:?}"
    );
    let namespaces = kubectl(&["get", "namespaces", "-o", "name"]);
    assert!(!namespaces.contains("namespace/keda"), "{namespaces}");
    eprintln!(
        "quickstart end to end: {:.0}s (last sample: {:?})",
        began.elapsed().as_secs_f64(),
        timeline.last()
    );
}
