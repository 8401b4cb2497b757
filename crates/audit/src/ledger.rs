//! The audit itself, without Kafka: orders and tabs are fed in any order, and the report says what is missing,
//! duplicated or wrong, and how late the tabs were.
//!
//! Memory is bounded per order: a fixed-size record and a bitmap of the tabs seen (one bit per tab), and one
//! latency histogram per patient; no record is kept.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tabs::messages::{Order, Tab};

/// Largest latency recorded, in microseconds (one hour); beyond it values saturate.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// What is known of one order.
#[derive(Debug)]
struct OrderState {
    /// 0 while only tabs of the order were seen (its order record not yet, or never).
    tabs_count: u32,
    delivered: u32,
    /// One bit per `seq_in_order` seen: 0 to 63 here (no allocation for the orders of the contract's default
    /// maximum), the rest in `seen_more`.
    seen: u64,
    seen_more: Vec<u64>,
    /// Where its first tab was read (offset -1: not known), to say where both copies are when a tab comes
    /// again.
    first: TabAt,
}

impl OrderState {
    fn new(tabs_count: u32) -> Self {
        Self {
            tabs_count,
            delivered: 0,
            seen: 0,
            seen_more: Vec::new(),
            first: TabAt::UNKNOWN,
        }
    }

    /// Marks `seq` seen; false if it already was.
    fn mark(&mut self, seq: u32) -> bool {
        let bit = 1u64 << (seq % 64);
        let word = match (seq / 64) as usize {
            0 => &mut self.seen,
            n => {
                if self.seen_more.len() < n {
                    self.seen_more.resize(n, 0);
                }
                &mut self.seen_more[n - 1]
            }
        };
        let fresh = *word & bit == 0;
        *word |= bit;
        fresh
    }
}

/// Orders listed with their duplicates in a report: enough to find the makers that made them twice.
const DUPLICATES_LISTED: usize = 10;

/// Where a tab was read: its partition and offset in the deliveries topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TabAt {
    pub partition: i32,
    pub offset: i64,
}

impl TabAt {
    const UNKNOWN: Self = Self {
        partition: -1,
        offset: -1,
    };
}

/// An order with a tab delivered twice: where the order's first tab was read (not necessarily the same
/// `seq_in_order`), and where the first tab read again was, with its delivery timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Duplicate {
    pub patient_id: String,
    pub order_timestamp_ns: u64,
    pub seq_in_order: u32,
    pub first: TabAt,
    pub again: TabAt,
    pub again_delivery_timestamp_ns: u64,
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1e3;
        Self {
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            max_ms: ms(histogram.max()),
        }
    }
}

/// The verdict of an audit.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// Orders in the window.
    pub orders: u64,
    /// Tabs those orders asked for.
    pub expected_tabs: u64,
    /// Distinct tabs of those orders delivered.
    pub delivered_tabs: u64,
    /// Expected tabs never delivered.
    pub missing_tabs: u64,
    /// Orders with at least one missing tab.
    pub incomplete_orders: u64,
    /// Deliveries of a tab already delivered.
    pub duplicated_tabs: u64,
    /// The first orders (at most 10) with a tab delivered twice, and where their copies are.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub duplicates: Vec<Duplicate>,
    /// Tabs whose `tab_pow` is not the proof of work of their identity.
    pub wrong_pow: u64,
    /// Tabs whose `order_tabs_count` or `seq_in_order` disagree with their order.
    pub wrong_fields: u64,
    /// Tabs of orders that are not in the window's orders.
    pub unknown_order_tabs: u64,
    /// Delivery timestamp minus order timestamp, per tab.
    pub latency: Percentiles,
    /// Latency minus the making time: what the system adds.
    pub overhead: Percentiles,
    /// Patients that ordered.
    pub patients: u64,
    /// The patient with the worst p99 latency, and that p99.
    pub worst_patient: Option<String>,
    pub worst_patient_p99_ms: f64,
}

impl Report {
    /// Nothing missing, duplicated or wrong.
    pub fn is_clean(&self) -> bool {
        self.missing_tabs == 0
            && self.duplicated_tabs == 0
            && self.wrong_pow == 0
            && self.wrong_fields == 0
            && self.unknown_order_tabs == 0
    }

    /// Nothing missing or wrong; duplicates allowed (the at-least-once guarantee).
    pub fn is_at_least_once(&self) -> bool {
        self.missing_tabs == 0
            && self.wrong_pow == 0
            && self.wrong_fields == 0
            && self.unknown_order_tabs == 0
    }
}

