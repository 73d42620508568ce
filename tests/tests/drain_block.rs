//! Drain `block` end to end: while `mysite backup` runs, `offline on` and
//! `offline run` refuse at once (75) naming it — pid, user@host, how long
//! it has run — and the site never goes PENDING; `--force` overrides it and
//! the backup runs on to its end. `[commands.sleeper] drain = "block"` in
//! manage.toml makes a registered `wait` command block the same way.

#![allow(clippy::unwrap_used)]

use maintenance_core::Mode;
use manage_tests::{CliSite, Outcome, user_at_host};

const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");
const MANAGE: &str = env!("CARGO_BIN_EXE_e2e-manage");

/// manage.toml's own lines (`refresh_interval = "50ms"` comes from
/// [`CliSite`]).
const CONFIG: &str = "state_dir = \"state\"\n";

/// Asserts `out` is the `block` refusal naming `name` run by `pid`, and
/// that it never waited (no progress header).
#[track_caller]
fn assert_blocked_by(out: &Outcome, name: &str, pid: u32) {
    assert_eq!(out.code(), Some(75), "{out}");
    let holder = format!(
        "refusing to go offline: `{name}` (pid {pid}, {}, running for ",
        user_at_host()
    );
    assert!(out.stderr.contains(&holder), "want {holder:?}: {out}");
    assert!(
        out.stderr.contains(
            "blocks maintenance while it runs (drain block); wait for it to finish, or pass --force"
        ),
        "{out}"
    );
    assert!(
        !out.stdout
            .iter()
            .any(|l| l.starts_with("Active sessions detected")),
        "it waited: {out}"
    );
}

/// Asserts the site is ONLINE and its mode record is still `before`: any
/// write (a PENDING begun, then left) would have replaced it.
#[track_caller]
fn assert_never_pending(site: &CliSite, before: &maintenance_core::ModeRecord) {
    let view = site.mode();
    assert_eq!(view.mode, Mode::Online, "{view:?}");
    assert_eq!(&view.record, before, "the mode record was rewritten");
    let status = site.status_json();
    assert_eq!(status["mode"], "ONLINE", "{status:#}");
    assert!(status["lapsed"].is_null(), "{status:#}");
    assert!(status["window"].is_null(), "{status:#}");
}

#[test]
fn a_running_backup_blocks_offline_on_and_run_until_forced_and_then_runs_to_its_end() {
    let site = CliSite::with_config(MYSITE, CONFIG);
    let mut backup = site.spawn_mysite(&["backup", "--ms", "5000"]);
    assert_eq!(backup.line(), "backup started");
    let before = site.mode().record;

    assert_blocked_by(
        &site.run_mysite(&["offline", "on", "--timeout", "30"]),
        "backup",
        backup.pid(),
    );
    assert_never_pending(&site, &before);

    // The deploy line is refused the same way, before migrate ever runs.
    let run = site.run_mysite(&["offline", "run", "--timeout", "30", "--", "migrate"]);
    assert_blocked_by(&run, "backup", backup.pid());
    assert!(!run.text().contains("migration"), "migrate ran: {run}");
    assert_never_pending(&site, &before);

    // --force: OFFLINE at once, the backup still live and running on.
    let forced = site.run_mysite(&["offline", "on", "--force"]);
    assert_eq!(forced.code(), Some(0), "{forced}");
    assert_eq!(
        forced.stdout,
        ["Status: OFFLINE - Active sessions: 1"],
        "{forced}"
    );
    assert_eq!(site.mode().mode, Mode::Offline);
    // It runs on to its end: --force asks nothing of it.
    assert_eq!(backup.line(), "backup done");
    let b = backup.finish();
    assert_eq!(b.code(), Some(0), "{b}");
    let status = site.status_json();
    assert_eq!(status["mode"], "OFFLINE", "{status:#}");
    assert_eq!(status["active_sessions"], 0, "{status:#}");
}

#[test]
fn a_backup_started_inside_the_window_does_not_block() {
    // Only a blocker that started ONLINE holds the site off: one started
    // while OFFLINE (maintenance allowed) runs inside the window.
    let site = CliSite::with_config(MYSITE, CONFIG);
    let forced = site.run_mysite(&["offline", "on", "--force"]);
    assert_eq!(forced.code(), Some(0), "{forced}");
    let mut backup = site.spawn_mysite(&["backup", "--ms", "5000"]);
    assert_eq!(backup.line(), "backup started");
    let on = site.run_mysite(&["offline", "on", "--timeout", "30"]);
    assert_eq!(on.code(), Some(0), "{on}");
    assert!(on.stderr.is_empty(), "{on}");
    assert_eq!(site.mode().mode, Mode::Offline);
    assert!(backup.is_running());
}

#[test]
fn manage_toml_makes_a_wait_command_block_and_without_it_offline_on_waits() {
    let site = CliSite::with_config(
        MANAGE,
        &format!(
            "{CONFIG}[commands.sleeper]\ndrain = \"block\"\n[commands.hello]\ndrain = \"block\"\n"
        ),
    );
    // Stricter is allowed: a blocking hello still runs.
    let hello = site.run(&["hello", "World"]);
    assert_eq!(hello.code(), Some(0), "{hello}");
    assert_eq!(hello.stdout, ["Hello, World!"], "{hello}");

    let (sleeper, _) = site.start(&["sleeper", "--secs", "60"]);
    let listed = site.run(&["offline", "list", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&listed.stdout.join("\n")).unwrap();
    assert_eq!(doc["tasks"][0]["name"], "sleeper", "{doc:#}");
    assert_eq!(doc["tasks"][0]["policy"]["drain"], "block", "{doc:#}");
    let before = site.mode().record;
    assert_blocked_by(
        &site.run(&["offline", "on", "--timeout", "30"]),
        "sleeper",
        sleeper.pid(),
    );
    assert_never_pending(&site, &before);
    drop(sleeper);

    // The same command without the table: waited for, never refused.
    let plain = CliSite::with_config(MANAGE, CONFIG);
    let (_sleeper, _) = plain.start(&["sleeper", "--secs", "60"]);
    let on = plain.run(&["offline", "on", "--timeout", "0.5"]);
    assert_eq!(on.code(), Some(124), "{on}");
    assert!(!on.stderr.contains("drain block"), "{on}");
    assert_eq!(plain.mode().mode, Mode::Online);
}
