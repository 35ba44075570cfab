//! What the command line prints: a checked stdout, the text form of every
//! result, and progress.
//!
//! Nothing here panics on a failed write (`println!` does): a reader that
//! hangs up (`ferry export | head -1`) ends the output quietly, and any
//! other failure (a full disk) becomes the command's one-line error, so the
//! command always gets to close its store.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

use crate::ops::Op;

/// Standard output that swallows a closed pipe and keeps the first other
/// error for the caller.
pub struct Stdout {
    inner: std::io::Stdout,
    /// The reader hung up: the rest of the output is dropped.
    closed: bool,
}

impl Stdout {
    pub fn new() -> Stdout {
        Stdout { inner: std::io::stdout(), closed: false }
    }

    fn checked(&mut self, result: std::io::Result<usize>, len: usize) -> std::io::Result<usize> {
        match result {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(len)
            }
            other => other,
        }
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        let result = self.inner.write(buf);
        self.checked(result, buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.closed {
            return Ok(());
        }
        let result = self.inner.flush().map(|()| 0);
        self.checked(result, 0).map(|_| ())
    }
}

/// A line on stderr; a closed stderr is not worth a panic.
pub fn warn(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// The result of `ferry init`, and the fallback for any flat object.
pub fn print_result(out: &mut dyn Write, json: bool, value: &serde_json::Value) -> std::io::Result<()> {
    if json {
        return writeln!(out, "{value}");
    }
    write_fields(out, value)
}

/// The result of an operation, as JSON or as text for people.
pub fn print_op_result(out: &mut dyn Write, json: bool, op: &Op, value: &serde_json::Value) -> std::io::Result<()> {
    if json {
        if !matches!(op, Op::Export { .. }) {
            writeln!(out, "{value}")?;
        }
        return Ok(());
    }
    match op {
        Op::Export { .. } => Ok(()),
        Op::Id => write_id(out, value),
        Op::EnrollToken { .. } => writeln!(out, "{}", value["token"].as_str().unwrap_or_default()),
        Op::Put { .. } | Op::Get { .. } | Op::Delete { .. } | Op::Resolve { .. } => write_record(out, value),
        Op::List { .. } | Op::Conflicts => {
            let list = value.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                writeln!(out, "(none)")?;
            }
            list.iter().try_for_each(|r| write_record(out, r))
        }
        Op::Sync { .. } | Op::BundleImport { .. } => write_summary(out, op, value),
        // The rejections go to stderr with the command's verdict.
        Op::Import { .. } => writeln!(
            out,
            "written {}, unchanged {}, rejected {}",
            value["written"], value["unchanged"], value["rejected"]
        ),
        Op::History(crate::ops::History { records }) => {
            value.as_array().into_iter().flatten().try_for_each(|e| write_history_entry(out, e, *records))
        }
        Op::Changes(_) => {
            for e in value["entries"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "{} {} {} in {}{} (from {})",
                    e["cursor"],
                    e["type"].as_str().unwrap_or("?"),
                    e["id"].as_str().unwrap_or("?"),
                    e["partition"].as_str().unwrap_or("?"),
                    if e["deleted"] == true { ", deleted" } else { "" },
                    e["origin"].as_str().unwrap_or("?"),
                )?;
            }
            writeln!(out, "last cursor {}", value["last_cursor"])
        }
        Op::CertList => value.as_array().into_iter().flatten().try_for_each(|c| write_certificate(out, c)),
        Op::CertRevoke { .. } => {
            let mut value = value.clone();
            if let Some(at) = value["revoked_at"].as_u64() {
                value["revoked_at"] = serde_json::json!(crate::node::iso8601_ms(at.saturating_mul(1000)));
            }
            write_fields(out, &value)
        }
        Op::Check(crate::ops::Check { repair }) => write_check(out, *repair, value),
        Op::Status => write_status(out, value),
        Op::Console => writeln!(
            out,
            "{}\n(open it in a browser on this machine within {} minutes; it logs in once)",
            value["url"].as_str().unwrap_or_default(),
            value["valid_s"].as_u64().unwrap_or(0) / 60
        ),
        Op::BlobList => write_blob_list(out, value),
        Op::ProfileSet(_) => write_profile_line(out, value),
        Op::SealingKey(_) => write_sealing_keys(out, value),
        Op::ProfileShow(_) => {
            let list = value.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                writeln!(out, "(no policies set: every type is newest, delete-wins)")?;
            }
            list.iter().try_for_each(|t| write_profile_line(out, t))
        }
        Op::BlobGc => writeln!(
            out,
            "removed {} blob{} ({} bytes); kept {} that records reference",
            value["removed"],
            if value["removed"] == 1 { "" } else { "s" },
            value["bytes_freed"],
            value["kept"]
        ),
        Op::Peers => {
            let list = value.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                writeln!(out, "no peers found on the LAN, connected, or at a rendezvous point")?;
            }
            list.iter().try_for_each(|p| {
                writeln!(
                    out,
                    "{} {} (found by {}) {}",
                    p["peer_id"].as_str().unwrap_or("?"),
                    p["link"].as_str().unwrap_or("not connected"),
                    join(&p["found_by"]),
                    join(&p["addresses"])
                )
            })
        }
        _ => write_fields(out, value),
    }
}

