//! Scheduled windows on PostgreSQL (`offline on --at`): one row per
//! schedule in `schedules`, live while its waiting process holds the row's
//! key — a key of its own, drawn as a waiter's is, held exclusively on a
//! connection of its own and probed shared — and nobody has ended it.
//! Killed, by any signal, the server frees the key and every reader on
//! every host sees no schedule at once (as a waiter's PENDING lapses, I5).
//!
//! - **Ends** are written once, into the row (`ended`, the
//!   [`ScheduleEnd`] as JSON, timed by the server), by whoever ends it
//!   first: `offline off` and `offline on` under the exclusive gate, the
//!   schedule's time coming in the very transaction that begins its drain
//!   ([`GateStep`]), so a cancel and the time coming are ordered and no
//!   reader sees both the schedule and its PENDING. A schedule is set
//!   under the gate too: one at a time.
//! - **Its holder learns of an end** by re-reading its row every [`POLL`]
//!   on its own connection, which is idle otherwise (a connection blocked
//!   on a lock would receive no NOTIFY; this one never blocks), so it
//!   returns within 100 ms of an end made by any process on any host, and
//!   sees its own connection end at once.
//! - **A connection the server ends** under a waiting schedule (a restart)
//!   is replaced at the holder's next look: it takes its key again on a new
//!   connection, under the gate, unless the schedule went meanwhile (the
//!   history took it as lapsed, or someone set another) — then the wait
//!   fails saying so. In between, readers see no schedule.
//! - **Leftovers.** An ended schedule's row goes when its holder lets go
//!   (or with the next schedule set); a lapsed one (its holder died without
//!   an end) stays, never counted, until the history records it
//!   ([`take_lapsed`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::connect::Conn;
use super::held_key::HeldKey;
use super::modes::{self, GateStep};
use super::sql::{self, Rows, text};
use super::{Inner, runtime};
use crate::backend::{
    EndedSchedule, ModeChange, PendingStart, ReadOnlyStart, ScheduleEnd, ScheduleLease,
    ScheduleRecord,
};
use crate::clock::Timestamp;
use crate::error::{Error, Refusal, Result};
use crate::schedule::ScheduleEndReason;

/// How often a waiting schedule's holder re-reads its row.
const POLL: Duration = Duration::from_millis(25);

/// This area's tables in schema version 1 (`schema.rs`), given the quoted
/// schema name.
pub(super) fn tables(s: &str) -> String {
    format!(
        "CREATE TABLE {s}.schedules (
             site text NOT NULL,
             key integer NOT NULL,
             id text NOT NULL,
             record text NOT NULL,
             ended text,
             PRIMARY KEY (site, key)
         );"
    )
}

impl Inner {
    /// `pg_try_advisory_xact_lock_shared` of the schedule row `t`'s key:
    /// true when its holder is gone.
    pub(super) fn schedule_dead_sql(&self, t: &str) -> String {
        format!("pg_try_advisory_xact_lock_shared({}, {t}.key)", self.class)
    }

    /// The statement reading the live schedule's record.
    pub(super) fn live_schedule_sql(&self) -> String {
        format!(
            "SELECT t.record FROM {s}.schedules t WHERE t.site = {site} AND t.ended IS NULL \
             AND NOT {dead} ORDER BY t.key LIMIT 1",
            s = self.s(),
            site = self.site_lit(),
            dead = self.schedule_dead_sql("t")
        )
    }

    /// The statement reading schedule `id`'s end (NULL while none).
    fn schedule_end_sql(&self, id: &str) -> String {
        format!(
            "SELECT ended FROM {}.schedules WHERE site = {} AND id = {}",
            self.s(),
            self.site_lit(),
            sql::lit(id)
        )
    }

    /// The statement writing `end` into schedule `id`, unless someone ended
    /// it first.
    fn write_end_sql(&self, id: &str, end: &ScheduleEnd) -> Result<String> {
        let json = serde_json::to_string(end).map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(format!(
            "UPDATE {}.schedules SET ended = {} WHERE site = {} AND id = {} AND ended IS NULL",
            self.s(),
            sql::lit(&json),
            self.site_lit(),
            sql::lit(id)
        ))
    }

