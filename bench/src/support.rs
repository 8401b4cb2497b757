//! What every benchmark needs: where the binaries and tools are, fresh topics, filling the orders topic,
//! sampling a process's CPU and memory, and reading log timestamps.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use testkit::Proc;

/// The repository root (benchmarks run from a checkout).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ lives in the repository root")
        .to_path_buf()
}

/// A release binary of the workspace, next to this one.
pub fn binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .filter(|path| path.exists())
        .unwrap_or_else(|| repo_root().join("target/release").join(name))
}

/// The orders, deliveries and DLQ topics of one measurement, freshly created.
pub struct Topics {
    pub orders: String,
    pub deliveries: String,
    pub dlq: String,
}

impl Topics {
    pub async fn create(bootstrap: &str, orders_partitions: i32) -> Self {
        let (orders, deliveries, dlq) = testkit::create_topics(bootstrap, orders_partitions).await;
        Self {
            orders,
            deliveries,
            dlq,
        }
    }

    /// The maker's topic flags.
    pub fn maker_args(&self, bootstrap: &str, group: &str) -> Vec<String> {
        [
            "--bootstrap-servers",
            bootstrap,
            "--orders-topic",
            &self.orders,
            "--deliveries-topic",
            &self.deliveries,
            "--dlq-topic",
            &self.dlq,
            "--group",
            group,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }
}

/// Runs `program` with `args`; JSON logs on stderr are collected.
pub fn spawn(program: &str, args: &[String], env: &[(&str, &str)]) -> Proc {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::spawn(binary(program).to_str().expect("UTF-8 path"), &args, env)
}

/// Fills `topic` with `patients × orders_each` orders using the real patient, as fast as it goes.
pub async fn fill_orders(
    bootstrap: &str,
    topic: &str,
    patients: u32,
    orders_each: u32,
) -> anyhow::Result<()> {
    let args: Vec<String> = [
        "--bootstrap-servers",
        bootstrap,
        "--orders-topic",
        topic,
        "--patients",
        &patients.to_string(),
        "--orders",
        &orders_each.to_string(),
        "--order-period",
        "100ms",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut patient = spawn("patient", &args, &[("RUST_LOG", "warn")]);
    let code = patient.exit_code(Duration::from_secs(300)).await;
    if code != 0 {
        bail!("filling {topic} failed: {}", patient.stderr_text());
    }
    Ok(())
}

/// CPU time (user + system) and peak resident memory of a live process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub cpu: Duration,
    pub peak_rss_kib: u64,
}

/// Reads a process's usage; `None` once it has exited.
pub fn usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces, inside parentheses).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100)
        .max(1) as u64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let peak_rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Some(Usage {
        cpu: Duration::from_millis(ticks * 1000 / hz),
        peak_rss_kib,
    })
}

/// The test broker's process id (scripts/kafka-dev.sh keeps it), for its CPU share.
pub fn broker_pid() -> Option<u32> {
    let dir = std::env::var("KAFKA_DEV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target/kafka-dev"));
    std::fs::read_to_string(dir.join("kafka.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Now, in nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Parses the RFC 3339 UTC timestamps of the JSON logs (`2026-11-28T09:38:53.105356Z`) into Unix nanoseconds.
pub fn parse_log_timestamp(text: &str) -> Option<u64> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let mut date_parts = date.split('-').map(|p| p.parse::<i64>());
    let (year, month, day) = (
        date_parts.next()?.ok()?,
        date_parts.next()?.ok()?,
        date_parts.next()?.ok()?,
    );
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut hms_parts = hms.split(':').map(|p| p.parse::<i64>());
    let (hour, minute, second) = (
        hms_parts.next()?.ok()?,
        hms_parts.next()?.ok()?,
        hms_parts.next()?.ok()?,
    );
    let nanos: i64 = format!("{fraction:0<9}")[..9].parse().ok()?;
    // Days from civil (proleptic Gregorian), Howard Hinnant's algorithm.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    u64::try_from(seconds * 1_000_000_000 + nanos).ok()
}

/// The median of some durations.
pub fn median(values: &mut [Duration]) -> Duration {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// Runs a Kafka tool class with the test broker's classpath; returns its stdout.
pub async fn kafka_tool(args: &[String]) -> anyhow::Result<String> {
    let output = tokio::process::Command::new(repo_root().join("scripts/kafka-dev.sh"))
        .arg("tool")
        .args(args)
        .output()
        .await
        .context("running scripts/kafka-dev.sh tool")?;
    if !output.status.success() {
        bail!(
            "{} failed: {}",
            args.first().map_or("tool", String::as_str),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Owned arguments for a command.
pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_timestamps_parse_to_unix_nanoseconds() {
        assert_eq!(
            parse_log_timestamp("1970-01-01T00:00:01.5Z"),
            Some(1_500_000_000)
        );
        assert_eq!(
            parse_log_timestamp("2026-11-28T09:38:53.105356Z"),
            Some(1_795_858_733_105_356_000)
        );
        assert_eq!(parse_log_timestamp("not a time"), None);
    }

    #[test]
    fn the_median_is_the_middle_value() {
        let mut values = [3, 1, 2].map(Duration::from_millis);
        assert_eq!(median(&mut values), Duration::from_millis(2));
    }
}
