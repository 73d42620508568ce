//! `offline doctor`: the state directory as the running user sees it —
//! owner, group, modes, format version, leftovers, and whether the web
//! user and nginx's workers can reach what they must — one finding a line,
//! each saying what to run. Reads only; never changes anything.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::trust::Trust;
use super::{
    FORMAT_VERSION, FileBackend, KNOWN, MARKER, MODE, OLDEST_FORMAT, PENDING, SESSIONS, TASKS,
    VERSION,
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
                config
                    .group
                    .as_deref()
                    .map(|g| format!(" (group {g}, mode 2775)"))
                    .unwrap_or_default()
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
    if rustix::fs::access(path, rustix::fs::Access::WRITE_OK).is_err() {
        out.push(problem(format!(
            "you ({}) cannot write {p}: run manage as root, its owner, or a member of its group",
            user_name(trust.me)
        )));
    }
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

/// The state's own files: never symlinks, readable by the group.
fn files(root: &Path, config: &Config, out: &mut Vec<Finding>) {
    for name in [VERSION, MODE, MARKER, "gate", "run.lock"] {
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
        if mode & 0o002 != 0 {
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
                if view.mode == Mode::Offline {
                    "on --force"
                } else {
                    "off"
                }
            )));
        }
        if let Ok(WindowState::Abandoned(run)) = backend.window()
            && view.mode == Mode::Offline
        {
            out.push(problem(format!(
                "the site was left OFFLINE by `offline run -- {}` (pid {}, {}), killed while its command ran: \
                 check the command's work, then run: {} offline off",
                run.argv.join(" "),
                run.pid,
                run.by,
                program_name()
            )));
        }
    }
}
