//! Rewinds after a commit that did not happen, when the broker lost an earlier one.

use tokio::time::{sleep, Duration};

use super::fake::{settings, Harness, Script};
use crate::error::KafkaFailure;
use crate::worker::Settings;

/// A broker that acknowledged a transaction and then lost its offsets, keeping its tabs (seen on a single Kafka
/// 4.3 node stopped right after a commit: the group's offsets read back from before it). The maker reads the
/// deliveries back: the four orders are there, so they are not made again; the loss is counted.
#[tokio::test(start_paused = true)]
async fn orders_of_a_commit_whose_offsets_the_broker_lost_are_not_made_again() {
    let (summary, harness) = lose_the_first_commit(false).await;
    assert_eq!(harness.stats.lost_commits.get(), 1);
    assert_eq!(harness.state.lock().unwrap().delivered_reads, 1);
    assert_eq!(harness.committed(0), 6, "every order committed in the end");
    assert_eq!(
        summary.orders, 6,
        "the four of the lost commit not made again"
    );
    assert_eq!(harness.stats.already_delivered.get(), 4);
    assert!(harness.delivered_once_each());
}

/// The same, but the broker lost the whole transaction, tabs too: the four orders are made again, none is lost.
#[tokio::test(start_paused = true)]
async fn orders_of_a_commit_the_broker_lost_whole_are_made_again() {
    let (summary, harness) = lose_the_first_commit(true).await;
    assert_eq!(harness.stats.lost_commits.get(), 1);
    assert_eq!(harness.committed(0), 6, "every order committed in the end");
    assert_eq!(summary.orders, 10, "the four of the lost commit made again");
    assert_eq!(harness.stats.already_delivered.get(), 0);
    assert!(harness.delivered_once_each());
}

/// Four orders committed, then the broker loses the commit's offsets (and its tabs, with `tabs_too`), and the
/// next transaction (two more orders) is aborted.
async fn lose_the_first_commit(tabs_too: bool) -> (crate::stats::Summary, Harness) {
    let mut harness = Harness::new(
        Settings {
            idle_exit_after: Duration::from_secs(30),
            ..settings()
        },
        &[0],
        4,
    );
    let run = harness.start();
    // The four orders (2 s each) are made and committed in one transaction.
    sleep(Duration::from_secs(3)).await;
    assert_eq!(harness.committed(0), 4);
    {
        let mut state = harness.state.lock().unwrap();
        state.committed.insert(0, 0);
        if tabs_too {
            state.delivered.clear();
        }
        state
            .commit_outcomes
            .push_back(Err(KafkaFailure::Aborted("injected".into())));
    }
    harness.script.send(Script::Append(0, 2)).unwrap();
    sleep(Duration::from_secs(6)).await;
    harness.shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(
        (summary.aborts, harness.state.lock().unwrap().rewinds),
        (1, 1)
    );
    (summary, harness)
}

/// A transaction the brokers tore: its tabs committed, its offsets not, and the producer fenced (as a killed
/// transaction coordinator did on three nodes). The maker replaces its producer, reads the deliveries back and
/// commits those orders' offsets without making them again: no tab twice.
#[tokio::test(start_paused = true)]
async fn orders_of_a_torn_transaction_are_not_made_twice() {
    let mut harness = Harness::new(settings(), &[0, 1], 8);
    {
        let mut state = harness.state.lock().unwrap();
        state
            .commit_outcomes
            .extend([Ok(()), Err(KafkaFailure::Fatal("fenced".into()))]);
        state.torn = 1;
    }
    let summary = harness.start().await.unwrap().unwrap();
    assert_eq!(harness.state.lock().unwrap().delivered_reads, 1);
    assert!(harness.stats.already_delivered.get() > 0);
    assert_eq!(
        summary.orders + harness.stats.already_delivered.get(),
        16,
        "every order made once or found made"
    );
    assert!(harness.delivered_once_each(), "an order's tabs twice");
    assert_eq!((harness.committed(0), harness.committed(1)), (8, 8));
}

/// An abort the maker asked for settles its transaction: nothing of it can be committed, and the deliveries are
/// not read back.
#[tokio::test(start_paused = true)]
async fn an_ordinary_abort_does_not_read_the_deliveries_back() {
    let mut harness = Harness::new(settings(), &[0], 8);
    harness
        .state
        .lock()
        .unwrap()
        .commit_outcomes
        .push_back(Err(KafkaFailure::Aborted("injected".into())));
    let summary = harness.start().await.unwrap().unwrap();
    assert_eq!(summary.aborts, 1);
    assert_eq!(harness.state.lock().unwrap().delivered_reads, 0);
    assert_eq!(summary.orders, 8);
    assert!(harness.delivered_once_each());
}

/// An ordinary abort: the group's offsets are the maker's last commits, and the rewind counts no loss.
#[tokio::test(start_paused = true)]
async fn a_rewind_counts_no_loss_when_the_group_is_ahead_or_equal() {
    // Sixteen orders, eight at a time: the first wave commits, the second aborts.
    let mut harness = Harness::new(settings(), &[0, 1], 8);
    harness
        .state
        .lock()
        .unwrap()
        .commit_outcomes
        .extend([Ok(()), Err(KafkaFailure::Aborted("injected".into()))]);
    let summary = harness.start().await.unwrap().unwrap();
    assert_eq!(summary.aborts, 1);
    assert_eq!(harness.stats.lost_commits.get(), 0);
    assert_eq!(summary.orders, 16);
    assert!(harness.committed_once_each());
}

