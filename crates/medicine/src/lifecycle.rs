//! The maker's phases, each with its own deadline:
//!
//! ```text
//!   Joining ──assignment──▶ Consuming ──signal, idle, --max-orders, surplus──▶ Draining ──in flight done──▶ (exit)
//!      │                                                                          │
//!      └─ no assignment by --startup-timeout: fail                                └─ --drain-timeout ─▶ DrainExpired ─▶ (exit)
//! ```
//!
//! A signal while joining drains at once (nothing is in flight).

use tokio::time::{Duration, Instant};

/// Why the maker stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Signal,
    Idle,
    MaxOrders,
    /// KEDA's rule no longer counts this maker (see [`crate::surplus`]).
    Surplus,
}

impl StopReason {
    /// As logged.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signal => "signal",
            Self::Idle => "idle",
            Self::MaxOrders => "max-orders",
            Self::Surplus => "surplus",
        }
    }
}

/// Where the maker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Subscribed, not assigned yet: the group has not answered. Fails at `deadline`.
    Joining { deadline: Instant },
    /// Assigned (possibly nothing): fetching and making.
    Consuming,
    /// Stopping for `reason`: nothing new is started, what is in flight finishes by `deadline`.
    Draining {
        reason: StopReason,
        deadline: Instant,
    },
    /// The drain deadline passed: unfinished work was handed back; only the last commit remains.
    DrainExpired { reason: StopReason },
}

impl Phase {
    /// The phase a maker starts in: joining, for at most `startup_timeout`.
    pub fn joining(now: Instant, startup_timeout: Duration) -> Self {
        Self::Joining {
            deadline: now + startup_timeout,
        }
    }

    /// Whether new records may be started.
    pub fn accepts_work(self) -> bool {
        matches!(self, Self::Joining { .. } | Self::Consuming)
    }

    /// The phase after a stop is asked for: draining until `now + drain_timeout` (a stop already under way keeps
    /// its reason and deadline).
    pub fn stop(self, reason: StopReason, now: Instant, drain_timeout: Duration) -> Self {
        match self {
            Self::Joining { .. } | Self::Consuming => Self::Draining {
                reason,
                deadline: now + drain_timeout,
            },
            stopping => stopping,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_stop_keeps_the_first_reason_and_deadline() {
        let now = Instant::now();
        let draining = Phase::Consuming.stop(StopReason::Idle, now, Duration::from_secs(20));
        let again = draining.stop(
            StopReason::Signal,
            now + Duration::from_secs(5),
            Duration::from_secs(20),
        );
        assert_eq!(again, draining);
        assert!(matches!(
            again,
            Phase::Draining {
                reason: StopReason::Idle,
                ..
            }
        ));
        assert!(!again.accepts_work());
    }

    #[test]
    fn joining_has_its_own_deadline() {
        let now = Instant::now();
        let joining = Phase::joining(now, Duration::from_secs(60));
        assert_eq!(
            joining,
            Phase::Joining {
                deadline: now + Duration::from_secs(60)
            }
        );
        assert!(joining.accepts_work());
    }
}
