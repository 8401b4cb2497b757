//! Brokers of a scenario's own: one stopped and restarted mid-run, one with Kafka's default group settings.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::cluster::{coordinator_partition, SKIPPED_MARKERS};
use crate::kafka_dev::KafkaDev;
use crate::{
    acknowledged_orders_are_in_the_topic, findings, keep_log, liveness_bound, stop_patients,
    wind_down, Crew, Ending, Findings, Harness, Topics,
};

/// The makers' transaction timeout (their default).
pub(crate) const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// A stop of a broker and its start again.
#[derive(Debug, Clone, Copy)]
pub struct Outage {
    pub stopped_at: SystemTime,
    /// As the clients saw it: the stop, the pause and the broker's own start (a JVM; slower on a busy machine),
    /// measured rather than assumed.
    pub lasted: Duration,
}

impl Outage {
    /// When a transaction completed during the outage could have lost its markers: from the stop to the last
    /// transaction open then timing out after it.
    pub fn markers_window(&self) -> (SystemTime, SystemTime) {
        (
            self.stopped_at,
            SystemTime::now().min(self.stopped_at + self.lasted + TRANSACTION_TIMEOUT * 2),
        )
    }
}

/// A broker of a scenario's own (scripts/kafka-dev.sh on other ports and another store): for the scenario that
/// stops and restarts its broker, and for the one on Kafka's default group settings. Stopped when dropped.
pub struct SecondBroker {
    pub bootstrap: String,
    repo_root: PathBuf,
    kafka_dev: KafkaDev,
}

impl SecondBroker {
    /// Starts it on port 29192 (and the two after), store under target/kafka-dev-faults, with the project's
    /// group settings (those of the Strimzi cluster in deploy/).
    pub async fn start(repo_root: &Path) -> anyhow::Result<Self> {
        Self::start_on(repo_root, 29192, "target/kafka-dev-faults", "project").await
    }

    /// Starts one with Kafka's default group and transaction settings (a KIP-848 session of 45 s, 5 s
    /// heartbeats, 3 s initial rebalance delay), as a user's own Kafka has them: port 29196 (and the two
    /// after), store under target/kafka-dev-defaults.
    pub async fn start_with_defaults(repo_root: &Path) -> anyhow::Result<Self> {
        Self::start_on(
            repo_root,
            29196,
            "target/kafka-dev-defaults",
            "kafka-defaults",
        )
        .await
    }

    /// Starts one with the project's settings on port 29200 (and the two after), store under
    /// target/kafka-dev-access: for the tests of the shipped users and ACLs, which name the contract's own topics
    /// and group and so need a broker no other test writes to.
    pub async fn start_for_access(repo_root: &Path) -> anyhow::Result<Self> {
        Self::start_on(repo_root, 29200, "target/kafka-dev-access", "project").await
    }

    /// The TLS listener with SCRAM-SHA-512 (the port after the plain one).
    pub fn tls_bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_dev.port + 1)
    }

    /// The CA that signed the broker's certificate.
    pub fn ca(&self) -> PathBuf {
        self.kafka_dev.dir.join("tls/ca.crt")
    }

    /// Lines of this broker's log saying its transaction coordinator skipped the markers of the scenario's
    /// deliveries topic or of its group's offsets partition, within `window`.
    pub fn skipped_markers(
        &self,
        topics: &Topics,
        window: (SystemTime, SystemTime),
    ) -> Vec<String> {
        self.skipped_markers_of(&topics.deliveries, &topics.group, window)
    }

    /// The same, for the transactions' output `topic` and `group`'s offsets partition.
    pub fn skipped_markers_of(
        &self,
        topic: &str,
        group: &str,
        window: (SystemTime, SystemTime),
    ) -> Vec<String> {
        skipped_markers_in(
            &self.kafka_dev.dir,
            topic,
            coordinator_partition(group),
            window,
        )
    }

    /// Creates SCRAM users and replaces their ACLs (`scripts/kafka-dev.sh access`).
    pub fn apply_access(&self, spec: &str) -> anyhow::Result<String> {
        let KafkaDev { port, dir, .. } = &self.kafka_dev;
        testkit::access::apply(self.kafka_dev.script(), dir, *port, spec)
            .map_err(anyhow::Error::msg)
    }

    async fn start_on(
        repo_root: &Path,
        port: u16,
        dir: &str,
        group_settings: &'static str,
    ) -> anyhow::Result<Self> {
        let broker = Self {
            bootstrap: format!("127.0.0.1:{port}"),
            repo_root: repo_root.to_path_buf(),
            // `KAFKA_DEV_GROUP_SETTINGS`: `project` or `kafka-defaults`.
            kafka_dev: KafkaDev::new(repo_root, port, dir)
                .with("KAFKA_DEV_GROUP_SETTINGS", group_settings),
        };
        broker.run("start").await?;
        Ok(broker)
    }

    /// Stops the broker cleanly, leaves it down for `down`, and starts it again on the same store.
    pub async fn bounce(&self, down: Duration) -> anyhow::Result<Outage> {
        let stopping = Instant::now();
        let stopped_at = SystemTime::now();
        self.run("stop").await?;
        tokio::time::sleep(down).await;
        self.run("restart").await?;
        Ok(Outage {
            stopped_at,
            lasted: stopping.elapsed(),
        })
    }

    /// Runs `scripts/kafka-dev.sh <action>` for this broker.
    pub async fn run(&self, action: &str) -> anyhow::Result<()> {
        self.kafka_dev.run(&[action]).await
    }
}

