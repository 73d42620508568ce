//! The `offline run` window on PostgreSQL: not done yet. Taking the window
//! answers [`Error::Unsupported`](crate::Error::Unsupported), so no window
//! is ever held, and the readers say so truthfully ([`window`] is free,
//! [`is_running`], which joins ask, is false). This file
//! owns the area: its tables (part of schema version 1, [`tables`]) and
//! the [`Backend`](crate::Backend) window methods `mod.rs` delegates here.

use super::Inner;
use super::connect::Conn;
use super::unsupported;
use crate::backend::{WindowLease, WindowRun, WindowState};
use crate::error::Result;

/// This area's tables in schema version 1 (`schema.rs`), given the quoted
/// schema name.
pub(super) fn tables(_s: &str) -> String {
    String::new()
}

pub(super) fn begin_window_run(_inner: &Inner, _run: &WindowRun) -> Result<Box<dyn WindowLease>> {
    Err(unsupported("`offline run`'s window"))
}

pub(super) fn window(_inner: &Inner) -> Result<WindowState> {
    Ok(WindowState::Free)
}

/// Whether an `offline run`'s command runs now (a join's standing inside
/// the window lasts as long as it does). None can, until the window is
/// built here.
pub(super) async fn is_running(_inner: &Inner) -> Result<bool> {
    Ok(false)
}

/// The window's state read on `conn` (a writer's, holding the exclusive
/// gate), for the history: a lapsed drain begun by an `offline run` is
/// recorded as the run's. Free, until the window is built here.
pub(super) async fn state_on(_inner: &Inner, _conn: &Conn) -> Result<WindowState> {
    Ok(WindowState::Free)
}

/// For the history (`history.rs`): the runs that died while their command
/// ran and that nobody has recorded yet, each returned exactly once however
/// many processes ask at once, on `conn`. None, until the window is built
/// here.
pub(super) async fn unrecorded_abandoned(_inner: &Inner, _conn: &Conn) -> Result<Vec<WindowRun>> {
    Ok(Vec::new())
}
