//! The PostgreSQL backend: one site's state in a database shared by every
//! host of the site (`backend = "postgres"`, or `$MANAGE_DATABASE_URL`).
//!
//! ```text
//! <schema>.schema_version   one row per schema version applied (schema.rs)
//! <schema>.modes            the mode record of each site, one row, replaced
//!                           in a transaction under the gate (I5)
//! <schema>.waiters          one row per process waiting to take a site
//!                           offline, live while its connection holds its key
//! <schema>.tasks            one row per task run, live while its connection
//!                           holds its key; dead rows are reaped, never counted
//! <schema>.instances        one row per single-instance command name: its key
//! ```
//!
//! Every row carries its `site`: two sites on one server never see each
//! other. The advisory lock keys are in `keys.rs`, and nowhere else.
//!
//! **Decisions.**
//! - *One driver:* tokio-postgres, for everything. The sync `postgres`
//!   crate builds a runtime of its own per client and panics inside a
//!   caller's tokio runtime, and it cannot connect over a socket we made.
//! - *One runtime, ours* (`runtime.rs`): a current-thread runtime on the
//!   backend's own thread, built when the first PostgreSQL backend opens
//!   (the file backend builds none). Each trait call sends its future there
//!   and waits on a std channel, which works from any thread — a tokio
//!   task's included: `CommandTask::start` inside `#[tokio::main]` works.
//! - *Our own sockets* (`connect.rs`, `socket.rs`): each connection runs
//!   over a socket this backend created (keepalives and `tcp_user_timeout`
//!   set before connecting) and handed to `Config::connect_raw`. So a
//!   task's lock connection's descriptor is known: [`TaskLease::inheritable_fds`]
//!   gives it to an external command, and once handed, dropping the lease
//!   takes the socket out of the runtime and closes only this process's
//!   descriptor — nothing is sent, so the child keeps the server connection,
//!   and with it the task's and the instance's locks, after the runner
//!   dies (I3). The child never speaks on it (TLS state stays with the
//!   runner); the server's keepalives are answered by the child's kernel.
//! - *Statements:* the simple-query protocol, several statements a message,
//!   so a concurrent task's start is one round trip after the connection's
//!   startup (the schema's check, the key, the gate and the row, committed:
//!   `tasks.rs`), its end one more, and `offline status` one (`status.rs`);
//!   values quoted by `sql.rs`.
//! - *Hearing changes: LISTEN* (`listen.rs`). Every write of the mode
//!   record sends `NOTIFY <site's channel>, '<generation>'` in its own
//!   transaction (delivered at commit, same round trip). A backend's first
//!   wait starts one LISTEN connection, driven by a loop that polls
//!   `poll_message` (a spawned `Connection` future drops notifications),
//!   which forwards what it hears to the waits of this process, and
//!   connects again, with backoff, when lost. A connection blocked on a
//!   lock hears nothing, so a wait blocked on a task's key is cancelled
//!   (`pg_cancel_backend`, on a pooled connection) the moment a change is
//!   heard (`watch.rs` says why so). A periodic re-read of the generation
//!   stays as the fallback.
//! - *Time:* every stored time is the server's `now()`, plus the offset of
//!   the backend's clock from this host's real clock (zero for the real
//!   clock): hosts with skewed clocks agree, and the conformance suite's
//!   [`ManualClock`](crate::ManualClock) still moves time.
//!
//! **Connections.** A task or a waiter holds one connection of its own for
//! its lifetime (advisory locks are re-entrant within a connection, so
//! nothing else ever runs on it but its own statements); the backend keeps
//! a few more for everything else (mode changes, probes), one operation at
//! a time each, and, once it has waited, one LISTEN connection. A server out of connections ("too many clients") refuses
//! the task with a clear error.
//!
//! **Areas.** This file holds the [`Backend`] impl, every method one line
//! into the file of its area: `modes.rs` (the record, the gate, the
//! waiters), `tasks.rs` (starts, joins, probes), `watch.rs`
//! (`wait_for_change`), `listen.rs` (the LISTEN connection), `history.rs` (the history, and the changes nobody
//! lived to record), `readonly.rs` (the read-only tier, and web layers'
//! writes in flight), `sessions.rs` (web sessions, touched in batches),
//! `window.rs` (the `offline run` window) and `schedules.rs` (scheduled
//! windows), both holding their key through `held_key.rs` (a key held on a
//! connection of its own, taken again when the server ends it).

