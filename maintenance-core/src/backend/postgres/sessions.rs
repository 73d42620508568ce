//! Web sessions on PostgreSQL: one row per site and session, keyed by the
//! hash the file backend stores ([`SessionKey`], never the id), holding its
//! last touch and its expiry, both by the server's clock; counted through
//! the index on `(site, expires_ms)`.
//!
//! **Time.** "Now" is the server's `now()`, moved by how far the backend's
//! clock has let time pass beyond the real one (zero for the real clock):
//! measured by the boot clock, so a step of a process's wall clock —
//! which the conformance suite's clock can make — neither expires a
//! session nor makes anyone remove one. Every host judges by the one
//! server clock, so a reader never removes what another host still
//! counts; only what is expired by it is deleted. A touch stores its
//! expiry (its time plus the toucher's timeout plus [`EXPIRY_MARGIN`]), so
//! hosts with different timeouts agree on each session too. Times are
//! shown on the backend's own wall clock.
//!
//! **Statements.** A touch, of one key or of the web layer's whole batch,
//! is one `INSERT … SELECT unnest(…) ON CONFLICT … DO UPDATE` (keys sorted,
//! so two hosts' batches lock rows in one order); the summary is one
//! `count(*)` over the index; a listing deletes the expired and reads the
//! live in one round trip. A statement that lost a deadlock against
//! another host's (a listing deleting expired rows that a batch revives)
//! is run again.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_postgres::error::SqlState;

use super::sql::{self, Rows, int, text};
use super::{Inner, runtime, timestamp_ms};
use crate::backend::SessionSummary;
use crate::clock::{Clock, SystemClock};
use crate::error::Result;
use crate::session::{SessionEntry, SessionKey};

/// How long past its timeout a session still counts: the file backend's
/// five-second buckets round expiry up as far. It keeps a session whose
/// next touch is in the web layer's batch (written within a few seconds)
/// from lapsing between the two, and absorbs the round trip by which a
/// moved clock's "now" (read here, applied on the server) can be late.
pub(super) const EXPIRY_MARGIN: Duration = Duration::from_secs(5);

/// The most keys one statement of a batch carries; a bigger batch is
/// several statements, still one round trip.
const KEYS_PER_STATEMENT: usize = 10_000;

/// How often a statement that lost a deadlock is tried again.
const DEADLOCK_TRIES: usize = 4;

/// This area's tables in schema version 1 (`schema.rs`), given the quoted
/// schema name. Times are milliseconds since the epoch, by the server's
/// clock.
pub(super) fn tables(s: &str) -> String {
    format!(
        "CREATE TABLE {s}.sessions (
             site text NOT NULL,
             key text NOT NULL,
             last_seen_ms bigint NOT NULL,
             expires_ms bigint NOT NULL,
             PRIMARY KEY (site, key)
         );
         CREATE INDEX sessions_by_expiry ON {s}.sessions (site, expires_ms);"
    )
}

/// "Now" for one operation: as SQL (milliseconds since the epoch by the
/// server, moved as the backend's clock moves time), and how far a stored
/// time is moved to be shown on the backend's wall clock.
struct Now {
    ms_sql: String,
    shown_ms: i64,
}

/// `a - b` in microseconds, either way.
fn micros_between(a: SystemTime, b: SystemTime) -> i128 {
    match a.duration_since(b) {
        Ok(d) => d.as_micros() as i128,
        Err(e) => -(e.duration().as_micros() as i128),
    }
}

/// Microseconds to whole milliseconds, zero for less than one (the real
/// clock read twice differs by a few microseconds).
fn to_ms(micros: i128) -> i64 {
    if micros.abs() < 1_000 {
        0
    } else {
        (micros / 1_000).clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }
}

impl Now {
    fn of(clock: &dyn Clock) -> Now {
        let wall = micros_between(clock.now(), SystemTime::now());
        // Time passed on this clock beyond the real one: by the boot clock
        // while it is this boot's (a wall step moves no session), by the
        // wall clock across a (simulated) reboot or without a boot clock.
        let passed = match (clock.boot_time(), SystemClock.boot_time()) {
            (Some(c), Some(r)) if c.boot == r.boot => {
                c.since_boot.as_micros() as i128 - r.since_boot.as_micros() as i128
            }
            _ => wall,
        };
        // A sub-select, evaluated once per statement (a filter's
        // expression would be evaluated per row), that an index condition
        // can use.
        let server = "floor(extract(epoch from now()) * 1000)::bigint";
        let ms_sql = match to_ms(passed) {
            0 => format!("(SELECT {server})"),
            ms => format!("(SELECT {server} + {ms})"),
        };
        Now {
            ms_sql,
            shown_ms: to_ms(wall - passed),
        }
    }

