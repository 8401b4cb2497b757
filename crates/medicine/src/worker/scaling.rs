//! The maker's side of scaling down: it looks at its group every so often and leaves (drains, commits, leaves
//! the group, exits 0) once KEDA's rule has found it surplus for `--surplus-exit-after` without a break (the rule
//! itself: [`crate::surplus`]).

use tokio::time::Instant;
use tracing::{debug, info};

use super::Worker;
use crate::broker::Broker;
use crate::lifecycle::{Phase, StopReason};
use crate::surplus::{self, GroupView, Verdict};

impl<B: Broker> Worker<B> {
    /// Starts a look at the group.
    pub(super) fn look(&mut self) {
        self.looking = Some(self.broker.group_view());
    }

    /// Judges what the look found; a look that failed breaks the streak (a maker leaves only on evidence).
    pub(super) fn looked(&mut self, view: anyhow::Result<GroupView>) {
        self.looking = None;
        let Some(rule) = self.settings.surplus else {
            return;
        };
        let now = Instant::now();
        self.next_look = now + rule.check_every();
        if self.phase != Phase::Consuming {
            return;
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
            return;
        };
        let since = *self.surplus_since.get_or_insert(now);
        if now.duration_since(since) >= rule.after {
            info!(
                members,
                wanted,
                surplus_for = ?now.duration_since(since),
                in_flight = self.in_flight(),
                "surplus: KEDA's rule counts fewer makers than the group has; leaving"
            );
            self.stop(StopReason::Surplus);
        }
    }
}