/// `ferry status`: who, where, the peers with their last sync, the
/// sessions in flight.
fn write_status(out: &mut dyn Write, value: &serde_json::Value) -> std::io::Result<()> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_owned();
    writeln!(out, "peer id: {}", text(&value["peer_id"]))?;
    writeln!(out, "instance: {}", text(&value["instance_id"]))?;
    writeln!(out, "listening: {}", join(&value["listening"]))?;
    for c in value["certificates"].as_array().into_iter().flatten() {
        let until = c["not_after"].as_u64().map_or("?".into(), |s| crate::node::iso8601_ms(s.saturating_mul(1000)));
        writeln!(out, "certificate {} of org {} until {until}", text(&c["certificate_id"]), text(&c["org_id"]))?;
    }
    for (peer, p) in value["peers"].as_object().into_iter().flatten() {
        let connected = if p["connected"].as_bool() == Some(true) { "connected" } else { "not connected" };
        let last = match p["last_sync"].as_object() {
            Some(last) => {
                let counts = last
                    .get("report")
                    .and_then(|r| r.as_object())
                    .map_or(String::new(), |r| format!(" (sent {}, received {})", r["sent"], r["received"]));
                format!("last sync {} {}{counts}", text(&last["at"]), text(&last["outcome"]))
            }
            None => "no sync yet".to_owned(),
        };
        writeln!(out, "peer {peer}: {connected}, {last}")?;
    }
    let sessions = value["sessions"].as_array().cloned().unwrap_or_default();
    if sessions.is_empty() {
        writeln!(out, "no session in flight")?;
    }
    for s in sessions {
        let part = |p: &serde_json::Value| format!("{}/{}", p["changes_done"], p["changes_total"]);
        writeln!(
            out,
            "session {} with {} ({}): sent {}, received {}",
            s["key"],
            text(&s["peer"]),
            text(&s["role"]),
            part(&s["sent"]),
            part(&s["received"])
        )?;
    }
    Ok(())
}

/// `ferry check`: what was read, what is damaged, what was repaired.
fn write_check(out: &mut dyn Write, repair: bool, value: &serde_json::Value) -> std::io::Result<()> {
    let damaged = value["damaged"].as_array().cloned().unwrap_or_default();
    let unsendable = value["unsendable"].as_array().cloned().unwrap_or_default();
    writeln!(
        out,
        "checked {} entries: {} records, {} changes; {} damaged, {} that peers would refuse",
        value["entries"],
        value["records"],
        value["changes"],
        damaged.len(),
        unsendable.len()
    )?;
    for d in &damaged {
        writeln!(out, "  damaged: {}: {}", d["what"].as_str().unwrap_or("?"), d["reason"].as_str().unwrap_or("?"))?;
    }
    for u in &unsendable {
        writeln!(out, "  never sent: {}", u.as_str().unwrap_or("?"))?;
    }
    if repair {
        writeln!(
            out,
            "repaired: removed {} entries; the next sync fetches up to {} changes again from any peer",
            value["removed"], value["refetch"]
        )?;
    }
    Ok(())
}

/// `key: value` lines of a flat object; lists of strings are joined.
fn write_fields(out: &mut dyn Write, value: &serde_json::Value) -> std::io::Result<()> {
    for (k, v) in value.as_object().into_iter().flatten() {
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(a) if a.iter().all(|x| x.is_string()) => join(v),
            other => other.to_string(),
        };
        writeln!(out, "{}: {text}", k.replace('_', " "))?;
    }
    Ok(())
}

