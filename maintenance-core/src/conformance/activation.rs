//! Conformance: taking the site offline — waiting for tasks and sessions,
//! the settle time (I2), timeouts, interruptions, cancellation, grace and
//! `--force`.

// A test suite: a panic is how it reports a failed behaviour.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use super::{
    FreshState, activate_blocked, activate_in_thread, activation, change, key, never, run_activate,
    task,
};
use crate::mode::Mode;
use crate::policy::Policy;
use crate::transition::{self, Outcome};

/// With nothing live, activation goes OFFLINE once the settle time passed.
pub fn activate_with_nothing_live_goes_offline_after_the_settle_time(
    site: &dyn Fn() -> FreshState,
) {
    let s = site();
    let b = s.open();
    let mut a = activation(Duration::from_secs(30));
    a.settle = Duration::from_millis(150);
    let mut looks = 0;
    let out = transition::activate(b.as_ref(), &a, &never, &mut |_| looks += 1).unwrap();
    let Outcome::Offline {
        record,
        live,
        joined,
        already,
    } = out
    else {
        panic!("offline, got {out:?}");
    };
    assert_eq!(record.mode, Mode::Offline);
    assert!(!joined && !already && live.active() == 0);
    assert!(looks >= 1, "it waited out the settle time");
    let view = s.open().mode().unwrap();
    assert_eq!(view.mode, Mode::Offline);
    let pending_since = view.record.since.system_time();
    assert!(pending_since >= SystemTime::UNIX_EPOCH);
}

/// A task started while ONLINE holds off OFFLINE until it ends.
pub fn activate_waits_for_a_task_and_goes_offline_when_it_ends(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let t = task(&s.open(), "job", Policy::DEFAULT).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter_backend = s.open();
    let h = std::thread::spawn(move || {
        let mut first = true;
        transition::activate(
            waiter_backend.as_ref(),
            &activation(Duration::from_secs(30)),
            &never,
            &mut |p| {
                if first {
                    first = false;
                    let names: Vec<String> =
                        p.holding.tasks.iter().map(|t| t.name.clone()).collect();
                    tx.send(names).unwrap();
                }
            },
        )
        .unwrap()
    });
    assert_eq!(rx.recv().unwrap(), ["job"], "the waiter names the task");
    assert_eq!(b.mode().unwrap().mode, Mode::Pending);
    drop(t);
    let out = h.join().unwrap();
    assert!(matches!(out, Outcome::Offline { .. }), "{out:?}");
    assert_eq!(b.mode().unwrap().mode, Mode::Offline);
}

/// A live session holds off OFFLINE until it logs out.
pub fn activate_waits_for_a_session_until_logout(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    b.touch_session(&key("alice")).unwrap();
    let (rx, h) = activate_in_thread(s.open(), Duration::from_secs(30));
    assert_eq!(rx.recv().unwrap(), 1);
    b.end_session(&key("alice")).unwrap();
    assert!(matches!(
        h.join().unwrap().unwrap(),
        Outcome::Offline { .. }
    ));
}

/// A timeout goes back ONLINE and names what still held it off.
pub fn a_timeout_goes_back_online_and_names_what_was_live(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let _t = task(&s.open(), "import", Policy::DEFAULT).unwrap();
    b.touch_session(&key("alice")).unwrap();
    let out = run_activate(&b, &activation(Duration::from_millis(100)));
    let Outcome::TimedOut { live, record } = out else {
        panic!("timed out, got {out:?}");
    };
    assert_eq!(record.mode, Mode::Online);
    assert_eq!(live.tasks.len(), 1);
    assert_eq!(live.sessions.len(), 1);
    let lines = live.describe(SystemTime::now());
    assert!(lines[0].starts_with("command `import` (pid "), "{lines:?}");
    assert!(
        lines[0].contains(&crate::identity::Identity::current().user_at_host()),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("1 web session (the last expires in "),
        "{lines:?}"
    );
    let view = s.open().mode().unwrap();
    assert_eq!(view.mode, Mode::Online);
    assert!(view.lapsed.is_none(), "a clean leave is not a lapse");
}

/// An interruption leaves the wait and the site goes back ONLINE.
pub fn an_interruption_goes_back_online(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let _t = task(&s.open(), "import", Policy::DEFAULT).unwrap();
    let calls = std::cell::Cell::new(0);
    let stop = || {
        calls.set(calls.get() + 1);
        calls.get() > 2
    };
    let out = transition::activate(
        b.as_ref(),
        &activation(Duration::from_secs(30)),
        &stop,
        &mut |_| {},
    )
    .unwrap();
    assert!(
        matches!(out, Outcome::Interrupted { ref record, .. } if record.mode == Mode::Online),
        "{out:?}"
    );
    assert_eq!(s.open().mode().unwrap().mode, Mode::Online);
}

