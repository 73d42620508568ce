//! A state directory others could tamper with is refused, for every user
//! of the site, with a message naming the path and what to run:
//! world-writable (`chmod o-w`), group-writable by a group other than the
//! configured one (`chgrp manage-site`), owned by a user who is neither
//! root, the running user nor the configured `owner`. A refused run changes
//! nothing; a web app started on such a state turns everyone away until it
//! is fixed, then serves again.
//!
//! A symlink one user plants is never followed by another (I4): the web
//! user, a member of the group, may write in the state — it plants links
//! in `tasks/`, in place of the marker and in place of `sessions/` — and
//! root's and the deploy user's commands neither read nor change what they
//! point at.
//!
//! Runs as root (it creates the users and switches to them); otherwise
//! each test prints `SKIPPED …` and passes.

#![allow(clippy::unwrap_used)]

use std::fs::File;

use manage_tests::{
    DEPLOY, GROUP, OTHER, SharedSite, Who, chmod, chown, lock_exclusive, meta, send_signal,
    snapshot, users,
};

/// The example site's binary.
const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");

/// Every run of `who` in `site` is refused, with a clean error naming each
/// of `needles`; nothing in the state changes.
fn refused_for(site: &SharedSite, whos: &[Who], needles: &[&str]) {
    let before = snapshot(&site.state(), &[]);
    for &who in whos {
        for args in [
            &["offline", "on", "--force"][..],
            &["hello"],
            &["offline", "status"],
        ] {
            let out = site.run(who, args);
            out.assert_clean_error(needles);
            assert!(
                out.stdout.is_empty(),
                "`mysite {}` as {} said something: {out}",
                args.join(" "),
                who.name()
            );
        }
    }
    assert_eq!(
        snapshot(&site.state(), &[]),
        before,
        "a refused run changed the state"
    );
}

#[test]
fn a_world_writable_state_dir_is_refused_for_every_user_saying_chmod_o_w() {
    if manage_tests::file_backend_only(
        "a state directory others could tamper with, and links planted in it",
    ) {
        return;
    }
    let Some(users) =
        users("a_world_writable_state_dir_is_refused_for_every_user_saying_chmod_o_w")
    else {
        return;
    };
    let site = SharedSite::new(MYSITE, &users, "");
    site.run_ok(Who::Root, &["offline", "status"]);
    let state = site.state_text();

    chmod(&site.state(), 0o2777);
    refused_for(
        &site,
        &[Who::Root, Who::Deploy, Who::Web],
        &[
            &state,
            "writable by every user",
            &format!("run: chmod o-w {state}"),
        ],
    );
    assert!(!site.state().join("OFFLINE").exists());

    // The web app, as the web user, lets nobody in while the state is
    // unsafe, and says why; fixed, it serves again.
    let web = site.serve(Who::Web);
    let r = web.get("/", None);
    assert!(
        !r.is_home_page(),
        "the app served over an unsafe state: {r}"
    );
    assert_eq!(r.status, 303, "{r}");
    chmod(&site.state(), 0o2771);
    web.home_until("serving once the state is safe", None, |r| r.is_home_page());
    let session = web.login();
    web.get("/", Some(&session)).assert_home_page("once fixed");
    let said = web.stop();
    assert!(
        said.stderr.contains(&format!("run: chmod o-w {state}")),
        "the web app did not say what to fix: {said}"
    );

    // A world-writable directory inside is refused too, naming it.
    let tasks = site.state().join("tasks");
    chmod(&tasks, 0o2777);
    let tasks = tasks.display().to_string();
    refused_for(
        &site,
        &[Who::Root, Who::Deploy],
        &[&tasks, &format!("run: chmod o-w {tasks}")],
    );
}

