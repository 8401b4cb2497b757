//! Liveness: every partition with backlog sees the group's committed offset on it advance. A [`Watch`] samples
//! the group's lag (as KEDA reads it) during a run; [`stalls`] finds the partitions that stood still with backlog
//! for longer than a bound, held or not.
//!
//! Who holds a partition is not in the broker's answer to a reader (KIP-848 groups describe their members only
//! through the admin API), so the caller says it as [`Holding`]s: the fault campaign reads them from the makers'
//! `partitions assigned` and `partitions revoked` log events.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use tabs::kafka::{KafkaArgs, TabsContext};

/// The group's lag on a topic, as KEDA's Kafka scaler reads it: log end and committed offset per partition.
pub struct LagProbe {
    /// Replaced by a fresh client after a failed sample: a client once kept failing for good after its broker
    /// stood still (SIGSTOP) and came back, while every other client of the run recovered.
    consumer: std::sync::Mutex<BaseConsumer<TabsContext>>,
    kafka: KafkaArgs,
    group: String,
    topic: String,
    partitions: Vec<i32>,
}

/// One partition at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLag {
    pub partition: i32,
    /// The log end offset.
    pub end: i64,
    /// The group's committed offset, if it has one.
    pub committed: Option<i64>,
}

impl PartitionLag {
    /// Records after the committed offset (all of them when nothing is committed yet), as KEDA counts them.
    pub fn lag(&self) -> i64 {
        (self.end - self.committed.unwrap_or(0)).max(0)
    }
}

impl LagProbe {
    /// A client that reads `group`'s committed offsets; it never joins the group. It asks for the last stable
    /// offsets and does not wait for open transactions (their offsets count once committed).
    pub fn open(kafka: &KafkaArgs, group: &str, topic: &str) -> anyhow::Result<Self> {
        let consumer = Self::client(kafka, group)?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .with_context(|| format!("reading the metadata of {topic}"))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| t.partitions().iter().map(|p| p.id()).collect())
            .unwrap_or_default();
        Ok(Self {
            consumer: std::sync::Mutex::new(consumer),
            kafka: kafka.clone(),
            group: group.to_owned(),
            topic: topic.to_owned(),
            partitions,
        })
    }

    fn client(kafka: &KafkaArgs, group: &str) -> anyhow::Result<BaseConsumer<TabsContext>> {
        tabs::kafka::create_reader(
            kafka,
            &tabs::kafka::ReaderOptions {
                group: group.to_owned(),
                ..tabs::kafka::ReaderOptions::plain(false)
            },
            TabsContext::default(),
        )
        .context("creating the lag probe")
    }

    /// Every partition's log end and committed offset. Blocking. After a failure the next sample uses a fresh
    /// client.
    pub fn sample(&self) -> anyhow::Result<Vec<PartitionLag>> {
        let mut consumer = self
            .consumer
            .lock()
            .map_err(|_| anyhow::anyhow!("the lag probe's lock is poisoned"))?;
        let sampled = self.sample_with(&consumer);
        if sampled.is_err() {
            if let Ok(fresh) = Self::client(&self.kafka, &self.group) {
                *consumer = fresh;
            }
        }
        sampled
    }

    fn sample_with(
        &self,
        consumer: &BaseConsumer<TabsContext>,
    ) -> anyhow::Result<Vec<PartitionLag>> {
        let mut list = TopicPartitionList::new();
        for &partition in &self.partitions {
            list.add_partition(&self.topic, partition);
        }
        let committed = consumer
            .committed_offsets(list, Duration::from_secs(5))
            .context("reading the group's committed offsets")?;
        self.partitions
            .iter()
            .map(|&partition| {
                let (_, end) = consumer
                    .fetch_watermarks(&self.topic, partition, Duration::from_secs(5))
                    .context("reading the log end offsets")?;
                let committed = committed
                    .find_partition(&self.topic, partition)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    });
                Ok(PartitionLag {
                    partition,
                    end,
                    committed,
                })
            })
            .collect()
    }
}

/// The lag of every partition at one moment.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: SystemTime,
    pub partitions: Vec<PartitionLag>,
}

/// Samples a group's lag on a thread of its own until finished.
pub struct Watch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<anyhow::Result<Vec<Sample>>>,
}

