//! The record formats of the product contract: orders, delivered tabs, dead letters, and strict order validation.

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Longest `patient_id` accepted, in bytes. The id is copied into every tab of an order, so an unbounded id would
/// let one hostile order produce records larger than the broker accepts, which a maker must never crash on.
pub const MAX_PATIENT_ID_BYTES: usize = 256;

/// A tab order, as published on `tabs.orders` with the patient id as key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Who ordered; also the record key, so one patient's orders stay in one partition, in order.
    pub patient_id: String,
    /// Nanoseconds since the Unix epoch, strictly increasing per patient: with `patient_id` it names the order.
    pub order_timestamp_ns: u64,
    /// How many tabs to make, `1..=max`.
    pub tabs_count: u32,
}

/// One made tab, as published on `tabs.deliveries` with the patient id as key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tab {
    /// The ordering patient.
    pub patient_id: String,
    /// The order this tab belongs to.
    pub order_timestamp_ns: u64,
    /// When the tab was handed to Kafka, nanoseconds since the Unix epoch.
    pub delivery_timestamp_ns: u64,
    /// `tabs_count` of the order.
    pub order_tabs_count: u32,
    /// Position of this tab in its order, `1..=order_tabs_count`.
    pub seq_in_order: u32,
    /// Proof of work standing for the material tab; see [`tab_pow`].
    pub tab_pow: String,
}

impl Tab {
    /// Makes tab `seq_in_order` of `order`: computes its proof of work. The delivery time is stamped later, when
    /// the tab is handed to Kafka.
    pub fn make(order: &Order, seq_in_order: u32) -> Self {
        Self {
            patient_id: order.patient_id.clone(),
            order_timestamp_ns: order.order_timestamp_ns,
            delivery_timestamp_ns: 0,
            order_tabs_count: order.tabs_count,
            seq_in_order,
            tab_pow: tab_pow(&order.patient_id, order.order_timestamp_ns, seq_in_order),
        }
    }

    /// Whether `tab_pow` is the proof of work of this tab's identity.
    pub fn pow_is_valid(&self) -> bool {
        self.tab_pow == tab_pow(&self.patient_id, self.order_timestamp_ns, self.seq_in_order)
    }
}

/// Lowercase hex SHA-256 of `patient_id + decimal(order_timestamp_ns) + decimal(seq_in_order)`, the original's
/// definition of a tab's proof of work.
pub fn tab_pow(patient_id: &str, order_timestamp_ns: u64, seq_in_order: u32) -> String {
    let mut hasher = Sha256::new();
    hasher.update(patient_id.as_bytes());
    hasher.update(order_timestamp_ns.to_string().as_bytes());
    hasher.update(seq_in_order.to_string().as_bytes());
    hex::encode(hasher.finalize())
}

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
    /// `order_timestamp_ns` is an integer outside `0..=u64::MAX`.
    TimestampOutOfRange { value: String },
    /// `tabs_count` is an integer outside `1..=max`.
    TabsCountOutOfRange { value: String, max: u32 },
}

impl Rejection {
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
                "field `order_timestamp_ns` is {value}, expected nanoseconds since the Unix epoch (0 ..= {})",
                u64::MAX
            ),
            Self::TabsCountOutOfRange { value, max } => {
                write!(f, "field `tabs_count` is {value}, expected 1 ..= {max}")
            }
        }
    }
}

