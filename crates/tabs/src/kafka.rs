//! Kafka connection arguments and client factories: the one place that sets librdkafka configuration keys.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, FromClientConfigAndContext};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;
use rdkafka::producer::DeliveryResult;
use rdkafka::producer::ProducerContext;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::{Error, Result};

/// Bootstrap address of the Strimzi cluster inside Kubernetes.
pub const DEFAULT_BOOTSTRAP_SERVERS: &str = "medicine-pubsub-kafka-bootstrap:9092";

/// How clients talk to the brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SecurityProtocol {
    #[value(name = "PLAINTEXT", alias = "plaintext")]
    Plaintext,
    #[value(name = "SSL", alias = "ssl")]
    Ssl,
    #[value(name = "SASL_PLAINTEXT", alias = "sasl_plaintext")]
    SaslPlaintext,
    #[value(name = "SASL_SSL", alias = "sasl_ssl")]
    SaslSsl,
}

impl SecurityProtocol {
    fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }

    fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
}

/// SASL mechanisms built into the binaries (no GSSAPI/Kerberos).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SaslMechanism {
    #[value(name = "PLAIN")]
    Plain,
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// A value that must never reach a log line: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for handing to the Kafka client only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

/// One `--kafka-property key=value`; its value is redacted in `Debug` because it may be a credential.
#[derive(Clone, PartialEq, Eq)]
pub struct Property {
    pub key: String,
    pub value: Secret,
}

impl fmt::Debug for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=***", self.key)
    }
}

impl std::str::FromStr for Property {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => Ok(Self {
                key: key.trim().to_owned(),
                value: Secret::new(value),
            }),
            _ => Err(format!(
                "`{s}` is not key=value (e.g. --kafka-property socket.keepalive.enable=true)"
            )),
        }
    }
}

/// Connection settings every binary flattens into its command line.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(long, env = "MEDECINEPUBSUB_KAFKA_SERVERS", default_value = DEFAULT_BOOTSTRAP_SERVERS)]
    pub bootstrap_servers: String,

    /// Security protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    #[arg(long, env = "MEDECINEPUBSUB_KAFKA_SECURITY_PROTOCOL", value_enum, default_value_t = SecurityProtocol::Plaintext)]
    pub security_protocol: SecurityProtocol,

    /// SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (needs a SASL_* protocol).
    #[arg(long, env = "MEDECINEPUBSUB_KAFKA_SASL_MECHANISM", value_enum)]
    pub sasl_mechanism: Option<SaslMechanism>,

    /// SASL user name.
    #[arg(long, env = "MEDECINEPUBSUB_KAFKA_SASL_USERNAME")]
    pub sasl_username: Option<String>,

    /// SASL password (never logged).
    #[arg(
        long,
        env = "MEDECINEPUBSUB_KAFKA_SASL_PASSWORD",
        hide_env_values = true
    )]
    pub sasl_password: Option<Secret>,

    /// PEM file of the CA that signed the brokers' certificates (SSL, SASL_SSL).
    #[arg(long, env = "MEDECINEPUBSUB_KAFKA_SSL_CA_LOCATION")]
    pub ssl_ca_location: Option<PathBuf>,

    /// PEM client certificate for mutual TLS (with --ssl-key-location).
    #[arg(long, env = "MEDECINEPUBSUB_KAFKA_SSL_CERTIFICATE_LOCATION")]
    pub ssl_certificate_location: Option<PathBuf>,

    /// PEM client private key for mutual TLS (with --ssl-certificate-location).
    #[arg(long, env = "MEDECINEPUBSUB_KAFKA_SSL_KEY_LOCATION")]
    pub ssl_key_location: Option<PathBuf>,

    /// Extra librdkafka property key=value, repeatable (`;`-separated in the variable); applied last, so it
    /// overrides the project's settings. Values are never logged.
    #[arg(
        long = "kafka-property",
        env = "MEDECINEPUBSUB_KAFKA_PROPERTIES",
        value_delimiter = ';'
    )]
    pub kafka_properties: Vec<Property>,
}

