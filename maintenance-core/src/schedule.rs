//! Scheduled maintenance windows (`offline on --at TIME`): the record of a
//! schedule and of how it ended, TIME as operators write it (`02:00`,
//! `+30m`, an RFC 3339 instant), and times shown in the host's zone.
//!
//! A schedule lives only as long as its waiting process holds it, as a
//! PENDING waiter's lock does (I5): killed, it is gone for every reader at
//! once ([`Backend::begin_schedule`](crate::Backend::begin_schedule)).
//! Plain data here; the wait itself is in [`transition`](crate::transition).

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::clock::{Timestamp, format_age};

/// A scheduled window, as every reader sees it while its waiting process
/// lives: when the site goes offline, from when users are told, who holds
/// it and what they said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// The schedule's id, given by the backend: printed for people and
    /// written in the record of its end, so an end never applies to a later
    /// schedule.
    pub id: String,
    /// When the site starts going offline (PENDING, then the drain, then
    /// OFFLINE, as `offline on` does) or, for a read-only window,
    /// read-only (READONLY_PENDING, then READONLY).
    pub at: Timestamp,
    /// From when users are told (the web layer's `MaintenanceStatus`
    /// carries the schedule from then on): the start of the notice period,
    /// `--notice` before `at` (all of the wait by default).
    pub notice_from: Timestamp,
    /// `user@host` of the operator whose process holds the schedule.
    pub by: String,
    /// The waiting process: while it lives, the schedule does.
    pub pid: u32,
    /// The message for users, shown during the notice and then stored with
    /// the PENDING and OFFLINE records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the schedule was set, by the backend's clock.
    pub set_at: Timestamp,
    /// For `offline run --at`: the command the window is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// A read-only window (`--at TIME --read-only`): at its time the site
    /// goes READONLY_PENDING, then READONLY, as `offline on --read-only`
    /// does, instead of PENDING and OFFLINE. Absent in a record written
    /// before the read-only tier: `false`.
    #[serde(default)]
    pub read_only: bool,
}

impl ScheduleRecord {
    /// A schedule for `at` by this process, told from `notice_from`; the
    /// backend gives it its id and `set_at`.
    pub fn by_this_process(at: Timestamp, notice_from: Timestamp) -> Self {
        let me = crate::identity::Identity::current();
        ScheduleRecord {
            id: String::new(),
            at,
            notice_from: notice_from.min(at),
            by: me.user_at_host(),
            pid: me.pid,
            message: None,
            set_at: Timestamp::EPOCH,
            argv: None,
            read_only: false,
        }
    }

    /// The kind of window, as messages name it: `offline` or `read-only`.
    pub fn kind(&self) -> &'static str {
        if self.read_only {
            "read-only"
        } else {
            "offline"
        }
    }

    /// Whether users are told by `now`: the notice period has begun.
    pub fn in_notice(&self, now: SystemTime) -> bool {
        now >= self.notice_from.system_time()
    }

    /// How long until the site starts going offline, by `now` (zero once
    /// the time has come).
    pub fn left(&self, now: SystemTime) -> Duration {
        self.at
            .system_time()
            .duration_since(now)
            .unwrap_or_default()
    }

    /// `Offline scheduled at <time> (in <duration>) by <user@host>` (a
    /// read-only window: `Read-only scheduled at …`), and `: <message>`
    /// when there is one: the line `offline status` prints under its status
    /// line. The time is the host's local time with its offset; the message
    /// is as stored (a terminal caller escapes it).
    pub fn line(&self, now: SystemTime) -> String {
        format!(
            "{} scheduled at {} (in {}) by {}{}",
            if self.read_only {
                "Read-only"
            } else {
                "Offline"
            },
            local_time(self.at),
            format_age(self.left(now)),
            self.by,
            self.message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        )
    }
}

/// Why a schedule ended before or as its time came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleEndReason {
    /// `offline off` cancelled it; its waiting process exits 75.
    Cancelled,
    /// `offline on` without `--at` went offline now; its waiting process
    /// exits 75.
    Superseded,
    /// Its time came: its waiting process began PENDING (or, for `offline
    /// run`, found the site OFFLINE already).
    Due,
    /// Its own process gave it up before its time (Ctrl-C, SIGTERM, or an
    /// error); the site stayed as it was.
    Withdrawn,
}

