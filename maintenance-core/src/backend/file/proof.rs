//! Proof that a process belongs to a task, for a nested run that joins it
//! (DESIGN.md, "Tasks are capabilities"). Knowing a task's id proves
//! nothing: every member of the site's group can open a task file. What
//! proves it is holding the lock — on Linux, a descriptor this process
//! inherited (close-on-exec clear), open for writing, whose open file
//! description holds the task file's `flock` (the `lock:` line of
//! `/proc/self/fdinfo/N` appears only on the descriptor of the holding
//! description) — or the task's secret, checked against the stored hash.
//! Elsewhere (macOS) only the secret proves it.

use super::dir::Dir;
use super::tasks::{self, StoredTask};
use crate::error::Result;
use crate::task::{JoinToken, TaskRecord};

/// What a token proves.
#[derive(Debug)]
pub(super) enum Proof {
    /// No run of the task it names is live.
    Gone,
    /// The task is live; this process proved nothing.
    Unproven(TaskRecord),
    /// This process belongs to the task.
    Member {
        /// The task's standing: its root run if that lives, else the oldest
        /// live run that joined it (they share `started_in`/`in_window`).
        standing: TaskRecord,
        /// The task's secret hash, for a joined run's own file.
        secret_sha256: Option<String>,
    },
}

/// Checks `token` against the live tasks in `dir`.
pub(super) fn prove(dir: &Dir, token: &JoinToken) -> Result<Proof> {
    if !tasks::is_id(token.id()) {
        return Ok(Proof::Gone);
    }
    let live = tasks::live_stored(dir)?;
    // The token may name the root or any run that joined it.
    let Some(root) = live
        .iter()
        .find(|(_, t)| t.record.id == token.id() || t.record.joined.as_deref() == Some(token.id()))
        .map(|(_, t)| t.record.task_id().to_owned())
    else {
        return Ok(Proof::Gone);
    };
    let group: Vec<&(String, StoredTask)> = live
        .iter()
        .filter(|(_, t)| t.record.task_id() == root)
        .collect();
    let standing = group
        .iter()
        .find(|(_, t)| t.record.id == root)
        .or_else(|| group.first())
        .map(|(_, t)| t.record.clone())
        .expect("the group holds at least the run the token named");
    let secret_sha256 = group.iter().find_map(|(_, t)| t.secret_sha256.clone());
    let by_secret = token.secret().is_some_and(|s| {
        group
            .iter()
            .any(|(_, t)| t.secret_sha256.as_deref().is_some_and(|h| s.matches(h)))
    });
    let names: Vec<&str> = group.iter().map(|(name, _)| name.as_str()).collect();
    if by_secret || holds_inherited_lock(dir, &names) {
        Ok(Proof::Member {
            standing,
            secret_sha256,
        })
    } else {
        Ok(Proof::Unproven(standing))
    }
}

/// Whether this process holds, on a descriptor it inherited, the lock of
/// one of the task files `names` in `dir`.
#[cfg(target_os = "linux")]
pub(super) fn holds_inherited_lock(dir: &Dir, names: &[&str]) -> bool {
    use rustix::fs::{AtFlags, FileType};
    use std::os::unix::fs::MetadataExt;
    // The files as the state directory has them (never through a link).
    let wanted: Vec<(u64, u64)> = names
        .iter()
        .filter_map(|name| rustix::fs::statat(dir.fd(), *name, AtFlags::SYMLINK_NOFOLLOW).ok())
        .filter(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile)
        .map(|st| (st.st_dev, st.st_ino))
        .collect();
    if wanted.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    for entry in fds.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")) else {
            continue;
        };
        if !holds_write_flock(&info) {
            continue;
        }
        // The magic link leads to the open file itself, wherever it is.
        let Ok(meta) = std::fs::metadata(format!("/proc/self/fd/{fd}")) else {
            continue;
        };
        if wanted.contains(&(meta.dev(), meta.ino())) {
            return true;
        }
    }
    false
}

/// Whether `/proc/self/fdinfo/N` text says: inherited (no close-on-exec),
/// open for writing, holding an exclusive `flock`.
#[cfg(target_os = "linux")]
fn holds_write_flock(info: &str) -> bool {
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok());
    let Some(flags) = flags else {
        return false;
    };
    let cloexec = flags & (libc::O_CLOEXEC as u32) != 0;
    let writable = flags & (libc::O_ACCMODE as u32) != libc::O_RDONLY as u32;
    let locked = info.lines().any(|l| {
        l.strip_prefix("lock:").is_some_and(|lock| {
            let words: Vec<&str> = lock.split_whitespace().collect();
            words.contains(&"FLOCK") && words.contains(&"WRITE")
        })
    });
    !cloexec && writable && locked
}

/// Without a way to see which descriptor holds a lock, only the secret
/// proves membership.
#[cfg(not(target_os = "linux"))]
pub(super) fn holds_inherited_lock(_dir: &Dir, _names: &[&str]) -> bool {
    false
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::holds_write_flock;

    #[test]
    fn only_an_inherited_writable_exclusive_flock_counts() {
        let held = "pos:\t0\nflags:\t0100002\nmnt_id:\t27\nino:\t1\n\
                    lock:\t1: FLOCK  ADVISORY  WRITE 23007 fe:00:1 0 EOF\n";
        assert!(holds_write_flock(held));
        // The same description seen with close-on-exec: opened here, not
        // inherited.
        assert!(!holds_write_flock(&held.replace("0100002", "02100002")));
        // Opened read-only, as anyone may open a task file.
        assert!(!holds_write_flock(&held.replace("0100002", "0100000")));
        // A shared lock (a probe's), or no lock line at all.
        assert!(!holds_write_flock(&held.replace("WRITE", "READ")));
        assert!(!holds_write_flock("pos:\t0\nflags:\t0100002\n"));
        // A POSIX record lock is not the task's lock.
        assert!(!holds_write_flock(&held.replace("FLOCK", "POSIX")));
        assert!(!holds_write_flock("garbage"));
    }
}
