//! The scripts on each kind of kubectl context (minikube, kind, k3d, any other cluster), against the real API
//! server of `scripts/kube-dev.sh`. kubectl is real; minikube, docker, kind and k3d are stand-ins (none can run
//! here) that record their calls (`tests/standin/standin.sh`). None of these tests changes the cluster.

mod support;

use std::process::{Command, Output};

use serde_json::Value;
use support::{inside_control_plane, repo_root, Sandbox};

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The images the manifests in deploy/ run.
fn manifest_images() -> Vec<String> {
    let mut images = Vec::new();
    for file in [
        "deploy/app/patient.yaml",
        "deploy/app/medicine-scaledjob.yaml",
    ] {
        let doc: Value =
            serde_norway::from_str(&std::fs::read_to_string(repo_root().join(file)).unwrap())
                .unwrap();
        let pod = if doc["kind"] == "ScaledJob" {
            &doc["spec"]["jobTargetRef"]["template"]["spec"]
        } else {
            &doc["spec"]["template"]["spec"]
        };
        for container in pod["containers"].as_array().unwrap() {
            images.push(container["image"].as_str().unwrap().to_owned());
        }
    }
    images.sort();
    images
}

/// `-t IMAGE` of each `docker build` call.
fn built(calls: &[String]) -> Vec<String> {
    let mut tags: Vec<String> = calls
        .iter()
        .filter(|c| c.starts_with("docker build"))
        .map(|c| {
            let words: Vec<&str> = c.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "-t").expect("a tag");
            words[at + 1].to_owned()
        })
        .collect();
    tags.sort();
    tags
}

/// What `minikube profile list -o json` prints for one profile of this size (the fields the script reads, in
/// minikube's order, among others).
fn profile_json(cpus: u32, memory_mib: u32) -> String {
    format!(
        r#"{{"invalid":[],"valid":[{{"Name":"minikube","Status":"OK","Config":{{"Name":"minikube","KeepContext":false,"EmbedCerts":false,"MinikubeISO":"","KicBaseImage":"gcr.io/k8s-minikube/kicbase:v0.0.48","Memory":{memory_mib},"CPUs":{cpus},"DiskSize":20000,"Driver":"docker","Nodes":[{{"Name":"","IP":"192.168.49.2","Port":8443,"ControlPlane":true,"Worker":true}}]}},"Active":true}}]}}"#
    )
}

#[test]
fn make_infra_on_minikube_judges_the_profiles_size_not_the_nodes() {
    if !inside_control_plane() {
        return;
    }
    // The node reports 6 CPUs and 8 GiB (as the docker driver reports the host's), the profile has 2 and 4000.
    let sandbox = Sandbox::new("minikube", &["minikube"]);
    let output = sandbox.run(
        "make_infra.sh",
        &[("STANDIN_PROFILE_JSON", &profile_json(2, 4000))],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("has 2 CPUs and 4000 MiB") && err.contains("--cpus=6 --memory=8g"),
        "{err}"
    );
    let operator = Command::new("kubectl")
        .args(["get", "deployment", "strimzi-cluster-operator"])
        .output()
        .unwrap();
    assert!(!operator.status.success(), "nothing was installed");
    assert!(sandbox.leftovers().is_empty(), "{:?}", sandbox.leftovers());
}

#[test]
fn a_script_that_fails_half_way_leaves_no_temporary_files() {
    if !inside_control_plane() {
        return;
    }
    // The cluster is big enough; the Strimzi manifest cannot be read: make_infra.sh stops in its second step.
    let sandbox = Sandbox::new("kind-medicine", &[]);
    let output = sandbox.run(
        "make_infra.sh",
        &[("STRIMZI_INSTALL_MANIFEST", "/nonexistent/strimzi.yaml")],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("/nonexistent/strimzi.yaml is not a readable file"),
        "{}",
        stderr(&output)
    );
    assert!(sandbox.leftovers().is_empty(), "{:?}", sandbox.leftovers());
}

#[test]
fn scripts_on_minikube_say_how_to_start_it_when_it_is_stopped() {
    if !inside_control_plane() {
        return;
    }
    let sandbox = Sandbox::new("minikube", &["minikube", "docker"]);
    for script in [
        "make_infra.sh",
        "make_build.sh",
        "make_deploy.sh",
        "make_destroy.sh",
    ] {
        let output = sandbox.run(script, &[("STANDIN_HOST", "Stopped")]);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{script}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("minikube start --cpus=6 --memory=8g"),
            "{script}: {}",
            stderr(&output)
        );
    }
    assert!(!sandbox.calls().iter().any(|c| c.starts_with("docker")));
}

