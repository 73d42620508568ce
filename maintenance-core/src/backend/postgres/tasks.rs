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
//! row. For a concurrent command that is one message after the
//! connection's startup, the process's schema check in front: the server
//! inserts the row only when the stored mode admits the command at face
//! value (`start_at_once`); else, and for a single-instance command (its
//! instance key may be waited for before the gate), the look and the row
//! are a round trip each, as the admission is judged here. A child that
//! inherits the connection's socket keeps both keys (I3, `socket.rs`).
//! Joins prove membership by the task's secret only: an inherited socket
//! proves nothing to a nested run.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::connect::{Conn, HOLD_ANSWER, HOLD_BEAT, HOLD_DETECT, REENTER, REENTER_ENDED};
use super::held_key::HeldKey;
use super::sql::{self, Rows, boolean, int, text};
use super::{Inner, keys, runtime, schema, timestamp_ms};
use crate::admission::{admit, admit_joined};
use crate::backend::{HoldLost, Membership, TaskLease};
use crate::clock::Timestamp;
use crate::error::{Error, Refusal, Result};
use crate::identity::Identity;
use crate::join::JoinToken;
use crate::mode::{Mode, ModeRecord, ModeView};
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

/// `at` in milliseconds since the epoch, as rows store times.
fn ms_of(at: Timestamp) -> i64 {
    at.system_time()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A task's row as read: its record and the hash of its secret.
struct Stored {
    record: TaskRecord,
    secret_sha256: Option<String>,
}

impl Inner {
    /// The statement removing dead tasks' rows, one row returned per row
    /// removed; the rows of tasks that may still enter again after a
    /// restart of the server stay ([`may_reenter_sql`](Self::may_reenter_sql)).
    pub(super) fn reap_sql(&self) -> String {
        format!(
            "DELETE FROM {}.tasks WHERE site = {} AND NOT {} \
             AND pg_try_advisory_xact_lock_shared({}, key) RETURNING 1",
            self.s(),
            self.site_lit(),
            self.may_reenter_sql(""),
            self.class
        )
    }

    /// When the server started, in milliseconds on the backend's clock.
    async fn server_started_ms(&self, conn: &Conn) -> Result<i64> {
        let sql = format!(
            "SELECT {} - (extract(epoch FROM now() - pg_postmaster_start_time()) * 1000)::bigint",
            self.now_ms_sql()
        );
        let rows = sql::run(&conn.client, &sql)
            .await
            .map_err(|e| self.pg_error(e))?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .map_or(i64::MAX, |r| int(r, 0)))
    }

    /// The live rows `filter` (SQL on `t`) selects, oldest first.
    pub(super) fn live_sql(&self, filter: &str) -> String {
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
        Ok(self.live_of(rows.first().unwrap_or(&Vec::new())))
    }

    /// The live tasks from [`live_sql`](Self::live_sql)'s rows.
    pub(super) fn live_of(&self, rows: &Rows) -> Vec<TaskRecord> {
        self.parse_stored(rows)
            .into_iter()
            .map(|s| s.record)
            .collect()
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
        let ms = ms_of(record.started_at);
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

    /// A root task's start in one message, on a connection made without
    /// the schema check: the check (while this backend has not made it),
    /// a fresh key drawn and locked, then one transaction under the shared
    /// gate in which the server inserts the row — timed by its clock, its
    /// key and its mode filled in by the server — only when the key was
    /// free, the schema is readable, and the stored mode is one that admits
    /// `request` taken at face value (ONLINE, OFFLINE or READONLY, as
    /// [`admit`] says; a draining record needs its waiters judged, and a
    /// record this binary did not write is judged by [`key_and_look`]).
    /// Anything else leaves no row, and the start goes on the long way.
    ///
    /// [`key_and_look`]: Self::key_and_look
    async fn start_at_once(
        &self,
        conn: &Conn,
        request: &TaskRequest,
        secret_sha256: &str,
    ) -> Result<AtOnce> {
        let (s, site, c) = (self.s(), self.site_lit(), self.class);
        let face_value = |mode: Mode| {
            admit(
                request,
                &ModeView::of(ModeRecord {
                    mode,
                    ..ModeRecord::initial()
                }),
            )
            .is_ok()
        };
        // The stored record's mode, read from how this binary writes the
        // record of each mode: its text up to `since` (the legacy `mode`,
        // and the `tier` of READONLY). A record written otherwise (another
        // mode, a newer binary's, a corrupt one) matches none.
        let cases: Vec<String> = [Mode::Online, Mode::Offline, Mode::ReadOnly]
            .into_iter()
            .filter(|m| face_value(*m))
            .map(|mode| {
                let invalid = |e: String| Error::Invalid(e);
                let record = serde_json::to_string(&ModeRecord {
                    mode,
                    ..ModeRecord::initial()
                })
                .map_err(|e| invalid(e.to_string()))?;
                let head = record
                    .find("\"since\":")
                    .map(|i| &record[..i + "\"since\":".len()])
                    .ok_or_else(|| invalid(format!("a mode record without `since`: {record}")))?;
                let name = serde_json::to_string(&mode).map_err(|e| invalid(e.to_string()))?;
                Ok(format!(
                    "WHEN starts_with(m.record, {}) THEN {}",
                    sql::lit(head),
                    sql::lit(name.trim_matches('"'))
                ))
            })
            .collect::<Result<_>>()?;
        let stored_mode = if cases.is_empty() {
            "NULL::text".to_owned()
        } else {
            format!(
                "(SELECT CASE {} END FROM {s}.modes m WHERE m.site = {site})",
                cases.join(" ")
            )
        };
        let no_record = if face_value(Mode::Online) {
            "'ONLINE'"
        } else {
            "NULL"
        };
        let hex = crate::random::hex::<6>();
        let template = Inner::new_record(
            request,
            0,
            Timestamp::EPOCH,
            Mode::Online,
            request.in_window,
            None,
        );
        let record = filled_record_sql(&template, "x.id", "x.ts", "x.mode")?;
        let check = self.schema_check();
        let now = self.now_sql();
        // The key drawn and locked in the statement that inserts the row
        // (a CTE is run once): no setting carries it from one statement to
        // the next. The record is put together by `concat` of its JSON
        // around the values the server fills in, the time formatted
        // straight from `now()`: on a new server backend each function and
        // operator is looked up in cold catalog caches the first time, and
        // `set_config`, jsonb, `||` and `bigint * interval` were most of the
        // start's cost (README, "PostgreSQL's start-up").
        let sql = format!(
            "{check}\
             BEGIN; SELECT pg_advisory_xact_lock_shared({c}, {gate}); \
             WITH d AS (SELECT k, pg_try_advisory_lock({c}, k) AS got \
                        FROM (SELECT nextval('{s}.lock_keys')::integer AS k) n), \
             ins AS (INSERT INTO {s}.tasks (site, key, id, task_id, name, started_ms, record, secret_sha256) \
                     SELECT {site}, x.k, x.id, x.id, {name}, x.ms, {record}, {secret} \
                     FROM (SELECT d.k, concat(d.k, '-{hex}') AS id, \
                                  floor(extract(epoch from {now}) * 1000)::bigint AS ms, \
                                  to_char(timezone('UTC', {now}), 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS ts, \
                                  CASE WHEN EXISTS (SELECT 1 FROM {s}.modes m WHERE m.site = {site}) \
                                       THEN {stored_mode} ELSE {no_record} END AS mode \
                           FROM d WHERE d.got) x \
                     WHERE x.mode IS NOT NULL AND {readable} \
                     ON CONFLICT (site, key) DO UPDATE SET id = EXCLUDED.id, task_id = EXCLUDED.task_id, \
                     name = EXCLUDED.name, started_ms = EXCLUDED.started_ms, record = EXCLUDED.record, \
                     secret_sha256 = EXCLUDED.secret_sha256 \
                     RETURNING record) \
             SELECT d.k, d.got, (SELECT record FROM ins) FROM d; \
             COMMIT",
            check = check.as_deref().map_or(String::new(), |c| format!("{c}; ")),
            gate = keys::GATE,
            name = sql::lit(&request.name),
            secret = sql::lit(secret_sha256),
            readable = schema::readable_sql(&self.schema, schema::MIGRATIONS),
        );
        let rows = match sql::run(&conn.client, &sql).await {
            Ok(rows) => rows,
            // The first use of a site's schema: nothing ran.
            Err(e) if schema::is_missing(&e) => return Ok(AtOnce::NoSchema),
            Err(e) => {
                let _ = sql::run(&conn.client, "ROLLBACK").await;
                return Err(self.pg_error(e));
            }
        };
        let mut rows = rows.iter();
        if check.is_some() {
            self.judge_schema(schema::state_of(
                rows.next().unwrap_or(&Vec::new()),
                schema::MIGRATIONS,
            ))?;
        }
        let _gate = rows.next();
        let drawn = rows.next().and_then(|r| r.first());
        let Some(drawn) = drawn.filter(|d| boolean(d, 1)) else {
            return Ok(AtOnce::NoKey);
        };
        let key = int(drawn, 0) as i32;
        match drawn.get(2).and_then(|r| r.as_deref()) {
            Some(row) => {
                let record = serde_json::from_str(row).map_err(|e| {
                    self.target
                        .error(format!("the task row the server made is unreadable: {e}"))
                })?;
                Ok(AtOnce::Started(key, Box::new(record)))
            }
            None => Ok(AtOnce::Keyed(key)),
        }
    }

    /// In one round trip: a transaction holding the shared gate, with the
    /// server's time and the view.
    async fn look_under_shared_gate(&self, conn: &Conn) -> Result<(Timestamp, ModeView)> {
        let rows = sql::run(
            &conn.client,
            &format!(
                "BEGIN; SELECT pg_advisory_xact_lock_shared({}, {}); SELECT {}; {}",
                self.class,
                keys::GATE,
                self.now_ms_sql(),
                self.view_sql()
            ),
        )
        .await
        .map_err(|e| self.pg_error(e))?;
        let now = rows
            .get(1)
            .and_then(|r| r.first())
            .map_or(Timestamp::EPOCH, |r| timestamp_ms(int(r, 0)));
        let view = self.view_of_rows(rows.get(2).unwrap_or(&Vec::new()))?;
        Ok((now, view))
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

/// SQL making `template`'s JSON text with its `id`, `started_at` and
/// `started_in` replaced by the SQL text values `id`, `at` and `mode`
/// (which need no JSON escaping: a key and hex, a formatted time, a mode's
/// name): one `concat` of literals and those values.
fn filled_record_sql(template: &TaskRecord, id: &str, at: &str, mode: &str) -> Result<String> {
    let invalid = |e: serde_json::Error| Error::Invalid(e.to_string());
    let mut value = serde_json::to_value(template).map_err(invalid)?;
    // Placeholders no field's text can hold: a NUL (never in an argument,
    // a user or a host name) and a random tag.
    let tag = crate::random::hex::<8>();
    let fields = [("id", id), ("started_at", at), ("started_in", mode)];
    for (field, _) in fields {
        value[field] = serde_json::Value::String(format!("\0{field}\0{tag}"));
    }
    let mut json = serde_json::to_string(&value).map_err(invalid)?;
    let mut parts = Vec::new();
    for (field, sql_value) in fields {
        let placeholder = serde_json::to_string(&format!("\0{field}\0{tag}")).map_err(invalid)?;
        let Some(at) = json.find(&placeholder) else {
            return Err(Error::Invalid(format!("no `{field}` in a task record")));
        };
        parts.push(sql::lit(&format!("{}\"", &json[..at])));
        parts.push(sql_value.to_owned());
        json = format!("\"{}", &json[at + placeholder.len()..]);
    }
    parts.push(sql::lit(&json));
    Ok(format!("concat({})", parts.join(", ")))
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

/// How a start in one message ([`Inner::start_at_once`]) went.
enum AtOnce {
    /// Started: its key and its record, as the server made it.
    Started(i32, Box<TaskRecord>),
    /// The key is held, but the mode needs judging: the long way, from
    /// the look.
    Keyed(i32),
    /// The key drawn was still held (the sequence cycles): the long way.
    NoKey,
    /// The schema is absent: it is created, then the long way.
    NoSchema,
}

/// How a task enters again through the gate after its lock's connection
/// was lost: what it was admitted as.
struct Admission {
    request: TaskRequest,
    /// Written back into the row; never shown (not even in `Debug`).
    secret_sha256: Option<String>,
    /// For a joined run: the standing of the task it joined, at the join.
    standing: Option<TaskRecord>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("request", &self.request)
            .field("standing", &self.standing)
            .finish_non_exhaustive()
    }
}

/// What a lost hold calls ([`TaskLease::on_hold_lost`]).
type LostCall = Box<dyn FnOnce(HoldLost) + Send>;

/// What a live task's lease and its watcher share.
struct Hold {
    /// The task's key, on its own connection (with its instance key).
    held: HeldKey,
    /// The record as stored: written again as it is on a re-entry (its id,
    /// start and `started_in` kept).
    record: Mutex<TaskRecord>,
    admission: Admission,
    /// The server process of the connection holding the key, as the last
    /// check read it (0 before the first): a re-entry finding the key still
    /// held ends that connection, its own, first.
    backend_pid: AtomicI64,
    /// The server's time (ms, as the backend's clock reads it) at the last
    /// check that found the key held (the task's start before the first):
    /// a drain begun by then counted this task, so its re-entry during
    /// that drain is no new start.
    held_at_ms: AtomicI64,
    /// Whether the key has been taken again on a connection of this
    /// process alone (a child holds only the first one).
    reentered: AtomicBool,
    /// Told once when the hold is lost for good.
    on_lost: Mutex<Option<LostCall>>,
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold")
            .field("held", &self.held)
            .field("admission", &self.admission)
            .finish_non_exhaustive()
    }
}

/// How a check of the lock's connection went.
enum Check {
    Held,
    /// Unanswered within [`HOLD_ANSWER`], or failed on this side: the key
    /// was held for sure only at the last good check.
    Lost(String),
    /// The server answered with an error, or ended the connection, as the
    /// check waited (a restart's or `pg_terminate_backend`'s termination
    /// can reach the check before the driver sees the connection close):
    /// the key was held until about then.
    Ended(String),
}

/// Whether `e`, a check's error, came from the server ending the
/// connection (an error it sent, or the connection closed), rather than
/// from a silence.
pub(super) fn ended_by_server(e: &tokio_postgres::Error) -> bool {
    e.code().is_some() || e.is_closed()
}

impl Hold {
    fn inner(&self) -> &Arc<Inner> {
        self.held.inner()
    }

    fn record(&self) -> TaskRecord {
        self.record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// One round trip on the lock's connection, answered within
    /// [`HOLD_ANSWER`], reading its server process.
    async fn check(&self) -> Check {
        let Some(conn) = self.held.open() else {
            return Check::Lost("the server ended the connection".into());
        };
        let look = format!("SELECT pg_backend_pid(), {}", self.inner().now_ms_sql());
        match tokio::time::timeout(HOLD_ANSWER, sql::run(&conn.client, &look)).await {
            Ok(Ok(rows)) => {
                if let Some(r) = rows.first().and_then(|r| r.first()) {
                    self.backend_pid.store(int(r, 0), Ordering::Relaxed);
                    self.held_at_ms.store(int(r, 1), Ordering::Relaxed);
                }
                Check::Held
            }
            Ok(Err(e)) if ended_by_server(&e) => Check::Ended(e.to_string()),
            Ok(Err(e)) => Check::Lost(e.to_string()),
            Err(_) => Check::Lost(format!(
                "no answer to a check within {}",
                humantime::format_duration(HOLD_ANSWER)
            )),
        }
    }

    /// Enters again on a new connection, as a start would: the task's own
    /// key (its former connection ended first, if the server still keeps
    /// it), its instance key, then under the shared gate the admission and
    /// the row, as it was. `ended`: when the driver saw the server end the
    /// former connection (so the key was held until about then); `None`
    /// for a check unanswered (held for sure only at the last good check).
    /// `Ok(false)`: the key is not free yet.
    async fn reenter(&self, ended: Option<tokio::time::Instant>) -> Result<bool> {
        let took = self
            .held
            .retake(async |conn| {
                let inner = self.inner();
                let mut got = self
                    .held
                    .try_lock(conn)
                    .await
                    .map_err(|e| inner.pg_error(e))?;
                let old = self.backend_pid.load(Ordering::Relaxed);
                if !got && old != 0 {
                    // Its former connection, cut off but not yet ended by
                    // the server: end it (the same role may).
                    sql::run(&conn.client, &format!("SELECT pg_terminate_backend({old})"))
                        .await
                        .map_err(|e| inner.pg_error(e))?;
                    for _ in 0..50 {
                        got = self
                            .held
                            .try_lock(conn)
                            .await
                            .map_err(|e| inner.pg_error(e))?;
                        if got {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                if !got {
                    return Ok(false);
                }
                let a = &self.admission;
                let request = TaskRequest {
                    lock_timeout: Duration::ZERO,
                    ..a.request.clone()
                };
                let record = self.record();
                let joined_own_name = a.standing.as_ref().is_some_and(|s| s.name == request.name);
                if !joined_own_name {
                    inner.lock_instance(conn, &request).await?;
                }
                let (now, view) = inner.look_under_shared_gate(conn).await?;
                // Until when the key was held, on the server's clock: the
                // last good check, or the end the driver saw (within
                // `WATCH` of it), counted back from the server's time now.
                let held_until = ended.map_or(0, |at| {
                    ms_of(now) - (at.elapsed() + WATCH).as_millis() as i64
                });
                let held_until = held_until.max(self.held_at_ms.load(Ordering::Relaxed));
                let admitted = if record.in_window {
                    // Inside an `offline run` window: never stopped for a
                    // lost lock.
                    Ok(())
                } else if view.mode.is_draining()
                    && view.lapsed.is_none()
                    && ms_of(view.record.since) <= held_until
                    && ms_of(view.record.since) < inner.server_started_ms(conn).await?
                {
                    // A restart under a drain that began while this task
                    // held its key: the drain counted it and waits for it
                    // still (its waiter's last look is under the exclusive
                    // gate), and a restart must not stop every job, so the
                    // task takes back its place. A drain begun since it
                    // lost the key refuses it, and so does one under which
                    // its connection alone was ended (`pg_terminate_backend`).
                    Ok(())
                } else if let Some(standing) = &a.standing {
                    let window_open = super::window::is_running(inner).await?;
                    if standing.in_window && !window_open {
                        admit(&request, &view)
                    } else {
                        admit_joined(&request, standing, &view, window_open)
                    }
                } else {
                    admit(&request, &view)
                };
                if let Err(refusal) = admitted {
                    let _ =
                        sql::run(&conn.client, "ROLLBACK; SELECT pg_advisory_unlock_all()").await;
                    return Err(Error::Refused(refusal));
                }
                let row = inner.row_sql(self.held.key(), &record, a.secret_sha256.as_deref())?;
                sql::run(&conn.client, &format!("{row}; COMMIT"))
                    .await
                    .map_err(|e| inner.pg_error(e))?;
                Ok(true)
            })
            .await?;
        if took.is_some() {
            self.reentered.store(true, Ordering::Relaxed);
        }
        Ok(took.is_some())
    }

    fn lost(&self, why: HoldLost) {
        let told = self
            .on_lost
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(tell) = told {
            tell(why);
        }
    }
}

/// Keeps a live task's hold: checks its lock's connection every
/// [`HOLD_BEAT`] (and whether the server ended it every [`WATCH`]); when
/// it is lost, enters again through the gate. A task not back within
/// [`REENTER`] ([`REENTER_ENDED`] when the connection was seen to end), or
/// refused by the gate, is told to stop (once), and keeps
/// trying to enter again while it stops, unless refused. A task inside an
/// `offline run` window is never told. Runs until aborted (the lease drops).
async fn watch(hold: Arc<Hold>) {
    let mut next_beat = tokio::time::Instant::now() + HOLD_BEAT;
    let in_window = hold.record().in_window;
    loop {
        tokio::time::sleep(WATCH).await;
        let (why, ended) = if hold.held.open().is_none() {
            ("the server ended the connection".to_owned(), true)
        } else if tokio::time::Instant::now() < next_beat {
            continue;
        } else {
            next_beat = tokio::time::Instant::now() + HOLD_BEAT;
            match hold.check().await {
                Check::Held => continue,
                Check::Lost(why) => (why, hold.held.open().is_none()),
                Check::Ended(why) => (why, true),
            }
        };
        let reenter = if ended { REENTER_ENDED } else { REENTER };
        // Dropped on the runtime: its driver's goodbye, if it can still be
        // sent, frees the key on the server at once.
        drop(hold.held.forget());
        let seen = tokio::time::Instant::now();
        let ended_at = ended.then_some(seen);
        let mut told = false;
        loop {
            let left = (seen + reenter).saturating_duration_since(tokio::time::Instant::now());
            let attempt = if told || in_window || left.is_zero() {
                tokio::time::timeout(HOLD_DETECT, hold.reenter(ended_at)).await
            } else {
                tokio::time::timeout(left, hold.reenter(ended_at)).await
            };
            match attempt {
                Ok(Ok(true)) => break,
                Ok(Err(Error::Refused(refusal))) => {
                    hold.lost(HoldLost::Refused(refusal));
                    return;
                }
                Ok(Ok(false)) | Ok(Err(_)) | Err(_) => {}
            }
            if !told && !in_window && tokio::time::Instant::now() >= seen + reenter {
                told = true;
                hold.lost(HoldLost::Unreachable(why.clone()));
            }
            tokio::time::sleep(RETRY).await;
        }
        next_beat = tokio::time::Instant::now() + HOLD_BEAT;
    }
}

/// How often the watcher looks whether the driver saw the lock's connection
/// end (a look in memory).
const WATCH: Duration = Duration::from_millis(50);
/// How long the watcher waits between attempts to enter again.
const RETRY: Duration = Duration::from_millis(100);

/// A live task's hold: its connection (holding its key, and its instance
/// key) and its record, kept by a watcher on the backend's runtime
/// ([`watch`]).
#[derive(Debug)]
pub(super) struct PgTaskLease {
    record: TaskRecord,
    hold: Arc<Hold>,
    /// The first connection, whose socket a child may inherit.
    first: Option<Arc<Conn>>,
    handed_to_child: bool,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

impl PgTaskLease {
    /// The lease of a task started (or joined) on `conn`, holding `key`.
    fn new(
        inner: &Arc<Inner>,
        conn: Conn,
        key: i32,
        record: TaskRecord,
        admission: Admission,
    ) -> Result<Self> {
        let held = HeldKey::new(Arc::clone(inner), key, conn);
        let first = held.open();
        let hold = Arc::new(Hold {
            held,
            record: Mutex::new(record.clone()),
            admission,
            backend_pid: AtomicI64::new(0),
            held_at_ms: AtomicI64::new(ms_of(record.started_at)),
            reentered: AtomicBool::new(false),
            on_lost: Mutex::new(None),
        });
        let watched = Arc::clone(&hold);
        let watcher = runtime::block_on(async move { Ok(tokio::spawn(watch(watched))) })?;
        Ok(PgTaskLease {
            record,
            hold,
            first,
            handed_to_child: false,
            watcher: Some(watcher),
        })
    }
}

impl TaskLease for PgTaskLease {
    fn record(&self) -> &TaskRecord {
        &self.record
    }

    fn inheritable_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.first
            .as_ref()
            .and_then(|c| c.socket.fd())
            // SAFETY: the descriptor belongs to the socket `self.first`
            // holds, which stays attached (open) until this lease drops:
            // only `Drop` detaches it, and it outlives no borrow of self.
            .map(|fd| vec![unsafe { BorrowedFd::borrow_raw(fd) }])
            .unwrap_or_default()
    }

    fn mark_handed_to_child(&mut self) {
        self.handed_to_child = true;
    }

    fn take_back_from_child(&mut self) {
        // The server frees a lock only once every copy of the socket is
        // closed and it has read the end: the keeper's copy closes a
        // moment later. The row's delete and the unlock, sent on the
        // connection itself, end the task before the drop returns.
        self.handed_to_child = false;
    }

    fn set_processes(&mut self, processes: &Processes) -> Result<()> {
        self.record.processes = Some(*processes);
        self.hold
            .record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .processes = Some(*processes);
        let json =
            serde_json::to_string(&self.record).map_err(|e| Error::Invalid(e.to_string()))?;
        let hold = Arc::clone(&self.hold);
        runtime::block_on(async move {
            let inner = hold.inner();
            let sql = format!(
                "UPDATE {}.tasks SET record = {} WHERE site = {} AND key = {}",
                inner.s(),
                sql::lit(&json),
                inner.site_lit(),
                hold.held.key()
            );
            hold.held.run_here_or_pooled(&sql).await.map(drop)
        })
    }

    fn on_hold_lost(&mut self, lost: Box<dyn FnOnce(HoldLost) + Send>) {
        *self.hold.on_lost.lock().unwrap_or_else(|e| e.into_inner()) = Some(lost);
    }
}

impl Drop for PgTaskLease {
    fn drop(&mut self) {
        let (hold, watcher, first) = (
            Arc::clone(&self.hold),
            self.watcher.take(),
            self.first.take(),
        );
        let handed = self.handed_to_child;
        let _ = runtime::block_on(async move {
            if let Some(w) = watcher {
                w.abort();
                let _ = w.await;
            }
            if handed {
                // A child holds the first socket: close only this
                // process's descriptor, saying nothing (I3).
                if let Some(first) = &first {
                    first.socket.detach();
                }
                // Taken again on a connection of this process alone, the
                // task ends with this process.
                if !hold.reentered.load(Ordering::Relaxed) {
                    drop(hold.held.forget());
                    return Ok(());
                }
            }
            drop(first);
            // The row goes and the keys are freed before this returns, so
            // the next reader sees the task gone (a closing connection
            // frees its locks only a moment later).
            let inner = hold.inner();
            let delete = format!(
                "DELETE FROM {}.tasks WHERE site = {} AND key = {}",
                inner.s(),
                inner.site_lit(),
                hold.held.key()
            );
            release_own(&hold.held, &delete).await;
            Ok(())
        });
    }
}

/// [`HeldKey::release`] for a task: `last` and the unlock on the held
/// connection, and nothing on another (a task's leftover row is reaped).
async fn release_own(held: &HeldKey, last: &str) {
    if let Some(c) = held.forget()
        && !c.client.is_closed()
    {
        let _ = sql::run(
            &c.client,
            &format!("{last}; SELECT pg_advisory_unlock_all()"),
        )
        .await;
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
    let (request_kept, secret_kept) = (request.clone(), secret_sha256.to_owned());
    let (inner2, request, secret) = (Arc::clone(inner), request.clone(), secret_sha256.to_owned());
    let (conn, key, record) = runtime::block_on(async move {
        let inner = inner2;
        // The schema's check rides in the start's first message.
        let conn = inner
            .target
            .connect()
            .await
            .map_err(|e| refused_if_full(e, &request))?;
        let mut keyed = None;
        if request.policy.instances == Instances::Concurrent {
            match inner.start_at_once(&conn, &request, &secret).await? {
                AtOnce::Started(key, record) => return Ok((conn, key, *record)),
                AtOnce::Keyed(key) => keyed = Some(key),
                AtOnce::NoKey => {}
                AtOnce::NoSchema => inner.ensure_schema(&conn).await?,
            }
        } else if inner.schema_ready.get().is_none() {
            inner.ensure_schema(&conn).await?;
        }
        inner.lock_instance(&conn, &request).await?;
        let (key, now, view) = match keyed {
            Some(key) => {
                let (now, view) = inner.look_under_shared_gate(&conn).await?;
                (key, now, view)
            }
            None => inner.key_and_look(&conn).await?,
        };
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
    Ok(Box::new(PgTaskLease::new(
        inner,
        conn,
        key,
        record,
        Admission {
            request: request_kept,
            secret_sha256: Some(secret_kept),
            standing: None,
        },
    )?))
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
    let (conn, key, record, kept) = runtime::block_on(async move {
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
        Ok((conn, key, record, (request, secret_sha256, standing)))
    })?;
    let (request, secret_sha256, standing) = kept;
    Ok(Box::new(PgTaskLease::new(
        inner,
        conn,
        key,
        record,
        Admission {
            request,
            secret_sha256,
            standing: Some(standing),
        },
    )?))
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
                "{}; DELETE FROM {}.waiters WHERE site = {} AND NOT {} \
                 AND pg_try_advisory_xact_lock_shared({}, key) RETURNING 1",
                inner.reap_sql(),
                inner.s(),
                inner.site_lit(),
                inner.waiter_may_return_sql(""),
                inner.class
            ))
            .await?;
        Ok(rows.iter().map(Vec::len).sum())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::time::{Duration, SystemTime};

    use super::super::{PostgresBackend, runtime::trips};
    use crate::backend::{Backend, ModeChange, PendingStart};
    use crate::clock::{Clock, ManualClock, SystemClock};
    use crate::conformance::{postgres_available, postgres_test_config};
    use crate::error::{Error, Refusal};
    use crate::mode::Mode;
    use crate::policy::{Instances, Maintenance, Policy};
    use crate::records::TaskRequest;

    fn request(maintenance: Maintenance) -> TaskRequest {
        TaskRequest {
            name: "job".into(),
            argv: vec!["job".into(), "it's".into()],
            policy: Policy::DEFAULT
                .instances(Instances::Concurrent)
                .maintenance(maintenance),
            ignore_maintenance: false,
            in_window: false,
            lock_timeout: Duration::ZERO,
        }
    }

    /// A start of a concurrent command, schema check and all, is one
    /// message after the connection's startup, and its end one more; the
    /// record the server filled in reads back as the lease holds it.
    #[test]
    fn a_tracked_start_is_one_round_trip_and_its_end_one() {
        if !postgres_available() {
            return;
        }
        let config = postgres_test_config("manage_test");
        let reader = PostgresBackend::open(&config, SystemClock::shared()).unwrap();
        reader.mode().unwrap();
        // A new process's backend: the schema not checked yet.
        let b = PostgresBackend::open(&config, SystemClock::shared()).unwrap();
        let before = SystemTime::now();
        let (lease, trips) = trips::count(|| b.start_task(&request(Maintenance::Refused), "ab12"));
        let lease = lease.unwrap();
        assert_eq!(trips, 1, "the start's round trips");
        let record = lease.record().clone();
        assert_eq!(record.started_in, Mode::Online);
        assert_eq!(record.task_id(), record.id);
        let (key, tail) = record.id.split_once('-').unwrap();
        assert!(
            key.parse::<i32>().unwrap() >= super::keys::FIRST_LOCK_KEY,
            "{}",
            record.id
        );
        assert_eq!(tail.len(), 12, "{}", record.id);
        let age = record.started_at.system_time().duration_since(before);
        assert!(
            age.is_ok_and(|d| d < Duration::from_secs(60))
                || before
                    .duration_since(record.started_at.system_time())
                    .is_ok_and(|d| d < Duration::from_millis(5)),
            "started at {} (asked at {before:?})",
            record.started_at
        );
        assert_eq!(reader.tasks().unwrap(), std::slice::from_ref(&record));
        let ((), trips) = trips::count(|| drop(lease));
        assert_eq!(trips, 1, "the end's round trips");
        assert!(reader.tasks().unwrap().is_empty());
    }

    /// The one-message start takes the stored mode as it is when that
    /// mode admits the command (OFFLINE for a command that needs
    /// maintenance, READONLY for one allowed in it); every other case goes
    /// the long way and is judged as before: refused in OFFLINE, started
    /// ONLINE in a PENDING whose waiter is gone.
    #[test]
    fn a_start_in_one_message_takes_only_a_mode_that_admits_it() {
        if !postgres_available() {
            return;
        }
        let config = postgres_test_config("manage_test");
        let b = PostgresBackend::open(&config, SystemClock::shared()).unwrap();
        let me = ModeChange::by_this_process();
        b.force_offline(&me).unwrap();
        let (lease, trips) = trips::count(|| b.start_task(&request(Maintenance::Required), "s"));
        assert_eq!(lease.unwrap().record().started_in, Mode::Offline);
        assert_eq!(trips, 1);
        let (refused, trips) = trips::count(|| b.start_task(&request(Maintenance::Refused), "s"));
        assert!(
            matches!(refused, Err(Error::Refused(Refusal::Maintenance { .. }))),
            "{refused:?}"
        );
        assert!(trips > 1, "judged the long way");
        b.go_online(&me).unwrap();
        b.go_read_only(&me).unwrap();
        assert_eq!(b.mode().unwrap().mode, Mode::ReadOnly);
        // READONLY is stored as OFFLINE with its tier: never taken for
        // OFFLINE, which would admit a command that needs maintenance.
        let refused = b.start_task(&request(Maintenance::Required), "s");
        assert!(
            matches!(
                refused,
                Err(Error::Refused(Refusal::MaintenanceRequired { .. }))
            ),
            "{refused:?}"
        );
        let lease = b.start_task(&request(Maintenance::Allowed), "s").unwrap();
        assert_eq!(lease.record().started_in, Mode::ReadOnly);
        drop(lease);
        b.go_online(&me).unwrap();
        let PendingStart::Waiting { waiter, .. } = b.begin_pending(&me).unwrap() else {
            panic!("pending");
        };
        drop(waiter);
        let lease = b.start_task(&request(Maintenance::Refused), "s").unwrap();
        assert_eq!(
            lease.record().started_in,
            Mode::Online,
            "the PENDING lapsed"
        );
    }

    /// The server's time, moved by the backend clock's offset, as the long
    /// way takes it.
    #[test]
    fn a_start_in_one_message_is_timed_by_the_backends_clock() {
        if !postgres_available() {
            return;
        }
        let config = postgres_test_config("manage_test");
        let clock = ManualClock::starting_now();
        clock.advance(Duration::from_secs(7200));
        let b = PostgresBackend::open(&config, clock.clone()).unwrap();
        let asked = clock.now();
        let lease = b.start_task(&request(Maintenance::Refused), "s").unwrap();
        let at = lease.record().started_at.system_time();
        assert!(
            at.duration_since(asked)
                .is_ok_and(|d| d < Duration::from_secs(60))
                || asked
                    .duration_since(at)
                    .is_ok_and(|d| d < Duration::from_millis(5)),
            "started at {at:?}, the clock said {asked:?}"
        );
    }
}
