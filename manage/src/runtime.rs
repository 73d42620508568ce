//! One invocation's runtime: what its top-level run and the runs nested
//! inside it (`ctx.call`, an external command's `$MANAGE sub`) share — the
//! configuration, the globals, the backend, the task it owns — and how a
//! tracked run starts (or joins) its task and is given its policy.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::sync::Arc;

use maintenance_core::backend::BackendSlot;
use maintenance_core::command::{Registration, StopToken};
use maintenance_core::config::Config;
use maintenance_core::policy::{Drain, Policy};
use maintenance_core::task::{ENV_TASK, TaskRecord};
use maintenance_core::{Backend, CommandTask, Error, TaskOptions, backend};

use crate::cli::Globals;

/// Everything one invocation shares between its top-level run and the runs
/// nested inside it.
pub(crate) struct Runtime<'a> {
    pub(crate) bin: String,
    pub(crate) config: &'a Config,
    pub(crate) globals: Globals,
    pub(crate) stop: StopToken,
    pub(crate) backend: BackendSlot,
    /// The task this invocation owns, for nested external commands to
    /// inherit.
    pub(crate) task: RefCell<Option<CommandTask>>,
    /// How deep `ctx.call` runs are nested (bounded at 16).
    pub(crate) depth: Cell<usize>,
    /// Whether standard output is a terminal.
    pub(crate) terminal: bool,
}

impl<'a> Runtime<'a> {
    pub(crate) fn new(bin: &str, config: &'a Config, globals: &Globals, stop: StopToken) -> Self {
        Runtime {
            bin: bin.to_owned(),
            config,
            globals: globals.clone(),
            stop,
            backend: BackendSlot::new(),
            task: RefCell::new(None),
            depth: Cell::new(0),
            terminal: false,
        }
    }

    pub(crate) fn backend(&self) -> maintenance_core::Result<Arc<dyn Backend>> {
        backend::open_once(&self.backend, self.config)
    }

    /// Starts (or joins) the task of a tracked run. `MANAGE_TASK` in the
    /// environment (a nested `$MANAGE sub` from an external command) asks
    /// to join: a run that proves it belongs to that task
    /// joins it, one that does not is refused (75, said on `err`), and a
    /// token whose task has ended starts a task of its own under the usual
    /// rules. `Err` holds the exit code after the reason was printed.
    pub(crate) fn start_task(
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
        if let Some(token) = std::env::var_os(ENV_TASK) {
            let joined = CommandTask::start(
                name,
                options
                    .clone()
                    .join(Some(token.to_string_lossy().into_owned())),
            );
            match joined {
                Ok(mut task) => {
                    crate::hold::stop_when_lost(&mut task, self.stop.clone(), &self.bin, name);
                    return Ok(task);
                }
                // A stale token (an exported variable outliving its task):
                // start a task of our own.
                Err(Error::Refused(maintenance_core::Refusal::JoinGone { .. })) => {}
                Err(e) => {
                    let _ = writeln!(err, "error: {e}");
                    return Err(e.exit_code());
                }
            }
        }
        let mut task = CommandTask::start(name, options).map_err(|e| {
            let _ = writeln!(err, "error: {e}");
            e.exit_code()
        })?;
        crate::hold::stop_when_lost(&mut task, self.stop.clone(), &self.bin, name);
        Ok(task)
    }

    /// A registered command's policy: declared, with what manage.toml may
    /// change of it.
    pub(crate) fn policy_of_registered(&self, reg: &Registration) -> Result<Policy, String> {
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
    pub(crate) fn drain_watch(
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
        let task = record?.clone();
        Some(crate::drain::watch(backend, self.stop.clone(), task))
    }
}
