//! What becomes of one fetched record, as its task reports it back to the loop.

use tabs::messages::{DeadLetter, Order};

use crate::error::KafkaFailure;
use crate::ledger::Epoch;
use crate::making::MadeTabs;

/// The result of one fetched record.
#[derive(Debug)]
pub enum Outcome {
    /// Exactly-once: an order made; its tabs wait for the transaction.
    Made { order: Order, tabs: MadeTabs },
    /// Exactly-once: an order whose tabs the deliveries topic already holds, committed by a transaction whose
    /// offsets were lost (see `doubt.rs`): only its offset goes with the transaction.
    AlreadyDelivered { order: Order },
    /// Exactly-once: a rejected record; its dead letter waits for the transaction.
    Rejected {
        key: Option<Vec<u8>>,
        letter: Box<DeadLetter>,
    },
    /// At-least-once: tabs or dead letter already written and acknowledged.
    Delivered {
        order_timestamp_ns: u64,
        tabs: u32,
        rejected: Option<String>,
    },
    /// At-least-once: Kafka refused a record for good; the maker stops without committing the order.
    Failed(KafkaFailure),
}

/// A finished record, reported by its task.
#[derive(Debug)]
pub struct Completion {
    pub partition: i32,
    /// The assignment the work was started under: a result of an earlier one is stale.
    pub epoch: Epoch,
    pub offset: i64,
    pub outcome: Outcome,
}