fn write_id(out: &mut dyn Write, value: &serde_json::Value) -> std::io::Result<()> {
    writeln!(out, "peer id: {}", value["peer_id"].as_str().unwrap_or("?"))?;
    writeln!(out, "instance id: {}", value["instance_id"].as_str().unwrap_or("?"))?;
    writeln!(out, "store: {}", value["store"].as_str().unwrap_or("?"))?;
    let listening = join(&value["listening"]);
    writeln!(out, "listening: {}", if listening.is_empty() { "no (not serving)" } else { &listening })?;
    let certificates = value["certificates"].as_array().cloned().unwrap_or_default();
    writeln!(out, "certificates:{}", if certificates.is_empty() { " none" } else { "" })?;
    for c in &certificates {
        write!(out, "  ")?;
        write_certificate(out, c)?;
    }
    writeln!(out, "instances:")?;
    for i in value["instances"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  {} since {} ({})",
            i["instance_id"].as_str().unwrap_or("?"),
            i["since"].as_str().unwrap_or("?"),
            i["reason"].as_str().unwrap_or("?")
        )?;
    }
    Ok(())
}

fn write_certificate(out: &mut dyn Write, c: &serde_json::Value) -> std::io::Result<()> {
    let types: Vec<String> = c["types"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(t, mode)| format!("{t}={}", mode.as_str().unwrap_or("?")))
        .collect();
    writeln!(
        out,
        "{} {} {}{} org {} subject {} read [{}] write [{}] types [{}]{} until {}",
        c["certificate_id"].as_str().unwrap_or("?"),
        if c["held"].as_bool() == Some(true) { "held  " } else { "issued" },
        if c["revoked"].as_bool() == Some(true) { "REVOKED " } else { "" },
        c["name"].as_str().map_or(String::new(), |n| format!("{n:?}")),
        c["org_id"].as_str().unwrap_or("?"),
        c["subject"].as_str().unwrap_or("?"),
        join(&c["read"]),
        join(&c["write"]),
        if types.is_empty() { "all read-write".to_owned() } else { types.join(", ") },
        if c["can_issue"].as_bool() == Some(true) { " may issue" } else { "" },
        crate::node::iso8601_ms(c["not_after"].as_u64().unwrap_or(0).saturating_mul(1000))
    )
}

/// One type of the org's profile on one line, as `profile set` and
/// `profile show` print it.
fn write_profile_line(out: &mut dyn Write, t: &serde_json::Value) -> std::io::Result<()> {
    let local: Vec<&str> = t["local"].as_array().into_iter().flatten().filter_map(|f| f.as_str()).collect();
    let sealed: Vec<&str> = t["sealed"].as_array().into_iter().flatten().filter_map(|f| f.as_str()).collect();
    writeln!(
        out,
        "{}: {}, {}{}{}{}{}",
        t["type"].as_str().unwrap_or("?"),
        t["policy"].as_str().unwrap_or("?"),
        t["delete"].as_str().unwrap_or("?"),
        if local.is_empty() { String::new() } else { format!(", local {}", local.join(",")) },
        t["send_when"]
            .as_object()
            .and_then(|o| o.iter().next())
            .map_or(String::new(), |(f, v)| format!(", sent when {f}={v}")),
        t["evict_after_ack"].as_str().map_or(String::new(), |tag| format!(", evicted once {tag} has it")),
        match (sealed.is_empty(), t["readers"].as_str()) {
            (false, Some(tag)) => format!(", {} sealed to {tag}", sealed.join(",")),
            _ => String::new(),
        }
    )
}

/// `ferry sealing-key`: this node's keys, then the readers' it knows.
fn write_sealing_keys(out: &mut dyn Write, value: &serde_json::Value) -> std::io::Result<()> {
    let own = value["own"].as_array().cloned().unwrap_or_default();
    if own.is_empty() {
        writeln!(out, "this node holds no sealing key")?;
    }
    for k in &own {
        let published = if k["published"] == true { "published" } else { "older, kept to open older values" };
        writeln!(out, "own key {}  {published}", k["key_id"].as_str().unwrap_or("?"))?;
    }
    let readers = value["readers"].as_array().cloned().unwrap_or_default();
    if readers.is_empty() {
        writeln!(out, "no reader key known: sealed fields cannot be written here yet")?;
    }
    for k in &readers {
        writeln!(
            out,
            "readers {} key {} from {}",
            k["readers"].as_str().unwrap_or("?"),
            k["key_id"].as_str().unwrap_or("?"),
            k["publisher"].as_str().unwrap_or("?")
        )?;
    }
    Ok(())
}

