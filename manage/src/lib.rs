//! The `manage` runner library. Until the command runner lands, [`run`]
//! reports the configuration and the state of the site: which state
//! directory is in use, its mode and its live tasks.

use std::io::Write;
use std::process::ExitCode;

use maintenance_core::config::{Config, Overrides};
use maintenance_core::{SystemClock, backend, exit};

// Linked so that the built-in commands' registrations are seen.
use commands as _;

/// Runs `manage` with the process's arguments and environment.
pub fn run() -> ExitCode {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    match report(&mut out) {
        Ok(()) => ExitCode::from(exit::SUCCESS),
        Err(e) => {
            let _ = writeln!(err, "error: {e:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

fn report(out: &mut dyn Write) -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--version" || a == "-V") {
        writeln!(out, "manage {}", env!("CARGO_PKG_VERSION"))?;
        return Ok(());
    }
    let config = Config::load(&Overrides::default())?;
    let backend = backend::open(&config, SystemClock::shared())?;
    let view = backend.mode()?;
    let tasks = backend.tasks()?;
    writeln!(out, "Status: {} - Active tasks: {}", view.mode, tasks.len())?;
    writeln!(
        out,
        "State: {} (from {})",
        config.state_dir.display(),
        config.state_dir_source
    )?;
    if let Some(lapse) = &view.lapsed {
        writeln!(out, "Note: {}", lapse.reason)?;
    }
    writeln!(
        out,
        "Commands arrive with the runner; until then manage only reports this status."
    )?;
    Ok(())
}
