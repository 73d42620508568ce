//! The [`Backend`] trait: where mode, tasks and sessions live. Synchronous,
//! and made of whole operations, each atomic inside the backend — the gate
//! that orders task starts against mode changes lives here, never in the
//! callers' hands — so a PostgreSQL backend can keep one transaction or
//! advisory lock per operation. Callers never see which backend they use.

pub mod file;
#[cfg(feature = "postgres")]
pub mod postgres;
mod unrecorded;

use std::fmt;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{SharedClock, Timestamp};
use crate::config::{BackendKind, Config};
use crate::error::Result;
use crate::history::{EntryDraft, HistoryEntry, HistoryQuery, HistoryRead};
use crate::hooks::Hooks;
use crate::identity::Identity;
use crate::join::JoinToken;
use crate::mode::{ModeRecord, ModeView, RetryAfter};
use crate::process::Processes;
use crate::records::{TaskRecord, TaskRequest, WritesInFlight};
use crate::session::{SessionEntry, SessionKey};

pub use crate::records::WindowRun;
pub use crate::schedule::{EndedSchedule, ScheduleEnd, ScheduleEndReason, ScheduleRecord};
pub use file::FileBackend;

/// Who asks for a mode change, and what they want users to read.
#[derive(Debug, Clone, PartialEq)]
pub struct ModeChange {
    /// `user@host` of the operator.
    pub by: String,
    /// The operator's process.
    pub pid: u32,
    /// The message for users; `None` keeps the current one when joining.
    pub message: Option<String>,
    /// When users should come back; `None` keeps the current one when
    /// joining.
    pub retry_after: Option<RetryAfter>,
    /// The SHA-256 (hex) of a bypass secret; `None` keeps the current one.
    pub bypass: Option<String>,
    /// The hooks to run after each change this request makes (none by
    /// default); backends never run them, the state machine does
    /// ([`crate::transition`]).
    pub hooks: Hooks,
    /// The history entry of the mode change this request makes, which the
    /// backend records in the same durable step as the mode it writes
    /// (none: the change is not recorded). The state machine sets it
    /// ([`crate::transition`]).
    pub entry: Option<EntryDraft>,
}

impl ModeChange {
    /// A change made by this process, with no message.
    pub fn by_this_process() -> Self {
        let me = Identity::current();
        ModeChange {
            by: me.user_at_host(),
            pid: me.pid,
            message: None,
            retry_after: None,
            bypass: None,
            hooks: Hooks::none(),
            entry: None,
        }
    }

    /// Writes this change's message, retry-after and bypass into `record`
    /// where given; returns whether anything was given.
    pub fn update(&self, record: &mut ModeRecord) -> bool {
        let given = self.message.is_some() || self.retry_after.is_some() || self.bypass.is_some();
        if let Some(m) = &self.message {
            record.message = Some(m.clone());
        }
        if let Some(r) = self.retry_after {
            record.retry_after = Some(r);
        }
        if let Some(b) = &self.bypass {
            record.bypass = Some(b.clone());
        }
        given
    }

    /// This change with the hash of a bypass secret.
    pub fn bypass(mut self, bypass_sha256: Option<String>) -> Self {
        self.bypass = bypass_sha256;
        self
    }

    /// This change with a message for users.
    pub fn message(mut self, message: Option<String>) -> Self {
        self.message = message;
        self
    }

