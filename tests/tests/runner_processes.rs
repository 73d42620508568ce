//! Runs tracked by the runner, end to end: the real `manage`
//! binary (`e2e-manage`: the runner, the `hello` plug-in and the test
//! fixture's commands) as real processes, with the site's state read from
//! this test process through the core API (`Backend::tasks`, `mode`), and
//! PENDING/OFFLINE set from here too.
//!
//! Covered: an external `manage-<name>` counted as a live task while it
//! runs, with `MANAGE`, `MANAGE_STATE_DIR` and `MANAGE_TASK` (the task's id
//! and secret); a nested
//! `$MANAGE …` from inside it joining its task while PENDING; `kill -9` of
//! `manage` alone leaving the task live until its external command ends;
//! refusal while PENDING and OFFLINE (75, naming `--ignore-maintenance`)
//! and the override; single-instance and concurrent commands; SIGINT once
//! and twice, SIGTERM, SIGTERM forwarded to an external command, an
//! external command killed by a signal (128+N); a panic (101) and an error
//! chain (1), each releasing its task.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use maintenance_core::backend::{ModeChange, PendingStart, WaiterLease};
use maintenance_core::{Backend, Mode};
use manage_tests::{
    CliSite, HANG_GUARD, Outcome, Proc, assert_exact, is_alive, send_signal, wait_dead,
    wait_until_catching, wait_until_waiting_for_a_child,
};
use rustix::process::Signal;

const EXE: &str = env!("CARGO_BIN_EXE_e2e-manage");

/// The ids of the live tasks, read in this process.
fn live(site: &CliSite) -> Vec<String> {
    site.backend()
        .tasks()
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect()
}

/// Takes the site PENDING from this process; it stays PENDING while the
/// returned lease lives (drop it, or [`leave`], to end it).
fn go_pending(backend: &dyn Backend) -> Box<dyn WaiterLease> {
    match backend
        .begin_pending(&ModeChange::by_this_process())
        .unwrap()
    {
        PendingStart::Waiting { waiter, .. } => waiter,
        other => panic!("not PENDING: {other:?}"),
    }
}

/// Leaves PENDING: the site goes back ONLINE.
fn leave(backend: &dyn Backend, waiter: Box<dyn WaiterLease>) {
    backend
        .leave_pending(waiter, &ModeChange::by_this_process())
        .unwrap();
    assert_eq!(backend.mode().unwrap().mode, Mode::Online);
}

/// Asserts `out` is a refusal because of maintenance: 75, nothing run,
/// the message naming the mode and the override.
#[track_caller]
fn assert_refused_for_maintenance(out: &Outcome, mode: &str) {
    assert_eq!(out.code(), Some(75), "{out}");
    assert!(out.stdout.is_empty(), "it did not run: {out}");
    assert!(
        out.stderr.contains(&format!("the site is {mode}")),
        "names the mode: {out}"
    );
    assert!(
        out.stderr.contains("--ignore-maintenance"),
        "names the override: {out}"
    );
}

/// The path `manage` gives its external commands as `$MANAGE`.
fn manage_path() -> std::path::PathBuf {
    Path::new(EXE).canonicalize().unwrap()
}

// ------------------------------------------------------ external commands

/// Says what it was given, then waits for a line on stdin and exits 7.
const PROBE: &str = "#!/bin/sh\n\
    echo \"started ${MANAGE_TASK%%:*}\"\n\
    echo \"pid $$\"\n\
    echo \"MANAGE=$MANAGE\"\n\
    echo \"MANAGE_STATE_DIR=$MANAGE_STATE_DIR\"\n\
    echo \"args $*\"\n\
    read line\n\
    echo \"done\"\n\
    exit 7\n";

