//! The local mode end to end: a scenario on the real test broker (exactly-once, scaling up and down, report
//! files), a smoke run on the embedded broker, Ctrl-C, and no child outliving the run whatever happens.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use testkit::nix::sys::signal::Signal;
use testkit::serde_json::Value;
use testkit::{require_broker, unique, Proc};

const LOCAL: &str = env!("CARGO_BIN_EXE_medicine-pubsub-local");

fn report_dir() -> PathBuf {
    std::env::temp_dir().join(unique("medicine-pubsub-local"))
}

/// Processes whose command line names this run (its children carry `local-<run id>-…` ids).
fn processes_of(run_id: &str) -> Vec<String> {
    let marker = format!("local-{run_id}-");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(&marker))
        .collect()
}

async fn wait_until_no_process_of(run_id: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !processes_of(run_id).is_empty() {
        assert!(
            Instant::now() < deadline,
            "children still running: {:?}",
            processes_of(run_id)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn read_report(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("report.json")).expect("report.json written");
    testkit::serde_json::from_str(&text).expect("report.json is JSON")
}

fn run_id(local: &Proc) -> String {
    local.log_events("local run starting")[0]["run_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_scenario_on_the_test_broker_scales_out_and_back_to_zero_exactly_once() {
    let bootstrap = require_broker!();
    let dir = report_dir();
    let name = unique("local");
    let (orders, deliveries, dlq, group) = (
        format!("{name}.orders"),
        format!("{name}.deliveries"),
        format!("{name}.dlq"),
        format!("{name}.makers"),
    );
    let mut local = Proc::spawn_with_stdout(
        LOCAL,
        &[
            "--bootstrap-servers",
            &bootstrap,
            "--orders-topic",
            &orders,
            "--deliveries-topic",
            &deliveries,
            "--dlq-topic",
            &dlq,
            "--group",
            &group,
            "--patients",
            "2,30,0",
            "--step",
            "4s",
            "--order-period",
            "200ms",
            "--tab-making-time",
            "300ms",
            "--max-in-flight-orders",
            "6",
            "--lag-threshold",
            "6",
            "--max-makers",
            "4",
            "--polling-interval",
            "1s",
            "--idle-exit-after",
            "2s",
            "--view",
            "plain",
            "--report-dir",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    // Every child serves its metrics on a port of its own, listed for Prometheus' file discovery.
    let targets = dir.join("prometheus-targets.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    let (patient_metrics, maker_metrics) = loop {
        let listed: Vec<Value> = std::fs::read_to_string(&targets)
            .ok()
            .and_then(|t| testkit::serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let scrape = |program: &str| {
            listed
                .iter()
                .filter(|t| t["labels"]["program"] == program)
                .find_map(|t| testkit::http_get(t["targets"][0].as_str()?, "/metrics"))
        };
        if let (Some(patient), Some(maker)) = (scrape("patient"), scrape("medicine")) {
            break (patient, maker);
        }
        assert!(
            Instant::now() < deadline,
            "no patient and maker metrics listed in {}: {listed:?}",
            targets.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        patient_metrics.contains("patient_orders_acknowledged"),
        "{patient_metrics}"
    );
    assert!(
        maker_metrics.contains("medicine_orders_done"),
        "{maker_metrics}"
    );
    // What the dashboard and the alert rules make of these: tests/monitoring.rs, with a real Prometheus.
    let code = local.exit_code(Duration::from_secs(180)).await;
    assert_eq!(
        code,
        0,
        "stdout:\n{}\nstderr:\n{}",
        local.stdout_text(),
        local.stderr_text()
    );

    let report = read_report(&dir);
    assert_eq!(report["run"]["guarantee"], "exactly-once");
    let children = report["children"].as_array().unwrap();
    assert!(
        children.iter().all(|c| c["metrics_addr"].is_string()),
        "{children:?}"
    );
    // The page: one row per step of 2 -> 30 -> 0, the chart inline, the page named in the summary.
    let page = std::fs::read_to_string(dir.join("report.html")).expect("report.html written");
    assert!(page.contains("<svg"), "the chart is in the page");
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(
        steps
            .iter()
            .map(|s| s["patients"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [2, 30, 0],
        "{steps:?}"
    );
    assert_eq!(
        steps
            .iter()
            .map(|s| s["orders"].as_u64().unwrap())
            .sum::<u64>(),
        report["audit"]["orders"].as_u64().unwrap(),
        "every order belongs to its step: {steps:?}"
    );
    assert_eq!(steps[1]["missing_tabs"], 0);
    assert_eq!(report["audit_passed"], true, "{}", report["audit"]);
    let audit = &report["audit"];
    assert!(audit["orders"].as_u64().unwrap() > 100, "{audit}");
    assert_eq!(audit["missing_tabs"], 0);
    assert_eq!(audit["duplicated_tabs"], 0);
    let samples = report["samples"].as_array().unwrap();
    let makers: Vec<u64> = samples
        .iter()
        .map(|s| s["makers"].as_u64().unwrap())
        .collect();
    assert!(
        makers.iter().any(|&m| m > 1),
        "scaled out above one maker: {makers:?}"
    );
    assert!(
        makers.iter().all(|&m| m <= 4),
        "never above --max-makers: {makers:?}"
    );
    assert_eq!(makers.last(), Some(&0), "back to zero makers: {makers:?}");
    assert!(samples.iter().any(|s| s["patients"] == 30));
    // One sample per real second: a late tick gives one longer sample, never a burst of samples at one time.
    let times: Vec<f64> = samples.iter().map(|s| s["t_s"].as_f64().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[1] - w[0] >= 0.5),
        "samples at {times:?}"
    );

    let svg = std::fs::read_to_string(dir.join("report.svg")).expect("report.svg written");
    let document = roxmltree::Document::parse(&svg).expect("the chart is well-formed SVG");
    assert_eq!(document.root_element().tag_name().name(), "svg");
    let stdout = local.stdout_text();
    assert!(
        stdout.contains("report.json") && stdout.contains("report.html") && stdout.contains("PASS"),
        "{stdout}"
    );
    // The run's percentiles say they include the cold start, and when the first tabs came.
    assert!(
        stdout.contains("the cold start included: first tabs at"),
        "{stdout}"
    );
    wait_until_no_process_of(&run_id(&local), Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_smoke_run_on_the_embedded_broker_delivers_every_order_at_least_once() {
    let dir = report_dir();
    let mut local = Proc::spawn_with_stdout(
        LOCAL,
        &[
            "--broker",
            "embedded",
            "--patients",
            "3",
            "--duration",
            "4s",
            "--order-period",
            "200ms",
            "--tab-making-time",
            "100ms",
            "--polling-interval",
            "1s",
            "--idle-exit-after",
            "1s",
            "--view",
            "plain",
            "--report-dir",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    let code = local.exit_code(Duration::from_secs(120)).await;
    assert_eq!(
        code,
        0,
        "stdout:\n{}\nstderr:\n{}",
        local.stdout_text(),
        local.stderr_text()
    );
    let report = read_report(&dir);
    assert!(report["run"]["guarantee"]
        .as_str()
        .unwrap()
        .starts_with("at-least-once"));
    assert!(report["run"]["broker"]
        .as_str()
        .unwrap()
        .contains("embedded"));
    assert_eq!(report["audit"]["missing_tabs"], 0);
    assert!(
        report["audit"]["orders"].as_u64().unwrap() >= 30,
        "{}",
        report["audit"]
    );
    assert!(
        local.stdout_text().contains("at-least-once"),
        "the summary says so"
    );
    wait_until_no_process_of(&run_id(&local), Duration::from_secs(5)).await;
}

/// Waits until the run has started its first maker (its log file appears), up to a minute.
async fn wait_for_first_maker(local: &Proc, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::exists(dir.join("logs/maker-1.log")).unwrap_or(false) {
        assert!(
            Instant::now() < deadline,
            "no maker started: {}",
            local.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn ctrl_c_stops_every_child_cleanly_and_still_reports() {
    let dir = report_dir();
    let mut local = Proc::spawn_with_stdout(
        LOCAL,
        &[
            "--broker",
            "embedded",
            "--patients",
            "5",
            "--order-period",
            "200ms",
            "--tab-making-time",
            "100ms",
            "--polling-interval",
            "1s",
            "--view",
            "plain",
            "--report-dir",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    wait_for_first_maker(&local, &dir).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let run = run_id(&local);
    assert!(!processes_of(&run).is_empty(), "children run before Ctrl-C");

    local.signal(Signal::SIGINT);
    let code = local.exit_code(Duration::from_secs(90)).await;
    assert_eq!(
        code,
        0,
        "stdout:\n{}\nstderr:\n{}",
        local.stdout_text(),
        local.stderr_text()
    );
    assert!(dir.join("report.svg").exists());
    assert_eq!(
        read_report(&dir)["audit"]["missing_tabs"],
        0,
        "what was ordered was made"
    );
    wait_until_no_process_of(&run, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn children_stop_by_themselves_when_the_local_mode_is_killed() {
    let dir = report_dir();
    let mut local = Proc::spawn_with_stdout(
        LOCAL,
        &[
            "--broker",
            "embedded",
            "--patients",
            "3",
            "--tab-making-time",
            "100ms",
            "--polling-interval",
            "1s",
            "--view",
            "plain",
            "--report-dir",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    wait_for_first_maker(&local, &dir).await;
    let run = run_id(&local);
    assert!(!processes_of(&run).is_empty());
    local.signal(Signal::SIGKILL);
    local
        .wait_timeout(Duration::from_secs(5))
        .await
        .expect("killed");
    // Orphaned, each child notices within a quarter second and stops (a maker drains first).
    wait_until_no_process_of(&run, Duration::from_secs(40)).await;
}

#[tokio::test]
async fn bad_flags_exit_2_with_one_line() {
    for (args, needle) in [
        (&["--patients", "many"][..], "--patients"),
        (
            &["--guarantee", "exactly-once", "--broker", "embedded"][..],
            "--broker kafka",
        ),
        (&["--step", "0s"][..], "--step"),
    ] {
        let mut local = Proc::spawn(LOCAL, args, &[]);
        assert_eq!(
            local.exit_code(Duration::from_secs(10)).await,
            2,
            "{args:?}"
        );
        let lines = local.stderr_lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains(needle), "{lines:?}");
    }
}

/// A run on the test broker with the default topic and group names.
fn default_named_run(bootstrap: &str, dir: &Path, extra: &[&str]) -> Proc {
    let mut args = vec![
        "--bootstrap-servers",
        bootstrap,
        "--order-period",
        "200ms",
        "--polling-interval",
        "1s",
        "--idle-exit-after",
        "2s",
        "--view",
        "plain",
        "--report-dir",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Proc::spawn_with_stdout(LOCAL, &args, &[])
}

#[tokio::test]
async fn a_run_is_not_judged_on_orders_another_run_left_behind() {
    // A run killed while its makers are behind leaves orders in its topics; the next run on the same broker,
    // with the same default names, must not make them nor count them: each run owns its topics and group.
    let bootstrap = require_broker!();
    let (first_dir, second_dir) = (report_dir(), report_dir());
    let mut first = default_named_run(
        &bootstrap,
        &first_dir,
        &[
            "--patients",
            "30",
            "--tab-making-time",
            "2s",
            "--max-makers",
            "1",
        ],
    );
    assert!(
        first
            .wait_for_log("local run starting", Duration::from_secs(60))
            .await,
        "{}",
        first.stderr_text()
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    first.signal(Signal::SIGKILL);
    first.wait_timeout(Duration::from_secs(10)).await;
    wait_until_no_process_of(&run_id(&first), Duration::from_secs(10)).await;

    let mut second = default_named_run(
        &bootstrap,
        &second_dir,
        &[
            "--patients",
            "3",
            "--duration",
            "5s",
            "--tab-making-time",
            "200ms",
        ],
    );
    let code = second.exit_code(Duration::from_secs(180)).await;
    assert_eq!(
        code,
        0,
        "stdout:\n{}\nstderr:\n{}",
        second.stdout_text(),
        second.stderr_text()
    );
    let report = read_report(&second_dir);
    assert_eq!(report["audit_passed"], true, "{}", report["audit"]);
    assert_eq!(
        report["audit"]["unknown_order_tabs"], 0,
        "{}",
        report["audit"]
    );
    let named = report["run"]["topics"].as_str().unwrap();
    assert!(
        named.contains(&format!("tabs.orders.{}", run_id(&second))),
        "{named}"
    );
    assert!(
        second.stdout_text().contains(named),
        "the summary names them"
    );
}

#[tokio::test]
async fn an_unreachable_broker_is_one_line_with_the_address_and_what_to_do() {
    let mut local = Proc::spawn_with_stdout(
        LOCAL,
        &["--bootstrap-servers", "127.0.0.1:1", "--view", "plain"],
        &[],
    );
    let code = local.exit_code(Duration::from_secs(30)).await;
    assert_ne!(code, 0);
    let failure = local.log_events("local run failed");
    assert_eq!(failure.len(), 1, "{}", local.stderr_text());
    let error = failure[0]["error"].as_str().unwrap();
    assert!(
        error.contains("127.0.0.1:1") && error.contains("--bootstrap-servers"),
        "{error}"
    );
}

/// A small run on the embedded broker (5 patients, 100 ms making time) as the controlling process of a new
/// pseudo-terminal (`setsid --ctty`), with `extra` flags; returns it and the terminal's side, which only the
/// caller holds (the run must not inherit it: it would keep the terminal open).
fn on_a_terminal(
    extra: &[&str],
    dir: &Path,
    size: Option<testkit::nix::pty::Winsize>,
) -> (std::process::Child, std::os::fd::OwnedFd) {
    let pty = testkit::nix::pty::openpty(size.as_ref(), None).expect("a pseudo-terminal");
    testkit::nix::fcntl::fcntl(
        &pty.master,
        testkit::nix::fcntl::FcntlArg::F_SETFD(testkit::nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .unwrap();
    let local = std::process::Command::new("setsid")
        .arg("--ctty")
        .arg(LOCAL)
        .args([
            "--broker",
            "embedded",
            "--patients",
            "5",
            "--order-period",
            "200ms",
            "--tab-making-time",
            "100ms",
            "--polling-interval",
            "1s",
            "--report-dir",
            dir.to_str().unwrap(),
        ])
        .args(extra)
        .env("MEDECINEPUBSUB_LOG_FORMAT", "json")
        .stdin(std::process::Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(std::process::Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(std::process::Stdio::from(pty.slave))
        .spawn()
        .expect("setsid runs the local mode");
    (local, pty.master)
}

#[tokio::test]
async fn closing_the_terminal_ends_the_run_as_ctrl_c_does() {
    // The run is the controlling process of a pseudo-terminal (`setsid --ctty`); dropping the terminal's master
    // side is the terminal window closing: the kernel sends SIGHUP. The run must still stop its children, audit
    // and write its report, and writing to the vanished terminal must not fail it.
    let dir = report_dir();
    let (mut local, master) = on_a_terminal(&["--view", "plain"], &dir, None);
    // Running, with makers (they log to files in the report directory).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.join("logs").read_dir().is_ok_and(|mut d| {
        d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().contains("maker")))
    }) {
        assert!(Instant::now() < deadline, "no maker started");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    drop(master);
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = local.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running after the terminal closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
    let report = read_report(&dir);
    assert_eq!(
        report["audit"]["missing_tabs"], 0,
        "what was ordered was made"
    );
    let run = report["run"]["run_id"].as_str().unwrap().to_owned();
    wait_until_no_process_of(&run, Duration::from_secs(5)).await;
}

/// Whether the local mode can start Kafka here; under CI it must (`make_test.sh` installs both).
fn has_java_and_maven() -> bool {
    let has = |program: &str| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if has("java") && has("mvn") {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must have Java and Maven (make_test.sh installs them)"
    );
    eprintln!("skipped: Java or Maven missing");
    false
}

#[tokio::test]
async fn the_first_command_runs_exactly_once_on_a_kafka_of_its_own() {
    // What a newcomer types (`--patients 3`), bounded in time: where Java and Maven are, the run starts Apache
    // Kafka for itself, makes every order exactly once, and stops the broker at the end.
    if !has_java_and_maven() {
        return;
    }
    let dir = report_dir();
    let mut local = Proc::spawn_with_stdout(
        LOCAL,
        &[
            "--patients",
            "3",
            "--duration",
            "4s",
            "--order-period",
            "200ms",
            "--tab-making-time",
            "200ms",
            "--polling-interval",
            "1s",
            "--idle-exit-after",
            "2s",
            "--view",
            "plain",
            "--report-dir",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    let code = local.exit_code(Duration::from_secs(240)).await;
    assert_eq!(
        code,
        0,
        "stdout:\n{}\nstderr:\n{}",
        local.stdout_text(),
        local.stderr_text()
    );
    let report = read_report(&dir);
    assert_eq!(report["run"]["guarantee"], "exactly-once");
    assert!(
        report["run"]["broker"]
            .as_str()
            .unwrap()
            .contains("Apache Kafka"),
        "{}",
        report["run"]
    );
    assert_eq!(report["audit_passed"], true, "{}", report["audit"]);
    assert_eq!(report["audit"]["duplicated_tabs"], 0);
    let ready = local.log_events("Kafka ready");
    assert_eq!(ready.len(), 1, "{}", local.stderr_text());
    // Stopped with the run: its pid file is gone or names no live process.
    let pid = std::fs::read_to_string(dir.join("kafka/kafka.pid")).unwrap_or_default();
    assert!(
        pid.trim().is_empty() || !Path::new(&format!("/proc/{}", pid.trim())).exists(),
        "the run's Kafka (pid {pid}) outlived it"
    );
}

#[tokio::test]
async fn the_live_view_uses_the_alternate_screen_and_leaves_the_summary_behind() {
    // On a real pseudo-terminal: the panel is drawn on the alternate screen with nothing else on it (the local
    // mode's log lines go to logs/local.log), and Ctrl-C typed on the terminal ends the run with the screen
    // restored and the summary printed after it, where the scrollback keeps it.
    let dir = report_dir();
    // A terminal of 100 columns by 30 rows.
    let size = testkit::nix::pty::Winsize {
        ws_row: 30,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let (mut local, master) = on_a_terminal(&[], &dir, Some(size));
    let master = std::fs::File::from(master);
    let mut writer = master.try_clone().unwrap();
    let screen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let reader = {
        let screen = std::sync::Arc::clone(&screen);
        std::thread::spawn(move || {
            let mut master = master;
            let mut buffer = [0u8; 4096];
            // Ends with EIO once the run has closed its side.
            while let Ok(n @ 1..) = std::io::Read::read(&mut master, &mut buffer) {
                screen.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        })
    };
    // What a 100 x 30 terminal shows of the bytes so far.
    let shown = |bytes: &[u8]| {
        let mut terminal = vt100::Parser::new(30, 100, 1000);
        terminal.process(bytes);
        (
            terminal.screen().alternate_screen(),
            terminal.screen().contents(),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (alternate, contents) = shown(&screen.lock().unwrap());
        if alternate && contents.contains("1 running") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no maker on the panel (alternate screen: {alternate}):\n{contents}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, panel) = shown(&screen.lock().unwrap());
    for needle in [
        "medicine-pubsub local",
        "KEDA metric",
        "steady",
        "overhead",
        "lag (max",
        "one patient count until Ctrl-C",
    ] {
        assert!(panel.contains(needle), "{needle:?} on the panel:\n{panel}");
    }
    std::io::Write::write_all(&mut writer, b"\x03").unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = local.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running after Ctrl-C:\n{}",
            shown(&screen.lock().unwrap()).1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(writer);
    reader.join().unwrap();
    let output = screen.lock().unwrap().clone();
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", shown(&output).1);

    let find = |needle: &[u8]| output.windows(needle.len()).position(|w| w == needle);
    let enter = find(b"\x1b[?1049h").expect("the alternate screen is entered");
    let leave = find(b"\x1b[?1049l").expect("and left");
    assert!(enter < leave);
    // The panel is drawn by moving the cursor; a line that ends in a newline was written past it.
    assert!(
        !output[enter..leave].contains(&b'\n'),
        "a line was written under the panel:\n{}",
        String::from_utf8_lossy(&output[enter..leave])
    );
    let (alternate, after) = shown(&output);
    assert!(!alternate, "the screen is restored");
    assert!(
        after.contains("audit") && after.contains("PASS") && after.contains("report.html"),
        "the summary is on the restored screen:\n{after}"
    );
    let log = std::fs::read_to_string(dir.join("logs/local.log")).expect("logs/local.log");
    assert!(
        log.contains("stopping"),
        "the local mode's log lines went to its file:\n{log}"
    );
    let run = read_report(&dir)["run"]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until_no_process_of(&run, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_killed_run_leaves_no_kafka_behind() {
    // SIGKILL gives the local mode no chance to stop the broker it started: the broker's watcher does.
    if !has_java_and_maven() {
        return;
    }
    let dir = report_dir();
    let mut local = Proc::spawn_with_stdout(
        LOCAL,
        &[
            "--broker",
            "kafka",
            "--patients",
            "1",
            "--view",
            "plain",
            "--report-dir",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        local
            .wait_for_log("Kafka ready", Duration::from_secs(240))
            .await,
        "{}",
        local.stderr_text()
    );
    let pid = std::fs::read_to_string(dir.join("kafka/kafka.pid")).expect("the broker's pid");
    let broker = format!("/proc/{}", pid.trim());
    assert!(Path::new(&broker).exists(), "the broker runs");
    local.signal(Signal::SIGKILL);
    local.wait_timeout(Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    while Path::new(&broker).exists() {
        assert!(
            Instant::now() < deadline,
            "the run's Kafka (pid {}) outlived the killed run",
            pid.trim()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
