//! The images `docker/Dockerfile` builds (built by `scripts/images/build.sh` with buildah, the same file
//! `make_build.sh` hands to Docker), run the way a container runtime runs them: exported from buildah's store as
//! OCI images, unpacked by umoci into OCI bundles (the image's entrypoint, user and environment become the
//! bundle's process), and run by runc with what deploy/ asks of the kubelet: the image's user, a read-only root
//! filesystem, every capability dropped, no new privileges, the memory limit of the manifest. The patient's image
//! orders on the test broker, the maker's image makes the orders, and the audit finds every tab exactly once.
//!
//! What is not the cluster's yet: the containers share the machine's network (the test broker listens on
//! loopback) and no seccomp profile is applied (the kubelet's RuntimeDefault comes with the real node).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use deploy_check::{container, env, find, load_manifests, memory_bytes, repo_root};
use serde_json::{json, Value};
use tabs::config::TopicArgs;
use testkit::{create_topics, require_broker, unique, Proc};

const PATIENT: &str = "medicine-pubsub/patient:dev";
const MEDICINE: &str = "medicine-pubsub/medicine:dev";
/// The user distroless' `nonroot` images run as, and the one the manifests require.
const NONROOT: u64 = 65532;
/// The memory cgroups of the test's containers (cgroup v1 on the test machines) are under this one.
const CGROUP_PARENT: &str = "medicine-pubsub-images";

