//! Sync through a file (a USB stick): bundles and frontier files.
//!
//! A bundle is what a session would send, written down:
//!
//! ```text
//! "FERRY-BUNDLE 1\n"
//! frame: JSON header {"org", "exporter" (hex key), "credentials" (base64 chain),
//!                     "filter" [partitions], "created_at_ms"}
//! frame: Batch … (the engine's wire frames, unchanged)
//! frame: End
//! then, for each blob its records reference that the receiver lacks:
//! frame: Offer {hash, outline}   (the blob protocol's messages)
//! frame: Data …                  (every block, in order)
//! ```
//!
//! A reader that stops at End (a version without blobs) still imports the
//! records. The blobs are checked block by block as on the network.
//!
//! where a frame is a u32 big-endian length and its bytes (`frame.rs`, the
//! framing of the network too). Importing checks everything a network sync
//! checks (signatures, scopes, merge, ledger).
//!
//! A frontier file says what a node holds, so the next bundle for it can be
//! a delta: `"FERRY-FRONTIER 1\n"`, a JSON header {"org", "holder" (hex key),
//! "credentials", "filter"}, and a `Heads` frame.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use engine::blob::message::{self as blob_message, BlobMessage};
use engine::wire::{self, HeadEntry, Heads, Message};
use engine::{AuthorKey, LedgerEntry, Region, SyncReport};
use partitions::{Filter, OrgId, Partition};
use serde::{Deserialize, Serialize};

use crate::node::{Node, now_ms};
use crate::parallel::ParallelVerifier;

const BUNDLE_MAGIC: &[u8] = b"FERRY-BUNDLE 1\n";
const FRONTIER_MAGIC: &[u8] = b"FERRY-FRONTIER 1\n";
/// Bytes of a bundle or frontier header.
const HEADER_BYTES_MAX: usize = 2 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
struct Header {
    org: String,
    #[serde(alias = "holder")]
    exporter: String,
    credentials: String,
    filter: Vec<String>,
    #[serde(default)]
    created_at_ms: u64,
}

fn write_frame(out: &mut dyn Write, frame: &[u8]) -> std::io::Result<()> {
    crate::frame::write_blocking(out, frame)
}

fn read_frame(input: &mut dyn Read, max: usize) -> anyhow::Result<Option<Vec<u8>>> {
    crate::frame::read_blocking(input, max).map_err(|e| match e {
        crate::frame::ReadError::TooLong { len, max } => anyhow!(
            "the file holds a frame of {len} bytes, more than the {max} allowed: it is damaged or not a ferry file"
        ),
        crate::frame::ReadError::Truncated(e) => {
            anyhow!(e).context("the file ends in the middle of a frame: it is truncated")
        }
        crate::frame::ReadError::Io(e) => e.into(),
    })
}

fn header(node: &Node, org: OrgId, filter: &Filter) -> anyhow::Result<Header> {
    let (_, credentials, _) = node.local_scope(org)?;
    Ok(Header {
        org: org.to_string(),
        exporter: partitions::hex::encode(&node.identity.author_key().0),
        credentials: data_encoding::BASE64.encode(&credentials),
        filter: filter.prefixes().iter().map(ToString::to_string).collect(),
        created_at_ms: now_ms(),
    })
}

