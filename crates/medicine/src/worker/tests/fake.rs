//! The fake broker the loop's tests drive: per-partition logs, positions, committed offsets and pause flags, and
//! a harness that runs the loop over it.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use tabs::messages::{to_json, Order};
use tokio::sync::mpsc;
use tokio::time::Duration;

pub(super) use super::harness::{settings, Harness};
use crate::broker::{
    Batch, Broker, CommitFuture, Deliver, Event, Fetched, GroupFuture, OrderKey, OutRecord,
};
use crate::completion::Outcome;
use crate::error::KafkaFailure;
use crate::surplus::GroupView;

/// What a test tells the fake broker while the loop runs.
pub(super) enum Script {
    Assign(Vec<i32>),
    /// The group takes partitions back: held (still assigned, nothing fetched) until the loop releases them.
    Revoke(Vec<i32>),
    /// The group took partitions without a hand-over.
    Lose(Vec<i32>),
    /// The client lost partitions and let them go at once (librdkafka's callback), but the loop is slow to take
    /// the event: it comes out of [`Broker::next`] only after the delay. Meanwhile, as on Kafka, the client has
    /// rejoined and the coordinator takes this member's offsets for them.
    LoseSeenLate(Vec<i32>, Duration),
    /// The client gave its session up (a heartbeat timed out) and lost partitions while the coordinator still
    /// counts it in: the client holds them until the loop releases them, their offsets are still taken from this
    /// member meanwhile, and on release the client rejoins and is given them back at once, reading their
    /// committed offsets then (as Kafka did in the end-to-end test).
    LoseAndRejoin(Vec<i32>),
    /// `n` more orders are written to a partition.
    Append(i32, usize),
}

/// The fake broker's view of Kafka: per-partition logs, positions, committed offsets, and pause flags that,
/// as librdkafka's, belong to the partition and survive a revocation.
#[derive(Default)]
pub(super) struct State {
    pub(super) logs: BTreeMap<i32, Vec<Vec<u8>>>,
    positions: BTreeMap<i32, i64>,
    pub(super) committed: BTreeMap<i32, i64>,
    pub(super) assigned: BTreeSet<i32>,
    /// Revoked and not yet released: as librdkafka, nothing at all is fetched meanwhile.
    pub(super) held: BTreeSet<i32>,
    /// When the loop released revoked partitions (tokio's clock), and which.
    pub(super) releases: Vec<(tokio::time::Instant, Vec<i32>)>,
    /// Commits refused because they carried offsets of a partition not (or no longer) assigned, as the group
    /// coordinator refuses them.
    pub(super) refused_commits: usize,
    /// Lost partitions whose offsets the coordinator still takes from this member (it rejoined at a new epoch,
    /// and Kafka checks the epoch, not who owns the partition).
    lost_but_accepted: BTreeSet<i32>,
    /// Commits accepted with offsets of such a partition: its next owner makes the same orders.
    pub(super) zombie_commits: usize,
    /// Lost partitions the client holds until the loop releases them (see [`Script::LoseAndRejoin`]).
    lost_held: BTreeSet<i32>,
    /// When the loop let lost partitions go, and which.
    pub(super) lost_releases: Vec<(tokio::time::Instant, Vec<i32>)>,
    /// How long a commit takes to reach the coordinator: its offsets and tabs count from then.
    pub(super) commit_delay: std::time::Duration,
    /// When each commit's offsets reached the coordinator.
    pub(super) commits_applied: Vec<tokio::time::Instant>,
    pub(super) paused: BTreeSet<i32>,
    /// Outcomes of the next commits (then: committed).
    pub(super) commit_outcomes: VecDeque<Result<(), KafkaFailure>>,
    /// How many of the next commits that fail are torn: their tabs committed all the same, their offsets not (as
    /// a killed transaction coordinator did on three nodes).
    pub(super) torn: usize,
    /// The orders whose tabs are in the deliveries topic, committed, and how many times.
    pub(super) delivered: BTreeMap<OrderKey, u32>,
    /// How many of the next commits never end (a Kafka client call that does not return).
    pub(super) stuck: usize,
    /// How many of the next rewinds fail (the group coordinator out of reach).
    pub(super) failing_rewinds: usize,
    /// How long the first records after a rewind take to come (a fetch after the seek, a broker just back).
    pub(super) refetch_delay: std::time::Duration,
    /// Until when nothing is fetched, after a rewind.
    refetch_at: Option<tokio::time::Instant>,
    /// Rewinds that replaced the producer.
    pub(super) replaced: usize,
    /// Reads of the deliveries topic after a rewind.
    pub(super) delivered_reads: usize,
    /// Orders written so far: each has an identity of its own.
    written: usize,
    /// How many times each (partition, offset) was committed.
    pub(super) commits_of: BTreeMap<(i32, i64), u32>,
    /// The dead letters committed.
    pub(super) letters: Vec<tabs::messages::DeadLetter>,
    /// Most records handed out and not committed at once.
    pub(super) max_outstanding: i64,
    pub(super) pauses: usize,
    pub(super) resumes: usize,
    pub(super) rewinds: usize,
    next_partition: usize,
    /// Serve the lowest-numbered partition that can be fetched, as a fetch response hands a whole batch of one
    /// partition before the next, instead of taking partitions in turn.
    pub(super) greedy: bool,
    /// What a look at the group shows (the surplus rule); none: the look fails.
    pub(super) group: Option<GroupView>,
    pub(super) group_looks: usize,
}

