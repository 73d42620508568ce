//! `manage offline on|activate` end to end: the real `manage` binary
//! (`e2e-manage`) waiting for real live tasks (fixture sleepers in child
//! processes) and web sessions (touched through the core API): its exact
//! output in a log and under a pseudo-terminal, going OFFLINE soon after the
//! last holder ends, timing out (124, naming the holders), interrupted (130),
//! killed (PENDING lapses), joined by a second `on`, `--grace`, cancelled by
//! `off` (75), and refused from inside a tracked command (75).

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use maintenance_core::Mode;
use manage_tests::{
    CliSite, HANG_GUARD, Outcome, Proc, assert_exact, is_alive, parse_progress, plain_progress,
    send_signal, user_at_host,
};
use rustix::process::Signal;

const EXE: &str = env!("CARGO_BIN_EXE_e2e-manage");

const HEADER: &str =
    "Active sessions detected. Waiting for logout. (Session timeout set to 900 secs)";

/// Starts `offline on ARGS…` and waits until it says it waits: the header
/// django-site-maintenance prints, kept word for word, then its first
/// progress line, which it returns.
fn waiting_on(site: &CliSite, args: &[&str]) -> (Proc, String) {
    let mut all = vec!["offline", "on"];
    all.extend_from_slice(args);
    let mut on = site.spawn(&all);
    assert_eq!(on.line(), HEADER);
    let progress = on.line();
    (on, progress)
}

/// The line naming a task, as a timeout or `status -v` lists it.
fn task_line_prefix(name: &str, pid: u32) -> String {
    format!(
        "  - command `{name}` (pid {pid}, {}, running for ",
        user_at_host()
    )
}

/// The sessions' last expiry as the core reads it.
fn last_expiry(site: &CliSite) -> String {
    let sessions = site.backend().sessions().unwrap();
    sessions
        .iter()
        .map(|s| s.expires_at)
        .max()
        .expect("a live session")
        .to_string()
}

/// Asserts `out` exited with `code`, printed plain progress lines (after
/// `prev`, the last one already read) and then exactly `rest`, and nothing
/// on stderr.
#[track_caller]
fn assert_after_progress(out: &Outcome, code: i32, prev: &str, rest: &[&str]) {
    assert_eq!(out.code(), Some(code), "{out}");
    let n = plain_progress(Some(prev), &out.stdout);
    assert_eq!(out.stdout[n..], *rest, "{out}");
    assert_eq!(out.stderr, "", "{out}");
}

/// Asserts the site is ONLINE after a clean leave: status says so, nothing
/// lapsed, and a tracked command may start.
#[track_caller]
fn assert_online_cleanly(site: &CliSite, active: usize) {
    assert_exact(
        &site.run(&["offline", "status", "--exit-code"]),
        0,
        &[&format!("Status: ONLINE - Active sessions: {active}")],
    );
    let j = site.status_json();
    assert_eq!(j["mode"], "ONLINE", "{j:#}");
    assert!(j["lapsed"].is_null(), "a clean leave, not a lapse: {j:#}");
    assert_exact(&site.run(&["hello"]), 0, &["Hello, world!"]);
}

#[test]
fn on_waits_for_a_running_command_and_goes_offline_soon_after_it_ends() {
    let site = CliSite::new(EXE);
    let (sleeper, _) = site.start(&["sleeper", "--secs", "60"]);
    let (mut on, progress) = waiting_on(&site, &[]);
    assert_eq!(progress, "1 pending session. * (0 sec)");
    assert_eq!(site.mode().mode, Mode::Pending);
    assert!(on.is_running(), "it waits while the command runs");

    let ended = Instant::now();
    send_signal(sleeper.pid(), Signal::TERM);
    let s = sleeper.finish();
    assert_eq!(s.stdout, ["stopping"], "{s}");
    let out = on.finish();
    let reaction = ended.elapsed();
    assert_after_progress(
        &out,
        0,
        &progress,
        &["Status: OFFLINE - Active sessions: 0"],
    );
    eprintln!("SIGTERM of the last command → `offline on` exited OFFLINE after {reaction:?}");
    assert_exact(
        &site.run(&["offline", "status", "--exit-code"]),
        4,
        &["Status: OFFLINE - Active sessions: 0"],
    );
}

