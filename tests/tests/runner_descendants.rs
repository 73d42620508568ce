//! What an external command leaves behind, end to end (Linux): daemons
//! that closed every inherited descriptor and left the session stay
//! tracked by the command's keeper, so they hold off `offline on` until
//! they exit; the runner returns at once with the command's own exit code
//! and names them; status and lists name the processes that really hold a
//! task (also after the runner was killed); SIGTERM and a drain's stop
//! reach them; `descendants = "release"` lets them go.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

use manage_tests::{
    CliSite, HANG_GUARD, file_backend_only, is_alive, kill9_pid, send_signal, wait_dead,
};
use rustix::process::Signal;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_e2e-manage");

/// The issue's `manage-pydaemon`: a Python `subprocess` child in a new
/// session (Python closes descriptors 3 and up by default), its pid
/// printed; it sleeps long enough to outlive any test.
const PYDAEMON: &str = "#!/usr/bin/env python3\n\
    import subprocess\n\
    p = subprocess.Popen([\"sleep\", \"600\"], start_new_session=True,\n\
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n\
    print(p.pid, flush=True)\n";

/// Kills the daemons a test made, whatever happens to the test.
struct Daemons(Vec<u32>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if is_alive(pid) {
                kill9_pid(pid);
            }
        }
    }
}

/// The daemon a command printed the pid of on its first line, guarded.
fn daemon_of(out: &manage_tests::Outcome) -> (u32, Daemons) {
    let daemon: u32 = out
        .stdout
        .first()
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("no daemon pid: {out}"));
    (daemon, Daemons(vec![daemon]))
}

/// Polls until `f` holds; fails the test after the hang guard.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG_GUARD;
    while !f() {
        assert!(Instant::now() < deadline, "not {what} after {HANG_GUARD:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn live_tasks(site: &CliSite) -> usize {
    site.backend().tasks().unwrap().len()
}

/// A shell's `setsid sleep … &` forks, and the fork runs `setsid`, which
/// execs `sleep`: read at once after the script exits, the leftover can
/// still be the shell's fork (its command line the script's). The line
/// the runner prints names what holds the task once it has settled: raced
/// over many runs.
#[test]
fn the_left_behind_line_names_the_program_the_leftover_became_not_the_script() {
    let site = CliSite::new(EXE);
    let script = site.external(
        "shdaemon",
        "#!/bin/sh\nsetsid sleep 600 </dev/null >/dev/null 2>&1 &\necho $!\n",
    );
    for round in 0..25 {
        let out = site.run(&["shdaemon"]);
        let (daemon, _guard) = daemon_of(&out);
        assert_eq!(out.code(), Some(0), "{out}");
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains("still holds its task"))
            .unwrap_or_else(|| panic!("round {round}: no left-behind line: {out}"));
        assert!(
            !line.contains(&script.display().to_string()),
            "round {round}: it names the script: {line}"
        );
        assert!(
            line.contains(&format!("pid {daemon} (")),
            "round {round}: {line}"
        );
        assert!(line.contains("sleep 600)"), "round {round}: {line}");
        kill9_pid(daemon);
        wait_until("the task ended", || live_tasks(&site) == 0);
    }
}

