//! Brokers of a scenario's own: one stopped and restarted mid-run, one with Kafka's default group settings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use tabs::messages::{parse_order, Tab};
use testkit::nix::sys::signal::Signal;

use crate::{
    acknowledged_orders_are_in_the_topic, findings, liveness_bound, stop_patients, Crew, Findings,
    Harness, Topics,
};

/// The makers' transaction timeout (their default).
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// A broker of a scenario's own (scripts/kafka-dev.sh on other ports and another store): for the scenario that
/// stops and restarts its broker, and for the one on Kafka's default group settings. Stopped when dropped.
pub struct SecondBroker {
    pub bootstrap: String,
    script: PathBuf,
    port: u16,
    dir: PathBuf,
    /// `KAFKA_DEV_GROUP_SETTINGS`: `project` or `kafka-defaults`.
    group_settings: &'static str,
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
        format!("127.0.0.1:{}", self.port + 1)
    }

    /// The CA that signed the broker's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("tls/ca.crt")
    }

    /// Creates SCRAM users and replaces their ACLs (`scripts/kafka-dev.sh access`).
    pub fn apply_access(&self, spec: &str) -> anyhow::Result<String> {
        testkit::access::apply(&self.script, &self.dir, self.port, spec).map_err(anyhow::Error::msg)
    }

    async fn start_on(
        repo_root: &Path,
        port: u16,
        dir: &str,
        group_settings: &'static str,
    ) -> anyhow::Result<Self> {
        let broker = Self {
            bootstrap: format!("127.0.0.1:{port}"),
            script: repo_root.join("scripts/kafka-dev.sh"),
            port,
            dir: repo_root.join(dir),
            group_settings,
        };
        broker.run("start").await?;
        Ok(broker)
    }

    fn command(&self, action: &str) -> std::process::Command {
        let mut command = std::process::Command::new(&self.script);
        command
            .arg(action)
            .env("KAFKA_DEV_PORT", self.port.to_string())
            .env("KAFKA_DEV_DIR", &self.dir)
            .env("KAFKA_DEV_GROUP_SETTINGS", self.group_settings);
        command
    }

    /// Runs `scripts/kafka-dev.sh <action>` for this broker.
    pub async fn run(&self, action: &str) -> anyhow::Result<()> {
        let status = tokio::process::Command::from(self.command(action))
            .status()
            .await
            .with_context(|| format!("running kafka-dev.sh {action}"))?;
        ensure!(
            status.success(),
            "kafka-dev.sh {action} failed for the second broker"
        );
        Ok(())
    }
}

impl Drop for SecondBroker {
    fn drop(&mut self) {
        let _ = self.command("stop").status();
    }
}

/// The broker stopped (cleanly) and restarted on the same store mid-run: a broker of the scenario's own (see
/// [`SecondBroker`]), so other tests are not disturbed. Patients and makers must recover by
/// themselves: every acknowledged order in the topic and made exactly once.
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

    let stopping = Instant::now();
    broker.run("stop").await?;
    tokio::time::sleep(down).await;
    broker.run("restart").await?;
    // The outage as the makers saw it: the stop, the pause and the broker's own start (a JVM; slower on a busy
    // machine), measured rather than assumed.
    let outage = stopping.elapsed();
    tokio::time::sleep(run / 2).await;

    let acknowledged = stop_patients(&mut patients).await?;
    let outcome = harness
        .audit(&topics, making_time, Duration::from_secs(90))
        .await?;
    // A transaction caught by the stop waits for its timeout after the restart.
    let bound = liveness_bound(
        making_time,
        outage + TRANSACTION_TIMEOUT + harness.transaction_cleanup,
    );
    let mut result = findings(
        "broker stopped and restarted",
        started,
        &outcome,
        watch,
        &crew,
        bound,
    )?;
    let code = crew
        .stop(maker, Signal::SIGTERM, Duration::from_secs(60))
        .await;
    let maker = crew.proc(maker);
    ensure!(
        code == Some(0),
        "the maker did not survive the restart: {}",
        maker.stderr_text()
    );
    acknowledged_orders_are_in_the_topic(&harness.bootstrap, &topics, &acknowledged).await?;
    let aborts = maker
        .log_events("maker stopped")
        .first()
        .and_then(|e| e.get("aborts").and_then(serde_json::Value::as_u64))
        .unwrap_or(0);
    let (by_broker, lost) =
        duplicates_of_lost_commits(&harness.bootstrap, &topics, maker, result.tabs).await?;
    if by_broker > 0 {
        result.duplicated = result.duplicated.saturating_sub(by_broker);
        result.notes.push(format!(
            "the broker lost commits it had acknowledged (partition, offsets read back..committed: {lost:?}); the \
             maker named them and made those orders again, and the broker had kept {by_broker} of their tabs, \
             which are now there twice"
        ));
    }
    if !result.passed() || std::env::var_os("FAULTS_MAKER_LOG").is_some() {
        // What the maker saw is the first thing to read when this fails.
        eprintln!("maker log:\n{}", maker.stderr_text());
    }
    result.faults_injected = 1;
    result.notes.push(format!(
        "broker down {:.0} s ({:.1} s from the stop to ready again); {} orders acknowledged; {aborts} \
         transactions aborted and redone",
        down.as_secs_f64(),
        outage.as_secs_f64(),
        acknowledged.len()
    ));
    Ok(result)
}

