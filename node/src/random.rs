//! Randomness from the operating system, for keys, secrets, serials and ids.

use rand::TryRng as _;

pub fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::rngs::SysRng.try_fill_bytes(&mut out).expect("the operating system provides randomness");
    out
}

/// A cryptographic generator for APIs that want one.
pub fn rng() -> rand::rand_core::UnwrapErr<rand::rngs::SysRng> {
    rand::rand_core::UnwrapErr(rand::rngs::SysRng)
}
