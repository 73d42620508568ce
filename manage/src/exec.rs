//! Running a registered command: in this process, inside its task, with
//! panics caught and outcomes mapped to exit codes — as the whole
//! invocation, or nested through the [`Runner`] by which a command runs
//! another (`ctx.call`, `offline run`), which also runs external commands
//! ([`crate::external`]).

use std::ffi::OsString;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use clap::ArgMatches;
use maintenance_core::command::{
    CallOptions, Context, ContextParts, Exit, PlainRun, Registration, Runner, StopToken,
};
use maintenance_core::config::Config;
use maintenance_core::policy::Tracking;
use maintenance_core::task::TaskRecord;
use maintenance_core::{Error, exit};

use crate::cli::{self, Given, Globals};
use crate::external::external;
use crate::resolve::{self, Resolved, Target};
use crate::runtime::Runtime;
use crate::signals;

impl Runtime<'_> {
    /// Runs a registered command whose arguments are parsed, inside its
    /// task (its own, or `parent` for a nested run), and maps the outcome
    /// to an exit code.
    fn run_registered(
        &self,
        reg: &Registration,
        args: Args<'_>,
        how: How,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> u8 {
        let How {
            argv,
            options,
            parent,
        } = how;
        let policy = match self.policy_of_registered(reg) {
            Ok(p) => p,
            Err(msg) => {
                let _ = writeln!(err, "error: {msg}");
                return exit::USAGE;
            }
        };
        let mut owned = false;
        let record = match (policy.tracking, parent) {
            // An untracked command still belongs to the task it runs in.
            (Tracking::Untracked, parent) => parent,
            (Tracking::Tracked, Some(parent)) => Some(parent),
            (Tracking::Tracked, None) => {
                match self.start_task(reg.name, policy, argv, options.in_window, err) {
                    Ok(task) => {
                        let record = task.record().clone();
                        *self.task.borrow_mut() = Some(task);
                        owned = true;
                        Some(record)
                    }
                    Err(code) => return code,
                }
            }
        };
        let _drain = self.drain_watch(policy, record.as_ref(), owned);
        let result = {
            let mut ctx = Context::new(ContextParts {
                out: &mut *out,
                err: &mut *err,
                terminal: self.terminal,
                verbosity: self.globals.verbosity,
                config: self.config,
                backend: &self.backend,
                task: record,
                stop: self.stop.clone(),
                runner: self,
            });
            catch_unwind(AssertUnwindSafe(|| match args {
                Args::Matches(matches) => (reg.run)(matches, &mut ctx),
                Args::Plain(run) => run(&mut ctx),
            }))
        };
        if owned {
            // Released on every path, panics included.
            drop(self.task.borrow_mut().take());
        }
        let _ = out.flush();
        outcome(reg.name, result, self.globals.verbosity, err)
    }
}

/// A registered command's arguments, parsed.
enum Args<'m> {
    /// By clap.
    Matches(&'m ArgMatches),
    /// By the command itself, from plain words
    /// ([`maintenance_core::command::ManageCommand::from_plain_words`]).
    Plain(PlainRun),
}

/// A top-level command line, parsed: by the command itself, or by clap
/// (with the clap command, freed with the matches).
#[expect(
    clippy::large_enum_variant,
    reason = "one per invocation, moved once: boxing would only add an allocation"
)]
enum Parsed {
    Plain(PlainRun),
    Clap(ArgMatches, clap::Command),
}

/// What an invocation brings to a top-level run besides its arguments.
pub(crate) struct Launch<'a> {
    pub bin: &'a str,
    pub state_dir: &'a Option<PathBuf>,
    pub stop: StopToken,
    pub terminal: bool,
    /// The configuration dispatch already read, with the globals it read
    /// it for.
    pub preloaded: Option<(Globals, Config)>,
    /// Where the command's name stands and the global options before it,
    /// when dispatch read those by hand: then clap parses only the
    /// command's own words.
    pub before: Option<(usize, Given)>,
}

/// How a registered command is run: its command line (recorded in its
/// task), the call's options, and the task of the run that called it.
struct How {
    argv: Vec<String>,
    options: CallOptions,
    parent: Option<TaskRecord>,
}

