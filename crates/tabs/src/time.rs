//! Wall-clock timestamps in nanoseconds since the Unix epoch, the unit of every timestamp in the messages.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in nanoseconds since the Unix epoch (0 if the clock is before 1970, which only a broken clock reports).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Hands out timestamps that strictly increase, even if the wall clock steps back (NTP) or two calls fall in the
/// same nanosecond: each is `max(now, previous + 1)`.
#[derive(Debug, Default)]
pub struct MonotonicStamp {
    last: u64,
}

impl MonotonicStamp {
    /// The next timestamp, read from the wall clock.
    pub fn stamp(&mut self) -> u64 {
        self.next_from(now_ns())
    }

    /// The next timestamp given the wall clock reads `now`.
    pub fn next_from(&mut self, now: u64) -> u64 {
        self.last = now.max(self.last.saturating_add(1));
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_strictly_increase_when_the_clock_steps_back() {
        let mut stamp = MonotonicStamp::default();
        assert_eq!(stamp.next_from(1_000), 1_000);
        assert_eq!(stamp.next_from(500), 1_001);
        assert_eq!(stamp.next_from(1_001), 1_002);
        assert_eq!(stamp.next_from(5_000), 5_000);
    }

    #[test]
    fn wall_clock_is_after_2020() {
        assert!(now_ns() > 1_577_836_800_000_000_000);
    }
}
