//! Signals, installed once per process by [`crate::run`] (the testing
//! harness installs none). The first SIGINT or SIGTERM sets the run's stop
//! request; a second ends the process at once with 130 — the kernel frees
//! the task's locks, and its file is reaped later (I3). While an external
//! command runs, its signals are its own: a terminal's Ctrl-C already
//! reached its process group, and SIGTERM is forwarded to it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

use maintenance_core::command::StopToken;
use maintenance_core::exit;
use signal_hook::consts::{SIGINT, SIGTERM};

static RECEIVED: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);
static CHILD: AtomicI32 = AtomicI32::new(0);

/// Installs the handlers (once) and returns the process's stop request.
pub(crate) fn install() -> StopToken {
    static TOKEN: OnceLock<StopToken> = OnceLock::new();
    TOKEN
        .get_or_init(|| {
            let token = StopToken::new();
            match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
                Ok(mut signals) => {
                    INSTALLED.store(true, Ordering::SeqCst);
                    let t = token.clone();
                    let _ = std::thread::Builder::new()
                        .name("manage-signals".into())
                        .spawn(move || {
                            for signal in signals.forever() {
                                on_signal(signal, &t);
                            }
                        });
                }
                Err(e) => eprintln!("warning: cannot install signal handlers: {e}"),
            }
            token
        })
        .clone()
}

fn on_signal(signal: i32, token: &StopToken) {
    let n = RECEIVED.fetch_add(1, Ordering::SeqCst) + 1;
    let child = CHILD.load(Ordering::SeqCst);
    if child != 0 {
        if signal == SIGTERM
            && let Some(pid) = rustix::process::Pid::from_raw(child)
        {
            // Our own unreaped child: its pid cannot have been reused.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        return;
    }
    if n == 1 {
        token.request();
    } else {
        // Straight to fd 2: a lock on stderr held elsewhere must not keep
        // the process from exiting.
        let mut fd2 = std::mem::ManuallyDrop::new(unsafe_stderr());
        let _ = std::io::Write::write_all(&mut *fd2, b"interrupted again: exiting at once\n");
        std::process::exit(i32::from(exit::INTERRUPTED));
    }
}

/// Descriptor 2 as a file, bypassing `std::io::stderr`'s lock; wrapped in
/// `ManuallyDrop` by the caller so it is never closed.
fn unsafe_stderr() -> std::fs::File {
    use std::os::fd::FromRawFd;
    // SAFETY: fd 2 is open for the life of the process, and the caller never
    // drops (closes) this File.
    unsafe { std::fs::File::from_raw_fd(2) }
}

/// Whether this process received SIGINT or SIGTERM.
pub(crate) fn received() -> bool {
    RECEIVED.load(Ordering::SeqCst) > 0
}

/// Sends SIGTERM to the external child, if one runs (a drain asking it to
/// stop).
pub(crate) fn terminate_child() {
    let child = CHILD.load(Ordering::SeqCst);
    if let Some(pid) = rustix::process::Pid::from_raw(child) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

/// Names the external child signals are passed to (0: none).
pub(crate) fn set_child(pid: i32) {
    CHILD.store(pid, Ordering::SeqCst);
}
