//! The file backend's history: `history.jsonl`, one JSON entry a line,
//! appended under an `flock` of its own (never the gate: a task start never
//! waits for the history) and rotated to `history.jsonl.1` once it would
//! pass `[history] max_size`, keeping its mode and group as every state
//! file does. Opened with `O_NOFOLLOW` like everything else (I4); a line
//! that is not an entry is skipped, named, and never fatal.
//!
//! Also the changes nobody lived to record — a lapsed drain (PENDING, or
//! READONLY_PENDING), an `offline run` killed mid-command, a schedule whose
//! process was killed — noticed
//! under the exclusive gate (so that they come before the change that
//! replaces them) and recorded once: each carries the id of what lapsed,
//! and an append skips an id already kept; a lapsed schedule is moreover
//! found only by the one holder of the gate that removes its file.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;

use super::FileBackend;
use super::dir::{self, Modes};
use crate::backend::unrecorded::{
    abandoned_entry, lapse_entry, late_entry, pending_entry, schedule_lapse_entry,
};
use crate::backend::{Backend, WindowRun, WindowState};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::history::{EntryDraft, HistoryEntry, HistoryQuery, HistoryRead};
use crate::mode::ModeRecord;
use crate::schedule::ScheduleRecord;

/// The history.
pub(crate) const HISTORY: &str = "history.jsonl";
/// The history before the last rotation.
pub(crate) const HISTORY_OLD: &str = "history.jsonl.1";
/// A line longer than this is not ours (an entry names at most 50 tasks).
const MAX_LINE: u64 = 1 << 20;
/// How often an append starts over because another process rotated the
/// file under it, before giving up.
const ROTATION_RETRIES: usize = 16;
/// How long an append waits for another's: appends hold the lock for
/// moments, so a longer hold is a stuck process (or a member of the group
/// holding it by hand), and the change is made already: the append gives
/// up, reported, rather than hold up the command that made it.
const LOCK_WAIT: std::time::Duration = if cfg!(test) {
    std::time::Duration::from_millis(200)
} else {
    std::time::Duration::from_secs(5)
};

/// The entry of the mode change under way, written before its record and
/// removed once the entry is appended: left behind by a process killed in
/// between, it is completed by the next writer or reader (`complete_intent`).
pub(crate) const INTENT: &str = "history.intent";

/// [`INTENT`]'s content: the entry, and the generation of the record it is
/// the entry of.
#[derive(serde::Serialize, serde::Deserialize)]
struct Intent {
    generation: u64,
    entry: HistoryEntry,
}

impl FileBackend {
    /// Writes `record` in place of `previous` (the record in force, read
    /// under the exclusive gate), recording no entry: a message update, or
    /// a change nobody asked to record.
    pub(super) fn write_record(
        &self,
        record: ModeRecord,
        previous: &ModeRecord,
    ) -> Result<ModeRecord> {
        self.write_change(record, previous, None)
    }

    /// Writes `record` in place of `previous` with the entry `draft` makes
    /// of it (if any), for a holder of the exclusive gate, as one durable
    /// step: the entry is written first as the intent ([`INTENT`]), then
    /// the record, then the entry is appended and the intent removed. A
    /// process killed anywhere in between leaves either no record (the
    /// intent, whose generation no record has, is dropped) or the record
    /// and its intent, which the next holder of the gate appends before
    /// anything else (`complete_intent`): every writer, and every `status`
    /// or `history` that finds an intent. An entry appended here waits in
    /// `noticed` for the caller's hooks ([`Backend::record_unrecorded`]);
    /// a failed append is reported and leaves the intent for the next one.
    ///
    /// [`Backend::record_unrecorded`]: crate::backend::Backend::record_unrecorded
    pub(super) fn write_change(
        &self,
        mut record: ModeRecord,
        previous: &ModeRecord,
        draft: Option<&EntryDraft>,
    ) -> Result<ModeRecord> {
        self.complete_intent();
        let Some(draft) = draft else {
            return self.replace_record(record, previous);
        };
        record.generation = previous.generation.wrapping_add(1);
        if !record.mode.is_draining() {
            record.from = None;
        }
        let intent = Intent {
            generation: record.generation,
            entry: draft.entry_for(&record),
        };
        let json = serde_json::to_vec(&intent).map_err(|e| Error::Invalid(e.to_string()))?;
        // Atomic, not synced: it outlives any kill of this process; the
        // record is the one file synced.
        self.root.replace(INTENT, &json, self.modes, false)?;
        let written = match self.replace_record(record, previous) {
            Ok(r) => r,
            Err(e) => {
                let _ = self.root.remove(INTENT);
                return Err(e);
            }
        };
        match self.append_entry(&intent.entry) {
            Ok(appended) => {
                if appended {
                    self.noticed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(intent.entry);
                }
                let _ = self.root.remove(INTENT);
            }
            Err(e) => eprintln!(
                "warning: the change ({} at {}) is made, but it could not be recorded in the \
                 history of the {} yet ({e}): it is kept in {} and recorded by the next change \
                 or `offline status`",
                intent.entry.change(),
                intent.entry.at,
                self.location(),
                self.root.join(INTENT).display()
            ),
        }
        Ok(written)
    }

