//! The mode transitions (the offline state machine): take a site from
//! ONLINE through PENDING to OFFLINE only when nobody is in the middle of
//! something, and back. A library API; the `offline` command only presents it.
//! Every transition is here, which makes the file long: `activate`'s wait,
//! `force`, `deactivate` and `run_in_window` share one set of outcomes and
//! are read together.
//!
//! [`activate`] goes PENDING (or joins a PENDING under way), then OFFLINE as
//! soon as no live task that started while ONLINE and no live session
//! remain, and the settle time has passed (I2: the web layers' refresh
//! interval, counted from the moment PENDING is known committed, so every
//! layer has seen PENDING and recorded the sessions it let in). It reacts
//! within 100 ms to a task's end — a killed one included — and to another
//! process's mode change, by blocking in the backend's
//! [`wait_for_change`], never by spinning. A timeout or an interruption leaves the wait; the site goes
//! back ONLINE when the last waiter leaves (I5).
//!
//! A scheduled window (`offline on --at`) waits in the foreground for its
//! time first ([`wait_for_schedule`], as `shutdown +m` does), holding the
//! schedule for as long as the process lives, then goes on exactly as
//! [`activate`] ([`activate_scheduled`]) or [`run_in_window`]
//! ([`run_in_window_scheduled`]) — toward READONLY, as
//! [`activate_read_only`] and [`run_in_window_to`] go, when the schedule is
//! a read-only window; its `--timeout` counts from its time.
//!
//! [`activate_read_only`] is the same wait toward READONLY: READONLY_PENDING
//! refuses unsafe web requests and tasks that may write at once, then goes
//! READONLY as soon as no live task that holds off READONLY (one that may
//! write, started ONLINE) and no web layer's unsafe requests in flight
//! remain, and the settle time has passed (I2: every layer has seen
//! READONLY_PENDING, so none admits a write any more, and each has
//! published the writes it let in). Web sessions do not hold it off: reads
//! go on. A timeout or an interruption leaves the wait; the site goes back
//! to where it came from when the last waiter leaves (I5). [`activate`]
//! from READONLY continues to OFFLINE through a PENDING that lapses back to
//! READONLY.
//!
//! Every mode change made here is recorded in the history once it is
//! durable, and the change's hooks run for it ([`recorder::record_and_notify`]):
//! a failed append is reported and reverts nothing. So is every schedule
//! event: set, cancelled (by `offline off`, by `offline on` going offline
//! now, or by its own process), and its time come; the mode changes a
//! schedule causes carry it. A schedule whose process was killed is
//! recorded by the backend, once, by whoever notices it
//! ([`Backend::record_unrecorded`]).
//!
//! [`wait_for_change`]: crate::backend::Backend::wait_for_change

use std::time::{Duration, Instant, SystemTime};

use crate::backend::{
    Backend, Completion, ModeChange, PendingStart, ReadOnlyStart, ScheduleLease, SessionSummary,
    WaiterLease, WindowRun, WindowState,
};
use crate::clock::{Timestamp, format_age};
use crate::error::Refusal;
use crate::error::Result;
use crate::history::{
    Cause, EntryDraft, EventKind, Held, HeldTask, HistoryEntry, ScheduleRef, Waited,
};
use crate::mode::{Mode, ModeRecord, ModeView};
use crate::policy::Drain;
use crate::recorder;
use crate::records::{TaskRecord, WritesInFlight};
use crate::schedule::{EndedSchedule, ScheduleEnd, ScheduleEndReason, ScheduleRecord, local_time};
use crate::session::SessionEntry;

/// How often sessions are re-counted while waiting (tasks are watched
/// continuously; a session only ends by logout or expiry).
const SESSION_RECOUNT: Duration = Duration::from_millis(200);
/// The longest single wait between checks.
const TICK: Duration = Duration::from_millis(50);

/// How long a wait for OFFLINE or READONLY goes on while the state
/// database cannot be reached (a restart, a lost link): it says so once,
/// tries again every [`OUTAGE_RETRY`], and takes back its place when the
/// server answers ([`WaiterLease::keep`]); not reached again within this,
/// it gives up with the last error ([`crate::Error::Unreachable`], exit
/// 69). Three times the keepalive bound B (20 s): past B the server has
/// freed the waiter's key anyway, and its drain reads as lapsed elsewhere.
pub const OUTAGE_BOUND: Duration = Duration::from_secs(60);
/// How often a wait tries the server again while it cannot reach it.
pub const OUTAGE_RETRY: Duration = Duration::from_millis(250);

/// A wait's view of the server's outages: when it was last lost, said
/// once per outage, as the web layer says its own.
#[derive(Debug, Default)]
struct Outage {
    since: Option<Instant>,
}

impl Outage {
    /// A step of the wait failed with `e`: an error other than an
    /// unreachable server, an outage past [`OUTAGE_BOUND`], or a stop
    /// requested meanwhile ends the wait with it; otherwise, after
    /// [`OUTAGE_RETRY`], the wait tries again.
    fn failed(&mut self, e: crate::Error, what: &str, watcher: &dyn Watcher) -> Result<()> {
        let crate::Error::Unreachable { server, problem } = e else {
            return Err(e);
        };
        let since = *self.since.get_or_insert_with(|| {
            eprintln!(
                "{what}: lost the state database (PostgreSQL at {server}: {problem}); still \
                 waiting, and trying again for up to {}",
                secs(OUTAGE_BOUND)
            );
            Instant::now()
        });
        if since.elapsed() >= OUTAGE_BOUND {
            return Err(crate::Error::Unreachable {
                server,
                problem: format!(
                    "{problem} (not reached again within {} of waiting; the drain lapses as \
                     this process ends)",
                    secs(OUTAGE_BOUND)
                ),
            });
        }
        if watcher.stop_requested() {
            return Err(crate::Error::Unreachable { server, problem });
        }
        std::thread::sleep(OUTAGE_RETRY);
        Ok(())
    }

    /// A step of the wait reached the server: the end of an outage, said
    /// once.
    fn reached(&mut self, what: &str) {
        if let Some(since) = self.since.take() {
            eprintln!(
                "{what}: the state database answers again ({} after it was lost); the wait goes on",
                secs(since.elapsed())
            );
        }
    }
}

/// The value of `$step`, or, when it fails and the wait may go on through
/// an outage ([`Outage::failed`]), the next round of the wait's loop.
macro_rules! or_retry {
    ($outage:expr, $what:expr, $watcher:expr, $step:expr) => {
        match $step {
            Ok(v) => v,
            Err(e) => {
                $outage.failed(e, $what, &*$watcher)?;
                continue;
            }
        }
    };
}

/// How to take the site offline.
#[derive(Debug, Clone)]
pub struct Activation {
    /// Who asks, and the message and retry-after to store.
    pub change: ModeChange,
    /// How long to wait for what is live before giving up and going back
    /// ONLINE (never cut short: the settle time); `Duration::MAX` waits with
    /// no limit.
    pub timeout: Duration,
    /// After this long in PENDING, live sessions stop holding it off.
    pub grace: Option<Duration>,
    /// The settle time of I2, counted from the moment the draining record
    /// is known committed ([`Progress::settle_from`]), and on the backend's
    /// clock from its `since`: the commands pass twice the web layers'
    /// refresh interval.
    pub settle: Duration,
}

/// Where a wait takes the site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// OFFLINE, through PENDING ([`activate`]).
    Offline,
    /// READONLY, through READONLY_PENDING ([`activate_read_only`]).
    ReadOnly,
}

impl Target {
    /// Where `schedule` takes the site at its time: READONLY for a
    /// read-only window ([`ScheduleRecord::read_only`]), else OFFLINE.
    pub fn of_schedule(schedule: &ScheduleRecord) -> Target {
        if schedule.read_only {
            Target::ReadOnly
        } else {
            Target::Offline
        }
    }

    /// The draining mode of a wait for this target.
    pub fn draining(self) -> Mode {
        match self {
            Target::Offline => Mode::Pending,
            Target::ReadOnly => Mode::ReadOnlyPending,
        }
    }

    /// The mode a wait for this target ends in.
    pub fn mode(self) -> Mode {
        match self {
            Target::Offline => Mode::Offline,
            Target::ReadOnly => Mode::ReadOnly,
        }
    }

