//! The file backend: the state in one directory on this host.
//!
//! ```text
//! <state>/
//!   VERSION     format version; an unknown one is refused
//!   mode.json   the mode record, replaced atomically (temp file, rename)
//!   OFFLINE     the web-server marker: created before a record whose legacy
//!               mode is OFFLINE (OFFLINE, READONLY, a PENDING begun from
//!               READONLY) is written (taken back if it cannot be), removed
//!               after any other record is
//!   READONLY    the web-server marker of refused writes: likewise, while
//!               READONLY_PENDING, READONLY or a PENDING begun from READONLY
//!               is in force (a web server checks it before OFFLINE)
//!   gate        the gate: mode changes lock it exclusively, task starts
//!               shared, so a task is either seen by the mode change or
//!               sees the new mode (I1, I2)
//!   pending/    one locked file per process waiting to go offline or
//!               read-only (`.waiter`); a draining mode holds only while one
//!               is held (I5); a scheduled window's, held by the process
//!               waiting for its time, with its end once someone ends it
//!               (`schedules.rs`); and one locked file per web layer process
//!               with unsafe requests in flight while READONLY_PENDING
//!               (`.writes`)
//!   history.jsonl, history.jsonl.1
//!               the history, one entry a line, rotated past its bound
//!   tasks/      one locked file per live task, one lock per command name
//!   sessions/   one directory per 5-second bucket of the boot clock
//!               (`<secs>@<boot id>`), one empty file per session inside;
//!               beside it, `<bucket>.added` and `.removed`, its count
//! ```
//!
//! Every name inside is opened relative to a directory descriptor with
//! `O_NOFOLLOW` (I4). Locks are `flock(2)` through fs2, fully qualified.
//!
//! This file holds the [`Backend`] operations, all of them (which makes it
//! long): each is ordered against the others under the gate, and they are
//! read together. Beside it: `open.rs`
//! (creating and opening the directory), `gate.rs`, `record.rs` (the mode
//! record and the markers), `readonly.rs` (the read-only tier's mode
//! changes), `writes.rs` (unsafe requests in flight), `tasks.rs` and
//! `proof.rs` (task files and the proof a joiner presents), `sessions.rs`,
//! `watch.rs` (waiting for a change), `history.rs` (the history, and the
//! changes nobody lived to record), `dir.rs` (directory-relative file
//! operations), `trust.rs` and `doctor.rs`.

pub(crate) mod dir;
mod gate;
mod history;
mod open;
mod probe;
mod proof;
mod readonly;
mod record;
mod schedules;
mod sessions;
mod tasks;
pub(crate) mod trust;
mod watch;
mod writes;

pub use self::doctor::{Finding, doctor};
pub(crate) use self::open::{missing_parent, missing_parent_problem};
pub use self::probe::ModeProbe;
pub(crate) use self::record::markers_for;
pub use self::sessions::WALL_SKEW;

mod doctor;

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::dir::{Dir, Modes};
use self::proof::Proof;
use self::sessions::{Now, Sessions};
use self::tasks::{FileTaskLease, StoredTask};
use self::watch::Watchers;
use super::{
    Backend, Completion, EndedSchedule, Membership, ModeChange, PendingStart, ReadOnlyStart,
    ScheduleEnd, ScheduleLease, ScheduleRecord, SessionSummary, TaskLease, WaiterLease,
    WindowLease, WindowRun, WindowState, WritesLease,
};
use crate::admission::{admit, admit_joined};
use crate::clock::{SharedClock, Timestamp};
use crate::error::{Error, Result};
use crate::history::EntryDraft;
use crate::identity::Identity;
use crate::join::JoinToken;
use crate::mode::{Mode, ModeRecord, ModeView};
use crate::records::{TaskRecord, TaskRequest, WritesInFlight};
use crate::session::{SessionEntry, SessionKey};

/// The state format this binary reads and writes. Format 2 names session
/// buckets by the boot clock (`<secs>@<boot id>`), which a format-1 binary
/// would not see: it refuses the directory instead of undercounting.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format this binary opens: it upgrades it to
/// [`FORMAT_VERSION`] on open (format 1's wall-clock buckets still count).
pub const OLDEST_FORMAT: u32 = 1;

