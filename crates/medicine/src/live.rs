//! The real [`Broker`]: rdkafka's consumer in the makers' group, and the transactional (exactly-once) or
//! idempotent (at-least-once) producer.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::Producer as _;
use rdkafka::{Offset, TopicPartitionList};
use tabs::config::Guarantee;
use tabs::kafka::{self, ConsumerOptions, KafkaArgs, ProducerKind};
use tracing::{info, warn};

use crate::at_least_once::Publisher;
use crate::broker::{Batch, Broker, CommitFuture, Event, Fetched, GroupFuture};
use crate::config::Config;
use crate::consumer::{
    ends_reading, group_view, partition_list, restart_fetching, rewind_to_committed,
    HandBackOnDrop, MakerContext, Rebalanced,
};
use crate::doubt::{self, OrderKey, Written};
use crate::error::KafkaFailure;
use crate::transactions::{self, InitTask, Topics, TransactionalProducer, BROKER_CALL_TIMEOUT};

/// The warning naming the call a replaced producer is still in (with `call` and `running_ms`).
pub const STUCK_IN: &str = "the replaced producer is still in a transaction call";
/// Bound on closing the consumer (leaving the group) at exit.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on each broker call of a look at the group (the surplus rule); a look that fails is tried again later.
const LOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on the at-least-once producer's last flush at exit (acknowledged tabs are durable already).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where tabs go.
enum Output {
    Transactional {
        producer: TransactionalProducer,
        /// `init_transactions`, running since start-up until the first transaction awaits it.
        ready: Option<InitTask>,
        /// How the producer was made, to make a new one if it becomes unusable.
        kind: ProducerKind,
        /// Where the transactions wrote, across the producers that replace one another.
        written: Arc<Written>,
    },
    AtLeastOnce(Publisher),
}

/// Kafka as the maker's loop sees it.
pub struct Live {
    /// Declared first: dropped before the consumer.
    hand_back: HandBackOnDrop,
    consumer: Arc<StreamConsumer<MakerContext>>,
    output: Output,
    kafka: KafkaArgs,
    topic: String,
    group: String,
    topics: Topics,
    startup_timeout: Duration,
    /// A record received together with a group event: handed out after the event.
    held: Option<Fetched>,
}

impl Live {
    /// Creates the consumer and the producer (transactions are initialised in the background), checks that the
    /// topics exist, and subscribes.
    pub async fn connect(
        config: &Config,
        maker_id: &str,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<Self> {
        let context = MakerContext::new(config.topics.orders());
        let errors = Arc::clone(&context.errors);
        let consumer: StreamConsumer<MakerContext> = kafka::create_consumer(
            &config.kafka,
            &ConsumerOptions {
                group: config.group.clone(),
                protocol: config.group_protocol,
                read_committed: true,
                prefetch_kbytes: config.fetch_queue_kbytes,
            },
            context,
        )?;
        let consumer = Arc::new(consumer);
        let output = Self::output(config, maker_id)?;

        // The three topics are checked before anything is consumed.
        let probe = Arc::clone(&consumer);
        let topics = [
            config.topics.orders(),
            config.topics.deliveries_topic.as_str(),
            config.topics.dlq_topic.as_str(),
        ];
        kafka::wait_for_topics(
            move |topic, timeout| probe.fetch_metadata(Some(topic), timeout),
            &errors,
            &config.kafka,
            &topics,
            config.startup_timeout,
            shutdown,
        )
        .await
        .context("the topics are not usable")?;
        consumer
            .subscribe(&[config.topics.orders()])
            .context("subscribing to the orders topic")?;
        Ok(Self {
            hand_back: HandBackOnDrop(Arc::clone(&consumer)),
            consumer,
            output,
            kafka: config.kafka.clone(),
            topic: config.topics.orders().to_owned(),
            group: config.group.clone(),
            topics: Topics {
                deliveries: config.topics.deliveries_topic.clone(),
                dlq: config.topics.dlq_topic.clone(),
            },
            startup_timeout: config.startup_timeout,
            held: None,
        })
    }

    /// The producer of the guarantee: transactional (its transactions initialised in the background, while the
    /// topics are checked and the group is joined; the first commit waits for it, which keeps it off the cold-start
    /// path), or at-least-once.
    fn output(config: &Config, maker_id: &str) -> anyhow::Result<Output> {
        Ok(match config.guarantee {
            Guarantee::ExactlyOnce => {
                let id = format!("{maker_id}.{}", uuid::Uuid::new_v4().simple());
                // Its transaction coordinator is found from it (an operator's `kafka-transactions.sh describe`).
                info!(transactional_id = %id, "transactional producer created");
                let kind = ProducerKind::Transactional {
                    id,
                    timeout: config.transaction_timeout,
                };
                let written = Arc::new(Written::new(&config.topics.deliveries_topic));
                let (producer, ready) = transactions::start_producer(
                    &config.kafka,
                    &kind,
                    &written,
                    config.startup_timeout,
                )?;
                Output::Transactional {
                    producer,
                    ready: Some(ready),
                    kind,
                    written,
                }
            }
            Guarantee::AtLeastOnce => Output::AtLeastOnce(Publisher::new(&config.kafka)?),
        })
    }

    fn event(rebalanced: Rebalanced) -> Event {
        match rebalanced {
            Rebalanced::Assigned(partitions) => Event::Assigned(partitions),
            Rebalanced::Revoked(partitions) => Event::Revoked(partitions),
            Rebalanced::Lost(partitions) => Event::Lost(partitions),
        }
    }

    fn offsets(&self, batch: &Batch) -> anyhow::Result<TopicPartitionList> {
        let mut list = TopicPartitionList::new();
        for (&partition, &offset) in &batch.offsets {
            list.add_partition_offset(&self.topic, partition, Offset::Offset(offset))
                .context("building the offset list")?;
        }
        Ok(list)
    }
}

impl Broker for Live {
    type Deliverer = Publisher;

