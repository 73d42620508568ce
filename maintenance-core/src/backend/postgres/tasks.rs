//! Tasks (I1, I3): each live run holds its own key, exclusively, on a
//! connection of its own for its whole life, plus a row with its record.
//! Live means the key is held: probes take it shared, never exclusively,
//! so a probe never makes a dead task look live to another reader; dead
//! rows are reaped and never counted. A single-instance command also holds
//! its command's instance key on the same connection, waited for up to
//! the lock timeout before the gate.
//!
//! The start runs on the task's own connection: draw and lock the key,
//! then in one transaction the shared gate, the mode, the admission and the
//! row — two round trips after the connection's startup. A child that
//! inherits the connection's socket keeps both keys (I3, `socket.rs`).
//! Joins prove membership by the task's secret only: an inherited socket
//! proves nothing to a nested run.

use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::connect::Conn;
use super::sql::{self, Rows, boolean, int, text};
use super::{Inner, keys, runtime, timestamp_ms};
use crate::admission::{admit, admit_joined};
use crate::backend::{Membership, TaskLease};
use crate::clock::Timestamp;
use crate::error::{Error, Refusal, Result};
use crate::identity::Identity;
use crate::join::JoinToken;
use crate::mode::{Mode, ModeView};
use crate::policy::Instances;
use crate::process::Processes;
use crate::records::{TaskRecord, TaskRequest};

/// This area's tables in schema version 1, given the quoted schema name.
pub(super) fn tables(s: &str) -> String {
    format!(
        "CREATE SEQUENCE {s}.instance_keys AS integer MINVALUE 1 MAXVALUE 2147483647;
         CREATE TABLE {s}.tasks (
             site text NOT NULL,
             key integer NOT NULL,
             id text NOT NULL,
             task_id text NOT NULL,
             name text NOT NULL,
             started_ms bigint NOT NULL,
             record text NOT NULL,
             secret_sha256 text,
             PRIMARY KEY (site, key)
         );
         CREATE INDEX tasks_by_task ON {s}.tasks (site, task_id);
         CREATE TABLE {s}.instances (
             site text NOT NULL,
             name_sha256 text NOT NULL,
             name text NOT NULL,
             key integer NOT NULL DEFAULT nextval('{s}.instance_keys'),
             PRIMARY KEY (site, name_sha256)
         );"
    )
}

/// How long a refused start looks for the instance holder's row (see
/// `lock_instance`): a round trip or two of the holder's, on a busy server.
const HOLDER_GRACE: Duration = Duration::from_millis(500);

/// What is known of a live task whose row's record cannot be read, from
/// [`Inner::live_sql`]'s other columns: that it is live, its name and start,
/// and that it holds off OFFLINE as a task started ONLINE would.
fn unreadable_task(row: &[Option<String>]) -> TaskRecord {
    let (id, task_id) = (text(row, 3), text(row, 4));
    TaskRecord {
        id: id.to_owned(),
        name: format!(
            "(unreadable task row, key {}: {})",
            int(row, 2),
            text(row, 5)
        ),
        argv: Vec::new(),
        pid: 0,
        user: "?".into(),
        host: "?".into(),
        started_at: timestamp_ms(int(row, 6)),
        policy: crate::policy::Policy::DEFAULT,
        started_in: Mode::Online,
        in_window: false,
        holders: Vec::new(),
        processes: None,
        joined: (task_id != id).then(|| task_id.to_owned()),
    }
}

/// A task's row as read: its record and the hash of its secret.
struct Stored {
    record: TaskRecord,
    secret_sha256: Option<String>,
}

impl Inner {
    /// The statement removing dead tasks' rows, one row returned per row
    /// removed.
    pub(super) fn reap_sql(&self) -> String {
        format!(
            "DELETE FROM {}.tasks WHERE site = {} AND pg_try_advisory_xact_lock_shared({}, key) RETURNING 1",
            self.s(),
            self.site_lit(),
            self.class
        )
    }

