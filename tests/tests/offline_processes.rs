//! The offline state machine against real processes: racing commands and
//! web layers (I1, I2; and for the read-only tier, real layers' writes in
//! flight), killed operators (I5), cancelling, joining,
//! interrupting and timing out a wait from other processes, and a process
//! whose wall clock is stepped (an `LD_PRELOAD` shim), which must neither
//! expire nor remove anyone's sessions.
//!
//! With `MANAGE_TEST_BACKEND=postgres` every test runs on a site of its own
//! on the PostgreSQL test server: the actors are given it
//! (`--database-url`, `--site`), and the test opens the same.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use maintenance_core::backend::{Backend, ModeChange};
use maintenance_core::session::SessionKey;
use maintenance_core::transition::{self as offline, Activation, Outcome};
use maintenance_core::{Mode, Timestamp};
use manage_tests::HelperState;

const ACTOR: &str = env!("CARGO_BIN_EXE_race-actor");

fn open(state: &HelperState) -> Arc<dyn Backend> {
    state.backend()
}

/// A fresh state (a directory, or a site on PostgreSQL), made, and a
/// scratch directory for the stop file.
fn state_dir() -> (tempfile::TempDir, HelperState) {
    let tmp = tempfile::tempdir().unwrap();
    let state = HelperState::from_env(tmp.path().join("state"));
    open(&state);
    (tmp, state)
}

/// `race-actor`, given `state`, playing `args`.
fn actor(state: &HelperState, args: &[&str]) -> Child {
    Command::new(ACTOR)
        .args(state.args())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn race-actor")
}

fn first_line(out: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    line.trim().to_owned()
}

/// A running `activate` process, once it has said it is waiting.
fn waiting_activator(
    state: &HelperState,
    timeout_ms: u64,
    message: Option<&str>,
) -> (Child, BufReader<ChildStdout>) {
    let timeout = timeout_ms.to_string();
    let mut args = vec!["activate", &timeout, "20"];
    args.extend(message);
    let mut child = actor(state, &args);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let line = first_line(&mut out);
    assert!(line.starts_with("waiting "), "{line}");
    (child, out)
}

