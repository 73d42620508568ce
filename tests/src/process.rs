//! Processes a test spawns: reading a child's stdout line by line with a
//! hang guard, how it ended, the environment a site's binary runs in, and
//! a shifted wall clock for one process.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::wait::HANG_GUARD;

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
    /// What it has written on stderr so far.
    stderr_so_far: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
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
        let stderr_so_far = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let so_far = std::sync::Arc::clone(&stderr_so_far);
        let stderr = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            loop {
                match err.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => so_far
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&chunk[..n]),
                }
            }
            let buf = so_far.lock().unwrap_or_else(|e| e.into_inner());
            String::from_utf8_lossy(&buf).into_owned()
        });
        Proc {
            child,
            stdin,
            lines,
            stdout: Some(stdout),
            stderr: Some(stderr),
            stderr_so_far,
            status: None,
        }
    }

    /// What it has written on stderr so far (a server's log while it
    /// runs).
    pub fn stderr_so_far(&self) -> String {
        let buf = self.stderr_so_far.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buf).into_owned()
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

/// Asserts `out` exited with `code`, printed exactly `stdout` and nothing
/// on stderr.
#[track_caller]
pub fn assert_exact(out: &Outcome, code: i32, stdout: &[&str]) {
    assert_eq!(out.code(), Some(code), "{out}");
    assert_eq!(out.stdout, stdout, "{out}");
    assert_eq!(out.stderr, "", "{out}");
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
