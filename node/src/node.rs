//! An opened node: its home, identity, configuration, store and authorizer,
//! and every local operation of the `ferry` command. The control endpoint
//! calls the same functions while `ferry serve` owns the store.

use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use engine::{AuthorKey, BackendKind, InstanceId, Opened, SessionConfig, Store};
use partitions::{Filter, OrgId};
use serde_json::json;

use crate::authority::CertAuthorizer;
use crate::config::Config;
use crate::home::{Home, write_atomic};
use crate::identity::Identity;
use crate::own::OwnChains;

/// How long an org's root and the founding node's certificate last.
const ORG_YEARS: u64 = 30;
/// Certificates are valid from a minute ago, for clocks slightly behind.
const CLOCK_SKEW_S: u64 = 60;
/// How far behind the issuer's clock a device's may be at enrolment: its
/// certificate then starts that much earlier. Further behind, enrolment is
/// refused before a use of the token is spent.
pub const ENROL_CLOCK_BEHIND_MAX_S: u64 = 86_400;

mod blobs;
mod credentials;
mod evict;
pub mod feed;
mod lag;
mod profile;
mod records;
mod scope;
mod sealing;
mod tokens;

pub use blobs::{BlobEntry, GcReport};
use credentials::*;
pub use credentials::{CertificateInfo, NoChain, WHOLE_ORG, parse_scope};
pub use lag::Lag;
pub use profile::ProfileChanges;
pub use records::{ImportReport, RecordResult};
pub use tokens::parse_token;

pub struct Node {
    pub home: Home,
    pub identity: Identity,
    pub config: Config,
    pub store: Arc<Store>,
    pub auth: Arc<CertAuthorizer>,
    pub opened: Opened,
    /// The home's blob store (`blobs.rs`).
    pub blobs: crate::blobs::Blobs,
    /// The ledger key (start, session id) of the last session answered for
    /// each peer, so the blobs its initiator moves next join that entry.
    answered: std::sync::Mutex<std::collections::BTreeMap<AuthorKey, (u64, [u8; 16])>>,
    /// The chains in `certs/`, verified when they change, not at each use.
    own: OwnChains,
    /// This node's sealing secrets, read once (`sealing.rs`).
    keyring: std::sync::Mutex<Option<Arc<sealing::Keyring>>>,
    /// The change feed's newest cursor, updated after each commit that adds
    /// to it: what a long-polling reader waits on (`ops::changes`).
    pub feed: Arc<tokio::sync::watch::Sender<u64>>,
    /// The feed's cursor range of each commit since `hooks::after_apply`
    /// last ran (kept only when an `after-apply` hook is configured).
    pub applied: Arc<std::sync::Mutex<Vec<(u64, u64)>>>,
    /// What `GET /metrics` reports (`metrics.rs`).
    pub metrics: crate::metrics::Metrics,
    /// Held until the node is dropped, after the store has closed.
    _lock: crate::home::HomeLock,
}

/// Wall-clock milliseconds since 1970. `FERRY_CLOCK_OFFSET_S` (signed
/// seconds) shifts this node's clock: for testing certificate expiry, or a
/// device whose clock is known to be wrong (docs/guide.md, "Time and
/// clocks"). A value that is not a number is ignored with a warning.
pub fn now_ms() -> u64 {
    let real = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    static OFFSET_MS: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let offset = *OFFSET_MS.get_or_init(|| {
        let Ok(text) = std::env::var("FERRY_CLOCK_OFFSET_S") else { return 0 };
        match text.trim().parse::<i64>() {
            Ok(seconds) => seconds.saturating_mul(1000),
            Err(_) => {
                tracing::warn!("FERRY_CLOCK_OFFSET_S={text:?} is not a whole number of seconds: ignored");
                0
            }
        }
    });
    real.saturating_add_signed(offset)
}

pub fn now_s() -> u64 {
    now_ms() / 1000
}

/// `ferry init`: creates the key and the store.
pub fn init(home: &Home, backend: Option<BackendKind>) -> anyhow::Result<serde_json::Value> {
    if home.is_initialized() {
        bail!(
            "{} is already a ferry home (peer {}); use another --home",
            home.dir.display(),
            Identity::load(&home.key_file())?.peer_id()
        );
    }
    std::fs::create_dir_all(&home.dir).with_context(|| format!("cannot create {}", home.dir.display()))?;
    let identity = Identity::generate();
    identity.save(&home.key_file())?;
    let mut config = Config::default();
    if let Some(kind) = backend {
        config.store = kind.name().into();
    }
    write_atomic(&home.config_file(), config.to_toml().as_bytes())?;
    home.api_token()?;
    let node = Node::open(home.clone())?;
    let out =
        json!({ "peer_id": node.identity.peer_id().to_string(), "instance_id": node.store.instance().to_string() });
    node.close()?;
    Ok(out)
}

