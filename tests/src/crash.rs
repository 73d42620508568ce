//! Crash anywhere: an operation of the real binaries killed with SIGKILL
//! after a seeded random delay drawn over its measured duration, then the
//! checks every kill is followed by — the state parses, I1–I5 hold, no
//! killed task counts, later runs do not trip over anything left behind,
//! and the history holds only what the killed operation could have
//! recorded (tests/tests/crash_anywhere.rs).
//!
//! The seed is `$MANAGE_CRASH_SEED` (else drawn from the clock) and every
//! failure names it and its kill (`$MANAGE_CRASH_KILL` replays that one
//! alone); `$MANAGE_CRASH_ITERATIONS` sets the kills per kind, and
//! `$MANAGE_CRASH_JOBS` how many run at once, each on a site of its own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use maintenance_core::history::{Cause, EventKind, HistoryEntry};
use maintenance_core::{Backend, Mode};

use crate::cli_site::{CliSite, on_postgres_backend};
use crate::process::{Outcome, Proc};
use crate::wait::poll_until;

/// The variable holding the seed of a run to replay.
pub const ENV_CRASH_SEED: &str = "MANAGE_CRASH_SEED";

/// The variable holding how many kills each kind makes (default
/// [`DEFAULT_ITERATIONS`]).
pub const ENV_CRASH_ITERATIONS: &str = "MANAGE_CRASH_ITERATIONS";

/// The variable holding how many kills of a kind run at once, each on a
/// site of its own (default 1).
pub const ENV_CRASH_JOBS: &str = "MANAGE_CRASH_JOBS";

/// The variable naming the one kill to replay (with the run's seed, in
/// `$MANAGE_CRASH_SEED`): its number, as a failure names it.
pub const ENV_CRASH_KILL: &str = "MANAGE_CRASH_KILL";

/// A line of progress every this many kills.
const PROGRESS_EVERY: u64 = 100;

/// The kills per kind of the normal suite: seven kinds, 210 kills per
/// backend.
pub const DEFAULT_ITERATIONS: u64 = 30;

/// A count from the variable `name`, else `default`.
fn count_from_env(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(n) if !n.is_empty() => n
            .parse()
            .unwrap_or_else(|_| panic!("${name}={n:?} is not a count")),
        _ => default,
    }
}

/// How many kills each kind makes: `$MANAGE_CRASH_ITERATIONS`, else
/// [`DEFAULT_ITERATIONS`].
pub fn crash_iterations() -> u64 {
    count_from_env(ENV_CRASH_ITERATIONS, DEFAULT_ITERATIONS)
}

/// How many kills of a kind run at once: `$MANAGE_CRASH_JOBS`, else 1.
pub fn crash_jobs() -> usize {
    count_from_env(ENV_CRASH_JOBS, 1).max(1) as usize
}

/// The seed of a run: `$MANAGE_CRASH_SEED`, else one from the clock.
/// Prints it with `kind`, so a failing run says how to replay it.
pub fn crash_seed(kind: Kind) -> u64 {
    let seed = match std::env::var(ENV_CRASH_SEED) {
        Ok(s) if !s.is_empty() => s
            .parse()
            .unwrap_or_else(|_| panic!("${ENV_CRASH_SEED}={s:?} is not a number")),
        _ => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    };
    eprintln!(
        "crash {kind:?}: seed {seed} (replay with {ENV_CRASH_SEED}={seed}), {} kills, {} at once",
        crash_iterations(),
        crash_jobs()
    );
    seed
}

/// One kill to make: its number, what it draws its delays from, and the
/// words naming it (and how to replay it) in a failure.
#[derive(Debug)]
pub struct Kill {
    /// Its number among the kind's kills (which variant it runs).
    pub i: u64,
    /// Its delays.
    pub rng: CrashRng,
    /// `Run iteration 7 (seed S; replay it alone with …)`.
    pub name: String,
}