/// A process holding one task, once it has started it.
fn holder(state: &HelperState, name: &str) -> Child {
    let mut child = actor(state, &["hold", name]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let line = first_line(&mut out);
    assert!(line.starts_with("started "), "{line}");
    child
}

fn kill(child: &mut Child, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
}

/// After a waiter's SIGKILL: on the file backend its lock went with the
/// process (the kernel closes its descriptors before its parent can reap
/// it); on PostgreSQL the server frees its key when it sees the connection
/// end, a moment after the death (backend/postgres/modes.rs), so this waits
/// for that, within the hang guard, before the test looks.
fn after_waiter_killed(state: &HelperState, b: &dyn Backend) {
    if state.postgres_site().is_some() {
        manage_tests::poll_until("the killed waiter's connection ended on the server", || {
            (b.mode().unwrap().mode != Mode::Pending).then_some(())
        });
    }
}

fn rest(out: BufReader<ChildStdout>) -> Vec<String> {
    out.lines().map(|l| l.unwrap()).collect()
}

fn micros(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

/// The racing processes: stopped and reaped whatever happens to the test.
struct Racers {
    stop: PathBuf,
    children: Vec<Child>,
}

impl Drop for Racers {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.stop, "");
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn i1_and_i2_hold_while_dozens_of_processes_race_an_activation_200_times() {
    let (tmp, state) = state_dir();
    let stop = tmp.path().join("stop");
    let settle = Duration::from_millis(50);
    let st = stop.to_str().unwrap();
    let mut racers = Racers {
        stop: stop.clone(),
        children: Vec::new(),
    };
    racers
        .children
        .extend((0..16).map(|_| actor(&state, &["task-actor", st])));
    racers
        .children
        .extend((0..8).map(|_| actor(&state, &["session-actor", st, "50"])));

    let b = open(&state);
    let mut rounds = Vec::new();
    let mut offline_rounds = 0;
    let mut held_off = 0;
    for round in 0..200u64 {
        std::thread::sleep(Duration::from_millis(round * 7 % 20));
        let activation = Activation {
            change: ModeChange::by_this_process(),
            timeout: Duration::from_secs(20),
            grace: None,
            settle,
        };
        let mut pending_since = None;
        let out = offline::activate(b.as_ref(), &activation, &|| false, &mut |p| {
            pending_since.get_or_insert(p.record.since);
            if p.holding.active() > 0 {
                held_off += 1;
            }
        })
        .unwrap();
        if let Outcome::Offline { .. } = out {
            offline_rounds += 1;
            let live = b.tasks().unwrap();
            let bad: Vec<_> = live.iter().filter(|t| t.holds_off_offline()).collect();
            assert!(
                bad.is_empty(),
                "round {round}: I1 violated, live while OFFLINE: {bad:?}"
            );
        }
        let online = b.go_online(&ModeChange::by_this_process()).unwrap();
        let since = pending_since.expect("progress reported at least once: the settle time");
        rounds.push((
            micros(since.system_time()),
            micros(online.since.system_time()),
        ));
    }
    std::fs::write(&stop, "").unwrap();

    let mut violations = Vec::new();
    let mut admitted = 0;
    let mut sessions = 0u64;
    for child in std::mem::take(&mut racers.children) {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "an actor failed: {:?}", out.status);
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let words: Vec<&str> = line.split(' ').collect();
            match words[0] {
                "online" => {
                    admitted += 1;
                    let before: u128 = words[1].parse().unwrap();
                    let after: u128 = words[2].parse().unwrap();
                    // Admitted as ONLINE although it asked after PENDING had
                    // begun and was answered before ONLINE came back: I2.
                    for (since, online) in &rounds {
                        if before > since + 1000 && after < *online {
                            violations.push(format!(
                                "I2: task asked at {before}µs, PENDING since {since}µs"
                            ));
                        }
                    }
                }
                "sessions" => sessions += words[1].parse::<u64>().unwrap(),
                _ => violations.push(line.to_owned()),
            }
        }
    }
    eprintln!(
        "200 rounds: {offline_rounds} went offline, {held_off} looks found something live, \
         {admitted} tasks admitted ONLINE, {sessions} sessions let in"
    );
    assert!(
        violations.is_empty(),
        "{} violations: {:?}",
        violations.len(),
        &violations[..violations.len().min(10)]
    );
    assert_eq!(
        offline_rounds, 200,
        "every round went offline once the racers drained"
    );
    assert!(admitted > 200 && sessions > 200, "the racers really raced");
    assert!(held_off > 0, "some activations really waited for racers");
}

