//! `ferry serve`: the node as a daemon. It listens for syncs and
//! enrolments, serves the local API, syncs configured peers on their
//! intervals, and stops cleanly on SIGINT or SIGTERM: it stops accepting,
//! lets sessions in flight finish (or abandons them after a grace period, at
//! which point nothing half-applied remains: batches are atomic), and closes
//! the store durably.
//!
//! With `--json` it prints one JSON line per event, first
//! `{"event":"listening","address":…}` for each address.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::parse_duration;
use crate::control::{self, Shared};
use crate::event::NodeEvent;
use crate::home::Home;
use crate::net::{ENROL_PROTOCOL, Net, NetEvent, SYNC_PROTOCOL};
use crate::node::Node;

/// Sessions a node answers at once, and per peer.
const SESSIONS_MAX: usize = 64;
const SESSIONS_PER_PEER_MAX: usize = 4;
/// Blob streams a node answers at once: each holds a block or two in
/// memory (`engine::limits::BLOB_BLOCK_BYTES`), so this bounds what blobs
/// cost a central with many devices. A stream beyond it is dropped; the
/// device's next sync resumes after its last verified block.
const BLOB_STREAMS_MAX: usize = 16;
/// Rendezvous requests answered at once (each is one short exchange).
const MEET_STREAMS_MAX: usize = 32;
/// Refused streams told why at once, and how long telling one may take.
const REFUSALS_MAX: usize = 8;
const REFUSAL_WRITE: Duration = Duration::from_secs(1);
/// How long shutdown waits for sessions in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Where serve prints events.
#[derive(Clone)]
pub struct Printer {
    json: bool,
}

impl Printer {
    pub fn new(json: bool) -> Printer {
        Printer { json }
    }

    pub fn event(&self, event: &NodeEvent) {
        use std::io::Write;
        let value = event.to_json();
        let mut out = std::io::stdout().lock();
        if self.json {
            let _ = writeln!(out, "{value}");
        } else {
            let kind = value.get("event").and_then(|e| e.as_str()).unwrap_or("event");
            let rest: Vec<String> = value
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter(|(k, _)| *k != "event")
                        .map(|(k, v)| format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_owned)))
                        .collect()
                })
                .unwrap_or_default();
            let _ = writeln!(out, "{kind}: {}", rest.join(" "));
        }
        let _ = out.flush();
    }
}

