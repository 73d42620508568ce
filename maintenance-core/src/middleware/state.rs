//! The layer's shared state and its own thread. The thread owns every call
//! to the (synchronous) backend: it refreshes the mode snapshot every
//! `refresh_interval`, writes session touches, and answers "is this session
//! live?" for the hot path, which never reads the disk itself.
//!
//! A new session is written at once (I2). A known session's repeat touches
//! wait in one batch, written in one call ([`Backend::touch_sessions`]: one
//! statement on PostgreSQL) `touch_every` after the batch's first: a busy
//! layer writes once every few seconds, not once per request. A session
//! is live in storage for its whole timeout after its previous write, so
//! the wait costs it nothing — except a session coming back so near the
//! end of its timeout that its entry could expire before the batch goes:
//! its touch is written at once, as a new session's is ([`lapse_secs`]).
//!
//! Whatever arrives, what the layer writes and remembers is bounded: per
//! refresh interval at most `session_cap` new ids are looked at (counted on
//! the hot path) and at most `session_cap` new entries written (counted
//! here); a vouched session past the cap is held by one overflow entry of
//! this process until later intervals write it (I2: no real user is cut
//! off, and the backend never refuses a touch).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;

use super::known::Known;
use super::local::LocalGate;
use super::options::{LayerOptions, REJECTED_PER_CAP};
use super::snapshot::Snapshot;
use super::vouch::{self, Lookup, Registry, Rejected};
use super::writes::{InFlight, Publisher};
use crate::backend::{self, Backend};
use crate::clock::SystemClock;
use crate::config::{Config, OnStale};
use crate::mode::Mode;
use crate::session::SessionKey;

pub(crate) enum Job {
    /// A new vouched session: written at once (within the cap, else held
    /// by the overflow entry), then acknowledged.
    New(SessionKey, Option<oneshot::Sender<()>>),
    /// A known session's repeat activity: written with the next batch.
    Again(SessionKey),
    /// A known session's activity that the batch could write only after
    /// its stored entry expired: written at once, as a new session's.
    Lapsing(SessionKey),
    End(SessionKey),
    Check(SessionKey, oneshot::Sender<bool>),
    /// Acknowledged once every job queued before it is done.
    Ack(oneshot::Sender<()>),
    /// The last unsafe request in flight ended while published.
    WritesDone,
    /// The backend pushed news of the mode (`push` thread): read it now.
    Pushed,
}

/// Shared by every clone of the layer and its services.
pub(crate) struct Shared {
    pub options: LayerOptions,
    /// The local override, and the shared snapshot beside it.
    pub local: LocalGate,
    /// The mode snapshot and the sessions this process knows, read
    /// without a lock.
    pub sessions: Known,
    pub jobs: Mutex<mpsc::Sender<Job>>,
    pub started: Instant,
    /// Seconds since `started`, kept by the layer's thread at least every
    /// refresh interval: the hot path reads one atomic instead of the
    /// clock (which costs hundreds of nanoseconds in some VMs).
    pub clock: AtomicU64,
    pub session_timeout: Duration,
    pub refresh_interval: Duration,
    /// A repeat touch that comes within this many seconds of the end of
    /// its session's timeout (counted from its last write) is written at
    /// once ([`Job::Lapsing`]): see [`lapse_secs`].
    pub lapse_secs: u64,
    /// Ids the validator rejected (bounded).
    pub rejected: RwLock<Rejected>,
    /// New ids looked at in this refresh interval; the layer's thread
    /// resets it.
    pub lookups: AtomicU64,
    /// The validator's queue (bounded by the cap), when there is one.
    pub vouch: Option<mpsc::SyncSender<Lookup>>,
    /// Unsafe requests in flight (the read-only drain waits for them).
    pub in_flight: InFlight,
    /// Told after each snapshot the thread stores: an unsafe request that
    /// found its snapshot stale waits on it (`readonly.rs`).
    pub refreshed: tokio::sync::Notify,
}

impl Shared {
    /// Seconds since the layer started: the clock of the session cache.
    pub fn now_secs(&self) -> u64 {
        self.clock.load(Ordering::Relaxed)
    }

    pub fn send(&self, job: Job) {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let _ = jobs.send(job);
    }