/// The race of I1 and I2 for the read-only tier: while commands that may
/// write start as fast as they can and real `MaintenanceLayer`s (in
/// processes of their own) send writes through — some long enough to be in
/// flight across the drain — the site goes READONLY and back again and
/// again. No task that may write is admitted after READONLY_PENDING began,
/// none started ONLINE is live once READONLY is recorded, and for every
/// write a layer let in, by the layer's own stamps
/// ([`WriteAdmission`](maintenance_core::middleware::WriteAdmission),
/// not the handler's start, which a descheduled thread may delay): none
/// was admitted on a snapshot read begun after the drain's waiter knew
/// READONLY_PENDING committed (`Progress::settle_from`, whence the drain
/// counts its settle time), none was admitted after the settle time, and
/// none is in flight when READONLY is recorded. Every violation is
/// printed. The settle time is ten refresh intervals of the layers, not
/// the two `offline on` uses: a layer's thread on a loaded machine may be
/// late to publish its writes in flight, and this test is about the
/// protocol, not the scheduler.
#[test]
fn i1_and_i2_hold_for_the_read_only_tier_while_commands_and_layers_race_it() {
    let (tmp, state) = state_dir();
    let stop = tmp.path().join("stop");
    let refresh_ms = 20;
    let settle = Duration::from_millis(refresh_ms * 10);
    let st = stop.to_str().unwrap();
    let refresh = refresh_ms.to_string();
    let mut racers = Racers {
        stop: stop.clone(),
        children: Vec::new(),
    };
    racers
        .children
        .extend((0..6).map(|_| actor(&state, &["task-actor", st])));
    racers
        .children
        .extend((0..3).map(|_| actor(&state, &["layer-actor", st, &refresh])));

    let b = open(&state);
    // Wait until the layers let writes through, so the rounds race them.
    let mut rounds = Vec::new();
    let mut waited_for_writes = 0;
    for round in 0..25u64 {
        std::thread::sleep(Duration::from_millis(20 + round * 7 % 30));
        let activation = Activation {
            change: ModeChange::by_this_process(),
            timeout: Duration::from_secs(60),
            grace: None,
            settle,
        };
        let mut pending_since = None;
        let mut settle_from = None;
        let out = offline::activate_read_only(b.as_ref(), &activation, &|| false, &mut |p| {
            pending_since.get_or_insert(p.record.since);
            settle_from.get_or_insert(p.settle_from);
            if !p.holding.writes.is_empty() {
                waited_for_writes += 1;
            }
        })
        .unwrap();
        let Outcome::ReadOnly { record, .. } = out else {
            panic!("round {round}: READONLY, got {out:?}");
        };
        let bad: Vec<_> = b
            .tasks()
            .unwrap()
            .into_iter()
            .filter(|t| t.holds_off_read_only())
            .collect();
        assert!(
            bad.is_empty(),
            "round {round}: I1 violated, live while READONLY: {bad:?}"
        );
        let online = b.go_online(&ModeChange::by_this_process()).unwrap();
        let since = pending_since.expect("progress reported at least once: the settle time");
        rounds.push((
            micros(since.system_time()),
            micros(record.since.system_time()),
            micros(online.since.system_time()),
            micros(settle_from.unwrap()),
        ));
    }
    std::fs::write(&stop, "").unwrap();

    let settle_us = settle.as_micros();
    let mut violations = Vec::new();
    let (mut admitted, mut writes, mut refused) = (0, 0, 0u64);
    for child in std::mem::take(&mut racers.children) {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "an actor failed: {:?}", out.status);
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let words: Vec<&str> = line.split(' ').collect();
            let at = |i: usize| words[i].parse::<u128>().unwrap();
            match words[0] {
                "online" => {
                    admitted += 1;
                    let (before, after) = (at(1), at(2));
                    for (since, _, online, _) in &rounds {
                        if before > since + 1000 && after < *online {
                            violations.push(format!(
                                "I2: a task that may write asked at {before}µs, READONLY_PENDING since {since}µs"
                            ));
                        }
                    }
                }
                "write" => {
                    writes += 1;
                    let (entered, finished, admitted, read) = (at(2), at(3), at(4), at(5));
                    if admitted == 0 {
                        violations.push(format!("a write let in without its admission: {line}"));
                    }
                    for (since, read_only, online, settle_from) in &rounds {
                        let what = || {
                            format!(
                                "snapshot read at {read}µs, admitted at {admitted}µs, handler \
                                 began at {entered}µs; READONLY_PENDING since {since}µs (the \
                                 server's), known committed at {settle_from}µs"
                            )
                        };
                        // Admitted ONLINE (this round's ONLINE came back
                        // later) on a snapshot read begun after the drain's
                        // record was committed, which that read would see.
                        if read > *settle_from && admitted < *online {
                            violations.push(format!(
                                "I2: a write admitted on a snapshot read after READONLY_PENDING \
                                 was committed: {}",
                                what()
                            ));
                        }
                        // Admitted after the settle time, which the drain
                        // counts from the same instant.
                        if admitted > settle_from + settle_us && admitted < *online {
                            violations.push(format!(
                                "I2: a write admitted after the settle time: {}",
                                what()
                            ));
                        }
                        // READONLY's time is stored to the millisecond
                        // (truncated), and the handler's end is stamped
                        // before the layer counts the write done: compare
                        // at the record's precision, or a write that ended
                        // in the record's own millisecond, before it was
                        // written, reads as overlapping it.
                        if entered < *read_only && finished / 1000 * 1000 > *read_only {
                            violations.push(format!(
                                "I2: a write in flight ({entered}µs to {finished}µs) when READONLY \
                                 was recorded at {read_only}µs"
                            ));
                        }
                    }
                }
                "refused" => refused += words[1].parse::<u64>().unwrap(),
                _ => violations.push(line.to_owned()),
            }
        }
    }
    eprintln!(
        "25 rounds: {admitted} tasks admitted ONLINE, {writes} writes let in, {refused} refused, \
         {waited_for_writes} looks waited for writes in flight"
    );
    assert!(
        violations.is_empty(),
        "{} violations:\n{}",
        violations.len(),
        violations.join("\n")
    );
    assert!(
        admitted > 25 && writes > 25 && refused > 0,
        "the racers really raced"
    );
    assert!(
        waited_for_writes > 0,
        "some drains really waited for writes in flight"
    );
}

