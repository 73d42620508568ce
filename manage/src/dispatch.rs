//! Dispatch: from a command line to the command that runs it. The name is
//! looked up — in the order written down in `resolve/mod.rs`, aliases
//! expanded there with their cycles caught — and `run()` runs what it
//! names: a registered command in this process, an external one as a
//! child, the runner's own `help`, `completions` and `man`, or an error for
//! an unknown name (exit 2) with the closest name of all kinds suggested.
//!
//! Only the matched command's arguments are built, so start-up does not
//! grow with the number of registered commands; `--help`, `--list`,
//! `completions` and `man` build everything.
//!
//! Global options — `--state-dir`, `--config`, `-v`/`-q`,
//! `--lock-timeout`, `--ignore-maintenance` — are accepted before or after a
//! registered command's name; for aliases and external commands, before it
//! (what follows an external command's name is its own).

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use clap::{ArgMatches, value_parser};
use maintenance_core::exit;

use crate::Invocation;
use crate::cli::{
    Globals, bin_name, clap_exit, listing_config, load_config, print_error, top_command,
};
use crate::exec;
use crate::external::external;
use crate::registry;
use crate::resolve::{self, Target};
use crate::runtime::Runtime;
use crate::scan::Leading;
use crate::{help, install, list, scan};

pub use crate::resolve::EXTERNAL_PREFIX;

/// The runner's main path: the binary and the testing harness both come
/// here.
pub(crate) fn run(inv: Invocation<'_>) -> u8 {
    let Invocation {
        argv,
        out,
        err,
        stop,
        state_dir,
        terminal,
    } = inv;
    let bin = bin_name(&argv);
    let index = scan::command_index(&argv);
    // The options before the name, read by hand when they are plain
    // global options (the usual case): the only clap parse is then the
    // command's own. Anything else is clap's to read and judge.
    let (globals, index, before) = match (scan::leading(&argv, index.unwrap_or(argv.len())), index)
    {
        (Some(Leading::Help), _) => return top_help(&bin, &state_dir, out, err),
        (Some(Leading::Globals(given)), Some(index)) => (given.globals(), index, Some(given)),
        _ => match unusual_leading(&bin, &argv, index, &state_dir, out, err) {
            Ok((globals, index)) => (globals, index, None),
            Err(code) => return code,
        },
    };
    // The configuration matters for aliases and external commands; a
    // registered command loads it after its own parse (globals may follow
    // its name).
    let loaded = load_config(&globals, &state_dir);
    let config = loaded.as_ref().ok();
    let mut warnings = Vec::new();
    // Aliases expand in place: what stands before the name (global
    // options) stays where it is.
    let resolved = resolve::resolve_argv(argv, index, config, &mut warnings);
    for w in &warnings {
        let _ = writeln!(err, "warning: {w}");
    }
    let resolved = match resolved {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return e.exit_code();
        }
    };
    let name = resolved.name();
    let (argv, index) = (&resolved.argv, resolved.index);
    if matches!(
        resolved.target,
        Target::Help | Target::Completions | Target::Man
    ) {
        warn(err, listing_config(&loaded).1.as_deref());
    }
    match &resolved.target {
        Target::Help => {
            let topic = argv
                .get(index + 1)
                .map(|a| a.to_string_lossy().into_owned());
            // `help offline on`: the words after the topic name its verb.
            let verbs = argv.get(index + 2..).unwrap_or_default();
            help::help_for(&bin, topic.as_deref(), verbs, config, out, err)
        }
        Target::Completions | Target::Man => {
            let asked = install::Asked {
                bin: &bin,
                args: &argv[index + 1..],
                config,
            };
            match resolved.target {
                Target::Man => install::man(asked, out, err),
                _ => install::completions(asked, out, err),
            }
        }
        Target::Registered(reg) => {
            let launch = exec::Launch {
                bin: &bin,
                state_dir: &state_dir,
                stop,
                terminal,
                // Read once: reused when the globals after the name change
                // nothing.
                preloaded: loaded.ok().map(|c| (globals.clone(), c)),
                before: before.map(|given| (index, given)),
            };
            exec::top_level_registered(reg, launch, argv, out, err)
        }
        Target::Duplicate(origins) => duplicate(&name, origins, err),
        Target::External(path) => {
            let config = match loaded {
                Ok(c) => c,
                Err(e) => {
                    print_error(err, &e, globals.verbosity);
                    return exit::FAILURE;
                }
            };
            let rt = Runtime::new(&bin, &config, &globals, stop);
            let code = external(&rt, &name, path, resolved.args(), None, err);
            if crate::whole_process() {
                // As a registered command's run ends (`exec.rs`).
                crate::end_process(code, out, err);
            }
            code
        }
        Target::Unknown => unrecognized(&bin, &name, &resolved, &loaded, &globals, err),
    }
}