    /// Whether `task` holds off this target.
    pub fn held_off_by(self, task: &TaskRecord) -> bool {
        match self {
            Target::Offline => task.holds_off_offline(),
            Target::ReadOnly => task.holds_off_read_only(),
        }
    }
}

/// What is live: tasks, sessions, and web layers' writes in flight.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Live {
    /// Live tasks (all of them: a status shows those inside the window too).
    pub tasks: Vec<TaskRecord>,
    /// Live sessions.
    pub sessions: Vec<SessionEntry>,
    /// Web layer processes with unsafe requests in flight (published only
    /// while READONLY_PENDING).
    pub writes: Vec<WritesInFlight>,
}

impl Live {
    /// Reads what is live now.
    pub fn read(backend: &dyn Backend) -> Result<Live> {
        Ok(Live {
            tasks: backend.tasks()?,
            sessions: backend.sessions()?,
            writes: backend.writes_in_flight()?,
        })
    }

    /// The "active sessions" of the status line (`Status: ONLINE - Active
    /// sessions: 13`): live sessions plus live tasks, a task and the nested
    /// runs that joined it counting once, plus web layers with writes in
    /// flight.
    pub fn active(&self) -> usize {
        self.task_count() + self.sessions.len() + self.writes.len()
    }

    /// How many distinct tasks are live: runs that joined a task count as
    /// that task.
    pub fn task_count(&self) -> usize {
        distinct_tasks(&self.tasks)
    }

    /// The tasks that hold off OFFLINE: those started while ONLINE (I1).
    pub fn holding_tasks(&self) -> impl Iterator<Item = &TaskRecord> {
        self.tasks.iter().filter(|t| t.holds_off_offline())
    }

    /// What is live, as a history entry names it.
    pub fn held(&self) -> Held {
        let mut held = Held {
            sessions: self.sessions.len(),
            writes: self.writes.len(),
            ..Held::default()
        };
        for t in &self.tasks {
            held.add_task(HeldTask {
                id: t.task_id().to_owned(),
                name: t.name.clone(),
                pid: t.pid,
                by: t.user_at_host(),
                in_window: !t.holds_off_offline(),
            });
        }
        held
    }

    /// When the last live session expires, if nothing touches it again.
    pub fn last_session_expiry(&self) -> Option<Timestamp> {
        self.sessions.iter().map(|s| s.expires_at).max()
    }

    /// The sessions listed, as a summary.
    pub fn session_summary(&self) -> SessionSummary {
        SessionSummary {
            count: self.sessions.len(),
            last_expires_at: self.last_session_expiry(),
        }
    }

    /// One line per holder, as a timeout or a status names them: each task
    /// with pid, user@host and age; the sessions with when the last expires.
    pub fn describe(&self, now: SystemTime) -> Vec<String> {
        holders(&self.tasks, &self.writes, &self.session_summary(), now).into_lines()
    }
}

/// How many distinct tasks `tasks` are: runs that joined a task count as
/// that task.
fn distinct_tasks(tasks: &[TaskRecord]) -> usize {
    let mut ids: Vec<&str> = tasks.iter().map(TaskRecord::task_id).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

/// The lines that name what holds off maintenance, by kind: one per task
/// (pid, user@host, age), one per web layer with writes in flight, and one
/// for the sessions (how many, and when the last expires).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holders {
    /// One line per live task.
    pub tasks: Vec<String>,
    /// One line per web layer with unsafe requests in flight.
    pub writes: Vec<String>,
    /// The live sessions, when there are any.
    pub sessions: Option<String>,
}

impl Holders {
    /// Every line, tasks first, then writers, then the sessions.
    pub fn into_lines(self) -> Vec<String> {
        let mut lines = self.tasks;
        lines.extend(self.writes);
        lines.extend(self.sessions);
        lines
    }
}

/// What holds off maintenance, named line by line.
fn holders(
    tasks: &[TaskRecord],
    writes: &[WritesInFlight],
    sessions: &SessionSummary,
    now: SystemTime,
) -> Holders {
    let tasks = tasks
        .iter()
        .map(|t| {
            format!(
                "command `{}` ({}, {}, running for {}{})",
                t.name,
                t.held_by(),
                t.user_at_host(),
                format_age(t.started_at.age(now)),
                t.notes()
                    .iter()
                    .map(|n| format!(", {n}"))
                    .collect::<String>(),
            )
        })
        .collect();
    let writes = writes.iter().map(ToString::to_string).collect();
    let sessions = sessions
        .last_expires_at
        .filter(|_| sessions.count > 0)
        .map(|last| {
            let n = sessions.count;
            let left = last.system_time().duration_since(now).unwrap_or_default();
            format!(
                "{n} web session{} (the last expires in {}, at {last})",
                if n == 1 { "" } else { "s" },
                format_age(left)
            )
        });
    Holders {
        tasks,
        writes,
        sessions,
    }
}

/// How an activation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The site is OFFLINE. `live` is what was still live then: sessions let
    /// go by the grace period, tasks running inside the window.
    Offline {
        /// The OFFLINE record.
        record: ModeRecord,
        /// What was still live.
        live: Live,
        /// Whether another process's PENDING was joined.
        joined: bool,
        /// Whether the site was already OFFLINE (only the message changed).
        already: bool,
    },
    /// The site is READONLY ([`activate_read_only`]); fields as for
    /// [`Outcome::Offline`].
    ReadOnly {
        /// The READONLY record.
        record: ModeRecord,
        /// What was still live: sessions, tasks that only read or run
        /// inside the read-only window.
        live: Live,
        /// Whether another process's READONLY_PENDING was joined.
        joined: bool,
        /// Whether the site was already READONLY (only the message changed).
        already: bool,
    },
    /// The timeout ran out; this waiter left (the site is back where the
    /// drain came from unless another waiter remains).
    TimedOut {
        /// What still held it off.
        live: Live,
        /// The record in force afterwards.
        record: ModeRecord,
    },
    /// The stop request came; this waiter left.
    Interrupted {
        /// What still held it off.
        live: Live,
        /// The record in force afterwards.
        record: ModeRecord,
    },
    /// Someone turned the site ONLINE while we waited.
    Cancelled {
        /// Who, as `user@host`.
        by: String,
        /// Their record.
        record: ModeRecord,
    },
}

/// One look at the wait, for a progress display.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// What holds the site off now.
    pub holding: &'a Live,
    /// How long this process has waited.
    pub waited: Duration,
    /// Whether the grace period let sessions go.
    pub sessions_released: bool,
    /// The PENDING record.
    pub record: &'a ModeRecord,
    /// The drain-`stop` commands asked to stop when PENDING began (they
    /// watch the mode themselves), including those that already stopped.
    pub asked_to_stop: &'a [TaskRecord],
    /// Where the wait takes the site.
    pub target: Target,
    /// The instant, on this host's wall clock, from which the settle time
    /// is counted: when this process knew the draining record committed
    /// (its begin or join returned), so every web layer's read begun later
    /// sees it. Later than the record's `since`, the server's time at the
    /// start of the transaction that wrote it.
    pub settle_from: SystemTime,
}

