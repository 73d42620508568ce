//! The `offline run` window on PostgreSQL: who holds it, and which run
//! died holding it.
//!
//! - **The hold** is the site's reserved key [`WINDOW`](super::keys::WINDOW),
//!   taken exclusively, as a session lock, on a connection of the run's own
//!   for as long as it lives; readers probe it shared, so a probe never
//!   makes a dead holder look live. One run at a time: a second is refused
//!   naming the first.
//! - **The record** is one row per run in `window_runs`; the holder's row is
//!   the site's `current` one (a partial unique index keeps it to one).
//!   Dropping the lease deletes its row, then frees the key. A run killed
//!   by any signal leaves its row: `current` and `running` with nobody
//!   holding the key is the run that left the site OFFLINE
//!   ([`WindowState::Abandoned`]); one killed while it waited left nothing
//!   half-done (free).
//! - **Leftovers.** The next run to take the window deletes a waiting run's
//!   row and keeps an abandoned one, no longer current, until the history
//!   has recorded it ([`unrecorded_abandoned`]); going ONLINE does the same
//!   ([`clear_abandoned_sql`]), so the window reads free after `offline
//!   off`, as on files.
//! - **Connections restarted under a run** (a migration of the app's own
//!   database that restarts every connection, a server restart): a watcher
//!   on the backend's runtime sees the lease's connection end within
//!   [`WATCH`], connects again (retrying every [`RETRY`] while the server
//!   is away) and takes the key again, putting its row back as current,
//!   until the lease drops. In between, readers see the window
//!   [`Abandoned`](WindowState::Abandoned) (the mode row is durable: the
//!   site stays OFFLINE), and another `offline run` could take the window;
//!   then the watcher keeps trying, and takes it back once that run ends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::connect::Conn;
use super::held_key::HeldKey;
use super::sql::{self, Rows, boolean, text};
use super::{Inner, keys, runtime};
use crate::backend::{WindowLease, WindowRun, WindowState};
use crate::clock::Timestamp;
use crate::error::{Error, Refusal, Result};

/// How often the watcher looks at the lease's connection (a look in
/// memory: whether the driver saw it end).
const WATCH: Duration = Duration::from_millis(50);
/// How long the watcher waits between attempts to take the window again.
const RETRY: Duration = Duration::from_millis(200);
/// How long a run that finds its window not held at its command's end
/// tries to take it back before it says it lost it.
const TAKE_BACK: Duration = Duration::from_secs(5);
/// How long a run waits for the window before it is refused: enough for a
/// reader's probe to pass, never for another run to end.
const TAKE_WAIT: Duration = Duration::from_millis(100);

/// This area's tables in schema version 1 (`schema.rs`), given the quoted
/// schema name.
pub(super) fn tables(s: &str) -> String {
    format!(
        "CREATE TABLE {s}.window_runs (
             site text NOT NULL,
             id text NOT NULL,
             run text NOT NULL,
             running boolean NOT NULL,
             current boolean NOT NULL,
             noticed boolean NOT NULL DEFAULT false,
             PRIMARY KEY (site, id)
         );
         CREATE UNIQUE INDEX window_runs_current ON {s}.window_runs (site) WHERE current;"
    )
}

impl Inner {
    /// `pg_try_advisory_xact_lock_shared` of the window's key: true when
    /// nobody holds the window.
    pub(super) fn window_free_sql(&self) -> String {
        format!(
            "pg_try_advisory_xact_lock_shared({}, {})",
            self.class,
            keys::WINDOW
        )
    }

    /// The statement reading the current run, whether its holder lives,
    /// and whether the run left the site in its window
    /// ([`abandoned_sql`](Self::abandoned_sql)).
    pub(super) fn window_sql(&self) -> String {
        format!(
            "SELECT run, NOT {free}, {abandoned} FROM {s}.window_runs WHERE site = {site} AND current",
            free = self.window_free_sql(),
            abandoned = self.abandoned_sql(),
            s = self.s(),
            site = self.site_lit()
        )
    }

