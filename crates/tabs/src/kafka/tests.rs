//! The connection arguments and the librdkafka keys the clients get.

use clap::Parser;

use std::time::Duration;

use super::*;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    kafka: KafkaArgs,
}

fn parse(args: &[&str]) -> KafkaArgs {
    Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
        .unwrap()
        .kafka
}

#[test]
fn defaults_to_the_strimzi_bootstrap_service() {
    let kafka = parse(&[]);
    assert_eq!(kafka.bootstrap_servers, DEFAULT_BOOTSTRAP_SERVERS);
    assert_eq!(kafka.validate(), Ok(()));
}

#[test]
fn the_principal_is_the_sasl_user_or_kafka_s_anonymous() {
    assert_eq!(parse(&[]).principal(), "ANONYMOUS");
    let signed_in = parse(&[
        "--security-protocol",
        "SASL_SSL",
        "--sasl-mechanism",
        "SCRAM-SHA-512",
        "--sasl-username",
        "medicine-maker",
    ]);
    assert_eq!(signed_in.principal(), "medicine-maker");
}

#[test]
fn rejects_bootstrap_servers_without_a_port() {
    let err = parse(&["--bootstrap-servers", "kafka"])
        .validate()
        .unwrap_err();
    assert!(err.contains("`kafka` is not host:port"), "{err}");
    let err = parse(&["--bootstrap-servers", "a:1,b:x"])
        .validate()
        .unwrap_err();
    assert!(err.contains("`b:x`"), "{err}");
}

#[test]
fn sasl_needs_a_mechanism_and_credentials() {
    let err = parse(&["--security-protocol", "SASL_PLAINTEXT"])
        .validate()
        .unwrap_err();
    assert!(err.contains("--sasl-mechanism"), "{err}");
    let err = parse(&[
        "--security-protocol",
        "SASL_PLAINTEXT",
        "--sasl-mechanism",
        "SCRAM-SHA-512",
    ])
    .validate()
    .unwrap_err();
    assert!(err.contains("--sasl-username"), "{err}");
    let err = parse(&["--sasl-username", "u"]).validate().unwrap_err();
    assert!(err.contains("SASL_PLAINTEXT"), "{err}");
    let ok = parse(&[
        "--security-protocol",
        "SASL_PLAINTEXT",
        "--sasl-mechanism",
        "SCRAM-SHA-512",
        "--sasl-username",
        "u",
        "--sasl-password",
        "p",
    ]);
    assert_eq!(ok.validate(), Ok(()));
}

#[test]
fn tls_files_must_exist_and_need_a_tls_protocol() {
    let err = parse(&[
        "--security-protocol",
        "SSL",
        "--ssl-ca-location",
        "/nonexistent/ca.pem",
    ])
    .validate()
    .unwrap_err();
    assert!(
        err.contains("/nonexistent/ca.pem is not a readable file"),
        "{err}"
    );
    let err = parse(&["--ssl-ca-location", "Cargo.toml"])
        .validate()
        .unwrap_err();
    assert!(err.contains("needs --security-protocol SSL"), "{err}");
}

#[test]
fn secrets_never_show_in_debug_output() {
    let kafka = parse(&[
        "--security-protocol",
        "SASL_SSL",
        "--sasl-mechanism",
        "PLAIN",
        "--sasl-username",
        "u",
        "--sasl-password",
        "hunter2",
        "--kafka-property",
        "sasl.oauthbearer.client.secret=s3cr3t",
    ]);
    let debug = format!("{kafka:?}");
    assert!(
        !debug.contains("hunter2") && !debug.contains("s3cr3t"),
        "{debug}"
    );
    assert!(
        debug.contains("sasl.oauthbearer.client.secret=***"),
        "{debug}"
    );
}

#[test]
fn kafka_properties_are_applied_last() {
    let kafka = parse(&[
        "--kafka-property",
        "linger.ms=50",
        "--kafka-property",
        "acks=1",
    ]);
    let config = producer_config(&kafka, &ProducerKind::Idempotent);
    assert_eq!(config.get("linger.ms"), Some("50"));
    assert_eq!(config.get("acks"), Some("1"));
    assert!("novalue".parse::<Property>().is_err());
}

#[test]
fn transactional_producers_set_id_and_timeout() {
    let kafka = KafkaArgs::plaintext("127.0.0.1:9092");
    let kind = ProducerKind::Transactional {
        id: "maker-1".into(),
        timeout: Duration::from_secs(10),
    };
    let config = producer_config(&kafka, &kind);
    assert_eq!(config.get("transactional.id"), Some("maker-1"));
    assert_eq!(config.get("transaction.timeout.ms"), Some("10000"));
    assert_eq!(config.get("enable.idempotence"), Some("true"));
    // A large commit holds a window of its records in the client, not all of them.
    assert_eq!(
        config.get("queue.buffering.max.messages"),
        Some(TRANSACTION_QUEUE_MESSAGES.to_string().as_str())
    );
    let idempotent = producer_config(&kafka, &ProducerKind::Idempotent);
    assert_eq!(idempotent.get("queue.buffering.max.messages"), None);
}

/// A maker's consumer: KIP-848, read_committed, 1 MiB prefetch.
fn maker_options() -> ConsumerOptions {
    ConsumerOptions {
        group: "g".into(),
        protocol: GroupProtocol::Consumer,
        read_committed: true,
        prefetch_kbytes: 1024,
    }
}

#[test]
fn consumers_never_auto_commit_and_pick_the_protocol() {
    let kafka = KafkaArgs::plaintext("127.0.0.1:9092");
    let options = maker_options();
    let config = consumer_config(&kafka, &options);
    assert_eq!(config.get("enable.auto.commit"), Some("false"));
    assert_eq!(config.get("group.protocol"), Some("consumer"));
    assert_eq!(config.get("isolation.level"), Some("read_committed"));
    assert_eq!(config.get("session.timeout.ms"), None);
    let classic = consumer_config(
        &kafka,
        &ConsumerOptions {
            protocol: GroupProtocol::Classic,
            ..options
        },
    );
    assert_eq!(
        classic.get("partition.assignment.strategy"),
        Some("cooperative-sticky")
    );
}

#[test]
fn no_reader_waits_a_second_on_its_own_full_prefetch_queue() {
    // librdkafka's default back-off (1 s) once the bounded prefetch queue is full stalls a fast reader.
    let kafka = KafkaArgs::plaintext("127.0.0.1:9092");
    let options = maker_options();
    for config in [
        consumer_config(&kafka, &options),
        reader_config(&kafka, &ReaderOptions::plain(true)),
    ] {
        let backoff: u64 = config
            .get("fetch.queue.backoff.ms")
            .and_then(|v| v.parse().ok())
            .expect("fetch.queue.backoff.ms set");
        assert!(backoff <= 10, "{backoff} ms");
        assert!(config.get("queued.max.messages.kbytes").is_some());
    }
}
