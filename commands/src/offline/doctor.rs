//! `manage offline doctor`: checks the state directory as the running user
//! sees it (maintenance-core's file-backend doctor) and prints one line a
//! finding. It never opens the backend, which refuses an unsafe state: that
//! refusal is what doctor explains.

use maintenance_core::command::{Context, Exit};
use maintenance_core::{anyhow, exit};

/// Runs `offline doctor`: one line a finding; exit 0 when healthy, 1
/// otherwise.
#[inline(never)]
pub(super) fn exec(ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let config = ctx.config().clone();
    let findings = maintenance_core::backend::file::doctor(&config);
    let problems = findings.iter().filter(|f| f.problem).count();
    let out = ctx.out();
    for f in &findings {
        writeln!(
            out,
            "{}: {}",
            if f.problem { "problem" } else { "note" },
            f.text
        )?;
    }
    if problems == 0 {
        writeln!(out, "healthy: {}", config.state_dir.display())?;
        Ok(())
    } else {
        writeln!(
            out,
            "{problems} problem{} in {}",
            if problems == 1 { "" } else { "s" },
            config.state_dir.display()
        )?;
        Err(Exit(exit::FAILURE).into())
    }
}
