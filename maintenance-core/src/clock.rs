//! Time for everything time-based: an injectable [`Clock`], so tests of
//! timeouts and expiry move time instead of sleeping, and [`Timestamp`], the
//! RFC 3339 form every record stores.
//!
//! A clock gives two readings. The wall clock ([`Clock::now`]) is for
//! people: record times, `last_seen`, `expires_at`. Sessions age by the
//! host's boot clock ([`Clock::boot_time`]): on Linux `CLOCK_BOOTTIME`
//! with the boot's id, shared by every process on the host and never
//! stepped, so a step of the wall clock (NTP, a VM resumed, one process
//! under a faked clock) cannot age anyone's session.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where "now" comes from. Every time-based decision in this crate asks one.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current wall-clock time: for people, and for the times records
    /// show. Any process's may be stepped at any moment.
    fn now(&self) -> SystemTime;

    /// The host's boot clock: time since this boot, counted alike by every
    /// process on the host and never stepped, with the boot's id. `None`
    /// where the host has none to share (macOS; Linux without a readable
    /// `/proc/sys/kernel/random/boot_id`): sessions then age by the wall
    /// clock.
    fn boot_time(&self) -> Option<BootTime>;
}

/// A shared clock, as backends and tasks hold it.
pub type SharedClock = Arc<dyn Clock>;

/// The id of one boot of the host: Linux's
/// `/proc/sys/kernel/random/boot_id`, new at every boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BootId([u8; 16]);

impl BootId {
    /// The id of the boot the host is running, read once per process;
    /// `None` where there is none (not Linux, or `/proc` unreadable).
    pub fn current() -> Option<BootId> {
        static CURRENT: OnceLock<Option<BootId>> = OnceLock::new();
        *CURRENT.get_or_init(|| {
            if !cfg!(target_os = "linux") {
                return None;
            }
            // 36 characters and a newline: one read of a small buffer
            // (`read_to_string` would also ask the size, and read twice
            // more), up to the newline or the end.
            use std::io::Read;
            let mut f = std::fs::File::open("/proc/sys/kernel/random/boot_id").ok()?;
            let mut buf = [0u8; 64];
            let mut len = 0;
            while len < buf.len() && !buf[..len].contains(&b'\n') {
                match f.read(&mut buf[len..]) {
                    Ok(0) => break,
                    Ok(n) => len += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return None,
                }
            }
            BootId::parse(std::str::from_utf8(&buf[..len]).ok()?.trim())
        })
    }

    /// An id from its 16 bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> BootId {
        BootId(bytes)
    }

    /// Parses 32 hex digits, dashes anywhere ignored (the kernel writes
    /// `b02a6090-296e-494d-a7f1-70df670424e2`); `None` for anything else.
    pub fn parse(text: &str) -> Option<BootId> {
        let mut digits = [0u8; 32];
        let mut n = 0;
        for c in text.bytes().filter(|&c| c != b'-') {
            *digits.get_mut(n)? = c;
            n += 1;
        }
        crate::hex::decode::<16>(&digits[..n]).map(BootId)
    }
}

impl fmt::Display for BootId {
    /// 32 lowercase hex digits, as bucket names carry it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::hex::encode(&self.0))
    }
}

/// One reading of the host's boot clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootTime {
    /// The boot it counts from.
    pub boot: BootId,
    /// Time since that boot, suspended time included (`CLOCK_BOOTTIME`).
    pub since_boot: Duration,
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn boot_time(&self) -> Option<BootTime> {
        real_boot_time()
    }
}

#[cfg(target_os = "linux")]
fn real_boot_time() -> Option<BootTime> {
    let boot = BootId::current()?;
    // glibc's `clock_gettime`, whose vDSO lookup the dynamic loader has
    // already done: rustix's own would parse the vDSO again in every
    // process that reads the boot clock (start-up cost, and valgrind
    // cannot run it).
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut t) } != 0 {
        return None;
    }
    Some(BootTime {
        boot,
        since_boot: Duration::new(t.tv_sec as u64, t.tv_nsec as u32),
    })
}

#[cfg(not(target_os = "linux"))]
fn real_boot_time() -> Option<BootTime> {
    None
}

