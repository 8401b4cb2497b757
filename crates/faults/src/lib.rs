//! The fault campaign: the system under steady load while something goes wrong, judged by the auditor.
//!
//! - makers killed with SIGKILL at random ([`kill_makers`]);
//! - the broker stopped and restarted ([`restart_broker`]);
//! - a flood of random and mutated records among valid orders ([`hostile_flood`]);
//! - makers sent SIGTERM while busy ([`sigterm_storm`]).
//!
//! Short versions run in `./make_test.sh` (this crate's tests); `fault-campaign --long` runs the long ones and
//! prints the figures of documentation/RELIABILITY.md. Patients and makers are child processes of a multi-call
//! binary (`fault-campaign patient …`, `fault-campaign medicine …`: the real programs).

#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use rand::seq::IndexedRandom as _;
use rand::Rng as _;
use tabs::messages::{parse_order, to_json, DeadLetter, Order};
use testkit::nix::sys::signal::Signal;
use testkit::Proc;

/// How to start the programs and where Kafka is.
#[derive(Debug, Clone)]
pub struct Harness {
    /// A multi-call binary: `<exe> patient …` and `<exe> medicine …`.
    pub exe: PathBuf,
    pub bootstrap: String,
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
    pub scenario: &'static str,
    pub duration: Duration,
    pub orders: u64,
    pub tabs: u64,
    pub missing: u64,
    pub duplicated: u64,
    pub wrong: u64,
    pub faults_injected: u64,
    pub makers_started: u64,
    pub dead_letters: u64,
    pub notes: Vec<String>,
}

impl Findings {
    /// One line for people.
    pub fn summary(&self) -> String {
        format!(
            "{}: {:.0} s, {} faults, {} makers started, {} orders, {} tabs, missing {}, duplicated {}, wrong {}, dead letters {}{}",
            self.scenario,
            self.duration.as_secs_f64(),
            self.faults_injected,
            self.makers_started,
            self.orders,
            self.tabs,
            self.missing,
            self.duplicated,
            self.wrong,
            self.dead_letters,
            if self.notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.notes.join("; "))
            }
        )
    }
}

impl Harness {
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
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        self.spawn("medicine", &args, &[("RUST_LOG", "info")])
    }

    /// Audits the scenario's topics, waiting up to `wait` for tabs still being made.
    pub async fn audit(
        &self,
        topics: &Topics,
        making_time: Duration,
        wait: Duration,
    ) -> anyhow::Result<audit::Report> {
        let config = audit::Config {
            wait,
            ..audit::Config::for_topics(
                self.bootstrap.clone(),
                tabs::config::TopicArgs::new(&topics.orders, &topics.deliveries, &topics.dlq),
                making_time,
            )
        };
        Ok(tokio::task::spawn_blocking(move || audit::audit(&config))
            .await??
            .report)
    }
}

/// A second test broker (scripts/kafka-dev.sh on other ports and another store), for the scenario that stops
/// and restarts its broker. Stopped when dropped.
pub struct SecondBroker {
    pub bootstrap: String,
    script: PathBuf,
    port: u16,
    dir: PathBuf,
}

impl SecondBroker {
    /// Starts it on port 29192 (and the two after), store under target/kafka-dev-faults.
    pub async fn start(repo_root: &Path) -> anyhow::Result<Self> {
        let broker = Self {
            bootstrap: "127.0.0.1:29192".to_owned(),
            script: repo_root.join("scripts/kafka-dev.sh"),
            port: 29192,
            dir: repo_root.join("target/kafka-dev-faults"),
        };
        broker.run("start").await?;
        Ok(broker)
    }

