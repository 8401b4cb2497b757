//! Strict validation of a `tabs.orders` record: what the contract fixes (types, ranges, a non-empty id) is
//! checked, unknown extra fields are skipped however deeply they nest (on a stack that grows on the heap, so a
//! hostile record cannot overflow it), and each rejection has a stable reason code.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{Order, MAX_PATIENT_ID_BYTES};

/// The latest `order_timestamp_ns` accepted: the largest signed 64-bit count of nanoseconds (the year 2262), the
/// range every Kafka client and the JVM can hold. Later ones are rejected (`timestamp_out_of_range`).
pub const MAX_ORDER_TIMESTAMP_NS: u64 = i64::MAX as u64;

/// Why a record on `tabs.orders` is not a valid order. Each reason has a stable machine-readable [`code`].
///
/// [`code`]: Rejection::code
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The record has no value, or an empty one.
    Empty,
    /// The value is not valid UTF-8.
    NotUtf8 { valid_up_to: usize },
    /// The value is UTF-8 but not JSON.
    NotJson { detail: String },
    /// The value is JSON but not an object.
    NotAnObject { found: &'static str },
    /// A required field is absent.
    MissingField { field: &'static str },
    /// A field has the wrong JSON type (including `null`).
    WrongType {
        field: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    /// `patient_id` is the empty string.
    EmptyPatientId,
    /// `patient_id` is longer than [`MAX_PATIENT_ID_BYTES`].
    PatientIdTooLong { len: usize },
    /// `order_timestamp_ns` is an integer outside `0 ..= MAX_ORDER_TIMESTAMP_NS`.
    TimestampOutOfRange { value: String },
    /// `tabs_count` is an integer outside `1..=max`.
    TabsCountOutOfRange { value: String, max: u32 },
}

impl Rejection {
    /// Every [`Self::code`], so that a counter by reason can show each at 0 before the first rejection.
    pub const CODES: [&'static str; 10] = [
        "empty_record",
        "not_utf8",
        "not_json",
        "not_an_object",
        "missing_field",
        "wrong_type",
        "empty_patient_id",
        "patient_id_too_long",
        "timestamp_out_of_range",
        "tabs_count_out_of_range",
    ];

    /// Stable snake_case code for dashboards and DLQ consumers.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "empty_record",
            Self::NotUtf8 { .. } => "not_utf8",
            Self::NotJson { .. } => "not_json",
            Self::NotAnObject { .. } => "not_an_object",
            Self::MissingField { .. } => "missing_field",
            Self::WrongType { .. } => "wrong_type",
            Self::EmptyPatientId => "empty_patient_id",
            Self::PatientIdTooLong { .. } => "patient_id_too_long",
            Self::TimestampOutOfRange { .. } => "timestamp_out_of_range",
            Self::TabsCountOutOfRange { .. } => "tabs_count_out_of_range",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "record has no value"),
            Self::NotUtf8 { valid_up_to } => {
                write!(f, "value is not UTF-8 (invalid byte at offset {valid_up_to})")
            }
            Self::NotJson { detail } => write!(f, "value is not JSON: {detail}"),
            Self::NotAnObject { found } => write!(f, "value is a JSON {found}, expected an object"),
            Self::MissingField { field } => write!(f, "field `{field}` is missing"),
            Self::WrongType {
                field,
                expected,
                found,
            } => write!(f, "field `{field}` must be {expected}, found {found}"),
            Self::EmptyPatientId => write!(f, "field `patient_id` is empty"),
            Self::PatientIdTooLong { len } => write!(
                f,
                "field `patient_id` is {len} bytes long, at most {MAX_PATIENT_ID_BYTES} are accepted"
            ),
            Self::TimestampOutOfRange { value } => write!(
                f,
                "field `order_timestamp_ns` is {value}, expected nanoseconds since the Unix epoch \
                 (0 ..= {MAX_ORDER_TIMESTAMP_NS})"
            ),
            Self::TabsCountOutOfRange { value, max } => {
                write!(f, "field `tabs_count` is {value}, expected 1 ..= {max}")
            }
        }
    }
}

impl std::error::Error for Rejection {}

/// The top level of a record: an object's three fields of interest (as raw JSON), or the type of anything else.
enum Top<'a> {
    Object {
        patient_id: Option<&'a RawValue>,
        order_timestamp_ns: Option<&'a RawValue>,
        tabs_count: Option<&'a RawValue>,
    },
    Other(&'static str),
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Top<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut patient_id, mut order_timestamp_ns, mut tabs_count) = (None, None, None);
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "patient_id" => patient_id = Some(map.next_value()?),
                "order_timestamp_ns" => order_timestamp_ns = Some(map.next_value()?),
                "tabs_count" => tabs_count = Some(map.next_value()?),
                // Unknown fields are tolerated, however deep.
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Top::Object {
            patient_id,
            order_timestamp_ns,
            tabs_count,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Top::Other("an array"))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Top::Other("a boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Top::Other("an integer"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Top::Other("an integer"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Top::Other("a decimal number"))
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Top::Other("a string"))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Top::Other("null"))
    }
}

