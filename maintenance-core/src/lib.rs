//! maintenance-core: everything a command or a web app needs to take a site
//! offline only when nobody is in the middle of something — configuration,
//! the mode record, tasks and their locks, the [`Backend`]
//! trait and the file backend. No terminal handling.
//!
//! # Invariants, and how the protocol keeps each
//!
//! - **I1** No task started while ONLINE is live while the mode is OFFLINE,
//!   except after `--force`. Task starts and mode changes pass one *gate*
//!   inside the backend (the file backend: a lock file taken shared by a
//!   task start, exclusively by a mode change), so a task either is visible
//!   to the mode change that follows or sees its new mode and is refused.
//!   Each task records the mode it started in; [`transition::activate`] goes
//!   OFFLINE only once no task started ONLINE is live, and its final look
//!   and the OFFLINE write happen after that task's lock is free.
//!   *Read-only tier:* a task started during READONLY_PENDING or READONLY —
//!   read-only, `allowed`, the override, a read-only window's command —
//!   holds off a later OFFLINE like one started ONLINE
//!   ([`TaskRecord::holds_off_offline`]); READONLY is held off only by tasks
//!   that may write and started ONLINE ([`TaskRecord::holds_off_read_only`]),
//!   and [`transition::activate_read_only`] writes READONLY only after the
//!   same final look under the gate ([`Backend::complete_read_only`]).
//!   *Across a partition* (PostgreSQL, where a lock lives on a connection):
//!   a running task checks its lock's connection and, when it is lost,
//!   re-enters through the same gate and admission; refused, or unable to
//!   get back in time, it is told to stop
//!   ([`backend::TaskLease::on_hold_lost`]) and killed
//!   [`task::STOP_GRACE`] later, before the server's keepalive bound frees
//!   the lock (`backend/postgres/connect.rs` holds the numbers).
//! - **I2** Once PENDING has begun, no new guarded task starts (the gate,
//!   and [`admission::admit`], the one rule that decides), and no new web session
//!   gets in (the middleware's PENDING rule). A layer whose snapshot still
//!   says ONLINE may let someone in during the refresh interval; so
//!   `activate` waits a settle time of twice that interval (one for a
//!   snapshot's age, one for the write of a session it let in) from the
//!   start of PENDING, then looks at the sessions afresh before it writes OFFLINE.
//!   The backend never refuses a touch. Only sessions the app vouched for
//!   count; one vouched past the layer's per-interval cap is held off
//!   OFFLINE by that layer's overflow entry until it is written
//!   (`middleware::state`). `activate` counts sessions from the backend's
//!   listing, which never misses a session its writer moves to a newer
//!   time bucket meanwhile (the file backend reads buckets oldest first);
//!   `status` shows [`Backend::session_summary`], which never counts fewer
//!   and no decision rests on. *Read-only tier:* once READONLY_PENDING has
//!   begun no new task that may write starts (the same gate and
//!   [`admission::admit`]), and no web layer lets a new unsafe request in
//!   once it has seen it; the unsafe requests a layer let in under a stale
//!   snapshot are counted before the snapshot is read and published in
//!   the state while READONLY_PENDING ([`Backend::begin_writes`]; the
//!   ordering is `middleware::readonly`'s), so after the same settle time
//!   `activate_read_only` sees every write in flight and waits for it. Web
//!   sessions do not hold READONLY off.
//! - **I3** A task counts exactly as long as a process of its command lives:
//!   it is an `flock` held on a file whose descriptor a child may inherit
//!   ([`CommandTask::prepare_child`](task::CommandTask::prepare_child));
//!   after that, dropping the guard only closes. An external command runs
//!   under a keeper, the runner's child and a child subreaper on Linux, which
//!   holds the locks until the command and everything it left behind have
//!   exited; [`process`] names those processes from what was recorded at
//!   spawn. The kernel drops the lock
//!   when the last holder dies, by any signal; probes take shared try-locks,
//!   so a dead task never looks live, and its file is reaped later. On
//!   Linux a task file is a reused slot (`backend/file/tasks/slots.rs`): a
//!   start locks only a free slot it claimed and checked under a lock of
//!   its own, never a dead task's file, and a reader checks after reading
//!   that the task's name still leads to the file it read. A nested
//!   run joins the task it runs in only with proof that it belongs to it
//!   ([`Backend::join_task`]): a descriptor holding the task's lock that it
//!   inherited (the file backend on Linux reads `/proc/self/fdinfo`), or
//!   the task's secret, passed in `MANAGE_TASK` and stored only hashed;
//!   the id alone is refused. A joined run records a locked task file of
//!   its own (`joined`), so the task stays live while it runs, even after
//!   its root died; it keeps its own command's policy ([`admission::admit_joined`]:
//!   `required` needs a window, `block` blocks). The join happens under the
//!   gate and the waiter's final look too ([`Backend::complete_offline`]),
//!   so no join slips in between that look and OFFLINE (I1).
//! - **I4** Nothing is created, read or removed outside the state directory:
//!   every file is opened relative to a directory descriptor with
//!   `O_NOFOLLOW` (and `O_NONBLOCK`, so a planted FIFO cannot hang a
//!   reader); subdirectories are opened with `O_NOFOLLOW` too, so a symlink
//!   planted in place of `tasks/` is refused; command names become file
//!   names only when plainly safe, and a hash otherwise; session ids are
//!   only ever hashed.
//! - **I5** A mode change is all or nothing: the record is replaced by
//!   rename, and the web-server marker is created before an OFFLINE record
//!   (taken back if that record cannot be written) and removed after any
//!   other (kept if that record cannot be written), so marker and record
//!   agree after every change, failed or not. A crash in between leaves a
//!   stray marker that the view flags and the next look at the mode, task
//!   start or writer puts right under the gate. PENDING holds only
//!   while a waiter's lock is held: a killed waiter leaves the site ONLINE,
//!   and the view says why. A scheduled window ([`schedule`]) likewise
//!   lives only while its waiting process holds its lock
//!   ([`Backend::begin_schedule`]); its end and its own draining mode
//!   (PENDING, or READONLY_PENDING for a read-only window) are written
//!   under the gate, so a cancel never loses to its time coming.
//!   OFFLINE persists until someone turns it off.
//!   *Read-only tier:* READONLY_PENDING lives as PENDING does, and a killed
//!   waiter of either drain lets it lapse back to the mode it came from
//!   ([`ModeRecord::lapses_to`]): READONLY_PENDING to ONLINE, a PENDING begun
//!   from READONLY to READONLY, never ONLINE. READONLY persists until
//!   someone turns it ONLINE or OFFLINE. The READONLY marker follows the
//!   record as OFFLINE's does (both are ordered around every write), and the
//!   record is stored so that a binary that predates READONLY reads it as
//!   OFFLINE, never ONLINE ([`mode`]'s docs).
//!
//! Locks are `flock(2)`, which is not to be trusted on NFS: keep the state
//! directory on a local file system. Unix only.
//!
//! The PostgreSQL backend (feature `postgres`, `backend::postgres`) keeps
//! the same invariants across hosts with advisory locks where the file
//! backend has `flock`: the gate is a per-transaction advisory lock
//! (exclusive for mode changes, shared for task starts and joins: I1, I2);
//! a task, a waiter, holds a session-level lock on a connection of its own
//! for its lifetime, freed by the server when that connection ends, by any
//! signal (I3, I5), and probed shared; an external command's child inherits
//! that connection's socket (I3); the mode record is a row replaced in a
//! transaction (I5); every row carries its site, and every key its site's
//! class (the isolation I4 gives the file backend by its directory).
//!
//! # Where things are
//!
//! Imports run one way: [`records`] and [`schedule`] (what a backend
//! stores) → [`error`] → [`admission`] (the one rule that admits a task) →
//! [`backend`] (the trait, its leases, the file backend) → [`task`] (the
//! `CommandTask` guard) → [`transition`] (the state machine: what `offline
//! on` does, on a timeout too, and the wait for a scheduled window's time
//! before it), and the read-only tier beside it ([`transition::activate_read_only`],
//! [`transition::run_in_window_to`]). How a web session counts: [`session`] and the file backend's
//! `sessions.rs`. How a child keeps its task: [`CommandTask::handoff`] and
//! [`join`] (the proof a nested run presents). What happened: [`history`]
//! (every change and schedule event, appended by [`transition`] once
//! durable, the read-only tier's as READONLY_PENDING and READONLY; a
//! lapse, of a drain or a schedule, recorded once by whoever notices it)
//! and [`hooks`] (run detached after each).

