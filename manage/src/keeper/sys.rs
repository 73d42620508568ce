//! The system calls of a keeper and of the processes it starts before they
//! exec, each returning its error rather than setting `errno`.
//!
//! On x86-64 the keeper shares the runner's memory (`CLONE_VM`), and with it
//! the runner's thread pointer: a C library wrapper that failed would write
//! the runner's main thread's `errno` while that thread runs, and a keeper
//! reading `errno` could read the runner's. So there every call here is the
//! `syscall` instruction itself (inline assembly), and touches no memory but
//! its arguments. On other architectures the keeper is a forked copy, whose
//! `errno` is its own, and these are the C library's wrappers.
//!
//! Every function is async-signal-safe.

use std::os::fd::RawFd;

/// An error number, as the kernel returns it.
pub(super) type Errno = i32;

/// The signals numbered 1 to 64, as the kernel's `sigset_t` holds them (bit
/// `n - 1` for signal `n`).
#[derive(Clone, Copy)]
pub(super) struct SigSet(u64);

impl SigSet {
    /// No signal.
    pub(super) const EMPTY: SigSet = SigSet(0);

    /// This set and `signal`.
    pub(super) const fn with(self, signal: libc::c_int) -> SigSet {
        SigSet(self.0 | 1 << (signal - 1))
    }

    /// The signals 1 to 64 of a C library set.
    pub(super) fn of(set: &libc::sigset_t) -> SigSet {
        let mut bits = 0u64;
        for signal in 1..=64 {
            // SAFETY: a query of a valid set.
            if unsafe { libc::sigismember(set, signal) } == 1 {
                bits |= 1 << (signal - 1);
            }
        }
        SigSet(bits)
    }

    /// This set as the C library holds it.
    #[cfg(not(target_arch = "x86_64"))]
    fn to_libc(self) -> libc::sigset_t {
        // SAFETY: initialising a set of our own with valid signal numbers.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for signal in 1..=64 {
                if self.0 & 1 << (signal - 1) != 0 {
                    libc::sigaddset(&mut set, signal);
                }
            }
            set
        }
    }
}

/// The raw system call `n` with six arguments: its result, or the error the
/// kernel returned (`-4095..0`).
///
/// # Safety
///
/// As the system call: every pointer among the arguments must be valid for
/// it.
#[cfg(target_arch = "x86_64")]
unsafe fn syscall(n: libc::c_long, a: [usize; 6]) -> Result<usize, Errno> {
    let r: isize;
    // SAFETY: the x86-64 system call convention: the number in rax, the
    // arguments in rdi, rsi, rdx, r10, r8, r9; rcx and r11 are clobbered.
    // The caller vouches for the arguments.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") n as isize => r,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if (-4095..0).contains(&r) {
        Err(-r as Errno)
    } else {
        Ok(r as usize)
    }
}

/// A C library result: `Ok` when it is not -1, else `errno` (the process's
/// own, where this is used).
#[cfg(not(target_arch = "x86_64"))]
fn check(r: libc::c_long) -> Result<usize, Errno> {
    if r == -1 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r as usize)
    }
}

/// Runs `$raw` (x86-64) or `$libc` (elsewhere).
macro_rules! call {
    ($raw:expr, $libc:expr) => {{
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as the caller's promise for the system call.
        let r = unsafe { $raw };
        #[cfg(not(target_arch = "x86_64"))]
        // SAFETY: as the caller's promise for the system call.
        let r = check(unsafe { $libc } as libc::c_long);
        r
    }};
}

/// `write(2)`.
pub(super) unsafe fn write(fd: RawFd, buf: &[u8]) -> Result<usize, Errno> {
    call!(
        syscall(
            libc::SYS_write,
            [fd as usize, buf.as_ptr() as usize, buf.len(), 0, 0, 0]
        ),
        libc::write(fd, buf.as_ptr().cast(), buf.len())
    )
}

/// `read(2)`.
pub(super) unsafe fn read(fd: RawFd, buf: &mut [u8]) -> Result<usize, Errno> {
    call!(
        syscall(
            libc::SYS_read,
            [fd as usize, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0]
        ),
        libc::read(fd, buf.as_mut_ptr().cast(), buf.len())
    )
}

