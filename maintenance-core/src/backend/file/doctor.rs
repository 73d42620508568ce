//! `offline doctor`: the state directory as the running user sees it —
//! owner, group, modes, format version, leftovers, whether the web user and
//! nginx's workers can reach what they must, and whether anyone else can
//! list it or open (and so lock) its lock files — one finding a line, each
//! saying what to run. Reads only; never changes anything.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::trust::Trust;
use super::{
    FORMAT_VERSION, FileBackend, GATE, KNOWN, MARKER, MODE, OLDEST_FORMAT, PENDING,
    READONLY_MARKER, RUN_LOCK, SESSIONS, TASKS, VERSION,
};
use crate::backend::{Backend, WindowState};
use crate::clock::SystemClock;
use crate::config::{Config, Source};
use crate::identity::{group_name, program_name, user_name};
use crate::mode::Mode;

/// One thing the doctor found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Whether it needs fixing (a problem) or is only worth knowing.
    pub problem: bool,
    /// What, and what to run.
    pub text: String,
}

fn problem(text: impl Into<String>) -> Finding {
    Finding {
        problem: true,
        text: text.into(),
    }
}

fn note(text: impl Into<String>) -> Finding {
    Finding {
        problem: false,
        text: text.into(),
    }
}

/// Examines the state directory `config` names.
pub fn doctor(config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(refused) = crate::hooks::Hooks::from_config(config).refused() {
        out.push(problem(refused));
    }
    let trust = match Trust::from_config(config) {
        Ok(t) => t,
        Err(e) => {
            out.push(problem(e.to_string()));
            return out;
        }
    };
    let root = &config.state_dir;
    let meta = match std::fs::metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if config.state_dir_source != Source::Default
                && let Some(parent) = super::missing_parent(root)
            {
                out.push(problem(format!(
                    "{} {}",
                    root.display(),
                    super::missing_parent_problem(parent)
                )));
                return out;
            }
            out.push(note(format!(
                "{} does not exist yet: the first manage run creates it{}",
                root.display(),
                match config.group.as_deref() {
                    Some(g) => format!(" (group {g}, mode 2771)"),
                    None => " (mode 0711)".to_owned(),
                }
            )));
            ancestors(root, &mut out);
            return out;
        }
        Err(e) => {
            out.push(problem(format!("cannot inspect {}: {e}", root.display())));
            return out;
        }
    };
    if !meta.is_dir() {
        out.push(problem(format!(
            "{} is not a directory: point state_dir at a directory",
            root.display()
        )));
        return out;
    }
    directory(root, &meta, &trust, config, true, &mut out);
    ancestors(root, &mut out);
    if !can_enter(root) {
        // Said by `directory`: the rest is the site's users' to check.
        return out;
    }
    version(root, &mut out);
    for sub in [TASKS, PENDING, SESSIONS] {
        let p = root.join(sub);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => out.push(problem(format!(
                "{} is a symlink: manage refuses to follow it; remove it (manage recreates the directory)",
                p.display()
            ))),
            Ok(m) if !m.is_dir() => out.push(problem(format!(
                "{} is not a directory: remove it (manage recreates it)",
                p.display()
            ))),
            Ok(m) => directory(&p, &m, &trust, config, false, &mut out),
            Err(_) => {}
        }
    }
    files(root, config, &mut out);
    for sub in [TASKS, PENDING] {
        lock_files_in(&root.join(sub), &mut out);
    }
    strangers(root, &mut out);
    if !out.iter().any(|f| f.problem) {
        leftovers(config, &mut out);
    }
    out
}

