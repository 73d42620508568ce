//! `task-holder`: a small program the multi-process tests run as real
//! processes. It holds tasks and their locks through maintenance-core's
//! public API only, the way any Rust program using `CommandTask` would, and
//! reports on stdout, one line at a time, so a test can tell what happened:
//!
//! ```text
//! task-holder --state-dir DIR ACTION [OPTIONS]
//!
//! hold NAME          start a task; print `started <id> <pid>`; hold it until
//!                    stdin closes (or the process is killed)
//! run NAME           start a task; print `started <id> <pid>`; end it at once
//! spawn-child NAME   start a task, hand its locks to a child (this program,
//!                    `child`), print `started <id> <pid>` and `child <pid>`;
//!                    then, by --then: `hold` keeps the guard until stdin
//!                    closes, `drop` drops the guard, prints `dropped` and
//!                    lives on until stdin closes, `exit` ends at once
//! child              hold nothing of its own; wait until stdin closes
//! list               print the live tasks as one JSON array
//! reap               print `reaped <n>`
//! mode               print `mode <MODE>`
//! set-mode online|offline   force the mode; print `mode <MODE>`
//! exec-closed PROG ARGS…   close every descriptor above 2, then exec PROG
//!                    (as Python's `subprocess` does to its children): the
//!                    program keeps the environment and nothing else of a
//!                    task; everything after PROG is its own
//! churn NAME         start and end a task --rounds times, each with a command
//!                    line of another length (`NAME <pid> <round> <len>
//!                    x…`), checking after each start that a listing shows
//!                    it once, with that command line (unless --unchecked:
//!                    as fast as it can); print `ok <rounds>`, or
//!                    `violation …` (exit 3)
//! check-loop         list the live tasks --rounds times, or until --flag
//!                    exists; print `violation …` (exit 3) if a listing holds
//!                    an unreadable task, one id twice, or a task whose
//!                    command line `churn` wrote is not whole, else
//!                    `ok <rounds made>`; says `checking` after its first
//! probe-loop         list tasks (and probe --dead-id by asking whether it is
//!                    live) over and
//!                    over; once --flag exists, --after more rounds; print
//!                    `violation <id>` (exit 3) if a round begun after the
//!                    flag existed reports --dead-id live, else
//!                    `ok <rounds> <rounds after the flag>`; says `probing`
//!                    after its first round
//!
//! NAME may be given as --name-json '"a\u0000b"' instead (argv cannot
//! carry a NUL byte).
//!
//! --database-url URL --site NAME   keep the state on the PostgreSQL server
//!                         URL as site NAME instead of in --state-dir
//! --concurrent            the concurrent policy (default: single)
//! --lock-timeout-ms N     how long a single instance waits (default 0)
//! --ignore-maintenance    run even while PENDING/OFFLINE
//! --join-json TOKEN       join the task TOKEN (a JSON string) names
//! --retry                 when refused as already running, try again until in;
//!                         `started` then carries `refusals=<n>`
//! --barrier FIFO          print `ready`, then open FIFO for reading (blocks
//!                         until the test opens it for writing), then start
//! --announce              print `starting` just before the first start
//!                         attempt (a waiter says it is about to wait)
//! --rounds N              how many rounds `churn` and `check-loop` make
//! --unchecked             `churn` lists nothing
//! ```
//!
//! A refusal prints `refused <exit code> <message>` and exits with that code
//! (75); any other error prints `error <exit code> <message>`, also on
//! stderr, and exits with its code. Usage errors exit 2.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use maintenance_core::backend::ModeChange;
use maintenance_core::policy::{Instances, Policy};
use maintenance_core::task::{JoinToken, Membership};
use maintenance_core::{Backend, CommandTask, Error, Refusal, SystemClock, TaskOptions};

/// What `spawn-child` does once the child runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    Hold,
    Drop,
    Exit,
}

