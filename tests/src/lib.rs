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

/// The `user@host` every process of these tests runs as, as records and
/// messages name it.
pub fn user_at_host() -> String {
    maintenance_core::identity::Identity::current().user_at_host()
}

/// Sends `signal` to process `pid` (a child or any process of the test).
pub fn send_signal(pid: u32, signal: rustix::process::Signal) {
    let raw = i32::try_from(pid).expect("a pid fits in i32");
    let pid_t = rustix::process::Pid::from_raw(raw).expect("a positive pid");
    rustix::process::kill_process(pid_t, signal)
        .unwrap_or_else(|e| panic!("kill -{signal:?} {pid}: {e}"));
}

/// Readies a command that runs one of the site's binaries: nothing of the
/// test's own environment leaks in (no backtrace, no configuration, state
/// directory or task token), and every stream is piped.
pub fn isolated(mut cmd: Command) -> Command {
    cmd.env_remove("RUST_BACKTRACE")
        .env_remove("MANAGE_STATE_DIR")
        .env_remove("MANAGE_CONFIG")
        .env_remove(maintenance_core::task::ENV_TASK)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A site for the end-to-end runs of a `manage` binary (`e2e-manage`): a
/// scratch directory that is the working directory of every run, holding a
/// `manage.toml` (with `refresh_interval = "50ms"`, so PENDING settles
/// quickly, plus whatever the test adds), the state directory (given as
/// `MANAGE_STATE_DIR`) and a `bin/` directory put first on `PATH` for
/// external `manage-<name>` commands. Every run has `argv[0]` `manage` and
/// neither `RUST_BACKTRACE` nor a task token in its environment.
#[derive(Debug)]
pub struct Site {
    scratch: Scratch,
    exe: PathBuf,
}

impl Site {
    /// A fresh site run with `exe` (`env!("CARGO_BIN_EXE_e2e-manage")`).
    pub fn new(exe: impl Into<PathBuf>) -> Site {
        Site::with_config(exe, "")
    }

    /// A fresh site whose `manage.toml` also holds `toml` (lines of
    /// settings, e.g. `session_timeout = "10m"`).
    pub fn with_config(exe: impl Into<PathBuf>, toml: &str) -> Site {
        let scratch = Scratch::new();
        std::fs::write(
            scratch.path().join("manage.toml"),
            format!("refresh_interval = \"50ms\"\n{toml}\n"),
        )
        .expect("write manage.toml");
        std::fs::create_dir(scratch.path().join("bin")).expect("create bin/");
        Site {
            scratch,
            exe: exe.into(),
        }
    }

    /// The site's directory: every run's working directory.
    pub fn dir(&self) -> &Path {
        self.scratch.path()
    }

    /// The state directory.
    pub fn state(&self) -> PathBuf {
        self.scratch.state()
    }

    /// Writes an executable `bin/manage-<name>` with `script` (a whole
    /// file, `#!/bin/sh` first). Write these before starting any process:
    /// a file open for writing while another thread forks can make the
    /// exec fail with ETXTBSY.
    pub fn external(&self, name: &str, script: &str) -> PathBuf {
        let path = self.dir().join("bin").join(format!("manage-{name}"));
        std::fs::write(&path, script).expect("write an external command");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod an external command");
        path
    }

    /// The command line `manage ARGS…` against this site, stdio piped.
    pub fn command(&self, args: &[&str]) -> Command {
        let path = match std::env::var_os("PATH") {
            Some(p) => {
                let mut dirs = vec![self.dir().join("bin")];
                dirs.extend(std::env::split_paths(&p));
                std::env::join_paths(dirs).expect("a PATH")
            }
            None => self.dir().join("bin").into_os_string(),
        };
        let mut cmd = isolated(Command::new(&self.exe));
        cmd.arg0("manage")
            .args(args)
            .current_dir(self.dir())
            .env("MANAGE_STATE_DIR", self.state())
            .env("PATH", path);
        cmd
    }

    /// Starts `manage ARGS…`.
    pub fn spawn(&self, args: &[&str]) -> Proc {
        Proc::spawn(self.command(args))
    }

    /// Runs `manage ARGS…` to its end (within the hang guard).
    pub fn run(&self, args: &[&str]) -> Outcome {
        self.spawn(args).finish()
    }

    /// Starts a command of the test fixture that says `started <task-id>`
    /// (`sleeper`, `sleeper-many`, or `offline run -- sleeper …`) and waits
    /// until it has said so: from then on its task is live. Returns the
    /// process and the id.
    pub fn start(&self, args: &[&str]) -> (Proc, String) {
        let mut p = self.spawn(args);
        let line = p.line();
        match line.strip_prefix("started ") {
            Some(id) => (p, id.to_owned()),
            None => panic!(
                "`manage {}` did not start: {line:?}; {}",
                args.join(" "),
                p.finish()
            ),
        }
    }

    /// The site's state, opened in this process through the core API (with
    /// the default session timeout).
    pub fn backend(&self) -> std::sync::Arc<dyn maintenance_core::Backend> {
        maintenance_core::backend::open(
            &maintenance_core::Config::with_state_dir(self.state()),
            maintenance_core::SystemClock::shared(),
        )
        .expect("open the state directory")
    }

    /// Records activity of web session `id` now, as a web layer would;
    /// returns its key.
    pub fn touch_session(&self, id: &str) -> maintenance_core::session::SessionKey {
        let key = maintenance_core::session::SessionKey::of(id.as_bytes());
        self.backend().touch_session(&key).expect("touch a session");
        key
    }

    /// Ends web session `id` (a logout).
    pub fn end_session(&self, id: &str) {
        let key = maintenance_core::session::SessionKey::of(id.as_bytes());
        self.backend().end_session(&key).expect("end a session");
    }

    /// The mode view, read through the core API.
    pub fn mode(&self) -> maintenance_core::ModeView {
        self.backend().mode().expect("read the mode")
    }

    /// Polls the mode until it is `mode`; fails the test after the hang
    /// guard.
    pub fn wait_for_mode(&self, mode: maintenance_core::Mode) {
        let deadline = Instant::now() + HANG_GUARD;
        let backend = self.backend();
        loop {
            let view = backend.mode().expect("read the mode");
            if view.mode == mode {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the site is still {} after {HANG_GUARD:?}, not {mode}: {view:?}",
                view.mode
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `manage offline status --json`, parsed (and checked to exit 0).
    pub fn status_json(&self) -> serde_json::Value {
        let out = self.run(&["offline", "status", "--json"]);
        assert_eq!(out.code(), Some(0), "status --json: {out}");
        serde_json::from_str(&out.stdout.join("\n"))
            .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {out}"))
    }
}

/// One plain progress line of `offline on` — `<N> pending sessions. <*|->
/// (<S> sec)`, `1 pending session.` for one — parsed into N, the mark and S.
pub fn parse_progress(line: &str) -> Option<(usize, char, u64)> {
    let (n, rest) = line.split_once(" pending session")?;
    let rest = rest.strip_prefix(if n == "1" { ". " } else { "s. " })?;
    let mut chars = rest.chars();
    let mark = chars.next().filter(|c| matches!(c, '*' | '-'))?;
    let secs = chars
        .as_str()
        .strip_prefix(" (")?
        .strip_suffix(" sec)")?
        .parse()
        .ok()?;
    Some((n.parse().ok()?, mark, secs))
}

/// Checks the plain progress lines at the start of `lines`, which follow
/// `prev` (the last progress line already read, if any): each is a line
/// only because the count changed, the mark alternates, and the seconds
/// never go back. Returns how many of `lines` are progress lines.
pub fn plain_progress(prev: Option<&str>, lines: &[String]) -> usize {
    let mut last = prev.map(|p| parse_progress(p).unwrap_or_else(|| panic!("{p:?}")));
    let mut n = 0;
    for line in lines {
        let Some(now) = parse_progress(line) else {
            break;
        };
        if let Some((count, mark, secs)) = last {
            assert_ne!(now.0, count, "a line without a change: {lines:?}");
            assert_ne!(now.1, mark, "the mark alternates: {lines:?}");
            assert!(now.2 >= secs, "the seconds go back: {lines:?}");
        }
        last = Some(now);
        n += 1;
    }
    n
}

/// The example site's binary against a [`Site`] made with it
/// (`Site::new(env!("CARGO_BIN_EXE_e2e-mysite"))`): the same runs as
/// [`Site::command`], with `argv[0]` `mysite`.
impl Site {
    /// The command line `mysite ARGS…` against this site, stdio piped.
    pub fn mysite_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.command(args);
        cmd.arg0("mysite");
        cmd
    }

    /// Starts `mysite ARGS…`.
    pub fn spawn_mysite(&self, args: &[&str]) -> Proc {
        Proc::spawn(self.mysite_command(args))
    }

    /// Runs `mysite ARGS…` to its end (within the hang guard).
    pub fn run_mysite(&self, args: &[&str]) -> Outcome {
        self.spawn_mysite(args).finish()
    }
}

/// Reads `p`'s lines until one satisfies `done`; returns every line read,
/// that one last. Fails the test when it has not come within the hang
/// guard, even while `p` keeps talking.
pub fn lines_until(p: &mut Proc, done: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + HANG_GUARD;
    let mut lines = Vec::new();
    loop {
        let line = p.line();
        let last = done(&line);
        lines.push(line);
        if last {
            return lines;
        }
        if Instant::now() >= deadline {
            let tail = &lines[lines.len().saturating_sub(5)..];
            panic!(
                "pid {} did not say the line awaited within {HANG_GUARD:?} ({} lines, the last: {tail:?})",
                p.pid(),
                lines.len()
            );
        }
    }
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

// ---------------------------------------------------------------------------
// The example site's web app, for tests/web*.rs: `mysite runserver` and its
// operator CLI in a scratch site, and HTTP clients that follow no redirect.

/// The key the web tests' sites sign bypass cookies with
/// (`MYSITE_SECRET_KEY`).
pub const MYSITE_KEY: &str = "web-tests-signing-key";

/// A deployment of the example site (`e2e-mysite`, run as `mysite`) for the
/// web tests: a scratch directory holding `manage.toml` (`state_dir =
/// "state"`, `refresh_interval = "50ms"`, plus whatever the test adds) that
/// is the working directory of every run. Every run has `argv[0]` `mysite`,
/// `MYSITE_SECRET_KEY` set, and neither `RUST_BACKTRACE`, a task token,
/// `MANAGE_STATE_DIR` nor `MANAGE_CONFIG` in its environment.
#[derive(Debug)]
pub struct MySite {
    scratch: Scratch,
    exe: PathBuf,
}

impl MySite {
    /// A fresh site run with `exe` (`env!("CARGO_BIN_EXE_e2e-mysite")`).
    pub fn new(exe: impl Into<PathBuf>) -> MySite {
        MySite::with_config(exe, "")
    }

    /// A fresh site whose `manage.toml` also holds `toml`.
    pub fn with_config(exe: impl Into<PathBuf>, toml: &str) -> MySite {
        let scratch = Scratch::new();
        std::fs::write(
            scratch.path().join("manage.toml"),
            format!("state_dir = \"state\"\nrefresh_interval = \"50ms\"\n{toml}\n"),
        )
        .expect("write manage.toml");
        MySite {
            scratch,
            exe: exe.into(),
        }
    }

    /// The site's directory: every run's working directory.
    pub fn dir(&self) -> &Path {
        self.scratch.path()
    }

    /// The state directory.
    pub fn state(&self) -> PathBuf {
        self.scratch.state()
    }

    /// The command line `mysite ARGS…`, signing with `key`, stdio piped.
    pub fn command_with_key(&self, key: &str, args: &[&str]) -> Command {
        let mut cmd = isolated(Command::new(&self.exe));
        cmd.arg0("mysite")
            .args(args)
            .current_dir(self.dir())
            .env("MYSITE_SECRET_KEY", key);
        cmd
    }

    /// The command line `mysite ARGS…`, stdio piped.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_with_key(MYSITE_KEY, args)
    }

    /// Starts `mysite ARGS…`.
    pub fn spawn(&self, args: &[&str]) -> Proc {
        Proc::spawn(self.command(args))
    }

    /// Runs `mysite ARGS…` to its end and checks that it exited 0.
    pub fn run_ok(&self, args: &[&str]) -> Outcome {
        let out = self.spawn(args).finish();
        assert_eq!(out.code(), Some(0), "`mysite {}`: {out}", args.join(" "));
        out
    }

    /// `mysite offline status`'s line: `Status: <MODE> - Active sessions: <N>`.
    pub fn status(&self) -> String {
        let out = self.run_ok(&["offline", "status"]);
        out.stdout.first().cloned().unwrap_or_default()
    }

    /// Starts `mysite runserver --addr 127.0.0.1:0 ARGS…` and waits until it
    /// says where it serves.
    pub fn serve(&self, args: &[&str]) -> Server {
        self.serve_with_key(MYSITE_KEY, args)
    }

    /// The same, signing bypass cookies with `key`.
    pub fn serve_with_key(&self, key: &str, args: &[&str]) -> Server {
        let mut all = vec!["runserver", "--addr", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut proc = Proc::spawn(self.command_with_key(key, &all));
        let line = proc.line();
        let addr = line
            .strip_prefix("serving http://")
            .and_then(|rest| rest.strip_suffix('/'))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("`mysite {}` said {line:?}", all.join(" ")));
        Server { proc, addr }
    }

    /// Starts `mysite offline on --timeout 300 ARGS…` and waits until it
    /// says it waits for a live session: from then on the site is PENDING,
    /// held by that process (dropping it kills it).
    pub fn go_pending(&self, args: &[&str]) -> Proc {
        let mut all = vec!["offline", "on", "--timeout", "300"];
        all.extend_from_slice(args);
        let mut p = self.spawn(&all);
        loop {
            let line = p.line();
            if line.starts_with("Active sessions detected") {
                return p;
            }
            assert!(
                !line.starts_with("Status:"),
                "`mysite {}` did not wait for a session: {line:?}",
                all.join(" ")
            );
        }
    }
}

/// A running `mysite runserver`; killed when dropped.
#[derive(Debug)]
pub struct Server {
    proc: Proc,
    addr: std::net::SocketAddr,
}

impl Server {
    /// Where it listens.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Stops it as an operator would (SIGTERM: a graceful shutdown) and
    /// returns how it ended (within the hang guard).
    pub fn stop(self) -> Outcome {
        send_signal(self.proc.pid(), rustix::process::Signal::TERM);
        self.proc.finish()
    }

    /// `GET path` with `headers`, from 127.0.0.1 (no redirect followed).
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        http_get(self.addr, path, headers)
    }

    /// `POST path` with `headers` and no body.
    pub fn post(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        http_post(self.addr, path, headers)
    }

    /// `GET path` with `headers` from the local address `from` (say
    /// 127.0.0.2), over a plain socket.
    pub fn get_from(&self, from: std::net::IpAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
        raw_get(self.addr, Some(from), path, headers)
    }

    /// Polls `GET path` until `done` holds for the reply, and returns it;
    /// fails the test after the hang guard.
    pub fn get_until(
        &self,
        what: &str,
        path: &str,
        headers: &[(&str, &str)],
        done: impl Fn(&Reply) -> bool,
    ) -> Reply {
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            let r = self.get(path, headers);
            if done(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "still not {what} after {HANG_GUARD:?}; GET {path} answers {r}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// An HTTP response, as the tests look at it.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The headers, names lowercase, in order.
    pub headers: Vec<(String, String)>,
    /// The body (lossy UTF-8).
    pub body: String,
}

impl Reply {
    /// The first header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    /// Every header `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The `Set-Cookie` header that sets cookie `name`.
    pub fn set_cookie(&self, name: &str) -> Option<&str> {
        self.all("set-cookie")
            .into_iter()
            .find(|c| c.split_once('=').is_some_and(|(n, _)| n.trim() == name))
    }

    /// The value `Set-Cookie` gives cookie `name`.
    pub fn cookie_value(&self, name: &str) -> Option<String> {
        let c = self.set_cookie(name)?;
        let (_, rest) = c.split_once('=')?;
        Some(rest.split(';').next().unwrap_or("").trim().to_owned())
    }

    /// The body as JSON; fails the test if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self}"))
    }

    /// Whether this is mysite's home page, served by the app (`<h1>mysite</h1>`).
    pub fn is_home_page(&self) -> bool {
        self.status == 200 && self.body.contains("<h1>mysite</h1>")
    }

    /// Whether the page shows the maintenance banner (`id="banner"`).
    pub fn has_banner(&self) -> bool {
        self.body.contains("id=\"banner\"")
    }

    /// Asserts this is the app's home page.
    pub fn assert_home_page(&self, context: &str) {
        assert!(self.is_home_page(), "{context}: not mysite's page: {self}");
    }

    /// Asserts the maintenance layer turned this request away as `how`
    /// says: `Cache-Control: no-store`; `Retry-After` exactly `retry_after`
    /// on a 503 (absent when `None`, never empty); no page of the app.
    pub fn assert_turned_away(&self, how: TurnedAway, retry_after: Option<&str>, context: &str) {
        let ct = self.header("content-type").unwrap_or("");
        match how {
            TurnedAway::Redirect => {
                assert_eq!(self.status, 303, "{context}: not a 303: {self}");
                assert_eq!(
                    self.header("location"),
                    Some("/maintenance.html"),
                    "{context}: not sent to the maintenance page: {self}"
                );
            }
            TurnedAway::Unavailable => {
                assert_eq!(self.status, 503, "{context}: not a 503: {self}");
                assert!(ct.starts_with("text/html"), "{context}: not HTML: {self}");
                assert!(
                    self.body.contains("Down for maintenance"),
                    "{context}: no maintenance page: {self}"
                );
            }
            TurnedAway::Json => {
                assert_eq!(self.status, 503, "{context}: not a 503: {self}");
                assert!(
                    ct.starts_with("application/json"),
                    "{context}: not JSON: {self}"
                );
                assert_eq!(self.json()["error"], "maintenance", "{context}: {self}");
            }
        }
        assert_eq!(
            self.all("cache-control"),
            ["no-store"],
            "{context}: a turned-away response must not be cached: {self}"
        );
        let retry = self.all("retry-after");
        for v in &retry {
            assert!(
                !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()),
                "{context}: invalid Retry-After {v:?}: {self}"
            );
        }
        if self.status == 503 {
            let want: Vec<&str> = retry_after.into_iter().collect();
            assert_eq!(retry, want, "{context}: Retry-After: {self}");
        }
        assert!(
            !self.body.contains("<h1>mysite</h1>"),
            "{context}: the app's page leaked: {self}"
        );
        assert!(
            self.set_cookie("sessionid").is_none(),
            "{context}: a turned-away request got a session: {self}"
        );
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        for (n, v) in &self.headers {
            write!(f, "\n  {n}: {v}")?;
        }
        let body: String = self.body.chars().take(600).collect();
        write!(f, "\n  body: {body:?}")
    }
}

/// How the maintenance layer turns a request away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnedAway {
    /// `303 See Other` to `/maintenance.html`.
    Redirect,
    /// `503` with an HTML maintenance page.
    Unavailable,
    /// `503` with a JSON body (API clients).
    Json,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(HANG_GUARD))
        .build()
        .into()
}

