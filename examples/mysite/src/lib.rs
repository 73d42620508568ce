//! The example site's library: its `main` is exported so the end-to-end
//! tests can build the same binary.

use std::process::ExitCode;

// Named so that the plug-in is linked and its commands registered.
use hello_plugin as _;

/// The site binary's entry point.
pub fn main() -> ExitCode {
    manage::run()
}
