//! The `manage` runner: collects every command linked into the binary,
//! builds the command line, and runs each command tracked — the
//! `manage.py` of a Rust site, in Cargo's manner.
//!
//! A site's own binary is three lines:
//!
//! ```no_run
//! // Named so the plug-in is linked: a crate that is a dependency but never
//! // named is not linked, and its commands would vanish silently.
//! // use hello_plugin as _;
//! fn main() -> std::process::ExitCode {
//!     manage::run()
//! }
//! ```
//!
//! or, for the fastest start on Linux, [`main!`] in place of `fn main`.
//!
//! See [`dispatch`] for how a command line is dispatched (the order in
//! which a name is looked up is in `resolve/mod.rs`, and in the README), and
//! [`maintenance_core::exit`] for the exit codes. Where the rest lives:
//!
//! - `cli.rs`: the global options, the top command, loading `manage.toml`,
//!   printing errors — what dispatch, the runs and the help share;
//! - `resolve/`: name lookup — the resolver and aliases, external commands
//!   on `PATH`, the "did you mean" suggestion; `registry.rs`, the linked
//!   registrations by name; `scan.rs`, where the name stands in argv;
//! - `exec.rs`: a registered command's run, and the `Runner` behind
//!   `ctx.call`; `runtime.rs`, what one invocation's runs share;
//! - `external.rs`: how an external command runs and keeps its task, with
//!   `keeper.rs`, the process that holds it while anything the command
//!   started lives;
//! - `help.rs` (`--help`, `help <command>`), `list.rs` (`--list`),
//!   `install.rs` (`completions`, `man`);
//! - `entry.rs`: the start-up [`main!`] runs in place of the standard
//!   library's;
//! - `signals.rs`, `drain.rs`: stop requests from signals and from a drain;
//! - `testing.rs`: the in-process harness for command authors.

mod cli;
pub mod dispatch;
mod drain;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub mod entry;
mod exec;
mod external;
mod help;
mod hold;
mod install;
#[cfg(target_os = "linux")]
mod keeper;
mod list;
mod registry;
mod resolve;
#[doc(hidden)]
pub use resolve::expand_aliases_for_fuzzing;
mod runtime;
mod scan;
mod signals;
pub mod testing;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use maintenance_core::command::StopToken;

// Linked so that the built-in commands' registrations are seen.
use commands as _;

/// Runs the binary with the process's arguments: installs the signal
/// handlers (once per process), dispatches, and returns the exit code.
///
/// A binary whose `main` is this one line starts through the standard
/// library's start-up first; [`main!`] starts faster on Linux.
pub fn run() -> ExitCode {
    ExitCode::from(run_code())
}

/// [`run`]'s work, with the exit code as a number: what [`entry::start`]
/// returns to the C library.
fn run_code() -> u8 {
    WHOLE_PROCESS.store(true, std::sync::atomic::Ordering::Relaxed);
    let argv: Vec<OsString> = std::env::args_os().collect();
    // The supervisor of hooks this binary started (never a user's run).
    if let Some(code) = maintenance_core::hook_supervisor::supervise_if_asked(&argv) {
        return code;
    }
    // An external command's keeper's drain watcher (never a user's run).
    #[cfg(target_os = "linux")]
    if argv
        .get(1)
        .is_some_and(|a| a == maintenance_core::process::DRAIN_WATCH_ARG)
    {
        return drain::watcher(&argv[2..]);
    }
    let stop = signals::install();
    let mut out = std::io::stdout().lock();
    // Not held locked: a command's other threads (a web layer, a drain
    // watch) may write a warning while it runs.
    let mut err = std::io::stderr();
    let code = run_with(Invocation {
        argv,
        out: &mut out,
        err: &mut err,
        stop,
        state_dir: None,
        terminal: std::io::IsTerminal::is_terminal(&std::io::stdout()),
    });
    let _ = out.flush();
    code
}

/// Defines the binary's `main` as the runner, started without the standard
/// library's start-up on Linux with glibc (about 90 µs of an empty Rust
/// binary's 0.75 ms here; [`entry`] says what of it the runner keeps and
/// how). Elsewhere it is `fn main() -> ExitCode { manage::run() }`.
///
/// The crate root also needs `no_main` on those targets, so that Rust does
/// not define a `main` of its own — but not when the binary is built as a
/// test (`cargo test`, `cargo nextest` build every binary's tests), where
/// the test harness's `main` must run and the macro defines none:
///
/// ```ignore
/// #![cfg_attr(all(target_os = "linux", target_env = "gnu", not(test)), no_main)]
/// // use hello_plugin as _;
/// manage::main!();
/// ```
///
/// Without the attribute, the build fails with E0277, "`main` has invalid
/// return type `i32`": Rust would take this `main` for its own. Standard
/// output is flushed once the runner has returned; see [`entry::start`]
/// for what is written after.
#[macro_export]
macro_rules! main {
    () => {
        /// The process's entry: the `manage` runner.
        #[cfg(all(target_os = "linux", target_env = "gnu", not(test)))]
        #[unsafe(no_mangle)]
        extern "C" fn main(
            _argc: ::std::ffi::c_int,
            _argv: *const *const ::std::ffi::c_char,
        ) -> ::std::ffi::c_int {
            $crate::entry::start()
        }

        /// The process's entry: the `manage` runner.
        #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
        fn main() -> ::std::process::ExitCode {
            $crate::run()
        }
    };
}

/// Set by [`run`]: the process is this one invocation, so a registered
/// command's top-level run ends it as soon as the command's exit code is
/// known, its task released and its output flushed, leaving the parsed
/// command line, the configuration and the open state directory to the
/// process's exit rather than freeing them one by one (`exec.rs`). The
/// testing harness, which runs many invocations in one process, never
/// sets it.
static WHOLE_PROCESS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process is the one invocation [`run`] started.
pub(crate) fn whole_process() -> bool {
    WHOLE_PROCESS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Ends the process [`run`] started with `code`, once `out` and `err` are
/// flushed, without the C library's exit handlers and destructors: the
/// runner registers none, and they only write pages of libc's and the
/// loader's data — after an external command's keeper was forked, each a
/// page copied (8 page faults of the runner's exit).
pub(crate) fn end_process(code: u8, out: &mut dyn Write, err: &mut dyn Write) -> ! {
    let _ = out.flush();
    let _ = err.flush();
    // SAFETY: `_exit` ends the process at once; nothing this program
    // relies on runs at exit (its output is flushed above, its task
    // released by its caller, and the kernel closes the descriptors).
    unsafe { libc::_exit(i32::from(code)) }
}

/// One run of the runner, with everything it reads and writes given.
pub struct Invocation<'a> {
    /// The full command line, the binary's name first.
    pub argv: Vec<OsString>,
    /// Standard output.
    pub out: &'a mut dyn Write,
    /// Standard error.
    pub err: &'a mut dyn Write,
    /// The stop request the signal handlers (if any) set.
    pub stop: StopToken,
    /// A state directory that overrides every other setting (tests).
    pub state_dir: Option<std::path::PathBuf>,
    /// Whether standard output is a terminal.
    pub terminal: bool,
}

/// Runs one invocation and returns its exit code. The same path serves the
/// binary and [`testing`].
pub fn run_with(invocation: Invocation<'_>) -> u8 {
    dispatch::run(invocation)
}
