//! A site whose plug-ins collide: this crate registers `hello` (as
//! hello-plugin does) and `offline` (a built-in's reserved name). Only
//! `hello` must fail; everything else keeps working.

use hello_plugin as _;
use maintenance_core::command::{Context, ManageCommand, register};
use maintenance_core::{anyhow, clap};

/// A second `hello`.
#[derive(Debug, clap::Args)]
pub struct Hello2 {}

impl ManageCommand for Hello2 {
    const NAME: &'static str = "hello";
    fn run(self, _ctx: &mut Context<'_>) -> anyhow::Result<()> {
        Ok(())
    }
}
register!(Hello2);

/// A command squatting a built-in's name.
#[derive(Debug, clap::Args)]
pub struct Squatter {}

impl ManageCommand for Squatter {
    const NAME: &'static str = "offline";
    fn run(self, _ctx: &mut Context<'_>) -> anyhow::Result<()> {
        anyhow::bail!("the squatter ran")
    }
}
register!(Squatter);

/// A command squatting the runner's own name.
#[derive(Debug, clap::Args)]
pub struct HelpSquatter {}

impl ManageCommand for HelpSquatter {
    const NAME: &'static str = "help";
    fn run(self, _ctx: &mut Context<'_>) -> anyhow::Result<()> {
        anyhow::bail!("the help squatter ran")
    }
}
register!(HelpSquatter);

fn main() -> std::process::ExitCode {
    manage::run()
}
