//! `mysite offline doctor` on a state shared by real users: it
//! checks the state as the running user sees it and prints one `problem:`
//! line a problem, each saying what to run, then `N problem(s) in DIR`
//! (exit 1) — or `healthy: DIR` (exit 0). Here: a healthy state passes for
//! root, the deploy user and the web user, while an outsider is told it
//! cannot write; a world-writable state (`chmod o-w`), a state of another
//! group (`chgrp manage-site`), a file the group cannot write (`chmod
//! g+rw`), a directory nginx's workers cannot cross (`chmod o+x`), and a
//! wrong or corrupt VERSION are each reported; fixed, the state passes.
//!
//! Runs as root (it creates the users and switches to them); otherwise
//! each test prints `SKIPPED …` and passes.

#![allow(clippy::unwrap_used)]

use manage_tests::{DEPLOY, GROUP, OTHER, Outcome, SharedSite, Users, Who, chmod, chown, users};

/// The example site's binary.
const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");

/// A state used by all three: root created it, the deploy user ran a
/// command, the web user logged a visitor in, root went offline and back.
fn lived_in(users: &Users) -> SharedSite {
    let site = SharedSite::new(MYSITE, users, &format!("owner = \"{DEPLOY}\""));
    site.run_ok(Who::Root, &["offline", "status"]);
    site.run_ok(Who::Deploy, &["hello"]);
    let web = site.serve(Who::Web);
    web.login();
    site.run_ok(Who::Root, &["offline", "on", "--force"]);
    site.run_ok(Who::Root, &["offline", "off"]);
    site
}

fn doctor(site: &SharedSite, who: Who) -> Outcome {
    site.run(who, &["offline", "doctor"])
}

/// `doctor` as `who` passes: exit 0, no problem, `healthy: DIR` last.
fn assert_healthy(site: &SharedSite, who: Who) {
    let out = doctor(site, who);
    assert_eq!(out.code(), Some(0), "doctor as {}: {out}", who.name());
    assert!(
        !out.stdout.iter().any(|l| l.starts_with("problem:")),
        "doctor as {}: {out}",
        who.name()
    );
    assert_eq!(
        out.stdout.last().cloned(),
        Some(format!("healthy: {}", site.state_text())),
        "doctor as {}: {out}",
        who.name()
    );
}

/// `doctor` as `who` fails (exit 1) with a `problem:` line holding every
/// one of `needles`, and the count last; returns its output.
fn assert_problem(site: &SharedSite, who: Who, needles: &[&str]) -> Outcome {
    let out = doctor(site, who);
    assert_eq!(out.code(), Some(1), "doctor as {}: {out}", who.name());
    assert!(
        out.stdout
            .iter()
            .any(|l| l.starts_with("problem: ") && needles.iter().all(|n| l.contains(n))),
        "doctor as {} has no problem line with {needles:?}: {out}",
        who.name()
    );
    let n = out
        .stdout
        .iter()
        .filter(|l| l.starts_with("problem: "))
        .count();
    let last = out.stdout.last().cloned().unwrap_or_default();
    let state = site.state_text();
    assert!(
        (n == 1 && last == format!("1 problem in {state}"))
            || (n > 1 && last == format!("{n} problems in {state}")),
        "doctor as {}: the last line is not the count of {n}: {out}",
        who.name()
    );
    out
}

#[test]
fn doctor_passes_on_a_healthy_shared_state_for_every_member_of_the_site() {
    if manage_tests::file_backend_only(
        "doctor's checks of a shared state directory's modes and owners",
    ) {
        return;
    }
    let Some(users) = users("doctor_passes_on_a_healthy_shared_state_for_every_member_of_the_site")
    else {
        return;
    };
    let site = lived_in(&users);
    for who in [Who::Root, Who::Deploy, Who::Web] {
        assert_healthy(&site, who);
    }
    // An outsider is told it cannot write the state, and by whom it can.
    assert_problem(
        &site,
        Who::Other,
        &[
            &format!("you ({OTHER}) cannot write {}", site.state_text()),
            "a member of its group",
        ],
    );
}

#[test]
fn doctor_reports_a_world_writable_state_dir_saying_chmod_o_w() {
    if manage_tests::file_backend_only(
        "doctor's checks of a shared state directory's modes and owners",
    ) {
        return;
    }
    let Some(users) = users("doctor_reports_a_world_writable_state_dir_saying_chmod_o_w") else {
        return;
    };
    let site = lived_in(&users);
    let state = site.state_text();
    chmod(&site.state(), 0o2777);
    for who in [Who::Root, Who::Deploy, Who::Web] {
        let out = assert_problem(
            &site,
            who,
            &[
                &state,
                "writable by every user",
                &format!("run: chmod o-w {state}"),
            ],
        );
        assert!(
            out.stdout.iter().any(|l| l.starts_with("problem: ")
                && l.contains(&format!("others can list {state}"))
                && l.contains(&format!("run: chmod o-r {state}"))),
            "{out}"
        );
        assert_eq!(
            out.stdout.last().cloned(),
            Some(format!("2 problems in {state}")),
            "{out}"
        );
    }
    let tasks = site.state().join("tasks").display().to_string();
    chmod(&site.state(), 0o2771);
    chmod(&site.state().join("tasks"), 0o2777);
    assert_problem(&site, Who::Root, &[&format!("run: chmod o-w {tasks}")]);
    chmod(&site.state().join("tasks"), 0o2770);
    for who in [Who::Root, Who::Deploy, Who::Web] {
        assert_healthy(&site, who);
    }
}

