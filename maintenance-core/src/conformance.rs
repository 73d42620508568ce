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
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::backend::{Backend, Completion, ModeChange, PendingStart, WaiterLease};
use crate::clock::{ManualClock, SharedClock, SystemClock};
use crate::config::Config;
use crate::error::{Error, Refusal};
use crate::mode::{Mode, RetryAfter};
use crate::offline::{self, Activation, Outcome};
use crate::policy::{Instances, Maintenance, Policy};
use crate::session::SessionKey;
use crate::task::{CommandTask, TaskOptions};

/// A fresh, empty state that can be opened many times.
pub struct Site {
    open: Box<dyn Fn(SharedClock) -> Arc<dyn Backend>>,
    marker: Option<PathBuf>,
    _keep: Box<dyn Any>,
}

impl Site {
    /// A site opened by `open`, keeping `keep` (a temporary directory, a
    /// database) alive as long as the site.
    pub fn new(open: impl Fn(SharedClock) -> Arc<dyn Backend> + 'static, keep: impl Any) -> Self {
        Site {
            open: Box::new(open),
            marker: None,
            _keep: Box::new(keep),
        }
    }

    /// The same site, whose backend keeps the web-server marker at `path`
    /// on this host: the marker cases check it.
    pub fn with_marker(mut self, path: impl Into<PathBuf>) -> Self {
        self.marker = Some(path.into());
        self
    }

