//! `ferry profile set` and `ferry profile show`: the org's profile record
//! (`engine::policy`), per record type, written like any record (only by
//! holders of the whole org's write scope) and synced like data.

use std::collections::{BTreeMap, BTreeSet};

use engine::Value;
use engine::policy::{DeletePolicy, FieldPolicy, PROFILE_ID, PROFILE_TYPE, SYSTEM_SEGMENT, TypePolicy};
use partitions::{OrgId, RecordType};
use serde_json::json;

use super::*;

/// What `profile set` changes in a type's policy; `None` leaves a part as
/// it is in force.
pub struct ProfileChanges<'a> {
    pub policy: Option<&'a str>,
    pub delete: Option<DeletePolicy>,
    /// The local fields (replacing the list).
    pub local: Option<BTreeSet<String>>,
    /// `Some(None)` sends every record again.
    pub send_when: Option<Option<(String, Value)>>,
    /// `Some(None)` evicts nothing.
    pub evict_after_ack: Option<Option<String>>,
    /// The sealed fields (replacing the list).
    pub sealed: Option<BTreeSet<String>>,
    /// `Some(None)`: no readers.
    pub readers: Option<Option<String>>,
}

impl Node {
    /// Sets the policy of `record_type`: what is given replaces, what is not
    /// stays as it is in force.
    pub fn profile_set(
        &self,
        org: OrgId,
        record_type: &str,
        changes: ProfileChanges<'_>,
    ) -> anyhow::Result<serde_json::Value> {
        let ProfileChanges { policy, delete, local, send_when, evict_after_ack, sealed, readers } = changes;
        let record_type = RecordType::parse(record_type)?;
        let mut current = self.store.profile(org)?.policy(&record_type);
        if let Some(text) = policy {
            let given = TypePolicy::parse_strict(text).map_err(|e| anyhow!("--policy: {e}"))?;
            if text.contains(',') {
                bail!("--policy {text:?}: give the delete rule with --delete-wins or --update-wins");
            }
            current.fields = given.fields;
        }
        if let Some(delete) = delete {
            current.delete = delete;
        }
        if let Some(local) = local {
            if let Some(bad) = local.iter().find(|f| !engine::change::is_field_name(f)) {
                bail!("--local {bad:?} is not a field name");
            }
            current.local = local;
        }
        if let Some(send_when) = send_when {
            if let Some((field, _)) = &send_when
                && !engine::change::is_field_name(field)
            {
                bail!("--send-when {field:?} is not a field name");
            }
            current.send_when = send_when;
        }
        if let Some(evict_after_ack) = evict_after_ack {
            current.evict_after_ack = evict_after_ack;
        }
        if let Some(sealed) = sealed {
            if let Some(bad) = sealed.iter().find(|f| !engine::change::is_field_name(f)) {
                bail!("--sealed {bad:?} is not a field name");
            }
            current.sealed = sealed;
        }
        if let Some(readers) = readers {
            current.readers = readers;
        }
        current.check_sealed().map_err(|e| anyhow!("{e}"))?;
        let set = BTreeMap::from([(record_type.as_str().to_owned(), Value::Text(current.to_text()))]);
        self.put(org, PROFILE_TYPE, PROFILE_ID, SYSTEM_SEGMENT, set, BTreeSet::new())?;
        // A reader that sets the profile publishes its key at once.
        self.publish_sealing_key(org)?;
        Ok(type_json(record_type.as_str(), &current))
    }

    /// Every type the org's profile in force sets, as `profile show` prints.
    pub fn profile_show(&self, org: OrgId) -> anyhow::Result<serde_json::Value> {
        let profile = self.store.profile(org)?;
        Ok(serde_json::Value::Array(profile.types().iter().map(|(t, p)| type_json(t, p)).collect()))
    }
}

fn type_json(record_type: &str, policy: &TypePolicy) -> serde_json::Value {
    json!({
        "type": record_type,
        "policy": match &policy.fields {
            FieldPolicy::Newest => "newest".to_owned(),
            FieldPolicy::Authority(tag) => format!("authority:{tag}"),
            FieldPolicy::Skip => "skip".to_owned(),
        },
        "delete": match policy.delete {
            DeletePolicy::DeleteWins => "delete-wins",
            DeletePolicy::UpdateWins => "update-wins",
        },
        "local": policy.local,
        "send_when": policy.send_when.as_ref().map(|(field, value)| json!({ field: crate::json::to_json(value) })),
        "evict_after_ack": policy.evict_after_ack,
        "sealed": policy.sealed,
        "readers": policy.readers,
    })
}
