//! Making an order: all of its tabs at once, each taking the making time and carrying its proof of work.

use std::time::Duration;

use tabs::messages::{Order, Tab};

/// Makes every tab of `order` concurrently, so an order takes one making time whatever its `tabs_count`.
/// The tabs come back in `seq_in_order` order, without a delivery time (stamped when handed to Kafka).
pub async fn make_order(order: &Order, making_time: Duration) -> Vec<Tab> {
    let tabs = (1..=order.tabs_count).map(|seq| async move {
        if !making_time.is_zero() {
            tokio::time::sleep(making_time).await;
        }
        Tab::make(order, seq)
    });
    futures::future::join_all(tabs).await
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
        assert_eq!(made.iter().map(Vec::len).sum::<usize>(), 64 * 30);
    }

    #[tokio::test]
    async fn tabs_are_numbered_from_one_with_valid_proofs() {
        let tabs = make_order(&order(3), Duration::ZERO).await;
        let seqs: Vec<u32> = tabs.iter().map(|t| t.seq_in_order).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert!(tabs
            .iter()
            .all(|t| t.pow_is_valid() && t.order_tabs_count == 3 && t.patient_id == "p"));
    }
}
