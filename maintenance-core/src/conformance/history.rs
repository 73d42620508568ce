//! Conformance: the history — what is appended read back newest last, one
//! entry per mode change with who, why, how long and for what, a change
//! nobody lived to record recorded exactly once however many notice it,
//! and a bound that keeps the newest entries.

// A test suite: a panic is how it reports a failed behaviour.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use super::{FreshState, activation, change, pending, run_activate, task};
use crate::clock::Timestamp;
use crate::history::{Cause, EventKind, HistoryEntry, HistoryQuery};
use crate::mode::Mode;
use crate::policy::Policy;
use crate::transition::{self, Outcome, Progress, RunOutcome, WindowObserver};

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
    assert!(s.open().record_unrecorded().unwrap().is_empty());
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