    /// A stored time, as the backend's clock shows it.
    fn show(&self, stored_ms: i64) -> crate::clock::Timestamp {
        timestamp_ms(stored_ms.saturating_add(self.shown_ms))
    }
}

impl Inner {
    fn sessions_table(&self) -> String {
        format!("{}.sessions", self.s())
    }

    /// A session's life from a touch: the timeout and the margin, in ms.
    fn session_life_ms(&self) -> i64 {
        (self.session_timeout + EXPIRY_MARGIN)
            .as_millis()
            .min(i64::MAX as u128) as i64
    }

    /// The statements touching `keys` (sorted, each once) at `now`: one
    /// per [`KEYS_PER_STATEMENT`].
    fn touch_sql(&self, keys: &[&SessionKey], now: &Now) -> String {
        let mut out = String::new();
        for chunk in keys.chunks(KEYS_PER_STATEMENT) {
            let list = chunk
                .iter()
                .map(|k| sql::lit(k.as_str()))
                .collect::<Vec<_>>()
                .join(",");
            if !out.is_empty() {
                out.push_str("; ");
            }
            out.push_str(&format!(
                "INSERT INTO {t} AS o (site, key, last_seen_ms, expires_ms) \
                 SELECT {site}, k, n, n + {life} FROM (SELECT {now} AS n) AS t, \
                 unnest(ARRAY[{list}]::text[]) AS k \
                 ON CONFLICT (site, key) DO UPDATE SET \
                 last_seen_ms = GREATEST(o.last_seen_ms, EXCLUDED.last_seen_ms), \
                 expires_ms = GREATEST(o.expires_ms, EXCLUDED.expires_ms) \
                 WHERE o.last_seen_ms < EXCLUDED.last_seen_ms OR o.expires_ms < EXCLUDED.expires_ms",
                t = self.sessions_table(),
                site = self.site_lit(),
                life = self.session_life_ms(),
                now = now.ms_sql,
            ));
        }
        out
    }

    /// The one statement of the summary: how many sessions are live and
    /// when the last expires, counted through `sessions_by_expiry`.
    fn summary_sql(&self, now: &Now) -> String {
        format!(
            "SELECT count(*), max(expires_ms) FROM {t} WHERE site = {site} AND expires_ms > {now}",
            t = self.sessions_table(),
            site = self.site_lit(),
            now = now.ms_sql
        )
    }

    /// Deletes what is expired by the server's clock; one row, the count.
    fn prune_sql(&self, now: &Now) -> String {
        format!(
            "WITH gone AS (DELETE FROM {t} WHERE site = {site} AND expires_ms <= {now} RETURNING 1) \
             SELECT count(*) FROM gone",
            t = self.sessions_table(),
            site = self.site_lit(),
            now = now.ms_sql
        )
    }

    /// Runs `sql` on a pooled connection, again when it lost a deadlock
    /// (or found its connection closed, once).
    async fn run_sessions_sql(&self, sql: &str) -> Result<Vec<Rows>> {
        let mut tries = 0;
        loop {
            tries += 1;
            let conn = self.take().await?;
            match sql::run(&conn.client, sql).await {
                Ok(rows) => {
                    self.give(conn);
                    return Ok(rows);
                }
                Err(e)
                    if tries < DEADLOCK_TRIES
                        && e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED) =>
                {
                    // The statement's implicit transaction is rolled back:
                    // the connection is idle again.
                    self.give(conn);
                }
                Err(e) if tries == 1 && e.is_closed() => {}
                Err(e) => return Err(self.pg_error(e)),
            }
        }
    }
}

/// The entries of `rows` (key, last seen, expires), shown as `now` shows
/// times; a row whose key has not the shape of one (written by hand) is
/// skipped.
fn entries(rows: &Rows, now: &Now) -> Vec<SessionEntry> {
    rows.iter()
        .filter_map(|row| {
            Some(SessionEntry {
                key: SessionKey::parse(text(row, 0))?,
                last_seen: now.show(int(row, 1)),
                expires_at: now.show(int(row, 2)),
            })
        })
        .collect()
}

