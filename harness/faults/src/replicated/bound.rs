//! How long a partition may stand through a fault of the three-node cluster: the bound the liveness verdict holds
//! the workers to.

use std::time::Duration;

use super::{ClusterFault, MAKING};
use crate::liveness_bound;

/// How long the controller waits before it fences a node that stopped heartbeating (`broker.session.timeout.ms`,
/// Kafka's default): a killed node's partitions have no usable leader until then.
const BROKER_SESSION_TIMEOUT: Duration = Duration::from_secs(9);
/// The makers' and the copiers' transaction timeout, and how often the brokers abort timed-out transactions.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);
const TRANSACTION_CLEANUP: Duration = Duration::from_secs(2);

/// A connection's first retransmission timeout on these links: Linux's smallest (`TCP_RTO_MIN`, 200 ms) plus the
/// smoothed round trip's share (`ss -ti` shows `rto:204` to `rto:212` under the campaign's load). Each unanswered
/// retransmission doubles it: a Java client's connection to a node cut off for 20 s was seen retransmitting with
/// timers of 0.8, 1.6, 3.2, 6.4 and 12.8 s, and answered again 26 s after the cut began.
const TCP_FIRST_RTO: Duration = Duration::from_millis(210);

/// The liveness bound on the cluster through `faults` (each fault starts every partition's clock again, so the
/// longest wait of one of them counts): a stopped, killed or cut-off node's partitions wait for the controller to
/// fence it, and a transaction caught by the fault for its timeout and the broker's next abort. A node cut off
/// does not reset its clients' connections, as a dead one does: their requests to it wait unanswered, and they
/// learn that its partitions moved only when a connection to it answers again, at its next TCP retransmission
/// after the link is back (or at a request timeout, should that come first: 30 s for either client's produce
/// requests; no cut here lasts that long). Both Kafka's Java client (the copier) and librdkafka (the makers) wait so.
pub fn cluster_liveness_bound(faults: &[ClusterFault]) -> Duration {
    let node_lost = BROKER_SESSION_TIMEOUT + TRANSACTION_TIMEOUT + TRANSACTION_CLEANUP;
    let waits = faults
        .iter()
        .map(|fault| match *fault {
            ClusterFault::CutOffTransactionCoordinator(cut) => {
                node_lost.max(first_retransmission_after(cut))
            }
            _ => node_lost,
        })
        .max()
        .unwrap_or(node_lost);
    liveness_bound(MAKING, waits)
}

/// When a connection that lost a segment at the start of a cut of `cut` next retransmits: at the first of 0.21 s,
/// 0.63 s, 1.47 s, 3.15 s, … (`TCP_FIRST_RTO` doubled after each retransmission, summed) that is not before the
/// link is back.
pub fn first_retransmission_after(cut: Duration) -> Duration {
    let (mut at, mut timeout) = (Duration::ZERO, TCP_FIRST_RTO);
    while at < cut {
        at += timeout;
        timeout *= 2;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmissions_come_at_the_doubling_timeouts_sums() {
        let at = |ms: u64| first_retransmission_after(Duration::from_millis(ms));
        assert_eq!(at(0), Duration::ZERO);
        assert_eq!(at(150), Duration::from_millis(210));
        assert_eq!(at(1_000), Duration::from_millis(1_470));
        assert_eq!(at(10_000), Duration::from_millis(13_230));
        assert_eq!(at(15_000), Duration::from_millis(26_670));
        assert_eq!(at(20_000), Duration::from_millis(26_670));
        assert_eq!(at(26_670), Duration::from_millis(26_670));
        assert_eq!(at(26_671), Duration::from_millis(53_550));
    }

    #[test]
    fn a_cut_waits_for_the_retransmission_or_the_fencing_whichever_is_later() {
        let node_lost = liveness_bound(MAKING, Duration::from_secs(21));
        assert_eq!(
            cluster_liveness_bound(&[ClusterFault::KillTransactionCoordinator]),
            node_lost
        );
        // Back after 10 s: retransmitted at 13.2 s, before the transaction the fault caught is aborted (21 s).
        assert_eq!(
            cluster_liveness_bound(&[ClusterFault::CutOffTransactionCoordinator(
                Duration::from_secs(10)
            )]),
            node_lost
        );
        // Back after 15 s: retransmitted at 26.7 s.
        let cut = [
            ClusterFault::RollingRestart,
            ClusterFault::CutOffTransactionCoordinator(Duration::from_secs(15)),
        ];
        assert_eq!(
            cluster_liveness_bound(&cut),
            liveness_bound(MAKING, Duration::from_millis(26_670))
        );
    }
}