pub(crate) const VERSION: &str = "VERSION";
pub(crate) const MODE: &str = "mode.json";
pub(crate) const MARKER: &str = "OFFLINE";
pub(crate) const READONLY_MARKER: &str = "READONLY";
const GATE: &str = "gate";
pub(crate) const TASKS: &str = "tasks";
pub(crate) const PENDING: &str = "pending";
pub(crate) const SESSIONS: &str = "sessions";
const RUN_LOCK: &str = "run.lock";
/// Names a state directory may hold; a directory with anything else and no
/// VERSION is not ours and is never initialised.
pub(crate) const KNOWN: &[&str] = &[
    VERSION,
    MODE,
    MARKER,
    READONLY_MARKER,
    GATE,
    TASKS,
    PENDING,
    "sessions",
    "run.lock",
    history::HISTORY,
    history::HISTORY_OLD,
];
const WAITER_SUFFIX: &str = ".waiter";
const MAX_MODE_RECORD: usize = 64 * 1024;

/// The state in a directory on this host.
#[derive(Debug)]
pub struct FileBackend {
    root: Dir,
    tasks: Arc<Dir>,
    pending: Arc<Dir>,
    sessions: Sessions,
    watchers: Arc<Watchers>,
    modes: Modes,
    clock: SharedClock,
    record_cache: std::sync::Mutex<Option<([i64; 6], ModeRecord)>>,
    /// `[history] max_size`: `history.jsonl` is rotated past it.
    history_max: u64,
    /// Entries this backend appended on the way for changes nobody lived
    /// to record, until [`Backend::record_unrecorded`] hands them out.
    noticed: std::sync::Mutex<Vec<crate::history::HistoryEntry>>,
}

impl FileBackend {
    /// The state directory.
    pub fn path(&self) -> &Path {
        self.root.path()
    }

    /// Cleans what crashed processes left, under the exclusive gate: dead
    /// waiters, schedules and writes in flight, and markers that disagree
    /// with the record.
    fn clean_under_gate(&self, record: &ModeRecord) -> Result<()> {
        // Task files of commands that died (never live: no lock), as
        // `offline doctor` promises.
        tasks::reap(&self.tasks)?;
        // Schedules whose process died; those killed before anyone ended
        // them lapsed, each found here exactly once (under the gate), and
        // recorded so.
        let lapsed = self.reap_schedules()?;
        self.notice_lapsed_schedules(lapsed);
        for name in self.pending.names()? {
            let Some(name) = name.to_str() else { continue };
            if !name.ends_with(WAITER_SUFFIX) && !name.ends_with(writes::SUFFIX) {
                continue;
            }
            match self.pending.open_read(name) {
                Ok(Some(file)) => {
                    if !tasks::held(&file)
                        .map_err(|e| Error::io("probe", self.pending.join(name), e))?
                    {
                        self.pending.remove(name)?;
                    }
                }
                Ok(None) => {}
                Err(Error::State { .. }) => {
                    self.pending.remove(name)?;
                }
                Err(e) => return Err(e),
            }
        }
        self.marker_follows(record)
    }

