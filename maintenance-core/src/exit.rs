//! The exit codes every `manage` run ends with, in one place. The runner
//! maps outcomes onto them; `--help` and the README list them.

/// Done — also a command that stopped cleanly because a drain asked it to.
pub const SUCCESS: u8 = 0;
/// A registered command returned an error.
pub const FAILURE: u8 = 1;
/// Usage: clap's error, an unknown command.
pub const USAGE: u8 = 2;
/// `offline status --exit-code`: the site is PENDING.
pub const STATUS_PENDING: u8 = 3;
/// `offline status --exit-code`: the site is OFFLINE.
pub const STATUS_OFFLINE: u8 = 4;
/// `offline status --exit-code`: the site is READONLY_PENDING (going
/// read-only: writes are refused, what may write drains).
pub const STATUS_READONLY_PENDING: u8 = 5;
/// `offline status --exit-code`: the site is READONLY.
pub const STATUS_READONLY: u8 = 6;

/// The `offline status --exit-code` of `mode`: 0 ONLINE, 3 PENDING, 4
/// OFFLINE, 5 READONLY_PENDING, 6 READONLY.
pub fn of_status(mode: crate::mode::Mode) -> u8 {
    use crate::mode::Mode;
    match mode {
        Mode::Online => SUCCESS,
        Mode::Pending => STATUS_PENDING,
        Mode::Offline => STATUS_OFFLINE,
        Mode::ReadOnlyPending => STATUS_READONLY_PENDING,
        Mode::ReadOnly => STATUS_READONLY,
    }
}
/// Refused or cancelled before or instead of running: maintenance under
/// way, blocked by a `block` command, already running, a wait cancelled by
/// another operator, `offline on`/`run` inside a task (`EX_TEMPFAIL`).
pub const REFUSED: u8 = 75;
/// The run lost its hold on the site and could not take it back: an
/// `offline run` whose window was lost (the database unreachable, or
/// another run took it), or a registered command still running
/// [`STOP_GRACE`](crate::task::STOP_GRACE) after its task's hold was lost.
pub const HOLD_LOST: u8 = 76;
/// The state could not be reached (the PostgreSQL server refused the
/// connection, did not answer, or lost it): nothing was started or changed
/// (`EX_UNAVAILABLE`). Not [`REFUSED`]: the site did not say no, it could
/// not be asked.
pub const UNAVAILABLE: u8 = 69;
/// A registered command panicked.
pub const PANICKED: u8 = 101;
/// `offline on` (or `run`'s wait) timed out; the site went back where the
/// drain came from (ONLINE, or READONLY).
pub const TIMED_OUT: u8 = 124;
/// Interrupted by Ctrl-C or SIGTERM.
pub const INTERRUPTED: u8 = 130;

/// Every code with its meaning, in the order of precedence, for `--help`.
pub const TABLE: &[(u8, &str)] = &[
    (USAGE, "usage: a bad argument, an unknown command"),
    (
        REFUSED,
        "refused: maintenance under way, blocked, already running, cancelled",
    ),
    (
        UNAVAILABLE,
        "the state database could not be reached: nothing was started or changed",
    ),
    (
        TIMED_OUT,
        "`offline on` timed out; the site went back where it came from",
    ),
    (
        HOLD_LOST,
        "the hold on the site was lost (`offline run`'s window, a task's lock) and not taken back",
    ),
    (INTERRUPTED, "interrupted by Ctrl-C or SIGTERM"),
    (PANICKED, "the command panicked"),
    (FAILURE, "the command returned an error"),
    (SUCCESS, "done"),
];
