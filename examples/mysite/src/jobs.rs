//! The site's admin commands, each with the policy its work needs:
//!
//! - `worker`: a long-running job loop that drains with `stop` — asked to
//!   stop when the site starts going offline, it finishes the job in hand
//!   and exits cleanly (0);
//! - `migrate`: maintenance `required` — it runs only inside a window:
//!   `mysite offline run -- migrate` is the deploy line;
//! - `backup`: drain `block`, maintenance `allowed` — `offline on` refuses
//!   while it runs, and it may run inside a window;
//! - `report`: access read-only — it only reads, so it runs while the site
//!   is READONLY and a run does not hold off READONLY (it still holds off
//!   OFFLINE).

use std::time::Duration;

use maintenance_core::command::{Context, ManageCommand, register};
use maintenance_core::policy::{Access, Drain, Instances, Maintenance, Policy};
use maintenance_core::{anyhow, clap};

fn say(ctx: &mut Context<'_>, line: &str) -> anyhow::Result<()> {
    writeln!(ctx.out(), "{line}")?;
    ctx.out().flush()?;
    Ok(())
}

/// Process queued jobs until asked to stop.
#[derive(Debug, clap::Args)]
pub struct Worker {
    /// How long one job takes, in milliseconds.
    #[arg(long, default_value_t = 500)]
    job_ms: u64,
    /// Stop after this many jobs (default: run until asked to stop).
    #[arg(long)]
    jobs: Option<u64>,
}

impl ManageCommand for Worker {
    const NAME: &'static str = "worker";
    const POLICY: Policy = Policy::DEFAULT
        .instances(Instances::Concurrent)
        .drain(Drain::Stop);

    fn run(self, ctx: &mut Context<'_>) -> anyhow::Result<()> {
        say(ctx, "worker started")?;
        let mut done = 0;
        while !ctx.stop_requested() && self.jobs.is_none_or(|n| done < n) {
            // A job is never cut in half: the stop request is only looked
            // at between jobs.
            std::thread::sleep(Duration::from_millis(self.job_ms));
            done += 1;
            say(ctx, &format!("finished job {done}"))?;
        }
        say(ctx, &format!("worker stopping after {done} jobs"))
    }
}
register!(Worker);

/// Apply the database migrations (only inside a maintenance window).
#[derive(Debug, clap::Args)]
pub struct Migrate {
    /// How many migrations to apply.
    #[arg(long, default_value_t = 3)]
    steps: u32,
    /// How long each takes, in milliseconds.
    #[arg(long, default_value_t = 100)]
    step_ms: u64,
    /// Fail at this step (to rehearse a failed deploy).
    #[arg(long)]
    fail_at: Option<u32>,
}

impl ManageCommand for Migrate {
    const NAME: &'static str = "migrate";
    const POLICY: Policy = Policy::DEFAULT.maintenance(Maintenance::Required);

    fn run(self, ctx: &mut Context<'_>) -> anyhow::Result<()> {
        for step in 1..=self.steps {
            if self.fail_at == Some(step) {
                anyhow::bail!("migration {step} of {} failed", self.steps);
            }
            std::thread::sleep(Duration::from_millis(self.step_ms));
            say(ctx, &format!("applied migration {step} of {}", self.steps))?;
        }
        say(ctx, "migrations done")
    }
}
register!(Migrate);

/// Back up the database (blocks going offline while it runs).
#[derive(Debug, clap::Args)]
pub struct Backup {
    /// How long the backup takes, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    ms: u64,
}

impl ManageCommand for Backup {
    const NAME: &'static str = "backup";
    const POLICY: Policy = Policy::DEFAULT
        .drain(Drain::Block)
        .maintenance(Maintenance::Allowed);

    fn run(self, ctx: &mut Context<'_>) -> anyhow::Result<()> {
        say(ctx, "backup started")?;
        std::thread::sleep(Duration::from_millis(self.ms));
        say(ctx, "backup done")
    }
}
register!(Backup);

/// Report on the site's data (only reads: runs while the site is READONLY).
#[derive(Debug, clap::Args)]
pub struct Report {
    /// How long the report takes, in milliseconds.
    #[arg(long, default_value_t = 0)]
    ms: u64,
}

impl ManageCommand for Report {
    const NAME: &'static str = "report";
    const POLICY: Policy = Policy::DEFAULT
        .instances(Instances::Concurrent)
        .access(Access::ReadOnly);

    fn run(self, ctx: &mut Context<'_>) -> anyhow::Result<()> {
        say(ctx, "report started")?;
        std::thread::sleep(Duration::from_millis(self.ms));
        say(ctx, "report done")
    }
}
register!(Report);
