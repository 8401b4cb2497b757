//! Benchmark 6: the auditor at millions of records. Orders and their tabs are written straight to fresh topics
//! (no maker: this measures the reader), then `tabs-audit` reads both; Kafka's own `ConsumerPerformance` reads the
//! same tabs in the same run as the reference. Two sizes, a tenth and the whole, give the memory each order costs.

use std::time::Duration;

use anyhow::{bail, Context as _};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use tabs::messages::{to_json, Order, Tab};

use crate::ceiling::consumer_rate;
use crate::support::{kafka_tool, now_ns, usage, Topics};

/// Patients of the synthetic orders.
pub const PATIENTS: u64 = 1_000;
/// The making time the synthetic tabs pretend to (their delivery is this much after the order).
const MAKING_TIME: Duration = Duration::from_secs(2);

/// One audit of a topic pair.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub orders: u64,
    pub tabs: u64,
    pub records_per_s: f64,
    pub peak_rss_mib: f64,
    pub passed: bool,
}

/// The figures of the auditor benchmark.
#[derive(Debug, Clone, Copy)]
pub struct Auditing {
    pub small: Run,
    pub large: Run,
    /// `ConsumerPerformance` reading the large run's tabs.
    pub consumer_records_per_s: f64,
}

impl Auditing {
    /// Memory the audit holds per order: the peak RSS difference between the two sizes over their order
    /// difference.
    pub fn bytes_per_order(&self) -> f64 {
        let orders = self.large.orders.saturating_sub(self.small.orders).max(1) as f64;
        (self.large.peak_rss_mib - self.small.peak_rss_mib) * 1024.0 * 1024.0 / orders
    }

    pub fn ratio(&self) -> f64 {
        self.large.records_per_s / self.consumer_records_per_s
    }
}

/// The `k`-th synthetic order: patients take turns, `tabs_count` cycles through 1..=30 (15.5 on average), and
/// every order has its own timestamp, a little in the past so it is inside the audit's window.
fn order(k: u64, base_ns: u64) -> Order {
    Order {
        patient_id: format!("audit-bench-{}", k % PATIENTS),
        order_timestamp_ns: base_ns + k * 1_000,
        tabs_count: u32::try_from(k % 30).unwrap_or(0) + 1,
    }
}

/// The tabs of an order as a maker would deliver them, `MAKING_TIME` after it.
fn tabs_of(order: &Order) -> impl Iterator<Item = Tab> + '_ {
    (1..=order.tabs_count).map(|seq| Tab {
        delivery_timestamp_ns: order.order_timestamp_ns + MAKING_TIME.as_nanos() as u64 + 5_000_000,
        ..Tab::make(order, seq)
    })
}

fn send(producer: &BaseProducer, topic: &str, key: &str, payload: &[u8]) -> anyhow::Result<()> {
    let mut record = BaseRecord::to(topic).key(key).payload(payload);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((err, back)) if err.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                producer.poll(Duration::from_millis(10));
                record = back;
            }
            Err((err, _)) => bail!("writing to {topic}: {err}"),
        }
    }
}

/// Writes `orders` orders and all their tabs; returns the tab count. Blocking.
fn write(
    bootstrap: &str,
    orders_topic: &str,
    deliveries: &str,
    orders: u64,
) -> anyhow::Result<u64> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .context("creating the producer")?;
    let base_ns = now_ns() - 600 * 1_000_000_000;
    let mut tabs = 0;
    for k in 0..orders {
        let order = order(k, base_ns);
        send(&producer, orders_topic, &order.patient_id, &to_json(&order))?;
        for tab in tabs_of(&order) {
            send(&producer, deliveries, &tab.patient_id, &to_json(&tab))?;
            tabs += 1;
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(120))
        .context("flushing the synthetic records")?;
    Ok(tabs)
}

