//! Scheduled windows on PostgreSQL: not done yet. Scheduling answers
//! [`Error::Unsupported`](crate::Error::Unsupported), so no schedule ever
//! lives, and the readers say so truthfully (none; ending one ends
//! nothing), so `offline off` and `on` work. This file owns the
//! area: its tables (part of schema version 1, [`tables`]) and the
//! [`Backend`](crate::Backend) schedule methods `mod.rs` delegates here.

use super::Inner;
use super::connect::Conn;
use super::unsupported;
use crate::backend::{
    EndedSchedule, ModeChange, PendingStart, ReadOnlyStart, ScheduleEnd, ScheduleLease,
    ScheduleRecord,
};
use crate::error::Result;

/// This area's tables in schema version 1 (`schema.rs`), given the quoted
/// schema name.
pub(super) fn tables(_s: &str) -> String {
    String::new()
}

pub(super) fn begin_schedule(
    _inner: &Inner,
    _schedule: &ScheduleRecord,
) -> Result<Box<dyn ScheduleLease>> {
    Err(unsupported("scheduling a window (offline on --at)"))
}

pub(super) fn schedule(_inner: &Inner) -> Result<Option<ScheduleRecord>> {
    Ok(None)
}

pub(super) fn end_schedule(_inner: &Inner, _end: &ScheduleEnd) -> Result<Option<EndedSchedule>> {
    Ok(None)
}

pub(super) fn begin_scheduled_pending(
    _inner: &Inner,
    _schedule: &dyn ScheduleLease,
    _change: &ModeChange,
) -> Result<PendingStart> {
    Err(unsupported("a scheduled window's PENDING"))
}

pub(super) fn begin_scheduled_read_only(
    _inner: &Inner,
    _schedule: &dyn ScheduleLease,
    _change: &ModeChange,
) -> Result<ReadOnlyStart> {
    Err(unsupported("a scheduled read-only window"))
}

/// For the history (`history.rs`), a holder of the exclusive gate: removes
/// the rows of schedules whose holder died before anyone ended them (they
/// lapsed), on `conn`, and returns their records, each exactly once
/// however many processes ask at once. None, until schedules are built
/// here.
pub(super) async fn take_lapsed(_inner: &Inner, _conn: &Conn) -> Result<Vec<ScheduleRecord>> {
    Ok(Vec::new())
}
