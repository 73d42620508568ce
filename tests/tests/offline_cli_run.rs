//! `manage offline run` end to end, and `off` against it: the real
//! `manage` binary (`e2e-manage`) running registered and external commands
//! inside the maintenance window — exit codes passed through, the mode it
//! found restored, a timeout (124, never ran), a second run refused (75),
//! `off` refused mid-command unless `--force`, a run killed mid-command
//! leaving the site OFFLINE with `status -v` naming it, and alias cycles
//! refused before the site goes offline or, reached through `ctx.call`,
//! reported without leaving it offline.

#![allow(clippy::unwrap_used)]

use maintenance_core::Mode;
use manage_tests::{
    CliSite, Outcome, Proc, assert_exact, plain_progress, send_signal, user_at_host,
};
use rustix::process::Signal;

const EXE: &str = env!("CARGO_BIN_EXE_e2e-manage");

const HEADER: &str =
    "Active sessions detected. Waiting for logout. (Session timeout set to 900 secs)";

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

/// Asserts the site is ONLINE with `active` live, and no `offline run`
/// holds or held the window.
#[track_caller]
fn assert_online(site: &CliSite, active: usize) {
    assert_exact(
        &site.run(&["offline", "status", "--exit-code"]),
        0,
        &[&format!("Status: ONLINE - Active sessions: {active}")],
    );
    let j = site.status_json();
    assert!(j["window"].is_null(), "{j:#}");
}

/// Starts `offline run -- sleeper --secs 30` and waits until its command
/// runs inside the window.
fn run_with_sleeper(site: &CliSite) -> Proc {
    let (run, _) = site.start(&["offline", "run", "--", "sleeper", "--secs", "30"]);
    assert_eq!(site.mode().mode, Mode::Offline);
    run
}

const EXIT3: &str = "#!/bin/sh\necho \"in the window: $(\"$MANAGE\" offline status)\"\nexit 3\n";

