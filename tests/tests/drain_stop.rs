//! Drain `stop` end to end: `mysite worker` asked to stop when PENDING
//! begins finishes the job in hand, exits 0, and `offline on` goes OFFLINE
//! once it has gone (the time from PENDING to the worker seeing it is
//! printed, median of ten runs); an external command with `drain = "stop"`
//! in manage.toml gets SIGTERM from its own runner, and without that table
//! `offline on` waits for it until its timeout.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use maintenance_core::{Mode, TaskRecord};
use manage_tests::{CliSite, Outcome, Proc, is_alive, lines_until, send_signal};
use rustix::process::Signal;

const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");
const MANAGE: &str = env!("CARGO_BIN_EXE_e2e-manage");

/// manage.toml's own lines (`refresh_interval = "50ms"` comes from
/// [`CliSite`]).
const CONFIG: &str = "state_dir = \"state\"\n";

const HEADER: &str =
    "Active sessions detected. Waiting for logout. (Session timeout set to 900 secs)";
const ASKED: &str = "Asked 1 command to stop; waiting for it.";
const OFFLINE_EMPTY: &str = "Status: OFFLINE - Active sessions: 0";

/// An external job feeder: says its pid, loops until SIGTERM, then says
/// so and cleans up until the test creates `release` in its working
/// directory (so `offline on` sees it still live, whatever the machine's
/// speed), and exits with `$1`. Each loop gives up by itself after a minute
/// or more, so a failed test cannot leave it running forever.
const FEEDER: &str = r#"#!/bin/sh
code=${1:-0}
cleanup() {
    echo "got TERM"
    n=0
    while [ ! -e release ] && [ "$n" -lt 6000 ]; do
        sleep 0.01
        n=$((n + 1))
    done
    echo "feeder exiting $code"
    exit "$code"
}
trap cleanup TERM
echo "feeder started $$"
i=0
while [ "$i" -lt 1200 ]; do
    sleep 0.05
    i=$((i + 1))
done
echo "feeder gave up"
exit 9
"#;

/// What a [`ModeWatch`] saw.
#[derive(Debug, Default)]
struct Seen {
    /// The `since` of the first PENDING record it read.
    pending_since: Option<SystemTime>,
    /// When it first read that record (the writer stamps `since`, then
    /// writes and syncs the record: readers see it a little later).
    pending_read_at: Option<SystemTime>,
    /// Live tasks of the watched command read after the mode read OFFLINE:
    /// a broken I1 (OFFLINE while a task started ONLINE still runs).
    live_while_offline: Vec<TaskRecord>,
}

/// Reads the mode from a thread of the test as often as it can (every
/// millisecond): the first PENDING record's `since` is when `offline on`
/// made the site PENDING; once the mode reads OFFLINE, any live task of
/// the watched command is recorded.
struct ModeWatch {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<Seen>>,
}

