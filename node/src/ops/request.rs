//! `Op`: one request of the local API (docs/api.md), and the same request
//! as the command line parses it. Each payload derives both `serde` (the
//! control socket's JSON) and `clap::Args` (the `ferry` command), so a
//! command becomes its request without copying field by field; only `put`,
//! `resolve`, `enroll` and `cert import` are shaped differently on the
//! command line (`cli::to_op` converts them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use clap::{ArgAction, Args};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Id,
    OrgCreate(OrgCreate),
    CertIssue(CertIssue),
    CertImport {
        pem: String,
    },
    CertList,
    CertRevoke(CertRevoke),
    EnrollToken(EnrollToken),
    Enroll {
        token: String,
        name: Option<String>,
    },
    Put {
        org: Option<String>,
        #[serde(rename = "type")]
        record_type: String,
        id: String,
        partition: String,
        #[serde(default)]
        set: BTreeMap<String, serde_json::Value>,
        #[serde(default)]
        unset: BTreeSet<String>,
    },
    Get(RecordRef),
    Delete(RecordRef),
    List(List),
    Import(Import),
    Export(Export),
    Conflicts,
    /// `ferry check [--repair]`.
    Check(Check),
    Resolve {
        org: Option<String>,
        #[serde(rename = "type")]
        record_type: String,
        id: String,
        partition: Option<String>,
        take: Option<usize>,
        #[serde(default)]
        set: BTreeMap<String, serde_json::Value>,
    },
    History(History),
    Sync(Sync),
    Peers,
    BundleExport(BundleExport),
    BundleImport(BundleImport),
    BundleFrontier(BundleFrontier),
    ProfileSet(ProfileSet),
    ProfileShow(ProfileShow),
    /// `ferry sealing-key show|rotate`.
    SealingKey(SealingKey),
    BlobGet(BlobGet),
    BlobList,
    BlobGc,
    /// The change feed after a cursor (`node/src/node/feed.rs`).
    Changes(Changes),
    /// Serving nodes only: a stream of events until the client hangs up.
    Watch,
    /// Serving nodes only: identity, certificates, peers with their last
    /// sync, sessions in flight (`status::Status`).
    Status,
    /// Serving nodes only, with HTTP: the web console's URL with a
    /// one-time login (`logins.rs`).
    Console,
}

#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct OrgCreate {
    /// The organisation's name.
    pub name: String,
    /// An authority tag for this node's own certificate (e.g. central).
    #[arg(long)]
    pub authority: Option<String>,
}

#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct CertIssue {
    /// The org id (needed when this node belongs to several).
    #[arg(long)]
    pub org: Option<String>,
    /// The peer id of the node the certificate is for.
    #[arg(long)]
    pub subject: String,
    /// Partitions it may read, comma-separated (`*`: the whole org).
    #[arg(long, value_parser = scope_text)]
    #[serde(default)]
    pub read: Option<String>,
    /// Partitions it may write, comma-separated (`*`: the whole org).
    #[arg(long, value_parser = scope_text)]
    #[serde(default)]
    pub write: Option<String>,
    /// Type modes, comma-separated TYPE=MODE (ro, update-only, wo, none).
    #[arg(long, default_value = "")]
    #[serde(default)]
    pub types: String,
    /// Days the certificate is valid (at least 1).
    #[arg(long, default_value_t = 365)]
    pub days: u64,
    /// Let the subject issue certificates within its own scope.
    #[arg(long)]
    #[serde(default)]
    pub can_issue: bool,
    /// An authority tag (merge policies can let its edits win).
    #[arg(long)]
    pub authority: Option<String>,
    /// A name for the subject in the certificate.
    #[arg(long)]
    pub name: Option<String>,
    /// Where to write the certificate chain (PEM).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct CertRevoke {
    /// The certificate id (as `ferry cert list` shows it).
    #[arg(value_name = "CERTIFICATE_ID")]
    pub id: String,
}

#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct EnrollToken {
    /// The org id (needed when this node belongs to several).
    #[arg(long)]
    pub org: Option<String>,
    /// Partitions the device may read, comma-separated (`*`: the whole org).
    #[arg(long, value_parser = scope_text)]
    #[serde(default)]
    pub read: Option<String>,
    /// Partitions the device may write, comma-separated (`*`: the whole org).
    #[arg(long, value_parser = scope_text)]
    #[serde(default)]
    pub write: Option<String>,
    /// Type modes, comma-separated TYPE=MODE (ro, update-only, wo, none).
    #[arg(long, default_value = "")]
    #[serde(default)]
    pub types: String,
    /// How long the token stays usable (30s, 15m, 2h, 7d).
    #[arg(long = "ttl", value_name = "TTL", default_value = "1d", value_parser = seconds)]
    pub ttl_s: u64,
    /// How many nodes may enrol with it.
    #[arg(long, default_value_t = 1)]
    pub uses: u32,
    /// How long certificates issued with it are valid.
    #[arg(long, default_value_t = 365)]
    pub days: u64,
    /// Let enrolled nodes issue certificates within their own scope.
    #[arg(long)]
    #[serde(default)]
    pub can_issue: bool,
    /// An authority tag for the enrolled nodes' certificates.
    #[arg(long)]
    pub authority: Option<String>,
}

