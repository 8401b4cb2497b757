//! The maker's loop: fetch orders, start their making, commit finished ones, follow rebalances, drain and exit.
//!
//! One task owns the consumer, the ledger and the producer's transactions, so no lock orders them: rebalance
//! callbacks run inside `recv()` on this task and are applied before anything else is done with their partitions.
//! Orders are made on their own tasks and report back over a channel.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use prometheus_client::registry::Registry;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tabs::kafka::{self, ConsumerOptions, ErrorTracker, ProducerKind, TabsContext};
use tabs::messages::{parse_order, to_json, DeadLetter, Order, Tab};
use tabs::metrics::{self, Health};
use tabs::time::now_ns;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::at_least_once::{self, AckContext, Pending, Publisher};
use crate::ledger::{Epoch, Ledger};
use crate::making::make_order;
use crate::stats::{Stats, Summary};
use crate::{Config, Guarantee};

/// Consecutive aborted transactions after which the maker gives up (exit 1) instead of redoing the same work
/// forever: something outside it is broken (a deleted topic, a full disk) and needs a person.
const MAX_CONSECUTIVE_ABORTS: u32 = 5;
/// Timeout of one blocking call to the broker (transaction steps, committed offsets, seeks).
const BROKER_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Past the drain deadline, how long the last transactions may still take before the maker exits without them.
const FINAL_COMMIT_GRACE: Duration = Duration::from_secs(2);
/// Bound on closing the consumer (leaving the group) at exit.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A change of assignment, reported by the consumer's rebalance callbacks.
#[derive(Debug)]
enum RebalanceEvent {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// Consumer context: errors to the tracker, rebalances queued for the loop.
#[derive(Default)]
struct MakerContext {
    errors: Arc<ErrorTracker>,
    topic: String,
    events: Mutex<Vec<RebalanceEvent>>,
    /// Wakes the loop when an event is queued, even while `recv()` has no record to return.
    wake: Notify,
}

impl MakerContext {
    fn partitions(&self, list: &TopicPartitionList) -> Vec<i32> {
        list.elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect()
    }

    fn push(&self, event: RebalanceEvent) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event);
        }
        self.wake.notify_one();
    }

    fn take_events(&self) -> Vec<RebalanceEvent> {
        self.events
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default()
    }
}

impl ClientContext for MakerContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.record(&error, reason);
    }
}

impl ConsumerContext for MakerContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            // Before librdkafka lets the partitions go: their work must stop being committed by us.
            Rebalance::Revoke(list) => self.push(RebalanceEvent::Revoked(self.partitions(list))),
            Rebalance::Error(err) => warn!(error = %err, "rebalance error"),
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            self.push(RebalanceEvent::Assigned(self.partitions(list)));
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(err) = result {
            // At-least-once only: the orders are made again by whoever reads them next.
            warn!(error = %err, partitions = offsets.count(), "offset commit failed");
        }
    }
}

/// What became of one fetched record.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// An order made; its tabs wait for the transaction.
    Made { order: Order, tabs: Vec<Tab> },
    /// A rejected record; its dead letter waits for the transaction.
    Rejected {
        key: Option<Vec<u8>>,
        letter: DeadLetter,
    },
    /// At-least-once: tabs or dead letter already written and acknowledged.
    Delivered {
        order_timestamp_ns: u64,
        tabs: u32,
        rejected: Option<String>,
    },
    /// At-least-once: Kafka refused a record for good; the maker stops without committing the order.
    Failed(String),
}

/// A finished record, reported by its task (or, at-least-once, by its last acknowledgement).
pub(crate) struct Completion {
    pub(crate) partition: i32,
    pub(crate) epoch: Epoch,
    pub(crate) offset: i64,
    pub(crate) outcome: Outcome,
}

/// Where tabs go.
enum Output {
    /// A plain (not threaded) producer: its delivery reports are served by the transaction's own flush, which
    /// then returns as soon as the last record is acknowledged. (A `ThreadedProducer`'s background thread takes
    /// those reports, and rdkafka's flush then sleeps out its 100 ms poll on every transaction.)
    Transactional(Arc<BaseProducer<TabsContext>>),
    AtLeastOnce(Publisher),
}

/// Why the loop ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Signal,
    Idle,
    MaxOrders,
}

impl StopReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Signal => "signal",
            Self::Idle => "idle",
            Self::MaxOrders => "max-orders",
        }
    }
}

/// What woke the loop.
enum Wake {
    Record(KafkaResult<OwnedMessage>),
    Completion(Completion),
    CommitDue,
    CommitDone(TransactionResult),
    ShutdownRequested,
    DrainTimedOut,
    IdleCheck,
    Rebalance,
}

