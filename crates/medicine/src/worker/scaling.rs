//! The maker's side of scaling down: it looks at its group every so often and leaves (drains, commits, leaves
//! the group, exits 0) once KEDA's rule has found it surplus for `--surplus-exit-after` without a break (the rule
//! itself: [`crate::surplus`]).

use tokio::time::{Duration, Instant};
use tracing::{debug, info};

use super::Worker;
use crate::broker::{Broker, GroupFuture};
use crate::lifecycle::{Phase, StopReason};
use crate::surplus::{self, GroupView, SurplusRule, Verdict};

/// The looks at the group and the streak of surplus verdicts: owned here, the worker starts the looks when due
/// and leaves when told.
pub(super) struct Scaling {
    /// KEDA's rule, or `None` when the maker never leaves for being surplus.
    rule: Option<SurplusRule>,
    /// A look at the group running.
    looking: Option<GroupFuture>,
    /// When the next look starts.
    next_look: Instant,
    /// Since when every look found this maker surplus.
    surplus_since: Option<Instant>,
}

/// A maker surplus for long enough: what it says as it leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Leave {
    pub members: usize,
    pub wanted: u32,
    pub surplus_for: Duration,
}

impl Scaling {
    pub fn new(rule: Option<SurplusRule>, now: Instant) -> Self {
        Self {
            rule,
            looking: None,
            next_look: now,
            surplus_since: None,
        }
    }

    /// A look may start now or at [`next_look`](Self::next_look): there is a rule, the maker is consuming, and no
    /// look runs.
    pub fn look_due(&self, consuming: bool) -> bool {
        self.rule.is_some() && consuming && self.looking.is_none()
    }

    pub fn next_look(&self) -> Instant {
        self.next_look
    }

    pub fn start(&mut self, look: GroupFuture) {
        self.looking = Some(look);
    }

    /// The look running, to await.
    pub fn looking(&mut self) -> Option<&mut GroupFuture> {
        self.looking.as_mut()
    }

    /// Judges what the look found at `now`: the maker leaves once KEDA's rule has found it surplus for the rule's
    /// time without a break. A look that failed breaks the streak (a maker leaves only on evidence); a maker not
    /// `consuming` is not judged.
    pub fn looked(
        &mut self,
        view: anyhow::Result<GroupView>,
        consuming: bool,
        now: Instant,
    ) -> Option<Leave> {
        self.looking = None;
        let rule = self.rule?;
        self.next_look = now + rule.check_every();
        if !consuming {
            return None;
        }
        let verdict = match view {
            Ok(view) => surplus::judge(&view, &rule.scaler),
            Err(err) => {
                debug!(error = format!("{err:#}"), "could not look at the group");
                Verdict::Counted
            }
        };
        let Verdict::Surplus { members, wanted } = verdict else {
            self.surplus_since = None;
            return None;
        };
        let since = *self.surplus_since.get_or_insert(now);
        let surplus_for = now.duration_since(since);
        (surplus_for >= rule.after).then_some(Leave {
            members,
            wanted,
            surplus_for,
        })
    }
}

impl<B: Broker> Worker<B> {
    /// Starts a look at the group.
    pub(super) fn look(&mut self) {
        self.scaling.start(self.broker.group_view());
    }

    /// Leaves when the look's verdict says so.
    pub(super) fn looked(&mut self, view: anyhow::Result<GroupView>) {
        let consuming = self.phase == Phase::Consuming;
        if let Some(leave) = self.scaling.looked(view, consuming, Instant::now()) {
            info!(
                members = leave.members,
                wanted = leave.wanted,
                surplus_for = ?leave.surplus_for,
                in_flight = self.in_flight(),
                "surplus: KEDA's rule counts fewer makers than the group has; leaving"
            );
            self.stop(StopReason::Surplus);
        }
    }
}

#[cfg(test)]
mod tests {
    use tabs::keda::ScalerSettings;

    use super::*;

    const RULE: SurplusRule = SurplusRule {
        scaler: ScalerSettings {
            lag_threshold: 10,
            activation_lag_threshold: 0,
            max_replicas: 12,
            allow_idle_consumers: false,
        },
        after: Duration::from_secs(10),
    };

    /// Two members and no lag: the second (`m1`) is surplus, the first counted.
    fn view(me: &str) -> anyhow::Result<GroupView> {
        Ok(GroupView {
            lags: vec![0; 12],
            members: vec!["m0".into(), "m1".into()],
            me: me.into(),
        })
    }

    #[test]
    fn a_maker_leaves_after_being_surplus_for_the_rules_time_without_a_break() {
        let t0 = Instant::now();
        let mut scaling = Scaling::new(Some(RULE), t0);
        assert_eq!(scaling.looked(view("m1"), true, t0), None);
        assert_eq!(scaling.next_look(), t0 + RULE.check_every());
        assert_eq!(
            scaling.looked(view("m1"), true, t0 + Duration::from_secs(9)),
            None
        );
        assert_eq!(
            scaling.looked(view("m1"), true, t0 + Duration::from_secs(10)),
            Some(Leave {
                members: 2,
                wanted: 1,
                surplus_for: Duration::from_secs(10)
            })
        );
    }

    #[test]
    fn a_counted_verdict_or_a_failed_look_breaks_the_streak() {
        let t0 = Instant::now();
        let mut scaling = Scaling::new(Some(RULE), t0);
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(scaling.looked(view("m1"), true, at(0)), None);
        assert_eq!(scaling.looked(view("m0"), true, at(5)), None);
        assert_eq!(scaling.looked(view("m1"), true, at(6)), None);
        assert_eq!(
            scaling.looked(Err(anyhow::anyhow!("timed out")), true, at(12)),
            None
        );
        assert_eq!(scaling.looked(view("m1"), true, at(13)), None);
        assert_eq!(
            scaling.looked(view("m1"), true, at(22)),
            None,
            "9 s since the break"
        );
        assert!(scaling.looked(view("m1"), true, at(23)).is_some());
    }

    #[test]
    fn no_rule_or_no_consuming_means_no_look_and_no_leaving() {
        let t0 = Instant::now();
        let mut never = Scaling::new(None, t0);
        assert!(!never.look_due(true));
        assert_eq!(
            never.looked(view("m1"), true, t0 + Duration::from_secs(60)),
            None
        );
        let mut draining = Scaling::new(Some(RULE), t0);
        assert!(draining.look_due(true) && !draining.look_due(false));
        assert_eq!(draining.looked(view("m1"), false, t0), None);
        assert_eq!(
            draining.looked(view("m1"), false, t0 + Duration::from_secs(60)),
            None
        );
    }
}