/// `ferry changes`: a page of the change feed.
#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct Changes {
    /// The org id (needed when this node belongs to several).
    #[arg(long)]
    pub org: Option<String>,
    /// The last cursor already read (0: from the start).
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub since: u64,
    /// Only records of this type.
    #[arg(long = "type", value_name = "TYPE")]
    #[serde(rename = "type", default)]
    pub record_type: Option<String>,
    /// Only records in this partition (or inside it).
    #[arg(long)]
    #[serde(default)]
    pub partition: Option<String>,
    /// Entries at most (1 to 1000; default 100).
    #[arg(long)]
    #[serde(default)]
    pub limit: Option<usize>,
    /// When nothing follows the cursor, wait this long for a change
    /// (a long poll) before answering with no entries.
    #[arg(long, value_name = "MS")]
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// One record, by type and id (`get`, `delete`).
#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct RecordRef {
    /// The record type.
    #[arg(value_name = "TYPE")]
    #[serde(rename = "type")]
    pub record_type: String,
    /// The record id.
    pub id: String,
    /// The partition, when the id exists in several.
    #[arg(long)]
    pub partition: Option<String>,
    /// The org id (needed when this node belongs to several).
    #[arg(long)]
    pub org: Option<String>,
}

#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct List {
    /// Only records of this type.
    #[arg(long = "type")]
    #[serde(rename = "type")]
    pub record_type: Option<String>,
    /// Only records in this partition and below.
    #[arg(long)]
    pub partition: Option<String>,
    /// Include deleted records.
    #[arg(long)]
    #[serde(default)]
    pub deleted: bool,
    /// The org id (default: every org this node belongs to).
    #[arg(long)]
    pub org: Option<String>,
}

#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct Import {
    /// An NDJSON file, or `-` for stdin.
    #[arg(value_name = "FILE")]
    pub path: PathBuf,
    /// The org id (needed when this node belongs to several).
    #[arg(long)]
    pub org: Option<String>,
}

#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct Export {
    /// Only records of this type.
    #[arg(long = "type")]
    #[serde(rename = "type")]
    pub record_type: Option<String>,
    /// Only records in this partition and below.
    #[arg(long)]
    pub partition: Option<String>,
    /// The org id (needed when this node belongs to several).
    #[arg(long)]
    pub org: Option<String>,
}

#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct Check {
    /// Drop damaged entries and lower the frontiers that covered them,
    /// so the next sync fetches them again from any peer.
    #[arg(long)]
    #[serde(default)]
    pub repair: bool,
}

#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct Sync {
    /// A multiaddr (/ip4/…/tcp/…/p2p/…), or a peer id found on the LAN.
    pub peer: String,
    /// The org id (needed when this node belongs to several).
    #[arg(long)]
    pub org: Option<String>,
    /// Sync only this partition and below (repeat, or separate with commas).
    #[arg(long = "filter", value_name = "P")]
    #[serde(default)]
    pub filters: Vec<String>,
    /// Only send this node's changes.
    #[arg(long = "push-only", action = ArgAction::SetFalse, conflicts_with = "push")]
    #[serde(default = "yes")]
    pub pull: bool,
    /// Only receive the peer's changes.
    #[arg(long = "pull-only", action = ArgAction::SetFalse)]
    #[serde(default = "yes")]
    pub push: bool,
    /// Sync only these record types (repeat, or separate with commas);
    /// narrows the sync, never widens a scope.
    #[arg(long = "types", value_name = "T")]
    #[serde(default)]
    pub types: Vec<String>,
    /// Sync every type but these (repeat, or separate with commas).
    #[arg(long = "skip-types", value_name = "T")]
    #[serde(default)]
    pub skip_types: Vec<String>,
}

#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct BundleExport {
    /// The org id (needed when this node belongs to several).
    #[arg(long)]
    pub org: Option<String>,
    /// The bundle file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// From what we held in common after the last sync with this peer.
    #[arg(long = "for", value_name = "PEER_ID", conflicts_with = "since")]
    pub for_peer: Option<String>,
    /// From a frontier file the receiver wrote (`ferry bundle frontier`).
    #[arg(long, value_name = "FRONTIER_FILE")]
    pub since: Option<PathBuf>,
    /// Only this partition and below (repeat, or separate with commas).
    #[arg(long = "filter", value_name = "P")]
    #[serde(default)]
    pub filters: Vec<String>,
}

#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct BundleImport {
    /// A bundle written by `ferry bundle export`.
    #[arg(value_name = "FILE")]
    pub path: PathBuf,
}

#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct BundleFrontier {
    /// The org id (needed when this node belongs to several).
    #[arg(long)]
    pub org: Option<String>,
    /// The frontier file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Only this partition and below (repeat, or separate with commas).
    #[arg(long = "filter", value_name = "P")]
    #[serde(default)]
    pub filters: Vec<String>,
}

