//! Test support: the real broker behind `KAFKA_BOOTSTRAP_SERVERS`, unique names, topic creation and reading, and
//! child processes that never outlive a test.
//!
//! Integration tests get the broker with [`require_broker!`]: without `KAFKA_BOOTSTRAP_SERVERS` a test is skipped
//! with a message on a developer machine, and fails when `CI` is set.

#![forbid(unsafe_code)]

pub mod access;
pub mod dashboard;
mod proc;
pub mod prometheus;
pub mod store;

use std::time::{Duration, Instant};

pub use nix;
pub use proc::{assert_secret_values_hidden, logged_partitions, run_verbose, Proc};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
pub use serde_json;
use tabs::kafka::{
    admin_config, producer_config, reader_config, KafkaArgs, ProducerKind, ReaderOptions,
};

/// The broker integration tests use, or `None` (after saying so) when none is configured outside CI.
///
/// # Panics
/// When `CI` is set and `KAFKA_BOOTSTRAP_SERVERS` is not: in CI a missing broker is a failure, never a skip.
pub fn bootstrap() -> Option<String> {
    match std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
        Ok(servers) if !servers.trim().is_empty() => Some(servers),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI is set but KAFKA_BOOTSTRAP_SERVERS is not: run the tests through ./make_test.sh")
        }
        _ => {
            eprintln!(
                "SKIPPED: KAFKA_BOOTSTRAP_SERVERS is not set (./make_test.sh starts a broker; \
                 or: scripts/kafka-dev.sh start && eval \"$(scripts/kafka-dev.sh env)\")"
            );
            None
        }
    }
}

/// Returns the broker address, or returns from the calling test when there is none (outside CI only).
#[macro_export]
macro_rules! require_broker {
    () => {
        match $crate::bootstrap() {
            Some(servers) => servers,
            None => return,
        }
    };
}

/// A name no other test run uses: tests run in parallel and can be rerun against the same broker.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// The connection to the test broker: the project's own client settings, no key of the tests' own.
fn kafka(bootstrap: &str) -> KafkaArgs {
    KafkaArgs::plaintext(bootstrap)
}

/// Creates `name` with `partitions` partitions and waits until the broker serves it.
pub async fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    create_topic_with_config(bootstrap, name, partitions, &[]).await;
}