    /// [`Backend::begin_pending`], for a holder of the exclusive gate.
    fn begin_pending_under_gate(&self, change: &ModeChange) -> Result<PendingStart> {
        let current = self.record_for_writer();
        self.clean_under_gate(&current)?;
        self.notice_under_gate();
        let view = self.view()?;
        match view.mode {
            Mode::Offline => {
                let mut r = view.record.clone();
                if change.update(&mut r) {
                    r = self.write_record(r, &view.record)?;
                }
                Ok(PendingStart::AlreadyOffline(r))
            }
            Mode::Pending => {
                let mut r = view.record.clone();
                let waiter = self.new_waiter(r.since)?;
                if change.update(&mut r) {
                    r = self.write_record(r, &view.record)?;
                }
                Ok(PendingStart::Waiting {
                    waiter: Box::new(waiter),
                    record: r,
                    joined: true,
                })
            }
            Mode::ReadOnlyPending => Err(readonly::drain_under_way(
                &view,
                "`offline on` goes OFFLINE from ONLINE or READONLY, and the site is going \
                 read-only: once it is READONLY, `offline on` continues to OFFLINE",
            )),
            // ONLINE, or READONLY going on to OFFLINE: a lapse goes back to
            // where it came from, keeping READONLY's message unless given.
            from => {
                let since = Timestamp::at(self.clock.now());
                let waiter = self.new_waiter(since)?;
                let base = if from == Mode::ReadOnly {
                    view.record.clone()
                } else {
                    ModeRecord::initial()
                };
                let mut r = ModeRecord {
                    mode: Mode::Pending,
                    from: (from == Mode::ReadOnly).then_some(Mode::ReadOnly),
                    since,
                    by: change.by.clone(),
                    pid: change.pid,
                    generation: view.record.generation,
                    ..base
                };
                change.update(&mut r);
                let r = self.write_change(r, &view.record, change.entry.as_ref())?;
                Ok(PendingStart::Waiting {
                    waiter: Box::new(waiter),
                    record: r,
                    joined: false,
                })
            }
        }
    }

    fn read_run(&self, file: File) -> Result<Option<WindowRun>> {
        Ok(parse_run(&dir::read_regular(
            file,
            MAX_MODE_RECORD,
            &self.root.join(RUN_LOCK),
        )?))
    }

    /// A fresh ONLINE record by `change`'s operator: no message, no
    /// retry-after, no bypass secret.
    fn online_record(&self, change: &ModeChange) -> ModeRecord {
        ModeRecord {
            mode: Mode::Online,
            since: Timestamp::at(self.clock.now()),
            by: change.by.clone(),
            pid: change.pid,
            ..ModeRecord::initial()
        }
    }

    /// Clears the record of a run that died holding the window.
    fn clear_abandoned_run(&self) -> Result<()> {
        let Some(file) = self.root.open_read(RUN_LOCK)? else {
            return Ok(());
        };
        drop(file);
        let file = self.root.open_lock_rw(RUN_LOCK, self.modes)?;
        if fs2::FileExt::try_lock_exclusive(&file).is_ok() {
            file.set_len(0)
                .map_err(|e| Error::io("clear", self.root.join(RUN_LOCK), e))?;
        }
        Ok(())
    }

    /// The instance lock of a single-instance command, waiting up to the
    /// request's lock timeout; refused naming the live holder.
    fn lock_instance(&self, request: &TaskRequest) -> Result<Option<File>> {
        if request.policy.instances == crate::policy::Instances::Concurrent {
            return Ok(None);
        }
        let started = Instant::now();
        match tasks::lock_instance(&self.tasks, &request.name, request.lock_timeout, self.modes)? {
            Some(f) => Ok(Some(f)),
            None => Err(tasks::already_running(
                &self.tasks,
                &request.name,
                started.elapsed(),
            )),
        }
    }

    /// The record of a run of `request` by this process, admitted in
    /// `started_in` (for a joined run, its task's standing).
    fn new_record(
        &self,
        request: &TaskRequest,
        started_in: Mode,
        in_window: bool,
        joined: Option<String>,
    ) -> TaskRecord {
        let me = Identity::current();
        TaskRecord {
            id: tasks::new_id(),
            name: request.name.clone(),
            argv: request.argv.clone(),
            pid: me.pid,
            user: me.user.clone(),
            host: me.host.clone(),
            started_at: Timestamp::at(self.clock.now()),
            policy: request.policy,
            started_in,
            in_window,
            holders: Vec::new(),
            processes: None,
            joined,
        }
    }

