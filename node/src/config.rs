//! `ferry.toml`: what a node listens on, which peers it knows and syncs with
//! on its own (SENAITE's auto-sync, TAO's cron), batch size (TAO's chunk
//! size), and the store backend.
//!
//! ```toml
//! listen = ["/ip4/0.0.0.0/tcp/4040", "/ip4/0.0.0.0/udp/4040/quic-v1"]
//! mdns = true
//! store = "redb"              # or "sled"
//! batch_changes = 4096
//! window = 1                  # batches in flight when sending: 1 or 2
//!
//! relay_server = false      # true on a central: relay and rendezvous for its orgs
//! relays = []                 # more relays than the one enrolment names
//!
//! [relay_limits]              # only read with relay_server = true
//! max_reservations = 1024
//! max_reservations_per_peer = 4
//! reservation_duration = "1h"
//! max_circuits = 64
//! max_circuits_per_peer = 8
//! max_circuit_duration = "30m"
//! max_circuit_bytes = 1073741824
//!
//! [[peers]]
//! name = "central"
//! address = "/ip4/10.0.0.1/tcp/4040/p2p/12D3KooW…"
//! filters = ["results:tc-1"]  # relative to the org, or absolute
//! org = "…"                   # needed when this node is in several orgs
//! sync_every = "15m"          # automatic sync while serving; absent = never
//! pull = true
//! push = true
//! types = ["sample", "analysis"]  # only these types; absent = every type
//! skip_types = ["client"]         # never these types
//! ```

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context;
use engine::BackendKind;
use engine::region::TypeRules;
use partitions::RecordType;
use serde::{Deserialize, Serialize};

use crate::home::Home;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    #[serde(default = "yes")]
    pub mdns: bool,
    #[serde(default = "default_store")]
    pub store: String,
    /// Changes per sync batch, and records per durable commit of an import.
    #[serde(default = "default_batch")]
    pub batch_changes: usize,
    /// Batches kept unacknowledged when sending: 1 (an interrupted transfer
    /// resends at most one batch) or 2 (one round trip less per batch on a
    /// slow link, up to two batches resent).
    #[serde(default = "default_window")]
    pub window: usize,
    /// A session fails when its peer says nothing (or takes nothing) for
    /// this long; also the time a new stream has to say Hello.
    #[serde(default = "default_session_timeout")]
    pub session_timeout: String,
    /// Where `ferry serve` serves the HTTP API and the console (`IP:PORT`);
    /// none unless set here or by `--http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// Entries the change feed keeps (default
    /// `engine::limits::FEED_ENTRIES_MAX`); an app further behind reads the
    /// records again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed_entries: Option<u64>,
    /// Left out of a written file when empty: `ferry init` writing
    /// `peers = []` made the guide's `[[peers]]` block a duplicate key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerConfig>,
    /// Programs the node runs around syncs (`hooks.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookConfig>,
    /// Serve as a circuit relay and rendezvous point for the members of
    /// this node's orgs (`meet.rs`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub relay_server: bool,
    /// Relays to register with besides the one enrolment names, as
    /// multiaddrs ending in `/p2p/PEER_ID`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<String>,
    /// What a relay server lets its members use.
    #[serde(default, skip_serializing_if = "RelayLimits::is_default")]
    pub relay_limits: RelayLimits,
}

/// `[relay_limits]`: bounds on what a relay server hands out. The defaults
/// let a device behind a NAT carry a whole sync of a school's results (the
/// libp2p defaults, 128 KiB and 2 minutes per circuit, do not).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayLimits {
    pub max_reservations: usize,
    pub max_reservations_per_peer: usize,
    pub reservation_duration: String,
    pub max_circuits: usize,
    pub max_circuits_per_peer: usize,
    pub max_circuit_duration: String,
    pub max_circuit_bytes: u64,
}

impl Default for RelayLimits {
    fn default() -> RelayLimits {
        RelayLimits {
            max_reservations: 1024,
            max_reservations_per_peer: 4,
            reservation_duration: "1h".into(),
            max_circuits: 64,
            max_circuits_per_peer: 8,
            max_circuit_duration: "30m".into(),
            max_circuit_bytes: 1 << 30,
        }
    }
}

