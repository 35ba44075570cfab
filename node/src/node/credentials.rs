//! The certificates a node holds and issues: its own chains (cached,
//! `own.rs`), orgs, issuing, importing, listing and revoking, and why a node
//! cannot act in an org (`NoChain`).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, anyhow, bail};
use certs::{CertId, Chain, IssueRequest, Issuer, Revocation, pem};
use ed25519_dalek::SigningKey;
use engine::policy::system_partition;
use engine::{LocalOp, LocalWrite, RecordId, RecordKey, Value};
use partitions::{Filter, OrgId, RecordType, Scope};
use serde_json::json;

use crate::authority::{REVOCATION_TYPE, member_scope};
use crate::home::{write_atomic, write_private};
use crate::identity::{key_of, peer_id_of};
use crate::own::OwnChain;

use super::*;

/// A certificate as a node describes it (`Node::certificate`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CertificateInfo {
    pub certificate_id: String,
    pub org_id: String,
    pub subject: String,
    pub name: String,
    pub read: Vec<String>,
    pub write: Vec<String>,
    pub types: BTreeMap<String, String>,
    pub authority: Option<String>,
    pub can_issue: bool,
    pub not_before: u64,
    pub not_after: u64,
    /// `not_after` in ISO 8601, for people and the console.
    pub expires_at: String,
    pub revoked: bool,
    pub held: bool,
}

impl Node {
    // -- certificates --------------------------------------------------------

    /// Chains this node holds (its key is their leaf's).
    pub fn own_chains(&self) -> anyhow::Result<Vec<(Chain, Vec<u8>)>> {
        Ok(self.own.all().iter().map(|own| (own.chain.clone(), own.bytes.clone())).collect())
    }

    /// Reads `certs/` again after a chain was stored or revoked.
    pub(super) fn reload_own_chains(&self) -> anyhow::Result<()> {
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

    pub(super) fn save_own_chain(&self, chain: &Chain) -> anyhow::Result<()> {
        let bytes = chain.encode();
        let path = self.home.certs_dir().join(format!("{}.pem", chain.leaf().id()));
        write_atomic(&path, pem::encode_chain(chain).as_bytes())?;
        self.reload_own_chains()?;
        self.store.put_chain(&self.identity.author_key(), &bytes)?;
        self.auth.know(&bytes).map_err(|d| anyhow!("{d}"))?;
        self.check_scope(chain.org())?;
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

    pub(super) fn issuer(&self, org: OrgId) -> anyhow::Result<Issuer> {
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

    /// What a certificate chain says, as `cert list`, `id` and `status` show it.
    pub fn certificate(&self, chain: &Chain, held: bool) -> CertificateInfo {
        let leaf = chain.leaf();
        let info = leaf.info();
        let revoked = chain
            .verify(None, now_s().clamp(leaf.not_before(), leaf.not_after()), &self.auth.revocations(chain.org()))
            .is_err_and(|e| matches!(e, certs::VerifyError::Revoked { .. }));
        CertificateInfo {
            certificate_id: leaf.id().to_string(),
            org_id: chain.org().to_string(),
            subject: peer_id_of(leaf.subject_key()).to_string(),
            name: info.name.clone(),
            read: info.scope.read.prefixes().iter().map(|p| p.to_string()).collect(),
            write: info.scope.write.prefixes().iter().map(|p| p.to_string()).collect(),
            types: info.scope.types.iter().map(|(t, m)| (t.to_string(), m.to_string())).collect(),
            authority: info.authority.clone(),
            can_issue: leaf.is_ca(),
            not_before: leaf.not_before(),
            not_after: leaf.not_after(),
            expires_at: super::iso8601_ms(leaf.not_after().saturating_mul(1000)),
            revoked,
            held,
        }
    }

    /// `certificate`, in the JSON the command and the local API print.
    pub fn describe(&self, chain: &Chain, held: bool) -> serde_json::Value {
        serde_json::to_value(self.certificate(chain, held)).expect("a certificate's description serialises")
    }

    /// `ferry cert list`: held, then issued.
    pub fn cert_list(&self) -> anyhow::Result<Vec<CertificateInfo>> {
        let mut out = Vec::new();
        for (chain, _) in self.own_chains()? {
            out.push(self.certificate(&chain, true));
        }
        for (chain, _) in read_chains(&self.home.issued_dir())? {
            out.push(self.certificate(&chain, false));
        }
        Ok(out)
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
pub(super) fn certificate_days(days: u64) -> anyhow::Result<u64> {
    if days == 0 {
        bail!("--days 0 would issue a certificate that is never valid: give at least 1");
    }
    Ok(days)
}

/// Chains stored as PEM files in a directory.
pub(super) fn read_chains(dir: &std::path::Path) -> anyhow::Result<Vec<(Chain, Vec<u8>)>> {
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

/// The word for the whole org in `--read` and `--write` (the org id, written
/// as an absolute partition, means the same).
pub const WHOLE_ORG: &str = "*";
