//! The harness that runs the maker's loop over the fake broker ([`super::fake`]), and the settings the loop's
//! tests start from.

use std::sync::{Arc, Mutex};

use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tokio::time::Duration;
use tokio_util::sync::CancellationToken;

use super::super::{Settings, Worker};
use super::fake::{Fake, Script, State};
use crate::stats::{Stats, Summary};

pub(super) fn settings() -> Settings {
    Settings {
        maker_id: "maker-test".into(),
        group: "makers".into(),
        orders_topic: "orders".into(),
        deliveries_topic: "deliveries".into(),
        dlq_topic: "dlq".into(),
        max_tabs_count: 30,
        tab_making_time: Duration::from_secs(2),
        max_in_flight_orders: 8,
        commit_interval: Duration::from_millis(20),
        idle_exit_after: Duration::from_secs(5),
        max_orders: 0,
        drain_timeout: Duration::from_secs(20),
        handover_timeout: Duration::from_secs(1),
        startup_timeout: Duration::from_secs(60),
        commit_stuck_after: Duration::from_secs(20),
        surplus: None,
    }
}

/// A loop over a fake broker with `records` orders in each of `partitions` (assigned at once).
pub(super) struct Harness {
    pub(super) state: Arc<Mutex<State>>,
    pub(super) script: mpsc::UnboundedSender<Script>,
    pub(super) shutdown: CancellationToken,
    pub(super) stats: Arc<Stats>,
    worker: Option<Worker<Fake>>,
}

impl Harness {
    pub(super) fn new(settings: Settings, partitions: &[i32], records: usize) -> Self {
        let mut state = State::default();
        for &p in partitions {
            state.append(p, records);
        }
        let state = Arc::new(Mutex::new(state));
        let (script, receiver) = mpsc::unbounded_channel();
        let fake = Fake::new(Arc::clone(&state), receiver);
        let stats = Arc::new(Stats::register(&mut Registry::default()));
        let shutdown = CancellationToken::new();
        let worker = Worker::new(
            settings,
            fake,
            Arc::clone(&stats),
            Arc::default(),
            shutdown.clone(),
        );
        if !partitions.is_empty() {
            script.send(Script::Assign(partitions.to_vec())).unwrap();
        }
        Self {
            state,
            script,
            shutdown,
            stats,
            worker: Some(worker),
        }
    }

    pub(super) fn start(&mut self) -> tokio::task::JoinHandle<anyhow::Result<Summary>> {
        tokio::spawn(self.worker.take().unwrap().run())
    }

    pub(super) fn committed(&self, partition: i32) -> i64 {
        self.state
            .lock()
            .unwrap()
            .committed
            .get(&partition)
            .copied()
            .unwrap_or(0)
    }

    /// Whether no order's tabs are in the deliveries topic twice.
    pub(super) fn delivered_once_each(&self) -> bool {
        self.state
            .lock()
            .unwrap()
            .delivered
            .values()
            .all(|&n| n == 1)
    }

    pub(super) fn committed_once_each(&self) -> bool {
        self.state
            .lock()
            .unwrap()
            .commits_of
            .values()
            .all(|&n| n == 1)
    }
}
