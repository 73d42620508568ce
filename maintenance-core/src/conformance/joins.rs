//! Conformance: nested runs joining a live task — only with proof, as runs
//! of their own that keep their own command's policy (I3, "Tasks are
//! capabilities" in DESIGN.md).

// A test suite: a panic is how it reports a failed behaviour.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{
    FreshState, activate_blocked, activate_in_thread, change, join, names, pending, task, token_of,
};
use crate::backend::Completion;
use crate::error::{Error, Refusal};
use crate::mode::Mode;
use crate::policy::{Maintenance, Policy};
use crate::task::{CommandTask, TaskOptions};
use crate::transition::{self};

/// A nested run with the task's secret joins it, even during maintenance,
/// as a run of its own: its own pid, name, argv and policy, the task's
/// standing, `joined` naming the task. The task and its joined runs count
/// as one active session.
pub fn a_nested_run_with_the_secret_joins_as_a_run_of_its_own(site: &dyn Fn() -> FreshState) {
    use crate::policy::Drain;
    let s = site();
    let b = s.open();
    let parent = task(&b, "deploy", Policy::DEFAULT).unwrap();
    let root = parent.record().id.clone();
    let waiter = pending(&b);
    let p = Policy::DEFAULT.drain(Drain::Stop);
    let nested =
        join(&s.open(), "hello", p, &token_of(&parent)).expect("joins instead of being refused");
    assert!(nested.is_joined());
    let r = nested.record();
    assert_ne!(r.id, root, "a record of its own");
    assert_eq!(r.joined.as_deref(), Some(root.as_str()));
    assert_eq!(r.task_id(), root);
    assert_eq!((r.name.as_str(), r.policy), ("hello", p));
    assert_eq!(r.argv, ["hello", "--nested"]);
    assert_eq!(r.pid, std::process::id());
    assert_eq!(r.started_in, Mode::Online, "the task's standing");
    assert!(r.holds_off_offline());
    assert_eq!(nested.token().id(), root, "its children join the task");
    let listed = s.open().tasks().unwrap();
    assert_eq!(
        listed.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["deploy", "hello"]
    );
    assert_eq!(
        transition::status(b.as_ref()).unwrap().active_sessions(),
        1,
        "a task and its joined runs count once"
    );
    // A joined run's child joins with the same token, through any run.
    let deeper = join(&s.open(), "x", Policy::DEFAULT, &nested.token().env_value()).unwrap();
    assert_eq!(deeper.record().joined.as_deref(), Some(root.as_str()));
    drop(deeper);
    drop(nested);
    assert_eq!(names(&b), ["deploy"], "dropping a joined run ends it alone");
    drop(waiter);
}

/// A joined run keeps its own command's single instance: refused (naming
/// the holder) while another task runs that command; but a run of the
/// command its task already runs (`deploy` calling `deploy`) is no second
/// instance.
pub fn a_joined_run_keeps_its_own_commands_single_instance(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let elsewhere = task(&b, "inner", Policy::DEFAULT).unwrap();
    let outer = task(&b, "outer", Policy::DEFAULT).unwrap();
    let join_now = |name: &str| {
        CommandTask::start(
            name,
            TaskOptions::new(s.open())
                .lock_timeout(Duration::ZERO)
                .join(Some(token_of(&outer))),
        )
    };
    let err = join_now("inner").expect_err("another task runs `inner`");
    assert!(
        matches!(&err, Error::Refused(crate::error::Refusal::AlreadyRunning { command, .. }) if command == "inner"),
        "{err}"
    );
    let again = join_now("outer").expect("its own task's command is no second instance");
    assert!(again.is_joined());
    drop(again);
    drop(elsewhere);
    let inner = join_now("inner").expect("free once the other task ended");
    assert!(inner.is_joined());
}

