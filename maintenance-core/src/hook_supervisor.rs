//! Running hooks ([`Hooks`], configured in `hooks.rs`): a detached
//! supervisor process of their own (the binary itself again, started with
//! [`SUPERVISOR_ARG`]) runs each in its own process group with a clean
//! environment, kills it once the timeout passes, and reports a failure on
//! the caller's stderr while the caller lives and in the history always —
//! the one part of hooks that opens the backend, so it sits above it.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{Config, Overrides};
use crate::history::{EventKind, HistoryEntry, HookFailure};
use crate::hooks::{Hooks, Job, JobBase, SUPERVISOR_ARG};

/// Whether this process can start a supervisor: its `main` calls
/// [`supervise_if_asked`] first.
static SUPERVISOR_ENTRY: AtomicBool = AtomicBool::new(false);

/// The environment variables a hook (and its supervisor) keeps from the
/// caller's; everything else is dropped.
const KEPT_ENV: &[&str] = &[
    "PATH", "HOME", "LANG", "LANGUAGE", "TZ", "USER", "LOGNAME", "TMPDIR",
];

/// `PATH` when the caller has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The most of a hook's stderr a report keeps (its end).
const STDERR_TAIL: usize = 2048;

/// How often a supervisor looks whether a hook has exited.
const POLL: Duration = Duration::from_millis(20);

impl Hooks {
    /// Runs every hook for `entry`, detached: returns at once, whatever
    /// the hooks do. Nothing for an entry of a failed hook. See the
    /// module's documentation.
    pub fn run_detached(&self, entry: &HistoryEntry) {
        if !entry.runs_hooks() {
            return;
        }
        if let Some(problem) = &self.refused {
            eprintln!("warning: {problem}");
            return;
        }
        let Some(base) = &self.job else { return };
        let job = Job {
            base: (**base).clone(),
            entry: entry.clone(),
        };
        if SUPERVISOR_ENTRY.load(Ordering::Relaxed) {
            match spawn_supervisor(&job) {
                Ok(()) => return,
                Err(e) => eprintln!(
                    "warning: cannot start the hooks' supervisor ({e}); the hooks run in this \
                     process instead, and end with it"
                ),
            }
        }
        let spawned = std::thread::Builder::new()
            .name("manage-hooks".into())
            .spawn(move || supervise(&job, &mut |line| eprintln!("warning: {line}")));
        if let Err(e) = spawned {
            eprintln!("warning: the hooks were not run: cannot start a thread for them: {e}");
        }
    }
}

/// Runs the hooks of `config` for `entry`, detached: [`Hooks::from_config`]
/// then [`Hooks::run_detached`].
pub fn run_detached(config: &Config, entry: &HistoryEntry) {
    Hooks::from_config(config).run_detached(entry);
}

/// For a binary's `main`, first thing: when `argv` asks for the hooks'
/// supervisor ([`SUPERVISOR_ARG`], as [`Hooks::run_detached`] starts it),
/// runs it and returns its exit code; otherwise notes that this binary can
/// start one and returns `None` at once.
pub fn supervise_if_asked(argv: &[OsString]) -> Option<u8> {
    if argv.get(1).map(OsString::as_os_str) != Some(OsStr::new(SUPERVISOR_ARG)) {
        SUPERVISOR_ENTRY.store(true, Ordering::Relaxed);
        return None;
    }
    Some(run_supervisor())
}

/// The supervisor's run: reads its job on stdin and supervises it. Kept
/// out of every `main` (cold), so a runner's start-up neither maps its
/// code nor makes room on the stack for it.
#[cold]
#[inline(never)]
fn run_supervisor() -> u8 {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().take(16 << 20).read_to_end(&mut input) {
        eprintln!("error: the hooks' supervisor cannot read its job: {e}");
        return crate::exit::FAILURE;
    }
    let job: Job = match serde_json::from_slice(&input) {
        Ok(job) => job,
        Err(e) => {
            eprintln!(
                "error: the hooks' supervisor was given no job it can read ({e}); it is started \
                 by manage itself, never by hand"
            );
            return crate::exit::USAGE;
        }
    };
    let mut out = std::io::stdout();
    supervise(&job, &mut |line| {
        // The caller may be gone: its stderr then hears nothing, and the
        // history has the report.
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    });
    crate::exit::SUCCESS
}

