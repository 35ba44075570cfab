//! The engine's `Authorizer`, backed by verified certificate chains.
//!
//! A chain is decoded and verified once, then cached by hash with what it
//! grants: the org, the leaf's scope (plus the org's system partition
//! `<org>:ferry`, which every member may read: profiles and revocations live
//! there), its authority tag, the window in which every certificate of it is
//! valid, and the earliest revocation that takes effect on it. Checking a
//! change is then a few map lookups: the author holds a chain of the
//! change's org, valid and not revoked at the change's time, that grants the
//! write (and the authority tag the change claims).
//!
//! In the system partition only two record types may be written: profiles
//! (`ferry.profile`), by holders of the whole org's write scope, and
//! revocations (`ferry.revocation`), by holders of a CA certificate.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use certs::{CertId, Chain, Revocation, Revocations};
use engine::policy::{PROFILE_TYPE, system_partition};
use engine::{AuthorKey, Authorizer, Denied, Store};
use partitions::{Filter, OrgId, Partition, RecordType, Scope, WriteKind};

/// The record type of revocation statements.
pub const REVOCATION_TYPE: &str = "ferry.revocation";

/// What a verified chain grants.
#[derive(Clone, Debug)]
pub struct Known {
    pub org: OrgId,
    /// The leaf's scope with the system partition added to its read filter.
    pub scope: Scope,
    pub authority: Option<String>,
    pub leaf: AuthorKey,
    pub leaf_id: CertId,
    pub ca: bool,
    pub not_before: u64,
    pub not_after: u64,
    /// (certificate id, subject key) from the root down.
    certs: Vec<(CertId, [u8; 32])>,
}

#[derive(Default)]
struct Inner {
    /// Orgs of every chain seen: where to look for revocations.
    orgs: std::collections::BTreeSet<OrgId>,
    chains: BTreeMap<[u8; 32], Arc<Known>>,
    by_author: BTreeMap<AuthorKey, Vec<[u8; 32]>>,
    loaded: std::collections::BTreeSet<AuthorKey>,
    revocations: BTreeMap<OrgId, Revocations>,
    /// Earliest effective revocation per chain hash (`None`: not revoked).
    revoked_from: BTreeMap<[u8; 32], Option<u64>>,
}

pub struct CertAuthorizer {
    store: Arc<Store>,
    inner: Mutex<Inner>,
}

/// A scope as a member of its org holds it: plus the system partition.
pub fn member_scope(org: OrgId, scope: &Scope) -> Scope {
    let mut scope = scope.clone();
    scope.read = scope.read.union(&Filter::new([system_partition(org)]));
    scope
}

impl CertAuthorizer {
    pub fn new(store: Arc<Store>) -> CertAuthorizer {
        let auth = CertAuthorizer { store, inner: Mutex::new(Inner::default()) };
        auth.refresh_revocations();
        auth
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("the authorizer lock is never poisoned")
    }

    /// Decodes and verifies a chain's structure (signatures, linkage,
    /// narrowing, depth) at a time when all its certificates are valid.
    pub fn know(&self, bytes: &[u8]) -> Result<Arc<Known>, Denied> {
        let hash = *blake3::hash(bytes).as_bytes();
        if let Some(known) = self.lock().chains.get(&hash) {
            return Ok(known.clone());
        }
        let chain = Chain::decode(bytes).map_err(|e| Denied(format!("certificate chain: {e}")))?;
        let not_before = chain.certs().iter().map(|c| c.not_before()).max().unwrap_or(0);
        let not_after = chain.certs().iter().map(|c| c.not_after()).min().unwrap_or(0);
        if not_before > not_after {
            return Err(Denied("certificate chain is never valid: its windows do not overlap".into()));
        }
        let verified = chain
            .verify(None, not_before, &Revocations::default())
            .map_err(|e| Denied(format!("certificate chain: {e}")))?;
        let known = Arc::new(Known {
            org: verified.org,
            scope: member_scope(verified.org, &verified.scope),
            authority: verified.authority,
            leaf: AuthorKey(verified.subject_key),
            leaf_id: verified.leaf,
            ca: chain.leaf().is_ca(),
            not_before,
            not_after,
            certs: chain.certs().iter().map(|c| (c.id(), *c.subject_key())).collect(),
        });
        let mut inner = self.lock();
        let new_org = inner.orgs.insert(known.org);
        inner.chains.insert(hash, known.clone());
        let list = inner.by_author.entry(known.leaf).or_default();
        if !list.contains(&hash) {
            list.push(hash);
        }
        drop(inner);
        if new_org {
            self.refresh_revocations();
        }
        Ok(known)
    }

    /// Reloads the revocation statements held in the store: records of type
    /// `ferry.revocation` in the system partition of each org seen (a prefix
    /// scan of those partitions, whatever the store's size).
    pub fn refresh_revocations(&self) {
        let mut by_org: BTreeMap<OrgId, Revocations> = BTreeMap::new();
        let record_type = RecordType::parse(REVOCATION_TYPE).expect("valid type");
        let orgs = self.lock().orgs.clone();
        for org in orgs {
            let _ = self.store.list(Some(&system_partition(org)), Some(&record_type), &mut |r| {
                if r.view.exists
                    && let Some(engine::Value::Bytes(bytes)) = r.view.fields.get("statement")
                    && let Ok(revocation) = Revocation::from_bytes(bytes)
                {
                    by_org.entry(r.key.partition.org()).or_default().insert(revocation);
                }
                true
            });
        }
        let mut inner = self.lock();
        inner.revocations = by_org;
        inner.revoked_from.clear();
    }

