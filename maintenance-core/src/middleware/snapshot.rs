//! What the layer knows of the mode: the snapshot its thread refreshes
//! (`state.rs`) and publishes with the known sessions (`known.rs`), read by
//! every request. Its own file so that both take it from here, one way.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::clock::Timestamp;
use crate::mode::{Mode, RetryAfter};
use crate::schedule::ScheduleRecord;

/// What the layer knows of the mode, refreshed in the background.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The mode in force (a lapsed PENDING reads ONLINE).
    pub mode: Mode,
    /// Since when.
    pub since: Timestamp,
    /// The operator's message.
    pub message: Option<String>,
    /// When users should come back.
    pub retry_after: Option<RetryAfter>,
    /// Whether unsafe requests are refused (READONLY_PENDING, READONLY, a
    /// PENDING begun from READONLY).
    pub writes_refused: bool,
    /// The SHA-256 of the bypass secret, if one is set.
    pub(crate) bypass: Option<[u8; 32]>,
    /// The scheduled window, once its notice period has begun (decided
    /// here, at each refresh, so the hot path reads no clock).
    pub scheduled: Option<Arc<ScheduleRecord>>,
    /// Until when it may admit an unsafe request: two refresh intervals
    /// after the read that made it began, the settle time a read-only
    /// drain gives the layers (`readonly.rs` says why).
    pub(crate) fresh_until: Instant,
    /// When the read that made it began, on this process's monotonic clock
    /// and on its wall clock (read together): so a write's admission is
    /// stamped from the one `Instant` its freshness check reads
    /// ([`WriteAdmission`](super::WriteAdmission)).
    pub(crate) read_began: (Instant, SystemTime),
}
