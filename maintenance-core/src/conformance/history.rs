//! Conformance: the history — what is appended read back newest last, one
//! entry per mode change with who, why, how long and for what, one per
//! schedule event (set, cancelled, due) and the schedule on the changes it
//! causes, a change nobody lived to record (a lapsed PENDING or schedule)
//! recorded exactly once however many notice it, and a bound that keeps
//! the newest entries; the read-only tier's changes as the user sees them
//! (READONLY_PENDING, READONLY), its lapses back to where each drain came
//! from, and its schedules' events marked `read_only`.

// A test suite: a panic is how it reports a failed behaviour.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use super::{
    FreshState, activate_when_due, activation, change, eventually, never, pending, run_activate,
    task, window,
};
use crate::backend::{ModeChange, ReadOnlyStart};
use crate::clock::{ManualClock, Timestamp};
use crate::error::{Error, Refusal};
use crate::history::{Cause, EventKind, HistoryEntry, HistoryQuery, ScheduleRef};
use crate::mode::Mode;
use crate::policy::{Drain, Maintenance, Policy};
use crate::transition::{self, Notice, Outcome, Progress, RunOutcome, Target, WindowObserver};

fn entry(reason: &str, at_secs: u64) -> HistoryEntry {
    HistoryEntry::new(
        EventKind::Mode,
        Cause::Off,
        Mode::Offline,
        Mode::Online,
        Timestamp::at(SystemTime::UNIX_EPOCH + Duration::from_secs(at_secs)),
        reason,
    )
}

fn all(b: &Arc<dyn crate::Backend>) -> Vec<HistoryEntry> {
    let read = b.history(&HistoryQuery::default()).unwrap();
    assert!(read.skipped.is_empty(), "{:?}", read.skipped);
    read.entries
}

/// `(cause, from, to, forced)` of each mode entry, in order.
fn changes(b: &Arc<dyn crate::Backend>) -> Vec<(Cause, Mode, Mode, bool)> {
    all(b)
        .into_iter()
        .filter(|e| e.kind == EventKind::Mode)
        .map(|e| (e.cause, e.from, e.to, e.forced))
        .collect()
}

/// What eight readers, each its own backend, record of what nobody lived
/// to record, noticing it at the same moment, all together; a later look
/// records nothing more.
fn recorded_by_readers_at_once(s: &FreshState) -> Vec<HistoryEntry> {
    const READERS: usize = 8;
    let backends: Vec<_> = (0..READERS).map(|_| s.open()).collect();
    let start = Arc::new(Barrier::new(READERS));
    let threads: Vec<_> = backends
        .into_iter()
        .map(|b| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                b.record_unrecorded().unwrap()
            })
        })
        .collect();
    let recorded: Vec<HistoryEntry> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(s.open().record_unrecorded().unwrap().is_empty());
    recorded
}

/// What one process appends, another reads back, oldest first; `last`
/// keeps the newest, `since` the recent.
pub fn the_history_reads_back_newest_last(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    assert!(all(&b).is_empty(), "a fresh site has no history");
    for n in 0..5 {
        assert!(b.append_history(&entry(&format!("e{n}"), n)).unwrap());
    }
    let reasons = |q: HistoryQuery| -> Vec<String> {
        s.open()
            .history(&q)
            .unwrap()
            .entries
            .into_iter()
            .map(|e| e.reason)
            .collect()
    };
    assert_eq!(
        reasons(HistoryQuery::default()),
        ["e0", "e1", "e2", "e3", "e4"]
    );
    assert_eq!(
        reasons(HistoryQuery {
            last: Some(2),
            since: None
        }),
        ["e3", "e4"]
    );
    let since = Some(Timestamp::at(
        SystemTime::UNIX_EPOCH + Duration::from_secs(3),
    ));
    assert_eq!(reasons(HistoryQuery { last: None, since }), ["e3", "e4"]);
    let back = all(&s.open());
    assert_eq!(back[0], entry("e0", 0), "read back as written");
}

/// An entry whose id is kept already (the same change, recorded by
/// another process first) is not appended again.
pub fn an_entry_is_kept_once_per_id(site: &dyn Fn() -> FreshState) {
    let s = site();
    let (a, b) = (s.open(), s.open());
    let mut e = entry("completed", 1);
    e.id = Some("record:7@2026-01-01T00:00:00.000Z".into());
    assert!(a.append_history(&e).unwrap());
    assert!(a.append_history(&entry("other", 2)).unwrap());
    let mut again = e.clone();
    again.reason = "completed, seen by another waiter".into();
    assert!(!b.append_history(&again).unwrap(), "a duplicate id");
    let kept = all(&s.open());
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0].reason, "completed");
}

