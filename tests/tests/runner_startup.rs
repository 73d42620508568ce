//! What the runner does at start-up, end to end, with the real binaries:
//! no thread until something waits on the stop request (a command that
//! only polls it is stopped by the signal handler alone; one that blocks
//! on it starts the relay that wakes it), and `--help` lists the external
//! commands on PATH, the first of a name winning, a directory given twice
//! (or under two names) read once.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use manage_tests::{CliSite, HANG_GUARD, Proc, lines_until, send_signal};
use rustix::process::Signal;

const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");
const MANAGE: &str = env!("CARGO_BIN_EXE_e2e-manage");

/// The names of `p`'s threads (`/proc/PID/task/*/comm`).
fn threads(p: &Proc) -> Vec<String> {
    let dir = format!("/proc/{}/task", p.pid());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect();
    names.sort();
    names
}

/// Waits until `p` has a thread named `name` (within the hang guard).
fn wait_for_thread(p: &Proc, name: &str) {
    let deadline = Instant::now() + HANG_GUARD;
    while !threads(p).iter().any(|t| t == name) {
        assert!(
            Instant::now() < deadline,
            "no thread {name}: {:?}",
            threads(p)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_command_that_only_polls_its_stop_request_runs_without_a_signal_thread_and_sigint_stops_it() {
    let site = CliSite::new(MYSITE);
    let mut worker = site.spawn_mysite(&["worker", "--job-ms", "20"]);
    assert_eq!(worker.line(), "worker started");
    // Its jobs run and it looks at its stop request between them: by the
    // second job it is well past start-up.
    assert_eq!(worker.line(), "finished job 1");
    assert_eq!(worker.line(), "finished job 2");
    let names = threads(&worker);
    assert!(
        !names.iter().any(|t| t == "manage-signals"),
        "no signal thread for a command that never waits: {names:?}"
    );
    send_signal(worker.pid(), Signal::INT);
    let lines = lines_until(&mut worker, |l| l.starts_with("worker stopping"));
    assert!(
        lines
            .last()
            .is_some_and(|l| l.starts_with("worker stopping after"))
    );
    let out = worker.finish();
    assert_eq!(
        out.code(),
        Some(130),
        "interrupted, even if it then returned: {out}"
    );
}

#[test]
fn a_command_that_blocks_on_its_stop_request_starts_the_relay_and_sigterm_wakes_it() {
    let site = CliSite::new(MANAGE);
    let (mut sleeper, _) = site.start(&["sleeper", "--secs", "600"]);
    // The relay is started by the wait itself, just after `started`.
    wait_for_thread(&sleeper, "manage-signals");
    send_signal(sleeper.pid(), Signal::TERM);
    assert_eq!(sleeper.line(), "stopping");
    assert_eq!(sleeper.finish().code(), Some(130));
}

#[test]
fn help_lists_each_external_command_once_the_first_on_path_winning() {
    let site = CliSite::new(MANAGE);
    let first = site.external("deploy", "#!/bin/sh\nexit 0\n");
    site.external("notes", "#!/bin/sh\nexit 0\n");
    // `notes` unexecutable: not a command.
    std::fs::set_permissions(
        site.dir().join("bin/manage-notes"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let other = site.dir().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("manage-deploy"), "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(
        other.join("manage-deploy"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let again = site.dir().join("again");
    std::os::unix::fs::symlink(site.dir().join("bin"), &again).unwrap();
    let path = std::env::join_paths([
        site.dir().join("bin"),
        other.clone(),
        again,
        site.dir().join("bin"),
        "/usr/bin".into(),
    ])
    .unwrap();
    let mut cmd = site.command(&["--help"]);
    cmd.env("PATH", path);
    let out = Proc::spawn(cmd).finish();
    assert_eq!(out.code(), Some(0), "{out}");
    let lines: Vec<&String> = out
        .stdout
        .iter()
        .skip_while(|l| l.as_str() != "External commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "deploy, once: {lines:?}");
    assert!(
        lines[0].trim_start().starts_with("deploy")
            && lines[0].ends_with(&format!("external: {}", first.display())),
        "the first on PATH: {lines:?}"
    );
}
