//! `manage offline`: takes the site offline and back, shows its status and
//! what is live, and runs a command inside a maintenance window. One file a
//! verb, as Cargo's commands are: each parses its flags, calls one
//! operation of maintenance-core's offline state machine, and writes the
//! lines. This file only builds the verb list and dispatches.

mod doctor;
mod history;
mod list;
mod local;
mod migrate_state;
mod mirror;
mod off;
mod on;
mod progress;
mod run;
mod status;

use maintenance_core::command::{Context, ManageCommand, register};
use maintenance_core::policy::{Policy, Tracking};
use maintenance_core::{anyhow, clap};

/// Take the site offline and back; show what is live.
#[derive(Debug, clap::Args)]
#[command(
    subcommand_required = true,
    after_help = "Exit codes: 0 done (`mirror`: also stopped by SIGTERM or Ctrl-C); 2 usage; 75 refused or cancelled; 124 timed out (the site went back \
                  where it came from); 76 `run` lost its window while the command ran; 69 the state database could not be reached (nothing changed); \
                  130 interrupted; 1 any other error. `status --exit-code`: 0 ONLINE, 3 PENDING, \
                  4 OFFLINE, 5 READONLY_PENDING, 6 READONLY."
)]
pub struct Offline {
    #[command(subcommand)]
    verb: Verb,
}

// Deferred: a verb's arguments are built only when it is the one run (or
// when help and completions build the whole tree), so `offline status`
// does not build `on`'s and `run`'s.
#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
enum Verb {
    /// Print the status: `Status: <MODE> - Active sessions: <N>`.
    #[command(visible_alias = "check")]
    Status(status::StatusArgs),
    /// Go offline (or read-only) once nobody is in the middle of something.
    #[command(visible_alias = "activate")]
    On(on::OnArgs),
    /// Go back online, from any state.
    #[command(visible_alias = "deactivate")]
    Off(off::OffArgs),
    /// List live commands and web sessions.
    List(list::ListArgs),
    /// Go offline (or read-only), run a command inside the window, restore
    /// the mode.
    Run(run::RunArgs),
    /// Check the state (directory, or PostgreSQL server and schema) as this
    /// user sees it; say what to fix.
    Doctor,
    /// Apply pending additive changes to the postgres backend's schema.
    MigrateState,
    /// Show the last mode changes, newest last: when, what, who, how long, why.
    History(history::HistoryArgs),
    /// Keep this host's web-server markers in step with the shared mode
    /// (PostgreSQL sites), until SIGTERM or Ctrl-C.
    Mirror(mirror::MirrorArgs),
}

impl ManageCommand for Offline {
    const NAME: &'static str = "offline";
    const POLICY: Policy = Policy::DEFAULT.tracking(Tracking::Untracked);

    /// `offline status` (or `check`) without flags, what monitoring and
    /// deploy scripts run over and over, is built without clap.
    fn from_plain_words(words: &[&str]) -> Option<Self> {
        match words {
            ["status" | "check"] => Some(Offline {
                verb: Verb::Status(status::StatusArgs::default()),
            }),
            _ => None,
        }
    }

    fn run(self, ctx: &mut Context<'_>) -> anyhow::Result<()> {
        // Every verb but `status` is `#[inline(never)]`: the start-up of
        // `offline status` maps only its own code.
        match self.verb {
            Verb::Status(args) => status::exec(ctx, &args),
            Verb::On(args) => on::exec(ctx, args),
            Verb::Off(args) => off::exec(ctx, &args),
            Verb::List(args) => list::exec(ctx, &args),
            Verb::Run(args) => run::exec(ctx, args),
            Verb::Doctor => doctor::exec(ctx),
            Verb::MigrateState => migrate_state::exec(ctx),
            Verb::History(args) => history::exec(ctx, &args),
            Verb::Mirror(args) => mirror::exec(ctx, &args),
        }
    }
}
register!(Offline);
