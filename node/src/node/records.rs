//! Records: put, get, delete, list, import, export, conflicts, resolve,
//! check and the ledger, as the `ferry` command and the local API run them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};

use anyhow::{Context, anyhow, bail};
use engine::store::CheckReport;
use engine::{
    LedgerEntry, LocalAuthor, LocalOp, LocalWrite, RecordId, RecordKey, RecordView, Value, View, WriteRejection,
};
use partitions::{OrgId, Partition, RecordType};

use crate::json as j;
use crate::parallel::ParallelSigner;

use super::*;

/// A record as a command returns it: after a write, whether the write
/// changed nothing (it set what the record already showed).
#[derive(Clone, Debug, PartialEq)]
pub struct RecordResult {
    pub key: RecordKey,
    pub view: View,
    pub unchanged: bool,
}

impl RecordResult {
    /// As the command and the local API print it (`json::record_result`).
    pub fn to_json(&self) -> serde_json::Value {
        j::record_result(&self.key, &self.view, self.unchanged)
    }
}

/// What `ferry import` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    pub written: u64,
    pub unchanged: u64,
    pub rejected: u64,
    /// The first reasons (`rejected` is exact).
    pub rejections: Vec<String>,
}

impl Node {
    // -- records -------------------------------------------------------------

    pub(super) fn author(&self, org: OrgId) -> anyhow::Result<LocalAuthor> {
        let (_, _, authority) = self.local_scope(org)?;
        Ok(LocalAuthor { key: self.identity.key.clone(), authority })
    }

    /// Refuses a write whose fields hold a malformed blob reference, or
    /// reference a blob this home does not hold whole: its peers could
    /// never fetch it.
    pub fn check_blob_refs(&self, op: &LocalOp) -> anyhow::Result<()> {
        let LocalOp::Put { set, .. } = op else { return Ok(()) };
        for (field, value) in set {
            let mut refs = BTreeSet::new();
            engine::blob::refs_in(value, &mut refs).map_err(|e| anyhow!("field {field}: {e}"))?;
            for r in refs {
                match self.blobs.state(&r.hash) {
                    crate::blobs::BlobState::Complete { size } if size == r.size => {}
                    crate::blobs::BlobState::Complete { size } => {
                        bail!("field {field}: blob {} is {size} bytes, not the {} the reference says", r.hash, r.size)
                    }
                    _ => bail!(
                        "field {field}: blob {} is not held whole in this home: attach the file with --attach {field}=PATH, or sync with a peer that holds it first",
                        r.hash
                    ),
                }
            }
        }
        Ok(())
    }

    /// After a session or a bundle import: writes again this node's own
    /// changes to records a peer finished while this node held them back
    /// (send-when; `Store::reissue_marked`).
    pub fn reissue_held_back(&self, org: OrgId) -> anyhow::Result<u64> {
        // Most sessions mark nothing: no need to look up the author's chain.
        if !self.store.reissue_pending()? {
            return Ok(0);
        }
        Ok(self.store.reissue_marked(&self.author(org)?, now_ms(), self.auth.as_ref(), &ParallelSigner)?)
    }

    pub(super) fn write_one(&self, org: OrgId, mut write: LocalWrite) -> anyhow::Result<RecordResult> {
        self.check_blob_refs(&write.op)?;
        self.seal_write(org, &mut write)
            .with_context(|| format!("{} {}", write.record.record_type, write.record.id))?;
        let record = write.record.clone();
        let mut results =
            self.store.write(&self.author(org)?, &[write], now_ms(), self.auth.as_ref(), &ParallelSigner)?;
        match results.remove(0) {
            Ok(mut written) => {
                self.unseal_view(&record, &mut written.view)?;
                Ok(RecordResult { key: record, view: written.view, unchanged: written.unchanged })
            }
            Err(WriteRejection::Denied(d)) => bail!("outside this node's write scope: {d}"),
            Err(other) => bail!("{} {}: {other}", record.record_type, record.id),
        }
    }

