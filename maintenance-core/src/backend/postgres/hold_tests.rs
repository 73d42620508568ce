//! A live task's hold across a lost lock connection (`tasks.rs`): it
//! enters again through the gate when the server ends its connection, is
//! told to stop when the gate refuses it or the server stays silent, and
//! is never told inside an `offline run` window.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::window::testing::{eventually, holder, open, site, terminate_holder};
use crate::backend::{Backend, HoldLost, ModeChange, PendingStart, TaskLease};
use crate::config::Config;
use crate::error::Refusal;
use crate::mode::Mode;
use crate::policy::{Instances, Maintenance, Policy};
use crate::records::TaskRequest;

fn request(instances: Instances) -> TaskRequest {
    TaskRequest {
        name: "job".into(),
        argv: vec!["job".into()],
        policy: Policy::DEFAULT
            .instances(instances)
            .maintenance(Maintenance::Refused),
        ignore_maintenance: false,
        in_window: false,
        lock_timeout: Duration::ZERO,
    }
}

/// The key a lease holds (its id is `<key>-<random>`).
fn key(lease: &dyn TaskLease) -> i32 {
    lease
        .record()
        .id
        .split_once('-')
        .unwrap()
        .0
        .parse()
        .unwrap()
}

/// Where `on_hold_lost` reports.
fn watch_lost(lease: &mut dyn TaskLease) -> mpsc::Receiver<HoldLost> {
    let (tx, rx) = mpsc::channel();
    lease.on_hold_lost(Box::new(move |why| {
        let _ = tx.send(why);
    }));
    rx
}

/// The server ends the connection holding `lease`'s key; returns once
/// another connection holds it again.
fn terminate_and_see_it_back(b: &super::PostgresBackend, lease: &dyn TaskLease) {
    let k = key(lease);
    let first = holder(&b.inner, k).expect("held");
    terminate_holder(&b.inner, k);
    eventually("the task's key held again, on a new connection", || {
        holder(&b.inner, k).is_some_and(|p| p != first)
    });
}

#[test]
fn a_task_whose_lock_connection_the_server_ends_enters_again_keeping_its_record() {
    let Some((config, b)) = site() else { return };
    for instances in [Instances::Concurrent, Instances::Single] {
        let mut lease = b.start_task(&request(instances), "s").unwrap();
        let lost = watch_lost(lease.as_mut());
        let record = lease.record().clone();
        terminate_and_see_it_back(&b, lease.as_ref());
        let other = open(&config);
        assert_eq!(
            other.tasks().unwrap(),
            std::slice::from_ref(&record),
            "listed again, with the same id, start and standing"
        );
        if instances == Instances::Single {
            let second = other.start_task(&request(instances), "s").unwrap_err();
            assert!(
                matches!(
                    &second,
                    crate::Error::Refused(Refusal::AlreadyRunning { .. })
                ),
                "the instance key is held again: {second}"
            );
        }
        assert!(lost.try_recv().is_err(), "never told to stop");
        drop(lease);
        assert!(other.tasks().unwrap().is_empty());
    }
}

#[test]
fn a_task_whose_connection_ends_while_the_site_is_offline_or_pending_is_told_to_stop() {
    let Some((config, b)) = site() else { return };
    let other = open(&config);
    let me = ModeChange::by_this_process();
    for mode in [Mode::Offline, Mode::Pending] {
        let mut lease = b.start_task(&request(Instances::Concurrent), "s").unwrap();
        let lost = watch_lost(lease.as_mut());
        let _waiter = match mode {
            Mode::Offline => {
                other.force_offline(&me).unwrap();
                None
            }
            _ => match other.begin_pending(&me).unwrap() {
                PendingStart::Waiting { waiter, .. } => Some(waiter),
                p => panic!("{p:?}"),
            },
        };
        terminate_holder(&b.inner, key(lease.as_ref()));
        let why = lost.recv_timeout(Duration::from_secs(60)).expect("told");
        assert!(
            matches!(why, HoldLost::Refused(Refusal::Maintenance { .. })),
            "{mode:?}: {why:?}"
        );
        assert!(other.tasks().unwrap().is_empty(), "{mode:?}: not back");
        drop(lease);
        drop(_waiter);
        other.go_online(&me).unwrap();
    }
}

#[test]
fn a_task_inside_the_window_enters_again_and_is_never_told_to_stop() {
    let Some((config, b)) = site() else { return };
    let me = ModeChange::by_this_process();
    b.force_offline(&me).unwrap();
    let mut lease = b
        .start_task(
            &TaskRequest {
                in_window: true,
                ..request(Instances::Concurrent)
            },
            "s",
        )
        .unwrap();
    let lost = watch_lost(lease.as_mut());
    terminate_and_see_it_back(&b, lease.as_ref());
    assert_eq!(open(&config).tasks().unwrap().len(), 1);
    assert!(lost.try_recv().is_err(), "never told to stop");
}

