//! The maker's side of the group: partitions assigned, revoked partitions handed over (their finished orders
//! committed first, the rest finished or dropped within `--handover-timeout`), lost partitions dropped, and
//! their pause state cleared.

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
    pub(super) deadline: Option<Instant>,
    /// Orders in flight at the revocation.
    in_flight: usize,
    /// Orders dropped, at the revocation (they could not be made within the bound) or at the deadline.
    dropped: usize,
}

impl<B: Broker> Worker<B> {
    pub(super) fn on_assigned(&mut self, partitions: Vec<i32>) -> anyhow::Result<()> {
        if matches!(self.phase, Phase::Joining { .. }) {
            self.phase = Phase::Consuming;
        }
        self.last_activity = Instant::now();
        for &partition in &partitions {
            self.ledger.assign(partition);
            self.assigned.insert(partition);
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
            since_start_ms = self.started.elapsed().as_millis() as u64,
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
            self.assigned.remove(&partition);
            self.sharing.forget(partition);
            in_flight += self.ledger.in_flight_of(partition);
            dropped += self
                .ledger
                .leave(partition, |started| started + making <= in_time);
        }
        self.stats.dropped.inc_by(dropped as u64);
        info!(?partitions, in_flight, dropped, "partitions revoked");
        let handover = self.handover.get_or_insert(Handover {
            partitions: Vec::new(),
            since: now,
            deadline: Some(in_time + HANDOVER_GRACE),
            in_flight: 0,
            dropped: 0,
        });
        handover.partitions.extend(partitions);
        handover.in_flight += in_flight;
        handover.dropped += dropped;
        self.hand_over_when_settled()
    }

    /// The hand-over bound (and its grace) ran out: the revoked partitions' unfinished orders are dropped (their
    /// next owner makes them); what is finished of them is still committed before they are handed back.
    pub(super) fn handover_expired(&mut self) {
        let Some(handover) = self.handover.as_mut() else {
            return;
        };
        handover.deadline = None;
        let dropped = self.ledger.abandon_leaving();
        handover.dropped += dropped;
        self.stats.dropped.inc_by(dropped as u64);
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
    /// (no commit still running carries one) or dropped.
    pub(super) fn hand_over_when_settled(&mut self) -> anyhow::Result<()> {
        let Some(handover) = &self.handover else {
            return Ok(());
        };
        let committing = self.committing.as_ref();
        let settled = handover.partitions.iter().all(|&p| {
            self.ledger.in_flight_of(p) == 0
                && committing.is_none_or(|c| !c.offsets.contains_key(&p))
        });
        if !settled {
            return Ok(());
        }
        let Some(handover) = self.handover.take() else {
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

    /// The group took `partitions` without a hand-over: their work is dropped, nothing of it committed here.
    pub(super) fn on_lost(&mut self, partitions: &[i32]) {
        let dropped: usize = partitions.iter().map(|&p| self.ledger.revoke(p)).sum();
        self.stats.dropped.inc_by(dropped as u64);
        for partition in partitions {
            self.assigned.remove(partition);
            self.sharing.forget(*partition);
            self.book.forget(*partition);
            self.progress.release(*partition);
        }
        if let Some(handover) = self.handover.as_mut() {
            handover.partitions.retain(|p| !partitions.contains(p));
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