#[test]
fn in_a_log_progress_is_plain_lines_at_most_once_a_second_and_only_on_a_change() {
    let site = CliSite::with_config(EXE, "session_timeout = \"10m\"");
    let (first, _) = site.start(&["sleeper-many", "--secs", "60"]);
    let (second, _) = site.start(&["sleeper-many", "--secs", "60"]);
    let mut on = site.spawn(&["offline", "on"]);
    assert_eq!(
        on.line(),
        "Active sessions detected. Waiting for logout. (Session timeout set to 600 secs)"
    );
    assert_eq!(on.line(), "2 pending sessions. * (0 sec)");
    // More than a second with no change: no line.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(on.try_line(), None, "a line without a change");
    send_signal(first.pid(), Signal::TERM);
    let line = on.line();
    let secs: u64 = line
        .strip_prefix("1 pending session. - (")
        .and_then(|l| l.strip_suffix(" sec)"))
        .unwrap_or_else(|| panic!("{line:?}"))
        .parse()
        .unwrap();
    assert!(secs >= 1, "{line:?}");
    send_signal(second.pid(), Signal::TERM);
    assert_after_progress(
        &on.finish(),
        0,
        &line,
        &["Status: OFFLINE - Active sessions: 0"],
    );
    drop((first, second));
}

/// A pseudo-terminal: the reading side, and the terminal a child writes
/// to (output post-processing off, so the bytes read are the bytes
/// written).
fn pty() -> (std::fs::File, OwnedFd) {
    use rustix::fs::{Mode as FileMode, OFlags};
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    use rustix::termios::{OptionalActions, OutputModes, tcgetattr, tcsetattr};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
        .expect("open a pseudo-terminal");
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let terminal = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        FileMode::empty(),
    )
    .expect("open the terminal side");
    let mut t = tcgetattr(&terminal).unwrap();
    t.output_modes.remove(OutputModes::OPOST);
    tcsetattr(&terminal, OptionalActions::Now, &t).unwrap();
    (std::fs::File::from(master), terminal)
}

#[test]
fn on_a_terminal_the_progress_line_is_redrawn_in_place() {
    let site = CliSite::new(EXE);
    let (sleeper, _) = site.start(&["sleeper", "--secs", "60"]);
    let (mut master, terminal) = pty();
    let mut cmd = site.command(&["offline", "on"]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(terminal))
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    // Our copy of the terminal side closes here, so the reader sees the
    // end once the child has exited.
    drop(cmd);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once no process has the terminal open.
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    // Wait for the third redraw, then end the holder.
    let deadline = Instant::now() + HANG_GUARD;
    while !String::from_utf8_lossy(&seen.lock().unwrap()).contains("(2 sec)\x1b[K") {
        assert!(
            Instant::now() < deadline,
            "no redraw at 2 s: {:?}",
            String::from_utf8_lossy(&seen.lock().unwrap())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    send_signal(sleeper.pid(), Signal::TERM);
    let deadline = Instant::now() + HANG_GUARD;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "`offline on` hung");
        std::thread::sleep(Duration::from_millis(10));
    };
    reader.join().unwrap();
    drop(sleeper);
    assert_eq!(status.code(), Some(0));

    let text = String::from_utf8(seen.lock().unwrap().clone()).unwrap();
    // Under the header, on a terminal only, how to bound or cancel the wait.
    let head = format!(
        "{HEADER}\nNo time limit: Ctrl-C cancels (the site goes back ONLINE); --timeout SECS \
         bounds the wait.\n"
    );
    let tail = "\nStatus: OFFLINE - Active sessions: 0\n";
    assert!(text.starts_with(&head), "{text:?}");
    assert!(text.ends_with(tail), "{text:?}");
    let redraws = &text[head.len()..text.len() - tail.len()];
    assert!(!redraws.contains('\n'), "redrawn in place: {text:?}");
    let mut draws = redraws.split('\r');
    assert_eq!(
        draws.next(),
        Some(""),
        "each draw starts with \\r: {text:?}"
    );
    let mut last: Option<(usize, char, u64)> = None;
    let mut longest = 0;
    for d in draws {
        let body = d
            .strip_suffix("\x1b[K")
            .unwrap_or_else(|| panic!("each draw clears the rest of the line: {text:?}"));
        let (n, mark, secs) =
            parse_progress(body).unwrap_or_else(|| panic!("{body:?} in {text:?}"));
        assert!(n <= 1, "{text:?}");
        match last {
            None => assert_eq!((n, mark, secs), (1, '*', 0), "{text:?}"),
            Some((ln, lm, ls)) => {
                assert_ne!(
                    (n, secs),
                    (ln, ls),
                    "a redraw only when something changed: {text:?}"
                );
                assert!(secs >= ls, "{text:?}");
                if secs != ls {
                    assert_ne!(mark, lm, "the mark alternates: {text:?}");
                }
            }
        }
        if n == 1 {
            longest = secs;
        }
        last = Some((n, mark, secs));
    }
    assert!(longest >= 2, "redrawn at 0, 1 and 2 s at least: {text:?}");
}