impl std::error::Error for Rejection {}

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
    let json: Value = serde_json::from_str(text).map_err(|e| Rejection::NotJson {
        detail: e.to_string(),
    })?;
    let Value::Object(fields) = json else {
        return Err(Rejection::NotAnObject {
            found: json_type(&json),
        });
    };

    let patient_id = match field(&fields, "patient_id")? {
        Value::String(id) if id.is_empty() => return Err(Rejection::EmptyPatientId),
        Value::String(id) if id.len() > MAX_PATIENT_ID_BYTES => {
            return Err(Rejection::PatientIdTooLong { len: id.len() })
        }
        Value::String(id) => id.clone(),
        other => return Err(wrong_type("patient_id", "a string", other)),
    };

    let order_timestamp_ns = match field(&fields, "order_timestamp_ns")? {
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(ts), _) => ts,
            (None, Some(negative)) => {
                return Err(Rejection::TimestampOutOfRange {
                    value: negative.to_string(),
                })
            }
            (None, None) => {
                return Err(wrong_type(
                    "order_timestamp_ns",
                    "an integer",
                    &Value::Number(n.clone()),
                ))
            }
        },
        other => return Err(wrong_type("order_timestamp_ns", "an integer", other)),
    };

    let tabs_count = match field(&fields, "tabs_count")? {
        Value::Number(n) if n.is_u64() || n.is_i64() => {
            let out_of_range = || Rejection::TabsCountOutOfRange {
                value: n.to_string(),
                max: max_tabs_count,
            };
            let count = n.as_u64().ok_or_else(out_of_range)?;
            match u32::try_from(count) {
                Ok(count) if (1..=max_tabs_count).contains(&count) => count,
                _ => return Err(out_of_range()),
            }
        }
        other => return Err(wrong_type("tabs_count", "an integer", other)),
    };

    Ok(Order {
        patient_id,
        order_timestamp_ns,
        tabs_count,
    })
}

fn field<'a>(fields: &'a Map<String, Value>, name: &'static str) -> Result<&'a Value, Rejection> {
    fields
        .get(name)
        .ok_or(Rejection::MissingField { field: name })
}

fn wrong_type(field: &'static str, expected: &'static str, found: &Value) -> Rejection {
    Rejection::WrongType {
        field,
        expected,
        found: json_type(found),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a decimal number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// How a dead letter carries the rejected payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadEncoding {
    /// `payload` is the original value, which was valid UTF-8.
    Utf8,
    /// `payload` is the standard base64 of the original bytes, which were not UTF-8.
    Base64,
}

/// One rejected input, as published on `tabs.dlq` with the rejected record's key (if any) as key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Where the record was rejected, e.g. `validate`.
    pub step: String,
    /// Human-readable reason.
    pub error: String,
    /// Machine-readable reason, one of [`Rejection::code`].
    pub reason: String,
    /// Where the record came from.
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    /// The record key as text, if it had one (lossy if it was not UTF-8).
    pub key: Option<String>,
    /// The original value; empty when the record had none.
    pub payload: String,
    pub payload_encoding: PayloadEncoding,
    /// Which maker rejected it.
    pub rejected_by: String,
    /// When it was rejected, nanoseconds since the Unix epoch.
    pub rejected_at_ns: u64,
}

impl DeadLetter {
    /// Builds the dead letter for a record rejected at `step` for `rejection`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        step: &str,
        rejection: &Rejection,
        source_topic: &str,
        source_partition: i32,
        source_offset: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        rejected_by: &str,
        rejected_at_ns: u64,
    ) -> Self {
        let value = value.unwrap_or_default();
        let (payload, payload_encoding) = match std::str::from_utf8(value) {
            Ok(text) => (text.to_owned(), PayloadEncoding::Utf8),
            Err(_) => (
                base64::engine::general_purpose::STANDARD.encode(value),
                PayloadEncoding::Base64,
            ),
        };
        Self {
            step: step.to_owned(),
            error: rejection.to_string(),
            reason: rejection.code().to_owned(),
            source_topic: source_topic.to_owned(),
            source_partition,
            source_offset,
            key: key.map(|k| String::from_utf8_lossy(k).into_owned()),
            payload,
            payload_encoding,
            rejected_by: rejected_by.to_owned(),
            rejected_at_ns,
        }
    }

    /// The original payload bytes.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        match self.payload_encoding {
            PayloadEncoding::Utf8 => Ok(self.payload.clone().into_bytes()),
            PayloadEncoding::Base64 => {
                base64::engine::general_purpose::STANDARD.decode(&self.payload)
            }
        }
    }
}

