//! The history of the site's mode: one [`HistoryEntry`] per mode change
//! (and per schedule event, abandoned run or failed hook), appended by the
//! backend after the change is durable and read back newest last
//! ([`Backend::history`](crate::backend::Backend::history)).
//! `recorder.rs` is the one way in: it appends, and a failed append is
//! reported on stderr and never reverts the change.
//!
//! Every entry of a change that more than one process may record (a
//! completion two waiters race for, a lapsed PENDING several readers
//! notice) carries an [`id`](HistoryEntry::id) naming the change, and the
//! backend keeps the first entry with a given id only: each change is
//! recorded exactly once.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::mode::Mode;
use crate::schedule::ScheduleRecord;

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The mode changed (`from` → `to`).
    Mode,
    /// A window was scheduled (`offline on --at`).
    ScheduleSet,
    /// A scheduled window was cancelled: by `offline off`, by `offline on`
    /// going offline now, or by its own process (interrupted, or unable to
    /// go on at its time); [`HistoryEntry::by`] says who.
    ScheduleCancelled,
    /// The process holding a schedule died before its time.
    ScheduleLapsed,
    /// A scheduled window's time came with no mode change of its own to
    /// mark it: the site was OFFLINE (or, for a read-only window, READONLY)
    /// already, or draining toward it by another process's wait, which it
    /// joined. (Otherwise the PENDING or READONLY_PENDING it begins carries
    /// the schedule.)
    ScheduleDue,
    /// An `offline run` was killed while its command ran: the site stays
    /// OFFLINE (`from` and `to` are the mode then).
    RunAbandoned,
    /// A hook failed or timed out ([`HistoryEntry::hook`] says how);
    /// `from` and `to` are those of the change it ran for.
    HookFailed,
    /// A kind this binary does not know (written by a newer one).
    #[serde(other)]
    Other,
}

impl EventKind {
    /// The name stored and given to hooks (`MANAGE_EVENT`): `mode`,
    /// `schedule_set`, …
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Mode => "mode",
            EventKind::ScheduleSet => "schedule_set",
            EventKind::ScheduleCancelled => "schedule_cancelled",
            EventKind::ScheduleLapsed => "schedule_lapsed",
            EventKind::ScheduleDue => "schedule_due",
            EventKind::RunAbandoned => "run_abandoned",
            EventKind::HookFailed => "hook_failed",
            EventKind::Other => "other",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the change happened, for scripts; [`HistoryEntry::reason`] says it
/// for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// `offline on`: PENDING began, or the wait ended OFFLINE; with
    /// `--read-only`, READONLY_PENDING and READONLY.
    On,
    /// `offline on --force`: OFFLINE (or, with `--read-only`, READONLY)
    /// at once.
    Force,
    /// `offline on --timeout` ran out: back where the drain came from
    /// (ONLINE, or READONLY for a PENDING begun there).
    Timeout,
    /// The wait was interrupted (Ctrl-C, SIGTERM): back where the drain
    /// came from.
    Interrupted,
    /// A drain-`block` command refused the wait: back where the drain
    /// came from.
    Refused,
    /// `offline off`.
    Off,
    /// `offline run`: PENDING, OFFLINE for its command (with
    /// `--read-only`: READONLY_PENDING, READONLY), then the mode it found.
    Run,
    /// The waiting process died: the drain lapsed to where it came from.
    Lapsed,
    /// The `offline run` died while its command ran.
    Abandoned,
    /// A scheduled window's time came, or a schedule changed.
    Scheduled,
    /// A cause this binary does not know (written by a newer one).
    #[serde(other)]
    Other,
}

/// One task named in an entry: what held the wait, or was still live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldTask {
    /// The task's id (the root's, for a run that joined it).
    pub id: String,
    /// The command's name.
    pub name: String,
    /// The process that started it.
    pub pid: u32,
    /// `user@host`.
    pub by: String,
    /// Whether it ran inside the window (it did not hold OFFLINE off).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_window: bool,
}