    /// Resolves a record type, id and optional partition to one record.
    pub fn locate(
        &self,
        org: OrgId,
        record_type: &str,
        id: &str,
        partition: Option<&str>,
    ) -> anyhow::Result<RecordKey> {
        let record_type = RecordType::parse(record_type)?;
        let id = RecordId::parse(id)?;
        if let Some(p) = partition {
            return Ok(RecordKey { partition: Partition::resolve(org, p)?, record_type, id });
        }
        let found = self.store.find(&record_type, &id)?;
        match found.len() {
            0 => bail!("no record {record_type} {id}"),
            1 => Ok(found.into_iter().next().expect("one")),
            _ => bail!(
                "{record_type} {id} exists in several partitions ({}): say which with --partition",
                found.iter().map(|k| k.partition.relative().to_owned()).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    pub fn put(
        &self,
        org: OrgId,
        record_type: &str,
        id: &str,
        partition: &str,
        set: BTreeMap<String, Value>,
        unset: BTreeSet<String>,
    ) -> anyhow::Result<RecordResult> {
        let key = RecordKey {
            partition: Partition::resolve(org, partition)?,
            record_type: RecordType::parse(record_type)?,
            id: RecordId::parse(id)?,
        };
        self.write_one(org, LocalWrite { record: key, op: LocalOp::Put { set, unset } })
    }

    pub fn get(
        &self,
        org: OrgId,
        record_type: &str,
        id: &str,
        partition: Option<&str>,
    ) -> anyhow::Result<RecordResult> {
        let key = self.locate(org, record_type, id, partition)?;
        let mut view = self.store.view(&key)?.with_context(|| format!("no record {record_type} {id}"))?;
        self.unseal_view(&key, &mut view)?;
        Ok(RecordResult { key, view, unchanged: false })
    }

    pub fn delete(
        &self,
        org: OrgId,
        record_type: &str,
        id: &str,
        partition: Option<&str>,
    ) -> anyhow::Result<RecordResult> {
        let key = self.locate(org, record_type, id, partition)?;
        self.write_one(org, LocalWrite { record: key, op: LocalOp::Delete })
    }

    pub fn list(
        &self,
        org: Option<OrgId>,
        record_type: Option<&str>,
        partition: Option<&str>,
        include_deleted: bool,
    ) -> anyhow::Result<Vec<RecordView>> {
        let record_type = record_type.map(RecordType::parse).transpose()?;
        let partition = match (partition, org) {
            (Some(p), Some(org)) => Some(Partition::resolve(org, p)?),
            (Some(p), None) => Some(Partition::parse(p)?),
            (None, Some(org)) => Some(Partition::root(org)),
            (None, None) => None,
        };
        let mut out = Vec::new();
        self.store.list(partition.as_ref(), record_type.as_ref(), &mut |r| {
            if r.view.exists || include_deleted {
                out.push(r);
            }
            true
        })?;
        for r in &mut out {
            self.unseal_view(&r.key, &mut r.view)?;
        }
        Ok(out)
    }

    /// `ferry check [--repair]`: every entry's checksum, every record, every
    /// retained signature; with `repair`, drops what is damaged and lowers
    /// the frontiers that covered it so peers send it again.
    pub fn check(&self, repair: bool) -> anyhow::Result<CheckReport> {
        let verifier = crate::parallel::ParallelVerifier;
        Ok(if repair { self.store.repair(&verifier)? } else { self.store.check(&verifier)? })
    }

    /// `ferry import`: one record a line, written in signed batches.
    pub fn import(
        &self,
        org: OrgId,
        input: &mut dyn BufRead,
        progress: &mut dyn FnMut(u64),
    ) -> anyhow::Result<ImportReport> {
        let author = self.author(org)?;
        let (mut written, mut unchanged, mut rejected) = (0u64, 0u64, 0u64);
        let mut reasons: Vec<String> = Vec::new();
        let mut batch: Vec<LocalWrite> = Vec::new();
        let mut flush = |batch: &mut Vec<LocalWrite>,
                         written: &mut u64,
                         unchanged: &mut u64,
                         rejected: &mut u64,
                         reasons: &mut Vec<String>|
         -> anyhow::Result<()> {
            if batch.is_empty() {
                return Ok(());
            }
            let results =
                self.store.write_with(&author, batch, now_ms(), self.auth.as_ref(), &ParallelSigner, false)?;
            for (write, result) in batch.iter().zip(results) {
                match result {
                    Ok(w) if w.unchanged => *unchanged += 1,
                    Ok(_) => *written += 1,
                    Err(e) => {
                        *rejected += 1;
                        if reasons.len() < 10 {
                            reasons.push(format!("{} {}: {e}", write.record.record_type, write.record.id));
                        }
                    }
                }
            }
            batch.clear();
            progress(*written + *unchanged + *rejected);
            Ok(())
        };
        for (n, line) in input.lines().enumerate() {
            let line = line.context("cannot read the input")?;
            // Editors on some systems start a UTF-8 file with a byte order mark.
            let line = if n == 0 { line.strip_prefix('\u{feff}').unwrap_or(&line) } else { &line };
            if line.trim().is_empty() {
                continue;
            }
            let parsed = parse_import_line(org, line).and_then(|mut w| {
                self.check_blob_refs(&w.op)?;
                self.seal_write(org, &mut w)?;
                Ok(w)
            });
            match parsed {
                Ok(write) => batch.push(write),
                Err(e) => {
                    rejected += 1;
                    if reasons.len() < 10 {
                        reasons.push(format!("line {}: {e}", n + 1));
                    }
                }
            }
            if batch.len() >= self.config.batch_changes {
                flush(&mut batch, &mut written, &mut unchanged, &mut rejected, &mut reasons)?;
            }
        }
        flush(&mut batch, &mut written, &mut unchanged, &mut rejected, &mut reasons)?;
        // The reasons go to whoever asked (through `serve`, the client).
        Ok(ImportReport { written, unchanged, rejected, rejections: reasons })
    }

    /// `ferry export`: live records, one JSON object a line.
    pub fn export(
        &self,
        org: OrgId,
        record_type: Option<&str>,
        partition: Option<&str>,
        out: &mut dyn Write,
    ) -> anyhow::Result<u64> {
        let record_type = record_type.map(RecordType::parse).transpose()?;
        let partition = Partition::resolve(org, partition.unwrap_or(""))?;
        let mut count = 0;
        let mut failure = None;
        self.store.list(Some(&partition), record_type.as_ref(), &mut |mut r| {
            if !r.view.exists {
                return true;
            }
            if let Err(e) = self.unseal_view(&r.key, &mut r.view) {
                failure = Some(e);
                return false;
            }
            let mut line = j::record(&r.key, &r.view);
            if let Some(object) = line.as_object_mut() {
                object.remove("conflicts");
                object.remove("deleted");
            }
            if let Err(e) = writeln!(out, "{line}") {
                failure = Some(anyhow::Error::new(e).context("cannot write the export"));
                return false;
            }
            count += 1;
            true
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(count)
    }

    pub fn conflicts(&self) -> anyhow::Result<Vec<RecordView>> {
        let mut out = Vec::new();
        self.store.conflicts(&mut |r| {
            out.push(r);
            true
        })?;
        for r in &mut out {
            self.unseal_view(&r.key, &mut r.view)?;
        }
        Ok(out)
    }

    /// `ferry resolve`: take conflict N, or set fields; either way the write
    /// has seen every retained value, so it supersedes them.
    pub fn resolve(
        &self,
        org: OrgId,
        record_type: &str,
        id: &str,
        partition: Option<&str>,
        take: Option<usize>,
        set: BTreeMap<String, Value>,
    ) -> anyhow::Result<RecordResult> {
        let key = self.locate(org, record_type, id, partition)?;
        let view = self.store.view(&key)?.with_context(|| format!("no record {record_type} {id}"))?;
        let op = match take {
            Some(n) => {
                let conflict = view.conflicts.get(n.wrapping_sub(1)).with_context(|| {
                    format!("{record_type} {id} has {} conflicts; --take counts from 1", view.conflicts.len())
                })?;
                match (&conflict.field, &conflict.value) {
                    (Some(field), Some(value)) => {
                        LocalOp::Put { set: BTreeMap::from([(field.clone(), value.clone())]), unset: BTreeSet::new() }
                    }
                    (Some(field), None) => {
                        LocalOp::Put { set: BTreeMap::new(), unset: BTreeSet::from([field.clone()]) }
                    }
                    (None, None) => LocalOp::Delete,
                    (None, Some(_)) if !view.exists => LocalOp::Restore,
                    (None, Some(_)) => LocalOp::Put { set: BTreeMap::new(), unset: BTreeSet::new() },
                }
            }
            None if set.is_empty() => bail!("say how to resolve: --take N or --set FIELD=VALUE"),
            None => LocalOp::Put { set, unset: BTreeSet::new() },
        };
        self.write_one(org, LocalWrite { record: key, op })
    }

    pub fn history(&self) -> anyhow::Result<Vec<LedgerEntry>> {
        Ok(self.store.history()?)
    }
}

pub(super) fn parse_import_line(org: OrgId, line: &str) -> anyhow::Result<LocalWrite> {
    j::check_integers(line).map_err(|e| anyhow!(e))?;
    let value: serde_json::Value = serde_json::from_str(line).context("not JSON")?;
    let object = value.as_object().context("not a JSON object")?;
    if let Some(unknown) = object.keys().find(|k| !IMPORT_KEYS.contains(&k.as_str())) {
        bail!("unknown key {unknown:?} (a line has {})", IMPORT_KEYS.map(|k| format!("{k:?}")).join(", "));
    }
    let text = |k: &str| object.get(k).and_then(|v| v.as_str()).with_context(|| format!("missing \"{k}\""));
    let record = RecordKey {
        partition: Partition::resolve(org, text("partition")?)?,
        record_type: RecordType::parse(text("type")?)?,
        id: RecordId::parse(text("id")?)?,
    };
    if object.get("deleted").and_then(|d| d.as_bool()) == Some(true) {
        return Ok(LocalWrite { record, op: LocalOp::Delete });
    }
    let fields = object.get("fields").and_then(|f| f.as_object()).context("missing \"fields\" object")?;
    Ok(LocalWrite {
        record,
        op: LocalOp::Put { set: j::fields_of(fields).map_err(|e| anyhow!(e))?, unset: BTreeSet::new() },
    })
}

/// The keys of an import line. `deleted` and `conflicts` are what `ferry
/// --json get` prints besides the record: `"deleted": true` deletes it, and
/// `conflicts` is ignored (conflicts stay with the nodes that hold them).
pub(super) const IMPORT_KEYS: [&str; 6] = ["type", "id", "partition", "fields", "deleted", "conflicts"];
