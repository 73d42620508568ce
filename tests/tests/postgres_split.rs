//! A host cut off from the database, and a database that restarts, end to
//! end on the postgres backend (issue "many hosts", no split brain): a
//! cut-off task's command is told to stop and is gone before the server
//! frees its lock; tasks whose lock connections the server ended enter
//! again through the gate and run on, keeping their start, unless the site
//! went OFFLINE meanwhile; a registered command that ignores the stop
//! request ends with exit 76 (HOLD_LOST), and so does an `offline run`
//! whose window's connection was cut past the bound. Needs `$MANAGE_TEST_DATABASE_URL` (skipped
//! without it, failing under CI or scripts/test).

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use maintenance_core::backend::WindowState;
use maintenance_core::task::STOP_GRACE;
use maintenance_core::{Backend, Mode, exit};
use manage_tests::fixture::NOTICED_STOP;
use manage_tests::hosts::{Binaries, Hosts};
use manage_tests::{CliSite, HANG_GUARD, Link, host_port, is_alive, test_database_url};

const EXE: &str = env!("CARGO_BIN_EXE_e2e-manage");

/// B, the server's keepalive bound (`connect.rs`): after a silent cut, the
/// server frees the lock no sooner than this.
const KEEPALIVE_BOUND: Duration = Duration::from_secs(20);

/// The site `site` on the server `url` names, opened in this process over
/// a connection of its own (never through the test's proxy).
fn observer(url: &str, site: &str) -> Arc<dyn Backend> {
    observer_in(url, site, "manage_test")
}

/// [`observer`] of a site in `schema`.
fn observer_in(url: &str, site: &str, schema: &str) -> Arc<dyn Backend> {
    let mut config = maintenance_core::Config::with_state_dir("/nonexistent");
    config.backend = maintenance_core::config::BackendKind::Postgres;
    config.postgres.url = Some(maintenance_core::DatabaseUrl::parse(url).unwrap());
    config.postgres.site = site.to_owned();
    config.postgres.schema = schema.into();
    maintenance_core::backend::open(&config, maintenance_core::SystemClock::shared()).unwrap()
}

fn site_on(url: &str) -> CliSite {
    CliSite::on_postgres(EXE, url, "[postgres]\nschema = \"manage_test\"\n")
}