#[test]
fn make_build_on_minikube_stops_when_docker_env_fails_and_says_which_runtime() {
    if !inside_control_plane() {
        return;
    }
    let sandbox = Sandbox::new("minikube", &["minikube", "docker"]);
    let message = "X Exiting due to MK_USAGE: The docker-env command is only compatible with the \"docker\" runtime, but this cluster was configured to use the \"containerd\" runtime.";
    let output = sandbox.run("make_build.sh", &[("STANDIN_DOCKER_ENV_ERROR", message)]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("only compatible with the \"docker\" runtime"),
        "{err}"
    );
    assert!(err.contains("--container-runtime=docker"), "{err}");
    assert!(
        !sandbox.calls().iter().any(|c| c.starts_with("docker")),
        "no image is built against the wrong daemon: {:?}",
        sandbox.calls()
    );
}

#[test]
fn make_build_on_minikube_builds_the_manifests_images_in_minikubes_daemon() {
    if !inside_control_plane() {
        return;
    }
    let sandbox = Sandbox::new("minikube", &["minikube", "docker"]);
    let output = sandbox.run("make_build.sh", &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let calls = sandbox.calls();
    assert_eq!(built(&calls), manifest_images(), "{calls:?}");
    for call in calls.iter().filter(|c| c.starts_with("docker build")) {
        assert!(
            call.contains("-f docker/Dockerfile")
                && call.ends_with("[DOCKER_HOST=tcp://192.168.49.2:2376]"),
            "{call}"
        );
    }
}

#[test]
fn make_build_on_kind_and_k3d_loads_the_images_into_that_cluster() {
    if !inside_control_plane() {
        return;
    }
    for (context, tool, load) in [
        (
            "kind-medicine",
            "kind",
            "kind load docker-image medicine-pubsub/medicine:dev --name medicine",
        ),
        (
            "k3d-medicine",
            "k3d",
            "k3d image import medicine-pubsub/medicine:dev -c medicine",
        ),
    ] {
        let sandbox = Sandbox::new(context, &["docker", tool]);
        let output = sandbox.run("make_build.sh", &[]);
        assert!(output.status.success(), "{context}: {}", stderr(&output));
        let calls = sandbox.calls();
        assert_eq!(built(&calls), manifest_images(), "{calls:?}");
        assert!(
            calls.iter().any(|c| c.starts_with(load)),
            "{context}: {calls:?}"
        );
        assert!(
            !calls.iter().any(|c| c.starts_with("minikube")),
            "{calls:?}"
        );
    }
}

#[test]
fn make_build_elsewhere_pushes_to_a_registry_or_says_to_set_one() {
    if !inside_control_plane() {
        return;
    }
    let sandbox = Sandbox::new("production", &["docker"]);
    let output = sandbox.run("make_build.sh", &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("IMAGE_REGISTRY"),
        "{}",
        stderr(&output)
    );
    assert!(sandbox.calls().is_empty(), "{:?}", sandbox.calls());

    let output = sandbox.run(
        "make_build.sh",
        &[("IMAGE_REGISTRY", "registry.example.com/team")],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let calls = sandbox.calls();
    assert!(
        calls
            .iter()
            .any(|c| c
                .starts_with("docker push registry.example.com/team/medicine-pubsub/medicine:dev")),
        "{calls:?}"
    );
}

#[test]
fn make_deploy_needs_the_infrastructure_first() {
    if !inside_control_plane() {
        return;
    }
    let sandbox = Sandbox::new("kind-medicine", &[]);
    let output = sandbox.run("make_deploy.sh", &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("run ./make_infra.sh first"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn scripts_say_so_when_the_cluster_does_not_answer_or_there_is_no_context() {
    if !inside_control_plane() {
        return;
    }
    let sandbox = Sandbox::new("kind-medicine", &[]);
    let kubeconfig = sandbox.root.join("kubeconfig");
    let moved = Command::new("kubectl")
        .args([
            "config",
            "set-cluster",
            "kube-dev",
            "--server=https://127.0.0.1:1",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    assert!(moved.status.success());
    for script in ["make_infra.sh", "make_deploy.sh", "make_destroy.sh"] {
        let output = sandbox.run(script, &[]);
        assert_eq!(output.status.code(), Some(1), "{script}");
        assert!(
            stderr(&output).contains("of kubectl context 'kind-medicine' does not answer"),
            "{script}: {}",
            stderr(&output)
        );
    }
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\n").unwrap();
    let output = sandbox.run("make_infra.sh", &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("kubectl has no current context"),
        "{}",
        stderr(&output)
    );
}
