//! When the maker leaves by itself, besides being surplus ([`scaling`](super::scaling)): after standing idle for
//! `--idle-exit-after`, or once it has taken `--max-orders` records.

use tokio::time::{Duration, Instant};

/// The idle countdown and the count of records taken.
#[derive(Debug)]
pub(super) struct Leaving {
    /// Zero: never idle-exits.
    idle_after: Duration,
    /// The last record fetched, partition assigned or rewind: the idle countdown starts here.
    last_activity: Instant,
    /// Zero: no limit.
    max_orders: u64,
    taken: u64,
}

impl Leaving {
    pub fn new(idle_after: Duration, max_orders: u64, now: Instant) -> Self {
        Self {
            idle_after,
            last_activity: now,
            max_orders,
            taken: 0,
        }
    }

    /// Something happened at `now` (a record, an assignment, a rewind): the idle countdown starts again.
    pub fn active(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// When the maker will have stood idle long enough, if it ever idle-exits.
    pub fn idle_at(&self) -> Option<Instant> {
        (!self.idle_after.is_zero()).then(|| self.last_activity + self.idle_after)
    }

    /// Whether the maker has stood idle long enough at `now`.
    pub fn idle(&self, now: Instant) -> bool {
        self.idle_at().is_some_and(|at| now >= at)
    }

    /// Counts a record taken; returns the count when it reaches `--max-orders` (once).
    pub fn took_one(&mut self) -> Option<u64> {
        self.taken += 1;
        (self.max_orders > 0 && self.taken == self.max_orders).then_some(self.taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_starts_the_idle_countdown_again() {
        let t0 = Instant::now();
        let seconds = Duration::from_secs;
        let mut leaving = Leaving::new(seconds(10), 0, t0);
        assert_eq!(leaving.idle_at(), Some(t0 + seconds(10)));
        assert!(!leaving.idle(t0 + seconds(9)));
        leaving.active(t0 + seconds(9));
        assert!(!leaving.idle(t0 + seconds(18)));
        assert!(leaving.idle(t0 + seconds(19)));
        let never = Leaving::new(Duration::ZERO, 0, t0);
        assert_eq!(never.idle_at(), None);
        assert!(!never.idle(t0 + seconds(3600)));
    }

    #[test]
    fn max_orders_is_reached_once_and_zero_means_no_limit() {
        let mut leaving = Leaving::new(Duration::ZERO, 2, Instant::now());
        assert_eq!(leaving.took_one(), None);
        assert_eq!(leaving.took_one(), Some(2));
        assert_eq!(leaving.took_one(), None);
        let mut unlimited = Leaving::new(Duration::ZERO, 0, Instant::now());
        assert!((0..1000).all(|_| unlimited.took_one().is_none()));
    }
}
