//! nginx's workers — an unprivileged user, not root and not in the site's
//! group — see the web-server marker `<state>/OFFLINE` through the state
//! directory's modes: a real nginx (`/usr/sbin/nginx`, which `scripts/test`
//! installs), started as root with `user manage-other;`, answers
//! 503 when `-f <state>/OFFLINE` holds and 200 otherwise. 200 while ONLINE,
//! 503 after root's `offline on --force`, 200 after `off` — and 200 even
//! while OFFLINE once a directory on the way loses its `o+x`, which is what
//! `offline doctor` then reports: so it is the modes manage gives the state
//! (2771: search for others, and nothing more) that let the workers in —
//! while the same workers can neither list the state nor open anything in
//! it, marker included.
//!
//! Runs as root (it creates the users and switches to them); otherwise it
//! prints `SKIPPED …` and passes. No wall-clock assertion: nginx stats the
//! marker on every request, so each answer follows the command before it.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use manage_tests::{Nginx, OTHER, Proc, SharedSite, Who, chmod, uid_of, users};

/// The example site's binary.
const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");

/// Starts nginx in `dir` with its workers as `user`, answering 503 while
/// `state`/OFFLINE exists and 200 otherwise.
fn start_nginx(dir: &Path, state: &Path, user: &str) -> Nginx {
    let marker = state.join("OFFLINE");
    let marker = marker.display();
    Nginx::start(dir, Some((user, user)), |port| {
        format!(
            "default_type text/plain;\n\
             server {{\n\
             \x20   listen 127.0.0.1:{port};\n\
             \x20   location / {{\n\
             \x20       if (-f {marker}) {{ return 503 \"OFFLINE\\n\"; }}\n\
             \x20       return 200 \"ONLINE\\n\";\n\
             \x20   }}\n\
             }}"
        )
    })
}

/// Asserts `nginx` answers `status` with `body`.
fn assert_answers(nginx: &Nginx, status: u16, body: &str, context: &str) {
    let r = nginx.get("127.0.0.1", "/", &[]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (status, body),
        "{context}: {r}\nerror.log:\n{}",
        nginx.error_log()
    );
}

#[test]
fn nginx_workers_who_are_not_root_see_the_marker_through_the_state_modes() {
    if manage_tests::file_backend_only("nginx reads the OFFLINE marker in the state directory") {
        return;
    }
    let Some(users) =
        users("nginx_workers_who_are_not_root_see_the_marker_through_the_state_modes")
    else {
        return;
    };
    let site = SharedSite::new(MYSITE, &users, "");
    // Root creates the state, umask 077.
    site.run_ok(Who::Root, &["offline", "status"]);
    let nginx = start_nginx(&site.dir().join("nginx"), &site.state(), OTHER);
    let workers = nginx.workers_as(users.other);
    for w in &workers {
        assert_eq!(
            uid_of(*w),
            Some(users.other),
            "nginx's worker {w} does not run as {OTHER}"
        );
    }

    assert_answers(&nginx, 200, "ONLINE\n", "ONLINE");
    site.run_ok(Who::Root, &["offline", "on", "--force"]);
    assert_answers(
        &nginx,
        503,
        "OFFLINE\n",
        "after root's `offline on --force`",
    );
    // What the workers' user can do, and all it can: stat the marker.
    site.shell(Who::Other, "test -e var/state/OFFLINE");
    for script in [
        "ls var/state",
        "cat var/state/OFFLINE",
        "cat var/state/mode.json",
        "flock -n var/state/gate true",
        "ls var/state/tasks",
    ] {
        let out = Proc::spawn(site.shell_command(Who::Other, script)).finish();
        assert!(
            out.code() != Some(0) && out.stderr.contains("Permission denied"),
            "`{script}` as {OTHER}, nginx's workers' user: {out}"
        );
    }
    site.run_ok(Who::Root, &["offline", "off"]);
    assert_answers(&nginx, 200, "ONLINE\n", "after root's `offline off`");

    // The deploy user's marker is seen as well.
    site.run_ok(Who::Deploy, &["offline", "on", "--force"]);
    assert_answers(
        &nginx,
        503,
        "OFFLINE\n",
        "after the deploy user's `offline on`",
    );

    // Without search permission for others on the way, the workers cannot
    // see the marker — and doctor says what to run.
    for (dir, broken, fixed, fix) in [
        (site.var(), 0o770, 0o775, "chmod o+x"),
        (site.state(), 0o2770, 0o2771, "chmod o+x"),
    ] {
        let shown = dir.display().to_string();
        chmod(&dir, broken);
        assert_answers(&nginx, 200, "ONLINE\n", &format!("{shown} without o+x"));
        let doctor = site.run(Who::Root, &["offline", "doctor"]);
        assert_eq!(doctor.code(), Some(1), "{doctor}");
        assert!(
            doctor
                .stdout
                .iter()
                .any(|l| l.starts_with("problem: ") && l.contains(&format!("run: {fix} {shown}"))),
            "{doctor}"
        );
        chmod(&dir, fixed);
        assert_answers(&nginx, 503, "OFFLINE\n", &format!("{shown} fixed"));
    }
    site.run_ok(Who::Root, &["offline", "off"]);
    assert_answers(&nginx, 200, "ONLINE\n", "back ONLINE");
}