    /// One log line, to the app's sink.
    pub fn log(&self, line: &str) {
        (self.options.log)(line);
    }

    /// Whether this process knows session `id`.
    pub fn knows(&self, id: &str) -> bool {
        self.sessions.knows(id.as_bytes())
    }

    /// Whether the validator rejected `id` lately.
    pub fn is_rejected(&self, id: &str) -> bool {
        let rejected = self.rejected.read().unwrap_or_else(|e| e.into_inner());
        rejected.contains(id)
    }

    pub fn reject(&self, id: Box<str>) {
        let mut rejected = self.rejected.write().unwrap_or_else(|e| e.into_inner());
        rejected.insert(id);
    }

    /// Takes one look at a new id from this interval's budget; `false`
    /// once the cap is reached (said once per interval).
    pub fn take_lookup(&self) -> bool {
        let cap = u64::from(self.options.session_cap);
        let n = self.lookups.fetch_add(1, Ordering::Relaxed);
        if n == cap {
            self.log(&format!(
                "the maintenance layer looked at {cap} new session ids within one refresh \
                 interval ({:?}), its session cap: until the next interval, more new ids pass \
                 as no session and are turned away while PENDING (a flood of unknown session \
                 cookies? raise the cap with LayerBuilder::session_cap)",
                self.refresh_interval
            ));
        }
        n < cap
    }

    /// Hands `id` to the validator's thread; `false` when there is none or
    /// its queue is full.
    pub fn look_up(&self, id: &str, then: vouch::Then) -> bool {
        self.vouch.as_ref().is_some_and(|q| {
            q.try_send(Lookup {
                id: id.into(),
                then,
            })
            .is_ok()
        })
    }

    /// Notes session `id` as active now; a new one is remembered while the
    /// map has room (else only written, and looked at again next time).
    pub fn remember(&self, id: &str) {
        self.sessions.remember(id.as_bytes(), self.now_secs());
    }

    /// Records a session the app vouched for: remembered, and written at
    /// once by the layer's thread, which then answers `ack`.
    pub fn record(&self, id: &str, ack: Option<oneshot::Sender<()>>) {
        self.remember(id);
        self.send(Job::New(SessionKey::of(id.as_bytes()), ack));
    }

    /// Ends session `id` (a logout).
    pub fn end(&self, id: &str) {
        self.sessions.end(id.as_bytes());
        self.send(Job::End(SessionKey::of(id.as_bytes())));
    }
}

/// The validator's thread reaches the layer's state through this.
impl Registry for Shared {
    fn knows(&self, id: &str) -> bool {
        Shared::knows(self, id)
    }

    fn is_rejected(&self, id: &str) -> bool {
        Shared::is_rejected(self, id)
    }

    fn reject(&self, id: Box<str>) {
        Shared::reject(self, id);
    }

    fn record(&self, id: &str, ack: Option<oneshot::Sender<()>>) {
        Shared::record(self, id, ack);
    }

    fn acknowledge(&self, ack: oneshot::Sender<()>) {
        self.send(Job::Ack(ack));
    }

    fn check(&self, key: SessionKey, reply: oneshot::Sender<bool>) {
        self.send(Job::Check(key, reply));
    }

    fn log(&self, line: &str) {
        Shared::log(self, line);
    }
}

/// How near the end of its timeout a session's repeat touch must be
/// written at once: the batch writes a touch at most `touch_every` after
/// it came (and the thread's wake-up after that), the hot path's seconds
/// lag the thread's clock by up to a refresh interval, and the seconds
/// themselves round down by up to one. A touch sent less than
/// `lapse_secs` before its session's stored entry could expire might land
/// after it, so it goes at once; one sent earlier lands with the batch
/// while the entry still counts, since every backend counts an entry at
/// least the timeout after its write.
pub(crate) fn lapse_secs(touch_every: Duration, refresh_interval: Duration) -> u64 {
    let late = touch_every + refresh_interval;
    late.as_secs() + u64::from(late.subsec_nanos() > 0) + 2
}

