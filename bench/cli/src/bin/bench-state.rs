//! Prepares a state directory for a benchmark:
//!
//! - `bench-state sessions DIR N [SPREAD_SECS]`: records N live web sessions
//!   through `Backend::touch_session`, their last activity spread evenly over
//!   the last SPREAD_SECS seconds (default 600: one 5-second bucket
//!   directory per 5 seconds, as on a busy site), so all stay live for the
//!   default 900 s timeout minus SPREAD_SECS;
//! - `bench-state hold DIR N READY_FILE`: starts N live tasks (concurrent
//!   policy), creates READY_FILE, and holds them until killed.
//!
//! DIR is a state directory (the file backend), or a `manage.toml` (a path
//! ending in `.toml`): the backend that file names, PostgreSQL included,
//! where each held task is a connection of its own.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use maintenance_core::policy::Instances;
use maintenance_core::session::SessionKey;
use maintenance_core::{
    Backend, CommandTask, Config, ManualClock, Policy, SharedClock, SystemClock, TaskOptions,
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

/// The backend DIR names: a `manage.toml`'s, or the file backend in DIR.
fn open(dir: &str, clock: SharedClock) -> anyhow::Result<Arc<dyn Backend>> {
    let config = if dir.ends_with(".toml") {
        Config::from_file(dir).with_context(|| format!("read {dir}"))?
    } else {
        Config::with_state_dir(dir)
    };
    maintenance_core::backend::open(&config, clock)
        .with_context(|| format!("open the state of {dir}"))
}

/// Sessions touched together, at one instant: one statement on PostgreSQL.
const BATCH: u64 = 500;

fn sessions(dir: &str, n: u64, spread: Duration) -> anyhow::Result<()> {
    let clock = ManualClock::ago(spread);
    let backend = open(dir, clock.clone())?;
    let mut at = Duration::ZERO;
    for start in (0..n).step_by(BATCH as usize) {
        let next = spread.mul_f64(start as f64 / n.max(1) as f64);
        clock.advance(next.saturating_sub(at));
        at = next;
        let keys: Vec<SessionKey> = (start..n.min(start + BATCH))
            .map(|i| SessionKey::of(format!("bench-session-{i}").as_bytes()))
            .collect();
        backend.touch_sessions(&keys)?;
    }
    Ok(())
}

fn hold(dir: &str, n: usize, ready: &str) -> anyhow::Result<()> {
    let backend = open(dir, SystemClock::shared())?;
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