    /// This change with a `Retry-After`.
    pub fn retry_after(mut self, retry_after: Option<RetryAfter>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// This change with the hooks to run after each mode change it makes.
    pub fn hooks(mut self, hooks: Hooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// This change, recording `draft` with the mode it writes.
    pub fn recording(&self, draft: EntryDraft) -> Self {
        ModeChange {
            entry: Some(draft),
            ..self.clone()
        }
    }
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
    /// Says that the child the locks were handed to has ended and left
    /// nothing behind that holds them (its keeper is closing them): ending
    /// the task is this lease's again, so that its drop frees the task
    /// before it returns rather than when the last inherited copy closes.
    fn take_back_from_child(&mut self);
    /// Records the processes spawned for this task (an external command
    /// and its keeper), so that status can name what holds it after the
    /// runner is gone.
    fn set_processes(&mut self, processes: &Processes) -> Result<()>;
    /// Has `lost` called, once, when this task's hold is lost for good
    /// (I1 across a partition): its lock's connection failed and the task
    /// could not enter again through the gate in time, or the gate refused
    /// it (the site went PENDING or OFFLINE meanwhile). The caller stops
    /// the command (`ctx.stop_requested()`, SIGTERM, then SIGKILL after
    /// [`STOP_GRACE`](crate::task::STOP_GRACE)). `lost` is called on the
    /// backend's own thread and must not block. Backends whose hold cannot
    /// be lost while the process lives (files) never call it.
    fn on_hold_lost(&mut self, lost: Box<dyn FnOnce(HoldLost) + Send>) {
        drop(lost);
    }
}

/// Why a task's hold was lost for good ([`TaskLease::on_hold_lost`]).
#[derive(Debug, Clone)]
pub enum HoldLost {
    /// The lock's connection failed, and the server could not be reached
    /// again before the server may free the lock: what it said.
    Unreachable(String),
    /// Back on the server, the gate refused the task, as it would refuse
    /// its start now.
    Refused(crate::error::Refusal),
}

impl fmt::Display for HoldLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HoldLost::Unreachable(why) => write!(
                f,
                "the connection holding the task's lock failed and the database could not be \
                 reached again in time ({why})"
            ),
            HoldLost::Refused(r) => write!(
                f,
                "the connection holding the task's lock was lost, and the task may not enter \
                 again: {r}"
            ),
        }
    }
}

/// One process's place among those waiting to take the site offline. PENDING
/// lasts while any is held (I5); dropping it without [`Backend::leave_pending`]
/// (a crash) lets PENDING lapse once no other waiter remains.
pub trait WaiterLease: Send + fmt::Debug {
    /// When the PENDING this waiter belongs to began.
    fn pending_since(&self) -> Timestamp;

    /// Keeps this waiter's place after its hold may have been lost (on
    /// PostgreSQL: the server ended its connection, a restart): takes it
    /// again, unless the draining record is no longer the one it waits
    /// for (then it lets go of what it took, and the wait's next look at
    /// the mode sees whose it is). `Ok(true)` when it took its place
    /// again: the drain had lapsed meanwhile for every reader, so the
    /// settle time counts again. Fails
    /// ([`Error::Unreachable`](crate::Error::Unreachable)) while the server
    /// cannot be reached, or while its hold is still kept by the server for
    /// a connection this process gave up (the wait tries again, as
    /// through an outage). Backends whose hold cannot be lost while the
    /// process lives (files) always hold it.
    fn keep(&self) -> Result<bool> {
        Ok(false)
    }

    /// Told by its backend, which found this waiter's hold gone (on
    /// PostgreSQL: its key free under the gate) while the process may not
    /// have noticed yet (its connection still seems open): the next
    /// [`keep`](Self::keep) takes it again at once. Nothing on backends
    /// whose hold cannot be lost.
    fn lost(&self) {}
}

/// A web layer's published unsafe requests in flight ([`WritesInFlight`]):
/// they hold off READONLY while this is held, and stop the moment it is
/// dropped or its process dies.
pub trait WritesLease: Send + fmt::Debug {}

/// The hold of an `offline run` on the window; dropping it (the command
/// ended) clears the record. A killed holder leaves the record behind, so
/// status can say which run left the site OFFLINE.
pub trait WindowLease: Send + fmt::Debug {
    /// Records that the run's command starts now, inside the window.
    fn command_started(&mut self, at: Timestamp) -> Result<()>;
    /// Whether the run holds the window now; when it lost it and could not
    /// take it back (the database unreachable, or another run took it),
    /// what happened. Backends whose hold cannot be lost while the process
    /// lives (files) always hold it.
    fn hold_lost(&self) -> Option<String> {
        None
    }
}

/// A scheduled window's hold, kept by the process waiting for its time
/// (`offline on --at`): the schedule lives exactly as long as this lease's
/// process does, as a PENDING waiter's lock (I5) — killed, by any signal,
/// the schedule is gone for every reader at once. Dropping it without an
/// end (a crash, or a kill) leaves the schedule lapsed; every other end is
/// written, once, by whoever ended it.
pub trait ScheduleLease: Send + fmt::Debug {
    /// The stored schedule, with the id and `set_at` the backend gave it.
    fn record(&self) -> &ScheduleRecord;