#[derive(Debug)]
struct Args {
    state_dir: Option<PathBuf>,
    database_url: Option<String>,
    site: Option<String>,
    action: String,
    positional: Vec<String>,
    name_json: Option<String>,
    concurrent: bool,
    lock_timeout: Duration,
    ignore_maintenance: bool,
    join_json: Option<String>,
    retry: bool,
    barrier: Option<PathBuf>,
    announce: bool,
    then: Then,
    dead_id: Option<String>,
    flag: Option<PathBuf>,
    after: u64,
    rounds: u64,
    unchecked: bool,
}

/// Why this run ends early, with its exit code.
struct Exit(u8);

fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// Reports a core error the way the tests read it; returns its exit code.
fn report(e: &Error) -> Exit {
    let code = e.exit_code();
    let kind = if matches!(e, Error::Refused(_)) {
        "refused"
    } else {
        "error"
    };
    say(&format!("{kind} {code} {}", one_line(&e.to_string())));
    eprintln!("task-holder: {e}");
    Exit(code)
}

fn usage(message: &str) -> Exit {
    eprintln!("task-holder: {message} (see the top of tests/src/bin/task-holder.rs)");
    Exit(2)
}

fn parse(mut raw: impl Iterator<Item = String>) -> Result<Args, Exit> {
    let mut args = Args {
        state_dir: None,
        database_url: None,
        site: None,
        action: String::new(),
        positional: Vec::new(),
        name_json: None,
        concurrent: false,
        lock_timeout: Duration::ZERO,
        ignore_maintenance: false,
        join_json: None,
        retry: false,
        barrier: None,
        announce: false,
        then: Then::Hold,
        dead_id: None,
        flag: None,
        after: 1000,
        rounds: 100,
        unchecked: false,
    };
    let value = |raw: &mut dyn Iterator<Item = String>, flag: &str| {
        raw.next()
            .ok_or_else(|| usage(&format!("{flag} needs a value")))
    };
    while let Some(arg) = raw.next() {
        if args.action == "exec-closed" {
            // The program's own command line, untouched.
            args.positional.push(arg);
            continue;
        }
        match arg.as_str() {
            "--state-dir" => args.state_dir = Some(value(&mut raw, &arg)?.into()),
            "--database-url" => args.database_url = Some(value(&mut raw, &arg)?),
            "--site" => args.site = Some(value(&mut raw, &arg)?),
            "--name-json" => args.name_json = Some(value(&mut raw, &arg)?),
            "--concurrent" => args.concurrent = true,
            "--lock-timeout-ms" => {
                let ms = value(&mut raw, &arg)?;
                let ms: u64 = ms
                    .parse()
                    .map_err(|_| usage(&format!("bad --lock-timeout-ms {ms:?}")))?;
                args.lock_timeout = Duration::from_millis(ms);
            }
            "--ignore-maintenance" => args.ignore_maintenance = true,
            "--join-json" => args.join_json = Some(value(&mut raw, &arg)?),
            "--retry" => args.retry = true,
            "--announce" => args.announce = true,
            "--unchecked" => args.unchecked = true,
            "--barrier" => args.barrier = Some(value(&mut raw, &arg)?.into()),
            "--then" => {
                args.then = match value(&mut raw, &arg)?.as_str() {
                    "hold" => Then::Hold,
                    "drop" => Then::Drop,
                    "exit" => Then::Exit,
                    other => return Err(usage(&format!("bad --then {other:?}"))),
                }
            }
            "--dead-id" => args.dead_id = Some(value(&mut raw, &arg)?),
            "--flag" => args.flag = Some(value(&mut raw, &arg)?.into()),
            "--after" => {
                let n = value(&mut raw, &arg)?;
                args.after = n
                    .parse()
                    .map_err(|_| usage(&format!("bad --after {n:?}")))?;
            }
            "--rounds" => {
                let n = value(&mut raw, &arg)?;
                args.rounds = n
                    .parse()
                    .map_err(|_| usage(&format!("bad --rounds {n:?}")))?;
            }
            flag if flag.starts_with("--") => {
                return Err(usage(&format!("unknown option {flag}")));
            }
            _ if args.action.is_empty() => args.action = arg,
            _ => args.positional.push(arg),
        }
    }
    if args.action.is_empty() {
        return Err(usage("no action given"));
    }
    Ok(args)
}

