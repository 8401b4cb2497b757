//! Offset bookkeeping: which fetched orders are still in flight, and how far each partition may be committed.
//!
//! Invariant: a partition's committable position only ever covers a contiguous prefix of finished records, so an
//! order is never committed before every earlier record of its partition is. Records finish in any order (a
//! one-tab order overtakes a thirty-tab one); their results wait here until the prefix reaches them.

use std::collections::{BTreeMap, HashMap, VecDeque};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Identifies one assignment of a partition to this maker. A partition revoked and assigned again gets a new
/// epoch, so a result from work started under the old assignment is recognised as stale and dropped.
pub type Epoch = u64;

/// One fetched record, waiting for its result.
#[derive(Debug)]
struct Slot<T> {
    offset: i64,
    result: Option<T>,
    /// When its work started.
    started: Instant,
    /// Stops its work (a child of the partition's token).
    cancel: CancellationToken,
}

#[derive(Debug)]
struct PartitionLedger<T> {
    epoch: Epoch,
    /// Revoked, being handed over: no new record is tracked; the work in flight finishes (or is abandoned).
    leaving: bool,
    /// Cancelled when the partition is revoked or rewound: all its in-flight work stops.
    cancel: CancellationToken,
    /// Fetched records in offset order.
    slots: VecDeque<Slot<T>>,
}

impl<T> PartitionLedger<T> {
    /// Drops the records from `keep` on and cancels their work; returns how many.
    fn truncate(&mut self, keep: usize) -> usize {
        let dropped = self.slots.len().saturating_sub(keep);
        for slot in self.slots.drain(keep.min(self.slots.len())..) {
            slot.cancel.cancel();
        }
        dropped
    }
}

/// Finished results ready to commit: per partition, the offset to commit (the next one to read) and the results
/// of the records it covers, in offset order.
#[derive(Debug)]
pub struct Ready<T> {
    pub offsets: BTreeMap<i32, i64>,
    pub results: Vec<T>,
}

impl<T> Ready<T> {
    /// Whether there is nothing to commit.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }
}

/// The in-flight records of every assigned partition.
#[derive(Debug)]
pub struct Ledger<T> {
    partitions: HashMap<i32, PartitionLedger<T>>,
    next_epoch: Epoch,
    in_flight: usize,
}

impl<T> Default for Ledger<T> {
    fn default() -> Self {
        Self {
            partitions: HashMap::new(),
            next_epoch: 1,
            in_flight: 0,
        }
    }
}

impl<T> Ledger<T> {
    /// Starts tracking `partition` (newly assigned). Re-assigning a tracked partition starts afresh.
    pub fn assign(&mut self, partition: i32) {
        self.revoke(partition);
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        self.partitions.insert(
            partition,
            PartitionLedger {
                epoch,
                leaving: false,
                cancel: CancellationToken::new(),
                slots: VecDeque::new(),
            },
        );
    }

    /// Stops tracking `partition`: cancels its in-flight work and forgets its unfinished and uncommitted records
    /// (the partition's next owner reads them again from the committed offset). Returns how many were dropped.
    pub fn revoke(&mut self, partition: i32) -> usize {
        match self.partitions.remove(&partition) {
            Some(ledger) => {
                ledger.cancel.cancel();
                self.in_flight -= ledger.slots.len();
                ledger.slots.len()
            }
            None => 0,
        }
    }

    /// Marks `partition` as leaving (revoked, being handed over): no new record of it is tracked. The work in
    /// flight goes on, to be committed as it finishes, up to the first unfinished record whose work started
    /// when `finishes_in_time` says it will not finish in time: that one and every later one are dropped (their
    /// work cancelled) at once. Returns how many were dropped.
    pub fn leave(&mut self, partition: i32, finishes_in_time: impl Fn(Instant) -> bool) -> usize {
        let Some(ledger) = self.partitions.get_mut(&partition) else {
            return 0;
        };
        ledger.leaving = true;
        let keep = ledger
            .slots
            .iter()
            .position(|s| s.result.is_none() && !finishes_in_time(s.started))
            .unwrap_or(ledger.slots.len());
        let dropped = ledger.truncate(keep);
        self.in_flight -= dropped;
        dropped
    }

