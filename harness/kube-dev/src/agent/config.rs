//! What the node agent is told: its node, where it keeps pods, and which images it can run as which binaries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

/// The agent's configuration file (YAML), written by `scripts/kube-dev.sh`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentConfig {
    /// The Node whose pods the agent runs (kwok keeps the Node itself alive and takes its other pods).
    pub node: String,
    /// Where pods get their directories: logs, volumes, kubeconfig.
    pub state_dir: PathBuf,
    /// The API server's URL as pods with API credentials reach it.
    pub api_server: String,
    /// The cluster CA, for the kubeconfig of pods with API credentials.
    pub cluster_ca: PathBuf,
    /// Images this agent runs, by the exact image name a pod spec uses.
    pub images: BTreeMap<String, Image>,
}

/// How one image runs here: which binary stands for its entrypoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Image {
    /// The binary that is the image's entrypoint (the release build of `medicine`, the KEDA operator built from
    /// its module).
    pub binary: PathBuf,
    /// Arguments appended after the pod's own, for what the image's file system would have given the binary
    /// (`{mount:/certs}` is the directory of the volume the container mounts at `/certs`).
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// Environment added to the pod's (`{namespace}` is the pod's namespace).
    #[serde(default)]
    pub extra_env: BTreeMap<String, String>,
}

impl AgentConfig {
    /// Reads the configuration file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the agent configuration {}", path.display()))?;
        let config: Self = serde_norway::from_str(&text)
            .with_context(|| format!("parsing the agent configuration {}", path.display()))?;
        for (name, image) in &config.images {
            if !image.binary.is_file() {
                anyhow::bail!(
                    "image {name}: binary {} does not exist (build it first)",
                    image.binary.display()
                );
            }
        }
        Ok(config)
    }

    /// The image of `name`, if this agent runs it.
    pub fn image(&self, name: &str) -> Option<&Image> {
        self.images.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused() {
        let text = "node: n\nstateDir: /tmp\napiServer: https://127.0.0.1:1\nclusterCa: /ca\nimages: {}\ntypo: 1\n";
        assert!(serde_norway::from_str::<AgentConfig>(text).is_err());
    }

    #[test]
    fn images_take_extra_arguments_and_environment() {
        let text = r#"
node: n
stateDir: /tmp
apiServer: https://127.0.0.1:1
clusterCa: /ca
images:
  ghcr.io/kedacore/keda:2.20.2:
    binary: /bin/true
    extraArgs: ["--cert-dir={mount:/certs}"]
    extraEnv: {KEDA_CLUSTER_OBJECT_NAMESPACE: "{namespace}"}
"#;
        let config: AgentConfig = serde_norway::from_str(text).unwrap();
        let keda = config.image("ghcr.io/kedacore/keda:2.20.2").unwrap();
        assert_eq!(keda.extra_args, ["--cert-dir={mount:/certs}"]);
        assert!(config.image("ghcr.io/kedacore/keda:latest").is_none());
    }
}
