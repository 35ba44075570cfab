//! Moving blobs after the records of a sync (docs/protocol.md, "Blobs"), on
//! a libp2p protocol of their own, `/ferry/blob/1`.
//!
//! The initiator of a sync drives both directions, so a short-lived
//! `ferry sync` needs no stream opened back to it: it pulls the blobs its
//! records reference and it lacks (`Get`), then pushes those the peer may
//! read and lacks (`Lacks`, `Offer`). Whichever side receives checks the
//! outline against the hash, then every block against the outline before
//! writing it, and names the block to start from, so an interrupted
//! transfer resumes after its last verified block.
//!
//! A node serves a blob only to a peer whose certificate lets it read a
//! record referencing it; asking for any other hash gets `Missing`, the
//! answer for a blob it does not hold.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use engine::blob::message::{self, BlobMessage};
use engine::blob::{BlobHash, Outline};
use engine::limits::{BLOB_HASHES_MAX, BLOB_MESSAGE_BYTES_MAX};
use engine::{AuthorKey, Authorizer};
use libp2p::PeerId;
use partitions::{OrgId, Scope};
use serde::Serialize;

use crate::blobs::{AcceptError, Blobs};
use crate::identity::key_of;
use crate::net::{self, Net};
use crate::node::{Node, now_s};

/// Blob streams opened before giving up on a peer that drops them unanswered.
const STREAM_ATTEMPTS: u64 = 4;
/// How long either side waits for the other's next message.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a blob unreferenced may sit before the gc after a sync removes
/// it: a file attached a moment ago may not have its record yet.
pub const GC_GRACE: Duration = Duration::from_secs(600);

/// What one exchange of blobs did, for the sync summary.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct BlobReport {
    pub blobs_received: u64,
    pub blob_bytes_received: u64,
    pub blobs_sent: u64,
    pub blob_bytes_sent: u64,
    /// Why a blob did not move (the peer lacks it, refused it, or sent
    /// bytes that do not make it); the records moved all the same.
    pub blob_errors: Vec<String>,
}

impl BlobReport {
    pub fn counts(&self) -> engine::ledger::BlobCounts {
        engine::ledger::BlobCounts {
            received: self.blobs_received,
            bytes_received: self.blob_bytes_received,
            sent: self.blobs_sent,
            bytes_sent: self.blob_bytes_sent,
        }
    }

    /// Whether any blob or byte moved.
    pub fn moved(&self) -> bool {
        self.blobs_received + self.blobs_sent + self.blob_bytes_received + self.blob_bytes_sent > 0
    }
}

/// Adds what moved to the ledger entry of a session (`session` in hex).
pub async fn add_to_ledger(node: &Arc<Node>, started_at_ms: u64, session: String, report: &BlobReport) {
    if !report.moved() {
        return;
    }
    let (node, counts) = (node.clone(), report.counts());
    crate::pool::blocking(move || {
        if let Err(e) = node.store.add_session_blobs(started_at_ms, &session, &counts) {
            tracing::warn!("cannot add the blobs moved to the ledger: {e}");
        }
    })
    .await;
}

/// Progress of the bytes of blobs: (done, total) received, or sent.
pub type BlobProgress<'a> = &'a mut (dyn FnMut(&str, u64, u64) + Send);

async fn send(stream: &mut libp2p::Stream, message: &BlobMessage) -> anyhow::Result<()> {
    send_frame(stream, &message::encode(message)).await
}

async fn send_frame(stream: &mut libp2p::Stream, frame: &[u8]) -> anyhow::Result<()> {
    tokio::time::timeout(IO_TIMEOUT, net::write_frame(stream, frame))
        .await
        .map_err(|_| anyhow!("the peer took nothing for {} s", IO_TIMEOUT.as_secs()))?
        .context("connection lost")
}

/// The next message; `None` when the peer closed the stream.
async fn recv_or_end(stream: &mut libp2p::Stream) -> anyhow::Result<Option<BlobMessage>> {
    let frame = tokio::time::timeout(IO_TIMEOUT, net::read_frame(stream, BLOB_MESSAGE_BYTES_MAX))
        .await
        .map_err(|_| anyhow!("the peer said nothing for {} s", IO_TIMEOUT.as_secs()))?
        .context("connection lost")?;
    frame.map(|f| message::decode(&f).map_err(|e| anyhow!("bad blob message: {e}"))).transpose()
}

