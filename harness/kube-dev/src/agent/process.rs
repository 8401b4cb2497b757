//! One container as a local process: started with exactly the pod's environment, its output kept in a log file in
//! the CRI format kubelets write (which kwok serves to `kubectl logs`), stopped with SIGTERM then SIGKILL.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use super::spec::Launch;

/// A running container process.
pub struct Process {
    child: Child,
    pid: i32,
    /// Ends when both output pipes are closed and written out.
    output: tokio::task::JoinHandle<()>,
}

/// How a container process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The exit code, or 128 + the signal that killed it (as a shell and the kubelet report it).
    pub code: i32,
    pub signal: Option<i32>,
}

impl Exit {
    fn from_status(status: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt as _;
        match (status.code(), status.signal()) {
            (Some(code), _) => Self { code, signal: None },
            (None, Some(signal)) => Self {
                code: 128 + signal,
                signal: Some(signal),
            },
            (None, None) => Self {
                code: 1,
                signal: None,
            },
        }
    }

    /// The kubelet's reason for a terminated container.
    pub fn reason(&self) -> &'static str {
        if self.code == 0 {
            "Completed"
        } else {
            "Error"
        }
    }
}

impl Process {
    /// Starts `launch` in `dir`, appending its output to `log`.
    pub fn start(
        launch: &Launch,
        dir: &Path,
        log: &Path,
        kubeconfig: Option<&PathBuf>,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(&launch.program);
        command
            .args(&launch.args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", dir)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: signals reach whatever it starts, and a Ctrl-C aimed at the agent does not.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(path) = kubeconfig {
            command.env("KUBECONFIG", path);
        }
        for (name, value) in &launch.env {
            command.env(name, value);
        }
        if let Some((uid, gid)) = launch.user {
            if nix::unistd::geteuid().is_root() {
                command.uid(uid).gid(gid);
            }
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", launch.program.display()))?;
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .context("the started process has no pid")?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let sink = std::sync::Arc::new(Mutex::new(tokio::fs::File::from_std(file)));
        let stdout = child
            .stdout
            .take()
            .map(|p| copy_lines(p, "stdout", sink.clone()));
        let stderr = child.stderr.take().map(|p| copy_lines(p, "stderr", sink));
        let output = tokio::spawn(async move {
            for task in [stdout, stderr].into_iter().flatten() {
                let _ = task.await;
            }
        });
        Ok(Self { child, pid, output })
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits for the end, with its output written out.
    pub async fn wait(&mut self) -> anyhow::Result<Exit> {
        let status = self
            .child
            .wait()
            .await
            .context("waiting for a container process")?;
        let _ = (&mut self.output).await;
        Ok(Exit::from_status(status))
    }

    /// SIGTERM, then SIGKILL after `grace`: how a container is stopped.
    pub async fn stop(&mut self, grace: Duration) -> anyhow::Result<Exit> {
        self.signal(Signal::SIGTERM);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => {
                let status = status.context("waiting for a stopped container")?;
                let _ = (&mut self.output).await;
                Ok(Exit::from_status(status))
            }
            Err(_) => {
                self.signal(Signal::SIGKILL);
                self.wait().await
            }
        }
    }

    /// Sends `signal` to the container's process group.
    pub fn signal(&self, signal: Signal) {
        let _ = killpg(Pid::from_raw(self.pid), signal);
    }
}

/// Copies each line of `pipe` to `sink` as a CRI log line: `<RFC 3339 time> <stream> F <line>`.
fn copy_lines(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    stream: &'static str,
    sink: std::sync::Arc<Mutex<tokio::fs::File>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let stamped = format!(
                "{} {stream} F {line}\n",
                rfc3339_nanos(std::time::SystemTime::now())
            );
            let mut file = sink.lock().await;
            if file.write_all(stamped.as_bytes()).await.is_err() {
                return;
            }
            let _ = file.flush().await;
        }
    })
}

/// The container output of a CRI log file, without the time, stream and tag columns.
pub fn log_text(cri: &str) -> String {
    cri.lines()
        .map(|line| line.splitn(4, ' ').nth(3).unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `2026-12-01T20:56:14.123456789Z`.
pub fn rfc3339_nanos(time: std::time::SystemTime) -> String {
    let since = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let timestamp = k8s_openapi::jiff::Timestamp::from_second(since.as_secs() as i64)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    let seconds = timestamp.strftime("%Y-%m-%dT%H:%M:%S");
    format!("{seconds}.{:09}Z", since.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_cri_formatted_and_read_back() {
        let time = std::time::UNIX_EPOCH + Duration::new(1_795_853_039, 904_804_609);
        assert_eq!(rfc3339_nanos(time), "2026-11-28T08:03:59.904804609Z");
        let cri = "2026-11-28T08:03:59.904804609Z stderr F {\"message\":\"maker starting\"}\n";
        assert_eq!(log_text(cri), "{\"message\":\"maker starting\"}");
    }

    #[tokio::test]
    async fn stop_escalates_to_sigkill_after_the_grace_period() {
        let dir = std::env::temp_dir().join(format!("kube-dev-process-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let launch = Launch {
            container: "c".into(),
            image: "i".into(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "trap '' TERM; echo started; sleep 30".into()],
            env: vec![],
            ports: vec![],
            readiness: None,
            liveness: None,
            user: None,
        };
        let log = dir.join("c.log");
        let mut process = Process::start(&launch, &dir, &log, None).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let exit = process.stop(Duration::from_millis(300)).await.unwrap();
        assert_eq!(
            exit,
            Exit {
                code: 137,
                signal: Some(9)
            },
            "SIGTERM ignored, SIGKILL"
        );
        assert_eq!(log_text(&std::fs::read_to_string(&log).unwrap()), "started");
        let _ = std::fs::remove_dir_all(dir);
    }
}