impl RelayLimits {
    fn is_default(&self) -> bool {
        *self == RelayLimits::default()
    }

    pub fn reservation_duration(&self) -> Duration {
        parse_duration(&self.reservation_duration).unwrap_or(Duration::from_secs(3600))
    }

    pub fn max_circuit_duration(&self) -> Duration {
        parse_duration(&self.max_circuit_duration).unwrap_or(Duration::from_secs(1800))
    }

    fn check(&self) -> anyhow::Result<()> {
        for (name, value) in [
            ("max_reservations", self.max_reservations),
            ("max_reservations_per_peer", self.max_reservations_per_peer),
            ("max_circuits", self.max_circuits),
            ("max_circuits_per_peer", self.max_circuits_per_peer),
        ] {
            if value == 0 {
                anyhow::bail!("relay_limits.{name} must be at least 1");
            }
        }
        if self.max_circuit_bytes == 0 {
            anyhow::bail!("relay_limits.max_circuit_bytes must be at least 1");
        }
        for (name, text) in
            [("reservation_duration", &self.reservation_duration), ("max_circuit_duration", &self.max_circuit_duration)]
        {
            if parse_duration(text).with_context(|| format!("relay_limits.{name}"))?.is_zero() {
                anyhow::bail!("relay_limits.{name} must be at least 1s");
            }
        }
        Ok(())
    }
}

/// A `[[hooks]]` entry: `run` (program and arguments) with one JSON object
/// on stdin, `on` a stage, killed after `timeout`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    pub on: HookStage,
    pub run: Vec<String>,
    #[serde(default = "default_hook_timeout")]
    pub timeout: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookStage {
    /// Before a sync this node starts or answers; a non-zero exit cancels it.
    BeforeSync,
    /// After a sync, with its summary.
    AfterSync,
    /// After each batch from a peer or a bundle is committed, with its records.
    AfterApply,
}

fn default_hook_timeout() -> String {
    "30s".into()
}

impl HookConfig {
    pub fn timeout(&self) -> Duration {
        parse_duration(&self.timeout).unwrap_or(Duration::from_secs(30))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub name: String,
    pub address: String,
    #[serde(default)]
    pub filters: Vec<String>,
    #[serde(default)]
    pub org: Option<String>,
    #[serde(default)]
    pub sync_every: Option<String>,
    #[serde(default = "yes")]
    pub pull: bool,
    #[serde(default = "yes")]
    pub push: bool,
    /// Sync only these record types with this peer (absent: every type).
    #[serde(default)]
    pub types: Option<Vec<String>>,
    /// Never sync these record types with this peer.
    #[serde(default)]
    pub skip_types: Vec<String>,
}

impl PeerConfig {
    /// The type rules of `types` and `skip_types`.
    pub fn type_rules(&self) -> anyhow::Result<TypeRules> {
        type_rules(self.types.as_deref(), &self.skip_types)
    }
}

/// Type rules from lists of record types (each entry may hold several,
/// separated by commas): `only` absent syncs every type.
pub fn type_rules(only: Option<&[String]>, skip: &[String]) -> anyhow::Result<TypeRules> {
    let parse = |list: &[String], what: &str| -> anyhow::Result<BTreeSet<RecordType>> {
        list.iter()
            .flat_map(|t| t.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| RecordType::parse(t).with_context(|| format!("{what} {t:?} is not a record type")))
            .collect()
    };
    let skip = parse(skip, "skip type")?;
    let only = match only {
        None => None,
        Some(list) => {
            let only = parse(list, "type")?;
            if only.is_empty() {
                anyhow::bail!("the list of types names none: name at least one, or leave it out to sync every type");
            }
            if let Some(both) = only.intersection(&skip).next() {
                anyhow::bail!("{both} is both a type to sync and one to skip: name it in one list only");
            }
            Some(only)
        }
    };
    let named = only.as_ref().map_or(0, BTreeSet::len) + skip.len();
    if named > engine::limits::TYPE_RULES_MAX {
        anyhow::bail!(
            "the type rules name {named} record types, more than the {} allowed",
            engine::limits::TYPE_RULES_MAX
        );
    }
    Ok(TypeRules { only, skip })
}

/// A relay as `relays` in ferry.toml names it: a multiaddr ending in the
/// relay's peer id.
pub fn parse_relay(text: &str) -> anyhow::Result<(libp2p::Multiaddr, libp2p::PeerId)> {
    use libp2p::multiaddr::Protocol;
    let address: libp2p::Multiaddr = text.trim().parse().with_context(|| format!("{text:?} is not a multiaddr"))?;
    match address.iter().last() {
        Some(Protocol::P2p(peer)) => Ok((address.clone(), peer)),
        _ => anyhow::bail!("{address} names no peer id: end it with /p2p/PEER_ID (`ferry id` on the relay shows it)"),
    }
}

/// Bytes of `ferry.toml` we read at most (it is a handful of lines).
pub const CONFIG_BYTES_MAX: usize = 256 * 1024;

fn default_listen() -> Vec<String> {
    vec!["/ip4/0.0.0.0/tcp/0".into(), "/ip4/0.0.0.0/udp/0/quic-v1".into()]
}
fn yes() -> bool {
    true
}
fn default_store() -> String {
    BackendKind::DEFAULT.name().into()
}
fn default_session_timeout() -> String {
    "30s".into()
}
fn default_batch() -> usize {
    engine::limits::BATCH_CHANGES_DEFAULT
}
fn default_window() -> usize {
    engine::limits::WINDOW_DEFAULT
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: default_listen(),
            mdns: true,
            store: default_store(),
            batch_changes: default_batch(),
            window: default_window(),
            session_timeout: default_session_timeout(),
            feed_entries: None,
            hooks: Vec::new(),
            http: None,
            peers: Vec::new(),
            relay_server: false,
            relays: Vec::new(),
            relay_limits: RelayLimits::default(),
        }
    }
}

