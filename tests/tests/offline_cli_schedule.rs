//! Scheduled windows end to end: the real `manage` binary (`e2e-manage`)
//! waiting in the foreground for `offline on --at TIME` (and `offline run
//! --at`), its schedule seen by `status`, `--json` and `-v` during the
//! notice, gone with a killed waiter, cancelled by `off` (the waiter exits
//! 75 naming who), ended by an `on` that starts now, kept by an `offline
//! run` in between, refused twice or in the past, and going offline at its
//! time exactly as `on` does. Every wait is for a state, within the hang
//! guard; the short `+2s` schedules only set how long a passing run takes.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use maintenance_core::Mode;
use maintenance_core::clock::Timestamp;
use manage_tests::{
    CliSite, Proc, REFUSED, Window, assert_cancelled, assert_exact, send_signal, user_at_host,
};
use rustix::process::Signal;

const EXE: &str = env!("CARGO_BIN_EXE_e2e-manage");

const HEADER: &str =
    "Active sessions detected. Waiting for logout. (Session timeout set to 900 secs)";

/// Starts `manage ARGS…` (an `offline on|run --at …`) and waits until it
/// says its window is scheduled — from then on the schedule is live.
/// Returns the process, its line, and the time as that line shows it.
fn scheduled(site: &CliSite, args: &[&str]) -> (Proc, String, String) {
    scheduled_with(site, args, &[])
}

