//! Task files reused as slots (Linux): a task's file is a slot another
//! task used before, and will use again. Reuse must keep I3 — a task counts
//! exactly as long as a process of it lives — whoever races: starts and
//! ends in many processes, holders killed with SIGKILL, reapers, and
//! readers that open a task file just as its slot passes to the next task.
//! Every process here is a real `task-holder`.
#![cfg(target_os = "linux")]

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use manage_tests::{
    Holder, Proc, Scratch, SharedSite, WEB, Who, chmod, meta, names, send_signal, users,
};

const EXE: &str = env!("CARGO_BIN_EXE_task-holder");
/// The example site's binary, for the tests with real users.
const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");

fn site() -> (Scratch, Holder) {
    let scratch = Scratch::new();
    let holder = Holder::new(EXE, scratch.state());
    (scratch, holder)
}

/// The names of the slot files in `tasks/`.
fn slots(tasks: &Path) -> Vec<String> {
    names(tasks)
        .into_iter()
        .filter(|n| n.starts_with('.') && n.ends_with(".slot"))
        .collect()
}

fn inode(path: &Path) -> u64 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .ino()
}

/// A `probe-loop` watching `dead`, started before it dies: once `flag`
/// exists it makes 300 more rounds, each of which must find `dead` gone.
fn prober(h: &Holder, dead: &str, flag: &Path) -> Proc {
    let flag = flag.to_str().expect("a UTF-8 path");
    let mut p = h.spawn(&[
        "probe-loop",
        "--dead-id",
        dead,
        "--flag",
        flag,
        "--after",
        "300",
    ]);
    assert_eq!(p.line(), "probing");
    p
}

fn assert_ok(p: Proc, what: &str) {
    let out = p.finish();
    assert!(out.success(), "{what}: {out}");
    assert!(
        out.stdout.last().is_some_and(|l| l.starts_with("ok ")),
        "{what}: {out}"
    );
}

#[test]
fn a_killed_holders_slot_is_reused_once_reaped_and_its_record_never_counts_as_live() {
    if manage_tests::file_backend_only("the slot files of tasks/") {
        return;
    }
    let (scratch, h) = site();
    let tasks = scratch.state().join("tasks");
    // A first task leaves its file behind as a free slot.
    assert!(h.run(&["run", "warm"]).success());
    assert_eq!(slots(&tasks).len(), 1, "{:?}", names(&tasks));

    let (mut victim, dead) = h.hold(&["victim"]);
    let dead_file = tasks.join(format!("{dead}.task"));
    let dead_inode = inode(&dead_file);
    assert!(slots(&tasks).is_empty(), "the victim took the free slot");
    let flag = scratch.path().join("dead");
    let watching = prober(&h, &dead, &flag);

    victim.kill9();
    std::fs::write(&flag, b"").expect("raise the flag");

    // Unreaped, the dead task's file keeps its name and its record, and no
    // start takes it: it would make the dead task look live while it wrote.
    for _ in 0..3 {
        let out = h.run(&["run", "other", "--concurrent"]);
        assert!(out.success(), "{out}");
        assert_eq!(inode(&dead_file), dead_inode);
        assert!(h.live_ids().is_empty());
    }
    let text = std::fs::read_to_string(&dead_file).expect("read the dead task's file");
    assert!(text.contains(&dead), "{text}");

    // Reaped, the file is a free slot again.
    let out = h.run(&["reap"]);
    assert!(out.success(), "{out}");
    assert!(!dead_file.exists());
    let free: Vec<u64> = slots(&tasks)
        .iter()
        .map(|n| inode(&tasks.join(n)))
        .collect();
    assert!(free.contains(&dead_inode), "{free:?} lacks {dead_inode}");

    // Tasks that take every free slot: one of them is in the dead task's
    // old file, and each is listed with its own record, the dead one never.
    let held: Vec<(Proc, String)> = (0..free.len())
        .map(|i| h.hold(&[&format!("next-{i}"), "--concurrent"]))
        .collect();
    let ids: BTreeSet<String> = held.iter().map(|(_, id)| id.clone()).collect();
    let listed = h.list();
    assert_eq!(
        listed.iter().map(|t| t.id.clone()).collect::<BTreeSet<_>>(),
        ids
    );
    for t in &listed {
        let (_, id) = held.iter().find(|(_, id)| *id == t.id).expect("held");
        assert_eq!(&t.id, id);
        assert!(t.name.starts_with("next-"), "{t:?}");
    }
    let reused = held
        .iter()
        .any(|(_, id)| inode(&tasks.join(format!("{id}.task"))) == dead_inode);
    assert!(reused, "no task got the dead task's old file");
    assert_ok(watching, "a prober saw the killed task live");
    for (p, _) in held {
        assert!(p.finish().success());
    }
    assert!(h.live_ids().is_empty());
}

