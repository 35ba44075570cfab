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

mod output;

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
    /// Show progress on stderr even when it is not a terminal.
    #[arg(long, global = true)]
    pub progress: bool,
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
        /// The record type (e.g. result).
        #[arg(value_name = "TYPE")]
        record_type: String,
        /// The record id.
        id: String,
        /// The partition, relative to the org (e.g. results:tc-1).
        #[arg(long)]
        partition: String,
        /// FIELD=VALUE; VALUE is JSON if it parses as JSON, else a string.
        #[arg(long = "set", value_name = "FIELD=VALUE")]
        set: Vec<String>,
        /// A field to remove (repeat for several).
        #[arg(long = "unset", value_name = "FIELD")]
        unset: Vec<String>,
        /// FIELD=PATH: store the file as a blob and set FIELD to its reference.
        #[arg(long = "attach", value_name = "FIELD=PATH")]
        attach: Vec<String>,
        /// The org id (needed when this node belongs to several).
        #[arg(long)]
        org: Option<String>,
    },
    /// Files records reference: write one out, list them, remove unreferenced ones.
    #[command(subcommand)]
    Blob(BlobCommand),
    /// The org's merge policies per record type (synced like data).
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// The keys sealed fields are sealed to: this node's, and the readers' it knows.
    SealingKey(ops::SealingKey),
    /// Bulk write, one JSON record a line (`-` for stdin).
    Import(ops::Import),
    /// Bulk read, one JSON record a line.
    Export(ops::Export),
    /// Read one record.
    Get(ops::RecordRef),
    /// Delete one record.
    Delete(ops::RecordRef),
    /// List records.
    List(ops::List),
    /// Run the node: accept syncs and enrolments, serve the local API.
    Serve {
        /// An address to listen on (repeat for several; default: `listen` in ferry.toml).
        #[arg(long = "listen", value_name = "MULTIADDR")]
        listen: Vec<String>,
        /// Neither announce this node on the LAN nor look for peers there.
        #[arg(long)]
        no_mdns: bool,
        /// Serve the HTTP API on this IP:PORT (default: `http` in ferry.toml;
        /// none). Use 127.0.0.1 unless other machines must reach it.
        #[arg(long, value_name = "IP:PORT")]
        http: Option<String>,
    },
    /// One sync with a peer (a multiaddr, or a peer id found by mDNS).
    Sync(ops::Sync),
    /// Peers found on the LAN.
    Peers,
    /// What a serving node is doing: peers with their last sync, sessions in flight.
    Status,
    /// The web console's URL, with a one-time login for the browser (needs
    /// a node serving HTTP on this home).
    Console,
    /// The sync ledger.
    History(ops::History),
    /// The change feed: every record changed after a cursor, in order.
    Changes(ops::Changes),
    /// Records holding conflicts.
    Conflicts,
    /// Verify every stored value's checksum, every record and every retained
    /// signature; `--repair` drops what is damaged so peers send it again.
    Check(ops::Check),
    /// Resolve a record's conflicts.
    Resolve {
        /// The record type.
        #[arg(value_name = "TYPE")]
        record_type: String,
        /// The record id.
        id: String,
        /// Take conflict N (as numbered by `ferry conflicts`).
        #[arg(long, conflicts_with = "set")]
        take: Option<usize>,
        /// FIELD=VALUE to write instead (resolves every conflict seen).
        #[arg(long = "set", value_name = "FIELD=VALUE")]
        set: Vec<String>,
        /// The partition, when the id exists in several.
        #[arg(long)]
        partition: Option<String>,
        /// The org id (needed when this node belongs to several).
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
    Create(ops::OrgCreate),
}

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Issue a certificate within this node's own scope.
    Issue(ops::CertIssue),
    /// Hold a certificate issued to this node.
    Import {
        /// A PEM file written by `ferry cert issue`.
        file: PathBuf,
    },
    /// Certificates held and issued.
    List,
    /// Revoke a certificate this node issued.
    Revoke(ops::CertRevoke),
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
    Token(ops::EnrollToken),
}

