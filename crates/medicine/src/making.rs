//! Making an order: all of its tabs at once, each taking the making time and carrying its proof of work.

use std::time::Duration;

use tabs::messages::{tab_pow_bytes, tab_pow_hex, Order, Tab};

/// The tabs of an order, made: their proofs of work, in `seq_in_order` order; everything else of a tab is its
/// order's. Held this way until they are written: a [`Tab`] each would repeat the order's patient id and hold its
/// proof as hex, about 200 bytes a tab against 32 (an order in flight is mostly its tabs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MadeTabs {
    proofs: Vec<[u8; 32]>,
}

impl MadeTabs {
    pub fn len(&self) -> usize {
        self.proofs.len()
    }

    /// The tabs as published, stamped with `delivery_timestamp_ns()` each when it is asked for.
    pub fn tabs<'a>(
        &'a self,
        order: &'a Order,
        mut delivery_timestamp_ns: impl FnMut() -> u64 + 'a,
    ) -> impl Iterator<Item = Tab> + 'a {
        (1..)
            .zip(&self.proofs)
            .map(move |(seq_in_order, proof)| Tab {
                patient_id: order.patient_id.clone(),
                order_timestamp_ns: order.order_timestamp_ns,
                order_tabs_count: order.tabs_count,
                seq_in_order,
                tab_pow: tab_pow_hex(proof),
                delivery_timestamp_ns: delivery_timestamp_ns(),
            })
    }
}

/// Makes every tab of `order` at once, so an order takes one making time whatever its `tabs_count`: the tabs share
/// one timer (their making times are one span), and each gets its proof of work when it ends. (A timer per tab
/// held more memory per order in flight than the order itself.)
pub async fn make_order(order: &Order, making_time: Duration) -> MadeTabs {
    if !making_time.is_zero() {
        tokio::time::sleep(making_time).await;
    }
    MadeTabs {
        proofs: (1..=order.tabs_count)
            .map(|seq| tab_pow_bytes(&order.patient_id, order.order_timestamp_ns, seq))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(tabs_count: u32) -> Order {
        Order {
            patient_id: "p".into(),
            order_timestamp_ns: 42,
            tabs_count,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn all_tabs_of_an_order_take_one_making_time() {
        let started = tokio::time::Instant::now();
        let tabs = make_order(&order(30), Duration::from_secs(2)).await;
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(2),
            "in parallel, not 30 x 2 s"
        );
        assert_eq!(tabs.len(), 30);
    }

    #[tokio::test(start_paused = true)]
    async fn many_orders_at_once_also_take_one_making_time() {
        let started = tokio::time::Instant::now();
        let orders: Vec<Order> = (0..64).map(|_| order(30)).collect();
        let made =
            futures::future::join_all(orders.iter().map(|o| make_order(o, Duration::from_secs(2))))
                .await;
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(made.iter().map(MadeTabs::len).sum::<usize>(), 64 * 30);
    }

    #[tokio::test]
    async fn tabs_are_numbered_from_one_with_valid_proofs() {
        let order = order(3);
        let made = make_order(&order, Duration::ZERO).await;
        let tabs: Vec<Tab> = made.tabs(&order, || 7).collect();
        let seqs: Vec<u32> = tabs.iter().map(|t| t.seq_in_order).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert!(tabs.iter().all(|t| t.pow_is_valid()
            && t.order_tabs_count == 3
            && t.patient_id == "p"
            && t.order_timestamp_ns == 42
            && t.delivery_timestamp_ns == 7));
        assert_eq!(
            tabs[0],
            Tab {
                delivery_timestamp_ns: 7,
                ..Tab::make(&order, 1)
            }
        );
    }
}
