//! Tasks in the file backend: one locked file per live task in `tasks/`,
//! named `<id>.task` only once it is locked and its record written, so a
//! visible task file is always locked while its task lives; one instance
//! lock file per command name, never removed (removing a lock file would
//! let two holders lock two different files of one name).
//!
//! On Linux a task file is a reused slot ([`slots`]): a free slot file,
//! claimed, written and locked under its hidden slot name, then renamed
//! to `<id>.task`, and renamed back to a free slot name at the task's end.
//! Elsewhere, and when no slot is free, it is a fresh file created under a
//! temporary name, locked, written, then renamed into place; at its end it
//! becomes a slot, or is removed when every slot name is taken.
//!
//! Holders lock exclusively; probes take shared try-locks, so a probe of a
//! dead task never makes it look live to another reader (I3). The kernel
//! drops a lock the moment the last process holding its descriptor dies, by
//! any signal: a dead task stops counting at once, and its file is a
//! leftover that [`reap`](super::FileBackend) removes later. A task id is
//! never reused, so a name `<id>.task` only ever names one file; a probe
//! reads a task file and then checks the name still leads to it, since a
//! slot may be reused by the next task the moment this one ends.
//!
//! A task file holds the task's record and the SHA-256 of its secret
//! ([`StoredTask`]), never the secret; the hash stays inside this backend
//! (listings hand out the record alone). A joined run has a file of its own
//! with its own lock, carrying the same hash, so the task can still be
//! joined by secret after its root died.

#[cfg(target_os = "linux")]
mod slots;

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::dir::Dir;
use crate::backend::TaskLease;
use crate::error::{Error, Refusal, Result};
use crate::process::Processes;
use crate::records::TaskRecord;

/// Suffix of a live task's file.
pub(super) const TASK_SUFFIX: &str = ".task";
/// Suffix of a command's instance lock.
const INSTANCE_SUFFIX: &str = ".instance";
/// Largest task record read back: argv is bounded by the system's ARG_MAX.
const MAX_RECORD: usize = 4 << 20;
/// Temporary files younger than this may be a writer's, between create and
/// lock: the reaper leaves them.
const TEMP_GRACE: Duration = Duration::from_secs(60);

/// What a task file holds: the record, and the hash of the task's secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StoredTask {
    #[serde(flatten)]
    pub record: TaskRecord,
    /// SHA-256 (hex) of the task's secret; absent in files written before
    /// tasks had secrets, which can then be joined by descriptor only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_sha256: Option<String>,
}

/// A backend's hold on a live task in `tasks/`.
#[derive(Debug)]
pub(super) struct FileTaskLease {
    pub record: TaskRecord,
    pub file_name: String,
    pub dir: Arc<Dir>,
    // Closed before `instance`: a waiter for the instance never sees the
    // task it waited for still live.
    pub task: Option<File>,
    pub instance: Option<File>,
    pub handed_to_child: bool,
}

impl TaskLease for FileTaskLease {
    fn record(&self) -> &TaskRecord {
        &self.record
    }

    fn inheritable_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.task
            .iter()
            .chain(self.instance.iter())
            .map(|f| f.as_fd())
            .collect()
    }

    fn mark_handed_to_child(&mut self) {
        self.handed_to_child = true;
    }

    fn take_back_from_child(&mut self) {
        // The drop retires the file and unlocks: a `flock` belongs to the
        // open file description, which the child's inherited copies share,
        // so it is freed for them too, not when the last copy closes.
        self.handed_to_child = false;
    }

    fn set_processes(&mut self, processes: &Processes) -> Result<()> {
        let Some(file) = &self.task else {
            return Ok(());
        };
        // A second line after the record, which is never rewritten: a
        // reader sees the record whole, and the line only once it is
        // complete (it ends with a newline). One write, no new file.
        let mut line = b"\n".to_vec();
        serde_json::to_writer(&mut line, processes).map_err(|e| Error::Invalid(e.to_string()))?;
        line.push(b'\n');
        let path = self.dir.join(&self.file_name);
        let end = file
            .metadata()
            .map_err(|e| Error::io("inspect", path.clone(), e))?
            .len();
        std::os::unix::fs::FileExt::write_all_at(file, &line, end)
            .map_err(|e| Error::io("write", path, e))
    }
}

