//! Meeting peers beyond the LAN: the rendezvous protocol `/ferry/meet/1` a
//! relay server answers, the registration every other serving node keeps
//! with its relays, and `reach`, which finds a peer by id by whichever path
//! works: a connection already open, mDNS, then each relay's rendezvous
//! book, dialing direct addresses before relayed ones.
//!
//! Only members meet. Each request carries the asker's certificate chain of
//! one org; the relay checks it against the peer id Noise authenticated and
//! the org against the orgs it holds a certificate of. Only then does it
//! answer, register, or admit the peer to its circuit relay
//! (`net::Admitted`): a stranger learns no peer and gets no slot. The
//! namespace of an org is `ferry/<org id>`; libp2p's own rendezvous protocol
//! was not used because it registers anyone under any namespace.
//!
//! Requests and answers are one JSON frame each:
//! `{"op":"register","chain":B64,"addresses":[…]}` → `{"ttl_s":N}`;
//! `{"op":"discover","chain":B64}` → `{"peers":[{"peer_id":…,"addresses":[…]}]}`;
//! either → `{"refused":"why"}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use partitions::OrgId;
use serde::{Deserialize, Serialize};

use crate::config::parse_relay;
use crate::identity::key_of;
use crate::net::{self, MEET_PROTOCOL, Net};
use crate::node::Node;

/// How long a registration lasts; members register again well before.
pub const REGISTRATION_TTL: Duration = Duration::from_secs(15 * 60);
/// How often a serving node registers again (sooner when its addresses
/// change), and how soon it tries again after a failure.
const REGISTER_EVERY: Duration = Duration::from_secs(5 * 60);
const RETRY_AFTER: Duration = Duration::from_secs(15);
/// Addresses one registration may carry, and the length of each.
const ADDRESSES_MAX: usize = 16;
const ADDRESS_CHARS_MAX: usize = 300;
/// Bytes of one request (a chain and a few addresses) and of one answer.
const REQUEST_BYTES_MAX: usize = 64 * 1024;
const ANSWER_BYTES_MAX: usize = 2 * 1024 * 1024;
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `reach` waits for a relayed connection to become direct.
pub const HOLE_PUNCH_WAIT: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum Request {
    Register { chain: String, addresses: Vec<String> },
    Discover { chain: String },
}

#[derive(Serialize, Deserialize, Default)]
struct Answer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    peers: Option<Vec<Found>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refused: Option<String>,
}

/// A peer a rendezvous point knows, with where to dial it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Found {
    pub peer_id: String,
    pub addresses: Vec<String>,
}

/// The rendezvous namespace of an org.
pub fn namespace(org: OrgId) -> String {
    format!("ferry/{org}")
}

/// The relays this node registers with: those enrolment remembered, then
/// `relays` in ferry.toml, each once.
pub fn relays(node: &Node) -> Vec<(Multiaddr, PeerId)> {
    let mut found: Vec<(Multiaddr, PeerId)> = Vec::new();
    let remembered = std::fs::read_to_string(node.home.relays_file()).unwrap_or_default();
    for line in remembered.lines().chain(node.config.relays.iter().map(String::as_str)) {
        if line.trim().is_empty() {
            continue;
        }
        match parse_relay(line) {
            Ok(relay) if !found.contains(&relay) && relay.1 != node.identity.peer_id() => found.push(relay),
            Ok(_) => {}
            Err(e) => tracing::warn!("{}: {e:#}", node.home.relays_file().display()),
        }
    }
    found
}

/// After an enrolment: remembers the issuer's addresses as a relay and
/// rendezvous point (whether it serves as one shows at the first try).
pub fn remember_relay(node: &Node, addresses: &[Multiaddr]) -> anyhow::Result<()> {
    let path = node.home.relays_file();
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    for address in addresses {
        let line = address.to_string();
        if !text.lines().any(|l| l.trim() == line) {
            text.push_str(&line);
            text.push('\n');
        }
    }
    crate::home::write_atomic(&path, text.as_bytes())
}

// ---------------------------------------------------------------------------
// The relay's side.