/// [`scheduled`], with `env` set for the waiting process.
fn scheduled_with(site: &CliSite, args: &[&str], env: &[(&str, &str)]) -> (Proc, String, String) {
    let mut cmd = site.command(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    manage_tests::scheduled(Proc::spawn(cmd), Window::Offline, args)
}

/// The time a JSON field holds.
fn time_of(v: &serde_json::Value) -> SystemTime {
    Timestamp::parse_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap()
        .system_time()
}

/// Asserts the site is ONLINE with nothing scheduled: the status line
/// alone, and no schedule in the JSON.
#[track_caller]
fn assert_nothing_scheduled(site: &CliSite) {
    assert_exact(
        &site.run(&["offline", "status"]),
        0,
        &["Status: ONLINE - Active sessions: 0"],
    );
    let j = site.status_json();
    assert!(j["schedule"].is_null(), "{j:#}");
}

/// Cancels the schedule with `off` and checks the waiter `on` (whose
/// schedule was at `when`) exits 75, saying the `off` cancelled it.
#[track_caller]
fn cancel(site: &CliSite, on: Proc, when: &str) {
    let off = site.spawn(&["offline", "off"]);
    assert_cancelled(off, on, Window::Offline, when);
    assert_nothing_scheduled(site);
}

#[test]
fn the_notice_line_json_and_details_show_the_schedule_while_it_waits() {
    let site = CliSite::new(EXE);
    let me = user_at_host();
    let (on, line, when) = scheduled(
        &site,
        &[
            "offline",
            "on",
            "--at",
            "+1h",
            "--message",
            "Upgrading the database",
        ],
    );
    let tail = format!(" by {me}: Upgrading the database");
    assert!(line.ends_with(&tail), "{line:?}");
    assert!(line.contains(" (in 59m "), "{line:?}");

    // The first line as always, the schedule under it.
    let out = site.run(&["offline", "status"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stdout.len(), 2, "{out}");
    assert_eq!(
        out.stdout[0], "Status: ONLINE - Active sessions: 0",
        "{out}"
    );
    let second = &out.stdout[1];
    assert!(
        second.starts_with(&format!("Offline scheduled at {when} (in ")) && second.ends_with(&tail),
        "{out}"
    );

    let j = site.status_json();
    assert_eq!(j["mode"], "ONLINE", "{j:#}");
    let s = &j["schedule"];
    assert_eq!(s["by"], me.as_str(), "{j:#}");
    assert_eq!(s["pid"], on.pid(), "{j:#}");
    assert_eq!(s["message"], "Upgrading the database", "{j:#}");
    assert_eq!(s["in_notice"], true, "all of the wait is notice: {j:#}");
    let now = SystemTime::now();
    let at = time_of(&s["at"]);
    assert!(at > now + Duration::from_secs(50 * 60) && at <= now + Duration::from_secs(3600));
    assert!(time_of(&s["notice_from"]) <= now, "{j:#}");
    assert!(s["seconds_left"].as_u64().unwrap() > 50 * 60, "{j:#}");

    // `-v` says who holds it.
    let v = site.run(&["offline", "status", "-v"]);
    assert!(
        v.stdout.iter().any(|l| l.starts_with(&format!(
            "  schedule: held by pid {} ({me}), set at ",
            on.pid()
        ))),
        "{v}"
    );
    cancel(&site, on, &when);

    // With --notice, users are told only from then; status says it anyway.
    let (on, _, when) = scheduled(&site, &["offline", "on", "--at", "+1h", "--notice", "10m"]);
    let j = site.status_json();
    let s = &j["schedule"];
    assert_eq!(s["in_notice"], false, "{j:#}");
    assert_eq!(
        time_of(&s["at"])
            .duration_since(time_of(&s["notice_from"]))
            .unwrap(),
        Duration::from_secs(600),
        "{j:#}"
    );
    assert!(s["message"].is_null(), "{j:#}");
    cancel(&site, on, &when);
}

#[test]
fn a_clock_time_is_its_next_occurrence_in_the_local_zone() {
    let site = CliSite::new(EXE);
    let (on, line, when) =
        scheduled_with(&site, &["offline", "on", "--at", "03:00"], &[("TZ", "UTC")]);
    assert!(when.ends_with("T03:00:00+00:00"), "{line:?}");
    let at = time_of(&site.status_json()["schedule"]["at"]);
    let now = SystemTime::now();
    assert!(
        at > now && at <= now + Duration::from_secs(86_400),
        "{line:?}"
    );
    assert_eq!(
        at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() % 86_400,
        3 * 3600
    );
    // The waiter shows it in its own zone; `off` in its own (here the
    // test's): the same instant.
    let off = site.spawn(&["offline", "off"]);
    let out = off.finish();
    assert_eq!(out.code(), Some(0), "{out}");
    let shown = out.stdout[0]
        .strip_prefix("Cancelled the offline window scheduled at ")
        .and_then(|r| r.split_once(" by "))
        .map(|(t, _)| t.to_owned())
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        Timestamp::parse_rfc3339(&shown).unwrap().system_time(),
        at,
        "{out}"
    );
    assert_eq!(on.finish().code(), Some(REFUSED));
}

#[test]
fn a_killed_waiter_leaves_no_schedule() {
    let site = CliSite::new(EXE);
    let (mut on, _, _) = scheduled(&site, &["offline", "on", "--at", "+1h", "--message", "m"]);
    assert!(site.status_json()["schedule"].is_object());
    // Reaped: every descriptor it had is closed.
    on.kill9();
    // Gone for every reader at once (on PostgreSQL once the server has read
    // the closed connection), without any cleanup.
    site.schedule_released();
    assert_nothing_scheduled(&site);
    assert!(site.backend().schedule().unwrap().is_none());
    // What it left holds nothing: a new schedule is taken.
    let (on, _, when) = scheduled(&site, &["offline", "on", "--at", "+2h"]);
    cancel(&site, on, &when);
}

#[test]
fn off_cancels_a_schedule_and_its_waiter_says_who_and_exits_75() {
    let site = CliSite::new(EXE);
    let (on, _, when) = scheduled(&site, &["offline", "on", "--at", "+1h", "--message", "m"]);
    cancel(&site, on, &when);
    // `off` without a schedule says only the status line.
    assert_exact(
        &site.run(&["offline", "off"]),
        0,
        &["Status: ONLINE - Active sessions: 0"],
    );
}

#[test]
fn an_interrupted_wait_withdraws_the_schedule_and_exits_130() {
    let site = CliSite::new(EXE);
    let (on, _, when) = scheduled(&site, &["offline", "on", "--at", "+1h"]);
    send_signal(on.pid(), Signal::TERM);
    let out = on.finish();
    assert_eq!(
        out.code(),
        Some(i32::from(maintenance_core::exit::INTERRUPTED)),
        "{out}"
    );
    assert_eq!(
        out.stderr,
        format!(
            "error: interrupted: the offline window scheduled at {when} is withdrawn; the site \
             stays ONLINE\n"
        ),
        "{out}"
    );
    assert_nothing_scheduled(&site);
}

#[test]
fn a_second_at_is_refused_naming_the_first() {
    let site = CliSite::new(EXE);
    let me = user_at_host();
    let (on, line, when) = scheduled(&site, &["offline", "on", "--at", "+1h"]);
    let first = format!(
        "error: an offline window is already scheduled at {when} by {me} (pid {}); only one at \
         a time: cancel it with `manage offline off`, or let it run and schedule the next one \
         afterwards\n",
        on.pid()
    );
    for second in [
        &["offline", "on", "--at", "+30m"][..],
        &["offline", "run", "--at", "+5m", "--", "hello"],
    ] {
        let out = site.run(second);
        assert_eq!(out.code(), Some(REFUSED), "{out}");
        assert_eq!(out.stderr, first, "{out}");
        assert!(out.stdout.is_empty(), "{out}");
    }
    // The first still stands.
    let status = site.run(&["offline", "status"]);
    assert_eq!(status.stdout.len(), 2, "{status}");
    assert!(line.starts_with(&status.stdout[1][..status.stdout[1].find(" (in ").unwrap()]));
    cancel(&site, on, &when);
}

#[test]
fn a_time_in_the_past_or_not_a_time_is_refused_saying_how_to_write_one() {
    let site = CliSite::new(EXE);
    for (args, needles) in [
        (
            &["offline", "on", "--at", "2020-01-01T00:00:00Z"][..],
            &[
                "invalid value '2020-01-01T00:00:00Z' for '--at <TIME>'",
                "\"2020-01-01T00:00:00Z\" is in the past",
                "now is ",
                "02:00 (the next 02:00, local time), +30m (from now)",
            ][..],
        ),
        (
            &[
                "offline",
                "run",
                "--at",
                "2020-01-01T00:00:00+02:00",
                "--",
                "hello",
            ],
            &["is in the past"],
        ),
        (
            &["offline", "on", "--at", "soon"],
            &["\"soon\" is not a time", "+30m"],
        ),
        (&["offline", "on", "--at", "+0s"], &["\"+0s\" is now"]),
        (&["offline", "on", "--notice", "5m"], &["--at <TIME>"]),
        (
            &["offline", "on", "--at", "+1h", "--force"],
            &["'--at <TIME>' cannot be used with '--force'"],
        ),
    ] {
        let out = site.run(args);
        assert_eq!(out.code(), Some(2), "{args:?}: {out}");
        out.assert_clean_error(needles);
        assert!(out.stdout.is_empty(), "{out}");
    }
    assert_nothing_scheduled(&site);
    assert!(site.mode().record.pid == 0, "nothing was written");
}

#[test]
fn on_without_at_goes_offline_now_and_ends_the_schedule() {
    let site = CliSite::new(EXE);
    let me = user_at_host();
    let (waiter, _, when) = scheduled(&site, &["offline", "on", "--at", "+1h"]);
    let now = site.spawn(&["offline", "on"]);
    let now_pid = now.pid();
    assert_exact(
        &now.finish(),
        0,
        &[
            &format!(
                "Ended the offline window scheduled at {when} by {me} (pid {}): going offline now.",
                waiter.pid()
            ),
            "Status: OFFLINE - Active sessions: 0",
        ],
    );
    let out = waiter.finish();
    assert_eq!(out.code(), Some(REFUSED), "{out}");
    assert_eq!(
        out.stderr,
        format!(
            "error: the offline window scheduled at {when} ended: {me} (pid {now_pid}) took the \
             site offline now with `offline on`\n"
        ),
        "{out}"
    );
    let status = site.run(&["offline", "status"]);
    assert_exact(&status, 0, &["Status: OFFLINE - Active sessions: 0"]);
}

#[test]
fn a_schedule_goes_offline_at_its_time_exactly_as_on_does() {
    let site = CliSite::new(EXE);
    // A user is logged in: at its time, the schedule waits for them.
    site.touch_session("alice");
    let (mut on, _, _) = scheduled(
        &site,
        &["offline", "on", "--at", "+2s", "--message", "Back at six"],
    );
    assert_eq!(on.line(), HEADER, "the drain, as `on`'s");
    site.wait_for_mode(Mode::Pending);
    let view = site.mode();
    assert_eq!(view.record.message.as_deref(), Some("Back at six"));
    assert_eq!(view.record.pid, on.pid());
    assert!(
        site.status_json()["schedule"].is_null(),
        "PENDING is no schedule any more"
    );
    site.end_session("alice");
    let out = on.finish();
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(
        out.stdout.last().map(String::as_str),
        Some("Status: OFFLINE - Active sessions: 0"),
        "{out}"
    );
    assert_eq!(out.stderr, "", "{out}");
    assert_eq!(site.mode().mode, Mode::Offline);
}

#[test]
fn run_at_schedules_the_one_liner_and_runs_it_at_its_time() {
    let site = CliSite::new(EXE);
    let me = user_at_host();
    // Scheduled ahead, status says what it runs; `off` cancels it unrun.
    let (run, _, when) = scheduled(
        &site,
        &["offline", "run", "--at", "+1h", "--", "hello", "Bob"],
    );
    let j = site.status_json();
    assert_eq!(
        j["schedule"]["argv"],
        serde_json::json!(["hello", "Bob"]),
        "{j:#}"
    );
    let v = site.run(&["offline", "status", "-v"]);
    assert!(
        v.stdout
            .iter()
            .any(|l| l.contains("; then runs `hello Bob`")),
        "{v}"
    );
    cancel(&site, run, &when);

    // At its time: offline, the command, back ONLINE.
    let (run, line, _) = scheduled(
        &site,
        &["offline", "run", "--at", "+2s", "--", "hello", "Bob"],
    );
    assert!(line.ends_with(&format!(" by {me}")), "{line:?}");
    let out = run.finish();
    assert_exact(&out, 0, &["Hello, Bob!"]);
    let view = site.mode();
    assert_eq!(view.mode, Mode::Online);
    assert_eq!(view.record.by, me, "the run put it back");
    assert_nothing_scheduled(&site);
}

#[test]
fn a_run_started_during_a_schedule_keeps_it_and_says_so() {
    let site = CliSite::new(EXE);
    let me = user_at_host();
    let (on, _, when) = scheduled(&site, &["offline", "on", "--at", "+1h"]);
    let out = site.run(&["offline", "run", "--", "hello", "Bob"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stdout, ["Hello, Bob!"], "{out}");
    assert_eq!(
        out.stderr,
        format!(
            "note: the offline window scheduled at {when} by {me} (pid {}) stays scheduled; this \
             run goes offline now and puts the site back as it found it\n",
            on.pid()
        ),
        "{out}"
    );
    assert_eq!(site.mode().mode, Mode::Online);
    assert_eq!(site.status_json()["schedule"]["pid"], on.pid());
    cancel(&site, on, &when);
}