#[test]
fn a_timeout_goes_back_online_exits_124_and_names_what_was_live() {
    let site = CliSite::new(EXE);
    let (sleeper, _) = site.start(&["sleeper", "--secs", "60"]);
    site.touch_session("alice");
    site.touch_session("bob");
    let out = site.run(&["offline", "on", "--timeout", "1"]);
    assert_eq!(out.code(), Some(124), "{out}");
    assert_eq!(
        out.stdout,
        [HEADER, "3 pending sessions. * (0 sec)"],
        "{out}"
    );
    let err: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(err.len(), 4, "{out}");
    assert_eq!(err[0], "error: timed out after 1 s; still live:");
    assert!(
        err[1].starts_with(&task_line_prefix("sleeper", sleeper.pid())) && err[1].ends_with("s)"),
        "{out}"
    );
    assert!(
        err[2].starts_with("  - 2 web sessions (the last expires in 1")
            && err[2].ends_with(&format!(", at {})", last_expiry(&site))),
        "{out}"
    );
    assert_eq!(err[3], "The site is back ONLINE.");
    assert_online_cleanly(&site, 3);
    drop(sleeper);
}

#[test]
fn sigint_or_sigterm_during_the_wait_goes_back_online_with_130() {
    for signal in [Signal::INT, Signal::TERM] {
        let site = CliSite::new(EXE);
        let (sleeper, _) = site.start(&["sleeper", "--secs", "60"]);
        site.touch_session("alice");
        let (on, progress) = waiting_on(&site, &[]);
        assert_eq!(progress, "2 pending sessions. * (0 sec)");
        send_signal(on.pid(), signal);
        let out = on.finish();
        assert_eq!(out.code(), Some(130), "{signal:?}: {out}");
        assert!(out.stdout.is_empty(), "{signal:?}: {out}");
        let err: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(err.len(), 4, "{signal:?}: {out}");
        assert_eq!(err[0], "error: interrupted; still live:");
        assert!(err[1].starts_with(&task_line_prefix("sleeper", sleeper.pid())));
        assert!(err[2].starts_with("  - 1 web session (the last expires in "));
        assert_eq!(err[3], "The site is back ONLINE.");
        assert_online_cleanly(&site, 2);
        drop(sleeper);
    }
}

#[test]
fn sigkill_of_the_waiter_leaves_the_site_online_at_once_and_status_says_it_lapsed() {
    let site = CliSite::new(EXE);
    let me = user_at_host();
    let (sleeper, _) = site.start(&["sleeper", "--secs", "60"]);
    let (mut on, _) = waiting_on(&site, &[]);
    let waiter = on.pid();
    let since = site.mode().record.since;
    on.kill9();

    // At once: no waiting for anything to notice (on PostgreSQL, once the
    // server has read the closed connection).
    site.once_released("the PENDING lapsed", || site.mode().lapsed.map(drop));
    assert_exact(
        &site.run(&["offline", "status", "--exit-code"]),
        0,
        &["Status: ONLINE - Active sessions: 1"],
    );
    let v = site.run(&["offline", "status", "-v"]);
    assert_eq!(v.code(), Some(0), "{v}");
    assert_eq!(v.stdout[0], "Status: ONLINE - Active sessions: 1");
    let note = format!(
        "  note: PENDING since {since} (by {me}, pid {waiter}) lapsed: the process waiting to \
         take the site offline is gone, so the site is ONLINE; the next mode change cleans up"
    );
    assert!(v.stdout.contains(&note), "{v}");
    let j = site.status_json();
    assert_eq!(j["mode"], "ONLINE");
    assert!(
        j["lapsed"].as_str().is_some_and(|l| l.contains("lapsed")),
        "{j:#}"
    );
    // Really ONLINE: a tracked command starts.
    assert_exact(&site.run(&["hello"]), 0, &["Hello, world!"]);
    // The next mode change cleans up, and the note goes.
    assert_exact(
        &site.run(&["offline", "off"]),
        0,
        &["Status: ONLINE - Active sessions: 1"],
    );
    let v = site.run(&["offline", "status", "-v"]);
    assert!(!v.stdout.iter().any(|l| l.contains("note:")), "{v}");
    drop(sleeper);
}

