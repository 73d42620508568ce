//! Crash anywhere: each kind of operation — a tracked command's start and
//! end, `offline on`, `off`, `offline run`, a scheduled window, a
//! read-only transition, a web layer touching sessions — run as the real
//! process and killed with SIGKILL after a seeded random delay drawn over
//! its measured duration (from its spawn, or from a state it said it had
//! reached), on a fresh site each time; then every check of
//! `manage_tests::crash::check_after_kill`.
//!
//! `MANAGE_CRASH_ITERATIONS` kills per kind (default 30: 210 a backend),
//! `MANAGE_CRASH_JOBS` of them at once (default 1), `MANAGE_CRASH_SEED`
//! and `MANAGE_CRASH_KILL` to replay a kill (each failure names both);
//! `MANAGE_TEST_BACKEND=postgres` runs it on the PostgreSQL test server.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use maintenance_core::backend::ModeChange;
use manage_tests::crash::{
    CrashRng, Killed, Kind, check_after_kill, crash_jobs, for_each_kill, kill_after, measure,
    measure_by,
};
use manage_tests::{CliSite, Proc};

const MANAGE: &str = env!("CARGO_BIN_EXE_e2e-manage");
const ACTOR: &str = env!("CARGO_BIN_EXE_race-actor");

/// A fresh site; on PostgreSQL its runs allow the server the tests' hang
/// guard to answer (a connection, a request), not the default 5 s: a
/// server starved on a loaded machine is not a state a kill left.
fn site() -> CliSite {
    if manage_tests::on_postgres_backend() {
        CliSite::with_config(MANAGE, "[postgres]\nconnect_timeout = \"60s\"")
    } else {
        CliSite::new(MANAGE)
    }
}

/// What one iteration set up and killed.
struct Round {
    /// The killed process.
    pid: u32,
    /// How long after its spawn, or after the state it said it reached.
    delay: Duration,
    /// What the delay counts from.
    from: &'static str,
    /// Processes holding tasks the test keeps live, and their ids.
    holders: Vec<Proc>,
    live: Vec<String>,
    /// History entries before the killed operation began.
    seen: usize,
    /// Sessions may be live.
    sessions: bool,
}

impl Round {
    fn new(p: &Proc, delay: Duration, from: &'static str) -> Round {
        Round {
            pid: p.pid(),
            delay,
            from,
            holders: Vec::new(),
            live: Vec::new(),
            seen: 0,
            sessions: false,
        }
    }
}

/// Runs `crash_iterations()` rounds of `kind`, `crash_jobs()` at a time,
/// each on a fresh site: `round` sets up, spawns, kills, and says what it
/// did.
fn crash(kind: Kind, round: impl Fn(&CliSite, &mut CrashRng, u64) -> Round + Sync) {
    let t = std::time::Instant::now();
    let tally = for_each_kill(kind, |mut kill, tally| {
        tally.start_lap();
        let site = site();
        tally.lap("site");
        let r = round(&site, &mut kill.rng, kill.i);
        tally.lap("set up and kill");
        let what = format!(
            "{}: killed pid {} {:?} after {}",
            kill.name, r.pid, r.delay, r.from
        );
        let killed = Killed {
            kind,
            pid: r.pid,
            seen: r.seen,
            live: &r.live,
            sessions: r.sessions,
            what,
        };
        check_after_kill(&site, &killed, tally);
        drop(r.holders);
        drop(site);
        tally.lap("teardown");
    });
    tally.report(kind);
    eprintln!(
        "crash {kind:?}: {} kills in {:?}, {} at once",
        tally.kills,
        t.elapsed(),
        crash_jobs()
    );
}

/// A live `sleeper-many` task of `site`'s, and its id.
fn holder(site: &CliSite) -> (Proc, String) {
    site.start(&["sleeper-many", "--secs", "600"])
}

