//! A real Prometheus for the tests (Debian's `prometheus` package, the server `./make_test.sh` installs): started on
//! loopback with a store of its own, scraping what a test names every second, evaluating `deploy/monitoring`'s
//! rules every second, and asked through its HTTP API. What the dashboard and the alerts mean is checked by the
//! engine that will run them, not by reading their text.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The Prometheus server to run: `PROMETHEUS` if set, else `prometheus` on `PATH`.
pub fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PROMETHEUS") {
        return Some(path.into());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("prometheus"))
        .find(|path| path.is_file())
}

/// The server, or `None` (after saying so) outside CI.
///
/// # Panics
/// When `CI` is set and there is none: in CI a missing Prometheus is a failure, never a skip.
pub fn available() -> Option<PathBuf> {
    match binary() {
        Some(path) => Some(path),
        None if std::env::var_os("CI").is_some() => {
            panic!("CI is set but there is no prometheus on PATH: run the tests through ./make_test.sh")
        }
        None => {
            eprintln!("SKIPPED: no prometheus on PATH (./make_test.sh installs Debian's prometheus package)");
            None
        }
    }
}

/// Returns the Prometheus server, or returns from the calling test when there is none (outside CI only).
#[macro_export]
macro_rules! require_prometheus {
    () => {
        match $crate::prometheus::available() {
            Some(path) => path,
            None => return,
        }
    };
}

/// `deploy/monitoring/medicine-pubsub.rules.yaml`: the alert rules that ship.
pub fn shipped_rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/monitoring/medicine-pubsub.rules.yaml")
}

/// One series of a query's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// An alert as `/api/v1/alerts` lists it.
#[derive(Debug, Clone)]
pub struct Alert {
    pub name: String,
    /// `pending` or `firing`.
    pub state: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// A running Prometheus, stopped (and its store removed) when dropped.
pub struct Prometheus {
    child: Child,
    addr: String,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts `server` scraping `scrape_configs` (Prometheus' own configuration, as JSON, which is YAML) every
    /// second and evaluating `rule_files` every second; waits until it is ready.
    ///
    /// # Panics
    /// When it does not start within 30 s (with its log).
    pub fn start(server: &Path, scrape_configs: Value, rule_files: &[PathBuf]) -> Self {
        let dir = std::env::temp_dir().join(crate::unique("prometheus"));
        std::fs::create_dir_all(&dir).expect("a directory for Prometheus");
        let config = json!({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": rule_files,
            "scrape_configs": scrape_configs,
        });
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config.to_string())
            .expect("Prometheus' configuration written");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("Prometheus' log");
        let child = Command::new(server)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", server.display()));
        let prometheus = Self { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while crate::http_get(&prometheus.addr, "/-/ready")
            .is_none_or(|body| !body.contains("Ready"))
        {
            assert!(
                Instant::now() < deadline,
                "Prometheus not ready within 30 s: {}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        prometheus
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    fn api(&self, path: &str, params: &[(&str, String)]) -> Value {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut request = agent.get(&format!("http://{}{path}", self.addr));
        for (name, value) in params {
            request = request.query(*name, value);
        }
        let mut response = request
            .call()
            .unwrap_or_else(|e| panic!("Prometheus {path}: {e}"));
        let text = response
            .body_mut()
            .read_to_string()
            .unwrap_or_else(|e| panic!("Prometheus {path}: {e}"));
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("Prometheus {path}: {e}: {text}"));
        assert_eq!(
            body["status"], "success",
            "Prometheus {path} {params:?}: {body}"
        );
        body["data"].clone()
    }

    /// Evaluates `expr` now. A query Prometheus refuses (a wrong function, a syntax error) fails the test.
    pub fn query(&self, expr: &str) -> Vec<Sample> {
        Self::samples(&self.api("/api/v1/query", &[("query", expr.to_owned())]))
    }

    /// Evaluates `expr` at Unix time `at`.
    pub fn query_at(&self, expr: &str, at: f64) -> Vec<Sample> {
        Self::samples(&self.api(
            "/api/v1/query",
            &[("query", expr.to_owned()), ("time", format!("{at:.3}"))],
        ))
    }

    fn samples(data: &Value) -> Vec<Sample> {
        let result = data["result"].as_array().cloned().unwrap_or_default();
        let value =
            |v: &Value| -> f64 { v.as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN) };
        match data["resultType"].as_str() {
            Some("vector") => result
                .iter()
                .map(|s| Sample {
                    labels: serde_json::from_value(s["metric"].clone()).unwrap_or_default(),
                    value: value(&s["value"][1]),
                })
                .collect(),
            Some("scalar") => vec![Sample {
                labels: BTreeMap::new(),
                value: value(&data["result"][1]),
            }],
            other => panic!("unexpected result type {other:?}: {data}"),
        }
    }

    /// The alerts pending or firing now.
    pub fn alerts(&self) -> Vec<Alert> {
        let data = self.api("/api/v1/alerts", &[]);
        data["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|a| Alert {
                name: a["labels"]["alertname"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                state: a["state"].as_str().unwrap_or_default().to_owned(),
                labels: serde_json::from_value(a["labels"].clone()).unwrap_or_default(),
                annotations: serde_json::from_value(a["annotations"].clone()).unwrap_or_default(),
            })
            .collect()
    }

    /// The rule groups it loaded, with each rule's last evaluation error (empty when it evaluated).
    pub fn rule_errors(&self) -> Vec<(String, String)> {
        let data = self.api("/api/v1/rules", &[]);
        let groups = data["groups"].as_array().cloned().unwrap_or_default();
        groups
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .filter(|r| r["health"] != "ok")
            .map(|r| {
                (
                    r["name"].as_str().unwrap_or_default().to_owned(),
                    r["lastError"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// How many rules it loaded.
    pub fn rules_loaded(&self) -> usize {
        let data = self.api("/api/v1/rules", &[]);
        data["groups"]
            .as_array()
            .map(|groups| {
                groups
                    .iter()
                    .map(|g| g["rules"].as_array().map_or(0, Vec::len))
                    .sum()
            })
            .unwrap_or(0)
    }

    /// The scrape targets that are up, by their `instance` label.
    pub fn targets_up(&self) -> Vec<String> {
        let data = self.api("/api/v1/targets", &[("state", "active".to_owned())]);
        data["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|t| t["health"] == "up")
            .filter_map(|t| t["labels"]["instance"].as_str().map(str::to_owned))
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
