//! Exactly-once where Kafka promises it: on the three-node cluster deploy/ ships ([`Cluster`]), under the
//! patients' load, while its nodes are restarted as Strimzi rolls them and killed as a node dies. The makers, or
//! Kafka's own `TransactionalMessageCopier` ([`Copiers`]) through the very same faults, side by side. After every
//! process has stopped, an independent `read_committed` reader reads both topics to their ends: nothing missing,
//! nothing twice, and every partition with backlog moving within its bound.

use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use audit::liveness::{Sample, Watch};
use audit::{Start, TopicReader};
use rdkafka::message::Message as _;
use tabs::kafka::KafkaArgs;
use testkit::Proc;

use crate::cluster::{Cluster, Down};
use crate::copier::{self, Copiers};
use crate::{drained, keep_log, stop_patients, Crew, Findings, Harness, Topics};

mod bound;
mod judging;
pub use bound::{cluster_liveness_bound, first_retransmission_after};
use judging::{copiers_judged, makers_judged, Judging};

/// How long a killed node stays down before it is started again.
const KILLED_FOR: Duration = Duration::from_secs(5);
/// How long a node is cut off unless `--cut-for` says otherwise: past the controller's fencing, so its leaderships
/// move.
pub const CUT_FOR: Duration = Duration::from_secs(15);
/// The makers' making time in these scenarios.
const MAKING: Duration = Duration::from_millis(200);

/// A fault on the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterFault {
    /// Every node restarted as Strimzi rolls a cluster: SIGTERM, one at a time, the next only once every
    /// partition has all its replicas in sync again.
    RollingRestart,
    /// The node leading the transaction coordinator of the first worker's transactional id killed with SIGKILL,
    /// started again after a few seconds.
    KillTransactionCoordinator,
    /// The node leading the group's coordinator killed with SIGKILL, started again after a few seconds.
    KillGroupCoordinator,
    /// A node that coordinates no worker's transactions (it leads partitions of the topics) killed with SIGKILL,
    /// started again after a few seconds.
    KillBystander,
    /// The node leading the transaction coordinator stopped cleanly (SIGTERM) and started again.
    StopTransactionCoordinator,
    /// The node leading the transaction coordinator cut off from clients and the other nodes (its link down) for
    /// this long (longer than the controller waits to fence it), then joined again. Needs a cluster in network
    /// namespaces.
    CutOffTransactionCoordinator(Duration),
}

/// Who turns orders into output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// Two makers (exactly-once, the shipped default).
    Makers,
    /// Two of Kafka's `TransactionalMessageCopier`s, copying the orders to an output topic.
    Copiers,
}

pub(crate) enum Running {
    Makers(Crew),
    Copiers(Copiers),
}

impl Running {
    /// Starts again copiers that ended (a copier copies what it was assigned and exits, a Job's life).
    async fn tend(&mut self) {
        if let Self::Copiers(copiers) = self {
            copiers.restart_ended().await;
        }
    }
}

/// Drives `work` to its end while tending the workers every 250 ms.
pub(crate) async fn tending<T>(running: &mut Running, work: impl Future<Output = T>) -> T {
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            () = tokio::time::sleep(Duration::from_millis(250)) => running.tend().await,
        }
    }
}

/// Runs `faults` one after the other on `cluster` while `workers` turn the patients' orders into output, `calm`
/// before the first and after the last; then judges the run.
pub async fn on_cluster(
    harness: &Harness,
    cluster: &Cluster,
    repo_root: &Path,
    workers: Workers,
    faults: &[ClusterFault],
    calm: Duration,
) -> anyhow::Result<Findings> {
    let started = Instant::now();
    let topics = Topics::create(&harness.bootstrap).await;
    let watch = harness.watch(&topics)?;
    let mut patients = harness.patients(&topics, 30, "200ms");
    let (mut running, output, transactional_ids) =
        start_workers(harness, repo_root, workers, &topics).await?;

    let mut notes = Vec::new();
    tending(&mut running, tokio::time::sleep(calm)).await;
    for &fault in faults {
        let note = tending(
            &mut running,
            inject(cluster, fault, &transactional_ids, &topics.group),
        )
        .await?;
        notes.push(note);
    }
    tending(&mut running, tokio::time::sleep(calm)).await;
    let (acknowledged, samples) = wind_up(
        &mut running,
        &mut patients,
        harness,
        (&topics, watch),
        Duration::from_secs(120),
    )
    .await?;

    let judging = Judging {
        harness,
        topics: &topics,
        started,
        samples: &samples,
        disruptions: cluster.disruptions(),
        bound: cluster_liveness_bound(faults),
        scenario: format!(
            "{} on three nodes: {}",
            workers_name(workers),
            faults_name(faults)
        ),
    };
    let mut result = match running {
        Running::Makers(crew) => makers_judged(crew, &judging, repo_root).await?,
        Running::Copiers(copiers) => copiers_judged(copiers, &judging, &output).await?,
    };
    crate::ending::acknowledged_orders_are_in_the_topic(&harness.bootstrap, &topics, &acknowledged)
        .await?;
    result.faults_injected = faults.len() as u64;
    result.notes.extend(notes);
    // On three nodes the brokers' word is reported, never an excuse.
    let skipped = cluster.skipped_markers();
    result.notes.push(format!(
        "the brokers' logs hold {} lines of skipped transaction markers since the cluster started",
        skipped.len()
    ));
    Ok(result)
}

