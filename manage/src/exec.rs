//! Running a resolved command: a registered one in this process, inside its
//! task, with panics caught and outcomes mapped to exit codes; an external
//! one as a child that inherits the task's locks (I3). Also the [`Runner`]
//! through which a command runs another (`ctx.call`).
//!
//! External commands never run by exec in place of the runner: on Linux
//! the runner forks a keeper ([`crate::keeper`]) that starts the command
//! and holds the task until the command and everything it left behind have
//! exited; the runner waits for the command alone, forwards SIGTERM, and
//! stays beside a drain-`stop` command to ask it to stop. Killing the
//! runner alone does not free the site: the keeper and the command hold the
//! task's locks.

use std::cell::{Cell, RefCell};
use std::ffi::OsString;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use clap::ArgMatches;
use maintenance_core::command::{
    CallOptions, Context, ContextParts, Exit, Registration, Runner, StopToken,
};
use maintenance_core::config::Config;
use maintenance_core::policy::{Drain, Policy, Tracking};
use maintenance_core::task::{ENV_TASK, TaskRecord};
use maintenance_core::{Backend, CommandTask, Error, TaskOptions, backend, exit};

use crate::cli::{self, Globals};
use crate::resolve::{self, Resolved, Target};
use crate::signals;
use maintenance_core::backend::BackendSlot;

/// Everything one invocation shares between its top-level run and the runs
/// nested inside it.
pub(crate) struct Runtime<'a> {
    bin: String,
    config: &'a Config,
    globals: Globals,
    stop: StopToken,
    backend: BackendSlot,
    /// Whether this is a fresh invocation, which may join the task named in
    /// the environment (a nested `$MANAGE sub` from an external command).
    top: bool,
    /// The task this invocation owns, for nested external commands to
    /// inherit.
    task: RefCell<Option<CommandTask>>,
    depth: Cell<usize>,
    /// Whether standard output is a terminal.
    pub(crate) terminal: bool,
}

impl<'a> Runtime<'a> {
    pub(crate) fn new(
        bin: &str,
        config: &'a Config,
        globals: &Globals,
        stop: StopToken,
        top: bool,
    ) -> Self {
        Runtime {
            bin: bin.to_owned(),
            config,
            globals: globals.clone(),
            stop,
            backend: BackendSlot::new(),
            top,
            task: RefCell::new(None),
            depth: Cell::new(0),
            terminal: false,
        }
    }

    fn backend(&self) -> maintenance_core::Result<Arc<dyn Backend>> {
        backend::open_once(&self.backend, self.config)
    }

    /// Starts (or, at the top, joins) the task of a tracked run. At the top,
    /// `MANAGE_TASK` asks to join: a run that proves it belongs to that task
    /// joins it, one that does not is refused (75, said on `err`), and a
    /// token whose task has ended starts a task of its own under the usual
    /// rules. `Err` holds the exit code after the reason was printed.
    fn start_task(
        &self,
        name: &str,
        policy: Policy,
        argv: Vec<String>,
        in_window: bool,
        err: &mut dyn Write,
    ) -> Result<CommandTask, u8> {
        let backend = self.backend().map_err(|e| {
            let _ = writeln!(err, "error: {e}");
            e.exit_code()
        })?;
        let options = TaskOptions::new(backend)
            .policy(policy)
            .argv(argv)
            .ignore_maintenance(self.globals.ignore_maintenance)
            .in_window(in_window)
            .lock_timeout(self.config.lock_timeout);
        if self.top
            && let Some(token) = std::env::var_os(ENV_TASK)
        {
            let joined = CommandTask::start(
                name,
                options
                    .clone()
                    .join(Some(token.to_string_lossy().into_owned())),
            );
            match joined {
                Ok(task) => return Ok(task),
                // A stale token (an exported variable outliving its task):
                // start a task of our own.
                Err(Error::Refused(maintenance_core::Refusal::JoinGone { .. })) => {}
                Err(e) => {
                    let _ = writeln!(err, "error: {e}");
                    return Err(e.exit_code());
                }
            }
        }
        CommandTask::start(name, options).map_err(|e| {
            let _ = writeln!(err, "error: {e}");
            e.exit_code()
        })
    }

