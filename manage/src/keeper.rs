//! The keeper of an external command's task (Linux, I3): a forked child of
//! the runner that makes itself a child subreaper, starts the command as its
//! own child, and lives until the command and every descendant it left
//! behind have exited — whatever descriptors they closed, however they
//! daemonised — holding the task's locks all that time. The runner returns
//! with the command's own exit code the moment the command exits; what the
//! command left behind keeps the task live in the keeper, which forwards
//! SIGTERM (and a drain's stop request) to it.
//!
//! The keeper never execs. On x86-64 it runs in the runner's own memory
//! (`clone` with `CLONE_VM`, on a stack of its own: no page table copied
//! at its start nor torn down at its end, and no copy-on-write fault in
//! the runner meanwhile), and from its start to its end, and in the command
//! until its exec, the only calls made are [`sys`]'s raw system calls,
//! which set no `errno` (the runner's main thread's, there) — every
//! string, array and path is prepared before the clone, and its loop is
//! plain system calls. Elsewhere it is a bare fork (no C library handlers)
//! making the same calls through the C library. The runner frees what the
//! keeper runs on ([`KeeperMemory`]) only once it has reaped it. The
//! keeper starts the command as `posix_spawn` does, in its own memory
//! (`CLONE_VM | CLONE_VFORK`, on a stack of its own). The command says it
//! exists, and execs only once the
//! runner has recorded its processes. The keeper keeps every signal
//! blocked and waits for SIGCHLD and SIGTERM. When the command ends with
//! nothing left behind, the keeper lets go of the locks, tells the runner,
//! and exits while the runner ends the task ([`Reap`]); when something is
//! left, it first closes every descriptor but the task's locks and its own
//! (an `offline run`'s window lock, a caller's pipe must not outlive the
//! command) and holds no terminal. For a drain-`stop` command whose
//! leftovers remain, it asks them to stop once the site leaves ONLINE: on
//! the file backend it looks at the mode every 20 ms ([`ModeProbe`]); on
//! another backend, which takes a connection no forked child may make, it
//! starts a drain watcher ([`DrainLook::Watcher`]: this binary again, its
//! argv and environment prepared before the fork, started as the command
//! is) that waits for the mode with the backend's own `wait_for_change` and
//! exits 0 when it leaves ONLINE. Any other end of the watcher says
//! nothing of the mode: it is started again, [`WATCHER_STARTS`] times at
//! most. The watcher dies with the keeper (`PR_SET_PDEATHSIG`), holds none
//! of the task's locks (they are close-on-exec in the keeper), and is
//! killed once it is the keeper's only child.
//!
//! Limits: a keeper itself SIGKILLed while leftovers live loses them (they
//! are reparented past it), and one that shares the runner's memory is
//! killed with it by the out-of-memory killer; without `/proc` (not Linux) there is no keeper;
//! on a backend other than the file backend, a watcher that failed
//! [`WATCHER_STARTS`] times leaves the leftovers of a drain-`stop` command
//! unasked by a drain, and a binary whose `main` is not `manage::run` (the
//! testing harness) starts none, nor does a keeper that cannot read
//! `/proc/thread-self/children` (it could not tell when only the watcher
//! is left).
//!
//! One file, though over 500 lines: everything that runs in the forked
//! keeper, and everything prepared for it before the fork, stays together
//! so that the rule above (only [`sys`]'s calls after the clone) can be
//! checked in one place.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;

use maintenance_core::backend::file::ModeProbe;
use maintenance_core::process::{DRAIN_WATCH_ARG, ProcId};

/// How often a keeper of a drain-`stop` command's leftovers looks at the
/// mode, in milliseconds.
const LOOK_MS: libc::c_long = 20;

/// How many times a keeper starts a drain watcher that died without
/// seeing the site leave ONLINE (killed, or unable to read its
/// configuration) before it gives up: then the leftovers are no longer
/// asked to stop by a drain (SIGTERM still reaches them).
const WATCHER_STARTS: u32 = 5;

/// How long a keeper waits before it starts a watcher again, in seconds.
const WATCHER_RETRY_S: libc::time_t = 1;

/// How a keeper learns that a drain-`stop` command's leftovers must stop.
pub(crate) enum DrainLook<'a> {
    /// The file backend: the keeper reads the stored mode itself.
    Probe(&'a ModeProbe),
    /// Another backend, which takes a connection the keeper cannot make
    /// after `fork`: a watcher process — `exe` (this binary) run with
    /// [`DRAIN_WATCH_ARG`] — opens the backend, waits until the site leaves
    /// ONLINE and exits 0 (`crate::drain::watcher`).
    Watcher {
        /// The binary to run: `/proc/self/exe`.
        exe: &'a Path,
        /// The configuration file the runner read, if any.
        config: Option<&'a Path>,
        /// Whether the task holds off READONLY too (then the read-only
        /// tier asks its leftovers to stop).
        read_only: bool,
    },
}

/// What to spawn, and how.
pub(crate) struct Spawn<'a> {
    /// The executable.
    pub path: &'a Path,
    /// Its arguments (after argv\[0\], which is `path`).
    pub args: &'a [OsString],
    /// Variables to set in its environment (over the runner's own).
    pub env: &'a [(OsString, OsString)],
    /// The task's lock descriptors, which the command inherits and the
    /// keeper holds.
    pub fds: &'a [RawFd],
    /// `descendants = "release"`: the command does not inherit the locks,
    /// and the keeper ends with the command, letting leftovers go.
    pub release: bool,
    /// For a drain-`stop` command: how the keeper looks at the mode, to ask
    /// leftovers to stop when the site leaves ONLINE.
    pub drain: Option<DrainLook<'a>>,
}

/// A spawned command and its keeper.
pub(crate) struct Running {
    /// The keeper (the runner's child), as it was when forked.
    pub keeper: ProcId,
    /// The command's pid (the keeper's child).
    pub command: u32,
    status: File,
    go: Option<File>,
    /// Freed once the keeper is reaped; else never.
    memory: Option<KeeperMemory>,
}

/// How the command ended.
pub(crate) struct Ended {
    /// Its wait status, as `waitpid` gives it.
    pub status: i32,
    /// Whether processes it left behind still hold the task.
    pub leftovers: bool,
    /// The keeper, once it has let go of the task, still to be reaped
    /// (when nothing was left behind).
    pub keeper: Option<Reap>,
}

/// A keeper that has closed the task's locks and is exiting: reaped when
/// dropped. Drop it after the task, so that the runner ends the task while
/// the keeper's exit tears down its copy of the runner's memory. The
/// runner still waits for that exit: a keeper left to init would stay a
/// zombie under a PID 1 that reaps nothing (a container's own server), one
/// per run, until no pid is left.
pub(crate) struct Reap(libc::pid_t, Option<KeeperMemory>);