#[track_caller]
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG_GUARD;
    while !f() {
        assert!(Instant::now() < deadline, "not {what} after {HANG_GUARD:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A command that says its pid, notes each SIGTERM in `term` and runs on:
/// only SIGKILL ends it.
const STUBBORN: &str = "#!/bin/sh\ntrap 'echo term >> term' TERM\necho \"started $$\"\n\
                        while :; do sleep 0.1; done\n";

/// A command that says its pid and sleeps until SIGTERM.
const WORKER: &str = "#!/bin/sh\ntrap 'exit 0' TERM\necho \"started $$\"\n\
                      while :; do sleep 0.1; done\n";

#[test]
fn a_cut_off_tasks_command_is_gone_before_the_server_frees_its_lock() {
    let Some(url) = test_database_url() else {
        return;
    };
    let proxy = Link::to(host_port(&url));
    let site = site_on(&proxy.url(&url));
    let watch = observer(&url, site.postgres_site().unwrap());
    site.external("job", STUBBORN);
    let (runner, pid) = site.start(&["job"]);
    let pid: u32 = pid.parse().unwrap();
    wait_until("the task live", || watch.tasks().unwrap().len() == 1);
    proxy.stall();
    let cut = Instant::now();
    // The server would free the lock KEEPALIVE_BOUND after the last packet
    // at the earliest: until then the proxy keeps its connection open.
    while is_alive(pid) && cut.elapsed() < KEEPALIVE_BOUND {
        std::thread::sleep(Duration::from_millis(20));
    }
    let gone = !is_alive(pid);
    let held = watch.tasks().unwrap().len();
    proxy.close_upstreams();
    assert!(
        gone,
        "the command still runs when the server may free its lock"
    );
    assert_eq!(held, 1, "the lock was still held when the command was gone");
    wait_until("the lock freed", || watch.tasks().unwrap().is_empty());
    let out = runner.finish();
    assert_eq!(out.code(), Some(137), "killed after its grace: {out}");
    assert!(out.text().contains("`job` is stopped:"), "{out}");
    assert!(
        std::fs::read_to_string(site.dir().join("term")).is_ok_and(|t| t.contains("term")),
        "told to stop (SIGTERM) first"
    );
}

#[test]
fn a_task_whose_lock_connection_is_ended_enters_again_unless_the_site_went_offline() {
    let Some(url) = test_database_url() else {
        return;
    };
    let site = site_on(&url);
    let name = site.postgres_site().unwrap().to_owned();
    let watch = observer(&url, &name);
    site.external("job", WORKER);
    let (runner, pid) = site.start(&["job"]);
    let pid: u32 = pid.parse().unwrap();
    wait_until("the task live", || watch.tasks().unwrap().len() == 1);
    let before = watch.tasks().unwrap();
    // As a migration that ends every connection of the site's.
    terminate_site_connections(&url, &name);
    wait_until("the task listed again", || watch.tasks().unwrap() == before);
    assert!(is_alive(pid), "not stopped");
    // Again, the site OFFLINE meanwhile: the gate refuses it, and it stops.
    let off = site.run(&["offline", "on", "--force"]);
    assert_eq!(off.code(), Some(0), "{off}");
    terminate_site_connections(&url, &name);
    let out = runner.finish();
    assert_eq!(out.code(), Some(0), "the command stopped on SIGTERM: {out}");
    assert!(out.text().contains("`job` is stopped:"), "{out}");
    assert!(out.text().contains("may not enter again"), "{out}");
    assert!(!is_alive(pid));
    assert!(watch.tasks().unwrap().is_empty());
    assert_eq!(watch.mode().unwrap().mode, Mode::Offline);
}

/// `pg_terminate_backend` of every connection whose `application_name` is
/// the site's (the test site's runs carry it).
fn terminate_site_connections(url: &str, site: &str) {
    let out = std::process::Command::new("psql")
        .arg(url)
        .args(["-Atc"])
        .arg(format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = '{site}'"
        ))
        .output()
        .expect("psql");
    assert!(out.status.success(), "{out:?}");
}

/// A throwaway cluster of this test's own (a restart ends every
/// connection on the server: never the shared test server's), stopped on
/// drop.
struct Cluster {
    dir: tempfile::TempDir,
    url: String,
}

impl Cluster {
    fn start() -> Option<Cluster> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-cluster");
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("c");
        let out = std::process::Command::new(&script)
            .arg("start")
            .arg(&c)
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!(
                "skipped: cannot start a cluster of this test's own: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Some(Cluster { dir, url })
    }

    fn restart(&self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-cluster");
        let out = std::process::Command::new(&script)
            .arg("restart")
            .arg(self.dir.path().join("c"))
            .output()
            .unwrap();
        assert!(out.status.success(), "restart: {out:?}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-cluster");
        let _ = std::process::Command::new(&script)
            .arg("stop")
            .arg(self.dir.path().join("c"))
            .output();
    }
}

#[test]
fn tasks_enter_again_after_the_server_restarts_and_are_not_stopped() {
    if test_database_url().is_none() {
        return;
    }
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let site = site_on(&cluster.url);
    let watch = observer(&cluster.url, site.postgres_site().unwrap());
    site.external("first", WORKER);
    site.external("second", WORKER);
    let (a, a_pid) = site.start(&["first"]);
    let (b, b_pid) = site.start(&["second"]);
    wait_until("both live", || watch.tasks().unwrap().len() == 2);
    let before = watch.tasks().unwrap();
    cluster.restart();
    let mut seen = Vec::new();
    wait_until("both listed again, as they were", || {
        seen = watch.tasks().unwrap_or_default();
        seen == before
    });
    for pid in [&a_pid, &b_pid] {
        assert!(is_alive(pid.parse().unwrap()), "{pid} not stopped");
    }
    let status = site.status_json();
    let tasks = status["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2, "{status}");
    for (t, was) in tasks.iter().zip(&before) {
        assert_eq!(t["id"], was.id.as_str(), "{status}");
    }
    // And `offline on` waits for them as it would have before.
    let mut on = site.spawn(&["offline", "on", "--timeout", "120"]);
    wait_until("PENDING", || watch.mode().unwrap().mode == Mode::Pending);
    for p in [&a_pid, &b_pid] {
        manage_tests::send_signal(p.parse().unwrap(), rustix::process::Signal::TERM);
    }
    for r in [a, b] {
        let out = r.finish();
        assert_eq!(out.code(), Some(0), "{out}");
        assert!(!out.text().contains("is stopped"), "{out}");
    }
    assert_eq!(on.wait_exit().code(), Some(0));
    assert_eq!(watch.mode().unwrap().mode, Mode::Offline);
}

/// Host `a` of one, its site's tasks watched from here.
fn one_host() -> Option<(Hosts, Arc<dyn Backend>)> {
    let bins = Binaries {
        manage: EXE.into(),
        mysite: env!("CARGO_BIN_EXE_e2e-mysite").into(),
    };
    let hosts = Hosts::new(1, &bins, "")?;
    let url = test_database_url().unwrap();
    let watch = observer_in(&url, hosts.site(), "manage");
    Some((hosts, watch))
}

#[test]
fn a_host_whose_link_goes_down_stops_its_task_before_the_server_frees_the_lock() {
    let Some((hosts, watch)) = one_host() else {
        return;
    };
    let b = hosts.host(0);
    // A command that stops only on `ctx.stop_requested()`, with a code of
    // its own: the stop request itself, not the kill G later, ends it.
    let (runner, _id) = b.start(&["stop-watcher"]);
    wait_until("the task live", || watch.tasks().unwrap().len() == 1);
    // A real cut: nothing passes, and the server's own keepalives decide
    // when it frees the lock.
    b.cut();
    let out = runner.finish();
    let held = watch.tasks().unwrap().len();
    assert!(out.text().contains("`stop-watcher` is stopped:"), "{out}");
    assert!(out.text().contains("noticed the stop request"), "{out}");
    assert_eq!(
        out.code(),
        Some(i32::from(NOTICED_STOP)),
        "it stopped on the request, with its own code: {out}"
    );
    assert_eq!(
        held, 1,
        "the command ended while the server still held its lock"
    );
    wait_until("the server freeing the lock", || {
        watch.tasks().unwrap().is_empty()
    });
    b.restore();
}

/// How long a wait goes on without the server (`transition.rs`).
const OUTAGE_BOUND: Duration = Duration::from_secs(60);

#[test]
fn a_waiter_that_cannot_reach_the_server_past_the_outage_bound_exits_69_saying_so_once() {
    let Some(url) = test_database_url() else {
        return;
    };
    let proxy = Link::to(host_port(&url));
    let site = site_on(&url);
    let name = site.postgres_site().unwrap().to_owned();
    let watch = observer(&url, &name);
    // The task holds the wait off, straight at the server; the waiter
    // reaches it only through the link.
    site.external("job", WORKER);
    let (runner, pid) = site.start(&["job"]);
    let pid: u32 = pid.parse().unwrap();
    wait_until("the task live", || watch.tasks().unwrap().len() == 1);
    let mut cmd = site.command(&["offline", "on", "--timeout", "600"]);
    let through = proxy.url(&url);
    let sep = if through.contains('?') { '&' } else { '?' };
    cmd.env(
        "MANAGE_DATABASE_URL",
        format!("{through}{sep}application_name={name}"),
    );
    let mut on = manage_tests::Proc::spawn(cmd);
    wait_until("PENDING", || watch.mode().unwrap().mode == Mode::Pending);
    proxy.cut();
    wait_until("the waiter saying it lost the server", || {
        let said = on.stderr_so_far();
        assert!(
            said.contains("lost the state database") || on.is_running(),
            "the waiter ended without riding the outage out: {said}"
        );
        said.contains("lost the state database")
    });
    // It keeps trying (each attempt refused by the link) until the bound.
    let lost = Instant::now();
    while on.is_running() {
        assert!(
            lost.elapsed() < OUTAGE_BOUND + HANG_GUARD,
            "still waiting {:?} after it lost the server",
            lost.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = on.finish();
    assert_eq!(out.code(), Some(69), "{out}");
    assert!(
        proxy.refused() > 1,
        "it tried again, {} times",
        proxy.refused()
    );
    assert!(
        out.text()
            .contains("not reached again within 60s of waiting"),
        "{out}"
    );
    assert_eq!(
        out.stderr.matches("lost the state database").count(),
        1,
        "an outage is said once: {out}"
    );
    assert!(is_alive(pid), "the task, which reaches the server, runs on");
    manage_tests::send_signal(pid, rustix::process::Signal::TERM);
    assert_eq!(runner.finish().code(), Some(0));
}

/// The server's clock, as seconds since the epoch.
fn server_now(url: &str) -> f64 {
    manage_tests::psql(url, "SELECT extract(epoch FROM clock_timestamp())")
        .parse()
        .unwrap()
}

/// Seconds since the epoch of `t`.
fn epoch(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A waiter whose key the server freed (its connections ended) takes it
/// back and counts the settle time again, since a layer may have read the
/// lapsed drain meanwhile (README, "A waiter whose own connection is
/// lost"): OFFLINE comes no sooner than the settle time after the
/// connections were ended, half a settle time into the drain, where the
/// first count would have ended it half a settle time earlier.
#[test]
fn a_waiter_that_takes_its_key_back_counts_the_settle_time_again() {
    let Some(url) = test_database_url() else {
        return;
    };
    // Settle time: twice the refresh interval.
    let settle = 10.0;
    let site = site_on(&url);
    let toml = site.dir().join("manage.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let slower = text.replace("refresh_interval = \"50ms\"", "refresh_interval = \"5s\"");
    assert_ne!(text, slower, "{text}");
    std::fs::write(&toml, slower).unwrap();
    let name = site.postgres_site().unwrap().to_owned();
    let watch = observer(&url, &name);
    let on = site.spawn(&["offline", "on", "--timeout", "600"]);
    wait_until("PENDING", || watch.mode().unwrap().mode == Mode::Pending);
    let pending = epoch(watch.mode().unwrap().record.since.system_time());
    wait_until("half the settle time gone", || {
        server_now(&url) >= pending + settle / 2.0
    });
    let cut = server_now(&url);
    terminate_site_connections(&url, &name);
    // Its record (read meanwhile as a lapsed drain, its key free).
    assert_eq!(
        watch.mode().unwrap().record.mode,
        Mode::Pending,
        "still settling when its connections were ended"
    );
    // Its key back, the drain reads as live again before it ends.
    wait_until("the drain live again", || {
        watch.mode().unwrap().mode == Mode::Pending
    });
    let out = on.finish();
    assert_eq!(out.code(), Some(0), "{out}");
    let offline = watch.mode().unwrap();
    assert_eq!(offline.mode, Mode::Offline, "{out}");
    let at = epoch(offline.record.since.system_time());
    assert!(
        at >= cut + settle,
        "OFFLINE {:.2} s after the connections were ended ({:.2} s after PENDING): the settle \
         time ({settle} s) was not counted again: {out}",
        at - cut,
        at - pending
    );
}

#[test]
fn a_registered_command_that_ignores_the_stop_request_ends_with_exit_76() {
    let Some((hosts, watch)) = one_host() else {
        return;
    };
    let b = hosts.host(0);
    let (runner, _id) = b.start(&["stop-watcher", "--ignore-stop"]);
    wait_until("the task live", || watch.tasks().unwrap().len() == 1);
    b.cut();
    let out = runner.finish();
    let held = watch.tasks().unwrap().len();
    assert_eq!(out.code(), Some(i32::from(exit::HOLD_LOST)), "{out}");
    assert!(out.text().contains("`stop-watcher` is stopped:"), "{out}");
    assert!(
        out.text().contains(&format!(
            "`stop-watcher` did not stop within {} s: ended (exit 76).",
            STOP_GRACE.as_secs()
        )),
        "{out}"
    );
    assert!(!out.text().contains("noticed the stop request"), "{out}");
    assert_eq!(
        held, 1,
        "the process ended while the server still held its lock"
    );
    wait_until("the server freeing the lock", || {
        watch.tasks().unwrap().is_empty()
    });
    b.restore();
}

/// An external command that says its pid and runs until the file `go`
/// is in its directory.
const UNTIL_GO: &str = "#!/bin/sh\necho \"started $$\"\n\
                        while [ ! -e go ]; do sleep 0.1; done\necho done\n";

#[test]
fn an_offline_run_whose_window_connection_is_cut_past_the_bound_exits_76() {
    let Some((hosts, watch)) = one_host() else {
        return;
    };
    let b = hosts.host(0);
    b.external("job", UNTIL_GO);
    let (runner, _pid) = b.start(&["offline", "run", "--", "job"]);
    wait_until("the window's command running", || {
        matches!(watch.window().unwrap(), WindowState::Running(_))
    });
    assert_eq!(watch.mode().unwrap().mode, Mode::Offline);
    b.cut();
    // Past the bound: the server freed the window's key, so the run's
    // connection is gone for good and the window reads abandoned.
    wait_until("the server freeing the window", || {
        matches!(watch.window().unwrap(), WindowState::Abandoned(_))
    });
    // The command ends while the link is still down: the run cannot take
    // the window back.
    std::fs::write(b.dir().join("go"), "").unwrap();
    let out = runner.finish();
    b.restore();
    assert_eq!(out.code(), Some(i32::from(exit::HOLD_LOST)), "{out}");
    assert!(
        out.text().contains(
            "error: `offline run` lost its hold on the maintenance window while the command \
             ran (it exited with 0) and could not take it back:"
        ),
        "{out}"
    );
    assert!(
        out.text().contains("done"),
        "the command ran to its end: {out}"
    );
    // The mode is left as it is: not the run's to restore.
    assert_eq!(watch.mode().unwrap().mode, Mode::Offline);
}
