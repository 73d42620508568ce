//! What this host says of a process (Linux `/proc`): whether it still is the
//! process recorded at spawn (pid plus start time, so a reused pid is never
//! mistaken for it), its children, its command line. Status and lists use
//! it to name the processes that actually hold a task (I3) — the keeper's
//! children: the command and whatever it left behind — instead of a
//! runner's pid that may be long dead. Elsewhere nothing is known, and the
//! record's own pid is shown.

use serde::{Deserialize, Serialize};

/// One process as recorded at spawn: its pid and its start time (clock
/// ticks after boot, `/proc/PID/stat` field 22), which together name it
/// even after the pid is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    /// The process id.
    pub pid: u32,
    /// When it started, in clock ticks after boot (0 when unknown).
    pub start: u64,
}

impl ProcId {
    /// The process `pid` as it is now, or `None` when there is none.
    pub fn of(pid: u32) -> Option<ProcId> {
        Some(ProcId {
            pid,
            start: start_time(pid)?,
        })
    }

    /// Whether this very process still lives (a zombie counts as gone).
    pub fn alive(&self) -> bool {
        stat(self.pid).is_some_and(|s| s.start == self.start && s.state != 'Z' && s.state != 'X')
    }
}

/// The processes of a task that runs an external command, recorded when it
/// was spawned: the keeper (the runner's child that outlives the command
/// and reaps what it leaves behind) and the command itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Processes {
    /// The keeper: every process of the task descends from it.
    pub keeper: ProcId,
    /// The command, the keeper's first child.
    pub command: ProcId,
}

/// A process that holds a task now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Its pid.
    pub pid: u32,
    /// Its command line (empty when it cannot be read).
    pub argv: Vec<String>,
    /// Whether it is the command itself, rather than a process it left
    /// behind.
    pub command: bool,
}