    /// Appends the entry of a change whose process wrote its record and
    /// was killed before appending it ([`INTENT`]), for a holder of the
    /// exclusive gate: recorded late, with the noticer named, once (its
    /// id); an intent whose record was never written is dropped.
    pub(super) fn complete_intent(&self) {
        let path = self.root.join(INTENT);
        let bytes = match self.root.open_read(INTENT) {
            Ok(None) => return,
            Ok(Some(f)) => dir::read_regular(f, MAX_LINE as usize, &path),
            Err(e) => Err(e),
        };
        let intent = match bytes.map(|b| serde_json::from_slice::<Intent>(&b)) {
            Ok(Ok(intent)) => intent,
            Ok(Err(e)) => {
                eprintln!(
                    "warning: {}: not the entry of a change ({e}); it was removed",
                    path.display()
                );
                let _ = self.root.remove(INTENT);
                return;
            }
            Err(e) => {
                eprintln!("warning: cannot read the entry of a change left unrecorded: {e}");
                return;
            }
        };
        let record = match self.read_record() {
            Ok(r) => r,
            Err(e) => {
                eprintln!(
                    "warning: cannot tell whether the change of {} was made: {e}",
                    path.display()
                );
                return;
            }
        };
        let e = &intent.entry;
        let made = record.generation == intent.generation
            && record.since == e.at
            && record.pid == e.pid
            && record.mode == e.to;
        if made {
            let entry = late_entry(intent.entry);
            match self.append_entry(&entry) {
                Ok(true) => self
                    .noticed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(entry),
                Ok(false) => {}
                Err(err) => {
                    eprintln!(
                        "warning: {} ({}) could not be recorded in the history yet: {err}",
                        entry.change(),
                        entry.reason
                    );
                    return;
                }
            }
        }
        let _ = self.root.remove(INTENT);
    }

    /// Appends `entry`, unless its id is kept already; rotates first when
    /// the line would take the file past the bound.
    pub(super) fn append_entry(&self, entry: &HistoryEntry) -> Result<bool> {
        let mut line = serde_json::to_vec(entry).map_err(|e| Error::Invalid(e.to_string()))?;
        line.push(b'\n');
        let path = self.root.join(HISTORY);
        for _ in 0..ROTATION_RETRIES {
            let file = self.root.open_append_regular(HISTORY, self.modes)?;
            lock_a_while(&file, &path)?;
            let meta = file
                .metadata()
                .map_err(|e| Error::io("inspect", &path, e))?;
            if self.root.inode_of(HISTORY)? != Some(meta.ino()) {
                // Rotated (or removed) while this process waited for the
                // lock: append to the file under that name now.
                continue;
            }
            if let Some(id) = &entry.id
                && self.keeps_id(id)?
            {
                return Ok(false);
            }
            let size = meta.len();
            if size > 0 && size + line.len() as u64 > self.history_max {
                self.rotate(meta.mode() & 0o7777, meta.gid())?;
                continue;
            }
            // A line torn by a crash must not swallow this one.
            let torn = size > 0 && !ends_with_newline(self)?;
            let mut bytes = Vec::with_capacity(line.len() + 1);
            if torn {
                bytes.push(b'\n');
            }
            bytes.extend_from_slice(&line);
            (&file)
                .write_all(&bytes)
                .map_err(|e| Error::io("write", &path, e))?;
            return Ok(true);
        }
        Err(Error::state(
            path,
            "kept being rotated by other processes while this one tried to append to it; try again",
        ))
    }

