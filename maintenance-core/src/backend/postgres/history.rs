//! The history on PostgreSQL: one row per entry in `<schema>.history`, its
//! JSON as written (text, so that a row this binary cannot read is skipped
//! and named, never fatal), in the order of its `seq`.
//!
//! - **Once per id.** A unique index on `(site, change_id)` where the
//!   entry has an id: an append is one `INSERT … ON CONFLICT DO NOTHING`,
//!   so of two processes (on any hosts) recording the same change, one
//!   row is kept and the other append returns `false`. Appends never tear
//!   one another: each is one row in a statement of its own.
//! - **Bounded.** `[history] max_size` bounds the bytes of the entries
//!   kept (the JSON's size, summed): each append then drops the oldest
//!   rows past the bound, keeping at least the newest. The file backend's
//!   `history.jsonl` and `.1` hold up to twice `max_size`; this holds up
//!   to `max_size`, with no rotation step (the entries read are always
//!   the newest that fit). One pruner at a time ([`HISTORY`](super::keys::HISTORY),
//!   tried): two appends never wait on each other's deletes.
//! - **What nobody lived to record** — a drain whose waiters all died (its
//!   start too, when the waiter died before recording it), a schedule
//!   whose process died, an `offline run` killed mid-command — is noticed
//!   under the exclusive gate, by each writer before the change that
//!   replaces it and by [`record_unrecorded`], and appended on a
//!   connection of its own (committed at once, whatever the writer's
//!   transaction does). The lapsed drain is the mode record's own lapse
//!   (`modes.rs`: no waiter's key held), kept once by its id; the window
//!   and the schedules hand over each run and schedule that died exactly
//!   once (`window::unrecorded_abandoned`, `schedules::take_lapsed`), and
//!   its id keeps it once besides.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::connect::Conn;
use super::sql::{self, int, text};
use super::{Inner, keys, runtime, schedules, window};
use crate::backend::unrecorded::{
    abandoned_entry, lapse_entry, pending_entry, schedule_lapse_entry,
};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::history::{HistoryEntry, HistoryQuery, HistoryRead};
use crate::mode::ModeView;

/// This area's tables in schema version 1 (`schema.rs`), given the quoted
/// schema name.
pub(super) fn tables(s: &str) -> String {
    format!(
        "CREATE TABLE {s}.history (
             site text NOT NULL,
             seq bigint GENERATED ALWAYS AS IDENTITY,
             change_id text,
             at_ms bigint NOT NULL,
             size integer NOT NULL,
             entry text NOT NULL,
             PRIMARY KEY (site, seq)
         );
         CREATE UNIQUE INDEX history_change_ids ON {s}.history (site, change_id)
             WHERE change_id IS NOT NULL;"
    )
}

/// Rows read at a time when only the last few entries are asked for.
const PAGE: usize = 64;

/// The history's settings and what this backend noticed on the way, kept
/// in [`Inner`].
#[derive(Debug)]
pub(super) struct HistoryState {
    /// `[history] max_size`: the bytes of entries kept.
    max_size: u64,
    /// Entries appended for changes nobody lived to record, until
    /// [`record_unrecorded`] hands them out.
    noticed: Mutex<Vec<HistoryEntry>>,
}

impl HistoryState {
    /// The state of a backend whose history keeps `max_size` bytes.
    pub(super) fn new(max_size: u64) -> Self {
        HistoryState {
            max_size,
            noticed: Mutex::new(Vec::new()),
        }
    }
}

/// Milliseconds since the epoch.
fn ms(t: Timestamp) -> i64 {
    t.system_time()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(i64::MAX as u128) as i64)
}

impl Inner {
    /// Keeps `entry` (if any), committed with the mode change it records,
    /// for the caller's hooks ([`record_unrecorded`]).
    pub(super) fn recorded(&self, entry: Option<HistoryEntry>) {
        if let Some(e) = entry {
            self.history
                .noticed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(e);
        }
    }

