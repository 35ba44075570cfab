//! The local control endpoint: a Unix socket in the home directory
//! (`control.sock`) while `ferry serve` runs. Every other `ferry` command on
//! that home, and any application, talks to the running node through it
//! (docs/api.md). One request a connection: the client writes one JSON line
//! (an `Op`), the server answers with zero or more `{"line": …}` lines
//! (progress, exported records, watched events) and one final
//! `{"ok": result}` or `{"error": "reason"}`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, broadcast};

use crate::net::Net;
use crate::node::Node;
use crate::ops::{self, Ctx, Line, Op};

/// Control connections served at once.
const CLIENTS_MAX: usize = 32;
/// Bytes of one request line (a certificate chain in PEM fits easily).
pub const REQUEST_BYTES_MAX: usize = 4 * 1024 * 1024;

/// What a serving node shares with its control clients.
pub struct Shared {
    pub node: Arc<Node>,
    pub net: Arc<Net>,
    pub enrol_lock: std::sync::Mutex<()>,
    /// Events for `watch` clients.
    pub events: broadcast::Sender<serde_json::Value>,
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
    let limit = Arc::new(Semaphore::new(CLIENTS_MAX));
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let Ok(permit) = limit.clone().acquire_owned().await else { return };
            let shared = shared.clone();
            tokio::spawn(async move {
                if let Err(e) = handle(stream, &shared).await {
                    tracing::debug!("control client: {e}");
                }
                drop(permit);
            });
        }
    }))
}

async fn handle(stream: UnixStream, shared: &Shared) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(REQUEST_BYTES_MAX as u64));
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    if line.len() >= REQUEST_BYTES_MAX && !line.ends_with('\n') {
        let error = format!("the request is more than the local API's limit of {REQUEST_BYTES_MAX} bytes");
        write.write_all(format!("{}\n", json!({ "error": error })).as_bytes()).await?;
        return Ok(());
    }
    let op: Op = match serde_json::from_str(&line) {
        Ok(op) => op,
        Err(e) => {
            let answer = json!({ "error": format!("not a valid request: {e}") });
            write.write_all(format!("{answer}\n").as_bytes()).await?;
            return Ok(());
        }
    };
    if let Op::Watch = op {
        let mut events = shared.events.subscribe();
        loop {
            match events.recv().await {
                Ok(event) => write.write_all(format!("{}\n", json!({ "line": event })).as_bytes()).await?,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    write
                        .write_all(format!("{}\n", json!({ "line": { "event": "lagged", "missed": n } })).as_bytes())
                        .await?
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            }
        }
    }
    let announce = matches!(
        op,
        Op::Put { .. } | Op::Delete { .. } | Op::Import { .. } | Op::Resolve { .. } | Op::BundleImport { .. }
    );
    let description = serde_json::to_value(&op).unwrap_or_default();
    let ctx = Ctx { node: &shared.node, net: Some(&shared.net), enrol_lock: &shared.enrol_lock };
    // Progress goes out while the operation runs (best effort: a slow
    // client misses some); records are kept and all written after.
    let (progress_tx, mut progress_rx) = tokio::sync::mpsc::channel::<serde_json::Value>(64);
    let mut records: Vec<serde_json::Value> = Vec::new();
    let run = async {
        let mut sink = |line: Line| match line {
            Line::Progress { .. } => {
                let _ = progress_tx.try_send(serde_json::to_value(line).unwrap_or_default());
            }
            Line::Record(_) => records.push(serde_json::to_value(line).unwrap_or_default()),
        };
        let result = ops::execute(&ctx, op, &mut sink).await;
        drop(progress_tx);
        result
    };
    let forward = async {
        while let Some(line) = progress_rx.recv().await {
            if write.write_all(format!("{}\n", json!({ "line": line })).as_bytes()).await.is_err() {
                break;
            }
        }
    };
    let (result, ()) = tokio::join!(run, forward);
    for l in records {
        write.write_all(format!("{}\n", json!({ "line": l })).as_bytes()).await?;
    }
    let answer = match result {
        Ok(value) => {
            if announce {
                let _ = shared.events.send(json!({ "event": "written", "request": description, "result": value }));
            }
            json!({ "ok": value })
        }
        Err(e) => json!({ "error": format!("{e:#}") }),
    };
    write.write_all(format!("{answer}\n").as_bytes()).await?;
    Ok(())
}

/// Sends `op` to the node serving `home`, if one is. `Ok(None)`: nobody
/// serves it (run the operation directly).
pub async fn request(
    socket: &Path,
    op: &Op,
    on_line: &mut dyn FnMut(serde_json::Value),
) -> anyhow::Result<Option<serde_json::Value>> {
    let Ok(stream) = UnixStream::connect(socket).await else { return Ok(None) };
    let request = serde_json::to_string(op)?;
    if request.len() >= REQUEST_BYTES_MAX {
        bail!(
            "the request is {} bytes, more than the local API's limit of {REQUEST_BYTES_MAX} bytes (the serving node takes it through its socket)",
            request.len()
        );
    }
    let (read, mut write) = stream.into_split();
    write.write_all(format!("{request}\n").as_bytes()).await?;
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
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
