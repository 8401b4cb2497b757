//! Committing: the finished prefix of each partition in one transaction (or one offset commit), its end, the
//! rewind after a commit that did not happen, and the last commits at exit.

use std::collections::{BTreeMap, HashSet};

use anyhow::{bail, Context as _};
use tabs::time::now_ns;
use tokio::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

use super::book::{InFlightCommit, MAX_CONSECUTIVE_ABORTS};
use super::{Telemetry, Worker};
use crate::broker::Broker;
use crate::broker::{Batch, Committed};
use crate::completion::Outcome;
use crate::lifecycle::{Phase, StopReason};
use crate::stats::Summary;

/// Past the drain deadline, how long the last commits may still take before the maker exits without them.
const FINAL_COMMIT_GRACE: Duration = Duration::from_secs(2);
/// How long the order tasks get to notice their cancellation at exit.
const TASKS_GRACE: Duration = Duration::from_secs(1);

/// The warning of a rewind that read a partition's committed offset behind this maker's own last commit of it
/// (with `partition`, `group_offset` and `own_commit`); the fault campaign attributes duplicates by it.
pub const LOST_COMMIT: &str = "the group's committed offset is behind this maker's last commit: the broker lost a \
                               commit it acknowledged; its orders are made again (their tabs twice if the broker \
                               kept them)";

/// The error of a commit given up as stuck (with `after_ms` and `orders`).
pub const STUCK_COMMIT: &str =
    "a commit is stuck in the Kafka client; replacing the producer and making its orders again";
/// The line of an order fetched again and found already delivered (with `partition`, `offset`, `patient_id`).
pub const ALREADY_DELIVERED: &str =
    "order already delivered by a transaction whose offsets were lost; not made again";

impl<B: Broker> Worker<B> {
    /// Commits every partition's finished prefix; the commit runs beside the loop and its end arrives as
    /// [`Wake::CommitDone`].
    pub(super) fn commit(&mut self) -> anyhow::Result<()> {
        // The group's events the client delivered first: a partition it lost must leave the ledger before the
        // ready prefix is taken (the loop's wake-ups put the commit timer before the broker's events).
        while let Some(event) = self.broker.take_group_event() {
            self.on_event(event)?;
        }
        let ready = self.ledger.take_ready();
        if ready.is_empty() {
            return Ok(());
        }
        let records = ready.results.len();
        let offsets = ready.offsets.clone();
        let batch = Batch {
            offsets: ready.offsets,
            results: ready.results,
        };
        let future = self.broker.commit(batch)?;
        self.book.in_flight = Some(InFlightCommit {
            handle: tokio::spawn(future),
            began: Instant::now(),
            records,
            offsets,
        });
        Ok(())
    }

    /// Handles the end of the commit in flight.
    pub(super) async fn on_commit_done(
        &mut self,
        result: Result<Committed, tokio::task::JoinError>,
    ) -> anyhow::Result<()> {
        let Some(commit) = self.book.in_flight.take() else {
            return Ok(());
        };
        self.book.ended(Instant::now());
        let (outcome, results) = result.context("commit task")?;
        match outcome {
            Ok(()) => {
                debug!(
                    records = results.len(),
                    duration_ms = commit.began.elapsed().as_millis() as u64,
                    "committed"
                );
                self.telemetry.stats.commits.inc();
                if self.book.committed(&commit.offsets, Instant::now()) {
                    info!(
                        since_start_ms = self.telemetry.since_start_ms(),
                        "first orders committed"
                    );
                }
                let now = std::time::SystemTime::now();
                for (&partition, &next) in &commit.offsets {
                    self.progress.committed(partition, next, now);
                }
                let committed_at = now_ns();
                for outcome in &results {
                    self.record_done(outcome, committed_at);
                }
                Ok(())
            }
            Err(failure) if failure.needs_new_producer() => {
                self.count_lost_commit(&results, results.len(), &failure.to_string(), "the transactional producer cannot continue; replacing it and making the orders again")?;
                self.rewind(true).await
            }
            Err(failure) => {
                self.count_lost_commit(&results, results.len(), &failure.to_string(), "transaction aborted; rewinding to the committed offsets to make the orders again")?;
                self.rewind(false).await
            }
        }
    }