#[test]
fn an_external_command_is_a_live_task_while_it_runs_with_the_manage_env_vars() {
    let site = CliSite::new(EXE);
    site.external("probe", PROBE);
    let (mut p, token) = site.start(&["probe", "a b", "-v"]);
    let script_pid: u32 = p.line().strip_prefix("pid ").unwrap().parse().unwrap();
    assert_eq!(
        p.line(),
        format!("MANAGE={}", manage_path().display()),
        "MANAGE is this binary"
    );
    assert_eq!(
        p.line(),
        format!("MANAGE_STATE_DIR={}", site.state().display())
    );
    assert_eq!(p.line(), "args a b -v", "its arguments are its own");

    let tasks = site.backend().tasks().unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:#?}");
    let task = &tasks[0];
    assert_eq!(
        task.id, token,
        "MANAGE_TASK names its task (before its secret)"
    );
    assert_eq!(task.name, "probe");
    assert_eq!(task.argv, ["probe", "a b", "-v"]);
    assert_eq!(task.pid, p.pid(), "started by manage");
    assert_eq!(task.started_in, Mode::Online);
    assert!(is_alive(script_pid));

    p.send("go\n");
    assert_eq!(p.line(), "done");
    let out = p.finish();
    assert_eq!(out.code(), Some(7), "its own exit code: {out}");
    assert_eq!(out.stderr, "", "{out}");
    assert_eq!(live(&site), Vec::<String>::new(), "it stopped counting");
}

#[test]
fn a_nested_manage_run_from_an_external_command_joins_its_task_while_pending() {
    let site = CliSite::new(EXE);
    site.external(
        "job",
        "#!/bin/sh\n\
         echo \"started ${MANAGE_TASK%%:*}\"\n\
         read line\n\
         \"$MANAGE\" task-info\n\
         echo \"exit $?\"\n\
         \"$MANAGE\" hello nested\n\
         echo \"exit $?\"\n",
    );
    let (mut p, token) = site.start(&["job"]);
    let backend = site.backend();
    let waiter = go_pending(backend.as_ref());
    assert_eq!(site.mode().mode, Mode::Pending);
    // Anyone else is refused now …
    assert_refused_for_maintenance(&site.run(&["task-info"]), "PENDING");

    // … but the job's own nested runs join its task, each as a run of its
    // own.
    p.send("go\n");
    let info = p.line();
    assert!(
        info.starts_with("task ")
            && info.ends_with(&format!(" task-info in ONLINE, joined {token}")),
        "{info}"
    );
    assert_eq!(p.line(), "exit 0");
    assert_eq!(p.line(), "Hello, nested!");
    assert_eq!(p.line(), "exit 0");
    let out = p.finish();
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stderr, "", "{out}");
    assert_eq!(live(&site), Vec::<String>::new());
    assert_eq!(site.mode().mode, Mode::Pending, "still PENDING");
    leave(backend.as_ref(), waiter);
}

#[test]
fn kill_9_of_manage_alone_leaves_the_task_live_until_its_external_command_ends() {
    let site = CliSite::new(EXE);
    site.external("probe", PROBE);
    let (mut p, token) = site.start(&["--lock-timeout", "0.2", "probe"]);
    let script_pid: u32 = p.line().strip_prefix("pid ").unwrap().parse().unwrap();
    assert_eq!(live(&site), std::slice::from_ref(&token));

    p.kill9();
    assert!(is_alive(script_pid), "the command runs on");
    assert_eq!(
        live(&site),
        std::slice::from_ref(&token),
        "the orphaned command still holds its task"
    );
    // Its single instance too: a second run is refused.
    let second = site.run(&["--lock-timeout", "0.2", "probe"]);
    assert_eq!(second.code(), Some(75), "{second}");
    assert!(second.stderr.contains("already running"), "{second}");

    // The command ends (it reads the stdin it shares with the dead
    // manage): the task stops counting at once.
    p.send("go\n");
    wait_dead(script_pid);
    // Its keeper exits the moment it has reaped it.
    manage_tests::poll_until("the task ended with it", || {
        live(&site).is_empty().then_some(())
    });
    // And the instance is free again.
    let third = site.spawn(&["probe"]).finish();
    assert_eq!(third.code(), Some(7), "{third}");
}

