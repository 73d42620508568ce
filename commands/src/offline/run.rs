//! `manage offline run`: goes offline (or, with `--read-only`, read-only) as
//! `offline on` does (same flags, same wait, same reports, and `--at` to
//! schedule it: on.rs), runs one command inside the window, then restores
//! the mode it found (maintenance-core's `offline::run_in_window_to`). A run
//! started while a window is scheduled keeps that schedule, and says so.

use maintenance_core::backend::{Backend, ModeChange, ScheduleLease};
use maintenance_core::command::{CallOptions, Context, Exit};
use maintenance_core::hooks::Hooks;
use maintenance_core::mode::Mode;
use maintenance_core::schedule::local_time;
use maintenance_core::transition::{
    self as offline, Progress, RunOutcome, Target, WindowObserver, WindowStep,
};
use maintenance_core::{anyhow, clap, exit};

use super::on::{
    ScheduleArgs, WaitArgs, activation, not_offline, refuse_inside_task, schedule_window,
    wait_for_time, window_kind,
};
use super::progress::Meter;

// The flags of `offline run`. (A plain comment: under the deferred
// verbs a doc comment here would replace the verb's own `--help` title.)
#[derive(Debug, clap::Args)]
pub(super) struct RunArgs {
    #[command(flatten)]
    wait: WaitArgs,
    #[command(flatten)]
    schedule: ScheduleArgs,
    /// The command to run inside the window, and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// Runs `offline run`.
#[inline(never)]
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
    let change = ModeChange::by_this_process().hooks(Hooks::from_config(ctx.config()));
    let a = activation(ctx, &args.wait, change, None);
    let mut scheduled = match args.schedule.at {
        Some(at) => {
            let mut lease = schedule_window(
                ctx,
                backend,
                &args.schedule,
                at,
                &a.change,
                args.wait.target(),
                Some(&args.command),
            )?;
            wait_for_time(ctx, backend, &a.change, lease.as_mut())?;
            Some(lease)
        }
        None => {
            if let Some(s) = backend.schedule()? {
                writeln!(
                    ctx.err(),
                    "note: the {} window scheduled at {} by {} (pid {}) stays scheduled; \
                     this run goes {} now and puts the site back as it found it",
                    window_kind(&s),
                    local_time(s.at),
                    s.by,
                    s.pid,
                    match args.wait.target() {
                        Target::Offline => "offline",
                        Target::ReadOnly => "read-only",
                    }
                )?;
            }
            None
        }
    };
    let meter = Meter::new(ctx, backend.session_timeout(), args.wait.timeout);
    let mut window = Window {
        ctx: &mut *ctx,
        meter,
        argv: &args.command,
    };
    let outcome = match scheduled.as_mut() {
        Some(lease) => offline::run_in_window_scheduled(
            backend,
            &mut **lease as &mut dyn ScheduleLease,
            &a,
            &args.command,
            &mut window,
        )?,
        None => offline::run_in_window_to(
            backend,
            &a,
            args.wait.target(),
            args.wait.force,
            &args.command,
            &mut window,
        )?,
    };
    let Window { mut meter, .. } = window;
    match outcome {
        RunOutcome::Ran { code, .. } => {
            if code == exit::SUCCESS {
                Ok(())
            } else {
                Err(Exit(code).into())
            }
        }
        RunOutcome::HoldLost { code, why } => {
            writeln!(
                ctx.err(),
                "error: `offline run` lost its hold on the maintenance window while the command \
                 ran (it exited with {code}) and could not take it back: {why}. The mode was \
                 left as it is: see `offline status`, and `offline off` once the site may go \
                 back online."
            )?;
            Err(Exit(exit::HOLD_LOST).into())
        }
        RunOutcome::NotRun(outcome) => {
            meter.finish(ctx.out());
            let code = not_offline(ctx, &outcome, a.timeout)?;
            Err(Exit(code).into())
        }
    }
}

/// The run as its observer sees it: the wait is drawn on the context's
/// standard output, then the command writes through the same context.
struct Window<'w, 'c> {
    ctx: &'w mut Context<'c>,
    meter: Meter,
    argv: &'w [String],
}

impl WindowObserver for Window<'_, '_> {
    fn stop_requested(&self) -> bool {
        self.ctx.stop_requested()
    }

    fn progress(&mut self, progress: Progress<'_>) {
        self.meter.update(self.ctx.out(), &progress);
    }

    /// With `-v`, each mode change on stderr, as it happens.
    fn mode_changed(&mut self, step: WindowStep) {
        if self.ctx.verbosity() <= 0 {
            return;
        }
        let running = format!("running `{}` inside the window", self.argv.join(" "));
        let line = match step {
            WindowStep::Pending => {
                "PENDING: nobody new gets in; waiting for what is live to end".to_owned()
            }
            WindowStep::ReadOnlyPending => {
                "READONLY_PENDING: writes are refused; waiting for what may write to end".to_owned()
            }
            WindowStep::ReadOnly { forced: false } => format!("READONLY: {running}"),
            WindowStep::ReadOnly { forced: true } => {
                format!("READONLY at once (--force): {running}")
            }
            WindowStep::AlreadyReadOnly => {
                format!("already READONLY: {running}; the site stays READONLY")
            }
            WindowStep::Offline { forced: false } => format!("OFFLINE: {running}"),
            WindowStep::Offline { forced: true } => {
                format!("OFFLINE at once (--force): {running}")
            }
            WindowStep::AlreadyOffline => {
                format!("already OFFLINE: {running}; the site stays OFFLINE")
            }
            WindowStep::Restored(Mode::Offline) => "left OFFLINE, as it was found".to_owned(),
            WindowStep::Restored(mode) => format!("restored to {mode}"),
        };
        self.meter.finish(self.ctx.out());
        let _ = writeln!(self.ctx.err(), "offline run: {line}");
    }

    fn run_command(&mut self) -> anyhow::Result<u8> {
        self.meter.finish(self.ctx.out());
        self.ctx.call(self.argv, CallOptions { in_window: true })
    }
}