    async fn next(&mut self) -> Event {
        loop {
            // Rebalance callbacks run inside `recv()`: their events come before any record after them.
            if let Some(event) = self.consumer.context().take() {
                return Self::event(event);
            }
            if let Some(record) = self.held.take() {
                return Event::Record(record);
            }
            let consumer = Arc::clone(&self.consumer);
            // Transactions still initialising: a refusal (an ACL, a fenced id) fails the maker at once, not at
            // its first commit, which an idle maker would never reach.
            let mut init = match &mut self.output {
                Output::Transactional { ready, .. } => ready.as_mut(),
                Output::AtLeastOnce(_) => None,
            };
            let initialising = init.is_some();
            let received = tokio::select! {
                biased;
                () = consumer.context().wake.notified() => continue,
                joined = async { init.as_mut().expect("checked by the guard").await }, if initialising => {
                    if let Output::Transactional { ready, .. } = &mut self.output {
                        *ready = None;
                    }
                    match joined {
                        Ok(Ok(())) => continue,
                        Ok(Err(err)) => {
                            return Event::Failed(
                                anyhow::Error::new(err).context("initialising Kafka transactions"),
                            )
                        }
                        Err(err) => {
                            return Event::Failed(
                                anyhow::Error::new(err).context("the transactions init task"),
                            )
                        }
                    }
                }
                received = consumer.recv() => received,
            };
            match received {
                Ok(message) => {
                    let record = Fetched {
                        partition: message.partition(),
                        offset: message.offset(),
                        key: message.key().map(<[u8]>::to_vec),
                        payload: message.payload().map(<[u8]>::to_vec),
                    };
                    if let Some(event) = self.consumer.context().take() {
                        self.held = Some(record);
                        return Self::event(event);
                    }
                    return Event::Record(record);
                }
                Err(err) if ends_reading(&err) => {
                    return Event::Failed(anyhow::Error::new(err).context("consuming orders"))
                }
                Err(err) => warn!(error = %err, "consumer error (retrying)"),
            }
        }
    }

    fn take_group_event(&mut self) -> Option<Event> {
        self.consumer.context().take().map(Self::event)
    }

    fn pause(&mut self, partitions: &[i32]) -> anyhow::Result<()> {
        if partitions.is_empty() {
            return Ok(());
        }
        self.consumer
            .pause(&partition_list(&self.topic, partitions))
            .context("pausing partitions")
    }

    fn resume(&mut self, partitions: &[i32]) -> anyhow::Result<()> {
        if partitions.is_empty() {
            return Ok(());
        }
        self.consumer
            .resume(&partition_list(&self.topic, partitions))
            .context("resuming partitions")?;
        restart_fetching(&self.consumer);
        Ok(())
    }

    fn release(&mut self) -> anyhow::Result<()> {
        self.consumer
            .context()
            .release(&*self.consumer)
            .context("handing revoked partitions back to the group")
    }

    fn commit(&mut self, batch: Batch) -> anyhow::Result<CommitFuture> {
        let offsets = self.offsets(&batch)?;
        match &mut self.output {
            Output::AtLeastOnce(_) => {
                self.consumer
                    .commit(&offsets, CommitMode::Async)
                    .context("committing offsets")?;
                Ok(Box::pin(std::future::ready((Ok(()), batch.results))))
            }
            Output::Transactional {
                producer, ready, ..
            } => {
                let Some(group) = self.consumer.group_metadata() else {
                    bail!("the consumer has no group metadata; cannot commit offsets in a transaction");
                };
                let producer = Arc::clone(producer);
                let ready = ready.take();
                let topics = self.topics.clone();
                Ok(Box::pin(async move {
                    if let Some(init) = ready {
                        match init.await {
                            Ok(Ok(())) => {}
                            Ok(Err(err)) => {
                                let reason = format!("initialising Kafka transactions: {err}");
                                return (Err(KafkaFailure::Fatal(reason)), batch.results);
                            }
                            Err(err) => {
                                let reason = format!("transactions init task: {err}");
                                return (Err(KafkaFailure::Fatal(reason)), batch.results);
                            }
                        }
                    }
                    let results = batch.results;
                    let joined = tokio::task::spawn_blocking(move || {
                        let outcome =
                            transactions::transact(&producer, &topics, &results, &offsets, &group);
                        (outcome, results)
                    })
                    .await;
                    match joined {
                        Ok(done) => done,
                        Err(err) => (
                            Err(KafkaFailure::Fatal(format!("transaction task: {err}"))),
                            Vec::new(),
                        ),
                    }
                }))
            }
        }
    }