fn read_header(input: &mut dyn Read, magic: &[u8]) -> anyhow::Result<(Header, OrgId, AuthorKey, Vec<u8>, Filter)> {
    let mut found = vec![0u8; magic.len()];
    input.read_exact(&mut found).map_err(|_| anyhow!("this is not a ferry file (too short)"))?;
    if found != magic {
        bail!("this is not a {} file", String::from_utf8_lossy(&magic[..magic.len() - 1]));
    }
    let bytes = read_frame(input, HEADER_BYTES_MAX)?.context("the file has no header")?;
    let header: Header = serde_json::from_slice(&bytes).context("the file's header is damaged")?;
    let org = OrgId::parse(&header.org).context("the file names no valid org")?;
    let key = AuthorKey(partitions::hex::decode::<32>(&header.exporter).context("the file names no valid node key")?);
    let credentials =
        data_encoding::BASE64.decode(header.credentials.as_bytes()).context("the file's credentials are damaged")?;
    let prefixes = header
        .filter
        .iter()
        .map(|p| Partition::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .context("the file's filter is damaged")?;
    let filter = Filter::try_new(prefixes)?;
    Ok((header, org, key, credentials, filter))
}

/// What a bundle or frontier file says, decoded without a store: for
/// inspection and for the fuzz target of this decoder.
#[derive(Debug)]
pub struct FileContents {
    pub bundle: bool,
    pub org: OrgId,
    pub holder: AuthorKey,
    pub credentials: Vec<u8>,
    pub filter: Filter,
    pub messages: Vec<Message>,
    /// The blob messages after End (outlines and blocks).
    pub blobs: Vec<BlobMessage>,
}

/// Decodes a whole bundle or frontier file, checking every bound.
pub fn decode_file(input: &mut dyn Read) -> anyhow::Result<FileContents> {
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic).map_err(|_| anyhow!("this is not a ferry file (too short)"))?;
    let (bundle, full) = if BUNDLE_MAGIC.starts_with(&magic) {
        (true, BUNDLE_MAGIC)
    } else if FRONTIER_MAGIC.starts_with(&magic) {
        (false, FRONTIER_MAGIC)
    } else {
        bail!("this is not a ferry file");
    };
    let mut rest = std::io::Cursor::new(magic).chain(input);
    let (_, org, holder, credentials, filter) = read_header(&mut rest, full)?;
    let mut messages = Vec::new();
    while let Some(frame) = read_frame(&mut rest, engine::limits::MESSAGE_BYTES_MAX)? {
        let message = wire::decode_message(&frame).map_err(|e| anyhow!("the file is damaged: {e}"))?;
        let end = matches!(message, Message::End { .. });
        messages.push(message);
        if end && bundle {
            break;
        }
    }
    let mut blobs = Vec::new();
    while let Some(frame) = read_frame(&mut rest, engine::limits::BLOB_MESSAGE_BYTES_MAX)? {
        blobs.push(blob_message::decode(&frame).map_err(|e| anyhow!("the file's blobs are damaged: {e}"))?);
    }
    Ok(FileContents { bundle, org, holder, credentials, filter, messages, blobs })
}

/// `ferry bundle frontier --out FILE`: what this node holds in `filter`.
pub fn write_frontier(node: &Node, org: OrgId, filter: Filter, path: &Path) -> anyhow::Result<FrontierWritten> {
    let (scope, _, _) = node.local_scope(org)?;
    let region = Region::of(filter.intersection(&scope.read.union(&scope.write)));
    let entries = node.store.heads(&region)?;
    let mut out = Vec::new();
    out.extend_from_slice(FRONTIER_MAGIC);
    write_frame(&mut out, &serde_json::to_vec(&header(node, org, &filter)?)?)?;
    write_frame(
        &mut out,
        &wire::encode_message(&Message::Heads(Heads { pull: true, push: true, entries: entries.clone() })),
    )?;
    crate::home::write_atomic(path, &out)?;
    Ok(FrontierWritten { frontier: path.display().to_string(), entries: entries.len() as u64 })
}

/// Where the bundle's receiver stands, and what it may read.
pub enum Since<'a> {
    /// Everything in the filter.
    Nothing,
    /// A frontier file it wrote.
    File(&'a Path),
    /// What we held in common after our last sync with it.
    Peer(AuthorKey),
}

/// What `ferry bundle export` wrote.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BundleWritten {
    pub changes: u64,
    /// Batches of changes (the end marker not counted).
    pub batches: u64,
    /// Blobs carried (referenced by its changes, not known to be held by
    /// the receiver).
    pub blobs: u64,
    pub bytes: u64,
    pub bundle: String,
}

