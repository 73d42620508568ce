//! A process that plays one part against a shared state, for the
//! multi-process tests of the offline state machine: a command starting
//! tasks, a web layer touching sessions, a real `MaintenanceLayer` sending
//! writes through, an operator activating, or a task holder. It prints what
//! the tests check, one line an event.
//!
//! ```text
//! race-actor --state-dir DIR [--database-url URL --site NAME] PART ARGS…
//! ```
//!
//! The state is the directory DIR, or with `--database-url` the site NAME
//! on that PostgreSQL server (as `task-holder`'s options say). The parts
//! and their arguments are the functions below.

// Standard output is this helper's protocol with the tests.
#![allow(clippy::print_stdout)]

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use maintenance_core::backend::{self, Backend, ModeChange};
use maintenance_core::policy::{Instances, Policy};
use maintenance_core::session::SessionKey;
use maintenance_core::transition::{self as offline, Activation, Outcome};
use maintenance_core::{CommandTask, Config, Mode, SystemClock, TaskOptions};

fn micros(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

/// A small xorshift generator: the tests need jitter, not quality.
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        Jitter((micros(SystemTime::now()) as u64) ^ (u64::from(std::process::id()) << 32) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Where the state is: `--state-dir`, `--database-url`, `--site`.
struct State {
    dir: PathBuf,
    url: Option<String>,
    site: Option<String>,
}

impl State {
    fn config(&self) -> anyhow::Result<Config> {
        manage_tests::helper_config(&self.dir, self.url.as_deref(), self.site.as_deref())
            .map_err(anyhow::Error::msg)
    }
}

fn open(state: &State) -> anyhow::Result<Arc<dyn Backend>> {
    Ok(backend::open(&state.config()?, SystemClock::shared())?)
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("race-actor: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run() -> anyhow::Result<u8> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut state = State {
        dir: PathBuf::new(),
        url: None,
        site: None,
    };
    while args.first().is_some_and(|a| a.starts_with("--")) {
        let option = args.remove(0);
        anyhow::ensure!(!args.is_empty(), "{option} needs a value");
        let value = args.remove(0);
        match option.as_str() {
            "--state-dir" => state.dir = value.into(),
            "--database-url" => state.url = Some(value),
            "--site" => state.site = Some(value),
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    anyhow::ensure!(!state.dir.as_os_str().is_empty(), "--state-dir is required");
    let arg = |i: usize| -> anyhow::Result<&str> {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| anyhow::anyhow!("missing argument {i}: see the source for usage"))
    };
    match arg(0)? {
        "task-actor" => task_actor(&state, Path::new(arg(1)?)),
        "session-actor" => session_actor(
            &state,
            Path::new(arg(1)?),
            Duration::from_millis(arg(2)?.parse()?),
        ),
        "activate" => activate(
            &state,
            Duration::from_millis(arg(1)?.parse()?),
            Duration::from_millis(arg(2)?.parse()?),
            args.get(3).cloned(),
        ),
        "hold" => hold(&state, arg(1)?),
        "touch-loop" => touch_loop(&state),
        "run-pending" => run_pending(&state, arg(1)?),
        "layer-actor" => layer_actor(
            &state,
            Path::new(arg(1)?),
            Duration::from_millis(arg(2)?.parse()?),
        ),
        other => anyhow::bail!("unknown part {other:?}"),
    }
}

/// Starts short tasks (that may write) as fast as it can until `stop`
/// exists. Prints `online <before µs> <after µs>` for each task admitted as
/// ONLINE, and `VIOLATION …` if it ever holds such a task while the site is
/// OFFLINE or READONLY.
fn task_actor(state: &State, stop: &Path) -> anyhow::Result<u8> {
    let b = open(state)?;
    let mut rng = Jitter::new();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let policy = Policy::DEFAULT.instances(Instances::Concurrent);
    while !stop.exists() {
        let before = SystemTime::now();
        let started = CommandTask::start("job", TaskOptions::new(Arc::clone(&b)).policy(policy));
        let after = SystemTime::now();
        match started {
            Ok(task) => {
                if task.record().started_in == Mode::Online {
                    writeln!(out, "online {} {}", micros(before), micros(after))?;
                }
                std::thread::sleep(Duration::from_micros(rng.below(15_000)));
                let mode = b.mode()?.record.mode;
                if matches!(mode, Mode::Offline | Mode::ReadOnly)
                    && task.record().started_in == Mode::Online
                {
                    writeln!(
                        out,
                        "VIOLATION I1: task {} started ONLINE is live while {mode}",
                        task.record().id
                    )?;
                }
            }
            Err(maintenance_core::Error::Refused(_)) => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => return Err(e.into()),
        }
    }
    out.flush()?;
    Ok(0)
}

/// Plays a web layer with a fresh ONLINE snapshot letting new users in.
/// Prints `VIOLATION …` if a session it let in is live while OFFLINE, and
/// `sessions <n>` at the end.
fn session_actor(state: &State, stop: &Path, settle: Duration) -> anyhow::Result<u8> {
    let b = open(state)?;
    let mut rng = Jitter::new();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut n = 0u64;
    while !stop.exists() {
        let snapshot_at = std::time::Instant::now();
        if b.mode()?.mode != Mode::Online {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        let key = SessionKey::of(format!("{}-{n}", std::process::id()).as_bytes());
        n += 1;
        b.touch_session(&key)?;
        if snapshot_at.elapsed() > settle / 2 {
            // Descheduled between snapshot and write: no layer's snapshot
            // is that stale, so this is no fair sample.
            b.end_session(&key)?;
            continue;
        }
        std::thread::sleep(Duration::from_micros(rng.below(20_000)));
        if b.mode()?.record.mode == Mode::Offline {
            writeln!(
                out,
                "VIOLATION I2: session {} let in under ONLINE is live while OFFLINE",
                key.short()
            )?;
        }
        b.end_session(&key)?;
    }
    writeln!(out, "sessions {n}")?;
    out.flush()?;
    Ok(0)
}

/// Plays a web app behind a real `MaintenanceLayer` (its layer refreshing
/// every `refresh`): a dozen clients send writes (POST) through it until
/// `stop` exists; the app's handler works a jittered while, mostly short,
/// now and then long enough to be in flight across a drain. Prints `write
/// <asked µs> <entered µs> <finished µs> <admitted µs> <snapshot read µs>`
/// for each write the layer let in (the handler's start and end, and the
/// layer's [`WriteAdmission`](maintenance_core::middleware::WriteAdmission)),
/// and `refused <n>` at the end.
fn layer_actor(state: &State, stop: &Path, refresh: Duration) -> anyhow::Result<u8> {
    use tower::{Layer, ServiceExt};
    let mut config = state.config()?;
    config.refresh_interval = refresh;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let lines = runtime.block_on(async {
        let layer = maintenance_core::middleware::MaintenanceLayer::builder(&config)
            .unavailable(None)
            .build();
        let app = layer.layer(tower::service_fn(|req: http::Request<String>| async move {
            let entered = SystemTime::now();
            let admission = req
                .extensions()
                .get::<maintenance_core::middleware::WriteAdmission>()
                .copied();
            let mut rng = Jitter::new();
            let work = if rng.below(8) == 0 {
                Duration::from_millis(100 + rng.below(200))
            } else {
                Duration::from_micros(rng.below(10_000))
            };
            tokio::time::sleep(work).await;
            let finished = SystemTime::now();
            // No admission stamp would be the layer's bug: 0 fails the test.
            let (admitted, read) =
                admission.map_or((0, 0), |a| (micros(a.admitted), micros(a.snapshot_read)));
            let done = format!("{} {} {admitted} {read}", micros(entered), micros(finished));
            Ok::<_, std::convert::Infallible>(http::Response::new(done))
        }));
        let clients: Vec<_> = (0..12)
            .map(|_| {
                let app = app.clone();
                let stop = stop.to_path_buf();
                tokio::spawn(async move {
                    let mut lines = Vec::new();
                    let mut refused = 0u64;
                    while !stop.exists() {
                        let asked = SystemTime::now();
                        let req = http::Request::post("/notes")
                            .body(String::new())
                            .expect("a request");
                        let Ok(res) = app.clone().oneshot(req).await;
                        if res.status() == http::StatusCode::OK {
                            lines.push(format!("write {} {}", micros(asked), res.body()));
                        } else {
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                    (lines, refused)
                })
            })
            .collect();
        let mut all = Vec::new();
        let mut refused = 0;
        for c in clients {
            if let Ok((lines, n)) = c.await {
                all.extend(lines);
                refused += n;
            }
        }
        all.push(format!("refused {refused}"));
        all
    });
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for l in lines {
        writeln!(out, "{l}")?;
    }
    out.flush()?;
    Ok(0)
}

/// Takes the site offline, printing the outcome; Ctrl-C or SIGTERM stops
/// the wait. Exit 0 offline, 124 timed out, 130 interrupted, 75 cancelled.
fn activate(
    state: &State,
    timeout: Duration,
    settle: Duration,
    message: Option<String>,
) -> anyhow::Result<u8> {
    let b = open(state)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))?;
    let activation = Activation {
        change: ModeChange::by_this_process().message(message),
        timeout,
        grace: None,
        settle,
    };
    let mut said = false;
    let outcome = offline::activate(
        b.as_ref(),
        &activation,
        &|| stop.load(Ordering::SeqCst),
        &mut |p| {
            if !said {
                said = true;
                println!("waiting {}", p.holding.active());
            }
        },
    )?;
    Ok(match outcome {
        Outcome::Offline { joined, .. } => {
            println!("offline{}", if joined { " joined" } else { "" });
            0
        }
        Outcome::ReadOnly { joined, .. } => {
            println!("read-only{}", if joined { " joined" } else { "" });
            0
        }
        Outcome::TimedOut { live, .. } => {
            println!("timed-out {}", live.active());
            124
        }
        Outcome::Interrupted { .. } => {
            println!("interrupted");
            130
        }
        Outcome::Cancelled { by, .. } => {
            println!("cancelled by {by}");
            75
        }
    })
}

/// Touches sessions, as a web layer records its users' activity, until it
/// is killed: a new session each round, now and then one touched again
/// or ended (a logout). Prints `touching` after its first touch.
fn touch_loop(state: &State) -> anyhow::Result<u8> {
    let b = open(state)?;
    let mut rng = Jitter::new();
    let key = |n: u64| SessionKey::of(format!("{}-{n}", std::process::id()).as_bytes());
    let mut n = 0u64;
    loop {
        b.touch_session(&key(n))?;
        if n == 0 {
            println!("touching");
            std::io::stdout().flush()?;
        }
        match rng.below(4) {
            0 => b.touch_session(&key(rng.below(n + 1)))?,
            1 => b.end_session(&key(rng.below(n + 1)))?,
            _ => {}
        }
        n += 1;
    }
}

/// Begins an `offline run` of `command` as the runner does (the window's
/// record, then its PENDING) and stops there, before recording anything,
/// as a run killed in that instant would: prints `pending`, then waits
/// for its kill (or standard input to close).
fn run_pending(state: &State, command: &str) -> anyhow::Result<u8> {
    let b = open(state)?;
    let change = ModeChange::by_this_process();
    let _window = b.begin_window_run(&maintenance_core::backend::WindowRun {
        argv: vec![command.to_owned()],
        pid: change.pid,
        by: change.by.clone(),
        started_at: maintenance_core::Timestamp::at(SystemTime::now()),
        running: false,
        read_only: false,
    })?;
    let _pending = b.begin_pending(&change)?;
    println!("pending");
    std::io::stdout().flush()?;
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    Ok(0)
}

/// Holds one task named `name` until standard input closes.
fn hold(state: &State, name: &str) -> anyhow::Result<u8> {
    let b = open(state)?;
    let task = CommandTask::start(
        name,
        TaskOptions::new(b).policy(Policy::DEFAULT.instances(Instances::Concurrent)),
    )?;
    println!("started {}", task.record().id);
    std::io::stdout().flush()?;
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    Ok(0)
}
