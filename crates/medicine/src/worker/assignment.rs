//! The maker's side of the group: partitions assigned and revoked (and their pause state cleared).

use tokio::time::Instant;
use tracing::{info, warn};

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
        // Resumed explicitly: a partition paused under an earlier assignment stays paused inside the client
        // until resumed, and would never be fetched again. The next pause update pauses it if it must.
        self.broker.resume(&partitions)?;
        for partition in &partitions {
            self.paused.remove(partition);
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
        for partition in partitions {
            self.waiting.remove(partition);
        }
        // The pause state of a partition must not outlive this maker's hold on it.
        let paused: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|p| self.paused.remove(p))
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
        info!(?partitions, dropped_orders = dropped, "partitions revoked");
    }
}
