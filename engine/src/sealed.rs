//! Sealed fields (SPEC §6.2; docs/certificates.md, "Sealing keys"): values
//! only the nodes holding an authority can read. Not to be confused with
//! `seal`, how an author signs its changes.
//!
//! The engine holds no cryptography for them. A sealed value is an ordinary
//! map value, the *envelope*:
//!
//! ```text
//! {"$sealed": {"readers": TAG, "to": [box, …]}}
//! box = key id (8 bytes) ‖ HPKE encapsulated key (32) ‖ ciphertext
//! ```
//!
//! one box per published key of the readers, so it merges, is stored and is
//! relayed as any value, opaque to every node without a private key. The
//! node seals and opens (node/src/sealing.rs). What the engine does:
//! - refuses a local write that would put anything but an envelope of the
//!   type's readers into a sealed field (`check_sealed_write`, called by
//!   `Store::write_with`): a write path that forgot to seal fails, it never
//!   sends plaintext;
//! - finds the keys the readers published (`Store::reader_keys`, in
//!   store/read.rs): records
//!   of type `ferry.sealing-key` in the org's system partition, id the
//!   publishing node's author key in hex, fields `readers` (the tag) and
//!   `key` (the X25519 public key), each of whose retained changes that
//!   node wrote under that authority (which every receiver checked against
//!   the author's certificate): no node can publish a key in another's name.

use std::collections::BTreeMap;

use crate::change::RecordKey;
use crate::policy::TypePolicy;
use crate::value::Value;

/// The one key of an envelope map (and of the placeholder nodes without a
/// private key show: `{"$sealed": {"readers": TAG}}`).
pub const SEALED_KEY: &str = "$sealed";
/// The record type of published sealing keys, in `<org>:ferry`.
pub const KEY_TYPE: &str = "ferry.sealing-key";
/// The fields of a key record.
pub const KEY_READERS_FIELD: &str = "readers";
pub const KEY_PUBLIC_FIELD: &str = "key";
/// A box names its key by the first bytes of the key's BLAKE3 hash.
pub const KEY_ID_BYTES: usize = 8;
/// An X25519 public key, and HPKE's encapsulated key for it.
pub const PUBLIC_BYTES: usize = 32;

/// A value sealed to one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedBox {
    pub key_id: [u8; KEY_ID_BYTES],
    pub enc: [u8; PUBLIC_BYTES],
    pub ciphertext: Vec<u8>,
}

/// A sealed value: one box per reader key it was sealed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub readers: String,
    pub boxes: Vec<SealedBox>,
}

impl Envelope {
    pub fn to_value(&self) -> Value {
        let boxes =
            self.boxes.iter().map(|b| Value::Bytes([&b.key_id[..], &b.enc[..], &b.ciphertext[..]].concat())).collect();
        let inner = BTreeMap::from([
            ("readers".to_owned(), Value::Text(self.readers.clone())),
            ("to".to_owned(), Value::Array(boxes)),
        ]);
        Value::Map(BTreeMap::from([(SEALED_KEY.to_owned(), Value::Map(inner))]))
    }

    /// The envelope a value is, if it is a well-formed one with a box.
    pub fn from_value(value: &Value) -> Option<Envelope> {
        let inner = sealed_map(value)?;
        if inner.len() != 2 {
            return None;
        }
        let readers = inner.get("readers")?.as_str()?.to_owned();
        let Some(Value::Array(items)) = inner.get("to") else { return None };
        let mut boxes = Vec::with_capacity(items.len());
        for item in items {
            let Value::Bytes(bytes) = item else { return None };
            if bytes.len() <= KEY_ID_BYTES + PUBLIC_BYTES {
                return None;
            }
            let (key_id, rest) = bytes.split_at(KEY_ID_BYTES);
            let (enc, ciphertext) = rest.split_at(PUBLIC_BYTES);
            boxes.push(SealedBox {
                key_id: key_id.try_into().expect("split at the size"),
                enc: enc.try_into().expect("split at the size"),
                ciphertext: ciphertext.to_vec(),
            });
        }
        (!boxes.is_empty()).then_some(Envelope { readers, boxes })
    }
}

fn sealed_map(value: &Value) -> Option<&BTreeMap<String, Value>> {
    match value {
        Value::Map(outer) if outer.len() == 1 => match outer.get(SEALED_KEY)? {
            Value::Map(inner) => Some(inner),
            _ => None,
        },
        _ => None,
    }
}

