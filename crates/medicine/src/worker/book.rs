//! What the maker remembers of its commits between them: the offsets its own transactions committed (to catch
//! a broker that loses one), the commits in a row that did not happen (to give up on a broker that refuses every
//! one), the dead letters that went down with a commit (written again without their payload), when the commit
//! interval runs from, when it last committed, the orders found committed after a commit in doubt, and the commit
//! under way.

use std::collections::{BTreeMap, HashMap, HashSet};

use tokio::time::Instant;

use crate::broker::{Committed, OrderKey};
use crate::completion::Outcome;

/// Consecutive commits that did not happen after which the maker gives up (exit 1) instead of redoing the same
/// work forever: something outside it is broken (a deleted topic, a full disk) and needs a person.
pub(super) const MAX_CONSECUTIVE_ABORTS: u32 = 5;

#[derive(Debug)]
pub(super) struct CommitBook {
    /// The offsets this maker's transactions committed, by partition, since the group gave it the partition.
    own: BTreeMap<i32, i64>,
    consecutive_aborts: u32,
    /// Dead letters (by source partition and offset) that went down with a commit, and why. At most the rejected
    /// records of the last commits that did not happen.
    unwritable_letters: HashMap<(i32, i64), String>,
    /// The commit interval runs from here: the end of the last commit.
    window_from: Instant,
    /// When orders were last committed.
    last_success: Option<Instant>,
    /// Orders found committed in the deliveries topic after the last rewind whose commits were in doubt: fetched
    /// again, they are not made again (see `doubt.rs`).
    delivered: HashSet<OrderKey>,
    /// The commit under way, if one is.
    pub in_flight: Option<InFlightCommit>,
}

/// A commit running beside the loop.
#[derive(Debug)]
pub(super) struct InFlightCommit {
    pub handle: tokio::task::JoinHandle<Committed>,
    pub began: Instant,
    /// Orders (and rejected records) it commits.
    pub records: usize,
    /// The offsets it commits, by partition.
    pub offsets: BTreeMap<i32, i64>,
}

/// A partition whose committed offset, read back by a rewind, is behind this maker's own last commit of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LostCommit {
    pub partition: i32,
    pub group_offset: Option<i64>,
    pub own_commit: i64,
}

impl CommitBook {
    pub fn new(now: Instant) -> Self {
        Self {
            own: BTreeMap::new(),
            consecutive_aborts: 0,
            unwritable_letters: HashMap::new(),
            window_from: now,
            last_success: None,
            delivered: HashSet::new(),
            in_flight: None,
        }
    }

    /// When orders were last committed, if ever.
    pub fn last_success(&self) -> Option<Instant> {
        self.last_success
    }

    /// What a rewind found committed of the orders in doubt (none: it could not tell, or nothing was in doubt).
    pub fn found_delivered(&mut self, orders: HashSet<OrderKey>) {
        self.delivered = orders;
    }

    /// Whether the order `key` was found committed after a rewind: then it is not made again (and, found once, is
    /// made if it comes again).
    pub fn already_delivered(&mut self, key: &OrderKey) -> bool {
        !self.delivered.is_empty() && self.delivered.remove(key)
    }

    /// When the commit interval started: the end of the last commit.
    pub fn window_from(&self) -> Instant {
        self.window_from
    }

    /// A commit ended (either way) at `now`: the interval runs from here, so that while one takes long, more
    /// orders finish and the next commit carries them all.
    pub fn ended(&mut self, now: Instant) {
        self.window_from = now;
    }

    /// A commit of `offsets` happened at `now`; returns whether it is the maker's first.
    pub fn committed(&mut self, offsets: &BTreeMap<i32, i64>, now: Instant) -> bool {
        self.consecutive_aborts = 0;
        self.own.extend(offsets);
        self.last_success.replace(now).is_none()
    }

    /// A commit did not happen: the dead letters it carried are remembered, and the count of commits in a row
    /// that did not happen, returned, says when to give up (at [`MAX_CONSECUTIVE_ABORTS`]).
    pub fn lost(&mut self, results: &[Outcome], reason: &str) -> u32 {
        for outcome in results {
            if let Outcome::Rejected { letter, .. } = outcome {
                self.unwritable_letters.insert(
                    (letter.source_partition, letter.source_offset),
                    reason.to_owned(),
                );
            }
        }
        self.consecutive_aborts += 1;
        self.consecutive_aborts
    }

    /// Why the dead letter of the record at `partition` and `offset` could not be written before, if it could
    /// not: it is written again without its payload (the letter may be what the broker refused).
    pub fn take_unwritable(&mut self, partition: i32, offset: i64) -> Option<String> {
        self.unwritable_letters.remove(&(partition, offset))
    }

