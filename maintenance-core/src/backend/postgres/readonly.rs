//! The read-only tier on PostgreSQL: READONLY_PENDING begun or joined, its
//! completion to READONLY, and READONLY at once — each in a transaction
//! holding the exclusive gate, as every mode change (`modes.rs`), so a task
//! start either is seen by it or sees its new mode (I1, I2); a draining
//! READONLY_PENDING holds only while a waiter's key does (I5), through the
//! waiters of `modes.rs`. The record keeps its encoding (`tier`, read as
//! OFFLINE by a binary that predates READONLY).
//!
//! **Writes in flight.** A web layer publishing its unsafe requests in
//! flight holds a key of its own (from `lock_keys`), exclusively, on a
//! connection of its own, plus a row in `<schema>.writes` naming it: live
//! while the key is held, so a layer killed by any signal stops counting
//! the moment the server sees its connection end. Readers probe the key
//! shared (a probe never makes a dead layer look live) and remove the rows
//! of dead ones on the way.

use std::sync::Arc;

use super::connect::Conn;
use super::modes::{self, Begun, GateStep};
use super::sql::{self, int, text};
use super::{Inner, runtime, timestamp_ms};
use crate::backend::{Completion, ModeChange, ReadOnlyStart, WaiterLease, WritesLease};
use crate::clock::Timestamp;
use crate::error::Result;
use crate::identity::Identity;
use crate::mode::{Mode, ModeRecord};
use crate::records::WritesInFlight;

/// This area's tables in schema version 1 (`schema.rs`), given the quoted
/// schema name.
pub(super) fn tables(s: &str) -> String {
    format!(
        "CREATE TABLE {s}.writes (
             site text NOT NULL,
             key integer NOT NULL,
             pid bigint NOT NULL,
             by_whom text NOT NULL,
             since_ms bigint NOT NULL,
             PRIMARY KEY (site, key)
         );"
    )
}

/// A fresh READONLY record by `change`'s operator at `now`, keeping the
/// message, retry-after and bypass of `current` (the record it follows)
/// unless `change` sets them.
fn read_only_record(current: &ModeRecord, change: &ModeChange, now: Timestamp) -> ModeRecord {
    let mut r = ModeRecord {
        mode: Mode::ReadOnly,
        from: None,
        since: now,
        by: change.by.clone(),
        pid: change.pid,
        ..current.clone()
    };
    change.update(&mut r);
    r
}

/// [`Backend::begin_read_only`](crate::Backend::begin_read_only).
pub(super) fn begin_read_only(inner: &Arc<Inner>, change: &ModeChange) -> Result<ReadOnlyStart> {
    begin_read_only_with(inner, change, None)
}

/// [`begin_read_only`] with `step` taken in the same transaction, under
/// the gate (a read-only schedule's end as its drain begins,
/// `schedules.rs`), as `modes::begin_pending_with`
/// does for PENDING: refused as `step` judges, committed with the
/// READONLY_PENDING (or the READONLY or OFFLINE found).
pub(super) fn begin_read_only_with(
    inner: &Arc<Inner>,
    change: &ModeChange,
    step: Option<GateStep>,
) -> Result<ReadOnlyStart> {
    Ok(
        match modes::begin_drain(inner, change, step, &modes::TOWARD_READ_ONLY)? {
            Begun::Already(r) => ReadOnlyStart::Already(r),
            Begun::Waiting {
                waiter,
                record,
                joined,
            } => ReadOnlyStart::Waiting {
                waiter,
                record,
                joined,
            },
        },
    )
}

/// [`Backend::complete_read_only`](crate::Backend::complete_read_only).
pub(super) fn complete_read_only(
    inner: &Arc<Inner>,
    waiter: &dyn WaiterLease,
) -> Result<Completion> {
    modes::complete_drain(inner, waiter, &modes::TOWARD_READ_ONLY)
}

/// [`Backend::go_read_only`](crate::Backend::go_read_only).
pub(super) fn go_read_only(inner: &Arc<Inner>, change: &ModeChange) -> Result<ModeRecord> {
    let change = change.clone();
    modes::change_now(inner, String::new(), move |r, now| {
        if r.mode == Mode::ReadOnly {
            let mut same = r.clone();
            change.update(&mut same);
            same
        } else {
            read_only_record(r, &change, now)
        }
    })
}

/// A web layer's published writes in flight: its connection, holding its
/// key, and its row.
#[derive(Debug)]
pub(super) struct PgWritesLease {
    conn: Option<Conn>,
    /// Removes the row and frees the key, before the connection closes.
    release_sql: String,
}

impl WritesLease for PgWritesLease {}

impl Drop for PgWritesLease {
    fn drop(&mut self) {
        // Freed before this returns, so the next reader sees them gone (a
        // closing connection frees its locks only a moment later).
        if let Some(conn) = self.conn.take() {
            let sql = std::mem::take(&mut self.release_sql);
            let _ = runtime::block_on(async move {
                let _ = sql::run(&conn.client, &sql).await;
                Ok(())
            });
        }
    }
}