/// One ledger entry: the columns on one line (the peer id in full), and a
/// failure's reason on the next, so no reason pushes the columns about.
fn write_history_entry(out: &mut dyn Write, e: &serde_json::Value, records: bool) -> std::io::Result<()> {
    let outcome = e["outcome"].as_str().unwrap_or("?");
    let (status, reason) = outcome.split_once(": ").map_or((outcome, None), |(s, r)| (s, Some(r)));
    if e["via"] == "scope" || e["via"] == "evict" {
        // A purge after this node's scope shrank, or an eviction of what a
        // peer acknowledged: no peer, nothing moved.
        writeln!(
            out,
            "{}  {:<7}  {:<9}  this node  {} {}",
            e["started_at"].as_str().unwrap_or("?"),
            e["via"].as_str().unwrap_or("?"),
            status,
            if e["via"] == "scope" { "purged" } else { "evicted" },
            e["purged"]
        )?;
        if let Some(reason) = reason {
            writeln!(out, "    {}", reason.replace('\n', " "))?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{}  {:<7}  {:<9}  {}  sent {} received {} rejected {} ({} bytes out, {} in)",
        e["started_at"].as_str().unwrap_or("?"),
        e["via"].as_str().unwrap_or("?"),
        status,
        e["peer"].as_str().unwrap_or("?"),
        e["sent"],
        e["received"],
        e["rejected"],
        e["bytes_sent"],
        e["bytes_received"]
    )?;
    if let Some(reason) = reason {
        writeln!(out, "    {status}: {}", reason.replace('\n', " "))?;
    }
    if records {
        for r in e["records"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "    {:<8} {} {} in {}",
                r["direction"].as_str().unwrap_or("?"),
                r["type"].as_str().unwrap_or("?"),
                r["id"].as_str().unwrap_or("?"),
                r["partition"].as_str().unwrap_or("?")
            )?;
        }
        if let Some(beyond) = e["records_beyond"].as_u64().filter(|n| *n > 0) {
            writeln!(out, "    … and {beyond} more changes")?;
        }
    }
    write_blob_counts(out, e, "    ")
}

fn write_summary(out: &mut dyn Write, op: &Op, value: &serde_json::Value) -> std::io::Result<()> {
    write_records_summary(out, op, value)?;
    write_blobs_summary(out, value)
}

/// The blob counters of a sync summary or a ledger entry, when any moved.
fn write_blob_counts(out: &mut dyn Write, value: &serde_json::Value, indent: &str) -> std::io::Result<()> {
    let n = |k: &str| value[k].as_u64().unwrap_or(0);
    if n("blobs_received") + n("blobs_sent") + n("blob_bytes_received") + n("blob_bytes_sent") == 0 {
        return Ok(());
    }
    writeln!(
        out,
        "{indent}blobs: received {} ({} bytes), sent {} ({} bytes)",
        n("blobs_received"),
        n("blob_bytes_received"),
        n("blobs_sent"),
        n("blob_bytes_sent")
    )
}

/// The blobs a sync or bundle moved, and why any did not.
fn write_blobs_summary(out: &mut dyn Write, value: &serde_json::Value) -> std::io::Result<()> {
    write_blob_counts(out, value, "  ")?;
    value["blob_errors"]
        .as_array()
        .into_iter()
        .flatten()
        .try_for_each(|e| writeln!(out, "  blob not moved: {}", e.as_str().unwrap_or("?")))
}

/// `ferry blob list`: one line a blob.
fn write_blob_list(out: &mut dyn Write, value: &serde_json::Value) -> std::io::Result<()> {
    let list = value.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return writeln!(out, "(no blobs)");
    }
    for b in &list {
        let state = b["state"].as_str().unwrap_or("?");
        let held = if state == "partial" { format!(" ({} bytes held)", b["held"]) } else { String::new() };
        let records = b["referenced_by"].as_u64().unwrap_or(0);
        writeln!(
            out,
            "{} {} bytes {state}{held}, referenced by {records} record{}",
            b["hash"].as_str().unwrap_or("?"),
            b["size"],
            if records == 1 { "" } else { "s" }
        )?;
    }
    Ok(())
}

