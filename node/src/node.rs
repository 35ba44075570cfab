//! An opened node: its home, identity, configuration, store and authorizer,
//! and every local operation of the `ferry` command. The control endpoint
//! calls the same functions while `ferry serve` owns the store.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use certs::{CertId, Chain, IssueRequest, Issuer, Revocation, Token, TokenRecord, TokenRequest, pem};
use ed25519_dalek::SigningKey;
use engine::policy::system_partition;
use engine::{
    AuthorKey, BackendKind, InstanceId, LocalAuthor, LocalOp, LocalWrite, Opened, RecordId, RecordKey, SessionConfig,
    Store, Value, WriteRejection,
};
use partitions::{Filter, OrgId, Partition, RecordType, Scope};
use serde_json::json;

use crate::authority::{CertAuthorizer, REVOCATION_TYPE, member_scope};
use crate::config::Config;
use crate::home::{Home, write_atomic, write_private};
use crate::identity::{Identity, key_of, peer_id_of};
use crate::json as j;
use crate::own::{OwnChain, OwnChains};
use crate::parallel::ParallelSigner;

/// How long an org's root and the founding node's certificate last.
const ORG_YEARS: u64 = 30;
/// Certificates are valid from a minute ago, for clocks slightly behind.
const CLOCK_SKEW_S: u64 = 60;
/// How far behind the issuer's clock a device's may be at enrolment: its
/// certificate then starts that much earlier. Further behind, enrolment is
/// refused before a use of the token is spent.
pub const ENROL_CLOCK_BEHIND_MAX_S: u64 = 86_400;

pub struct Node {
    pub home: Home,
    pub identity: Identity,
    pub config: Config,
    pub store: Arc<Store>,
    pub auth: Arc<CertAuthorizer>,
    pub opened: Opened,
    /// The chains in `certs/`, verified when they change, not at each use.
    own: OwnChains,
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
        let auth = CertAuthorizer::watching(store.clone());
        let node = Node { home, identity, config, store, auth, opened, own, _lock: lock };
        for (_, bytes) in node.own_chains()? {
            node.store.put_chain(&node.identity.author_key(), &bytes)?;
            let _ = node.auth.know(&bytes);
        }
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

    // -- certificates --------------------------------------------------------

    /// Chains this node holds (its key is their leaf's).
    pub fn own_chains(&self) -> anyhow::Result<Vec<(Chain, Vec<u8>)>> {
        Ok(self.own.all().iter().map(|own| (own.chain.clone(), own.bytes.clone())).collect())
    }

    /// Reads `certs/` again after a chain was stored or revoked.
    fn reload_own_chains(&self) -> anyhow::Result<()> {
        self.own.replace(read_chains(&self.home.certs_dir())?);
        Ok(())
    }

    /// The orgs this node holds a certificate of.
    pub fn orgs(&self) -> anyhow::Result<BTreeSet<OrgId>> {
        Ok(self.own_chains()?.iter().map(|(c, _)| c.org()).collect())
    }

