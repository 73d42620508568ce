//! `CommandTask`: one live run of a tracked command, as an RAII guard — the
//! seed's context manager, usable from any Rust program.
//!
//! A task is admitted by the backend's gate (never in the caller's hands):
//! refused while PENDING or OFFLINE unless its policy or options allow that,
//! one live instance per name unless concurrent. It holds its locks until
//! dropped — also on panic — and can hand them to a child process, after
//! which dropping only closes its descriptors so the child keeps the task
//! live (I3).
//!
//! Joining is a capability (DESIGN.md, "Tasks are capabilities"): a nested
//! run joins a task only with proof that it belongs to it — a descriptor
//! holding the task's lock, inherited from the task (the backend checks it),
//! or the task's secret, which [`CommandTask::handoff`] passes to a child in
//! [`ENV_TASK`] and which storage keeps only as a SHA-256. The id alone
//! proves nothing: ids are printed for people. A joined run publishes a
//! record and a lock of its own ([`TaskRecord::joined`]), so it keeps the
//! task live while it runs, and is admitted by [`admit_joined`]: the
//! parent's standing covers maintenance `refused`, not `required`.

use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::backend::Backend;
use crate::clock::Timestamp;
use crate::config::DEFAULT_LOCK_TIMEOUT;
use crate::error::{Error, Refusal, Result};
use crate::mode::{Mode, ModeView};
use crate::policy::{Maintenance, Policy};
use crate::process::{Holder, Processes};

/// Environment variable carrying the join token (`<task id>:<secret>`, see
/// [`JoinToken`]) to nested runs.
pub const ENV_TASK: &str = "MANAGE_TASK";

/// What is stored about a live task, readable by any process. It never holds
/// the task's secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// This run's identity, printed for people: it proves nothing, and
    /// joining needs more than it (see [`JoinToken`]).
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
    /// The processes recorded at spawn for an external command (its keeper
    /// and the command), read with the record; `None` for a run inside its
    /// runner, whose `pid` holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<Processes>,
    /// For a nested run that joined a task: that task's id (the root's,
    /// whichever run of the task it joined through). Such a run counts as
    /// part of that task, with `started_in` and `in_window` copied from it;
    /// `None` for a task of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined: Option<String>,
}

impl TaskRecord {
    /// Whether this task holds off OFFLINE: it started while ONLINE (I1).
    /// Tasks started during maintenance run inside the window.
    pub fn holds_off_offline(&self) -> bool {
        self.started_in == Mode::Online
    }

    /// The task this run counts as: the one it joined, or its own id.
    pub fn task_id(&self) -> &str {
        self.joined.as_deref().unwrap_or(&self.id)
    }

    /// `user@host`.
    pub fn user_at_host(&self) -> String {
        format!("{}@{}", self.user, self.host)
    }

    /// The pids to stop it by: the processes that hold it now where they
    /// are known (an external command, and what it left behind), otherwise
    /// the process that started it.
    /// Empty when its processes were recorded but none of them can be
    /// found any more (its keeper was killed and a leftover that kept the
    /// inherited lock holds it): the runner's pid would point at the wrong
    /// process.
    pub fn pids(&self) -> Vec<u32> {
        match (&self.processes, self.holders.is_empty()) {
            (_, false) => self.holders.iter().map(|h| h.pid).collect(),
            (Some(_), true) => Vec::new(),
            (None, true) => vec![self.pid],
        }
    }

    /// Who holds it, for people: `pid 4242` for a run inside its runner,
    /// `pid 4242 (sleep 20), pid 4250 (…)` for an external command's
    /// processes, each with its command line.
    pub fn held_by(&self) -> String {
        match (&self.processes, self.holders.is_empty()) {
            (Some(p), true) => {
                return format!(
                    "held by a process it left behind, not known by pid: its keeper (pid {}) is gone",
                    p.keeper.pid
                );
            }
            (None, true) => return format!("pid {}", self.pid),
            _ => {}
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

/// A task's secret: 32 random bytes (hex), made when the task starts and
/// handed to its children in [`ENV_TASK`] only. Storage keeps only its
/// SHA-256; it is never printed (its `Debug` hides it).
#[derive(Clone, PartialEq, Eq)]
pub struct TaskSecret(String);

impl TaskSecret {
    /// A fresh secret from the kernel's random bytes.
    pub fn generate() -> Self {
        TaskSecret(crate::random::hex::<32>())
    }

    /// A secret as it arrives in a token: 64 hex digits, else `None`.
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| TaskSecret(text.to_ascii_lowercase()))
    }

    /// Its SHA-256 as lowercase hex: what storage keeps.
    pub fn sha256_hex(&self) -> String {
        crate::random::to_hex(&Sha256::digest(self.0.as_bytes()))
    }

    /// Whether this is the secret whose stored hash is `sha256_hex`,
    /// compared in constant time (over the digests: the stored hash is not
    /// secret, the secret is).
    pub fn matches(&self, sha256_hex: &str) -> bool {
        let mine = self.sha256_hex();
        mine.len() == sha256_hex.len()
            && mine
                .bytes()
                .zip(sha256_hex.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b.to_ascii_lowercase()))
                == 0
    }
}

impl fmt::Debug for TaskSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TaskSecret(…)")
    }
}

/// What a nested run presents to join a task: the task's id and, when it
/// has it, the task's secret — `<id>:<secret>` in [`ENV_TASK`]. The id
/// alone proves nothing; the backend also accepts, instead of the secret,
/// a descriptor holding the task's lock that this process inherited (the
/// file backend on Linux). Its `Debug` hides the secret.
#[derive(Clone)]
pub struct JoinToken {
    id: String,
    secret: Option<TaskSecret>,
}

