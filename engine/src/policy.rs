//! Merge policies: how a conflict on one field (or a delete against an
//! update) becomes a single visible value, the same on every node.
//!
//! Policies belong to the organisation: they are read from the profile
//! record (type `ferry.profile`, id `profile`) in the org's system partition
//! `<org>:ferry`, which only holders of the org's write scope may write. Each
//! field of the profile names a record type; its value is a text:
//!
//! ```text
//! newest                      the higher (hybrid clock, instance id) wins (the default)
//! authority:central           a change whose author's certificate carries the
//!                             authority tag `central` wins; ties fall back to newest
//! skip                        concurrent writes of a field both lose: it keeps the
//!                             value both writers had seen last, and both new values
//!                             are conflicts until resolved (`merge.rs`, "Skip")
//! …,update-wins               an update concurrent with a delete wins (default: the delete)
//! …,local:password_hash       the field stays on the node that writes it (repeatable)
//! …,send-when:completed=true  a record is sent only once the field holds the value
//! …,evict-after-ack:central   a node that may only write the type (`wo`) removes
//!                             its copy once a node with authority `central`
//!                             acknowledged it (`Store::evict_acknowledged`)
//! …,sealed:answer,readers:central
//!                             the field is sealed (HPKE) to the keys the nodes
//!                             with authority `central` publish (`crate::sealed`)
//! ```
//!
//! A local write of a profile with an unknown word is refused
//! (`TypePolicy::parse_strict`). A profile received with one (from a newer
//! version, or written by an older one that did not check) does not change
//! what this node applies: it keeps the last policy it could read for that
//! type, and the ledger of the session says so (`Store::persist`).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use partitions::{OrgId, Partition, RecordType};

use crate::change::Change;
use crate::ids::{Hlc, InstanceId};
use crate::value::Value;

/// The record type of org profiles.
pub const PROFILE_TYPE: &str = "ferry.profile";
/// The id of the profile record.
pub const PROFILE_ID: &str = "profile";
/// The segment of every org's system partition.
pub const SYSTEM_SEGMENT: &str = "ferry";

