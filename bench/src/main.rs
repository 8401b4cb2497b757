//! `medicine-bench`: the benchmarks of medicine-pubsub, run against a real Kafka (the test broker). Each figure
//! is printed with its reference measured in the same run (Kafka's own tools, the making time, the polling
//! interval): these machines are noisy, ratios travel better than absolute numbers.
//!
//! Run them all and rewrite documentation/BENCHMARKS.md: `bench/run.sh` (or `medicine-bench all --write FILE`).

#![forbid(unsafe_code)]

mod auditing;
mod capacity;
mod ceiling;
mod coldstart;
mod memory;
mod recovery;
mod scale;
mod support;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tabs::config::parse_positive_duration;

#[derive(Debug, Parser)]
#[command(
    name = "medicine-bench",
    version,
    about = "Benchmarks of medicine-pubsub against a real Kafka."
)]
struct Cli {
    /// Kafka to measure against (the test broker: scripts/kafka-dev.sh start).
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:29092",
        global = true
    )]
    bootstrap_servers: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One maker at making time 0 against Kafka's producer and consumer tools.
    Ceiling {
        /// Orders to make (about 15.5 tabs each): enough for the maker to work a few seconds, so that one
        /// hiccup of the shared machine does not decide the figure.
        #[arg(long, default_value_t = 50_000)]
        orders: u64,
    },
    /// Patients one maker serves with overhead p99 ≤ 100 ms, tabs taking 2 s.
    Capacity {
        /// The maker's in-flight bound (default: the one deploy/ ships).
        #[arg(long)]
        max_in_flight_orders: Option<u32>,
        /// Patient counts to try, in order; stops at the first level not held.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "250,500,750,1000,1500,2000,3000,4000"
        )]
        levels: Vec<u32>,
        /// How long each level runs before it is measured.
        #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
        warmup: Duration,
        /// How long each level is held and measured.
        #[arg(long, default_value = "60s", value_parser = parse_positive_duration)]
        hold: Duration,
    },
    /// Process start to first order committed (maker) or acknowledged (patient).
    ColdStart {
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// A maker killed with SIGKILL: time until its partitions' orders are committed again, on the deployed settings
    /// and on Kafka's defaults.
    Recovery,
    /// Local mode, 1 → 50 patients: time until the step's backlog is made.
    Scale {
        /// When the load steps up (and how long it then lasts).
        #[arg(long, default_value = "20s", value_parser = parse_positive_duration)]
        step: Duration,
    },
    /// One maker's memory per order in flight, against the same maker with none.
    Memory,
    /// The auditor reading millions of records, against Kafka's consumer tool; its memory per order.
    Audit {
        /// Orders of the large run (about 15.5 tabs each); the small run has a tenth.
        #[arg(long, default_value_t = 200_000)]
        orders: u64,
    },
    /// Every benchmark; with --write, the results as markdown.
    All {
        /// Write the results to this markdown file (documentation/BENCHMARKS.md).
        #[arg(long)]
        write: Option<PathBuf>,
        /// Shorter holds and fewer levels (minutes instead of a quarter of an hour); figures are noisier.
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> ExitCode {
    let cli: Cli = tabs::config::parse_or_exit();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let bootstrap = cli.bootstrap_servers.as_str();
    match cli.command {
        Command::Ceiling { orders } => {
            ceiling::run(bootstrap, orders).await?;
        }
        Command::Capacity {
            max_in_flight_orders,
            levels,
            warmup,
            hold,
        } => {
            let bound = max_in_flight_orders.unwrap_or_else(capacity::shipped_max_in_flight_orders);
            capacity::run(bootstrap, bound, &levels, warmup, hold).await?;
        }
        Command::ColdStart { runs } => {
            coldstart::run(bootstrap, runs).await?;
        }
        Command::Scale { step } => {
            scale::run(bootstrap, step).await?;
        }
        Command::Recovery => {
            recovery::run(bootstrap).await?;
        }
        Command::Memory => {
            memory::run(bootstrap, capacity::shipped_max_in_flight_orders()).await?;
        }
        Command::Audit { orders } => {
            auditing::run(bootstrap, orders).await?;
        }
        Command::All { write, quick } => {
            let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
            let ceiling = ceiling::run(bootstrap, if quick { 20_000 } else { 50_000 }).await?;
            let cold = coldstart::run(bootstrap, 10).await?;
            let (levels, hold): (&[u32], _) = if quick {
                (&[250, 1000, 2000], Duration::from_secs(20))
            } else {
                (
                    &[250, 500, 750, 1000, 1500, 2000, 3000, 4000],
                    Duration::from_secs(60),
                )
            };
            let capacity = capacity::run(
                bootstrap,
                capacity::shipped_max_in_flight_orders(),
                levels,
                Duration::from_secs(10),
                hold,
            )
            .await?;
            let memory = memory::run(bootstrap, capacity::shipped_max_in_flight_orders()).await?;
            let scale = scale::run(bootstrap, Duration::from_secs(20)).await?;
            let auditing = auditing::run(bootstrap, if quick { 50_000 } else { 200_000 }).await?;
            let recovery = recovery::run(bootstrap).await?;
            if let Some(path) = write {
                let text = markdown(
                    &command,
                    &Results {
                        ceiling,
                        cold,
                        capacity,
                        memory,
                        scale,
                        auditing,
                        recovery,
                    },
                );
                std::fs::write(&path, text)?;
                println!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get);
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{cores} cores ({cpu}), {memory_gib:.0} GiB")
}

fn binary_size_mib(name: &str) -> f64 {
    std::fs::metadata(support::binary(name)).map_or(0.0, |m| m.len() as f64 / 1024.0 / 1024.0)
}

/// The report's template: all its prose, with the figures filled in by [`markdown`].
const TEMPLATE: &str = include_str!("../templates/BENCHMARKS.md.j2");

/// Every benchmark's figures, for the report.
struct Results {
    ceiling: ceiling::Ceiling,
    cold: coldstart::ColdStart,
    capacity: capacity::Capacity,
    memory: memory::Memory,
    scale: scale::Scale,
    auditing: auditing::Auditing,
    recovery: Vec<recovery::Recovery>,
}

fn markdown(command: &str, results: &Results) -> String {
    let Results {
        ceiling,
        cold,
        capacity,
        memory,
        scale,
        auditing,
        recovery,
    } = results;
    let (_, librdkafka) = rdkafka::util::get_rdkafka_version();
    let binaries: Vec<serde_json::Value> =
        ["patient", "medicine", "medicine-pubsub-local", "tabs-audit"]
            .iter()
            .map(|name| serde_json::json!({"name": name, "mib": f1(binary_size_mib(name))}))
            .collect();
    let context = serde_json::json!({
        "command": command,
        "machine": machine(),
        "version": env!("CARGO_PKG_VERSION"),
        "librdkafka": librdkafka,
        "ceiling": ceiling_context(ceiling),
        "capacity": capacity_context(capacity),
        "cold": {
            "runs": cold.runs,
            "maker_classic_ms": ms(cold.maker_classic),
            "maker_consumer_ms": ms(cold.maker_consumer),
            "patient_ms": ms(cold.patient),
        },
        "scale": scale_context(scale),
        "memory": memory_context(memory),
        "binaries": binaries,
        "auditing": auditing_context(auditing),
        "recovery": recovery.iter().map(recovery_context).collect::<Vec<_>>(),
    });
    render(&context)
        .unwrap_or_else(|err| format!("# Benchmarks\n\nthe report template failed: {err:#}\n"))
}

fn f0(x: f64) -> String {
    format!("{x:.0}")
}

fn f1(x: f64) -> String {
    format!("{x:.1}")
}

fn f2(x: f64) -> String {
    format!("{x:.2}")
}

fn ms(d: std::time::Duration) -> String {
    f0(d.as_secs_f64() * 1e3)
}

fn ceiling_context(ceiling: &ceiling::Ceiling) -> serde_json::Value {
    serde_json::json!({
        "orders": ceiling.orders,
        "tabs": ceiling.tabs,
        "record_bytes": ceiling.record_bytes,
        "producer_transactional": f0(ceiling.producer_transactional),
        "producer_idempotent": f0(ceiling.producer_idempotent),
        "consumer": f0(ceiling.consumer),
        "maker_exactly_once": f0(ceiling.maker_exactly_once),
        "maker_at_least_once": f0(ceiling.maker_at_least_once),
        "exactly_once_ratio": f2(ceiling.maker_exactly_once / ceiling.producer_transactional),
        "at_least_once_ratio": f2(ceiling.maker_at_least_once / ceiling.producer_idempotent),
        "exactly_once_clean": ceiling.exactly_once_clean,
    })
}

fn memory_context(m: &memory::Memory) -> serde_json::Value {
    // What the ScaledJob's memory request holds at this cost per order, over the reference.
    let request_mib = f64::from(local::defaults::load().maker_memory_request_mib);
    let per_order = m.bytes_per_order();
    serde_json::json!({
        "bound": m.bound,
        "tabs": m.tabs,
        "idle_mib": f1(m.idle_kib as f64 / 1024.0),
        "levels": m.levels.iter().map(|l| serde_json::json!({
            "orders": l.orders,
            "peak_mib": f1(l.peak_kib as f64 / 1024.0),
        })).collect::<Vec<_>>(),
        "bytes_per_order": f0(per_order),
        "order_bytes": m.order_bytes,
        "ratio": f1(per_order / m.order_bytes as f64),
        "request_mib": f0(request_mib),
        "orders_in_request": f0((request_mib * 1024.0 * 1024.0 - m.idle_kib as f64 * 1024.0).max(0.0) / per_order.max(1.0)),
    })
}

fn level_context(l: &capacity::Level) -> serde_json::Value {
    serde_json::json!({
        "patients": l.patients,
        "attempt": l.attempt,
        "orders": l.orders,
        "tabs_per_s": f0(l.tabs_per_s),
        "overhead_p50_ms": f1(l.overhead_p50_ms),
        "overhead_p99_ms": f1(l.overhead_p99_ms),
        "partition_spread_percent": f1(l.partition_spread_percent),
        "worst_patient_p99_ms": f0(l.worst_patient_p99_ms),
        "missing": l.missing,
        "duplicated": l.duplicated,
        "maker_cpu_percent": f0(l.maker_cpu_percent),
        "broker_cpu_percent": f0(l.broker_cpu_percent),
        "maker_peak_rss_mib": f0(l.maker_peak_rss_mib),
        "patient_peak_rss_mib": f0(l.patient_peak_rss_mib),
        "held": l.held,
    })
}

fn capacity_context(capacity: &capacity::Capacity) -> serde_json::Value {
    serde_json::json!({
        "max_in_flight_orders": capacity.max_in_flight_orders,
        "partitions": local::defaults::load().partitions.get(tabs::config::ORDERS_TOPIC).copied().unwrap_or(0),
        "hold_s": capacity.hold.as_secs(),
        "limit_ms": capacity::OVERHEAD_P99_LIMIT_MS,
        "levels": capacity.levels.iter().map(level_context).collect::<Vec<_>>(),
        "best": capacity.capacity().map(level_context),
    })
}

fn scale_context(scale: &scale::Scale) -> serde_json::Value {
    serde_json::json!({
        "lag_threshold": scale.lag_threshold,
        "max_in_flight_orders": scale.max_in_flight_orders,
        "step_at_s": f0(scale.step_at_s),
        "keda_s": f1(scale.keda_s),
        "made_s": f1(scale.made_s),
        "reference_s": f0(scale.reference_s),
        "keda_ratio": f2(scale.keda_s / scale.reference_s),
        "made_ratio": f2(scale.made_s / scale.reference_s),
        "makers_after": scale.makers_after,
        "peak_lag": scale.peak_lag,
        "join_median_ms": scale.join_median_ms,
        "join_max_ms": scale.join_max_ms,
        "dropped": scale.dropped,
        "audit_passed": scale.audit_passed,
    })
}

fn auditing_context(auditing: &auditing::Auditing) -> serde_json::Value {
    let run = |name: &str, r: &auditing::Run| {
        serde_json::json!({
            "name": name,
            "orders": r.orders,
            "tabs": r.tabs,
            "records_per_s": f0(r.records_per_s),
            "peak_rss_mib": f1(r.peak_rss_mib),
            "passed": r.passed,
        })
    };
    serde_json::json!({
        "patients": auditing::PATIENTS,
        "runs": [run("a tenth", &auditing.small), run("whole", &auditing.large)],
        "large_tabs": auditing.large.tabs,
        "consumer_records_per_s": f0(auditing.consumer_records_per_s),
        "ratio": f2(auditing.ratio()),
        "bytes_per_order": f0(auditing.bytes_per_order()),
        "million_mib": f0(auditing.bytes_per_order() * 1e6 / 1024.0 / 1024.0),
    })
}

fn recovery_context(r: &recovery::Recovery) -> serde_json::Value {
    serde_json::json!({
        "settings": r.settings,
        "protocol": r.protocol,
        "session_timeout_s": f0(r.session_timeout.as_secs_f64()),
        "abort_interval_s": f0(r.abort_interval.as_secs_f64()),
        "partitions": r.partitions,
        "reassigned_s": f1(r.reassigned_s),
        "first_s": f1(r.first_s),
        "all_s": f1(r.all_s),
        "reference_s": f0(r.reference().as_secs_f64()),
        "ratio": f2(r.first_s / r.reference().as_secs_f64()),
        "audit_passed": r.audit_passed,
    })
}

/// Renders the report template with `context`.
fn render(context: &serde_json::Value) -> Result<String, minijinja::Error> {
    let mut env = minijinja::Environment::new();
    // A figure the code forgot to give is an error, not an empty cell.
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_template("BENCHMARKS.md", TEMPLATE)?;
    env.get_template("BENCHMARKS.md")?.render(context)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_report_names_every_figure() {
        let level = capacity::Level {
            patients: 1000,
            attempt: 1,
            orders: 10_000,
            tabs_per_s: 7_500.0,
            overhead_p50_ms: 3.0,
            overhead_p99_ms: 40.0,
            worst_patient_p99_ms: 2_050.0,
            missing: 0,
            duplicated: 0,
            maker_cpu_percent: 20.0,
            broker_cpu_percent: 30.0,
            maker_peak_rss_mib: 40.0,
            patient_peak_rss_mib: 30.0,
            partition_spread_percent: 12.0,
            held: true,
        };
        let run = auditing::Run {
            orders: 10,
            tabs: 100,
            records_per_s: 1e5,
            peak_rss_mib: 20.0,
            passed: true,
        };
        let results = Results {
            ceiling: ceiling::Ceiling {
                orders: 1,
                tabs: 2,
                record_bytes: 300,
                producer_idempotent: 2.0,
                producer_transactional: 2.0,
                consumer: 3.0,
                maker_exactly_once: 1.0,
                maker_at_least_once: 1.5,
                exactly_once_clean: true,
            },
            cold: coldstart::ColdStart {
                runs: 5,
                maker_classic: Duration::from_millis(300),
                maker_consumer: Duration::from_millis(200),
                patient: Duration::from_millis(70),
            },
            capacity: capacity::Capacity {
                max_in_flight_orders: 4096,
                levels: vec![level],
                hold: Duration::from_secs(20),
            },
            memory: memory::Memory {
                bound: 4096,
                tabs: 30,
                idle_kib: 10 * 1024,
                levels: vec![memory::Level {
                    orders: 4096,
                    peak_kib: 10 * 1024 + 4096 * 2,
                }],
                order_bytes: 9000,
            },
            scale: scale::Scale {
                step_at_s: 30.0,
                keda_s: 5.0,
                made_s: 7.0,
                reference_s: 7.0,
                lag_threshold: 16,
                max_in_flight_orders: 32,
                makers_after: 3,
                peak_lag: 100,
                join_median_ms: 500,
                join_max_ms: 600,
                dropped: 4,
                audit_passed: true,
            },
            auditing: auditing::Auditing {
                small: run,
                large: run,
                consumer_records_per_s: 2e5,
            },
            recovery: vec![recovery::Recovery {
                settings: "deployed settings",
                protocol: "consumer",
                session_timeout: Duration::from_secs(10),
                abort_interval: Duration::from_secs(2),
                partitions: 3,
                reassigned_s: 10.2,
                first_s: 12.1,
                all_s: 12.4,
                audit_passed: true,
            }],
        };
        let text = markdown("all", &results);
        assert!(!text.contains("template failed"), "{text}");
        for expected in [
            "| **maker, exactly-once** | **1** | **0.50** |",
            "One maker at the shipped `--max-in-flight-orders 4096`",
            "**Capacity: 1000 patients per maker**",
            "12 makers × 1000 = 12000 patients",
            "2000 of its makers",
            "| the step's backlog made (the lag back under what arrives in one making time and 0.5 s) | 7.0 | 1.00 |",
            "| lag back under one threshold per running maker (KEDA's view: it starts no more makers) | 5.0 | 0.71 |",
            "| deployed settings | `consumer` | 10 s | 2 s | 3 | 10.2 | 12.1 | 12.4 | 14 | 0.86 | passed |",
            "2048 bytes per order in flight",
        ] {
            assert!(text.contains(expected), "{expected} is not in:\n{text}");
        }
    }
}