    /// The live rows `filter` (SQL on `t`) selects, oldest first.
    fn live_sql(&self, filter: &str) -> String {
        format!(
            "SELECT t.record, t.secret_sha256, t.key, t.id, t.task_id, t.name, t.started_ms \
             FROM {s}.tasks t WHERE t.site = {site} AND ({filter}) \
             AND NOT pg_try_advisory_xact_lock_shared({c}, t.key) ORDER BY t.started_ms, t.key",
            s = self.s(),
            site = self.site_lit(),
            c = self.class
        )
    }

    fn parse_stored(&self, rows: &Rows) -> Vec<Stored> {
        let me = &Identity::current().host;
        rows.iter()
            .map(|row| {
                let secret_sha256 = row.get(1).cloned().flatten();
                // A live row whose record this binary cannot read (damaged,
                // or a newer binary's) still counts: what its columns say,
                // holding off OFFLINE as a task started ONLINE would (as the
                // file backend's unreadable task file), never skipped.
                let Ok(mut record) = serde_json::from_str::<TaskRecord>(text(row, 0)) else {
                    return Stored {
                        record: unreadable_task(row),
                        secret_sha256,
                    };
                };
                // Never what the record says of its holders: what the
                // recorded processes say now, on the host they run on.
                record.holders = match &record.processes {
                    Some(p) if &record.host == me => p.holders(),
                    _ => Vec::new(),
                };
                Stored {
                    record,
                    secret_sha256,
                }
            })
            .collect()
    }

    /// Every live task, on `conn`.
    pub(super) async fn live_on(&self, conn: &Conn) -> Result<Vec<TaskRecord>> {
        let rows = sql::run(&conn.client, &self.live_sql("true"))
            .await
            .map_err(|e| self.pg_error(e))?;
        Ok(self
            .parse_stored(rows.first().unwrap_or(&Vec::new()))
            .into_iter()
            .map(|s| s.record)
            .collect())
    }

    /// The record of a run of `request` by this process at `now`.
    fn new_record(
        request: &TaskRequest,
        key: i32,
        now: Timestamp,
        started_in: Mode,
        in_window: bool,
        joined: Option<String>,
    ) -> TaskRecord {
        let me = Identity::current();
        TaskRecord {
            id: format!("{key}-{}", crate::random::hex::<6>()),
            name: request.name.clone(),
            argv: request.argv.clone(),
            pid: me.pid,
            user: me.user.clone(),
            host: me.host.clone(),
            started_at: now,
            policy: request.policy,
            started_in,
            in_window,
            holders: Vec::new(),
            processes: None,
            joined,
        }
    }

    fn row_sql(
        &self,
        key: i32,
        record: &TaskRecord,
        secret_sha256: Option<&str>,
    ) -> Result<String> {
        let json = serde_json::to_string(record).map_err(|e| Error::Invalid(e.to_string()))?;
        let ms = record
            .started_at
            .system_time()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Ok(format!(
            "INSERT INTO {s}.tasks (site, key, id, task_id, name, started_ms, record, secret_sha256) \
             VALUES ({site}, {key}, {id}, {task}, {name}, {ms}, {json}, {secret}) \
             ON CONFLICT (site, key) DO UPDATE SET id = EXCLUDED.id, task_id = EXCLUDED.task_id, \
             name = EXCLUDED.name, started_ms = EXCLUDED.started_ms, record = EXCLUDED.record, \
             secret_sha256 = EXCLUDED.secret_sha256",
            s = self.s(),
            site = self.site_lit(),
            id = sql::lit(&record.id),
            task = sql::lit(record.task_id()),
            name = sql::lit(&record.name),
            json = sql::lit(&json),
            secret = secret_sha256.map_or("NULL".into(), sql::lit),
        ))
    }