    /// Blocks until someone ends this schedule ([`Backend::end_schedule`],
    /// or its time came through [`Backend::begin_scheduled_pending`]) or
    /// `timeout` passes; returns the end, if there is one. Returns within
    /// 100 ms of an end.
    fn wait_ended(&self, timeout: Duration) -> Result<Option<ScheduleEnd>>;

    /// Ends this schedule by its own process (its wait interrupted, or an
    /// error before its time, or an `offline run` that found its window
    /// open already): every reader sees no schedule from now on.
    fn end(&mut self, end: &ScheduleEnd) -> Result<()>;
}

/// What is known of the window's holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowState {
    /// No `offline run` holds the window.
    Free,
    /// An `offline run` is waiting for OFFLINE; its command has not started.
    Waiting(WindowRun),
    /// This run's command is running now.
    Running(WindowRun),
    /// This run died while its command ran (the site stays OFFLINE until
    /// someone turns it ONLINE).
    Abandoned(WindowRun),
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

/// What [`Backend::begin_pending`] found and did.
#[derive(Debug)]
pub enum PendingStart {
    /// The site is PENDING (begun now, or joined) and this process waits.
    Waiting {
        /// This waiter's lease.
        waiter: Box<dyn WaiterLease>,
        /// The PENDING record in force.
        record: ModeRecord,
        /// Whether another process's PENDING was joined.
        joined: bool,
    },
    /// The site was already OFFLINE; message and retry-after were updated.
    AlreadyOffline(ModeRecord),
}

/// What [`Backend::begin_read_only`] found and did.
#[derive(Debug)]
pub enum ReadOnlyStart {
    /// The site is READONLY_PENDING (begun now, or joined) and this process
    /// waits.
    Waiting {
        /// This waiter's lease.
        waiter: Box<dyn WaiterLease>,
        /// The READONLY_PENDING record in force.
        record: ModeRecord,
        /// Whether another process's READONLY_PENDING was joined.
        joined: bool,
    },
    /// The site was already READONLY, or OFFLINE (which stops writes too,
    /// and stays): message and retry-after were updated. The record says
    /// which.
    Already(ModeRecord),
}

/// What [`Backend::complete_offline`] or [`Backend::complete_read_only`]
/// found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// The site is OFFLINE (this call or another waiter took it there).
    Offline(ModeRecord),
    /// The site is READONLY (this call or another waiter took it there).
    ReadOnly(ModeRecord),
    /// Someone turned the site back ONLINE while we waited.
    Cancelled(ModeRecord),
    /// Still draining: tasks that hold off the target are live at the final
    /// look under the gate (a nested run joined a live task after the
    /// waiter's last look); the waiter keeps waiting.
    Held(Vec<TaskRecord>),
}

/// Where mode, tasks and sessions live.
///
/// **The web-server markers** (where a backend keeps them on this host)
/// follow the record in force after every mode change, whether it
/// succeeded or returned an error (I5): `OFFLINE` exists exactly while the
/// record's legacy mode is OFFLINE (OFFLINE, READONLY, and a PENDING begun
/// from READONLY: what a binary that predates READONLY acts on), `READONLY`
/// exactly while writes are refused ([`ModeView::writes_refused`]). Each is
/// written before a record that needs it and taken back if that record
/// cannot be written; it is removed after a record that does not, and
/// stays if that record cannot be written. A web server that knows both
/// checks `READONLY` first.
///
/// **Draining modes** (PENDING, READONLY_PENDING) hold only while a
/// waiter does (I5): when the last one is gone the mode in force is the one
/// the record lapses to ([`ModeRecord::lapses_to`]).
///
/// **Time.** Sessions age by a clock no single process can step: the
/// [`Clock::boot_time`](crate::clock::Clock::boot_time) of the backend's
/// clock where it has one (a server's clock, for a backend on a server),
/// never a process's wall clock, which only turns ages into times people
/// read. So a step of one process's wall clock, or of everyone's, neither
/// expires a session nor makes any process remove one that others still
/// count; after a reboot, sessions of before it count until the timeout
/// has passed on the new boot's clock. Without a boot clock (macOS) the
/// wall clock decides, and what it judged expired is removed only once it
/// has been expired for the tolerated skew (the file backend's
/// [`WALL_SKEW`](file::WALL_SKEW), an hour).
pub trait Backend: Send + Sync + fmt::Debug {
    /// Where the state is, for people: `state directory /var/lib/site`.
    fn location(&self) -> String;

    /// The clock every time-based decision of this backend uses.
    fn clock(&self) -> &SharedClock;