/// Tasks and web sessions, as an entry names them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The tasks (at most [`Held::MAX_TASKS`]; `more` counts the rest).
    #[serde(default)]
    pub tasks: Vec<HeldTask>,
    /// Tasks left out of `tasks`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more: usize,
    /// Live web sessions.
    #[serde(default)]
    pub sessions: usize,
    /// Web layer processes with unsafe requests in flight (a drain toward
    /// READONLY waits for them).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub writes: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Held {
    /// How many tasks an entry names; the rest are only counted.
    pub const MAX_TASKS: usize = 50;

    /// Whether nothing is named.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.more == 0 && self.sessions == 0 && self.writes == 0
    }

    /// Adds `task` unless a task of that id is named already.
    pub fn add_task(&mut self, task: HeldTask) {
        if self.tasks.iter().any(|t| t.id == task.id) {
            return;
        }
        if self.tasks.len() < Self::MAX_TASKS {
            self.tasks.push(task);
        } else {
            self.more += 1;
        }
    }

    /// Takes in everything `other` names: its tasks, and the larger counts
    /// of sessions and of web layers with writes in flight.
    pub fn merge(&mut self, other: &Held) {
        for t in &other.tasks {
            self.add_task(t.clone());
        }
        self.more += other.more;
        self.sessions = self.sessions.max(other.sessions);
        self.writes = self.writes.max(other.writes);
    }
}

