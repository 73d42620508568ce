//! What races between processes start from: FIFOs, a start barrier that
//! wakes every waiting process in the same instant, and a lock taken by
//! hand.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::wait::HANG_GUARD;

/// Creates a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        path,
        rustix::fs::Mode::from_raw_mode(0o666),
    )
    .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
}

/// A start line for racing processes: each `task-holder --barrier FIFO`
/// says `ready` and blocks opening the FIFO; [`Barrier::release`] opens it
/// for writing, which wakes every one of them in the same instant.
#[derive(Debug)]
pub struct Barrier {
    path: PathBuf,
    writer: Option<File>,
}

impl Barrier {
    /// A new barrier, a FIFO in `dir`.
    pub fn new(dir: &Path) -> Barrier {
        let path = dir.join(format!(
            "barrier-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        mkfifo(&path);
        Barrier { path, writer: None }
    }

    /// The FIFO, for `--barrier`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lets every waiting process go. The FIFO stays open for writing until
    /// the barrier is dropped, so a process that reaches it late passes too.
    pub fn release(&mut self) {
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&self.path)
            {
                Ok(f) => {
                    self.writer = Some(f);
                    return;
                }
                // No reader yet.
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
                Err(e) => panic!("open barrier {}: {e}", self.path.display()),
            }
            assert!(
                Instant::now() < deadline,
                "nobody waits at the barrier after {HANG_GUARD:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Takes an exclusive `flock` on `file` without waiting, as a live task's
/// holder would, so a reader that followed a link to it would think it live.
pub fn lock_exclusive(file: &File) {
    rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .expect("flock an outside file");
}
