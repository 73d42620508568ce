//! External commands (`manage-<name>` on `PATH`): how one runs, tracked,
//! and keeps its task (I3). The child inherits the task's locks and gets
//! `MANAGE`, `MANAGE_STATE_DIR` and the task token, so a nested `$MANAGE
//! sub` joins the task.
//!
//! External commands never run by exec in place of the runner: on Linux
//! the runner forks a keeper ([`crate::keeper`]) that starts the command
//! and holds the task until the command and everything it left behind have
//! exited; the runner waits for the command alone, forwards SIGTERM, and
//! stays beside a drain-`stop` command to ask it to stop. Killing the
//! runner alone does not free the site: the keeper and the command hold the
//! task's locks. Without a keeper (untracked commands, systems other than
//! Linux) the command is spawned directly, the locks inherited.

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use maintenance_core::command::CallOptions;
use maintenance_core::policy::{Drain, Policy, Tracking};
use maintenance_core::{CommandTask, exit};

use crate::runtime::Runtime;
use crate::signals;

/// Runs an external command as a child, tracked: the child inherits the
/// task's locks and gets `MANAGE`, `MANAGE_STATE_DIR` and the task token.
/// On Linux a keeper between the runner and the command keeps whatever the
/// command leaves behind tracked ([`crate::keeper`]). Returns the child's
/// exit code, or 128+N if signal N killed it.
// Not inlined into dispatch: start-up maps only the code of the target
// it runs, and the stack holds only that target's frame.
#[inline(never)]
pub(crate) fn external(
    rt: &Runtime<'_>,
    name: &str,
    path: &Path,
    args: &[OsString],
    options: Option<CallOptions>,
    err: &mut dyn Write,
) -> u8 {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    if let Ok(me) = std::env::current_exe() {
        env.push(("MANAGE".into(), me.into()));
    }
    env.push((
        "MANAGE_STATE_DIR".into(),
        rt.config.state_dir.clone().into(),
    ));
    // A nested `$MANAGE sub` reads the same file (its database_url, site
    // and schema), wherever the command changed directory to.
    if rt.config.backend == maintenance_core::config::BackendKind::Postgres
        && let Some(file) = &rt.config.file
    {
        env.push((
            maintenance_core::config::ENV_CONFIG.into(),
            file.clone().into(),
        ));
    }
    let policy = rt.policy_of_external(name);
    let mut own_task = None;
    if rt.task.borrow().is_none() && policy.tracking == Tracking::Tracked {
        let argv: Vec<String> = std::iter::once(name.to_owned())
            .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect();
        let in_window = options.is_some_and(|o| o.in_window);
        match rt.start_task(name, policy, argv, in_window, err) {
            Ok(task) => own_task = Some(task),
            Err(code) => return code,
        }
    }
    let spawn = Spawning {
        name,
        path,
        args,
        env,
        policy,
        // A run of its own (or a nested run that joined with its own
        // record) watches the drain for itself; one nested inside a
        // registered command's task is watched by that command's run.
        owned: own_task.is_some(),
    };
    let mut current = rt.task.borrow_mut();
    // Nested inside a task this runner owns, the child inherits that one.
    let task = own_task.as_mut().or(current.as_mut());
    // A keeper that let go of the task is reaped after the task has ended
    // here: its exit and this end overlap.
    let (status, keeper) = match task {
        #[cfg(target_os = "linux")]
        Some(task) => match kept(rt, spawn, task, err) {
            Ok((code, keeper)) => (Ok(code), keeper),
            Err(e) => (Err(e), None),
        },
        task => (direct(rt, spawn, task, err), None),
    };
    drop(current);
    drop(own_task);
    drop(keeper);
    match status {
        Ok(code) => code,
        Err(e) => {
            // ENOENT for a file that exists: its `#!` line names a missing
            // interpreter.
            let hint = if e.kind() == std::io::ErrorKind::NotFound && path.exists() {
                " (the file exists: the interpreter its `#!` line names is missing)"
            } else {
                ""
            };
            let _ = writeln!(err, "error: cannot run {}: {e}{hint}", path.display());
            exit::FAILURE
        }
    }
}

/// The processes holding a task whose command has just exited, read until
/// two reads 5 ms apart agree (50 ms at most): a leftover caught between
/// its fork and its exec still shows the command's own command line (`sh
/// script` for `setsid sleep 20 &`), and the line printed from it would
/// name the wrong program.
#[cfg(target_os = "linux")]
fn settled_holders(
    processes: &maintenance_core::process::Processes,
) -> Vec<maintenance_core::process::Holder> {
    let mut holders = processes.holders();
    for _ in 0..10 {
        std::thread::sleep(std::time::Duration::from_millis(5));
        let again = processes.holders();
        if again == holders {
            break;
        }
        holders = again;
    }
    holders
}

/// Maps a `waitpid` status to an exit code: the command's own, or 128+N
/// if signal N killed it.
fn exit_code_of(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code.clamp(0, 255) as u8,
        (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        (None, None) => exit::FAILURE,
    }
}

