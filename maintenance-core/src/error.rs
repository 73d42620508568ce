//! The typed errors of this crate: callers decide on the kind (refused,
//! already running, corrupt state, bad configuration), and every message
//! names the thing — file, command, pid — and what to do next.

use std::io;
use std::path::PathBuf;

use crate::clock::{Timestamp, format_age};
use crate::exit;
use crate::identity::program_name;
use crate::mode::Mode;
use crate::records::{TaskRecord, WindowRun};
use crate::schedule::{ScheduleEnd, ScheduleEndReason, ScheduleRecord, local_time};

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in maintenance-core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call on a state file failed. The message says the system's
    /// error once (it is no `source()` too, so an error chain does not
    /// repeat it); a permission error adds the `offline doctor` line to run.
    #[error("cannot {action} {}: {cause}{}", path.display(), permission_hint(cause))]
    Io {
        /// What was being done ("read", "create", "lock", …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The system's error.
        cause: io::Error,
    },
    /// The state is not what this binary can use: corrupt, of an unknown
    /// format version, a symlink where a directory belongs, …
    #[error("{}: {problem}", path.display())]
    State {
        /// The offending file or directory.
        path: PathBuf,
        /// What is wrong and what to do.
        problem: String,
    },
    /// The command may not start now.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The input names something that cannot exist (an empty command name).
    #[error("{0}")]
    Invalid(String),
    /// The PostgreSQL server could not be reached or refused: the message
    /// names `host:port` and what to check, never the password.
    #[error("PostgreSQL at {server}: {problem}")]
    Database {
        /// `host:port`, or the Unix socket's path.
        server: String,
        /// What went wrong and what to check.
        problem: String,
    },
    /// The PostgreSQL server could not be reached at all — no connection,
    /// no answer, the connection lost: nothing was read or changed. The
    /// message names `host:port` and what to check; the run exits
    /// [`exit::UNAVAILABLE`].
    #[error("PostgreSQL at {server}: {problem}")]
    Unreachable {
        /// `host:port`, or the Unix socket's path.
        server: String,
        /// What went wrong and what to check.
        problem: String,
    },
    /// The operation is not available on this backend (yet).
    #[error("{what} is not yet supported on the {backend} backend")]
    Unsupported {
        /// What was asked for.
        what: &'static str,
        /// The backend's name.
        backend: &'static str,
    },
}

impl Error {
    /// The exit code a run ending in this error should use.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Refused(_) => exit::REFUSED,
            Error::Unreachable { .. } => exit::UNAVAILABLE,
            _ => exit::FAILURE,
        }
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            cause: source,
        }
    }

    pub(crate) fn state(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        Error::State {
            path: path.into(),
            problem: problem.into(),
        }
    }
}

