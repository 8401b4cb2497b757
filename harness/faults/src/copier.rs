//! Kafka's own consume-transform-produce loop as the yardstick: `TransactionalMessageCopier` (kafka-tools, the
//! Java client), with which Kafka's system tests prove its transactions (`transactions_test.py`: copy an input
//! topic to an output topic while brokers are bounced, then find every input record in the output exactly once).
//! Here it copies the patients' orders through the same faults as the makers, and is judged the same way.
//!
//! Each copier runs in group mode with the group metadata API (KIP-447's fencing) and copies what its partitions
//! held when it was last assigned them, then exits; the harness starts it again at once, as KEDA starts a Job
//! while there is lag. Its transactional id stays the same across its runs, so each run fences the one before.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use testkit::nix::sys::signal::Signal;
use testkit::Proc;

/// The copier's transaction timeout: the makers' (their default), so a dead copier's open transaction holds its
/// partitions back as long as a dead maker's.
const TRANSACTION_TIMEOUT_MS: &str = "10000";
/// Records per transaction (its `max.poll.records`) on three nodes: the makers commit every 20 ms, which at the
/// scenarios' load is a few dozen orders; Kafka's system test uses 200.
pub const TRANSACTION_SIZE: u32 = 100;

/// One copier slot: its transactional id and the run in progress.
struct Slot {
    transactional_id: String,
    run: Option<Proc>,
}

/// The copiers of a scenario, restarted whenever one ends.
pub struct Copiers {
    classpath: String,
    bootstrap: String,
    input: String,
    output: String,
    group: String,
    transaction_size: String,
    slots: Vec<Slot>,
    /// Runs started, and the runs that ended otherwise than with exit 0 (how, and the end of their output).
    pub runs: u64,
    pub failures: Vec<String>,
}

impl Copiers {
    /// `count` copiers of `input` to `output` in `group`, `transaction_size` records a transaction, on the jars of
    /// scripts/kafka-dev.sh.
    pub async fn start(
        repo_root: &Path,
        bootstrap: &str,
        (input, output, group): (&str, &str, &str),
        count: usize,
        transaction_size: u32,
    ) -> anyhow::Result<Self> {
        let mut copiers = Self {
            classpath: crate::cluster::kafka_classpath(repo_root).await?,
            bootstrap: bootstrap.to_owned(),
            input: input.to_owned(),
            output: output.to_owned(),
            group: group.to_owned(),
            transaction_size: transaction_size.to_string(),
            slots: (0..count)
                .map(|i| Slot {
                    transactional_id: format!("{group}-copier-{i}"),
                    run: None,
                })
                .collect(),
            runs: 0,
            failures: Vec::new(),
        };
        copiers.restart_ended().await;
        Ok(copiers)
    }

    /// The transactional ids of the copiers.
    pub fn transactional_ids(&self) -> Vec<String> {
        self.slots
            .iter()
            .map(|s| s.transactional_id.clone())
            .collect()
    }

    fn spawn(&self, transactional_id: &str) -> Proc {
        Proc::spawn_with_stdout(
            "java",
            &[
                "-Xmx128m",
                "-cp",
                &self.classpath,
                "org.apache.kafka.tools.TransactionalMessageCopier",
                "--broker-list",
                &self.bootstrap,
                "--input-topic",
                &self.input,
                "--input-partition",
                "0",
                "--output-topic",
                &self.output,
                "--consumer-group",
                &self.group,
                "--transactional-id",
                transactional_id,
                "--transaction-size",
                &self.transaction_size,
                "--transaction-timeout",
                TRANSACTION_TIMEOUT_MS,
                "--group-mode",
                "--use-group-metadata",
            ],
            &[],
        )
    }

    /// Starts again every copier that ended; records those that failed.
    pub async fn restart_ended(&mut self) {
        for index in 0..self.slots.len() {
            let ended = match &mut self.slots[index].run {
                None => true,
                Some(run) => match run.wait_timeout(Duration::ZERO).await {
                    Some(status) => {
                        record(&mut self.failures, status, run);
                        true
                    }
                    None => false,
                },
            };
            if ended {
                let run = self.spawn(&self.slots[index].transactional_id);
                self.slots[index].run = Some(run);
                self.runs += 1;
            }
        }
    }

    /// How many runs were started, how many ended other than with exit 0, and how the first did.
    pub fn runs_note(&self) -> String {
        format!(
            "{} copier runs, {} ended other than with exit 0{}",
            self.runs,
            self.failures.len(),
            self.failures
                .first()
                .map(|f| format!(" (the first: {f})"))
                .unwrap_or_default()
        )
    }

    /// Lets every copier finish (each exits by itself once it has copied what it was assigned); one still running
    /// after `timeout` is sent SIGTERM.
    pub async fn finish(&mut self, timeout: Duration) {
        for index in 0..self.slots.len() {
            if let Some(mut run) = self.slots[index].run.take() {
                let status = match run.wait_timeout(timeout).await {
                    Some(status) => status,
                    None => {
                        run.signal(Signal::SIGTERM);
                        match run.wait_timeout(Duration::from_secs(30)).await {
                            Some(status) => status,
                            None => continue,
                        }
                    }
                };
                record(&mut self.failures, status, &run);
            }
        }
    }
}

/// Notes a copier run that ended otherwise than with exit 0: how, and the last lines it wrote to stderr.
fn record(failures: &mut Vec<String>, status: ExitStatus, run: &Proc) {
    if status.code() != Some(0) {
        let tail: Vec<String> = run.stderr_lines().into_iter().rev().take(5).collect();
        failures.push(format!("{status}: {}", tail.join(" | ")));
    }
}

/// How many records of `input` are missing from `output`, and how many are there more than once, by value
/// (every order is its own: a patient id and a timestamp).
pub fn compare(input: &[testkit::Record], output: &[testkit::Record]) -> (u64, u64) {
    let mut copies: HashMap<&[u8], u64> = HashMap::new();
    for record in output {
        *copies
            .entry(record.value.as_deref().unwrap_or_default())
            .or_default() += 1;
    }
    let mut missing = 0;
    let mut duplicated = 0;
    for record in input {
        match copies.get(record.value.as_deref().unwrap_or_default()) {
            None | Some(0) => missing += 1,
            Some(&n) => duplicated += n - 1,
        }
    }
    (missing, duplicated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &str) -> testkit::Record {
        testkit::Record {
            partition: 0,
            offset: 0,
            key: None,
            value: Some(value.as_bytes().to_vec()),
        }
    }

    #[test]
    fn every_input_record_is_in_the_output_once() {
        let input = [record("a"), record("b"), record("c")];
        assert_eq!(
            compare(&input, &[record("c"), record("a"), record("b")]),
            (0, 0)
        );
        assert_eq!(compare(&input, &[record("a"), record("b")]), (1, 0));
        assert_eq!(
            compare(
                &input,
                &[
                    record("a"),
                    record("a"),
                    record("b"),
                    record("c"),
                    record("c")
                ]
            ),
            (0, 2)
        );
    }
}
