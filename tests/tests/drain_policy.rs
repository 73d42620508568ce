//! Policies as the lists show them and as manage.toml changes them, end to
//! end: `mysite --list [--json]` and `offline list [--json]` show each
//! command's policy; `[commands.NAME]` may make a registered command
//! stricter (and that changes what it does), never looser (exit 2 naming
//! the file and the key, other commands unharmed).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use manage_tests::{CliSite, Outcome};

const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");
const MANAGE: &str = env!("CARGO_BIN_EXE_e2e-manage");

/// manage.toml's own lines (`refresh_interval = "50ms"` comes from
/// [`CliSite`]).
const CONFIG: &str = "state_dir = \"state\"\n";

/// Parses a JSON document printed on stdout by a run that exited 0.
#[track_caller]
fn json(out: &Outcome) -> serde_json::Value {
    assert_eq!(out.code(), Some(0), "{out}");
    serde_json::from_str(&out.stdout.join("\n")).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// A policy as JSON.
fn policy(tracking: &str, instances: &str, maintenance: &str, drain: &str) -> serde_json::Value {
    serde_json::json!({
        "tracking": tracking,
        "instances": instances,
        "maintenance": maintenance,
        "drain": drain,
    })
}

/// `mysite --list --json`: each command's policy, by name.
fn listed_policies(site: &CliSite) -> BTreeMap<String, serde_json::Value> {
    let doc = json(&site.run_mysite(&["--list", "--json"]));
    doc["commands"]
        .as_array()
        .unwrap_or_else(|| panic!("{doc:#}"))
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_owned(), c["policy"].clone()))
        .collect()
}

/// `mysite offline list --json`: each live task's policy, by name.
fn live_policies(site: &CliSite) -> BTreeMap<String, serde_json::Value> {
    let doc = json(&site.run_mysite(&["offline", "list", "--json"]));
    doc["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("{doc:#}"))
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_owned(), t["policy"].clone()))
        .collect()
}

/// The line of `lines` whose first word is `name`.
#[track_caller]
fn row<'a>(lines: &'a [String], name: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} in {lines:#?}"))
}

#[test]
fn the_lists_show_each_command_s_policy() {
    let site = CliSite::with_config(MYSITE, CONFIG);
    let listed = listed_policies(&site);
    let worker = policy("tracked", "concurrent", "refused", "stop");
    let backup = policy("tracked", "single", "allowed", "block");
    let migrate = policy("tracked", "single", "required", "wait");
    assert_eq!(listed["worker"], worker);
    assert_eq!(listed["backup"], backup);
    assert_eq!(listed["migrate"], migrate);
    assert_eq!(listed["offline"]["tracking"], "untracked");
    assert_eq!(listed["runserver"]["tracking"], "untracked");

    let text = site.run_mysite(&["--list"]);
    assert_eq!(text.code(), Some(0), "{text}");
    for (name, p) in [
        (
            "worker",
            "[tracked, concurrent, maintenance refused, drain stop]",
        ),
        (
            "backup",
            "[tracked, single, maintenance allowed, drain block]",
        ),
        (
            "migrate",
            "[tracked, single, maintenance required, drain wait]",
        ),
    ] {
        assert!(row(&text.stdout, name).contains(p), "{text}");
    }

    // Live tasks carry the policy in force.
    let mut w = site.spawn_mysite(&["worker", "--job-ms", "100"]);
    assert_eq!(w.line(), "worker started");
    let mut b = site.spawn_mysite(&["backup", "--ms", "60000"]);
    assert_eq!(b.line(), "backup started");
    let live = live_policies(&site);
    assert_eq!(live.len(), 2, "{live:#?}");
    assert_eq!(live["worker"], worker);
    assert_eq!(live["backup"], backup);
    let text = site.run_mysite(&["offline", "list"]);
    assert_eq!(text.code(), Some(0), "{text}");
    assert!(
        row(&text.stdout, "worker")
            .ends_with(" tracked, concurrent, maintenance refused, drain stop"),
        "{text}"
    );
    assert!(
        row(&text.stdout, "backup").ends_with(" tracked, single, maintenance allowed, drain block"),
        "{text}"
    );
    drop(w);
    drop(b);

    let forced = site.run_mysite(&["offline", "on", "--force"]);
    assert_eq!(forced.code(), Some(0), "{forced}");
    let mut m = site.spawn_mysite(&["migrate", "--steps", "1000", "--step-ms", "100"]);
    assert_eq!(m.line(), "applied migration 1 of 1000");
    let live = live_policies(&site);
    assert_eq!(live.len(), 1, "{live:#?}");
    assert_eq!(live["migrate"], migrate);
    let text = site.run_mysite(&["offline", "list"]);
    assert!(
        row(&text.stdout, "migrate")
            .ends_with(" tracked, single, maintenance required, drain wait (inside the window)"),
        "{text}"
    );
}

