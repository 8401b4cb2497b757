//! The maker's side of the group: partitions assigned, revoked partitions handed over (their finished orders
//! committed first, the rest finished or dropped within `--handover-timeout`), lost partitions dropped, and
//! their pause state cleared.

use std::collections::BTreeSet;

use tokio::time::{Duration, Instant};
use tracing::{info, warn};

use super::Worker;
use crate::broker::Broker;
use crate::lifecycle::Phase;

/// Past `--handover-timeout`, how long the orders kept for the hand-over still get to be acknowledged and taken
/// into a commit (at-least-once: their tabs' acknowledgements) before they are dropped too.
const HANDOVER_GRACE: Duration = Duration::from_secs(1);

/// Revoked partitions not yet handed back to the group.
#[derive(Debug)]
pub(super) struct Handover {
    pub(super) partitions: Vec<i32>,
    /// When the revocation came.
    since: Instant,
    /// When the orders still unfinished are dropped; none once that is done.
    deadline: Option<Instant>,
    /// Orders in flight at the revocation.
    in_flight: usize,
    /// Orders dropped, at the revocation (they could not be made within the bound) or at the deadline.
    dropped: usize,
}

/// Lost partitions the client still holds, until no commit carrying them is in flight.
#[derive(Debug)]
pub(super) struct LostHold {
    partitions: Vec<i32>,
    since: Instant,
}

/// The partitions this maker holds: those the group assigned and has not taken back, those it took back that
/// are not handed over yet (one hand-over at a time: a revocation during another joins it), and those lost that
/// the client is not yet told to let go.
#[derive(Debug, Default)]
pub(super) struct Holdings {
    assigned: BTreeSet<i32>,
    handover: Option<Handover>,
    lost: Option<LostHold>,
}

impl Holdings {
    /// The partitions assigned and not revoked: the ones whose records are taken.
    pub(super) fn assigned(&self) -> &BTreeSet<i32> {
        &self.assigned
    }

    pub(super) fn holds(&self, partition: i32) -> bool {
        self.assigned.contains(&partition)
    }

    pub(super) fn assign(&mut self, partitions: &[i32]) {
        self.assigned.extend(partitions);
    }

    /// The group takes `partitions` back at `now`: they join the hand-over (begun now, with `deadline`, unless
    /// one is under way), counting `in_flight` orders at the revocation and `dropped` at once.
    pub(super) fn revoke(
        &mut self,
        partitions: &[i32],
        now: Instant,
        deadline: Instant,
        in_flight: usize,
        dropped: usize,
    ) {
        for partition in partitions {
            self.assigned.remove(partition);
        }
        let handover = self.handover.get_or_insert(Handover {
            partitions: Vec::new(),
            since: now,
            deadline: Some(deadline),
            in_flight: 0,
            dropped: 0,
        });
        handover.partitions.extend(partitions);
        handover.in_flight += in_flight;
        handover.dropped += dropped;
    }

    /// When the hand-over under way drops its unfinished orders, if it has not yet.
    pub(super) fn handover_deadline(&self) -> Option<Instant> {
        self.handover.as_ref().and_then(|h| h.deadline)
    }

    /// The hand-over's deadline passed: it counts `dropped` more orders and has no deadline left. `None` when no
    /// hand-over is under way.
    pub(super) fn expire(&mut self, dropped: usize) -> Option<&Handover> {
        let handover = self.handover.as_mut()?;
        handover.deadline = None;
        handover.dropped += dropped;
        Some(handover)
    }

    /// The hand-over, taken once `settled` holds for each of its partitions (nothing of it in flight).
    pub(super) fn take_settled(&mut self, settled: impl Fn(i32) -> bool) -> Option<Handover> {
        let handover = self.handover.as_ref()?;
        if handover.partitions.iter().all(|&p| settled(p)) {
            self.handover.take()
        } else {
            None
        }
    }

    /// The group took `partitions` without a hand-over at `now`: they are neither assigned nor handed over, and
    /// wait to be let go (see [`Self::take_lost_settled`]).
    pub(super) fn lose(&mut self, partitions: &[i32], now: Instant) {
        for partition in partitions {
            self.assigned.remove(partition);
        }
        if let Some(handover) = self.handover.as_mut() {
            handover.partitions.retain(|p| !partitions.contains(p));
        }
        self.lost
            .get_or_insert(LostHold {
                partitions: Vec::new(),
                since: now,
            })
            .partitions
            .extend(partitions);
    }

    /// The lost partitions to let go, once `settled` holds for each (no commit in flight carries it).
    pub(super) fn take_lost_settled(&mut self, settled: impl Fn(i32) -> bool) -> Option<LostHold> {
        let lost = self.lost.as_ref()?;
        if lost.partitions.iter().all(|&p| settled(p)) {
            self.lost.take()
        } else {
            None
        }
    }
}

