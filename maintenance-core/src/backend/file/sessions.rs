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

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rustix::io::Errno;

use super::dir::{Dir, Modes};
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

#[derive(Debug)]
pub(super) struct Sessions {
    dir: Dir,
    modes: Modes,
    timeout: Duration,
    /// The bucket last touched by this process, kept open.
    current: Mutex<Option<(Bucket, Dir)>>,
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
            current: Mutex::new(None),
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

    /// Records activity of `key` at `now`.
    pub fn touch(&self, key: &SessionKey, now: &Now) -> Result<()> {
        let bucket = Bucket::at(now);
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        for attempt in 0..2 {
            if current.as_ref().is_none_or(|(b, _)| *b != bucket) || attempt == 1 {
                *current = Some((bucket, self.dir.subdir(&bucket.name(), self.modes)?));
            }
            let (_, dir) = current.as_ref().expect("set just above");
            match dir.create_empty(key.as_str(), self.modes) {
                Ok(()) => {
                    self.forget_older(key, bucket);
                    return Ok(());
                }
                // The bucket was removed under us (a writer stalled past
                // its expiry): reopen.
                Err(Errno::NOENT) if attempt == 0 => continue,
                Err(e) => return Err(Error::io("record session in", dir.path(), e.into())),
            }
        }
        Ok(())
    }

    /// Removes this process's previous entry of `key`, now that it has a
    /// newer one (best effort: a leftover only counts until it expires).
    fn forget_older(&self, key: &SessionKey, bucket: Bucket) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.len() > 1_000_000 {
            last.clear();
        }
        match last.insert(key.clone(), bucket) {
            Some(old) if old != bucket => {
                if let Ok(d) = self.dir.open_existing_subdir(&old.name()) {
                    let _ = d.remove(key.as_str());
                }
            }
            _ => {}
        }
    }

    /// Every bucket with its name and standing at `now`, the longest to
    /// live first.
    fn buckets(&self, now: &Now) -> Result<Vec<(String, Standing)>> {
        let mut b: Vec<(String, Standing)> = self
            .dir
            .names()?
            .into_iter()
            .filter_map(|n| {
                let name = n.into_string().ok()?;
                let standing = self.standing(Bucket::parse(&name)?, now);
                Some((name, standing))
            })
            .collect();
        b.sort_unstable_by_key(|x| std::cmp::Reverse(x.1.remaining_ms));
        Ok(b)
    }

    /// Ends `key` (logout): removes its entry from every bucket.
    pub fn end(&self, key: &SessionKey) -> Result<()> {
        for name in self.dir.names()? {
            let Some(name) = name.to_str() else { continue };
            if Bucket::parse(name).is_none() {
                continue;
            }
            if let Ok(d) = self.dir.open_existing_subdir(name) {
                d.remove(key.as_str())?;
            }
        }
        Ok(())
    }

    /// The live entry of `key`, if any.
    pub fn get(&self, key: &SessionKey, now: &Now) -> Result<Option<SessionEntry>> {
        for (name, standing) in self.buckets(now)? {
            if standing.remaining_ms <= 0 {
                break;
            }
            let Ok(d) = self.dir.open_existing_subdir(&name) else {
                continue;
            };
            if d.exists(key.as_str())? {
                let (last_seen, expires_at) = self.times(standing);
                return Ok(Some(SessionEntry {
                    key: key.clone(),
                    last_seen,
                    expires_at,
                }));
            }
        }
        Ok(None)
    }

    /// A bucket's last activity (its start) and expiry on the wall clock,
    /// for people.
    fn times(&self, standing: Standing) -> (Timestamp, Timestamp) {
        let last_seen = shifted(standing.expires_at, -ms(BUCKET + self.timeout));
        (Timestamp::at(last_seen), Timestamp::at(standing.expires_at))
    }

    /// Every live session at `now`, most recently active first. Buckets
    /// expired for their margin are removed whole on the way (best effort:
    /// a reader that may not write leaves them to the next one).
    pub fn live(&self, now: &Now) -> Result<Vec<SessionEntry>> {
        let mut seen: HashSet<u128, BuildHasherDefault<KeyHasher>> = HashSet::default();
        let mut out = Vec::new();
        for (name, standing) in self.buckets(now)? {
            if standing.remaining_ms <= 0 {
                if standing.removable {
                    let _ = self.remove_bucket(&name);
                }
                continue;
            }
            let Ok(d) = self.dir.open_existing_subdir(&name) else {
                continue;
            };
            let (last_seen, expires_at) = self.times(standing);
            d.each_name(|n| {
                if let Some(k) = parse_key(n)
                    && seen.insert(k)
                    && let Some(key) = std::str::from_utf8(n).ok().and_then(SessionKey::parse)
                {
                    out.push(SessionEntry {
                        key,
                        last_seen,
                        expires_at,
                    });
                }
            })?;
        }
        Ok(out)
    }

    /// Removes every bucket expired for its margin, reading only bucket
    /// names (no entry listing); returns how many went.
    pub fn prune(&self, now: &Now) -> Result<usize> {
        let mut removed = 0;
        for (name, standing) in self.buckets(now)? {
            if standing.remaining_ms <= 0 && standing.removable && self.remove_bucket(&name).is_ok()
            {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn remove_bucket(&self, name: &str) -> Result<()> {
        let d = self.dir.open_existing_subdir(name)?;
        for n in d.names()? {
            if let Some(n) = n.to_str() {
                d.remove(n)?;
            }
        }
        self.dir.remove_dir(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(root: &std::path::Path) -> usize {
        std::fs::read_dir(root)
            .unwrap()
            .map(|b| std::fs::read_dir(b.unwrap().path()).unwrap().count())
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
}
