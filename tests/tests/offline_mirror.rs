//! `manage offline mirror` and `offline on --local --force` / `off
//! --local`, end to end: real `manage` and `mysite` processes against a
//! real PostgreSQL server, this host's markers in its own local state
//! directory. The mirror follows mode changes made by other processes,
//! writes what is true when it starts, keeps the markers through a lost
//! connection (fail static) and converges after, and stops cleanly on
//! SIGTERM; the local override turns a running mysite away without the
//! database, and is taken back the same way.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use manage_tests::{
    CliSite, Link, MySite, Proc, file_backend_only, host_port, poll_until, psql, send_signal,
    test_database_url,
};

const EXE: &str = env!("CARGO_BIN_EXE_e2e-manage");
const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");
/// A database nobody listens on: the state database is what is broken.
const UNREACHABLE: &str = "postgres://manage:x@127.0.0.1:1/postgres?sslmode=disable";

fn is_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

fn wait_for(path: &Path, present: bool) {
    poll_until(
        &format!(
            "{} {}",
            path.display(),
            if present { "written" } else { "removed" }
        ),
        || (is_file(path) == present && (present || !path.exists())).then_some(()),
    );
}

/// Reads the mirror's lines until one contains `needle`; returns them all.
fn lines_until(mirror: &mut Proc, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let line = mirror.line();
        let done = line.contains(needle);
        seen.push(line);
        if done {
            return seen;
        }
    }
}

/// Starts `manage offline mirror ARGS…` on `site` (with `url` as its
/// database when given) and waits until it has said what it mirrors.
fn start_mirror(site: &CliSite, url: Option<&str>, args: &[&str]) -> Proc {
    let mut all = vec!["offline", "mirror"];
    all.extend_from_slice(args);
    let mut cmd = site.command(&all);
    if let Some(url) = url {
        cmd.env("MANAGE_DATABASE_URL", url);
    }
    let mut p = Proc::spawn(cmd);
    lines_until(&mut p, "keeping the web-server markers");
    p
}

fn pg_site(url: &str) -> CliSite {
    CliSite::on_postgres(EXE, url, "")
}

#[test]
fn the_mirror_follows_offline_and_read_only_set_by_other_processes() {
    let Some(url) = test_database_url() else {
        return;
    };
    let site = pg_site(&url);
    let offline = site.state().join("OFFLINE");
    let readonly = site.state().join("READONLY");
    // A periodic check no longer than the test: only the pushed change
    // can explain a marker that follows.
    let _mirror = start_mirror(&site, None, &["--check-every", "3600"]);
    assert!(!offline.exists(), "an ONLINE site has no marker");

    let out = site.run(&["offline", "on", "--force"]);
    assert!(out.success(), "{out}");
    wait_for(&offline, true);
    let out = site.run(&["offline", "off"]);
    assert!(out.success(), "{out}");
    wait_for(&offline, false);

    let out = site.run(&["offline", "on", "--read-only", "--force"]);
    assert!(out.success(), "{out}");
    wait_for(&readonly, true);
    wait_for(&offline, true);
    let out = site.run(&["offline", "off"]);
    assert!(out.success(), "{out}");
    wait_for(&offline, false);
    wait_for(&readonly, false);
}

#[test]
fn the_mirror_started_while_offline_writes_the_marker_at_once() {
    let Some(url) = test_database_url() else {
        return;
    };
    let site = pg_site(&url);
    let out = site.run(&["offline", "on", "--force"]);
    assert!(out.success(), "{out}");
    let offline = site.state().join("OFFLINE");
    assert!(
        !offline.exists(),
        "nothing but the mirror writes this host's marker"
    );
    let _mirror = start_mirror(&site, None, &["--check-every", "3600"]);
    wait_for(&offline, true);
}

