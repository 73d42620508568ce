//! Commands that exist only for the end-to-end tests, linked into the
//! `e2e-manage` binary: a sleeper that honours the stop request, a command
//! that looks at `ctx.stop_requested()` (or ignores it), a panic, an
//! error with causes, nested calls (one passing the callee's exit code on),
//! and a few policies.

use std::time::Duration;

use maintenance_core::command::{CallOptions, Context, Exit, ManageCommand, register};
use maintenance_core::policy::{Instances, Maintenance, Policy, Tracking};
use maintenance_core::{anyhow, clap};

/// Writes a line and flushes it, so a test reading the pipe sees it now.
fn say(ctx: &mut Context<'_>, line: &str) -> anyhow::Result<()> {
    writeln!(ctx.out(), "{line}")?;
    ctx.out().flush()?;
    Ok(())
}

fn sleep_until_stopped(ctx: &mut Context<'_>, secs: u64) -> anyhow::Result<()> {
    let id = ctx
        .task()
        .map(|t| t.id.clone())
        .unwrap_or_else(|| "untracked".into());
    say(ctx, &format!("started {id}"))?;
    if ctx.stop_token().wait_timeout(Duration::from_secs(secs)) {
        say(ctx, "stopping")?;
    } else {
        say(ctx, "slept")?;
    }
    Ok(())
}

/// Sleeps until asked to stop (single instance).
#[derive(Debug, clap::Args)]
pub struct Sleeper {
    /// The longest sleep.
    #[arg(long, default_value_t = 60)]
    secs: u64,
}

impl ManageCommand for Sleeper {
    const NAME: &'static str = "sleeper";
    fn run(self, ctx: &mut Context<'_>) -> anyhow::Result<()> {
        sleep_until_stopped(ctx, self.secs)
    }
}
register!(Sleeper);

/// Sleeps until asked to stop (any number at once).
#[derive(Debug, clap::Args)]
pub struct SleeperMany {
    /// The longest sleep.
    #[arg(long, default_value_t = 60)]
    secs: u64,
}

impl ManageCommand for SleeperMany {
    const NAME: &'static str = "sleeper-many";
    const POLICY: Policy = Policy::DEFAULT.instances(Instances::Concurrent);
    fn run(self, ctx: &mut Context<'_>) -> anyhow::Result<()> {
        sleep_until_stopped(ctx, self.secs)
    }
}
register!(SleeperMany);

/// What [`StopWatcher`] exits with when it notices the stop request: a
/// code of its own, neither the runner's nor a signal's.
pub const NOTICED_STOP: u8 = 3;

/// Says `started <task-id>`, then looks at `ctx.stop_requested()` every
/// 10 ms: once it turns true, says `noticed the stop request` and exits
/// [`NOTICED_STOP`] — unless `--ignore-stop`, when it sleeps on (up to
/// `--secs`) as a command that never looks would.
#[derive(Debug, clap::Args)]
pub struct StopWatcher {
    /// Never stops on the request.
    #[arg(long)]
    ignore_stop: bool,
    /// The longest sleep.
    #[arg(long, default_value_t = 120)]
    secs: u64,
}