/// A token naming a live task without proof — the id alone (which status
/// prints), a wrong secret, another task's secret — is refused (75), naming
/// the task and the way out; nothing is recorded.
pub fn joining_without_proof_is_refused_naming_the_task(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let parent = task(&b, "deploy", Policy::DEFAULT).unwrap();
    let other = task(&b, "other", Policy::DEFAULT).unwrap();
    let id = parent.record().id.clone();
    let other_secret = token_of(&other)
        .split_once(':')
        .map(|(_, s)| s.to_owned())
        .unwrap();
    for bad in [
        id.clone(),
        format!("{id}:"),
        format!("{id}:{}", "0".repeat(64)),
        format!("{id}:{other_secret}"),
        format!("{id}:not-a-secret"),
    ] {
        let err = join(&s.open(), "sleeper", Policy::DEFAULT, &bad).unwrap_err();
        let Error::Refused(Refusal::JoinUnproven { command, task }) = &err else {
            panic!("{bad}: expected a refusal without proof, got {err}");
        };
        assert_eq!(
            (command.as_str(), task.id.as_str()),
            ("sleeper", id.as_str())
        );
        assert_eq!(err.exit_code(), crate::exit::REFUSED);
        let msg = err.to_string();
        assert!(msg.contains(&format!("task {id}")), "{msg}");
        assert!(msg.contains("not part of that task"), "{msg}");
        assert!(msg.contains("unset MANAGE_TASK"), "{msg}");
        assert!(!msg.contains(&other_secret), "{msg}");
        assert_eq!(
            s.open()
                .membership(&crate::join::JoinToken::parse(&bad))
                .unwrap(),
            crate::backend::Membership::Stranger(parent.record().clone())
        );
    }
    assert_eq!(names(&b), ["deploy", "other"], "nothing recorded");
    assert_eq!(
        s.open()
            .membership(&crate::join::JoinToken::parse(&token_of(&parent)))
            .unwrap(),
        crate::backend::Membership::Member(parent.record().clone())
    );
}

/// A token of an ended task, or of none, is refused as gone (a runner
/// then starts a task of its own, under the usual rules).
pub fn joining_an_ended_task_is_refused(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let t = task(&b, "deploy", Policy::DEFAULT).unwrap();
    let token = token_of(&t);
    let id = t.record().id.clone();
    drop(t);
    for bad in [
        token.as_str(),
        id.as_str(),
        "../../etc/passwd",
        "0-0-0",
        "0-0-0:0000",
        &"f".repeat(10_000),
    ] {
        let err = join(&b, "x", Policy::DEFAULT, bad).unwrap_err();
        assert!(
            matches!(err, Error::Refused(Refusal::JoinGone { .. })),
            "{bad}: {err}"
        );
        assert!(!err.to_string().contains(&token), "never the secret: {err}");
        assert_eq!(
            b.membership(&crate::join::JoinToken::parse(bad)).unwrap(),
            crate::backend::Membership::Gone
        );
    }
}

/// A joined run keeps the task live after every other run of it ended:
/// listed, holding off OFFLINE, and joinable by the secret through it.
pub fn a_joined_run_keeps_the_task_live_after_its_root_ended(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let root = task(&b, "deploy", Policy::DEFAULT).unwrap();
    let token = token_of(&root);
    let id = root.record().id.clone();
    let nested = join(&s.open(), "sleeper", Policy::DEFAULT, &token).unwrap();
    drop(root);
    let live = s.open().tasks().unwrap();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0].id, nested.record().id);
    assert_eq!(live[0].task_id(), id);
    assert!(live[0].holds_off_offline());
    let w = pending(&b);
    let Completion::Held(held) = b.complete_offline(w.as_ref(), None).unwrap() else {
        panic!("went OFFLINE while a joined run lives");
    };
    assert_eq!(held[0].id, nested.record().id);
    let again = join(&s.open(), "hello", Policy::DEFAULT, &token).expect("still joinable");
    assert_eq!(again.record().joined.as_deref(), Some(id.as_str()));
    drop(again);
    drop(nested);
    assert!(matches!(
        b.complete_offline(w.as_ref(), None).unwrap(),
        Completion::Offline(_)
    ));
    assert!(matches!(
        join(&s.open(), "hello", Policy::DEFAULT, &token).unwrap_err(),
        Error::Refused(Refusal::JoinGone { .. })
    ));
}