#[derive(Subcommand, Debug)]
pub enum ProfileCommand {
    /// Set a record type's policy (what is not given stays).
    Set(ops::ProfileSet),
    /// The policies in force, per record type.
    Show(ops::ProfileShow),
}

#[derive(Subcommand, Debug)]
pub enum BlobCommand {
    /// Write a held blob to a file (checked against its hash on the way).
    Get(ops::BlobGet),
    /// Every blob referenced or held: hash, size, state, records referencing it.
    List,
    /// Remove the blobs no record references any more.
    Gc,
}

#[derive(Subcommand, Debug)]
pub enum BundleCommand {
    /// Write the changes a peer lacks to a file.
    Export(ops::BundleExport),
    /// Ingest a bundle exactly like a sync.
    Import(ops::BundleImport),
    /// Write what this node holds, so the next bundle for it is a delta.
    Frontier(ops::BundleFrontier),
}

fn parse_assignments(items: &[String]) -> anyhow::Result<BTreeMap<String, serde_json::Value>> {
    items
        .iter()
        .map(|item| {
            let (k, v) = item.split_once('=').with_context(|| format!("--set {item:?}: expected FIELD=VALUE"))?;
            let value = crate::json::parse_cli_value(v).map_err(|e| anyhow::anyhow!("--set {k}: {e}"))?;
            Ok((k.to_owned(), crate::json::to_json(&value)))
        })
        .collect()
}

/// `put --attach FIELD=PATH`: stores each file in the home's blob store
/// (any process may: blobs are named by their hash and renamed into place
/// whole) and sets FIELD to its reference.
async fn attach_files(
    home: &Home,
    attach: &[String],
    set: &mut BTreeMap<String, serde_json::Value>,
    progress: &mut output::Progress,
) -> anyhow::Result<()> {
    for item in attach {
        let (field, path) = item.split_once('=').with_context(|| format!("--attach {item:?}: expected FIELD=PATH"))?;
        if set.contains_key(field) {
            bail!("--attach {field}: the field is also given with --set");
        }
        let (blobs, path) = (crate::blobs::Blobs::new(home.blobs_dir()), PathBuf::from(path));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, u64)>(16);
        let adding = crate::pool::blocking(move || {
            blobs.add_file(&path, &mut |done, total| {
                let _ = tx.try_send((done, total));
            })
        });
        tokio::pin!(adding);
        let reference = loop {
            tokio::select! {
                result = &mut adding => break result.with_context(|| format!("--attach {field}"))?,
                Some((done, total)) = rx.recv() => progress.update("attached bytes", done, total),
            }
        };
        set.insert(field.to_owned(), crate::json::to_json(&reference.to_value()));
    }
    Ok(())
}