    /// Takes the command's instance key on `conn`, waiting up to the
    /// request's lock timeout; refused naming the live holder.
    async fn lock_instance(&self, conn: &Conn, request: &TaskRequest) -> Result<()> {
        if request.policy.instances == Instances::Concurrent {
            return Ok(());
        }
        let (s, site) = (self.s(), self.site_lit());
        let hash = sql::lit(&crate::digest::sha256_hex(request.name.as_bytes()));
        let rows = sql::run(
            &conn.client,
            &format!(
                "INSERT INTO {s}.instances (site, name_sha256, name) VALUES ({site}, {hash}, {name}) \
                 ON CONFLICT DO NOTHING; \
                 SELECT key FROM {s}.instances WHERE site = {site} AND name_sha256 = {hash}",
                name = sql::lit(&request.name)
            ),
        )
        .await
        .map_err(|e| self.pg_error(e))?;
        let row = rows.first().and_then(|r| r.first()).ok_or_else(|| {
            self.target
                .error(format!("no instance row for `{}`", request.name))
        })?;
        let key = keys::instance_key(int(row, 0) as i32);
        let started = Instant::now();
        let got = if request.lock_timeout.is_zero() {
            let rows = sql::run(
                &conn.client,
                &format!("SELECT pg_try_advisory_lock({}, {key})", self.class),
            )
            .await
            .map_err(|e| self.pg_error(e))?;
            rows.first()
                .and_then(|r| r.first())
                .is_some_and(|r| boolean(r, 0))
        } else {
            let ms = request.lock_timeout.as_millis().clamp(1, i32::MAX as u128);
            // The server is silent while the lock is waited for.
            conn.socket.allow(request.lock_timeout);
            match sql::run(
                &conn.client,
                &format!(
                    "SET lock_timeout = '{ms}ms'; SELECT pg_advisory_lock({}, {key}); RESET lock_timeout",
                    self.class
                ),
            )
            .await
            {
                Ok(_) => true,
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => false,
                Err(e) => return Err(self.pg_error(e)),
            }
        };
        if got {
            return Ok(());
        }
        let waited = started.elapsed();
        // The holder locks the instance before it passes the gate and
        // commits its row: a start refused in between finds no row yet, and
        // looks again for a moment, as the file backend does for its task
        // file (`HOLDER_GRACE` there).
        let deadline = Instant::now() + HOLDER_GRACE;
        let holder = loop {
            let rows = sql::run(
                &conn.client,
                &self.live_sql(&format!("t.name = {}", sql::lit(&request.name))),
            )
            .await
            .map_err(|e| self.pg_error(e))?;
            let found = self
                .parse_stored(rows.first().unwrap_or(&Vec::new()))
                .into_iter()
                .map(|s| Box::new(s.record))
                .next();
            if found.is_some() || Instant::now() >= deadline {
                break found;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        Err(Error::Refused(Refusal::AlreadyRunning {
            command: request.name.clone(),
            holder,
            waited_ms: waited.as_millis() as u64,
        }))
    }

    /// The live runs of the task `token` names (its root, or a run that
    /// joined it), and whether the token's secret proves membership.
    async fn prove(&self, conn: &Conn, token: &JoinToken) -> Result<Proof> {
        let (s, site, c) = (self.s(), self.site_lit(), self.class);
        let tok = sql::lit(token.id());
        let rows = sql::run(
            &conn.client,
            &self.live_sql(&format!(
                "t.task_id IN (SELECT u.task_id FROM {s}.tasks u WHERE u.site = {site} \
                 AND (u.id = {tok} OR u.task_id = {tok}) AND NOT pg_try_advisory_xact_lock_shared({c}, u.key))"
            )),
        )
        .await
        .map_err(|e| self.pg_error(e))?;
        let group = self.parse_stored(rows.first().unwrap_or(&Vec::new()));
        let Some(first) = group.first() else {
            return Ok(Proof::Gone);
        };
        let root = first.record.task_id().to_owned();
        let standing = group
            .iter()
            .find(|t| t.record.id == root)
            .unwrap_or(first)
            .record
            .clone();
        let secret_sha256 = group.iter().find_map(|t| t.secret_sha256.clone());
        let by_secret = token.secret().is_some_and(|secret| {
            group.iter().any(|t| {
                t.secret_sha256
                    .as_deref()
                    .is_some_and(|h| secret.matches(h))
            })
        });
        let names = group.iter().map(|t| t.record.name.clone()).collect();
        Ok(if by_secret {
            Proof::Member {
                standing,
                secret_sha256,
                names,
            }
        } else {
            Proof::Unproven(standing)
        })
    }

    /// In one round trip: a fresh key of its own for `conn` (drawn until
    /// one is free: the sequence cycles), then a transaction holding the
    /// shared gate, with the server's time and the view.
    async fn key_and_look(&self, conn: &Conn) -> Result<(i32, Timestamp, ModeView)> {
        let sql = format!(
            "SELECT k, pg_try_advisory_lock({c}, k) FROM (SELECT nextval('{s}.lock_keys')::integer AS k) n; \
             BEGIN; SELECT pg_advisory_xact_lock_shared({c}, {gate}); SELECT {now}; {view}",
            c = self.class,
            s = self.s(),
            gate = keys::GATE,
            now = self.now_ms_sql(),
            view = self.view_sql()
        );
        loop {
            let rows = sql::run(&conn.client, &sql)
                .await
                .map_err(|e| self.pg_error(e))?;
            let first = |i: usize| rows.get(i).and_then(|r| r.first());
            let Some(drawn) = first(0) else {
                return Err(self.target.error("no key was drawn for the task"));
            };
            if !boolean(drawn, 1) {
                // Still held by a task of a previous cycle: draw again.
                sql::run(&conn.client, "ROLLBACK")
                    .await
                    .map_err(|e| self.pg_error(e))?;
                continue;
            }
            let now = first(2).map_or(Timestamp::EPOCH, |r| timestamp_ms(int(r, 0)));
            let view = self.view_of_rows(rows.get(3).unwrap_or(&Vec::new()))?;
            return Ok((int(drawn, 0) as i32, now, view));
        }
    }

    /// Inside a transaction holding the shared gate: the server's time and
    /// the view (no writer can move the record meanwhile).
    async fn look_shared(&self, conn: &Conn) -> Result<(Timestamp, ModeView)> {
        // The same look a writer makes, minus the cleaning.
        let rows = sql::run(
            &conn.client,
            &format!("SELECT {}; {}", self.now_ms_sql(), self.view_sql()),
        )
        .await
        .map_err(|e| self.pg_error(e))?;
        let now = rows
            .first()
            .and_then(|r| r.first())
            .map_or(Timestamp::EPOCH, |r| timestamp_ms(int(r, 0)));
        let view = self.view_of_rows(rows.get(1).unwrap_or(&Vec::new()))?;
        Ok((now, view))
    }
}

/// A task the server has no connection for is refused (exit 75), saying
/// so; any other error stays as it is.
fn refused_if_full(e: Error, request: &TaskRequest) -> Error {
    match e {
        Error::Refused(Refusal::NoConnection {
            command: None,
            server,
            message,
        }) => Error::Refused(Refusal::NoConnection {
            command: Some(request.name.clone()),
            server,
            message,
        }),
        e => e,
    }
}

/// What a token proves.
enum Proof {
    Gone,
    Unproven(TaskRecord),
    Member {
        standing: TaskRecord,
        secret_sha256: Option<String>,
        names: Vec<String>,
    },
}

/// A live task's hold: its connection (holding its key, and its instance
/// key) and its record.
#[derive(Debug)]
pub(super) struct PgTaskLease {
    record: TaskRecord,
    conn: Option<Arc<Conn>>,
    handed_to_child: bool,
    key: i32,
    inner: Arc<Inner>,
}

impl TaskLease for PgTaskLease {
    fn record(&self) -> &TaskRecord {
        &self.record
    }

    fn inheritable_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.conn
            .as_ref()
            .and_then(|c| c.socket.fd())
            // SAFETY: the descriptor belongs to the socket `self.conn`
            // holds, which stays attached (open) until this lease drops:
            // only `Drop` detaches it, and it outlives no borrow of self.
            .map(|fd| vec![unsafe { BorrowedFd::borrow_raw(fd) }])
            .unwrap_or_default()
    }

    fn mark_handed_to_child(&mut self) {
        self.handed_to_child = true;
    }

    fn set_processes(&mut self, processes: &Processes) -> Result<()> {
        self.record.processes = Some(*processes);
        let Some(conn) = self.conn.clone() else {
            return Ok(());
        };
        let json =
            serde_json::to_string(&self.record).map_err(|e| Error::Invalid(e.to_string()))?;
        let inner = Arc::clone(&self.inner);
        let key = self.key;
        runtime::block_on(async move {
            sql::run(
                &conn.client,
                &format!(
                    "UPDATE {}.tasks SET record = {} WHERE site = {} AND key = {key}",
                    inner.s(),
                    sql::lit(&json),
                    inner.site_lit()
                ),
            )
            .await
            .map_err(|e| inner.pg_error(e))?;
            Ok(())
        })
    }
}

impl Drop for PgTaskLease {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if self.handed_to_child {
            // A child holds the socket: close only this process's
            // descriptor, saying nothing (I3).
            conn.socket.detach();
            return;
        }
        // The row goes and the keys are freed before this returns, so the
        // next reader sees the task gone (a closing connection frees its
        // locks only a moment later).
        let sql = format!(
            "DELETE FROM {}.tasks WHERE site = {} AND key = {}; SELECT pg_advisory_unlock_all()",
            self.inner.s(),
            self.inner.site_lit(),
            self.key
        );
        let _ = runtime::block_on(async move {
            let _ = sql::run(&conn.client, &sql).await;
            Ok(())
        });
    }
}

