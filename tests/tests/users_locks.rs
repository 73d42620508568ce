//! No one outside the site can take a lock in its state. `flock`
//! needs only an open descriptor, and read permission gives one: with the
//! state's old modes (0644 files, 0755 directories) any local user could
//! hold the gate (`offline off` hung for ever), a command's instance lock
//! (`offline run -- migrate` took the site offline, then failed "already
//! running"), or a dead task's file (the task counted as live again, and
//! `offline on` timed out). Here the outsider `manage-other` tries each
//! of those exactly as the attack did, with `flock(1)`, and is refused on
//! open ("Permission denied"), while the site's own commands carry on as
//! usual; a member of the site's group may still hold the gate (it can
//! write the state anyway), and a wait for it then names the holder.
//! A state an older manage left open is closed by its next writers, and
//! `offline doctor` names whatever is left, with the `chmod` that fixes it.
//!
//! Runs as root (it creates the users and switches to them); otherwise
//! each test prints `SKIPPED …` and passes. No wall-clock assertion: every
//! wait is for a state, within a hang guard.

#![allow(clippy::unwrap_used)]

use std::os::unix::process::CommandExt;

use manage_tests::{
    DEPLOY, OTHER, Outcome, Proc, SharedSite, Users, Who, chmod, lines_until, meta, poll_until,
    users,
};

/// `offline run -- migrate` with one quick step: a window, its lock and its
/// instance file, as a deploy makes them.
const MIGRATE_ONE_STEP: &[&str] = &[
    "offline",
    "run",
    "--",
    "migrate",
    "--steps",
    "1",
    "--step-ms",
    "1",
];

/// The example site's binary.
const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");

/// `flock FLAGS PATH` run by `who`, which prints `held` and holds the
/// lock for ten minutes if it gets one, as the attack did (`flock -s -n
/// state/gate sleep 600 &`). It runs in a process group of its own, killed
/// whole when dropped: `flock` leaves its lock to the command it runs.
struct Flock(Option<Proc>);

impl Flock {
    fn spawn(site: &SharedSite, who: Who, flags: &str, path: &str) -> Flock {
        let mut cmd = site.shell_command(
            who,
            &format!("exec flock {flags} {path} sh -c 'echo held; exec sleep 600'"),
        );
        cmd.process_group(0);
        Flock(Some(Proc::spawn(cmd)))
    }

    fn proc(&mut self) -> &mut Proc {
        self.0.as_mut().expect("not finished")
    }

    /// Waits for its end (it was refused) and returns what it said.
    fn finish(mut self) -> Outcome {
        self.0.take().expect("not finished").finish()
    }
}

