//! Unsafe web requests in flight, as a web layer publishes them while the
//! site is READONLY_PENDING: one locked file per layer process in
//! `pending/` (`<id>.writes`, its [`WritesInFlight`] inside), created under
//! a temporary name, locked, written, then renamed, so a visible one is
//! always locked while its process holds it — as a task file is. Probes
//! take shared try-locks, so a dead layer never looks live (its lock went
//! with it), and its leftover is removed by the next mode change.
//! Binaries that predate READONLY look only at `.waiter` files here.

use std::fs::File;
use std::io::Write;

use super::dir::{Dir, Modes};
use super::tasks;
use crate::backend::WritesLease;
use crate::clock::{SharedClock, Timestamp};
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::records::WritesInFlight;

/// Suffix of a layer's writes-in-flight file.
pub(super) const SUFFIX: &str = ".writes";
/// Largest record read back.
const MAX: usize = 4096;

/// A layer's hold on its writes-in-flight file: removed, then closed, when
/// dropped.
#[derive(Debug)]
pub(super) struct FileWritesLease {
    dir: Dir,
    name: String,
    _file: File,
}

impl WritesLease for FileWritesLease {}

impl Drop for FileWritesLease {
    fn drop(&mut self) {
        // Removed while still locked; a failure leaves a leftover that never
        // counts (the lock goes with the descriptor) and is reaped later.
        let _ = self.dir.remove(&self.name);
    }
}

/// Publishes this process's writes in flight in `pending`.
pub(super) fn publish(pending: &Dir, modes: Modes, clock: &SharedClock) -> Result<FileWritesLease> {
    // A handle of its own: the lease outlives any borrow of the backend.
    let dir = pending.try_clone()?;
    let id = tasks::new_id();
    let tmp = format!(".{id}.tmp");
    let name = format!("{id}{SUFFIX}");
    let mut file = dir.create_new(&tmp, modes)?;
    let cleanup = |e: Error| {
        let _ = dir.remove(&tmp);
        e
    };
    fs2::FileExt::try_lock_exclusive(&file)
        .map_err(|e| cleanup(Error::io("lock", dir.join(&tmp), e)))?;
    let me = Identity::current();
    let record = WritesInFlight {
        pid: me.pid,
        by: me.user_at_host(),
        since: Timestamp::at(clock.now()),
    };
    let json = serde_json::to_vec(&record).map_err(|e| cleanup(Error::Invalid(e.to_string())))?;
    file.write_all(&json)
        .map_err(|e| cleanup(Error::io("write", dir.join(&tmp), e)))?;
    dir.rename(&tmp, &name).map_err(cleanup)?;
    Ok(FileWritesLease {
        dir,
        name,
        _file: file,
    })
}

/// Every held writes-in-flight file in `pending`, oldest first. One that
/// is held but cannot be read still counts, as a held task does.
pub(super) fn live(pending: &Dir) -> Result<Vec<WritesInFlight>> {
    let mut found = Vec::new();
    for name in pending.names()? {
        let Some(name) = name.to_str() else { continue };
        if !name.ends_with(SUFFIX) || name.starts_with('.') {
            continue;
        }
        let Some(file) = pending.open_read(name)? else {
            continue;
        };
        if !tasks::held(&file).map_err(|e| Error::io("probe", pending.join(name), e))? {
            continue;
        }
        let record = super::dir::read_regular(file, MAX, &pending.join(name))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<WritesInFlight>(&bytes).ok())
            .unwrap_or_else(|| WritesInFlight {
                pid: 0,
                by: format!("(unreadable file {name})"),
                since: Timestamp::EPOCH,
            });
        found.push(record);
    }
    found.sort_by(|a, b| a.since.cmp(&b.since).then(a.pid.cmp(&b.pid)));
    Ok(found)
}