    /// The mode in force, with the stored record; a PENDING whose waiters
    /// all died reads as ONLINE and says why (I5). A web-server marker
    /// that disagrees with the record (a crash between the two writes) is
    /// put right on the way when no mode change is under way and this user
    /// may write it; otherwise the view says so ([`ModeView::stray_marker`]).
    fn mode(&self) -> Result<ModeView>;

    /// Admits and records a task, atomically against mode changes (the
    /// gate): refused while PENDING/OFFLINE unless allowed, one instance per
    /// name unless concurrent (waiting up to the request's lock timeout).
    /// Puts a disagreeing marker right afterwards, as [`mode`](Self::mode)
    /// does. `secret_sha256` is the hash of the task's secret, the one thing of
    /// it stored: a nested run presenting the secret joins the task.
    fn start_task(&self, request: &TaskRequest, secret_sha256: &str) -> Result<Box<dyn TaskLease>>;

    /// Joins the live task `token` names, for a nested run: checks, under
    /// the gate, that a run of that task (its root, or a run that joined
    /// it) is live and that this process proves it belongs to it — the
    /// task's secret, or a descriptor holding the task's lock that it
    /// inherited — then admits `request` by [`admit_joined`] and records it
    /// as a run of its own: its pid, name, argv and policy, with
    /// [`TaskRecord::joined`] naming the task and the task's `started_in`
    /// and `in_window`. Its own lock keeps the task live after every other
    /// process of it has died. Takes no instance lock. Refused with
    /// `JoinGone` when no run of the task lives, `JoinUnproven` without
    /// proof.
    ///
    /// [`admit_joined`]: crate::admission::admit_joined
    fn join_task(&self, token: &JoinToken, request: &TaskRequest) -> Result<Box<dyn TaskLease>>;

    /// Whether this process belongs to the task `token` names (the proof
    /// [`join_task`](Backend::join_task) asks for), without joining it.
    fn membership(&self, token: &JoinToken) -> Result<Membership>;

    /// Every live task, sorted by start time. Never makes a dead task look
    /// live to another reader.
    fn tasks(&self) -> Result<Vec<TaskRecord>>;

    /// Removes the leftovers of dead tasks and waiters; returns how many.
    fn reap(&self) -> Result<usize>;

    /// Goes PENDING from ONLINE, or from READONLY (the record's `from` says
    /// so, and a lapse goes back to READONLY), or joins a PENDING already
    /// under way, updating message and retry-after where given; registers
    /// this process as a waiter. While OFFLINE, only updates message and
    /// retry-after. Refused ([`Refusal::DrainUnderWay`]) while
    /// READONLY_PENDING.
    ///
    /// [`Refusal::DrainUnderWay`]: crate::Refusal::DrainUnderWay
    fn begin_pending(&self, change: &ModeChange) -> Result<PendingStart>;

    /// Takes the site from this waiter's PENDING to OFFLINE, unless someone
    /// turned it ONLINE meanwhile, or a task that holds off OFFLINE is live
    /// at this final look, made under the gate so that no join slips in
    /// between ([`Completion::Held`], I1). Writes the web-server marker
    /// before the record; records `entry` (if any) with it, in the same
    /// durable step.
    fn complete_offline(
        &self,
        waiter: &dyn WaiterLease,
        entry: Option<&EntryDraft>,
    ) -> Result<Completion>;

    /// This waiter leaves without success: when it was the last one and the
    /// site is still in its PENDING or READONLY_PENDING, the site goes back
    /// to the mode that drain came from (ONLINE, or READONLY). Returns the
    /// record in force afterwards.
    fn leave_pending(
        &self,
        waiter: Box<dyn WaiterLease>,
        change: &ModeChange,
    ) -> Result<ModeRecord>;

    /// OFFLINE at once, whatever is live (`--force`).
    fn force_offline(&self, change: &ModeChange) -> Result<ModeRecord>;

    /// Goes READONLY_PENDING from ONLINE (unsafe web requests are refused
    /// at once, tasks that may write are refused and drain), or joins a
    /// READONLY_PENDING under way, registering this process as a waiter;
    /// message and retry-after are updated where given. While READONLY or
    /// OFFLINE only updates them ([`ReadOnlyStart::Already`]). Refused
    /// ([`Refusal::DrainUnderWay`]) while PENDING.
    ///
    /// [`Refusal::DrainUnderWay`]: crate::Refusal::DrainUnderWay
    fn begin_read_only(&self, change: &ModeChange) -> Result<ReadOnlyStart>;

