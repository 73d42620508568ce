//! Conformance: the read-only tier — READONLY_PENDING held by its waiters,
//! what it admits and what holds it off, READONLY and the way on to
//! OFFLINE, the markers, and web layers' writes in flight (I1, I2, I5 as
//! amended for READONLY).

// A test suite: a panic is how it reports a failed behaviour.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use super::{FreshState, activation, change, pending, task};
use crate::backend::{Backend, Completion, ReadOnlyStart, WaiterLease};
use crate::error::{Error, Refusal};
use crate::mode::Mode;
use crate::policy::{Access, Drain, Maintenance, Policy};
use crate::transition::{self, Outcome};

fn reads() -> Policy {
    Policy::DEFAULT.access(Access::ReadOnly)
}

/// This process waits in a READONLY_PENDING begun now.
fn read_only_pending(backend: &std::sync::Arc<dyn Backend>) -> Box<dyn WaiterLease> {
    match backend.begin_read_only(&change()).unwrap() {
        ReadOnlyStart::Waiting { waiter, joined, .. } => {
            assert!(!joined, "a fresh READONLY_PENDING");
            waiter
        }
        ReadOnlyStart::Already(r) => panic!("already {}", r.mode),
    }
}

/// The site taken READONLY through its drain, with nothing live.
fn read_only(backend: &std::sync::Arc<dyn Backend>) {
    let w = read_only_pending(backend);
    let Completion::ReadOnly(r) = backend.complete_read_only(w.as_ref(), None).unwrap() else {
        panic!("READONLY");
    };
    assert_eq!(r.mode, Mode::ReadOnly);
}

#[track_caller]
fn assert_refused_for_maintenance(result: Result<crate::task::CommandTask, Error>) {
    match result {
        Err(Error::Refused(Refusal::Maintenance { .. }))
        | Err(Error::Refused(Refusal::MaintenanceRequired { .. })) => {}
        Err(e) => panic!("refused for maintenance, got {e}"),
        Ok(t) => panic!("refused for maintenance, but `{}` started", t.record().name),
    }
}

/// READONLY_PENDING refuses what may write at once and admits what only
/// reads or is `allowed`; a `required` command waits for READONLY (if it
/// only reads) or OFFLINE.
pub fn a_read_only_drain_refuses_writers_and_admits_readers(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let _w = read_only_pending(&b);
    let view = s.open().mode().unwrap();
    assert_eq!(view.mode, Mode::ReadOnlyPending);
    assert!(view.writes_refused());
    assert_refused_for_maintenance(task(&s.open(), "import", Policy::DEFAULT));
    let report = task(&s.open(), "report", reads()).expect("a reader runs");
    assert_eq!(report.record().started_in, Mode::ReadOnlyPending);
    task(
        &s.open(),
        "backup",
        Policy::DEFAULT.maintenance(Maintenance::Allowed),
    )
    .expect("allowed runs");
    assert_refused_for_maintenance(task(
        &s.open(),
        "reindex",
        reads().maintenance(Maintenance::Required),
    ));
}

/// READONLY_PENDING holds only while a waiter does: a killed waiter leaves
/// the site ONLINE, where it came from, and the view says why (I5); the
/// last waiter out turns it ONLINE too.
pub fn a_read_only_drain_lapses_to_online_when_its_waiter_goes(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    drop(read_only_pending(&b));
    let view = s.open().mode().unwrap();
    assert_eq!(view.mode, Mode::Online);
    assert_eq!(view.record.mode, Mode::ReadOnlyPending);
    assert!(!view.writes_refused());
    let lapse = view.lapsed.expect("says it lapsed");
    assert!(
        lapse.reason.contains("so the site is ONLINE"),
        "{}",
        lapse.reason
    );
    task(&s.open(), "import", Policy::DEFAULT).expect("a lapsed drain refuses nothing");
    let w = read_only_pending(&b);
    let after = b.leave_pending(w, &change()).unwrap();
    assert_eq!(after.mode, Mode::Online);
}

/// A task that may write and started ONLINE holds READONLY off, at the
/// final look under the gate; one that only reads does not (I1, I2).
pub fn completing_read_only_is_held_by_a_writer_started_online_not_by_a_reader(
    site: &dyn Fn() -> FreshState,
) {
    let s = site();
    let b = s.open();
    let import = task(&s.open(), "import", Policy::DEFAULT).unwrap();
    let _report = task(&s.open(), "report", reads()).unwrap();
    let w = read_only_pending(&b);
    let Completion::Held(held) = b.complete_read_only(w.as_ref(), None).unwrap() else {
        panic!("held by the writer");
    };
    assert_eq!(
        held.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["import"]
    );
    drop(import);
    let Completion::ReadOnly(r) = b.complete_read_only(w.as_ref(), None).unwrap() else {
        panic!("READONLY once the writer ended");
    };
    assert_eq!(r.mode, Mode::ReadOnly);
    assert_eq!(s.open().tasks().unwrap().len(), 1, "the reader reads on");
}

