//! The mode record, the gate and the waiters (I1, I2, I5).
//!
//! - The record is one row per site, replaced in a transaction: a reader
//!   sees the old row or the new one, never a torn one. Its `generation`
//!   moves with every write.
//! - The gate is the site's reserved key [`GATE`](super::keys::GATE),
//!   taken per transaction: exclusively by every mode change, shared by
//!   task starts and joins, so either the mode change sees the task or the
//!   task sees the new mode, on any host. An exclusive request that waits
//!   blocks new shared ones.
//! - A waiter (a process waiting to take the site offline) holds its own
//!   key on a connection of its own, with a row naming it; a draining mode
//!   holds only while some waiter's key is held (probed shared). A killed
//!   waiter's connection ends, the server frees its key, and the drain
//!   lapses to the mode it came from.

use std::sync::Arc;
use std::time::Duration;

use super::connect::Conn;
use super::held_key::HeldKey;
use super::sql::{self, Rows, boolean, int, text};
use super::{Inner, runtime, timestamp_ms};
use crate::backend::{Completion, ModeChange, PendingStart, WaiterLease};
use crate::clock::Timestamp;
use crate::error::{Error, Refusal, Result};
use crate::history::{EntryDraft, HistoryEntry};
use crate::mode::{Lapse, Mode, ModeRecord, ModeView};
use crate::records::TaskRecord;

/// This area's tables in schema version 1, given the quoted schema name.
pub(super) fn tables(s: &str) -> String {
    format!(
        "CREATE SEQUENCE {s}.lock_keys AS integer MINVALUE {first} MAXVALUE 2147483647 CYCLE;
         CREATE TABLE {s}.modes (
             site text PRIMARY KEY,
             record text NOT NULL,
             generation bigint NOT NULL
         );
         CREATE TABLE {s}.waiters (
             site text NOT NULL,
             key integer NOT NULL,
             since_ms bigint NOT NULL,
             pid bigint NOT NULL,
             by_whom text NOT NULL,
             PRIMARY KEY (site, key)
         );",
        first = super::keys::FIRST_LOCK_KEY
    )
}

impl Inner {
    /// One statement: the record, its generation, and whether any waiter
    /// of the site is live.
    pub(super) fn view_sql(&self) -> String {
        let s = self.s();
        format!(
            "SELECT m.record, m.generation, EXISTS (SELECT 1 FROM {s}.waiters w \
             WHERE w.site = m.site AND ({back} OR NOT pg_try_advisory_xact_lock_shared({c}, w.key))) \
             FROM {s}.modes m WHERE m.site = {site}",
            c = self.class,
            back = self.waiter_may_return_sql("w."),
            site = self.site_lit()
        )
    }

    /// The record (the initial one for a site never changed) and whether a
    /// waiter is live, from [`view_sql`](Self::view_sql)'s rows.
    fn parse_view(&self, rows: &Rows) -> Result<(ModeRecord, bool)> {
        let Some(row) = rows.first() else {
            return Ok((ModeRecord::initial(), false));
        };
        let mut record: ModeRecord = serde_json::from_str(text(row, 0)).map_err(|e| {
            self.target.error(format!(
                "the mode record of site {:?} in {}.modes is corrupt ({e}); `{} offline off \
                 --force` rewrites it (check the site first: it may have been offline)",
                self.site,
                self.schema,
                crate::identity::program_name()
            ))
        })?;
        record.generation = int(row, 1) as u64;
        Ok((record, boolean(row, 2)))
    }

    /// The statements that remove dead waiters' and dead tasks' rows (a
    /// writer runs them under the gate); they return no rows. A task's row
    /// that may still enter again ([`may_reenter_sql`](Self::may_reenter_sql))
    /// is kept: a drain waits for it; so is a waiter's that may come back
    /// ([`waiter_may_return_sql`](Self::waiter_may_return_sql)).
    pub(super) fn clean_sql(&self) -> String {
        let (s, c, site) = (self.s(), self.class, self.site_lit());
        format!(
            "DELETE FROM {s}.waiters WHERE site = {site} AND NOT {back} \
             AND pg_try_advisory_xact_lock_shared({c}, key); \
             DELETE FROM {s}.tasks WHERE site = {site} AND NOT {keep} \
             AND pg_try_advisory_xact_lock_shared({c}, key)",
            back = self.waiter_may_return_sql(""),
            keep = self.may_reenter_sql("")
        )
    }

