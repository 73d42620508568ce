//! One state, three real Unix users: root runs `offline on
//! --force` and `off`, the deploy user `manage-deploy` runs the site's
//! tracked commands, the web app runs as `manage-web` behind the
//! maintenance layer — and each sees the others' work: the web user's
//! sessions and the deploy user's tasks in everyone's status, root's mode
//! in the web app and in the deploy user's commands.
//!
//! Files any of them creates stay usable by the rest, whatever the
//! creator's umask (every process here runs with umask 077): the state is
//! setgid to `manage-site`, the state directory 2771, the directories in
//! it 2770, files 0660 — nothing for others but the search nginx's workers
//! need — and an atomic replace keeps the mode and group. Whoever runs
//! first creates it so.
//!
//! Runs as root (it creates the users and switches to them); otherwise
//! each test prints `SKIPPED …` and passes. No wall-clock assertion: every
//! wait is a hang guard.

#![allow(clippy::unwrap_used)]

use manage_tests::{DEPLOY, GROUP, REFUSED, SharedSite, Users, WEB, Who, lines_until, meta, users};

/// The example site's binary.
const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");

/// The live tasks in a `status --json` object.
fn tasks(st: &serde_json::Value) -> Vec<serde_json::Value> {
    st["tasks"].as_array().cloned().unwrap_or_default()
}

