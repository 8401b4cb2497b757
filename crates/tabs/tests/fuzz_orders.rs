//! Property tests (fuzzing) of order parsing and dead letters: whatever bytes arrive on `tabs.orders`, parsing
//! never panics, accepts only what the contract allows, names a known reason otherwise, and a dead letter keeps
//! the original payload exactly.

use proptest::prelude::*;
use serde_json::{json, Value};
use tabs::messages::{parse_order, to_json, DeadLetter, Order, Rejection, MAX_PATIENT_ID_BYTES};

const MAX: u32 = 30;

fn check(bytes: &[u8]) {
    match parse_order(Some(bytes), MAX) {
        Ok(order) => {
            assert!(!order.patient_id.is_empty() && order.patient_id.len() <= MAX_PATIENT_ID_BYTES);
            assert!((1..=MAX).contains(&order.tabs_count));
        }
        Err(rejection) => {
            assert!(
                Rejection::CODES.contains(&rejection.code()),
                "{rejection:?}"
            );
            assert!(!rejection.to_string().is_empty());
        }
    }
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Objects shaped like orders, with any value in any field (or the field missing).
fn order_like() -> impl Strategy<Value = Value> {
    (
        prop::option::of(json_value()),
        prop::option::of(json_value()),
        prop::option::of(json_value()),
        prop::option::of(json_value()),
    )
        .prop_map(|(id, ts, count, extra)| {
            let mut object = serde_json::Map::new();
            for (key, value) in [
                ("patient_id", id),
                ("order_timestamp_ns", ts),
                ("tabs_count", count),
                ("extra", extra),
            ] {
                if let Some(value) = value {
                    object.insert(key.to_owned(), value);
                }
            }
            Value::Object(object)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check(&bytes);
    }

    #[test]
    fn arbitrary_order_shaped_json_is_accepted_only_when_valid(value in order_like()) {
        check(&serde_json::to_vec(&value).unwrap());
    }

    #[test]
    fn mutated_valid_orders_never_panic(
        id in "[a-z0-9-]{1,40}",
        ts in any::<u64>(),
        count in 1u32..=MAX,
        position in any::<prop::sample::Index>(),
        bit in 0u8..8,
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = to_json(&Order { patient_id: id, order_timestamp_ns: ts, tabs_count: count });
        let at = position.index(bytes.len());
        bytes[at] ^= 1 << bit;
        check(&bytes);
        let end = cut.index(bytes.len());
        check(&bytes[..end]);
    }

    #[test]
    fn valid_orders_round_trip(id in "\\PC{1,64}", ts in 0..=tabs::messages::MAX_ORDER_TIMESTAMP_NS, count in 1u32..=MAX) {
        prop_assume!(id.len() <= MAX_PATIENT_ID_BYTES);
        let order = Order { patient_id: id, order_timestamp_ns: ts, tabs_count: count };
        prop_assert_eq!(parse_order(Some(&to_json(&order)), MAX), Ok(order));
    }

    #[test]
    fn tabs_count_is_accepted_exactly_within_one_to_max(count in any::<i64>()) {
        let bytes = serde_json::to_vec(&json!({"patient_id": "p", "order_timestamp_ns": 1, "tabs_count": count})).unwrap();
        let accepted = parse_order(Some(&bytes), MAX).is_ok();
        prop_assert_eq!(accepted, (1..=i64::from(MAX)).contains(&count));
    }

    #[test]
    fn dead_letters_keep_any_payload(payload in prop::collection::vec(any::<u8>(), 0..512)) {
        let letter = DeadLetter::new("validate", &Rejection::Empty, "t", 0, 0, None, Some(&payload), "m", 1);
        let encoded = to_json(&letter);
        let decoded: DeadLetter = serde_json::from_slice(&encoded).unwrap();
        prop_assert_eq!(decoded.payload_bytes().unwrap(), Some(payload));
    }

    #[test]
    fn timestamps_are_accepted_exactly_up_to_the_largest_signed_64_bit_value(ts in any::<u64>()) {
        let bytes = serde_json::to_vec(&json!({"patient_id": "p", "order_timestamp_ns": ts, "tabs_count": 1})).unwrap();
        prop_assert_eq!(parse_order(Some(&bytes), MAX).is_ok(), ts <= tabs::messages::MAX_ORDER_TIMESTAMP_NS);
    }

    #[test]
    fn dead_letters_keep_any_key_exactly(key in prop::collection::vec(any::<u8>(), 0..512)) {
        let letter = DeadLetter::new("validate", &Rejection::Empty, "t", 0, 0, Some(&key), None, "m", 1);
        let decoded: DeadLetter = serde_json::from_slice(&to_json(&letter)).unwrap();
        prop_assert_eq!(decoded.record_key(), Some(key));
        prop_assert_eq!(decoded.payload, None);
    }
}
