//! Watching a run from outside, as a user would: the orders and tabs topics read (read_committed) into an
//! audit (of the whole run and of each step of the patient schedule) and per-second figures, and the dead
//! letters (the group's lag: `audit::liveness::LagProbe`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use audit::{Audit, Report, Start, TopicReader};
use hdrhistogram::Histogram;
use rdkafka::message::{BorrowedMessage, Message};
use tabs::kafka::KafkaArgs;
use tabs::messages::{parse_order, Order, Tab};

/// What was seen since the previous reading: counts over `seconds` of real time, and the latency percentiles
/// (milliseconds) of the tabs delivered meanwhile, `None` when none was.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Second {
    /// Real time since the previous reading (a late timer tick makes it longer than 1 s).
    pub seconds: f64,
    pub orders: u64,
    pub dead_letters: u64,
    pub tabs: u64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub overhead_p50_ms: Option<f64>,
    pub overhead_p99_ms: Option<f64>,
}

impl Second {
    /// `count` per second of real time over this reading, to one decimal.
    pub fn per_second(&self, count: u64) -> f64 {
        if self.seconds > 0.0 {
            (count as f64 / self.seconds * 10.0).round() / 10.0
        } else {
            0.0
        }
    }
}

/// Which step of the patient schedule a patient id belongs to: the local mode names the patients of step `k`
/// `<prefix><k>-<n>`.
#[derive(Debug, Clone)]
pub struct StepOf {
    pub prefix: String,
}

impl StepOf {
    fn step(&self, patient_id: &str) -> Option<usize> {
        let rest = patient_id.strip_prefix(&self.prefix)?;
        rest.split('-').next()?.parse().ok()
    }
}

struct State {
    audit: Audit,
    /// The audit of each step's orders, by step number (1-based).
    steps: BTreeMap<usize, Audit>,
    step_of: StepOf,
    making_time: Duration,
    last_reading: Instant,
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
        step_of: StepOf,
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
            steps: BTreeMap::new(),
            step_of,
            making_time,
            last_reading: Instant::now(),
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
            (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1e3)
        };
        let now = Instant::now();
        let seconds = now.duration_since(state.last_reading).as_secs_f64();
        state.last_reading = now;
        let second = Second {
            seconds,
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

    /// The audit of each step of the schedule that placed orders: (step number, report).
    pub fn step_reports(&self) -> Vec<(usize, Report)> {
        self.state
            .lock()
            .map(|s| s.steps.iter().map(|(k, a)| (*k, a.report())).collect())
            .unwrap_or_default()
    }

    /// Tabs delivered so far (distinct, of known orders).
    pub fn delivered_tabs(&self) -> u64 {
        self.state
            .lock()
            .map(|s| s.audit.delivered_tabs())
            .unwrap_or(0)
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
    let tab_of = |message: &BorrowedMessage<'_>| {
        message
            .payload()
            .and_then(|p| serde_json::from_slice::<Tab>(p).ok())
    };
    while !stop.load(Ordering::Relaxed) {
        // Orders first: a tab is checked against its order when both are known, in any order.
        let mut dead_letters = 0;
        let read = take_batch(&mut orders, |message| {
            new_orders.extend(parse_order(message.payload(), max_tabs_count).ok());
        })
        .and_then(|()| take_batch(&mut deliveries, |message| new_tabs.extend(tab_of(message))))
        .and_then(|()| take_batch(&mut dlq, |_| dead_letters += 1));
        if let Err(err) = read {
            return fail(state, err);
        }
        if new_orders.is_empty() && new_tabs.is_empty() && dead_letters == 0 {
            // Nothing anywhere: wait a little on the busiest topic.
            match deliveries.next(Duration::from_millis(20)) {
                Ok(Some(message)) => new_tabs.extend(tab_of(&message)),
                Ok(None) => continue,
                Err(err) => return fail(state, err),
            }
        }
        let Ok(mut state) = state.lock() else { return };
        state.dead_letters += dead_letters;
        state.total_dead_letters += dead_letters;
        for order in new_orders.drain(..) {
            state.add_order(&order);
        }
        for tab in new_tabs.drain(..) {
            state.add_tab(&tab, making_us);
        }
    }
}

/// Up to [`BATCH`] records of `reader`, as many as it has now, each given to `take`.
fn take_batch(
    reader: &mut TopicReader,
    take: impl FnMut(&BorrowedMessage<'_>),
) -> Result<(), rdkafka::error::KafkaError> {
    reader.take_available(BATCH, take).map(drop)
}

impl State {
    fn add_order(&mut self, order: &Order) {
        self.orders += 1;
        self.audit.add_order(order);
        if let Some(step) = self.step_of.step(&order.patient_id) {
            let making_time = self.making_time;
            self.steps
                .entry(step)
                .or_insert_with(|| Audit::new(making_time))
                .add_order(order);
        }
    }

    /// A tab read: counted, its latency and overhead over `making_us` recorded, audited (in its step too).
    fn add_tab(&mut self, tab: &Tab, making_us: u64) {
        self.tabs += 1;
        let latency_us = tab
            .delivery_timestamp_ns
            .saturating_sub(tab.order_timestamp_ns)
            / 1_000;
        self.latency.saturating_record(latency_us.max(1));
        self.overhead
            .saturating_record(latency_us.saturating_sub(making_us).max(1));
        self.audit.add_tab(tab);
        if let Some(audit) = self
            .step_of
            .step(&tab.patient_id)
            .and_then(|step| self.steps.get_mut(&step))
        {
            audit.add_tab(tab);
        }
    }
}

fn fail(state: &Mutex<State>, err: rdkafka::error::KafkaError) {
    if let Ok(mut state) = state.lock() {
        state.error = Some(err.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::{Second, StepOf};

    #[test]
    fn rates_are_per_second_of_real_time() {
        // A reading 2.5 s after the previous one (a late tick) is not 40 orders in "one second".
        let late = Second {
            seconds: 2.5,
            ..Second::default()
        };
        assert_eq!(late.per_second(40), 16.0);
        assert_eq!(late.per_second(1), 0.4);
        assert_eq!(Second::default().per_second(5), 0.0);
    }

    #[test]
    fn a_patient_id_names_its_step() {
        let step_of = StepOf {
            prefix: "local-1f3a9c2e-s".into(),
        };
        assert_eq!(step_of.step("local-1f3a9c2e-s2-17"), Some(2));
        assert_eq!(step_of.step("local-1f3a9c2e-s12-1"), Some(12));
        assert_eq!(step_of.step("local-00000000-s2-17"), None);
        assert_eq!(step_of.step("patient-3"), None);
    }
}