#[test]
fn root_deploy_and_web_users_see_each_others_sessions_tasks_and_modes() {
    if manage_tests::file_backend_only("the modes and owners of a state directory its users share")
    {
        return;
    }
    let Some(users) = users("root_deploy_and_web_users_see_each_others_sessions_tasks_and_modes")
    else {
        return;
    };
    let site = SharedSite::new(MYSITE, &users, "");
    assert_eq!(
        site.status_line(Who::Root),
        "Status: ONLINE - Active sessions: 0"
    );

    // The web app, as the web user: a visitor logs in.
    let web = site.serve(Who::Web);
    let session = web.login();
    let home = web.get("/", Some(&session));
    home.assert_home_page("the logged-in user");
    assert!(home.body.contains("You are logged in."), "{home}");

    // The deploy user's long-running worker.
    let mut worker = site.spawn(Who::Deploy, &["worker", "--job-ms", "20"]);
    assert_eq!(worker.line(), "worker started");

    // Everyone counts the web user's session and the deploy user's task.
    for who in [Who::Root, Who::Deploy, Who::Web] {
        let st = site.status_json(who);
        let seen = format!("as {}: {st:#}", who.name());
        assert_eq!(st["mode"], "ONLINE", "{seen}");
        assert_eq!(st["active_sessions"], 2, "{seen}");
        assert_eq!(st["sessions"]["count"], 1, "{seen}");
        let t = tasks(&st);
        assert_eq!(t.len(), 1, "{seen}");
        assert_eq!(t[0]["name"], "worker", "{seen}");
        assert_eq!(t[0]["user"], DEPLOY, "{seen}");
        assert_eq!(t[0]["pid"], worker.pid(), "{seen}");
    }
    let list = site.run_ok(Who::Root, &["offline", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&list.stdout.join("\n")).unwrap();
    assert_eq!(list["tasks"][0]["user"], DEPLOY, "{list:#}");
    assert_eq!(
        list["sessions"].as_array().map(Vec::len),
        Some(1),
        "{list:#}"
    );

    // The deploy user's one-shot tracked commands run meanwhile.
    let hello = site.run_ok(Who::Deploy, &["hello"]);
    assert_eq!(hello.stdout, ["Hello, world!"]);
    let one = site.run_ok(Who::Deploy, &["worker", "--jobs", "1", "--job-ms", "1"]);
    assert!(one.stdout.iter().any(|l| l == "finished job 1"), "{one}");

    // Root takes the site offline at once.
    let on = site.run_ok(Who::Root, &["offline", "on", "--force"]);
    assert!(
        on.stdout
            .first()
            .is_some_and(|l| l.starts_with("Status: OFFLINE")),
        "{on}"
    );
    // The deploy user's worker sees root's mode and stops cleanly.
    let stopped = worker.finish();
    assert_eq!(stopped.code(), Some(0), "{stopped}");
    assert!(
        stopped
            .stdout
            .iter()
            .any(|l| l.starts_with("worker stopping after")),
        "the worker did not stop for root's OFFLINE: {stopped}"
    );
    // The web app, as the web user, turns its logged-in user away.
    let away = web.home_until("turned away", Some(&session), |r| !r.is_home_page());
    assert_eq!(away.status, 303, "{away}");
    assert_eq!(away.header("location"), Some("/maintenance.html"), "{away}");
    // The deploy user's tracked commands are refused.
    let refused = site.run(Who::Deploy, &["hello"]);
    assert_eq!(refused.code(), Some(REFUSED), "{refused}");
    assert!(refused.stdout.is_empty(), "it ran: {refused}");
    for who in [Who::Root, Who::Deploy, Who::Web] {
        let st = site.status_json(who);
        assert_eq!(st["mode"], "OFFLINE", "as {}: {st:#}", who.name());
        assert!(
            st["by"].as_str().is_some_and(|b| b.starts_with("root@")),
            "as {}: {st:#}",
            who.name()
        );
    }

    // Root brings it back: the web user's visitor is served again, the
    // deploy user's commands run.
    site.run_ok(Who::Root, &["offline", "off"]);
    web.home_until("served again", Some(&session), |r| r.is_home_page());
    site.run_ok(Who::Deploy, &["hello"]);
    for who in [Who::Root, Who::Deploy, Who::Web] {
        let st = site.status_json(who);
        let seen = format!("as {}: {st:#}", who.name());
        assert_eq!(st["mode"], "ONLINE", "{seen}");
        assert_eq!(st["active_sessions"], 1, "only the session is left: {seen}");
        assert!(tasks(&st).is_empty(), "{seen}");
    }

    let owners = site.assert_shared_modes(&users, "after root, deploy and web");
    for who in [Who::Root, Who::Deploy, Who::Web] {
        assert!(
            owners.contains(&users.uid(who)),
            "nothing in the state was created by {}: {owners:?}",
            who.name()
        );
    }
}

#[test]
fn files_each_user_creates_under_umask_077_stay_usable_by_the_others() {
    if manage_tests::file_backend_only("the modes and owners of a state directory its users share")
    {
        return;
    }
    let Some(users) = users("files_each_user_creates_under_umask_077_stay_usable_by_the_others")
    else {
        return;
    };
    let site = SharedSite::new(MYSITE, &users, "");
    let state = site.state();

    // Root, umask 077, creates the state and the mode record.
    site.run_ok(Who::Root, &["offline", "on", "--force"]);
    for name in ["mode.json", "OFFLINE", "VERSION", "gate"] {
        assert_eq!(
            meta(&state.join(name)),
            (0o660, 0, users.site_gid),
            "{name}, written by root with umask 077"
        );
    }
    assert_eq!(meta(&state), (0o2771, 0, users.site_gid));

    // The deploy user replaces root's record and removes root's marker.
    let off = site.run_ok(Who::Deploy, &["offline", "off"]);
    assert_eq!(off.stdout, ["Status: ONLINE - Active sessions: 0"]);
    assert_eq!(
        meta(&state.join("mode.json")),
        (0o660, users.deploy, users.site_gid),
        "mode.json replaced by {DEPLOY}: same mode and group"
    );
    assert!(
        !state.join("OFFLINE").exists(),
        "root's marker is still there"
    );

    // The web user writes its session into root's sessions/.
    let web = site.serve(Who::Web);
    let session = web.login();
    // The bucket directories (their counts lie beside them).
    let buckets: Vec<String> = manage_tests::names(&state.join("sessions"))
        .into_iter()
        .filter(|n| state.join("sessions").join(n).is_dir())
        .collect();
    assert_eq!(buckets.len(), 1, "one bucket: {buckets:?}");
    assert_eq!(
        meta(&state.join("sessions").join(&buckets[0])),
        (0o2770, users.web, users.site_gid),
        "the web user's bucket"
    );
    assert_eq!(site.status_json(Who::Root)["sessions"]["count"], 1);

    // The deploy user waits for the web user's visitor, who logs out.
    let mut on = site.spawn(Who::Deploy, &["offline", "on", "--timeout", "300"]);
    lines_until(&mut on, |l| l.starts_with("Active sessions detected"));
    web.logout(&session);
    let on = on.finish();
    assert_eq!(on.code(), Some(0), "{on}");
    assert_eq!(
        on.stdout.last().map(String::as_str),
        Some("Status: OFFLINE - Active sessions: 0"),
        "{on}"
    );
    assert_eq!(
        meta(&state.join("OFFLINE")),
        (0o660, users.deploy, users.site_gid),
        "the deploy user's marker"
    );

    // Root runs a window while OFFLINE (creating run.lock), then ends it;
    // the deploy user runs the next window through root's run.lock.
    let run = site.run_ok(
        Who::Root,
        &[
            "offline",
            "run",
            "--",
            "migrate",
            "--steps",
            "1",
            "--step-ms",
            "1",
        ],
    );
    assert!(run.stdout.iter().any(|l| l == "migrations done"), "{run}");
    assert_eq!(
        meta(&state.join("run.lock")),
        (0o660, 0, users.site_gid),
        "root's run.lock"
    );
    site.run_ok(Who::Root, &["offline", "off"]);
    let run = site.run_ok(
        Who::Deploy,
        &[
            "offline",
            "run",
            "--timeout",
            "300",
            "--",
            "migrate",
            "--steps",
            "1",
            "--step-ms",
            "1",
        ],
    );
    assert!(run.stdout.iter().any(|l| l == "migrations done"), "{run}");
    assert_eq!(
        site.status_line(Who::Web),
        "Status: ONLINE - Active sessions: 0"
    );

    let owners = site.assert_shared_modes(&users, "after every user wrote");
    for who in [Who::Root, Who::Deploy, Who::Web] {
        assert!(
            owners.contains(&users.uid(who)),
            "nothing in the state was created by {}: {owners:?}",
            who.name()
        );
    }
}

/// `who` runs first and creates the state (the web user through the web
/// app), with umask 077; the site names the deploy user as `owner`, as
/// the deployment guide does. Everyone else accepts the state and works
/// in it.
fn first_run_by(who: Who, users: &Users) {
    let site = SharedSite::new(MYSITE, users, &format!("owner = \"{DEPLOY}\""));
    let state = site.state();
    let web = match who {
        Who::Web => {
            let web = site.serve(Who::Web);
            web.login();
            Some(web)
        }
        _ => {
            site.run_ok(who, &["offline", "status"]);
            None
        }
    };
    let creator = users.uid(who);
    for dir in ["", "tasks", "pending", "sessions"] {
        let want = if dir.is_empty() { 0o2771 } else { 0o2770 };
        assert_eq!(
            meta(&state.join(dir)),
            (want, creator, users.site_gid),
            "{}/{dir}, created by {} with umask 077",
            state.display(),
            who.name()
        );
    }
    assert_eq!(
        meta(&state.join("VERSION")),
        (0o660, creator, users.site_gid)
    );

    // Everyone accepts it and works in it.
    for other in [Who::Root, Who::Deploy, Who::Web] {
        let line = site.run(other, &["offline", "status"]);
        assert_eq!(
            line.code(),
            Some(0),
            "{} refuses the state {} created: {line}",
            other.name(),
            who.name()
        );
    }
    site.run_ok(Who::Deploy, &["hello"]);
    site.run_ok(Who::Root, &["offline", "on", "--force"]);
    site.run_ok(Who::Root, &["offline", "off"]);
    let web = web.unwrap_or_else(|| site.serve(Who::Web));
    web.home_until("serving after root's `off`", None, |r| r.is_home_page());
    let session = web.login();
    web.get("/", Some(&session)).assert_home_page("logged in");
    // The web app's sessions (with its first visitor's when it ran first).
    let sessions = if who == Who::Web { 2 } else { 1 };
    assert_eq!(site.status_json(Who::Deploy)["sessions"]["count"], sessions);
    site.assert_shared_modes(users, &format!("first run by {}", who.name()));
}

#[test]
fn root_running_first_creates_the_state_setgid_to_the_group() {
    if manage_tests::file_backend_only("the modes and owners of a state directory its users share")
    {
        return;
    }
    let Some(users) = users("root_running_first_creates_the_state_setgid_to_the_group") else {
        return;
    };
    first_run_by(Who::Root, &users);
}

#[test]
fn the_deploy_user_running_first_creates_the_state_setgid_to_the_group() {
    if manage_tests::file_backend_only("the modes and owners of a state directory its users share")
    {
        return;
    }
    let Some(users) = users("the_deploy_user_running_first_creates_the_state_setgid_to_the_group")
    else {
        return;
    };
    first_run_by(Who::Deploy, &users);
}

#[test]
fn the_web_app_running_first_creates_the_state_setgid_to_the_group() {
    if manage_tests::file_backend_only("the modes and owners of a state directory its users share")
    {
        return;
    }
    let Some(users) = users("the_web_app_running_first_creates_the_state_setgid_to_the_group")
    else {
        return;
    };
    first_run_by(Who::Web, &users);
}

#[test]
fn without_a_group_the_state_is_0711_0700_and_0600_whatever_the_umask() {
    if manage_tests::file_backend_only("the modes and owners of a state directory its users share")
    {
        return;
    }
    let Some(users) = users("without_a_group_the_state_is_0711_0700_and_0600_whatever_the_umask")
    else {
        return;
    };
    let site = SharedSite::with_config(MYSITE, &users, "");
    site.run_ok(Who::Root, &["hello"]);
    site.run_ok(Who::Root, &["offline", "on", "--force"]);
    site.run_ok(
        Who::Root,
        &["offline", "run", "--", "migrate", "--steps", "1"],
    );
    let tree = site.tree();
    assert!(tree.len() > 6, "{tree:?}");
    for (rel, ft, mode, uid, gid) in tree {
        let want = if rel.as_os_str().is_empty() {
            0o711
        } else if ft.is_dir() {
            0o700
        } else {
            0o600
        };
        assert_eq!(
            (mode, uid, gid),
            (want, 0, 0),
            "{} (no group configured, umask 077)",
            site.state().join(rel).display()
        );
    }
    // The state is root's alone: another user is told so, naming the
    // directory and what to do, and changes nothing.
    let before = manage_tests::snapshot(&site.state(), &[]);
    for args in [&["offline", "status"][..], &["hello"], &["offline", "off"]] {
        site.run(Who::Web, args).assert_clean_error(&[
            &site.state_text(),
            "cannot be opened by you (manage-web)",
            "Permission denied",
            "join the group",
        ]);
    }
    assert_eq!(manage_tests::snapshot(&site.state(), &[]), before);
    assert_eq!(
        site.status_line(Who::Root),
        "Status: OFFLINE - Active sessions: 0"
    );
}

#[test]
fn root_replacing_a_record_planted_world_writable_does_not_keep_that_mode() {
    if manage_tests::file_backend_only("the modes and owners of a state directory its users share")
    {
        return;
    }
    let Some(users) =
        users("root_replacing_a_record_planted_world_writable_does_not_keep_that_mode")
    else {
        return;
    };
    let site = SharedSite::new(MYSITE, &users, "");
    site.run_ok(Who::Root, &["offline", "on", "--force"]);
    site.run_ok(Who::Root, &["offline", "off"]);
    // The web user, a member of the group, may replace the record: it
    // does, with a copy anyone may write, setuid.
    site.shell(
        Who::Web,
        "cd var/state && cp mode.json .planted && chmod 4666 .planted && mv .planted mode.json",
    );
    assert_eq!(
        meta(&site.state().join("mode.json")),
        (0o4666, users.web, users.site_gid)
    );
    site.run_ok(Who::Root, &["offline", "on", "--force"]);
    let (mode, uid, gid) = meta(&site.state().join("mode.json"));
    assert_eq!((uid, gid), (0, users.site_gid));
    assert!(
        mode & 0o7002 == 0,
        "root wrote mode.json with mode {mode:04o}: world-writable or setuid, as {WEB} planted it \
         (group {GROUP})"
    );
    assert_eq!(mode, 0o660, "root's mode.json");
}
