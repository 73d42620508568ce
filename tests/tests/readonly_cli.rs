//! The read-only tier from the operator's side, with the example site's
//! binary (`mysite`) as real processes: `offline on --read-only` waits for
//! a running command that may write and asks a drain-`stop` worker to stop,
//! but not for a reader; READONLY admits read-only commands and refuses the
//! others; READONLY goes on to OFFLINE and back ONLINE; a killed waiter of
//! either drain leaves the mode it found (I5); `offline run --read-only`
//! restores the mode it found; the status and its exit codes name each
//! phase.
//!
//! The commands that hold a task until the test lets them go are external
//! `manage-<name>` scripts that wait for a file: nothing here waits for a
//! sleep to be long enough, and every wait is a hang guard.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use maintenance_core::Mode;
use manage_tests::{CliSite, Proc, REFUSED, poll_until};

const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");

/// An external command that says `started`, then holds its task until the
/// file named by its first argument exists.
const HOLD: &str =
    "#!/bin/sh\necho started\nwhile [ ! -e \"$1\" ]; do sleep 0.02; done\necho done\n";

/// A site with `import` (an external command that may write), `scan` (an
/// external command manage.toml marks read-only), both holding until a
/// file appears, and `mode` (prints the status it runs in).
fn site() -> CliSite {
    let site = CliSite::with_config(MYSITE, "[commands.scan]\naccess = \"read-only\"\n");
    site.external("import", HOLD);
    site.external("scan", HOLD);
    site.external("mode", "#!/bin/sh\n\"$MANAGE\" offline status\n");
    site
}

/// A file whose creation lets a held command end.
fn gate(site: &CliSite, name: &str) -> PathBuf {
    site.dir().join(format!("release-{name}"))
}

