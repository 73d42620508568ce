//! A window scheduled ahead (`offline on|run --at TIME`), seen from its
//! waiting process: the line saying it is scheduled, and `offline off`
//! cancelling it.

use crate::REFUSED;
use crate::process::{Proc, assert_exact};
use crate::user_at_host;

/// The kind of window scheduled ahead, as the lines name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// `offline on|run --at`: the site goes OFFLINE.
    Offline,
    /// `offline on|run --at --read-only`: the site goes READONLY.
    ReadOnly,
}

impl Window {
    /// `offline` or `read-only`, as in "the offline window scheduled at …".
    pub fn name(self) -> &'static str {
        match self {
            Window::Offline => "offline",
            Window::ReadOnly => "read-only",
        }
    }

    /// The start of the line the waiting process says first.
    fn scheduled_at(self) -> &'static str {
        match self {
            Window::Offline => "Offline scheduled at ",
            Window::ReadOnly => "Read-only scheduled at ",
        }
    }
}

/// Waits until `p`, started as `… ARGS` (an `offline on|run --at …`),
/// says a window of `kind` is scheduled — from then on the schedule is
/// live. Returns the process, its line, and the time as that line shows
/// it; fails the test, with what the process said, otherwise.
pub fn scheduled(mut p: Proc, kind: Window, args: &[&str]) -> (Proc, String, String) {
    let line = p.line();
    let Some(when) = line
        .strip_prefix(kind.scheduled_at())
        .and_then(|rest| rest.split_once(" (in "))
        .map(|(when, _)| when.to_owned())
    else {
        panic!(
            "`{}` did not schedule its {} window: {line:?}; {}",
            args.join(" "),
            kind.name(),
            p.finish()
        )
    };
    (p, line, when)
}

/// Checks that `off` (an `offline off`, started while the waiter `on`'s
/// window of `kind`, scheduled at `when`, was live) cancelled it, saying
/// whose it was, and that `on` then exits 75 saying the `off` cancelled
/// it and the site is ONLINE.
#[track_caller]
pub fn assert_cancelled(off: Proc, on: Proc, kind: Window, when: &str) {
    let me = user_at_host();
    let (waiter, off_pid) = (on.pid(), off.pid());
    let name = kind.name();
    assert_exact(
        &off.finish(),
        0,
        &[
            &format!("Cancelled the {name} window scheduled at {when} by {me} (pid {waiter})."),
            "Status: ONLINE - Active sessions: 0",
        ],
    );
    let out = on.finish();
    assert_eq!(out.code(), Some(REFUSED), "{out}");
    assert_eq!(
        out.stderr,
        format!(
            "error: the {name} window scheduled at {when} was cancelled by {me} (pid {off_pid}) \
             with `offline off`: the site is ONLINE\n"
        ),
        "{out}"
    );
}