    /// The statements appending `entry` (one row returned when appended,
    /// none when its id is kept already), then pruning past the bound.
    pub(super) fn append_sql(&self, entry: &HistoryEntry) -> Result<String> {
        let json = serde_json::to_string(entry).map_err(|e| Error::Invalid(e.to_string()))?;
        let (s, site) = (self.s(), self.site_lit());
        let max = self.history.max_size.min(i64::MAX as u64);
        Ok(format!(
            "INSERT INTO {s}.history (site, change_id, at_ms, size, entry) \
             VALUES ({site}, {id}, {at}, {size}, {json}) \
             ON CONFLICT (site, change_id) WHERE change_id IS NOT NULL DO NOTHING RETURNING seq; \
             DELETE FROM {s}.history WHERE site = {site} AND seq < COALESCE(\
                 (SELECT min(seq) FROM (SELECT seq, sum(size) OVER (ORDER BY seq DESC) AS upto \
                  FROM {s}.history WHERE site = {site}) k WHERE upto <= {max}), \
                 (SELECT max(seq) FROM {s}.history WHERE site = {site})) \
             AND (SELECT pg_try_advisory_xact_lock({c}, {key}))",
            id = entry.id.as_deref().map_or("NULL".into(), sql::lit),
            at = ms(entry.at),
            size = json.len().min(i32::MAX as usize),
            json = sql::lit(&json),
            c = self.class,
            key = keys::HISTORY,
        ))
    }

    /// Appends `entry` on a pooled connection, committed at once; `false`
    /// when an entry with its id is kept already.
    pub(super) async fn append_entry(&self, entry: &HistoryEntry) -> Result<bool> {
        let rows = self.exec(&self.append_sql(entry)?).await?;
        Ok(rows.first().is_some_and(|r| !r.is_empty()))
    }

    /// Appends `entry` for a change nobody lived to record; what was
    /// appended waits for [`record_unrecorded`]. A failure is reported on
    /// stderr: the caller's change goes on.
    async fn append_noticed(&self, entry: HistoryEntry) {
        match self.append_entry(&entry).await {
            Ok(true) => self
                .history
                .noticed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(entry),
            Ok(false) => {}
            Err(e) => eprintln!(
                "warning: {} ({}) could not be recorded in the history: {e}",
                entry.change(),
                entry.reason
            ),
        }
    }

    /// For a holder of the exclusive gate, whose look found `view` at
    /// `now` (on `conn`): records what nobody lived to record — the lapsed
    /// drain (its start too, if its waiter died before recording it), runs
    /// killed mid-command, schedules whose process died — before the
    /// change that replaces them. Never fails: what it cannot record it
    /// says on stderr.
    pub(super) async fn notice_under_gate(&self, conn: &Conn, now: Timestamp, view: &ModeView) {
        if let Some(lapse) = &view.lapsed {
            let pending = HistoryEntry::pending_id(&lapse.record);
            let ids = [format!("lapse:{pending}"), pending];
            // A lapse stays in force until the next change: recorded once,
            // it is not tried again at every look.
            match self.all_kept(conn, &ids).await {
                Ok(true) => {}
                Ok(false) => {
                    // The run that began it, if one did: live, or killed
                    // while it waited or ran (pending_entry checks it is
                    // the drain's).
                    let run = match window::current_run_on(self, conn).await {
                        Ok(r) => r,
                        Err(e) => {
                            eprintln!("warning: cannot read the window of the lapsed drain: {e}");
                            None
                        }
                    };
                    self.append_noticed(pending_entry(&lapse.record, run.as_ref()))
                        .await;
                    self.append_noticed(lapse_entry(&lapse.record, now)).await;
                }
                Err(e) => eprintln!("warning: cannot look for a lapsed drain to record: {e}"),
            }
        }
        match window::unrecorded_abandoned(self, conn).await {
            Ok(runs) => {
                for run in &runs {
                    self.append_noticed(abandoned_entry(run, view.mode, now))
                        .await;
                }
            }
            Err(e) => {
                eprintln!("warning: cannot look for an abandoned `offline run` to record: {e}")
            }
        }
        match schedules::take_lapsed(self, conn).await {
            Ok(lapsed) => {
                for record in &lapsed {
                    self.append_noticed(schedule_lapse_entry(record, view.mode, now))
                        .await;
                }
            }
            Err(e) => eprintln!("warning: cannot look for a lapsed schedule to record: {e}"),
        }
    }