#[test]
fn an_external_command_killed_by_a_signal_exits_128_plus_n_and_releases_its_task() {
    let site = CliSite::new(EXE);
    site.external("term", "#!/bin/sh\nkill -TERM $$\nsleep 60\n");
    site.external("kill9", "#!/bin/sh\nkill -9 $$\nsleep 60\n");
    let out = site.run(&["term"]);
    assert_eq!(out.code(), Some(143), "{out}");
    assert_eq!(live(&site), Vec::<String>::new());
    let out = site.run(&["kill9"]);
    assert_eq!(out.code(), Some(137), "{out}");
    assert_eq!(live(&site), Vec::<String>::new());
}

/// Exits 5 on SIGTERM; gives up by itself after a minute or so, so a
/// failing test leaves nothing behind.
const TRAPPER: &str = "#!/bin/sh\n\
    trap 'echo \"got TERM\"; exit 5' TERM\n\
    echo \"started ${MANAGE_TASK%%:*}\"\n\
    i=0\n\
    while [ $i -lt 1200 ]; do sleep 0.05; i=$((i + 1)); done\n\
    echo \"gave up\"\n";

#[test]
fn sigterm_to_manage_is_forwarded_to_its_external_command_whose_exit_code_it_returns() {
    let site = CliSite::new(EXE);
    site.external("trapper", TRAPPER);
    let (mut p, _) = site.start(&["trapper"]);
    // The runner has the child's pid to forward to once it waits for it.
    wait_until_waiting_for_a_child(p.pid());
    send_signal(p.pid(), Signal::TERM);
    assert_eq!(p.line(), "got TERM");
    let out = p.finish();
    assert_eq!(out.code(), Some(5), "the command's own code: {out}");
    assert_eq!(live(&site), Vec::<String>::new());
}

#[test]
fn sigterm_to_manage_before_its_external_command_starts_still_reaches_the_command() {
    let site = CliSite::new(EXE);
    site.external("trapper", TRAPPER);
    let (mut first, _) = site.start(&["trapper"]);
    // A second run waits for the first's single instance …
    let second = site.spawn(&["--lock-timeout", "600", "trapper"]);
    wait_until_catching(second.pid(), &[libc::SIGINT, libc::SIGTERM]);
    // … and is asked to stop before its command exists.
    send_signal(second.pid(), Signal::TERM);
    // The first ends; the second gets the instance.
    wait_until_waiting_for_a_child(first.pid());
    send_signal(first.pid(), Signal::TERM);
    assert_eq!(first.line(), "got TERM");
    assert_eq!(first.finish().code(), Some(5));
    // Not started (130), or started and told to stop: by its trap (5) or
    // before it set one (143). Never left running.
    let out = second.finish();
    assert!(
        matches!(out.code(), Some(5 | 130 | 143)),
        "asked to stop, it must not run on: {out}"
    );
    assert_eq!(live(&site), Vec::<String>::new());
}

// --------------------------------------------------------- maintenance

#[test]
fn a_tracked_command_is_refused_while_pending_and_offline_unless_ignore_maintenance() {
    let site = CliSite::new(EXE);
    site.external("probe", PROBE);
    let backend = site.backend();

    let waiter = go_pending(backend.as_ref());
    assert_refused_for_maintenance(&site.run(&["hello"]), "PENDING");
    assert_refused_for_maintenance(&site.run(&["probe"]), "PENDING");
    assert_exact(
        &site.run(&["--ignore-maintenance", "hello"]),
        0,
        &["Hello, world!"],
    );
    leave(backend.as_ref(), waiter);

    backend
        .force_offline(&ModeChange::by_this_process())
        .unwrap();
    assert_refused_for_maintenance(&site.run(&["hello"]), "OFFLINE");
    assert_refused_for_maintenance(&site.run(&["probe"]), "OFFLINE");
    for args in [
        &["--ignore-maintenance", "task-info"][..],
        &["task-info", "--ignore-maintenance"],
    ] {
        let out = site.run(args);
        assert_eq!(out.code(), Some(0), "{args:?}: {out}");
        assert!(
            out.stdout.len() == 1 && out.stdout[0].ends_with(" task-info in OFFLINE"),
            "it ran inside the window: {out}"
        );
    }
    // An external command too.
    let mut p = site.spawn(&["--ignore-maintenance", "probe"]);
    assert!(p.line().starts_with("started "), "it ran");
    p.close_stdin();
    assert_eq!(p.finish().code(), Some(7));
    assert_eq!(live(&site), Vec::<String>::new());
}

