//! The backend conformance suite: every behaviour a [`Backend`] promises,
//! written once and run against each backend. A new backend passes it before
//! it is used:
//!
//! ```ignore
//! maintenance_core::backend_conformance!(my_backend_site);
//! ```
//!
//! where `my_backend_site()` returns a [`Site`]: a fresh, empty state that
//! can be opened any number of times, as separate processes would open it.

// A test suite: a panic is how it reports a failed behaviour.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::backend::{Backend, Completion, ModeChange, PendingStart, WaiterLease};
use crate::clock::{ManualClock, SharedClock, SystemClock};
use crate::config::Config;
use crate::error::{Error, Refusal};
use crate::mode::{Mode, RetryAfter};
use crate::policy::{Instances, Maintenance, Policy};
use crate::task::{CommandTask, TaskOptions};

/// A fresh, empty state that can be opened many times.
pub struct Site {
    open: Box<dyn Fn(SharedClock) -> Arc<dyn Backend>>,
    _keep: Box<dyn Any>,
}

impl Site {
    /// A site opened by `open`, keeping `keep` (a temporary directory, a
    /// database) alive as long as the site.
    pub fn new(open: impl Fn(SharedClock) -> Arc<dyn Backend> + 'static, keep: impl Any) -> Self {
        Site {
            open: Box::new(open),
            _keep: Box::new(keep),
        }
    }

    /// Opens the state with the real clock, as a new process would.
    pub fn open(&self) -> Arc<dyn Backend> {
        (self.open)(SystemClock::shared())
    }

    /// Opens the state with a given clock.
    pub fn open_with(&self, clock: SharedClock) -> Arc<dyn Backend> {
        (self.open)(clock)
    }
}

/// A file-backend site in a fresh temporary directory.
pub fn file_site() -> Site {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let state = dir.path().join("state");
    Site::new(
        move |clock| {
            let config = Config::with_state_dir(&state);
            Arc::new(
                crate::backend::FileBackend::open(&config, clock).expect("open the file backend"),
            )
        },
        dir,
    )
}

/// Instantiates every conformance test for the backend `$site` makes.
#[macro_export]
macro_rules! backend_conformance {
    ($site:path) => {
        $crate::backend_conformance!(@tests $site;
            fresh_site_is_online,
            a_task_is_live_until_dropped,
            a_task_records_who_what_and_how,
            a_second_single_instance_is_refused_naming_the_first,
            concurrent_instances_all_run,
            instances_are_per_name,
            tasks_are_refused_while_pending_and_offline,
            allowed_tasks_run_inside_the_window_and_do_not_hold_it_off,
            the_override_lets_a_refused_task_in,
            required_tasks_run_only_offline_or_in_the_window,
            a_nested_run_joins_a_live_task,
            joining_an_ended_task_is_refused,
            pending_lapses_when_its_waiter_goes,
            a_second_waiter_keeps_pending_and_the_last_one_out_turns_online,
            completing_takes_the_site_offline,
            going_online_cancels_a_wait,
            offline_again_only_updates_the_message,
            a_task_started_before_pending_is_seen_by_the_waiter,
            mode_times_come_from_the_clock,
            every_write_moves_the_generation,
            hostile_names_are_just_names,
            reaping_never_removes_a_live_task,
        );
    };
    (@tests $site:path; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::$case(&$site);
            }
        )*
    };
}

fn task(backend: &Arc<dyn Backend>, name: &str, policy: Policy) -> Result<CommandTask, Error> {
    CommandTask::start(
        name,
        TaskOptions::new(Arc::clone(backend))
            .policy(policy)
            .lock_timeout(Duration::ZERO),
    )
}

fn change() -> ModeChange {
    ModeChange::by_this_process()
}

fn pending(backend: &Arc<dyn Backend>) -> Box<dyn WaiterLease> {
    match backend.begin_pending(&change()).expect("begin pending") {
        PendingStart::Waiting { waiter, .. } => waiter,
        PendingStart::AlreadyOffline(_) => panic!("the site was already offline"),
    }
}