/// Turns a command into the operation it performs (or `None` for those that
/// run on their own: init, serve, demo, bench).
fn to_op(command: &Command) -> anyhow::Result<Option<Op>> {
    Ok(Some(match command {
        Command::Init { .. } | Command::Serve { .. } | Command::Demo { .. } | Command::Bench(_) => return Ok(None),
        Command::Id => Op::Id,
        Command::Org(OrgCommand::Create(args)) => Op::OrgCreate(args.clone()),
        Command::Cert(CertCommand::Issue(args)) => Op::CertIssue(args.clone()),
        Command::Cert(CertCommand::Import { file }) => {
            let pem = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            Op::CertImport { pem }
        }
        Command::Cert(CertCommand::List) => Op::CertList,
        Command::Cert(CertCommand::Revoke(args)) => Op::CertRevoke(args.clone()),
        Command::Enroll(EnrollArgs { action: Some(EnrollCommand::Token(args)), .. }) => Op::EnrollToken(args.clone()),
        Command::Enroll(EnrollArgs { action: None, token: Some(token), name }) => {
            Op::Enroll { token: token.clone(), name: name.clone() }
        }
        Command::Enroll(_) => bail!("give a token (`ferry enroll TOKEN`) or make one (`ferry enroll token --org …`)"),
        // `--set` and `--unset` are FIELD=VALUE texts here, a map and a set
        // in the request.
        Command::Put { record_type, id, partition, set, unset, org, .. } => Op::Put {
            org: org.clone(),
            record_type: record_type.clone(),
            id: id.clone(),
            partition: partition.clone(),
            set: parse_assignments(set)?,
            unset: unset.iter().cloned().collect::<BTreeSet<_>>(),
        },
        Command::Import(args) => Op::Import(args.clone()),
        Command::Export(args) => Op::Export(args.clone()),
        Command::Get(args) => Op::Get(args.clone()),
        Command::Delete(args) => Op::Delete(args.clone()),
        Command::List(args) => Op::List(args.clone()),
        Command::Sync(args) => Op::Sync(args.clone()),
        Command::Peers => Op::Peers,
        Command::Status => Op::Status,
        Command::Console => Op::Console,
        Command::History(args) => Op::History(args.clone()),
        Command::Changes(args) => Op::Changes(args.clone()),
        Command::Conflicts => Op::Conflicts,
        Command::Check(args) => Op::Check(args.clone()),
        Command::Resolve { record_type, id, take, set, partition, org } => Op::Resolve {
            org: org.clone(),
            record_type: record_type.clone(),
            id: id.clone(),
            partition: partition.clone(),
            take: *take,
            set: parse_assignments(set)?,
        },
        Command::Bundle(BundleCommand::Export(args)) => Op::BundleExport(args.clone()),
        Command::Bundle(BundleCommand::Import(args)) => Op::BundleImport(args.clone()),
        Command::Bundle(BundleCommand::Frontier(args)) => Op::BundleFrontier(args.clone()),
        Command::Blob(BlobCommand::Get(args)) => Op::BlobGet(args.clone()),
        Command::Blob(BlobCommand::List) => Op::BlobList,
        Command::Blob(BlobCommand::Gc) => Op::BlobGc,
        Command::Profile(ProfileCommand::Set(args)) => Op::ProfileSet(args.clone()),
        Command::Profile(ProfileCommand::Show(args)) => Op::ProfileShow(args.clone()),
        Command::SealingKey(args) => Op::SealingKey(args.clone()),
    }))
}

/// Runs the command line; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let home = Home::resolve(cli.home.clone());
    let mut stdout = output::Stdout::new();
    match &cli.command {
        Command::Init { store } => {
            let backend = store
                .as_deref()
                .map(|s| engine::BackendKind::parse(s).with_context(|| format!("--store {s:?}: use redb or sled")))
                .transpose()?;
            let out = {
                let home = home.clone();
                crate::pool::blocking(move || crate::node::init(&home, backend)).await?
            };
            output::print_result(&mut stdout, cli.json, &out).and_then(|()| stdout.flush()).context(WRITE_FAILED)?;
            return Ok(());
        }
        Command::Serve { listen, no_mdns, http } => {
            let printer = crate::serve::Printer::new(cli.json);
            return crate::serve::serve(home, listen.clone(), *no_mdns, http.clone(), printer).await;
        }
        Command::Demo { .. } if cli.json => bail!("demo has no JSON output; run it without --json"),
        Command::Demo { keep } => return crate::demo::run(*keep).await,
        Command::Bench(args) => return crate::bench::run(args, cli.json).await,
        _ => {}
    }
    home.require_initialized()?;
    let mut op = to_op(&cli.command)?.expect("handled above");
    // What an import reads goes through a temporary file the server can
    // read, unless it is a regular file (stdin, a pipe, /dev/stdin).
    let _buffered;
    if let Op::Import(ops::Import { path, .. }) = &mut op {
        let (file, buffer) = import_source(&home, path)?;
        *path = file;
        _buffered = buffer;
    }
    op.absolutize();
    let mut progress = output::Progress::new(cli.json, cli.progress);
    if let (Command::Put { attach, .. }, Op::Put { set, .. }) = (&cli.command, &mut op) {
        attach_files(&home, attach, set, &mut progress).await?;
    }
    // A write that fails (other than a closed pipe) is kept, the operation
    // finishes and the store closes, then the failure is the command's.
    let mut write_failure: Option<std::io::Error> = None;
    let mut on_line = |line: serde_json::Value| match serde_json::from_value::<Line>(line) {
        Ok(Line::Progress { what, done, total }) => progress.update(&what, done, total),
        Ok(Line::Record(record)) => {
            if write_failure.is_none()
                && let Err(e) = writeln!(stdout, "{record}")
            {
                write_failure = Some(e);
            }
        }
        Err(_) => {}
    };
    let served = crate::control::request(&home.control_socket(), &op, &mut on_line).await?;
    let result = match served {
        Some(result) => result,
        None => {
            let node = Node::open_shared(home.clone()).await?;
            let result = run_here(&node, &op, &mut on_line).await;
            // The operation's own failure (a full disk, say) is the one to
            // show, not a failure to close after it.
            let closed = Node::close_shared(node).await;
            let result = result?;
            closed?;
            result
        }
    };
    progress.finish();
    if let Some(e) = write_failure {
        return Err(e).context(WRITE_FAILED);
    }
    output::print_op_result(&mut stdout, cli.json, &op, &result).and_then(|()| stdout.flush()).context(WRITE_FAILED)?;
    if let Op::Check(ops::Check { repair: false }) = op
        && let Some(damaged) = result["damaged"].as_array().filter(|d| !d.is_empty())
    {
        bail!(
            "the store is damaged ({} entries); run `ferry check --repair`: peers send what it drops again",
            damaged.len()
        );
    }
    if let Op::Import { .. } = op {
        import_verdict(&result)?;
    }
    Ok(())
}

