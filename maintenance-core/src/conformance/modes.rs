//! Conformance: the mode record — ONLINE, PENDING held by its waiters, OFFLINE —
//! its generation and times, and the web-server marker that follows it (I5).

// A test suite: a panic is how it reports a failed behaviour.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use super::{FreshState, change, pending, task};
use crate::backend::{Completion, PendingStart};
use crate::clock::ManualClock;
use crate::mode::{Mode, RetryAfter};
use crate::policy::Policy;
use crate::task::{CommandTask, TaskOptions};

/// A new site is ONLINE, with no task.
pub fn fresh_site_is_online(site: &dyn Fn() -> FreshState) {
    let b = site().open();
    let view = b.mode().unwrap();
    assert_eq!(view.mode, Mode::Online);
    assert!(view.lapsed.is_none() && view.stray_marker.is_none());
    assert!(b.tasks().unwrap().is_empty());
}

/// PENDING holds only while a waiter does: a waiter that goes without
/// leaving (a crash) leaves the site ONLINE, and the view says why (I5).
pub fn pending_lapses_when_its_waiter_goes(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let waiter = pending(&b);
    assert_eq!(s.open().mode().unwrap().mode, Mode::Pending);
    drop(waiter);
    let view = s.open().mode().unwrap();
    assert_eq!(view.mode, Mode::Online);
    assert_eq!(view.record.mode, Mode::Pending);
    let lapse = view.lapsed.expect("says it lapsed");
    assert!(lapse.reason.contains("lapsed"), "{}", lapse.reason);
    task(&s.open(), "job", Policy::DEFAULT).expect("a lapsed PENDING refuses nothing");
    b.reap().unwrap();
    // The next writer puts the record right.
    let w = pending(&b);
    assert_eq!(s.open().mode().unwrap().mode, Mode::Pending);
    drop(w);
}

/// A second waiter joins; the first leaving keeps PENDING; the last one out
/// turns the site ONLINE.
pub fn a_second_waiter_keeps_pending_and_the_last_one_out_turns_online(
    site: &dyn Fn() -> FreshState,
) {
    let s = site();
    let (a, b) = (s.open(), s.open());
    let first = pending(&a);
    let PendingStart::Waiting {
        waiter: second,
        joined,
        record,
    } = b
        .begin_pending(&change().message(Some("soon".into())))
        .unwrap()
    else {
        panic!("joins the wait");
    };
    assert!(joined);
    assert_eq!(record.since, first.pending_since());
    assert_eq!(record.message.as_deref(), Some("soon"));
    a.leave_pending(first, &change()).unwrap();
    assert_eq!(s.open().mode().unwrap().mode, Mode::Pending);
    let after = b.leave_pending(second, &change()).unwrap();
    assert_eq!(after.mode, Mode::Online);
    let view = s.open().mode().unwrap();
    assert_eq!(view.mode, Mode::Online);
    assert!(view.lapsed.is_none());
}

/// Completing the wait takes the site OFFLINE; other waiters see it done.
pub fn completing_takes_the_site_offline(site: &dyn Fn() -> FreshState) {
    let s = site();
    let (a, b) = (s.open(), s.open());
    let w1 = pending(&a);
    let w2 = pending(&b);
    let Completion::Offline(r) = a.complete_offline(w1.as_ref(), None).unwrap() else {
        panic!("goes offline");
    };
    assert_eq!(r.mode, Mode::Offline);
    drop(w1);
    assert_eq!(
        b.complete_offline(w2.as_ref(), None).unwrap(),
        Completion::Offline(r)
    );
    drop(w2);
    let view = s.open().mode().unwrap();
    assert_eq!(view.mode, Mode::Offline);
    assert!(view.stray_marker.is_none(), "{:?}", view.stray_marker);
}

/// Going ONLINE while a process waits cancels its wait, naming who.
pub fn going_online_cancels_a_wait(site: &dyn Fn() -> FreshState) {
    let s = site();
    let (a, b) = (s.open(), s.open());
    let w = pending(&a);
    let mut other = change();
    other.by = "ops@elsewhere".into();
    b.go_online(&other).unwrap();
    let Completion::Cancelled(r) = a.complete_offline(w.as_ref(), None).unwrap() else {
        panic!("cancelled");
    };
    assert_eq!((r.mode, r.by.as_str()), (Mode::Online, "ops@elsewhere"));
    let after = a.leave_pending(w, &change()).unwrap();
    assert_eq!(
        after.by, "ops@elsewhere",
        "leaving a cancelled wait writes nothing"
    );
}

