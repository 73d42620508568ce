//! The example site's library: its commands (`runserver`, `worker`,
//! `migrate`, `backup`, `report`) and its `main`,
//! exported so the end-to-end tests build the very same binary.
//!
//! A site's binary names each plug-in crate it depends on: `inventory` only
//! sees crates that are linked, and a dependency that is never named is not
//! linked — its commands would vanish silently, in every profile.

pub mod jobs;
pub mod web;

use std::process::ExitCode;

// Named so that the plug-in is linked and its commands registered.
use hello_plugin as _;

/// The site binary's entry point: the manage runner with this site's
/// commands and plug-ins.
pub fn main() -> ExitCode {
    manage::run()
}
