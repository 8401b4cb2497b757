//! Partitions the group takes from the loop: handed over once what will be made in time is committed, lost ones
//! dropped, and their pause state cleared.

use tokio::time::{sleep, Duration, Instant};

use super::fake::{settings, Harness, Script, State};
use crate::error::KafkaFailure;
use crate::worker::Settings;

/// When the loop released revoked partitions, once and only once.
fn released_once(state: &State) -> Instant {
    let [(released_at, _)] = state.releases.as_slice() else {
        panic!("released once: {:?}", state.releases);
    };
    *released_at
}

/// Partition 0 of two (3 orders each, made in 2 s) is lost `after` the start, as `loss` tells the fake: none of
/// its orders may be committed by this maker, and once it comes back they are made, each committed once.
async fn lost_partition_is_left_to_its_next_owner(after: Duration, loss: Script) {
    let mut harness = Harness::new(
        Settings {
            idle_exit_after: Duration::from_secs(30),
            ..settings()
        },
        &[0, 1],
        3,
    );
    let run = harness.start();
    sleep(after).await;
    harness.script.send(loss).unwrap();
    sleep(Duration::from_secs(3)).await;
    assert_eq!(
        harness.state.lock().unwrap().zombie_commits,
        0,
        "a commit carried offsets of a partition the client had lost"
    );
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
async fn a_partition_lost_mid_order_drops_its_work_and_is_made_after_it_comes_back() {
    lost_partition_is_left_to_its_next_owner(Duration::from_millis(500), Script::Lose(vec![0]))
        .await;
}

/// The client lost a partition and let it go (librdkafka then rejoins, and the coordinator takes this member's
/// offsets of any partition at its new epoch), while the loop's commit of that partition's finished orders came
/// due before it took the event: the commit must leave the partition out, or its next owner makes them again.
/// The orders finish at 2 s and are due to commit 20 ms later; the loss is delivered just before they finish and
/// reaches the loop's `next()` only after the commit was due.
#[tokio::test(start_paused = true)]
async fn a_partition_the_client_lost_is_not_committed_even_before_the_loop_takes_the_event() {
    lost_partition_is_left_to_its_next_owner(
        Duration::from_millis(1_990),
        Script::LoseSeenLate(vec![0], Duration::from_millis(500)),
    )
    .await;
}

/// The end-to-end test's duplicate: a heartbeat timed out under load, the client gave its session up and lost a
/// partition while a commit carrying it was on its way; the coordinator still counted the member in, took the
/// commit, and gave the partition back to the rejoined client at once. Let go before that commit arrived, the
/// partition was read again from the offset before it and its orders made twice. It is let go after it.
#[tokio::test(start_paused = true)]
async fn a_partition_lost_while_a_commit_carries_it_is_let_go_only_after_that_commit() {
    let mut harness = Harness::new(
        Settings {
            idle_exit_after: Duration::from_secs(30),
            ..settings()
        },
        &[0, 1],
        3,
    );
    harness.state.lock().unwrap().commit_delay = Duration::from_millis(500);
    let run = harness.start();
    // The orders finish at 2 s; their commit begins 20 ms later and reaches the coordinator at 2.52 s.
    sleep(Duration::from_millis(2_100)).await;
    harness.script.send(Script::LoseAndRejoin(vec![0])).unwrap();
    let summary = run.await.unwrap().unwrap();
    let state = harness.state.lock().unwrap();
    let [(let_go_at, partitions)] = state.lost_releases.as_slice() else {
        panic!("let go once: {:?}", state.lost_releases);
    };
    assert_eq!(partitions, &[0]);
    assert!(
        state
            .commits_applied
            .first()
            .is_some_and(|at| at <= let_go_at),
        "let go at {let_go_at:?}, before the commit carrying it arrived ({:?})",
        state.commits_applied
    );
    drop(state);
    assert!(
        harness.delivered_once_each(),
        "an order of the lost partition was made twice"
    );
    assert!(harness.committed_once_each());
    assert_eq!(harness.committed(0), 3);
    assert_eq!(summary.orders, 6);
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
        let released_at = released_once(&state);
        assert_eq!(state.releases[0].1, vec![0]);
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
        let released_at = released_once(&state);
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
        let released_at = released_once(&state);
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
        .push_back(Err(KafkaFailure::Aborted("injected".into())));
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
