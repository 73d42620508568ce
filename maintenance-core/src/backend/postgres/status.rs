//! `offline status` in one round trip ([`Backend::status_look`]): one
//! message reads the mode (and its generation again, for a drain whose
//! waiter just left), the live tasks, the sessions' summary, the writes in
//! flight, the window, the live schedule, and whether a run killed
//! mid-command or a dead schedule waits to be recorded — with the schema's
//! check in front when this is the process's first message. Only a lapsed
//! drain costs a look more (is its lapse recorded?); only something
//! unrecorded costs the exclusive gate, taken by
//! [`record_unrecorded`](crate::Backend::record_unrecorded) afterwards.
//!
//! Each statement of the message reads its own snapshot, as the calls one
//! by one would. The message removes the rows of dead tasks, waiters and
//! web layers first, as `reap` does (and as the gate taken every time used
//! to): a row whose key nobody holds is dead, so no gate is needed.
//!
//! [`Backend::status_look`]: crate::Backend::status_look

use std::sync::Arc;

use super::connect::Conn;
use super::sql::{self, boolean, int, text};
use super::{Inner, readonly, runtime, schema, sessions};
use crate::backend::StatusLook;
use crate::error::Result;

/// [`Backend::status_look`](crate::Backend::status_look).
pub(super) fn status_look(inner: &Arc<Inner>) -> Result<Option<StatusLook>> {
    let inner = Arc::clone(inner);
    runtime::block_on(async move {
        let mut tries = 0;
        loop {
            let conn = inner.any_conn().await?;
            match inner.look(&conn).await {
                Ok(Some(look)) => {
                    inner.give(conn);
                    return Ok(Some(look));
                }
                // A drain's waiter left as it was read: look again.
                Ok(None) => inner.give(conn),
                Err(Looked::Closed) if tries == 0 => tries += 1,
                Err(Looked::Closed) => {
                    return Err(inner.target.error(
                        "the connection to the server was lost: check that the server runs and \
                         is reachable",
                    ));
                }
                Err(Looked::NoSchema) => {
                    inner.ensure_schema(&conn).await?;
                    inner.give(conn);
                }
                Err(Looked::Failed(e)) => return Err(e),
            }
        }
    })
}

/// Why a look gave no status.
enum Looked {
    /// The pooled connection was found closed.
    Closed,
    /// The schema is absent: the first use creates it.
    NoSchema,
    /// Any other error.
    Failed(crate::Error),
}

impl Inner {
    /// A pooled connection, or a new one whose schema is checked by the
    /// first message sent on it ([`schema_check`](Self::schema_check)).
    async fn any_conn(&self) -> Result<Conn> {
        loop {
            let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match pooled {
                Some(c) if !c.client.is_closed() => return Ok(c),
                Some(_) => continue,
                None => return self.target.connect().await,
            }
        }
    }

