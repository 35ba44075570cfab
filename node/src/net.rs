//! The libp2p side: a swarm with TCP + Noise + Yamux and QUIC, identify,
//! ping, mDNS (optional) and connection limits, driven by its own task;
//! framed streams; and the sync and enrolment protocols on them.
//!
//! Everything that waits on a peer has a timeout; every channel is bounded;
//! a peer's bad message ends that peer's stream and nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, connection_limits, identify, mdns, noise, ping, tcp, yamux};
use tokio::sync::{mpsc, oneshot, watch};

use crate::identity::Identity;

/// A libp2p stream (for callers that do not depend on libp2p themselves).
pub type Stream = libp2p::Stream;

pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/ferry/sync/1");
pub const ENROL_PROTOCOL: StreamProtocol = StreamProtocol::new("/ferry/enrol/1");
pub const BLOB_PROTOCOL: StreamProtocol = StreamProtocol::new("/ferry/blob/1");

/// Connections in total, and per peer (two: both sides may dial at once).
const CONNECTIONS_MAX: u32 = 512;
const CONNECTIONS_PER_PEER_MAX: u32 = 2;
const PENDING_INCOMING_MAX: u32 = 64;
/// Commands queued to the swarm task.
const COMMANDS_MAX: usize = 64;
/// How long a dial and a stream opening may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Connections without streams close after this.
const IDLE_CONNECTION: Duration = Duration::from_secs(60);

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    stream: libp2p_stream::Behaviour,
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
}

enum Command {
    /// Dial; answer with the peer's id once connected.
    Dial(Multiaddr, Option<PeerId>, oneshot::Sender<Result<PeerId, String>>),
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
    task: tokio::task::JoinHandle<()>,
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
        let keypair = identity.keypair();
        let peer_id = keypair.public().to_peer_id();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)?
            .with_quic()
            .with_behaviour(|key| -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
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
                    stream: libp2p_stream::Behaviour::new(),
                })
            })?
            .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION))
            .build();
        for address in listen {
            swarm.listen_on(address.clone()).with_context(|| format!("cannot listen on {address}"))?;
        }
        let control = swarm.behaviour().stream.new_control();
        let (listening_tx, listening) = watch::channel(Vec::new());
        let (discovered_tx, discovered) = watch::channel(Discovered::new());
        let (commands, command_rx) = mpsc::channel(COMMANDS_MAX);
        let task = tokio::spawn(drive(swarm, command_rx, events, listening_tx, discovered_tx));
        let net = Net { peer_id, control, commands, listening, discovered, task };
        // Wait until every listener has an address (or a short while): woken
        // by each new address. A task that stopped ends the wait too.
        let mut addresses = net.listening.clone();
        let _ = tokio::time::timeout(LISTEN_WAIT, addresses.wait_for(|a| a.len() >= listen.len())).await;
        Ok(net)
    }

    pub fn addresses(&self) -> Vec<Multiaddr> {
        self.listening.borrow().clone()
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
    /// peer), or to a peer id found by mDNS. Returns the peer's id.
    pub async fn connect(&self, target: &str) -> anyhow::Result<PeerId> {
        let (address, expected) = match target.parse::<Multiaddr>() {
            Ok(address) => {
                let expected = address.iter().find_map(|p| if let Protocol::P2p(id) = p { Some(id) } else { None });
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
                let found = self.discovered.borrow().get(&peer).and_then(|s| s.iter().next().cloned());
                found
                    .with_context(|| format!("peer {peer} was not found on the LAN (mDNS): give its address instead"))?
            }
        };
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Dial(address.clone(), expected, reply))
            .await
            .map_err(|_| anyhow!("the network task stopped"))?;
        let peer = tokio::time::timeout(CONNECT_TIMEOUT, answer)
            .await
            .map_err(|_| anyhow!("no answer from {} within {} s", short_address(&address), CONNECT_TIMEOUT.as_secs()))?
            .map_err(|_| anyhow!("the network task stopped"))?
            .map_err(|e| anyhow!("cannot reach {}: {e}", short_address(&address)))?;
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

async fn drive(
    mut swarm: libp2p::Swarm<Behaviour>,
    mut commands: mpsc::Receiver<Command>,
    events: Option<mpsc::Sender<NetEvent>>,
    listening: watch::Sender<Vec<Multiaddr>>,
    discovered: watch::Sender<Discovered>,
) {
    let mut dials: BTreeMap<libp2p::swarm::ConnectionId, oneshot::Sender<Result<PeerId, String>>> = BTreeMap::new();
    let emit = |event: NetEvent| {
        if let Some(events) = &events {
            let _ = events.try_send(event);
        }
    };
    loop {
        tokio::select! {
            command = commands.recv() => {
                let Some(Command::Dial(address, peer, reply)) = command else { return };
                // One connection is enough: streams multiplex over it.
                if let Some(peer) = peer
                    && swarm.is_connected(&peer)
                {
                    let _ = reply.send(Ok(peer));
                    continue;
                }
                let opts = match peer {
                    Some(peer) => {
                        let mut bare = address.clone();
                        if matches!(bare.iter().last(), Some(Protocol::P2p(_))) {
                            bare.pop();
                        }
                        DialOpts::peer_id(peer).addresses(vec![bare]).condition(libp2p::swarm::dial_opts::PeerCondition::Always).build()
                    }
                    None => DialOpts::unknown_peer_id().address(address).build(),
                };
                let id = opts.connection_id();
                match swarm.dial(opts) {
                    Ok(()) => { dials.insert(id, reply); }
                    Err(e) => { let _ = reply.send(Err(describe_dial_error(&e))); }
                }
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => {
                    listening.send_modify(|known| known.push(address.clone()));
                    emit(NetEvent::Listening(address));
                }
                SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                    if let Some(reply) = dials.remove(&connection_id) {
                        let _ = reply.send(Ok(peer_id));
                    }
                    emit(NetEvent::Connected(peer_id, endpoint.get_remote_address().clone(), endpoint.is_dialer()));
                }
                SwarmEvent::OutgoingConnectionError { connection_id, error, .. } => {
                    if let Some(reply) = dials.remove(&connection_id) {
                        let _ = reply.send(Err(describe_dial_error(&error)));
                    }
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => emit(NetEvent::Disconnected(peer_id)),
                SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(list))) => {
                    for (peer, address) in list {
                        let new = discovered.send_if_modified(|known| known.entry(peer).or_default().insert(address.clone()));
                        if new {
                            emit(NetEvent::Discovered(peer, address));
                        }
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Expired(list))) => {
                    discovered.send_if_modified(|known| {
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
                _ => {}
            },
        }
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