/// Starts the shared state and its thread.
pub(crate) fn start(config: &Config, options: LayerOptions) -> Arc<Shared> {
    let (tx, rx) = mpsc::channel();
    let cap = options.session_cap as usize;
    let validator = options.validator.clone();
    let (vouch, lookups) = match validator {
        Some(_) => {
            let (q, lookups) = mpsc::sync_channel(cap);
            (Some(q), Some(lookups))
        }
        None => (None, None),
    };
    let known = Known::new(options.max_known());
    let lapse_secs = lapse_secs(options.touch_every, config.refresh_interval);
    let shared = Arc::new(Shared {
        options,
        local: LocalGate::new(config),
        sessions: known,
        jobs: Mutex::new(tx),
        started: Instant::now(),
        clock: AtomicU64::new(0),
        session_timeout: config.session_timeout,
        refresh_interval: config.refresh_interval,
        lapse_secs,
        rejected: RwLock::new(Rejected::new(cap.saturating_mul(REJECTED_PER_CAP))),
        lookups: AtomicU64::new(0),
        vouch,
        in_flight: InFlight::default(),
        refreshed: tokio::sync::Notify::new(),
    });
    let weak = Arc::downgrade(&shared);
    if let (Some(validator), Some(lookups)) = (validator, lookups)
        && let Err(e) = vouch::start(Weak::clone(&weak) as Weak<dyn Registry>, validator, lookups)
    {
        shared.log(&format!(
            "cannot start the maintenance layer's validator thread, no session counts: {e}"
        ));
    }
    let config = config.clone();
    // The first snapshot is read before the layer serves, when it can be;
    // when it cannot, that is said now, before the first request is turned
    // away (the thread says it only of later failures).
    let backend = match backend::open(&config, SystemClock::shared()) {
        Ok(b) => Some(b),
        Err(e) => {
            shared.log(&format!("the maintenance layer cannot open the state: {e}"));
            None
        }
    };
    let mut outage = Outage::new(&config);
    if let Some(b) = &backend {
        refresh(&shared, b.as_ref(), &mut outage);
        start_push(&weak, b.as_ref());
    }
    shared.local.recheck(&shared.sessions, &|l| shared.log(l));
    let writer = Writer::new(&shared.options, config.session_timeout);
    let spawned = std::thread::Builder::new()
        .name("manage-layer".into())
        .spawn(move || run(weak, rx, config, backend, writer, outage));
    if let Err(e) = spawned {
        shared.log(&format!("cannot start the maintenance layer's thread: {e}"));
    }
    shared
}

fn run(
    shared: Weak<Shared>,
    jobs: mpsc::Receiver<Job>,
    config: Config,
    mut backend: Option<Arc<dyn Backend>>,
    mut writer: Writer,
    mut outage: Outage,
) {
    let every = config.refresh_interval.max(Duration::from_millis(10));
    // `start` read the first snapshot when it could open the state.
    let mut next = match backend {
        Some(_) => Instant::now() + every,
        None => Instant::now(),
    };
    // `start` said why it could not open the state.
    let mut complained = backend.is_none();
    let mut pushed = false;
    let mut last_prune = Instant::now();
    let mut publisher = Publisher::default();
    loop {
        let mut wake = writer.batch_due().map_or(next, |due| due.min(next));
        if let Some(at) = outage.decides_at() {
            wake = wake.min(at);
        }
        let wait = wake.saturating_duration_since(Instant::now());
        let job = match jobs.recv_timeout(wait) {
            Ok(job) => Some(job),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                // The layer is gone: its last touches still count.
                if let Some(b) = &backend {
                    let _ = writer.write_batch(b.as_ref());
                }
                return;
            }
        };
        let Some(shared) = shared.upgrade() else {
            if let Some(b) = &backend {
                let _ = writer.write_batch(b.as_ref());
            }
            return;
        };
        // Stored only when it moves: every request reads this line.
        let now = shared.started.elapsed().as_secs();
        if shared.clock.load(Ordering::Relaxed) != now {
            shared.clock.store(now, Ordering::Relaxed);
        }
        if backend.is_none() {
            match backend::open(&config, SystemClock::shared()) {
                Ok(b) => {
                    start_push(&Arc::downgrade(&shared), b.as_ref());
                    backend = Some(b);
                }
                Err(e) if !complained => {
                    shared.log(&format!("the maintenance layer cannot open the state: {e}"));
                    complained = true;
                }
                Err(_) => {}
            }
        }
        match (job, &backend) {
            (Some(Job::WritesDone), _) => publisher.done(&shared.in_flight),
            (Some(Job::Pushed), _) => pushed = true,
            (Some(job), Some(b)) => writer.handle(&shared, b.as_ref(), job),
            _ => {}
        }
        if let Some(b) = &backend
            && writer.batch_due().is_some_and(|due| Instant::now() >= due)
        {
            writer.batch_now(&shared, b.as_ref());
        }
        if pushed && Instant::now() < next {
            // Pushed news: the mode only, now (the interval's bookkeeping
            // keeps its own time).
            pushed = false;
            if let Some(b) = &backend {
                refresh_and_publish(
                    &shared,
                    b.as_ref(),
                    &mut outage,
                    &mut writer,
                    &mut publisher,
                );
            }
        }
        if Instant::now() >= next {
            pushed = false;
            shared.local.recheck(&shared.sessions, &|l| shared.log(l));
            if let Some(b) = &backend {
                refresh_and_publish(
                    &shared,
                    b.as_ref(),
                    &mut outage,
                    &mut writer,
                    &mut publisher,
                );
                writer.next_interval(b.as_ref());
            }
            shared.lookups.store(0, Ordering::Relaxed);
            shared
                .sessions
                .merge(shared.now_secs(), shared.session_timeout.as_secs());
            next = Instant::now() + every;
        }
        outage.decide(&shared);
        if last_prune.elapsed() >= Duration::from_secs(30) {
            // Forgets sessions this process has not seen for a whole timeout.
            shared
                .sessions
                .replace(shared.now_secs(), shared.session_timeout.as_secs());
            // Expired buckets go even where nobody runs `status`.
            if let Some(b) = &backend {
                let _ = b.prune_sessions();
            }
            shared
                .rejected
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .rotate();
            last_prune = Instant::now();
        }
    }
}