    /// A commit still running after `commit_stuck_after` (the transaction timeout): a step of it did not return within its own timeout (seen
    /// once on three nodes after the transaction coordinator's node was killed: one maker three minutes in a
    /// commit, its partitions standing while its consumer kept them). The commit is given up and the producer
    /// replaced: the new one's `init_transactions` fences the old and settles its transaction, and the rewind reads
    /// back what was committed of it (see `doubt.rs`). The old task is left to end on its own.
    pub(super) async fn on_commit_stuck(&mut self) -> anyhow::Result<()> {
        let Some(commit) = self.book.in_flight.take() else {
            return Ok(());
        };
        self.book.ended(Instant::now());
        error!(
            after_ms = commit.began.elapsed().as_millis() as u64,
            orders = commit.records,
            "{STUCK_COMMIT}"
        );
        self.telemetry.stats.stuck_commits.inc();
        self.count_lost_commit(&[], commit.records, "commit stuck", "commit given up")?;
        self.rewind(true).await
    }

    /// Counts a commit of `orders` that did not happen (its dead letters remembered, to go again without their
    /// payload),
    /// and gives up after [`MAX_CONSECUTIVE_ABORTS`] in a row: a broker that refuses every transaction is not
    /// waited out here but reported (the job fails, the orders stay in the topic for the next maker).
    fn count_lost_commit(
        &mut self,
        results: &[Outcome],
        orders: usize,
        reason: &str,
        what: &str,
    ) -> anyhow::Result<()> {
        self.telemetry.stats.aborts.inc();
        self.telemetry.stats.dropped.inc_by(orders as u64);
        let consecutive = self.book.lost(results, reason);
        warn!(error = %reason, orders, consecutive, "{what}");
        if consecutive >= MAX_CONSECUTIVE_ABORTS {
            bail!("{MAX_CONSECUTIVE_ABORTS} transactions in a row did not commit; last error: {reason}");
        }
        Ok(())
    }

    /// After a commit that did not happen: forget everything in flight and fetch again from the committed offsets.
    async fn rewind(&mut self, replace_producer: bool) -> anyhow::Result<()> {
        let dropped = self.ledger.reset();
        self.telemetry.stats.dropped.inc_by(dropped as u64);
        self.sharing.forget_all();
        let resumed = self.read_committed_offsets(replace_producer).await?;
        self.progress
            .rewound(&resumed, std::time::SystemTime::now());
        // The orders just dropped are fetched again from here: the idle countdown starts again, or a rewind after a
        // broker that stood still longer than the idle time would end the maker before its first fetch.
        self.leaving.active(Instant::now());
        let lost = self.check_commits_kept(&resumed);
        info!(dropped_orders = dropped, "rewound to the committed offsets");
        self.book.found_delivered(HashSet::new());
        // A commit that failed with the producer may have been committed anyway, in part; offsets read back
        // behind the maker's own commits were lost by the broker, maybe without their tabs. Either way the
        // deliveries topic knows which orders are done.
        if replace_producer || lost {
            match self.broker.delivered().await {
                Ok(found) => {
                    info!(
                        orders = found.len(),
                        "read back what the recent transactions committed; those orders are not made again"
                    );
                    self.book.found_delivered(found);
                }
                Err(err) => warn!(
                    error = format!("{err:#}"),
                    "could not read back what the recent transactions committed; orders whose tabs were \
                     committed are made again (their tabs twice)"
                ),
            }
        }
        Ok(())
    }

