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
            let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
            BootId::parse(text.trim())
        })
    }

    /// An id from its 16 bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> BootId {
        BootId(bytes)
    }

    /// Parses 32 hex digits, dashes anywhere ignored (the kernel writes
    /// `b02a6090-296e-494d-a7f1-70df670424e2`); `None` for anything else.
    pub fn parse(text: &str) -> Option<BootId> {
        let mut bytes = [0u8; 16];
        let mut n = 0;
        for c in text.bytes().filter(|&c| c != b'-') {
            let d = (c as char).to_digit(16)? as u8;
            if n >= 32 {
                return None;
            }
            bytes[n / 2] |= if n % 2 == 0 { d << 4 } else { d };
            n += 1;
        }
        (n == 32).then_some(BootId(bytes))
    }
}

impl fmt::Display for BootId {
    /// 32 lowercase hex digits, as bucket names carry it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::random::to_hex(&self.0))
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
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
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

    /// Seconds since the Unix epoch (zero before it).
    pub fn unix_seconds(self) -> u64 {
        self.0
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        Timestamp::at(t)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_millis(self.0))
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
        humantime::parse_rfc3339_weak(&text)
            .map(Timestamp::at)
            .map_err(|e| serde::de::Error::custom(format!("bad time {text:?}: {e}")))
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

    #[test]
    fn ages_read_like_an_operator_writes_them() {
        assert_eq!(format_age(Duration::from_secs(4)), "4s");
        assert_eq!(format_age(Duration::from_secs(125)), "2m 5s");
        assert_eq!(format_age(Duration::from_secs(3780)), "1h 3m");
        assert_eq!(format_age(Duration::from_secs(90000)), "1d 1h");
    }
}