    /// Takes the site from this waiter's READONLY_PENDING to READONLY,
    /// unless someone turned it ONLINE (cancelled) or OFFLINE meanwhile, or
    /// a task that holds off READONLY ([`TaskRecord::holds_off_read_only`])
    /// is live at this final look, made under the gate
    /// ([`Completion::Held`]). Writes the READONLY and OFFLINE markers
    /// before the record. The caller has waited for the settle time and for
    /// [`writes_in_flight`](Self::writes_in_flight) to empty. Records
    /// `entry` (if any) with the record, in the same durable step.
    fn complete_read_only(
        &self,
        waiter: &dyn WaiterLease,
        entry: Option<&EntryDraft>,
    ) -> Result<Completion>;

    /// READONLY at once, from any mode, whatever is live: `--read-only
    /// --force`, and `offline run` putting back the READONLY it found.
    /// Keeps the message, retry-after and bypass in force unless `change`
    /// sets them.
    fn go_read_only(&self, change: &ModeChange) -> Result<ModeRecord>;

    /// Makes ready what [`Backend::begin_writes`] needs, so that it is
    /// quick when a drain begins: on PostgreSQL a connection holding its
    /// key, kept from then on (and reused by every later publication).
    /// Nothing on files.
    fn prepare_writes(&self) -> Result<()> {
        Ok(())
    }

    /// Publishes that this process (a web layer) has unsafe requests in
    /// flight, until the lease is dropped: a read-only drain waits for it.
    /// Never refused by the mode. On PostgreSQL one round trip once
    /// [`Backend::prepare_writes`] succeeded.
    fn begin_writes(&self) -> Result<Box<dyn WritesLease>>;

    /// Every web layer process that has published unsafe requests in
    /// flight and still holds them. Never makes a dead process look live.
    fn writes_in_flight(&self) -> Result<Vec<WritesInFlight>>;

    /// ONLINE from any state; a waiter sees it and ends as cancelled.
    fn go_online(&self, change: &ModeChange) -> Result<ModeRecord>;

    /// Blocks until one of `tasks` ends, the mode record's generation moves
    /// past `generation`, or `timeout` passes — whichever comes first. A task
    /// killed by any signal counts as ended the moment it dies. Returns
    /// early and often enough (within 100 ms of a change) to keep a waiting
    /// caller responsive; spurious returns are allowed.
    fn wait_for_change(
        &self,
        generation: u64,
        tasks: &[TaskRecord],
        timeout: Duration,
    ) -> Result<()>;

    /// Takes the window for an `offline run`; refused (a typed refusal) while
    /// another run holds it.
    fn begin_window_run(&self, run: &WindowRun) -> Result<Box<dyn WindowLease>>;

    /// Who holds the window, or which run died holding it.
    fn window(&self) -> Result<WindowState>;

    /// Schedules a window (`offline on --at`), held by this process for as
    /// long as it lives ([`ScheduleLease`]); the backend gives the record
    /// its id and `set_at`. Refused ([`Refusal::Scheduled`], naming it)
    /// while another schedule is live: one at a time.
    ///
    /// [`Refusal::Scheduled`]: crate::error::Refusal::Scheduled
    fn begin_schedule(&self, schedule: &ScheduleRecord) -> Result<Box<dyn ScheduleLease>>;

    /// The live schedule, if any: one whose process still holds it and
    /// that nobody ended. A killed holder's schedule is never returned.
    fn schedule(&self) -> Result<Option<ScheduleRecord>>;

    /// Ends the live schedule as `end` says (`offline off` cancels it;
    /// `offline on` without `--at` supersedes it); its waiting process
    /// learns of it within 100 ms ([`ScheduleLease::wait_ended`]). Returns
    /// the schedule ended with its end as stored, `None` when none was
    /// live. Ordered against
    /// [`begin_scheduled_pending`](Self::begin_scheduled_pending) by the
    /// gate: a schedule ended first never goes PENDING.
    fn end_schedule(&self, end: &ScheduleEnd) -> Result<Option<EndedSchedule>>;

