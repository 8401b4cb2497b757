//! The one place that sets librdkafka keys: producers, group consumers and plain readers of this project, each
//! key that is not librdkafka's default with the reason for it.

use std::time::Duration;

use clap::ValueEnum;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, FromClientConfigAndContext};

use super::args::KafkaArgs;
use super::errors::describe;
use crate::{Error, Result};

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

/// Records a transactional producer queues before its `send` waits for the broker to take some.
pub const TRANSACTION_QUEUE_MESSAGES: u32 = 10_000;

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
            // The records of a transaction wait in librdkafka's queue until the broker has them, a copy each and
            // its bookkeeping: at the default bound (100,000) a commit of thousands of orders held most of them
            // there at once. A smaller window keeps the broker as busy and the memory to a tenth.
            .set(
                "queue.buffering.max.messages",
                TRANSACTION_QUEUE_MESSAGES.to_string(),
            )
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
    create(&producer_config(kafka, kind), kafka, "producer", context)
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

/// Options of a reader: a client that assigns partitions itself and never commits.
#[derive(Debug, Clone)]
pub struct ReaderOptions {
    /// The group id it carries (see [`reader_config`]).
    pub group: String,
    /// Read only committed transactional data.
    pub read_committed: bool,
    /// Report the end of each partition as an event.
    pub report_partition_end: bool,
}

impl ReaderOptions {
    /// A reader of `read_committed` data, under a group id of its own, without end-of-partition events.
    pub fn plain(read_committed: bool) -> Self {
        Self {
            group: format!("medicine-pubsub-reader-{}", std::process::id()),
            read_committed,
            report_partition_end: false,
        }
    }
}

/// librdkafka keys of a reader outside any consumer group (auditor, observers): it assigns partitions itself
/// and never commits.
pub fn reader_config(kafka: &KafkaArgs, options: &ReaderOptions) -> ClientConfig {
    let mut config = kafka.client_config();
    config
        // librdkafka wants a group id for assignments; a reader never joins the group nor commits to it (a lag
        // probe reads its committed offsets).
        .set("group.id", &options.group)
        .set("enable.auto.commit", "false")
        .set(
            "isolation.level",
            if options.read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        // An end-of-partition event tells a reader that streams a whole topic when it has caught up.
        .set(
            "enable.partition.eof",
            if options.report_partition_end {
                "true"
            } else {
                "false"
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
    create(&consumer_config(kafka, options), kafka, "consumer", context)
}

/// librdkafka keys of an admin client (topics, metadata): the connection's only.
pub fn admin_config(kafka: &KafkaArgs) -> ClientConfig {
    let mut config = kafka.client_config();
    kafka.apply_overrides(&mut config);
    config
}

/// Creates a reader (see [`reader_config`]) with the given context.
pub fn create_reader<T, C>(kafka: &KafkaArgs, options: &ReaderOptions, context: C) -> Result<T>
where
    C: ClientContext,
    T: FromClientConfigAndContext<C>,
{
    create(&reader_config(kafka, options), kafka, "reader", context)
}

/// Creates an admin client (see [`admin_config`]).
pub fn create_admin<T, C>(kafka: &KafkaArgs, context: C) -> Result<T>
where
    C: ClientContext,
    T: FromClientConfigAndContext<C>,
{
    create(&admin_config(kafka), kafka, "admin client", context)
}

/// Creates a client from `config`; an error names `what` and never shows a property's value.
fn create<T, C>(
    config: &ClientConfig,
    kafka: &KafkaArgs,
    what: &'static str,
    context: C,
) -> Result<T>
where
    C: ClientContext,
    T: FromClientConfigAndContext<C>,
{
    config
        .create_with_context(context)
        .map_err(|source| Error::ClientCreation {
            what,
            reason: describe(&source, &kafka.secret_values()),
        })
}