impl Drop for Reap {
    fn drop(&mut self) {
        reap(self.0, self.1.take());
    }
}

/// The memory a keeper runs on: its stacks and what was prepared for it.
/// On x86-64 the keeper runs in the runner's own memory, so the runner
/// frees this only once the keeper is reaped (and never when a keeper
/// outlives it); it has no `Drop`, so that it is kept unless freed.
struct KeeperMemory {
    prepared: *mut Prepared,
    stacks: Stacks,
}

impl KeeperMemory {
    /// Frees it.
    ///
    /// # Safety
    ///
    /// No keeper, and no process a keeper started that has not exec'd,
    /// may run on it: the keeper was reaped, or never started.
    unsafe fn free(self) {
        // SAFETY: by the caller's promise, nothing uses it any more.
        unsafe {
            drop(Box::from_raw(self.prepared));
            self.stacks.unmap();
        }
    }
}

/// The two stacks, each above a guard page: the keeper's, and the one the
/// command (then the drain watcher) runs on while it shares the keeper's
/// memory. The keeper's holds [`keeps_running`]'s 64 KiB buffer.
struct Stacks {
    base: *mut libc::c_void,
}

impl Stacks {
    const GUARD: usize = 4096;
    const KEEPER: usize = 256 * 1024;
    const COMMAND: usize = 64 * 1024;
    const LEN: usize = Self::GUARD + Self::KEEPER + Self::GUARD + Self::COMMAND;

    /// Maps them (pages are touched only as used).
    fn map() -> io::Result<Stacks> {
        // SAFETY: a fresh anonymous mapping of our own, and its guards.
        unsafe {
            let base = libc::mmap(
                ptr::null_mut(),
                Self::LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let stacks = Stacks { base };
            let second_guard = base.wrapping_byte_add(Self::GUARD + Self::KEEPER);
            if libc::mprotect(base, Self::GUARD, libc::PROT_NONE) != 0
                || libc::mprotect(second_guard, Self::GUARD, libc::PROT_NONE) != 0
            {
                let e = io::Error::last_os_error();
                stacks.unmap();
                return Err(e);
            }
            Ok(stacks)
        }
    }

    /// The top of the keeper's stack (page-aligned).
    fn keeper_top(&self) -> *mut libc::c_void {
        self.base.wrapping_byte_add(Self::GUARD + Self::KEEPER)
    }

    /// The top of the command's stack (page-aligned).
    fn command_top(&self) -> *mut libc::c_void {
        self.base.wrapping_byte_add(Self::LEN)
    }

    /// Unmaps them.
    ///
    /// # Safety
    ///
    /// Nothing runs on them any more.
    unsafe fn unmap(self) {
        // SAFETY: our own mapping, by the caller's promise unused.
        unsafe {
            libc::munmap(self.base, Self::LEN);
        }
    }
}

mod sys;

const MSG_STARTED: u8 = b'S';
const MSG_EXEC_FAILED: u8 = b'E';
const MSG_EXITED: u8 = b'X';
const MSG_LEN: usize = 9;

unsafe extern "C" {
    /// The process's environment (POSIX): the command's starts from it.
    static environ: *const *const libc::c_char;
}

/// A program to exec, its strings prepared before the fork.
struct Exec {
    path: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
}

impl Exec {
    /// The drain watcher: `exe --manage-drain-watch offline|read-only
    /// [CONFIG]`, in the runner's environment as it is.
    fn watcher(exe: &Path, config: Option<&Path>, read_only: bool) -> io::Result<Exec> {
        let path = cstring(exe.as_os_str())?;
        let mut argv = vec![
            c"manage-drain-watch".to_owned(),
            cstring(OsStr::new(DRAIN_WATCH_ARG))?,
            if read_only {
                c"read-only".to_owned()
            } else {
                c"offline".to_owned()
            },
        ];
        if let Some(config) = config {
            argv.push(cstring(config.as_os_str())?);
        }
        Ok(Exec {
            path,
            argv_ptrs: pointers(&argv),
            _argv: argv,
            envp_ptrs: environment(&[], &[]),
        })
    }
}

/// Everything the forked processes use, prepared before the fork.
struct Prepared {
    path: CString,
    // Owners of what the pointer arrays point into (with the process's own
    // environment, which is never freed).
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _env: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    fds: Vec<RawFd>,
    /// Every descriptor the keeper keeps (sorted): the locks, its report
    /// pipe, the probe's directory.
    keep: Vec<RawFd>,
    /// The keeper's own copy of the runner's probe: the same descriptor
    /// number, open in the keeper's table whatever the runner does with its
    /// own; never dropped (the runner's closes it).
    probe: Option<ManuallyDrop<ModeProbe>>,
    /// The drain watcher the keeper starts when leftovers remain.
    watcher: Option<Exec>,
    release: bool,
    /// The read end of the runner's go-ahead: the command execs only once
    /// the runner has recorded its processes (and never if the runner died
    /// first).
    go: RawFd,
    /// The write end of the keeper's report to the runner.
    report: RawFd,
    /// The runner's ends of the two pipes, which the keeper closes.
    runner_ends: [RawFd; 2],
    /// The runner's signal mask, which the command gets back.
    runner_mask: sys::SigSet,
    /// The top of the stack the command (then the drain watcher) runs on
    /// until it execs.
    command_stack: *mut libc::c_void,
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{s:?} holds a NUL byte"),
        )
    })
}

fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(ptr::null()))
        .collect()
}

/// The command's environment: the runner's own entries as they are (no
/// copy), less those `env` sets, then `env`'s, which `own` holds.
fn environment(env: &[(OsString, OsString)], own: &[CString]) -> Vec<*const libc::c_char> {
    let mut envp = Vec::with_capacity(64 + own.len());
    // SAFETY: `environ` is a null-terminated array of C strings; nothing
    // in this program changes the environment while it runs (std's
    // `set_var` is unsafe for that reason), and a C library never frees an
    // entry it handed out, so the pointers stay valid until the exec.
    unsafe {
        let mut entry = environ;
        while !entry.is_null() && !(*entry).is_null() {
            let bytes = std::ffi::CStr::from_ptr(*entry).to_bytes();
            let key = bytes.split(|&b| b == b'=').next().unwrap_or(bytes);
            if !env.iter().any(|(k, _)| k.as_bytes() == key) {
                envp.push(*entry);
            }
            entry = entry.add(1);
        }
    }
    envp.extend(own.iter().map(|s| s.as_ptr()));
    envp.push(ptr::null());
    envp
}