    /// Whether the task row (columns prefixed `t`, e.g. `"t."`) may be of
    /// a task that enters again on its own after a restart of the server
    /// (`tasks.rs`): the server has been up for less than the keepalive
    /// bound ([`KEEPALIVE_BOUND`](super::connect::KEEPALIVE_BOUND), the
    /// time a waiter that has just reconnected gives them), and the task
    /// started before the server did. Such a row without its lock is
    /// neither live nor dead yet.
    pub(super) fn may_reenter_sql(&self, t: &str) -> String {
        self.before_restart_sql(&format!("{t}started_ms"))
    }

    /// Whether the time `ms` (a column, in milliseconds as rows store
    /// times) is from before the server started, and the server has been
    /// up for less than the keepalive bound: what held a lock then may
    /// still take it back on its own.
    pub(super) fn before_restart_sql(&self, ms: &str) -> String {
        format!(
            "(now() - pg_postmaster_start_time() < interval '{bound} milliseconds' \
             AND {ms} < {now} - (extract(epoch FROM now() - pg_postmaster_start_time()) \
                 * 1000)::bigint)",
            bound = super::connect::KEEPALIVE_BOUND.as_millis(),
            now = self.now_ms_sql(),
        )
    }

    /// Whether the waiter row (columns prefixed `w`) may be of a waiter
    /// that takes its key back on its own after a restart of the server
    /// (its drain began before the server started, which has been up for
    /// less than the keepalive bound): its drain does not lapse meanwhile,
    /// and its row is kept.
    pub(super) fn waiter_may_return_sql(&self, w: &str) -> String {
        self.before_restart_sql(&format!("{w}since_ms"))
    }

    /// The statements that write `record` after `previous`, moving the
    /// generation, and tell every listener of the site (`listen.rs`): the
    /// NOTIFY goes out with the transaction's commit, in the same round
    /// trip, and never without it.
    pub(super) fn write_sql(
        &self,
        record: &mut ModeRecord,
        previous: &ModeRecord,
    ) -> Result<String> {
        record.generation = previous.generation.wrapping_add(1);
        if !record.mode.is_draining() {
            record.from = None;
        }
        let json = serde_json::to_string(record).map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(format!(
            "INSERT INTO {s}.modes (site, record, generation) VALUES ({site}, {json}, {g}) \
             ON CONFLICT (site) DO UPDATE SET record = EXCLUDED.record, generation = EXCLUDED.generation; \
             {notify}",
            s = self.s(),
            site = self.site_lit(),
            json = sql::lit(&json),
            g = record.generation as i64,
            notify = self.listener.notify_sql(record.generation)
        ))
    }

    /// [`write_sql`](Self::write_sql), and the statements appending the
    /// entry `draft` (if any) makes of the record, in the same transaction:
    /// the change and its entry commit together or not at all. Returns the
    /// entry too, for [`recorded`](Self::recorded) once committed.
    pub(super) fn write_sql_recording(
        &self,
        record: &mut ModeRecord,
        previous: &ModeRecord,
        draft: Option<&EntryDraft>,
    ) -> Result<(String, Option<HistoryEntry>)> {
        let write = self.write_sql(record, previous)?;
        let Some(draft) = draft else {
            return Ok((write, None));
        };
        let entry = draft.entry_for(record);
        let append = self.append_sql(&entry)?;
        Ok((format!("{write}; {append}"), Some(entry)))
    }

    /// A fresh ONLINE record by `change`'s operator, at `now`.
    fn online_record(change: &ModeChange, now: Timestamp) -> ModeRecord {
        ModeRecord {
            mode: Mode::Online,
            since: now,
            by: change.by.clone(),
            pid: change.pid,
            ..ModeRecord::initial()
        }
    }

    /// The view from [`view_sql`](Self::view_sql)'s rows read while the
    /// gate is held (no writer can move the record meanwhile): a draining
    /// record without a live waiter has lapsed.
    pub(super) fn view_of_rows(&self, rows: &Rows) -> Result<ModeView> {
        let (record, live) = self.parse_view(rows)?;
        Ok(if record.mode.is_draining() && !live {
            lapsed(record)
        } else {
            ModeView::of(record)
        })
    }

