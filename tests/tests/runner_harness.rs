//! `manage::testing`, the harness a plug-in author tests commands with: in
//! this process, against a temporary state directory, through the runner's
//! own path (dispatch, policy, task, exit code), with the output captured
//! and no signal handlers installed.

#![allow(clippy::unwrap_used)]

use maintenance_core::backend::ModeChange;
use manage::testing::{self, TempSite};

// Linked so that their commands are registered in this test binary.
use hello_plugin as _;
use manage_tests as _;

#[test]
fn a_plug_in_author_tests_hello_in_a_few_lines() {
    let out = testing::run(["hello", "Ada", "--times", "2"]);
    assert_eq!(out.code, 0);
    assert_eq!(out.stdout, "Hello, Ada!\nHello, Ada!\n");
    assert_eq!(out.stderr, "");
}

#[test]
fn the_harness_gives_exit_75_while_offline_and_the_override_runs_it() {
    let site = TempSite::new();
    site.backend()
        .force_offline(&ModeChange::by_this_process())
        .unwrap();
    let out = site.run(["hello"]);
    assert_eq!(out.code, 75, "{out:?}");
    assert_eq!(out.stdout, "", "{out:?}");
    assert!(out.stderr.contains("--ignore-maintenance"), "{out:?}");
    let out = site.run(["--ignore-maintenance", "hello"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "Hello, world!\n");
}

#[test]
fn the_harness_tracks_the_run_in_its_own_state_and_releases_the_task() {
    let site = TempSite::new();
    let out = site.run(["task-info"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.starts_with("task ") && out.stdout.ends_with(" task-info in ONLINE\n"),
        "tracked: {out:?}"
    );
    // This process is still alive: only a released task stops counting.
    assert_eq!(site.backend().tasks().unwrap(), []);
}

#[test]
fn a_panic_under_the_harness_is_101_and_releases_the_task_in_the_live_process() {
    let site = TempSite::new();
    let out = site.run(["boom"]);
    assert_eq!(out.code, 101, "{out:?}");
    assert!(out.stderr.contains("command `boom` panicked"), "{out:?}");
    assert_eq!(site.backend().tasks().unwrap(), []);
    // Its single instance is free again: not refused as running (75).
    assert_eq!(site.run(["--lock-timeout", "0", "boom"]).code, 101);
}

#[test]
fn the_harness_captures_an_error_chain_and_a_usage_error() {
    let site = TempSite::new();
    let out = site.run(["fail"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with("error: cannot write the report\n  caused by: disk full\n"),
        "{out:?}"
    );
    let out = site.run(["no-such-command"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("unrecognized command"), "{out:?}");
}

/// The signals this process has handlers for, from `/proc`.
fn caught() -> u64 {
    manage_tests::caught_signals(std::process::id())
}

#[test]
fn the_harness_installs_no_signal_handlers() {
    let int_term = 1u64 << (libc::SIGINT - 1) | 1u64 << (libc::SIGTERM - 1);
    assert_eq!(caught() & int_term, 0, "none before");
    assert_eq!(testing::run(["hello"]).code, 0);
    assert_eq!(caught() & int_term, 0, "none after");
}
