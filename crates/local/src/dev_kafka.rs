//! Apache Kafka started for one local run: the same KRaft broker the tests use (`scripts/kafka-dev.sh`, jars
//! from Maven Central, cached by version), on free ports and a store inside the run's report directory; stopped
//! when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::{ensure, Context as _};
use tracing::info;

/// A broker of this run's own.
pub struct DevKafka {
    script: PathBuf,
    dir: PathBuf,
    port: u16,
}

/// The script, in the source tree this binary was built from.
fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka-dev.sh")
}

/// Whether `program` is an executable on `PATH`.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|dir| std::fs::metadata(dir.join(program)).is_ok_and(|m| m.is_file()))
    })
}

/// Three consecutive free loopback ports (PLAINTEXT, SASL, controller) below the ephemeral range.
fn free_ports() -> anyhow::Result<u16> {
    let first = 20_000 + (std::process::id() % 4_000) as u16 * 2;
    (0..500u16)
        .map(|i| first + i * 3)
        .find(|&port| (port..port + 3).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()))
        .context("no three free ports for Kafka on 127.0.0.1")
}

impl DevKafka {
    /// Whether this machine can start one: the script is there, and Java and Maven are installed.
    pub fn available() -> bool {
        script().is_file() && on_path("java") && on_path("mvn")
    }

    /// Starts it with its store under `dir`, and waits until it answers.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let broker = Self {
            script: script(),
            dir: dir.to_owned(),
            port: free_ports()?,
        };
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let log = dir.join("kafka-dev.log");
        info!(
            port = broker.port,
            log = %log.display(),
            "starting Apache Kafka 4.3.1 for this run (the first time, Maven fetches its jars)"
        );
        let started = Instant::now();
        let status = tokio::process::Command::from(broker.command("start"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).context("creating the broker's log")?)
            .status()
            .await
            .context("running scripts/kafka-dev.sh")?;
        ensure!(
            status.success(),
            "Kafka did not start (see {}); run with --broker embedded to use librdkafka's mock cluster",
            log.display()
        );
        info!(
            seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
            bootstrap = %broker.bootstrap_servers(),
            "Kafka ready"
        );
        Ok(broker)
    }

    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn command(&self, action: &str) -> std::process::Command {
        let mut command = std::process::Command::new(&self.script);
        command
            .arg(action)
            .env("KAFKA_DEV_PORT", self.port.to_string())
            .env("KAFKA_DEV_DIR", &self.dir)
            // Stopped on drop; and if this process is killed (SIGKILL: no drop), by the script's watcher.
            .env("KAFKA_DEV_STOP_WITH_PID", std::process::id().to_string());
        command
    }
}

impl Drop for DevKafka {
    fn drop(&mut self) {
        let _ = self
            .command("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
