//! The sync and enrolment protocols over libp2p streams: driving an engine
//! session with real frames, answering sessions a peer starts, and the
//! enrolment exchange on both sides.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use engine::wire::{self, Message};
use std::sync::Arc;

use engine::{AuthorKey, Env, Event, Session, SessionError, SyncReport};
use libp2p::PeerId;
use partitions::{Filter, OrgId};
use serde::{Deserialize, Serialize};

use crate::identity::{key_of, peer_id_of};
use crate::net::{self, ENROL_PROTOCOL, Net, SYNC_PROTOCOL};
use crate::node::{Node, now_ms};
use crate::parallel::ParallelVerifier;
use crate::status::StatusBoard;

/// Streams opened for one sync before giving up on an unanswered peer.
const STREAM_ATTEMPTS: u64 = 4;
/// How long to wait for a peer's first message.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a finished initiator waits for the peer to close.
const LINGER: Duration = Duration::from_secs(2);
/// Bytes of an enrolment request and answer.
const ENROL_REQUEST_MAX: usize = 4096;
const ENROL_ANSWER_MAX: usize = 2 * 1024 * 1024;

/// What one sync did, with bytes counted at the stream (length prefixes
/// included, as in the ledger: `SessionConfig::frame_overhead_bytes`).
#[derive(Clone, Debug)]
pub struct SyncOutcome {
    pub peer: PeerId,
    pub report: SyncReport,
    /// The blobs moved after the records (the initiator's side).
    pub blobs: crate::blob_sync::BlobReport,
}

impl SyncOutcome {
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = crate::json::report(&self.peer.to_string(), &self.report);
        crate::json::add_fields(&mut out, serde_json::to_value(&self.blobs).unwrap_or_default());
        out
    }
}