fn reply_of(res: Result<ureq::http::Response<ureq::Body>, ureq::Error>, what: &str) -> Reply {
    let mut res = res.unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = res.status().as_u16();
    let headers = res
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = res
        .body_mut()
        .read_to_vec()
        .unwrap_or_else(|e| panic!("{what}: reading the body: {e}"));
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// `GET http://ADDR/PATH` with `headers`, through a real HTTP client that
/// follows no redirect, sends no cookie of its own and uses no proxy.
pub fn http_get(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = agent().get(format!("http://{addr}{path}"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    reply_of(req.call(), &format!("GET http://{addr}{path}"))
}

/// `POST http://ADDR/PATH` with `headers` and an empty body.
pub fn http_post(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = agent().post(format!("http://{addr}{path}"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    reply_of(req.send_empty(), &format!("POST http://{addr}{path}"))
}

/// Sends `request` (raw bytes: a whole HTTP/1.1 request that asks for
/// `Connection: close`) to `to` over a plain socket bound to local address
/// `from` when given (on Linux all of 127.0.0.0/8 is local), and reads the
/// response to the end.
pub fn raw_exchange(
    to: std::net::SocketAddr,
    from: Option<std::net::IpAddr>,
    request: &[u8],
) -> std::io::Result<Reply> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM,
        None,
    )?;
    if let Some(ip) = from {
        socket.bind(&std::net::SocketAddr::new(ip, 0).into())?;
    }
    socket.connect_timeout(&to.into(), HANG_GUARD)?;
    let mut stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(HANG_GUARD))?;
    stream.set_write_timeout(Some(HANG_GUARD))?;
    stream.write_all(request)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_reply(&raw).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not an HTTP response: {:?}", String::from_utf8_lossy(&raw)),
        )
    })
}

fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n")?;
            let size_text = String::from_utf8_lossy(&rest[..eol]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            rest = &rest[eol + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
        body = out;
    }
    Some(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// `METHOD PATH` (no body) with `headers` to `to` from local address
/// `from`, over a plain socket (see [`raw_exchange`]); fails the test on an
/// I/O error.
pub fn raw_request(
    to: std::net::SocketAddr,
    from: Option<std::net::IpAddr>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n");
    if method == "POST" {
        req.push_str("Content-Length: 0\r\n");
    }
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    raw_exchange(to, from, req.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {path} from {from:?} to {to}: {e}"))
}

/// `GET PATH` with `headers` to `to` from local address `from` (see
/// [`raw_request`]).
pub fn raw_get(
    to: std::net::SocketAddr,
    from: Option<std::net::IpAddr>,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    raw_request(to, from, "GET", path, headers)
}

/// Calls `probe` until it returns something, and returns that; fails the
/// test, naming `what`, after the hang guard. For changes another process
/// makes that a server sees within its refresh interval: a hang guard, not
/// a measure of that interval.
pub fn poll_until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "still not {what} after {HANG_GUARD:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for a server that
/// cannot be told to pick its own, such as nginx: retry when it is taken).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Starts `nginx` (the binary at `exe`) with `dir/nginx.conf`, its prefix
/// `dir` and its error log at `error_log`, and waits until its master has
/// written its pid file (it listens). `None` when the port was taken (try
/// another while `attempt` < 20); any other failure fails the test with
/// the error log.
pub fn start_nginx(exe: &str, dir: &Path, error_log: &Path, attempt: usize) -> Option<Proc> {
    let _ = std::fs::remove_file(dir.join("nginx.pid"));
    let mut cmd = Command::new(exe);
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(error_log)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut proc = Proc::spawn(cmd);
    // The master writes its pid file once it listens; it exits when it
    // cannot bind.
    let started = poll_until("nginx listening or exited", || {
        let pid = std::fs::read_to_string(dir.join("nginx.pid")).ok();
        if pid.is_some_and(|p| p.trim() == proc.pid().to_string()) {
            Some(true)
        } else if !proc.is_running() {
            Some(false)
        } else {
            None
        }
    });
    if started {
        return Some(proc);
    }
    let out = proc.finish();
    let log = std::fs::read_to_string(error_log).unwrap_or_default();
    assert!(
        log.contains("Address already in use") && attempt < 20,
        "nginx did not start: {out}\nerror.log:\n{log}"
    );
    None
}

/// Asserts `out` exited with `code`, printed exactly `stdout` and nothing
/// on stderr.
#[track_caller]
pub fn assert_exact(out: &Outcome, code: i32, stdout: &[&str]) {
    assert_eq!(out.code(), Some(code), "{out}");
    assert_eq!(out.stdout, stdout, "{out}");
    assert_eq!(out.stderr, "", "{out}");
}

/// A tiny tmpfs for one test — a disk that fills up — mounted by root and
/// unmounted when dropped.
#[derive(Debug)]
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `pages` memory pages (16: 64 KiB on most machines,
    /// `mount -t tmpfs -o nr_blocks=16`) at `path`, created, mode 0755. When not root, or when the
    /// mount is refused (a container without `CAP_SYS_ADMIN`), says so on
    /// stderr (visible in the test's output) and returns `None`, and the
    /// test skips.
    pub fn mount(test: &str, path: &Path, pages: u64) -> Option<Tmpfs> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIPPED {test}: it mounts a tiny tmpfs to fill it up, which needs root");
            return None;
        }
        std::fs::create_dir_all(path).expect("create the mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("nr_blocks={pages},mode=0755"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .expect("run mount");
        if !out.status.success() {
            eprintln!(
                "SKIPPED {test}: root cannot mount a tmpfs here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its free pages (`statvfs`: tmpfs counts in pages).
    pub fn free_pages(&self) -> u64 {
        rustix::fs::statvfs(&self.path)
            .expect("statvfs the tmpfs")
            .f_bavail
    }

    /// The size of its pages, the unit it allocates in.
    pub fn page_size(&self) -> u64 {
        rustix::fs::statvfs(&self.path)
            .expect("statvfs the tmpfs")
            .f_bsize
    }

    /// Fills it with the file `name` until no page is left (asserted);
    /// returns the file's path.
    pub fn fill(&self, name: &str) -> PathBuf {
        let path = self.path.join(name);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("create the filler");
        let chunk = vec![0xa5u8; self.page_size() as usize];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("fill {}: {e}", path.display()),
            }
        }
        assert_eq!(self.free_pages(), 0, "{} is full", self.path.display());
        path
    }

    /// Frees exactly `pages` pages of the filler at `path` (asserted).
    pub fn free(&self, path: &Path, pages: u64) {
        let before = self.free_pages();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open the filler");
        let len = f.metadata().expect("stat the filler").len();
        let page = self.page_size();
        f.set_len((len - len % page).saturating_sub(pages * page))
            .expect("truncate the filler");
        assert_eq!(self.free_pages(), before + pages, "freed {pages} page(s)");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still has a file open there: detach it now, the
            // kernel frees it when the last user goes.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// An `LD_PRELOAD` library that shifts this process's wall clock
/// (`CLOCK_REALTIME` through `clock_gettime`, `gettimeofday`, `time`) by
/// `$CLOCK_SHIFT_SECS` seconds, and no other clock: one process's clock
/// step. Compiled into `dir` with the system's C compiler; when there is
/// none, says so on stderr and returns `None`, and the test skips. Rust's
/// `SystemTime::now` calls glibc's `clock_gettime`, which the library
/// replaces; a test checks that the shift shows.
pub fn clock_shim(test: &str, dir: &Path) -> Option<PathBuf> {
    const SOURCE: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static long long shift(void) {
    const char *s = getenv("CLOCK_SHIFT_SECS");
    return s ? atoll(s) : 0;
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    int (*real)(clockid_t, struct timespec *) =
        (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    int rc = real(id, ts);
    if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE))
        ts->tv_sec += shift();
    return rc;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
    int (*real)(struct timeval *restrict, void *restrict) =
        (int (*)(struct timeval *restrict, void *restrict))dlsym(RTLD_NEXT, "gettimeofday");
    int rc = real(tv, tz);
    if (rc == 0 && tv)
        tv->tv_sec += shift();
    return rc;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out)
        *out = ts.tv_sec;
    return ts.tv_sec;
}
"#;
    let source = dir.join("clock-shim.c");
    let lib = dir.join("clock-shim.so");
    std::fs::write(&source, SOURCE).expect("write the shim's source");
    let out = match Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&lib)
        .arg(&source)
        .arg("-ldl")
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("SKIPPED {test}: it builds an LD_PRELOAD clock shim with `cc`: {e}");
            return None;
        }
    };
    assert!(
        out.status.success(),
        "cc failed on the clock shim: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(lib)
}
