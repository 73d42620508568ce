//! `CommandTask`: one live run of a tracked command, as an RAII guard,
//! usable from any Rust program (django-site-maintenance's `CommandTask`
//! context manager, made a guard).
//!
//! A task is admitted by the backend's gate (never in the caller's hands,
//! see [`admission`](crate::admission)): refused while PENDING or OFFLINE
//! unless its policy or options allow that, one live instance per name
//! unless concurrent. It holds its locks until dropped — also on panic — and
//! can hand them to a child process, after which dropping only closes its
//! descriptors so the child keeps the task live (I3).
//!
//! A nested run joins its parent's task instead of starting one, with the
//! proof [`join`](crate::join) describes; it publishes a record and a lock
//! of its own ([`TaskRecord::joined`]), so it keeps the task live while it
//! runs, and is admitted by [`admit_joined`](crate::admission::admit_joined):
//! the parent's standing covers maintenance `refused`, not `required`.

use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{Backend, HoldLost, TaskLease};
use crate::config::DEFAULT_LOCK_TIMEOUT;
use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::process::Processes;

// The paths these had when they lived here, which commands and sites use.
pub use crate::backend::Membership;
pub use crate::join::{ENV_TASK, JoinToken, TaskSecret};
pub use crate::records::{TaskRecord, TaskRequest};

/// How long a command whose task lost its hold ([`CommandTask::on_hold_lost`])
/// has to stop after SIGTERM (and its `ctx.stop_requested()`) before it is
/// killed (SIGKILL): G. The PostgreSQL backend's server frees a silently
/// cut-off task's lock no sooner than its keepalive bound, set above the
/// detection time plus this (README, "PostgreSQL").
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// How to start a [`CommandTask`].
#[derive(Debug, Clone)]
pub struct TaskOptions {
    backend: Arc<dyn Backend>,
    argv: Vec<String>,
    policy: Policy,
    ignore_maintenance: bool,
    in_window: bool,
    lock_timeout: Duration,
    join: Option<String>,
}

impl TaskOptions {
    /// Options for a task on `backend`, with the default policy and lock
    /// timeout.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        TaskOptions {
            backend,
            argv: Vec::new(),
            policy: Policy::DEFAULT,
            ignore_maintenance: false,
            in_window: false,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            join: None,
        }
    }

    /// The command line to record.
    pub fn argv<I: IntoIterator<Item = S>, S: Into<String>>(mut self, argv: I) -> Self {
        self.argv = argv.into_iter().map(Into::into).collect();
        self
    }

    /// The policy in force.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Run even during maintenance, as `allowed` (`--ignore-maintenance`).
    pub fn ignore_maintenance(mut self, yes: bool) -> Self {
        self.ignore_maintenance = yes;
        self
    }

    /// Run inside the maintenance window on the window holder's behalf.
    pub fn in_window(mut self, yes: bool) -> Self {
        self.in_window = yes;
        self
    }

    /// How long a single-instance run waits for the live one.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Join the live task this token names (as [`ENV_TASK`] carries it:
    /// `<id>:<secret>`, or the id alone to join by an inherited descriptor)
    /// instead of starting a new one.
    pub fn join(mut self, token: Option<String>) -> Self {
        self.join = token.filter(|t| !t.is_empty());
        self
    }
}

/// One live run of a tracked command. Dropping it ends the task.
#[derive(Debug)]
pub struct CommandTask {
    lease: Box<dyn TaskLease>,
    /// What this run's children present to join its task.
    token: JoinToken,
}

/// What a child process needs to run as part of a task: the environment to
/// set and the descriptors it must inherit (close-on-exec cleared in the
/// child only). Made by [`CommandTask::handoff`] for any code that spawns
/// children its own way; the descriptors stay open as long as the
/// [`CommandTask`] lives, so spawn before dropping it. Its `Debug` hides the
/// secret.
pub struct ChildHandoff {
    /// Variables to set in the child's environment ([`ENV_TASK`]).
    pub env: Vec<(&'static str, String)>,
    /// Descriptors the child must inherit to keep the task (and its
    /// instance) live; empty for backends whose locks cannot be inherited.
    pub fds: Vec<RawFd>,
}

impl fmt::Debug for ChildHandoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|(k, _)| *k).collect();
        f.debug_struct("ChildHandoff")
            .field("env", &names)
            .field("fds", &self.fds)
            .finish()
    }
}

