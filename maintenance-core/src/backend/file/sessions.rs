//! Sessions in the file backend, counted without a `stat` per session: one
//! directory per 5-second bucket of last activity, holding one empty file
//! per session touched in it, named by its key. Liveness is read from the
//! bucket's name alone; a session touched again gets an entry in the newer
//! bucket, and readers keep the newest.
//!
//! A bucket's name says which clock it was counted by:
//!
//! - `<secs>@<boot id>`: seconds since boot of that boot (`CLOCK_BOOTTIME`
//!   on Linux), a clock every process on the host shares and nobody can
//!   step, so a step of one process's wall clock (or everyone's) ages no
//!   session. A bucket of an earlier boot counts until the timeout has
//!   passed on this boot's clock: a reboot cuts nobody off, and the
//!   sessions of before it stop counting at most one timeout after it.
//! - `<secs>`: seconds since the Unix epoch by the wall clock, where the
//!   host has no boot clock to share (macOS), and what format 1 wrote.
//!
//! A session counts until the timeout has passed after the *end* of the
//! bucket of its last touch: never less than the timeout, at most one bucket
//! more. A reader never removes what another process would still count
//! (the middleware's time rule): a bucket goes only once it has been expired
//! for a margin — one bucket by the shared boot clock, where every process
//! agrees; [`WALL_SKEW`] by the wall clock, the skew between two processes'
//! wall clocks tolerated. A process that cannot judge a bucket (a boot
//! clock's bucket, read without one) counts it and never removes it.
//!
//! **Moves.** A writer records a session's newer entry before it removes
//! its older one, so the session always has an entry; readers look at the
//! buckets oldest first, then again for buckets made while they read, so
//! they find a session that moves while they look in one bucket or the
//! other, never in neither. A listing removes an entry that a newer entry
//! of the same session dominates on every process's clock (another
//! process wrote the newer one), so each session keeps one entry.
//!
//! **The summary** (`offline status`'s count, [`Sessions::summary`]) reads
//! one count per bucket instead of listing 100,000 entries. Beside each
//! bucket's directory, `<bucket>.added` grows by one byte before a writer
//! creates an entry, and `<bucket>.removed` by one byte after an entry is
//! removed (or when an entry counted as added was there already): appends
//! (`O_APPEND`), so concurrent writers in many processes never lose one,
//! and a reader takes the count from the two sizes, `.removed` first. A
//! writer that dies between a byte and its entry leaves one too many, never
//! one too few; a session with entries from several processes counts once
//! per entry until the next listing removes the dominated ones. So the
//! summary may over-count — by at most one per writer killed mid-touch, for
//! as long as that bucket lives, plus one per extra process holding an
//! entry, until the next listing — and never under-counts what a listing at
//! the same moment would find. `.added` is created before the directory,
//! so every writer that finds the directory finds its count; a directory
//! without one (made by an older version, or whose count could not be
//! written and was removed) is listed instead. A writer of a version before
//! the summary counts nothing: while one still writes beside this one (a
//! rolling deploy), the summary misses what it adds to a counted bucket.
//! Decisions never rest on the summary: `offline on` counts from listings
//! (I1, I2).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rustix::io::Errno;

use super::dir::{Dir, Modes};
use crate::backend::SessionSummary;
use crate::clock::{BootId, BootTime, Clock, Timestamp};
use crate::error::{Error, Result};
use crate::session::{SessionEntry, SessionKey};

/// The width of a bucket.
pub(super) const BUCKET: Duration = Duration::from_secs(5);

/// How far two processes' wall clocks may disagree before one of them
/// removes what the other still counts: a bucket counted by the wall clock
/// is removed only once it has been expired this long.
pub const WALL_SKEW: Duration = Duration::from_secs(3600);

/// One bucket, as its name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    /// Seconds since boot `boot`, a multiple of [`BUCKET`].
    Boot { boot: BootId, secs: u64 },
    /// Seconds since the Unix epoch by the wall clock.
    Wall { secs: u64 },
}

impl Bucket {
    /// The bucket of activity at `now`.
    fn at(now: &Now) -> Bucket {
        let round = |s: u64| s - s % BUCKET.as_secs();
        match now.boot {
            Some(b) => Bucket::Boot {
                boot: b.boot,
                secs: round(b.since_boot.as_secs()),
            },
            None => Bucket::Wall {
                secs: round(unix_secs(now.wall)),
            },
        }
    }