impl Drop for Flock {
    fn drop(&mut self) {
        if let Some(p) = &self.0
            && let Some(group) = rustix::process::Pid::from_raw(p.pid() as i32)
        {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }
}

/// Tries `flock FLAGS PATH` as `who`; returns what it said once refused,
/// and fails the test if it got the lock.
fn try_to_hold(site: &SharedSite, who: Who, flags: &str, path: &str) -> Outcome {
    let mut f = Flock::spawn(site, who, flags, path);
    let held = poll_until(
        &format!("`flock {flags} {path}` to lock or give up"),
        || {
            if f.proc().try_line().is_some() {
                return Some(true);
            }
            (!f.proc().is_running()).then_some(false)
        },
    );
    assert!(!held, "{} holds {path} (`flock {flags}`)", who.name());
    f.finish()
}

/// `who` cannot open `path` (relative to the site) to lock it.
#[track_caller]
fn refused_to(site: &SharedSite, who: Who, flags: &str, path: &str) {
    let out = try_to_hold(site, who, flags, path);
    assert!(
        out.code() != Some(0) && out.stderr.contains("Permission denied"),
        "`flock {flags} {path}` as {}: {out}",
        who.name()
    );
}

/// The names of the files in the state's `tasks/` ending in `suffix`.
fn task_files(site: &SharedSite, suffix: &str) -> Vec<String> {
    manage_tests::names(&site.state().join("tasks"))
        .into_iter()
        .filter(|n| n.ends_with(suffix) && !n.starts_with('.'))
        .collect()
}

/// The live tasks in a `status --json` object.
fn live_tasks(st: &serde_json::Value) -> usize {
    st["tasks"].as_array().map_or(0, Vec::len)
}

#[test]
fn an_outsider_cannot_lock_the_gate_and_offline_off_brings_the_site_back() {
    if manage_tests::file_backend_only(
        "lock files in a shared state directory, opened by other users",
    ) {
        return;
    }
    let Some(users) =
        users("an_outsider_cannot_lock_the_gate_and_offline_off_brings_the_site_back")
    else {
        return;
    };
    let site = SharedSite::new(MYSITE, &users, "");
    site.run_ok(Who::Root, &["offline", "on", "--force"]);
    // Shared: `offline off` would wait for ever. Exclusive: every tracked
    // start and every `offline on` would.
    for flags in ["-s -n", "-x -n", "-s", "-x"] {
        refused_to(&site, Who::Other, flags, "var/state/gate");
    }
    let off = site.run_ok(Who::Root, &["offline", "off"]);
    assert_eq!(off.stdout, ["Status: ONLINE - Active sessions: 0"], "{off}");
    site.run_ok(Who::Deploy, &["hello"]);
    let on = site.run_ok(Who::Root, &["offline", "on", "--timeout", "300"]);
    assert_eq!(
        on.stdout.last().map(String::as_str),
        Some("Status: OFFLINE - Active sessions: 0"),
        "{on}"
    );
    site.run_ok(Who::Root, &["offline", "off"]);
}

#[test]
fn an_outsider_cannot_lock_a_commands_instance_and_offline_run_runs_it() {
    if manage_tests::file_backend_only(
        "lock files in a shared state directory, opened by other users",
    ) {
        return;
    }
    let Some(users) = users("an_outsider_cannot_lock_a_commands_instance_and_offline_run_runs_it")
    else {
        return;
    };
    let site = SharedSite::new(MYSITE, &users, "");
    let migrate = [
        "offline",
        "run",
        "--",
        "migrate",
        "--steps",
        "1",
        "--step-ms",
        "1",
    ];
    site.run_ok(Who::Root, &migrate);
    assert_eq!(task_files(&site, ".instance"), ["migrate.instance"]);
    refused_to(
        &site,
        Who::Other,
        "-x -n",
        "var/state/tasks/migrate.instance",
    );
    refused_to(&site, Who::Other, "-x -n", "var/state/run.lock");
    // The window runs its command instead of failing "already running".
    let run = site.run_ok(Who::Root, &migrate);
    assert!(run.stdout.iter().any(|l| l == "migrations done"), "{run}");
    assert_eq!(site.status_json(Who::Root)["mode"], "ONLINE");
}

#[test]
fn an_outsider_cannot_bring_a_dead_task_back_to_life_nor_wait_for_a_live_ones_lock() {
    if manage_tests::file_backend_only(
        "lock files in a shared state directory, opened by other users",
    ) {
        return;
    }
    let Some(users) =
        users("an_outsider_cannot_bring_a_dead_task_back_to_life_nor_wait_for_a_live_ones_lock")
    else {
        return;
    };
    let site = SharedSite::new(MYSITE, &users, "");
    // A live task of the deploy user: an outsider cannot even queue for
    // its lock (to win it the moment the task dies).
    let mut worker = site.spawn(Who::Deploy, &["worker", "--job-ms", "10"]);
    assert_eq!(worker.line(), "worker started");
    let [live] = task_files(&site, ".task").try_into().unwrap();
    refused_to(&site, Who::Other, "-x", &format!("var/state/tasks/{live}"));
    // It dies by SIGKILL: its file is left, unlocked.
    worker.kill9();
    assert_eq!(task_files(&site, ".task"), std::slice::from_ref(&live));
    refused_to(
        &site,
        Who::Other,
        "-x -n",
        &format!("var/state/tasks/{live}"),
    );
    // It never counts again, and the site goes offline at once.
    assert_eq!(live_tasks(&site.status_json(Who::Root)), 0);
    let on = site.run_ok(Who::Root, &["offline", "on", "--timeout", "3"]);
    assert_eq!(
        on.stdout.last().map(String::as_str),
        Some("Status: OFFLINE - Active sessions: 0"),
        "{on}"
    );
}

#[test]
fn a_member_holding_the_gate_makes_offline_off_say_who_and_off_ends_when_it_lets_go() {
    if manage_tests::file_backend_only(
        "lock files in a shared state directory, opened by other users",
    ) {
        return;
    }
    let Some(users) =
        users("a_member_holding_the_gate_makes_offline_off_say_who_and_off_ends_when_it_lets_go")
    else {
        return;
    };
    let site = SharedSite::new(MYSITE, &users, "");
    site.run_ok(Who::Root, &["offline", "on", "--force"]);
    // A member of the group may open the gate: it can write the state.
    let mut holder = Flock::spawn(&site, Who::Deploy, "-s", "var/state/gate");
    assert_eq!(holder.proc().line(), "held");
    let holder_pid = holder.proc().pid();
    let mut off = site.spawn_merged(Who::Root, &["offline", "off"]);
    let said = lines_until(&mut off, |l| l.starts_with("Blocking waiting for the gate"));
    let line = said.last().unwrap();
    let gate = site.state().join("gate");
    assert!(
        line.contains(&format!(
            "the gate {}, held by pid {} ({DEPLOY})",
            gate.display(),
            holder_pid
        )),
        "{line}"
    );
    assert!(
        off.is_running(),
        "`offline off` ended while the gate was held"
    );
    // The holder and the command it runs, killed: the lock is free.
    drop(holder);
    let off = off.finish();
    assert_eq!(off.code(), Some(0), "{off}");
    assert_eq!(
        off.stdout.last().map(String::as_str),
        Some("Status: ONLINE - Active sessions: 0"),
        "{off}"
    );
    assert_eq!(
        off.stdout
            .iter()
            .filter(|l| l.starts_with("Blocking"))
            .count(),
        0,
        "said once: {off}"
    );
}

/// Gives `path` (relative to the state) the mode an older manage gave it.
fn as_older_manage_left_it(site: &SharedSite, path: &str, mode: u32) {
    chmod(&site.state().join(path), mode);
}

/// The `problem:` lines of `offline doctor` as root.
fn doctor_problems(site: &SharedSite) -> Vec<String> {
    let out = site.run(Who::Root, &["offline", "doctor"]);
    out.stdout
        .iter()
        .filter(|l| l.starts_with("problem: "))
        .cloned()
        .collect()
}

fn state_made_by_an_older_manage(users: &Users) -> SharedSite {
    let site = SharedSite::new(MYSITE, users, "");
    site.run_ok(Who::Root, &["offline", "status"]);
    site.run_ok(Who::Deploy, &["hello"]);
    site.run_ok(Who::Root, MIGRATE_ONE_STEP);
    for dir in ["", "tasks", "pending", "sessions"] {
        as_older_manage_left_it(&site, dir, 0o2775);
    }
    for file in [
        "gate",
        "run.lock",
        "mode.json",
        "tasks/hello.instance",
        "tasks/migrate.instance",
    ] {
        as_older_manage_left_it(&site, file, 0o664);
    }
    site
}

#[test]
fn lock_files_an_older_manage_left_open_are_closed_by_their_next_opener_and_doctor_names_the_rest()
{
    if manage_tests::file_backend_only(
        "lock files in a shared state directory, opened by other users",
    ) {
        return;
    }
    let Some(users) = users(
        "lock_files_an_older_manage_left_open_are_closed_by_their_next_opener_and_doctor_names_the_rest",
    ) else {
        return;
    };
    let site = state_made_by_an_older_manage(&users);
    let state = site.state_text();
    let problems = doctor_problems(&site);
    for needle in [
        format!("others can lock {state}/gate (mode 0664)"),
        format!("run: chmod o-rwx {state}/gate"),
        format!("others can lock {state}/run.lock"),
        format!("others can lock 2 file(s) in {state}/tasks (hello.instance, migrate.instance)"),
        format!("run: chmod o-rwx {state}/tasks/*"),
        format!("others can list {state} (mode 2775)"),
        format!("run: chmod o-r {state}/tasks"),
    ] {
        assert!(
            problems.iter().any(|l| l.contains(&needle)),
            "doctor does not say {needle:?}: {problems:#?}"
        );
    }
    // The hole, as it was.
    let out =
        Proc::spawn(site.shell_command(Who::Other, "flock -n var/state/gate echo locked")).finish();
    assert_eq!(
        out.stdout,
        ["locked"],
        "the outsider could lock the gate: {out}"
    );

    // The web user opens the deploy user's instance lock and root's gate:
    // it owns neither, so it may not change their modes.
    site.run_ok(Who::Web, &["hello"]);
    assert_eq!(meta(&site.state().join("gate")).0, 0o664);
    assert_eq!(meta(&site.state().join("tasks/hello.instance")).0, 0o664);
    // Their owners' next runs close them; root closes whatever it opens.
    site.run_ok(Who::Deploy, &["hello"]);
    assert_eq!(meta(&site.state().join("tasks/hello.instance")).0, 0o660);
    site.run_ok(Who::Root, &["offline", "on", "--force"]);
    site.run_ok(Who::Root, MIGRATE_ONE_STEP);
    for file in ["gate", "run.lock", "mode.json", "tasks/migrate.instance"] {
        assert_eq!(
            meta(&site.state().join(file)).0,
            0o660,
            "{file} after root's runs"
        );
    }
    let problems = doctor_problems(&site);
    assert!(
        !problems.iter().any(|l| l.contains("others can lock")),
        "{problems:#?}"
    );
    // What is left is the directories' modes: do what doctor says.
    for line in &problems {
        let fix = line
            .split("run: ")
            .nth(1)
            .unwrap_or_else(|| panic!("no fix in {line:?}"));
        assert!(fix.starts_with("chmod o-r "), "{line}");
        site.shell(Who::Root, fix);
    }
    let doctor = site.run(Who::Root, &["offline", "doctor"]);
    assert_eq!(
        doctor.stdout.last().cloned(),
        Some(format!("healthy: {state}")),
        "{doctor}"
    );
    for file in [
        "gate",
        "run.lock",
        "tasks/hello.instance",
        "tasks/migrate.instance",
    ] {
        refused_to(&site, Who::Other, "-s -n", &format!("var/state/{file}"));
    }
    site.run_ok(Who::Root, &["offline", "off"]);
    assert_eq!(site.status_json(Who::Web)["mode"], "ONLINE");
}

#[test]
fn an_outsider_can_list_nothing_in_the_state_and_a_member_still_can() {
    if manage_tests::file_backend_only(
        "lock files in a shared state directory, opened by other users",
    ) {
        return;
    }
    let Some(users) = users("an_outsider_can_list_nothing_in_the_state_and_a_member_still_can")
    else {
        return;
    };
    let site = SharedSite::new(MYSITE, &users, "");
    let mut worker = site.spawn(Who::Deploy, &["worker", "--job-ms", "10"]);
    assert_eq!(worker.line(), "worker started");
    let web = site.serve(Who::Web);
    web.login();
    for dir in [
        "var/state",
        "var/state/tasks",
        "var/state/pending",
        "var/state/sessions",
    ] {
        let out = Proc::spawn(site.shell_command(Who::Other, &format!("ls {dir}"))).finish();
        assert!(
            out.code() != Some(0) && out.stderr.contains("Permission denied"),
            "`ls {dir}` as {OTHER}: {out}"
        );
        site.shell(Who::Web, &format!("ls {dir}"));
    }
    let out = Proc::spawn(site.shell_command(Who::Other, "cat var/state/VERSION")).finish();
    assert!(out.stderr.contains("Permission denied"), "{out}");
    // The status, as the outsider: a clear error, saying what to do.
    site.run(Who::Other, &["offline", "status"])
        .assert_clean_error(&[
            &site.state_text(),
            &format!("cannot be opened by you ({OTHER})"),
            "join the group",
        ]);
    // Every member sees the lot.
    for who in [Who::Root, Who::Deploy, Who::Web] {
        let st = site.status_json(who);
        assert_eq!(live_tasks(&st), 1, "as {}: {st:#}", who.name());
        assert_eq!(st["sessions"]["count"], 1, "as {}: {st:#}", who.name());
    }
    // A waiter's lock (the worker is asked to stop; the session holds
    // PENDING): closed to the outsider too.
    let mut waiting = site.spawn(Who::Root, &["offline", "on", "--timeout", "300"]);
    lines_until(&mut waiting, |l| l.starts_with("Active sessions detected"));
    let waiter = manage_tests::names(&site.state().join("pending"))
        .into_iter()
        .find(|n| n.ends_with(".waiter"))
        .expect("the waiter's lock file");
    refused_to(
        &site,
        Who::Other,
        "-x -n",
        &format!("var/state/pending/{waiter}"),
    );
    assert_eq!(site.status_json(Who::Web)["mode"], "PENDING");
    site.assert_shared_modes(&users, "with a task, a session and a waiter");
    drop(waiting);
    worker.kill9();
}