/// Takes the site offline as [`Activation`] says, calling `progress` after
/// each look and `stop` to learn of an interruption (checked at least every
/// 50 ms). The timeout ends the wait only while something is live: with
/// nothing live the site goes OFFLINE once the settle time has passed, even
/// with a timeout of zero.
pub fn activate(
    backend: &dyn Backend,
    activation: &Activation,
    stop: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Outcome> {
    let why = Why::new(Cause::On, "offline on");
    wait_offline(
        backend,
        activation,
        Target::Offline,
        &why,
        &mut Closures { stop, progress },
        None,
    )
}

/// Takes the site read-only as [`Activation`] says (its `grace` does not
/// apply: sessions never hold READONLY off), as [`activate`] takes it
/// offline: READONLY_PENDING at once, READONLY once no task that may write
/// and started ONLINE and no web layer's writes in flight remain, and the
/// settle time has passed. Already READONLY or OFFLINE: only the message
/// changes ([`Outcome::ReadOnly`] or [`Outcome::Offline`] with `already`).
pub fn activate_read_only(
    backend: &dyn Backend,
    activation: &Activation,
    stop: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Outcome> {
    let why = Why::new(Cause::On, "offline on --read-only");
    wait_offline(
        backend,
        activation,
        Target::ReadOnly,
        &why,
        &mut Closures { stop, progress },
        None,
    )
}

/// The outcome of a wait whose target (or a stricter mode) `record` is in.
fn reached(record: ModeRecord, live: Live, joined: bool, already: bool) -> Outcome {
    if record.mode == Mode::Offline {
        Outcome::Offline {
            record,
            live,
            joined,
            already,
        }
    } else {
        Outcome::ReadOnly {
            record,
            live,
            joined,
            already,
        }
    }
}

/// Who changes the mode, as the history says it.
struct Why {
    /// For scripts.
    cause: Cause,
    /// The command, for people: `offline on`, `offline run -- migrate`.
    what: String,
    /// The scheduled window whose time came, for the entries of the
    /// changes it causes.
    schedule: Option<ScheduleRef>,
}

impl Why {
    fn new(cause: Cause, what: impl Into<String>) -> Why {
        Why {
            cause,
            what: what.into(),
            schedule: None,
        }
    }

    /// The changes schedule `r` causes once its time has come.
    fn scheduled(r: &ScheduleRecord) -> Why {
        Why {
            cause: Cause::Scheduled,
            what: scheduled_what(r),
            schedule: Some(ScheduleRef::from(r)),
        }
    }

    /// [`mode_entry`], carrying the schedule that caused it, if any.
    fn mode_entry(&self, cause: Cause, from: Mode, reason: String) -> HistoryEntry {
        let mut e = mode_entry(cause, from, reason);
        e.schedule = self.schedule.clone();
        e
    }
}

/// Records a change this process made, and runs its hooks.
fn log(backend: &dyn Backend, change: &ModeChange, entry: HistoryEntry) {
    recorder::record_and_notify(backend, &change.hooks, &entry);
}

/// The entry of a mode change from `from`, as drawn up before the change
/// ([`EntryDraft`]): the backend writes it with the record, from which it
/// takes the time, the mode reached, the message, the author and the id.
fn mode_entry(cause: Cause, from: Mode, reason: String) -> HistoryEntry {
    HistoryEntry::new(EventKind::Mode, cause, from, from, Timestamp::EPOCH, reason)
}

/// A duration as the history says it: `30s`, `0.5s`.
fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// Leaves a draining mode (PENDING, READONLY_PENDING) without reaching
/// its target (a timeout, an interruption, a refusal) and, if this process
/// wrote the mode that follows (the one the drain came from: ONLINE, or
/// READONLY for a PENDING begun there), records it with `cause`, `reason`
/// and what still held it. Returns the record in force afterwards.
fn leave(
    backend: &dyn Backend,
    waiter: Box<dyn WaiterLease>,
    (change, why): (&ModeChange, &Why),
    pending: &ModeRecord,
    (cause, reason): (Cause, String),
    held: Held,
) -> Result<ModeRecord> {
    let mut e = why.mode_entry(cause, pending.mode, reason);
    e.waited = Some(Waited {
        seconds: 0.0,
        held_by: held.clone(),
    });
    e.live = held;
    let draft = EntryDraft::new(e).waited_since(pending.since);
    let after = backend.leave_pending(waiter, &change.recording(draft))?;
    recorder::catch_up(backend, &change.hooks);
    Ok(after)
}

/// What refused a wait: the drain-`block` commands, as the history names
/// them.
fn refusal(why: &Why, blockers: &[TaskRecord]) -> ((Cause, String), Held) {
    let held = Live {
        tasks: blockers.to_vec(),
        ..Live::default()
    }
    .held();
    (
        (
            Cause::Refused,
            format!("{}: refused by drain `block`: {held}", why.what),
        ),
        held,
    )
}

/// Why a drain began, for its entry: what it refuses at once, and what
/// holds it off.
fn began_reason(why: &Why, target: Target, waiting_for: &Held) -> String {
    let refuses = match target {
        Target::Offline => "nobody new gets in",
        Target::ReadOnly => "writes are refused",
    };
    if waiting_for.is_empty() {
        format!("{}: {refuses}; nothing live to wait for", why.what)
    } else {
        format!("{}: {refuses}; waiting for {waiting_for}", why.what)
    }
}

/// Why a drain reached its target, for its entry: what it waited for.
fn completed_reason(why: &Why, target: Target, seen: &Held) -> String {
    match (seen.is_empty(), target) {
        (true, Target::Offline) => format!("{}: nothing was live", why.what),
        (true, Target::ReadOnly) => format!("{}: nothing that may write was live", why.what),
        (false, _) => format!("{}: waited for {seen}", why.what),
    }
}

/// How a drain began, whichever its target: a [`PendingStart`] or a
/// [`ReadOnlyStart`].
enum Start {
    /// The site was in the target, or a stricter mode, already.
    Already(ModeRecord),
    /// This process waits in the draining mode.
    Waiting {
        waiter: Box<dyn WaiterLease>,
        record: ModeRecord,
        joined: bool,
    },
}

impl From<PendingStart> for Start {
    fn from(start: PendingStart) -> Self {
        match start {
            PendingStart::AlreadyOffline(record) => Start::Already(record),
            PendingStart::Waiting {
                waiter,
                record,
                joined,
            } => Start::Waiting {
                waiter,
                record,
                joined,
            },
        }
    }
}

impl From<ReadOnlyStart> for Start {
    fn from(start: ReadOnlyStart) -> Self {
        match start {
            ReadOnlyStart::Already(record) => Start::Already(record),
            ReadOnlyStart::Waiting {
                waiter,
                record,
                joined,
            } => Start::Waiting {
                waiter,
                record,
                joined,
            },
        }
    }
}

/// What a wait for OFFLINE asks of its caller: [`activate`]'s two
/// closures, or the [`WindowObserver`] of [`run_in_window`].
trait Watcher {
    /// Whether a stop was requested.
    fn stop_requested(&self) -> bool;
    /// One look at the wait.
    fn progress(&mut self, progress: Progress<'_>);
}

/// [`activate`]'s closures as a [`Watcher`].
struct Closures<'s, 'p> {
    stop: &'s dyn Fn() -> bool,
    progress: &'p mut dyn FnMut(Progress<'_>),
}

impl Watcher for Closures<'_, '_> {
    fn stop_requested(&self) -> bool {
        (self.stop)()
    }

    fn progress(&mut self, progress: Progress<'_>) {
        (self.progress)(progress)
    }
}

/// The body of [`activate`] and [`activate_read_only`], for either kind of
/// caller; with `schedule`, whose time has come, the draining mode begins
/// as that schedule's ([`Backend::begin_scheduled_pending`],
/// [`Backend::begin_scheduled_read_only`]).
fn wait_offline(
    backend: &dyn Backend,
    activation: &Activation,
    target: Target,
    why: &Why,
    watcher: &mut dyn Watcher,
    schedule: Option<&dyn ScheduleLease>,
) -> Result<Outcome> {
    let change = &activation.change;
    let before = refuse_blockers(backend, target)?;
    // Sessions hold off OFFLINE only: reads go on through READONLY.
    let counts_sessions = target == Target::Offline;
    // What the drain will wait for, read beforehand: its entry is appended
    // the moment it is durable, leaving a waiter killed right after as
    // little time as can be to die unrecorded (a lapse's noticer records a
    // drain that lost its entry).
    let sessions_before = backend.sessions()?;
    let live_before = Live {
        tasks: before.clone(),
        sessions: sessions_before.clone(),
        writes: Vec::new(),
    }
    .held();
    // Everything that held the wait off, for the history: from the start,
    // what was live then (it may end before the first look). Web layers
    // publish their writes in flight only once READONLY_PENDING began.
    let mut seen = Live {
        tasks: before
            .iter()
            .filter(|t| target.held_off_by(t))
            .cloned()
            .collect(),
        sessions: if counts_sessions {
            sessions_before
        } else {
            Vec::new()
        },
        writes: Vec::new(),
    }
    .held();
    // The drain's entry, written with its record (a joined drain has its
    // own already).
    let mut e = why.mode_entry(why.cause, Mode::Online, began_reason(why, target, &seen));
    e.live = live_before;
    let begin = change.recording(EntryDraft::new(e).begins_drain());
    let started = match (target, schedule) {
        (Target::Offline, Some(s)) => Start::from(backend.begin_scheduled_pending(s, &begin)?),
        (Target::Offline, None) => Start::from(backend.begin_pending(&begin)?),
        (Target::ReadOnly, Some(s)) => Start::from(backend.begin_scheduled_read_only(s, &begin)?),
        (Target::ReadOnly, None) => Start::from(backend.begin_read_only(&begin)?),
    };
    // The settle time counts from here, on this host's monotonic clock:
    // the draining record is committed, so a web layer's read begun from
    // now on sees it. Not from the record's `since`: that is the server's
    // `now()` at the start of its transaction, before the gate was taken
    // and the record committed, and a layer's read begun in between still
    // saw the mode before it (and the layers count their snapshots' age
    // on their own clocks, not the server's).
    let mut settle_from = (Instant::now(), SystemTime::now());
    // The schedule's time came while the site was in its target (or
    // OFFLINE) already, or while another process's drain toward it was
    // under way: no change of its own marks it, so it is recorded as come.
    if let (
        Some(s),
        Start::Already(record)
        | Start::Waiting {
            record,
            joined: true,
            ..
        },
    ) = (schedule, &started)
    {
        schedule_due(backend, change, s.record(), record.mode);
    }
    // A lapsed drain it replaced was recorded on the way, and so was its
    // own beginning: their hooks run.
    recorder::catch_up(backend, &change.hooks);
    let (waiter, record, joined) = match started {
        Start::Waiting {
            waiter,
            record,
            joined,
        } => (waiter, record, joined),
        Start::Already(record) => {
            return Ok(reached(record, Live::read(backend)?, false, true));
        }
    };
    // The server lost meanwhile: each step below that fails so is tried
    // again, for up to OUTAGE_BOUND (the look for blockers at once, the
    // loop's steps from the top, the place taken back first).
    let mut outage = Outage::default();
    let what = why.what.as_str();
    // A blocker that started between the look above and PENDING: leave.
    let after = match loop {
        match refuse_blockers(backend, target) {
            Err(e @ crate::Error::Unreachable { .. }) => outage.failed(e, what, &*watcher)?,
            other => break other,
        }
    } {
        Ok(t) => t,
        Err(e) => {
            let (why_left, held) = match &e {
                crate::Error::Refused(Refusal::Blocked { tasks }) => refusal(why, tasks),
                other => (
                    (Cause::Refused, format!("{}: gave up: {other}", why.what)),
                    Held::default(),
                ),
            };
            leave(backend, waiter, (change, why), &record, why_left, held)?;
            return Err(e);
        }
    };
    // Those that stop may be gone before the first look: keep them.
    let mut asked: Vec<TaskRecord> = Vec::new();
    for t in before.into_iter().chain(after) {
        if t.policy.drain == Drain::Stop
            && target.held_off_by(&t)
            && !asked.iter().any(|a| a.id == t.id)
        {
            asked.push(t);
        }
    }
    let clock = backend.clock();
    let pending_since = record.since.system_time();
    let started_at = clock.now();
    let mut sessions: Vec<SessionEntry> = Vec::new();
    let mut sessions_read: Option<Instant> = None;
    // Sessions hold off OFFLINE only: reads go on through READONLY.
    let counts_sessions = target == Target::Offline;

    loop {
        if or_retry!(outage, what, watcher, waiter.keep()) {
            // The drain lapsed for every reader while this waiter's key
            // was free: a layer may have read the mode it lapsed to, so
            // the settle time counts again from now.
            settle_from = (Instant::now(), SystemTime::now());
        }
        let view = or_retry!(outage, what, watcher, backend.mode());
        let elsewhere = or_retry!(
            outage,
            what,
            watcher,
            settled_elsewhere(backend, &view, waiter.as_ref(), joined, target)
        );
        if let Some(outcome) = elsewhere {
            return Ok(outcome);
        }
        let now = clock.now();
        let waited = now.duration_since(started_at).unwrap_or_default();
        let in_pending = now.duration_since(pending_since).unwrap_or_default();
        let released = activation.grace.is_some_and(|g| in_pending >= g) || !counts_sessions;
        if counts_sessions && sessions_read.is_none_or(|t| t.elapsed() >= SESSION_RECOUNT) {
            sessions = or_retry!(outage, what, watcher, backend.sessions());
            sessions_read = Some(Instant::now());
        }
        let live_tasks = or_retry!(outage, what, watcher, backend.tasks());
        // A `block` command that joined a live task after PENDING began
        // blocks as any other: this wait ends refused.
        let blockers = blockers(&live_tasks, target);
        if !blockers.is_empty() {
            let (why_left, held) = refusal(why, &blockers);
            leave(backend, waiter, (change, why), &record, why_left, held)?;
            return Err(crate::Error::Refused(Refusal::Blocked { tasks: blockers }));
        }
        let writes = match target {
            Target::ReadOnly => or_retry!(outage, what, watcher, backend.writes_in_flight()),
            Target::Offline => Vec::new(),
        };
        let holding = Live {
            tasks: live_tasks
                .into_iter()
                .filter(|t| target.held_off_by(t))
                .collect(),
            sessions: if released {
                Vec::new()
            } else {
                sessions.clone()
            },
            writes,
        };
        outage.reached(what);
        seen.merge(&holding.held());
        watcher.progress(Progress {
            holding: &holding,
            waited,
            sessions_released: released && counts_sessions,
            record: &view.record,
            asked_to_stop: &asked,
            target,
            settle_from: settle_from.1,
        });
        // Both: on this host's clock since the record was committed (what
        // the layers' snapshots are measured against), and on the
        // backend's clock since PENDING began (which a conformance run's
        // manual clock moves).
        let settling = activation
            .settle
            .saturating_sub(settle_from.0.elapsed())
            .max(activation.settle.saturating_sub(in_pending));
        let settled = settling.is_zero();
        if holding.active() == 0 && settled {
            // The last look: sessions (or writes in flight) fresh, not
            // from the recount cache.
            let fresh = if released {
                Vec::new()
            } else {
                or_retry!(outage, what, watcher, backend.sessions())
            };
            let fresh_writes = match target {
                Target::ReadOnly => or_retry!(outage, what, watcher, backend.writes_in_flight()),
                Target::Offline => Vec::new(),
            };
            if fresh.is_empty() && fresh_writes.is_empty() {
                // Whichever waiter completes records it, as the one who
                // began the drain (the record keeps its author), with the
                // record: what is live now is what stays live past it.
                let mut e =
                    why.mode_entry(why.cause, record.mode, completed_reason(why, target, &seen));
                e.waited = Some(Waited {
                    seconds: 0.0,
                    held_by: seen.clone(),
                });
                e.live = Live::read(backend)?.held();
                let draft = EntryDraft::new(e).waited_since(record.since);
                let completion = match target {
                    Target::Offline => backend.complete_offline(waiter.as_ref(), Some(&draft)),
                    Target::ReadOnly => backend.complete_read_only(waiter.as_ref(), Some(&draft)),
                };
                let completion = or_retry!(outage, what, watcher, completion);
                recorder::catch_up(backend, &change.hooks);
                match completion {
                    Completion::Offline(done) | Completion::ReadOnly(done) => {
                        let live = Live::read(backend)?;
                        return Ok(reached(done, live, joined, false));
                    }
                    Completion::Cancelled(record) => {
                        backend.leave_pending(waiter, change)?;
                        return Ok(Outcome::Cancelled {
                            by: record.by.clone(),
                            record,
                        });
                    }
                    // A run joined a live task after the look above: wait
                    // for it too.
                    Completion::Held(_) => continue,
                }
            }
            sessions = fresh;
            sessions_read = Some(Instant::now());
            continue;
        }
        if watcher.stop_requested() {
            let held = holding.held();
            let reason = format!("{}: interrupted; still live: {held}", why.what);
            let after = leave(
                backend,
                waiter,
                (change, why),
                &record,
                (Cause::Interrupted, reason),
                held,
            )?;
            return Ok(Outcome::Interrupted {
                live: holding,
                record: after,
            });
        }
        // The timeout bounds the wait for what is live, never the settle
        // time: with nothing live, the site goes OFFLINE once settled.
        let held = holding.active() > 0;
        if held && waited >= activation.timeout {
            let still = holding.held();
            let reason = format!(
                "{}: timed out after {}; still live: {still}",
                why.what,
                secs(activation.timeout)
            );
            let after = leave(
                backend,
                waiter,
                (change, why),
                &record,
                (Cause::Timeout, reason),
                still,
            )?;
            return Ok(Outcome::TimedOut {
                live: holding,
                record: after,
            });
        }
        // Sleep until something may have changed: a task ends, the mode
        // moves, a session expires, the settle time or the timeout passes.
        let mut wake = TICK;
        if !settled {
            wake = wake.min(settling);
        }
        if let Some(next) = holding
            .sessions
            .iter()
            .map(|s| s.expires_at.system_time())
            .min()
        {
            wake = wake.min(next.duration_since(now).unwrap_or_default());
        }
        if held {
            wake = wake.min(activation.timeout.saturating_sub(waited));
        }
        or_retry!(
            outage,
            what,
            watcher,
            backend.wait_for_change(
                view.record.generation,
                &holding.tasks,
                wake.max(Duration::from_millis(1)),
            )
        );
    }
}

/// The live tasks with drain `block` that hold off `target` (joined runs
/// included: each carries its own command's policy).
fn blockers(live: &[TaskRecord], target: Target) -> Vec<TaskRecord> {
    live.iter()
        .filter(|t| t.policy.drain == Drain::Block && target.held_off_by(t))
        .cloned()
        .collect()
}

/// Refuses while a task with drain `block` that holds off `target` runs;
/// otherwise returns the live tasks it looked at.
fn refuse_blockers(backend: &dyn Backend, target: Target) -> Result<Vec<TaskRecord>> {
    let live = backend.tasks()?;
    let tasks = blockers(&live, target);
    if tasks.is_empty() {
        Ok(live)
    } else {
        Err(crate::Error::Refused(Refusal::Blocked { tasks }))
    }
}

/// Whether the wait ended in another process's hands: someone turned the
/// site ONLINE (cancelled), or took it to the target or a stricter mode
/// (done).
fn settled_elsewhere(
    backend: &dyn Backend,
    view: &ModeView,
    waiter: &dyn WaiterLease,
    joined: bool,
    target: Target,
) -> Result<Option<Outcome>> {
    let r = &view.record;
    Ok(match r.mode {
        Mode::Offline => Some(reached(r.clone(), Live::read(backend)?, joined, false)),
        Mode::ReadOnly if target == Target::ReadOnly => {
            Some(reached(r.clone(), Live::read(backend)?, joined, false))
        }
        mode if mode == target.draining() && r.since == waiter.pending_since() => None,
        _ => Some(Outcome::Cancelled {
            by: r.by.clone(),
            record: r.clone(),
        }),
    })
}

/// OFFLINE at once, whatever is live (`--force`); returns the record and
/// what is still live.
pub fn force(backend: &dyn Backend, change: &ModeChange) -> Result<(ModeRecord, Live)> {
    let why = Why::new(Cause::Force, "offline on --force");
    force_because(backend, change, &why)
}

/// [`force`], recorded as `why` says.
fn force_because(
    backend: &dyn Backend,
    change: &ModeChange,
    why: &Why,
) -> Result<(ModeRecord, Live)> {
    let from = backend.mode()?.mode;
    let held = Live::read(backend)?.held();
    let mut e = why.mode_entry(why.cause, from, forced_reason(why, Mode::Offline, &held));
    e.forced = true;
    e.live = held;
    let record = backend.force_offline(&change.recording(EntryDraft::new(e)))?;
    recorder::catch_up(backend, &change.hooks);
    let live = Live::read(backend)?;
    Ok((record, live))
}

/// The reason of a change made at once (`--force`): `offline on --force:
/// OFFLINE at once; still live: …`.
fn forced_reason(why: &Why, to: Mode, held: &Held) -> String {
    format!("{}: {to} at once; still live: {held}", why.what)
}

/// READONLY at once, whatever is live (`--read-only --force`); returns the
/// record and what is still live. An OFFLINE site stays OFFLINE (it stops
/// writes too); its record is returned as it is.
pub fn force_read_only(backend: &dyn Backend, change: &ModeChange) -> Result<(ModeRecord, Live)> {
    let view = backend.mode()?;
    let record = if view.mode == Mode::Offline {
        view.record
    } else {
        let why = Why::new(Cause::Force, "offline on --read-only --force");
        go_read_only_because(
            backend,
            change,
            &why,
            &|held| forced_reason(&why, Mode::ReadOnly, held),
            true,
        )?
    };
    Ok((record, Live::read(backend)?))
}

/// READONLY from any mode, recorded as `why` says (with `reason`, given
/// what is live after it) when it changed the mode: a forced one, or the
/// READONLY an `offline run` found, put back.
fn go_read_only_because(
    backend: &dyn Backend,
    change: &ModeChange,
    why: &Why,
    reason: &dyn Fn(&Held) -> String,
    forced: bool,
) -> Result<ModeRecord> {
    let from = backend.mode()?.mode;
    let held = Live::read(backend)?.held();
    let mut e = why.mode_entry(why.cause, from, reason(&held));
    e.forced = forced;
    e.live = held;
    let written = backend.go_read_only(&change.recording(EntryDraft::new(e)))?;
    recorder::catch_up(backend, &change.hooks);
    Ok(written)
}

/// ONLINE from any state; a process waiting in PENDING sees it within
/// 100 ms and ends cancelled, and so does one waiting for a scheduled
/// window's time: the schedule is cancelled. While an `offline run` is
/// running its command this is refused unless `force`: reopening
/// mid-migration is what the window exists to prevent.
pub fn deactivate(backend: &dyn Backend, change: &ModeChange, force: bool) -> Result<ModeRecord> {
    deactivate_cancelling(backend, change, force).map(|(record, _)| record)
}

/// [`deactivate`], which also returns the schedule it cancelled (with its
/// end), if one was live. The schedule ends first, then the site goes
/// ONLINE: a schedule whose time comes in between goes PENDING and is
/// cancelled as any wait is.
pub fn deactivate_cancelling(
    backend: &dyn Backend,
    change: &ModeChange,
    force: bool,
) -> Result<(ModeRecord, Option<EndedSchedule>)> {
    if !force && let WindowState::Running(run) = backend.window()? {
        return Err(crate::Error::Refused(Refusal::RunUnderWay {
            run,
            what: "; turning the site ONLINE now would reopen it mid-command: wait for it to \
                   end, or pass --force"
                .into(),
        }));
    }
    let from = match backend.mode() {
        Ok(view) => view.mode,
        // The record cannot be read (corrupt, planted): `--force` is the
        // way out the error names. The backend's writer replaces such a
        // record, so it is rewritten ONLINE first, with nothing to record
        // of a mode nobody can read, and the change goes on from there.
        Err(_) if force => {
            backend.go_online(change)?;
            Mode::Online
        }
        Err(e) => return Err(e),
    };
    let cancelled = backend.end_schedule(&ScheduleEnd::new(
        ScheduleEndReason::Cancelled,
        change.by.clone(),
        change.pid,
    ))?;
    let reason = if force {
        "offline off --force"
    } else {
        "offline off"
    };
    if let Some(ended) = &cancelled {
        schedule_ended(
            backend,
            change,
            ended,
            from,
            Cause::Off,
            (reason, "cancelled"),
        );
    }
    let record = go_online_because(backend, change, Cause::Off, reason.into(), None)?;
    Ok((record, cancelled))
}

/// ONLINE from any state, recorded with `cause` and `reason` (and the
/// schedule that caused it, if any) when it changed the mode.
fn go_online_because(
    backend: &dyn Backend,
    change: &ModeChange,
    cause: Cause,
    reason: String,
    schedule: Option<&ScheduleRef>,
) -> Result<ModeRecord> {
    let from = backend.mode()?;
    let reason = match from.mode {
        Mode::Pending | Mode::ReadOnlyPending => format!(
            "{reason} (ended the wait for {} begun by {}, pid {})",
            if from.mode == Mode::Pending {
                Mode::Offline
            } else {
                Mode::ReadOnly
            },
            from.record.by,
            from.record.pid
        ),
        _ => reason,
    };
    let mut e = mode_entry(cause, from.mode, reason);
    e.schedule = schedule.cloned();
    e.live = Live::read(backend)?.held();
    let written = backend.go_online(&change.recording(EntryDraft::new(e)))?;
    recorder::catch_up(backend, &change.hooks);
    Ok(written)
}

/// Ends the live schedule because `change`'s operator goes offline now
/// (`offline on` without `--at`): its waiting process exits refused.
/// Returns it with its end, if one was live, and records it. Called before
/// the wait begins, so a schedule whose time comes first is joined as any
/// PENDING is.
pub fn supersede_schedule(
    backend: &dyn Backend,
    change: &ModeChange,
) -> Result<Option<EndedSchedule>> {
    supersede_schedule_toward(backend, change, Target::Offline)
}

/// [`supersede_schedule`] by an operator who goes to `target` now:
/// `offline on --read-only` without `--at` goes read-only now, and the
/// history says so.
pub fn supersede_schedule_toward(
    backend: &dyn Backend,
    change: &ModeChange,
    target: Target,
) -> Result<Option<EndedSchedule>> {
    let mode = backend.mode()?.mode;
    let ended = backend.end_schedule(&ScheduleEnd::new(
        ScheduleEndReason::Superseded,
        change.by.clone(),
        change.pid,
    ))?;
    if let Some(ended) = &ended {
        let (what, how) = match target {
            Target::Offline => ("offline on", "went offline now, ending"),
            Target::ReadOnly => ("offline on --read-only", "went read-only now, ending"),
        };
        schedule_ended(backend, change, ended, mode, Cause::On, (what, how));
    }
    Ok(ended)
}

/// How the wait for a scheduled window's time ended, when nobody else
/// ended the schedule (then [`wait_for_schedule`] is refused with
/// [`Refusal::ScheduleEnded`], saying who).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The time came: go on with [`activate_scheduled`] or
    /// [`run_in_window_scheduled`].
    Due,
    /// The stop request came first; the schedule was withdrawn and the
    /// site stays as it was.
    Interrupted,
}

/// Schedules a window for `change`'s operator: see
/// [`Backend::begin_schedule`]. The schedule lives as long as the returned
/// lease (and so this process) does. Recorded in the history, and
/// `change`'s hooks run for it.
pub fn schedule(
    backend: &dyn Backend,
    change: &ModeChange,
    schedule: &ScheduleRecord,
) -> Result<Box<dyn ScheduleLease>> {
    let mode = backend.mode()?.mode;
    let lease = backend.begin_schedule(schedule)?;
    // A schedule whose process was killed, found on the way.
    recorder::catch_up(backend, &change.hooks);
    let r = lease.record();
    let e = schedule_entry(
        EventKind::ScheduleSet,
        Cause::Scheduled,
        mode,
        r,
        r.set_at,
        format!(
            "{}: users are told from {}; the schedule lasts as long as pid {}",
            scheduled_what(r),
            local_time(r.notice_from),
            r.pid
        ),
    );
    log(backend, change, e);
    Ok(lease)
}

/// The command a schedule stands for, as the history says it: `offline on
/// --at 2026-11-25T02:00:00+01:00`, `offline run --read-only --at … --
/// reindex`.
fn scheduled_what(r: &ScheduleRecord) -> String {
    let flag = if r.read_only { " --read-only" } else { "" };
    match &r.argv {
        Some(argv) => format!(
            "offline run{flag} --at {} -- {}",
            local_time(r.at),
            argv.join(" ").chars().take(200).collect::<String>()
        ),
        None => format!("offline on{flag} --at {}", local_time(r.at)),
    }
}

/// The entry of an event of schedule `r` at `at`, the site in `mode`
/// (which it does not change), by the schedule's holder (the caller sets
/// another).
fn schedule_entry(
    kind: EventKind,
    cause: Cause,
    mode: Mode,
    r: &ScheduleRecord,
    at: Timestamp,
    reason: String,
) -> HistoryEntry {
    let mut e = HistoryEntry::new(kind, cause, mode, mode, at, reason);
    e.by = r.by.clone();
    e.pid = r.pid;
    e.message = r.message.clone();
    e.schedule = Some(ScheduleRef::from(r));
    e
}

/// Records that `ended` was ended by someone other than its holder
/// (`offline off`, `offline on` now), the site in `mode`: `what` did it,
/// and `how` (`cancelled`, `went offline now, ending`).
fn schedule_ended(
    backend: &dyn Backend,
    change: &ModeChange,
    ended: &EndedSchedule,
    mode: Mode,
    cause: Cause,
    (what, how): (&str, &str),
) {
    let r = &ended.schedule;
    let mut e = schedule_entry(
        EventKind::ScheduleCancelled,
        cause,
        mode,
        r,
        ended.end.at,
        format!(
            "{what}: {how} the {} window scheduled at {} by {} (pid {})",
            r.kind(),
            local_time(r.at),
            r.by,
            r.pid
        ),
    );
    e.by = ended.end.by.clone();
    e.pid = ended.end.pid;
    log(backend, change, e);
}

/// Records that the time of schedule `r` came with no mode change of its
/// own to mark it: the site was `mode` (in the schedule's target or
/// OFFLINE already, or draining toward it by another process's wait,
/// which it joined).
fn schedule_due(backend: &dyn Backend, change: &ModeChange, r: &ScheduleRecord, mode: Mode) {
    let found = match mode {
        Mode::Offline if r.read_only => {
            "the site was OFFLINE already, which stops writes too: it stays OFFLINE"
        }
        Mode::Offline => "the site was OFFLINE already: the window it asked for is open",
        Mode::ReadOnly => "the site was READONLY already: the window it asked for is open",
        Mode::ReadOnlyPending => "the site was going read-only already: it joined that wait",
        _ => "the site was going offline already: it joined that wait",
    };
    let e = schedule_entry(
        EventKind::ScheduleDue,
        Cause::Scheduled,
        mode,
        r,
        Timestamp::at(backend.clock().now()),
        format!("{}: its time came; {found}", scheduled_what(r)),
    );
    log(backend, change, e);
}

/// Ends schedule `lease` by its own process (its wait interrupted, or
/// refused or failed before PENDING began), and records it as cancelled
/// by its holder with `cause` and `why`. Every reader sees it gone from
/// now on; a failed end is reported, and the schedule goes with this
/// process's lock in any case.
fn withdraw(
    backend: &dyn Backend,
    change: &ModeChange,
    lease: &mut dyn ScheduleLease,
    (cause, why): (Cause, String),
) -> Result<()> {
    let mode = backend.mode().map(|v| v.mode);
    let me = lease.record();
    let end = ScheduleEnd::new(ScheduleEndReason::Withdrawn, me.by.clone(), me.pid);
    lease.end(&end)?;
    let r = lease.record();
    match mode {
        Ok(mode) => {
            let e = schedule_entry(
                EventKind::ScheduleCancelled,
                cause,
                mode,
                r,
                Timestamp::at(backend.clock().now()),
                format!(
                    "{}: {why}; its own process withdrew the schedule",
                    scheduled_what(r)
                ),
            );
            log(backend, change, e);
        }
        Err(e) => eprintln!(
            "warning: the offline window scheduled at {} is withdrawn, but it could not be \
             recorded in the history: {e}",
            local_time(r.at)
        ),
    }
    Ok(())
}

/// Waits in the foreground until the schedule's time, by the backend's
/// clock (re-read at least every 50 ms, so a stepped clock is followed),
/// asking `stop` as often. Once the time has come, an `offline run` that
/// holds the window is waited for: a run started during the notice keeps
/// the schedule, which goes on after it. Refused with
/// [`Refusal::ScheduleEnded`] as soon as someone ends the schedule
/// (`offline off`, `offline on`); on a stop, or an error, the schedule is
/// withdrawn, and that is recorded with `change`'s hooks.
pub fn wait_for_schedule(
    backend: &dyn Backend,
    change: &ModeChange,
    lease: &mut dyn ScheduleLease,
    stop: &dyn Fn() -> bool,
) -> Result<Notice> {
    let waited = wait_for_time(backend, lease, stop);
    match &waited {
        Ok(Notice::Due) | Err(crate::Error::Refused(Refusal::ScheduleEnded { .. })) => {}
        Ok(Notice::Interrupted) => withdraw(
            backend,
            change,
            lease,
            (
                Cause::Interrupted,
                "interrupted (Ctrl-C or SIGTERM) before its time".into(),
            ),
        )?,
        Err(e) => withdraw_unless_ended(backend, change, lease, Some(e), e),
    }
    waited
}

/// The body of [`wait_for_schedule`]: the wait alone.
fn wait_for_time(
    backend: &dyn Backend,
    lease: &dyn ScheduleLease,
    stop: &dyn Fn() -> bool,
) -> Result<Notice> {
    let clock = backend.clock();
    loop {
        if let Some(end) = lease.wait_ended(Duration::ZERO)? {
            return Err(ended_refusal(lease.record(), end));
        }
        if stop() {
            return Ok(Notice::Interrupted);
        }
        let left = lease.record().left(clock.now());
        let wait = if left.is_zero() {
            match backend.window()? {
                WindowState::Waiting(_) | WindowState::Running(_) => TICK,
                WindowState::Free | WindowState::Abandoned(_) => return Ok(Notice::Due),
            }
        } else {
            left.min(TICK)
        };
        if let Some(end) = lease.wait_ended(wait)? {
            return Err(ended_refusal(lease.record(), end));
        }
    }
}

fn ended_refusal(schedule: &ScheduleRecord, end: ScheduleEnd) -> crate::Error {
    crate::Error::Refused(Refusal::ScheduleEnded {
        schedule: Box::new(schedule.clone()),
        end,
    })
}

/// Withdraws a schedule that nothing ended, because `error` ended its
/// wait before PENDING began (a drain-`block` command at its time, another
/// run holding the window, a failure), so every reader sees it gone now,
/// and records why. Best effort: the schedule goes with this process's
/// lock in any case.
fn withdraw_unless_ended(
    backend: &dyn Backend,
    change: &ModeChange,
    lease: &mut dyn ScheduleLease,
    error: Option<&crate::Error>,
    text: &dyn std::fmt::Display,
) {
    if let Ok(None) = lease.wait_ended(Duration::ZERO) {
        let cause = match error {
            Some(crate::Error::Refused(_)) => Cause::Refused,
            _ => Cause::Scheduled,
        };
        let _ = withdraw(
            backend,
            change,
            lease,
            (
                cause,
                format!("its time came, but it could not go on: {text}"),
            ),
        );
    }
}

/// [`activate`] once a schedule's time has come ([`wait_for_schedule`]
/// returned [`Notice::Due`]) — or [`activate_read_only`] for a read-only
/// schedule ([`ScheduleRecord::read_only`]): the draining mode (PENDING or
/// READONLY_PENDING) begins and the schedule ends in one step, unless
/// someone ended it first (refused with [`Refusal::ScheduleEnded`]). The
/// timeout counts from now, the schedule's time. Its mode changes are
/// recorded as the schedule's.
pub fn activate_scheduled(
    backend: &dyn Backend,
    lease: &mut dyn ScheduleLease,
    activation: &Activation,
    stop: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Outcome> {
    let target = Target::of_schedule(lease.record());
    let why = Why::scheduled(lease.record());
    let outcome = wait_offline(
        backend,
        activation,
        target,
        &why,
        &mut Closures { stop, progress },
        Some(&*lease),
    );
    if let Err(e) = &outcome {
        withdraw_unless_ended(backend, &activation.change, lease, Some(e), e);
    }
    outcome
}

/// How an `offline run` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// The command ran and exited with `code`; the site was put back in
    /// `restored`.
    Ran {
        /// The command's exit code.
        code: u8,
        /// The mode the site was left in: the one the run found.
        restored: Mode,
    },
    /// The site never went offline, so the command never ran.
    NotRun(Outcome),
    /// The command ran and exited with `code`, but the run lost its hold
    /// on the window meanwhile and could not take it back (`why`): the
    /// mode was left as it was, for whoever holds the window now (exit
    /// [`HOLD_LOST`](crate::exit::HOLD_LOST)).
    HoldLost {
        /// The command's exit code.
        code: u8,
        /// What happened to the hold.
        why: String,
    },
}

/// What [`run_in_window`] tells its caller and asks of it: the `offline
/// run` command draws the wait, says each mode change with `-v`, and runs
/// the command through the runner, all with one `&mut` borrow.
pub trait WindowObserver {
    /// Whether a stop was requested (Ctrl-C, SIGTERM): asked at least every
    /// 50 ms while waiting; the run then leaves without running the command.
    fn stop_requested(&self) -> bool;

    /// One look at the wait for OFFLINE, as [`activate`] gives it.
    fn progress(&mut self, progress: Progress<'_>);

    /// A mode change the run made or found, in order; the last comes after
    /// the command. Does nothing unless implemented.
    fn mode_changed(&mut self, step: WindowStep) {
        let _ = step;
    }

    /// Runs the command inside the window and returns its exit code.
    fn run_command(&mut self) -> anyhow::Result<u8>;
}

/// A mode change of [`run_in_window`], as [`WindowObserver::mode_changed`]
/// hears of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowStep {
    /// PENDING began: nobody new gets in, and the wait for what is live
    /// started (said at the first look).
    Pending,
    /// READONLY_PENDING began: writes are refused, and the wait for what
    /// may write started (said at the first look).
    ReadOnlyPending,
    /// The site is OFFLINE and the command runs next: after the wait, or
    /// at once when `forced` (then the command waits for the settle time,
    /// so every web layer has seen OFFLINE first).
    Offline {
        /// Whether `--force` took it OFFLINE at once.
        forced: bool,
    },
    /// The site was OFFLINE already: the command runs in that window, and
    /// the site stays OFFLINE.
    AlreadyOffline,
    /// The site is READONLY and the command runs next, as for
    /// [`WindowStep::Offline`].
    ReadOnly {
        /// Whether `--force` took it READONLY at once.
        forced: bool,
    },
    /// The site was READONLY already: the command runs in that read-only
    /// window, and the site stays READONLY.
    AlreadyReadOnly,
    /// The command has ended and the site is back in this mode, the one the
    /// run found.
    Restored(Mode),
}

/// A [`WindowObserver`] as the wait's [`Watcher`]: says PENDING (or
/// READONLY_PENDING) at the first look.
struct WindowWait<'o> {
    observer: &'o mut dyn WindowObserver,
    said_pending: bool,
}