#[test]
fn the_mirror_keeps_the_marker_while_cut_off_and_converges_when_the_link_returns() {
    let Some(url) = test_database_url() else {
        return;
    };
    let site = pg_site(&url);
    let name = site.postgres_site().unwrap().to_owned();
    let link = Link::to(host_port(&url));
    let mirror_url = format!("{}&application_name={name}-mirror", link.url(&url));
    let out = site.run(&["offline", "on", "--force"]);
    assert!(out.success(), "{out}");
    let offline = site.state().join("OFFLINE");
    let mut mirror = start_mirror(&site, Some(&mirror_url), &["--check-every", "0.2"]);
    wait_for(&offline, true);

    // The link goes down and the server ends the mirror's connections.
    link.refuse_new();
    let ended = psql(
        &url,
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = '{name}-mirror'"
        ),
    );
    assert_ne!(ended, "0", "the mirror had a connection to end");
    lines_until(&mut mirror, "cannot read the mode, keeping the markers");
    // The site goes ONLINE meanwhile: the cut-off mirror cannot know, and
    // keeps the marker (fail static) through retry after retry.
    let out = site.run(&["offline", "off"]);
    assert!(out.success(), "{out}");
    let tried = link.refused();
    poll_until("the mirror retried three times more", || {
        (link.refused() >= tried + 3).then_some(())
    });
    assert!(
        is_file(&offline),
        "the marker went while the mode could not be read"
    );

    // The link returns: the marker follows the mode again, and the outage
    // was said once, not once per retry.
    link.restore();
    let lines = lines_until(&mut mirror, "can be read again");
    wait_for(&offline, false);
    assert!(
        !lines.iter().any(|l| l.contains("cannot read the mode")),
        "the outage was said more than once: {lines:?}"
    );
}

#[test]
fn sigterm_stops_the_mirror_cleanly_with_exit_0_and_the_markers_as_they_were() {
    let Some(url) = test_database_url() else {
        return;
    };
    let site = pg_site(&url);
    let out = site.run(&["offline", "on", "--force"]);
    assert!(out.success(), "{out}");
    let offline = site.state().join("OFFLINE");
    let mirror = start_mirror(&site, None, &[]);
    wait_for(&offline, true);
    send_signal(mirror.pid(), rustix::process::Signal::TERM);
    let out = mirror.finish();
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stdout
            .last()
            .is_some_and(|l| l.contains("stopped; the markers stay as they are")),
        "{out}"
    );
    assert!(is_file(&offline), "a stopped mirror leaves the marker");
    let leftovers: Vec<_> = std::fs::read_dir(site.state())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "OFFLINE")
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

