//! The read-only tier on PostgreSQL: not done yet. Every change answers
//! [`Error::Unsupported`](crate::Error::Unsupported); no layer can publish
//! writes in flight, so [`writes_in_flight`] truthfully lists none. This
//! file owns the
//! area: its tables (part of schema version 1, [`tables`]) and the
//! [`Backend`](crate::Backend) read-only methods `mod.rs` delegates here.

use super::Inner;
use super::unsupported;
use crate::backend::{Completion, ModeChange, ReadOnlyStart, WaiterLease, WritesLease};
use crate::error::Result;
use crate::mode::ModeRecord;
use crate::records::WritesInFlight;

/// This area's tables in schema version 1 (`schema.rs`), given the quoted
/// schema name.
pub(super) fn tables(_s: &str) -> String {
    String::new()
}

pub(super) fn begin_read_only(_inner: &Inner, _change: &ModeChange) -> Result<ReadOnlyStart> {
    Err(unsupported("going read-only"))
}

/// [`begin_read_only`] with `step` taken in the same transaction, under
/// the gate (a read-only schedule's end as its drain begins,
/// `schedules.rs`), as [`begin_pending_with`](super::modes::begin_pending_with)
/// does for PENDING: refused as `step` judges, committed with the
/// READONLY_PENDING (or the READONLY or OFFLINE found).
pub(super) fn begin_read_only_with(
    _inner: &Inner,
    _change: &ModeChange,
    _step: Option<super::modes::GateStep>,
) -> Result<ReadOnlyStart> {
    Err(unsupported("a scheduled read-only window"))
}

pub(super) fn complete_read_only(_inner: &Inner, _waiter: &dyn WaiterLease) -> Result<Completion> {
    Err(unsupported("completing read-only"))
}

pub(super) fn go_read_only(_inner: &Inner, _change: &ModeChange) -> Result<ModeRecord> {
    Err(unsupported("going read-only at once"))
}

pub(super) fn begin_writes(_inner: &Inner) -> Result<Box<dyn WritesLease>> {
    Err(unsupported("publishing writes in flight"))
}

pub(super) fn writes_in_flight(_inner: &Inner) -> Result<Vec<WritesInFlight>> {
    Ok(Vec::new())
}
