//! The local control endpoint: a Unix socket in the home directory
//! (`control.sock`) while `ferry serve` runs. Every other `ferry` command on
//! that home, and any application, talks to the running node through it
//! (docs/api.md). One request a connection: the client writes one JSON line
//! (an `Op`), the server answers with zero or more `{"line": …}` lines
//! (progress, exported records, watched events) and one final
//! `{"ok": result}` or `{"error": "reason"}`.
//!
//! No client can starve another: the accept loop never waits, a client that
//! sends no request soon is dropped, watchers have their own limit and lose
//! their slot the moment they hang up, and a request waiting for its turn or
//! running long hears `{"alive":true}` every second, so a client can time
//! out on silence (a stopped or stuck node) and never on a long operation.

use crate::event::NodeEvent;
use crate::status::StatusBoard;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, broadcast};

use crate::net::Net;
use crate::node::Node;
use crate::ops::{self, Ctx, Line, Op};

/// Connections held at once (waiting, running or watching); more are told
/// so and closed at once. Bounds the node's file descriptors.
const CONNECTIONS_MAX: usize = 128;
/// Requests running at once; more wait their turn (hearing heartbeats).
const REQUESTS_MAX: usize = 32;
/// `watch` streams at once; more are refused. Watchers never hold a
/// request's place.
const WATCHERS_MAX: usize = 32;
/// How long a client may take to send its request line.
const REQUEST_WAIT: Duration = Duration::from_secs(5);
/// A client that takes nothing for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Silence after which a waiting or running request hears a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(1);
const HEARTBEAT_LINE: &str = "{\"alive\":true}\n";
/// How long the command line waits for any line from the serving node:
/// ten heartbeats missed means the node is stopped or stuck.
pub const ANSWER_SILENCE_MAX: Duration = Duration::from_secs(10);
/// Bytes of one request line (a certificate chain in PEM fits easily).
pub const REQUEST_BYTES_MAX: usize = 4 * 1024 * 1024;

/// What a serving node shares with its control clients.
pub struct Shared {
    pub node: Arc<Node>,
    pub net: Arc<Net>,
    pub enrol_lock: std::sync::Arc<std::sync::Mutex<()>>,
    /// Events for `watch` clients.
    pub events: broadcast::Sender<NodeEvent>,
    /// What `status` answers.
    pub status: Arc<StatusBoard>,
    /// The HTTP API's base URL, once it answers (`http::start`).
    pub http_url: std::sync::OnceLock<String>,
    /// The web console's login codes and sessions.
    pub logins: crate::logins::Logins,
}

impl Shared {
    pub fn new(node: Arc<Node>, net: Arc<Net>, events: broadcast::Sender<NodeEvent>) -> Arc<Shared> {
        let status = StatusBoard::new(node.identity.peer_id().to_string(), node.store.instance().to_string());
        Arc::new(Shared {
            node,
            net,
            enrol_lock: Arc::new(std::sync::Mutex::new(())),
            events,
            status,
            http_url: std::sync::OnceLock::new(),
            logins: crate::logins::Logins::default(),
        })
    }
}

/// The places requests and watchers take.
#[derive(Clone)]
struct Limits {
    requests: Arc<Semaphore>,
    watchers: Arc<Semaphore>,
}

/// Serves the control socket until the listener task is aborted.
pub async fn serve(path: &Path, shared: Arc<Shared>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    if path.exists() {
        // A socket nobody answers is a leftover of a node that died.
        if UnixStream::connect(path).await.is_ok() {
            bail!("another ferry node is serving this home ({})", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("cannot remove the stale {}", path.display()))?;
    }
    let listener = UnixListener::bind(path).with_context(|| format!("cannot create {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    let connections = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let limits =
        Limits { requests: Arc::new(Semaphore::new(REQUESTS_MAX)), watchers: Arc::new(Semaphore::new(WATCHERS_MAX)) };
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let Ok(connection) = connections.clone().try_acquire_owned() else {
                // Never wait here: that would make every later client wait.
                let answer = json!({
                    "error": format!("the node has {CONNECTIONS_MAX} local API clients already; try again when some finish")
                });
                let _ = stream.try_write(format!("{answer}\n").as_bytes());
                continue;
            };
            let (shared, limits) = (shared.clone(), limits.clone());
            tokio::spawn(async move {
                if let Err(e) = handle(stream, &shared, &limits).await {
                    tracing::debug!("control client: {e}");
                }
                drop(connection);
            });
        }
    }))
}