impl Watch {
    /// Starts sampling `group` on `topic` every `every`.
    pub fn start(
        kafka: &KafkaArgs,
        group: &str,
        topic: &str,
        every: Duration,
    ) -> anyhow::Result<Self> {
        let probe = LagProbe::open(kafka, group, topic)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("liveness-watch".to_owned())
            .spawn(move || {
                let mut samples = Vec::new();
                while !stopped.load(Ordering::Relaxed) {
                    let at = SystemTime::now();
                    // A failed sample (broker restarting) is a gap, not a verdict.
                    if let Ok(partitions) = probe.sample() {
                        samples.push(Sample { at, partitions });
                    }
                    std::thread::sleep(every);
                }
                Ok(samples)
            })
            .context("starting the liveness watch")?;
        Ok(Self { stop, thread })
    }

    /// Stops sampling and returns the samples.
    pub fn finish(self) -> anyhow::Result<Vec<Sample>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the liveness watch panicked"))?
    }
}

/// A maker's hold on a partition: from its assignment to its revocation, or to the maker's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub partition: i32,
    pub maker: String,
    pub from: SystemTime,
    /// `None`: still held when the run ended.
    pub until: Option<SystemTime>,
    /// The hold ended because the run killed its maker (SIGKILL): the partition waits for the group to notice and
    /// for the dead maker's transaction to be aborted, which the bound allows once per kill.
    pub killed: bool,
}

/// A partition that stood still with backlog for longer than the bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stall {
    pub partition: i32,
    pub maker: String,
    /// How long the committed offset stood still while the partition had backlog.
    pub lasted_ms: u64,
    /// The committed offset it stood at, and the partition's lag when the stall was last seen.
    pub committed: i64,
    pub lag: i64,
}

/// The holder of `partition` at `at`: the latest hold that covers that moment.
fn holder(holdings: &[Holding], partition: i32, at: SystemTime) -> Option<&str> {
    holdings
        .iter()
        .filter(|h| h.partition == partition && h.from <= at && h.until.is_none_or(|u| at < u))
        .max_by_key(|h| h.from)
        .map(|h| h.maker.as_str())
}

/// Who the report names for a stretch without a holder.
pub const NO_HOLDER: &str = "no maker";

/// The stalls longer than `bound`: for each partition, each stretch of samples over which it had backlog and its
/// committed offset did not move, whoever held it (a partition with backlog that no maker holds is stalled as
/// much as one whose maker is stuck; a change of holder does not restart the clock). A stall names the holder
/// when it was last seen ([`NO_HOLDER`] if none). Also returns the longest such stretch of any length, the figure
/// reports print. A kill of the holder (a fault the run injected, [`Holding::killed`]), or any kill in `kills`
/// while the partition has no holder, starts the clock again at the kill: the bound allows each kill its wait
/// once. Fails without samples: a watch that saw nothing cannot vouch
/// for anything.
pub fn stalls(
    samples: &[Sample],
    holdings: &[Holding],
    kills: &[SystemTime],
    bound: Duration,
) -> anyhow::Result<(Vec<Stall>, Duration)> {
    stalls_through(samples, holdings, kills, &[], bound)
}

