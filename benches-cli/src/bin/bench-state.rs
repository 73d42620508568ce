//! Prepares a state directory for a benchmark:
//!
//! - `bench-state sessions DIR N [SPREAD_SECS]`: records N live web sessions
//!   through `Backend::touch_session`, their last activity spread evenly over
//!   the last SPREAD_SECS seconds (default 600: one 5-second bucket
//!   directory per 5 seconds, as on a busy site), so all stay live for the
//!   default 900 s timeout minus SPREAD_SECS;
//! - `bench-state hold DIR N READY_FILE`: starts N live tasks (concurrent
//!   policy), creates READY_FILE, and holds them until killed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use maintenance_core::policy::Instances;
use maintenance_core::session::SessionKey;
use maintenance_core::{
    Backend, CommandTask, Config, FileBackend, ManualClock, Policy, SystemClock, TaskOptions,
};

fn usage() -> anyhow::Result<()> {
    bail!("usage: bench-state sessions DIR N [SPREAD_SECS] | bench-state hold DIR N READY_FILE")
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    match (arg(0), arg(1), arg(2)) {
        (Some("sessions"), Some(dir), Some(n)) => {
            let spread: u64 = arg(3).map_or(Ok(600), str::parse)?;
            sessions(dir, n.parse()?, Duration::from_secs(spread))
        }
        (Some("hold"), Some(dir), Some(n)) => match arg(3) {
            Some(ready) => hold(dir, n.parse()?, ready),
            None => usage(),
        },
        _ => usage(),
    }
}

fn sessions(dir: &str, n: u64, spread: Duration) -> anyhow::Result<()> {
    let clock = ManualClock::ago(spread);
    let backend = FileBackend::open(&Config::with_state_dir(dir), clock.clone())
        .context("open the state directory")?;
    let mut at = Duration::ZERO;
    for i in 0..n {
        let next = spread.mul_f64(i as f64 / n.max(1) as f64);
        clock.advance(next.saturating_sub(at));
        at = next;
        let key = SessionKey::of(format!("bench-session-{i}").as_bytes());
        backend.touch_session(&key)?;
    }
    Ok(())
}

fn hold(dir: &str, n: usize, ready: &str) -> anyhow::Result<()> {
    let backend: Arc<dyn Backend> = Arc::new(
        FileBackend::open(&Config::with_state_dir(dir), SystemClock::shared())
            .context("open the state directory")?,
    );
    let policy = Policy::DEFAULT.instances(Instances::Concurrent);
    let _tasks: Vec<CommandTask> = (0..n)
        .map(|i| {
            let options = TaskOptions::new(Arc::clone(&backend))
                .argv(["manage", "held", &format!("--part={i}")])
                .policy(policy);
            CommandTask::start("held", options)
        })
        .collect::<Result<_, _>>()?;
    std::fs::write(ready, b"ready\n").context("write the ready file")?;
    loop {
        std::thread::park();
    }
}