fn names(backend: &Arc<dyn Backend>) -> Vec<String> {
    backend
        .tasks()
        .expect("list tasks")
        .into_iter()
        .map(|t| t.name)
        .collect()
}

/// A new site is ONLINE, with no task.
pub fn fresh_site_is_online(site: &dyn Fn() -> Site) {
    let b = site().open();
    let view = b.mode().unwrap();
    assert_eq!(view.mode, Mode::Online);
    assert!(view.lapsed.is_none() && view.stray_marker.is_none());
    assert!(b.tasks().unwrap().is_empty());
}

/// A task is listed by every reader while its guard lives, and not after.
pub fn a_task_is_live_until_dropped(site: &dyn Fn() -> Site) {
    let s = site();
    let (a, b) = (s.open(), s.open());
    let t = task(&a, "job", Policy::DEFAULT).unwrap();
    assert_eq!(names(&b), ["job"]);
    assert_eq!(
        names(&b),
        ["job"],
        "a probe does not change what the next reader sees"
    );
    drop(t);
    assert!(names(&b).is_empty());
    assert!(names(&a).is_empty());
}

/// The record holds name, argv, pid, user, host, start, policy and mode.
pub fn a_task_records_who_what_and_how(site: &dyn Fn() -> Site) {
    let s = site();
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let b = s.open_with(clock.clone());
    let policy = Policy::DEFAULT
        .instances(Instances::Concurrent)
        .maintenance(Maintenance::Allowed);
    let _t = CommandTask::start(
        "backup",
        TaskOptions::new(Arc::clone(&b))
            .policy(policy)
            .argv(["backup", "--full"]),
    )
    .unwrap();
    let tasks = s.open().tasks().unwrap();
    let r = &tasks[0];
    let me = crate::identity::Identity::current();
    assert_eq!(r.name, "backup");
    assert_eq!(r.argv, ["backup", "--full"]);
    assert_eq!(
        (r.pid, r.user.as_str(), r.host.as_str()),
        (me.pid, me.user.as_str(), me.host.as_str())
    );
    assert_eq!(r.started_at.system_time(), clock.now_for_tests());
    assert_eq!(r.policy, policy);
    assert_eq!(r.started_in, Mode::Online);
    assert!(r.holds_off_offline());
}

/// A single-instance command runs once; a second run is refused after the
/// lock timeout, naming the first's pid and start.
pub fn a_second_single_instance_is_refused_naming_the_first(site: &dyn Fn() -> Site) {
    let s = site();
    let (a, b) = (s.open(), s.open());
    let first = task(&a, "import", Policy::DEFAULT).unwrap();
    let err = CommandTask::start(
        "import",
        TaskOptions::new(Arc::clone(&b)).lock_timeout(Duration::from_millis(30)),
    )
    .unwrap_err();
    let Error::Refused(Refusal::AlreadyRunning {
        holder: Some(holder),
        waited_ms,
        ..
    }) = &err
    else {
        panic!("expected already running, got {err}");
    };
    assert_eq!(holder.id, first.record().id);
    assert!(*waited_ms >= 30);
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    assert!(
        msg.contains(&first.record().started_at.to_string()),
        "{msg}"
    );
    assert_eq!(err.exit_code(), crate::exit::REFUSED);
    drop(first);
    task(&b, "import", Policy::DEFAULT).expect("free again once the first ends");
}

/// Concurrent commands all run at once.
pub fn concurrent_instances_all_run(site: &dyn Fn() -> Site) {
    let s = site();
    let p = Policy::DEFAULT.instances(Instances::Concurrent);
    let held: Vec<_> = (0..5)
        .map(|_| task(&s.open(), "worker", p).unwrap())
        .collect();
    assert_eq!(s.open().tasks().unwrap().len(), 5);
    drop(held);
    assert!(s.open().tasks().unwrap().is_empty());
}

/// One command's instance lock does not hold another's.
pub fn instances_are_per_name(site: &dyn Fn() -> Site) {
    let s = site();
    let _a = task(&s.open(), "a", Policy::DEFAULT).unwrap();
    let _b = task(&s.open(), "b", Policy::DEFAULT).unwrap();
    assert_eq!(names(&s.open()), ["a", "b"]);
}

