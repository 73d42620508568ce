//! `manage offline off|deactivate`: ONLINE from any state, cancelling
//! another process's wait and a scheduled window; refused while an
//! `offline run` runs its command, unless `--force` (maintenance-core's
//! `offline::deactivate_cancelling`).

use maintenance_core::backend::ModeChange;
use maintenance_core::command::Context;
use maintenance_core::hooks::Hooks;
use maintenance_core::schedule::local_time;
use maintenance_core::transition::{self as offline, Live};
use maintenance_core::{anyhow, clap};

use super::status::status_line;

// The flags of `offline off`. (A plain comment: under the deferred
// verbs a doc comment here would replace the verb's own `--help` title.)
#[derive(Debug, clap::Args)]
pub(super) struct OffArgs {
    /// Go ONLINE even while an `offline run` is running its command.
    #[arg(long)]
    force: bool,
    /// Take back this host's local override (`offline on --local`), without
    /// changing the shared mode.
    #[arg(long, conflicts_with = "force")]
    local: bool,
}

/// Runs `offline off`: cancels a scheduled window (saying which), goes
/// ONLINE and prints the status line.
#[inline(never)]
pub(super) fn exec(ctx: &mut Context<'_>, args: &OffArgs) -> anyhow::Result<()> {
    if args.local {
        return super::local::off(ctx);
    }
    let backend = ctx.backend()?;
    let change = ModeChange::by_this_process().hooks(Hooks::from_config(ctx.config()));
    let (record, cancelled) =
        offline::deactivate_cancelling(backend.as_ref(), &change, args.force)?;
    if let Some(s) = cancelled.map(|c| c.schedule) {
        writeln!(
            ctx.out(),
            "Cancelled the {} window scheduled at {} by {} (pid {}).",
            super::on::window_kind(&s),
            local_time(s.at),
            s.by,
            s.pid
        )?;
    }
    let live = Live::read(backend.as_ref())?;
    writeln!(ctx.out(), "{}", status_line(record.mode, live.active()))?;
    Ok(())
}