    /// The view a reader gets: a draining record whose waiters are all
    /// gone reads as lapsed — unless its last waiter just wrote a new
    /// record as it left.
    pub(super) async fn read_view(&self, conn: &Conn) -> Result<ModeView> {
        let gen_sql = format!(
            "SELECT generation FROM {}.modes WHERE site = {}",
            self.s(),
            self.site_lit()
        );
        loop {
            let rows = sql::run(&conn.client, &self.view_sql())
                .await
                .map_err(|e| self.conn_error(conn, e))?;
            let (record, waiter_live) = self.parse_view(rows.first().unwrap_or(&Vec::new()))?;
            if !record.mode.is_draining() || waiter_live {
                return Ok(ModeView::of(record));
            }
            let again = sql::run(&conn.client, &gen_sql)
                .await
                .map_err(|e| self.conn_error(conn, e))?;
            let generation = again
                .first()
                .and_then(|r| r.first())
                .map_or(0, |r| int(r, 0) as u64);
            if generation == record.generation {
                return Ok(lapsed(record));
            }
        }
    }

    /// Inside a writer's transaction (the exclusive gate held): removes
    /// the dead waiters and tasks, and returns the server's time and the
    /// view (no writer can move the record meanwhile).
    pub(super) async fn look_under_gate(&self, conn: &Conn) -> Result<(Timestamp, ModeView)> {
        let rows = sql::run(
            &conn.client,
            &format!(
                "{}; SELECT {}; {}",
                self.clean_sql(),
                self.now_ms_sql(),
                self.view_sql()
            ),
        )
        .await
        .map_err(|e| self.conn_error(conn, e))?;
        let now = rows
            .first()
            .and_then(|r| r.first())
            .map_or(Timestamp::EPOCH, |r| timestamp_ms(int(r, 0)));
        let none = Vec::new();
        let mode_rows = rows.get(1).unwrap_or(&none);
        let view = match self.view_of_rows(mode_rows) {
            Ok(view) => view,
            // A writer is about to replace the record: a corrupt one is
            // replaced (as the file backend's writers do), so `offline off
            // --force` recovers the site; the generation still moves on.
            Err(_) => {
                let mut record = ModeRecord::initial();
                record.generation = mode_rows.first().map_or(0, |row| int(row, 1) as u64);
                ModeView::of(record)
            }
        };
        Ok((now, view))
    }

    /// Begins a writer's transaction (the exclusive gate) and looks
    /// ([`look_under_gate`](Self::look_under_gate)); should the look fail,
    /// the transaction is rolled back.
    pub(super) async fn gate_and_look(&self) -> Result<(Conn, Timestamp, ModeView)> {
        let conn = self.begin_gate(true).await?;
        match self.look_under_gate(&conn).await {
            Ok((now, view)) => Ok((conn, now, view)),
            Err(e) => {
                self.rollback(conn).await;
                Err(e)
            }
        }
    }
}

/// The view of a draining record without a waiter.
fn lapsed(record: ModeRecord) -> ModeView {
    let to = record.lapses_to();
    let reason = format!(
        "{} since {} (by {}, pid {}) lapsed: the process waiting to take the site {} is gone, \
         so the site is {to}; the next mode change cleans up",
        record.mode,
        record.since,
        record.by,
        record.pid,
        if record.mode == Mode::Pending {
            "offline"
        } else {
            "read-only"
        },
    );
    ModeView {
        mode: to,
        lapsed: Some(Lapse {
            record: record.clone(),
            reason,
        }),
        record,
        stray_marker: None,
    }
}

/// [`Backend::mode`](crate::Backend::mode).
pub(super) fn mode(inner: &Arc<Inner>) -> Result<ModeView> {
    let inner = Arc::clone(inner);
    runtime::block_on(async move {
        let conn = inner.take().await?;
        let view = inner.read_view(&conn).await?;
        inner.give(conn);
        Ok(view)
    })
}

/// One waiter's place: its own connection holding its own key, and its
/// row; taken again on a new connection when the server ends that one
/// ([`WaiterLease::keep`]).
#[derive(Debug)]
pub(super) struct PgWaiter {
    hold: Arc<WaiterHold>,
}

/// What a waiter's lease holds, shared with the futures on the runtime.
#[derive(Debug)]
struct WaiterHold {
    held: HeldKey,
    since: Timestamp,
    /// Writes its row again (a writer's clean-up removes it while the key
    /// is free).
    row_sql: String,
    /// Removes the row; the key is freed after it.
    release_sql: String,
}

