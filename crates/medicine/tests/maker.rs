//! The `medicine` maker against a real Kafka broker: exactly-once delivery, bad input, crashes, drain,
//! parallelism, bounds and exits.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use tabs::messages::{to_json, DeadLetter, Order, Tab};
use tabs::time::now_ns;
use testkit::nix::sys::signal::Signal;
use testkit::{create_topics, http_get, metric, produce, read_topic, require_broker, unique, Proc};

const MEDICINE: &str = env!("CARGO_BIN_EXE_medicine");

/// A fresh set of topics and a fresh group on the test broker.
struct Setup {
    bootstrap: String,
    orders: String,
    deliveries: String,
    dlq: String,
    group: String,
}

impl Setup {
    async fn new(bootstrap: String, partitions: i32) -> Self {
        let (orders, deliveries, dlq) = create_topics(&bootstrap, partitions).await;
        Self {
            bootstrap,
            orders,
            deliveries,
            dlq,
            group: unique("makers"),
        }
    }

    fn maker(&self, extra: &[&str]) -> Proc {
        let mut args = vec![
            "--bootstrap-servers",
            &self.bootstrap,
            "--orders-topic",
            &self.orders,
            "--deliveries-topic",
            &self.deliveries,
            "--dlq-topic",
            &self.dlq,
            "--group",
            &self.group,
            "--startup-timeout",
            "30s",
        ];
        args.extend_from_slice(extra);
        Proc::spawn(MEDICINE, &args, &[("RUST_LOG", "info")])
    }

    async fn produce_orders(&self, orders: &[Order]) {
        let payloads: Vec<(Vec<u8>, Vec<u8>)> = orders
            .iter()
            .map(|o| (o.patient_id.clone().into_bytes(), to_json(o)))
            .collect();
        let records: Vec<testkit::RawRecord<'_>> = payloads
            .iter()
            .map(|(k, v)| (Some(k.as_slice()), Some(v.as_slice())))
            .collect();
        produce(&self.bootstrap, &self.orders, &records).await;
    }

    /// Tabs as a read_committed reader sees them, after `expected` arrived and 2 s more for extras.
    async fn committed_tabs(&self, expected: usize) -> Vec<(String, Tab)> {
        read_topic(
            &self.bootstrap,
            &self.deliveries,
            true,
            expected,
            Duration::from_secs(2),
            Duration::from_secs(90),
        )
        .await
        .into_iter()
        .map(|r| {
            let tab: Tab =
                testkit::serde_json::from_slice(r.value.as_deref().unwrap()).expect("a tab");
            (r.key_str().to_owned(), tab)
        })
        .collect()
    }

    async fn dead_letters(&self, expected: usize) -> Vec<DeadLetter> {
        read_topic(
            &self.bootstrap,
            &self.dlq,
            true,
            expected,
            Duration::from_secs(1),
            Duration::from_secs(60),
        )
        .await
        .iter()
        .map(|r| {
            testkit::serde_json::from_slice(r.value.as_deref().unwrap()).expect("a dead letter")
        })
        .collect()
    }
}

/// `n` orders from `patients` patients with tab counts cycling through 1..=7.
fn orders(n: usize, patients: usize) -> Vec<Order> {
    let prefix = unique("patient");
    let base = now_ns();
    (0..n)
        .map(|i| Order {
            patient_id: format!("{prefix}-{}", i % patients),
            order_timestamp_ns: base + i as u64,
            tabs_count: 1 + (i % 7) as u32,
        })
        .collect()
}

fn total_tabs(orders: &[Order]) -> usize {
    orders.iter().map(|o| o.tabs_count as usize).sum()
}

/// Every tab of every order exactly once, each well formed; nothing else.
fn assert_exactly_once(tabs: &[(String, Tab)], orders: &[Order]) {
    let expected: HashMap<(String, u64), u32> = orders
        .iter()
        .map(|o| ((o.patient_id.clone(), o.order_timestamp_ns), o.tabs_count))
        .collect();
    let mut seen: BTreeMap<(String, u64, u32), usize> = BTreeMap::new();
    for (key, tab) in tabs {
        assert_eq!(key, &tab.patient_id, "a tab's key is its patient id");
        assert!(tab.pow_is_valid(), "tab_pow of {tab:?}");
        let order_tabs = expected
            .get(&(tab.patient_id.clone(), tab.order_timestamp_ns))
            .unwrap_or_else(|| panic!("tab of an unknown order: {tab:?}"));
        assert_eq!(tab.order_tabs_count, *order_tabs);
        assert!((1..=*order_tabs).contains(&tab.seq_in_order));
        assert!(tab.delivery_timestamp_ns >= tab.order_timestamp_ns);
        *seen
            .entry((
                tab.patient_id.clone(),
                tab.order_timestamp_ns,
                tab.seq_in_order,
            ))
            .or_default() += 1;
    }
    let duplicated: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(duplicated.is_empty(), "duplicated tabs: {duplicated:?}");
    assert_eq!(seen.len(), total_tabs(orders), "missing tabs");
}