/// A commit whose Kafka client call never returns: after `commit_stuck_after` the maker gives it up, replaces the
/// producer and makes the orders again; nothing is lost, nothing made twice, and it is counted.
#[tokio::test(start_paused = true)]
async fn a_commit_stuck_in_the_client_is_given_up_and_its_orders_made_again() {
    let mut harness = Harness::new(settings(), &[0, 1], 8);
    harness.state.lock().unwrap().stuck = 1;
    let run = harness.start();
    let summary = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("the maker waited for the stuck commit for ever")
        .unwrap()
        .unwrap();
    let state = harness.state.lock().unwrap();
    assert_eq!((state.rewinds, state.replaced), (1, 1));
    assert_eq!(harness.stats.stuck_commits.get(), 1);
    drop(state);
    assert_eq!(summary.orders, 16);
    assert_eq!((harness.committed(0), harness.committed(1)), (8, 8));
    assert!(harness.delivered_once_each());
}

/// A rewind after a commit given up as stuck, longer after the last fetch than the idle time (a broker that stood
/// still, seen with one stopped by SIGSTOP): the maker has just gone back to re-read its orders, and must not take
/// the time its first fetch takes for idleness. It once exited "idle" right after such a rewind, its orders unmade.
#[tokio::test(start_paused = true)]
async fn a_rewind_restarts_the_idle_countdown() {
    let mut harness = Harness::new(
        Settings {
            idle_exit_after: Duration::from_secs(2),
            commit_stuck_after: Duration::from_secs(5),
            ..settings()
        },
        &[0],
        8,
    );
    {
        let mut state = harness.state.lock().unwrap();
        state.stuck = 1;
        state.refetch_delay = Duration::from_millis(500);
    }
    let summary = harness.start().await.unwrap().unwrap();
    assert_eq!(harness.state.lock().unwrap().rewinds, 1);
    assert_eq!(
        summary.orders, 8,
        "the orders rewound are made before the maker idles out"
    );
    assert_eq!(harness.committed(0), 8);
    assert!(harness.delivered_once_each());
}

/// Reading the committed offsets after an abort fails a few times (the group coordinator cut off): the maker
/// tries again instead of exiting, replaces its producer once, and every order is made once.
#[tokio::test(start_paused = true)]
async fn a_rewind_that_cannot_read_the_committed_offsets_yet_tries_again() {
    let mut harness = Harness::new(settings(), &[0], 8);
    {
        let mut state = harness.state.lock().unwrap();
        state
            .commit_outcomes
            .push_back(Err(KafkaFailure::Fatal("fenced".into())));
        state.failing_rewinds = 3;
    }
    let summary = harness.start().await.unwrap().unwrap();
    let state = harness.state.lock().unwrap();
    assert_eq!((state.rewinds, state.replaced), (4, 1));
    drop(state);
    assert_eq!(summary.orders, 8);
    assert_eq!(harness.committed(0), 8);
    assert!(harness.delivered_once_each());
}

/// The frozen-partition alert's clock (see `progress.rs`): a partition whose transactions abort has not moved,
/// however often it is fetched again; it moves when its offset is committed, and nothing of it waits then.
#[tokio::test(start_paused = true)]
async fn aborted_commits_leave_the_partitions_clock_running_until_one_commits() {
    let mut harness = Harness::new(
        Settings {
            idle_exit_after: Duration::from_secs(30),
            ..settings()
        },
        &[0],
        2,
    );
    {
        let mut state = harness.state.lock().unwrap();
        for _ in 0..2 {
            state
                .commit_outcomes
                .push_back(Err(KafkaFailure::Aborted("injected".into())));
        }
    }
    let waiting = |harness: &Harness| {
        harness
            .stats
            .waiting_since
            .get_or_create(&crate::progress::PartitionLabel { partition: 0 })
            .get()
    };
    let run = harness.start();
    sleep(Duration::from_secs(1)).await;
    let first = waiting(&harness);
    assert!(first > 0.0, "two orders fetched, none committed");
    // Each making takes 2 s and each of the first two commits aborts; the clock stays where it started.
    sleep(Duration::from_secs(2)).await;
    assert_eq!(harness.state.lock().unwrap().rewinds, 1);
    assert_eq!(waiting(&harness), first);
    sleep(Duration::from_secs(2)).await;
    assert_eq!(harness.state.lock().unwrap().rewinds, 2);
    assert_eq!(waiting(&harness), first);
    sleep(Duration::from_secs(3)).await;
    assert_eq!(harness.committed(0), 2);
    assert_eq!(
        waiting(&harness),
        0.0,
        "everything committed: nothing waits"
    );
    // The bound it is held to: 3 making times, the commit interval, the stuck-commit timeout and 5 s.
    let settings = settings();
    assert_eq!(
        harness.stats.liveness_bound.get(),
        (settings.tab_making_time * 3
            + settings.commit_interval
            + settings.commit_stuck_after
            + Duration::from_secs(5))
        .as_secs_f64()
    );
    harness.shutdown.cancel();
    run.await.unwrap().unwrap();
}
