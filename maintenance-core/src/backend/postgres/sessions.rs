//! Web sessions on PostgreSQL: not done yet. A touch answers
//! [`Error::Unsupported`](crate::Error::Unsupported), so no session is
//! ever recorded, and the readers say so truthfully: no session is live
//! (so `offline on` and status work, counting tasks). This file owns the
//! area: its tables (part of schema version 1, [`tables`]) and the
//! [`Backend`](crate::Backend) session methods `mod.rs` delegates here.

use super::Inner;
use super::unsupported;
use crate::backend::SessionSummary;
use crate::error::Result;
use crate::session::{SessionEntry, SessionKey};

/// This area's tables in schema version 1 (`schema.rs`), given the quoted
/// schema name.
pub(super) fn tables(_s: &str) -> String {
    String::new()
}

pub(super) fn touch_session(_inner: &Inner, _key: &SessionKey) -> Result<()> {
    Err(unsupported("touching a web session"))
}

pub(super) fn end_session(_inner: &Inner, _key: &SessionKey) -> Result<()> {
    Err(unsupported("ending a web session"))
}

pub(super) fn session(_inner: &Inner, _key: &SessionKey) -> Result<Option<SessionEntry>> {
    Ok(None)
}

pub(super) fn sessions(_inner: &Inner) -> Result<Vec<SessionEntry>> {
    Ok(Vec::new())
}

pub(super) fn session_summary(_inner: &Inner) -> Result<SessionSummary> {
    Ok(SessionSummary::default())
}

pub(super) fn prune_sessions(_inner: &Inner) -> Result<usize> {
    Ok(0)
}
