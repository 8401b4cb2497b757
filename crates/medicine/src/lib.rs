//! The medicine maker: consumes tab orders from `tabs.orders` (group `tabs_makers`), makes every tab of an order
//! in parallel, and publishes the tabs to `tabs.deliveries`.
//!
//! Delivery guarantee (default `--guarantee exactly-once`): the tabs of a batch of finished orders and the
//! orders' offsets are committed in one Kafka transaction, and a partition's offset only advances over a
//! contiguous prefix of finished orders. A maker killed at any instant loses nothing (uncommitted orders are
//! fetched again by the next maker) and duplicates nothing for `read_committed` readers (an aborted
//! transaction's tabs are never visible). Records that are not valid orders go to `tabs.dlq` in the same
//! transaction, with their reason.
//!
//! Many orders are in flight at once across all assigned partitions, bounded by `--max-in-flight-orders`; at
//! the bound the maker pauses its partitions instead of buffering. Its throughput therefore does not depend on
//! how many partitions it holds.
//!
//! As a Kubernetes Job it exits 0 once idle for `--idle-exit-after` or after `--max-orders` orders; on SIGTERM it
//! stops fetching, finishes what is in flight within `--drain-timeout`, commits, leaves the group and exits 0.
//!
//! Inside (documentation/ARCHITECTURE.md, "the maker inside"): [`worker`] is the loop, deciding against the
//! [`broker::Broker`] seam; [`live`] is its rdkafka side ([`consumer`], [`transactions`], [`at_least_once`]);
//! [`ledger`] tracks offsets, [`lifecycle`] the phases.
//!
//! Run: `medicine --bootstrap-servers 127.0.0.1:9092 --idle-exit-after 0`.

#![forbid(unsafe_code)]

mod at_least_once;
mod broker;
mod completion;
mod config;
mod consumer;
mod doubt;
mod error;
mod ledger;
mod lifecycle;
mod live;
mod making;
mod program;
mod progress;
mod stats;
mod surplus;
mod transactions;
mod worker;

pub use config::Config;
pub use consumer::UNSTABLE_OFFSETS;
pub use live::STUCK_IN;
pub use program::{main, run};
pub use stats::Summary;
pub use worker::{ALREADY_DELIVERED, LOST_COMMIT, STUCK_COMMIT};