    /// `history.jsonl` becomes `history.jsonl.1` (replacing the older one),
    /// and a fresh `history.jsonl` gets the mode and group it had. For the
    /// holder of the history's lock.
    fn rotate(&self, mode: u32, gid: u32) -> Result<()> {
        if let Err(e) = self.root.rename(HISTORY, HISTORY_OLD) {
            return Err(Error::state(
                self.root.join(HISTORY_OLD),
                format!(
                    "cannot take the rotated history ({e}); remove it if it is not a regular file"
                ),
            ));
        }
        let keep = Modes {
            file: mode & self.modes.file,
            gid: self.modes.gid.or(Some(gid)),
            ..self.modes
        };
        drop(self.root.open_append_regular(HISTORY, keep)?);
        Ok(())
    }

    /// Whether an entry with this id is kept (in either file). The id is
    /// the last field this binary writes, so a line is parsed only when it
    /// ends with it.
    fn keeps_id(&self, id: &str) -> Result<bool> {
        let needle = format!("\"id\":{}}}", serde_json::Value::from(id));
        for name in [HISTORY, HISTORY_OLD] {
            let Some(file) = self.root.open_read(name)? else {
                continue;
            };
            let (bytes, _) = read_tail(file, self.read_cap(), &self.root.join(name))?;
            for line in bytes.split(|b| *b == b'\n') {
                if line.ends_with(needle.as_bytes())
                    && serde_json::from_slice::<HistoryEntry>(line)
                        .is_ok_and(|e| e.id.as_deref() == Some(id))
                {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// The most of one file a read looks at: its bound and one line more.
    fn read_cap(&self) -> u64 {
        self.history_max + MAX_LINE
    }

    /// The history, as `query` asks.
    pub(super) fn read_history(&self, query: &HistoryQuery) -> Result<HistoryRead> {
        let mut read = HistoryRead::default();
        for name in [HISTORY_OLD, HISTORY] {
            let path = self.root.join(name);
            let file = match self.root.open_read(name) {
                Ok(Some(f)) => f,
                Ok(None) => continue,
                Err(e) => {
                    read.skipped.push(format!("{e}; it was skipped"));
                    continue;
                }
            };
            let (bytes, start) = match read_tail(file, self.read_cap(), &path) {
                Ok(r) => r,
                Err(e) => {
                    read.skipped.push(format!("{e}; it was skipped"));
                    continue;
                }
            };
            if start > 0 {
                read.skipped.push(format!(
                    "{}: larger than its bound ({} bytes, `[history] max_size`): only its last {} \
                     bytes were read",
                    path.display(),
                    self.history_max,
                    bytes.len()
                ));
            }
            let mut offset = start;
            let mut lines = bytes.split(|b| *b == b'\n').peekable();
            while let Some(line) = lines.next() {
                let at = offset;
                offset += line.len() as u64 + 1;
                // The last piece has no newline: an append under way.
                if lines.peek().is_none() || line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match serde_json::from_slice::<HistoryEntry>(line) {
                    Ok(e) => read.entries.push(e),
                    Err(e) => read.skipped.push(format!(
                        "{}: the line at byte {at} is not a history entry ({e}); it was skipped",
                        path.display()
                    )),
                }
            }
        }
        if let Some(since) = query.since {
            read.entries.retain(|e| e.at >= since);
        }
        if let Some(n) = query.last {
            let excess = read.entries.len().saturating_sub(n);
            read.entries.drain(..excess);
        }
        Ok(read)
    }

    /// Records, for the holder of the exclusive gate, what nobody lived to
    /// record: a lapsed drain (its start too, if its waiter died before
    /// recording it) and a run killed mid-command. What this
    /// appended waits in `noticed` for [`Backend::record_unrecorded`]. A
    /// failure is reported on stderr; the caller's change goes on.
    ///
    /// [`Backend::record_unrecorded`]: crate::backend::Backend::record_unrecorded
    pub(super) fn notice_under_gate(&self) {
        self.complete_intent();
        match self.view() {
            Ok(view) => {
                if let Some(lapse) = &view.lapsed {
                    // Its start, if the waiter died before it recorded it;
                    // by the run that began it, if one did: the window's
                    // record, whether its process lives or not (a run
                    // killed while it waited leaves the window free;
                    // pending_entry checks the record is the drain's).
                    let run = self
                        .root
                        .open_read(super::RUN_LOCK)
                        .ok()
                        .flatten()
                        .and_then(|f| self.read_run(f).ok().flatten());
                    self.append_noticed(pending_entry(&lapse.record, run.as_ref()));
                    self.append_noticed(lapse_entry(&lapse.record, self.now()));
                }
            }
            Err(e) => eprintln!("warning: cannot look for a lapsed drain to record: {e}"),
        }
        if let Ok(WindowState::Abandoned(run)) = self.window() {
            self.notice_abandoned(&run);
        }
        match self.reap_schedules() {
            Ok(lapsed) => self.notice_lapsed_schedules(lapsed),
            Err(e) => eprintln!("warning: cannot look for a lapsed schedule to record: {e}"),
        }
    }

    /// Records each schedule of `lapsed` (its process died before anyone
    /// ended it), for the holder of the exclusive gate that removed it
    /// (`reap_schedules`): only that one finds it, so it is recorded once,
    /// and its id makes sure of it.
    pub(super) fn notice_lapsed_schedules(&self, lapsed: Vec<ScheduleRecord>) {
        if lapsed.is_empty() {
            return;
        }
        let mode = match self.view() {
            Ok(view) => view.mode,
            Err(e) => {
                eprintln!(
                    "warning: {} lapsed schedule(s) could not be recorded in the history: \
                     cannot read the mode: {e}",
                    lapsed.len()
                );
                return;
            }
        };
        for record in &lapsed {
            self.append_noticed(schedule_lapse_entry(record, mode, self.now()));
        }
    }

    /// Records that `run` died while its command ran (once).
    pub(super) fn notice_abandoned(&self, run: &WindowRun) {
        let mode = self
            .view()
            .map(|v| v.mode)
            .unwrap_or(crate::mode::Mode::Offline);
        self.append_noticed(abandoned_entry(run, mode, self.now()));
    }

    fn now(&self) -> Timestamp {
        Timestamp::at(self.clock.now())
    }

    fn append_noticed(&self, entry: HistoryEntry) {
        match self.append_entry(&entry) {
            Ok(true) => self
                .noticed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(entry),
            Ok(false) => {}
            Err(e) => eprintln!(
                "warning: {} ({}) could not be recorded in the history: {e}",
                entry.change(),
                entry.reason
            ),
        }
    }
}

/// Locks the history for an append, waiting at most [`LOCK_WAIT`].
fn lock_a_while(file: &File, path: &std::path::Path) -> Result<()> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match fs2::FileExt::try_lock_exclusive(file) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => {
                return Err(Error::io("lock", path, e));
            }
            Err(_) if std::time::Instant::now() >= deadline => {
                let holders: Vec<String> = super::dir::FileId::of(file)
                    .map(super::dir::flock_holders)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(pid, _)| format!("pid {pid}"))
                    .collect();
                return Err(Error::state(
                    path,
                    format!(
                        "has been locked by another process ({}) for longer than {:?}, which an \
                         append never takes: end that process",
                        if holders.is_empty() {
                            "not known by pid".to_owned()
                        } else {
                            holders.join(", ")
                        },
                        LOCK_WAIT
                    ),
                ));
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
}

/// Whether `history.jsonl` ends with a newline (an empty one does).
fn ends_with_newline(backend: &FileBackend) -> Result<bool> {
    let path = &backend.root.join(HISTORY);
    let Some(mut file) = backend.root.open_read(HISTORY)? else {
        return Ok(true);
    };
    let len = file
        .metadata()
        .map_err(|e| Error::io("inspect", path, e))?
        .len();
    if len == 0 {
        return Ok(true);
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))
        .and_then(|_| file.read_exact(&mut last))
        .map_err(|e| Error::io("read", path, e))?;
    Ok(last[0] == b'\n')
}

/// The last `cap` bytes of `file` (all of it when smaller), from the
/// start of a line, and where they start. Refuses what is not a regular
/// file.
fn read_tail(mut file: File, cap: u64, path: &std::path::Path) -> Result<(Vec<u8>, u64)> {
    let meta = file.metadata().map_err(|e| Error::io("inspect", path, e))?;
    if !meta.is_file() {
        return Err(Error::state(path, "is not a regular file: remove it"));
    }
    let len = meta.len();
    let start = len.saturating_sub(cap);
    file.seek(SeekFrom::Start(start))
        .map_err(|e| Error::io("read", path, e))?;
    let mut bytes = Vec::with_capacity((len - start) as usize);
    (&mut file)
        .take(cap)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", path, e))?;
    if start == 0 {
        return Ok((bytes, 0));
    }
    // Begun mid-line: drop that line's end.
    let cut = bytes
        .iter()
        .position(|b| *b == b'\n')
        .map_or(bytes.len(), |i| i + 1);
    Ok((bytes.split_off(cut), start + cut as u64))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::*;
    use crate::backend::Backend;
    use crate::clock::SystemClock;
    use crate::config::Config;
    use crate::history::{Cause, EventKind};
    use crate::mode::Mode;

    fn open(state: &Path, max: u64) -> FileBackend {
        let mut config = Config::with_state_dir(state);
        config.history_max_size = max;
        FileBackend::open(&config, SystemClock::shared()).unwrap()
    }

    fn entry(n: usize) -> HistoryEntry {
        HistoryEntry::new(
            EventKind::Mode,
            Cause::Off,
            Mode::Offline,
            Mode::Online,
            Timestamp::EPOCH,
            format!("entry {n}"),
        )
    }

    fn reasons(b: &FileBackend) -> Vec<String> {
        b.history(&HistoryQuery::default())
            .unwrap()
            .entries
            .into_iter()
            .map(|e| e.reason)
            .collect()
    }

    fn mode_of(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn the_history_rotates_past_its_bound_keeping_its_mode_and_the_newest_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("s");
        let b = open(&state, 2048);
        b.append_history(&entry(0)).unwrap();
        assert_eq!(mode_of(&state.join(HISTORY)), 0o600, "no access for others");
        // An administrator narrowed it further: the rotated file keeps that.
        std::fs::set_permissions(state.join(HISTORY), std::fs::Permissions::from_mode(0o400))
            .unwrap();
        for n in 1..40 {
            b.append_history(&entry(n)).unwrap();
        }
        let size = |name: &str| std::fs::metadata(state.join(name)).unwrap().len();
        assert!(size(HISTORY) <= 2048, "{}", size(HISTORY));
        assert!(size(HISTORY_OLD) <= 2048, "{}", size(HISTORY_OLD));
        assert_eq!(mode_of(&state.join(HISTORY)), 0o400);
        let kept = reasons(&b);
        assert_eq!(kept.last().unwrap(), "entry 39", "the newest survives");
        assert!(kept.len() < 40, "the oldest went: {kept:?}");
        let numbers: Vec<usize> = kept
            .iter()
            .map(|r| r.trim_start_matches("entry ").parse().unwrap())
            .collect();
        assert!(
            numbers.windows(2).all(|w| w[1] == w[0] + 1),
            "in order: {numbers:?}"
        );
    }

    #[test]
    fn a_garbled_or_hostile_line_is_skipped_and_named_and_a_torn_one_swallows_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("s");
        let b = open(&state, 1 << 20);
        b.append_history(&entry(1)).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(state.join(HISTORY))
            .unwrap();
        f.write_all(b"{\"not\": \"an entry\"}\n\xff\xfe garbage\n\x1b[2J\n{\"at\":")
            .unwrap();
        drop(f);
        // The torn last line is an append under way: not reported.
        let read = b.history(&HistoryQuery::default()).unwrap();
        assert_eq!(read.entries.len(), 1);
        assert_eq!(read.skipped.len(), 3, "{:?}", read.skipped);
        assert!(
            read.skipped[0].contains("history.jsonl: the line at byte"),
            "{:?}",
            read.skipped
        );
        b.append_history(&entry(2)).unwrap();
        let read = b.history(&HistoryQuery::default()).unwrap();
        assert_eq!(
            read.entries
                .iter()
                .map(|e| e.reason.as_str())
                .collect::<Vec<_>>(),
            ["entry 1", "entry 2"],
            "the torn line ended where the next began"
        );
        assert_eq!(
            read.skipped.len(),
            4,
            "the torn one now counts: {:?}",
            read.skipped
        );
    }

    #[test]
    fn a_planted_symlink_or_fifo_is_refused_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("s");
        let b = open(&state, 1 << 20);
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, "precious\n").unwrap();
        std::os::unix::fs::symlink(&outside, state.join(HISTORY)).unwrap();
        let err = b.append_history(&entry(1)).unwrap_err().to_string();
        assert!(err.contains("is a symlink"), "{err}");
        let read = b.history(&HistoryQuery::default()).unwrap();
        assert!(read.entries.is_empty());
        assert!(
            read.skipped[0].contains("is a symlink"),
            "{:?}",
            read.skipped
        );
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious\n");
        std::fs::remove_file(state.join(HISTORY)).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            state.join(HISTORY),
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let err = b.append_history(&entry(1)).unwrap_err().to_string();
        assert!(err.contains("history.jsonl"), "{err}");
        let read = b.history(&HistoryQuery::default()).unwrap();
        assert!(
            read.skipped[0].contains("not a regular file"),
            "{:?}",
            read.skipped
        );
    }

    #[test]
    fn an_append_gives_up_on_a_history_held_locked_naming_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("s");
        let b = open(&state, 1 << 20);
        b.append_history(&entry(1)).unwrap();
        let held = std::fs::File::open(state.join(HISTORY)).unwrap();
        fs2::FileExt::lock_shared(&held).unwrap();
        let err = b.append_history(&entry(2)).unwrap_err().to_string();
        assert!(
            err.contains("history.jsonl: has been locked by another process"),
            "{err}"
        );
        if cfg!(target_os = "linux") {
            assert!(
                err.contains(&format!("pid {}", std::process::id())),
                "{err}"
            );
        }
        drop(held);
        b.append_history(&entry(3)).unwrap();
        assert_eq!(reasons(&b), ["entry 1", "entry 3"]);
    }

    #[test]
    fn the_last_n_and_since_pick_the_newest_entries_oldest_first() {
        let tmp = tempfile::tempdir().unwrap();
        let b = open(&tmp.path().join("s"), 1 << 20);
        for n in 0..5 {
            let mut e = entry(n);
            e.at = Timestamp::at(std::time::UNIX_EPOCH + std::time::Duration::from_secs(n as u64));
            b.append_history(&e).unwrap();
        }
        let read = |q: HistoryQuery| -> Vec<String> {
            b.history(&q)
                .unwrap()
                .entries
                .into_iter()
                .map(|e| e.reason)
                .collect()
        };
        assert_eq!(
            read(HistoryQuery {
                last: Some(2),
                since: None
            }),
            ["entry 3", "entry 4"]
        );
        let since = Some(Timestamp::at(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1),
        ));
        assert_eq!(
            read(HistoryQuery { last: None, since }),
            ["entry 1", "entry 2", "entry 3", "entry 4"]
        );
        assert_eq!(
            read(HistoryQuery {
                last: Some(1),
                since
            }),
            ["entry 4"]
        );
    }
}