#[test]
fn a_killed_activator_never_leaves_the_site_pending() {
    let (_tmp, state) = state_dir();
    let b = open(&state);
    // How long an activator takes to go OFFLINE when nothing holds it off
    // (its start-up on PostgreSQL, connecting, is longer than on files):
    // the kills below are spread over twice that, at least 40 ms, so they
    // land anywhere from start-up to past OFFLINE on either backend.
    let started = Instant::now();
    let calibration = actor(&state, &["activate", "5000", "20"]);
    assert!(calibration.wait_with_output().unwrap().status.success());
    let spread = (started.elapsed().as_micros() as u64 * 2).max(40_000);
    b.go_online(&ModeChange::by_this_process()).unwrap();
    let mut seen_lapse = 0;
    for i in 0..40u64 {
        // Half the time something holds the site off, so the kill lands in
        // the wait; otherwise it lands anywhere up to and past OFFLINE.
        // Every other time something holds it off, the kill waits until
        // the activator says it waits: some kills surely land in the wait.
        let mut task = (i % 2 == 0).then(|| holder(&state, "job"));
        let mut child = actor(&state, &["activate", "5000", "20"]);
        let mut _out = None;
        if i % 4 == 0 {
            let mut out = BufReader::new(child.stdout.take().unwrap());
            let line = first_line(&mut out);
            assert!(line.starts_with("waiting "), "{line}");
            _out = Some(out);
        }
        std::thread::sleep(Duration::from_micros(i * 997 % spread));
        kill(&mut child, rustix::process::Signal::KILL);
        child.wait().unwrap();
        after_waiter_killed(&state, b.as_ref());

        let view = b.mode().expect("mode.json always parses");
        assert_ne!(
            view.mode,
            Mode::Pending,
            "iteration {i}: PENDING outlived its waiter"
        );
        if view.record.mode == Mode::Pending {
            let lapse = view.lapsed.as_ref().expect("a lapsed PENDING says so");
            assert!(lapse.reason.contains("lapsed"));
            seen_lapse += 1;
        }
        // The next writer puts the marker in agreement with the record.
        let online = b.go_online(&ModeChange::by_this_process()).unwrap();
        let view = b.mode().unwrap();
        assert_eq!(view.mode, Mode::Online);
        assert!(view.stray_marker.is_none(), "{:?}", view.stray_marker);
        // The file backend's marker for nginx (none on PostgreSQL).
        assert!(!state.dir().join("OFFLINE").exists());
        assert_eq!(view.record, online);
        if let Some(t) = task.as_mut() {
            t.kill().unwrap();
            t.wait().unwrap();
        }
    }
    eprintln!("{seen_lapse} of 40 kills left a lapsed PENDING behind");
    assert!(seen_lapse > 0, "some kills landed in the wait");
}