/// While PENDING or OFFLINE, a default command is refused, saying since
/// when, by whom and the override.
pub fn tasks_are_refused_while_pending_and_offline(site: &dyn Fn() -> Site) {
    let s = site();
    let b = s.open();
    let waiter = pending(&b);
    let err = task(&s.open(), "job", Policy::DEFAULT).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::Refused(Refusal::Maintenance {
                mode: Mode::Pending,
                ..
            })
        ),
        "{msg}"
    );
    assert!(
        msg.contains("PENDING since") && msg.contains(&change().by),
        "{msg}"
    );
    assert!(msg.contains("--ignore-maintenance"), "{msg}");
    b.force_offline(&change().message(Some("db upgrade".into())))
        .unwrap();
    drop(waiter);
    let err = task(&s.open(), "job", Policy::DEFAULT).unwrap_err();
    assert!(matches!(
        err,
        Error::Refused(Refusal::Maintenance {
            mode: Mode::Offline,
            ..
        })
    ));
    assert!(err.to_string().contains("db upgrade"), "{err}");
    assert!(names(&b).is_empty(), "a refused task leaves nothing behind");
}

/// `allowed` runs in maintenance and, started there, does not hold it off.
pub fn allowed_tasks_run_inside_the_window_and_do_not_hold_it_off(site: &dyn Fn() -> Site) {
    let s = site();
    let b = s.open();
    b.force_offline(&change()).unwrap();
    let t = task(
        &b,
        "backup",
        Policy::DEFAULT.maintenance(Maintenance::Allowed),
    )
    .unwrap();
    assert_eq!(t.record().started_in, Mode::Offline);
    assert!(!t.record().holds_off_offline());
}

/// `--ignore-maintenance` lets a refused command run, as allowed.
pub fn the_override_lets_a_refused_task_in(site: &dyn Fn() -> Site) {
    let s = site();
    let b = s.open();
    b.force_offline(&change()).unwrap();
    let t = CommandTask::start(
        "fix",
        TaskOptions::new(Arc::clone(&b)).ignore_maintenance(true),
    )
    .unwrap();
    assert_eq!(t.record().started_in, Mode::Offline);
}

/// `required` is refused while ONLINE (naming `offline run`), runs OFFLINE.
pub fn required_tasks_run_only_offline_or_in_the_window(site: &dyn Fn() -> Site) {
    let s = site();
    let b = s.open();
    let p = Policy::DEFAULT.maintenance(Maintenance::Required);
    let err = task(&b, "migrate", p).unwrap_err();
    assert!(err.to_string().contains("offline run -- migrate"), "{err}");
    b.force_offline(&change()).unwrap();
    let t = task(&b, "migrate", p).unwrap();
    assert_eq!(t.record().started_in, Mode::Offline);
}

/// A nested run with a live task's token joins it, even during maintenance.
pub fn a_nested_run_joins_a_live_task(site: &dyn Fn() -> Site) {
    let s = site();
    let b = s.open();
    let parent = task(&b, "deploy", Policy::DEFAULT).unwrap();
    let waiter = pending(&b);
    let nested = CommandTask::start(
        "hello",
        TaskOptions::new(s.open()).join(Some(parent.token().to_owned())),
    )
    .expect("joins instead of being refused");
    assert!(nested.is_joined());
    assert_eq!(nested.record().id, parent.record().id);
    assert_eq!(names(&b), ["deploy"], "a joined run adds no task");
    drop(nested);
    assert_eq!(names(&b), ["deploy"], "dropping a joined run ends nothing");
    drop(waiter);
}

/// A token of an ended task, or of none, is refused.
pub fn joining_an_ended_task_is_refused(site: &dyn Fn() -> Site) {
    let s = site();
    let b = s.open();
    let t = task(&b, "deploy", Policy::DEFAULT).unwrap();
    let token = t.token().to_owned();
    drop(t);
    for bad in [
        token.as_str(),
        "../../etc/passwd",
        "0-0-0",
        &"f".repeat(10_000),
    ] {
        let err = CommandTask::start(
            "x",
            TaskOptions::new(Arc::clone(&b)).join(Some(bad.to_owned())),
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::Refused(Refusal::JoinGone { .. })),
            "{bad}: {err}"
        );
    }
}