impl SystemClock {
    /// The real clock, shared.
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

/// A clock that moves only when told to: for tests of expiry, timeouts and
/// clock steps. Its boot clock starts as the host's (on Linux: the real
/// boot id and reading, so sessions it writes count for processes on the
/// real clock; elsewhere a made-up boot), and moves with the wall clock
/// when time passes ([`advance`](Self::advance)) but not when the wall
/// clock is stepped ([`step_forward`](Self::step_forward),
/// [`step_back`](Self::step_back)).
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<(SystemTime, BootTime)>,
}

impl ManualClock {
    /// A clock whose wall clock stands at `start`.
    pub fn new(start: SystemTime) -> Arc<Self> {
        let boot = real_boot_time().unwrap_or(BootTime {
            boot: BootId::from_bytes(*b"manual-clock-boo"),
            since_boot: Duration::from_secs(86_400),
        });
        Arc::new(ManualClock {
            now: Mutex::new((start, boot)),
        })
    }

    /// A clock standing at the real current time.
    pub fn starting_now() -> Arc<Self> {
        Self::new(SystemTime::now())
    }

    /// A clock standing where the real one stood `by` ago, wall and boot
    /// clock alike (the boot clock no earlier than the boot).
    pub fn ago(by: Duration) -> Arc<Self> {
        let clock = Self::starting_now();
        {
            let mut now = clock.lock();
            now.0 -= by;
            now.1.since_boot = now.1.since_boot.saturating_sub(by);
        }
        clock
    }