impl Args {
    fn name(&self) -> Result<String, Exit> {
        match (&self.name_json, self.positional.first()) {
            (Some(json), _) => serde_json::from_str(json)
                .map_err(|e| usage(&format!("--name-json is not a JSON string: {e}"))),
            (None, Some(name)) => Ok(name.clone()),
            (None, None) => Err(usage("no command name given")),
        }
    }

    fn backend(&self) -> Result<Arc<dyn Backend>, Exit> {
        let dir = self
            .state_dir
            .as_ref()
            .ok_or_else(|| usage("--state-dir is required"))?;
        let config =
            manage_tests::helper_config(dir, self.database_url.as_deref(), self.site.as_deref())
                .map_err(|e| usage(&e))?;
        maintenance_core::backend::open(&config, SystemClock::shared()).map_err(|e| report(&e))
    }

    fn options(&self, backend: &Arc<dyn Backend>) -> Result<TaskOptions, Exit> {
        let join = match &self.join_json {
            None => None,
            Some(json) => Some(
                serde_json::from_str::<String>(json)
                    .map_err(|e| usage(&format!("--join-json is not a JSON string: {e}")))?,
            ),
        };
        let instances = if self.concurrent {
            Instances::Concurrent
        } else {
            Instances::Single
        };
        Ok(TaskOptions::new(Arc::clone(backend))
            .argv(std::env::args())
            .policy(Policy::DEFAULT.instances(instances))
            .lock_timeout(self.lock_timeout)
            .ignore_maintenance(self.ignore_maintenance)
            .join(join))
    }

    /// Waits at the barrier, if any: says `ready`, then blocks opening the
    /// FIFO until the test opens it for writing, so every process racing
    /// starts at once.
    fn barrier(&self) -> Result<(), Exit> {
        if let Some(fifo) = &self.barrier {
            say("ready");
            std::fs::File::open(fifo).map_err(|e| {
                eprintln!("task-holder: cannot open barrier {}: {e}", fifo.display());
                Exit(1)
            })?;
        }
        Ok(())
    }

