//! The maker's loop: fetch orders, start their making, commit finished ones, follow rebalances, drain and exit.
//!
//! One task owns the broker handle, the ledger and the commits, so no lock orders them: a group event is applied
//! before any record after it. Orders are made on their own tasks and report back over a channel. Every
//! decision is made against the [`Broker`] seam, on tokio's clock, so unit tests step the loop with a fake broker
//! and paused time.

use std::sync::Arc;

use anyhow::bail;
use tabs::metrics::Health;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::broker::{Broker, Committed, Event};
use crate::completion::{Completion, Outcome};
use crate::ledger::Ledger;
use crate::lifecycle::{Phase, StopReason};
use crate::progress::{self, Progress};
use crate::stats::{Stats, Summary};
use crate::surplus::{GroupView, SurplusRule};
use assignment::Holdings;
use book::CommitBook;
use leaving::Leaving;
use scaling::Scaling;
use sharing::Sharing;
use workshop::Workshop;

/// What the loop decides with: the maker's configuration, without Kafka's.
#[derive(Debug, Clone)]
pub struct Settings {
    pub maker_id: String,
    pub group: String,
    pub orders_topic: String,
    pub deliveries_topic: String,
    pub dlq_topic: String,
    pub max_tabs_count: u32,
    pub tab_making_time: Duration,
    pub max_in_flight_orders: usize,
    pub commit_interval: Duration,
    pub idle_exit_after: Duration,
    pub max_orders: u64,
    pub drain_timeout: Duration,
    /// How long a revoked partition's orders in flight get to finish before it is handed back without them.
    pub handover_timeout: Duration,
    pub startup_timeout: Duration,
    /// A commit still running after this is stuck in the Kafka client: the producer is replaced (see
    /// `on_commit_stuck` in `worker/commits.rs`).
    pub commit_stuck_after: Duration,
    /// KEDA's rule, to leave by when surplus (`--lag-threshold`); none: never.
    pub surplus: Option<SurplusRule>,
}

/// What woke the loop.
enum Wake {
    Shutdown,
    Completion(Completion),
    CommitDone(Result<Committed, tokio::task::JoinError>),
    CommitStuck,
    CommitDue,
    DrainExpired,
    HandoverExpired,
    JoinTimedOut,
    IdleCheck,
    LookDue,
    Looked(anyhow::Result<GroupView>),
    Broker(Event),
}

/// The maker's loop over a [`Broker`].
pub struct Worker<B: Broker> {
    settings: Settings,
    broker: B,
    shutdown: CancellationToken,
    phase: Phase,
    ledger: Ledger<Outcome>,
    /// The orders being made, each on a task of its own (see [`workshop`]).
    workshop: Workshop,
    /// The commit under way, and what the maker remembers of its commits between them (see [`book`]).
    book: CommitBook,
    /// The partitions assigned, and those revoked and not yet handed back (see [`assignment`]).
    holdings: Holdings,
    /// Records fetched and not yet taken, and the partitions paused in the client (see [`sharing`]).
    sharing: Sharing,
    /// The idle countdown and `--max-orders` (see [`leaving`]).
    leaving: Leaving,
    /// How long each partition held has had orders waiting without moving (see `progress.rs`).
    progress: Progress,
    /// Its metrics, readiness and start time.
    telemetry: Telemetry,
    /// The looks at the group, and how long this maker has been surplus (see [`scaling`]).
    scaling: Scaling,
}

/// What the maker shows of itself: its metrics, its readiness, and when it started (for the log's
/// `since_start_ms`).
struct Telemetry {
    stats: Arc<Stats>,
    health: Arc<Health>,
    started: Instant,
}