/// Fails the test (never skips it in CI) when the images are not built.
fn require_images() -> bool {
    let missing: Vec<&str> = [PATIENT, MEDICINE]
        .into_iter()
        .filter(|image| {
            !Command::new("buildah")
                .args(["inspect", "--type", "image", image])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "images {missing:?} are not in buildah's store: build them with scripts/images/build.sh"
    );
    assert!(std::env::var_os("CI").is_none(), "{message}");
    eprintln!("SKIPPED: {message}");
    false
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The image's OCI configuration, as buildah stores it.
fn image_config(image: &str) -> Value {
    let inspect: Value =
        serde_json::from_str(&run("buildah", &["inspect", "--type", "image", image]))
            .expect("buildah inspect prints JSON");
    inspect["OCIv1"]["config"].clone()
}

/// The container spec of deploy/'s pod that runs `image`.
fn manifest_container(image: &str) -> Value {
    let manifests = load_manifests(&repo_root().join("deploy/app"));
    let (kind, name, path, container_name) = if image == MEDICINE {
        (
            "ScaledJob",
            "medicine-maker-0",
            "/spec/jobTargetRef/template/spec",
            "medicine",
        )
    } else {
        ("Deployment", "patient-0", "/spec/template/spec", "patient")
    };
    let pod = find(&manifests, kind, name)
        .pointer(path)
        .expect("a pod template")
        .clone();
    let container = container(&pod, container_name).clone();
    assert_eq!(container["image"], image);
    container
}

/// The container's memory limit in deploy/.
fn memory_limit(image: &str) -> u64 {
    let container = manifest_container(image);
    memory_bytes(
        container["resources"]["limits"]["memory"]
            .as_str()
            .expect("a memory limit"),
    )
}

/// The manifest's plain environment of the container of `image`, but what says where Kafka is and how to sign in
/// (the test broker is a plain listener; flags give it): the maker's making time, bounds and exits as shipped.
fn shipped_settings(image: &str) -> Vec<(String, String)> {
    env(&manifest_container(image))
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
        .filter(|(name, _)| {
            !name.contains("_KAFKA_") && !name.ends_with("_TOPIC") && !name.ends_with("_GROUP")
        })
        .filter(|(name, _)| name != "MEDECINEPUBSUB_METRICS_ADDR")
        .collect()
}

/// One container of an image: its bundle unpacked under `dir`, run by runc with its state under `dir` too.
struct Container {
    id: String,
    root: PathBuf,
    process: Proc,
}

impl Container {
    /// Unpacks `image` and runs it with `args` after its entrypoint, extra `env`, and what deploy/'s container of
    /// that image asks of the runtime.
    fn start(
        dir: &Path,
        image: &str,
        args: &[&str],
        env: &[(&str, &str)],
        memory_limit: u64,
    ) -> Self {
        let id = unique(image.rsplit(['/', ':']).nth(1).expect("a named image"));
        let layout = dir.join(format!("{id}.oci"));
        let bundle = dir.join(format!("{id}.bundle"));
        run(
            "buildah",
            &[
                "push",
                "--quiet",
                image,
                &format!("oci:{}:dev", layout.display()),
            ],
        );
        run(
            "umoci",
            &[
                "unpack",
                "--image",
                &format!("{}:dev", layout.display()),
                &bundle.to_string_lossy(),
            ],
        );
        let config_path = bundle.join("config.json");
        let mut config: Value =
            serde_json::from_slice(&std::fs::read(&config_path).expect("the bundle's config"))
                .expect("JSON");
        Self::as_deployed(&mut config, args, env, memory_limit);
        config["linux"]["cgroupsPath"] = json!(format!("/{CGROUP_PARENT}/{id}"));
        std::fs::write(
            &config_path,
            serde_json::to_vec_pretty(&config).expect("JSON"),
        )
        .expect("write config");

        let root = dir.join("runc");
        let process = Proc::spawn(
            "runc",
            &[
                "--root",
                &root.to_string_lossy(),
                "run",
                "--bundle",
                &bundle.to_string_lossy(),
                &id,
            ],
            &[],
        );
        Self { id, root, process }
    }

    /// The bundle's process as umoci made it from the image (entrypoint, user, environment) with `args` appended,
    /// and the security context deploy/ asks for.
    fn as_deployed(config: &mut Value, args: &[&str], env: &[(&str, &str)], memory_limit: u64) {
        let process = &mut config["process"];
        process["terminal"] = json!(false);
        let argv = process["args"]
            .as_array_mut()
            .expect("the image's entrypoint");
        argv.extend(args.iter().map(|a| json!(a)));
        let environment = process["env"]
            .as_array_mut()
            .expect("the image's environment");
        environment.extend(env.iter().map(|(k, v)| json!(format!("{k}={v}"))));
        // capabilities.drop: [ALL]; allowPrivilegeEscalation: false.
        process["capabilities"] = json!({
            "bounding": [], "effective": [], "inheritable": [], "permitted": [], "ambient": []
        });
        process["noNewPrivileges"] = json!(true);
        // readOnlyRootFilesystem: true.
        config["root"]["readonly"] = json!(true);
        let linux = &mut config["linux"];
        linux["resources"]["memory"] = json!({ "limit": memory_limit });
        // The test broker is on the machine's loopback: the container keeps the machine's network.
        linux["namespaces"]
            .as_array_mut()
            .expect("namespaces")
            .retain(|ns| ns["type"] != "network");
    }

    /// The container's first process on the machine, once runc started it.
    async fn pid(&self) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let state = Command::new("runc")
                .args(["--root", &self.root.to_string_lossy(), "state", &self.id])
                .output()
                .expect("runc state");
            if state.status.success() {
                let state: Value = serde_json::from_slice(&state.stdout).expect("runc state JSON");
                if state["status"] == "running" {
                    return u32::try_from(state["pid"].as_u64().expect("a pid")).expect("a pid");
                }
            }
            assert!(
                Instant::now() < deadline,
                "container {} never ran: {}",
                self.id,
                self.process.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Container {
    /// The most memory the container's cgroup has held so far (page cache included, as the kernel counts it
    /// against the limit), or `None` once it is gone.
    fn peak_memory(&self) -> Option<u64> {
        std::fs::read_to_string(format!(
            "/sys/fs/cgroup/memory{}/memory.max_usage_in_bytes",
            self.cgroup()
        ))
        .ok()?
        .trim()
        .parse()
        .ok()
    }

    /// The container's memory cgroup, as the kernel names it.
    fn cgroup(&self) -> String {
        format!("/{CGROUP_PARENT}/{}", self.id)
    }

    /// The kernel log's line of an OOM kill inside this container's own memory cgroup, waiting a little for it.
    async fn kernel_oom_kill(&self) -> Option<String> {
        let tag = format!("oom_memcg={},", self.cgroup());
        for _ in 0..50 {
            let log = Command::new("dmesg").output().expect("dmesg");
            assert!(
                log.status.success(),
                "dmesg: {}",
                String::from_utf8_lossy(&log.stderr)
            );
            if let Some(line) = String::from_utf8_lossy(&log.stdout)
                .lines()
                .find(|line| line.contains("oom-kill:") && line.contains(&tag))
            {
                return Some(line.to_owned());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// Waits for the container to exit, sampling its peak memory meanwhile; its exit code and the last sample.
    async fn exit(&mut self, timeout: Duration) -> (i32, u64) {
        let deadline = Instant::now() + timeout;
        let mut peak = 0;
        loop {
            if let Some(sample) = self.peak_memory() {
                peak = peak.max(sample);
            }
            if let Some(status) = self.process.wait_timeout(Duration::from_millis(20)).await {
                return (status.code().unwrap_or(-1), peak);
            }
            assert!(
                Instant::now() < deadline,
                "container {} still running after {timeout:?}: {}",
                self.id,
                self.process.stderr_text()
            );
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .args([
                "--root",
                &self.root.to_string_lossy(),
                "delete",
                "--force",
                &self.id,
            ])
            .output();
    }
}

/// A line of `/proc/PID/status`, such as `Uid`.
fn status_field(pid: u32, field: &str) -> String {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process' status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} in the status of {pid}"))
        .trim()
        .to_owned()
}

/// What the kernel says of the running container `pid`: its user, capabilities and root mount.
fn assert_confined(pid: u32) {
    let uid = status_field(pid, "Uid");
    assert!(
        uid.split_whitespace().all(|id| id == NONROOT.to_string()),
        "runs as {NONROOT} (real, effective, saved, filesystem): {uid}"
    );
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(
            status_field(pid, caps),
            "0000000000000000",
            "{caps}: no capability"
        );
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let root = mounts
        .lines()
        .find(|line| line.split_whitespace().nth(4) == Some("/"))
        .expect("the container's root mount");
    let options = root.split_whitespace().nth(5).expect("mount options");
    assert!(
        options.split(',').any(|o| o == "ro"),
        "read-only root: {root}"
    );
}

#[test]
fn the_images_run_the_binaries_as_the_manifests_require() {
    if !require_images() {
        return;
    }
    for (image, binary) in [(PATIENT, "patient"), (MEDICINE, "medicine")] {
        let config = image_config(image);
        assert_eq!(
            config["User"], "65532:65532",
            "{image}: distroless' nonroot user"
        );
        assert_eq!(
            config["Entrypoint"],
            json!([format!("/usr/local/bin/{binary}")]),
            "{image}"
        );
        let security = &manifest_container(image)["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true, "{image}");
        assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{image}");
    }
}

/// The flags that point a container at the test broker and the run's topics and group.
struct Run {
    bootstrap: String,
    orders: String,
    deliveries: String,
    dlq: String,
    group: String,
    dir: PathBuf,
}

impl Run {
    async fn new(bootstrap: String) -> Self {
        let (orders, deliveries, dlq) = create_topics(&bootstrap, 3).await;
        let dir = std::env::temp_dir().join(unique("images"));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Self {
            bootstrap,
            orders,
            deliveries,
            dlq,
            group: unique("makers"),
            dir,
        }
    }

    fn patient(&self, patients: u64, each: u64) -> Container {
        let args = [
            "--bootstrap-servers",
            &self.bootstrap,
            "--orders-topic",
            &self.orders,
            "--patients",
            &patients.to_string(),
            "--orders",
            &each.to_string(),
            "--order-period",
            "50ms",
            "--metrics-addr",
            "127.0.0.1:0",
        ];
        Container::start(&self.dir, PATIENT, &args, &[], memory_limit(PATIENT))
    }

    /// A maker at the ScaledJob's settings, under `memory_limit`.
    fn maker(&self, memory_limit: u64) -> Container {
        let args = [
            "--bootstrap-servers",
            &self.bootstrap,
            "--orders-topic",
            &self.orders,
            "--deliveries-topic",
            &self.deliveries,
            "--dlq-topic",
            &self.dlq,
            "--group",
            &self.group,
            "--metrics-addr",
            "127.0.0.1:0",
        ];
        let settings = shipped_settings(MEDICINE);
        let mut env: Vec<(&str, &str)> = settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        env.push(("MEDECINEPUBSUB_MAKER_ID", "maker-in-a-container"));
        Container::start(&self.dir, MEDICINE, &args, &env, memory_limit)
    }

    /// Orders from `patients` patients, `tabs` tabs each, straight onto the orders topic.
    async fn produce_orders(&self, count: usize, patients: usize, tabs: u32) {
        testkit::produce_orders(
            &self.bootstrap,
            &self.orders,
            &unique("patient"),
            (count, patients, tabs),
        )
        .await;
    }

    /// Every order of the run audited: the verdict must pass, with `orders` orders.
    async fn audit(&self, orders: u64) {
        let making = shipped_settings(MEDICINE)
            .into_iter()
            .find(|(name, _)| name == "MEDECINEPUBSUB_TAB_MAKING_TIME")
            .map(|(_, value)| value)
            .expect("the shipped making time");
        let making =
            Duration::from_secs(making.trim_end_matches('s').parse().expect("whole seconds"));
        let outcome = audit::run(audit::Config::for_topics(
            self.bootstrap.clone(),
            TopicArgs::new(&self.orders, &self.deliveries, &self.dlq),
            making,
        ))
        .await
        .expect("the audit runs");
        assert!(outcome.passed, "{}", audit::render(&outcome));
        assert_eq!(outcome.report.orders, orders, "{}", audit::render(&outcome));
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_patient_image_orders_and_the_maker_image_makes_every_tab_exactly_once() {
    let bootstrap = require_broker!();
    if !require_images() {
        return;
    }
    let run = Run::new(bootstrap).await;
    let (patients, each) = (3, 20);
    let mut patient = run.patient(patients, each);
    assert_confined(patient.pid().await);
    let (code, _) = patient.exit(Duration::from_secs(60)).await;
    assert_eq!(code, 0, "{}", patient.process.stderr_text());

    let mut maker = run.maker(memory_limit(MEDICINE));
    assert_confined(maker.pid().await);
    let (code, _) = maker.exit(Duration::from_secs(120)).await;
    assert_eq!(code, 0, "{}", maker.process.stderr_text());
    run.audit(patients * each).await;
}

/// A maker whose memory limit is below what it needs is killed by the kernel (no order is lost: it committed
/// none it had not delivered), and the next maker, at the shipped limit, makes every order exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_maker_killed_at_its_memory_limit_loses_nothing() {
    let bootstrap = require_broker!();
    if !require_images() {
        return;
    }
    let run = Run::new(bootstrap).await;
    // More orders than the shipped in-flight bound, of the contract's most tabs: the maker holds all it may.
    let orders = 6000;
    run.produce_orders(orders, 50, 30).await;

    // Half of what it needs (25 MiB with 6,000 orders on 3 partitions, measured in a cgroup), twice what its start
    // needs.
    let tight = 12 << 20;
    let mut starved = run.maker(tight);
    let (code, peak) = starved.exit(Duration::from_secs(120)).await;
    assert_eq!(
        code,
        128 + 9,
        "killed (SIGKILL) at its limit of {} MiB; peak {} KiB; {}",
        tight >> 20,
        peak / 1024,
        starved.process.stderr_text()
    );
    // The kernel's word that it was killed for its own cgroup's limit, not for the machine's memory or by another
    // hand (the peak sampled before is only a sample: the last one may come before the final allocation).
    let kill = starved.kernel_oom_kill().await.unwrap_or_else(|| {
        panic!(
            "no OOM kill of cgroup {} in the kernel's log (last sampled peak {} KiB of {} KiB)",
            starved.cgroup(),
            peak / 1024,
            tight / 1024
        )
    });
    assert!(kill.contains("constraint=CONSTRAINT_MEMCG"), "{kill}");

    let shipped = memory_limit(MEDICINE);
    let mut maker = run.maker(shipped);
    let (code, peak) = maker.exit(Duration::from_secs(180)).await;
    assert_eq!(code, 0, "{}", maker.process.stderr_text());
    eprintln!(
        "at the shipped limit of {} MiB the maker peaked at {} KiB",
        shipped >> 20,
        peak / 1024
    );
    run.audit(orders as u64).await;
}