impl Config {
    pub fn load(home: &Home) -> anyhow::Result<Config> {
        let path = home.config_file();
        if !path.exists() {
            return Ok(Config::default());
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("{} is not valid", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Config> {
        if text.len() > CONFIG_BYTES_MAX {
            anyhow::bail!("the file is {} bytes, more than the {CONFIG_BYTES_MAX} allowed", text.len());
        }
        let config: Config = toml::from_str(text).map_err(|e| TomlError::new(text, &e))?;
        config.backend()?;
        if config.batch_changes == 0 || config.batch_changes > engine::limits::BATCH_CHANGES_MAX {
            anyhow::bail!("batch_changes must be between 1 and {}", engine::limits::BATCH_CHANGES_MAX);
        }
        if config.window == 0 || config.window > engine::limits::WINDOW_MAX {
            anyhow::bail!("window must be between 1 and {}", engine::limits::WINDOW_MAX);
        }
        let timeout = parse_duration(&config.session_timeout).context("session_timeout")?;
        if timeout.is_zero() {
            anyhow::bail!("session_timeout must be at least 1s");
        }
        for (i, hook) in config.hooks.iter().enumerate() {
            if hook.run.first().is_none_or(|p| p.is_empty()) {
                anyhow::bail!("hooks[{i}]: run names no program: give run = [\"program\", \"arg\", …]");
            }
            let timeout = parse_duration(&hook.timeout).with_context(|| format!("hooks[{i}].timeout"))?;
            if timeout.is_zero() {
                anyhow::bail!("hooks[{i}].timeout must be at least 1s");
            }
        }
        config.relay_limits.check()?;
        for relay in &config.relays {
            parse_relay(relay).with_context(|| format!("relays: {relay:?}"))?;
        }
        for peer in &config.peers {
            if let Some(every) = &peer.sync_every {
                parse_duration(every).with_context(|| format!("peer {}: sync_every", peer.name))?;
            }
            peer.type_rules().with_context(|| format!("peer {}", peer.name))?;
        }
        Ok(config)
    }

    pub fn backend(&self) -> anyhow::Result<BackendKind> {
        BackendKind::parse(&self.store).with_context(|| format!("store = {:?}: use \"redb\" or \"sled\"", self.store))
    }

    pub fn session_timeout(&self) -> Duration {
        parse_duration(&self.session_timeout).unwrap_or(Duration::from_millis(engine::limits::SESSION_IDLE_TIMEOUT_MS))
    }

    pub fn to_toml(&self) -> String {
        let mut text = toml::to_string(self).expect("a config always serialises");
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text
    }
}

/// A syntax or schema error in `ferry.toml`. It prints as one line (where,
/// and what); `snippet` is the offending line with a caret under the spot,
/// which the command line shows under the error (a one-line rendering of
/// toml's own text lost the caret's alignment).
#[derive(Debug)]
pub struct TomlError {
    pub line: usize,
    pub column: usize,
    pub message: String,
    source_line: Option<String>,
}

impl TomlError {
    fn new(text: &str, error: &toml::de::Error) -> TomlError {
        let message = error.message().trim().replace('\n', "; ");
        let Some(span) = error.span() else {
            return TomlError { line: 0, column: 0, message, source_line: None };
        };
        let start = span.start.min(text.len());
        let before = text.get(..start).unwrap_or(text);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = before.matches('\n').count() + 1;
        let column = before[line_start..].chars().count() + 1;
        let source_line = text[line_start..].lines().next().unwrap_or("").to_owned();
        TomlError { line, column, message, source_line: Some(source_line) }
    }

    /// The offending line and a caret under the column, as two lines.
    pub fn snippet(&self) -> Option<String> {
        let source = self.source_line.as_ref()?;
        let number = self.line.to_string();
        let pad = " ".repeat(number.len());
        let caret = " ".repeat(self.column.saturating_sub(1));
        Some(format!("  {number} | {source}\n  {pad} | {caret}^"))
    }
}

impl std::fmt::Display for TomlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.message)
        } else {
            write!(f, "line {}, column {}: {}", self.line, self.column, self.message)
        }
    }
}