    fn command(&self, action: &str) -> std::process::Command {
        let mut command = std::process::Command::new(&self.script);
        command
            .arg(action)
            .env("KAFKA_DEV_PORT", self.port.to_string())
            .env("KAFKA_DEV_DIR", &self.dir);
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

fn findings(scenario: &'static str, started: Instant, report: &audit::Report) -> Findings {
    Findings {
        scenario,
        duration: started.elapsed(),
        orders: report.orders,
        tabs: report.delivered_tabs,
        missing: report.missing_tabs,
        duplicated: report.duplicated_tabs,
        wrong: report.wrong_pow + report.wrong_fields + report.unknown_order_tabs,
        ..Findings::default()
    }
}

/// Stops patients with SIGTERM and returns the orders they logged as acknowledged.
async fn stop_patients(patients: &mut Proc) -> anyhow::Result<HashSet<(String, u64)>> {
    patients.signal(Signal::SIGTERM);
    let code = patients.exit_code(Duration::from_secs(60)).await;
    ensure!(
        code == 0,
        "patients exited with {code}: {}",
        patients.stderr_text()
    );
    Ok(patients
        .log_events("order acknowledged")
        .iter()
        .filter_map(|e| {
            Some((
                e.get("patient_id")?.as_str()?.to_owned(),
                e.get("order_timestamp_ns")?.as_u64()?,
            ))
        })
        .collect())
}

/// Every order the patients logged as acknowledged is in the orders topic.
async fn acknowledged_orders_are_in_the_topic(
    bootstrap: &str,
    topics: &Topics,
    acknowledged: &HashSet<(String, u64)>,
) -> anyhow::Result<()> {
    let records = testkit::read_topic(
        bootstrap,
        &topics.orders,
        true,
        acknowledged.len(),
        Duration::from_secs(1),
        Duration::from_secs(60),
    )
    .await;
    let present: HashSet<(String, u64)> = records
        .iter()
        .filter_map(|r| parse_order(r.value.as_deref(), 30).ok())
        .map(|o| (o.patient_id, o.order_timestamp_ns))
        .collect();
    let lost = acknowledged.difference(&present).count();
    ensure!(
        lost == 0,
        "{lost} acknowledged orders are not in {}",
        topics.orders
    );
    Ok(())
}

/// Makers killed with SIGKILL at random every few seconds under steady load, each replaced (as KEDA would start
/// another Job). Then one maker finishes the lag and the audit must find every tab exactly once.
pub async fn kill_makers(harness: &Harness, duration: Duration) -> anyhow::Result<Findings> {
    let started = Instant::now();
    let topics = Topics::create(&harness.bootstrap).await;
    let making = [
        "--tab-making-time",
        "200ms",
        "--max-in-flight-orders",
        "64",
        "--idle-exit-after",
        "0",
    ];
    let mut patients = harness.patients(&topics, 30, "200ms");
    let mut makers: Vec<Proc> = (0..3).map(|_| harness.maker(&topics, &making)).collect();
    let mut result = Findings {
        makers_started: 3,
        ..Findings::default()
    };
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        let pause = Duration::from_millis(rand::rng().random_range(1_000..3_000));
        tokio::time::sleep(pause).await;
        let victim = rand::rng().random_range(0..makers.len());
        makers[victim].signal(Signal::SIGKILL);
        makers[victim].wait_timeout(Duration::from_secs(5)).await;
        makers[victim] = harness.maker(&topics, &making);
        result.faults_injected += 1;
        result.makers_started += 1;
    }
    let acknowledged = stop_patients(&mut patients).await?;
    // A killed maker's open transaction holds its partitions until it times out (10 s): the survivors finish.
    let report = harness
        .audit(&topics, Duration::from_millis(200), Duration::from_secs(90))
        .await?;
    for maker in &mut makers {
        maker.signal(Signal::SIGTERM);
        maker.exit_code(Duration::from_secs(60)).await;
    }
    acknowledged_orders_are_in_the_topic(&harness.bootstrap, &topics, &acknowledged).await?;
    Ok(Findings {
        faults_injected: result.faults_injected,
        makers_started: result.makers_started,
        ..findings("makers killed with SIGKILL", started, &report)
    })
}

/// Makers sent SIGTERM while busy, every couple of seconds, each replaced. Every exit must be 0 and within the
/// drain timeout; the audit must find every tab exactly once.
pub async fn sigterm_storm(harness: &Harness, duration: Duration) -> anyhow::Result<Findings> {
    let started = Instant::now();
    let topics = Topics::create(&harness.bootstrap).await;
    let drain = Duration::from_secs(5);
    let making = [
        "--tab-making-time",
        "1s",
        "--max-in-flight-orders",
        "64",
        "--idle-exit-after",
        "0",
        "--drain-timeout",
        "5s",
    ];
    let mut patients = harness.patients(&topics, 30, "200ms");
    let mut makers: Vec<Proc> = (0..3).map(|_| harness.maker(&topics, &making)).collect();
    let (mut faults, mut started_makers, mut slowest) = (0u64, 3u64, Duration::ZERO);
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(
            rand::rng().random_range(1_500..2_500),
        ))
        .await;
        let victim = rand::rng().random_range(0..makers.len());
        let signalled = Instant::now();
        makers[victim].signal(Signal::SIGTERM);
        let code = makers[victim]
            .exit_code(drain + Duration::from_secs(20))
            .await;
        let took = signalled.elapsed();
        ensure!(
            code == 0,
            "a maker exited {code} on SIGTERM: {}",
            makers[victim].stderr_text()
        );
        ensure!(
            took <= drain + Duration::from_secs(5),
            "a maker took {took:?} to drain (timeout {drain:?})"
        );
        slowest = slowest.max(took);
        makers[victim] = harness.maker(&topics, &making);
        faults += 1;
        started_makers += 1;
    }
    let acknowledged = stop_patients(&mut patients).await?;
    let report = harness
        .audit(&topics, Duration::from_secs(1), Duration::from_secs(90))
        .await?;
    for maker in &mut makers {
        maker.signal(Signal::SIGTERM);
        maker.exit_code(Duration::from_secs(60)).await;
    }
    acknowledged_orders_are_in_the_topic(&harness.bootstrap, &topics, &acknowledged).await?;
    let mut result = findings("makers sent SIGTERM while busy", started, &report);
    result.faults_injected = faults;
    result.makers_started = started_makers;
    result.notes.push(format!(
        "slowest exit {:.1} s after SIGTERM",
        slowest.as_secs_f64()
    ));
    Ok(result)
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
    let making = ["--tab-making-time", "200ms", "--idle-exit-after", "0"];
    let mut patients = harness.patients(&topics, 20, "200ms");
    let mut maker = harness.maker(&topics, &making);
    tokio::time::sleep(run / 2).await;

    broker.run("stop").await?;
    tokio::time::sleep(down).await;
    broker.run("restart").await?;
    tokio::time::sleep(run / 2).await;

    let acknowledged = stop_patients(&mut patients).await?;
    let report = harness
        .audit(&topics, Duration::from_millis(200), Duration::from_secs(90))
        .await?;
    maker.signal(Signal::SIGTERM);
    let code = maker.exit_code(Duration::from_secs(60)).await;
    ensure!(
        code == 0,
        "the maker did not survive the restart: {}",
        maker.stderr_text()
    );
    acknowledged_orders_are_in_the_topic(&harness.bootstrap, &topics, &acknowledged).await?;
    let aborts = maker
        .log_events("maker stopped")
        .first()
        .and_then(|e| e.get("aborts").and_then(serde_json::Value::as_u64))
        .unwrap_or(0);
    let mut result = findings("broker stopped and restarted", started, &report);
    if !report.is_clean() || std::env::var_os("FAULTS_MAKER_LOG").is_some() {
        // What the maker saw is the first thing to read when this fails.
        eprintln!("maker log:\n{}", maker.stderr_text());
    }
    result.faults_injected = 1;
    result.makers_started = 1;
    result.notes.push(format!(
        "broker down {:.0} s; {} orders acknowledged; {aborts} transactions aborted and redone",
        down.as_secs_f64(),
        acknowledged.len()
    ));
    Ok(result)
}

