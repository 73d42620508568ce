//! Benchmarks of maintenance-core's file backend, each on a fresh state
//! directory in a temporary directory:
//!
//! - `task/start_drop/*`: [`CommandTask::start`] then drop — a whole task's
//!   life, locks and task file included (target: median ≤ 40 µs, on ext4).
//!   The task file is a reused slot after the first iteration (Linux).
//! - `mode/read/*`: [`Backend::mode`] on an ONLINE site and on an OFFLINE
//!   one, i.e. what every web request's layer and every command start reads
//!   (target: ≤ 5 µs).
//! - `tasks/list/*`: [`Backend::tasks`] with 100 and 1,000 live tasks, held
//!   by this process (concurrent policy; every task file is probed with a
//!   shared try-lock and read).
//!
//! With the `postgres` feature and `$MANAGE_TEST_DATABASE_URL` set
//! (`scripts/pg-cluster start` prints one), `task/start_drop` also runs on
//! PostgreSQL, as `postgres/task/start_drop/*`: a task's own connection,
//! its lock, the gate and its row, each start (wall clock only: the work is
//! the server's).
//!
//! Run with `cargo bench -p maintenance-core --bench core` (add a filter such
//! as `-- mode/` to run some). Figures depend on the file system holding the
//! temporary directory (`$TMPDIR`). On a busy machine, `BENCH_CLOCK=cpu`
//! measures the benchmark thread's CPU time instead of wall-clock time,
//! under group names ending in `@cpu`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::measurement::Measurement;
use criterion::{BenchmarkId, Criterion, Throughput};
use maintenance_core::backend::ModeChange;
use maintenance_core::policy::Instances;
use maintenance_core::{
    Backend, CommandTask, Config, FileBackend, Mode, Policy, SystemClock, TaskOptions,
};
use tempfile::TempDir;

#[path = "shared/thread_cpu.rs"]
mod thread_cpu;

/// A fresh state directory and its backend; the directory goes with it.
fn site() -> (TempDir, Arc<dyn Backend>) {
    let dir = TempDir::new().expect("temporary directory");
    let config = Config::with_state_dir(dir.path().join("state"));
    let backend = FileBackend::open(&config, SystemClock::shared()).expect("open the state");
    (dir, Arc::new(backend))
}

/// Enough descriptors for 1,000 live tasks, where the soft limit is low.
fn raise_fd_limit(needed: u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|soft| soft < needed) {
        limit.current = Some(limit.maximum.map_or(needed, |hard| hard.min(needed)));
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

/// A fresh PostgreSQL site on `$MANAGE_TEST_DATABASE_URL`'s server, when
/// one is named.
#[cfg(feature = "postgres")]
fn postgres_site() -> Option<(TempDir, Arc<dyn Backend>)> {
    let url = std::env::var("MANAGE_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())?;
    let dir = TempDir::new().expect("temporary directory");
    let mut config = Config::with_state_dir(dir.path().join("state"));
    config.backend = maintenance_core::config::BackendKind::Postgres;
    config.postgres.url = Some(
        maintenance_core::DatabaseUrl::parse(&url)
            .unwrap_or_else(|e| panic!("$MANAGE_TEST_DATABASE_URL: {e}")),
    );
    config.postgres.schema = "manage_bench".into();
    config.postgres.site = format!(
        "bench-core-{}-{}",
        std::process::id(),
        maintenance_core::random::hex::<8>()
    );
    let backend =
        maintenance_core::backend::open(&config, SystemClock::shared()).expect("open postgres");
    Some((dir, backend))
}

#[cfg(not(feature = "postgres"))]
fn postgres_site() -> Option<(TempDir, Arc<dyn Backend>)> {
    None
}

fn task_start_drop<M: Measurement>(c: &mut Criterion<M>, suffix: &str) {
    start_drop_on(c, &format!("task/start_drop{suffix}"), site);
    if suffix.is_empty() && postgres_site().is_some() {
        start_drop_on(c, "postgres/task/start_drop", || {
            postgres_site().expect("the server named a moment ago")
        });
    }
}

fn start_drop_on<M: Measurement>(
    c: &mut Criterion<M>,
    name: &str,
    site: impl Fn() -> (TempDir, Arc<dyn Backend>),
) {
    let mut group = c.benchmark_group(name);
    for (label, instances) in [
        ("single", Instances::Single),
        ("concurrent", Instances::Concurrent),
    ] {
        let (_dir, backend) = site();
        let policy = Policy::DEFAULT.instances(instances);
        group.bench_function(label, |b| {
            b.iter(|| {
                let options = TaskOptions::new(Arc::clone(&backend))
                    .argv(["manage", "bench"])
                    .policy(policy);
                let task = CommandTask::start("bench", options).expect("task starts");
                black_box(&task);
                drop(task);
            })
        });
        // No leftovers: every drop removed its task file.
        assert!(backend.tasks().expect("list").is_empty());
    }
    group.finish();
}

fn mode_read<M: Measurement>(c: &mut Criterion<M>, suffix: &str) {
    let mut group = c.benchmark_group(format!("mode/read{suffix}"));
    let change = ModeChange::by_this_process().message(Some("Back soon".into()));
    // ONLINE as a site is after its first window: a stored record. A site
    // never taken offline has none (one failed open fewer).
    let (_online_dir, online) = site();
    online.force_offline(&change).expect("offline");
    online.go_online(&change).expect("online");
    let (_offline_dir, offline) = site();
    offline.force_offline(&change).expect("offline");
    let (_fresh_dir, fresh) = site();
    for (label, backend, mode) in [
        ("online", &online, Mode::Online),
        ("offline", &offline, Mode::Offline),
        ("online_never_offline", &fresh, Mode::Online),
    ] {
        let view = backend.mode().expect("mode");
        assert_eq!(view.mode, mode);
        assert!(view.stray_marker.is_none(), "{view:?}");
        group.bench_function(label, |b| {
            b.iter(|| black_box(backend.mode().expect("mode")))
        });
    }
    group.finish();
}

fn tasks_list<M: Measurement>(c: &mut Criterion<M>, suffix: &str) {
    raise_fd_limit(4096);
    let mut group = c.benchmark_group(format!("tasks/list{suffix}"));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    let policy = Policy::DEFAULT.instances(Instances::Concurrent);
    for n in [100_usize, 1_000] {
        let (_dir, backend) = site();
        let live: Vec<CommandTask> = (0..n)
            .map(|i| {
                let options = TaskOptions::new(Arc::clone(&backend))
                    .argv(["manage", "bench", &format!("--part={i}")])
                    .policy(policy);
                CommandTask::start("bench", options).expect("task starts")
            })
            .collect();
        assert_eq!(backend.tasks().expect("list").len(), n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| {
                let tasks = backend.tasks().expect("list");
                debug_assert_eq!(tasks.len(), n);
                black_box(tasks)
            })
        });
        drop(live);
    }
    group.finish();
}

// By hand rather than `criterion_group!`, whose public function would need
// a doc comment the macro cannot carry.
fn main() {
    if thread_cpu::wanted() {
        let mut c = Criterion::default()
            .with_measurement(thread_cpu::ThreadCpu)
            .configure_from_args();
        run(&mut c, "@cpu");
        c.final_summary();
    } else {
        let mut c = Criterion::default().configure_from_args();
        run(&mut c, "");
        c.final_summary();
    }
}

fn run<M: Measurement>(c: &mut Criterion<M>, suffix: &str) {
    task_start_drop(c, suffix);
    mode_read(c, suffix);
    tasks_list(c, suffix);
}