/// Every mode change the state machine makes appends one entry after it is
/// durable, saying from → to, forced or not, why, and how long it waited
/// for what: `on` (PENDING, then OFFLINE), `off`, `--force`, a timeout,
/// and `offline run` (PENDING, OFFLINE, restored).
pub fn every_mode_change_appends_one_entry(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let me = change().message(Some("Back soon".into()));
    let mut a = activation(Duration::from_secs(30));
    a.change = me.clone();
    let out = run_activate(&b, &a);
    assert!(matches!(out, Outcome::Offline { .. }), "{out:?}");
    transition::deactivate(b.as_ref(), &change(), false).unwrap();
    transition::force(b.as_ref(), &change()).unwrap();
    // Forcing an OFFLINE site changes no mode: nothing recorded.
    transition::force(b.as_ref(), &change()).unwrap();
    transition::deactivate(b.as_ref(), &change(), true).unwrap();
    // Going ONLINE from ONLINE is no change either.
    transition::deactivate(b.as_ref(), &change(), false).unwrap();
    let job = task(&s.open(), "reindex", Policy::DEFAULT).unwrap();
    let out = run_activate(&b, &activation(Duration::from_millis(50)));
    assert!(matches!(out, Outcome::TimedOut { .. }), "{out:?}");
    drop(job);
    let mut observer = Ran(false);
    let ran = transition::run_in_window(
        b.as_ref(),
        &activation(Duration::from_secs(30)),
        false,
        &["migrate".to_owned()],
        &mut observer,
    )
    .unwrap();
    assert!(
        matches!(ran, RunOutcome::Ran { code: 0, .. }) && observer.0,
        "{ran:?}"
    );

    use Cause::*;
    use Mode::*;
    assert_eq!(
        changes(&s.open()),
        [
            (On, Online, Pending, false),
            (On, Pending, Offline, false),
            (Off, Offline, Online, false),
            (Force, Online, Offline, true),
            (Off, Offline, Online, false),
            (On, Online, Pending, false),
            (Timeout, Pending, Online, false),
            (Run, Online, Pending, false),
            (Run, Pending, Offline, false),
            (Run, Offline, Online, false),
        ]
    );
    let entries = all(&s.open());
    let me_by = change().by;
    assert!(
        entries
            .iter()
            .all(|e| e.by == me_by && e.pid == change().pid)
    );
    assert_eq!(entries[1].message.as_deref(), Some("Back soon"));
    let waited = entries[1]
        .waited
        .as_ref()
        .expect("the OFFLINE says how long");
    assert!(
        waited.seconds >= 0.02,
        "the settle time at least: {waited:?}"
    );
    assert!(entries[0].at <= entries[1].at && entries[1].at <= entries[2].at);
    let timeout = &entries[6];
    assert!(timeout.reason.contains("timed out"), "{}", timeout.reason);
    let held = &timeout.waited.as_ref().expect("how long it waited").held_by;
    assert_eq!(held.tasks.len(), 1, "{held:?}");
    assert_eq!(held.tasks[0].name, "reindex");
    assert_eq!(timeout.live.tasks[0].name, "reindex", "still live");
    assert!(
        entries[9].reason.contains("migrate"),
        "{}",
        entries[9].reason
    );
}

/// A run whose command does nothing.
struct Ran(bool);