impl WaiterHold {
    /// Takes the key again on a new connection, then under the exclusive
    /// gate writes the row again — only while the draining record is still
    /// the one this waiter waits for: one that someone replaced meanwhile
    /// (`off`, `--force`, another `on` after the drain lapsed) is left as
    /// it is, the key let go, and the wait's next look at the mode sees
    /// whose it is. Whether it took the key back.
    ///
    /// The key comes first: the gate's look probes a free key shared
    /// until its transaction ends (`view_sql`, `clean_sql`), so taken
    /// after it the key is always busy. Busy still after
    /// [`take_key`](Self::take_key) (its former connection not ended, by a
    /// role that may not end it), the wait tries again as through an
    /// outage.
    async fn retake(&self) -> Result<bool> {
        let inner = self.held.inner();
        let took = self
            .held
            .retake(async |conn| {
                if !self.take_key(conn).await? {
                    return Err(inner.target.unreachable(
                        "this waiter's key is still held on the server by its former connection, \
                         which the server has not ended yet",
                    ));
                }
                let (gate, _now, view) = inner.gate_and_look().await?;
                let r = &view.record;
                if r.mode.is_draining() && r.since == self.since {
                    inner.commit(gate, &self.row_sql).await?;
                    return Ok(true);
                }
                inner.rollback(gate).await;
                let _ = sql::run(&conn.client, "SELECT pg_advisory_unlock_all()").await;
                Ok(false)
            })
            .await?;
        Ok(took.is_some())
    }

    /// Takes the key on `conn`. Held still, by its former connection
    /// (which this process gave up, a cut link or a silence, but the
    /// server still keeps: the only connection that takes this key
    /// exclusively), that connection is ended first; held shared for a
    /// moment by another's probe, it is tried again for up to half a
    /// second.
    async fn take_key(&self, conn: &Conn) -> Result<bool> {
        let inner = self.held.inner();
        if self
            .held
            .try_lock(conn)
            .await
            .map_err(|e| inner.pg_error(e))?
        {
            return Ok(true);
        }
        // Best effort: a role that may not end it waits for the server.
        let _ = sql::run(
            &conn.client,
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
                 AND granted AND mode = 'ExclusiveLock' AND objsubid = 2 \
                 AND classid = ({c}::bigint & 4294967295)::oid \
                 AND objid = ({k}::bigint & 4294967295)::oid AND pid <> pg_backend_pid()",
                c = inner.class,
                k = self.held.key()
            ),
        )
        .await;
        self.held
            .try_lock_patiently(conn)
            .await
            .map_err(|e| inner.pg_error(e))
    }
}

impl WaiterLease for PgWaiter {
    fn pending_since(&self) -> Timestamp {
        self.hold.since
    }

    fn keep(&self) -> Result<bool> {
        if self.hold.held.open().is_some() {
            return Ok(false);
        }
        let hold = Arc::clone(&self.hold);
        runtime::block_on(async move { hold.retake().await })
    }

    fn lost(&self) {
        drop(self.hold.held.forget());
    }
}

impl Drop for PgWaiter {
    fn drop(&mut self) {
        // Freed before this returns, so the next reader sees it gone (a
        // closing connection frees its locks only a moment later).
        let hold = Arc::clone(&self.hold);
        let _ = runtime::block_on(async move {
            hold.held.release(&hold.release_sql).await;
            Ok(())
        });
    }
}

/// The lease of a waiter of `change` whose connection `conn` holds `key`,
/// for the drain begun at `since`.
fn waiter(
    inner: &Arc<Inner>,
    conn: Conn,
    key: i32,
    since: Timestamp,
    change: &ModeChange,
) -> PgWaiter {
    PgWaiter {
        hold: Arc::new(WaiterHold {
            held: HeldKey::new(Arc::clone(inner), key, conn),
            since,
            row_sql: inner.waiter_row_sql(key, since, change),
            release_sql: format!(
                "DELETE FROM {}.waiters WHERE site = {} AND key = {key}",
                inner.s(),
                inner.site_lit()
            ),
        }),
    }
}

impl Inner {
    /// A connection of its own holding a fresh key of its own: a task's or
    /// a waiter's. The key is drawn until one is free (the sequence
    /// cycles).
    pub(super) async fn lock_connection(&self) -> Result<(Conn, i32)> {
        let conn = self.connect().await?;
        let key = self.fresh_key(&conn).await?;
        Ok((conn, key))
    }