impl ScheduleEndReason {
    /// `cancelled`, `superseded`, `due` or `withdrawn`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleEndReason::Cancelled => "cancelled",
            ScheduleEndReason::Superseded => "superseded",
            ScheduleEndReason::Due => "due",
            ScheduleEndReason::Withdrawn => "withdrawn",
        }
    }
}

/// How a schedule ended, and by whom: written once, by whoever ended it,
/// while the schedule's process still held it. A schedule whose process
/// died without one (killed) has none: it lapsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleEnd {
    /// Why.
    pub why: ScheduleEndReason,
    /// `user@host` of whoever ended it.
    pub by: String,
    /// Their process.
    pub pid: u32,
    /// When, by the backend's clock.
    pub at: Timestamp,
}

impl ScheduleEnd {
    /// An end for `why` by `by` (pid `pid`); the backend sets `at`.
    pub fn new(why: ScheduleEndReason, by: impl Into<String>, pid: u32) -> Self {
        ScheduleEnd {
            why,
            by: by.into(),
            pid,
            at: Timestamp::EPOCH,
        }
    }

    /// An end for `why` by this process.
    pub fn by_this_process(why: ScheduleEndReason) -> Self {
        let me = crate::identity::Identity::current();
        ScheduleEnd::new(why, me.user_at_host(), me.pid)
    }
}

/// A schedule that someone ended, and how: what [`Backend::end_schedule`]
/// returns, for the record of what happened to it.
///
/// [`Backend::end_schedule`]: crate::Backend::end_schedule
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedSchedule {
    /// The schedule, as it was while live.
    pub schedule: ScheduleRecord,
    /// Its end, as stored (timed by the backend).
    pub end: ScheduleEnd,
}

/// Reads TIME as `offline on --at` takes it, relative to now and the
/// host's time zone (`TZ`, else `/etc/localtime`):
///
/// - `02:00` or `02:00:30`: the next time the local clock shows it (today
///   if still to come, else tomorrow; a time a DST change skips is read as
///   the moment after the gap);
/// - `+30m`, `+90`, `+1h30m`: this long from now (seconds, or units as
///   `--timeout` takes them);
/// - an RFC 3339 instant with its offset: `2026-11-25T02:00:00Z`,
///   `2026-11-25T03:00:00+01:00`.
///
/// A time that is not to come is refused, naming it and now.
pub fn parse_at(text: &str) -> Result<Timestamp, String> {
    parse_at_in(text, SystemTime::now(), &jiff::tz::TimeZone::system())
}

/// [`parse_at`] at `now` in time zone `tz`.
fn parse_at_in(text: &str, now: SystemTime, tz: &jiff::tz::TimeZone) -> Result<Timestamp, String> {
    let t = text.trim();
    let how = "give a time to come: 02:00 (the next 02:00, local time), +30m (from now), or an \
               RFC 3339 time with its offset (2026-11-25T02:00:00+01:00)";
    let now_ts = jiff::Timestamp::try_from(now)
        .map_err(|e| format!("the system clock is out of range ({e})"))?;
    let at = if let Some(rest) = t.strip_prefix('+') {
        let d =
            crate::config::parse_seconds(rest).map_err(|e| format!("{text:?}: after `+`, {e}"))?;
        if d.is_zero() {
            return Err(format!("{text:?} is now, not a time to come: {how}"));
        }
        now.checked_add(d)
            .ok_or_else(|| format!("{text:?} lies too far ahead: {how}"))?
    } else if let Ok(time) = t.parse::<jiff::civil::Time>()
        && !t.contains(['T', 't', ' '])
    {
        let here = now_ts.to_zoned_datetime(tz.clone());
        let today = here
            .date()
            .to_datetime(time)
            .to_zoned_datetime(tz.clone())
            .map_err(|e| format!("{text:?}: {e}"))?;
        let next = if today.timestamp() > now_ts {
            today
        } else {
            here.date()
                .tomorrow()
                .map_err(|e| format!("{text:?}: {e}"))?
                .to_datetime(time)
                .to_zoned_datetime(tz.clone())
                .map_err(|e| format!("{text:?}: {e}"))?
        };
        SystemTime::try_from(next.timestamp()).map_err(|e| format!("{text:?}: {e}"))?
    } else if !t.is_empty() && t.contains(':') && t.bytes().all(|b| b.is_ascii_digit() || b == b':')
    {
        // Shaped as a clock time, not one: say so, not what the RFC 3339
        // parser made of it.
        return Err(format!(
            "{text:?} is not a time of day (HH:MM or HH:MM:SS, hours 00-23, minutes and \
             seconds 00-59): {how}"
        ));
    } else {
        let instant = t
            .parse::<jiff::Timestamp>()
            .map_err(|e| format!("{text:?} is not a time ({e}); {how}"))?;
        SystemTime::try_from(instant).map_err(|e| format!("{text:?}: {e}"))?
    };
    let at = Timestamp::at(at);
    if at.system_time() <= now {
        return Err(format!(
            "{text:?} is in the past: it was {} ({} ago); now is {}: {how}",
            local_time_in(at, tz),
            format_age(at.age(now)),
            local_time_in(Timestamp::at(now), tz),
        ));
    }
    Ok(at)
}