#[test]
fn an_untracked_command_is_never_refused() {
    let site = CliSite::new(EXE);
    let backend = site.backend();
    let waiter = go_pending(backend.as_ref());
    assert_exact(
        &site.run(&["idler", "--secs", "0"]),
        0,
        &["started untracked", "slept"],
    );
    leave(backend.as_ref(), waiter);
    backend
        .force_offline(&ModeChange::by_this_process())
        .unwrap();
    assert_exact(
        &site.run(&["idler", "--secs", "0"]),
        0,
        &["started untracked", "slept"],
    );
}

// ------------------------------------------------------------ instances

#[test]
fn a_second_run_of_a_single_instance_command_is_refused_naming_the_first_s_pid() {
    let site = CliSite::new(EXE);
    let (mut first, id) = site.start(&["sleeper"]);
    let out = site.run(&["--lock-timeout", "0.2", "sleeper"]);
    assert_eq!(out.code(), Some(75), "{out}");
    assert!(out.stdout.is_empty(), "it never ran: {out}");
    assert!(
        out.stderr.contains("`sleeper` is already running")
            && out.stderr.contains(&format!("pid {}", first.pid())),
        "{out}"
    );
    assert_eq!(live(&site), [id], "the first runs on");
    send_signal(first.pid(), Signal::INT);
    assert_eq!(first.line(), "stopping");
    assert_eq!(first.finish().code(), Some(130));
}

#[test]
fn two_runs_of_a_concurrent_command_both_run() {
    let site = CliSite::new(EXE);
    let (mut a, id_a) = site.start(&["sleeper-many"]);
    let (mut b, id_b) = site.start(&["--lock-timeout", "0", "sleeper-many"]);
    assert_ne!(id_a, id_b);
    let mut ids = live(&site);
    ids.sort();
    let mut both = vec![id_a, id_b];
    both.sort();
    assert_eq!(ids, both);
    for p in [&mut a, &mut b] {
        send_signal(p.pid(), Signal::INT);
        assert_eq!(p.line(), "stopping");
    }
    assert_eq!(a.finish().code(), Some(130));
    assert_eq!(b.finish().code(), Some(130));
    assert_eq!(live(&site), Vec::<String>::new());
}

// -------------------------------------------------------------- signals

/// Starts `sleeper`, sends it `signals` back to back, and returns how it
/// ended; asserts its task was released.
fn interrupt_sleeper(signals: &[Signal]) -> Outcome {
    let site = CliSite::new(EXE);
    let (p, id) = site.start(&["sleeper"]);
    assert_eq!(live(&site), [id]);
    for s in signals {
        send_signal(p.pid(), *s);
    }
    let out = p.finish();
    assert_eq!(live(&site), Vec::<String>::new(), "released: {out}");
    // The single instance is free: a new run starts at once.
    let (again, _) = site.start(&["--lock-timeout", "0", "sleeper"]);
    drop(again);
    out
}

#[test]
fn sigint_sets_stop_requested_and_the_run_exits_130_its_task_released() {
    let out = interrupt_sleeper(&[Signal::INT]);
    assert_eq!(out.code(), Some(130), "{out}");
    assert_eq!(out.stdout, ["stopping"], "the command saw the stop: {out}");
    assert_eq!(out.stderr, "", "{out}");
}

