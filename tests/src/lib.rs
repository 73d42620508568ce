//! End-to-end tests of manage, in `tests/`: they run real binaries as real
//! processes. The helper binary `task-holder` holds tasks and locks on the
//! tests' command (its usage is at the top of `src/bin/task-holder.rs`).
//!
//! This library is what the tests share: scratch directories another user
//! can reach, spawning `task-holder` and reading its one-line reports (with
//! a hang guard, so a hung process fails its test with a message instead of
//! hanging the suite), waiting for the death of any process — a grandchild
//! too — through a pidfd, FIFOs and a start barrier for races, the
//! unprivileged user of the permission tests, and snapshots of a directory
//! tree to prove nothing outside the state directory was touched.
//!
//! Nothing here measures time: the only durations are hang guards, far
//! beyond anything a passing run needs.

pub mod fixture;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use maintenance_core::TaskRecord;

/// How long a test waits for a process to say or do something before it
/// declares it hung. A hang guard, never an assertion about speed.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

/// The exit code of a refusal (`EX_TEMPFAIL`), as maintenance-core defines it.
pub const REFUSED: i32 = maintenance_core::exit::REFUSED as i32;

/// A scratch directory for one test, reachable by every user (a plain
/// temporary directory is 0700, which would stop the unprivileged user at
/// the door and prove nothing). Removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Scratch {
    /// A fresh scratch directory, mode 0755.
    pub fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("manage-tests-")
            .tempdir()
            .expect("a temporary directory");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod the temporary directory");
        Scratch { dir }
    }

    /// The scratch directory itself: the state directory's parent.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Where the state directory goes (not created).
    pub fn state(&self) -> PathBuf {
        self.path().join("state")
    }

    /// A directory outside the state, for planted links to point at
    /// (created on first use).
    pub fn outside(&self) -> PathBuf {
        let p = self.path().join("outside");
        if !p.exists() {
            std::fs::create_dir(&p).expect("create the outside directory");
        }
        p
    }
}

