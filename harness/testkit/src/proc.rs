//! Child processes that never outlive a test: their output collected, their JSON log events parsed.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Runs `program` with `args` at the most verbose log level until it exits (failing the test after `timeout`),
/// and returns its exit code and everything it wrote, both streams: to assert that a secret shows nowhere.
pub async fn run_verbose(program: &str, args: &[&str], timeout: Duration) -> (i32, String) {
    let mut child =
        Proc::spawn_with_stdout(program, args, &[("RUST_LOG", "trace,librdkafka=trace")]);
    let code = child.exit_code(timeout).await;
    (
        code,
        format!("{}\n{}", child.stdout_text(), child.stderr_text()),
    )
}

/// Runs `program` with `args` and one `--kafka-property key=value` of each of `properties` (misspelt
/// secret-looking keys) at the most verbose log level: it must fail, name a misspelt `…pasword` key, and show
/// the value nowhere in its output.
pub async fn assert_secret_values_hidden(program: &str, args: &[&str], properties: &[&str]) {
    for property in properties {
        let (key, secret) = property.split_once('=').expect("a property as key=value");
        let mut all = args.to_vec();
        all.extend(["--kafka-property", property]);
        let (code, output) = run_verbose(program, &all, Duration::from_secs(60)).await;
        assert_ne!(code, 0, "{output}");
        if key.ends_with("pasword") {
            assert!(output.contains(key), "the refusal names `{key}`: {output}");
        }
        assert!(
            !output.contains(secret),
            "the value of `{key}` shows:\n{output}"
        );
    }
}

/// A child process whose stderr lines are collected, killed (SIGKILL) if still running when dropped.
pub struct Proc {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
    name: String,
}

/// Collects the lines of a child's pipe on a thread.
fn collect_lines(pipe: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            sink.lock().expect("pipe lock").push(line);
        }
    });
    lines
}

impl Proc {
    /// Starts `program` with `args` and extra `env`, stdout discarded, stderr collected.
    pub fn spawn(program: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start(program, args, env, false)
    }

    /// Like [`spawn`](Self::spawn), with stdout collected too.
    pub fn spawn_with_stdout(program: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start(program, args, env, true)
    }

    fn start(program: &str, args: &[&str], env: &[(&str, &str)], capture_stdout: bool) -> Self {
        let mut command = Command::new(program);
        command
            .args(args)
            .env("MEDECINEPUBSUB_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(if capture_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        let stderr = collect_lines(child.stderr.take().expect("stderr is piped"));
        let stdout = match child.stdout.take() {
            Some(pipe) => collect_lines(pipe),
            None => Arc::default(),
        };
        Self {
            child,
            stderr,
            stdout,
            name: program.rsplit('/').next().unwrap_or(program).to_owned(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal`.
    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits i32"));
        let _ = kill(pid, signal);
    }

    /// Waits for the process to exit, up to `timeout`; `None` if it is still running.
    pub async fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Give the stderr reader a moment to drain the pipe.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the exit and returns its code, failing the test after `timeout`.
    pub async fn exit_code(&mut self, timeout: Duration) -> i32 {
        match self.wait_timeout(timeout).await {
            Some(status) => status.code().unwrap_or(-1),
            None => panic!(
                "{} still running after {timeout:?}; stderr:\n{}",
                self.name,
                self.stderr_text()
            ),
        }
    }

    /// Lines written to stderr so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Stdout so far (when collected), as one string.
    pub fn stdout_text(&self) -> String {
        self.stdout.lock().expect("stdout lock").join("\n")
    }

    /// Stderr so far, as one string.
    pub fn stderr_text(&self) -> String {
        self.stderr_lines().join("\n")
    }

    /// Stderr lines that are JSON log events whose message is `message`.
    pub fn log_events(&self, message: &str) -> Vec<HashMap<String, serde_json::Value>> {
        self.stderr_lines()
            .iter()
            .filter_map(|line| {
                serde_json::from_str::<HashMap<String, serde_json::Value>>(line).ok()
            })
            .filter(|event| event.get("message").and_then(|m| m.as_str()) == Some(message))
            .collect()
    }

    /// Waits until a log event with `message` appears, up to `timeout`.
    pub async fn wait_for_log(&self, message: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.log_events(message).is_empty() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The partitions of a maker's `partitions assigned` / `partitions revoked` log event, logged as `"[0, 3]"`.
pub fn logged_partitions(list: &str) -> Vec<i32> {
    list.trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}