    /// Whether the lapse of `view` (if it lapsed) waits to be recorded, on
    /// `conn`: the look a reader makes before it takes the gate to record
    /// it ([`notice_under_gate`](Self::notice_under_gate) records it).
    pub(super) async fn lapse_unrecorded(&self, conn: &Conn, view: &ModeView) -> Result<bool> {
        let Some(lapse) = &view.lapsed else {
            return Ok(false);
        };
        let pending = HistoryEntry::pending_id(&lapse.record);
        Ok(!self
            .all_kept(conn, &[format!("lapse:{pending}"), pending])
            .await?)
    }

    /// Whether every one of `ids` is kept.
    async fn all_kept(&self, conn: &Conn, ids: &[String]) -> Result<bool> {
        let list = ids
            .iter()
            .map(|i| sql::lit(i))
            .collect::<Vec<_>>()
            .join(",");
        let rows = sql::run(
            &conn.client,
            &format!(
                "SELECT count(*) FROM {}.history WHERE site = {} AND change_id IN ({list})",
                self.s(),
                self.site_lit()
            ),
        )
        .await
        .map_err(|e| self.pg_error(e))?;
        let kept = rows
            .first()
            .and_then(|r| r.first())
            .map_or(0, |r| int(r, 0));
        Ok(kept as usize >= ids.len())
    }

    /// The newest rows (after `since`, before `before`), newest first, at
    /// most `limit` (`None`: all): `(seq, entry)`.
    async fn rows(
        &self,
        conn: &Conn,
        since: Option<Timestamp>,
        before: Option<i64>,
        limit: Option<usize>,
    ) -> Result<Vec<(i64, String)>> {
        let mut filter = String::new();
        if let Some(t) = since {
            filter.push_str(&format!(" AND at_ms >= {}", ms(t)));
        }
        if let Some(seq) = before {
            filter.push_str(&format!(" AND seq < {seq}"));
        }
        let limit = limit.map_or(String::new(), |n| format!(" LIMIT {n}"));
        let rows = sql::run(
            &conn.client,
            &format!(
                "SELECT seq, entry FROM {}.history WHERE site = {}{filter} ORDER BY seq DESC{limit}",
                self.s(),
                self.site_lit()
            ),
        )
        .await
        .map_err(|e| self.pg_error(e))?;
        Ok(rows
            .into_iter()
            .next()
            .unwrap_or_default()
            .into_iter()
            .map(|r| (int(&r, 0), text(&r, 1).to_owned()))
            .collect())
    }

    /// The history as `query` asks, on `conn`.
    async fn read_history(&self, conn: &Conn, query: &HistoryQuery) -> Result<HistoryRead> {
        let mut read = HistoryRead::default();
        let wanted = query.last.unwrap_or(usize::MAX);
        // Newest first, page by page when only the last few are asked for
        // (an unreadable row does not count toward them).
        let mut before = None;
        while read.entries.len() < wanted {
            let page = query
                .last
                .map(|n| n.saturating_sub(read.entries.len()).max(PAGE));
            let rows = self.rows(conn, query.since, before, page).await?;
            let exhausted = page.is_none_or(|n| rows.len() < n);
            for (seq, json) in rows {
                before = Some(seq);
                if read.entries.len() >= wanted {
                    break;
                }
                match serde_json::from_str::<HistoryEntry>(&json) {
                    Ok(e) if query.since.is_none_or(|since| e.at >= since) => read.entries.push(e),
                    Ok(_) => {}
                    Err(e) => read.skipped.push(format!(
                        "{}.history, site {:?}: the row with seq {seq} is not a history entry \
                         ({e}); it was skipped",
                        self.schema, self.site
                    )),
                }
            }
            if exhausted {
                break;
            }
        }
        read.entries.reverse();
        read.skipped.reverse();
        Ok(read)
    }
}

/// [`Backend::append_history`](crate::Backend::append_history).
pub(super) fn append_history(inner: &Arc<Inner>, entry: &HistoryEntry) -> Result<bool> {
    let (inner, entry) = (Arc::clone(inner), entry.clone());
    runtime::block_on(async move { inner.append_entry(&entry).await })
}

/// [`Backend::history`](crate::Backend::history).
pub(super) fn history(inner: &Arc<Inner>, query: &HistoryQuery) -> Result<HistoryRead> {
    let (inner, query) = (Arc::clone(inner), *query);
    runtime::block_on(async move {
        let conn = inner.take().await?;
        let read = inner.read_history(&conn, &query).await?;
        inner.give(conn);
        Ok(read)
    })
}