#[test]
fn the_mirror_on_the_file_backend_says_it_has_nothing_to_do_and_exits_0() {
    if file_backend_only("the file backend writes its own markers") {
        return;
    }
    let site = CliSite::new(EXE);
    let out = site.run(&["offline", "mirror"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.text().contains("nothing to mirror"), "{out}");
}

#[test]
fn a_directory_planted_as_the_marker_is_named_and_the_marker_follows_once_it_is_gone() {
    let Some(url) = test_database_url() else {
        return;
    };
    let site = pg_site(&url);
    let offline = site.state().join("OFFLINE");
    std::fs::create_dir_all(&offline).unwrap();
    let out = site.run(&["offline", "on", "--force"]);
    assert!(out.success(), "{out}");
    let mut mirror = start_mirror(&site, None, &["--check-every", "0.2"]);
    let lines = lines_until(&mut mirror, "is a directory");
    let said = lines.last().unwrap();
    assert!(said.contains(&offline.display().to_string()), "{said}");
    std::fs::remove_dir(&offline).unwrap();
    wait_for(&offline, true);

    // The local override names it too, with exit 1.
    std::fs::remove_file(&offline).unwrap();
    std::fs::create_dir(&offline).unwrap();
    let mut cmd = site.command(&["offline", "on", "--local", "--force"]);
    cmd.env("MANAGE_DATABASE_URL", UNREACHABLE);
    let out = Proc::spawn(cmd).finish();
    out.assert_clean_error(&[&offline.display().to_string(), "is a directory"]);
    assert_eq!(out.code(), Some(1), "{out}");
}

#[test]
fn a_symlink_planted_as_the_marker_is_replaced_without_touching_its_target() {
    let Some(url) = test_database_url() else {
        return;
    };
    let site = pg_site(&url);
    let offline = site.state().join("OFFLINE");
    std::fs::create_dir_all(site.state()).unwrap();
    let precious = site.dir().join("precious");
    std::fs::write(&precious, b"precious\n").unwrap();
    std::os::unix::fs::symlink(&precious, &offline).unwrap();
    let mut cmd = site.command(&["offline", "on", "--local", "--force"]);
    cmd.env("MANAGE_DATABASE_URL", UNREACHABLE);
    let out = Proc::spawn(cmd).finish();
    assert!(out.success(), "{out}");
    assert!(is_file(&offline), "the marker is a file of its own");
    assert_eq!(std::fs::read(&precious).unwrap(), b"precious\n");
}

#[test]
fn a_local_override_without_the_database_turns_a_running_mysite_away_and_off_local_takes_it_back() {
    let Some(url) = test_database_url() else {
        return;
    };
    let site = MySite::on_postgres(MYSITE, &url, "state_dir = \"state\"");
    let server = site.serve(&[]);
    server.get_until("served", "/api/status", &[], |r| r.status == 200);
    let offline = site.state().join("OFFLINE");

    let local = |args: &[&str]| {
        let mut cmd = site.command(args);
        cmd.env("MANAGE_DATABASE_URL", UNREACHABLE);
        Proc::spawn(cmd).finish()
    };
    let out = local(&["offline", "on", "--local"]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.text().contains("needs --force"), "{out}");
    assert!(!offline.exists());

    let out = local(&[
        "offline",
        "on",
        "--local",
        "--force",
        "--message",
        "db down",
    ]);
    assert!(out.success(), "{out}");
    assert!(is_file(&offline), "{out}");
    let r = server.get_until("OFFLINE at the server", "/api/status", &[], |r| {
        r.status == 503 && r.json()["mode"] == "OFFLINE"
    });
    assert!(r.body.contains("db down"), "{r}");

    // Status says so plainly, with the database or without it.
    let out = site.run(&["offline", "status", "--exit-code"]);
    assert_eq!(out.code(), Some(4), "{out}");
    assert!(out.stdout[0].starts_with("Status: ONLINE"), "{out}");
    assert!(
        out.stdout[1].starts_with("This host: OFFLINE by a local override"),
        "{out}"
    );
    let out = local(&["offline", "status"]);
    assert_eq!(out.code(), Some(69), "the database unreachable: {out}");
    assert!(
        out.stdout[0].starts_with("This host: OFFLINE by a local override"),
        "{out}"
    );

    let out = local(&["offline", "off", "--local"]);
    assert!(out.success(), "{out}");
    assert!(!offline.exists(), "{out}");
    server.get_until("served again", "/api/status", &[], |r| r.status == 200);
    let out = site.run(&["offline", "status", "--exit-code"]);
    assert_eq!(out.code(), Some(0), "{out}");
}

#[test]
fn the_mirror_never_removes_the_marker_while_a_local_override_stands() {
    let Some(url) = test_database_url() else {
        return;
    };
    let site = pg_site(&url);
    let offline = site.state().join("OFFLINE");
    let mut mirror = start_mirror(&site, None, &["-v", "--check-every", "0.2"]);
    let out = site.run(&["offline", "on", "--local", "--force"]);
    assert!(out.success(), "{out}");
    // The shared mode changes (and so the mirror writes) twice: the
    // override wins each time.
    for verb in [&["on", "--force"][..], &["off"]] {
        let mut args = vec!["offline"];
        args.extend_from_slice(verb);
        let out = site.run(&args);
        assert!(out.success(), "{out}");
    }
    // The mirror has read the last change (ONLINE) since: the marker stays.
    let generation = site.mode().record.generation;
    lines_until(
        &mut mirror,
        &format!("read the mode: ONLINE (generation {generation})"),
    );
    assert!(is_file(&offline), "the mirror removed an overriding marker");
    send_signal(mirror.pid(), rustix::process::Signal::TERM);
    let _ = lines_until(&mut mirror, "stopped");
    assert!(is_file(&offline), "the mirror removed an overriding marker");
    let out = site.run(&["offline", "off", "--local"]);
    assert!(out.success(), "{out}");
    assert!(!offline.exists());
}

#[test]
fn local_is_a_usage_error_on_the_file_backend() {
    if file_backend_only("--local is for a shared state") {
        return;
    }
    let site = CliSite::new(EXE);
    let out = site.run(&["offline", "on", "--local", "--force"]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.text().contains("shared"), "{out}");
    assert!(!site.state().join("OFFLINE").exists());
}