#[test]
fn a_daemon_that_closed_its_descriptors_holds_the_task_after_its_command_returned() {
    let site = CliSite::new(EXE);
    site.external("pydaemon", PYDAEMON);
    let out = site.run(&["pydaemon"]);
    let (daemon, _guard) = daemon_of(&out);
    assert_eq!(
        out.code(),
        Some(0),
        "the command's own code, at once: {out}"
    );
    assert!(is_alive(daemon), "the daemon runs on");
    assert!(
        out.stderr
            .contains(&format!("still holds its task: pid {daemon} (sleep 600)")),
        "one line names what holds the task: {out}"
    );

    // Status names the daemon, by pid and command line.
    let status = site.status_json();
    assert_eq!(status["active_sessions"], 1, "{status}");
    let holders = &status["tasks"][0]["holders"];
    assert_eq!(holders[0]["pid"], daemon, "{status}");
    assert_eq!(holders[0]["argv"], serde_json::json!(["sleep", "600"]));
    let verbose = site.run(&["offline", "status", "-v"]);
    assert!(
        verbose
            .stdout
            .iter()
            .any(|l| l.contains(&format!("command `pydaemon` (pid {daemon} (sleep 600)"))),
        "{verbose}"
    );
    let list = site.run(&["offline", "list"]);
    assert!(
        list.stdout
            .iter()
            .any(|l| l.starts_with("pydaemon") && l.contains(&daemon.to_string())),
        "{list}"
    );

    // It holds off the site: `on` times out naming it, and the site is
    // back ONLINE.
    let on = site.run(&["offline", "on", "--timeout", "1"]);
    assert_eq!(on.code(), Some(124), "{on}");
    assert!(on.text().contains(&format!("pid {daemon}")), "{on}");

    // Once the daemon exits, nothing holds the task.
    kill9_pid(daemon);
    wait_until("the task ended", || live_tasks(&site) == 0);
    let on = site.run(&["offline", "on", "--timeout", "30"]);
    assert_eq!(on.code(), Some(0), "{on}");
}

#[test]
fn a_command_that_leaves_a_daemon_behind_returns_its_own_code_and_never_hangs_the_caller() {
    let site = CliSite::new(EXE);
    // `sleep` in the background with its output elsewhere, the way
    // `service … restart` leaves one: the runner's caller reads its stdout
    // to the end, which must come when the command exits.
    site.external(
        "restart",
        "#!/bin/sh\nsetsid sleep 600 </dev/null >/dev/null 2>&1 &\necho $!\nexit 3\n",
    );
    let out = site.run(&["restart"]);
    let (daemon, _guard) = daemon_of(&out);
    assert_eq!(out.code(), Some(3), "{out}");
    assert_eq!(live_tasks(&site), 1, "the daemon holds the task");
    kill9_pid(daemon);
    wait_until("the task ended", || live_tasks(&site) == 0);
}

#[test]
fn sigterm_to_the_runner_reaches_the_command_and_what_it_left_behind() {
    let site = CliSite::new(EXE);
    let mark = site.dir().join("daemon-got-term");
    site.external(
        "spawner",
        &format!(
            "#!/bin/sh\n\
             trap 'exit 5' TERM\n\
             setsid sh -c 'trap \"touch {mark}; exit 0\" TERM; i=0; while [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done' \
             </dev/null >/dev/null 2>&1 &\n\
             echo \"started $!\"\n\
             i=0; while [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done\n",
            mark = mark.display()
        ),
    );
    let (p, daemon) = site.start(&["spawner"]);
    let daemon: u32 = daemon.parse().unwrap();
    let _guard = Daemons(vec![daemon]);
    // The daemon, still the command's child, has set its own trap (not the
    // copy of the command's it had before it exec'd its own shell).
    manage_tests::wait_until_catching_in(daemon, "touch", &[libc::SIGTERM]);
    manage_tests::wait_until_waiting_for_a_child(p.pid());
    send_signal(p.pid(), Signal::TERM);
    let out = p.finish();
    assert_eq!(out.code(), Some(5), "the command's trap: {out}");
    wait_dead(daemon);
    assert!(
        mark.exists(),
        "the daemon, adopted when the command exited, got SIGTERM"
    );
    wait_until("the task ended", || live_tasks(&site) == 0);
}

#[test]
fn a_drain_stop_command_s_leftovers_are_asked_to_stop_when_the_site_goes_offline() {
    // On PostgreSQL the keeper learns it from the drain watcher it starts.
    let site = CliSite::with_config(EXE, "[commands.feeder]\ndrain = \"stop\"\n");
    let mark = site.dir().join("leftover-got-term");
    site.external(
        "feeder",
        &format!(
            "#!/bin/sh\n\
             setsid sh -c 'trap \"touch {mark}; exit 0\" TERM; i=0; while [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done' \
             </dev/null >/dev/null 2>&1 &\n\
             echo $!\n",
            mark = mark.display()
        ),
    );
    let out = site.run(&["feeder"]);
    assert_eq!(out.code(), Some(0), "{out}");
    let (daemon, _guard) = daemon_of(&out);
    assert_eq!(live_tasks(&site), 1, "its leftover holds the task");
    // The leftover's own trap is set before it is asked to stop.
    manage_tests::wait_until_catching_in(daemon, "touch", &[libc::SIGTERM]);
    // `on` goes PENDING; the keeper sees it and asks the leftover to stop;
    // then the site goes OFFLINE.
    let on = site.run(&["offline", "on", "--timeout", "60"]);
    assert_eq!(on.code(), Some(0), "{on}");
    wait_dead(daemon);
    assert!(mark.exists(), "the leftover got SIGTERM");
}