/// [`Backend::start_task`](crate::Backend::start_task).
pub(super) fn start(
    inner: &Arc<Inner>,
    request: &TaskRequest,
    secret_sha256: &str,
) -> Result<Box<dyn TaskLease>> {
    if request.name.is_empty() {
        return Err(Error::Invalid("a command name cannot be empty".into()));
    }
    let (inner2, request, secret) = (Arc::clone(inner), request.clone(), secret_sha256.to_owned());
    let (conn, key, record) = runtime::block_on(async move {
        let inner = inner2;
        let conn = inner
            .connect()
            .await
            .map_err(|e| refused_if_full(e, &request))?;
        inner.lock_instance(&conn, &request).await?;
        let (key, now, view) = inner.key_and_look(&conn).await?;
        if let Err(refusal) = admit(&request, &view) {
            let _ = sql::run(&conn.client, "ROLLBACK").await;
            return Err(Error::Refused(refusal));
        }
        let record = Inner::new_record(&request, key, now, view.mode, request.in_window, None);
        let row = inner.row_sql(key, &record, Some(&secret))?;
        sql::run(&conn.client, &format!("{row}; COMMIT"))
            .await
            .map_err(|e| inner.pg_error(e))?;
        Ok((conn, key, record))
    })?;
    Ok(Box::new(PgTaskLease {
        record,
        conn: Some(Arc::new(conn)),
        handed_to_child: false,
        key,
        inner: Arc::clone(inner),
    }))
}