/// What is known of a live task whose record cannot be read: that it is
/// live, and holds off OFFLINE as a task started ONLINE would.
fn unreadable_task(file_name: &str) -> StoredTask {
    let id = file_name.strip_suffix(TASK_SUFFIX).unwrap_or(file_name);
    StoredTask {
        record: TaskRecord {
            id: id.to_owned(),
            name: format!("(unreadable task file {file_name})"),
            argv: Vec::new(),
            pid: 0,
            user: "?".into(),
            host: "?".into(),
            started_at: crate::clock::Timestamp::at(std::time::UNIX_EPOCH),
            policy: crate::policy::Policy::DEFAULT,
            started_in: crate::mode::Mode::Online,
            in_window: false,
            holders: Vec::new(),
            processes: None,
            joined: None,
        },
        secret_sha256: None,
    }
}

/// A task file's content: the stored record (one line of JSON), and the
/// processes line an external command's runner adds after the spawn, once
/// complete.
fn parse_task_file(bytes: &[u8]) -> Option<(StoredTask, Option<Processes>)> {
    let (record, rest) = match bytes.iter().position(|&b| b == b'\n') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &[][..]),
    };
    let stored = serde_json::from_slice::<StoredTask>(record).ok()?;
    let processes = rest
        .strip_suffix(b"\n")
        .and_then(|line| serde_json::from_slice::<Processes>(line).ok());
    Some((stored, processes))
}

impl Drop for FileTaskLease {
    fn drop(&mut self) {
        if !self.handed_to_child {
            // Retire while still holding the lock; a reader that opened the
            // file before sees it dead once we close, or its name gone.
            // Failure leaves a leftover that never counts as live and is
            // reaped later. Then unlocked, the task before its instance:
            // a copy of the descriptors still open elsewhere (a child the
            // task was taken back from, closing) holds nothing.
            let _ = retire(&self.dir, &self.file_name);
            for file in [&self.task, &self.instance].into_iter().flatten() {
                let _ = fs2::FileExt::unlock(file);
            }
            return;
        }
        // A child holds the locks: closing our descriptors is all we may do;
        // an unlock or a removal would free a running child's task (I3).
        // Once closed, a fresh probe tells whether any process still holds
        // it; if none does, the leftover can go now rather than at a reap.
        drop(self.task.take());
        drop(self.instance.take());
        if let Ok(Some(file)) = self.dir.open_read(&self.file_name)
            && let Ok(false) = held(&file)
        {
            let _ = retire(&self.dir, &self.file_name);
        }
    }
}

/// Takes the name of an ended or dead task's file away: back to a free
/// slot name where one is free (Linux), else removed. `false` when the
/// name was gone already.
fn retire(dir: &Dir, name: &str) -> Result<bool> {
    #[cfg(target_os = "linux")]
    if slots::release(dir, name) {
        return Ok(true);
    }
    dir.remove(name)
}

/// A fresh task id: unique across processes (pid) and time.
pub(super) fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{nanos:x}-{:x}-{n:x}", std::process::id())
}

/// Whether `token` has the shape of an id we issue.
pub(super) fn is_id(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 64
        && token
            .bytes()
            .all(|b| b == b'-' || crate::hex::digit(b).is_some())
}

/// The instance lock file of command `name`: the name itself when it is
/// plainly safe, a hash of it otherwise (`/`, `..`, NUL, 10 kB names), so
/// no name can reach outside `tasks/`.
pub(super) fn instance_file(name: &str) -> String {
    let plain = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if plain {
        format!("{name}{INSTANCE_SUFFIX}")
    } else {
        let digest = Sha256::digest(name.as_bytes());
        let hex = crate::hex::encode(&digest[..16]);
        format!("~{hex}{INSTANCE_SUFFIX}")
    }
}

