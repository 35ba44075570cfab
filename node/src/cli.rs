//! The `ferry` command line (SPEC §4): arguments, dispatch, and output.
//!
//! Every command becomes an `Op`. When a node is serving this home, the Op
//! goes to it over the control socket; otherwise it runs here, opening the
//! store (and, for sync, enrolment and peers, a temporary network node).
//! Output is text for people or, with `--json`, the JSON SPEC §4 names.
//! Errors are one line on stderr and a non-zero exit code (a ferry.toml
//! error adds the offending line, with a caret, below it).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::home::Home;
use crate::net::Net;
use crate::node::Node;
use crate::ops::{self, Ctx, Line, Op};

#[derive(Parser, Debug)]
#[command(name = "ferry", version, about = "Peer-to-peer replication for organisations that work offline")]
pub struct Cli {
    /// The node's directory (several nodes can run on one machine).
    #[arg(long, global = true, env = "FERRY_HOME")]
    pub home: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create the identity key and the store; print the peer id.
    Init {
        /// Store backend: redb (default) or sled.
        #[arg(long)]
        store: Option<String>,
    },
    /// Who this node is and where it listens.
    Id,
    /// Organisations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Certificates.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Enrol this node with a token, or (`enroll token …`) make one.
    #[command(args_conflicts_with_subcommands = true)]
    Enroll(EnrollArgs),
    /// Write one record.
    Put {
        #[arg(value_name = "TYPE")]
        record_type: String,
        id: String,
        #[arg(long)]
        partition: String,
        /// FIELD=VALUE; VALUE is JSON if it parses as JSON, else a string.
        #[arg(long = "set", value_name = "FIELD=VALUE")]
        set: Vec<String>,
        #[arg(long = "unset", value_name = "FIELD")]
        unset: Vec<String>,
        #[arg(long)]
        org: Option<String>,
    },
    /// Bulk write, one JSON record a line (`-` for stdin).
    Import {
        file: String,
        #[arg(long)]
        org: Option<String>,
    },
    /// Bulk read, one JSON record a line.
    Export {
        #[arg(long = "type")]
        record_type: Option<String>,
        #[arg(long)]
        partition: Option<String>,
        #[arg(long)]
        org: Option<String>,
    },
    /// Read one record.
    Get {
        #[arg(value_name = "TYPE")]
        record_type: String,
        id: String,
        #[arg(long)]
        partition: Option<String>,
        #[arg(long)]
        org: Option<String>,
    },
    /// Delete one record.
    Delete {
        #[arg(value_name = "TYPE")]
        record_type: String,
        id: String,
        #[arg(long)]
        partition: Option<String>,
        #[arg(long)]
        org: Option<String>,
    },
    /// List records.
    List {
        #[arg(long = "type")]
        record_type: Option<String>,
        #[arg(long)]
        partition: Option<String>,
        /// Include deleted records.
        #[arg(long)]
        deleted: bool,
        #[arg(long)]
        org: Option<String>,
    },
    /// Run the node: accept syncs and enrolments, serve the local API.
    Serve {
        #[arg(long = "listen", value_name = "MULTIADDR")]
        listen: Vec<String>,
        #[arg(long)]
        no_mdns: bool,
    },
    /// One sync with a peer (a multiaddr, or a peer id found by mDNS).
    Sync {
        peer: String,
        #[arg(long = "filter", value_name = "P")]
        filter: Vec<String>,
        #[arg(long, conflicts_with = "push_only")]
        pull_only: bool,
        #[arg(long)]
        push_only: bool,
        #[arg(long)]
        org: Option<String>,
    },
    /// Peers found on the LAN.
    Peers,
    /// The sync ledger.
    History,
    /// Records holding conflicts.
    Conflicts,
    /// Resolve a record's conflicts.
    Resolve {
        #[arg(value_name = "TYPE")]
        record_type: String,
        id: String,
        /// Take conflict N (as numbered by `ferry conflicts`).
        #[arg(long, conflicts_with = "set")]
        take: Option<usize>,
        #[arg(long = "set", value_name = "FIELD=VALUE")]
        set: Vec<String>,
        #[arg(long)]
        partition: Option<String>,
        #[arg(long)]
        org: Option<String>,
    },
    /// Sync through a file (a USB stick).
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// A central node and two devices enrol, sync, edit offline and converge.
    Demo {
        /// Keep the demo's directory instead of deleting it.
        #[arg(long)]
        keep: bool,
    },
    /// The benchmark of SPEC §5: real nodes over loopback libp2p.
    Bench(crate::bench::BenchArgs),
}

