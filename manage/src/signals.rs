//! Signals, installed once per process by [`crate::run`] (the testing
//! harness installs none). The first SIGINT or SIGTERM sets the run's stop
//! request; a second ends the process at once with 130 — the kernel frees
//! the task's locks, and its file is reaped later (I3). While an external
//! command runs, its signals are its own: a terminal's Ctrl-C already
//! reached its process group, and SIGTERM is forwarded to it.
//!
//! No thread at start-up: the handler does all of this itself with what is
//! safe in a handler — atomics, `kill`, `write`, `_exit`. Only waking a
//! blocked or async waiter of the stop request takes a lock, so that is
//! left to a relay thread, started the first time anything waits on the
//! request ([`StopToken::relayed`]); a run that never waits (`offline
//! status`, a quick command) never starts it.

use std::io::{ErrorKind, Read};
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

use maintenance_core::command::StopToken;
use maintenance_core::exit;

/// How many SIGINT/SIGTERM this process received.
static RECEIVED: AtomicUsize = AtomicUsize::new(0);
/// The external child signals are passed to (0: none).
static CHILD: AtomicI32 = AtomicI32::new(0);
/// The write end of the relay's socket once the relay runs (-1: none).
static RELAY: AtomicI32 = AtomicI32::new(-1);
/// The process's stop request, set before the handlers are installed.
static TOKEN: OnceLock<StopToken> = OnceLock::new();

/// The handler's last word before it ends the process.
const AGAIN: &[u8] = b"interrupted again: exiting at once\n";

/// Installs the handlers (once) and returns the process's stop request.
pub(crate) fn install() -> StopToken {
    let mut fresh = false;
    let token = TOKEN.get_or_init(|| {
        fresh = true;
        StopToken::relayed(start_relay)
    });
    if fresh {
        for signal in [libc::SIGINT, libc::SIGTERM] {
            // A SIGINT ignored by whoever started us (a script's `cmd &`)
            // stays ignored, here and in the commands we start, as a shell
            // leaves it.
            if signal == libc::SIGINT && ignored(signal) {
                continue;
            }
            if let Err(e) = catch(signal) {
                eprintln!("warning: cannot install signal handlers: {e}");
            }
        }
    }
    token.clone()
}

/// Whether `signal` is ignored now.
fn ignored(signal: libc::c_int) -> bool {
    // SAFETY: a zeroed sigaction to be filled in; no action is set.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: reading the disposition into `old`.
    let rc = unsafe { libc::sigaction(signal, std::ptr::null(), &mut old) };
    rc == 0 && old.sa_sigaction == libc::SIG_IGN
}

/// Installs [`on_signal`] for `signal`, restarting interrupted system
/// calls (`SA_RESTART`, as the signal-hook handler before it did).
fn catch(signal: libc::c_int) -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid value to fill in (no handler,
    // empty flags); its mask is then emptied by sigemptyset.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: `action` is a valid sigaction whose handler only does what is
    // async-signal-safe (see `on_signal`); the old action is not wanted.
    let rc = unsafe {
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, std::ptr::null_mut())
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The handler. Async-signal-safe only: atomic loads and stores, `kill`,
/// `write` and `_exit`; no allocation, no lock.
extern "C" fn on_signal(signal: libc::c_int) {
    let n = RECEIVED.fetch_add(1, Ordering::SeqCst) + 1;
    let child = CHILD.load(Ordering::SeqCst);
    if child != 0 {
        if signal == libc::SIGTERM {
            // Our own unreaped child: its pid cannot have been reused.
            // SAFETY: kill is async-signal-safe.
            unsafe { libc::kill(child, libc::SIGTERM) };
        }
        return;
    }
    if n == 1 {
        if let Some(token) = TOKEN.get() {
            token.raise();
        }
        let relay = RELAY.load(Ordering::SeqCst);
        if relay >= 0 {
            // SAFETY: write is async-signal-safe; `relay` is the relay's
            // open, non-blocking socket, never closed.
            let _ = unsafe { libc::write(relay, [1u8].as_ptr().cast(), 1) };
        }
    } else {
        // Straight to fd 2, never through std's stderr (whose lock the
        // interrupted code may hold), and `_exit`: `exit` would run atexit
        // handlers and std's flush of stdout, neither safe here.
        // SAFETY: write and _exit are async-signal-safe.
        unsafe {
            let _ = libc::write(2, AGAIN.as_ptr().cast(), AGAIN.len());
            libc::_exit(i32::from(exit::INTERRUPTED));
        }
    }
}

/// The relay, started by the first waiter on the stop request: a thread
/// that wakes every waiter once the handler has raised the request. A
/// signal that came before the handler could see the relay's socket only
/// raised the token: the check after publishing the socket catches it
/// (each side stores, then loads, both sequentially consistent).
fn start_relay(token: &StopToken) {
    match UnixStream::pair() {
        Ok((mut reader, writer)) => {
            let _ = writer.set_nonblocking(true);
            let t = token.clone();
            let spawned = std::thread::Builder::new()
                .name("manage-signals".into())
                .spawn(move || {
                    let mut byte = [0u8; 1];
                    loop {
                        match reader.read(&mut byte) {
                            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                            // The handler's byte (or a broken socket):
                            // wake the waiters if the request was raised.
                            _ => break,
                        }
                    }
                    if t.requested() {
                        t.request();
                    }
                });
            match spawned {
                // Kept open for the life of the process: the handler may
                // write to it at any time.
                Ok(_) => RELAY.store(writer.into_raw_fd(), Ordering::SeqCst),
                Err(e) => eprintln!("warning: cannot start the signal relay: {e}"),
            }
        }
        Err(e) => eprintln!("warning: cannot start the signal relay: {e}"),
    }
    if token.requested() {
        token.request();
    }
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

/// Kills every process under the external child, if one runs, and the
/// child itself unless it is a keeper (an external command's keeper is
/// their subreaper: whatever the command left behind is its descendant),
/// by SIGKILL: a task whose hold
/// was lost must be gone before the server frees its lock. Whether there
/// was a child.
pub(crate) fn kill_child_tree() -> bool {
    let child = CHILD.load(Ordering::SeqCst);
    if child <= 0 {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        // Leaves first, so none is reparented out of reach meanwhile.
        fn under(pid: i32, out: &mut Vec<i32>) {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                return;
            };
            for t in tasks.flatten() {
                let Ok(list) = std::fs::read_to_string(t.path().join("children")) else {
                    continue;
                };
                for c in list.split_whitespace().filter_map(|c| c.parse().ok()) {
                    under(c, out);
                    out.push(c);
                }
            }
        }
        let mut all = Vec::new();
        under(child, &mut all);
        for pid in all {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
    // A keeper exits by itself once what it keeps is gone, saying how the
    // command ended.
    if CHILD_IS_KEEPER.load(Ordering::SeqCst) {
        return true;
    }
    if let Some(pid) = rustix::process::Pid::from_raw(child) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
    true
}

/// Names the external command's keeper as the child signals are passed
/// to: [`kill_child_tree`] kills what it keeps, and lets it report how the
/// command ended.
pub(crate) fn set_keeper_child(pid: i32) {
    CHILD_IS_KEEPER.store(true, Ordering::SeqCst);
    CHILD.store(pid, Ordering::SeqCst);
}

/// Whether the child is an external command's keeper.
static CHILD_IS_KEEPER: AtomicBool = AtomicBool::new(false);

/// Names the external child signals are passed to (0: none).
pub(crate) fn set_child(pid: i32) {
    CHILD_IS_KEEPER.store(false, Ordering::SeqCst);
    CHILD.store(pid, Ordering::SeqCst);
}
