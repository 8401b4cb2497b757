//! The users and ACLs of deploy/infra/users.yaml, applied to a real broker with KRaft's StandardAuthorizer
//! through its TLS listener with SCRAM-SHA-512: each user can do its job, and what it must not do fails at once
//! with an error that names the user and the topic.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use audit::liveness::PartitionLag;
use faults::SecondBroker;
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use testkit::access::users_in;
use testkit::{require_broker, Proc};

const EXE: &str = env!("CARGO_BIN_EXE_fault-campaign");

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Secured {
    broker: SecondBroker,
    passwords: Vec<(String, String)>,
}

impl Secured {
    fn password(&self, user: &str) -> &str {
        &self
            .passwords
            .iter()
            .find(|(name, _)| name == user)
            .unwrap_or_else(|| panic!("deploy/infra/users.yaml has no user {user}"))
            .1
    }

    /// The connection flags of `user` (its password goes in the environment, as the pods get it).
    fn flags(&self, user: &str) -> Vec<String> {
        [
            "--bootstrap-servers",
            &self.broker.tls_bootstrap(),
            "--security-protocol",
            "SASL_SSL",
            "--ssl-ca-location",
            self.broker.ca().to_str().unwrap(),
            "--sasl-mechanism",
            "SCRAM-SHA-512",
            "--sasl-username",
            user,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    /// Runs `program` as `user` with its password to its end: the exit code and the log.
    async fn run(&self, program: &str, user: &str, extra: &[&str]) -> (i32, String) {
        self.run_with_password(program, user, self.password(user), extra)
            .await
    }

    async fn run_with_password(
        &self,
        program: &str,
        user: &str,
        password: &str,
        extra: &[&str],
    ) -> (i32, String) {
        let mut args = vec![program.to_owned()];
        args.extend(self.flags(user));
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut proc = Proc::spawn(
            EXE,
            &args,
            &[
                ("MEDECINEPUBSUB_KAFKA_SASL_PASSWORD", password),
                ("RUST_LOG", "info"),
            ],
        );
        let code = proc.exit_code(Duration::from_secs(90)).await;
        (code, proc.stderr_text())
    }

    /// The connection of `user`, as the auditor's library takes it.
    fn kafka_args(&self, user: &str) -> tabs::kafka::KafkaArgs {
        tabs::kafka::KafkaArgs {
            security_protocol: tabs::kafka::SecurityProtocol::SaslSsl,
            sasl_mechanism: Some(tabs::kafka::SaslMechanism::ScramSha512),
            sasl_username: Some(user.to_owned()),
            sasl_password: Some(self.password(user).to_owned().into()),
            ssl_ca_location: Some(self.broker.ca()),
            ..tabs::kafka::KafkaArgs::plaintext(self.broker.tls_bootstrap())
        }
    }
}

async fn secured() -> Secured {
    let broker = SecondBroker::start_for_access(&repo_root()).await.unwrap();
    let users = users_in(&repo_root().join("deploy/infra/users.yaml")).unwrap();
    let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "medicine-patient",
            "medicine-maker",
            "medicine-keda",
            "medicine-auditor"
        ]
    );
    let passwords: Vec<(String, String)> = users
        .iter()
        .map(|u| (u.name.clone(), testkit::unique("pw")))
        .collect();
    let spec: String = users
        .iter()
        .zip(&passwords)
        .map(|(user, (_, password))| user.spec(password))
        .collect();
    eprintln!("{}", broker.apply_access(&spec).unwrap());
    let plain = broker.bootstrap.clone();
    for (topic, partitions) in [
        ("tabs.orders", 12),
        ("tabs.deliveries", 12),
        ("tabs.dlq", 3),
    ] {
        testkit::create_topic(&plain, topic, partitions).await;
    }
    Secured { broker, passwords }
}