    /// Whether the web-server marker exists; `None` for a site without one.
    pub fn marker_exists(&self) -> Option<bool> {
        self.marker
            .as_ref()
            .map(|p| std::fs::symlink_metadata(p).is_ok())
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
    let marker = state.join(crate::backend::file::MARKER);
    Site::new(
        move |clock| {
            let config = Config::with_state_dir(&state);
            Arc::new(
                crate::backend::FileBackend::open(&config, clock).expect("open the file backend"),
            )
        },
        dir,
    )
    .with_marker(marker)
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
            a_nested_run_with_the_secret_joins_as_a_run_of_its_own,
            joining_without_proof_is_refused_naming_the_task,
            joining_an_ended_task_is_refused,
            a_joined_run_keeps_the_task_live_after_its_root_ended,
            a_joined_required_run_needs_a_window,
            a_joined_block_run_refuses_activation,
            a_joined_run_keeps_its_own_commands_single_instance,
            holders_are_the_processes_recorded_at_spawn,
            a_block_run_joining_during_pending_ends_the_wait_refused,
            completing_is_held_while_a_task_that_holds_off_is_live,
            the_secret_is_in_no_record,
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
            a_touched_session_is_live_until_it_expires,
            logout_ends_a_session_at_once,
            touches_are_never_refused,
            hostile_session_ids_are_only_hashed,
            many_sessions_are_counted_once_each,
            activate_with_nothing_live_goes_offline_after_the_settle_time,
            activate_waits_for_a_task_and_goes_offline_when_it_ends,
            activate_waits_for_a_session_until_logout,
            a_timeout_goes_back_online_and_names_what_was_live,
            an_interruption_goes_back_online,
            deactivate_cancels_a_waiting_activation,
            a_second_activation_joins_the_first,
            force_goes_offline_with_what_is_live,
            grace_lets_sessions_go_but_not_commands,
            a_session_touched_during_the_settle_time_is_counted,
            tasks_started_inside_the_window_do_not_hold_it_off,
            status_counts_sessions_and_tasks,
            an_offline_run_holds_the_window_alone_and_says_when_its_command_runs,
            a_blocking_task_refuses_activation_and_the_site_stays_online,
            the_marker_agrees_with_the_record_after_every_change,
            a_stray_marker_is_put_right_by_the_next_look_or_task,
            a_wall_clock_step_neither_expires_nor_removes_sessions,
            a_reboot_cuts_no_one_off_and_ends_the_earlier_boots_sessions_within_a_timeout,
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

fn join(
    backend: &Arc<dyn Backend>,
    name: &str,
    policy: Policy,
    token: &str,
) -> Result<CommandTask, Error> {
    CommandTask::start(
        name,
        TaskOptions::new(Arc::clone(backend))
            .policy(policy)
            .argv([name, "--nested"])
            .join(Some(token.to_owned())),
    )
}

/// The token a child of `t` gets, `<id>:<secret>`.
fn token_of(t: &CommandTask) -> String {
    t.token().env_value()
}

/// A nested run with the task's secret joins it, even during maintenance,
/// as a run of its own: its own pid, name, argv and policy, the task's
/// standing, `joined` naming the task. The task and its joined runs count
/// as one active session.
pub fn a_nested_run_with_the_secret_joins_as_a_run_of_its_own(site: &dyn Fn() -> Site) {
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
        offline::status(b.as_ref()).unwrap().active_sessions(),
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
pub fn a_joined_run_keeps_its_own_commands_single_instance(site: &dyn Fn() -> Site) {
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

/// The processes recorded for a task at spawn (an external command's keeper
/// and the command) name who holds it while they live on this host — the
/// keeper's live children — and, once none can be found, nobody by pid
/// rather than a runner's pid that may be long dead.
pub fn holders_are_the_processes_recorded_at_spawn(site: &dyn Fn() -> Site) {
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

/// A token naming a live task without proof — the id alone (which status
/// prints), a wrong secret, another task's secret — is refused (75), naming
/// the task and the way out; nothing is recorded.
pub fn joining_without_proof_is_refused_naming_the_task(site: &dyn Fn() -> Site) {
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
                .membership(&crate::task::JoinToken::parse(&bad))
                .unwrap(),
            crate::task::Membership::Stranger(parent.record().clone())
        );
    }
    assert_eq!(names(&b), ["deploy", "other"], "nothing recorded");
    assert_eq!(
        s.open()
            .membership(&crate::task::JoinToken::parse(&token_of(&parent)))
            .unwrap(),
        crate::task::Membership::Member(parent.record().clone())
    );
}

/// A token of an ended task, or of none, is refused as gone (a runner
/// then starts a task of its own, under the usual rules).
pub fn joining_an_ended_task_is_refused(site: &dyn Fn() -> Site) {
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
            b.membership(&crate::task::JoinToken::parse(bad)).unwrap(),
            crate::task::Membership::Gone
        );
    }
}

/// A joined run keeps the task live after every other run of it ended:
/// listed, holding off OFFLINE, and joinable by the secret through it.
pub fn a_joined_run_keeps_the_task_live_after_its_root_ended(site: &dyn Fn() -> Site) {
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
    let Completion::Held(held) = b.complete_offline(w.as_ref()).unwrap() else {
        panic!("went OFFLINE while a joined run lives");
    };
    assert_eq!(held[0].id, nested.record().id);
    let again = join(&s.open(), "hello", Policy::DEFAULT, &token).expect("still joinable");
    assert_eq!(again.record().joined.as_deref(), Some(id.as_str()));
    drop(again);
    drop(nested);
    assert!(matches!(
        b.complete_offline(w.as_ref()).unwrap(),
        Completion::Offline(_)
    ));
    assert!(matches!(
        join(&s.open(), "hello", Policy::DEFAULT, &token).unwrap_err(),
        Error::Refused(Refusal::JoinGone { .. })
    ));
}

/// The parent's standing does not cover maintenance `required`: a joined
/// `required` run is refused while ONLINE or PENDING, and admitted while
/// OFFLINE or when the task runs inside a window.
pub fn a_joined_required_run_needs_a_window(site: &dyn Fn() -> Site) {
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
    // A task inside the window (`offline run -- deploy`), while that
    // window's command runs.
    b.force_offline(&change()).unwrap();
    let run = crate::backend::WindowRun {
        argv: vec!["deploy".into()],
        pid: std::process::id(),
        by: change().by,
        started_at: crate::clock::Timestamp::at(SystemTime::now()),
        running: false,
    };
    let mut window = b.begin_window_run(&run).unwrap();
    window
        .command_started(crate::clock::Timestamp::at(SystemTime::now()))
        .unwrap();
    let windowed =
        CommandTask::start("deploy", TaskOptions::new(Arc::clone(&b)).in_window(true)).unwrap();
    let t = join(&s.open(), "migrate", p, &token_of(&windowed)).expect("inside the window");
    assert!(t.record().in_window && !t.record().holds_off_offline());
    drop(t);
    // ONLINE while the window's command still runs (`off --force`): its
    // task is still inside the window.
    b.go_online(&change()).unwrap();
    let t = join(&s.open(), "migrate", p, &token_of(&windowed)).expect("the window's task");
    drop(t);
    // The window closed: a leftover of its task cannot run `required`.
    drop(window);
    assert!(
        join(&s.open(), "migrate", p, &token_of(&windowed)).is_err(),
        "the window is over"
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
pub fn a_joined_block_run_refuses_activation(site: &dyn Fn() -> Site) {
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
    let err = offline::activate(
        b.as_ref(),
        &activation(Duration::from_secs(30)),
        &never,
        &mut |_| {},
    )
    .unwrap_err();
    let Error::Refused(Refusal::Blocked { tasks }) = &err else {
        panic!("blocked, got {err}");
    };
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].id, backup.record().id);
    assert_eq!(b.mode().unwrap().record, before, "PENDING never began");
}

/// A `block` run that joins a live task while an activation waits for that
/// task ends the wait refused, naming it; the site goes back ONLINE.
pub fn a_block_run_joining_during_pending_ends_the_wait_refused(site: &dyn Fn() -> Site) {
    use crate::policy::Drain;
    let s = site();
    let b = s.open();
    let parent = task(&b, "deploy", Policy::DEFAULT).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let wb = s.open();
    let h = std::thread::spawn(move || {
        let mut sent = false;
        offline::activate(
            wb.as_ref(),
            &activation(Duration::from_secs(60)),
            &never,
            &mut |_| {
                if !sent {
                    sent = true;
                    tx.send(()).unwrap();
                }
            },
        )
    });
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
pub fn completing_is_held_while_a_task_that_holds_off_is_live(site: &dyn Fn() -> Site) {
    let s = site();
    let b = s.open();
    let t = task(&s.open(), "job", Policy::DEFAULT).unwrap();
    let w = pending(&b);
    let Completion::Held(held) = b.complete_offline(w.as_ref()).unwrap() else {
        panic!("went OFFLINE under a live task");
    };
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].id, t.record().id);
    assert_eq!(s.open().mode().unwrap().mode, Mode::Pending);
    drop(t);
    assert!(matches!(
        b.complete_offline(w.as_ref()).unwrap(),
        Completion::Offline(_)
    ));
}