impl Processes {
    /// The processes that hold the task now: the keeper's live children
    /// (the command, and the leftovers it reparented to itself); when the
    /// keeper itself is gone, the command if it still lives. Empty when
    /// nothing can be told (not Linux, or every recorded process is gone
    /// while the task is still held by a descendant that kept its lock).
    pub fn holders(&self) -> Vec<Holder> {
        let mut pids = Vec::new();
        if self.keeper.alive() {
            pids = children(self.keeper.pid);
        } else if self.command.alive() {
            pids.push(self.command.pid);
        }
        pids.sort_unstable();
        pids.dedup();
        pids.into_iter()
            .filter(|&pid| stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X'))
            .map(|pid| Holder {
                pid,
                argv: argv(pid),
                command: pid == self.command.pid && start_time(pid) == Some(self.command.start),
            })
            // The keeper's drain watcher is its own, never a holder.
            .filter(|h| h.command || h.argv.get(1).map(String::as_str) != Some(DRAIN_WATCH_ARG))
            .collect()
    }
}

struct Stat {
    state: char,
    start: u64,
}

/// Field 3 (state) and field 22 (start time) of `/proc/PID/stat`; the
/// command name in field 2 may hold spaces and parentheses, so fields are
/// counted after its last `)`.
fn stat(pid: u32) -> Option<Stat> {
    if pid == 0 {
        return None;
    }
    // Into a buffer of our own: the line is a few hundred bytes (52
    // numbers at most), and an external command's spawn reads two of them
    // on its way. Bytes, not text: a command name need not be UTF-8.
    let mut buf = [0u8; 2048];
    let mut file = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut len = 0;
    // The kernel gives the line whole, newline last: once it is in, no
    // read for the end of the file.
    while len < buf.len() && !buf[..len].ends_with(b"\n") {
        match std::io::Read::read(&mut file, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    let line = &buf[..len];
    let rest = &line[line.iter().rposition(|&b| b == b')')? + 1..];
    let mut fields = rest
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let state = char::from(*fields.next()?.first()?);
    // After the state (field 3), the start time is field 22: 18 further on.
    let start = std::str::from_utf8(fields.nth(18)?).ok()?.parse().ok()?;
    Some(Stat { state, start })
}

/// The start time of `pid`, in clock ticks after boot.
pub fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|s| s.start)
}

/// The argument that starts the `manage` binary as an external command's
/// drain watcher: a child of the command's keeper that waits, on a backend
/// the keeper cannot read itself, until the site leaves ONLINE. It holds
/// none of the task's locks, so it is never listed as holding the task.
pub const DRAIN_WATCH_ARG: &str = "--manage-drain-watch";

/// The children of every thread of `pid` (orphans are reparented to any
/// live thread of a subreaper).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in threads.flatten() {
        let mut path = t.path();
        path.push("children");
        if let Ok(text) = std::fs::read_to_string(path) {
            out.extend(
                text.split_ascii_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// The real uid of process `pid`, from `/proc/PID/status`; `None` once it is
/// gone.
pub fn uid_of(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The command line of `pid`, as far as it can be read.
///
/// A process caught in the middle of `execve` reads an empty command line:
/// its close-on-exec descriptors are closed first (so a parent waiting on
/// one, as Python's `subprocess` does, goes on and reports the child
/// started), and the kernel lays out the new arguments a few microseconds
/// later. An empty line of a live process is read again, for at most
/// about 20 ms, before it is taken as empty.
pub fn argv(pid: u32) -> Vec<String> {
    for _ in 0..20 {
        let args = read_argv(pid);
        let running = stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X');
        if !args.is_empty() || !running {
            return args;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    read_argv(pid)
}

fn read_argv(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A child read at once after its spawn returns is caught inside
    /// `execve` now and then (the spawn returns at exec's point of no
    /// return, before the new arguments are laid out): read by racing. A
    /// single read of `/proc/PID/cmdline` fails this within a few rounds.
    #[test]
    fn a_command_line_read_just_after_exec_is_the_new_one() {
        for _ in 0..300 {
            let mut child = std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .expect("sleep starts");
            let args = argv(child.id());
            child.kill().ok();
            child.wait().ok();
            assert_eq!(args, ["sleep", "30"]);
        }
    }

    #[test]
    fn this_process_is_itself_and_a_reused_pid_is_not() {
        let me = ProcId::of(std::process::id()).unwrap();
        assert!(me.alive());
        let other = ProcId {
            start: me.start + 1,
            ..me
        };
        assert!(!other.alive(), "another start time is another process");
        assert!(!argv(me.pid).is_empty());
    }

    #[test]
    fn a_process_whose_name_is_not_utf8_and_holds_parentheses_is_alive() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        // The kernel's name for the process is its executable's file name.
        let exe = dir
            .path()
            .join(std::ffi::OsStr::from_bytes(b"a) (b \xff\xfe"));
        std::os::unix::fs::symlink("/bin/sleep", &exe).unwrap();
        let mut child = std::process::Command::new(&exe).arg("30").spawn().unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !std::fs::read(format!("/proc/{pid}/stat"))
            .unwrap()
            .windows(2)
            .any(|w| w == b"\xff\xfe")
        {
            assert!(std::time::Instant::now() < deadline, "never exec'd");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let seen = ProcId::of(pid).map(|id| (id, id.alive()));
        child.kill().unwrap();
        child.wait().unwrap();
        let (id, alive) = seen.expect("a live process has a start time");
        assert!(alive, "{id:?} was alive");
        assert!(!id.alive(), "{id:?} is gone");
    }

    #[test]
    fn a_child_is_listed_until_it_is_reaped() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(children(std::process::id()).contains(&pid));
        // Its command line is the parent's until it has exec'd `sleep`.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while argv(pid) != ["sleep", "30"] {
            assert!(std::time::Instant::now() < deadline, "{:?}", argv(pid));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!children(std::process::id()).contains(&pid));
    }
}
