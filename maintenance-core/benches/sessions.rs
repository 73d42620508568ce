//! Benchmarks of the session registry and the status read (the targets
//! below are those of the README's "Benchmarks" section), each
//! on a fresh state directory in a temporary directory:
//!
//! - `status/100_tasks/*`: [`transition::status`] (mode, live tasks, the
//!   sessions' summary) with 100 live tasks and 1,000 / 10,000 / 100,000
//!   live sessions (targets: ≤ 5 ms at 10,000, ≤ 40 ms at 100,000). The
//!   sessions' last activity is spread evenly over the last 900 s, so they
//!   fill ~180 five-second bucket directories, as on a busy site; the
//!   timeout is raised to an hour so none expires while the benchmark runs.
//! - `status/100_tasks_one_bucket/10000`: the same with every session in
//!   one bucket (a burst), to show what the bucket directories cost.
//! - `sessions/summary/*`: [`Backend::session_summary`] alone (one count
//!   per bucket), and `sessions/list/*`: [`Backend::sessions`], the
//!   listing `offline on` and `offline list` read, for the same sets.
//! - `session/touch/first`: [`Backend::touch_session`] of a new key each
//!   iteration (the key's hash is computed outside the timing);
//!   `session/touch/repeat`: the same key again and again, as every request
//!   of a logged-in user does; `session/touch/move`: 1,000 keys touched
//!   again one bucket later, each a new entry, its old entry removed and
//!   both counted (target for all three: ≤ 20 µs).
//!
//! Run with `cargo bench -p maintenance-core --bench sessions` (add a
//! filter such as `-- touch` to run some). At the end it prints one table:
//! each figure measured in this run (criterion's median) beside its
//! target. Figures depend on the file system holding the temporary
//! directory (`$TMPDIR`). On a busy machine, `BENCH_CLOCK=cpu` measures the
//! benchmark thread's CPU time (user + system, `CLOCK_THREAD_CPUTIME_ID`)
//! instead of wall-clock time, under group names ending in `@cpu`: what
//! the operation costs, without the time spent waiting for a core.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::measurement::Measurement;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use maintenance_core::policy::Instances;
use maintenance_core::session::SessionKey;
use maintenance_core::transition;
use maintenance_core::{
    Backend, CommandTask, Config, FileBackend, ManualClock, Policy, SystemClock, TaskOptions,
};
use tempfile::TempDir;

#[path = "shared/thread_cpu.rs"]
mod thread_cpu;

/// Long enough that no session expires while a benchmark runs.
const TIMEOUT: Duration = Duration::from_secs(3600);
/// How far back the sessions' last activity goes.
const SPREAD: Duration = Duration::from_secs(900);

fn config(dir: &TempDir) -> Config {
    let mut config = Config::with_state_dir(dir.path().join("state"));
    config.session_timeout = TIMEOUT;
    config
}

/// A fresh state directory and its backend on the real clock.
fn site() -> (TempDir, Arc<dyn Backend>) {
    let dir = TempDir::new().expect("temporary directory");
    let backend = FileBackend::open(&config(&dir), SystemClock::shared()).expect("open the state");
    (dir, Arc::new(backend))
}

/// Records `n` sessions, their last activity spread evenly over `spread`
/// up to now, through a second backend on a clock moved by hand.
fn add_sessions(dir: &TempDir, n: usize, spread: Duration) {
    let clock = ManualClock::ago(spread);
    let writer = FileBackend::open(&config(dir), clock.clone()).expect("open the state");
    let mut at = Duration::ZERO;
    for i in 0..n {
        let next = spread.mul_f64(i as f64 / n as f64);
        clock.advance(next.saturating_sub(at));
        at = next;
        let key = SessionKey::of(format!("session-{i}").as_bytes());
        writer.touch_session(&key).expect("touch");
    }
}

/// `n` live tasks held by this process (concurrent policy).
fn hold_tasks(backend: &Arc<dyn Backend>, n: usize) -> Vec<CommandTask> {
    let policy = Policy::DEFAULT.instances(Instances::Concurrent);
    (0..n)
        .map(|i| {
            let options = TaskOptions::new(Arc::clone(backend))
                .argv(["manage", "bench", &format!("--part={i}")])
                .policy(policy);
            CommandTask::start("bench", options).expect("task starts")
        })
        .collect()
}