/// [`Backend::begin_writes`](crate::Backend::begin_writes): never refused
/// by the mode (no gate).
pub(super) fn begin_writes(inner: &Arc<Inner>) -> Result<Box<dyn WritesLease>> {
    let inner = Arc::clone(inner);
    let me = Identity::current();
    let (pid, by) = (me.pid, me.user_at_host());
    runtime::block_on(async move {
        let (conn, key) = inner.lock_connection().await?;
        let (s, site) = (inner.s(), inner.site_lit());
        sql::run(
            &conn.client,
            &format!(
                "INSERT INTO {s}.writes (site, key, pid, by_whom, since_ms) \
                 VALUES ({site}, {key}, {pid}, {by}, {now}) \
                 ON CONFLICT (site, key) DO UPDATE SET pid = EXCLUDED.pid, \
                 by_whom = EXCLUDED.by_whom, since_ms = EXCLUDED.since_ms",
                by = sql::lit(&by),
                now = inner.now_ms_sql(),
            ),
        )
        .await
        .map_err(|e| inner.pg_error(e))?;
        let release_sql = format!(
            "DELETE FROM {s}.writes WHERE site = {site} AND key = {key}; \
             SELECT pg_advisory_unlock_all()"
        );
        Ok(Box::new(PgWritesLease {
            conn: Some(conn),
            release_sql,
        }) as Box<dyn WritesLease>)
    })
}

/// [`Backend::writes_in_flight`](crate::Backend::writes_in_flight): the
/// layers whose key is held, oldest first; dead layers' rows go on the
/// way.
pub(super) fn writes_in_flight(inner: &Arc<Inner>) -> Result<Vec<WritesInFlight>> {
    let inner = Arc::clone(inner);
    runtime::block_on(async move {
        let (s, site, c) = (inner.s(), inner.site_lit(), inner.class);
        let rows = inner
            .exec(&format!(
                "DELETE FROM {s}.writes WHERE site = {site} AND pg_try_advisory_xact_lock_shared({c}, key); \
                 SELECT pid, by_whom, since_ms FROM {s}.writes WHERE site = {site} \
                 AND NOT pg_try_advisory_xact_lock_shared({c}, key) ORDER BY since_ms, pid"
            ))
            .await?;
        Ok(rows
            .first()
            .map(|rows| {
                rows.iter()
                    .map(|r| WritesInFlight {
                        pid: u32::try_from(int(r, 0)).unwrap_or(0),
                        by: text(r, 1).to_owned(),
                        since: timestamp_ms(int(r, 2)),
                    })
                    .collect()
            })
            .unwrap_or_default())
    })
}

#[cfg(test)]
mod tests {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::Backend;
    use crate::backend::postgres::PostgresBackend;
    use crate::clock::SystemClock;
    use crate::conformance::{postgres_available, postgres_test_config};

    /// Names the site a holder process publishes its writes in.
    const HOLDER_SITE: &str = "MANAGE_TEST_WRITES_HOLDER_SITE";

    /// Not a test: the process `a_killed_layers_writes_stop_counting_at_once`
    /// runs, which publishes writes in flight in the site `$HOLDER_SITE`
    /// names, says so, and holds them until it is killed.
    #[test]
    #[ignore = "run by a_killed_layers_writes_stop_counting_at_once"]
    fn writes_holder_process() {
        let Ok(site) = std::env::var(HOLDER_SITE) else {
            return;
        };
        let mut config = postgres_test_config("manage_test");
        config.postgres.site = site;
        let b = PostgresBackend::open(&config, SystemClock::shared()).unwrap();
        let _lease = b.begin_writes().unwrap();
        println!("published");
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    }

    #[test]
    fn a_killed_layers_writes_stop_counting_at_once() {
        if !postgres_available() {
            return;
        }
        let config = postgres_test_config("manage_test");
        let b = PostgresBackend::open(&config, SystemClock::shared()).unwrap();
        /// The holder, killed when the test ends whichever way.
        struct Holder(std::process::Child);
        impl Drop for Holder {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let mut child = Holder(
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "backend::postgres::readonly::tests::writes_holder_process",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(HOLDER_SITE, &config.postgres.site)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut out = std::io::BufReader::new(child.0.stdout.take().unwrap());
        let mut line = String::new();
        while !line.trim_end().ends_with("published") {
            line.clear();
            assert_ne!(out.read_line(&mut line).unwrap(), 0, "the holder ended");
        }
        let live = b.writes_in_flight().unwrap();
        assert_eq!(
            live.iter().map(|w| w.pid).collect::<Vec<_>>(),
            [child.0.id()],
            "{live:?}"
        );
        assert!(
            crate::transition::Live::read(&b).unwrap().active() >= 1,
            "status counts them"
        );
        // SIGKILL: the layer sends nothing; the server sees its connection
        // end and frees its key.
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !b.writes_in_flight().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "still counted a minute later");
            std::thread::sleep(Duration::from_millis(5));
        }
        // And its row went on the way.
        let inner = Arc::clone(&b.inner);
        let rows = runtime::block_on(async move {
            inner
                .exec(&format!(
                    "SELECT count(*) FROM {}.writes WHERE site = {}",
                    inner.s(),
                    inner.site_lit()
                ))
                .await
        })
        .unwrap();
        assert_eq!(int(&rows[0][0], 0), 0);
    }
}
