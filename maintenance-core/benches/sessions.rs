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
//! - `session/touch_batch/*`: [`Backend::touch_sessions`] of 1,000 /
//!   10,000 known sessions, the clock five seconds on each time: the batch
//!   of repeat touches a web layer writes every `touch_every`, so its
//!   throughput is the touches per second one layer sustains.
//!
//! **Both backends.** With the `postgres` feature and
//! `$MANAGE_TEST_DATABASE_URL` set (`scripts/pg-cluster start` prints one),
//! every group runs again on PostgreSQL under a `postgres/` prefix (a
//! fresh site each, in schema `manage_bench`, which each run drops first),
//! beside
//! `postgres/floor/select_1`: one `SELECT 1` on an open connection, the
//! round trip every statement pays. The table then shows both backends
//! side by side.
//!
//! Run with `cargo bench -p maintenance-core --features postgres --bench
//! sessions` (add a filter such as `-- touch` to run some). At the end it
//! prints one table: each figure measured in this run (criterion's median)
//! beside its target. Figures depend on the file system holding the
//! temporary directory (`$TMPDIR`) and, for PostgreSQL, on the server. On
//! a busy machine, `BENCH_CLOCK=cpu` measures the benchmark thread's CPU
//! time (user + system, `CLOCK_THREAD_CPUTIME_ID`) instead of wall-clock
//! time, under group names ending in `@cpu`: what the operation costs,
//! without the time spent waiting for a core (file backend only: a
//! PostgreSQL call's time is the server's).

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
    Backend, CommandTask, Config, ManualClock, Policy, SharedClock, SystemClock, TaskOptions,
};
use tempfile::TempDir;

#[path = "shared/thread_cpu.rs"]
mod thread_cpu;

/// Long enough that no session expires while a benchmark runs.
const TIMEOUT: Duration = Duration::from_secs(3600);
/// How far back the sessions' last activity goes.
const SPREAD: Duration = Duration::from_secs(900);

/// Where a benchmark's state lives.
#[derive(Clone)]
enum Store {
    /// A state directory in a fresh temporary directory.
    File,
    /// The PostgreSQL server `$MANAGE_TEST_DATABASE_URL` names (parsed,
    /// and as given).
    #[cfg(feature = "postgres")]
    Postgres(Box<maintenance_core::database_url::DatabaseUrl>, String),
}

impl Store {
    /// The prefix of this store's group names.
    fn prefix(&self) -> &'static str {
        match self {
            Store::File => "",
            #[cfg(feature = "postgres")]
            Store::Postgres(..) => "postgres/",
        }
    }

    /// A fresh site in this store.
    fn site(&self) -> Site {
        let dir = TempDir::new().expect("temporary directory");
        let mut config = Config::with_state_dir(dir.path().join("state"));
        config.session_timeout = TIMEOUT;
        #[cfg(feature = "postgres")]
        if let Store::Postgres(url, _) = self {
            config.backend = maintenance_core::config::BackendKind::Postgres;
            config.postgres.url = Some((**url).clone());
            config.postgres.schema = "manage_bench".into();
            config.postgres.site = format!(
                "bench-{}-{}",
                std::process::id(),
                maintenance_core::random::hex::<8>()
            );
        }
        let backend = maintenance_core::backend::open(&config, SystemClock::shared())
            .expect("open the state");
        Site {
            _dir: dir,
            config,
            backend,
        }
    }
}

/// The stores to run on: the file backend, and PostgreSQL when the
/// benchmark can reach one.
fn stores(cpu: bool) -> Vec<Store> {
    #[allow(unused_mut, reason = "PostgreSQL joins only with its feature")]
    let mut stores = vec![Store::File];
    #[cfg(feature = "postgres")]
    if !cpu
        && let Ok(url) = std::env::var("MANAGE_TEST_DATABASE_URL")
        && !url.is_empty()
    {
        let parsed = maintenance_core::database_url::DatabaseUrl::parse(&url)
            .unwrap_or_else(|e| panic!("$MANAGE_TEST_DATABASE_URL: {e}"));
        // The sites of earlier runs would only make the tables bigger.
        let (rt, client) = connect(&url);
        rt.block_on(client.simple_query("DROP SCHEMA IF EXISTS manage_bench CASCADE"))
            .expect("drop the schema of earlier runs");
        stores.push(Store::Postgres(Box::new(parsed), url));
    }
    let _ = cpu;
    stores
}

/// One site: its backend on the real clock, and what opens it again.
struct Site {
    _dir: TempDir,
    config: Config,
    backend: Arc<dyn Backend>,
}

impl Site {
    /// The site's backend on another clock, as another process opens it.
    fn open_with(&self, clock: SharedClock) -> Arc<dyn Backend> {
        maintenance_core::backend::open(&self.config, clock).expect("open the state")
    }
}