#[test]
fn sigterm_sets_stop_requested_and_the_run_exits_130_its_task_released() {
    let out = interrupt_sleeper(&[Signal::TERM]);
    assert_eq!(out.code(), Some(130), "{out}");
    assert_eq!(out.stdout, ["stopping"], "the command saw the stop: {out}");
}

#[test]
fn sigint_twice_in_quick_succession_exits_130_its_task_released() {
    // Either the command stops on the first (or both arrive as one), or
    // the second ends the process at once: 130 either way.
    let out = interrupt_sleeper(&[Signal::INT, Signal::INT]);
    assert_eq!(out.code(), Some(130), "{out}");
}

#[test]
fn a_second_sigint_ends_a_run_that_does_not_stop_on_the_first() {
    let site = CliSite::new(EXE);
    let (mut first, id) = site.start(&["sleeper", "--secs", "600"]);
    // The second waits for the first's single instance, and a waiting run
    // does not look at its stop request.
    let mut second = site.spawn(&["--lock-timeout", "600", "sleeper", "--secs", "600"]);
    wait_until_catching(second.pid(), &[libc::SIGINT, libc::SIGTERM]);
    // Signals sent back to back may arrive as one: keep pressing Ctrl-C
    // until it ends.
    let deadline = Instant::now() + HANG_GUARD;
    while second.is_running() {
        assert!(Instant::now() < deadline, "Ctrl-C does not end it");
        send_signal(second.pid(), Signal::INT);
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = second.finish();
    assert_eq!(out.code(), Some(130), "{out}");
    assert!(out.stdout.is_empty(), "it never started: {out}");
    assert!(out.stderr.contains("interrupted again"), "{out}");
    assert_eq!(live(&site), [id], "the first runs on");
    send_signal(first.pid(), Signal::INT);
    assert_eq!(first.line(), "stopping");
    assert_eq!(first.finish().code(), Some(130));
}

// ------------------------------------------------------ panics and errors

#[test]
fn a_panicking_command_prints_its_message_exits_101_and_releases_its_task() {
    let site = CliSite::new(EXE);
    let out = site.run(&["boom"]);
    assert_eq!(out.code(), Some(101), "{out}");
    assert!(out.stdout.is_empty(), "{out}");
    assert!(out.stderr.contains("boom goes the command"), "{out}");
    assert!(out.stderr.contains("command `boom` panicked"), "{out}");
    assert!(
        !out.stderr.contains("stack backtrace"),
        "no backtrace unless asked: {out}"
    );
    assert_eq!(live(&site), Vec::<String>::new());
    let again = site.run(&["--lock-timeout", "0", "boom"]);
    assert_eq!(again.code(), Some(101), "not refused as running: {again}");
}

/// `manage::main!()` starts without the standard library's start-up
/// (`manage/src/entry.rs`): a panic of the main thread is still reported
/// as the standard hook reports it, the thread named `main`, and a
/// backtrace is printed when `RUST_BACKTRACE` asks for one.
#[test]
fn a_panic_under_the_fast_entry_names_the_main_thread_and_prints_a_backtrace_when_asked() {
    let site = CliSite::new(EXE);
    let out = site.run(&["boom"]);
    assert_eq!(out.code(), Some(101), "{out}");
    let first = out.stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("thread 'main' (") && first.contains(") panicked at "),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("note: run with `RUST_BACKTRACE=1` environment variable"),
        "{out}"
    );
    let mut cmd = site.command(&["boom"]);
    cmd.env("RUST_BACKTRACE", "1");
    let traced = Proc::spawn(cmd).finish();
    assert_eq!(traced.code(), Some(101), "{traced}");
    assert!(traced.stderr.contains("thread 'main' ("), "{traced}");
    assert!(traced.stderr.contains("stack backtrace:"), "{traced}");
    // The short form, as the standard hook prints it: from the panic down
    // to the runner, not the hook's own frames nor the C library's.
    assert!(
        traced.stderr.contains("   0: __rustc::rust_begin_unwind"),
        "{traced}"
    );
    assert!(
        !traced.stderr.contains("name_main_thread_in_panics"),
        "{traced}"
    );
    assert!(!traced.stderr.contains("__libc_start_main"), "{traced}");
    assert!(
        traced.stderr.contains("note: Some details are omitted"),
        "{traced}"
    );
    assert!(
        traced.stderr.contains("Boom"),
        "the trace names the command's frames: {traced}"
    );
    assert_eq!(live(&site), Vec::<String>::new());
}