mod connect;
mod held_key;
mod history;
#[cfg(test)]
mod hold_tests;
mod keys;
mod listen;
mod modes;
mod readonly;
mod runtime;
mod schedules;
pub(crate) mod schema;
mod sessions;
mod socket;
mod sql;
mod status;
mod tasks;
#[cfg(test)]
mod tests;
mod tls;
mod watch;
mod window;

pub mod doctor;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use self::connect::{Conn, Target};
use self::schema::SchemaState;
use super::{
    Backend, Completion, EndedSchedule, Membership, ModeChange, PendingStart, ReadOnlyStart,
    ScheduleEnd, ScheduleLease, ScheduleRecord, SessionSummary, StatusLook, TaskLease, WaiterLease,
    WindowLease, WindowRun, WindowState, WritesLease,
};
use crate::clock::{SharedClock, Timestamp};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::history::{HistoryEntry, HistoryQuery, HistoryRead};
use crate::join::JoinToken;
use crate::mode::{ModeRecord, ModeView};
use crate::records::{TaskRecord, TaskRequest, WritesInFlight};
use crate::session::{SessionEntry, SessionKey};

pub use self::schema::SchemaState as PostgresSchemaState;

/// Connections kept open for reuse, per backend.
const POOL: usize = 4;

/// The state in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresBackend {
    inner: Arc<Inner>,
}

/// What every operation needs; shared with the futures on the runtime.
#[derive(Debug)]
pub(crate) struct Inner {
    target: Target,
    site: String,
    schema: String,
    class: i32,
    clock: SharedClock,
    session_timeout: Duration,
    pool: Mutex<Vec<Conn>>,
    schema_ready: OnceLock<()>,
    history: history::HistoryState,
    /// The site's LISTEN connection, started by the first wait.
    listener: listen::Listener,
    /// How often a wait re-reads the mode while the listener listens.
    watch_fallback: Duration,
    /// A web layer's connection for publishing its writes in flight,
    /// opened ahead with its key held (`readonly.rs`).
    writes_ahead: readonly::WritesAhead,
}

impl PostgresBackend {
    /// The backend `config` names. Connects nothing yet: the first
    /// operation does, and creates the schema if it is absent.
    pub fn open(config: &Config, clock: SharedClock) -> Result<Self> {
        let pg = &config.postgres;
        let url = pg.url.clone().ok_or_else(|| {
            Error::Invalid(format!(
                "the postgres backend needs a database URL: set database_url in manage.toml or \
                 ${}",
                crate::config::ENV_DATABASE_URL
            ))
        })?;
        crate::config::check_schema(&pg.schema)
            .map_err(|e| Error::Invalid(format!("`[postgres] schema`: {e}")))?;
        crate::config::check_site(&pg.site).map_err(|e| Error::Invalid(format!("`site`: {e}")))?;
        Ok(PostgresBackend {
            inner: Arc::new(Inner {
                target: Target {
                    url,
                    connect_timeout: pg.connect_timeout,
                    silence: Default::default(),
                },
                class: keys::site_class(&pg.schema, &pg.site),
                site: pg.site.clone(),
                schema: pg.schema.clone(),
                clock,
                session_timeout: config.session_timeout,
                pool: Mutex::new(Vec::new()),
                schema_ready: OnceLock::new(),
                history: history::HistoryState::new(config.history_max_size),
                listener: listen::Listener::new(keys::channel(&pg.schema, &pg.site)),
                watch_fallback: watch::FALLBACK,
                writes_ahead: readonly::WritesAhead::default(),
            }),
        })
    }