const WRITE_FAILED: &str = "cannot write the output";

/// Runs an operation in this process, on a store it opened (no node serves
/// this home), with a temporary network node if the operation needs one.
async fn run_here(
    node: &std::sync::Arc<Node>,
    op: &Op,
    on_line: &mut (dyn FnMut(serde_json::Value) + Send),
) -> anyhow::Result<serde_json::Value> {
    let net = if op.needs_network() {
        let mdns = matches!(op, Op::Peers) || matches!(op, Op::Sync(ops::Sync { peer, .. }) if !peer.starts_with('/'));
        Some(Net::start(&node.identity, &[], mdns, None).await?)
    } else {
        None
    };
    if let Some(net) = &net
        && mdns_wait(op)
    {
        // Give mDNS a moment to hear the LAN.
        wait_for_discovery(net, op).await;
    }
    let lock = std::sync::Arc::new(std::sync::Mutex::new(()));
    let ctx = Ctx { node, net: net.as_ref(), enrol_lock: &lock, status: None };
    let mut sink = |line: Line| on_line(serde_json::to_value(line).unwrap_or_default());
    let result = ops::execute(&ctx, op.clone(), &mut sink).await;
    if let Some(net) = net {
        net.stop();
    }
    result
}

/// The file an import reads: a regular file as it is (resolved, so that
/// `/dev/stdin` redirected from a file names that file, not the server's
/// stdin), anything else (`-`, a pipe, a terminal) copied to a temporary
/// file in the home first: it can be read only once, and only here.
fn import_source(home: &Home, path: &std::path::Path) -> anyhow::Result<(PathBuf, Option<tempfile::NamedTempFile>)> {
    let stdin = path.as_os_str() == "-";
    if !stdin {
        let metadata = std::fs::metadata(path).with_context(|| format!("cannot open {}", path.display()))?;
        if metadata.is_file() {
            let resolved = std::fs::canonicalize(path).with_context(|| format!("cannot open {}", path.display()))?;
            return Ok((resolved, None));
        }
    }
    let buffer = tempfile::NamedTempFile::new_in(&home.dir).context("cannot buffer the input")?;
    let copied = if stdin {
        std::io::copy(&mut std::io::stdin().lock(), &mut buffer.as_file())
    } else {
        std::fs::File::open(path).and_then(|mut input| std::io::copy(&mut input, &mut buffer.as_file()))
    };
    copied
        .with_context(|| format!("cannot read {}", if stdin { "stdin".into() } else { path.display().to_string() }))?;
    Ok((buffer.path().to_path_buf(), Some(buffer)))
}

