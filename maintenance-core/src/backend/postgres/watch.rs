//! Waiting for a change without polling slowly: the wait blocks on a
//! watched task's key, taken shared (granted by the server the moment the
//! task's connection ends — a task killed by SIGKILL included, which sends
//! nothing), in slices of [`TICK`], and between slices re-reads the mode
//! record's generation and probes every watched key (one round trip). So a
//! task's end is seen within milliseconds, and a mode change by any
//! process on any host within one tick (under 100 ms). A connection that
//! waits on a lock receives no NOTIFY, hence the re-read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;

use super::sql::{self, int};
use super::{Inner, runtime};
use crate::error::Result;
use crate::records::TaskRecord;

/// The longest slice of one wait before the generation is read again.
const TICK: Duration = Duration::from_millis(40);

/// The key of a task this backend started (its id is `<key>-<random>`).
fn key_of(task: &TaskRecord) -> Option<i32> {
    task.id.split_once('-')?.0.parse().ok()
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
        let conn = inner.take().await?;
        let (s, site, c) = (inner.s(), inner.site_lit(), inner.class);
        let list = keys
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let look = if keys.is_empty() {
            format!("SELECT generation FROM {s}.modes WHERE site = {site}")
        } else {
            format!(
                "SELECT generation FROM {s}.modes WHERE site = {site}; \
                 SELECT count(*) FROM unnest(ARRAY[{list}]::integer[]) k \
                 WHERE pg_try_advisory_xact_lock_shared({c}, k)"
            )
        };
        loop {
            let rows = sql::run(&conn.client, &look)
                .await
                .map_err(|e| inner.pg_error(e))?;
            let now_gen = rows
                .first()
                .and_then(|r| r.first())
                .map_or(0, |r| int(r, 0) as u64);
            let ended = rows
                .get(1)
                .and_then(|r| r.first())
                .is_some_and(|r| int(r, 0) > 0);
            let left = deadline.saturating_duration_since(Instant::now());
            if now_gen != generation || ended || left.is_zero() {
                break;
            }
            let slice = left.min(TICK);
            match keys.first() {
                Some(k) => {
                    let ms = slice.as_millis().max(1);
                    match sql::run(
                        &conn.client,
                        &format!(
                            "BEGIN; SET LOCAL lock_timeout = '{ms}ms'; \
                             SELECT pg_advisory_xact_lock_shared({c}, {k}); COMMIT"
                        ),
                    )
                    .await
                    {
                        // Granted: the task ended.
                        Ok(_) => break,
                        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                            sql::run(&conn.client, "ROLLBACK")
                                .await
                                .map_err(|e| inner.pg_error(e))?;
                        }
                        Err(e) => return Err(inner.pg_error(e)),
                    }
                }
                None => tokio::time::sleep(slice).await,
            }
        }
        inner.give(conn);
        Ok(())
    })
}