/// A task started during READONLY — read-only or `allowed` — holds off a
/// later OFFLINE like any other (I1 as amended).
pub fn a_task_started_during_read_only_holds_off_offline(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    read_only(&b);
    let report = task(&s.open(), "report", reads()).unwrap();
    let backup = task(
        &s.open(),
        "backup",
        Policy::DEFAULT.maintenance(Maintenance::Allowed),
    )
    .unwrap();
    assert!(report.record().holds_off_offline() && !report.record().holds_off_read_only());
    let w = pending(&b);
    let Completion::Held(held) = b.complete_offline(w.as_ref(), None).unwrap() else {
        panic!("held by what started during READONLY");
    };
    assert_eq!(held.len(), 2);
    drop((report, backup));
    assert!(matches!(
        b.complete_offline(w.as_ref(), None).unwrap(),
        Completion::Offline(_)
    ));
}

/// From READONLY, PENDING goes on to OFFLINE with writes still refused;
/// its killed waiter lets it lapse back to READONLY, never ONLINE (I5).
pub fn pending_from_read_only_lapses_back_to_read_only(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    read_only(&b);
    let w = pending(&b);
    let view = s.open().mode().unwrap();
    assert_eq!(
        (view.mode, view.record.from),
        (Mode::Pending, Some(Mode::ReadOnly))
    );
    assert!(view.writes_refused());
    assert_refused_for_maintenance(task(&s.open(), "report", reads()));
    drop(w);
    let view = s.open().mode().unwrap();
    assert_eq!(view.mode, Mode::ReadOnly);
    assert!(
        view.lapsed
            .unwrap()
            .reason
            .contains("so the site is READONLY")
    );
    assert_refused_for_maintenance(task(&s.open(), "import", Policy::DEFAULT));
    // Leaving as the last waiter goes back to READONLY too.
    let w = pending(&b);
    assert_eq!(b.leave_pending(w, &change()).unwrap().mode, Mode::ReadOnly);
    // And OFFLINE, once reached, is OFFLINE.
    let w = pending(&b);
    let Completion::Offline(r) = b.complete_offline(w.as_ref(), None).unwrap() else {
        panic!("OFFLINE");
    };
    assert_eq!((r.mode, r.from), (Mode::Offline, None));
    drop(w);
    assert_eq!(s.open().mode().unwrap().mode, Mode::Offline);
}

/// A drain toward one mode refuses a drain toward the other; READONLY or
/// OFFLINE again only updates the message.
pub fn a_drain_toward_another_mode_is_refused(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let w = read_only_pending(&b);
    let err = s.open().begin_pending(&change()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused(Refusal::DrainUnderWay {
                mode: Mode::ReadOnlyPending,
                ..
            })
        ),
        "{err}"
    );
    let ReadOnlyStart::Waiting { joined: true, .. } = s.open().begin_read_only(&change()).unwrap()
    else {
        panic!("a second read-only waiter joins");
    };
    b.leave_pending(w, &change()).unwrap();
    let w = pending(&b);
    let err = s.open().begin_read_only(&change()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused(Refusal::DrainUnderWay {
                mode: Mode::Pending,
                ..
            })
        ),
        "{err}"
    );
    b.complete_offline(w.as_ref(), None).unwrap();
    let ReadOnlyStart::Already(r) = b
        .begin_read_only(&change().message(Some("still down".into())))
        .unwrap()
    else {
        panic!("OFFLINE stops writes already");
    };
    assert_eq!(
        (r.mode, r.message.as_deref()),
        (Mode::Offline, Some("still down"))
    );
    b.go_read_only(&change()).unwrap();
    let ReadOnlyStart::Already(r) = b.begin_read_only(&change()).unwrap() else {
        panic!("already READONLY");
    };
    assert_eq!(
        (r.mode, r.message.as_deref()),
        (Mode::ReadOnly, Some("still down"))
    );
}

/// The markers follow the mode in force: READONLY while writes are
/// refused, OFFLINE while a binary that predates READONLY must act on
/// OFFLINE (READONLY itself, a PENDING from it, OFFLINE).
pub fn the_markers_follow_the_read_only_tier(site: &dyn Fn() -> FreshState) {
    let s = site();
    if s.marker_exists().is_none() {
        return;
    }
    let b = s.open();
    let markers = || {
        (
            s.marker_exists().unwrap(),
            s.read_only_marker_exists().unwrap(),
        )
    };
    let w = read_only_pending(&b);
    assert_eq!(markers(), (false, true), "READONLY_PENDING");
    b.complete_read_only(w.as_ref(), None).unwrap();
    drop(w);
    assert_eq!(markers(), (true, true), "READONLY");
    let p = pending(&b);
    assert_eq!(markers(), (true, true), "PENDING from READONLY");
    b.complete_offline(p.as_ref(), None).unwrap();
    drop(p);
    assert_eq!(markers(), (true, false), "OFFLINE");
    b.go_read_only(&change()).unwrap();
    assert_eq!(markers(), (true, true), "READONLY at once");
    b.go_online(&change()).unwrap();
    assert_eq!(markers(), (false, false), "ONLINE");
    // A killed read-only waiter: the next look puts the marker right.
    drop(read_only_pending(&b));
    assert_eq!(s.open().mode().unwrap().mode, Mode::Online);
    assert_eq!(markers(), (false, false), "a lapsed drain refuses no write");
}

