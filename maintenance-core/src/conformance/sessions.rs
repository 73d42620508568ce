//! Conformance: web sessions — live from a touch until the timeout, ended at
//! once by logout, only ever stored hashed, aged by the boot clock.

// A test suite: a panic is how it reports a failed behaviour.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use super::{FreshState, change, key, pending};
use crate::clock::ManualClock;
use crate::session::SessionKey;
use crate::transition::{self};

/// A session counts from its touch until the timeout has passed (a backend
/// may round expiry up by a few seconds, never down).
pub fn a_touched_session_is_live_until_it_expires(site: &dyn Fn() -> FreshState) {
    let s = site();
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_003));
    let b = s.open_with(clock.clone());
    let timeout = b.session_timeout();
    b.touch_session(&key("alice")).unwrap();
    let e = b.session(&key("alice")).unwrap().expect("live");
    assert!(e.expires_at.system_time() >= clock.now_for_tests() + timeout);
    assert_eq!(b.sessions().unwrap().len(), 1);
    clock.advance(timeout - Duration::from_secs(1));
    assert!(
        b.session(&key("alice")).unwrap().is_some(),
        "still live just before the timeout"
    );
    assert_eq!(b.sessions().unwrap().len(), 1);
    clock.advance(Duration::from_secs(11));
    assert!(b.session(&key("alice")).unwrap().is_none(), "expired");
    assert!(b.sessions().unwrap().is_empty());
    b.touch_session(&key("alice")).unwrap();
    assert_eq!(b.sessions().unwrap().len(), 1, "a new touch revives it");
}

/// Logout ends a session at once, for every reader.
pub fn logout_ends_a_session_at_once(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    b.touch_session(&key("alice")).unwrap();
    b.touch_session(&key("bob")).unwrap();
    s.open().end_session(&key("alice")).unwrap();
    let live: Vec<_> = b.sessions().unwrap().into_iter().map(|e| e.key).collect();
    assert_eq!(live, [key("bob")]);
    assert!(s.open().session(&key("alice")).unwrap().is_none());
    b.end_session(&key("nobody"))
        .expect("ending an unknown session is fine");
}

/// Pruning removes sessions every process judges expired, and never a live
/// one.
pub fn pruning_removes_only_what_every_process_judges_expired(site: &dyn Fn() -> FreshState) {
    let s = site();
    let clock = ManualClock::starting_now();
    let b = s.open_with(clock.clone());
    b.touch_session(&key("old")).unwrap();
    clock.advance(b.session_timeout() + Duration::from_secs(2 * 3600));
    b.touch_session(&key("new")).unwrap();
    assert!(
        b.prune_sessions().unwrap() >= 1,
        "the old one's bucket went"
    );
    let live: Vec<_> = b.sessions().unwrap();
    assert_eq!(live.len(), 1);
    assert!(b.session(&key("new")).unwrap().is_some());
    assert_eq!(b.prune_sessions().unwrap(), 0, "nothing live goes");
    assert!(b.session(&key("new")).unwrap().is_some());
}

/// Touches are recorded in every mode (I2: the layer decides, the backend
/// counts).
pub fn touches_are_never_refused(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let w = pending(&b);
    b.touch_session(&key("during-pending")).unwrap();
    b.force_offline(&change()).unwrap();
    b.touch_session(&key("during-offline")).unwrap();
    assert_eq!(b.sessions().unwrap().len(), 2);
    drop(w);
}

/// Any id — separators, dots, NUL, 10 kB — is only ever a hash.
pub fn hostile_session_ids_are_only_hashed(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let long = "x".repeat(10_000);
    let ids = ["../../etc/passwd", "/", "..", "a\0b", "\0", long.as_str()];
    for id in ids {
        b.touch_session(&SessionKey::of(id.as_bytes())).unwrap();
    }
    assert_eq!(b.sessions().unwrap().len(), ids.len());
    for id in ids {
        assert!(b.session(&SessionKey::of(id.as_bytes())).unwrap().is_some());
        b.end_session(&SessionKey::of(id.as_bytes())).unwrap();
    }
    assert!(b.sessions().unwrap().is_empty());
}

