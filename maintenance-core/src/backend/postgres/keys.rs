//! The advisory lock keys: every key this backend takes, in one place.
//!
//! All are of the two-int form `(class, object)`, which PostgreSQL keeps
//! apart from the one-bigint form (`pg_locks.objsubid` 2, not 1): an
//! application's own `pg_advisory_lock(bigint)` never meets ours.
//!
//! - **class** — the site's class: the first four bytes of
//!   SHA-256(`"manage site\0" schema "\0" site`). Two sites (or two schemas)
//!   get two classes; should two ever hash alike, task, waiter and instance
//!   keys still cannot meet (they come from sequences of the one schema,
//!   or differ by schema), and only the reserved keys below would be shared,
//!   which serialises the two sites' mode changes and nothing more.
//! - **object**, by range:
//!   - `0 ..= 1023` reserved: [`GATE`] (mode changes exclusive, task starts
//!     and joins shared), [`WINDOW`] (the `offline run` holding the
//!     window), [`SCHEDULE`] (reserved, unused: a scheduled window's holder
//!     holds a key of its own, so that a new schedule can be set while an
//!     ended one's process still lets go), [`HISTORY`] (the one pruner of
//!     the history at a time); the rest is kept for later.
//!   - `1024 ..= 2^31-1`: a task's, a waiter's, a schedule's or a web
//!     layer's (writes in flight, `readonly.rs`) own key, its row's number
//!     from the sequence `lock_keys` (which cycles; a start that finds its
//!     number still held draws the next). Held exclusively by the holder's
//!     connection for its lifetime; probed shared (a probe never makes a
//!     dead holder look live to another reader).
//!   - `-1 ..= -(2^31-1)`: a command's instance lock (one run per name),
//!     the negated number of the command's row in `instances` (sequence
//!     `instance_keys`): negative, so never a task's.
//! - Schema creation: the class of SHA-256(`"manage schema\0" schema`),
//!   object [`SCHEMA_CREATION`], taken per transaction while the schema is
//!   created or migrated; under the same class, [`POOLING_PROBE`], the
//!   session lock `offline doctor` takes for a moment to see whether it
//!   survives a transaction (a pooler in transaction mode).
//! - The site's **NOTIFY channel** ([`channel`]) is named here too, from the
//!   same hash as its class: `manage_` and 16 hex digits, a plain
//!   identifier whatever the site's and the schema's names hold, and well
//!   under PostgreSQL's 63 bytes (a longer name would be cut, silently
//!   merging channels).

use sha2::{Digest, Sha256};

/// The gate: mode changes take it exclusively, task starts shared.
pub(super) const GATE: i32 = 1;
/// The window of an `offline run` (`window.rs`).
pub(super) const WINDOW: i32 = 2;
/// Reserved (see the module docs).
#[allow(dead_code)]
pub(super) const SCHEDULE: i32 = 3;
/// The history's pruning: taken per transaction, tried, never waited for
/// (`history.rs`).
pub(super) const HISTORY: i32 = 4;
/// The first object id of task and waiter keys (`lock_keys`' minimum).
pub(super) const FIRST_LOCK_KEY: i32 = 1024;
/// The object id, under [`schema_class`], of schema creation.
pub(super) const SCHEMA_CREATION: i32 = 0;
/// The object id, under [`schema_class`], of `offline doctor`'s pooling
/// probe.
pub(super) const POOLING_PROBE: i32 = 1;

/// The class of a site's keys.
pub(super) fn site_class(schema: &str, site: &str) -> i32 {
    class_of(&["manage site", schema, site])
}

/// The NOTIFY channel of a site's mode changes (`listen.rs`): an identifier
/// that needs no quoting (lower-case letters, digits, `_`), quoted anyway
/// where it is used.
pub(super) fn channel(schema: &str, site: &str) -> String {
    let mut h = Sha256::new();
    for p in ["manage channel", schema, site] {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let hex: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("manage_{hex}")
}

/// The class of a schema's creation lock.
pub(super) fn schema_class(schema: &str) -> i32 {
    class_of(&["manage schema", schema])
}

/// The object id of an instance lock, from its row's number.
pub(super) fn instance_key(row: i32) -> i32 {
    -row
}

fn class_of(parts: &[&str]) -> i32 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    i32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_and_schemas_get_classes_of_their_own() {
        assert_ne!(site_class("manage", "a"), site_class("manage", "b"));
        assert_ne!(site_class("manage", "a"), site_class("other", "a"));
        // No ambiguity between the parts: ("ab", "c") is not ("a", "bc").
        assert_ne!(site_class("ab", "c"), site_class("a", "bc"));
        assert_eq!(site_class("manage", "a"), site_class("manage", "a"));
        assert!(instance_key(1) < 0 && instance_key(i32::MAX) < 0);
        // Channels: one per site and schema, plain identifiers whatever
        // the names hold.
        let hostile = channel("manage", "x\"; DROP TABLE t; --\u{e9}");
        assert!(hostile.len() < 63, "{hostile}");
        assert!(
            hostile
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{hostile}"
        );
        assert_ne!(channel("manage", "a"), channel("manage", "b"));
        assert_ne!(channel("manage", "a"), channel("other", "a"));
        assert_ne!(channel("ab", "c"), channel("a", "bc"));
        const {
            assert!(
                GATE < FIRST_LOCK_KEY
                    && WINDOW < FIRST_LOCK_KEY
                    && SCHEDULE < FIRST_LOCK_KEY
                    && HISTORY < FIRST_LOCK_KEY
            )
        };
    }
}
