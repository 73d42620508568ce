//! Dispatch: from a command line to the command that runs it. The name is
//! looked up — in the order written down in `resolve.rs`, aliases expanded
//! there with their cycles caught — and `run()` runs what it names: a
//! registered command in this process, an external one as a child, the
//! runner's own `help` and `completions`, or an error for an unknown name
//! (exit 2) with the closest name of all kinds suggested.
//!
//! Only the matched command's arguments are built, so start-up does not
//! grow with the number of registered commands; `--help`, `--list` and
//! `completions` build everything.
//!
//! Global options — `--state-dir`, `--config`, `-v`/`-q`,
//! `--lock-timeout`, `--ignore-maintenance` — are accepted before or after a
//! registered command's name; for aliases and external commands, before it
//! (what follows an external command's name is its own).

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command, value_parser};
use maintenance_core::config::{Config, Overrides};
use maintenance_core::exit;

use crate::Invocation;
use crate::exec::{self, Runtime};
use crate::registry;
use crate::resolve::{self, Target};
use crate::{help, scan};

pub use crate::resolve::EXTERNAL_PREFIX;

/// The options every command accepts.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Globals {
    pub state_dir: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub verbosity: i8,
    pub lock_timeout: Option<Duration>,
    pub ignore_maintenance: bool,
}

impl Globals {
    pub(crate) fn from_matches(m: &ArgMatches) -> Self {
        let count = |id: &str| m.get_count(id) as i8;
        Globals {
            state_dir: m.get_one::<PathBuf>("state-dir").cloned(),
            config: m.get_one::<PathBuf>("config").cloned(),
            verbosity: count("verbose") - count("quiet"),
            lock_timeout: m.get_one::<Duration>("lock-timeout").copied(),
            ignore_maintenance: m.get_flag("ignore-maintenance"),
        }
    }
}

/// Adds the global options to `cmd`.
pub(crate) fn with_globals(cmd: Command) -> Command {
    cmd.arg(
        Arg::new("state-dir")
            .long("state-dir")
            .value_name("DIR")
            .value_parser(value_parser!(PathBuf))
            .global(true)
            .help("The state directory (overrides $MANAGE_STATE_DIR and manage.toml)"),
    )
    .arg(
        Arg::new("config")
            .long("config")
            .value_name("FILE")
            .value_parser(value_parser!(PathBuf))
            .global(true)
            .help("The configuration file (default: manage.toml, searched upwards)"),
    )
    .arg(
        Arg::new("verbose")
            .short('v')
            .long("verbose")
            .action(ArgAction::Count)
            .global(true)
            .help("Say more"),
    )
    .arg(
        Arg::new("quiet")
            .short('q')
            .long("quiet")
            .action(ArgAction::Count)
            .global(true)
            .help("Say less"),
    )
    .arg(
        Arg::new("lock-timeout")
            .long("lock-timeout")
            .value_name("SECS")
            .value_parser(maintenance_core::config::parse_seconds)
            .global(true)
            .help("How long a single-instance command waits for the running one"),
    )
    .arg(
        Arg::new("ignore-maintenance")
            .long("ignore-maintenance")
            .action(ArgAction::SetTrue)
            .global(true)
            .help("Run a tracked command even during maintenance, inside the window"),
    )
}

/// The top-level command: the binary's name, the global options, and the
/// runner's own flags; no subcommand yet.
pub(crate) fn top_command(bin: &str) -> Command {
    with_globals(
        Command::new(bin.to_owned())
            .version(env!("CARGO_PKG_VERSION"))
            .disable_help_subcommand(true)
            .arg(
                Arg::new("list")
                    .long("list")
                    .action(ArgAction::SetTrue)
                    .help("List every command with its origin and policy"),
            )
            .arg(
                Arg::new("json")
                    .long("json")
                    .action(ArgAction::SetTrue)
                    .requires("list")
                    .help("With --list: as JSON"),
            ),
    )
}

/// The binary's own name, as the user typed it (`manage`, `mysite`).
pub(crate) fn bin_name(argv: &[OsString]) -> String {
    argv.first()
        .map(Path::new)
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "manage".to_owned())
}

/// Writes clap's message where it belongs and returns its exit code.
pub(crate) fn clap_exit(e: clap::Error, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let text = e.render().to_string();
    if e.use_stderr() {
        let _ = write!(err, "{text}");
    } else {
        let _ = write!(out, "{text}");
    }
    e.exit_code().clamp(0, 255) as u8
}