impl WindowObserver for Ran {
    fn stop_requested(&self) -> bool {
        false
    }
    fn progress(&mut self, _: Progress<'_>) {}
    fn run_command(&mut self) -> anyhow::Result<u8> {
        self.0 = true;
        Ok(0)
    }
}

/// A clock that falls a second behind at every read: the time a backend
/// stores for a change lies behind the time the caller read just before,
/// as a database server's clock may lie behind a host's.
#[derive(Debug)]
struct Falling {
    start: SystemTime,
    reads: std::sync::atomic::AtomicU32,
}

impl crate::clock::Clock for Falling {
    fn now(&self) -> SystemTime {
        let n = self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.start - Duration::from_secs(u64::from(n))
    }
    fn boot_time(&self) -> Option<crate::clock::BootTime> {
        None
    }
}

/// Each change is recorded even when the backend's clock (a server's)
/// lies behind the caller's: whether the caller wrote the record is told
/// by its generation, not by its time.
pub fn a_change_is_recorded_whatever_the_backends_clock_says(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open_with(Arc::new(Falling {
        start: SystemTime::now() + Duration::from_secs(3600),
        reads: std::sync::atomic::AtomicU32::new(0),
    }));
    transition::force(b.as_ref(), &change()).unwrap();
    transition::deactivate(b.as_ref(), &change(), false).unwrap();
    transition::force_read_only(b.as_ref(), &change()).unwrap();
    transition::deactivate(b.as_ref(), &change(), false).unwrap();
    use Cause::*;
    use Mode::*;
    assert_eq!(
        changes(&s.open()),
        [
            (Force, Online, Offline, true),
            (Off, Offline, Online, false),
            (Force, Online, ReadOnly, true),
            (Off, ReadOnly, Online, false),
        ]
    );
}

/// A PENDING whose waiter died (nobody lived to record its end) is
/// recorded by whoever notices first, exactly once, however many readers
/// notice it at the same moment; later looks add nothing.
pub fn a_lapsed_pending_is_recorded_exactly_once_however_many_notice_it(
    site: &dyn Fn() -> FreshState,
) {
    let s = site();
    let waiter = pending(&s.open());
    let lapsed = s.open().mode().unwrap().record;
    drop(waiter);
    let recorded = recorded_by_readers_at_once(&s);
    // The waiter began PENDING without recording it (it went straight to
    // the backend): its start is recorded too, then the lapse, once each.
    assert_eq!(recorded.len(), 2, "one reader records them: {recorded:#?}");
    let (start, e) = (&recorded[0], &recorded[1]);
    assert_eq!(
        (start.from, start.to, start.at),
        (Mode::Online, Mode::Pending, lapsed.since)
    );
    assert_eq!(
        (e.cause, e.from, e.to),
        (Cause::Lapsed, Mode::Pending, Mode::Online)
    );
    for e in [start, e] {
        assert_eq!((e.by.as_str(), e.pid), (lapsed.by.as_str(), lapsed.pid));
        assert!(e.noticed_by.is_some());
    }
    assert_eq!(all(&s.open()), recorded, "in the history once each");
    // A writer replacing the lapsed record records nothing more.
    transition::force(s.open().as_ref(), &change()).unwrap();
    let lapses = all(&s.open())
        .into_iter()
        .filter(|e| e.cause == Cause::Lapsed)
        .count();
    assert_eq!(lapses, 1);
}

/// A writer that replaces a lapsed PENDING records the lapse first, under
/// the gate, and hands it out for its hooks.
pub fn a_writer_records_the_lapse_it_replaces(site: &dyn Fn() -> FreshState) {
    let s = site();
    drop(pending(&s.open()));
    let b = s.open();
    let (record, _) = transition::force(b.as_ref(), &change()).unwrap();
    assert_eq!(record.mode, Mode::Offline);
    use Cause::*;
    use Mode::*;
    assert_eq!(
        changes(&s.open()),
        [
            (On, Online, Pending, false),
            (Lapsed, Pending, Online, false),
            (Force, Online, Offline, true)
        ]
    );
    let handed: Vec<Cause> = b
        .record_unrecorded()
        .unwrap()
        .iter()
        .map(|e| e.cause)
        .collect();
    assert!(
        handed.is_empty(),
        "handed out for its hooks already: {handed:?}"
    );
}

/// The history is bounded as the backend is configured, and what is kept
/// is the newest, in order.
pub fn the_history_is_bounded_and_keeps_the_newest(site: &dyn Fn() -> FreshState) {
    let s = site();
    let Some(b) = s.open_with_small_history() else {
        eprintln!("this backend has no small bound to test with");
        return;
    };
    const N: usize = 300;
    for n in 0..N {
        b.append_history(&entry(&format!("{n}"), n as u64)).unwrap();
    }
    let kept: Vec<usize> = all(&b)
        .into_iter()
        .map(|e| e.reason.parse().unwrap())
        .collect();
    assert!(kept.len() < N, "nothing was dropped: {} kept", kept.len());
    assert_eq!(kept.last(), Some(&(N - 1)), "the newest is kept");
    assert!(
        kept.windows(2).all(|w| w[1] == w[0] + 1),
        "the newest, in order: {kept:?}"
    );
}

/// Another operator's request: the entries must name them, not this one.
fn ops() -> ModeChange {
    let mut c = change();
    c.by = "ops@elsewhere".into();
    c.pid = 4242;
    c
}

/// The entries of `kind`.
fn of_kind(b: &Arc<dyn crate::Backend>, kind: EventKind) -> Vec<HistoryEntry> {
    all(b).into_iter().filter(|e| e.kind == kind).collect()
}

/// Setting a schedule appends one entry that carries it (by its holder,
/// at the time the backend gave it, with its message); `offline off`
/// cancelling it and `offline on` superseding it append one each, by the
/// operator who ended it, with the site's mode unchanged — and the `off`
/// of an ONLINE site records no mode change besides.
pub fn setting_and_ending_a_schedule_is_recorded_once_each_with_the_schedule(
    site: &dyn Fn() -> FreshState,
) {
    let s = site();
    let b = s.open();
    let asked = window(&b, Duration::from_secs(3600), "Upgrading");
    let lease = transition::schedule(b.as_ref(), &change(), &asked).unwrap();
    let held = lease.record().clone();
    let set = of_kind(&s.open(), EventKind::ScheduleSet);
    assert_eq!(set.len(), 1, "{set:#?}");
    let e = &set[0];
    assert_eq!(
        (e.cause, e.from, e.to),
        (Cause::Scheduled, Mode::Online, Mode::Online)
    );
    assert_eq!((e.by.as_str(), e.pid), (held.by.as_str(), held.pid));
    assert_eq!(e.at, held.set_at);
    assert_eq!(e.message.as_deref(), Some("Upgrading"));
    assert_eq!(e.schedule, Some(ScheduleRef::from(&held)));

    let (record, cancelled) =
        transition::deactivate_cancelling(s.open().as_ref(), &ops(), false).unwrap();
    assert_eq!(record.mode, Mode::Online);
    let cancelled = cancelled.expect("the schedule was live");
    drop(lease);
    let ended = of_kind(&s.open(), EventKind::ScheduleCancelled);
    assert_eq!(ended.len(), 1, "{ended:#?}");
    let e = &ended[0];
    assert_eq!(
        (e.cause, e.from, e.to),
        (Cause::Off, Mode::Online, Mode::Online)
    );
    assert_eq!((e.by.as_str(), e.pid), ("ops@elsewhere", 4242));
    assert_eq!(e.at, cancelled.end.at, "when it ended, as stored");
    assert_eq!(e.schedule.as_ref().map(|r| &r.id), Some(&held.id));
    assert!(e.reason.contains("offline off"), "{}", e.reason);
    assert!(
        changes(&s.open()).is_empty(),
        "an ONLINE site's off changes no mode: {:#?}",
        all(&s.open())
    );

    let lease = transition::schedule(b.as_ref(), &change(), &asked).unwrap();
    let second = lease.record().id.clone();
    transition::supersede_schedule(s.open().as_ref(), &ops())
        .unwrap()
        .expect("the schedule was live");
    drop(lease);
    let ended = of_kind(&s.open(), EventKind::ScheduleCancelled);
    assert_eq!(ended.len(), 2, "{ended:#?}");
    let e = &ended[1];
    assert_eq!((e.cause, e.by.as_str()), (Cause::On, "ops@elsewhere"));
    assert_eq!(
        e.schedule.as_ref().map(|r| r.id.as_str()),
        Some(second.as_str())
    );
    assert_eq!(of_kind(&s.open(), EventKind::ScheduleSet).len(), 2);
    assert!(
        s.open().record_unrecorded().unwrap().is_empty(),
        "every end was written: nothing lapsed"
    );
}

/// A schedule whose holder died without ending it (killed: the lease
/// dropped without an end) is recorded as lapsed by whoever notices
/// first, exactly once, however many notice it at the same moment; later
/// looks, and the next writer, add nothing.
pub fn a_lapsed_schedule_is_recorded_exactly_once_however_many_notice_it(
    site: &dyn Fn() -> FreshState,
) {
    let s = site();
    let b = s.open();
    let lease = b
        .begin_schedule(&window(&b, Duration::from_secs(3600), "m"))
        .unwrap();
    let held = lease.record().clone();
    drop(lease);
    assert_eq!(s.open().schedule().unwrap(), None, "gone at once");
    let recorded = recorded_by_readers_at_once(&s);
    assert_eq!(recorded.len(), 1, "one reader records it: {recorded:#?}");
    let e = &recorded[0];
    assert_eq!(
        (e.kind, e.cause, e.from, e.to),
        (
            EventKind::ScheduleLapsed,
            Cause::Lapsed,
            Mode::Online,
            Mode::Online
        )
    );
    assert_eq!((e.by.as_str(), e.pid), (held.by.as_str(), held.pid));
    assert_eq!(e.schedule, Some(ScheduleRef::from(&held)));
    assert!(e.noticed_by.is_some());
    assert!(
        e.reason
            .ends_with("is gone: the schedule lapsed, and the site stays ONLINE"),
        "{}",
        e.reason
    );
    assert_eq!(all(&s.open()), recorded, "in the history once");
    transition::force(s.open().as_ref(), &change()).unwrap();
    assert_eq!(of_kind(&s.open(), EventKind::ScheduleLapsed).len(), 1);
}

/// A writer that finds a lapsed schedule (here: the next schedule set)
/// records the lapse first, and hands it out for its hooks.
pub fn a_writer_records_the_lapsed_schedule_it_finds(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let first = b
        .begin_schedule(&window(&b, Duration::from_secs(3600), "first"))
        .unwrap();
    let dead = first.record().id.clone();
    drop(first);
    let next = transition::schedule(
        b.as_ref(),
        &change(),
        &window(&b, Duration::from_secs(60), "next"),
    )
    .unwrap();
    let kinds: Vec<(EventKind, Option<String>)> = all(&s.open())
        .into_iter()
        .map(|e| (e.kind, e.schedule.map(|r| r.id)))
        .collect();
    assert_eq!(
        kinds,
        [
            (EventKind::ScheduleLapsed, Some(dead)),
            (EventKind::ScheduleSet, Some(next.record().id.clone())),
        ]
    );
    assert!(
        b.record_unrecorded().unwrap().is_empty(),
        "handed out for its hooks already"
    );
}

/// A scheduled window's own changes are the schedule's: set, then at its
/// time PENDING and OFFLINE, each carrying it with the cause `scheduled`;
/// the `off` after is no longer the schedule's.
pub fn a_scheduled_window_records_its_mode_changes_with_the_schedule(
    site: &dyn Fn() -> FreshState,
) {
    let s = site();
    let clock = ManualClock::starting_now();
    let b = s.open_with(clock.clone());
    let me = change().message(Some("Upgrading".into()));
    let lease = transition::schedule(
        b.as_ref(),
        &me,
        &window(&b, Duration::from_secs(3600), "Upgrading"),
    )
    .unwrap();
    let held = lease.record().clone();
    let mut a = activation(Duration::from_secs(600));
    a.change = me;
    let h = activate_when_due(&b, lease, a);
    clock.advance(Duration::from_secs(3600));
    eventually("PENDING at the schedule's time", || {
        s.open().mode().unwrap().mode == Mode::Pending
    });
    // The settle time passes on the backend's clock.
    clock.advance(Duration::from_secs(1));
    let out = h.join().unwrap().unwrap();
    assert!(matches!(out, Outcome::Offline { .. }), "{out:?}");
    transition::deactivate(s.open().as_ref(), &change(), false).unwrap();

    let entries = all(&s.open());
    let seen: Vec<(EventKind, Cause, Mode, Mode, bool)> = entries
        .iter()
        .map(|e| (e.kind, e.cause, e.from, e.to, e.schedule.is_some()))
        .collect();
    use Mode::*;
    assert_eq!(
        seen,
        [
            (
                EventKind::ScheduleSet,
                Cause::Scheduled,
                Online,
                Online,
                true
            ),
            (EventKind::Mode, Cause::Scheduled, Online, Pending, true),
            (EventKind::Mode, Cause::Scheduled, Pending, Offline, true),
            (EventKind::Mode, Cause::Off, Offline, Online, false),
        ]
    );
    for e in &entries[..3] {
        assert_eq!(e.schedule, Some(ScheduleRef::from(&held)), "{e:#?}");
        assert_eq!(e.message.as_deref(), Some("Upgrading"));
    }
    assert!(entries[1].at >= held.at, "PENDING at its time, not before");
    assert!(
        s.open().record_unrecorded().unwrap().is_empty(),
        "it ended due: nothing lapsed"
    );
}

/// A schedule its own process ends — interrupted before its time, or
/// refused at its time by a drain-`block` command — is recorded as
/// cancelled by that process, saying why; one whose time finds the site
/// OFFLINE already is recorded as due, since no mode change marks it.
pub fn a_schedule_its_own_process_ends_is_recorded_saying_why(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let mut lease = transition::schedule(
        b.as_ref(),
        &change(),
        &window(&b, Duration::from_secs(3600), "m"),
    )
    .unwrap();
    let notice =
        transition::wait_for_schedule(b.as_ref(), &change(), lease.as_mut(), &|| true).unwrap();
    assert_eq!(notice, Notice::Interrupted);
    drop(lease);

    let job = task(&s.open(), "backup", Policy::DEFAULT.drain(Drain::Block)).unwrap();
    let mut lease = transition::schedule(
        b.as_ref(),
        &change(),
        &window(&b, Duration::from_secs(1), "m"),
    )
    .unwrap();
    let err = transition::activate_scheduled(
        b.as_ref(),
        lease.as_mut(),
        &activation(Duration::from_secs(30)),
        &never,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::Refused(Refusal::Blocked { .. })),
        "{err}"
    );
    assert_eq!(s.open().schedule().unwrap(), None, "withdrawn at once");
    drop(lease);
    drop(job);