/// While OFFLINE, a second activation only updates message and retry-after.
pub fn offline_again_only_updates_the_message(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let first = b
        .force_offline(&change().message(Some("one".into())))
        .unwrap();
    let again = change()
        .message(Some("two".into()))
        .retry_after(Some(RetryAfter::Seconds(120)));
    let PendingStart::AlreadyOffline(r) = b.begin_pending(&again).unwrap() else {
        panic!("already offline");
    };
    assert_eq!(r.mode, Mode::Offline);
    assert_eq!(r.since, first.since);
    assert_eq!(r.message.as_deref(), Some("two"));
    assert_eq!(r.retry_after, Some(RetryAfter::Seconds(120)));
    assert_eq!(s.open().mode().unwrap().record, r);
}

/// The gate: a task admitted before PENDING began is listed by the waiter;
/// one started after is refused.
pub fn a_task_started_before_pending_is_seen_by_the_waiter(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let t = task(&s.open(), "job", Policy::DEFAULT).unwrap();
    let w = pending(&b);
    let live = b.tasks().unwrap();
    assert!(
        live.iter()
            .any(|x| x.id == t.record().id && x.holds_off_offline())
    );
    assert!(task(&s.open(), "other", Policy::DEFAULT).is_err());
    drop(w);
}

/// Mode records take their times from the backend's clock.
pub fn mode_times_come_from_the_clock(site: &dyn Fn() -> FreshState) {
    let s = site();
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000));
    let b = s.open_with(clock.clone());
    let r = b.force_offline(&change()).unwrap();
    s.assert_time_is(r.since.system_time(), clock.now_for_tests());
}

/// Every write of the record moves its generation forward.
pub fn every_write_moves_the_generation(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let g0 = b.mode().unwrap().record.generation;
    let g1 = b.force_offline(&change()).unwrap().generation;
    let g2 = b.go_online(&change()).unwrap().generation;
    assert!(g0 < g1 && g1 < g2, "{g0} {g1} {g2}");
}

/// After every mode change the web-server marker exists exactly while the
/// record it returned says OFFLINE (I5). Sites without a marker skip this.
pub fn the_marker_agrees_with_the_record_after_every_change(site: &dyn Fn() -> FreshState) {
    use crate::mode::ModeRecord;
    let s = site();
    if s.marker_exists().is_none() {
        return;
    }
    let b = s.open();
    let agrees = |what: &str, r: &ModeRecord| {
        assert_eq!(
            s.marker_exists(),
            Some(r.mode == Mode::Offline),
            "after {what} ({})",
            r.mode
        );
    };
    agrees("opening", &b.mode().unwrap().record);
    let PendingStart::Waiting { waiter, record, .. } = b.begin_pending(&change()).unwrap() else {
        panic!("pending");
    };
    agrees("begin_pending", &record);
    let Completion::Offline(r) = b.complete_offline(waiter.as_ref(), None).unwrap() else {
        panic!("offline");
    };
    agrees("complete_offline", &r);
    drop(waiter);
    let PendingStart::AlreadyOffline(r) = b
        .begin_pending(&change().message(Some("later".into())))
        .unwrap()
    else {
        panic!("already offline");
    };
    agrees("begin_pending while OFFLINE", &r);
    agrees("go_online", &b.go_online(&change()).unwrap());
    agrees("force_offline", &b.force_offline(&change()).unwrap());
    agrees(
        "force_offline again",
        &b.force_offline(&change().message(Some("still".into())))
            .unwrap(),
    );
    agrees("go_online", &b.go_online(&change()).unwrap());
    let w = pending(&b);
    agrees("leave_pending", &b.leave_pending(w, &change()).unwrap());
}

/// A marker that disagrees with the record (a crash between the two
/// writes) is put right by the next look at the mode, or the next task
/// start, of any process: a stray one goes, a missing one comes back.
pub fn a_stray_marker_is_put_right_by_the_next_look_or_task(site: &dyn Fn() -> FreshState) {
    let s = site();
    let Some(marker) = s.marker.clone() else {
        return;
    };
    let b = s.open();
    std::fs::write(&marker, "left by a crash\n").unwrap();
    let view = s.open().mode().unwrap();
    assert_eq!(view.mode, Mode::Online);
    assert!(view.stray_marker.is_none(), "{:?}", view.stray_marker);
    assert_eq!(s.marker_exists(), Some(false), "the look removed it");
    b.force_offline(&change()).unwrap();
    std::fs::remove_file(&marker).unwrap();
    let _t =
        CommandTask::start("fix", TaskOptions::new(s.open()).ignore_maintenance(true)).unwrap();
    assert_eq!(s.marker_exists(), Some(true), "the task start restored it");
    std::fs::remove_file(&marker).unwrap();
    assert!(s.open().mode().unwrap().stray_marker.is_none());
    assert_eq!(s.marker_exists(), Some(true), "the look restored it");
}
