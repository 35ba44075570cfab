//! What the store keeps besides records: certificate chains (by hash and by
//! author), what is known of signed runs, the sync ledger (bounded) and
//! small notes per peer.

use crate::change::Change;
use crate::ids::{AuthorKey, Counter, InstanceId};
use crate::keys;
use crate::ledger::LedgerEntry;
use crate::limits::LEDGER_ENTRIES_MAX;
use crate::seal::{self, RunKnown, Seal};
use crate::stored;

use super::{Pending, Store, StoreError, corrupt};

impl Store {
    // -----------------------------------------------------------------------
    // Credentials

    /// Stores a certificate chain of `author` (opaque bytes); returns its hash.
    pub fn put_chain(&self, author: &AuthorKey, chain: &[u8]) -> Result<[u8; 32], StoreError> {
        let hash = *blake3::hash(chain).as_bytes();
        let mut author_key = vec![keys::AUTHOR_CHAINS];
        author_key.extend_from_slice(&author.0);
        author_key.extend_from_slice(&hash);
        // A damaged copy reads as an error: write over it.
        let held = |key: &[u8]| self.backend.get(key).is_ok_and(|v| v.is_some());
        let mut chain_key = vec![keys::CHAINS];
        chain_key.extend_from_slice(&hash);
        if held(&author_key) && held(&chain_key) {
            // Held already: no write (a node reopened on a full disk still
            // opens).
            return Ok(hash);
        }
        let mut pending = Pending::default();
        pending.chain(author, chain);
        self.commit(&pending.into_writes())?;
        Ok(hash)
    }

    pub fn chain(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        let mut key = vec![keys::CHAINS];
        key.extend_from_slice(hash);
        Ok(self.backend.get(&key)?)
    }

