//! Waiting for a change without polling: the wait blocks on a watched
//! task's key, taken shared (granted by the server the moment the task's
//! connection ends — a task killed by SIGKILL included, which sends
//! nothing), while the backend's LISTEN connection (`listen.rs`) hears the
//! site's mode changes. A connection that waits on a lock receives no
//! NOTIFY, hence the second connection.
//!
//! - **A change** (`off` from any process on any host) commits with its
//!   `NOTIFY`; the listener hears it and the wait's blocked statement is
//!   cancelled at once: `pg_cancel_backend` of the wait's server process,
//!   on another connection of the pool (the same role may cancel its own
//!   statements). Why a cancel, not a short `lock_timeout`: a timeout
//!   bounds the reaction by its slice and costs a round trip per slice; a
//!   cancel costs one statement per change and reacts at once. Why not the
//!   protocol's cancel request (`CancelToken`): it opens a connection, and
//!   the server forks a process for it, per cancel; the pool's connection
//!   is already open. Dropping the statement's future instead would leave
//!   the server blocked on the lock, the connection unusable until the
//!   task ends. `pg_cancel_backend` returns once the server has signalled
//!   the wait's process, so it never lands on a later statement; one that
//!   lands on nothing (the lock granted meanwhile, or the statement not
//!   yet there) does nothing, so it is sent again every [`RECANCEL`] until
//!   the statement ends.
//! - Then the generation is re-read and every watched key probed (one
//!   round trip), as at the start: the wait ends if either moved.
//! - **Fallback.** The same re-read runs every [`FALLBACK`] while the
//!   listener listens (a notification lost on the way: a pooler in
//!   between), and every [`TICK`] while it does not (lost, reconnecting):
//!   so a wait still ends within 100 ms of a change with the LISTEN
//!   connection gone. When the listener connects again, the wait re-reads
//!   at once (changes made meanwhile were not heard).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;

use super::listen::{Listener, Subscription};
use super::sql::{self, int};
use super::{Inner, runtime};
use crate::error::Result;
use crate::records::TaskRecord;

/// How often a wait re-reads the generation while the listener listens.
pub(super) const FALLBACK: Duration = Duration::from_millis(500);

/// How often a wait re-reads the generation while the listener does not.
const TICK: Duration = Duration::from_millis(40);

/// How long a cancelled statement may take to end before the cancel is
/// sent again.
const RECANCEL: Duration = Duration::from_millis(25);

/// The key of a task this backend started (its id is `<key>-<random>`).
fn key_of(task: &TaskRecord) -> Option<i32> {
    task.id.split_once('-')?.0.parse().ok()
}

/// How one slice of a wait ended.
enum Slice {
    /// The watched task ended.
    Ended,
    /// Look again: the slice ran out, or the listener has news.
    Look,
}

/// [`Backend::wait_for_change`](crate::Backend::wait_for_change).
pub(super) fn wait_for_change(
    inner: &Arc<Inner>,
    generation: u64,
    tasks: &[TaskRecord],
    timeout: Duration,
) -> Result<()> {
    let keys: Vec<i32> = tasks.iter().filter_map(key_of).collect();
    let inner = Arc::clone(inner);
    runtime::block_on(async move {
        let deadline = Instant::now() + timeout;
        // Listening before the first look: a change after it is heard.
        let mut news = Listener::subscribe(&inner, deadline).await;
        let conn = inner.take().await?;
        let (s, site, c) = (inner.s(), inner.site_lit(), inner.class);
        let list = keys
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        // The connection's server process (to cancel its lock wait), the
        // generation, and how many watched keys are free.
        let look = if keys.is_empty() {
            format!("SELECT pg_backend_pid(); SELECT generation FROM {s}.modes WHERE site = {site}")
        } else {
            format!(
                "SELECT pg_backend_pid(); SELECT generation FROM {s}.modes WHERE site = {site}; \
                 SELECT count(*) FROM unnest(ARRAY[{list}]::integer[]) k \
                 WHERE pg_try_advisory_xact_lock_shared({c}, k)"
            )
        };
        loop {
            let rows = sql::run(&conn.client, &look)
                .await
                .map_err(|e| inner.pg_error(e))?;
            let cell = |i: usize| rows.get(i).and_then(|r| r.first()).map(|r| int(r, 0));
            let pid = cell(0).unwrap_or(0);
            let now_gen = cell(1).unwrap_or(0) as u64;
            let ended = cell(2).is_some_and(|n| n > 0);
            let left = deadline.saturating_duration_since(Instant::now());
            if now_gen != generation || ended || left.is_zero() {
                break;
            }
            let every = if news.seen().listening {
                inner.watch_fallback
            } else {
                TICK
            };
            let slice = left.min(every);
            let outcome = match keys.first() {
                Some(&k) => {
                    block_on_key(&inner, &conn, pid, k, slice, &mut news, generation).await?
                }
                None => {
                    tokio::select! {
                        () = tokio::time::sleep(slice) => {}
                        _ = news.news(generation) => {}
                    }
                    Slice::Look
                }
            };
            if let Slice::Ended = outcome {
                break;
            }
        }
        inner.give(conn);
        Ok(())
    })
}

/// Blocks on `key` (shared) for up to `slice` on `conn` (server process
/// `pid`), cancelled when the listener has news for a reader of
/// `generation`.
async fn block_on_key(
    inner: &Inner,
    conn: &super::connect::Conn,
    pid: i64,
    key: i32,
    slice: Duration,
    news: &mut Subscription,
    generation: u64,
) -> Result<Slice> {
    let ms = slice.as_millis().max(1);
    let statement = format!(
        "BEGIN; SET LOCAL lock_timeout = '{ms}ms'; \
         SELECT pg_advisory_xact_lock_shared({}, {key}); COMMIT",
        inner.class
    );
    let wait = sql::run(&conn.client, &statement);
    tokio::pin!(wait);
    let outcome = tokio::select! {
        // The statement first: sent before any cancel is.
        biased;
        outcome = &mut wait => outcome,
        _ = news.news(generation) => {
            let mut warned = false;
            loop {
                let cancel = format!("SELECT pg_cancel_backend({pid})");
                if let Err(e) = inner.exec(&cancel).await
                    && !std::mem::replace(&mut warned, true)
                {
                    // A cancel that cannot be sent leaves the statement
                    // to its lock_timeout.
                    eprintln!("warning: {e}");
                }
                // A cancel that reached the server before the statement did
                // found nothing to cancel: again, until the statement ends.
                if let Ok(outcome) = tokio::time::timeout(RECANCEL, &mut wait).await {
                    break outcome;
                }
            }
        }
    };
    match outcome {
        // Granted: the task ended.
        Ok(_) => Ok(Slice::Ended),
        Err(e)
            if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
                || e.code() == Some(&SqlState::QUERY_CANCELED) =>
        {
            sql::run(&conn.client, "ROLLBACK")
                .await
                .map_err(|e| inner.pg_error(e))?;
            Ok(Slice::Look)
        }
        Err(e) => Err(inner.pg_error(e)),
    }
}