/// The maker.
pub struct Worker {
    config: Config,
    maker_id: String,
    shutdown: CancellationToken,
    consumer: Arc<StreamConsumer<MakerContext>>,
    output: Output,
    /// How the producer was made, to make a new one if it becomes unusable.
    producer_kind: ProducerKind,
    /// `init_transactions`, running since start-up until the first commit awaits it.
    transactions_ready: Option<InitTask>,
    /// The transaction in flight, if any (exactly-once).
    committing: Option<Transaction>,
    ledger: Ledger<Outcome>,
    completions: (mpsc::Sender<Completion>, mpsc::Receiver<Completion>),
    tasks: TaskTracker,
    stats: Arc<Stats>,
    health: Arc<Health>,
    /// Whether the assigned partitions are paused (at the in-flight bound, or draining).
    paused: bool,
    /// A record received while paused (it raced the pause): processed first once there is room.
    stash: Option<OwnedMessage>,
    /// Records accepted, for `--max-orders`.
    accepted: u64,
    /// Last record fetched or partition assigned: the idle countdown starts here.
    last_activity: Instant,
    /// Whether the group has given this maker an assignment (possibly empty) yet. A maker still joining is not
    /// idle: on a busy group the first assignment can take longer than the idle time.
    joined: bool,
    last_commit: Instant,
    consecutive_aborts: u32,
    stopping: Option<(StopReason, tokio::time::Instant)>,
    /// The drain deadline passed: unfinished orders were abandoned.
    drain_expired: bool,
    /// When orders were last committed.
    last_committed: Option<Instant>,
    started: Instant,
    /// When the consumer subscribed: the group join time is measured from here.
    subscribed: Instant,
    first_commit_logged: bool,
}

impl Worker {
    /// Connects to Kafka, prepares the producer (and its transactions) and subscribes.
    pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let started = Instant::now();
        let maker_id = config.maker_id();
        let context = MakerContext {
            topic: config.topics.orders_topic.clone(),
            ..MakerContext::default()
        };
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

        let mut registry = Registry::default();
        let stats = Arc::new(Stats::register(&mut registry));
        let health = Arc::new(Health::default());
        if let Some(addr) = config.telemetry.metrics_addr {
            metrics::serve(
                addr,
                Arc::new(registry),
                Arc::clone(&health),
                shutdown.clone(),
            )
            .await?;
        }

        info!(
            maker = %maker_id,
            servers = %config.kafka.bootstrap_servers,
            topic = %config.topics.orders_topic,
            group = %config.group,
            protocol = ?config.group_protocol,
            guarantee = ?config.guarantee,
            max_in_flight_orders = config.max_in_flight_orders,
            tab_making_time = ?config.tab_making_time,
            "maker starting"
        );
        // Transactions are initialised (coordinator lookup, producer id) while the topics are checked and the
        // group is joined; the first commit waits for it. This keeps it off the cold-start path.
        let producer_kind = match config.guarantee {
            Guarantee::ExactlyOnce => ProducerKind::Transactional {
                id: format!("{}.{}", maker_id, uuid::Uuid::new_v4().simple()),
                timeout: config.transaction_timeout,
            },
            Guarantee::AtLeastOnce => ProducerKind::Persistent,
        };
        let (output, transactions_ready) = match producer_kind {
            ProducerKind::Transactional { .. } => {
                let (producer, ready) = start_transactional_producer(
                    &config.kafka,
                    &producer_kind,
                    config.startup_timeout,
                )?;
                (Output::Transactional(producer), Some(ready))
            }
            ProducerKind::Idempotent | ProducerKind::Persistent => (
                Output::AtLeastOnce(kafka::create_producer(
                    &config.kafka,
                    &producer_kind,
                    AckContext::default(),
                )?),
                None,
            ),
        };

        // One metadata request checks the three topics.
        let probe = Arc::clone(&consumer);
        let topics = [
            config.topics.orders_topic.as_str(),
            config.deliveries_topic.as_str(),
            config.dlq_topic.as_str(),
        ];
        kafka::wait_for_topics(
            move |timeout| probe.fetch_metadata(None, timeout),
            &errors,
            &config.kafka,
            &topics,
            config.startup_timeout,
            &shutdown,
        )
        .await
        .context("the topics are not usable")?;

        consumer
            .subscribe(&[config.topics.orders_topic.as_str()])
            .context("subscribing to the orders topic")?;
        health.set_ready(true);