#[test]
fn a_second_waiter_keeps_the_site_pending_when_the_first_times_out_or_dies() {
    let (_tmp, state) = state_dir();
    let b = open(&state);
    let mut task = holder(&state, "job");
    let (first, _out1) = waiting_activator(&state, 300, None);
    let (mut second, _out2) = waiting_activator(&state, 60_000, None);
    let status = first.wait_with_output().unwrap().status;
    assert_eq!(status.code(), Some(124), "the first timed out");
    assert_eq!(
        b.mode().unwrap().mode,
        Mode::Pending,
        "the second still waits"
    );

    let (mut third, _out3) = waiting_activator(&state, 60_000, None);
    kill(&mut second, rustix::process::Signal::KILL);
    second.wait().unwrap();
    assert_eq!(
        b.mode().unwrap().mode,
        Mode::Pending,
        "the third still waits"
    );
    kill(&mut third, rustix::process::Signal::KILL);
    third.wait().unwrap();
    after_waiter_killed(&state, b.as_ref());
    let view = b.mode().unwrap();
    assert_eq!(view.mode, Mode::Online, "no waiter left: ONLINE at once");
    assert!(view.lapsed.is_some());
    task.kill().unwrap();
    task.wait().unwrap();
}

#[test]
fn deactivate_from_another_process_cancels_the_wait() {
    let (_tmp, state) = state_dir();
    let mut task = holder(&state, "job");
    let (child, out) = waiting_activator(&state, 60_000, None);
    let b = open(&state);
    let mut ops = ModeChange::by_this_process();
    ops.by = "ops@bastion".into();
    offline::deactivate(b.as_ref(), &ops, false).unwrap();
    let status = child.wait_with_output().unwrap().status;
    assert_eq!(rest(out), ["cancelled by ops@bastion"]);
    assert_eq!(status.code(), Some(75));
    assert_eq!(b.mode().unwrap().mode, Mode::Online);
    task.kill().unwrap();
    task.wait().unwrap();
}

#[test]
fn a_second_activation_joins_and_both_return_offline() {
    let (_tmp, state) = state_dir();
    let mut task = holder(&state, "job");
    let (first, out1) = waiting_activator(&state, 60_000, None);
    let (second, out2) = waiting_activator(&state, 60_000, Some("back at 3"));
    let b = open(&state);
    assert_eq!(
        b.mode().unwrap().record.message.as_deref(),
        Some("back at 3")
    );
    kill(&mut task, rustix::process::Signal::KILL);
    task.wait().unwrap();
    assert_eq!(first.wait_with_output().unwrap().status.code(), Some(0));
    assert_eq!(second.wait_with_output().unwrap().status.code(), Some(0));
    assert_eq!(rest(out1), ["offline"]);
    assert_eq!(rest(out2), ["offline joined"]);
    assert_eq!(b.mode().unwrap().mode, Mode::Offline);
}

#[test]
fn sigint_or_sigterm_during_the_wait_goes_back_online() {
    for signal in [rustix::process::Signal::INT, rustix::process::Signal::TERM] {
        let (_tmp, state) = state_dir();
        let mut task = holder(&state, "job");
        let (mut child, out) = waiting_activator(&state, 60_000, None);
        kill(&mut child, signal);
        let status = child.wait().unwrap();
        assert_eq!(rest(out), ["interrupted"], "{signal:?}");
        assert_eq!(status.code(), Some(130));
        let view = open(&state).mode().unwrap();
        assert_eq!(view.mode, Mode::Online);
        assert!(view.lapsed.is_none(), "a clean leave, not a lapse");
        task.kill().unwrap();
        task.wait().unwrap();
    }
}