    fn new_waiter(&self, since: Timestamp) -> Result<FileWaiter> {
        let id = tasks::new_id();
        let tmp = format!(".{id}.tmp");
        let name = format!("{id}{WAITER_SUFFIX}");
        let file = self.pending.create_new(&tmp, self.modes)?;
        fs2::FileExt::try_lock_exclusive(&file)
            .map_err(|e| Error::io("lock", self.pending.join(&tmp), e))?;
        let me = Identity::current();
        let _ = (&file).write_all(format!("{} {}\n", me.pid, me.user_at_host()).as_bytes());
        self.pending.rename(&tmp, &name)?;
        Ok(FileWaiter { _file: file, since })
    }
}

/// The refusal for a token naming no live run of any task.
fn join_gone(token: &JoinToken) -> Error {
    Error::Refused(crate::error::Refusal::JoinGone {
        task: token.id().chars().take(80).collect(),
    })
}

/// An `offline run`'s hold on `run.lock`: locked, its record inside.
#[derive(Debug)]
struct FileWindowLease {
    file: File,
    run: WindowRun,
    path: std::path::PathBuf,
}

impl WindowLease for FileWindowLease {
    fn command_started(&mut self, at: Timestamp) -> Result<()> {
        self.run.running = true;
        self.run.started_at = at;
        let mut json = serde_json::to_vec(&self.run).map_err(|e| Error::Invalid(e.to_string()))?;
        // One write over the record it replaces, padded to its length
        // (JSON allows the spaces): a kill never leaves it torn or empty,
        // which would read as no run at all while the site is in its window.
        let old = self
            .file
            .metadata()
            .map_err(|e| Error::io("inspect", self.path.clone(), e))?
            .len() as usize;
        if json.len() < old {
            json.resize(old, b' ');
        }
        std::os::unix::fs::FileExt::write_all_at(&self.file, &json, 0)
            .map_err(|e| Error::io("write", self.path.clone(), e))
    }
}

impl Drop for FileWindowLease {
    fn drop(&mut self) {
        // The command ended: clear the record while still holding the lock.
        let _ = self.file.set_len(0);
    }
}

fn parse_run(bytes: &[u8]) -> Option<WindowRun> {
    serde_json::from_slice(bytes).ok()
}

/// One process's place among the waiters: a locked file in `pending/`.
#[derive(Debug)]
struct FileWaiter {
    _file: File,
    since: Timestamp,
}

impl WaiterLease for FileWaiter {
    fn pending_since(&self) -> Timestamp {
        self.since
    }
}

impl Backend for FileBackend {
    fn location(&self) -> String {
        format!("state directory {}", self.root.path().display())
    }

    fn clock(&self) -> &SharedClock {
        &self.clock
    }

    fn mode(&self) -> Result<ModeView> {
        let view = self.view()?;
        if view.stray_marker.is_some() && self.put_marker_right() {
            return self.view();
        }
        Ok(view)
    }

    fn start_task(&self, request: &TaskRequest, secret_sha256: &str) -> Result<Box<dyn TaskLease>> {
        if request.name.is_empty() {
            return Err(Error::Invalid("a command name cannot be empty".into()));
        }
        let instance = self.lock_instance(request)?;
        let gate = self.gate(false)?;
        let view = self.view()?;
        admit(request, &view)?;
        let record = self.new_record(request, view.mode, request.in_window, None);
        let stored = StoredTask {
            record,
            secret_sha256: Some(secret_sha256.to_owned()),
        };
        let (task, file_name) = tasks::publish(&self.tasks, &stored, self.modes)?;
        let record = stored.record;
        drop(gate);
        if view.stray_marker.is_some() {
            self.put_marker_right();
        }
        Ok(Box::new(FileTaskLease {
            record,
            file_name,
            dir: Arc::clone(&self.tasks),
            task: Some(task),
            instance,
            handed_to_child: false,
        }))
    }