async fn recv(stream: &mut libp2p::Stream) -> anyhow::Result<BlobMessage> {
    match recv_or_end(stream).await? {
        Some(BlobMessage::Refused { reason }) => bail!("the peer refused: {reason}"),
        Some(message) => Ok(message),
        None => bail!("the peer closed the blob stream"),
    }
}

fn readable_by(node: &Node, hash: &BlobHash, scope: &Scope, org: Option<OrgId>) -> anyhow::Result<bool> {
    Ok(node.store.blob_referrers(hash)?.iter().any(|(key, _)| {
        org.is_none_or(|o| key.partition.org() == o) && scope.may_read(&key.partition, &key.record_type)
    }))
}

fn peer_note(hash: &BlobHash) -> String {
    format!("blob:{}", hash.to_hex())
}

/// What an initiator has to do: blobs to pull (with the size their records
/// name) and blobs to offer.
struct Plan {
    wanted: Vec<(BlobHash, u64)>,
    offered: Vec<BlobHash>,
}

/// What an initiator has to do: blobs to pull (referenced here, not held
/// whole) and to offer (held, readable by the peer, not known to be held by
/// it).
fn plan(
    node: &Node,
    org: OrgId,
    peer: &AuthorKey,
    peer_scope: Option<&Scope>,
    pull: bool,
    push: bool,
) -> anyhow::Result<Plan> {
    let index = node.store.blob_index()?;
    let mut wanted = Vec::new();
    let mut offered = Vec::new();
    for (hash, referenced) in index {
        if node.blobs.has(&hash) {
            if push
                && let Some(scope) = peer_scope
                && node.store.peer_note(peer, &peer_note(&hash))?.is_none()
                && readable_by(node, &hash, scope, Some(org))?
            {
                offered.push(hash);
            }
        } else if pull && !node.blobs.is_receiving(&hash) {
            let in_org = node.store.blob_referrers(&hash)?.iter().any(|(k, _)| k.partition.org() == org);
            if in_org {
                wanted.push((hash, referenced.size));
            }
        }
    }
    Ok(Plan { wanted, offered })
}

/// The initiator's side: after a completed session with `peer`, pull the
/// blobs we lack and push those it may read and lacks. Failures are
/// reported per blob; the records already moved stand.
#[allow(clippy::too_many_arguments)]
pub async fn exchange(
    node: &Arc<Node>,
    net: &Net,
    peer: PeerId,
    org: OrgId,
    peer_scope: Option<Scope>,
    pull: bool,
    push: bool,
    progress: BlobProgress<'_>,
) -> BlobReport {
    let mut report = BlobReport::default();
    let Some(peer_key) = key_of(&peer).map(AuthorKey) else { return report };
    let planned = {
        let node = node.clone();
        let scope = peer_scope.clone();
        crate::pool::blocking(move || plan(&node, org, &peer_key, scope.as_ref(), pull, push)).await
    };
    let Plan { wanted, offered } = match planned {
        Ok(p) => p,
        Err(e) => {
            report.blob_errors.push(format!("cannot list the blobs to move: {e:#}"));
            return report;
        }
    };
    if wanted.is_empty() && offered.is_empty() {
        return report;
    }
    if let Err(e) = exchange_on_stream(node, net, peer, org, &peer_key, wanted, offered, &mut report, progress).await {
        report.blob_errors.push(format!("{e:#}"));
    }
    report
}

