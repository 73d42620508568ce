//! The many-hosts benchmarks behind docs/scale.md (issue 23), on hosts of
//! `manage_tests::hosts` (network namespaces, veth pairs) sharing one
//! PostgreSQL, with the documented defaults (`refresh_interval = "250ms"`,
//! `touch_every` 5 s, the keepalives of connect.rs). Ignored, and never in
//! CI: `bench/cli/hosts.sh` runs them one at a time in release and prints
//! the `ROW` lines they write as one table. Root only.
//!
//! Knobs (environment): `BENCH_CHANGES` (50), `BENCH_ENDS` (20),
//! `BENCH_PARTITIONS` (3), `BENCH_USERS` ("1000 10000"), `BENCH_EVERY`
//! (seconds between one user's requests, 30), `BENCH_WINDOW` (seconds
//! counted, 30).

#![allow(clippy::unwrap_used)]
// The table's rows go to stdout, where bench/cli/hosts.sh reads them.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use manage_tests::hosts::{Binaries, Host, Hosts, MYSITE_PORT};
use manage_tests::{HANG_GUARD, Proc, parse_progress, raw_request, send_signal};

/// The documented default, not the tests' 50 ms.
const DEFAULTS: &str = "refresh_interval = \"250ms\"";
const HEADER: &str =
    "Active sessions detected. Waiting for logout. (Session timeout set to 900 secs)";

fn hosts(n: usize) -> Option<Hosts> {
    let bins = Binaries {
        manage: env!("CARGO_BIN_EXE_e2e-manage").into(),
        mysite: env!("CARGO_BIN_EXE_e2e-mysite").into(),
    };
    Hosts::new(n, &bins, DEFAULTS)
}

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
        .unwrap_or(default)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Median and p99 (nearest rank) of `v`.
fn median_p99(v: &mut [Duration]) -> (Duration, Duration) {
    v.sort();
    let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (rank(0.5), rank(0.99))
}

/// One line of the table: what, how many, median, p99, and a note.
fn row(what: &str, v: &mut [Duration], note: &str) {
    let (median, p99) = median_p99(v);
    println!(
        "ROW\t{what}\t{}\t{}\t{}\t{note}",
        v.len(),
        ms(median),
        ms(p99)
    );
}

/// A line of the table with figures of another kind.
fn row_text(what: &str, n: impl std::fmt::Display, a: &str, b: &str, note: &str) {
    println!("ROW\t{what}\t{n}\t{a}\t{b}\t{note}");
}

fn mysite_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], MYSITE_PORT))
}

