//! Shared pieces of medicine-pubsub: the record formats and their validation, Kafka client factories and
//! connection arguments, configuration parsing, telemetry, shutdown, metrics.
//!
//! Every binary (`patient`, `medicine`, the local mode, the auditor) builds on this crate, so a message format,
//! a librdkafka key or an exit code is defined once, here.

#![forbid(unsafe_code)]

pub mod config;
pub mod kafka;
pub mod keda;
pub mod messages;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
pub mod time;

use std::time::Duration;

/// Errors of the shared library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// librdkafka refused the configuration (the reason names the property, never its value).
    #[error("could not create the Kafka {what}: {reason}")]
    ClientCreation { what: &'static str, reason: String },

    /// No broker answered within the start-up timeout.
    #[error("Kafka is unreachable at {servers} (tried for {waited:?}); check the address and that the brokers run")]
    Unreachable { servers: String, waited: Duration },

    /// The brokers answered but the topic does not exist.
    #[error("topic `{topic}` does not exist on {servers} (waited {waited:?}); create it (deploy/ does) and retry")]
    TopicMissing {
        servers: String,
        topic: String,
        waited: Duration,
    },

    /// The brokers refused the SASL credentials.
    #[error("Kafka at {servers} refused the credentials of user `{user}`: {reason}")]
    Authentication {
        servers: String,
        user: String,
        reason: String,
    },

    /// The brokers answered, but their ACLs do not let this user use a resource: `topic \`tabs.orders\``,
    /// `group \`tabs_makers\``, `transactional id \`…\``; `code` is Kafka's name of the refusal.
    #[error(
        "Kafka at {servers} does not let user `{user}` use {resource} ({code}); \
         grant it in the user's ACLs (deploy/infra/users.yaml) or use the user meant for this program"
    )]
    NotAuthorized {
        servers: String,
        user: String,
        resource: String,
        code: &'static str,
    },

    /// A Kafka operation failed.
    #[error("Kafka {operation} failed: {source}")]
    Kafka {
        operation: &'static str,
        #[source]
        source: rdkafka::error::KafkaError,
    },

    /// The metrics endpoint could not listen.
    #[error("could not serve metrics on {addr}: {source}")]
    MetricsBind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },

    /// Shutdown was requested while waiting.
    #[error("cancelled by shutdown")]
    Cancelled,

    /// A broken invariant (a panicked task, for instance).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result of the shared library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