/// How many sessions one call records while the sessions are made: one
/// for the file backend (its own buckets), a batch for PostgreSQL.
fn per_call(store: &Store) -> usize {
    match store {
        Store::File => 1,
        #[cfg(feature = "postgres")]
        Store::Postgres(..) => 500,
    }
}

/// Records `n` sessions, their last activity spread evenly over `spread`
/// up to now, through a second backend on a clock moved by hand.
fn add_sessions(store: &Store, site: &Site, n: usize, spread: Duration) {
    let clock = ManualClock::ago(spread);
    let writer = site.open_with(clock.clone());
    let step = per_call(store);
    let mut at = Duration::ZERO;
    let mut i = 0;
    while i < n {
        let next = spread.mul_f64(i as f64 / n as f64);
        clock.advance(next.saturating_sub(at));
        at = next;
        let keys: Vec<SessionKey> = (i..(i + step).min(n))
            .map(|i| SessionKey::of(format!("session-{i}").as_bytes()))
            .collect();
        writer.touch_sessions(&keys).expect("touch");
        i += keys.len();
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

fn status<M: Measurement>(c: &mut Criterion<M>, store: &Store, suffix: &str) {
    let prefix = store.prefix();
    // Criterion's groups cannot interleave: build the sites once and run
    // each group over them in turn. The tasks are held only while their
    // site's status is measured (on PostgreSQL each holds a connection).
    let sites: Vec<_> = [1_000_usize, 10_000, 100_000]
        .into_iter()
        .map(|n| {
            let site = store.site();
            add_sessions(store, &site, n, SPREAD);
            (n, site)
        })
        .collect();
    let mut status = c.benchmark_group(format!("{prefix}status/100_tasks{suffix}"));
    status.sample_size(20);
    status.measurement_time(Duration::from_secs(8));
    for (n, site) in &sites {
        let backend = &site.backend;
        let _tasks = hold_tasks(backend, 100);
        let s = transition::status(backend.as_ref()).expect("status");
        assert_eq!((s.tasks.len(), s.sessions.count), (100, *n));
        status.throughput(Throughput::Elements(*n as u64));
        status.bench_with_input(BenchmarkId::from_parameter(n), n, |b, _| {
            b.iter(|| black_box(transition::status(backend.as_ref()).expect("status")))
        });
    }
    status.finish();
    let mut summary = c.benchmark_group(format!("{prefix}sessions/summary{suffix}"));
    summary.sample_size(20);
    for (n, site) in &sites {
        summary.throughput(Throughput::Elements(*n as u64));
        summary.bench_with_input(BenchmarkId::from_parameter(n), n, |b, _| {
            b.iter(|| black_box(site.backend.session_summary().expect("summary")))
        });
    }
    summary.finish();
    let mut list = c.benchmark_group(format!("{prefix}sessions/list{suffix}"));
    list.sample_size(10);
    list.measurement_time(Duration::from_secs(8));
    for (n, site) in &sites {
        list.throughput(Throughput::Elements(*n as u64));
        list.bench_with_input(BenchmarkId::from_parameter(n), n, |b, _| {
            b.iter(|| black_box(site.backend.sessions().expect("sessions")))
        });
    }
    list.finish();
    drop(sites);

    let mut burst = c.benchmark_group(format!("{prefix}status/100_tasks_one_bucket{suffix}"));
    burst.sample_size(20);
    let n = 10_000;
    let site = store.site();
    add_sessions(store, &site, n, Duration::ZERO);
    let _tasks = hold_tasks(&site.backend, 100);
    burst.throughput(Throughput::Elements(n as u64));
    burst.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
        b.iter(|| black_box(transition::status(site.backend.as_ref()).expect("status")))
    });
    burst.finish();
}

fn touch<M: Measurement<Value = Duration>>(c: &mut Criterion<M>, store: &Store, suffix: &str) {
    let prefix = store.prefix();
    // What `move` and the batches time themselves by: the measurement's
    // own clock.
    let read: fn() -> Duration = if suffix.is_empty() {
        wall_time
    } else {
        thread_cpu::thread_cpu_time
    };
    let mut group = c.benchmark_group(format!("{prefix}session/touch{suffix}"));
    // Every iteration of `first` leaves a file: keep the count bounded.
    group.measurement_time(Duration::from_secs(3));
    let site = store.site();
    let backend = &site.backend;
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
    let site = store.site();
    let clock = ManualClock::ago(Duration::ZERO);
    let mover = site.open_with(clock.clone());
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

    // A web layer's batch of repeat touches: known sessions touched again
    // together, five seconds after their last batch.
    let mut batches = c.benchmark_group(format!("{prefix}session/touch_batch{suffix}"));
    batches.sample_size(10);
    for n in [1_000_usize, 10_000] {
        let site = store.site();
        let clock = ManualClock::ago(Duration::ZERO);
        let layer = site.open_with(clock.clone());
        let keys: Vec<SessionKey> = (0..n)
            .map(|i| SessionKey::of(format!("known-{i}").as_bytes()))
            .collect();
        layer.touch_sessions(&keys).expect("touch");
        batches.throughput(Throughput::Elements(n as u64));
        batches.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    clock.advance(Duration::from_secs(5));
                    let started = read();
                    layer.touch_sessions(&keys).expect("touch");
                    spent += read().saturating_sub(started);
                }
                spent
            })
        });
    }
    batches.finish();
}