    /// Starts the task, retrying while it is already running if asked.
    fn start(&self, backend: &Arc<dyn Backend>) -> Result<(CommandTask, u64), Exit> {
        let name = self.name()?;
        self.barrier()?;
        if self.announce {
            say("starting");
        }
        let mut refusals = 0u64;
        loop {
            match CommandTask::start(&name, self.options(backend)?) {
                Ok(task) => return Ok((task, refusals)),
                Err(Error::Refused(Refusal::AlreadyRunning { .. })) if self.retry => {
                    refusals += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(report(&e)),
            }
        }
    }
}

fn started(task: &CommandTask, refusals: u64, retry: bool) {
    let mut line = format!("started {} {}", task.record().id, std::process::id());
    if retry {
        line.push_str(&format!(" refusals={refusals}"));
    }
    say(&line);
}

/// Blocks until stdin closes: the test's way of ending a holder.
fn until_stdin_closes() {
    let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
}

fn act(args: &Args) -> Result<(), Exit> {
    match args.action.as_str() {
        "child" => {
            until_stdin_closes();
            Ok(())
        }
        "hold" | "run" => {
            let backend = args.backend()?;
            let (task, refusals) = args.start(&backend)?;
            started(&task, refusals, args.retry);
            if args.action == "hold" {
                until_stdin_closes();
            }
            drop(task);
            Ok(())
        }
        "spawn-child" => {
            let backend = args.backend()?;
            let (mut task, refusals) = args.start(&backend)?;
            let exe = std::env::current_exe().map_err(|e| {
                eprintln!("task-holder: cannot find myself: {e}");
                Exit(1)
            })?;
            let mut cmd = Command::new(exe);
            cmd.arg("child")
                .stdin(Stdio::inherit())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            task.prepare_child(&mut cmd);
            let child = cmd.spawn().map_err(|e| {
                eprintln!("task-holder: cannot spawn the child: {e}");
                Exit(1)
            })?;
            started(&task, refusals, args.retry);
            say(&format!("child {}", child.id()));
            match args.then {
                Then::Hold => until_stdin_closes(),
                Then::Drop => {
                    drop(task);
                    say("dropped");
                    until_stdin_closes();
                }
                Then::Exit => {}
            }
            Ok(())
        }
        "list" => {
            let tasks = args.backend()?.tasks().map_err(|e| report(&e))?;
            let json = serde_json::to_string(&tasks).map_err(|e| {
                eprintln!("task-holder: {e}");
                Exit(1)
            })?;
            say(&json);
            Ok(())
        }
        "reap" => {
            let n = args.backend()?.reap().map_err(|e| report(&e))?;
            say(&format!("reaped {n}"));
            Ok(())
        }
        "mode" => {
            let view = args.backend()?.mode().map_err(|e| report(&e))?;
            say(&format!("mode {}", view.mode));
            Ok(())
        }
        "set-mode" => {
            let backend = args.backend()?;
            let change = ModeChange::by_this_process();
            let record = match args.positional.first().map(String::as_str) {
                Some("online") => backend.go_online(&change),
                Some("offline") => backend.force_offline(&change),
                _ => return Err(usage("set-mode needs online or offline")),
            }
            .map_err(|e| report(&e))?;
            say(&format!("mode {}", record.mode));
            Ok(())
        }
        "churn" => churn(args),
        "check-loop" => check_loop(args),
        "probe-loop" => probe_loop(args),
        "exec-closed" => exec_closed(&args.positional),
        other => Err(usage(&format!("unknown action {other:?}"))),
    }
}

/// Closes every descriptor above 2 and execs `argv`; returns only when the
/// exec failed.
fn exec_closed(argv: &[String]) -> Result<(), Exit> {
    use std::os::unix::process::CommandExt;
    let Some((program, rest)) = argv.split_first() else {
        return Err(usage("exec-closed needs a program"));
    };
    let max = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1024)
        .min(65_536) as i32;
    for fd in 3..max {
        // SAFETY: this process owns no descriptor above 2 that anything
        // still uses: it is about to exec, and closing an unused number
        // only fails with EBADF.
        unsafe {
            libc::close(fd);
        }
    }
    let err = Command::new(program).args(rest).exec();
    eprintln!("task-holder: cannot exec {program}: {err}");
    Err(Exit(1))
}

/// The command line of `churn`'s round `round`: its length varies from
/// round to round, so a task file reused from a longer or a shorter record
/// is rewritten both ways.
fn churn_argv(name: &str, round: u64) -> Vec<String> {
    let len = (round * 397 % 1500) as usize;
    vec![
        name.to_owned(),
        std::process::id().to_string(),
        round.to_string(),
        len.to_string(),
        "x".repeat(len),
    ]
}

/// Whether `argv` is a whole command line of `churn`'s, as its record says
/// it was started (`pid`).
fn churn_argv_is_whole(argv: &[String], pid: u32) -> bool {
    match argv {
        [_, p, round, len, xs] => {
            p.parse() == Ok(pid)
                && round.parse::<u64>().is_ok()
                && len.parse() == Ok(xs.len())
                && xs.bytes().all(|b| b == b'x')
        }
        _ => false,
    }
}