/// What `ferry bundle frontier` wrote.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FrontierWritten {
    pub frontier: String,
    pub entries: u64,
}

/// What `ferry bundle import` applied, and from whom.
#[derive(Clone, Debug)]
pub struct BundleImported {
    pub exporter: libp2p::PeerId,
    pub report: SyncReport,
    /// Blobs stored from the bundle, and their bytes.
    pub blobs_received: u64,
    pub blob_bytes_received: u64,
}

/// `ferry bundle export`.
pub fn export(node: &Node, org: OrgId, filter: Filter, since: Since<'_>, path: &Path) -> anyhow::Result<BundleWritten> {
    let now_s = now_ms() / 1000;
    let (local, _, _) = node.local_scope(org)?;
    let mut receiver_scope = None;
    let receiver_key = match since {
        Since::Peer(peer) => Some(peer),
        _ => None,
    };
    let heads: Vec<HeadEntry> = match since {
        Since::Nothing => Vec::new(),
        Since::File(file) => {
            let mut input = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
            let (_, file_org, holder, credentials, _) = read_header(&mut input, FRONTIER_MAGIC)?;
            if file_org != org {
                bail!("the frontier file is for org {file_org}, not {org}");
            }
            receiver_scope = Some(node.auth.as_ref().authenticate_at(&holder, &credentials, now_s)?);
            let frame = read_frame(&mut input, engine::limits::MESSAGE_BYTES_MAX)?
                .context("the frontier file has no frontier")?;
            match wire::decode_message(&frame).context("the frontier file is damaged")? {
                Message::Heads(heads) => heads.entries,
                _ => bail!("the frontier file is damaged"),
            }
        }
        Since::Peer(peer) => {
            let note = node.store.peer_note(&peer, &format!("frontier:{org}"))?.with_context(|| {
                format!(
                    "no sync with {} is on record: export everything, or use --since FRONTIER_FILE",
                    crate::identity::peer_id_of(&peer.0)
                )
            })?;
            for chain in node.store.chains_of(&peer)? {
                if let Ok(known) = node.auth.know(&chain)
                    && known.org == org
                {
                    receiver_scope = Some(known.scope.clone());
                }
            }
            match wire::decode_message(&note).context("the stored frontier is damaged")? {
                Message::Heads(heads) => heads.entries,
                _ => bail!("the stored frontier is damaged"),
            }
        }
    };
    let region = match &receiver_scope {
        Some(receiver) => Region::between(&filter, &local, receiver),
        None => Region::of(filter.intersection(&local.read.union(&local.write))),
    };
    // Written to a temporary file beside the bundle (blobs make bundles
    // far larger than memory should hold), renamed into place when whole.
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let temporary = tempfile::Builder::new()
        .prefix(".ferry-bundle.")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let mut out = std::io::BufWriter::new(temporary);
    out.write_all(BUNDLE_MAGIC)?;
    write_frame(&mut out, &serde_json::to_vec(&header(node, org, &filter)?)?)?;
    let mut changes = 0;
    let mut batches = 0;
    let mut refs = std::collections::BTreeSet::new();
    engine::session::delta_frames(
        node.store.as_ref(),
        region,
        &heads,
        node.config.batch_changes,
        engine::limits::BATCH_BYTES_DEFAULT,
        &mut |frame, n| {
            changes += n;
            batches += 1;
            if n > 0
                && let Ok(Message::Batch(batch)) = wire::decode_message(&frame)
            {
                for change in batch.groups.iter().flat_map(|g| &g.changes) {
                    engine::blob::refs_of_op(&change.op, &mut refs);
                }
            }
            write_frame(&mut out, &frame).map_err(|e| e.to_string())
        },
    )
    .map_err(|e| anyhow!("cannot export: {e}"))?;
    let mut blobs = 0u64;
    for r in refs {
        let known_held = receiver_key.is_some_and(|peer| {
            node.store.peer_note(&peer, &format!("blob:{}", r.hash.to_hex())).ok().flatten().is_some()
        });
        if known_held || !node.blobs.has(&r.hash) {
            continue;
        }
        write_blob(node, &mut out, &r.hash)?;
        blobs += 1;
    }
    let file = out.into_inner().map_err(|e| anyhow!("cannot write {}: {}", path.display(), e.error()))?;
    file.as_file().sync_all().with_context(|| format!("cannot write {}", path.display()))?;
    let bytes = file.as_file().metadata().map_or(0, |m| m.len());
    file.persist(path).map_err(|e| e.error).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(BundleWritten { changes, batches: batches - 1, blobs, bytes, bundle: path.display().to_string() })
}

