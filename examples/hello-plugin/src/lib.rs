//! An example plug-in crate: one command, `hello`, written exactly as a
//! site's own commands are. Link it into a site's binary with
//! `use hello_plugin as _;`.

use maintenance_core::command::{Context, ManageCommand, register};
use maintenance_core::{anyhow, clap};

/// Greet someone.
#[derive(Debug, clap::Args)]
pub struct Hello {
    /// Who to greet.
    #[arg(default_value = "world")]
    name: String,
    /// How many times.
    #[arg(long, default_value_t = 1)]
    times: u32,
}

impl ManageCommand for Hello {
    const NAME: &'static str = "hello";
    fn run(self, ctx: &mut Context<'_>) -> anyhow::Result<()> {
        for _ in 0..self.times {
            writeln!(ctx.out(), "Hello, {}!", self.name)?;
        }
        Ok(())
    }
}
register!(Hello);