/// A TCP proxy to the test server that can be stalled: from then on it
/// forwards nothing either way and connects nobody new, as a cut link
/// would, while its connections to the server stay open (as the server's
/// do until its keepalives end them).
struct Proxy {
    port: u16,
    stalled: Arc<AtomicBool>,
    upstreams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn to() -> Proxy {
        let url = raw_url();
        let target = url
            .split('@')
            .nth(1)
            .and_then(|h| h.split('/').next())
            .unwrap()
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stalled = Arc::new(AtomicBool::new(false));
        let upstreams = Arc::new(Mutex::new(Vec::new()));
        let (s, u) = (Arc::clone(&stalled), Arc::clone(&upstreams));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if s.load(Ordering::SeqCst) {
                    // Cut off: the connection is never answered.
                    std::mem::forget(client);
                    continue;
                }
                let server = TcpStream::connect(&target).unwrap();
                u.lock().unwrap().push(server.try_clone().unwrap());
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let s = Arc::clone(&s);
                    std::thread::spawn(move || pump(from, to, &s));
                }
            }
        });
        Proxy {
            port,
            stalled,
            upstreams,
        }
    }

    /// `config` through this proxy.
    fn config(&self, config: &Config) -> Config {
        let mut c = config.clone();
        let url = raw_url();
        let (head, tail) = url.split_once('@').unwrap();
        let rest = tail.split_once('/').unwrap().1;
        c.postgres.url = Some(
            crate::DatabaseUrl::parse(&format!("{head}@127.0.0.1:{}/{rest}", self.port)).unwrap(),
        );
        c
    }

    fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    /// What the server's keepalives do, at last: its ends close.
    fn close_upstreams(&self) {
        for s in self.upstreams.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// The test server's URL as given (with its password).
fn raw_url() -> String {
    std::env::var(crate::conformance::ENV_TEST_DATABASE_URL).unwrap()
}

fn pump(mut from: TcpStream, mut to: TcpStream, stalled: &AtomicBool) {
    let mut buf = [0u8; 16384];
    from.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    loop {
        if stalled.load(Ordering::SeqCst) {
            // Holds both ends open, silent.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                // Read before the stall, dropped after it: the link is cut.
                if stalled.load(Ordering::SeqCst) {
                    continue;
                }
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

#[test]
fn a_task_cut_off_from_a_silent_server_is_told_to_stop_while_the_server_still_holds_its_lock() {
    let Some((config, b)) = site() else { return };
    let proxy = Proxy::to();
    let cut = open(&proxy.config(&config));
    let mut lease = cut
        .start_task(&request(Instances::Concurrent), "s")
        .unwrap();
    let lost = watch_lost(lease.as_mut());
    let k = key(lease.as_ref());
    let first = holder(&b.inner, k).expect("held");
    proxy.stall();
    let why = lost.recv_timeout(Duration::from_secs(120)).expect("told");
    assert!(matches!(why, HoldLost::Unreachable(_)), "{why:?}");
    assert_eq!(
        holder(&b.inner, k),
        Some(first),
        "told while the server still holds the lock"
    );
    assert_eq!(b.tasks().unwrap().len(), 1, "still live for the server");
    proxy.close_upstreams();
    eventually("the lock freed once the server ends the connection", || {
        holder(&b.inner, k).is_none()
    });
    assert!(b.tasks().unwrap().is_empty());
    drop(lease);
}

/// A waiter whose key the server freed (its connection ended) does not
/// complete the drain, which readers saw lapse; it takes its key back
/// (`keep` says so, the settle time counts again), and the drain reads
/// live again — also when the gate's look has probed the free key.
#[test]
fn a_waiter_whose_connection_was_ended_takes_its_key_back_before_it_completes() {
    let Some((_, b)) = site() else { return };
    let waiter = match b.begin_pending(&ModeChange::by_this_process()).unwrap() {
        PendingStart::Waiting { waiter, .. } => waiter,
        p => panic!("{p:?}"),
    };
    let inner = Arc::clone(&b.inner);
    let keys = super::runtime::block_on(async move {
        inner
            .exec(&format!(
                "SELECT key FROM {}.waiters WHERE site = {}",
                inner.s(),
                inner.site_lit()
            ))
            .await
    })
    .unwrap();
    let key: i32 = keys[0][0][0].as_deref().unwrap().parse().unwrap();
    terminate_holder(&b.inner, key);
    assert!(
        b.mode().unwrap().lapsed.is_some(),
        "read as lapsed, its key free"
    );
    let done = b.complete_offline(waiter.as_ref(), None).unwrap();
    assert!(
        matches!(&done, crate::backend::Completion::Held(t) if t.is_empty()),
        "not completed while lapsed: {done:?}"
    );
    assert!(waiter.keep().unwrap(), "its key taken back");
    assert_eq!(b.mode().unwrap().mode, Mode::Pending, "live again");
    assert!(!waiter.keep().unwrap(), "held: nothing to take");
    let done = b.complete_offline(waiter.as_ref(), None).unwrap();
    assert!(
        matches!(&done, crate::backend::Completion::Offline(_)),
        "{done:?}"
    );
}

/// A check that the server answers by ending the connection (a restart's
/// termination reaching the check before the driver sees the close)
/// counts as the connection ended, so a task counted by a drain begun
/// since the last good check still enters again during it.
#[test]
fn a_check_the_server_answers_by_ending_the_connection_counts_as_ended() {
    let Some((_config, b)) = site() else { return };
    let inner = Arc::clone(&b.inner);
    let (ended, closed) = super::runtime::block_on(async move {
        let conn = inner.connect().await?;
        let e = super::sql::run(
            &conn.client,
            "SELECT pg_terminate_backend(pg_backend_pid())",
        )
        .await
        .expect_err("the server process ends itself");
        Ok((super::tasks::ended_by_server(&e), conn.client.is_closed()))
    })
    .unwrap();
    assert!(
        ended,
        "ended by the server (the driver saw the close: {closed})"
    );
}