    /// The look, in one message on `conn`; `None` when a drain's record
    /// moved between its read and its waiters' (read again).
    async fn look(&self, conn: &Conn) -> std::result::Result<Option<StatusLook>, Looked> {
        let (s, site) = (self.s(), self.site_lit());
        let check = self.schema_check();
        let (summary, summary_time) = self.summary_statement();
        // The dead rows go first, as a writer's look and `reap` remove
        // them (a row whose key nobody holds is dead, gate or no gate) —
        // on a schema this binary can read. One statement for the three
        // tables (two of its deletes in WITH): on a new server backend each
        // statement is parsed, planned and run from cold caches, and one
        // costs less than three (README, "PostgreSQL's start-up").
        let readable = schema::readable_sql(&self.schema, schema::MIGRATIONS);
        let delete = |table: &str| {
            format!(
                "DELETE FROM {s}.{table} WHERE site = {site} AND {readable} \
                 AND pg_try_advisory_xact_lock_shared({c}, key)",
                c = self.class
            )
        };
        // A task's or a waiter's row that may still take its key back
        // after a restart stays: a drain waits for the task, and the
        // waiter's drain holds meanwhile (`modes.rs`).
        let clean = format!(
            "WITH dead_tasks AS ({} AND NOT {}), dead_waiters AS ({} AND NOT {}) {}; ",
            delete("tasks"),
            self.may_reenter_sql(""),
            delete("waiters"),
            self.waiter_may_return_sql(""),
            delete("writes")
        );
        let message = format!(
            "{check}{clean}{view}; SELECT generation FROM {s}.modes WHERE site = {site}; {tasks}; \
             {summary}; {writes}; {window}; {schedule}; \
             SELECT EXISTS (SELECT 1 FROM {s}.window_runs WHERE site = {site} AND {abandoned} \
                            AND NOT noticed AND (NOT current OR {free})) \
                 OR EXISTS (SELECT 1 FROM {s}.schedules t WHERE t.site = {site} \
                            AND t.ended IS NULL AND {dead})",
            check = check.as_deref().map_or(String::new(), |c| format!("{c}; ")),
            view = self.view_sql(),
            tasks = self.live_sql("true"),
            writes = self.writes_sql(),
            window = self.window_sql(),
            schedule = self.live_schedule_sql(),
            free = self.window_free_sql(),
            abandoned = self.abandoned_sql(),
            dead = self.schedule_dead_sql("t"),
        );
        let rows = match sql::run(&conn.client, &message).await {
            Ok(rows) => rows,
            Err(e) if e.is_closed() => return Err(Looked::Closed),
            Err(e) if schema::is_missing(&e) => return Err(Looked::NoSchema),
            Err(e) => return Err(Looked::Failed(self.pg_error(e))),
        };
        let empty = Vec::new();
        let mut rows = rows.iter();
        let mut next = || rows.next().unwrap_or(&empty);
        if check.is_some() {
            self.judge_schema(schema::state_of(next(), schema::MIGRATIONS))
                .map_err(Looked::Failed)?;
        }
        let (view_rows, generation) = (next(), next());
        let view = self.view_of_rows(view_rows).map_err(Looked::Failed)?;
        // As a reader's look (`read_view`): a draining record whose waiters
        // are gone has lapsed, unless its last waiter wrote a new record
        // as it left.
        if view.lapsed.is_some()
            && generation.first().map_or(0, |r| int(r, 0) as u64) != view.record.generation
        {
            return Ok(None);
        }
        let tasks = self.live_of(next());
        let sessions = sessions::summary_of(next(), &summary_time);
        let writes = readonly::writes_of(next());
        let window = Inner::window_of(std::slice::from_ref(next()));
        let schedule = next()
            .first()
            .and_then(|r| serde_json::from_str(text(r, 0)).ok());
        let dead_unrecorded = next().first().is_some_and(|r| boolean(r, 0));
        let to_record = dead_unrecorded
            || self
                .lapse_unrecorded(conn, &view)
                .await
                .map_err(Looked::Failed)?;
        Ok(Some(StatusLook {
            view,
            tasks,
            sessions,
            writes,
            window,
            schedule,
            to_record,
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::time::Duration;

    use super::super::{PostgresBackend, runtime::trips};
    use crate::backend::{Backend, ModeChange, PendingStart, WindowState};
    use crate::clock::SystemClock;
    use crate::conformance::{postgres_available, postgres_test_config};
    use crate::mode::Mode;
    use crate::policy::{Instances, Policy};
    use crate::records::TaskRequest;
    use crate::session::SessionKey;

    /// The status of a new process's backend, schema check and all, is one
    /// message, and it reads what the calls one by one read.
    #[test]
    fn status_is_one_round_trip_and_reads_what_the_calls_one_by_one_read() {
        if !postgres_available() {
            return;
        }
        let config = postgres_test_config("manage_test");
        let b = PostgresBackend::open(&config, SystemClock::shared()).unwrap();
        let task = b
            .start_task(
                &TaskRequest {
                    name: "job".into(),
                    argv: vec!["job".into()],
                    policy: Policy::DEFAULT.instances(Instances::Concurrent),
                    ignore_maintenance: false,
                    in_window: false,
                    lock_timeout: Duration::ZERO,
                },
                "s",
            )
            .unwrap();
        b.touch_sessions(&[SessionKey::of(b"one"), SessionKey::of(b"two")])
            .unwrap();
        let writes = b.begin_writes().unwrap();
        let fresh = PostgresBackend::open(&config, SystemClock::shared()).unwrap();
        let (look, trips) = trips::count(|| fresh.status_look());
        let look = look.unwrap().expect("one look");
        assert_eq!(trips, 1, "the status's round trips");
        assert_eq!(look.view.mode, Mode::Online);
        assert_eq!(look.view.record, b.mode().unwrap().record);
        assert_eq!(look.tasks, b.tasks().unwrap());
        assert_eq!(look.tasks, std::slice::from_ref(task.record()));
        assert_eq!(look.sessions.count, 2);
        assert_eq!(look.sessions, b.session_summary().unwrap());
        assert_eq!(look.writes, b.writes_in_flight().unwrap());
        assert_eq!(look.writes.len(), 1);
        assert!(matches!(look.window, WindowState::Free));
        assert_eq!(look.schedule, None);
        assert!(!look.to_record, "nothing waits to be recorded");
        drop(writes);
    }

    /// A drain whose waiter died is seen as unrecorded until someone
    /// records it, and after that costs no gate: the look, and one look at
    /// the history.
    #[test]
    fn status_asks_to_record_a_lapse_only_until_it_is_recorded() {
        if !postgres_available() {
            return;
        }
        let config = postgres_test_config("manage_test");
        let b = PostgresBackend::open(&config, SystemClock::shared()).unwrap();
        let PendingStart::Waiting { waiter, .. } =
            b.begin_pending(&ModeChange::by_this_process()).unwrap()
        else {
            panic!("pending");
        };
        drop(waiter);
        let look = b.status_look().unwrap().unwrap();
        assert_eq!(look.view.mode, Mode::Online);
        assert!(look.view.lapsed.is_some());
        assert!(look.to_record, "the lapse waits to be recorded");
        let recorded = b.record_unrecorded().unwrap();
        assert_eq!(recorded.len(), 2, "{recorded:#?}");
        let (look, trips) = trips::count(|| b.status_look());
        let look = look.unwrap().unwrap();
        assert!(look.view.lapsed.is_some());
        assert!(!look.to_record, "recorded once, not asked again");
        assert_eq!(trips, 2);
    }

    /// A task whose process died leaves a row whose key nobody holds; the
    /// status's look counts it out and removes it, with no gate. (The row
    /// is a live task's, copied under a key no connection holds: a live
    /// lease whose connection the server ends enters again within a beat,
    /// so ending its connection would race its return.)
    #[test]
    fn status_removes_the_rows_of_dead_tasks() {
        let Some((_, b)) = super::super::window::testing::site() else {
            return;
        };
        let lease = b
            .start_task(
                &TaskRequest {
                    name: "job".into(),
                    argv: vec!["job".into()],
                    policy: Policy::DEFAULT.instances(Instances::Concurrent),
                    ignore_maintenance: false,
                    in_window: false,
                    lock_timeout: Duration::ZERO,
                },
                "s",
            )
            .unwrap();
        let sql = |q: String| {
            let inner = std::sync::Arc::clone(&b.inner);
            super::super::runtime::block_on(async move {
                let rows = inner.exec(&q).await?;
                Ok(rows
                    .first()
                    .and_then(|r| r.first())
                    .map_or(0, |v| super::super::sql::int(v, 0)))
            })
            .unwrap()
        };
        let (s, site) = (b.inner.s(), b.inner.site_lit());
        let count = || {
            sql(format!(
                "SELECT count(*) FROM {s}.tasks WHERE site = {site}"
            ))
        };
        sql(format!(
            "INSERT INTO {s}.tasks (site, key, id, task_id, name, started_ms, record, secret_sha256) \
             SELECT site, key + 1000000, id || '-dead', task_id || '-dead', name, started_ms, \
                    record, secret_sha256 \
             FROM {s}.tasks WHERE site = {site}"
        ));
        drop(lease);
        assert_eq!(count(), 1, "the dead task's row");
        let (look, trips) = trips::count(|| b.status_look());
        assert!(look.unwrap().unwrap().tasks.is_empty());
        assert_eq!(trips, 1);
        assert_eq!(count(), 0, "removed by the look");
    }
}
