//! `manage offline run`: goes offline as `offline on` does (same flags, same
//! wait, same reports: on.rs), runs one command inside the window, then
//! restores the mode it found (maintenance-core's `offline::run_in_window`).

use maintenance_core::backend::{Backend, ModeChange};
use maintenance_core::command::{CallOptions, Context, Exit};
use maintenance_core::offline::{self, RunOutcome};
use maintenance_core::{anyhow, clap, exit};

use super::on::{WaitArgs, activation, not_offline, refuse_inside_task};
use super::progress::Meter;

/// The flags of `offline run`.
#[derive(Debug, clap::Args)]
pub(super) struct RunArgs {
    #[command(flatten)]
    wait: WaitArgs,
    /// The command to run inside the window, and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// Runs `offline run`.
pub(super) fn exec(ctx: &mut Context<'_>, args: RunArgs) -> anyhow::Result<()> {
    let backend = ctx.backend()?;
    let backend: &dyn Backend = backend.as_ref();
    refuse_inside_task(ctx, backend)?;
    // A typo in a deploy script must not take the site offline first.
    if let Err(problem) = ctx.check_call(&args.command) {
        writeln!(
            ctx.err(),
            "error: {problem}\nThe site was not taken offline."
        )?;
        return Err(Exit(exit::USAGE).into());
    }
    let a = activation(ctx, &args.wait, ModeChange::by_this_process(), None);
    let stop = ctx.stop_token().clone();
    let meter = std::cell::RefCell::new(Meter::new(ctx, backend.session_timeout()));
    let argv = args.command.clone();
    let outcome = {
        // The wait draws on stdout; the command then writes through the
        // same context.
        let ctx_cell = std::cell::RefCell::new(&mut *ctx);
        offline::run_in_window(
            backend,
            &a,
            args.wait.force,
            &argv,
            &|| stop.requested(),
            &mut |p| meter.borrow_mut().update(ctx_cell.borrow_mut().out(), &p),
            &mut || {
                let mut c = ctx_cell.borrow_mut();
                meter.borrow_mut().finish(c.out());
                c.call(&argv, CallOptions { in_window: true })
            },
        )?
    };
    match outcome {
        RunOutcome::Ran { code, .. } => {
            if code == exit::SUCCESS {
                Ok(())
            } else {
                Err(Exit(code).into())
            }
        }
        RunOutcome::NotRun(outcome) => {
            meter.borrow_mut().finish(ctx.out());
            let code = not_offline(ctx, &outcome, a.timeout)?;
            Err(Exit(code).into())
        }
    }
}