/// [`Backend::record_unrecorded`](crate::Backend::record_unrecorded): the
/// look and the notice under the exclusive gate, where a writer makes
/// them, so that what it records comes before any change that replaces
/// it. Nothing to record costs the gate and three round trips: `offline
/// status` calls it only when its look saw something to record
/// (`status.rs`).
pub(super) fn record_unrecorded(inner: &Arc<Inner>) -> Result<Vec<HistoryEntry>> {
    let inner = Arc::clone(inner);
    runtime::block_on(async move {
        let conn = inner.begin_gate(true).await?;
        let (now, view) = match inner.look_under_gate(&conn).await {
            Ok(v) => v,
            Err(e) => {
                inner.rollback(conn).await;
                return Err(e);
            }
        };
        inner.notice_under_gate(&conn, now, &view).await;
        inner.commit(conn, "SELECT 1").await?;
        Ok(std::mem::take(
            &mut *inner
                .history
                .noticed
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Backend;
    use crate::backend::postgres::PostgresBackend;
    use crate::clock::SystemClock;
    use crate::conformance::{postgres_available, postgres_test_config};
    use crate::history::{Cause, EventKind};
    use crate::mode::Mode;

    fn entry(n: usize) -> HistoryEntry {
        HistoryEntry::new(
            EventKind::Mode,
            Cause::Off,
            Mode::Offline,
            Mode::Online,
            Timestamp::at(SystemTime::UNIX_EPOCH + Duration::from_secs(n as u64)),
            format!("entry {n}"),
        )
    }

    fn reasons(read: &HistoryRead) -> Vec<String> {
        read.entries.iter().map(|e| e.reason.clone()).collect()
    }

    /// Runs `sql` on the test server, for a test that plants rows.
    fn plant(b: &PostgresBackend, sql: String) {
        let inner = Arc::clone(&b.inner);
        runtime::block_on(async move {
            inner.exec(&sql).await?;
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn an_unreadable_row_is_skipped_and_named_and_the_last_n_are_readable_ones() {
        if !postgres_available() {
            return;
        }
        let config = postgres_test_config("manage_test");
        let b = PostgresBackend::open(&config, SystemClock::shared()).unwrap();
        b.append_history(&entry(1)).unwrap();
        let (s, site) = (b.inner.s(), b.inner.site_lit());
        for garbage in [
            "{\"not\": \"an entry\"}",
            "\u{1b}[2J not even JSON",
            "{\"at\":",
        ] {
            plant(
                &b,
                format!(
                    "INSERT INTO {s}.history (site, at_ms, size, entry) VALUES ({site}, 2000, 1, {})",
                    sql::lit(garbage)
                ),
            );
        }
        b.append_history(&entry(3)).unwrap();
        let read = b.history(&HistoryQuery::default()).unwrap();
        assert_eq!(reasons(&read), ["entry 1", "entry 3"]);
        assert_eq!(read.skipped.len(), 3, "{:?}", read.skipped);
        assert!(
            read.skipped[0].contains("manage_test.history")
                && read.skipped[0].contains("is not a history entry"),
            "{:?}",
            read.skipped
        );
        // The last two readable entries, past the rows that are not.
        let read = b
            .history(&HistoryQuery {
                last: Some(2),
                since: None,
            })
            .unwrap();
        assert_eq!(reasons(&read), ["entry 1", "entry 3"]);
        let read = b
            .history(&HistoryQuery {
                last: Some(1),
                since: None,
            })
            .unwrap();
        assert_eq!(reasons(&read), ["entry 3"]);
        assert!(read.skipped.is_empty(), "the older rows were not read");
    }

    #[test]
    fn the_bound_keeps_the_newest_entries_that_fit_and_a_large_one_alone() {
        if !postgres_available() {
            return;
        }
        let mut config = postgres_test_config("manage_test");
        config.history_max_size = 2048;
        let b = PostgresBackend::open(&config, SystemClock::shared()).unwrap();
        for n in 0..40 {
            b.append_history(&entry(n)).unwrap();
        }
        let sizes = |b: &PostgresBackend| -> (i64, i64) {
            let inner = Arc::clone(&b.inner);
            runtime::block_on(async move {
                let rows = inner
                    .exec(&format!(
                        "SELECT count(*), coalesce(sum(size), 0) FROM {}.history WHERE site = {}",
                        inner.s(),
                        inner.site_lit()
                    ))
                    .await?;
                let row = &rows[0][0];
                Ok((int(row, 0), int(row, 1)))
            })
            .unwrap()
        };
        let (count, bytes) = sizes(&b);
        assert!(bytes <= 2048, "{bytes} bytes kept");
        assert!(count < 40 && count > 1, "{count} kept");
        let kept = reasons(&b.history(&HistoryQuery::default()).unwrap());
        assert_eq!(kept.last().map(String::as_str), Some("entry 39"));
        // An entry larger than the bound is kept, alone.
        let mut big = entry(40);
        big.reason = "x".repeat(4096);
        b.append_history(&big).unwrap();
        assert_eq!(sizes(&b).0, 1);
        assert_eq!(b.history(&HistoryQuery::default()).unwrap().entries, [big]);
    }

    #[test]
    fn a_change_on_a_moved_clock_is_never_stored_before_the_clocks_time() {
        if !postgres_available() {
            return;
        }
        let config = postgres_test_config("manage_test");
        let clock = crate::clock::ManualClock::starting_now();
        clock.advance(Duration::from_secs(3600));
        let start = crate::clock::Clock::now(clock.as_ref());
        let b: Arc<dyn Backend> = Arc::new(PostgresBackend::open(&config, clock.clone()).unwrap());
        let me = crate::backend::ModeChange::by_this_process();
        for _ in 0..50 {
            crate::transition::force(b.as_ref(), &me).unwrap();
            crate::transition::deactivate(b.as_ref(), &me, false).unwrap();
            clock.advance(Duration::from_millis(1));
        }
        let entries = b.history(&HistoryQuery::default()).unwrap().entries;
        assert_eq!(entries.len(), 100, "{entries:#?}");
        // Each at the clock's time when it was made, or a round trip
        // later: never before it.
        for (k, pair) in entries.chunks(2).enumerate() {
            let made = start + Duration::from_millis(k as u64);
            for e in pair {
                assert!(
                    e.at >= Timestamp::at(made)
                        && e.at.system_time().duration_since(made).unwrap_or_default()
                            < Duration::from_secs(5),
                    "change {k} made at {:?}, stored at {}",
                    Timestamp::at(made),
                    e.at
                );
            }
        }
    }

    #[test]
    fn appends_racing_from_many_connections_keep_every_entry_whole_and_each_id_once() {
        if !postgres_available() {
            return;
        }
        const WRITERS: usize = 8;
        const EACH: usize = 25;
        let config = postgres_test_config("manage_test");
        let start = Arc::new(std::sync::Barrier::new(WRITERS));
        let threads: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (config, start) = (config.clone(), Arc::clone(&start));
                std::thread::spawn(move || {
                    let b = PostgresBackend::open(&config, SystemClock::shared()).unwrap();
                    start.wait();
                    let mut kept = 0;
                    for n in 0..EACH {
                        let mut own = entry(n);
                        own.reason = format!("{w}/{n} {}", "x".repeat(w * 100));
                        assert!(b.append_history(&own).unwrap());
                        // Every writer records the same change n once.
                        let mut shared = entry(n);
                        shared.id = Some(format!("shared:{n}"));
                        shared.reason = format!("shared {n} by {w}");
                        kept += usize::from(b.append_history(&shared).unwrap());
                    }
                    kept
                })
            })
            .collect();
        let kept: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(kept, EACH, "each shared id appended once, by one writer");
        let b = PostgresBackend::open(&config, SystemClock::shared()).unwrap();
        let read = b.history(&HistoryQuery::default()).unwrap();
        assert!(read.skipped.is_empty(), "{:?}", read.skipped);
        assert_eq!(read.entries.len(), WRITERS * EACH + EACH);
        for w in 0..WRITERS {
            let own: Vec<&str> = read
                .entries
                .iter()
                .filter_map(|e| e.reason.strip_prefix(&format!("{w}/")))
                .collect();
            assert_eq!(own.len(), EACH, "writer {w}");
            assert!(
                own.iter()
                    .enumerate()
                    .all(|(n, r)| r.starts_with(&format!("{n} "))),
                "writer {w}'s entries whole and in its order"
            );
        }
    }
}