impl KafkaArgs {
    /// Plain connection to `bootstrap_servers`, as tests and tools build it.
    pub fn plaintext(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            security_protocol: SecurityProtocol::Plaintext,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            kafka_properties: Vec::new(),
        }
    }

    /// Checks the settings without any network call. The message says which flag to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(
                "--bootstrap-servers (MEDECINEPUBSUB_KAFKA_SERVERS) is empty; give host:port"
                    .into(),
            );
        }
        for server in self.bootstrap_servers.split(',').map(str::trim) {
            let port = server
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            if !matches!(port, Some((host, Ok(_))) if !host.is_empty()) {
                return Err(format!(
                    "--bootstrap-servers: `{server}` is not host:port (MEDECINEPUBSUB_KAFKA_SERVERS=host:port[,host:port])"
                ));
            }
        }
        let protocol = self.security_protocol;
        match (protocol.uses_sasl(), self.sasl_mechanism) {
            (true, None) => {
                return Err(format!(
                    "--security-protocol {} needs --sasl-mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)",
                    protocol.as_str()
                ))
            }
            (false, Some(_)) => {
                return Err("--sasl-mechanism needs --security-protocol SASL_PLAINTEXT or SASL_SSL".into())
            }
            (true, Some(_)) if self.sasl_username.is_none() || self.sasl_password.is_none() => {
                return Err("SASL needs both --sasl-username and --sasl-password".into())
            }
            _ => {}
        }
        if !protocol.uses_sasl() && (self.sasl_username.is_some() || self.sasl_password.is_some()) {
            return Err("--sasl-username/--sasl-password need --security-protocol SASL_PLAINTEXT or SASL_SSL".into());
        }
        let tls_files = [
            ("--ssl-ca-location", &self.ssl_ca_location),
            ("--ssl-certificate-location", &self.ssl_certificate_location),
            ("--ssl-key-location", &self.ssl_key_location),
        ];
        for (flag, path) in tls_files {
            if let Some(path) = path {
                if !protocol.uses_tls() {
                    return Err(format!("{flag} needs --security-protocol SSL or SASL_SSL"));
                }
                if !path.is_file() {
                    return Err(format!("{flag}: {} is not a readable file", path.display()));
                }
            }
        }
        if self.ssl_certificate_location.is_some() != self.ssl_key_location.is_some() {
            return Err(
                "mutual TLS needs both --ssl-certificate-location and --ssl-key-location".into(),
            );
        }
        Ok(())
    }

    /// Connection keys shared by every client.
    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("security.protocol", self.security_protocol.as_str())
            // Resolve every address of a bootstrap name, so a Service in front of several brokers works.
            .set("client.dns.lookup", "use_all_dns_ips")
            // Reconnect quickly after a broker restart, but do not hammer a broker that is down.
            .set("reconnect.backoff.ms", "100")
            .set("reconnect.backoff.max.ms", "2000");
        if let Some(mechanism) = self.sasl_mechanism {
            config.set("sasl.mechanism", mechanism.as_str());
        }
        if let Some(username) = &self.sasl_username {
            config.set("sasl.username", username);
        }
        if let Some(password) = &self.sasl_password {
            config.set("sasl.password", password.expose());
        }
        let tls_files = [
            ("ssl.ca.location", &self.ssl_ca_location),
            ("ssl.certificate.location", &self.ssl_certificate_location),
            ("ssl.key.location", &self.ssl_key_location),
        ];
        for (key, path) in tls_files {
            if let Some(path) = path {
                config.set(key, path.to_string_lossy());
            }
        }
        config
    }

    /// Applies `--kafka-property` overrides last and logs their keys (never their values).
    fn apply_overrides(&self, config: &mut ClientConfig) {
        for property in &self.kafka_properties {
            info!(key = %property.key, "librdkafka property overridden by --kafka-property");
            config.set(&property.key, property.value.expose());
        }
    }
}