        let capacity = config.max_in_flight_orders as usize;
        Ok(Self {
            maker_id,
            shutdown,
            consumer,
            output,
            producer_kind,
            transactions_ready,
            committing: None,
            ledger: Ledger::default(),
            completions: mpsc::channel(capacity),
            tasks: TaskTracker::new(),
            stats,
            health,
            paused: false,
            stash: None,
            accepted: 0,
            last_activity: Instant::now(),
            joined: false,
            last_commit: Instant::now(),
            consecutive_aborts: 0,
            stopping: None,
            drain_expired: false,
            last_committed: None,
            started,
            subscribed: Instant::now(),
            first_commit_logged: false,
            config,
        })
    }

    /// Runs until idle, `--max-orders`, or shutdown and drain; then commits, leaves the group and reports.
    pub async fn run(mut self) -> anyhow::Result<Summary> {
        let reason = loop {
            if let Some((reason, _)) = self.stopping {
                // Past the drain deadline only the last commit remains (bounded, in `finish`).
                if self.in_flight() == 0 || self.drain_expired {
                    break reason;
                }
            }
            if self.can_fetch() {
                if let Some(message) = self.stash.take() {
                    self.accept(&message);
                    continue;
                }
            }
            self.update_pause()?;
            self.stats.in_flight.set(self.in_flight() as i64);

            let wake = self.next_wake().await;
            self.apply_rebalances();
            match wake {
                Wake::Record(Ok(message)) => {
                    self.last_activity = Instant::now();
                    if self.can_fetch() {
                        self.accept(&message);
                    } else {
                        self.stash = Some(message);
                    }
                }
                Wake::Record(Err(err)) => self.on_consumer_error(err)?,
                Wake::Completion(completion) => self.complete(completion)?,
                Wake::CommitDue => self.commit().await?,
                Wake::CommitDone(joined) => self.on_commit_done(joined).await?,
                Wake::ShutdownRequested => self.stop(StopReason::Signal),
                Wake::DrainTimedOut => {
                    self.drain_expired = true;
                    let abandoned = self.ledger.abandon_unfinished();
                    if abandoned > 0 {
                        warn!(
                            orders = abandoned,
                            "drain timeout reached; unfinished orders are left to the next maker"
                        );
                    }
                }
                Wake::IdleCheck if !self.joined => {
                    bail!(
                        "no assignment from group {} within {:?} (--startup-timeout)",
                        self.config.group,
                        self.config.startup_timeout
                    );
                }
                Wake::IdleCheck => {
                    let idle = self.config.idle_exit_after;
                    if self.in_flight() == 0
                        && self.stash.is_none()
                        && self.last_activity.elapsed() >= idle
                    {
                        info!(idle = ?idle, "nothing to do; exiting");
                        self.stop(StopReason::Idle);
                    }
                }
                Wake::Rebalance => {}
            }
        };
        self.finish(reason).await
    }

    /// Whether new records may be started.
    fn can_fetch(&self) -> bool {
        self.stopping.is_none() && self.in_flight() < self.config.max_in_flight_orders as usize
    }

    /// Waits for the next thing to do.
    async fn next_wake(&mut self) -> Wake {
        let commit_at =
            tokio::time::Instant::from_std(self.last_commit + self.config.commit_interval);
        // One transaction at a time: the next starts when the one in flight has ended.
        let commit_due = self.ledger.has_ready() && self.committing.is_none();
        let drain_deadline = self.stopping.map(|(_, deadline)| deadline);
        let draining = drain_deadline.is_some() && !self.drain_expired;
        let idle = self.config.idle_exit_after;
        let idle_watch = !idle.is_zero() && self.stopping.is_none() && self.in_flight() == 0;
        let idle_at = tokio::time::Instant::from_std(if self.joined {
            self.last_activity + idle
        } else {
            self.started + self.config.startup_timeout
        });
        let fetch = self.stash.is_none();
        let consumer = Arc::clone(&self.consumer);
        let context = Arc::clone(consumer.context());
        let committing = self.committing.as_mut().map(|t| &mut t.handle);
        let transaction_done = async {
            match committing {
                Some(handle) => handle.await,
                None => std::future::pending().await,
            }
        };

        tokio::select! {
            biased;
            () = self.shutdown.cancelled(), if self.stopping.is_none() => Wake::ShutdownRequested,
            Some(completion) = self.completions.1.recv() => Wake::Completion(completion),
            joined = transaction_done => Wake::CommitDone(joined),
            () = tokio::time::sleep_until(commit_at), if commit_due => Wake::CommitDue,
            () = tokio::time::sleep_until(drain_deadline.unwrap_or_else(tokio::time::Instant::now)), if draining => {
                Wake::DrainTimedOut
            }
            () = context.wake.notified() => Wake::Rebalance,
            record = consumer.recv(), if fetch => Wake::Record(record.map(|m| m.detach())),
            () = tokio::time::sleep_until(idle_at), if idle_watch => Wake::IdleCheck,
        }
    }

    /// Applies the assignment changes the consumer reported.
    fn apply_rebalances(&mut self) {
        for event in self.consumer.context().take_events() {
            match event {
                RebalanceEvent::Assigned(partitions) => {
                    self.joined = true;
                    self.last_activity = Instant::now();
                    for &partition in &partitions {
                        self.ledger.assign(partition);
                    }
                    info!(
                        ?partitions,
                        since_start_ms = self.started.elapsed().as_millis() as u64,
                        since_subscribe_ms = self.subscribed.elapsed().as_millis() as u64,
                        "partitions assigned"
                    );
                    if self.paused {
                        if let Err(err) = self.consumer.pause(&self.partition_list(&partitions)) {
                            warn!(error = %err, "could not pause newly assigned partitions");
                        }
                    }
                }
                RebalanceEvent::Revoked(partitions) => {
                    let dropped: usize = partitions.iter().map(|&p| self.ledger.revoke(p)).sum();
                    if self
                        .stash
                        .as_ref()
                        .is_some_and(|m| partitions.contains(&m.partition()))
                    {
                        self.stash = None;
                    }
                    info!(?partitions, dropped_orders = dropped, "partitions revoked");
                }
            }
        }
    }

    fn partition_list(&self, partitions: &[i32]) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for &partition in partitions {
            list.add_partition(&self.config.topics.orders_topic, partition);
        }
        list
    }

    /// Pauses fetching at the in-flight bound or while draining, resumes when there is room again.
    fn update_pause(&mut self) -> anyhow::Result<()> {
        let want_paused = !self.can_fetch();
        if want_paused == self.paused {
            return Ok(());
        }
        let partitions: Vec<i32> = self.ledger.partitions().collect();
        let list = self.partition_list(&partitions);
        if want_paused {
            self.consumer.pause(&list).context("pausing partitions")?;
            debug!(in_flight = self.in_flight(), "paused fetching");
        } else {
            self.consumer.resume(&list).context("resuming partitions")?;
            self.restart_fetching();
            debug!(in_flight = self.in_flight(), "resumed fetching");
        }
        self.paused = want_paused;
        Ok(())
    }

    /// Makes librdkafka fetch again now. A resume alone waits for the fetcher's next wake-up, up to a second
    /// (measured: ~750 ms on every resume); a seek of each partition to its current position wakes it at once and
    /// changes nothing else, since a paused partition is fetched again from that position anyway.
    fn restart_fetching(&self) {
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        let mut seeks = TopicPartitionList::new();
        for element in positions.elements() {
            if let Offset::Offset(offset) = element.offset() {
                let _ = seeks.add_partition_offset(
                    element.topic(),
                    element.partition(),
                    Offset::Offset(offset),
                );
            }
        }
        if seeks.count() > 0 {
            if let Err(err) = self.consumer.seek_partitions(seeks, Duration::ZERO) {
                debug!(error = %err, "could not nudge the fetcher; it resumes within a second");
            }
        }
    }

    /// Starts the work of one fetched record: an order to make, or a rejection.
    fn accept(&mut self, message: &OwnedMessage) {
        let (partition, offset) = (message.partition(), message.offset());
        let Some((epoch, cancel)) = self.ledger.track(partition, offset) else {
            debug!(
                partition,
                offset, "record of a partition no longer assigned; skipped"
            );
            return;
        };
        self.accepted += 1;
        if self.config.max_orders > 0 && self.accepted >= self.config.max_orders {
            info!(orders = self.accepted, "--max-orders reached; finishing");
            self.stop(StopReason::MaxOrders);
        }
        let sender = self.completions.0.clone();
        match parse_order(message.payload(), self.config.max_tabs_count) {
            Ok(order) => {
                let making_time = self.config.tab_making_time;
                let publisher = match &self.output {
                    Output::AtLeastOnce(producer) => {
                        Some((producer.clone(), self.config.deliveries_topic.clone()))
                    }
                    Output::Transactional(_) => None,
                };
                self.tasks.spawn(async move {
                    let tabs = tokio::select! {
                        tabs = make_order(&order, making_time) => tabs,
                        () = cancel.cancelled() => return,
                    };
                    let Some((producer, topic)) = publisher else {
                        let outcome = Outcome::Made { order, tabs };
                        let _ = sender
                            .send(Completion {
                                partition,
                                epoch,
                                offset,
                                outcome,
                            })
                            .await;
                        return;
                    };
                    // At-least-once: hand the tabs over now; the last acknowledgement reports the order.
                    let key = order.patient_id.clone().into_bytes();
                    let records: Vec<(Option<Vec<u8>>, Vec<u8>)> = tabs
                        .into_iter()
                        .map(|tab| {
                            let tab = Tab {
                                delivery_timestamp_ns: now_ns(),
                                ..tab
                            };
                            (Some(key.clone()), to_json(&tab))
                        })
                        .collect();
                    let done = Completion {
                        partition,
                        epoch,
                        offset,
                        outcome: Outcome::Delivered {
                            order_timestamp_ns: order.order_timestamp_ns,
                            tabs: order.tabs_count,
                            rejected: None,
                        },
                    };
                    let pending = Pending::new(order.tabs_count, done, sender);
                    if let Err(err) =
                        at_least_once::publish(&producer, &topic, &records, &pending).await
                    {
                        pending.fail(err.to_string()).await;
                    }
                });
            }
            Err(rejection) => {
                warn!(
                    partition,
                    offset,
                    reason = rejection.code(),
                    error = %rejection,
                    "record rejected to the DLQ"
                );
                let letter = DeadLetter::new(
                    "validate",
                    &rejection,
                    &self.config.topics.orders_topic,
                    partition,
                    offset,
                    message.key(),
                    message.payload(),
                    &self.maker_id,
                    now_ns(),
                );
                let key = message.key().map(<[u8]>::to_vec);
                match &self.output {
                    Output::Transactional(_) => {
                        self.ledger.complete(
                            partition,
                            epoch,
                            offset,
                            Outcome::Rejected { key, letter },
                        );
                    }
                    Output::AtLeastOnce(producer) => {
                        let producer = producer.clone();
                        let topic = self.config.dlq_topic.clone();
                        self.tasks.spawn(async move {
                            let records = [(key, to_json(&letter))];
                            let done = Completion {
                                partition,
                                epoch,
                                offset,
                                outcome: Outcome::Delivered {
                                    order_timestamp_ns: 0,
                                    tabs: 0,
                                    rejected: Some(letter.reason),
                                },
                            };
                            let pending = Pending::new(1, done, sender);
                            if let Err(err) =
                                at_least_once::publish(&producer, &topic, &records, &pending).await
                            {
                                pending.fail(err.to_string()).await;
                            }
                        });
                    }
                }
            }
        }
    }

    fn complete(&mut self, completion: Completion) -> anyhow::Result<()> {
        let Completion {
            partition,
            epoch,
            offset,
            outcome,
        } = completion;
        if let Outcome::Failed(reason) = outcome {
            bail!("Kafka refused a record of the order at {partition}/{offset} for good: {reason}");
        }
        if !self.ledger.complete(partition, epoch, offset, outcome) {
            debug!(
                partition,
                offset, "result of a revoked or rewound record dropped"
            );
        }
        Ok(())
    }

    fn on_consumer_error(&mut self, err: KafkaError) -> anyhow::Result<()> {
        match err.rdkafka_error_code() {
            Some(
                RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::Fatal,
            ) => Err(err).context("consuming orders"),
            _ => {
                warn!(error = %err, "consumer error (retrying)");
                Ok(())
            }
        }
    }

    fn stop(&mut self, reason: StopReason) {
        if self.stopping.is_none() {
            if reason == StopReason::Signal {
                info!(in_flight = self.in_flight(), drain_timeout = ?self.config.drain_timeout, "draining");
            }
            self.health.set_ready(false);
            self.stopping = Some((
                reason,
                tokio::time::Instant::now() + self.config.drain_timeout,
            ));
        }
    }

    /// Commits every partition's finished prefix: in one transaction with its tabs and dead letters
    /// (exactly-once), or as plain offsets (at-least-once, tabs already acknowledged).
    /// Commits every partition's finished prefix: as plain offsets at once (at-least-once, tabs already
    /// acknowledged), or by starting a transaction with its tabs and dead letters (exactly-once) that runs on the
    /// blocking pool while this loop goes on fetching and making; its end arrives as [`Wake::CommitDone`]. One
    /// transaction at a time.
    async fn commit(&mut self) -> anyhow::Result<()> {
        let ready = self.ledger.take_ready();
        if ready.is_empty() {
            return Ok(());
        }
        let offsets = self.offset_list(&ready.offsets)?;
        match &self.output {
            Output::AtLeastOnce(_) => {
                self.consumer
                    .commit(&offsets, CommitMode::Async)
                    .context("committing offsets")?;
                self.stats.commits.inc();
                let committed_at = now_ns();
                for outcome in &ready.results {
                    self.record_done(outcome, committed_at);
                }
                self.note_committed();
                self.last_commit = Instant::now();
            }
            Output::Transactional(producer) => {
                let producer = Arc::clone(producer);
                if let Some(init) = self.transactions_ready.take() {
                    init.await
                        .context("transactions init task")?
                        .context("initialising Kafka transactions")?;
                }
                let Some(group) = self.consumer.group_metadata() else {
                    bail!("the consumer has no group metadata; cannot commit offsets in a transaction");
                };
                let deliveries = self.config.deliveries_topic.clone();
                let dlq = self.config.dlq_topic.clone();
                let records = ready.results.len();
                let handle = tokio::task::spawn_blocking(move || {
                    let outcome = transact(
                        &producer,
                        &deliveries,
                        &dlq,
                        &ready.results,
                        &offsets,
                        &group,
                    );
                    (outcome, ready.results)
                });
                self.committing = Some(Transaction {
                    handle,
                    began: Instant::now(),
                    records,
                });
            }
        }
        Ok(())
    }

    /// Handles the end of the transaction in flight.
    async fn on_commit_done(&mut self, joined: TransactionResult) -> anyhow::Result<()> {
        let Some(transaction) = self.committing.take() else {
            return Ok(());
        };
        // The interval runs from the end of a commit: while one takes long, more orders finish, and the next
        // transaction carries them all.
        self.last_commit = Instant::now();
        let (outcome, results) = joined.context("transaction task")?;
        match outcome {
            Ok(()) => {
                debug!(
                    records = results.len(),
                    duration_ms = transaction.began.elapsed().as_millis() as u64,
                    "transaction committed"
                );
                self.consecutive_aborts = 0;
                self.stats.commits.inc();
                let committed_at = now_ns();
                for outcome in &results {
                    self.record_done(outcome, committed_at);
                }
                self.note_committed();
                Ok(())
            }
            Err(TxnError::Aborted(err)) => {
                self.count_lost_transaction(
                    &err,
                    results.len(),
                    "transaction aborted; rewinding to the committed offsets to make the orders again",
                )?;
                self.rewind().await
            }
            Err(TxnError::Fatal(err)) => {
                // The producer instance is unusable: fenced because its transaction timed out on the broker
                // (typically while the broker was away). Its transactional id is this process's alone, so no
                // other maker can have fenced it: a new instance with the same id takes over, and the orders of
                // the lost transaction are made again.
                self.count_lost_transaction(
                    &err,
                    results.len(),
                    "the transactional producer cannot continue; replacing it and making the orders again",
                )?;
                let (producer, ready) = start_transactional_producer(
                    &self.config.kafka,
                    &self.producer_kind,
                    self.config.startup_timeout,
                )?;
                if let Output::Transactional(old) =
                    std::mem::replace(&mut self.output, Output::Transactional(producer))
                {
                    // Destroying a librdkafka client blocks until its threads end.
                    tokio::task::spawn_blocking(move || drop(old));
                }
                self.transactions_ready = Some(ready);
                self.rewind().await
            }
        }
    }

    /// Counts a transaction that did not commit, and gives up after [`MAX_CONSECUTIVE_ABORTS`] in a row: a broker
    /// that refuses every transaction is not waited out here but reported (the job fails, the orders stay in
    /// the topic for the next maker).
    fn count_lost_transaction(
        &mut self,
        err: &KafkaError,
        orders: usize,
        what: &str,
    ) -> anyhow::Result<()> {
        self.stats.aborts.inc();
        self.consecutive_aborts += 1;
        warn!(error = %err, orders, consecutive = self.consecutive_aborts, "{what}");
        if self.consecutive_aborts >= MAX_CONSECUTIVE_ABORTS {
            bail!(
                "{MAX_CONSECUTIVE_ABORTS} transactions in a row did not commit; last error: {err}"
            );
        }
        Ok(())
    }

    /// Waits for the transaction in flight, if any, and handles its end; with a `bound`, gives up after it
    /// (returns false, the transaction left running).
    async fn settle_commit_within(&mut self, bound: Option<Duration>) -> anyhow::Result<bool> {
        let Some(transaction) = self.committing.as_mut() else {
            return Ok(true);
        };
        let joined = match bound {
            None => (&mut transaction.handle).await,
            Some(bound) => match tokio::time::timeout(bound, &mut transaction.handle).await {
                Ok(joined) => joined,
                Err(_) => {
                    warn!(
                        orders = transaction.records,
                        "a transaction is still in flight at the drain deadline; leaving it to Kafka to abort"
                    );
                    return Ok(false);
                }
            },
        };
        self.on_commit_done(joined).await?;
        Ok(true)
    }

    /// Orders fetched and not yet committed: those in the ledger and those in the transaction in flight. This
    /// is what `--max-in-flight-orders` bounds.
    fn in_flight(&self) -> usize {
        self.ledger.in_flight() + self.committing.as_ref().map_or(0, |t| t.records)
    }

    /// Notes a successful commit: the first is logged (cold start), the last goes in the summary (the end of
    /// the work, before leaving the group).
    fn note_committed(&mut self) {
        self.last_committed = Some(Instant::now());
        if !self.first_commit_logged {
            self.first_commit_logged = true;
            info!(
                since_start_ms = self.started.elapsed().as_millis() as u64,
                "first orders committed"
            );
        }
    }

    fn offset_list(&self, offsets: &BTreeMap<i32, i64>) -> anyhow::Result<TopicPartitionList> {
        let mut list = TopicPartitionList::new();
        for (&partition, &offset) in offsets {
            list.add_partition_offset(
                &self.config.topics.orders_topic,
                partition,
                Offset::Offset(offset),
            )
            .context("building the offset list")?;
        }
        Ok(list)
    }

    fn record_done(&self, outcome: &Outcome, committed_at_ns: u64) {
        let latency =
            |order_ts: u64| Duration::from_nanos(committed_at_ns.saturating_sub(order_ts));
        match outcome {
            Outcome::Made { order, tabs } => {
                let latency = latency(order.order_timestamp_ns);
                self.stats.order_done(order.tabs_count, latency);
                debug!(
                    patient_id = %order.patient_id,
                    tabs = tabs.len(),
                    latency_ms = latency.as_millis() as u64,
                    "order done"
                );
            }
            Outcome::Rejected { letter, .. } => self.stats.dead_letter(&letter.reason),
            Outcome::Delivered {
                rejected: Some(reason),
                ..
            } => self.stats.dead_letter(reason),
            Outcome::Delivered {
                order_timestamp_ns,
                tabs,
                rejected: None,
            } => {
                let latency = latency(*order_timestamp_ns);
                self.stats.order_done(*tabs, latency);
                debug!(tabs, latency_ms = latency.as_millis() as u64, "order done");
            }
            // Failed orders stop the maker before they reach the ledger.
            Outcome::Failed(_) => {}
        }
    }

    /// After an abort: forget everything in flight and fetch again from the committed offsets.
    async fn rewind(&mut self) -> anyhow::Result<()> {
        let dropped = self.ledger.reset();
        self.stash = None;
        let consumer = Arc::clone(&self.consumer);
        tokio::task::spawn_blocking(move || -> KafkaResult<()> {
            let assignment = consumer.assignment()?;
            if assignment.count() == 0 {
                return Ok(());
            }
            let committed = consumer.committed_offsets(assignment, BROKER_CALL_TIMEOUT)?;
            let mut seeks = TopicPartitionList::new();
            for element in committed.elements() {
                let offset = match element.offset() {
                    Offset::Offset(offset) => Offset::Offset(offset),
                    // Nothing committed yet: start where a new group starts.
                    _ => Offset::Beginning,
                };
                seeks.add_partition_offset(element.topic(), element.partition(), offset)?;
            }
            consumer.seek_partitions(seeks, BROKER_CALL_TIMEOUT)?;
            Ok(())
        })
        .await
        .context("rewind task")?
        .context("rewinding to the committed offsets")?;
        info!(dropped_orders = dropped, "rewound to the committed offsets");
        Ok(())
    }

    /// Commits what is finished, leaves the group, and logs the summary.
    async fn finish(mut self, reason: StopReason) -> anyhow::Result<Summary> {
        self.health.set_ready(false);
        // The transaction in flight, then whatever finished meanwhile. Past the drain deadline each gets a short
        // bound: a transaction still stuck then (a broker away, a rebalance) is left to Kafka, which aborts it;
        // its orders are made again by the next maker, and this one exits within its grace period.
        let bound = self.drain_expired.then_some(FINAL_COMMIT_GRACE);
        if self.settle_commit_within(bound).await? {
            self.commit().await?;
            self.settle_commit_within(bound).await?;
        }
        self.tasks.close();

        if let Output::AtLeastOnce(producer) = &self.output {
            // Acknowledged tabs are durable; this only waits for in-flight sends of abandoned orders.
            let producer = producer.clone();
            let _ =
                tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5))).await;
        }
        let consumer = self.consumer;
        let close = tokio::task::spawn_blocking(move || {
            consumer.unsubscribe();
            drop(consumer);
        });
        if tokio::time::timeout(CLOSE_TIMEOUT, close).await.is_err() {
            warn!("leaving the group took longer than {CLOSE_TIMEOUT:?}; exiting anyway");
        }

        let summary = self.stats.summary();
        info!(
            reason = reason.as_str(),
            orders = summary.orders,
            tabs = summary.tabs,
            dead_letters = summary.dead_letters,
            latency_p50_ms = summary.latency_p50_ms,
            latency_p99_ms = summary.latency_p99_ms,
            commits = summary.commits,
            aborts = summary.aborts,
            last_commit_s = self
                .last_committed
                .map_or(0.0, |at| at.duration_since(self.started).as_secs_f64()),
            uptime_s = self.started.elapsed().as_secs_f64(),
            "maker stopped"
        );
        Ok(summary)
    }
}