/// The org's system partition, `<org>:ferry`, where profiles and revocations
/// live and which every member of the org may read.
pub fn system_partition(org: OrgId) -> Partition {
    Partition::root(org).child(SYSTEM_SEGMENT).expect("`ferry` is a valid segment")
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldPolicy {
    Newest,
    Authority(String),
    /// SENAITE's skip: a field written on both sides keeps the value both
    /// had seen last (`merge.rs`, "Skip").
    Skip,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeletePolicy {
    DeleteWins,
    UpdateWins,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypePolicy {
    pub fields: FieldPolicy,
    pub delete: DeletePolicy,
    /// Fields stored only on the node that writes them: never in a change,
    /// a bundle or a peer's store (TAO's `excludedProperties`). The text
    /// names each as `local:NAME`, with `%` and `,` in NAME written `%25`
    /// and `%2C`.
    pub local: BTreeSet<String>,
    /// Send when finished (TAO sends only finished results): a record is
    /// offered to no peer while it is shown with this field not holding
    /// this value (`send-when:FIELD=VALUE`; the value is `true`, `false`, a
    /// whole number, or `'` and a text). docs/protocol.md, "Send when
    /// finished"; `View::may_send`).
    pub send_when: Option<(String, Value)>,
    /// Push once, then evict (TAO's `deleteAfterSend`): a node whose
    /// certificate gives the type `wo` removes its copy of a record once a
    /// node holding this authority tag durably acknowledged all of it
    /// (`evict-after-ack:TAG`).
    pub evict_after_ack: Option<String>,
    /// Sealed fields (TAO: results only the central can read): a writer
    /// seals each value to every key the `readers` publish before the
    /// change is signed (`crate::sealed`). The text names each as
    /// `sealed:NAME`, encoded as `local:` names are.
    pub sealed: BTreeSet<String>,
    /// The authority tag whose published keys the sealed fields are sealed
    /// to (`readers:TAG`); a policy with sealed fields has one.
    pub readers: Option<String>,
}

impl Default for TypePolicy {
    fn default() -> TypePolicy {
        TypePolicy {
            fields: FieldPolicy::Newest,
            delete: DeletePolicy::DeleteWins,
            local: BTreeSet::new(),
            send_when: None,
            evict_after_ack: None,
            sealed: BTreeSet::new(),
            readers: None,
        }
    }
}

/// A field name (or a text) as part of one word of a policy text.
fn encode_name(name: &str) -> String {
    name.replace('%', "%25").replace(',', "%2C").replace('=', "%3D")
}

fn decode_text(word: &str) -> String {
    word.replace("%2C", ",").replace("%3D", "=").replace("%25", "%")
}

fn decode_name(word: &str) -> Option<String> {
    let name = decode_text(word);
    crate::change::is_field_name(&name).then_some(name)
}

/// Whether a text is an authority tag as certificates carry them.
pub fn is_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= crate::limits::AUTHORITY_BYTES_MAX
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// `send-when:FIELD=VALUE` as a field and a value.
fn decode_send_when(word: &str) -> Option<(String, Value)> {
    let (name, value) = word.split_once('=')?;
    let value = match value {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => match value.strip_prefix('\'') {
            Some(text) => Value::Text(decode_text(text)),
            None => Value::Int(value.parse().ok()?),
        },
    };
    Some((decode_name(name)?, value))
}

/// A value `send-when` can wait for as its text, if it is one.
pub fn send_when_text(value: &Value) -> Option<String> {
    match value {
        Value::Bool(b) => Some(b.to_string()),
        Value::Int(i) => Some(i.to_string()),
        Value::Text(t) => Some(format!("'{}", encode_name(t))),
        _ => None,
    }
}

impl TypePolicy {
    pub fn parse(text: &str) -> TypePolicy {
        let mut policy = TypePolicy::default();
        for word in text.split(',').map(str::trim) {
            if word == "update-wins" {
                policy.delete = DeletePolicy::UpdateWins;
            } else if word == "delete-wins" {
                policy.delete = DeletePolicy::DeleteWins;
            } else if let Some(tag) = word.strip_prefix("authority:") {
                policy.fields = FieldPolicy::Authority(tag.to_owned());
            } else if word == "newest" {
                policy.fields = FieldPolicy::Newest;
            } else if word == "skip" {
                policy.fields = FieldPolicy::Skip;
            } else if let Some(name) = word.strip_prefix("local:").and_then(decode_name) {
                policy.local.insert(name);
            } else if let Some(when) = word.strip_prefix("send-when:").and_then(decode_send_when) {
                policy.send_when = Some(when);
            } else if let Some(tag) = word.strip_prefix("evict-after-ack:").filter(|t| is_tag(t)) {
                policy.evict_after_ack = Some(tag.to_owned());
            } else if let Some(name) = word.strip_prefix("sealed:").and_then(decode_name) {
                policy.sealed.insert(name);
            } else if let Some(tag) = word.strip_prefix("readers:").filter(|t| is_tag(t)) {
                policy.readers = Some(tag.to_owned());
            }
        }
        policy
    }

    /// Reads a policy, refusing any word it does not know.
    pub fn parse_strict(text: &str) -> Result<TypePolicy, String> {
        let mut policy = TypePolicy::default();
        for word in text.split(',').map(str::trim) {
            match word {
                "update-wins" => policy.delete = DeletePolicy::UpdateWins,
                "delete-wins" => policy.delete = DeletePolicy::DeleteWins,
                "newest" => policy.fields = FieldPolicy::Newest,
                "skip" => policy.fields = FieldPolicy::Skip,
                _ if word.starts_with("local:") => match decode_name(&word["local:".len()..]) {
                    Some(name) => {
                        policy.local.insert(name);
                    }
                    None => return Err(format!("{word:?} in policy {text:?} names no valid field")),
                },
                _ if word.starts_with("send-when:") => match decode_send_when(&word["send-when:".len()..]) {
                    Some(when) => policy.send_when = Some(when),
                    None => {
                        return Err(format!(
                            "{word:?} in policy {text:?}: send-when takes FIELD=VALUE, the value true, false, a whole number or a text"
                        ));
                    }
                },
                _ if word.starts_with("evict-after-ack:") => match word.strip_prefix("evict-after-ack:") {
                    Some(tag) if is_tag(tag) => policy.evict_after_ack = Some(tag.to_owned()),
                    _ => return Err(format!("{word:?} in policy {text:?}: evict-after-ack takes an authority tag")),
                },
                _ if word.starts_with("sealed:") => match decode_name(&word["sealed:".len()..]) {
                    Some(name) => {
                        policy.sealed.insert(name);
                    }
                    None => return Err(format!("{word:?} in policy {text:?} names no valid field")),
                },
                _ if word.starts_with("readers:") => match word.strip_prefix("readers:") {
                    Some(tag) if is_tag(tag) => policy.readers = Some(tag.to_owned()),
                    _ => return Err(format!("{word:?} in policy {text:?}: readers takes an authority tag")),
                },
                _ => match word.strip_prefix("authority:") {
                    Some(tag) if is_tag(tag) => {
                        policy.fields = FieldPolicy::Authority(tag.to_owned());
                    }
                    _ => {
                        return Err(format!(
                            "unknown word {word:?} in policy {text:?}: a policy is newest, authority:TAG or skip, optionally with ,delete-wins or ,update-wins, ,local:FIELD, ,send-when:FIELD=VALUE, ,evict-after-ack:TAG and ,sealed:FIELD with ,readers:TAG"
                        ));
                    }
                },
            }
        }
        policy.check_sealed().map_err(|e| format!("policy {text:?}: {e}"))?;
        Ok(policy)
    }

    /// What sealed fields need: readers to seal to, and no field that is
    /// also local (never sent at all) or the send-when field (a node could
    /// never tell the record is finished, and would hold it back forever).
    pub fn check_sealed(&self) -> Result<(), String> {
        if self.sealed.is_empty() {
            return Ok(());
        }
        if self.readers.is_none() {
            return Err("sealed fields need readers: give the authority tag whose keys they are sealed to".into());
        }
        if let Some(both) = self.sealed.intersection(&self.local).next() {
            return Err(format!("{both} cannot be both sealed and local"));
        }
        if let Some((field, _)) = &self.send_when
            && self.sealed.contains(field)
        {
            return Err(format!(
                "{field} decides when a record is sent, so it cannot be sealed: no node could read it"
            ));
        }
        Ok(())
    }

    pub fn to_text(&self) -> String {
        let fields = match &self.fields {
            FieldPolicy::Newest => "newest".to_owned(),
            FieldPolicy::Authority(tag) => format!("authority:{tag}"),
            FieldPolicy::Skip => "skip".to_owned(),
        };
        let mut text = match self.delete {
            DeletePolicy::DeleteWins => fields,
            DeletePolicy::UpdateWins => format!("{fields},update-wins"),
        };
        for name in &self.local {
            text.push_str(",local:");
            text.push_str(&encode_name(name));
        }
        if let Some((name, value)) = &self.send_when
            && let Some(value) = send_when_text(value)
        {
            text.push_str(&format!(",send-when:{}={value}", encode_name(name)));
        }
        if let Some(tag) = &self.evict_after_ack {
            text.push_str(&format!(",evict-after-ack:{tag}"));
        }
        for name in &self.sealed {
            text.push_str(",sealed:");
            text.push_str(&encode_name(name));
        }
        if let Some(tag) = &self.readers {
            text.push_str(&format!(",readers:{tag}"));
        }
        text
    }

    /// The total order on changes for one field: the greatest wins (under
    /// `skip`, where no concurrent write wins, the order in which conflicts
    /// are listed).
    pub fn compare(&self, a: &Change, b: &Change) -> Ordering {
        self.rank(a).cmp(&self.rank(b))
    }

    fn rank(&self, c: &Change) -> (bool, Hlc, InstanceId) {
        let authoritative = match &self.fields {
            FieldPolicy::Authority(tag) => c.authority.as_deref() == Some(tag.as_str()),
            FieldPolicy::Newest | FieldPolicy::Skip => false,
        };
        (authoritative, c.hlc, c.author)
    }
}

/// An org's policies by record type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    types: BTreeMap<String, TypePolicy>,
}

impl Profile {
    /// Reads a profile record's visible fields.
    pub fn from_fields(fields: &BTreeMap<String, Value>) -> Profile {
        let types = fields
            .iter()
            .filter_map(|(name, value)| value.as_str().map(|text| (name.clone(), TypePolicy::parse(text))))
            .collect();
        Profile { types }
    }

    pub fn policy(&self, record_type: &RecordType) -> TypePolicy {
        self.types.get(record_type.as_str()).cloned().unwrap_or_default()
    }

    /// The policies this profile sets, by type.
    pub fn types(&self) -> &BTreeMap<String, TypePolicy> {
        &self.types
    }

    /// A profile from the texts a node could read (`Readable`).
    pub fn from_texts(texts: &BTreeMap<String, String>) -> Profile {
        Profile { types: texts.iter().map(|(t, text)| (t.clone(), TypePolicy::parse(text))).collect() }
    }
}

/// Reads a profile record's visible fields against the texts this node
/// read last (`last`): each type whose text reads strictly takes it; a type
/// whose text does not keeps its last readable text (or none), and says
/// why. Returns the texts now in force and the reasons.
pub fn readable_texts(
    fields: &BTreeMap<String, Value>,
    last: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, Vec<String>) {
    let mut texts = BTreeMap::new();
    let mut unread = Vec::new();
    for (name, value) in fields {
        let parsed = match value.as_str() {
            Some(text) => TypePolicy::parse_strict(text).map(|_| text.to_owned()),
            None => Err("the policy is not a text".to_owned()),
        };
        match parsed {
            Ok(text) => {
                texts.insert(name.clone(), text);
            }
            Err(e) => {
                let kept = last.get(name);
                unread.push(format!(
                    "the org's profile sets a policy for {name} this node cannot read ({e}); it keeps {}",
                    kept.map_or("the default (newest, delete-wins)".to_owned(), |t| format!(
                        "its last readable one, {t:?}"
                    ))
                ));
                if let Some(kept) = kept {
                    texts.insert(name.clone(), kept.clone());
                }
            }
        }
    }
    (texts, unread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_fields_round_trip_through_the_text_even_with_commas_and_percents() {
        let mut policy = TypePolicy::parse_strict("authority:central,update-wins").expect("reads");
        policy.local = ["password_hash", "a,b", "100%", "%2C"].map(String::from).into();
        let text = policy.to_text();
        assert_eq!(TypePolicy::parse_strict(&text), Ok(policy.clone()), "{text}");
        assert_eq!(TypePolicy::parse(&text), policy);
    }

    #[test]
    fn send_when_round_trips_for_each_kind_of_value() {
        for value in [Value::Bool(true), Value::Bool(false), Value::Int(-3), Value::Text("done, =%'".into())] {
            let policy = TypePolicy { send_when: Some(("state=x".into(), value)), ..TypePolicy::default() };
            let text = policy.to_text();
            assert_eq!(TypePolicy::parse_strict(&text), Ok(policy.clone()), "{text}");
        }
        assert!(TypePolicy::parse_strict("newest,send-when:completed").is_err());
        assert!(TypePolicy::parse_strict("newest,send-when:completed=yes").is_err());
    }

    #[test]
    fn evict_after_ack_round_trips_and_needs_a_tag() {
        let policy = TypePolicy {
            evict_after_ack: Some("central".into()),
            send_when: Some(("completed".into(), Value::Bool(true))),
            ..TypePolicy::default()
        };
        let text = policy.to_text();
        assert_eq!(text, "newest,send-when:completed=true,evict-after-ack:central");
        assert_eq!(TypePolicy::parse_strict(&text), Ok(policy.clone()));
        assert_eq!(TypePolicy::parse(&text), policy);
        assert!(TypePolicy::parse_strict("newest,evict-after-ack:").is_err());
        assert!(TypePolicy::parse_strict("newest,evict-after-ack:a b").is_err());
    }

    #[test]
    fn sealed_fields_round_trip_and_need_readers_and_no_overlap() {
        let policy = TypePolicy {
            sealed: ["answer", "a,b"].map(String::from).into(),
            readers: Some("central".into()),
            send_when: Some(("completed".into(), Value::Bool(true))),
            ..TypePolicy::default()
        };
        let text = policy.to_text();
        assert_eq!(text, "newest,send-when:completed=true,sealed:a%2Cb,sealed:answer,readers:central");
        assert_eq!(TypePolicy::parse_strict(&text), Ok(policy.clone()));
        assert_eq!(TypePolicy::parse(&text), policy);
        assert!(TypePolicy::parse_strict("newest,sealed:answer").is_err(), "no readers");
        assert!(TypePolicy::parse_strict("newest,sealed:answer,readers:").is_err());
        assert!(TypePolicy::parse_strict("newest,sealed:answer,local:answer,readers:c").is_err());
        assert!(TypePolicy::parse_strict("newest,sealed:done,send-when:done=true,readers:c").is_err());
        assert!(TypePolicy::parse_strict("newest,readers:central").is_ok(), "readers alone seal nothing");
    }

    #[test]
    fn a_local_word_without_a_field_is_refused() {
        assert!(TypePolicy::parse_strict("newest,local:").is_err());
        assert!(TypePolicy::parse_strict("newest,local:\u{7}").is_err());
        assert_eq!(TypePolicy::parse_strict("newest").expect("reads").local, BTreeSet::new());
    }
}
