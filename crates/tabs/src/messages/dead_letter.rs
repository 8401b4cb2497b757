//! Dead letters: one record on `tabs.dlq` per rejected input, with its reason, where it came from, and what it
//! held. A dead letter always fits in a Kafka record whatever the input: a key or payload above its bound is cut
//! (at a character boundary for text) and flagged, with the original's size and SHA-256; the full original stays
//! at its source offset.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Rejection;

/// Most bytes of a rejected value a dead letter carries. Escaped in JSON a byte takes at most six characters,
/// base64 four per three: with the envelope a dead letter stays well under Kafka's default 1 MB record.
pub const MAX_DEAD_LETTER_PAYLOAD_BYTES: usize = 64 * 1024;
/// Most bytes of a rejected record's key a dead letter carries (and uses as its own key).
pub const MAX_DEAD_LETTER_KEY_BYTES: usize = 4 * 1024;

/// How a dead letter carries bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadEncoding {
    /// The original bytes, which were valid UTF-8.
    Utf8,
    /// The standard base64 of the original bytes, which were not UTF-8.
    Base64,
}

/// One rejected input, as published on `tabs.dlq` with the rejected record's key (if any, cut to
/// [`MAX_DEAD_LETTER_KEY_BYTES`]) as key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Where the record was rejected, e.g. `validate`.
    pub step: String,
    /// Human-readable reason.
    pub error: String,
    /// Machine-readable reason, one of [`Rejection::code`].
    pub reason: String,
    /// Where the record came from: the full original is there.
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    /// The record's key, exactly (in `key_encoding`), `None` when it had none.
    pub key: Option<String>,
    pub key_encoding: PayloadEncoding,
    /// Whether `key` holds only the first [`MAX_DEAD_LETTER_KEY_BYTES`] of the key.
    pub key_truncated: bool,
    /// The record's value, exactly (in `payload_encoding`): `None` when the record had no value, `""` when it
    /// had an empty one.
    pub payload: Option<String>,
    pub payload_encoding: PayloadEncoding,
    /// Size of the original value in bytes.
    pub payload_size: usize,
    /// Lowercase hex SHA-256 of the original value (of the empty string when it had none).
    pub payload_sha256: String,
    /// Whether `payload` holds only the first [`MAX_DEAD_LETTER_PAYLOAD_BYTES`] of the value.
    pub payload_truncated: bool,
    /// Set when even the bounded payload could not be written (why): the letter then carries none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_dropped: Option<String>,
    /// Which maker rejected it.
    pub rejected_by: String,
    /// When it was rejected, nanoseconds since the Unix epoch.
    pub rejected_at_ns: u64,
}

/// Bytes as a dead letter carries them: text when UTF-8, else base64; cut to `limit` bytes (at a character
/// boundary), saying so.
fn carry(bytes: &[u8], limit: usize) -> (String, PayloadEncoding, bool) {
    let truncated = bytes.len() > limit;
    let kept = &bytes[..bytes.len().min(limit)];
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            let mut end = kept.len();
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            (text[..end].to_owned(), PayloadEncoding::Utf8, truncated)
        }
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(kept),
            PayloadEncoding::Base64,
            truncated,
        ),
    }
}