/// A bad record: random bytes, or a valid order mutated.
fn hostile_record(rng: &mut impl rand::Rng, order: &Order) -> Vec<u8> {
    let template = to_json(order);
    match rng.random_range(0..6) {
        // Random bytes, often not UTF-8.
        0 => (0..rng.random_range(0..64)).map(|_| rng.random()).collect(),
        // Truncated JSON.
        1 => template[..rng.random_range(0..template.len())].to_vec(),
        // A flipped byte somewhere.
        2 => {
            let mut bytes = template.to_vec();
            let at = rng.random_range(0..bytes.len());
            bytes[at] ^= 1 << rng.random_range(0..8);
            bytes
        }
        // A field replaced by a value of another type or out of range.
        3 => {
            let field = ["patient_id", "order_timestamp_ns", "tabs_count"]
                .choose(rng)
                .copied()
                .unwrap_or("tabs_count");
            let value = [
                "null",
                "\"x\"",
                "-1",
                "0",
                "1e12",
                "[]",
                "{}",
                "1000000000000",
                "2.5",
                "true",
            ]
            .choose(rng)
            .copied()
            .unwrap_or("null");
            format!(
                r#"{{"patient_id":"{}","order_timestamp_ns":{},"tabs_count":1,"{field}":{value}}}"#,
                order.patient_id, order.order_timestamp_ns
            )
            .into_bytes()
        }
        // JSON that is not an object, or empty.
        4 => ["[]", "42", "\"order\"", "null", ""]
            .choose(rng)
            .copied()
            .unwrap_or("")
            .as_bytes()
            .to_vec(),
        // A very long patient id.
        _ => format!(
            r#"{{"patient_id":"{}","order_timestamp_ns":1,"tabs_count":1}}"#,
            "x".repeat(rng.random_range(257..2_000))
        )
        .into_bytes(),
    }
}