/// The readers a sealed value (an envelope or a placeholder) names.
pub fn readers_of(value: &Value) -> Option<&str> {
    sealed_map(value)?.get("readers")?.as_str()
}

/// Whether a value holds a `$sealed` map anywhere (reserved for sealed
/// fields: an application may not write one).
pub fn holds_sealed(value: &Value) -> bool {
    match value {
        Value::Map(items) => items.contains_key(SEALED_KEY) || items.values().any(holds_sealed),
        Value::Array(items) => items.iter().any(holds_sealed),
        _ => false,
    }
}

/// The placeholder a node without the private key shows for a sealed value.
pub fn placeholder(readers: &str) -> Value {
    let inner = BTreeMap::from([("readers".to_owned(), Value::Text(readers.to_owned()))]);
    Value::Map(BTreeMap::from([(SEALED_KEY.to_owned(), Value::Map(inner))]))
}

/// The id a box names a public key by.
pub fn key_id(public: &[u8; PUBLIC_BYTES]) -> [u8; KEY_ID_BYTES] {
    let hash = blake3::derive_key("ferry sealing key id v1", public);
    hash[..KEY_ID_BYTES].try_into().expect("a hash is longer")
}

/// What a box's ciphertext is bound to: the record and the field. A sealed
/// value copied into another record or field does not open.
pub fn associated_data(key: &RecordKey, field: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for part in [key.partition.to_string().as_str(), key.record_type.as_str(), key.id.as_str(), field] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// Why a write's value for a sealed field is refused, if it is: anything
/// but an envelope to the type's readers.
pub fn check_sealed_write(policy: &TypePolicy, set: &BTreeMap<String, Value>) -> Result<(), String> {
    for (field, value) in set {
        let sealed = policy.sealed.contains(field);
        if !sealed {
            if holds_sealed(value) {
                return Err(format!("field {field}: {SEALED_KEY} is reserved for sealed fields"));
            }
            continue;
        }
        let readers = policy.readers.as_deref().unwrap_or("");
        match Envelope::from_value(value) {
            Some(envelope) if envelope.readers == readers => {}
            _ => {
                return Err(format!(
                    "field {field} is sealed to the readers {readers} and this value is not sealed to them: it was not written, and nothing was sent"
                ));
            }
        }
    }
    Ok(())
}

/// A sealing key a reader published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReaderKey {
    /// The id of its key record: the publishing node's author key in hex.
    pub publisher: String,
    pub public: [u8; PUBLIC_BYTES],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        Envelope {
            readers: "central".into(),
            boxes: vec![SealedBox { key_id: [1; 8], enc: [2; 32], ciphertext: vec![3; 20] }],
        }
    }

    #[test]
    fn an_envelope_round_trips_through_its_value_and_a_placeholder_is_none() {
        let e = envelope();
        assert_eq!(Envelope::from_value(&e.to_value()), Some(e.clone()));
        assert_eq!(readers_of(&e.to_value()), Some("central"));
        assert_eq!(Envelope::from_value(&placeholder("central")), None);
        assert_eq!(readers_of(&placeholder("central")), Some("central"));
        let no_boxes = Envelope { boxes: Vec::new(), ..e };
        assert_eq!(Envelope::from_value(&no_boxes.to_value()), None);
    }

    #[test]
    fn a_sealed_field_takes_only_an_envelope_to_its_readers() {
        let policy =
            TypePolicy { sealed: ["answer".into()].into(), readers: Some("central".into()), ..TypePolicy::default() };
        let set = |v: Value| BTreeMap::from([("answer".to_owned(), v)]);
        assert_eq!(check_sealed_write(&policy, &set(envelope().to_value())), Ok(()));
        assert!(check_sealed_write(&policy, &set(Value::Text("plain".into()))).is_err());
        assert!(check_sealed_write(&policy, &set(placeholder("central"))).is_err());
        let other = Envelope { readers: "auditor".into(), ..envelope() };
        assert!(check_sealed_write(&policy, &set(other.to_value())).is_err());
        let elsewhere = BTreeMap::from([("note".to_owned(), Value::Array(vec![placeholder("central")]))]);
        assert!(check_sealed_write(&policy, &elsewhere).is_err(), "reserved outside sealed fields");
        let plain = BTreeMap::from([("note".to_owned(), Value::Text("x".into()))]);
        assert_eq!(check_sealed_write(&policy, &plain), Ok(()));
    }
}