/// Starts `/proc/self/exe --manage-hook-supervisor` (the binary itself) in
/// a session of its own with a clean environment, hands it `job`, and
/// returns; a thread prints its reports on stderr while this process lives,
/// and reaps it.
fn spawn_supervisor(job: &Job) -> std::io::Result<()> {
    let exe = if cfg!(target_os = "linux") {
        // The running binary, even if a deploy replaced its file since.
        PathBuf::from("/proc/self/exe")
    } else {
        std::env::current_exe()?
    };
    let json = serde_json::to_vec(job).map_err(std::io::Error::other)?;
    let mut cmd = Command::new(exe);
    cmd.arg0("manage-hooks")
        .arg(SUPERVISOR_ARG)
        .env_clear()
        .envs(clean_env())
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec the child only calls setsid(2), which
    // is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| rustix::process::setsid().map(drop).map_err(Into::into));
    }
    let mut child = cmd.spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // A job is small: the pipe takes it whole, and the supervisor reads
        // it first thing.
        stdin.write_all(&json)?;
    }
    let reports = child.stdout.take();
    let reaper = std::thread::Builder::new()
        .name("manage-hook-reports".into())
        .spawn(move || {
            if let Some(out) = reports {
                for line in std::io::BufReader::new(out).lines_lossy() {
                    eprintln!("warning: {line}");
                }
            }
            let _ = child.wait();
        });
    // Without the thread nobody reaps it while this process lives; it is
    // reaped once this process exits.
    drop(reaper);
    Ok(())
}

/// Lines of a reader, invalid UTF-8 replaced, until EOF or an error.
trait LinesLossy {
    fn lines_lossy(self) -> Box<dyn Iterator<Item = String>>;
}

impl<R: Read + 'static> LinesLossy for std::io::BufReader<R> {
    fn lines_lossy(mut self) -> Box<dyn Iterator<Item = String>> {
        Box::new(std::iter::from_fn(move || {
            let mut buf = Vec::new();
            match std::io::BufRead::read_until(&mut self, b'\n', &mut buf) {
                Ok(0) | Err(_) => None,
                Ok(_) => {
                    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        buf.pop();
                    }
                    Some(String::from_utf8_lossy(&buf).into_owned())
                }
            }
        }))
    }
}

/// The caller's environment, cut down to [`KEPT_ENV`] and `LC_*`, with a
/// `PATH` always.
fn clean_env() -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| {
            k.to_str()
                .is_some_and(|k| KEPT_ENV.contains(&k) || k.starts_with("LC_"))
        })
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env
}

/// The variables a hook learns the change from.
fn change_env(entry: &HistoryEntry) -> Vec<(&'static str, String)> {
    vec![
        ("MANAGE_EVENT", entry.kind.as_str().to_owned()),
        ("MANAGE_MODE", entry.to.as_str().to_owned()),
        ("MANAGE_PREVIOUS_MODE", entry.from.as_str().to_owned()),
        ("MANAGE_BY", entry.by.clone()),
        ("MANAGE_MESSAGE", entry.message.clone().unwrap_or_default()),
        (
            "MANAGE_SCHEDULED_AT",
            entry
                .schedule
                .as_ref()
                .map(|s| s.at.to_string())
                .unwrap_or_default(),
        ),
    ]
}

/// Runs every hook of `job` at once, each within the timeout, and reports
/// each failure through `report` and in the history.
fn supervise(job: &Job, report: &mut dyn FnMut(&str)) {
    let timeout = Duration::from_millis(job.base.timeout_ms);
    let line = serde_json::to_string(&job.entry).unwrap_or_default() + "\n";
    let env = clean_env();
    let runs: Vec<_> = job
        .base
        .programs
        .iter()
        .cloned()
        .map(|argv| {
            let (line, env, cwd, entry) = (
                line.clone(),
                env.clone(),
                job.base.cwd.clone(),
                job.entry.clone(),
            );
            std::thread::spawn(move || {
                let failure = run_one(&argv, &cwd, &env, &entry, &line, timeout);
                (argv, failure)
            })
        })
        .collect();
    let mut failures = Vec::new();
    for run in runs {
        match run.join() {
            Ok((_, None)) => {}
            Ok((program, Some((failure, stderr)))) => failures.push(HookFailure {
                program,
                failure,
                stderr,
                change_at: job.entry.at,
            }),
            Err(_) => report("a hook's supervising thread panicked"),
        }
    }
    if failures.is_empty() {
        return;
    }
    let backend = open_backend(&job.base);
    for failure in failures {
        let text = describe(&failure, &job.entry);
        let recorded = match &backend {
            Ok(b) => {
                let mut e = HistoryEntry::new(
                    EventKind::HookFailed,
                    job.entry.cause,
                    job.entry.from,
                    job.entry.to,
                    crate::clock::Timestamp::at(b.clock().now()),
                    text.clone(),
                );
                e.hook = Some(failure);
                match b.append_history(&e) {
                    Ok(_) => "recorded in the history".to_owned(),
                    Err(e) => format!("and it could not be recorded in the history: {e}"),
                }
            }
            Err(e) => format!("and it could not be recorded in the history: {e}"),
        };
        report(&format!("{text} ({recorded})"));
    }
}

