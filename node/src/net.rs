//! The libp2p side: a swarm with TCP + Noise + Yamux and QUIC, identify,
//! ping, mDNS (optional) and connection limits, the circuit relay (a client
//! always, a server with `relay_server = true`), AutoNAT and hole punching
//! (DCUtR), driven by its own task; framed streams; and the sync and
//! enrolment protocols on them.
//!
//! A relayed connection is replaced by a direct one as soon as one exists:
//! the relayed ones to that peer are closed, so streams (which libp2p-stream
//! opens on any connection to the peer) go direct.
//!
//! Everything that waits on a peer has a timeout; every channel is bounded;
//! a peer's bad message ends that peer's stream and nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, autonat, connection_limits, dcutr, identify, mdns, noise, ping, relay, tcp,
    yamux,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::identity::Identity;

/// A libp2p stream (for callers that do not depend on libp2p themselves).
pub type Stream = libp2p::Stream;

pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/ferry/sync/1");
pub const ENROL_PROTOCOL: StreamProtocol = StreamProtocol::new("/ferry/enrol/1");
pub const BLOB_PROTOCOL: StreamProtocol = StreamProtocol::new("/ferry/blob/1");
pub const MEET_PROTOCOL: StreamProtocol = StreamProtocol::new("/ferry/meet/1");

/// Connections in total, and per peer (three: both sides may dial at once,
/// and a relayed one lasts until hole punching replaced it).
const CONNECTIONS_MAX: u32 = 512;
const CONNECTIONS_PER_PEER_MAX: u32 = 3;
const PENDING_INCOMING_MAX: u32 = 64;
/// Commands queued to the swarm task.
const COMMANDS_MAX: usize = 64;
/// How long a dial and a stream opening may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Connections without streams close after this.
const IDLE_CONNECTION: Duration = Duration::from_secs(60);
/// How long a dial of a peer's direct addresses may take.
pub const DIRECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the direct addresses are tried alone before the relayed ones
/// join in.
pub const DIRECT_HEAD_START: Duration = Duration::from_millis(1000);
/// Observed addresses of this node kept (what peers saw it dial from).
const OBSERVED_MAX: usize = 8;

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    relay: Toggle<relay::Behaviour>,
    relay_client: relay::client::Behaviour,
    dcutr: dcutr::Behaviour,
    autonat: autonat::Behaviour,
    stream: libp2p_stream::Behaviour,
}

/// How a node starts its network.
pub struct NetOptions {
    pub listen: Vec<Multiaddr>,
    pub mdns: bool,
    /// Serve as a circuit relay with these limits, for the peers
    /// `Net::admitted` lets in.
    pub relay_server: Option<crate::config::RelayLimits>,
}

impl NetOptions {
    pub fn new(listen: &[Multiaddr], mdns: bool) -> NetOptions {
        NetOptions { listen: listen.to_vec(), mdns, relay_server: None }
    }
}

/// The peers that proved, with a certificate, that they are members of an
/// org this relay serves (`meet.rs`), each until a time: only they may
/// reserve a slot on the relay or open a circuit through it.
#[derive(Default)]
pub struct Admitted(Mutex<BTreeMap<PeerId, Instant>>);

/// Peers admitted at once, at most: an admission older than every other is
/// dropped first when full.
const ADMITTED_MAX: usize = 65_536;

impl Admitted {
    pub fn admit(&self, peer: PeerId, until: Instant) {
        let mut admitted = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if admitted.len() >= ADMITTED_MAX {
            admitted.retain(|_, until| *until > now);
        }
        if admitted.len() >= ADMITTED_MAX
            && let Some(oldest) = admitted.iter().min_by_key(|(_, until)| **until).map(|(p, _)| *p)
        {
            admitted.remove(&oldest);
        }
        admitted.insert(peer, until);
    }

    pub fn allows(&self, peer: &PeerId) -> bool {
        let admitted = self.0.lock().unwrap_or_else(|e| e.into_inner());
        admitted.get(peer).is_some_and(|until| *until > Instant::now())
    }

    /// A rate limiter for the relay that lets only admitted peers through.
    fn limiter(self: &Arc<Self>) -> Box<dyn relay::RateLimiter> {
        let admitted = self.clone();
        Box::new(move |peer: PeerId, _: &Multiaddr, _: Instant| admitted.allows(&peer))
    }
}

/// A rendezvous point's book (on a relay server): per namespace (one per
/// org, `meet.rs`), the peers registered and where they can be dialed, each
/// until a time. Bounded: a full namespace refuses new peers.
#[derive(Default)]
pub struct Rendezvous(Mutex<BTreeMap<String, Registrations>>);

/// The peers of one namespace: their addresses, and until when.
type Registrations = BTreeMap<PeerId, (Vec<Multiaddr>, Instant)>;

/// Peers one namespace holds at most.
pub const RENDEZVOUS_PEERS_MAX: usize = 4096;