impl Watcher for WindowWait<'_> {
    fn stop_requested(&self) -> bool {
        self.observer.stop_requested()
    }

    fn progress(&mut self, progress: Progress<'_>) {
        if !self.said_pending {
            self.said_pending = true;
            self.observer.mode_changed(match progress.target {
                Target::Offline => WindowStep::Pending,
                Target::ReadOnly => WindowStep::ReadOnlyPending,
            });
        }
        self.observer.progress(progress);
    }
}

/// Waits `settle`, asking `observer` for a stop every [`TICK`]; `false` when
/// a stop came first.
fn settled_unless_stopped(settle: Duration, observer: &dyn WindowObserver) -> bool {
    let until = Instant::now() + settle;
    loop {
        if observer.stop_requested() {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(TICK));
    }
}

/// The deploy one-liner: takes the site offline as [`activate`] does (or
/// at once with `forced`, then waits the settle time so that no web layer
/// still serves on an ONLINE snapshot; a stop during it puts the site back
/// ONLINE, and the command never runs), runs the command while OFFLINE holding
/// the window, then restores the mode it found — ONLINE if it took the site
/// offline, OFFLINE if the site already was — whether the command succeeded
/// or not. `observer` draws the wait, hears each mode change and runs the
/// command. Refused while another `offline run` holds the window or another
/// process waits in PENDING. If this process dies while the command runs,
/// the site stays OFFLINE and [`Backend::window`] says which run left it so.
pub fn run_in_window(
    backend: &dyn Backend,
    activation: &Activation,
    forced: bool,
    argv: &[String],
    observer: &mut dyn WindowObserver,
) -> anyhow::Result<RunOutcome> {
    run_window(
        backend,
        activation,
        Target::Offline,
        forced,
        argv,
        observer,
        None,
    )
}

