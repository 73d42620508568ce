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
