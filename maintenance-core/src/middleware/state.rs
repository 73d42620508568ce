//! The layer's shared state and its own thread. The thread owns every call
//! to the (synchronous) backend: it refreshes the mode snapshot every
//! `refresh_interval`, writes session touches, and answers "is this session
//! live?" for the hot path, which never reads the disk itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tokio::sync::oneshot;

use super::options::LayerOptions;
use crate::backend::{self, Backend};
use crate::clock::{SystemClock, Timestamp};
use crate::config::Config;
use crate::mode::{Mode, RetryAfter};
use crate::session::SessionKey;

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
    /// The SHA-256 of the bypass secret, if one is set.
    pub(crate) bypass: Option<[u8; 32]>,
}

/// One session this process has seen: when it last wrote it, in seconds
/// since the layer started.
#[derive(Debug)]
pub(crate) struct Seen {
    pub written: AtomicU64,
}

pub(crate) enum Job {
    Touch(SessionKey, Option<oneshot::Sender<()>>),
    End(SessionKey),
    Check(SessionKey, oneshot::Sender<bool>),
}

/// FNV-1a: session ids are short and come from the app's own cookie, so a
/// fast hash beats SipHash on the hot path; flooding the map needs valid
/// sessions the app issued.
#[derive(Default)]
pub(crate) struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

pub(crate) type BuildFnv = std::hash::BuildHasherDefault<Fnv>;

/// Shared by every clone of the layer and its services.
pub(crate) struct Shared {
    pub options: LayerOptions,
    pub snapshot: ArcSwapOption<Snapshot>,
    pub sessions: RwLock<HashMap<Box<str>, Seen, BuildFnv>>,
    pub jobs: Mutex<mpsc::Sender<Job>>,
    pub started: Instant,
    /// Seconds since `started`, kept by the layer's thread at least every
    /// refresh interval: the hot path reads one atomic instead of the
    /// clock (which costs hundreds of nanoseconds in some VMs).
    pub clock: AtomicU64,
    pub session_timeout: Duration,
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
}

/// Starts the shared state and its thread.
pub(crate) fn start(config: &Config, options: LayerOptions) -> Arc<Shared> {
    let (tx, rx) = mpsc::channel();
    let shared = Arc::new(Shared {
        options,
        snapshot: ArcSwapOption::empty(),
        sessions: RwLock::new(HashMap::default()),
        jobs: Mutex::new(tx),
        started: Instant::now(),
        clock: AtomicU64::new(0),
        session_timeout: config.session_timeout,
    });
    let weak = Arc::downgrade(&shared);
    let config = config.clone();
    // The first snapshot is read before the layer serves, when it can be.
    let backend = backend::open(&config, SystemClock::shared()).ok();
    if let Some(b) = &backend {
        refresh(&shared, b.as_ref(), &mut false);
    }
    let spawned = std::thread::Builder::new()
        .name("manage-layer".into())
        .spawn(move || run(weak, rx, config, backend));
    if let Err(e) = spawned {
        eprintln!("manage: cannot start the maintenance layer's thread: {e}");
    }
    shared
}

fn run(
    shared: Weak<Shared>,
    jobs: mpsc::Receiver<Job>,
    config: Config,
    mut backend: Option<Arc<dyn Backend>>,
) {
    let every = config.refresh_interval.max(Duration::from_millis(10));
    let mut next = Instant::now();
    let mut complained = false;
    let mut last_prune = Instant::now();
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        let job = match jobs.recv_timeout(wait) {
            Ok(job) => Some(job),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared
            .clock
            .store(shared.started.elapsed().as_secs(), Ordering::Relaxed);
        if backend.is_none() {
            match backend::open(&config, SystemClock::shared()) {
                Ok(b) => backend = Some(b),
                Err(e) if !complained => {
                    eprintln!("manage: the maintenance layer cannot open the state: {e}");
                    complained = true;
                }
                Err(_) => {}
            }
        }
        if let (Some(job), Some(b)) = (job, &backend) {
            handle(b.as_ref(), job);
        }
        if Instant::now() >= next {
            if let Some(b) = &backend {
                refresh(&shared, b.as_ref(), &mut complained);
            }
            next = Instant::now() + every;
        }
        if last_prune.elapsed() >= Duration::from_secs(30) {
            prune(&shared);
            last_prune = Instant::now();
        }
    }
}

fn handle(backend: &dyn Backend, job: Job) {
    match job {
        Job::Touch(key, ack) => {
            let _ = backend.touch_session(&key);
            if let Some(ack) = ack {
                let _ = ack.send(());
            }
        }
        Job::End(key) => {
            let _ = backend.end_session(&key);
        }
        Job::Check(key, reply) => {
            let live = backend.session(&key).ok().flatten().is_some();
            let _ = reply.send(live);
        }
    }
}

/// Reads the mode into the snapshot; keeps the last one (and says so once)
/// when the state cannot be read.
fn refresh(shared: &Shared, backend: &dyn Backend, complained: &mut bool) {
    match backend.mode() {
        Ok(view) => {
            let bypass = view.record.bypass.as_deref().and_then(parse_hash);
            shared.snapshot.store(Some(Arc::new(Snapshot {
                mode: view.mode,
                since: view.record.since,
                message: view.record.message,
                retry_after: view.record.retry_after,
                bypass,
            })));
            *complained = false;
        }
        Err(e) => {
            if !*complained {
                eprintln!(
                    "manage: the maintenance layer cannot read the mode, keeping its last snapshot: {e}"
                );
                *complained = true;
            }
        }
    }
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Forgets sessions this process has not seen for a whole timeout.
fn prune(shared: &Shared) {
    let now = shared.now_secs();
    let timeout = shared.session_timeout.as_secs();
    let mut sessions = shared.sessions.write().unwrap_or_else(|e| e.into_inner());
    sessions.retain(|_, seen| now.saturating_sub(seen.written.load(Ordering::Relaxed)) < timeout);
}