#[test]
fn doctor_reports_a_state_dir_of_another_group_saying_chgrp() {
    if manage_tests::file_backend_only(
        "doctor's checks of a shared state directory's modes and owners",
    ) {
        return;
    }
    let Some(users) = users("doctor_reports_a_state_dir_of_another_group_saying_chgrp") else {
        return;
    };
    let site = lived_in(&users);
    let state = site.state_text();
    chown(&site.state(), None, Some(users.other_gid));
    chmod(&site.state(), 0o2771);
    for who in [Who::Root, Who::Deploy] {
        assert_problem(
            &site,
            who,
            &[&state, &format!("run: chgrp {GROUP} {state}")],
        );
    }
    // Not group-writable, but still not the site's group: the group's
    // members could not write it.
    chmod(&site.state(), 0o2751);
    assert_problem(
        &site,
        Who::Root,
        &[&format!(
            "group {OTHER}, not the configured group {GROUP}; run: chgrp {GROUP} {state}"
        )],
    );
    chown(&site.state(), None, Some(users.site_gid));
    chmod(&site.state(), 0o2771);
    assert_healthy(&site, Who::Root);
}

#[test]
fn doctor_reports_a_state_file_the_group_cannot_write_and_a_lost_setgid() {
    if manage_tests::file_backend_only(
        "doctor's checks of a shared state directory's modes and owners",
    ) {
        return;
    }
    let Some(users) = users("doctor_reports_a_state_file_the_group_cannot_write_and_a_lost_setgid")
    else {
        return;
    };
    let site = lived_in(&users);
    let record = site.state().join("mode.json");
    let shown = record.display().to_string();
    chmod(&record, 0o640);
    assert_problem(
        &site,
        Who::Deploy,
        &[&shown, &format!("run: chmod g+rw {shown}")],
    );
    chmod(&record, 0o660);
    let sessions = site.state().join("sessions");
    chmod(&sessions, 0o770);
    let shown = sessions.display().to_string();
    assert_problem(
        &site,
        Who::Root,
        &[&shown, &format!("run: chmod g+s {shown}")],
    );
    chmod(&sessions, 0o2770);
    assert_healthy(&site, Who::Web);
}

#[test]
fn doctor_reports_a_directory_nginx_workers_cannot_cross_saying_chmod_o_x() {
    if manage_tests::file_backend_only(
        "doctor's checks of a shared state directory's modes and owners",
    ) {
        return;
    }
    let Some(users) =
        users("doctor_reports_a_directory_nginx_workers_cannot_cross_saying_chmod_o_x")
    else {
        return;
    };
    let site = lived_in(&users);
    let var = site.var();
    let shown = var.display().to_string();
    chmod(&var, 0o770);
    assert_problem(
        &site,
        Who::Root,
        &[&shown, "nginx", &format!("run: chmod o+x {shown}")],
    );
    chmod(&var, 0o775);
    let state = site.state_text();
    chmod(&site.state(), 0o2770);
    assert_problem(
        &site,
        Who::Root,
        &[&state, "nginx", &format!("run: chmod o+x {state}")],
    );
    chmod(&site.state(), 0o2771);
    assert_healthy(&site, Who::Root);
}

#[test]
fn doctor_reports_a_wrong_or_corrupt_version_and_manage_refuses_it() {
    if manage_tests::file_backend_only(
        "doctor's checks of a shared state directory's modes and owners",
    ) {
        return;
    }
    let Some(users) = users("doctor_reports_a_wrong_or_corrupt_version_and_manage_refuses_it")
    else {
        return;
    };
    let site = lived_in(&users);
    let version = site.state().join("VERSION");
    let shown = version.display().to_string();
    std::fs::write(&version, "3\n").unwrap();
    assert_problem(&site, Who::Deploy, &[&shown, "format 3", "understands 2"]);
    site.run(Who::Root, &["offline", "on", "--force"])
        .assert_clean_error(&[&shown, "version 3"]);
    assert!(!site.state().join("OFFLINE").exists());
    std::fs::write(&version, "garbage\n").unwrap();
    assert_problem(&site, Who::Web, &[&shown, "corrupt", "\"garbage\""]);
    site.run(Who::Deploy, &["hello"])
        .assert_clean_error(&[&shown, "corrupt"]);
    std::fs::write(&version, "2\n").unwrap();
    for who in [Who::Root, Who::Deploy, Who::Web] {
        assert_healthy(&site, who);
    }
}

#[test]
fn doctors_note_on_a_dead_commands_task_file_is_true() {
    if manage_tests::file_backend_only(
        "doctor's checks of a shared state directory's modes and owners",
    ) {
        return;
    }
    let Some(users) = users("doctors_note_on_a_dead_commands_task_file_is_true") else {
        return;
    };
    let site = lived_in(&users);
    // The deploy user's worker dies by SIGKILL: its task file stays.
    let mut worker = site.spawn(Who::Deploy, &["worker", "--job-ms", "10"]);
    assert_eq!(worker.line(), "worker started");
    worker.kill9();
    let dead = || {
        manage_tests::names(&site.state().join("tasks"))
            .into_iter()
            .filter(|n| n.ends_with(".task"))
            .count()
    };
    assert_eq!(dead(), 1);
    let out = doctor(&site, Who::Root);
    assert_eq!(out.code(), Some(0), "{out}");
    let note = out
        .stdout
        .iter()
        .find(|l| l.starts_with("note: 1 task file(s) of commands that died"))
        .unwrap_or_else(|| panic!("no note on the dead task file: {out}"));
    assert!(note.contains("`offline on` or `off` removes them"), "{out}");
    // Do what it says.
    site.run_ok(Who::Root, &["offline", "off"]);
    assert_eq!(dead(), 0, "`offline off` left the dead task file");
    let out = doctor(&site, Who::Root);
    assert!(!out.text().contains("commands that died"), "{out}");
}