    transition::force(b.as_ref(), &change()).unwrap();
    let mut lease = transition::schedule(
        b.as_ref(),
        &change(),
        &window(&b, Duration::from_secs(1), "m"),
    )
    .unwrap();
    let out = transition::activate_scheduled(
        b.as_ref(),
        lease.as_mut(),
        &activation(Duration::from_secs(30)),
        &never,
        &mut |_| {},
    )
    .unwrap();
    assert!(
        matches!(out, Outcome::Offline { already: true, .. }),
        "{out:?}"
    );
    drop(lease);

    let me = change();
    let ends: Vec<(EventKind, Cause, Mode)> = all(&s.open())
        .into_iter()
        .filter(|e| e.kind != EventKind::ScheduleSet && e.kind != EventKind::Mode)
        .inspect(|e| {
            assert_eq!((e.by.as_str(), e.pid), (me.by.as_str(), me.pid), "{e:#?}");
            assert!(e.schedule.is_some(), "{e:#?}");
        })
        .map(|e| (e.kind, e.cause, e.to))
        .collect();
    assert_eq!(
        ends,
        [
            (
                EventKind::ScheduleCancelled,
                Cause::Interrupted,
                Mode::Online
            ),
            (EventKind::ScheduleCancelled, Cause::Refused, Mode::Online),
            (EventKind::ScheduleDue, Cause::Scheduled, Mode::Offline),
        ]
    );
    assert!(
        s.open().record_unrecorded().unwrap().is_empty(),
        "every end was written: nothing lapsed"
    );
}