/// A drain-`stop` command that leaves a daemon behind (its pid on the
/// first line) which touches `mark` on SIGTERM.
fn feeder(site: &CliSite, mark: &std::path::Path) {
    site.external(
        "feeder",
        &format!(
            "#!/bin/sh\n\
             setsid sh -c 'trap \"touch {mark}; exit 0\" TERM; i=0; while [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done' \
             </dev/null >/dev/null 2>&1 &\n\
             echo $!\n",
            mark = mark.display()
        ),
    );
}

/// The parent of `pid`, from `/proc/PID/stat`.
fn parent_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(')').unwrap();
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The live drain watcher among the children of `keeper`, if any.
fn watcher_of(keeper: u32) -> Option<u32> {
    manage_tests::children_of(keeper).into_iter().find(|&pid| {
        is_alive(pid)
            && std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).nth(1) == Some(&b"--manage-drain-watch"[..]))
    })
}

#[test]
fn a_drain_watcher_that_dies_is_started_again_and_never_stops_the_leftovers() {
    if !manage_tests::on_postgres_backend() {
        eprintln!("the keeper reads the file backend's mode itself: no watcher to kill");
        return;
    }
    let site = CliSite::with_config(EXE, "[commands.feeder]\ndrain = \"stop\"\n");
    let mark = site.dir().join("leftover-got-term");
    feeder(&site, &mark);
    let out = site.run(&["feeder"]);
    assert_eq!(out.code(), Some(0), "{out}");
    let (daemon, _guard) = daemon_of(&out);
    manage_tests::wait_until_catching_in(daemon, "touch", &[libc::SIGTERM]);
    // The daemon was adopted by the keeper, which started a watcher.
    wait_until("the daemon adopted by its keeper", || {
        watcher_of(parent_of(daemon)).is_some()
    });
    let keeper = parent_of(daemon);
    let first = watcher_of(keeper).unwrap();
    // The watcher holds no task: only the daemon is named.
    let status = site.status_json();
    let holders = status["tasks"][0]["holders"].as_array().unwrap();
    assert_eq!(holders.len(), 1, "{status}");
    assert_eq!(holders[0]["pid"], daemon, "{status}");

    // Killed, it says nothing of the mode: the keeper starts another and
    // the daemon is left alone.
    kill9_pid(first);
    wait_until("a new watcher", || {
        watcher_of(keeper).is_some_and(|w| w != first)
    });
    assert!(is_alive(daemon), "the daemon runs on");
    assert!(!mark.exists(), "the daemon was not asked to stop");
    assert_eq!(live_tasks(&site), 1);

    // The new one sees `offline on` go PENDING.
    let on = site.run(&["offline", "on", "--timeout", "60"]);
    assert_eq!(on.code(), Some(0), "{on}");
    wait_dead(daemon);
    assert!(mark.exists(), "the leftover got SIGTERM");
    wait_until("the keeper gone", || !is_alive(keeper));
}

