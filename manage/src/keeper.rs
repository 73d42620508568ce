//! The keeper of an external command's task (Linux, I3): a forked child of
//! the runner that makes itself a child subreaper, starts the command as its
//! own child, and lives until the command and every descendant it left
//! behind have exited — whatever descriptors they closed, however they
//! daemonised — holding the task's locks all that time. The runner returns
//! with the command's own exit code the moment the command exits; what the
//! command left behind keeps the task live in the keeper, which forwards
//! SIGTERM (and a drain's stop request) to it.
//!
//! The keeper never execs: between `fork` and the command's `exec`, and
//! for the whole of the keeper's life, only async-signal-safe calls are
//! made — every string, array and path is prepared before the fork, and its
//! loop is plain system calls. Right after starting the command it closes
//! every descriptor but the task's locks and its own (an `offline run`'s
//! window lock, a caller's pipe must not outlive the command), and holds no
//! terminal. For a drain-`stop` command whose leftovers remain, it looks at
//! the mode every 20 ms ([`ModeProbe`], file backend) and asks them to stop
//! once the site leaves ONLINE.
//!
//! Limits: a keeper itself SIGKILLed while leftovers live loses them (they
//! are reparented past it); without `/proc` (not Linux) there is no keeper;
//! with another backend than the file backend, leftovers of a drain-`stop`
//! command are not asked to stop.
//!
//! One file, though over 500 lines: everything that runs in the forked
//! keeper, and everything prepared for it before the fork, stays together
//! so that the rule above (only async-signal-safe calls after `fork`) can
//! be checked in one place.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;

use maintenance_core::backend::file::ModeProbe;

/// How often a keeper of a drain-`stop` command's leftovers looks at the
/// mode, in milliseconds.
const LOOK_MS: libc::c_long = 20;

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
    pub drain: Option<&'a ModeProbe>,
}

/// A spawned command and its keeper.
pub(crate) struct Running {
    /// The keeper's pid (the runner's child).
    pub keeper: u32,
    /// The command's pid (the keeper's child).
    pub command: u32,
    status: File,
    go: Option<File>,
}

/// How the command ended.
pub(crate) struct Ended {
    /// Its wait status, as `waitpid` gives it.
    pub status: i32,
    /// Whether processes it left behind still hold the task.
    pub leftovers: bool,
}

const MSG_STARTED: u8 = b'S';
const MSG_EXEC_FAILED: u8 = b'E';
const MSG_EXITED: u8 = b'X';
const MSG_LEN: usize = 9;

/// Everything the forked processes use, prepared before the fork.
struct Prepared {
    path: CString,
    // Owners of what the pointer arrays point into.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    fds: Vec<RawFd>,
    /// Every descriptor the keeper keeps (sorted): the locks, its report
    /// pipe, the probe's directory.
    keep: Vec<RawFd>,
    probe: Option<*const ModeProbe>,
    release: bool,
    /// The read end of the runner's go-ahead: the command execs only once
    /// the runner has recorded its processes (and never if the runner died
    /// first).
    go: RawFd,
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

impl Prepared {
    fn new(s: &Spawn<'_>) -> io::Result<Prepared> {
        let path = cstring(s.path.as_os_str())?;
        let argv: Vec<CString> = std::iter::once(Ok(path.clone()))
            .chain(s.args.iter().map(|a| cstring(a)))
            .collect::<io::Result<_>>()?;
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| !s.env.iter().any(|(k2, _)| k2 == k))
            .collect();
        env.extend(s.env.iter().cloned());
        let envp: Vec<CString> = env
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
            envp_ptrs: pointers(&envp),
            path,
            _argv: argv,
            _envp: envp,
            fds: s.fds.to_vec(),
            keep: Vec::new(),
            probe: s.drain.map(|p| p as *const ModeProbe),
            release: s.release,
            go: -1,
        })
    }
}