impl JoinToken {
    /// Reads a token as [`ENV_TASK`] carries it. Never fails: what is not a
    /// well-formed secret after the first `:` is no secret, and an id of
    /// the wrong shape names no task (the backend says the task is gone).
    pub fn parse(text: &str) -> JoinToken {
        let (id, secret) = match text.split_once(':') {
            Some((id, secret)) => (id, TaskSecret::parse(secret)),
            None => (text, None),
        };
        JoinToken {
            id: id.chars().take(128).collect(),
            secret,
        }
    }

    /// A token for the task `id`, with its secret if known.
    pub fn new(id: impl Into<String>, secret: Option<TaskSecret>) -> JoinToken {
        JoinToken {
            id: id.into(),
            secret,
        }
    }

    /// The task id the token names (printable).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret it carries, if any.
    pub fn secret(&self) -> Option<&TaskSecret> {
        self.secret.as_ref()
    }

    /// The value to put in [`ENV_TASK`] for a child: `<id>:<secret>`, or
    /// the id alone when this run does not know the secret (a child can
    /// then join only by an inherited descriptor). Never print it.
    pub fn env_value(&self) -> String {
        match &self.secret {
            Some(s) => format!("{}:{}", self.id, s.0),
            None => self.id.clone(),
        }
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("id", &self.id)
            .field("secret", &self.secret)
            .finish()
    }
}

/// Whether the process asking belongs to the task a token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// No run of that task is live (or the token names no task at all).
    Gone,
    /// It proved it belongs: it holds an inherited descriptor with the
    /// task's lock, or the task's secret. The record is the task's root
    /// run if that still lives, else one of its joined runs.
    Member(TaskRecord),
    /// The task is live, and this process proved nothing: it only knows the
    /// id.
    Stranger(TaskRecord),
}

/// Decides whether a nested run that proved it belongs to the live task
/// `parent` may join it in the mode in force. The parent's standing covers
/// maintenance `refused` and `allowed` (a job is not refused halfway
/// through); `required` is admitted only while OFFLINE, or while the window
/// its parent runs in is still open (`window_open`: an `offline run`'s
/// command is running) — a leftover of a window's command that joins after
/// the window closed is refused. Drain `block` is not decided here: the joined
/// run's record carries its policy, so an `offline on` refuses while it
/// runs. Every backend calls this one function.
pub fn admit_joined(
    request: &TaskRequest,
    parent: &TaskRecord,
    view: &ModeView,
    window_open: bool,
) -> Result<(), Refusal> {
    match request.policy.maintenance {
        Maintenance::Required
            if view.mode == Mode::Offline
                || (window_open && (parent.in_window || request.in_window)) =>
        {
            Ok(())
        }
        Maintenance::Required => Err(Refusal::MaintenanceRequired {
            command: request.name.clone(),
            mode: view.mode,
        }),
        Maintenance::Refused | Maintenance::Allowed => Ok(()),
    }
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
                token: JoinToken::new(root, token.secret),
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
    fn a_joined_run_is_admitted_by_the_parent_standing_except_required() {
        use Maintenance::*;
        use Mode::*;
        let parent = |in_window| TaskRecord {
            id: "1-1-0".into(),
            name: "deploy".into(),
            argv: vec!["deploy".into()],
            pid: 1,
            user: "u".into(),
            host: "h".into(),
            started_at: Timestamp::at(std::time::UNIX_EPOCH),
            policy: Policy::DEFAULT,
            started_in: Online,
            in_window,
            joined: None,
            holders: Vec::new(),
            processes: None,
        };
        let cases = [
            (Refused, Pending, false, true),
            (Refused, Offline, false, true),
            (Allowed, Pending, false, true),
            (Required, Online, false, false),
            (Required, Pending, false, false),
            (Required, Online, true, true),
            (Required, Offline, false, true),
        ];
        for (policy, mode, in_window, ok) in cases {
            assert_eq!(
                admit_joined(&request(policy), &parent(in_window), &view(mode), true).is_ok(),
                ok,
                "{policy} in {mode}, parent in window: {in_window}"
            );
        }
        // A leftover of a window's command, joining after the window closed.
        assert!(
            admit_joined(&request(Required), &parent(true), &view(Online), false).is_err(),
            "the window is over"
        );
    }

    #[test]
    fn tokens_carry_an_id_and_maybe_a_secret_that_is_never_shown() {
        let secret = TaskSecret::generate();
        let token = JoinToken::new("18f-2a-0", Some(secret.clone()));
        let text = token.env_value();
        let (id, raw) = text.split_once(':').unwrap();
        assert_eq!((id, raw.len()), ("18f-2a-0", 64));
        let back = JoinToken::parse(&text);
        assert_eq!(back.id(), "18f-2a-0");
        assert_eq!(back.secret(), Some(&secret));
        assert!(secret.matches(&secret.sha256_hex()));
        assert!(secret.matches(&secret.sha256_hex().to_uppercase()));
        assert!(!TaskSecret::generate().matches(&secret.sha256_hex()));
        assert!(!secret.matches(""));
        assert!(!format!("{token:?} {back:?} {secret:?}").contains(raw));
        // The id alone, or with something that is no secret.
        for text in ["18f-2a-0", "18f-2a-0:", "18f-2a-0:xyz", "18f-2a-0:a:b"] {
            let t = JoinToken::parse(text);
            assert_eq!((t.id(), t.secret()), ("18f-2a-0", None), "{text}");
            assert_eq!(t.env_value(), "18f-2a-0");
        }
        assert!(JoinToken::parse(&"f".repeat(10_000)).id().len() <= 128);
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
