//! The runner's own command line, shared by dispatch, the runs and the
//! help: the global options every command accepts, the top-level command,
//! loading `manage.toml` as the globals say, and how errors are printed.

use std::backtrace::BacktraceStatus;
use std::ffi::OsString;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command, value_parser};
use maintenance_core::config::{Config, Overrides};

/// What the binary is for, in `--help` and the man page.
pub(crate) const ABOUT: &str = "run this site's commands, each tracked so maintenance waits for it";

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

/// The global options as given on one side of the command name — before
/// it, read by hand ([`crate::scan::leading`]) — before they are combined
/// into [`Globals`].
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Given {
    pub state_dir: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub lock_timeout: Option<Duration>,
    /// How many times `-v` was given (at most `i8::MAX`).
    pub verbose: i8,
    /// How many times `-q` was given (at most `i8::MAX`).
    pub quiet: i8,
    pub ignore_maintenance: bool,
}

impl Given {
    /// What these options alone say.
    pub(crate) fn globals(&self) -> Globals {
        Globals {
            state_dir: self.state_dir.clone(),
            config: self.config.clone(),
            verbosity: self.verbose - self.quiet,
            lock_timeout: self.lock_timeout,
            ignore_maintenance: self.ignore_maintenance,
        }
    }

    /// These options (given before the command name) with what clap read
    /// after it in `after` (a command's or a verb's matches): an option
    /// given on the command line there replaces the one before it, whole —
    /// clap's own rule for a global option given at several levels, where
    /// the deepest wins (so `-v noop -v` is one `-v`, as it always was).
    pub(crate) fn then(&self, after: &ArgMatches) -> Given {
        let given =
            |id: &str| after.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
        let count = |id: &str, before: i8| {
            if given(id) {
                after.get_count(id) as i8
            } else {
                before
            }
        };
        Given {
            state_dir: if given("state-dir") {
                after.get_one::<PathBuf>("state-dir").cloned()
            } else {
                self.state_dir.clone()
            },
            config: if given("config") {
                after.get_one::<PathBuf>("config").cloned()
            } else {
                self.config.clone()
            },
            lock_timeout: if given("lock-timeout") {
                after.get_one::<Duration>("lock-timeout").copied()
            } else {
                self.lock_timeout
            },
            verbose: count("verbose", self.verbose),
            quiet: count("quiet", self.quiet),
            ignore_maintenance: if given("ignore-maintenance") {
                after.get_flag("ignore-maintenance")
            } else {
                self.ignore_maintenance
            },
        }
    }
}

/// The ids of the global options.
pub(crate) const GLOBAL_IDS: [&str; 6] = [
    "state-dir",
    "config",
    "verbose",
    "quiet",
    "lock-timeout",
    "ignore-maintenance",
];

/// Adds the global options to `cmd`, accepted by its subcommands too.
pub(crate) fn with_globals(cmd: Command) -> Command {
    with_options(cmd, true)
}

/// Adds the global options to a registered command: accepted by its verbs
/// too when it has any (clap then copies them into every verb); a command
/// without verbs has them as its own, which clap parses the same way
/// without the copying. When the command line names the verb (`verb`, the
/// word right after the command's name), only that verb gets them: as the
/// copies clap would have made (in the same place, with the same display
/// order), global within the verb, so that the verbs not run are not
/// burdened with six copies each.
pub(crate) fn with_command_globals(cmd: Command, verb: Option<&str>) -> Command {
    let Some(verb) = verb
        .and_then(|v| cmd.find_subcommand(v))
        .map(|v| v.get_name().to_owned())
    else {
        let global = cmd.has_subcommands();
        return with_options(cmd, global);
    };
    let cmd = with_options(cmd, false);
    let copies: Vec<Arg> = cmd
        .get_arguments()
        .filter(|a| GLOBAL_IDS.contains(&a.get_id().as_str()))
        .map(|a| a.clone().global(true))
        .collect();
    cmd.mut_subcommand(verb, |v| {
        // The verb's own arguments are numbered from 0, as when clap
        // copies the options into it.
        v.args(copies).next_display_order(0)
    })
}

/// Where the global options stand in every help's list of options: after
/// the top command's `--list` and `--json` (0 and 1), as the copies clap
/// makes of the top command's would — given explicitly, so that a command
/// parsed alone lists them in the same places among its own options.
const FIRST_GLOBAL_ORDER: usize = 2;

