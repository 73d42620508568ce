//! The read-only tier's mode changes in the file backend: READONLY_PENDING
//! begun or joined, its completion to READONLY under the gate, and
//! READONLY at once. Each runs under the exclusive gate (its caller in
//! `mod.rs` holds it), as every mode change does, so a task start either is seen by it or sees its new mode (I1,
//! I2); the markers follow the record (`record.rs`, I5).

use super::FileBackend;
use crate::backend::{Completion, ModeChange, ReadOnlyStart, WaiterLease};
use crate::clock::Timestamp;
use crate::error::{Error, Refusal, Result};
use crate::history::EntryDraft;
use crate::mode::{Mode, ModeRecord, ModeView};
use crate::records::TaskRecord;

/// The refusal of a mode change while `view` drains toward another mode.
pub(super) fn drain_under_way(view: &ModeView, what: &str) -> Error {
    Error::Refused(Refusal::DrainUnderWay {
        mode: view.mode,
        since: view.record.since,
        by: view.record.by.clone(),
        what: what.to_owned(),
    })
}

impl FileBackend {
    /// A fresh READONLY record by `change`'s operator, keeping the
    /// message, retry-after and bypass of `current` (the record it
    /// follows) unless `change` sets them.
    pub(super) fn read_only_record(&self, current: &ModeRecord, change: &ModeChange) -> ModeRecord {
        let mut r = ModeRecord {
            mode: Mode::ReadOnly,
            from: None,
            since: Timestamp::at(self.clock.now()),
            by: change.by.clone(),
            pid: change.pid,
            ..current.clone()
        };
        change.update(&mut r);
        r
    }

    /// [`Backend::begin_read_only`](crate::Backend::begin_read_only), for
    /// a holder of the exclusive gate (a scheduled window's due start holds
    /// it across the schedule's end and this).
    pub(super) fn begin_read_only_under_gate(&self, change: &ModeChange) -> Result<ReadOnlyStart> {
        let current = self.record_for_writer();
        self.clean_under_gate(&current)?;
        // A lapsed drain this replaces is recorded first.
        self.notice_under_gate();
        let view = self.view()?;
        match view.mode {
            Mode::ReadOnly | Mode::Offline => {
                // A PENDING begun from READONLY that lapsed is READONLY:
                // written back so, never returned as a PENDING.
                let mut r = view.record_in_force();
                if change.update(&mut r) || view.lapsed.is_some() {
                    r = self.write_record(r, &view.record)?;
                }
                Ok(ReadOnlyStart::Already(r))
            }
            Mode::ReadOnlyPending => {
                let mut r = view.record.clone();
                let waiter = self.new_waiter(r.since)?;
                if change.update(&mut r) {
                    r = self.write_record(r, &view.record)?;
                }
                Ok(ReadOnlyStart::Waiting {
                    waiter: Box::new(waiter),
                    record: r,
                    joined: true,
                })
            }
            Mode::Pending => Err(drain_under_way(
                &view,
                "`offline on --read-only` goes READONLY from ONLINE, and the site is going \
                 offline, which stops writes too",
            )),
            Mode::Online => {
                let since = Timestamp::at(self.clock.now());
                let waiter = self.new_waiter(since)?;
                let mut r = ModeRecord {
                    mode: Mode::ReadOnlyPending,
                    since,
                    by: change.by.clone(),
                    pid: change.pid,
                    generation: view.record.generation,
                    ..ModeRecord::initial()
                };
                change.update(&mut r);
                let r = self.write_change(r, &view.record, change.entry.as_ref())?;
                Ok(ReadOnlyStart::Waiting {
                    waiter: Box::new(waiter),
                    record: r,
                    joined: false,
                })
            }
        }
    }

    /// [`Backend::complete_read_only`](crate::Backend::complete_read_only),
    /// for a holder of the exclusive gate.
    pub(super) fn complete_read_only_under_gate(
        &self,
        waiter: &dyn WaiterLease,
        entry: Option<&EntryDraft>,
    ) -> Result<Completion> {
        let r = self.read_record()?;
        match r.mode {
            Mode::ReadOnly => Ok(Completion::ReadOnly(r)),
            Mode::Offline => Ok(Completion::Offline(r)),
            Mode::ReadOnlyPending if r.since == waiter.pending_since() => {
                // The final look, under the gate: a run that joined a live
                // task after the waiter's last look is seen here.
                let holding: Vec<TaskRecord> = super::tasks::live(&self.tasks)?
                    .into_iter()
                    .filter(TaskRecord::holds_off_read_only)
                    .collect();
                if !holding.is_empty() {
                    return Ok(Completion::Held(holding));
                }
                let read_only = ModeRecord {
                    mode: Mode::ReadOnly,
                    from: None,
                    since: Timestamp::at(self.clock.now()),
                    ..r.clone()
                };
                Ok(Completion::ReadOnly(
                    self.write_change(read_only, &r, entry)?,
                ))
            }
            _ => Ok(Completion::Cancelled(r)),
        }
    }

    /// [`Backend::go_read_only`](crate::Backend::go_read_only), for a
    /// holder of the exclusive gate.
    pub(super) fn go_read_only_under_gate(&self, change: &ModeChange) -> Result<ModeRecord> {
        let r = self.record_for_writer();
        self.clean_under_gate(&r)?;
        self.notice_under_gate();
        let next = if r.mode == Mode::ReadOnly {
            let mut same = r.clone();
            change.update(&mut same);
            same
        } else {
            self.read_only_record(&r, change)
        };
        // Recorded when the mode in force changes (not for a PENDING begun
        // from READONLY that lapsed back there).
        let entry = change
            .entry
            .as_ref()
            .filter(|_| self.in_force(&r).is_ok_and(|v| v.mode != Mode::ReadOnly));
        self.write_change(next, &r, entry)
    }
}
