//! Conformance: scheduled windows (`offline on --at`) — a schedule lives as
//! long as its holder, one at a time, ended once (cancelled, superseded, or
//! its time come) and ordered against its own PENDING, waited for by the
//! backend's clock, with the timeout counted from its time; a read-only
//! window's likewise, toward READONLY.

// A test suite: a panic is how it reports a failed behaviour.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use super::{FreshState, activate_when_due, activation, change, eventually, never, task, window};
use crate::backend::{Backend, PendingStart, ReadOnlyStart};
use crate::clock::{ManualClock, Timestamp};
use crate::error::{Error, Refusal};
use crate::mode::Mode;
use crate::policy::Policy;
use crate::schedule::{ScheduleEnd, ScheduleEndReason};
use crate::transition::{self, Notice, Outcome};

fn ended_by(why: ScheduleEndReason, by: &str) -> ScheduleEnd {
    ScheduleEnd::new(why, by, 4242)
}

/// Every reader sees the schedule while its holder lives, with the id and
/// time the backend gave it; once the holder is gone (a crash: the lease
/// dropped without an end), no reader does, and a new one may be set.
pub fn a_schedule_lives_exactly_as_long_as_its_holder(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    assert_eq!(b.schedule().unwrap(), None);
    let asked = window(&b, Duration::from_secs(3600), "Upgrading");
    let lease = b.begin_schedule(&asked).unwrap();
    let stored = lease.record().clone();
    assert!(!stored.id.is_empty(), "the backend gives it an id");
    assert!(stored.set_at >= Timestamp::at(b.clock().now() - Duration::from_secs(60)));
    assert_eq!(
        (
            stored.at,
            stored.notice_from,
            &stored.by,
            stored.pid,
            &stored.message
        ),
        (
            asked.at,
            asked.notice_from,
            &asked.by,
            asked.pid,
            &asked.message
        )
    );
    assert_eq!(s.open().schedule().unwrap(), Some(stored.clone()));
    assert_eq!(
        s.open().mode().unwrap().mode,
        Mode::Online,
        "only scheduled"
    );
    drop(lease);
    assert_eq!(s.open().schedule().unwrap(), None, "gone at once");
    // What it left never counts, and the next mode change cleans it.
    let again = s.open().begin_schedule(&asked).unwrap();
    assert_ne!(again.record().id, stored.id);
    drop(again);
    s.open().go_online(&change()).unwrap();
    assert_eq!(s.open().schedule().unwrap(), None);
}

/// One schedule at a time: a second is refused, naming the first.
pub fn a_second_schedule_is_refused_naming_the_first(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let first = b
        .begin_schedule(&window(&b, Duration::from_secs(3600), "first"))
        .unwrap();
    let err = s
        .open()
        .begin_schedule(&window(&b, Duration::from_secs(60), "second"))
        .unwrap_err();
    let Error::Refused(Refusal::Scheduled { schedule }) = &err else {
        panic!("refused as scheduled, got {err}");
    };
    assert_eq!(**schedule, *first.record());
    let msg = err.to_string();
    assert!(msg.contains("already scheduled"), "{msg}");
    assert!(
        msg.contains(&format!("pid {}", first.record().pid)),
        "{msg}"
    );
    assert_eq!(err.exit_code(), crate::exit::REFUSED);
}

/// Ending the live schedule returns it, tells its holder who ended it and
/// why, and every reader sees it gone; nothing is left to end after, and a
/// new schedule may be set while the ended one's holder still lives.
pub fn ending_a_schedule_tells_its_holder_and_every_reader(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let lease = b
        .begin_schedule(&window(&b, Duration::from_secs(3600), "m"))
        .unwrap();
    assert_eq!(lease.wait_ended(Duration::ZERO).unwrap(), None);
    let ended = s
        .open()
        .end_schedule(&ended_by(ScheduleEndReason::Cancelled, "ops@elsewhere"))
        .unwrap();
    let ended = ended.expect("the live schedule ended");
    assert_eq!(&ended.schedule, lease.record());
    assert_eq!(s.open().schedule().unwrap(), None);
    let end = lease
        .wait_ended(Duration::from_secs(5))
        .unwrap()
        .expect("its holder learns of it");
    assert_eq!(
        (end.why, end.by.as_str(), end.pid),
        (ScheduleEndReason::Cancelled, "ops@elsewhere", 4242)
    );
    assert!(end.at > Timestamp::EPOCH, "the backend times it");
    assert_eq!(end, ended.end, "the end returned is the end stored");
    assert_eq!(
        s.open()
            .end_schedule(&ended_by(ScheduleEndReason::Cancelled, "x"))
            .unwrap(),
        None,
        "nothing left to end"
    );
    let next = s
        .open()
        .begin_schedule(&window(&b, Duration::from_secs(60), "next"))
        .expect("the ended one no longer counts");
    assert_eq!(s.open().schedule().unwrap().as_ref(), Some(next.record()));
}