/// [`run_in_window`] toward `target`: with [`Target::ReadOnly`], the window
/// is READONLY (`offline run --read-only`), reached as
/// [`activate_read_only`] does. The mode found is restored after the
/// command: ONLINE, or READONLY when an OFFLINE window was taken from it;
/// a site found in the target, or in OFFLINE (stricter), stays. A process
/// killed while the command runs leaves the window's mode in force.
pub fn run_in_window_to(
    backend: &dyn Backend,
    activation: &Activation,
    target: Target,
    forced: bool,
    argv: &[String],
    observer: &mut dyn WindowObserver,
) -> anyhow::Result<RunOutcome> {
    run_window(backend, activation, target, forced, argv, observer, None)
}

/// [`run_in_window`] once a schedule's time has come ([`wait_for_schedule`]
/// returned [`Notice::Due`]), toward the schedule's target (READONLY for a
/// read-only schedule, [`Target::of_schedule`]): the draining mode
/// begins and the schedule ends in one step (refused with
/// [`Refusal::ScheduleEnded`] if someone ended it first); a site found in
/// the target or OFFLINE ends it too, and the command runs in that window.
/// Never forced: a schedule's time comes with the drain.
pub fn run_in_window_scheduled(
    backend: &dyn Backend,
    lease: &mut dyn ScheduleLease,
    activation: &Activation,
    argv: &[String],
    observer: &mut dyn WindowObserver,
) -> anyhow::Result<RunOutcome> {
    let target = Target::of_schedule(lease.record());
    let outcome = run_window(
        backend,
        activation,
        target,
        false,
        argv,
        observer,
        Some(&mut *lease),
    );
    if let Err(e) = &outcome {
        withdraw_unless_ended(
            backend,
            &activation.change,
            lease,
            e.downcast_ref::<crate::Error>(),
            e,
        );
    }
    outcome
}