impl std::error::Error for TomlError {}

/// Parses `90s`, `15m`, `2h`, `7d` (or plain seconds).
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().with_context(|| format!("{text:?} is not a duration like 30s, 15m, 2h or 7d"))?;
    let unit_seconds: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => anyhow::bail!("{text:?} is not a duration like 30s, 15m, 2h or 7d"),
    };
    // Timers add durations to the clock: keep them far from overflowing it.
    match n.checked_mul(unit_seconds) {
        Some(seconds) if seconds <= DURATION_SECONDS_MAX => Ok(Duration::from_secs(seconds)),
        _ => anyhow::bail!("{text:?} is longer than a year, the longest duration ferry.toml takes"),
    }
}

/// The longest duration `parse_duration` accepts (a year).
pub const DURATION_SECONDS_MAX: u64 = 366 * 86_400;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_peers_and_rejects_unknown_keys() {
        let config = Config::parse(
            "listen = [\"/ip4/127.0.0.1/tcp/4040\"]\nstore = \"sled\"\n[[peers]]\nname = \"c\"\naddress = \"/ip4/127.0.0.1/tcp/1\"\nsync_every = \"15m\"\n",
        )
        .unwrap();
        assert_eq!(config.backend().unwrap(), BackendKind::Sled);
        assert_eq!(config.peers[0].sync_every.as_deref(), Some("15m"));
        assert!(Config::parse("colour = 3").is_err());
        assert!(Config::parse("store = \"mysql\"").is_err());
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("soon").is_err());
        assert_eq!(config.window, 1);
        assert_eq!(Config::parse("window = 2").unwrap().window, 2);
        assert!(Config::parse("window = 3").is_err());
        assert!(Config::parse("window = 0").is_err());
        assert_eq!(parse_duration("366d").unwrap(), Duration::from_secs(DURATION_SECONDS_MAX));
        assert!(parse_duration("367d").is_err());
    }

    /// Found by the config_file fuzz target: a duration whose seconds do not
    /// fit in a u64 overflowed (a panic with overflow checks on); one that
    /// fits but lies centuries ahead would overflow a timer's deadline.
    #[test]
    fn absurd_durations_are_refused_not_a_panic() {
        let text = format!("{}18446744073709551610m", "0".repeat(80));
        let error = parse_duration(&text).unwrap_err().to_string();
        assert!(error.contains("longer than a year"), "{error}");
        assert!(parse_duration("999999999999d").is_err());
        let config = format!("[[peers]]\nname = \"c\"\naddress = \"/ip4/127.0.0.1/tcp/1\"\nsync_every = \"{text}\"\n");
        assert!(Config::parse(&config).is_err());
        assert!(Config::parse("session_timeout = \"999999999999d\"\n").is_err());
    }
}