/// Starts the workers on `topics`: two makers, or two of Kafka's copiers (to a topic of their own). Returns them,
/// the topic they write, and their transactional ids (the faults find their coordinators from them).
async fn start_workers(
    harness: &Harness,
    repo_root: &Path,
    workers: Workers,
    topics: &Topics,
) -> anyhow::Result<(Running, String, Vec<String>)> {
    Ok(match workers {
        Workers::Makers => {
            let mut crew = Crew::default();
            let making = crate::BUSY_MAKER;
            let first = crew.add(harness.maker(topics, &making));
            let second = crew.add(harness.maker(topics, &making));
            let ids = vec![
                transactional_id(&crew, first).await?,
                transactional_id(&crew, second).await?,
            ];
            (Running::Makers(crew), topics.deliveries.clone(), ids)
        }
        Workers::Copiers => {
            // The copier writes each record to its input partition's number.
            let output = format!("{}.copies", topics.orders);
            testkit::create_topic(&harness.bootstrap, &output, 6).await;
            let copiers = Copiers::start(
                repo_root,
                &harness.bootstrap,
                (&topics.orders, &output, &topics.group),
                2,
                copier::TRANSACTION_SIZE,
            )
            .await?;
            let ids = copiers.transactional_ids();
            (Running::Copiers(copiers), output, ids)
        }
    })
}

/// The end of a run's load: the patients stop, the workers (tended meanwhile) finish the backlog, up to `wait`,
/// and the liveness watch ends. Returns the orders the patients had acknowledged, and the watch's samples.
pub(crate) async fn wind_up(
    running: &mut Running,
    patients: &mut Proc,
    harness: &Harness,
    (topics, watch): (&Topics, Watch),
    wait: Duration,
) -> anyhow::Result<(HashSet<(String, u64)>, Vec<Sample>)> {
    let acknowledged = stop_patients(patients).await?;
    let drain = drained(&harness.bootstrap, &topics.group, &topics.orders, wait);
    tending(running, drain).await?;
    Ok((acknowledged, watch.finish()?))
}

/// Keeps every maker's log ([`keep_log`]): what the makers saw is the first thing to read on a failure.
fn keep_logs(repo_root: &Path, crew: &Crew) -> anyhow::Result<()> {
    for maker in crew.running_and_gone() {
        keep_log(
            repo_root,
            &format!("maker-{}", maker.pid()),
            &maker.stderr_text(),
        )?;
    }
    Ok(())
}

/// The transactional id a maker logged.
async fn transactional_id(crew: &Crew, index: usize) -> anyhow::Result<String> {
    let maker = crew.proc(index);
    anyhow::ensure!(
        maker
            .wait_for_log("transactional producer created", Duration::from_secs(30))
            .await,
        "the maker did not create its producer: {}",
        maker.stderr_text()
    );
    maker
        .log_events("transactional producer created")
        .first()
        .and_then(|e| e.get("transactional_id")?.as_str().map(str::to_owned))
        .context("the maker logged no transactional id")
}