    /// What this node knows of the run `author` sealed from counter
    /// `first` (`seal::RunKnown`).
    pub fn run(&self, author: &InstanceId, first: Counter) -> Result<Option<RunKnown>, StoreError> {
        let key = keys::run(author, first);
        match self.backend.get(&key)? {
            None => Ok(None),
            Some(bytes) => seal::decode_run(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("{}: {e}", keys::describe(&key)))),
        }
    }

    /// Verifies a held change's seal: its own signature, or its leaf in a
    /// run this node keeps and that run's signature over the root.
    pub fn verify_change(&self, change: &Change) -> Result<(), String> {
        let Seal::Run { first } = change.seal else {
            return change.verify().map_err(|e| e.to_string());
        };
        let run = self.verified_run(change, first)?;
        if run.author_key != change.author_key {
            return Err(crate::change::ChangeError::RunAuthor.to_string());
        }
        run_holds(&run, change, first, &change.signing_bytes())
    }

    /// A held run whose signature verifies over the root its hashes
    /// rebuild, or why not.
    pub(super) fn verified_run(&self, change: &Change, first: Counter) -> Result<RunKnown, String> {
        let run = match self.run(&change.author, first) {
            Ok(Some(run)) => run,
            Ok(None) => return Err(format!("names run {first}, which this store does not hold")),
            Err(e) => return Err(format!("names run {first}, which cannot be read: {e}")),
        };
        let root = run.root().ok_or_else(|| format!("names run {first}, whose hashes do not cover it"))?;
        let message = seal::run_message(&run.author_key, &change.author, first, run.count, &root);
        crate::change::verify_strict(&run.author_key, &message, &run.signature)
            .map_err(|_| format!("names run {first}, whose signature does not verify"))?;
        Ok(run)
    }

    /// Every chain stored for `author`.
    pub fn chains_of(&self, author: &AuthorKey) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut prefix = vec![keys::AUTHOR_CHAINS];
        prefix.extend_from_slice(&author.0);
        let mut hashes = Vec::new();
        self.scan_prefix(&prefix, &mut |k, _| {
            if let Ok(hash) = <[u8; 32]>::try_from(&k[prefix.len()..]) {
                hashes.push(hash);
            }
            true
        })?;
        let mut out = Vec::new();
        for hash in hashes {
            if let Some(chain) = self.chain(&hash)? {
                out.push(chain);
            }
        }
        Ok(out)
    }

    // -----------------------------------------------------------------------
    // Ledger and peer cache

    /// Adds a ledger entry, dropping the oldest beyond `LEDGER_ENTRIES_MAX`
    /// (peers that fail on purpose must not fill the disk).
    pub fn record_session(&self, entry: &LedgerEntry) -> Result<(), StoreError> {
        let mut len = self.ledger_len.lock().expect("ledger lock");
        let held = match *len {
            Some(n) => n,
            None => {
                let mut n = 0;
                self.scan_prefix(&[keys::LEDGER], &mut |_, _| {
                    n += 1;
                    true
                })?;
                n
            }
        };
        let mut key = vec![keys::LEDGER];
        key.extend_from_slice(&entry.started_at_ms.to_be_bytes());
        key.extend_from_slice(entry.session.as_bytes());
        let mut writes = vec![(key, Some(stored::encode_value(entry)))];
        let excess = (held + 1).saturating_sub(LEDGER_ENTRIES_MAX);
        if excess > 0 {
            self.scan_prefix(&[keys::LEDGER], &mut |k, _| {
                writes.push((k.to_vec(), None));
                writes.len() <= excess
            })?;
        }
        let dropped = writes.len() - 1;
        self.commit(&writes)?;
        *len = Some(held + 1 - dropped);
        Ok(())
    }

    /// Adds the blobs that moved after a session to its ledger entry;
    /// `false` when the entry is gone (dropped as the oldest).
    pub fn add_session_blobs(
        &self,
        started_at_ms: u64,
        session: &str,
        blobs: &crate::ledger::BlobCounts,
    ) -> Result<bool, StoreError> {
        let _len = self.ledger_len.lock().expect("ledger lock");
        let mut key = vec![keys::LEDGER];
        key.extend_from_slice(&started_at_ms.to_be_bytes());
        key.extend_from_slice(session.as_bytes());
        let Some(bytes) = self.backend.get(&key)? else { return Ok(false) };
        let mut entry: LedgerEntry =
            stored::decode_value(&bytes).map_err(|e| corrupt(&format!("ledger entry: {e}")))?;
        entry.blobs.add(blobs);
        self.commit(&[(key, Some(stored::encode_value(&entry)))])?;
        Ok(true)
    }

    /// The ledger, oldest first.
    pub fn history(&self) -> Result<Vec<LedgerEntry>, StoreError> {
        let mut out = Vec::new();
        let mut failure = None;
        self.scan_prefix(&[keys::LEDGER], &mut |_, v| match stored::decode_value(v) {
            Ok(entry) => {
                out.push(entry);
                true
            }
            Err(e) => {
                failure = Some(corrupt(&format!("ledger entry: {e}")));
                false
            }
        })?;
        failure.map_or(Ok(out), Err)
    }

    /// A value the node keeps for itself under `name` (`m/marker/<name>`).
    pub fn marker(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.backend.get(&keys::meta(&format!("marker/{name}")))?)
    }

    pub fn set_marker(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.commit(&[(keys::meta(&format!("marker/{name}")), Some(value.to_vec()))])?;
        Ok(())
    }

    /// A small value kept per peer (for example the last digest exchanged).
    pub fn peer_note(&self, peer: &AuthorKey, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.backend.get(&peer_key(peer, name))?)
    }

    pub fn set_peer_note(&self, peer: &AuthorKey, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.commit(&[(peer_key(peer, name), Some(value.to_vec()))])?;
        Ok(())
    }
}

fn peer_key(peer: &AuthorKey, name: &str) -> Vec<u8> {
    let mut key = vec![keys::PEERS];
    key.extend_from_slice(&peer.0);
    key.extend_from_slice(name.as_bytes());
    key
}

/// Whether `run` (from counter `first`) holds `change`, whose signing bytes
/// are `message`, as the leaf at its counter.
pub(super) fn run_holds(run: &RunKnown, change: &Change, first: Counter, message: &[u8]) -> Result<(), String> {
    let index = seal::leaf_index(change.counter, first, run.count).map_err(|e| e.to_string())?;
    if run.leaf(index) == Some(seal::leaf_hash(message)) {
        Ok(())
    } else {
        Err("is not the change its run signed".to_owned())
    }
}
