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
//!
//! Revocations fail closed: when the store cannot be read, the revocations
//! known before are kept, the org's certificates are refused until a read
//! succeeds, and the operation that asked for the refresh fails.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use certs::{CertId, Chain, Revocation, Revocations};
use engine::policy::{PROFILE_TYPE, system_partition};
use engine::{ApplyHook, AuthorKey, Authorizer, Denied, RecordKey, RecordState, Refusal, Store};
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
    /// Orgs whose revocations the last refresh could not read, and why:
    /// their certificates are refused until a refresh reads them (the
    /// revocations known before are kept meanwhile, never forgotten).
    unreadable: BTreeMap<OrgId, String>,
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
    /// An authorizer that knows no chain yet (revocations are read for each
    /// org as its first chain becomes known).
    pub fn new(store: Arc<Store>) -> CertAuthorizer {
        CertAuthorizer { store, inner: Mutex::new(Inner::default()) }
    }

    /// An authorizer whose revocation cache follows every commit to the
    /// store (`RevocationHook`): no caller needs to refresh it.
    pub fn watching(store: Arc<Store>) -> Arc<CertAuthorizer> {
        let auth = Arc::new(CertAuthorizer::new(store.clone()));
        store.add_hook(Arc::new(RevocationHook { auth: Arc::downgrade(&auth) }));
        auth
    }

    /// Reads again the revocations of orgs a read failed for (a session
    /// starts with this): the org's certificates count again once the read
    /// succeeds, and the error stays while it fails.
    pub fn retry_unreadable(&self) -> Result<(), Denied> {
        let orgs: Vec<OrgId> = self.lock().unreadable.keys().copied().collect();
        if orgs.is_empty() {
            return Ok(());
        }
        let loaded = orgs.into_iter().map(|org| (org, self.load_revocations(org))).collect();
        self.apply_revocations(loaded)
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
            self.refresh_revocations()?;
        }
        Ok(known)
    }

    /// Reloads the revocation statements held in the store: records of type
    /// `ferry.revocation` in the system partition of each org seen (a prefix
    /// scan of those partitions, whatever the store's size). Fails closed:
    /// an org whose records cannot be read keeps the revocations known
    /// before, its certificates are refused until a later refresh succeeds,
    /// and the error is returned to fail the operation that asked.
    pub fn refresh_revocations(&self) -> Result<(), Denied> {
        let orgs = self.lock().orgs.clone();
        let loaded = orgs.into_iter().map(|org| (org, self.load_revocations(org))).collect();
        self.apply_revocations(loaded)
    }

    fn load_revocations(&self, org: OrgId) -> Result<Revocations, String> {
        let mut revocations = Revocations::default();
        let record_type = RecordType::parse(REVOCATION_TYPE).expect("valid type");
        self.store
            .list(Some(&system_partition(org)), Some(&record_type), &mut |r| {
                if r.view.exists
                    && let Some(engine::Value::Bytes(bytes)) = r.view.fields.get("statement")
                    && let Ok(revocation) = Revocation::from_bytes(bytes)
                {
                    revocations.insert(revocation);
                }
                true
            })
            .map_err(|e| e.to_string())?;
        Ok(revocations)
    }

    /// Takes in what a refresh read, org by org (the seam the tests use to
    /// make a read fail): a revocation set read replaces the org's, a
    /// failed read leaves it as it was and marks the org unreadable.
    pub fn apply_revocations(&self, loaded: BTreeMap<OrgId, Result<Revocations, String>>) -> Result<(), Denied> {
        let mut inner = self.lock();
        let mut failure = None;
        for (org, result) in loaded {
            match result {
                Ok(revocations) => {
                    inner.revocations.insert(org, revocations);
                    inner.unreadable.remove(&org);
                }
                Err(error) => {
                    failure.get_or_insert_with(|| unreadable(org, &error));
                    inner.unreadable.insert(org, error);
                }
            }
        }
        inner.revoked_from.clear();
        failure.map_or(Ok(()), Err)
    }

    /// Refuses when the org's revocations could not be read last time.
    fn check_readable(&self, org: OrgId) -> Result<(), Denied> {
        match self.lock().unreadable.get(&org) {
            Some(error) => Err(unreadable(org, error)),
            None => Ok(()),
        }
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
        self.check_readable(known.org)?;
        let iso = certs::rfc3339;
        if at < known.not_before {
            return Err(Denied(format!(
                "the change is dated {}, before its author's certificate starts ({})",
                iso(at),
                iso(known.not_before)
            )));
        }
        if at > known.not_after {
            return Err(Denied(format!(
                "the author's certificate expired at {}, before the change's date {}",
                iso(known.not_after),
                iso(at)
            )));
        }
        if let Some(from) = self.revoked_from(hash, known)
            && from <= at
        {
            return Err(Denied(format!("certificate {} revoked from {}", known.leaf_id, iso(from))));
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

/// Keeps the revocation cache current: the store calls it for every
/// commit, local or received, and a commit that changes a revocation
/// record re-reads the revocations once it is durable. Holds the
/// authorizer weakly: the authorizer holds the store, and the store its
/// hooks.
struct RevocationHook {
    auth: Weak<CertAuthorizer>,
}

impl ApplyHook for RevocationHook {
    fn wants(&self, partition: &Partition, record_type: &RecordType) -> bool {
        record_type.as_str() == REVOCATION_TYPE && *partition == system_partition(partition.org())
    }

    fn changed(&self, _key: &RecordKey, _before: Option<&RecordState>, _after: &RecordState) -> Result<(), Refusal> {
        Ok(())
    }

    fn committed(&self) {
        // A failed read marks the org unreadable: its certificates are
        // refused until a read succeeds (fails closed).
        if let Some(auth) = self.auth.upgrade()
            && let Err(denied) = auth.refresh_revocations()
        {
            tracing::warn!("{denied}");
        }
    }
}

fn unreadable(org: OrgId, error: &str) -> Denied {
    Denied(format!(
        "cannot read the revocations of org {org} ({error}): its certificates are refused until they can be read"
    ))
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
        self.check_readable(chain.org())?;
        let revocations = self.revocations(chain.org());
        chain.verify(Some(&peer.0), now_s, &revocations).map_err(|e| match e {
            // Said to the peer too: name whose clock decided.
            certs::VerifyError::NotYetValid { not_before, at, .. } => Denied(format!(
                "the verifying node's clock reads {}, the certificate starts at {}; check the clocks",
                certs::rfc3339(at),
                certs::rfc3339(not_before)
            )),
            certs::VerifyError::Expired { not_after, at, .. } => Denied(format!(
                "the certificate expired at {} (the verifying node's clock reads {})",
                certs::rfc3339(not_after),
                certs::rfc3339(at)
            )),
            other => Denied(other.to_string()),
        })?;
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
        let mut reason = Denied(format!("the author holds no certificate of org {org} known to this node"));
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
                    // A reader publishes its own sealing key under its
                    // authority (`Store::reader_keys` takes a key record only
                    // when the record's id is its every author's key).
                    engine::sealed::KEY_TYPE => known.authority.is_some() && authority.is_some(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use certs::{IssueRequest, Issuer};
    use ed25519_dalek::SigningKey;

    const T0: u64 = 1_800_000_000;

    /// An org, and two devices' chains issued by its root.
    fn org_with_devices() -> (Issuer, OrgId, Vec<(Chain, AuthorKey)>) {
        let root_key = SigningKey::from_bytes(&[1; 32]);
        let root = certs::create_org("Org", &root_key, T0 - 86_400, T0 + 86_400, [1; 16]).expect("org");
        let org = root.org();
        let issuer = Issuer::new(root, root_key).expect("issuer");
        let devices = (2u8..4)
            .map(|n| {
                let key = SigningKey::from_bytes(&[n; 32]).verifying_key().to_bytes();
                let request = IssueRequest {
                    subject_key: key,
                    name: format!("device {n}"),
                    scope: Scope::full(org),
                    not_before: T0 - 3600,
                    not_after: T0 + 3600,
                    can_issue: None,
                    authority: None,
                };
                (issuer.issue(&request, [n; 16]).expect("issue"), AuthorKey(key))
            })
            .collect();
        (issuer, org, devices)
    }

    fn write(auth: &CertAuthorizer, author: &AuthorKey, org: OrgId) -> Result<(), Denied> {
        let partition = Partition::resolve(org, "results").expect("partition");
        let record_type = RecordType::parse("result").expect("type");
        auth.may_write(author, None, &partition, &record_type, WriteKind::Create, T0)
    }

    /// `refresh_revocations` once ignored a failed store read and replaced
    /// the whole revocation map with what it had read: nothing. One failed
    /// read forgot every revocation, and a revoked device wrote again. Now
    /// a failed read keeps what was known, refuses the org's certificates
    /// (revoked or not) until a read succeeds, and fails the refresh.
    #[test]
    fn a_failed_revocation_read_keeps_the_revocations_and_refuses_until_read() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, _) = Store::open(dir.path(), engine::BackendKind::DEFAULT, engine::InstanceId([9; 16]), T0 * 1000)
            .expect("store");
        let auth = CertAuthorizer::new(Arc::new(store));
        let (issuer, org, devices) = org_with_devices();
        let [(revoked_chain, revoked), (good_chain, good)] = devices.try_into().expect("two devices");
        auth.know(&revoked_chain.encode()).expect("know");
        auth.know(&good_chain.encode()).expect("know");
        let root_id = issuer.chain().leaf().id();
        let mut revocations = Revocations::default();
        revocations.insert(Revocation::sign(
            revoked_chain.leaf().id(),
            T0 - 60,
            root_id,
            &SigningKey::from_bytes(&[1; 32]),
        ));
        auth.apply_revocations(BTreeMap::from([(org, Ok(revocations))])).expect("read");
        assert!(write(&auth, &revoked, org).is_err_and(|d| d.0.contains("revoked")));
        assert!(write(&auth, &good, org).is_ok());

        let failed = auth.apply_revocations(BTreeMap::from([(org, Err("the disk is failing".to_owned()))]));
        assert!(failed.is_err_and(|d| d.0.contains("cannot read the revocations")), "the refresh fails");
        assert!(!auth.revocations(org).is_empty(), "what was known is kept");
        for author in [&revoked, &good] {
            let refused = write(&auth, author, org).expect_err("refused while unreadable");
            assert!(refused.0.contains("cannot read the revocations"), "{refused}");
        }
        let presented = auth.authenticate(&revoked, &revoked_chain.encode(), T0);
        assert!(presented.is_err(), "a session with the revoked device is refused too");

        // The store reads again (it holds no revocation record: the one
        // above was handed in directly): the org's certificates count again.
        auth.refresh_revocations().expect("the real store reads");
        assert!(write(&auth, &good, org).is_ok());
    }
}