/// Tabs duplicated because the broker lost a commit it had acknowledged (seen on this single test node stopped
/// right after a transaction: its offsets gone, its tabs sometimes kept). Counts only the duplicated tabs whose
/// order lies in a range the maker itself reported lost (partition, the offset read back up to its own commit);
/// any other duplicate stays the maker's. Returns the count and the ranges.
async fn duplicates_of_lost_commits(
    bootstrap: &str,
    topics: &Topics,
    maker: &testkit::Proc,
    tabs: u64,
) -> anyhow::Result<(u64, Vec<(i32, i64, i64)>)> {
    let lost: Vec<(i32, i64, i64)> = maker
        .log_events(medicine::LOST_COMMIT)
        .iter()
        .filter_map(|e| {
            let field = |name: &str| e.get(name).and_then(serde_json::Value::as_i64);
            Some((
                i32::try_from(field("partition")?).ok()?,
                field("group_offset").unwrap_or(0),
                field("own_commit")?,
            ))
        })
        .collect();
    if lost.is_empty() {
        return Ok((0, lost));
    }
    let orders = testkit::read_topic(
        bootstrap,
        &topics.orders,
        true,
        0,
        Duration::from_secs(2),
        Duration::from_secs(60),
    )
    .await;
    let position: HashMap<(String, u64), (i32, i64)> = orders
        .iter()
        .filter_map(|r| {
            let order = parse_order(r.value.as_deref(), 30).ok()?;
            Some((
                (order.patient_id, order.order_timestamp_ns),
                (r.partition, r.offset),
            ))
        })
        .collect();
    let delivered = testkit::read_topic(
        bootstrap,
        &topics.deliveries,
        true,
        usize::try_from(tabs)?,
        Duration::from_secs(2),
        Duration::from_secs(60),
    )
    .await;
    let mut copies: HashMap<(String, u64, u32), u64> = HashMap::new();
    for record in &delivered {
        let tab: Tab = serde_json::from_slice(record.value.as_deref().unwrap_or_default())
            .context("a tab that is not JSON")?;
        *copies
            .entry((tab.patient_id, tab.order_timestamp_ns, tab.seq_in_order))
            .or_default() += 1;
    }
    let by_broker = duplicated_in(&copies, &position, &lost);
    Ok((by_broker, lost))
}

/// The extra copies of duplicated tabs (`copies`: tab → how many times it is in the topic) whose order (`position`:
/// order → its partition and offset in the orders topic) lies in one of the `lost` ranges (partition, from, to).
fn duplicated_in(
    copies: &HashMap<(String, u64, u32), u64>,
    position: &HashMap<(String, u64), (i32, i64)>,
    lost: &[(i32, i64, i64)],
) -> u64 {
    copies
        .iter()
        .filter(|(_, &n)| n > 1)
        .filter(|((patient, ts, _), _)| {
            position
                .get(&(patient.clone(), *ts))
                .is_some_and(|&(partition, offset)| {
                    lost.iter()
                        .any(|&(p, from, to)| p == partition && (from..to).contains(&offset))
                })
        })
        .map(|(_, n)| n - 1)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_duplicates_of_orders_in_a_range_the_maker_reported_lost_are_the_brokers() {
        let tab = |patient: &str, seq| ((patient.to_owned(), 1, seq), 2);
        let copies: HashMap<_, _> = [
            tab("a", 1),
            tab("a", 2),
            tab("b", 1),
            ((String::from("c"), 1, 1), 1),
        ]
        .into_iter()
        .collect();
        let position: HashMap<_, _> = [
            ((String::from("a"), 1), (0, 5)),
            ((String::from("b"), 1), (0, 9)),
            ((String::from("c"), 1), (1, 5)),
        ]
        .into_iter()
        .collect();
        // Partition 0 read back at 4 though the maker had committed up to 7: "a" (offset 5) is in it, "b" (9) not.
        assert_eq!(duplicated_in(&copies, &position, &[(0, 4, 7)]), 2);
        assert_eq!(
            duplicated_in(&copies, &position, &[(1, 4, 7)]),
            0,
            "another partition"
        );
        assert_eq!(duplicated_in(&copies, &position, &[]), 0);
    }
}