fn write_records_summary(out: &mut dyn Write, op: &Op, value: &serde_json::Value) -> std::io::Result<()> {
    let peer = value["peer"].as_str().unwrap_or("?");
    if value["noop"].as_bool().unwrap_or(false) {
        return writeln!(
            out,
            "in sync with {peer}: nothing to do ({} bytes out, {} in, {} ms)",
            value["bytes_sent"], value["bytes_received"], value["duration_ms"]
        );
    }
    if matches!(op, Op::BundleImport { .. }) {
        writeln!(
            out,
            "imported a bundle from {peer}: received {} (updated {}, skipped {}, conflicts {}, rejected {}); {} bytes, {} ms",
            value["received"],
            value["updated"],
            value["skipped"],
            value["conflicts"],
            value["rejected"],
            value["bytes_received"],
            value["duration_ms"]
        )?;
    } else {
        writeln!(
            out,
            "synced with {peer}: sent {}, received {} (updated {}, skipped {}, conflicts {}, rejected {}); {} bytes out, {} in, {} ms",
            value["sent"],
            value["received"],
            value["updated"],
            value["skipped"],
            value["conflicts"],
            value["rejected"],
            value["bytes_sent"],
            value["bytes_received"],
            value["duration_ms"]
        )?;
    }
    value["rejections"]
        .as_array()
        .into_iter()
        .flatten()
        .try_for_each(|r| writeln!(out, "  rejected: {}", r.as_str().unwrap_or("?")))
}

fn join(value: &serde_json::Value) -> String {
    value
        .as_array()
        .map(|a| a.iter().map(|x| x.as_str().map_or(x.to_string(), str::to_owned)).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

pub fn write_record(out: &mut dyn Write, record: &serde_json::Value) -> std::io::Result<()> {
    let partition = record["partition"].as_str().unwrap_or("");
    let relative = partition.split_once(':').map_or("(org)", |(_, r)| r);
    let deleted = if record["deleted"].as_bool() == Some(true) { " [deleted]" } else { "" };
    writeln!(
        out,
        "{} {} in {relative}{deleted}",
        record["type"].as_str().unwrap_or("?"),
        record["id"].as_str().unwrap_or("?")
    )?;
    for (k, v) in record["fields"].as_object().into_iter().flatten() {
        writeln!(out, "  {k} = {v}")?;
    }
    for c in record["conflicts"].as_array().into_iter().flatten() {
        let what = c["field"].as_str().map_or("the record".to_owned(), str::to_owned);
        let value = if c["deleted"].as_bool() == Some(true) { "deleted".to_owned() } else { c["value"].to_string() };
        let instance = c["instance"].as_str().unwrap_or("?");
        writeln!(
            out,
            "  conflict {}: {what} = {value} (kept from instance {}…)",
            c["n"],
            instance.get(..8).unwrap_or(instance)
        )?;
    }
    Ok(())
}

/// Progress of a long operation, on stderr: bars on a terminal, plain lines
/// otherwise, and nothing at all unless asked for (`--progress`) or stderr
/// is a terminal a person watches (never with `--json`).
pub struct Progress {
    shown: bool,
    bars: bool,
    drawn: BTreeMap<String, indicatif::ProgressBar>,
}

impl Progress {
    pub fn new(json: bool, asked: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        Progress { shown: asked || (terminal && !json), bars: terminal, drawn: BTreeMap::new() }
    }

    pub fn update(&mut self, what: &str, done: u64, total: u64) {
        if !self.shown {
            return;
        }
        if !self.bars {
            warn(&format!("progress: {what} {done}/{}", total.max(done)));
            return;
        }
        let bar = self.drawn.entry(what.to_owned()).or_insert_with(|| {
            let bar = indicatif::ProgressBar::new(total.max(1));
            // Bytes (of blobs) read as sizes, counts as counts.
            let template = if what.contains("bytes") {
                "{msg:>9} [{bar:30}] {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {eta})"
            } else {
                "{msg:>9} [{bar:30}] {pos}/{len} ({per_sec}, {eta})"
            };
            bar.set_style(
                indicatif::ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_message(what.to_owned());
            bar
        });
        bar.set_length(total.max(done).max(1));
        bar.set_position(done);
    }

    pub fn finish(&mut self) {
        for bar in self.drawn.values() {
            bar.finish_and_clear();
        }
    }
}
