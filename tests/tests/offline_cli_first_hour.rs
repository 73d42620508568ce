//! What a new user meets first with `manage offline`, end to end through
//! the real `manage` binary (`e2e-manage`) and, for the web, the example
//! site's app (`e2e-mysite`): without `--timeout` a wait has no limit;
//! `--timeout 0` with nothing live goes OFFLINE; negative durations reach
//! the parser; `--retry-after` in the past and control characters in
//! `--message` are refused, and a stored message is escaped by `status
//! -v`; `offline run -v` says each mode change; the singular "1 pending
//! session."; and `on --force` / `run --force` return, or run their
//! command, only once the app turns users away.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use maintenance_core::Mode;
use maintenance_core::backend::ModeChange;
use manage_tests::{MySite, Outcome, Proc, Site, TurnedAway, assert_exact, poll_until};

const EXE: &str = env!("CARGO_BIN_EXE_e2e-manage");

const HEADER: &str =
    "Active sessions detected. Waiting for logout. (Session timeout set to 900 secs)";

/// The limit `offline on` and `offline run` used to give up at when no
/// `--timeout` was given.
const OLD_DEFAULT: Duration = Duration::from_secs(60);

/// Asserts `out` exited 0 with `last` as its last line on stdout.
#[track_caller]
fn assert_done_with(out: &Outcome, last: &str) {
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stdout.last().map(String::as_str), Some(last), "{out}");
}

/// Starts `manage ARGS…` against `site`, which one web session holds, and
/// reads its first two lines: the header, then one pending session.
fn held_by_one_session(site: &Site, args: &[&str]) -> Proc {
    let mut p = site.spawn(args);
    assert_eq!(p.line(), HEADER);
    assert_eq!(p.line(), "1 pending session. * (0 sec)");
    p
}

#[test]
fn without_timeout_on_and_run_wait_past_the_old_60_s_limit_until_nothing_is_live() {
    let on_site = Site::new(EXE);
    let run_site = Site::new(EXE);
    on_site.touch_session("alice");
    run_site.touch_session("bob");
    let started = Instant::now();
    let mut on = held_by_one_session(&on_site, &["offline", "on"]);
    let mut run = held_by_one_session(&run_site, &["offline", "run", "--", "hello"]);
    // Both still wait, PENDING, well past the old limit.
    let past = OLD_DEFAULT + Duration::from_secs(2);
    while started.elapsed() < past {
        assert!(on.is_running() && run.is_running(), "gave up early");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        on.is_running() && run.is_running(),
        "gave up after the old limit"
    );
    assert_eq!(on_site.mode().mode, Mode::Pending);
    assert_eq!(run_site.mode().mode, Mode::Pending);
    // A log gets no hint line: a progress line only on a change.
    assert_eq!(on.try_line(), None);

    on_site.end_session("alice");
    run_site.end_session("bob");
    assert_done_with(&on.finish(), "Status: OFFLINE - Active sessions: 0");
    assert_done_with(&run.finish(), "Hello, world!");
}

#[test]
fn timeout_zero_with_nothing_live_goes_offline_and_with_something_live_names_it() {
    let site = Site::new(EXE);
    assert_exact(
        &site.run(&["offline", "on", "--timeout", "0"]),
        0,
        &["Status: OFFLINE - Active sessions: 0"],
    );
    assert_eq!(site.mode().mode, Mode::Offline);
    assert_exact(
        &site.run(&["offline", "off"]),
        0,
        &["Status: ONLINE - Active sessions: 0"],
    );
    assert_exact(
        &site.run(&["offline", "run", "--timeout", "0", "--", "hello"]),
        0,
        &["Hello, world!"],
    );
    assert_eq!(site.mode().mode, Mode::Online, "restored");

    // Something live: it gives up at once, naming it.
    site.touch_session("alice");
    let out = site.run(&["offline", "on", "--timeout", "0"]);
    assert_eq!(out.code(), Some(124), "{out}");
    assert_eq!(
        out.stdout.len(),
        2,
        "the header and one progress line: {out}"
    );
    let err = out.stderr.as_str();
    assert!(
        err.lines().count() == 3
            && err.starts_with(
                "error: timed out after 0 s; still live:\n  - 1 web session (the last expires in "
            )
            && err.ends_with(")\nThe site is back ONLINE.\n"),
        "{out}"
    );
    assert_eq!(site.mode().mode, Mode::Online);
}

