//! The record formats of the product contract: orders, delivered tabs, dead letters, and strict order validation.

mod dead_letter;
mod validation;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use dead_letter::{
    DeadLetter, PayloadEncoding, MAX_DEAD_LETTER_KEY_BYTES, MAX_DEAD_LETTER_PAYLOAD_BYTES,
};
pub use validation::{parse_order, Rejection, MAX_ORDER_TIMESTAMP_NS};

/// Longest `patient_id` accepted, in bytes. The id is copied into every tab of an order, so an unbounded id would
/// let one hostile order produce records larger than the broker accepts, which a maker must never crash on.
pub const MAX_PATIENT_ID_BYTES: usize = 256;

/// A tab order, as published on `tabs.orders` with the patient id as key. Its keys are written in the original's
/// order: `patient_id`, `tabs_count`, `order_timestamp_ns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Who ordered; also the record key, so one patient's orders stay in one partition, in order.
    pub patient_id: String,
    /// How many tabs to make, `1..=max`.
    pub tabs_count: u32,
    /// Nanoseconds since the Unix epoch (`0 ..= MAX_ORDER_TIMESTAMP_NS`), strictly increasing per patient: with
    /// `patient_id` it names the order.
    pub order_timestamp_ns: u64,
}

/// One made tab, as published on `tabs.deliveries` with the patient id as key; keys in the original's order,
/// `delivery_timestamp_ns` last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tab {
    /// The ordering patient.
    pub patient_id: String,
    /// The order this tab belongs to.
    pub order_timestamp_ns: u64,
    /// `tabs_count` of the order.
    pub order_tabs_count: u32,
    /// Position of this tab in its order, `1..=order_tabs_count`.
    pub seq_in_order: u32,
    /// Proof of work standing for the material tab; see [`tab_pow`].
    pub tab_pow: String,
    /// When the tab was handed to Kafka, nanoseconds since the Unix epoch.
    pub delivery_timestamp_ns: u64,
}

impl Tab {
    /// Makes tab `seq_in_order` of `order`: computes its proof of work. The delivery time is stamped later, when
    /// the tab is handed to Kafka.
    pub fn make(order: &Order, seq_in_order: u32) -> Self {
        Self {
            patient_id: order.patient_id.clone(),
            order_timestamp_ns: order.order_timestamp_ns,
            order_tabs_count: order.tabs_count,
            seq_in_order,
            tab_pow: tab_pow(&order.patient_id, order.order_timestamp_ns, seq_in_order),
            delivery_timestamp_ns: 0,
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
    tab_pow_hex(&tab_pow_bytes(patient_id, order_timestamp_ns, seq_in_order))
}

/// A proof of work's bytes as a tab carries them: lowercase hex.
pub fn tab_pow_hex(proof: &[u8; 32]) -> String {
    hex::encode(proof)
}

/// [`tab_pow`] before its hex encoding: the 32 bytes of the SHA-256.
pub fn tab_pow_bytes(patient_id: &str, order_timestamp_ns: u64, seq_in_order: u32) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(patient_id.as_bytes());
    hasher.update(order_timestamp_ns.to_string().as_bytes());
    hasher.update(seq_in_order.to_string().as_bytes());
    hasher.finalize().into()
}

/// Serializes a record value. Serializing these plain structs cannot fail (no maps with non-string keys, no
/// custom serializers), so a failure would be a programming error.
pub fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("plain data structs always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn records_write_their_keys_in_the_original_s_order() {
        let order = Order {
            patient_id: "a3c5".into(),
            tabs_count: 12,
            order_timestamp_ns: 1795853039904804609,
        };
        assert_eq!(
            String::from_utf8(to_json(&order)).unwrap(),
            r#"{"patient_id":"a3c5","tabs_count":12,"order_timestamp_ns":1795853039904804609}"#
        );
        let tab = Tab {
            delivery_timestamp_ns: 1795853041908712000,
            ..Tab::make(&order, 1)
        };
        let json = String::from_utf8(to_json(&tab)).unwrap();
        let keys: Vec<&str> = [
            "patient_id",
            "order_timestamp_ns",
            "order_tabs_count",
            "seq_in_order",
            "tab_pow",
            "delivery_timestamp_ns",
        ]
        .into_iter()
        .collect();
        let positions: Vec<usize> = keys
            .iter()
            .map(|k| json.find(&format!("\"{k}\"")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{json}");
        assert_eq!(parse_order(Some(&to_json(&order)), 30).unwrap(), order);
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
}