/// The fast entry keeps the standard library's report of a main-thread
/// stack overflow: the message, then an abort — and the task is released
/// by the process's end, so the next command is not held off.
#[test]
fn a_stack_overflow_under_the_fast_entry_says_so_aborts_and_releases_its_task() {
    use std::os::unix::process::ExitStatusExt;
    let site = CliSite::new(EXE);
    let out = site.run(&["overflow"]);
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{out}");
    assert!(out.stderr.contains("\nthread 'main' ("), "{out}");
    assert!(out.stderr.contains(") has overflowed its stack\n"), "{out}");
    assert!(
        out.stderr
            .contains("fatal runtime error: stack overflow, aborting"),
        "{out}"
    );
    assert_eq!(live(&site), Vec::<String>::new());
    let on = site.run(&["offline", "on", "--force"]);
    assert!(on.success(), "{on}");
    // Any other fault is no overflow: the process dies of it, unreported.
    let fault = site.run(&["--ignore-maintenance", "null-read"]);
    assert_eq!(fault.status.signal(), Some(libc::SIGSEGV), "{fault}");
    assert!(!fault.stderr.contains("overflowed"), "{fault}");
}

/// A SIGSEGV sent by `kill` is no fault of the runner's: the fast entry's
/// fault handler does not take it for an overflow, and sends it again at
/// its default, so the runner dies of it as any process would, rather than
/// running on as if it had never come.
#[test]
fn a_sigsegv_sent_by_kill_ends_the_runner_unreported() {
    use std::os::unix::process::ExitStatusExt;
    let site = CliSite::new(EXE);
    let (mut sleeper, _id) = site.start(&["sleeper"]);
    send_signal(sleeper.pid(), Signal::SEGV);
    let status = sleeper.wait_exit();
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status:?}");
    let out = sleeper.finish();
    assert!(!out.stderr.contains("overflowed"), "{out}");
    assert_eq!(live(&site), Vec::<String>::new());
}

/// Under an `RLIMIT_STACK` near the whole address space, the main stack's
/// limit computed from it lies among the lowest pages, where a null
/// pointer's fault would look like an overflow: the fast entry trusts no
/// limit below 1 GiB, so a null read is reported as what it is. The stack
/// is placed without randomisation (`ADDR_NO_RANDOMIZE`), so that the limit
/// lands within the overflow window of address 0.
#[test]
fn a_null_read_under_a_stack_limit_near_the_whole_address_space_is_no_overflow() {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    // The top of an unrandomised x86-64 stack is 0x7fff_ffff_f000; the
    // limit then lies some 60 KiB above address 0. Elsewhere the limit
    // lands elsewhere, and the test still checks that nothing is reported.
    const LIMIT: libc::rlim_t = 0x7fff_ffff_0000;
    let mut hard = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `hard` is a valid rlimit to fill.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut hard) }, 0);
    if hard.rlim_max != libc::RLIM_INFINITY && hard.rlim_max < LIMIT {
        eprintln!(
            "skipped: the hard stack limit ({}) is below the one tried",
            hard.rlim_max
        );
        return;
    }
    let site = CliSite::new(EXE);
    let mut cmd = site.command(&["--ignore-maintenance", "null-read"]);
    // SAFETY: personality and setrlimit are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            libc::personality(libc::ADDR_NO_RANDOMIZE as libc::c_ulong);
            let limit = libc::rlimit {
                rlim_cur: LIMIT,
                rlim_max: hard.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_STACK, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let fault = Proc::spawn(cmd).finish();
    assert_eq!(fault.status.signal(), Some(libc::SIGSEGV), "{fault}");
    assert!(!fault.stderr.contains("overflowed"), "{fault}");
}