/// `offline run -v`'s lines on stderr, without the `offline run: ` prefix.
fn mode_lines(out: &Outcome) -> Vec<&str> {
    out.stderr
        .lines()
        .map(|l| {
            l.strip_prefix("offline run: ")
                .unwrap_or_else(|| panic!("not a mode line {l:?}: {out}"))
        })
        .collect()
}

#[test]
fn run_with_v_says_each_mode_change_on_stderr() {
    let site = Site::new(EXE);
    let out = site.run(&["offline", "run", "-v", "--", "hello"]);
    assert_eq!(
        (out.code(), &out.stdout[..]),
        (Some(0), &["Hello, world!".to_owned()][..]),
        "{out}"
    );
    assert_eq!(
        mode_lines(&out),
        [
            "PENDING: nobody new gets in; waiting for what is live to end",
            "OFFLINE: running `hello` inside the window",
            "restored to ONLINE",
        ],
        "{out}"
    );

    // Waiting for a session first: the same steps around the progress.
    site.touch_session("alice");
    let run = held_by_one_session(&site, &["offline", "run", "-v", "--", "hello", "Ann"]);
    site.end_session("alice");
    let out = run.finish();
    assert_done_with(&out, "Hello, Ann!");
    assert_eq!(
        mode_lines(&out),
        [
            "PENDING: nobody new gets in; waiting for what is live to end",
            "OFFLINE: running `hello Ann` inside the window",
            "restored to ONLINE",
        ],
        "{out}"
    );

    let out = site.run(&["offline", "run", "-v", "--force", "--", "hello"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(
        mode_lines(&out),
        [
            "OFFLINE at once (--force): running `hello` inside the window",
            "restored to ONLINE",
        ],
        "{out}"
    );

    site.run(&["offline", "on"]);
    assert_eq!(site.mode().mode, Mode::Offline);
    let out = site.run(&["offline", "run", "-v", "--", "hello"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(
        mode_lines(&out),
        [
            "already OFFLINE: running `hello` inside the window; the site stays OFFLINE",
            "left OFFLINE, as it was found",
        ],
        "{out}"
    );
    assert_eq!(site.mode().mode, Mode::Offline);

    // Without -v, none of it.
    let out = site.run(&["offline", "run", "--", "hello"]);
    assert_eq!((out.code(), out.stderr.as_str()), (Some(0), ""), "{out}");
}

#[test]
fn a_message_with_control_characters_is_refused_and_a_stored_one_is_escaped_by_status_v() {
    let site = Site::new(EXE);
    for given in ["\x1b[2J\x1b[31mGone", "two\nlines", "bell\x07"] {
        let out = site.run(&["offline", "on", "--message", given]);
        assert_eq!(out.code(), Some(2), "{given:?}: {out}");
        out.assert_clean_error(&["--message", "is a control character", "a tab is fine"]);
        assert_eq!(
            site.mode().record.generation,
            0,
            "{given:?} changed nothing"
        );
    }
    assert_exact(
        &site.run(&["offline", "on", "--message", "Back at 6\tsharp"]),
        0,
        &["Status: OFFLINE - Active sessions: 0"],
    );
    assert_eq!(
        site.mode().record.message.as_deref(),
        Some("Back at 6\tsharp")
    );

    // Another program may store anything through the core API.
    let raw = "\x1b[2J\x1b[31mBack\x07 soon\r";
    site.backend()
        .force_offline(&ModeChange::by_this_process().message(Some(raw.into())))
        .unwrap();
    let v = site.run(&["offline", "status", "-v"]);
    assert_eq!(v.code(), Some(0), "{v}");
    assert!(
        v.stdout
            .contains(&"  message: \\u{1b}[2J\\u{1b}[31mBack\\u{7} soon\\r".to_owned()),
        "{v}"
    );
    assert!(
        !v.text().chars().any(|c| c.is_control() && c != '\n'),
        "no control character reaches the terminal: {v}"
    );
    assert_eq!(site.status_json()["message"], raw, "JSON keeps it exact");
}

#[test]
fn a_retry_after_time_in_the_past_is_refused_with_2_and_changes_nothing() {
    let site = Site::new(EXE);
    for given in ["2020-01-01T00:00:00Z", "1999-12-31T23:00:00-01:00"] {
        for verb in [&["offline", "on"][..], &["offline", "on", "--force"]] {
            let mut args = verb.to_vec();
            args.extend(["--retry-after", given]);
            let out = site.run(&args);
            assert_eq!(out.code(), Some(2), "{args:?}: {out}");
            out.assert_clean_error(&[
                "--retry-after",
                &format!("{given:?} is not in the future"),
                "give a later time, or seconds from now (600)",
            ]);
        }
    }
    assert_eq!(site.mode().record.generation, 0, "nothing changed");
    // A time to come and seconds are taken.
    assert_exact(
        &site.run(&["offline", "on", "--retry-after", "2099-01-01T00:00:00Z"]),
        0,
        &["Status: OFFLINE - Active sessions: 0"],
    );
    assert_exact(
        &site.run(&["offline", "on", "--retry-after", "600"]),
        0,
        &["Status: OFFLINE - Active sessions: 0"],
    );
}

#[test]
fn negative_durations_reach_the_parser_which_says_what_is_wrong() {
    let site = Site::new(EXE);
    for (args, flag) in [
        (
            &["offline", "on", "--timeout", "-1"][..],
            "--timeout <SECS>",
        ),
        (&["offline", "on", "--grace", "-1"], "--grace <SECS>"),
        (
            &["offline", "run", "--timeout", "-1", "--", "hello"],
            "--timeout <SECS>",
        ),
        (
            &["offline", "on", "--retry-after", "-5"],
            "--retry-after <SECS|TIME>",
        ),
    ] {
        let out = site.run(args);
        assert_eq!(out.code(), Some(2), "{args:?}: {out}");
        let value = args[args.iter().position(|a| a.starts_with("--")).unwrap() + 1];
        out.assert_clean_error(&[&format!("invalid value '{value}' for '{flag}'")]);
        assert!(
            !out.stderr.contains("unexpected argument"),
            "{args:?}: {out}"
        );
        assert!(
            out.stderr.contains("negative") || out.stderr.contains("≥ 0"),
            "it says the value cannot be negative: {out}"
        );
    }
    assert_eq!(site.mode().record.generation, 0, "nothing changed");
}

const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");

/// A deployment of the example site whose app refreshes its view of the
/// mode every second (the tests' usual 50 ms would hide a missing wait),
/// serving, its home page answered.
fn slow_refresh_site() -> (MySite, manage_tests::Server) {
    let site = MySite::new(MYSITE);
    site.write_config("refresh_interval = \"1s\"");
    let server = site.serve(&[]);
    server.get("/", &[]).assert_home_page("ONLINE");
    (site, server)
}

#[test]
fn on_force_returns_only_once_the_app_turns_users_away() {
    let (site, server) = slow_refresh_site();
    let out = site.run_ok(&["offline", "on", "--force"]);
    assert_eq!(
        out.stdout,
        ["Status: OFFLINE - Active sessions: 0"],
        "{out}"
    );
    // At once: a deploy script's next step finds the site closed.
    server
        .get("/", &[])
        .assert_turned_away(TurnedAway::Redirect, None, "right after `on --force`");
}

#[test]
fn run_force_runs_its_command_only_once_the_app_turns_users_away() {
    let (site, server) = slow_refresh_site();
    let _run = site.spawn(&[
        "offline",
        "run",
        "--force",
        "--",
        "migrate",
        "--steps",
        "1",
        "--step-ms",
        "30000",
    ]);
    // The window says its command runs just before it starts it.
    poll_until("the window's command to run", || {
        let out = site.run_ok(&["offline", "status", "--json"]);
        let j: serde_json::Value = serde_json::from_str(&out.stdout.join("\n")).unwrap();
        (j["window"]["state"] == "running").then_some(())
    });
    server
        .get("/", &[])
        .assert_turned_away(TurnedAway::Redirect, None, "while `migrate` runs");
}
