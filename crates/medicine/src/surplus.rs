//! Leaving when surplus. KEDA's ScaledJob starts makers from the lag and never stops one; a maker exits when idle,
//! but a trickle of orders spread over every partition keeps each maker busy enough never to be idle, so after a
//! peak the makers it asked for would stay for nothing. With `--lag-threshold` a maker applies KEDA's own rule to
//! its group: when the group has more members than min(ceil(lag / lagThreshold), maxReplicaCount) (at least one),
//! the surplus members leave, and only they: the members are ranked by id and the last ones go, so each maker
//! decides alone, and together they leave neither all at once nor below what KEDA counts. A maker leaves only
//! after it has been surplus for `--surplus-exit-after` without a break, and only when the makers that stay would
//! still be enough with a quarter more lag, so a lag that wavers around a threshold does not make makers come
//! and go.

use tabs::keda::{self, ScalerSettings};
use tokio::time::Duration;

/// The rule a maker follows (KEDA's trigger and ScaledJob settings), and how long it must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SurplusRule {
    pub scaler: ScalerSettings,
    pub after: Duration,
}

impl SurplusRule {
    /// How often the group is looked at: often enough to leave within a fifth of `after` of the time.
    pub fn check_every(&self) -> Duration {
        (self.after / 5).clamp(Duration::from_millis(200), Duration::from_secs(2))
    }
}

/// What a maker sees of its group: KEDA's lag of every partition, and who is in the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    pub lags: Vec<u64>,
    /// The members' ids, sorted.
    pub members: Vec<String>,
    /// This maker's member id.
    pub me: String,
}

/// Whether KEDA's rule counts this maker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Counted,
    Surplus { members: usize, wanted: u32 },
}

/// KEDA's rule applied to `view`, with a quarter more lag than there is: the members beyond what it wants (at
/// least one stays: the last maker keeps the idle rule) are the last ones by id.
pub fn judge(view: &GroupView, scaler: &ScalerSettings) -> Verdict {
    let metric = keda::scaler_metric(&view.lags, scaler);
    let wanted = keda::wanted(metric + metric.div_ceil(4), scaler).max(1);
    let members = view.members.len();
    let surplus = members.saturating_sub(wanted as usize);
    let Some(position) = view.members.iter().position(|m| *m == view.me) else {
        // Not in the description yet (it lags a join): count it.
        return Verdict::Counted;
    };
    if members - 1 - position < surplus {
        Verdict::Surplus { members, wanted }
    } else {
        Verdict::Counted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEDA: ScalerSettings = ScalerSettings {
        lag_threshold: 10,
        activation_lag_threshold: 0,
        max_replicas: 12,
        allow_idle_consumers: false,
    };

    fn view(lag: u64, members: usize, me: usize) -> GroupView {
        let mut lags = vec![0; 12];
        lags[0] = lag;
        GroupView {
            lags,
            members: (0..members).map(|i| format!("m{i:02}")).collect(),
            me: format!("m{me:02}"),
        }
    }

    fn leaving(lag: u64, members: usize) -> Vec<usize> {
        (0..members)
            .filter(|&me| judge(&view(lag, members, me), &KEDA) != Verdict::Counted)
            .collect()
    }

    #[test]
    fn exactly_the_surplus_members_leave_the_last_by_id() {
        // (lag, members, who leaves)
        let cases: [(u64, usize, &[usize]); 8] = [
            (35, 4, &[]),                      // ceil(35 / 10) = 4: every one counted
            (24, 4, &[3]),                     // 24 + 6 = 30: 3 wanted, one leaves
            (25, 4, &[]), // 3 are what KEDA asks for, but not with a quarter more lag (32)
            (1, 9, &[1, 2, 3, 4, 5, 6, 7, 8]), // 1 wanted: all but one
            (0, 3, &[1, 2]), // no lag: the last maker stays (it keeps the idle rule)
            (0, 1, &[]),  // alone: never surplus
            (500, 12, &[]), // capped at 12 partitions, 12 wanted
            (60, 12, &[8, 9, 10, 11]),
        ];
        for (lag, members, expected) in cases {
            assert_eq!(
                leaving(lag, members),
                expected,
                "lag {lag}, {members} members"
            );
        }
    }

    #[test]
    fn never_below_what_kedas_rule_counts_and_within_a_quarter_of_it() {
        for members in 1..=12 {
            for lag in 0..=130 {
                let stay = members - leaving(lag, members).len();
                let counted = (lag.div_ceil(10) as usize).clamp(1, 12);
                let margin = ((lag + lag.div_ceil(4)).div_ceil(10) as usize).clamp(1, 12);
                assert!(stay >= members.min(counted), "lag {lag}, {members} members");
                assert_eq!(stay, members.min(margin), "lag {lag}, {members} members");
            }
        }
    }

    #[test]
    fn a_maker_missing_from_the_description_is_counted() {
        let mut stale = view(0, 3, 2);
        stale.me = "newcomer".into();
        assert_eq!(judge(&stale, &KEDA), Verdict::Counted);
    }

    #[test]
    fn the_group_is_looked_at_often_enough() {
        let rule = |after| SurplusRule {
            scaler: KEDA,
            after,
        };
        assert_eq!(
            rule(Duration::from_secs(10)).check_every(),
            Duration::from_secs(2)
        );
        assert_eq!(
            rule(Duration::from_secs(2)).check_every(),
            Duration::from_millis(400)
        );
        assert_eq!(
            rule(Duration::from_millis(100)).check_every(),
            Duration::from_millis(200)
        );
    }
}