impl fmt::Display for Held {
    /// `command `reindex` (pid 12, root@web1), 2 web sessions`, or
    /// `nothing live`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .tasks
            .iter()
            .take(3)
            .map(|t| format!("command `{}` (pid {}, {})", t.name, t.pid, t.by))
            .collect();
        let rest = self.tasks.len().saturating_sub(3) + self.more;
        if rest > 0 {
            parts.push(format!(
                "{rest} more command{}",
                if rest == 1 { "" } else { "s" }
            ));
        }
        if self.sessions > 0 {
            parts.push(format!(
                "{} web session{}",
                self.sessions,
                if self.sessions == 1 { "" } else { "s" }
            ));
        }
        if self.writes > 0 {
            parts.push(format!(
                "writes in flight in {} web layer{}",
                self.writes,
                if self.writes == 1 { "" } else { "s" }
            ));
        }
        if parts.is_empty() {
            f.write_str("nothing live")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// How long a change waited, and for what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Waited {
    /// From the start of PENDING to this change, in seconds.
    pub seconds: f64,
    /// What held it off along the way (every task seen, the most sessions
    /// seen at once).
    #[serde(rename = "for", default)]
    pub held_by: Held,
}

/// The scheduled window an entry concerns (set by `offline on --at` or
/// `offline run --at`): what [`ScheduleRecord`] says of it, for the
/// history and hooks (`MANAGE_SCHEDULED_AT` is its `at`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRef {
    /// The schedule's id, as the backend gave it.
    #[serde(default)]
    pub id: String,
    /// When the window is to begin.
    pub at: Timestamp,
    /// From when users are told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice_from: Option<Timestamp>,
    /// `user@host` of whoever scheduled it.
    pub by: String,
    /// The process that holds the schedule.
    pub pid: u32,
    /// The message for users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For `offline run --at`: the command the window is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// A read-only window (`--at TIME --read-only`): at its time the site
    /// goes READONLY_PENDING, then READONLY. Absent (`false`) for an
    /// offline window.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

impl From<&ScheduleRecord> for ScheduleRef {
    fn from(r: &ScheduleRecord) -> Self {
        ScheduleRef {
            id: r.id.clone(),
            at: r.at,
            notice_from: Some(r.notice_from),
            by: r.by.clone(),
            pid: r.pid,
            message: r.message.clone(),
            argv: r.argv.clone(),
            read_only: r.read_only,
        }
    }
}

/// How a hook failed (entries of kind [`EventKind::HookFailed`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookFailure {
    /// The hook's argv, as configured.
    pub program: Vec<String>,
    /// What happened: `exited with 3`, `timed out after 10s and was
    /// killed`, `could not start: …`.
    pub failure: String,
    /// The end of what it wrote on stderr, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// When the change it ran for happened.
    pub change_at: Timestamp,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When it happened (for a change nobody lived to record: when it was
    /// noticed).
    pub at: Timestamp,
    /// What it records.
    pub kind: EventKind,
    /// The mode before.
    pub from: Mode,
    /// The mode after.
    pub to: Mode,
    /// Whether `--force` made it, whatever was live.
    #[serde(default)]
    pub forced: bool,
    /// Why, for scripts.
    pub cause: Cause,
    /// Who: `user@host`.
    pub by: String,
    /// Who: the process.
    pub pid: u32,
    /// The message for users in force after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Why, for people: `offline on`, `timed out after 30s`, …
    pub reason: String,
    /// How long it waited, and for what (the end of a wait for OFFLINE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited: Option<Waited>,
    /// What was still live right after the change.
    #[serde(default)]
    pub live: Held,
    /// The scheduled window it concerns, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleRef>,
    /// For a change nobody lived to record: who noticed and recorded it
    /// (`user@host (pid N)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noticed_by: Option<String>,
    /// For a failed hook: which, and how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<HookFailure>,
    /// The change's identity, for a change more than one process may
    /// record: the backend keeps one entry per id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl HistoryEntry {
    /// An entry of `kind` and `cause` for `from` → `to` at `at`, by this
    /// process, with `reason`; nothing else set.
    pub fn new(
        kind: EventKind,
        cause: Cause,
        from: Mode,
        to: Mode,
        at: Timestamp,
        reason: impl Into<String>,
    ) -> Self {
        let me = crate::identity::Identity::current();
        HistoryEntry {
            at,
            kind,
            from,
            to,
            forced: false,
            cause,
            by: me.user_at_host(),
            pid: me.pid,
            message: None,
            reason: reason.into(),
            waited: None,
            live: Held::default(),
            schedule: None,
            noticed_by: None,
            hook: None,
            id: None,
        }
    }

    /// The id of the change that wrote a mode record: its generation and
    /// time, which no other write shares.
    pub fn record_id(record: &crate::mode::ModeRecord) -> String {
        format!("record:{}@{}", record.generation, record.since)
    }

    /// The id of the change that began PENDING with `record`: who and
    /// when, which a later message update (a new generation) keeps.
    pub fn pending_id(record: &crate::mode::ModeRecord) -> String {
        format!("pending:{}@{}", record.pid, record.since)
    }

    /// Whether hooks run for this entry: for every kind but a failed hook
    /// (a hook's failure never runs hooks again).
    pub fn runs_hooks(&self) -> bool {
        self.kind != EventKind::HookFailed
    }

    /// The change as the history table and hooks' reports say it:
    /// `ONLINE → PENDING`, `schedule set`, `hook failed`, …
    pub fn change(&self) -> String {
        match self.kind {
            EventKind::Mode => format!("{} → {}", self.from, self.to),
            EventKind::ScheduleSet => "schedule set".into(),
            EventKind::ScheduleCancelled => "schedule cancelled".into(),
            EventKind::ScheduleLapsed => "schedule lapsed".into(),
            EventKind::ScheduleDue => "schedule due".into(),
            EventKind::RunAbandoned => "run abandoned".into(),
            EventKind::HookFailed => "hook failed".into(),
            EventKind::Other => "(unknown)".into(),
        }
    }
}

/// The entry of a mode change, drawn up before the change is made and
/// completed by the backend from the record it writes, in the same
/// durable step as the write ([`crate::backend::ModeChange::recording`]):
/// a process killed right after the write leaves its change recorded (on
/// PostgreSQL in the write's transaction; on files as the intent the next
/// writer or reader completes).
#[derive(Debug, Clone, PartialEq)]
pub struct EntryDraft {
    /// Everything the record does not say.
    entry: HistoryEntry,
    /// The change begins a drain: `from` is the mode it lapses to, and the
    /// id is [`HistoryEntry::pending_id`] (kept by a later message update).
    begins_drain: bool,
    /// The wait began then: `waited.seconds` runs to the record's time.
    waited_since: Option<Timestamp>,
}

impl EntryDraft {
    /// The draft of `entry`: its time, target mode, message, author and id
    /// are taken from the record written.
    pub fn new(entry: HistoryEntry) -> Self {
        EntryDraft {
            entry,
            begins_drain: false,
            waited_since: None,
        }
    }

    /// The draft of a drain's beginning (PENDING, READONLY_PENDING).
    pub fn begins_drain(mut self) -> Self {
        self.begins_drain = true;
        self
    }

    /// The draft of a change that ends a wait begun at `since`.
    pub fn waited_since(mut self, since: Timestamp) -> Self {
        self.waited_since = Some(since);
        self
    }