/// The layer thread's writes: new entries within the cap, the overflow
/// entry past it, and the batch of repeat touches.
struct Writer {
    cap: u32,
    /// New entries written in this interval.
    written: u32,
    /// This process's own overflow entry: one session key that holds off
    /// OFFLINE for vouched sessions past the cap until they are written.
    overflow: SessionKey,
    /// The overflow entry is in storage.
    overflow_live: bool,
    /// The overflow entry was touched in this interval.
    overflow_now: bool,
    /// Vouched sessions past the cap, written in later intervals.
    backlog: VecDeque<SessionKey>,
    max_backlog: usize,
    /// The backlog overflowed at this time: the overflow entry is left to
    /// expire as a session does, since it holds some that are not queued.
    backlog_lost: Option<Instant>,
    session_timeout: Duration,
    /// Repeat touches, written together `batch_every` after the first.
    batch: HashSet<SessionKey>,
    /// When the batch's first touch came.
    batch_since: Option<Instant>,
    batch_every: Duration,
    /// The last batch could not be written (said once until one is).
    batch_failed: bool,
    /// New sessions whose first write failed (the state unreachable),
    /// written once it answers; at most [`UNWRITTEN_CAP`].
    unwritten: VecDeque<SessionKey>,
    /// New sessions past [`UNWRITTEN_CAP`] in this outage: not queued.
    unwritten_dropped: u64,
}

/// How many new sessions whose write failed a layer keeps to write once the
/// state answers: about 320 KB of keys.
pub(crate) const UNWRITTEN_CAP: usize = 10_000;

impl Writer {
    fn new(options: &LayerOptions, session_timeout: Duration) -> Self {
        // No cookie can name it: a session id never holds a `/`.
        let id = crate::random::hex::<16>();
        Writer {
            cap: options.session_cap,
            written: 0,
            overflow: SessionKey::of(format!("manage-layer-overflow/{id}").as_bytes()),
            overflow_live: false,
            overflow_now: false,
            backlog: VecDeque::new(),
            max_backlog: options.max_known(),
            backlog_lost: None,
            session_timeout,
            batch: HashSet::new(),
            batch_since: None,
            batch_every: options.touch_every,
            batch_failed: false,
            unwritten: VecDeque::new(),
            unwritten_dropped: 0,
        }
    }

    /// When the batch is to be written; `None` while it is empty.
    fn batch_due(&self) -> Option<Instant> {
        self.batch_since.map(|since| since + self.batch_every)
    }

