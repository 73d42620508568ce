//! Secrets are stored only as their SHA-256 (a task's secret, the bypass
//! secret), and a secret presented is checked against a stored digest in
//! one place, in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The SHA-256 of `data`, as lowercase hex: what the state stores of a
/// secret.
pub fn sha256_hex(data: &[u8]) -> String {
    crate::hex::encode(&Sha256::digest(data))
}

/// Whether `secret` is the secret whose SHA-256 is `stored`, compared in
/// constant time (over the digests: the stored digest is not secret, the
/// secret is).
pub fn secret_matches(secret: &[u8], stored: &[u8; 32]) -> bool {
    Sha256::digest(secret).as_slice().ct_eq(stored).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_matches_its_own_digest_only() {
        let stored = crate::hex::decode::<32>(sha256_hex(b"s3cret").as_bytes()).unwrap();
        assert!(secret_matches(b"s3cret", &stored));
        assert!(!secret_matches(b"s3cret!", &stored));
        assert!(!secret_matches(b"", &stored));
    }
}
