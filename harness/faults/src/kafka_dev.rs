//! `scripts/kafka-dev.sh` as the scenarios run it, on ports and a store of their own: one wrapper for the single
//! brokers ([`crate::SecondBroker`]) and the three-node [`crate::Cluster`].

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context as _};

pub struct KafkaDev {
    script: PathBuf,
    /// The first node's plain port (its TLS listener is the next one).
    pub port: u16,
    /// The store, one directory per node under it.
    pub dir: PathBuf,
    env: Vec<(&'static str, String)>,
}

impl KafkaDev {
    /// The script of `repo_root` for nodes from `port`, their store under `dir` (relative to the repository).
    pub fn new(repo_root: &Path, port: u16, dir: &str) -> Self {
        Self {
            script: repo_root.join("scripts/kafka-dev.sh"),
            port,
            dir: repo_root.join(dir),
            env: Vec::new(),
        }
    }

    /// One more `KAFKA_DEV_*` setting for every run.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.env.push((name, value.into()));
        self
    }

    pub fn script(&self) -> &Path {
        &self.script
    }

    /// The script with `args`, its ports and store, and the settings given.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(&self.script);
        command
            .args(args)
            .env("KAFKA_DEV_PORT", self.port.to_string())
            .env("KAFKA_DEV_DIR", &self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs the script with `args`; an error unless it succeeds.
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        let status = tokio::process::Command::from(self.command(args))
            .status()
            .await
            .with_context(|| format!("running kafka-dev.sh {}", args.join(" ")))?;
        ensure!(
            status.success(),
            "kafka-dev.sh {} failed (port {}, store {})",
            args.join(" "),
            self.port,
            self.dir.display()
        );
        Ok(())
    }

    /// What `kafka-dev.sh env` prints as the bootstrap servers.
    pub async fn bootstrap(&self) -> anyhow::Result<String> {
        let printed = tokio::process::Command::from(self.command(&["env"]))
            .output()
            .await?;
        Ok(String::from_utf8(printed.stdout)?
            .lines()
            .find_map(|l| l.strip_prefix("export KAFKA_BOOTSTRAP_SERVERS="))
            .context("kafka-dev.sh env printed no KAFKA_BOOTSTRAP_SERVERS")?
            .to_owned())
    }
}