/// Wall-clock time since the first call.
fn wall_time() -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

fn status<M: Measurement>(c: &mut Criterion<M>, suffix: &str) {
    // Criterion's groups cannot interleave: build the sites once and run
    // each group over them in turn.
    let sites: Vec<_> = [1_000_usize, 10_000, 100_000]
        .into_iter()
        .map(|n| {
            let (dir, backend) = site();
            add_sessions(&dir, n, SPREAD);
            let tasks = hold_tasks(&backend, 100);
            let s = transition::status(backend.as_ref()).expect("status");
            assert_eq!((s.tasks.len(), s.sessions.count), (100, n));
            (n, dir, backend, tasks)
        })
        .collect();
    let mut status = c.benchmark_group(format!("status/100_tasks{suffix}"));
    status.sample_size(20);
    status.measurement_time(Duration::from_secs(8));
    for (n, _, backend, _) in &sites {
        status.throughput(Throughput::Elements(*n as u64));
        status.bench_with_input(BenchmarkId::from_parameter(n), n, |b, _| {
            b.iter(|| black_box(transition::status(backend.as_ref()).expect("status")))
        });
    }
    status.finish();
    let mut summary = c.benchmark_group(format!("sessions/summary{suffix}"));
    summary.sample_size(20);
    for (n, _, backend, _) in &sites {
        summary.throughput(Throughput::Elements(*n as u64));
        summary.bench_with_input(BenchmarkId::from_parameter(n), n, |b, _| {
            b.iter(|| black_box(backend.session_summary().expect("summary")))
        });
    }
    summary.finish();
    let mut list = c.benchmark_group(format!("sessions/list{suffix}"));
    list.sample_size(20);
    list.measurement_time(Duration::from_secs(8));
    for (n, _, backend, _) in &sites {
        list.throughput(Throughput::Elements(*n as u64));
        list.bench_with_input(BenchmarkId::from_parameter(n), n, |b, _| {
            b.iter(|| black_box(backend.sessions().expect("sessions")))
        });
    }
    list.finish();
    drop(sites);

    let mut burst = c.benchmark_group(format!("status/100_tasks_one_bucket{suffix}"));
    burst.sample_size(20);
    let n = 10_000;
    let (dir, backend) = site();
    add_sessions(&dir, n, Duration::ZERO);
    let _tasks = hold_tasks(&backend, 100);
    burst.throughput(Throughput::Elements(n as u64));
    burst.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
        b.iter(|| black_box(transition::status(backend.as_ref()).expect("status")))
    });
    burst.finish();
}

fn touch<M: Measurement<Value = Duration>>(c: &mut Criterion<M>, suffix: &str) {
    // What `move` times its batches by: the measurement's own clock.
    let read: fn() -> Duration = if suffix.is_empty() {
        wall_time
    } else {
        thread_cpu::thread_cpu_time
    };
    let mut group = c.benchmark_group(format!("session/touch{suffix}"));
    // Every iteration of `first` leaves a file: keep the count bounded.
    group.measurement_time(Duration::from_secs(3));
    let (_dir, backend) = site();
    let mut next = 0_u64;
    group.bench_function("first", |b| {
        b.iter_batched(
            || {
                next += 1;
                SessionKey::of(format!("first-{next}").as_bytes())
            },
            |key| backend.touch_session(&key).expect("touch"),
            BatchSize::SmallInput,
        )
    });
    let key = SessionKey::of(b"the same user");
    backend.touch_session(&key).expect("touch");
    group.bench_function("repeat", |b| {
        b.iter(|| backend.touch_session(black_box(&key)).expect("touch"))
    });
    // 1,000 keys, each touched once per bucket: every touch moves its key
    // from the bucket before.
    let (dir, _) = site();
    let clock = ManualClock::ago(Duration::ZERO);
    let mover = FileBackend::open(&config(&dir), clock.clone()).expect("open the state");
    let keys: Vec<SessionKey> = (0..1000)
        .map(|i| SessionKey::of(format!("mover-{i}").as_bytes()))
        .collect();
    for k in &keys {
        mover.touch_session(k).expect("touch");
    }
    let mut next = 0;
    group.bench_function("move", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                if next == 0 {
                    clock.advance(Duration::from_secs(5));
                }
                let batch = (iters - done).min((keys.len() - next) as u64) as usize;
                let started = read();
                for k in &keys[next..next + batch] {
                    mover.touch_session(k).expect("touch");
                }
                spent += read().saturating_sub(started);
                done += batch as u64;
                next = (next + batch) % keys.len();
            }
            spent
        })
    });
    group.finish();
}