    /// The entry of the change that wrote `record` (its generation set).
    pub fn entry_for(&self, record: &crate::mode::ModeRecord) -> HistoryEntry {
        let mut e = self.entry.clone();
        e.at = record.since;
        e.to = record.mode;
        e.message = record.message.clone();
        e.by = record.by.clone();
        e.pid = record.pid;
        if self.begins_drain {
            e.from = record.lapses_to();
            e.id = Some(HistoryEntry::pending_id(record));
        } else {
            e.id = Some(HistoryEntry::record_id(record));
        }
        if let (Some(since), Some(waited)) = (self.waited_since, e.waited.as_mut()) {
            waited.seconds = record
                .since
                .system_time()
                .duration_since(since.system_time())
                .unwrap_or_default()
                .as_secs_f64();
        }
        e
    }
}

/// Which entries to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only the last this many (after `since`); `None`: all kept.
    pub last: Option<usize>,
    /// Only those at or after this time.
    pub since: Option<Timestamp>,
}

/// What a read of the history found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryRead {
    /// The entries, oldest first (newest last).
    pub entries: Vec<HistoryEntry>,
    /// One line per stored line that could not be read (garbled, not ours,
    /// written by a newer binary), naming where it is; those lines were
    /// skipped.
    pub skipped: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzzing (`fuzz/`, target `records`, the input kept in
    /// `tests/fuzz-regressions/`): a waited time of 1.18e20 s was written
    /// back as a float that read as its neighbour, one unit in the last
    /// place off (serde_json's fast float parser rounds some numbers
    /// wrongly without its `float_roundtrip` feature). Every entry of the
    /// input reads back exactly as written.
    #[test]
    fn an_entry_written_back_reads_back_exactly() {
        let input = include_bytes!("../tests/fuzz-regressions/records-history-float");
        let mut read = 0;
        for line in input[1..].split(|b| *b == b'\n') {
            let Ok(entry) = serde_json::from_slice::<HistoryEntry>(line) else {
                continue;
            };
            let json = serde_json::to_string(&entry).unwrap();
            assert_eq!(
                serde_json::from_str::<HistoryEntry>(&json).unwrap(),
                entry,
                "{json}"
            );
            read += 1;
        }
        assert!(read >= 2, "the input's entries parse");
        let f = 1.1844674407370955e20_f64;
        let back: f64 = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(back.to_bits(), f.to_bits());
    }

    #[test]
    fn an_entry_serialises_with_the_documented_names_and_reads_back() {
        let mut e = HistoryEntry::new(
            EventKind::Mode,
            Cause::On,
            Mode::Pending,
            Mode::Offline,
            Timestamp::EPOCH,
            "offline on",
        );
        e.waited = Some(Waited {
            seconds: 1.5,
            held_by: Held {
                tasks: vec![HeldTask {
                    id: "t1".into(),
                    name: "reindex".into(),
                    pid: 7,
                    by: "root@web1".into(),
                    in_window: false,
                }],
                more: 0,
                sessions: 2,
                writes: 0,
            },
        });
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "mode");
        assert_eq!(json["cause"], "on");
        assert_eq!(json["from"], "PENDING");
        assert_eq!(json["to"], "OFFLINE");
        assert_eq!(json["waited"]["seconds"], 1.5);
        assert_eq!(json["waited"]["for"]["tasks"][0]["name"], "reindex");
        assert_eq!(json["waited"]["for"]["sessions"], 2);
        assert!(json.get("schedule").is_none());
        let back: HistoryEntry = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
        assert_eq!(
            back.waited.unwrap().held_by.to_string(),
            "command `reindex` (pid 7, root@web1), 2 web sessions"
        );
    }

    #[test]
    fn kinds_and_causes_of_a_newer_binary_read_as_other() {
        let mut json = serde_json::to_value(HistoryEntry::new(
            EventKind::Mode,
            Cause::Off,
            Mode::Offline,
            Mode::Online,
            Timestamp::EPOCH,
            "offline off",
        ))
        .unwrap();
        json["kind"] = "readonly_began".into();
        json["cause"] = "tuesday".into();
        let back: HistoryEntry = serde_json::from_value(json).unwrap();
        assert_eq!(back.kind, EventKind::Other);
        assert_eq!(back.cause, Cause::Other);
    }
}