#[test]
fn a_state_dir_group_writable_by_another_group_is_refused_saying_chgrp() {
    if manage_tests::file_backend_only(
        "a state directory others could tamper with, and links planted in it",
    ) {
        return;
    }
    let Some(users) = users("a_state_dir_group_writable_by_another_group_is_refused_saying_chgrp")
    else {
        return;
    };
    let site = SharedSite::new(MYSITE, &users, "");
    site.run_ok(Who::Root, &["offline", "status"]);
    let state = site.state_text();
    chown(&site.state(), None, Some(users.other_gid));
    chmod(&site.state(), 0o2771);
    refused_for(
        &site,
        &[Who::Root, Who::Deploy, Who::Web],
        &[
            &state,
            &format!("writable by group {OTHER}"),
            &format!("run: chgrp {GROUP} {state}"),
        ],
    );
    chown(&site.state(), None, Some(users.site_gid));
    chmod(&site.state(), 0o2771);
    site.run_ok(Who::Deploy, &["hello"]);

    // Without a configured group, a group-writable state is refused, and
    // the message offers both fixes.
    site.write_config("");
    refused_for(
        &site,
        &[Who::Root],
        &[
            &state,
            &format!("run: chmod g-w {state}"),
            &format!("group = \"{GROUP}\""),
        ],
    );
}

#[test]
fn a_state_dir_owned_by_another_user_is_refused_unless_it_is_the_configured_owner() {
    if manage_tests::file_backend_only(
        "a state directory others could tamper with, and links planted in it",
    ) {
        return;
    }
    let Some(users) =
        users("a_state_dir_owned_by_another_user_is_refused_unless_it_is_the_configured_owner")
    else {
        return;
    };
    let site = SharedSite::new(MYSITE, &users, "");
    let state = site.state_text();
    site.run_ok(Who::Root, &["offline", "status"]);
    // A user outside the site's group now owns it: it could chmod it at
    // will.
    chown(&site.state(), Some(users.other), None);
    refused_for(
        &site,
        &[Who::Root, Who::Deploy, Who::Web],
        &[
            &state,
            &format!("owned by {OTHER}"),
            &format!("run: chown root {state}"),
            &format!("owner = \"{OTHER}\""),
        ],
    );

    // Named as the owner, it is accepted by everyone.
    site.write_config(&format!("group = \"{GROUP}\"\nowner = \"{OTHER}\""));
    for who in [Who::Root, Who::Deploy, Who::Web] {
        assert_eq!(
            site.status_line(who),
            "Status: ONLINE - Active sessions: 0",
            "as {}",
            who.name()
        );
    }
    site.run_ok(Who::Deploy, &["hello"]);
    site.run_ok(Who::Root, &["offline", "on", "--force"]);
    site.run_ok(Who::Root, &["offline", "off"]);

    // Naming another owner does not cover it.
    site.write_config(&format!("group = \"{GROUP}\"\nowner = \"{DEPLOY}\""));
    refused_for(
        &site,
        &[Who::Root, Who::Deploy, Who::Web],
        &[&state, &format!("owned by {OTHER}")],
    );
    // Given back to root, it is accepted again.
    chown(&site.state(), Some(0), None);
    site.run_ok(Who::Web, &["offline", "status"]);
}

