//! Slot files (Linux): a pool of task files kept for reuse under the names
//! `tasks/.<k>.slot`, so that a task start allocates no inode and a task's
//! end frees none. (On ext4 without a journal, allocating an inode scans
//! the recently deleted ones: 70–80% of a start, hundreds of µs once tasks
//! come and go quickly.)
//!
//! - **claim**: open a slot, take its claim lock — an open file
//!   description's record lock (`F_OFD_SETLK`) on byte 0, which never
//!   conflicts with the `flock` that says a task is live — and check that
//!   the slot's name still leads to the file opened. A file leaves a slot
//!   name only in the hands of its claim lock's holder, so once claimed
//!   and checked, it is free and stays this claimant's: never the file of
//!   a task, live or dead, and its `flock` is taken by nobody else. A file
//!   that another claimant took between the open and the claim lock (and
//!   perhaps died holding) fails the check and is left alone, its `flock`
//!   never taken, so a dead task never looks live to a probe.
//! - **write** the record while the file has only its slot name, so no
//!   reader that looks for tasks finds it half-written: padded with
//!   spaces to the old length (JSON ignores them), or truncated when more
//!   than [`PAD`] bytes would be left.
//! - **lock** it exclusively (`flock`) and **rename** it to `<id>.task`:
//!   the name appears complete and locked (I3), and the open descriptor's
//!   path (`/proc/self/fd`) is the task's.
//! - **end**: a task's end renames `<id>.task` back to a free slot name
//!   (never over one that exists) while it still holds its locks, and
//!   closes; with every slot name taken, it removes the file as before.
//!   A dead task's file goes back the same way when a reaper finds it
//!   unlocked.
//!
//! A reader that opened `<id>.task` before that task ended may read the
//! file while a new task rewrites it: after reading, it checks that the
//! name still leads to the file it read
//! ([`Dir::read_still_named`](super::Dir::read_still_named)). A task's
//! name is given once, to one file, so a file still under it holds that
//! task's record.
//!
//! A child that inherits a task's descriptor (an external command) shares
//! both of its locks: that file is never a free slot while the child
//! lives.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};

use rustix::io::Errno;

use super::super::dir::Dir;

/// How many slot names `tasks/` keeps. More tasks than this ending at
/// once: the others' files are removed; more free slots taken at once
/// than there are: the others get fresh files.
const SLOTS: usize = 32;
/// A start stops looking after this many slot names in a row are
/// missing: free slots gather at the lowest names, since starts take
/// the lowest and ends fill the lowest free.
const MISSES: usize = 4;
/// Suffix of a slot's name.
pub(in super::super) const SLOT_SUFFIX: &str = ".slot";
/// How many bytes of padding a shorter record may leave behind before the
/// slot is truncated instead (truncation costs a few µs more).
const PAD: u64 = 1024;

/// The name of slot `k`.
fn slot_name(k: usize) -> String {
    format!(".{k}{SLOT_SUFFIX}")
}

/// Publishes `record` (one line of JSON) as the live task file
/// `task_name` in a free slot: returns its file, locked and claimed for
/// as long as it stays open, or `None` when no slot can be had (none
/// free, or this file system lacks what slots need) and the caller must
/// use a fresh file.
pub(in super::super) fn publish(dir: &Dir, record: &[u8], task_name: &str) -> Option<File> {
    let mut misses = 0;
    for k in 0..SLOTS {
        let name = slot_name(k);
        let (file, size) = match claim(dir, &name) {
            Claim::Free(file, size) => (file, size),
            Claim::Missing => {
                misses += 1;
                if misses == MISSES {
                    return None;
                }
                continue;
            }
            Claim::Taken => {
                misses = 0;
                continue;
            }
            Claim::Unsupported => return None,
        };
        // Failing here leaves the file a free slot under its name, its
        // content whatever the next claimant overwrites.
        if fill(&file, record, size).is_err() || dir.rename(&name, task_name).is_err() {
            return None;
        }
        return Some(file);
    }
    None
}

/// Gives the file of the ended task `task_name` (its locks still held by
/// the caller, or freed by the kernel) a free slot name; `false` when none
/// is free or it cannot be moved (the caller removes it instead).
pub(in super::super) fn release(dir: &Dir, task_name: &str) -> bool {
    for k in 0..SLOTS {
        match dir.rename_noreplace(task_name, &slot_name(k)) {
            Ok(()) => return true,
            Err(Errno::EXIST) => continue,
            // Gone already (a reaper took it), or the file system cannot
            // rename without replacing.
            Err(_) => return false,
        }
    }
    false
}

/// What a claim of one slot name found.
enum Claim {
    /// Claimed and locked: the file and its size.
    Free(File, u64),
    /// No file has this name now.
    Missing,
    /// Claimed by another start, moved on meanwhile, probed at this moment,
    /// or not a slot at all (a planted link, a directory): try the next.
    Taken,
    /// Record locks do not work here: no slot will.
    Unsupported,
}