/// Maps a run's result to its exit code, in the documented precedence.
fn outcome(
    name: &str,
    result: std::thread::Result<anyhow::Result<()>>,
    verbosity: i8,
    err: &mut dyn Write,
) -> u8 {
    let interrupted = signals::received();
    match result {
        Err(_) => {
            let _ = writeln!(err, "error: command `{name}` panicked");
            if interrupted {
                exit::INTERRUPTED
            } else {
                exit::PANICKED
            }
        }
        Ok(Ok(())) => {
            if interrupted {
                exit::INTERRUPTED
            } else {
                exit::SUCCESS
            }
        }
        Ok(Err(e)) => {
            if let Some(Exit(code)) = e.downcast_ref::<Exit>() {
                return *code;
            }
            // `… | head -1`: the reader has what it wanted.
            if cli::is_broken_pipe(&e) {
                return cli::BROKEN_PIPE;
            }
            cli::print_error(err, &e, verbosity);
            let refused = e.downcast_ref::<maintenance_core::Refusal>().is_some()
                || e.downcast_ref::<Error>()
                    .is_some_and(|c| c.exit_code() == exit::REFUSED);
            if refused {
                return exit::REFUSED;
            }
            // The state could not be reached: nothing was started or changed.
            if e.downcast_ref::<Error>()
                .is_some_and(|c| c.exit_code() == exit::UNAVAILABLE)
            {
                return exit::UNAVAILABLE;
            }
            if interrupted {
                exit::INTERRUPTED
            } else {
                exit::FAILURE
            }
        }
    }
}

/// Runs a registered command as the whole invocation.
pub(crate) fn top_level_registered(
    reg: &Registration,
    launch: Launch<'_>,
    argv: &[OsString],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let Launch {
        bin,
        state_dir,
        stop,
        terminal,
        preloaded,
        before,
    } = launch;
    let (parsed, globals) = match parse_top_level(reg, bin, argv, before.as_ref()) {
        Ok(parsed) => parsed,
        Err(None) => return exit::USAGE,
        Err(Some((e, cmd, words))) => {
            let kind = e.kind();
            let code = cli::clap_exit(e, out, err);
            if matches!(
                kind,
                clap::error::ErrorKind::InvalidSubcommand
                    | clap::error::ErrorKind::MissingSubcommand
            ) {
                list_verbs(&cmd, words, err);
            }
            return code;
        }
    };
    let reuse = preloaded.and_then(|(g, c)| (g == globals).then_some(c));
    let config = match reuse
        .map(Ok)
        .unwrap_or_else(|| cli::load_config(&globals, state_dir))
    {
        Ok(c) => c,
        Err(e) => {
            cli::print_error(err, &e, globals.verbosity);
            return exit::FAILURE;
        }
    };
    let mut rt = Runtime::new(bin, &config, &globals, stop);
    rt.terminal = terminal;
    let words: Vec<String> = argv[1..]
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let how = How {
        argv: words,
        options: CallOptions::default(),
        parent: None,
    };
    // Freed at the end of this function, or left to the process's exit.
    let clap_parse;
    let args = match parsed {
        Parsed::Plain(run) => Args::Plain(run),
        Parsed::Clap(matches, cmd) => {
            clap_parse = (matches, cmd);
            Args::Matches(&clap_parse.0)
        }
    };
    let code = rt.run_registered(reg, args, how, out, err);
    if crate::whole_process() {
        // The task is released and nothing is left to do but free memory
        // and close descriptors, which the exit does at once.
        crate::end_process(code, out, err);
    }
    code
}

/// A failed parse: clap's error, the command it parsed with, and the
/// words after that command's name; `None` when clap found no command.
type ParseFailure<'w> = Option<(clap::Error, Box<clap::Command>, &'w [OsString])>;

/// Parses a registered command's top-level command line into the
/// command's own arguments and the global options. With the options before
/// the name read by hand (`before`), clap builds and parses only the
/// command (with the global options, which may follow its name); without,
/// the whole line under the runner's top command, as clap reads it.
///
/// When every word after the name is plain (valid UTF-8, none starting
/// with `-`), no global option can be among them: the command builds
/// itself from them when it can
/// ([`ManageCommand::from_plain_words`](maintenance_core::command::ManageCommand::from_plain_words)),
/// and otherwise clap parses them with the command's own arguments only,
/// which a successful parse reads exactly as with the global options
/// added; a failed one is parsed again as below, so that its message is
/// the one the whole line gets.
fn parse_top_level<'w>(
    reg: &Registration,
    bin: &str,
    argv: &'w [OsString],
    before: Option<&(usize, Given)>,
) -> Result<(Parsed, Globals), ParseFailure<'w>> {
    let Some((index, given)) = before else {
        return parse_whole_line(reg, bin, argv);
    };
    let words = &argv[*index..];
    if let Some(plain) = plain_words(&words[1.min(words.len())..]) {
        if let Some(run) = (reg.plain)(&plain) {
            return Ok((Parsed::Plain(run), given.globals()));
        }
        let mut cmd = (reg.build)().disable_help_subcommand(true);
        // Nothing given to a command that takes nothing: clap's matches
        // would be empty, and its parser is left out.
        if plain.is_empty() && takes_nothing(&cmd) {
            return Ok((Parsed::Clap(ArgMatches::default(), cmd), given.globals()));
        }
        if let Ok(m) = cmd.try_get_matches_from_mut(words) {
            return Ok((Parsed::Clap(m, cmd), given.globals()));
        }
    }
    parse_with_globals(reg, bin, words, given)
}

