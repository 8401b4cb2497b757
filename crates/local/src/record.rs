//! What a run records as it goes: one sample of the system per second, the run's set-up, and the children it
//! started. The chart and the report are drawn from them.

use serde::Serialize;

/// The state of the system during one second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub t_s: f64,
    /// Patients ordering.
    pub patients: u32,
    /// Orders placed per second of real time since the previous sample.
    pub orders_per_s: f64,
    /// Lag of the makers' group, as KEDA reads it (before its partition cap).
    pub lag: u64,
    /// KEDA's metric (the lag capped at one threshold per partition) at the scaler's last poll; `None` before
    /// the first.
    pub keda_metric: Option<u64>,
    /// Seconds since that poll.
    pub keda_metric_age_s: Option<f64>,
    /// Makers running.
    pub makers: u32,
    /// Tabs delivered per second of real time since the previous sample.
    pub tabs_per_s: f64,
    /// Percentiles of the tabs delivered since the previous sample; `None` when none was.
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub overhead_p50_ms: Option<f64>,
    pub overhead_p99_ms: Option<f64>,
    /// Dead letters written since the previous sample.
    pub dead_letters: u64,
}

/// What the run was, for the report's header.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// Names the run's children (`local-<run id>-…`) and, by default, its report directory.
    pub run_id: String,
    pub broker: String,
    pub guarantee: String,
    /// The run's topics and group (on a real broker, carrying the run id unless `--shared-topics`).
    pub topics: String,
    pub schedule: Vec<u32>,
    pub step_s: f64,
    pub tab_making_time_s: f64,
    pub lag_threshold: u64,
    pub max_makers: u32,
    pub polling_interval_s: f64,
}

/// A child the run started.
#[derive(Debug, Clone, Serialize)]
pub struct ChildRecord {
    pub name: String,
    /// `patient` or `medicine`.
    pub program: &'static str,
    /// Seconds into the run.
    pub started_s: f64,
    /// Where it served Prometheus metrics (`/metrics`).
    pub metrics_addr: Option<String>,
}