/// [`stalls`] where the run also injected faults that hold up every partition, held or not (a broker node
/// stopped, killed or cut off): each starts every partition's clock again, so that each fault is allowed its
/// wait once, as a kill is.
pub fn stalls_through(
    samples: &[Sample],
    holdings: &[Holding],
    kills: &[SystemTime],
    disruptions: &[SystemTime],
    bound: Duration,
) -> anyhow::Result<(Vec<Stall>, Duration)> {
    anyhow::ensure!(
        samples.len() >= 2,
        "the liveness watch took {} samples of the group's lag: nothing to judge liveness by",
        samples.len()
    );
    // Per partition, the stretch in progress: where it began and the offset it stands at.
    let mut open: BTreeMap<i32, (SystemTime, Option<i64>)> = BTreeMap::new();
    let mut found: BTreeMap<(i32, SystemTime), Stall> = BTreeMap::new();
    let mut longest = Duration::ZERO;
    for sample in samples {
        for lag in &sample.partitions {
            if lag.lag() == 0 {
                open.remove(&lag.partition);
                continue;
            }
            // The latest kill before this sample of this partition's holder, or of any maker while the partition
            // had none (it waits for the group to settle, which a dead member holds up).
            let of_holder = holdings
                .iter()
                .filter(|h| h.partition == lag.partition && h.killed)
                .filter_map(|h| h.until);
            let while_unheld = kills
                .iter()
                .copied()
                .filter(|&k| holder(holdings, lag.partition, k).is_none());
            let killed = of_holder
                .chain(while_unheld)
                .chain(disruptions.iter().copied())
                .filter(|&until| until <= sample.at)
                .max();
            let continues = open.get(&lag.partition).is_some_and(|(began, committed)| {
                *committed == lag.committed && killed.is_none_or(|k| k <= *began)
            });
            if !continues
                && open
                    .get(&lag.partition)
                    .is_some_and(|(_, c)| *c == lag.committed)
            {
                // Standing still across a kill: a new stretch from the kill, already over the bound if the
                // watch saw nothing between the kill and this sample (it cannot sample while the group's
                // coordinator is away).
                let from = killed.unwrap_or(sample.at);
                open.insert(lag.partition, (from, lag.committed));
                let lasted = sample.at.duration_since(from).unwrap_or_default();
                longest = longest.max(lasted);
                if lasted > bound {
                    found.insert(
                        (lag.partition, from),
                        stall(holdings, lag, sample.at, lasted),
                    );
                }
                continue;
            }
            if !continues {
                open.insert(lag.partition, (sample.at, lag.committed));
                continue;
            }
            let (began, _) = &open[&lag.partition];
            let lasted = sample.at.duration_since(*began).unwrap_or_default();
            longest = longest.max(lasted);
            if lasted > bound {
                found.insert(
                    (lag.partition, *began),
                    stall(holdings, lag, sample.at, lasted),
                );
            }
        }
    }
    Ok((found.into_values().collect(), longest))
}