    /// One new connection and `SELECT 1` on it, nothing else: the
    /// benchmarks' floor (`bench-pg-floor`), through the same connection
    /// path as every other call (socket options, TLS, authentication,
    /// startup options).
    pub fn ping(&self) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        runtime::block_on(async move {
            let conn = inner.target.connect().await?;
            sql::run(&conn.client, "SELECT 1")
                .await
                .map(drop)
                .map_err(|e| inner.pg_error(e))
        })
    }

    /// Where the schema stands for this binary (`offline doctor`).
    pub fn schema_state(&self) -> Result<SchemaState> {
        let inner = Arc::clone(&self.inner);
        runtime::block_on(async move {
            let conn = inner.target.connect().await?;
            schema::state(&conn.client, &inner.schema, schema::MIGRATIONS)
                .await
                .map_err(|e| inner.pg_error(e))
        })
    }

    /// Applies the pending migrations (`offline migrate-state`); creates
    /// the schema first if it is absent. Returns the versions applied.
    pub fn migrate(&self) -> Result<Vec<i64>> {
        self.migrate_with(schema::MIGRATIONS)
    }

    /// [`migrate`](Self::migrate) with a given list, for tests.
    pub(crate) fn migrate_with(
        &self,
        migrations: &'static [schema::Migration],
    ) -> Result<Vec<i64>> {
        let inner = Arc::clone(&self.inner);
        runtime::block_on(async move {
            let conn = inner.target.connect().await?;
            schema::migrate(&conn.client, &inner.schema, migrations)
                .await
                .map_err(|e| inner.pg_error(e))
        })
    }

    /// The site's name.
    pub fn site(&self) -> &str {
        &self.inner.site
    }
}

impl Inner {
    /// The schema as SQL writes it.
    fn s(&self) -> String {
        schema::quoted(&self.schema)
    }

    /// The site as a SQL literal.
    fn site_lit(&self) -> String {
        sql::lit(&self.site)
    }

    /// The error for a failed statement.
    fn pg_error(&self, e: tokio_postgres::Error) -> Error {
        if let Some(db) = e.as_db_error() {
            if *db.code() == tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS {
                return self.target.error(connect::too_many_clients(db.message()));
            }
            // The server ended the connection: shut down, restarted, or an
            // administrator's `pg_terminate_backend`. Nothing about
            // privileges; the server may take the command again.
            if matches!(db.code().code(), "57P01" | "57P02" | "57P03") {
                return self.target.unreachable(format!(
                    "the server ended the connection: {} ({}); it was restarted or shut down, or \
                     an administrator ended the connection: run the command again once the \
                     server answers",
                    db.message(),
                    db.code().code()
                ));
            }
            // A value the server could not use (a data exception, class
            // 22): a row damaged, or written by something other than
            // manage; nothing about privileges.
            if db.code().code().starts_with("22") {
                return self.target.error(format!(
                    "{} ({}): the server could not use a value, read from a row in schema {} \
                     (damaged, or written by something other than manage) or sent by this binary; \
                     the error is the server's, not a matter of privileges",
                    db.message(),
                    db.code().code(),
                    self.schema
                ));
            }
            return self.target.error(format!(
                "{} ({}): check the database URL's user's privileges on schema {} (`offline doctor` checks them)",
                db.message(),
                db.code().code(),
                self.schema
            ));
        }
        if e.is_closed() {
            if let Some(waited) = self.target.recent_silence() {
                return self.silence_error(waited);
            }
            return self.target.unreachable(
                "the connection to the server was lost, or the server stopped answering: check \
                 that the server runs and is reachable",
            );
        }
        let cause = std::error::Error::source(&e)
            .map(|s| format!(": {s}"))
            .unwrap_or_default();
        self.target.error(format!("{e}{cause}"))
    }

    /// The error for a statement that failed on `conn`: as
    /// [`pg_error`](Self::pg_error), unless the server left it unanswered
    /// past the answer guard (`socket.rs`), which is said as such.
    fn conn_error(&self, conn: &Conn, e: tokio_postgres::Error) -> Error {
        match conn.socket.went_silent() {
            Some(waited) if e.is_closed() => self.silence_error(waited),
            _ => self.pg_error(e),
        }
    }

