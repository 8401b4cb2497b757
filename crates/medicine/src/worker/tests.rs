//! The loop, stepped against a fake broker on paused time: every test runs in milliseconds of real time.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use prometheus_client::registry::Registry;
use tabs::messages::{to_json, Order};
use tokio::sync::mpsc;
use tokio::time::{sleep, Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::{Settings, Worker};
use crate::broker::{Batch, Broker, CommitError, CommitFuture, Deliver, Event, Fetched, OutRecord};
use crate::stats::{Stats, Summary};

/// What a test tells the fake broker while the loop runs.
enum Script {
    Assign(Vec<i32>),
    Revoke(Vec<i32>),
}

/// The fake broker's view of Kafka: per-partition logs, positions, committed offsets, and pause flags that,
/// as librdkafka's, belong to the partition and survive a revocation.
#[derive(Default)]
struct State {
    logs: BTreeMap<i32, Vec<Vec<u8>>>,
    positions: BTreeMap<i32, i64>,
    committed: BTreeMap<i32, i64>,
    assigned: BTreeSet<i32>,
    paused: BTreeSet<i32>,
    /// Outcomes of the next commits (then: committed).
    commit_outcomes: VecDeque<Result<(), CommitError>>,
    /// How many times each (partition, offset) was committed.
    commits_of: BTreeMap<(i32, i64), u32>,
    /// The dead letters committed.
    letters: Vec<tabs::messages::DeadLetter>,
    /// Most records handed out and not committed at once.
    max_outstanding: i64,
    pauses: usize,
    resumes: usize,
    rewinds: usize,
    next_partition: usize,
    /// Serve the lowest-numbered partition that can be fetched, as a fetch response hands a whole batch of one
    /// partition before the next, instead of taking partitions in turn.
    greedy: bool,
}

impl State {
    fn outstanding(&self) -> i64 {
        self.assigned
            .iter()
            .map(|p| {
                self.positions.get(p).copied().unwrap_or(0)
                    - self.committed.get(p).copied().unwrap_or(0)
            })
            .sum()
    }
}

struct Fake {
    state: Arc<Mutex<State>>,
    script: mpsc::UnboundedReceiver<Script>,
    events: VecDeque<Event>,
}

impl Fake {
    fn apply(&mut self, script: Script) {
        let mut state = self.state.lock().unwrap();
        match script {
            Script::Assign(partitions) => {
                for &p in &partitions {
                    state.assigned.insert(p);
                    let committed = state.committed.get(&p).copied().unwrap_or(0);
                    state.positions.insert(p, committed);
                }
                self.events.push_back(Event::Assigned(partitions));
            }
            Script::Revoke(partitions) => {
                for p in &partitions {
                    state.assigned.remove(p);
                }
                self.events.push_back(Event::Revoked(partitions));
            }
        }
    }

    /// The next record of an assigned partition that is not paused, taking partitions in turn.
    fn record(&self) -> Option<Fetched> {
        let mut state = self.state.lock().unwrap();
        let candidates: Vec<i32> = state
            .assigned
            .iter()
            .copied()
            .filter(|p| !state.paused.contains(p))
            .filter(|p| (state.positions[p] as usize) < state.logs.get(p).map_or(0, Vec::len))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let partition = if state.greedy {
            candidates[0]
        } else {
            candidates[state.next_partition % candidates.len()]
        };
        state.next_partition += 1;
        let offset = state.positions[&partition];
        let payload = state.logs[&partition][offset as usize].clone();
        state.positions.insert(partition, offset + 1);
        let outstanding = state.outstanding();
        state.max_outstanding = state.max_outstanding.max(outstanding);
        Some(Fetched {
            partition,
            offset,
            key: None,
            payload: Some(payload),
        })
    }
}

/// The fake never delivers at-least-once: these tests run the loop exactly-once.
#[derive(Clone)]
struct NoDelivery;

impl Deliver for NoDelivery {
    async fn deliver(&self, _: &str, _: Vec<OutRecord>) -> Result<(), String> {
        Err("at-least-once is not faked".into())
    }
}

impl Broker for Fake {
    type Deliverer = NoDelivery;

    async fn next(&mut self) -> Event {
        loop {
            if let Some(event) = self.events.pop_front() {
                return event;
            }
            if let Some(record) = self.record() {
                return Event::Record(record);
            }
            match self.script.recv().await {
                Some(script) => self.apply(script),
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn pause(&mut self, partitions: &[i32]) -> anyhow::Result<()> {
        let mut state = self.state.lock().unwrap();
        state.pauses += 1;
        state.paused.extend(partitions);
        Ok(())
    }

    fn resume(&mut self, partitions: &[i32]) -> anyhow::Result<()> {
        let mut state = self.state.lock().unwrap();
        state.resumes += 1;
        for p in partitions {
            state.paused.remove(p);
        }
        Ok(())
    }

    fn commit(&mut self, batch: Batch) -> anyhow::Result<CommitFuture> {
        let mut state = self.state.lock().unwrap();
        let outcome = state.commit_outcomes.pop_front().unwrap_or(Ok(()));
        if outcome.is_ok() {
            for result in &batch.results {
                if let crate::completion::Outcome::Rejected { letter, .. } = result {
                    state.letters.push((**letter).clone());
                }
            }
            for (&partition, &next) in &batch.offsets {
                let from = state.committed.get(&partition).copied().unwrap_or(0);
                for offset in from..next {
                    *state.commits_of.entry((partition, offset)).or_default() += 1;
                }
                state.committed.insert(partition, next);
            }
        }
        Ok(Box::pin(std::future::ready((outcome, batch.results))))
    }

    fn deliverer(&self) -> Option<NoDelivery> {
        None
    }

    async fn rewind(&mut self, _replace_producer: bool) -> anyhow::Result<()> {
        let mut state = self.state.lock().unwrap();
        state.rewinds += 1;
        let assigned: Vec<i32> = state.assigned.iter().copied().collect();
        for p in assigned {
            let committed = state.committed.get(&p).copied().unwrap_or(0);
            state.positions.insert(p, committed);
        }
        self.events.clear();
        Ok(())
    }

    async fn close(self) {}
}

fn settings() -> Settings {
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
        startup_timeout: Duration::from_secs(60),
    }
}

fn order(n: usize) -> Vec<u8> {
    to_json(&Order {
        patient_id: format!("patient-{}", n % 7),
        order_timestamp_ns: 1_000_000 + n as u64,
        tabs_count: 1 + (n % 5) as u32,
    })
}

/// A loop over a fake broker with `records` orders in each of `partitions` (assigned at once).
struct Harness {
    state: Arc<Mutex<State>>,
    script: mpsc::UnboundedSender<Script>,
    shutdown: CancellationToken,
    stats: Arc<Stats>,
    worker: Option<Worker<Fake>>,
}

impl Harness {
    fn new(settings: Settings, partitions: &[i32], records: usize) -> Self {
        let mut state = State::default();
        let mut n = 0;
        for &p in partitions {
            state.logs.insert(
                p,
                (0..records)
                    .map(|_| {
                        n += 1;
                        order(n)
                    })
                    .collect(),
            );
        }
        let state = Arc::new(Mutex::new(state));
        let (script, receiver) = mpsc::unbounded_channel();
        let fake = Fake {
            state: Arc::clone(&state),
            script: receiver,
            events: VecDeque::new(),
        };
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

    fn start(&mut self) -> tokio::task::JoinHandle<anyhow::Result<Summary>> {
        tokio::spawn(self.worker.take().unwrap().run())
    }

    fn committed(&self, partition: i32) -> i64 {
        self.state
            .lock()
            .unwrap()
            .committed
            .get(&partition)
            .copied()
            .unwrap_or(0)
    }

    fn committed_once_each(&self) -> bool {
        self.state
            .lock()
            .unwrap()
            .commits_of
            .values()
            .all(|&n| n == 1)
    }
}

#[tokio::test(start_paused = true)]
async fn the_in_flight_bound_holds_at_every_record_and_fetching_pauses_and_resumes_around_it() {
    let mut harness = Harness::new(settings(), &[0, 1, 2], 40);
    let began = Instant::now();
    let summary = harness.start().await.unwrap().unwrap();
    assert_eq!(summary.orders, 120);
    for p in 0..3 {
        assert_eq!(harness.committed(p), 40);
    }
    assert!(harness.committed_once_each());
    let state = harness.state.lock().unwrap();
    // The loop's own assertion checks the bound at every accept; the broker sees, besides the 8 in flight, the
    // records read ahead: at most a share of the bound (8 / 3, rounded up) per partition.
    assert!(
        state.max_outstanding <= 8 + 3 * 3,
        "{} records outstanding",
        state.max_outstanding
    );
    assert!(
        state.pauses > 0 && state.resumes > 0,
        "paused at the bound and resumed below it"
    );
    // 120 orders, 8 at a time, 2 s each: 15 rounds; then the idle time.
    let took = began.elapsed();
    assert!(
        took >= Duration::from_secs(30) && took < Duration::from_secs(40),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_drain_deadline_hands_unfinished_orders_back() {
    let mut harness = Harness::new(
        Settings {
            tab_making_time: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(1),
            ..settings()
        },
        &[0],
        5,
    );
    let run = harness.start();
    sleep(Duration::from_millis(100)).await;
    let asked = Instant::now();
    harness.shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.orders, 0);
    assert_eq!(
        harness.committed(0),
        0,
        "nothing unfinished is committed: the next maker makes it"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_drain_finishes_what_is_in_flight_and_commits_it() {
    let mut harness = Harness::new(settings(), &[0], 5);
    let run = harness.start();
    sleep(Duration::from_millis(100)).await;
    harness.shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.orders, 5);
    assert_eq!(harness.committed(0), 5);
}

#[tokio::test(start_paused = true)]
async fn an_aborted_transaction_is_rewound_and_its_orders_made_again() {
    let harness_settings = settings();
    let mut harness = Harness::new(harness_settings, &[0, 1], 4);
    harness
        .state
        .lock()
        .unwrap()
        .commit_outcomes
        .push_back(Err(CommitError::Aborted("injected".into())));
    let summary = harness.start().await.unwrap().unwrap();
    assert_eq!(summary.aborts, 1);
    assert_eq!(summary.orders, 8);
    assert_eq!((harness.committed(0), harness.committed(1)), (4, 4));
    assert!(harness.committed_once_each());
    assert_eq!(harness.state.lock().unwrap().rewinds, 1);
}

#[tokio::test(start_paused = true)]
async fn five_commits_in_a_row_that_fail_stop_the_maker() {
    let mut harness = Harness::new(settings(), &[0], 2);
    for _ in 0..5 {
        harness
            .state
            .lock()
            .unwrap()
            .commit_outcomes
            .push_back(Err(CommitError::Aborted("refused".into())));
    }
    let err = harness.start().await.unwrap().unwrap_err();
    assert!(
        format!("{err:#}").contains("5 transactions in a row did not commit"),
        "{err:#}"
    );
    assert_eq!(harness.committed(0), 0);
}

#[tokio::test(start_paused = true)]
async fn a_partition_revoked_mid_order_drops_its_work_and_is_made_after_it_comes_back() {
    let mut harness = Harness::new(
        Settings {
            idle_exit_after: Duration::from_secs(30),
            ..settings()
        },
        &[0, 1],
        3,
    );
    let run = harness.start();
    sleep(Duration::from_millis(500)).await;
    harness.script.send(Script::Revoke(vec![0])).unwrap();
    sleep(Duration::from_secs(5)).await;
    assert_eq!(
        harness.committed(0),
        0,
        "the revoked partition's orders were not committed by this maker"
    );
    assert_eq!(harness.committed(1), 3);
    harness.script.send(Script::Assign(vec![0])).unwrap();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(harness.committed(0), 3);
    assert_eq!(summary.orders, 6);
    assert!(harness.committed_once_each());
}

#[tokio::test(start_paused = true)]
async fn a_partition_paused_at_the_bound_when_revoked_is_fetched_again_when_assigned_back() {
    // The sequence that froze partitions: saturated (paused), one partition revoked, the others' orders
    // finish (resumed, without it), the partition assigned back.
    let mut harness = Harness::new(
        Settings {
            max_in_flight_orders: 4,
            tab_making_time: Duration::from_secs(10),
            ..settings()
        },
        &[0, 1],
        6,
    );
    let run = harness.start();
    sleep(Duration::from_secs(1)).await;
    assert!(
        !harness.state.lock().unwrap().paused.is_empty(),
        "saturated: paused"
    );
    harness.script.send(Script::Revoke(vec![1])).unwrap();
    sleep(Duration::from_secs(12)).await;
    harness.script.send(Script::Assign(vec![1])).unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the maker finished")
        .unwrap()
        .unwrap();
    assert_eq!(
        (harness.committed(0), harness.committed(1)),
        (6, 6),
        "{summary:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_maker_never_assigned_fails_at_the_join_timeout_even_without_an_idle_exit() {
    let mut harness = Harness::new(
        Settings {
            idle_exit_after: Duration::ZERO,
            startup_timeout: Duration::from_secs(7),
            ..settings()
        },
        &[],
        0,
    );
    let began = Instant::now();
    let err = harness.start().await.unwrap().unwrap_err();
    assert!(
        format!("{err:#}").contains("no assignment from group makers within 7s"),
        "{err:#}"
    );
    assert_eq!(began.elapsed(), Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn an_idle_maker_exits_after_the_idle_time() {
    let mut harness = Harness::new(settings(), &[0], 0);
    let began = Instant::now();
    let summary = harness.start().await.unwrap().unwrap();
    assert_eq!(summary.orders, 0);
    assert_eq!(began.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn max_orders_stops_after_that_many_and_commits_exactly_them() {
    let mut harness = Harness::new(
        Settings {
            max_orders: 3,
            ..settings()
        },
        &[0],
        10,
    );
    let summary = harness.start().await.unwrap().unwrap();
    assert_eq!(summary.orders, 3);
    assert_eq!(
        harness.committed(0),
        3,
        "the rest is left to the next maker"
    );
}

#[tokio::test(start_paused = true)]
async fn a_record_that_is_not_an_order_is_committed_as_a_dead_letter_between_valid_orders() {
    let mut harness = Harness::new(settings(), &[0], 2);
    harness
        .state
        .lock()
        .unwrap()
        .logs
        .get_mut(&0)
        .unwrap()
        .insert(1, b"{not json".to_vec());
    let summary = harness.start().await.unwrap().unwrap();
    assert_eq!((summary.orders, summary.dead_letters), (2, 1));
    assert_eq!(harness.committed(0), 3);
    assert_eq!(harness.stats.summary().dead_letters, 1);
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_that_went_down_with_a_transaction_is_written_again_without_its_payload() {
    // The broker refused the transaction (a dead letter too large, say): the valid orders beside the bad record
    // must not be held back by it on the next attempt.
    let mut harness = Harness::new(settings(), &[0], 2);
    harness
        .state
        .lock()
        .unwrap()
        .logs
        .get_mut(&0)
        .unwrap()
        .insert(1, b"{not json".to_vec());
    harness
        .state
        .lock()
        .unwrap()
        .commit_outcomes
        .push_back(Err(CommitError::Aborted(
            "Broker: Message size too large".into(),
        )));
    let summary = harness.start().await.unwrap().unwrap();
    assert_eq!(
        (summary.orders, summary.dead_letters, summary.aborts),
        (2, 1, 1)
    );
    assert_eq!(harness.committed(0), 3);
    let state = harness.state.lock().unwrap();
    let letter = &state.letters[0];
    assert_eq!((letter.source_offset, letter.payload.as_deref()), (1, None));
    assert!(
        letter
            .payload_dropped
            .as_deref()
            .unwrap()
            .contains("Message size too large"),
        "{letter:?}"
    );
    assert_eq!(
        letter.payload_size, 9,
        "what the record held is still described"
    );
}

#[tokio::test(start_paused = true)]
async fn under_saturation_every_partition_gets_its_share_of_the_bound() {
    // Kafka hands a maker one partition's batch before the next: served as fetched, the first partition would
    // keep every slot and the others would never move.
    let mut harness = Harness::new(
        Settings {
            max_in_flight_orders: 8,
            idle_exit_after: Duration::ZERO,
            ..settings()
        },
        &[0, 1, 2, 3],
        1_000,
    );
    harness.state.lock().unwrap().greedy = true;
    let run = harness.start();
    for window in 0..3 {
        let before: Vec<i64> = (0..4).map(|p| harness.committed(p)).collect();
        sleep(Duration::from_secs(30)).await;
        let made: Vec<i64> = (0..4)
            .map(|p| harness.committed(p) - before[p as usize])
            .collect();
        let mean = made.iter().sum::<i64>() as f64 / 4.0;
        assert!(mean > 0.0, "window {window}: nothing made");
        for (p, &n) in made.iter().enumerate() {
            assert!(
                (n as f64 - mean).abs() <= mean * 0.25,
                "window {window}: partition {p} made {n} orders, the mean is {mean} ({made:?})"
            );
        }
    }
    harness.shutdown.cancel();
    run.await.unwrap().unwrap();
}
