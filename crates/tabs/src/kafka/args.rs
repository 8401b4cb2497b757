//! How every binary connects to Kafka: bootstrap servers, TLS, SASL, extra librdkafka properties, and the
//! connection keys they set.

use std::fmt;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use rdkafka::config::ClientConfig;
use secrecy::{ExposeSecret as _, SecretString};
use tracing::info;

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
    /// librdkafka's name.
    pub fn as_str(self) -> &'static str {
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

/// One `--kafka-property key=value`; its value is secret (it may be a credential): never in `Debug`, a log line
/// or an error.
#[derive(Clone)]
pub struct Property {
    pub key: String,
    pub value: SecretString,
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
                value: SecretString::from(value),
            }),
            _ => Err(format!(
                "`{s}` is not key=value (e.g. --kafka-property socket.keepalive.enable=true)"
            )),
        }
    }
}

/// Connection settings every binary flattens into its command line.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Kafka connection")]
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

    /// SASL password (never logged). Prefer the environment variable: a command line is visible to every user
    /// of the machine in /proc/<pid>/cmdline.
    #[arg(
        long,
        env = "MEDECINEPUBSUB_KAFKA_SASL_PASSWORD",
        hide_env_values = true,
        value_parser = parse_secret
    )]
    pub sasl_password: Option<SecretString>,

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

    /// The user the brokers see: the SASL user, or Kafka's `ANONYMOUS` without SASL.
    pub fn principal(&self) -> &str {
        self.sasl_username.as_deref().unwrap_or("ANONYMOUS")
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
    pub(super) fn client_config(&self) -> ClientConfig {
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
            config.set("sasl.password", password.expose_secret());
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
    pub(super) fn apply_overrides(&self, config: &mut ClientConfig) {
        for property in &self.kafka_properties {
            info!(key = %property.key, "librdkafka property overridden by --kafka-property");
            config.set(&property.key, property.value.expose_secret());
        }
    }
}

/// A secret from the command line or the environment.
fn parse_secret(text: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(text))
}

/// The values of every `--kafka-property` and the SASL password: what must never appear in any output.
impl KafkaArgs {
    pub(super) fn secret_values(&self) -> Vec<&str> {
        self.kafka_properties
            .iter()
            .map(|p| p.value.expose_secret())
            .chain(self.sasl_password.as_ref().map(|p| p.expose_secret()))
            .filter(|v| !v.is_empty())
            .collect()
    }
}
