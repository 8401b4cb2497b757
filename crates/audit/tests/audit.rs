//! `tabs-audit` against the real broker: a correct delivery passes; missing, duplicated and forged tabs fail it.

use std::time::Duration;

use tabs::messages::{to_json, DeadLetter, Order, Tab};
use tabs::time::now_ns;
use testkit::{create_topics, produce, require_broker, unique, Proc, RawRecord};

const AUDIT: &str = env!("CARGO_BIN_EXE_tabs-audit");

async fn publish(bootstrap: &str, topic: &str, values: &[(String, Vec<u8>)]) {
    let records: Vec<RawRecord<'_>> = values
        .iter()
        .map(|(k, v)| (Some(k.as_bytes()), Some(v.as_slice())))
        .collect();
    produce(bootstrap, topic, &records).await;
}

fn tabs_of(order: &Order) -> Vec<(String, Vec<u8>)> {
    (1..=order.tabs_count)
        .map(|seq| {
            let tab = Tab {
                delivery_timestamp_ns: order.order_timestamp_ns + 2_050_000_000,
                ..Tab::make(order, seq)
            };
            (order.patient_id.clone(), to_json(&tab))
        })
        .collect()
}

async fn run_audit(
    bootstrap: &str,
    orders: &str,
    deliveries: &str,
    extra: &[&str],
) -> (i32, testkit::serde_json::Value) {
    let mut args = vec![
        "--bootstrap-servers",
        bootstrap,
        "--orders-topic",
        orders,
        "--deliveries-topic",
        deliveries,
        "--json",
    ];
    args.extend_from_slice(extra);
    let mut audit = Proc::spawn_with_stdout(AUDIT, &args, &[]);
    let code = audit.exit_code(Duration::from_secs(60)).await;
    let report = testkit::serde_json::from_str(&audit.stdout_text()).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            audit.stdout_text(),
            audit.stderr_text()
        )
    });
    (code, report)
}

#[tokio::test]
async fn a_complete_delivery_passes_and_each_fault_fails() {
    let bootstrap = require_broker!();
    let (orders_topic, deliveries_topic, _) = create_topics(&bootstrap, 3).await;
    let patient = unique("p");
    let base = now_ns();
    let orders: Vec<Order> = (0..5)
        .map(|i| Order {
            patient_id: format!("{patient}-{}", i % 2),
            order_timestamp_ns: base + i,
            tabs_count: 3,
        })
        .collect();
    let order_records: Vec<(String, Vec<u8>)> = orders
        .iter()
        .map(|o| (o.patient_id.clone(), to_json(o)))
        .collect();
    publish(&bootstrap, &orders_topic, &order_records).await;
    // All tabs of the first four orders; the fifth order's tabs come later.
    let delivered: Vec<(String, Vec<u8>)> = orders[..4].iter().flat_map(tabs_of).collect();
    publish(&bootstrap, &deliveries_topic, &delivered).await;

    let (code, report) = run_audit(&bootstrap, &orders_topic, &deliveries_topic, &[]).await;
    assert_eq!(code, 1, "three tabs are missing: {report}");
    assert_eq!(report["missing_tabs"], 3);
    assert_eq!(report["incomplete_orders"], 1);

    publish(&bootstrap, &deliveries_topic, &tabs_of(&orders[4])).await;
    let (code, report) = run_audit(&bootstrap, &orders_topic, &deliveries_topic, &[]).await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["orders"], 5);
    assert_eq!(report["delivered_tabs"], 15);
    assert!(
        (49.0..=51.0).contains(&report["overhead"]["p50_ms"].as_f64().unwrap()),
        "{report}"
    );

    // A duplicate fails the exactly-once audit, not the at-least-once one.
    publish(&bootstrap, &deliveries_topic, &tabs_of(&orders[0])[..1]).await;
    let (code, report) = run_audit(&bootstrap, &orders_topic, &deliveries_topic, &[]).await;
    assert_eq!((code, report["duplicated_tabs"].as_u64()), (1, Some(1)));
    let (code, _) = run_audit(
        &bootstrap,
        &orders_topic,
        &deliveries_topic,
        &["--allow-duplicates"],
    )
    .await;
    assert_eq!(code, 0);

    // A forged proof of work fails both.
    let forged = Tab {
        tab_pow: "f".repeat(64),
        ..Tab::make(&orders[1], 1)
    };
    publish(
        &bootstrap,
        &deliveries_topic,
        &[(forged.patient_id.clone(), to_json(&forged))],
    )
    .await;
    let (code, report) = run_audit(
        &bootstrap,
        &orders_topic,
        &deliveries_topic,
        &["--allow-duplicates"],
    )
    .await;
    assert_eq!((code, report["wrong_pow"].as_u64()), (1, Some(1)));
}