/// [`Backend::join_task`](crate::Backend::join_task).
pub(super) fn join(
    inner: &Arc<Inner>,
    token: &JoinToken,
    request: &TaskRequest,
) -> Result<Box<dyn TaskLease>> {
    if request.name.is_empty() {
        return Err(Error::Invalid("a command name cannot be empty".into()));
    }
    let (inner2, request, token) = (Arc::clone(inner), request.clone(), token.clone());
    let (conn, key, record) = runtime::block_on(async move {
        let inner = inner2;
        let (conn, key) = inner
            .lock_connection()
            .await
            .map_err(|e| refused_if_full(e, &request))?;
        // A joined run keeps its own command's single instance, unless its
        // task already runs that command (`deploy` calling `deploy`):
        // taken before the gate, as a start takes it, since it may wait.
        if let Proof::Member { names, .. } = inner.prove(&conn, &token).await?
            && !names.contains(&request.name)
        {
            inner.lock_instance(&conn, &request).await?;
        }
        // The proof, the admission and the row, under the shared gate: a
        // mode change's final look sees this run or sees its task gone.
        inner.gate_on(&conn, false).await?;
        let (standing, secret_sha256) = match inner.prove(&conn, &token).await? {
            Proof::Gone => {
                return Err(Error::Refused(Refusal::JoinGone {
                    task: token.id().chars().take(80).collect(),
                }));
            }
            Proof::Unproven(task) => {
                return Err(Error::Refused(Refusal::JoinUnproven {
                    command: request.name.clone(),
                    task: Box::new(task),
                }));
            }
            Proof::Member {
                standing,
                secret_sha256,
                ..
            } => (standing, secret_sha256),
        };
        let (now, view) = inner.look_shared(&conn).await?;
        let window_open = super::window::is_running(&inner).await?;
        // A standing inside a window lasts as long as the window.
        let (started_in, in_window) = if standing.in_window && !window_open {
            admit(&request, &view).map_err(Error::Refused)?;
            (view.mode, false)
        } else {
            admit_joined(&request, &standing, &view, window_open).map_err(Error::Refused)?;
            (standing.started_in, standing.in_window)
        };
        let record = Inner::new_record(
            &request,
            key,
            now,
            started_in,
            in_window,
            Some(standing.task_id().to_owned()),
        );
        let row = inner.row_sql(key, &record, secret_sha256.as_deref())?;
        sql::run(&conn.client, &format!("{row}; COMMIT"))
            .await
            .map_err(|e| inner.pg_error(e))?;
        Ok((conn, key, record))
    })?;
    Ok(Box::new(PgTaskLease {
        record,
        conn: Some(Arc::new(conn)),
        handed_to_child: false,
        key,
        inner: Arc::clone(inner),
    }))
}

