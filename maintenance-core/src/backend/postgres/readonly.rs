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
use super::sql::{self, Rows, int, text};
use super::{Inner, runtime, timestamp_ms};
use crate::backend::{Completion, ModeChange, ReadOnlyStart, WaiterLease, WritesLease};
use crate::clock::Timestamp;
use crate::error::Result;
use crate::history::EntryDraft;
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
    entry: Option<&EntryDraft>,
) -> Result<Completion> {
    modes::complete_drain(inner, waiter, entry, &modes::TOWARD_READ_ONLY)
}

/// [`Backend::go_read_only`](crate::Backend::go_read_only).
pub(super) fn go_read_only(inner: &Arc<Inner>, change: &ModeChange) -> Result<ModeRecord> {
    let change = change.clone();
    modes::change_now(inner, String::new(), change.entry.clone(), move |r, now| {
        if r.mode == Mode::ReadOnly {
            let mut same = r.clone();
            change.update(&mut same);
            same
        } else {
            read_only_record(r, &change, now)
        }
    })
}

/// A web layer's connection for its writes in flight, opened ahead by
/// [`prepare_writes`] with its key held, and given back by each lease that
/// ends: so a publication is one round trip (its row), never a connection
/// made while a drain's settle time runs. The key held without a row counts
/// for nothing: readers count rows whose key is held.
#[derive(Debug, Default)]
pub(super) struct WritesAhead(std::sync::Mutex<Option<(Conn, i32)>>);

impl WritesAhead {
    fn take(&self) -> Option<(Conn, i32)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn is_ready(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Keeps `conn` unless one is kept already, and then gives it back.
    fn keep(&self, conn: Conn, key: i32) -> Option<(Conn, i32)> {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match *slot {
            Some(_) => Some((conn, key)),
            None => {
                *slot = Some((conn, key));
                None
            }
        }
    }
}

/// A web layer's published writes in flight: its connection, holding its
/// key, and its row.
#[derive(Debug)]
pub(super) struct PgWritesLease {
    inner: Arc<Inner>,
    conn: Option<(Conn, i32)>,
}

impl WritesLease for PgWritesLease {}

impl Drop for PgWritesLease {
    fn drop(&mut self) {
        // The row goes before this returns, so the next reader sees it
        // gone; the connection and its key are kept for the next lease
        // (or, when one is kept already, the key is freed and it closes).
        let Some((conn, key)) = self.conn.take() else {
            return;
        };
        let inner = Arc::clone(&self.inner);
        let (s, site) = (inner.s(), inner.site_lit());
        let delete = format!("DELETE FROM {s}.writes WHERE site = {site} AND key = {key}");
        let kept =
            runtime::block_on(
                async move { Ok(sql::run(&conn.client, &delete).await.map(|_| conn)) },
            );
        if let Ok(Ok(conn)) = kept
            && let Some((conn, _)) = self.inner.writes_ahead.keep(conn, key)
        {
            let _ = runtime::block_on(async move {
                let _ = sql::run(&conn.client, "SELECT pg_advisory_unlock_all()").await;
                Ok(())
            });
        }
    }
}

/// [`Backend::prepare_writes`](crate::Backend::prepare_writes): a
/// connection with its key held, kept for [`begin_writes`].
pub(super) fn prepare_writes(inner: &Arc<Inner>) -> Result<()> {
    if inner.writes_ahead.is_ready() {
        return Ok(());
    }
    let task = Arc::clone(inner);
    let (conn, key) = runtime::block_on(async move { task.lock_connection().await })?;
    // Another thread kept one meanwhile: this one closes, its key with it.
    drop(inner.writes_ahead.keep(conn, key));
    Ok(())
}

/// [`Backend::begin_writes`](crate::Backend::begin_writes): never refused
/// by the mode (no gate). One round trip on the connection kept ahead; a
/// new connection when there is none, or when the kept one was lost.
pub(super) fn begin_writes(inner: &Arc<Inner>) -> Result<Box<dyn WritesLease>> {
    let task = Arc::clone(inner);
    let me = Identity::current();
    let (pid, by) = (me.pid, me.user_at_host());
    let ahead = inner.writes_ahead.take();
    let conn = runtime::block_on(async move {
        let insert = |key: i32| {
            format!(
                "INSERT INTO {s}.writes (site, key, pid, by_whom, since_ms) \
                 VALUES ({site}, {key}, {pid}, {by}, {now}) \
                 ON CONFLICT (site, key) DO UPDATE SET pid = EXCLUDED.pid, \
                 by_whom = EXCLUDED.by_whom, since_ms = EXCLUDED.since_ms",
                s = task.s(),
                site = task.site_lit(),
                by = sql::lit(&by),
                now = task.now_ms_sql(),
            )
        };
        if let Some((conn, key)) = ahead
            && sql::run(&conn.client, &insert(key)).await.is_ok()
        {
            return Ok((conn, key));
        }
        let (conn, key) = task.lock_connection().await?;
        sql::run(&conn.client, &insert(key))
            .await
            .map_err(|e| task.pg_error(e))?;
        Ok((conn, key))
    })?;
    Ok(Box::new(PgWritesLease {
        inner: Arc::clone(inner),
        conn: Some(conn),
    }))
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
                 {}",
                inner.writes_sql()
            ))
            .await?;
        Ok(writes_of(rows.first().unwrap_or(&Vec::new())))
    })
}

impl Inner {
    /// The statement reading the live writes in flight, for [`writes_of`].
    pub(super) fn writes_sql(&self) -> String {
        format!(
            "SELECT pid, by_whom, since_ms FROM {s}.writes WHERE site = {site} \
             AND NOT pg_try_advisory_xact_lock_shared({c}, key) ORDER BY since_ms, pid",
            s = self.s(),
            site = self.site_lit(),
            c = self.class
        )
    }
}

/// The writes in flight from [`Inner::writes_sql`]'s rows.
pub(super) fn writes_of(rows: &Rows) -> Vec<WritesInFlight> {
    rows.iter()
        .map(|r| WritesInFlight {
            pid: u32::try_from(int(r, 0)).unwrap_or(0),
            by: text(r, 1).to_owned(),
            since: timestamp_ms(int(r, 2)),
        })
        .collect()
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