#[test]
fn once_a_drain_stop_command_s_leftovers_exit_its_watcher_and_keeper_end() {
    let site = CliSite::with_config(EXE, "[commands.feeder]\ndrain = \"stop\"\n");
    let mark = site.dir().join("leftover-got-term");
    feeder(&site, &mark);
    let out = site.run(&["feeder"]);
    assert_eq!(out.code(), Some(0), "{out}");
    let (daemon, _guard) = daemon_of(&out);
    wait_until("the daemon adopted by its keeper", || {
        let keeper = parent_of(daemon);
        manage_tests::on_postgres_backend() == watcher_of(keeper).is_some()
    });
    let keeper = parent_of(daemon);
    let watcher = watcher_of(keeper);
    kill9_pid(daemon);
    wait_until("the task ended", || live_tasks(&site) == 0);
    wait_until("the keeper gone", || !is_alive(keeper));
    if let Some(w) = watcher {
        assert!(!is_alive(w), "the watcher ended with its keeper");
    }
    assert!(!mark.exists(), "nothing asked the daemon to stop");
    let on = site.run(&["offline", "on", "--timeout", "30"]);
    assert_eq!(on.code(), Some(0), "{on}");
}

#[test]
fn descendants_release_lets_a_command_s_leftovers_go() {
    let site = CliSite::with_config(EXE, "[commands.pydaemon]\ndescendants = \"release\"\n");
    site.external("pydaemon", PYDAEMON);
    let out = site.run(&["pydaemon"]);
    let (daemon, _guard) = daemon_of(&out);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(!out.stderr.contains("still holds"), "{out}");
    assert!(is_alive(daemon));
    assert_eq!(live_tasks(&site), 0, "released: nothing holds the task");
}

#[test]
fn offline_list_names_the_command_not_the_dead_runner_after_the_runner_is_killed() {
    let site = CliSite::new(EXE);
    site.external("worker", "#!/bin/sh\necho \"started $$\"\nexec sleep 600\n");
    let (mut p, command) = site.start(&["worker"]);
    let command: u32 = command.parse().unwrap();
    let _guard = Daemons(vec![command]);
    let runner = p.pid();
    p.kill9();
    let tasks = site.backend().tasks().unwrap();
    assert_eq!(tasks.len(), 1, "the command still holds its task");
    assert_eq!(tasks[0].pids(), [command], "{tasks:?}");
    let list = site.run(&["offline", "list"]);
    let row = list
        .stdout
        .iter()
        .find(|l| l.starts_with("worker"))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(row.contains(&command.to_string()), "{list}");
    assert!(
        !row.contains(&runner.to_string()),
        "not the dead runner: {list}"
    );
    kill9_pid(command);
    wait_until("the task ended", || live_tasks(&site) == 0);
}

#[test]
fn offline_run_of_a_command_that_leaves_a_daemon_returns_and_restores_the_mode() {
    let site = CliSite::new(EXE);
    site.external(
        "deploy",
        "#!/bin/sh\nsetsid sleep 600 </dev/null >/dev/null 2>&1 &\necho $!\n",
    );
    let out = site.run(&["offline", "run", "--timeout", "30", "--", "deploy"]);
    assert_eq!(out.code(), Some(0), "{out}");
    let daemon: u32 = out
        .stdout
        .iter()
        .find_map(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    let _guard = Daemons(vec![daemon]);
    assert_eq!(site.mode().mode, maintenance_core::Mode::Online, "{out}");
    // The window is free: the leftover does not hold `offline run`'s lock.
    let off = site.run(&["offline", "off"]);
    assert_eq!(off.code(), Some(0), "{off}");
    assert_eq!(
        site.backend().window().unwrap(),
        maintenance_core::backend::WindowState::Free
    );
}

#[test]
fn with_its_keeper_killed_a_task_held_by_a_leftover_names_no_wrong_pid() {
    let site = CliSite::new(EXE);
    // A leftover that keeps the inherited descriptors (a shell's `&`).
    site.external(
        "restart",
        "#!/bin/sh\nsetsid sleep 600 </dev/null >/dev/null 2>&1 &\necho $!\n",
    );
    let out = site.run(&["restart"]);
    let (daemon, _guard) = daemon_of(&out);
    let status = site.status_json();
    let keeper = status["tasks"][0]["processes"]["keeper"]["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("{status}")) as u32;
    let runner = status["tasks"][0]["pid"].as_u64().unwrap() as u32;
    kill9_pid(keeper);
    // The leftover still holds the task through the lock it inherited; it
    // can no longer be found by pid, and the dead runner's pid is not
    // offered instead.
    let tasks = site.backend().tasks().unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].pids(), Vec::<u32>::new(), "{tasks:?}");
    let verbose = site.run(&["offline", "status", "-v"]);
    assert!(
        verbose.stdout.iter().any(|l| l.contains("not known by pid")
            && l.contains(&format!("keeper (pid {keeper}) is gone"))),
        "{verbose}"
    );
    let list = site.run(&["offline", "list"]);
    assert!(
        !list.stdout.iter().any(|l| l.contains(&runner.to_string())),
        "{list}"
    );
    kill9_pid(daemon);
    wait_until("the task ended", || live_tasks(&site) == 0);
}