impl State {
    pub(super) fn append(&mut self, partition: i32, n: usize) {
        let first = self.written;
        self.written += n;
        self.logs
            .entry(partition)
            .or_default()
            .extend((first..first + n).map(order));
    }

    fn deliver(&mut self, results: &[Outcome]) {
        for result in results {
            if let Outcome::Made { order, .. } = result {
                let key = (order.patient_id.clone(), order.order_timestamp_ns);
                *self.delivered.entry(key).or_default() += 1;
            }
        }
    }

    fn outstanding(&self) -> i64 {
        self.assigned
            .iter()
            .map(|p| {
                self.positions.get(p).copied().unwrap_or(0)
                    - self.committed.get(p).copied().unwrap_or(0)
            })
            .sum()
    }
}

pub(super) struct Fake {
    state: Arc<Mutex<State>>,
    script: mpsc::UnboundedReceiver<Script>,
    events: VecDeque<Event>,
    /// Events delivered by the client that `next` returns only from the given instant.
    late: VecDeque<(tokio::time::Instant, Event)>,
}

impl Fake {
    /// A fake over `state`, told what happens by `script`.
    pub(super) fn new(state: Arc<Mutex<State>>, script: mpsc::UnboundedReceiver<Script>) -> Self {
        Self {
            state,
            script,
            events: VecDeque::new(),
            late: VecDeque::new(),
        }
    }

    fn apply(&mut self, script: Script) {
        let mut state = self.state.lock().unwrap();
        match script {
            Script::Assign(partitions) => {
                for &p in &partitions {
                    state.assigned.insert(p);
                    state.lost_but_accepted.remove(&p);
                    let committed = state.committed.get(&p).copied().unwrap_or(0);
                    state.positions.insert(p, committed);
                }
                self.events.push_back(Event::Assigned(partitions));
            }
            Script::Revoke(partitions) => {
                state.held.extend(&partitions);
                self.events.push_back(Event::Revoked(partitions));
            }
            Script::LoseAndRejoin(partitions) => {
                for p in &partitions {
                    state.assigned.remove(p);
                    state.lost_held.insert(*p);
                }
                self.events.push_back(Event::Lost(partitions));
            }
            Script::Append(partition, n) => state.append(partition, n),
            Script::Lose(partitions) => {
                for p in &partitions {
                    state.assigned.remove(p);
                }
                self.events.push_back(Event::Lost(partitions));
            }
            Script::LoseSeenLate(partitions, delay) => {
                for p in &partitions {
                    state.assigned.remove(p);
                    state.lost_but_accepted.insert(*p);
                }
                let at = tokio::time::Instant::now() + delay;
                self.late.push_back((at, Event::Lost(partitions)));
            }
        }
    }

