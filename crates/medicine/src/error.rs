//! Why Kafka did not do what the maker asked, classed by what the maker does about it.

/// A failure of Kafka or of its client, by its consequence (as vector's Kafka sink classes librdkafka's errors):
/// an aborted transaction's orders are made again from the committed offsets, a producer that cannot go on is
/// replaced first, and a record refused for good ends the maker (exit 1; its order stays in the topic for the
/// next). Errors the client retries by itself never reach the loop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KafkaFailure {
    /// The transaction was aborted: nothing of it is visible.
    #[error("{0}")]
    Aborted(String),
    /// The producer cannot go on (fenced, a fatal client error, or its machinery broke): a new one must take over.
    #[error("{0}")]
    Fatal(String),
    /// Kafka refused a record for good (at-least-once delivery).
    #[error("{0}")]
    Refused(String),
}

impl KafkaFailure {
    /// Whether the producer must be replaced before the orders are made again.
    pub fn needs_new_producer(&self) -> bool {
        matches!(self, Self::Fatal(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_fatal_failure_replaces_the_producer_and_each_says_its_reason() {
        assert!(KafkaFailure::Fatal("fenced".into()).needs_new_producer());
        assert!(!KafkaFailure::Aborted("timed out".into()).needs_new_producer());
        assert!(!KafkaFailure::Refused("too large".into()).needs_new_producer());
        assert_eq!(
            KafkaFailure::Aborted("timed out".into()).to_string(),
            "timed out"
        );
    }
}