impl Drop for SecondBroker {
    fn drop(&mut self) {
        let _ = self.kafka_dev.command(&["stop"]).status();
    }
}

/// The broker stopped (cleanly) and restarted on the same store mid-run: a broker of the scenario's own (see
/// [`SecondBroker`]), so other tests are not disturbed. Patients and makers must recover by themselves: every
/// acknowledged order in the topic and made exactly once.
///
/// One node is not where Kafka promises exactly-once: while it stops or re-registers its partitions have no
/// leader, and its transaction coordinator may drop a transaction's markers and complete it anyway (Kafka's own
/// client suffers it too: documentation/RELIABILITY.md). So a duplicate here is excused only by the broker's own
/// word: its log, during this restart, saying it skipped the markers of this scenario's deliveries topic or of the
/// group's offsets partition. The maker's log is never evidence. The scenarios that hold the promise run on three
/// nodes ([`crate::replicated`]).
pub async fn restart_broker(
    harness: &Harness,
    broker: &SecondBroker,
    down: Duration,
    run: Duration,
) -> anyhow::Result<Findings> {
    let started = Instant::now();
    let topics = Topics::create(&harness.bootstrap).await;
    // The maker's start-up timeout (60 s) outlasts the broker's downtime.
    let making_time = Duration::from_millis(200);
    let making = ["--tab-making-time", "200ms", "--idle-exit-after", "0"];
    let watch = harness.watch(&topics)?;
    let mut patients = harness.patients(&topics, 20, "200ms");
    let mut crew = Crew::default();
    let maker = crew.add(harness.maker(&topics, &making));
    tokio::time::sleep(run / 2).await;

    let outage = broker.bounce(down).await?;
    tokio::time::sleep(run / 2).await;

    let acknowledged = stop_patients(&mut patients).await?;
    // A transaction caught by the stop waits for its timeout after the restart.
    let bound = liveness_bound(
        making_time,
        outage.lasted + TRANSACTION_TIMEOUT + harness.transaction_cleanup,
    );
    let ending = Ending {
        scenario: "broker stopped and restarted (one node)".to_owned(),
        started,
        making_time,
        wait: Duration::from_secs(90),
        bound,
    };
    let (outcome, samples) = wind_down(harness, &topics, &mut crew, watch, &ending).await?;
    let mut result = findings(
        ending.scenario.clone(),
        started,
        &outcome,
        &samples,
        &crew,
        &[],
        bound,
    )?;
    acknowledged_orders_are_in_the_topic(&harness.bootstrap, &topics, &acknowledged).await?;
    let maker = crew.proc(maker);
    let aborts = maker
        .log_events("maker stopped")
        .first()
        .and_then(|e| e.get("aborts").and_then(serde_json::Value::as_u64))
        .unwrap_or(0);
    let skips = broker.skipped_markers(&topics, outage.markers_window());
    if result.duplicated > 0 && !skips.is_empty() {
        result.broker_fault = skips;
    }
    if !result.passed() || std::env::var_os("FAULTS_MAKER_LOG").is_some() {
        // What the maker saw is the first thing to read when this fails: kept in a file, its end printed, so the
        // findings printed after it stay in sight.
        keep_log(
            &broker.repo_root,
            &format!("restart-maker-{}", maker.pid()),
            &maker.stderr_text(),
        )?;
    }
    result.faults_injected = 1;
    result.notes.push(format!(
        "broker down {:.0} s ({:.1} s from the stop to ready again); {} orders acknowledged; {aborts} \
         transactions aborted and redone",
        down.as_secs_f64(),
        outage.lasted.as_secs_f64(),
        acknowledged.len()
    ));
    Ok(result)
}

