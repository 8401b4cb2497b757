//! The loop, stepped against a fake broker on paused time: every test runs in milliseconds of real time.

mod fake;

use tokio::time::{sleep, Duration, Instant};

use super::Settings;
use crate::broker::CommitError;
use fake::{settings, Harness, Script};

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
        .push_back(Err(CommitError::Aborted("injected".into())));
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
            .push_back(Err(CommitError::Aborted("refused".into())));
    }
    let err = harness.start().await.unwrap().unwrap_err();
    assert!(
        format!("{err:#}").contains("5 transactions in a row did not commit"),
        "{err:#}"
    );
    assert_eq!(harness.committed(0), 0);
}

#[tokio::test(start_paused = true)]
async fn a_partition_lost_mid_order_drops_its_work_and_is_made_after_it_comes_back() {
    let mut harness = Harness::new(
        Settings {
            idle_exit_after: Duration::from_secs(30),
            ..settings()
        },
        &[0, 1],
        3,
    );
    let run = harness.start();
    sleep(Duration::from_millis(500)).await;
    harness.script.send(Script::Lose(vec![0])).unwrap();
    sleep(Duration::from_secs(5)).await;
    assert_eq!(
        harness.committed(0),
        0,
        "the lost partition's orders were not committed by this maker"
    );
    assert_eq!(harness.committed(1), 3);
    harness.script.send(Script::Assign(vec![0])).unwrap();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(harness.committed(0), 3);
    assert_eq!(summary.orders, 6);
    assert!(harness.committed_once_each());
}

#[tokio::test(start_paused = true)]
async fn a_revoked_partition_is_handed_over_once_its_orders_in_flight_are_committed() {
    let mut harness = Harness::new(
        Settings {
            handover_timeout: Duration::from_secs(3),
            idle_exit_after: Duration::from_secs(30),
            ..settings()
        },
        &[0, 1],
        3,
    );
    let run = harness.start();
    sleep(Duration::from_millis(500)).await;
    let revoked = Instant::now();
    harness.script.send(Script::Revoke(vec![0])).unwrap();
    sleep(Duration::from_secs(5)).await;
    {
        let state = harness.state.lock().unwrap();
        assert_eq!(
            state.committed.get(&0),
            Some(&3),
            "the orders in flight at the revocation were finished and committed, not left to be made again"
        );
        let [(released_at, released)] = state.releases.as_slice() else {
            panic!("released once: {:?}", state.releases);
        };
        assert_eq!(released, &vec![0]);
        let took = released_at.duration_since(revoked);
        assert!(
            took < Duration::from_secs(2),
            "handed over as soon as its orders (2 s each, started before the revocation) were committed: {took:?}"
        );
        assert_eq!(
            state.refused_commits, 0,
            "nothing committed after the release"
        );
    }
    assert_eq!(harness.committed(1), 3, "the partition kept moved on");
    harness.shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    assert_eq!((summary.orders, summary.dropped), (6, 0));
    assert!(harness.committed_once_each());
}

