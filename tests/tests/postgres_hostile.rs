//! The PostgreSQL backend attacked from outside, end to end with the real
//! binary: processes killed with SIGKILL at random moments (waiters, task
//! holders), the server ending manage's connections mid-operation
//! (`pg_terminate_backend`), rows damaged by someone with write access, and
//! database URLs pointing at what is not PostgreSQL. Each ends in a clear
//! error or a recovery, never a panic or a hang, and `status` is truthful
//! afterwards. Needs `$MANAGE_TEST_DATABASE_URL` (skipped without it,
//! failing under CI or scripts/test).

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

use maintenance_core::Mode;
use manage_tests::{
    CliSite, HANG_GUARD, Link, Outcome, host_port, poll_until, poll_until_within, psql,
    test_database_url,
};

const EXE: &str = env!("CARGO_BIN_EXE_e2e-manage");

/// A random number below `n`.
fn random_below(n: u64) -> u64 {
    u64::from_str_radix(&maintenance_core::random::hex::<8>(), 16).unwrap() % n
}

/// The live tasks `offline status --json` counts.
fn status_tasks(site: &CliSite) -> usize {
    site.status_json()["tasks"].as_array().unwrap().len()
}

/// Polls until `offline status` counts `n` live tasks.
fn wait_for_tasks(site: &CliSite, n: usize) {
    poll_until(&format!("{n} live tasks in status"), || {
        (status_tasks(site) == n).then_some(())
    });
}

/// Asserts `out` is a clean end: success, or an error that names the
/// server and is neither a panic nor a signal.
#[track_caller]
fn assert_ok_or_clean_error(out: &Outcome, what: &str) {
    if out.success() {
        return;
    }
    assert!(
        matches!(out.code(), Some(c) if c != 101),
        "{what} ended by a signal or a panic: {out}"
    );
    assert!(!out.text().contains("panicked"), "{what}: {out}");
    assert!(out.stderr.contains("error:"), "{what}: {out}");
}

/// Kills with SIGKILL, at random moments, the waiter of `offline on`, one
/// of two task holders, or both, many times over: `status` then counts
/// exactly the live tasks (nothing stale), the mode is what the survivors
/// make it, `offline off` always works, and `offline doctor` finds the
/// site healthy at the end.
#[test]
fn kill9_of_waiters_and_holders_at_random_moments_leaves_status_truthful() {
    let Some(url) = test_database_url() else {
        return;
    };
    let site = CliSite::on_postgres(EXE, &url, "");
    let backend = site.backend();
    for round in 0..12 {
        let (mut a, _) = site.start(&["sleeper-many", "--secs", "600"]);
        let (mut b, _) = site.start(&["sleeper-many", "--secs", "600"]);
        let mut on = site.spawn(&["offline", "on", "--timeout", "300"]);
        // A random moment: as the waiter starts, or once it waits.
        if random_below(2) == 0 {
            site.wait_for_mode(Mode::Pending);
        } else {
            std::thread::sleep(Duration::from_millis(random_below(80)));
        }
        match random_below(3) {
            0 => {
                on.kill9();
                // A dead waiter's PENDING lapses: the site is ONLINE, and
                // both holders still count.
                poll_until("the dead waiter's PENDING to lapse", || {
                    (backend.mode().unwrap().mode == Mode::Online).then_some(())
                });
                assert_eq!(status_tasks(&site), 2, "round {round}");
                a.kill9();
                b.kill9();
                wait_for_tasks(&site, 0);
            }
            1 => {
                a.kill9();
                wait_for_tasks(&site, 1);
                assert_ne!(backend.mode().unwrap().mode, Mode::Offline, "round {round}");
                b.kill9();
                let out = on.finish();
                assert_eq!(out.code(), Some(0), "round {round}: {out}");
                assert_eq!(backend.mode().unwrap().mode, Mode::Offline);
                wait_for_tasks(&site, 0);
            }
            _ => {
                a.kill9();
                b.kill9();
                let out = on.finish();
                assert_eq!(out.code(), Some(0), "round {round}: {out}");
                assert_eq!(backend.mode().unwrap().mode, Mode::Offline);
                wait_for_tasks(&site, 0);
            }
        }
        let off = site.run(&["offline", "off"]);
        assert_eq!(off.code(), Some(0), "round {round}: {off}");
        assert_eq!(backend.mode().unwrap().mode, Mode::Online);
    }
    assert!(backend.tasks().unwrap().is_empty());
    let doctor = site.run(&["offline", "doctor"]);
    assert_eq!(doctor.code(), Some(0), "{doctor}");
}