impl<B: Broker> Worker<B> {
    pub(super) fn on_assigned(&mut self, partitions: Vec<i32>) -> anyhow::Result<()> {
        if matches!(self.phase, Phase::Joining { .. }) {
            self.phase = Phase::Consuming;
        }
        self.leaving.active(Instant::now());
        self.holdings.assign(&partitions);
        for &partition in &partitions {
            self.ledger.assign(partition);
            // Another maker may have held it since: the group's offset is the only truth to start from.
            self.book.forget(partition);
        }
        // Resumed explicitly: a partition paused under an earlier assignment stays paused inside the client
        // until resumed, and would never be fetched again. The next pause update pauses it if it must.
        self.broker.resume(&partitions)?;
        for partition in &partitions {
            self.sharing.unpause(*partition);
        }
        info!(
            ?partitions,
            since_start_ms = self.telemetry.since_start_ms(),
            "partitions assigned"
        );
        Ok(())
    }

    /// The group takes `partitions` back: nothing new of them is started; of their orders in flight, those that
    /// will be made within `--handover-timeout` go on, and the others (begun too recently) are dropped at once, as
    /// waiting for them would hold the partitions' next owner back longer than making them again. The partitions
    /// are handed back once what goes on is committed (see [`Self::hand_over_when_settled`]).
    pub(super) fn on_revoked(&mut self, partitions: Vec<i32>) -> anyhow::Result<()> {
        let now = Instant::now();
        let in_time = now + self.settings.handover_timeout;
        let making = self.settings.tab_making_time;
        let (mut in_flight, mut dropped) = (0, 0);
        for &partition in &partitions {
            self.sharing.forget(partition);
            in_flight += self.ledger.in_flight_of(partition);
            dropped += self
                .ledger
                .leave(partition, |started| started + making <= in_time);
        }
        self.telemetry.stats.dropped.inc_by(dropped as u64);
        info!(?partitions, in_flight, dropped, "partitions revoked");
        self.holdings.revoke(
            &partitions,
            now,
            in_time + HANDOVER_GRACE,
            in_flight,
            dropped,
        );
        self.hand_over_when_settled()
    }

    /// The hand-over bound (and its grace) ran out: the revoked partitions' unfinished orders are dropped (their
    /// next owner makes them); what is finished of them is still committed before they are handed back.
    pub(super) fn handover_expired(&mut self) {
        let dropped = self.ledger.abandon_leaving();
        let Some(handover) = self.holdings.expire(dropped) else {
            return;
        };
        self.telemetry.stats.dropped.inc_by(dropped as u64);
        if dropped > 0 {
            info!(
                partitions = ?handover.partitions,
                orders = dropped,
                handover_timeout = ?self.settings.handover_timeout,
                "hand-over bound reached; unfinished orders are left to the partitions' next owner"
            );
        }
    }

    /// Hands the revoked partitions back once none of their orders is in flight any more: each is committed
    /// (no commit still running carries one) or dropped; and lets the lost ones go once no commit still running
    /// carries them.
    pub(super) fn hand_over_when_settled(&mut self) -> anyhow::Result<()> {
        self.let_lost_go_when_settled()?;
        let (ledger, committing) = (&self.ledger, self.book.in_flight.as_ref());
        let Some(handover) = self.holdings.take_settled(|p| {
            ledger.in_flight_of(p) == 0 && committing.is_none_or(|c| !c.offsets.contains_key(&p))
        }) else {
            return Ok(());
        };
        for &partition in &handover.partitions {
            self.ledger.revoke(partition);
            self.book.forget(partition);
            self.progress.release(partition);
        }
        self.broker.release()?;
        self.clear_pause(&handover.partitions);
        info!(
            partitions = ?handover.partitions,
            in_flight_at_revocation = handover.in_flight,
            dropped = handover.dropped,
            took_ms = handover.since.elapsed().as_millis() as u64,
            "partitions handed over"
        );
        Ok(())
    }

    /// Lets the lost partitions go once no commit in flight carries them. A commit begun before the loss may
    /// still be taken by the group coordinator: it was, when only the client had given its session up (a
    /// heartbeat timed out under load) and the coordinator still counted this member in. Let go earlier, the
    /// client rejoined and was given the partitions back at once, read their committed offsets before that
    /// commit's offsets had reached the coordinator, and the maker made its orders twice (seen in the end-to-end
    /// test; RELIABILITY.md). Their next owner, this maker or another, now reads after that commit.
    fn let_lost_go_when_settled(&mut self) -> anyhow::Result<()> {
        let committing = self.book.in_flight.as_ref();
        let Some(lost) = self
            .holdings
            .take_lost_settled(|p| committing.is_none_or(|c| !c.offsets.contains_key(&p)))
        else {
            return Ok(());
        };
        self.broker.release()?;
        info!(
            partitions = ?lost.partitions,
            took_ms = lost.since.elapsed().as_millis() as u64,
            "lost partitions let go"
        );
        Ok(())
    }