    /// The server's time (moved by the backend clock's offset) on `conn`.
    async fn server_now(&self, conn: &Conn) -> Result<Timestamp> {
        let rows = sql::run(&conn.client, &format!("SELECT {}", self.now_ms_sql()))
            .await
            .map_err(|e| self.pg_error(e))?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .map_or(Timestamp::EPOCH, |r| super::timestamp_ms(sql::int(r, 0))))
    }

    /// The error of a schedule whose hold was lost and that went meanwhile.
    fn schedule_lost(&self, record: &ScheduleRecord, what: &str) -> Error {
        self.target.error(format!(
            "the {} window scheduled at {} lost the connection holding it, and {what}: \
             schedule it again",
            record.kind(),
            crate::schedule::local_time(record.at)
        ))
    }
}

/// The first row of the first statement.
fn first(rows: &[Rows]) -> Option<&Vec<Option<String>>> {
    rows.first().and_then(|r| r.first())
}

/// An end as stored; one that cannot be read counts as an end by nobody
/// known: the schedule is over either way.
fn parse_end(json: &str) -> ScheduleEnd {
    serde_json::from_str(json)
        .unwrap_or_else(|_| ScheduleEnd::new(ScheduleEndReason::Withdrawn, "an unknown process", 0))
}

/// For the history (`history.rs`), a holder of the exclusive gate: removes
/// the rows of schedules whose holder died before anyone ended them (they
/// lapsed), on `conn`, and returns their records, each exactly once
/// however many processes ask at once.
pub(super) async fn take_lapsed(inner: &Inner, conn: &Conn) -> Result<Vec<ScheduleRecord>> {
    let rows = sql::run(
        &conn.client,
        &format!(
            "DELETE FROM {s}.schedules t WHERE t.site = {site} AND t.ended IS NULL AND {dead} \
             RETURNING t.record",
            s = inner.s(),
            site = inner.site_lit(),
            dead = inner.schedule_dead_sql("t")
        ),
    )
    .await
    .map_err(|e| inner.pg_error(e))?;
    Ok(sql::json_column(&rows))
}

/// What a schedule's lease holds: its key, on a connection of its own,
/// for its waiting process.
#[derive(Debug)]
struct Hold {
    held: HeldKey,
    record: ScheduleRecord,
}

impl Hold {
    fn inner(&self) -> &Arc<Inner> {
        self.held.inner()
    }

    /// Schedule's end, read on its own connection; the connection is
    /// replaced first when the server ended it.
    async fn read_end(&self) -> Result<Option<ScheduleEnd>> {
        let inner = self.inner();
        let look = inner.schedule_end_sql(&self.record.id);
        let conn = match self.held.open() {
            Some(c) => c,
            None => self.retake().await?,
        };
        let rows = match sql::run(&conn.client, &look).await {
            Ok(rows) => rows,
            Err(e) if e.is_closed() => {
                let conn = self.retake().await?;
                sql::run(&conn.client, &look)
                    .await
                    .map_err(|e| inner.pg_error(e))?
            }
            Err(e) => return Err(inner.pg_error(e)),
        };
        match first(&rows) {
            None => Err(inner.schedule_lost(&self.record, "it lapsed meanwhile")),
            Some(row) => Ok(row.first().cloned().flatten().map(|j| parse_end(&j))),
        }
    }

    /// Takes the schedule's key again on a new connection, under the
    /// exclusive gate, unless the schedule went or another was set while
    /// it was not held: looked at first, so that no reader ever sees a
    /// schedule come back that is not to stay. Its own row is never probed
    /// (the `CASE`): a probe under the gate holds a free key shared until
    /// the gate's end, and the key could not be taken back.
    async fn retake(&self) -> Result<Arc<Conn>> {
        let inner = self.inner();
        let took = self
            .held
            .retake(async |conn| {
                let gate = inner.begin_gate(true).await?;
                let (s, site) = (inner.s(), inner.site_lit());
                let looked = sql::run(
                    &gate.client,
                    &format!(
                        "{}; SELECT count(*) FROM {s}.schedules t WHERE t.site = {site} \
                         AND t.ended IS NULL AND CASE WHEN t.key <> {key} THEN NOT {dead} \
                         ELSE false END",
                        inner.schedule_end_sql(&self.record.id),
                        key = self.held.key(),
                        dead = inner.schedule_dead_sql("t")
                    ),
                )
                .await;
                let lost = match &looked {
                    Err(_) => None,
                    Ok(rows) if first(rows).is_none() => Some("it lapsed meanwhile"),
                    Ok(rows)
                        if rows
                            .get(1)
                            .and_then(|r| r.first())
                            .is_some_and(|r| sql::int(r, 0) > 0) =>
                    {
                        Some("another window was scheduled meanwhile")
                    }
                    Ok(_) => None,
                };
                // Held shared for a moment by a reader's probe (`status`,
                // `schedule`): tried again for up to half a second.
                let took = looked.is_ok()
                    && lost.is_none()
                    && self.held.try_lock_patiently(conn).await.unwrap_or(false);
                inner.rollback(gate).await;
                if let Err(e) = looked {
                    return Err(inner.pg_error(e));
                }
                if let Some(what) = lost {
                    return Err(inner.schedule_lost(&self.record, what));
                }
                Ok(took)
            })
            .await?;
        took.ok_or_else(|| inner.schedule_lost(&self.record, "another process holds its key"))
    }
}

