//! Sealed fields (SPEC §6.2; docs/certificates.md, "Sealing keys"): the
//! cryptography `engine::sealed` leaves to the node.
//!
//! - A node whose certificate carries authority TAG, in an org whose
//!   profile seals some type to the readers TAG, holds X25519 key pairs in
//!   `HOME/sealing-keys` (mode 0600, oldest first) and publishes the newest
//!   public key as its record of type `ferry.sealing-key` in `<org>:ferry`
//!   (id: its author key in hex), written under its authority. The secret
//!   is on disk, durably, before the public key is published: a crash can
//!   never leave writers sealing to a key nobody holds.
//! - A writer seals each value of a sealed field with HPKE (RFC 9180, base
//!   mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305) to
//!   every key the readers published, bound to the record and the field
//!   (`engine::sealed::associated_data`), before the change is signed:
//!   every local write path (put, import, the local API, resolve) goes
//!   through `seal_write`. The change's signature authenticates the writer.
//! - A node opens a sealed value when it holds a matching secret; every
//!   other node shows `{"$sealed": {"readers": TAG}}`.
//! - Rotation: `ferry sealing-key rotate` adds a key pair and publishes its
//!   public key; the older secrets stay, so older values still open.

use std::collections::BTreeSet;
use std::path::PathBuf;

use engine::policy::{SYSTEM_SEGMENT, system_partition};
use engine::sealed::{
    Envelope, KEY_PUBLIC_FIELD, KEY_READERS_FIELD, KEY_TYPE, PUBLIC_BYTES, SealedBox, associated_data, holds_sealed,
    key_id, placeholder, readers_of,
};
use engine::{LocalOp, LocalWrite, RecordKey, Value, View};
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use partitions::{OrgId, RecordType};

use super::*;

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::ChaCha20Poly1305;

/// HPKE's `info`: what every sealed field value is for.
const INFO: &[u8] = b"ferry sealed field v1";

/// This node's sealing secrets, oldest first.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    secrets: Vec<[u8; 32]>,
}

impl Keyring {
    fn parse(text: &str) -> anyhow::Result<Keyring> {
        let mut secrets = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let secret = partitions::hex::decode::<32>(line)
                .with_context(|| format!("line {} is not a sealing key (64 hex digits)", n + 1))?;
            secrets.push(secret);
        }
        Ok(Keyring { secrets })
    }

    fn text(&self) -> String {
        self.secrets.iter().map(|s| format!("{}\n", partitions::hex::encode(s))).collect()
    }

    fn public(secret: &[u8; 32]) -> [u8; PUBLIC_BYTES] {
        let private = <Kem as hpke::Kem>::PrivateKey::from_bytes(secret).expect("32 bytes are an X25519 secret");
        Kem::sk_to_pk(&private).to_bytes().into()
    }

    fn generate() -> [u8; 32] {
        let (private, _) = Kem::gen_keypair();
        private.to_bytes().into()
    }

    /// The secret whose public key has this id, if this node holds it.
    fn secret_for(&self, id: &[u8; engine::sealed::KEY_ID_BYTES]) -> impl Iterator<Item = &[u8; 32]> {
        self.secrets.iter().filter(move |s| key_id(&Keyring::public(s)) == *id)
    }
}

/// Seals `plaintext` to each key.
fn seal_to(keys: &[[u8; PUBLIC_BYTES]], readers: &str, aad: &[u8], plaintext: &[u8]) -> anyhow::Result<Envelope> {
    let mut boxes = Vec::with_capacity(keys.len());
    for public in keys {
        let recipient = <Kem as hpke::Kem>::PublicKey::from_bytes(public)
            .map_err(|e| anyhow!("a published sealing key is not an X25519 key: {e}"))?;
        let (enc, ciphertext) =
            hpke::single_shot_seal::<Aead, Kdf, Kem>(&OpModeS::Base, &recipient, INFO, plaintext, aad)
                .map_err(|e| anyhow!("cannot seal: {e}"))?;
        boxes.push(SealedBox { key_id: key_id(public), enc: enc.to_bytes().into(), ciphertext });
    }
    Ok(Envelope { readers: readers.to_owned(), boxes })
}

