//! The short fault campaign, in `./make_test.sh`: each scenario for about twenty seconds, judged by the auditor.
//! `cargo run --release -p faults --bin fault-campaign -- --long` runs the long versions.

use std::path::PathBuf;
use std::time::Duration;

use faults::{Findings, Harness, SecondBroker};
use testkit::require_broker;

const EXE: &str = env!("CARGO_BIN_EXE_fault-campaign");

fn harness(bootstrap: String) -> Harness {
    Harness {
        exe: PathBuf::from(EXE),
        bootstrap,
    }
}

fn assert_clean(findings: &Findings) {
    eprintln!("{}", findings.summary());
    assert!(findings.orders > 0 && findings.tabs > 0, "{findings:?}");
    assert_eq!(
        (findings.missing, findings.duplicated, findings.wrong),
        (0, 0, 0),
        "{findings:?}"
    );
}

#[tokio::test]
async fn makers_killed_with_sigkill_under_load_lose_and_duplicate_nothing() {
    let bootstrap = require_broker!();
    let findings = faults::kill_makers(&harness(bootstrap), Duration::from_secs(20))
        .await
        .unwrap();
    assert!(findings.faults_injected >= 5, "{findings:?}");
    assert_clean(&findings);
}

#[tokio::test]
async fn makers_sent_sigterm_while_busy_drain_in_time_and_lose_nothing() {
    let bootstrap = require_broker!();
    let findings = faults::sigterm_storm(&harness(bootstrap), Duration::from_secs(20))
        .await
        .unwrap();
    assert!(findings.faults_injected >= 5, "{findings:?}");
    assert_clean(&findings);
}

#[tokio::test]
async fn a_flood_of_hostile_records_all_reach_the_dlq_and_good_orders_are_made() {
    let bootstrap = require_broker!();
    let findings = faults::hostile_flood(&harness(bootstrap), 100_000)
        .await
        .unwrap();
    assert!(findings.dead_letters > 90_000, "{findings:?}");
    assert_clean(&findings);
}

#[tokio::test]
async fn patients_and_makers_recover_from_a_broker_restart_by_themselves() {
    // This scenario restarts its broker, so it runs one of its own next to the shared test broker. Down for
    // longer than the makers' transaction timeout (10 s, counting the stop and the start): a transaction caught
    // in flight is aborted by the broker, and its maker must replace its fenced producer.
    let _shared = require_broker!();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let broker = SecondBroker::start(&root).await.unwrap();
    let findings = faults::restart_broker(
        &harness(broker.bootstrap.clone()),
        &broker,
        Duration::from_secs(8),
        Duration::from_secs(16),
    )
    .await
    .unwrap();
    assert_clean(&findings);
}
