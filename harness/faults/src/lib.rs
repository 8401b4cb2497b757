//! The fault campaign: the system under steady load while something goes wrong, judged by the auditor (nothing
//! lost, nothing duplicated, every bad record dead-lettered) and by a liveness verdict (while a maker holds a
//! partition with backlog, its committed offset advances within a bound).
//!
//! - makers killed with SIGKILL at random, and sent SIGTERM while busy ([`kill_makers`], [`sigterm_storm`]);
//! - partitions moving while their maker is saturated at its in-flight bound ([`saturated_churn`]);
//! - the broker stopped and restarted ([`restart_broker`]), or run with Kafka's default group settings
//!   ([`SecondBroker::start_with_defaults`]);
//! - a flood of random and mutated records, and records at the broker's size limit ([`hostile_flood`],
//!   [`oversized_records`]).
//!
//! Short versions run in `./make_test.sh` (this crate's tests); `fault-campaign --long` runs the long ones and
//! prints the figures of documentation/RELIABILITY.md. Patients and makers are child processes of a multi-call
//! binary (`fault-campaign patient …`, `fault-campaign medicine …`: the real programs).

#![forbid(unsafe_code)]

mod broker;
pub mod cluster;
pub mod copier;
mod crew;
mod ending;
mod hostile;
mod kafka_dev;
mod kill;
mod reference;
pub mod replicated;

use std::path::PathBuf;
use std::time::Duration;

use audit::liveness::{Stall, Watch};
use tabs::kafka::KafkaArgs;
use testkit::Proc;

pub use broker::{restart_broker, SecondBroker};
pub use crew::Crew;
use ending::{
    acknowledged_orders_are_in_the_topic, conclude, drained, findings, keep_log, stop_patients,
    wind_down, Ending,
};
pub use hostile::{hostile_flood, oversized_records};
pub use kill::{kill_makers, saturated_churn, sigterm_storm};
pub use reference::copiers_through_a_restart;

/// The makers' commit interval (their default): part of the liveness bound.
const COMMIT_INTERVAL: Duration = Duration::from_millis(20);

/// What the liveness bound allows beyond the contract's three making times and one commit interval: the
/// watch's sampling (every 500 ms), the group's round trips after an assignment, and one transaction of a maker
/// at full load on a 2-core machine shared with the broker and the load (up to 3 s measured under the hostile
/// flood). A frozen partition stands still for good, far beyond it.
const LIVENESS_SLACK: Duration = Duration::from_secs(5);