/// The parent's standing does not cover maintenance `required`: a joined
/// `required` run is refused while ONLINE or PENDING, and admitted while
/// OFFLINE or while the window its task runs in is open (an `offline run`'s
/// command is running); once that window has closed, it is refused.
pub fn a_joined_required_run_needs_a_window(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let p = Policy::DEFAULT.maintenance(Maintenance::Required);
    let parent = task(&b, "deploy", Policy::DEFAULT).unwrap();
    let err = join(&s.open(), "migrate", p, &token_of(&parent)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused(Refusal::MaintenanceRequired {
                mode: Mode::Online,
                ..
            })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("offline run -- migrate"), "{err}");
    let w = pending(&b);
    assert!(join(&s.open(), "migrate", p, &token_of(&parent)).is_err());
    drop(w);
    drop(parent);
    assert_eq!(names(&b), Vec::<String>::new(), "nothing recorded");
    // A task inside the window (`offline run -- deploy`).
    b.force_offline(&change()).unwrap();
    let mut window = b
        .begin_window_run(&crate::backend::WindowRun {
            argv: vec!["deploy".into()],
            pid: std::process::id(),
            by: change().by,
            started_at: crate::clock::Timestamp::at(SystemTime::now()),
            running: false,
            read_only: false,
        })
        .unwrap();
    window
        .command_started(crate::clock::Timestamp::at(SystemTime::now()))
        .unwrap();
    let windowed =
        CommandTask::start("deploy", TaskOptions::new(Arc::clone(&b)).in_window(true)).unwrap();
    let t = join(&s.open(), "migrate", p, &token_of(&windowed)).expect("inside the window");
    assert!(t.record().in_window && !t.record().holds_off_offline());
    drop(t);
    b.go_online(&change()).unwrap();
    let t = join(&s.open(), "migrate", p, &token_of(&windowed)).expect("the window's task");
    drop(t);
    // The window's command ended: a leftover of it joining now is refused.
    drop(window);
    let err = join(&s.open(), "migrate", p, &token_of(&windowed)).unwrap_err();
    assert!(
        matches!(err, Error::Refused(Refusal::MaintenanceRequired { .. })),
        "the window is over: {err}"
    );
    drop(windowed);
    // While OFFLINE, a joined `required` run is admitted.
    let allowed = Policy::DEFAULT.maintenance(Maintenance::Allowed);
    b.force_offline(&change()).unwrap();
    let backup = task(&b, "backup", allowed).unwrap();
    join(&s.open(), "migrate", p, &token_of(&backup)).expect("admitted while OFFLINE");
}

/// A joined run with drain `block` blocks like any other: an activation
/// refuses at once, naming it, and the site never leaves ONLINE.
pub fn a_joined_block_run_refuses_activation(site: &dyn Fn() -> FreshState) {
    use crate::policy::Drain;
    let s = site();
    let b = s.open();
    let parent = task(&b, "deploy", Policy::DEFAULT).unwrap();
    let backup = join(
        &s.open(),
        "backup",
        Policy::DEFAULT.drain(Drain::Block),
        &token_of(&parent),
    )
    .unwrap();
    let before = b.mode().unwrap().record;
    let (tasks, _) = activate_blocked(&b);
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].id, backup.record().id);
    assert_eq!(b.mode().unwrap().record, before, "PENDING never began");
}

/// A `block` run that joins a live task while an activation waits for that
/// task ends the wait refused, naming it; the site goes back ONLINE.
pub fn a_block_run_joining_during_pending_ends_the_wait_refused(site: &dyn Fn() -> FreshState) {
    use crate::policy::Drain;
    let s = site();
    let b = s.open();
    let parent = task(&b, "deploy", Policy::DEFAULT).unwrap();
    let (rx, h) = activate_in_thread(s.open(), Duration::from_secs(60));
    rx.recv().unwrap();
    assert_eq!(b.mode().unwrap().mode, Mode::Pending);
    let backup = join(
        &s.open(),
        "backup",
        Policy::DEFAULT.drain(Drain::Block),
        &token_of(&parent),
    )
    .expect("the task's standing covers PENDING");
    let err = h.join().unwrap().unwrap_err();
    let Error::Refused(Refusal::Blocked { tasks }) = &err else {
        panic!("blocked, got {err}");
    };
    assert_eq!(tasks[0].id, backup.record().id);
    assert_eq!(b.mode().unwrap().mode, Mode::Online);
}

/// The waiter's final look is made under the gate: while a task that
/// holds off OFFLINE is live, completing keeps the site PENDING.
pub fn completing_is_held_while_a_task_that_holds_off_is_live(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let t = task(&s.open(), "job", Policy::DEFAULT).unwrap();
    let w = pending(&b);
    let Completion::Held(held) = b.complete_offline(w.as_ref(), None).unwrap() else {
        panic!("went OFFLINE under a live task");
    };
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].id, t.record().id);
    assert_eq!(s.open().mode().unwrap().mode, Mode::Pending);
    drop(t);
    assert!(matches!(
        b.complete_offline(w.as_ref(), None).unwrap(),
        Completion::Offline(_)
    ));
}