/// Appends a held blob: its outline, then every block.
fn write_blob(node: &Node, out: &mut dyn Write, hash: &engine::blob::BlobHash) -> anyhow::Result<()> {
    let outline = node.blobs.outline(hash)?;
    write_frame(out, &blob_message::encode(&BlobMessage::Offer { hash: *hash, outline: outline.clone() }))?;
    let mut file = node.blobs.open(hash)?;
    for index in 0..outline.blocks() {
        let block = crate::blobs::Blobs::read_block(&mut file, outline.size, index)
            .with_context(|| format!("cannot read blob {hash}"))?;
        write_frame(out, &blob_message::encode_data(&block))?;
    }
    Ok(())
}

/// Reads the blobs after a bundle's End: each checked against its outline
/// and the hash, block by block, and kept only if a record held here
/// references it. Returns (blobs stored, bytes stored).
fn read_blobs(node: &Node, input: &mut dyn Read) -> anyhow::Result<(u64, u64)> {
    let (mut stored, mut bytes) = (0u64, 0u64);
    let next = |input: &mut dyn Read| -> anyhow::Result<Option<BlobMessage>> {
        read_frame(input, engine::limits::BLOB_MESSAGE_BYTES_MAX)?
            .map(|f| blob_message::decode(&f).map_err(|e| anyhow!("the bundle's blobs are damaged: {e}")))
            .transpose()
    };
    while let Some(message) = next(input)? {
        let BlobMessage::Offer { hash, outline } = message else {
            bail!("the bundle's blobs are damaged: a blob does not start with its outline");
        };
        let wanted = !node.blobs.has(&hash)
            && node.store.blob_referrers(&hash)?.iter().any(|(_, size)| outline.check(&hash, *size).is_ok());
        let mut receiving = if wanted { node.blobs.receive(&hash, &outline)? } else { None };
        let resumed_at = receiving.as_ref().map_or(0, |r| r.held_bytes());
        for index in 0..outline.blocks() {
            let Some(BlobMessage::Data(block)) = next(input)? else {
                bail!("the bundle is truncated inside blob {hash}");
            };
            if let Some(r) = receiving.as_mut()
                && index == r.next_block()
            {
                r.accept(&block).map_err(|e| {
                    anyhow!("{e}; the bundle's records were imported: sync with a peer to fetch the blob")
                })?;
            }
        }
        if let Some(r) = receiving {
            let size = r.outline.size;
            node.blobs.complete(r)?;
            stored += 1;
            bytes += size - resumed_at;
        }
    }
    Ok((stored, bytes))
}

/// `ferry bundle import FILE`: exactly like receiving a sync.
pub fn import(node: &Node, path: &Path, progress: &mut dyn FnMut(u64, u64)) -> anyhow::Result<BundleImported> {
    let started = now_ms();
    import_file(node, path, started, progress).inspect_err(|e| {
        // A refused or damaged bundle is in the ledger too (batches applied
        // before the failure stay applied: each is atomic and verified).
        let entry = LedgerEntry {
            session: partitions::hex::encode(&crate::random::bytes::<16>()),
            peer: path.display().to_string(),
            via: "bundle".into(),
            started_at_ms: started,
            outcome: format!("failed: {e:#}"),
            pull: true,
            report: SyncReport {
                duration_ms: now_ms().saturating_sub(started),
                rejections: vec![format!("{e:#}")],
                ..SyncReport::default()
            },
            ..LedgerEntry::default()
        };
        if let Err(e) = node.store.record_session(&entry) {
            tracing::warn!("cannot record a failed bundle import in the ledger: {e}");
        }
    })
}

