//! Hooks (SPEC §6.3; Kolibri's pre- and post-transfer hooks): the
//! `[[hooks]]` programs of ferry.toml, run with one JSON object on stdin.
//!
//! - `before-sync` runs before a sync this node starts or answers; a
//!   non-zero exit (or a timeout) cancels that sync, and the ledger keeps
//!   the hook's message (the first line it wrote to stderr, else stdout).
//! - `after-sync` runs after each sync with its summary, or its failure.
//! - `after-apply` runs once for each commit of changes from a peer or a
//!   bundle (one batch of a session), with the records it changed. The
//!   feed listener (`Node::open`) notes the feed's cursor range of every
//!   commit, in commit order; after a session or an import the node reads
//!   each range's entries and runs the hooks with those from elsewhere.
//!
//! A hook that runs past its `timeout` is killed. Failures of `after-*`
//! hooks are written to the ledger (`via` `hook`) and never undo data.
//! Rust applications embedding the engine use `engine::ApplyHook`, which
//! runs inside the commit instead.

use std::process::Stdio;
use std::sync::Arc;

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::config::{HookConfig, HookStage};
use crate::node::{Node, now_ms};

/// The first bytes of a hook's output kept as its message.
const MESSAGE_BYTES_MAX: usize = 512;

/// Runs one hook; `Err` says why it failed, in one line.
pub async fn run(hook: &HookConfig, input: &serde_json::Value) -> Result<(), String> {
    let program = &hook.run[0];
    let mut child = tokio::process::Command::new(program)
        .args(&hook.run[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let line = format!("{input}\n");
        // A hook that does not read its input is its own business.
        let _ = stdin.write_all(line.as_bytes()).await;
    }
    let timeout = hook.timeout();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Err(format!("did not finish within {} s, and was killed", timeout.as_secs())),
        Ok(Err(e)) => Err(format!("cannot wait for {program}: {e}")),
        Ok(Ok(output)) if output.status.success() => Ok(()),
        Ok(Ok(output)) => {
            let said = |bytes: &[u8]| {
                let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MESSAGE_BYTES_MAX)]).into_owned();
                text.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_owned)
            };
            let message = said(&output.stderr).or_else(|| said(&output.stdout));
            Err(match message {
                Some(m) => format!("{m} (exit {})", output.status.code().unwrap_or(-1)),
                None => format!("exited with {}", output.status),
            })
        }
    }
}

fn named(hook: &HookConfig) -> String {
    format!("{} hook {}", stage_name(hook.on), hook.run[0])
}

fn stage_name(stage: HookStage) -> &'static str {
    match stage {
        HookStage::BeforeSync => "before-sync",
        HookStage::AfterSync => "after-sync",
        HookStage::AfterApply => "after-apply",
    }
}

fn hooks(node: &Node, stage: HookStage) -> Vec<HookConfig> {
    node.config.hooks.iter().filter(|h| h.on == stage).cloned().collect()
}

/// Runs the `before-sync` hooks in order; the first failure cancels the
/// sync, with the reason the caller writes to the ledger.
pub async fn before_sync(node: &Node, input: serde_json::Value) -> Result<(), String> {
    for hook in hooks(node, HookStage::BeforeSync) {
        let mut input = input.clone();
        input["stage"] = json!("before-sync");
        run(&hook, &input).await.map_err(|e| format!("the {} cancelled the sync: {e}", named(&hook)))?;
    }
    Ok(())
}

/// Runs the `after-sync` hooks; failures go to the ledger.
pub async fn after_sync(node: &Arc<Node>, input: serde_json::Value) {
    for hook in hooks(node, HookStage::AfterSync) {
        let mut input = input.clone();
        input["stage"] = json!("after-sync");
        if let Err(e) = run(&hook, &input).await {
            log_failure(node, &hook, &e).await;
        }
    }
}

/// Runs the `after-apply` hooks once for each commit noted since the last
/// call whose changes came from a peer or a bundle.
pub async fn after_apply(node: &Arc<Node>) {
    let hooks = hooks(node, HookStage::AfterApply);
    let ranges = std::mem::take(&mut *node.applied.lock().expect("applied ranges lock"));
    if hooks.is_empty() || ranges.is_empty() {
        return;
    }
    let reader = node.clone();
    let batches = crate::pool::blocking(move || {
        let mut batches = Vec::new();
        for (after, upto) in ranges {
            let mut entries = Vec::new();
            let mut since = after;
            while since < upto {
                let Ok(page) = reader.store.feed(since, 1000, &mut |_| true) else { break };
                for e in page.entries.into_iter().filter(|e| e.cursor <= upto) {
                    entries.push(e);
                }
                if page.next <= since {
                    break;
                }
                since = page.next;
            }
            let Some(origin) = entries.first().map(|e| e.origin.clone()) else { continue };
            if origin == engine::store::LOCAL_ORIGIN {
                continue;
            }
            let records: Vec<serde_json::Value> = entries
                .iter()
                .map(|e| {
                    let deleted = reader.store.view(&e.key).ok().flatten().is_none_or(|v| !v.exists);
                    json!({
                        "type": e.key.record_type.as_str(),
                        "id": e.key.id.as_str(),
                        "partition": e.key.partition.to_string(),
                        "deleted": deleted,
                        "cursor": e.cursor,
                    })
                })
                .collect();
            batches.push(json!({ "stage": "after-apply", "origin": origin, "records": records }));
        }
        batches
    })
    .await;
    for input in batches {
        for hook in &hooks {
            if let Err(e) = run(hook, &input).await {
                log_failure(node, hook, &e).await;
            }
        }
    }
}

async fn log_failure(node: &Arc<Node>, hook: &HookConfig, reason: &str) {
    tracing::warn!("the {} failed: {reason}", named(hook));
    let entry = engine::LedgerEntry {
        session: partitions::hex::encode(&crate::random::bytes::<16>()),
        peer: hook.run.join(" "),
        via: "hook".into(),
        started_at_ms: now_ms(),
        outcome: format!("failed: the {} failed: {reason}", named(hook)),
        ..Default::default()
    };
    let node = node.clone();
    crate::pool::blocking(move || {
        if let Err(e) = node.store.record_session(&entry) {
            tracing::warn!("cannot record a failed hook in the ledger: {e}");
        }
    })
    .await;
}
