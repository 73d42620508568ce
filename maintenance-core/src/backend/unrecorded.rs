//! The entries of the changes nobody lived to record — a drain whose
//! waiters all died (its start too, when its waiter died before recording
//! it), a schedule whose process died, an `offline run` killed while its
//! command ran — as every backend writes them, each with the id that makes
//! it kept once however many processes notice it.

use crate::backend::WindowRun;
use crate::clock::Timestamp;
use crate::history::{Cause, EventKind, HistoryEntry, ScheduleRef};
use crate::identity::Identity;
use crate::mode::{Mode, ModeRecord};
use crate::schedule::{ScheduleRecord, local_time};

/// Who notices, for [`HistoryEntry::noticed_by`].
fn noticer() -> String {
    let me = Identity::current();
    format!("{} (pid {})", me.user_at_host(), me.pid)
}

/// The entry a process drew up for its change and wrote with it, recorded
/// by whoever found it unrecorded after that process was killed.
pub(crate) fn late_entry(mut e: HistoryEntry) -> HistoryEntry {
    e.noticed_by = Some(noticer());
    e
}

/// The entry of the drain `record` began (PENDING, from ONLINE or
/// READONLY, or READONLY_PENDING), for a waiter that died before it
/// recorded it itself (the same id: kept once); `run` is the window's
/// record, which says whether an `offline run` began it.
pub(crate) fn pending_entry(record: &ModeRecord, run: Option<&WindowRun>) -> HistoryEntry {
    // The run's own PENDING only: a run's record stays once it is killed
    // (waiting or running), so it must be the drain's process.
    let run = run.filter(|r| r.pid == record.pid);
    let read_only = record.mode == Mode::ReadOnlyPending;
    let flag = if read_only { " --read-only" } else { "" };
    let (cause, what) = match run {
        Some(r) => (
            Cause::Run,
            format!(
                "offline run{flag} -- {}",
                r.argv.join(" ").chars().take(200).collect::<String>()
            ),
        ),
        None => (Cause::On, format!("offline on{flag}")),
    };
    let refuses = if read_only {
        "writes are refused"
    } else {
        "nobody new gets in"
    };
    let mut e = HistoryEntry::new(
        EventKind::Mode,
        cause,
        record.lapses_to(),
        record.mode,
        record.since,
        format!("{what}: {refuses} (recorded late: its process died before it could)"),
    );
    e.by = record.by.clone();
    e.pid = record.pid;
    e.message = record.message.clone();
    e.noticed_by = Some(noticer());
    e.id = Some(HistoryEntry::pending_id(record));
    e
}

/// The entry of a drain whose waiters all died: back to the mode it came
/// from (ONLINE, or READONLY for a PENDING begun there).
pub(crate) fn lapse_entry(record: &ModeRecord, now: Timestamp) -> HistoryEntry {
    let to = record.lapses_to();
    let mut e = HistoryEntry::new(
        EventKind::Mode,
        Cause::Lapsed,
        record.mode,
        to,
        now,
        format!(
            "the process waiting to take the site {} (pid {}, {}) is gone: the {} begun at {} \
             lapsed, so the site is {to}",
            if record.mode == Mode::ReadOnlyPending {
                "read-only"
            } else {
                "offline"
            },
            record.pid,
            record.by,
            record.mode,
            record.since
        ),
    );
    e.by = record.by.clone();
    e.pid = record.pid;
    e.message = record.message.clone();
    e.noticed_by = Some(noticer());
    e.id = Some(format!("lapse:{}", HistoryEntry::pending_id(record)));
    e
}

/// The entry of a schedule whose process died before its time, without
/// anyone ending it (killed): the site stays `mode`.
pub(crate) fn schedule_lapse_entry(
    record: &ScheduleRecord,
    mode: Mode,
    now: Timestamp,
) -> HistoryEntry {
    let mut e = HistoryEntry::new(
        EventKind::ScheduleLapsed,
        Cause::Lapsed,
        mode,
        mode,
        now,
        format!(
            "the process holding the {} window scheduled at {} (pid {}, {}) is gone: the \
             schedule lapsed, and the site stays {mode}",
            record.kind(),
            local_time(record.at),
            record.pid,
            record.by
        ),
    );
    e.by = record.by.clone();
    e.pid = record.pid;
    e.message = record.message.clone();
    e.schedule = Some(ScheduleRef::from(record));
    e.noticed_by = Some(noticer());
    e.id = Some(format!("schedule-lapse:{}", record.id));
    e
}

/// The entry of an `offline run` killed in its window: while its command
/// ran, or before it started ([`WindowRun::abandoned_in`]).
pub(crate) fn abandoned_entry(run: &WindowRun, mode: Mode, now: Timestamp) -> HistoryEntry {
    let argv: String = run.argv.join(" ").chars().take(200).collect();
    let when = if run.running {
        format!("while its command ran (since {})", run.started_at)
    } else {
        "in its window, before its command started".to_owned()
    };
    let mut e = HistoryEntry::new(
        EventKind::RunAbandoned,
        Cause::Abandoned,
        mode,
        mode,
        now,
        format!(
            "`offline run -- {argv}` (pid {}, {}) was killed {when}: the site stays {mode} until \
             someone turns it ONLINE",
            run.pid, run.by
        ),
    );
    e.by = run.by.clone();
    e.pid = run.pid;
    e.noticed_by = Some(noticer());
    e.id = Some(format!("abandoned:{}@{}", run.pid, run.started_at));
    e
}
