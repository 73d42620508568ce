//! Measures how fast `offline::activate` reacts (the target: within
//! 100 ms):
//!
//! - `drop`: a task held by another process ends normally (its guard is
//!   dropped) → time until `activate` returns OFFLINE;
//! - `kill`: the process holding the task is killed with SIGKILL → time
//!   until `activate` returns OFFLINE;
//! - `cancel`: another process calls `offline::deactivate` while the waiter
//!   is held off by a task → time until `activate` returns cancelled.
//!
//! Each run starts a fresh child (`reaction hold DIR`, this same binary)
//! holding one task, starts `activate` (settle 0) in this process, waits
//! until the site is PENDING and a further 30–230 ms (varied, so the end
//! never lines up with the waiter's polling ticks), then ends the task. The
//! end is timed in the process that causes it, on `CLOCK_MONOTONIC`, which
//! every process on the host shares.
//!
//! Usage: `reaction [RUNS]` (default 40 per scenario); prints one line per
//! scenario with the median and the 90th percentile. With
//! `$MANAGE_DATABASE_URL` set, the same runs on the PostgreSQL backend (a
//! site of its own on that server, named after the temporary directory),
//! so `bench/cli/run.sh` prints both side by side.
#![allow(
    clippy::print_stdout,
    reason = "a measuring program prints its figures"
)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use bench_cli::{monotonic_ns, summary_ms};
use maintenance_core::backend::ModeChange;
use maintenance_core::config::BackendKind;
use maintenance_core::policy::Instances;
use maintenance_core::transition::{self as offline, Activation, Outcome};
use maintenance_core::{
    Backend, CommandTask, Config, DatabaseUrl, FileBackend, Mode, Policy, SystemClock, TaskOptions,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Drop,
    Kill,
    Cancel,
}

fn open(dir: &str) -> anyhow::Result<Arc<dyn Backend>> {
    let mut config = Config::with_state_dir(dir);
    if let Ok(url) = std::env::var("MANAGE_DATABASE_URL") {
        config.backend = BackendKind::Postgres;
        config.postgres.url = Some(
            DatabaseUrl::parse(&url).map_err(|e| anyhow::anyhow!("$MANAGE_DATABASE_URL: {e}"))?,
        );
        // The same site in the measuring process and its holders: they
        // share the directory's name.
        config.postgres.site = format!("reaction{}", dir.replace('/', "-"));
        return maintenance_core::backend::open(&config, SystemClock::shared())
            .context("open the postgres backend");
    }
    Ok(Arc::new(
        FileBackend::open(&config, SystemClock::shared()).context("open the state directory")?,
    ))
}

/// Which backend the runs use, for the report.
fn backend_name() -> &'static str {
    if std::env::var_os("MANAGE_DATABASE_URL").is_some() {
        "postgres"
    } else {
        "file"
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("hold") => hold(args.get(1).context("usage: reaction hold DIR")?),
        runs => measure(runs.map_or(Ok(40), str::parse)?),
    }
}

/// The child: holds one task until told to end it (`end`) or to turn the
/// site ONLINE (`cancel`); prints the monotonic time taken just before.
fn hold(dir: &str) -> anyhow::Result<()> {
    let backend = open(dir)?;
    let options = TaskOptions::new(Arc::clone(&backend))
        .argv(["manage", "reaction-held"])
        .policy(Policy::DEFAULT.instances(Instances::Concurrent));
    let task = CommandTask::start("reaction-held", options)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    let mut task = Some(task);
    for line in std::io::stdin().lock().lines() {
        match line?.as_str() {
            "end" => {
                let t = monotonic_ns();
                drop(task.take());
                writeln!(out, "{t}")?;
                out.flush()?;
            }
            "cancel" => {
                let t = monotonic_ns();
                offline::deactivate(backend.as_ref(), &ModeChange::by_this_process(), false)?;
                writeln!(out, "{t}")?;
                out.flush()?;
            }
            other => bail!("unknown instruction {other:?}"),
        }
    }
    Ok(())
}

struct Holder {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Holder {
    fn spawn(dir: &str) -> anyhow::Result<Holder> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["hold", dir])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("start the holding child")?;
        let stdin = child.stdin.take().context("child stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("child stdout")?);
        let mut h = Holder {
            child,
            stdin,
            stdout,
        };
        ensure!(h.line()? == "ready", "the child did not start its task");
        Ok(h)
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        Ok(line.trim().to_owned())
    }

    /// Tells the child to do `what`; returns the time it took just before.
    fn tell(&mut self, what: &str) -> anyhow::Result<u64> {
        writeln!(self.stdin, "{what}")?;
        self.stdin.flush()?;
        Ok(self.line()?.parse()?)
    }
}

/// One run: returns the reaction time in milliseconds.
fn run_once(
    dir: &str,
    backend: &Arc<dyn Backend>,
    scenario: Scenario,
    run: u64,
) -> anyhow::Result<f64> {
    ensure!(backend.mode()?.mode == Mode::Online, "not ONLINE at start");
    let mut holder = Holder::spawn(dir)?;
    let waiter = {
        let backend = Arc::clone(backend);
        std::thread::spawn(move || -> anyhow::Result<(Outcome, u64)> {
            let activation = Activation {
                change: ModeChange::by_this_process(),
                timeout: Duration::from_secs(30),
                grace: None,
                settle: Duration::ZERO,
            };
            let outcome = offline::activate(backend.as_ref(), &activation, &|| false, &mut |_| {})?;
            Ok((outcome, monotonic_ns()))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while backend.mode()?.mode != Mode::Pending {
        ensure!(Instant::now() < deadline, "activate never went PENDING");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(30 + (run * 37) % 200));
    let start = match scenario {
        Scenario::Drop => holder.tell("end")?,
        Scenario::Cancel => holder.tell("cancel")?,
        Scenario::Kill => {
            let t = monotonic_ns();
            holder.child.kill()?;
            t
        }
    };
    let (outcome, done) = waiter
        .join()
        .map_err(|_| anyhow::anyhow!("the waiter panicked"))??;
    match (scenario, &outcome) {
        (Scenario::Drop | Scenario::Kill, Outcome::Offline { .. })
        | (Scenario::Cancel, Outcome::Cancelled { .. }) => {}
        _ => bail!("{scenario:?}: unexpected outcome {outcome:?}"),
    }
    drop(holder.stdin);
    holder.child.wait()?;
    backend.go_online(&ModeChange::by_this_process())?;
    backend.reap()?;
    Ok(done.saturating_sub(start) as f64 / 1e6)
}

fn measure(runs: u64) -> anyhow::Result<()> {
    let tmp = tempfile::TempDir::new()?;
    let dir = tmp.path().join("state");
    let dir = dir.to_str().context("a UTF-8 temporary path")?.to_owned();
    let backend = open(&dir)?;
    println!(
        "reaction ({}): {runs} runs per scenario, state in {dir}, settle 0, release 30-230 ms into PENDING",
        backend_name()
    );
    for (label, scenario) in [
        ("drop  ", Scenario::Drop),
        ("kill  ", Scenario::Kill),
        ("cancel", Scenario::Cancel),
    ] {
        let mut samples = (0..runs)
            .map(|run| run_once(&dir, &backend, scenario, run))
            .collect::<anyhow::Result<Vec<f64>>>()?;
        println!(
            "reaction {} {label} {}",
            backend_name(),
            summary_ms(&mut samples)
        );
    }
    Ok(())
}
