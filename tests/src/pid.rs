//! Any process, by its pid — a child, a grandchild, a server's worker:
//! waiting for its death through a pidfd, signals, and what `/proc` says of
//! it (alive, its children, its uid, the signals it catches, whether it is
//! blocked waiting for a child).

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::wait::HANG_GUARD;

/// Waits until process `pid` — any process, a grandchild too — has died,
/// through a pidfd: when this returns its descriptors are closed (the
/// kernel closes them before it reports the death), so its locks are free.
/// Fails the test if it is still alive after the hang guard.
pub fn wait_dead(pid: u32) {
    let pid_raw = i32::try_from(pid).expect("a pid fits in i32");
    let Some(pid) = rustix::process::Pid::from_raw(pid_raw) else {
        panic!("bad pid {pid_raw}");
    };
    let fd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => fd,
        // Already dead and reaped.
        Err(rustix::io::Errno::SRCH) => return,
        Err(e) => panic!("pidfd_open({pid_raw}): {e}"),
    };
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        // SAFETY: `pfd` is one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, 100) };
        if n > 0 {
            return;
        }
        if Instant::now() >= deadline {
            panic!("pid {pid_raw} is still alive after {HANG_GUARD:?}");
        }
    }
}

/// `kill -9 PID` for a process that is not our child (a grandchild), then
/// waits until it is dead.
pub fn kill9_pid(pid: u32) {
    let raw = i32::try_from(pid).expect("a pid fits in i32");
    let pid_t = rustix::process::Pid::from_raw(raw).expect("a positive pid");
    match rustix::process::kill_process(pid_t, rustix::process::Signal::KILL) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => {}
        Err(e) => panic!("kill -9 {pid}: {e}"),
    }
    wait_dead(pid);
}

/// Whether process `pid` is still alive (a zombie counts as dead).
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
    }
}

/// The processes whose parent is `pid`, found by their `/proc/N/stat`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

pub use maintenance_core::process::uid_of;

/// Sends `signal` to process `pid` (a child or any process of the test).
pub fn send_signal(pid: u32, signal: rustix::process::Signal) {
    let raw = i32::try_from(pid).expect("a pid fits in i32");
    let pid_t = rustix::process::Pid::from_raw(raw).expect("a positive pid");
    rustix::process::kill_process(pid_t, signal)
        .unwrap_or_else(|e| panic!("kill -{signal:?} {pid}: {e}"));
}

/// The signals process `pid` has a handler for (its `SigCgt` mask in
/// `/proc`), as a bit set (bit `n-1` for signal `n`); 0 once it is gone.
pub fn caught_signals(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Waits until process `pid` has installed handlers for every one of
/// `signals` (`libc::SIGINT`, …): from then on a signal is handled, not
/// fatal. Fails the test after the hang guard.
pub fn wait_until_catching(pid: u32, signals: &[i32]) {
    let wanted = signals.iter().fold(0u64, |m, s| m | 1 << (s - 1));
    let deadline = Instant::now() + HANG_GUARD;
    while caught_signals(pid) & wanted != wanted {
        assert!(
            is_alive(pid),
            "pid {pid} died before it caught signals {signals:?}"
        );
        assert!(
            Instant::now() < deadline,
            "pid {pid} does not catch signals {signals:?} after {HANG_GUARD:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until process `pid` runs a program whose command line contains
/// `program` and has installed handlers for every one of `signals`. A
/// shell's forked child inherits its parent's traps until it execs, so
/// [`wait_until_catching`] alone can be satisfied by the copy of the
/// parent's trap before the child's own program set its own. Fails the
/// test after the hang guard.
pub fn wait_until_catching_in(pid: u32, program: &str, signals: &[i32]) {
    let deadline = Instant::now() + HANG_GUARD;
    let runs = || {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(program))
    };
    while !runs() {
        assert!(is_alive(pid), "pid {pid} died before it ran {program:?}");
        assert!(
            Instant::now() < deadline,
            "pid {pid} does not run {program:?} after {HANG_GUARD:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    wait_until_catching(pid, signals);
}

/// Whether the main thread of process `pid` is blocked waiting for a child:
/// in `wait4`/`waitid`, or — a runner waiting for its external command
/// through the command's keeper — in `poll` on the keeper's pipe. Its
/// `/proc` wait channel says so (`do_wait`, `do_sys_poll`), or, where the
/// kernel hides wait channels, its current system call does.
pub fn waits_for_a_child(pid: u32) -> bool {
    let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    if matches!(wchan.trim(), "do_wait" | "do_sys_poll") {
        return true;
    }
    let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
    let number = syscall
        .split(' ')
        .next()
        .and_then(|n| n.parse::<i64>().ok());
    #[cfg(target_arch = "x86_64")]
    let poll = [libc::SYS_poll, libc::SYS_ppoll];
    #[cfg(not(target_arch = "x86_64"))]
    let poll = [libc::SYS_ppoll];
    number.is_some_and(|n| n == libc::SYS_wait4 || n == libc::SYS_waitid || poll.contains(&n))
}

/// Waits until process `pid` is blocked waiting for its child (a runner
/// waiting for its external command): from then on, whatever it set up
/// before waiting — the child's pid for signal forwarding — is in place.
/// Fails the test after the hang guard.
pub fn wait_until_waiting_for_a_child(pid: u32) {
    let deadline = Instant::now() + HANG_GUARD;
    while !waits_for_a_child(pid) {
        assert!(is_alive(pid), "pid {pid} died before it waited for a child");
        assert!(
            Instant::now() < deadline,
            "pid {pid} is not waiting for a child after {HANG_GUARD:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}