/// A scheduled window's hold, for its waiting process.
#[derive(Debug)]
struct PgScheduleLease {
    hold: Arc<Hold>,
}

impl ScheduleLease for PgScheduleLease {
    fn record(&self) -> &ScheduleRecord {
        &self.hold.record
    }

    fn wait_ended(&self, timeout: Duration) -> Result<Option<ScheduleEnd>> {
        let hold = Arc::clone(&self.hold);
        runtime::block_on(async move {
            let deadline = Instant::now() + timeout;
            loop {
                if let Some(end) = hold.read_end().await? {
                    return Ok(Some(end));
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(None);
                }
                tokio::time::sleep(left.min(POLL)).await;
            }
        })
    }

    fn end(&mut self, end: &ScheduleEnd) -> Result<()> {
        let (hold, end) = (Arc::clone(&self.hold), end.clone());
        runtime::block_on(async move {
            let inner = hold.inner();
            let conn = inner.take().await?;
            let at = inner.server_now(&conn).await?;
            let sql = inner.write_end_sql(&hold.record.id, &ScheduleEnd { at, ..end })?;
            sql::run(&conn.client, &sql)
                .await
                .map_err(|e| inner.pg_error(e))?;
            inner.give(conn);
            Ok(())
        })
    }
}

impl Drop for PgScheduleLease {
    fn drop(&mut self) {
        let hold = Arc::clone(&self.hold);
        // An ended schedule's row goes now; one dropped without an end
        // lapsed, and stays for the history. Then the key is freed (a
        // closing connection frees its locks only a moment later).
        let _ = runtime::block_on(async move {
            let inner = hold.inner();
            let delete = format!(
                "DELETE FROM {}.schedules WHERE site = {} AND key = {} AND id = {} \
                 AND ended IS NOT NULL",
                inner.s(),
                inner.site_lit(),
                hold.held.key(),
                sql::lit(&hold.record.id)
            );
            hold.held.release(&delete).await;
            Ok(())
        });
    }
}

/// [`Backend::begin_schedule`](crate::Backend::begin_schedule): under the
/// exclusive gate, refused while a schedule is live; else the row, its key
/// already held on the schedule's own connection.
pub(super) fn begin_schedule(
    inner: &Arc<Inner>,
    schedule: &ScheduleRecord,
) -> Result<Box<dyn ScheduleLease>> {
    Ok(Box::new(set(inner, schedule)?))
}

/// Sets `schedule`: see [`begin_schedule`].
fn set(inner: &Arc<Inner>, schedule: &ScheduleRecord) -> Result<PgScheduleLease> {
    let (inner2, asked) = (Arc::clone(inner), schedule.clone());
    let (conn, key, record) = runtime::block_on(async move {
        let inner = inner2;
        let (own, key) = inner.lock_connection().await?;
        let gate = inner.begin_gate(true).await?;
        let (s, site) = (inner.s(), inner.site_lit());
        let looked = sql::run(
            &gate.client,
            &format!(
                "DELETE FROM {s}.schedules t WHERE t.site = {site} AND t.ended IS NOT NULL \
                 AND {dead}; SELECT {now}; {live}",
                dead = inner.schedule_dead_sql("t"),
                now = inner.now_ms_sql(),
                live = inner.live_schedule_sql()
            ),
        )
        .await;
        let rows = match looked {
            Ok(rows) => rows,
            Err(e) => {
                inner.rollback(gate).await;
                return Err(inner.pg_error(e));
            }
        };
        if let Some(live) = rows
            .get(1)
            .and_then(|r| r.first())
            .and_then(|r| serde_json::from_str::<ScheduleRecord>(text(r, 0)).ok())
        {
            inner.rollback(gate).await;
            return Err(Error::Refused(Refusal::Scheduled {
                schedule: Box::new(live),
            }));
        }
        let set_at = first(&rows).map_or(Timestamp::EPOCH, |r| super::timestamp_ms(sql::int(r, 0)));
        let record = ScheduleRecord {
            id: format!("{key}-{}", crate::random::hex::<6>()),
            set_at,
            ..asked
        };
        let json = serde_json::to_string(&record).map_err(|e| Error::Invalid(e.to_string()))?;
        inner
            .commit(
                gate,
                &format!(
                    "INSERT INTO {s}.schedules (site, key, id, record, ended) \
                     VALUES ({site}, {key}, {id}, {json}, NULL) \
                     ON CONFLICT (site, key) DO UPDATE SET id = EXCLUDED.id, \
                     record = EXCLUDED.record, ended = NULL",
                    id = sql::lit(&record.id),
                    json = sql::lit(&json)
                ),
            )
            .await?;
        Ok((own, key, record))
    })?;
    Ok(PgScheduleLease {
        hold: Arc::new(Hold {
            held: HeldKey::new(Arc::clone(inner), key, conn),
            record,
        }),
    })
}