/// A web layer's writes in flight count while it holds them, and not a
/// moment after.
pub fn writes_in_flight_count_while_held(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    assert!(b.writes_in_flight().unwrap().is_empty());
    let lease = b.begin_writes().unwrap();
    let live = s.open().writes_in_flight().unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].pid, std::process::id());
    assert!(
        transition::Live::read(s.open().as_ref()).unwrap().active() >= 1,
        "status counts them"
    );
    drop(lease);
    assert!(s.open().writes_in_flight().unwrap().is_empty());
}

/// The read-only wait: sessions do not hold it off; a web layer's writes
/// in flight and a writer started ONLINE do, until they end; a drain-`stop`
/// writer is among those asked to stop, a reader is not.
pub fn activate_read_only_waits_for_writes_and_writers_not_sessions(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    b.touch_session(&super::key("alice")).unwrap();
    let writes = b.begin_writes().unwrap();
    let worker = task(&s.open(), "worker", Policy::DEFAULT.drain(Drain::Stop)).unwrap();
    let _report = task(&s.open(), "report", reads().drain(Drain::Stop)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let a = s.open();
    let h = std::thread::spawn(move || {
        transition::activate_read_only(
            a.as_ref(),
            &activation(Duration::from_secs(30)),
            &super::never,
            &mut |p| {
                let _ = tx.send((
                    p.holding.tasks.len(),
                    p.holding.writes.len(),
                    p.holding.sessions.len(),
                    p.asked_to_stop
                        .iter()
                        .map(|t| t.name.clone())
                        .collect::<Vec<_>>(),
                ));
            },
        )
    });
    let (tasks, writing, sessions, asked) = rx.recv().unwrap();
    assert_eq!((tasks, writing, sessions), (1, 1, 0));
    assert_eq!(asked, ["worker"]);
    assert_eq!(s.open().mode().unwrap().mode, Mode::ReadOnlyPending);
    drop(worker);
    // Still held by the writes in flight: wait for a look that says so.
    while rx.recv().unwrap().0 != 0 {}
    assert_eq!(s.open().mode().unwrap().mode, Mode::ReadOnlyPending);
    drop(writes);
    let out = h.join().unwrap().unwrap();
    let Outcome::ReadOnly { record, live, .. } = out else {
        panic!("READONLY, got {out:?}");
    };
    assert_eq!(record.mode, Mode::ReadOnly);
    assert_eq!(live.sessions.len(), 1, "the session reads on");
}

/// A nested run that may write is refused while READONLY, unless its
/// task's standing covers writing.
pub fn a_writer_joining_a_reader_is_refused_while_read_only(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    read_only(&b);
    let report = task(&s.open(), "report", reads()).unwrap();
    let token = super::token_of(&report);
    let err = super::join(&s.open(), "import", Policy::DEFAULT, &token).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused(Refusal::Maintenance {
                mode: Mode::ReadOnly,
                ..
            })
        ),
        "{err}"
    );
    super::join(&s.open(), "summary", reads(), &token).expect("a reader joins");
}

/// `offline run --read-only` runs its command in READONLY and puts back
/// the ONLINE it found; `offline run` from READONLY goes on to OFFLINE
/// and puts back READONLY.
pub fn a_window_restores_the_mode_it_found(site: &dyn Fn() -> FreshState) {
    use crate::transition::{Progress, RunOutcome, Target, WindowObserver};
    struct Observer {
        backend: std::sync::Arc<dyn Backend>,
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
    let a = activation(Duration::from_secs(30));
    let argv = ["restore".to_owned()];
    for (target, found, during) in [
        (Target::ReadOnly, Mode::Online, Mode::ReadOnly),
        (Target::Offline, Mode::ReadOnly, Mode::Offline),
        (Target::ReadOnly, Mode::ReadOnly, Mode::ReadOnly),
    ] {
        assert_eq!(b.mode().unwrap().mode, found);
        let mut o = Observer {
            backend: s.open(),
            seen: None,
        };
        let out =
            transition::run_in_window_to(b.as_ref(), &a, target, false, &argv, &mut o).unwrap();
        assert!(
            matches!(out, RunOutcome::Ran { code: 0, restored } if restored == found),
            "{out:?}"
        );
        assert_eq!(o.seen, Some(during), "{target:?} from {found}");
        assert_eq!(b.mode().unwrap().mode, found, "restored");
        if found == Mode::Online {
            read_only(&b);
        }
    }
}