    pub(super) async fn fresh_key(&self, conn: &Conn) -> Result<i32> {
        let draw = format!(
            "SELECT k, pg_try_advisory_lock({}, k) FROM (SELECT nextval('{}.lock_keys')::integer AS k) n",
            self.class,
            self.s()
        );
        loop {
            let rows = sql::run(&conn.client, &draw)
                .await
                .map_err(|e| self.pg_error(e))?;
            if let Some(row) = rows.first().and_then(|r| r.first())
                && boolean(row, 1)
            {
                return Ok(int(row, 0) as i32);
            }
        }
    }

    pub(super) fn waiter_row_sql(&self, key: i32, since: Timestamp, change: &ModeChange) -> String {
        format!(
            "INSERT INTO {s}.waiters (site, key, since_ms, pid, by_whom) VALUES ({site}, {key}, {ms}, {pid}, {by}) \
             ON CONFLICT (site, key) DO UPDATE SET since_ms = EXCLUDED.since_ms, pid = EXCLUDED.pid, by_whom = EXCLUDED.by_whom",
            s = self.s(),
            site = self.site_lit(),
            ms = since
                .system_time()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            pid = change.pid,
            by = sql::lit(&change.by),
        )
    }
}

/// A drain, toward OFFLINE (PENDING) or toward READONLY
/// (READONLY_PENDING): what its begin and its completion need to know of
/// it. Everything else is one path for both ([`begin_drain`],
/// [`complete_drain`]).
pub(super) struct Drain {
    /// The draining mode.
    draining: Mode,
    /// The mode it completes to. OFFLINE, which stops writes too, is
    /// reached already for either.
    target: Mode,
    /// The other drain, which refuses this one while it lasts, and what
    /// the refusal says.
    refused_while: Mode,
    refusal: &'static str,
    /// Whether a live task holds this drain off.
    holds_off: fn(&TaskRecord) -> bool,
}

/// `offline on`'s drain.
pub(super) const TOWARD_OFFLINE: Drain = Drain {
    draining: Mode::Pending,
    target: Mode::Offline,
    refused_while: Mode::ReadOnlyPending,
    refusal: "`offline on` goes OFFLINE from ONLINE or READONLY, and the site is going \
              read-only: once it is READONLY, `offline on` continues to OFFLINE",
    holds_off: TaskRecord::holds_off_offline,
};

/// `offline on --read-only`'s drain.
pub(super) const TOWARD_READ_ONLY: Drain = Drain {
    draining: Mode::ReadOnlyPending,
    target: Mode::ReadOnly,
    refused_while: Mode::Pending,
    refusal: "`offline on --read-only` goes READONLY from ONLINE, and the site is going \
              offline, which stops writes too",
    holds_off: TaskRecord::holds_off_read_only,
};

/// What [`begin_drain`] began, or found done.
pub(super) enum Begun {
    /// The site is at the drain's target, or OFFLINE, already.
    Already(ModeRecord),
    /// Draining, this process a waiter: `joined`, a drain under way.
    Waiting {
        waiter: Box<dyn WaiterLease>,
        record: ModeRecord,
        joined: bool,
    },
}

/// The refusal of a mode change while `view` drains toward another mode.
fn drain_under_way(view: &ModeView, what: &str) -> Error {
    Error::Refused(Refusal::DrainUnderWay {
        mode: view.mode,
        since: view.record.since,
        by: view.record.by.clone(),
        what: what.to_owned(),
    })
}

/// What `begin_drain` decided, before its waiter becomes a lease (off the
/// runtime thread).
enum Decided {
    Waiting(Conn, i32, ModeRecord, bool),
    Already(ModeRecord),
}

/// A step of another area taken in a mode change's own transaction, under
/// the exclusive gate, so that no reader sees one without the other: a
/// scheduled window's end as its drain begins (`schedules.rs`).
pub(super) struct GateStep {
    /// A statement run under the gate, before the change is decided.
    pub look: String,
    /// Judges `look`'s rows, given the server's time: an error refuses the
    /// change and nothing is written; else the statements committed with
    /// the change.
    pub then: Box<StepJudge>,
}

/// What judges a [`GateStep`]'s look.
pub(super) type StepJudge = dyn FnOnce(&[Rows], Timestamp) -> Result<String> + Send;