/// What a transaction task returns: its outcome and the results it carried.
type TransactionResult = Result<(Result<(), TxnError>, Vec<Outcome>), tokio::task::JoinError>;

/// The transaction in flight.
struct Transaction {
    handle: tokio::task::JoinHandle<(Result<(), TxnError>, Vec<Outcome>)>,
    began: Instant,
    /// Orders (and rejected records) it commits.
    records: usize,
}

/// `init_transactions` running on the blocking pool.
type InitTask = tokio::task::JoinHandle<KafkaResult<()>>;

/// Creates the transactional producer and starts `init_transactions` on the blocking pool; the first commit
/// awaits the returned handle.
fn start_transactional_producer(
    kafka: &tabs::kafka::KafkaArgs,
    kind: &ProducerKind,
    timeout: Duration,
) -> anyhow::Result<(Arc<BaseProducer<TabsContext>>, InitTask)> {
    let producer: Arc<BaseProducer<TabsContext>> =
        Arc::new(kafka::create_producer(kafka, kind, TabsContext::default())?);
    let init = Arc::clone(&producer);
    let ready = tokio::task::spawn_blocking(move || {
        // Connect first: started on a producer with no broker connection yet, librdkafka's coordinator lookup
        // finds "no broker available" and retries only on its 500 ms timer (measured: first commits at ~520 ms
        // instead of ~200 ms, one start in two).
        let _ = init.client().fetch_metadata(None, timeout);
        init.init_transactions(timeout)
    });
    Ok((producer, ready))
}