#[tokio::test(start_paused = true)]
async fn orders_that_cannot_be_made_within_the_hand_over_bound_are_left_to_the_next_owner_at_once()
{
    // Two orders at a time on one partition, 10 s each: the first two are committed at about 10 s, the next
    // two are half made when the partition is revoked at 15 s, 5 s from done: more than the 1 s bound.
    let mut harness = Harness::new(
        Settings {
            max_in_flight_orders: 2,
            tab_making_time: Duration::from_secs(10),
            handover_timeout: Duration::from_secs(1),
            idle_exit_after: Duration::from_secs(30),
            ..settings()
        },
        &[0],
        4,
    );
    let run = harness.start();
    sleep(Duration::from_secs(15)).await;
    assert_eq!(harness.committed(0), 2);
    let revoked = Instant::now();
    harness.script.send(Script::Revoke(vec![0])).unwrap();
    sleep(Duration::from_secs(10)).await;
    {
        let state = harness.state.lock().unwrap();
        assert_eq!(
            state.committed.get(&0),
            Some(&2),
            "the unfinished orders were not committed"
        );
        let [(released_at, _)] = state.releases.as_slice() else {
            panic!("released once: {:?}", state.releases);
        };
        assert!(
            released_at.duration_since(revoked) < Duration::from_millis(1),
            "handed over at once, without waiting for orders it would not finish in time"
        );
        assert_eq!(state.refused_commits, 0);
    }
    harness.shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    assert_eq!((summary.orders, summary.dropped), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn a_hand_over_finishes_the_orders_about_done_and_drops_those_just_begun() {
    // Orders of 2 s begun at 0 s and 1 s, the partition revoked at 1.5 s with a 1 s bound: the first is made
    // in time (at 2 s) and committed, the second (due at 3 s) is dropped at once.
    let mut harness = Harness::new(
        Settings {
            handover_timeout: Duration::from_secs(1),
            idle_exit_after: Duration::from_secs(30),
            ..settings()
        },
        &[0],
        1,
    );
    let run = harness.start();
    sleep(Duration::from_secs(1)).await;
    harness.script.send(Script::Append(0, 1)).unwrap();
    sleep(Duration::from_millis(500)).await;
    let revoked = Instant::now();
    harness.script.send(Script::Revoke(vec![0])).unwrap();
    sleep(Duration::from_secs(5)).await;
    {
        let state = harness.state.lock().unwrap();
        assert_eq!(
            state.committed.get(&0),
            Some(&1),
            "the first was made and committed"
        );
        let [(released_at, _)] = state.releases.as_slice() else {
            panic!("released once: {:?}", state.releases);
        };
        let took = released_at.duration_since(revoked);
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_millis(600),
            "handed over once the first was committed: {took:?}"
        );
    }
    harness.shutdown.cancel();
    assert_eq!(run.await.unwrap().unwrap().dropped, 1);
}

#[tokio::test(start_paused = true)]
async fn a_revoked_partition_with_nothing_in_flight_is_handed_over_at_once() {
    let mut harness = Harness::new(
        Settings {
            idle_exit_after: Duration::from_secs(30),
            ..settings()
        },
        &[0, 1],
        1,
    );
    let run = harness.start();
    sleep(Duration::from_secs(5)).await;
    let revoked = Instant::now();
    harness.script.send(Script::Revoke(vec![0])).unwrap();
    sleep(Duration::from_millis(10)).await;
    let released = harness.state.lock().unwrap().releases.clone();
    assert_eq!(released.len(), 1, "{released:?}");
    assert!(
        released[0].0.duration_since(revoked) < Duration::from_millis(1),
        "released without waiting"
    );
    harness.shutdown.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_transaction_aborted_during_a_hand_over_hands_the_partition_back_without_its_orders() {
    let mut harness = Harness::new(
        Settings {
            handover_timeout: Duration::from_secs(5),
            idle_exit_after: Duration::from_secs(30),
            ..settings()
        },
        &[0, 1],
        2,
    );
    harness
        .state
        .lock()
        .unwrap()
        .commit_outcomes
        .push_back(Err(CommitError::Aborted("injected".into())));
    let run = harness.start();
    sleep(Duration::from_millis(500)).await;
    harness.script.send(Script::Revoke(vec![0])).unwrap();
    sleep(Duration::from_secs(3)).await;
    {
        let state = harness.state.lock().unwrap();
        assert_eq!(
            state.releases.len(),
            1,
            "released after the abort, not at the bound"
        );
        assert_eq!(
            state.committed.get(&0),
            None,
            "made again by the next owner"
        );
        assert_eq!(state.refused_commits, 0);
    }
    harness.shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(harness.committed(1), 2, "the partition kept is made again");
    assert_eq!(summary.orders, 2);
}

#[tokio::test(start_paused = true)]
async fn a_partition_paused_at_the_bound_when_revoked_is_fetched_again_when_assigned_back() {
    // The sequence that froze partitions: saturated (paused), one partition revoked, the others' orders
    // finish (resumed, without it), the partition assigned back.
    let mut harness = Harness::new(
        Settings {
            max_in_flight_orders: 4,
            tab_making_time: Duration::from_secs(10),
            ..settings()
        },
        &[0, 1],
        6,
    );
    let run = harness.start();
    sleep(Duration::from_secs(1)).await;
    assert!(
        !harness.state.lock().unwrap().paused.is_empty(),
        "saturated: paused"
    );
    harness.script.send(Script::Revoke(vec![1])).unwrap();
    sleep(Duration::from_secs(12)).await;
    harness.script.send(Script::Assign(vec![1])).unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the maker finished")
        .unwrap()
        .unwrap();
    assert_eq!(
        (harness.committed(0), harness.committed(1)),
        (6, 6),
        "{summary:?}"
    );
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
        .push_back(Err(CommitError::Aborted(
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