/// A partition that stood `lasted` up to the sample at `at`, named with its holder then.
fn stall(holdings: &[Holding], lag: &PartitionLag, at: SystemTime, lasted: Duration) -> Stall {
    Stall {
        partition: lag.partition,
        maker: holder(holdings, lag.partition, at)
            .unwrap_or(NO_HOLDER)
            .to_owned(),
        lasted_ms: lasted.as_millis() as u64,
        committed: lag.committed.unwrap_or(0),
        lag: lag.lag(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 + s)
    }

    /// One sample per second: partition 0 at the given committed offsets, its end at 100.
    fn samples(committed: &[i64]) -> Vec<Sample> {
        committed
            .iter()
            .enumerate()
            .map(|(s, &c)| Sample {
                at: at(s as u64),
                partitions: vec![PartitionLag {
                    partition: 0,
                    end: 100,
                    committed: Some(c),
                }],
            })
            .collect()
    }

    fn held_by(maker: &str, from: u64, until: Option<u64>) -> Holding {
        Holding {
            partition: 0,
            maker: maker.to_owned(),
            from: at(from),
            until: until.map(at),
            killed: false,
        }
    }

    #[test]
    fn a_held_partition_that_stands_still_with_backlog_is_a_stall() {
        let (found, longest) = stalls(
            &samples(&[10, 20, 20, 20, 20, 20, 20]),
            &[held_by("maker-1", 0, None)],
            &[],
            Duration::from_secs(3),
        )
        .unwrap();
        assert_eq!(
            found,
            vec![Stall {
                partition: 0,
                maker: "maker-1".to_owned(),
                lasted_ms: 5_000,
                committed: 20,
                lag: 80,
            }]
        );
        assert_eq!(longest, Duration::from_secs(5));
    }

    #[test]
    fn a_partition_that_moves_within_the_bound_is_live() {
        let (found, longest) = stalls(
            &samples(&[10, 10, 10, 20, 20, 30, 40]),
            &[held_by("maker-1", 0, None)],
            &[],
            Duration::from_secs(3),
        )
        .unwrap();
        assert!(found.is_empty());
        assert_eq!(longest, Duration::from_secs(2));
    }

    #[test]
    fn a_partition_with_backlog_and_no_holder_is_a_stall() {
        // Held until 1 s, then nobody takes it over: from 0 s to 8 s it stands at 10 with backlog.
        let (found, _) = stalls(
            &samples(&[10, 10, 10, 10, 10, 10, 10, 10, 10]),
            &[held_by("maker-1", 0, Some(1))],
            &[],
            Duration::from_secs(3),
        )
        .unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].maker, NO_HOLDER);
        assert_eq!(found[0].lasted_ms, 8_000);
    }

    #[test]
    fn standing_still_without_backlog_is_no_stall() {
        // Held, but nothing to do: committed at the end.
        let (found, _) = stalls(
            &samples(&[100; 9]),
            &[held_by("maker-1", 0, None)],
            &[],
            Duration::from_secs(3),
        )
        .unwrap();
        assert!(found.is_empty());
    }

    #[test]
    fn a_new_holder_does_not_restart_the_clock() {
        // maker-1 stands still 4 s and leaves; maker-2 takes over and stands still 3 s more: one stall of 7 s,
        // named after the holder when it was last seen.
        let (found, longest) = stalls(
            &samples(&[10, 10, 10, 10, 10, 10, 10, 10]),
            &[held_by("maker-1", 0, Some(4)), held_by("maker-2", 4, None)],
            &[],
            Duration::from_secs(3),
        )
        .unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].maker.as_str(), found[0].lasted_ms),
            ("maker-2", 7_000)
        );
        assert_eq!(longest, Duration::from_secs(7));
    }

    #[test]
    fn a_kill_of_the_holder_starts_the_clock_again() {
        // Standing still 10 s through two kills (at 3 s and 6 s): no stretch between kills reaches 4 s.
        let killed = |maker: &str, from, until| Holding {
            killed: true,
            ..held_by(maker, from, Some(until))
        };
        let holdings = [
            killed("maker-1", 0, 3),
            killed("maker-2", 4, 6),
            held_by("maker-3", 7, None),
        ];
        let (found, longest) =
            stalls(&samples(&[10; 11]), &holdings, &[], Duration::from_secs(4)).unwrap();
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(longest, Duration::from_secs(4));
        // Without the kills, the same standstill is a stall.
        let calm = [held_by("maker-1", 0, None)];
        assert_eq!(
            stalls(&samples(&[10; 11]), &calm, &[], Duration::from_secs(4))
                .unwrap()
                .0
                .len(),
            1
        );
    }

    #[test]
    fn a_kill_while_a_partition_has_no_holder_starts_its_clock_again() {
        // Never held (the group is still forming) while makers are killed at 3 s and 6 s.
        let kills = [at(3), at(6)];
        let (found, longest) =
            stalls(&samples(&[10; 11]), &[], &kills, Duration::from_secs(4)).unwrap();
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(longest, Duration::from_secs(4));
        // A kill while another maker held it does not.
        let held = [held_by("maker-1", 0, None)];
        assert_eq!(
            stalls(&samples(&[10; 11]), &held, &kills, Duration::from_secs(4))
                .unwrap()
                .0
                .len(),
            1
        );
    }

    #[test]
    fn no_samples_is_no_verdict() {
        let err = stalls(
            &[],
            &[held_by("maker-1", 0, None)],
            &[],
            Duration::from_secs(3),
        )
        .unwrap_err();
        assert!(err.to_string().contains("0 samples"), "{err}");
        assert!(stalls(&samples(&[10]), &[], &[], Duration::from_secs(3)).is_err());
    }

    #[test]
    fn a_stall_over_the_bound_seen_first_after_a_disruption_is_a_stall() {
        // Samples at 0 s and 10 s only (the watch could not sample meanwhile), a disruption at 2 s: the partition
        // stood 8 s since it, over a 4 s bound.
        let mut sparse = samples(&[10; 11]);
        sparse.retain(|s| s.at == at(0) || s.at == at(10));
        let (found, longest) =
            stalls_through(&sparse, &[], &[], &[at(2)], Duration::from_secs(4)).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(longest, Duration::from_secs(8));
    }

    #[test]
    fn each_disruption_of_the_cluster_is_allowed_its_wait_once() {
        // Standing still 10 s: two faults 5 s apart each restart the clock; one fault alone does not suffice.
        let stood = samples(&[10; 11]);
        let (found, longest) =
            stalls_through(&stood, &[], &[], &[at(5)], Duration::from_secs(4)).unwrap();
        assert_eq!((found.len(), longest), (1, Duration::from_secs(5)));
        let (found, longest) =
            stalls_through(&stood, &[], &[], &[at(3), at(7)], Duration::from_secs(4)).unwrap();
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(longest, Duration::from_secs(3));
    }
}
