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
//!   library's message does; any other thread's panic goes to the standard
//!   hook.
//!
//! `std::env::args` needs nothing from the start-up on Linux with glibc
//! (the library reads them from its own initialiser), which is why the
//! macro uses this entry there only.

use std::ffi::c_int;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Runs the runner as the process's `main`: the start-up the standard
/// library would have done (see the module's comment), then [`crate::run`]'s
/// work, then standard output flushed. A panic that escapes is reported by
/// the hook and ends the process with 101, as from a Rust `main`.
pub fn start() -> c_int {
    keep_standard_descriptors();
    // SAFETY: setting a signal's disposition to SIG_IGN has no
    // precondition.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    report_stack_overflow();
    name_main_thread_in_panics();
    let code = std::panic::catch_unwind(crate::run_code).unwrap_or(101);
    let _ = std::io::stdout().flush();
    c_int::from(code)
}

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

/// The size of the alternate stack the fault handler runs on.
const ALT_STACK: usize = 16 * 1024;

/// How far from the stack's limit a fault still counts as an overflow.
const OVERFLOW_WINDOW: usize = 64 * 1024;

/// The alternate stack, in the binary's zeroed data: its pages are only
/// mapped if a fault ever uses them.
#[repr(C, align(16))]
struct AltStack([u8; ALT_STACK]);

static mut FAULT_STACK: AltStack = AltStack([0; ALT_STACK]);

/// The lowest address the main thread's stack may reach.
static STACK_LIMIT: AtomicUsize = AtomicUsize::new(0);

/// Installs the handler that reports a stack overflow of the main thread,
/// unless the stack's limit cannot be told (no `AT_EXECFN`, or an
/// unlimited `RLIMIT_STACK`): then a fault kills the process as before.
fn report_stack_overflow() {
    // SAFETY: getauxval reads the process's auxiliary vector.
    let top = unsafe { libc::getauxval(libc::AT_EXECFN) } as usize;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit to fill.
    if top == 0 || unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        return;
    }
    let Some(low) = top.checked_sub(limit.rlim_cur as usize) else {
        return;
    };
    STACK_LIMIT.store(low, Ordering::Relaxed);
    let stack = libc::stack_t {
        ss_sp: (&raw mut FAULT_STACK).cast(),
        ss_flags: 0,
        ss_size: ALT_STACK,
    };
    // SAFETY: the alternate stack is static and used by nothing else.
    if unsafe { libc::sigaltstack(&stack, std::ptr::null_mut()) } != 0 {
        return;
    }
    for signal in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: a zeroed sigaction is a valid starting point; the handler
        // has the three-argument signature SA_SIGINFO calls.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_fault as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// SIGSEGV and SIGBUS: at the main stack's limit, the standard library's
/// message and an abort; anywhere else, the default action, which the
/// faulting instruction then meets again. Only async-signal-safe calls.
extern "C" fn on_fault(signal: c_int, info: *mut libc::siginfo_t, _context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let address = unsafe { (*info).si_addr() } as usize;
    let limit = STACK_LIMIT.load(Ordering::Relaxed);
    if address.abs_diff(limit) <= OVERFLOW_WINDOW {
        const MESSAGE: &[u8] =
            b"\nthread 'main' has overflowed its stack\nfatal runtime error: stack overflow, aborting\n";
        // SAFETY: write and abort are async-signal-safe.
        unsafe {
            libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len());
            libc::abort();
        }
    }
    // SAFETY: restoring the default disposition is async-signal-safe.
    unsafe { libc::signal(signal, libc::SIG_DFL) };
}

/// Whether the note on `RUST_BACKTRACE` is still to be printed (the
/// standard hook prints it once).
static BACKTRACE_NOTE: AtomicBool = AtomicBool::new(true);

/// Installs a panic hook that prints a panic of the main thread as the
/// standard hook does, naming the thread `main` (without the standard
/// start-up the main thread has no name), and hands any other thread's
/// panic to the standard hook.
fn name_main_thread_in_panics() {
    let main = std::thread::current().id();
    let standard = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        if thread.id() != main || thread.name().is_some() {
            return standard(info);
        }
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("Box<dyn Any>");
        // SAFETY: gettid has no precondition.
        let tid = unsafe { libc::gettid() };
        let mut text = match info.location() {
            Some(at) => format!("thread 'main' ({tid}) panicked at {at}:\n{message}\n"),
            None => format!("thread 'main' ({tid}) panicked:\n{message}\n"),
        };
        let asked = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
        if asked {
            let trace = std::backtrace::Backtrace::force_capture();
            text.push_str(&format!("stack backtrace:\n{trace}\n"));
        } else if BACKTRACE_NOTE.swap(false, Ordering::Relaxed) {
            text.push_str(
                "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n",
            );
        }
        let _ = std::io::stderr().write_all(text.as_bytes());
    }));
}