/// `hook `/usr/local/bin/notify` for ONLINE → OFFLINE at …: exited with 3: <stderr>`.
fn describe(failure: &HookFailure, entry: &HistoryEntry) -> String {
    let mut text = format!(
        "hook `{}` for {} at {} {}",
        failure.program.join(" "),
        entry.change(),
        entry.at,
        failure.failure
    );
    if let Some(err) = &failure.stderr {
        let last = err.lines().last().unwrap_or_default();
        let last: String = last
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .take(200)
            .collect();
        if !last.is_empty() {
            text.push_str(": ");
            text.push_str(&last);
        }
    }
    text
}

fn open_backend(job: &JobBase) -> crate::Result<Arc<dyn crate::Backend>> {
    // The caller's `$MANAGE_DATABASE_URL`, which the clean environment
    // dropped: it wins over the file, as it did for the caller.
    let env = |k: &str| match (&job.database_url, k) {
        (Some(url), crate::config::ENV_DATABASE_URL) => Some(url.into()),
        _ => std::env::var_os(k),
    };
    let config = Config::load_from(
        &job.cwd,
        &env,
        &Overrides {
            config_file: job.config_file.clone(),
            state_dir: Some(job.state_dir.clone()),
            lock_timeout: None,
        },
    )?;
    crate::backend::open(&config, crate::clock::SystemClock::shared())
}

/// Runs one hook: its entry on stdin, killed with its process group once
/// `timeout` passes. `None` when it exited 0; otherwise what went wrong
/// and the end of its stderr.
fn run_one(
    argv: &[String],
    cwd: &Path,
    env: &[(OsString, OsString)],
    entry: &HistoryEntry,
    line: &str,
    timeout: Duration,
) -> Option<(String, Option<String>)> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_os_str(), v.as_os_str())))
        .envs(change_env(entry))
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Some((format!("could not start: {e}"), None)),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let line = line.to_owned();
        // A hook that never reads its stdin must not hold this up.
        std::thread::spawn(move || {
            let _ = stdin.write_all(line.as_bytes());
        });
    }
    let tail = Arc::new(Mutex::new(Vec::<u8>::new()));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    if let Some(mut err) = child.stderr.take() {
        let tail = Arc::clone(&tail);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                t.extend_from_slice(&buf[..n]);
                let excess = t.len().saturating_sub(STDERR_TAIL);
                t.drain(..excess);
            }
            let _ = done_tx.send(());
        });
    }
    let status = wait_or_kill(&mut child, timeout);
    // What it wrote until it ended; a leftover that keeps the pipe open is
    // not waited for long.
    let _ = done_rx.recv_timeout(Duration::from_secs(1));
    let stderr = {
        let t = tail.lock().unwrap_or_else(|e| e.into_inner());
        let s = String::from_utf8_lossy(&t).trim().to_owned();
        (!s.is_empty()).then_some(s)
    };
    let failure = match status {
        Waited::TimedOut => format!("timed out after {}s and was killed", timeout.as_secs_f64()),
        Waited::Exited(s) if s.success() => return None,
        Waited::Exited(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exited with {c}"),
            (None, Some(sig)) => format!("was killed by signal {sig}"),
            _ => format!("ended: {s}"),
        },
        Waited::Lost(e) => format!("could not be waited for: {e}"),
    };
    Some((failure, stderr))
}

enum Waited {
    Exited(std::process::ExitStatus),
    TimedOut,
    Lost(std::io::Error),
}

/// Waits for `child` up to `timeout`; then kills its process group (the
/// hook and what it started) and reaps it. The child is unreaped until
/// the kill, so its pid, and so its group's, cannot have been reused.
fn wait_or_kill(child: &mut Child, timeout: Duration) -> Waited {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Waited::Exited(s),
            Ok(None) => {}
            Err(e) => return Waited::Lost(e),
        }
        let now = Instant::now();
        if now >= deadline {
            if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            let _ = child.kill();
            let _ = child.wait();
            return Waited::TimedOut;
        }
        std::thread::sleep(POLL.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_learns_the_change_from_its_environment_and_nothing_secret() {
        let mut e = HistoryEntry::new(
            EventKind::Mode,
            crate::history::Cause::Force,
            crate::Mode::Online,
            crate::Mode::Offline,
            crate::Timestamp::EPOCH,
            "offline on --force",
        );
        e.message = Some("Back at 6".into());
        let env = change_env(&e);
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("MANAGE_MODE"), Some("OFFLINE"));
        assert_eq!(get("MANAGE_PREVIOUS_MODE"), Some("ONLINE"));
        assert_eq!(get("MANAGE_MESSAGE"), Some("Back at 6"));
        assert_eq!(get("MANAGE_SCHEDULED_AT"), Some(""));
        assert_eq!(get("MANAGE_EVENT"), Some("mode"));
        for (k, _) in clean_env() {
            let k = k.to_string_lossy().into_owned();
            assert!(
                KEPT_ENV.contains(&k.as_str()) || k.starts_with("LC_"),
                "{k}"
            );
        }
    }
}