    /// Writes the batch in one call; on failure keeps it (bounded by the
    /// sessions the layer knows) for the next, and says so once.
    fn batch_now(&mut self, shared: &Shared, backend: &dyn Backend) {
        let n = self.batch.len();
        match self.write_batch(backend) {
            Ok(()) => self.batch_failed = false,
            Err(e) => {
                if !self.batch_failed {
                    shared.log(&format!(
                        "the maintenance layer cannot write {n} sessions' activity, keeping it \
                         for its next batch: {e}"
                    ));
                    self.batch_failed = true;
                }
            }
        }
    }

    /// Writes the batch in one call; on failure keeps it, due again in a
    /// batch interval.
    fn write_batch(&mut self, backend: &dyn Backend) -> crate::error::Result<()> {
        if self.batch.is_empty() {
            self.batch_since = None;
            return Ok(());
        }
        let keys: Vec<SessionKey> = self.batch.drain().collect();
        match backend.touch_sessions(&keys) {
            Ok(()) => {
                self.batch_since = None;
                Ok(())
            }
            Err(e) => {
                self.batch.extend(keys);
                self.batch_since = Some(Instant::now());
                Err(e)
            }
        }
    }

    fn handle(&mut self, shared: &Shared, backend: &dyn Backend, job: Job) {
        match job {
            Job::New(key, ack) => {
                self.batch.remove(&key);
                self.new_session(shared, backend, key);
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
            }
            Job::Again(key) => {
                if self.batch.insert(key) && self.batch_since.is_none() {
                    self.batch_since = Some(Instant::now());
                }
            }
            Job::Lapsing(key) => {
                self.batch.remove(&key);
                self.new_session(shared, backend, key);
            }
            Job::End(key) => {
                self.batch.remove(&key);
                if !self.backlog.is_empty() {
                    self.backlog.retain(|k| *k != key);
                }
                let _ = backend.end_session(&key);
            }
            Job::Check(key, reply) => {
                let live = backend.session(&key).ok().flatten().is_some();
                let _ = reply.send(live);
            }
            Job::Ack(ack) => {
                let _ = ack.send(());
            }
            // The publisher's and the refresh's, handled before the writer
            // sees a job.
            Job::WritesDone | Job::Pushed => {}
        }
    }

    /// Writes a new vouched session, or — past the cap — touches the
    /// overflow entry (once per interval) and queues the session.
    fn new_session(&mut self, shared: &Shared, backend: &dyn Backend, key: SessionKey) {
        if self.written < self.cap {
            if let Err(e) = backend.touch_session(&key) {
                self.unwritten(shared, key, &e);
            }
            self.written += 1;
            return;
        }
        if !self.overflow_now {
            let _ = backend.touch_session(&self.overflow);
            self.overflow_now = true;
            self.overflow_live = true;
            shared.log(&format!(
                "the maintenance layer wrote {} new sessions within one refresh interval ({:?}), \
                 its session cap: more are held off OFFLINE by one overflow entry until later \
                 intervals write them (raise the cap with LayerBuilder::session_cap)",
                self.cap, shared.refresh_interval
            ));
        }
        if self.backlog.len() < self.max_backlog {
            self.backlog.push_back(key);
        } else {
            self.backlog_lost = Some(Instant::now());
        }
    }

    /// Queues `key`, whose write failed with `e`, for when the state
    /// answers; past [`UNWRITTEN_CAP`] counts it as dropped. Each is said
    /// once per outage.
    fn unwritten(&mut self, shared: &Shared, key: SessionKey, e: &crate::error::Error) {
        if self.unwritten.is_empty() && self.unwritten_dropped == 0 {
            shared.log(&format!(
                "the maintenance layer cannot write a new session, and keeps it (with the next \
                 ones, at most {UNWRITTEN_CAP}) in memory to write once the state answers: {e}"
            ));
        }
        if self.unwritten.len() < UNWRITTEN_CAP {
            self.unwritten.push_back(key);
            return;
        }
        self.unwritten_dropped += 1;
        if self.unwritten_dropped == 1 {
            shared.log(&format!(
                "the maintenance layer's queue of unwritten sessions is full ({UNWRITTEN_CAP}): \
                 new sessions past it are not queued (counted; each is written at its next \
                 request after its first a few seconds on)"
            ));
        }
    }

