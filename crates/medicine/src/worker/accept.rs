//! Starting the work of fetched records: an order to make on its own task, or a rejection to the DLQ; and taking
//! their completions.

use anyhow::bail;
use tabs::messages::{parse_order, to_json, DeadLetter, Order, Rejection};
use tabs::time::now_ns;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::commits::ALREADY_DELIVERED;
use super::Worker;
use crate::broker::Broker;
use crate::broker::{Deliver, Fetched};
use crate::completion::{Completion, Outcome};
use crate::ledger::Epoch;
use crate::lifecycle::StopReason;
use crate::making::make_order;

impl<B: Broker> Worker<B> {
    /// Starts the work of one fetched record: an order to make, or a rejection.
    pub(super) fn accept(&mut self, record: Fetched) {
        let (partition, offset) = (record.partition, record.offset);
        let Some((epoch, cancel)) = self.ledger.track(partition, offset) else {
            debug!(
                partition,
                offset, "record of a partition no longer assigned; skipped"
            );
            return;
        };
        debug_assert!(
            self.in_flight() <= self.settings.max_in_flight_orders,
            "{} orders in flight, the bound is {}",
            self.in_flight(),
            self.settings.max_in_flight_orders
        );
        if let Some(taken) = self.leaving.took_one() {
            info!(orders = taken, "--max-orders reached; finishing");
            self.stop(StopReason::MaxOrders);
        }
        match parse_order(record.payload.as_deref(), self.settings.max_tabs_count) {
            Ok(order) => {
                let key = (order.patient_id.clone(), order.order_timestamp_ns);
                if self.book.already_delivered(&key) {
                    info!(
                        partition,
                        offset,
                        patient_id = %order.patient_id,
                        "{ALREADY_DELIVERED}"
                    );
                    let outcome = Outcome::AlreadyDelivered { order };
                    self.ledger.complete(partition, epoch, offset, outcome);
                } else {
                    self.make(order, partition, epoch, offset, cancel);
                }
            }
            Err(rejection) => self.reject(&record, &rejection, epoch),
        }
    }

    /// Makes `order` on its own task; exactly-once, its tabs wait for the transaction; at-least-once, they are
    /// delivered at once and the order is finished when Kafka acknowledged them.
    fn make(
        &mut self,
        order: Order,
        partition: i32,
        epoch: Epoch,
        offset: i64,
        cancel: CancellationToken,
    ) {
        let making_time = self.settings.tab_making_time;
        let deliverer = self.broker.deliverer();
        let topic = self.settings.deliveries_topic.clone();
        self.workshop.spawn(async move {
            let tabs = tokio::select! {
                tabs = make_order(&order, making_time) => tabs,
                () = cancel.cancelled() => return None,
            };
            let outcome = match deliverer {
                None => Outcome::Made { order, tabs },
                Some(deliverer) => {
                    let key = order.patient_id.as_bytes().to_vec();
                    let records = tabs
                        .tabs(&order, now_ns)
                        .map(|tab| (Some(key.clone()), to_json(&tab)))
                        .collect();
                    let delivered = tokio::select! {
                        delivered = deliverer.deliver(&topic, records) => delivered,
                        () = cancel.cancelled() => return None,
                    };
                    match delivered {
                        Ok(()) => Outcome::Delivered {
                            order_timestamp_ns: order.order_timestamp_ns,
                            tabs: order.tabs_count,
                            rejected: None,
                        },
                        Err(reason) => Outcome::Failed(reason),
                    }
                }
            };
            Some(Completion {
                partition,
                epoch,
                offset,
                outcome,
            })
        });
    }

    /// A record that is not a valid order: its dead letter goes with the next transaction (exactly-once) or is
    /// delivered now (at-least-once).
    fn reject(&mut self, record: &Fetched, rejection: &Rejection, epoch: Epoch) {
        let (partition, offset) = (record.partition, record.offset);
        warn!(
            partition,
            offset,
            reason = rejection.code(),
            error = %rejection,
            "record rejected to the DLQ"
        );
        let letter = DeadLetter::new(
            "validate",
            rejection,
            &self.settings.orders_topic,
            partition,
            offset,
            record.key.as_deref(),
            record.payload.as_deref(),
            &self.settings.maker_id,
            now_ns(),
        );
        // A dead letter that could not be written once (it went down with a transaction) is written again without
        // its payload: the record is at its source offset, and the valid orders beside it are not held back.
        let letter = match self.book.take_unwritable(partition, offset) {
            Some(why) => {
                warn!(partition, offset, error = %why, "writing the dead letter again without its payload");
                letter.without_payload(format!(
                    "the dead letter with its payload could not be written: {why}"
                ))
            }
            None => letter,
        };
        let key = letter.record_key();
        let Some(deliverer) = self.broker.deliverer() else {
            self.ledger.complete(
                partition,
                epoch,
                offset,
                Outcome::Rejected {
                    key,
                    letter: Box::new(letter),
                },
            );
            return;
        };
        let topic = self.settings.dlq_topic.clone();
        self.workshop.spawn(async move {
            let reason = letter.reason.clone();
            let mut delivered = deliverer
                .deliver(&topic, vec![(key.clone(), to_json(&letter))])
                .await;
            if let Err(why) = &delivered {
                // Refused with its payload: once more without it (the record stays at its source offset).
                warn!(partition, offset, error = %why, "writing the dead letter again without its payload");
                let bare = letter.without_payload(format!(
                    "the dead letter with its payload could not be written: {why}"
                ));
                delivered = deliverer.deliver(&topic, vec![(key, to_json(&bare))]).await;
            }
            let outcome = match delivered {
                Ok(()) => Outcome::Delivered {
                    order_timestamp_ns: 0,
                    tabs: 0,
                    rejected: Some(reason),
                },
                Err(reason) => Outcome::Failed(reason),
            };
            Some(Completion {
                partition,
                epoch,
                offset,
                outcome,
            })
        });
    }

    pub(super) fn complete(&mut self, completion: Completion) -> anyhow::Result<()> {
        let Completion {
            partition,
            epoch,
            offset,
            outcome,
        } = completion;
        if let Outcome::Failed(reason) = outcome {
            bail!("Kafka refused a record of the order at {partition}/{offset} for good: {reason}");
        }
        if !self.ledger.complete(partition, epoch, offset, outcome) {
            debug!(
                partition,
                offset, "result of a revoked or rewound record dropped"
            );
        }
        Ok(())
    }
}