fn claim(dir: &Dir, name: &str) -> Claim {
    let file = match dir.open_slot(name) {
        Ok(f) => f,
        Err(Errno::NOENT) => return Claim::Missing,
        Err(_) => return Claim::Taken,
    };
    let Ok(meta) = file.metadata() else {
        return Claim::Taken;
    };
    // A second name would be a planted hard link: its other name may lie
    // anywhere this user can write.
    if !meta.is_file() || meta.nlink() != 1 {
        return Claim::Taken;
    }
    match try_claim_lock(&file) {
        Ok(()) => {}
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => {
            return Claim::Taken;
        }
        Err(_) => return Claim::Unsupported,
    }
    if !dir.still_names(name, meta.dev(), meta.ino()) {
        return Claim::Taken;
    }
    // A reader probing this file's previous task, or a watcher woken by
    // that task's end, may hold a shared flock for a moment: another slot
    // will do.
    if fs2::FileExt::try_lock_exclusive(&file).is_err() {
        return Claim::Taken;
    }
    // The size as it is now that the file is ours: the one read before the
    // claim lock may be a previous claimant's, from before that file went
    // through a task and back to this very name, and a record written over
    // a longer content than that size thinks would keep its tail.
    let Ok(now) = file.metadata() else {
        return Claim::Taken;
    };
    Claim::Free(file, now.len())
}

/// Writes `record` over the slot's previous content (`size` bytes).
fn fill(file: &File, record: &[u8], size: u64) -> io::Result<()> {
    let len = record.len() as u64;
    if size <= len {
        return file.write_all_at(record, 0);
    }
    if size - len > PAD {
        file.set_len(len)?;
        return file.write_all_at(record, 0);
    }
    let mut padded = Vec::with_capacity(size as usize);
    padded.extend_from_slice(record);
    padded.resize(size as usize, b' ');
    file.write_all_at(&padded, 0)
}

