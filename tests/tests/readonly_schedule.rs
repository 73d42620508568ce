//! Read-only windows scheduled ahead (`offline on|run --at TIME
//! --read-only`), end to end with the example site's binary as real
//! processes: the notice line, `status`, `--json` and the exit codes while
//! it waits; `off` cancelling it by name; at its time READONLY_PENDING, a
//! writer started ONLINE holding it off (a web session not), then
//! READONLY; a killed waiter leaving no schedule before its time and the
//! site ONLINE after it (I5); and `offline run --at --read-only` running
//! its command inside READONLY. Every wait is for a state, within the hang
//! guard; the short `+2s` schedules only set how long a passing run takes.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use maintenance_core::Mode;
use manage_tests::{CliSite, Proc, REFUSED, Window, assert_cancelled, assert_exact, user_at_host};

const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");

/// An external command that says `started`, then holds its task until the
/// file named by its first argument exists.
const HOLD: &str =
    "#!/bin/sh\necho started\nwhile [ ! -e \"$1\" ]; do sleep 0.02; done\necho done\n";

/// A site with `import` (an external command that may write, holding its
/// task until a file appears) and `mode` (prints the status it runs in).
fn site() -> CliSite {
    let site = CliSite::new(MYSITE);
    site.external("import", HOLD);
    site.external("mode", "#!/bin/sh\n\"$MANAGE\" offline status\n");
    site
}

/// Starts `mysite import <release file>`, once it has said `started`.
fn hold_import(site: &CliSite) -> (Proc, PathBuf) {
    let release = site.dir().join("release-import");
    let mut p = site.spawn_mysite(&["import", release.to_str().unwrap()]);
    assert_eq!(p.line(), "started", "`mysite import` did not start");
    (p, release)
}

fn release(file: &Path) {
    std::fs::write(file, "").unwrap();
}

/// `mysite offline status --exit-code`'s code.
fn status_code(site: &CliSite) -> i32 {
    site.run_mysite(&["offline", "status", "--exit-code"])
        .code()
        .unwrap()
}

/// Starts `mysite ARGS…` (an `offline on|run --at … --read-only`) and waits
/// until it says its read-only window is scheduled — from then on the
/// schedule is live. Returns the process, its line, and the time as that
/// line shows it.
fn scheduled(site: &CliSite, args: &[&str]) -> (Proc, String, String) {
    manage_tests::scheduled(site.spawn_mysite(args), Window::ReadOnly, args)
}