impl Rendezvous {
    pub fn register(
        &self,
        namespace: &str,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        until: Instant,
    ) -> Result<(), String> {
        let mut book = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let peers = book.entry(namespace.to_owned()).or_default();
        peers.retain(|_, (_, until)| *until > now);
        if peers.len() >= RENDEZVOUS_PEERS_MAX && !peers.contains_key(&peer) {
            return Err(format!("the rendezvous point holds {RENDEZVOUS_PEERS_MAX} peers of this org already"));
        }
        peers.insert(peer, (addresses, until));
        Ok(())
    }

    /// The peers registered under `namespace` now, with their addresses.
    pub fn discover(&self, namespace: &str) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let book = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        book.get(namespace)
            .map(|peers| {
                peers.iter().filter(|(_, (_, until))| *until > now).map(|(p, (a, _))| (*p, a.clone())).collect()
            })
            .unwrap_or_default()
    }
}

/// One connection to a peer, as `ferry peers` and the status show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub address: Multiaddr,
    /// Through a relay's circuit, not straight to the peer.
    pub relayed: bool,
    pub dialed: bool,
}

pub type Links = BTreeMap<PeerId, BTreeMap<ConnectionId, Link>>;

/// Whether AutoNAT found this node reachable from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    Unknown,
    Private,
    Public,
}

impl Reach {
    pub fn as_str(self) -> &'static str {
        match self {
            Reach::Unknown => "unknown",
            Reach::Private => "private",
            Reach::Public => "public",
        }
    }
}

/// What a relay server did for or against a peer (printed by `serve`).
#[derive(Clone, Debug)]
pub enum RelayNote {
    Reserved(PeerId),
    ReservationRefused(PeerId, String),
    Circuit(PeerId, PeerId),
    CircuitRefused(PeerId, PeerId, String),
}

/// Whether an address goes through a relay.
pub fn is_relayed(address: &Multiaddr) -> bool {
    address.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// Something the swarm task reports.
#[derive(Clone, Debug)]
pub enum NetEvent {
    Listening(Multiaddr),
    Discovered(PeerId, Multiaddr),
    /// The peer, its address, and whether this node dialed it (an address
    /// a peer dialed from is an ephemeral port, not one to dial back).
    Connected(PeerId, Multiaddr, bool),
    Disconnected(PeerId),
    /// A relay reservation was accepted (this node is reachable through
    /// that relay) or refused.
    Reservation(PeerId, Result<(), String>),
    Reach(Reach),
    /// A relayed connection became direct by hole punching, or not.
    HolePunch(PeerId, Result<(), String>),
    Relay(RelayNote),
}

enum Command {
    /// Dial any of the addresses; answer with the peer's id once connected.
    /// `Fresh` dials from a new local port, not the one this node listens
    /// on.
    Dial(Vec<Multiaddr>, Option<PeerId>, Port, oneshot::Sender<Result<PeerId, String>>),
    /// Reserve a slot on this relay, and keep it.
    UseRelay(Multiaddr),
    /// Ask this relay for one more slot now, and answer whether it gave it.
    ReserveOnce(Multiaddr, oneshot::Sender<Result<(), String>>),
}

/// The local port of a dial. `Listening` (libp2p's port reuse) makes the
/// address peers observe the one hole punching needs; `Fresh` is for a try
/// of addresses that may be behind a NAT, whose unanswered attempt would
/// otherwise hold the very port pair hole punching then dials.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Port {
    Listening,
    Fresh,
}

/// Peers found on the LAN by mDNS, with their addresses.
pub type Discovered = BTreeMap<PeerId, BTreeSet<Multiaddr>>;

/// How long `start` waits for every listener to have its address.
const LISTEN_WAIT: Duration = Duration::from_secs(5);

/// A running libp2p node.
pub struct Net {
    pub peer_id: PeerId,
    control: libp2p_stream::Control,
    commands: mpsc::Sender<Command>,
    /// Kept up to date by the swarm task; a receiver wakes when they change.
    listening: watch::Receiver<Vec<Multiaddr>>,
    discovered: watch::Receiver<Discovered>,
    links: watch::Receiver<Links>,
    /// Addresses peers saw this node at, newest last.
    observed: watch::Receiver<Vec<Multiaddr>>,
    /// The last hole punching outcome per peer.
    punched: watch::Receiver<BTreeMap<PeerId, Result<(), String>>>,
    /// Who may use this node's relay, and its rendezvous book.
    pub admitted: Arc<Admitted>,
    pub rendezvous: Arc<Rendezvous>,
    /// Whether this node serves as a relay and rendezvous point.
    pub relay_server: bool,
    task: tokio::task::JoinHandle<()>,
}

/// The channels the swarm task keeps current.
struct Watches {
    listening: watch::Sender<Vec<Multiaddr>>,
    discovered: watch::Sender<Discovered>,
    links: watch::Sender<Links>,
    observed: watch::Sender<Vec<Multiaddr>>,
    punched: watch::Sender<BTreeMap<PeerId, Result<(), String>>>,
}

impl Net {
    /// Builds the swarm, starts listening and spawns its task. `events`
    /// receives what happens (best effort: events are dropped when full).
    pub async fn start(
        identity: &Identity,
        listen: &[Multiaddr],
        enable_mdns: bool,
        events: Option<mpsc::Sender<NetEvent>>,
    ) -> anyhow::Result<Net> {
        Net::start_with(identity, NetOptions::new(listen, enable_mdns), events).await
    }

