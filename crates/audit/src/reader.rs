//! Reading a whole topic, or a window of it, without a consumer group: every partition assigned from a start
//! point, and a way to know when the end was reached. Blocking; run it on a blocking thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tabs::kafka::{KafkaArgs, TabsContext};

/// How long opening waits for the partitions of a topic created a moment ago to have leaders.
const LEADER_WAIT: Duration = Duration::from_secs(15);

/// How long a topic may stay unknown while reading before the reader gives up: after a broker was fenced by its
/// controller (a long pause) librdkafka reported an unknown partition for a moment (seen in the local mode's lag
/// reading), which is no reason to stop; a topic deleted under the reader is.
const UNKNOWN_WAIT: Duration = Duration::from_secs(30);

/// Events [`TopicReader::take_available`] serves per record it may take, at most: records, ends of partition, errors
/// and log lines alike.
const EVENTS_PER_RECORD: usize = 16;

/// Where reading starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The oldest retained record.
    Beginning,
    /// After the last record present when the reader opens: only what is written from then on.
    End,
    /// The first record whose timestamp is at or after this many milliseconds since the Unix epoch.
    Time(i64),
}

/// Reads every partition of one topic.
pub struct TopicReader {
    consumer: BaseConsumer<ReaderContext>,
    topic: String,
    progress: Progress,
}

/// What the events of the queue say besides the records.
struct Progress {
    /// Partitions that reported their end since their last record.
    at_end: HashMap<i32, bool>,
    /// How long the topic has been unknown, with nothing read in between.
    unknown: UnknownSpell,
}

/// A reader's client context: the project's, counting the log lines of librdkafka its polls serve. rust-rdkafka
/// serves them from the queue the records are on, one per call, and answers a call without a timeout that served
/// one with `None`, as it answers an empty queue: the count tells the two apart.
#[derive(Default)]
struct ReaderContext {
    tabs: TabsContext,
    log_lines: AtomicU64,
}

impl ReaderContext {
    fn log_lines(&self) -> u64 {
        self.log_lines.load(Ordering::Relaxed)
    }
}

impl ClientContext for ReaderContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.log_lines.fetch_add(1, Ordering::Relaxed);
        self.tabs.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.tabs.error(error, reason);
    }
}

impl ConsumerContext for ReaderContext {}

impl TopicReader {
    /// Assigns every partition of `topic` from `start`. `read_committed` hides aborted and open transactions.
    pub fn open(
        kafka: &KafkaArgs,
        topic: &str,
        start: Start,
        read_committed: bool,
    ) -> anyhow::Result<Self> {
        // The end of each partition is reported, so the reader knows when it has caught up.
        let consumer: BaseConsumer<ReaderContext> = tabs::kafka::create_reader(
            kafka,
            &tabs::kafka::ReaderOptions {
                report_partition_end: true,
                ..tabs::kafka::ReaderOptions::plain(read_committed)
            },
            ReaderContext::default(),
        )?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| t.partitions().iter().map(|p| p.id()).collect())
            .unwrap_or_default();
        if partitions.is_empty() {
            return Err(
                KafkaError::MetadataFetch(rdkafka::types::RDKafkaErrorCode::UnknownTopic).into(),
            );
        }
        let mut assignment = TopicPartitionList::new();
        for &partition in &partitions {
            let offset = match start {
                Start::Beginning => Offset::Beginning,
                // Resolved now, not when fetching starts: a record written right after `open` is read.
                Start::End => Offset::Offset(
                    until_led(|| {
                        consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))
                    })?
                    .1,
                ),
                Start::Time(ms) => Offset::Offset(ms),
            };
            assignment.add_partition_offset(topic, partition, offset)?;
        }
        if let Start::Time(_) = start {
            assignment = until_led(|| {
                consumer.offsets_for_times(assignment.clone(), Duration::from_secs(30))
            })?;
            // A time after the last record resolves to "end".
            for element in assignment.clone().elements() {
                if let Offset::Offset(o) = element.offset() {
                    if o < 0 {
                        assignment.set_partition_offset(topic, element.partition(), Offset::End)?;
                    }
                }
            }
        }
        consumer.assign(&assignment)?;
        Ok(Self {
            consumer,
            topic: topic.to_owned(),
            progress: Progress {
                at_end: partitions.into_iter().map(|p| (p, false)).collect(),
                unknown: UnknownSpell::default(),
            },
        })
    }

    /// The next record, waiting up to `timeout`; `None` when there is none yet or the event served was not a
    /// record: an end of partition (see [`caught_up`](Self::caught_up)), an error librdkafka retries, an unknown
    /// topic for up to [`UNKNOWN_WAIT`].
    pub fn next(&mut self, timeout: Duration) -> Result<Option<BorrowedMessage<'_>>, KafkaError> {
        match self.consumer.poll(timeout) {
            None => Ok(None),
            Some(event) => self.progress.absorb(event),
        }
    }

    /// Gives `take` up to `max` of the records queued now, without waiting; returns how many. Unlike a loop of
    /// [`next`](Self::next) it does not stop at an end of partition, an error retried or a log line queued
    /// between records: a reader that stopped there and waited before its next turn fell behind for good when
    /// librdkafka's debug log queued lines faster than that (the local mode's observer). It serves at most
    /// [`EVENTS_PER_RECORD`] events per record `max` allows.
    pub fn take_available(
        &mut self,
        max: usize,
        mut take: impl FnMut(&BorrowedMessage<'_>),
    ) -> Result<usize, KafkaError> {
        let mut taken = 0;
        // Bounded in events too, so a flood of log lines cannot hold the caller in here.
        for _ in 0..max.saturating_mul(EVENTS_PER_RECORD) {
            if taken == max {
                break;
            }
            let log_lines = self.consumer.context().log_lines();
            match self.consumer.poll(Duration::ZERO) {
                None if self.consumer.context().log_lines() == log_lines => break,
                None => {}
                Some(event) => {
                    if let Some(message) = self.progress.absorb(event)? {
                        take(&message);
                        taken += 1;
                    }
                }
            }
        }
        Ok(taken)
    }

    /// Whether every partition reached its end (for read_committed: the last stable offset) since its last
    /// record.
    pub fn caught_up(&self) -> bool {
        self.progress.at_end.values().all(|&end| end)
    }

    /// The topic read.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl Progress {
    /// A record, or `None` for an event that is not one (noted); an error only when reading cannot go on.
    fn absorb<'m>(
        &mut self,
        event: Result<BorrowedMessage<'m>, KafkaError>,
    ) -> Result<Option<BorrowedMessage<'m>>, KafkaError> {
        match event {
            Ok(message) => {
                self.unknown = UnknownSpell::default();
                self.at_end.insert(message.partition(), false);
                Ok(Some(message))
            }
            Err(KafkaError::PartitionEOF(partition)) => {
                self.unknown = UnknownSpell::default();
                self.at_end.insert(partition, true);
                Ok(None)
            }
            Err(err) => match classify(&err) {
                Failure::Fatal => Err(err),
                Failure::Transient => Ok(None),
                Failure::Unknown if self.unknown.still_waiting(Instant::now()) => Ok(None),
                Failure::Unknown => Err(err),
            },
        }
    }
}