/// Reads `p`'s first line: the state it has reached.
fn reached(p: &mut Proc, what: &str) {
    let line = p.line();
    assert!(!line.is_empty(), "{what}: an empty first line");
}

#[test]
fn a_task_killed_anywhere_in_its_start_or_end_never_counts_or_blocks() {
    let args = ["sleeper-many", "--secs", "0"];
    let spread = measure(site, |_| {}, &args) * 5 / 4;
    crash(Kind::Task, |site, rng, i| {
        let mut p = site.spawn(&args);
        if i % 3 == 0 {
            // Once it has said `started`, the kill lands in its end.
            let line = p.line();
            assert!(line.starts_with("started "), "{line}");
            let delay = rng.delay(spread / 4);
            kill_after(&mut p, delay);
            Round::new(&p, delay, "its start")
        } else {
            let delay = rng.delay(spread);
            kill_after(&mut p, delay);
            Round::new(&p, delay, "its spawn")
        }
    });
}

#[test]
fn offline_on_killed_anywhere_leaves_online_or_offline_and_its_drain_recorded() {
    let args = ["offline", "on", "--timeout", "60"];
    let spread = measure(site, |_| {}, &args) * 5 / 4;
    crash(Kind::Activate, |site, rng, i| {
        match i % 3 {
            // Nothing holds it: the kill lands anywhere up to and past
            // OFFLINE.
            0 => {
                let mut p = site.spawn(&args);
                let delay = rng.delay(spread);
                kill_after(&mut p, delay);
                Round::new(&p, delay, "its spawn")
            }
            // A task holds it: the kill lands in the wait (I1: never
            // OFFLINE).
            1 => {
                let (h, id) = holder(site);
                let mut p = site.spawn(&args);
                reached(&mut p, "on waiting");
                let delay = rng.delay(spread);
                kill_after(&mut p, delay);
                let mut r = Round::new(&p, delay, "its first progress line");
                r.holders.push(h);
                r.live.push(id);
                r
            }
            // The task ends (killed) as the wait goes on: the kill lands
            // around the final look and the OFFLINE write.
            _ => {
                let (mut h, _) = holder(site);
                let mut p = site.spawn(&args);
                reached(&mut p, "on waiting");
                h.kill9();
                let delay = rng.delay(spread);
                kill_after(&mut p, delay);
                Round::new(&p, delay, "the holding task's kill")
            }
        }
    });
}

#[test]
fn offline_off_killed_anywhere_leaves_online_or_offline() {
    let args = ["offline", "off"];
    let force = |site: &CliSite| {
        site.helper_state()
            .backend()
            .force_offline(&ModeChange::by_this_process())
            .unwrap();
    };
    let spread = measure(site, force, &args) * 5 / 4;
    crash(Kind::Deactivate, |site, rng, _| {
        force(site);
        let seen = site.history(1000).len();
        let mut p = site.spawn(&args);
        let delay = rng.delay(spread);
        kill_after(&mut p, delay);
        let mut r = Round::new(&p, delay, "its spawn");
        r.seen = seen;
        r
    });
}

#[test]
fn offline_run_killed_anywhere_leaves_its_window_abandoned_or_nothing() {
    let plain = [
        "offline",
        "run",
        "--timeout",
        "60",
        "--",
        "sleeper-many",
        "--secs",
        "0",
    ];
    let read_only = [
        "offline",
        "run",
        "--read-only",
        "--timeout",
        "60",
        "--",
        "sleeper-many",
        "--secs",
        "0",
    ];
    let spread = measure(site, |_| {}, &plain) * 5 / 4;
    crash(Kind::Run, |site, rng, i| {
        let mut seen = 0;
        let args: &[&str] = match i % 3 {
            0 => &plain,
            1 => &read_only,
            // From READONLY: OFFLINE for the command, then READONLY again.
            _ => {
                site.helper_state()
                    .backend()
                    .go_read_only(&ModeChange::by_this_process())
                    .unwrap();
                seen = site.history(1000).len();
                &plain
            }
        };
        let mut p = site.spawn(args);
        let delay = rng.delay(spread);
        kill_after(&mut p, delay);
        let mut r = Round::new(&p, delay, "its spawn");
        r.seen = seen;
        r
    });
}

