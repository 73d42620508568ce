//! Conformance: the maintenance window of `offline run` — one holder at a
//! time, and the tasks that run inside it.

// A test suite: a panic is how it reports a failed behaviour.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use super::{FreshState, activation, change, pending, run_activate, task};
use crate::error::{Error, Refusal};
use crate::policy::{Maintenance, Policy};
use crate::transition::{self, Outcome};

/// Tasks admitted inside the window (allowed, override) do not hold it off.
pub fn tasks_started_inside_the_window_do_not_hold_it_off(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let _w = pending(&b);
    let _backup = task(
        &s.open(),
        "backup",
        Policy::DEFAULT.maintenance(Maintenance::Allowed),
    )
    .unwrap();
    let out = run_activate(&s.open(), &activation(Duration::from_secs(10)));
    let Outcome::Offline { live, joined, .. } = out else {
        panic!("offline, got {out:?}")
    };
    assert!(joined);
    assert_eq!(live.tasks.len(), 1, "listed as running inside the window");
    assert!(live.describe(SystemTime::now())[0].contains("inside the window"));
}

/// The window of `offline run`: one holder at a time, waiting then running,
/// free again when its lease drops.
pub fn an_offline_run_holds_the_window_alone_and_says_when_its_command_runs(
    site: &dyn Fn() -> FreshState,
) {
    use crate::backend::{WindowRun, WindowState};
    let s = site();
    let b = s.open();
    assert_eq!(b.window().unwrap(), WindowState::Free);
    let run = WindowRun {
        argv: vec!["migrate".into()],
        pid: std::process::id(),
        by: change().by,
        started_at: crate::clock::Timestamp::at(SystemTime::now()),
        running: false,
        read_only: false,
    };
    let mut lease = b.begin_window_run(&run).unwrap();
    assert!(matches!(s.open().window().unwrap(), WindowState::Waiting(r) if r.argv == run.argv));
    let second = s.open().begin_window_run(&run).unwrap_err();
    assert!(
        matches!(second, Error::Refused(Refusal::RunUnderWay { .. })),
        "{second}"
    );
    lease
        .command_started(crate::clock::Timestamp::at(SystemTime::now()))
        .unwrap();
    assert!(matches!(s.open().window().unwrap(), WindowState::Running(r) if r.running));
    let err = transition::deactivate(s.open().as_ref(), &change(), false).unwrap_err();
    assert!(
        matches!(err, Error::Refused(Refusal::RunUnderWay { .. })),
        "{err}"
    );
    drop(lease);
    assert_eq!(s.open().window().unwrap(), WindowState::Free);
    transition::deactivate(s.open().as_ref(), &change(), false).expect("free again");
}
