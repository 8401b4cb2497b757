//! The consumer side: the rdkafka context that turns rebalance callbacks into events for the loop, and the
//! partition lists of pause, resume and rewind.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tabs::kafka::ErrorTracker;
use tokio::sync::Notify;
use tracing::warn;

/// A change of assignment, reported by the rebalance callbacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebalanced {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// Consumer context: errors to the tracker, rebalances queued for the loop.
#[derive(Default)]
pub struct MakerContext {
    pub errors: Arc<ErrorTracker>,
    pub topic: String,
    events: Mutex<VecDeque<Rebalanced>>,
    /// Wakes the loop when an event is queued, even while `recv()` has no record to return.
    pub wake: Notify,
}

impl MakerContext {
    /// A context for the orders topic `topic`.
    pub fn new(topic: &str) -> Self {
        Self {
            topic: topic.to_owned(),
            ..Self::default()
        }
    }

    fn partitions(&self, list: &TopicPartitionList) -> Vec<i32> {
        list.elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect()
    }

    fn push(&self, event: Rebalanced) {
        if let Ok(mut events) = self.events.lock() {
            events.push_back(event);
        }
        self.wake.notify_one();
    }

    /// The oldest event not yet taken.
    pub fn take(&self) -> Option<Rebalanced> {
        self.events.lock().ok().and_then(|mut e| e.pop_front())
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
            Rebalance::Revoke(list) => self.push(Rebalanced::Revoked(self.partitions(list))),
            Rebalance::Error(err) => warn!(error = %err, "rebalance error"),
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            self.push(Rebalanced::Assigned(self.partitions(list)));
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(err) = result {
            // At-least-once only: the orders are made again by whoever reads them next.
            warn!(error = %err, partitions = offsets.count(), "offset commit failed");
        }
    }
}

/// The partition list of `partitions` of `topic`.
pub fn partition_list(topic: &str, partitions: &[i32]) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for &partition in partitions {
        list.add_partition(topic, partition);
    }
    list
}

/// Makes librdkafka fetch again now. A resume alone waits for the fetcher's next wake-up, up to a second
/// (measured: ~750 ms on every resume); a seek of each partition to its current position wakes it at once and
/// changes nothing else, since a paused partition is fetched again from that position anyway.
pub fn restart_fetching(consumer: &StreamConsumer<MakerContext>) {
    let Ok(positions) = consumer.position() else {
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
        if let Err(err) = consumer.seek_partitions(seeks, Duration::ZERO) {
            tracing::debug!(error = %err, "could not nudge the fetcher; it resumes within a second");
        }
    }
}

/// Seeks every assigned partition back to its committed offset (the beginning, for a partition that has none).
/// Blocking.
pub fn seek_to_committed(
    consumer: &StreamConsumer<MakerContext>,
    timeout: Duration,
) -> KafkaResult<()> {
    let assignment = consumer.assignment()?;
    if assignment.count() == 0 {
        return Ok(());
    }
    let committed = consumer.committed_offsets(assignment, timeout)?;
    let mut seeks = TopicPartitionList::new();
    for element in committed.elements() {
        let offset = match element.offset() {
            Offset::Offset(offset) => Offset::Offset(offset),
            // Nothing committed yet: start where a new group starts.
            _ => Offset::Beginning,
        };
        seeks.add_partition_offset(element.topic(), element.partition(), offset)?;
    }
    consumer.seek_partitions(seeks, timeout)?;
    Ok(())
}