/// Makes `$MANAGE_CRASH_ITERATIONS` kills of `kind` (only kill
/// `$MANAGE_CRASH_KILL` when set), `$MANAGE_CRASH_JOBS` at a time, each
/// through `body`, which makes its own site, kills and checks, adding to
/// the tally it is given; returns the sum of the tallies. Kill `i`'s delays
/// follow from the seed and `i` alone, so a failure replays by itself
/// whatever ran beside it. The first failure stops the others from
/// starting new kills, and is the test's failure.
pub fn for_each_kill(kind: Kind, body: impl Fn(Kill, &mut Tally) + Sync) -> Tally {
    let seed = crash_seed(kind);
    let (first, end) = match std::env::var(ENV_CRASH_KILL) {
        Ok(k) if !k.is_empty() => {
            let k: u64 = k
                .parse()
                .unwrap_or_else(|_| panic!("${ENV_CRASH_KILL}={k:?} is not a kill's number"));
            (k, k + 1)
        }
        _ => (0, crash_iterations()),
    };
    let next = AtomicU64::new(first);
    let failed = AtomicBool::new(false);
    let began = Instant::now();
    let total = std::sync::Mutex::new(Tally::default());
    let worker = || {
        while !failed.load(Ordering::SeqCst) {
            let i = next.fetch_add(1, Ordering::SeqCst);
            if i >= end {
                break;
            }
            let kill = Kill {
                i,
                rng: CrashRng::for_kill(seed, kind, i),
                name: format!(
                    "{kind:?} iteration {i} (seed {seed}; replay it alone with \
                     {ENV_CRASH_SEED}={seed} {ENV_CRASH_KILL}={i})"
                ),
            };
            let mut tally = Tally::default();
            let run =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(kill, &mut tally)));
            if let Err(panic) = run {
                failed.store(true, Ordering::SeqCst);
                std::panic::resume_unwind(panic);
            }
            let mut total = total.lock().unwrap_or_else(|e| e.into_inner());
            total.add(&tally);
            // Progress, so a long run cut off still says how far it got
            // and what it counted.
            if total.kills.is_multiple_of(PROGRESS_EVERY) {
                eprintln!(
                    "crash {kind:?}: {} of {} kills checked in {:?}: {}",
                    total.kills,
                    end - first,
                    began.elapsed(),
                    total.counts()
                );
            }
        }
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..crash_jobs()).map(|_| scope.spawn(worker)).collect();
        let mut panic = None;
        for w in workers {
            if let Err(p) = w.join() {
                panic.get_or_insert(p);
            }
        }
        if let Some(p) = panic {
            std::panic::resume_unwind(p);
        }
    });
    total.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// What is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A tracked command, from its start to its end.
    Task,
    /// `offline on`.
    Activate,
    /// `offline off`.
    Deactivate,
    /// `offline run -- CMD`.
    Run,
    /// `offline on --at TIME`.
    Schedule,
    /// `offline on --read-only`, and `offline on` from READONLY.
    ReadOnly,
    /// A web layer touching and ending sessions.
    SessionTouch,
}

impl Kind {
    /// The modes the site may be in after the kill.
    fn legal_modes(self) -> &'static [Mode] {
        match self {
            Kind::Task | Kind::SessionTouch => &[Mode::Online],
            Kind::Activate | Kind::Deactivate => &[Mode::Online, Mode::Offline],
            Kind::Run | Kind::Schedule | Kind::ReadOnly => {
                &[Mode::Online, Mode::Offline, Mode::ReadOnly]
            }
        }
    }

    /// Whether the killed operation could have recorded `e`.
    fn could_record(self, e: &HistoryEntry) -> bool {
        use Mode::*;
        let edge = (e.from, e.to);
        let drain_lapsed = e.cause == Cause::Lapsed
            && matches!(
                edge,
                (Pending, Online) | (ReadOnlyPending, Online) | (Pending, ReadOnly)
            );
        match (self, e.kind) {
            (Kind::Task | Kind::SessionTouch, _) => false,
            (Kind::Activate, EventKind::Mode) => {
                drain_lapsed
                    || (e.cause == Cause::On
                        && matches!(edge, (Online, Pending) | (Pending, Offline)))
            }
            (Kind::Deactivate, EventKind::Mode) => {
                e.cause == Cause::Off && edge == (Offline, Online)
            }
            (Kind::Run, EventKind::Mode) => {
                drain_lapsed
                    || (e.cause == Cause::Run
                        && matches!(
                            edge,
                            (Online, Pending)
                                | (Pending, Offline)
                                | (Offline, Online)
                                | (Online, ReadOnlyPending)
                                | (ReadOnlyPending, ReadOnly)
                                | (ReadOnly, Online)
                                | (ReadOnly, Pending)
                                | (Offline, ReadOnly)
                        ))
            }
            (Kind::Run, EventKind::RunAbandoned) => e.cause == Cause::Abandoned,
            (Kind::Schedule, EventKind::Mode) => {
                drain_lapsed
                    || (e.cause == Cause::Scheduled
                        && matches!(
                            edge,
                            (Online, Pending)
                                | (Pending, Offline)
                                | (Online, ReadOnlyPending)
                                | (ReadOnlyPending, ReadOnly)
                        ))
            }
            (
                Kind::Schedule,
                EventKind::ScheduleSet | EventKind::ScheduleLapsed | EventKind::ScheduleDue,
            ) => true,
            (Kind::ReadOnly, EventKind::Mode) => {
                drain_lapsed
                    || (e.cause == Cause::On
                        && matches!(
                            edge,
                            (Online, ReadOnlyPending)
                                | (ReadOnlyPending, ReadOnly)
                                | (ReadOnly, Pending)
                                | (Pending, Offline)
                        ))
            }
            _ => false,
        }
    }
}