pub async fn serve(
    home: Home,
    listen: Vec<String>,
    no_mdns: bool,
    http: Option<String>,
    printer: Printer,
) -> anyhow::Result<()> {
    // Before anything is announced: a SIGTERM that follows the `listening`
    // line at once must find the handler in place, or it kills the process
    // before the store is closed.
    let stop = StopSignals::new();
    let node = Node::open_shared(home.clone()).await?;
    // A start that fails (a mistyped or taken address) closes the store
    // cleanly, so the next command continues the same instance.
    let Started { net, mut net_rx, events, shared, control_task, responders, every } =
        match start(&home, &node, listen, no_mdns, &printer).await {
            Ok(started) => started,
            Err(e) => {
                match Arc::try_unwrap(node) {
                    Ok(node) => {
                        if let Err(close) = crate::pool::blocking(move || node.close()).await {
                            tracing::warn!("cannot close the store: {close:#}");
                        }
                    }
                    Err(_) => tracing::warn!("the store is still in use; the next start continues a fresh instance"),
                }
                return Err(e);
            }
        };
    // Announced once the local API answers, so whoever waits for this line
    // can use both.
    for address in net.dialable() {
        printer.event(&NodeEvent::Listening { address });
    }
    // The HTTP API, when asked for. A taken address stops the node as a
    // signal would, so the store closes cleanly, and the start fails.
    let mut failed = None;
    let http_task = match http.or_else(|| node.config.http.clone()) {
        Some(address) => {
            let started = match home.api_token() {
                Ok(token) => crate::http::start(shared.clone(), &address, token).await,
                Err(e) => Err(e),
            };
            match started {
                Ok((url, task)) => {
                    printer.event(&NodeEvent::Http { url });
                    Some(task)
                }
                Err(e) => {
                    failed = Some(e);
                    None
                }
            }
        }
        None => None,
    };

    // Network events: print them, and keep the status current.
    let p = printer.clone();
    let events_for_net = events.clone();
    let board = shared.status.clone();
    board.listening(net.dialable());
    let net_events = tokio::spawn(async move {
        while let Some(event) = net_rx.recv().await {
            let event = match event {
                NetEvent::Listening(_) => continue,
                NetEvent::Discovered(peer, address) => {
                    board.discovered(&peer, &address);
                    NodeEvent::Discovered { peer, address }
                }
                NetEvent::Connected(peer, address, dialed) => {
                    board.connected(&peer, dialed.then_some(&address));
                    NodeEvent::Connected { peer, address }
                }
                NetEvent::Disconnected(peer) => {
                    board.disconnected(&peer);
                    NodeEvent::Disconnected { peer }
                }
                NetEvent::Reservation(relay, Ok(())) => NodeEvent::Reserved { relay },
                NetEvent::Reservation(relay, Err(reason)) => NodeEvent::ReservationFailed { relay, reason },
                NetEvent::Reach(reach) => NodeEvent::Reachability { reach: reach.as_str() },
                NetEvent::HolePunch(peer, result) => NodeEvent::HolePunch { peer, result },
                NetEvent::Relay(note) => {
                    use crate::net::RelayNote;
                    let (what, peer, to, refused) = match note {
                        RelayNote::Reserved(peer) => ("reservation", peer, None, None),
                        RelayNote::ReservationRefused(peer, why) => ("reservation", peer, None, Some(why)),
                        RelayNote::Circuit(from, to) => ("circuit", from, Some(to), None),
                        RelayNote::CircuitRefused(from, to, why) => ("circuit", from, Some(to), Some(why)),
                    };
                    NodeEvent::Relayed { what, peer, to, refused }
                }
            };
            p.event(&event);
            let _ = events_for_net.send(event);
        }
    });

    // Every record a commit changes, as a `changed` event for watchers.
    let feed_events = tokio::spawn(changed_events(node.clone(), events.clone()));

    let mut tasks = tokio::task::JoinSet::new();

    // Registered with the relays this node knows, holding a slot on each
    // while it is not reachable from outside.
    {
        let (node, net, printer, events) = (node.clone(), net.clone(), printer.clone(), events.clone());
        tasks.spawn(crate::meet::keep_registered(node, net, move |relay, result| {
            let event = NodeEvent::Registered { relay: relay.clone(), result };
            printer.event(&event);
            let _ = events.send(event);
        }));
    }

    // Automatic syncs (SENAITE's auto-sync, TAO's cron).
    for (peer, every) in every {
        let (node, net, printer, events) = (node.clone(), net.clone(), printer.clone(), events.clone());
        let board = shared.status.clone();
        tasks.spawn(async move {
            let mut timer = tokio::time::interval(every.max(Duration::from_secs(1)));
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            timer.tick().await;
            loop {
                timer.tick().await;
                let org = match node.org(peer.org.as_deref()) {
                    Ok(org) => org,
                    Err(e) => {
                        printer.event(&NodeEvent::AutoSyncFailed { name: peer.name.clone(), reason: e.to_string() });
                        continue;
                    }
                };
                let filter = match peer
                    .filters
                    .iter()
                    .map(|f| partitions::Partition::resolve(org, f))
                    .collect::<Result<Vec<_>, _>>()
                {
                    Ok(list) if !list.is_empty() => Some(partitions::Filter::new(list)),
                    Ok(_) => None,
                    Err(e) => {
                        printer.event(&NodeEvent::AutoSyncFailed { name: peer.name.clone(), reason: e.to_string() });
                        continue;
                    }
                };
                let types = match peer.type_rules() {
                    Ok(rules) => rules,
                    Err(e) => {
                        printer.event(&NodeEvent::AutoSyncFailed { name: peer.name.clone(), reason: e.to_string() });
                        continue;
                    }
                };
                let ask = crate::protocols::SyncAsk { filter, pull: peer.pull, push: peer.push, types };
                let event = match crate::protocols::sync(
                    &node,
                    &net,
                    &peer.address,
                    org,
                    ask,
                    Some(&board),
                    &mut |_| {},
                    &mut |_, _, _| {},
                )
                .await
                {
                    Ok(outcome) => NodeEvent::AutoSynced { name: peer.name.clone(), outcome },
                    Err(e) => NodeEvent::AutoSyncFailed { name: peer.name.clone(), reason: format!("{e:#}") },
                };
                printer.event(&event);
                let _ = events.send(event);
            }
        });
    }

    if failed.is_none() {
        stop.wait().await;
    }
    printer.event(&NodeEvent::Stopping);
    // Stop accepting, and wait until the stopped tasks have let go of the node.
    for task in [control_task, net_events, feed_events].into_iter().chain(http_task) {
        task.abort();
        let _ = task.await;
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let _ = std::fs::remove_file(home.control_socket());
    // Sessions in flight may finish, for a while.
    if !responders.stop(SHUTDOWN_GRACE).await {
        printer.event(&NodeEvent::Abandoned { reason: "a session did not finish in time".into() });
    }
    drop(shared);
    if let Ok(net) = Arc::try_unwrap(net) {
        net.stop();
    }
    match Arc::try_unwrap(node) {
        Ok(node) => {
            crate::pool::blocking(move || node.close()).await?;
            printer.event(&NodeEvent::Stopped { note: None });
        }
        Err(_) => printer.event(&NodeEvent::Stopped {
            note: Some("a session was abandoned; the store will start a fresh instance".into()),
        }),
    }
    failed.map_or(Ok(()), Err)
}

/// Sends a `changed` event for each entry of the change feed, as commits
/// add them; reads nothing while no one watches.
async fn changed_events(node: Arc<Node>, events: broadcast::Sender<NodeEvent>) {
    let mut told = node.feed.subscribe();
    let mut at = *told.borrow_and_update();
    while told.changed().await.is_ok() {
        let last = *told.borrow_and_update();
        while at < last {
            if events.receiver_count() == 0 {
                at = last;
                break;
            }
            let (reader, since) = (node.clone(), at);
            let page = crate::pool::blocking(move || reader.store.feed(since, 1000, &mut |_| true)).await;
            let Ok(page) = page else {
                at = last;
                break;
            };
            for e in page.entries {
                let _ = events.send(NodeEvent::Changed { cursor: e.cursor, key: e.key, origin: e.origin });
            }
            if page.next <= at {
                break;
            }
            at = page.next;
        }
    }
}

/// What a successful start holds: every fallible step is done, and a
/// failed one has let go of the node again.
struct Started {
    net: Arc<Net>,
    net_rx: mpsc::Receiver<NetEvent>,
    events: broadcast::Sender<NodeEvent>,
    shared: Arc<Shared>,
    control_task: tokio::task::JoinHandle<()>,
    responders: Responders,
    /// Configured peers synced on an interval, with the interval.
    every: Vec<(crate::config::PeerConfig, Duration)>,
}

async fn start(
    home: &Home,
    node: &Arc<Node>,
    listen: Vec<String>,
    no_mdns: bool,
    printer: &Printer,
) -> anyhow::Result<Started> {
    let listen = if listen.is_empty() { node.config.listen.clone() } else { listen };
    let addresses = listen
        .iter()
        .map(|a| a.parse::<Multiaddr>().with_context(|| format!("{a:?} is not a multiaddr")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut every = Vec::new();
    for peer in &node.config.peers {
        if let Some(text) = peer.sync_every.as_deref() {
            every.push((peer.clone(), parse_duration(text)?));
        }
    }
    let (net_tx, net_rx) = mpsc::channel(256);
    let options = crate::net::NetOptions {
        listen: addresses,
        mdns: node.config.mdns && !no_mdns,
        relay_server: node.config.relay_server.then(|| node.config.relay_limits.clone()),
    };
    let net = Arc::new(Net::start_with(&node.identity, options, Some(net_tx)).await?);
    let stop_net = |net: Arc<Net>| {
        if let Ok(net) = Arc::try_unwrap(net) {
            net.stop();
        }
    };
    let (events, _) = broadcast::channel(256);
    let shared = Shared::new(node.clone(), net.clone(), events.clone());
    let control_task = match control::serve(&home.control_socket(), shared.clone()).await {
        Ok(task) => task,
        Err(e) => {
            drop(shared);
            stop_net(net);
            return Err(e);
        }
    };
    let report_printer = printer.clone();
    let report_events = events.clone();
    let report: Report = Arc::new(move |event: NodeEvent| {
        report_printer.event(&event);
        let _ = report_events.send(event);
    });
    let responders = match Responders::start(node.clone(), &net, shared.clone(), report) {
        Ok(responders) => responders,
        Err(e) => {
            control_task.abort();
            let _ = control_task.await;
            let _ = std::fs::remove_file(home.control_socket());
            drop(shared);
            stop_net(net);
            return Err(e);
        }
    };
    Ok(Started { net, net_rx, events, shared, control_task, responders, every })
}

/// Where responders report what happened.
pub type Report = Arc<dyn Fn(NodeEvent) + Send + Sync>;

/// The tasks that answer peers: syncs they start and enrolments, with
/// limits on sessions in total and per peer.
pub struct Responders {
    accepting: Vec<tokio::task::JoinHandle<()>>,
    sessions: SessionTasks,
}

impl Responders {
    pub fn start(node: Arc<Node>, net: &Net, shared: Arc<Shared>, report: Report) -> anyhow::Result<Responders> {
        let limit = Arc::new(Semaphore::new(SESSIONS_MAX));
        let refusals = Arc::new(Semaphore::new(REFUSALS_MAX));
        let per_peer = PeerSessions::new(SESSIONS_PER_PEER_MAX);
        let sessions = SessionTasks::default();
        // Both protocols are taken before any task starts, so a failure
        // leaves nothing holding the node.
        let mut incoming = net.accept(SYNC_PROTOCOL)?;
        let mut enrolments = net.accept(ENROL_PROTOCOL)?;
        let mut blob_streams = net.accept(crate::net::BLOB_PROTOCOL)?;
        // A relay server answers the rendezvous protocol; other nodes do
        // not accept it, so an asker hears that they are no relay.
        let meetings = if net.relay_server { Some(net.accept(crate::net::MEET_PROTOCOL)?) } else { None };
        let (m_node, m_net) = (shared.node.clone(), shared.net.clone());
        let b_node = shared.node.clone();
        let (s_report, s_limit, s_sessions) = (report.clone(), limit.clone(), sessions.clone());
        let s_board = shared.status.clone();
        let syncs = tokio::spawn(async move {
            while let Some((peer, stream)) = incoming.next().await {
                let slot = per_peer.admit(peer);
                let permit = slot.as_ref().and_then(|_| s_limit.clone().try_acquire_owned().ok());
                let (slot, permit) = match (slot, permit) {
                    (Some(slot), Some(permit)) => (slot, permit),
                    (slot, _) => {
                        let reason =
                            if slot.is_some() { "too many sessions" } else { "too many sessions from this peer" };
                        drop(slot);
                        s_report(NodeEvent::Refused { peer, reason: reason.into() });
                        // Say why and record it, a few refusals at a time;
                        // beyond that a flood's streams are just dropped.
                        if let Ok(refusing) = refusals.clone().try_acquire_owned() {
                            let node = node.clone();
                            s_sessions.spawn(async move {
                                let _refusing = refusing;
                                let mut stream = stream;
                                let frame = engine::wire::encode_message(&engine::wire::Message::Abort {
                                    reason: reason.to_owned(),
                                });
                                let _ = tokio::time::timeout(REFUSAL_WRITE, async {
                                    let _ = crate::net::write_frame(&mut stream, &frame).await;
                                    let _ = futures::AsyncWriteExt::close(&mut stream).await;
                                })
                                .await;
                                crate::protocols::refuse_in_ledger(&node, peer, None, reason.to_owned()).await;
                            });
                        }
                        continue;
                    }
                };
                let (node, report, board) = (node.clone(), s_report.clone(), s_board.clone());
                s_sessions.spawn(async move {
                    // Given back when the task ends, whichever way it does;
                    // when it ends well, before the event says so, so that
                    // whoever hears of it may start the next session.
                    let held = (slot, permit);
                    let result = crate::protocols::answer_sync(&node, peer, stream, Some(&board), &mut |_| {}).await;
                    drop(held);
                    let event = match result {
                        Ok(outcome) => NodeEvent::Synced(outcome),
                        Err(reason) => NodeEvent::SyncFailed { peer, reason },
                    };
                    report(event);
                });
            }
        });
        let b_report = report.clone();
        let (e_report, e_limit, e_sessions) = (report, limit, sessions.clone());
        let enrols = tokio::spawn(async move {
            while let Some((peer, stream)) = enrolments.next().await {
                let Ok(permit) = e_limit.clone().try_acquire_owned() else {
                    e_report(NodeEvent::Refused { peer, reason: "too many sessions".into() });
                    continue;
                };
                let (shared, report) = (shared.clone(), e_report.clone());
                e_sessions.spawn(async move {
                    let _permit = permit;
                    let event =
                        match crate::protocols::answer_enrol(&shared.node, &shared.enrol_lock, peer, stream).await {
                            Ok(_) => NodeEvent::Enrolled { peer },
                            Err(reason) => NodeEvent::EnrolmentRefused { peer, reason },
                        };
                    report(event);
                });
            }
        });
        let b_sessions = sessions.clone();
        let blob_limit = Arc::new(Semaphore::new(BLOB_STREAMS_MAX));
        let blobs = tokio::spawn(async move {
            while let Some((peer, stream)) = blob_streams.next().await {
                let Ok(permit) = blob_limit.clone().try_acquire_owned() else {
                    tracing::info!(%peer, "too many blob transfers at once: a stream dropped");
                    continue;
                };
                let (node, report) = (b_node.clone(), b_report.clone());
                b_sessions.spawn(async move {
                    let _permit = permit;
                    let (moved, failure) = crate::blob_sync::answer(&node, peer, stream).await;
                    if moved.blobs_received > 0 {
                        crate::blob_sync::gc_after_sync(&node).await;
                    }
                    // A stream that moved nothing and failed at nothing (the
                    // peer asked for blobs this node lacks) is not an event.
                    if moved.moved() || failure.is_some() {
                        report(NodeEvent::Blobs { peer, report: moved, failure });
                    }
                });
            }
        });
        let mut accepting = vec![syncs, enrols, blobs];
        if let Some(mut meetings) = meetings {
            let m_sessions = sessions.clone();
            let meet_limit = Arc::new(Semaphore::new(MEET_STREAMS_MAX));
            accepting.push(tokio::spawn(async move {
                while let Some((peer, stream)) = meetings.next().await {
                    let Ok(permit) = meet_limit.clone().try_acquire_owned() else {
                        tracing::info!(%peer, "too many rendezvous requests at once: a stream dropped");
                        continue;
                    };
                    let (node, net) = (m_node.clone(), m_net.clone());
                    m_sessions.spawn(async move {
                        let _permit = permit;
                        let from = net.links().get(&peer).and_then(|l| l.values().next()).map(|l| l.address.clone());
                        crate::meet::answer(&node, &net, peer, from, stream).await;
                    });
                }
            }));
        }
        Ok(Responders { accepting, sessions })
    }

    /// Stops accepting, lets sessions in flight finish within `grace`, and
    /// abandons the rest. Returns whether all finished.
    pub async fn stop(self, grace: Duration) -> bool {
        for task in self.accepting {
            task.abort();
            let _ = task.await;
        }
        self.sessions.stop(grace).await
    }
}

/// The session tasks of a node. The tracker forgets each task as it ends (a
/// daemon that runs for months keeps nothing of the sessions it answered)
/// and lets shutdown wait for those in flight; the token cancels them all
/// when shutdown stops waiting.
#[derive(Clone, Default)]
struct SessionTasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl SessionTasks {
    fn spawn(&self, session: impl Future<Output = ()> + Send + 'static) {
        self.tracker.spawn(self.cancel.clone().run_until_cancelled_owned(session));
    }

    /// Waits up to `grace` for the sessions, then cancels the rest and waits
    /// until they have let go of what they hold. Returns whether all finished.
    async fn stop(&self, grace: Duration) -> bool {
        self.tracker.close();
        let finished = tokio::time::timeout(grace, self.tracker.wait()).await.is_ok();
        self.cancel.cancel();
        self.tracker.wait().await;
        finished
    }
}

/// Sessions in flight per peer, each counted by the `PeerSlot` its task
/// holds: the count goes down when the slot is dropped, so a session that
/// fails, panics or is cancelled gives its place back like one that
/// completes.
#[derive(Clone)]
struct PeerSessions {
    counts: Arc<std::sync::Mutex<BTreeMap<PeerId, usize>>>,
    max: usize,
}

/// One peer's place among its sessions in flight.
struct PeerSlot {
    sessions: PeerSessions,
    peer: PeerId,
}

impl PeerSessions {
    fn new(max: usize) -> PeerSessions {
        PeerSessions { counts: Arc::default(), max }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, BTreeMap<PeerId, usize>> {
        // Nothing panics while holding the lock; if something did, the
        // counts are still right (each change is one statement).
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A place for one more session of `peer`, unless it has `max` already.
    fn admit(&self, peer: PeerId) -> Option<PeerSlot> {
        let mut counts = self.counts();
        let count = counts.entry(peer).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(PeerSlot { sessions: self.clone(), peer })
    }

    #[cfg(test)]
    fn count(&self, peer: &PeerId) -> usize {
        self.counts().get(peer).copied().unwrap_or(0)
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut counts = self.sessions.counts();
        if let Some(count) = counts.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.peer);
            }
        }
    }
}

/// SIGTERM and SIGINT, caught from the moment this is made.
struct StopSignals {
    #[cfg(unix)]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl StopSignals {
    fn new() -> StopSignals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            // Registering fails only when the runtime has no signal driver;
            // then `wait` falls back to Ctrl-C.
            let signals = signal(SignalKind::terminate()).ok().zip(signal(SignalKind::interrupt()).ok());
            StopSignals { signals }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    async fn wait(self) {
        #[cfg(unix)]
        if let Some((mut term, mut int)) = self.signals {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-peer counts come back however a session's task ends: completed,
    /// failed, panicked or cancelled at shutdown.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_gets_its_session_slots_back_however_the_sessions_end() {
        let peer = PeerId::random();
        let per_peer = PeerSessions::new(4);
        let sessions = SessionTasks::default();
        let slots: Vec<PeerSlot> = (0..4).map(|_| per_peer.admit(peer).expect("below the limit")).collect();
        assert!(per_peer.admit(peer).is_none(), "the fifth is refused");
        assert!(per_peer.admit(PeerId::random()).is_some(), "another peer has its own count");
        type Body = std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
        let bodies: Vec<Body> = vec![
            Box::pin(async { Ok(()) }),
            Box::pin(async { Err("connection lost".to_owned()) }),
            Box::pin(async { panic!("a session that panics (on purpose)") }),
            Box::pin(std::future::pending()),
        ];
        let (started_tx, mut started) = mpsc::channel(4);
        for (body, slot) in bodies.into_iter().zip(slots) {
            let started_tx = started_tx.clone();
            sessions.spawn(async move {
                let _slot = slot;
                started_tx.send(()).await.expect("the test waits");
                let _ = body.await;
            });
        }
        for _ in 0..4 {
            started.recv().await.expect("every session started");
        }
        // Three end on their own; the one that hangs is cancelled.
        assert!(!sessions.stop(Duration::from_millis(200)).await, "one session did not finish");
        assert_eq!(per_peer.count(&peer), 0, "every slot was given back");
        let again: Vec<PeerSlot> = (0..4).map(|_| per_peer.admit(peer).expect("admitted again")).collect();
        assert_eq!(per_peer.count(&peer), 4);
        drop(again);
        assert_eq!(per_peer.count(&peer), 0);
    }
}
