//! Sharing the in-flight bound fairly among the partitions: under saturation every partition with backlog
//! keeps moving.
//!
//! Kafka hands a consumer one partition's batch before the next, so records taken as they come let the first
//! partition fetched keep every slot. Instead, fetched records wait in one queue per partition, and each free
//! slot goes to the waiting partition with the fewest orders in flight (ties in turn). A partition reads ahead
//! at most its fair share (the bound over the assigned partitions, rounded up) and is paused while that many
//! wait: at the bound every partition with backlog has records ready, and the slots go round.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use tracing::debug;

use super::Worker;
use crate::broker::{Broker, Fetched};

/// The records fetched and not yet taken, and the partitions paused in the client: owned here, the worker asks
/// which record goes next and which partitions to pause or resume.
#[derive(Debug)]
pub(super) struct Sharing {
    /// Records fetched and not yet taken, per partition in offset order.
    waiting: BTreeMap<i32, VecDeque<Fetched>>,
    /// The partitions paused in the client.
    paused: BTreeSet<i32>,
    /// The partition whose waiting record was taken last (turns among equally served partitions).
    last_served: i32,
}

/// What the client must be told for the pauses to match what sharing wants.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct PauseChange {
    pub pause: Vec<i32>,
    pub resume: Vec<i32>,
}

impl Sharing {
    pub fn new() -> Self {
        Self {
            waiting: BTreeMap::new(),
            paused: BTreeSet::new(),
            last_served: -1,
        }
    }

    /// Queues a fetched record behind the others of its partition.
    pub fn queue(&mut self, record: Fetched) {
        self.waiting
            .entry(record.partition)
            .or_default()
            .push_back(record);
    }

    /// No record waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The record to take when a slot is free: the first waiting one of the partition with the fewest orders in
    /// flight (`in_flight_of`), taking partitions in turn among equals (after the one served last).
    pub fn next(&mut self, in_flight_of: impl Fn(i32) -> usize) -> Option<Fetched> {
        let last = self.last_served;
        let partition = *self
            .waiting
            .keys()
            .min_by_key(|&&p| (in_flight_of(p), p <= last, p))?;
        let queue = self.waiting.get_mut(&partition)?;
        let record = queue.pop_front();
        if queue.is_empty() {
            self.waiting.remove(&partition);
        }
        self.last_served = partition;
        record
    }

    /// Drops what waits of `partition` (revoked, or rewound: its records are fetched again).
    pub fn forget(&mut self, partition: i32) {
        self.waiting.remove(&partition);
    }

    /// Drops every waiting record (a rewind fetches them all again).
    pub fn forget_all(&mut self) {
        self.waiting.clear();
    }

    /// Takes `partition` off the paused set, saying whether it was there: the client must resume it.
    pub fn unpause(&mut self, partition: i32) -> bool {
        self.paused.remove(&partition)
    }

    /// The partitions that must not fetch now: all of `assigned` unless `accepting`; else those with their
    /// share of `bound` (over the assigned partitions, rounded up) waiting.
    fn wanted_paused(
        &self,
        assigned: &BTreeSet<i32>,
        bound: usize,
        accepting: bool,
    ) -> BTreeSet<i32> {
        if !accepting {
            return assigned.clone();
        }
        let share = bound.div_ceil(assigned.len().max(1));
        assigned
            .iter()
            .copied()
            .filter(|p| self.waiting.get(p).is_some_and(|q| q.len() >= share))
            .collect()
    }

    /// The pauses and resumes that make the client's paused set what sharing wants, recorded as done.
    pub fn repause(
        &mut self,
        assigned: &BTreeSet<i32>,
        bound: usize,
        accepting: bool,
    ) -> PauseChange {
        let wanted = self.wanted_paused(assigned, bound, accepting);
        if wanted == self.paused {
            return PauseChange::default();
        }
        let change = PauseChange {
            pause: wanted.difference(&self.paused).copied().collect(),
            resume: self.paused.difference(&wanted).copied().collect(),
        };
        self.paused = wanted;
        change
    }
}

impl<B: Broker> Worker<B> {
    /// Queues a fetched record; the loop takes it when a slot is free and its partition's turn comes.
    pub(super) fn wait(&mut self, record: Fetched) {
        if !self.holdings.holds(record.partition) {
            // Fetched before its partition was revoked: its next owner reads it again.
            debug!(
                partition = record.partition,
                offset = record.offset,
                "record of a revoked partition; skipped"
            );
            return;
        }
        self.sharing.queue(record);
    }