#[test]
fn a_joined_external_drain_stop_command_is_asked_to_stop_when_pending_begins() {
    let site = CliSite::with_config(EXE, "[commands.inner]\ndrain = \"stop\"\n");
    site.external(
        "inner",
        "#!/bin/sh\ntrap 'echo \"inner got TERM\"; exit 0' TERM\necho \"started $$\"\n\
         i=0; while [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done\necho \"inner gave up\"\n",
    );
    site.external("outer", "#!/bin/sh\nexec \"$MANAGE\" inner\n");
    let (mut p, inner) = site.start(&["outer"]);
    let inner: u32 = inner.parse().unwrap();
    let _guard = Daemons(vec![inner]);
    let tasks = site.backend().tasks().unwrap();
    assert!(
        tasks
            .iter()
            .any(|t| t.name == "inner" && t.joined.is_some()),
        "inner joined outer's task: {tasks:?}"
    );
    let on = site.spawn(&["offline", "on", "--timeout", "60"]);
    assert_eq!(p.line(), "inner got TERM");
    let out = on.finish();
    assert_eq!(out.code(), Some(0), "OFFLINE once it stopped: {out}");
    assert_eq!(p.finish().code(), Some(0));
}

#[test]
fn a_leftover_of_a_window_s_command_cannot_run_a_required_command_once_the_window_closed() {
    let site = CliSite::new(env!("CARGO_BIN_EXE_e2e-mysite"));
    let go = site.dir().join("go");
    let rc = site.dir().join("rc");
    // Leaves a daemon behind that, once told, runs `migrate` through the
    // task it belongs to.
    site.external(
        "late",
        &format!(
            "#!/bin/sh\n\
             setsid sh -c 'i=0; while [ ! -e {go} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; \
             \"$MANAGE\" migrate >/dev/null 2>&1; echo $? > {rc}.tmp; mv {rc}.tmp {rc}' \
             </dev/null >/dev/null 2>&1 &\n\
             echo $!\n",
            go = go.display(),
            rc = rc.display()
        ),
    );
    let out = site.run(&["offline", "run", "--timeout", "30", "--", "late"]);
    assert_eq!(out.code(), Some(0), "{out}");
    let daemon: u32 = out
        .stdout
        .iter()
        .find_map(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    let _guard = Daemons(vec![daemon]);
    assert_eq!(site.mode().mode, maintenance_core::Mode::Online);
    std::fs::write(&go, "").unwrap();
    wait_until("the leftover tried", || rc.exists());
    assert_eq!(
        std::fs::read_to_string(&rc).unwrap().trim(),
        "75",
        "`migrate` is refused while ONLINE, window or no window"
    );
}

#[test]
fn the_keeper_holds_none_of_the_caller_s_descriptors() {
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    let site = CliSite::new(EXE);
    site.external("pydaemon", PYDAEMON);
    // The caller hands the runner one more pipe, as `{ manage x 5>&1; } |
    // cat` does; the daemon closes it (Python closes descriptors 3 and up),
    // so once the runner has exited, only the keeper could keep it open.
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut cmd = site.command(&["pydaemon"]);
    let w = write.as_raw_fd();
    // SAFETY: dup2 between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(w, 5) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = manage_tests::Proc::spawn(cmd).finish();
    drop(write);
    let (_daemon, _guard) = daemon_of(&out);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(live_tasks(&site), 1, "the daemon holds the task");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(read);
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        let _ = tx.send(());
    });
    rx.recv_timeout(HANG_GUARD)
        .expect("the pipe reaches its end: the keeper does not hold it");
}