/// Starts and ends a task `--rounds` times (see `churn_argv`), checking
/// after each start that a listing shows it once, as it was started.
fn churn(args: &Args) -> Result<(), Exit> {
    let backend = args.backend()?;
    let name = args.name()?;
    let policy = Policy::DEFAULT.instances(Instances::Concurrent);
    for round in 0..args.rounds {
        let argv = churn_argv(&name, round);
        let options = TaskOptions::new(Arc::clone(&backend))
            .argv(argv.clone())
            .policy(policy);
        let task = CommandTask::start(&name, options).map_err(|e| report(&e))?;
        if args.unchecked {
            continue;
        }
        let id = task.record().id.clone();
        let listed = backend.tasks().map_err(|e| report(&e))?;
        let mine: Vec<_> = listed.iter().filter(|t| t.id == id).collect();
        if mine.len() != 1 || mine[0].argv != argv {
            say(&format!(
                "violation round {round}: task {id} listed {} time(s): {mine:?}",
                mine.len()
            ));
            return Err(Exit(3));
        }
        drop(task);
    }
    say(&format!("ok {}", args.rounds));
    Ok(())
}

/// Lists the live tasks `--rounds` times, or until `--flag` exists,
/// checking every listing is made of whole records, each task once.
fn check_loop(args: &Args) -> Result<(), Exit> {
    let backend = args.backend()?;
    let mut made = 0;
    for round in 0..args.rounds {
        if args.flag.as_ref().is_some_and(|f| f.exists()) {
            break;
        }
        made += 1;
        let listed = backend.tasks().map_err(|e| report(&e))?;
        let mut ids = std::collections::HashSet::new();
        for t in &listed {
            let whole = t.name != "churn" || churn_argv_is_whole(&t.argv, t.pid);
            if t.name.starts_with("(unreadable") || !whole || !ids.insert(t.id.as_str()) {
                say(&format!("violation round {round}: {t:?} in {listed:?}"));
                return Err(Exit(3));
            }
        }
        if round == 0 {
            say("checking");
        }
    }
    say(&format!("ok {made}"));
    Ok(())
}

/// Lists tasks over and over, checking that the task `--dead-id` names is
/// never reported live by a round that began after `--flag` existed (the
/// test creates the flag once that task's last process is dead).
fn probe_loop(args: &Args) -> Result<(), Exit> {
    let backend = args.backend()?;
    let dead = args
        .dead_id
        .clone()
        .ok_or_else(|| usage("probe-loop needs --dead-id"))?;
    let mut rounds_after = 0u64;
    let mut rounds = 0u64;
    loop {
        let flagged = args.flag.as_ref().is_none_or(|f| f.exists());
        let listed = backend.tasks().map_err(|e| report(&e))?;
        let joined = backend.membership(&JoinToken::parse(&dead));
        rounds += 1;
        if rounds == 1 {
            say("probing");
        }
        if !flagged {
            continue;
        }
        if listed.iter().any(|t| t.id == dead) {
            say(&format!("violation {dead} listed live in round {rounds}"));
            return Err(Exit(3));
        }
        match joined {
            Ok(Membership::Gone) => {}
            Ok(_) => {
                say(&format!("violation {dead} seen live in round {rounds}"));
                return Err(Exit(3));
            }
            Err(e) => return Err(report(&e)),
        }
        rounds_after += 1;
        if rounds_after >= args.after {
            break;
        }
    }
    say(&format!("ok {rounds} {rounds_after}"));
    Ok(())
}

fn main() -> ExitCode {
    let mut raw = Vec::new();
    // The name may arrive as bytes that are not UTF-8: reject those plainly.
    for arg in std::env::args_os().skip(1) {
        match arg.into_string() {
            Ok(s) => raw.push(s),
            Err(bad) => {
                return ExitCode::from(usage(&format!("argument {bad:?} is not UTF-8")).0);
            }
        }
    }
    let outcome = parse(raw.into_iter()).and_then(|args| act(&args));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Exit(code)) => ExitCode::from(code),
    }
}