    /// The record to take when a slot is free (see [`Sharing::next`]).
    pub(super) fn next_waiting(&mut self) -> Option<Fetched> {
        let ledger = &self.ledger;
        self.sharing.next(|p| ledger.in_flight_of(p))
    }

    /// Pauses and resumes partitions in the client as sharing wants them (all of them while draining).
    pub(super) fn update_pause(&mut self) -> anyhow::Result<()> {
        let change = self.sharing.repause(
            self.holdings.assigned(),
            self.settings.max_in_flight_orders,
            self.phase.accepts_work(),
        );
        if !change.pause.is_empty() {
            self.broker.pause(&change.pause)?;
            debug!(partitions = ?change.pause, in_flight = self.in_flight(), "paused fetching");
        }
        if !change.resume.is_empty() {
            self.broker.resume(&change.resume)?;
            debug!(partitions = ?change.resume, in_flight = self.in_flight(), "resumed fetching");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: i32, offset: i64) -> Fetched {
        Fetched {
            partition,
            offset,
            key: None,
            payload: None,
        }
    }

    fn taken(sharing: &mut Sharing, in_flight: &BTreeMap<i32, usize>, n: usize) -> Vec<(i32, i64)> {
        (0..n)
            .map_while(|_| sharing.next(|p| in_flight.get(&p).copied().unwrap_or(0)))
            .map(|r| (r.partition, r.offset))
            .collect()
    }

    #[test]
    fn the_partition_with_the_fewest_in_flight_goes_first_in_offset_order() {
        let mut sharing = Sharing::new();
        for offset in 0..3 {
            sharing.queue(record(0, offset));
            sharing.queue(record(1, offset));
        }
        let in_flight = BTreeMap::from([(0, 5), (1, 1)]);
        assert_eq!(taken(&mut sharing, &in_flight, 3), [(1, 0), (1, 1), (1, 2)]);
        assert_eq!(taken(&mut sharing, &in_flight, 4), [(0, 0), (0, 1), (0, 2)]);
        assert!(sharing.is_empty());
    }

    #[test]
    fn equally_served_partitions_take_turns() {
        let mut sharing = Sharing::new();
        for partition in [2, 0, 1] {
            for offset in 0..2 {
                sharing.queue(record(partition, offset));
            }
        }
        let none = BTreeMap::new();
        assert_eq!(
            taken(&mut sharing, &none, 6),
            [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)]
        );
    }

    #[test]
    fn a_partition_is_paused_with_its_share_waiting_and_resumed_below_it() {
        let mut sharing = Sharing::new();
        let assigned = BTreeSet::from([0, 1, 2]);
        // A bound of 7 over 3 partitions: a share of 3.
        for offset in 0..3 {
            sharing.queue(record(1, offset));
        }
        sharing.queue(record(2, 0));
        assert_eq!(
            sharing.repause(&assigned, 7, true),
            PauseChange {
                pause: vec![1],
                resume: vec![]
            }
        );
        assert_eq!(sharing.repause(&assigned, 7, true), PauseChange::default());
        let _ = sharing.next(|_| 0);
        assert_eq!(
            sharing.repause(&assigned, 7, true),
            PauseChange {
                pause: vec![],
                resume: vec![1]
            }
        );
    }

    #[test]
    fn draining_pauses_every_assigned_partition() {
        let mut sharing = Sharing::new();
        let assigned = BTreeSet::from([0, 3]);
        assert_eq!(
            sharing.repause(&assigned, 16, false),
            PauseChange {
                pause: vec![0, 3],
                resume: vec![]
            }
        );
        assert!(
            sharing.unpause(3),
            "3 was paused: the client must resume it"
        );
        assert!(!sharing.unpause(3));
    }

    #[test]
    fn forgotten_partitions_give_nothing_more() {
        let mut sharing = Sharing::new();
        sharing.queue(record(0, 0));
        sharing.queue(record(1, 0));
        sharing.forget(0);
        assert_eq!(taken(&mut sharing, &BTreeMap::new(), 2), [(1, 0)]);
        sharing.queue(record(4, 9));
        sharing.forget_all();
        assert!(sharing.is_empty());
    }
}