fn decode(text: &str, encoding: PayloadEncoding) -> Result<Vec<u8>, base64::DecodeError> {
    match encoding {
        PayloadEncoding::Utf8 => Ok(text.as_bytes().to_vec()),
        PayloadEncoding::Base64 => base64::engine::general_purpose::STANDARD.decode(text),
    }
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
        let (key, key_encoding, key_truncated) = match key {
            Some(key) => {
                let (text, encoding, truncated) = carry(key, MAX_DEAD_LETTER_KEY_BYTES);
                (Some(text), encoding, truncated)
            }
            None => (None, PayloadEncoding::Utf8, false),
        };
        let (payload, payload_encoding, payload_truncated) = match value {
            Some(value) => {
                let (text, encoding, truncated) = carry(value, MAX_DEAD_LETTER_PAYLOAD_BYTES);
                (Some(text), encoding, truncated)
            }
            None => (None, PayloadEncoding::Utf8, false),
        };
        let bytes = value.unwrap_or_default();
        Self {
            step: step.to_owned(),
            error: rejection.to_string(),
            reason: rejection.code().to_owned(),
            source_topic: source_topic.to_owned(),
            source_partition,
            source_offset,
            key,
            key_encoding,
            key_truncated,
            payload,
            payload_encoding,
            payload_size: bytes.len(),
            payload_sha256: hex::encode(Sha256::digest(bytes)),
            payload_truncated,
            payload_dropped: None,
            rejected_by: rejected_by.to_owned(),
            rejected_at_ns,
        }
    }

    /// The same letter without its payload, saying why: for a letter that could not be written with it.
    pub fn without_payload(mut self, why: impl Into<String>) -> Self {
        self.payload = None;
        self.payload_dropped = Some(why.into());
        self
    }

    /// The key the dead letter is published with: the rejected record's, as carried.
    pub fn record_key(&self) -> Option<Vec<u8>> {
        self.key
            .as_deref()
            .and_then(|key| decode(key, self.key_encoding).ok())
    }

    /// The payload bytes it carries (the original's first bytes when truncated), `None` when there were none.
    pub fn payload_bytes(&self) -> Result<Option<Vec<u8>>, base64::DecodeError> {
        self.payload
            .as_deref()
            .map(|payload| decode(payload, self.payload_encoding))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::messages::to_json;

    fn letter(key: Option<&[u8]>, value: Option<&[u8]>) -> DeadLetter {
        DeadLetter::new("validate", &Rejection::Empty, "t", 0, 5, key, value, "m", 1)
    }

    #[test]
    fn utf8_payloads_stay_text_and_others_become_base64() {
        let text = letter(Some(b"k"), Some(b"hi"));
        assert_eq!(text.payload.as_deref(), Some("hi"));
        assert_eq!(text.payload_encoding, PayloadEncoding::Utf8);
        assert_eq!(text.key.as_deref(), Some("k"));

        let binary = letter(None, Some(b"\xff\x00"));
        assert_eq!(binary.payload_encoding, PayloadEncoding::Base64);
        assert_eq!(binary.payload_bytes().unwrap().unwrap(), b"\xff\x00");
        let json: Value = serde_json::from_slice(&to_json(&binary)).unwrap();
        assert_eq!(json["payload_encoding"], "base64");
        assert_eq!(json["reason"], "empty_record");
        assert_eq!(json["source_offset"], 5);
    }

    #[test]
    fn a_binary_key_is_kept_exactly() {
        let key = b"\xfe\xffkey";
        let binary = letter(Some(key), Some(b"x"));
        assert_eq!(binary.key_encoding, PayloadEncoding::Base64);
        assert_eq!(binary.record_key().unwrap(), key);
    }

    #[test]
    fn no_value_and_an_empty_value_differ() {
        let none = letter(None, None);
        let empty = letter(None, Some(b""));
        assert_eq!(none.payload, None);
        assert_eq!(empty.payload.as_deref(), Some(""));
        let json = |l: &DeadLetter| serde_json::from_slice::<Value>(&to_json(l)).unwrap();
        assert_eq!(json(&none)["payload"], Value::Null);
        assert_eq!(json(&empty)["payload"], "");
    }

    #[test]
    fn a_dead_letter_always_fits_in_a_kafka_record() {
        // The inputs that made dead letters larger than the broker accepts: binary, quote-heavy text, plain ASCII,
        // each at a megabyte; and control characters, which JSON escapes as six.
        let inputs: [Vec<u8>; 4] = [
            (0..1_000_000u32).map(|i| (i % 251) as u8 | 0x80).collect(),
            "\"".repeat(1_000_000).into_bytes(),
            "a".repeat(999_898).into_bytes(),
            vec![1u8; 1_000_000],
        ];
        for input in inputs {
            let letter = letter(Some(&input), Some(&input));
            let size = to_json(&letter).len() + letter.record_key().map_or(0, |k| k.len());
            assert!(size < 900_000, "{size} bytes");
            assert!(letter.payload_truncated && letter.key_truncated);
            assert_eq!(letter.payload_size, input.len());
            assert_eq!(letter.payload_sha256, hex::encode(Sha256::digest(&input)));
            let kept = letter.payload_bytes().unwrap().unwrap();
            assert!(input.starts_with(&kept) && !kept.is_empty());
        }
    }

    #[test]
    fn text_is_cut_at_a_character_boundary() {
        let text = "é".repeat(MAX_DEAD_LETTER_PAYLOAD_BYTES);
        let letter = letter(None, Some(text.as_bytes()));
        let kept = letter.payload.unwrap();
        assert!(kept.len() <= MAX_DEAD_LETTER_PAYLOAD_BYTES && kept.chars().all(|c| c == 'é'));
    }
}