    /// The error for a server that left a request unanswered `waited`.
    fn silence_error(&self, waited: Duration) -> Error {
        self.target.unreachable(format!(
            "the server stopped answering: nothing came back for {} after a request; check \
             that the server runs and is not stopped, overloaded or cut off by the network",
            humantime::format_duration(waited)
        ))
    }

    /// The server's `now()` moved by the backend clock's offset from this
    /// host's real clock, as SQL. With an offset, the time is the
    /// statement's, not the transaction's: the offset is read as the
    /// statement is built, after the transaction began, and a time from
    /// before that moved by it would lie before the clock's time.
    fn now_sql(&self) -> String {
        let (clock, real) = (self.clock.now(), SystemTime::now());
        let micros: i128 = match clock.duration_since(real) {
            Ok(ahead) => ahead.as_micros() as i128,
            Err(behind) => -(behind.duration().as_micros() as i128),
        };
        // The real clock read twice differs by a few microseconds.
        if micros.abs() < 1_000 {
            "now()".into()
        } else {
            format!("(statement_timestamp() + interval '{micros} microseconds')")
        }
    }

    /// [`now_sql`](Self::now_sql) as milliseconds since the epoch.
    fn now_ms_sql(&self) -> String {
        format!(
            "floor(extract(epoch from {}) * 1000)::bigint",
            self.now_sql()
        )
    }

    /// A new connection, the schema checked (created when absent) once
    /// per backend.
    async fn connect(&self) -> Result<Conn> {
        let conn = self.target.connect().await?;
        if self.schema_ready.get().is_none() {
            self.ensure_schema(&conn).await?;
        }
        Ok(conn)
    }

    /// Creates the schema when it is absent, and judges it
    /// ([`judge_schema`](Self::judge_schema)).
    async fn ensure_schema(&self, conn: &Conn) -> Result<()> {
        let state = schema::ensure(&conn.client, &self.schema, schema::MIGRATIONS)
            .await
            .map_err(|e| self.pg_error(e))?;
        self.judge_schema(state)
    }

    /// The check to put first in the first message of a connection made
    /// without one ([`schema::version_sql`]), until this backend has found
    /// the schema usable; then `None`.
    fn schema_check(&self) -> Option<String> {
        self.schema_ready
            .get()
            .is_none()
            .then(|| schema::version_sql(&self.schema))
    }

    /// The schema as found: usable (remembered for this backend), or the
    /// error that refuses it.
    fn judge_schema(&self, state: SchemaState) -> Result<()> {
        match state {
            SchemaState::Unreadable {
                version,
                readable_by,
            } => Err(self.target.error(format!(
                "schema {} is at version {version}, which needs a binary that knows \
                 schema version {readable_by} or later; this one knows up to {}: \
                 upgrade manage on this host",
                self.schema,
                schema::VERSION
            ))),
            SchemaState::Missing => Err(self
                .target
                .error(format!("schema {} could not be created", self.schema))),
            SchemaState::Usable { .. } => {
                let _ = self.schema_ready.set(());
                Ok(())
            }
        }
    }

    /// A connection from the pool, or a new one.
    async fn take(&self) -> Result<Conn> {
        loop {
            let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match pooled {
                Some(c) if !c.client.is_closed() => return Ok(c),
                Some(_) => continue,
                None => return self.connect().await,
            }
        }
    }

    /// Gives a connection back after a clean use.
    fn give(&self, conn: Conn) {
        if conn.client.is_closed() {
            return;
        }
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL {
            pool.push(conn);
        }
    }

    /// Runs `sql` on a pooled connection (one round trip); a connection
    /// found closed is replaced once.
    async fn exec(&self, sql: &str) -> Result<Vec<sql::Rows>> {
        let mut tries = 0;
        loop {
            let conn = self.take().await?;
            match sql::run(&conn.client, sql).await {
                Ok(rows) => {
                    self.give(conn);
                    return Ok(rows);
                }
                // Ended while pooled (a restart): once more, on another.
                // Not one that went silent on this request: the next
                // would most likely wait as long.
                Err(e) if e.is_closed() && tries == 0 && conn.socket.went_silent().is_none() => {
                    tries += 1
                }
                Err(e) => return Err(self.conn_error(&conn, e)),
            }
        }
    }