/// A flood of random and mutated records into the orders topic while valid orders keep coming. Nothing may
/// crash; every bad record must be in the DLQ with a reason; every good order must be made exactly once.
pub async fn hostile_flood(harness: &Harness, records: usize) -> anyhow::Result<Findings> {
    let started = Instant::now();
    let topics = Topics::create(&harness.bootstrap).await;
    let mut maker = harness.maker(
        &topics,
        &[
            "--tab-making-time",
            "0",
            "--max-in-flight-orders",
            "4096",
            "--idle-exit-after",
            "0",
        ],
    );
    let mut patients = harness.patients(&topics, 20, "100ms");

    let mut rng = rand::rng();
    // Each mutated record starts from its own order (own patient id, own timestamp): a mutation that is still a
    // valid order then changes one field only, so it never takes the identity of another order.
    let flood_id = testkit::unique("flood");
    let base = tabs::time::now_ns();
    let flood: Vec<Vec<u8>> = (0..records)
        .map(|i| {
            let order = Order {
                patient_id: format!("{flood_id}-{i}"),
                order_timestamp_ns: base + i as u64,
                tabs_count: 5,
            };
            hostile_record(&mut rng, &order)
        })
        .collect();
    // The validator decides which mutations still are valid orders (a flipped byte in an id, say).
    let bad = flood
        .iter()
        .filter(|r| parse_order(Some(r.as_slice()), 30).is_err())
        .count() as u64;
    let keyed: Vec<testkit::RawRecord<'_>> = flood
        .iter()
        .map(|value| {
            (
                None,
                if value.is_empty() {
                    None
                } else {
                    Some(value.as_slice())
                },
            )
        })
        .collect();
    testkit::produce_many(&harness.bootstrap, &topics.orders, &keyed).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_patients(&mut patients).await?;

    let letters = testkit::read_topic(
        &harness.bootstrap,
        &topics.dlq,
        true,
        usize::try_from(bad)?,
        Duration::from_secs(2),
        Duration::from_secs(180),
    )
    .await;
    let report = harness
        .audit(&topics, Duration::ZERO, Duration::from_secs(60))
        .await?;
    ensure!(
        maker.wait_timeout(Duration::ZERO).await.is_none(),
        "the maker stopped: {}",
        maker.stderr_text()
    );
    maker.signal(Signal::SIGTERM);
    ensure!(
        maker.exit_code(Duration::from_secs(60)).await == 0,
        "the maker failed: {}",
        maker.stderr_text()
    );

    let mut without_reason = 0;
    for letter in &letters {
        let letter: DeadLetter =
            serde_json::from_slice(letter.value.as_deref().unwrap_or_default())
                .context("a DLQ record that is not a dead letter")?;
        if letter.reason.is_empty() || letter.error.is_empty() {
            without_reason += 1;
        }
    }
    if letters.len() as u64 != bad {
        bail!(
            "{bad} bad records were sent, {} dead letters arrived",
            letters.len()
        );
    }
    ensure!(
        without_reason == 0,
        "{without_reason} dead letters without a reason"
    );
    let mut result = findings("hostile input flood", started, &report);
    result.faults_injected = records as u64;
    result.makers_started = 1;
    result.dead_letters = letters.len() as u64;
    result.notes.push(format!(
        "{} of the {records} flooded records were still valid orders",
        records as u64 - bad
    ));
    Ok(result)
}