/// Answers one `/ferry/meet/1` stream (relay servers only).
pub async fn answer(node: &Arc<Node>, net: &Net, peer: PeerId, from: Option<Multiaddr>, mut stream: net::Stream) {
    let request = match tokio::time::timeout(ANSWER_TIMEOUT, net::read_frame(&mut stream, REQUEST_BYTES_MAX)).await {
        Ok(Ok(Some(frame))) => frame,
        _ => return,
    };
    let answer = match serde_json::from_slice::<Request>(&request) {
        Err(e) => Answer { refused: Some(format!("not a meet request: {e}")), ..Answer::default() },
        Ok(request) => match decide(node, net, peer, from.as_ref(), request).await {
            Ok(answer) => answer,
            Err(reason) => Answer { refused: Some(reason), ..Answer::default() },
        },
    };
    if let Some(reason) = &answer.refused {
        tracing::info!("refused a meet request of {peer}: {reason}");
    }
    let bytes = serde_json::to_vec(&answer).unwrap_or_default();
    let _ = net::write_frame(&mut stream, &bytes).await;
    let _ = futures::AsyncWriteExt::close(&mut stream).await;
}

/// The org `chain` proves `peer` a member of, if this node serves it.
async fn member_of(node: &Arc<Node>, peer: PeerId, chain: &str) -> Result<OrgId, String> {
    let bytes = data_encoding::BASE64.decode(chain.as_bytes()).map_err(|_| "the chain is not base64".to_owned())?;
    let key = engine::AuthorKey(key_of(&peer).ok_or("the peer id embeds no Ed25519 key")?);
    let checker = node.clone();
    crate::pool::blocking(move || -> Result<OrgId, String> {
        let org = certs::Chain::decode(&bytes).map_err(|e| format!("certificate chain: {e}"))?.org();
        let served = checker.orgs().map_err(|e| e.to_string())?;
        if !served.contains(&org) {
            return Err("this relay serves no org of that certificate".into());
        }
        engine::Authorizer::authenticate(&*checker.auth, &key, &bytes, crate::node::now_s())
            .map_err(|d| format!("the certificate is not valid here: {}", d.0))?;
        Ok(org)
    })
    .await
    .map_err(|e| format!("{e:#}"))
}

async fn decide(
    node: &Arc<Node>,
    net: &Net,
    peer: PeerId,
    from: Option<&Multiaddr>,
    request: Request,
) -> Result<Answer, String> {
    if !net.relay_server {
        return Err("this node is not a relay (relay_server = false)".into());
    }
    let chain = match &request {
        Request::Register { chain, .. } | Request::Discover { chain } => chain,
    };
    let org = member_of(node, peer, chain).await?;
    let until = Instant::now() + REGISTRATION_TTL;
    net.admitted.admit(peer, until);
    match request {
        Request::Register { addresses, .. } => {
            if addresses.len() > ADDRESSES_MAX {
                return Err(format!("{} addresses, more than the {ADDRESSES_MAX} allowed", addresses.len()));
            }
            // Loopback addresses only from a peer on this host: elsewhere
            // they name the dialer itself.
            let local = from.is_some_and(is_loopback);
            let mut kept = Vec::new();
            for text in addresses {
                if text.len() > ADDRESS_CHARS_MAX {
                    return Err(format!("an address of {} characters, more than {ADDRESS_CHARS_MAX}", text.len()));
                }
                let address: Multiaddr = text.parse().map_err(|_| format!("{text:?} is not a multiaddr"))?;
                if (is_loopback(&address) && !local) || kept.contains(&address) {
                    continue;
                }
                kept.push(address);
            }
            net.rendezvous.register(&namespace(org), peer, kept, until)?;
            Ok(Answer { ttl_s: Some(REGISTRATION_TTL.as_secs()), ..Answer::default() })
        }
        Request::Discover { .. } => {
            let peers = net
                .rendezvous
                .discover(&namespace(org))
                .into_iter()
                .filter(|(p, _)| *p != peer)
                .map(|(p, addresses)| Found {
                    peer_id: p.to_string(),
                    addresses: addresses.iter().map(ToString::to_string).collect(),
                })
                .collect();
            Ok(Answer { peers: Some(peers), ..Answer::default() })
        }
    }
}

