//! The maker's side of the group: partitions assigned and revoked, fetching paused and resumed.

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::Worker;
use crate::broker::Broker;
use crate::lifecycle::Phase;

impl<B: Broker> Worker<B> {
    pub(super) fn on_assigned(&mut self, partitions: Vec<i32>) -> anyhow::Result<()> {
        if matches!(self.phase, Phase::Joining { .. }) {
            self.phase = Phase::Consuming;
        }
        self.last_activity = Instant::now();
        for &partition in &partitions {
            self.ledger.assign(partition);
            self.assigned.insert(partition);
        }
        // Said explicitly for each new partition: a partition paused under an earlier assignment stays paused
        // inside the client until resumed, and would never be fetched again.
        if self.paused {
            self.broker.pause(&partitions)?;
        } else {
            self.broker.resume(&partitions)?;
        }
        info!(
            ?partitions,
            since_start_ms = self.started.elapsed().as_millis() as u64,
            "partitions assigned"
        );
        Ok(())
    }

    pub(super) fn on_revoked(&mut self, partitions: &[i32]) {
        let dropped: usize = partitions.iter().map(|&p| self.ledger.revoke(p)).sum();
        for partition in partitions {
            self.assigned.remove(partition);
        }
        if self
            .stash
            .as_ref()
            .is_some_and(|r| partitions.contains(&r.partition))
        {
            self.stash = None;
        }
        // The pause state of a partition must not outlive this maker's hold on it.
        if self.paused {
            if let Err(err) = self.broker.resume(partitions) {
                warn!(
                    error = format!("{err:#}"),
                    ?partitions,
                    "could not clear the pause of revoked partitions"
                );
            }
        }
        info!(?partitions, dropped_orders = dropped, "partitions revoked");
    }

    /// Pauses fetching at the in-flight bound or while draining, resumes when there is room again.
    pub(super) fn update_pause(&mut self) -> anyhow::Result<()> {
        let want_paused = !self.can_accept();
        if want_paused == self.paused {
            return Ok(());
        }
        let partitions: Vec<i32> = self.assigned.iter().copied().collect();
        if want_paused {
            self.broker.pause(&partitions)?;
            debug!(in_flight = self.in_flight(), "paused fetching");
        } else {
            self.broker.resume(&partitions)?;
            debug!(in_flight = self.in_flight(), "resumed fetching");
        }
        self.paused = want_paused;
        Ok(())
    }
}
