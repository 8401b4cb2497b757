//! Rewinds after a commit that did not happen: where the partitions are read again from.

use tokio::time::{sleep, Duration};

use super::fake::{settings, Harness, Script};
use crate::broker::{resume_offset, CommitError};
use crate::worker::Settings;

#[test]
fn a_partition_resumes_at_the_group_offset_but_never_before_the_makers_own_commit() {
    assert_eq!(resume_offset(Some(7), None), Some(7));
    assert_eq!(
        resume_offset(None, None),
        None,
        "nothing committed: from the beginning"
    );
    assert_eq!(
        resume_offset(Some(9), Some(4)),
        Some(9),
        "committed further by an earlier owner"
    );
    assert_eq!(
        resume_offset(Some(2), Some(4)),
        Some(4),
        "the broker lost this maker's last commit"
    );
    assert_eq!(resume_offset(None, Some(4)), Some(4));
}

/// A broker that acknowledged a transaction and then lost its offsets (seen on a single Kafka 4.3 node stopped
/// right after a commit: the group's offsets read back from before it, while its tabs stayed). The next rewind
/// must not read those orders again: they were made and committed once.
#[tokio::test(start_paused = true)]
async fn a_rewind_does_not_make_again_what_the_broker_lost_the_commit_of() {
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
    harness.shutdown.cancel();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.aborts, 1);
    assert_eq!(harness.state.lock().unwrap().rewinds, 1);
    assert_eq!(
        summary.orders, 6,
        "each of the six orders committed once: the four of the lost commit were not made again"
    );
    assert_eq!(harness.committed(0), 6);
}