    /// Forgets everything (after an aborted transaction, before rewinding to the committed offsets). The
    /// partitions stay assigned under new epochs, except those leaving, which are forgotten. Returns how many
    /// records were dropped.
    pub fn reset(&mut self) -> usize {
        let partitions: Vec<(i32, bool)> = self
            .partitions
            .iter()
            .map(|(&p, ledger)| (p, ledger.leaving))
            .collect();
        let dropped = partitions.iter().map(|&(p, _)| self.revoke(p)).sum();
        for (partition, leaving) in partitions {
            if !leaving {
                self.assign(partition);
            }
        }
        dropped
    }

    /// Records that `offset` of `partition` was fetched and its work starts now. Returns the epoch and the
    /// cancellation token the work must carry, or `None` if the partition is not assigned or is leaving (a record
    /// that raced a revocation: it is not ours to process).
    pub fn track(&mut self, partition: i32, offset: i64) -> Option<(Epoch, CancellationToken)> {
        let ledger = self
            .partitions
            .get_mut(&partition)
            .filter(|ledger| !ledger.leaving)?;
        debug_assert!(ledger.slots.back().is_none_or(|last| last.offset < offset));
        let cancel = ledger.cancel.child_token();
        ledger.slots.push_back(Slot {
            offset,
            result: None,
            started: Instant::now(),
            cancel: cancel.clone(),
        });
        self.in_flight += 1;
        Some((ledger.epoch, cancel))
    }

    /// Stores the result of `offset`. Returns false (and drops it) when it is stale: the partition was revoked or
    /// rewound since the work started.
    pub fn complete(&mut self, partition: i32, epoch: Epoch, offset: i64, result: T) -> bool {
        let Some(ledger) = self.partitions.get_mut(&partition) else {
            return false;
        };
        if ledger.epoch != epoch {
            return false;
        }
        match ledger
            .slots
            .binary_search_by_key(&offset, |slot| slot.offset)
        {
            Ok(index) if ledger.slots[index].result.is_none() => {
                ledger.slots[index].result = Some(result);
                true
            }
            _ => false,
        }
    }

    /// Whether some partition has a finished record at the head of its queue.
    pub fn has_ready(&self) -> bool {
        self.partitions
            .values()
            .any(|p| p.slots.front().is_some_and(|s| s.result.is_some()))
    }

    /// Takes every partition's contiguous prefix of finished records.
    pub fn take_ready(&mut self) -> Ready<T> {
        let mut ready = Ready {
            offsets: BTreeMap::new(),
            results: Vec::new(),
        };
        for (&partition, ledger) in &mut self.partitions {
            while ledger.slots.front().is_some_and(|s| s.result.is_some()) {
                let Some(Slot {
                    offset,
                    result: Some(result),
                    ..
                }) = ledger.slots.pop_front()
                else {
                    unreachable!("the loop condition checked the head is finished");
                };
                ready.offsets.insert(partition, offset + 1);
                ready.results.push(result);
                self.in_flight -= 1;
            }
        }
        ready
    }

    /// Records of `partition` fetched and not yet taken for commit.
    pub fn in_flight_of(&self, partition: i32) -> usize {
        self.partitions.get(&partition).map_or(0, |p| p.slots.len())
    }

    /// Records fetched and not yet taken for commit: what `--max-in-flight-orders` bounds.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Cancels all unfinished work and drops the unfinished records and everything after them in each partition;
    /// what is finished and contiguous stays, to be committed. Used when the drain timeout runs out: the dropped
    /// records are redelivered to the next maker.
    pub fn abandon_unfinished(&mut self) -> usize {
        self.abandon_unfinished_where(|_| true)
    }

    /// [`abandon_unfinished`](Self::abandon_unfinished) for the leaving partitions only: the hand-over bound ran
    /// out.
    pub fn abandon_leaving(&mut self) -> usize {
        self.abandon_unfinished_where(|ledger| ledger.leaving)
    }