    /// Whether the `window_runs` row in scope, once its holder is gone,
    /// left the site in its window, as [`WindowRun::abandoned_in`] says:
    /// its command ran, or the site's record is its window's mode
    /// (OFFLINE, or READONLY for a read-only run) written by its process.
    ///
    /// Only this site's rows are read as JSON, whatever plan the server
    /// picks: the `CASE`s are evaluated in order, so a damaged row of
    /// another site (not JSON, say) never fails this site's reads, as it
    /// did when the server hashed every site's mode row to join them. An
    /// escaped NUL (`\u0000`, which JSON allows and PostgreSQL will not
    /// turn into text) reads as U+FFFD, the same on both sides.
    pub(super) fn abandoned_sql(&self) -> String {
        let json = |column: &str| format!("replace({column}, '\\u0000', '\\ufffd')::json");
        let (m, run) = (json("m.record"), json("window_runs.run"));
        format!(
            "(window_runs.running OR CASE WHEN window_runs.site = {site} THEN EXISTS (\
             SELECT 1 FROM {s}.modes m WHERE m.site = {site} AND CASE WHEN m.site = {site} THEN \
             {m}->>'pid' = {run}->>'pid' AND {m}->>'by' = {run}->>'by' \
             AND COALESCE({m}->>'tier', {m}->>'mode') = \
                 CASE WHEN {run}->>'read_only' = 'true' THEN 'READONLY' ELSE 'OFFLINE' END \
             ELSE false END) ELSE false END)",
            s = self.s(),
            site = self.site_lit()
        )
    }

    /// The statements a holder of the window's key runs to make run `id`
    /// (recorded as `run`) the current one: a run killed while it waited
    /// leaves nothing, one killed mid-command is kept for the history, and
    /// what the history recorded goes.
    fn take_window_sql(&self, id: &str, run: &WindowRun) -> Result<String> {
        let json = serde_json::to_string(run).map_err(|e| Error::Invalid(e.to_string()))?;
        let (s, site, id) = (self.s(), self.site_lit(), sql::lit(id));
        Ok(format!(
            "UPDATE {s}.window_runs SET running = true WHERE site = {site} AND current AND {abandoned} \
                 AND id <> {id}; \
             DELETE FROM {s}.window_runs WHERE site = {site} AND current AND NOT running AND id <> {id}; \
             UPDATE {s}.window_runs SET current = false WHERE site = {site} AND current AND id <> {id}; \
             DELETE FROM {s}.window_runs WHERE site = {site} AND NOT current AND noticed; \
             INSERT INTO {s}.window_runs (site, id, run, running, current) \
             VALUES ({site}, {id}, {json}, {running}, true) \
             ON CONFLICT (site, id) DO UPDATE SET run = EXCLUDED.run, running = EXCLUDED.running, \
             current = true",
            json = sql::lit(&json),
            running = run.running,
            abandoned = self.abandoned_sql(),
        ))
    }

    /// The window as `rows` of [`window_sql`](Self::window_sql) say.
    pub(super) fn window_of(rows: &[Rows]) -> WindowState {
        let Some(row) = rows.first().and_then(|r| r.first()) else {
            return WindowState::Free;
        };
        // A row this binary cannot read (a newer one's) is no window it can
        // name.
        let Ok(run) = serde_json::from_str::<WindowRun>(text(row, 0)) else {
            return WindowState::Free;
        };
        match (boolean(row, 1), run.running, boolean(row, 2)) {
            (true, true, _) => WindowState::Running(run),
            (true, false, _) => WindowState::Waiting(run),
            (false, _, true) => WindowState::Abandoned(run),
            // A run killed while it waited left nothing half-done.
            (false, _, false) => WindowState::Free,
        }
    }
}

/// The statements going ONLINE runs, under the exclusive gate, so that a
/// run that died holding the window no longer explains the mode: its row
/// stays for the history, no longer current ([`unrecorded_abandoned`]).
/// Nothing changes while a run holds the window.
pub(super) fn clear_abandoned_sql(inner: &Inner) -> String {
    let (s, site, free) = (inner.s(), inner.site_lit(), inner.window_free_sql());
    format!(
        "DELETE FROM {s}.window_runs WHERE site = {site} AND current AND NOT running AND {free}; \
         UPDATE {s}.window_runs SET current = false WHERE site = {site} AND current AND {free}"
    )
}