/// Where criterion keeps its results: `$CRITERION_HOME`, or `criterion`
/// in the target directory (`$CARGO_TARGET_DIR`, else the one holding this
/// benchmark's executable, `<target>/release/deps/…`).
fn criterion_home() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(home.into());
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(target).join("criterion"));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.join("criterion"))
}

/// Prints each figure this run measured (criterion's median) beside its
/// target, one table.
// The table is this benchmark's report, on standard output as criterion's.
#[allow(clippy::print_stdout)]
fn print_table(suffix: &str, since: SystemTime) {
    const ROWS: &[(&str, &str, &str, Option<f64>)] = &[
        (
            "status/100_tasks",
            "10000",
            "status, 100 tasks + 10,000 sessions",
            Some(5e6),
        ),
        (
            "status/100_tasks",
            "100000",
            "status, 100 tasks + 100,000 sessions",
            Some(40e6),
        ),
        (
            "status/100_tasks",
            "1000",
            "status, 100 tasks + 1,000 sessions",
            None,
        ),
        (
            "status/100_tasks_one_bucket",
            "10000",
            "status, 10,000 sessions in one bucket",
            None,
        ),
        (
            "sessions/summary",
            "100000",
            "session summary, 100,000 sessions",
            None,
        ),
        (
            "sessions/list",
            "10000",
            "session listing, 10,000 sessions",
            None,
        ),
        (
            "sessions/list",
            "100000",
            "session listing, 100,000 sessions",
            None,
        ),
        (
            "session/touch",
            "first",
            "session touch, a new session",
            Some(20e3),
        ),
        (
            "session/touch",
            "repeat",
            "session touch, again in its bucket",
            Some(20e3),
        ),
        (
            "session/touch",
            "move",
            "session touch, moved to the next bucket",
            Some(20e3),
        ),
    ];
    let Some(home) = criterion_home() else {
        return;
    };
    let format = |ns: f64| {
        if ns < 1e6 {
            format!("{:.1} µs", ns / 1e3)
        } else {
            format!("{:.2} ms", ns / 1e6)
        }
    };
    let mut lines = Vec::new();
    for (group, id, what, target) in ROWS {
        let file = home
            .join(format!("{group}{suffix}").replace('/', "_"))
            .join(id)
            .join("new/estimates.json");
        // Only what this run measured.
        let fresh = std::fs::metadata(&file)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= since);
        let median = fresh
            .then(|| std::fs::read(&file).ok())
            .flatten()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["median"]["point_estimate"].as_f64());
        let Some(median) = median else { continue };
        let (target, verdict) = match target {
            Some(t) => (
                format!("≤ {}", format(*t)),
                if median <= *t { "met" } else { "MISSED" },
            ),
            None => ("—".to_owned(), ""),
        };
        lines.push(format!(
            "{:<44} {:>10}  {:>9}  {verdict}",
            format!("{what}{suffix}"),
            format(median),
            target
        ));
    }
    if !lines.is_empty() {
        println!(
            "\n{:<44} {:>10}  {:>9}",
            "figure (median)", "measured", "target"
        );
        for l in lines {
            println!("{l}");
        }
    }
}

// By hand rather than `criterion_group!`, whose public function would need
// a doc comment the macro cannot carry.
fn main() {
    let since = SystemTime::now();
    if thread_cpu::wanted() {
        let mut c = Criterion::default()
            .with_measurement(thread_cpu::ThreadCpu)
            .configure_from_args();
        touch(&mut c, "@cpu");
        status(&mut c, "@cpu");
        c.final_summary();
        print_table("@cpu", since);
    } else {
        let mut c = Criterion::default().configure_from_args();
        touch(&mut c, "");
        status(&mut c, "");
        c.final_summary();
        print_table("", since);
    }
}