pub mod admission;
pub mod backend;
pub mod clock;
pub mod command;
pub mod config;
pub mod database_url;
pub mod digest;
pub mod error;
pub mod exit;
pub mod hex;
pub mod history;
pub mod hook_supervisor;
pub mod hooks;
pub mod host;
pub mod identity;
pub mod join;
#[cfg(feature = "tower")]
pub mod middleware;
pub mod mode;
pub mod policy;
pub mod process;
pub mod random;
pub mod recorder;
pub mod records;
pub mod schedule;
pub mod session;
pub mod site_path;
pub mod task;
pub mod transition;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use backend::{Backend, FileBackend};
pub use clock::{BootId, BootTime, Clock, ManualClock, SharedClock, SystemClock, Timestamp};
pub use config::Config;
pub use database_url::DatabaseUrl;
pub use error::{Error, Refusal, Result};
pub use mode::{Mode, ModeRecord, ModeView};
pub use policy::Policy;
pub use records::TaskRecord;
pub use task::{CommandTask, TaskOptions};

/// Re-exported so a plug-in's `run` can return `anyhow::Result` without a
/// dependency of its own.
pub use anyhow;
/// Re-exported so a plug-in crate depends on this crate alone and can never
/// bring a second, incompatible clap.
pub use clap;
/// Re-exported so `register!` works without a dependency of the user's own.
pub use inventory;