    /// The bucket a directory name stands for; `None` for anything else.
    fn parse(name: &str) -> Option<Bucket> {
        let digits = |s: &str| -> Option<u64> {
            (!s.is_empty() && s.len() <= 20 && s.bytes().all(|c| c.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        match name.split_once('@') {
            Some((secs, boot)) if boot.len() == 32 => Some(Bucket::Boot {
                boot: BootId::parse(boot)?,
                secs: digits(secs)?,
            }),
            Some(_) => None,
            None => Some(Bucket::Wall {
                secs: digits(name)?,
            }),
        }
    }

    fn name(&self) -> String {
        match self {
            Bucket::Boot { boot, secs } => format!("{secs}@{boot}"),
            Bucket::Wall { secs } => secs.to_string(),
        }
    }
}

/// The two readings of one moment: the wall clock, for what people read,
/// and the boot clock, for what counts.
#[derive(Debug, Clone, Copy)]
pub(super) struct Now {
    wall: SystemTime,
    boot: Option<BootTime>,
    /// When the boot began by the wall clock, to the nearest second: what
    /// turns a boot-clock time into one people read, the same for every
    /// process whose wall clock agrees (the two readings differ by
    /// nanoseconds, the rounding hides that).
    boot_began: SystemTime,
}

impl Now {
    /// Both readings of `clock`, now.
    pub fn of(clock: &dyn Clock) -> Now {
        Now::at(clock.now(), clock.boot_time())
    }

    fn at(wall: SystemTime, boot: Option<BootTime>) -> Now {
        let boot_began = boot.map_or(wall, |b| {
            let began_ms = wall_ms(wall) - ms(b.since_boot);
            shifted(
                SystemTime::UNIX_EPOCH,
                (began_ms + 500).div_euclid(1000) * 1000,
            )
        });
        Now {
            wall,
            boot,
            boot_began,
        }
    }
}

/// How a bucket stands at a moment: how long its sessions still count
/// (zero or less once expired), whether it may be removed (expired for
/// longer than its margin), and when it expires on the wall clock.
#[derive(Debug, Clone, Copy)]
struct Standing {
    remaining_ms: i128,
    removable: bool,
    expires_at: SystemTime,
}

fn ms(d: Duration) -> i128 {
    d.as_millis() as i128
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn wall_ms(t: SystemTime) -> i128 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => ms(d),
        Err(e) => -ms(e.duration()),
    }
}

/// `t` moved by `offset_ms` (either way).
fn shifted(t: SystemTime, offset_ms: i128) -> SystemTime {
    let by = Duration::from_millis(offset_ms.unsigned_abs().min(u64::MAX as u128) as u64);
    if offset_ms >= 0 {
        t.checked_add(by).unwrap_or(t)
    } else {
        t.checked_sub(by).unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// The suffix of a bucket's count of entries added: a file beside the
/// bucket's directory, one byte appended before each entry is created.
const ADDED: &str = ".added";
/// The suffix of a bucket's count of entries removed: one byte appended
/// after each entry is removed.
const REMOVED: &str = ".removed";
/// How many times a reader looks for buckets made while it read.
const LOOKS: usize = 4;

/// The name of bucket `name`'s tally with `suffix`.
fn tally(name: &str, suffix: &str) -> String {
    let mut t = String::with_capacity(name.len() + suffix.len());
    t.push_str(name);
    t.push_str(suffix);
    t
}

fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Io { cause, .. } if cause.kind() == std::io::ErrorKind::NotFound)
}

/// Whether an entry in `newer` dominates one of the same session in `older`
/// on every process's clock: both judged by one clock (one boot's, or the
/// wall clock), so every process orders them alike.
fn same_clock(a: Bucket, b: Bucket) -> bool {
    match (a, b) {
        (Bucket::Boot { boot: x, .. }, Bucket::Boot { boot: y, .. }) => x == y,
        (Bucket::Wall { .. }, Bucket::Wall { .. }) => true,
        _ => false,
    }
}

impl Bucket {
    fn secs(self) -> u64 {
        match self {
            Bucket::Boot { secs, .. } | Bucket::Wall { secs } => secs,
        }
    }
}

/// The bucket this process writes to now, kept open with its tallies.
#[derive(Debug)]
struct Current {
    bucket: Bucket,
    name: String,
    dir: Dir,
    /// Its `.added`; `None` when the bucket is uncounted (readers list it).
    added: Option<File>,
    /// Its `.removed`, opened on first use.
    removed: Option<File>,
}

impl Current {
    /// Counts one entry more, before it is created (or moved in): a writer that dies in
    /// between leaves one too many, never one too few. A count that cannot
    /// be written leaves the bucket uncounted.
    fn add(&mut self, sessions: &Sessions) {
        if let Some(f) = &mut self.added
            && f.write_all(b"+").is_err()
        {
            self.added = None;
            sessions.uncount(&self.name);
        }
    }

    /// Counts one entry less: after one left this bucket, or to take back
    /// an [`add`](Self::add) whose entry was not created (it was there
    /// already, or could not be written). Nothing to count in an uncounted
    /// bucket.
    fn count_removed(&mut self, sessions: &Sessions) {
        if self.added.is_none() {
            return;
        }
        if self.removed.is_none() {
            self.removed = sessions
                .dir
                .open_append(&tally(&self.name, REMOVED), sessions.modes, true)
                .ok()
                .flatten();
        }
        if let Some(f) = &mut self.removed {
            let _ = f.write_all(b"-");
        }
    }
}

/// The buckets this process writes to: the current one, and the one before
/// (where most of the entries it moves come from), kept open.
#[derive(Debug, Default)]
struct Open {
    current: Option<Current>,
    previous: Option<Current>,
}

/// What became of a session's older entry when a touch tried to move it.
enum Moved {
    /// It is the entry in the current bucket now.
    Here,
    /// The current bucket had one already (another process's): the older
    /// one was removed.
    AlreadyHere,
    /// It was gone (a logout, a listing), or cannot be moved here: a new
    /// entry is to be made.
    No,
}

/// A bucket as a reader found it in `sessions/`: its directory and
/// tallies, and how it stands.
#[derive(Debug, Clone)]
struct Found {
    name: String,
    bucket: Bucket,
    standing: Standing,
    /// Its directory is there (tallies may outlive it for a moment).
    dir: bool,
    added: bool,
    removed: bool,
}

impl Found {
    /// The order readers keep: shortest to live first, then by its clock.
    fn age_key(&self) -> (i128, u64) {
        (self.standing.remaining_ms, self.bucket.secs())
    }
}

#[derive(Debug)]
pub(super) struct Sessions {
    dir: Dir,
    modes: Modes,
    timeout: Duration,
    /// The buckets this process touches now, kept open.
    open: Mutex<Open>,
    /// Where this process last wrote each session: a touch in a newer
    /// bucket removes the older entry, so a session active for an hour is
    /// one entry, not 720.
    last: Mutex<HashMap<SessionKey, Bucket>>,
}

/// Keys are SHA-256 prefixes, uniformly spread already: their low bits
/// are the hash.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// A key's 32 lowercase hex digits (as [`SessionKey`] writes them) as a
/// number, if the name is a key.
fn parse_key(name: &[u8]) -> Option<u128> {
    if !crate::hex::is_lower(name) {
        return None;
    }
    crate::hex::decode::<16>(name).map(u128::from_be_bytes)
}

impl Sessions {
    pub fn new(dir: Dir, modes: Modes, timeout: Duration) -> Self {
        Sessions {
            dir,
            modes,
            timeout,
            open: Mutex::new(Open::default()),
            last: Mutex::new(HashMap::new()),
        }
    }

    /// The session timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How `bucket` stands at `now`.
    fn standing(&self, bucket: Bucket, now: &Now) -> Standing {
        let life = ms(BUCKET + self.timeout);
        // When its sessions expire, in milliseconds on the clock that
        // judges it; that clock's reading now; the margin before removal;
        // and where that clock's zero lies on the wall clock.
        let (ends, at, margin, zero) = match (bucket, now.boot) {
            (Bucket::Boot { boot, secs }, Some(b)) if boot == b.boot => (
                i128::from(secs) * 1000 + life,
                ms(b.since_boot),
                BUCKET,
                now.boot_began,
            ),
            // An earlier boot: its sessions were touched before this boot
            // began, so none counts longer than the timeout after it.
            (Bucket::Boot { .. }, Some(b)) => (life, ms(b.since_boot), BUCKET, now.boot_began),
            // No boot clock here to judge it by: it counts, and stays.
            (Bucket::Boot { .. }, None) => {
                return Standing {
                    remaining_ms: ms(self.timeout),
                    removable: false,
                    expires_at: shifted(now.wall, ms(self.timeout)),
                };
            }
            (Bucket::Wall { secs }, _) => (
                i128::from(secs) * 1000 + life,
                wall_ms(now.wall),
                WALL_SKEW,
                SystemTime::UNIX_EPOCH,
            ),
        };
        // A bucket that begins after now (beyond the bucket in progress, or
        // on the wall clock beyond the tolerated skew) was made by no process
        // of ours: planted. It never counts, so it cannot hold off OFFLINE
        // for ever, and it may go.
        let begins = ends - life;
        let ahead = match bucket {
            Bucket::Boot { .. } => ms(BUCKET) + 1000,
            Bucket::Wall { .. } => ms(WALL_SKEW),
        };
        if begins > at + ahead {
            return Standing {
                remaining_ms: -1,
                removable: true,
                expires_at: now.wall,
            };
        }
        let remaining_ms = ends - at;
        Standing {
            remaining_ms,
            removable: remaining_ms < -ms(margin),
            expires_at: shifted(zero, ends),
        }
    }

    /// Opens `bucket` for writing. Its `.added` is created before its
    /// directory, so every writer that finds the directory finds the count
    /// too; a directory without one stays uncounted.
    fn open_current(&self, bucket: Bucket) -> Result<Current> {
        let name = bucket.name();
        let added_name = tally(&name, ADDED);
        let (dir, added) = match self.dir.open_existing_subdir(&name) {
            Ok(dir) => match self.dir.open_append(&added_name, self.modes, false) {
                Ok(added) => (dir, added),
                // Planted, or out of descriptors: listed from now on.
                Err(_) => {
                    self.uncount(&name);
                    (dir, None)
                }
            },
            Err(e) if is_not_found(&e) => {
                let added = self.dir.open_append(&added_name, self.modes, true);
                let dir = self.dir.subdir(&name, self.modes)?;
                match added {
                    Ok(Some(added)) => (dir, Some(added)),
                    _ => {
                        self.uncount(&name);
                        (dir, None)
                    }
                }
            }
            Err(e) => return Err(e),
        };
        Ok(Current {
            bucket,
            name,
            dir,
            added,
            removed: None,
        })
    }

    /// Leaves bucket `name` uncounted: readers list it from now on.
    fn uncount(&self, name: &str) {
        let _ = self.dir.remove(&tally(name, ADDED));
    }

    /// Counts one entry less in bucket `name`, after removing it.
    fn count_removal(&self, name: &str) {
        if let Ok(Some(mut f)) = self
            .dir
            .open_append(&tally(name, REMOVED), self.modes, true)
        {
            let _ = f.write_all(b"-");
        }
    }

    /// Records activity of `key` at `now`: a new entry in the current
    /// bucket, or this process's older entry moved there by one rename (no
    /// new file: a busy ext4 spends most of a file's creation looking for a
    /// free inode), counted as the module says.
    pub fn touch(&self, key: &SessionKey, now: &Now) -> Result<()> {
        let bucket = Bucket::at(now);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        for attempt in 0..2 {
            if attempt == 1 || open.current.as_ref().is_none_or(|c| c.bucket != bucket) {
                let fresh = self.open_current(bucket)?;
                let was = open.current.replace(fresh);
                if attempt == 0 {
                    open.previous = was;
                }
            }
            let Open { current, previous } = &mut *open;
            let c = current.as_mut().expect("set just above");
            let old = self.last_bucket(key);
            // A repeat in this bucket: nothing to write while its entry
            // stands.
            if attempt == 0 && old == Some(bucket) && c.dir.exists(key.as_str()).unwrap_or(false) {
                return Ok(());
            }
            c.add(self);
            if let Some(old) = old.filter(|o| *o != bucket) {
                let from = previous.as_mut().filter(|p| p.bucket == old);
                match self.move_entry(key, old, from, c) {
                    Moved::Here => {
                        self.note(key, bucket);
                        return Ok(());
                    }
                    Moved::AlreadyHere => {
                        c.count_removed(self);
                        self.note(key, bucket);
                        return Ok(());
                    }
                    Moved::No => {}
                }
            }
            match c.dir.create_empty(key.as_str(), self.modes) {
                Ok(created) => {
                    if !created {
                        c.count_removed(self);
                    }
                    self.forget_older(key, bucket);
                    return Ok(());
                }
                // The bucket was removed under us (a writer stalled past
                // its expiry): reopen.
                Err(Errno::NOENT) if attempt == 0 => continue,
                Err(e) => {
                    c.count_removed(self);
                    return Err(Error::io("record session in", c.dir.path(), e.into()));
                }
            }
        }
        Ok(())
    }

    /// Moves `key`'s entry in bucket `old` (open as `from`, when this
    /// process has it open) into the current bucket `to`, whose count
    /// already has it; counts it out of `old` once it has left.
    fn move_entry(
        &self,
        key: &SessionKey,
        old: Bucket,
        from: Option<&mut Current>,
        to: &Current,
    ) -> Moved {
        let opened;
        let dir = match &from {
            Some(c) => &c.dir,
            None => match self.dir.open_existing_subdir(&old.name()) {
                Ok(d) => {
                    opened = d;
                    &opened
                }
                Err(_) => return Moved::No,
            },
        };
        let moved = match dir.move_to(key.as_str(), &to.dir) {
            Ok(()) => Moved::Here,
            Err(Errno::EXIST) if dir.remove(key.as_str()).unwrap_or(false) => Moved::AlreadyHere,
            Err(Errno::EXIST) => return Moved::AlreadyHere,
            Err(_) => return Moved::No,
        };
        match from {
            Some(c) => c.count_removed(self),
            None => self.count_removal(&old.name()),
        }
        moved
    }

    /// The bucket this process last wrote `key` in.
    fn last_bucket(&self, key: &SessionKey) -> Option<Bucket> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.get(key).copied()
    }

    /// Notes that this process's entry of `key` is in `bucket` now;
    /// returns where it was.
    fn note(&self, key: &SessionKey, bucket: Bucket) -> Option<Bucket> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.len() > 1_000_000 {
            last.clear();
        }
        last.insert(key.clone(), bucket)
    }

