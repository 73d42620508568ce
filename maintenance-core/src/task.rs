//! `CommandTask`: one live run of a tracked command, as an RAII guard — the
//! seed's context manager, usable from any Rust program.
//!
//! A task is admitted by the backend's gate (never in the caller's hands):
//! refused while PENDING or OFFLINE unless its policy or options allow that,
//! one live instance per name unless concurrent. It holds its locks until
//! dropped — also on panic — and can hand them to a child process, after
//! which dropping only closes its descriptors so the child keeps the task
//! live (I3). A nested run given the task's token joins it instead of being
//! refused.

use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::clock::Timestamp;
use crate::config::DEFAULT_LOCK_TIMEOUT;
use crate::error::{Error, Refusal, Result};
use crate::mode::{Mode, ModeView};
use crate::policy::{Maintenance, Policy};
use crate::process::{Holder, Processes};

/// Environment variable carrying the task token to nested runs.
pub const ENV_TASK: &str = "MANAGE_TASK";

/// What is stored about a live task, readable by any process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task's identity; also its token for nested runs.
    pub id: String,
    /// The command's name.
    pub name: String,
    /// The full command line.
    pub argv: Vec<String>,
    /// The process that started it.
    pub pid: u32,
    /// The user that started it.
    pub user: String,
    /// The host it runs on.
    pub host: String,
    /// When it started.
    pub started_at: Timestamp,
    /// The policy in force for this run.
    pub policy: Policy,
    /// The mode in force when it was admitted.
    pub started_in: Mode,
    /// Whether it runs inside a maintenance window on the window holder's
    /// behalf (`offline run`).
    #[serde(default)]
    pub in_window: bool,
    /// The processes that hold the task now, when the backend can tell (an
    /// external command's keeper, the command, and what it left behind);
    /// read afresh with the record, never stored in it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<Holder>,
}

impl TaskRecord {
    /// Whether this task holds off OFFLINE: it started while ONLINE (I1).
    /// Tasks started during maintenance run inside the window.
    pub fn holds_off_offline(&self) -> bool {
        self.started_in == Mode::Online
    }

    /// `user@host`.
    pub fn user_at_host(&self) -> String {
        format!("{}@{}", self.user, self.host)
    }

    /// The pids to stop it by: the processes that hold it now where they
    /// are known (an external command, and what it left behind), otherwise
    /// the process that started it.
    pub fn pids(&self) -> Vec<u32> {
        if self.holders.is_empty() {
            vec![self.pid]
        } else {
            self.holders.iter().map(|h| h.pid).collect()
        }
    }

