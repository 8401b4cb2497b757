//! Benchmark: memory per order in flight. One maker at deploy/'s in-flight bound is given a backlog of orders of the
//! contract's most tabs (30), with a making time long enough that every order it takes is in flight at once; its
//! peak resident memory is set against the same maker's with no order (the reference, measured in the same run).
//! What the bound can be within the ScaledJob's memory request follows from the difference.

use std::time::Duration;

use anyhow::{bail, Context as _};
use tabs::messages::{to_json, Order, Tab};

use crate::support::{spawn, strings, usage, Topics};

/// Tabs of every order: the contract's most.
const TABS: u32 = 30;
/// A patient id of the length the patients use (a UUID).
const PATIENT: &str = "8b83f082-3afa-4dd2-bde5-072ec5d2404d";
/// Long enough that the maker has taken every order of the backlog before the first is made.
const MAKING: Duration = Duration::from_secs(10);

/// One backlog and the maker's peak through it.
#[derive(Debug, Clone)]
pub struct Level {
    pub orders: u32,
    pub peak_kib: u64,
}

#[derive(Debug, Clone)]
pub struct Memory {
    pub bound: u32,
    pub tabs: u32,
    /// The maker's peak with no order: the reference.
    pub idle_kib: u64,
    pub levels: Vec<Level>,
    /// One order and its tabs as the records Kafka holds (JSON, keys included).
    pub order_bytes: usize,
}

impl Memory {
    /// The peak over the reference, per order in flight, at the largest backlog.
    pub fn bytes_per_order(&self) -> f64 {
        self.levels.last().map_or(0.0, |level| {
            level.peak_kib.saturating_sub(self.idle_kib) as f64 * 1024.0 / f64::from(level.orders)
        })
    }
}

/// One order of `TABS` tabs and its tabs, as records: the bytes an order in flight stands for.
fn order_bytes() -> usize {
    let order = Order {
        patient_id: PATIENT.to_owned(),
        order_timestamp_ns: 1_796_000_000_000_000_000,
        tabs_count: TABS,
    };
    let key = order.patient_id.len();
    let tabs: usize = (1..=TABS)
        .map(|seq| {
            let tab = Tab {
                delivery_timestamp_ns: order.order_timestamp_ns,
                ..Tab::make(&order, seq)
            };
            key + to_json(&tab).len()
        })
        .sum();
    key + to_json(&order).len() + tabs
}

pub async fn run(bootstrap: &str, bound: u32) -> anyhow::Result<Memory> {
    println!(
        "memory: one maker, in-flight bound {bound}, orders of {TABS} tabs, making {MAKING:?}"
    );
    let idle_kib = peak(bootstrap, 0, bound).await?;
    println!("  no order (reference): peak RSS {} KiB", idle_kib);
    let mut levels = Vec::new();
    for orders in [bound / 4, bound / 2, bound] {
        let peak_kib = peak(bootstrap, orders, bound).await?;
        println!(
            "  {orders:>5} orders in flight: peak RSS {peak_kib} KiB, {:.0} bytes per order over the reference",
            peak_kib.saturating_sub(idle_kib) as f64 * 1024.0 / f64::from(orders.max(1))
        );
        levels.push(Level { orders, peak_kib });
    }
    let memory = Memory {
        bound,
        tabs: TABS,
        idle_kib,
        levels,
        order_bytes: order_bytes(),
    };
    println!(
        "  per order in flight: {:.0} bytes, {:.1} times its records ({} bytes)",
        memory.bytes_per_order(),
        memory.bytes_per_order() / memory.order_bytes as f64,
        memory.order_bytes
    );
    Ok(memory)
}

/// The maker's peak resident memory (KiB) through a backlog of `orders` orders, all taken at once.
async fn peak(bootstrap: &str, orders: u32, bound: u32) -> anyhow::Result<u64> {
    let topics = Topics::create(bootstrap, 12).await;
    testkit::produce_orders(
        bootstrap,
        &topics.orders,
        PATIENT,
        (orders as usize, 500, TABS),
    )
    .await;

    let mut args = topics.maker_args(bootstrap, &testkit::unique("bench-memory"));
    args.extend(strings(&[
        "--tab-making-time",
        &format!("{}s", MAKING.as_secs()),
        "--max-in-flight-orders",
        &bound.to_string(),
        // With no order it leaves once idle; with a backlog, once every order is made.
        "--idle-exit-after",
        if orders == 0 { "5s" } else { "0" },
        "--max-orders",
        &orders.to_string(),
        "--metrics-addr",
        "127.0.0.1:0",
    ]));
    let mut maker = spawn("medicine", &args, &[("RUST_LOG", "warn")]);
    let pid = maker.pid();
    let mut peak = 0;
    let deadline = tokio::time::Instant::now() + MAKING + Duration::from_secs(120);
    loop {
        if let Some(now) = usage(pid) {
            peak = peak.max(now.peak_rss_kib);
        }
        if let Some(status) = maker.wait_timeout(Duration::from_millis(50)).await {
            if status.code() != Some(0) {
                bail!("the maker failed ({status}): {}", maker.stderr_text());
            }
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the maker did not finish {orders} orders: {}",
                maker.stderr_text()
            );
        }
    }
    Some(peak)
        .filter(|&p| p > 0)
        .context("no peak read from /proc")
}
