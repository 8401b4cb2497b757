//! Benchmark 1: one maker at making time 0 against Kafka's own producer at the same record size, same broker,
//! same run. The maker reads orders, makes and writes tabs and commits offsets; the tool only writes: the ratio
//! says how much of what Kafka can take the maker delivers.

use std::time::Duration;

use anyhow::{bail, Context as _};
use tabs::messages::{to_json, Order, Tab};

use crate::support::{fill_orders, kafka_tool, spawn, strings, Topics};

/// The figures of the ceiling benchmark.
#[derive(Debug, Clone)]
pub struct Ceiling {
    pub orders: u64,
    pub tabs: u64,
    pub record_bytes: usize,
    pub producer_idempotent: f64,
    pub producer_transactional: f64,
    pub consumer: f64,
    pub maker_exactly_once: f64,
    pub maker_at_least_once: f64,
    pub exactly_once_clean: bool,
}

/// A tab record as the maker writes it, for the tools' record size.
fn sample_tab_bytes() -> usize {
    let order = Order {
        patient_id: format!("{}-123", uuid::Uuid::new_v4()),
        order_timestamp_ns: tabs::time::now_ns(),
        tabs_count: 15,
    };
    let tab = Tab {
        delivery_timestamp_ns: order.order_timestamp_ns + 2_000_000_000,
        ..Tab::make(&order, 7)
    };
    to_json(&tab).len()
}

