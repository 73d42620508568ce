//! Opening the state directory: it is created when missing, never its
//! parents (except the default per-user directory's), refused when others
//! could write it, and its format version checked or written.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::dir::{Dir, Modes};
use super::sessions::Sessions;
use super::watch::Watchers;
use super::{
    FORMAT_VERSION, FileBackend, KNOWN, OLDEST_FORMAT, PENDING, SESSIONS, TASKS, VERSION, trust,
};
use crate::clock::SharedClock;
use crate::config::{Config, Source};
use crate::error::{Error, Result};

impl FileBackend {
    /// Opens the state directory `config` names, creating it (with safe
    /// modes and the configured group) when it does not exist, and checking
    /// its format version. Only the directory itself is created: a missing
    /// parent is refused, naming it (a mistyped path would otherwise make
    /// a fresh, healthy-looking site somewhere nobody looks) — except for
    /// the default per-user directory, whose parents a fresh user often
    /// lacks.
    pub fn open(config: &Config, clock: SharedClock) -> Result<FileBackend> {
        let trust = trust::Trust::from_config(config)?;
        let parents = if config.state_dir_source == Source::Default {
            Parents::Create
        } else {
            Parents::MustExist
        };
        Self::open_dir(
            &config.state_dir,
            &trust,
            parents,
            (config.session_timeout, config.history_max_size),
            clock,
        )
    }

    fn open_dir(
        path: &Path,
        trust: &trust::Trust,
        parents: Parents,
        (session_timeout, history_max): (Duration, u64),
        clock: SharedClock,
    ) -> Result<FileBackend> {
        let modes = Modes::for_group(trust.gid);
        let root = match Dir::open_root(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Self::create_root(path, parents, modes)?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                return Err(Error::state(
                    path,
                    "is not a directory: point state_dir (manage.toml, $MANAGE_STATE_DIR or --state-dir) at a directory",
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                trust.check_unopened(path)?;
                return Err(Error::state(
                    path,
                    format!(
                        "cannot be opened by you ({}): {e}; the state is open only to its \
                         owner, root and the members of its group (`group` in manage.toml), \
                         through directories they may search: run as one of them, or join \
                         the group (`{} offline doctor` says what you may not do)",
                        crate::identity::user_name(trust.me),
                        crate::identity::program_name()
                    ),
                ));
            }
            Err(e) => return Err(Error::io("open state directory", path, e)),
        };
        trust.check(root.path(), root.fd())?;
        check_version(&root, modes)?;
        let tasks = Arc::new(root.subdir(TASKS, modes)?);
        let pending = Arc::new(root.subdir(PENDING, modes)?);
        let sessions_dir = root.subdir(SESSIONS, modes)?;
        for d in [&*tasks, &*pending, &sessions_dir] {
            trust.check(d.path(), d.fd())?;
        }
        let sessions = Sessions::new(sessions_dir, modes, session_timeout);
        Ok(FileBackend {
            root,
            tasks,
            pending,
            sessions,
            watchers: Arc::new(Watchers::default()),
            record_cache: std::sync::Mutex::new(None),
            modes,
            clock,
            history_max,
            noticed: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn create_root(path: &Path, parents: Parents, modes: Modes) -> Result<Dir> {
        match (parents, path.parent()) {
            (Parents::Create, Some(parent)) => std::fs::create_dir_all(parent)
                .map_err(|e| Error::io("create directory", parent, e))?,
            (Parents::MustExist, _) => {
                if let Some(parent) = missing_parent(path) {
                    return Err(Error::state(path, missing_parent_problem(parent)));
                }
            }
            (Parents::Create, None) => {}
        }
        match std::fs::create_dir(path) {
            Ok(()) => {
                let root =
                    Dir::open_root(path).map_err(|e| Error::io("open state directory", path, e))?;
                let fd =
                    File::open(path).map_err(|e| Error::io("open state directory", path, e))?;
                Dir::apply_modes_to(&fd, modes.root, modes.gid)
                    .map_err(|e| Error::io("set permissions of", path, e))?;
                Ok(root)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Dir::open_root(path).map_err(|e| Error::io("open state directory", path, e))
            }
            Err(e) => Err(Error::io("create state directory", path, e)),
        }
    }
}

/// Whether [`FileBackend::open`] may create the state directory's parents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parents {
    /// The default per-user directory: create what is missing.
    Create,
    /// A directory someone named: only the directory itself is created.
    MustExist,
}

/// The parent of `path`, when it does not exist.
pub(crate) fn missing_parent(path: &Path) -> Option<&Path> {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty() && std::fs::symlink_metadata(p).is_err())
}

/// What to say of a state directory whose parent `parent` is missing.
pub(crate) fn missing_parent_problem(parent: &Path) -> String {
    format!(
        "cannot be created: its parent {} does not exist, and manage creates only the state \
         directory itself; check the path (state_dir in manage.toml, $MANAGE_STATE_DIR or \
         --state-dir), or create the parent first: mkdir -p {}",
        parent.display(),
        parent.display()
    )
}

fn check_version(root: &Dir, modes: Modes) -> Result<()> {
    let path = root.join(VERSION);
    match root.read_small(VERSION, 64)? {
        Some(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            match text.trim().parse::<u32>() {
                Ok(FORMAT_VERSION) => Ok(()),
                Ok(v) if (OLDEST_FORMAT..FORMAT_VERSION).contains(&v) => {
                    // Best effort: a user who may not write the state still
                    // reads it, and the next one who may upgrades it.
                    let _ = root.replace(
                        VERSION,
                        format!("{FORMAT_VERSION}\n").as_bytes(),
                        modes,
                        true,
                    );
                    Ok(())
                }
                Ok(v) => Err(Error::state(
                    path,
                    format!(
                        "the state has format version {v}, and this manage ({}) understands only \
                         version {FORMAT_VERSION}: run a manage that matches the rest of the site \
                         (a rolling deploy mixes versions)",
                        env!("CARGO_PKG_VERSION")
                    ),
                )),
                Err(_) => Err(Error::state(
                    path,
                    format!(
                        "is corrupt (it holds {:?}, not a version number); it should hold {FORMAT_VERSION}",
                        text.trim()
                    ),
                )),
            }
        }
        None => {
            let strangers: Vec<String> = root
                .names()?
                .into_iter()
                .filter_map(|n| n.into_string().ok().or(Some("?".into())))
                .filter(|n| !KNOWN.contains(&n.as_str()) && !n.starts_with('.'))
                .collect();
            if !strangers.is_empty() {
                return Err(Error::state(
                    root.path(),
                    format!(
                        "is not a manage state directory: it has no VERSION file and holds other \
                         files ({}); point state_dir at an empty or new directory",
                        strangers.join(", ")
                    ),
                ));
            }
            root.replace(
                VERSION,
                format!("{FORMAT_VERSION}\n").as_bytes(),
                modes,
                true,
            )
        }
    }
}