    /// A registered command's policy: declared, with what manage.toml may
    /// change of it.
    fn policy_of_registered(&self, reg: &Registration) -> Result<Policy, String> {
        match self.config.commands.get(reg.name) {
            None => Ok(reg.policy),
            Some(o) => o.for_registered(reg.name, reg.policy).map_err(|msg| {
                let file = self
                    .config
                    .file
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                format!("{file}: {msg}")
            }),
        }
    }

    /// An external command's policy: the defaults, or manage.toml's.
    pub(crate) fn policy_of_external(&self, name: &str) -> Policy {
        self.config
            .commands
            .get(name)
            .map(|o| o.for_external())
            .unwrap_or_default()
    }

    /// For a drain-`stop` task of this run's own that started ONLINE: watch
    /// the mode and ask the command to stop when PENDING begins.
    fn drain_watch(
        &self,
        policy: Policy,
        record: Option<&TaskRecord>,
        owned: bool,
    ) -> Option<crate::drain::DrainWatch> {
        if policy.drain != Drain::Stop
            || !owned
            || !record.is_some_and(TaskRecord::holds_off_offline)
        {
            return None;
        }
        let backend = self.backend().ok()?;
        Some(crate::drain::watch(backend, self.stop.clone()))
    }

    /// Runs a registered command whose arguments are parsed, inside its
    /// task (its own, or `parent` for a nested run), and maps the outcome
    /// to an exit code.
    fn run_registered(
        &self,
        reg: &Registration,
        matches: &ArgMatches,
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
            catch_unwind(AssertUnwindSafe(|| (reg.run)(matches, &mut ctx)))
        };
        if owned {
            // Released on every path, panics included.
            drop(self.task.borrow_mut().take());
        }
        let _ = out.flush();
        outcome(reg.name, result, err)
    }
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
}

/// How a registered command is run: its command line (recorded in its
/// task), the call's options, and the task of the run that called it.
struct How {
    argv: Vec<String>,
    options: CallOptions,
    parent: Option<TaskRecord>,
}

/// Maps a run's result to its exit code, in the documented precedence.
fn outcome(name: &str, result: std::thread::Result<anyhow::Result<()>>, err: &mut dyn Write) -> u8 {
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
            cli::print_error(err, &e);
            let refused = e.downcast_ref::<maintenance_core::Refusal>().is_some()
                || e.downcast_ref::<Error>()
                    .is_some_and(|c| c.exit_code() == exit::REFUSED);
            if refused {
                return exit::REFUSED;
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
    } = launch;
    let mut cmd = cli::top_command(bin).subcommand((reg.build)());
    let matches = match cmd.try_get_matches_from_mut(argv) {
        Ok(m) => m,
        Err(e) => {
            let kind = e.kind();
            let code = cli::clap_exit(e, out, err);
            if matches!(
                kind,
                clap::error::ErrorKind::InvalidSubcommand
                    | clap::error::ErrorKind::MissingSubcommand
            ) {
                list_verbs(&cmd, argv, err);
            }
            return code;
        }
    };
    let Some((_, sub)) = matches.subcommand() else {
        return exit::USAGE;
    };
    let globals = Globals::from_matches(sub);
    let reuse = preloaded.and_then(|(g, c)| (g == globals).then_some(c));
    let config = match reuse
        .map(Ok)
        .unwrap_or_else(|| cli::load_config(&globals, state_dir))
    {
        Ok(c) => c,
        Err(e) => {
            cli::print_error(err, &e);
            return exit::FAILURE;
        }
    };
    let mut rt = Runtime::new(bin, &config, &globals, stop, true);
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
    rt.run_registered(reg, sub, how, out, err)
}