/// PENDING holds only while a waiter does: a waiter that goes without
/// leaving (a crash) leaves the site ONLINE, and the view says why (I5).
pub fn pending_lapses_when_its_waiter_goes(site: &dyn Fn() -> Site) {
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
pub fn a_second_waiter_keeps_pending_and_the_last_one_out_turns_online(site: &dyn Fn() -> Site) {
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
pub fn completing_takes_the_site_offline(site: &dyn Fn() -> Site) {
    let s = site();
    let (a, b) = (s.open(), s.open());
    let w1 = pending(&a);
    let w2 = pending(&b);
    let Completion::Offline(r) = a.complete_offline(w1.as_ref()).unwrap() else {
        panic!("goes offline");
    };
    assert_eq!(r.mode, Mode::Offline);
    drop(w1);
    assert_eq!(
        b.complete_offline(w2.as_ref()).unwrap(),
        Completion::Offline(r)
    );
    drop(w2);
    let view = s.open().mode().unwrap();
    assert_eq!(view.mode, Mode::Offline);
    assert!(view.stray_marker.is_none(), "{:?}", view.stray_marker);
}

/// Going ONLINE while a process waits cancels its wait, naming who.
pub fn going_online_cancels_a_wait(site: &dyn Fn() -> Site) {
    let s = site();
    let (a, b) = (s.open(), s.open());
    let w = pending(&a);
    let mut other = change();
    other.by = "ops@elsewhere".into();
    b.go_online(&other).unwrap();
    let Completion::Cancelled(r) = a.complete_offline(w.as_ref()).unwrap() else {
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
pub fn offline_again_only_updates_the_message(site: &dyn Fn() -> Site) {
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
pub fn a_task_started_before_pending_is_seen_by_the_waiter(site: &dyn Fn() -> Site) {
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
pub fn mode_times_come_from_the_clock(site: &dyn Fn() -> Site) {
    let s = site();
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000));
    let b = s.open_with(clock.clone());
    let r = b.force_offline(&change()).unwrap();
    assert_eq!(r.since.system_time(), clock.now_for_tests());
}

/// Every write of the record moves its generation forward.
pub fn every_write_moves_the_generation(site: &dyn Fn() -> Site) {
    let s = site();
    let b = s.open();
    let g0 = b.mode().unwrap().record.generation;
    let g1 = b.force_offline(&change()).unwrap().generation;
    let g2 = b.go_online(&change()).unwrap().generation;
    assert!(g0 < g1 && g1 < g2, "{g0} {g1} {g2}");
}

/// Names with separators, dots, NUL or great length are stored and listed as
/// they are, and their instance rule still holds.
pub fn hostile_names_are_just_names(site: &dyn Fn() -> Site) {
    let s = site();
    let long = "n".repeat(10_000);
    for name in ["../../escape", "/etc/passwd", "..", "a\0b", long.as_str()] {
        let b = s.open();
        let t = task(&b, name, Policy::DEFAULT).unwrap();
        assert_eq!(names(&b), [name.to_owned()]);
        assert!(
            task(&b, name, Policy::DEFAULT).is_err(),
            "single instance holds for {name:?}"
        );
        drop(t);
        assert!(names(&b).is_empty());
    }
}

/// Reaping removes only the dead.
pub fn reaping_never_removes_a_live_task(site: &dyn Fn() -> Site) {
    let s = site();
    let b = s.open();
    let t = task(&b, "job", Policy::DEFAULT).unwrap();
    b.reap().unwrap();
    assert_eq!(names(&s.open()), ["job"]);
    drop(t);
    b.reap().unwrap();
    assert!(names(&b).is_empty());
}

impl ManualClock {
    /// The clock's time (the trait method, without importing the trait).
    pub fn now_for_tests(&self) -> SystemTime {
        crate::clock::Clock::now(self)
    }
}

#[cfg(test)]
mod file_backend {
    crate::backend_conformance!(crate::conformance::file_site);
}