/// A schedule's time coming and someone ending it are ordered: ended
/// first, it is refused PENDING, saying who ended it, and the site stays
/// ONLINE; come first, PENDING begins and the schedule ends in the same
/// step — no reader sees both, and nobody can end it any more.
pub fn a_schedule_goes_pending_once_and_only_if_nobody_ended_it(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let lease = b
        .begin_schedule(&window(&b, Duration::from_secs(1), "m"))
        .unwrap();
    s.open()
        .end_schedule(&ended_by(ScheduleEndReason::Superseded, "ops@now"))
        .unwrap();
    let err = b
        .begin_scheduled_pending(lease.as_ref(), &change())
        .unwrap_err();
    let Error::Refused(Refusal::ScheduleEnded { end, schedule }) = &err else {
        panic!("refused as ended, got {err}");
    };
    assert_eq!(
        (end.why, end.by.as_str()),
        (ScheduleEndReason::Superseded, "ops@now")
    );
    assert_eq!(**schedule, *lease.record());
    assert!(err.to_string().contains("ops@now"), "{err}");
    assert_eq!(s.open().mode().unwrap().mode, Mode::Online);
    drop(lease);

    let lease = b
        .begin_schedule(&window(&b, Duration::from_secs(1), "due"))
        .unwrap();
    let PendingStart::Waiting { waiter, record, .. } = b
        .begin_scheduled_pending(lease.as_ref(), &change().message(Some("due".into())))
        .unwrap()
    else {
        panic!("PENDING begins");
    };
    assert_eq!(record.mode, Mode::Pending);
    assert_eq!(record.message.as_deref(), Some("due"));
    assert_eq!(s.open().mode().unwrap().mode, Mode::Pending);
    assert_eq!(s.open().schedule().unwrap(), None, "the schedule is over");
    let end = lease
        .wait_ended(Duration::ZERO)
        .unwrap()
        .expect("ended due");
    assert_eq!(end.why, ScheduleEndReason::Due);
    assert_eq!(
        s.open()
            .end_schedule(&ended_by(ScheduleEndReason::Cancelled, "late"))
            .unwrap(),
        None
    );
    drop(lease);
    b.leave_pending(waiter, &change()).unwrap();
}

/// The wait for a schedule's time follows the backend's clock, and the
/// wait for OFFLINE that follows has its timeout counted from that time:
/// a schedule set an hour ahead, with a ten-minute timeout, still waits
/// for the task that holds it off, and goes OFFLINE when it ends.
pub fn a_schedule_waits_for_its_time_and_its_timeout_counts_from_it(site: &dyn Fn() -> FreshState) {
    let s = site();
    let clock = ManualClock::starting_now();
    let b = s.open_with(clock.clone());
    let job = task(&s.open(), "job", Policy::DEFAULT).unwrap();
    let lease = b
        .begin_schedule(&window(&b, Duration::from_secs(3600), "m"))
        .unwrap();
    let h = activate_when_due(&b, lease, activation(Duration::from_secs(600)));
    assert!(s.open().schedule().unwrap().is_some());
    assert_eq!(s.open().mode().unwrap().mode, Mode::Online);
    clock.advance(Duration::from_secs(3600));
    eventually("PENDING at the schedule's time", || {
        s.open().mode().unwrap().mode == Mode::Pending
    });
    assert_eq!(s.open().schedule().unwrap(), None);
    assert!(
        !h.is_finished(),
        "still waiting for the task, not timed out"
    );
    drop(job);
    // The settle time passes on the backend's clock.
    clock.advance(Duration::from_secs(1));
    let out = h.join().unwrap().unwrap();
    assert!(
        matches!(out, Outcome::Offline { .. }),
        "the timeout counts from the schedule's time: {out:?}"
    );
    assert_eq!(s.open().mode().unwrap().mode, Mode::Offline);
}

