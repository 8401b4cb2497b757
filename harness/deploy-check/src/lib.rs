//! Offline checks of the Kubernetes side of medicine-pubsub, for machines without a cluster: the manifests in
//! `deploy/` are read as data and compared with the binaries' own flags and defaults (`tests/manifests.rs`),
//! validated against the pinned schemas (`tests/kubeconform.rs`), and the `make_*.sh` scripts are run against
//! stand-in `kubectl`, `minikube`, `docker` and `curl` commands that record their calls (`tests/scripts.rs`).

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the crate lives in crates/<name>")
        .to_path_buf()
}

/// One YAML document of a manifest file, as JSON for easy indexing.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub file: PathBuf,
    pub doc: Value,
}

impl Manifest {
    /// `kind` of the resource.
    pub fn kind(&self) -> &str {
        self.doc["kind"].as_str().unwrap_or_default()
    }

    /// `metadata.name` of the resource.
    pub fn name(&self) -> &str {
        self.doc["metadata"]["name"].as_str().unwrap_or_default()
    }
}

/// Every Kubernetes resource under `dir` (recursively): kustomization files, and YAML that holds no resource
/// (Prometheus' rules file and its unit tests in `deploy/monitoring/`), excepted.
pub fn load_manifests(dir: &Path) -> Vec<Manifest> {
    let mut files = Vec::new();
    collect_yaml(dir, &mut files);
    files.sort();
    let mut manifests = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for document in serde_norway::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: not YAML: {e}", file.display()));
            if value.get("kind").is_some() {
                manifests.push(Manifest {
                    file: file.clone(),
                    doc: value,
                });
            }
        }
    }
    manifests
}

fn collect_yaml(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect_yaml(&path, files);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml")
            && path.file_name().is_some_and(|n| n != "kustomization.yaml")
        {
            files.push(path);
        }
    }
}

/// The resource of `kind` named `name`.
///
/// # Panics
/// When there is none.
pub fn find<'a>(manifests: &'a [Manifest], kind: &str, name: &str) -> &'a Value {
    &manifests
        .iter()
        .find(|m| m.kind() == kind && m.name() == name)
        .unwrap_or_else(|| panic!("no {kind} named {name} in deploy/"))
        .doc
}

/// The container `name` of a pod spec.
///
/// # Panics
/// When there is none.
pub fn container<'a>(pod_spec: &'a Value, name: &str) -> &'a Value {
    pod_spec["containers"]
        .as_array()
        .and_then(|containers| containers.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container named {name}"))
}

/// A container's environment: plain values, and `valueFrom` entries as `None`.
pub fn env(container: &Value) -> Vec<(String, Option<String>)> {
    container["env"]
        .as_array()
        .map(|vars| {
            vars.iter()
                .map(|var| {
                    (
                        var["name"].as_str().unwrap_or_default().to_owned(),
                        var["value"].as_str().map(str::to_owned),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The plain value of environment variable `name` of a container.
///
/// # Panics
/// When it is not set to a plain value.
pub fn env_value(container: &Value, name: &str) -> String {
    env(container)
        .into_iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v)
        .unwrap_or_else(|| panic!("environment variable {name} is not set"))
}

/// Bytes of a memory quantity as Kubernetes writes it (`256Mi`, `1Gi`, a plain number) or as the JVM's `-Xmx` does
/// (`512m`, `1g`: binary units too, not Kubernetes' milli).
///
/// # Panics
/// On a unit neither writes for memory.
pub fn memory_bytes(quantity: &str) -> u64 {
    let digits = quantity
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(quantity.len());
    let (number, unit) = quantity.split_at(digits);
    let number: u64 = number.parse().expect("a whole quantity");
    number
        * match unit {
            "" => 1,
            "Ki" | "k" | "K" => 1 << 10,
            "Mi" | "m" | "M" => 1 << 20,
            "Gi" | "g" | "G" => 1 << 30,
            other => panic!("unit {other} of the memory quantity {quantity}"),
        }
}