impl Prepared {
    fn new(s: &Spawn<'_>) -> io::Result<Prepared> {
        let path = cstring(s.path.as_os_str())?;
        let argv: Vec<CString> = std::iter::once(Ok(path.clone()))
            .chain(s.args.iter().map(|a| cstring(a)))
            .collect::<io::Result<_>>()?;
        let own: Vec<CString> = s
            .env
            .iter()
            .filter(|(k, _)| !k.is_empty() && !k.as_bytes().contains(&b'='))
            .map(|(k, v)| {
                let mut kv = k.clone();
                kv.push("=");
                kv.push(v);
                cstring(&kv)
            })
            .collect::<io::Result<_>>()?;
        Ok(Prepared {
            argv_ptrs: pointers(&argv),
            envp_ptrs: environment(s.env, &own),
            path,
            _argv: argv,
            _env: own,
            fds: s.fds.to_vec(),
            keep: Vec::new(),
            probe: match &s.drain {
                // SAFETY: a bitwise copy of a descriptor and a flag, never
                // dropped: the runner's own probe closes the descriptor.
                Some(DrainLook::Probe(p)) => Some(ManuallyDrop::new(unsafe { ptr::read(*p) })),
                _ => None,
            },
            watcher: match &s.drain {
                Some(DrainLook::Watcher {
                    exe,
                    config,
                    read_only,
                }) => Some(Exec::watcher(exe, *config, *read_only)?),
                _ => None,
            },
            release: s.release,
            go: -1,
            report: -1,
            runner_ends: [-1, -1],
            runner_mask: sys::SigSet::EMPTY,
            command_stack: ptr::null_mut(),
        })
    }
}

/// Forks the keeper, which starts the command. Returns once the command's
/// pid is known; the command execs at [`Running::go`] (an exec that fails
/// is reported by [`Running::wait`]).
pub(crate) fn spawn(s: &Spawn<'_>) -> io::Result<Running> {
    let mut prepared = Box::new(Prepared::new(s)?);
    let stacks = Stacks::map()?;
    let mut pipe = [0 as RawFd; 2];
    let mut go = [0 as RawFd; 2];
    // SAFETY: plain system calls on our own descriptors and signal masks;
    // the keeper runs `keeper_entry` on its own stack, on memory that stays
    // until it is reaped ([`KeeperMemory`]).
    let (keeper, memory) = unsafe {
        if libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            let e = io::Error::last_os_error();
            stacks.unmap();
            return Err(e);
        }
        if libc::pipe2(go.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            let e = io::Error::last_os_error();
            libc::close(pipe[0]);
            libc::close(pipe[1]);
            stacks.unmap();
            return Err(e);
        }
        prepared.go = go[0];
        prepared.report = pipe[1];
        prepared.runner_ends = [pipe[0], go[1]];
        let mut keep = prepared.fds.clone();
        keep.push(pipe[1]);
        if let Some(probe) = &prepared.probe {
            keep.push(probe.fd());
        }
        keep.sort_unstable();
        keep.dedup();
        prepared.keep = keep;
        prepared.command_stack = stacks.command_top();
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        // No signal handler of the runner's may run in the keeper before it
        // has reset them.
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        prepared.runner_mask = sys::SigSet::of(&old);
        let memory = KeeperMemory {
            prepared: Box::into_raw(prepared),
            stacks,
        };
        let flags = keeper_flags();
        let mut pid = sys::clone(
            keeper_entry,
            memory.stacks.keeper_top(),
            flags,
            memory.prepared.cast(),
        );
        if flags & libc::CLONE_VM != 0
            && matches!(pid, Err(libc::EINVAL | libc::ENOSYS | libc::EPERM))
        {
            pid = sys::clone(
                keeper_entry,
                memory.stacks.keeper_top(),
                libc::SIGCHLD,
                memory.prepared.cast(),
            );
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut());
        libc::close(pipe[1]);
        libc::close(go[0]);
        match pid {
            Ok(pid) => (pid, memory),
            Err(errno) => {
                libc::close(pipe[0]);
                libc::close(go[1]);
                // No keeper ever ran on it.
                memory.free();
                return Err(io::Error::from_raw_os_error(errno));
            }
        }
    };
    // Read while the keeper starts the command, not after.
    let keeper_id = ProcId::of(keeper as u32).unwrap_or(ProcId {
        pid: keeper as u32,
        start: 0,
    });
    // SAFETY: pipe[0] and go[1] are ours, open, and owned by nothing else.
    let (mut status, go) = unsafe { (File::from_raw_fd(pipe[0]), File::from_raw_fd(go[1])) };
    // A message or the end of the pipe: the command has not started, or
    // says it has, or has exec'd or exited (the pipe closes at its exec).
    let msg = match read_msg(&mut status) {
        Ok(msg) => msg,
        Err(e) => {
            // Never left behind: without the go-ahead the command exits
            // unstarted, and its keeper after it.
            drop((status, go));
            reap(keeper, Some(memory));
            return Err(e);
        }
    };
    match msg {
        Some((MSG_STARTED, command, _)) => Ok(Running {
            keeper: keeper_id,
            command: command as u32,
            status,
            go: Some(go),
            memory: Some(memory),
        }),
        Some((MSG_EXEC_FAILED, errno, _)) => {
            drop((status, go));
            reap(keeper, Some(memory));
            Err(io::Error::from_raw_os_error(errno))
        }
        _ => {
            // Its pipes closed first: a command still waiting for the
            // go-ahead exits unstarted, so the reap cannot wait for ever.
            drop((status, go));
            reap(keeper, Some(memory));
            Err(io::Error::other("the command's keeper process died"))
        }
    }
}

impl Running {
    /// Lets the command exec: call once its processes are recorded. A
    /// command that cannot be told (killed before it exec'd) never runs,
    /// and its end is reported by [`wait`](Running::wait) like any other.
    pub(crate) fn go(&mut self) {
        use std::io::Write;
        if let Some(mut f) = self.go.take() {
            let _ = f.write_all(b"g");
        }
    }

    /// Waits for the command to exit (or for its exec to fail: the error).
    /// The keeper lives on when leftovers hold the task; otherwise it has
    /// closed the task's locks, and [`Ended::keeper`] reaps it.
    pub(crate) fn wait(mut self) -> io::Result<Ended> {
        let keeper = self.keeper.pid as libc::pid_t;
        // Blocked in poll(2), not read(2): a test can tell this wait (the
        // child's pid set up for forwarding) from the spawn's.
        wait_readable(&self.status);
        // Never left waiting on a go-ahead that will not come.
        self.go();
        match read_msg(&mut self.status)? {
            Some((MSG_EXEC_FAILED, errno, _)) => {
                reap(keeper, self.memory.take());
                Err(io::Error::from_raw_os_error(errno))
            }
            Some((MSG_EXITED, status, leftovers)) => Ok(Ended {
                status,
                leftovers: leftovers != 0,
                // Built only when wanted: a dropped `Reap` waits for the
                // keeper. A keeper that keeps leftovers keeps its memory.
                keeper: (leftovers == 0).then(|| Reap(keeper, self.memory.take())),
            }),
            _ => Err(io::Error::other(format!(
                "the command's keeper process (pid {keeper}) died before the command ended; \
                 the command (pid {}) may still run",
                self.command
            ))),
        }
    }
}