    /// The schedule's time came: as [`begin_pending`](Self::begin_pending),
    /// and in the same step, under the gate, the schedule ends (`due`; no
    /// reader sees both the schedule and its PENDING) — unless someone
    /// ended it first, then refused with [`Refusal::ScheduleEnded`], saying
    /// who, and nothing changes.
    ///
    /// [`Refusal::ScheduleEnded`]: crate::error::Refusal::ScheduleEnded
    fn begin_scheduled_pending(
        &self,
        schedule: &dyn ScheduleLease,
        change: &ModeChange,
    ) -> Result<PendingStart>;

    /// A read-only schedule's time came
    /// ([`ScheduleRecord::read_only`]): as
    /// [`begin_read_only`](Self::begin_read_only), and in the same step,
    /// under the gate, the schedule ends (`due`), exactly as
    /// [`begin_scheduled_pending`](Self::begin_scheduled_pending) does for
    /// PENDING — refused with [`Refusal::ScheduleEnded`] if someone ended
    /// it first, and nothing changes.
    ///
    /// [`Refusal::ScheduleEnded`]: crate::error::Refusal::ScheduleEnded
    fn begin_scheduled_read_only(
        &self,
        schedule: &dyn ScheduleLease,
        change: &ModeChange,
    ) -> Result<ReadOnlyStart>;

    /// How long a session stays live after its last activity.
    fn session_timeout(&self) -> Duration;

    /// Records activity of a session, now. Never refused, in any mode: the
    /// layer decides who gets in; the backend only counts (I2).
    fn touch_session(&self, key: &SessionKey) -> Result<()>;