/// [`Backend::schedule`](crate::Backend::schedule).
pub(super) fn schedule(inner: &Arc<Inner>) -> Result<Option<ScheduleRecord>> {
    let inner = Arc::clone(inner);
    runtime::block_on(async move {
        let rows = inner.exec(&inner.live_schedule_sql()).await?;
        Ok(first(&rows).and_then(|r| serde_json::from_str(text(r, 0)).ok()))
    })
}

/// [`Backend::end_schedule`](crate::Backend::end_schedule): under the
/// exclusive gate, the live schedule's end, timed by the server.
pub(super) fn end_schedule(inner: &Arc<Inner>, end: &ScheduleEnd) -> Result<Option<EndedSchedule>> {
    let (inner, end) = (Arc::clone(inner), end.clone());
    runtime::block_on(async move {
        let gate = inner.begin_gate(true).await?;
        let looked = sql::run(
            &gate.client,
            &format!(
                "SELECT {}; {}",
                inner.now_ms_sql(),
                inner.live_schedule_sql()
            ),
        )
        .await;
        let rows = match looked {
            Ok(rows) => rows,
            Err(e) => {
                inner.rollback(gate).await;
                return Err(inner.pg_error(e));
            }
        };
        let live = rows
            .get(1)
            .and_then(|r| r.first())
            .and_then(|r| serde_json::from_str::<ScheduleRecord>(text(r, 0)).ok());
        let Some(schedule) = live else {
            inner.rollback(gate).await;
            return Ok(None);
        };
        let at = first(&rows).map_or(Timestamp::EPOCH, |r| super::timestamp_ms(sql::int(r, 0)));
        let end = ScheduleEnd { at, ..end };
        let sql = inner.write_end_sql(&schedule.id, &end)?;
        inner.commit(gate, &sql).await?;
        Ok(Some(EndedSchedule { schedule, end }))
    })
}

/// The step that ends `schedule` as due in its drain's own transaction:
/// refused with [`Refusal::ScheduleEnded`] if someone ended it first.
fn due(inner: &Inner, schedule: &ScheduleRecord, change: &ModeChange) -> GateStep {
    let lost = inner.schedule_lost(schedule, "it lapsed meanwhile");
    let update = {
        let (schedule, by, pid) = (schedule.clone(), change.by.clone(), change.pid);
        let (s, site) = (inner.s(), inner.site_lit());
        move |rows: &[Rows], now: Timestamp| -> Result<String> {
            let Some(row) = first(rows) else {
                return Err(lost);
            };
            if let Some(json) = row.first().cloned().flatten() {
                return Err(Error::Refused(Refusal::ScheduleEnded {
                    schedule: Box::new(schedule),
                    end: parse_end(&json),
                }));
            }
            let end = ScheduleEnd {
                why: ScheduleEndReason::Due,
                by,
                pid,
                at: now,
            };
            let json = serde_json::to_string(&end).map_err(|e| Error::Invalid(e.to_string()))?;
            Ok(format!(
                "UPDATE {s}.schedules SET ended = {} WHERE site = {site} AND id = {} \
                 AND ended IS NULL",
                sql::lit(&json),
                sql::lit(&schedule.id)
            ))
        }
    };
    GateStep {
        look: inner.schedule_end_sql(&schedule.id),
        then: Box::new(update),
    }
}