/// The address the maker's metrics server bound (it is started on port 0).
async fn metrics_addr(maker: &Proc) -> String {
    assert!(
        maker
            .wait_for_log(
                "serving /metrics, /healthz and /readyz",
                Duration::from_secs(30)
            )
            .await,
        "{}",
        maker.stderr_text()
    );
    maker.log_events("serving /metrics, /healthz and /readyz")[0]["addr"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits until the maker's in-flight gauge reads `orders`, up to 30 s.
async fn wait_in_flight(maker: &Proc, addr: &str, orders: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(addr, "/metrics").and_then(|m| metric(&m, "medicine_orders_in_flight"))
        != Some(orders)
    {
        assert!(
            Instant::now() < deadline,
            "{orders} orders never in flight: {}",
            maker.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts a maker with `making_time` and `drain_timeout`, sends it SIGTERM once `orders` are in flight, and
/// returns it once it has exited 0, with the time from the signal to the exit.
async fn sigterm_when_busy(
    setup: &Setup,
    making_time: &str,
    drain_timeout: &str,
    orders: f64,
) -> (Proc, Duration) {
    let mut maker = setup.maker(&[
        "--tab-making-time",
        making_time,
        "--idle-exit-after",
        "0",
        "--drain-timeout",
        drain_timeout,
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let addr = metrics_addr(&maker).await;
    wait_in_flight(&maker, &addr, orders).await;
    let signalled = Instant::now();
    maker.signal(Signal::SIGTERM);
    assert_eq!(
        maker.exit_code(Duration::from_secs(30)).await,
        0,
        "{}",
        maker.stderr_text()
    );
    (maker, signalled.elapsed())
}

/// Samples the in-flight gauge every 20 ms until the maker exits; returns the largest value seen.
async fn peak_in_flight(maker: &mut Proc, addr: &str, timeout: Duration) -> f64 {
    let mut peak: f64 = 0.0;
    let deadline = Instant::now() + timeout;
    while maker
        .wait_timeout(Duration::from_millis(20))
        .await
        .is_none()
    {
        if let Some(value) =
            http_get(addr, "/metrics").and_then(|m| metric(&m, "medicine_orders_in_flight"))
        {
            peak = peak.max(value);
        }
        assert!(
            Instant::now() < deadline,
            "maker did not exit: {}",
            maker.stderr_text()
        );
    }
    peak
}

fn summary(maker: &Proc) -> HashMap<String, testkit::serde_json::Value> {
    let events = maker.log_events("maker stopped");
    assert_eq!(events.len(), 1, "one summary line: {}", maker.stderr_text());
    events[0].clone()
}

async fn makes_every_tab_exactly_once(protocol: &str) {
    let bootstrap = require_broker!();
    let setup = Setup::new(bootstrap, 3).await;
    let orders = orders(40, 5);
    setup.produce_orders(&orders).await;

    let mut maker = setup.maker(&[
        "--group-protocol",
        protocol,
        "--tab-making-time",
        "100ms",
        "--idle-exit-after",
        "2s",
    ]);
    assert_eq!(
        maker.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        maker.stderr_text()
    );
    let tabs = setup.committed_tabs(total_tabs(&orders)).await;
    assert_exactly_once(&tabs, &orders);
    for (_, tab) in &tabs {
        assert!(
            tab.delivery_timestamp_ns >= tab.order_timestamp_ns + 100_000_000,
            "delivered after the making time"
        );
    }
    let summary = summary(&maker);
    assert_eq!(summary["orders"].as_u64(), Some(40));
    assert_eq!(summary["tabs"].as_u64(), Some(total_tabs(&orders) as u64));
    assert_eq!(summary["reason"].as_str(), Some("idle"));
}

#[tokio::test]
async fn makes_every_tab_exactly_once_with_the_consumer_protocol() {
    makes_every_tab_exactly_once("consumer").await;
}

#[tokio::test]
async fn makes_every_tab_exactly_once_with_the_classic_protocol() {
    makes_every_tab_exactly_once("classic").await;
}

#[tokio::test]
async fn at_least_once_mode_delivers_every_tab() {
    let bootstrap = require_broker!();
    let setup = Setup::new(bootstrap, 2).await;
    let orders = orders(20, 4);
    setup.produce_orders(&orders).await;

    let mut maker = setup.maker(&[
        "--guarantee",
        "at-least-once",
        "--tab-making-time",
        "50ms",
        "--idle-exit-after",
        "2s",
    ]);
    assert_eq!(
        maker.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        maker.stderr_text()
    );
    // Without a crash, at-least-once delivers exactly once too.
    assert_exactly_once(&setup.committed_tabs(total_tabs(&orders)).await, &orders);

    // Its offsets are committed: a second maker finds nothing to do.
    let mut again = setup.maker(&["--guarantee", "at-least-once", "--idle-exit-after", "1s"]);
    assert_eq!(again.exit_code(Duration::from_secs(60)).await, 0);
    assert_eq!(summary(&again)["orders"].as_u64(), Some(0));
}

#[tokio::test]
async fn bad_input_goes_to_the_dlq_with_its_reason_and_valid_orders_around_it_are_made() {
    let bootstrap = require_broker!();
    let setup = Setup::new(bootstrap, 1).await;
    let good = orders(3, 3);
    let [first, second, third] = [&good[0], &good[1], &good[2]].map(to_json);
    let bad: Vec<(&[u8], &str)> = vec![
        (b"{not json", "not_json"),
        (b"\xff\xfe\x00binary", "not_utf8"),
        (b"", "empty_record"),
        (
            br#"{"patient_id":"p","order_timestamp_ns":1}"#,
            "missing_field",
        ),
        (
            br#"{"patient_id":"p","order_timestamp_ns":"soon","tabs_count":1}"#,
            "wrong_type",
        ),
        (
            br#"{"patient_id":"p","order_timestamp_ns":1,"tabs_count":0}"#,
            "tabs_count_out_of_range",
        ),
        (
            br#"{"patient_id":"p","order_timestamp_ns":1,"tabs_count":-4}"#,
            "tabs_count_out_of_range",
        ),
        (
            br#"{"patient_id":"p","order_timestamp_ns":1,"tabs_count":31}"#,
            "tabs_count_out_of_range",
        ),
        (
            br#"{"patient_id":"p","order_timestamp_ns":1,"tabs_count":1000000000000}"#,
            "tabs_count_out_of_range",
        ),
        (
            br#"{"patient_id":null,"order_timestamp_ns":1,"tabs_count":1}"#,
            "wrong_type",
        ),
        (
            br#"{"patient_id":"","order_timestamp_ns":1,"tabs_count":1}"#,
            "empty_patient_id",
        ),
        (br#"[1,2,3]"#, "not_an_object"),
    ];
    let mut records: Vec<testkit::RawRecord<'_>> = vec![(Some(b"k0"), Some(first.as_slice()))];
    for (i, (value, _)) in bad.iter().enumerate() {
        records.push((Some(b"bad"), Some(*value)));
        if i == 5 {
            records.push((Some(b"k1"), Some(second.as_slice())));
        }
    }
    records.push((None, None));
    records.push((Some(b"k2"), Some(third.as_slice())));
    produce(&setup.bootstrap, &setup.orders, &records).await;

    let mut maker = setup.maker(&["--tab-making-time", "0", "--idle-exit-after", "2s"]);
    assert_eq!(
        maker.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        maker.stderr_text()
    );

    assert_exactly_once(&setup.committed_tabs(total_tabs(&good)).await, &good);
    let letters = setup.dead_letters(bad.len() + 1).await;
    assert_eq!(
        letters.len(),
        bad.len() + 1,
        "one dead letter per bad record"
    );
    let mut by_offset: Vec<&DeadLetter> = letters.iter().collect();
    by_offset.sort_by_key(|l| l.source_offset);
    let mut expected_reasons: Vec<&str> = bad.iter().map(|(_, reason)| *reason).collect();
    expected_reasons.push("empty_record");
    let reasons: Vec<&str> = by_offset.iter().map(|l| l.reason.as_str()).collect();
    assert_eq!(reasons, expected_reasons);
    for letter in &letters {
        assert_eq!(letter.step, "validate");
        assert_eq!(letter.source_topic, setup.orders);
        assert!(!letter.error.is_empty());
    }
    let binary = letters.iter().find(|l| l.reason == "not_utf8").unwrap();
    assert_eq!(
        binary.payload_bytes().unwrap().as_deref(),
        Some(&b"\xff\xfe\x00binary"[..])
    );
    let not_json = letters.iter().find(|l| l.reason == "not_json").unwrap();
    assert_eq!(not_json.payload.as_deref(), Some("{not json"));
    assert_eq!(not_json.key.as_deref(), Some("bad"));
    assert_eq!(
        summary(&maker)["dead_letters"].as_u64(),
        Some(bad.len() as u64 + 1)
    );
}

#[tokio::test]
async fn hostile_records_at_the_size_limits_reach_the_dlq_and_stop_nothing() {
    // The records whose dead letters, payload and envelope, grew past what the broker accepts: binary (base64),
    // quote-heavy text (escaped), plain ASCII, at the sizes measured and above. The valid orders batched with them
    // must be made, and the maker must go on.
    let bootstrap = require_broker!();
    let setup = Setup::new(bootstrap, 1).await;
    let binary = |n: usize| -> Vec<u8> { (0..n).map(|i| (i % 200) as u8 | 0x80).collect() };
    let quotes = |n: usize| -> Vec<u8> { "\"\\".repeat(n / 2).into_bytes() };
    let hostile: Vec<(Vec<u8>, &str)> = vec![
        (binary(760_000), "not_utf8"),
        (binary(990_000), "not_utf8"),
        (quotes(510_000), "not_json"),
        (quotes(990_000), "not_json"),
        ("a".repeat(999_898).into_bytes(), "not_json"),
    ];
    let good = orders(hostile.len() + 1, 3);
    let good_json: Vec<Vec<u8>> = good.iter().map(to_json).collect();
    let mut records: Vec<testkit::RawRecord<'_>> = Vec::new();
    for (i, (value, _)) in hostile.iter().enumerate() {
        records.push((Some(b"k"), Some(good_json[i].as_slice())));
        records.push((Some(b"hostile"), Some(value.as_slice())));
    }
    records.push((Some(b"k"), Some(good_json[hostile.len()].as_slice())));
    produce(&setup.bootstrap, &setup.orders, &records).await;

    let mut maker = setup.maker(&["--tab-making-time", "0", "--idle-exit-after", "3s"]);
    assert_eq!(
        maker.exit_code(Duration::from_secs(90)).await,
        0,
        "{}",
        maker.stderr_text()
    );
    assert_exactly_once(&setup.committed_tabs(total_tabs(&good)).await, &good);
    let mut letters = setup.dead_letters(hostile.len()).await;
    letters.sort_by_key(|l| l.source_offset);
    assert_eq!(letters.len(), hostile.len());
    for (letter, (value, reason)) in letters.iter().zip(&hostile) {
        assert_eq!(letter.reason, *reason);
        assert_eq!(letter.payload_size, value.len());
        assert!(letter.payload_truncated, "{} bytes kept whole", value.len());
        let digest = {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(value))
        };
        assert_eq!(letter.payload_sha256, digest);
        let kept = letter
            .payload_bytes()
            .unwrap()
            .expect("the payload's first bytes");
        assert!(value.starts_with(&kept) && kept.len() >= 16 * 1024);
    }
    assert_eq!(
        summary(&maker)["aborts"].as_u64(),
        Some(0),
        "no transaction was refused"
    );
}

#[tokio::test]
async fn a_maker_killed_mid_run_loses_and_duplicates_nothing() {
    let bootstrap = require_broker!();
    let setup = Setup::new(bootstrap, 4).await;
    let orders = orders(300, 30);
    setup.produce_orders(&orders).await;

    // Small in-flight bound and a making time: the kill lands with orders in flight and others committed.
    let mut first = setup.maker(&[
        "--tab-making-time",
        "300ms",
        "--max-in-flight-orders",
        "16",
        "--idle-exit-after",
        "0",
    ]);
    assert!(
        first
            .wait_for_log("first orders committed", Duration::from_secs(30))
            .await,
        "{}",
        first.stderr_text()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.signal(Signal::SIGKILL);
    first
        .wait_timeout(Duration::from_secs(10))
        .await
        .expect("killed");

    // The killed member keeps its partitions until its session times out (10 s on the test broker), and an open
    // transaction of it blocks their offsets until it times out (10 s); the second maker waits that out.
    let mut second = setup.maker(&["--tab-making-time", "50ms", "--idle-exit-after", "0"]);
    assert_exactly_once(&setup.committed_tabs(total_tabs(&orders)).await, &orders);

    second.signal(Signal::SIGTERM);
    assert_eq!(
        second.exit_code(Duration::from_secs(30)).await,
        0,
        "{}",
        second.stderr_text()
    );
    let made_by_second = summary(&second)["orders"].as_u64().unwrap();
    assert!(
        made_by_second > 0 && made_by_second < 300,
        "the kill came mid-run: {made_by_second}"
    );
}

/// A maker stopped (SIGSTOP) past its session is fenced by the group coordinator; resumed, librdkafka reports its
/// assignment lost. The maker holds the lost partitions until no commit carrying them is in flight, lets them go,
/// rejoins, gets partitions again, and every order is made exactly once.
#[tokio::test]
async fn a_maker_fenced_while_stopped_lets_its_lost_partitions_go_rejoins_and_makes_every_order_once(
) {
    let bootstrap = require_broker!();
    let setup = Setup::new(bootstrap, 2).await;
    let orders = orders(200, 20);
    setup.produce_orders(&orders).await;
    let mut maker = setup.maker(&[
        "--tab-making-time",
        "200ms",
        "--max-in-flight-orders",
        "8",
        "--idle-exit-after",
        "3s",
    ]);
    assert!(
        maker
            .wait_for_log("first orders committed", Duration::from_secs(30))
            .await,
        "{}",
        maker.stderr_text()
    );
    // Past the test broker's 10 s session: the coordinator fences the member and gives its partitions to nobody.
    maker.signal(Signal::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(13)).await;
    maker.signal(Signal::SIGCONT);
    assert_eq!(
        maker.exit_code(Duration::from_secs(90)).await,
        0,
        "{}",
        maker.stderr_text()
    );
    assert_exactly_once(&setup.committed_tabs(total_tabs(&orders)).await, &orders);
    let lost = partitions_in(&maker, "partitions lost");
    let let_go = partitions_in(&maker, "lost partitions let go");
    assert!(
        !lost.is_empty(),
        "fenced, the maker lost its partitions: {}",
        maker.stderr_text()
    );
    assert_eq!(
        lost,
        let_go,
        "every lost assignment let go: {}",
        maker.stderr_text()
    );
    assert!(
        partitions_in(&maker, "partitions assigned").len() >= 2,
        "assigned again after the loss: {}",
        maker.stderr_text()
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_orders_and_exits_0() {
    let bootstrap = require_broker!();
    let setup = Setup::new(bootstrap, 1).await;
    let orders = orders(20, 20);
    setup.produce_orders(&orders).await;

    let (maker, took) = sigterm_when_busy(&setup, "2s", "10s", 20.0).await;
    assert!(
        took < Duration::from_secs(10),
        "exited within the drain timeout"
    );
    assert_eq!(
        summary(&maker)["orders"].as_u64(),
        Some(20),
        "in-flight orders were finished"
    );
    assert_eq!(summary(&maker)["reason"].as_str(), Some("signal"));
    // The last commit came after the making and before the exit (the benchmarks time the work by it).
    let last_commit = summary(&maker)["last_commit_s"].as_f64().unwrap();
    let uptime = summary(&maker)["uptime_s"].as_f64().unwrap();
    assert!(
        last_commit >= 2.0 && last_commit <= uptime,
        "last commit {last_commit} s, uptime {uptime} s"
    );
    assert_exactly_once(&setup.committed_tabs(total_tabs(&orders)).await, &orders);
}

#[tokio::test]
async fn a_drain_timeout_shorter_than_the_making_time_hands_orders_to_the_next_maker() {
    let bootstrap = require_broker!();
    let setup = Setup::new(bootstrap, 2).await;
    let orders = orders(12, 6);
    setup.produce_orders(&orders).await;

    let (first, took) = sigterm_when_busy(&setup, "5s", "500ms", 12.0).await;
    assert!(
        took < Duration::from_secs(5),
        "did not wait for the making time"
    );
    assert_eq!(summary(&first)["orders"].as_u64(), Some(0));

    let mut second = setup.maker(&["--tab-making-time", "100ms", "--idle-exit-after", "2s"]);
    assert_eq!(
        second.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        second.stderr_text()
    );
    assert_eq!(summary(&second)["orders"].as_u64(), Some(12));
    assert_exactly_once(&setup.committed_tabs(total_tabs(&orders)).await, &orders);
}

#[tokio::test]
async fn one_partition_holds_many_orders_in_flight_at_once() {
    let bootstrap = require_broker!();
    let setup = Setup::new(bootstrap, 1).await;
    let orders = orders(64, 64);
    setup.produce_orders(&orders).await;

    let making = Duration::from_secs(2);
    let mut maker = setup.maker(&[
        "--tab-making-time",
        "2s",
        "--max-in-flight-orders",
        "64",
        "--max-orders",
        "64",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let addr = metrics_addr(&maker).await;
    let peak = peak_in_flight(&mut maker, &addr, Duration::from_secs(120)).await;
    assert_eq!(
        maker.exit_code(Duration::from_secs(1)).await,
        0,
        "{}",
        maker.stderr_text()
    );
    assert_eq!(
        peak, 64.0,
        "all 64 orders of the single partition were in flight together"
    );

    let tabs = setup.committed_tabs(total_tabs(&orders)).await;
    assert_exactly_once(&tabs, &orders);
    // Made one after the other they would span 63 making times; in parallel they span well under a few.
    let first = tabs
        .iter()
        .map(|(_, t)| t.delivery_timestamp_ns)
        .min()
        .unwrap();
    let last = tabs
        .iter()
        .map(|(_, t)| t.delivery_timestamp_ns)
        .max()
        .unwrap();
    let span = Duration::from_nanos(last - first);
    assert!(span < making * 8, "deliveries spread over {span:?}");
}

#[tokio::test]
async fn orders_in_flight_never_exceed_the_bound() {
    let bootstrap = require_broker!();
    let setup = Setup::new(bootstrap, 3).await;
    let orders = orders(24, 8);
    setup.produce_orders(&orders).await;

    let mut maker = setup.maker(&[
        "--tab-making-time",
        "400ms",
        "--max-in-flight-orders",
        "4",
        "--max-orders",
        "24",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let addr = metrics_addr(&maker).await;
    let peak = peak_in_flight(&mut maker, &addr, Duration::from_secs(120)).await;
    assert_eq!(
        maker.exit_code(Duration::from_secs(1)).await,
        0,
        "{}",
        maker.stderr_text()
    );
    assert_eq!(peak, 4.0, "the bound is reached and never exceeded");
    assert_exactly_once(&setup.committed_tabs(total_tabs(&orders)).await, &orders);
}

#[tokio::test]
async fn max_orders_exits_0_and_leaves_the_rest_to_the_next_maker() {
    let bootstrap = require_broker!();
    let setup = Setup::new(bootstrap, 1).await;
    let orders = orders(30, 3);
    setup.produce_orders(&orders).await;

    let mut first = setup.maker(&[
        "--tab-making-time",
        "0",
        "--max-orders",
        "10",
        "--idle-exit-after",
        "0",
    ]);
    assert_eq!(
        first.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        first.stderr_text()
    );
    let summary_first = summary(&first);
    assert_eq!(summary_first["orders"].as_u64(), Some(10));
    assert_eq!(summary_first["reason"].as_str(), Some("max-orders"));

    let mut second = setup.maker(&["--tab-making-time", "0", "--idle-exit-after", "2s"]);
    assert_eq!(
        second.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        second.stderr_text()
    );
    assert_eq!(summary(&second)["orders"].as_u64(), Some(20));
    assert_exactly_once(&setup.committed_tabs(total_tabs(&orders)).await, &orders);
}

#[tokio::test]
async fn an_idle_maker_exits_0_after_the_idle_time() {
    let bootstrap = require_broker!();
    let setup = Setup::new(bootstrap, 2).await;
    let started = Instant::now();
    let mut maker = setup.maker(&["--idle-exit-after", "1s"]);
    assert_eq!(
        maker.exit_code(Duration::from_secs(30)).await,
        0,
        "{}",
        maker.stderr_text()
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(summary(&maker)["reason"].as_str(), Some("idle"));
}

#[tokio::test]
async fn bad_flags_exit_2_with_one_line() {
    for (args, flag) in [
        (&["--guarantee", "maybe"][..], "--guarantee"),
        (
            &["--max-in-flight-orders", "0"][..],
            "--max-in-flight-orders",
        ),
        (&["--tab-making-time", "fast"][..], "--tab-making-time"),
        (
            &["--deliveries-topic", "tabs.orders"][..],
            "--deliveries-topic",
        ),
    ] {
        let mut maker = Proc::spawn(MEDICINE, args, &[]);
        assert_eq!(
            maker.exit_code(Duration::from_secs(10)).await,
            2,
            "{args:?}"
        );
        let lines = maker.stderr_lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(flag),
            "{lines:?}"
        );
    }
}

#[tokio::test]
async fn a_maker_exits_1_without_committing_when_kafka_refuses_its_tabs_for_good() {
    let bootstrap = require_broker!();
    for guarantee in ["exactly-once", "at-least-once"] {
        let setup = Setup::new(bootstrap.clone(), 1).await;
        // A tabs topic that refuses records over 100 bytes: every tab (~260 bytes) is refused.
        let refusing = unique("refusing");
        testkit::create_topic_with_config(
            &bootstrap,
            &refusing,
            1,
            &[("max.message.bytes", "100")],
        )
        .await;
        let setup = Setup {
            deliveries: refusing,
            ..setup
        };
        let orders = orders(3, 3);
        setup.produce_orders(&orders).await;

        let mut maker = setup.maker(&[
            "--guarantee",
            guarantee,
            "--tab-making-time",
            "0",
            "--idle-exit-after",
            "0",
        ]);
        assert_eq!(
            maker.exit_code(Duration::from_secs(120)).await,
            1,
            "{guarantee}: {}",
            maker.stderr_text()
        );
        assert_eq!(
            maker.log_events("maker failed").len(),
            1,
            "{guarantee}: {}",
            maker.stderr_text()
        );

        // Nothing was committed: a maker writing to a working topic makes every order.
        let fixed = Setup {
            deliveries: unique("fixed"),
            ..setup
        };
        testkit::create_topic(&bootstrap, &fixed.deliveries, 1).await;
        let mut next = fixed.maker(&[
            "--guarantee",
            guarantee,
            "--tab-making-time",
            "0",
            "--idle-exit-after",
            "2s",
        ]);
        assert_eq!(
            next.exit_code(Duration::from_secs(60)).await,
            0,
            "{}",
            next.stderr_text()
        );
        assert_exactly_once(&fixed.committed_tabs(total_tabs(&orders)).await, &orders);
    }
}

#[tokio::test]
async fn a_misspelt_secret_property_is_refused_without_showing_its_value() {
    testkit::assert_secret_values_hidden(
        MEDICINE,
        &[
            "--bootstrap-servers",
            "127.0.0.1:1",
            "--startup-timeout",
            "2s",
        ],
        &[
            "sasl.pasword=TYPO-SeCrEt-1234",
            "sasl.oauthbearer.client.secret=OAUTH-SeCrEt-9012",
        ],
    )
    .await;
}

/// The partitions in a maker's log events with `message` (`partitions assigned`, `partitions revoked`).
fn partitions_in(maker: &Proc, message: &str) -> Vec<Vec<i32>> {
    maker
        .log_events(message)
        .iter()
        .map(|e| testkit::logged_partitions(e["partitions"].as_str().unwrap_or_default()))
        .collect()
}

/// The sequence that froze partitions: a maker saturated at its in-flight bound (fetching paused) loses a
/// partition with orders in flight to a second maker, so it resumes fetching the others; the second maker makes
/// one order and leaves, and the partition comes back. Every order on it must still be made: the pause of the
/// earlier assignment must not outlive it. Which partition moves is the group's choice, so the second maker
/// comes and goes until the first has lost one with orders in flight.
async fn a_partition_revoked_while_saturated_moves_again_when_it_comes_back(protocol: &str) {
    let bootstrap = require_broker!();
    let setup = Setup::new(bootstrap, 2).await;
    // Orders on both partitions: whichever moves has orders in flight (the bound is shared between them).
    let orders = orders(80, 8);
    setup.produce_orders(&orders).await;
    let making = ["--group-protocol", protocol, "--tab-making-time", "500ms"];
    let mut first = setup.maker(
        &[
            &making[..],
            &[
                "--max-in-flight-orders",
                "2",
                "--idle-exit-after",
                "0",
                "--metrics-addr",
                "127.0.0.1:0",
            ],
        ]
        .concat(),
    );
    let addr = metrics_addr(&first).await;
    let lost_busy_partition = |maker: &Proc| {
        maker
            .log_events("partitions revoked")
            .iter()
            .any(|e| e["in_flight"].as_u64() > Some(0))
    };
    for _ in 0..10 {
        // Saturated: fetching paused.
        wait_in_flight(&first, &addr, 2.0).await;
        // The second maker takes a partition and leaves after one order, or after 2 s with nothing to do.
        let mut second = setup.maker(
            &[
                &making[..],
                &["--max-orders", "1", "--idle-exit-after", "2s"],
            ]
            .concat(),
        );
        assert_eq!(
            second.exit_code(Duration::from_secs(60)).await,
            0,
            "{}",
            second.stderr_text()
        );
        if lost_busy_partition(&first) {
            break;
        }
    }
    assert!(
        lost_busy_partition(&first),
        "in ten rounds the first maker never lost the partition of its orders in flight: {}",
        first.stderr_text()
    );

    let tabs = setup.committed_tabs(total_tabs(&orders)).await;
    assert_exactly_once(&tabs, &orders);
    let revoked: Vec<i32> = partitions_in(&first, "partitions revoked").concat();
    assert!(
        partitions_in(&first, "partitions assigned")
            .iter()
            .skip(1)
            .flatten()
            .any(|p| revoked.contains(p)),
        "the revoked partition never came back: {}",
        first.stderr_text()
    );
    first.signal(Signal::SIGTERM);
    assert_eq!(first.exit_code(Duration::from_secs(30)).await, 0);
}

#[tokio::test]
async fn a_partition_revoked_while_saturated_moves_again_when_it_comes_back_classic() {
    a_partition_revoked_while_saturated_moves_again_when_it_comes_back("classic").await;
}

#[tokio::test]
async fn a_partition_revoked_while_saturated_moves_again_when_it_comes_back_consumer() {
    a_partition_revoked_while_saturated_moves_again_when_it_comes_back("consumer").await;
}

/// A maker joining takes partitions over without the orders the first had in flight on them being made again:
/// the first finishes and commits them, then hands the partitions over (KIP-848 revokes only those; the classic
/// protocol's eager assignors revoke them all).
async fn a_joining_maker_takes_partitions_over_without_the_orders_in_flight_made_again(
    protocol: &str,
) {
    let bootstrap = require_broker!();
    let setup = Setup::new(bootstrap, 4).await;
    let orders = orders(120, 12);
    setup.produce_orders(&orders).await;
    let maker = |extra: &[&str]| {
        let common = [
            "--group-protocol",
            protocol,
            "--tab-making-time",
            "2s",
            "--max-in-flight-orders",
            "8",
            "--handover-timeout",
            "10s",
            "--idle-exit-after",
            "3s",
        ];
        setup.maker(&[&common[..], extra].concat())
    };
    let mut first = maker(&["--metrics-addr", "127.0.0.1:0"]);
    let addr = metrics_addr(&first).await;
    // After a first round the slots go round every partition (the first round goes to those fetched first).
    assert!(
        first
            .wait_for_log("first orders committed", Duration::from_secs(30))
            .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_in_flight(&first, &addr, 8.0).await;
    let mut second = maker(&[]);
    assert!(
        first
            .wait_for_log("partitions handed over", Duration::from_secs(60))
            .await,
        "{}",
        first.stderr_text()
    );
    let revoked = &first.log_events("partitions revoked")[0];
    assert!(
        revoked["in_flight"].as_u64() > Some(0),
        "the revoked partitions had orders in flight: {revoked:?}\n{}",
        first.stderr_text()
    );
    let handed = &first.log_events("partitions handed over")[0];
    assert_eq!(
        handed["dropped"].as_u64(),
        Some(0),
        "the orders in flight were finished, not dropped: {handed:?}"
    );
    let took = handed["took_ms"].as_u64().unwrap();
    assert!(
        took < 2_000 + 3_000,
        "handed over once the orders begun before the revocation (2 s each) were committed, not at the \
         10 s bound: {took} ms"
    );

    let tabs = setup.committed_tabs(total_tabs(&orders)).await;
    assert_exactly_once(&tabs, &orders);
    for maker in [&mut first, &mut second] {
        assert_eq!(
            maker.exit_code(Duration::from_secs(60)).await,
            0,
            "{}",
            maker.stderr_text()
        );
        let stopped = &maker.log_events("maker stopped")[0];
        assert_eq!(
            stopped["dropped"].as_u64(),
            Some(0),
            "no order was begun and dropped, so none was made twice: {}",
            maker.stderr_text()
        );
    }
}

#[tokio::test]
async fn a_joining_maker_takes_partitions_over_without_the_orders_in_flight_made_again_classic() {
    a_joining_maker_takes_partitions_over_without_the_orders_in_flight_made_again("classic").await;
}

#[tokio::test]
async fn a_joining_maker_takes_partitions_over_without_the_orders_in_flight_made_again_consumer() {
    a_joining_maker_takes_partitions_over_without_the_orders_in_flight_made_again("consumer").await;
}

/// Orders completed per partition over `window`, from the group's committed offsets.
async fn completed_per_partition(setup: &Setup, window: Duration) -> Vec<i64> {
    let kafka = tabs::kafka::KafkaArgs::plaintext(&setup.bootstrap);
    let (group, topic) = (setup.group.clone(), setup.orders.clone());
    let probe = tokio::task::spawn_blocking(move || {
        audit::liveness::LagProbe::open(&kafka, &group, &topic).unwrap()
    })
    .await
    .unwrap();
    let probe = std::sync::Arc::new(probe);
    let sample = |probe: std::sync::Arc<audit::liveness::LagProbe>| async move {
        tokio::task::spawn_blocking(move || probe.sample().unwrap())
            .await
            .unwrap()
    };
    let before = sample(std::sync::Arc::clone(&probe)).await;
    tokio::time::sleep(window).await;
    let after = sample(probe).await;
    before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.committed.unwrap_or(0) - b.committed.unwrap_or(0))
        .collect()
}

#[tokio::test]
async fn a_saturated_maker_moves_every_backlogged_partition_alike() {
    // Every partition backlogged, one maker at its bound (12 in flight over 6 partitions, 1 s each: 12 orders/s):
    // over a 30 s window each partition's completed orders are within 25 % of the mean.
    let bootstrap = require_broker!();
    let setup = Setup::new(bootstrap, 6).await;
    let orders = orders(1_200, 120);
    setup.produce_orders(&orders).await;
    let mut maker = setup.maker(&[
        "--tab-making-time",
        "1s",
        "--max-in-flight-orders",
        "12",
        "--idle-exit-after",
        "0",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let addr = metrics_addr(&maker).await;
    wait_in_flight(&maker, &addr, 12.0).await;
    let made = completed_per_partition(&setup, Duration::from_secs(30)).await;
    let mean = made.iter().sum::<i64>() as f64 / made.len() as f64;
    assert!(mean > 0.0, "nothing made: {}", maker.stderr_text());
    for (partition, &n) in made.iter().enumerate() {
        assert!(
            (n as f64 - mean).abs() <= mean * 0.25,
            "partition {partition} completed {n} orders in 30 s, the mean is {mean:.1}: {made:?}"
        );
    }
    maker.signal(Signal::SIGTERM);
    assert_eq!(maker.exit_code(Duration::from_secs(30)).await, 0);
}