fn is_contended(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Whether `file`'s exclusive holder is alive, probing with a shared
/// try-lock (released again when `file` closes).
pub(super) fn held(file: &File) -> io::Result<bool> {
    match fs2::FileExt::try_lock_shared(file) {
        Ok(()) => Ok(false),
        Err(e) if is_contended(&e) => Ok(true),
        Err(e) => Err(e),
    }
}

/// Takes the instance lock of `name`, trying until `timeout` runs out.
/// `Ok(None)` when it timed out.
pub(super) fn lock_instance(
    dir: &Dir,
    name: &str,
    timeout: Duration,
    modes: super::dir::Modes,
) -> Result<Option<File>> {
    let file_name = instance_file(name);
    let file = dir.open_lock(&file_name, modes)?;
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match fs2::FileExt::try_lock_exclusive(&file) {
            Ok(()) => return Ok(Some(file)),
            Err(e) if is_contended(&e) => {}
            Err(e) => return Err(Error::io("lock", dir.join(&file_name), e)),
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Writes `stored` as a new live task file, `<id>.task`, locked before the
/// name appears: a free slot where there is one, else a fresh file
/// (temporary name, exclusive lock, content, rename). Returns the locked
/// file and its name.
pub(super) fn publish(
    dir: &Dir,
    stored: &StoredTask,
    modes: super::dir::Modes,
) -> Result<(File, String)> {
    let record = &stored.record;
    let final_name = format!("{}{TASK_SUFFIX}", record.id);
    let json = serde_json::to_vec(stored).map_err(|e| Error::Invalid(e.to_string()))?;
    #[cfg(target_os = "linux")]
    if let Some(file) = slots::publish(dir, &json, &final_name) {
        return Ok((file, final_name));
    }
    let tmp = format!(".{}.tmp", record.id);
    let mut file = dir.create_new(&tmp, modes)?;
    let cleanup = |e: Error| {
        let _ = dir.remove(&tmp);
        e
    };
    fs2::FileExt::try_lock_exclusive(&file)
        .map_err(|e| cleanup(Error::io("lock", dir.join(&tmp), e)))?;
    file.write_all(&json)
        .map_err(|e| cleanup(Error::io("write", dir.join(&tmp), e)))?;
    dir.rename(&tmp, &final_name).map_err(cleanup)?;
    Ok((file, final_name))
}

/// The stored task in `file_name`, or `None` when it is dead, gone, or not
/// a task file of ours.
pub(super) fn probe(dir: &Dir, file_name: &str) -> Result<Option<StoredTask>> {
    let file = match dir.open_read(file_name) {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(None),
        // A symlink planted in tasks/ is not a task; it is never followed.
        Err(Error::State { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    if !held(&file).map_err(|e| Error::io("probe", dir.join(file_name), e))? {
        return Ok(None);
    }
    // Held is live, whatever the file says: a record that cannot be read
    // (too large, written over by the command through its inherited
    // descriptor, by a member of the group) still counts (I1, I3).
    let unreadable = || Some(unreadable_task(file_name));
    let bytes = match dir.read_still_named(file_name, file, MAX_RECORD) {
        Ok(Some(b)) => b,
        // The name moved on while we read: that task ended (and its slot
        // may hold another's record by now).
        Ok(None) => return Ok(None),
        Err(Error::State { .. }) => return Ok(unreadable()),
        Err(e) => return Err(e),
    };
    let Some((mut stored, processes)) = parse_task_file(&bytes) else {
        return Ok(unreadable());
    };
    // Never what the record says of its holders: what the recorded
    // processes say now, and only on the host they run on.
    let record = &mut stored.record;
    record.processes = processes;
    record.holders = match &record.processes {
        Some(p) if record.host == crate::identity::Identity::current().host => p.holders(),
        _ => Vec::new(),
    };
    Ok(Some(stored))
}

/// Every live task in `dir`, oldest first.
pub(super) fn live(dir: &Dir) -> Result<Vec<TaskRecord>> {
    Ok(live_stored(dir)?
        .into_iter()
        .map(|(_, stored)| stored.record)
        .collect())
}

/// Every live task in `dir` as stored, with its file name, oldest first.
pub(super) fn live_stored(dir: &Dir) -> Result<Vec<(String, StoredTask)>> {
    let mut tasks = Vec::new();
    for name in dir.names()? {
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(TASK_SUFFIX)
            && !name.starts_with('.')
            && let Some(stored) = probe(dir, name)?
        {
            tasks.push((name.to_owned(), stored));
        }
    }
    tasks.sort_by(|(_, a), (_, b)| {
        a.record
            .started_at
            .cmp(&b.record.started_at)
            .then_with(|| a.record.id.cmp(&b.record.id))
    });
    Ok(tasks)
}

/// How long a refused start looks for the instance holder's record: the
/// holder locks the instance before it passes the gate and publishes its
/// task file, so a start refused in between finds no record yet.
const HOLDER_GRACE: Duration = Duration::from_millis(250);

/// The live holder of `name`'s instance, if one can be read soon.
pub(super) fn instance_holder(dir: &Dir, name: &str) -> Option<TaskRecord> {
    let deadline = Instant::now() + HOLDER_GRACE;
    loop {
        let found = live(dir).ok()?.into_iter().find(|t| t.name == name);
        if found.is_some() || Instant::now() >= deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Removes dead task files and stale temporary files; returns how many.
pub(super) fn reap(dir: &Dir) -> Result<usize> {
    let mut removed = 0;
    for name in dir.names()? {
        let Some(name) = name.to_str() else { continue };
        let is_task = name.ends_with(TASK_SUFFIX) && !name.starts_with('.');
        let is_temp = name.starts_with('.') && name.ends_with(".tmp");
        if !(is_task || is_temp) {
            continue;
        }
        let file = match dir.open_read(name) {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            // A planted symlink: removing the link itself touches nothing
            // outside the state directory.
            Err(Error::State { .. }) => {
                removed += usize::from(dir.remove(name)?);
                continue;
            }
            Err(e) => return Err(e),
        };
        let meta = file
            .metadata()
            .map_err(|e| Error::io("inspect", dir.join(name), e))?;
        if !meta.is_file() {
            continue;
        }
        if is_temp {
            let young = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_none_or(|age| age < TEMP_GRACE);
            if young {
                continue;
            }
        }
        if !held(&file).map_err(|e| Error::io("probe", dir.join(name), e))? {
            // Dead for good: a task id is never reused, and a task file is
            // locked before it becomes visible. Its file may serve the next
            // task, unless it has a second name (a planted hard link).
            removed += usize::from(if is_task && meta.nlink() == 1 {
                retire(dir, name)?
            } else {
                dir.remove(name)?
            });
        }
    }
    Ok(removed)
}

/// Refusal for a single-instance command whose lock did not come free.
pub(super) fn already_running(dir: &Dir, name: &str, waited: Duration) -> Error {
    Error::Refused(Refusal::AlreadyRunning {
        command: name.to_owned(),
        holder: instance_holder(dir, name).map(Box::new),
        waited_ms: waited.as_millis() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_files_never_leave_the_directory() {
        assert_eq!(instance_file("hello"), "hello.instance");
        assert_eq!(instance_file("db.backup-2"), "db.backup-2.instance");
        for hostile in [
            "../x",
            "/etc/passwd",
            "..",
            ".",
            "a\0b",
            "",
            &"x".repeat(10_000),
        ] {
            let f = instance_file(hostile);
            assert!(
                f.starts_with('~') && !f.contains('/') && f.len() < 64,
                "{hostile:?} → {f}"
            );
        }
        assert_ne!(instance_file("../x"), instance_file("../y"));
    }

    #[test]
    fn a_task_file_is_its_record_then_a_complete_processes_line() {
        use crate::process::ProcId;
        let stored = StoredTask {
            record: serde_json::from_str(
                r#"{"id":"1-2-3","name":"x","argv":["x"],"pid":1,"user":"u","host":"h",
                "started_at":"2026-01-01T00:00:00.000Z","policy":{"tracking":"tracked",
                "instances":"single","maintenance":"refused","drain":"wait"},"started_in":"ONLINE"}"#,
            )
            .unwrap(),
            secret_sha256: None,
        };
        let record = serde_json::to_vec(&stored).unwrap();
        assert!(!record.contains(&b'\n'), "one line");
        let p = crate::process::Processes {
            keeper: ProcId { pid: 10, start: 5 },
            command: ProcId { pid: 11, start: 6 },
        };
        let line = serde_json::to_vec(&p).unwrap();
        let whole = [&record[..], b"\n", &line, b"\n"].concat();
        let (got, procs) = parse_task_file(&whole).unwrap();
        assert_eq!(got.record.id, "1-2-3");
        assert_eq!(procs, Some(p));
        // Half-written: the record still reads, the line does not count.
        let half = [&record[..], b"\n", &line[..line.len() / 2]].concat();
        assert_eq!(parse_task_file(&half).unwrap().1, None);
        assert_eq!(parse_task_file(&record).unwrap().1, None);
    }

    #[test]
    fn ids_are_unique_and_recognised() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert!(is_id(&a));
        assert!(!is_id("../x"));
        assert!(!is_id(""));
    }
}
