//! Sessions in the file backend, counted without a `stat` per session: one
//! directory per 5-second bucket of last activity (`sessions/<unix secs>/`)
//! holding one empty file per session touched in it, named by its key.
//! Liveness is read from the bucket's name alone; a session touched again
//! gets an entry in the newer bucket, and readers keep the newest; whole
//! buckets are removed once everything in them has expired.
//!
//! A session counts until the timeout has passed after the *end* of the
//! bucket of its last touch: never less than the timeout, at most one bucket
//! more.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rustix::io::Errno;

use super::dir::{Dir, Modes};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::session::{SessionEntry, SessionKey};

/// The width of a bucket.
pub(super) const BUCKET: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(super) struct Sessions {
    dir: Dir,
    modes: Modes,
    timeout: Duration,
    /// The bucket last touched by this process, kept open.
    current: Mutex<Option<(u64, Dir)>>,
    /// Where this process last wrote each session: a touch in a newer
    /// bucket removes the older entry, so a session active for an hour is
    /// one entry, not 720.
    last: Mutex<HashMap<SessionKey, u64>>,
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

/// A key's 32 hex digits as a number, if the name is a key.
fn parse_key(name: &[u8]) -> Option<u128> {
    if name.len() != 32 {
        return None;
    }
    let mut n: u128 = 0;
    for &c in name {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        n = (n << 4) | u128::from(d);
    }
    Some(n)
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn bucket_of(t: SystemTime) -> u64 {
    let s = secs(t);
    s - s % BUCKET.as_secs()
}

fn time_of(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
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

    /// When a bucket's sessions stop counting.
    fn expiry(&self, bucket: u64) -> SystemTime {
        time_of(bucket) + BUCKET + self.timeout
    }

    /// Records activity of `key` at `now`.
    pub fn touch(&self, key: &SessionKey, now: SystemTime) -> Result<()> {
        let bucket = bucket_of(now);
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        for attempt in 0..2 {
            if current.as_ref().is_none_or(|(b, _)| *b != bucket) || attempt == 1 {
                *current = Some((bucket, self.dir.subdir(&bucket.to_string(), self.modes)?));
            }
            let (_, dir) = current.as_ref().expect("set just above");
            match dir.create_empty(key.as_str(), self.modes) {
                Ok(()) => {
                    self.forget_older(key, bucket);
                    return Ok(());
                }
                // The bucket was removed under us (clocks disagree): reopen.
                Err(Errno::NOENT) if attempt == 0 => continue,
                Err(e) => return Err(Error::io("record session in", dir.path(), e.into())),
            }
        }
        Ok(())
    }

    /// Removes this process's previous entry of `key`, now that it has a
    /// newer one (best effort: a leftover only counts until it expires).
    fn forget_older(&self, key: &SessionKey, bucket: u64) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.len() > 1_000_000 {
            last.clear();
        }
        match last.insert(key.clone(), bucket) {
            Some(old) if old != bucket => {
                if let Ok(d) = self.dir.open_existing_subdir(&old.to_string()) {
                    let _ = d.remove(key.as_str());
                }
            }
            _ => {}
        }
    }

    /// Buckets by start time, newest first.
    fn buckets(&self) -> Result<Vec<u64>> {
        let mut b: Vec<u64> = self
            .dir
            .names()?
            .into_iter()
            .filter_map(|n| n.to_str()?.parse().ok())
            .collect();
        b.sort_unstable_by(|x, y| y.cmp(x));
        Ok(b)
    }

    /// Ends `key` (logout): removes its entry from every bucket.
    pub fn end(&self, key: &SessionKey) -> Result<()> {
        for b in self.buckets()? {
            if let Ok(d) = self.dir.open_existing_subdir(&b.to_string()) {
                d.remove(key.as_str())?;
            }
        }
        Ok(())
    }

    /// The live entry of `key`, if any.
    pub fn get(&self, key: &SessionKey, now: SystemTime) -> Result<Option<SessionEntry>> {
        for b in self.buckets()? {
            if self.expiry(b) <= now {
                break;
            }
            let Ok(d) = self.dir.open_existing_subdir(&b.to_string()) else {
                continue;
            };
            if d.exists(key.as_str())? {
                return Ok(Some(self.entry(key.clone(), b)));
            }
        }
        Ok(None)
    }

    fn entry(&self, key: SessionKey, bucket: u64) -> SessionEntry {
        SessionEntry {
            key,
            last_seen: Timestamp::at(time_of(bucket)),
            expires_at: Timestamp::at(self.expiry(bucket)),
        }
    }

    /// Every live session at `now`, most recently active first. Expired
    /// buckets are removed whole on the way (best effort: a reader that may
    /// not write leaves them to the next writer).
    pub fn live(&self, now: SystemTime) -> Result<Vec<SessionEntry>> {
        let mut seen: HashSet<u128, BuildHasherDefault<KeyHasher>> = HashSet::default();
        let mut out = Vec::new();
        for b in self.buckets()? {
            let name = b.to_string();
            if self.expiry(b) <= now {
                let _ = self.remove_bucket(&name);
                continue;
            }
            let Ok(d) = self.dir.open_existing_subdir(&name) else {
                continue;
            };
            let (last_seen, expires_at) =
                (Timestamp::at(time_of(b)), Timestamp::at(self.expiry(b)));
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

    #[test]
    fn a_session_active_across_buckets_keeps_one_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open_root(tmp.path()).unwrap();
        let s = Sessions::new(dir, Modes::for_group(None), Duration::from_secs(900));
        let key = SessionKey::of(b"alice");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        for i in 0..20 {
            s.touch(&key, t0 + Duration::from_secs(6 * i)).unwrap();
        }
        assert_eq!(
            files(tmp.path()),
            1,
            "older entries removed by the newer touch"
        );
        let live = s.live(t0 + Duration::from_secs(120)).unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(
            live[0].last_seen.unix_seconds(),
            1_900_000_000 + 114 - 114 % 5
        );
    }

    #[test]
    fn keys_parse_only_from_32_lowercase_hex_digits() {
        assert_eq!(parse_key(b"0000000000000000000000000000000f"), Some(15));
        assert_eq!(parse_key(b"0000000000000000000000000000000F"), None);
        assert_eq!(parse_key(b"../../etc/passwd"), None);
    }
}
