//! Benchmark 3: cold start. A maker process, from its start to its first order committed (one order waiting,
//! making time 0, a new group each run), with each group protocol; and a patient, from its start to its first
//! order acknowledged. Medians of several runs.

use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::support::{fill_orders, median, now_ns, parse_log_timestamp, spawn, Topics};

/// Cold-start medians.
#[derive(Debug, Clone)]
pub struct ColdStart {
    pub runs: usize,
    pub maker_classic: Duration,
    pub maker_consumer: Duration,
    pub patient: Duration,
}

/// Time from `spawned_ns` to the first log event `message` of a process that ran to completion.
fn time_to(
    events: &[std::collections::HashMap<String, serde_json::Value>],
    spawned_ns: u64,
) -> anyhow::Result<Duration> {
    let event = events.first().context("the event was not logged")?;
    let at = event
        .get("timestamp")
        .and_then(|t| t.as_str())
        .and_then(parse_log_timestamp)
        .context("the event has no timestamp")?;
    Ok(Duration::from_nanos(at.saturating_sub(spawned_ns)))
}

async fn maker_once(bootstrap: &str, topics: &Topics, protocol: &str) -> anyhow::Result<Duration> {
    let mut args = topics.maker_args(bootstrap, &testkit::unique("bench-cold"));
    args.extend(
        [
            "--group-protocol",
            protocol,
            "--tab-making-time",
            "0",
            "--max-orders",
            "1",
            "--idle-exit-after",
            "0",
        ]
        .iter()
        .map(|s| (*s).to_owned()),
    );
    let spawned = now_ns();
    let mut maker = spawn("medicine", &args, &[("RUST_LOG", "info")]);
    if maker.exit_code(Duration::from_secs(60)).await != 0 {
        bail!("the maker failed: {}", maker.stderr_text());
    }
    time_to(&maker.log_events("first orders committed"), spawned)
}

async fn patient_once(bootstrap: &str, topic: &str) -> anyhow::Result<Duration> {
    let args: Vec<String> = [
        "--bootstrap-servers",
        bootstrap,
        "--orders-topic",
        topic,
        "--orders",
        "1",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let spawned = now_ns();
    let mut patient = spawn("patient", &args, &[("RUST_LOG", "info")]);
    if patient.exit_code(Duration::from_secs(60)).await != 0 {
        bail!("the patient failed: {}", patient.stderr_text());
    }
    time_to(&patient.log_events("order acknowledged"), spawned)
}

pub async fn run(bootstrap: &str, runs: usize) -> anyhow::Result<ColdStart> {
    println!("cold start: median of {runs} runs each");
    let topics = Topics::create(bootstrap, 12).await;
    fill_orders(bootstrap, &topics.orders, 1, 1).await?;
    let mut results = Vec::new();
    for protocol in ["classic", "consumer"] {
        let mut times = Vec::new();
        for _ in 0..runs {
            times.push(maker_once(bootstrap, &topics, protocol).await?);
        }
        let median = median(&mut times);
        println!(
            "  maker start -> first order committed, {protocol:>8}: {:>6.0} ms",
            median.as_secs_f64() * 1e3
        );
        results.push(median);
    }
    let mut times = Vec::new();
    for _ in 0..runs {
        times.push(patient_once(bootstrap, &topics.orders).await?);
    }
    let patient = median(&mut times);
    println!(
        "  patient start -> first order acknowledged:   {:>6.0} ms",
        patient.as_secs_f64() * 1e3
    );
    Ok(ColdStart {
        runs,
        maker_classic: results[0],
        maker_consumer: results[1],
        patient,
    })
}