/// Kafka consumer group protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GroupProtocol {
    /// The classic rebalance protocol (JoinGroup/SyncGroup), with cooperative-sticky assignment.
    Classic,
    /// KIP-848: the broker computes assignments; members join and leave without stopping the group.
    Consumer,
}

/// What a producer is for; decides its delivery settings.
#[derive(Debug, Clone)]
pub enum ProducerKind {
    /// Idempotent, acks=all: no duplicates from retries, nothing acknowledged before every in-sync replica has it.
    Idempotent,
    /// Idempotent, and never gives up on a record (librdkafka retries until Kafka takes it): for producers whose
    /// callers bound what they hand over, so a long outage stops them instead of failing records.
    Persistent,
    /// Transactional (hence idempotent) with this `transactional.id` and transaction timeout.
    Transactional { id: String, timeout: Duration },
}

/// Options of a consumer the project creates.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Consumer group id.
    pub group: String,
    /// Group protocol.
    pub protocol: GroupProtocol,
    /// Read only committed transactional data.
    pub read_committed: bool,
    /// Upper bound of records librdkafka prefetches per partition-set, in KiB (bounds memory whatever the lag).
    pub prefetch_kbytes: u32,
}

/// Remembers the client-level errors librdkafka reports, so start-up can fail with the real reason (a rejected
/// password) instead of a generic timeout, and logs them at the right level.
#[derive(Debug, Default)]
pub struct ErrorTracker {
    last: Mutex<Option<ClientError>>,
    /// Kept apart from `last`: the "brokers are down" errors that follow a refused login must not hide it.
    authentication: Mutex<Option<ClientError>>,
}

/// A client-level error reported by librdkafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    /// librdkafka's code.
    pub code: Option<RDKafkaErrorCode>,
    /// librdkafka's explanation.
    pub reason: String,
}

impl ClientError {
    /// Whether the brokers refused our credentials.
    pub fn is_authentication(&self) -> bool {
        matches!(self.code, Some(RDKafkaErrorCode::Authentication))
            || self.reason.contains("SASL authentication error")
            || self.reason.contains("Authentication failed")
    }
}

impl ErrorTracker {
    /// Records and logs an error callback.
    pub fn record(&self, error: &KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        if matches!(error, KafkaError::PartitionEOF(_))
            || code == Some(RDKafkaErrorCode::PartitionEOF)
        {
            // Readers that ask for end-of-partition events get them here too; they are not errors.
            return;
        }
        let client_error = ClientError {
            code,
            reason: reason.to_owned(),
        };
        if client_error.is_authentication() {
            error!(%reason, "Kafka refused the credentials");
            if let Ok(mut authentication) = self.authentication.lock() {
                *authentication = Some(client_error.clone());
            }
        } else if matches!(
            code,
            Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown)
        ) {
            // Expected while brokers restart and retried by librdkafka; callers that wait for Kafka report it
            // once per attempt with the address, and librdkafka logs the connection failure itself.
            debug!(%reason, "Kafka connection problem (retrying)");
        } else {
            error!(%error, %reason, "Kafka client error");
        }
        if let Ok(mut last) = self.last.lock() {
            *last = Some(client_error);
        }
    }

    /// The latest error, if any.
    pub fn last(&self) -> Option<ClientError> {
        self.last.lock().ok().and_then(|last| last.clone())
    }

    /// The latest refused login, if any.
    pub fn authentication_failure(&self) -> Option<ClientError> {
        self.authentication.lock().ok().and_then(|a| a.clone())
    }
}

/// Client context of the project's producers and plain consumers: errors go to tracing and an [`ErrorTracker`].
#[derive(Debug, Default, Clone)]
pub struct TabsContext {
    pub errors: Arc<ErrorTracker>,
}

impl ClientContext for TabsContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.record(&error, reason);
    }
}

impl ConsumerContext for TabsContext {}