/// Why a task was not started.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// The site is in maintenance (PENDING, OFFLINE, or READONLY_PENDING and
    /// READONLY for a command that may write) and the command's policy
    /// refuses that.
    #[error(
        "refusing to run `{command}`: the site is {mode} since {since} (set by {by}){}{}; \
         to run it inside the maintenance window anyway, pass --ignore-maintenance",
        message.as_deref().map(|m| format!(", message: {m:?}")).unwrap_or_default(),
        if matches!(mode, Mode::ReadOnlyPending | Mode::ReadOnly) {
            ", and it may write (a command that only reads declares access read-only)"
        } else {
            ""
        }
    )]
    Maintenance {
        /// The refused command.
        command: String,
        /// The mode in force.
        mode: Mode,
        /// Since when.
        since: Timestamp,
        /// Who set it.
        by: String,
        /// The operator's message.
        message: Option<String>,
    },
    /// The command runs only inside a maintenance window (a read-only one is
    /// none for a command that may write). The way out names this process's
    /// own binary (`mysite offline run -- migrate`).
    #[error(
        "refusing to run `{command}`: the site is {mode}, and it runs only while the site is OFFLINE; \
         run it inside a window: {} offline run -- {command}",
        program_name()
    )]
    MaintenanceRequired {
        /// The refused command.
        command: String,
        /// The mode in force.
        mode: Mode,
    },
    /// A single-instance command is already running.
    #[error("{}", already_running_message(command, holder.as_deref(), *waited_ms))]
    AlreadyRunning {
        /// The command.
        command: String,
        /// The live run holding it, when it could be read.
        holder: Option<Box<TaskRecord>>,
        /// How long this run waited, in milliseconds.
        waited_ms: u64,
    },
    /// An `offline run` holds the window: a second run, or turning the site
    /// ONLINE mid-command, is refused.
    #[error(
        "an `offline run` is running `{}` (pid {}, {}, since {}){what}",
        run.argv.join(" "), run.pid, run.by, run.started_at
    )]
    RunUnderWay {
        /// The run holding the window.
        run: WindowRun,
        /// What was refused and the way out.
        what: String,
    },
    /// Another process is waiting to take the site offline (or read-only).
    #[error(
        "another process is taking the site {} ({mode} since {since}, by {by}); \
         `offline run` needs the window to itself: wait for it, or run `offline off` first",
        if *mode == Mode::ReadOnlyPending { "read-only" } else { "offline" }
    )]
    PendingElsewhere {
        /// The draining mode in force.
        mode: Mode,
        /// Since when.
        since: Timestamp,
        /// Who.
        by: String,
    },
    /// A drain toward another mode is under way: `offline on` while the
    /// site goes READONLY, or `on --read-only` while it goes OFFLINE.
    #[error(
        "the site is {mode} since {since} (by {by}): {what}; wait for that drain to end, or \
         end it with `offline off`"
    )]
    DrainUnderWay {
        /// The draining mode in force.
        mode: Mode,
        /// Since when.
        since: Timestamp,
        /// Who began it.
        by: String,
        /// What was refused, and why.
        what: String,
    },
    /// A wait for OFFLINE from inside a running task would wait for itself.
    #[error(
        "refusing to wait for the site to go offline from inside a running command \
         (`{command}`, task {token}): it would wait for itself; run it from a shell"
    )]
    InsideTask {
        /// The command the caller runs inside.
        command: String,
        /// Its task token.
        token: String,
    },
    /// Commands whose policy is drain `block` are running: going offline is
    /// refused while they run.
    #[error("{}", blocked_message(tasks))]
    Blocked {
        /// The blocking tasks.
        tasks: Vec<TaskRecord>,
    },
    /// The token given to join a task names no live run of it (an exported
    /// variable outliving its task), or no task at all.
    #[error(
        "cannot join task {task}: it is no longer running (the command that started it has ended)"
    )]
    JoinGone {
        /// The task id the token named (never its secret).
        task: String,
    },
    /// The token names a live task, but this process proved nothing: it
    /// holds neither a descriptor with the task's lock, inherited from the
    /// task, nor the task's secret. Knowing a task's id is not being part
    /// of it.
    #[error(
        "refusing to run `{command}` as part of task {} (`{}`, pid {}, {}): this process is not \
         part of that task — it holds neither the task's lock nor its secret, and knowing a \
         task's id proves nothing; to run `{command}` on its own, under the usual rules, unset \
         MANAGE_TASK",
        task.task_id(), task.name, task.pid, task.user_at_host()
    )]
    JoinUnproven {
        /// The command that asked to join.
        command: String,
        /// The live task it named.
        task: Box<TaskRecord>,
    },
    /// The PostgreSQL server has no connection left for the task's own
    /// (every live task holds one: "too many clients").
    #[error(
        "{}PostgreSQL at {server} has no connection left ({message}); every live task holds \
         one connection: raise max_connections on the server, or wait for tasks to end",
        command.as_deref().map(|c| format!("refusing to run `{c}`: ")).unwrap_or_default()
    )]
    NoConnection {
        /// The refused command, when a task start was refused.
        command: Option<String>,
        /// `host:port`.
        server: String,
        /// The server's own words.
        message: String,
    },
    /// A window is already scheduled: one at a time (`offline on --at`).
    #[error("{}", scheduled_message(schedule))]
    Scheduled {
        /// The live schedule.
        schedule: Box<ScheduleRecord>,
    },
    /// The schedule this process waited for was ended by someone else:
    /// `offline off` cancelled it, or `offline on` went offline now.
    #[error("{}", schedule_ended_message(schedule, end))]
    ScheduleEnded {
        /// The schedule.
        schedule: Box<ScheduleRecord>,
        /// How it ended.
        end: ScheduleEnd,
    },
}