/// The current run's record read on `conn` (a writer's, holding the
/// exclusive gate), whether its process lives or not, for the history: a
/// lapsed drain begun by an `offline run` is recorded as the run's, also
/// when the run was killed while it waited (which leaves the window
/// free).
pub(super) async fn current_run_on(inner: &Inner, conn: &Conn) -> Result<Option<WindowRun>> {
    let rows = sql::run(&conn.client, &inner.window_sql())
        .await
        .map_err(|e| inner.pg_error(e))?;
    Ok(rows
        .first()
        .and_then(|r| r.first())
        .and_then(|row| serde_json::from_str::<WindowRun>(text(row, 0)).ok()))
}

/// For the history (`history.rs`): the runs that died while their command
/// ran and that nobody has recorded yet, each returned exactly once however
/// many processes ask at once (the row is marked `noticed` in the same
/// statement), on `conn`. A noticed run still current keeps the window
/// [`Abandoned`](WindowState::Abandoned) for status until someone goes
/// ONLINE or the next run takes the window.
pub(super) async fn unrecorded_abandoned(inner: &Inner, conn: &Conn) -> Result<Vec<WindowRun>> {
    let rows = sql::run(
        &conn.client,
        &format!(
            "UPDATE {s}.window_runs SET noticed = true WHERE site = {site} AND {abandoned} \
             AND NOT noticed AND (NOT current OR {free}) RETURNING run",
            s = inner.s(),
            site = inner.site_lit(),
            free = inner.window_free_sql(),
            abandoned = inner.abandoned_sql()
        ),
    )
    .await
    .map_err(|e| inner.pg_error(e))?;
    Ok(sql::json_column(&rows))
}

/// What the lease and its watcher share.
#[derive(Debug)]
struct Hold {
    /// The window's key, on the run's own connection.
    held: HeldKey,
    id: String,
    run: Mutex<WindowRun>,
}

impl Hold {
    fn inner(&self) -> &Arc<Inner> {
        self.held.inner()
    }