#[derive(Subcommand, Debug)]
pub enum OrgCommand {
    /// Create an organisation held by this node.
    Create {
        name: String,
        /// An authority tag for this node's own certificate (e.g. central).
        #[arg(long)]
        authority: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Issue a certificate within this node's own scope.
    Issue {
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        subject: String,
        /// Partitions it may read, comma-separated (`*`: the whole org).
        #[arg(long)]
        read: Option<String>,
        /// Partitions it may write, comma-separated (`*`: the whole org).
        #[arg(long)]
        write: Option<String>,
        #[arg(long, default_value = "")]
        types: String,
        /// Days the certificate is valid (at least 1).
        #[arg(long, default_value_t = 365)]
        days: u64,
        #[arg(long)]
        can_issue: bool,
        #[arg(long)]
        authority: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Hold a certificate issued to this node.
    Import { file: PathBuf },
    /// Certificates held and issued.
    List,
    /// Revoke a certificate this node issued.
    Revoke { certificate_id: String },
}

#[derive(Args, Debug)]
pub struct EnrollArgs {
    #[command(subcommand)]
    pub action: Option<EnrollCommand>,
    /// The token the issuer printed.
    pub token: Option<String>,
    /// A name for this node in its certificate.
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum EnrollCommand {
    /// Print a one-time enrolment token (the issuer must be serving).
    Token {
        #[arg(long)]
        org: Option<String>,
        /// Partitions the device may read, comma-separated (`*`: the whole org).
        #[arg(long)]
        read: Option<String>,
        /// Partitions the device may write, comma-separated (`*`: the whole org).
        #[arg(long)]
        write: Option<String>,
        #[arg(long, default_value = "")]
        types: String,
        /// How long the token stays usable (30s, 15m, 2h, 7d).
        #[arg(long, default_value = "1d")]
        ttl: String,
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long certificates issued with it are valid.
        #[arg(long, default_value_t = 365)]
        days: u64,
        #[arg(long)]
        can_issue: bool,
        #[arg(long)]
        authority: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum BundleCommand {
    /// Write the changes a peer lacks to a file.
    Export {
        #[arg(long)]
        out: PathBuf,
        /// From what we held in common after the last sync with this peer.
        #[arg(long = "for", value_name = "PEER_ID", conflicts_with = "since")]
        for_peer: Option<String>,
        /// From a frontier file the receiver wrote (`ferry bundle frontier`).
        #[arg(long, value_name = "FRONTIER_FILE")]
        since: Option<PathBuf>,
        #[arg(long = "filter", value_name = "P")]
        filter: Vec<String>,
        #[arg(long)]
        org: Option<String>,
    },
    /// Ingest a bundle exactly like a sync.
    Import { file: PathBuf },
    /// Write what this node holds, so the next bundle for it is a delta.
    Frontier {
        #[arg(long)]
        out: PathBuf,
        #[arg(long = "filter", value_name = "P")]
        filter: Vec<String>,
        #[arg(long)]
        org: Option<String>,
    },
}

fn parse_assignments(items: &[String]) -> anyhow::Result<BTreeMap<String, serde_json::Value>> {
    items
        .iter()
        .map(|item| {
            let (k, v) = item.split_once('=').with_context(|| format!("--set {item:?}: expected FIELD=VALUE"))?;
            Ok((k.to_owned(), crate::json::to_json(&crate::json::parse_cli_value(v))))
        })
        .collect()
}

/// A `--read` or `--write` as given: absent is nothing, but an empty text
/// given on purpose (`--read ""`) is refused, because it reads as "the whole
/// org" and grants nothing.
fn scope_arg(flag: &str, given: &Option<String>) -> anyhow::Result<String> {
    match given {
        None => Ok(String::new()),
        Some(text) if text.split(',').all(|p| p.trim().is_empty()) => {
            bail!(
                "{flag} {text:?} names no partition: name some (results:tc-1,tests), or the whole org with {flag} '*'"
            )
        }
        Some(text) => Ok(text.clone()),
    }
}

/// Turns a command into the operation it performs (or `None` for those that
/// run on their own: init, serve, demo, bench).
fn to_op(command: &Command) -> anyhow::Result<Option<Op>> {
    Ok(Some(match command {
        Command::Init { .. } | Command::Serve { .. } | Command::Demo { .. } | Command::Bench(_) => return Ok(None),
        Command::Id => Op::Id,
        Command::Org(OrgCommand::Create { name, authority }) => {
            Op::OrgCreate { name: name.clone(), authority: authority.clone() }
        }
        Command::Cert(CertCommand::Issue {
            org,
            subject,
            read,
            write,
            types,
            days,
            can_issue,
            authority,
            name,
            out,
        }) => Op::CertIssue {
            org: org.clone(),
            subject: subject.clone(),
            read: scope_arg("--read", read)?,
            write: scope_arg("--write", write)?,
            types: types.clone(),
            days: *days,
            can_issue: *can_issue,
            authority: authority.clone(),
            name: name.clone(),
            out: out.clone(),
        },
        Command::Cert(CertCommand::Import { file }) => {
            let pem = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            Op::CertImport { pem }
        }
        Command::Cert(CertCommand::List) => Op::CertList,
        Command::Cert(CertCommand::Revoke { certificate_id }) => Op::CertRevoke { id: certificate_id.clone() },
        Command::Enroll(EnrollArgs {
            action: Some(EnrollCommand::Token { org, read, write, types, ttl, uses, days, can_issue, authority }),
            ..
        }) => Op::EnrollToken {
            org: org.clone(),
            read: scope_arg("--read", read)?,
            write: scope_arg("--write", write)?,
            types: types.clone(),
            ttl_s: crate::config::parse_duration(ttl)?.as_secs(),
            uses: *uses,
            days: *days,
            can_issue: *can_issue,
            authority: authority.clone(),
        },
        Command::Enroll(EnrollArgs { action: None, token: Some(token), name }) => {
            Op::Enroll { token: token.clone(), name: name.clone() }
        }
        Command::Enroll(_) => bail!("give a token (`ferry enroll TOKEN`) or make one (`ferry enroll token --org …`)"),
        Command::Put { record_type, id, partition, set, unset, org } => Op::Put {
            org: org.clone(),
            record_type: record_type.clone(),
            id: id.clone(),
            partition: partition.clone(),
            set: parse_assignments(set)?,
            unset: unset.iter().cloned().collect::<BTreeSet<_>>(),
        },
        Command::Import { file, org } => Op::Import { org: org.clone(), path: PathBuf::from(file) },
        Command::Export { record_type, partition, org } => {
            Op::Export { org: org.clone(), record_type: record_type.clone(), partition: partition.clone() }
        }
        Command::Get { record_type, id, partition, org } => {
            Op::Get { org: org.clone(), record_type: record_type.clone(), id: id.clone(), partition: partition.clone() }
        }
        Command::Delete { record_type, id, partition, org } => Op::Delete {
            org: org.clone(),
            record_type: record_type.clone(),
            id: id.clone(),
            partition: partition.clone(),
        },
        Command::List { record_type, partition, deleted, org } => Op::List {
            org: org.clone(),
            record_type: record_type.clone(),
            partition: partition.clone(),
            deleted: *deleted,
        },
        Command::Sync { peer, filter, pull_only, push_only, org } => Op::Sync {
            peer: peer.clone(),
            org: org.clone(),
            filters: filter.clone(),
            pull: !push_only,
            push: !pull_only,
        },
        Command::Peers => Op::Peers,
        Command::History => Op::History,
        Command::Conflicts => Op::Conflicts,
        Command::Resolve { record_type, id, take, set, partition, org } => Op::Resolve {
            org: org.clone(),
            record_type: record_type.clone(),
            id: id.clone(),
            partition: partition.clone(),
            take: *take,
            set: parse_assignments(set)?,
        },
        Command::Bundle(BundleCommand::Export { out, for_peer, since, filter, org }) => Op::BundleExport {
            org: org.clone(),
            out: out.clone(),
            for_peer: for_peer.clone(),
            since: since.clone(),
            filters: filter.clone(),
        },
        Command::Bundle(BundleCommand::Import { file }) => Op::BundleImport { path: file.clone() },
        Command::Bundle(BundleCommand::Frontier { out, filter, org }) => {
            Op::BundleFrontier { org: org.clone(), out: out.clone(), filters: filter.clone() }
        }
    }))
}

/// Runs the command line; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let home = Home::resolve(cli.home.clone());
    match &cli.command {
        Command::Init { store } => {
            let backend = store
                .as_deref()
                .map(|s| engine::BackendKind::parse(s).with_context(|| format!("--store {s:?}: use redb or sled")))
                .transpose()?;
            let out = tokio::task::block_in_place(|| crate::node::init(&home, backend))?;
            print_result(&cli, &out);
            return Ok(());
        }
        Command::Serve { listen, no_mdns } => {
            return crate::serve::serve(home, listen.clone(), *no_mdns, crate::serve::Printer::new(cli.json)).await;
        }
        Command::Demo { keep } => return crate::demo::run(*keep).await,
        Command::Bench(args) => return crate::bench::run(args, cli.json).await,
        _ => {}
    }
    home.require_initialized()?;
    let mut op = to_op(&cli.command)?.expect("handled above");
    op.absolutize();
    // stdin imports go through a temporary file the server can read.
    let _stdin_file;
    if let Op::Import { path, .. } = &mut op
        && path.as_os_str() == "-"
    {
        let file = tempfile::NamedTempFile::new_in(&home.dir).context("cannot buffer stdin")?;
        std::io::copy(&mut std::io::stdin().lock(), &mut file.as_file()).context("cannot read stdin")?;
        *path = file.path().to_path_buf();
        _stdin_file = file;
    }
    let mut progress = Progress::new(!cli.json && std::io::stdout().is_terminal());
    let mut on_line = |line: serde_json::Value| match serde_json::from_value::<Line>(line) {
        Ok(Line::Progress { what, done, total }) => progress.update(&what, done, total),
        Ok(Line::Record(record)) => println!("{record}"),
        Err(_) => {}
    };
    let served = crate::control::request(&home.control_socket(), &op, &mut on_line).await?;
    let result = match served {
        Some(result) => result,
        None => {
            let node = tokio::task::block_in_place(|| Node::open(home.clone()))?;
            let net = if op.needs_network() {
                let mdns = matches!(&op, Op::Peers) || matches!(&op, Op::Sync { peer, .. } if !peer.starts_with('/'));
                Some(Net::start(&node.identity, &[], mdns, None).await?)
            } else {
                None
            };
            if let Some(net) = &net
                && mdns_wait(&op)
            {
                // Give mDNS a moment to hear the LAN.
                wait_for_discovery(net, &op).await;
            }
            let lock = std::sync::Mutex::new(());
            let ctx = Ctx { node: &node, net: net.as_ref(), enrol_lock: &lock };
            let mut sink = |line: Line| on_line(serde_json::to_value(line).unwrap_or_default());
            let result = ops::execute(&ctx, op.clone(), &mut sink).await;
            if let Some(net) = net {
                net.stop();
            }
            tokio::task::block_in_place(|| node.close())?;
            result?
        }
    };
    progress.finish();
    print_op_result(&cli, &op, &result);
    Ok(())
}

fn mdns_wait(op: &Op) -> bool {
    matches!(op, Op::Peers) || matches!(op, Op::Sync { peer, .. } if !peer.starts_with('/'))
}

async fn wait_for_discovery(net: &Net, op: &Op) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < deadline {
        if let Op::Sync { peer, .. } = op
            && let Ok(id) = crate::identity::parse_peer_id(peer)
            && net.discovered.lock().expect("lock").contains_key(&id)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_result(cli: &Cli, value: &serde_json::Value) {
    if cli.json {
        println!("{value}");
    } else {
        for (k, v) in value.as_object().into_iter().flatten() {
            println!("{}: {}", k.replace('_', " "), v.as_str().map_or(v.to_string(), str::to_owned));
        }
    }
}

fn print_op_result(cli: &Cli, op: &Op, value: &serde_json::Value) {
    if cli.json {
        if !matches!(op, Op::Export { .. }) {
            println!("{value}");
        }
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = match op {
        Op::Export { .. } => Ok(()),
        Op::EnrollToken { .. } => writeln!(out, "{}", value["token"].as_str().unwrap_or_default()),
        Op::Put { .. } | Op::Get { .. } | Op::Delete { .. } | Op::Resolve { .. } => write_record(&mut out, value),
        Op::List { .. } | Op::Conflicts => {
            let list = value.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                let _ = writeln!(out, "(none)");
            }
            list.iter().try_for_each(|r| write_record(&mut out, r))
        }
        Op::Sync { .. } | Op::BundleImport { .. } => {
            let noop = value["noop"].as_bool().unwrap_or(false);
            if noop {
                writeln!(
                    out,
                    "in sync with {}: nothing to do ({} bytes, {} ms)",
                    value["peer"].as_str().unwrap_or("?"),
                    value["bytes_sent"].as_u64().unwrap_or(0) + value["bytes_received"].as_u64().unwrap_or(0),
                    value["duration_ms"]
                )
            } else {
                let _ = if matches!(op, Op::BundleImport { .. }) {
                    writeln!(
                        out,
                        "imported a bundle from {}: received {} (updated {}, skipped {}, conflicts {}, rejected {}); {} bytes, {} ms",
                        value["peer"].as_str().unwrap_or("?"),
                        value["received"],
                        value["updated"],
                        value["skipped"],
                        value["conflicts"],
                        value["rejected"],
                        value["bytes_received"],
                        value["duration_ms"]
                    )
                } else {
                    writeln!(
                        out,
                        "synced with {}: sent {}, received {} (updated {}, skipped {}, conflicts {}, rejected {}); {} bytes out, {} in, {} ms",
                        value["peer"].as_str().unwrap_or("?"),
                        value["sent"],
                        value["received"],
                        value["updated"],
                        value["skipped"],
                        value["conflicts"],
                        value["rejected"],
                        value["bytes_sent"],
                        value["bytes_received"],
                        value["duration_ms"]
                    )
                };
                value["rejections"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .try_for_each(|r| writeln!(out, "  rejected: {}", r.as_str().unwrap_or("?")))
            }
        }
        Op::History => value.as_array().into_iter().flatten().try_for_each(|e| {
            writeln!(
                out,
                "{}  {:8} {:<10} {}  sent {} received {} rejected {}",
                e["started_at"].as_str().unwrap_or("?"),
                e["via"].as_str().unwrap_or("?"),
                e["outcome"].as_str().unwrap_or("?"),
                e["peer"].as_str().map(|p| &p[..p.len().min(16)]).unwrap_or("?"),
                e["sent"],
                e["received"],
                e["rejected"]
            )
        }),
        Op::CertList => value.as_array().into_iter().flatten().try_for_each(|c| {
            writeln!(
                out,
                "{} {} {}{} subject {} read [{}] write [{}] until {}",
                c["certificate_id"].as_str().unwrap_or("?"),
                if c["held"].as_bool() == Some(true) { "held  " } else { "issued" },
                if c["revoked"].as_bool() == Some(true) { "REVOKED " } else { "" },
                c["name"].as_str().unwrap_or(""),
                c["subject"].as_str().unwrap_or("?"),
                join(&c["read"]),
                join(&c["write"]),
                crate::node::iso8601_ms(c["not_after"].as_u64().unwrap_or(0) * 1000)
            )
        }),
        Op::Peers => {
            let list = value.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                let _ = writeln!(out, "no peers found on the LAN");
            }
            list.iter()
                .try_for_each(|p| writeln!(out, "{} {}", p["peer_id"].as_str().unwrap_or("?"), join(&p["addresses"])))
        }
        _ => {
            for (k, v) in value.as_object().into_iter().flatten() {
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Array(a) if a.iter().all(|x| x.is_string()) => join(v),
                    other => other.to_string(),
                };
                let _ = writeln!(out, "{}: {text}", k.replace('_', " "));
            }
            Ok(())
        }
    };
}

fn join(value: &serde_json::Value) -> String {
    value
        .as_array()
        .map(|a| a.iter().map(|x| x.as_str().map_or(x.to_string(), str::to_owned)).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

fn write_record(out: &mut dyn Write, record: &serde_json::Value) -> std::io::Result<()> {
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
        writeln!(
            out,
            "  conflict {}: {what} = {value} (kept from instance {}…)",
            c["n"],
            &c["instance"].as_str().unwrap_or("?")[..8.min(c["instance"].as_str().unwrap_or("?").len())]
        )?;
    }
    Ok(())
}

/// Progress bars when stdout is a terminal; plain lines on stderr otherwise.
pub struct Progress {
    enabled: bool,
    bars: BTreeMap<String, indicatif::ProgressBar>,
}

impl Progress {
    pub fn new(enabled: bool) -> Progress {
        Progress { enabled, bars: BTreeMap::new() }
    }

    pub fn update(&mut self, what: &str, done: u64, total: u64) {
        if !self.enabled {
            eprintln!("progress: {what} {done}/{}", total.max(done));
            return;
        }
        let bar = self.bars.entry(what.to_owned()).or_insert_with(|| {
            let bar = indicatif::ProgressBar::new(total.max(1));
            bar.set_style(
                indicatif::ProgressStyle::with_template("{msg:>9} [{bar:30}] {pos}/{len} ({per_sec}, {eta})")
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
        for bar in self.bars.values() {
            bar.finish_and_clear();
        }
    }
}

/// `main`: parse, run, print a one-line error and exit non-zero on failure.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve { .. }) { "info" } else { "warn" };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("{default_level},libp2p=warn,libp2p_mdns=error"))
        }))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ferry: cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let text = format!("{e:#}").replace('\n', " ");
            eprintln!("ferry: {text}");
            // Below the one-line error, a ferry.toml error shows where it is.
            if let Some(snippet) = e.downcast_ref::<crate::config::TomlError>().and_then(|t| t.snippet()) {
                eprintln!("{snippet}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_parses() {
        for args in [
            vec!["ferry", "init"],
            vec!["ferry", "--json", "id"],
            vec!["ferry", "org", "create", "District"],
            vec![
                "ferry",
                "cert",
                "issue",
                "--subject",
                "x",
                "--read",
                "a,b",
                "--write",
                "a",
                "--types",
                "t=ro",
                "--days",
                "3",
                "--can-issue",
                "--out",
                "f",
            ],
            vec!["ferry", "cert", "import", "f"],
            vec!["ferry", "cert", "list"],
            vec!["ferry", "cert", "revoke", "00"],
            vec!["ferry", "enroll", "token", "--read", "a", "--write", "a", "--ttl", "1h", "--uses", "2"],
            vec!["ferry", "enroll", "ferry-enrol-abc"],
            vec!["ferry", "put", "result", "r1", "--partition", "results", "--set", "a=1", "--unset", "b"],
            vec!["ferry", "import", "-"],
            vec!["ferry", "export", "--type", "result"],
            vec!["ferry", "get", "result", "r1"],
            vec!["ferry", "delete", "result", "r1"],
            vec!["ferry", "list", "--partition", "results"],
            vec!["ferry", "serve", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"],
            vec!["ferry", "sync", "/ip4/127.0.0.1/tcp/1", "--filter", "results", "--pull-only"],
            vec!["ferry", "peers"],
            vec!["ferry", "history"],
            vec!["ferry", "conflicts"],
            vec!["ferry", "resolve", "result", "r1", "--take", "1"],
            vec!["ferry", "bundle", "export", "--out", "b", "--for", "p"],
            vec!["ferry", "bundle", "import", "b"],
            vec!["ferry", "demo"],
        ] {
            let cli = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let _ = to_op(&cli.command);
        }
        assert!(Cli::try_parse_from(["ferry", "sync", "p", "--pull-only", "--push-only"]).is_err());
    }
}