    /// The org named by `--org`, or the only org this node belongs to.
    pub fn org(&self, given: Option<&str>) -> anyhow::Result<OrgId> {
        if let Some(text) = given {
            return OrgId::parse(text.trim()).with_context(|| format!("{text:?} is not an org id"));
        }
        let orgs = self.orgs()?;
        match orgs.len() {
            0 => bail!(
                "this node holds no certificate: run `ferry org create NAME`, `ferry enroll TOKEN` or `ferry cert import FILE`"
            ),
            1 => Ok(*orgs.iter().next().expect("one org")),
            _ => bail!(
                "this node belongs to {} orgs: say which with --org ({})",
                orgs.len(),
                orgs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// The chain this node uses in `org`: the one valid longest from now.
    pub fn chain_for(&self, org: OrgId) -> anyhow::Result<(Chain, Vec<u8>)> {
        let now = now_s();
        let revocations = self.auth.revocations(org);
        let own = self.own.all();
        let mut best: Option<&OwnChain> = None;
        let mut last_error = None;
        for held in own.iter().filter(|held| held.chain.org() == org) {
            match held.verify_at(&self.identity.author_key().0, now, &revocations) {
                Ok(v) => {
                    if best.is_none_or(|b| b.chain.leaf().not_after() < v.not_after) {
                        best = Some(held);
                    }
                }
                Err(e) => last_error = Some(e),
            }
        }
        match (best, last_error) {
            (Some(b), _) => Ok((b.chain.clone(), b.bytes.clone())),
            (None, Some(certs::VerifyError::NotYetValid { not_before, at, .. })) => {
                Err(NoChain::Clock { org, clock: at, starts: not_before }.into())
            }
            (None, Some(certs::VerifyError::Expired { not_after, at, .. })) => {
                Err(NoChain::Expired { org, clock: at, ended: not_after }.into())
            }
            (None, Some(e)) => Err(NoChain::Invalid { org, reason: e.to_string() }.into()),
            (None, None) => Err(NoChain::Missing { org }.into()),
        }
    }

    /// What this node may do in `org`, as peers see it.
    pub fn local_scope(&self, org: OrgId) -> anyhow::Result<(Scope, Vec<u8>, Option<String>)> {
        let (chain, bytes) = self.chain_for(org)?;
        let info = chain.leaf().info();
        Ok((member_scope(org, &info.scope), bytes, info.authority.clone()))
    }

    fn save_own_chain(&self, chain: &Chain) -> anyhow::Result<()> {
        let bytes = chain.encode();
        let path = self.home.certs_dir().join(format!("{}.pem", chain.leaf().id()));
        write_atomic(&path, pem::encode_chain(chain).as_bytes())?;
        self.reload_own_chains()?;
        self.store.put_chain(&self.identity.author_key(), &bytes)?;
        self.auth.know(&bytes).map_err(|d| anyhow!("{d}"))?;
        Ok(())
    }

    /// `ferry org create NAME`.
    pub fn org_create(&self, name: &str, authority: Option<String>) -> anyhow::Result<serde_json::Value> {
        let root_key = SigningKey::from_bytes(&crate::random::bytes());
        let now = now_s();
        let (not_before, not_after) = (now - CLOCK_SKEW_S, now + ORG_YEARS * 365 * 86_400);
        let root = certs::create_org(name, &root_key, not_before, not_after, crate::random::bytes())?;
        let org = root.org();
        write_private(&self.home.orgs_dir().join(format!("{org}.key")), &root_key.to_bytes())?;
        let issuer = Issuer::new(root, root_key)?;
        let own = issuer.issue(
            &IssueRequest {
                subject_key: self.identity.author_key().0,
                name: format!("{name}: {}", self.identity.peer_id()),
                scope: Scope::full(org),
                not_before,
                not_after,
                can_issue: Some(6),
                authority,
            },
            crate::random::bytes(),
        )?;
        self.save_own_chain(&own)?;
        Ok(json!({ "org_id": org.to_string(), "certificate_id": own.leaf().id().to_string() }))
    }

    fn issuer(&self, org: OrgId) -> anyhow::Result<Issuer> {
        let (chain, _) = self.chain_for(org)?;
        if !chain.leaf().is_ca() {
            bail!("this node's certificate for org {org} may not issue certificates");
        }
        Ok(Issuer::new(chain, self.identity.key.clone())?)
    }

    /// `ferry cert issue`: returns the chain issued and its JSON description.
    #[allow(clippy::too_many_arguments)]
    pub fn cert_issue(
        &self,
        org: OrgId,
        subject: &str,
        read: &str,
        write: &str,
        types: &str,
        days: u64,
        can_issue: bool,
        authority: Option<String>,
        name: Option<String>,
    ) -> anyhow::Result<(Chain, serde_json::Value)> {
        let subject_peer = crate::identity::parse_peer_id(subject)?;
        let subject_key = key_of(&subject_peer).expect("checked by parse_peer_id");
        let days = certificate_days(days)?;
        let issuer = self.issuer(org)?;
        let scope = parse_scope(org, read, write, types)?;
        let now = now_s();
        let issuer_end = issuer.chain().leaf().not_after();
        let not_after = now.saturating_add(days.saturating_mul(86_400)).min(issuer_end);
        let issuer_path = issuer.chain().leaf().path_len();
        let request = IssueRequest {
            subject_key,
            name: name.unwrap_or_else(|| subject_peer.to_string()),
            scope,
            not_before: now - CLOCK_SKEW_S,
            not_after,
            can_issue: can_issue.then(|| issuer_path.map_or(5, |p| p.saturating_sub(1)).min(5) as u8),
            authority,
        };
        let chain = issuer.issue(&request, crate::random::bytes())?;
        write_atomic(
            &self.home.issued_dir().join(format!("{}.pem", chain.leaf().id())),
            pem::encode_chain(&chain).as_bytes(),
        )?;
        let described = self.describe(&chain, false);
        Ok((chain, described))
    }

    /// `ferry cert import FILE`: a chain for this node.
    pub fn cert_import(&self, text: &str) -> anyhow::Result<serde_json::Value> {
        let bytes = pem::decode_chain(text)?;
        let chain = Chain::decode(&bytes)?;
        let mine = self.identity.author_key().0;
        if chain.leaf().subject_key() != &mine {
            bail!(
                "this certificate is for peer {}, not for this node ({})",
                peer_id_of(chain.leaf().subject_key()),
                self.identity.peer_id()
            );
        }
        chain.verify(Some(&mine), now_s(), &self.auth.revocations(chain.org()))?;
        self.save_own_chain(&chain)?;
        Ok(self.describe(&chain, true))
    }

    /// Stores a chain received at enrolment.
    pub fn store_enrolled(&self, chain_bytes: &[u8]) -> anyhow::Result<serde_json::Value> {
        let chain = Chain::decode(chain_bytes)?;
        chain.verify(Some(&self.identity.author_key().0), now_s(), &Default::default())?;
        self.save_own_chain(&chain)?;
        Ok(json!({ "certificate_id": chain.leaf().id().to_string(), "org_id": chain.org().to_string() }))
    }

    pub fn describe(&self, chain: &Chain, held: bool) -> serde_json::Value {
        let leaf = chain.leaf();
        let info = leaf.info();
        let revoked = chain
            .verify(None, now_s().clamp(leaf.not_before(), leaf.not_after()), &self.auth.revocations(chain.org()))
            .is_err_and(|e| matches!(e, certs::VerifyError::Revoked { .. }));
        json!({
            "certificate_id": leaf.id().to_string(),
            "org_id": chain.org().to_string(),
            "subject": peer_id_of(leaf.subject_key()).to_string(),
            "name": info.name,
            "read": info.scope.read.prefixes().iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            "write": info.scope.write.prefixes().iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            "types": info.scope.types.iter().map(|(t, m)| (t.to_string(), m.to_string())).collect::<BTreeMap<_, _>>(),
            "authority": info.authority,
            "can_issue": leaf.is_ca(),
            "not_before": leaf.not_before(),
            "not_after": leaf.not_after(),
            "revoked": revoked,
            "held": held,
        })
    }

    /// `ferry cert list`: held, then issued.
    pub fn cert_list(&self) -> anyhow::Result<serde_json::Value> {
        let mut out = Vec::new();
        for (chain, _) in self.own_chains()? {
            out.push(self.describe(&chain, true));
        }
        for (chain, _) in read_chains(&self.home.issued_dir())? {
            out.push(self.describe(&chain, false));
        }
        Ok(serde_json::Value::Array(out))
    }

    /// `ferry cert revoke CERT_ID`: writes a signed revocation record, which
    /// syncs to every node of the org like data.
    pub fn cert_revoke(&self, id: &str) -> anyhow::Result<serde_json::Value> {
        let wanted =
            CertId::parse(id.trim()).with_context(|| format!("{id:?} is not a certificate id (32 hex digits)"))?;
        let mine = self.identity.author_key().0;
        let mut candidates = read_chains(&self.home.issued_dir())?;
        candidates.extend(self.own_chains()?);
        for (chain, _) in candidates {
            let Some(index) = chain.certs().iter().position(|c| c.id() == wanted) else { continue };
            let Some(revoker) = chain.certs()[..index].iter().rev().find(|c| c.subject_key() == &mine) else {
                continue;
            };
            let revocation = Revocation::sign(wanted, now_s(), revoker.id(), &self.identity.key);
            let org = chain.org();
            let key = RecordKey {
                partition: system_partition(org),
                record_type: RecordType::parse(REVOCATION_TYPE).expect("valid type"),
                id: RecordId::parse(&wanted.to_string()).expect("hex is a valid id"),
            };
            let set = BTreeMap::from([
                ("statement".to_owned(), Value::Bytes(revocation.to_bytes().to_vec())),
                ("revoked".to_owned(), Value::Text(wanted.to_string())),
                ("revoked_at".to_owned(), Value::Int(revocation.revoked_at as i64)),
                ("by".to_owned(), Value::Text(revoker.id().to_string())),
            ]);
            // The authorizer's hook re-reads the revocations on commit.
            self.write_one(org, LocalWrite { record: key, op: LocalOp::Put { set, unset: BTreeSet::new() } })?;
            self.reload_own_chains()?;
            return Ok(json!({
                "certificate_id": wanted.to_string(),
                "org_id": org.to_string(),
                "subject": peer_id_of(chain.certs()[index].subject_key()).to_string(),
                "revoked": true,
                "revoked_at": revocation.revoked_at,
            }));
        }
        bail!("certificate {wanted} was not issued by this node (or one it certified): revoke it from its issuer")
    }

    // -- records -------------------------------------------------------------

    fn author(&self, org: OrgId) -> anyhow::Result<LocalAuthor> {
        let (_, _, authority) = self.local_scope(org)?;
        Ok(LocalAuthor { key: self.identity.key.clone(), authority })
    }

    fn write_one(&self, org: OrgId, write: LocalWrite) -> anyhow::Result<serde_json::Value> {
        let record = write.record.clone();
        let mut results =
            self.store.write(&self.author(org)?, &[write], now_ms(), self.auth.as_ref(), &ParallelSigner)?;
        match results.remove(0) {
            Ok(written) => {
                let mut value = j::record(&record, &written.view);
                if written.unchanged {
                    value["unchanged"] = json!(true);
                }
                Ok(value)
            }
            Err(WriteRejection::Denied(d)) => bail!("outside this node's write scope: {d}"),
            Err(other) => bail!("{} {}: {other}", record.record_type, record.id),
        }
    }

    /// Resolves a record type, id and optional partition to one record.
    pub fn locate(
        &self,
        org: OrgId,
        record_type: &str,
        id: &str,
        partition: Option<&str>,
    ) -> anyhow::Result<RecordKey> {
        let record_type = RecordType::parse(record_type)?;
        let id = RecordId::parse(id)?;
        if let Some(p) = partition {
            return Ok(RecordKey { partition: Partition::resolve(org, p)?, record_type, id });
        }
        let found = self.store.find(&record_type, &id)?;
        match found.len() {
            0 => bail!("no record {record_type} {id}"),
            1 => Ok(found.into_iter().next().expect("one")),
            _ => bail!(
                "{record_type} {id} exists in several partitions ({}): say which with --partition",
                found.iter().map(|k| k.partition.relative().to_owned()).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    pub fn put(
        &self,
        org: OrgId,
        record_type: &str,
        id: &str,
        partition: &str,
        set: BTreeMap<String, Value>,
        unset: BTreeSet<String>,
    ) -> anyhow::Result<serde_json::Value> {
        let key = RecordKey {
            partition: Partition::resolve(org, partition)?,
            record_type: RecordType::parse(record_type)?,
            id: RecordId::parse(id)?,
        };
        self.write_one(org, LocalWrite { record: key, op: LocalOp::Put { set, unset } })
    }

    pub fn get(
        &self,
        org: OrgId,
        record_type: &str,
        id: &str,
        partition: Option<&str>,
    ) -> anyhow::Result<serde_json::Value> {
        let key = self.locate(org, record_type, id, partition)?;
        let view = self.store.view(&key)?.with_context(|| format!("no record {record_type} {id}"))?;
        Ok(j::record(&key, &view))
    }

    pub fn delete(
        &self,
        org: OrgId,
        record_type: &str,
        id: &str,
        partition: Option<&str>,
    ) -> anyhow::Result<serde_json::Value> {
        let key = self.locate(org, record_type, id, partition)?;
        self.write_one(org, LocalWrite { record: key, op: LocalOp::Delete })
    }

    pub fn list(
        &self,
        org: Option<OrgId>,
        record_type: Option<&str>,
        partition: Option<&str>,
        include_deleted: bool,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let record_type = record_type.map(RecordType::parse).transpose()?;
        let partition = match (partition, org) {
            (Some(p), Some(org)) => Some(Partition::resolve(org, p)?),
            (Some(p), None) => Some(Partition::parse(p)?),
            (None, Some(org)) => Some(Partition::root(org)),
            (None, None) => None,
        };
        let mut out = Vec::new();
        self.store.list(partition.as_ref(), record_type.as_ref(), &mut |r| {
            if r.view.exists || include_deleted {
                out.push(j::record(&r.key, &r.view));
            }
            true
        })?;
        Ok(out)
    }

    /// `ferry check [--repair]`: every entry's checksum, every record, every
    /// retained signature; with `repair`, drops what is damaged and lowers
    /// the frontiers that covered it so peers send it again.
    pub fn check(&self, repair: bool) -> anyhow::Result<serde_json::Value> {
        let verifier = crate::parallel::ParallelVerifier;
        let report = if repair { self.store.repair(&verifier)? } else { self.store.check(&verifier)? };
        let damaged: Vec<serde_json::Value> =
            report.damaged.iter().map(|d| json!({ "what": d.what, "reason": d.reason })).collect();
        Ok(json!({
            "entries": report.entries,
            "records": report.records,
            "changes": report.changes,
            "damaged": damaged,
            "unsendable": report.unsendable,
            "repaired": repair,
            "removed": report.removed,
            "refetch": report.refetched,
        }))
    }

    /// `ferry import`: one record a line, written in signed batches.
    pub fn import(
        &self,
        org: OrgId,
        input: &mut dyn BufRead,
        progress: &mut dyn FnMut(u64),
    ) -> anyhow::Result<serde_json::Value> {
        let author = self.author(org)?;
        let (mut written, mut unchanged, mut rejected) = (0u64, 0u64, 0u64);
        let mut reasons: Vec<String> = Vec::new();
        let mut batch: Vec<LocalWrite> = Vec::new();
        let mut flush = |batch: &mut Vec<LocalWrite>,
                         written: &mut u64,
                         unchanged: &mut u64,
                         rejected: &mut u64,
                         reasons: &mut Vec<String>|
         -> anyhow::Result<()> {
            if batch.is_empty() {
                return Ok(());
            }
            let results =
                self.store.write_with(&author, batch, now_ms(), self.auth.as_ref(), &ParallelSigner, false)?;
            for (write, result) in batch.iter().zip(results) {
                match result {
                    Ok(w) if w.unchanged => *unchanged += 1,
                    Ok(_) => *written += 1,
                    Err(e) => {
                        *rejected += 1;
                        if reasons.len() < 10 {
                            reasons.push(format!("{} {}: {e}", write.record.record_type, write.record.id));
                        }
                    }
                }
            }
            batch.clear();
            progress(*written + *unchanged + *rejected);
            Ok(())
        };
        for (n, line) in input.lines().enumerate() {
            let line = line.context("cannot read the input")?;
            // Editors on some systems start a UTF-8 file with a byte order mark.
            let line = if n == 0 { line.strip_prefix('\u{feff}').unwrap_or(&line) } else { &line };
            if line.trim().is_empty() {
                continue;
            }
            match parse_import_line(org, line) {
                Ok(write) => batch.push(write),
                Err(e) => {
                    rejected += 1;
                    if reasons.len() < 10 {
                        reasons.push(format!("line {}: {e}", n + 1));
                    }
                }
            }
            if batch.len() >= self.config.batch_changes {
                flush(&mut batch, &mut written, &mut unchanged, &mut rejected, &mut reasons)?;
            }
        }
        flush(&mut batch, &mut written, &mut unchanged, &mut rejected, &mut reasons)?;
        // The reasons go to whoever asked (through `serve`, the client).
        Ok(json!({ "written": written, "unchanged": unchanged, "rejected": rejected, "rejections": reasons }))
    }

    /// `ferry export`: live records, one JSON object a line.
    pub fn export(
        &self,
        org: OrgId,
        record_type: Option<&str>,
        partition: Option<&str>,
        out: &mut dyn Write,
    ) -> anyhow::Result<u64> {
        let record_type = record_type.map(RecordType::parse).transpose()?;
        let partition = Partition::resolve(org, partition.unwrap_or(""))?;
        let mut count = 0;
        let mut failure = None;
        self.store.list(Some(&partition), record_type.as_ref(), &mut |r| {
            if !r.view.exists {
                return true;
            }
            let mut line = j::record(&r.key, &r.view);
            if let Some(object) = line.as_object_mut() {
                object.remove("conflicts");
                object.remove("deleted");
            }
            if let Err(e) = writeln!(out, "{line}") {
                failure = Some(e);
                return false;
            }
            count += 1;
            true
        })?;
        if let Some(e) = failure {
            return Err(e).context("cannot write the export");
        }
        Ok(count)
    }

    pub fn conflicts(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        self.store.conflicts(&mut |r| {
            out.push(j::record(&r.key, &r.view));
            true
        })?;
        Ok(out)
    }

    /// `ferry resolve`: take conflict N, or set fields; either way the write
    /// has seen every retained value, so it supersedes them.
    pub fn resolve(
        &self,
        org: OrgId,
        record_type: &str,
        id: &str,
        partition: Option<&str>,
        take: Option<usize>,
        set: BTreeMap<String, Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let key = self.locate(org, record_type, id, partition)?;
        let view = self.store.view(&key)?.with_context(|| format!("no record {record_type} {id}"))?;
        let op = match take {
            Some(n) => {
                let conflict = view.conflicts.get(n.wrapping_sub(1)).with_context(|| {
                    format!("{record_type} {id} has {} conflicts; --take counts from 1", view.conflicts.len())
                })?;
                match (&conflict.field, &conflict.value) {
                    (Some(field), Some(value)) => {
                        LocalOp::Put { set: BTreeMap::from([(field.clone(), value.clone())]), unset: BTreeSet::new() }
                    }
                    (Some(field), None) => {
                        LocalOp::Put { set: BTreeMap::new(), unset: BTreeSet::from([field.clone()]) }
                    }
                    (None, None) => LocalOp::Delete,
                    (None, Some(_)) if !view.exists => LocalOp::Restore,
                    (None, Some(_)) => LocalOp::Put { set: BTreeMap::new(), unset: BTreeSet::new() },
                }
            }
            None if set.is_empty() => bail!("say how to resolve: --take N or --set FIELD=VALUE"),
            None => LocalOp::Put { set, unset: BTreeSet::new() },
        };
        self.write_one(org, LocalWrite { record: key, op })
    }

    pub fn history(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        Ok(self
            .store
            .history()?
            .into_iter()
            .map(|e| {
                let mut v = serde_json::to_value(&e).expect("ledger entries serialise");
                if let Some(o) = v.as_object_mut() {
                    o.insert("started_at".into(), json!(iso8601_ms(e.started_at_ms)));
                    if let Some(key) = partitions::hex::decode::<32>(&e.peer) {
                        o.insert("peer".into(), json!(peer_id_of(&key).to_string()));
                    }
                }
                v
            })
            .collect())
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

    /// Remembers that `peer` holds our credentials, so the next session
    /// names them by hash.
    pub fn note_peer_has_credentials(&self, org: OrgId, peer: &AuthorKey) -> anyhow::Result<()> {
        let (_, credentials, _) = self.local_scope(org)?;
        self.store.set_peer_note(peer, "has-credentials", blake3::hash(&credentials).as_bytes())?;
        Ok(())
    }

    // -- enrolment tokens (issuer side) -------------------------------------

    pub fn tokens(&self) -> anyhow::Result<Vec<TokenRecord>> {
        let path = self.home.tokens_file();
        if !path.exists() {
            return Ok(Vec::new());
        }
        let text = std::fs::read_to_string(&path)?;
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))
    }

    fn save_tokens(&self, tokens: &[TokenRecord]) -> anyhow::Result<()> {
        write_private(&self.home.tokens_file(), serde_json::to_string_pretty(tokens)?.as_bytes())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn create_token(
        &self,
        org: OrgId,
        read: &str,
        write: &str,
        types: &str,
        ttl_s: u64,
        uses: u32,
        days: u64,
        can_issue: bool,
        authority: Option<String>,
        addresses: Vec<String>,
    ) -> anyhow::Result<serde_json::Value> {
        let days = certificate_days(days)?;
        if uses == 0 {
            bail!("--uses 0 would make a token nobody can use: give at least 1");
        }
        if ttl_s == 0 {
            bail!("--ttl 0s would make a token that has already expired: give at least 1s");
        }
        let issuer = self.issuer(org)?;
        let request = TokenRequest {
            scope: parse_scope(org, read, write, types)?,
            can_issue: can_issue.then_some(0),
            authority,
            certificate_validity: days.saturating_mul(86_400),
            expires_at: now_s().saturating_add(ttl_s),
            uses,
        };
        let (token, record) =
            certs::create_token(&issuer, &self.identity.key, addresses, &request, &mut crate::random::rng())?;
        let mut tokens = self.tokens()?;
        tokens.retain(|t| t.expires_at >= now_s() && t.uses_left > 0);
        tokens.push(record);
        self.save_tokens(&tokens)?;
        Ok(json!({ "token": token.encode() }))
    }

    /// Redeems a presented secret for `subject`; the use is saved before the
    /// chain is returned, so a token can never issue twice for one use. The
    /// certificate starts early enough for the device's clock
    /// (`device_clock_s`), or the enrolment is refused before anything is
    /// spent: a device must be able to use what it is given.
    pub fn redeem_token(
        &self,
        secret: &[u8; 32],
        subject: &[u8; 32],
        name: &str,
        device_clock_s: Option<u64>,
    ) -> Result<Vec<u8>, String> {
        let mut tokens = self.tokens().map_err(|e| format!("{e:#}"))?;
        let hash = certs::token::secret_hash(secret);
        let Some(record) = tokens.iter_mut().find(|t| blake3::Hash::from(t.secret_hash) == blake3::Hash::from(hash))
        else {
            return Err("unknown enrolment token".into());
        };
        let issuer = self.issuer(record.org).map_err(|e| e.to_string())?;
        let now = now_s();
        // A token that is spent or expired is refused as such (by redeem),
        // whatever the device's clock says.
        let usable = record.uses_left > 0 && now <= record.expires_at;
        let not_before = match device_clock_s {
            Some(device) if usable => {
                let leaf = issuer.chain().leaf();
                let not_after = now.saturating_add(record.certificate_validity).min(leaf.not_after());
                enrol_window(now, device, leaf.not_before(), not_after)?
            }
            _ => now.saturating_sub(CLOCK_SKEW_S).max(issuer.chain().leaf().not_before()),
        };
        let chain = certs::redeem_at(record, secret, subject, name, now, not_before, &issuer, crate::random::bytes())
            .map_err(|e| e.to_string())?;
        self.save_tokens(&tokens).map_err(|e| e.to_string())?;
        let _ = write_atomic(
            &self.home.issued_dir().join(format!("{}.pem", chain.leaf().id())),
            pem::encode_chain(&chain).as_bytes(),
        );
        Ok(chain.encode())
    }
}

/// Why a node cannot act in an org: it holds no chain of it that is valid
/// now. It reads from this node's side; `describe(true)` says the same of
/// the node answering a sync, for the peer that asked.
#[derive(Debug)]
pub enum NoChain {
    Missing { org: OrgId },
    Clock { org: OrgId, clock: u64, starts: u64 },
    Expired { org: OrgId, clock: u64, ended: u64 },
    Invalid { org: OrgId, reason: String },
}

impl NoChain {
    pub fn describe(&self, answering: bool) -> String {
        let who = if answering { "the answering node" } else { "this node" };
        let iso = |s: &u64| iso8601_ms(s.saturating_mul(1000));
        match self {
            NoChain::Missing { org } if answering => format!("{who} holds no certificate for org {org}"),
            NoChain::Missing { org } => {
                format!("{who} holds no certificate for org {org}: run `ferry enroll` or `ferry cert import`")
            }
            NoChain::Clock { org, clock, starts } => format!(
                "{who}'s clock reads {}, its certificate for org {org} starts at {}; check the clock",
                iso(clock),
                iso(starts)
            ),
            NoChain::Expired { org, clock, ended } => format!(
                "{who}'s certificate for org {org} expired at {} (its clock reads {}): get a new one, or check the clock",
                iso(ended),
                iso(clock)
            ),
            NoChain::Invalid { org, reason } => format!("{who}'s certificate for org {org} is not valid: {reason}"),
        }
    }
}

impl std::fmt::Display for NoChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe(false))
    }
}

impl std::error::Error for NoChain {}

/// When a certificate issued at enrolment starts: a minute before the
/// earlier of the two clocks, but no more than `ENROL_CLOCK_BEHIND_MAX_S`
/// before the issuer's and not before the issuer's own certificate. A device
/// whose clock falls outside the certificate's window is refused (nothing is
/// spent): it could not use the certificate.
fn enrol_window(issuer_now: u64, device_now: u64, issuer_start: u64, not_after: u64) -> Result<u64, String> {
    let earliest = issuer_now.saturating_sub(ENROL_CLOCK_BEHIND_MAX_S).max(issuer_start);
    let start = issuer_now.min(device_now).saturating_sub(CLOCK_SKEW_S).max(earliest);
    if device_now < start || device_now > not_after {
        let edge = if device_now < start { ("start", start) } else { ("end", not_after) };
        return Err(format!(
            "this device's clock reads {}, the issuer's {}, and the certificate would {} at {}; check the clock (the token was not used)",
            iso8601_ms(device_now.saturating_mul(1000)),
            iso8601_ms(issuer_now.saturating_mul(1000)),
            edge.0,
            iso8601_ms(edge.1.saturating_mul(1000)),
        ));
    }
    Ok(start)
}

/// Decodes a token line with a friendly error.
pub fn parse_token(text: &str) -> anyhow::Result<Token> {
    Token::decode(text).map_err(|e| anyhow!("that is not a valid enrolment token: {e}"))
}

/// The word for the whole org in `--read` and `--write` (the org id, written
/// as an absolute partition, means the same).
pub const WHOLE_ORG: &str = "*";

/// The scope `cert issue` and `enroll token` grant: comma-separated
/// partitions relative to the org, `*` for the whole org. A scope that
/// reads and writes nothing is refused: it would be a certificate that
/// grants nothing.
pub fn parse_scope(org: OrgId, read: &str, write: &str, types: &str) -> anyhow::Result<Scope> {
    let filter = |text: &str, flag: &str| -> anyhow::Result<Filter> {
        let (whole, rest): (Vec<&str>, Vec<&str>) = text.split(',').partition(|p| p.trim() == WHOLE_ORG);
        let filter = Filter::parse(org, &rest.join(",")).context(flag.to_owned())?;
        Ok(if whole.is_empty() { filter } else { filter.union(&Filter::org(org)) })
    };
    let scope = Scope {
        read: filter(read, "--read")?,
        write: filter(write, "--write")?,
        types: Scope::parse_types(types).context("--types")?,
    };
    if scope.read.is_empty() && scope.write.is_empty() {
        bail!("the scope is empty: say what it may read and write with --read and --write (`*` is the whole org)");
    }
    Ok(scope)
}

/// `--days`, as `cert issue` and `enroll token` take it.
fn certificate_days(days: u64) -> anyhow::Result<u64> {
    if days == 0 {
        bail!("--days 0 would issue a certificate that is never valid: give at least 1");
    }
    Ok(days)
}

/// The keys of an import line. `deleted` and `conflicts` are what `ferry
/// --json get` prints besides the record: `"deleted": true` deletes it, and
/// `conflicts` is ignored (conflicts stay with the nodes that hold them).
const IMPORT_KEYS: [&str; 6] = ["type", "id", "partition", "fields", "deleted", "conflicts"];

fn parse_import_line(org: OrgId, line: &str) -> anyhow::Result<LocalWrite> {
    j::check_integers(line).map_err(|e| anyhow!(e))?;
    let value: serde_json::Value = serde_json::from_str(line).context("not JSON")?;
    let object = value.as_object().context("not a JSON object")?;
    if let Some(unknown) = object.keys().find(|k| !IMPORT_KEYS.contains(&k.as_str())) {
        bail!("unknown key {unknown:?} (a line has {})", IMPORT_KEYS.map(|k| format!("{k:?}")).join(", "));
    }
    let text = |k: &str| object.get(k).and_then(|v| v.as_str()).with_context(|| format!("missing \"{k}\""));
    let record = RecordKey {
        partition: Partition::resolve(org, text("partition")?)?,
        record_type: RecordType::parse(text("type")?)?,
        id: RecordId::parse(text("id")?)?,
    };
    if object.get("deleted").and_then(|d| d.as_bool()) == Some(true) {
        return Ok(LocalWrite { record, op: LocalOp::Delete });
    }
    let fields = object.get("fields").and_then(|f| f.as_object()).context("missing \"fields\" object")?;
    Ok(LocalWrite {
        record,
        op: LocalOp::Put { set: j::fields_of(fields).map_err(|e| anyhow!(e))?, unset: BTreeSet::new() },
    })
}

/// Chains stored as PEM files in a directory.
fn read_chains(dir: &std::path::Path) -> anyhow::Result<Vec<(Chain, Vec<u8>)>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(out) };
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pem"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path)?;
        let bytes = pem::decode_chain(&text).with_context(|| format!("{} is damaged", path.display()))?;
        let chain = Chain::decode(&bytes).with_context(|| format!("{} is damaged", path.display()))?;
        out.push((chain, bytes));
    }
    Ok(out)
}

/// Milliseconds since 1970 as RFC 3339 UTC.
pub fn iso8601_ms(ms: u64) -> String {
    engine::hlc::rfc3339(ms)
}