/// How a transaction failed.
enum TxnError {
    /// Aborted: nothing of it is visible; the orders must be made again.
    Aborted(KafkaError),
    /// The producer is unusable (fenced, or a fatal librdkafka error).
    Fatal(KafkaError),
}

/// Writes the tabs and dead letters of `results` and commits `offsets` in one transaction. Blocking.
fn transact(
    producer: &BaseProducer<TabsContext>,
    deliveries: &str,
    dlq: &str,
    results: &[Outcome],
    offsets: &TopicPartitionList,
    group: &rdkafka::consumer::ConsumerGroupMetadata,
) -> Result<(), TxnError> {
    let attempt = || -> KafkaResult<()> {
        producer.begin_transaction()?;
        for outcome in results {
            match outcome {
                Outcome::Made { order, tabs } => {
                    for tab in tabs {
                        let tab = Tab {
                            delivery_timestamp_ns: now_ns(),
                            ..tab.clone()
                        };
                        let payload = to_json(&tab);
                        send_blocking(
                            producer,
                            deliveries,
                            Some(order.patient_id.as_bytes()),
                            &payload,
                        )?;
                    }
                }
                Outcome::Rejected { key, letter } => {
                    send_blocking(producer, dlq, key.as_deref(), &to_json(letter))?;
                }
                // Never in a transaction: at-least-once results only.
                Outcome::Delivered { .. } | Outcome::Failed(_) => {}
            }
        }
        retrying(|| producer.send_offsets_to_transaction(offsets, group, BROKER_CALL_TIMEOUT))?;
        flush(producer, BROKER_CALL_TIMEOUT)?;
        retrying(|| producer.commit_transaction(BROKER_CALL_TIMEOUT))
    };
    match attempt() {
        Ok(()) => Ok(()),
        Err(err) if is_fatal(&err) => Err(TxnError::Fatal(err)),
        Err(err) => match abort(producer) {
            Ok(()) => Err(TxnError::Aborted(err)),
            Err(abort_err) => {
                error!(error = %abort_err, "aborting the transaction failed");
                Err(TxnError::Fatal(err))
            }
        },
    }
}