    pub fn revocations(&self, org: OrgId) -> Revocations {
        self.lock().revocations.get(&org).cloned().unwrap_or_default()
    }

    fn revoked_from(&self, hash: &[u8; 32], known: &Known) -> Option<u64> {
        if let Some(cached) = self.lock().revoked_from.get(hash) {
            return *cached;
        }
        let revocations = self.revocations(known.org);
        let mut earliest: Option<u64> = None;
        for (index, (id, _)) in known.certs.iter().enumerate().skip(1) {
            for revocation in revocations.of(*id) {
                let above = known.certs[..index].iter().find(|(c, _)| *c == revocation.revoker);
                if let Some((_, key)) = above
                    && revocation.is_signed_by(key)
                {
                    earliest = Some(earliest.map_or(revocation.revoked_at, |e| e.min(revocation.revoked_at)));
                }
            }
        }
        self.lock().revoked_from.insert(*hash, earliest);
        earliest
    }

    /// Whether the chain is valid and unrevoked at `at` (seconds).
    fn check_time(&self, hash: &[u8; 32], known: &Known, at: u64) -> Result<(), Denied> {
        if at < known.not_before {
            return Err(Denied(format!("certificate not yet valid at {at} (from {})", known.not_before)));
        }
        if at > known.not_after {
            return Err(Denied(format!("certificate expired at {} (time is {at})", known.not_after)));
        }
        if let Some(from) = self.revoked_from(hash, known)
            && from <= at
        {
            return Err(Denied(format!("certificate {} revoked from {from}", known.leaf_id)));
        }
        Ok(())
    }

    fn chains_of(&self, author: &AuthorKey) -> Vec<([u8; 32], Arc<Known>)> {
        let needs_load = !self.lock().loaded.contains(author);
        if needs_load {
            if let Ok(stored) = self.store.chains_of(author) {
                for bytes in stored {
                    let _ = self.know(&bytes);
                }
            }
            self.lock().loaded.insert(*author);
        }
        let inner = self.lock();
        inner
            .by_author
            .get(author)
            .map(|hashes| hashes.iter().filter_map(|h| inner.chains.get(h).map(|k| (*h, k.clone()))).collect())
            .unwrap_or_default()
    }
}

impl CertAuthorizer {
    /// Authenticates credentials presented outside a session (bundles,
    /// frontier files) at time `at`.
    pub fn authenticate_at(&self, holder: &AuthorKey, credentials: &[u8], at: u64) -> anyhow::Result<Scope> {
        self.authenticate(holder, credentials, at)
            .map_err(|d| anyhow::anyhow!("the file's certificate is not valid: {d}"))
    }
}

impl Authorizer for CertAuthorizer {
    fn authenticate(&self, peer: &AuthorKey, credentials: &[u8], now_s: u64) -> Result<Scope, Denied> {
        let chain = Chain::decode(credentials).map_err(|e| Denied(format!("certificate chain: {e}")))?;
        let revocations = self.revocations(chain.org());
        chain.verify(Some(&peer.0), now_s, &revocations).map_err(|e| Denied(e.to_string()))?;
        let known = self.know(credentials)?;
        Ok(known.scope.clone())
    }

    fn learn(&self, credentials: &[u8], _now_s: u64) -> Result<AuthorKey, Denied> {
        Ok(self.know(credentials)?.leaf)
    }

    fn may_write(
        &self,
        author: &AuthorKey,
        authority: Option<&str>,
        partition: &Partition,
        record_type: &RecordType,
        kind: WriteKind,
        at_s: u64,
    ) -> Result<(), Denied> {
        let org = partition.org();
        let chains = self.chains_of(author);
        let mut reason = Denied(format!("no certificate of org {org} for this author"));
        for (hash, known) in chains.iter().filter(|(_, k)| k.org == org) {
            if let Err(denied) = self.check_time(hash, known, at_s) {
                reason = denied;
                continue;
            }
            if let Some(claim) = authority
                && known.authority.as_deref() != Some(claim)
            {
                reason = Denied(format!("author claims authority {claim:?} its certificate does not hold"));
                continue;
            }
            let system = system_partition(org);
            let allowed = if system.contains(partition) {
                match record_type.as_str() {
                    PROFILE_TYPE => known.scope.write.contains(&Partition::root(org)),
                    REVOCATION_TYPE => known.ca,
                    _ => false,
                }
            } else {
                known.scope.may_write(partition, record_type, kind)
            };
            if allowed {
                return Ok(());
            }
            reason = Denied(format!(
                "certificate {} does not grant {kind:?} of {record_type} in {partition}",
                known.leaf_id
            ));
        }
        Err(reason)
    }
}