#[allow(clippy::too_many_arguments)]
async fn exchange_on_stream(
    node: &Arc<Node>,
    net: &Net,
    peer: PeerId,
    org: OrgId,
    peer_key: &AuthorKey,
    wanted: Vec<(BlobHash, u64)>,
    offered: Vec<BlobHash>,
    report: &mut BlobReport,
    progress: BlobProgress<'_>,
) -> anyhow::Result<()> {
    let credentials = {
        let node = node.clone();
        crate::pool::blocking(move || node.local_scope(org).map(|(_, c, _)| c)).await?
    };
    // A busy peer may drop a new stream before its accept loop takes it
    // (as for sync streams): nothing was said on it, so open another.
    let mut attempt = 0;
    let mut stream = loop {
        attempt += 1;
        let mut stream = net.open(peer, net::BLOB_PROTOCOL).await?;
        let answer = match send(&mut stream, &BlobMessage::Hello { credentials: credentials.clone() }).await {
            Ok(()) => recv_or_end(&mut stream).await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(Some(BlobMessage::Ready)) => break stream,
            Ok(Some(BlobMessage::Refused { reason })) => bail!("the peer refused: {reason}"),
            Ok(Some(other)) => bail!("the peer answered hello with {}", name(&other)),
            Ok(None) | Err(_) if attempt < STREAM_ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            Ok(None) => bail!("the peer closed the blob stream {attempt} times without answering"),
            Err(e) => return Err(e.context(format!("no answer to a blob stream, {attempt} times"))),
        }
    };
    let total_in: u64 = wanted.iter().map(|(_, size)| size).sum();
    let mut done_in = 0u64;
    for (hash, size) in wanted {
        send(&mut stream, &BlobMessage::Get { hash, size }).await?;
        let outline = match recv(&mut stream).await? {
            BlobMessage::Have(outline) => outline,
            BlobMessage::Missing => {
                report.blob_errors.push(format!("blob {hash}: the peer does not have it"));
                done_in += size;
                continue;
            }
            other => bail!("the peer answered a request for blob {hash} with {}", name(&other)),
        };
        if let Err(e) = outline.check(&hash, size) {
            // A forged outline: nothing of it is stored, and a peer that
            // lies once is not asked for more.
            send(&mut stream, &BlobMessage::Refused { reason: e.to_string() }).await.ok();
            bail!("{e}");
        }
        let moved = receive(node, &mut stream, &hash, outline, &mut |held| {
            progress("blob bytes received", done_in + held, total_in)
        })
        .await?;
        done_in += size;
        if let Some(bytes) = moved {
            report.blobs_received += 1;
            report.blob_bytes_received += bytes;
        }
    }
    // Push: ask which of ours the peer lacks, then offer those.
    let total_out = offered.len() as u64;
    for chunk in offered.chunks(BLOB_HASHES_MAX) {
        send(&mut stream, &BlobMessage::Lacks { hashes: chunk.to_vec() }).await?;
        let wants = match recv(&mut stream).await? {
            BlobMessage::Wants { hashes } => hashes.into_iter().collect::<BTreeSet<_>>(),
            other => bail!("the peer answered which blobs it lacks with {}", name(&other)),
        };
        for hash in chunk {
            if !wants.contains(hash) {
                remember_held(node, peer_key, hash).await;
                continue;
            }
            let outline = {
                let (node, hash) = (node.clone(), *hash);
                crate::pool::blocking(move || node.blobs.outline(&hash)).await?
            };
            send(&mut stream, &BlobMessage::Offer { hash: *hash, outline: outline.clone() }).await?;
            let from = match recv(&mut stream).await? {
                BlobMessage::From { block } => block,
                BlobMessage::Declined => continue,
                other => bail!("the peer answered an offer of blob {hash} with {}", name(&other)),
            };
            let sent = send_blocks(node, &mut stream, hash, &outline, from).await?;
            match recv(&mut stream).await? {
                BlobMessage::From { block } if block == outline.blocks() => {}
                other => bail!("the peer did not confirm blob {hash} ({})", name(&other)),
            }
            if sent == 0 {
                // Another transfer of it is under way there.
                continue;
            }
            remember_held(node, peer_key, hash).await;
            report.blobs_sent += 1;
            report.blob_bytes_sent += sent;
            progress("blobs sent", report.blobs_sent, total_out);
        }
    }
    let _ = futures::AsyncWriteExt::close(&mut stream).await;
    Ok(())
}

async fn remember_held(node: &Arc<Node>, peer: &AuthorKey, hash: &BlobHash) {
    let (node, peer, note) = (node.clone(), *peer, peer_note(hash));
    crate::pool::blocking(move || {
        if let Err(e) = node.store.set_peer_note(&peer, &note, &[]) {
            tracing::warn!("cannot note a blob the peer holds: {e}");
        }
    })
    .await;
}