/// How to start the programs and where Kafka is.
#[derive(Debug, Clone)]
pub struct Harness {
    /// A multi-call binary: `<exe> patient …` and `<exe> medicine …`.
    pub exe: PathBuf,
    pub bootstrap: String,
    /// The makers' `--group-protocol` (`None`: their default, `consumer`).
    pub protocol: Option<&'static str>,
    /// How often the broker aborts transactions that timed out (its
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`): 2 s on the test brokers (as on the deployed
    /// cluster), 10 s with Kafka's defaults. Part of how long a killed maker's partitions can wait.
    pub transaction_cleanup: Duration,
    /// How long the group waits before it gives a dead maker's partitions to another: the makers' own 10 s
    /// under the classic protocol; under KIP-848 the broker's `group.consumer.session.timeout.ms` (10 s on the
    /// test brokers, as on the deployed cluster; 45 s with Kafka's defaults).
    pub session_timeout: Duration,
}

/// The topics and group of one scenario.
pub struct Topics {
    pub orders: String,
    pub deliveries: String,
    pub dlq: String,
    pub group: String,
}

impl Topics {
    pub async fn create(bootstrap: &str) -> Self {
        let (orders, deliveries, dlq) = testkit::create_topics(bootstrap, 6).await;
        Self {
            orders,
            deliveries,
            dlq,
            group: testkit::unique("fault-makers"),
        }
    }
}

/// What a scenario observed.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    pub scenario: String,
    pub duration: Duration,
    pub orders: u64,
    pub tabs: u64,
    pub missing: u64,
    pub duplicated: u64,
    pub wrong: u64,
    /// Invalid records of the orders topic with no dead letter.
    pub missing_dead_letters: u64,
    pub faults_injected: u64,
    pub makers_started: u64,
    pub dead_letters: u64,
    /// Partitions that stood still with backlog under one maker for longer than `liveness_bound`.
    pub frozen: Vec<Stall>,
    pub liveness_bound: Duration,
    /// The longest time any held partition with backlog stood still.
    pub longest_stall: Duration,
    pub latency_p50_ms: f64,
    pub notes: Vec<String>,
    /// Only on a single node: the lines of the broker's own log, during the fault, saying its transaction
    /// coordinator skipped markers of this scenario's partitions. Duplicates are excused by these alone.
    pub broker_fault: Vec<String>,
}

impl Findings {
    /// Nothing lost, duplicated, wrong or left out of the DLQ, and no partition frozen. On a single node, a
    /// duplicate passes only where the broker's own log shows it skipped markers ([`Findings::broker_fault`]).
    pub fn passed(&self) -> bool {
        self.missing == 0
            && (self.duplicated == 0 || !self.broker_fault.is_empty())
            && self.wrong == 0
            && self.missing_dead_letters == 0
            && self.frozen.is_empty()
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        let frozen: Vec<String> = self
            .frozen
            .iter()
            .map(|s| {
                format!(
                    "partition {} held by {} stood {:.0} s at offset {} with lag {}",
                    s.partition,
                    s.maker,
                    s.lasted_ms as f64 / 1000.0,
                    s.committed,
                    s.lag
                )
            })
            .collect();
        let excused = (!self.broker_fault.is_empty()).then(|| {
            format!(
                "the duplicates are the broker's: its log says its transaction coordinator skipped markers of \
                 this scenario's partitions during the fault ({} lines, the first: {})",
                self.broker_fault.len(),
                self.broker_fault[0]
            )
        });
        let notes: Vec<String> = frozen
            .into_iter()
            .chain(excused)
            .chain(self.notes.clone())
            .collect();
        format!(
            "{}: {:.0} s, {} faults, {} makers started, {} orders, {} tabs, latency p50 {:.1} s, missing {}, \
             duplicated {}, wrong {}, dead letters {} (missing {}), frozen partitions {} (longest stall {:.1} s, \
             bound {:.1} s){}",
            self.scenario,
            self.duration.as_secs_f64(),
            self.faults_injected,
            self.makers_started,
            self.orders,
            self.tabs,
            self.latency_p50_ms / 1000.0,
            self.missing,
            self.duplicated,
            self.wrong,
            self.dead_letters,
            self.missing_dead_letters,
            self.frozen.len(),
            self.longest_stall.as_secs_f64(),
            self.liveness_bound.as_secs_f64(),
            if notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", notes.join("; "))
            }
        )
    }
}

impl Harness {
    /// The harness on `bootstrap` with the makers' default group protocol.
    pub fn new(exe: PathBuf, bootstrap: impl Into<String>) -> Self {
        Self {
            exe,
            bootstrap: bootstrap.into(),
            protocol: None,
            transaction_cleanup: Duration::from_secs(2),
            session_timeout: Duration::from_secs(10),
        }
    }

    fn spawn(&self, program: &str, args: &[String], env: &[(&str, &str)]) -> Proc {
        let mut all: Vec<&str> = vec![program];
        all.extend(args.iter().map(String::as_str));
        Proc::spawn(self.exe.to_str().expect("UTF-8 path"), &all, env)
    }

    /// Patients ordering every `period` until stopped, logging each acknowledged order.
    pub fn patients(&self, topics: &Topics, count: u32, period: &str) -> Proc {
        let args: Vec<String> = [
            "--bootstrap-servers",
            &self.bootstrap,
            "--orders-topic",
            &topics.orders,
            "--patients",
            &count.to_string(),
            "--order-period",
            period,
            "--patient-id",
            &testkit::unique("fault"),
            "--startup-timeout",
            "60s",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        self.spawn("patient", &args, &[("RUST_LOG", "info")])
    }

    /// A maker of the scenario's group.
    pub fn maker(&self, topics: &Topics, extra: &[&str]) -> Proc {
        let mut args: Vec<String> = [
            "--bootstrap-servers",
            &self.bootstrap,
            "--orders-topic",
            &topics.orders,
            "--deliveries-topic",
            &topics.deliveries,
            "--dlq-topic",
            &topics.dlq,
            "--group",
            &topics.group,
            "--startup-timeout",
            "60s",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if let Some(protocol) = self.protocol {
            args.extend(["--group-protocol".to_owned(), protocol.to_owned()]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        // `FAULTS_KAFKA_DEBUG=cgrp,protocol` (librdkafka's debug contexts) puts the Kafka client's own account of a
        // scenario in each maker's log, for a failure that the maker's log alone cannot explain.
        match std::env::var("FAULTS_KAFKA_DEBUG") {
            Ok(contexts) if !contexts.is_empty() => {
                args.extend(["--kafka-property".to_owned(), format!("debug={contexts}")]);
                self.spawn("medicine", &args, &[("RUST_LOG", "info,librdkafka=debug")])
            }
            _ => self.spawn("medicine", &args, &[("RUST_LOG", "info")]),
        }
    }

    /// Starts sampling the scenario group's lag, for the liveness verdict.
    pub fn watch(&self, topics: &Topics) -> anyhow::Result<Watch> {
        Watch::start(
            &KafkaArgs::plaintext(&self.bootstrap),
            &topics.group,
            &topics.orders,
            Duration::from_millis(500),
        )
    }

    /// Audits the scenario's topics, waiting up to `wait` for tabs and dead letters still to come.
    pub async fn audit(
        &self,
        topics: &Topics,
        making_time: Duration,
        wait: Duration,
    ) -> anyhow::Result<audit::Outcome> {
        let config = audit::Config {
            wait,
            ..audit::Config::for_topics(
                self.bootstrap.clone(),
                tabs::config::TopicArgs::new(&topics.orders, &topics.deliveries, &topics.dlq),
                making_time,
            )
        };
        tokio::task::spawn_blocking(move || audit::audit(&config)).await?
    }
}

/// The liveness bound of a scenario: three making times and one commit interval (the contract's), the slack of
/// the sampling and the group's round trips, and `waits` where the scenario itself makes a holder wait (a killed
/// maker's open transaction, a broker that is down).
pub fn liveness_bound(making: Duration, waits: Duration) -> Duration {
    making * 3 + COMMIT_INTERVAL + LIVENESS_SLACK + waits
}

/// A busy maker of the scenarios under the patients' load: tabs of 200 ms, 64 orders in flight, never idle-exiting.
const BUSY_MAKER: [&str; 6] = [
    "--tab-making-time",
    "200ms",
    "--max-in-flight-orders",
    "64",
    "--idle-exit-after",
    "0",
];