impl CommandTask {
    /// Starts a task named `name`, or joins the one the options' token
    /// names. Refused (a typed [`Refusal`]) when the mode or the instance
    /// rule forbids it; a join is refused with [`Refusal::JoinGone`] when no
    /// run of that task lives and [`Refusal::JoinUnproven`] when this
    /// process does not prove it belongs to it.
    ///
    /// [`Refusal`]: crate::error::Refusal
    /// [`Refusal::JoinGone`]: crate::error::Refusal::JoinGone
    /// [`Refusal::JoinUnproven`]: crate::error::Refusal::JoinUnproven
    pub fn start(name: &str, options: TaskOptions) -> Result<CommandTask> {
        if name.is_empty() {
            return Err(Error::Invalid("a command name cannot be empty".into()));
        }
        let request = TaskRequest {
            name: name.to_owned(),
            argv: if options.argv.is_empty() {
                vec![name.to_owned()]
            } else {
                options.argv
            },
            policy: options.policy,
            ignore_maintenance: options.ignore_maintenance,
            in_window: options.in_window,
            lock_timeout: options.lock_timeout,
        };
        if let Some(text) = &options.join {
            let token = JoinToken::parse(text);
            let lease = options.backend.join_task(&token, &request)?;
            let root = lease.record().task_id().to_owned();
            return Ok(CommandTask {
                lease,
                token: JoinToken::new(root, token.secret().cloned()),
            });
        }
        let secret = TaskSecret::generate();
        let lease = options.backend.start_task(&request, &secret.sha256_hex())?;
        let token = JoinToken::new(lease.record().id.clone(), Some(secret));
        Ok(CommandTask { lease, token })
    }

    /// This run's record (for a joined run, its own, whose
    /// [`joined`](TaskRecord::joined) names the task).
    pub fn record(&self) -> &TaskRecord {
        self.lease.record()
    }

    /// What a nested run presents (in [`ENV_TASK`]) to join this task.
    pub fn token(&self) -> &JoinToken {
        &self.token
    }

    /// Whether this run joined another task rather than starting its own.
    pub fn is_joined(&self) -> bool {
        self.record().joined.is_some()
    }

    /// Hands this task to a child about to be spawned: returns the
    /// environment and the descriptors the child must get, and from now on
    /// dropping this guard only closes its descriptors, so the task lives
    /// until the child and all its descendants have exited (I3). Spawn the
    /// child before dropping this guard.
    pub fn handoff(&mut self) -> ChildHandoff {
        let fds: Vec<RawFd> = self
            .lease
            .inheritable_fds()
            .iter()
            .map(|fd| fd.as_raw_fd())
            .collect();
        self.lease.mark_handed_to_child();
        ChildHandoff {
            env: vec![(ENV_TASK, self.token.env_value())],
            fds,
        }
    }

    /// Has `lost` called, once, when this task's hold is lost for good
    /// ([`TaskLease::on_hold_lost`]): the command must then stop, as it
    /// no longer holds off OFFLINE. `lost` runs on the backend's thread and
    /// must not block.
    pub fn on_hold_lost(&mut self, lost: impl FnOnce(HoldLost) + Send + 'static) {
        self.lease.on_hold_lost(Box::new(lost));
    }

    /// Says that the child [`handoff`](Self::handoff) gave this task to
    /// has ended, and that nothing it started still holds the task: call it
    /// only when that is known (a keeper that tracked every descendant said
    /// so). Dropping this guard then ends the task before it returns, on
    /// every backend, as it would have without the handoff.
    pub fn take_back_from_child(&mut self) {
        self.lease.take_back_from_child();
    }

    /// Records the processes spawned for this task (an external command and
    /// its keeper), so that status and lists name what really holds it.
    pub fn record_processes(&mut self, processes: &Processes) -> Result<()> {
        self.lease.set_processes(processes)
    }

    /// Prepares `cmd` to run as part of this task, from [`handoff`]: the
    /// child inherits the task's locks (close-on-exec cleared in the child
    /// only, so no other thread's child inherits them) and gets the join
    /// token in [`ENV_TASK`].
    ///
    /// Spawn `cmd` before dropping this guard.
    ///
    /// [`handoff`]: CommandTask::handoff
    pub fn prepare_child(&mut self, cmd: &mut Command) {
        let ChildHandoff { env, fds } = self.handoff();
        for (key, value) in env {
            cmd.env(key, value);
        }
        if fds.is_empty() {
            return;
        }
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs between fork and exec and only calls
        // fcntl, which is async-signal-safe; the descriptors stay open in the
        // parent until the guard is dropped, after the spawn.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &fds {
                    let fd = BorrowedFd::borrow_raw(fd);
                    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
                }
                Ok(())
            });
        }
    }
}
