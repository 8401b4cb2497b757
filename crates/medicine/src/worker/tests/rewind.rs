//! Rewinds after a commit that did not happen, when the broker lost an earlier one.

use tokio::time::{sleep, Duration};

use super::fake::{settings, Harness, Script};
use crate::broker::CommitError;
use crate::worker::Settings;

/// A broker that acknowledged a transaction and then lost it (seen on a single Kafka 4.3 node stopped right after
/// a commit: the group's offsets read back from before it). The maker cannot know whether the broker kept the
/// transaction's tabs, so the rewind reads from the group's offset: the orders are made again, none is lost, and
/// the loss is counted.
#[tokio::test(start_paused = true)]
async fn orders_of_a_commit_the_broker_lost_are_made_again_and_the_loss_is_counted() {
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
        // The broker loses that commit; the next transaction is aborted.
        state.committed.insert(0, 0);
        state
            .commit_outcomes
            .push_back(Err(CommitError::Aborted("injected".into())));
    }
    harness.script.send(Script::Append(0, 2)).unwrap();
    sleep(Duration::from_secs(6)).await;
    assert_eq!(harness.stats.lost_commits.get(), 1);
    harness.shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(
        (summary.aborts, harness.state.lock().unwrap().rewinds),
        (1, 1)
    );
    assert_eq!(harness.committed(0), 6, "every order committed in the end");
    assert_eq!(
        summary.orders, 10,
        "the four of the lost commit were made again, not skipped"
    );
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
        .extend([Ok(()), Err(CommitError::Aborted("injected".into()))]);
    let summary = harness.start().await.unwrap().unwrap();
    assert_eq!(summary.aborts, 1);
    assert_eq!(harness.stats.lost_commits.get(), 0);
    assert_eq!(summary.orders, 16);
    assert!(harness.committed_once_each());
}
