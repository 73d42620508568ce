//! Conformance: web sessions — live from a touch until the timeout, ended at
//! once by logout, only ever stored hashed, aged by the boot clock.

// A test suite: a panic is how it reports a failed behaviour.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use super::{FreshState, change, key, pending};
use crate::backend::SessionSummary;
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

/// A batch of touches (the web layer's repeat touches, written together)
/// records each session as its own touch would: new ones, known ones
/// moved on, expired ones revived, a key given twice counted once.
pub fn a_batch_of_touches_records_each_session_once(site: &dyn Fn() -> FreshState) {
    let s = site();
    let clock = ManualClock::starting_now();
    let b = s.open_with(clock.clone());
    let timeout = b.session_timeout();
    b.touch_sessions(&[]).unwrap();
    assert!(
        b.sessions().unwrap().is_empty(),
        "an empty batch records nothing"
    );
    b.touch_session(&key("alice")).unwrap();
    b.touch_session(&key("gone")).unwrap();
    clock.advance(timeout + Duration::from_secs(11));
    assert!(b.session(&key("gone")).unwrap().is_none(), "expired");
    b.touch_session(&key("alice")).unwrap();
    clock.advance(Duration::from_secs(7));
    // The file backend judges sessions by the boot clock, which goes on
    // while this test's wall clock stands still: what really passes from
    // the batch to the listing comes off the expiry it shows, and a
    // timestamp is kept to the second.
    let real = std::time::Instant::now();
    b.touch_sessions(&[key("bob"), key("alice"), key("gone"), key("bob")])
        .unwrap();
    let listed = b.sessions().unwrap();
    let slack = real.elapsed() + Duration::from_secs(1);
    let mut keys: Vec<_> = listed.iter().map(|e| e.key.clone()).collect();
    keys.sort();
    let mut expected = vec![key("alice"), key("bob"), key("gone")];
    expected.sort();
    assert_eq!(keys, expected, "each once, the expired one revived");
    for e in &listed {
        assert!(
            e.expires_at.system_time() + slack >= clock.now_for_tests() + timeout,
            "every session of the batch counts a whole timeout from it: {e:?}"
        );
    }
    assert_eq!(
        s.open_with(clock.clone()).session_summary().unwrap().count,
        3
    );
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

/// The summary `offline status` shows counts what a listing lists when one
/// process writes: every live session once, logged-out ones not at all,
/// and the listing's last expiry.
pub fn the_summary_counts_what_the_listing_lists(site: &dyn Fn() -> FreshState) {
    let s = site();
    let clock = ManualClock::starting_now();
    let b = s.open_with(clock.clone());
    assert_eq!(
        b.session_summary().unwrap(),
        SessionSummary::default(),
        "nothing live: no count, no expiry"
    );
    for round in 0..12 {
        for i in 0..10 {
            b.touch_session(&key(&format!("user-{}", (round * 3 + i) % 25)))
                .unwrap();
        }
        clock.advance(Duration::from_secs(7));
    }
    b.end_session(&key("user-3")).unwrap();
    let listed = b.sessions().unwrap();
    assert_eq!(listed.len(), 24);
    let reader = s.open_with(clock.clone());
    let summary = reader.session_summary().unwrap();
    assert_eq!(summary.count, listed.len());
    assert_eq!(
        summary.last_expires_at,
        listed.iter().map(|e| e.expires_at).max()
    );
    assert_eq!(
        transition::status(reader.as_ref())
            .unwrap()
            .active_sessions(),
        24
    );
}

/// An expired session never counts in the summary; the summary's last
/// expiry is the live one's.
pub fn the_summary_never_counts_an_expired_session(site: &dyn Fn() -> FreshState) {
    let s = site();
    let clock = ManualClock::starting_now();
    let b = s.open_with(clock.clone());
    let timeout = b.session_timeout();
    b.touch_session(&key("old")).unwrap();
    clock.advance(timeout / 2);
    b.touch_session(&key("new")).unwrap();
    assert_eq!(b.session_summary().unwrap().count, 2);
    clock.advance(timeout / 2 + Duration::from_secs(11));
    let reader = s.open_with(clock.clone());
    let summary = reader.session_summary().unwrap();
    assert_eq!(summary.count, 1, "only `new` is live: {summary:?}");
    assert_eq!(
        summary.last_expires_at,
        reader.session(&key("new")).unwrap().map(|e| e.expires_at)
    );
    clock.advance(timeout);
    assert_eq!(
        s.open_with(clock.clone()).session_summary().unwrap(),
        SessionSummary::default()
    );
}

/// A session two processes recorded at different times counts at least
/// once, and exactly once after the next listing: the listing puts the
/// summary right. Logout ends it in the summary too.
pub fn a_session_two_processes_recorded_counts_once_after_the_next_listing(
    site: &dyn Fn() -> FreshState,
) {
    let s = site();
    let clock = ManualClock::starting_now();
    let a = s.open_with(clock.clone());
    let b = s.open_with(clock.clone());
    a.touch_session(&key("alice")).unwrap();
    clock.advance(Duration::from_secs(6));
    b.touch_session(&key("alice")).unwrap();
    assert!(a.session_summary().unwrap().count >= 1);
    assert_eq!(a.sessions().unwrap().len(), 1);
    assert_eq!(b.session_summary().unwrap().count, 1, "put right");
    b.end_session(&key("alice")).unwrap();
    assert_eq!(a.session_summary().unwrap(), SessionSummary::default());
}

/// Writers in several processes move sessions from bucket to bucket (one
/// clock, as on one host) while another process reads: no read — the
/// summary, the listing, one session's look — ever misses a session that
/// stays live throughout; sessions recorded by every writer count once in
/// the listing. Once the writers stop, one listing makes the summary
/// exact.
pub fn sessions_on_the_move_are_never_missed(site: &dyn Fn() -> FreshState) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    const WRITERS: usize = 3;
    const OWN: usize = 12;
    const SHARED: usize = 4;
    const READS: usize = 100;
    let s = site();
    let clock = ManualClock::starting_now();
    // Each writer's own sessions, and those every writer records.
    let own = |w: usize, i: usize| key(&format!("user-{w}-{i}"));
    let shared = |i: usize| key(&format!("shared-{i}"));
    let mut stable: Vec<SessionKey> = (0..SHARED).map(shared).collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let b = s.open_with(clock.clone());
            for i in 0..OWN {
                b.touch_session(&own(w, i)).unwrap();
                stable.push(own(w, i));
            }
            for i in 0..SHARED {
                b.touch_session(&shared(i)).unwrap();
            }
            b
        })
        .collect();
    let reader = s.open_with(clock.clone());
    let stop = AtomicBool::new(false);
    // Rounds each writer has finished.
    let rounds: Vec<AtomicUsize> = (0..WRITERS).map(|_| AtomicUsize::new(0)).collect();
    std::thread::scope(|scope| {
        for (w, b) in writers.iter().enumerate() {
            let (stop, rounds) = (&stop, &rounds);
            scope.spawn(move || {
                let mut r = 0;
                while !stop.load(Ordering::Relaxed) {
                    for i in 0..OWN {
                        b.touch_session(&own(w, i)).unwrap();
                    }
                    for i in 0..SHARED {
                        b.touch_session(&shared(i)).unwrap();
                    }
                    let churn = key(&format!("churn-{w}-{r}"));
                    b.touch_session(&churn).unwrap();
                    b.end_session(&churn).unwrap();
                    r += 1;
                    rounds[w].store(r, Ordering::Relaxed);
                }
            });
        }
        let finish = || stop.store(true, Ordering::Relaxed);
        let mut seen = [0; WRITERS];
        for read in 0..READS {
            // The clock moves on between reads, once every writer has
            // finished a round since it last moved (so none falls a
            // timeout behind): their touches then land in a newer bucket,
            // and the older entries go, while the reader reads.
            for (w, n) in rounds.iter().enumerate() {
                while n.load(Ordering::Relaxed) == seen[w] {
                    std::thread::yield_now();
                }
                seen[w] = n.load(Ordering::Relaxed);
            }
            clock.advance(Duration::from_secs(3));
            let summary = reader.session_summary().unwrap_or_else(|e| {
                finish();
                panic!("{e}")
            });
            let listed = reader.sessions().unwrap();
            let mut missing: Vec<&SessionKey> = stable
                .iter()
                .filter(|k| listed.iter().filter(|e| &e.key == *k).count() != 1)
                .collect();
            let one = &stable[read % stable.len()];
            if reader.session(one).unwrap().is_none() {
                missing.push(one);
            }
            if summary.count < stable.len() || !missing.is_empty() {
                finish();
                panic!(
                    "read {read}: summary {summary:?} of {} live; not listed exactly once or \
                     not found: {missing:?}",
                    stable.len()
                );
            }
        }
        finish();
    });
    let listed = reader.sessions().unwrap();
    assert_eq!(listed.len(), stable.len(), "churn all ended");
    assert_eq!(reader.session_summary().unwrap().count, stable.len());
}