/// An unprivileged user to run processes as.
#[derive(Debug, Clone, Copy)]
pub struct User {
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

/// The name of the unprivileged user the permission tests run as.
pub const UNPRIVILEGED: &str = "manage-test";

fn id_of(flag: &str) -> Option<u32> {
    let out = Command::new("id")
        .args([flag, UNPRIVILEGED])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The user `manage-test`, created when missing. Only root can run a
/// process as another user, and a permission test run as root would prove
/// nothing; when not root, this says so on stderr (visible in the test's
/// output) and returns `None`, and the test skips.
pub fn unprivileged_user(test: &str) -> Option<User> {
    if !rustix::process::geteuid().is_root() {
        eprintln!(
            "SKIPPED {test}: it runs a process as the unprivileged user {UNPRIVILEGED}, \
             which needs root (as root without dropping privileges it would prove nothing)"
        );
        return None;
    }
    if id_of("-u").is_none() {
        // Tests run in parallel processes: another may create it first.
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                UNPRIVILEGED,
            ])
            .output()
            .expect("run useradd");
        if id_of("-u").is_none() {
            panic!(
                "cannot create the user {UNPRIVILEGED}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let uid = id_of("-u").expect("the uid of manage-test");
    let gid = id_of("-g").expect("the gid of manage-test");
    assert_ne!(uid, 0, "{UNPRIVILEGED} must not be root");
    Some(User { uid, gid })
}

/// Runs `task-holder` against one state directory.
#[derive(Debug, Clone)]
pub struct Holder {
    exe: PathBuf,
    state: PathBuf,
    user: Option<User>,
}

impl Holder {
    /// `exe` is `env!("CARGO_BIN_EXE_task-holder")`; `state` the state
    /// directory every run is given.
    pub fn new(exe: impl Into<PathBuf>, state: impl Into<PathBuf>) -> Holder {
        Holder {
            exe: exe.into(),
            state: state.into(),
            user: None,
        }
    }

    /// The same, with every run as `user`. Fails the test, saying what to
    /// do, when that user cannot reach the binary (a target directory under
    /// a private home): the test would otherwise fail for the wrong reason.
    pub fn as_user(&self, user: User) -> Holder {
        for dir in self.exe.ancestors().skip(1) {
            let Ok(meta) = std::fs::metadata(dir) else {
                continue;
            };
            assert!(
                meta.permissions().mode() & 0o001 != 0,
                "{UNPRIVILEGED} cannot reach {}: {} is not searchable by others; \
                 chmod o+x it or build elsewhere (CARGO_TARGET_DIR), as .ci/run does",
                self.exe.display(),
                dir.display()
            );
        }
        Holder {
            user: Some(user),
            ..self.clone()
        }
    }

    /// The state directory.
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// The command line `task-holder --state-dir STATE ARGS…`, stdio piped.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--state-dir")
            .arg(&self.state)
            .args(args)
            .env_remove(maintenance_core::task::ENV_TASK)
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(user) = self.user {
            cmd.uid(user.uid).gid(user.gid).current_dir("/");
        }
        cmd
    }

    /// Starts `task-holder ARGS…`.
    pub fn spawn(&self, args: &[&str]) -> Proc {
        Proc::spawn(self.command(args))
    }

    /// Runs `task-holder ARGS…` to its end, stdin closed at once.
    pub fn run(&self, args: &[&str]) -> Outcome {
        self.spawn(args).finish()
    }

    /// The live tasks, listed by a separate process.
    pub fn list(&self) -> Vec<TaskRecord> {
        let out = self.run(&["list"]);
        assert!(out.success(), "`list` failed: {out}");
        let line = out.stdout.first().unwrap_or_else(|| panic!("{out}"));
        serde_json::from_str(line).unwrap_or_else(|e| panic!("bad listing {line:?}: {e}"))
    }

    /// The ids of the live tasks, listed by a separate process.
    pub fn live_ids(&self) -> Vec<String> {
        self.list().into_iter().map(|t| t.id).collect()
    }

    /// Starts `hold ARGS…` and waits until it holds its task; returns the
    /// process and the task's id.
    pub fn hold(&self, args: &[&str]) -> (Proc, String) {
        let mut all = vec!["hold"];
        all.extend_from_slice(args);
        let mut p = self.spawn(&all);
        let line = p.line();
        match Report::parse(&line) {
            Report::Started { id, .. } => (p, id),
            other => panic!(
                "`hold {}` did not start: {other:?}; {}",
                args.join(" "),
                p.finish()
            ),
        }
    }
}

/// What a `task-holder` line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// `started <id> <pid> [refusals=<n>]`.
    Started {
        /// The task's id.
        id: String,
        /// The process that started it.
        pid: u32,
        /// How many refusals came before (with `--retry`).
        refusals: Option<u64>,
    },
    /// `refused <code> <message>`.
    Refused {
        /// The exit code.
        code: i32,
        /// Why.
        message: String,
    },
    /// `error <code> <message>`.
    Error {
        /// The exit code.
        code: i32,
        /// What went wrong.
        message: String,
    },
    /// Anything else.
    Other(String),
}

impl Report {
    /// Parses one line of `task-holder`'s output.
    pub fn parse(line: &str) -> Report {
        let mut words = line.splitn(3, ' ');
        let (kind, a, b) = (words.next(), words.next(), words.next());
        match (kind, a, b) {
            (Some("started"), Some(id), Some(rest)) => {
                let mut rest = rest.split(' ');
                let pid = rest.next().and_then(|p| p.parse().ok());
                let refusals = rest
                    .next()
                    .and_then(|r| r.strip_prefix("refusals="))
                    .and_then(|n| n.parse().ok());
                match pid {
                    Some(pid) => Report::Started {
                        id: id.to_owned(),
                        pid,
                        refusals,
                    },
                    None => Report::Other(line.to_owned()),
                }
            }
            (Some(kind @ ("refused" | "error")), Some(code), message) => {
                let Ok(code) = code.parse() else {
                    return Report::Other(line.to_owned());
                };
                let message = message.unwrap_or_default().to_owned();
                if kind == "refused" {
                    Report::Refused { code, message }
                } else {
                    Report::Error { code, message }
                }
            }
            _ => Report::Other(line.to_owned()),
        }
    }
}

/// A running `task-holder` (or any command), its stdout read line by line
/// in the background. Killed and reaped when dropped, so a failing test
/// leaves no process behind; closing its stdin ends a holder cleanly.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stdout: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<String>>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` (stdio piped).
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let out = child.stdout.take().expect("stdout piped");
        let mut err = child.stderr.take().expect("stderr piped");
        let (tx, lines) = mpsc::channel();
        let stdout = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        });
        Proc {
            child,
            stdin,
            lines,
            stdout: Some(stdout),
            stderr: Some(stderr),
            status: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line on stdout; fails the test if the process ends without
    /// one or says nothing within the hang guard.
    pub fn line(&mut self) -> String {
        match self.lines.recv_timeout(HANG_GUARD) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!(
                    "pid {} said nothing within {HANG_GUARD:?}: hung",
                    self.pid()
                )
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let pid = self.pid();
                panic!(
                    "pid {pid} closed its stdout without another line: {}",
                    self.take_outcome()
                )
            }
        }
    }

    /// The next line on stdout if one has arrived already, without waiting.
    pub fn try_line(&mut self) -> Option<String> {
        self.lines.try_recv().ok()
    }

    /// Writes `text` to the process's stdin.
    pub fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(text.as_bytes()).expect("write to stdin");
        stdin.flush().expect("flush stdin");
    }

    /// Closes the process's stdin: a holder ends its task and exits.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.status.is_none()
            && self
                .child
                .try_wait()
                .expect("try_wait on a child")
                .is_none()
    }

    /// `kill -9`, and reaps it: when this returns the process is gone and
    /// every descriptor it had is closed.
    pub fn kill9(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = Some(self.child.wait().expect("wait for a killed child"));
        }
    }

    /// Waits for the exit (within the hang guard) without closing stdin,
    /// which a child it spawned may share.
    pub fn wait_exit(&mut self) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait on a child") {
                self.status = Some(s);
                return s;
            }
            if Instant::now() >= deadline {
                self.kill9();
                panic!(
                    "pid {} did not exit within {HANG_GUARD:?} after its stdin closed: hung",
                    self.pid()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn take_outcome(&mut self) -> Outcome {
        self.stdin = None;
        let status = self.wait_exit();
        if let Some(t) = self.stdout.take() {
            let _ = t.join();
        }
        let stdout: Vec<String> = self.lines.try_iter().collect();
        let stderr = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        Outcome {
            status,
            stdout,
            stderr,
        }
    }

    /// Closes stdin, waits for the exit (within the hang guard) and returns
    /// what the process said that was not read yet.
    pub fn finish(mut self) -> Outcome {
        self.take_outcome()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stdin = None;
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How a process ended and what it said.
#[derive(Debug)]
pub struct Outcome {
    /// Its exit status.
    pub status: ExitStatus,
    /// The stdout lines not read before it ended.
    pub stdout: Vec<String>,
    /// All of stderr.
    pub stderr: String,
}

impl Outcome {
    /// The exit code, `None` when a signal ended it.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Everything it said, stdout then stderr.
    pub fn text(&self) -> String {
        let mut t = self.stdout.join("\n");
        t.push('\n');
        t.push_str(&self.stderr);
        t
    }

    /// The first stdout line parsed as a report.
    pub fn report(&self) -> Report {
        Report::parse(self.stdout.first().map(String::as_str).unwrap_or(""))
    }

    /// Asserts it failed as an error should: an exit code that is neither
    /// success nor a panic's (101), no signal, no "panicked" anywhere, and
    /// a message containing every one of `needles`.
    pub fn assert_clean_error(&self, needles: &[&str]) {
        assert!(
            !self.text().contains("panicked"),
            "it panicked instead of reporting an error: {self}"
        );
        match self.code() {
            Some(0) => panic!("it succeeded where it should have failed: {self}"),
            Some(101) => panic!("it exited 101, a panic's code: {self}"),
            Some(_) => {}
            None => panic!("a signal ended it: {self}"),
        }
        for needle in needles {
            assert!(
                self.text().contains(needle),
                "its message does not mention {needle:?}: {self}"
            );
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.status.code(), self.status.signal()) {
            (Some(c), _) => write!(f, "exit {c}")?,
            (None, Some(s)) => write!(f, "killed by signal {s}")?,
            _ => write!(f, "{}", self.status)?,
        }
        write!(
            f,
            "; stdout: {:?}; stderr: {:?}",
            self.stdout.join("\n"),
            self.stderr
        )
    }
}

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

/// Creates a FIFO at `path`.
pub fn mkfifo(path: &Path) {
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        path,
        rustix::fs::Mode::from_raw_mode(0o666),
    )
    .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
}

/// A start line for racing processes: each `task-holder --barrier FIFO`
/// says `ready` and blocks opening the FIFO; [`Barrier::release`] opens it
/// for writing, which wakes every one of them in the same instant.
#[derive(Debug)]
pub struct Barrier {
    path: PathBuf,
    writer: Option<File>,
}

impl Barrier {
    /// A new barrier, a FIFO in `dir`.
    pub fn new(dir: &Path) -> Barrier {
        let path = dir.join(format!(
            "barrier-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        mkfifo(&path);
        Barrier { path, writer: None }
    }

    /// The FIFO, for `--barrier`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lets every waiting process go. The FIFO stays open for writing until
    /// the barrier is dropped, so a process that reaches it late passes too.
    pub fn release(&mut self) {
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&self.path)
            {
                Ok(f) => {
                    self.writer = Some(f);
                    return;
                }
                // No reader yet.
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
                Err(e) => panic!("open barrier {}: {e}", self.path.display()),
            }
            assert!(
                Instant::now() < deadline,
                "nobody waits at the barrier after {HANG_GUARD:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Takes an exclusive `flock` on `file` without waiting, as a live task's
/// holder would, so a reader that followed a link to it would think it live.
pub fn lock_exclusive(file: &File) {
    rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .expect("flock an outside file");
}

/// Every entry under `root` (not following links), with what it is and
/// holds: `dir 755`, `file 644 <len> <content>`, `link -> target`,
/// `fifo 644`, … — so comparing two snapshots shows anything created,
/// removed, written or re-targeted. Paths under any of `skip` are left out.
pub fn snapshot(root: &Path, skip: &[&Path]) -> BTreeMap<PathBuf, String> {
    fn walk(p: &Path, skip: &[&Path], out: &mut BTreeMap<PathBuf, String>) {
        if skip.iter().any(|s| p.starts_with(s)) {
            return;
        }
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            return;
        };
        let ft = meta.file_type();
        let mode = meta.permissions().mode() & 0o7777;
        let what = if ft.is_symlink() {
            let target = std::fs::read_link(p).unwrap_or_default();
            format!("link -> {}", target.display())
        } else if ft.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(p)
                .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            names.sort();
            for child in names {
                walk(&child, skip, out);
            }
            format!("dir {mode:o}")
        } else if ft.is_file() {
            let content = std::fs::read(p).unwrap_or_default();
            format!(
                "file {mode:o} {} {:?}",
                content.len(),
                String::from_utf8_lossy(&content)
            )
        } else if ft.is_fifo() {
            format!("fifo {mode:o}")
        } else {
            format!("other {mode:o}")
        };
        out.insert(p.to_path_buf(), what);
    }
    let mut out = BTreeMap::new();
    walk(root, skip, &mut out);
    out
}

/// The names in directory `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// A string unique to this test run, for names nobody else uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}
