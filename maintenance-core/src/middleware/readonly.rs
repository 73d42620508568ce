//! The read-only tier in the layer: while writes are refused
//! (READONLY_PENDING, READONLY, a PENDING begun from READONLY), an unsafe
//! request — any method but GET, HEAD and OPTIONS — gets a 503 with
//! `Retry-After` and the operator's message (JSON for API clients), for
//! everyone: the bypass cookie, the allow-list and the app's predicate let
//! their holders through OFFLINE, not write through READONLY. Safe requests
//! pass as while ONLINE.
//!
//! The unsafe requests this process lets in are counted while they are in
//! flight, in every mode, so that once the layer sees READONLY_PENDING its
//! thread publishes them ([`Backend::begin_writes`]) and the drain waits
//! for them (I2). A request counts itself *before* it reads the snapshot,
//! and the thread reads the count *after* it stored a new snapshot, each
//! behind a `SeqCst` fence: so either the thread sees the request, or the
//! request sees READONLY_PENDING and is turned away — none slips between.
//! A safe request costs one comparison of its method.
//!
//! [`Backend::begin_writes`]: crate::backend::Backend::begin_writes

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};

use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Method, Response, StatusCode};

use super::options::LayerOptions;
use super::response;
use super::state::{Job, Shared, Snapshot};
use crate::backend::{Backend, WritesLease};
use crate::mode::Mode;

/// The built-in page of a refused write; `{message}` is replaced (escaped).
const PAGE: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Read-only for maintenance</title></head>\n<body><h1>Read-only for maintenance</h1>\n\
<p>{message}</p>\n</body></html>\n";

/// Whether `method` only reads: GET, HEAD, OPTIONS.
pub(crate) fn is_safe(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD || *method == Method::OPTIONS
}

/// This process's unsafe requests in flight.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    count: AtomicU64,
    /// The layer's thread has published them: the last one out tells it.
    published: AtomicBool,
}

/// One unsafe request in flight, from before the layer decides about it
/// until its response future ends (answered, or dropped).
pub(crate) struct WriteGuard {
    shared: Arc<Shared>,
}

impl WriteGuard {
    /// Counts the request when its method is unsafe; `None` (one
    /// comparison) when it is safe. Called before the snapshot is read.
    pub(crate) fn begin(shared: &Arc<Shared>, method: &Method) -> Option<WriteGuard> {
        if is_safe(method) {
            return None;
        }
        shared.in_flight.count.fetch_add(1, Ordering::SeqCst);
        // Ordered before the snapshot's load: see the module docs.
        fence(Ordering::SeqCst);
        Some(WriteGuard {
            shared: Arc::clone(shared),
        })
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        let f = &self.shared.in_flight;
        if f.count.fetch_sub(1, Ordering::SeqCst) == 1 && f.published.load(Ordering::SeqCst) {
            self.shared.send(Job::WritesDone);
        }
    }
}

/// The layer thread's publication of this process's writes in flight
/// while the site is READONLY_PENDING.
#[derive(Default)]
pub(crate) struct Publisher {
    lease: Option<Box<dyn WritesLease>>,
    complained: bool,
}

impl Publisher {
    /// After a new snapshot was stored: publishes the writes in flight when
    /// the site is READONLY_PENDING and some are, and ends the publication
    /// once none are (or nobody waits any more).
    pub(crate) fn after_refresh(&mut self, shared: &Shared, backend: &dyn Backend) {
        // Ordered after the snapshot's store: see the module docs.
        fence(Ordering::SeqCst);
        let draining = shared
            .snapshot
            .load()
            .as_deref()
            .is_some_and(|s| s.mode == Mode::ReadOnlyPending);
        let live = shared.in_flight.count.load(Ordering::SeqCst) > 0;
        if draining && live && self.lease.is_none() {
            match backend.begin_writes() {
                Ok(lease) => {
                    self.lease = Some(lease);
                    shared.in_flight.published.store(true, Ordering::SeqCst);
                    self.complained = false;
                }
                Err(e) => {
                    if !self.complained {
                        shared.log(&format!(
                            "the maintenance layer cannot publish its unsafe requests in flight, \
                             which the read-only drain would wait for: {e}"
                        ));
                        self.complained = true;
                    }
                }
            }
        }
        if !draining {
            self.end(shared);
        } else {
            self.done(shared);
        }
    }

    /// The last write in flight ended (or a look after a publication): ends
    /// the publication when none is left.
    pub(crate) fn done(&mut self, shared: &Shared) {
        if shared.in_flight.count.load(Ordering::SeqCst) == 0 {
            self.end(shared);
        }
    }

    fn end(&mut self, shared: &Shared) {
        if self.lease.is_some() {
            shared.in_flight.published.store(false, Ordering::SeqCst);
            self.lease = None;
        }
    }
}

/// The 503 for an unsafe request while writes are refused.
pub(crate) fn refused<B: From<String>>(
    options: &LayerOptions,
    snapshot: &Snapshot,
    json: bool,
) -> Response<B> {
    let (content_type, body) = if json {
        let doc = serde_json::json!({
            "error": "read_only",
            "mode": snapshot.mode,
            "message": snapshot.message,
            "retry_after": snapshot.retry_after,
        });
        ("application/json", doc.to_string())
    } else {
        let page = match &options.read_only_page {
            Some(p) => p.to_string(),
            None => PAGE.replace(
                "{message}",
                &response::escape(snapshot.message.as_deref().unwrap_or(
                    "The site is read-only for maintenance: you can browse it, but changes \
                     cannot be saved now. Please try again soon.",
                )),
            ),
        };
        ("text/html; charset=utf-8", page)
    };
    let mut res = Response::new(B::from(body));
    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(v) = response::retry_after_value(snapshot.retry_after.as_ref()) {
        h.insert(RETRY_AFTER, v);
    }
    res
}