/// Forks the keeper, which forks the command. Returns once the command's
/// pid is known; the command execs at [`Running::go`] (an exec that fails
/// is reported by [`Running::wait`]).
pub(crate) fn spawn(s: &Spawn<'_>) -> io::Result<Running> {
    let mut prepared = Prepared::new(s)?;
    let mut pipe = [0 as RawFd; 2];
    let mut go = [0 as RawFd; 2];
    // SAFETY: plain system calls on our own descriptors and signal masks;
    // the child branch never returns (it execs or exits).
    let keeper = unsafe {
        if libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::pipe2(go.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            let e = io::Error::last_os_error();
            libc::close(pipe[0]);
            libc::close(pipe[1]);
            return Err(e);
        }
        prepared.go = go[0];
        let mut keep = prepared.fds.clone();
        keep.push(pipe[1]);
        if let Some(probe) = prepared.probe {
            keep.push((*probe).fd());
        }
        keep.sort_unstable();
        keep.dedup();
        prepared.keep = keep;
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        // No signal handler of the runner's may run in the keeper before it
        // has reset them.
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::fork();
        if pid == 0 {
            libc::close(pipe[0]);
            libc::close(go[1]);
            keeper_main(&prepared, &old, pipe[1]);
        }
        let fork_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut());
        libc::close(pipe[1]);
        libc::close(go[0]);
        if pid < 0 {
            libc::close(pipe[0]);
            libc::close(go[1]);
            return Err(fork_error);
        }
        pid
    };
    // SAFETY: pipe[0] and go[1] are ours, open, and owned by nothing else.
    let (mut status, go) = unsafe { (File::from_raw_fd(pipe[0]), File::from_raw_fd(go[1])) };
    match read_msg(&mut status)? {
        Some((MSG_STARTED, command, _)) => Ok(Running {
            keeper: keeper as u32,
            command: command as u32,
            status,
            go: Some(go),
        }),
        Some((MSG_EXEC_FAILED, errno, _)) => {
            reap(keeper);
            Err(io::Error::from_raw_os_error(errno))
        }
        _ => {
            reap(keeper);
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

    /// Waits for the command to exit (or for its exec to fail: the error). The keeper lives on when leftovers
    /// hold the task; otherwise it is reaped here.
    pub(crate) fn wait(mut self) -> io::Result<Ended> {
        // Blocked in poll(2), not read(2): a test can tell this wait (the
        // child's pid set up for forwarding) from the spawn's.
        wait_readable(&self.status);
        // Never left waiting on a go-ahead that will not come.
        self.go();
        match read_msg(&mut self.status)? {
            Some((MSG_EXEC_FAILED, errno, _)) => {
                reap(self.keeper as libc::pid_t);
                Err(io::Error::from_raw_os_error(errno))
            }
            Some((MSG_EXITED, status, leftovers)) => {
                if leftovers == 0 {
                    reap(self.keeper as libc::pid_t);
                }
                Ok(Ended {
                    status,
                    leftovers: leftovers != 0,
                })
            }
            _ => Err(io::Error::other(format!(
                "the command's keeper process (pid {}) died before the command ended; \
                 the command (pid {}) may still run",
                self.keeper, self.command
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

fn reap(pid: libc::pid_t) {
    let mut st = 0;
    // SAFETY: waiting for our own child.
    while unsafe { libc::waitpid(pid, &mut st, 0) } < 0
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
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
    // SAFETY: a write of our own buffer; a runner that died (EPIPE) is
    // ignored: SIGPIPE is ignored in the keeper.
    unsafe {
        let _ = libc::write(fd, buf.as_ptr().cast(), MSG_LEN);
    }
}

unsafe fn set_disposition(signal: libc::c_int, handler: libc::sighandler_t) {
    // SAFETY: sigaction with a zeroed struct and a default or ignore
    // handler.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(signal, &sa, ptr::null_mut());
    }
}

/// The signals a keeper waits for instead of handling.
fn keeper_set() -> libc::sigset_t {
    // SAFETY: initialising a signal set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Signals a keeper must survive: the terminal's Ctrl-C, Ctrl-\ and hang-up
/// reach the command (in the same process group) but must not end the
/// keeper of its leftovers.
const SURVIVED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGQUIT, libc::SIGHUP, libc::SIGPIPE];

/// The keeper, right after the fork: async-signal-safe calls only.
unsafe fn keeper_main(p: &Prepared, runner_mask: &libc::sigset_t, report: RawFd) -> ! {
    // SAFETY: every call below is an async-signal-safe system call on
    // memory prepared before the fork.
    unsafe {
        for s in SURVIVED {
            set_disposition(s, libc::SIG_IGN);
        }
        set_disposition(libc::SIGTERM, libc::SIG_DFL);
        set_disposition(libc::SIGCHLD, libc::SIG_DFL);
        let set = keeper_set();
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, ptr::null_mut());
        if !p.release {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
        let mut errpipe = [0 as RawFd; 2];
        if libc::pipe2(errpipe.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            send(report, MSG_EXEC_FAILED, errno(), 0);
            libc::_exit(127);
        }
        let command = libc::fork();
        if command == 0 {
            libc::close(errpipe[0]);
            command_main(p, runner_mask, errpipe[1]);
        }
        libc::close(errpipe[1]);
        if command < 0 {
            send(report, MSG_EXEC_FAILED, errno(), 0);
            libc::_exit(127);
        }
        // The runner records the command's pid, then lets it exec.
        send(report, MSG_STARTED, command, 0);
        let mut e = [0u8; 4];
        let mut got = 0usize;
        loop {
            let n = libc::read(errpipe[0], e.as_mut_ptr().add(got).cast(), 4 - got);
            if n > 0 {
                got += n as usize;
                if got == 4 {
                    break;
                }
            } else if n == 0 || errno() != libc::EINTR {
                break;
            }
        }
        libc::close(errpipe[0]);
        libc::close(p.go);
        if got == 4 {
            let mut st = 0;
            libc::waitpid(command, &mut st, 0);
            send(report, MSG_EXEC_FAILED, i32::from_ne_bytes(e), 0);
            libc::_exit(127);
        }
        // The keeper holds no terminal, no pipe and no lock but the task's:
        // `$(manage x)` must not wait for it, nor an `offline run`'s window
        // outlive its command.
        close_all_but(&p.keep);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
        keep(command, report, p);
    }
}

/// The command, right after the keeper's fork: async-signal-safe calls only.
unsafe fn command_main(p: &Prepared, runner_mask: &libc::sigset_t, errpipe: RawFd) -> ! {
    // SAFETY: async-signal-safe system calls on memory prepared before the
    // fork.
    unsafe {
        for s in SURVIVED {
            set_disposition(s, libc::SIG_DFL);
        }
        set_disposition(libc::SIGTERM, libc::SIG_DFL);
        libc::pthread_sigmask(libc::SIG_SETMASK, runner_mask, ptr::null_mut());
        // Wait for the runner's go-ahead; without it (the runner died
        // first), never run.
        let mut b = 0u8;
        loop {
            let n = libc::read(p.go, (&raw mut b).cast(), 1);
            if n == 1 {
                break;
            }
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            libc::_exit(127);
        }
        if !p.release {
            for &fd in &p.fds {
                libc::fcntl(fd, libc::F_SETFD, 0);
            }
        }
        libc::execve(p.path.as_ptr(), p.argv_ptrs.as_ptr(), p.envp_ptrs.as_ptr());
        let e = errno().to_ne_bytes();
        libc::write(errpipe, e.as_ptr().cast(), 4);
        libc::_exit(127);
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
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
            if libc::syscall(libc::SYS_close_range, from, to, 0) != 0 {
                for fd in from..=to.min(4095) {
                    libc::close(fd as RawFd);
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
/// leaves ONLINE, and exits once no child is left. Async-signal-safe.
unsafe fn keep(command: libc::pid_t, report: RawFd, p: &Prepared) -> ! {
    let set = keeper_set();
    let mut report = Some(report);
    let mut done = false;
    let mut status = 0;
    // Once asked to stop, every child is asked — also those adopted later,
    // when their parent exits.
    let mut terminating = false;
    let look = libc::timespec {
        tv_sec: 0,
        tv_nsec: LOOK_MS * 1_000_000,
    };
    // SAFETY: system calls on our own children and descriptors; the probe
    // was opened before the fork and outlives it (the runner's memory,
    // copied).
    unsafe {
        loop {
            loop {
                let mut st = 0;
                let r = libc::waitpid(-1, &mut st, libc::WNOHANG);
                if r > 0 {
                    if r == command {
                        done = true;
                        status = st;
                    }
                    continue;
                }
                if r < 0 && errno() == libc::EINTR {
                    continue;
                }
                if r < 0 {
                    // No child is left: the task is over.
                    if let Some(fd) = report {
                        send(fd, MSG_EXITED, status, 0);
                    }
                    libc::_exit(0);
                }
                break;
            }
            if done && let Some(fd) = report.take() {
                send(fd, MSG_EXITED, status, 1);
                libc::close(fd);
            }
            // Leftovers of a drain-`stop` command: stop once a drain the
            // task holds off begins.
            let watching = done && !terminating && p.probe.is_some();
            if watching
                && let Some(probe) = p.probe
                && (*probe).keeps_running() == Some(false)
            {
                terminating = true;
            }
            if terminating {
                terminate_children();
            }
            let sig = if watching && !terminating {
                libc::sigtimedwait(&set, ptr::null_mut(), &look)
            } else {
                libc::sigwaitinfo(&set, ptr::null_mut())
            };
            if sig == libc::SIGTERM {
                terminating = true;
                if !done {
                    libc::kill(command, libc::SIGTERM);
                }
                terminate_children();
            }
        }
    }
}

/// Sends SIGTERM to every child of the calling thread (orphans are
/// reparented to the subreaper's first live thread: the keeper's only, or
/// main, thread). Parses `/proc/thread-self/children` without allocating.
unsafe fn terminate_children() {
    // SAFETY: open/read/kill/close on a buffer of our own.
    unsafe {
        let fd = libc::open(
            c"/proc/thread-self/children".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return;
        }
        let mut buf = [0u8; 4096];
        let mut pid: libc::pid_t = 0;
        loop {
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            if n <= 0 {
                break;
            }
            for &b in &buf[..n as usize] {
                if b.is_ascii_digit() {
                    pid = pid
                        .saturating_mul(10)
                        .saturating_add(libc::pid_t::from(b - b'0'));
                } else {
                    if pid > 0 {
                        libc::kill(pid, libc::SIGTERM);
                    }
                    pid = 0;
                }
            }
        }
        if pid > 0 {
            libc::kill(pid, libc::SIGTERM);
        }
        libc::close(fd);
    }
}