pub(super) fn touch_session(inner: &Arc<Inner>, key: &SessionKey) -> Result<()> {
    touch_sessions(inner, std::slice::from_ref(key))
}

pub(super) fn touch_sessions(inner: &Arc<Inner>, keys: &[SessionKey]) -> Result<()> {
    let mut sorted: Vec<&SessionKey> = keys.iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.is_empty() {
        return Ok(());
    }
    let now = Now::of(inner.clock.as_ref());
    let statement = inner.touch_sql(&sorted, &now);
    let inner = Arc::clone(inner);
    runtime::block_on(async move {
        inner.run_sessions_sql(&statement).await?;
        Ok(())
    })
}

pub(super) fn end_session(inner: &Arc<Inner>, key: &SessionKey) -> Result<()> {
    let statement = format!(
        "DELETE FROM {} WHERE site = {} AND key = {}",
        inner.sessions_table(),
        inner.site_lit(),
        sql::lit(key.as_str())
    );
    let inner = Arc::clone(inner);
    runtime::block_on(async move {
        inner.run_sessions_sql(&statement).await?;
        Ok(())
    })
}

pub(super) fn session(inner: &Arc<Inner>, key: &SessionKey) -> Result<Option<SessionEntry>> {
    let now = Now::of(inner.clock.as_ref());
    let statement = format!(
        "SELECT key, last_seen_ms, expires_ms FROM {} WHERE site = {} AND key = {} AND expires_ms > {}",
        inner.sessions_table(),
        inner.site_lit(),
        sql::lit(key.as_str()),
        now.ms_sql
    );
    let inner = Arc::clone(inner);
    let rows = runtime::block_on(async move { inner.exec(&statement).await })?;
    Ok(rows
        .first()
        .and_then(|rows| entries(rows, &now).into_iter().next()))
}

pub(super) fn sessions(inner: &Arc<Inner>) -> Result<Vec<SessionEntry>> {
    let now = Now::of(inner.clock.as_ref());
    // One round trip, one transaction: the expired go, the live are read.
    let statement = format!(
        "DELETE FROM {t} WHERE site = {site} AND expires_ms <= {now}; \
         SELECT key, last_seen_ms, expires_ms FROM {t} WHERE site = {site} AND expires_ms > {now} \
         ORDER BY last_seen_ms DESC, key",
        t = inner.sessions_table(),
        site = inner.site_lit(),
        now = now.ms_sql
    );
    let inner = Arc::clone(inner);
    let rows = runtime::block_on(async move { inner.run_sessions_sql(&statement).await })?;
    Ok(rows
        .first()
        .map(|rows| entries(rows, &now))
        .unwrap_or_default())
}

pub(super) fn session_summary(inner: &Arc<Inner>) -> Result<SessionSummary> {
    let (statement, now) = inner.summary_statement();
    let inner = Arc::clone(inner);
    let rows = runtime::block_on(async move { inner.exec(&statement).await })?;
    Ok(summary_of(rows.first().unwrap_or(&Vec::new()), &now))
}

impl Inner {
    /// The statement counting the live sessions, for [`summary_of`] (with
    /// the time it was made at): alone, or in `offline status`'s message.
    pub(super) fn summary_statement(&self) -> (String, SummaryTime) {
        let now = Now::of(self.clock.as_ref());
        (self.summary_sql(&now), SummaryTime(now))
    }
}

/// The time a [`summary_statement`](Inner::summary_statement) was made at.
pub(super) struct SummaryTime(Now);

/// The summary from [`summary_statement`](Inner::summary_statement)'s rows.
pub(super) fn summary_of(rows: &Rows, now: &SummaryTime) -> SessionSummary {
    let Some(row) = rows.first() else {
        return SessionSummary::default();
    };
    let count = int(row, 0).max(0) as usize;
    if count == 0 {
        return SessionSummary::default();
    }
    SessionSummary {
        count,
        last_expires_at: row
            .get(1)
            .and_then(|c| c.as_deref())
            .and_then(|ms| ms.parse().ok())
            .map(|ms| now.0.show(ms)),
    }
}