    /// Removes this process's previous entry of `key`, now that it has a
    /// newer one (best effort: a leftover only counts until it expires, or
    /// until a listing removes it).
    fn forget_older(&self, key: &SessionKey, bucket: Bucket) {
        if let Some(old) = self.note(key, bucket)
            && old != bucket
        {
            let name = old.name();
            if let Ok(d) = self.dir.open_existing_subdir(&name)
                && d.remove(key.as_str()).unwrap_or(false)
            {
                self.count_removal(&name);
            }
        }
    }

    /// Every bucket in `sessions/` (a directory, or tallies it left) with
    /// its standing at `now`, the shortest to live first: the order in
    /// which readers look (see "Moves" above).
    fn scan(&self, now: &Now) -> Result<Vec<Found>> {
        let mut found: HashMap<String, Found> = HashMap::new();
        self.dir.each_name(|n| {
            let Ok(n) = std::str::from_utf8(n) else {
                return;
            };
            let (base, part) = match (n.strip_suffix(ADDED), n.strip_suffix(REMOVED)) {
                (Some(b), _) => (b, 1),
                (_, Some(b)) => (b, 2),
                _ => (n, 0),
            };
            let f = match found.get_mut(base) {
                Some(f) => f,
                None => {
                    let Some(bucket) = Bucket::parse(base) else {
                        return;
                    };
                    found.entry(base.to_owned()).or_insert(Found {
                        name: base.to_owned(),
                        bucket,
                        standing: self.standing(bucket, now),
                        dir: false,
                        added: false,
                        removed: false,
                    })
                }
            };
            match part {
                0 => f.dir = true,
                1 => f.added = true,
                _ => f.removed = true,
            }
        })?;
        let mut found: Vec<Found> = found.into_values().collect();
        found.sort_unstable_by_key(Found::age_key);
        Ok(found)
    }

