//! The change feed as applications read it (`GET /v1/changes`, the local
//! API's `changes`, `ferry changes`): the store's entries
//! (`engine::store::FeedEntry`) with each record as it is now.

use engine::store::FeedError;
use partitions::{OrgId, Partition, RecordType};
use serde_json::json;

use super::*;

/// Entries a page holds when the reader does not say.
pub const FEED_PAGE_DEFAULT: usize = 100;
/// The most entries one page may hold.
pub const FEED_PAGE_MAX: usize = 1000;

/// What a reader of the feed asks for.
pub struct FeedAsk<'a> {
    pub org: OrgId,
    pub since: u64,
    pub record_type: Option<&'a str>,
    pub partition: Option<&'a str>,
    pub limit: Option<usize>,
}

impl Node {
    /// One page of the feed after `since`: `{"entries":[…],"last_cursor"}`.
    /// An entry is `{"cursor","type","id","partition","deleted","origin","record"}`,
    /// `record` the record as `get` shows it now (null once it is gone:
    /// purged or evicted). `last_cursor` is where to read on from.
    pub fn changes(&self, ask: &FeedAsk<'_>) -> anyhow::Result<serde_json::Value> {
        let limit = ask.limit.unwrap_or(FEED_PAGE_DEFAULT);
        if limit == 0 || limit > FEED_PAGE_MAX {
            bail!("limit must be 1 to {FEED_PAGE_MAX}");
        }
        let record_type = ask.record_type.map(RecordType::parse).transpose().context("type")?;
        let partition = ask.partition.map(|p| Partition::resolve(ask.org, p)).transpose().context("partition")?;
        let org = ask.org;
        let page = self
            .store
            .feed(ask.since, limit, &mut |key| {
                key.partition.org() == org
                    && record_type.as_ref().is_none_or(|t| &key.record_type == t)
                    && partition.as_ref().is_none_or(|p| p.contains(&key.partition))
            })
            .map_err(|e| match e {
                FeedError::Store(e) => anyhow!(e),
                // Kept whole: HTTP answers it with 410 and the cursor to
                // follow from after reading the records again.
                e => anyhow!(e),
            })?;
        let mut entries = Vec::with_capacity(page.entries.len());
        for entry in page.entries {
            let record = match self.store.view(&entry.key)? {
                Some(mut view) => {
                    self.unseal_view(&entry.key, &mut view)?;
                    Some(crate::json::record(&entry.key, &view))
                }
                None => None,
            };
            let deleted = record.as_ref().is_none_or(|r| r["deleted"] == true);
            entries.push(json!({
                "cursor": entry.cursor,
                "type": entry.key.record_type.as_str(),
                "id": entry.key.id.as_str(),
                "partition": entry.key.partition.to_string(),
                "deleted": deleted,
                "origin": entry.origin,
                "record": record,
            }));
        }
        Ok(json!({ "entries": entries, "last_cursor": page.next }))
    }
}
