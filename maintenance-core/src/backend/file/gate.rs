//! The gate: a lock file that orders task starts (shared) against mode
//! changes (exclusive), so a task is either seen by the mode change that
//! follows or sees its new mode (I1, I2); and the line a long wait for it
//! prints.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use super::{FileBackend, GATE, dir};
use crate::error::{Error, Result};

impl FileBackend {
    /// Locks the gate: exclusively for a mode change, shared for a task
    /// start. A fresh descriptor each time, since flock locks belong to the
    /// open file, not the thread.
    ///
    /// Tries first. Mode changes and task starts hold the gate for moments,
    /// so a wait that outlasts [`GATE_NOTICE`] says so on stderr, once,
    /// naming the holders where the system tells (Linux), as Cargo's
    /// "Blocking waiting for file lock" does: a process stuck holding it,
    /// or a member of the site's group holding it by hand, would otherwise
    /// hang `offline off` without a word. Only the site's users can open
    /// the gate at all ([`Modes`]). The wait itself is the kernel's, so the
    /// lock is granted the moment the holder lets go; the runner's second
    /// Ctrl-C ends it.
    pub(super) fn gate(&self, exclusive: bool) -> Result<File> {
        let f = self.root.open_lock(GATE, self.modes)?;
        let tried = if exclusive {
            fs2::FileExt::try_lock_exclusive(&f)
        } else {
            fs2::FileExt::try_lock_shared(&f)
        };
        if tried.is_ok() {
            return Ok(f);
        }
        // Held (or failing: the blocking call below reports the error).
        let notice = GateNotice::after(GATE_NOTICE, &f, self.root.join(GATE));
        let locked = if exclusive {
            fs2::FileExt::lock_exclusive(&f)
        } else {
            fs2::FileExt::lock_shared(&f)
        };
        drop(notice);
        locked.map_err(|e| Error::io("lock", self.root.join(GATE), e))?;
        Ok(f)
    }
}

/// How long a wait for the gate stays silent.
const GATE_NOTICE: Duration = Duration::from_secs(1);

/// The line a long wait for the gate prints, from a helper thread, unless
/// dropped (the lock granted) first.
struct GateNotice {
    done: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GateNotice {
    fn after(delay: Duration, gate: &File, path: std::path::PathBuf) -> GateNotice {
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let id = dir::FileId::of(gate);
        let thread = std::thread::Builder::new()
            .name("manage-gate-notice".into())
            .spawn(move || {
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(delay) {
                    eprintln!("{}", gate_notice(&path, id));
                }
            })
            // Without a thread there is no notice; the wait is the same.
            .ok();
        GateNotice {
            done: Some(done),
            thread,
        }
    }
}

impl Drop for GateNotice {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `Blocking waiting for the gate …, held by pid N (user): …`.
fn gate_notice(path: &Path, id: Option<dir::FileId>) -> String {
    let holders: Vec<String> = id
        .map(dir::flock_holders)
        .unwrap_or_default()
        .into_iter()
        .map(|(pid, uid)| match uid {
            Some(uid) => format!("pid {pid} ({})", crate::identity::user_name(uid)),
            None => format!("pid {pid}"),
        })
        .collect();
    let by = if holders.is_empty() {
        "held by another process".to_owned()
    } else {
        format!("held by {}", holders.join(", "))
    };
    format!(
        "Blocking waiting for the gate {}, {by}: mode changes and task starts hold it only for \
         moments, so its holder is stuck or holds it by hand; end that process (or press Ctrl-C \
         twice to give up)",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_long_wait_for_the_gate_names_its_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("s");
        let b = FileBackend::open(
            &crate::config::Config::with_state_dir(&state),
            crate::clock::SystemClock::shared(),
        )
        .unwrap();
        let held = b.gate(false).unwrap();
        let line = gate_notice(&state.join(GATE), dir::FileId::of(&held));
        let me = crate::identity::Identity::current();
        assert!(
            line.starts_with(&format!(
                "Blocking waiting for the gate {}, held by pid {} ({})",
                state.join(GATE).display(),
                me.pid,
                me.user
            )),
            "{line}"
        );
        drop(held);
        let line = gate_notice(&state.join(GATE), None);
        assert!(line.contains("held by another process"), "{line}");
    }
}
