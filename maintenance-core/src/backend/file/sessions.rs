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

use std::collections::HashSet;
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
                Ok(()) => return Ok(()),
                // The bucket was removed under us (clocks disagree): reopen.
                Err(Errno::NOENT) if attempt == 0 => continue,
                Err(e) => return Err(Error::io("record session in", dir.path(), e.into())),
            }
        }
        Ok(())
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
        let mut seen = HashSet::new();
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
            for n in d.names()? {
                let Some(key) = n.to_str().and_then(SessionKey::parse) else {
                    continue;
                };
                if seen.insert(key.as_str().to_owned()) {
                    out.push(self.entry(key, b));
                }
            }
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