/// `close(2)`.
pub(super) unsafe fn close(fd: RawFd) {
    let _ = call!(
        syscall(libc::SYS_close, [fd as usize, 0, 0, 0, 0, 0]),
        libc::close(fd)
    );
}

/// `close_range(2)` (Linux 5.9) from `from` to `to`, both included.
pub(super) unsafe fn close_range(from: libc::c_uint, to: libc::c_uint) -> Result<usize, Errno> {
    call!(
        syscall(
            libc::SYS_close_range,
            [from as usize, to as usize, 0, 0, 0, 0]
        ),
        libc::syscall(libc::SYS_close_range, from, to, 0)
    )
}

/// `open(2)` (as `openat` from the working directory).
pub(super) unsafe fn open(path: &std::ffi::CStr, flags: libc::c_int) -> Result<RawFd, Errno> {
    call!(
        syscall(
            libc::SYS_openat,
            [
                libc::AT_FDCWD as usize,
                path.as_ptr() as usize,
                flags as usize,
                0,
                0,
                0
            ]
        ),
        libc::open(path.as_ptr(), flags)
    )
    .map(|fd| fd as RawFd)
}

/// `dup2(2)`, as `dup3` (every architecture has it): a no-op when `from`
/// is `to`.
pub(super) unsafe fn dup2(from: RawFd, to: RawFd) {
    if from != to {
        let _ = call!(
            syscall(libc::SYS_dup3, [from as usize, to as usize, 0, 0, 0, 0]),
            libc::dup3(from, to, 0)
        );
    }
}

/// `fcntl(fd, F_SETFD, 0)`: `fd` no longer closes at exec.
pub(super) unsafe fn keep_on_exec(fd: RawFd) {
    let _ = call!(
        syscall(
            libc::SYS_fcntl,
            [fd as usize, libc::F_SETFD as usize, 0, 0, 0, 0]
        ),
        libc::fcntl(fd, libc::F_SETFD, 0)
    );
}

/// `execve(2)`: returns only when it failed.
pub(super) unsafe fn execve(
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) -> Errno {
    match call!(
        syscall(
            libc::SYS_execve,
            [path as usize, argv as usize, envp as usize, 0, 0, 0]
        ),
        libc::execve(path, argv, envp)
    ) {
        Err(e) => e,
        Ok(_) => 0,
    }
}

/// `_exit(2)`: the whole process ends (it has one thread).
pub(super) unsafe fn exit(code: libc::c_int) -> ! {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: exit_group takes no pointer and does not return.
    unsafe {
        let _ = syscall(libc::SYS_exit_group, [code as usize, 0, 0, 0, 0, 0]);
        std::hint::unreachable_unchecked()
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: as above.
    unsafe {
        libc::_exit(code)
    }
}

/// `prctl(2)` with one argument.
pub(super) unsafe fn prctl(option: libc::c_int, arg: libc::c_ulong) {
    let _ = call!(
        syscall(libc::SYS_prctl, [option as usize, arg as usize, 0, 0, 0, 0]),
        libc::prctl(option, arg, 0, 0, 0)
    );
}

/// Sets `signal`'s disposition to `SIG_DFL` or `SIG_IGN` (no handler, so
/// no restorer and no flags), with an empty mask.
pub(super) unsafe fn set_disposition(signal: libc::c_int, disposition: libc::sighandler_t) {
    // SAFETY: a default or ignore disposition needs nothing of ours.
    unsafe { disposition_swap(signal, Some(disposition)) };
}

/// Puts every signal a handler catches back to its default, leaving the
/// ignored ones ignored: what `execve` does, for a process that shares the
/// runner's memory until it execs and so must never run one of the
/// runner's handlers (the C library's `posix_spawn` does the same).
pub(super) unsafe fn default_handlers() {
    for signal in 1..=64 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: reading a disposition, then setting a default one.
        unsafe {
            if disposition_swap(signal, None)
                .is_some_and(|h| h != libc::SIG_DFL && h != libc::SIG_IGN)
            {
                disposition_swap(signal, Some(libc::SIG_DFL));
            }
        }
    }
}

