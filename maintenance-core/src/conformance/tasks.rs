//! Conformance: tasks — live exactly while their guard lives, one instance
//! per name unless concurrent, admitted by the mode and their policy (I1, I2),
//! hostile names kept inside the state (I4).

// A test suite: a panic is how it reports a failed behaviour.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{FreshState, change, eventually, join, names, pending, task, token_of};
use crate::clock::ManualClock;
use crate::error::{Error, Refusal};
use crate::mode::Mode;
use crate::policy::{Instances, Maintenance, Policy};
use crate::task::{CommandTask, TaskOptions};

/// A task is listed by every reader while its guard lives, and not after.
pub fn a_task_is_live_until_dropped(site: &dyn Fn() -> FreshState) {
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

/// A task handed to a child lives while the child holds what it inherited;
/// taken back from it (the child ended, leaving nothing behind), the task
/// ends when its guard drops, for every reader at once, even while a copy
/// of the child's descriptors is still open (its keeper, closing).
pub fn a_task_taken_back_from_its_child_ends_with_its_guard(site: &dyn Fn() -> FreshState) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let s = site();
    let (a, b) = (s.open(), s.open());
    let copies = |t: &mut CommandTask| -> Vec<OwnedFd> {
        let handoff = t.handoff();
        handoff
            .fds
            .iter()
            // SAFETY: a duplicate of a descriptor the task owns, owned here.
            .map(|&fd| unsafe { OwnedFd::from_raw_fd(libc::dup(fd)) })
            .collect()
    };
    // Handed over, its guard dropped: the copies hold it.
    let mut t = task(&a, "job", Policy::DEFAULT).unwrap();
    let held = copies(&mut t);
    assert!(held.iter().all(|fd| fd.as_raw_fd() >= 0));
    drop(t);
    if !held.is_empty() {
        assert_eq!(names(&b), ["job"], "the child's copies hold the task (I3)");
    }
    drop(held);
    // Freed when the last copy closes: at once on files, once the server
    // has read the end on PostgreSQL.
    eventually("the task gone with every copy", || names(&b).is_empty());
    // Taken back: gone with its guard, the copies still open.
    let mut t = task(&a, "job", Policy::DEFAULT).unwrap();
    let open = copies(&mut t);
    t.take_back_from_child();
    drop(t);
    assert!(names(&b).is_empty(), "the task outlived its guard");
    assert!(
        task(&b, "job", Policy::DEFAULT).is_ok(),
        "its single instance is free"
    );
    drop(open);
}

/// The record holds name, argv, pid, user, host, start, policy and mode.
pub fn a_task_records_who_what_and_how(site: &dyn Fn() -> FreshState) {
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
    s.assert_time_is(r.started_at.system_time(), clock.now_for_tests());
    assert_eq!(r.policy, policy);
    assert_eq!(r.started_in, Mode::Online);
    assert!(r.holds_off_offline());
}

/// A single-instance command runs once; a second run is refused after the
/// lock timeout, naming the first's pid and start.
pub fn a_second_single_instance_is_refused_naming_the_first(site: &dyn Fn() -> FreshState) {
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
pub fn concurrent_instances_all_run(site: &dyn Fn() -> FreshState) {
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
pub fn instances_are_per_name(site: &dyn Fn() -> FreshState) {
    let s = site();
    let _a = task(&s.open(), "a", Policy::DEFAULT).unwrap();
    let _b = task(&s.open(), "b", Policy::DEFAULT).unwrap();
    assert_eq!(names(&s.open()), ["a", "b"]);
}

/// While PENDING or OFFLINE, a default command is refused, saying since
/// when, by whom and the override.
pub fn tasks_are_refused_while_pending_and_offline(site: &dyn Fn() -> FreshState) {
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
pub fn allowed_tasks_run_inside_the_window_and_do_not_hold_it_off(site: &dyn Fn() -> FreshState) {
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
pub fn the_override_lets_a_refused_task_in(site: &dyn Fn() -> FreshState) {
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
pub fn required_tasks_run_only_offline_or_in_the_window(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let p = Policy::DEFAULT.maintenance(Maintenance::Required);
    let err = task(&b, "migrate", p).unwrap_err();
    assert!(err.to_string().contains("offline run -- migrate"), "{err}");
    b.force_offline(&change()).unwrap();
    let t = task(&b, "migrate", p).unwrap();
    assert_eq!(t.record().started_in, Mode::Offline);
}

/// The processes recorded for a task at spawn (an external command's keeper
/// and the command) name who holds it while they live on this host — the
/// keeper's live children — and, once none can be found, nobody by pid
/// rather than a runner's pid that may be long dead.
pub fn holders_are_the_processes_recorded_at_spawn(site: &dyn Fn() -> FreshState) {
    use crate::process::{ProcId, Processes};
    let s = site();
    let b = s.open();
    let mut t = task(&b, "external", Policy::DEFAULT).unwrap();
    // This process stands for the keeper; its child, for the command.
    let mut child = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep");
    let processes = Processes {
        keeper: ProcId::of(std::process::id()).expect("this process"),
        command: ProcId::of(child.id()).expect("the child"),
    };
    t.record_processes(&processes).unwrap();
    let listed = b.tasks().unwrap();
    assert_eq!(listed[0].processes, Some(processes));
    assert_eq!(listed[0].pids(), [child.id()], "{listed:?}");
    assert!(listed[0].holders[0].command);
    let _ = child.kill();
    let _ = child.wait();
    let listed = b.tasks().unwrap();
    assert_eq!(
        listed.len(),
        1,
        "the task itself is live while its lock is held"
    );
    assert_eq!(listed[0].pids(), Vec::<u32>::new(), "not the runner's pid");
    assert!(
        listed[0].held_by().contains("not known by pid"),
        "{}",
        listed[0].held_by()
    );
    drop(t);
    assert_eq!(names(&b), Vec::<String>::new());
}

/// No record handed out holds the task's secret, nor its hash.
pub fn the_secret_is_in_no_record(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let parent = task(&b, "deploy", Policy::DEFAULT).unwrap();
    let nested = join(&s.open(), "hello", Policy::DEFAULT, &token_of(&parent)).unwrap();
    let (_, secret) = token_of(&parent)
        .split_once(':')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .unwrap();
    let hash = crate::digest::sha256_hex(secret.as_bytes());
    let listed = serde_json::to_string(&s.open().tasks().unwrap()).unwrap();
    let own = serde_json::to_string(&[parent.record(), nested.record()]).unwrap();
    let debug = format!("{parent:?} {nested:?} {:?}", parent.token());
    for text in [&listed, &own, &debug] {
        assert!(!text.contains(&secret), "the secret leaks: {text}");
        assert!(!text.contains(&hash), "its hash leaks: {text}");
    }
}

/// Names with separators, dots, NUL or great length are stored and listed as
/// they are, and their instance rule still holds.
pub fn hostile_names_are_just_names(site: &dyn Fn() -> FreshState) {
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
pub fn reaping_never_removes_a_live_task(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let t = task(&b, "job", Policy::DEFAULT).unwrap();
    b.reap().unwrap();
    assert_eq!(names(&s.open()), ["job"]);
    drop(t);
    b.reap().unwrap();
    assert!(names(&b).is_empty());
}