/// Runs a per-partition lookup, again while a partition has no leader yet: a topic created a moment ago
/// answers `NOT_LEADER_OR_FOLLOWER` or `LEADER_NOT_AVAILABLE` until its leaders are elected and known. Up to
/// [`LEADER_WAIT`].
fn until_led<T>(mut lookup: impl FnMut() -> Result<T, KafkaError>) -> Result<T, KafkaError> {
    use rdkafka::types::RDKafkaErrorCode::{LeaderNotAvailable, NotLeaderForPartition};
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        match lookup() {
            Err(err)
                if matches!(
                    err.rdkafka_error_code(),
                    Some(NotLeaderForPartition | LeaderNotAvailable)
                ) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// A spell of "unknown topic or partition" answers: begun at the first, continued by any other within a sixth of
/// [`UNKNOWN_WAIT`] (a reader of a quiet topic reads nothing in between), over when something is read.
#[derive(Debug, Default)]
struct UnknownSpell(Option<(Instant, Instant)>);

impl UnknownSpell {
    /// Records an answer at `now`; whether the spell is still shorter than [`UNKNOWN_WAIT`].
    fn still_waiting(&mut self, now: Instant) -> bool {
        let since = match self.0 {
            Some((since, last)) if now - last < UNKNOWN_WAIT / 6 => since,
            _ => now,
        };
        self.0 = Some((since, now));
        now - since < UNKNOWN_WAIT
    }
}

/// What a reading error means for the reader.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// No use trying again: no access, no authentication, a fatal client error.
    Fatal,
    /// The broker does not know the topic or a partition: for a moment while it comes back from a fence, for good
    /// once the topic is deleted.
    Unknown,
    /// Anything else: librdkafka retries it.
    Transient,
}

fn classify(err: &KafkaError) -> Failure {
    use rdkafka::types::RDKafkaErrorCode::*;
    match err.rdkafka_error_code() {
        Some(UnknownTopicOrPartition | UnknownTopic | UnknownPartition) => Failure::Unknown,
        Some(TopicAuthorizationFailed | Authentication | Fatal) => Failure::Fatal,
        _ => Failure::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode;

    #[test]
    fn a_lookup_is_tried_again_while_the_partition_has_no_leader_yet() {
        let mut calls = 0;
        let result = until_led(|| {
            calls += 1;
            if calls < 3 {
                Err(KafkaError::MetadataFetch(
                    RDKafkaErrorCode::NotLeaderForPartition,
                ))
            } else {
                Ok(calls)
            }
        });
        assert_eq!(result.unwrap(), 3);
    }

    #[test]
    fn other_errors_are_returned_at_once() {
        let mut calls = 0;
        let result: Result<(), _> = until_led(|| {
            calls += 1;
            Err(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopic))
        });
        assert!(result.is_err());
        assert_eq!(calls, 1);
    }

    #[test]
    fn an_unknown_topic_is_waited_for_and_refused_access_is_not() {
        let cases = [
            (RDKafkaErrorCode::UnknownTopicOrPartition, Failure::Unknown),
            (RDKafkaErrorCode::UnknownPartition, Failure::Unknown),
            (RDKafkaErrorCode::TopicAuthorizationFailed, Failure::Fatal),
            (RDKafkaErrorCode::NotLeaderForPartition, Failure::Transient),
        ];
        for (code, failure) in cases {
            assert_eq!(
                classify(&KafkaError::MessageConsumption(code)),
                failure,
                "{code:?}"
            );
        }
    }

    #[test]
    fn an_unknown_topic_is_given_up_after_a_spell_of_thirty_seconds_not_after_scattered_answers() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut spell = UnknownSpell::default();
        // Answers every 2 s: one spell, given up once it is 30 s long.
        assert!((0..=28).step_by(2).all(|s| spell.still_waiting(at(s))));
        assert!(!spell.still_waiting(at(30)));
        // Answers 10 s apart (nothing read, a quiet topic): each begins a spell of its own.
        let mut scattered = UnknownSpell::default();
        assert!((0..=100)
            .step_by(10)
            .all(|s| scattered.still_waiting(at(s))));
    }
}
