//! The fast entry point behind [`crate::main!`]: the C library's `main`
//! straight into the runner, without Rust's own start-up.
//!
//! Before a Rust `fn main` runs, the standard library sets up: standard
//! descriptors 0–2 opened on `/dev/null` when closed, SIGPIPE ignored, a
//! guard for the main thread's stack (it reads `/proc/self/maps` and scans
//! it with `sscanf` to find the stack's bounds, then installs SIGSEGV and
//! SIGBUS handlers on an alternate stack), and the main thread's name. On
//! this machine that is 110k of an empty binary's 288k instructions and
//! about 90 µs of its 0.75 ms — more than the runner's own work in a
//! tracked no-op. [`start`] does what of it a runner needs, each at the
//! cost of a system call or two:
//!
//! - descriptors 0–2 are checked with one `poll`, and each closed one is
//!   opened on `/dev/null`, as the standard library does (a file the runner
//!   opens must never become its standard output);
//! - SIGPIPE is ignored, so a closed pipe is an error the runner reports
//!   (children start with it back at its default, as they do from any Rust
//!   program);
//! - a stack overflow of the main thread still says so: SIGSEGV and SIGBUS
//!   run a handler on an alternate stack that prints the standard library's
//!   message and aborts when the fault is at the stack's limit, and
//!   otherwise lets the signal kill the process as it would have. The
//!   limit comes from `getauxval(AT_EXECFN)` (the top of the stack) less
//!   `RLIMIT_STACK`, not from `/proc/self/maps`. Threads the program
//!   starts get no such report: their overflow ends the process with
//!   SIGSEGV;
//! - a panic on the main thread names the thread `main`, as the standard
//!   library's message does, with the standard hook's short backtrace when
//!   `RUST_BACKTRACE` asks; any other thread's panic goes to the standard
//!   hook. (`std::thread::current().name()` on the main thread is `None`:
//!   only the start-up names it.)
//!
//! `std::env::args` needs nothing from the start-up on Linux with glibc
//! (the library reads them from its own initialiser), which is why the
//! macro uses this entry there only.

mod overflow;
mod panic_hook;

use std::ffi::c_int;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Runs the runner as the process's `main`: the start-up the standard
/// library would have done (see the module's comment), then [`crate::run`]'s
/// work, then standard output flushed. A panic that escapes is reported by
/// the hook and ends the process with 101, as from a Rust `main`.
///
/// Standard output is flushed here, once: what is written to it after
/// (from a thread-local destructor, or another thread still running as the
/// process exits) stays in its buffer and is lost, where the standard
/// library's start-up would have flushed it at exit. Write to standard
/// error, or flush, there.
pub fn start() -> c_int {
    // The set-up is the process's, done once: a second call (or one from
    // another thread) must not point a second thread's alternate signal
    // stack at the same static buffer.
    if STARTED.swap(true, Ordering::SeqCst) {
        return c_int::from(std::panic::catch_unwind(crate::run_code).unwrap_or(101));
    }
    keep_standard_descriptors();
    // SAFETY: setting a signal's disposition to SIG_IGN has no
    // precondition.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    overflow::report_stack_overflow();
    panic_hook::name_main_thread_in_panics();
    let code = std::panic::catch_unwind(crate::run_code).unwrap_or(101);
    let _ = std::io::stdout().flush();
    c_int::from(code)
}

/// Whether [`start`] has set the process up.
static STARTED: AtomicBool = AtomicBool::new(false);

/// Opens `/dev/null` in place of each of descriptors 0–2 that is closed.
/// Aborts, as the standard library does, when that is impossible: a file
/// opened later would take the missing descriptor's number.
fn keep_standard_descriptors() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    let closed: [bool; 3] = loop {
        // SAFETY: `fds` is an array of three pollfd structures.
        if unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } != -1 {
            break fds.map(|p| p.revents & libc::POLLNVAL != 0);
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            // poll refused (a sandbox, too few resources): ask each one.
            Some(libc::EINVAL | libc::EAGAIN | libc::ENOMEM) => {
                break [0, 1, 2].map(|fd| {
                    // SAFETY: F_GETFD only reads the descriptor's flags.
                    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
                    flags == -1
                        && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBADF)
                });
            }
            _ => std::process::abort(),
        }
    };
    for closed in closed {
        // SAFETY: the path is a NUL-terminated string; the lowest free
        // descriptor, the closed one, is the one opened.
        if closed && unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) } == -1 {
            std::process::abort();
        }
    }
}