/// The server ends every connection of the site (`pg_terminate_backend`)
/// while `offline on` waits and while tasks start: each run ends cleanly
/// (done, or a clear error naming the server) within the hang guard, never
/// a panic; afterwards the site recovers with `offline off` and `status`
/// counts only what is live.
#[test]
fn the_server_ending_the_connections_mid_operation_is_a_clear_error_or_a_recovery() {
    let Some(url) = test_database_url() else {
        return;
    };
    let site = CliSite::on_postgres(EXE, &url, "");
    let name = site.postgres_site().unwrap().to_owned();
    let backend = site.backend();
    let terminate = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = '{name}'"
    );
    for round in 0..4 {
        let (mut task, _) = site.start(&["sleeper-many", "--secs", "600"]);
        let on = site.spawn(&["offline", "on", "--timeout", "300"]);
        site.wait_for_mode(Mode::Pending);
        psql(&url, &terminate);
        // The waiter lost its connection: it goes on, or stops with a clear
        // error; never a panic, never a hang. The task enters again through
        // the gate (or is stopped, the site PENDING): killed here, so a
        // waiter that went on then has nothing left to wait for.
        task.kill9();
        let out = on.finish();
        assert_ok_or_clean_error(&out, &format!("round {round}: offline on"));
        if !out.success() {
            // The server ended it: said so, with the code of a server that
            // could not be asked, not a hint about privileges.
            assert_eq!(out.code(), Some(69), "round {round}: {out}");
            assert!(!out.text().contains("privileges"), "round {round}: {out}");
        }
        let off = site.run(&["offline", "off"]);
        assert_eq!(off.code(), Some(0), "round {round}: {off}");
        assert_eq!(backend.mode().unwrap().mode, Mode::Online);
        wait_for_tasks(&site, 0);
    }
    // Task starts while the server ends connections over and over.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let (stop, url, terminate) = (stop.clone(), url.clone(), terminate.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                psql(&url, &terminate);
                std::thread::sleep(Duration::from_millis(random_below(30)));
            }
        })
    };
    for round in 0..16 {
        let out = site.run(&["sleeper-many", "--secs", "0"]);
        assert_ok_or_clean_error(&out, &format!("start {round}"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    killer.join().unwrap();
    wait_for_tasks(&site, 0);
    let doctor = site.run(&["offline", "doctor"]);
    assert_eq!(doctor.code(), Some(0), "{doctor}");
}

/// Rows damaged by someone with write access to the schema, through the
/// binary: a mode row with an unknown mode is a clear error naming the
/// table, and the way out it names, `offline off --force`, works (I4); a
/// live task whose row is garbage still holds `offline on` off (I1).
#[test]
fn damaged_rows_are_clear_errors_with_a_way_out_and_never_hide_a_task() {
    let Some(url) = test_database_url() else {
        return;
    };
    let site = CliSite::on_postgres(EXE, &url, "");
    let name = site.postgres_site().unwrap().to_owned();
    let backend = site.backend();
    let on = site.run(&["offline", "on", "--force"]);
    assert_eq!(on.code(), Some(0), "{on}");
    psql(
        &url,
        &format!(
            "UPDATE manage.modes SET record = '{{\"mode\":\"BANANA\"}}' WHERE site = '{name}'"
        ),
    );
    let status = site.run(&["offline", "status"]);
    status.assert_clean_error(&["manage.modes", "is corrupt", "offline off --force"]);
    let doctor = site.run(&["offline", "doctor"]);
    assert_ne!(doctor.code(), Some(0), "{doctor}");
    assert!(doctor.text().contains("is corrupt"), "{doctor}");
    let off = site.run(&["offline", "off", "--force"]);
    assert_eq!(off.code(), Some(0), "{off}");
    assert_eq!(backend.mode().unwrap().mode, Mode::Online);
    let doctor = site.run(&["offline", "doctor"]);
    assert_eq!(doctor.code(), Some(0), "{doctor}");

    let (mut task, _) = site.start(&["sleeper-many", "--secs", "600"]);
    psql(
        &url,
        &format!("UPDATE manage.tasks SET record = 'garbage' WHERE site = '{name}'"),
    );
    assert_eq!(status_tasks(&site), 1, "the damaged row still counts");
    let on = site.run(&["offline", "on", "--timeout", "1"]);
    assert_eq!(on.code(), Some(124), "timed out waiting for the task: {on}");
    assert_eq!(backend.mode().unwrap().mode, Mode::Online);
    task.kill9();
    wait_for_tasks(&site, 0);
}

/// A database URL naming something that is not a PostgreSQL server — an
/// HTTP server, a server that accepts and never answers — or written with
/// the password's `/` unencoded: a clear error naming the server (or the
/// variable) within the connect timeout, never the password, never a
/// panic.
#[test]
fn urls_naming_what_is_not_postgresql_are_clear_errors_never_showing_the_password() {
    let secret = "s3cr3t-pw";
    // A server that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    // An HTTP server answering everything with a 400, as nginx would.
    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    let http_port = http.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in http.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0; 1024];
            let _ = conn.read(&mut buf);
            let _ = std::io::Write::write_all(
                &mut conn,
                b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nContent-Length: 0\r\n\r\n",
            );
        }
    });
    let silent_port = silent.local_addr().unwrap().port();
    let site = CliSite::in_state_dir(EXE, "");
    for (url, needles) in [
        (
            format!("postgres://app:{secret}@127.0.0.1:{silent_port}/db?connect_timeout=2"),
            vec![
                format!("127.0.0.1:{silent_port}"),
                "connect_timeout".to_owned(),
            ],
        ),
        (
            format!(
                "postgres://app:{secret}@127.0.0.1:{silent_port}/db?connect_timeout=2&sslmode=require"
            ),
            vec![
                format!("127.0.0.1:{silent_port}"),
                "connect_timeout".to_owned(),
            ],
        ),
        (
            format!("postgres://app:{secret}@127.0.0.1:{http_port}/db?sslmode=disable"),
            vec![
                format!("127.0.0.1:{http_port}"),
                "check the host and port".to_owned(),
            ],
        ),
        (
            format!("postgres://app:{secret}@127.0.0.1:{http_port}/db?sslmode=require"),
            vec![format!("127.0.0.1:{http_port}"), "TLS".to_owned()],
        ),
        (
            format!("postgres://app:{secret}/more@127.0.0.1:{http_port}/db"),
            vec![
                "$MANAGE_DATABASE_URL".to_owned(),
                "percent-encoded".to_owned(),
            ],
        ),
        (
            format!("postgres://app:{secret}/db"),
            vec!["$MANAGE_DATABASE_URL".to_owned(), "the port".to_owned()],
        ),
    ] {
        let mut cmd = site.command(&["offline", "status"]);
        cmd.env("MANAGE_DATABASE_URL", &url);
        let out = manage_tests::Proc::spawn(cmd).finish();
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        out.assert_clean_error(&needles);
        assert!(!out.text().contains(secret), "{url}: {out}");
        assert!(!out.text().contains(&secret[..4]), "{url}: {out}");
    }
    drop(silent);
}