/// Prints an error and its causes, one a line.
pub(crate) fn print_error(err: &mut dyn Write, e: &anyhow::Error) {
    let _ = writeln!(err, "error: {e}");
    for cause in e.chain().skip(1) {
        let _ = writeln!(err, "  caused by: {cause}");
    }
    let refusal = e
        .downcast_ref::<maintenance_core::Error>()
        .is_some_and(|c| matches!(c, maintenance_core::Error::Refused(_)));
    if !refusal && std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
        let _ = writeln!(err, "{}", e.backtrace());
    }
}

/// Loads the configuration as the globals say.
pub(crate) fn load_config(
    globals: &Globals,
    state_dir: &Option<PathBuf>,
) -> anyhow::Result<Config> {
    let overrides = Overrides {
        config_file: globals.config.clone(),
        state_dir: state_dir.clone().or_else(|| globals.state_dir.clone()),
        lock_timeout: globals.lock_timeout,
    };
    Ok(Config::load(&overrides)?)
}

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
    let top = match top_command(&bin)
        .allow_external_subcommands(true)
        .external_subcommand_value_parser(value_parser!(OsString))
        .try_get_matches_from(&argv)
    {
        Ok(m) => m,
        // `--help` before any command: our own help, with every command.
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
            let config = load_config(&Globals::default(), &state_dir).ok();
            return help::top_help(&bin, config.as_ref(), out);
        }
        Err(e) => return clap_exit(e, out, err),
    };
    let globals = Globals::from_matches(&top);
    let Some(index) = scan::command_index(&argv) else {
        return top_level(&bin, &top, &globals, &state_dir, out, err);
    };
    // The configuration matters for aliases and external commands; a
    // registered command loads it after its own parse (globals may follow
    // its name).
    let loaded = load_config(&globals, &state_dir);
    let config = loaded.as_ref().ok().cloned();
    let mut warnings = Vec::new();
    // Aliases expand in place: what stands before the name (global
    // options) stays where it is.
    let resolved = resolve::resolve_argv(argv, index, config.as_ref(), &mut warnings);
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
    match &resolved.target {
        Target::Help => {
            let topic = argv
                .get(index + 1)
                .map(|a| a.to_string_lossy().into_owned());
            help::help_for(&bin, topic.as_deref(), config.as_ref(), out, err)
        }
        Target::Completions => {
            help::completions(&bin, &argv[index + 1..], config.as_ref(), out, err)
        }
        Target::Registered(reg) => {
            let launch = exec::Launch {
                bin: &bin,
                state_dir: &state_dir,
                stop,
                terminal,
                // Read once: reused when the globals after the name change
                // nothing.
                preloaded: config.map(|c| (globals.clone(), c)),
            };
            exec::top_level_registered(reg, launch, argv, out, err)
        }
        Target::Duplicate(origins) => {
            let _ = writeln!(
                err,
                "error: {}",
                registry::duplicate_message(&name, origins)
            );
            exit::USAGE
        }
        Target::External(path) => {
            let config = match loaded {
                Ok(c) => c,
                Err(e) => {
                    print_error(err, &e);
                    return exit::FAILURE;
                }
            };
            let rt = Runtime::new(&bin, &config, &globals, stop, true);
            exec::external(&rt, &name, path, resolved.args(), None, err)
        }
        Target::Unknown => {
            // An alias in a broken manage.toml: say what is broken.
            if let Err(e) = &loaded {
                print_error(err, e);
                return exit::FAILURE;
            }
            let _ = writeln!(
                err,
                "error: unrecognized command `{name}`{}",
                resolved.via()
            );
            if let Some(s) = help::suggestion(&name, config.as_ref()) {
                let _ = writeln!(err, "\n  tip: a similar command exists: `{s}`");
            }
            let _ = writeln!(
                err,
                "\nRun `{bin} --help` or `{bin} --list` for the commands."
            );
            exit::USAGE
        }
    }
}

fn top_level(
    bin: &str,
    top: &ArgMatches,
    globals: &Globals,
    state_dir: &Option<PathBuf>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let config = load_config(globals, state_dir).ok();
    if top.get_flag("list") {
        return help::list(config.as_ref(), top.get_flag("json"), out, err);
    }
    help::top_help(bin, config.as_ref(), err);
    exit::USAGE
}
