//! `ferry profile set` and `ferry profile show`: the org's profile record
//! (`engine::policy`), per record type, written like any record (only by
//! holders of the whole org's write scope) and synced like data.

use std::collections::{BTreeMap, BTreeSet};

use engine::Value;
use engine::policy::{DeletePolicy, FieldPolicy, PROFILE_ID, PROFILE_TYPE, SYSTEM_SEGMENT, TypePolicy};
use partitions::{OrgId, RecordType};
use serde_json::json;

use super::*;

impl Node {
    /// Sets the policy of `record_type`: what is given replaces, what is not
    /// stays as it is in force.
    pub fn profile_set(
        &self,
        org: OrgId,
        record_type: &str,
        policy: Option<&str>,
        delete: Option<DeletePolicy>,
        local: Option<BTreeSet<String>>,
    ) -> anyhow::Result<serde_json::Value> {
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
        let set = BTreeMap::from([(record_type.as_str().to_owned(), Value::Text(current.to_text()))]);
        self.put(org, PROFILE_TYPE, PROFILE_ID, SYSTEM_SEGMENT, set, BTreeSet::new())?;
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
        },
        "delete": match policy.delete {
            DeletePolicy::DeleteWins => "delete-wins",
            DeletePolicy::UpdateWins => "update-wins",
        },
        "local": policy.local,
    })
}