fn open_box(secret: &[u8; 32], sealed: &SealedBox, aad: &[u8]) -> Option<Vec<u8>> {
    let private = <Kem as hpke::Kem>::PrivateKey::from_bytes(secret).ok()?;
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&sealed.enc).ok()?;
    hpke::single_shot_open::<Aead, Kdf, Kem>(&OpModeR::Base, &private, &enc, INFO, &sealed.ciphertext, aad).ok()
}

impl Node {
    fn keyring_file(&self) -> PathBuf {
        self.home.dir.join("sealing-keys")
    }

    /// This node's sealing secrets (none when it never needed any).
    pub fn keyring(&self) -> anyhow::Result<Arc<Keyring>> {
        let mut cached = self.keyring.lock().map_err(|_| anyhow!("the keyring lock is poisoned"))?;
        if let Some(ring) = &*cached {
            return Ok(ring.clone());
        }
        let path = self.keyring_file();
        let ring = match std::fs::read_to_string(&path) {
            Ok(text) => Keyring::parse(&text).with_context(|| {
                format!(
                    "{} is damaged: restore it from a backup, or values sealed to it stay unreadable",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Keyring::default(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let ring = Arc::new(ring);
        *cached = Some(ring.clone());
        Ok(ring)
    }

    /// Adds a fresh secret, durably, before anything publishes it.
    fn add_sealing_secret(&self) -> anyhow::Result<[u8; PUBLIC_BYTES]> {
        let mut ring = (*self.keyring()?).clone();
        let secret = Keyring::generate();
        ring.secrets.push(secret);
        crate::home::write_private(&self.keyring_file(), ring.text().as_bytes())?;
        *self.keyring.lock().map_err(|_| anyhow!("the keyring lock is poisoned"))? = Some(Arc::new(ring));
        Ok(Keyring::public(&secret))
    }

    fn key_record(&self, org: OrgId) -> anyhow::Result<RecordKey> {
        Ok(RecordKey {
            partition: system_partition(org),
            record_type: RecordType::parse(KEY_TYPE)?,
            id: engine::RecordId::parse(&partitions::hex::encode(&self.identity.author_key().0))?,
        })
    }

    /// The authority this node reads sealed fields for in `org`: its
    /// certificate's tag, when the org's profile seals some type to it.
    fn reader_tag(&self, org: OrgId) -> anyhow::Result<Option<String>> {
        let Ok((_, _, Some(tag))) = self.local_scope(org) else { return Ok(None) };
        let profile = self.store.profile(org)?;
        Ok(profile.types().values().any(|p| p.readers.as_deref() == Some(tag.as_str())).then_some(tag))
    }

    /// Publishes this node's newest sealing key in `org` if it reads sealed
    /// fields there and has not yet (making its first key if it has none).
    /// Returns the key published now.
    pub fn publish_sealing_key(&self, org: OrgId) -> anyhow::Result<Option<[u8; PUBLIC_BYTES]>> {
        let Some(tag) = self.reader_tag(org)? else { return Ok(None) };
        let public = match self.keyring()?.secrets.last() {
            Some(secret) => Keyring::public(secret),
            None => self.add_sealing_secret()?,
        };
        self.publish_key(org, &tag, public)
    }

    fn publish_key(&self, org: OrgId, tag: &str, public: [u8; PUBLIC_BYTES]) -> anyhow::Result<Option<[u8; 32]>> {
        let key = self.key_record(org)?;
        let published = self.store.view(&key)?.is_some_and(|v| {
            v.exists
                && v.conflicts.is_empty()
                && v.fields.get(KEY_PUBLIC_FIELD) == Some(&Value::Bytes(public.to_vec()))
                && v.fields.get(KEY_READERS_FIELD).and_then(Value::as_str) == Some(tag)
        });
        if published {
            return Ok(None);
        }
        let set = std::collections::BTreeMap::from([
            (KEY_READERS_FIELD.to_owned(), Value::Text(tag.to_owned())),
            (KEY_PUBLIC_FIELD.to_owned(), Value::Bytes(public.to_vec())),
        ]);
        self.put(org, KEY_TYPE, key.id.as_str(), SYSTEM_SEGMENT, set, BTreeSet::new())
            .context("cannot publish this node's sealing key in the org's system partition")?;
        Ok(Some(public))
    }

    /// `publish_sealing_key` in every org; failures are logged.
    pub fn publish_sealing_keys(&self) {
        let Ok(orgs) = self.orgs() else { return };
        for org in orgs {
            if let Err(e) = self.publish_sealing_key(org) {
                tracing::warn!("cannot publish this node's sealing key in org {org}: {e:#}");
            }
        }
    }

    /// `ferry sealing-key rotate`: a new key pair, published; the older
    /// secrets stay to open the values sealed to them.
    pub fn rotate_sealing_key(&self, org: OrgId) -> anyhow::Result<serde_json::Value> {
        let Some(tag) = self.reader_tag(org)? else {
            bail!(
                "this node reads no sealed field in org {org}: its certificate carries no authority that the profile names with --readers"
            )
        };
        let public = self.add_sealing_secret()?;
        self.publish_key(org, &tag, public)?;
        self.sealing_keys(org)
    }

    /// `ferry sealing-key show`: this node's keys, and the reader keys it
    /// knows, by readers.
    pub fn sealing_keys(&self, org: OrgId) -> anyhow::Result<serde_json::Value> {
        let ring = self.keyring()?;
        let published = self.store.view(&self.key_record(org)?)?.and_then(|v| match v.fields.get(KEY_PUBLIC_FIELD) {
            Some(Value::Bytes(b)) => Some(b.clone()),
            _ => None,
        });
        let own: Vec<serde_json::Value> = ring
            .secrets
            .iter()
            .map(|s| {
                let public = Keyring::public(s);
                json!({
                    "key_id": partitions::hex::encode(&key_id(&public)),
                    "published": published.as_deref() == Some(&public[..]),
                })
            })
            .collect();
        let profile = self.store.profile(org)?;
        let tags: BTreeSet<&String> = profile.types().values().filter_map(|p| p.readers.as_ref()).collect();
        let mut readers = Vec::new();
        for tag in tags {
            for k in self.store.reader_keys(org, tag)? {
                readers.push(json!({
                    "readers": tag,
                    "publisher": k.publisher,
                    "key_id": partitions::hex::encode(&key_id(&k.public)),
                }));
            }
        }
        Ok(json!({ "own": own, "readers": readers }))
    }

    /// Seals the sealed fields a write sets (`engine::sealed`). A value this
    /// node already sealed, or an envelope a resolve takes, stays as it is;
    /// a placeholder keeps the value the record holds; a value equal to
    /// what the record holds (when this node can open it) keeps that, so an
    /// import run again writes nothing.
    pub(super) fn seal_write(&self, org: OrgId, write: &mut LocalWrite) -> anyhow::Result<()> {
        let LocalOp::Put { set, .. } = &mut write.op else { return Ok(()) };
        let record = &write.record;
        let policy = self.store.policy(&record.partition, &record.record_type)?;
        let fields: Vec<String> = set.keys().filter(|f| policy.sealed.contains(*f)).cloned().collect();
        let Some(readers) = policy.readers.as_deref().filter(|_| !fields.is_empty()) else { return Ok(()) };
        let current = self.store.view(record)?.unwrap_or_default();
        let mut keys: Option<Vec<[u8; PUBLIC_BYTES]>> = None;
        for field in fields {
            let value = set.remove(&field).expect("listed from the set");
            if Envelope::from_value(&value).is_some() {
                set.insert(field, value);
                continue;
            }
            let held = current.fields.get(&field).filter(|v| Envelope::from_value(v).is_some());
            if readers_of(&value).is_some() {
                match held {
                    Some(v) => set.insert(field, v.clone()),
                    None => bail!(
                        "field {field}: {{\"$sealed\": …}} stands for a sealed value this node cannot read; write the value itself, or leave the field out to keep what the record holds"
                    ),
                };
                continue;
            }
            if holds_sealed(&value) {
                bail!("field {field}: {} is reserved for sealed values", engine::sealed::SEALED_KEY);
            }
            let mut refs = BTreeSet::new();
            engine::blob::refs_in(&value, &mut refs).map_err(|e| anyhow!("field {field}: {e}"))?;
            if !refs.is_empty() {
                bail!("field {field} is sealed and cannot hold a blob reference: the blob would travel unsealed");
            }
            if let Some(v) = held
                && self.open_value(record, &field, v)? == Some(value.clone())
            {
                set.insert(field, v.clone());
                continue;
            }
            let keys = match &keys {
                Some(keys) => keys,
                None => keys.insert(self.store.reader_keys(org, readers)?.into_iter().map(|k| k.public).collect()),
            };
            if keys.is_empty() {
                bail!(
                    "field {field} of {} is sealed to the readers {readers}, and this node knows no key they published: sync with a node whose certificate carries authority {readers} first; nothing was written",
                    record.record_type
                );
            }
            let plaintext = engine::stored::encode_value(&value);
            let envelope = seal_to(keys, readers, &associated_data(record, &field), &plaintext)?;
            set.insert(field, envelope.to_value());
        }
        Ok(())
    }

    /// A sealed value's plaintext, when this node holds a key it opens with.
    fn open_value(&self, record: &RecordKey, field: &str, value: &Value) -> anyhow::Result<Option<Value>> {
        let Some(envelope) = Envelope::from_value(value) else { return Ok(None) };
        let ring = self.keyring()?;
        if ring.secrets.is_empty() {
            return Ok(None);
        }
        let aad = associated_data(record, field);
        for sealed in &envelope.boxes {
            for secret in ring.secret_for(&sealed.key_id) {
                if let Some(plain) = open_box(secret, sealed, &aad) {
                    return Ok(engine::stored::decode_value(&plain).ok());
                }
            }
        }
        Ok(None)
    }

    /// Shows a view as this node may: each sealed value opened when it can
    /// be, else its placeholder.
    pub fn unseal_view(&self, record: &RecordKey, view: &mut View) -> anyhow::Result<()> {
        for (field, value) in view.fields.iter_mut() {
            self.unseal_value(record, field, value)?;
        }
        for conflict in view.conflicts.iter_mut() {
            if let (Some(field), Some(value)) = (&conflict.field, conflict.value.as_mut()) {
                self.unseal_value(record, field, value)?;
            }
        }
        Ok(())
    }

    fn unseal_value(&self, record: &RecordKey, field: &str, value: &mut Value) -> anyhow::Result<()> {
        let Some(readers) = readers_of(value).map(str::to_owned) else { return Ok(()) };
        *value = self.open_value(record, field, value)?.unwrap_or_else(|| placeholder(&readers));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_sealed_to_two_keys_opens_with_either_and_only_for_its_record_and_field() {
        let (a, b) = (Keyring::generate(), Keyring::generate());
        let keys = [Keyring::public(&a), Keyring::public(&b)];
        let envelope = seal_to(&keys, "central", b"record|answer", b"42").expect("seals");
        assert_eq!(envelope.boxes.len(), 2);
        for (secret, sealed) in [(&a, &envelope.boxes[0]), (&b, &envelope.boxes[1])] {
            assert_eq!(open_box(secret, sealed, b"record|answer").as_deref(), Some(&b"42"[..]));
            assert_eq!(open_box(secret, sealed, b"other|answer"), None, "bound to where it was written");
        }
        assert_eq!(open_box(&a, &envelope.boxes[1], b"record|answer"), None, "the other key's box");
        let ring = Keyring::parse(&Keyring { secrets: vec![a, b] }.text()).expect("reads");
        assert_eq!(ring.secret_for(&envelope.boxes[1].key_id).collect::<Vec<_>>(), [&b]);
        assert!(Keyring::parse("not hex\n").is_err());
    }
}
