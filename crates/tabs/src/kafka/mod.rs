//! Kafka: how every binary connects ([`KafkaArgs`]), the one place that sets librdkafka keys (the client
//! factories), what librdkafka reports (errors, without secrets), and waiting for the brokers at start-up.

mod args;
mod clients;
mod errors;
mod wait;

pub use args::{KafkaArgs, Property, SaslMechanism, SecurityProtocol, DEFAULT_BOOTSTRAP_SERVERS};
pub use clients::{
    admin_config, consumer_config, create_admin, create_consumer, create_producer, create_reader,
    producer_config, reader_config, ConsumerOptions, GroupProtocol, ProducerKind, ReaderOptions,
    TRANSACTION_QUEUE_MESSAGES,
};
pub use errors::{denial, describe, ClientError, ErrorTracker, TabsContext};
pub use wait::wait_for_topics;

#[cfg(test)]
mod tests;