/// The way out a corrupt mode record's error names, `offline off
/// --force`, works on the file backend too (the CLI read the record before
/// the backend's writer could replace it, on both backends).
#[test]
fn off_force_rewrites_a_corrupt_mode_record_on_the_file_backend_too() {
    let site = CliSite::in_state_dir(EXE, "");
    let on = site.run(&["offline", "on", "--force"]);
    assert_eq!(on.code(), Some(0), "{on}");
    let mode_json = site.state().join("mode.json");
    std::fs::write(&mode_json, "{\"mode\":\"BANANA\"}").unwrap();
    let status = site.run(&["offline", "status"]);
    status.assert_clean_error(&["mode.json", "is corrupt", "offline off --force"]);
    let off = site.run(&["offline", "off", "--force"]);
    assert_eq!(off.code(), Some(0), "{off}");
    assert_eq!(site.mode().mode, Mode::Online);
    let status = site.run(&["offline", "status"]);
    assert_eq!(status.code(), Some(0), "{status}");
}

/// A server that stops answering mid-operation while `offline on` waits:
/// to its clients, a server whose processes stopped (SIGSTOP) and a link
/// that forwards nothing are the same, TCP up, keepalives answered by a
/// kernel, no byte back; the link makes it so for every connection at
/// once, the new ones too. (Stopping only the server processes of the
/// site's connections left new connections answered, so whether the wait
/// said anything depended on whether its retry found a fresh connection:
/// carrying on there is right, and was no outage to test.) The waiter
/// notices within its answer guard, says so once, and rides the outage
/// out rather than hang or give up; the task is told to stop or gets back
/// in; once the server answers again, the site is where the survivors
/// leave it.
#[test]
fn a_server_that_stops_answering_mid_wait_is_a_clear_error_not_a_hang() {
    let Some(url) = test_database_url() else {
        return;
    };
    let link = Link::to(host_port(&url));
    let site = CliSite::on_postgres(EXE, &link.url(&url), "");
    let (mut task, _) = site.start(&["sleeper-many", "--secs", "600"]);
    let mut on = site.spawn(&["offline", "on", "--timeout", "600"]);
    site.wait_for_mode(Mode::Pending);
    link.stall();
    // Against a timeout of 600 s, the wait notices within its request
    // guard that the server stopped answering, and says so once; it rides
    // the outage out (README: up to 60 s) rather than hang or give up.
    // The step the stall catches may be the gate's, whose guard allows
    // the keepalive bound on top (30 s in all): the hang guard is twice
    // the usual one. A wait that ends during the outage fails the test
    // at once, with what it said.
    let heard = std::cell::RefCell::new(String::new());
    let said = poll_until_within(
        2 * HANG_GUARD,
        "the wait says it lost the server",
        || {
            let running = on.is_running();
            *heard.borrow_mut() = on.stderr_so_far();
            let said = heard.borrow().contains("lost the state database");
            (said || !running).then_some(said)
        },
        || format!("the wait said: {}", heard.borrow()),
    );
    if !said {
        let out = on.finish();
        panic!("the wait ended during the outage: {out}");
    }
    link.restore();
    // The task could not prove its hold while its server process was
    // silent (its own connection's check, every second): it was told to
    // stop, as a cut-off host's task is (README, "no split brain"), unless
    // it got back in first. Either way it never counts without running.
    poll_until("the task stopped, or in again", || {
        (!task.is_running() || status_tasks(&site) == 1).then_some(())
    });
    if task.is_running() {
        assert_eq!(status_tasks(&site), 1, "the task still runs, and counts");
        task.kill9();
    } else {
        let out = task.finish();
        assert!(out.text().contains("`sleeper-many` is stopped"), "{out}");
    }
    wait_for_tasks(&site, 0);
    // With the task gone the drain ends OFFLINE, unless `off` comes first
    // and cancels it; either way the wait ends, having said once that it
    // lost the server and why.
    let off = site.run(&["offline", "off"]);
    assert_eq!(off.code(), Some(0), "{off}");
    let out = on.finish();
    assert!(
        matches!(out.code(), Some(0) | Some(75)),
        "reached OFFLINE or cancelled: {out}"
    );
    assert!(!out.text().contains("panicked"), "{out}");
    assert_eq!(
        out.stderr.matches("lost the state database").count(),
        1,
        "the outage said once: {out}"
    );
    // Said as silence, in the answer guard's words or, when the step
    // needed a new connection, the connect timeout's (not the generic
    // "lost, or stopped answering" of a connection ended).
    assert!(out.stderr.contains("PostgreSQL at"), "{out}");
    assert!(
        out.stderr.contains("nothing came back for") || out.stderr.contains("no answer within"),
        "said as silence: {out}"
    );
}
