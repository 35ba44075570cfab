//! The chains this node holds (`certs/` in its home), with their structure
//! (every signature, the links, the narrowing) verified once: when the node
//! opens, and again whenever a chain is stored (org create, enrolment, cert
//! import) or revoked. A write then checks only what can change since: the
//! time against each certificate's window, the holder's key, and the
//! revocations known now (`Chain::verify_at`), exactly as a full
//! `Chain::verify` would, in the same order and with the same errors.
//!
//! The files are not read again between those events: a chain copied into
//! `certs/` by hand is picked up when the node next opens.

use std::sync::{Arc, RwLock};

use certs::{Chain, Revocations, Verified, VerifyError};

/// A chain this node holds, its encoding, and what its structure check said.
pub struct OwnChain {
    pub chain: Chain,
    pub bytes: Vec<u8>,
    structure: Result<(), VerifyError>,
}

impl OwnChain {
    /// `Chain::verify` for this chain, without redoing its structure.
    pub fn verify_at(
        &self,
        subject_key: &[u8; 32],
        at: u64,
        revocations: &Revocations,
    ) -> Result<Verified, VerifyError> {
        self.structure.clone()?;
        self.chain.verify_at(Some(subject_key), at, revocations)
    }
}

/// Every chain this node holds, replaced whole when they change.
pub struct OwnChains {
    chains: RwLock<Arc<Vec<OwnChain>>>,
}

impl OwnChains {
    /// Verifies the structure of each chain (as read from `certs/`).
    pub fn verified(chains: Vec<(Chain, Vec<u8>)>) -> OwnChains {
        OwnChains { chains: RwLock::new(Arc::new(check(chains))) }
    }

    /// The chains as they are now (later changes do not affect the list).
    pub fn all(&self) -> Arc<Vec<OwnChain>> {
        self.chains.read().expect("the lock is held only to copy or replace the list").clone()
    }

    /// Takes in the chains as they are after a change.
    pub fn replace(&self, chains: Vec<(Chain, Vec<u8>)>) {
        let checked = Arc::new(check(chains));
        *self.chains.write().expect("the lock is held only to copy or replace the list") = checked;
    }
}

fn check(chains: Vec<(Chain, Vec<u8>)>) -> Vec<OwnChain> {
    chains
        .into_iter()
        .map(|(chain, bytes)| {
            let structure = chain.verify_structure();
            OwnChain { chain, bytes, structure }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use certs::{IssueRequest, Issuer, Revocation};
    use ed25519_dalek::SigningKey;

    const T0: u64 = 1_700_000_000;

    /// A device chain valid T0..T0+100, and one whose structure is broken
    /// (the device's certificate under another root).
    fn chains() -> (Chain, Chain, SigningKey, [u8; 32]) {
        let root_key = SigningKey::from_bytes(&[1; 32]);
        let device = SigningKey::from_bytes(&[2; 32]).verifying_key().to_bytes();
        let root = certs::create_org("Org", &root_key, T0 - 10, T0 + 1000, [1; 16]).expect("org");
        let request = IssueRequest {
            subject_key: device,
            name: "device".into(),
            scope: partitions::Scope::full(root.org()),
            not_before: T0,
            not_after: T0 + 100,
            can_issue: None,
            authority: None,
        };
        let good = Issuer::new(root, root_key.clone()).expect("issuer").issue(&request, [2; 16]).expect("chain");
        let other_root = certs::create_org("Org", &SigningKey::from_bytes(&[3; 32]), T0 - 10, T0 + 1000, [3; 16]);
        let broken = other_root.expect("org").with(good.leaf().clone()).expect("two certificates");
        (good, broken, root_key, device)
    }

    #[test]
    fn cached_chains_answer_at_each_use_as_a_full_verification_would() {
        let (good, broken, root_key, device) = chains();
        let own = OwnChains::verified(vec![(good.clone(), good.encode()), (broken.clone(), broken.encode())]);
        let mut revocations = Revocations::default();
        let revoked_at = T0 + 50;
        revocations.insert(Revocation::sign(good.leaf().id(), revoked_at, good.root().id(), &root_key));
        let none = Revocations::default();
        let stranger = [7; 32];
        for at in [T0 - 1, T0, T0 + 49, T0 + 50, T0 + 100, T0 + 101] {
            for revocations in [&none, &revocations] {
                for key in [&device, &stranger] {
                    for (held, chain) in own.all().iter().zip([&good, &broken]) {
                        let expected = chain.verify(Some(key), at, revocations);
                        assert_eq!(held.verify_at(key, at, revocations), expected, "at {at}");
                    }
                }
            }
        }
        let all = own.all();
        assert!(all[0].verify_at(&device, T0 + 101, &none).is_err_and(|e| matches!(e, VerifyError::Expired { .. })));
        assert_eq!(
            all[1].verify_at(&device, T0, &none).map(|_| ()),
            broken.verify_structure(),
            "the structure error, kept"
        );
        assert!(broken.verify_structure().is_err());
        own.replace(vec![(good.clone(), good.encode())]);
        assert_eq!(own.all().len(), 1);
        assert_eq!(all.len(), 2, "a list taken before a change stays as it was");
    }
}
