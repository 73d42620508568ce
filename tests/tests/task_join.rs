//! Joining a task is a capability, end to end: real `manage` and `mysite`
//! processes, external commands as shell scripts. A process that merely
//! knows a task's id (which `offline status --json` prints) is refused
//! (75) and runs nothing; a nested run joins only with proof — a
//! descriptor holding the task's lock that it inherited (Linux), or the
//! task's secret from `MANAGE_TASK` when it closed its descriptors, as a
//! Python `subprocess` child does. A joined run is a run of its own: it
//! keeps the task live after its root was SIGKILLed, `required` still needs
//! a window, `block` still blocks. The secret is never printed.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use maintenance_core::task::TaskSecret;
use maintenance_core::{Mode, TaskRecord};
use manage_tests::{
    CliSite, Outcome, Proc, REFUSED, file_backend_only, kill9_pid, lines_until, names,
    parse_progress, send_signal, wait_dead,
};
use rustix::process::Signal;

const EXE: &str = env!("CARGO_BIN_EXE_e2e-manage");
const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");
/// `task-holder exec-closed PROG ARGS…` closes every descriptor above 2 and
/// execs PROG: a child that kept the environment and nothing else.
const HOLDER: &str = env!("CARGO_BIN_EXE_task-holder");

/// An external command that says its task id and pid, then sleeps `$1`
/// seconds as that same process.
const NAP: &str = "#!/bin/sh\n\
    echo \"nap ${MANAGE_TASK%%:*} $$\"\n\
    exec sleep \"$1\"\n";

/// The live tasks, read in this process.
fn live(site: &CliSite) -> Vec<TaskRecord> {
    site.backend().tasks().unwrap()
}

/// `manage ARGS…` run with `MANAGE_TASK=token`, as a shell that exported
/// it would run it.
fn run_with_token(site: &CliSite, token: &str, args: &[&str]) -> Outcome {
    let mut cmd = site.command(args);
    cmd.env("MANAGE_TASK", token);
    Proc::spawn(cmd).finish()
}

/// Reads `p`'s lines until each tag has begun one (`tag rest…`), in any
/// order; returns each tag's rest.
fn tagged(p: &mut Proc, tags: &[&str]) -> BTreeMap<String, String> {
    let mut seen = BTreeMap::new();
    while tags.iter().any(|t| !seen.contains_key(*t)) {
        let line = p.line();
        let (tag, rest) = line.split_once(' ').unwrap_or((&line, ""));
        if tags.contains(&tag) {
            seen.insert(tag.to_owned(), rest.to_owned());
        }
    }
    seen
}

fn pid(text: &str) -> u32 {
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a pid: {text:?}"))
}

