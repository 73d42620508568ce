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

use std::ffi::c_int;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Runs the runner as the process's `main`: the start-up the standard
/// library would have done (see the module's comment), then [`crate::run`]'s
/// work, then standard output flushed. A panic that escapes is reported by
/// the hook and ends the process with 101, as from a Rust `main`.
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
    report_stack_overflow();
    name_main_thread_in_panics();
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

/// The size of the alternate stack the fault handler runs on.
const ALT_STACK: usize = 16 * 1024;

/// How far from the stack's limit a fault still counts as an overflow.
const OVERFLOW_WINDOW: usize = 64 * 1024;

/// The lowest stack limit the report trusts (1 GiB): below it, the stack
/// limit is no bound at all.
const LOWEST_PLAUSIBLE_LIMIT: usize = 1 << 30;

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
    // A limit that would put the stack's bottom among the low pages (an
    // RLIMIT_STACK near the whole address space) is no bound to trust: a
    // null pointer's fault would look like an overflow.
    let low = match top.checked_sub(limit.rlim_cur as usize) {
        Some(low) if low >= LOWEST_PLAUSIBLE_LIMIT => low,
        _ => return,
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

/// SIGSEGV and SIGBUS: a fault the kernel raised for an address at the
/// main stack's limit prints the standard library's message and aborts;
/// any other (another address, a signal sent by `kill`, a fault with no
/// address) gets the default action, which the faulting instruction then
/// meets again. Only async-signal-safe calls.
extern "C" fn on_fault(signal: c_int, info: *mut libc::siginfo_t, _context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let (code, address) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // SEGV_MAPERR, SEGV_ACCERR (and BUS_ADRALN, BUS_ADRERR): a fault at an
    // address. SI_USER and SI_TKILL (kill, raise) are 0 and below;
    // SI_KERNEL (a non-canonical address) has no address.
    let at_address = code == 1 || code == 2;
    let limit = STACK_LIMIT.load(Ordering::Relaxed);
    if at_address && address.abs_diff(limit) <= OVERFLOW_WINDOW {
        let mut message = [0u8; 128];
        let mut len = 0;
        let mut put = |bytes: &[u8]| {
            for &b in bytes {
                if len < message.len() {
                    message[len] = b;
                    len += 1;
                }
            }
        };
        put(b"\nthread 'main' (");
        // SAFETY: gettid is async-signal-safe.
        put(decimal(unsafe { libc::gettid() } as u64, &mut [0u8; 20]));
        put(b") has overflowed its stack\nfatal runtime error: stack overflow, aborting\n");
        // SAFETY: write and abort are async-signal-safe.
        unsafe {
            libc::write(2, message.as_ptr().cast(), len);
            libc::abort();
        }
    }
    // SAFETY: restoring the default disposition is async-signal-safe.
    unsafe { libc::signal(signal, libc::SIG_DFL) };
}

/// `n` in decimal, written at the end of `buf` (no allocation: the fault
/// handler uses it).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Whether the note on `RUST_BACKTRACE` is still to be printed (the
/// standard hook prints it once).
static BACKTRACE_NOTE: AtomicBool = AtomicBool::new(true);

/// Installs a panic hook that prints a panic of the main thread as the
/// standard hook does, naming the thread `main` (without the standard
/// start-up the main thread has no name), and hands any other thread's
/// panic to the standard hook.
fn name_main_thread_in_panics() {
    let standard = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // The main thread is the one whose id is the process's: asked of
        // the kernel, since `thread::current()` panics in a thread-local
        // destructor at exit.
        // SAFETY: gettid and getpid have no precondition.
        if unsafe { libc::gettid() != libc::getpid() } {
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
        let asked = std::env::var_os("RUST_BACKTRACE").filter(|v| v != "0");
        if let Some(style) = asked {
            text.push_str("stack backtrace:\n");
            if style == "full" {
                text.push_str(&format!("{:#}", std::backtrace::Backtrace::force_capture()));
            } else {
                let trace = std::backtrace::Backtrace::force_capture().to_string();
                text.push_str(&short_backtrace(&trace));
                text.push_str(
                    "note: Some details are omitted, run with `RUST_BACKTRACE=full` for a \
                     verbose backtrace.\n",
                );
            }
        } else if BACKTRACE_NOTE.swap(false, Ordering::Relaxed) {
            text.push_str(
                "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n",
            );
        }
        let _ = std::io::stderr().write_all(text.as_bytes());
    }));
}