#[test]
fn a_command_that_writes_over_its_task_file_still_holds_the_task() {
    if file_backend_only("writes into the task file it inherits, in tasks/") {
        return;
    }
    let site = CliSite::new(EXE);
    // Finds its inherited task descriptor and writes a stray line into it.
    site.external(
        "scribble",
        r#"#!/bin/sh
python3 -c '
import os
for f in os.listdir("/proc/self/fd"):
    try:
        if os.readlink("/proc/self/fd/" + f).endswith(".task"):
            os.write(int(f), b"oops\n")
    except OSError:
        pass
'
echo "started $$"
exec sleep 600
"#,
    );
    let (_p, pid) = site.start(&["scribble"]);
    let pid: u32 = pid.parse().unwrap();
    let _guard = Daemons(vec![pid]);
    let task_file = std::fs::read_dir(site.state().join("tasks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "task"))
        .unwrap();
    assert!(
        std::fs::read_to_string(&task_file)
            .unwrap()
            .contains("oops"),
        "the command wrote over its record"
    );
    let tasks = site.backend().tasks().unwrap();
    assert_eq!(tasks.len(), 1, "still live: {tasks:?}");
    let on = site.run(&["offline", "on", "--timeout", "1"]);
    assert_eq!(on.code(), Some(124), "held off: {on}");
}

#[test]
fn a_leftover_of_a_closed_window_that_starts_work_holds_off_the_next_offline() {
    let site = CliSite::new(env!("CARGO_BIN_EXE_e2e-mysite"));
    let go = site.dir().join("go");
    let started = site.dir().join("started");
    site.external("nap", "#!/bin/sh\nexec sleep 600\n");
    site.external(
        "late",
        &format!(
            "#!/bin/sh\n\
             setsid sh -c 'i=0; while [ ! -e {go} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; \
             touch {started}; exec \"$MANAGE\" nap' </dev/null >/dev/null 2>&1 &\n\
             echo $!\n",
            go = go.display(),
            started = started.display()
        ),
    );
    let out = site.run(&["offline", "run", "--timeout", "30", "--", "late"]);
    assert_eq!(out.code(), Some(0), "{out}");
    let daemon: u32 = out
        .stdout
        .iter()
        .find_map(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    let mut guard = Daemons(vec![daemon]);
    std::fs::write(&go, "").unwrap();
    wait_until("the leftover started its nap", || {
        site.backend()
            .tasks()
            .unwrap()
            .iter()
            .any(|t| t.name == "nap")
    });
    let nap = site
        .backend()
        .tasks()
        .unwrap()
        .into_iter()
        .find(|t| t.name == "nap")
        .unwrap();
    // Its runner is the daemon; its keeper and `sleep` outlive a kill of
    // that runner, so they go too.
    guard.0.extend(nap.pids());
    assert!(
        nap.holds_off_offline() && !nap.in_window,
        "started ONLINE after the window closed: {nap:?}"
    );
    let on = site.run(&["offline", "on", "--timeout", "1"]);
    assert_eq!(on.code(), Some(124), "the nap holds it off: {on}");
}

#[test]
fn a_runner_leaves_no_keeper_behind_for_init_to_reap() {
    // Whatever a runner orphans is reparented to this process, as it would
    // be to a container's PID 1, which may reap nothing.
    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
        0
    );
    let site = CliSite::new(EXE);
    site.external("nop", "#!/bin/sh\nexit 0\n");
    for _ in 0..20 {
        let out = site.run(&["nop"]);
        assert_eq!(out.code(), Some(0), "{out}");
    }
    // Every runner was reaped by `run`: a child left now is an orphan.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid into a zeroed siginfo of our own; WNOWAIT leaves any
    // child as it is.
    let r = unsafe {
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    let errno = std::io::Error::last_os_error().raw_os_error();
    assert!(
        r < 0 && errno == Some(libc::ECHILD),
        "a keeper outlived its runner: pid {}",
        unsafe { info.si_pid() }
    );
}