    /// Who holds it, for people: `pid 4242` for a run inside its runner,
    /// `pid 4242 (sleep 20), pid 4250 (…)` for an external command's
    /// processes, each with its command line.
    pub fn held_by(&self) -> String {
        if self.holders.is_empty() {
            return format!("pid {}", self.pid);
        }
        self.holders
            .iter()
            .map(|h| {
                let argv = h.argv.join(" ");
                let argv: String = argv.chars().take(80).collect();
                format!("pid {} ({argv})", h.pid)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for TaskRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` (pid {}, {}@{}, started {})",
            self.name, self.pid, self.user, self.host, self.started_at
        )
    }
}

/// What a backend needs to admit a task.
#[derive(Debug, Clone)]
pub struct TaskRequest {
    /// The command's name.
    pub name: String,
    /// The full command line.
    pub argv: Vec<String>,
    /// The policy in force.
    pub policy: Policy,
    /// Run even during maintenance (`--ignore-maintenance`): as `allowed`.
    pub ignore_maintenance: bool,
    /// Run inside the maintenance window on the window holder's behalf.
    pub in_window: bool,
    /// How long a single-instance run waits for the live one.
    pub lock_timeout: Duration,
}

/// A backend's hold on one live task. Dropping it ends the task, unless its
/// locks were handed to a child: then it only closes its descriptors (I3).
pub trait TaskLease: Send + fmt::Debug {
    /// The stored record.
    fn record(&self) -> &TaskRecord;
    /// The descriptors a child process must inherit to keep this task (and
    /// its instance) live. Empty for backends whose locks cannot be
    /// inherited; their runner then stays alive beside the child.
    fn inheritable_fds(&self) -> Vec<BorrowedFd<'_>>;
    /// Says that a child now holds the locks: dropping only closes.
    fn mark_handed_to_child(&mut self);
    /// Records the processes spawned for this task (an external command
    /// and its keeper), so that status can name what holds it after the
    /// runner is gone.
    fn set_processes(&mut self, processes: &Processes) -> Result<()>;
}

/// Decides whether a task may start in the mode in force. Every backend's
/// gate calls this one function, so the rule lives in one place.
pub fn admit(request: &TaskRequest, view: &ModeView) -> Result<(), Refusal> {
    let refuse_maintenance = || Refusal::Maintenance {
        command: request.name.clone(),
        mode: view.mode,
        since: view.record.since,
        by: view.record.by.clone(),
        message: view.record.message.clone(),
    };
    match (request.policy.maintenance, view.mode) {
        (Maintenance::Required, Mode::Offline) => Ok(()),
        (Maintenance::Required, _) if request.in_window => Ok(()),
        (Maintenance::Required, mode) => Err(Refusal::MaintenanceRequired {
            command: request.name.clone(),
            mode,
        }),
        (_, Mode::Online) => Ok(()),
        (Maintenance::Allowed, _) => Ok(()),
        (Maintenance::Refused, _) if request.ignore_maintenance || request.in_window => Ok(()),
        (Maintenance::Refused, _) => Err(refuse_maintenance()),
    }
}

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

    /// Join the live task with this token instead of starting a new one.
    pub fn join(mut self, token: Option<String>) -> Self {
        self.join = token.filter(|t| !t.is_empty());
        self
    }
}

/// One live run of a tracked command. Dropping it ends the task.
#[derive(Debug)]
pub struct CommandTask {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Own(Box<dyn TaskLease>),
    Joined(TaskRecord),
}

impl CommandTask {
    /// Starts a task named `name`, or joins the one the options' token
    /// names. Refused (a typed [`Refusal`]) when the mode or the instance
    /// rule forbids it.
    pub fn start(name: &str, options: TaskOptions) -> Result<CommandTask> {
        if let Some(token) = &options.join {
            let record = options.backend.join_task(token)?;
            return Ok(CommandTask {
                inner: Inner::Joined(record),
            });
        }
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
        let lease = options.backend.start_task(&request)?;
        Ok(CommandTask {
            inner: Inner::Own(lease),
        })
    }

    /// The task's record (for a joined run, the task it joined).
    pub fn record(&self) -> &TaskRecord {
        match &self.inner {
            Inner::Own(lease) => lease.record(),
            Inner::Joined(record) => record,
        }
    }

    /// The token a nested run passes (in [`ENV_TASK`]) to join this task.
    pub fn token(&self) -> &str {
        &self.record().id
    }

    /// Whether this run joined another task rather than starting its own.
    pub fn is_joined(&self) -> bool {
        matches!(self.inner, Inner::Joined(_))
    }

    /// Hands this task to a child process about to be spawned: the
    /// environment it needs (the token in [`ENV_TASK`]) and the descriptors
    /// it must inherit to keep the task (and its instance) live. From now
    /// on dropping this guard only closes its descriptors: the task lives
    /// until the child and all its descendants have exited (I3). The
    /// spawner clears close-on-exec on `fds` in the child only, so that no
    /// other thread's child inherits them.
    ///
    /// Spawn the child before dropping this guard.
    pub fn handoff(&mut self) -> ChildHandoff {
        let env = vec![(ENV_TASK.to_owned(), self.token().to_owned())];
        let Inner::Own(lease) = &mut self.inner else {
            // A joined run's locks are already held by an ancestor.
            return ChildHandoff {
                env,
                fds: Vec::new(),
            };
        };
        let fds = lease
            .inheritable_fds()
            .iter()
            .map(|fd| fd.as_raw_fd())
            .collect();
        lease.mark_handed_to_child();
        ChildHandoff { env, fds }
    }

    /// Records the processes spawned for this task (an external command and
    /// its keeper), so that status and lists name what really holds it.
    pub fn record_processes(&mut self, processes: &Processes) -> Result<()> {
        match &mut self.inner {
            Inner::Own(lease) => lease.set_processes(processes),
            Inner::Joined(_) => Ok(()),
        }
    }

    /// Prepares `cmd` to run as part of this task (see [`handoff`]): the
    /// child inherits the task's locks, close-on-exec cleared in the child
    /// only, and gets the token in [`ENV_TASK`].
    ///
    /// [`handoff`]: CommandTask::handoff
    pub fn prepare_child(&mut self, cmd: &mut Command) {
        let ChildHandoff { env, fds } = self.handoff();
        cmd.envs(env);
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

/// What a child process needs to run as part of a task: see
/// [`CommandTask::handoff`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildHandoff {
    /// Variables to set in the child's environment.
    pub env: Vec<(String, String)>,
    /// Descriptors the child must inherit (close-on-exec cleared in the
    /// child only).
    pub fds: Vec<RawFd>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mode::ModeRecord;
    use crate::policy::Instances;

    fn request(maintenance: Maintenance) -> TaskRequest {
        TaskRequest {
            name: "job".into(),
            argv: vec!["job".into()],
            policy: Policy::DEFAULT.maintenance(maintenance),
            ignore_maintenance: false,
            in_window: false,
            lock_timeout: Duration::ZERO,
        }
    }

    fn view(mode: Mode) -> ModeView {
        let mut r = ModeRecord::initial();
        r.mode = mode;
        ModeView::of(r)
    }

    #[test]
    fn admission_follows_the_policy_table() {
        use Maintenance::*;
        use Mode::*;
        let cases = [
            (Refused, Online, true),
            (Refused, Pending, false),
            (Refused, Offline, false),
            (Allowed, Online, true),
            (Allowed, Pending, true),
            (Allowed, Offline, true),
            (Required, Online, false),
            (Required, Pending, false),
            (Required, Offline, true),
        ];
        for (policy, mode, ok) in cases {
            assert_eq!(
                admit(&request(policy), &view(mode)).is_ok(),
                ok,
                "{policy} in {mode}"
            );
        }
    }

    #[test]
    fn the_override_and_the_window_let_a_refused_command_in() {
        let mut r = request(Maintenance::Refused);
        r.ignore_maintenance = true;
        assert!(admit(&r, &view(Mode::Offline)).is_ok());
        let mut r = request(Maintenance::Refused);
        r.in_window = true;
        assert!(admit(&r, &view(Mode::Pending)).is_ok());
        let mut r = request(Maintenance::Required);
        r.in_window = true;
        assert!(admit(&r, &view(Mode::Offline)).is_ok());
    }

    #[test]
    fn refusals_say_why_and_name_the_way_out() {
        let mut v = view(Mode::Offline);
        v.record.by = "root@web1".into();
        let msg = admit(&request(Maintenance::Refused), &v)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("the site is OFFLINE since 1970-01-01T00:00:00.000Z (set by root@web1)"),
            "{msg}"
        );
        assert!(msg.contains("--ignore-maintenance"), "{msg}");
        let msg = admit(&request(Maintenance::Required), &view(Mode::Online))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("manage offline run -- job"), "{msg}");
        let _ = Instances::Single;
    }
}