/// Parses ProducerPerformance's summary: "N records sent, X records/sec (…)".
fn producer_rate(output: &str) -> anyhow::Result<f64> {
    output
        .lines()
        .rev()
        .find_map(|line| {
            let (_, rest) = line.split_once("records sent, ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .with_context(|| format!("no summary in ProducerPerformance output:\n{output}"))
}

/// Parses ConsumerPerformance's CSV line; the records/s column is `fetch.nMsg.sec`.
pub(crate) fn consumer_rate(output: &str) -> anyhow::Result<f64> {
    let mut lines = output.lines().filter(|l| l.contains(','));
    let header: Vec<&str> = lines
        .next()
        .context("no header")?
        .split(',')
        .map(str::trim)
        .collect();
    let column = header
        .iter()
        .position(|h| *h == "fetch.nMsg.sec")
        .context("no fetch.nMsg.sec column")?;
    let values: Vec<&str> = lines
        .next()
        .context("no values")?
        .split(',')
        .map(str::trim)
        .collect();
    values
        .get(column)
        .and_then(|v| v.parse().ok())
        .context("bad fetch.nMsg.sec value")
}

/// One maker, making time 0, until `orders` are done; returns the tabs made and tabs/s over the time from its
/// first assignment to its last commit (fetching, making and committing included; process start-up, joining and
/// leaving the group excluded, as the tools exclude their start and end).
async fn maker_rate(
    bootstrap: &str,
    topics: &Topics,
    group: &str,
    guarantee: &str,
    orders: u64,
) -> anyhow::Result<(u64, f64)> {
    let mut args = topics.maker_args(bootstrap, group);
    args.extend(
        [
            "--tab-making-time",
            "0",
            "--max-in-flight-orders",
            "4096",
            "--max-orders",
            &orders.to_string(),
            "--guarantee",
            guarantee,
            "--idle-exit-after",
            "0",
        ]
        .iter()
        .map(|s| (*s).to_owned()),
    );
    let mut maker = spawn("medicine", &args, &[("RUST_LOG", "info")]);
    if maker.exit_code(Duration::from_secs(600)).await != 0 {
        bail!("the maker failed: {}", maker.stderr_text());
    }
    let assigned_ms = maker
        .log_events("partitions assigned")
        .first()
        .and_then(|e| e.get("since_start_ms").and_then(serde_json::Value::as_f64))
        .context("no assignment logged")?;
    let stopped = maker.log_events("maker stopped");
    let summary = stopped.first().context("no summary logged")?;
    // The work ends with the last commit: leaving the group afterwards is start-up's mirror, excluded too.
    let last_commit_s = summary
        .get("last_commit_s")
        .and_then(serde_json::Value::as_f64)
        .context("no last commit time")?;
    let tabs = summary
        .get("tabs")
        .and_then(serde_json::Value::as_u64)
        .context("no tab count")?;
    let busy_s = (last_commit_s - assigned_ms / 1e3).max(1e-3);
    Ok((tabs, tabs as f64 / busy_s))
}

pub async fn run(bootstrap: &str, orders: u64) -> anyhow::Result<Ceiling> {
    let record_bytes = sample_tab_bytes();
    println!("ceiling: {orders} orders, tab records of {record_bytes} bytes");
    warm_up(bootstrap, record_bytes).await?;
    let makers = makers(bootstrap, orders).await?;
    let tools = tools(bootstrap, makers.tabs, record_bytes).await?;
    println!(
        "  ratio maker/ceiling: exactly-once {:.2} (of the transactional producer), at-least-once {:.2} (of the idempotent producer)",
        makers.exactly_once / tools.producer_transactional,
        makers.at_least_once / tools.producer_idempotent
    );
    Ok(Ceiling {
        orders: makers.orders,
        tabs: makers.tabs,
        record_bytes,
        producer_idempotent: tools.producer_idempotent,
        producer_transactional: tools.producer_transactional,
        consumer: tools.consumer,
        maker_exactly_once: makers.exactly_once,
        maker_at_least_once: makers.at_least_once,
        exactly_once_clean: makers.exactly_once_clean,
    })
}

/// The broker's JIT warms up over its first minute of load, and a fresh broker creates and loads its transaction
/// log on the first transactional producer: both are given it here with the tool itself, transactional, so neither
/// side of the comparison pays for them.
async fn warm_up(bootstrap: &str, record_bytes: usize) -> anyhow::Result<()> {
    let warmup = Topics::create(bootstrap, 12).await;
    kafka_tool(&strings(&[
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        &warmup.deliveries,
        "--num-records",
        "2000000",
        "--record-size",
        &record_bytes.to_string(),
        "--throughput",
        "-1",
        "--bootstrap-server",
        bootstrap,
        "--transactional-id",
        &testkit::unique("bench-warmup"),
        "--transaction-duration-ms",
        "50",
        "--command-property",
        "acks=all",
        "batch.size=1000000",
    ]))
    .await?;
    Ok(())
}

/// The maker's side of the comparison.
struct Makers {
    orders: u64,
    tabs: u64,
    exactly_once: f64,
    at_least_once: f64,
    exactly_once_clean: bool,
}

/// Orders from 2,000 patients, read by two makers in two groups (exactly-once, then at-least-once), writing to
/// their own tabs topics; the exactly-once run audited.
async fn makers(bootstrap: &str, orders: u64) -> anyhow::Result<Makers> {
    let eos = Topics::create(bootstrap, 12).await;
    let patients = 2_000u32;
    fill_orders(
        bootstrap,
        &eos.orders,
        patients,
        u32::try_from(orders.div_ceil(u64::from(patients)))?,
    )
    .await?;
    let orders = orders.div_ceil(u64::from(patients)) * u64::from(patients);
    let (tabs, exactly_once) = maker_rate(
        bootstrap,
        &eos,
        &testkit::unique("bench-eos"),
        "exactly-once",
        orders,
    )
    .await?;
    println!("  maker, exactly-once:  {exactly_once:>10.0} tabs/s ({tabs} tabs)");

    let audit = audit::audit(&audit::Config {
        wait: Duration::from_secs(10),
        ..audit::Config::for_topics(
            bootstrap,
            tabs::config::TopicArgs::new(&eos.orders, &eos.deliveries, &eos.dlq),
            Duration::ZERO,
        )
    })?;

    let alo = Topics {
        orders: eos.orders.clone(),
        ..Topics::create(bootstrap, 12).await
    };
    let (_, at_least_once) = maker_rate(
        bootstrap,
        &alo,
        &testkit::unique("bench-alo"),
        "at-least-once",
        orders,
    )
    .await?;
    println!("  maker, at-least-once: {at_least_once:>10.0} tabs/s");
    Ok(Makers {
        orders,
        tabs,
        exactly_once,
        at_least_once,
        exactly_once_clean: audit.report.is_clean(),
    })
}

/// Kafka's own tools: the ceiling.
struct Tools {
    producer_idempotent: f64,
    producer_transactional: f64,
    consumer: f64,
}

/// Kafka's producer (idempotent, then transactional) and consumer over records of the tab's size, three times the
/// makers' tabs and at least a million: the Java tools warm up (JIT) over their first records, and the ceiling is
/// Kafka at its best, not a cold JVM.
async fn tools(bootstrap: &str, tabs: u64, record_bytes: usize) -> anyhow::Result<Tools> {
    let tool_topic = Topics::create(bootstrap, 12).await;
    let tool_records = (tabs * 3).max(1_000_000);
    let producer = |extra: &[&str]| {
        let mut args = strings(&[
            "org.apache.kafka.tools.ProducerPerformance",
            "--topic",
            &tool_topic.deliveries,
            "--num-records",
            &tool_records.to_string(),
            "--record-size",
            &record_bytes.to_string(),
            "--throughput",
            "-1",
            "--bootstrap-server",
            bootstrap,
            "--command-property",
            "acks=all",
            "enable.idempotence=true",
            "linger.ms=5",
            // librdkafka's default batch size (the maker's), not the Java client's 16 KiB: the ceiling at its best.
            "batch.size=1000000",
        ]);
        args.extend(strings(extra));
        args
    };
    let producer_idempotent = producer_rate(&kafka_tool(&producer(&[])).await?)?;
    println!("  Kafka producer, idempotent:    {producer_idempotent:>10.0} records/s");
    let transactional = producer(&[
        "--transactional-id",
        &testkit::unique("bench-txn"),
        "--transaction-duration-ms",
        "50",
    ]);
    let producer_transactional = producer_rate(&kafka_tool(&transactional).await?)?;
    println!("  Kafka producer, transactional: {producer_transactional:>10.0} records/s");
    let consumer = consumer_rate(
        &kafka_tool(&strings(&[
            "org.apache.kafka.tools.ConsumerPerformance",
            "--bootstrap-server",
            bootstrap,
            "--topic",
            &tool_topic.deliveries,
            "--messages",
            &tool_records.to_string(),
            "--group",
            &testkit::unique("bench-read"),
        ]))
        .await?,
    )?;
    println!("  Kafka consumer:                {consumer:>10.0} records/s");
    Ok(Tools {
        producer_idempotent,
        producer_transactional,
        consumer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_tools_summaries() {
        let producer = "100000 records sent, 250000.5 records/sec (62.00 MB/sec), 3.1 ms avg latency, 210.0 ms max latency, ...";
        assert_eq!(producer_rate(producer).unwrap(), 250000.5);
        let consumer = "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec\n\
                        2026-11-28 10:00:00:000, 2026-11-28 10:00:01:000, 60.0, 60.0, 240000, 240000.0, 300, 700, 85.7, 342857.1\n";
        assert_eq!(consumer_rate(consumer).unwrap(), 342857.1);
        assert!(sample_tab_bytes() > 200);
    }
}
