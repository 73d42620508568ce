//! Recording a change: its [`HistoryEntry`] appended to the backend's
//! history after the change is durable ([`record`]), its hooks run for it
//! unless another process recorded it first ([`record_and_notify`]), and
//! what nobody lived to record caught up ([`catch_up`]). A failure is a
//! warning on stderr: it never reverts the change. Above both the backend
//! and the hooks, which know nothing of each other.

use crate::backend::Backend;
use crate::history::HistoryEntry;
use crate::hooks::Hooks;

/// How [`record`] went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The entry was appended.
    Appended,
    /// Another process recorded the same change first (same id): nothing
    /// was appended, and its hooks are that process's to run.
    Duplicate,
    /// The append failed; the change itself stands. The warning (already
    /// printed on stderr) is here too.
    Failed(String),
}

impl Recorded {
    /// Whether this process should run the hooks for the entry: it was
    /// appended, or the append failed (the change happened all the same).
    pub fn runs_hooks(&self) -> bool {
        !matches!(self, Recorded::Duplicate)
    }
}

/// Appends `entry` to `backend`'s history, after the change it records is
/// durable. A failure is reported on stderr and returned, and never
/// reverts the change.
pub fn record(backend: &dyn Backend, entry: &HistoryEntry) -> Recorded {
    match backend.append_history(entry) {
        Ok(true) => Recorded::Appended,
        Ok(false) => Recorded::Duplicate,
        Err(e) => {
            let warning = format!(
                "warning: the change ({} at {}) is made, but it could not be recorded in the \
                 history of the {}: {e}",
                entry.change(),
                entry.at,
                backend.location()
            );
            eprintln!("{warning}");
            Recorded::Failed(warning)
        }
    }
}

/// Records `entry` ([`record`]) and, unless another process recorded it
/// first, runs `hooks` for it, detached.
pub fn record_and_notify(backend: &dyn Backend, hooks: &Hooks, entry: &HistoryEntry) -> Recorded {
    let recorded = record(backend, entry);
    if recorded.runs_hooks() {
        hooks.run_detached(entry);
    }
    recorded
}

/// Records what nobody lived to record ([`Backend::record_unrecorded`])
/// and runs `hooks` for each entry this process appended. A failure is
/// reported on stderr: the caller's own work goes on.
pub fn catch_up(backend: &dyn Backend, hooks: &Hooks) {
    match backend.record_unrecorded() {
        Ok(entries) => {
            for e in &entries {
                hooks.run_detached(e);
            }
        }
        Err(e) => eprintln!(
            "warning: could not record in the history a change nobody lived to record: {e}"
        ),
    }
}