    /// The clock of another process on the same host: the same readings
    /// now, moving on its own from here.
    pub fn same_host(&self) -> Arc<Self> {
        Arc::new(ManualClock {
            now: Mutex::new(*self.lock()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (SystemTime, BootTime)> {
        self.now.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Time passes: both clocks move forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.lock();
        now.0 += by;
        now.1.since_boot += by;
    }

    /// The wall clock is stepped forward by `by` (NTP, a VM resumed); the
    /// boot clock does not move.
    pub fn step_forward(&self, by: Duration) {
        self.lock().0 += by;
    }

    /// The wall clock is stepped back by `by`; the boot clock does not move.
    pub fn step_back(&self, by: Duration) {
        self.lock().0 -= by;
    }

    /// The host reboots: a new boot id, its boot clock at `since_boot`; the
    /// wall clock moves on by `downtime`.
    pub fn reboot(&self, downtime: Duration, since_boot: Duration) {
        let mut now = self.lock();
        now.0 += downtime;
        now.1 = BootTime {
            boot: BootId::from_bytes(crate::random::bytes::<16>()),
            since_boot,
        };
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.lock().0
    }

    fn boot_time(&self) -> Option<BootTime> {
        Some(self.lock().1)
    }
}

/// A point in time, stored as RFC 3339 UTC with milliseconds
/// (`2026-11-25T04:51:21.123Z`), and so kept to the millisecond in memory
/// too: a time read back compares equal to the time written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    /// The time `t`, to the millisecond.
    pub fn at(t: SystemTime) -> Self {
        let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let ms = Duration::from_millis(since.as_millis() as u64);
        Timestamp(SystemTime::UNIX_EPOCH + ms)
    }

    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(SystemTime::UNIX_EPOCH);

    /// The time as a `SystemTime`.
    pub fn system_time(self) -> SystemTime {
        self.0
    }

    /// How long ago this was, by `now`; zero if it lies in the future.
    pub fn age(self, now: SystemTime) -> Duration {
        now.duration_since(self.0).unwrap_or_default()
    }

    /// Parses an RFC 3339 time with any UTC offset — `2099-01-01T00:00:00Z`,
    /// `…+14:00`, `…-05:30`, fractional seconds allowed, `t`/`z` in either
    /// case, a space for the `T` — into the instant it names (kept, like
    /// every timestamp, in UTC). A time without an offset is refused: it
    /// would be read in the wrong zone. Times before 1970 read as the epoch.
    ///
    /// humantime, which formats our timestamps, parses only UTC; this reads
    /// the offset itself and hands it the rest.
    pub fn parse_rfc3339(text: &str) -> Result<Timestamp, TimeError> {
        let bad = |why: &str| TimeError {
            text: text.to_owned(),
            why: why.to_owned(),
        };
        if !text.is_ascii() {
            return Err(bad("it is not an RFC 3339 time"));
        }
        let upper = text.to_ascii_uppercase();
        let (local, offset_secs) = if let Some(rest) = upper.strip_suffix('Z') {
            (rest, 0i64)
        } else if upper.len() >= 25 && matches!(upper.as_bytes()[upper.len() - 6], b'+' | b'-') {
            let (rest, offset) = upper.split_at(upper.len() - 6);
            let o = offset.as_bytes();
            let digits = |a: u8, b: u8| -> Option<i64> {
                (a.is_ascii_digit() && b.is_ascii_digit())
                    .then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'))
            };
            let (Some(h), b':', Some(m)) = (digits(o[1], o[2]), o[3], digits(o[4], o[5])) else {
                return Err(bad("its offset is not ±hh:mm"));
            };
            if h > 23 || m > 59 {
                return Err(bad("its offset is out of range (at most ±23:59)"));
            }
            let sign = if o[0] == b'-' { -1 } else { 1 };
            (rest, sign * (h * 3600 + m * 60))
        } else {
            return Err(bad(
                "it has no UTC offset: end it with Z for UTC or with the zone's ±hh:mm",
            ));
        };
        // humantime is lax about what follows the seconds: check the shape.
        let b = local.as_bytes();
        let shaped = b.len() >= 19
            && (b.len() == 19
                || b.len() > 20 && b[19] == b'.' && b[20..].iter().all(u8::is_ascii_digit));
        if !shaped {
            return Err(bad("it is not an RFC 3339 time"));
        }
        let t = humantime::parse_rfc3339_weak(local).map_err(|e| bad(&e.to_string()))?;
        let shift = Duration::from_secs(offset_secs.unsigned_abs());
        let utc = if offset_secs >= 0 {
            t.checked_sub(shift)
        } else {
            t.checked_add(shift)
        };
        utc.filter(|t| *t <= latest())
            .map(Timestamp::at)
            .ok_or_else(|| bad("it lies out of range (after 9999-12-31T23:59:59Z in UTC)"))
    }

    /// Seconds since the Unix epoch (zero before it).
    pub fn unix_seconds(self) -> u64 {
        self.0
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod far_future_tests {
    use super::*;

    #[test]
    fn instants_past_year_9999_are_refused_when_read_and_capped_when_written() {
        assert!(Timestamp::parse_rfc3339("9999-12-31T23:59:59-01:00").is_err());
        assert!(Timestamp::parse_rfc3339("9999-12-31T23:59:59Z").is_ok());
        let far = Timestamp::at(SystemTime::UNIX_EPOCH + Duration::from_secs(300_000_000_000));
        assert_eq!(far.to_string(), "9999-12-31T23:59:59.999Z");
    }
}

/// A time that [`Timestamp::parse_rfc3339`] cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?} is not a time: {why}; write RFC 3339, such as 2026-11-25T06:00:00Z or 2026-11-25T07:00:00+01:00"
)]
pub struct TimeError {
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub why: String,
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        Timestamp::at(t)
    }
}

/// The latest instant RFC 3339 can write: 9999-12-31T23:59:59.999Z.
fn latest() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(253_402_300_799_999)
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC, to the millisecond; an instant past year 9999 (only
    /// hostile input makes one) is written as the latest one can be, never
    /// as an error.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            humantime::format_rfc3339_millis(self.0.min(latest()))
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

/// Formats a duration the way operators read it: `4s`, `2m 5s`, `1h 3m`.
pub fn format_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH);
        let boot = clock.boot_time().unwrap();
        assert_eq!(clock.now(), SystemTime::UNIX_EPOCH);
        clock.advance(Duration::from_secs(5));
        assert_eq!(clock.now(), SystemTime::UNIX_EPOCH + Duration::from_secs(5));
        assert_eq!(
            clock.boot_time().unwrap().since_boot,
            boot.since_boot + Duration::from_secs(5)
        );
        let other = clock.same_host();
        clock.step_forward(Duration::from_secs(1000));
        clock.step_back(Duration::from_secs(10));
        assert_eq!(
            clock.now(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(995)
        );
        assert_eq!(
            clock.boot_time(),
            other.boot_time(),
            "a step moves no boot clock"
        );
        assert_eq!(other.now(), SystemTime::UNIX_EPOCH + Duration::from_secs(5));
        clock.reboot(Duration::from_secs(60), Duration::from_secs(3));
        let after = clock.boot_time().unwrap();
        assert_ne!(after.boot, boot.boot);
        assert_eq!(after.since_boot, Duration::from_secs(3));
    }

    #[test]
    fn boot_ids_parse_from_the_kernels_form_only() {
        let id = BootId::parse("b02a6090-296e-494d-a7f1-70df670424e2").unwrap();
        assert_eq!(id.to_string(), "b02a6090296e494da7f170df670424e2");
        assert_eq!(BootId::parse(&id.to_string()), Some(id));
        for bad in [
            "",
            "b02a",
            "../../etc",
            "b02a6090296e494da7f170df670424e2ff",
            "g02a6090296e494da7f170df670424e2",
        ] {
            assert_eq!(BootId::parse(bad), None, "{bad:?}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_real_boot_clock_is_this_boots_and_moves_forward() {
        let a = SystemClock.boot_time().expect("Linux has a boot clock");
        let b = SystemClock.boot_time().unwrap();
        assert_eq!(a.boot, b.boot);
        assert!(b.since_boot >= a.since_boot);
        let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        assert_eq!(Some(a.boot), BootId::parse(text.trim()));
    }

    #[test]
    fn timestamp_round_trips_through_json() {
        let t =
            Timestamp::at(SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789));
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2023-11-14T22:13:20.123Z\"");
        let back: Timestamp = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
    }

    fn utc(text: &str) -> String {
        Timestamp::parse_rfc3339(text).unwrap().to_string()
    }

    #[test]
    fn rfc3339_takes_any_offset_and_keeps_utc() {
        assert_eq!(utc("2099-01-01T00:00:00Z"), "2099-01-01T00:00:00.000Z");
        assert_eq!(utc("2099-01-01T00:00:00+14:00"), "2098-12-31T10:00:00.000Z");
        assert_eq!(utc("2099-01-01T00:00:00-05:30"), "2099-01-01T05:30:00.000Z");
        assert_eq!(utc("2099-01-01T00:00:00+00:00"), "2099-01-01T00:00:00.000Z");
        assert_eq!(utc("2099-01-01T00:00:00-00:00"), "2099-01-01T00:00:00.000Z");
        assert_eq!(utc("2099-01-01t00:00:00.25z"), "2099-01-01T00:00:00.250Z");
        assert_eq!(
            utc("2099-01-01 23:59:59.5-12:00"),
            "2099-01-02T11:59:59.500Z"
        );
        assert_eq!(utc("2024-02-29T01:00:00+02:00"), "2024-02-28T23:00:00.000Z");
        // What every record was written as reads back.
        assert_eq!(utc("2026-11-25T04:51:21.123Z"), "2026-11-25T04:51:21.123Z");
        assert_eq!(utc("1970-01-01T00:00:00.000Z"), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc("1970-01-01T00:30:00+01:00"), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn rfc3339_refuses_what_it_cannot_read_and_says_how_to_write_it() {
        for (text, why) in [
            ("2099-01-01T00:00:00", "no UTC offset"),
            ("2099-01-01", "no UTC offset"),
            ("2099-01-01T00:00:00+24:00", "out of range"),
            ("2099-01-01T00:00:00+05:60", "out of range"),
            ("2099-01-01T00:00:00+0530", "no UTC offset"),
            ("2099-01-01T00:00:00+05-30", "not ±hh:mm"),
            ("2099-01-01T00:00:00ZZ", "not an RFC 3339 time"),
            ("2099-01-01T00:00:00.Z", "not an RFC 3339 time"),
            ("2099-01-01T00:00Z", "not an RFC 3339 time"),
            ("2099-13-01T00:00:00Z", "out of range"),
            ("2099-01-01T25:00:00Z", "out of range"),
            ("soon", "no UTC offset"),
            ("2099-01-01T00:00:00+14:00\u{0}", "no UTC offset"),
            ("2099-01-01T00:00:00+1é:00", "not an RFC 3339 time"),
            ("", "no UTC offset"),
        ] {
            let msg = Timestamp::parse_rfc3339(text).unwrap_err().to_string();
            assert!(msg.contains(why), "{text:?}: {msg}");
            assert!(msg.contains(&format!("{text:?}")), "{msg}");
            assert!(msg.contains("2026-11-25T07:00:00+01:00"), "{msg}");
        }
    }

    #[test]
    fn ages_read_like_an_operator_writes_them() {
        assert_eq!(format_age(Duration::from_secs(4)), "4s");
        assert_eq!(format_age(Duration::from_secs(125)), "2m 5s");
        assert_eq!(format_age(Duration::from_secs(3780)), "1h 3m");
        assert_eq!(format_age(Duration::from_secs(90000)), "1d 1h");
    }
}