/// Going ONLINE from another process cancels the wait, naming who.
pub fn deactivate_cancels_a_waiting_activation(site: &dyn Fn() -> FreshState) {
    let s = site();
    let _t = task(&s.open(), "import", Policy::DEFAULT).unwrap();
    let wb = s.open();
    let h = std::thread::spawn(move || run_activate(&wb, &activation(Duration::from_secs(30))));
    let b = s.open();
    while b.mode().unwrap().mode != Mode::Pending {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut ops = change();
    ops.by = "ops@elsewhere".into();
    transition::deactivate(b.as_ref(), &ops, false).unwrap();
    let out = h.join().unwrap();
    assert!(
        matches!(&out, Outcome::Cancelled { by, .. } if by == "ops@elsewhere"),
        "{out:?}"
    );
    assert_eq!(b.mode().unwrap().mode, Mode::Online);
}

/// A second activation joins the first (updating the message) and both
/// return OFFLINE when the holder ends.
pub fn a_second_activation_joins_the_first(site: &dyn Fn() -> FreshState) {
    let s = site();
    let t = task(&s.open(), "import", Policy::DEFAULT).unwrap();
    let b = s.open();
    let b1 = s.open();
    let h1 = std::thread::spawn(move || run_activate(&b1, &activation(Duration::from_secs(30))));
    while b.mode().unwrap().mode != Mode::Pending {
        std::thread::sleep(Duration::from_millis(5));
    }
    let b2 = s.open();
    let h2 = std::thread::spawn(move || {
        let mut a = activation(Duration::from_secs(30));
        a.change = a.change.message(Some("upgrading".into()));
        run_activate(&b2, &a)
    });
    while b.mode().unwrap().record.message.is_none() {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(t);
    let (o1, o2) = (h1.join().unwrap(), h2.join().unwrap());
    assert!(
        matches!(o1, Outcome::Offline { joined: false, .. }),
        "{o1:?}"
    );
    assert!(
        matches!(o2, Outcome::Offline { joined: true, .. }),
        "{o2:?}"
    );
    let r = b.mode().unwrap().record;
    assert_eq!(
        (r.mode, r.message.as_deref()),
        (Mode::Offline, Some("upgrading"))
    );
}

/// `--force`: OFFLINE at once, reporting what is still live.
pub fn force_goes_offline_with_what_is_live(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let _t = task(&s.open(), "import", Policy::DEFAULT).unwrap();
    b.touch_session(&key("alice")).unwrap();
    let (record, live) = transition::force(b.as_ref(), &change()).unwrap();
    assert_eq!(record.mode, Mode::Offline);
    assert_eq!(live.active(), 2);
}

/// After the grace period sessions stop holding it off; commands do not.
pub fn grace_lets_sessions_go_but_not_commands(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    b.touch_session(&key("alice")).unwrap();
    let mut a = activation(Duration::from_secs(30));
    a.grace = Some(Duration::from_millis(100));
    let out = run_activate(&b, &a);
    let Outcome::Offline { live, .. } = out else {
        panic!("offline, got {out:?}")
    };
    assert_eq!(live.sessions.len(), 1, "the session was let go, still live");
    b.go_online(&change()).unwrap();
    let _t = task(&s.open(), "import", Policy::DEFAULT).unwrap();
    let mut a = activation(Duration::from_millis(400));
    a.grace = Some(Duration::ZERO);
    assert!(
        matches!(run_activate(&b, &a), Outcome::TimedOut { .. }),
        "a command still holds"
    );
}

/// I2: a session a stale layer lets in during the settle time is counted.
pub fn a_session_touched_during_the_settle_time_is_counted(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let wb = s.open();
    let h = std::thread::spawn(move || {
        let mut a = activation(Duration::from_millis(1500));
        a.settle = Duration::from_millis(300);
        run_activate(&wb, &a)
    });
    while b.mode().unwrap().mode != Mode::Pending {
        std::thread::sleep(Duration::from_millis(2));
    }
    // A layer whose snapshot still says ONLINE lets a new user in.
    b.touch_session(&key("late")).unwrap();
    let out = h.join().unwrap();
    assert!(
        matches!(out, Outcome::TimedOut { ref live, .. } if live.sessions.len() == 1),
        "{out:?}"
    );
}

/// Status: the mode, and sessions plus tasks as the status line's "Active
/// sessions" counts them.
pub fn status_counts_sessions_and_tasks(site: &dyn Fn() -> FreshState) {
    let s = site();
    let b = s.open();
    let _t = task(&s.open(), "import", Policy::DEFAULT).unwrap();
    for i in 0..3 {
        b.touch_session(&key(&format!("u{i}"))).unwrap();
    }
    let st = transition::status(b.as_ref()).unwrap();
    assert_eq!(st.view.mode, Mode::Online);
    assert_eq!(st.active_sessions(), 4);
}

/// A task with drain `block` refuses an activation at once; nothing waits
/// and the site never leaves ONLINE.
pub fn a_blocking_task_refuses_activation_and_the_site_stays_online(site: &dyn Fn() -> FreshState) {
    use crate::policy::Drain;
    let s = site();
    let b = s.open();
    let t = task(&s.open(), "backup", Policy::DEFAULT.drain(Drain::Block)).unwrap();
    let before = b.mode().unwrap().record;
    let (tasks, err) = activate_blocked(&b);
    assert_eq!(tasks[0].id, t.record().id);
    assert!(err.to_string().contains("`backup`"), "{err}");
    let view = b.mode().unwrap();
    assert_eq!(view.mode, Mode::Online);
    assert_eq!(view.record, before, "PENDING never began");
    drop(t);
    assert!(matches!(
        run_activate(&b, &activation(Duration::from_secs(30))),
        Outcome::Offline { .. }
    ));
}