#[test]
fn a_scheduled_window_killed_anywhere_lapses_or_goes_on_as_recorded() {
    let at = |read_only: bool| {
        let mut args = vec!["offline", "on", "--at", "+0.2", "--timeout", "60"];
        if read_only {
            args.push("--read-only");
        }
        args
    };
    let spread = measure(site, |_| {}, &at(false)) * 5 / 4;
    crash(Kind::Schedule, |site, rng, i| {
        let args = at(i % 2 == 1);
        let mut p = site.spawn(&args);
        if i % 4 < 2 {
            // Once it has said the window is scheduled.
            reached(&mut p, "the window scheduled");
            let delay = rng.delay(spread);
            kill_after(&mut p, delay);
            Round::new(&p, delay, "its `scheduled` line")
        } else {
            let delay = rng.delay(spread);
            kill_after(&mut p, delay);
            Round::new(&p, delay, "its spawn")
        }
    });
}

#[test]
fn a_read_only_transition_killed_anywhere_lapses_to_where_it_came_from() {
    let args = ["offline", "on", "--read-only", "--timeout", "60"];
    let spread = measure(site, |_| {}, &args) * 5 / 4;
    crash(Kind::ReadOnly, |site, rng, i| {
        match i % 3 {
            0 => {
                let mut p = site.spawn(&args);
                let delay = rng.delay(spread);
                kill_after(&mut p, delay);
                Round::new(&p, delay, "its spawn")
            }
            // From READONLY, `offline on` goes on to OFFLINE; killed, its
            // PENDING lapses back to READONLY.
            1 => {
                site.helper_state()
                    .backend()
                    .go_read_only(&ModeChange::by_this_process())
                    .unwrap();
                let seen = site.history(1000).len();
                let mut p = site.spawn(&["offline", "on", "--timeout", "60"]);
                let delay = rng.delay(spread);
                kill_after(&mut p, delay);
                let mut r = Round::new(&p, delay, "its spawn");
                r.seen = seen;
                r
            }
            // A command that may write holds READONLY off: never READONLY.
            _ => {
                let (h, id) = holder(site);
                let mut p = site.spawn(&args);
                reached(&mut p, "on --read-only waiting");
                let delay = rng.delay(spread);
                kill_after(&mut p, delay);
                let mut r = Round::new(&p, delay, "its first progress line");
                r.holders.push(h);
                r.live.push(id);
                r
            }
        }
    });
}

#[test]
fn a_web_layer_killed_while_touching_sessions_leaves_them_readable() {
    let touch = |site: &CliSite| {
        let mut cmd = Command::new(ACTOR);
        cmd.args(site.helper_state().args())
            .arg("touch-loop")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Proc::spawn(cmd)
    };
    // How long it takes to say it is touching: the kills from its spawn
    // are drawn over that; those after it over a quarter of it.
    let spread = measure_by(|| {
        let site = site();
        let t = std::time::Instant::now();
        let mut p = touch(&site);
        reached(&mut p, "touching");
        t.elapsed()
    }) * 5
        / 4;
    crash(Kind::SessionTouch, |site, rng, i| {
        let mut p = touch(site);
        let mut r = if i % 2 == 0 {
            reached(&mut p, "touching");
            let delay = rng.delay(spread / 4);
            kill_after(&mut p, delay);
            Round::new(&p, delay, "its first touch")
        } else {
            let delay = rng.delay(spread);
            kill_after(&mut p, delay);
            Round::new(&p, delay, "its spawn")
        };
        r.sessions = true;
        r
    });
}