/// Orders and tabs seen so far.
pub struct Audit {
    making_time: Duration,
    orders: HashMap<(Arc<str>, u64), OrderState>,
    /// Interned patient ids, and each patient's latency histogram.
    patients: HashMap<Arc<str>, Histogram<u32>>,
    order_count: u64,
    expected_tabs: u64,
    /// Distinct tabs delivered for known orders.
    delivered_known: u64,
    duplicated_tabs: u64,
    duplicates: Vec<Duplicate>,
    wrong_pow: u64,
    wrong_fields: u64,
    latency: Histogram<u64>,
    overhead: Histogram<u64>,
}

fn histogram(significant_digits: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, significant_digits)
        .expect("static histogram bounds are valid")
}

/// A patient's latencies, in milliseconds: two significant digits (1 % precision, enough to compare patients)
/// and 32-bit counts keep it near 8 KiB, which matters with thousands of patients.
fn patient_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US / 1_000, 2)
        .expect("static histogram bounds are valid")
}

impl Audit {
    /// An empty audit; `making_time` is subtracted from latencies to get the overhead.
    pub fn new(making_time: Duration) -> Self {
        Self {
            making_time,
            orders: HashMap::new(),
            patients: HashMap::new(),
            order_count: 0,
            expected_tabs: 0,
            delivered_known: 0,
            duplicated_tabs: 0,
            duplicates: Vec::new(),
            wrong_pow: 0,
            wrong_fields: 0,
            latency: histogram(3),
            overhead: histogram(3),
        }
    }

    fn patient(&mut self, id: &str) -> Arc<str> {
        if let Some((interned, _)) = self.patients.get_key_value(id) {
            return Arc::clone(interned);
        }
        let interned: Arc<str> = Arc::from(id);
        self.patients
            .insert(Arc::clone(&interned), patient_histogram());
        interned
    }

    /// Adds an order of the window. An order seen twice (a patient retry that is not idempotent) counts once.
    pub fn add_order(&mut self, order: &Order) {
        let patient = self.patient(&order.patient_id);
        let state = self
            .orders
            .entry((patient, order.order_timestamp_ns))
            .or_insert_with(|| OrderState::new(0));
        if state.tabs_count == 0 {
            state.tabs_count = order.tabs_count;
            self.order_count += 1;
            self.expected_tabs += u64::from(order.tabs_count);
            // Tabs read before their order: count them now.
            self.delivered_known += u64::from(state.delivered.min(order.tabs_count));
            self.wrong_fields += u64::from(state.delivered.saturating_sub(order.tabs_count));
        }
    }

    /// Adds a delivered tab.
    pub fn add_tab(&mut self, tab: &Tab) {
        self.add_tab_read_at(tab, TabAt::UNKNOWN);
    }

    /// Adds a delivered tab read at `partition` and `offset` of the deliveries topic: a duplicate's report says
    /// where both copies are.
    pub fn add_tab_at(&mut self, tab: &Tab, partition: i32, offset: i64) {
        self.add_tab_read_at(tab, TabAt { partition, offset });
    }

    fn add_tab_read_at(&mut self, tab: &Tab, at: TabAt) {
        if !tab.pow_is_valid() {
            self.wrong_pow += 1;
            return;
        }
        let patient = self.patient(&tab.patient_id);
        let state = self
            .orders
            .entry((Arc::clone(&patient), tab.order_timestamp_ns))
            .or_insert_with(|| OrderState::new(0));
        if state.tabs_count != 0
            && (tab.order_tabs_count != state.tabs_count
                || tab.seq_in_order == 0
                || tab.seq_in_order > state.tabs_count)
        {
            self.wrong_fields += 1;
            return;
        }
        if !state.mark(tab.seq_in_order) {
            self.duplicated_tabs += 1;
            let listed = |d: &Duplicate| {
                d.order_timestamp_ns == tab.order_timestamp_ns && d.patient_id == tab.patient_id
            };
            if at.offset >= 0
                && self.duplicates.len() < DUPLICATES_LISTED
                && !self.duplicates.iter().any(listed)
            {
                self.duplicates.push(Duplicate {
                    patient_id: tab.patient_id.clone(),
                    order_timestamp_ns: tab.order_timestamp_ns,
                    seq_in_order: tab.seq_in_order,
                    first: state.first,
                    again: at,
                    again_delivery_timestamp_ns: tab.delivery_timestamp_ns,
                });
            }
            return;
        }
        if state.first.offset < 0 {
            state.first = at;
        }
        state.delivered += 1;
        if state.tabs_count != 0 {
            self.delivered_known += 1;
        }

        let latency_us = tab
            .delivery_timestamp_ns
            .saturating_sub(tab.order_timestamp_ns)
            / 1_000;
        let making_us = u64::try_from(self.making_time.as_micros()).unwrap_or(u64::MAX);
        self.latency.saturating_record(latency_us.max(1));
        self.overhead
            .saturating_record(latency_us.saturating_sub(making_us).max(1));
        if let Some(per_patient) = self.patients.get_mut(&patient) {
            per_patient.saturating_record((latency_us / 1_000).max(1));
        }
    }