#[test]
fn a_second_on_joins_the_wait_updates_the_message_and_both_return_when_offline() {
    let site = CliSite::new(EXE);
    let (sleeper, _) = site.start(&["sleeper", "--secs", "60"]);
    let (first, first_progress) = waiting_on(&site, &["--message", "Back at two"]);
    let since = site.mode().record.since;
    let (second, progress) = waiting_on(
        &site,
        &["--message", "Back at three", "--retry-after", "900"],
    );
    assert_eq!(progress, "1 pending session. * (0 sec)");
    assert_eq!(site.mode().record.since, since, "joined, not restarted");

    let v = site.run(&["offline", "status", "-v"]);
    assert_eq!(v.stdout[0], "Status: PENDING - Active sessions: 1", "{v}");
    assert!(
        v.stdout.contains(&"  message: Back at three".to_owned()),
        "{v}"
    );
    assert!(v.stdout.contains(&"  retry after: 900 s".to_owned()), "{v}");
    let j = site.status_json();
    assert_eq!(j["mode"], "PENDING");
    assert_eq!(j["message"], "Back at three");
    assert_eq!(j["retry_after"], 900);
    assert_eq!(j["pid"], first.pid(), "the first waiter began it");

    // Neither returns early.
    assert!(is_alive(first.pid()) && is_alive(second.pid()));
    send_signal(sleeper.pid(), Signal::TERM);
    assert_after_progress(
        &first.finish(),
        0,
        &first_progress,
        &["Status: OFFLINE - Active sessions: 0"],
    );
    assert_after_progress(
        &second.finish(),
        0,
        &progress,
        &["Status: OFFLINE - Active sessions: 0"],
    );
    let j = site.status_json();
    assert_eq!(j["mode"], "OFFLINE");
    assert_eq!(j["message"], "Back at three");
    drop(sleeper);

    // While OFFLINE, `on` only updates the message, at once.
    let before = site.mode().record;
    assert_exact(
        &site.run(&["offline", "on", "--message", "Back at four"]),
        0,
        &["Status: OFFLINE - Active sessions: 0"],
    );
    let after = site.mode().record;
    assert_eq!(after.mode, Mode::Offline);
    assert_eq!(after.since, before.since, "still the same OFFLINE");
    assert_eq!(after.message.as_deref(), Some("Back at four"));
    let v = site.run(&["offline", "status", "-v"]);
    assert!(
        v.stdout.contains(&"  message: Back at four".to_owned()),
        "{v}"
    );
}

#[test]
fn on_with_nothing_live_goes_offline_without_a_wait_line() {
    let site = CliSite::new(EXE);
    assert_exact(
        &site.run(&["offline", "on"]),
        0,
        &["Status: OFFLINE - Active sessions: 0"],
    );
    assert_eq!(site.mode().mode, Mode::Offline);
}

#[test]
fn a_logout_ends_the_wait() {
    let site = CliSite::new(EXE);
    site.touch_session("alice");
    let (on, progress) = waiting_on(&site, &[]);
    assert_eq!(progress, "1 pending session. * (0 sec)");
    site.end_session("alice");
    assert_after_progress(
        &on.finish(),
        0,
        &progress,
        &["Status: OFFLINE - Active sessions: 0"],
    );
}

#[test]
fn grace_lets_sessions_go_while_a_running_command_still_holds() {
    let site = CliSite::new(EXE);
    let (sleeper, _) = site.start(&["sleeper", "--secs", "60"]);
    site.touch_session("alice");
    let out = site.run(&["offline", "on", "--grace", "0.3", "--timeout", "2"]);
    assert_eq!(out.code(), Some(124), "{out}");
    assert_eq!(
        out.stdout[..2],
        [HEADER, "2 pending sessions. * (0 sec)"],
        "{out}"
    );
    // After the grace period, only the command counts.
    let n = plain_progress(Some(&out.stdout[1]), &out.stdout[2..]);
    assert_eq!(n, out.stdout.len() - 2, "{out}");
    for l in &out.stdout[2..] {
        assert!(l.starts_with("1 pending session. - ("), "{out}");
    }
    let err: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(err.len(), 3, "only the command is named: {out}");
    assert_eq!(err[0], "error: timed out after 2 s; still live:");
    assert!(err[1].starts_with(&task_line_prefix("sleeper", sleeper.pid())));
    assert_eq!(err[2], "The site is back ONLINE.");
    // The session was let go, not ended.
    assert_online_cleanly(&site, 2);
    drop(sleeper);
}