/// A stop during the wait withdraws the schedule: gone for every reader,
/// the site as it was.
pub fn a_stopped_wait_withdraws_the_schedule(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let mut lease = b
        .begin_schedule(&window(&b, Duration::from_secs(3600), "m"))
        .unwrap();
    let notice =
        transition::wait_for_schedule(b.as_ref(), &change(), lease.as_mut(), &|| true).unwrap();
    assert_eq!(notice, Notice::Interrupted);
    assert_eq!(s.open().schedule().unwrap(), None);
    let end = lease.wait_ended(Duration::ZERO).unwrap().unwrap();
    assert_eq!(end.why, ScheduleEndReason::Withdrawn);
    assert_eq!(end.pid, std::process::id());
    assert_eq!(s.open().mode().unwrap().mode, Mode::Online);
}

/// `offline off` cancels a schedule and `offline on` without `--at`
/// supersedes one: each returns it, and its waiting process is refused,
/// naming who ended it.
pub fn deactivating_cancels_a_schedule_and_activating_now_supersedes_it(
    site: &dyn Fn() -> FreshState,
) {
    let s = site();
    for why in [ScheduleEndReason::Cancelled, ScheduleEndReason::Superseded] {
        let b = s.open();
        let mut lease = b
            .begin_schedule(&window(&b, Duration::from_secs(3600), "m"))
            .unwrap();
        let id = lease.record().id.clone();
        let waiting = Arc::clone(&b);
        let h = std::thread::spawn(move || {
            transition::wait_for_schedule(waiting.as_ref(), &change(), lease.as_mut(), &never)
        });
        let ops = change();
        let ended = match why {
            ScheduleEndReason::Cancelled => {
                let (record, cancelled) =
                    transition::deactivate_cancelling(s.open().as_ref(), &ops, false).unwrap();
                assert_eq!(record.mode, Mode::Online);
                cancelled
            }
            _ => transition::supersede_schedule(s.open().as_ref(), &ops).unwrap(),
        };
        assert_eq!(ended.map(|e| (e.schedule.id, e.end.why)), Some((id, why)));
        let err = h.join().unwrap().unwrap_err();
        let Error::Refused(Refusal::ScheduleEnded { end, .. }) = &err else {
            panic!("refused as ended, got {err}");
        };
        assert_eq!((end.why, &end.by, end.pid), (why, &ops.by, ops.pid));
        assert_eq!(s.open().schedule().unwrap(), None);
    }
}

/// A read-only window's schedule (`--at TIME --read-only`): its record
/// says so to every reader; its time coming begins READONLY_PENDING and
/// ends the schedule in one step, ordered against an end as PENDING's is;
/// and when READONLY_PENDING cannot begin (the site drains toward
/// OFFLINE), the schedule stands again, as it was.
pub fn a_read_only_schedule_goes_read_only_pending_once_and_only_if_nobody_ended_it(
    site: &dyn Fn() -> FreshState,
) {
    let s = site();
    let b = s.open();
    let read_only = || {
        let mut r = window(&b, Duration::from_secs(1), "re-index");
        r.read_only = true;
        r
    };
    let lease = b.begin_schedule(&read_only()).unwrap();
    let seen = s.open().schedule().unwrap().expect("live");
    assert!(seen.read_only, "every reader sees a read-only window");
    s.open()
        .end_schedule(&ended_by(ScheduleEndReason::Cancelled, "ops@now"))
        .unwrap();
    let err = b
        .begin_scheduled_read_only(lease.as_ref(), &change())
        .unwrap_err();
    assert!(
        matches!(&err, Error::Refused(Refusal::ScheduleEnded { end, .. }) if end.by == "ops@now"),
        "refused as ended, got {err}"
    );
    assert_eq!(s.open().mode().unwrap().mode, Mode::Online);
    drop(lease);

    // Due while the site drains toward OFFLINE: refused, the schedule kept.
    let lease = b.begin_schedule(&read_only()).unwrap();
    let w = super::pending(&s.open());
    let err = b
        .begin_scheduled_read_only(lease.as_ref(), &change())
        .unwrap_err();
    assert!(
        matches!(err, Error::Refused(Refusal::DrainUnderWay { .. })),
        "{err}"
    );
    assert_eq!(s.open().mode().unwrap().mode, Mode::Pending);
    assert_eq!(
        s.open().schedule().unwrap().as_ref(),
        Some(lease.record()),
        "the schedule stands again"
    );
    s.open().leave_pending(w, &change()).unwrap();

    let ReadOnlyStart::Waiting { waiter, record, .. } = b
        .begin_scheduled_read_only(lease.as_ref(), &change().message(Some("due".into())))
        .unwrap()
    else {
        panic!("READONLY_PENDING begins");
    };
    assert_eq!(record.mode, Mode::ReadOnlyPending);
    assert_eq!(record.message.as_deref(), Some("due"));
    assert!(s.open().mode().unwrap().writes_refused());
    assert_eq!(s.open().schedule().unwrap(), None, "the schedule is over");
    let end = lease.wait_ended(Duration::ZERO).unwrap().expect("ended");
    assert_eq!(end.why, ScheduleEndReason::Due);
    drop(lease);
    // Its waiter gone, READONLY_PENDING lapses to ONLINE (I5), and no
    // schedule is left to fire again.
    drop(waiter);
    assert_eq!(s.open().mode().unwrap().mode, Mode::Online);
    assert_eq!(s.open().schedule().unwrap(), None);
}