/// The body of [`run_in_window`], [`run_in_window_to`] and
/// [`run_in_window_scheduled`].
fn run_window(
    backend: &dyn Backend,
    activation: &Activation,
    target: Target,
    forced: bool,
    argv: &[String],
    observer: &mut dyn WindowObserver,
    mut schedule: Option<&mut dyn ScheduleLease>,
) -> anyhow::Result<RunOutcome> {
    let me = &activation.change;
    let mut window = backend.begin_window_run(&WindowRun {
        argv: argv.to_vec(),
        pid: me.pid,
        by: me.by.clone(),
        started_at: Timestamp::at(backend.clock().now()),
        running: false,
        read_only: target == Target::ReadOnly,
    })?;
    // A run that died mid-command was recorded on the way.
    recorder::catch_up(backend, &me.hooks);
    let shown: String = argv.join(" ").chars().take(200).collect();
    // The schedule whose time came, which the entries of the window's
    // changes carry.
    let scheduled = schedule.as_deref().map(|l| ScheduleRef::from(l.record()));
    let view = backend.mode()?;
    let found = view.mode;
    if found.is_draining() {
        return Err(crate::Error::Refused(Refusal::PendingElsewhere {
            mode: found,
            since: view.record.since,
            by: view.record.by,
        })
        .into());
    }
    let already = found == Mode::Offline || (target == Target::ReadOnly && found == Mode::ReadOnly);
    // The command as the history names the run.
    let what = |force: &str| match target {
        Target::Offline => format!("offline run{force} -- {shown}"),
        Target::ReadOnly => format!("offline run --read-only{force} -- {shown}"),
    };
    // Puts back the mode the run found, recorded with `cause` and `reason`.
    let restore = |cause: Cause, reason: String| -> Result<ModeRecord> {
        match found {
            Mode::ReadOnly => {
                let why = Why {
                    cause,
                    what: String::new(),
                    schedule: scheduled.clone(),
                };
                go_read_only_because(backend, me, &why, &|_| reason.clone(), false)
            }
            _ => go_online_because(backend, me, cause, reason, scheduled.as_ref()),
        }
    };
    if already {
        if let Some(lease) = schedule.as_mut() {
            let end = ScheduleEnd::new(ScheduleEndReason::Due, me.by.clone(), me.pid);
            lease.end(&end)?;
            schedule_due(backend, me, lease.record(), found);
        }
        observer.mode_changed(if found == Mode::Offline {
            WindowStep::AlreadyOffline
        } else {
            WindowStep::AlreadyReadOnly
        });
    } else if forced {
        let why = Why::new(Cause::Run, what(" --force"));
        match target {
            Target::Offline => {
                force_because(backend, me, &why)?;
                observer.mode_changed(WindowStep::Offline { forced: true });
            }
            Target::ReadOnly => {
                go_read_only_because(
                    backend,
                    me,
                    &why,
                    &|held| forced_reason(&why, Mode::ReadOnly, held),
                    true,
                )?;
                observer.mode_changed(WindowStep::ReadOnly { forced: true });
            }
        }
        // Web layers serve on their last snapshot for up to one refresh
        // interval: the command runs once every one has seen the change.
        if !settled_unless_stopped(activation.settle, observer) {
            let reason = format!("{}: interrupted before the command ran", what(" --force"));
            let record = restore(Cause::Interrupted, reason)?;
            return Ok(RunOutcome::NotRun(Outcome::Interrupted {
                live: Live::read(backend)?,
                record,
            }));
        }
    } else {
        let mut wait = WindowWait {
            observer: &mut *observer,
            said_pending: false,
        };
        let why = match schedule.as_deref() {
            Some(lease) => Why::scheduled(lease.record()),
            None => Why::new(Cause::Run, what("")),
        };
        let outcome = wait_offline(
            backend,
            activation,
            target,
            &why,
            &mut wait,
            schedule.as_deref(),
        )?;
        match outcome {
            Outcome::Offline { .. } => observer.mode_changed(WindowStep::Offline { forced: false }),
            Outcome::ReadOnly { .. } => {
                observer.mode_changed(WindowStep::ReadOnly { forced: false })
            }
            other => return Ok(RunOutcome::NotRun(other)),
        }
    }
    window.command_started(Timestamp::at(backend.clock().now()))?;
    let code = observer.run_command();
    // A window lost and not taken back may be another run's now: its mode
    // is not this run's to restore.
    if let Some(why) = window.hold_lost() {
        drop(window);
        return Ok(RunOutcome::HoldLost { code: code?, why });
    }
    if !already {
        let ended = match &code {
            Ok(c) => format!("the command exited with {c}"),
            Err(e) => format!("the command failed: {e}"),
        };
        let reason = format!("{}: {ended}; the mode it found is restored", what(""));
        restore(Cause::Run, reason)?;
    }
    observer.mode_changed(WindowStep::Restored(found));
    drop(window);
    Ok(RunOutcome::Ran {
        code: code?,
        restored: found,
    })
}