    fn run(&self) -> WindowRun {
        self.run.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Takes the window's key on a new connection and makes this run
    /// current again; false while another process holds the key.
    async fn retake(&self) -> Result<bool> {
        let took = self
            .held
            .retake(async |conn| {
                let inner = self.inner();
                if !self
                    .held
                    .try_lock(conn)
                    .await
                    .map_err(|e| inner.pg_error(e))?
                {
                    return Ok(false);
                }
                // The run as it stands when written: should its command
                // start meanwhile (`command_started` writes memory, then
                // the row), the row is written again.
                loop {
                    let run = self.run();
                    sql::run(&conn.client, &inner.take_window_sql(&self.id, &run)?)
                        .await
                        .map_err(|e| inner.pg_error(e))?;
                    if self.run() == run {
                        return Ok(true);
                    }
                }
            })
            .await?;
        Ok(took.is_some())
    }
}

/// Keeps the window held across connections the server ends: see the
/// module docs. Runs until aborted (the lease drops).
async fn watch(hold: Arc<Hold>) {
    loop {
        tokio::time::sleep(WATCH).await;
        if hold.held.open().is_some() {
            continue;
        }
        loop {
            if let Ok(true) = hold.retake().await {
                break;
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// An `offline run`'s hold on the window.
#[derive(Debug)]
struct PgWindowLease {
    hold: Arc<Hold>,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

impl WindowLease for PgWindowLease {
    /// Records the command's start, timed by the server (`at`, this host's
    /// time, is what a server that cannot be read would be).
    fn command_started(&mut self, at: Timestamp) -> Result<()> {
        let hold = Arc::clone(&self.hold);
        runtime::block_on(async move {
            let inner = hold.inner();
            let rows = hold
                .held
                .run_here_or_pooled(&format!("SELECT {}", inner.now_ms_sql()))
                .await?;
            let at = rows
                .first()
                .and_then(|r| r.first())
                .map_or(at, |r| super::timestamp_ms(sql::int(r, 0)));
            // In memory first: a watcher taking the window again from now
            // on writes the run as running.
            let run = {
                let mut run = hold.run.lock().unwrap_or_else(|e| e.into_inner());
                run.running = true;
                run.started_at = at;
                run.clone()
            };
            let json = serde_json::to_string(&run).map_err(|e| Error::Invalid(e.to_string()))?;
            let sql = format!(
                "UPDATE {}.window_runs SET run = {}, running = true WHERE site = {} AND id = {}",
                inner.s(),
                sql::lit(&json),
                inner.site_lit(),
                sql::lit(&hold.id)
            );
            hold.held.run_here_or_pooled(&sql).await.map(drop)
        })
    }

    fn hold_lost(&self) -> Option<String> {
        self.held_now()
    }
}

impl PgWindowLease {
    /// Whether the window is held now; when not, its watcher is given
    /// [`TAKE_BACK`] to take it back (or, with no watcher running, one
    /// attempt is made here), then what happened is said.
    fn held_now(&self) -> Option<String> {
        let deadline = std::time::Instant::now() + TAKE_BACK;
        let watching = self.watcher.as_ref().is_some_and(|w| !w.is_finished());
        loop {
            if self.hold.held.open().is_some() {
                return None;
            }
            if !watching {
                let hold = Arc::clone(&self.hold);
                let took = runtime::block_on(async move {
                    Ok(tokio::time::timeout(TAKE_BACK, hold.retake()).await)
                });
                return match took {
                    Ok(Ok(Ok(true))) => None,
                    Ok(Ok(Ok(false))) => Some("another process holds the window".into()),
                    Ok(Ok(Err(e))) | Err(e) => Some(e.to_string()),
                    Ok(Err(_)) => Some(format!(
                        "the database did not answer within {}",
                        humantime::format_duration(TAKE_BACK)
                    )),
                };
            }
            if std::time::Instant::now() >= deadline {
                return Some(format!(
                    "not taken back within {} (the database unreachable, or another process \
                     holds the window)",
                    humantime::format_duration(TAKE_BACK)
                ));
            }
            std::thread::sleep(WATCH);
        }
    }
}

impl Drop for PgWindowLease {
    fn drop(&mut self) {
        let (hold, watcher) = (Arc::clone(&self.hold), self.watcher.take());
        // The command ended: the row goes, then the key (a closing
        // connection frees its locks only a moment later).
        let _ = runtime::block_on(async move {
            if let Some(w) = watcher {
                w.abort();
                let _ = w.await;
            }
            let inner = hold.inner();
            let delete = format!(
                "DELETE FROM {}.window_runs WHERE site = {} AND id = {}",
                inner.s(),
                inner.site_lit(),
                sql::lit(&hold.id)
            );
            hold.held.release(&delete).await;
            Ok(())
        });
    }
}

/// [`Backend::begin_window_run`](crate::Backend::begin_window_run).
pub(super) fn begin_window_run(
    inner: &Arc<Inner>,
    run: &WindowRun,
) -> Result<Box<dyn WindowLease>> {
    Ok(Box::new(take(inner, run)?))
}

/// Takes the window for `run`, waiting [`TAKE_WAIT`] at most.
fn take(inner: &Arc<Inner>, run: &WindowRun) -> Result<PgWindowLease> {
    let (inner2, asked) = (Arc::clone(inner), run.clone());
    let id = format!("{}-{}", run.pid, crate::random::hex::<6>());
    let id2 = id.clone();
    let (conn, watcher_hold) = runtime::block_on(async move {
        let inner = inner2;
        let conn = inner.connect().await?;
        let ms = TAKE_WAIT.as_millis();
        let took = sql::run(
            &conn.client,
            &format!(
                "SET lock_timeout = '{ms}ms'; SELECT pg_advisory_lock({}, {}); RESET lock_timeout; \
                 SELECT {}",
                inner.class,
                keys::WINDOW,
                inner.now_ms_sql()
            ),
        )
        .await;
        let mut asked = asked;
        match took {
            // Timed by the server, as every stored time.
            Ok(rows) => {
                if let Some(ms) = rows.get(1).and_then(|r| r.first()) {
                    asked.started_at = super::timestamp_ms(sql::int(ms, 0));
                }
            }
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                let rows = inner.exec(&inner.window_sql()).await?;
                let holder = match Inner::window_of(&rows) {
                    WindowState::Waiting(r) | WindowState::Running(r) => r,
                    _ => asked,
                };
                return Err(Error::Refused(Refusal::RunUnderWay {
                    run: holder,
                    what: "; only one `offline run` at a time: try again when it has ended".into(),
                }));
            }
            Err(e) => return Err(inner.pg_error(e)),
        }
        sql::run(&conn.client, &inner.take_window_sql(&id2, &asked)?)
            .await
            .map_err(|e| inner.pg_error(e))?;
        Ok((conn, asked))
    })?;
    let hold = Arc::new(Hold {
        held: HeldKey::new(Arc::clone(inner), keys::WINDOW, conn),
        id,
        run: Mutex::new(watcher_hold),
    });
    let watched = Arc::clone(&hold);
    let watcher = runtime::block_on(async move { Ok(tokio::spawn(watch(watched))) })?;
    Ok(PgWindowLease {
        hold,
        watcher: Some(watcher),
    })
}

/// [`Backend::window`](crate::Backend::window).
pub(super) fn window(inner: &Arc<Inner>) -> Result<WindowState> {
    let inner = Arc::clone(inner);
    runtime::block_on(async move {
        let rows = inner.exec(&inner.window_sql()).await?;
        Ok(Inner::window_of(&rows))
    })
}

/// Whether an `offline run`'s command runs now (a join's standing inside
/// the window lasts as long as it does).
pub(super) async fn is_running(inner: &Inner) -> Result<bool> {
    let rows = inner.exec(&inner.window_sql()).await?;
    Ok(matches!(Inner::window_of(&rows), WindowState::Running(_)))
}

/// Test support shared with `schedules.rs`: a fresh site of the test
/// server, and the server ending the connection that holds a key of it.
#[cfg(test)]
pub(super) mod testing {
    use std::time::{Duration, Instant};

    use super::super::{Inner, PostgresBackend, runtime, sql};
    use crate::clock::SystemClock;
    use crate::config::Config;

    /// A fresh site on `$MANAGE_TEST_DATABASE_URL`, opened once, and its
    /// configuration (to open it again, as another process would); `None`
    /// (the test returns, having said why) without a server.
    pub fn site() -> Option<(Config, PostgresBackend)> {
        if !crate::conformance::postgres_available() {
            return None;
        }
        let config = crate::conformance::postgres_test_config("manage_test");
        let b = open(&config);
        Some((config, b))
    }

    /// The site `config` names, opened anew.
    pub fn open(config: &Config) -> PostgresBackend {
        PostgresBackend::open(config, SystemClock::shared()).unwrap()
    }

    fn holder_sql(inner: &Inner, object: i32) -> String {
        format!(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND granted \
             AND mode = 'ExclusiveLock' AND classid = ({}::bigint & 4294967295)::oid \
             AND objid = ({object}::bigint & 4294967295)::oid",
            inner.class
        )
    }

    /// The server process of the connection holding key `object` of the
    /// site, if one does.
    pub fn holder(inner: &std::sync::Arc<Inner>, object: i32) -> Option<i64> {
        let (inner, sql) = (std::sync::Arc::clone(inner), holder_sql(inner, object));
        let rows = runtime::block_on(async move { inner.exec(&sql).await }).unwrap();
        rows.first().and_then(|r| r.first()).map(|r| sql::int(r, 0))
    }

    /// Has the server end the connection holding key `object` of the site
    /// (as `pg_terminate_backend` in a migration does), and waits until it
    /// has: the key is no longer held by that process.
    pub fn terminate_holder(inner: &std::sync::Arc<Inner>, object: i32) {
        let pid = holder(inner, object).expect("a holder to terminate");
        let inner2 = std::sync::Arc::clone(inner);
        runtime::block_on(async move {
            inner2
                .exec(&format!("SELECT pg_terminate_backend({pid})"))
                .await
        })
        .unwrap();
        eventually("the terminated connection's lock freed", || {
            holder(inner, object) != Some(pid)
        });
    }

    /// Polls `check` until it holds (a hang guard of a minute, never a
    /// measure of speed).
    #[track_caller]
    pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !check() {
            assert!(Instant::now() < deadline, "not {what} within a minute");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::super::PostgresBackend;
    use super::testing::{eventually, holder, open, site, terminate_holder};
    use super::*;
    use crate::backend::{Backend, ModeChange};

    fn run(argv: &str) -> WindowRun {
        WindowRun {
            argv: vec![argv.into()],
            pid: std::process::id(),
            by: "ops@here".into(),
            started_at: Timestamp::at(SystemTime::now()),
            running: false,
            read_only: false,
        }
    }

    /// What a run killed by SIGKILL leaves: its connection ended by the
    /// server, nothing cleaned up, nobody to take the window again.
    fn kill(inner: &Arc<Inner>, mut lease: PgWindowLease) {
        let watcher = lease.watcher.take().unwrap();
        runtime::block_on(async move {
            watcher.abort();
            let _ = watcher.await;
            Ok(())
        })
        .unwrap();
        terminate_holder(inner, keys::WINDOW);
        std::mem::forget(lease);
    }

    #[test]
    fn a_window_whose_connection_the_server_ends_is_taken_again_and_keeps_running() {
        let Some((config, b)) = site() else { return };
        let mut lease = take(&b.inner, &run("migrate")).unwrap();
        lease
            .command_started(Timestamp::at(SystemTime::now()))
            .unwrap();
        let first = holder(&b.inner, keys::WINDOW).expect("held");
        terminate_holder(&b.inner, keys::WINDOW);
        eventually("the window held again, on a new connection", || {
            holder(&b.inner, keys::WINDOW).is_some_and(|p| p != first)
        });
        let other = open(&config);
        assert!(
            matches!(other.window().unwrap(), WindowState::Running(r) if r.argv == ["migrate"]),
            "running again, not abandoned"
        );
        let err = other.begin_window_run(&run("second")).unwrap_err();
        assert!(
            matches!(&err, Error::Refused(Refusal::RunUnderWay { run, .. }) if run.argv == ["migrate"]),
            "{err}"
        );
        drop(lease);
        assert_eq!(other.window().unwrap(), WindowState::Free);
        assert_eq!(holder(&b.inner, keys::WINDOW), None, "the key is free");
    }

    #[test]
    fn a_run_that_lost_its_window_to_another_run_says_so_and_one_that_took_it_back_does_not() {
        let Some((config, b)) = site() else { return };
        let mut lease = take(&b.inner, &run("migrate")).unwrap();
        lease
            .command_started(Timestamp::at(SystemTime::now()))
            .unwrap();
        let first = holder(&b.inner, keys::WINDOW).expect("held");
        terminate_holder(&b.inner, keys::WINDOW);
        eventually("the window held again", || {
            holder(&b.inner, keys::WINDOW).is_some_and(|p| p != first)
        });
        assert_eq!(lease.hold_lost(), None, "taken back");
        // Its watcher stopped (as if the server stayed away), the window
        // goes to another run.
        let watcher = lease.watcher.take().unwrap();
        runtime::block_on(async move {
            watcher.abort();
            let _ = watcher.await;
            Ok(())
        })
        .unwrap();
        terminate_holder(&b.inner, keys::WINDOW);
        let other = take(&open(&config).inner, &run("second")).unwrap();
        let lost = lease.hold_lost();
        assert!(
            lost.as_deref()
                .is_some_and(|w| w.contains("another process holds the window")),
            "{lost:?}"
        );
        drop(lease);
        assert!(matches!(b.window().unwrap(), WindowState::Waiting(r) if r.argv == ["second"]));
        drop(other);
    }

    #[test]
    fn a_run_killed_mid_command_is_abandoned_and_kept_for_the_history_until_recorded() {
        let Some((config, b)) = site() else { return };
        let unrecorded = |b: &PostgresBackend| -> Vec<Vec<String>> {
            let inner = Arc::clone(&b.inner);
            runtime::block_on(async move {
                let conn = inner.take().await?;
                let runs = unrecorded_abandoned(&inner, &conn).await?;
                inner.give(conn);
                Ok(runs.into_iter().map(|r| r.argv).collect())
            })
            .unwrap()
        };
        // Killed while it waited: nothing half-done.
        let waiting = take(&b.inner, &run("waited")).unwrap();
        kill(&b.inner, waiting);
        assert_eq!(open(&config).window().unwrap(), WindowState::Free);
        // Killed mid-command: abandoned, for every reader.
        let mut killed = take(&b.inner, &run("migrate")).unwrap();
        killed
            .command_started(Timestamp::at(SystemTime::now()))
            .unwrap();
        kill(&b.inner, killed);
        assert!(
            matches!(open(&config).window().unwrap(), WindowState::Abandoned(r) if r.argv == ["migrate"])
        );
        // The next run takes the window; the dead one is kept, recorded once.
        let next = take(&open(&config).inner, &run("next")).unwrap();
        assert!(matches!(b.window().unwrap(), WindowState::Waiting(r) if r.argv == ["next"]));
        assert_eq!(unrecorded(&b), [vec!["migrate".to_owned()]]);
        assert!(unrecorded(&b).is_empty(), "once");
        drop(next);
        assert_eq!(b.window().unwrap(), WindowState::Free);
        // Recorded while still current, it still says who left the site
        // OFFLINE, until someone turns it ONLINE.
        let mut killed = take(&b.inner, &run("again")).unwrap();
        killed
            .command_started(Timestamp::at(SystemTime::now()))
            .unwrap();
        kill(&b.inner, killed);
        assert_eq!(unrecorded(&b), [vec!["again".to_owned()]]);
        assert!(matches!(b.window().unwrap(), WindowState::Abandoned(_)));
        b.go_online(&ModeChange::by_this_process()).unwrap();
        assert_eq!(b.window().unwrap(), WindowState::Free);
        assert!(unrecorded(&b).is_empty());
    }

    /// Runs `sql` on the site's pool, as someone with write access would.
    fn write(b: &PostgresBackend, sql: String) {
        let inner = Arc::clone(&b.inner);
        runtime::block_on(async move { inner.exec(&sql).await.map(drop) }).unwrap();
    }

    /// A window read looks at this site's rows only, as JSON only where it
    /// must: an escaped NUL in the site's mode record (JSON allows it;
    /// PostgreSQL refuses to make text of it, "unsupported Unicode escape
    /// sequence") and another site's mode row that is not JSON at all
    /// leave the window and `status` readable. (The NUL failed the old
    /// statement here; another site's row failed it only under a plan
    /// that hashed every site's rows, the server's to choose, which the
    /// `CASE`s now rule out whatever it chooses.)
    #[test]
    fn a_nul_in_the_mode_record_or_another_sites_damaged_row_leaves_the_window_readable() {
        let Some((_, b)) = site() else { return };
        let (_, other) = site().unwrap();
        other.force_offline(&ModeChange::by_this_process()).unwrap();
        write(
            &other,
            format!(
                "UPDATE {}.modes SET record = 'not json' WHERE site = {}",
                other.inner.s(),
                other.inner.site_lit()
            ),
        );
        let mut change = ModeChange::by_this_process();
        change.message = Some("back\0soon".into());
        b.force_offline(&change).unwrap();
        let waiting = take(&b.inner, &run("migrate")).unwrap();
        assert!(
            matches!(b.window().unwrap(), WindowState::Waiting(r) if r.argv == ["migrate"]),
            "the window, read past the NUL"
        );
        assert!(b.status_look().unwrap().is_some(), "status reads too");
        drop(waiting);
        assert_eq!(b.window().unwrap(), WindowState::Free);
    }
}