impl Node {
    pub fn open(home: Home) -> anyhow::Result<Node> {
        home.require_initialized()?;
        let identity = Identity::load(&home.key_file())?;
        let config = Config::load(&home)?;
        let backend = config.backend()?;
        let lock = home.lock()?;
        let own = OwnChains::verified(read_chains(&home.certs_dir())?);
        let (store, opened) = Store::open(&home.store_dir(), backend, InstanceId(crate::random::bytes()), now_ms())
            .map_err(|e| {
                let text = e.to_string();
                if e.is_in_use() {
                    anyhow!("the store of {} is in use by another ferry process", home.dir.display())
                } else if e.is_damage() && !matches!(e, engine::StoreError::Corrupt(_)) {
                    anyhow!(
                        "cannot open the store: {text}; if `ferry check --repair` cannot open it either, move {} aside: the node keeps its key and certificates, starts an empty store and gets its data back from any peer in the next sync",
                        home.store_dir().display()
                    )
                } else {
                    anyhow!("cannot open the store: {text}")
                }
            })?;
        if let Some(reason) = &opened.fresh_instance {
            tracing::info!(instance = %opened.instance, "continuing under a fresh instance: {reason}");
        }
        let store = Arc::new(store);
        if let Some(entries) = config.feed_entries {
            store.set_feed_entries_max(entries);
        }
        let feed = Arc::new(tokio::sync::watch::Sender::new(store.feed_last()?));
        let told = feed.clone();
        store.on_feed(Arc::new(move |last| {
            told.send_replace(last);
        }));
        let applied = Arc::new(std::sync::Mutex::new(Vec::new()));
        if config.hooks.iter().any(|h| h.on == crate::config::HookStage::AfterApply) {
            let ranges = applied.clone();
            let previous = std::sync::Mutex::new(store.feed_last()?);
            store.on_feed(Arc::new(move |last| {
                let mut previous = previous.lock().expect("feed range lock");
                ranges.lock().expect("applied ranges lock").push((*previous, last));
                *previous = last;
            }));
        }
        let auth = CertAuthorizer::watching(store.clone());
        let blobs = crate::blobs::Blobs::new(home.blobs_dir());
        let node = Node {
            home,
            identity,
            config,
            store,
            auth,
            opened,
            blobs,
            answered: Default::default(),
            own,
            keyring: Default::default(),
            feed,
            applied,
            metrics: Default::default(),
            _lock: lock,
        };
        for (_, bytes) in node.own_chains()? {
            node.store.put_chain(&node.identity.author_key(), &bytes)?;
            let _ = node.auth.know(&bytes);
        }
        node.check_scopes();
        // An eviction a crash cut short after its acknowledgement.
        node.evict_all();
        // A reader whose key a crash kept from being published, or whose
        // profile arrived while it was not running.
        node.publish_sealing_keys();
        Ok(node)
    }

    /// `open` on the blocking pool, for async callers.
    pub async fn open_shared(home: Home) -> anyhow::Result<Arc<Node>> {
        crate::pool::blocking(move || Node::open(home).map(Arc::new)).await
    }

    /// `close` on the blocking pool, once `node` is the last handle.
    pub async fn close_shared(node: Arc<Node>) -> anyhow::Result<()> {
        let node = Arc::try_unwrap(node).map_err(|_| anyhow!("the store is still in use"))?;
        crate::pool::blocking(move || node.close()).await
    }

    /// Closes the store cleanly (the instance continues next time).
    pub fn close(self) -> anyhow::Result<()> {
        drop(self.auth);
        let store = Arc::try_unwrap(self.store).map_err(|_| anyhow!("the store is still in use"))?;
        store.close()?;
        Ok(())
    }
    // -- sessions ------------------------------------------------------------

    /// A session configuration for syncing `org` with `peer`.
    pub fn session_config(&self, org: OrgId, peer: AuthorKey, session: [u8; 16]) -> anyhow::Result<SessionConfig> {
        // A peer's credentials are checked against the revocations known:
        // an org whose revocations could not be read is refused (fails
        // closed) unless they read now.
        self.auth.retry_unreadable()?;
        let (scope, credentials, _) = self.local_scope(org)?;
        let mut config = SessionConfig::new(session, peer, credentials.clone(), scope);
        config.filter = Filter::org(org);
        config.batch_changes = self.config.batch_changes;
        config.window = self.config.window;
        config.idle_timeout_ms = self.config.session_timeout().as_millis() as u64;
        config.fresh_instance = InstanceId(crate::random::bytes());
        config.started_at_ms = now_ms();
        config.frame_overhead_bytes = crate::net::FRAME_PREFIX_BYTES;
        let hash = *blake3::hash(&credentials).as_bytes();
        config.peer_has_credentials =
            self.store.peer_note(&peer, "has-credentials")?.is_some_and(|known| known == hash);
        Ok(config)
    }

    /// Notes the ledger key of a session answered for `peer`.
    pub fn note_answered(&self, peer: AuthorKey, started_at_ms: u64, session: [u8; 16]) {
        if let Ok(mut answered) = self.answered.lock() {
            answered.insert(peer, (started_at_ms, session));
        }
    }

    /// The ledger key of the last session answered for `peer`.
    pub fn last_answered(&self, peer: &AuthorKey) -> Option<(u64, [u8; 16])> {
        self.answered.lock().ok()?.get(peer).copied()
    }

    /// Remembers that `peer` holds our credentials, so the next session
    /// names them by hash.
    pub fn note_peer_has_credentials(&self, org: OrgId, peer: &AuthorKey) -> anyhow::Result<()> {
        let (_, credentials, _) = self.local_scope(org)?;
        self.store.set_peer_note(peer, "has-credentials", blake3::hash(&credentials).as_bytes())?;
        Ok(())
    }
}

/// Milliseconds since 1970 as RFC 3339 UTC.
pub fn iso8601_ms(ms: u64) -> String {
    engine::hlc::rfc3339(ms)
}
