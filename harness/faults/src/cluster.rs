//! The three-node cluster deploy/ ships, on loopback (`KAFKA_DEV_NODES=3 scripts/kafka-dev.sh`): each node broker
//! and controller, replication factor 3, `min.insync.replicas` 2. Its nodes are stopped, killed and restarted one
//! at a time, as Strimzi's rolling restarts and a dying pod do, and what each broker logged is searched for the
//! transaction markers its coordinator skipped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use rdkafka::consumer::{BaseConsumer, Consumer};
use tabs::kafka::{reader_config, KafkaArgs, ReaderOptions};

use crate::kafka_dev::KafkaDev;

/// Nodes in the cluster, as deploy/infra/kafka-nodepool.yaml has them.
pub const NODES: usize = 3;
/// `offsets.topic.num.partitions` and `transaction.state.log.num.partitions` of the test brokers.
const INTERNAL_PARTITIONS: i32 = 8;
/// What the transaction coordinator logs when it drops the markers of a partition without a leader (Kafka 4.3's
/// `TransactionMarkerChannelManager`): the fault that lets a transaction be committed on one partition only.
pub const SKIPPED_MARKERS: &str = "Couldn't find leader endpoint for partitions";

/// Where the nodes listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// All on 127.0.0.1.
    Loopback,
    /// Each in a network namespace of its own on a bridge with the host (root), so one can be cut off.
    Namespaces,
}

/// How a node is taken down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Down {
    /// SIGTERM, waiting for its controlled shutdown (leadership moved away first).
    Clean,
    /// SIGKILL: its leaderships and its coordinators move only when the controller notices it is gone.
    Hard,
}

/// A cluster of the scenario's own. Stopped when dropped.
pub struct Cluster {
    pub bootstrap: String,
    kafka_dev: KafkaDev,
    network: Network,
    repo_root: PathBuf,
    /// When a node was taken down or cut off (the liveness verdict allows each its wait once).
    disruptions: std::sync::Mutex<Vec<std::time::SystemTime>>,
}

