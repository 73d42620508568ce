//! The site's [`Mode`] and the record that stores it ({mode, since, by, pid,
//! message, retry_after}), plus [`ModeView`], what a reader learns: the record
//! and the mode in force once a lapsed PENDING (I5) is taken into account.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;

/// Where the site stands.
///
/// Non-exhaustive: a crate outside this one matches it with a `_` arm, so
/// that a mode added later is not a breaking change for plug-ins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[non_exhaustive]
pub enum Mode {
    /// Serving everyone.
    Online,
    /// Going offline: current users and running commands may finish, nobody
    /// new gets in. Lives only as long as a waiter (I5).
    Pending,
    /// In maintenance: nobody gets in.
    Offline,
}

impl Mode {
    /// `ONLINE`, `PENDING` or `OFFLINE`, as status lines print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Online => "ONLINE",
            Mode::Pending => "PENDING",
            Mode::Offline => "OFFLINE",
        }
    }

    /// Whether this mode is a maintenance mode (PENDING or OFFLINE).
    pub fn is_maintenance(self) -> bool {
        self != Mode::Online
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When clients should come back: `Retry-After` as seconds or as a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RetryAfter {
    /// This many seconds after the response.
    Seconds(u64),
    /// At this time.
    At(Timestamp),
}

impl RetryAfter {
    /// A `Retry-After` of this many seconds.
    pub fn after(d: Duration) -> Self {
        RetryAfter::Seconds(d.as_secs())
    }
}

/// The stored mode record. Replaced whole, atomically: readers see the old
/// record or the new one, never a torn one (I5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeRecord {
    /// The mode this record sets.
    pub mode: Mode,
    /// When this mode began.
    pub since: Timestamp,
    /// Who set it, as `user@host`.
    pub by: String,
    /// The process that set it.
    pub pid: u32,
    /// The operator's message for users, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When users should come back, if said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<RetryAfter>,
    /// The SHA-256 (hex) of the bypass secret, if one was set: only its
    /// hash is stored, so reading the state forges nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bypass: Option<String>,
    /// Counts every write of the record, so a change is seen by comparing
    /// one number and a conditional write can check nobody wrote in between.
    #[serde(default)]
    pub generation: u64,
}

impl ModeRecord {
    /// The record of a site that has never been taken offline.
    pub fn initial() -> Self {
        ModeRecord {
            mode: Mode::Online,
            since: Timestamp::EPOCH,
            by: String::new(),
            pid: 0,
            message: None,
            retry_after: None,
            bypass: None,
            generation: 0,
        }
    }
}

/// The hex SHA-256 of a bypass secret, as the mode record stores it.
pub fn hash_secret(secret: &str) -> String {
    crate::digest::sha256_hex(secret.as_bytes())
}

/// A fresh random bypass secret: 128 bits, hex.
pub fn new_secret() -> String {
    crate::random::hex::<16>()
}

/// Why a PENDING record no longer holds: its waiters are gone (I5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lapse {
    /// The PENDING record that lapsed.
    pub record: ModeRecord,
    /// What happened, in a sentence.
    pub reason: String,
}

/// What a reader learns about the mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeView {
    /// The mode in force: the record's, except that a PENDING whose waiters
    /// have all gone reads as ONLINE (I5).
    pub mode: Mode,
    /// The stored record.
    pub record: ModeRecord,
    /// Set when the record says PENDING but nobody waits any more.
    pub lapsed: Option<Lapse>,
    /// Set when the web-server marker disagrees with the record (a crash
    /// between the two writes) and this look could not put it right (a
    /// mode change under way, or a user who may not write the state); the
    /// next look or writer that can, does.
    pub stray_marker: Option<String>,
}

impl ModeView {
    /// The view of a given record taken at face value.
    pub fn of(record: ModeRecord) -> Self {
        ModeView {
            mode: record.mode,
            record,
            lapsed: None,
            stray_marker: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_serialises_with_the_documented_field_names() {
        let mut r = ModeRecord::initial();
        r.mode = Mode::Offline;
        r.by = "root@web1".into();
        r.message = Some("Back soon".into());
        r.retry_after = Some(RetryAfter::Seconds(600));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["mode"], "OFFLINE");
        assert_eq!(json["by"], "root@web1");
        assert_eq!(json["message"], "Back soon");
        assert_eq!(json["retry_after"], 600);
        assert_eq!(json["since"], "1970-01-01T00:00:00.000Z");
        let back: ModeRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn retry_after_accepts_a_time() {
        let r: RetryAfter = serde_json::from_str("\"2026-11-25T05:00:00Z\"").unwrap();
        assert!(matches!(r, RetryAfter::At(_)));
    }
}
