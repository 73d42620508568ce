//! What every request reads, in one lock-free load: the mode snapshot and
//! the sessions this process has seen ([`View`], behind an `ArcSwap`,
//! replaced whole by the layer's thread), and a small map of the sessions
//! remembered since, under a mutex that only a request for a session
//! missing from the view takes.
//!
//! Each entry's `Seen` is shared by every map that holds it, so a touch or
//! a logout is never lost to a replacement. A session remembered is found
//! at once (in the small map until the layer's thread moves it), and a
//! logout is seen at once (the entry is marked ended, and dropped at the
//! next replacement): what lets a session through while PENDING (I2) is
//! never stale.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};

use super::snapshot::Snapshot;

/// A hash for short ids, eight bytes at a time (the multiply-and-rotate
/// of rustc's FxHash): a session id costs a few instructions, not the
/// dozens a keyed hash does, on every request. Only sessions the app
/// vouched for enter the map, so flooding it takes valid sessions the app
/// issued, and their number is bounded.
#[derive(Default)]
struct IdHash(u64);

impl IdHash {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::Hasher for IdHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            let mut word = [0; 8];
            word[..tail.len()].copy_from_slice(tail);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

type BuildIdHash = std::hash::BuildHasherDefault<IdHash>;

/// `Seen::written` of a session that ended (a logout).
const ENDED: u64 = u64::MAX;

/// One session this process has seen: when it last wrote it, in seconds
/// since the layer started (`ENDED` after a logout).
#[derive(Debug)]
pub(crate) struct Seen {
    written: AtomicU64,
}

impl Seen {
    fn at(now: u64) -> Self {
        Seen {
            written: AtomicU64::new(now),
        }
    }

    /// When it was last written; `None` once it ended.
    pub fn written(&self) -> Option<u64> {
        Some(self.written.load(Ordering::Relaxed)).filter(|&w| w != ENDED)
    }

