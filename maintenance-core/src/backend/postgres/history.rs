//! The history on PostgreSQL: not done yet. Every call answers
//! [`Error::Unsupported`](crate::Error::Unsupported), except that nothing
//! is left unrecorded ([`record_unrecorded`] returns no entry, so mode
//! changes still go through). This file owns the area: its tables (part of
//! schema version 1, [`tables`]) and the [`Backend`](crate::Backend)
//! history methods `mod.rs` delegates here.

use super::Inner;
use super::unsupported;
use crate::error::Result;
use crate::history::{HistoryEntry, HistoryQuery, HistoryRead};

/// This area's tables in schema version 1 (`schema.rs`), given the quoted
/// schema name.
pub(super) fn tables(_s: &str) -> String {
    String::new()
}

pub(super) fn append_history(_inner: &Inner, _entry: &HistoryEntry) -> Result<bool> {
    Err(unsupported("appending to the history"))
}

pub(super) fn history(_inner: &Inner, _query: &HistoryQuery) -> Result<HistoryRead> {
    Err(unsupported("reading the history"))
}

pub(super) fn record_unrecorded(_inner: &Inner) -> Result<Vec<HistoryEntry>> {
    Ok(Vec::new())
}
