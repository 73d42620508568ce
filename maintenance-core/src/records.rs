//! The records a backend keeps and hands out: a live task's
//! [`TaskRecord`], the [`TaskRequest`] it was admitted from, the
//! [`WindowRun`] of an `offline run` holding the window, and the
//! [`WritesInFlight`] a web layer publishes while a read-only drain waits for
//! its unsafe requests. Plain data, readable by any process; none of it
//! holds a task's secret.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::mode::Mode;
use crate::policy::Policy;
use crate::process::{Holder, Processes};

/// What is stored about a live task, readable by any process. It never holds
/// the task's secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// This run's identity, printed for people: it proves nothing, and
    /// joining needs more than it (see [`JoinToken`](crate::join::JoinToken)).
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
    /// Whether this task holds off OFFLINE: it started while the site was
    /// open to users — ONLINE, READONLY_PENDING or READONLY (I1; a task
    /// started during READONLY, read-only or `allowed`, holds off a later
    /// OFFLINE like any other). Tasks started during PENDING or OFFLINE run
    /// inside the window.
    pub fn holds_off_offline(&self) -> bool {
        matches!(
            self.started_in,
            Mode::Online | Mode::ReadOnlyPending | Mode::ReadOnly
        )
    }

    /// Whether this task holds off READONLY: it may write and started while
    /// ONLINE. A read-only command never does, and what started during
    /// READONLY_PENDING or READONLY (read-only, `allowed`, the override, an
    /// `offline run --read-only` command) runs inside the read-only window.
    pub fn holds_off_read_only(&self) -> bool {
        self.started_in == Mode::Online && !self.policy.is_read_only()
    }

    /// Whether a drain in `view` asks this task to stop, when its drain is
    /// `stop`: once the site leaves ONLINE for a task that holds off
    /// READONLY, once it goes PENDING or OFFLINE for one that holds off
    /// OFFLINE only (a read-only command reads on through READONLY).
    pub fn drained_in(&self, view: &crate::mode::ModeView) -> bool {
        let mode = view.mode;
        (self.holds_off_read_only() && mode != Mode::Online)
            || (self.holds_off_offline() && matches!(mode, Mode::Pending | Mode::Offline))
    }

    /// The task this run counts as: the one it joined, or its own id.
    pub fn task_id(&self) -> &str {
        self.joined.as_deref().unwrap_or(&self.id)
    }

    /// What a listing says of its standing besides its policy: `joined
    /// task ID` for a nested run that joined a task, `inside the window`
    /// for a run that does not hold off OFFLINE.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(id) = &self.joined {
            notes.push(format!("joined task {id}"));
        }
        if !self.holds_off_offline() {
            notes.push("inside the window".to_owned());
        } else if self.started_in != Mode::Online {
            notes.push("inside the read-only window".to_owned());
        }
        notes
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

/// A web layer process with unsafe requests in flight, published while the
/// site is READONLY_PENDING so that the drain waits for them. It counts
/// exactly as long as the process holds it (a killed layer stops counting
/// at once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WritesInFlight {
    /// The layer's process.
    pub pid: u32,
    /// `user@host` of that process.
    pub by: String,
    /// When it published them.
    pub since: Timestamp,
}

impl fmt::Display for WritesInFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unsafe web requests in flight in the web layer of pid {} ({}, since {})",
            self.pid, self.by, self.since
        )
    }
}

/// An `offline run` holding the maintenance window while its command runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowRun {
    /// The command it runs, with its arguments.
    pub argv: Vec<String>,
    /// The `offline run` process.
    pub pid: u32,
    /// `user@host` of its operator.
    pub by: String,
    /// When it began (its wait), then when its command started.
    pub started_at: Timestamp,
    /// Whether its command runs (it has the window); `false` while it still
    /// waits for OFFLINE.
    #[serde(default)]
    pub running: bool,
    /// Its window is READONLY (`offline run --read-only`), not OFFLINE.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

impl WindowRun {
    /// Whether this run, its command not started, has entered its window:
    /// `record` (the mode record in force) is the window's mode, OFFLINE or
    /// READONLY for a read-only run, written by this run's process since it
    /// began. Durable in the record itself, so a run killed between that
    /// write and its command's start is seen abandoned as one killed in its
    /// command is (a drain it began, lapsed or not, is not its window).
    pub fn entered(&self, record: &crate::mode::ModeRecord) -> bool {
        let window = if self.read_only {
            crate::mode::Mode::ReadOnly
        } else {
            crate::mode::Mode::Offline
        };
        record.mode == window && record.pid == self.pid && record.by == self.by
    }

    /// Whether this run, its process gone, left the site in its window:
    /// killed while its command ran, or once it had [`entered`](Self::entered)
    /// the window before its command started.
    pub fn abandoned_in(&self, record: &crate::mode::ModeRecord) -> bool {
        self.running || self.entered(record)
    }
}
