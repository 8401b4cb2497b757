//! The seam between the maker's loop and Kafka: everything the loop asks of the consumer and the producer. The
//! loop's decisions (what to fetch, when to pause, what to commit, when to stop) are made against this trait;
//! [`crate::live::Live`] is the rdkafka implementation, and the loop's unit tests drive a fake one.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;

use crate::completion::Outcome;
pub use crate::doubt::OrderKey;
use crate::error::KafkaFailure;
use crate::surplus::GroupView;

/// A record fetched from the orders topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

/// What the consumer side reports.
#[derive(Debug)]
pub enum Event {
    /// A record of an assigned partition.
    Record(Fetched),
    /// Partitions now assigned to this maker.
    Assigned(Vec<i32>),
    /// Partitions the group takes back. They stay this maker's until [`Broker::release`]: what is finished of
    /// them is committed and the rest finished or dropped within the hand-over bound, so that their next owner
    /// starts after this maker's work instead of doing it again.
    Revoked(Vec<i32>),
    /// Partitions lost without a hand-over (the group expired or fenced this member, or the client gave its
    /// session up): their work must not be committed by this maker any more. They stay this maker's in the client
    /// until [`Broker::release`], which the loop calls once no commit of theirs is in flight: a commit already on
    /// its way may still be taken by the group coordinator (it was when only the client had given the session
    /// up), and their next owner, this maker included, must read their committed offsets after it.
    Lost(Vec<i32>),
    /// Consuming cannot go on (a deleted topic, refused authorization, a fatal client error).
    Failed(anyhow::Error),
}

/// Finished work to commit: per partition the offset to commit (the next one to read), and the outcomes it
/// covers, in offset order per partition.
#[derive(Debug, Default)]
pub struct Batch {
    pub offsets: BTreeMap<i32, i64>,
    pub results: Vec<Outcome>,
}

/// A commit's outcome, with the results it carried (what was committed, or what must be made again).
pub type Committed = (Result<(), KafkaFailure>, Vec<Outcome>);

/// A commit running beside the loop.
pub type CommitFuture = Pin<Box<dyn Future<Output = Committed> + Send>>;

/// A look at the group running beside the loop.
pub type GroupFuture = Pin<Box<dyn Future<Output = anyhow::Result<GroupView>> + Send>>;

/// A record to publish: (key, value).
pub type OutRecord = (Option<Vec<u8>>, Vec<u8>);

/// Hands records to the producer for at-least-once delivery. Cheap to clone into each order's task.
pub trait Deliver: Clone + Send + Sync + 'static {
    /// Writes `records` to `topic`; resolves once Kafka acknowledged every one, or with the reason it refused
    /// one for good.
    fn deliver(
        &self,
        topic: &str,
        records: Vec<OutRecord>,
    ) -> impl Future<Output = Result<(), KafkaFailure>> + Send;
}

/// What the maker's loop asks of Kafka.
pub trait Broker {
    /// The at-least-once publisher.
    type Deliverer: Deliver;

    /// The next event: group events first, then a record of a partition that is not paused.
    fn next(&mut self) -> impl Future<Output = Event>;

    /// A group event the client has delivered that [`Self::next`] has not returned yet. The loop takes these
    /// before it starts a commit: once the client has let a lost partition go it rejoins the group, and the group
    /// coordinator takes offsets of any partition from a member at its current epoch, so a commit still carrying
    /// the lost partition's offsets would be accepted while its next owner makes the same orders.
    fn take_group_event(&mut self) -> Option<Event>;

    /// Stops fetching from `partitions`.
    fn pause(&mut self, partitions: &[i32]) -> anyhow::Result<()>;

    /// Fetches from `partitions` again, at once.
    fn resume(&mut self, partitions: &[i32]) -> anyhow::Result<()>;

    /// Hands the partitions of the last [`Event::Revoked`] or [`Event::Lost`] back to the group.
    fn release(&mut self) -> anyhow::Result<()>;

    /// Starts committing `batch`: exactly-once, one transaction with its tabs, dead letters and offsets;
    /// at-least-once, its offsets. The returned future runs beside the loop.
    fn commit(&mut self, batch: Batch) -> anyhow::Result<CommitFuture>;

    /// Starts looking at the group: KEDA's lag of every partition and who is in the group (for the surplus
    /// rule). The returned future runs beside the loop.
    fn group_view(&mut self) -> GroupFuture;

    /// The at-least-once publisher (`None` when exactly-once).
    fn deliverer(&self) -> Option<Self::Deliverer>;

    /// After a commit that did not happen: the positions go back to the group's committed offsets, which it
    /// returns by partition (`None`: nothing committed, read from the beginning); `replace_producer` when the
    /// producer cannot go on.
    fn rewind(
        &mut self,
        replace_producer: bool,
    ) -> impl Future<Output = anyhow::Result<BTreeMap<i32, Option<i64>>>>;

    /// After a rewind whose commits are in doubt (a producer that could not go on, offsets read back behind the
    /// maker's own commits): the orders the recent transactions wrote whose tabs the deliveries topic holds,
    /// committed. Made again, they would be there twice (see `doubt.rs`).
    fn delivered(&mut self) -> impl Future<Output = anyhow::Result<HashSet<OrderKey>>>;

    /// Leaves the group and lets the producer finish; bounded.
    fn close(self) -> impl Future<Output = ()>;
}