#[test]
fn grace_lets_sessions_go_when_no_command_runs() {
    let site = CliSite::new(EXE);
    site.touch_session("alice");
    let out = site.run(&["offline", "on", "--grace", "0.5", "--timeout", "30"]);
    assert_eq!(
        out.stdout[..2],
        [HEADER, "1 pending session. * (0 sec)"],
        "{out}"
    );
    let n = plain_progress(Some(&out.stdout[1]), &out.stdout[2..]);
    assert_eq!(
        out.stdout[2 + n..],
        ["Status: OFFLINE - Active sessions: 1"],
        "{out}"
    );
    assert_eq!((out.code(), out.stderr.as_str()), (Some(0), ""), "{out}");
    assert_eq!(site.mode().mode, Mode::Offline);
}

#[test]
fn off_cancels_another_process_s_wait_which_exits_75_naming_who() {
    let site = CliSite::new(EXE);
    let (sleeper, _) = site.start(&["sleeper", "--secs", "60"]);
    let (on, _) = waiting_on(&site, &[]);
    assert_exact(
        &site.run(&["offline", "off"]),
        0,
        &["Status: ONLINE - Active sessions: 1"],
    );
    let out = on.finish();
    assert_eq!(out.code(), Some(75), "{out}");
    assert!(out.stdout.is_empty(), "{out}");
    assert_eq!(
        out.stderr,
        format!(
            "error: cancelled by {}: the site is ONLINE\n",
            user_at_host()
        )
    );
    assert_online_cleanly(&site, 1);
    drop(sleeper);
}

/// Runs `deploy`, an external tracked command whose script runs `offline
/// on` and `offline run` (each with a 10 s timeout, which a wait for itself
/// would reach) and prints their exit codes; checks both were refused at
/// once with the message, and returns the two codes.
fn on_and_run_inside_an_external_command(site: &CliSite) -> (i32, i32) {
    let out = site.run(&["deploy"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stdout.len(), 2, "{out}");
    let code = |line: &str, verb: &str| -> i32 {
        line.strip_prefix(&format!("{verb}: "))
            .unwrap_or_else(|| panic!("{out}"))
            .parse()
            .unwrap()
    };
    let codes = (code(&out.stdout[0], "on"), code(&out.stdout[1], "run"));
    let refusals: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(refusals.len(), 2, "{out}");
    for r in refusals {
        assert!(
            r.starts_with(
                "error: refusing to wait for the site to go offline from inside a running \
                 command (`deploy`, task "
            ) && r.ends_with("): it would wait for itself; run it from a shell"),
            "{out}"
        );
    }
    codes
}

const DEPLOY: &str = "#!/bin/sh\n\"$MANAGE\" offline on --timeout 10\necho \"on: $?\"\n\
                      \"$MANAGE\" offline run --timeout 10 -- hello\necho \"run: $?\"\n";

#[test]
fn on_or_run_from_inside_a_tracked_command_is_refused_at_once() {
    let site = CliSite::new(EXE);
    site.external("deploy", DEPLOY);
    let (on, run) = on_and_run_inside_an_external_command(&site);
    for code in [on, run] {
        assert!(
            code != 0 && code != 124,
            "refused at once, neither done nor timed out: {code}"
        );
    }
    // Through `ctx.call` from a registered tracked command too.
    let out = site.run(&["nest", "offline", "on", "--timeout", "10"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stderr
            .contains("from inside a running command (`nest`, task "),
        "{out}"
    );
    assert_online_cleanly(&site, 0);
    assert_eq!(site.mode().record.generation, 0, "no mode change at all");
}

#[test]
fn on_or_run_from_inside_a_tracked_command_exits_75() {
    let site = CliSite::new(EXE);
    site.external("deploy", DEPLOY);
    assert_eq!(on_and_run_inside_an_external_command(&site), (75, 75));
    let out = site.run(&["nest", "offline", "on", "--timeout", "10"]);
    assert_eq!(
        out.stdout.last().map(String::as_str),
        Some("exit 75"),
        "{out}"
    );
}