/// Takes the slot's claim lock without waiting: an open file
/// description's write lock on byte 0, released when the last descriptor
/// of that description closes (in a child that inherited it, too).
fn try_claim_lock(file: &File) -> io::Result<()> {
    // SAFETY: all zeros is a valid `flock`, a plain C struct of integers;
    // the fields that matter are set below (an OFD lock needs `l_pid` 0).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = 0;
    lock.l_len = 1;
    // SAFETY: `file` is an open descriptor for the whole call, and `lock`
    // a valid `flock` that fcntl only reads.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;
    use std::time::Duration;

    use super::super::{MAX_RECORD, probe};
    use super::slot_name;
    use crate::backend::file::FileBackend;
    use crate::backend::{Backend, TaskLease};
    use crate::clock::SystemClock;
    use crate::config::Config;
    use crate::policy::{Instances, Policy};
    use crate::records::TaskRequest;

    fn open(state: &Path) -> FileBackend {
        FileBackend::open(&Config::with_state_dir(state), SystemClock::shared()).unwrap()
    }

    fn start(b: &FileBackend, name: &str, argv_len: usize) -> Box<dyn TaskLease> {
        let request = TaskRequest {
            name: name.into(),
            argv: vec![name.into(), "x".repeat(argv_len)],
            policy: Policy::DEFAULT.instances(Instances::Concurrent),
            ignore_maintenance: false,
            in_window: false,
            lock_timeout: Duration::ZERO,
        };
        b.start_task(&request, "00").unwrap()
    }

    fn file_of(lease: &dyn TaskLease) -> String {
        format!("{}{}", lease.record().id, super::super::TASK_SUFFIX)
    }

    fn inode(path: &Path) -> u64 {
        std::fs::symlink_metadata(path).unwrap().ino()
    }

    #[test]
    fn a_reader_that_opened_an_ended_tasks_file_takes_nothing_from_the_task_that_reuses_it() {
        let tmp = tempfile::tempdir().unwrap();
        let b = open(&tmp.path().join("s"));
        drop(start(&b, "first", 10));
        let a = start(&b, "a", 10);
        let a_name = file_of(a.as_ref());
        // A reader opens a's file, as a listing does, and is preempted.
        let stale = b.tasks.open_read(&a_name).unwrap().unwrap();
        let stale_inode = stale.metadata().unwrap().ino();
        drop(a);
        // The next task takes the same file, rewritten and locked.
        let next = start(&b, "next", 700);
        let next_name = file_of(next.as_ref());
        assert_eq!(inode(&b.tasks.join(&next_name)), stale_inode, "reused");
        assert!(
            super::super::held(&stale).unwrap(),
            "locked by the next task"
        );
        // What the reader reads now is the next task's: not a's.
        assert_eq!(
            b.tasks
                .read_still_named(&a_name, stale, MAX_RECORD)
                .unwrap(),
            None
        );
        assert!(probe(&b.tasks, &a_name).unwrap().is_none());
        let listed = b.tasks().unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].id, next.record().id);
        assert_eq!(listed[0].argv, next.record().argv);
    }

    #[test]
    fn a_slot_rewritten_shorter_or_longer_reads_as_its_new_record_with_its_processes_line() {
        use crate::process::{ProcId, Processes};
        let tmp = tempfile::tempdir().unwrap();
        let b = open(&tmp.path().join("s"));
        let slot = b.tasks.join(&slot_name(0));
        let mut previous = None;
        // Longer (appended), a little shorter (padded), much shorter
        // (truncated), then longer again over the padding.
        for len in [100, 2000, 1500, 10, 600] {
            let mut t = start(&b, "job", len);
            let name = file_of(t.as_ref());
            if let Some(ino) = previous {
                assert_eq!(inode(&b.tasks.join(&name)), ino, "reused at {len}");
            }
            let p = Processes {
                keeper: ProcId { pid: 1, start: 2 },
                command: ProcId { pid: 3, start: 4 },
            };
            t.set_processes(&p).unwrap();
            let got = probe(&b.tasks, &name).unwrap().unwrap();
            assert_eq!(got.record.argv, t.record().argv, "at {len}");
            assert_eq!(got.record.processes, Some(p), "at {len}");
            let size = std::fs::metadata(b.tasks.join(&name)).unwrap().len();
            drop(t);
            assert!(slot.exists(), "back to the slot at {len}");
            assert!(size < 2 * (len as u64) + 1400, "{size} bytes for {len}");
            previous = Some(inode(&slot));
        }
    }

    #[test]
    fn a_slot_a_killed_start_left_half_written_counts_for_nothing_and_is_rewritten_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let b = open(&tmp.path().join("s"));
        drop(start(&b, "first", 10));
        let slot = b.tasks.join(&slot_name(0));
        // A start killed in the middle of writing its record, over a longer
        // record with a processes line: a head of JSON, then old bytes.
        for garbage in [
            b"{\"id\":\"dead-1-1\",\"name\":\"half".to_vec(),
            [&b"{\"id\":\"dead-1-2\""[..], &[b'\n'; 3], &[b'z'; 3000]].concat(),
        ] {
            std::fs::write(&slot, &garbage).unwrap();
            assert!(b.tasks().unwrap().is_empty(), "a free slot is no task");
            let t = start(&b, "job", 20);
            let listed = b.tasks().unwrap();
            assert_eq!(listed.len(), 1, "{listed:?}");
            assert_eq!(listed[0].id, t.record().id);
            assert_eq!(listed[0].argv, t.record().argv);
            drop(t);
        }
    }

    /// Whether some process waits for an `flock` on the file `ino`
    /// (`/proc/locks` marks a waiter's line with `->`).
    fn flock_waited_for(ino: u64) -> bool {
        let table = std::fs::read_to_string("/proc/locks").unwrap();
        table.lines().any(|l| {
            l.contains("->")
                && l.contains("FLOCK")
                && l.split_whitespace()
                    .any(|f| f.rsplit(':').next() == Some(&ino.to_string()))
        })
    }

    #[test]
    fn a_wait_for_a_task_ends_when_its_file_passes_to_the_next_task() {
        let tmp = tempfile::tempdir().unwrap();
        let b = std::sync::Arc::new(open(&tmp.path().join("s")));
        drop(start(&b, "first", 10));
        let a = start(&b, "a", 10);
        let ino = inode(&b.tasks.join(&file_of(a.as_ref())));
        let generation = b.mode().unwrap().record.generation;
        let record = a.record().clone();
        let waiter = {
            let b = std::sync::Arc::clone(&b);
            std::thread::spawn(move || {
                b.wait_for_change(generation, &[record], Duration::from_secs(600))
            })
        };
        // The wait's helper thread blocks on a's lock.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !flock_waited_for(ino) {
            assert!(
                std::time::Instant::now() < deadline,
                "no helper thread waits"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // a ends, and the next task takes its file at once: often before
        // the helper thread takes the lock a's end freed.
        drop(a);
        let next = start(&b, "next", 10);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !waiter.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "the wait missed the end of a task whose file the next task took"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        waiter.join().unwrap().unwrap();
        drop(next);
    }

    #[test]
    fn a_slot_planted_as_a_link_a_fifo_a_directory_or_a_hard_link_is_never_claimed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, b"precious").unwrap();
        let b = open(&tmp.path().join("s"));
        let tasks = b.tasks.path().to_path_buf();
        std::os::unix::fs::symlink(&outside, tasks.join(slot_name(0))).unwrap();
        std::fs::hard_link(&outside, tasks.join(slot_name(1))).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            tasks.join(slot_name(2)),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        std::fs::create_dir(tasks.join(slot_name(3))).unwrap();
        for _ in 0..3 {
            let t = start(&b, "job", 10);
            let name = file_of(t.as_ref());
            assert_ne!(inode(&tasks.join(&name)), inode(&outside));
            assert_eq!(b.tasks().unwrap().len(), 1);
            drop(t);
        }
        assert_eq!(std::fs::read(&outside).unwrap(), b"precious");
        assert_eq!(std::fs::metadata(&outside).unwrap().nlink(), 2);
        // The tasks' files went to the first free slot names, past the
        // planted ones.
        assert!(tasks.join(slot_name(4)).is_file());
    }
}