/// Blocks until `f` has something to read (or its writer is gone).
fn wait_readable(f: &File) {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    while unsafe { libc::poll(&mut pfd, 1, -1) } < 0
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
}

/// Waits for the keeper `pid` to exit, then frees the memory it ran on.
fn reap(pid: libc::pid_t, memory: Option<KeeperMemory>) {
    let mut st = 0;
    // SAFETY: waiting for our own child.
    let reaped = loop {
        if unsafe { libc::waitpid(pid, &mut st, 0) } >= 0 {
            break true;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break false;
        }
    };
    if reaped && let Some(memory) = memory {
        // SAFETY: the keeper has exited, and what it started has exec'd or
        // exited: it slept until then (CLONE_VFORK).
        unsafe { memory.free() };
    }
}

fn read_msg(f: &mut File) -> io::Result<Option<(u8, i32, i32)>> {
    let mut buf = [0u8; MSG_LEN];
    let mut got = 0;
    while got < MSG_LEN {
        match f.read(&mut buf[got..]) {
            Ok(0) => return Ok(None),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let a = i32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]);
    let b = i32::from_le_bytes([buf[5], buf[6], buf[7], buf[8]]);
    Ok(Some((buf[0], a, b)))
}

/// Writes one message to the runner; async-signal-safe.
unsafe fn send(fd: RawFd, tag: u8, a: i32, b: i32) {
    let mut buf = [0u8; MSG_LEN];
    buf[0] = tag;
    buf[1..5].copy_from_slice(&a.to_le_bytes());
    buf[5..9].copy_from_slice(&b.to_le_bytes());
    // SAFETY: a write of our own buffer. A runner that died (EPIPE) is
    // ignored: SIGPIPE is blocked in the keeper, and a command it kills
    // before its exec would never have run anyway.
    unsafe {
        let _ = sys::write(fd, &buf);
    }
}

/// The signals a keeper waits for instead of handling.
const KEEPER_SET: sys::SigSet = sys::SigSet::EMPTY.with(libc::SIGCHLD).with(libc::SIGTERM);

/// How the keeper is started: in the runner's own memory (`CLONE_VM`) on
/// x86-64, where its system calls are [`sys`]'s raw ones, so no page table
/// is copied at its start nor torn down at its end, and the runner takes
/// no copy-on-write fault for what it writes meanwhile; else as a copy (a
/// bare fork, without the C library's fork handlers: the keeper needs none
/// of the locks they reset).
///
/// A copy, too, where sharing would cost the keeper its independence or
/// cannot be done:
/// - on Linux before 5.16, a process that dumps core kills every process
///   sharing its memory, so a runner's crash would take its keeper, and
///   with it the tracking of the command's leftovers;
/// - under Valgrind, which ends the program at such a `clone`;
/// - where the kernel or a sandbox refuses it (`EINVAL`, `ENOSYS`,
///   `EPERM`), after one try.
fn keeper_flags() -> libc::c_int {
    #[cfg(target_arch = "x86_64")]
    if kernel_at_least(5, 16) && !sys::under_valgrind() {
        return libc::CLONE_VM | libc::SIGCHLD;
    }
    libc::SIGCHLD
}

/// Whether the running kernel's release is `major.minor` or later.
#[cfg(target_arch = "x86_64")]
fn kernel_at_least(major: u32, minor: u32) -> bool {
    // SAFETY: a zeroed utsname is a valid buffer for uname to fill.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::uname(&mut name) } != 0 {
        return false;
    }
    // SAFETY: uname NUL-terminates the release.
    let release = unsafe { std::ffi::CStr::from_ptr(name.release.as_ptr()) }.to_bytes();
    let mut parts = release.split(|&b| !b.is_ascii_digit()).map(|n| {
        std::str::from_utf8(n)
            .ok()
            .and_then(|n| n.parse::<u32>().ok())
    });
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

extern "C" fn keeper_entry(prepared: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `prepared` is the runner's `Prepared`, which stays until the
    // keeper is reaped (`KeeperMemory`).
    unsafe { keeper_main(&*prepared.cast::<Prepared>()) }
}

/// The keeper, right after the clone: [`sys`]'s calls only.
///
/// Every signal stays blocked, as the runner started it, for the keeper's
/// whole life: it takes SIGCHLD and SIGTERM with `sigwaitinfo`, and the
/// terminal's Ctrl-C, Ctrl-\ and hang-up, which reach the
/// command's process group, stay pending in it, never delivered.
unsafe fn keeper_main(p: &Prepared) -> ! {
    // SAFETY: every call below is one of `sys`'s, on memory prepared before
    // the clone.
    unsafe {
        // The runner's ends of the pipes, which the keeper's descriptor
        // table has too.
        sys::close(p.runner_ends[0]);
        sys::close(p.runner_ends[1]);
        if !p.release {
            sys::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
        }
        // Children of a keeper that ignores SIGCHLD (as whoever ran the
        // runner may have set it) would be reaped unseen; an ignored
        // SIGTERM would never be pending. The runner's fault handlers are
        // not the keeper's, nor the command's before its exec.
        for signal in [libc::SIGCHLD, libc::SIGTERM, libc::SIGSEGV, libc::SIGBUS] {
            sys::set_disposition(signal, libc::SIG_DFL);
        }
        let mut start = Start { p, exec_errno: 0 };
        // The command shares the keeper's memory until it execs, and the
        // keeper sleeps until then (CLONE_VFORK): no page table is copied
        // and no copy is torn down at the exec. Nothing but the runner's
        // own threads runs on this memory meanwhile, and they touch none
        // of what the command uses.
        let command = match sys::clone(
            command_entry,
            p.command_stack,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&raw mut start).cast(),
        ) {
            Ok(pid) => pid,
            Err(errno) => {
                send(p.report, MSG_EXEC_FAILED, errno, 0);
                sys::exit(127);
            }
        };
        // Written by the command before it exited, if its exec failed.
        let exec_errno = ptr::read_volatile(&raw const start.exec_errno);
        if exec_errno != 0 {
            let _ = sys::waitpid(command, 0);
            send(p.report, MSG_EXEC_FAILED, exec_errno, 0);
            sys::exit(127);
        }
        // Nothing more until the command ends: a keeper with nothing left
        // to keep exits then, and only one that keeps leftovers settles
        // in (`settle`).
        keep(command, p);
    }
}