/// Receives one blob whose outline was checked: names the block to start
/// from, then checks and writes each block. Returns the bytes moved, or
/// `None` when this process is receiving it already (nothing asked).
async fn receive(
    node: &Arc<Node>,
    stream: &mut libp2p::Stream,
    hash: &BlobHash,
    outline: Outline,
    progress: &mut (dyn FnMut(u64) + Send),
) -> anyhow::Result<Option<u64>> {
    let blocks = outline.blocks();
    let started = {
        let (node, hash) = (node.clone(), *hash);
        crate::pool::blocking(move || node.blobs.receive(&hash, &outline)).await
    };
    let mut receiving = match started {
        Ok(Some(r)) => r,
        Ok(None) => {
            send(stream, &BlobMessage::From { block: blocks }).await?;
            return Ok(None);
        }
        Err(e) => {
            send(stream, &BlobMessage::From { block: blocks }).await.ok();
            return Err(e.context(format!("blob {hash}")));
        }
    };
    let resumed_at = receiving.held_bytes();
    send(stream, &BlobMessage::From { block: receiving.next_block() }).await?;
    while !receiving.is_done() {
        let data = match recv(stream).await? {
            BlobMessage::Data(data) => data,
            other => bail!("the peer sent {} inside blob {hash}", name(&other)),
        };
        let (back, result) = crate::pool::blocking(move || {
            let result = receiving.accept(&data);
            (receiving, result)
        })
        .await;
        receiving = back;
        match result {
            Ok(()) => progress(receiving.held_bytes()),
            Err(AcceptError::Refused(e)) => {
                send(stream, &BlobMessage::Refused { reason: e.to_string() }).await.ok();
                bail!("{e}");
            }
            Err(AcceptError::Disk(e)) => {
                send(stream, &BlobMessage::Refused { reason: "the receiver cannot write it".into() }).await.ok();
                bail!("blob {hash}: {e}");
            }
        }
    }
    let moved = receiving.outline.size - resumed_at;
    let node = node.clone();
    crate::pool::blocking(move || node.blobs.complete(receiving)).await?;
    Ok(Some(moved))
}

/// Streams blocks `from..` of a held blob; returns the bytes sent.
async fn send_blocks(
    node: &Arc<Node>,
    stream: &mut libp2p::Stream,
    hash: &BlobHash,
    outline: &Outline,
    from: u64,
) -> anyhow::Result<u64> {
    let blocks = outline.blocks();
    if from >= blocks {
        return Ok(0);
    }
    let file = {
        let (node, hash) = (node.clone(), *hash);
        crate::pool::blocking(move || node.blobs.open(&hash)).await?
    };
    let mut file = Some(file);
    let mut sent = 0u64;
    let size = outline.size;
    for index in from..blocks {
        let mut f = file.take().expect("put back each round");
        let (f, block) = crate::pool::blocking(move || {
            let block = Blobs::read_block(&mut f, size, index);
            (f, block)
        })
        .await;
        file = Some(f);
        let block = block.with_context(|| format!("cannot read blob {hash}"))?;
        send_frame(stream, &message::encode_data(&block)).await?;
        sent += block.len() as u64;
    }
    Ok(sent)
}

fn name(message: &BlobMessage) -> &'static str {
    match message {
        BlobMessage::Hello { .. } => "Hello",
        BlobMessage::Ready => "Ready",
        BlobMessage::Refused { .. } => "Refused",
        BlobMessage::Get { .. } => "Get",
        BlobMessage::Have(_) => "Have",
        BlobMessage::Missing => "Missing",
        BlobMessage::From { .. } => "From",
        BlobMessage::Data(_) => "Data",
        BlobMessage::Lacks { .. } => "Lacks",
        BlobMessage::Wants { .. } => "Wants",
        BlobMessage::Offer { .. } => "Offer",
        BlobMessage::Declined => "Declined",
    }
}

/// The answering side: a peer opened a blob stream. Returns what moved,
/// and why the stream ended early if it did (what moved before stays).
pub async fn answer(node: &Arc<Node>, peer: PeerId, mut stream: libp2p::Stream) -> (BlobReport, Option<String>) {
    let mut report = BlobReport::default();
    let result = answer_on(node, peer, &mut stream, &mut report).await;
    if let Err(e) = &result {
        send(&mut stream, &BlobMessage::Refused { reason: format!("{e:#}") }).await.ok();
    }
    // What moved joins the ledger entry of the session this peer just had
    // (an interrupted transfer counts what it moved too).
    if let Some((started_at_ms, session)) = key_of(&peer).and_then(|k| node.last_answered(&AuthorKey(k))) {
        add_to_ledger(node, started_at_ms, partitions::hex::encode(&session), &report).await;
    }
    let _ = futures::AsyncWriteExt::close(&mut stream).await;
    (report, result.err().map(|e| format!("{e:#}")))
}

