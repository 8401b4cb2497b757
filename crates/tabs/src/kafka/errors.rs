//! What librdkafka reports: client errors remembered for start-up diagnostics, the client context of the
//! project's plain clients, and error descriptions that never show a property's value.

use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, ProducerContext};
use tracing::{debug, error};

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

/// An error of librdkafka for a person to read, without any property value: librdkafka's own description of a
/// refused property repeats the value (a misspelt `sasl.pasword=…` would print the password), so only the key is
/// named, and any of `secrets` that still appears is masked.
pub fn describe(error: &KafkaError, secrets: &[&str]) -> String {
    let text = match error {
        KafkaError::ClientConfig(_, description, key, _value) => {
            format!("librdkafka refused the property `{key}`: {description}")
        }
        other => other.to_string(),
    };
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text, |text, secret| text.replace(secret, "***"))
}

/// The refusal for lack of an ACL somewhere in `error`'s chain of causes, if any: Kafka's code and the kind of
/// resource it is about (`topic`, `group`, `transactional id`, `cluster`).
pub fn denial(error: &(dyn std::error::Error + 'static)) -> Option<(&'static str, &'static str)> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(kafka) = error.downcast_ref::<KafkaError>() {
            match kafka.rdkafka_error_code() {
                Some(RDKafkaErrorCode::TopicAuthorizationFailed) => {
                    return Some(("TopicAuthorizationFailed", "topic"))
                }
                Some(RDKafkaErrorCode::GroupAuthorizationFailed) => {
                    return Some(("GroupAuthorizationFailed", "group"))
                }
                Some(RDKafkaErrorCode::TransactionalIdAuthorizationFailed) => {
                    return Some(("TransactionalIdAuthorizationFailed", "transactional id"))
                }
                Some(RDKafkaErrorCode::ClusterAuthorizationFailed) => {
                    return Some(("ClusterAuthorizationFailed", "cluster"))
                }
                _ => {}
            }
        }
        cause = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use rdkafka::types::RDKafkaConfRes;

    use super::*;

    #[test]
    fn a_refused_property_is_named_without_its_value() {
        let error = KafkaError::ClientConfig(
            RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN,
            "No such configuration property: \"sasl.pasword\"".into(),
            "sasl.pasword".into(),
            "TYPO-SeCrEt-1234".into(),
        );
        let text = describe(&error, &[]);
        assert!(
            text.contains("sasl.pasword") && !text.contains("TYPO-SeCrEt-1234"),
            "{text}"
        );
        assert!(
            error.to_string().contains("TYPO-SeCrEt-1234"),
            "rdkafka's own Display shows it"
        );
    }

    #[test]
    fn a_secret_repeated_in_a_description_is_masked() {
        let error = KafkaError::ClientConfig(
            RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "Invalid value \"hunter2\" for configuration property \"ssl.key.password\"".into(),
            "ssl.key.password".into(),
            "hunter2".into(),
        );
        let text = describe(&error, &["hunter2"]);
        assert!(
            !text.contains("hunter2") && text.contains("ssl.key.password"),
            "{text}"
        );
    }

    #[test]
    fn a_refusal_is_found_among_the_causes() {
        /// What `anyhow`'s `context` makes of an error: a message whose source is the error.
        #[derive(Debug)]
        struct Context(KafkaError);
        impl std::fmt::Display for Context {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("consuming orders")
            }
        }
        impl std::error::Error for Context {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let refused = Context(KafkaError::MessageConsumptionFatal(
            RDKafkaErrorCode::GroupAuthorizationFailed,
        ));
        assert_eq!(
            denial(&refused),
            Some(("GroupAuthorizationFailed", "group"))
        );
        let other = KafkaError::MessageConsumptionFatal(RDKafkaErrorCode::BrokerTransportFailure);
        assert_eq!(denial(&other), None);
    }
}