    /// Rewinds the broker's positions to the group's committed offsets. Reading them needs the group coordinator,
    /// which a fault can keep away for a while (one cut off from the network): the read is tried again, with a
    /// warning each time, for up to the start-up timeout, and only then does the maker give up (exit 1). (It once
    /// gave up at the first timeout, in a three-node run.)
    async fn read_committed_offsets(
        &mut self,
        replace_producer: bool,
    ) -> anyhow::Result<BTreeMap<i32, Option<i64>>> {
        let deadline = Instant::now() + self.settings.startup_timeout;
        let mut replace = replace_producer;
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.broker.rewind(replace).await {
                Ok(resumed) => return Ok(resumed),
                Err(err) if Instant::now() + backoff < deadline => {
                    warn!(
                        error = format!("{err:#}"),
                        "reading the group's committed offsets failed; trying again"
                    );
                    // The producer, if it was to be replaced, has been.
                    replace = false;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Compares the committed offsets a rewind read with this maker's own last commits (see
    /// [`CommitBook::check_kept`](super::book::CommitBook::check_kept)). A group offset behind its own last commit
    /// means the broker lost a commit it acknowledged (seen on a single Kafka 4.3 node stopped right after a
    /// transaction: sometimes the whole transaction, sometimes only its offsets). The maker cannot tell which, so
    /// it reads from the group's offset: those orders are made again, never lost, and their tabs are in the topic
    /// twice if the broker kept them. It says so, and counts it.
    fn check_commits_kept(&mut self, resumed: &BTreeMap<i32, Option<i64>>) -> bool {
        let lost = self.book.check_kept(resumed);
        for commit in &lost {
            self.telemetry.stats.lost_commits.inc();
            warn!(
                partition = commit.partition,
                group_offset = commit.group_offset,
                own_commit = commit.own_commit,
                "{LOST_COMMIT}"
            );
        }
        !lost.is_empty()
    }

    fn record_done(&self, outcome: &Outcome, committed_at_ns: u64) {
        let latency = |order_ts: u64| {
            std::time::Duration::from_nanos(committed_at_ns.saturating_sub(order_ts))
        };
        match outcome {
            Outcome::Made { order, tabs } => {
                let latency = latency(order.order_timestamp_ns);
                self.telemetry.stats.order_done(
                    order.tabs_count,
                    latency,
                    self.settings.tab_making_time,
                );
                debug!(
                    patient_id = %order.patient_id,
                    tabs = tabs.len(),
                    latency_ms = latency.as_millis() as u64,
                    "order done"
                );
            }
            Outcome::Rejected { letter, .. } => self.telemetry.stats.dead_letter(&letter.reason),
            Outcome::Delivered {
                rejected: Some(reason),
                ..
            } => self.telemetry.stats.dead_letter(reason),
            Outcome::Delivered {
                order_timestamp_ns,
                tabs,
                rejected: None,
            } => {
                let latency = latency(*order_timestamp_ns);
                self.telemetry
                    .stats
                    .order_done(*tabs, latency, self.settings.tab_making_time);
                debug!(tabs, latency_ms = latency.as_millis() as u64, "order done");
            }
            Outcome::AlreadyDelivered { order } => {
                self.telemetry.stats.already_delivered.inc();
                debug!(patient_id = %order.patient_id, "order already delivered; its offset committed");
            }
            // Failed orders stop the maker before they reach the ledger.
            Outcome::Failed(_) => {}
        }
    }

    /// Waits for the commit in flight, if any, and handles its end; with a `bound`, gives up after it (returns
    /// false, the commit left running).
    async fn settle_commit_within(&mut self, bound: Option<Duration>) -> anyhow::Result<bool> {
        let Some(commit) = self.book.in_flight.as_mut() else {
            return Ok(true);
        };
        let result = match bound {
            None => (&mut commit.handle).await,
            Some(bound) => match tokio::time::timeout(bound, &mut commit.handle).await {
                Ok(result) => result,
                Err(_) => {
                    warn!(
                        orders = commit.records,
                        "a transaction is still in flight at the drain deadline; leaving it to Kafka to abort"
                    );
                    return Ok(false);
                }
            },
        };
        self.on_commit_done(result).await?;
        Ok(true)
    }

    /// Commits what is finished, waits for the order tasks, leaves the group, and logs the summary.
    pub(super) async fn finish(mut self, reason: StopReason) -> anyhow::Result<Summary> {
        self.telemetry.health.set_ready(false);
        // The commit in flight, then whatever finished meanwhile. Past the drain deadline each gets a short bound:
        // a transaction still stuck then (a broker away, a rebalance) is left to Kafka, which aborts it; its orders
        // are made again by the next maker, and this one exits within its grace period.
        let bound = matches!(self.phase, Phase::DrainExpired { .. }).then_some(FINAL_COMMIT_GRACE);
        if self.settle_commit_within(bound).await? {
            self.commit()?;
            self.settle_commit_within(bound).await?;
        }
        // Every order task has finished, or was cancelled (by a revocation or the drain deadline).
        let running = self.workshop.close(TASKS_GRACE).await;
        if running > 0 {
            warn!(tasks = running, "order tasks still running at exit");
        }
        let Self {
            broker,
            telemetry: Telemetry { stats, started, .. },
            book,
            ..
        } = self;
        broker.close().await;
        let summary = stats.summary();
        info!(
            reason = reason.as_str(),
            orders = summary.orders,
            tabs = summary.tabs,
            dead_letters = summary.dead_letters,
            latency_p50_ms = summary.latency_p50_ms,
            latency_p99_ms = summary.latency_p99_ms,
            commits = summary.commits,
            aborts = summary.aborts,
            dropped = summary.dropped,
            last_commit_s = book
                .last_success()
                .map_or(0.0, |at| at.duration_since(started).as_secs_f64()),
            uptime_s = started.elapsed().as_secs_f64(),
            "maker stopped"
        );
        Ok(summary)
    }
}