/// Whether `cmd` has nothing for clap to read — no argument, no verb —
/// and no setting that makes a line without words an error: clap's
/// matches for no words are then empty, as `ArgMatches::default()` is.
fn takes_nothing(cmd: &clap::Command) -> bool {
    cmd.get_arguments().next().is_none()
        && !cmd.has_subcommands()
        && !cmd.is_subcommand_required_set()
        && !cmd.is_arg_required_else_help_set()
        && cmd.get_groups().all(|g| !g.is_required_set())
}

// The two parses below build the global options too: each in a function
// of its own, so that the plain lines' start-up neither maps their code
// nor makes room on the stack for their many clap values.

/// Parses the command's words (its name first) with the global options
/// added, `given` those read before its name.
#[inline(never)]
fn parse_with_globals<'w>(
    reg: &Registration,
    bin: &str,
    words: &'w [OsString],
    given: &Given,
) -> Result<(Parsed, Globals), ParseFailure<'w>> {
    let verb = words.get(1).and_then(|w| w.to_str());
    // As under the top command, whose settings reach its commands.
    let mut cmd = cli::with_command_globals((reg.build)(), verb)
        .bin_name(format!("{bin} {}", reg.name))
        .disable_help_subcommand(true);
    match cmd.try_get_matches_from_mut(words) {
        Ok(m) => {
            // The command's options, then its verb's (which hold what
            // deeper verbs were given).
            let mut after = given.then(&m);
            if let Some((_, sub)) = m.subcommand() {
                after = after.then(sub);
            }
            let globals = after.globals();
            Ok((Parsed::Clap(m, cmd), globals))
        }
        Err(e) => Err(Some((e, Box::new(cmd), &words[1.min(words.len())..]))),
    }
}

/// Parses the whole line under the runner's top command.
#[inline(never)]
fn parse_whole_line<'w>(
    reg: &Registration,
    bin: &str,
    argv: &'w [OsString],
) -> Result<(Parsed, Globals), ParseFailure<'w>> {
    let mut cmd = cli::top_command(bin).subcommand((reg.build)());
    match cmd.try_get_matches_from_mut(argv) {
        Ok(mut m) => match m.remove_subcommand() {
            Some((_, sub)) => {
                let globals = Globals::from_matches(&sub);
                Ok((Parsed::Clap(sub, cmd), globals))
            }
            None => Err(None),
        },
        Err(e) => Err(Some((e, Box::new(cmd), &argv[1.min(argv.len())..]))),
    }
}

/// `words` as `&str`s when every one is plain: valid UTF-8, and not an
/// option (none starts with `-`).
fn plain_words(words: &[OsString]) -> Option<Vec<&str>> {
    words
        .iter()
        .map(|w| w.to_str().filter(|w| !w.starts_with('-')))
        .collect()
}

/// After a wrong or missing verb: the verbs of the deepest command the
/// command line names (`words`, what follows the name of `top`), with
/// their aliases.
#[cold]
fn list_verbs(top: &clap::Command, words: &[OsString], err: &mut dyn Write) {
    let mut cmd = top;
    for word in words {
        match cmd.find_subcommand(word.to_string_lossy().as_ref()) {
            Some(sub) => cmd = sub,
            None if word.to_string_lossy().starts_with('-') => continue,
            None => break,
        }
    }
    let verbs: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| {
            let aliases: Vec<&str> = s.get_visible_aliases().collect();
            if aliases.is_empty() {
                s.get_name().to_owned()
            } else {
                format!("{} ({})", s.get_name(), aliases.join(", "))
            }
        })
        .collect();
    if !verbs.is_empty() {
        let _ = writeln!(err, "\nVerbs: {}", verbs.join(", "));
    }
}

