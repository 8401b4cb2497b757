//! Where orders are made: each on a task of its own, reporting back over one channel to the loop.

use std::future::Future;

use tokio::sync::mpsc;
use tokio::time::Duration;
use tokio_util::task::TaskTracker;

use crate::completion::Completion;

/// The tasks making orders (and writing dead letters), and the channel their completions come back on.
pub(super) struct Workshop {
    /// At most one completion per record in flight, so this channel is bounded by `max_in_flight_orders` by
    /// construction; sending never waits, whatever thread a completion comes from.
    sender: mpsc::UnboundedSender<Completion>,
    receiver: mpsc::UnboundedReceiver<Completion>,
    tasks: TaskTracker,
}

impl Workshop {
    pub fn new() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self {
            sender,
            receiver,
            tasks: TaskTracker::new(),
        }
    }

    /// Runs `work` on a task of its own; what it completes comes back through [`next`](Self::next), and nothing
    /// does if it ends with none (cancelled).
    pub fn spawn(&self, work: impl Future<Output = Option<Completion>> + Send + 'static) {
        let sender = self.sender.clone();
        self.tasks.spawn(async move {
            if let Some(completion) = work.await {
                // The loop has gone only when the maker is exiting: nothing is left to report to.
                let _ = sender.send(completion);
            }
        });
    }

    /// The next completion. Never `None` while the workshop lives: it holds a sender itself.
    pub async fn next(&mut self) -> Option<Completion> {
        self.receiver.recv().await
    }

    /// Takes no more work and waits up to `grace` for the tasks running; returns how many are still running then.
    pub async fn close(&self, grace: Duration) -> usize {
        self.tasks.close();
        match tokio::time::timeout(grace, self.tasks.wait()).await {
            Ok(()) => 0,
            Err(_) => self.tasks.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::completion::Outcome;

    fn completion(offset: i64) -> Completion {
        Completion {
            partition: 0,
            epoch: 0,
            offset,
            outcome: Outcome::Failed(crate::error::KafkaFailure::Refused("test".to_owned())),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn completions_come_back_and_cancelled_work_reports_nothing() {
        let mut workshop = Workshop::new();
        workshop.spawn(async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Some(completion(2))
        });
        workshop.spawn(async { None });
        workshop.spawn(async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some(completion(1))
        });
        assert_eq!(workshop.next().await.map(|c| c.offset), Some(1));
        assert_eq!(workshop.next().await.map(|c| c.offset), Some(2));
        assert_eq!(workshop.close(Duration::from_secs(1)).await, 0);
        let nothing = tokio::time::timeout(Duration::from_secs(5), workshop.next()).await;
        assert!(nothing.is_err(), "the cancelled work reported something");
    }

    #[tokio::test(start_paused = true)]
    async fn closing_waits_for_the_tasks_up_to_its_grace() {
        let workshop = Workshop::new();
        workshop.spawn(async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            None
        });
        assert_eq!(workshop.close(Duration::from_secs(1)).await, 1);
    }
}