/// No record handed out holds the task's secret, nor its hash.
pub fn the_secret_is_in_no_record(site: &dyn Fn() -> Site) {
    use sha2::Digest;
    let s = site();
    let b = s.open();
    let parent = task(&b, "deploy", Policy::DEFAULT).unwrap();
    let nested = join(&s.open(), "hello", Policy::DEFAULT, &token_of(&parent)).unwrap();
    let (_, secret) = token_of(&parent)
        .split_once(':')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .unwrap();
    let hash = crate::random::to_hex(&sha2::Sha256::digest(secret.as_bytes()));
    let listed = serde_json::to_string(&s.open().tasks().unwrap()).unwrap();
    let own = serde_json::to_string(&[parent.record(), nested.record()]).unwrap();
    let debug = format!("{parent:?} {nested:?} {:?}", parent.token());
    for text in [&listed, &own, &debug] {
        assert!(!text.contains(&secret), "the secret leaks: {text}");
        assert!(!text.contains(&hash), "its hash leaks: {text}");
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

fn key(id: &str) -> SessionKey {
    SessionKey::of(id.as_bytes())
}

fn activation(timeout: Duration) -> Activation {
    Activation {
        change: change(),
        timeout,
        grace: None,
        settle: Duration::from_millis(20),
    }
}

fn never() -> bool {
    false
}

fn run_activate(b: &Arc<dyn Backend>, a: &Activation) -> Outcome {
    offline::activate(b.as_ref(), a, &never, &mut |_| {}).expect("activate")
}

/// A session counts from its touch until the timeout has passed (a backend
/// may round expiry up by a few seconds, never down).
pub fn a_touched_session_is_live_until_it_expires(site: &dyn Fn() -> Site) {
    let s = site();
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_003));
    let b = s.open_with(clock.clone());
    let timeout = b.session_timeout();
    b.touch_session(&key("alice")).unwrap();
    let e = b.session(&key("alice")).unwrap().expect("live");
    assert!(e.expires_at.system_time() >= clock.now_for_tests() + timeout);
    assert_eq!(b.sessions().unwrap().len(), 1);
    clock.advance(timeout - Duration::from_secs(1));
    assert!(
        b.session(&key("alice")).unwrap().is_some(),
        "still live just before the timeout"
    );
    assert_eq!(b.sessions().unwrap().len(), 1);
    clock.advance(Duration::from_secs(11));
    assert!(b.session(&key("alice")).unwrap().is_none(), "expired");
    assert!(b.sessions().unwrap().is_empty());
    b.touch_session(&key("alice")).unwrap();
    assert_eq!(b.sessions().unwrap().len(), 1, "a new touch revives it");
}