/// [`Backend::membership`](crate::Backend::membership).
pub(super) fn membership(inner: &Arc<Inner>, token: &JoinToken) -> Result<Membership> {
    let (inner, token) = (Arc::clone(inner), token.clone());
    runtime::block_on(async move {
        let conn = inner.take().await?;
        let proof = inner.prove(&conn, &token).await?;
        inner.give(conn);
        Ok(match proof {
            Proof::Gone => Membership::Gone,
            Proof::Unproven(task) => Membership::Stranger(task),
            Proof::Member { standing, .. } => Membership::Member(standing),
        })
    })
}

/// [`Backend::tasks`](crate::Backend::tasks).
pub(super) fn live(inner: &Arc<Inner>) -> Result<Vec<TaskRecord>> {
    let inner = Arc::clone(inner);
    runtime::block_on(async move {
        let conn = inner.take().await?;
        let tasks = inner.live_on(&conn).await?;
        inner.give(conn);
        Ok(tasks)
    })
}

/// [`Backend::reap`](crate::Backend::reap): dead tasks' and waiters' rows.
pub(super) fn reap(inner: &Arc<Inner>) -> Result<usize> {
    let inner = Arc::clone(inner);
    runtime::block_on(async move {
        let rows = inner
            .exec(&format!(
                "{}; DELETE FROM {}.waiters WHERE site = {} AND pg_try_advisory_xact_lock_shared({}, key) RETURNING 1",
                inner.reap_sql(),
                inner.s(),
                inner.site_lit(),
                inner.class
            ))
            .await?;
        Ok(rows.iter().map(Vec::len).sum())
    })
}
