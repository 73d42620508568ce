//! What a new user meets first with `manage offline`, end to end through
//! the real `manage` binary (`e2e-manage`) and, for the web, the example
//! site's app (`e2e-mysite`): without `--timeout` a wait has no limit;
//! `--timeout 0` with nothing live goes OFFLINE; negative durations reach
//! the parser; `--retry-after` in the past and control characters in
//! `--message` are refused, and a stored message is escaped by `status
//! -v`; `offline run -v` says each mode change; the singular "1 pending
//! session."; and `on --force` / `run --force` return, or run their
//! command, only once the app turns users away.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use maintenance_core::Mode;
use manage_tests::Site;

const EXE: &str = env!("CARGO_BIN_EXE_e2e-manage");

const HEADER: &str =
    "Active sessions detected. Waiting for logout. (Session timeout set to 900 secs)";

/// The limit `offline on` and `offline run` used to give up at when no
/// `--timeout` was given.
const OLD_DEFAULT: Duration = Duration::from_secs(60);

#[test]
fn without_timeout_on_and_run_wait_past_the_old_60_s_limit_until_nothing_is_live() {
    let on_site = Site::new(EXE);
    let run_site = Site::new(EXE);
    on_site.touch_session("alice");
    run_site.touch_session("bob");
    let started = Instant::now();
    let mut on = on_site.spawn(&["offline", "on"]);
    let mut run = run_site.spawn(&["offline", "run", "--", "hello"]);
    for p in [&mut on, &mut run] {
        assert_eq!(p.line(), HEADER);
        assert_eq!(p.line(), "1 pending session. * (0 sec)");
    }
    // Both still wait, PENDING, well past the old limit.
    let past = OLD_DEFAULT + Duration::from_secs(2);
    while started.elapsed() < past {
        assert!(on.is_running() && run.is_running(), "gave up early");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        on.is_running() && run.is_running(),
        "gave up after the old limit"
    );
    assert_eq!(on_site.mode().mode, Mode::Pending);
    assert_eq!(run_site.mode().mode, Mode::Pending);
    // A log gets no hint line: a progress line only on a change.
    assert_eq!(on.try_line(), None);

    on_site.end_session("alice");
    run_site.end_session("bob");
    let out = on.finish();
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(
        out.stdout.last().map(String::as_str),
        Some("Status: OFFLINE - Active sessions: 0"),
        "{out}"
    );
    let out = run.finish();
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(
        out.stdout.last().map(String::as_str),
        Some("Hello, world!"),
        "{out}"
    );
}