/// [`Backend::begin_scheduled_pending`](crate::Backend::begin_scheduled_pending).
pub(super) fn begin_scheduled_pending(
    inner: &Arc<Inner>,
    schedule: &dyn ScheduleLease,
    change: &ModeChange,
) -> Result<PendingStart> {
    let step = due(inner, schedule.record(), change);
    modes::begin_pending_with(inner, change, Some(step))
}

/// [`Backend::begin_scheduled_read_only`](crate::Backend::begin_scheduled_read_only).
pub(super) fn begin_scheduled_read_only(
    inner: &Arc<Inner>,
    schedule: &dyn ScheduleLease,
    change: &ModeChange,
) -> Result<ReadOnlyStart> {
    let step = due(inner, schedule.record(), change);
    super::readonly::begin_read_only_with(inner, change, Some(step))
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::super::window::testing::{eventually, holder, open, site, terminate_holder};
    use super::*;
    use crate::backend::Backend;

    fn ahead() -> ScheduleRecord {
        let now = SystemTime::now();
        ScheduleRecord::by_this_process(
            Timestamp::at(now + Duration::from_secs(3600)),
            Timestamp::at(now),
        )
    }

    #[test]
    fn a_schedule_whose_connection_the_server_ends_is_held_again_and_still_hears_its_end() {
        let Some((config, b)) = site() else { return };
        let lease = set(&b.inner, &ahead()).unwrap();
        let key = lease.hold.held.key();
        let first = holder(&b.inner, key).expect("held");
        terminate_holder(&b.inner, key);
        eventually("the schedule held again, on a new connection", || {
            lease.wait_ended(Duration::ZERO).unwrap().is_none()
                && holder(&b.inner, key).is_some_and(|p| p != first)
        });
        let other = open(&config);
        assert_eq!(other.schedule().unwrap().as_ref(), Some(lease.record()));
        let ended = other
            .end_schedule(&ScheduleEnd::new(
                ScheduleEndReason::Cancelled,
                "ops@there",
                7,
            ))
            .unwrap();
        assert_eq!(
            ended.map(|e| e.schedule.id),
            Some(lease.record().id.clone())
        );
        let end = lease.wait_ended(Duration::from_secs(60)).unwrap().unwrap();
        assert_eq!(
            (end.why, end.by.as_str()),
            (ScheduleEndReason::Cancelled, "ops@there")
        );
    }

    #[test]
    fn a_schedule_that_lost_its_connection_while_another_was_set_fails_its_wait_saying_so() {
        let Some((config, b)) = site() else { return };
        let lease = set(&b.inner, &ahead()).unwrap();
        terminate_holder(&b.inner, lease.hold.held.key());
        let other = open(&config);
        assert_eq!(other.schedule().unwrap(), None, "lapsed for every reader");
        let second = other.begin_schedule(&ahead()).unwrap();
        let err = lease.wait_ended(Duration::ZERO).unwrap_err();
        assert!(
            err.to_string()
                .contains("another window was scheduled meanwhile"),
            "{err}"
        );
        assert_eq!(other.schedule().unwrap().as_ref(), Some(second.record()));
    }

    #[test]
    fn lapsed_schedules_are_taken_once_for_the_history_and_live_ones_never() {
        let Some((config, b)) = site() else { return };
        let lapsed = set(&b.inner, &ahead()).unwrap();
        let lapsed_id = lapsed.record().id.clone();
        drop(lapsed);
        let ended = set(&b.inner, &ahead()).unwrap();
        b.end_schedule(&ScheduleEnd::by_this_process(ScheduleEndReason::Cancelled))
            .unwrap();
        let live = open(&config).begin_schedule(&ahead()).unwrap();
        let take = || -> Vec<String> {
            let inner = Arc::clone(&b.inner);
            runtime::block_on(async move {
                let conn = inner.take().await?;
                let taken = take_lapsed(&inner, &conn).await?;
                inner.give(conn);
                Ok(taken.into_iter().map(|r| r.id).collect())
            })
            .unwrap()
        };
        assert_eq!(take(), [lapsed_id]);
        assert!(take().is_empty(), "once");
        drop(ended);
        assert!(take().is_empty(), "an ended schedule never lapsed");
        assert_eq!(b.schedule().unwrap().as_ref(), Some(live.record()));
    }
}
