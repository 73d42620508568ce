//! The mode record and the web-server marker beside it (I5): read through
//! a cache that knows a replaced file, a PENDING without waiters read as
//! lapsed, written by rename with the marker ordered around it so the two
//! agree after every change, failed or not.

use super::{FileBackend, GATE, MARKER, MAX_MODE_RECORD, MODE, WAITER_SUFFIX, tasks};
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
            if record.mode != Mode::Pending || self.any_waiter_live()? {
                break ModeView::of(record);
            }
            // No waiter: the PENDING lapsed — unless the last waiter just
            // wrote a new record as it left.
            let again = self.read_record()?;
            if again.generation == record.generation {
                let reason = format!(
                    "PENDING since {} (by {}, pid {}) lapsed: the process waiting to take the \
                     site offline is gone, so the site is ONLINE; the next mode change cleans up",
                    record.since, record.by, record.pid
                );
                break ModeView {
                    mode: Mode::Online,
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
        let marker = self.root.exists(MARKER)?;
        view.stray_marker = match (view.record.mode == Mode::Offline, marker) {
            (false, true) => Some(format!(
                "the web-server marker {} exists but the site is {}: the web server may still \
                 turn visitors away; the next manage command that may write the state removes it",
                self.root.join(MARKER).display(),
                view.mode
            )),
            (true, false) => Some(format!(
                "the site is OFFLINE but the web-server marker {} is missing: the web server \
                 lets visitors through to the app; the next manage command that may write the \
                 state restores it",
                self.root.join(MARKER).display()
            )),
            _ => None,
        };
        Ok(view)
    }

    /// Writes a new mode record in place of `previous` (the record in force,
    /// read under the exclusive gate), ordering the marker around it so
    /// that marker and record agree after every change, failed or not
    /// (I5): the marker is created before an OFFLINE record and taken back
    /// when that record cannot be written; it is removed after any other
    /// record, and stays when that record cannot be written (OFFLINE is
    /// still in force).
    pub(super) fn write_record(
        &self,
        mut record: ModeRecord,
        previous: &ModeRecord,
    ) -> Result<ModeRecord> {
        record.generation = previous.generation.wrapping_add(1);
        let json = serde_json::to_vec_pretty(&record).map_err(|e| Error::Invalid(e.to_string()))?;
        if record.mode != Mode::Offline {
            self.root.replace(MODE, &json, self.modes, true)?;
            if let Err(e) = self.root.remove(MARKER) {
                return Err(Error::state(
                    self.root.join(MARKER),
                    format!(
                        "the site is now {}, but this web-server marker could not be removed \
                         ({e}): the web server still turns visitors away; remove it by hand, or \
                         fix the cause and run any manage command, which puts it right",
                        record.mode
                    ),
                ));
            }
            return Ok(record);
        }
        let had_marker = previous.mode == Mode::Offline && self.root.exists(MARKER)?;
        if !had_marker {
            self.write_marker(&record)?;
        }
        if let Err(failed) = self.root.replace(MODE, &json, self.modes, true) {
            // The previous record is still in force: the marker follows it.
            if previous.mode != Mode::Offline
                && let Err(undo) = self.root.remove(MARKER)
            {
                return Err(Error::state(
                    self.root.join(MARKER),
                    format!(
                        "{failed}; and this web-server marker, written for it, could not be \
                         taken back ({undo}): the web server turns visitors away although the \
                         site is still {}; remove it by hand, or fix the cause and run any \
                         manage command, which puts it right",
                        previous.mode
                    ),
                ));
            }
            return Err(failed);
        }
        Ok(record)
    }

    pub(super) fn write_marker(&self, record: &ModeRecord) -> Result<()> {
        let text = format!("OFFLINE since {} by {}\n", record.since, record.by);
        self.root
            .replace(MARKER, text.as_bytes(), self.modes, false)
    }

    /// Makes the marker agree with `record`: present exactly while it says
    /// OFFLINE. For a holder of the exclusive gate only.
    pub(super) fn marker_follows(&self, record: &ModeRecord) -> Result<()> {
        match (record.mode == Mode::Offline, self.root.exists(MARKER)?) {
            (true, false) => self.write_marker(record),
            (false, true) => self.root.remove(MARKER).map(drop),
            _ => Ok(()),
        }
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
