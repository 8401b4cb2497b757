//! Sharing the in-flight bound fairly among the partitions: under saturation every partition with backlog
//! keeps moving.
//!
//! Kafka hands a consumer one partition's batch before the next, so records taken as they come let the first
//! partition fetched keep every slot. Instead, fetched records wait in one queue per partition, and each free
//! slot goes to the waiting partition with the fewest orders in flight (ties in turn). A partition reads ahead
//! at most its fair share (the bound over the assigned partitions, rounded up) and is paused while that many
//! wait: at the bound every partition with backlog has records ready, and the slots go round.

use std::collections::BTreeSet;

use tracing::debug;

use super::Worker;
use crate::broker::{Broker, Fetched};

impl<B: Broker> Worker<B> {
    /// A partition's fair share of the in-flight bound.
    fn share(&self) -> usize {
        self.settings
            .max_in_flight_orders
            .div_ceil(self.assigned.len().max(1))
    }

    /// Queues a fetched record; the loop takes it when a slot is free and its partition's turn comes.
    pub(super) fn wait(&mut self, record: Fetched) {
        if !self.assigned.contains(&record.partition) {
            // Fetched before its partition was revoked: its next owner reads it again.
            debug!(
                partition = record.partition,
                offset = record.offset,
                "record of a revoked partition; skipped"
            );
            return;
        }
        self.waiting
            .entry(record.partition)
            .or_default()
            .push_back(record);
    }

    /// The record to take when a slot is free: the first waiting one of the least-served partition, taking
    /// partitions in turn among equals (after the one served last).
    pub(super) fn next_waiting(&mut self) -> Option<Fetched> {
        let last = self.last_served;
        let partition = *self
            .waiting
            .keys()
            .min_by_key(|&&p| (self.ledger.in_flight_of(p), p <= last, p))?;
        let queue = self.waiting.get_mut(&partition)?;
        let record = queue.pop_front();
        if queue.is_empty() {
            self.waiting.remove(&partition);
        }
        self.last_served = partition;
        record
    }

    /// The partitions that must not fetch now: all of them while draining; else those with their share of
    /// records waiting.
    fn wanted_paused(&self) -> BTreeSet<i32> {
        if !self.phase.accepts_work() {
            return self.assigned.clone();
        }
        let share = self.share();
        self.assigned
            .iter()
            .copied()
            .filter(|p| self.waiting.get(p).is_some_and(|q| q.len() >= share))
            .collect()
    }

    /// Pauses and resumes partitions to match [`wanted_paused`](Self::wanted_paused).
    pub(super) fn update_pause(&mut self) -> anyhow::Result<()> {
        let wanted = self.wanted_paused();
        if wanted == self.paused {
            return Ok(());
        }
        let pause: Vec<i32> = wanted.difference(&self.paused).copied().collect();
        let resume: Vec<i32> = self.paused.difference(&wanted).copied().collect();
        if !pause.is_empty() {
            self.broker.pause(&pause)?;
            debug!(partitions = ?pause, in_flight = self.in_flight(), "paused fetching");
        }
        if !resume.is_empty() {
            self.broker.resume(&resume)?;
            debug!(partitions = ?resume, in_flight = self.in_flight(), "resumed fetching");
        }
        self.paused = wanted;
        Ok(())
    }
}