    /// Writes the queued sessions in one call once the mode could be read
    /// again; on failure keeps them for the next read.
    fn flush_unwritten(&mut self, shared: &Shared, backend: &dyn Backend, outage: &Outage) {
        if outage.failing() || (self.unwritten.is_empty() && self.unwritten_dropped == 0) {
            return;
        }
        let keys: Vec<SessionKey> = self.unwritten.iter().cloned().collect();
        if backend.touch_sessions(&keys).is_err() {
            return;
        }
        self.unwritten.clear();
        let dropped = std::mem::take(&mut self.unwritten_dropped);
        shared.log(&format!(
            "the maintenance layer wrote the {} new sessions it let in while the state could not \
             be written{}",
            keys.len(),
            if dropped > 0 {
                format!(", and dropped {dropped} past its queue's bound ({UNWRITTEN_CAP})")
            } else {
                String::new()
            }
        ));
    }

    /// A new interval: the backlog within the cap; the overflow entry ends
    /// once an interval passed without need of it and every session it
    /// held has its own entry.
    fn next_interval(&mut self, backend: &dyn Backend) {
        let quiet = !self.overflow_now;
        self.written = 0;
        self.overflow_now = false;
        while self.written < self.cap
            && let Some(key) = self.backlog.pop_front()
        {
            let _ = backend.touch_session(&key);
            self.written += 1;
        }
        if self
            .backlog_lost
            .is_some_and(|at| at.elapsed() >= self.session_timeout)
        {
            self.backlog_lost = None;
        }
        if quiet && self.overflow_live && self.backlog.is_empty() && self.backlog_lost.is_none() {
            let _ = backend.end_session(&self.overflow);
            self.overflow_live = false;
        }
    }
}

/// A refresh, pushed or periodic: the mode read into the snapshot, the
/// sessions an outage left unwritten written, and the writes in flight
/// published while a read-only drain waits for them.
fn refresh_and_publish(
    shared: &Shared,
    backend: &dyn Backend,
    outage: &mut Outage,
    writer: &mut Writer,
    publisher: &mut Publisher,
) {
    refresh(shared, backend, outage);
    writer.flush_unwritten(shared, backend, outage);
    publisher.after_refresh(
        &shared.in_flight,
        shared
            .sessions
            .snapshot()
            .is_some_and(|s| s.mode == Mode::ReadOnlyPending),
        backend,
        &|line| shared.log(line),
    );
}

/// Reads the mode into the snapshot; keeps the last one (and says so once
/// per outage, [`Outage`]) when the state cannot be read. A schedule that cannot be read is none:
/// the mode is what decides who gets in.
fn refresh(shared: &Shared, backend: &dyn Backend, outage: &mut Outage) {
    // Taken before the read: a drain begun after it is seen by the next
    // read, so this snapshot may admit writes until the settle time of a
    // drain begun just after it has passed (`readonly.rs`).
    let read_at = Instant::now();
    let read_wall = SystemTime::now();
    match backend.mode() {
        Ok(view) => {
            let bypass = view
                .record
                .bypass
                .as_deref()
                .and_then(|h| crate::hex::decode::<32>(h.as_bytes()));
            let now = backend.clock().now();
            let scheduled = backend
                .schedule()
                .ok()
                .flatten()
                .filter(|s| s.in_notice(now))
                .map(Arc::new);
            let writes_refused = view.writes_refused();
            shared.local.publish(
                &shared.sessions,
                Snapshot {
                    mode: view.mode,
                    writes_refused,
                    since: view.record.since,
                    message: view.record.message,
                    retry_after: view.record.retry_after,
                    bypass,
                    scheduled,
                    fresh_until: read_at + shared.refresh_interval * 2,
                    read_began: (read_at, read_wall),
                },
            );
            shared.refreshed.notify_waiters();
            outage.read(shared, read_at);
        }
        Err(e) => outage.failed(shared, &e),
    }
}

/// How long the push thread waits for news before it looks whether the
/// layer is still there.
const PUSH_CHECK: Duration = Duration::from_secs(1);

