//! The site's [`Mode`] and the record that stores it ({mode, since, by, pid,
//! message, retry_after}), plus [`ModeView`], what a reader learns: the record
//! and the mode in force once a lapsed PENDING (I5) is taken into account.
//!
//! **The record as stored, and binaries that predate the read-only tier.**
//! A binary built before READONLY knows three modes and reads `mode` alone
//! (it ignores unknown keys, and would call an unknown mode corrupt, telling
//! its operator to `offline off --force` it). So the stored `mode` is always
//! one such a binary knows — the mode it must act on, failing closed — and
//! the mode in force, when it differs, is in `tier`
//! ([`ModeRecord::legacy_mode`]):
//!
//! | mode in force | `mode` stored | `tier` | an old binary |
//! |---|---|---|---|
//! | ONLINE, PENDING, OFFLINE | itself | — | reads it as it is |
//! | READONLY_PENDING | `PENDING` | `READONLY_PENDING` | a drain that lapses to ONLINE with its waiter, as this one does |
//! | READONLY | `OFFLINE` | `READONLY` | OFFLINE: its layer turns everyone away |
//! | PENDING begun from READONLY | `OFFLINE` | `PENDING` (`from: READONLY`) | OFFLINE, never the ONLINE its lapse would give |
//!
//! A `tier` this binary does not know (a newer binary's) is read as the
//! stored `mode`, for the same reason.

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
    /// new gets in. Lives only as long as a waiter (I5); begun from
    /// READONLY ([`ModeRecord::from`]), writes stay refused and it lapses
    /// back to READONLY.
    Pending,
    /// In maintenance: nobody gets in.
    Offline,
    /// Going read-only: unsafe requests are answered 503 at once, tracked
    /// commands that may write are refused and drain by their policy, and
    /// the site goes READONLY once nothing that may write is live. Web
    /// sessions do not hold it off. Lives only as long as a waiter (I5):
    /// a killed one leaves the site ONLINE.
    #[serde(rename = "READONLY_PENDING")]
    ReadOnlyPending,
    /// Read-only: safe requests (GET, HEAD, OPTIONS) pass for everyone,
    /// unsafe ones get 503; only read-only and `allowed` commands start.
    /// Persists until someone turns it ONLINE or OFFLINE.
    #[serde(rename = "READONLY")]
    ReadOnly,
}

impl Mode {
    /// `ONLINE`, `PENDING`, `OFFLINE`, `READONLY_PENDING` or `READONLY`, as
    /// status lines print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Online => "ONLINE",
            Mode::Pending => "PENDING",
            Mode::Offline => "OFFLINE",
            Mode::ReadOnlyPending => "READONLY_PENDING",
            Mode::ReadOnly => "READONLY",
        }
    }

    /// Whether this mode is a maintenance mode (any but ONLINE).
    pub fn is_maintenance(self) -> bool {
        self != Mode::Online
    }

    /// Whether this is a draining phase, which lives only as long as a
    /// waiter (I5): PENDING or READONLY_PENDING.
    pub fn is_draining(self) -> bool {
        matches!(self, Mode::Pending | Mode::ReadOnlyPending)
    }

    /// The mode named `text` as status prints it (`READONLY`), if any.
    pub fn parse(text: &str) -> Option<Mode> {
        [
            Mode::Online,
            Mode::Pending,
            Mode::Offline,
            Mode::ReadOnlyPending,
            Mode::ReadOnly,
        ]
        .into_iter()
        .find(|m| m.as_str() == text)
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
/// record or the new one, never a torn one (I5). Stored as the module docs
/// say, so that binaries that predate READONLY read it as OFFLINE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "WireRecord", from = "WireRecord")]
pub struct ModeRecord {
    /// The mode this record sets.
    pub mode: Mode,
    /// For a draining mode, the mode it lapses back to when its waiters are
    /// gone (I5): `Some(READONLY)` for a PENDING begun from READONLY;
    /// `None` means ONLINE. Never set on other modes.
    pub from: Option<Mode>,
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
            from: None,
            since: Timestamp::EPOCH,
            by: String::new(),
            pid: 0,
            message: None,
            retry_after: None,
            bypass: None,
            generation: 0,
        }
    }

    /// The mode this record sets for a binary that predates READONLY,
    /// stored as `mode`: the one such a binary must act on, never more
    /// open than the mode in force (see the module docs).
    pub fn legacy_mode(&self) -> Mode {
        match (self.mode, self.from) {
            (Mode::Pending, Some(Mode::ReadOnly)) => Mode::Offline,
            (Mode::ReadOnlyPending, _) => Mode::Pending,
            (Mode::ReadOnly, _) => Mode::Offline,
            (mode, _) => mode,
        }
    }

    /// The mode in force once this record's waiters are gone: the mode a
    /// draining record lapses to (ONLINE, or READONLY for a PENDING begun
    /// there); any other record's own mode.
    pub fn lapses_to(&self) -> Mode {
        if self.mode.is_draining() {
            self.from.unwrap_or(Mode::Online)
        } else {
            self.mode
        }
    }
}