/// Where the site stands: the mode (with why a PENDING lapsed), live tasks,
/// and the live sessions' summary: counted without listing them (see
/// [`Backend::session_summary`]), so never fewer than are live and, for a
/// while, possibly more.
#[derive(Debug, Clone)]
pub struct Status {
    /// The mode view.
    pub view: ModeView,
    /// Live tasks.
    pub tasks: Vec<TaskRecord>,
    /// Live sessions: how many, and when the last expires.
    pub sessions: SessionSummary,
    /// Web layer processes with unsafe requests in flight (published only
    /// while READONLY_PENDING).
    pub writes: Vec<WritesInFlight>,
}

impl Status {
    /// The status line's "Active sessions": live sessions plus live tasks
    /// (a task and the runs that joined it counting once), plus web layers
    /// with writes in flight, as [`Live::active`] counts them.
    pub fn active_sessions(&self) -> usize {
        distinct_tasks(&self.tasks) + self.sessions.count + self.writes.len()
    }

    /// One line per holder, as [`Live::describe`] writes them.
    pub fn describe(&self, now: SystemTime) -> Vec<String> {
        self.holders(now).into_lines()
    }

    /// The same lines, by kind (`status -v` puts each under its heading).
    pub fn holders(&self, now: SystemTime) -> Holders {
        holders(&self.tasks, &self.writes, &self.sessions, now)
    }
}

/// Reads the status: the mode, the live tasks, the sessions' summary (no
/// listing of sessions: at 100,000 that costs tens of milliseconds), and
/// the web layers' writes in flight.
pub fn status(backend: &dyn Backend) -> Result<Status> {
    Ok(Status {
        view: backend.mode()?,
        tasks: backend.tasks()?,
        sessions: backend.session_summary()?,
        writes: backend.writes_in_flight()?,
    })
}