/// After a wrong or missing verb: the verbs of the deepest command the
/// command line names, with their aliases.
fn list_verbs(top: &clap::Command, argv: &[OsString], err: &mut dyn Write) {
    let mut cmd = top;
    for word in argv.iter().skip(1) {
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

/// Runs an external command as a child, tracked: the child inherits the
/// task's locks and gets `MANAGE`, `MANAGE_STATE_DIR` and the task token.
/// On Linux a keeper between the runner and the command keeps whatever the
/// command leaves behind tracked ([`crate::keeper`]). Returns the child's
/// exit code, or 128+N if signal N killed it.
pub(crate) fn external(
    rt: &Runtime<'_>,
    name: &str,
    path: &Path,
    args: &[OsString],
    options: Option<CallOptions>,
    err: &mut dyn Write,
) -> u8 {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    if let Ok(me) = std::env::current_exe() {
        env.push(("MANAGE".into(), me.into()));
    }
    env.push((
        "MANAGE_STATE_DIR".into(),
        rt.config.state_dir.clone().into(),
    ));
    let policy = rt.policy_of_external(name);
    let mut own_task = None;
    if rt.task.borrow().is_none() && policy.tracking == Tracking::Tracked {
        let argv: Vec<String> = std::iter::once(name.to_owned())
            .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect();
        let in_window = options.is_some_and(|o| o.in_window);
        match rt.start_task(name, policy, argv, in_window, err) {
            Ok(task) => own_task = Some(task),
            Err(code) => return code,
        }
    }
    let spawn = Spawning {
        name,
        path,
        args,
        env,
        policy,
        // A run of its own (or a nested run that joined with its own
        // record) watches the drain for itself; one nested inside a
        // registered command's task is watched by that command's run.
        owned: own_task.is_some(),
    };
    let mut current = rt.task.borrow_mut();
    // Nested inside a task this runner owns, the child inherits that one.
    let task = own_task.as_mut().or(current.as_mut());
    let status = match task {
        #[cfg(target_os = "linux")]
        Some(task) => kept(rt, spawn, task, err),
        task => direct(rt, spawn, task, err),
    };
    drop(current);
    drop(own_task);
    match status {
        Ok(code) => code,
        Err(e) => {
            // ENOENT for a file that exists: its `#!` line names a missing
            // interpreter.
            let hint = if e.kind() == std::io::ErrorKind::NotFound && path.exists() {
                " (the file exists: the interpreter its `#!` line names is missing)"
            } else {
                ""
            };
            let _ = writeln!(err, "error: cannot run {}: {e}{hint}", path.display());
            exit::FAILURE
        }
    }
}

/// Maps a `waitpid` status to an exit code: the command's own, or 128+N
/// if signal N killed it.
fn exit_code_of(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code.clamp(0, 255) as u8,
        (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        (None, None) => exit::FAILURE,
    }
}

/// An external command about to be spawned.
struct Spawning<'a> {
    name: &'a str,
    path: &'a Path,
    args: &'a [OsString],
    env: Vec<(OsString, OsString)>,
    policy: Policy,
    /// Whether its task (or joined run) is this runner's own.
    owned: bool,
}

/// Spawns and waits for the command with std, the task's locks inherited
/// (untracked commands, and systems without a keeper).
fn direct(
    rt: &Runtime<'_>,
    spawn: Spawning<'_>,
    task: Option<&mut CommandTask>,
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    let Spawning {
        path,
        args,
        env,
        policy,
        owned,
        ..
    } = spawn;
    let mut cmd = Command::new(path);
    cmd.args(args).envs(env);
    let mut record = None;
    if let Some(task) = task {
        task.prepare_child(&mut cmd);
        record = Some(task.record().clone());
    }
    let mut child = cmd.spawn()?;
    signals::set_child(child.id() as i32);
    // A SIGTERM (or a drain) that came before the child existed.
    if rt.stop.requested() {
        signals::terminate_child();
    }
    let _drain = rt.drain_watch(policy, record.as_ref(), owned);
    let status = child.wait();
    signals::set_child(0);
    match status {
        Ok(s) => Ok(exit_code_of(s)),
        Err(e) => {
            let _ = writeln!(err, "error: waiting for {}: {e}", path.display());
            Ok(exit::FAILURE)
        }
    }
}

/// Spawns the command under a keeper that tracks every descendant it
/// leaves behind (Linux), and waits for the command itself.
#[cfg(target_os = "linux")]
fn kept(
    rt: &Runtime<'_>,
    spawn: Spawning<'_>,
    task: &mut CommandTask,
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    use maintenance_core::policy::Descendants;
    use maintenance_core::process::{ProcId, Processes};
    let Spawning {
        name,
        path,
        args,
        mut env,
        policy,
        owned,
    } = spawn;
    let release = rt
        .config
        .commands
        .get(name)
        .and_then(|o| o.descendants)
        .is_some_and(|d| d == Descendants::Release);
    let handoff = task.handoff();
    env.extend(handoff.env.into_iter().map(|(k, v)| (k.into(), v.into())));
    let record = task.record().clone();
    // Leftovers of a drain-`stop` command are asked to stop by the keeper,
    // which looks at the mode itself (the file backend's record).
    let probe = (policy.drain == Drain::Stop
        && owned
        && record.holds_off_offline()
        && rt.config.backend == maintenance_core::config::BackendKind::File)
        .then(|| maintenance_core::backend::file::ModeProbe::open(&rt.config.state_dir).ok())
        .flatten();
    let mut running = crate::keeper::spawn(&crate::keeper::Spawn {
        path,
        args,
        env: &env,
        fds: &handoff.fds,
        release,
        drain: probe.as_ref(),
    })?;
    let processes = Processes {
        keeper: ProcId::of(running.keeper).unwrap_or(ProcId {
            pid: running.keeper,
            start: 0,
        }),
        command: ProcId::of(running.command).unwrap_or(ProcId {
            pid: running.command,
            start: 0,
        }),
    };
    // Only for people: a task whose processes went unrecorded is as live.
    let _ = task.record_processes(&processes);
    running.go();
    signals::set_child(running.keeper as i32);
    // A SIGTERM (or a drain) that came before the child existed.
    if rt.stop.requested() {
        signals::terminate_child();
    }
    let _drain = rt.drain_watch(policy, Some(&record), owned);
    let keeper = running.keeper;
    let ended = running.wait();
    signals::set_child(0);
    let ended = ended?;
    if ended.leftovers {
        let holders: Vec<String> = processes
            .holders()
            .iter()
            .filter(|h| !h.command)
            .map(|h| format!("pid {} ({})", h.pid, h.argv.join(" ")))
            .collect();
        let waits = if record.holds_off_offline() {
            "`offline on` waits for them"
        } else {
            "they run inside the maintenance window, so `offline on` does not wait for them"
        };
        let _ = writeln!(
            err,
            "{}: `{name}` exited; what it left behind still holds its task: {}. \
             `{} offline list` names them; {waits} (manage.toml: \
             [commands.{name}] descendants = \"release\" lets them go).",
            rt.bin,
            if holders.is_empty() {
                format!("keeper pid {keeper}")
            } else {
                holders.join(", ")
            },
            rt.bin,
        );
    }
    use std::os::unix::process::ExitStatusExt;
    Ok(exit_code_of(std::process::ExitStatus::from_raw(
        ended.status,
    )))
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
        Target::Help | Target::Completions => Some(format!(
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
                    self.run_registered(reg, &m, how, out, err)
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
            Target::Duplicate(_) | Target::Help | Target::Completions | Target::Unknown => {
                exit::USAGE
            }
        };
        self.depth.set(self.depth.get() - 1);
        Ok(code)
    }
}