/// Two linked crates register `name`.
#[cold]
fn duplicate(name: &str, origins: &[&'static str], err: &mut dyn Write) -> u8 {
    let _ = writeln!(err, "error: {}", registry::duplicate_message(name, origins));
    exit::USAGE
}

/// `name` is no command: says so, with the closest one of every kind.
#[cold]
fn unrecognized(
    bin: &str,
    name: &str,
    resolved: &resolve::Resolved,
    loaded: &anyhow::Result<maintenance_core::config::Config>,
    globals: &Globals,
    err: &mut dyn Write,
) -> u8 {
    // An alias in a broken manage.toml: say what is broken.
    if let Err(e) = loaded {
        print_error(err, e, globals.verbosity);
        return exit::FAILURE;
    }
    let _ = writeln!(
        err,
        "error: unrecognized command `{name}`{}",
        resolved.via()
    );
    if let Some(s) = resolve::suggestion(name, loaded.as_ref().ok()) {
        let _ = writeln!(err, "\n  tip: a similar command exists: `{s}`");
    }
    let _ = writeln!(
        err,
        "\nRun `{bin} --help` or `{bin} --list` for the commands."
    );
    exit::USAGE
}

/// The words before the name when they are not plain global options
/// (or there is no name): clap reads the whole line under the top
/// command. The globals and the name's index, or the exit code of what
/// ran instead (`--list`, `--version`, help, an error).
#[inline(never)]
fn unusual_leading(
    bin: &str,
    argv: &[OsString],
    index: Option<usize>,
    state_dir: &Option<PathBuf>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(Globals, usize), u8> {
    let top = match top_command(bin)
        .allow_external_subcommands(true)
        .external_subcommand_value_parser(value_parser!(OsString))
        .try_get_matches_from(argv)
    {
        Ok(m) => m,
        // `--help` before any command: our own help, with every command.
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
            return Err(top_help(bin, state_dir, out, err));
        }
        Err(e) => return Err(clap_exit(e, out, err)),
    };
    let globals = Globals::from_matches(&top);
    match index {
        Some(index) => Ok((globals, index)),
        None => Err(top_level(bin, &top, &globals, state_dir, out, err)),
    }
}

#[inline(never)]
fn top_level(
    bin: &str,
    top: &ArgMatches,
    globals: &Globals,
    state_dir: &Option<PathBuf>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let loaded = load_config(globals, state_dir);
    let (config, broken) = listing_config(&loaded);
    if top.get_flag("list") {
        return list::list(config, broken, top.get_flag("json"), out, err);
    }
    warn(err, broken.as_deref());
    help::top_help(bin, config, err);
    exit::USAGE
}

/// `--help` before any command: our own help, with every command, as
/// `manage.toml` (found as without options) says.
#[inline(never)]
fn top_help(
    bin: &str,
    state_dir: &Option<PathBuf>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let loaded = load_config(&Globals::default(), state_dir);
    let (config, broken) = listing_config(&loaded);
    warn(err, broken.as_deref());
    help::top_help(bin, config, out)
}

/// Prints a warning, if there is one.
fn warn(err: &mut dyn Write, warning: Option<&str>) {
    if let Some(w) = warning {
        let _ = writeln!(err, "warning: {w}");
    }
}