impl Inner {
    /// Takes `step` (if any) in the transaction on `conn`: the statements
    /// to commit with the change (`; …`, or nothing), or the error that
    /// refuses it (the caller rolls back).
    pub(super) async fn gate_step(
        &self,
        conn: &Conn,
        now: Timestamp,
        step: Option<GateStep>,
    ) -> Result<String> {
        let Some(step) = step else {
            return Ok(String::new());
        };
        let rows = sql::run(&conn.client, &step.look)
            .await
            .map_err(|e| self.pg_error(e))?;
        let sql = (step.then)(&rows, now)?;
        Ok(if sql.is_empty() {
            sql
        } else {
            format!("; {sql}")
        })
    }
}

/// [`Backend::begin_pending`](crate::Backend::begin_pending).
pub(super) fn begin_pending(inner: &Arc<Inner>, change: &ModeChange) -> Result<PendingStart> {
    begin_pending_with(inner, change, None)
}

/// [`begin_pending`] with `step` taken in the same transaction, under the
/// gate: refused as `step` judges, and committed with the PENDING (or the
/// OFFLINE found).
pub(super) fn begin_pending_with(
    inner: &Arc<Inner>,
    change: &ModeChange,
    step: Option<GateStep>,
) -> Result<PendingStart> {
    Ok(match begin_drain(inner, change, step, &TOWARD_OFFLINE)? {
        Begun::Already(r) => PendingStart::AlreadyOffline(r),
        Begun::Waiting {
            waiter,
            record,
            joined,
        } => PendingStart::Waiting {
            waiter,
            record,
            joined,
        },
    })
}

/// Begins `drain` or joins it, as `change` asks, under the exclusive gate
/// with `step` (if any) in the same transaction: refused as `step` judges,
/// or while the other drain is under way; committed with the draining
/// record (or the target or OFFLINE found).
pub(super) fn begin_drain(
    inner: &Arc<Inner>,
    change: &ModeChange,
    step: Option<GateStep>,
    drain: &'static Drain,
) -> Result<Begun> {
    let (inner2, change2) = (Arc::clone(inner), change.clone());
    let decided = runtime::block_on(async move {
        let (inner, change) = (inner2, change2);
        let (waiter, key) = inner.lock_connection().await?;
        let (conn, now, view) = inner.gate_and_look().await?;
        // A lapsed drain this replaces is recorded first.
        inner.notice_under_gate(&conn, now, &view).await;
        let also = match inner.gate_step(&conn, now, step).await {
            Ok(also) => also,
            Err(e) => {
                inner.rollback(conn).await;
                return Err(e);
            }
        };
        match view.mode {
            m if m == Mode::Offline || m == drain.target => {
                // A PENDING begun from READONLY that lapsed is READONLY:
                // written back so, never returned as a PENDING.
                let mut r = view.record_in_force();
                let sql = if change.update(&mut r) || view.lapsed.is_some() {
                    inner.write_sql(&mut r, &view.record)?
                } else {
                    "SELECT 1".into()
                };
                inner.commit(conn, &format!("{sql}{also}")).await?;
                Ok(Decided::Already(r))
            }
            m if m == drain.draining => {
                let mut r = view.record.clone();
                let mut sql = inner.waiter_row_sql(key, r.since, &change);
                if change.update(&mut r) {
                    sql = format!("{sql}; {}", inner.write_sql(&mut r, &view.record)?);
                }
                inner.commit(conn, &format!("{sql}{also}")).await?;
                Ok(Decided::Waiting(waiter, key, r, true))
            }
            m if m == drain.refused_while => {
                inner.rollback(conn).await;
                Err(drain_under_way(&view, drain.refusal))
            }
            // ONLINE, or READONLY going on to OFFLINE: a lapse goes back to
            // where it came from, keeping READONLY's message unless given.
            from => {
                let base = if from == Mode::ReadOnly {
                    view.record.clone()
                } else {
                    ModeRecord::initial()
                };
                let mut r = ModeRecord {
                    mode: drain.draining,
                    from: (from == Mode::ReadOnly).then_some(Mode::ReadOnly),
                    since: now,
                    by: change.by.clone(),
                    pid: change.pid,
                    generation: view.record.generation,
                    ..base
                };
                change.update(&mut r);
                let (write, entry) =
                    inner.write_sql_recording(&mut r, &view.record, change.entry.as_ref())?;
                let sql = format!("{}; {write}{also}", inner.waiter_row_sql(key, now, &change));
                inner.commit(conn, &sql).await?;
                inner.recorded(entry);
                Ok(Decided::Waiting(waiter, key, r, false))
            }
        }
    })?;
    Ok(match decided {
        Decided::Already(r) => Begun::Already(r),
        Decided::Waiting(conn, key, record, joined) => Begun::Waiting {
            waiter: Box::new(waiter(inner, conn, key, record.since, change)),
            record,
            joined,
        },
    })
}