/// Adds the global options to `cmd`, marked `global` (see clap's
/// [`Arg::global`]) or not.
fn with_options(cmd: Command, global: bool) -> Command {
    cmd.arg(
        Arg::new("state-dir")
            .display_order(FIRST_GLOBAL_ORDER)
            .long("state-dir")
            .value_name("DIR")
            .value_parser(value_parser!(PathBuf))
            .global(global)
            .help("The state directory (overrides $MANAGE_STATE_DIR and manage.toml)"),
    )
    .arg(
        Arg::new("config")
            .display_order(FIRST_GLOBAL_ORDER + 1)
            .long("config")
            .value_name("FILE")
            .value_parser(value_parser!(PathBuf))
            .global(global)
            .help("The configuration file (default: manage.toml, searched upwards)"),
    )
    .arg(
        Arg::new("verbose")
            .display_order(FIRST_GLOBAL_ORDER + 2)
            .short('v')
            .long("verbose")
            .action(ArgAction::Count)
            .global(global)
            .help("Say more"),
    )
    .arg(
        Arg::new("quiet")
            .display_order(FIRST_GLOBAL_ORDER + 3)
            .short('q')
            .long("quiet")
            .action(ArgAction::Count)
            .global(global)
            .help("Say less"),
    )
    .arg(
        Arg::new("lock-timeout")
            .display_order(FIRST_GLOBAL_ORDER + 4)
            .long("lock-timeout")
            .value_name("SECS")
            .value_parser(maintenance_core::config::parse_seconds)
            // `-1` is a value for the parser to judge, not a flag.
            .allow_negative_numbers(true)
            .global(global)
            .help("How long a single-instance command waits for the running one"),
    )
    .arg(
        Arg::new("ignore-maintenance")
            .display_order(FIRST_GLOBAL_ORDER + 5)
            .long("ignore-maintenance")
            .action(ArgAction::SetTrue)
            .global(global)
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
                    .display_order(0)
                    .long("list")
                    .action(ArgAction::SetTrue)
                    .help("List every command with its origin and policy"),
            )
            .arg(
                Arg::new("json")
                    .display_order(1)
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

/// Prints an error and its causes, one a line. A backtrace, when one was
/// captured (`RUST_BACKTRACE=1`), follows only at `-vv` and never for a
/// refusal: a mistyped `manage.toml` is not a crash. Panics print their
/// own, through the panic hook.
pub(crate) fn print_error(err: &mut dyn Write, e: &anyhow::Error, verbosity: i8) {
    let _ = writeln!(err, "error: {e}");
    for cause in e.chain().skip(1) {
        let _ = writeln!(err, "  caused by: {cause}");
    }
    let refusal = e
        .downcast_ref::<maintenance_core::Error>()
        .is_some_and(|c| matches!(c, maintenance_core::Error::Refused(_)));
    if verbosity >= 2 && !refusal && e.backtrace().status() == BacktraceStatus::Captured {
        let _ = writeln!(err, "{}", e.backtrace());
    }
}

/// The exit code of a run whose standard output was closed under it
/// (`manage … | head -1`): 128 + SIGPIPE, what the shell reports for any
/// program that SIGPIPE ends, and nothing is printed.
pub(crate) const BROKEN_PIPE: u8 = 128 + libc::SIGPIPE as u8;

/// Whether `e` comes of writing to a pipe whose reader has gone.
pub(crate) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        let kind = match cause.downcast_ref::<std::io::Error>() {
            Some(io) => Some(io.kind()),
            None => cause
                .downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind),
        };
        kind == Some(ErrorKind::BrokenPipe)
    })
}

/// The configuration for what only lists or describes commands (`--help`,
/// `--list`, `help`, `completions`, `man`), which a broken `manage.toml`
/// does not stop: then none, and a warning that names the file and the
/// line (the error's own words) and what is left out.
pub(crate) fn listing_config(loaded: &anyhow::Result<Config>) -> (Option<&Config>, Option<String>) {
    match loaded {
        Ok(config) => (Some(config), None),
        Err(e) => (
            None,
            Some(format!(
                "{e:#}; the file's aliases and [commands] settings are left out until it is fixed"
            )),
        ),
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