/// A read-only schedule waits for its time by the backend's clock, then
/// goes exactly as `offline on --read-only`: READONLY_PENDING, held off by
/// a task that may write and started ONLINE (its timeout counted from the
/// time), not by a web session nor a task that only reads; READONLY once
/// the writer ends.
pub fn a_read_only_schedule_goes_read_only_at_its_time(site: &dyn Fn() -> FreshState) {
    let s = site();
    let clock = ManualClock::starting_now();
    let b = s.open_with(clock.clone());
    let writer = task(&s.open(), "import", Policy::DEFAULT).unwrap();
    let _reader = task(
        &s.open(),
        "report",
        Policy::DEFAULT.access(crate::policy::Access::ReadOnly),
    )
    .unwrap();
    let mut r = window(&b, Duration::from_secs(3600), "re-index");
    r.read_only = true;
    let lease = b.begin_schedule(&r).unwrap();
    let h = activate_when_due(&b, lease, activation(Duration::from_secs(600)));
    assert_eq!(s.open().mode().unwrap().mode, Mode::Online);
    clock.advance(Duration::from_secs(3600));
    eventually("READONLY_PENDING at the schedule's time", || {
        s.open().mode().unwrap().mode == Mode::ReadOnlyPending
    });
    assert_eq!(s.open().schedule().unwrap(), None);
    // A user reading on (by the backend's clock, now the schedule's time).
    b.touch_session(&super::key("alice")).unwrap();
    // Past the settle time, the writer alone holds it off.
    clock.advance(Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(100));
    assert!(!h.is_finished(), "held off by the writer");
    assert_eq!(s.open().mode().unwrap().mode, Mode::ReadOnlyPending);
    drop(writer);
    let out = h.join().unwrap().unwrap();
    let Outcome::ReadOnly { record, live, .. } = out else {
        panic!("READONLY, got {out:?}");
    };
    assert_eq!(record.mode, Mode::ReadOnly);
    assert_eq!(live.sessions.len(), 1, "the session reads on");
    assert_eq!(s.open().mode().unwrap().mode, Mode::ReadOnly);
}

/// `offline run --at TIME --read-only`: at its time the command runs
/// inside a READONLY window, and the ONLINE found is put back after it.
pub fn a_read_only_scheduled_run_runs_inside_read_only_and_restores_online(
    site: &dyn Fn() -> FreshState,
) {
    use crate::transition::{Progress, RunOutcome, WindowObserver};
    struct Observer {
        backend: Arc<dyn Backend>,
        seen: Option<Mode>,
    }
    impl WindowObserver for Observer {
        fn stop_requested(&self) -> bool {
            false
        }
        fn progress(&mut self, _: Progress<'_>) {}
        fn run_command(&mut self) -> anyhow::Result<u8> {
            self.seen = Some(self.backend.mode()?.mode);
            Ok(0)
        }
    }
    let s = site();
    let b = s.open();
    let mut r = window(&b, Duration::from_millis(1), "re-index");
    r.read_only = true;
    r.argv = Some(vec!["reindex".into()]);
    let mut lease = b.begin_schedule(&r).unwrap();
    let notice =
        transition::wait_for_schedule(b.as_ref(), &change(), lease.as_mut(), &never).unwrap();
    assert_eq!(notice, Notice::Due);
    let mut o = Observer {
        backend: s.open(),
        seen: None,
    };
    let out = transition::run_in_window_scheduled(
        b.as_ref(),
        lease.as_mut(),
        &activation(Duration::from_secs(30)),
        &["reindex".to_owned()],
        &mut o,
    )
    .unwrap();
    assert!(
        matches!(
            out,
            RunOutcome::Ran {
                code: 0,
                restored: Mode::Online
            }
        ),
        "{out:?}"
    );
    assert_eq!(o.seen, Some(Mode::ReadOnly), "the command ran in READONLY");
    assert_eq!(s.open().mode().unwrap().mode, Mode::Online);
    assert_eq!(s.open().schedule().unwrap(), None);
}