/// A seeded generator (splitmix64): the delays of a run follow from its
/// seed.
#[derive(Debug, Clone)]
pub struct CrashRng(u64);

impl CrashRng {
    /// The generator of kill `i` of `kind` in the run of `seed`: the same
    /// delays whatever ran before or beside it.
    pub fn for_kill(seed: u64, kind: Kind, i: u64) -> CrashRng {
        let mut mix = CrashRng(seed ^ (kind as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let base = mix.next_u64();
        CrashRng(base ^ i.wrapping_mul(0xd1b5_4a32_d192_ed03))
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 for 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// A delay drawn evenly over `0..spread`.
    pub fn delay(&mut self, spread: Duration) -> Duration {
        Duration::from_micros(self.below(spread.as_micros() as u64))
    }
}

/// How long `manage ARGS…` takes on a fresh site made by `site` (set up
/// by `setup`), checked to succeed: the operation's measured duration,
/// which its kills are drawn over ([`measure_by`]).
pub fn measure(
    site: impl Fn() -> CliSite + Sync,
    setup: impl Fn(&CliSite) + Sync,
    args: &[&str],
) -> Duration {
    let took = measure_by(|| {
        let site = site();
        setup(&site);
        let t = Instant::now();
        let out: Outcome = site.run(args);
        let took = t.elapsed();
        assert!(
            out.success(),
            "`manage {}` measured fails: {out}",
            args.join(" ")
        );
        took
    });
    eprintln!("`manage {}` takes {took:?}", args.join(" "));
    took
}

/// The median of three rounds of `once` (which times one run), each round
/// `$MANAGE_CRASH_JOBS` runs at once: the duration under the load the
/// kills will run in, so their delays spread over the whole operation.
pub fn measure_by(once: impl Fn() -> Duration + Sync) -> Duration {
    let mut times: Vec<Duration> = (0..3)
        .flat_map(|_| {
            std::thread::scope(|scope| {
                let runs: Vec<_> = (0..crash_jobs()).map(|_| scope.spawn(&once)).collect();
                runs.into_iter()
                    .map(|r| r.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// Sleeps `delay`, then SIGKILLs `p` and reaps it.
pub fn kill_after(p: &mut Proc, delay: Duration) {
    std::thread::sleep(delay);
    p.kill9();
}

/// What the checks after a kill know of it.
#[derive(Debug)]
pub struct Killed<'a> {
    /// The kind of operation killed.
    pub kind: Kind,
    /// Its process.
    pub pid: u32,
    /// The history entries there were before it started.
    pub seen: usize,
    /// The ids of the tasks the test itself keeps live.
    pub live: &'a [String],
    /// Live sessions hold the site: the next `offline run` forces.
    pub sessions: bool,
    /// The iteration, its delay and the seed, for the failure messages.
    pub what: String,
}

/// What the checks counted over a run.
#[derive(Debug, Default)]
pub struct Tally {
    /// Kills checked.
    pub kills: u64,
    /// Kills whose drain another process recorded as lapsed.
    pub lapsed: u64,
    /// Where the time went: each step's name and total.
    pub steps: Vec<(&'static str, Duration)>,
    lap: Option<Instant>,
}

impl Tally {
    /// Adds `other`'s counts and times to these.
    pub fn add(&mut self, other: &Tally) {
        self.kills += other.kills;
        self.lapsed += other.lapsed;
        for (step, took) in &other.steps {
            match self.steps.iter_mut().find(|(s, _)| s == step) {
                Some((_, total)) => *total += *took,
                None => self.steps.push((step, *took)),
            }
        }
    }

    /// Starts timing the steps of one kill.
    pub fn start_lap(&mut self) {
        self.lap = Some(Instant::now());
    }

    /// Adds the time since the last step to `step`'s total.
    pub fn lap(&mut self, step: &'static str) {
        let now = Instant::now();
        let took = self.lap.map_or(Duration::ZERO, |t| now - t);
        self.lap = Some(now);
        match self.steps.iter_mut().find(|(s, _)| *s == step) {
            Some((_, total)) => *total += took,
            None => self.steps.push((step, took)),
        }
    }

    /// What it counted, in words.
    pub fn counts(&self) -> String {
        format!("{} drains recorded as lapsed", self.lapsed)
    }

    /// Prints the tally of `kind`.
    pub fn report(&self, kind: Kind) {
        eprintln!(
            "crash {kind:?}: {} kills checked; {}",
            self.kills,
            self.counts()
        );
        let per = |d: Duration| d / self.kills.max(1) as u32;
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|(s, d)| format!("{s} {:?}", per(*d)))
            .collect();
        eprintln!("crash {kind:?}: a kill's time: {}", steps.join(", "));
    }
}

/// `offline status --json` of `site`, checked to exit 0 without a word on
/// stderr and to parse.
fn status(site: &CliSite, what: &str) -> serde_json::Value {
    let out = site.run(&["offline", "status", "--json"]);
    assert!(
        out.code() == Some(0) && out.stderr.is_empty(),
        "{what}: status --json after the kill: {out}"
    );
    serde_json::from_str(&out.stdout.join("\n"))
        .unwrap_or_else(|e| panic!("{what}: status --json is not JSON ({e}): {out}"))
}

fn mode_of(status: &serde_json::Value) -> Mode {
    serde_json::from_value(status["mode"].clone())
        .unwrap_or_else(|e| panic!("not a mode ({e}): {status}"))
}

/// Whether status still shows something of the killed process that its
/// backend lets go of only once it notices the death (PostgreSQL: when
/// the server sees the connection end, a moment after the kill).
fn still_held(status: &serde_json::Value, killed: &Killed<'_>) -> bool {
    let draining = matches!(mode_of(status), Mode::Pending | Mode::ReadOnlyPending);
    let tasks = status["tasks"].as_array().map_or(0, Vec::len) > killed.live.len();
    let window = !status["window"].is_null() && status["window"]["state"] != "abandoned";
    draining || tasks || !status["schedule"].is_null() || window
}

/// Every check after a kill; the history and the later runs through the
/// public CLI. Adds to `tally`.
pub fn check_after_kill(site: &CliSite, killed: &Killed<'_>, tally: &mut Tally) {
    let what = killed.what.as_str();
    tally.kills += 1;
    // The state parses, and once the backend has noticed the death (at
    // once on files, where a lock goes with its process), the killed
    // process holds nothing: no drain, task, schedule or window of its
    // own reads as live.
    let st = if on_postgres_backend() {
        poll_until("the killed process let go on the server", || {
            let st = status(site, what);
            (!still_held(&st, killed)).then_some(st)
        })
    } else {
        status(site, what)
    };
    tally.lap("status until let go");
    assert!(
        !still_held(&st, killed),
        "{what}: the killed process still holds: {st}"
    );
    let mode = mode_of(&st);
    assert!(
        killed.kind.legal_modes().contains(&mode),
        "{what}: {mode} is not a mode this kill could leave: {st}"
    );
    let tasks = st["tasks"].as_array().cloned().unwrap_or_default();
    for t in &tasks {
        let id = t["id"].as_str().unwrap_or_default();
        assert!(
            killed.live.iter().any(|l| l == id),
            "{what}: a task the test does not hold is live: {t}"
        );
    }
    // A PENDING without a live waiter reads as lapsed, saying so.
    let history = site.history(100_000);
    tally.lap("history read");
    let new = &history[killed.seen.min(history.len())..];
    if !st["lapsed"].is_null() {
        tally.lapsed += 1;
    }
    // I1: OFFLINE only with no task started ONLINE live, unless forced.
    let last_mode = new.iter().rev().find(|e| e.kind == EventKind::Mode);
    if mode == Mode::Offline && !last_mode.is_some_and(|e| e.forced) {
        for t in &tasks {
            assert_ne!(
                t["started_in"], "ONLINE",
                "{what}: I1: OFFLINE with a task started ONLINE live: {st}"
            );
        }
    }
    // One connection to the state for the checks' own reads, not one
    // each (on PostgreSQL an open is a connection and its password
    // exchange), allowed the hang guard to connect, as the helpers are.
    let backend = site.helper_state().backend();
    tally.lap("open the state");
    check_history(&*backend, killed, new, &st);
    tally.lap("history checks");
    check_later_runs(site, &*backend, killed, tally);
}

/// The history after the kill holds only what the killed operation could
/// have recorded, every drain it began ended (by itself, or as lapsed by
/// whoever noticed), every run it left OFFLINE recorded as abandoned, and
/// its last change is the mode status shows: every change is recorded,
/// wherever the kill landed (the entry is written with the mode).
fn check_history(
    backend: &dyn Backend,
    killed: &Killed<'_>,
    new: &[HistoryEntry],
    st: &serde_json::Value,
) {
    let what = killed.what.as_str();
    for e in new {
        assert!(
            killed.kind.could_record(e),
            "{what}: an entry the killed {:?} could not have recorded: {e:?}\nall: {new:#?}",
            killed.kind
        );
    }
    let record = backend.mode().expect("read the mode").record;
    let written_by_killed = record.pid == killed.pid;
    let mode = mode_of(st);
    let modes: Vec<&HistoryEntry> = new.iter().filter(|e| e.kind == EventKind::Mode).collect();
    let shown = modes.last().map(|e| e.to);
    if let Some(to) = shown {
        assert_eq!(
            to, mode,
            "{what}: the history ends in {to} but the site is {mode}: the change that made it is \
             unrecorded: {record:?}\n{new:#?}"
        );
    }
    for (i, e) in modes.iter().enumerate() {
        if matches!(e.to, Mode::Pending | Mode::ReadOnlyPending) {
            assert!(
                modes[i + 1..].iter().any(|l| l.from == e.to),
                "{what}: a drain begun and never ended in the history: {e:?}\n{new:#?}"
            );
        }
    }
    // A run killed inside its window (OFFLINE, or READONLY for a
    // read-only one) leaves it so, recorded as abandoned.
    if killed.kind == Kind::Run
        && let Some(last) = modes.last()
        && last.cause == Cause::Run
        && matches!(
            (last.from, last.to),
            (Mode::Pending, Mode::Offline) | (Mode::ReadOnlyPending, Mode::ReadOnly)
        )
    {
        assert!(
            new.iter().any(|e| e.kind == EventKind::RunAbandoned),
            "{what}: a killed run left the site OFFLINE with no `run abandoned`: {st}\n{new:#?}"
        );
        assert_eq!(st["window"]["state"], "abandoned", "{what}: {st}");
    }
    if killed.kind == Kind::Schedule && new.iter().any(|e| e.kind == EventKind::ScheduleSet) {
        assert!(
            new.iter().any(|e| matches!(
                e.kind,
                EventKind::ScheduleLapsed | EventKind::ScheduleDue
            ) || e.cause == Cause::Scheduled),
            "{what}: a schedule set and never lapsed or due: {new:#?}"
        );
    }
    if shown.is_none() && new.iter().all(|e| e.kind != EventKind::RunAbandoned) {
        // Nothing recorded: nothing changed (a record by the killed
        // process is a change, recorded with it).
        assert!(
            !written_by_killed,
            "{what}: the site is {mode} by the killed process, and its change is unrecorded: \
             {record:?}\n{new:#?}"
        );
    }
}

/// Nothing is left that later runs trip over: `off`, a task start, an
/// `offline run` and `on --force` all succeed, each landing where it
/// should (and, after sessions were touched, `offline list` reads them
/// without a warning).
fn check_later_runs(site: &CliSite, backend: &dyn Backend, killed: &Killed<'_>, tally: &mut Tally) {
    let what = killed.what.as_str();
    let ok = |tally: &mut Tally, step: &'static str, args: &[&str], mode: Mode| {
        let out = site.run(args);
        tally.lap(step);
        assert!(
            out.code() == Some(0),
            "{what}: `manage {}` after the kill: {out}",
            args.join(" ")
        );
        let now = backend.mode().expect("read the mode").mode;
        tally.lap("mode read");
        assert_eq!(
            now,
            mode,
            "{what}: after `manage {}`: {out}",
            args.join(" ")
        );
    };
    if killed.sessions {
        let list = site.run(&["offline", "list", "--json"]);
        assert!(
            list.code() == Some(0) && list.stderr.is_empty(),
            "{what}: offline list --json after the kill: {list}"
        );
        tally.lap("offline list");
    }
    ok(tally, "off", &["offline", "off"], Mode::Online);
    ok(
        tally,
        "a task",
        &["sleeper-many", "--secs", "0"],
        Mode::Online,
    );
    // Live sessions, or the test's own task, would hold a plain run off.
    let run: &[&str] = if killed.sessions || !killed.live.is_empty() {
        &[
            "offline",
            "run",
            "--force",
            "--",
            "sleeper-many",
            "--secs",
            "0",
        ]
    } else {
        &[
            "offline",
            "run",
            "--timeout",
            "60",
            "--",
            "sleeper-many",
            "--secs",
            "0",
        ]
    };
    ok(tally, "offline run", run, Mode::Online);
    ok(
        tally,
        "on --force",
        &["offline", "on", "--force"],
        Mode::Offline,
    );
}