/// `rt_sigaction(2)`: sets `signal` to `new` (`SIG_DFL` or `SIG_IGN`, with
/// no flags and an empty mask), or with `None` only reads it. Returns the
/// handler it had, when the kernel answered.
unsafe fn disposition_swap(
    signal: libc::c_int,
    new: Option<libc::sighandler_t>,
) -> Option<libc::sighandler_t> {
    #[cfg(target_arch = "x86_64")]
    {
        // The kernel's `struct sigaction` on x86-64.
        #[repr(C)]
        struct KernelSigaction {
            handler: usize,
            flags: u64,
            restorer: usize,
            mask: u64,
        }
        let action = new.map(|handler| KernelSigaction {
            handler,
            flags: 0,
            restorer: 0,
            mask: 0,
        });
        let mut old = KernelSigaction {
            handler: 0,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        let new_ptr = action
            .as_ref()
            .map_or(0, |a| a as *const KernelSigaction as usize);
        // SAFETY: a valid action of our own (or none), and room for the old.
        let r = unsafe {
            syscall(
                libc::SYS_rt_sigaction,
                [signal as usize, new_ptr, (&raw mut old) as usize, 8, 0, 0],
            )
        };
        r.ok().map(|_| old.handler)
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: a zeroed sigaction with a default or ignore disposition.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        let r = match new {
            Some(disposition) => {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = disposition;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(signal, &action, &mut old)
            }
            None => libc::sigaction(signal, std::ptr::null(), &mut old),
        };
        (r == 0).then_some(old.sa_sigaction)
    }
}

/// Sets the calling thread's signal mask to `set`.
pub(super) unsafe fn set_mask(set: SigSet) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a set of our own, 8 bytes as the kernel's.
    let _ = unsafe {
        syscall(
            libc::SYS_rt_sigprocmask,
            [
                libc::SIG_SETMASK as usize,
                (&raw const set.0) as usize,
                0,
                8,
                0,
                0,
            ],
        )
    };
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: a set of our own.
    unsafe {
        let set = set.to_libc();
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// `sigtimedwait(2)` for `set`, or `sigwaitinfo(2)` without a timeout: the
/// signal taken, or the error (`EAGAIN` once the timeout passed).
pub(super) unsafe fn sigwait(set: SigSet, timeout: Option<&libc::timespec>) -> Result<i32, Errno> {
    let timeout = timeout.map_or(std::ptr::null(), |t| t as *const libc::timespec);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a set and a timeout of our own; no siginfo is asked for.
    let r = unsafe {
        syscall(
            libc::SYS_rt_sigtimedwait,
            [(&raw const set.0) as usize, 0, timeout as usize, 8, 0, 0],
        )
    };
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: as above.
    let r = check(unsafe {
        let set = set.to_libc();
        libc::sigtimedwait(&set, std::ptr::null_mut(), timeout)
    } as libc::c_long);
    r.map(|s| s as i32)
}

/// `waitpid(2)`: the pid reaped (0 with `WNOHANG` when none has ended yet)
/// and its wait status.
pub(super) unsafe fn waitpid(
    pid: libc::pid_t,
    options: libc::c_int,
) -> Result<(libc::pid_t, libc::c_int), Errno> {
    let mut status: libc::c_int = 0;
    let r = call!(
        syscall(
            libc::SYS_wait4,
            [
                pid as isize as usize,
                (&raw mut status) as usize,
                options as usize,
                0,
                0,
                0
            ]
        ),
        libc::waitpid(pid, &mut status, options)
    );
    r.map(|p| (p as libc::pid_t, status))
}

/// `kill(2)`.
pub(super) unsafe fn kill(pid: libc::pid_t, signal: libc::c_int) {
    let _ = call!(
        syscall(
            libc::SYS_kill,
            [pid as isize as usize, signal as usize, 0, 0, 0, 0]
        ),
        libc::kill(pid, signal)
    );
}

/// `getpid(2)`.
pub(super) fn getpid() -> libc::pid_t {
    call!(syscall(libc::SYS_getpid, [0; 6]), libc::getpid()).map_or(0, |p| p as libc::pid_t)
}

/// `getppid(2)`.
pub(super) fn getppid() -> libc::pid_t {
    call!(syscall(libc::SYS_getppid, [0; 6]), libc::getppid()).map_or(0, |p| p as libc::pid_t)
}

/// The monotonic clock (the system call, not the vDSO: this is rare).
pub(super) fn monotonic() -> libc::timespec {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let _ = call!(
        syscall(
            libc::SYS_clock_gettime,
            [
                libc::CLOCK_MONOTONIC as usize,
                (&raw mut now) as usize,
                0,
                0,
                0,
                0
            ]
        ),
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now)
    );
    now
}

/// Starts `entry(arg)` in a new process made by `clone(2)` with `flags`
/// (which include the exit signal), on the stack whose highest address is
/// `stack`: its pid, or the error. The child never returns from `entry`'s
/// frame: when `entry` returns, the process exits with its result.
///
/// On x86-64 this is the system call itself, so that a failure writes no
/// `errno`; elsewhere the C library's `clone`.
///
/// # Safety
///
/// `stack` must be the top of a mapping of at least the stack `entry`
/// needs, 16-byte aligned, used by nothing else while the child runs on it.
/// With `CLONE_VM`, `arg` and everything `entry` reads must outlive the
/// child's use of them, and the child may make only the calls of this
/// module.
pub(super) unsafe fn clone(
    entry: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    stack: *mut libc::c_void,
    flags: libc::c_int,
    arg: *mut libc::c_void,
) -> Result<libc::pid_t, Errno> {
    #[cfg(target_arch = "x86_64")]
    {
        let r: isize;
        // SAFETY: clone(flags, stack, NULL, NULL, 0). The child resumes
        // after the instruction with rax = 0 and rsp = `stack`, every other
        // register as the parent's: it calls `entry` with `arg` (r12, r13
        // survive the system call) on the aligned stack, then exits with
        // the result. The parent goes on with the pid or the error.
        unsafe {
            std::arch::asm!(
                "syscall",
                "test rax, rax",
                "jnz 2f",
                "xor ebp, ebp",
                "mov rdi, r13",
                "call r12",
                "mov edi, eax",
                "mov eax, {exit}",
                "syscall",
                "ud2",
                "2:",
                exit = const libc::SYS_exit_group,
                inlateout("rax") libc::SYS_clone as isize => r,
                in("rdi") flags as usize,
                in("rsi") stack,
                in("rdx") 0usize,
                in("r10") 0usize,
                in("r8") 0usize,
                in("r12") entry,
                in("r13") arg,
                lateout("rcx") _,
                lateout("r11") _,
            );
        }
        if (-4095..0).contains(&r) {
            Err(-r as Errno)
        } else {
            Ok(r as libc::pid_t)
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: as the caller's promise.
    unsafe {
        check(libc::clone(entry, stack, flags, arg) as libc::c_long).map(|p| p as libc::pid_t)
    }
}

/// Whether this process runs under Valgrind, which runs no process that
/// shares another's memory without being its thread (it ends the program
/// at such a `clone`): Valgrind's own client request, `RUNNING_ON_VALGRIND`,
/// which is a no-op on the processor itself (the rotations of rdi add up to
/// 128 bits, and `xchg rbx, rbx` changes nothing) and answers non-zero under
/// Valgrind.
#[cfg(target_arch = "x86_64")]
pub(super) fn under_valgrind() -> bool {
    // The request and its five arguments, as valgrind.h lays them out.
    let request: [u64; 6] = [0x1001, 0, 0, 0, 0, 0];
    let answer: u64;
    // SAFETY: the instructions change no register but rdx (the answer), and
    // Valgrind reads only the request array.
    unsafe {
        std::arch::asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            in("rax") request.as_ptr(),
            inlateout("rdx") 0u64 => answer,
            options(nostack, readonly),
        );
    }
    answer != 0
}