/// Polls `host`'s mysite (from inside the host, every 2 ms) until its API
/// answers `want`: when it first did.
fn until_status(host: &Host, want: u16) -> Instant {
    host.inside(|| {
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            let r = raw_request(
                mysite_addr(),
                None,
                "GET",
                "/api/status",
                &[("Accept", "application/json")],
            );
            if r.status == want {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "host {} never answered {want}",
                host.name()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    })
}

/// `offline on --force` committed on host A → the moment each other host's
/// layer answers OFFLINE (its API's 503), over `BENCH_CHANGES` changes.
#[test]
#[ignore = "a benchmark: bench/cli/hosts.sh"]
fn bench_mode_change_reaches_every_layer() {
    let Some(hosts) = hosts(3) else { return };
    let _webs: Vec<Proc> = hosts.all().iter().map(|h| h.serve(&[])).collect();
    let (a, others) = (hosts.host(0), &hosts.all()[1..]);
    for h in hosts.all() {
        until_status(h, 200);
    }
    let changes = knob("BENCH_CHANGES", 50);
    let (mut from_return, mut from_spawn, mut per_host) = (Vec::new(), Vec::new(), Vec::new());
    let mut before_return = 0;
    for _ in 0..changes {
        let (spawned, returned, seen) = std::thread::scope(|s| {
            let watchers: Vec<_> = others
                .iter()
                .map(|h| s.spawn(move || until_status(h, 503)))
                .collect();
            let spawned = Instant::now();
            let out = a.run(&["offline", "on", "--force"]);
            let returned = Instant::now();
            assert!(out.success(), "{out}");
            let seen: Vec<Instant> = watchers.into_iter().map(|w| w.join().unwrap()).collect();
            (spawned, returned, seen)
        });
        let last = *seen.iter().max().unwrap();
        before_return += usize::from(last <= returned);
        from_return.push(last.saturating_duration_since(returned));
        from_spawn.push(last - spawned);
        per_host.extend(seen.iter().map(|t| t.saturating_duration_since(returned)));
        let off = a.run(&["offline", "off"]);
        assert!(off.success(), "{off}");
        for h in hosts.all() {
            until_status(h, 200);
        }
    }
    row(
        "mode change -> last other host's layer OFFLINE, from `on --force` returning",
        &mut from_return,
        &format!(
            "{before_return} of {changes} changes seen everywhere before the CLI returned (0 counted)"
        ),
    );
    row(
        "  the same, each other host",
        &mut per_host,
        "hosts B and C",
    );
    row(
        "  the same, from `on --force` starting",
        &mut from_spawn,
        "includes the CLI's start-up and connect",
    );
}

/// Starts `offline on` on `host` and reads its header and first progress
/// line: from then on the site is PENDING, held by it.
fn waiting_on(host: &Host) -> Proc {
    let mut on = host.spawn(&["offline", "on"]);
    assert_eq!(on.line(), HEADER, "`offline on` on host {}", host.name());
    let progress = on.line();
    assert!(parse_progress(&progress).is_some(), "{progress:?}");
    on
}

/// The last task ends on host B (SIGTERM, which it obeys: it says
/// `stopping` and exits; or SIGKILL) → host A's waiting `offline on` returns OFFLINE.
#[test]
#[ignore = "a benchmark: bench/cli/hosts.sh"]
fn bench_last_task_end_releases_the_wait() {
    let Some(hosts) = hosts(3) else { return };
    let (a, b) = (hosts.host(0), hosts.host(1));
    let ends = knob("BENCH_ENDS", 20);
    for kill in [false, true] {
        let mut times = Vec::new();
        let mut connections = 0;
        for _ in 0..ends {
            let (mut task, _) = b.start(&["sleeper", "--secs", "600"]);
            connections = b.database_connections();
            let on = waiting_on(a);
            // Past the settle time (2 × refresh_interval from the start of
            // PENDING), so the figure is the task's end alone.
            std::thread::sleep(Duration::from_millis(600));
            let t0 = Instant::now();
            if kill {
                task.kill9();
            } else {
                send_signal(task.pid(), rustix::process::Signal::TERM);
            }
            let out = on.finish();
            times.push(t0.elapsed());
            assert_eq!(out.code(), Some(0), "{out}");
            if !kill {
                // It stops as asked (its exit code is the signal's, 130).
                let t = task.finish();
                assert_eq!(t.stdout, ["stopping"], "{t}");
            }
            let off = a.run(&["offline", "off"]);
            assert!(off.success(), "{off}");
        }
        row(
            if kill {
                "last task on B SIGKILLed -> A's `offline on` returns"
            } else {
                "last task on B stops (SIGTERM, obeyed) -> A's `offline on` returns"
            },
            &mut times,
            &format!("B holds {connections} server connection(s) while its task runs"),
        );
    }
}

/// Host B's link cut while it runs a task and serves: until the server
/// frees B's task lock (host A's waiting `offline on` returns), and until
/// B's layer says it cannot read the mode.
#[test]
#[ignore = "a benchmark: bench/cli/hosts.sh"]
fn bench_partition_detection() {
    let runs = knob("BENCH_PARTITIONS", 3);
    let (mut freed, mut layer) = (Vec::new(), Vec::new());
    let mut task_alive = 0;
    for _ in 0..runs {
        let Some(hosts) = hosts(3) else { return };
        let (a, b) = (hosts.host(0), hosts.host(1));
        let web_b = b.serve(&[]);
        until_status(b, 200);
        let (mut task, _) = b.start(&["sleeper", "--secs", "600"]);
        let mut on = waiting_on(a);
        std::thread::sleep(Duration::from_millis(600));
        b.cut();
        let t0 = Instant::now();
        let (mut on_at, mut layer_at) = (None, None);
        while on_at.is_none() || layer_at.is_none() {
            assert!(
                t0.elapsed() < 3 * HANG_GUARD,
                "the partition was never detected"
            );
            if layer_at.is_none() && web_b.stderr_so_far().contains("cannot read the mode") {
                layer_at = Some(t0.elapsed());
            }
            if on_at.is_none() && !on.is_running() {
                on_at = Some(t0.elapsed());
                task_alive += usize::from(task.is_running());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let out = on.finish();
        assert_eq!(out.code(), Some(0), "{out}");
        freed.push(on_at.unwrap());
        layer.push(layer_at.unwrap());
        b.restore();
        task.kill9();
    }
    row(
        "partition of B -> server frees B's task lock (A's `on` returns)",
        &mut freed,
        &format!(
            "server keepalives idle 14 s, interval 2 s, count 3, tcp_user_timeout 20 s (B 20 s); \
             B's task still running then in {task_alive} of {runs} runs"
        ),
    );
    row(
        "partition of B -> B's layer says it cannot read the mode",
        &mut layer,
        "refresh_interval 250 ms; client keepalives 5/1/3, tcp_user_timeout 10 s",
    );
}

/// The test server, as psql reaches it from this namespace.
fn psql(sql: &str) -> String {
    let url = manage_tests::test_database_url().expect("the hosts ran, so there is a server");
    let out = Command::new("psql")
        .args(["-qAtX", "-F", "\t", &url, "-c", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// What the server ran in a window: statements, their total time in ms,
/// and the busiest ones (calls, mean ms, text), from pg_stat_statements.
struct Counted {
    calls: f64,
    total_ms: f64,
    top: Vec<(f64, f64, String)>,
}

fn reset_statements() {
    psql("SELECT pg_stat_statements_reset()");
}

fn counted() -> Counted {
    let rows = psql(
        "SELECT calls, mean_exec_time, left(regexp_replace(query, '\\s+', ' ', 'g'), 70) \
         FROM pg_stat_statements WHERE query NOT ILIKE '%pg_stat_statements%' \
         ORDER BY calls DESC",
    );
    let mut c = Counted {
        calls: 0.0,
        total_ms: 0.0,
        top: Vec::new(),
    };
    for line in rows.lines() {
        let f: Vec<&str> = line.splitn(3, '\t').collect();
        let (calls, mean): (f64, f64) = (f[0].parse().unwrap(), f[1].parse().unwrap());
        c.calls += calls;
        c.total_ms += calls * mean;
        c.top.push((calls, mean, f[2].to_owned()));
    }
    c
}

/// One web host's mysite with `users` logged in, each making a request
/// every `BENCH_EVERY` seconds through the layer: the statements the server
/// ran per second over `BENCH_WINDOW` seconds, and what they cost it.
#[test]
#[ignore = "a benchmark: bench/cli/hosts.sh"]
fn bench_session_touch_load() {
    let Some(hosts) = hosts(1) else { return };
    let h = hosts.host(0);
    psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
    let _web = h.serve(&[]);
    until_status(h, 200);
    let every = Duration::from_secs(knob("BENCH_EVERY", 30));
    let window = Duration::from_secs(knob("BENCH_WINDOW", 30));
    let users: Vec<usize> = std::env::var("BENCH_USERS")
        .unwrap_or_else(|_| "1000 10000".into())
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    row_text(
        "web host's server connections (mysite, idle)",
        1,
        &h.database_connections().to_string(),
        "",
        "its refresh/touch connection and its LISTEN connection",
    );
    let mut cookies: Vec<String> = Vec::new();
    // No one logged in yet: the refresh alone.
    measure(h, &[], every, window);
    for n in users {
        let started = Instant::now();
        let more = n - cookies.len();
        cookies.extend(log_in_many(h, more));
        let login = started.elapsed();
        row_text(
            &format!("  {more} logins (each a new session, written at once)"),
            more,
            &format!("{:.0}/s", more as f64 / login.as_secs_f64()),
            "",
            "4 clients in parallel",
        );
        measure(h, &cookies, every, window);
    }
}

/// Logs `n` users in to `host`'s mysite, from 4 clients: their cookies.
fn log_in_many(host: &Host, n: usize) -> Vec<String> {
    std::thread::scope(|s| {
        let clients: Vec<_> = (0..4)
            .map(|k| {
                s.spawn(move || {
                    host.inside(|| {
                        (k..n)
                            .step_by(4)
                            .map(|_| {
                                let r = raw_request(mysite_addr(), None, "POST", "/login", &[]);
                                format!("sessionid={}", r.cookie_value("sessionid").unwrap())
                            })
                            .collect::<Vec<_>>()
                    })
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    })
}

/// Every user of `cookies` makes one request every `every` (spread evenly,
/// from 4 clients) for `window` after one round unmeasured; the server's
/// statements over the window make a row.
fn measure(host: &Host, cookies: &[String], every: Duration, window: Duration) {
    let n = cookies.len();
    let load = |span: Duration, count: bool| -> (usize, usize, f64) {
        if count {
            reset_statements();
        }
        let t0 = Instant::now();
        let (requests, bad) = std::thread::scope(|s| {
            let clients: Vec<_> = (0..4)
                .map(|k| {
                    s.spawn(move || {
                        host.inside(|| {
                            let (mut sent, mut bad) = (0, 0);
                            if n == 0 {
                                std::thread::sleep(span);
                                return (0, 0);
                            }
                            // Request j goes to user j mod n at t0 + j × every / n.
                            let mut j = k;
                            loop {
                                let due = every.mul_f64(j as f64 / n as f64);
                                if due >= span {
                                    break;
                                }
                                if let Some(wait) = due.checked_sub(t0.elapsed()) {
                                    std::thread::sleep(wait);
                                }
                                let r = raw_request(
                                    mysite_addr(),
                                    None,
                                    "GET",
                                    "/",
                                    &[("Cookie", &cookies[j % n])],
                                );
                                sent += 1;
                                bad += usize::from(r.status != 200);
                                j += 4;
                            }
                            (sent, bad)
                        })
                    })
                })
                .collect();
            clients
                .into_iter()
                .map(|c| c.join().unwrap())
                .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
        });
        (requests, bad, t0.elapsed().as_secs_f64())
    };
    if n > 0 {
        load(every, false);
    }
    let (requests, bad, secs) = load(window, true);
    let c = counted();
    assert_eq!(bad, 0, "every request of a logged-in user passes");
    row_text(
        &format!("session touch load, {n} users logged in, one web host"),
        n,
        &format!("{:.2} statements/s", c.calls / secs),
        &format!("{:.3} ms server time/s", c.total_ms / secs),
        &format!(
            "{:.0} requests/s (one per user every {} s); {:.0} statements in {secs:.0} s",
            requests as f64 / secs,
            every.as_secs(),
            c.calls
        ),
    );
    for (calls, mean, text) in c.top.iter().take(4) {
        println!("DETAIL\t{n} users\t{calls:.0} calls\t{mean:.3} ms mean\t{text}");
    }
}

/// The server connections each kind of process on a host holds, counted
/// on the host's side of its link as each one starts.
#[test]
#[ignore = "a benchmark: bench/cli/hosts.sh"]
fn bench_connections_per_process() {
    let Some(hosts) = hosts(1) else { return };
    let b = hosts.host(0);
    let count = |what: &str, before: &mut usize| {
        // Each process connects as it starts: wait for its count to settle.
        let mut now = b.database_connections();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            now = now.max(b.database_connections());
        }
        row_text(
            &format!("server connections held by {what}"),
            1,
            &now.saturating_sub(*before).to_string(),
            "",
            "established TCP connections of the host to the server",
        );
        *before = now;
    };
    let mut before = b.database_connections();
    let _web = b.serve(&[]);
    count("a web layer (mysite)", &mut before);
    let _mirror = b.mirror(&[]);
    count("`offline mirror`", &mut before);
    let (_task, _) = b.start(&["sleeper", "--secs", "600"]);
    count("a live task", &mut before);
    let (_task2, _) = b.start(&["sleeper-many", "--secs", "600"]);
    count("a second live task", &mut before);
    let _on = waiting_on(b);
    count("a waiting `offline on`", &mut before);
}