/// A connection of the benchmark's own to `url` (plain: the test
/// cluster's URL says `sslmode=disable`), with the runtime it runs on.
#[cfg(feature = "postgres")]
fn connect(url: &str) -> (tokio::runtime::Runtime, tokio_postgres::Client) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let client = rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect to $MANAGE_TEST_DATABASE_URL (sslmode=disable)");
        tokio::spawn(connection);
        client
    });
    (rt, client)
}

/// The round trip every PostgreSQL statement pays: `SELECT 1` on an open
/// connection of the benchmark's own.
#[cfg(feature = "postgres")]
fn floor<M: Measurement>(c: &mut Criterion<M>, store: &Store) {
    let Store::Postgres(_, url) = store else {
        return;
    };
    let (rt, client) = connect(url);
    let mut group = c.benchmark_group("postgres/floor");
    group.bench_function("select_1", |b| {
        b.iter(|| {
            rt.block_on(client.simple_query("SELECT 1"))
                .expect("SELECT 1")
        })
    });
    group.finish();
}

#[cfg(not(feature = "postgres"))]
fn floor<M: Measurement>(_: &mut Criterion<M>, _: &Store) {}

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

/// The table's rows: group, benchmark id, the figure, the target (file
/// backend, ns).
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
        "status, 10,000 sessions touched at once",
        None,
    ),
    (
        "sessions/summary",
        "10000",
        "session summary, 10,000 sessions",
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
    (
        "session/touch_batch",
        "1000",
        "a layer's batch of 1,000 repeat touches",
        None,
    ),
    (
        "session/touch_batch",
        "10000",
        "a layer's batch of 10,000 repeat touches",
        None,
    ),
    ("floor", "select_1", "SELECT 1 on an open connection", None),
];

/// Criterion's median of `group`/`id`, if this run measured it.
fn median(home: &std::path::Path, group: &str, id: &str, since: SystemTime) -> Option<f64> {
    let file = home
        .join(group.replace('/', "_"))
        .join(id)
        .join("new/estimates.json");
    // Only what this run measured.
    let fresh = std::fs::metadata(&file)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t >= since);
    fresh
        .then(|| std::fs::read(&file).ok())
        .flatten()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["median"]["point_estimate"].as_f64())
}

/// Prints each figure this run measured (criterion's median) on each
/// backend, beside the file backend's target; a batch's row also says how
/// many touches per second that makes.
// The table is this benchmark's report, on standard output as criterion's.
#[allow(clippy::print_stdout)]
fn print_table(suffix: &str, since: SystemTime) {
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
    let per_second = |ns: f64, id: &str| {
        id.parse::<f64>()
            .ok()
            .map(|n| format!(" ({:.0} k/s)", n / ns * 1e6))
            .unwrap_or_default()
    };
    let mut lines = Vec::new();
    for (group, id, what, target) in ROWS {
        let file = median(&home, &format!("{group}{suffix}"), id, since);
        let pg = median(&home, &format!("postgres/{group}{suffix}"), id, since);
        if file.is_none() && pg.is_none() {
            continue;
        }
        let batch = group.ends_with("touch_batch");
        let cell = |m: Option<f64>| match m {
            Some(ns) if batch => format!("{}{}", format(ns), per_second(ns, id)),
            Some(ns) => format(ns),
            None => "—".to_owned(),
        };
        let (target, verdict) = match (target, file) {
            (Some(t), Some(m)) => (
                format!("≤ {}", format(*t)),
                if m <= *t { "met" } else { "MISSED" },
            ),
            (Some(t), None) => (format!("≤ {}", format(*t)), ""),
            (None, _) => ("—".to_owned(), ""),
        };
        lines.push(format!(
            "{:<44} {:>20}  {:>20}  {:>9}  {verdict}",
            format!("{what}{suffix}"),
            cell(file),
            cell(pg),
            target
        ));
    }
    if !lines.is_empty() {
        println!(
            "\n{:<44} {:>20}  {:>20}  {:>9}",
            "figure (median)", "file", "postgres", "target (file)"
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
        for store in stores(true) {
            touch(&mut c, &store, "@cpu");
            status(&mut c, &store, "@cpu");
        }
        c.final_summary();
        print_table("@cpu", since);
    } else {
        let mut c = Criterion::default().configure_from_args();
        for store in stores(false) {
            floor(&mut c, &store);
            touch(&mut c, &store, "");
            status(&mut c, &store, "");
        }
        c.final_summary();
        print_table("", since);
    }
}