impl ModeWatch {
    fn start(site: &CliSite, command: &'static str) -> ModeWatch {
        let done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&done);
        // The site's own backend (its state directory, or its site on
        // PostgreSQL), opened here so the thread reads what manage writes.
        let backend = site.backend();
        let thread = std::thread::spawn(move || {
            let mut seen = Seen::default();
            while !flag.load(Ordering::SeqCst) {
                let view = backend.mode().expect("read the mode");
                match view.mode {
                    Mode::Pending if seen.pending_since.is_none() => {
                        seen.pending_since = Some(view.record.since.system_time());
                        seen.pending_read_at = Some(SystemTime::now());
                    }
                    Mode::Offline => seen.live_while_offline.extend(
                        backend
                            .tasks()
                            .expect("read the tasks")
                            .into_iter()
                            .filter(|t| t.name == command),
                    ),
                    _ => {}
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            seen
        });
        ModeWatch {
            done,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> Seen {
        self.done.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .expect("stopped once")
            .join()
            .expect("the mode watch panicked")
    }
}

impl Drop for ModeWatch {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

/// Asserts the worker's lines end with its last job finished and then the
/// stop — `finished job N`, `worker stopping after N jobs` — with every job
/// from `first` on finished in order (none cut in half). Returns N.
#[track_caller]
fn assert_last_job_finished(lines: &[String], first: u64) -> u64 {
    let (stop, jobs) = lines.split_last().expect("at least the stop line");
    let mut n = first - 1;
    for line in jobs {
        n += 1;
        assert_eq!(line, &format!("finished job {n}"), "{lines:#?}");
    }
    assert!(n >= first, "the job in hand was not finished: {lines:#?}");
    assert_eq!(
        stop,
        &format!("worker stopping after {n} jobs"),
        "{lines:#?}"
    );
    n
}

/// Asserts `offline on` exited 0, said it asked one command to stop (when
/// `asked`), and went OFFLINE with nothing live.
#[track_caller]
fn assert_offline_after_asking(out: &Outcome, asked: bool) {
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stderr, "", "{out}");
    assert_eq!(
        out.stdout.last().map(String::as_str),
        Some(OFFLINE_EMPTY),
        "{out}"
    );
    if asked {
        assert_eq!(
            out.stdout.first().map(String::as_str),
            Some(HEADER),
            "{out}"
        );
        assert!(out.stdout.iter().any(|l| l == ASKED), "{out}");
    }
}

/// The `--list` line of `name`.
fn list_line(site: &CliSite, name: &str) -> String {
    let out = site.run(&["--list"]);
    assert_eq!(out.code(), Some(0), "{out}");
    out.stdout
        .iter()
        .find(|l| l.split_whitespace().next() == Some(name))
        .cloned()
        .unwrap_or_else(|| panic!("no {name} in --list: {out}"))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[test]
fn a_worker_asked_to_stop_finishes_its_job_exits_0_and_offline_on_waits_for_it() {
    let site = CliSite::with_config(MYSITE, CONFIG);
    // Long jobs, and `offline on` started just as one begins: the worker is
    // mid-job, and still live when `offline on` first looks.
    let mut worker = site.spawn_mysite(&["worker", "--job-ms", "1000"]);
    assert_eq!(worker.line(), "worker started");
    assert_eq!(worker.line(), "finished job 1");
    let watch = ModeWatch::start(&site, "worker");
    let mut on = site.spawn_mysite(&["offline", "on", "--timeout", "60"]);

    let lines = lines_until(&mut worker, |l| l.starts_with("worker stopping"));
    let said_stopping = SystemTime::now();
    worker.wait_exit();
    let worker_gone = Instant::now();
    on.wait_exit();
    let on_done = Instant::now();

    let jobs = assert_last_job_finished(&lines, 2);
    let w = worker.finish();
    assert_eq!(w.code(), Some(0), "asked to stop, it exits 0: {w}");
    assert!(w.stdout.is_empty(), "nothing after the stop line: {w}");
    assert_offline_after_asking(&on.finish(), true);
    let seen = watch.stop();
    assert!(
        seen.live_while_offline.is_empty(),
        "OFFLINE while the worker still ran: {:#?}",
        seen.live_while_offline
    );
    assert_eq!(site.mode().mode, Mode::Offline);
    let status = site.status_json();
    assert_eq!(status["tasks"], serde_json::json!([]), "{status:#}");

    let pending = seen.pending_since.expect("the watch saw PENDING");
    eprintln!(
        "worker: {jobs} jobs; PENDING → \"worker stopping\" {} (the rest of a 1 s job \
         included); worker exit → offline on exit {}",
        ms(said_stopping.duration_since(pending).unwrap_or_default()),
        ms(on_done.saturating_duration_since(worker_gone)),
    );
}

#[test]
fn a_worker_stops_when_pending_begins_ten_runs_printing_the_median_delay() {
    const RUNS: usize = 10;
    let site = CliSite::with_config(MYSITE, CONFIG);
    // From the PENDING record's `since`, and from the watch's first read
    // of it, to the worker's stop line.
    let (mut from_since, mut from_read) = (Vec::new(), Vec::new());
    let mut asked = 0;
    for run in 1..=RUNS {
        // 5 ms jobs: the figure is the drain's look (every 20 ms) plus at
        // most 5 ms of the job in hand.
        let mut worker = site.spawn_mysite(&["worker", "--job-ms", "5"]);
        assert_eq!(worker.line(), "worker started");
        assert_eq!(worker.line(), "finished job 1");
        let watch = ModeWatch::start(&site, "worker");
        let on = site.spawn_mysite(&["offline", "on", "--timeout", "60"]);

        let lines = lines_until(&mut worker, |l| l.starts_with("worker stopping"));
        let said_stopping = SystemTime::now();
        assert_last_job_finished(&lines, 2);
        let w = worker.finish();
        assert_eq!(w.code(), Some(0), "run {run}: {w}");
        assert!(w.stdout.is_empty(), "run {run}: {w}");
        // A worker that stops before `offline on` first looks (the writer
        // of PENDING syncs the record after readers can see it) leaves
        // nobody to wait for, so nothing to say it asked.
        let out = on.finish();
        assert_offline_after_asking(&out, false);
        asked += usize::from(out.stdout.iter().any(|l| l == ASKED));
        let seen = watch.stop();
        assert!(
            seen.live_while_offline.is_empty(),
            "run {run}: OFFLINE while the worker still ran: {:#?}",
            seen.live_while_offline
        );
        match (seen.pending_since, seen.pending_read_at) {
            (Some(since), Some(read)) => {
                let a = said_stopping.duration_since(since).unwrap_or_default();
                let b = said_stopping.duration_since(read).unwrap_or_default();
                eprintln!(
                    "run {run}: \"worker stopping\" {} after PENDING's since, {} after the \
                     watch read it",
                    ms(a),
                    ms(b)
                );
                from_since.push(a);
                from_read.push(b);
            }
            // PENDING lasts at least the 50 ms settle time; a watch that
            // slept through all of it only loses this sample.
            _ => eprintln!("run {run}: the watch missed PENDING; no figure"),
        }
        let off = site.run_mysite(&["offline", "off"]);
        assert_eq!(off.code(), Some(0), "{off}");
    }
    assert!(
        from_since.len() >= RUNS / 2,
        "the watch missed PENDING in most runs: {from_since:?}"
    );
    from_since.sort();
    from_read.sort();
    let n = from_since.len();
    eprintln!(
        "PENDING → a drain-stop worker seeing it, median of {n} runs: {} from PENDING's since \
         (min {}, max {}), {} from the first read of the PENDING record; `offline on` said it \
         asked in {asked} of {RUNS}",
        ms(from_since[n / 2]),
        ms(from_since[0]),
        ms(from_since[n - 1]),
        ms(from_read[n / 2]),
    );
}

/// Starts the feeder (exit code `code` when asked to stop) and returns its
/// runner and the script's own pid.
fn start_feeder(site: &CliSite, code: &str) -> (Proc, u32) {
    let mut feeder = site.spawn(&["feeder", code]);
    let line = feeder.line();
    let pid = line
        .strip_prefix("feeder started ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the feeder did not start: {line:?}"));
    (feeder, pid)
}

#[test]
fn an_external_stop_command_gets_sigterm_from_its_runner_and_offline_on_completes() {
    let site = CliSite::with_config(
        MANAGE,
        &format!("{CONFIG}[commands.feeder]\ndrain = \"stop\"\n"),
    );
    site.external("feeder", FEEDER);
    let listed = list_line(&site, "feeder");
    assert!(
        listed.contains("[tracked, single, maintenance refused, drain stop]"),
        "{listed}"
    );

    let (mut feeder, script) = start_feeder(&site, "3");
    let list = site.run(&["offline", "list", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&list.stdout.join("\n")).unwrap();
    assert_eq!(doc["tasks"][0]["name"], "feeder", "{doc:#}");
    assert_eq!(doc["tasks"][0]["policy"]["drain"], "stop", "{doc:#}");

    let mut on = site.spawn(&["offline", "on", "--timeout", "60"]);
    assert_eq!(feeder.line(), "got TERM");
    let said = lines_until(&mut on, |l| l == ASKED);
    assert_eq!(said[0], HEADER, "{said:?}");
    std::fs::write(site.dir().join("release"), "").unwrap();
    assert_eq!(feeder.line(), "feeder exiting 3");
    let f = feeder.finish();
    assert_eq!(
        f.code(),
        Some(3),
        "the runner exits with the script's code: {f}"
    );
    assert!(f.stdout.is_empty(), "{f}");
    assert!(!is_alive(script), "the script {script} outlived its runner");
    assert_offline_after_asking(&on.finish(), false);
    assert_eq!(site.mode().mode, Mode::Offline);
}

#[test]
fn without_its_manage_toml_table_an_external_command_is_waited_for_not_stopped() {
    let site = CliSite::with_config(MANAGE, CONFIG);
    site.external("feeder", FEEDER);
    let listed = list_line(&site, "feeder");
    assert!(
        listed.contains("[tracked, single, maintenance refused, drain wait]"),
        "{listed}"
    );

    let (mut feeder, script) = start_feeder(&site, "4");
    let before = site.mode().record;
    let on = site.run(&["offline", "on", "--timeout", "1"]);
    assert_eq!(on.code(), Some(124), "it waited for the feeder: {on}");
    assert!(on.stderr.contains("timed out"), "{on}");
    assert!(!on.stdout.iter().any(|l| l.starts_with("Asked")), "{on}");
    assert_eq!(feeder.try_line(), None, "nobody asked the feeder to stop");
    assert!(feeder.is_running() && is_alive(script));
    let view = site.mode();
    assert_eq!(view.mode, Mode::Online, "{view:?}");
    assert_ne!(view.record, before, "it did go PENDING, then back");

    // A SIGTERM to the runner reaches the script, whose code comes back.
    std::fs::write(site.dir().join("release"), "").unwrap();
    send_signal(feeder.pid(), Signal::TERM);
    assert_eq!(feeder.line(), "got TERM");
    assert_eq!(feeder.line(), "feeder exiting 4");
    let f = feeder.finish();
    assert_eq!(f.code(), Some(4), "{f}");
    assert!(!is_alive(script), "the script {script} outlived its runner");
}