/// The record as `mode.json` holds it: `mode` is the legacy mode, `tier`
/// the mode in force where it differs (module docs).
#[derive(Serialize, Deserialize)]
struct WireRecord {
    mode: Mode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    since: Timestamp,
    by: String,
    pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_after: Option<RetryAfter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bypass: Option<String>,
    #[serde(default)]
    generation: u64,
}

impl From<ModeRecord> for WireRecord {
    fn from(r: ModeRecord) -> Self {
        let legacy = r.legacy_mode();
        WireRecord {
            mode: legacy,
            tier: (r.mode != legacy).then(|| r.mode.as_str().to_owned()),
            from: r.from.map(|m| m.as_str().to_owned()),
            since: r.since,
            by: r.by,
            pid: r.pid,
            message: r.message,
            retry_after: r.retry_after,
            bypass: r.bypass,
            generation: r.generation,
        }
    }
}

impl From<WireRecord> for ModeRecord {
    fn from(w: WireRecord) -> Self {
        // A tier this binary does not know is a newer binary's: act on the
        // legacy mode it stored for exactly such readers.
        let mode = w.tier.as_deref().and_then(Mode::parse).unwrap_or(w.mode);
        let from = w
            .from
            .as_deref()
            .and_then(Mode::parse)
            .filter(|_| mode.is_draining());
        ModeRecord {
            mode,
            from,
            since: w.since,
            by: w.by,
            pid: w.pid,
            message: w.message,
            retry_after: w.retry_after,
            bypass: w.bypass,
            generation: w.generation,
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
    /// The record of the mode in force: the stored one, or, for a drain
    /// whose waiters are gone, the same record in the mode it lapsed to
    /// (no `from`). What a writer that keeps the mode in force (an
    /// activation that finds the site there already) returns and writes
    /// back, so that nobody is told a lapsed drain is under way.
    pub fn record_in_force(&self) -> ModeRecord {
        let mut r = self.record.clone();
        if self.lapsed.is_some() {
            r.mode = self.mode;
            r.from = None;
        }
        r
    }

    /// Whether unsafe requests are refused and only read-only or `allowed`
    /// commands start: READONLY_PENDING, READONLY, and a PENDING begun from
    /// READONLY (it is going on to OFFLINE, and writes stay stopped).
    pub fn writes_refused(&self) -> bool {
        matches!(self.mode, Mode::ReadOnlyPending | Mode::ReadOnly)
            || (self.mode == Mode::Pending && self.record.from == Some(Mode::ReadOnly))
    }

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
    fn a_read_only_record_is_stored_as_offline_for_binaries_that_predate_it() {
        let mut r = ModeRecord::initial();
        r.mode = Mode::ReadOnly;
        r.message = Some("Read-only during the upgrade".into());
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["mode"], "OFFLINE");
        assert_eq!(json["tier"], "READONLY");
        assert_eq!(serde_json::from_value::<ModeRecord>(json).unwrap(), r);

        r.mode = Mode::ReadOnlyPending;
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            (&json["mode"], &json["tier"]),
            (&"PENDING".into(), &"READONLY_PENDING".into())
        );
        assert_eq!(serde_json::from_value::<ModeRecord>(json).unwrap(), r);

        // A PENDING begun from READONLY lapses to READONLY: an old reader,
        // whose PENDING lapses to ONLINE, must see OFFLINE instead.
        r.mode = Mode::Pending;
        r.from = Some(Mode::ReadOnly);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            (&json["mode"], &json["tier"]),
            (&"OFFLINE".into(), &"PENDING".into())
        );
        assert_eq!(json["from"], "READONLY");
        let back: ModeRecord = serde_json::from_value(json).unwrap();
        assert_eq!(
            (back.mode, back.lapses_to()),
            (Mode::Pending, Mode::ReadOnly)
        );

        // The three old modes are stored exactly as before: no tier.
        for mode in [Mode::Online, Mode::Pending, Mode::Offline] {
            let mut r = ModeRecord::initial();
            r.mode = mode;
            let json = serde_json::to_value(&r).unwrap();
            assert_eq!(json["mode"], mode.as_str());
            assert!(
                json.get("tier").is_none() && json.get("from").is_none(),
                "{json}"
            );
        }
    }

    #[test]
    fn an_unknown_tier_is_read_as_the_stored_mode() {
        let r: ModeRecord = serde_json::from_str(
            r#"{"mode":"OFFLINE","tier":"SOMETHING_NEWER","since":"2026-01-01T00:00:00Z","by":"x","pid":1}"#,
        )
        .unwrap();
        assert_eq!(r.mode, Mode::Offline);
    }

    #[test]
    fn retry_after_accepts_a_time() {
        let r: RetryAfter = serde_json::from_str("\"2026-11-25T05:00:00Z\"").unwrap();
        assert!(matches!(r, RetryAfter::At(_)));
    }
}