/// Logout ends a session at once, for every reader.
pub fn logout_ends_a_session_at_once(site: &dyn Fn() -> Site) {
    let s = site();
    let b = s.open();
    b.touch_session(&key("alice")).unwrap();
    b.touch_session(&key("bob")).unwrap();
    s.open().end_session(&key("alice")).unwrap();
    let live: Vec<_> = b.sessions().unwrap().into_iter().map(|e| e.key).collect();
    assert_eq!(live, [key("bob")]);
    assert!(s.open().session(&key("alice")).unwrap().is_none());
    b.end_session(&key("nobody"))
        .expect("ending an unknown session is fine");
}

/// Touches are recorded in every mode (I2: the layer decides, the backend
/// counts).
pub fn touches_are_never_refused(site: &dyn Fn() -> Site) {
    let s = site();
    let b = s.open();
    let w = pending(&b);
    b.touch_session(&key("during-pending")).unwrap();
    b.force_offline(&change()).unwrap();
    b.touch_session(&key("during-offline")).unwrap();
    assert_eq!(b.sessions().unwrap().len(), 2);
    drop(w);
}

/// Any id — separators, dots, NUL, 10 kB — is only ever a hash.
pub fn hostile_session_ids_are_only_hashed(site: &dyn Fn() -> Site) {
    let s = site();
    let b = s.open();
    let long = "x".repeat(10_000);
    let ids = ["../../etc/passwd", "/", "..", "a\0b", "\0", long.as_str()];
    for id in ids {
        b.touch_session(&SessionKey::of(id.as_bytes())).unwrap();
    }
    assert_eq!(b.sessions().unwrap().len(), ids.len());
    for id in ids {
        assert!(b.session(&SessionKey::of(id.as_bytes())).unwrap().is_some());
        b.end_session(&SessionKey::of(id.as_bytes())).unwrap();
    }
    assert!(b.sessions().unwrap().is_empty());
}

/// A session touched many times, by many readers, counts once.
pub fn many_sessions_are_counted_once_each(site: &dyn Fn() -> Site) {
    let s = site();
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000));
    let b = s.open_with(clock.clone());
    for round in 0..3 {
        for i in 0..50 {
            b.touch_session(&key(&format!("user-{i}"))).unwrap();
        }
        clock.advance(Duration::from_secs(7 * (round + 1)));
    }
    assert_eq!(b.sessions().unwrap().len(), 50);
    assert_eq!(s.open_with(clock.clone()).sessions().unwrap().len(), 50);
}