#[tokio::test]
async fn every_invalid_order_must_be_in_the_dlq() {
    let bootstrap = require_broker!();
    let (orders_topic, deliveries_topic, dlq_topic) = create_topics(&bootstrap, 1).await;
    let order = Order {
        patient_id: unique("p"),
        order_timestamp_ns: now_ns(),
        tabs_count: 2,
    };
    let records: Vec<RawRecord<'_>> = vec![(Some(b"k"), Some(b"{not json")), (None, Some(b"\xff"))];
    produce(&bootstrap, &orders_topic, &records).await;
    publish(
        &bootstrap,
        &orders_topic,
        &[(order.patient_id.clone(), to_json(&order))],
    )
    .await;
    publish(&bootstrap, &deliveries_topic, &tabs_of(&order)).await;
    let dlq = ["--dlq-topic", dlq_topic.as_str()];

    // Only the first invalid record reached the DLQ.
    let letter = DeadLetter::new(
        "validate",
        &tabs::messages::Rejection::NotJson { detail: "x".into() },
        &orders_topic,
        0,
        0,
        Some(b"k"),
        Some(b"{not json"),
        "m",
        now_ns(),
    );
    produce(
        &bootstrap,
        &dlq_topic,
        &[(Some(b"k"), Some(to_json(&letter).as_slice()))],
    )
    .await;
    let (code, report) = run_audit(&bootstrap, &orders_topic, &deliveries_topic, &dlq).await;
    assert_eq!(code, 1, "{report}");
    assert_eq!(
        (
            report["invalid_orders"].as_u64(),
            report["dead_lettered"].as_u64()
        ),
        (Some(2), Some(1))
    );
    assert_eq!(report["missing_dead_letters"], 1);
    assert_eq!(
        report["missing_dead_letter_offsets"][0],
        testkit::serde_json::json!([0, 1])
    );

    let second = DeadLetter {
        source_offset: 1,
        ..letter
    };
    produce(
        &bootstrap,
        &dlq_topic,
        &[(None, Some(to_json(&second).as_slice()))],
    )
    .await;
    let (code, report) = run_audit(&bootstrap, &orders_topic, &deliveries_topic, &dlq).await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["dead_lettered"], 2);
}

#[tokio::test]
async fn an_unreachable_broker_exits_3_with_the_address() {
    let mut audit = Proc::spawn(
        AUDIT,
        &[
            "--bootstrap-servers",
            "127.0.0.1:1",
            "--kafka-property",
            "socket.connection.setup.timeout.ms=1000",
        ],
        &[],
    );
    assert_eq!(audit.exit_code(Duration::from_secs(60)).await, 3);
    assert!(
        audit.stderr_text().contains("127.0.0.1:1"),
        "{}",
        audit.stderr_text()
    );
}

#[tokio::test]
async fn a_misspelt_secret_property_is_refused_without_showing_its_value() {
    testkit::assert_secret_values_hidden(
        AUDIT,
        &["--bootstrap-servers", "127.0.0.1:1"],
        &[
            "ssl.key.pasword=TYPO-SeCrEt-5678",
            "sasl.pasword=TYPO-SeCrEt-1234",
        ],
    )
    .await;
}