/// A keeper that outlives its command: it holds no terminal, no pipe and
/// no lock but the task's — `$(manage x)` must not wait for it, nor an
/// `offline run`'s window outlive its command. Async-signal-safe.
unsafe fn settle(p: &Prepared) {
    // SAFETY: closing and duplicating descriptors of our own.
    unsafe {
        close_all_but(&p.keep);
        if let Ok(null) = sys::open(c"/dev/null", libc::O_RDWR) {
            for fd in 0..3 {
                sys::dup2(null, fd);
            }
            if null > 2 {
                sys::close(null);
            }
        }
    }
}

/// What the keeper shares with the command it starts: the command runs
/// in the keeper's memory, on its own stack, until it execs.
struct Start<'a> {
    p: &'a Prepared,
    /// Set by the command when its exec fails; read by the keeper once the
    /// command has exec'd or exited.
    exec_errno: i32,
}

extern "C" fn command_entry(start: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `start` is the keeper's `Start`, which outlives the command's
    // time in the keeper's memory (the keeper sleeps until it execs or
    // exits).
    unsafe { command_main(&mut *start.cast::<Start<'_>>()) }
}

/// The command, in the keeper's memory until it execs: [`sys`]'s calls
/// only, and nothing the keeper relies on is changed but `exec_errno`.
unsafe fn command_main(start: &mut Start<'_>) -> ! {
    let p = start.p;
    // SAFETY: `sys`'s calls on memory prepared before the clone. Signal
    // dispositions and descriptors are the command's own (no CLONE_SIGHAND,
    // no CLONE_FILES).
    unsafe {
        // The runner records the command's pid, then lets it exec: told
        // first, it does so while the command gets ready.
        send(p.report, MSG_STARTED, sys::getpid(), 0);
        // No handler of the runner's (a site's own among them) may run in
        // its memory: every caught signal back to its default, while the
        // runner records the pid. An ignore the runner inherited
        // (`nohup`, a script's `cmd &`) stays, as across any exec; SIGTERM
        // is at its default already (the keeper's); the SIGPIPE Rust's
        // runtime ignores goes back to its default, as `std::process`
        // leaves it for a child.
        sys::default_handlers();
        sys::set_disposition(libc::SIGPIPE, libc::SIG_DFL);
        sys::set_mask(p.runner_mask);
        // Wait for the runner's go-ahead; without it (the runner died
        // first), never run.
        let mut b = [0u8; 1];
        loop {
            match sys::read(p.go, &mut b) {
                Ok(1) => break,
                Err(libc::EINTR) => continue,
                _ => sys::exit(127),
            }
        }
        if !p.release {
            for &fd in &p.fds {
                sys::keep_on_exec(fd);
            }
        }
        let errno = sys::execve(p.path.as_ptr(), p.argv_ptrs.as_ptr(), p.envp_ptrs.as_ptr());
        ptr::write_volatile(&raw mut start.exec_errno, errno.max(1));
        sys::exit(127);
    }
}

/// Closes every descriptor from 3 up but those in `keep` (sorted).
/// Async-signal-safe.
unsafe fn close_all_but(keep: &[RawFd]) {
    let mut next: libc::c_uint = 3;
    // SAFETY: closing descriptors of our own; `close_range` (Linux 5.9)
    // with a loop over the usual range where it is missing.
    unsafe {
        let close = |from: libc::c_uint, to: libc::c_uint| {
            if from > to {
                return;
            }
            if sys::close_range(from, to).is_err() {
                for fd in from..=to.min(4095) {
                    sys::close(fd as RawFd);
                }
            }
        };
        for &k in keep {
            let Ok(k) = libc::c_uint::try_from(k) else {
                continue;
            };
            if k >= next {
                close(next, k.saturating_sub(1));
                next = k + 1;
            }
        }
        close(next, libc::c_uint::MAX);
    }
}

/// The keeper's loop: reaps every child, tells the runner how the command
/// ended, forwards SIGTERM to every child (also those adopted after it
/// came), for a drain-`stop` command asks leftovers to stop once the site
/// leaves ONLINE — its own look ([`ModeProbe`]) or a watcher's exit
/// ([`DrainLook::Watcher`]) — and exits once no child is left (but the
/// watcher). Async-signal-safe.
unsafe fn keep(command: libc::pid_t, p: &Prepared) -> ! {
    let mut report = Some(p.report);
    let mut done = false;
    let mut status = 0;
    // Once asked to stop, every child is asked — also those adopted later,
    // when their parent exits.
    let mut terminating = false;
    let look = libc::timespec {
        tv_sec: 0,
        tv_nsec: LOOK_MS * 1_000_000,
    };
    // The drain watcher: its pid while it runs, how many times it was
    // started, and when to start it (again).
    let mut watcher: libc::pid_t = 0;
    let mut starts = 0u32;
    let mut start_at: Option<libc::timespec> = None;
    // SAFETY: system calls on our own children and descriptors; the probe
    // was opened before the clone, and the keeper's copy of its descriptor
    // stays open whatever the runner does with its own.
    unsafe {
        loop {
            loop {
                match sys::waitpid(-1, libc::WNOHANG) {
                    Ok((0, _)) => {}
                    Ok((r, st)) => {
                        if r == command {
                            done = true;
                            status = st;
                        } else if r == watcher {
                            watcher = 0;
                            // Exit 0 is the watcher's one report: the site
                            // left ONLINE. Anything else (killed, or no
                            // backend to watch) says nothing of the mode.
                            if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 {
                                terminating = true;
                            } else if !terminating && starts < WATCHER_STARTS {
                                start_at = Some(after(WATCHER_RETRY_S));
                            }
                        }
                        continue;
                    }
                    Err(libc::EINTR) => continue,
                    Err(_) => {
                        // No child is left: the task is over. Its locks are
                        // let go before the runner is told, so the runner
                        // can end the task without waiting for this exit.
                        if let Some(fd) = report {
                            for &lock in &p.fds {
                                sys::close(lock);
                            }
                            send(fd, MSG_EXITED, status, 0);
                        }
                        sys::exit(0);
                    }
                }
                break;
            }
            if done && let Some(fd) = report.take() {
                settle(p);
                send(fd, MSG_EXITED, status, 1);
                sys::close(fd);
                if p.watcher.is_some() && !terminating {
                    start_at = Some(after(0));
                }
            }
            // Only the watcher is left: the leftovers are gone, and so is
            // the task.
            if watcher > 0 && only_child(watcher) {
                sys::kill(watcher, libc::SIGKILL);
                while sys::waitpid(watcher, 0) == Err(libc::EINTR) {}
                watcher = 0;
                start_at = None;
                continue;
            }
            if !terminating
                && watcher == 0
                && let Some(at) = start_at
                && !before(&at)
                && let Some(exec) = &p.watcher
                // Else it could not tell when only the watcher is left.
                && for_each_child(&mut |_| {})
            {
                start_at = None;
                starts += 1;
                watcher = start_watcher(exec, p.command_stack);
                if watcher <= 0 {
                    watcher = 0;
                    if starts < WATCHER_STARTS {
                        start_at = Some(after(WATCHER_RETRY_S));
                    }
                }
            }
            // Leftovers of a drain-`stop` command: stop once a drain the
            // task holds off begins.
            let watching = done && !terminating && p.probe.is_some();
            if watching
                && let Some(probe) = &p.probe
                && keeps_running(probe) == Some(false)
            {
                terminating = true;
            }
            if terminating {
                if watcher > 0 {
                    // Reaped as any child, never started again.
                    sys::kill(watcher, libc::SIGKILL);
                }
                start_at = None;
                terminate_children();
            }
            let timeout = match start_at {
                _ if watching && !terminating => Some(look),
                Some(at) if watcher == 0 => Some(until(&at)),
                _ => None,
            };
            if sys::sigwait(KEEPER_SET, timeout.as_ref()) == Ok(libc::SIGTERM) {
                terminating = true;
                if !done {
                    sys::kill(command, libc::SIGTERM);
                }
                if watcher > 0 {
                    sys::kill(watcher, libc::SIGKILL);
                }
                terminate_children();
            }
        }
    }
}

/// The monotonic clock `secs` seconds from now; async-signal-safe.
fn after(secs: libc::time_t) -> libc::timespec {
    let mut now = sys::monotonic();
    now.tv_sec += secs;
    now
}

/// Whether the monotonic clock is still before `at`.
fn before(at: &libc::timespec) -> bool {
    let now = after(0);
    (now.tv_sec, now.tv_nsec) < (at.tv_sec, at.tv_nsec)
}

/// From now until `at` on the monotonic clock (zero once it passed).
fn until(at: &libc::timespec) -> libc::timespec {
    let now = after(0);
    let mut left = libc::timespec {
        tv_sec: at.tv_sec - now.tv_sec,
        tv_nsec: at.tv_nsec - now.tv_nsec,
    };
    if left.tv_nsec < 0 {
        left.tv_nsec += 1_000_000_000;
        left.tv_sec -= 1;
    }
    if left.tv_sec < 0 {
        left = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
    }
    left
}

/// What the keeper shares with the watcher it starts, as [`Start`].
struct WatchStart<'a> {
    exec: &'a Exec,
    keeper: libc::pid_t,
}

/// Starts the drain watcher as the command was started (in the keeper's
/// memory until it execs, on the command's stack, which the command no
/// longer uses); its pid, or -1. Async-signal-safe.
unsafe fn start_watcher(exec: &Exec, stack: *mut libc::c_void) -> libc::pid_t {
    // SAFETY: as the command's start in `keeper_main`: the keeper sleeps
    // until the watcher has exec'd or exited (CLONE_VFORK), and the stack
    // is no longer the command's.
    unsafe {
        let mut start = WatchStart {
            exec,
            keeper: sys::getpid(),
        };
        sys::clone(
            watcher_entry,
            stack,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&raw mut start).cast(),
        )
        .unwrap_or(-1)
    }
}

