//! `fault-campaign`: runs the fault scenarios against the test broker and prints what was observed (the figures of
//! documentation/RELIABILITY.md). `--long` runs them for minutes; the tests run short versions.
//!
//! Multi-call: `fault-campaign patient …` and `fault-campaign medicine …` run those programs, which is how the
//! scenarios start their children.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use faults::cluster::{Cluster, Network};
use faults::copier;
use faults::replicated::{self, ClusterFault, Workers};
use faults::Harness;

#[derive(Debug, Parser)]
#[command(
    name = "fault-campaign",
    version,
    about = "Fault campaign of medicine-pubsub against the test broker."
)]
struct Cli {
    /// The test broker (the broker-restart scenario starts a second one of its own).
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:29092"
    )]
    bootstrap_servers: String,

    /// Long versions: two minutes of kills and of SIGTERMs instead of twenty seconds, and each fault of the
    /// three-node cluster on its own.
    #[arg(long)]
    long: bool,

    /// Only the scenarios of the three-node cluster (the makers and Kafka's own copier side by side).
    #[arg(long)]
    cluster_only: bool,

    /// Only the single node's restart, as the test runs it (down 8 s halfway through 16 s), for `--workers`,
    /// `--repeat` times: the makers and Kafka's own copier through the same fault.
    #[arg(long, conflicts_with = "cluster_only")]
    restart_only: bool,

    /// The three-node cluster's faults, in this order, in one scenario (instead of the default plans).
    #[arg(long, env = "FAULTS_CLUSTER_PLAN", value_delimiter = ',')]
    plan: Vec<PlanFault>,

    /// Who works through the three-node faults.
    #[arg(long, value_enum, default_value_t = Who::Both)]
    workers: Who,

    /// Runs each three-node scenario this many times (a rare fault needs many runs to be seen or ruled out).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,

    /// The cluster's `transaction.version` feature: 2 (Kafka 4's default, KIP-890's second part, which Kafka's
    /// Java client uses) or 1 (the protocol librdkafka speaks, so the copier runs the makers' protocol).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=2))]
    transaction_version: u16,

    /// Records a transaction of Kafka's copier on the single node (on three nodes it copies 100 a transaction);
    /// 2 commits as often as the makers at the scenario's load.
    #[arg(long, default_value_t = copier::TRANSACTION_SIZE, value_parser = clap::value_parser!(u32).range(1..))]
    copier_transaction_size: u32,

    /// How long the cut-off node stays cut off (the liveness bound follows: see `cluster_liveness_bound`).
    #[arg(long, default_value = "15s", value_parser = tabs::config::parse_positive_duration)]
    cut_for: Duration,
}

/// A fault of `--plan`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PlanFault {
    Roll,
    KillTxn,
    KillGroup,
    KillOther,
    StopTxn,
    Cut,
}

impl PlanFault {
    fn fault(self, cut_for: Duration) -> ClusterFault {
        match self {
            PlanFault::Roll => ClusterFault::RollingRestart,
            PlanFault::KillTxn => ClusterFault::KillTransactionCoordinator,
            PlanFault::KillGroup => ClusterFault::KillGroupCoordinator,
            PlanFault::KillOther => ClusterFault::KillBystander,
            PlanFault::StopTxn => ClusterFault::StopTransactionCoordinator,
            PlanFault::Cut => ClusterFault::CutOffTransactionCoordinator(cut_for),
        }
    }
}

/// `--workers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Who {
    Makers,
    Copiers,
    Both,
}