/// With nothing live, activation goes OFFLINE once the settle time passed.
pub fn activate_with_nothing_live_goes_offline_after_the_settle_time(site: &dyn Fn() -> Site) {
    let s = site();
    let b = s.open();
    let mut a = activation(Duration::from_secs(30));
    a.settle = Duration::from_millis(150);
    let mut looks = 0;
    let out = offline::activate(b.as_ref(), &a, &never, &mut |_| looks += 1).unwrap();
    let Outcome::Offline {
        record,
        live,
        joined,
        already,
    } = out
    else {
        panic!("offline, got {out:?}");
    };
    assert_eq!(record.mode, Mode::Offline);
    assert!(!joined && !already && live.active() == 0);
    assert!(looks >= 1, "it waited out the settle time");
    let view = s.open().mode().unwrap();
    assert_eq!(view.mode, Mode::Offline);
    let pending_since = view.record.since.system_time();
    assert!(pending_since >= SystemTime::UNIX_EPOCH);
}

/// A task started while ONLINE holds off OFFLINE until it ends.
pub fn activate_waits_for_a_task_and_goes_offline_when_it_ends(site: &dyn Fn() -> Site) {
    let s = site();
    let b = s.open();
    let t = task(&s.open(), "job", Policy::DEFAULT).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter_backend = s.open();
    let h = std::thread::spawn(move || {
        let mut first = true;
        offline::activate(
            waiter_backend.as_ref(),
            &activation(Duration::from_secs(30)),
            &never,
            &mut |p| {
                if first {
                    first = false;
                    let names: Vec<String> =
                        p.holding.tasks.iter().map(|t| t.name.clone()).collect();
                    tx.send(names).unwrap();
                }
            },
        )
        .unwrap()
    });
    assert_eq!(rx.recv().unwrap(), ["job"], "the waiter names the task");
    assert_eq!(b.mode().unwrap().mode, Mode::Pending);
    drop(t);
    let out = h.join().unwrap();
    assert!(matches!(out, Outcome::Offline { .. }), "{out:?}");
    assert_eq!(b.mode().unwrap().mode, Mode::Offline);
}