/// An external command about to be spawned.
struct Spawning<'a> {
    name: &'a str,
    path: &'a Path,
    args: &'a [OsString],
    env: Vec<(OsString, OsString)>,
    policy: Policy,
    /// Whether its task (or joined run) is this runner's own.
    owned: bool,
}

/// Spawns and waits for the command with std, the task's locks inherited
/// (untracked commands, and systems without a keeper).
fn direct(
    rt: &Runtime<'_>,
    spawn: Spawning<'_>,
    task: Option<&mut CommandTask>,
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    let Spawning {
        path,
        args,
        env,
        policy,
        owned,
        ..
    } = spawn;
    let mut cmd = Command::new(path);
    cmd.args(args).envs(env);
    let mut record = None;
    if let Some(task) = task {
        task.prepare_child(&mut cmd);
        record = Some(task.record().clone());
    }
    let mut child = cmd.spawn()?;
    signals::set_child(child.id() as i32);
    // A SIGTERM (or a drain) that came before the child existed.
    if rt.stop.requested() {
        signals::terminate_child();
    }
    let _drain = rt.drain_watch(policy, record.as_ref(), owned);
    let status = child.wait();
    signals::set_child(0);
    match status {
        Ok(s) => Ok(exit_code_of(s)),
        Err(e) => {
            let _ = writeln!(err, "error: waiting for {}: {e}", path.display());
            Ok(exit::FAILURE)
        }
    }
}

/// Spawns the command under a keeper that tracks every descendant it
/// leaves behind (Linux), and waits for the command itself.
#[cfg(target_os = "linux")]
fn kept(
    rt: &Runtime<'_>,
    spawn: Spawning<'_>,
    task: &mut CommandTask,
    err: &mut dyn Write,
) -> std::io::Result<(u8, Option<crate::keeper::Reap>)> {
    use maintenance_core::policy::Descendants;
    use maintenance_core::process::{ProcId, Processes};
    let Spawning {
        name,
        path,
        args,
        mut env,
        policy,
        owned,
    } = spawn;
    let release = rt
        .config
        .commands
        .get(name)
        .and_then(|o| o.descendants)
        .is_some_and(|d| d == Descendants::Release);
    let handoff = task.handoff();
    env.extend(handoff.env.into_iter().map(|(k, v)| (k.into(), v.into())));
    let record = task.record().clone();
    // Leftovers of a drain-`stop` command are asked to stop by the keeper:
    // on the file backend it reads the mode itself; on another, a watcher
    // it starts once leftovers remain tells it (this binary again: only
    // when `run` started this process, which answers the watcher's
    // argument).
    let drains = policy.drain == Drain::Stop && owned && record.holds_off_offline();
    let file = rt.config.backend == maintenance_core::config::BackendKind::File;
    let probe = (drains && file)
        .then(|| maintenance_core::backend::file::ModeProbe::open(&rt.config.state_dir).ok())
        .flatten()
        .map(|p| p.for_task(&record));
    let exe = Path::new("/proc/self/exe");
    let drain = match &probe {
        Some(probe) => Some(crate::keeper::DrainLook::Probe(probe)),
        None if drains && !file && crate::whole_process() => {
            Some(crate::keeper::DrainLook::Watcher {
                exe,
                config: rt.config.file.as_deref(),
                read_only: record.holds_off_read_only(),
            })
        }
        None => None,
    };
    let mut running = crate::keeper::spawn(&crate::keeper::Spawn {
        path,
        args,
        env: &env,
        fds: &handoff.fds,
        release,
        drain,
    })?;
    let processes = Processes {
        keeper: running.keeper,
        command: ProcId::of(running.command).unwrap_or(ProcId {
            pid: running.command,
            start: 0,
        }),
    };
    // Only for people: a task whose processes went unrecorded is as live.
    let _ = task.record_processes(&processes);
    running.go();
    signals::set_keeper_child(running.keeper.pid as i32);
    // A SIGTERM (or a drain) that came before the child existed.
    if rt.stop.requested() {
        signals::terminate_child();
    }
    let _drain = rt.drain_watch(policy, Some(&record), owned);
    let keeper = running.keeper.pid;
    let ended = running.wait();
    signals::set_child(0);
    let ended = ended?;
    if ended.leftovers {
        let holders: Vec<String> = settled_holders(&processes)
            .iter()
            .filter(|h| !h.command)
            .map(|h| format!("pid {} ({})", h.pid, h.argv.join(" ")))
            .collect();
        let waits = if record.holds_off_offline() {
            "`offline on` waits for them"
        } else {
            "they run inside the maintenance window, so `offline on` does not wait for them"
        };
        let _ = writeln!(
            err,
            "{}: `{name}` exited; what it left behind still holds its task: {}. \
             `{} offline list` names them; {waits} (manage.toml: \
             [commands.{name}] descendants = \"release\" lets them go).",
            rt.bin,
            if holders.is_empty() {
                format!("keeper pid {keeper}")
            } else {
                holders.join(", ")
            },
            rt.bin,
        );
    } else {
        task.take_back_from_child();
    }
    use std::os::unix::process::ExitStatusExt;
    let code = exit_code_of(std::process::ExitStatus::from_raw(ended.status));
    Ok((code, ended.keeper))
}