/// Writes one line to a client that may have stopped reading.
async fn send(write: &mut OwnedWriteHalf, line: &str) -> anyhow::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(line.as_bytes())).await {
        Ok(result) => Ok(result?),
        Err(_) => bail!("the client took nothing for {} s", WRITE_TIMEOUT.as_secs()),
    }
}

async fn handle(stream: UnixStream, shared: &Shared, limits: &Limits) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(REQUEST_BYTES_MAX as u64));
    let mut line = String::new();
    let refuse = |reason: String| format!("{}\n", json!({ "error": reason }));
    match tokio::time::timeout(REQUEST_WAIT, reader.read_line(&mut line)).await {
        Ok(read) => read?,
        Err(_) => {
            let reason = format!("no request within {} s: send one JSON line", REQUEST_WAIT.as_secs());
            return send(&mut write, &refuse(reason)).await;
        }
    };
    if line.len() >= REQUEST_BYTES_MAX && !line.ends_with('\n') {
        let reason = format!("the request is more than the local API's limit of {REQUEST_BYTES_MAX} bytes");
        return send(&mut write, &refuse(reason)).await;
    }
    // An integer beyond 64 bits is refused, never read as a float.
    let parsed = crate::json::check_integers(&line)
        .map_err(|e| anyhow::anyhow!(e))
        .and_then(|()| Ok(serde_json::from_str(&line)?));
    let op: Op = match parsed {
        Ok(op) => op,
        Err(e) => return send(&mut write, &refuse(format!("not a valid request: {e}"))).await,
    };
    if let Op::Watch = op {
        let Ok(_watching) = limits.watchers.clone().try_acquire_owned() else {
            let reason = format!("{WATCHERS_MAX} clients are watching already; close one first");
            return send(&mut write, &refuse(reason)).await;
        };
        return watch(reader, write, shared).await;
    }
    if let Op::Console = op {
        let answer = match console_url(shared) {
            Ok(url) => json!({ "ok": { "url": url, "valid_s": crate::logins::CODE_TTL.as_secs() } }),
            Err(e) => json!({ "error": format!("{e:#}") }),
        };
        return send(&mut write, &format!("{answer}\n")).await;
    }
    // Lines go out through their own task, so heartbeats flow while the
    // operation runs (it blocks its thread on the store).
    let (lines, queue) = tokio::sync::mpsc::channel::<String>(64);
    let writer = tokio::spawn(write_lines(write, queue));
    let _running = tokio::select! {
        permit = limits.requests.clone().acquire_owned() => permit?,
        // The client hung up while waiting: nothing to do.
        () = lines.closed() => return Ok(()),
    };
    // Progress goes out while the operation runs (best effort: a slow
    // client misses some); records are kept and all written after.
    let mut records: Vec<String> = Vec::new();
    let mut sink = |line: Line| {
        let text = format!("{}\n", json!({ "line": line }));
        match line {
            Line::Progress { .. } => {
                let _ = lines.try_send(text);
            }
            Line::Record(_) => records.push(text),
        }
    };
    let result = run(shared, op, &mut sink).await;
    for record in records {
        if lines.send(record).await.is_err() {
            break;
        }
    }
    let answer = match result {
        Ok(value) => json!({ "ok": value }),
        Err(e) => json!({ "error": format!("{e:#}") }),
    };
    let _ = lines.send(format!("{answer}\n")).await;
    drop(lines);
    let _ = writer.await;
    Ok(())
}

/// `ferry console`: the console's URL with a fresh one-time login code.
fn console_url(shared: &Shared) -> anyhow::Result<String> {
    let base = shared.http_url.get().context(
        "this node serves no HTTP: restart it with `ferry serve --http 127.0.0.1:8080` (or set http in ferry.toml), then run `ferry console` again",
    )?;
    Ok(format!("{base}/console/login?code={}", shared.logins.code()))
}