#[test]
fn run_passes_the_command_s_exit_code_through_and_puts_the_site_back_online() {
    let site = CliSite::new(EXE);
    site.external("exit3", EXIT3);
    let me = user_at_host();

    assert_exact(
        &site.run(&["offline", "run", "--", "hello", "Bob"]),
        0,
        &["Hello, Bob!"],
    );
    assert_online(&site, 0);
    let record = site.mode().record;
    assert_eq!(record.by, me, "the run put it back");

    // It runs inside the window, while OFFLINE.
    assert_exact(
        &site.run(&["offline", "run", "--", "backup-ok"]),
        0,
        &["backup while OFFLINE"],
    );
    let out = site.run(&["offline", "run", "--", "task-info"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stdout.len() == 1
            && out.stdout[0].starts_with("task ")
            && out.stdout[0].ends_with(" task-info in OFFLINE"),
        "{out}"
    );
    assert_online(&site, 0);

    let out = site.run(&["offline", "run", "--", "fail"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stdout.is_empty(), "{out}");
    assert_eq!(
        out.stderr,
        "error: cannot write the report\n  caused by: disk full\n"
    );
    assert_online(&site, 0);

    let out = site.run(&["offline", "run", "--", "boom"]);
    assert_eq!(out.code(), Some(101), "{out}");
    assert!(
        out.stderr.contains("error: command `boom` panicked"),
        "{out}"
    );
    assert_online(&site, 0);

    // An external command, its own exit code; it sees the window (its own
    // task is the one live command).
    assert_exact(
        &site.run(&["offline", "run", "--", "exit3"]),
        3,
        &["in the window: Status: OFFLINE - Active sessions: 1"],
    );
    assert_online(&site, 0);

    // A command that does not exist, or a bad argument: usage (2), and the
    // site was never taken offline (the record is untouched).
    let before = site.mode().record;
    let out = site.run(&["offline", "run", "--", "no-such-command"]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stderr
            .contains("unrecognized command `no-such-command`"),
        "{out}"
    );
    assert!(
        out.stderr.contains("The site was not taken offline."),
        "{out}"
    );
    let out = site.run(&["offline", "run", "--", "helo"]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stderr.contains("a similar command exists: `hello`"),
        "{out}"
    );
    let out = site.run(&["offline", "run", "--", "hello", "--times", "many"]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("invalid value 'many'"), "{out}");
    assert_eq!(site.mode().record, before, "never PENDING, never OFFLINE");
    assert_online(&site, 0);
    assert_exact(&site.run(&["hello"]), 0, &["Hello, world!"]);
}

#[test]
fn run_refuses_a_cyclic_alias_before_taking_the_site_offline() {
    let site = CliSite::with_config(
        EXE,
        "[alias]\na = \"b\"\nb = \"a\"\nx = \"y\"\ny = \"z\"\nz = \"x\"\n",
    );
    let before = site.mode().record;
    for (alias, chain) in [("a", "`a` → `b` → `a`"), ("x", "`x` → `y` → `z` → `x`")] {
        let out = site.run(&["offline", "run", "--", alias]);
        assert_eq!(out.code(), Some(2), "a usage error, not a crash: {out}");
        assert!(
            out.stderr
                .contains(&format!("alias `{alias}` is recursive: {chain}"))
                && out.stderr.contains("The site was not taken offline."),
            "{out}"
        );
    }
    assert_eq!(site.mode().record, before, "never PENDING, never OFFLINE");
    assert_online(&site, 0);
}

#[test]
fn run_of_a_command_that_calls_a_cyclic_alias_puts_the_site_back_and_passes_its_code_on() {
    let site = CliSite::with_config(EXE, "[alias]\na = \"b\"\nb = \"a\"\n");
    // `relay` is a registered command, so the check passes and the site
    // goes offline; what it calls is the cycle.
    let out = site.run(&["offline", "run", "--", "relay", "a"]);
    assert_eq!(out.code(), Some(2), "relay's own code, passed on: {out}");
    assert!(
        out.stderr
            .contains("alias `a` is recursive: `a` → `b` → `a`"),
        "{out}"
    );
    assert!(!out.stderr.contains("killed"), "{out}");
    assert_online(&site, 0);
}

#[test]
fn run_follows_an_alias_chain_that_ends() {
    let site = CliSite::with_config(
        EXE,
        "[alias]\ndeploy = \"inner --times 2\"\ninner = \"hello Ann\"\n",
    );
    assert_exact(
        &site.run(&["offline", "run", "--", "deploy"]),
        0,
        &["Hello, Ann!", "Hello, Ann!"],
    );
    assert_online(&site, 0);
}

#[test]
fn run_waits_like_on_then_runs_the_command() {
    let site = CliSite::new(EXE);
    let (sleeper, _) = site.start(&["sleeper", "--secs", "60"]);
    let mut run = site.spawn(&["offline", "run", "--", "backup-ok"]);
    assert_eq!(run.line(), HEADER);
    let progress = run.line();
    assert_eq!(progress, "1 pending session. * (0 sec)");
    assert_eq!(site.mode().mode, Mode::Pending);
    send_signal(sleeper.pid(), Signal::TERM);
    assert_after_progress(&run.finish(), 0, &progress, &["backup while OFFLINE"]);
    assert_online(&site, 0);
    drop(sleeper);
}

#[test]
fn run_with_force_goes_offline_at_once_while_a_command_is_live() {
    let site = CliSite::new(EXE);
    let (mut sleeper, _) = site.start(&["sleeper", "--secs", "60"]);
    assert_exact(
        &site.run(&["offline", "run", "--force", "--", "backup-ok"]),
        0,
        &["backup while OFFLINE"],
    );
    assert!(sleeper.is_running());
    assert_online(&site, 1);
}

#[test]
fn run_while_already_offline_leaves_the_site_offline() {
    let site = CliSite::new(EXE);
    site.external("exit3", EXIT3);
    assert_exact(
        &site.run(&["offline", "on", "--message", "Planned work"]),
        0,
        &["Status: OFFLINE - Active sessions: 0"],
    );
    let before = site.mode().record;

    assert_exact(
        &site.run(&["offline", "run", "--", "backup-ok"]),
        0,
        &["backup while OFFLINE"],
    );
    let out = site.run(&["offline", "run", "--", "fail"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert_exact(
        &site.run(&["offline", "run", "--", "exit3"]),
        3,
        &["in the window: Status: OFFLINE - Active sessions: 1"],
    );

    assert_exact(
        &site.run(&["offline", "status", "--exit-code"]),
        4,
        &["Status: OFFLINE - Active sessions: 0"],
    );
    assert_eq!(site.mode().record, before, "the same OFFLINE, untouched");
    let j = site.status_json();
    assert_eq!(j["message"], "Planned work");
    assert!(j["window"].is_null(), "{j:#}");
}

#[test]
fn run_that_times_out_never_runs_the_command_and_leaves_the_site_online() {
    let site = CliSite::new(EXE);
    let (sleeper, _) = site.start(&["sleeper", "--secs", "60"]);
    let out = site.run(&["offline", "run", "--timeout", "1", "--", "hello"]);
    assert_eq!(out.code(), Some(124), "{out}");
    assert_eq!(
        out.stdout,
        [HEADER, "1 pending session. * (0 sec)"],
        "never ran: {out}"
    );
    let err: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(err.len(), 3, "{out}");
    assert_eq!(err[0], "error: timed out after 1 s; still live:");
    assert!(
        err[1].starts_with(&format!(
            "  - command `sleeper` (pid {}, {}, running for ",
            sleeper.pid(),
            user_at_host()
        )),
        "{out}"
    );
    assert_eq!(err[2], "The site is back ONLINE.");
    assert_online(&site, 1);
    assert_eq!(site.mode().mode, Mode::Online);
    drop(sleeper);
}

#[test]
fn a_second_run_is_refused_with_75_while_one_is_under_way() {
    let site = CliSite::new(EXE);
    let me = user_at_host();
    let first = run_with_sleeper(&site);
    let out = site.run(&["offline", "run", "--", "hello"]);
    assert_eq!(out.code(), Some(75), "{out}");
    assert!(out.stdout.is_empty(), "it never ran: {out}");
    let want = format!(
        "error: an `offline run` is running `sleeper --secs 30` (pid {}, {me}, since ",
        first.pid()
    );
    assert!(out.stderr.starts_with(&want), "{out}");
    assert!(
        out.stderr
            .ends_with("); only one `offline run` at a time: try again when it has ended\n"),
        "{out}"
    );
    assert_eq!(site.mode().mode, Mode::Offline, "the first's window stands");

    // The first ends as its command does (interrupted: 130), and restores
    // ONLINE.
    send_signal(first.pid(), Signal::TERM);
    let out = first.finish();
    assert_eq!(out.code(), Some(130), "{out}");
    assert_eq!(out.stdout, ["stopping"], "{out}");
    assert_online(&site, 0);
}

#[test]
fn a_second_run_started_during_the_first_s_wait_is_refused_too() {
    let site = CliSite::new(EXE);
    let (sleeper, _) = site.start(&["sleeper", "--secs", "60"]);
    let mut first = site.spawn(&["offline", "run", "--", "backup-ok"]);
    assert_eq!(first.line(), HEADER);
    let progress = first.line();
    let out = site.run(&["offline", "run", "--", "hello"]);
    assert_eq!(out.code(), Some(75), "{out}");
    assert!(out.stdout.is_empty(), "{out}");
    assert!(
        out.stderr.contains("only one `offline run` at a time"),
        "{out}"
    );
    send_signal(sleeper.pid(), Signal::TERM);
    assert_after_progress(&first.finish(), 0, &progress, &["backup while OFFLINE"]);
    assert_online(&site, 0);
    drop(sleeper);
}

#[test]
fn a_run_while_another_process_waits_in_pending_is_refused() {
    let site = CliSite::new(EXE);
    let (sleeper, _) = site.start(&["sleeper", "--secs", "60"]);
    let mut on = site.spawn(&["offline", "on"]);
    assert_eq!(on.line(), HEADER);
    let progress = on.line();
    let since = site.mode().record.since;
    let out = site.run(&["offline", "run", "--", "hello"]);
    assert_ne!(out.code(), Some(0), "{out}");
    assert!(out.stdout.is_empty(), "it never ran: {out}");
    assert_eq!(
        out.stderr,
        format!(
            "error: another process is taking the site offline (PENDING since {since}, by {}); \
             `offline run` needs the window to itself: wait for it, or run `offline off` first\n",
            user_at_host()
        )
    );
    // The other wait goes on undisturbed.
    assert_eq!(site.mode().mode, Mode::Pending);
    send_signal(sleeper.pid(), Signal::TERM);
    assert_after_progress(
        &on.finish(),
        0,
        &progress,
        &["Status: OFFLINE - Active sessions: 0"],
    );
    drop(sleeper);
}

#[test]
fn a_run_while_another_process_waits_in_pending_exits_75() {
    let site = CliSite::new(EXE);
    let (sleeper, _) = site.start(&["sleeper", "--secs", "60"]);
    let mut on = site.spawn(&["offline", "on"]);
    assert_eq!(on.line(), HEADER);
    on.line();
    let out = site.run(&["offline", "run", "--", "hello"]);
    assert_eq!(out.code(), Some(75), "{out}");
    drop((on, sleeper));
}

#[test]
fn off_refuses_while_a_run_s_command_runs_unless_forced() {
    let site = CliSite::new(EXE);
    let me = user_at_host();
    let run = run_with_sleeper(&site);

    // status -v and list show the window and its command inside it.
    let v = site.run(&["offline", "status", "-v"]);
    assert_eq!(v.stdout[0], "Status: OFFLINE - Active sessions: 1", "{v}");
    assert!(
        v.stdout.iter().any(|l| l.starts_with(&format!(
            "    - command `sleeper` (pid {}, {me}, running for ",
            run.pid()
        )) && l.ends_with(", inside the window)")),
        "{v}"
    );
    assert!(
        v.stdout.iter().any(|l| l.starts_with(&format!(
            "  window: `offline run` (pid {}, {me}) is running `sleeper --secs 30` since ",
            run.pid()
        ))),
        "{v}"
    );
    let j = site.status_json();
    assert_eq!(j["window"]["state"], "running");
    assert_eq!(
        j["window"]["run"]["argv"],
        serde_json::json!(["sleeper", "--secs", "30"])
    );
    assert_eq!(j["window"]["run"]["pid"], run.pid());
    assert_eq!(j["tasks"][0]["in_window"], true);
    assert_eq!(j["tasks"][0]["started_in"], "OFFLINE");
    let list = site.run(&["offline", "list"]);
    assert!(
        list.stdout[1]
            .ends_with("tracked, single, maintenance refused, drain wait (inside the window)"),
        "{list}"
    );

    let out = site.run(&["offline", "off"]);
    assert_eq!(out.code(), Some(75), "{out}");
    assert!(out.stdout.is_empty(), "{out}");
    assert!(
        out.stderr.starts_with(&format!(
            "error: an `offline run` is running `sleeper --secs 30` (pid {}, {me}, since ",
            run.pid()
        )) && out.stderr.ends_with(
            "; turning the site ONLINE now would reopen it mid-command: wait for it to end, \
             or pass --force\n"
        ),
        "{out}"
    );
    assert_eq!(site.mode().mode, Mode::Offline, "still OFFLINE");

    assert_exact(
        &site.run(&["offline", "off", "--force"]),
        0,
        &["Status: ONLINE - Active sessions: 1"],
    );
    assert_eq!(site.mode().mode, Mode::Online);
    send_signal(run.pid(), Signal::TERM);
    let out = run.finish();
    assert_eq!(out.code(), Some(130), "{out}");
    assert_online(&site, 0);
}

#[test]
fn a_run_killed_mid_command_leaves_the_site_offline_and_status_names_it() {
    let site = CliSite::new(EXE);
    let me = user_at_host();
    let mut run = run_with_sleeper(&site);
    let pid = run.pid();
    run.kill9();
    site.once_released("the window abandoned", || {
        (site.status_json()["window"]["state"] == "abandoned").then_some(())
    });

    assert_exact(
        &site.run(&["offline", "status", "--exit-code"]),
        4,
        &["Status: OFFLINE - Active sessions: 0"],
    );
    let v = site.run(&["offline", "status", "-v"]);
    assert_eq!(v.code(), Some(0), "{v}");
    let want = format!(
        "  window: left OFFLINE by `offline run -- sleeper --secs 30` (pid {pid}, {me}), which \
         was killed while its command ran; check the command's work, then `offline off`"
    );
    assert!(v.stdout.contains(&want), "{v}");
    let j = site.status_json();
    assert_eq!(j["mode"], "OFFLINE");
    assert_eq!(j["window"]["state"], "abandoned");
    assert_eq!(j["window"]["run"]["pid"], pid);
    // A half-done migration must not serve: nobody new gets in.
    let hello = site.run(&["hello"]);
    assert_eq!(hello.code(), Some(75), "{hello}");

    // `off` needs no --force for a dead run, and clears the record.
    assert_exact(
        &site.run(&["offline", "off"]),
        0,
        &["Status: ONLINE - Active sessions: 0"],
    );
    let v = site.run(&["offline", "status", "-v"]);
    assert!(!v.stdout.iter().any(|l| l.contains("window:")), "{v}");
    assert_online(&site, 0);
}

#[test]
fn off_cancels_a_run_that_is_still_waiting() {
    let site = CliSite::new(EXE);
    let (sleeper, _) = site.start(&["sleeper", "--secs", "60"]);
    let mut run = site.spawn(&["offline", "run", "--", "hello"]);
    assert_eq!(run.line(), HEADER);
    run.line();
    assert_exact(
        &site.run(&["offline", "off"]),
        0,
        &["Status: ONLINE - Active sessions: 1"],
    );
    let out = run.finish();
    assert_eq!(out.code(), Some(75), "{out}");
    assert!(!out.text().contains("Hello"), "it never ran: {out}");
    assert!(out.stderr.contains("cancelled by "), "{out}");
    drop(sleeper);
}

#[test]
fn a_run_killed_while_waiting_is_not_blamed_for_a_later_offline() {
    let site = CliSite::new(EXE);
    let (sleeper, _) = site.start(&["sleeper", "--secs", "60"]);
    let mut run = site.spawn(&["offline", "run", "--", "hello"]);
    assert_eq!(run.line(), HEADER);
    run.line();
    run.kill9();
    site.lapsed_to(Mode::Online);
    assert_exact(
        &site.run(&["offline", "on", "--force"]),
        0,
        &["Status: OFFLINE - Active sessions: 1"],
    );
    let v = site.run(&["offline", "status", "-v"]);
    assert!(
        !v.stdout
            .iter()
            .any(|l| l.contains("left OFFLINE by `offline run")),
        "the run never ran its command; `on --force` took the site offline: {v}"
    );
    let j = site.status_json();
    assert!(j["window"].is_null(), "{j:#}");
    drop(sleeper);
}