    /// The next record of an assigned partition that is not paused, taking partitions in turn.
    fn record(&self) -> Option<Fetched> {
        let mut state = self.state.lock().unwrap();
        if !state.held.is_empty() {
            return None;
        }
        let candidates: Vec<i32> = state
            .assigned
            .iter()
            .copied()
            .filter(|p| !state.paused.contains(p))
            .filter(|p| (state.positions[p] as usize) < state.logs.get(p).map_or(0, Vec::len))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let partition = if state.greedy {
            candidates[0]
        } else {
            candidates[state.next_partition % candidates.len()]
        };
        state.next_partition += 1;
        let offset = state.positions[&partition];
        let payload = state.logs[&partition][offset as usize].clone();
        state.positions.insert(partition, offset + 1);
        let outstanding = state.outstanding();
        state.max_outstanding = state.max_outstanding.max(outstanding);
        Some(Fetched {
            partition,
            offset,
            key: None,
            payload: Some(payload),
        })
    }
}

/// The fake never delivers at-least-once: these tests run the loop exactly-once.
#[derive(Clone)]
pub(super) struct NoDelivery;

impl Deliver for NoDelivery {
    async fn deliver(&self, _: &str, _: Vec<OutRecord>) -> Result<(), KafkaFailure> {
        Err(KafkaFailure::Refused("at-least-once is not faked".into()))
    }
}

impl Broker for Fake {
    type Deliverer = NoDelivery;

    async fn next(&mut self) -> Event {
        loop {
            if let Some(event) = self.events.pop_front() {
                return event;
            }
            let late_at = self.late.front().map(|(at, _)| *at);
            if late_at.is_some_and(|at| at <= tokio::time::Instant::now()) {
                return self.late.pop_front().expect("checked").1;
            }
            let refetch_at = self.state.lock().unwrap().refetch_at.take();
            if let Some(at) = refetch_at {
                tokio::time::sleep_until(at).await;
            }
            if let Some(record) = self.record() {
                return Event::Record(record);
            }
            let never = tokio::time::Instant::now() + Duration::from_secs(86_400);
            tokio::select! {
                script = self.script.recv() => match script {
                    Some(script) => self.apply(script),
                    None => std::future::pending::<()>().await,
                },
                () = tokio::time::sleep_until(late_at.unwrap_or(never)), if late_at.is_some() => {}
            }
        }
    }

    fn take_group_event(&mut self) -> Option<Event> {
        self.events
            .pop_front()
            .or_else(|| self.late.pop_front().map(|(_, event)| event))
    }

    fn pause(&mut self, partitions: &[i32]) -> anyhow::Result<()> {
        let mut state = self.state.lock().unwrap();
        state.pauses += 1;
        state.paused.extend(partitions);
        Ok(())
    }

    fn resume(&mut self, partitions: &[i32]) -> anyhow::Result<()> {
        let mut state = self.state.lock().unwrap();
        state.resumes += 1;
        for p in partitions {
            state.paused.remove(p);
        }
        Ok(())
    }

    fn release(&mut self) -> anyhow::Result<()> {
        let mut state = self.state.lock().unwrap();
        let lost: Vec<i32> = std::mem::take(&mut state.lost_held).into_iter().collect();
        if !lost.is_empty() {
            // Rejoined, and given them back at once: their committed offsets are read now.
            state
                .lost_releases
                .push((tokio::time::Instant::now(), lost.clone()));
            for &p in &lost {
                state.assigned.insert(p);
                let committed = state.committed.get(&p).copied().unwrap_or(0);
                state.positions.insert(p, committed);
            }
            self.events.push_back(Event::Assigned(lost));
            return Ok(());
        }
        let held: Vec<i32> = std::mem::take(&mut state.held).into_iter().collect();
        for p in &held {
            state.assigned.remove(p);
        }
        state.releases.push((tokio::time::Instant::now(), held));
        Ok(())
    }