fn import_file(
    node: &Node,
    path: &Path,
    started: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<BundleImported> {
    let mut input =
        std::io::BufReader::new(std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?);
    let (header, org, exporter, credentials, filter) = read_header(&mut input, BUNDLE_MAGIC)?;
    // The exporter's certificate must have been valid when it wrote the
    // bundle (a USB stick can take days to arrive).
    let at = (header.created_at_ms / 1000).min(now_ms() / 1000);
    let exporter_scope = node.auth.as_ref().authenticate_at(&exporter, &credentials, at)?;
    node.store.put_chain(&exporter, &credentials)?;
    let (local, _, _) = node.local_scope(org)?;
    let region = Region::between(&filter, &exporter_scope, &local);
    let mut positions = BTreeMap::new();
    let mut report = SyncReport::default();
    let mut moved = engine::ledger::MovedRecords::default();
    let mut batches = 0u64;
    let mut ended = false;
    while let Some(frame) = read_frame(&mut input, engine::limits::MESSAGE_BYTES_MAX)? {
        match wire::decode_message(&frame).map_err(|e| anyhow!("the bundle is damaged: {e}"))? {
            Message::Batch(batch) => {
                let planned = batch.plan.changes;
                for group in &batch.groups {
                    for change in &group.changes {
                        let key = engine::RecordKey {
                            partition: group.partition.clone(),
                            record_type: group.record_type.clone(),
                            id: change.id.clone(),
                        };
                        moved.add(false, &key);
                    }
                }
                let applied = node
                    .store
                    .apply_batch(batch, &region, &mut positions, node.auth.as_ref(), &ParallelVerifier, now_ms(), "bundle")
                    .map_err(|e| match e {
                        engine::store::ApplyError::Gap { .. } => anyhow!(
                            "this bundle continues from a frontier this node does not hold ({e}): ask for a bundle made with this node's frontier file, or a full one"
                        ),
                        engine::store::ApplyError::Store(e) => anyhow!(e),
                    })?;
                report.absorb(applied);
                batches += 1;
                progress(report.received, planned);
            }
            Message::End { batches: sent } => {
                if sent != batches {
                    bail!("the bundle is missing batches ({batches} of {sent})");
                }
                ended = true;
                break;
            }
            _ => bail!("the bundle holds an unexpected message"),
        }
    }
    if !ended {
        bail!("the bundle is truncated (no end marker after {batches} batches)");
    }
    report.duration_ms = now_ms() - started;
    report.bytes_received = std::fs::metadata(path).map_or(0, |m| m.len());
    let entry = LedgerEntry {
        session: partitions::hex::encode(&crate::random::bytes::<16>()),
        peer: path.display().to_string(),
        via: "bundle".into(),
        started_at_ms: started,
        outcome: "completed".into(),
        filter: filter.to_string(),
        pull: true,
        push: false,
        report,
        blobs: Default::default(),
        records: moved.list,
        records_beyond: moved.beyond,
        purged: 0,
    };
    node.store.record_session(&entry)?;
    // The records stand (and are in the ledger) whatever the blobs after
    // them hold.
    let (blobs_received, blob_bytes_received) = read_blobs(node, &mut input)?;
    if blobs_received > 0 {
        let blobs = engine::ledger::BlobCounts {
            received: blobs_received,
            bytes_received: blob_bytes_received,
            ..Default::default()
        };
        node.store.add_session_blobs(entry.started_at_ms, &entry.session, &blobs)?;
    }
    // Revocations the bundle carried apply from now on: the authorizer's
    // hook re-read them when the batch holding them was committed.
    Ok(BundleImported {
        exporter: crate::identity::peer_id_of(&exporter.0),
        report: entry.report,
        blobs_received,
        blob_bytes_received,
    })
}