/// This process waits in a READONLY_PENDING begun now, straight through
/// the backend (so nothing records it: as a waiter killed at once).
fn read_only_pending(b: &Arc<dyn crate::Backend>) -> Box<dyn crate::backend::WaiterLease> {
    match b.begin_read_only(&change()).unwrap() {
        ReadOnlyStart::Waiting { waiter, .. } => waiter,
        ReadOnlyStart::Already(r) => panic!("already {}", r.mode),
    }
}

/// Every mode change of the read-only tier appends one entry, from → to
/// as the user sees them: `on --read-only` (READONLY_PENDING, then
/// READONLY, waiting for a writer and a web layer's writes in flight, not
/// for a session), `on` from READONLY (PENDING, OFFLINE), `--read-only
/// --force`, a timeout of each drain (back to where it came from), `off`
/// from READONLY, and `offline run --read-only` (restoring ONLINE) or
/// `offline run` from READONLY (restoring READONLY).
pub fn every_read_only_mode_change_appends_one_entry(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    b.touch_session(&super::key("alice")).unwrap();
    let writer = task(&s.open(), "import", Policy::DEFAULT).unwrap();
    let writes = s.open().begin_writes().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiting = Arc::clone(&b);
    let h = std::thread::spawn(move || {
        let mut a = activation(Duration::from_secs(30));
        a.change = change().message(Some("Re-indexing".into()));
        transition::activate_read_only(waiting.as_ref(), &a, &never, &mut |p| {
            let _ = tx.send(p.holding.tasks.len() + p.holding.writes.len());
        })
    });
    assert_eq!(rx.recv().unwrap(), 2, "held by the writer and the writes");
    drop(writer);
    drop(writes);
    let out = h.join().unwrap().unwrap();
    assert!(matches!(out, Outcome::ReadOnly { .. }), "{out:?}");
    // On to OFFLINE (the reader logged out: sessions hold OFFLINE off),
    // and back.
    b.end_session(&super::key("alice")).unwrap();
    let out = run_activate(&b, &activation(Duration::from_secs(30)));
    assert!(matches!(out, Outcome::Offline { .. }), "{out:?}");
    transition::deactivate(b.as_ref(), &change(), false).unwrap();
    // At once, then again (no change: nothing recorded), then off.
    transition::force_read_only(b.as_ref(), &change()).unwrap();
    transition::force_read_only(b.as_ref(), &change()).unwrap();
    transition::deactivate(b.as_ref(), &change(), false).unwrap();
    // A read-only drain that times out goes back ONLINE.
    let writer = task(&s.open(), "import", Policy::DEFAULT).unwrap();
    let out = transition::activate_read_only(
        b.as_ref(),
        &activation(Duration::from_millis(50)),
        &never,
        &mut |_| {},
    )
    .unwrap();
    assert!(matches!(out, Outcome::TimedOut { .. }), "{out:?}");
    drop(writer);
    // A PENDING begun from READONLY that times out goes back READONLY,
    // held by a task started during READONLY (I1 as amended).
    transition::force_read_only(b.as_ref(), &change()).unwrap();
    let backup = task(
        &s.open(),
        "backup",
        Policy::DEFAULT.maintenance(Maintenance::Allowed),
    )
    .unwrap();
    let out = run_activate(&b, &activation(Duration::from_millis(50)));
    assert!(matches!(out, Outcome::TimedOut { .. }), "{out:?}");
    drop(backup);
    // `offline run` from READONLY puts READONLY back.
    let mut observer = Ran(false);
    let ran = transition::run_in_window(
        b.as_ref(),
        &activation(Duration::from_secs(30)),
        false,
        &["migrate".to_owned()],
        &mut observer,
    )
    .unwrap();
    assert!(matches!(ran, RunOutcome::Ran { code: 0, .. }), "{ran:?}");
    transition::deactivate(b.as_ref(), &change(), false).unwrap();
    // `offline run --read-only` from ONLINE puts ONLINE back.
    let ran = transition::run_in_window_to(
        b.as_ref(),
        &activation(Duration::from_secs(30)),
        Target::ReadOnly,
        false,
        &["reindex".to_owned()],
        &mut observer,
    )
    .unwrap();
    assert!(matches!(ran, RunOutcome::Ran { code: 0, .. }), "{ran:?}");

    use Cause::*;
    use Mode::*;
    assert_eq!(
        changes(&s.open()),
        [
            (On, Online, ReadOnlyPending, false),
            (On, ReadOnlyPending, ReadOnly, false),
            (On, ReadOnly, Pending, false),
            (On, Pending, Offline, false),
            (Off, Offline, Online, false),
            (Force, Online, ReadOnly, true),
            (Off, ReadOnly, Online, false),
            (On, Online, ReadOnlyPending, false),
            (Timeout, ReadOnlyPending, Online, false),
            (Force, Online, ReadOnly, true),
            (On, ReadOnly, Pending, false),
            (Timeout, Pending, ReadOnly, false),
            (Run, ReadOnly, Pending, false),
            (Run, Pending, Offline, false),
            (Run, Offline, ReadOnly, false),
            (Off, ReadOnly, Online, false),
            (Run, Online, ReadOnlyPending, false),
            (Run, ReadOnlyPending, ReadOnly, false),
            (Run, ReadOnly, Online, false),
        ],
        "{:#?}",
        all(&s.open())
    );
    let entries = all(&s.open());
    let (began, done) = (&entries[0], &entries[1]);
    assert!(
        began.reason.starts_with(
            "offline on --read-only: writes are refused; waiting for command `import`"
        ),
        "{}",
        began.reason
    );
    assert_eq!(done.message.as_deref(), Some("Re-indexing"));
    let waited = done.waited.as_ref().expect("READONLY says how long");
    assert_eq!(
        (
            waited.held_by.tasks.len(),
            waited.held_by.writes,
            waited.held_by.sessions
        ),
        (1, 1, 0),
        "the writer and the writes held it, not the session: {waited:?}"
    );
    assert_eq!(done.live.sessions, 1, "the session reads on");
    assert!(
        entries[5]
            .reason
            .starts_with("offline on --read-only --force: READONLY at once"),
        "{}",
        entries[5].reason
    );
    let timeout = &entries[11];
    assert_eq!(
        timeout.waited.as_ref().unwrap().held_by.tasks[0].name,
        "backup",
        "{timeout:#?}"
    );
    assert!(
        entries[18]
            .reason
            .contains("offline run --read-only -- reindex"),
        "{}",
        entries[18].reason
    );
}