impl ManageCommand for StopWatcher {
    const NAME: &'static str = "stop-watcher";
    fn run(self, ctx: &mut Context<'_>) -> anyhow::Result<()> {
        let id = ctx.task().map(|t| t.id.clone()).unwrap_or_default();
        say(ctx, &format!("started {id}"))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(self.secs);
        while std::time::Instant::now() < deadline {
            if !self.ignore_stop && ctx.stop_requested() {
                say(ctx, "noticed the stop request")?;
                return Err(Exit(NOTICED_STOP).into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        say(ctx, "slept")
    }
}
register!(StopWatcher);

/// Sleeps, untracked: never holds maintenance off, never refused.
#[derive(Debug, clap::Args)]
pub struct Idler {
    /// The longest sleep.
    #[arg(long, default_value_t = 60)]
    secs: u64,
}

impl ManageCommand for Idler {
    const NAME: &'static str = "idler";
    const POLICY: Policy = Policy::DEFAULT.tracking(Tracking::Untracked);
    fn run(self, ctx: &mut Context<'_>) -> anyhow::Result<()> {
        sleep_until_stopped(ctx, self.secs)
    }
}
register!(Idler);

/// Panics.
#[derive(Debug, clap::Args)]
pub struct Boom {}

impl ManageCommand for Boom {
    const NAME: &'static str = "boom";
    fn run(self, _ctx: &mut Context<'_>) -> anyhow::Result<()> {
        panic!("boom goes the command");
    }
}
register!(Boom);

/// Recurses until the main thread's stack overflows.
#[derive(Debug, clap::Args)]
pub struct Overflow {}

/// One level of [`Overflow`]'s recursion, with a frame the optimiser keeps.
#[allow(unconditional_recursion)]
fn deeper(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 64]);
    deeper(std::hint::black_box(depth + 1)) + frame[7]
}

impl ManageCommand for Overflow {
    const NAME: &'static str = "overflow";
    fn run(self, _ctx: &mut Context<'_>) -> anyhow::Result<()> {
        let _ = deeper(0);
        Ok(())
    }
}
register!(Overflow);

/// Reads through a null pointer: a fault that is no stack overflow.
#[derive(Debug, clap::Args)]
pub struct NullRead {}

impl ManageCommand for NullRead {
    const NAME: &'static str = "null-read";
    fn run(self, _ctx: &mut Context<'_>) -> anyhow::Result<()> {
        // SAFETY: none: the read faults, which is the point.
        let n = unsafe { std::ptr::read_volatile(std::hint::black_box(std::ptr::null::<u64>())) };
        anyhow::bail!("read {n} through a null pointer")
    }
}
register!(NullRead);

/// Fails with an error that has a cause.
#[derive(Debug, clap::Args)]
pub struct Fail {}

impl ManageCommand for Fail {
    const NAME: &'static str = "fail";
    fn run(self, _ctx: &mut Context<'_>) -> anyhow::Result<()> {
        Err(anyhow::anyhow!("disk full").context("cannot write the report"))
    }
}
register!(Fail);

/// Runs another command through the runner and prints its exit code.
#[derive(Debug, clap::Args)]
pub struct Call {
    /// Inside the maintenance window, as `offline run` calls.
    #[arg(long)]
    in_window: bool,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    argv: Vec<String>,
}

impl ManageCommand for Call {
    const NAME: &'static str = "call";
    const POLICY: Policy = Policy::DEFAULT.tracking(Tracking::Untracked);
    fn run(self, ctx: &mut Context<'_>) -> anyhow::Result<()> {
        let code = ctx.call(
            &self.argv,
            CallOptions {
                in_window: self.in_window,
            },
        )?;
        say(ctx, &format!("exit {code}"))
    }
}
register!(Call);

/// Runs another command through the runner and exits with its exit code,
/// as a deploy step that wraps another command would.
#[derive(Debug, clap::Args)]
pub struct Relay {
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    argv: Vec<String>,
}

impl ManageCommand for Relay {
    const NAME: &'static str = "relay";
    const POLICY: Policy = Policy::DEFAULT.tracking(Tracking::Untracked);
    fn run(self, ctx: &mut Context<'_>) -> anyhow::Result<()> {
        let code = ctx.call(&self.argv, CallOptions::default())?;
        match code {
            0 => Ok(()),
            code => Err(Exit(code).into()),
        }
    }
}
register!(Relay);

/// Runs another command inside its own task and prints both tasks' ids.
#[derive(Debug, clap::Args)]
pub struct Nest {
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    argv: Vec<String>,
}

impl ManageCommand for Nest {
    const NAME: &'static str = "nest";
    const POLICY: Policy = Policy::DEFAULT.instances(Instances::Concurrent);
    fn run(self, ctx: &mut Context<'_>) -> anyhow::Result<()> {
        let id = ctx.task().map(|t| t.id.clone()).unwrap_or_default();
        say(ctx, &format!("outer {id}"))?;
        let code = ctx.call(&self.argv, CallOptions::default())?;
        say(ctx, &format!("exit {code}"))
    }
}
register!(Nest);

/// Prints the task it runs in: its id, or `untracked`.
#[derive(Debug, clap::Args)]
pub struct TaskInfo {}

impl ManageCommand for TaskInfo {
    const NAME: &'static str = "task-info";
    const POLICY: Policy = Policy::DEFAULT.instances(Instances::Concurrent);
    fn run(self, ctx: &mut Context<'_>) -> anyhow::Result<()> {
        let line = match ctx.task() {
            Some(t) => format!(
                "task {} {} in {}{}",
                t.id,
                t.name,
                t.started_in,
                t.joined
                    .as_deref()
                    .map(|id| format!(", joined {id}"))
                    .unwrap_or_default()
            ),
            None => "untracked".into(),
        };
        say(ctx, &line)
    }
}
register!(TaskInfo);

/// Allowed during maintenance: prints the mode it sees.
#[derive(Debug, clap::Args)]
pub struct Backup {}

impl ManageCommand for Backup {
    const NAME: &'static str = "backup-ok";
    const POLICY: Policy = Policy::DEFAULT.maintenance(Maintenance::Allowed);
    fn run(self, ctx: &mut Context<'_>) -> anyhow::Result<()> {
        let mode = ctx.backend()?.mode()?.mode;
        say(ctx, &format!("backup while {mode}"))
    }
}
register!(Backup);
