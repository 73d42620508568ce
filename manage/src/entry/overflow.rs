//! The report of a main-thread stack overflow under [`super::start`]: the
//! standard library's message, from a handler on an alternate stack, for a
//! fault the kernel raised at the main stack's limit; any other SIGSEGV or
//! SIGBUS keeps its default action.

use std::ffi::c_int;
use std::sync::atomic::{AtomicUsize, Ordering};

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
pub(super) fn report_stack_overflow() {
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
        // has the three-argument signature SA_SIGINFO calls. A handler
        // already there (a preloaded library's, a sanitizer's) is kept, as
        // the standard library keeps it.
        unsafe {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut current) != 0
                || current.sa_sigaction != libc::SIG_DFL
            {
                continue;
            }
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
/// any other gets the default action — a fault (at another address, or
/// with none) when its instruction runs again, a signal sent by `kill` or
/// `raise` by sending it again. Only async-signal-safe calls.
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
    // SAFETY: restoring the default disposition and raising a signal are
    // async-signal-safe.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        // Sent, not raised by an instruction that will fault again
        // (SI_USER, SI_QUEUE, SI_TKILL… are 0 and below): sent again, it
        // is delivered at its default once this handler returns (it is
        // blocked meanwhile), so it kills the process as it would have.
        if code <= 0 {
            libc::raise(signal);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::decimal;

    #[test]
    fn decimal_writes_every_digit() {
        assert_eq!(decimal(0, &mut [0; 20]), b"0");
        assert_eq!(decimal(807, &mut [0; 20]), b"807");
        assert_eq!(decimal(u64::MAX, &mut [0; 20]), b"18446744073709551615");
    }
}