    /// Calls `f` with every bucket directory, oldest first, then with those
    /// made while it ran, until a look finds none new; and, once, with
    /// tallies whose directory is gone (for removal).
    fn each_bucket(&self, now: &Now, mut f: impl FnMut(&Found) -> Result<()>) -> Result<()> {
        let mut seen: HashSet<String> = HashSet::new();
        for look in 0..LOOKS {
            let mut fresh = false;
            for b in self.scan(now)? {
                if !b.dir {
                    if look == 0 {
                        f(&b)?;
                    }
                    continue;
                }
                if seen.contains(&b.name) {
                    continue;
                }
                fresh = true;
                f(&b)?;
                seen.insert(b.name);
            }
            if !fresh {
                break;
            }
        }
        Ok(())
    }

    /// Whether bucket `b` counts: its directory is there and it has not
    /// expired. One expired for its margin is removed whole on the way
    /// (best effort: a reader that may not write leaves it to the next).
    fn counts(&self, b: &Found) -> bool {
        if b.standing.remaining_ms <= 0 {
            if b.standing.removable {
                let _ = self.remove_bucket(&b.name);
            }
            return false;
        }
        b.dir
    }

    /// Ends `key` (logout): removes its entry from every bucket.
    pub fn end(&self, key: &SessionKey) -> Result<()> {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        for name in self.dir.names()? {
            let Some(name) = name.to_str() else { continue };
            if Bucket::parse(name).is_none() {
                continue;
            }
            if let Ok(d) = self.dir.open_existing_subdir(name)
                && d.remove(key.as_str())?
            {
                self.count_removal(name);
            }
        }
        Ok(())
    }

    /// Whether bucket `name` holds an entry of `key`.
    fn holds(&self, name: &str, key: &SessionKey) -> Result<bool> {
        match self.dir.open_existing_subdir(name) {
            Ok(d) => d.exists(key.as_str()),
            Err(_) => Ok(false),
        }
    }

    /// The live entry of `key`, if any.
    pub fn get(&self, key: &SessionKey, now: &Now) -> Result<Option<SessionEntry>> {
        // Newest first: a session in use is in its newest bucket.
        for b in self.scan(now)?.iter().rev() {
            if b.standing.remaining_ms <= 0 {
                break;
            }
            if b.dir && self.holds(&b.name, key)? {
                return Ok(Some(self.entry(key.clone(), b.standing)));
            }
        }
        // Not there: it may have moved past that look. Look again as every
        // reader does, oldest first, keeping the newest entry found.
        let mut newest: Option<Standing> = None;
        self.each_bucket(now, |b| {
            if b.dir
                && b.standing.remaining_ms > 0
                && newest.is_none_or(|s| b.standing.remaining_ms > s.remaining_ms)
                && self.holds(&b.name, key)?
            {
                newest = Some(b.standing);
            }
            Ok(())
        })?;
        Ok(newest.map(|s| self.entry(key.clone(), s)))
    }

    fn entry(&self, key: SessionKey, standing: Standing) -> SessionEntry {
        let (last_seen, expires_at) = self.times(standing);
        SessionEntry {
            key,
            last_seen,
            expires_at,
        }
    }

