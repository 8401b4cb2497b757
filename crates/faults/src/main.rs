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
    let harness = Harness {
        exe: exe.clone(),
        bootstrap: cli.bootstrap_servers.clone(),
    };
    let duration = if cli.long {
        Duration::from_secs(120)
    } else {
        Duration::from_secs(20)
    };
    let mut all = Vec::new();
    all.push(faults::kill_makers(&harness, duration).await?);
    all.push(faults::sigterm_storm(&harness, duration).await?);
    all.push(faults::hostile_flood(&harness, 100_000).await?);
    let second = faults::SecondBroker::start(&repo_root()).await?;
    let restart = Harness {
        exe,
        bootstrap: second.bootstrap.clone(),
    };
    let down = if cli.long {
        Duration::from_secs(15)
    } else {
        Duration::from_secs(3)
    };
    all.push(faults::restart_broker(&restart, &second, down, duration).await?);
    drop(second);
    let mut clean = true;
    for findings in &all {
        println!("{}", findings.summary());
        clean &= findings.missing == 0 && findings.duplicated == 0 && findings.wrong == 0;
    }
    println!("verdict: {}", if clean { "PASS" } else { "FAIL" });
    Ok(clean)
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}