/// For a permission error on the state: the command that says who may
/// write it and what to run.
fn permission_hint(cause: &io::Error) -> String {
    if cause.kind() == io::ErrorKind::PermissionDenied {
        format!(
            "; run `{} offline doctor` to see who may write the state and how to fix it",
            program_name()
        )
    } else {
        String::new()
    }
}

fn blocked_message(tasks: &[TaskRecord]) -> String {
    let now = std::time::SystemTime::now();
    let names: Vec<String> = tasks
        .iter()
        .map(|t| {
            format!(
                "`{}` (pid {}, {}@{}, running for {})",
                t.name,
                t.pid,
                t.user,
                t.host,
                format_age(t.started_at.age(now))
            )
        })
        .collect();
    format!(
        "refusing to go offline: {} {} maintenance while {} (drain block); wait for {} to finish, \
         or pass --force",
        names.join(", "),
        if tasks.len() == 1 { "blocks" } else { "block" },
        if tasks.len() == 1 {
            "it runs"
        } else {
            "they run"
        },
        if tasks.len() == 1 { "it" } else { "them" },
    )
}

fn scheduled_message(schedule: &ScheduleRecord) -> String {
    format!(
        "{} {} window is already scheduled at {} by {} (pid {}){}; only one at a time: \
         cancel it with `{} offline off`, or let it run and schedule the next one afterwards",
        if schedule.read_only { "a" } else { "an" },
        kind(schedule),
        local_time(schedule.at),
        schedule.by,
        schedule.pid,
        schedule
            .argv
            .as_ref()
            .map(|a| format!(", to run `{}`", a.join(" ")))
            .unwrap_or_default(),
        program_name()
    )
}

/// `offline` or `read-only`: the kind of window `schedule` is.
fn kind(schedule: &ScheduleRecord) -> &'static str {
    if schedule.read_only {
        "read-only"
    } else {
        "offline"
    }
}

fn schedule_ended_message(schedule: &ScheduleRecord, end: &ScheduleEnd) -> String {
    let when = local_time(schedule.at);
    let kind = kind(schedule);
    let who = format!("{} (pid {})", end.by, end.pid);
    match end.why {
        ScheduleEndReason::Cancelled => format!(
            "the {kind} window scheduled at {when} was cancelled by {who} with `offline off`: \
             the site is ONLINE"
        ),
        ScheduleEndReason::Superseded => format!(
            "the {kind} window scheduled at {when} ended: {who} took the site offline now with \
             `offline on`"
        ),
        why => format!(
            "the {kind} window scheduled at {when} ended ({}) by {who}",
            why.as_str()
        ),
    }
}

fn already_running_message(command: &str, holder: Option<&TaskRecord>, waited_ms: u64) -> String {
    let waited = format!("{:.1}s", waited_ms as f64 / 1000.0);
    match holder {
        Some(h) => {
            let now = std::time::SystemTime::now();
            format!(
                "`{command}` is already running: pid {}, started {} by {}@{} ({} ago); \
                 it runs one instance at a time (waited {waited}; --lock-timeout waits longer)",
                h.pid,
                h.started_at,
                h.user,
                h.host,
                format_age(h.started_at.age(now)),
            )
        }
        None => format!(
            "`{command}` is already running (its holder ended or could not be read); \
             it runs one instance at a time (waited {waited}; --lock-timeout waits longer)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_system_error_is_said_once_and_a_permission_error_points_to_the_doctor() {
        let bin = program_name();
        for errno in [libc::EACCES, libc::EPERM] {
            let e = Error::io(
                "create state directory",
                "/srv/state",
                io::Error::from_raw_os_error(errno),
            );
            let cause = io::Error::from_raw_os_error(errno).to_string();
            let msg = e.to_string();
            assert!(
                msg.starts_with("cannot create state directory /srv/state: "),
                "{msg}"
            );
            assert_eq!(msg.matches(&cause).count(), 1, "{msg}");
            assert!(
                std::error::Error::source(&e).is_none(),
                "a chain would say the cause again"
            );
            assert!(
                msg.contains(&format!("run `{bin} offline doctor`")),
                "{msg}"
            );
        }
        let e = Error::io(
            "write",
            "/srv/state/mode.json",
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert!(!e.to_string().contains("doctor"), "{e}");
    }
}