impl Runtime<'_> {
    /// Parses a registered command's words (its name first) as `ctx.call`
    /// and `offline run` give them: the command's own arguments only.
    fn parse_call(&self, reg: &Registration, words: &[String]) -> Result<ArgMatches, clap::Error> {
        (reg.build)()
            .bin_name(format!("{} {}", self.bin, reg.name))
            .try_get_matches_from(words)
    }
}

/// Why a resolved command line cannot be run by `ctx.call` or `offline
/// run`; `None` for a registered or an external command.
fn not_runnable(resolved: &Resolved, config: &Config) -> Option<String> {
    let name = resolved.name();
    match &resolved.target {
        Target::Registered(_) | Target::External(_) => None,
        Target::Duplicate(origins) => Some(crate::registry::duplicate_message(&name, origins)),
        Target::Help | Target::Completions | Target::Man => Some(format!(
            "`{name}`{} is not a command that can be run here",
            resolved.via()
        )),
        Target::Unknown => Some(match resolve::suggestion(&name, Some(config)) {
            Some(s) => format!(
                "unrecognized command `{name}`{}; a similar command exists: `{s}`",
                resolved.via()
            ),
            None => format!("unrecognized command `{name}`{}", resolved.via()),
        }),
    }
}

impl Runner for Runtime<'_> {
    fn check(&self, argv: &[String]) -> Result<(), String> {
        let mut warnings = Vec::new();
        let resolved = resolve::resolve_words(argv, Some(self.config), &mut warnings)
            .map_err(|e| e.to_string())?;
        if let Some(problem) = not_runnable(&resolved, self.config) {
            return Err(problem);
        }
        let Target::Registered(reg) = resolved.target else {
            return Ok(());
        };
        match self.parse_call(reg, &resolved.words()) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => Err(format!(
                "`{}` prints help; it runs nothing",
                resolved.words().join(" ")
            )),
            Err(e) => Err(e.render().to_string().trim_end().to_owned()),
        }
    }

    fn call(
        &self,
        ctx: &mut Context<'_>,
        argv: &[String],
        options: CallOptions,
    ) -> anyhow::Result<u8> {
        let Some(name) = argv.first() else {
            anyhow::bail!("nothing to run: the command line is empty");
        };
        if self.depth.get() >= 16 {
            anyhow::bail!("commands call one another too deeply (16 levels) at `{name}`");
        }
        let mut warnings = Vec::new();
        let resolved = resolve::resolve_words(argv, Some(self.config), &mut warnings);
        let parent = ctx.task().cloned();
        let (out, err) = ctx.streams();
        for w in &warnings {
            writeln!(err, "warning: {w}")?;
        }
        let resolved = match resolved {
            Ok(r) => r,
            Err(e) => {
                writeln!(err, "error: {e}")?;
                return Ok(e.exit_code());
            }
        };
        if let Some(problem) = not_runnable(&resolved, self.config) {
            writeln!(err, "error: {problem}")?;
            return Ok(exit::USAGE);
        }
        let words = resolved.words();
        self.depth.set(self.depth.get() + 1);
        let code = match &resolved.target {
            Target::Registered(reg) => match self.parse_call(reg, &words) {
                Ok(m) => {
                    let how = How {
                        argv: words,
                        options,
                        parent,
                    };
                    self.run_registered(reg, Args::Matches(&m), how, out, err)
                }
                Err(e) => cli::clap_exit(e, out, err),
            },
            Target::External(path) => external(
                self,
                &resolved.name(),
                path,
                resolved.args(),
                Some(options),
                err,
            ),
            // Answered by `not_runnable` above.
            Target::Duplicate(_)
            | Target::Help
            | Target::Completions
            | Target::Man
            | Target::Unknown => exit::USAGE,
        };
        self.depth.set(self.depth.get() - 1);
        Ok(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{self, Leading};
    use clap::parser::ValueSource;
    use maintenance_core::clap;

    /// Ids of the global options, which the two parses place differently
    /// (one at the top, one in the command) and [`Given::then`] combines.
    use crate::cli::GLOBAL_IDS;

    /// A command's own parsed arguments, its verbs' after them: what a
    /// command sees, without the global options.
    fn own(m: &ArgMatches) -> Vec<String> {
        let mut seen = Vec::new();
        for id in m.ids().filter(|id| !GLOBAL_IDS.contains(&id.as_str())) {
            let raw: Option<Vec<_>> = m.get_raw(id.as_str()).map(|v| v.collect());
            let source = m.value_source(id.as_str()).map(|s| match s {
                ValueSource::CommandLine => "line",
                ValueSource::DefaultValue => "default",
                _ => "other",
            });
            seen.push(format!("{id}={raw:?}/{source:?}"));
        }
        seen.sort();
        if let Some((name, sub)) = m.subcommand() {
            seen.push(format!("verb {name}"));
            seen.extend(own(sub));
        }
        seen
    }

    /// A parse as a comparable outcome: the command's arguments and the
    /// globals, or clap's rendered message and exit code.
    fn outcome(parsed: Result<(Parsed, Globals), ParseFailure<'_>>) -> String {
        match parsed {
            Ok((Parsed::Clap(m, _), globals)) => format!("ok {:?} {globals:?}", own(&m)),
            Ok((Parsed::Plain(_), globals)) => format!("plain {globals:?}"),
            Err(None) => "no command".to_owned(),
            Err(Some((e, _, _))) => format!("error {} {}", e.exit_code(), e.render()),
        }
    }

    /// A command without verbs, with options, a flag and arguments.
    #[derive(Debug, clap::Args)]
    struct Leaf {
        /// A value.
        #[arg(long)]
        name: Option<String>,
        /// Another.
        #[arg(long)]
        alpha: Option<String>,
        /// And another.
        #[arg(long)]
        zeta: Option<u32>,
        /// A count.
        #[arg(long, short = 'c', action = clap::ArgAction::Count)]
        count: u8,
        /// A flag.
        #[arg(long, short = 'f')]
        flag: bool,
        /// The rest.
        rest: Vec<String>,
    }

    impl maintenance_core::command::ManageCommand for Leaf {
        const NAME: &'static str = "leaf";
        fn run(self, _ctx: &mut Context<'_>) -> anyhow::Result<()> {
            Ok(())
        }
    }

    /// A command without arguments.
    #[derive(Debug, clap::Args)]
    struct Bare {}

    impl maintenance_core::command::ManageCommand for Bare {
        const NAME: &'static str = "bare";
        fn run(self, _ctx: &mut Context<'_>) -> anyhow::Result<()> {
            Ok(())
        }
    }

    /// Without arguments, but an empty line is an error.
    #[derive(Debug, clap::Args)]
    #[command(arg_required_else_help = true)]
    struct Insistent {}

    impl maintenance_core::command::ManageCommand for Insistent {
        const NAME: &'static str = "insistent";
        fn run(self, _ctx: &mut Context<'_>) -> anyhow::Result<()> {
            Ok(())
        }
    }

    /// Asserts that, for each line of `words` (after the binary's name),
    /// parsing only `reg` after reading the options before its name by
    /// hand gives what parsing the whole line under the top command gives
    /// — for plain lines, clap's parse without the global options. (What a
    /// command builds from plain words itself is compared with clap's by
    /// `testing::assert_plain_words_parse_as_clap`.)
    #[track_caller]
    fn assert_both_parses_agree(reg: &Registration, lines: &[&[&str]]) {
        let reg = &Registration {
            plain: |_| None,
            ..*reg
        };
        for words in lines {
            let argv: Vec<OsString> = std::iter::once("manage")
                .chain(words.iter().copied())
                .map(OsString::from)
                .collect();
            let index = scan::command_index(&argv).expect("a name");
            let Some(Leading::Globals(given)) = scan::leading(&argv, index) else {
                panic!("{words:?}: the options before the name are read by hand");
            };
            let whole = outcome(parse_top_level(reg, "manage", &argv, None));
            let alone = outcome(parse_top_level(reg, "manage", &argv, Some(&(index, given))));
            assert_eq!(alone, whole, "{words:?}");
        }
    }

    #[test]
    fn a_command_without_verbs_parses_alone_as_under_the_top_command() {
        let reg = Registration::of::<Leaf>("test");
        assert_both_parses_agree(
            &reg,
            &[
                &["leaf"],
                &["leaf", "a", "b"],
                &["-v", "--state-dir", "/s", "leaf", "x"],
                &["-v", "leaf", "-v", "--name", "x", "a", "b"],
                &["--state-dir", "/a", "leaf", "--state-dir", "/b", "-f"],
                &["-q", "leaf", "--lock-timeout=3", "--", "-v", "--state-dir"],
                &["--ignore-maintenance", "leaf", "--ignore-maintenance"],
                &["leaf", "--ignore-maintenance", "--ignore-maintenance"],
                &["leaf", "--bogus"],
                &["leaf", "--name"],
                &["leaf", "--help"],
                &["leaf", "-h", "x"],
                &["leaf", "--lock-timeout", "-1"],
                &["leaf", "--lock-timeout", "soon"],
                &["leaf", "--nmae", "x"],
                &["leaf", "--zeta", "3", "-cc", "--alpha=a", "-v"],
                &["leaf", "--zeta", "x"],
            ],
        );
    }

    #[test]
    fn a_command_without_arguments_given_none_parses_as_under_the_top_command() {
        for (reg, name) in [
            (Registration::of::<Bare>("test"), "bare"),
            (Registration::of::<Insistent>("test"), "insistent"),
        ] {
            assert_both_parses_agree(
                &reg,
                &[
                    &[name],
                    &["-v", "--state-dir", "/s", name],
                    &[name, "x"],
                    &[name, "-v"],
                    &[name, "--help"],
                    &[name, "--bogus"],
                ],
            );
        }
    }

    #[test]
    fn plain_offline_status_lines_are_built_without_clap_as_clap_parses_them() {
        let lines: &[&[&str]] = &[
            &["status"],
            &["check"],
            &[],
            &["on"],
            &["status", "x"],
            &["list"],
            &["stauts"],
        ];
        let built =
            crate::testing::assert_plain_words_parse_as_clap::<commands::offline::Offline>(lines);
        assert_eq!(built, 2, "`status` and `check` are built without clap");
        let reg = match crate::registry::find("offline", &mut Vec::new()) {
            Some(crate::registry::Found::One(r)) => r,
            _ => panic!("offline is registered"),
        };
        for words in [&["-v", "offline", "status"][..], &["offline", "check"]] {
            let argv: Vec<OsString> = std::iter::once("manage")
                .chain(words.iter().copied())
                .map(OsString::from)
                .collect();
            let index = scan::command_index(&argv).expect("a name");
            let Some(Leading::Globals(given)) = scan::leading(&argv, index) else {
                panic!("{words:?}: the options before the name are read by hand");
            };
            let parsed = parse_top_level(reg, "manage", &argv, Some(&(index, given)));
            assert!(
                matches!(parsed, Ok((Parsed::Plain(_), _))),
                "{words:?}: the runner builds it without clap"
            );
        }
    }

    #[test]
    fn parsing_only_the_command_after_reading_the_options_before_it_by_hand_changes_nothing() {
        let reg = match crate::registry::find("offline", &mut Vec::new()) {
            Some(crate::registry::Found::One(r)) => r,
            _ => panic!("offline is registered"),
        };
        let lines: &[&[&str]] = &[
            &["offline", "status"],
            &["-v", "offline", "status", "--json"],
            &["-v", "offline", "-v", "status"],
            &["-vv", "offline", "status", "-q"],
            &["-q", "offline", "status", "-v", "-v"],
            &[
                "--state-dir",
                "/a",
                "offline",
                "status",
                "--state-dir",
                "/b",
            ],
            &[
                "--state-dir",
                "/a",
                "offline",
                "--config",
                "c.toml",
                "status",
            ],
            &[
                "--config=c",
                "--lock-timeout",
                "5",
                "offline",
                "on",
                "--lock-timeout",
                "7",
            ],
            &["--ignore-maintenance", "offline", "status"],
            &["offline", "status", "--ignore-maintenance"],
            &[
                "offline",
                "status",
                "--ignore-maintenance",
                "--ignore-maintenance",
            ],
            &[
                "-v",
                "offline",
                "on",
                "--timeout",
                "30",
                "--message",
                "back soon",
            ],
            &["offline", "run", "--", "noop", "-v", "--state-dir", "x"],
            &["offline"],
            &["offline", "bogus"],
            &["offline", "stauts"],
            &["offline", "status", "--bogus"],
            &["-v", "offline", "status", "--help"],
            &["offline", "--help"],
            &["offline", "help", "status"],
            &["offline", "status", "--lock-timeout", "soon"],
            &["offline", "status", "--state-dir"],
            &["offline", "on", "--timeout"],
            &["offline", "check", "--json", "-v"],
            &[
                "offline",
                "status",
                "--json",
                "--state-dir",
                "x",
                "--exit-code",
            ],
            &["offline", "on", "--help"],
            &["offline", "run", "--help"],
            &["offline", "list", "--json", "--bogus"],
            &["offline", "doctor", "-q"],
            &["-v", "offline", "off", "--force", "-v"],
        ];
        assert_both_parses_agree(reg, lines);
    }
}