    /// Begins a transaction holding the gate (`exclusive` for mode
    /// changes); returns its connection.
    async fn begin_gate(&self, exclusive: bool) -> Result<Conn> {
        let conn = self.take().await?;
        match self.gate_on(&conn, exclusive).await {
            // A pooled connection the server ended meanwhile: once more,
            // on a new one (not after the server's silence, as `exec`).
            Err(_) if conn.client.is_closed() && conn.socket.went_silent().is_none() => {
                let conn = self.connect().await?;
                self.gate_on(&conn, exclusive).await?;
                Ok(conn)
            }
            Err(e) => Err(e),
            Ok(()) => Ok(conn),
        }
    }

    async fn gate_on(&self, conn: &Conn, exclusive: bool) -> Result<()> {
        let f = if exclusive {
            "pg_advisory_xact_lock"
        } else {
            "pg_advisory_xact_lock_shared"
        };
        // The gate may be held by a writer cut off mid-transaction, which
        // the server ends within the keepalive bound: silence that long
        // is a wait, not a server that stopped answering.
        conn.socket.allow(connect::KEEPALIVE_BOUND);
        sql::run(
            &conn.client,
            &format!("BEGIN; SELECT {f}({}, {})", self.class, keys::GATE),
        )
        .await
        .map_err(|e| self.conn_error(conn, e))?;
        Ok(())
    }

    /// Commits the transaction on `conn` after `sql`, and gives `conn`
    /// back.
    async fn commit(&self, conn: Conn, sql: &str) -> Result<Vec<sql::Rows>> {
        match sql::run(&conn.client, &format!("{sql}; COMMIT")).await {
            Ok(rows) => {
                self.give(conn);
                Ok(rows)
            }
            Err(e) => {
                let _ = sql::run(&conn.client, "ROLLBACK").await;
                Err(self.conn_error(&conn, e))
            }
        }
    }

    /// Rolls back the transaction on `conn` and gives it back.
    async fn rollback(&self, conn: Conn) {
        if sql::run(&conn.client, "ROLLBACK").await.is_ok() {
            self.give(conn);
        }
    }
}