impl Cluster {
    /// Starts three nodes on `port` (and the eight ports after), stores under `dir` (relative to the repository).
    pub async fn start(
        repo_root: &Path,
        port: u16,
        dir: &str,
        network: Network,
    ) -> anyhow::Result<Self> {
        let kafka_dev = KafkaDev::new(repo_root, port, dir)
            .with("KAFKA_DEV_NODES", NODES.to_string())
            .with(
                "KAFKA_DEV_NETWORK",
                match network {
                    Network::Loopback => "loopback",
                    Network::Namespaces => "namespaces",
                },
            )
            // Three JVMs beside the clients on two cores: smaller heaps than the single node's.
            .with("KAFKA_DEV_HEAP", "400m");
        let mut cluster = Self {
            bootstrap: String::new(),
            kafka_dev,
            network,
            repo_root: repo_root.to_owned(),
            disruptions: std::sync::Mutex::default(),
        };
        // Nodes an earlier run left behind (a test that did not get to stop them) are not this scenario's.
        cluster.run(&["stop"]).await?;
        cluster.run(&["start"]).await?;
        cluster.bootstrap = cluster.kafka_dev.bootstrap().await?;
        cluster.wait_in_sync(Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    async fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        self.kafka_dev.run(args).await
    }

    /// Sets the cluster's `transaction.version` feature (Kafka's `kafka-features.sh`), which decides the
    /// transaction protocol Kafka's Java client speaks: 2 is KIP-890's second part, 1 the protocol before it.
    pub async fn set_transaction_version(&self, version: u16) -> anyhow::Result<()> {
        let classpath = kafka_classpath(&self.repo_root).await?;
        // New clusters start at 2; `upgrade` to the level a cluster has is accepted and changes nothing.
        let direction = if version < 2 { "downgrade" } else { "upgrade" };
        let output = tokio::process::Command::new("java")
            .args(["-cp", &classpath, "org.apache.kafka.tools.FeatureCommand"])
            .args(["--bootstrap-server", &self.bootstrap, direction])
            .args(["--feature", &format!("transaction.version={version}")])
            .output()
            .await
            .context("running Kafka's FeatureCommand")?;
        ensure!(
            output.status.success(),
            "setting transaction.version={version} failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        Ok(())
    }

    /// When nodes were taken down or cut off, so far.
    pub fn disruptions(&self) -> Vec<std::time::SystemTime> {
        self.disruptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn disrupted(&self) {
        self.disruptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(std::time::SystemTime::now());
    }

    /// Takes node `node` down.
    pub async fn take_down(&self, node: i32, how: Down) -> anyhow::Result<()> {
        self.disrupted();
        let action = match how {
            Down::Clean => "stop",
            Down::Hard => "kill",
        };
        self.run(&["node", &node.to_string(), action]).await
    }

    /// Cuts node `node` off from clients and the other nodes (its link down), or heals it (`Network::Namespaces`).
    pub async fn cut(&self, node: i32, cut: bool) -> anyhow::Result<()> {
        ensure!(
            self.network == Network::Namespaces,
            "a node can be cut off only from a cluster in network namespaces"
        );
        if cut {
            self.disrupted();
        }
        self.run(&["node", &node.to_string(), if cut { "cut" } else { "heal" }])
            .await
    }

    /// Starts node `node` again on its store and waits until it serves clients.
    pub async fn bring_up(&self, node: i32) -> anyhow::Result<()> {
        self.run(&["node", &node.to_string(), "start"]).await
    }

    /// A restart as Strimzi rolls a cluster: one node at a time, the next only once every partition has all its
    /// replicas in sync again. Returns how long the roll took.
    pub async fn rolling_restart(&self, how: Down) -> anyhow::Result<Duration> {
        let started = Instant::now();
        for node in 0..NODES as i32 {
            self.take_down(node, how).await?;
            self.bring_up(node).await?;
            self.wait_in_sync(Duration::from_secs(120)).await?;
        }
        Ok(started.elapsed())
    }

    /// Waits until every partition of every topic (the internal ones too) has a leader and all its replicas in
    /// sync.
    pub async fn wait_in_sync(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let lagging = self.partitions_out_of_sync().await;
            match lagging {
                Ok(0) => return Ok(()),
                Ok(n) if Instant::now() >= deadline => {
                    bail!("{n} partitions still lack a leader or an in-sync replica after {timeout:?}")
                }
                Err(err) if Instant::now() >= deadline => return Err(err),
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    async fn partitions_out_of_sync(&self) -> anyhow::Result<usize> {
        let bootstrap = self.bootstrap.clone();
        tokio::task::spawn_blocking(move || {
            let consumer = metadata_client(&bootstrap)?;
            let metadata = consumer.fetch_metadata(None, Duration::from_secs(5))?;
            Ok(metadata
                .topics()
                .iter()
                .flat_map(|t| t.partitions())
                .filter(|p| p.leader() < 0 || p.isr().len() < p.replicas().len())
                .count())
        })
        .await?
    }

    /// The node leading `partition` of `topic` now.
    pub async fn leader(&self, topic: &str, partition: i32) -> anyhow::Result<i32> {
        let bootstrap = self.bootstrap.clone();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let consumer = metadata_client(&bootstrap)?;
            let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(5))?;
            metadata
                .topics()
                .iter()
                .flat_map(|t| t.partitions())
                .find(|p| p.id() == partition)
                .map(|p| p.leader())
                .filter(|&leader| leader >= 0)
                .with_context(|| format!("{topic}-{partition} has no leader"))
        })
        .await?
    }

    /// The node leading the group coordinator of `group` (its partition of `__consumer_offsets`).
    pub async fn group_coordinator(&self, group: &str) -> anyhow::Result<i32> {
        self.leader("__consumer_offsets", coordinator_partition(group))
            .await
    }

    /// The node leading the transaction coordinator of `transactional_id` (its partition of
    /// `__transaction_state`).
    pub async fn transaction_coordinator(&self, transactional_id: &str) -> anyhow::Result<i32> {
        self.leader(
            "__transaction_state",
            coordinator_partition(transactional_id),
        )
        .await
    }

    /// Every line any node logged, over all its runs, saying its transaction coordinator skipped markers.
    pub fn skipped_markers(&self) -> Vec<String> {
        (0..NODES)
            .flat_map(|node| {
                let dir = self.kafka_dev.dir.join(format!("node-{node}"));
                ["server-earlier.log", "server.log"]
                    .into_iter()
                    .filter_map(move |log| std::fs::read_to_string(dir.join(log)).ok())
            })
            .flat_map(|text| {
                text.lines()
                    .filter(|line| line.contains(SKIPPED_MARKERS))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// The class path of the jars scripts/kafka-dev.sh runs, for Kafka's own tools.
pub async fn kafka_classpath(repo_root: &Path) -> anyhow::Result<String> {
    let printed = tokio::process::Command::new(repo_root.join("scripts/kafka-dev.sh"))
        .arg("classpath")
        .output()
        .await
        .context("running kafka-dev.sh classpath")?;
    ensure!(
        printed.status.success(),
        "kafka-dev.sh classpath failed: {}",
        String::from_utf8_lossy(&printed.stderr)
    );
    Ok(String::from_utf8(printed.stdout)?.trim().to_owned())
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.kafka_dev.command(&["stop"]).status();
    }
}

fn metadata_client(bootstrap: &str) -> anyhow::Result<BaseConsumer> {
    Ok(reader_config(
        &KafkaArgs::plaintext(bootstrap),
        &ReaderOptions::plain(false),
    )
    .create()?)
}

/// The partition of an internal topic that holds `key`'s coordinator: Kafka's `Utils.abs(key.hashCode()) %
/// partitions`, with Java's `String.hashCode` over UTF-16 code units.
pub fn coordinator_partition(key: &str) -> i32 {
    let hash = key.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % INTERNAL_PARTITIONS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coordinator_partition_is_kafkas() {
        // Java's hashCode: "" 0, "a" 97, "medicine-maker" 1968770801, "zzzzzzzzzzz" -1765712838 (negative: abs).
        assert_eq!(coordinator_partition(""), 0);
        assert_eq!(coordinator_partition("a"), 97 % 8);
        assert_eq!(coordinator_partition("medicine-maker"), 1_968_770_801 % 8);
        assert_eq!(coordinator_partition("zzzzzzzzzzz"), 1_765_712_838 % 8);
    }
}