/// A READONLY_PENDING whose waiter died is recorded, start and lapse to
/// ONLINE, exactly once however many readers notice it; so is a PENDING
/// begun from READONLY, whose lapse goes back to READONLY (I5 as
/// amended); and a writer that replaces a lapsed read-only drain records
/// it first and hands it out for its hooks.
pub fn a_lapsed_read_only_drain_is_recorded_exactly_once_going_back_where_it_came_from(
    site: &dyn Fn() -> FreshState,
) {
    let s = site();
    let shape = |e: &HistoryEntry| (e.cause, e.from, e.to);

    let waiter = read_only_pending(&s.open());
    let lapsed = s.open().mode().unwrap().record;
    drop(waiter);
    let recorded = recorded_by_readers_at_once(&s);
    assert_eq!(
        recorded.iter().map(shape).collect::<Vec<_>>(),
        [
            (Cause::On, Mode::Online, Mode::ReadOnlyPending),
            (Cause::Lapsed, Mode::ReadOnlyPending, Mode::Online),
        ],
        "{recorded:#?}"
    );
    assert_eq!(recorded[0].at, lapsed.since);
    assert!(
        recorded[0]
            .reason
            .starts_with("offline on --read-only: writes are refused"),
        "{}",
        recorded[0].reason
    );
    assert!(
        recorded[1].reason.contains("take the site read-only")
            && recorded[1]
                .reason
                .ends_with("lapsed, so the site is ONLINE"),
        "{}",
        recorded[1].reason
    );
    for e in &recorded {
        assert_eq!((e.by.as_str(), e.pid), (lapsed.by.as_str(), lapsed.pid));
        assert!(e.noticed_by.is_some());
    }

    transition::force_read_only(s.open().as_ref(), &change()).unwrap();
    let waiter = pending(&s.open());
    drop(waiter);
    let recorded = recorded_by_readers_at_once(&s);
    assert_eq!(
        recorded.iter().map(shape).collect::<Vec<_>>(),
        [
            (Cause::On, Mode::ReadOnly, Mode::Pending),
            (Cause::Lapsed, Mode::Pending, Mode::ReadOnly),
        ],
        "{recorded:#?}"
    );
    assert!(
        recorded[1]
            .reason
            .ends_with("lapsed, so the site is READONLY"),
        "{}",
        recorded[1].reason
    );

    // A writer that finds a lapsed READONLY_PENDING records it first.
    transition::deactivate(s.open().as_ref(), &change(), false).unwrap();
    drop(read_only_pending(&s.open()));
    let b = s.open();
    transition::force_read_only(b.as_ref(), &change()).unwrap();
    assert!(
        b.record_unrecorded().unwrap().is_empty(),
        "handed out for its hooks already"
    );
    use Cause::*;
    use Mode::*;
    assert_eq!(
        changes(&s.open()),
        [
            (On, Online, ReadOnlyPending, false),
            (Lapsed, ReadOnlyPending, Online, false),
            (Force, Online, ReadOnly, true),
            (On, ReadOnly, Pending, false),
            (Lapsed, Pending, ReadOnly, false),
            (Off, ReadOnly, Online, false),
            (On, Online, ReadOnlyPending, false),
            (Lapsed, ReadOnlyPending, Online, false),
            (Force, Online, ReadOnly, true),
        ]
    );
}