/// A session touched many times, by many readers, counts once.
pub fn many_sessions_are_counted_once_each(site: &dyn Fn() -> FreshState) {
    let s = site();
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000));
    let b = s.open_with(clock.clone());
    for round in 0..3 {
        for i in 0..50 {
            b.touch_session(&key(&format!("user-{i}"))).unwrap();
        }
        clock.advance(Duration::from_secs(7 * (round + 1)));
    }
    assert_eq!(b.sessions().unwrap().len(), 50);
    assert_eq!(s.open_with(clock.clone()).sessions().unwrap().len(), 50);
}

/// Sessions age by a clock no process can step: a process whose wall
/// clock was stepped (either way, by any amount) still counts every
/// session another process counts, and removes none of them; so does
/// every process after the host's clock was stepped. Time passing still
/// ends them. (A backend whose time comes from one server meets this by
/// judging by the server's clock.)
pub fn a_wall_clock_step_neither_expires_nor_removes_sessions(site: &dyn Fn() -> FreshState) {
    let s = site();
    let clock = ManualClock::starting_now();
    let writer = s.open_with(clock.clone());
    let timeout = writer.session_timeout();
    for i in 0..20 {
        writer.touch_session(&key(&format!("user-{i}"))).unwrap();
    }
    let far = Duration::from_secs(100 * 86_400);
    for (ahead, by) in [
        (true, Duration::from_secs(1000)),
        (true, far),
        (false, Duration::from_secs(1000)),
        (false, far),
    ] {
        let stepped = clock.same_host();
        if ahead {
            stepped.step_forward(by);
        } else {
            stepped.step_back(by);
        }
        let reader = s.open_with(stepped.clone());
        let seen = format!("a reader {by:?} {}", if ahead { "ahead" } else { "behind" });
        assert_eq!(reader.sessions().unwrap().len(), 20, "{seen}");
        let e = reader
            .session(&key("user-0"))
            .unwrap()
            .unwrap_or_else(|| panic!("{seen}: user-0 is live"));
        assert!(
            // Shown to the second: a boot-clock time is turned into a wall
            // time through the boot's start rounded to the nearest second.
            e.expires_at.system_time() + Duration::from_secs(1)
                >= stepped.now_for_tests() + timeout,
            "{seen}: times are shown on the reader's own wall clock: {e:?}"
        );
        assert_eq!(
            transition::status(reader.as_ref())
                .unwrap()
                .active_sessions(),
            20
        );
        assert_eq!(
            writer.sessions().unwrap().len(),
            20,
            "{seen} removed what the writer still counts"
        );
    }
    clock.step_forward(far);
    assert_eq!(s.open_with(clock.clone()).sessions().unwrap().len(), 20);
    clock.advance(timeout + Duration::from_secs(11));
    assert!(s.open_with(clock.clone()).sessions().unwrap().is_empty());
}

/// A reboot cuts no one off: a session touched just before it still counts
/// after it; and the sessions of before the reboot stop counting once the
/// timeout has passed after it.
pub fn a_reboot_cuts_no_one_off_and_ends_the_earlier_boots_sessions_within_a_timeout(
    site: &dyn Fn() -> FreshState,
) {
    let s = site();
    let clock = ManualClock::starting_now();
    let before = s.open_with(clock.clone());
    let timeout = before.session_timeout();
    before.touch_session(&key("alice")).unwrap();
    drop(before);
    clock.reboot(Duration::from_secs(90), Duration::from_secs(20));
    let after = s.open_with(clock.clone());
    assert_eq!(after.sessions().unwrap().len(), 1, "alice still counts");
    assert!(after.session(&key("alice")).unwrap().is_some());
    after.touch_session(&key("bob")).unwrap();
    clock.advance(timeout);
    let live: Vec<_> = after
        .sessions()
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(live, [key("bob")], "alice's last touch lies a timeout back");
}