    fn commit(&mut self, batch: Batch) -> anyhow::Result<CommitFuture> {
        let delay = self.state.lock().unwrap().commit_delay;
        if delay.is_zero() {
            let committed = commit_now(&mut self.state.lock().unwrap(), batch);
            return Ok(match committed {
                Some(committed) => Box::pin(std::future::ready(committed)),
                None => Box::pin(std::future::pending()),
            });
        }
        let state = Arc::clone(&self.state);
        Ok(Box::pin(async move {
            tokio::time::sleep(delay).await;
            let committed = commit_now(&mut state.lock().unwrap(), batch);
            match committed {
                Some(committed) => committed,
                None => std::future::pending().await,
            }
        }))
    }

    fn group_view(&mut self) -> GroupFuture {
        let mut state = self.state.lock().unwrap();
        state.group_looks += 1;
        let view = state.group.clone();
        Box::pin(
            async move { view.ok_or_else(|| anyhow::anyhow!("the group cannot be described")) },
        )
    }

    fn deliverer(&self) -> Option<NoDelivery> {
        None
    }

    async fn rewind(
        &mut self,
        replace_producer: bool,
    ) -> anyhow::Result<BTreeMap<i32, Option<i64>>> {
        let mut state = self.state.lock().unwrap();
        state.rewinds += 1;
        state.replaced += usize::from(replace_producer);
        if state.failing_rewinds > 0 {
            state.failing_rewinds -= 1;
            anyhow::bail!(
                "rewinding to the committed offsets: Meta data fetch error: OperationTimedOut"
            );
        }
        let assigned: Vec<i32> = state.assigned.iter().copied().collect();
        let mut resumed = BTreeMap::new();
        for p in assigned {
            let committed = state.committed.get(&p).copied();
            state.positions.insert(p, committed.unwrap_or(0));
            resumed.insert(p, committed);
        }
        self.events.clear();
        state.refetch_at = Some(tokio::time::Instant::now() + state.refetch_delay);
        Ok(resumed)
    }

    async fn delivered(&mut self) -> anyhow::Result<HashSet<OrderKey>> {
        let mut state = self.state.lock().unwrap();
        state.delivered_reads += 1;
        Ok(state.delivered.keys().cloned().collect())
    }

    async fn close(self) {}
}

/// A commit reaching the coordinator: refused if it carries a partition this member does not hold, else its
/// outcome (the next scripted one, or committed) applied. `None`: it never ends (a stuck client call).
fn commit_now(state: &mut State, batch: Batch) -> Option<(Result<(), KafkaFailure>, Vec<Outcome>)> {
    if batch
        .offsets
        .keys()
        .any(|p| state.lost_but_accepted.contains(p))
    {
        state.zombie_commits += 1;
    } else if let Some(p) = batch
        .offsets
        .keys()
        .find(|p| !state.assigned.contains(p) && !state.lost_held.contains(p))
    {
        state.refused_commits += 1;
        let refused = Err(KafkaFailure::Aborted(format!(
            "partition {p} is not assigned"
        )));
        return Some((refused, batch.results));
    }
    if state.stuck > 0 {
        state.stuck -= 1;
        return None;
    }
    let outcome = state.commit_outcomes.pop_front().unwrap_or(Ok(()));
    if outcome.is_ok() || state.torn > 0 {
        state.deliver(&batch.results);
    }
    if outcome.is_err() && state.torn > 0 {
        state.torn -= 1;
    }
    if outcome.is_ok() {
        for result in &batch.results {
            if let Outcome::Rejected { letter, .. } = result {
                state.letters.push((**letter).clone());
            }
        }
        for (&partition, &next) in &batch.offsets {
            let from = state.committed.get(&partition).copied().unwrap_or(0);
            for offset in from..next {
                *state.commits_of.entry((partition, offset)).or_default() += 1;
            }
            state.committed.insert(partition, next);
        }
        state.commits_applied.push(tokio::time::Instant::now());
    }
    Some((outcome, batch.results))
}

fn order(n: usize) -> Vec<u8> {
    to_json(&Order {
        patient_id: format!("patient-{}", n % 7),
        order_timestamp_ns: 1_000_000 + n as u64,
        tabs_count: 1 + (n % 5) as u32,
    })
}