/// A read-only schedule's events say so: its set, its time come (the
/// READONLY_PENDING and READONLY it causes), its end by `offline on
/// --read-only` going read-only now, and its lapse each carry the
/// schedule with `read_only`, and their reasons name a read-only window.
pub fn a_read_only_schedules_events_carry_read_only(site: &dyn Fn() -> FreshState) {
    let s = site();
    let clock = ManualClock::starting_now();
    let b = s.open_with(clock.clone());
    let me = change();
    let mut asked = window(&b, Duration::from_secs(3600), "Re-indexing");
    asked.read_only = true;
    let lease = transition::schedule(b.as_ref(), &me, &asked).unwrap();
    let held = lease.record().clone();
    let h = activate_when_due(&b, lease, activation(Duration::from_secs(600)));
    clock.advance(Duration::from_secs(3600));
    eventually("READONLY_PENDING at the schedule's time", || {
        s.open().mode().unwrap().mode == Mode::ReadOnlyPending
    });
    clock.advance(Duration::from_secs(1));
    let out = h.join().unwrap().unwrap();
    assert!(matches!(out, Outcome::ReadOnly { .. }), "{out:?}");
    transition::deactivate(s.open().as_ref(), &change(), false).unwrap();

    // Superseded by `offline on --read-only` now.
    let lease = transition::schedule(b.as_ref(), &change(), &asked).unwrap();
    transition::supersede_schedule_toward(s.open().as_ref(), &ops(), Target::ReadOnly)
        .unwrap()
        .expect("the schedule was live");
    drop(lease);
    // Killed before its time.
    drop(b.begin_schedule(&asked).unwrap());
    assert_eq!(s.open().record_unrecorded().unwrap().len(), 1);

    let entries = all(&s.open());
    let seen: Vec<(EventKind, Cause, Mode, Mode, Option<bool>)> = entries
        .iter()
        .map(|e| {
            (
                e.kind,
                e.cause,
                e.from,
                e.to,
                e.schedule.as_ref().map(|r| r.read_only),
            )
        })
        .collect();
    use EventKind as K;
    use Mode::*;
    assert_eq!(
        seen,
        [
            (K::ScheduleSet, Cause::Scheduled, Online, Online, Some(true)),
            (
                K::Mode,
                Cause::Scheduled,
                Online,
                ReadOnlyPending,
                Some(true)
            ),
            (
                K::Mode,
                Cause::Scheduled,
                ReadOnlyPending,
                ReadOnly,
                Some(true)
            ),
            (K::Mode, Cause::Off, ReadOnly, Online, None),
            (K::ScheduleSet, Cause::Scheduled, Online, Online, Some(true)),
            (K::ScheduleCancelled, Cause::On, Online, Online, Some(true)),
            (K::ScheduleLapsed, Cause::Lapsed, Online, Online, Some(true)),
        ],
        "{entries:#?}"
    );
    assert_eq!(entries[0].schedule, Some(ScheduleRef::from(&held)));
    assert!(
        entries[0]
            .reason
            .starts_with("offline on --read-only --at "),
        "{}",
        entries[0].reason
    );
    assert!(
        entries[1].reason.contains("--read-only --at ")
            && entries[1].reason.contains("writes are refused"),
        "{}",
        entries[1].reason
    );
    assert!(
        entries[5]
            .reason
            .starts_with("offline on --read-only: went read-only now, ending the read-only window"),
        "{}",
        entries[5].reason
    );
    assert!(
        entries[6]
            .reason
            .contains("the read-only window scheduled at"),
        "{}",
        entries[6].reason
    );
    // JSON says `read_only` only for a read-only window.
    let json = serde_json::to_value(&entries[0]).unwrap();
    assert_eq!(json["schedule"]["read_only"], true);
    let offline = ScheduleRef::from(&window(&s.open(), Duration::from_secs(60), "m"));
    assert!(
        serde_json::to_value(offline)
            .unwrap()
            .get("read_only")
            .is_none()
    );
}
