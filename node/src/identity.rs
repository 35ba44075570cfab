//! The node's identity: one Ed25519 key, which is at once its libp2p identity
//! (the PeerId is derived from it) and the subject key of its certificates.

use std::path::Path;

use anyhow::{Context, bail};
use ed25519_dalek::SigningKey;
use engine::AuthorKey;
use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};

pub struct Identity {
    pub key: SigningKey,
}

impl Identity {
    pub fn generate() -> Identity {
        Identity { key: SigningKey::from_bytes(&crate::random::bytes::<32>()) }
    }

    /// Reads the 32-byte secret written by `save`.
    pub fn load(path: &Path) -> anyhow::Result<Identity> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read the node key {}", path.display()))?;
        let secret: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| anyhow::anyhow!("{} is not a ferry node key (32 bytes)", path.display()))?;
        Ok(Identity { key: SigningKey::from_bytes(&secret) })
    }

    /// Writes the secret, readable by the owner only.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        crate::home::write_private(path, &self.key.to_bytes())
    }

    pub fn author_key(&self) -> AuthorKey {
        AuthorKey(self.key.verifying_key().to_bytes())
    }

    pub fn keypair(&self) -> Keypair {
        Keypair::ed25519_from_bytes(self.key.to_bytes()).expect("32 bytes are an ed25519 secret")
    }

    pub fn peer_id(&self) -> PeerId {
        peer_id_of(&self.author_key().0)
    }
}

/// The PeerId of an Ed25519 public key.
pub fn peer_id_of(key: &[u8; 32]) -> PeerId {
    let public = libp2p::identity::ed25519::PublicKey::try_from_bytes(key).expect("32 bytes are an ed25519 public key");
    PublicKey::from(public).to_peer_id()
}

/// The Ed25519 key inside a PeerId (ferry PeerIds always embed it).
pub fn key_of(peer: &PeerId) -> Option<[u8; 32]> {
    let multihash: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if multihash.code() != 0x00 {
        return None;
    }
    let public = PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    Some(public.try_into_ed25519().ok()?.to_bytes())
}

/// Parses a PeerId typed by a person, with a clear error.
pub fn parse_peer_id(text: &str) -> anyhow::Result<PeerId> {
    // The library's error repeats itself and says nothing a user can act on.
    let peer: PeerId = text
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{text:?} is not a peer id (one looks like 12D3KooW…, as `ferry id` prints)"))?;
    if key_of(&peer).is_none() {
        bail!("peer id {peer} does not embed an Ed25519 key, so it cannot be a ferry node");
    }
    Ok(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_embeds_the_key_and_gives_it_back() {
        let identity = Identity { key: SigningKey::from_bytes(&[5; 32]) };
        let peer = identity.peer_id();
        assert_eq!(key_of(&peer), Some(identity.author_key().0));
        assert_eq!(identity.keypair().public().to_peer_id(), peer);
        assert_eq!(parse_peer_id(&peer.to_string()).unwrap(), peer);
    }
}