async fn answer_on(
    node: &Arc<Node>,
    peer: PeerId,
    stream: &mut libp2p::Stream,
    report: &mut BlobReport,
) -> anyhow::Result<()> {
    let peer_key = key_of(&peer).map(AuthorKey).context("peer id without an Ed25519 key")?;
    let credentials = match recv(stream).await? {
        BlobMessage::Hello { credentials } => credentials,
        other => bail!("a blob stream starts with Hello, not {}", name(&other)),
    };
    let scope = {
        let node = node.clone();
        crate::pool::blocking(move || node.auth.authenticate(&peer_key, &credentials, now_s()))
            .await
            .map_err(|d| anyhow!("{d}"))?
    };
    send(stream, &BlobMessage::Ready).await?;
    while let Some(message) = recv_or_end(stream).await? {
        match message {
            BlobMessage::Get { hash, size: _ } => {
                let outline = {
                    let (node, scope) = (node.clone(), scope.clone());
                    crate::pool::blocking(move || -> anyhow::Result<Option<Outline>> {
                        if !node.blobs.has(&hash) || !readable_by(&node, &hash, &scope, None)? {
                            return Ok(None);
                        }
                        node.blobs.outline(&hash).map(Some)
                    })
                    .await?
                };
                let Some(outline) = outline else {
                    send(stream, &BlobMessage::Missing).await?;
                    continue;
                };
                send(stream, &BlobMessage::Have(outline.clone())).await?;
                let from = match recv(stream).await? {
                    BlobMessage::From { block } => block,
                    other => bail!("expected From after Have, not {}", name(&other)),
                };
                let sent = send_blocks(node, stream, &hash, &outline, from).await?;
                if sent > 0 {
                    report.blobs_sent += 1;
                    report.blob_bytes_sent += sent;
                }
            }
            BlobMessage::Lacks { hashes } => {
                // Only blobs of records the peer may read: what the answer
                // says of any other hash would tell it what it may not see.
                let (node, scope) = (node.clone(), scope.clone());
                let wants = crate::pool::blocking(move || -> anyhow::Result<Vec<BlobHash>> {
                    let mut wants = Vec::new();
                    for hash in hashes {
                        if !node.blobs.has(&hash)
                            && !node.blobs.is_receiving(&hash)
                            && readable_by(&node, &hash, &scope, None)?
                        {
                            wants.push(hash);
                        }
                    }
                    Ok(wants)
                })
                .await?;
                send(stream, &BlobMessage::Wants { hashes: wants }).await?;
            }
            BlobMessage::Offer { hash, outline } => {
                // Taken only for a record held here that the peer may read,
                // at the size it names.
                let accepted = {
                    let (node, outline, scope) = (node.clone(), outline.clone(), scope.clone());
                    crate::pool::blocking(move || -> anyhow::Result<bool> {
                        let referrers = node.store.blob_referrers(&hash)?;
                        Ok(!node.blobs.has(&hash)
                            && referrers.iter().any(|(key, size)| {
                                scope.may_read(&key.partition, &key.record_type) && outline.check(&hash, *size).is_ok()
                            }))
                    })
                    .await?
                };
                if !accepted {
                    send(stream, &BlobMessage::Declined).await?;
                    continue;
                }
                let blocks = outline.blocks();
                if let Some(bytes) = receive(node, stream, &hash, outline, &mut |_| {}).await? {
                    report.blobs_received += 1;
                    report.blob_bytes_received += bytes;
                }
                send(stream, &BlobMessage::From { block: blocks }).await?;
            }
            other => bail!("unexpected {} on a blob stream", name(&other)),
        }
    }
    Ok(())
}

/// The gc after a sync that changed records.
pub async fn gc_after_sync(node: &Arc<Node>) {
    let node = node.clone();
    crate::pool::blocking(move || match node.blob_gc(GC_GRACE) {
        Ok(gc) if gc.removed > 0 => tracing::info!(removed = gc.removed, bytes = gc.bytes_freed, "blob gc"),
        Ok(_) => {}
        Err(e) => tracing::warn!("blob gc after a sync: {e:#}"),
    })
    .await;
}