/// A live session holds off OFFLINE until it logs out.
pub fn activate_waits_for_a_session_until_logout(site: &dyn Fn() -> Site) {
    let s = site();
    let b = s.open();
    b.touch_session(&key("alice")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let wb = s.open();
    let h = std::thread::spawn(move || {
        let mut sent = false;
        offline::activate(
            wb.as_ref(),
            &activation(Duration::from_secs(30)),
            &never,
            &mut |p| {
                if !sent {
                    sent = true;
                    tx.send(p.holding.sessions.len()).unwrap();
                }
            },
        )
        .unwrap()
    });
    assert_eq!(rx.recv().unwrap(), 1);
    b.end_session(&key("alice")).unwrap();
    assert!(matches!(h.join().unwrap(), Outcome::Offline { .. }));
}

/// A timeout goes back ONLINE and names what still held it off.
pub fn a_timeout_goes_back_online_and_names_what_was_live(site: &dyn Fn() -> Site) {
    let s = site();
    let b = s.open();
    let _t = task(&s.open(), "import", Policy::DEFAULT).unwrap();
    b.touch_session(&key("alice")).unwrap();
    let out = run_activate(&b, &activation(Duration::from_millis(100)));
    let Outcome::TimedOut { live, record } = out else {
        panic!("timed out, got {out:?}");
    };
    assert_eq!(record.mode, Mode::Online);
    assert_eq!(live.tasks.len(), 1);
    assert_eq!(live.sessions.len(), 1);
    let lines = live.describe(SystemTime::now());
    assert!(lines[0].starts_with("command `import` (pid "), "{lines:?}");
    assert!(
        lines[0].contains(&crate::identity::Identity::current().user_at_host()),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("1 web session (the last expires in "),
        "{lines:?}"
    );
    let view = s.open().mode().unwrap();
    assert_eq!(view.mode, Mode::Online);
    assert!(view.lapsed.is_none(), "a clean leave is not a lapse");
}

/// An interruption leaves the wait and the site goes back ONLINE.
pub fn an_interruption_goes_back_online(site: &dyn Fn() -> Site) {
    let s = site();
    let b = s.open();
    let _t = task(&s.open(), "import", Policy::DEFAULT).unwrap();
    let calls = std::cell::Cell::new(0);
    let stop = || {
        calls.set(calls.get() + 1);
        calls.get() > 2
    };
    let out = offline::activate(
        b.as_ref(),
        &activation(Duration::from_secs(30)),
        &stop,
        &mut |_| {},
    )
    .unwrap();
    assert!(
        matches!(out, Outcome::Interrupted { ref record, .. } if record.mode == Mode::Online),
        "{out:?}"
    );
    assert_eq!(s.open().mode().unwrap().mode, Mode::Online);
}

/// Going ONLINE from another process cancels the wait, naming who.
pub fn deactivate_cancels_a_waiting_activation(site: &dyn Fn() -> Site) {
    let s = site();
    let _t = task(&s.open(), "import", Policy::DEFAULT).unwrap();
    let wb = s.open();
    let h = std::thread::spawn(move || run_activate(&wb, &activation(Duration::from_secs(30))));
    let b = s.open();
    while b.mode().unwrap().mode != Mode::Pending {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut ops = change();
    ops.by = "ops@elsewhere".into();
    offline::deactivate(b.as_ref(), &ops, false).unwrap();
    let out = h.join().unwrap();
    assert!(
        matches!(&out, Outcome::Cancelled { by, .. } if by == "ops@elsewhere"),
        "{out:?}"
    );
    assert_eq!(b.mode().unwrap().mode, Mode::Online);
}

/// A second activation joins the first (updating the message) and both
/// return OFFLINE when the holder ends.
pub fn a_second_activation_joins_the_first(site: &dyn Fn() -> Site) {
    let s = site();
    let t = task(&s.open(), "import", Policy::DEFAULT).unwrap();
    let b = s.open();
    let b1 = s.open();
    let h1 = std::thread::spawn(move || run_activate(&b1, &activation(Duration::from_secs(30))));
    while b.mode().unwrap().mode != Mode::Pending {
        std::thread::sleep(Duration::from_millis(5));
    }
    let b2 = s.open();
    let h2 = std::thread::spawn(move || {
        let mut a = activation(Duration::from_secs(30));
        a.change = a.change.message(Some("upgrading".into()));
        run_activate(&b2, &a)
    });
    while b.mode().unwrap().record.message.is_none() {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(t);
    let (o1, o2) = (h1.join().unwrap(), h2.join().unwrap());
    assert!(
        matches!(o1, Outcome::Offline { joined: false, .. }),
        "{o1:?}"
    );
    assert!(
        matches!(o2, Outcome::Offline { joined: true, .. }),
        "{o2:?}"
    );
    let r = b.mode().unwrap().record;
    assert_eq!(
        (r.mode, r.message.as_deref()),
        (Mode::Offline, Some("upgrading"))
    );
}

/// `--force`: OFFLINE at once, reporting what is still live.
pub fn force_goes_offline_with_what_is_live(site: &dyn Fn() -> Site) {
    let s = site();
    let b = s.open();
    let _t = task(&s.open(), "import", Policy::DEFAULT).unwrap();
    b.touch_session(&key("alice")).unwrap();
    let (record, live) = offline::force(b.as_ref(), &change()).unwrap();
    assert_eq!(record.mode, Mode::Offline);
    assert_eq!(live.active(), 2);
}

/// After the grace period sessions stop holding it off; commands do not.
pub fn grace_lets_sessions_go_but_not_commands(site: &dyn Fn() -> Site) {
    let s = site();
    let b = s.open();
    b.touch_session(&key("alice")).unwrap();
    let mut a = activation(Duration::from_secs(30));
    a.grace = Some(Duration::from_millis(100));
    let out = run_activate(&b, &a);
    let Outcome::Offline { live, .. } = out else {
        panic!("offline, got {out:?}")
    };
    assert_eq!(live.sessions.len(), 1, "the session was let go, still live");
    b.go_online(&change()).unwrap();
    let _t = task(&s.open(), "import", Policy::DEFAULT).unwrap();
    let mut a = activation(Duration::from_millis(400));
    a.grace = Some(Duration::ZERO);
    assert!(
        matches!(run_activate(&b, &a), Outcome::TimedOut { .. }),
        "a command still holds"
    );
}

/// I2: a session a stale layer lets in during the settle time is counted.
pub fn a_session_touched_during_the_settle_time_is_counted(site: &dyn Fn() -> Site) {
    let s = site();
    let b = s.open();
    let wb = s.open();
    let h = std::thread::spawn(move || {
        let mut a = activation(Duration::from_millis(1500));
        a.settle = Duration::from_millis(300);
        run_activate(&wb, &a)
    });
    while b.mode().unwrap().mode != Mode::Pending {
        std::thread::sleep(Duration::from_millis(2));
    }
    // A layer whose snapshot still says ONLINE lets a new user in.
    b.touch_session(&key("late")).unwrap();
    let out = h.join().unwrap();
    assert!(
        matches!(out, Outcome::TimedOut { ref live, .. } if live.sessions.len() == 1),
        "{out:?}"
    );
}

/// Tasks admitted inside the window (allowed, override) do not hold it off.
pub fn tasks_started_inside_the_window_do_not_hold_it_off(site: &dyn Fn() -> Site) {
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

/// Status: the mode, and sessions plus tasks as the seed counts them.
pub fn status_counts_sessions_and_tasks(site: &dyn Fn() -> Site) {
    let s = site();
    let b = s.open();
    let _t = task(&s.open(), "import", Policy::DEFAULT).unwrap();
    for i in 0..3 {
        b.touch_session(&key(&format!("u{i}"))).unwrap();
    }
    let st = offline::status(b.as_ref()).unwrap();
    assert_eq!(st.view.mode, Mode::Online);
    assert_eq!(st.active_sessions(), 4);
}

/// The window of `offline run`: one holder at a time, waiting then running,
/// free again when its lease drops.
pub fn an_offline_run_holds_the_window_alone_and_says_when_its_command_runs(
    site: &dyn Fn() -> Site,
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
    let err = offline::deactivate(s.open().as_ref(), &change(), false).unwrap_err();
    assert!(
        matches!(err, Error::Refused(Refusal::RunUnderWay { .. })),
        "{err}"
    );
    drop(lease);
    assert_eq!(s.open().window().unwrap(), WindowState::Free);
    offline::deactivate(s.open().as_ref(), &change(), false).expect("free again");
}

/// A task with drain `block` refuses an activation at once; nothing waits
/// and the site never leaves ONLINE.
pub fn a_blocking_task_refuses_activation_and_the_site_stays_online(site: &dyn Fn() -> Site) {
    use crate::policy::Drain;
    let s = site();
    let b = s.open();
    let t = task(&s.open(), "backup", Policy::DEFAULT.drain(Drain::Block)).unwrap();
    let before = b.mode().unwrap().record;
    let err = offline::activate(
        b.as_ref(),
        &activation(Duration::from_secs(30)),
        &never,
        &mut |_| {},
    )
    .unwrap_err();
    let Error::Refused(Refusal::Blocked { tasks }) = &err else {
        panic!("blocked, got {err}");
    };
    assert_eq!(tasks[0].id, t.record().id);
    assert!(err.to_string().contains("`backup`"), "{err}");
    let view = b.mode().unwrap();
    assert_eq!(view.mode, Mode::Online);
    assert_eq!(view.record, before, "PENDING never began");
    drop(t);
    assert!(matches!(
        run_activate(&b, &activation(Duration::from_secs(30))),
        Outcome::Offline { .. }
    ));
}

/// After every mode change the web-server marker exists exactly while the
/// record it returned says OFFLINE (I5). Sites without a marker skip this.
pub fn the_marker_agrees_with_the_record_after_every_change(site: &dyn Fn() -> Site) {
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
    let Completion::Offline(r) = b.complete_offline(waiter.as_ref()).unwrap() else {
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
pub fn a_stray_marker_is_put_right_by_the_next_look_or_task(site: &dyn Fn() -> Site) {
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

/// Sessions age by a clock no process can step: a process whose wall
/// clock was stepped (either way, by any amount) still counts every
/// session another process counts, and removes none of them; so does
/// every process after the host's clock was stepped. Time passing still
/// ends them. (A backend whose time comes from one server meets this by
/// judging by the server's clock.)
pub fn a_wall_clock_step_neither_expires_nor_removes_sessions(site: &dyn Fn() -> Site) {
    let s = site();
    let clock = ManualClock::starting_now();
    let writer = s.open_with(clock.clone());
    let timeout = writer.session_timeout();
    for i in 0..20 {
        writer.touch_session(&key(&format!("user-{i}"))).unwrap();
    }
    let far = Duration::from_secs(100 * 86_400);
    for (ahead, by) in [
        (true, Duration::from_secs(1000)),
        (true, far),
        (false, Duration::from_secs(1000)),
        (false, far),
    ] {
        let stepped = clock.same_host();
        if ahead {
            stepped.step_forward(by);
        } else {
            stepped.step_back(by);
        }
        let reader = s.open_with(stepped.clone());
        let seen = format!("a reader {by:?} {}", if ahead { "ahead" } else { "behind" });
        assert_eq!(reader.sessions().unwrap().len(), 20, "{seen}");
        let e = reader
            .session(&key("user-0"))
            .unwrap()
            .unwrap_or_else(|| panic!("{seen}: user-0 is live"));
        assert!(
            // Shown to the second: a boot-clock time is turned into a wall
            // time through the boot's start rounded to the nearest second.
            e.expires_at.system_time() + Duration::from_secs(1)
                >= stepped.now_for_tests() + timeout,
            "{seen}: times are shown on the reader's own wall clock: {e:?}"
        );
        assert_eq!(
            offline::status(reader.as_ref()).unwrap().active_sessions(),
            20
        );
        assert_eq!(
            writer.sessions().unwrap().len(),
            20,
            "{seen} removed what the writer still counts"
        );
    }
    clock.step_forward(far);
    assert_eq!(s.open_with(clock.clone()).sessions().unwrap().len(), 20);
    clock.advance(timeout + Duration::from_secs(11));
    assert!(s.open_with(clock.clone()).sessions().unwrap().is_empty());
}

/// A reboot cuts no one off: a session touched just before it still counts
/// after it; and the sessions of before the reboot stop counting once the
/// timeout has passed after it.
pub fn a_reboot_cuts_no_one_off_and_ends_the_earlier_boots_sessions_within_a_timeout(
    site: &dyn Fn() -> Site,
) {
    let s = site();
    let clock = ManualClock::starting_now();
    let before = s.open_with(clock.clone());
    let timeout = before.session_timeout();
    before.touch_session(&key("alice")).unwrap();
    drop(before);
    clock.reboot(Duration::from_secs(90), Duration::from_secs(20));
    let after = s.open_with(clock.clone());
    assert_eq!(after.sessions().unwrap().len(), 1, "alice still counts");
    assert!(after.session(&key("alice")).unwrap().is_some());
    after.touch_session(&key("bob")).unwrap();
    clock.advance(timeout);
    let live: Vec<_> = after
        .sessions()
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(live, [key("bob")], "alice's last touch lies a timeout back");
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