/// Runs `op` for a local client, through the socket or HTTP: the operation
/// (`ops::execute`), then what it announces to watchers, so a write or a
/// sync an app asks for is heard as one the node started.
pub async fn run(shared: &Shared, op: Op, sink: &mut (dyn FnMut(Line) + Send)) -> anyhow::Result<serde_json::Value> {
    let announce = matches!(
        op,
        Op::Put { .. } | Op::Delete { .. } | Op::Import { .. } | Op::Resolve { .. } | Op::BundleImport { .. }
    );
    let description = if announce { serde_json::to_value(&op).unwrap_or_default() } else { serde_json::Value::Null };
    let syncs = if let Op::Sync(ops::Sync { peer, .. }) = &op { Some(peer.clone()) } else { None };
    let ctx = Ctx {
        node: &shared.node,
        net: Some(&shared.net),
        enrol_lock: &shared.enrol_lock,
        status: Some(&shared.status),
    };
    let result = ops::execute(&ctx, op, sink).await;
    if let Some(peer) = syncs {
        let result = result.as_ref().map(Clone::clone).map_err(|e| format!("{e:#}"));
        let _ = shared.events.send(NodeEvent::ApiSync { peer, result });
    }
    if announce && let Ok(value) = &result {
        let _ = shared.events.send(NodeEvent::Written { request: description, result: value.clone() });
    }
    result
}

/// Writes queued lines, and a heartbeat after each second of silence, until
/// the queue closes or the client stops taking them.
async fn write_lines(mut write: OwnedWriteHalf, mut queue: tokio::sync::mpsc::Receiver<String>) {
    loop {
        let line = match tokio::time::timeout(HEARTBEAT, queue.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(_) => HEARTBEAT_LINE.to_owned(),
        };
        if send(&mut write, &line).await.is_err() {
            return;
        }
    }
    let _ = write.shutdown().await;
}

/// Streams events until the client hangs up, which is noticed at once (its
/// end of the socket reads as closed), not at the next event.
async fn watch(
    mut reader: BufReader<tokio::io::Take<OwnedReadHalf>>,
    mut write: OwnedWriteHalf,
    shared: &Shared,
) -> anyhow::Result<()> {
    let mut events = shared.events.subscribe();
    send(&mut write, &format!("{}\n", json!({ "line": { "event": "watching" } }))).await?;
    let mut ignored = [0u8; 512];
    loop {
        let line = tokio::select! {
            read = reader.read(&mut ignored) => match read {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => continue,
            },
            event = events.recv() => match event {
                Ok(event) => json!({ "line": event.to_json() }),
                Err(broadcast::error::RecvError::Lagged(n)) => json!({ "line": { "event": "lagged", "missed": n } }),
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
        };
        send(&mut write, &format!("{line}\n")).await?;
    }
}

/// Sends `op` to the node serving `home`, if one is. `Ok(None)`: nobody
/// serves it (run the operation directly). Fails when the node says
/// nothing, not even a heartbeat, for `ANSWER_SILENCE_MAX`.
pub async fn request(
    socket: &Path,
    op: &Op,
    on_line: &mut dyn FnMut(serde_json::Value),
) -> anyhow::Result<Option<serde_json::Value>> {
    let Ok(stream) = UnixStream::connect(socket).await else { return Ok(None) };
    let silent = || {
        anyhow!(
            "the node serving this home ({}) said nothing for {} s: is `ferry serve` stopped or stuck? try again, or restart it",
            socket.parent().unwrap_or(socket).display(),
            ANSWER_SILENCE_MAX.as_secs()
        )
    };
    let request = serde_json::to_string(op)?;
    if request.len() >= REQUEST_BYTES_MAX {
        bail!(
            "the request is {} bytes, more than the local API's limit of {REQUEST_BYTES_MAX} bytes (the serving node takes it through its socket)",
            request.len()
        );
    }
    let (read, mut write) = stream.into_split();
    let request = format!("{request}\n");
    tokio::time::timeout(ANSWER_SILENCE_MAX, write.write_all(request.as_bytes())).await.map_err(|_| silent())??;
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = tokio::time::timeout(ANSWER_SILENCE_MAX, lines.next_line()).await.map_err(|_| silent())?? {
        let value: serde_json::Value =
            serde_json::from_str(&line).context("the serving node sent a malformed answer")?;
        if let Some(l) = value.get("line") {
            on_line(l.clone());
        } else if let Some(ok) = value.get("ok") {
            return Ok(Some(ok.clone()));
        } else if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
            bail!("{error}");
        }
    }
    bail!("the serving node closed the connection without answering")
}
