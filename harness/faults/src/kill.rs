//! Makers that go away under load: killed with SIGKILL, sent SIGTERM while busy, or coming and going while the
//! maker that stays is saturated at its in-flight bound (its partitions revoked and assigned back while paused).

use std::time::{Duration, Instant};

use anyhow::ensure;
use rand::Rng as _;

use crate::{conclude, liveness_bound, stop_patients, Crew, Ending, Findings, Harness, Topics};

/// The makers' transaction timeout (their default): how long a killed maker's open transaction holds back the
/// next holder of its partitions.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Makers killed with SIGKILL at random every few seconds under steady load, each replaced (as KEDA would start
/// another Job). Then the survivors finish the lag and the audit must find every tab exactly once.
pub async fn kill_makers(harness: &Harness, duration: Duration) -> anyhow::Result<Findings> {
    let started = Instant::now();
    let topics = Topics::create(&harness.bootstrap).await;
    let making_time = Duration::from_millis(200);
    let making = crate::BUSY_MAKER;
    let watch = harness.watch(&topics)?;
    let mut patients = harness.patients(&topics, 30, "200ms");
    let mut crew = Crew::default();
    for _ in 0..3 {
        crew.add(harness.maker(&topics, &making));
    }
    let mut faults = 0;
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        let pause = Duration::from_millis(rand::rng().random_range(1_000..3_000));
        tokio::time::sleep(pause).await;
        // A maker that ended by itself is a failure of its own, not a kill.
        crew.reap_clean().await?;
        let running = crew.running();
        let victim = running[rand::rng().random_range(0..running.len())];
        crew.kill(victim).await?;
        crew.add(harness.maker(&topics, &making));
        faults += 1;
    }
    let acknowledged = stop_patients(&mut patients).await?;
    // A killed maker's open transaction holds its partitions until it times out (10 s): the survivors finish.
    let ending = Ending {
        scenario: format!("makers killed with SIGKILL{}", protocol_note(harness)),
        started,
        making_time,
        wait: Duration::from_secs(90),
        // Both waits start at the kill: the group's for the dead member, the broker's for its transaction.
        bound: liveness_bound(
            making_time,
            harness
                .session_timeout
                .max(TRANSACTION_TIMEOUT + harness.transaction_cleanup),
        ),
    };
    let mut result = conclude(harness, &topics, &acknowledged, crew, watch, ending).await?;
    result.faults_injected = faults;
    Ok(result)
}

fn protocol_note(harness: &Harness) -> String {
    harness
        .protocol
        .map(|p| format!(" ({p} protocol)"))
        .unwrap_or_default()
}

/// Makers sent SIGTERM while busy, every couple of seconds, each replaced. Every exit must be 0 and within the
/// drain timeout; the audit must find every tab exactly once.
pub async fn sigterm_storm(harness: &Harness, duration: Duration) -> anyhow::Result<Findings> {
    let started = Instant::now();
    let topics = Topics::create(&harness.bootstrap).await;
    let drain = Duration::from_secs(5);
    let making_time = Duration::from_secs(1);
    let making = [
        "--tab-making-time",
        "1s",
        "--max-in-flight-orders",
        "64",
        "--idle-exit-after",
        "0",
        "--drain-timeout",
        "5s",
    ];
    let watch = harness.watch(&topics)?;
    let mut patients = harness.patients(&topics, 30, "200ms");
    let mut crew = Crew::default();
    for _ in 0..3 {
        crew.add(harness.maker(&topics, &making));
    }
    let (mut faults, mut slowest) = (0u64, Duration::ZERO);
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(
            rand::rng().random_range(1_500..2_500),
        ))
        .await;
        crew.reap_clean().await?;
        let running = crew.running();
        let victim = running[rand::rng().random_range(0..running.len())];
        let signalled = Instant::now();
        crew.terminate(victim, drain + Duration::from_secs(20))
            .await?;
        let took = signalled.elapsed();
        ensure!(
            took <= drain + Duration::from_secs(5),
            "a maker took {took:?} to drain (timeout {drain:?})"
        );
        slowest = slowest.max(took);
        crew.add(harness.maker(&topics, &making));
        faults += 1;
    }
    let acknowledged = stop_patients(&mut patients).await?;
    let ending = Ending {
        scenario: "makers sent SIGTERM while busy".to_owned(),
        started,
        making_time,
        wait: Duration::from_secs(90),
        bound: liveness_bound(making_time, Duration::ZERO),
    };
    let mut result = conclude(harness, &topics, &acknowledged, crew, watch, ending).await?;
    result.faults_injected = faults;
    result.notes.push(format!(
        "slowest exit {:.1} s after SIGTERM",
        slowest.as_secs_f64()
    ));
    Ok(result)
}

/// One maker saturated at a small in-flight bound (fetching paused) while other makers come and go every couple
/// of seconds: each arrival revokes some of its partitions while it is paused, each departure assigns them back.
/// The sequence that once froze partitions; the liveness verdict must stay green and the audit clean.
pub async fn saturated_churn(harness: &Harness, duration: Duration) -> anyhow::Result<Findings> {
    let started = Instant::now();
    let topics = Topics::create(&harness.bootstrap).await;
    let making_time = Duration::from_millis(500);
    // 20 orders/s against 16/s for one maker: it stays at its bound.
    let steady = [
        "--tab-making-time",
        "500ms",
        "--max-in-flight-orders",
        "8",
        "--idle-exit-after",
        "0",
    ];
    let passing = [
        "--tab-making-time",
        "500ms",
        "--max-in-flight-orders",
        "8",
        "--idle-exit-after",
        "0",
        "--max-orders",
        "16",
    ];
    let watch = harness.watch(&topics)?;
    let mut patients = harness.patients(&topics, 10, "500ms");
    let mut crew = Crew::default();
    crew.add(harness.maker(&topics, &steady));
    let mut faults = 0;
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(
            rand::rng().random_range(1_500..3_000),
        ))
        .await;
        crew.reap_clean().await?;
        // One arrives; one that is still there after its visit is sent away.
        let running = crew.running();
        if running.len() > 2 {
            let leaving = running[rand::rng().random_range(1..running.len())];
            crew.terminate(leaving, Duration::from_secs(30)).await?;
        }
        crew.add(harness.maker(&topics, &passing));
        faults += 1;
    }
    let acknowledged = stop_patients(&mut patients).await?;
    // Two more makers to finish the backlog the saturated maker could not keep up with.
    for _ in 0..2 {
        crew.add(harness.maker(&topics, &steady));
    }
    let ending = Ending {
        scenario: "partitions moving while their maker is saturated".to_owned(),
        started,
        making_time,
        wait: Duration::from_secs(120),
        bound: liveness_bound(making_time, Duration::ZERO),
    };
    let mut result = conclude(harness, &topics, &acknowledged, crew, watch, ending).await?;
    result.faults_injected = faults;
    Ok(result)
}