#[test]
fn a_stricter_policy_in_manage_toml_changes_what_a_registered_command_does() {
    // Without the file: backup runs while OFFLINE, two workers at once.
    let plain = CliSite::with_config(MYSITE, CONFIG);
    let (mut w1, mut w2) = (
        plain.spawn_mysite(&["worker", "--job-ms", "100"]),
        plain.spawn_mysite(&["--lock-timeout", "0", "worker", "--job-ms", "100"]),
    );
    assert_eq!(w1.line(), "worker started");
    assert_eq!(w2.line(), "worker started");
    drop((w1, w2));
    assert_eq!(
        plain.run_mysite(&["offline", "on", "--force"]).code(),
        Some(0)
    );
    let out = plain.run_mysite(&["backup", "--ms", "1"]);
    assert_eq!(out.code(), Some(0), "{out}");

    let strict = CliSite::with_config(
        MYSITE,
        &format!(
            "{CONFIG}[commands.worker]\ninstances = \"single\"\n\
             [commands.backup]\nmaintenance = \"refused\"\n"
        ),
    );
    let listed = listed_policies(&strict);
    assert_eq!(
        listed["worker"],
        policy("tracked", "single", "refused", "stop")
    );
    assert_eq!(
        listed["backup"],
        policy("tracked", "single", "refused", "block")
    );
    let mut w1 = strict.spawn_mysite(&["worker", "--job-ms", "100"]);
    assert_eq!(w1.line(), "worker started");
    let w2 = strict.run_mysite(&["--lock-timeout", "0", "worker", "--job-ms", "100"]);
    assert_eq!(w2.code(), Some(75), "a second worker is refused: {w2}");
    let holder = format!("`worker` is already running: pid {}", w1.pid());
    assert!(w2.stderr.contains(&holder), "{w2}");
    assert!(!w2.stdout.iter().any(|l| l == "worker started"), "{w2}");
    drop(w1);
    assert_eq!(
        strict.run_mysite(&["offline", "on", "--force"]).code(),
        Some(0)
    );
    let out = strict.run_mysite(&["backup", "--ms", "1"]);
    assert_eq!(
        out.code(),
        Some(75),
        "backup is refused while OFFLINE: {out}"
    );
    assert!(out.stderr.contains("refusing to run `backup`"), "{out}");
    assert!(out.stdout.is_empty(), "{out}");
}

/// Asserts `out` is the usage error (2) for a looser `[commands.NAME] KEY`
/// in `site`'s manage.toml, and that the command never ran.
#[track_caller]
fn assert_looser_refused(site: &CliSite, out: &Outcome, name: &str, key: &str) {
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stdout.is_empty(), "the command ran: {out}");
    let file = site.dir().join("manage.toml");
    for needle in [
        file.display().to_string(),
        format!("[commands.{name}] {key}"),
        "stricter".to_owned(),
    ] {
        assert!(out.stderr.contains(&needle), "want {needle:?}: {out}");
    }
    let status = site.status_json();
    assert_eq!(status["tasks"], serde_json::json!([]), "{status:#}");
}

#[test]
fn a_looser_policy_in_manage_toml_is_refused_naming_the_file_and_the_key() {
    let site = CliSite::with_config(
        MANAGE,
        &format!("{CONFIG}[commands.sleeper]\ndrain = \"stop\"\n"),
    );
    let out = site.run(&["sleeper", "--secs", "60"]);
    assert_looser_refused(&site, &out, "sleeper", "drain");
    // Every other command still works, `--list` among them.
    let hello = site.run(&["hello", "World"]);
    assert_eq!(hello.code(), Some(0), "{hello}");
    let list = site.run(&["--list"]);
    assert_eq!(list.code(), Some(0), "{list}");
    assert!(
        row(&list.stdout, "sleeper").contains("drain wait]"),
        "the refused table is not shown as in force: {list}"
    );

    let site = CliSite::with_config(
        MYSITE,
        &format!(
            "{CONFIG}[commands.worker]\ndrain = \"wait\"\n\
             [commands.migrate]\nmaintenance = \"allowed\"\n\
             [commands.backup]\ntracking = \"untracked\"\n"
        ),
    );
    let out = site.run_mysite(&["worker", "--jobs", "1"]);
    assert_looser_refused(&site, &out, "worker", "drain");
    let out = site.run_mysite(&["migrate"]);
    assert_looser_refused(&site, &out, "migrate", "maintenance");
    let out = site.run_mysite(&["backup", "--ms", "1"]);
    assert_looser_refused(&site, &out, "backup", "tracking");
    let hello = site.run_mysite(&["hello", "World"]);
    assert_eq!(hello.code(), Some(0), "{hello}");
}