    /// A bucket's last activity (its start) and expiry on the wall clock,
    /// for people.
    fn times(&self, standing: Standing) -> (Timestamp, Timestamp) {
        let last_seen = shifted(standing.expires_at, -ms(BUCKET + self.timeout));
        (Timestamp::at(last_seen), Timestamp::at(standing.expires_at))
    }

    /// How many sessions are live at `now`, at least, read from each
    /// bucket's tallies (a bucket without them is listed): never fewer than
    /// [`live`](Self::live) finds at the same moment (see the module's
    /// "summary"). Expired buckets are removed on the way, as `live` does.
    pub fn summary(&self, now: &Now) -> Result<SessionSummary> {
        let mut count = 0_usize;
        let mut newest: Option<Standing> = None;
        self.each_bucket(now, |b| {
            if !self.counts(b) {
                return Ok(());
            }
            let n = self.count_in(b)?;
            if n > 0 {
                count = count.saturating_add(n);
                if newest.is_none_or(|s| b.standing.remaining_ms > s.remaining_ms) {
                    newest = Some(b.standing);
                }
            }
            Ok(())
        })?;
        Ok(SessionSummary {
            count,
            last_expires_at: newest.map(|s| self.times(s).1),
        })
    }

    /// How many entries bucket `b` holds, at least: `.added` less
    /// `.removed`, read in the other order so that a removal seen is never
    /// one whose addition was not; the entries themselves when a tally is
    /// missing or is not a plain file.
    fn count_in(&self, b: &Found) -> Result<usize> {
        use rustix::fs::FileType::RegularFile;
        if b.added {
            let removed = if b.removed {
                self.dir.kind_and_size(&tally(&b.name, REMOVED))
            } else {
                Ok(None)
            };
            let removed = match removed {
                Ok(None) => Some(0),
                Ok(Some((RegularFile, n))) => Some(n),
                _ => None,
            };
            if let Some(removed) = removed
                && let Ok(Some((RegularFile, added))) =
                    self.dir.kind_and_size(&tally(&b.name, ADDED))
            {
                return Ok(usize::try_from(added.saturating_sub(removed)).unwrap_or(usize::MAX));
            }
        }
        let Ok(d) = self.dir.open_existing_subdir(&b.name) else {
            return Ok(0);
        };
        let mut n = 0;
        d.each_name(|name| {
            if parse_key(name).is_some() {
                n += 1;
            }
        })?;
        Ok(n)
    }