/// Starts `mysite NAME <release file>`, once it has said `started`.
fn hold(site: &CliSite, name: &str) -> (Proc, PathBuf) {
    let release = gate(site, name);
    let mut p = site.spawn_mysite(&[name, release.to_str().unwrap()]);
    assert_eq!(p.line(), "started", "`mysite {name}` did not start");
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

/// Starts `mysite offline on ARGS… --timeout 300` and waits until it says
/// what holds it: from then on the site is in its drain.
fn waiting_on(site: &CliSite, args: &[&str], header: &str) -> Proc {
    let mut all = vec!["offline", "on", "--timeout", "300"];
    all.extend_from_slice(args);
    let mut p = site.spawn_mysite(&all);
    let line = p.line();
    assert!(
        line.starts_with(header),
        "`mysite {}` does not wait: {line:?}",
        all.join(" ")
    );
    p
}

const WRITES: &str = "Writes in progress detected";
const SESSIONS: &str = "Active sessions detected";

#[test]
fn a_running_command_that_may_write_holds_off_read_only_until_it_ends() {
    let site = site();
    let (import, done) = hold(&site, "import");
    let (mut scan, scanned) = hold(&site, "scan");
    site.touch_session("alice");
    let mut on = waiting_on(&site, &["--read-only"], WRITES);
    // Sessions do not count: one writer holds it.
    let progress = on.line();
    assert!(progress.starts_with("1 pending writer. "), "{progress:?}");
    assert_eq!(status_code(&site), 5, "READONLY_PENDING");
    let st = site.status_json();
    assert_eq!(
        (st["mode"].as_str(), st["writes_refused"].as_bool()),
        (Some("READONLY_PENDING"), Some(true))
    );
    // Nothing new that may write starts; what only reads does.
    let refused = site.run_mysite(&["hello"]);
    assert_eq!(refused.code(), Some(REFUSED), "{refused}");
    assert!(
        refused.text().contains("the site is READONLY_PENDING")
            && refused.text().contains("declares access read-only"),
        "{refused}"
    );
    let report = site.run_mysite(&["report"]);
    assert_eq!(report.code(), Some(0), "a reader runs: {report}");
    assert!(
        on.is_running(),
        "READONLY while `import` runs: {}",
        on.finish()
    );
    // The writer ends: READONLY, with the session and the reader still live.
    release(&done);
    assert_eq!(import.finish().code(), Some(0));
    let out = on.finish();
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(
        out.stdout.last().map(String::as_str),
        Some("Status: READONLY - Active sessions: 2"),
        "the session and `scan` read on: {out}"
    );
    assert_eq!(status_code(&site), 6, "READONLY");
    assert!(scan.is_running(), "the reader was never asked to stop");
    release(&scanned);
    assert_eq!(scan.finish().code(), Some(0));
}

#[test]
fn a_worker_with_drain_stop_is_asked_to_stop_and_a_reader_is_not() {
    let site = CliSite::with_config(
        MYSITE,
        "[commands.scan]\naccess = \"read-only\"\ndrain = \"stop\"\n",
    );
    site.external("scan", HOLD);
    let mut worker = site.spawn_mysite(&["worker", "--job-ms", "50"]);
    assert_eq!(worker.line(), "worker started");
    let (mut scan, scanned) = hold(&site, "scan");
    let out = site.run_mysite(&["offline", "on", "--read-only", "--timeout", "300"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stdout
            .iter()
            .any(|l| l == "Asked 1 command to stop; waiting for it."),
        "{out}"
    );
    assert_eq!(
        out.stdout.last().map(String::as_str),
        Some("Status: READONLY - Active sessions: 1"),
        "{out}"
    );
    let w = worker.finish();
    assert_eq!(w.code(), Some(0), "stopped cleanly: {w}");
    assert!(
        w.stdout
            .iter()
            .any(|l| l.starts_with("worker stopping after")),
        "{w}"
    );
    assert!(scan.is_running(), "a read-only drain-stop command reads on");
    // Going on to OFFLINE asks the reader to stop: its SIGTERM ends it.
    let out = site.run_mysite(&["offline", "on", "--timeout", "300"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(
        out.stdout.last().map(String::as_str),
        Some("Status: OFFLINE - Active sessions: 0"),
        "{out}"
    );
    assert_eq!(
        scan.finish().code(),
        Some(143),
        "SIGTERM, as drain stop promises"
    );
    drop(scanned);
}

#[test]
fn read_only_admits_readers_and_refuses_writers_with_the_way_out() {
    let site = site();
    site.run_mysite(&[
        "offline",
        "on",
        "--read-only",
        "--message",
        "Moving storage",
    ]);
    assert_eq!(site.mode().mode, Mode::ReadOnly);
    assert_eq!(site.run_mysite(&["report"]).code(), Some(0));
    let (scan, scanned) = hold(&site, "scan");
    release(&scanned);
    assert_eq!(
        scan.finish().code(),
        Some(0),
        "manage.toml marks an external command read-only"
    );
    let hello = site.run_mysite(&["hello"]);
    assert_eq!(hello.code(), Some(REFUSED), "{hello}");
    assert!(hello.text().contains("Moving storage"), "{hello}");
    let ignore = site.run_mysite(&["--ignore-maintenance", "hello"]);
    assert_eq!(ignore.code(), Some(0), "the override: {ignore}");
    let migrate = site.run_mysite(&["migrate"]);
    assert_eq!(migrate.code(), Some(REFUSED), "{migrate}");
    assert!(
        migrate
            .text()
            .contains("runs only while the site is OFFLINE"),
        "{migrate}"
    );
    // `backup` is allowed: it runs inside the read-only window.
    assert_eq!(site.run_mysite(&["backup", "--ms", "0"]).code(), Some(0));
    // Marking a registered command read-only would loosen it: refused.
    let loose = CliSite::with_config(MYSITE, "[commands.hello]\naccess = \"read-only\"\n");
    let out = loose.run_mysite(&["hello"]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.text()
            .contains("[commands.hello] access = \"read-only\""),
        "{out}"
    );
}

#[test]
fn read_only_goes_on_to_offline_and_back_online() {
    let site = site();
    let on = site.run_mysite(&["offline", "on", "--read-only"]);
    assert_eq!(
        on.stdout.last().map(String::as_str),
        Some("Status: READONLY - Active sessions: 0"),
        "{on}"
    );
    // A reader started during READONLY holds off OFFLINE (I1), and so does
    // a session (the usual drain).
    let (scan, scanned) = hold(&site, "scan");
    site.touch_session("bob");
    let mut off = waiting_on(&site, &[], SESSIONS);
    assert_eq!(status_code(&site), 3, "PENDING");
    let st = site.status_json();
    assert_eq!(
        (st["from"].as_str(), st["writes_refused"].as_bool()),
        (Some("READONLY"), Some(true)),
        "{st}"
    );
    assert_eq!(
        site.run_mysite(&["report"]).code(),
        Some(REFUSED),
        "PENDING refuses readers too"
    );
    site.end_session("bob");
    assert!(
        off.is_running(),
        "OFFLINE while `scan`, started READONLY, runs"
    );
    release(&scanned);
    assert_eq!(scan.finish().code(), Some(0));
    let out = off.finish();
    assert_eq!(
        out.stdout.last().map(String::as_str),
        Some("Status: OFFLINE - Active sessions: 0"),
        "{out}"
    );
    assert_eq!(status_code(&site), 4);
    let out = site.run_mysite(&["offline", "off"]);
    assert_eq!(
        out.stdout.last().map(String::as_str),
        Some("Status: ONLINE - Active sessions: 0"),
        "{out}"
    );
    assert_eq!(status_code(&site), 0);
    assert_eq!(site.run_mysite(&["hello"]).code(), Some(0));
}

#[test]
fn a_killed_waiter_leaves_the_mode_it_found() {
    let site = site();
    // From ONLINE: a killed read-only waiter leaves the site ONLINE.
    let (import, done) = hold(&site, "import");
    let mut on = waiting_on(&site, &["--read-only"], WRITES);
    assert_eq!(site.mode().mode, Mode::ReadOnlyPending);
    on.kill9();
    let view = site.lapsed_to(Mode::Online);
    assert!(
        view.lapsed
            .is_some_and(|l| l.reason.contains("so the site is ONLINE"))
    );
    assert_eq!(status_code(&site), 0);
    assert_eq!(
        site.run_mysite(&["hello"]).code(),
        Some(0),
        "writers run again"
    );
    assert!(
        !site.state().join("READONLY").exists(),
        "the marker went with the lapse"
    );
    release(&done);
    assert_eq!(import.finish().code(), Some(0));
    // From READONLY: a killed waiter going OFFLINE leaves it READONLY,
    // never ONLINE.
    site.run_mysite(&["offline", "on", "--read-only"]);
    site.touch_session("carol");
    let mut on = waiting_on(&site, &[], SESSIONS);
    assert_eq!(site.mode().mode, Mode::Pending);
    on.kill9();
    site.lapsed_to(Mode::ReadOnly);
    assert_eq!(status_code(&site), 6);
    let status = site.run_mysite(&["offline", "status", "-v"]);
    assert!(
        status.text().contains("lapsed") && status.text().contains("so the site is READONLY"),
        "{status}"
    );
    assert_eq!(
        site.run_mysite(&["hello"]).code(),
        Some(REFUSED),
        "writes stay refused"
    );
}

#[test]
fn offline_run_read_only_runs_inside_a_read_only_window_and_restores_the_mode_it_found() {
    let site = site();
    let run = site.run_mysite(&["offline", "run", "--read-only", "-v", "--", "mode"]);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        run.stdout
            .iter()
            .any(|l| l == "Status: READONLY - Active sessions: 1"),
        "{run}"
    );
    assert!(run.text().contains("restored to ONLINE"), "{run}");
    assert_eq!(site.mode().mode, Mode::Online);
    // A required command that may write needs an OFFLINE window.
    let migrate = site.run_mysite(&["offline", "run", "--read-only", "--", "migrate"]);
    assert_eq!(migrate.code(), Some(REFUSED), "{migrate}");
    assert_eq!(site.mode().mode, Mode::Online, "restored after the refusal");
    // From READONLY, `offline run` goes on to OFFLINE and puts READONLY back.
    site.run_mysite(&["offline", "on", "--read-only"]);
    let run = site.run_mysite(&["offline", "run", "--", "mode"]);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        run.stdout.iter().any(|l| l.starts_with("Status: OFFLINE")),
        "{run}"
    );
    assert_eq!(site.mode().mode, Mode::ReadOnly, "READONLY put back");
    let migrate = site.run_mysite(&[
        "offline",
        "run",
        "--",
        "migrate",
        "--steps",
        "1",
        "--step-ms",
        "0",
    ]);
    assert_eq!(
        migrate.code(),
        Some(0),
        "migrate in the OFFLINE window from READONLY: {migrate}"
    );
    assert_eq!(site.mode().mode, Mode::ReadOnly);
    // Already READONLY: `--read-only` runs in it and leaves it so.
    let run = site.run_mysite(&["offline", "run", "--read-only", "--", "report"]);
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(site.mode().mode, Mode::ReadOnly);
    // A drain toward OFFLINE refuses one toward READONLY, and back.
    site.run_mysite(&["offline", "off"]);
    let (import, done) = hold(&site, "import");
    let on = waiting_on(&site, &["--read-only"], WRITES);
    let out = site.run_mysite(&["offline", "on", "--timeout", "1"]);
    assert_eq!(out.code(), Some(REFUSED), "{out}");
    assert!(
        out.text()
            .contains("once it is READONLY, `offline on` continues to OFFLINE"),
        "{out}"
    );
    release(&done);
    assert_eq!(import.finish().code(), Some(0));
    assert_eq!(on.finish().code(), Some(0));
    poll_until("READONLY", || {
        (site.mode().mode == Mode::ReadOnly).then_some(())
    });
}