    /// The partition left this maker (or came to it, maybe after another held it): its offset is the group's.
    pub fn forget(&mut self, partition: i32) {
        self.own.remove(&partition);
    }

    /// Compares the committed offsets a rewind read (`None`: nothing committed) with this maker's own last
    /// commits, and returns those behind: only the maker holding a partition commits it, so the broker lost a
    /// commit it acknowledged. What the group holds is the truth from here on.
    pub fn check_kept(&mut self, resumed: &BTreeMap<i32, Option<i64>>) -> Vec<LostCommit> {
        let mut lost = Vec::new();
        for (&partition, &group) in resumed {
            let Some(&own) = self.own.get(&partition) else {
                continue;
            };
            if group.is_none_or(|group| group < own) {
                lost.push(LostCommit {
                    partition,
                    group_offset: group,
                    own_commit: own,
                });
                match group {
                    Some(group) => self.own.insert(partition, group),
                    None => self.own.remove(&partition),
                };
            }
        }
        lost
    }
}

#[cfg(test)]
mod tests {
    use tabs::messages::{DeadLetter, Rejection};

    use super::*;

    fn rejected(partition: i32, offset: i64) -> Outcome {
        let letter = DeadLetter::new(
            "validate",
            &Rejection::Empty,
            "tabs.orders",
            partition,
            offset,
            None,
            None,
            "maker",
            0,
        );
        Outcome::Rejected {
            letter: Box::new(letter),
            key: None,
        }
    }

    #[test]
    fn a_rewind_behind_the_makers_own_commit_is_a_lost_commit_and_the_group_is_believed_after() {
        let mut book = CommitBook::new(Instant::now());
        book.committed(&BTreeMap::from([(0, 10), (1, 20), (2, 5)]), Instant::now());
        let resumed = BTreeMap::from([(0, Some(10)), (1, Some(15)), (2, None), (3, Some(1))]);
        assert_eq!(
            book.check_kept(&resumed),
            [
                LostCommit {
                    partition: 1,
                    group_offset: Some(15),
                    own_commit: 20
                },
                LostCommit {
                    partition: 2,
                    group_offset: None,
                    own_commit: 5
                },
            ]
        );
        assert_eq!(
            book.check_kept(&resumed),
            [],
            "the group's offsets are the truth after"
        );
        book.forget(0);
        assert_eq!(book.check_kept(&BTreeMap::from([(0, Some(0))])), []);
    }

    #[test]
    fn commits_in_a_row_that_did_not_happen_are_counted_until_one_does() {
        let mut book = CommitBook::new(Instant::now());
        assert_eq!(book.lost(&[], "aborted"), 1);
        assert_eq!(book.lost(&[], "aborted"), 2);
        book.committed(&BTreeMap::new(), Instant::now());
        for expected in 1..=MAX_CONSECUTIVE_ABORTS {
            assert_eq!(book.lost(&[], "fenced"), expected);
        }
    }

    #[test]
    fn the_dead_letters_of_a_lost_commit_are_written_again_once() {
        let mut book = CommitBook::new(Instant::now());
        book.lost(&[rejected(3, 7), rejected(3, 8)], "record too large");
        assert_eq!(
            book.take_unwritable(3, 7).as_deref(),
            Some("record too large")
        );
        assert_eq!(book.take_unwritable(3, 7), None);
        assert_eq!(book.take_unwritable(4, 8), None);
        assert_eq!(
            book.take_unwritable(3, 8).as_deref(),
            Some("record too large")
        );
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;

    #[test]
    fn only_the_first_commit_is_the_first_and_the_last_is_remembered() {
        let start = Instant::now();
        let mut book = CommitBook::new(start);
        assert_eq!(book.last_success(), None);
        assert!(book.committed(&BTreeMap::from([(0, 1)]), start));
        let later = start + tokio::time::Duration::from_secs(1);
        assert!(!book.committed(&BTreeMap::from([(0, 2)]), later));
        assert_eq!(book.last_success(), Some(later));
    }

    #[test]
    fn an_order_found_delivered_is_skipped_once() {
        let mut book = CommitBook::new(Instant::now());
        let key: OrderKey = ("p".to_owned(), 7);
        assert!(!book.already_delivered(&key));
        book.found_delivered(HashSet::from([key.clone()]));
        assert!(book.already_delivered(&key));
        assert!(
            !book.already_delivered(&key),
            "a second copy of the order is made"
        );
        book.found_delivered(HashSet::from([key.clone()]));
        book.found_delivered(HashSet::new());
        assert!(
            !book.already_delivered(&key),
            "the next rewind's finding replaces the last"
        );
    }
}