/// Injects one fault (the coordinator faults aim at the first worker's transactional id); returns what was done,
/// for the report.
async fn inject(
    cluster: &Cluster,
    fault: ClusterFault,
    transactional_ids: &[String],
    group: &str,
) -> anyhow::Result<String> {
    let begun = Instant::now();
    let transactional_id = transactional_ids[0].as_str();
    if let ClusterFault::CutOffTransactionCoordinator(cut) = fault {
        let node = cluster.transaction_coordinator(transactional_id).await?;
        cluster.cut(node, true).await?;
        tokio::time::sleep(cut).await;
        cluster.cut(node, false).await?;
        cluster.wait_in_sync(Duration::from_secs(120)).await?;
        return Ok(format!(
            "node {node} (the transaction coordinator) cut off for {:.1} s, in sync again after {:.1} s",
            cut.as_secs_f64(),
            begun.elapsed().as_secs_f64()
        ));
    }
    let (node, role, how) = match fault {
        ClusterFault::RollingRestart => {
            let took = cluster.rolling_restart(Down::Clean).await?;
            return Ok(format!(
                "rolling restart (SIGTERM, one node at a time, the next once all replicas were in sync) in {:.1} s",
                took.as_secs_f64()
            ));
        }
        ClusterFault::KillTransactionCoordinator => (
            cluster.transaction_coordinator(transactional_id).await?,
            "the transaction coordinator",
            Down::Hard,
        ),
        ClusterFault::StopTransactionCoordinator => (
            cluster.transaction_coordinator(transactional_id).await?,
            "the transaction coordinator",
            Down::Clean,
        ),
        ClusterFault::KillGroupCoordinator => (
            cluster.group_coordinator(group).await?,
            "the group coordinator",
            Down::Hard,
        ),
        ClusterFault::KillBystander => {
            let mut coordinators = Vec::new();
            for id in transactional_ids {
                coordinators.push(cluster.transaction_coordinator(id).await?);
            }
            let node = (0..crate::cluster::NODES as i32)
                .find(|n| !coordinators.contains(n))
                .context("every node coordinates a worker's transactions")?;
            (node, "no worker's transaction coordinator", Down::Hard)
        }
        ClusterFault::CutOffTransactionCoordinator(_) => unreachable!("handled above"),
    };
    cluster.take_down(node, how).await?;
    if how == Down::Hard {
        tokio::time::sleep(KILLED_FOR).await;
    }
    cluster.bring_up(node).await?;
    cluster.wait_in_sync(Duration::from_secs(120)).await?;
    Ok(format!(
        "node {node} ({role}) {} and started again, in sync after {:.1} s",
        match how {
            Down::Clean => "stopped (SIGTERM)",
            Down::Hard => "killed (SIGKILL)",
        },
        begun.elapsed().as_secs_f64()
    ))
}

/// The copiers' run judged: the orders topic and the copies read to their ends, read_committed.
pub(crate) async fn copied(
    harness: &Harness,
    input: &str,
    output: &str,
    started: Instant,
    samples: &[Sample],
    disruptions: &[std::time::SystemTime],
    bound: Duration,
) -> anyhow::Result<Findings> {
    let inputs = read_to_end(&harness.bootstrap, input).await?;
    let outputs = read_to_end(&harness.bootstrap, output).await?;
    let (missing, duplicated) = copier::compare(&inputs, &outputs);
    let (frozen, longest_stall) =
        audit::liveness::stalls_through(samples, &[], &[], disruptions, bound)?;
    Ok(Findings {
        duration: started.elapsed(),
        orders: inputs.len() as u64,
        tabs: outputs.len() as u64,
        missing,
        duplicated,
        frozen,
        liveness_bound: bound,
        longest_stall,
        ..Findings::default()
    })
}

/// Every committed record of `topic`, read from the beginning to its end (the last stable offset).
async fn read_to_end(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<testkit::Record>> {
    let kafka = KafkaArgs::plaintext(bootstrap);
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut reader = TopicReader::open(&kafka, &topic, Start::Beginning, true)?;
        let mut records = Vec::new();
        while !reader.caught_up() {
            if let Some(message) = reader.next(Duration::from_millis(500))? {
                records.push(testkit::Record {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().map(<[u8]>::to_vec),
                });
            }
        }
        Ok(records)
    })
    .await?
}

fn workers_name(workers: Workers) -> &'static str {
    match workers {
        Workers::Makers => "makers",
        Workers::Copiers => "Kafka's TransactionalMessageCopier",
    }
}

fn faults_name(faults: &[ClusterFault]) -> String {
    faults
        .iter()
        .map(|f| match f {
            ClusterFault::RollingRestart => "rolling restart",
            ClusterFault::KillTransactionCoordinator => "transaction coordinator's node killed",
            ClusterFault::KillGroupCoordinator => "group coordinator's node killed",
            ClusterFault::KillBystander => "a node coordinating no transaction killed",
            ClusterFault::StopTransactionCoordinator => "transaction coordinator's node stopped",
            ClusterFault::CutOffTransactionCoordinator(_) => {
                "transaction coordinator's node cut off"
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