/// Serializes a record value. Serializing these plain structs cannot fail (no maps with non-string keys, no
/// custom serializers), so a failure would be a programming error.
pub fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("plain data structs always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u32 = 30;

    fn parse(text: &str) -> Result<Order, Rejection> {
        parse_order(Some(text.as_bytes()), MAX)
    }

    fn code(text: &str) -> &'static str {
        parse(text).unwrap_err().code()
    }

    #[test]
    fn tab_pow_matches_known_answers() {
        // Computed independently with Python's hashlib.sha256((id + str(ts) + str(seq)).encode()).hexdigest().
        assert_eq!(
            tab_pow("a3c5", 1795853039904804609, 1),
            "39e769cc77b6e4bc10876a046eeee97d7de4851c16b3614f6a26cf4f27a42679"
        );
        assert_eq!(
            tab_pow("patient-7", 1, 12),
            "2e003d741fa2365d08ab50e23d2a492b48f7e0a865c07b6529656fec64663cd3"
        );
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
    fn order_round_trips_through_json() {
        let order = Order {
            patient_id: "a3c5".into(),
            order_timestamp_ns: 1795853039904804609,
            tabs_count: 12,
        };
        let bytes = to_json(&order);
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"patient_id":"a3c5","order_timestamp_ns":1795853039904804609,"tabs_count":12}"#
        );
        assert_eq!(parse_order(Some(&bytes), MAX).unwrap(), order);
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
    fn rejects_negative_timestamps() {
        assert_eq!(
            parse(r#"{"patient_id":"p","order_timestamp_ns":-1,"tabs_count":1}"#).unwrap_err(),
            Rejection::TimestampOutOfRange { value: "-1".into() }
        );
    }

    #[test]
    fn rejects_tabs_counts_outside_one_to_max() {
        for bad in ["0", "-3", "31", "1000000000000", "18446744073709551616"] {
            let text = format!(r#"{{"patient_id":"p","order_timestamp_ns":1,"tabs_count":{bad}}}"#);
            let err = parse(&text).unwrap_err();
            assert!(
                matches!(
                    err,
                    Rejection::TabsCountOutOfRange { .. } | Rejection::WrongType { .. }
                ),
                "{bad}: {err:?}"
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
    fn made_tabs_carry_a_valid_proof_of_work() {
        let order = Order {
            patient_id: "a3c5".into(),
            order_timestamp_ns: 1795853039904804609,
            tabs_count: 3,
        };
        let tab = Tab::make(&order, 1);
        assert_eq!(tab.order_tabs_count, 3);
        assert!(tab.pow_is_valid());
        let forged = Tab {
            seq_in_order: 2,
            ..tab
        };
        assert!(!forged.pow_is_valid());
    }

    #[test]
    fn dead_letters_keep_utf8_payloads_as_text_and_others_as_base64() {
        let rejection = Rejection::Empty;
        let text = DeadLetter::new(
            "validate",
            &rejection,
            "t",
            0,
            5,
            Some(b"k"),
            Some(b"hi"),
            "m",
            1,
        );
        assert_eq!(text.payload, "hi");
        assert_eq!(text.payload_encoding, PayloadEncoding::Utf8);
        assert_eq!(text.key.as_deref(), Some("k"));

        let binary = DeadLetter::new(
            "validate",
            &rejection,
            "t",
            0,
            5,
            None,
            Some(b"\xff\x00"),
            "m",
            1,
        );
        assert_eq!(binary.payload_encoding, PayloadEncoding::Base64);
        assert_eq!(binary.payload_bytes().unwrap(), b"\xff\x00");
        let json: Value = serde_json::from_slice(&to_json(&binary)).unwrap();
        assert_eq!(json["payload_encoding"], "base64");
        assert_eq!(json["reason"], "empty_record");
        assert_eq!(json["source_offset"], 5);
    }
}