/// Owner, group and mode of one directory of the state.
fn directory(
    path: &Path,
    meta: &std::fs::Metadata,
    trust: &Trust,
    config: &Config,
    root: bool,
    out: &mut Vec<Finding>,
) {
    let mode = meta.permissions().mode();
    let p = path.display();
    if let Some(text) = trust.problem(path, meta.uid(), meta.gid(), mode) {
        out.push(problem(text));
    }
    match (&config.group, trust.gid) {
        (Some(name), Some(gid)) => {
            if meta.gid() != gid {
                out.push(problem(format!(
                    "{p} belongs to group {}, not the configured group {name}; run: chgrp {name} {p}",
                    group_name(meta.gid())
                )));
            }
            if mode & 0o070 != 0o070 {
                out.push(problem(format!(
                    "{p} has mode {:04o}: the group {name} (the web app) must read and write it; run: chmod g+rwx {p}",
                    mode & 0o7777
                )));
            }
            if mode & 0o2000 == 0 {
                out.push(problem(format!(
                    "{p} is not setgid: files created in it would not belong to {name}; run: chmod g+s {p}"
                )));
            }
        }
        _ if root && meta.uid() != trust.me && !is_root(trust) => out.push(problem(format!(
            "{p} belongs to {} and no `group` is configured: you ({}) cannot write it; set `group` in \
             manage.toml to a group you share, or run as {}",
            user_name(meta.uid()),
            user_name(trust.me),
            user_name(meta.uid())
        ))),
        _ => {}
    }
    if root && mode & 0o001 == 0 {
        out.push(problem(format!(
            "{p} has mode {:04o}: nginx's workers (another user) cannot check the OFFLINE marker in it; run: chmod o+x {p}",
            mode & 0o7777
        )));
    }
    if mode & 0o004 != 0 {
        out.push(problem(format!(
            "others can list {p} (mode {:04o}): only the site's users need to (nginx's workers \
             need only o+x on the state directory); run: chmod o-r {p}",
            mode & 0o7777
        )));
    }
    if rustix::fs::access(path, rustix::fs::Access::WRITE_OK).is_err() {
        let nor_read = if root && !can_enter(path) {
            " nor read it (it is open only to its owner, root and its group)"
        } else {
            ""
        };
        out.push(problem(format!(
            "you ({}) cannot write {p}{nor_read}: run manage as root, its owner, or a member of its group",
            user_name(trust.me)
        )));
    }
}

/// Whether the running user may list and search `dir`.
fn can_enter(dir: &Path) -> bool {
    rustix::fs::access(
        dir,
        rustix::fs::Access::READ_OK | rustix::fs::Access::EXEC_OK,
    )
    .is_ok()
}

/// Why a lock file others can open is a problem.
const OTHERS_CAN_LOCK: &str = "whoever can open a lock file can flock it, and so stall task \
     starts, `offline on`/`off` or a command, or make a dead task look live";