#[test]
fn slots_stay_whole_under_racing_starts_ends_kills_and_reaps() {
    if manage_tests::file_backend_only("the slot files of tasks/") {
        return;
    }
    let (scratch, h) = site();
    let tasks = scratch.state().join("tasks");
    let churners: Vec<Proc> = (0..4)
        .map(|_| h.spawn(&["churn", "churn", "--rounds", "300"]))
        .collect();
    let mut checkers: Vec<Proc> = (0..2)
        .map(|_| h.spawn(&["check-loop", "--rounds", "2000"]))
        .collect();
    for c in &mut checkers {
        assert_eq!(c.line(), "checking");
    }
    // Meanwhile, holders killed one after another, each watched by a
    // prober from before its death, with a reaper after each.
    for round in 0..8 {
        let (mut victim, dead) = h.hold(&[&format!("victim-{round}"), "--concurrent"]);
        let flag = scratch.path().join(format!("dead-{round}"));
        let watching = prober(&h, &dead, &flag);
        victim.kill9();
        std::fs::write(&flag, b"").expect("raise the flag");
        let out = h.run(&["reap"]);
        assert!(out.success(), "{out}");
        assert_ok(
            watching,
            &format!("round {round}: the killed task was seen live"),
        );
    }
    for c in churners {
        assert_ok(c, "a churner saw its task listed wrong");
    }
    for c in checkers {
        assert_ok(c, "a listing held a torn or foreign record");
    }
    assert!(h.live_ids().is_empty());
    let out = h.run(&["reap"]);
    assert!(out.success(), "{out}");
    let left = names(&tasks);
    assert!(
        left.iter()
            .all(|n| n.ends_with(".slot") || n.ends_with(".instance")),
        "left behind: {left:?}"
    );
    // The files were reused: far fewer than the 1,200 tasks that ran.
    assert!(!slots(&tasks).is_empty(), "{left:?}");
    assert!(slots(&tasks).len() <= 32, "{left:?}");
}

#[test]
fn a_reader_never_sees_a_half_written_or_foreign_record_in_a_reused_slot() {
    if manage_tests::file_backend_only("the slot files of tasks/") {
        return;
    }
    let (scratch, h) = site();
    // Writers rewrite slots as fast as they can with records of
    // ever-changing length (padded or truncated over the last one), while
    // readers list as fast as they can, until the writers are done.
    let done = scratch.path().join("done");
    let done_arg = done.to_str().expect("a UTF-8 path");
    let mut readers: Vec<Proc> = (0..3)
        .map(|_| h.spawn(&["check-loop", "--rounds", "1000000", "--flag", done_arg]))
        .collect();
    for r in &mut readers {
        assert_eq!(r.line(), "checking");
    }
    let writers: Vec<Proc> = (0..3)
        .map(|_| h.spawn(&["churn", "churn", "--unchecked", "--rounds", "5000"]))
        .collect();
    for w in writers {
        assert_ok(w, "a writer failed");
    }
    std::fs::write(&done, b"").expect("raise the flag");
    for r in readers {
        assert_ok(r, "a reader saw a torn or foreign record");
    }
}

/// The one live task file in `tasks/`.
fn the_task_file(tasks: &Path) -> std::path::PathBuf {
    let live: Vec<String> = names(tasks)
        .into_iter()
        .filter(|n| n.ends_with(".task"))
        .collect();
    let [one] = live.as_slice() else {
        panic!("not one task file: {live:?}");
    };
    tasks.join(one)
}

/// Starts the web user's `worker` and returns it once it runs.
fn web_worker(site: &SharedSite) -> Proc {
    let mut worker = site.spawn(Who::Web, &["worker", "--job-ms", "20"]);
    assert_eq!(worker.line(), "worker started");
    worker
}

/// Asks `worker` to stop (SIGTERM) and waits for its end (130: stopped
/// by a signal, as the runner reports it).
fn stop(worker: Proc) {
    send_signal(worker.pid(), rustix::process::Signal::TERM);
    let out = worker.finish();
    assert_eq!(out.code(), Some(130), "{out}");
}

#[test]
fn a_slot_one_member_left_serves_anothers_task_and_one_it_cannot_open_is_passed_over() {
    if manage_tests::file_backend_only("the slot files of tasks/") {
        return;
    }
    let Some(users) =
        users("a_slot_one_member_left_serves_anothers_task_and_one_it_cannot_open_is_passed_over")
    else {
        return;
    };
    let site = SharedSite::new(MYSITE, &users, "");
    let tasks = site.state().join("tasks");
    // The deploy user's command leaves its task file as a slot, the
    // group's to use.
    site.run_ok(Who::Deploy, &["hello"]);
    let [slot] = slots(&tasks).try_into().expect("one slot");
    let slot = tasks.join(slot);
    let (mode, uid, gid) = meta(&slot);
    assert_eq!((mode, uid, gid), (0o660, users.deploy, users.site_gid));
    let slot_inode = inode(&slot);

    // The web user's task runs in it, and everyone sees it as the web
    // user's.
    let worker = web_worker(&site);
    assert_eq!(inode(&the_task_file(&tasks)), slot_inode);
    let st = site.status_json(Who::Deploy);
    assert_eq!(st["tasks"][0]["user"], WEB, "{st:#}");
    assert_eq!(st["tasks"].as_array().map(Vec::len), Some(1), "{st:#}");
    stop(worker);
    assert!(!slot.exists() || inode(&slot) == slot_inode);
    let back: Vec<u64> = slots(&tasks)
        .iter()
        .map(|n| inode(&tasks.join(n)))
        .collect();
    assert!(back.contains(&slot_inode), "{back:?}");

    // Closed to its owner alone, the slot is passed over: the web user's
    // next task gets a file of its own, and runs as well.
    let owned = tasks.join(
        slots(&tasks)
            .into_iter()
            .find(|n| inode(&tasks.join(n)) == slot_inode)
            .expect("the slot"),
    );
    chmod(&owned, 0o600);
    let worker = web_worker(&site);
    assert_ne!(inode(&the_task_file(&tasks)), slot_inode);
    let st = site.status_json(Who::Root);
    assert_eq!(st["tasks"][0]["user"], WEB, "{st:#}");
    stop(worker);
    assert_eq!(inode(&owned), slot_inode, "the closed slot stays as it was");
    assert!(
        site.status_json(Who::Root)["tasks"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
}