#[tokio::test]
async fn the_shipped_acls_let_each_user_do_its_job_and_nothing_more() {
    let _shared = require_broker!();
    let cluster = secured().await;

    // The whole flow, each program as its own user: orders, a hostile record, tabs made exactly once.
    let (code, log) = cluster
        .run(
            "patient",
            "medicine-patient",
            &[
                "--orders",
                "10",
                "--order-period",
                "50ms",
                "--startup-timeout",
                "30s",
            ],
        )
        .await;
    assert_eq!(code, 0, "the patient could not order: {log}");
    testkit::produce(
        &cluster.broker.bootstrap,
        "tabs.orders",
        &[(None, Some(b"not an order".as_slice()))],
    )
    .await;
    let (code, log) = cluster
        .run(
            "medicine",
            "medicine-maker",
            &[
                "--maker-id",
                "medicine-maker-0-test",
                "--tab-making-time",
                "10ms",
                "--idle-exit-after",
                "3s",
                "--startup-timeout",
                "30s",
            ],
        )
        .await;
    assert_eq!(code, 0, "the maker could not make the orders: {log}");

    // The auditor, as its user: every order made once, the hostile record in the DLQ.
    let mut config = audit::Config::for_topics(
        cluster.broker.tls_bootstrap(),
        tabs::config::TopicArgs::new("tabs.orders", "tabs.deliveries", "tabs.dlq"),
        Duration::from_millis(10),
    );
    config.kafka = cluster.kafka_args("medicine-auditor");
    let outcome = tokio::task::spawn_blocking(move || audit::audit(&config))
        .await
        .unwrap()
        .expect("the auditor's user reads the three topics");
    assert_eq!(outcome.report.orders, 10, "{outcome:?}");
    assert_eq!(outcome.report.missing_tabs, 0, "{outcome:?}");
    assert_eq!(outcome.report.duplicated_tabs, 0, "{outcome:?}");
    assert_eq!(
        (outcome.invalid_orders, outcome.dead_lettered),
        (1, 1),
        "{outcome:?}"
    );

    // KEDA's lag query, as its user: the group's committed offsets and the topic's end offsets.
    let keda = cluster.kafka_args("medicine-keda");
    let lag: i64 = tokio::task::spawn_blocking(move || {
        let probe = audit::liveness::LagProbe::open(&keda, "tabs_makers", "tabs.orders")?;
        anyhow::Ok(probe.sample()?.iter().map(PartitionLag::lag).sum())
    })
    .await
    .unwrap()
    .expect("KEDA's user reads the makers' committed offsets and the end offsets");
    assert_eq!(lag, 0, "every order made and committed");

    // Misuse: each fails at once, exit 1, naming the user and the topic.
    let as_patient = ["--orders", "1", "--startup-timeout", "30s"];
    let as_maker = [
        "--maker-id",
        "medicine-maker-0-misuse",
        "--idle-exit-after",
        "3s",
        "--startup-timeout",
        "30s",
    ];
    let misuses = [
        (
            "medicine-patient",
            "patient",
            "tabs.deliveries",
            vec!["--orders-topic", "tabs.deliveries"],
        ),
        ("medicine-maker", "patient", "tabs.orders", vec![]),
        ("medicine-keda", "patient", "tabs.orders", vec![]),
        ("medicine-auditor", "patient", "tabs.orders", vec![]),
        // A maker with a patient's or the auditor's credentials may not publish tabs.
        ("medicine-patient", "medicine", "tabs.deliveries", vec![]),
        ("medicine-auditor", "medicine", "tabs.deliveries", vec![]),
    ];
    for (user, program, topic, extra) in misuses {
        let mut args: Vec<&str> = if program == "patient" {
            as_patient.to_vec()
        } else {
            as_maker.to_vec()
        };
        args.extend(extra);
        let started = Instant::now();
        let (code, log) = cluster.run(program, user, &args).await;
        assert_eq!(code, 1, "{user} as a {program} must be refused: {log}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "refused at once, not at the start-up timeout: {log}"
        );
        // Where the user may see the topic but not write to it, the broker refuses the order itself (or, for a
        // user that may write nowhere, the producer id it needs first).
        let named = log.contains(&format!("does not let user `{user}` use topic `{topic}`"))
            || (log.to_lowercase().contains("authorization failed")
                && log.contains(&format!("`{user}`")));
        assert!(named, "{log}");
        assert!(
            !log.contains(cluster.password(user)),
            "never logs the password"
        );
    }

    // A maker whose id is outside its user's transactional-id prefix may not open transactions.
    let (code, log) = cluster
        .run(
            "medicine",
            "medicine-maker",
            &[
                "--maker-id",
                "other-maker-0",
                "--idle-exit-after",
                "3s",
                "--startup-timeout",
                "30s",
            ],
        )
        .await;
    assert_eq!(code, 1, "a transactional id outside the prefix: {log}");
    assert!(
        log.contains(
            "does not let user `medicine-maker` use transactional ids starting `other-maker-0` \
             (TransactionalIdAuthorizationFailed)"
        ),
        "{log}"
    );

    // Reading orders with a patient's or KEDA's credentials is refused by the broker.
    for user in ["medicine-patient", "medicine-keda"] {
        let reader: rdkafka::consumer::BaseConsumer<tabs::kafka::TabsContext> =
            tabs::kafka::create_reader(
                &cluster.kafka_args(user),
                &tabs::kafka::ReaderOptions::plain(false),
                tabs::kafka::TabsContext::default(),
            )
            .unwrap();
        let mut one = TopicPartitionList::new();
        one.add_partition_offset("tabs.orders", 0, Offset::Beginning)
            .unwrap();
        reader.assign(&one).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let refused = loop {
            match reader.poll(Duration::from_millis(500)) {
                Some(Err(err)) => break err.to_string(),
                Some(Ok(_)) => panic!("{user} read an order"),
                None if Instant::now() > deadline => {
                    panic!("{user}: neither a record nor a refusal")
                }
                None => {}
            }
        };
        assert!(refused.contains("Authorization"), "{user}: {refused}");
    }

    // The makers read their tabs back (committed) after a commit whose outcome they could not know, with a reader
    // under their own group that never joins it: the last stable offset, then the records.
    let maker = cluster.kafka_args("medicine-maker");
    tokio::task::spawn_blocking(move || {
        let reader: rdkafka::consumer::BaseConsumer<tabs::kafka::TabsContext> =
            tabs::kafka::create_reader(
                &maker,
                &tabs::kafka::ReaderOptions {
                    group: "tabs_makers".into(),
                    read_committed: true,
                    report_partition_end: false,
                },
                tabs::kafka::TabsContext::default(),
            )
            .unwrap();
        let mut with_tabs = None;
        for partition in 0..12 {
            let (_, stable) = reader
                .fetch_watermarks("tabs.deliveries", partition, Duration::from_secs(20))
                .expect("the maker's user reads the deliveries' last stable offset");
            if stable > 0 {
                with_tabs = Some(partition);
                break;
            }
        }
        let partition = with_tabs.expect("tabs were made");
        let mut one = TopicPartitionList::new();
        one.add_partition_offset("tabs.deliveries", partition, Offset::Beginning)
            .unwrap();
        reader.assign(&one).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match reader.poll(Duration::from_millis(500)) {
                Some(Ok(_)) => break,
                Some(Err(err)) => panic!("the maker's user may read its tabs back: {err}"),
                None if Instant::now() > deadline => panic!("the maker's user read no tab back"),
                None => {}
            }
        }
    })
    .await
    .unwrap();

    // A wrong password: one line naming the user and the listener.
    let (code, log) = cluster
        .run_with_password(
            "patient",
            "medicine-patient",
            "not-the-password",
            &["--orders", "1", "--startup-timeout", "30s"],
        )
        .await;
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("refused the credentials of user `medicine-patient`"),
        "{log}"
    );
    assert!(log.contains(&cluster.broker.tls_bootstrap()), "{log}");
}