/// How often a drain held by tasks that may still enter again looks again.
const REENTRY_LOOK: Duration = Duration::from_millis(100);

impl Inner {
    /// Whether tasks may still enter again after a restart of the server
    /// (`tasks.rs`): the row of a task that may
    /// ([`may_reenter_sql`](Self::may_reenter_sql)) is left without its
    /// lock.
    async fn reentering(&self, conn: &Conn) -> Result<bool> {
        let sql = format!(
            "SELECT count(*) FROM {s}.tasks t WHERE t.site = {site} AND {may} \
             AND pg_try_advisory_xact_lock_shared({c}, t.key)",
            s = self.s(),
            site = self.site_lit(),
            may = self.may_reenter_sql("t."),
            c = self.class
        );
        let rows = sql::run(&conn.client, &sql)
            .await
            .map_err(|e| self.pg_error(e))?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .is_some_and(|r| int(r, 0) > 0))
    }
}

/// [`Backend::complete_offline`](crate::Backend::complete_offline).
pub(super) fn complete_offline(
    inner: &Arc<Inner>,
    waiter: &dyn WaiterLease,
    entry: Option<&EntryDraft>,
) -> Result<Completion> {
    complete_drain(inner, waiter, entry, &TOWARD_OFFLINE)
}

/// Completes `drain`, begun by `waiter`, under the exclusive gate, unless
/// a live task holds it off at the final look, or someone ended it
/// meanwhile; records `entry` (if any) in the transaction that completes it.
pub(super) fn complete_drain(
    inner: &Arc<Inner>,
    waiter: &dyn WaiterLease,
    entry: Option<&EntryDraft>,
    drain: &'static Drain,
) -> Result<Completion> {
    let (inner, since) = (Arc::clone(inner), waiter.pending_since());
    let draft = entry.cloned();
    let reached = |r: ModeRecord| match r.mode {
        Mode::ReadOnly => Completion::ReadOnly(r),
        _ => Completion::Offline(r),
    };
    let completed = runtime::block_on(async move {
        let (conn, now, view) = inner.gate_and_look().await?;
        let r = view.record;
        match r.mode {
            m if m == Mode::Offline || m == drain.target => {
                inner.commit(conn, "SELECT 1").await?;
                Ok(Some(reached(r)))
            }
            // This waiter's key was free (its connection lost since its
            // last look), so readers saw the drain lapse: not done. The
            // wait takes its key back, and settles again, first.
            m if m == drain.draining && r.since == since && view.lapsed.is_some() => {
                inner.rollback(conn).await;
                Ok(None)
            }
            m if m == drain.draining && r.since == since => {
                // The final look, under the gate: a run that joined a live
                // task after the waiter's last look is seen here.
                let holding: Vec<_> = match inner.live_on(&conn).await {
                    Ok(t) => t.into_iter().filter(drain.holds_off).collect(),
                    Err(e) => {
                        inner.rollback(conn).await;
                        return Err(e);
                    }
                };
                if !holding.is_empty() {
                    inner.rollback(conn).await;
                    return Ok(Some(Completion::Held(holding)));
                }
                // A server up for less than the keepalive bound may have
                // restarted under live tasks, which enter again on their
                // own: while a task's row is left without its lock, hold.
                match inner.reentering(&conn).await {
                    Ok(false) => {}
                    Ok(true) => {
                        inner.rollback(conn).await;
                        tokio::time::sleep(REENTRY_LOOK).await;
                        return Ok(Some(Completion::Held(Vec::new())));
                    }
                    Err(e) => {
                        inner.rollback(conn).await;
                        return Err(e);
                    }
                }
                let mut done = ModeRecord {
                    mode: drain.target,
                    from: None,
                    since: now,
                    ..r.clone()
                };
                let (sql, entry) = inner.write_sql_recording(&mut done, &r, draft.as_ref())?;
                inner.commit(conn, &sql).await?;
                inner.recorded(entry);
                Ok(Some(reached(done)))
            }
            _ => {
                inner.commit(conn, "SELECT 1").await?;
                Ok(Some(Completion::Cancelled(r)))
            }
        }
    })?;
    Ok(completed.unwrap_or_else(|| {
        // Its key is free: whatever its connection seems to the client,
        // what held the key is gone, and the next keep takes it back.
        waiter.lost();
        std::thread::sleep(REENTRY_LOOK);
        Completion::Held(Vec::new())
    }))
}