    /// The group took `partitions` without a hand-over: their work is dropped, nothing of it committed here.
    pub(super) fn on_lost(&mut self, partitions: &[i32]) {
        let dropped: usize = partitions.iter().map(|&p| self.ledger.revoke(p)).sum();
        self.telemetry.stats.dropped.inc_by(dropped as u64);
        self.holdings.lose(partitions, Instant::now());
        for partition in partitions {
            self.sharing.forget(*partition);
            self.book.forget(*partition);
            self.progress.release(*partition);
        }
        self.clear_pause(partitions);
        warn!(?partitions, dropped_orders = dropped, "partitions lost");
    }

    /// The pause state of a partition must not outlive this maker's hold on it: librdkafka keeps it for the
    /// partition, and would keep it paused if it came back.
    fn clear_pause(&mut self, partitions: &[i32]) {
        let paused: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|p| self.sharing.unpause(*p))
            .collect();
        if !paused.is_empty() {
            if let Err(err) = self.broker.resume(&paused) {
                warn!(
                    error = format!("{err:#}"),
                    ?partitions,
                    "could not clear the pause of revoked partitions"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> Instant {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *START.get_or_init(Instant::now) + Duration::from_secs(seconds)
    }

    #[test]
    fn a_revocation_during_a_hand_over_joins_it_and_keeps_its_deadline() {
        let mut holdings = Holdings::default();
        holdings.assign(&[0, 1, 2, 3]);
        holdings.revoke(&[1], at(0), at(10), 4, 1);
        holdings.revoke(&[2], at(1), at(20), 3, 2);
        assert_eq!(
            holdings.assigned().iter().copied().collect::<Vec<_>>(),
            [0, 3]
        );
        assert!(!holdings.holds(1) && !holdings.holds(2) && holdings.holds(3));
        assert_eq!(holdings.handover_deadline(), Some(at(10)));
        let handover = holdings.take_settled(|_| true).unwrap();
        assert_eq!(handover.partitions, [1, 2]);
        assert_eq!((handover.in_flight, handover.dropped), (7, 3));
        assert!(holdings.handover_deadline().is_none());
    }

    #[test]
    fn a_hand_over_waits_for_every_one_of_its_partitions() {
        let mut holdings = Holdings::default();
        holdings.assign(&[0, 1]);
        holdings.revoke(&[0, 1], at(0), at(10), 2, 0);
        assert!(holdings.take_settled(|p| p == 0).is_none());
        // Still under way, with its deadline.
        assert_eq!(holdings.handover_deadline(), Some(at(10)));
        assert!(holdings.take_settled(|_| true).is_some());
        assert!(holdings.take_settled(|_| true).is_none());
    }

    #[test]
    fn past_its_deadline_a_hand_over_counts_what_it_dropped_and_has_no_deadline() {
        let mut holdings = Holdings::default();
        assert!(holdings.expire(5).is_none());
        holdings.assign(&[0]);
        holdings.revoke(&[0], at(0), at(10), 3, 1);
        assert_eq!(holdings.expire(2).map(|h| h.dropped), Some(3));
        assert!(holdings.handover_deadline().is_none());
        // Finished orders are still committed before the partition goes back.
        assert!(holdings.take_settled(|_| false).is_none());
    }

    #[test]
    fn a_lost_partition_is_neither_assigned_nor_handed_over_and_is_let_go_out_of_commits() {
        let mut holdings = Holdings::default();
        holdings.assign(&[0, 1, 2]);
        holdings.revoke(&[0, 1], at(0), at(10), 0, 0);
        holdings.lose(&[1, 2], at(1));
        assert!(holdings.assigned().is_empty());
        // The hand-over no longer waits for the lost partition.
        let handover = holdings.take_settled(|p| p != 1).unwrap();
        assert_eq!(handover.partitions, [0]);
        // The lost ones are let go once none is in a commit.
        assert!(holdings.take_lost_settled(|p| p != 2).is_none());
        let lost = holdings.take_lost_settled(|_| true).unwrap();
        assert_eq!(lost.partitions, [1, 2]);
        assert!(holdings.take_lost_settled(|_| true).is_none());
    }
}