impl ProducerContext for TabsContext {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// librdkafka keys of a producer of this project.
pub fn producer_config(kafka: &KafkaArgs, kind: &ProducerKind) -> ClientConfig {
    let mut config = kafka.client_config();
    config
        // Idempotence: retries never duplicate or reorder a partition's records.
        .set("enable.idempotence", "true")
        // A record is acknowledged only once every in-sync replica has it (implied by idempotence; stated).
        .set("acks", "all")
        // Batch for up to 5 ms: many small records per request without a visible latency cost.
        .set("linger.ms", "5");
    if let ProducerKind::Persistent = kind {
        // 0 = no delivery timeout.
        config.set("message.timeout.ms", "0");
    }
    if let ProducerKind::Transactional { id, timeout } = kind {
        config
            .set("transactional.id", id)
            // A transaction's records are all enqueued before it commits: waiting for more only delays the
            // commit, so send at once.
            .set("linger.ms", "0")
            // Short: a killed maker's open transaction blocks readers and its partitions' offsets until it times
            // out, so this bounds how long a crash delays the next maker.
            .set("transaction.timeout.ms", timeout.as_millis().to_string());
    }
    kafka.apply_overrides(&mut config);
    config
}

/// Creates a producer (a `FutureProducer` or a `ThreadedProducer`) with the project's settings.
pub fn create_producer<T, C>(kafka: &KafkaArgs, kind: &ProducerKind, context: C) -> Result<T>
where
    C: ClientContext,
    T: FromClientConfigAndContext<C>,
{
    let config = producer_config(kafka, kind);
    config
        .create_with_context(context)
        .map_err(|source| Error::ClientCreation {
            what: "producer",
            source,
        })
}

/// librdkafka keys of a consumer of this project.
pub fn consumer_config(kafka: &KafkaArgs, options: &ConsumerOptions) -> ClientConfig {
    let mut config = kafka.client_config();
    config
        .set("group.id", &options.group)
        // Offsets are committed by the application, only for work that is durably done.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // A new group starts from the beginning: orders placed before the first maker started are made too.
        .set("auto.offset.reset", "earliest")
        .set(
            "isolation.level",
            if options.read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        // Bound the prefetch queue by size (librdkafka's default allows 64 MiB): memory stays flat whatever the
        // lag. The size is the bound; the record-count threshold is left at its default so it does not trigger
        // first.
        .set(
            "queued.max.messages.kbytes",
            options.prefetch_kbytes.to_string(),
        )
        // When the prefetch queue is full, look again after 10 ms, not librdkafka's 1 s: with a bounded queue the
        // default stalls fetching for a second each time the maker catches up.
        .set("fetch.queue.backoff.ms", "10")
        // A fetch is answered as soon as data exists; with none, the broker holds it this long. Short, because
        // while one is held librdkafka cannot add newly assigned partitions to a fetch: at 100 ms a new maker's
        // first orders waited two of them (measured); an idle maker then asks 50 times a second.
        .set("fetch.wait.max.ms", "20");
    match options.protocol {
        GroupProtocol::Classic => {
            config
                .set("group.protocol", "classic")
                // Incremental rebalances: a joining maker does not stop the others' partitions.
                .set("partition.assignment.strategy", "cooperative-sticky")
                // A killed maker's partitions move to another after 10 s instead of 45 s.
                .set("session.timeout.ms", "10000")
                .set("heartbeat.interval.ms", "1000");
        }
        GroupProtocol::Consumer => {
            // KIP-848: assignment and session timeout are the broker's (group.consumer.* settings).
            config.set("group.protocol", "consumer");
        }
    }
    kafka.apply_overrides(&mut config);
    config
}

/// librdkafka keys of a reader outside any consumer group (auditor, observers): it assigns partitions itself
/// and never commits.
pub fn reader_config(kafka: &KafkaArgs, read_committed: bool) -> ClientConfig {
    let mut config = kafka.client_config();
    config
        .set("enable.auto.commit", "false")
        .set(
            "isolation.level",
            if read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        // Readers stream whole topics: larger prefetch than the makers, still bounded.
        .set("queued.max.messages.kbytes", "16384")
        // A reader drains that queue faster than a fetch fills it: with librdkafka's 1 s back-off on a full queue
        // the auditor read 120,000 records/s, with 10 ms over 900,000 (bench: `medicine-bench audit`).
        .set("fetch.queue.backoff.ms", "10")
        .set("fetch.wait.max.ms", "100");
    kafka.apply_overrides(&mut config);
    config
}

/// Creates a consumer with the project's settings and the given context.
pub fn create_consumer<T, C>(kafka: &KafkaArgs, options: &ConsumerOptions, context: C) -> Result<T>
where
    C: ClientContext,
    T: FromClientConfigAndContext<C>,
{
    consumer_config(kafka, options)
        .create_with_context(context)
        .map_err(|source| Error::ClientCreation {
            what: "consumer",
            source,
        })
}

/// Waits until the cluster at `kafka.bootstrap_servers` answers and every one of `topics` exists, retrying with
/// backoff. `fetch_metadata` is one blocking metadata request covering them, with a timeout (for example
/// `move |t| producer.client().fetch_metadata(Some(&topic), t)`, or `None` for all topics); it runs on the
/// blocking pool.
///
/// Logs each failed attempt with the address tried. Fails fast when the brokers refuse the credentials, and with
/// [`Error::Unreachable`] or [`Error::TopicMissing`] once `timeout` has passed.
pub async fn wait_for_topics<F>(
    fetch_metadata: F,
    errors: &ErrorTracker,
    kafka: &KafkaArgs,
    topics: &[&str],
    timeout: Duration,
    shutdown: &CancellationToken,
) -> Result<()>
where
    F: Fn(Duration) -> KafkaResult<Metadata> + Clone + Send + 'static,
{
    let started = Instant::now();
    let mut backoff = Duration::from_millis(200);
    loop {
        let remaining = timeout.saturating_sub(started.elapsed());
        let attempt = remaining.clamp(Duration::from_millis(100), Duration::from_secs(1));
        let fetch = fetch_metadata.clone();
        let outcome = tokio::task::spawn_blocking(move || fetch(attempt))
            .await
            .map_err(|e| Error::Internal(format!("metadata task failed: {e}")))?;
        if let Some(client_error) = errors.authentication_failure() {
            return Err(Error::Authentication {
                servers: kafka.bootstrap_servers.clone(),
                user: kafka.sasl_username.clone().unwrap_or_default(),
                reason: client_error.reason,
            });
        }
        let mut missing_topic = None;
        let topic_missing = match outcome {
            Ok(metadata) => {
                let missing = topics.iter().find(|&&topic| {
                    !metadata.topics().iter().any(|t| {
                        t.name() == topic && t.error().is_none() && !t.partitions().is_empty()
                    })
                });
                match missing {
                    None => return Ok(()),
                    Some(topic) => {
                        warn!(servers = %kafka.bootstrap_servers, topic, "topic does not exist yet; waiting for it");
                        missing_topic = Some(*topic);
                        true
                    }
                }
            }
            Err(err) => {
                warn!(servers = %kafka.bootstrap_servers, error = %err, "Kafka is not reachable yet; retrying");
                false
            }
        };
        if started.elapsed() >= timeout {
            return Err(if topic_missing {
                Error::TopicMissing {
                    servers: kafka.bootstrap_servers.clone(),
                    topic: missing_topic.unwrap_or_default().to_owned(),
                    waited: timeout,
                }
            } else {
                Error::Unreachable {
                    servers: kafka.bootstrap_servers.clone(),
                    waited: timeout,
                }
            });
        }
        let pause = backoff.min(timeout.saturating_sub(started.elapsed()));
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shutdown.cancelled() => return Err(Error::Cancelled),
        }
        backoff = (backoff * 2).min(Duration::from_secs(4));
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

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
            reader_config(&kafka, true),
        ] {
            let backoff: u64 = config
                .get("fetch.queue.backoff.ms")
                .and_then(|v| v.parse().ok())
                .expect("fetch.queue.backoff.ms set");
            assert!(backoff <= 10, "{backoff} ms");
            assert!(config.get("queued.max.messages.kbytes").is_some());
        }
    }
}