fn main() -> ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some("patient") => {
            args.remove(0);
            return patient::main(args);
        }
        Some("medicine") => {
            args.remove(0);
            return medicine::main(args);
        }
        _ => {}
    }
    let cli: Cli = tabs::config::parse_or_exit();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(campaign(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn campaign(cli: Cli) -> anyhow::Result<bool> {
    let exe = std::env::current_exe()?;
    let harness = Harness::new(exe.clone(), cli.bootstrap_servers.clone());
    let duration = if cli.long {
        Duration::from_secs(120)
    } else {
        Duration::from_secs(20)
    };
    let mut all = Vec::new();
    let mut report = |findings: faults::Findings| {
        // Printed as each ends: a long campaign shows its progress.
        println!("{}", findings.summary());
        all.push(findings);
    };
    if cli.restart_only {
        let workers = workers(cli.workers);
        for _ in 0..cli.repeat {
            let (down, run) = (Duration::from_secs(8), Duration::from_secs(16));
            restart(
                workers,
                &exe,
                (down, run),
                cli.copier_transaction_size,
                &mut report,
            )
            .await?;
        }
        let clean = all.iter().all(faults::Findings::passed);
        println!("verdict: {}", if clean { "PASS" } else { "FAIL" });
        return Ok(clean);
    }
    if !cli.cluster_only {
        single_node(&cli, &exe, &harness, duration, &mut report).await?;
    }
    three_nodes(&cli, &exe, &mut report).await?;

    let clean = all.iter().all(faults::Findings::passed);
    println!("verdict: {}", if clean { "PASS" } else { "FAIL" });
    Ok(clean)
}

/// The fault plans the three nodes go through: the ones asked for, or the campaign's.
fn plans(cli: &Cli) -> Vec<Vec<ClusterFault>> {
    if !cli.plan.is_empty() {
        vec![cli.plan.iter().map(|f| f.fault(cli.cut_for)).collect()]
    } else if cli.long {
        vec![
            vec![ClusterFault::RollingRestart],
            vec![ClusterFault::KillTransactionCoordinator],
            vec![ClusterFault::KillGroupCoordinator],
            vec![ClusterFault::KillBystander],
            vec![ClusterFault::StopTransactionCoordinator],
            vec![ClusterFault::CutOffTransactionCoordinator(cli.cut_for)],
        ]
    } else {
        vec![vec![
            ClusterFault::RollingRestart,
            ClusterFault::KillTransactionCoordinator,
            ClusterFault::CutOffTransactionCoordinator(cli.cut_for),
        ]]
    }
}

/// Where exactly-once is promised: three replicated nodes, as deploy/ ships. Kafka's own client through the same
/// faults, side by side: whatever it achieves there, the makers must. In network namespaces (root), so that a node
/// can be cut off.
async fn three_nodes(
    cli: &Cli,
    exe: &std::path::Path,
    report: &mut impl FnMut(faults::Findings),
) -> anyhow::Result<()> {
    let cluster = Cluster::start(
        &repo_root(),
        29300,
        "target/kafka-dev-cluster",
        Network::Namespaces,
    )
    .await?;
    cluster
        .set_transaction_version(cli.transaction_version)
        .await?;
    let on_cluster = Harness::new(exe.to_path_buf(), cluster.bootstrap.clone());
    let workers = workers(cli.workers);
    for plan in &plans(cli) {
        for _ in 0..cli.repeat {
            for &workers in workers {
                report(
                    replicated::on_cluster(
                        &on_cluster,
                        &cluster,
                        &repo_root(),
                        workers,
                        plan,
                        Duration::from_secs(5),
                    )
                    .await?,
                );
            }
        }
    }
    Ok(())
}

/// The scenarios on a single node.
async fn single_node(
    cli: &Cli,
    exe: &std::path::Path,
    harness: &Harness,
    duration: Duration,
    report: &mut impl FnMut(faults::Findings),
) -> anyhow::Result<()> {
    report(faults::kill_makers(harness, duration).await?);
    report(faults::sigterm_storm(harness, duration).await?);
    report(faults::saturated_churn(harness, duration).await?);
    report(faults::hostile_flood(harness, 100_000).await?);
    report(faults::oversized_records(harness, if cli.long { 20 } else { 4 }).await?);

    let down = if cli.long {
        Duration::from_secs(15)
    } else {
        Duration::from_secs(3)
    };
    restart(
        workers(cli.workers),
        exe,
        (down, duration),
        cli.copier_transaction_size,
        report,
    )
    .await?;

    // Where a user's own Kafka is: the group settings as Kafka ships them, both group protocols.
    let defaults = faults::SecondBroker::start_with_defaults(&repo_root()).await?;
    for protocol in ["classic", "consumer"] {
        let on_defaults = Harness {
            protocol: Some(protocol),
            transaction_cleanup: Duration::from_secs(10),
            session_timeout: Duration::from_secs(if protocol == "consumer" { 45 } else { 10 }),
            ..Harness::new(exe.to_owned(), defaults.bootstrap.clone())
        };
        let mut findings = faults::kill_makers(&on_defaults, duration).await?;
        findings.scenario += " on a broker with Kafka's default group settings";
        report(findings);
    }
    Ok(())
}

fn workers(who: Who) -> &'static [Workers] {
    match who {
        Who::Makers => &[Workers::Makers],
        Who::Copiers => &[Workers::Copiers],
        Who::Both => &[Workers::Makers, Workers::Copiers],
    }
}

/// The single node stopped for `down` halfway through `run` and started again, on a broker of its own: the makers,
/// then Kafka's copier, through the same fault.
async fn restart(
    workers: &[Workers],
    exe: &std::path::Path,
    (down, run): (Duration, Duration),
    copier_transaction_size: u32,
    report: &mut impl FnMut(faults::Findings),
) -> anyhow::Result<()> {
    let second = faults::SecondBroker::start(&repo_root()).await?;
    let on_second = Harness::new(exe.to_owned(), second.bootstrap.clone());
    for &who in workers {
        report(match who {
            Workers::Makers => faults::restart_broker(&on_second, &second, down, run).await?,
            Workers::Copiers => {
                faults::copiers_through_a_restart(
                    &on_second,
                    &second,
                    &repo_root(),
                    (down, run),
                    copier_transaction_size,
                )
                .await?
            }
        });
    }
    Ok(())
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}
