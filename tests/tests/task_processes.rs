//! Tasks across real processes: I3 — a task counts exactly as
//! long as a process of its command lives, whoever holds its locks and
//! however its processes die — and races between processes starting,
//! probing and waiting on one command at once. Every process here is a real
//! `task-holder`; every listing is made by another process, as `manage
//! offline status` would make it.

use std::collections::BTreeSet;

use manage_tests::{
    Barrier, Holder, Proc, REFUSED, Report, Scratch, is_alive, kill9_pid, on_postgres_backend,
    once_released, wait_dead,
};

const EXE: &str = env!("CARGO_BIN_EXE_task-holder");

/// How many processes race in the race tests.
const RACERS: usize = 40;

fn site() -> (Scratch, Holder) {
    let scratch = Scratch::new();
    let holder = Holder::new(EXE, scratch.state());
    (scratch, holder)
}

fn started(line: &str) -> (String, u32) {
    match Report::parse(line) {
        Report::Started { id, pid, .. } => (id, pid),
        other => panic!("expected `started`, got {other:?}"),
    }
}

fn child_pid(line: &str) -> u32 {
    line.strip_prefix("child ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("expected `child <pid>`, got {line:?}"))
}

/// Starts `name` once more from a new process that does not wait, and
/// returns what happened.
fn try_start(h: &Holder, name: &str) -> Report {
    let out = h.run(&["run", name]);
    let report = out.report();
    match &report {
        Report::Started { .. } => assert!(out.success(), "{out}"),
        Report::Refused { code, .. } => {
            assert_eq!(*code, REFUSED, "{out}");
            assert_eq!(out.code(), Some(REFUSED), "{out}");
        }
        other => panic!("neither started nor refused: {other:?}; {out}"),
    }
    report
}

fn assert_refused_as_running(report: &Report, name: &str) {
    match report {
        Report::Refused { code, message } => {
            assert_eq!(*code, REFUSED);
            assert!(
                message.contains(&format!("`{name}` is already running")),
                "the refusal does not say `{name}` is already running: {message}"
            );
        }
        other => panic!("`{name}` should have been refused as already running: {other:?}"),
    }
}

#[test]
fn a_killed_holder_stops_counting_at_once_and_reap_removes_only_its_leftover() {
    let (scratch, h) = site();
    let (mut victim, dead) = h.hold(&["job"]);
    let (_survivor, live) = h.hold(&["other-job"]);
    assert_eq!(
        h.live_ids().into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([dead.clone(), live.clone()])
    );
    // On PostgreSQL a task is a row and a lock, not a file: the checks of
    // its file are the file backend's.
    let files = !on_postgres_backend();
    let leftover = scratch.state().join("tasks").join(format!("{dead}.task"));
    assert!(!files || leftover.exists(), "a live task has its file");

    victim.kill9();

    // The very next listing, by another process, no longer counts it (on
    // PostgreSQL, once the server has read the closed connection).
    once_released(on_postgres_backend(), "the killed task gone", || {
        (h.live_ids() == [live.clone()]).then_some(())
    });
    // Its single instance is free at once: a start that does not wait gets in.
    assert!(matches!(try_start(&h, "job"), Report::Started { .. }));
    // Its file is a leftover nobody counts, until a reap removes it.
    assert!(
        !files || leftover.exists(),
        "kill -9 leaves the task file behind"
    );
    assert_eq!(h.live_ids(), vec![live.clone()]);

    let out = h.run(&["reap"]);
    assert!(out.success(), "{out}");
    let reaped: usize = out.stdout[0]
        .strip_prefix("reaped ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(reaped >= 1, "reap removed nothing: {out}");
    assert!(!leftover.exists(), "reap left the dead task's file");
    // Reaping never touches a live task.
    assert_eq!(h.live_ids(), vec![live.clone()]);
    assert!(
        !files
            || scratch
                .state()
                .join("tasks")
                .join(format!("{live}.task"))
                .exists()
    );
}

#[test]
fn a_child_holding_the_inherited_locks_keeps_task_and_instance_live_after_its_parent_is_killed() {
    let (_scratch, h) = site();
    let mut parent = h.spawn(&["spawn-child", "job", "--then", "hold"]);
    let (id, parent_pid) = started(&parent.line());
    let child = child_pid(&parent.line());
    assert_eq!(h.live_ids(), vec![id.clone()]);

    parent.kill9();
    assert!(is_alive(child), "the child should outlive its parent");

    // The child alone keeps the task live and its instance taken.
    assert_eq!(h.live_ids(), vec![id.clone()]);
    let refused = try_start(&h, "job");
    assert_refused_as_running(&refused, "job");
    if let Report::Refused { message, .. } = &refused {
        assert!(
            message.contains(&format!("pid {parent_pid}")),
            "the refusal should name the task's process: {message}"
        );
    }

    kill9_pid(child);

    // Its last process dead, the task stops counting and frees the name.
    once_released(on_postgres_backend(), "the dead task unlisted", || {
        h.live_ids().is_empty().then_some(())
    });
    assert!(matches!(try_start(&h, "job"), Report::Started { .. }));
}

#[test]
fn a_child_keeps_the_task_live_after_its_parent_exits_normally() {
    let (_scratch, h) = site();
    let mut parent = h.spawn(&["spawn-child", "job", "--then", "exit"]);
    let (id, _) = started(&parent.line());
    let child = child_pid(&parent.line());
    // The parent returns and drops its guard; its stdin stays open, since
    // the child shares it.
    let status = parent.wait_exit();
    assert!(status.success(), "the parent failed: {status}");
    assert!(is_alive(child));

    assert_eq!(h.live_ids(), vec![id.clone()]);
    assert_refused_as_running(&try_start(&h, "job"), "job");

    kill9_pid(child);
    once_released(on_postgres_backend(), "the dead task unlisted", || {
        h.live_ids().is_empty().then_some(())
    });
    assert!(matches!(try_start(&h, "job"), Report::Started { .. }));
}

#[test]
fn a_task_dropped_after_handing_its_locks_to_a_running_child_stays_live_until_the_child_ends() {
    let (scratch, h) = site();
    let mut parent = h.spawn(&["spawn-child", "job", "--then", "drop"]);
    let (id, _) = started(&parent.line());
    let child = child_pid(&parent.line());
    assert_eq!(parent.line(), "dropped");
    assert!(parent.is_running());

    // Dropping only closed the parent's descriptors: no unlock, no removal.
    assert_eq!(h.live_ids(), vec![id.clone()]);
    assert_refused_as_running(&try_start(&h, "job"), "job");
    assert!(
        on_postgres_backend()
            || scratch
                .state()
                .join("tasks")
                .join(format!("{id}.task"))
                .exists()
    );

    kill9_pid(child);

    // The process that started it still runs, yet the task is over.
    assert!(parent.is_running());
    once_released(
        on_postgres_backend(),
        "the task over with its child",
        || h.live_ids().is_empty().then_some(()),
    );
    assert!(matches!(try_start(&h, "job"), Report::Started { .. }));
    let out = parent.finish();
    assert!(out.success(), "{out}");
}

/// Spawns `RACERS` processes `hold NAME EXTRA…` that all start at one
/// barrier, and returns them with what each reported.
fn race(scratch: &Scratch, h: &Holder, name: &str, extra: &[&str]) -> Vec<(Proc, Report)> {
    let mut barrier = Barrier::new(scratch.path());
    let fifo = barrier.path().to_str().expect("a UTF-8 path").to_owned();
    let mut args = vec!["hold", name, "--barrier", &fifo];
    args.extend_from_slice(extra);
    let mut procs: Vec<Proc> = (0..RACERS).map(|_| h.spawn(&args)).collect();
    for p in &mut procs {
        assert_eq!(p.line(), "ready");
    }
    barrier.release();
    procs
        .into_iter()
        .map(|mut p| {
            let line = p.line();
            (p, Report::parse(&line))
        })
        .collect()
}

#[test]
fn dozens_of_processes_starting_one_single_instance_command_at_once_let_exactly_one_run() {
    let (scratch, h) = site();
    for round in 0..4 {
        let results = race(&scratch, &h, "race", &["--lock-timeout-ms", "0"]);
        let (winners, losers): (Vec<_>, Vec<_>) = results
            .into_iter()
            .partition(|(_, r)| matches!(r, Report::Started { .. }));
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {} of {RACERS} ran at once",
            winners.len()
        );
        let (mut winner, report) = winners.into_iter().next().expect("one winner");
        let Report::Started { id, pid, .. } = report else {
            unreachable!()
        };
        assert_eq!(pid, winner.pid());
        for (loser, report) in losers {
            assert_refused_as_running(&report, "race");
            let out = loser.finish();
            assert_eq!(out.code(), Some(REFUSED), "round {round}: {out}");
        }
        let live: Vec<_> = h.list().into_iter().filter(|t| t.name == "race").collect();
        assert_eq!(live.len(), 1, "round {round}: {live:?}");
        assert_eq!((live[0].id.as_str(), live[0].pid), (id.as_str(), pid));
        winner.close_stdin();
        assert!(winner.finish().success());
        assert!(h.list().iter().all(|t| t.name != "race"));
    }
}

#[test]
fn every_racer_refused_by_a_single_instance_names_the_one_that_runs() {
    let (scratch, h) = site();
    for round in 0..4 {
        let results = race(&scratch, &h, "race", &["--lock-timeout-ms", "0"]);
        let winner_pid = results
            .iter()
            .find_map(|(_, r)| match r {
                Report::Started { pid, .. } => Some(*pid),
                _ => None,
            })
            .expect("one winner");
        let anonymous: Vec<String> = results
            .iter()
            .filter_map(|(_, r)| match r {
                Report::Refused { message, .. }
                    if !message.contains(&format!("pid {winner_pid}")) =>
                {
                    Some(message.clone())
                }
                _ => None,
            })
            .collect();
        assert!(
            anonymous.is_empty(),
            "round {round}: {} of {} refusals do not name the holder (pid {winner_pid}), e.g. {:?}",
            anonymous.len(),
            RACERS - 1,
            anonymous[0]
        );
    }
}

#[test]
fn dozens_of_processes_starting_one_concurrent_command_at_once_all_run() {
    let (scratch, h) = site();
    for round in 0..2 {
        let results = race(&scratch, &h, "fanout", &["--concurrent"]);
        let mut ids = BTreeSet::new();
        let mut procs = Vec::new();
        for (p, report) in results {
            match report {
                Report::Started { id, pid, .. } => {
                    assert_eq!(pid, p.pid());
                    ids.insert(id);
                }
                other => panic!("round {round}: a concurrent start failed: {other:?}"),
            }
            procs.push(p);
        }
        assert_eq!(ids.len(), RACERS, "round {round}: task ids must be unique");
        let listed: BTreeSet<String> = h
            .list()
            .into_iter()
            .filter(|t| t.name == "fanout")
            .map(|t| t.id)
            .collect();
        assert_eq!(listed, ids, "round {round}");
        for p in procs {
            assert!(p.finish().success());
        }
        assert!(
            h.list().is_empty(),
            "round {round}: ended tasks still listed"
        );
    }
}

/// Probers list and join the killed holder's task over and over while
/// `contender` takes its name: no round begun after the holder's death may
/// report it live, and the contender must get in.
fn probers_never_see_the_dead_task_while(contender_args: &[&str]) {
    let (scratch, h) = site();
    let (mut holder, dead) = h.hold(&["contested"]);
    let flag = scratch.path().join("dead");
    let flag_arg = flag.to_str().expect("a UTF-8 path");

    let mut args = vec!["hold", "contested", "--announce"];
    args.extend_from_slice(contender_args);
    let mut contender = h.spawn(&args);
    assert_eq!(contender.line(), "starting");

    let mut probers: Vec<Proc> = (0..3)
        .map(|_| {
            h.spawn(&[
                "probe-loop",
                "--dead-id",
                &dead,
                "--flag",
                flag_arg,
                "--after",
                "1500",
            ])
        })
        .collect();
    for p in &mut probers {
        assert_eq!(p.line(), "probing");
    }

    holder.kill9();
    if on_postgres_backend() {
        // The server ends the dead holder's session, and so its lock, when
        // it reads the EOF of its socket: a moment after the death, not at
        // it, as the kernel drops a flock. From the first listing that no
        // longer shows it, no later round may show it again.
        manage_tests::poll_until("the server to drop the dead holder's lock", || {
            (!h.live_ids().contains(&dead)).then_some(())
        });
    }
    std::fs::write(&flag, b"").expect("raise the flag");

    let (winner, _) = started(&contender.line());
    assert_ne!(winner, dead);
    for p in probers {
        let out = p.finish();
        assert!(out.success(), "a prober saw the dead task live: {out}");
        let counts: Vec<u64> = out.stdout[0]
            .strip_prefix("ok ")
            .unwrap_or_else(|| panic!("{out}"))
            .split(' ')
            .map(|n| n.parse().expect("a count"))
            .collect();
        assert!(
            counts[0] > counts[1],
            "the prober should have probed before and after the death: {out}"
        );
    }
    assert_eq!(h.live_ids(), vec![winner]);
    assert!(contender.finish().success());
}

#[test]
fn probers_never_see_a_killed_task_live_while_a_waiter_takes_its_single_instance() {
    probers_never_see_the_dead_task_while(&["--lock-timeout-ms", "600000"]);
}

#[test]
fn probers_never_see_a_killed_task_live_while_a_process_keeps_retrying_to_start_it() {
    probers_never_see_the_dead_task_while(&["--lock-timeout-ms", "0", "--retry"]);
}

#[test]
fn a_waiter_is_admitted_only_when_the_last_process_of_the_task_dies() {
    // The waiter blocks on the instance lock while the holder lives, and is
    // admitted only once the holder's last process is dead.
    let (_scratch, h) = site();
    let mut parent = h.spawn(&["spawn-child", "job", "--then", "hold"]);
    let (first, _) = started(&parent.line());
    let child = child_pid(&parent.line());
    let mut waiter = h.spawn(&["hold", "job", "--lock-timeout-ms", "600000", "--announce"]);
    assert_eq!(waiter.line(), "starting");

    parent.kill9();
    // The child still holds the instance: the waiter must still be waiting.
    assert_eq!(h.live_ids(), vec![first.clone()]);
    assert_refused_as_running(&try_start(&h, "job"), "job");
    assert_eq!(waiter.try_line(), None, "the waiter got in too early");

    kill9_pid(child);
    let (second, pid) = started(&waiter.line());
    assert_eq!(pid, waiter.pid());
    assert_ne!(first, second);
    assert_eq!(h.live_ids(), vec![second]);
    wait_dead(child);
    assert!(waiter.finish().success());
}
