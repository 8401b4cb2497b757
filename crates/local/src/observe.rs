//! Watching a run from outside, as a user would: the orders and tabs topics read (read_committed) into an
//! audit and per-second figures, and the dead letters (the group's lag: `audit::liveness::LagProbe`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use audit::{Audit, Report, Start, TopicReader};
use hdrhistogram::Histogram;
use rdkafka::message::Message;
use tabs::kafka::KafkaArgs;
use tabs::messages::{parse_order, Tab};

/// Latency percentiles of one second, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Second {
    pub orders: u64,
    pub dead_letters: u64,
    pub tabs: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub overhead_p50_ms: f64,
    pub overhead_p99_ms: f64,
}

struct State {
    audit: Audit,
    orders: u64,
    tabs: u64,
    dead_letters: u64,
    total_dead_letters: u64,
    latency: Histogram<u64>,
    overhead: Histogram<u64>,
    error: Option<String>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("static histogram bounds are valid")
}

/// Reads orders and tabs from the moment it starts.
pub struct Observer {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Observer {
    /// Opens both topics at their current end (so every order placed from now on is seen), then reads them on
    /// a thread of its own.
    pub async fn start(
        kafka: KafkaArgs,
        topics: [String; 3],
        max_tabs_count: u32,
        making_time: Duration,
    ) -> anyhow::Result<Self> {
        let readers = tokio::task::spawn_blocking(move || {
            let open = |topic: &String| {
                TopicReader::open(&kafka, topic, Start::End, true)
                    .with_context(|| format!("reading {topic}"))
            };
            anyhow::Ok([open(&topics[0])?, open(&topics[1])?, open(&topics[2])?])
        })
        .await??;
        let state = Arc::new(Mutex::new(State {
            audit: Audit::new(making_time),
            orders: 0,
            tabs: 0,
            dead_letters: 0,
            total_dead_letters: 0,
            latency: histogram(),
            overhead: histogram(),
            error: None,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
            std::thread::spawn(move || read(readers, &state, &stop, max_tabs_count, making_time))
        };
        Ok(Self {
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// The figures of the second since the previous call.
    pub fn take_second(&self) -> Second {
        let Ok(mut state) = self.state.lock() else {
            return Second::default();
        };
        let ms = |h: &Histogram<u64>, q: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(q) as f64 / 1e3
            }
        };
        let second = Second {
            orders: state.orders,
            dead_letters: state.dead_letters,
            tabs: state.tabs,
            latency_p50_ms: ms(&state.latency, 0.5),
            latency_p99_ms: ms(&state.latency, 0.99),
            overhead_p50_ms: ms(&state.overhead, 0.5),
            overhead_p99_ms: ms(&state.overhead, 0.99),
        };
        state.orders = 0;
        state.tabs = 0;
        state.dead_letters = 0;
        state.latency.reset();
        state.overhead.reset();
        second
    }

    /// The audit of everything seen so far.
    pub fn report(&self) -> Report {
        self.state
            .lock()
            .map(|s| s.audit.report())
            .unwrap_or_default()
    }

    /// Tabs of the orders seen that are not delivered yet.
    pub fn missing_tabs(&self) -> u64 {
        self.state
            .lock()
            .map(|s| s.audit.missing_tabs())
            .unwrap_or(0)
    }

    /// Dead letters seen so far.
    pub fn dead_letters(&self) -> u64 {
        self.state.lock().map(|s| s.total_dead_letters).unwrap_or(0)
    }

    /// A reading error, if the observer stopped on one.
    pub fn error(&self) -> Option<String> {
        self.state.lock().ok().and_then(|s| s.error.clone())
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Records taken from one reader before moving to the next, so no topic starves the others.
const BATCH: usize = 512;

fn read(
    [mut orders, mut deliveries, mut dlq]: [TopicReader; 3],
    state: &Mutex<State>,
    stop: &AtomicBool,
    max_tabs_count: u32,
    making_time: Duration,
) {
    let making_us = u64::try_from(making_time.as_micros()).unwrap_or(u64::MAX);
    let mut new_orders = Vec::with_capacity(BATCH);
    let mut new_tabs = Vec::with_capacity(BATCH);
    while !stop.load(Ordering::Relaxed) {
        // Orders first: a tab is checked against its order when both are known, in any order.
        let mut dead_letters = 0;
        for _ in 0..BATCH {
            match orders.next(Duration::ZERO) {
                Ok(Some(message)) => {
                    new_orders.extend(parse_order(message.payload(), max_tabs_count).ok())
                }
                Ok(None) => break,
                Err(err) => return fail(state, err),
            }
        }
        for _ in 0..BATCH {
            match deliveries.next(Duration::ZERO) {
                Ok(Some(message)) => new_tabs.extend(
                    message
                        .payload()
                        .and_then(|p| serde_json::from_slice::<Tab>(p).ok()),
                ),
                Ok(None) => break,
                Err(err) => return fail(state, err),
            }
        }
        for _ in 0..BATCH {
            match dlq.next(Duration::ZERO) {
                Ok(Some(_)) => dead_letters += 1,
                Ok(None) => break,
                Err(err) => return fail(state, err),
            }
        }
        if new_orders.is_empty() && new_tabs.is_empty() && dead_letters == 0 {
            // Nothing anywhere: wait a little on the busiest topic.
            match deliveries.next(Duration::from_millis(20)) {
                Ok(Some(message)) => new_tabs.extend(
                    message
                        .payload()
                        .and_then(|p| serde_json::from_slice::<Tab>(p).ok()),
                ),
                Ok(None) => continue,
                Err(err) => return fail(state, err),
            }
        }
        let Ok(mut state) = state.lock() else { return };
        state.dead_letters += dead_letters;
        state.total_dead_letters += dead_letters;
        for order in new_orders.drain(..) {
            state.orders += 1;
            state.audit.add_order(&order);
        }
        for tab in new_tabs.drain(..) {
            state.tabs += 1;
            let latency_us = tab
                .delivery_timestamp_ns
                .saturating_sub(tab.order_timestamp_ns)
                / 1_000;
            state.latency.saturating_record(latency_us.max(1));
            state
                .overhead
                .saturating_record(latency_us.saturating_sub(making_us).max(1));
            state.audit.add_tab(&tab);
        }
    }
}

fn fail(state: &Mutex<State>, err: rdkafka::error::KafkaError) {
    if let Ok(mut state) = state.lock() {
        state.error = Some(err.to_string());
    }
}