/// [`Backend::leave_pending`](crate::Backend::leave_pending).
pub(super) fn leave_pending(
    inner: &Arc<Inner>,
    waiter: Box<dyn WaiterLease>,
    change: &ModeChange,
) -> Result<ModeRecord> {
    let since = waiter.pending_since();
    // The gate first: a reader that finds this waiter gone must find the
    // record it leaves too, not a PENDING that seems to lapse.
    let inner2 = Arc::clone(inner);
    let conn = runtime::block_on(async move { inner2.begin_gate(true).await })?;
    drop(waiter);
    let (inner, change) = (Arc::clone(inner), change.clone());
    runtime::block_on(async move {
        let (now, view) = match inner.look_under_gate(&conn).await {
            Ok(v) => v,
            Err(e) => {
                inner.rollback(conn).await;
                return Err(e);
            }
        };
        let r = view.record.clone();
        if r.mode.is_draining() && r.since == since && view.lapsed.is_some() {
            let mut back = match r.lapses_to() {
                Mode::ReadOnly => {
                    let mut ro = ModeRecord {
                        mode: Mode::ReadOnly,
                        from: None,
                        since: now,
                        by: change.by.clone(),
                        pid: change.pid,
                        ..r.clone()
                    };
                    change.update(&mut ro);
                    ro
                }
                _ => Inner::online_record(&change, now),
            };
            let (sql, entry) = inner.write_sql_recording(&mut back, &r, change.entry.as_ref())?;
            inner.commit(conn, &sql).await?;
            inner.recorded(entry);
            return Ok(back);
        }
        inner.commit(conn, "SELECT 1").await?;
        Ok(r)
    })
}

/// A mode change at once, under the exclusive gate: a lapsed drain it
/// replaces is recorded first, then the record `next` makes of the view
/// at the server's time is written, with `also` (statements, or nothing)
/// in the same transaction, and with the entry `draft` makes of it when
/// it changes the mode in force.
pub(super) fn change_now(
    inner: &Arc<Inner>,
    also: String,
    draft: Option<EntryDraft>,
    next: impl FnOnce(&ModeRecord, Timestamp) -> ModeRecord + Send + 'static,
) -> Result<ModeRecord> {
    let inner = Arc::clone(inner);
    runtime::block_on(async move {
        let (conn, now, view) = inner.gate_and_look().await?;
        inner.notice_under_gate(&conn, now, &view).await;
        let mut next = next(&view.record, now);
        let draft = draft.filter(|_| next.mode != view.mode);
        let (sql, entry) = inner.write_sql_recording(&mut next, &view.record, draft.as_ref())?;
        inner.commit(conn, &format!("{sql}{also}")).await?;
        inner.recorded(entry);
        Ok(next)
    })
}

/// [`Backend::force_offline`](crate::Backend::force_offline).
pub(super) fn force_offline(inner: &Arc<Inner>, change: &ModeChange) -> Result<ModeRecord> {
    let change = change.clone();
    change_now(inner, String::new(), change.entry.clone(), move |r, now| {
        let mut offline = if r.mode == Mode::Offline {
            r.clone()
        } else {
            ModeRecord {
                mode: Mode::Offline,
                from: None,
                since: now,
                by: change.by.clone(),
                pid: change.pid,
                ..r.clone()
            }
        };
        change.update(&mut offline);
        offline
    })
}

/// [`Backend::go_online`](crate::Backend::go_online).
pub(super) fn go_online(inner: &Arc<Inner>, change: &ModeChange) -> Result<ModeRecord> {
    let change = change.clone();
    // A run that died mid-command no longer explains the mode.
    let also = format!("; {}", super::window::clear_abandoned_sql(inner));
    change_now(inner, also, change.entry.clone(), move |_, now| {
        Inner::online_record(&change, now)
    })
}
