//! The loop, stepped against a fake broker on paused time: every test runs in milliseconds of real time.

mod assignment;
mod fake;
mod harness;
mod rewind;

use tokio::time::{sleep, Duration, Instant};

use super::Settings;
use crate::error::KafkaFailure;
use fake::{settings, Harness};

#[tokio::test(start_paused = true)]
async fn the_in_flight_bound_holds_at_every_record_and_fetching_pauses_and_resumes_around_it() {
    let mut harness = Harness::new(settings(), &[0, 1, 2], 40);
    let began = Instant::now();
    let summary = harness.start().await.unwrap().unwrap();
    assert_eq!(summary.orders, 120);
    for p in 0..3 {
        assert_eq!(harness.committed(p), 40);
    }
    assert!(harness.committed_once_each());
    let state = harness.state.lock().unwrap();
    // The loop's own assertion checks the bound at every accept; the broker sees, besides the 8 in flight, the
    // records read ahead: at most a share of the bound (8 / 3, rounded up) per partition.
    assert!(
        state.max_outstanding <= 8 + 3 * 3,
        "{} records outstanding",
        state.max_outstanding
    );
    assert!(
        state.pauses > 0 && state.resumes > 0,
        "paused at the bound and resumed below it"
    );
    // 120 orders, 8 at a time, 2 s each: 15 rounds; then the idle time.
    let took = began.elapsed();
    assert!(
        took >= Duration::from_secs(30) && took < Duration::from_secs(40),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_drain_deadline_hands_unfinished_orders_back() {
    let mut harness = Harness::new(
        Settings {
            tab_making_time: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(1),
            ..settings()
        },
        &[0],
        5,
    );
    let run = harness.start();
    sleep(Duration::from_millis(100)).await;
    let asked = Instant::now();
    harness.shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.orders, 0);
    assert_eq!(
        harness.committed(0),
        0,
        "nothing unfinished is committed: the next maker makes it"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_drain_finishes_what_is_in_flight_and_commits_it() {
    let mut harness = Harness::new(settings(), &[0], 5);
    let run = harness.start();
    sleep(Duration::from_millis(100)).await;
    harness.shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.orders, 5);
    assert_eq!(harness.committed(0), 5);
}

#[tokio::test(start_paused = true)]
async fn an_aborted_transaction_is_rewound_and_its_orders_made_again() {
    let harness_settings = settings();
    let mut harness = Harness::new(harness_settings, &[0, 1], 4);
    harness
        .state
        .lock()
        .unwrap()
        .commit_outcomes
        .push_back(Err(KafkaFailure::Aborted("injected".into())));
    let summary = harness.start().await.unwrap().unwrap();
    assert_eq!(summary.aborts, 1);
    assert_eq!(summary.orders, 8);
    assert_eq!((harness.committed(0), harness.committed(1)), (4, 4));
    assert!(harness.committed_once_each());
    assert_eq!(harness.state.lock().unwrap().rewinds, 1);
}

#[tokio::test(start_paused = true)]
async fn five_commits_in_a_row_that_fail_stop_the_maker() {
    let mut harness = Harness::new(settings(), &[0], 2);
    for _ in 0..5 {
        harness
            .state
            .lock()
            .unwrap()
            .commit_outcomes
            .push_back(Err(KafkaFailure::Aborted("refused".into())));
    }
    let err = harness.start().await.unwrap().unwrap_err();
    assert!(
        format!("{err:#}").contains("5 transactions in a row did not commit"),
        "{err:#}"
    );
    assert_eq!(harness.committed(0), 0);
}

#[tokio::test(start_paused = true)]
async fn a_maker_never_assigned_fails_at_the_join_timeout_even_without_an_idle_exit() {
    let mut harness = Harness::new(
        Settings {
            idle_exit_after: Duration::ZERO,
            startup_timeout: Duration::from_secs(7),
            ..settings()
        },
        &[],
        0,
    );
    let began = Instant::now();
    let err = harness.start().await.unwrap().unwrap_err();
    assert!(
        format!("{err:#}").contains("no assignment from group makers within 7s"),
        "{err:#}"
    );
    assert_eq!(began.elapsed(), Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn an_idle_maker_exits_after_the_idle_time() {
    let mut harness = Harness::new(settings(), &[0], 0);
    let began = Instant::now();
    let summary = harness.start().await.unwrap().unwrap();
    assert_eq!(summary.orders, 0);
    assert_eq!(began.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn max_orders_stops_after_that_many_and_commits_exactly_them() {
    let mut harness = Harness::new(
        Settings {
            max_orders: 3,
            ..settings()
        },
        &[0],
        10,
    );
    let summary = harness.start().await.unwrap().unwrap();
    assert_eq!(summary.orders, 3);
    assert_eq!(
        harness.committed(0),
        3,
        "the rest is left to the next maker"
    );
}

#[tokio::test(start_paused = true)]
async fn a_record_that_is_not_an_order_is_committed_as_a_dead_letter_between_valid_orders() {
    let mut harness = Harness::new(settings(), &[0], 2);
    harness
        .state
        .lock()
        .unwrap()
        .logs
        .get_mut(&0)
        .unwrap()
        .insert(1, b"{not json".to_vec());
    let summary = harness.start().await.unwrap().unwrap();
    assert_eq!((summary.orders, summary.dead_letters), (2, 1));
    assert_eq!(harness.committed(0), 3);
    assert_eq!(harness.stats.summary().dead_letters, 1);
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_that_went_down_with_a_transaction_is_written_again_without_its_payload() {
    // The broker refused the transaction (a dead letter too large, say): the valid orders beside the bad record
    // must not be held back by it on the next attempt.
    let mut harness = Harness::new(settings(), &[0], 2);
    harness
        .state
        .lock()
        .unwrap()
        .logs
        .get_mut(&0)
        .unwrap()
        .insert(1, b"{not json".to_vec());
    harness
        .state
        .lock()
        .unwrap()
        .commit_outcomes
        .push_back(Err(KafkaFailure::Aborted(
            "Broker: Message size too large".into(),
        )));
    let summary = harness.start().await.unwrap().unwrap();
    assert_eq!(
        (summary.orders, summary.dead_letters, summary.aborts),
        (2, 1, 1)
    );
    assert_eq!(harness.committed(0), 3);
    let state = harness.state.lock().unwrap();
    let letter = &state.letters[0];
    assert_eq!((letter.source_offset, letter.payload.as_deref()), (1, None));
    assert!(
        letter
            .payload_dropped
            .as_deref()
            .unwrap()
            .contains("Message size too large"),
        "{letter:?}"
    );
    assert_eq!(
        letter.payload_size, 9,
        "what the record held is still described"
    );
}

#[tokio::test(start_paused = true)]
async fn under_saturation_every_partition_gets_its_share_of_the_bound() {
    // Kafka hands a maker one partition's batch before the next: served as fetched, the first partition would
    // keep every slot and the others would never move.
    let mut harness = Harness::new(
        Settings {
            max_in_flight_orders: 8,
            idle_exit_after: Duration::ZERO,
            ..settings()
        },
        &[0, 1, 2, 3],
        1_000,
    );
    harness.state.lock().unwrap().greedy = true;
    let run = harness.start();
    for window in 0..3 {
        let before: Vec<i64> = (0..4).map(|p| harness.committed(p)).collect();
        sleep(Duration::from_secs(30)).await;
        let made: Vec<i64> = (0..4)
            .map(|p| harness.committed(p) - before[p as usize])
            .collect();
        let mean = made.iter().sum::<i64>() as f64 / 4.0;
        assert!(mean > 0.0, "window {window}: nothing made");
        for (p, &n) in made.iter().enumerate() {
            assert!(
                (n as f64 - mean).abs() <= mean * 0.25,
                "window {window}: partition {p} made {n} orders, the mean is {mean} ({made:?})"
            );
        }
    }
    harness.shutdown.cancel();
    run.await.unwrap().unwrap();
}

/// A maker under KEDA's rule (lag threshold 10, surplus after 3 s) that never idles out.
fn under_kedas_rule() -> Settings {
    Settings {
        idle_exit_after: Duration::ZERO,
        surplus: Some(crate::surplus::SurplusRule {
            scaler: tabs::keda::ScalerSettings {
                lag_threshold: 10,
                activation_lag_threshold: 0,
                max_replicas: 12,
                allow_idle_consumers: false,
            },
            after: Duration::from_secs(3),
        }),
        ..settings()
    }
}

/// A group of `members` makers (`m0`, `m1`, …) with `lag` orders behind on one partition, seen by member `me`.
fn group(lag: u64, members: usize, me: usize) -> crate::surplus::GroupView {
    crate::surplus::GroupView {
        lags: vec![lag, 0, 0],
        members: (0..members).map(|i| format!("m{i}")).collect(),
        me: format!("m{me}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_surplus_maker_finishes_its_orders_and_leaves_once_surplus_for_the_set_time() {
    let mut harness = Harness::new(under_kedas_rule(), &[0, 1, 2], 4);
    // Three makers, one wanted (lag 5 < 10): this one is the last by id, so it is surplus.
    harness.state.lock().unwrap().group = Some(group(5, 3, 2));
    let began = Instant::now();
    let summary = harness.start().await.unwrap().unwrap();
    let took = began.elapsed();
    assert_eq!(summary.orders, 12, "what it held is made and committed");
    for p in 0..3 {
        assert_eq!(harness.committed(p), 4);
    }
    // Surplus from the first look (at once); leaves at the first look 3 s later (looks every 600 ms).
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_maker_that_kedas_rule_counts_stays() {
    // (lag, members, me): enough lag for all three; the first by id when only one leaves; a failing look.
    for seen in [Some(group(25, 3, 2)), Some(group(15, 3, 0)), None] {
        let mut harness = Harness::new(under_kedas_rule(), &[0], 2);
        harness.state.lock().unwrap().group = seen.clone();
        let run = harness.start();
        sleep(Duration::from_secs(30)).await;
        assert!(!run.is_finished(), "left while counted: {seen:?}");
        assert!(
            harness.state.lock().unwrap().group_looks >= 10,
            "looks every 600 ms"
        );
        harness.shutdown.cancel();
        run.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_dip_shorter_than_the_set_time_does_not_make_a_maker_leave() {
    let mut harness = Harness::new(under_kedas_rule(), &[0], 2);
    let run = harness.start();
    // Surplus for 2 s, counted again for a moment, surplus for 2 s again: never 3 s in a row.
    for _ in 0..5 {
        harness.state.lock().unwrap().group = Some(group(5, 2, 1));
        sleep(Duration::from_secs(2)).await;
        harness.state.lock().unwrap().group = Some(group(15, 2, 1));
        sleep(Duration::from_millis(700)).await;
    }
    assert!(!run.is_finished(), "left on a dip");
    // Then surplus for good: it leaves.
    harness.state.lock().unwrap().group = Some(group(5, 2, 1));
    sleep(Duration::from_secs(5)).await;
    assert!(run.is_finished(), "still there after 5 s surplus");
    run.await.unwrap().unwrap();
}