/// A runner started with a standard descriptor closed opens `/dev/null` in
/// its place, as the standard library's start-up does: otherwise the first
/// file the runner opened would take the number of standard output, and a
/// command would write its output there. An external command shows what
/// its standard output is.
#[test]
fn a_runner_started_with_stdout_closed_gives_its_commands_dev_null_as_stdout() {
    use std::os::unix::process::CommandExt;
    let site = CliSite::new(EXE);
    let script = site.external(
        "fd1",
        "#!/bin/sh\nseen=$(readlink /proc/$$/fd/1 || echo closed)\necho \"$seen\" > \"$0.out\"\n",
    );
    let mut cmd = site.command(&["fd1"]);
    // SAFETY: close is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::close(1);
            Ok(())
        });
    }
    let out = Proc::spawn(cmd).finish();
    assert_eq!(out.code(), Some(0), "{out}");
    let seen = std::fs::read_to_string(script.with_extension("out")).unwrap();
    assert_eq!(seen.trim(), "/dev/null", "{out}");
}

#[test]
fn a_failing_command_exits_1_printing_its_error_chain_one_cause_a_line() {
    let site = CliSite::new(EXE);
    let out = site.run(&["fail"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stdout.is_empty(), "{out}");
    assert_eq!(
        out.stderr,
        "error: cannot write the report\n  caused by: disk full\n"
    );
    assert_eq!(live(&site), Vec::<String>::new());
}

#[test]
fn a_failing_command_prints_a_backtrace_only_when_rust_backtrace_and_dash_vv_ask() {
    let site = CliSite::new(EXE);
    let mut cmd = site.command(&["-vv", "fail"]);
    cmd.env("RUST_BACKTRACE", "1");
    let out = Proc::spawn(cmd).finish();
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr
            .starts_with("error: cannot write the report\n  caused by: disk full\n"),
        "{out}"
    );
    assert!(
        out.stderr.lines().count() > 2,
        "a backtrace follows the chain: {out}"
    );
}

/// The signals the shell running `sigs` ignores (its `SigIgn` mask), with
/// `manage` started by `cmd`.
fn ignored_by_the_command(mut cmd: std::process::Command) -> u64 {
    let out = cmd.output().expect("run manage sigs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    text.trim()
        .strip_prefix("SigIgn:")
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no SigIgn line: {text:?}"))
}

#[test]
fn an_external_command_keeps_the_signals_its_caller_ignored_and_takes_sigpipe_at_its_default() {
    let site = CliSite::new(EXE);
    site.external("sigs", "#!/bin/sh\ngrep SigIgn /proc/$$/status\n");
    let bit = |s: i32| 1u64 << (s - 1);
    let (hup, int, quit, pipe) = (
        bit(libc::SIGHUP),
        bit(libc::SIGINT),
        bit(libc::SIGQUIT),
        bit(libc::SIGPIPE),
    );
    // Started plainly: nothing ignored, SIGPIPE included (Rust's runtime
    // ignores it in manage itself).
    let plain = ignored_by_the_command(site.command(&["sigs"]));
    assert_eq!(plain & (hup | int | quit | pipe), 0, "{plain:#x}");
    // Under `nohup`, or as a script's `cmd &`: what the caller ignored
    // stays ignored in the command.
    let mut cmd = site.command(&["sigs"]);
    // SAFETY: only `signal`, async-signal-safe, between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            for s in [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT] {
                libc::signal(s, libc::SIG_IGN);
            }
            Ok(())
        });
    }
    let nohup = ignored_by_the_command(cmd);
    assert_eq!(nohup & (hup | int | quit), hup | int | quit, "{nohup:#x}");
    assert_eq!(nohup & pipe, 0, "{nohup:#x}");
}
