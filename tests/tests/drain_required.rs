//! Maintenance `required` end to end with `mysite migrate`: refused while
//! ONLINE (75, naming the `offline run -- migrate` line to use) and while
//! PENDING; run by `mysite offline run -- migrate`, which passes its exit
//! code through and puts the site back ONLINE; run while OFFLINE.

#![allow(clippy::unwrap_used)]

use maintenance_core::Mode;
use manage_tests::{CliSite, Outcome};

const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");

/// manage.toml's own lines (`refresh_interval = "50ms"` comes from
/// [`CliSite`]).
const CONFIG: &str = "state_dir = \"state\"\n";

/// Everything a successful `migrate` (3 steps) says.
const MIGRATED: [&str; 4] = [
    "applied migration 1 of 3",
    "applied migration 2 of 3",
    "applied migration 3 of 3",
    "migrations done",
];

/// Asserts `out` is a refusal (75) that applied no migration.
#[track_caller]
fn assert_refused_without_migrating(out: &Outcome, needle: &str) {
    assert_eq!(out.code(), Some(75), "{out}");
    assert!(out.stdout.is_empty(), "{out}");
    assert!(out.stderr.contains(needle), "want {needle:?}: {out}");
    assert!(!out.text().contains("applied migration"), "{out}");
}

/// Asserts the site is ONLINE with nothing live and no window.
#[track_caller]
fn assert_online_and_idle(site: &CliSite) {
    let status = site.status_json();
    assert_eq!(status["mode"], "ONLINE", "{status:#}");
    assert_eq!(status["tasks"], serde_json::json!([]), "{status:#}");
    assert!(status["window"].is_null(), "{status:#}");
}

#[test]
fn migrate_is_refused_while_online_and_runs_inside_offline_run() {
    let site = CliSite::with_config(MYSITE, CONFIG);
    let before = site.mode().record;
    let out = site.run_mysite(&["migrate"]);
    assert_refused_without_migrating(&out, "refusing to run `migrate`");
    assert!(
        out.stderr.contains("offline run -- migrate"),
        "the refusal shows the line to use: {out}"
    );
    assert_eq!(site.mode().record, before, "the refusal changed the mode");
    assert_online_and_idle(&site);

    let run = site.run_mysite(&["offline", "run", "--", "migrate"]);
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(run.stdout, MIGRATED, "{run}");
    assert_eq!(run.stderr, "", "{run}");
    assert_online_and_idle(&site);
    assert_ne!(site.mode().record, before, "it went OFFLINE and back");

    // A failed migration: its exit code passed through, the site ONLINE.
    let failed = site.run_mysite(&["offline", "run", "--", "migrate", "--fail-at", "2"]);
    assert_eq!(failed.code(), Some(1), "{failed}");
    assert_eq!(failed.stdout, ["applied migration 1 of 3"], "{failed}");
    assert!(
        failed.stderr.contains("migration 2 of 3 failed"),
        "{failed}"
    );
    assert_online_and_idle(&site);
}

#[test]
fn migrate_is_refused_while_pending_and_runs_while_offline() {
    let site = CliSite::with_config(MYSITE, CONFIG);
    // A logged-in user holds the site PENDING.
    site.touch_session("alice");
    let waiting = site.spawn_mysite(&["offline", "on", "--timeout", "60"]);
    site.wait_for_mode(Mode::Pending);
    assert_refused_without_migrating(
        &site.run_mysite(&["migrate"]),
        "refusing to run `migrate`: the site is PENDING",
    );

    let forced = site.run_mysite(&["offline", "on", "--force"]);
    assert_eq!(forced.code(), Some(0), "{forced}");
    let w = waiting.finish();
    assert_eq!(w.code(), Some(0), "the waiter sees OFFLINE: {w}");
    assert_eq!(site.mode().mode, Mode::Offline);

    let out = site.run_mysite(&["migrate"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stdout, MIGRATED, "{out}");
    assert_eq!(
        site.mode().mode,
        Mode::Offline,
        "migrate left the mode alone"
    );

    // Inside `offline run` while already OFFLINE: it stays OFFLINE.
    let run = site.run_mysite(&["offline", "run", "--", "migrate"]);
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(run.stdout, MIGRATED, "{run}");
    assert_eq!(site.mode().mode, Mode::Offline);
}