#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct ProfileSet {
    /// The org id (needed when this node belongs to several).
    #[arg(long)]
    pub org: Option<String>,
    /// The record type the policy is for.
    #[arg(value_name = "TYPE")]
    #[serde(rename = "type")]
    pub record_type: String,
    /// Which of two concurrent values of a field wins: newest, authority:TAG, or
    /// skip (neither: the field keeps the value both writers had seen, and
    /// both new values wait as conflicts).
    #[arg(long)]
    pub policy: Option<String>,
    /// A delete concurrent with an update wins (the default).
    #[arg(long, conflicts_with = "update_wins")]
    #[serde(default)]
    pub delete_wins: bool,
    /// An update concurrent with a delete wins.
    #[arg(long)]
    #[serde(default)]
    pub update_wins: bool,
    /// Fields kept only on the node that writes them, comma-separated
    /// (replaces the list; `--local ""` clears it).
    #[arg(long, value_name = "F,…")]
    #[serde(default)]
    pub local: Option<String>,
    /// Offer a record to peers only once FIELD holds VALUE (true, false, a
    /// whole number or a text); `--send-when ""` sends every record again.
    #[arg(long, value_name = "FIELD=VALUE")]
    #[serde(default)]
    pub send_when: Option<String>,
    /// On nodes whose certificate gives the type `wo`, remove a record once
    /// a node with authority TAG acknowledged it; `--evict-after-ack ""`
    /// keeps every record.
    #[arg(long, value_name = "TAG")]
    #[serde(default)]
    pub evict_after_ack: Option<String>,
    /// Fields sealed to the readers' keys, comma-separated (replaces the
    /// list; `--sealed ""` clears it). Needs --readers.
    #[arg(long, value_name = "F,…")]
    #[serde(default)]
    pub sealed: Option<String>,
    /// The authority tag whose nodes can read the sealed fields (they
    /// publish their keys in the org).
    #[arg(long, value_name = "TAG")]
    #[serde(default)]
    pub readers: Option<String>,
}

#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct SealingKey {
    /// The org id (needed when this node belongs to several).
    #[arg(long)]
    pub org: Option<String>,
    /// Make a new key pair and publish it: values written from now on are
    /// sealed to it, older ones still open with the older keys.
    #[arg(long)]
    #[serde(default)]
    pub rotate: bool,
}

#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct ProfileShow {
    /// The org id (needed when this node belongs to several).
    #[arg(long)]
    pub org: Option<String>,
}

#[derive(Args, Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct History {
    /// Also list the records each sync sent and received.
    #[arg(long)]
    pub records: bool,
}

#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct BlobGet {
    /// The blob's hash (64 hex digits, as `ferry blob list` shows it).
    #[arg(value_name = "HASH")]
    pub hash: String,
    /// The file to write.
    #[arg(long)]
    pub out: PathBuf,
}

fn yes() -> bool {
    true
}

/// A `--read` or `--write` as given. An empty text given on purpose
/// (`--read ""`) is refused: it reads as "the whole org" and grants nothing.
fn scope_text(text: &str) -> Result<String, String> {
    if text.split(',').all(|p| p.trim().is_empty()) {
        return Err(format!("{text:?} names no partition: name some (results:tc-1,tests), or the whole org with '*'"));
    }
    Ok(text.to_owned())
}

/// A duration (30s, 15m, 2h, 7d) in seconds.
fn seconds(text: &str) -> Result<u64, String> {
    crate::config::parse_duration(text).map(|d| d.as_secs()).map_err(|e| format!("{e:#}"))
}

/// A line of output before the result: progress, or an exported record.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Line {
    Progress { what: String, done: u64, total: u64 },
    Record(serde_json::Value),
}

impl Op {
    /// Whether this operation needs the network (a temporary one is started
    /// when no node is serving).
    pub fn needs_network(&self) -> bool {
        // Not EnrollToken: a token must name addresses of a node that stays
        // up to answer it, so it needs `ferry serve`, not a passing network.
        matches!(self, Op::Sync(_) | Op::Peers | Op::Enroll { .. })
    }

    /// Paths in the request, made absolute (the server's working directory
    /// is not the client's).
    pub fn absolutize(&mut self) {
        let fix = |p: &mut PathBuf| {
            if let Ok(abs) = std::path::absolute(&*p) {
                *p = abs;
            }
        };
        match self {
            Op::CertIssue(CertIssue { out, .. })
            | Op::BundleExport(BundleExport { out, .. })
            | Op::BundleFrontier(BundleFrontier { out, .. })
            | Op::BlobGet(BlobGet { out, .. }) => fix(out),
            Op::Import(Import { path, .. }) | Op::BundleImport(BundleImport { path }) => fix(path),
            _ => {}
        }
        if let Op::BundleExport(BundleExport { since: Some(since), .. }) = self {
            fix(since);
        }
    }
}