/// The files in `tasks/` or `pending/` — lock files and task records, none
/// for anyone but the site's users — that others can open.
fn lock_files_in(dir: &Path, out: &mut Vec<Finding>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut open: Vec<String> = entries
        .flatten()
        .filter(|e| {
            e.metadata()
                .is_ok_and(|m| m.file_type().is_file() && m.permissions().mode() & 0o006 != 0)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if open.is_empty() {
        return;
    }
    open.sort();
    let n = open.len();
    let shown = if n > 3 {
        format!("{}, …", open[..3].join(", "))
    } else {
        open.join(", ")
    };
    let d = dir.display();
    out.push(problem(format!(
        "others can lock {n} file(s) in {d} ({shown}), left open to every user by an older \
         manage: {OTHERS_CAN_LOCK}; run: chmod o-rwx {d}/*"
    )));
}

fn is_root(trust: &Trust) -> bool {
    trust.me == 0
}

/// Every directory above the state must let nginx's workers through.
fn ancestors(root: &Path, out: &mut Vec<Finding>) {
    for dir in root.ancestors().skip(1) {
        if let Ok(m) = std::fs::metadata(dir)
            && m.permissions().mode() & 0o001 == 0
        {
            out.push(problem(format!(
                "{} has mode {:04o}: nginx's workers cannot reach the OFFLINE marker below it; run: chmod o+x {}",
                dir.display(),
                m.permissions().mode() & 0o7777,
                dir.display()
            )));
        }
    }
}

fn version(root: &Path, out: &mut Vec<Finding>) {
    let p = root.join(VERSION);
    match std::fs::read_to_string(&p) {
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(FORMAT_VERSION) => {}
            Ok(v) if (OLDEST_FORMAT..FORMAT_VERSION).contains(&v) => out.push(note(format!(
                "{} says format {v}: the next manage run that may write the state upgrades it \
                 to {FORMAT_VERSION}",
                p.display()
            ))),
            Ok(v) => out.push(problem(format!(
                "{} says format {v}; this manage understands {FORMAT_VERSION}: run a matching manage",
                p.display()
            ))),
            Err(_) => out.push(problem(format!(
                "{} is corrupt ({:?}); it should hold {FORMAT_VERSION}",
                p.display(),
                text.trim()
            ))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => out.push(note(format!(
            "{} is missing: the next manage run writes it",
            p.display()
        ))),
        Err(e) => out.push(problem(format!("cannot read {}: {e}", p.display()))),
    }
}

/// The state's own files: never symlinks, readable by the group, and the
/// lock files closed to others.
fn files(root: &Path, config: &Config, out: &mut Vec<Finding>) {
    for name in [VERSION, MODE, MARKER, READONLY_MARKER, GATE, RUN_LOCK] {
        let p = root.join(name);
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.file_type().is_symlink() {
            out.push(problem(format!(
                "{} is a symlink: manage never follows links in the state; remove it",
                p.display()
            )));
            continue;
        }
        let mode = m.permissions().mode();
        if config.group.is_some() && mode & 0o060 != 0o060 {
            out.push(problem(format!(
                "{} has mode {:04o}: the group must read and write it; run: chmod g+rw {}",
                p.display(),
                mode & 0o7777,
                p.display()
            )));
        }
        if [GATE, RUN_LOCK].contains(&name) && mode & 0o006 != 0 {
            out.push(problem(format!(
                "others can lock {} (mode {:04o}): {OTHERS_CAN_LOCK}; run: chmod o-rwx {}",
                p.display(),
                mode & 0o7777,
                p.display()
            )));
        } else if mode & 0o002 != 0 {
            out.push(problem(format!(
                "{} is writable by every user; run: chmod o-w {}",
                p.display(),
                p.display()
            )));
        }
    }
}

fn strangers(root: &Path, out: &mut Vec<Finding>) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !KNOWN.contains(&name.as_str()) && !name.starts_with('.') {
            out.push(note(format!(
                "{} is not manage's: it is ignored",
                root.join(&name).display()
            )));
        }
    }
}

/// What crashed processes left behind: harmless, and what cleans it.
fn leftovers(config: &Config, out: &mut Vec<Finding>) {
    let Ok(backend) = FileBackend::open(config, SystemClock::shared()) else {
        return;
    };
    let live = backend.tasks().map(|t| t.len()).unwrap_or(0);
    let files = backend
        .tasks
        .names()
        .map(|n| {
            n.iter()
                .filter(|n| n.to_string_lossy().ends_with(super::tasks::TASK_SUFFIX))
                .count()
        })
        .unwrap_or(0);
    if files > live {
        out.push(note(format!(
            "{} task file(s) of commands that died: they never count; the next `offline on` or `off` removes them",
            files - live
        )));
    }
    // The view as it stands: `mode()` would put a stray marker right first.
    if let Ok(view) = backend.view() {
        if let Some(l) = &view.lapsed {
            out.push(note(l.reason.clone()));
        }
        if let Some(s) = &view.stray_marker {
            out.push(problem(format!(
                "{s}; or run: {} offline {}",
                program_name(),
                match view.mode {
                    Mode::Offline => "on --force",
                    Mode::ReadOnly => "on --read-only --force",
                    _ => "off",
                }
            )));
        }
        if let Ok(WindowState::Abandoned(run)) = backend.window()
            && matches!(view.mode, Mode::Offline | Mode::ReadOnly)
        {
            out.push(problem(format!(
                "the site was left {} by `offline run -- {}` (pid {}, {}), killed while its command ran: \
                 check the command's work, then run: {} offline off",
                view.mode,
                run.argv.join(" "),
                run.pid,
                run.by,
                program_name()
            )));
        }
    }
}