    /// Records activity of every session in `keys`, now, as
    /// [`touch_session`](Self::touch_session) of each does (a key given
    /// twice counts once): the web layer's batch of repeat touches. A
    /// backend on a server writes them in one statement; the default
    /// touches each in turn, and returns the first error once it has tried
    /// them all.
    fn touch_sessions(&self, keys: &[SessionKey]) -> Result<()> {
        let mut first = None;
        for key in keys {
            if let Err(e) = self.touch_session(key) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Ends a session (logout): it stops counting at once.
    fn end_session(&self, key: &SessionKey) -> Result<()>;

    /// The session `key`, if it is live.
    fn session(&self, key: &SessionKey) -> Result<Option<SessionEntry>>;

    /// Every live session, most recently active first. Expired ones are
    /// removed in bulk on the way, never before every process would judge
    /// them expired (see "Time" above).
    fn sessions(&self) -> Result<Vec<SessionEntry>>;

    /// How many sessions are live, and when the last expires, without
    /// listing them: what `offline status` shows (the file backend reads
    /// one count per time bucket; a database would read an index). Never
    /// fewer than [`sessions`] would list at the same moment, whatever
    /// writers in other processes do meanwhile and wherever one is killed.
    /// It may count more — a session with entries from several processes,
    /// a writer killed between its count and its entry — until the next
    /// listing puts the first right, or the entry's time runs out for the
    /// second. Expired sessions never count. No decision rests on it:
    /// `offline on` and the drain count from [`sessions`] (I1, I2).
    ///
    /// [`sessions`]: Backend::sessions
    fn session_summary(&self) -> Result<SessionSummary>;

    /// Removes what every process judges expired, as [`sessions`] does on
    /// its way, without listing the live ones; returns how much went. Web
    /// layers call it now and then, so that a site nobody runs `status` on
    /// does not gather expired sessions (each logout would look through
    /// them all).
    ///
    /// [`sessions`]: Backend::sessions
    fn prune_sessions(&self) -> Result<usize>;

    /// Appends `entry` to the history, bounded as the backend is configured
    /// (the file backend rotates past `[history] max_size`). An entry with
    /// an [`id`](HistoryEntry::id) that a recent entry already has (the
    /// same change, recorded by another process first) is not appended:
    /// returns `false` then. Appends of several processes never tear one
    /// another.
    fn append_history(&self, entry: &HistoryEntry) -> Result<bool>;

    /// The history, oldest first, as `query` asks. A stored entry that
    /// cannot be read (garbled, hostile, of a newer format) is skipped and
    /// named in [`HistoryRead::skipped`]; reading never fails for it.
    fn history(&self, query: &HistoryQuery) -> Result<HistoryRead>;

    /// Records the changes nobody lived to record — a PENDING whose waiters
    /// all died (it lapsed to ONLINE), an `offline run` killed while its
    /// command ran, a schedule whose process died before anyone ended it
    /// ([`EventKind::ScheduleLapsed`]) — exactly once however many
    /// processes notice them at once, and returns the entries this backend
    /// appended so: in this call, or on the way in one of its own mode
    /// changes or schedule operations since the last call (each writer
    /// records a lapse it replaces, under the gate). Cheap when there is
    /// nothing to record.
    ///
    /// [`EventKind::ScheduleLapsed`]: crate::history::EventKind::ScheduleLapsed
    fn record_unrecorded(&self) -> Result<Vec<HistoryEntry>>;

    /// Everything `offline status` reads — the mode, the live tasks, the
    /// sessions' summary, the writes in flight, the window and the live
    /// schedule — in one look, for a backend that can make it in one round
    /// trip; `None` (the default) to read them one by one. The look says
    /// too whether something nobody lived to record may be waiting, so that
    /// [`record_unrecorded`](Self::record_unrecorded) (and its gate) is
    /// called only then.
    fn status_look(&self) -> Result<Option<StatusLook>> {
        Ok(None)
    }

    /// A feed of this site's mode changes as the backend pushes them, for
    /// a reader that keeps a copy of the mode (the web layer) and re-reads
    /// it on news; `None` (the default) where nothing pushes — the file
    /// backend, read every `refresh_interval` instead.
    fn changes(&self) -> Option<Box<dyn ChangeFeed>> {
        None
    }
}

/// Mode changes pushed by a backend ([`Backend::changes`]), for one reader
/// on a thread of its own.
pub trait ChangeFeed: Send + fmt::Debug {
    /// Blocks up to `timeout` for news: `true` when the reader must read the
    /// mode again — a change committed, or the push was lost or made again
    /// (a change made while nobody listened is never pushed) — and `false`
    /// when `timeout` passed without any. Spurious news is allowed.
    fn wait(&mut self, timeout: Duration) -> bool;
}

/// What [`Backend::status_look`] read.
#[derive(Debug, Clone)]
pub struct StatusLook {
    /// The mode view.
    pub view: ModeView,
    /// Live tasks, oldest first.
    pub tasks: Vec<TaskRecord>,
    /// Live sessions: how many, and when the last expires.
    pub sessions: SessionSummary,
    /// Web layer processes with unsafe requests in flight.
    pub writes: Vec<WritesInFlight>,
    /// The `offline run` window.
    pub window: WindowState,
    /// The live scheduled window, if any.
    pub schedule: Option<ScheduleRecord>,
    /// Whether something nobody lived to record (a lapsed drain, a run
    /// killed mid-command, a schedule whose process died) was seen
    /// unrecorded: then [`Backend::record_unrecorded`] records it, and the
    /// window and the schedule are read again after it.
    pub to_record: bool,
}

/// How many web sessions are live, as `offline status` shows them, read
/// without listing them: see [`Backend::session_summary`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionSummary {
    /// Live sessions: never fewer than a listing at the same moment finds,
    /// at times more.
    pub count: usize,
    /// When the last of them expires if nothing touches it again; `None`
    /// when none is live.
    pub last_expires_at: Option<Timestamp>,
}

/// A backend opened on first use and shared after: the runner's, and every
/// command context's.
pub type BackendSlot = std::sync::OnceLock<Arc<dyn Backend>>;

/// The backend in `slot`, opening the one `config` names (real clock) on
/// first use.
pub fn open_once(slot: &BackendSlot, config: &Config) -> Result<Arc<dyn Backend>> {
    if let Some(b) = slot.get() {
        return Ok(Arc::clone(b));
    }
    let b = open(config, crate::clock::SystemClock::shared())?;
    Ok(Arc::clone(slot.get_or_init(|| b)))
}

/// Opens the backend `config` names, with the given clock.
pub fn open(config: &Config, clock: SharedClock) -> Result<Arc<dyn Backend>> {
    match config.backend {
        BackendKind::File => Ok(Arc::new(FileBackend::open(config, clock)?)),
        #[cfg(feature = "postgres")]
        BackendKind::Postgres => Ok(Arc::new(postgres::PostgresBackend::open(config, clock)?)),
        #[cfg(not(feature = "postgres"))]
        BackendKind::Postgres => Err(crate::error::Error::Invalid(format!(
            "{} selects the postgres backend, and this binary was built without it: build \
             with the `postgres` feature (the stock manage binary has it)",
            config.postgres.url_source
        ))),
    }
}