    pub async fn start_with(
        identity: &Identity,
        options: NetOptions,
        events: Option<mpsc::Sender<NetEvent>>,
    ) -> anyhow::Result<Net> {
        let NetOptions { listen, mdns: enable_mdns, relay_server } = options;
        let admitted = Arc::<Admitted>::default();
        let serves_relay = relay_server.is_some();
        let keypair = identity.keypair();
        let peer_id = keypair.public().to_peer_id();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)?
            .with_quic()
            .with_relay_client(noise::Config::new, yamux::Config::default)?
            .with_behaviour(|key, relay_client| -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
                let local = key.public().to_peer_id();
                let relay =
                    relay_server.as_ref().map(|limits| relay::Behaviour::new(local, relay_config(limits, &admitted)));
                let mdns = if enable_mdns {
                    let config = mdns::Config { query_interval: Duration::from_secs(5), ..Default::default() };
                    match mdns::tokio::Behaviour::new(config, key.public().to_peer_id()) {
                        Ok(m) => Some(m),
                        Err(e) => {
                            tracing::warn!("mDNS is off: {e}");
                            None
                        }
                    }
                } else {
                    None
                };
                Ok(Behaviour {
                    limits: connection_limits::Behaviour::new(
                        connection_limits::ConnectionLimits::default()
                            .with_max_established(Some(CONNECTIONS_MAX))
                            .with_max_established_per_peer(Some(CONNECTIONS_PER_PEER_MAX))
                            .with_max_pending_incoming(Some(PENDING_INCOMING_MAX)),
                    ),
                    identify: identify::Behaviour::new(
                        identify::Config::new("/ferry/1".into(), key.public())
                            .with_agent_version(format!("ferry/{}", env!("CARGO_PKG_VERSION"))),
                    ),
                    ping: ping::Behaviour::new(ping::Config::new()),
                    mdns: Toggle::from(mdns),
                    relay: Toggle::from(relay),
                    relay_client,
                    dcutr: dcutr::Behaviour::new(local),
                    autonat: autonat::Behaviour::new(local, autonat_config()),
                    stream: libp2p_stream::Behaviour::new(),
                })
            })?
            .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION))
            .build();
        let listeners = listen.len();
        for address in listen {
            swarm.listen_on(address.clone()).with_context(|| format!("cannot listen on {address}"))?;
        }
        let control = swarm.behaviour().stream.new_control();
        let (listening_tx, listening) = watch::channel(Vec::new());
        let (discovered_tx, discovered) = watch::channel(Discovered::new());
        let (links_tx, links) = watch::channel(Links::new());
        let (observed_tx, observed) = watch::channel(Vec::new());
        let (punched_tx, punched) = watch::channel(BTreeMap::new());
        let watches = Watches {
            listening: listening_tx,
            discovered: discovered_tx,
            links: links_tx,
            observed: observed_tx,
            punched: punched_tx,
        };
        let (commands, command_rx) = mpsc::channel(COMMANDS_MAX);
        let task = tokio::spawn(drive(swarm, command_rx, events, watches));
        let net = Net {
            peer_id,
            control,
            commands,
            listening,
            discovered,
            links,
            observed,
            punched,
            admitted,
            rendezvous: Arc::default(),
            relay_server: serves_relay,
            task,
        };
        // Wait until every listener has an address (or a short while): woken
        // by each new address. A task that stopped ends the wait too.
        let mut addresses = net.listening.clone();
        let _ = tokio::time::timeout(LISTEN_WAIT, addresses.wait_for(|a| a.len() >= listeners)).await;
        Ok(net)
    }

    /// The connections open now, per peer.
    pub fn links(&self) -> Links {
        self.links.borrow().clone()
    }

    /// `direct` when some connection to `peer` is, `relayed` when all go
    /// through a relay, `None` when not connected.
    pub fn link(&self, peer: &PeerId) -> Option<&'static str> {
        let links = self.links.borrow();
        let of_peer = links.get(peer).filter(|l| !l.is_empty())?;
        Some(if of_peer.values().any(|l| !l.relayed) { "direct" } else { "relayed" })
    }

    /// Addresses peers saw this node at (its NAT's outside, behind one).
    pub fn observed(&self) -> Vec<Multiaddr> {
        self.observed.borrow().clone()
    }

    /// Reserves a slot on `relay` (a multiaddr ending in its peer id), and
    /// keeps it: taken again when it ends (`Driver::reserve`).
    pub async fn use_relay(&self, relay: Multiaddr) -> anyhow::Result<()> {
        self.commands.send(Command::UseRelay(relay)).await.map_err(|_| anyhow!("the network task stopped"))
    }

    /// Asks `relay` for a slot now, whatever this node's reachability, and
    /// says whether it gave one (a relay's limits are tested with this).
    pub async fn reserve_once(&self, relay: Multiaddr) -> anyhow::Result<()> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::ReserveOnce(relay, reply))
            .await
            .map_err(|_| anyhow!("the network task stopped"))?;
        tokio::time::timeout(CONNECT_TIMEOUT, answer)
            .await
            .map_err(|_| anyhow!("the relay did not answer within {} s", CONNECT_TIMEOUT.as_secs()))?
            .map_err(|_| anyhow!("the network task stopped"))?
            .map_err(|e| anyhow!("{e}"))
    }

    /// After a relayed connection to `peer`: waits, up to `limit`, for hole
    /// punching to make it direct. True when the link is direct.
    pub async fn wait_direct(&self, peer: PeerId, limit: Duration) -> bool {
        if self.link(&peer) != Some("relayed") {
            return self.link(&peer) == Some("direct");
        }
        let before = self.punched.borrow().get(&peer).cloned();
        let mut links = self.links.clone();
        let mut punched = self.punched.clone();
        let wait = async {
            loop {
                let direct = links.borrow_and_update().get(&peer).is_some_and(|l| l.values().any(|l| !l.relayed));
                if direct {
                    return true;
                }
                let outcome = punched.borrow_and_update().get(&peer).cloned();
                if matches!(outcome, Some(Err(_))) && outcome != before {
                    return false;
                }
                tokio::select! {
                    changed = links.changed() => if changed.is_err() { return false },
                    changed = punched.changed() => if changed.is_err() { return false },
                }
            }
        };
        tokio::time::timeout(limit, wait).await.unwrap_or(false)
    }

    /// Connects to `peer` by the first of `addresses` that answers. The
    /// direct ones go first; the relayed ones follow after a head start of
    /// `DIRECT_HEAD_START` (or at once when the direct ones failed), and
    /// whichever connects first wins. A direct address behind the peer's NAT
    /// never answers, so waiting for it in full would make every relayed
    /// sync wait too.
    pub async fn connect_by(&self, peer: PeerId, addresses: &[Multiaddr]) -> anyhow::Result<PeerId> {
        if self.link(&peer).is_some() {
            return Ok(peer);
        }
        let (relayed, direct): (Vec<Multiaddr>, Vec<Multiaddr>) = addresses.iter().cloned().partition(is_relayed);
        if direct.is_empty() && relayed.is_empty() {
            bail!("no address of peer {peer} is known");
        }
        let try_group = |group: Vec<Multiaddr>, limit: Duration| async move {
            if group.is_empty() {
                return Err(None);
            }
            self.dial(group, Some(peer), Port::Fresh, limit).await.map_err(|e| Some(e.to_string()))
        };
        let direct_try = try_group(direct, DIRECT_TIMEOUT);
        tokio::pin!(direct_try);
        let mut direct_failed: Option<Option<String>> = None;
        tokio::select! {
            result = &mut direct_try => match result {
                Ok(found) => return Ok(found),
                Err(reason) => direct_failed = Some(reason),
            },
            _ = tokio::time::sleep(DIRECT_HEAD_START) => {}
        }
        let relayed_try = try_group(relayed, CONNECT_TIMEOUT);
        tokio::pin!(relayed_try);
        let mut relayed_failed: Option<Option<String>> = None;
        while direct_failed.is_none() || relayed_failed.is_none() {
            tokio::select! {
                result = &mut direct_try, if direct_failed.is_none() => match result {
                    Ok(found) => return Ok(found),
                    Err(reason) => direct_failed = Some(reason),
                },
                result = &mut relayed_try, if relayed_failed.is_none() => match result {
                    Ok(found) => return Ok(found),
                    Err(reason) => relayed_failed = Some(reason),
                },
            }
        }
        let reasons: Vec<String> = [direct_failed, relayed_failed].into_iter().flatten().flatten().collect();
        bail!("{}", reasons.join("; "))
    }

    async fn dial(
        &self,
        addresses: Vec<Multiaddr>,
        expected: Option<PeerId>,
        port: Port,
        limit: Duration,
    ) -> anyhow::Result<PeerId> {
        let shown = addresses.first().map(short_address).unwrap_or_default();
        let shown =
            if addresses.len() > 1 { format!("{shown} (and {} more addresses)", addresses.len() - 1) } else { shown };
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Dial(addresses, expected, port, reply))
            .await
            .map_err(|_| anyhow!("the network task stopped"))?;
        // A connection to the peer made otherwise meanwhile (the peer
        // dialing back, or a relayed one the swarm added) ends the wait too.
        let mut links = self.links.clone();
        let connected = async {
            match expected {
                Some(peer) => {
                    let _ = links.wait_for(|l| l.get(&peer).is_some_and(|c| !c.is_empty())).await;
                    peer
                }
                None => std::future::pending().await,
            }
        };
        let answered = async {
            tokio::select! {
                answer = answer => answer
                    .map_err(|_| anyhow!("the network task stopped"))?
                    .map_err(|e| anyhow!("cannot reach {shown}: {e}")),
                peer = connected => Ok(peer),
            }
        };
        tokio::time::timeout(limit, answered)
            .await
            .map_err(|_| anyhow!("no answer from {shown} within {} s", limit.as_secs()))?
    }

    pub fn addresses(&self) -> Vec<Multiaddr> {
        self.listening.borrow().clone()
    }

    /// A receiver that wakes whenever a listen address comes or goes.
    pub fn watch_listening(&self) -> watch::Receiver<Vec<Multiaddr>> {
        self.listening.clone()
    }

    /// The peers found on the LAN so far.
    pub fn discovered(&self) -> Discovered {
        self.discovered.borrow().clone()
    }

    /// A receiver that wakes whenever a peer is found or expires.
    pub fn watch_discovered(&self) -> watch::Receiver<Discovered> {
        self.discovered.clone()
    }

    /// Addresses others can dial: listen addresses with our peer id.
    pub fn dialable(&self) -> Vec<String> {
        self.addresses().into_iter().map(|a| a.with(Protocol::P2p(self.peer_id)).to_string()).collect()
    }

    /// Connects to `address` (its `/p2p/` part, if any, must match the
    /// peer), or to a peer id connected already or found by mDNS. Returns
    /// the peer's id.
    pub async fn connect(&self, target: &str) -> anyhow::Result<PeerId> {
        let (address, expected) = match target.parse::<Multiaddr>() {
            Ok(address) => {
                // The last `/p2p/`: in a relayed address the first is the relay.
                let expected =
                    address.iter().filter_map(|p| if let Protocol::P2p(id) = p { Some(id) } else { None }).last();
                (Some(address), expected)
            }
            Err(e) if target.starts_with('/') => {
                bail!("{target:?} is not a multiaddr ({e}): write one like /ip4/192.0.2.10/tcp/4040")
            }
            Err(_) => (None, Some(crate::identity::parse_peer_id(target)?)),
        };
        let address = match address {
            Some(a) => a,
            None => {
                let peer = expected.expect("set above");
                if self.link(&peer).is_some() {
                    return Ok(peer);
                }
                let found = self.discovered.borrow().get(&peer).and_then(|s| s.iter().next().cloned());
                found
                    .with_context(|| format!("peer {peer} was not found on the LAN (mDNS): give its address instead"))?
            }
        };
        let peer = self.dial(vec![address.clone()], expected, Port::Listening, CONNECT_TIMEOUT).await?;
        if let Some(expected) = expected
            && expected != peer
        {
            bail!("{address} answered as {peer}, not {expected}");
        }
        Ok(peer)
    }

    pub async fn open(&self, peer: PeerId, protocol: StreamProtocol) -> anyhow::Result<libp2p::Stream> {
        let mut control = self.control.clone();
        tokio::time::timeout(CONNECT_TIMEOUT, control.open_stream(peer, protocol.clone()))
            .await
            .map_err(|_| anyhow!("peer {peer} did not open a {protocol} stream in time"))?
            .map_err(|e| anyhow!("peer {peer} refused a {protocol} stream: {e}"))
    }

    pub fn accept(&self, protocol: StreamProtocol) -> anyhow::Result<libp2p_stream::IncomingStreams> {
        let mut control = self.control.clone();
        control.accept(protocol.clone()).map_err(|_| anyhow!("{protocol} is already being accepted"))
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

fn relay_config(limits: &crate::config::RelayLimits, admitted: &Arc<Admitted>) -> relay::Config {
    let mut config = relay::Config {
        max_reservations: limits.max_reservations,
        max_reservations_per_peer: limits.max_reservations_per_peer,
        reservation_duration: limits.reservation_duration(),
        max_circuits: limits.max_circuits,
        max_circuits_per_peer: limits.max_circuits_per_peer,
        max_circuit_duration: limits.max_circuit_duration(),
        max_circuit_bytes: limits.max_circuit_bytes,
        ..relay::Config::default()
    };
    // Members only, and then the per-peer and per-IP token buckets of the
    // defaults (30 reservations, then one per 2 minutes, per peer).
    config.reservation_rate_limiters.insert(0, admitted.limiter());
    config.circuit_src_rate_limiters.insert(0, admitted.limiter());
    config
}

fn autonat_config() -> autonat::Config {
    autonat::Config {
        // Soon after start: a device decides early whether it needs its
        // relay. Private addresses count: a school's "internet" may be a
        // district network in 10.0.0.0/8.
        boot_delay: Duration::from_secs(2),
        retry_interval: Duration::from_secs(30),
        refresh_interval: Duration::from_secs(5 * 60),
        throttle_server_period: Duration::from_secs(5),
        timeout: Duration::from_secs(10),
        confidence_max: 1,
        only_global_ips: false,
        ..autonat::Config::default()
    }
}

/// The swarm task's own state besides the swarm.
struct Driver {
    dials: BTreeMap<ConnectionId, oneshot::Sender<Result<PeerId, String>>>,
    relays: Vec<Multiaddr>,
    reservations: BTreeMap<Multiaddr, ListenerId>,
    relay_server: bool,
    /// `ReserveOnce` requests waiting for their listener to say yes or no.
    asked: std::collections::HashMap<ListenerId, oneshot::Sender<Result<(), String>>>,
}

impl Driver {
    /// Holds a slot on every relay, whatever AutoNAT says. AutoNAT (v1)
    /// over QUIC dials back from the very socket of the flow it checks,
    /// which a NAT lets in, so a node behind one can be called public; a
    /// wrong "public" that let go of the slot would leave it unreachable,
    /// while a slot held for nothing costs its relay a few hundred bytes.
    fn reserve(&mut self, swarm: &mut libp2p::Swarm<Behaviour>) {
        for relay in &self.relays {
            if self.reservations.contains_key(relay) {
                continue;
            }
            match swarm.listen_on(relay.clone().with(Protocol::P2pCircuit)) {
                Ok(listener) => {
                    self.reservations.insert(relay.clone(), listener);
                }
                Err(e) => tracing::warn!("cannot reserve on the relay {relay}: {e}"),
            }
        }
    }
}

async fn drive(
    mut swarm: libp2p::Swarm<Behaviour>,
    mut commands: mpsc::Receiver<Command>,
    events: Option<mpsc::Sender<NetEvent>>,
    watches: Watches,
) {
    let relay_server = swarm.behaviour().relay.is_enabled();
    let mut state = Driver {
        dials: BTreeMap::new(),
        relays: Vec::new(),
        reservations: BTreeMap::new(),
        relay_server,
        asked: std::collections::HashMap::new(),
    };
    let emit = |event: NetEvent| {
        if let Some(events) = &events {
            let _ = events.try_send(event);
        }
    };
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::ReserveOnce(relay, reply)) => {
                    match swarm.listen_on(relay.with(Protocol::P2pCircuit)) {
                        Ok(listener) => { state.asked.insert(listener, reply); }
                        Err(e) => { let _ = reply.send(Err(e.to_string())); }
                    }
                }
                Some(Command::UseRelay(relay)) => {
                    if !state.relays.contains(&relay) {
                        state.relays.push(relay);
                    }
                    state.reserve(&mut swarm);
                }
                Some(Command::Dial(addresses, peer, port, reply)) => {
                    // One connection is enough: streams multiplex over it.
                    if let Some(peer) = peer
                        && swarm.is_connected(&peer)
                    {
                        let _ = reply.send(Ok(peer));
                        continue;
                    }
                    let opts = match peer {
                        Some(peer) => {
                            let bare = addresses
                                .into_iter()
                                .map(|mut a| {
                                    if matches!(a.iter().last(), Some(Protocol::P2p(_))) {
                                        a.pop();
                                    }
                                    a
                                })
                                .collect();
                            let opts = DialOpts::peer_id(peer).addresses(bare).condition(libp2p::swarm::dial_opts::PeerCondition::Always);
                            if port == Port::Fresh { opts.allocate_new_port().build() } else { opts.build() }
                        }
                        None => match addresses.into_iter().next() {
                            Some(address) => DialOpts::unknown_peer_id().address(address).build(),
                            None => {
                                let _ = reply.send(Err("no address to dial".into()));
                                continue;
                            }
                        },
                    };
                    let id = opts.connection_id();
                    match swarm.dial(opts) {
                        Ok(()) => { state.dials.insert(id, reply); }
                        Err(e) => { let _ = reply.send(Err(describe_dial_error(&e))); }
                    }
                }
            },
            event = swarm.select_next_some() => on_event(&mut swarm, &mut state, &watches, &emit, event),
        }
    }
}