/// Runs one step of `session` on the blocking pool, where the store's IO
/// belongs (`pool`), and hands the session back.
///
/// `peer` names the other side in the change feed (`engine::FromPeer`).
async fn step(
    node: &Arc<Node>,
    peer: &libp2p::PeerId,
    session: Session,
    work: impl FnOnce(&mut Session, &Env<'_>) + Send + 'static,
) -> Session {
    let node = node.clone();
    let origin = peer.to_string();
    crate::pool::blocking(move || {
        let mut session = session;
        let store = engine::FromPeer { store: node.store.as_ref(), origin: &origin };
        let env = Env { store: &store, auth: node.auth.as_ref(), verifier: &ParallelVerifier };
        work(&mut session, &env);
        session
    })
    .await
}

/// Runs a session over a stream until it finishes. `on_event` sees progress.
///
/// Reading is never cancelled half-way through a frame (the read future
/// lives across timeouts), and every write has the session's timeout, so a
/// peer that stops reading cannot hold the session forever. On an error the
/// session is left unfinished: the caller records it (`Session::abandon`).
pub async fn drive(
    stream: &mut libp2p::Stream,
    session: Session,
    node: &Arc<Node>,
    peer: &libp2p::PeerId,
    on_event: &mut (dyn FnMut(&Event) + Send),
) -> (Session, Result<SyncReport, String>) {
    let write_timeout = node.config.session_timeout();
    let (reader, mut writer) = futures::AsyncReadExt::split(&mut *stream);
    let mut reading = read_next(reader);
    let mut session = session;
    loop {
        // Send what the session has, then let it prepare the next batch
        // while the peer works on this one.
        if let Err(e) = flush(&mut writer, &mut session, write_timeout).await {
            return (session, Err(e));
        }
        session = step(node, peer, session, |s, env| s.handle_idle(now_ms(), env)).await;
        if let Err(e) = flush(&mut writer, &mut session, write_timeout).await {
            return (session, Err(e));
        }
        while let Some(event) = session.poll_event() {
            on_event(&event);
            match event {
                Event::Completed(report) => return (session, Ok(report)),
                Event::Failed { error, .. } => {
                    let _ = flush(&mut writer, &mut session, write_timeout).await;
                    return (session, Err(error.to_string()));
                }
                _ => {}
            }
        }
        let wait = session
            .poll_timeout()
            .map_or(Duration::from_secs(3600), |t| Duration::from_millis(t.saturating_sub(now_ms())));
        tokio::select! {
            (reader, result) = &mut reading => {
                reading = read_next(reader);
                match result {
                    Ok(Some(frame)) => {
                        session = step(node, peer, session, move |s, env| s.handle_message(now_ms(), &frame, env)).await;
                    }
                    Ok(None) => {
                        if session.is_finished() {
                            continue;
                        }
                        return (session, Err("the peer closed the connection mid-session".into()));
                    }
                    Err(e) => return (session, Err(format!("connection lost: {e}"))),
                }
            }
            () = tokio::time::sleep(wait) => {
                session = step(node, peer, session, |s, env| s.handle_timeout(now_ms(), env)).await;
            }
        }
    }
}

type Reader<'a> = futures::io::ReadHalf<&'a mut libp2p::Stream>;
type Reading<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = (Reader<'a>, std::io::Result<Option<Vec<u8>>>)> + Send + 'a>>;

/// Reads the next frame; the future owns the reader and hands it back.
fn read_next(mut reader: Reader<'_>) -> Reading<'_> {
    Box::pin(async move {
        let result = net::read_frame(&mut reader, engine::limits::MESSAGE_BYTES_MAX).await;
        (reader, result)
    })
}

async fn flush<W: futures::AsyncWrite + Unpin>(
    writer: &mut W,
    session: &mut Session,
    timeout: Duration,
) -> Result<(), String> {
    while let Some(frame) = session.poll_transmit() {
        match tokio::time::timeout(timeout, net::write_frame(writer, &frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("connection lost: {e}")),
            Err(_) => return Err(format!("the peer took nothing for {} s", timeout.as_secs())),
        }
    }
    Ok(())
}

/// Records in the ledger a session refused before it started (no Hello, a
/// bad first message, too many sessions).
pub fn record_refusal(node: &Node, peer: &PeerId, session: Option<[u8; 16]>, reason: &str) {
    let entry = engine::LedgerEntry {
        session: partitions::hex::encode(&session.unwrap_or_else(crate::random::bytes)),
        peer: key_of(peer).map_or_else(|| peer.to_string(), |k| partitions::hex::encode(&k)),
        via: "network".into(),
        started_at_ms: now_ms(),
        outcome: format!("refused: {reason}"),
        report: SyncReport { rejections: vec![reason.to_owned()], ..SyncReport::default() },
        ..Default::default()
    };
    if let Err(e) = node.store.record_session(&entry) {
        tracing::warn!("cannot record a refused session in the ledger: {e}");
    }
}

/// `record_refusal` on the blocking pool.
pub async fn refuse_in_ledger(node: &Arc<Node>, peer: PeerId, session: Option<[u8; 16]>, reason: String) {
    let node = node.clone();
    crate::pool::blocking(move || record_refusal(&node, &peer, session, &reason)).await;
}

/// What a sync asks of its peer: the partitions (none: what the scopes
/// allow), the directions and the type rules that narrow it.
#[derive(Clone, Debug)]
pub struct SyncAsk {
    pub filter: Option<Filter>,
    pub pull: bool,
    pub push: bool,
    pub types: engine::region::TypeRules,
}

impl SyncAsk {
    /// Everything both scopes allow, both ways.
    pub fn everything() -> SyncAsk {
        SyncAsk { filter: None, pull: true, push: true, types: Default::default() }
    }
}

/// Starts a sync with `target` (a multiaddr, or a peer id found on the LAN).
#[allow(clippy::too_many_arguments)]
pub async fn sync(
    node: &Arc<Node>,
    net: &Net,
    target: &str,
    org: OrgId,
    ask: SyncAsk,
    board: Option<&Arc<StatusBoard>>,
    on_event: &mut (dyn FnMut(&Event) + Send),
    on_blob: crate::blob_sync::BlobProgress<'_>,
) -> anyhow::Result<SyncOutcome> {
    let peer = crate::meet::reach(node, net, target, org).await?;
    if !node.config.hooks.is_empty() {
        let filter = ask.filter.clone().unwrap_or_else(|| Filter::org(org));
        let asked = hook_input(&peer, "initiator", &filter, ask.pull, ask.push);
        if let Err(reason) = crate::hooks::before_sync(node, asked).await {
            refuse_in_ledger(node, peer, None, reason.clone()).await;
            bail!("{reason}");
        }
    }
    let watch = board.map(|b| b.session(peer, engine::Role::Initiator));
    let mut on_event = |event: &Event| {
        if let Some(watch) = &watch {
            watch.event(event);
        }
        on_event(event);
    };
    let (pull, push) = (ask.pull, ask.push);
    let result = sync_with(node, net, peer, org, ask, &mut on_event).await;
    let result = match result {
        Ok((mut outcome, peer_scope, (started_at_ms, session))) => {
            outcome.blobs = crate::blob_sync::exchange(node, net, peer, org, peer_scope, pull, push, on_blob).await;
            crate::blob_sync::add_to_ledger(node, started_at_ms, partitions::hex::encode(&session), &outcome.blobs)
                .await;
            if outcome.report.received > 0 || outcome.blobs.blobs_received > 0 {
                crate::blob_sync::gc_after_sync(node).await;
            }
            Ok(outcome)
        }
        Err(e) => Err(e),
    };
    if let Some(watch) = watch {
        watch.finished(result.as_ref().map(|o| &o.report));
    }
    let reason = result.as_ref().err().map(|e| format!("{e:#}"));
    let ended = || result.as_ref().map_err(|_| reason.as_deref().unwrap_or_default());
    node.metrics.session("initiator", ended().map(|o| &o.report));
    if !node.config.hooks.is_empty() {
        crate::hooks::after_apply(node).await;
        crate::hooks::after_sync(node, after_sync_input(&peer, "initiator", ended())).await;
    }
    result
}

async fn sync_with(
    node: &Arc<Node>,
    net: &Net,
    peer: PeerId,
    org: OrgId,
    ask: SyncAsk,
    on_event: &mut (dyn FnMut(&Event) + Send),
) -> anyhow::Result<(SyncOutcome, Option<partitions::Scope>, (u64, [u8; 16]))> {
    let peer_key = AuthorKey(key_of(&peer).context("the peer id embeds no Ed25519 key")?);
    // A busy peer may drop a new stream before its accept loop takes it
    // (libp2p-stream hands over one stream at a time). Nothing was said on
    // such a stream, so opening another is safe; after the first answer,
    // failures are final.
    let mut attempt = 0;
    let mut ledger_key;
    let (session, result) = loop {
        attempt += 1;
        // A stream may also fail to open because its connection closed under
        // it (a relayed one that hole punching replaced): nothing was said.
        let mut stream = match net.open(peer, SYNC_PROTOCOL).await {
            Ok(stream) => stream,
            Err(_) if attempt < STREAM_ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let on_pool = node.clone();
        let mut config =
            crate::pool::blocking(move || on_pool.session_config(org, peer_key, crate::random::bytes())).await?;
        if let Some(filter) = &ask.filter {
            config.filter = filter.clone();
        }
        config.pull = ask.pull;
        config.push = ask.push;
        config.types = ask.types.clone();
        ledger_key = (config.started_at_ms, config.session);
        let session = Session::initiate(config, now_ms());
        let (session, result) = drive(&mut stream, session, node, &peer, on_event).await;
        let _ = futures::AsyncWriteExt::close(&mut stream).await;
        if result.is_ok() {
            linger(&mut stream).await;
        }
        let unanswered = result.is_err() && session.report().messages_received == 0;
        if unanswered && attempt < STREAM_ATTEMPTS {
            tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
            continue;
        }
        break (session, result);
    };
    let mut session = session;
    if let Err(reason) = &result
        && !session.is_finished()
    {
        let reason = reason.clone();
        session = step(node, &peer, session, move |s, env| s.abandon(now_ms(), reason, env)).await;
    }
    let report = result.map_err(|e| anyhow!("sync with {peer} failed: {e}"))?;
    let peer_scope = session.peer_scope().cloned();
    let after = node.clone();
    crate::pool::blocking(move || {
        after.note_peer_has_credentials(org, &peer_key)?;
        remember_frontier(&after, org, &session, &peer_key);
        anyhow::Ok(())
    })
    .await?;
    Ok((SyncOutcome { peer, report, blobs: Default::default() }, peer_scope, ledger_key))
}

/// After a session completes, waits (briefly) for the peer to close its
/// side: our last messages (a final Ack, End or Done) are then known to have
/// arrived. Without this a short-lived process could exit, and its swarm
/// stop, with them still queued, and the peer would record a failure.
async fn linger(stream: &mut libp2p::Stream) {
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = futures::AsyncReadExt::read(stream, &mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Answers a session a peer starts on `stream`.
pub async fn answer_sync(
    node: &Arc<Node>,
    peer: PeerId,
    stream: libp2p::Stream,
    board: Option<&Arc<StatusBoard>>,
    on_event: &mut (dyn FnMut(&Event) + Send),
) -> Result<SyncOutcome, String> {
    let watch = board.map(|b| b.session(peer, engine::Role::Responder));
    let mut on_event = |event: &Event| {
        if let Some(watch) = &watch {
            watch.event(event);
        }
        on_event(event);
    };
    let result = answer(node, peer, stream, &mut on_event).await;
    if let Some(watch) = watch {
        watch.finished(result.as_ref().map(|o| &o.report));
    }
    result
}

async fn answer(
    node: &Arc<Node>,
    peer: PeerId,
    mut stream: libp2p::Stream,
    on_event: &mut (dyn FnMut(&Event) + Send),
) -> Result<SyncOutcome, String> {
    let first = match tokio::time::timeout(
        node.config.session_timeout(),
        net::read_frame(&mut stream, engine::limits::MESSAGE_BYTES_MAX),
    )
    .await
    {
        Ok(Ok(Some(frame))) => Ok(frame),
        Ok(Ok(None)) => Err("the peer closed the stream before saying hello".to_owned()),
        Ok(Err(e)) => Err(format!("connection lost: {e}")),
        Err(_) => Err("the peer said nothing".to_owned()),
    };
    let first = match first {
        Ok(first) => first,
        Err(reason) => {
            refuse_in_ledger(node, peer, None, reason.clone()).await;
            return Err(reason);
        }
    };
    let mut session_id = None;
    let refusal = match wire::decode_message(&first) {
        Ok(Message::Hello(hello)) => {
            session_id = Some(hello.session);
            let orgs: std::collections::BTreeSet<OrgId> = hello.filter.prefixes().iter().map(|p| p.org()).collect();
            match (orgs.len(), key_of(&peer)) {
                (1, Some(peer_key)) => {
                    let org = *orgs.iter().next().expect("one org");
                    let on_pool = node.clone();
                    let configured =
                        crate::pool::blocking(move || on_pool.session_config(org, AuthorKey(peer_key), hello.session))
                            .await;
                    // Said to the peer, so it names which side lacks what.
                    match configured {
                        Ok(config) => {
                            let asked = hook_input(&peer, "responder", &config.filter, config.pull, config.push);
                            crate::hooks::before_sync(node, asked).await.map(|()| config)
                        }
                        Err(e) => {
                            Err(e.downcast_ref::<crate::node::NoChain>().map_or(e.to_string(), |n| n.describe(true)))
                        }
                    }
                }
                (1, None) => Err("peer id without an Ed25519 key".to_owned()),
                _ => Err("a session syncs partitions of exactly one org".to_owned()),
            }
        }
        Ok(_) => Err("the first message must be Hello".to_owned()),
        Err(e) => Err(format!("bad message: {e}")),
    };
    let config = match refusal {
        Ok(config) => config,
        Err(reason) => {
            refuse_in_ledger(node, peer, session_id, reason.clone()).await;
            let frame = wire::encode_message(&Message::Abort { reason: reason.clone() });
            let _ = net::write_frame(&mut stream, &frame).await;
            let _ = futures::AsyncWriteExt::close(&mut stream).await;
            return Err(reason);
        }
    };
    let ledger_key = (config.started_at_ms, config.session);
    let session = Session::accept(config, now_ms());
    let session = step(node, &peer, session, move |s, env| s.handle_message(now_ms(), &first, env)).await;
    let (mut session, result) = drive(&mut stream, session, node, &peer, on_event).await;
    let _ = futures::AsyncWriteExt::close(&mut stream).await;
    if let Err(reason) = &result
        && !session.is_finished()
    {
        let reason = reason.clone();
        session = step(node, &peer, session, move |s, env| s.abandon(now_ms(), reason, env)).await;
    }
    if result.is_ok()
        && let Some(org) = session.filter().prefixes().first().map(|p| p.org())
        && let Some(peer_key) = key_of(&peer)
    {
        let after = node.clone();
        crate::pool::blocking(move || remember_frontier(&after, org, &session, &AuthorKey(peer_key))).await;
    }
    if result.is_ok()
        && let Some(peer_key) = key_of(&peer)
    {
        node.note_answered(AuthorKey(peer_key), ledger_key.0, ledger_key.1);
    }
    if result.as_ref().is_ok_and(|r| r.received > 0) {
        crate::blob_sync::gc_after_sync(node).await;
    }
    node.metrics.session("responder", result.as_ref().map_err(String::as_str));
    let result = result.map(|report| SyncOutcome { peer, report, blobs: Default::default() });
    crate::hooks::after_apply(node).await;
    crate::hooks::after_sync(node, after_sync_input(&peer, "responder", result.as_ref().map_err(|e| e.as_str()))).await;
    result
}

/// What a `before-sync` hook reads: the peer, this node's role, the
/// partitions and directions.
fn hook_input(peer: &PeerId, role: &str, filter: &Filter, pull: bool, push: bool) -> serde_json::Value {
    let partitions: Vec<String> = filter.prefixes().iter().map(ToString::to_string).collect();
    serde_json::json!({ "peer": peer.to_string(), "role": role, "filter": partitions, "pull": pull, "push": push })
}

/// What an `after-sync` hook reads: the summary, or why the sync failed.
fn after_sync_input(peer: &PeerId, role: &str, result: Result<&SyncOutcome, &str>) -> serde_json::Value {
    match result {
        Ok(outcome) => serde_json::json!({ "peer": peer.to_string(), "role": role, "summary": outcome.to_json() }),
        Err(reason) => serde_json::json!({ "peer": peer.to_string(), "role": role, "failed": reason }),
    }
}

/// After a completed sync, keep what the session proved the peer holds of
/// the region that may flow to it (`Session::peer_holds`), so a bundle
/// `--for` it later carries only what it lacks, and a purge knows what
/// exists elsewhere. A session that sent nothing (a pull-only sync) proved
/// nothing: the note stays as it was. Claiming our own frontier there
/// instead would have claimed our unsent changes too, which a purge then
/// removed and a bundle left out.
fn remember_frontier(node: &Node, org: OrgId, session: &Session, peer: &AuthorKey) {
    if let Some(entries) = session.peer_holds() {
        let frame = wire::encode_message(&Message::Heads(wire::Heads { pull: true, push: true, entries }));
        let _ = node.store.set_peer_note(peer, &format!("frontier:{org}"), &frame);
    }
    if let Err(e) = node.reissue_held_back(org) {
        tracing::warn!("cannot write again the changes held back until their records were finished: {e}");
    }
    // The session may have brought a revocation of this node's certificate.
    if let Err(e) = node.check_scope(org) {
        tracing::warn!("cannot purge what this node may no longer read in org {org}: {e}");
    }
    // The crash tests die here, the acknowledgement durable and nothing
    // evicted yet: the next start must evict it and lose nothing.
    if std::env::var_os("FERRY_FAULT").is_some_and(|f| f == "abort-before-evict") {
        std::process::abort();
    }
    // What the peer acknowledged may now leave (push once, then evict).
    if let Err(e) = node.evict_acknowledged(org) {
        tracing::warn!("cannot evict the records acknowledged in org {org}: {e}");
    }
    // The session may have brought a profile that names this node a reader.
    if let Err(e) = node.publish_sealing_key(org) {
        tracing::warn!("cannot publish this node's sealing key in org {org}: {e:#}");
    }
}

/// An error that happened inside a session, as a string for logs.
pub fn describe_error(error: &SessionError) -> String {
    error.to_string()
}

#[derive(Serialize, Deserialize)]
struct EnrolRequest {
    secret: String,
    name: String,
    /// The device's clock (seconds since 1970), so the issuer can start the
    /// certificate early enough for it, or refuse before spending a use.
    #[serde(default)]
    clock_s: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct EnrolAnswer {
    #[serde(default)]
    chain: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// Characters of a device name kept from an enrolment request.
const ENROL_NAME_CHARS_MAX: usize = 100;

/// An enrolment request as the issuer reads it: the token's secret, the
/// device's name (cut to `ENROL_NAME_CHARS_MAX` characters) and its clock,
/// if it said.
pub fn decode_enrol_request(bytes: &[u8]) -> Result<([u8; 32], String, Option<u64>), String> {
    if bytes.len() > ENROL_REQUEST_MAX {
        return Err(format!(
            "the enrolment request is {} bytes, more than the {ENROL_REQUEST_MAX} allowed",
            bytes.len()
        ));
    }
    let request: EnrolRequest = serde_json::from_slice(bytes).map_err(|_| "malformed enrolment request".to_owned())?;
    let secret = partitions::hex::decode::<32>(&request.secret).ok_or("malformed enrolment secret")?;
    Ok((secret, request.name.chars().take(ENROL_NAME_CHARS_MAX).collect(), request.clock_s))
}

/// An issuer's answer as the device reads it: the chain issued (checked
/// afterwards like any chain), or the issuer's reason for refusing.
pub fn decode_enrol_answer(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    if bytes.len() > ENROL_ANSWER_MAX {
        bail!("the issuer's answer is {} bytes, more than the {ENROL_ANSWER_MAX} allowed", bytes.len());
    }
    let answer: EnrolAnswer = serde_json::from_slice(bytes).context("the issuer's answer is malformed")?;
    if let Some(error) = answer.error {
        let error: String = error.chars().take(engine::limits::REASON_BYTES_MAX).collect();
        bail!("the issuer refused: {error}");
    }
    let chain = answer.chain.context("the issuer sent no certificate")?;
    data_encoding::BASE64.decode(chain.as_bytes()).context("the issuer's certificate is damaged")
}

/// The device side of enrolment: contact the issuer the token names, check
/// it is that issuer, present the secret, store the chain received.
pub async fn enroll(node: &Arc<Node>, net: &Net, token_text: &str, name: &str) -> anyhow::Result<serde_json::Value> {
    let token = crate::node::parse_token(token_text)?;
    let issuer = peer_id_of(&token.issuer_key);
    if token.expires_at < crate::node::now_s() {
        bail!("this enrolment token expired at {}: ask for a new one", engine::hlc::rfc3339(token.expires_at * 1000));
    }
    let mut last_error = anyhow!("the token names no address of the issuer");
    for address in &token.addresses {
        let target = match address.parse::<libp2p::Multiaddr>() {
            Ok(a) if a.iter().any(|p| matches!(p, libp2p::multiaddr::Protocol::P2p(_))) => a.to_string(),
            Ok(a) => a.with(libp2p::multiaddr::Protocol::P2p(issuer)).to_string(),
            Err(_) => continue,
        };
        match net.connect(&target).await {
            Ok(peer) if peer == issuer => {
                let request = EnrolRequest {
                    secret: partitions::hex::encode(&token.secret),
                    name: name.to_owned(),
                    clock_s: Some(crate::node::now_s()),
                };
                let answer = ask_issuer(net, peer, &serde_json::to_vec(&request)?).await?;
                let chain = decode_enrol_answer(&answer)?;
                let enrolled = node.clone();
                let mut out = crate::pool::blocking(move || enrolled.store_enrolled(&chain)).await?;
                // The issuer is this device's relay and rendezvous point
                // from now on (if it serves as one).
                if let Ok(relay) = target.parse::<libp2p::Multiaddr>()
                    && let Err(e) = crate::meet::remember_relay(node, &[relay])
                {
                    tracing::warn!("enrolled, but cannot remember the issuer as a relay: {e:#}");
                }
                // The org's profile and sealing keys before anything is
                // written here: a field the profile seals or keeps local, or
                // a record it holds back, must never go out as a write made
                // before this node knew the rules.
                let org = out["org_id"].as_str().and_then(|o| OrgId::parse(o).ok());
                if let Some(org) = org {
                    let ask = SyncAsk {
                        filter: Some(Filter::new([engine::policy::system_partition(org)])),
                        pull: true,
                        push: false,
                        types: Default::default(),
                    };
                    let rules = sync(node, net, &target, org, ask, None, &mut |_| {}, &mut |_, _, _| {}).await;
                    out["system_records_received"] = match rules {
                        Ok(outcome) => serde_json::json!(outcome.report.received),
                        Err(e) => {
                            tracing::warn!(
                                "enrolled, but cannot fetch the org's profile yet: {e:#}; sync before writing"
                            );
                            serde_json::Value::Null
                        }
                    };
                }
                return Ok(out);
            }
            Ok(peer) => last_error = anyhow!("{target} is {peer}, not the issuer {issuer}"),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

/// Sends an enrolment request and reads the answer. An issuer enrolling
/// several devices at once may drop a new stream before its accept loop
/// takes it (as for sync): a stream closed with no answer is opened again,
/// a few times. Retrying is safe: a request the issuer did read is answered,
/// and a second presentation of a spent secret is refused, not granted.
async fn ask_issuer(net: &Net, issuer: PeerId, request: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut stream = net.open(issuer, ENROL_PROTOCOL).await?;
        let exchange = async {
            net::write_frame(&mut stream, request).await?;
            net::read_frame(&mut stream, ENROL_ANSWER_MAX).await
        };
        let lost = match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, exchange).await {
            Err(_) => bail!("the issuer did not answer within {} s", FIRST_MESSAGE_TIMEOUT.as_secs()),
            Ok(Ok(Some(answer))) => return Ok(answer),
            Ok(Ok(None)) => "the issuer closed the stream without answering".to_owned(),
            Ok(Err(e)) => format!("the connection to the issuer was lost ({e})"),
        };
        if attempt >= STREAM_ATTEMPTS {
            bail!("{lost}, {attempt} times");
        }
        tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
    }
}

/// The issuer side of enrolment. `redeem` runs under `lock` so two devices
/// never spend the same use.
pub async fn answer_enrol(
    node: &Arc<Node>,
    lock: &Arc<std::sync::Mutex<()>>,
    peer: PeerId,
    mut stream: libp2p::Stream,
) -> Result<serde_json::Value, String> {
    let request =
        match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, net::read_frame(&mut stream, ENROL_REQUEST_MAX)).await {
            Ok(Ok(Some(frame))) => frame,
            _ => return Err("no enrolment request".into()),
        };
    let (node, lock) = (node.clone(), lock.clone());
    let result = crate::pool::blocking(move || -> Result<Vec<u8>, String> {
        let (secret, name, device_clock_s) = decode_enrol_request(&request)?;
        let subject = key_of(&peer).ok_or("peer id without an Ed25519 key")?;
        let _guard = lock.lock().map_err(|_| "enrolment lock poisoned".to_owned())?;
        node.redeem_token(&secret, &subject, &name, device_clock_s)
    })
    .await;
    let answer = match &result {
        Ok(chain) => EnrolAnswer { chain: Some(data_encoding::BASE64.encode(chain)), error: None },
        Err(e) => EnrolAnswer { chain: None, error: Some(e.clone()) },
    };
    let bytes = serde_json::to_vec(&answer).map_err(|e| e.to_string())?;
    net::write_frame(&mut stream, &bytes).await.map_err(|e| e.to_string())?;
    let _ = futures::AsyncWriteExt::close(&mut stream).await;
    result.map(|_| serde_json::json!({ "peer": peer.to_string() }))
}
