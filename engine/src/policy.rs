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
//! …,update-wins               an update concurrent with a delete wins (default: the delete)
//! ```
//!
//! Unknown words fall back to the defaults, so every node reads every
//! profile the same way.

use std::cmp::Ordering;
use std::collections::BTreeMap;

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
}

impl Default for TypePolicy {
    fn default() -> TypePolicy {
        TypePolicy { fields: FieldPolicy::Newest, delete: DeletePolicy::DeleteWins }
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
            }
        }
        policy
    }

    pub fn to_text(&self) -> String {
        let fields = match &self.fields {
            FieldPolicy::Newest => "newest".to_owned(),
            FieldPolicy::Authority(tag) => format!("authority:{tag}"),
        };
        match self.delete {
            DeletePolicy::DeleteWins => fields,
            DeletePolicy::UpdateWins => format!("{fields},update-wins"),
        }
    }

    /// The total order on changes for one field: the greatest wins.
    pub fn compare(&self, a: &Change, b: &Change) -> Ordering {
        self.rank(a).cmp(&self.rank(b))
    }

    fn rank(&self, c: &Change) -> (bool, Hlc, InstanceId) {
        let authoritative = match &self.fields {
            FieldPolicy::Authority(tag) => c.authority.as_deref() == Some(tag.as_str()),
            FieldPolicy::Newest => false,
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
}