/// Aborts the open transaction. Blocking.
///
/// librdkafka's abort drops the records still queued but waits for those in flight, and only the application can
/// serve their delivery reports (this producer takes them as events): called with the whole timeout it would wait
/// it out. So it is called in short steps, each resuming the last, with the reports served in between.
fn abort(producer: &BaseProducer<TabsContext>) -> KafkaResult<()> {
    const STEP: Duration = Duration::from_millis(200);
    let deadline = Instant::now() + BROKER_CALL_TIMEOUT;
    loop {
        match producer.abort_transaction(STEP) {
            Err(KafkaError::Transaction(e)) if e.is_retriable() && Instant::now() < deadline => {
                let left = deadline.saturating_duration_since(Instant::now());
                // A timeout here only means more reports are to come: the next step serves them.
                let _ = flush(producer, left.min(Duration::from_secs(1)));
            }
            other => return other,
        }
    }
}

fn is_fatal(err: &KafkaError) -> bool {
    match err {
        KafkaError::Transaction(e) => e.is_fatal(),
        other => other.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal),
    }
}

/// Calls a transaction step again while librdkafka says the error is retriable (a coordinator moving, a broker
/// restarting, a timeout).
fn retrying(mut step: impl FnMut() -> KafkaResult<()>) -> KafkaResult<()> {
    // A broker restart makes coordinators unavailable for seconds: keep retrying for as long as one broker call
    // may take, backing off up to a second.
    let deadline = Instant::now() + BROKER_CALL_TIMEOUT;
    let mut backoff = Duration::from_millis(50);
    loop {
        match step() {
            Err(KafkaError::Transaction(e))
                if e.is_retriable() && !group_moved_on(e.code()) && Instant::now() < deadline =>
            {
                warn!(error = %e, "retriable transaction error; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

/// Waits until every record handed to `producer` is acknowledged, serving delivery reports in 1 ms polls, so
/// the wait ends with the last acknowledgement. (rdkafka's own flush polls in 100 ms slices and would add up to
/// 100 ms to every transaction; `commit_transaction` then finds nothing left to flush.) Blocking.
fn flush(producer: &BaseProducer<TabsContext>, timeout: Duration) -> KafkaResult<()> {
    let deadline = Instant::now() + timeout;
    while producer.in_flight_count() > 0 {
        if Instant::now() >= deadline {
            return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
        }
        producer.poll(Duration::from_millis(1));
    }
    Ok(())
}

/// Whether the error says the group has moved on from the membership the transaction's offsets were sent with
/// (a rebalance): sending the same offsets again cannot succeed, so the transaction is aborted instead.
fn group_moved_on(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::IllegalGeneration
            | RDKafkaErrorCode::UnknownMemberId
            | RDKafkaErrorCode::RebalanceInProgress
            | RDKafkaErrorCode::FencedInstanceId
            | RDKafkaErrorCode::FencedMemberEpoch
            | RDKafkaErrorCode::StaleMemberEpoch
    )
}

/// Enqueues one record, waiting while librdkafka's queue is full. Blocking.
fn send_blocking(
    producer: &BaseProducer<TabsContext>,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
) -> KafkaResult<()> {
    loop {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((err, _)) if err.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                // Serve delivery reports until there is room.
                producer.poll(Duration::from_millis(10));
            }
            Err((err, _)) => return Err(err),
        }
    }
}
