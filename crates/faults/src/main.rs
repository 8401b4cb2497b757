//! `fault-campaign`: runs the fault scenarios against the test broker and prints what was observed (the figures of
//! documentation/RELIABILITY.md). `--long` runs them for minutes; the tests run short versions.
//!
//! Multi-call: `fault-campaign patient …` and `fault-campaign medicine …` run those programs, which is how the
//! scenarios start their children.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
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

    /// Long versions: two minutes of kills and of SIGTERMs instead of twenty seconds.
    #[arg(long)]
    long: bool,
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
    report(faults::kill_makers(&harness, duration).await?);
    report(faults::sigterm_storm(&harness, duration).await?);
    report(faults::saturated_churn(&harness, duration).await?);
    report(faults::hostile_flood(&harness, 100_000).await?);
    report(faults::oversized_records(&harness, if cli.long { 20 } else { 4 }).await?);

    let second = faults::SecondBroker::start(&repo_root()).await?;
    let restart = Harness::new(exe.clone(), second.bootstrap.clone());
    let down = if cli.long {
        Duration::from_secs(15)
    } else {
        Duration::from_secs(3)
    };
    report(faults::restart_broker(&restart, &second, down, duration).await?);
    drop(second);

    // Where a user's own Kafka is: the group settings as Kafka ships them, both group protocols.
    let defaults = faults::SecondBroker::start_with_defaults(&repo_root()).await?;
    for protocol in ["classic", "consumer"] {
        let on_defaults = Harness {
            protocol: Some(protocol),
            transaction_cleanup: Duration::from_secs(10),
            ..Harness::new(exe.clone(), defaults.bootstrap.clone())
        };
        let mut findings = faults::kill_makers(&on_defaults, duration).await?;
        findings.scenario += " on a broker with Kafka's default group settings";
        report(findings);
    }
    drop(defaults);

    let clean = all.iter().all(faults::Findings::passed);
    println!("verdict: {}", if clean { "PASS" } else { "FAIL" });
    Ok(clean)
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}
