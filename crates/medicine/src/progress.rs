//! How long each partition this maker holds has had orders waiting without its committed offset moving: what
//! the frozen-partition alert reads (`deploy/monitoring/`). Exposed per partition as the Unix time since which it
//! has waited (`medicine_partition_waiting_since_timestamp_seconds`, 0 when nothing of it waits), beside the bound
//! within which the maker promises it moves (`medicine_liveness_bound_seconds`).
//!
//! A timestamp rather than a duration, so that the alert's clock is Prometheus' own: a maker whose loop stood still
//! would stop updating a duration, where a timestamp simply stays old. The clock starts when an order of the
//! partition is fetched with nothing of it waiting, restarts whenever its committed offset moves forward with more
//! waiting, and stops when everything fetched is committed. A rewind (a commit that did not happen) moves nothing
//! and restarts nothing: a maker that aborts every transaction still shows its partitions standing.
//!
//! What the maker has not fetched it cannot see: a partition whose fetching stopped with nothing in flight shows no
//! wait here; the lag alert and KEDA see it.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// Label of the per-partition series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub partition: i32,
}

/// The per-partition gauge family: Unix seconds, 0 when nothing waits.
pub type WaitingSince = Family<PartitionLabel, Gauge<f64, AtomicU64>>;

/// The bound within which a partition with orders waiting moves: three making times (the order in flight, the
/// next, one made again after an abort), the commit interval, the time after which a stuck commit is given up, and
/// five seconds for the group's and the broker's round trips. At the shipped settings (2 s, 20 ms, 10 s): 21 s.
pub fn liveness_bound(
    making: Duration,
    commit_interval: Duration,
    stuck_after: Duration,
) -> Duration {
    making * 3 + commit_interval + stuck_after + Duration::from_secs(5)
}

#[derive(Debug, Default)]
struct Partition {
    /// The next offset to commit, as last committed or first fetched (a partition is fetched from its committed
    /// offset).
    committed: Option<i64>,
    /// One past the last offset fetched.
    fetched_end: i64,
    waiting_since: Option<SystemTime>,
}

/// The partitions' clocks.
#[derive(Debug)]
pub struct Progress {
    partitions: BTreeMap<i32, Partition>,
    gauge: WaitingSince,
}

impl Progress {
    pub fn new(gauge: WaitingSince) -> Self {
        Self {
            partitions: BTreeMap::new(),
            gauge,
        }
    }

    /// A record of `partition` at `offset` was fetched.
    pub fn fetched(&mut self, partition: i32, offset: i64, now: SystemTime) {
        let state = self.partitions.entry(partition).or_default();
        let committed = *state.committed.get_or_insert(offset);
        state.fetched_end = state.fetched_end.max(offset + 1);
        if state.waiting_since.is_none() && state.fetched_end > committed {
            state.waiting_since = Some(now);
            self.show(partition);
        }
    }

    /// `partition`'s offsets were committed up to `next` (the next offset to read).
    pub fn committed(&mut self, partition: i32, next: i64, now: SystemTime) {
        let state = self.partitions.entry(partition).or_default();
        if state.committed.is_some_and(|c| c >= next) {
            return;
        }
        state.committed = Some(next);
        state.waiting_since = (state.fetched_end > next).then_some(now);
        self.show(partition);
    }

    /// The positions went back to the group's committed offsets (`None`: nothing committed): what was fetched
    /// will be fetched again, and nothing moved unless the group's offset is ahead of what this maker knew.
    pub fn rewound(&mut self, offsets: &BTreeMap<i32, Option<i64>>, now: SystemTime) {
        for (&partition, &offset) in offsets {
            if let Some(offset) = offset {
                self.committed(partition, offset, now);
            }
            if let Some(state) = self.partitions.get_mut(&partition) {
                state.fetched_end = state.committed.unwrap_or(0);
            }
        }
    }

    /// `partition` is no longer this maker's: its series goes (its next holder shows it).
    pub fn release(&mut self, partition: i32) {
        self.partitions.remove(&partition);
        self.gauge.remove(&PartitionLabel { partition });
    }

    /// Since when `partition` has had orders waiting without moving.
    pub fn waiting_since(&self, partition: i32) -> Option<SystemTime> {
        self.partitions.get(&partition)?.waiting_since
    }

    fn show(&self, partition: i32) {
        let seconds = self
            .waiting_since(partition)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        self.gauge
            .get_or_create(&PartitionLabel { partition })
            .set(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn shown(progress: &Progress, partition: i32) -> Option<f64> {
        let label = PartitionLabel { partition };
        let mut encoded = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("waiting_since", "", progress.gauge.clone());
        prometheus_client::encoding::text::encode(&mut encoded, &registry).unwrap();
        encoded
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "waiting_since{{partition=\"{}\"}}",
                    label.partition
                ))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
    }

    #[test]
    fn the_clock_starts_at_the_first_fetch_and_restarts_when_the_offset_moves() {
        let mut progress = Progress::new(WaitingSince::default());
        progress.fetched(3, 100, at(10));
        progress.fetched(3, 101, at(11));
        assert_eq!(progress.waiting_since(3), Some(at(10)));
        assert_eq!(shown(&progress, 3), Some(10.0));
        // 100 committed, 101 still waits: the clock restarts.
        progress.committed(3, 101, at(12));
        assert_eq!(progress.waiting_since(3), Some(at(12)));
        assert_eq!(shown(&progress, 3), Some(12.0));
        // Everything committed: nothing waits.
        progress.committed(3, 102, at(13));
        assert_eq!(progress.waiting_since(3), None);
        assert_eq!(shown(&progress, 3), Some(0.0));
        // The next order starts a new clock.
        progress.fetched(3, 102, at(20));
        assert_eq!(progress.waiting_since(3), Some(at(20)));
    }

    #[test]
    fn rewinds_and_commits_that_do_not_move_leave_the_clock_running() {
        let mut progress = Progress::new(WaitingSince::default());
        progress.fetched(1, 50, at(10));
        progress.committed(1, 50, at(11));
        // Aborted, rewound to 50, fetched again: still waiting since 10.
        progress.rewound(&BTreeMap::from([(1, Some(50))]), at(12));
        progress.fetched(1, 50, at(13));
        progress.rewound(&BTreeMap::from([(1, Some(50)), (2, None)]), at(14));
        progress.fetched(1, 50, at(15));
        assert_eq!(progress.waiting_since(1), Some(at(10)));
        assert_eq!(shown(&progress, 1), Some(10.0));
        // A rewind that finds the group ahead (another maker's commit, a torn transaction) is a move.
        progress.rewound(&BTreeMap::from([(1, Some(60))]), at(16));
        assert_eq!(progress.waiting_since(1), None);
    }

    #[test]
    fn a_released_partition_shows_nothing() {
        let mut progress = Progress::new(WaitingSince::default());
        progress.fetched(4, 7, at(10));
        assert_eq!(shown(&progress, 4), Some(10.0));
        progress.release(4);
        assert_eq!(progress.waiting_since(4), None);
        assert_eq!(shown(&progress, 4), None);
    }

    #[test]
    fn the_shipped_bound_is_21_seconds() {
        assert_eq!(
            liveness_bound(
                Duration::from_secs(2),
                Duration::from_millis(20),
                Duration::from_secs(10)
            ),
            Duration::from_millis(21_020)
        );
    }
}