/// A valid record of a live task, as `offline list --json` gives it, of a
/// task named `name` with id `id`: bait that a reader following a link
/// would count.
fn task_record(site: &SharedSite, id: &str, name: &str) -> Vec<u8> {
    let mut worker = site.spawn(Who::Deploy, &["worker", "--job-ms", "10"]);
    assert_eq!(worker.line(), "worker started");
    let list = site.run_ok(Who::Root, &["offline", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&list.stdout.join("\n")).unwrap();
    let mut record = list["tasks"][0].clone();
    assert_eq!(record["name"], "worker", "{list:#}");
    send_signal(worker.pid(), rustix::process::Signal::TERM);
    worker.wait_exit();
    record["id"] = id.into();
    record["name"] = name.into();
    serde_json::to_vec(&record).unwrap()
}

#[test]
fn symlinks_the_web_user_plants_are_not_followed_by_root_or_the_deploy_user() {
    if manage_tests::file_backend_only(
        "a state directory others could tamper with, and links planted in it",
    ) {
        return;
    }
    let Some(users) =
        users("symlinks_the_web_user_plants_are_not_followed_by_root_or_the_deploy_user")
    else {
        return;
    };
    let site = SharedSite::new(MYSITE, &users, "");
    site.run_ok(Who::Root, &["offline", "status"]);
    site.run_ok(Who::Deploy, &["hello"]);
    let outside = site.outside(users.web);
    let bait = task_record(&site, "ba17-1-1", "bait");

    // The web user's own files outside the state: a live task's record
    // (locked, as a live task's file is) and a private file.
    std::fs::write(outside.join("bait.task"), bait).unwrap();
    chown(&outside.join("bait.task"), Some(users.web), None);
    let o = outside.display();
    site.shell(
        Who::Web,
        &format!("echo private > {o}/private && chmod 600 {o}/private"),
    );
    let held = File::open(outside.join("bait.task")).unwrap();
    lock_exclusive(&held);
    // Links in tasks/, in place of hello's instance lock, and in place of
    // the marker.
    let s = site.state();
    let s = s.display();
    site.shell(
        Who::Web,
        &format!(
            "ln -s {o}/bait.task {s}/tasks/ba17-1-1.task && \
             ln -s {o}/private {s}/tasks/ba17-1-2.task && \
             ln -sf {o}/private {s}/tasks/hello.instance && \
             ln -s {o}/private {s}/OFFLINE"
        ),
    );
    let before = snapshot(&outside, &[]);

    // Root and the deploy user never count the bait.
    for who in [Who::Root, Who::Deploy] {
        let st = site.status_json(who);
        assert_eq!(st["active_sessions"], 0, "as {}: {st:#}", who.name());
        let list = site.run_ok(who, &["offline", "list"]);
        assert!(!list.text().contains("bait"), "as {}: {list}", who.name());
    }
    // Root's mode changes replace or remove the link, never its target.
    site.run_ok(Who::Root, &["offline", "on", "--force"]);
    assert_eq!(
        meta(&site.state().join("OFFLINE")).1,
        0,
        "root's own marker"
    );
    site.run_ok(Who::Root, &["offline", "off"]);
    assert!(!site.state().join("OFFLINE").exists());
    // hello's instance lock is a link: refused, naming it, for both.
    let instance = site.state().join("tasks/hello.instance");
    for who in [Who::Root, Who::Deploy] {
        let out = site.run(who, &["hello"]);
        out.assert_clean_error(&[&instance.display().to_string(), "symlink"]);
        assert!(out.stdout.is_empty(), "{out}");
    }
    assert_eq!(snapshot(&outside, &[]), before, "something outside changed");
    assert!(
        std::fs::symlink_metadata(&instance)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    drop(held);
}

#[test]
fn sessions_replaced_by_a_symlink_is_refused_by_every_other_user() {
    if manage_tests::file_backend_only(
        "a state directory others could tamper with, and links planted in it",
    ) {
        return;
    }
    let Some(users) = users("sessions_replaced_by_a_symlink_is_refused_by_every_other_user") else {
        return;
    };
    let site = SharedSite::new(MYSITE, &users, "");
    site.run_ok(Who::Root, &["offline", "status"]);
    let outside = site.outside(users.web);
    let o = outside.display();
    let s = site.state();
    let s = s.display();
    site.shell(
        Who::Web,
        &format!(
            "mkdir {o}/sessions && mv {s}/sessions {s}/sessions.old && ln -s {o}/sessions {s}/sessions"
        ),
    );
    let sessions = site.state().join("sessions").display().to_string();
    let before = snapshot(site.dir(), &[]);
    for who in [Who::Root, Who::Deploy] {
        for args in [&["offline", "on", "--force"][..], &["hello"]] {
            let out = site.run(who, args);
            out.assert_clean_error(&[&sessions, "symlink"]);
            assert!(out.stdout.is_empty(), "{out}");
        }
    }
    // The web app lets nobody in, and writes no session through the link.
    let web = site.serve(Who::Web);
    let r = manage_tests::http_post(web.addr(), "/login", &[]);
    assert!(
        r.cookie_value("sessionid").is_none_or(|v| v.is_empty()),
        "{r}"
    );
    let said = web.stop();
    assert!(said.stderr.contains(&sessions), "{said}");
    assert_eq!(
        snapshot(site.dir(), &[]),
        before,
        "a refused run changed something"
    );
    assert!(manage_tests::names(&outside.join("sessions")).is_empty());
    // doctor names it.
    let doctor = site.run(Who::Root, &["offline", "doctor"]);
    assert_eq!(doctor.code(), Some(1), "{doctor}");
    assert!(
        doctor
            .stdout
            .iter()
            .any(|l| l.starts_with("problem: ") && l.contains(&format!("{sessions} is a symlink"))),
        "{doctor}"
    );
}