/// Lines of a broker's log (all its runs: `server-earlier.log`, then `server.log`) in which its transaction
/// coordinator says it skipped the markers of `topic`'s partitions or of `offsets_partition` of
/// `__consumer_offsets`, stamped within `window`.
pub(crate) fn skipped_markers_in(
    dir: &Path,
    topic: &str,
    offsets_partition: i32,
    window: (SystemTime, SystemTime),
) -> Vec<String> {
    let offsets = format!("__consumer_offsets-{offsets_partition}");
    let names_ours = |line: &str| {
        let listed = line
            .split_once("partitions Set(")
            .map_or("", |(_, rest)| rest.split(')').next().unwrap_or(""));
        listed.split(',').map(str::trim).any(|partition| {
            partition == offsets
                || partition
                    .rsplit_once('-')
                    .is_some_and(|(name, number)| name == topic && number.parse::<u32>().is_ok())
        })
    };
    ["server-earlier.log", "server.log"]
        .iter()
        .filter_map(|log| std::fs::read_to_string(dir.join(log)).ok())
        .flat_map(|text| {
            text.lines()
                .filter(|line| line.contains(SKIPPED_MARKERS) && names_ours(line))
                .filter(|line| log_time(line).is_some_and(|at| window.0 <= at && at <= window.1))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The time a broker log line is stamped with (`[2026-12-06 14:05:03,123] …`, UTC: the test brokers run with
/// `-Duser.timezone=UTC`).
fn log_time(line: &str) -> Option<SystemTime> {
    let stamp = line.strip_prefix('[')?.split(']').next()?;
    humantime::parse_rfc3339_weak(&stamp.replacen(',', ".", 1)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_skips_of_the_scenarios_partitions_within_the_window_are_evidence() {
        let dir = std::env::temp_dir().join(testkit::unique("skips"));
        std::fs::create_dir_all(&dir).unwrap();
        let line = |at: &str, partitions: &str| {
            format!(
                "[2026-12-06 14:05:{at},123] INFO [Transaction Marker Channel Manager 1]: {SKIPPED_MARKERS} \
                 Set({partitions}) while trying to send transaction markers for p, these partitions are likely \
                 deleted already and hence can be skipped (kafka.coordinator.transaction.TransactionMarkerChannelManager)"
            )
        };
        std::fs::write(
            dir.join("server-earlier.log"),
            [
                line("03", "t-1.deliveries-2, other-0"),
                line("04", "__consumer_offsets-5"),
            ]
            .join("\n"),
        )
        .unwrap();
        std::fs::write(dir.join("server.log"), line("30", "t-1.deliveries-0")).unwrap();
        let at = |s: u64| {
            humantime::parse_rfc3339("2026-12-06T14:05:00Z").unwrap() + Duration::from_secs(s)
        };
        let window = (at(0), at(10));
        assert_eq!(
            skipped_markers_in(&dir, "t-1.deliveries", 3, window).len(),
            1
        );
        assert_eq!(
            skipped_markers_in(&dir, "t-1.deliveries", 5, window).len(),
            2
        );
        assert_eq!(
            skipped_markers_in(&dir, "t-2.deliveries", 3, window).len(),
            0,
            "another topic"
        );
        assert_eq!(
            skipped_markers_in(&dir, "t-1.deliveries", 3, (at(20), at(40))).len(),
            1,
            "the later run"
        );
        assert_eq!(
            skipped_markers_in(&dir, "t-1", 3, window).len(),
            0,
            "a prefix is not the topic"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