impl Telemetry {
    fn since_start_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl<B: Broker> Worker<B> {
    /// A loop over `broker`, which has subscribed already.
    pub fn new(
        settings: Settings,
        broker: B,
        stats: Arc<Stats>,
        health: Arc<Health>,
        shutdown: CancellationToken,
    ) -> Self {
        let now = Instant::now();
        let bound = progress::liveness_bound(
            settings.tab_making_time,
            settings.commit_interval,
            settings.commit_stuck_after,
        );
        stats.liveness_bound.set(bound.as_secs_f64());
        let scaling = Scaling::new(settings.surplus, now);
        let leaving = Leaving::new(settings.idle_exit_after, settings.max_orders, now);
        Self {
            phase: Phase::joining(now, settings.startup_timeout),
            settings,
            broker,
            shutdown,
            ledger: Ledger::default(),
            workshop: Workshop::new(),
            book: CommitBook::new(now),
            holdings: Holdings::default(),
            sharing: Sharing::new(),
            leaving,
            progress: Progress::new(stats.waiting_since.clone()),
            telemetry: Telemetry {
                stats,
                health,
                started: now,
            },
            scaling,
        }
    }

    /// Runs until idle, `--max-orders`, or shutdown and drain; then commits, leaves the group and reports.
    pub async fn run(mut self) -> anyhow::Result<Summary> {
        let reason = loop {
            if let Some(reason) = self.done() {
                break reason;
            }
            if self.can_accept() {
                if let Some(record) = self.next_waiting() {
                    self.accept(record);
                    continue;
                }
            }
            self.hand_over_when_settled()?;
            self.update_pause()?;
            self.telemetry.stats.in_flight.set(self.in_flight() as i64);
            match self.next_wake().await {
                Wake::Shutdown => self.stop(StopReason::Signal),
                Wake::Completion(completion) => self.complete(completion)?,
                Wake::CommitDone(result) => self.on_commit_done(result).await?,
                Wake::CommitStuck => self.on_commit_stuck().await?,
                Wake::CommitDue => self.commit()?,
                Wake::DrainExpired => self.drain_expired(),
                Wake::HandoverExpired => self.handover_expired(),
                Wake::JoinTimedOut => bail!(
                    "no assignment from group {} within {:?} (--startup-timeout)",
                    self.settings.group,
                    self.settings.startup_timeout
                ),
                Wake::IdleCheck => self.idle_check(),
                Wake::LookDue => self.look(),
                Wake::Looked(view) => self.looked(view),
                Wake::Broker(event) => self.on_event(event)?,
            }
        };
        self.finish(reason).await
    }

    /// The reason to stop now: draining with nothing left in flight, or past the drain deadline.
    fn done(&self) -> Option<StopReason> {
        match self.phase {
            Phase::Draining { reason, .. } if self.in_flight() == 0 => Some(reason),
            Phase::DrainExpired { reason } => Some(reason),
            _ => None,
        }
    }

    /// Whether a new record may be started.
    fn can_accept(&self) -> bool {
        self.phase.accepts_work() && self.in_flight() < self.settings.max_in_flight_orders
    }

    /// Orders fetched and not yet committed: those in the ledger and those of the commit in flight. This is what
    /// `--max-in-flight-orders` bounds.
    pub(crate) fn in_flight(&self) -> usize {
        self.ledger.in_flight() + self.book.in_flight.as_ref().map_or(0, |c| c.records)
    }

    /// Waits for the next thing to do.
    async fn next_wake(&mut self) -> Wake {
        // One commit at a time: the next starts when the one in flight has ended.
        let commit_due = self.ledger.has_ready() && self.book.in_flight.is_none();
        let commit_at = self.book.window_from() + self.settings.commit_interval;
        let drain_at = match self.phase {
            Phase::Draining { deadline, .. } => Some(deadline),
            _ => None,
        };
        let handover_at = self.holdings.handover_deadline();
        let join_at = match self.phase {
            Phase::Joining { deadline } => Some(deadline),
            _ => None,
        };
        let idle_at = self.leaving.idle_at();
        let idle_watch = idle_at.is_some()
            && self.phase == Phase::Consuming
            && self.in_flight() == 0
            && self.sharing.is_empty();
        let accepts_work = self.phase.accepts_work();
        let stuck_at = self
            .book
            .in_flight
            .as_ref()
            .map(|c| c.began + self.settings.commit_stuck_after);
        let committing = self.book.in_flight.as_mut().map(|c| &mut c.handle);
        let commit_done = async {
            match committing {
                Some(handle) => handle.await,
                None => std::future::pending().await,
            }
        };
        let look_due = self.scaling.look_due(self.phase == Phase::Consuming);
        let next_look = self.scaling.next_look();
        let looking = self.scaling.looking();
        let looked = async {
            match looking {
                Some(look) => look.await,
                None => std::future::pending().await,
            }
        };
        let never = Instant::now() + Duration::from_secs(86_400 * 365);

        // Biased, in this order: a shutdown is seen even under a flood of records; finished work is taken before
        // new work (it frees in-flight slots); the end of a commit before the timers (the next commit can start);
        // the commit, drain, hand-over and join deadlines and the looks at the group before the broker (a stream of records
        // must not delay them); and the idle check only when nothing else is ready.
        tokio::select! {
            biased;
            () = self.shutdown.cancelled(), if accepts_work => Wake::Shutdown,
            Some(completion) = self.workshop.next() => Wake::Completion(completion),
            result = commit_done => Wake::CommitDone(result),
            () = tokio::time::sleep_until(stuck_at.unwrap_or(never)), if stuck_at.is_some() => Wake::CommitStuck,
            () = tokio::time::sleep_until(commit_at), if commit_due => Wake::CommitDue,
            () = tokio::time::sleep_until(drain_at.unwrap_or(never)), if drain_at.is_some() => Wake::DrainExpired,
            () = tokio::time::sleep_until(handover_at.unwrap_or(never)), if handover_at.is_some() => Wake::HandoverExpired,
            () = tokio::time::sleep_until(join_at.unwrap_or(never)), if join_at.is_some() => Wake::JoinTimedOut,
            view = looked => Wake::Looked(view),
            () = tokio::time::sleep_until(next_look), if look_due => Wake::LookDue,
            event = self.broker.next() => Wake::Broker(event),
            () = tokio::time::sleep_until(idle_at.unwrap_or(never)), if idle_watch => Wake::IdleCheck,
        }
    }

    fn on_event(&mut self, event: Event) -> anyhow::Result<()> {
        match event {
            Event::Record(record) => {
                self.leaving.active(Instant::now());
                self.progress.fetched(
                    record.partition,
                    record.offset,
                    std::time::SystemTime::now(),
                );
                self.wait(record);
            }
            Event::Assigned(partitions) => self.on_assigned(partitions)?,
            Event::Revoked(partitions) => self.on_revoked(partitions)?,
            Event::Lost(partitions) => self.on_lost(&partitions),
            Event::Failed(err) => return Err(err),
        }
        Ok(())
    }

    fn idle_check(&mut self) {
        if self.in_flight() == 0 && self.sharing.is_empty() && self.leaving.idle(Instant::now()) {
            info!(idle = ?self.settings.idle_exit_after, "nothing to do; exiting");
            self.stop(StopReason::Idle);
        }
    }

    fn stop(&mut self, reason: StopReason) {
        if !self.phase.accepts_work() {
            return;
        }
        if reason == StopReason::Signal {
            info!(in_flight = self.in_flight(), drain_timeout = ?self.settings.drain_timeout, "draining");
        }
        self.telemetry.health.set_ready(false);
        self.phase = self
            .phase
            .stop(reason, Instant::now(), self.settings.drain_timeout);
    }

    fn drain_expired(&mut self) {
        let Phase::Draining { reason, .. } = self.phase else {
            return;
        };
        self.phase = Phase::DrainExpired { reason };
        let abandoned = self.ledger.abandon_unfinished();
        self.telemetry.stats.dropped.inc_by(abandoned as u64);
        if abandoned > 0 {
            warn!(
                orders = abandoned,
                "drain timeout reached; unfinished orders are left to the next maker"
            );
        }
    }
}

mod accept;
mod assignment;
mod book;
mod commits;
mod leaving;
pub use commits::{ALREADY_DELIVERED, LOST_COMMIT, STUCK_COMMIT};
mod scaling;
mod sharing;
#[cfg(test)]
mod tests;
mod workshop;