#[test]
fn the_wait_ends_soon_after_the_last_task_is_killed() {
    let mut reactions = Vec::new();
    for _ in 0..5 {
        let (_tmp, state) = state_dir();
        let mut task = holder(&state, "job");
        let (child, out) = waiting_activator(&state, 60_000, None);
        let killed = Instant::now();
        kill(&mut task, rustix::process::Signal::KILL);
        task.wait().unwrap();
        let status = child.wait_with_output().unwrap().status;
        reactions.push(killed.elapsed());
        assert_eq!(status.code(), Some(0));
        assert_eq!(rest(out), ["offline"]);
        assert_eq!(open(&state).mode().unwrap().mode, Mode::Offline);
    }
    reactions.sort();
    eprintln!(
        "SIGKILL of the last task → activator exited OFFLINE: median {:?} (of {:?})",
        reactions[2], reactions
    );
    let _ = std::io::stderr().flush();
}

/// `last_expires_at` of a `status --json`, in milliseconds since the epoch.
fn last_expiry_ms(status: &serde_json::Value) -> i128 {
    let t: Timestamp = serde_json::from_value(status["sessions"]["last_expires_at"].clone())
        .unwrap_or_else(|e| panic!("no session expiry ({e}): {status:#}"));
    micros(t.system_time()) as i128 / 1000
}

#[test]
fn a_process_whose_wall_clock_is_stepped_neither_expires_nor_removes_anyones_sessions() {
    let test = "a_process_whose_wall_clock_is_stepped_neither_expires_nor_removes_anyones_sessions";
    let site = manage_tests::CliSite::new(env!("CARGO_BIN_EXE_e2e-manage"));
    let Some(shim) = manage_tests::clock_shim(test, site.dir()) else {
        return;
    };
    let shifted = |secs: i64, args: &[&str]| {
        let mut cmd = site.command(args);
        cmd.env("LD_PRELOAD", &shim)
            .env("CLOCK_SHIFT_SECS", secs.to_string());
        manage_tests::Proc::spawn(cmd).finish()
    };
    const USERS: usize = 300;
    let b = site.backend();
    for i in 0..USERS {
        b.touch_session(&SessionKey::of(format!("user-{i}").as_bytes()))
            .unwrap();
    }
    let plain = site.status_json();
    assert_eq!(plain["sessions"]["count"], USERS, "{plain:#}");

    // One process's wall clock 1,000 s ahead (past the 900 s timeout),
    // 1,000 s behind, 100 days ahead: it counts every session, and removes
    // none.
    for secs in [1000, -1000, 100 * 86_400] {
        let out = shifted(secs, &["offline", "status", "--json"]);
        assert_eq!(out.code(), Some(0), "{out}");
        let st: serde_json::Value = serde_json::from_str(&out.stdout.join("\n")).unwrap();
        assert_eq!(
            st["sessions"]["count"], USERS,
            "a status {secs:+} s off: {st:#}"
        );
        // The shim works: times are shown on the stepped process's clock —
        // on the file backend. On PostgreSQL they are the server's, so the
        // stepped process shows what every other does.
        let shift = if site.postgres_site().is_some() {
            0
        } else {
            secs
        };
        let off = last_expiry_ms(&st) - last_expiry_ms(&plain) - i128::from(shift) * 1000;
        assert!(off.abs() < 1000, "shown {off} ms off the shift: {st:#}");
        assert_eq!(
            b.sessions().unwrap().len(),
            USERS,
            "removed after {secs:+} s"
        );
    }

    // A user logs in a second before: `on` waits for everyone, on a
    // stepped clock and on a true one, and times out.
    site.touch_session("just-logged-in");
    for secs in [1000, 0] {
        let out = shifted(secs, &["offline", "on", "--timeout", "1"]);
        assert_eq!(out.code(), Some(124), "`on` {secs:+} s off: {out}");
        assert!(
            out.text().contains(&format!("{} web sessions", USERS + 1)),
            "`on` {secs:+} s off: {out}"
        );
        assert_eq!(site.mode().mode, Mode::Online);
    }
    assert_eq!(b.sessions().unwrap().len(), USERS + 1);
}