    fn group_view(&mut self) -> GroupFuture {
        let consumer = Arc::clone(&self.consumer);
        let (topic, group) = (self.topic.clone(), self.group.clone());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || group_view(&consumer, &topic, &group, LOOK_TIMEOUT))
                .await
                .context("the group view task")?
        })
    }

    fn deliverer(&self) -> Option<Publisher> {
        match &self.output {
            Output::AtLeastOnce(publisher) => Some(publisher.clone()),
            Output::Transactional { .. } => None,
        }
    }

    async fn rewind(
        &mut self,
        replace_producer: bool,
    ) -> anyhow::Result<BTreeMap<i32, Option<i64>>> {
        if replace_producer {
            // The producer instance is unusable: fenced because its transaction timed out on the broker
            // (typically while the broker was away). Its transactional id is this process's alone, so no other
            // maker can have fenced it: a new instance with the same id takes over.
            if let Output::Transactional {
                producer,
                ready,
                kind,
                written,
            } = &mut self.output
            {
                if let Some((call, running)) = producer.context().step.current() {
                    // A commit given up as stuck: the call it is stuck in (librdkafka 2.12's
                    // `send_offsets_to_transaction` can wait for a group coordinator that left, past its timeout).
                    warn!(call, running_ms = running.as_millis() as u64, "{STUCK_IN}");
                }
                let (fresh, init) =
                    transactions::start_producer(&self.kafka, kind, written, self.startup_timeout)?;
                let old = std::mem::replace(producer, fresh);
                // Destroying a librdkafka client blocks until its threads end.
                tokio::task::spawn_blocking(move || drop(old));
                // The previous producer's transaction is settled (aborted or committed, its markers written) only
                // once the new producer's init_transactions has returned: a rewind that read the group's offsets
                // before could read them from under an offset commit still on its way, and make orders again.
                *ready = None;
                init.await
                    .context("transactions init task")?
                    .context("initialising Kafka transactions for the replaced producer")?;
            }
        }
        self.held = None;
        let consumer = Arc::clone(&self.consumer);
        let (kafka, group, topic) = (self.kafka.clone(), self.group.clone(), self.topic.clone());
        // Past this, every transaction that could hold the group's offsets back is decided (see
        // `doubt::undecided_after`).
        let settled = match &self.output {
            Output::Transactional {
                kind: ProducerKind::Transactional { timeout, .. },
                ..
            } => (*timeout + doubt::BROKER_TIMEOUT_CHECK).min(BROKER_CALL_TIMEOUT),
            _ => BROKER_CALL_TIMEOUT,
        };
        tokio::task::spawn_blocking(move || {
            rewind_to_committed(
                &consumer,
                (&kafka, &group, &topic),
                settled,
                BROKER_CALL_TIMEOUT,
            )
        })
        .await
        .context("rewind task")?
        .context("rewinding to the committed offsets")
    }

    async fn delivered(&mut self) -> anyhow::Result<HashSet<OrderKey>> {
        let Output::Transactional { written, kind, .. } = &self.output else {
            return Ok(HashSet::new());
        };
        let span = written.recent();
        let (Some(last_write), ProducerKind::Transactional { timeout, .. }) =
            (written.last_write(), kind)
        else {
            return Ok(HashSet::new());
        };
        let now = std::time::Instant::now();
        let wait = doubt::undecided_after(last_write, *timeout, now)
            .saturating_duration_since(now)
            .min(BROKER_CALL_TIMEOUT);
        let (kafka, group, topic) = (
            self.kafka.clone(),
            self.group.clone(),
            self.topics.deliveries.clone(),
        );
        tokio::task::spawn_blocking(move || {
            doubt::delivered_orders(&kafka, &group, &topic, &span, wait)
        })
        .await
        .context("reading the deliveries back")?
    }

    async fn close(self) {
        if let Output::AtLeastOnce(publisher) = &self.output {
            let publisher = publisher.clone();
            let _ = tokio::task::spawn_blocking(move || publisher.flush(FLUSH_TIMEOUT)).await;
        }
        let Self {
            hand_back,
            consumer,
            output,
            ..
        } = self;
        let close = tokio::task::spawn_blocking(move || {
            drop(hand_back);
            consumer.unsubscribe();
            drop(consumer);
        });
        if tokio::time::timeout(CLOSE_TIMEOUT, close).await.is_err() {
            warn!("leaving the group took longer than {CLOSE_TIMEOUT:?}; exiting anyway");
        } else {
            info!("left the group");
        }
        // The producers are dropped on the blocking pool: destroying a librdkafka client waits for its threads.
        let _ = tokio::task::spawn_blocking(move || drop(output)).await;
    }
}