    fn join_task(&self, token: &JoinToken, request: &TaskRequest) -> Result<Box<dyn TaskLease>> {
        if request.name.is_empty() {
            return Err(Error::Invalid("a command name cannot be empty".into()));
        }
        // A joined run keeps its own command's single instance, unless its
        // task already runs that command (`deploy` calling `deploy`): taken
        // before the gate, as a task start takes it, since it may wait.
        let instance = match proof::prove(&self.tasks, token)? {
            Proof::Member { standing, .. }
                if !tasks::live(&self.tasks)?
                    .iter()
                    .any(|t| t.task_id() == standing.task_id() && t.name == request.name) =>
            {
                self.lock_instance(request)?
            }
            _ => None,
        };
        // The proof, the admission and the record all happen under the
        // shared gate, so a mode change's final look (under the exclusive
        // gate) sees this run or sees its task gone (I1).
        let gate = self.gate(false)?;
        let (standing, secret_sha256) = match proof::prove(&self.tasks, token)? {
            Proof::Gone => return Err(join_gone(token)),
            Proof::Unproven(task) => {
                return Err(Error::Refused(crate::error::Refusal::JoinUnproven {
                    command: request.name.clone(),
                    task: Box::new(task),
                }));
            }
            Proof::Member {
                standing,
                secret_sha256,
            } => (standing, secret_sha256),
        };
        let view = self.view()?;
        let window_open = matches!(self.window()?, WindowState::Running(_));
        // A task's standing inside a window lasts as long as the window: a
        // leftover of a window's command that starts a run once the window
        // closed is admitted, and stands, as a fresh start would be (it
        // holds off the next OFFLINE if it starts ONLINE).
        let (started_in, in_window) = if standing.in_window && !window_open {
            admit(request, &view)?;
            (view.mode, false)
        } else {
            admit_joined(request, &standing, &view, window_open)?;
            (standing.started_in, standing.in_window)
        };
        let stored = StoredTask {
            record: self.new_record(
                request,
                started_in,
                in_window,
                Some(standing.task_id().to_owned()),
            ),
            secret_sha256,
        };
        let (task, file_name) = tasks::publish(&self.tasks, &stored, self.modes)?;
        drop(gate);
        Ok(Box::new(FileTaskLease {
            record: stored.record,
            file_name,
            dir: Arc::clone(&self.tasks),
            task: Some(task),
            instance,
            handed_to_child: false,
        }))
    }

    fn membership(&self, token: &JoinToken) -> Result<Membership> {
        Ok(match proof::prove(&self.tasks, token)? {
            Proof::Gone => Membership::Gone,
            Proof::Unproven(task) => Membership::Stranger(task),
            Proof::Member { standing, .. } => Membership::Member(standing),
        })
    }

    fn tasks(&self) -> Result<Vec<TaskRecord>> {
        tasks::live(&self.tasks)
    }

    fn reap(&self) -> Result<usize> {
        let mut n = tasks::reap(&self.tasks)?;
        let gate = self.gate(true)?;
        let before = self.pending.names()?.len();
        self.clean_under_gate(&self.record_for_writer())?;
        n += before.saturating_sub(self.pending.names()?.len());
        drop(gate);
        Ok(n)
    }

    fn begin_pending(&self, change: &ModeChange) -> Result<PendingStart> {
        let _gate = self.gate(true)?;
        self.begin_pending_under_gate(change)
    }

    fn complete_offline(
        &self,
        waiter: &dyn WaiterLease,
        entry: Option<&EntryDraft>,
    ) -> Result<Completion> {
        let _gate = self.gate(true)?;
        let r = self.read_record()?;
        match r.mode {
            Mode::Offline => Ok(Completion::Offline(r)),
            Mode::Pending if r.since == waiter.pending_since() => {
                // The final look, under the gate: a run that joined a live
                // task after the waiter's last look is seen here.
                let holding: Vec<TaskRecord> = tasks::live(&self.tasks)?
                    .into_iter()
                    .filter(TaskRecord::holds_off_offline)
                    .collect();
                if !holding.is_empty() {
                    return Ok(Completion::Held(holding));
                }
                let offline = ModeRecord {
                    mode: Mode::Offline,
                    from: None,
                    since: Timestamp::at(self.clock.now()),
                    ..r.clone()
                };
                Ok(Completion::Offline(self.write_change(offline, &r, entry)?))
            }
            _ => Ok(Completion::Cancelled(r)),
        }
    }