/// Creates `name` with `partitions` partitions and topic `config` entries, and waits until the broker serves it.
pub async fn create_topic_with_config(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    config: &[(&str, &str)],
) {
    let admin: AdminClient<DefaultClientContext> = admin_config(&kafka(bootstrap))
        .create()
        .expect("admin client");
    // The broker's default replication: 1 on the single test node, 3 (with `min.insync.replicas` 2) on the
    // three-node cluster, as deploy/'s topics.
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(-1));
    for (key, value) in config {
        topic = topic.set(key, value);
    }
    let results = admin
        .create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create_topics request");
    for result in results {
        result.unwrap_or_else(|(topic, err)| panic!("creating topic {topic}: {err}"));
    }
    // Metadata propagates asynchronously; wait until every partition has a leader.
    let deadline = Instant::now() + Duration::from_secs(30);
    let consumer: BaseConsumer = reader_config(&kafka(bootstrap), &ReaderOptions::plain(false))
        .create()
        .expect("consumer");
    loop {
        let ready = consumer
            .fetch_metadata(Some(name), Duration::from_secs(5))
            .ok()
            .and_then(|m| {
                m.topics()
                    .first()
                    .map(|t| t.error().is_none() && t.partitions().len() == partitions as usize)
            })
            .unwrap_or(false);
        if ready {
            return;
        }
        assert!(Instant::now() < deadline, "topic {name} never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates the three topics of a test run with a unique prefix; returns (orders, deliveries, dlq).
pub async fn create_topics(bootstrap: &str, orders_partitions: i32) -> (String, String, String) {
    let prefix = unique("t");
    let names = (
        format!("{prefix}.orders"),
        format!("{prefix}.deliveries"),
        format!("{prefix}.dlq"),
    );
    create_topic(bootstrap, &names.0, orders_partitions).await;
    create_topic(bootstrap, &names.1, 3).await;
    create_topic(bootstrap, &names.2, 1).await;
    names
}

/// A raw record to produce: key and value, either possibly absent.
pub type RawRecord<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Produces raw records to `topic` in order and waits for each acknowledgement.
pub async fn produce(bootstrap: &str, topic: &str, records: &[RawRecord<'_>]) {
    let producer: FutureProducer = producer_config(&kafka(bootstrap), &ProducerKind::Idempotent)
        .create()
        .expect("producer");
    for (key, value) in records {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
        if let Some(key) = key {
            record = record.key(*key);
        }
        if let Some(value) = value {
            record = record.payload(*value);
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap_or_else(|(err, _)| panic!("producing to {topic}: {err}"));
    }
}

/// `count` valid orders of `tabs` tabs each onto `topic`, from `patients` patients named `<prefix>-<n>` (keyed by
/// patient, as the patients key them), timestamps from now on; waits for every acknowledgement.
pub async fn produce_orders(
    bootstrap: &str,
    topic: &str,
    prefix: &str,
    (count, patients, tabs): (usize, usize, u32),
) {
    let base = tabs::time::now_ns();
    let payloads: Vec<(Vec<u8>, Vec<u8>)> = (0..count)
        .map(|i| {
            let order = tabs::messages::Order {
                patient_id: format!("{prefix}-{}", i % patients),
                order_timestamp_ns: base + i as u64,
                tabs_count: tabs,
            };
            (
                order.patient_id.clone().into_bytes(),
                tabs::messages::to_json(&order),
            )
        })
        .collect();
    let records: Vec<RawRecord<'_>> = payloads
        .iter()
        .map(|(k, v)| (Some(k.as_slice()), Some(v.as_slice())))
        .collect();
    produce_many(bootstrap, topic, &records).await;
}

/// Produces many raw records to `topic` as fast as the client goes, then waits for every acknowledgement.
pub async fn produce_many(bootstrap: &str, topic: &str, records: &[RawRecord<'_>]) {
    let producer: FutureProducer = producer_config(&kafka(bootstrap), &ProducerKind::Idempotent)
        .create()
        .expect("producer");
    let mut deliveries = Vec::with_capacity(records.len());
    for (key, value) in records {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
        if let Some(key) = key {
            record = record.key(*key);
        }
        if let Some(value) = value {
            record = record.payload(*value);
        }
        let mut record = record;
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err((_, returned)) => {
                    // Queue full: let librdkafka drain a little.
                    record = returned;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
    for delivery in deliveries {
        delivery
            .await
            .expect("delivery future")
            .unwrap_or_else(|(err, _)| panic!("producing to {topic}: {err}"));
    }
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

impl Record {
    /// The value parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(self.value.as_deref().unwrap_or_default())
            .expect("record value is JSON")
    }

    /// The key as text.
    pub fn key_str(&self) -> &str {
        std::str::from_utf8(self.key.as_deref().unwrap_or_default()).expect("key is UTF-8")
    }
}

/// Reads `topic` from the beginning until `expect` records arrived, then `settle` longer to catch extras
/// (duplicates), or until `timeout`. `read_committed` reads as the guarantees are stated.
pub async fn read_topic(
    bootstrap: &str,
    topic: &str,
    read_committed: bool,
    expect: usize,
    settle: Duration,
    timeout: Duration,
) -> Vec<Record> {
    let bootstrap = bootstrap.to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer =
            reader_config(&kafka(&bootstrap), &ReaderOptions::plain(read_committed))
                .create()
                .expect("consumer");
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .expect("metadata");
        let mut assignment = TopicPartitionList::new();
        for partition in metadata.topics()[0].partitions() {
            assignment
                .add_partition_offset(&topic, partition.id(), Offset::Beginning)
                .expect("assignment");
        }
        consumer.assign(&assignment).expect("assign");

        let started = Instant::now();
        let mut reached: Option<Instant> = None;
        let mut records = Vec::new();
        while started.elapsed() < timeout {
            if reached.is_some_and(|at| at.elapsed() >= settle) {
                break;
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => records.push(Record {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().map(<[u8]>::to_vec),
                }),
                Some(Err(err)) => eprintln!("reading {topic}: {err}"),
                None => {}
            }
            if reached.is_none() && records.len() >= expect {
                reached = Some(Instant::now());
            }
        }
        records
    })
    .await
    .expect("reader task")
}

/// `GET path` on a plain HTTP endpoint (the binaries' metrics server); returns the body, or `None` if the
/// server did not answer.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(&format!("http://{addr}{path}")).call().ok()?;
    response.body_mut().read_to_string().ok()
}

/// The value of an unlabelled sample `name` in a Prometheus text exposition.
pub fn metric(exposition: &str, name: &str) -> Option<f64> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (metric, value) = line.split_once(' ')?;
            (metric == name).then(|| value.trim().parse().ok())?
        })
}
