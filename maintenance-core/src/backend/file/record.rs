//! The mode record and the web-server markers beside it (I5): read through
//! a cache that knows a replaced file, a draining mode without waiters read
//! as lapsed, written by rename with the markers ordered around it so they
//! agree after every change, failed or not. `OFFLINE` follows the record's
//! legacy mode (what a binary that predates READONLY acts on), `READONLY`
//! whether writes are refused.

use super::{
    FileBackend, GATE, MARKER, MAX_MODE_RECORD, MODE, READONLY_MARKER, WAITER_SUFFIX, tasks,
};
use crate::error::{Error, Result};
use crate::mode::{Lapse, Mode, ModeRecord, ModeView};

impl FileBackend {
    /// The mode record, parsed again only when the file changed: the record
    /// is only ever replaced whole by rename, so its inode, size and times
    /// tell a new record from the one cached.
    pub(super) fn read_record(&self) -> Result<ModeRecord> {
        let Some(version) = self.root.version_of(MODE)? else {
            return Ok(ModeRecord::initial());
        };
        let mut cache = self.record_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, record)) = cache.as_ref()
            && *v == version
        {
            return Ok(record.clone());
        }
        let record = self.parse_record()?;
        // Cache what was read only if the file did not change meanwhile.
        if self.root.version_of(MODE)? == Some(version) {
            *cache = Some((version, record.clone()));
        }
        Ok(record)
    }

    pub(super) fn parse_record(&self) -> Result<ModeRecord> {
        match self.root.read_small(MODE, MAX_MODE_RECORD)? {
            None => Ok(ModeRecord::initial()),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::state(
                    self.root.join(MODE),
                    format!(
                        "is corrupt ({e}); `{} offline off --force` rewrites it \
                         (check the site first: it may have been offline)",
                        crate::identity::program_name()
                    ),
                )
            }),
        }
    }

    pub(super) fn any_waiter_live(&self) -> Result<bool> {
        for name in self.pending.names()? {
            let Some(name) = name.to_str() else { continue };
            if !name.ends_with(WAITER_SUFFIX) || name.starts_with('.') {
                continue;
            }
            let Ok(Some(file)) = self.pending.open_read(name) else {
                continue;
            };
            if tasks::held(&file).map_err(|e| Error::io("probe", self.pending.join(name), e))? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub(super) fn view(&self) -> Result<ModeView> {
        let mut record = self.read_record()?;
        let mut view = loop {
            if !record.mode.is_draining() || self.any_waiter_live()? {
                break ModeView::of(record);
            }
            // No waiter: the drain lapsed — unless the last waiter just
            // wrote a new record as it left.
            let again = self.read_record()?;
            if again.generation == record.generation {
                let to = record.lapses_to();
                let reason = format!(
                    "{} since {} (by {}, pid {}) lapsed: the process waiting to take the \
                     site {} is gone, so the site is {to}; the next mode change cleans up",
                    record.mode,
                    record.since,
                    record.by,
                    record.pid,
                    if record.mode == Mode::Pending {
                        "offline"
                    } else {
                        "read-only"
                    },
                );
                break ModeView {
                    mode: to,
                    lapsed: Some(Lapse {
                        record: record.clone(),
                        reason,
                    }),
                    record,
                    stray_marker: None,
                };
            }
            record = again;
        };
        let (offline, read_only) = markers_for(&view);
        let mut stray = Vec::new();
        match (offline, self.root.exists(MARKER)?) {
            (false, true) => stray.push(format!(
                "the web-server marker {} exists but the site is {}: the web server may still \
                 turn visitors away; the next manage command that may write the state removes it",
                self.root.join(MARKER).display(),
                view.mode
            )),
            (true, false) => stray.push(format!(
                "the site is {} but the web-server marker {} is missing: the web server \
                 lets visitors through to the app; the next manage command that may write the \
                 state restores it",
                view.mode,
                self.root.join(MARKER).display()
            )),
            _ => {}
        }
        match (read_only, self.root.exists(READONLY_MARKER)?) {
            (false, true) => stray.push(format!(
                "the web-server marker {} exists but the site is {}: the web server may still \
                 refuse writes; the next manage command that may write the state removes it",
                self.root.join(READONLY_MARKER).display(),
                view.mode
            )),
            (true, false) => stray.push(format!(
                "the site is {} but the web-server marker {} is missing: the web server lets \
                 writes through to the app (whose layer still refuses them); the next manage \
                 command that may write the state restores it",
                view.mode,
                self.root.join(READONLY_MARKER).display()
            )),
            _ => {}
        }
        view.stray_marker = (!stray.is_empty()).then(|| stray.join("; and "));
        Ok(view)
    }

    /// The mode in force for `record` as a writer holding the gate sees it:
    /// a draining record without a live waiter has lapsed.
    pub(super) fn in_force(&self, record: &ModeRecord) -> Result<ModeView> {
        if record.mode.is_draining() && !self.any_waiter_live()? {
            return Ok(ModeView {
                mode: record.lapses_to(),
                ..ModeView::of(record.clone())
            });
        }
        Ok(ModeView::of(record.clone()))
    }

    /// Writes a new mode record in place of `previous` (the record in force,
    /// read under the exclusive gate), ordering the markers around it so
    /// that markers and record agree after every change, failed or not
    /// (I5): a marker the new record needs is created before it and taken
    /// back when that record cannot be written (unless the previous record
    /// needed it too); one it does not need is removed after it, and stays
    /// when that record cannot be written (the previous one is still in
    /// force). For [`write_change`](Self::write_change), which records the
    /// change's entry around it.
    pub(super) fn replace_record(
        &self,
        mut record: ModeRecord,
        previous: &ModeRecord,
    ) -> Result<ModeRecord> {
        record.generation = previous.generation.wrapping_add(1);
        if !record.mode.is_draining() {
            record.from = None;
        }
        let json = serde_json::to_vec_pretty(&record).map_err(|e| Error::Invalid(e.to_string()))?;
        // A record just written is in force: its waiter is alive.
        let want = markers_for(&ModeView::of(record.clone()));
        let had = markers_for(&self.in_force(previous)?);
        let markers = [(MARKER, want.0, had.0), (READONLY_MARKER, want.1, had.1)];
        for (name, wanted, _) in markers {
            if wanted && !self.root.exists(name)? {
                self.write_marker(name, &record)?;
            }
        }
        if let Err(failed) = self.root.replace(MODE, &json, self.modes, true) {
            // The previous record is still in force: the markers follow it.
            for (name, wanted, had) in markers {
                if wanted
                    && !had
                    && let Err(undo) = self.root.remove(name)
                {
                    return Err(Error::state(
                        self.root.join(name),
                        format!(
                            "{failed}; and this web-server marker, written for it, could not be \
                             taken back ({undo}): the web server holds visitors back although \
                             the site is still {}; remove it by hand, or fix the cause and run \
                             any manage command, which puts it right",
                            previous.mode
                        ),
                    ));
                }
            }
            return Err(failed);
        }
        for (name, wanted, _) in markers {
            if wanted {
                continue;
            }
            if let Err(e) = self.root.remove(name) {
                return Err(Error::state(
                    self.root.join(name),
                    format!(
                        "the site is now {}, but this web-server marker could not be removed \
                         ({e}): the web server still holds visitors back; remove it by hand, or \
                         fix the cause and run any manage command, which puts it right",
                        record.mode
                    ),
                ));
            }
        }
        Ok(record)
    }

    pub(super) fn write_marker(&self, name: &str, record: &ModeRecord) -> Result<()> {
        let what = if name == MARKER {
            "OFFLINE"
        } else {
            "READONLY"
        };
        let text = format!(
            "{what} since {} by {} (the site is {})\n",
            record.since, record.by, record.mode
        );
        self.root.replace(name, text.as_bytes(), self.modes, false)
    }

    /// Makes the markers agree with `record` in force: for a holder of the
    /// exclusive gate only.
    pub(super) fn marker_follows(&self, record: &ModeRecord) -> Result<()> {
        let (offline, read_only) = markers_for(&self.in_force(record)?);
        for (name, wanted) in [(MARKER, offline), (READONLY_MARKER, read_only)] {
            match (wanted, self.root.exists(name)?) {
                (true, false) => self.write_marker(name, record)?,
                (false, true) => self.root.remove(name).map(drop)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Puts a marker that disagrees with the record right, for a reader
    /// that found them so (a crash between the two writes, or a writer
    /// that could take back neither): only when the gate is free — a
    /// writer holding it is between the two writes and will end in
    /// agreement — and only as far as this user may write. Returns whether
    /// it changed anything.
    pub(super) fn put_marker_right(&self) -> bool {
        let Ok(gate) = self.root.open_lock(GATE, self.modes) else {
            return false;
        };
        if fs2::FileExt::try_lock_exclusive(&gate).is_err() {
            return false;
        }
        let Ok(record) = self.read_record() else {
            return false;
        };
        self.marker_follows(&record).is_ok()
    }

    /// The record as a writer holding the gate sees it: a corrupt record is
    /// replaced rather than fatal, since the writer is about to replace it.
    pub(super) fn record_for_writer(&self) -> ModeRecord {
        self.read_record().unwrap_or_else(|_| {
            let mut r = ModeRecord::initial();
            r.generation = self
                .clock
                .now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(1);
            r
        })
    }
}

/// Which web-server markers the mode in force calls for: `(OFFLINE,
/// READONLY)`. `OFFLINE` exactly while the record's legacy mode is
/// OFFLINE — what a binary that predates READONLY acts on, so the two never
/// disagree over it — and `READONLY` exactly while writes are refused.
pub(crate) fn markers_for(view: &ModeView) -> (bool, bool) {
    (
        view.record.legacy_mode() == Mode::Offline,
        view.writes_refused(),
    )
}