/// An import that refused lines fails, after printing the counts and the
/// reasons, so a script never mistakes it for a complete one.
fn import_verdict(result: &serde_json::Value) -> anyhow::Result<()> {
    let rejected = result["rejected"].as_u64().unwrap_or(0);
    if rejected == 0 {
        return Ok(());
    }
    for reason in result["rejections"].as_array().into_iter().flatten() {
        output::warn(&format!("rejected: {}", reason.as_str().unwrap_or("?")));
    }
    let shown = result["rejections"].as_array().map_or(0, Vec::len) as u64;
    let more = if rejected > shown { format!(" (the first {shown} shown)") } else { String::new() };
    bail!(
        "{rejected} line{} rejected{more}, {} written, {} unchanged: fix the rejected lines and import again (lines already written are skipped)",
        if rejected == 1 { " was" } else { "s were" },
        result["written"],
        result["unchanged"]
    )
}

fn mdns_wait(op: &Op) -> bool {
    matches!(op, Op::Peers) || matches!(op, Op::Sync(ops::Sync { peer, .. }) if !peer.starts_with('/'))
}

/// How long a command that looks on the LAN waits for mDNS at most.
const DISCOVERY_WAIT: Duration = Duration::from_secs(6);
/// `ferry peers` lists what it has found once no new peer has answered for
/// this long (the answers to one mDNS query come within a fraction of it).
const DISCOVERY_QUIET: Duration = Duration::from_secs(1);

/// Waits, woken by each discovery, until the peer a sync names is found,
/// or, for `ferry peers`, until the LAN has gone quiet after answering; at
/// most `DISCOVERY_WAIT` either way.
async fn wait_for_discovery(net: &Net, op: &Op) {
    let deadline = tokio::time::Instant::now() + DISCOVERY_WAIT;
    let mut discovered = net.watch_discovered();
    if let Op::Sync(ops::Sync { peer, .. }) = op {
        if let Ok(id) = crate::identity::parse_peer_id(peer) {
            let _ = tokio::time::timeout_at(deadline, discovered.wait_for(|found| found.contains_key(&id))).await;
        }
        return;
    }
    let mut quiet_from: Option<tokio::time::Instant> = None;
    loop {
        let until = quiet_from.map_or(deadline, |at| (at + DISCOVERY_QUIET).min(deadline));
        match tokio::time::timeout_at(until, discovered.changed()).await {
            Ok(Ok(())) if !discovered.borrow_and_update().is_empty() => {
                quiet_from = Some(tokio::time::Instant::now());
            }
            Ok(Ok(())) => {}
            // The deadline or the quiet period passed, or the network stopped.
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

/// `main`: parse, run, print a one-line error and exit non-zero on failure.
pub fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A value an argument's parser refused (an empty `--read`, a bad
        // `--ttl`) is one line, like every other error.
        Err(e) if e.kind() == clap::error::ErrorKind::ValueValidation => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            output::warn(&format!("ferry: {}", first.strip_prefix("error: ").unwrap_or(first)));
            return std::process::ExitCode::FAILURE;
        }
        Err(e) => e.exit(),
    };
    let default_level = if matches!(cli.command, Command::Serve { .. }) { "info" } else { "warn" };
    // quinn_udp warns of every datagram a route refused: QUIC trying a
    // peer's address that is behind its NAT is expected, not news.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("{default_level},libp2p=warn,libp2p_mdns=error,quinn_udp=error"))
        }))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    // A storage backend that panics on a damaged file is caught at the
    // store's seam and reported as damage in one line; its panic text would
    // only repeat that, in a backtrace-shaped form.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_backend = info.location().is_some_and(|l| l.file().contains("/redb-") || l.file().contains("/sled-"));
        if !in_backend {
            default_hook(info);
        }
    }));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            output::warn(&format!("ferry: cannot start: {e}"));
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            output::warn(&format!("ferry: {}", format!("{e:#}").replace('\n', " ")));
            // Below the one-line error, a ferry.toml error shows where it is.
            if let Some(snippet) = e.downcast_ref::<crate::config::TomlError>().and_then(|t| t.snippet()) {
                output::warn(&snippet);
            }
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests;