#[test]
fn a_read_only_schedule_says_so_in_its_notice_line_json_and_cancellation() {
    let site = site();
    let me = user_at_host();
    let (on, line, when) = scheduled(
        &site,
        &[
            "offline",
            "on",
            "--at",
            "+1h",
            "--read-only",
            "--message",
            "Re-indexing",
        ],
    );
    let tail = format!(" by {me}: Re-indexing");
    assert!(line.ends_with(&tail), "{line:?}");

    // The status line as always, the read-only schedule under it.
    let out = site.run_mysite(&["offline", "status"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stdout.len(), 2, "{out}");
    assert_eq!(out.stdout[0], "Status: ONLINE - Active sessions: 0");
    assert!(
        out.stdout[1].starts_with(&format!("Read-only scheduled at {when} (in "))
            && out.stdout[1].ends_with(&tail),
        "{out}"
    );
    assert_eq!(status_code(&site), 0, "only scheduled: ONLINE");
    let j = site.status_json();
    assert_eq!(j["mode"], "ONLINE", "{j:#}");
    assert_eq!(j["writes_refused"], false, "{j:#}");
    let s = &j["schedule"];
    assert_eq!(s["read_only"], true, "{j:#}");
    assert_eq!(s["pid"], on.pid(), "{j:#}");
    assert_eq!(s["message"], "Re-indexing", "{j:#}");
    assert_eq!(s["in_notice"], true, "{j:#}");
    // Writers still run before its time.
    assert_eq!(site.run_mysite(&["hello"]).code(), Some(0));

    // `off` names the kind of window it cancels, and so does the waiter.
    let off = site.spawn_mysite(&["offline", "off"]);
    assert_cancelled(off, on, Window::ReadOnly, &when);
    assert!(site.status_json()["schedule"].is_null());
}

#[test]
fn at_its_time_a_read_only_schedule_drains_writers_not_sessions_then_goes_read_only() {
    let site = site();
    let (import, done) = hold_import(&site);
    site.touch_session("alice");
    let (mut on, _, _) = scheduled(
        &site,
        &[
            "offline",
            "on",
            "--at",
            "+2s",
            "--read-only",
            "--timeout",
            "300",
            "--message",
            "Moving storage",
        ],
    );
    // At its time, exactly as `on --read-only`: the writers' drain.
    assert_eq!(
        on.line(),
        "Writes in progress detected. Waiting for them to end. (Web sessions read on)"
    );
    site.wait_for_mode(Mode::ReadOnlyPending);
    assert_eq!(status_code(&site), 5, "READONLY_PENDING");
    let j = site.status_json();
    assert_eq!(j["writes_refused"], true, "{j:#}");
    assert!(j["schedule"].is_null(), "the drain is no schedule: {j:#}");
    let view = site.mode();
    assert_eq!(view.record.message.as_deref(), Some("Moving storage"));
    assert_eq!(view.record.pid, on.pid());
    let refused = site.run_mysite(&["hello"]);
    assert_eq!(refused.code(), Some(REFUSED), "{refused}");
    assert!(
        on.is_running(),
        "held by `import`, started ONLINE: {}",
        on.finish()
    );
    // The writer ends: READONLY, the session reading on.
    release(&done);
    assert_eq!(import.finish().code(), Some(0));
    let out = on.finish();
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(
        out.stdout.last().map(String::as_str),
        Some("Status: READONLY - Active sessions: 1"),
        "{out}"
    );
    assert_eq!(out.stderr, "", "{out}");
    assert_eq!(status_code(&site), 6, "READONLY");
    assert_eq!(site.run_mysite(&["report"]).code(), Some(0), "readers run");
}

#[test]
fn a_killed_read_only_waiter_leaves_no_schedule_and_its_drain_lapses_to_online() {
    let site = site();
    // Killed during the notice: no schedule, for every reader at once.
    let (mut on, _, _) = scheduled(&site, &["offline", "on", "--at", "+1h", "--read-only"]);
    assert_eq!(site.status_json()["schedule"]["read_only"], true);
    on.kill9();
    site.schedule_released();
    assert_exact(
        &site.run_mysite(&["offline", "status"]),
        0,
        &["Status: ONLINE - Active sessions: 0"],
    );
    assert!(site.backend().schedule().unwrap().is_none());

    // Killed in its drain: READONLY_PENDING lapses to ONLINE, no schedule
    // is left to fire again, and writers run.
    let (import, done) = hold_import(&site);
    let (mut on, _, _) = scheduled(
        &site,
        &[
            "offline",
            "on",
            "--at",
            "+2s",
            "--read-only",
            "--timeout",
            "300",
        ],
    );
    site.wait_for_mode(Mode::ReadOnlyPending);
    on.kill9();
    let view = site.lapsed_to(Mode::Online);
    assert!(
        view.lapsed
            .is_some_and(|l| l.reason.contains("so the site is ONLINE")),
        "status says why"
    );
    assert!(site.backend().schedule().unwrap().is_none());
    assert!(site.status_json()["schedule"].is_null());
    assert!(!site.state().join("READONLY").exists(), "the marker went");
    assert_eq!(site.run_mysite(&["hello"]).code(), Some(0));
    release(&done);
    assert_eq!(import.finish().code(), Some(0));
}

#[test]
fn run_at_read_only_runs_its_command_inside_read_only_at_its_time() {
    let site = site();
    let me = user_at_host();
    let (run, line, _) = scheduled(
        &site,
        &["offline", "run", "--at", "+2s", "--read-only", "--", "mode"],
    );
    assert!(line.ends_with(&format!(" by {me}")), "{line:?}");
    assert_eq!(
        site.status_json()["schedule"]["argv"],
        serde_json::json!(["mode"])
    );
    let out = run.finish();
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stdout
            .iter()
            .any(|l| l == "Status: READONLY - Active sessions: 1"),
        "the command ran in READONLY: {out}"
    );
    let view = site.mode();
    assert_eq!(view.mode, Mode::Online, "the ONLINE found is put back");
    assert_eq!(view.record.by, me);
    assert!(site.status_json()["schedule"].is_null());
}