    /// Counts a deliveries record that is not a tab at all.
    pub fn add_malformed_tab(&mut self) {
        self.wrong_fields += 1;
    }

    /// Tabs still expected (for waiting until an audit is complete).
    pub fn missing_tabs(&self) -> u64 {
        self.expected_tabs.saturating_sub(self.delivered_known)
    }

    /// Distinct tabs delivered for known orders.
    pub fn delivered_tabs(&self) -> u64 {
        self.delivered_known
    }

    /// Orders known so far.
    pub fn orders(&self) -> u64 {
        self.order_count
    }

    /// The verdict so far.
    pub fn report(&self) -> Report {
        let delivered_known = self.delivered_known;
        let unknown_order_tabs = self
            .orders
            .values()
            .filter(|o| o.tabs_count == 0)
            .map(|o| u64::from(o.delivered))
            .sum();
        let incomplete_orders = self
            .orders
            .values()
            .filter(|o| o.tabs_count != 0 && o.delivered < o.tabs_count)
            .count() as u64;
        let worst = self
            .patients
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(id, h)| (id, h.value_at_quantile(0.99)))
            .max_by_key(|&(_, p99)| p99);
        Report {
            orders: self.order_count,
            expected_tabs: self.expected_tabs,
            delivered_tabs: delivered_known,
            missing_tabs: self.expected_tabs.saturating_sub(delivered_known),
            incomplete_orders,
            duplicated_tabs: self.duplicated_tabs,
            duplicates: self.duplicates.clone(),
            wrong_pow: self.wrong_pow,
            wrong_fields: self.wrong_fields,
            unknown_order_tabs,
            latency: Percentiles::of(&self.latency),
            overhead: Percentiles::of(&self.overhead),
            patients: self.patients.len() as u64,
            worst_patient: worst.map(|(id, _)| id.to_string()),
            worst_patient_p99_ms: worst.map_or(0.0, |(_, ms)| ms as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_of_hundreds_of_tabs_is_tracked_tab_by_tab() {
        let mut state = OrderState::new(300);
        for seq in [1, 63, 64, 65, 127, 128, 300] {
            assert!(state.mark(seq), "{seq} first time");
            assert!(!state.mark(seq), "{seq} again");
        }
        assert!(state.mark(2) && state.mark(129) && state.mark(299));
    }

    fn order(patient: &str, ts: u64, tabs: u32) -> Order {
        Order {
            patient_id: patient.into(),
            order_timestamp_ns: ts,
            tabs_count: tabs,
        }
    }

    fn tab(order: &Order, seq: u32, delay_ms: u64) -> Tab {
        Tab {
            delivery_timestamp_ns: order.order_timestamp_ns + delay_ms * 1_000_000,
            ..Tab::make(order, seq)
        }
    }

    #[test]
    fn a_complete_delivery_is_clean() {
        let mut audit = Audit::new(Duration::from_secs(2));
        let o = order("p", 1_000, 3);
        audit.add_order(&o);
        for seq in 1..=3 {
            audit.add_tab(&tab(&o, seq, 2_010));
        }
        let report = audit.report();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(
            (report.orders, report.expected_tabs, report.delivered_tabs),
            (1, 3, 3)
        );
        assert!(
            (2009.0..=2011.0).contains(&report.latency.p50_ms),
            "{report:?}"
        );
        assert!((9.0..=11.0).contains(&report.overhead.p99_ms), "{report:?}");
    }

    #[test]
    fn counts_missing_and_duplicated_tabs() {
        let mut audit = Audit::new(Duration::ZERO);
        let o = order("p", 1, 3);
        audit.add_order(&o);
        audit.add_tab(&tab(&o, 1, 5));
        audit.add_tab(&tab(&o, 1, 6));
        let report = audit.report();
        assert_eq!(report.missing_tabs, 2);
        assert_eq!(report.incomplete_orders, 1);
        assert_eq!(report.duplicated_tabs, 1);
        assert!(!report.is_clean());
        assert!(!report.is_at_least_once());
    }

    #[test]
    fn a_duplicate_says_where_both_copies_were_read_once_per_order() {
        let mut audit = Audit::new(Duration::ZERO);
        let o = order("p", 1, 2);
        audit.add_order(&o);
        audit.add_tab_at(&tab(&o, 1, 5), 3, 100);
        audit.add_tab_at(&tab(&o, 2, 5), 3, 101);
        audit.add_tab_at(&tab(&o, 2, 9), 4, 7);
        audit.add_tab_at(&tab(&o, 1, 9), 4, 8);
        let report = audit.report();
        assert_eq!(report.duplicated_tabs, 2);
        assert_eq!(
            report.duplicates,
            [Duplicate {
                patient_id: "p".into(),
                order_timestamp_ns: 1,
                seq_in_order: 2,
                first: TabAt {
                    partition: 3,
                    offset: 100
                },
                again: TabAt {
                    partition: 4,
                    offset: 7
                },
                again_delivery_timestamp_ns: 1 + 9 * 1_000_000,
            }]
        );
    }

    #[test]
    fn at_most_ten_duplicated_orders_are_listed() {
        let mut audit = Audit::new(Duration::ZERO);
        for ts in 1..=12 {
            let o = order("p", ts, 1);
            audit.add_order(&o);
            audit.add_tab_at(&tab(&o, 1, 5), 0, ts as i64);
            audit.add_tab_at(&tab(&o, 1, 5), 1, ts as i64);
        }
        let report = audit.report();
        assert_eq!(report.duplicated_tabs, 12);
        assert_eq!(report.duplicates.len(), 10);
    }

    #[test]
    fn duplicates_are_allowed_by_at_least_once_but_not_by_clean() {
        let mut audit = Audit::new(Duration::ZERO);
        let o = order("p", 1, 1);
        audit.add_order(&o);
        audit.add_tab(&tab(&o, 1, 5));
        audit.add_tab(&tab(&o, 1, 5));
        let report = audit.report();
        assert!(report.is_at_least_once() && !report.is_clean());
    }

    #[test]
    fn detects_forged_proofs_and_wrong_fields() {
        let mut audit = Audit::new(Duration::ZERO);
        let o = order("p", 1, 2);
        audit.add_order(&o);
        let forged = Tab {
            tab_pow: "0".repeat(64),
            ..tab(&o, 1, 1)
        };
        audit.add_tab(&forged);
        let beyond = Tab::make(&order("p", 1, 5), 5);
        audit.add_tab(&beyond);
        let report = audit.report();
        assert_eq!(report.wrong_pow, 1);
        assert_eq!(report.wrong_fields, 1);
        assert_eq!(report.missing_tabs, 2);
    }

    #[test]
    fn tabs_may_arrive_before_their_order() {
        let mut audit = Audit::new(Duration::ZERO);
        let o = order("p", 7, 2);
        audit.add_tab(&tab(&o, 2, 3));
        assert_eq!(audit.report().unknown_order_tabs, 1);
        audit.add_order(&o);
        audit.add_tab(&tab(&o, 1, 3));
        let report = audit.report();
        assert!(report.is_clean(), "{report:?}");
    }

    #[test]
    fn tabs_of_unknown_orders_are_reported() {
        let mut audit = Audit::new(Duration::ZERO);
        audit.add_tab(&tab(&order("ghost", 1, 1), 1, 1));
        assert_eq!(audit.report().unknown_order_tabs, 1);
        assert!(!audit.report().is_clean());
    }

    #[test]
    fn names_the_patient_with_the_worst_p99() {
        let mut audit = Audit::new(Duration::ZERO);
        for (patient, delay) in [("fast", 10), ("slow", 900)] {
            let o = order(patient, 1, 1);
            audit.add_order(&o);
            audit.add_tab(&tab(&o, 1, delay));
        }
        let report = audit.report();
        assert_eq!(report.worst_patient.as_deref(), Some("slow"));
        assert!((890.0..=910.0).contains(&report.worst_patient_p99_ms));
        assert_eq!(report.patients, 2);
    }

    #[test]
    fn large_orders_use_a_wider_bitmap() {
        let mut audit = Audit::new(Duration::ZERO);
        let o = order("p", 1, 200);
        audit.add_order(&o);
        for seq in 1..=200 {
            audit.add_tab(&tab(&o, seq, 1));
        }
        audit.add_tab(&tab(&o, 150, 1));
        let report = audit.report();
        assert_eq!(
            (
                report.delivered_tabs,
                report.duplicated_tabs,
                report.missing_tabs
            ),
            (200, 1, 0)
        );
    }
}