/// Polls until a live run joined task `root`; returns it.
fn wait_for_joined(site: &CliSite, root: &str) -> TaskRecord {
    let deadline = std::time::Instant::now() + manage_tests::HANG_GUARD;
    loop {
        if let Some(t) = live(site)
            .into_iter()
            .find(|t| t.joined.as_deref() == Some(root))
        {
            return t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing joined task {root}: {:?}",
            live(site)
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[track_caller]
fn assert_refused_as_stranger(out: &Outcome, id: &str) {
    assert_eq!(out.code(), Some(REFUSED), "{out}");
    assert!(out.stdout.is_empty(), "it ran: {out}");
    for needle in [
        &format!("as part of task {id}") as &str,
        "not part of that task",
        "unset MANAGE_TASK",
    ] {
        assert!(out.stderr.contains(needle), "want {needle:?}: {out}");
    }
}

#[test]
fn a_forged_task_id_is_refused_during_pending_and_the_site_goes_offline_once_the_task_dies() {
    let site = CliSite::new(EXE);
    site.external("nap", NAP);
    let mut root = site.spawn(&["nap", "600"]);
    let said = tagged(&mut root, &["nap"]);
    let (id, script) = said["nap"].split_once(' ').unwrap();
    let script = pid(script);
    // The id as anyone can read it.
    let status = site.status_json();
    assert_eq!(status["tasks"][0]["id"], id, "{status:#}");

    let on = site.spawn(&["offline", "on", "--timeout", "120"]);
    site.wait_for_mode(Mode::Pending);
    let plain = site.run(&["nap", "0.1"]);
    assert_eq!(plain.code(), Some(REFUSED), "refused, as promised: {plain}");
    // Knowing the id is not being part of the task: neither a short run
    // nor a long job gets in.
    assert_refused_as_stranger(&run_with_token(&site, id, &["nap", "0.1"]), id);
    assert_refused_as_stranger(&run_with_token(&site, id, &["nap", "30"]), id);
    let ids: Vec<String> = live(&site).into_iter().map(|t| t.id).collect();
    assert_eq!(ids, [id], "nothing joined");

    // The task's last processes die: nothing else holds the site.
    root.kill9();
    kill9_pid(script);
    let out = on.finish();
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(site.mode().mode, Mode::Offline);
    assert_eq!(live(&site), Vec::new());
}

#[test]
fn a_nested_run_that_closed_its_descriptors_joins_with_the_secret_and_holds_the_site_after_its_root_is_killed()
 {
    // Released descendants: the backgrounded joiner does not keep the
    // root's task through the command's keeper, so only its own join does.
    let site = CliSite::with_config(EXE, "[commands.job]\ndescendants = \"release\"\n");
    site.external("nap", NAP);
    site.external(
        "job",
        &format!(
            "#!/bin/sh\n\
             echo \"job ${{MANAGE_TASK%%:*}} $$\"\n\
             \"{HOLDER}\" exec-closed \"$MANAGE\" nap 600 &\n\
             echo \"joiner $!\"\n\
             exec sleep 600\n"
        ),
    );
    let mut root = site.spawn(&["job"]);
    let said = tagged(&mut root, &["job", "joiner", "nap"]);
    let (id, job) = said["job"].split_once(' ').unwrap();
    let (job, joiner) = (pid(job), pid(&said["joiner"]));
    let (nap_task, nap) = said["nap"].split_once(' ').unwrap();
    assert_eq!(nap_task, id, "the joined run hands its children the task");
    let nap = pid(nap);

    let joined = wait_for_joined(&site, id);
    assert_eq!(joined.pid, joiner, "a record of the joined run's own");
    assert_eq!(joined.name, "nap");
    assert_eq!(joined.argv, ["nap", "600"]);
    assert_eq!(joined.started_in, Mode::Online, "the task's standing");

    // The root and the job die; the joined run lives on and holds the task.
    root.kill9();
    kill9_pid(job);
    // The job's keeper ends right after the job.
    let tasks = manage_tests::poll_until("only the joined run left", || {
        let t = live(&site);
        (t.len() == 1).then_some(t)
    });
    assert_eq!(tasks[0].id, joined.id);

    let mut on = site.spawn(&["offline", "on", "--timeout", "120"]);
    let lines = lines_until(&mut on, |l| parse_progress(l).is_some());
    assert_eq!(
        lines[0], "Active sessions detected. Waiting for logout. (Session timeout set to 900 secs)",
        "{lines:?}"
    );
    assert_eq!(parse_progress(lines.last().unwrap()).unwrap().0, 1);
    assert_eq!(site.mode().mode, Mode::Pending);
    let list = site.run(&["offline", "list"]);
    assert!(
        list.stdout
            .iter()
            .any(|l| l.starts_with("nap ") && l.contains(&format!("(joined task {id})"))),
        "{list}"
    );

    // The joined run ends (SIGTERM, forwarded to its nap): OFFLINE.
    send_signal(joiner, Signal::TERM);
    wait_dead(nap);
    let out = on.finish();
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(site.mode().mode, Mode::Offline);
}

#[cfg(target_os = "linux")]
#[test]
fn the_id_alone_joins_only_a_process_that_inherited_the_task_lock() {
    let site = CliSite::new(EXE);
    site.external(
        "job",
        &format!(
            "#!/bin/sh\n\
             echo \"started ${{MANAGE_TASK%%:*}}\"\n\
             read line\n\
             ID=${{MANAGE_TASK%%:*}}\n\
             MANAGE_TASK=$ID \"$MANAGE\" task-info\n\
             echo \"inherited $?\"\n\
             MANAGE_TASK=$ID \"{HOLDER}\" exec-closed \"$MANAGE\" task-info\n\
             echo \"closed $?\"\n\
             \"{HOLDER}\" exec-closed \"$MANAGE\" task-info\n\
             echo \"secret $?\"\n"
        ),
    );
    let (mut p, id) = site.start(&["job"]);
    let backend = site.backend();
    let waiter = match backend
        .begin_pending(&maintenance_core::backend::ModeChange::by_this_process())
        .unwrap()
    {
        maintenance_core::backend::PendingStart::Waiting { waiter, .. } => waiter,
        other => panic!("not PENDING: {other:?}"),
    };
    p.send("go\n");
    let joined = format!(" task-info in ONLINE, joined {id}");
    if site.postgres_site().is_some() {
        // On PostgreSQL an inherited descriptor proves nothing (a socket
        // to the server, not a lock file): the id alone never joins.
        assert_eq!(
            p.line(),
            format!("inherited {REFUSED}"),
            "the id alone, on PostgreSQL"
        );
    } else {
        let info = p.line();
        assert!(
            info.ends_with(&joined),
            "by its inherited descriptor: {info}"
        );
        assert_eq!(p.line(), "inherited 0");
    }
    assert_eq!(
        p.line(),
        format!("closed {REFUSED}"),
        "no descriptor, no secret"
    );
    let info = p.line();
    assert!(info.ends_with(&joined), "by the secret: {info}");
    assert_eq!(p.line(), "secret 0");
    let out = p.finish();
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stderr.contains("not part of that task"), "{out}");
    // One refusal (closed), and on PostgreSQL the id alone's as well.
    let refusals = if site.postgres_site().is_some() { 2 } else { 1 };
    assert_eq!(out.stderr.lines().count(), refusals, "{out}");
    drop(waiter);
}

/// manage.toml's own lines for the mysite runs.
const MYSITE_CONFIG: &str = "state_dir = \"state\"\n";

#[test]
fn a_joined_migrate_is_refused_while_online_and_runs_inside_offline_run() {
    let site = CliSite::with_config(MYSITE, MYSITE_CONFIG);
    site.external(
        "deploy",
        "#!/bin/sh\n\"$MANAGE\" migrate --step-ms 1\necho \"migrate exit $?\"\n",
    );
    let out = site.run_mysite(&["deploy"]);
    assert_eq!(out.code(), Some(0), "the script's own code: {out}");
    assert_eq!(out.stdout, [format!("migrate exit {REFUSED}")], "{out}");
    assert!(out.stderr.contains("refusing to run `migrate`"), "{out}");
    assert!(out.stderr.contains("offline run -- migrate"), "{out}");

    let run = site.run_mysite(&["offline", "run", "--", "deploy"]);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        run.stdout.iter().any(|l| l == "migrations done"),
        "inside the window it runs: {run}"
    );
    assert!(run.stdout.iter().any(|l| l == "migrate exit 0"), "{run}");
    assert_eq!(site.mode().mode, Mode::Online);
}

#[test]
fn a_joined_backup_makes_offline_on_refuse() {
    let site = CliSite::with_config(MYSITE, MYSITE_CONFIG);
    site.external("nightly", "#!/bin/sh\n\"$MANAGE\" backup --ms 600000\n");
    let mut nightly = site.spawn_mysite(&["nightly"]);
    assert_eq!(nightly.line(), "backup started");
    let root = live(&site)
        .into_iter()
        .find(|t| t.name == "nightly")
        .unwrap();
    let backup = wait_for_joined(&site, &root.id);
    assert_eq!(backup.name, "backup");
    let before = site.mode().record;

    let out = site.run_mysite(&["offline", "on", "--timeout", "10"]);
    assert_eq!(out.code(), Some(REFUSED), "{out}");
    assert!(
        out.stderr.contains(&format!(
            "refusing to go offline: `backup` (pid {}",
            backup.pid
        )),
        "{out}"
    );
    assert_eq!(site.mode().record, before, "PENDING never began");

    kill9_pid(backup.pid);
    nightly.kill9();
}

#[test]
fn a_joined_worker_is_asked_to_stop_when_pending_begins_and_the_site_then_goes_offline() {
    let site = CliSite::with_config(MYSITE, MYSITE_CONFIG);
    site.external(
        "queue",
        "#!/bin/sh\n\"$MANAGE\" worker --job-ms 20\necho \"worker exit $?\"\n",
    );
    let mut queue = site.spawn_mysite(&["queue"]);
    assert_eq!(queue.line(), "worker started");
    let root = live(&site).into_iter().find(|t| t.name == "queue").unwrap();
    let worker = wait_for_joined(&site, &root.id);
    assert_eq!(worker.name, "worker");

    let on = site.spawn_mysite(&["offline", "on", "--timeout", "120"]);
    let lines = lines_until(&mut queue, |l| l.starts_with("worker exit"));
    assert_eq!(lines.last().unwrap(), "worker exit 0", "{lines:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("worker stopping after")),
        "{lines:?}"
    );
    let out = on.finish();
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(site.mode().mode, Mode::Offline);
    assert_eq!(queue.finish().code(), Some(0));
}

#[test]
fn the_secret_is_never_shown_nor_stored() {
    let site = CliSite::new(EXE);
    site.external(
        "job",
        "#!/bin/sh\n\
         echo \"token $MANAGE_TASK\"\n\
         \"$MANAGE\" sleeper-many --secs 600 &\n\
         read line\n\
         kill $!\n\
         wait\n",
    );
    let mut p = site.spawn(&["job"]);
    let said = tagged(&mut p, &["token", "started"]);
    let (id, secret) = said["token"].split_once(':').unwrap();
    assert_eq!(secret.len(), 64, "{said:?}");
    wait_for_joined(&site, id);

    let shown = [
        site.run(&["offline", "status", "--json"]),
        site.run(&["offline", "status", "-v"]),
        site.run(&["offline", "list"]),
        site.run(&["offline", "list", "--json"]),
        site.run(&["--list"]),
    ];
    for out in &shown {
        assert_eq!(out.code(), Some(0), "{out}");
        assert!(!out.text().contains(secret), "the secret shows: {out}");
    }
    assert!(shown[3].text().contains("\"joined\""), "{}", shown[3]);
    // Stored only as its hash, in the task files; never in a name.
    if !file_backend_only("its check of what the task files of tasks/ store") {
        let hash = TaskSecret::parse(secret).unwrap().sha256_hex();
        let dir = site.state().join("tasks");
        let mut hashed = 0;
        for name in names(&dir) {
            assert!(!name.contains(secret), "{name}");
            let text = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
            assert!(!text.contains(secret), "{name}: {text}");
            hashed += usize::from(text.contains(&hash));
        }
        assert_eq!(hashed, 2, "the root's file and the joined run's");
    }

    p.send("go\n");
    let out = p.finish();
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(!out.stderr.contains(secret), "{out}");
}
