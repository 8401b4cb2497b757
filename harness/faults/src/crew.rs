//! The makers of a scenario, running and gone, and what the liveness verdict needs from them: which partitions
//! each held and when, read from their `partitions assigned` and `partitions revoked` log events.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt as _;
use std::process::ExitStatus;
use std::time::{Duration, SystemTime};

use anyhow::ensure;

use audit::liveness::Holding;
use testkit::nix::sys::signal::Signal;
use testkit::Proc;

/// One maker process and when it ended (`None` while it runs).
struct Member {
    name: String,
    proc: Proc,
    ended: Option<SystemTime>,
    /// Killed by the scenario (SIGKILL).
    killed: bool,
}

/// The makers a scenario started, in order.
#[derive(Default)]
pub struct Crew {
    members: Vec<Member>,
}

impl Crew {
    /// Adds a running maker; returns its index.
    pub fn add(&mut self, proc: Proc) -> usize {
        self.members.push(Member {
            name: format!("maker pid {}", proc.pid()),
            proc,
            ended: None,
            killed: false,
        });
        self.members.len() - 1
    }

    /// How many makers were started.
    pub fn started(&self) -> u64 {
        self.members.len() as u64
    }

    /// Indices of the makers still running.
    pub fn running(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].ended.is_none())
            .collect()
    }

    pub fn proc(&self, index: usize) -> &Proc {
        &self.members[index].proc
    }

    /// When each maker the scenario killed died.
    pub fn kills(&self) -> Vec<SystemTime> {
        self.members
            .iter()
            .filter(|m| m.killed)
            .filter_map(|m| m.ended)
            .collect()
    }

    /// Every maker started, running or gone.
    pub fn running_and_gone(&self) -> Vec<&Proc> {
        self.members.iter().map(|m| &m.proc).collect()
    }

    /// Sends `signal` to a maker and waits up to `timeout` for it to exit; returns how it ended (`None`: still
    /// running, which the caller judges).
    pub async fn stop(
        &mut self,
        index: usize,
        signal: Signal,
        timeout: Duration,
    ) -> Option<ExitStatus> {
        let member = &mut self.members[index];
        member.proc.signal(signal);
        let status = member.proc.wait_timeout(timeout).await?;
        member.ended = Some(SystemTime::now());
        Some(status)
    }

    /// Kills a running maker with SIGKILL and checks that this is what it died of (not of something of its own
    /// a moment before).
    pub async fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        self.members[index].killed = true;
        let status = self
            .stop(index, Signal::SIGKILL, Duration::from_secs(5))
            .await;
        ensure!(
            status.and_then(|s| s.signal()) == Some(Signal::SIGKILL as i32),
            "{} ended {status:?}, not by the SIGKILL sent to it: {}",
            self.members[index].name,
            self.members[index].proc.stderr_text()
        );
        Ok(())
    }

    /// Sends SIGTERM to a running maker and checks that it drains and exits 0 within `timeout`.
    pub async fn terminate(&mut self, index: usize, timeout: Duration) -> anyhow::Result<()> {
        let status = self.stop(index, Signal::SIGTERM, timeout).await;
        ensure!(
            status.and_then(|s| s.code()) == Some(0),
            "{} ended {status:?} on SIGTERM (expected exit 0 within {timeout:?}): {}",
            self.members[index].name,
            self.members[index].proc.stderr_text()
        );
        Ok(())
    }

    /// Marks makers that exited by themselves (`--max-orders`, idle, surplus) as ended; returns how each ended.
    pub async fn reap(&mut self) -> Vec<ExitStatus> {
        let mut ended = Vec::new();
        for member in self.members.iter_mut().filter(|m| m.ended.is_none()) {
            if let Some(status) = member.proc.wait_timeout(Duration::ZERO).await {
                member.ended = Some(SystemTime::now());
                ended.push(status);
            }
        }
        ended
    }

    /// Fails if a maker exited by itself with anything but 0 (makers that leave by themselves drain first).
    pub async fn reap_clean(&mut self) -> anyhow::Result<()> {
        for member in self.members.iter_mut().filter(|m| m.ended.is_none()) {
            if let Some(status) = member.proc.wait_timeout(Duration::ZERO).await {
                member.ended = Some(SystemTime::now());
                // Its whole log: what it saw is the first thing to read.
                ensure!(
                    status.code() == Some(0),
                    "{} ended {status:?} by itself; its log:\n{}",
                    member.name,
                    member.proc.stderr_text()
                );
            }
        }
        Ok(())
    }

    /// Stops every running maker with SIGTERM; each must exit 0 within `timeout`, and none may have ended
    /// otherwise by itself before.
    pub async fn stop_all(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.reap_clean().await?;
        for index in self.running() {
            self.terminate(index, timeout).await?;
        }
        Ok(())
    }

    /// Which partitions each maker held, and from when to when, by its log.
    pub fn holdings(&self) -> Vec<Holding> {
        self.members.iter().flat_map(holdings_of).collect()
    }
}

/// The partitions in a `partitions assigned` or `partitions revoked` event (logged as `"[0, 3]"`) and its time.
fn event(
    event: &std::collections::HashMap<String, serde_json::Value>,
) -> Option<(SystemTime, Vec<i32>)> {
    let at = humantime::parse_rfc3339(event.get("timestamp")?.as_str()?).ok()?;
    let partitions = testkit::logged_partitions(event.get("partitions")?.as_str()?);
    Some((at, partitions))
}

fn holdings_of(member: &Member) -> Vec<Holding> {
    let mut changes: Vec<(SystemTime, bool, Vec<i32>)> = Vec::new();
    for (message, assigned) in [("partitions assigned", true), ("partitions revoked", false)] {
        for e in member.proc.log_events(message) {
            if let Some((at, partitions)) = event(&e) {
                changes.push((at, assigned, partitions));
            }
        }
    }
    changes.sort_by_key(|(at, _, _)| *at);
    let mut open: BTreeMap<i32, SystemTime> = BTreeMap::new();
    let mut holdings = Vec::new();
    let close = |partition: i32, from: SystemTime, until: Option<SystemTime>, killed| Holding {
        partition,
        maker: member.name.clone(),
        from,
        until,
        killed,
    };
    for (at, assigned, partitions) in changes {
        for partition in partitions {
            if assigned {
                open.entry(partition).or_insert(at);
            } else if let Some(from) = open.remove(&partition) {
                holdings.push(close(partition, from, Some(at), false));
            }
        }
    }
    // A maker that left by itself says when; one killed is known to have ended when it was reaped.
    let left = member
        .proc
        .log_events("left the group")
        .first()
        .and_then(|e| humantime::parse_rfc3339(e.get("timestamp")?.as_str()?).ok())
        .or(member.ended);
    holdings.extend(
        open.into_iter()
            .map(|(partition, from)| close(partition, from, left, member.killed)),
    );
    holdings
}