/// The short form of a backtrace, as the standard hook prints it: from the
/// panic's entry into the standard library (`rust_begin_unwind`) down to
/// the runner's start, the frames numbered again from 0. A trace in which
/// neither is found is given whole.
fn short_backtrace(trace: &str) -> String {
    let mut frames: Vec<Vec<&str>> = Vec::new();
    for line in trace.lines() {
        let head = line.trim_start();
        let starts = head
            .split_once(": ")
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        match frames.last_mut() {
            Some(frame) if !starts => frame.push(line),
            _ => frames.push(vec![line]),
        }
    }
    fn name<'a>(frame: &[&'a str]) -> &'a str {
        frame.first().copied().unwrap_or_default()
    }
    let first = frames
        .iter()
        .position(|f| name(f).contains("rust_begin_unwind"))
        .unwrap_or(0);
    // Through the runner's own frame; or, where it was inlined away, up to
    // the entry's (named `start` when inlined itself) or the C `main`.
    let symbol = |f: &[&str]| {
        let head = name(f).trim_start();
        head.split_once(": ").map_or(head, |(_, s)| s).to_owned()
    };
    let rest = &frames[first..];
    let end = match rest.iter().position(|f| symbol(f) == "manage::run_code") {
        Some(n) => first + n + 1,
        None => rest
            .iter()
            .position(|f| {
                let s = symbol(f);
                s == "start" || s == "main" || s.contains("manage::entry::start")
            })
            .map_or(frames.len(), |n| first + n),
    };
    let mut out = String::new();
    for (n, frame) in frames[first..end].iter().enumerate() {
        for (i, line) in frame.iter().enumerate() {
            if i == 0 {
                let symbol = line.trim_start().split_once(": ").map_or(*line, |(_, s)| s);
                out.push_str(&format!("{n:>4}: {symbol}\n"));
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{decimal, short_backtrace};

    #[test]
    fn decimal_writes_every_digit() {
        assert_eq!(decimal(0, &mut [0; 20]), b"0");
        assert_eq!(decimal(807, &mut [0; 20]), b"807");
        assert_eq!(decimal(u64::MAX, &mut [0; 20]), b"18446744073709551615");
    }

    #[test]
    fn the_short_backtrace_runs_from_the_panic_to_the_runner_numbered_from_0() {
        let full = "   0: manage::entry::name_main_thread_in_panics::{{closure}}
             at ./manage/src/entry.rs:200:25
   1: std::panicking::panic_with_hook
   2: __rustc::rust_begin_unwind
             at /rustc/library/std/src/panicking.rs:689:5
   3: core::panicking::panic_fmt
   4: <fixture::Boom as ManageCommand>::run
             at ./tests/src/fixture.rs:127:9
   5: manage::run_code
             at ./manage/src/lib.rs:101:16
   6: core::ops::function::FnOnce::call_once
   7: start
   8: main
   9: __libc_start_main
";
        assert_eq!(
            short_backtrace(full),
            "   0: __rustc::rust_begin_unwind
             at /rustc/library/std/src/panicking.rs:689:5
   1: core::panicking::panic_fmt
   2: <fixture::Boom as ManageCommand>::run
             at ./tests/src/fixture.rs:127:9
   3: manage::run_code
             at ./manage/src/lib.rs:101:16
"
        );
        let inlined = "   0: __rustc::rust_begin_unwind\n   1: x::run\n   2: start\n   3: main\n";
        assert_eq!(
            short_backtrace(inlined),
            "   0: __rustc::rust_begin_unwind\n   1: x::run\n"
        );
        let odd = "   0: a\n   1: b\n";
        assert_eq!(short_backtrace(odd), odd, "nothing known: given whole");
    }
}