    /// Every live session at `now`, most recently active first, each once,
    /// with the times of its newest entry. Buckets expired for their margin
    /// are removed whole on the way, and so are entries a newer entry of
    /// the same session dominates (best effort: a reader that may not
    /// write leaves them to the next one).
    pub fn live(&self, now: &Now) -> Result<Vec<SessionEntry>> {
        struct Listed {
            found: Found,
            keys: Vec<(u128, SessionKey)>,
        }
        let mut listed: Vec<Listed> = Vec::new();
        // Each session's newest bucket so far, by index into `listed`.
        let mut newest: HashMap<u128, usize, BuildHasherDefault<KeyHasher>> = HashMap::default();
        // Entries a newer one of the same session supersedes: (bucket,
        // key, whether the newer dominates it on every clock).
        let mut superseded: Vec<(usize, u128, bool)> = Vec::new();
        self.each_bucket(now, |b| {
            if !self.counts(b) {
                return Ok(());
            }
            let Ok(d) = self.dir.open_existing_subdir(&b.name) else {
                return Ok(());
            };
            let here = listed.len();
            let mut keys = Vec::new();
            d.each_name(|n| {
                let Some(k) = parse_key(n) else { return };
                let Some(key) = std::str::from_utf8(n).ok().and_then(SessionKey::parse) else {
                    return;
                };
                match newest.entry(k) {
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(here);
                    }
                    std::collections::hash_map::Entry::Occupied(mut e) => {
                        let there = &listed[*e.get()].found;
                        let same = same_clock(there.bucket, b.bucket);
                        if there.age_key() > b.age_key() {
                            superseded.push((here, k, same));
                        } else {
                            superseded.push((*e.get(), k, same));
                            e.insert(here);
                        }
                    }
                }
                keys.push((k, key));
            })?;
            listed.push(Listed {
                found: b.clone(),
                keys,
            });
            Ok(())
        })?;
        let skip: HashSet<(usize, u128)> = superseded.iter().map(|&(i, k, _)| (i, k)).collect();
        let mut order: Vec<usize> = (0..listed.len()).collect();
        order.sort_unstable_by_key(|&i| std::cmp::Reverse(listed[i].found.age_key()));
        let mut out = Vec::with_capacity(newest.len());
        for i in order {
            let (last_seen, expires_at) = self.times(listed[i].found.standing);
            for (k, key) in std::mem::take(&mut listed[i].keys) {
                if skip.is_empty() || !skip.contains(&(i, k)) {
                    out.push(SessionEntry {
                        key,
                        last_seen,
                        expires_at,
                    });
                }
            }
        }
        superseded.sort_unstable();
        for (i, k, dominated) in superseded {
            let name = &listed[i].found.name;
            if dominated
                && let Ok(d) = self.dir.open_existing_subdir(name)
                && d.remove(&crate::hex::encode(&k.to_be_bytes()))
                    .unwrap_or(false)
            {
                self.count_removal(name);
            }
        }
        Ok(out)
    }

    /// Removes every bucket expired for its margin, reading only bucket
    /// names (no entry listing); returns how many went.
    pub fn prune(&self, now: &Now) -> Result<usize> {
        let mut removed = 0;
        for b in self.scan(now)? {
            if b.standing.remaining_ms <= 0
                && b.standing.removable
                && self.remove_bucket(&b.name).is_ok()
            {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes bucket `name` whole: its entries, its directory, then its
    /// tallies (never a counted directory without its `.added`).
    fn remove_bucket(&self, name: &str) -> Result<()> {
        match self.dir.open_existing_subdir(name) {
            Ok(d) => {
                for n in d.names()? {
                    if let Some(n) = n.to_str() {
                        d.remove(n)?;
                    }
                }
                self.dir.remove_dir(name)?;
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
        self.dir.remove(&tally(name, ADDED))?;
        self.dir.remove(&tally(name, REMOVED))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;

    /// Session entries in all buckets (the tallies beside them left out).
    fn files(root: &std::path::Path) -> usize {
        std::fs::read_dir(root)
            .unwrap()
            .map(|b| b.unwrap())
            .filter(|b| b.file_type().unwrap().is_dir())
            .map(|b| std::fs::read_dir(b.path()).unwrap().count())
            .sum()
    }

    const BOOT: BootId = BootId::from_bytes([7; 16]);

    fn at(wall: u64, since_boot: Option<u64>) -> Now {
        Now::at(
            SystemTime::UNIX_EPOCH + Duration::from_secs(wall),
            since_boot.map(|s| BootTime {
                boot: BOOT,
                since_boot: Duration::from_secs(s),
            }),
        )
    }

    fn sessions(tmp: &tempfile::TempDir) -> Sessions {
        let dir = Dir::open_root(tmp.path()).unwrap();
        Sessions::new(dir, Modes::for_group(None), Duration::from_secs(900))
    }

    #[test]
    fn a_bucket_from_the_future_is_planted_and_never_counts() {
        let tmp = tempfile::tempdir().unwrap();
        let s = sessions(&tmp);
        s.touch(&SessionKey::of(b"alice"), &at(1_900_000_000, Some(10_000)))
            .unwrap();
        for planted in [
            format!("99999999999999@{BOOT}"),
            format!("20000@{BOOT}"),
            "300000000000".to_owned(),
        ] {
            let d = tmp.path().join(&planted);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join(SessionKey::of(b"mallory").as_str()), "").unwrap();
        }
        let live = s.live(&at(1_900_000_001, Some(10_001))).unwrap();
        assert_eq!(live.len(), 1, "only alice: {live:?}");
        // Shown times stay writable.
        assert!(!live[0].expires_at.to_string().is_empty());
    }

    #[test]
    fn a_session_active_across_buckets_keeps_one_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let s = sessions(&tmp);
        let key = SessionKey::of(b"alice");
        for i in 0..20 {
            s.touch(&key, &at(1_900_000_000 + 6 * i, Some(10_000 + 6 * i)))
                .unwrap();
        }
        assert_eq!(
            files(tmp.path()),
            1,
            "older entries removed by the newer touch"
        );
        let live = s.live(&at(1_900_000_120, Some(10_120))).unwrap();
        assert_eq!(live.len(), 1);
        // Touched last at boot second 10,114, in the bucket from 10,110: that
        // is 10 s before the reading, shown on the reader's wall clock.
        assert_eq!(live[0].last_seen.unix_seconds(), 1_900_000_110);
        assert_eq!(live[0].expires_at.unix_seconds(), 1_900_000_110 + 905);
    }

    #[test]
    fn the_times_shown_are_the_same_for_every_reading_of_one_wall_clock() {
        let tmp = tempfile::tempdir().unwrap();
        let s = sessions(&tmp);
        s.touch(&SessionKey::of(b"alice"), &at(1_900_000_000, Some(500)))
            .unwrap();
        let reading = |wall_ms: u64, boot_ms: u64| {
            let now = Now::at(
                SystemTime::UNIX_EPOCH + Duration::from_millis(wall_ms),
                Some(BootTime {
                    boot: BOOT,
                    since_boot: Duration::from_millis(boot_ms),
                }),
            );
            s.live(&now).unwrap()[0].expires_at
        };
        // Readings taken at different moments, the two clocks read a
        // moment apart either way.
        let first = reading(1_900_000_001_000, 501_000);
        assert_eq!(first.unix_seconds(), 1_900_000_000 + 905);
        assert_eq!(reading(1_900_000_123_456, 623_455), first);
        assert_eq!(reading(1_900_000_123_455, 623_456), first);
    }

    #[test]
    fn bucket_names_round_trip_and_nothing_else_parses() {
        for b in [
            Bucket::Boot {
                boot: BOOT,
                secs: 12_345,
            },
            Bucket::Wall {
                secs: 1_900_000_000,
            },
        ] {
            assert_eq!(Bucket::parse(&b.name()), Some(b));
        }
        for bad in [
            "",
            "12a",
            "-5",
            "+5",
            "5@",
            "@0707070707070707070707070707070707",
            "5@../../../../etc/passwd/../../../..",
            "5@07070707070707070707070707070707@x",
            "99999999999999999999999",
            ".tmp",
        ] {
            assert_eq!(Bucket::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_wall_clock_step_ages_no_session_counted_by_the_boot_clock() {
        let tmp = tempfile::tempdir().unwrap();
        let s = sessions(&tmp);
        s.touch(&SessionKey::of(b"alice"), &at(1_900_000_000, Some(500)))
            .unwrap();
        for wall in [1_900_000_000 + 100_000, 1_900_000_000 - 100_000] {
            assert_eq!(s.live(&at(wall, Some(501))).unwrap().len(), 1);
        }
        assert_eq!(files(tmp.path()), 1, "nothing removed");
        assert!(
            s.live(&at(1_900_000_000, Some(500 + 905)))
                .unwrap()
                .is_empty()
        );
        assert_eq!(files(tmp.path()), 1, "expired, not yet past its margin");
        assert!(
            s.live(&at(1_900_000_000, Some(500 + 910)))
                .unwrap()
                .is_empty()
        );
        assert_eq!(files(tmp.path()), 1, "expired for exactly its margin");
        assert!(
            s.live(&at(1_900_000_000, Some(500 + 911)))
                .unwrap()
                .is_empty()
        );
        assert_eq!(files(tmp.path()), 0, "removed once past its margin");
    }

    #[test]
    fn a_wall_clock_bucket_is_removed_only_past_the_tolerated_skew() {
        let tmp = tempfile::tempdir().unwrap();
        let s = sessions(&tmp);
        s.touch(&SessionKey::of(b"alice"), &at(1_900_000_000, None))
            .unwrap();
        let ahead = |by: u64| at(1_900_000_000 + 905 + by, None);
        assert!(s.live(&ahead(0)).unwrap().is_empty(), "expired");
        assert!(s.live(&ahead(WALL_SKEW.as_secs())).unwrap().is_empty());
        assert_eq!(
            files(tmp.path()),
            1,
            "a skew up to WALL_SKEW removes nothing"
        );
        assert_eq!(s.live(&at(1_900_000_000, None)).unwrap().len(), 1);
        assert!(s.live(&ahead(WALL_SKEW.as_secs() + 1)).unwrap().is_empty());
        assert_eq!(files(tmp.path()), 0);
    }

    #[test]
    fn a_boot_clock_bucket_read_without_a_boot_clock_counts_and_stays() {
        let tmp = tempfile::tempdir().unwrap();
        let s = sessions(&tmp);
        s.touch(&SessionKey::of(b"alice"), &at(1_900_000_000, Some(500)))
            .unwrap();
        assert_eq!(s.live(&at(2_000_000_000, None)).unwrap().len(), 1);
        assert_eq!(files(tmp.path()), 1);
    }

    #[test]
    fn keys_parse_only_from_32_lowercase_hex_digits() {
        assert_eq!(parse_key(b"0000000000000000000000000000000f"), Some(15));
        assert_eq!(parse_key(b"0000000000000000000000000000000F"), None);
        assert_eq!(parse_key(b"../../etc/passwd"), None);
    }

    fn summary(s: &Sessions, now: &Now) -> usize {
        s.summary(now).unwrap().count
    }

    /// Writes `bytes` bytes into the tally `name` of the state at `root`.
    fn bump(root: &std::path::Path, name: &str, bytes: usize) {
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(root.join(name))
            .unwrap()
            .write_all(&vec![b'+'; bytes])
            .unwrap();
    }

    #[test]
    fn a_session_two_processes_recorded_is_counted_twice_until_a_listing_removes_the_older_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (sessions(&tmp), sessions(&tmp));
        let key = SessionKey::of(b"alice");
        a.touch(&key, &at(1_900_000_000, Some(10_000))).unwrap();
        b.touch(&key, &at(1_900_000_006, Some(10_006))).unwrap();
        let now = at(1_900_000_007, Some(10_007));
        assert_eq!(summary(&a, &now), 2, "one entry each, both counted");
        assert_eq!(files(tmp.path()), 2);
        assert_eq!(a.live(&now).unwrap().len(), 1);
        assert_eq!(files(tmp.path()), 1, "the listing removed the older entry");
        assert_eq!(summary(&a, &now), 1, "and put the summary right");
        b.end(&key).unwrap();
        assert_eq!(summary(&a, &now), 0);
    }

    #[test]
    fn expired_and_future_buckets_never_count_in_the_summary_and_go_with_their_tallies() {
        let tmp = tempfile::tempdir().unwrap();
        let s = sessions(&tmp);
        s.touch(&SessionKey::of(b"old"), &at(1_900_000_000, Some(10_000)))
            .unwrap();
        s.touch(&SessionKey::of(b"new"), &at(1_900_000_500, Some(10_500)))
            .unwrap();
        // A planted bucket from the future, with a count of a thousand.
        let planted = format!("99999999@{BOOT}");
        std::fs::create_dir(tmp.path().join(&planted)).unwrap();
        bump(tmp.path(), &format!("{planted}.added"), 1000);
        assert_eq!(summary(&s, &at(1_900_000_501, Some(10_501))), 2);
        // `old` expired 905 s after its bucket began, `new` not.
        let later = at(1_900_000_906, Some(10_906));
        let counted = s.summary(&later).unwrap();
        assert_eq!(counted.count, 1);
        let live = s.live(&later).unwrap();
        assert_eq!(counted.last_expires_at, Some(live[0].expires_at));
        let names = |p: &std::path::Path| -> Vec<String> {
            let mut n: Vec<String> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            n.sort();
            n
        };
        // Past its margin, the expired bucket went whole, tallies and all,
        // and so did the planted one.
        assert_eq!(summary(&s, &at(1_900_000_911, Some(10_911))), 1);
        assert_eq!(
            names(tmp.path()),
            [format!("10500@{BOOT}"), format!("10500@{BOOT}.added")]
        );
    }

    #[test]
    fn a_bucket_without_a_plain_count_is_listed_and_nothing_outside_is_touched() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("sessions");
        std::fs::create_dir(&root).unwrap();
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, "+".repeat(1000)).unwrap();
        let s = Sessions::new(
            Dir::open_root(&root).unwrap(),
            Modes::for_group(None),
            Duration::from_secs(900),
        );
        // A bucket an older writer made (no count at all), one whose count
        // is a link to a file outside, one whose count is a FIFO nobody
        // reads, and one whose count is a directory.
        let bucket = |secs: u64| format!("{secs}@{BOOT}");
        std::fs::create_dir(root.join(bucket(10_000))).unwrap();
        std::os::unix::fs::symlink(&outside, root.join(format!("{}.added", bucket(10_005))))
            .unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            root.join(format!("{}.added", bucket(10_010))),
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        std::fs::create_dir(root.join(format!("{}.added", bucket(10_015)))).unwrap();
        let mut n = 0;
        for secs in [10_000, 10_005, 10_010, 10_015] {
            for i in 0..3 {
                n += 1;
                s.touch(
                    &SessionKey::of(format!("user-{n}").as_bytes()),
                    &at(1_900_000_000 + secs, Some(secs + i)),
                )
                .unwrap();
            }
        }
        let now = at(1_900_010_020, Some(10_020));
        assert_eq!(summary(&s, &now), 12, "each bucket listed");
        assert_eq!(s.live(&now).unwrap().len(), 12);
        assert_eq!(
            std::fs::read(&outside).unwrap(),
            "+".repeat(1000).as_bytes()
        );
    }

    /// The environment variable that makes [`session_writer_process`] a
    /// writer: `<state dir>\t<writer>\t<boot-clock start, ns>`.
    const WRITER: &str = "MANAGE_TEST_SESSION_WRITER";
    /// How many times faster than the real boot clock the writers' and the
    /// reader's clocks run: buckets change every 100 ms.
    const SPEED: u32 = 50;
    const OWN: usize = 10;
    const SHARED: usize = 4;

    /// The real boot clock.
    fn real_since_boot() -> Duration {
        crate::clock::SystemClock
            .boot_time()
            .expect("a boot clock (Linux)")
            .since_boot
    }

    /// Moves `clock` to where a boot clock started at `start` and running
    /// [`SPEED`] times faster stands now (plus `lead`): the same reading in
    /// every process at the same moment.
    fn follow(clock: &crate::clock::ManualClock, start: Duration, lead: Duration) {
        let target = start + (real_since_boot() - start) * SPEED + lead;
        let now = clock.boot_time().expect("a boot clock").since_boot;
        if target > now {
            clock.advance(target - now);
        }
    }

    fn own_key(w: usize, i: usize) -> SessionKey {
        SessionKey::of(format!("user-{w}-{i}").as_bytes())
    }

    fn shared_key(i: usize) -> SessionKey {
        SessionKey::of(format!("shared-{i}").as_bytes())
    }

    /// A writer process of
    /// [`the_summary_never_undercounts_writers_in_other_processes_killed_at_any_moment`]:
    /// that test runs this test binary with this test alone and [`WRITER`]
    /// set. Touches its own sessions and the shared ones over and over, and
    /// logs in and out one more each round, until `stop` appears beside
    /// the state.
    #[test]
    #[ignore = "a child process of another test; does nothing alone"]
    fn session_writer_process() {
        let Ok(spec) = std::env::var(WRITER) else {
            return;
        };
        #[cfg(target_os = "linux")]
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
            .unwrap();
        let parts: Vec<&str> = spec.split('\t').collect();
        let state = std::path::Path::new(parts[0]);
        let w: usize = parts[1].parse().unwrap();
        let start = Duration::from_nanos(parts[2].parse().unwrap());
        let clock = crate::clock::ManualClock::starting_now();
        let b = crate::backend::FileBackend::open(
            &crate::config::Config::with_state_dir(state),
            clock.clone(),
        )
        .unwrap();
        let stop = state.with_file_name("stop");
        for round in 0.. {
            if stop.exists() {
                return;
            }
            follow(&clock, start, Duration::ZERO);
            for i in 0..OWN {
                b.touch_session(&own_key(w, i)).unwrap();
            }
            for i in 0..SHARED {
                b.touch_session(&shared_key(i)).unwrap();
            }
            let churn =
                SessionKey::of(format!("churn-{w}-{}-{round}", std::process::id()).as_bytes());
            b.touch_session(&churn).unwrap();
            b.end_session(&churn).unwrap();
        }
    }

    #[test]
    fn the_summary_never_undercounts_writers_in_other_processes_killed_at_any_moment() {
        use std::process::{Child, Command, Stdio};
        const WRITERS: usize = 3;
        const READS: usize = 300;
        const KILL_EVERY: usize = 20;
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let start = real_since_boot();
        let spawn = |w: usize| -> Child {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "backend::file::sessions::tests::session_writer_process",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(
                    WRITER,
                    format!("{}\t{w}\t{}", state.display(), start.as_nanos()),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        };
        struct Writers(Vec<Child>);
        impl Drop for Writers {
            fn drop(&mut self) {
                for c in &mut self.0 {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
        let config = crate::config::Config::with_state_dir(&state);
        let clock = crate::clock::ManualClock::starting_now();
        let reader = crate::backend::FileBackend::open(&config, clock.clone()).unwrap();
        let mut writers = Writers((0..WRITERS).map(spawn).collect());
        let mut stable: Vec<SessionKey> = (0..SHARED).map(shared_key).collect();
        for w in 0..WRITERS {
            stable.extend((0..OWN).map(|i| own_key(w, i)));
        }
        // Readers judge by a clock a little ahead of the writers', so that
        // a bucket a writer opens while a read is under way is never from
        // the reader's future (3 s of real time; the sessions stay live
        // for 15 s of it without a touch).
        let lead = Duration::from_secs(150);
        let listed_once = |listed: &[SessionEntry]| -> Vec<SessionKey> {
            stable
                .iter()
                .filter(|k| listed.iter().filter(|e| &e.key == *k).count() != 1)
                .cloned()
                .collect()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            follow(&clock, start, lead);
            if listed_once(&reader.sessions().unwrap()).is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the writers never recorded every session"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut kills = 0;
        let mut rng = crate::random::bytes::<8>()[0] as usize;
        for read in 0..READS {
            follow(&clock, start, lead);
            let summary = reader.session_summary().unwrap();
            assert!(
                summary.count >= stable.len(),
                "read {read}: the summary counts {} of {} live sessions",
                summary.count,
                stable.len()
            );
            let missed = listed_once(&reader.sessions().unwrap());
            assert!(
                missed.is_empty(),
                "read {read}: listed other than once: {missed:?}"
            );
            if read % KILL_EVERY == KILL_EVERY - 1 {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let w = (rng >> 33) % WRITERS;
                writers.0[w].kill().unwrap();
                writers.0[w].wait().unwrap();
                kills += 1;
                writers.0[w] = spawn(w);
            }
        }
        std::fs::write(tmp.path().join("stop"), "").unwrap();
        for c in &mut writers.0 {
            assert!(c.wait().unwrap().success());
        }
        follow(&clock, start, lead);
        let listed = reader.sessions().unwrap();
        assert!(listed_once(&listed).is_empty());
        let summary = reader.session_summary().unwrap();
        // What killed writers left: one churn session each at most, and one
        // count too many each at most (a count written, its entry not yet;
        // an entry removed, its count not yet).
        assert!(
            listed.len() <= stable.len() + kills,
            "{} listed",
            listed.len()
        );
        assert!(
            summary.count >= listed.len() && summary.count <= listed.len() + kills,
            "the summary counts {} after {kills} kills, the listing {}",
            summary.count,
            listed.len()
        );
    }
}