    /// Moves `written` from `last` to `now`; `false` when another request
    /// (or a logout) changed it first.
    pub fn rewrite(&self, last: u64, now: u64) -> bool {
        self.written
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// Keyed by the raw id's bytes, as the cookie holds them.
type Map = HashMap<Arc<[u8]>, Arc<Seen>, BuildIdHash>;

/// How often, at least, the sessions remembered since the last replacement
/// join the lock-free map (sooner once they are many).
const MERGE_EVERY: Duration = Duration::from_secs(2);

/// What a request reads: the mode, and the sessions known when the view
/// was published.
pub(crate) struct View {
    /// The mode snapshot, once the state was read.
    pub snapshot: Option<Arc<Snapshot>>,
    sessions: Arc<Map>,
}

/// The mode snapshot and the sessions this process knows, bounded by `max`
/// sessions.
pub(crate) struct Known {
    /// Read without a lock; replaced under `writer`.
    published: ArcSwap<View>,
    /// Remembered since the view's sessions were last replaced. A key is
    /// in one map or the other, except while the layer's thread moves it
    /// (then both hold the same `Seen`).
    recent: Mutex<Map>,
    /// `recent.len()`, so that a lookup that misses the view takes the
    /// mutex only while `recent` holds anything.
    recent_len: AtomicUsize,
    /// A logout marked an entry of the view's sessions ended.
    ended: AtomicBool,
    max: usize,
    /// Held to publish a view; when `recent` last joined it.
    writer: Mutex<Instant>,
}

/// What tests see of the sessions known now: how many are live.
#[cfg(test)]
pub(crate) struct Count(usize);

#[cfg(test)]
impl Count {
    pub fn len(&self) -> usize {
        self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
}

impl Known {
    pub fn new(max: usize) -> Self {
        Known {
            published: ArcSwap::from_pointee(View {
                snapshot: None,
                sessions: Arc::default(),
            }),
            recent: Mutex::new(Map::default()),
            recent_len: AtomicUsize::new(0),
            ended: AtomicBool::new(false),
            max,
            writer: Mutex::new(Instant::now()),
        }
    }

    /// The view, for one request: one lock-free load.
    pub fn view(&self) -> Guard<Arc<View>> {
        self.published.load()
    }

    /// The current mode snapshot.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.published.load().snapshot.clone()
    }

    /// Publishes a new mode snapshot (the layer's refresh).
    pub fn set_snapshot(&self, snapshot: Snapshot) {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let sessions = Arc::clone(&self.published.load().sessions);
        self.published.store(Arc::new(View {
            snapshot: Some(Arc::new(snapshot)),
            sessions,
        }));
    }

    /// Takes the snapshot back (a local override taken back before the
    /// state was ever read): the layer answers as it does without state.
    pub fn clear_snapshot(&self) {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let sessions = Arc::clone(&self.published.load().sessions);
        self.published.store(Arc::new(View {
            snapshot: None,
            sessions,
        }));
    }

    fn recent(&self) -> MutexGuard<'_, Map> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls `f` with session `id`'s entry, if this process has one (ended
    /// or not), looked up first in `view` (the request's): one lookup,
    /// unless the session was remembered since the view was published.
    pub fn with<R>(&self, view: &View, id: &[u8], f: impl FnOnce(&Seen) -> R) -> Option<R> {
        if let Some(seen) = view.sessions.get(id) {
            return Some(f(seen));
        }
        // A replacement stores the view before it empties `recent`: a zero
        // here means a reload sees every session it moved.
        if self.recent_len.load(Ordering::Acquire) == 0 {
            return self.published.load().sessions.get(id).map(|seen| f(seen));
        }
        let seen = self.find_locked(&self.recent(), id)?;
        Some(f(&seen))
    }

    /// Session `id`'s entry, `recent` held: in `recent`, or — moved there
    /// meanwhile by a replacement, which stores `published` before it
    /// takes the lock — in `published`.
    fn find_locked(&self, recent: &Map, id: &[u8]) -> Option<Arc<Seen>> {
        match recent.get(id) {
            Some(seen) => Some(Arc::clone(seen)),
            None => self.published.load().sessions.get(id).cloned(),
        }
    }

    /// Whether session `id` is known and has not ended.
    pub fn knows(&self, id: &[u8]) -> bool {
        self.with(&self.view(), id, |seen| seen.written().is_some()) == Some(true)
    }

    /// Notes session `id` as written `now`; a new one is remembered while
    /// there is room (else the caller writes it only, and it is looked at
    /// again next time).
    pub fn remember(&self, id: &[u8], now: u64) {
        if let Some(seen) = self.published.load().sessions.get(id) {
            seen.written.store(now, Ordering::Relaxed);
            return;
        }
        let mut recent = self.recent();
        if let Some(seen) = self.find_locked(&recent, id) {
            seen.written.store(now, Ordering::Relaxed);
            return;
        }
        if self.published.load().sessions.len() + recent.len() >= self.max {
            return;
        }
        recent.insert(id.into(), Arc::new(Seen::at(now)));
        self.recent_len.store(recent.len(), Ordering::Release);
    }

    /// Session `id` ended (a logout): it is no longer known, at once.
    pub fn end(&self, id: &[u8]) {
        let seen = match self.published.load().sessions.get(id) {
            Some(seen) => Arc::clone(seen),
            None => match self.find_locked(&self.recent(), id) {
                Some(seen) => seen,
                None => return,
            },
        };
        seen.written.store(ENDED, Ordering::Relaxed);
        self.ended.store(true, Ordering::Relaxed);
    }

    /// The layer's thread, once per refresh interval: moves the sessions
    /// remembered since into the lock-free map — when they are many
    /// (an eighth of it), or every `MERGE_EVERY` — and drops the ended.
    pub fn merge(&self, now: u64, timeout: u64) {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let recent = self.recent_len.load(Ordering::Acquire);
        let published = self.published.load().sessions.len();
        let due = recent > 0 && (recent * 8 >= published || writer.elapsed() >= MERGE_EVERY);
        if due || self.ended.load(Ordering::Relaxed) {
            self.replace_locked(now, timeout);
            *writer = Instant::now();
        }
    }

    /// The layer's thread: replaces the lock-free map with one that holds
    /// every live session of both maps, without the ended and those not
    /// written for a whole `timeout`; then empties `recent` of what moved.
    pub fn replace(&self, now: u64, timeout: u64) {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.replace_locked(now, timeout);
        *writer = Instant::now();
    }

    /// [`replace`](Self::replace), `writer` held.
    fn replace_locked(&self, now: u64, timeout: u64) {
        self.ended.store(false, Ordering::Relaxed);
        let moving: Vec<(Arc<[u8]>, Arc<Seen>)> = self
            .recent()
            .iter()
            .map(|(k, v)| (Arc::clone(k), Arc::clone(v)))
            .collect();
        let live = |seen: &Seen| {
            seen.written()
                .is_some_and(|w| now.saturating_sub(w) < timeout)
        };
        let old = self.published.load_full();
        let mut map = Map::with_capacity_and_hasher(
            old.sessions.len() + moving.len(),
            BuildIdHash::default(),
        );
        for (k, v) in old
            .sessions
            .iter()
            .chain(moving.iter().map(|(k, v)| (k, v)))
        {
            if live(v) {
                map.insert(Arc::clone(k), Arc::clone(v));
            }
        }
        self.published.store(Arc::new(View {
            snapshot: old.snapshot.clone(),
            sessions: Arc::new(map),
        }));
        let mut recent = self.recent();
        for (k, v) in &moving {
            if recent.get(k).is_some_and(|now| Arc::ptr_eq(now, v)) {
                recent.remove(k);
            }
        }
        self.recent_len.store(recent.len(), Ordering::Release);
    }

    /// How many live sessions are known (tests: the bound, and that
    /// nothing was remembered).
    #[cfg(test)]
    pub fn read(&self) -> Result<Count, std::convert::Infallible> {
        let recent = self.recent();
        let published = self.published.load();
        let live = published
            .sessions
            .values()
            .chain(recent.values())
            .filter(|seen| seen.written().is_some())
            .count();
        Ok(Count(live))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_session_is_known_before_and_after_it_moves() {
        let known = Known::new(10);
        known.remember(b"alice", 1);
        assert!(known.knows(b"alice"));
        known.replace(2, 900);
        assert!(known.knows(b"alice"));
        assert_eq!(known.recent_len.load(Ordering::Relaxed), 0);
        assert_eq!(
            known.with(&known.view(), b"alice", Seen::written),
            Some(Some(1))
        );
    }

    #[test]
    fn a_logout_is_seen_at_once_and_a_new_login_revives_the_session() {
        let known = Known::new(10);
        known.remember(b"bob", 1);
        known.replace(1, 900);
        known.end(b"bob");
        assert!(!known.knows(b"bob"), "ended in the lock-free map");
        known.remember(b"bob", 3);
        assert!(known.knows(b"bob"), "logged in again");
        known.end(b"bob");
        known.merge(4, 900);
        assert_eq!(known.read().unwrap().len(), 0);
        assert!(
            known.with(&known.view(), b"bob", |_| ()).is_none(),
            "dropped"
        );
    }

    #[test]
    fn sessions_not_written_for_a_whole_timeout_are_dropped() {
        let known = Known::new(10);
        known.remember(b"old", 1);
        known.remember(b"new", 9);
        known.replace(11, 10);
        assert!(!known.knows(b"old"));
        assert!(known.knows(b"new"));
    }

    #[test]
    fn the_bound_counts_both_maps() {
        let known = Known::new(3);
        known.remember(b"a", 1);
        known.remember(b"b", 1);
        known.replace(1, 900);
        known.remember(b"c", 1);
        known.remember(b"d", 1);
        assert!(known.knows(b"c"));
        assert!(!known.knows(b"d"), "past the bound");
        assert_eq!(known.read().unwrap().len(), 3);
    }

    #[test]
    fn a_new_snapshot_keeps_the_sessions_and_a_new_map_keeps_the_snapshot() {
        use crate::clock::Timestamp;
        use crate::mode::Mode;
        let known = Known::new(10);
        known.remember(b"carol", 1);
        known.replace(1, 900);
        known.set_snapshot(Snapshot {
            mode: Mode::Pending,
            since: Timestamp::at(std::time::SystemTime::UNIX_EPOCH),
            message: Some("soon".into()),
            retry_after: None,
            writes_refused: false,
            bypass: None,
            scheduled: None,
            fresh_until: std::time::Instant::now(),
            read_began: (std::time::Instant::now(), std::time::SystemTime::now()),
        });
        assert!(known.view().sessions.contains_key(&b"carol"[..]));
        known.remember(b"dave", 2);
        known.replace(2, 900);
        let view = known.view();
        assert_eq!(view.snapshot.as_ref().map(|s| s.mode), Some(Mode::Pending));
        assert!(view.sessions.contains_key(&b"dave"[..]));
    }

    /// Readers never miss a session remembered before they looked, however
    /// the layer's thread moves sessions between the maps meanwhile.
    #[test]
    fn no_lookup_misses_a_remembered_session_while_the_maps_are_replaced() {
        let known = Arc::new(Known::new(100_000));
        let done = Arc::new(AtomicBool::new(false));
        let mover = {
            let (known, done) = (Arc::clone(&known), Arc::clone(&done));
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    known.replace(0, u64::MAX);
                }
            })
        };
        for i in 0..4_000 {
            let id = format!("user{i}");
            known.remember(id.as_bytes(), 0);
            assert!(
                known.knows(id.as_bytes()),
                "{id} missed right after it was remembered"
            );
            let earlier = format!("user{}", i / 2);
            assert!(known.knows(earlier.as_bytes()), "{earlier} missed");
        }
        done.store(true, Ordering::Relaxed);
        mover.join().unwrap();
        assert_eq!(known.read().unwrap().len(), 4_000);
    }
}
