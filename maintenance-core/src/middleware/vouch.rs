//! Who counts as a session: a logged-in user as the app knows it. The app's
//! validator runs on a thread of its own, once per new id; the ids it
//! rejects are remembered in a bounded cache, so a flood of forged cookies
//! costs at most the cap in validator calls per interval and bounded memory.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Weak, mpsc};

use tokio::sync::oneshot;

use super::options::SessionValidator;
use crate::session::SessionKey;

/// What the validator's thread needs of the layer's shared state (which
/// implements it), so that this module depends on nothing of the layer's.
pub(crate) trait Registry: Send + Sync {
    /// Whether this process knows session `id`.
    fn knows(&self, id: &str) -> bool;
    /// Whether the validator rejected `id` lately.
    fn is_rejected(&self, id: &str) -> bool;
    /// Remembers that the validator rejected `id`.
    fn reject(&self, id: Box<str>);
    /// Records a session the validator vouched for, answering `ack` once
    /// it is written.
    fn record(&self, id: &str, ack: Option<oneshot::Sender<()>>);
    /// Answers `ack` once everything queued before it is written.
    fn acknowledge(&self, ack: oneshot::Sender<()>);
    /// Asks the storage whether session `key` was live; answers `reply`.
    fn check(&self, key: SessionKey, reply: oneshot::Sender<bool>);
    /// One log line, to the app's sink.
    fn log(&self, line: &str);
}

/// Ids the validator rejected, in two generations of at most `capacity`
/// each: when the current one is full (or old, see [`Rejected::rotate`]) it
/// becomes the previous one, and the previous one is forgotten. Keyed by
/// what anyone may send, so hashed with std's keyed SipHash.
#[derive(Debug)]
pub(crate) struct Rejected {
    current: HashSet<Box<str>>,
    previous: HashSet<Box<str>>,
    capacity: usize,
}

impl Rejected {
    pub fn new(capacity: usize) -> Self {
        Rejected {
            current: HashSet::new(),
            previous: HashSet::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.current.contains(id) || self.previous.contains(id)
    }

    pub fn insert(&mut self, id: Box<str>) {
        if self.current.len() >= self.capacity {
            self.rotate();
        }
        self.current.insert(id);
    }

    /// Starts a new generation: what was rejected two generations ago is
    /// asked again (the layer's thread rotates every 30 s, so an answer is
    /// remembered for at most a minute).
    pub fn rotate(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

/// A new id for the validator, and what to do once it vouches for it.
pub(crate) struct Lookup {
    pub id: Box<str>,
    pub then: Then,
}

pub(crate) enum Then {
    /// ONLINE: record the session, then answer (the request passes either
    /// way, after the answer).
    Record(oneshot::Sender<()>),
    /// PENDING: ask the storage whether it was live; answer that.
    Admit(oneshot::Sender<bool>),
}

/// Starts the validator's thread; it ends when the layer is dropped.
pub(crate) fn start(
    shared: Weak<dyn Registry>,
    validator: Arc<dyn SessionValidator>,
    lookups: mpsc::Receiver<Lookup>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("manage-vouch".into())
        .spawn(move || run(&shared, validator.as_ref(), &lookups))
        .map(drop)
}

fn run(
    shared: &Weak<dyn Registry>,
    validator: &dyn SessionValidator,
    lookups: &mpsc::Receiver<Lookup>,
) {
    let mut panicked = false;
    while let Ok(Lookup { id, then }) = lookups.recv() {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let then = match then {
            // Vouched for meanwhile (a concurrent request, the login's
            // marker): answer once what is queued before has been written.
            Then::Record(ack) if shared.knows(&id) => {
                shared.acknowledge(ack);
                continue;
            }
            then => then,
        };
        if shared.is_rejected(&id) {
            continue; // dropping `then` answers "no session"
        }
        match catch_unwind(AssertUnwindSafe(|| validator.is_logged_in(&id))) {
            Ok(true) => match then {
                Then::Record(ack) => shared.record(&id, Some(ack)),
                Then::Admit(reply) => {
                    shared.check(SessionKey::of(id.as_bytes()), reply);
                }
            },
            Ok(false) => shared.reject(id),
            Err(_) => {
                if !panicked {
                    shared.log(
                        "the app's session validator panicked; the id counts as no session \
                         (said once; fix the validator passed to MaintenanceLayer::vouch)",
                    );
                    panicked = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rejected_cache_never_holds_more_than_two_generations() {
        let mut r = Rejected::new(3);
        for i in 0..100 {
            r.insert(format!("forged-{i}").into());
            assert!(r.len() <= 6, "{}", r.len());
        }
        assert!(r.contains("forged-99"));
        assert!(
            !r.contains("forged-0"),
            "the oldest generation is forgotten"
        );
        r.rotate();
        r.rotate();
        assert!(!r.contains("forged-99"), "two rotations forget everything");
    }
}