    fn leave_pending(
        &self,
        waiter: Box<dyn WaiterLease>,
        change: &ModeChange,
    ) -> Result<ModeRecord> {
        let since = waiter.pending_since();
        // The gate first: a reader that finds this waiter gone must find
        // the record it leaves too, not a PENDING that seems to lapse.
        let _gate = self.gate(true)?;
        drop(waiter);
        let r = self.record_for_writer();
        self.clean_under_gate(&r)?;
        if r.mode.is_draining() && r.since == since && !self.any_waiter_live()? {
            let back = match r.lapses_to() {
                Mode::ReadOnly => self.read_only_record(&r, change),
                _ => self.online_record(change),
            };
            return self.write_change(back, &r, change.entry.as_ref());
        }
        Ok(r)
    }

    fn force_offline(&self, change: &ModeChange) -> Result<ModeRecord> {
        let _gate = self.gate(true)?;
        let r = self.record_for_writer();
        self.clean_under_gate(&r)?;
        self.notice_under_gate();
        let mut offline = if r.mode == Mode::Offline {
            r.clone()
        } else {
            ModeRecord {
                mode: Mode::Offline,
                from: None,
                since: Timestamp::at(self.clock.now()),
                by: change.by.clone(),
                pid: change.pid,
                ..r.clone()
            }
        };
        change.update(&mut offline);
        let entry = change.entry.as_ref().filter(|_| r.mode != Mode::Offline);
        self.write_change(offline, &r, entry)
    }

    fn go_online(&self, change: &ModeChange) -> Result<ModeRecord> {
        let _gate = self.gate(true)?;
        let r = self.record_for_writer();
        self.notice_under_gate();
        // Recorded when the mode in force changes (not for a lapsed drain).
        let entry = change
            .entry
            .as_ref()
            .filter(|_| self.in_force(&r).is_ok_and(|v| v.mode != Mode::Online));
        let written = self.write_change(self.online_record(change), &r, entry)?;
        self.clean_under_gate(&written)?;
        self.clear_abandoned_run()?;
        Ok(written)
    }

    fn begin_read_only(&self, change: &ModeChange) -> Result<ReadOnlyStart> {
        let _gate = self.gate(true)?;
        self.begin_read_only_under_gate(change)
    }

    fn complete_read_only(
        &self,
        waiter: &dyn WaiterLease,
        entry: Option<&EntryDraft>,
    ) -> Result<Completion> {
        let _gate = self.gate(true)?;
        self.complete_read_only_under_gate(waiter, entry)
    }

    fn go_read_only(&self, change: &ModeChange) -> Result<ModeRecord> {
        let _gate = self.gate(true)?;
        self.go_read_only_under_gate(change)
    }

    fn begin_writes(&self) -> Result<Box<dyn WritesLease>> {
        Ok(Box::new(writes::publish(
            &self.pending,
            self.modes,
            &self.clock,
        )?))
    }

    fn writes_in_flight(&self) -> Result<Vec<WritesInFlight>> {
        writes::live(&self.pending)
    }

    fn begin_window_run(&self, run: &WindowRun) -> Result<Box<dyn WindowLease>> {
        let mut file = self.root.open_lock_rw(RUN_LOCK, self.modes)?;
        if fs2::FileExt::try_lock_exclusive(&file).is_err() {
            let holder = self.read_run(self.root.open_lock(RUN_LOCK, self.modes)?)?;
            return Err(Error::Refused(crate::error::Refusal::RunUnderWay {
                run: holder.unwrap_or_else(|| run.clone()),
                what: "; only one `offline run` at a time: try again when it has ended".into(),
            }));
        }
        // A run that died while its command ran left its record: it is
        // recorded before this run's replaces it.
        if let Ok(Some(old)) = self.root.open_read(RUN_LOCK)
            && let Ok(Some(dead)) = self.read_run(old)
            && self.read_record().is_ok_and(|r| dead.abandoned_in(&r))
        {
            self.notice_abandoned(&dead);
        }
        let json = serde_json::to_vec(run).map_err(|e| Error::Invalid(e.to_string()))?;
        file.set_len(0)
            .and_then(|()| file.write_all(&json))
            .map_err(|e| Error::io("write", self.root.join(RUN_LOCK), e))?;
        Ok(Box::new(FileWindowLease {
            file,
            run: run.clone(),
            path: self.root.join(RUN_LOCK),
        }))
    }