/// Audits `topics` with the `tabs-audit` binary, sampling its memory.
async fn audit(bootstrap: &str, topics: &Topics, orders: u64, tabs: u64) -> anyhow::Result<Run> {
    let args: Vec<&str> = vec![
        "--bootstrap-servers",
        bootstrap,
        "--orders-topic",
        &topics.orders,
        "--deliveries-topic",
        &topics.deliveries,
        "--tab-making-time",
        "2s",
        "--json",
    ];
    let program = crate::support::binary("tabs-audit");
    let mut auditor = testkit::Proc::spawn_with_stdout(
        program.to_str().context("UTF-8 path")?,
        &args,
        &[("RUST_LOG", "warn")],
    );
    let pid = auditor.pid();
    let mut peak_kib = 0;
    while auditor
        .wait_timeout(Duration::from_millis(50))
        .await
        .is_none()
    {
        if let Some(now) = usage(pid) {
            peak_kib = peak_kib.max(now.peak_rss_kib);
        }
    }
    let outcome: serde_json::Value = serde_json::from_str(auditor.stdout_text().trim())
        .with_context(|| format!("the audit printed no report: {}", auditor.stderr_text()))?;
    let number = |key: &str| outcome.get(key).and_then(serde_json::Value::as_f64);
    let read = number("records_read").context("no records_read")?;
    let elapsed = number("elapsed_s").context("no elapsed_s")?.max(1e-3);
    Ok(Run {
        orders,
        tabs,
        records_per_s: read / elapsed,
        peak_rss_mib: peak_kib as f64 / 1024.0,
        passed: outcome.get("passed") == Some(&serde_json::Value::Bool(true))
            && number("delivered_tabs") == Some(tabs as f64),
    })
}

async fn measure(bootstrap: &str, orders: u64) -> anyhow::Result<(Topics, Run)> {
    let topics = Topics::create(bootstrap, 12).await;
    let written = {
        let (bootstrap, orders_topic, deliveries) = (
            bootstrap.to_owned(),
            topics.orders.clone(),
            topics.deliveries.clone(),
        );
        tokio::task::spawn_blocking(move || write(&bootstrap, &orders_topic, &deliveries, orders))
            .await??
    };
    let run = audit(bootstrap, &topics, orders, written).await?;
    Ok((topics, run))
}

pub async fn run(bootstrap: &str, orders: u64) -> anyhow::Result<Auditing> {
    println!("auditor: {} and {orders} orders", orders / 10);
    let (_, small) = measure(bootstrap, orders / 10).await?;
    println!(
        "  {} orders, {} tabs: {:.0} records/s, peak RSS {:.1} MiB, passed {}",
        small.orders, small.tabs, small.records_per_s, small.peak_rss_mib, small.passed
    );
    let (topics, large) = measure(bootstrap, orders).await?;
    println!(
        "  {} orders, {} tabs: {:.0} records/s, peak RSS {:.1} MiB, passed {}",
        large.orders, large.tabs, large.records_per_s, large.peak_rss_mib, large.passed
    );
    let consumer_records_per_s = consumer_rate(
        &kafka_tool(
            &[
                "org.apache.kafka.tools.ConsumerPerformance",
                "--bootstrap-server",
                bootstrap,
                "--topic",
                &topics.deliveries,
                "--messages",
                &large.tabs.to_string(),
                "--group",
                &testkit::unique("bench-audit-read"),
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>(),
        )
        .await?,
    )?;
    let result = Auditing {
        small,
        large,
        consumer_records_per_s,
    };
    println!(
        "  Kafka consumer: {consumer_records_per_s:.0} records/s; ratio auditor/consumer {:.2}; {:.0} bytes per order",
        result.ratio(),
        result.bytes_per_order()
    );
    if !(small.passed && large.passed) {
        bail!("the audit of the synthetic deliveries did not pass: {result:?}");
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_synthetic_deliveries_are_clean_for_the_auditor() {
        let mut ledger = audit::Audit::new(MAKING_TIME);
        let mut tabs = 0;
        for k in 0..300 {
            let order = order(k, 1_000_000_000);
            ledger.add_order(&order);
            for tab in tabs_of(&order) {
                ledger.add_tab(&tab);
                tabs += 1;
            }
        }
        let report = ledger.report();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(ledger.delivered_tabs(), tabs);
        assert_eq!(tabs, 300 / 30 * (1..=30).sum::<u64>());
    }
}
