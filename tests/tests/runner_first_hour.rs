//! What a new user meets in the runner's first hour, end to end with the
//! real `e2e-manage` and `e2e-mysite` binaries in a scratch site (the
//! README's "Quick start", "Installing" and "How a name is found"). Each
//! section below opens with what it covers.

#![allow(clippy::unwrap_used)]

use std::process::{Command, ExitStatus};

use manage_tests::{Outcome, Proc, Site};
use serde_json::Value;

const MANAGE: &str = env!("CARGO_BIN_EXE_e2e-manage");

/// A `manage.toml` (after the site's own first line) whose line 2 is
/// wrong, and an alias after it that the error must not hide silently.
const BROKEN: &str = "session_timeout = \"soon\"\n[alias]\nhi = \"hello Ada\"\n";

/// What the configuration error names: the file and the line.
fn broken_at(site: &Site) -> String {
    format!("{}:2:", site.dir().join("manage.toml").display())
}

/// Runs `cmd` to its end (within the hang guard).
fn finish(cmd: Command) -> Outcome {
    Proc::spawn(cmd).finish()
}

/// `manage ARGS…` with `RUST_BACKTRACE=1`, as many shells export it.
fn run_with_backtrace(site: &Site, args: &[&str]) -> Outcome {
    let mut cmd = site.command(args);
    cmd.env("RUST_BACKTRACE", "1");
    finish(cmd)
}

/// Asserts every line on stderr is the error or one of its causes.
#[track_caller]
fn assert_only_the_chain(out: &Outcome) {
    assert!(!out.stderr.is_empty(), "{out}");
    for line in out.stderr.lines() {
        assert!(
            line.starts_with("error: ") || line.starts_with("  caused by: "),
            "a line that is neither the error nor a cause: {line:?} in {out}"
        );
    }
}

// ------------------------------------------------------------------ errors
// Errors print their chain, not a backtrace, even under `RUST_BACKTRACE=1`
// (backtraces stay for panics, and for `-vv`: runner_processes.rs); a
// closed stdout ends a run quietly.

#[test]
fn a_manage_toml_error_under_rust_backtrace_prints_its_chain_and_no_backtrace() {
    let site = Site::with_config(MANAGE, BROKEN);
    let out = run_with_backtrace(&site, &["hello"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains(&broken_at(&site)), "{out}");
    assert!(out.stderr.contains("session_timeout"), "{out}");
    assert_only_the_chain(&out);
}

#[test]
fn a_command_s_error_under_rust_backtrace_prints_its_chain_and_no_backtrace() {
    let site = Site::new(MANAGE);
    let out = run_with_backtrace(&site, &["fail"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert_eq!(
        out.stderr, "error: cannot write the report\n  caused by: disk full\n",
        "{out}"
    );
}

#[test]
fn a_panic_under_rust_backtrace_still_prints_its_backtrace() {
    let site = Site::new(MANAGE);
    let out = run_with_backtrace(&site, &["boom"]);
    assert_eq!(out.code(), Some(101), "{out}");
    assert!(out.stderr.contains("boom goes the command"), "{out}");
    assert!(out.stderr.contains("stack backtrace"), "{out}");
}

/// Runs `manage ARGS…` with its stdout a pipe whose reader has already
/// gone, as in `manage … | head -1` once `head` has exited: every write
/// fails with EPIPE.
fn run_into_a_closed_pipe(site: &Site, args: &[&str]) -> (ExitStatus, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = site.command(args);
    cmd.env("RUST_BACKTRACE", "1").stdout(writer);
    let out = cmd.output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_ends_a_command_quietly_as_sigpipe_would() {
    let site = Site::new(MANAGE);
    for args in [
        &["offline", "status", "--json"][..],
        &["offline", "status"],
        &["hello"],
    ] {
        let (status, stderr) = run_into_a_closed_pipe(&site, args);
        assert_eq!(stderr, "", "{args:?}: nothing on stderr");
        assert_eq!(status.code(), Some(141), "{args:?}: 128 + SIGPIPE");
    }
    // What the runner prints itself ends quietly too.
    for args in [&["--list"][..], &["--help"], &["completions", "bash"]] {
        let (status, stderr) = run_into_a_closed_pipe(&site, args);
        assert_eq!(stderr, "", "{args:?}: nothing on stderr");
        assert!(status.code().is_some(), "{args:?}: {status}");
    }
}

// ------------------------------------------------- a broken manage.toml
// `--help`, `--list`, `help` and `completions` name a broken
// `manage.toml`, file and line, instead of silently leaving its aliases out.

#[test]
fn a_broken_manage_toml_is_named_by_help_list_and_completions_not_ignored() {
    let site = Site::with_config(MANAGE, BROKEN);
    let warning = format!("warning: {}", broken_at(&site));
    for args in [
        &["--help"][..],
        &["--list"],
        &["--list", "--json"],
        &["help"],
        &["help", "hello"],
        &["completions", "bash"],
    ] {
        let out = site.run(args);
        assert_eq!(out.code(), Some(0), "{args:?}: {out}");
        assert!(
            out.stderr.lines().any(|l| l.starts_with(&warning)
                && l.contains("session_timeout")
                && l.contains("aliases")),
            "{args:?} warns, naming the file, the line and what is left out: {out}"
        );
        assert!(
            !out.stderr.contains("   0: "),
            "{args:?}: no backtrace: {out}"
        );
    }
    // In the JSON too, among the listing's warnings.
    let out = site.run(&["--list", "--json"]);
    let doc: Value = serde_json::from_str(&out.stdout.join("\n")).unwrap();
    assert!(
        doc["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.starts_with(&broken_at(&site)))),
        "{doc:#}"
    );
    // `manage` alone: the usage, and the same warning.
    let out = site.run(&[]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains(&warning), "{out}");
}