extern "C" fn watcher_entry(start: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `start` is the keeper's `WatchStart`, which outlives the
    // watcher's time in the keeper's memory.
    let start = unsafe { &*start.cast::<WatchStart<'_>>() };
    // SAFETY: `sys`'s calls on memory prepared before the clone; the
    // watcher's descriptors and dispositions are its own.
    unsafe {
        // It ends with its keeper, never left to watch for nobody.
        sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if sys::getppid() != start.keeper {
            sys::exit(127);
        }
        // The keeper blocks every signal; the watcher takes them as any
        // program does, none by a handler of the runner's, whose memory it
        // shares until it execs.
        sys::default_handlers();
        sys::set_mask(sys::SigSet::EMPTY);
        let e = start.exec;
        sys::execve(e.path.as_ptr(), e.argv_ptrs.as_ptr(), e.envp_ptrs.as_ptr());
        sys::exit(127);
    }
}

/// Whether `pid` is the calling thread's only child (a child that exited
/// and is not yet reaped still counts: its SIGCHLD is pending). Parses
/// `/proc/thread-self/children` without allocating; when it cannot be read,
/// other children are taken to remain. Not inlined, for its buffer, as
/// [`keeps_running`].
#[inline(never)]
unsafe fn only_child(pid: libc::pid_t) -> bool {
    let mut others = false;
    let mut seen = false;
    // SAFETY: open/read/close on a buffer of our own.
    let read = unsafe {
        for_each_child(&mut |child| {
            if child == pid {
                seen = true;
            } else {
                others = true;
            }
        })
    };
    read && seen && !others
}

/// Whether the mode still lets a drain-`stop` command's leftovers run.
/// Not inlined into [`keep`]: its 64 KiB read buffer would make the
/// keeper's frame that large, and its stack probe fault 16 pages into
/// every keeper, leftovers or not. Async-signal-safe, and sets no `errno`
/// (rustix's own system calls, on Linux).
#[inline(never)]
fn keeps_running(probe: &ModeProbe) -> Option<bool> {
    probe.keeps_running()
}

/// Sends SIGTERM to every child of the calling thread (orphans are
/// reparented to the subreaper's first live thread: the keeper's only, or
/// main, thread). Not inlined, for its buffer, as [`keeps_running`].
#[inline(never)]
unsafe fn terminate_children() {
    // SAFETY: kill on pids of our own children.
    unsafe {
        for_each_child(&mut |pid| {
            sys::kill(pid, libc::SIGTERM);
        });
    }
}

/// Calls `f` with every child of the calling thread, parsing
/// `/proc/thread-self/children` without allocating; false when it cannot
/// be read. Async-signal-safe as long as `f` is.
unsafe fn for_each_child(f: &mut dyn FnMut(libc::pid_t)) -> bool {
    // SAFETY: open/read/close on a buffer of our own.
    unsafe {
        let Ok(fd) = sys::open(
            c"/proc/thread-self/children",
            libc::O_RDONLY | libc::O_CLOEXEC,
        ) else {
            return false;
        };
        let mut buf = [0u8; 4096];
        let mut pid: libc::pid_t = 0;
        let mut ok = true;
        loop {
            let n = match sys::read(fd, &mut buf) {
                Ok(n) => n,
                Err(libc::EINTR) => continue,
                Err(_) => {
                    ok = false;
                    0
                }
            };
            if n == 0 {
                break;
            }
            for &b in &buf[..n] {
                if b.is_ascii_digit() {
                    pid = pid
                        .saturating_mul(10)
                        .saturating_add(libc::pid_t::from(b - b'0'));
                } else {
                    if pid > 0 {
                        f(pid);
                    }
                    pid = 0;
                }
            }
        }
        if pid > 0 {
            f(pid);
        }
        sys::close(fd);
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Starts `path` with `args` under a keeper, holding `fds`.
    fn start(path: &Path, args: &[&str], env: &[(OsString, OsString)], fds: &[RawFd]) -> Running {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        spawn(&Spawn {
            path,
            args: &args,
            env,
            fds,
            release: false,
            drain: None,
        })
        .expect("the keeper starts")
    }

    /// Whether `pid` is a child of this process not yet reaped
    /// (`Some`), and if so whether it has exited.
    fn child_state(pid: libc::pid_t) -> Option<bool> {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid into a zeroed siginfo of our own; WNOWAIT leaves
        // the child as it is.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: filled in by waitid (zero when no child has exited).
        (r == 0).then(|| unsafe { info.si_pid() } != 0)
    }

    #[test]
    fn an_exec_that_fails_is_reported_with_its_errno_and_its_keeper_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "not a program\n").unwrap();
        for (path, kind) in [
            (&missing, io::ErrorKind::NotFound),
            (&plain, io::ErrorKind::PermissionDenied),
        ] {
            let mut running = start(path, &[], &[], &[]);
            let keeper = running.keeper.pid as libc::pid_t;
            running.go();
            let e = running.wait().err().expect("the exec fails");
            assert_eq!(e.kind(), kind, "{}: {e}", path.display());
            assert_eq!(child_state(keeper), None, "the keeper was reaped");
        }
    }

    #[test]
    fn the_command_gets_the_runner_s_environment_with_each_variable_set_once() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        // Over one variable the runner has (PATH), and one it has not.
        let env = [
            (OsString::from("PATH"), OsString::from("/bin:/usr/bin:/set")),
            (OsString::from("MANAGE_TEST_NEW"), OsString::from("new")),
        ];
        let script = format!("env > '{}'", out.display());
        let mut running = start(Path::new("/bin/sh"), &["-c", &script], &env, &[]);
        running.go();
        let ended = running.wait().expect("the command runs");
        assert_eq!(ended.status, 0);
        let bytes = std::fs::read(&out).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        let count = |prefix: &[u8]| lines.iter().filter(|l| l.starts_with(prefix)).count();
        assert_eq!(count(b"PATH="), 1, "{text}");
        assert!(lines.contains(&&b"PATH=/bin:/usr/bin:/set"[..]), "{text}");
        assert!(lines.contains(&&b"MANAGE_TEST_NEW=new"[..]), "{text}");
        // Everything else is the runner's own, as it is (but what the shell
        // itself sets).
        for (key, value) in std::env::vars_os() {
            let key = key.as_bytes();
            let value = value.as_bytes();
            // Names a shell keeps, and values on one line.
            let shell_name = key
                .first()
                .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
                && key.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_');
            if !shell_name
                || value.contains(&b'\n')
                || [&b"PATH"[..], b"PWD", b"SHLVL", b"_", b"OLDPWD"].contains(&key)
            {
                continue;
            }
            let entry = [key, b"=", value].concat();
            assert!(
                lines.contains(&entry.as_slice()),
                "{} is passed on: {text}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn the_task_s_locks_are_free_once_the_command_ended_before_its_keeper_is_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let lock = File::create(&path).unwrap();
        let exclusive = rustix::fs::FlockOperation::NonBlockingLockExclusive;
        rustix::fs::flock(&lock, exclusive).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&lock);
        let mut running = start(Path::new("/bin/true"), &[], &[], &[fd]);
        // From now on only the keeper (and the command) hold the lock.
        drop(lock);
        running.go();
        let ended = running.wait().expect("the command runs");
        assert!(!ended.leftovers);
        let other = File::open(&path).unwrap();
        assert!(
            rustix::fs::flock(&other, exclusive).is_ok(),
            "the keeper let go of the lock before it reported the end"
        );
        drop(ended);
    }

    #[test]
    fn a_keeper_that_let_go_is_reaped_once_what_ended_is_dropped() {
        let mut running = start(Path::new("/bin/true"), &[], &[], &[]);
        let keeper = running.keeper.pid as libc::pid_t;
        running.go();
        let ended = running.wait().expect("the command runs");
        assert!(ended.keeper.is_some(), "nothing was left behind");
        drop(ended);
        assert_eq!(child_state(keeper), None, "no zombie keeper is left");
    }

    /// The number of mappings of this process's memory.
    fn mappings() -> usize {
        std::fs::read_to_string("/proc/self/maps")
            .expect("read /proc/self/maps")
            .lines()
            .count()
    }

    #[test]
    fn the_memory_a_keeper_ran_on_is_freed_once_it_is_reaped() {
        // Warm up whatever the allocator maps once.
        let running = start(Path::new("/bin/true"), &[], &[], &[]);
        drop(finish(running));
        let before = mappings();
        for _ in 0..20 {
            let running = start(Path::new("/bin/true"), &[], &[], &[]);
            drop(finish(running));
            assert_eq!(exec_failure(), Some(libc::ENOENT));
        }
        // Each keeper's stacks are four mappings (two guards, two stacks).
        let after = mappings();
        assert!(
            after < before + 8,
            "{before} mappings before 40 keepers, {after} after: their stacks were not unmapped"
        );
    }

    /// Starts a command that is not there: the error its exec failed with.
    fn exec_failure() -> Option<i32> {
        let mut running = start(Path::new("/nonexistent/command"), &[], &[], &[]);
        running.go();
        running.wait().err().and_then(|e| e.raw_os_error())
    }

    /// Lets `running` go, waits for it, and reaps its keeper.
    fn finish(mut running: Running) -> Ended {
        running.go();
        let ended = running.wait().expect("the command runs");
        assert!(ended.keeper.is_some(), "nothing was left behind");
        ended
    }

    #[test]
    fn a_keeper_and_its_command_leave_the_runner_s_errno_alone() {
        // The keeper shares this thread's memory, and with it its `errno`:
        // every call it makes, and the command's before its exec, fails
        // without writing it (the last `waitpid` fails with ECHILD; the
        // second exec with ENOENT). Every call made here succeeds, so the
        // value set here must be the one found after.
        const MARK: i32 = 4242;
        // SAFETY: this thread's own errno.
        unsafe { *libc::__errno_location() = MARK };
        let running = start(Path::new("/bin/true"), &[], &[], &[]);
        drop(finish(running));
        let failed_with = exec_failure();
        // SAFETY: as above.
        let errno = unsafe { *libc::__errno_location() };
        assert_eq!(failed_with, Some(libc::ENOENT));
        assert_eq!(errno, MARK, "a keeper wrote the runner's errno");
    }

    #[test]
    fn no_handler_of_the_runner_s_runs_in_a_command_before_its_exec() {
        use std::sync::atomic::{AtomicBool, Ordering};
        // A site's own handler, for a signal manage leaves alone.
        static RAN: AtomicBool = AtomicBool::new(false);
        extern "C" fn mark(_: libc::c_int) {
            RAN.store(true, Ordering::SeqCst);
        }
        // SAFETY: a handler that only stores to an atomic.
        let old = unsafe { libc::signal(libc::SIGUSR1, mark as *const () as libc::sighandler_t) };
        let running = start(Path::new("/bin/true"), &[], &[], &[]);
        // Before the go-ahead: pending while the command still blocks
        // every signal, or delivered while it waits for the go-ahead.
        // SAFETY: a signal to our own grandchild, which has not exec'd.
        unsafe { libc::kill(running.command as libc::pid_t, libc::SIGUSR1) };
        let ended = finish(running);
        // SAFETY: putting back what was there.
        unsafe { libc::signal(libc::SIGUSR1, old) };
        assert!(
            !RAN.load(Ordering::SeqCst),
            "the runner's handler ran in the command's (shared) memory"
        );
        assert!(
            libc::WIFSIGNALED(ended.status) && libc::WTERMSIG(ended.status) == libc::SIGUSR1,
            "the signal was caught, not taken at its default: status {:#x}",
            ended.status
        );
    }

    #[test]
    fn a_command_whose_runner_gives_no_go_ahead_never_runs() {
        let dir = tempfile::tempdir().unwrap();
        let ran = dir.path().join("ran");
        let script = format!("touch '{}'", ran.display());
        let running = start(Path::new("/bin/sh"), &["-c", &script], &[], &[]);
        let keeper = running.keeper.pid as libc::pid_t;
        // The runner dies before it has recorded the command: its pipes
        // close.
        drop(running);
        // The keeper ends only after its command has.
        reap(keeper, None);
        assert!(!ran.exists(), "the command ran without the go-ahead");
    }

    fn median(v: &mut [Duration]) -> Duration {
        v.sort_unstable();
        v[v.len() / 2]
    }

    /// The keeper's share of an external command's cost, beside std's own
    /// spawn of the same program: `cargo test --release -p manage --lib
    /// spawn_costs -- --ignored --nocapture` (RUNS runs, 500 by default;
    /// PROGRAM, `/bin/true` by default). Each step's median: the spawn
    /// (keeper forked, command started, its pid known), from the go-ahead
    /// to the command's end reported, and the keeper's reaping.
    #[test]
    #[ignore = "a measurement: run it by name, in the release profile"]
    fn spawn_costs() {
        let runs: usize = std::env::var("RUNS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(500);
        let program = std::env::var_os("PROGRAM").unwrap_or_else(|| "/bin/true".into());
        let path = Path::new(&program);
        let lock = tempfile::tempfile().expect("a scratch file");
        let fds = [std::os::fd::AsRawFd::as_raw_fd(&lock)];
        let env = [(OsString::from("MANAGE_TASK"), OsString::from("x"))];
        let mut steps: [Vec<Duration>; 5] = Default::default();
        let usage = |who| {
            // SAFETY: getrusage into a zeroed struct of our own.
            let mut u: libc::rusage = unsafe { std::mem::zeroed() };
            unsafe { libc::getrusage(who, &mut u) };
            let cpu = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
            (u.ru_minflt as f64, cpu(u.ru_utime) + cpu(u.ru_stime))
        };
        let before = (usage(libc::RUSAGE_SELF), usage(libc::RUSAGE_CHILDREN));
        for _ in 0..runs {
            let st = std::process::Command::new(path).status().expect("spawn");
            assert!(st.success());
        }
        let mid = (usage(libc::RUSAGE_SELF), usage(libc::RUSAGE_CHILDREN));
        for _ in 0..runs {
            let mut running = spawn(&Spawn {
                path,
                args: &[],
                env: &env,
                fds: &fds,
                release: false,
                drain: None,
            })
            .expect("spawn");
            running.go();
            drop(running.wait().expect("wait"));
        }
        let after = (usage(libc::RUSAGE_SELF), usage(libc::RUSAGE_CHILDREN));
        let per = |a: ((f64, f64), (f64, f64)), b: ((f64, f64), (f64, f64))| {
            let n = runs as f64;
            (
                ((b.0).0 - (a.0).0) / n,
                ((b.1).0 - (a.1).0) / n,
                ((b.0).1 - (a.0).1) / n,
                ((b.1).1 - (a.1).1) / n,
            )
        };
        let (sf, cf, sc, cc) = per(before, mid);
        eprintln!(
            "std: faults self {sf:.1} children {cf:.1}; cpu self {sc:.1}µs children {cc:.1}µs"
        );
        let (sf, cf, sc, cc) = per(mid, after);
        eprintln!(
            "kept: faults self {sf:.1} children {cf:.1}; cpu self {sc:.1}µs children {cc:.1}µs"
        );
        for _ in 0..runs {
            let t0 = Instant::now();
            let st = std::process::Command::new(path).status().expect("spawn");
            assert!(st.success(), "{program:?} failed: {st}");
            steps[0].push(t0.elapsed());
            let t0 = Instant::now();
            let mut running = spawn(&Spawn {
                path,
                args: &[],
                env: &env,
                fds: &fds,
                release: false,
                drain: None,
            })
            .expect("spawn");
            let t1 = Instant::now();
            running.go();
            let ended = running.wait().expect("wait");
            let t2 = Instant::now();
            assert_eq!(ended.status, 0);
            assert!(!ended.leftovers);
            drop(ended);
            let t3 = Instant::now();
            steps[1].push(t1 - t0);
            steps[2].push(t2 - t1);
            steps[3].push(t3 - t2);
            steps[4].push(t3 - t0);
        }
        let [direct, spawned, ran, reaped, kept] = steps.each_mut().map(|v| median(v));
        eprintln!(
            "medians of {runs}: std spawn+wait {direct:?}; kept {kept:?} = spawn {spawned:?} \
             + go..end {ran:?} + reap {reaped:?}"
        );
    }
}
