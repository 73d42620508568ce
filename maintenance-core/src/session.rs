//! Web sessions as the backends store them: never the id, only a hash of it
//! ([`SessionKey`]), with the time of its last activity. A session is live
//! while its last activity plus the session timeout lies ahead.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::Timestamp;

/// A session as stored: the hex SHA-256 of its id. The id itself is never
/// written anywhere, and no id can turn into a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionKey(String);

impl SessionKey {
    /// The key of session id `id` (the cookie's value).
    pub fn of(id: &[u8]) -> Self {
        let digest = Sha256::digest(id);
        SessionKey(crate::hex::encode(&digest[..16]))
    }

    /// A key read back from storage, if it has the shape of one.
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 32 && crate::hex::is_lower(text.as_bytes()))
            .then(|| SessionKey(text.to_owned()))
    }

    /// The key as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first eight characters, as `offline list` shows them.
    pub fn short(&self) -> &str {
        &self.0[..8]
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEntry {
    /// Its key.
    pub key: SessionKey,
    /// Its last recorded activity (a backend may round this down to the
    /// start of a short time bucket).
    pub last_seen: Timestamp,
    /// When it stops counting, if nothing touches it again (a backend may
    /// round this up, never down).
    pub expires_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hashes_and_never_paths() {
        let k = SessionKey::of(b"../../etc/passwd");
        assert_eq!(k.as_str().len(), 32);
        assert!(k.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(k, SessionKey::of(b"../../etc/passwd2"));
        assert_eq!(SessionKey::parse(k.as_str()), Some(k.clone()));
        assert_eq!(SessionKey::parse("../x"), None);
        assert_eq!(k.short().len(), 8);
    }
}