/// Found by the kills of `offline run` from READONLY: a run killed after
/// writing its PENDING and before recording it had that PENDING recorded
/// late as `offline on`'s (cause `on`), because the noticer looked for the
/// run only among live windows, and a run killed while it waited leaves
/// the window free. The late entry is the run's.
#[test]
fn a_run_killed_before_recording_its_pending_has_it_recorded_as_the_runs() {
    let site = site();
    let mut cmd = Command::new(ACTOR);
    cmd.args(site.helper_state().args())
        .args(["run-pending", "migrate"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut p = Proc::spawn(cmd);
    assert_eq!(p.line(), "pending");
    let pid = p.pid();
    p.kill9();
    manage_tests::poll_until("the killed run's PENDING lapsed", || {
        (site.mode().mode == maintenance_core::Mode::Online).then_some(())
    });
    let history = site.history(100);
    let begun: Vec<_> = history
        .iter()
        .filter(|e| e.pid == pid && e.to == maintenance_core::Mode::Pending)
        .collect();
    assert_eq!(begun.len(), 1, "{history:#?}");
    assert_eq!(
        begun[0].cause,
        maintenance_core::history::Cause::Run,
        "{:?}",
        begun[0]
    );
    assert!(
        begun[0]
            .reason
            .starts_with("offline run -- migrate: nobody new gets in"),
        "{:?}",
        begun[0]
    );
}

/// Holds back every append to a site's history until dropped: the
/// history's own lock on files, taken as an append takes it. (On
/// PostgreSQL the entry commits in the mode's transaction, so no instant
/// lies between them: holding the history table would only stall every
/// other test's appends on the server.)
struct HistoryHeld {
    _lock: std::fs::File,
}

impl HistoryHeld {
    fn take(site: &CliSite) -> HistoryHeld {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(site.state().join("history.jsonl"))
            .unwrap();
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).unwrap();
        HistoryHeld { _lock: file }
    }

    /// Waits until a change of `site`, begun from `before`, is held at its
    /// history entry: once its record is written (the append comes after).
    fn wait_blocked(&self, site: &CliSite, before: maintenance_core::Mode) {
        manage_tests::poll_until("the record written", || {
            (site.mode().record.mode != before).then_some(())
        })
    }
}

/// Found by the kills of `offline off`, `on` and `run` (11, 3 and 4 of 150
/// on files): a change killed after writing its mode and before appending
/// its entry stayed unrecorded. The entry is now part of the write's
/// durable step: on PostgreSQL in its transaction (the kill leaves neither
/// or both), on files written first as the intent, which the next reader
/// appends. Here the kill lands in that instant for sure: the history is
/// held until the change is blocked at its entry.
#[test]
fn a_change_killed_between_its_mode_and_its_entry_is_recorded_all_the_same() {
    use maintenance_core::Mode;
    use maintenance_core::history::{Cause, EventKind};
    if manage_tests::file_backend_only(
        "the instant between a mode and its entry (in one transaction on PostgreSQL)",
    ) {
        return;
    }
    let site = site();
    site.backend()
        .force_offline(&ModeChange::by_this_process())
        .unwrap();
    let held = HistoryHeld::take(&site);
    let mut p = site.spawn(&["offline", "off"]);
    let pid = p.pid();
    held.wait_blocked(&site, Mode::Offline);
    p.kill9();
    drop(held);
    let st = site.status_json();
    let mode = site.mode();
    let history = site.history(100);
    let offs: Vec<_> = history
        .iter()
        .filter(|e| e.pid == pid && e.kind == EventKind::Mode)
        .collect();
    assert_eq!(mode.record.pid, pid, "the record comes first: {st}");
    {
        assert_eq!(mode.mode, Mode::Online, "{st}");
        assert_eq!(offs.len(), 1, "the change is recorded once: {history:#?}");
        assert_eq!(
            (offs[0].from, offs[0].to, offs[0].cause),
            (Mode::Offline, Mode::Online, Cause::Off),
            "{:?}",
            offs[0]
        );
        assert!(offs[0].noticed_by.is_some(), "{:?}", offs[0]);
    }
}

/// Found by the kills of `offline on --at` (about 1 in 150): a scheduled
/// window killed after its time came — its PENDING written, the schedule
/// ended as due — and before recording its drain had the drain recorded
/// late as `offline on`'s (cause `on`, no schedule), since the noticer
/// could not know a schedule began it. The drain's entry is drawn up by
/// the schedule's process and written with the PENDING, so it names the
/// window whoever appends it.
#[test]
fn a_scheduled_drain_killed_before_its_entry_is_recorded_as_the_schedules() {
    use maintenance_core::Mode;
    use maintenance_core::history::{Cause, EventKind};
    if manage_tests::file_backend_only(
        "the instant between a drain and its entry (in one transaction on PostgreSQL)",
    ) {
        return;
    }
    let site = site();
    let mut p = site.spawn(&["offline", "on", "--at", "+2", "--timeout", "60"]);
    reached(&mut p, "the window scheduled");
    manage_tests::poll_until("the schedule recorded", || {
        site.history(100)
            .iter()
            .any(|e| e.kind == EventKind::ScheduleSet)
            .then_some(())
    });
    let held = HistoryHeld::take(&site);
    let pid = p.pid();
    held.wait_blocked(&site, Mode::Online);
    p.kill9();
    drop(held);
    manage_tests::poll_until("the killed window's drain lapsed", || {
        let st = site.status_json();
        (st["mode"] == "ONLINE" && st["schedule"].is_null()).then_some(())
    });
    let history = site.history(100);
    let begun: Vec<_> = history
        .iter()
        .filter(|e| e.pid == pid && e.to == Mode::Pending)
        .collect();
    for e in &begun {
        assert_eq!(e.cause, Cause::Scheduled, "{history:#?}");
        assert!(e.schedule.is_some(), "{e:?}");
    }
    assert_eq!(begun.len(), 1, "{history:#?}");
}

/// Found by the kills of `offline run` (about 1 in 30): a run killed once
/// its window's mode was written and before its command started left the
/// site OFFLINE with the window read as free (its record said the command
/// never ran), so neither status nor the history said the run was
/// abandoned. The window's mode written by the run is itself the proof
/// that it entered its window. Here the kill lands in the settle time of
/// `--force`, which a long refresh interval keeps open.
#[test]
fn a_run_killed_between_its_windows_mode_and_its_command_is_abandoned() {
    use maintenance_core::Mode;
    use maintenance_core::history::EventKind;
    let site = site();
    let toml = site.dir().join("manage.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let longer = text.replace("refresh_interval = \"50ms\"", "refresh_interval = \"30s\"");
    assert_ne!(text, longer, "{text}");
    std::fs::write(&toml, longer).unwrap();
    let mut p = site.spawn(&[
        "offline",
        "run",
        "--force",
        "--",
        "sleeper-many",
        "--secs",
        "0",
    ]);
    let pid = p.pid();
    manage_tests::poll_until("the run's window entered", || {
        let m = site.mode();
        (m.mode == Mode::Offline && m.record.pid == pid).then_some(())
    });
    p.kill9();
    let st = manage_tests::poll_until("the run seen abandoned", || {
        let st = site.status_json();
        (st["window"]["state"] == "abandoned").then_some(st)
    });
    assert_eq!(st["mode"], "OFFLINE", "{st}");
    let history = site.history(100);
    let abandoned: Vec<_> = history
        .iter()
        .filter(|e| e.kind == EventKind::RunAbandoned && e.pid == pid)
        .collect();
    assert_eq!(abandoned.len(), 1, "{history:#?}");
    assert!(
        abandoned[0].reason.contains("before its command started"),
        "{:?}",
        abandoned[0]
    );
    let off = site.run(&["offline", "off"]);
    assert!(off.success(), "{off}");
    assert!(site.status_json()["window"].is_null());
}
