//! The `patient` binary against a real Kafka broker (`KAFKA_BOOTSTRAP_SERVERS`), plus its failure modes.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tabs::messages::parse_order;
use testkit::nix::sys::signal::Signal;
use testkit::{create_topic, read_topic, require_broker, unique, Proc};

const PATIENT: &str = env!("CARGO_BIN_EXE_patient");

fn patient(bootstrap: &str, topic: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["--bootstrap-servers", bootstrap, "--orders-topic", topic];
    args.extend_from_slice(extra);
    Proc::spawn(PATIENT, &args, &[])
}

#[tokio::test]
async fn places_exactly_the_requested_orders_with_keys_and_increasing_timestamps() {
    let bootstrap = require_broker!();
    let topic = unique("orders");
    create_topic(&bootstrap, &topic, 3).await;
    let id = unique("p");

    let mut proc = patient(
        &bootstrap,
        &topic,
        &[
            "--patient-id",
            &id,
            "--patients",
            "3",
            "--orders",
            "5",
            "--order-period",
            "100ms",
            "--max-tabs-count",
            "4",
        ],
    );
    assert_eq!(
        proc.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        proc.stderr_text()
    );

    let records = read_topic(
        &bootstrap,
        &topic,
        true,
        15,
        Duration::from_secs(2),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(records.len(), 15, "exactly 15 orders");

    let mut last_timestamp: HashMap<String, u64> = HashMap::new();
    let mut per_patient: HashMap<String, usize> = HashMap::new();
    let mut partitions: HashMap<String, HashSet<i32>> = HashMap::new();
    let mut sorted = records.clone();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    for record in &sorted {
        let order = parse_order(record.value.as_deref(), 4).expect("a valid order");
        assert_eq!(record.key_str(), order.patient_id, "key is the patient id");
        assert!((1..=4).contains(&order.tabs_count));
        if let Some(previous) =
            last_timestamp.insert(order.patient_id.clone(), order.order_timestamp_ns)
        {
            assert!(
                order.order_timestamp_ns > previous,
                "timestamps strictly increase per patient"
            );
        }
        *per_patient.entry(order.patient_id.clone()).or_default() += 1;
        partitions
            .entry(order.patient_id)
            .or_default()
            .insert(record.partition);
    }
    let expected: HashSet<String> = (1..=3).map(|k| format!("{id}-{k}")).collect();
    assert_eq!(
        per_patient.keys().cloned().collect::<HashSet<_>>(),
        expected
    );
    assert!(per_patient.values().all(|&n| n == 5), "{per_patient:?}");
    assert!(
        partitions.values().all(|p| p.len() == 1),
        "one partition per patient"
    );
    assert_eq!(proc.log_events("order acknowledged").len(), 15);
}

#[tokio::test]
async fn sigterm_loses_none_of_the_logged_orders() {
    let bootstrap = require_broker!();
    let topic = unique("orders");
    create_topic(&bootstrap, &topic, 2).await;

    let mut proc = patient(
        &bootstrap,
        &topic,
        &["--patients", "50", "--order-period", "50ms"],
    );
    let started = Instant::now();
    while proc.log_events("order acknowledged").len() < 200 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no orders: {}",
            proc.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proc.signal(Signal::SIGTERM);
    assert_eq!(
        proc.exit_code(Duration::from_secs(20)).await,
        0,
        "{}",
        proc.stderr_text()
    );

    let logged: HashSet<(String, u64)> = proc
        .log_events("order acknowledged")
        .iter()
        .map(|e| {
            (
                e["patient_id"].as_str().unwrap().to_owned(),
                e["order_timestamp_ns"].as_u64().unwrap(),
            )
        })
        .collect();
    let stopped = proc.log_events("patient stopped");
    assert_eq!(stopped.len(), 1, "a summary line at exit");
    assert_eq!(
        stopped[0]["acknowledged"].as_u64(),
        Some(logged.len() as u64)
    );

    let records = read_topic(
        &bootstrap,
        &topic,
        true,
        logged.len(),
        Duration::from_secs(1),
        Duration::from_secs(30),
    )
    .await;
    let in_topic: HashSet<(String, u64)> = records
        .iter()
        .map(|r| parse_order(r.value.as_deref(), 30).unwrap())
        .map(|o| (o.patient_id, o.order_timestamp_ns))
        .collect();
    let missing: Vec<_> = logged.difference(&in_topic).collect();
    assert!(
        missing.is_empty(),
        "{} logged orders missing from the topic: {missing:?}",
        missing.len()
    );
}

#[tokio::test]
async fn scram_credentials_work_and_wrong_ones_fail_clearly() {
    let bootstrap = require_broker!();
    let (Ok(sasl_bootstrap), Ok(user), Ok(password), Ok(ca)) = (
        std::env::var("KAFKA_TEST_SASL_BOOTSTRAP_SERVERS"),
        std::env::var("KAFKA_TEST_SASL_USERNAME"),
        std::env::var("KAFKA_TEST_SASL_PASSWORD"),
        std::env::var("KAFKA_TEST_SASL_CA_LOCATION"),
    ) else {
        panic!("KAFKA_TEST_SASL_* are not set: scripts/kafka-dev.sh env sets them with the broker");
    };
    let topic = unique("orders");
    create_topic(&bootstrap, &topic, 1).await;
    let sasl = |password: &str| {
        Proc::spawn(
            PATIENT,
            &[
                "--bootstrap-servers",
                &sasl_bootstrap,
                "--orders-topic",
                &topic,
                "--orders",
                "2",
                "--order-period",
                "50ms",
                "--startup-timeout",
                "15s",
                "--security-protocol",
                "SASL_SSL",
                "--ssl-ca-location",
                &ca,
                "--sasl-mechanism",
                "SCRAM-SHA-512",
                "--sasl-username",
                &user,
                "--sasl-password",
                password,
            ],
            &[],
        )
    };

    let mut good = sasl(&password);
    assert_eq!(
        good.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        good.stderr_text()
    );
    let records = read_topic(
        &bootstrap,
        &topic,
        true,
        2,
        Duration::from_millis(500),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(records.len(), 2);

    let wrong = "not-the-password";
    let started = Instant::now();
    let mut bad = sasl(wrong);
    assert_eq!(
        bad.exit_code(Duration::from_secs(30)).await,
        1,
        "{}",
        bad.stderr_text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "fails fast, not at the start-up timeout"
    );
    let stderr = bad.stderr_text();
    assert!(stderr.contains("refused the credentials"), "{stderr}");
    assert!(
        stderr.contains(&sasl_bootstrap),
        "names the address: {stderr}"
    );
    assert!(!stderr.contains(wrong), "never logs the password: {stderr}");
}

#[tokio::test]
async fn unreachable_broker_is_reported_with_the_address_and_exit_1() {
    // Port 1 on loopback: nothing listens there. No broker needed for this test.
    let started = Instant::now();
    let mut proc = Proc::spawn(
        PATIENT,
        &[
            "--bootstrap-servers",
            "127.0.0.1:1",
            "--startup-timeout",
            "3s",
        ],
        &[],
    );
    assert_eq!(
        proc.exit_code(Duration::from_secs(20)).await,
        1,
        "{}",
        proc.stderr_text()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let stderr = proc.stderr_text();
    assert!(stderr.contains("unreachable at 127.0.0.1:1"), "{stderr}");
    assert!(
        proc.log_events("Kafka is not reachable yet; retrying")
            .len()
            >= 2,
        "retries: {stderr}"
    );
}

#[tokio::test]
async fn bad_flags_exit_2_with_one_line_naming_the_flag() {
    /// Arguments, environment, and the flag the one-line error must name.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case<'_>; 5] = [
        (&["--order-period", "soon"], &[], "--order-period"),
        (&["--patients", "0"], &[], "--patients"),
        (&[], &[("ORBITAL_MAX_TABS_COUNT", "0")], "--max-tabs-count"),
        (
            &["--bootstrap-servers", "kafka"],
            &[],
            "--bootstrap-servers",
        ),
        (&["--no-such-flag"], &[], "--no-such-flag"),
    ];
    for (args, env, flag) in cases {
        let mut proc = Proc::spawn(PATIENT, args, env);
        assert_eq!(proc.exit_code(Duration::from_secs(10)).await, 2, "{args:?}");
        let lines = proc.stderr_lines();
        assert_eq!(lines.len(), 1, "one line for {args:?}: {lines:?}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(flag),
            "{args:?}: {lines:?}"
        );
    }
}

#[tokio::test]
async fn a_misspelt_secret_property_is_refused_without_showing_its_value() {
    testkit::assert_secret_values_hidden(
        PATIENT,
        &[
            "--bootstrap-servers",
            "127.0.0.1:1",
            "--startup-timeout",
            "2s",
        ],
        &[
            "sasl.pasword=TYPO-SeCrEt-1234",
            "ssl.key.pasword=TYPO-SeCrEt-5678",
        ],
    )
    .await;
}
