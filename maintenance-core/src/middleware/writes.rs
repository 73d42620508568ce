//! The count of this process's unsafe requests in flight, and the layer
//! thread's publication of them ([`Backend::begin_writes`]) while the site
//! is READONLY_PENDING, so the read-only drain waits for them. The order
//! that makes it sound (count before the view is loaded, read after a new
//! snapshot is stored) is explained in `readonly.rs`, which counts
//! requests in and out; so is why the publishing is made ready ahead
//! ([`Backend::prepare_writes`]) once this process takes writes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};

use crate::backend::{Backend, WritesLease};

/// This process's unsafe requests in flight.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    count: AtomicU64,
    /// The layer's thread has published them: the last one out tells it.
    published: AtomicBool,
    /// An unsafe request came once: the thread then makes its publishing
    /// ready ahead ([`Backend::prepare_writes`]).
    seen: AtomicBool,
}

impl InFlight {
    /// Counts one unsafe request in, before it loads the view: ordered
    /// before that load by a `SeqCst` fence (see `readonly.rs`).
    pub(crate) fn begin(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !self.seen.load(Ordering::Relaxed) {
            self.seen.store(true, Ordering::Relaxed);
        }
    }

    /// Counts one out; `true` when it was the last one and the layer's
    /// thread has published them, which must then be told.
    pub(crate) fn end(&self) -> bool {
        self.count.fetch_sub(1, Ordering::SeqCst) == 1 && self.published.load(Ordering::SeqCst)
    }
}

/// The layer thread's publication of this process's writes in flight
/// while the site is READONLY_PENDING.
#[derive(Default)]
pub(crate) struct Publisher {
    lease: Option<Box<dyn WritesLease>>,
    complained: bool,
    /// [`Backend::prepare_writes`] succeeded.
    prepared: bool,
}

impl Publisher {
    /// After a new snapshot was stored: publishes the writes in flight when
    /// the site is READONLY_PENDING and some are, and ends the publication
    /// once none are (or nobody waits any more).
    pub(crate) fn after_refresh(
        &mut self,
        in_flight: &InFlight,
        draining: bool,
        backend: &dyn Backend,
        log: &dyn Fn(&str),
    ) {
        // Made ready ahead, once this process takes writes, so that the
        // publication below is quick when a drain begins (`readonly.rs`).
        if !self.prepared && in_flight.seen.load(Ordering::Relaxed) {
            match backend.prepare_writes() {
                Ok(()) => self.prepared = true,
                Err(e) if !self.complained => {
                    log(&format!(
                        "the maintenance layer cannot make ready the publishing of its unsafe \
                         requests in flight (it tries again at each refresh): {e}"
                    ));
                    self.complained = true;
                }
                Err(_) => {}
            }
        }
        // Ordered after the snapshot's store: see the module docs.
        fence(Ordering::SeqCst);
        let live = in_flight.count.load(Ordering::SeqCst) > 0;
        if draining && live && self.lease.is_none() {
            match backend.begin_writes() {
                Ok(lease) => {
                    self.lease = Some(lease);
                    in_flight.published.store(true, Ordering::SeqCst);
                    self.complained = false;
                }
                Err(e) => {
                    if !self.complained {
                        log(&format!(
                            "the maintenance layer cannot publish its unsafe requests in flight, \
                             which the read-only drain would wait for: {e}"
                        ));
                        self.complained = true;
                    }
                }
            }
        }
        if !draining {
            self.end(in_flight);
        } else {
            self.done(in_flight);
        }
    }

    /// The last write in flight ended (or a look after a publication): ends
    /// the publication when none is left.
    pub(crate) fn done(&mut self, in_flight: &InFlight) {
        if in_flight.count.load(Ordering::SeqCst) == 0 {
            self.end(in_flight);
        }
    }

    fn end(&mut self, in_flight: &InFlight) {
        if self.lease.is_some() {
            in_flight.published.store(false, Ordering::SeqCst);
            self.lease = None;
        }
    }
}