/// Starts the thread that hears `backend`'s pushed mode changes, if it
/// pushes any ([`Backend::changes`]): each piece of news makes the layer's
/// thread read the mode at once, instead of at its next refresh.
fn start_push(shared: &Weak<Shared>, backend: &dyn Backend) {
    let Some(feed) = backend.changes() else {
        return;
    };
    let weak = Weak::clone(shared);
    let spawned = std::thread::Builder::new()
        .name("manage-layer-push".into())
        .spawn(move || push(weak, feed));
    if let (Err(e), Some(shared)) = (spawned, shared.upgrade()) {
        shared.log(&format!(
            "cannot start the maintenance layer's push thread, the mode is read every \
             refresh interval only: {e}"
        ));
    }
}

/// The push thread: forwards news to the layer's thread; ends once the
/// layer is gone.
fn push(shared: Weak<Shared>, mut feed: Box<dyn crate::backend::ChangeFeed>) {
    loop {
        let news = feed.wait(PUSH_CHECK);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if news {
            shared.send(Job::Pushed);
        }
    }
}

/// An outage of the state, as the layer lives it: since when the mode could
/// not be read, and whether `on_stale` has decided. Each line is said once
/// per outage, not once per attempt.
pub(crate) struct Outage {
    max_stale: Duration,
    on_stale: OnStale,
    /// When the last read that succeeded began.
    read_at: Option<Instant>,
    /// The mode cannot be read now.
    failing: bool,
    /// `on_stale` has decided in this outage.
    decided: bool,
}

impl Outage {
    fn new(config: &Config) -> Outage {
        Outage {
            max_stale: config.max_stale,
            on_stale: config.on_stale,
            read_at: None,
            failing: false,
            decided: false,
        }
    }

    /// A read begun at `at` succeeded.
    fn read(&mut self, shared: &Shared, at: Instant) {
        if self.failing {
            let since = self.read_at.map(|r| r.elapsed()).unwrap_or_default();
            shared.log(&format!(
                "the maintenance layer reads the mode again ({} after its last good read)",
                humantime::format_duration(Duration::from_millis(since.as_millis() as u64))
            ));
        }
        self.read_at = Some(at);
        self.failing = false;
        self.decided = false;
    }

    /// A read failed with `e`.
    fn failed(&mut self, shared: &Shared, e: &crate::error::Error) {
        if !self.failing {
            shared.log(&format!(
                "the maintenance layer cannot read the mode, keeping its last snapshot for at \
                 most {} (max_stale), then {}: {e}",
                humantime::format_duration(self.max_stale),
                match self.on_stale {
                    OnStale::Static => "still answering by it (on_stale = \"static\")",
                    OnStale::Closed => "turning users away as OFFLINE (on_stale = \"closed\")",
                }
            ));
            self.failing = true;
        }
    }

    /// Whether the mode could not be read at the last try.
    fn failing(&self) -> bool {
        self.failing
    }

    /// When `on_stale` is to decide, while the state cannot be read.
    fn decides_at(&self) -> Option<Instant> {
        match (self.failing, self.decided, self.read_at) {
            (true, false, Some(at)) => Some(at + self.max_stale),
            _ => None,
        }
    }

    /// Once the last snapshot is `max_stale` old and the mode still cannot
    /// be read: keeps it (static) or publishes OFFLINE in its place
    /// (closed), until a read succeeds.
    fn decide(&mut self, shared: &Shared) {
        let Some(at) = self.decides_at() else {
            return;
        };
        if Instant::now() < at {
            return;
        }
        self.decided = true;
        let stale = humantime::format_duration(self.max_stale);
        match self.on_stale {
            OnStale::Static => shared.log(&format!(
                "the maintenance layer has not read the mode for {stale} (max_stale): it keeps \
                 answering by its last snapshot (on_stale = \"static\"), unsafe requests \
                 refused, until it reads the mode again"
            )),
            OnStale::Closed => {
                let Some(last) = shared.sessions.snapshot() else {
                    return;
                };
                let mut closed = (*last).clone();
                closed.mode = Mode::Offline;
                closed.writes_refused = true;
                closed.scheduled = None;
                closed.retry_after = None;
                shared.local.publish(&shared.sessions, closed);
                shared.refreshed.notify_waiters();
                shared.log(&format!(
                    "the maintenance layer has not read the mode for {stale} (max_stale): it \
                     turns users away as OFFLINE (on_stale = \"closed\") until it reads the mode \
                     again"
                ));
            }
        }
    }
}