/// The JSON type of a raw value, from its first character (the value is valid JSON).
fn raw_type(raw: &RawValue) -> &'static str {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        _ if text.contains(['.', 'e', 'E']) => "a decimal number",
        _ => "an integer",
    }
}

/// An integer field: its value, however large (`i128` covers every integer up to 38 digits; longer ones are out of
/// any range), or the rejection of another type.
fn integer(raw: &RawValue, field: &'static str) -> Result<Result<i128, String>, Rejection> {
    match raw_type(raw) {
        "an integer" => Ok(raw.get().parse::<i128>().map_err(|_| raw.get().to_owned())),
        found => Err(Rejection::WrongType {
            field,
            expected: "an integer",
            found,
        }),
    }
}

/// Parses and validates one `tabs.orders` record value. `max_tabs_count` is the worker's configured maximum.
///
/// Strict on what the contract fixes (types, ranges, non-empty id) and tolerant of unknown extra fields.
pub fn parse_order(value: Option<&[u8]>, max_tabs_count: u32) -> Result<Order, Rejection> {
    let bytes = match value {
        Some(bytes) if !bytes.is_empty() => bytes,
        _ => return Err(Rejection::Empty),
    };
    let text = std::str::from_utf8(bytes).map_err(|e| Rejection::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    let not_json = |e: serde_json::Error| Rejection::NotJson {
        detail: e.to_string(),
    };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    // No depth limit (a valid order may carry a deeply nested unknown field), and a stack that grows on the heap
    // instead of overflowing.
    deserializer.disable_recursion_limit();
    let top = serde_stacker::Deserializer::new(&mut deserializer)
        .deserialize_any(TopVisitor)
        .map_err(not_json)?;
    deserializer.end().map_err(not_json)?;
    let (patient_id, order_timestamp_ns, tabs_count) = match top {
        Top::Object {
            patient_id,
            order_timestamp_ns,
            tabs_count,
        } => (patient_id, order_timestamp_ns, tabs_count),
        Top::Other(found) => return Err(Rejection::NotAnObject { found }),
    };

    // In the contract's key order: the first field wrong is the one a rejection names.
    let patient_id = patient_id_of(patient_id)?;
    let order_timestamp_ns = order_timestamp_of(order_timestamp_ns)?;
    let tabs_count = tabs_count_of(tabs_count, max_tabs_count)?;
    Ok(Order {
        patient_id,
        tabs_count,
        order_timestamp_ns,
    })
}

/// The order's `patient_id`: a string, not empty, at most [`MAX_PATIENT_ID_BYTES`].
fn patient_id_of(raw: Option<&RawValue>) -> Result<String, Rejection> {
    let raw = raw.ok_or(Rejection::MissingField {
        field: "patient_id",
    })?;
    let patient_id = match raw_type(raw) {
        "a string" => {
            serde_json::from_str::<String>(raw.get()).map_err(|e| Rejection::NotJson {
                detail: e.to_string(),
            })?
        }
        found => {
            return Err(Rejection::WrongType {
                field: "patient_id",
                expected: "a string",
                found,
            })
        }
    };
    if patient_id.is_empty() {
        return Err(Rejection::EmptyPatientId);
    }
    if patient_id.len() > MAX_PATIENT_ID_BYTES {
        return Err(Rejection::PatientIdTooLong {
            len: patient_id.len(),
        });
    }
    Ok(patient_id)
}

/// The order's `order_timestamp_ns`: an integer from 0 to [`MAX_ORDER_TIMESTAMP_NS`].
fn order_timestamp_of(raw: Option<&RawValue>) -> Result<u64, Rejection> {
    let raw = raw.ok_or(Rejection::MissingField {
        field: "order_timestamp_ns",
    })?;
    match integer(raw, "order_timestamp_ns")? {
        Ok(ts) if (0..=i128::from(MAX_ORDER_TIMESTAMP_NS)).contains(&ts) => Ok(ts as u64),
        Ok(_) | Err(_) => Err(Rejection::TimestampOutOfRange {
            value: raw.get().to_owned(),
        }),
    }
}

/// The order's `tabs_count`: an integer from 1 to `max_tabs_count`.
fn tabs_count_of(raw: Option<&RawValue>, max_tabs_count: u32) -> Result<u32, Rejection> {
    let raw = raw.ok_or(Rejection::MissingField {
        field: "tabs_count",
    })?;
    match integer(raw, "tabs_count")? {
        Ok(count) if (1..=i128::from(max_tabs_count)).contains(&count) => Ok(count as u32),
        Ok(_) | Err(_) => Err(Rejection::TabsCountOutOfRange {
            value: raw.get().to_owned(),
            max: max_tabs_count,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::Order;

    const MAX: u32 = 30;

    fn parse(text: &str) -> Result<Order, Rejection> {
        parse_order(Some(text.as_bytes()), MAX)
    }

    fn code(text: &str) -> &'static str {
        parse(text).unwrap_err().code()
    }

    #[test]
    fn codes_lists_every_code_once() {
        let long_id = format!(
            r#"{{"patient_id":"{}","order_timestamp_ns":1,"tabs_count":1}}"#,
            "p".repeat(MAX_PATIENT_ID_BYTES + 1)
        );
        let seen: std::collections::BTreeSet<&str> = [
            parse_order(None, MAX).unwrap_err().code(),
            parse_order(Some(b"\xff"), MAX).unwrap_err().code(),
            code("hello"),
            code("42"),
            code(r#"{"patient_id":"p","tabs_count":1}"#),
            code(r#"{"patient_id":7,"order_timestamp_ns":1,"tabs_count":1}"#),
            code(r#"{"patient_id":"","order_timestamp_ns":1,"tabs_count":1}"#),
            code(&long_id),
            code(r#"{"patient_id":"p","order_timestamp_ns":-1,"tabs_count":1}"#),
            code(r#"{"patient_id":"p","order_timestamp_ns":1,"tabs_count":31}"#),
        ]
        .into_iter()
        .collect();
        let listed: std::collections::BTreeSet<&str> = Rejection::CODES.into_iter().collect();
        assert_eq!(listed.len(), Rejection::CODES.len(), "no code twice");
        assert_eq!(seen, listed);
    }

    #[test]
    fn accepts_a_valid_order_and_ignores_extra_fields() {
        let order =
            parse(r#"{"patient_id":"p","order_timestamp_ns":17,"tabs_count":30,"note":"x"}"#)
                .unwrap();
        assert_eq!(
            order,
            Order {
                patient_id: "p".into(),
                order_timestamp_ns: 17,
                tabs_count: 30
            }
        );
    }

    #[test]
    fn rejects_empty_and_missing_values() {
        assert_eq!(parse_order(None, MAX), Err(Rejection::Empty));
        assert_eq!(parse_order(Some(b""), MAX), Err(Rejection::Empty));
    }

    #[test]
    fn rejects_values_that_are_not_utf8() {
        let err = parse_order(Some(b"{\"patient_id\":\"\xff\"}"), MAX).unwrap_err();
        assert_eq!(err, Rejection::NotUtf8 { valid_up_to: 15 });
        assert_eq!(err.code(), "not_utf8");
    }

    #[test]
    fn rejects_malformed_json() {
        assert_eq!(code("{\"patient_id\":"), "not_json");
        assert_eq!(code("hello"), "not_json");
    }

    #[test]
    fn rejects_json_that_is_not_an_object() {
        assert_eq!(
            parse("[1,2]").unwrap_err(),
            Rejection::NotAnObject { found: "an array" }
        );
        assert_eq!(code("42"), "not_an_object");
        assert_eq!(code("null"), "not_an_object");
    }

    #[test]
    fn rejects_each_missing_field() {
        assert_eq!(
            parse(r#"{"order_timestamp_ns":1,"tabs_count":1}"#).unwrap_err(),
            Rejection::MissingField {
                field: "patient_id"
            }
        );
        assert_eq!(
            parse(r#"{"patient_id":"p","tabs_count":1}"#).unwrap_err(),
            Rejection::MissingField {
                field: "order_timestamp_ns"
            }
        );
        assert_eq!(
            parse(r#"{"patient_id":"p","order_timestamp_ns":1}"#).unwrap_err(),
            Rejection::MissingField {
                field: "tabs_count"
            }
        );
    }

    #[test]
    fn rejects_wrong_types_including_null() {
        assert_eq!(
            parse(r#"{"patient_id":null,"order_timestamp_ns":1,"tabs_count":1}"#).unwrap_err(),
            Rejection::WrongType {
                field: "patient_id",
                expected: "a string",
                found: "null"
            }
        );
        assert_eq!(
            code(r#"{"patient_id":7,"order_timestamp_ns":1,"tabs_count":1}"#),
            "wrong_type"
        );
        assert_eq!(
            code(r#"{"patient_id":"p","order_timestamp_ns":"1","tabs_count":1}"#),
            "wrong_type"
        );
        assert_eq!(
            code(r#"{"patient_id":"p","order_timestamp_ns":1.5,"tabs_count":1}"#),
            "wrong_type"
        );
        assert_eq!(
            code(r#"{"patient_id":"p","order_timestamp_ns":1,"tabs_count":"3"}"#),
            "wrong_type"
        );
        assert_eq!(
            code(r#"{"patient_id":"p","order_timestamp_ns":1,"tabs_count":2.5}"#),
            "wrong_type"
        );
        assert_eq!(
            code(r#"{"patient_id":"p","order_timestamp_ns":1,"tabs_count":1e12}"#),
            "wrong_type"
        );
    }

    #[test]
    fn rejects_empty_and_oversized_patient_ids() {
        assert_eq!(
            parse(r#"{"patient_id":"","order_timestamp_ns":1,"tabs_count":1}"#).unwrap_err(),
            Rejection::EmptyPatientId
        );
        let long = "x".repeat(MAX_PATIENT_ID_BYTES + 1);
        let text = format!(r#"{{"patient_id":"{long}","order_timestamp_ns":1,"tabs_count":1}}"#);
        assert_eq!(code(&text), "patient_id_too_long");
        let longest = "x".repeat(MAX_PATIENT_ID_BYTES);
        let text = format!(r#"{{"patient_id":"{longest}","order_timestamp_ns":1,"tabs_count":1}}"#);
        assert!(parse(&text).is_ok());
    }

    #[test]
    fn a_record_wrong_in_several_fields_is_named_by_the_first_in_the_contracts_order() {
        assert_eq!(
            code(r#"{"tabs_count":0,"order_timestamp_ns":-1,"patient_id":""}"#),
            "empty_patient_id"
        );
        assert_eq!(
            code(r#"{"tabs_count":0,"order_timestamp_ns":-1,"patient_id":"p"}"#),
            "timestamp_out_of_range"
        );
    }

    #[test]
    fn rejects_negative_timestamps() {
        assert_eq!(
            parse(r#"{"patient_id":"p","order_timestamp_ns":-1,"tabs_count":1}"#).unwrap_err(),
            Rejection::TimestampOutOfRange { value: "-1".into() }
        );
    }

    #[test]
    fn rejects_tabs_counts_outside_one_to_max() {
        for bad in [
            "0",
            "-3",
            "31",
            "1000000000000",
            "18446744073709551617",
            "-18446744073709551617",
        ] {
            let text = format!(r#"{{"patient_id":"p","order_timestamp_ns":1,"tabs_count":{bad}}}"#);
            assert_eq!(
                parse(&text).unwrap_err(),
                Rejection::TabsCountOutOfRange {
                    value: bad.into(),
                    max: MAX
                },
                "{bad}"
            );
        }
        assert_eq!(
            parse(r#"{"patient_id":"p","order_timestamp_ns":1,"tabs_count":0}"#).unwrap_err(),
            Rejection::TabsCountOutOfRange {
                value: "0".into(),
                max: MAX
            }
        );
        assert_eq!(
            code(r#"{"patient_id":"p","order_timestamp_ns":1,"tabs_count":1000000000000}"#),
            "tabs_count_out_of_range"
        );
        assert!(parse(r#"{"patient_id":"p","order_timestamp_ns":1,"tabs_count":1}"#).is_ok());
    }

    #[test]
    fn rejection_messages_name_the_field_and_the_limit() {
        let err =
            parse(r#"{"patient_id":"p","order_timestamp_ns":1,"tabs_count":31}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field `tabs_count` is 31, expected 1 ..= 30"
        );
    }

    #[test]
    fn timestamps_are_nanoseconds_up_to_the_largest_signed_64_bit_value() {
        for bad in [
            "9223372036854775808",
            "18446744073709551615",
            "-1",
            "340282366920938463463374607431768211456",
        ] {
            let text = format!(r#"{{"patient_id":"p","order_timestamp_ns":{bad},"tabs_count":1}}"#);
            assert_eq!(
                parse(&text).unwrap_err(),
                Rejection::TimestampOutOfRange { value: bad.into() },
                "{bad}"
            );
        }
        let text = r#"{"patient_id":"p","order_timestamp_ns":9223372036854775807,"tabs_count":1}"#;
        assert_eq!(
            parse(text).unwrap().order_timestamp_ns,
            MAX_ORDER_TIMESTAMP_NS
        );
    }

    #[test]
    fn an_unknown_field_nested_deeply_is_skipped() {
        for depth in [200, 100_000] {
            let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            let text = format!(
                r#"{{"patient_id":"p","extra":{nested},"order_timestamp_ns":7,"tabs_count":2}}"#
            );
            assert_eq!(parse(&text).unwrap().tabs_count, 2, "depth {depth}");
        }
    }

    #[test]
    fn escapes_in_the_patient_id_are_decoded_and_duplicate_keys_keep_the_last() {
        let order = parse(
            r#"{"patient_id":"a\u00e9","order_timestamp_ns":1,"tabs_count":1,"tabs_count":3}"#,
        )
        .unwrap();
        assert_eq!(
            (order.patient_id.as_str(), order.tabs_count),
            ("a\u{e9}", 3)
        );
    }
}
