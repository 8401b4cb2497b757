//! Child processes: patients and makers, each the `patient` or `medicine` program run by this multi-call binary.
//!
//! None outlives the local mode, whatever happens to it: each child is killed when its handle is dropped, each
//! runs in its own process group (a Ctrl-C on the terminal reaches the local mode only, which stops them in
//! order), and each asks the kernel for a SIGTERM when its parent dies, even of SIGKILL (the parent-death
//! signal).

use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child as ProcessChild, Command};
use tracing::{debug, warn};

/// Set in a child's environment to the local mode's process id.
const PARENT_VAR: &str = "MEDICINE_PUBSUB_LOCAL_PARENT";
/// In a child of the local mode: the kernel sends SIGTERM when the parent dies, even of SIGKILL (the child then
/// drains or flushes as on any SIGTERM, within its own bounds). Does nothing in a process started otherwise.
///
/// The parent-death signal follows the parent *thread* that started the child: the local mode starts children
/// from its runtime's worker threads, which live as long as it does.
pub fn exit_with_parent() {
    let Some(parent) = std::env::var(PARENT_VAR)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return;
    };
    if let Err(err) = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM) {
        warn!(error = %err, "cannot ask for a signal when the local mode dies");
    }
    // The parent may have died before the request was made: then it is not our parent any more.
    if nix::unistd::getppid().as_raw() != parent {
        let _ = nix::sys::signal::raise(Signal::SIGTERM);
    }
}

/// The variable that gives a child (patient or maker) its metrics address.
pub const METRICS_ADDR_VAR: &str = "MEDECINEPUBSUB_METRICS_ADDR";

/// A loopback address with a port free right now, for a child's metrics: each child gets its own, so a
/// Prometheus can scrape every one (`prometheus-targets.json` in the report directory lists them).
pub fn free_metrics_addr() -> Option<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
    listener.local_addr().ok().map(|addr| addr.to_string())
}

/// What a child is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Patient,
    Maker,
}

impl Kind {
    /// The program it runs (`patient` or `medicine`).
    pub fn program(self) -> &'static str {
        match self {
            Self::Patient => "patient",
            Self::Maker => "medicine",
        }
    }
}

/// A running child. Dropping it kills it.
pub struct Child {
    process: ProcessChild,
    pub kind: Kind,
    pub name: String,
    pub started: Instant,
    /// Where it serves Prometheus metrics (`/metrics`), when it was given an address.
    pub metrics_addr: Option<String>,
}

impl Child {
    /// Starts `kind` with `args` and `env`, its stderr (logs) appended to `log`.
    pub fn spawn(
        kind: Kind,
        name: &str,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> std::io::Result<Self> {
        let exe = std::env::current_exe()?;
        let log = File::options().create(true).append(true).open(log)?;
        let mut command = Command::new(exe);
        command
            .arg(kind.program())
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env(PARENT_VAR, std::process::id().to_string())
            .env("MEDECINEPUBSUB_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        let process = command.spawn()?;
        debug!(name, pid = process.id(), "child started");
        Ok(Self {
            process,
            kind,
            name: name.to_owned(),
            started: Instant::now(),
            metrics_addr: env
                .iter()
                .find(|(k, _)| k == METRICS_ADDR_VAR)
                .map(|(_, v)| v.clone()),
        })
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.id()
    }

    /// Whether it has exited (reaping it if so), with its exit code.
    pub fn try_exit(&mut self) -> Option<Option<i32>> {
        match self.process.try_wait() {
            Ok(Some(status)) => Some(status.code()),
            Ok(None) => None,
            Err(_) => Some(None),
        }
    }

    /// Asks it to stop (SIGTERM: a patient flushes, a maker drains).
    pub fn terminate(&self) {
        if let Some(pid) = self.pid().and_then(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }

    /// SIGTERM, then waits up to `grace` for the exit, then SIGKILL. Returns the exit code if it exited.
    pub async fn stop(&mut self, grace: Duration) -> Option<i32> {
        self.terminate();
        match tokio::time::timeout(grace, self.process.wait()).await {
            Ok(Ok(status)) => status.code(),
            _ => {
                warn!(name = %self.name, "did not stop within {grace:?}; killing it");
                let _ = self.process.kill().await;
                None
            }
        }
    }
}