/// A time in milliseconds since the epoch, as the server gave it.
fn timestamp_ms(ms: i64) -> Timestamp {
    Timestamp::at(SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

impl Backend for PostgresBackend {
    fn location(&self) -> String {
        format!(
            "PostgreSQL at {}, schema {}, site {:?}",
            self.inner.target.endpoint(),
            self.inner.schema,
            self.inner.site
        )
    }

    fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    fn mode(&self) -> Result<ModeView> {
        modes::mode(&self.inner)
    }

    fn start_task(&self, request: &TaskRequest, secret_sha256: &str) -> Result<Box<dyn TaskLease>> {
        tasks::start(&self.inner, request, secret_sha256)
    }

    fn join_task(&self, token: &JoinToken, request: &TaskRequest) -> Result<Box<dyn TaskLease>> {
        tasks::join(&self.inner, token, request)
    }

    fn membership(&self, token: &JoinToken) -> Result<Membership> {
        tasks::membership(&self.inner, token)
    }

    fn tasks(&self) -> Result<Vec<TaskRecord>> {
        tasks::live(&self.inner)
    }

    fn reap(&self) -> Result<usize> {
        tasks::reap(&self.inner)
    }

    fn begin_pending(&self, change: &ModeChange) -> Result<PendingStart> {
        modes::begin_pending(&self.inner, change)
    }

    fn complete_offline(
        &self,
        waiter: &dyn WaiterLease,
        entry: Option<&crate::history::EntryDraft>,
    ) -> Result<Completion> {
        modes::complete_offline(&self.inner, waiter, entry)
    }

    fn leave_pending(
        &self,
        waiter: Box<dyn WaiterLease>,
        change: &ModeChange,
    ) -> Result<ModeRecord> {
        modes::leave_pending(&self.inner, waiter, change)
    }

    fn force_offline(&self, change: &ModeChange) -> Result<ModeRecord> {
        modes::force_offline(&self.inner, change)
    }

    fn begin_read_only(&self, change: &ModeChange) -> Result<ReadOnlyStart> {
        readonly::begin_read_only(&self.inner, change)
    }

    fn complete_read_only(
        &self,
        waiter: &dyn WaiterLease,
        entry: Option<&crate::history::EntryDraft>,
    ) -> Result<Completion> {
        readonly::complete_read_only(&self.inner, waiter, entry)
    }

    fn go_read_only(&self, change: &ModeChange) -> Result<ModeRecord> {
        readonly::go_read_only(&self.inner, change)
    }

    fn prepare_writes(&self) -> Result<()> {
        readonly::prepare_writes(&self.inner)
    }

    fn begin_writes(&self) -> Result<Box<dyn WritesLease>> {
        readonly::begin_writes(&self.inner)
    }

    fn writes_in_flight(&self) -> Result<Vec<WritesInFlight>> {
        readonly::writes_in_flight(&self.inner)
    }

    fn go_online(&self, change: &ModeChange) -> Result<ModeRecord> {
        modes::go_online(&self.inner, change)
    }

    fn changes(&self) -> Option<Box<dyn crate::backend::ChangeFeed>> {
        Some(Box::new(listen::Feed::new(&self.inner)))
    }

    fn wait_for_change(
        &self,
        generation: u64,
        tasks: &[TaskRecord],
        timeout: Duration,
    ) -> Result<()> {
        watch::wait_for_change(&self.inner, generation, tasks, timeout)
    }

    fn begin_window_run(&self, run: &WindowRun) -> Result<Box<dyn WindowLease>> {
        window::begin_window_run(&self.inner, run)
    }

    fn window(&self) -> Result<WindowState> {
        window::window(&self.inner)
    }

    fn begin_schedule(&self, schedule: &ScheduleRecord) -> Result<Box<dyn ScheduleLease>> {
        schedules::begin_schedule(&self.inner, schedule)
    }

    fn schedule(&self) -> Result<Option<ScheduleRecord>> {
        schedules::schedule(&self.inner)
    }

    fn end_schedule(&self, end: &ScheduleEnd) -> Result<Option<EndedSchedule>> {
        schedules::end_schedule(&self.inner, end)
    }

    fn begin_scheduled_pending(
        &self,
        schedule: &dyn ScheduleLease,
        change: &ModeChange,
    ) -> Result<PendingStart> {
        schedules::begin_scheduled_pending(&self.inner, schedule, change)
    }

    fn begin_scheduled_read_only(
        &self,
        schedule: &dyn ScheduleLease,
        change: &ModeChange,
    ) -> Result<ReadOnlyStart> {
        schedules::begin_scheduled_read_only(&self.inner, schedule, change)
    }

    fn session_timeout(&self) -> Duration {
        self.inner.session_timeout
    }

    fn touch_session(&self, key: &SessionKey) -> Result<()> {
        sessions::touch_session(&self.inner, key)
    }

    fn touch_sessions(&self, keys: &[SessionKey]) -> Result<()> {
        sessions::touch_sessions(&self.inner, keys)
    }

    fn end_session(&self, key: &SessionKey) -> Result<()> {
        sessions::end_session(&self.inner, key)
    }

    fn session(&self, key: &SessionKey) -> Result<Option<SessionEntry>> {
        sessions::session(&self.inner, key)
    }

    fn sessions(&self) -> Result<Vec<SessionEntry>> {
        sessions::sessions(&self.inner)
    }

    fn session_summary(&self) -> Result<SessionSummary> {
        sessions::session_summary(&self.inner)
    }

    fn prune_sessions(&self) -> Result<usize> {
        sessions::prune_sessions(&self.inner)
    }

    fn append_history(&self, entry: &HistoryEntry) -> Result<bool> {
        history::append_history(&self.inner, entry)
    }

    fn history(&self, query: &HistoryQuery) -> Result<HistoryRead> {
        history::history(&self.inner, query)
    }

    fn record_unrecorded(&self) -> Result<Vec<HistoryEntry>> {
        history::record_unrecorded(&self.inner)
    }

    fn status_look(&self) -> Result<Option<StatusLook>> {
        status::status_look(&self.inner)
    }
}
