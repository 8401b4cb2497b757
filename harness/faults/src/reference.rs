//! Kafka's own client through the single node's restart: `TransactionalMessageCopier` (see [`Copiers`]) where the
//! makers meet [`restart_broker`](crate::restart_broker), judged the same way. A failure of the makers on one node
//! is the broker's only if the reference client fails there too, or the broker's own log says so.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::broker::{SecondBroker, TRANSACTION_TIMEOUT};
use crate::copier::Copiers;
use crate::replicated::{copied, tending, wind_up, Running};
use crate::{acknowledged_orders_are_in_the_topic, liveness_bound, Findings, Harness, Topics};

/// One copier copies the patients' orders (as one maker makes them in the makers' scenario), `transaction_size`
/// records a transaction (2 commits as often as the maker at the scenario's load: a hundred orders a second), while
/// the broker is stopped for `down` halfway through `run`, then restarted; the copier is started again whenever it
/// ends. After every process has stopped the orders and the copies are compared record by record.
pub async fn copiers_through_a_restart(
    harness: &Harness,
    broker: &SecondBroker,
    repo_root: &Path,
    (down, run): (Duration, Duration),
    transaction_size: u32,
) -> anyhow::Result<Findings> {
    let started = Instant::now();
    let topics = Topics::create(&harness.bootstrap).await;
    let output = format!("{}.copies", topics.orders);
    testkit::create_topic(&harness.bootstrap, &output, 6).await;
    let watch = harness.watch(&topics)?;
    let mut patients = harness.patients(&topics, 20, "200ms");
    let copiers = Copiers::start(
        repo_root,
        &harness.bootstrap,
        (&topics.orders, &output, &topics.group),
        1,
        transaction_size,
    )
    .await?;
    let mut running = Running::Copiers(copiers);
    tending(&mut running, tokio::time::sleep(run / 2)).await;

    let outage = tending(&mut running, broker.bounce(down)).await?;
    tending(&mut running, tokio::time::sleep(run / 2)).await;
    let (acknowledged, samples) = wind_up(
        &mut running,
        &mut patients,
        harness,
        (&topics, watch),
        Duration::from_secs(90),
    )
    .await?;

    // The makers' bound with nothing to make: a transaction caught by the stop waits for its timeout.
    let bound = liveness_bound(
        Duration::ZERO,
        outage.lasted + TRANSACTION_TIMEOUT + harness.transaction_cleanup,
    );
    let Running::Copiers(mut copiers) = running else {
        unreachable!("copiers were started");
    };
    copiers.finish(Duration::from_secs(30)).await;
    let mut result = copied(
        harness,
        &topics.orders,
        &output,
        started,
        &samples,
        &[],
        bound,
    )
    .await?;
    acknowledged_orders_are_in_the_topic(&harness.bootstrap, &topics, &acknowledged).await?;
    result.scenario =
        "Kafka's TransactionalMessageCopier: broker stopped and restarted (one node)".to_owned();
    result.makers_started = copiers.runs;
    result.faults_injected = 1;
    result.notes.push(format!(
        "broker down {:.0} s ({:.1} s from the stop to ready again); {}",
        down.as_secs_f64(),
        outage.lasted.as_secs_f64(),
        copiers.runs_note()
    ));
    judge_skips(
        &mut result,
        broker.skipped_markers_of(&output, &topics.group, outage.markers_window()),
    );
    Ok(result)
}

/// Judged as the makers are on one node: a duplicate passes only where the broker's log says it skipped markers;
/// how many lines it holds is said either way.
fn judge_skips(result: &mut Findings, skips: Vec<String>) {
    result.notes.push(format!(
        "the broker's log holds {} lines of skipped markers of the copies or the group's offsets during the \
         restart{}",
        skips.len(),
        skips
            .first()
            .map(|l| format!(" (the first: {l})"))
            .unwrap_or_default()
    ));
    if result.duplicated > 0 {
        result.broker_fault = skips;
    }
}