fn on_event(
    swarm: &mut libp2p::Swarm<Behaviour>,
    state: &mut Driver,
    watches: &Watches,
    emit: &dyn Fn(NetEvent),
    event: SwarmEvent<BehaviourEvent>,
) {
    match event {
        SwarmEvent::NewListenAddr { address, listener_id } => {
            if let Some(reply) = state.asked.remove(&listener_id) {
                let _ = reply.send(Ok(()));
            }
            // A relay serves only once it has an external address, and one
            // set up as relay is meant to be reached where it listens.
            if state.relay_server && !is_relayed(&address) {
                swarm.add_external_address(address.clone());
            }
            watches.listening.send_modify(|known| known.push(address.clone()));
            emit(NetEvent::Listening(address));
        }
        SwarmEvent::ExpiredListenAddr { address, .. } => {
            watches.listening.send_modify(|known| known.retain(|a| *a != address));
        }
        SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
            if let Some(reply) = state.asked.remove(&listener_id) {
                let why = match &reason {
                    Err(e) => root_cause(e),
                    Ok(()) => "the reservation ended".to_owned(),
                };
                let _ = reply.send(Err(why));
            }
            // A reservation that ended (the relay went away, or refused it).
            if let Some(relay) = state.reservations.iter().find(|(_, l)| **l == listener_id).map(|(r, _)| r.clone()) {
                state.reservations.remove(&relay);
                // A slot that was held and ended: its address goes, which
                // wakes `meet::keep_registered` to register and reserve
                // again. (A refused slot had no address: no retry loop.)
                watches.listening.send_if_modified(|known| {
                    let before = known.len();
                    known.retain(|a| !(is_relayed(a) && a.to_string().starts_with(&relay.to_string())));
                    known.len() != before
                });
                let relay_id = relay.iter().find_map(|p| if let Protocol::P2p(id) = p { Some(id) } else { None });
                if let (Err(e), Some(relay_id)) = (reason, relay_id) {
                    emit(NetEvent::Reservation(relay_id, Err(root_cause(&e))));
                }
            }
        }
        SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
            let address = endpoint.get_remote_address().clone();
            let relayed = endpoint.is_relayed();
            let link = Link { address: address.clone(), relayed, dialed: endpoint.is_dialer() };
            let mut replaced = Vec::new();
            watches.links.send_modify(|links| {
                let of_peer = links.entry(peer_id).or_default();
                of_peer.insert(connection_id, link);
                if !relayed {
                    replaced = of_peer.iter().filter(|(_, l)| l.relayed).map(|(id, _)| *id).collect();
                }
            });
            // Streams go on any connection to the peer: leave only direct ones.
            for id in replaced {
                swarm.close_connection(id);
            }
            // After the links: whoever dialed sees this connection in them.
            if let Some(reply) = state.dials.remove(&connection_id) {
                let _ = reply.send(Ok(peer_id));
            }
            emit(NetEvent::Connected(peer_id, address, endpoint.is_dialer()));
        }
        SwarmEvent::OutgoingConnectionError { connection_id, error, peer_id } => {
            tracing::debug!(?peer_id, "a dial failed: {}", describe_dial_error(&error));
            if let Some(reply) = state.dials.remove(&connection_id) {
                let _ = reply.send(Err(describe_dial_error(&error)));
            }
        }
        SwarmEvent::ConnectionClosed { peer_id, connection_id, num_established, .. } => {
            watches.links.send_modify(|links| {
                if let Some(of_peer) = links.get_mut(&peer_id) {
                    of_peer.remove(&connection_id);
                    if of_peer.is_empty() {
                        links.remove(&peer_id);
                    }
                }
            });
            if num_established == 0 {
                emit(NetEvent::Disconnected(peer_id));
            }
        }
        SwarmEvent::NewExternalAddrCandidate { address } => {
            watches.observed.send_if_modified(|known| {
                if known.contains(&address) || is_relayed(&address) {
                    return false;
                }
                known.push(address);
                if known.len() > OBSERVED_MAX {
                    known.remove(0);
                }
                true
            });
        }
        SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(list))) => {
            for (peer, address) in list {
                let new =
                    watches.discovered.send_if_modified(|known| known.entry(peer).or_default().insert(address.clone()));
                if new {
                    emit(NetEvent::Discovered(peer, address));
                }
            }
        }
        SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Expired(list))) => {
            watches.discovered.send_if_modified(|known| {
                let mut changed = false;
                for (peer, address) in list {
                    if let Some(set) = known.get_mut(&peer) {
                        changed |= set.remove(&address);
                        if set.is_empty() {
                            known.remove(&peer);
                        }
                    }
                }
                changed
            });
        }
        SwarmEvent::Behaviour(BehaviourEvent::Autonat(autonat::Event::StatusChanged { new, .. })) => {
            let reach = match new {
                autonat::NatStatus::Public(_) => Reach::Public,
                autonat::NatStatus::Private => Reach::Private,
                autonat::NatStatus::Unknown => Reach::Unknown,
            };
            emit(NetEvent::Reach(reach));
        }
        SwarmEvent::Behaviour(BehaviourEvent::RelayClient(event)) => match event {
            relay::client::Event::ReservationReqAccepted { relay_peer_id, renewal: false, .. } => {
                emit(NetEvent::Reservation(relay_peer_id, Ok(())));
            }
            other => tracing::debug!("relay client: {other:?}"),
        },
        SwarmEvent::ListenerError { listener_id, error } => {
            if let Some(reply) = state.asked.remove(&listener_id) {
                let _ = reply.send(Err(root_cause(&error)));
            }
            let relay = state.reservations.iter().find(|(_, l)| **l == listener_id).map(|(r, _)| r.clone());
            match relay
                .as_ref()
                .and_then(|r| r.iter().find_map(|p| if let Protocol::P2p(id) = p { Some(id) } else { None }))
            {
                Some(relay) => emit(NetEvent::Reservation(relay, Err(root_cause(&error)))),
                None => tracing::info!("a listener failed: {error}"),
            }
        }
        SwarmEvent::Behaviour(BehaviourEvent::Dcutr(dcutr::Event { remote_peer_id, result })) => {
            let outcome = result.map(|_| ()).map_err(|e| e.to_string());
            watches.punched.send_modify(|known| {
                known.insert(remote_peer_id, outcome.clone());
            });
            emit(NetEvent::HolePunch(remote_peer_id, outcome));
        }
        SwarmEvent::Behaviour(BehaviourEvent::Relay(event)) => {
            let note = match event {
                relay::Event::ReservationReqAccepted { src_peer_id, .. } => Some(RelayNote::Reserved(src_peer_id)),
                relay::Event::ReservationReqDenied { src_peer_id, status } => {
                    Some(RelayNote::ReservationRefused(src_peer_id, format!("{status:?}")))
                }
                relay::Event::CircuitReqAccepted { src_peer_id, dst_peer_id } => {
                    Some(RelayNote::Circuit(src_peer_id, dst_peer_id))
                }
                relay::Event::CircuitReqDenied { src_peer_id, dst_peer_id, status } => {
                    Some(RelayNote::CircuitRefused(src_peer_id, dst_peer_id, format!("{status:?}")))
                }
                _ => None,
            };
            if let Some(note) = note {
                emit(NetEvent::Relay(note));
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// Dial errors a person can act on. libp2p's own text nests every layer's
// message and repeats the OS error ("Failed to negotiate transport
// protocol(s): [(…: : Connection refused (os error 111): Connection refused
// (os error 111))]"); ferry says "cannot reach 127.0.0.1:1: connection refused".

/// `host:port` for the usual IP and DNS addresses (with "QUIC" for UDP),
/// else the multiaddr without its peer id.
pub fn short_address(address: &Multiaddr) -> String {
    let mut host = None;
    let mut port = None;
    let mut quic = false;
    for protocol in address.iter() {
        match protocol {
            Protocol::Ip4(ip) => host = Some(ip.to_string()),
            Protocol::Ip6(ip) => host = Some(format!("[{ip}]")),
            Protocol::Dns(name) | Protocol::Dns4(name) | Protocol::Dns6(name) => host = Some(name.to_string()),
            Protocol::Tcp(p) => port = Some(p),
            Protocol::Udp(p) => port = Some(p),
            Protocol::QuicV1 => quic = true,
            _ => {}
        }
    }
    match (host, port) {
        (Some(host), Some(port)) if quic => format!("{host}:{port} (QUIC)"),
        (Some(host), Some(port)) => format!("{host}:{port}"),
        _ => {
            let mut bare = address.clone();
            if matches!(bare.iter().last(), Some(Protocol::P2p(_))) {
                bare.pop();
            }
            bare.to_string()
        }
    }
}

/// One short reason for a failed dial (each distinct cause once).
pub fn describe_dial_error(error: &libp2p::swarm::DialError) -> String {
    use libp2p::TransportError;
    use libp2p::swarm::DialError;
    match error {
        DialError::Transport(attempts) => {
            let mut reasons: Vec<String> = Vec::new();
            for (_, attempt) in attempts {
                let reason = match attempt {
                    TransportError::MultiaddrNotSupported(a) => format!("ferry cannot dial an address like {a}"),
                    TransportError::Other(e) => root_cause(e),
                };
                if !reasons.contains(&reason) {
                    reasons.push(reason);
                }
            }
            if reasons.is_empty() { "no address to dial".to_owned() } else { reasons.join("; ") }
        }
        DialError::WrongPeerId { obtained, .. } => format!("it answered as {obtained}"),
        DialError::LocalPeerId { .. } => "that address is this node itself".to_owned(),
        DialError::NoAddresses => "no address to dial".to_owned(),
        DialError::Denied { cause } => format!("refused here: {cause}"),
        other => other.to_string(),
    }
}

/// The innermost cause of an IO error, in words for the common kinds.
fn root_cause(error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let mut current: &(dyn std::error::Error + 'static) = error;
    // io::Error::source skips the error it wraps: descend with get_ref.
    for _ in 0..16 {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            let words = match io.kind() {
                ErrorKind::ConnectionRefused => Some("connection refused"),
                ErrorKind::ConnectionReset => Some("connection reset"),
                ErrorKind::TimedOut => Some("timed out"),
                ErrorKind::HostUnreachable => Some("host unreachable"),
                ErrorKind::NetworkUnreachable => Some("network unreachable"),
                ErrorKind::AddrNotAvailable => Some("address not available"),
                _ => None,
            };
            if let Some(words) = words {
                return words.to_owned();
            }
            if let Some(inner) = io.get_ref() {
                current = inner;
                continue;
            }
        }
        match current.source() {
            Some(next) => current = next,
            None => break,
        }
    }
    let text = current.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).trim().trim_end_matches('.');
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| first.to_lowercase().chain(chars).collect())
}

// ---------------------------------------------------------------------------
// Frames on a stream (`frame.rs`), with the errors a peer's stream reports.

/// Bytes of the length prefix before every frame on a stream.
pub const FRAME_PREFIX_BYTES: u64 = crate::frame::PREFIX_BYTES;

pub async fn write_frame<W: futures::AsyncWrite + Unpin>(stream: &mut W, frame: &[u8]) -> std::io::Result<()> {
    crate::frame::write(stream, frame).await
}

/// Reads one frame of at most `max` bytes; `None` at a clean end of stream.
pub async fn read_frame<R: futures::AsyncRead + Unpin>(stream: &mut R, max: usize) -> std::io::Result<Option<Vec<u8>>> {
    crate::frame::read(stream, max).await.map_err(|e| match e {
        crate::frame::ReadError::TooLong { len, max } => std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the peer sent a frame of {len} bytes, more than the {max} allowed"),
        ),
        crate::frame::ReadError::Truncated(e) | crate::frame::ReadError::Io(e) => e,
    })
}