    fn abandon_unfinished_where(&mut self, which: impl Fn(&PartitionLedger<T>) -> bool) -> usize {
        let mut dropped = 0;
        for ledger in self.partitions.values_mut().filter(|l| which(l)) {
            let keep = ledger
                .slots
                .iter()
                .position(|s| s.result.is_none())
                .unwrap_or(ledger.slots.len());
            dropped += ledger.truncate(keep);
        }
        self.in_flight -= dropped;
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger_with(partition: i32, offsets: &[i64]) -> (Ledger<i64>, Epoch) {
        let mut ledger = Ledger::default();
        ledger.assign(partition);
        let mut epoch = 0;
        for &offset in offsets {
            epoch = ledger.track(partition, offset).unwrap().0;
        }
        (ledger, epoch)
    }

    #[test]
    fn commits_only_a_contiguous_prefix_of_finished_records() {
        let (mut ledger, epoch) = ledger_with(0, &[10, 11, 12]);
        assert!(ledger.complete(0, epoch, 11, 11));
        assert!(!ledger.has_ready(), "11 is done but 10 is not");
        assert!(ledger.take_ready().is_empty());

        assert!(ledger.complete(0, epoch, 10, 10));
        let ready = ledger.take_ready();
        assert_eq!(ready.offsets, BTreeMap::from([(0, 12)]));
        assert_eq!(ready.results, vec![10, 11]);
        assert_eq!(ledger.in_flight(), 1);

        assert!(ledger.complete(0, epoch, 12, 12));
        assert_eq!(ledger.take_ready().offsets, BTreeMap::from([(0, 13)]));
        assert_eq!(ledger.in_flight(), 0);
    }

    #[test]
    fn offsets_may_have_gaps() {
        // Transaction markers and compaction leave holes in offsets.
        let (mut ledger, epoch) = ledger_with(3, &[5, 9]);
        ledger.complete(3, epoch, 9, 9);
        ledger.complete(3, epoch, 5, 5);
        assert_eq!(ledger.take_ready().offsets, BTreeMap::from([(3, 10)]));
    }

    #[test]
    fn partitions_advance_independently() {
        let mut ledger = Ledger::default();
        ledger.assign(0);
        ledger.assign(1);
        let (e0, _) = ledger.track(0, 1).unwrap();
        let (e1, _) = ledger.track(1, 7).unwrap();
        ledger.track(1, 8).unwrap();
        ledger.complete(1, e1, 7, 7);
        ledger.complete(0, e0, 1, 1);
        let ready = ledger.take_ready();
        assert_eq!(ready.offsets, BTreeMap::from([(0, 2), (1, 8)]));
        assert_eq!(ledger.in_flight(), 1);
    }

    #[test]
    fn revoked_partitions_drop_their_work_and_cancel_it() {
        let (mut ledger, epoch) = ledger_with(0, &[1, 2]);
        let (_, cancel) = ledger.track(0, 3).unwrap();
        assert_eq!(ledger.revoke(0), 3);
        assert!(cancel.is_cancelled());
        assert_eq!(ledger.in_flight(), 0);
        assert!(
            !ledger.complete(0, epoch, 1, 1),
            "result of a revoked partition"
        );
        assert!(
            ledger.track(0, 4).is_none(),
            "record of a partition not assigned"
        );
    }

    #[test]
    fn results_from_an_earlier_assignment_are_stale() {
        let (mut ledger, old) = ledger_with(0, &[1]);
        ledger.assign(0);
        let (new, _) = ledger.track(0, 1).unwrap();
        assert_ne!(old, new);
        assert!(!ledger.complete(0, old, 1, 1));
        assert!(ledger.complete(0, new, 1, 1));
    }

    #[test]
    fn a_result_is_stored_once() {
        let (mut ledger, epoch) = ledger_with(0, &[1]);
        assert!(ledger.complete(0, epoch, 1, 1));
        assert!(!ledger.complete(0, epoch, 1, 2));
        assert!(!ledger.complete(0, epoch, 99, 2), "unknown offset");
    }

    #[test]
    fn reset_keeps_partitions_under_new_epochs() {
        let (mut ledger, epoch) = ledger_with(0, &[1, 2]);
        ledger.complete(0, epoch, 1, 1);
        assert_eq!(ledger.reset(), 2);
        assert_eq!(ledger.in_flight(), 0);
        assert!(!ledger.complete(0, epoch, 2, 2));
        assert!(ledger.track(0, 1).is_some(), "still assigned after a reset");
    }

    #[test]
    fn abandoning_keeps_the_finished_prefix() {
        let (mut ledger, epoch) = ledger_with(0, &[1, 2, 3, 4]);
        ledger.complete(0, epoch, 1, 1);
        ledger.complete(0, epoch, 3, 3);
        assert_eq!(
            ledger.abandon_unfinished(),
            3,
            "2 is unfinished; 3 and 4 come after it"
        );
        let ready = ledger.take_ready();
        assert_eq!(ready.offsets, BTreeMap::from([(0, 2)]));
        assert_eq!(ledger.in_flight(), 0);
    }

    #[test]
    fn a_leaving_partition_finishes_its_work_but_tracks_nothing_new() {
        let (mut ledger, epoch) = ledger_with(0, &[1, 2]);
        ledger.leave(0, |_| true);
        assert!(ledger.track(0, 3).is_none(), "nothing new once leaving");
        assert!(
            ledger.complete(0, epoch, 1, 1),
            "work in flight still counts"
        );
        assert_eq!(ledger.take_ready().offsets, BTreeMap::from([(0, 2)]));
        assert_eq!(ledger.in_flight_of(0), 1);
    }

    #[test]
    fn the_hand_over_bound_abandons_only_the_leaving_partitions() {
        let mut ledger = Ledger::default();
        ledger.assign(0);
        ledger.assign(1);
        let (e0, _) = ledger.track(0, 1).unwrap();
        let (_, leaving_cancel) = ledger.track(0, 2).unwrap();
        let (_, staying_cancel) = ledger.track(1, 1).unwrap();
        ledger.complete(0, e0, 1, 1);
        ledger.leave(0, |_| true);
        assert_eq!(ledger.abandon_leaving(), 1, "offset 2 is unfinished");
        assert!(leaving_cancel.is_cancelled());
        assert!(!staying_cancel.is_cancelled());
        assert_eq!(ledger.take_ready().offsets, BTreeMap::from([(0, 2)]));
        assert_eq!((ledger.in_flight_of(0), ledger.in_flight_of(1)), (0, 1));
    }

    #[test]
    fn reset_forgets_leaving_partitions() {
        let mut ledger: Ledger<i64> = Ledger::default();
        ledger.assign(0);
        ledger.assign(1);
        ledger.track(0, 1).unwrap();
        ledger.leave(0, |_| true);
        assert_eq!(ledger.reset(), 1);
        assert!(
            ledger.track(0, 1).is_none(),
            "the leaving partition is gone"
        );
        assert!(ledger.track(1, 1).is_some());
    }

    #[test]
    fn leaving_drops_at_once_what_will_not_finish_in_time_and_all_after_it() {
        let (mut ledger, epoch) = ledger_with(0, &[1]);
        let late = Instant::now();
        let (_, second) = ledger.track(0, 2).unwrap();
        let (_, third) = ledger.track(0, 3).unwrap();
        ledger.complete(0, epoch, 3, 3);
        // Records started at `late` or after will not finish in time; 3 is finished but comes after 2.
        assert_eq!(ledger.leave(0, |started| started < late), 2);
        assert!(second.is_cancelled() && third.is_cancelled());
        assert_eq!(ledger.in_flight_of(0), 1, "1 started in time and goes on");
        assert!(ledger.complete(0, epoch, 1, 1));
        assert_eq!(ledger.take_ready().offsets, BTreeMap::from([(0, 2)]));
    }
}