/// The start of the notice period for a window at `at`, told `notice`
/// ahead (all of the wait when `None` or longer than it), from `now`.
pub fn notice_from(at: Timestamp, notice: Option<Duration>, now: SystemTime) -> Timestamp {
    let start = Timestamp::at(now).min(at);
    match notice.and_then(|n| at.system_time().checked_sub(n)) {
        Some(t) => Timestamp::at(t).max(start),
        None => start,
    }
}

/// `t` in the host's time zone, to the second, with its offset:
/// `2026-11-25T02:00:00+01:00` (RFC 3339, as an operator who wrote `02:00`
/// reads it back).
pub fn local_time(t: Timestamp) -> String {
    local_time_in(t, &jiff::tz::TimeZone::system())
}

fn local_time_in(t: Timestamp, tz: &jiff::tz::TimeZone) -> String {
    match jiff::Timestamp::try_from(t.system_time()) {
        Ok(ts) => ts
            .to_zoned_datetime(tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
        Err(_) => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paris() -> jiff::tz::TimeZone {
        // No zone database needed: the POSIX rule of Central Europe.
        jiff::tz::TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap()
    }

    fn at(text: &str) -> SystemTime {
        Timestamp::parse_rfc3339(text).unwrap().system_time()
    }

    fn parsed(text: &str, now: &str) -> Result<String, String> {
        parse_at_in(text, at(now), &paris()).map(|t| t.to_string())
    }

    #[test]
    fn a_clock_time_is_its_next_occurrence_in_the_local_zone() {
        // 22:30 UTC is 23:30 in Paris in winter: 02:00 is tomorrow's.
        assert_eq!(
            parsed("02:00", "2026-01-10T22:30:00Z").unwrap(),
            "2026-01-11T01:00:00.000Z"
        );
        // 00:30 UTC is 01:30 in Paris: 02:00 is still today's.
        assert_eq!(
            parsed("02:00", "2026-01-10T00:30:00Z").unwrap(),
            "2026-01-10T01:00:00.000Z"
        );
        // Exactly now is not to come: tomorrow's.
        assert_eq!(
            parsed("02:00", "2026-01-10T01:00:00Z").unwrap(),
            "2026-01-11T01:00:00.000Z"
        );
        assert_eq!(
            parsed("23:59:30", "2026-07-01T12:00:00Z").unwrap(),
            "2026-07-01T21:59:30.000Z"
        );
        // 02:30 does not exist on 29 March 2026 in Paris (02:00 → 03:00):
        // the moment after the gap.
        assert_eq!(
            parsed("02:30", "2026-03-29T00:10:00Z").unwrap(),
            "2026-03-29T01:30:00.000Z"
        );
    }

    #[test]
    fn an_offset_from_now_and_an_instant_with_any_offset_are_read() {
        let now = "2026-01-10T22:30:00Z";
        assert_eq!(parsed("+30m", now).unwrap(), "2026-01-10T23:00:00.000Z");
        assert_eq!(parsed("+90", now).unwrap(), "2026-01-10T22:31:30.000Z");
        assert_eq!(parsed("+1h30m", now).unwrap(), "2026-01-11T00:00:00.000Z");
        assert_eq!(
            parsed("2026-01-11T02:00:00+01:00", now).unwrap(),
            "2026-01-11T01:00:00.000Z"
        );
        assert_eq!(
            parsed("2026-01-11T01:00:00Z", now).unwrap(),
            "2026-01-11T01:00:00.000Z"
        );
        assert_eq!(
            parsed("2026-01-10T20:00:00-05:00", now).unwrap(),
            "2026-01-11T01:00:00.000Z"
        );
    }

    #[test]
    fn a_time_not_to_come_or_not_a_time_is_refused_naming_it() {
        let now = "2026-01-10T22:30:00Z";
        let past = parsed("2020-01-01T00:00:00Z", now).unwrap_err();
        assert!(
            past.contains("\"2020-01-01T00:00:00Z\" is in the past"),
            "{past}"
        );
        assert!(past.contains("now is 2026-01-10T23:30:00+01:00"), "{past}");
        assert!(past.contains("+30m"), "{past}");
        for (text, why) in [
            ("+0s", "is now"),
            ("+-5m", "cannot be negative"),
            ("+soon", "not a duration"),
            ("soon", "is not a time"),
            ("2026-01-11T02:00:00", "is not a time"),
            (
                "25:00",
                "is not a time of day (HH:MM or HH:MM:SS, hours 00-23",
            ),
            ("02:60", "is not a time of day"),
            ("2:00:00:00", "is not a time of day"),
            ("", "is not a time"),
        ] {
            let e = parsed(text, now).unwrap_err();
            assert!(e.contains(&format!("{text:?}")), "{text:?}: {e}");
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_notice_starts_notice_before_the_time_and_never_before_now() {
        let now = at("2026-01-10T22:00:00Z");
        let when = Timestamp::at(at("2026-01-11T00:00:00Z"));
        assert_eq!(
            notice_from(when, None, now).to_string(),
            "2026-01-10T22:00:00.000Z"
        );
        assert_eq!(
            notice_from(when, Some(Duration::from_secs(600)), now).to_string(),
            "2026-01-10T23:50:00.000Z"
        );
        assert_eq!(
            notice_from(when, Some(Duration::from_secs(86_400)), now).to_string(),
            "2026-01-10T22:00:00.000Z"
        );
    }

    /// A record written before the read-only tier (no `read_only`) is an
    /// offline window; one that says so is read-only.
    #[test]
    fn a_record_without_read_only_is_an_offline_window() {
        let mut r = ScheduleRecord::by_this_process(
            Timestamp::at(at("2026-01-11T01:00:00Z")),
            Timestamp::at(at("2026-01-10T22:00:00Z")),
        );
        let mut doc = serde_json::to_value(&r).unwrap();
        assert_eq!(doc["read_only"], false);
        doc.as_object_mut().unwrap().remove("read_only");
        let old: ScheduleRecord = serde_json::from_value(doc).unwrap();
        assert_eq!(old, r);
        r.read_only = true;
        let back: ScheduleRecord =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert!(back.read_only);
    }

    #[test]
    fn the_status_line_says_when_in_how_long_who_and_why() {
        let mut r = ScheduleRecord::by_this_process(
            Timestamp::at(at("2026-01-11T01:00:00Z")),
            Timestamp::at(at("2026-01-10T22:00:00Z")),
        );
        r.by = "root@web1".into();
        let now = at("2026-01-10T23:57:00Z");
        let line = r.line(now);
        assert!(line.starts_with("Offline scheduled at "), "{line}");
        assert!(line.ends_with(" (in 1h 3m) by root@web1"), "{line}");
        r.message = Some("Upgrading the database".into());
        assert!(
            r.line(now)
                .ends_with("(in 1h 3m) by root@web1: Upgrading the database")
        );
        assert!(r.in_notice(now));
        assert!(!r.in_notice(at("2026-01-10T21:59:59Z")));
        r.read_only = true;
        let line = r.line(now);
        assert!(line.starts_with("Read-only scheduled at "), "{line}");
        assert!(line.ends_with(": Upgrading the database"), "{line}");
        assert_eq!(local_time_in(r.at, &paris()), "2026-01-11T02:00:00+01:00");
    }
}