fn is_loopback(address: &Multiaddr) -> bool {
    address.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

// ---------------------------------------------------------------------------
// A member's side.

async fn ask(net: &Net, relay: PeerId, request: &Request) -> anyhow::Result<Answer> {
    let mut stream = net.open(relay, MEET_PROTOCOL).await.map_err(|e| anyhow!("{e:#} (is it a relay?)"))?;
    let bytes = serde_json::to_vec(request)?;
    let exchange = async {
        net::write_frame(&mut stream, &bytes).await?;
        net::read_frame(&mut stream, ANSWER_BYTES_MAX).await
    };
    let frame = tokio::time::timeout(ANSWER_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("the relay did not answer within {} s", ANSWER_TIMEOUT.as_secs()))??
        .context("the relay closed the stream without answering")?;
    let answer: Answer = serde_json::from_slice(&frame).context("the relay's answer is not JSON")?;
    if let Some(reason) = answer.refused {
        bail!("the relay refused: {reason}");
    }
    Ok(answer)
}

fn chain_text(node: &Node, org: OrgId) -> anyhow::Result<String> {
    let (_, bytes) = node.chain_for(org)?;
    Ok(data_encoding::BASE64.encode(&bytes))
}

/// Registers this node under each of its orgs at `relay`, with the
/// addresses it can be dialed at: listen addresses (a relayed one once it
/// holds a slot there) and those peers observed.
pub async fn register(node: &Arc<Node>, net: &Net, relay: &Multiaddr) -> anyhow::Result<()> {
    let relay_id = net.connect(&relay.to_string()).await?;
    let me = net.peer_id;
    let mut addresses: Vec<String> = Vec::new();
    for address in net.addresses().into_iter().chain(net.observed()) {
        let mut full = address;
        if !matches!(full.iter().last(), Some(Protocol::P2p(_))) {
            full = full.with(Protocol::P2p(me));
        }
        let text = full.to_string();
        // The relay's own limits, kept here too: one address too long
        // would have it refuse the whole registration.
        if text.len() <= ADDRESS_CHARS_MAX && !addresses.contains(&text) && addresses.len() < ADDRESSES_MAX {
            addresses.push(text);
        }
    }
    let orgs = node.orgs()?;
    if orgs.is_empty() {
        bail!("this node holds no certificate to register with");
    }
    for org in orgs {
        let request = Request::Register { chain: chain_text(node, org)?, addresses: addresses.clone() };
        ask(net, relay_id, &request).await.with_context(|| format!("registering in org {org}"))?;
    }
    Ok(())
}

/// Registers at `relay` with `chain` (an encoded certificate chain of this
/// node) and these addresses: what `register` does for each org.
pub async fn register_chain(net: &Net, relay: &Multiaddr, chain: &[u8], addresses: Vec<String>) -> anyhow::Result<()> {
    let relay_id = net.connect(&relay.to_string()).await?;
    ask(net, relay_id, &Request::Register { chain: data_encoding::BASE64.encode(chain), addresses }).await?;
    Ok(())
}

/// The members of `org` registered at `relay` (this node left out).
pub async fn discover(node: &Node, net: &Net, relay: &Multiaddr, org: OrgId) -> anyhow::Result<Vec<Found>> {
    let relay_id = net.connect(&relay.to_string()).await?;
    let answer = ask(net, relay_id, &Request::Discover { chain: chain_text(node, org)? }).await?;
    Ok(answer.peers.unwrap_or_default())
}

/// Keeps this serving node registered with its relays, and holding a slot
/// on each (`net::Driver::reserve` says why whatever AutoNAT finds). `report` hears each
/// registration's outcome.
pub async fn keep_registered(node: Arc<Node>, net: Arc<Net>, report: impl Fn(&Multiaddr, Result<(), String>)) {
    let relays = relays(&node);
    if relays.is_empty() {
        return;
    }
    let mut listening = net.watch_listening();
    let mut last: Vec<Option<bool>> = vec![None; relays.len()];
    loop {
        let mut all_ok = true;
        for (i, (relay, relay_id)) in relays.iter().enumerate() {
            let outcome = register(&node, &net, relay).await;
            let ok = outcome.is_ok();
            all_ok &= ok;
            // After the registration, which admits this node: the relay
            // decides (a refused registration gets a refused slot, and the
            // reason shows as `reservation_failed`).
            if net.link(relay_id).is_some() {
                let _ = net.use_relay(relay.clone()).await;
            }
            // Told when it changes: a relay that is down is said once, not
            // at every retry.
            if last[i] != Some(ok) {
                report(relay, outcome.map_err(|e| format!("{e:#}")));
            }
            last[i] = Some(ok);
        }
        let wait = if all_ok { REGISTER_EVERY } else { RETRY_AFTER };
        // A new address (a slot on a relay, another interface) is told at once.
        let _ = tokio::time::timeout(wait, listening.changed()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        listening.borrow_and_update();
    }
}

/// Connects to `target`: a multiaddr, or a peer id found by an open
/// connection, mDNS, or a relay's rendezvous book of `org`. A relayed
/// connection is given a while to become direct by hole punching.
pub async fn reach(node: &Node, net: &Net, target: &str, org: OrgId) -> anyhow::Result<PeerId> {
    if target.starts_with('/') {
        return net.connect(target).await;
    }
    let peer = crate::identity::parse_peer_id(target)?;
    let known = net.link(&peer).is_some() || net.discovered().contains_key(&peer);
    if known {
        return net.connect(target).await;
    }
    // On the relay itself: its own book.
    let mut addresses: Vec<Multiaddr> = if net.relay_server {
        net.rendezvous.discover(&namespace(org)).into_iter().filter(|(p, _)| *p == peer).flat_map(|(_, a)| a).collect()
    } else {
        Vec::new()
    };
    let relays = relays(node);
    let mut reasons = Vec::new();
    if addresses.is_empty() {
        for (relay, _) in &relays {
            match discover(node, net, relay, org).await {
                Ok(found) => {
                    if let Some(entry) = found.into_iter().find(|f| f.peer_id == peer.to_string()) {
                        addresses = entry.addresses.iter().filter_map(|a| a.parse().ok()).collect();
                        break;
                    }
                }
                Err(e) => reasons.push(format!("{}: {e:#}", net::short_address(relay))),
            }
        }
    }
    if addresses.is_empty() {
        let why = if relays.is_empty() && !net.relay_server {
            "no relay is known to ask (enrol with a central, or set relays in ferry.toml)".to_owned()
        } else if reasons.is_empty() {
            "no relay knows it: is it serving?".to_owned()
        } else {
            reasons.join("; ")
        };
        bail!("peer {peer} was not found on the LAN (mDNS), and {why}: give its address instead");
    }
    let found = net.connect_by(peer, &addresses).await?;
    if net.link(&found) == Some("relayed") {
        net.wait_direct(found, HOLE_PUNCH_WAIT).await;
    }
    Ok(found)
}

/// `ferry peers`: the peers found on the LAN, those connected, and those
/// each relay's rendezvous book holds for this node's orgs, each with how
/// it is reached now (`direct`, `relayed`, or `null` when not connected).
pub async fn peers(node: &Node, net: &Net) -> Vec<serde_json::Value> {
    use std::collections::{BTreeMap, BTreeSet};
    #[derive(Default)]
    struct Seen {
        addresses: BTreeSet<String>,
        found_by: BTreeSet<&'static str>,
    }
    let mut seen: BTreeMap<PeerId, Seen> = BTreeMap::new();
    for (peer, addresses) in net.discovered() {
        let entry = seen.entry(peer).or_default();
        entry.found_by.insert("lan");
        entry.addresses.extend(addresses.iter().map(ToString::to_string));
    }
    for (peer, links) in net.links() {
        let entry = seen.entry(peer).or_default();
        entry.found_by.insert("connected");
        entry.addresses.extend(links.values().filter(|l| l.dialed).map(|l| l.address.to_string()));
    }
    let orgs = node.orgs().unwrap_or_default();
    let mut book: Vec<(PeerId, Vec<String>)> = Vec::new();
    if net.relay_server {
        for org in &orgs {
            for (peer, addresses) in net.rendezvous.discover(&namespace(*org)) {
                book.push((peer, addresses.iter().map(ToString::to_string).collect()));
            }
        }
    }
    for (relay, _) in relays(node) {
        for org in &orgs {
            match discover(node, net, &relay, *org).await {
                Ok(found) => {
                    for f in found {
                        if let Ok(peer) = f.peer_id.parse::<PeerId>() {
                            book.push((peer, f.addresses));
                        }
                    }
                }
                Err(e) => tracing::info!("cannot ask {relay} for the peers of {org}: {e:#}"),
            }
        }
    }
    for (peer, addresses) in book {
        if peer == net.peer_id {
            continue;
        }
        let entry = seen.entry(peer).or_default();
        entry.found_by.insert("rendezvous");
        entry.addresses.extend(addresses);
    }
    seen.into_iter()
        .map(|(peer, s)| {
            serde_json::json!({
                "peer_id": peer.to_string(),
                "link": net.link(&peer),
                "found_by": s.found_by,
                "addresses": s.addresses,
            })
        })
        .collect()
}