pub(super) fn prune_sessions(inner: &Arc<Inner>) -> Result<usize> {
    let now = Now::of(inner.clock.as_ref());
    let statement = inner.prune_sql(&now);
    let inner = Arc::clone(inner);
    let rows = runtime::block_on(async move { inner.run_sessions_sql(&statement).await })?;
    Ok(rows
        .first()
        .and_then(|r| r.first())
        .map_or(0, |row| int(row, 0).max(0) as usize))
}

#[cfg(test)]
impl super::PostgresBackend {
    /// The transaction that last wrote each of `keys`' rows (`xmin`;
    /// `None` for a key without a row): rows one statement wrote share it.
    pub(crate) fn session_writers(&self, keys: &[SessionKey]) -> Vec<Option<String>> {
        let list = keys
            .iter()
            .map(|k| sql::lit(k.as_str()))
            .collect::<Vec<_>>()
            .join(",");
        let statement = format!(
            "SELECT key, xmin::text FROM {} WHERE site = {} AND key IN ({list})",
            self.inner.sessions_table(),
            self.inner.site_lit()
        );
        let inner = Arc::clone(&self.inner);
        let rows = runtime::block_on(async move { inner.exec(&statement).await })
            .expect("read the sessions' writers");
        let writers: std::collections::HashMap<&str, &str> = rows
            .first()
            .map(|rows| rows.iter().map(|r| (text(r, 0), text(r, 1))).collect())
            .unwrap_or_default();
        keys.iter()
            .map(|k| writers.get(k.as_str()).map(|w| (*w).to_owned()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::backend::Backend;
    use crate::backend::postgres::PostgresBackend;
    use crate::conformance::{postgres_available, postgres_test_config};

    fn backend() -> PostgresBackend {
        PostgresBackend::open(&postgres_test_config("manage_test"), SystemClock::shared())
            .expect("open the postgres backend")
    }

    fn keys(prefix: &str, n: usize) -> Vec<SessionKey> {
        (0..n)
            .map(|i| SessionKey::of(format!("{prefix}-{i}").as_bytes()))
            .collect()
    }

    /// The summary is one statement, and the server can answer it from
    /// the index on expiry alone: with sequential scans priced out, its
    /// plan still reads `sessions_by_expiry` and no table scan (a
    /// condition the index cannot serve would leave a `Seq Scan`).
    #[test]
    fn the_summary_is_one_statement_the_expiry_index_answers() {
        if !postgres_available() {
            return;
        }
        let b = backend();
        let live = keys("indexed", 300);
        b.touch_sessions(&live).unwrap();
        assert_eq!(b.session_summary().unwrap().count, 300);
        let statement = b.inner.summary_sql(&Now::of(b.inner.clock.as_ref()));
        assert!(!statement.contains(';'), "one statement: {statement}");
        let inner = Arc::clone(&b.inner);
        let plan = runtime::block_on(async move {
            let rows = inner
                .exec(&format!(
                    "BEGIN; SET LOCAL enable_seqscan = off; EXPLAIN {statement}; ROLLBACK"
                ))
                .await?;
            Ok(rows
                .iter()
                .flatten()
                .map(|r| text(r, 0).to_owned())
                .collect::<Vec<_>>()
                .join("\n"))
        })
        .unwrap();
        assert!(plan.contains("sessions_by_expiry"), "{plan}");
        assert!(!plan.contains("Seq Scan"), "{plan}");
    }

    /// A batch of touches is one statement on the server: every row it
    /// wrote — new sessions and known ones, past one statement's share of
    /// keys too — carries one transaction's id.
    #[test]
    fn a_batch_of_touches_is_written_by_one_transaction() {
        if !postgres_available() {
            return;
        }
        let b = backend();
        let known = keys("known", 50);
        for k in &known {
            b.touch_session(k).unwrap();
        }
        let before: BTreeSet<_> = b.session_writers(&known).into_iter().collect();
        assert_eq!(before.len(), known.len(), "one touch, one transaction each");
        let mut batch = keys("new", KEYS_PER_STATEMENT + 50);
        batch.extend(known.iter().cloned());
        // Touched a moment later: the known rows move on.
        std::thread::sleep(Duration::from_millis(5));
        b.touch_sessions(&batch).unwrap();
        let writers: BTreeSet<_> = b.session_writers(&batch).into_iter().collect();
        assert_eq!(writers.len(), 1, "{} writers", writers.len());
        assert!(writers.iter().all(Option::is_some), "every key has its row");
        assert_eq!(b.session_summary().unwrap().count, batch.len());
    }
}