    fn window(&self) -> Result<WindowState> {
        let Some(file) = self.root.open_read(RUN_LOCK)? else {
            return Ok(WindowState::Free);
        };
        let live =
            tasks::held(&file).map_err(|e| Error::io("probe", self.root.join(RUN_LOCK), e))?;
        Ok(match (live, self.read_run(file)?) {
            (true, Some(run)) if run.running => WindowState::Running(run),
            (true, Some(run)) => WindowState::Waiting(run),
            (false, Some(run)) if self.read_record().is_ok_and(|r| run.abandoned_in(&r)) => {
                WindowState::Abandoned(run)
            }
            // A run killed while it waited left nothing half-done.
            (false, Some(_)) | (_, None) => WindowState::Free,
        })
    }

    fn begin_schedule(&self, schedule: &ScheduleRecord) -> Result<Box<dyn ScheduleLease>> {
        self.schedule_window(schedule)
    }

    fn schedule(&self) -> Result<Option<ScheduleRecord>> {
        self.live_schedule()
    }

    fn end_schedule(&self, end: &ScheduleEnd) -> Result<Option<EndedSchedule>> {
        self.end_live_schedule(end)
    }

    fn begin_scheduled_pending(
        &self,
        schedule: &dyn ScheduleLease,
        change: &ModeChange,
    ) -> Result<PendingStart> {
        self.begin_as_scheduled(schedule, change, || self.begin_pending_under_gate(change))
    }

    fn begin_scheduled_read_only(
        &self,
        schedule: &dyn ScheduleLease,
        change: &ModeChange,
    ) -> Result<ReadOnlyStart> {
        self.begin_as_scheduled(schedule, change, || self.begin_read_only_under_gate(change))
    }

    fn wait_for_change(
        &self,
        generation: u64,
        tasks: &[TaskRecord],
        timeout: Duration,
    ) -> Result<()> {
        watch::wait(self, generation, tasks, timeout)
    }

    fn session_timeout(&self) -> Duration {
        self.sessions.timeout()
    }

    fn touch_session(&self, key: &SessionKey) -> Result<()> {
        self.sessions.touch(key, &Now::of(self.clock.as_ref()))
    }

    fn end_session(&self, key: &SessionKey) -> Result<()> {
        self.sessions.end(key)
    }

    fn session(&self, key: &SessionKey) -> Result<Option<SessionEntry>> {
        self.sessions.get(key, &Now::of(self.clock.as_ref()))
    }

    fn sessions(&self) -> Result<Vec<SessionEntry>> {
        self.sessions.live(&Now::of(self.clock.as_ref()))
    }

    fn session_summary(&self) -> Result<SessionSummary> {
        self.sessions.summary(&Now::of(self.clock.as_ref()))
    }

    fn prune_sessions(&self) -> Result<usize> {
        self.sessions.prune(&Now::of(self.clock.as_ref()))
    }

    fn append_history(&self, entry: &crate::history::HistoryEntry) -> Result<bool> {
        self.append_entry(entry)
    }

    fn history(&self, query: &crate::history::HistoryQuery) -> Result<crate::history::HistoryRead> {
        self.read_history(query)
    }

    fn record_unrecorded(&self) -> Result<Vec<crate::history::HistoryEntry>> {
        // Cheap when nothing lapsed: the look every status makes anyway.
        let lapsed = self.view()?.lapsed.is_some();
        if lapsed
            || self.root.exists(history::INTENT)?
            || matches!(self.window()?, WindowState::Abandoned(_))
            || self.any_schedule_lapsed()?
        {
            let _gate = self.gate(true)?;
            self.notice_under_gate();
        }
        Ok(std::mem::take(
            &mut *self.noticed.lock().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::config::Config;

    fn open(state: &Path) -> FileBackend {
        FileBackend::open(&Config::with_state_dir(state), SystemClock::shared()).unwrap()
    }

    #[test]
    fn a_stray_marker_is_flagged_while_a_writer_holds_the_gate_and_put_right_once_free() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("s");
        let b = open(&state);
        let me = ModeChange::by_this_process();
        // A crash between the marker and an ONLINE record leaves a marker.
        std::fs::write(state.join(MARKER), "").unwrap();
        // A writer holding the gate is between its two writes: a look
        // leaves the marker to it, and says what it sees.
        let gate = b.gate(true).unwrap();
        let v = b.mode().unwrap();
        assert_eq!(v.mode, Mode::Online);
        assert!(v.stray_marker.unwrap().contains("marker"));
        assert!(state.join(MARKER).exists());
        drop(gate);
        assert!(b.mode().unwrap().stray_marker.is_none());
        assert!(!state.join(MARKER).exists(), "the next look removed it");
        // An OFFLINE record whose marker went missing: the view (as the
        // doctor reads it) says so, and the next writer restores it.
        b.force_offline(&me).unwrap();
        std::fs::remove_file(state.join(MARKER)).unwrap();
        assert!(b.view().unwrap().stray_marker.unwrap().contains("missing"));
        let _ = b.begin_pending(&me).unwrap();
        assert!(state.join(MARKER).exists(), "restored by the next writer");
        assert!(b.mode().unwrap().stray_marker.is_none());
    }

    #[test]
    fn a_failed_offline_record_write_takes_back_the_marker_it_wrote() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("s");
        let b = open(&state);
        // A directory in place of the record: every new record's rename fails.
        std::fs::create_dir(state.join(MODE)).unwrap();
        std::fs::write(state.join(MODE).join("x"), "").unwrap();
        let err = b.force_offline(&ModeChange::by_this_process()).unwrap_err();
        assert!(err.to_string().contains("mode.json"), "{err}");
        assert!(
            !state.join(MARKER).exists(),
            "the marker outlived the failed write: {err}"
        );
    }

    #[test]
    fn a_format_1_state_is_upgraded_and_its_wall_clock_sessions_still_count() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("s");
        drop(open(&state));
        std::fs::write(state.join(VERSION), "1\n").unwrap();
        // A session a format-1 binary recorded a moment ago.
        let key = SessionKey::of(b"alice");
        let now = Timestamp::at(std::time::SystemTime::now()).unix_seconds();
        let bucket = state.join(SESSIONS).join((now - now % 5).to_string());
        std::fs::create_dir(&bucket).unwrap();
        std::fs::write(bucket.join(key.as_str()), "").unwrap();
        let b = open(&state);
        assert_eq!(std::fs::read_to_string(state.join(VERSION)).unwrap(), "2\n");
        assert!(b.session(&key).unwrap().is_some());
        assert_eq!(b.sessions().unwrap().len(), 1);
    }

    #[test]
    fn a_named_state_directory_is_created_but_a_missing_parent_is_refused_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("a/b/state");
        let err =
            FileBackend::open(&Config::with_state_dir(&state), SystemClock::shared()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!(
                "its parent {} does not exist",
                tmp.path().join("a/b").display()
            )),
            "{msg}"
        );
        assert!(msg.contains("mkdir -p"), "{msg}");
        assert!(!tmp.path().join("a").exists(), "nothing was created: {msg}");
        // The directory itself, below a parent that exists, is created.
        drop(open(&tmp.path().join("state")));
        assert!(tmp.path().join("state").join(VERSION).exists());
    }

    #[test]
    fn the_default_state_directory_gets_its_missing_parents() {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = Config::with_state_dir(tmp.path().join("home/.local/state/manage"));
        config.state_dir_source = crate::config::Source::Default;
        let b = FileBackend::open(&config, SystemClock::shared()).unwrap();
        assert_eq!(b.mode().unwrap().mode, Mode::Online);
        assert!(config.state_dir.join(VERSION).exists());
    }
}
