//! This host's own files in `state_dir` on a site whose state is shared
//! (PostgreSQL): the web-server markers `offline mirror` keeps in step with
//! the shared mode, and the local override `offline on --local --force`
//! sets when the state database itself is what is broken.
//!
//! ```text
//! <state_dir>/          this host's, local (never shared between hosts)
//!   OFFLINE             the web-server marker nginx checks, as the file
//!                       backend's (created while the legacy mode is
//!                       OFFLINE, or while the local override stands)
//!   READONLY            the read-only tier's marker (never while the local
//!                       override stands: nginx checks it before OFFLINE)
//!   OFFLINE.local       the local override: who set it, when, the message
//! ```
//!
//! Everything is written as the file backend writes its markers (I4, I5):
//! names opened relative to the directory's descriptor, never through a
//! symlink; a file is replaced by a temporary file renamed over it, so
//! nginx sees a marker or none, never a torn one. A symlink planted in a
//! marker's place is replaced or removed, never followed; a directory
//! there is refused, naming it and what to do.

use std::path::Path;

use rustix::fs::FileType;
use serde::{Deserialize, Serialize};

use crate::backend::file::dir::{Dir, Modes};
use crate::backend::file::markers_for;
use crate::backend::file::trust::Trust;
use crate::clock::Timestamp;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::mode::ModeView;

/// The web-server marker of an OFFLINE site.
pub const OFFLINE_MARKER: &str = "OFFLINE";
/// The web-server marker of refused writes.
pub const READONLY_MARKER: &str = "READONLY";
/// The local override's file.
pub const OVERRIDE: &str = "OFFLINE.local";
const MAX_OVERRIDE: usize = 16 * 1024;

/// The local override: this host answers OFFLINE, whatever the shared mode
/// says, until `offline off --local`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalOverride {
    /// When it was set (this host's clock).
    pub since: Timestamp,
    /// `user@host` of the operator.
    pub by: String,
    /// The operator's process.
    pub pid: u32,
    /// The message for users, if one was given.
    #[serde(default)]
    pub message: Option<String>,
}

impl LocalOverride {
    /// An override set now by this process.
    pub fn by_this_process(message: Option<String>) -> Self {
        let me = Identity::current();
        LocalOverride {
            since: Timestamp::at(std::time::SystemTime::now()),
            by: me.user_at_host(),
            pid: me.pid,
            message,
        }
    }
}

/// Which web-server markers should exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Markers {
    /// `OFFLINE`.
    pub offline: bool,
    /// `READONLY`.
    pub read_only: bool,
}

impl Markers {
    /// What a local override calls for: OFFLINE alone, so that nginx, which
    /// checks READONLY first, answers OFFLINE itself.
    pub const OVERRIDDEN: Markers = Markers {
        offline: true,
        read_only: false,
    };

    /// The markers the mode in force calls for, as the file backend writes
    /// them (one function decides: the file backend's).
    pub fn of(view: &ModeView) -> Markers {
        let (offline, read_only) = markers_for(view);
        Markers { offline, read_only }
    }
}

/// This host's `state_dir`, open.
#[derive(Debug)]
pub struct HostDir {
    root: Dir,
    modes: Modes,
}

impl HostDir {
    /// Opens `config.state_dir`, creating the directory itself (its
    /// parents too for the default per-user directory) when missing, with the state's modes: others may search it
    /// (nginx's workers `stat()` the marker) and nothing more.
    pub fn open(config: &Config) -> Result<HostDir> {
        let modes = Modes::for_group(Trust::from_config(config)?.gid);
        let path = &config.state_dir;
        let root = match Dir::open_root(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // As the file backend: the default per-user directory gets
                // its parents, a directory someone named does not.
                if config.state_dir_source == crate::config::Source::Default
                    && let Some(parent) = path.parent()
                {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| Error::io("create directory", parent, e))?;
                }
                if let Some(parent) = crate::backend::file::missing_parent(path) {
                    return Err(Error::state(
                        path,
                        crate::backend::file::missing_parent_problem(parent),
                    ));
                }
                if let Err(e) = std::fs::create_dir(path)
                    && e.kind() != std::io::ErrorKind::AlreadyExists
                {
                    return Err(Error::io("create state directory", path, e));
                }
                let root =
                    Dir::open_root(path).map_err(|e| Error::io("open state directory", path, e))?;
                Dir::apply_modes_to(root.fd(), modes.root, modes.gid)
                    .map_err(|e| Error::io("set permissions of", path, e))?;
                root
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                return Err(Error::state(
                    path,
                    "is not a directory: point state_dir (manage.toml, $MANAGE_STATE_DIR or \
                     --state-dir) at this host's own directory for the web-server markers",
                ));
            }
            Err(e) => return Err(Error::io("open state directory", path, e)),
        };
        Ok(HostDir { root, modes })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.root.path()
    }

    /// What is at `name`: `Some(true)` a regular file, `Some(false)`
    /// something else that may be replaced (a symlink), `None` nothing; a
    /// directory is refused.
    fn kind(&self, name: &str) -> Result<Option<bool>> {
        let path = self.root.join(name);
        match self.root.kind_and_size(name) {
            Ok(None) => Ok(None),
            Ok(Some((FileType::RegularFile, _))) => Ok(Some(true)),
            Ok(Some((FileType::Directory, _))) => Err(Error::state(
                path,
                "is a directory where this host's web-server marker goes: remove it \
                 (`rmdir`), then the marker is written at the next check",
            )),
            Ok(Some(_)) => Ok(Some(false)),
            Err(e) => Err(Error::io("inspect", path, std::io::Error::from(e))),
        }
    }

    /// The markers that exist as regular files.
    pub fn markers(&self) -> Result<Markers> {
        Ok(Markers {
            offline: self.kind(OFFLINE_MARKER)? == Some(true),
            read_only: self.kind(READONLY_MARKER)? == Some(true),
        })
    }

    /// Makes the markers be as `want`, each marker created holding `note`
    /// (one line for whoever reads it). Creates READONLY before OFFLINE and
    /// removes OFFLINE before READONLY, so that on the way nginx (which
    /// checks READONLY first) only ever refuses writes it would refuse at
    /// one end or the other. Returns whether anything changed.
    pub fn set_markers(&self, want: Markers, note: &str) -> Result<bool> {
        let mut changed = false;
        for (name, wanted) in [
            (READONLY_MARKER, want.read_only),
            (OFFLINE_MARKER, want.offline),
        ] {
            if wanted && self.kind(name)? != Some(true) {
                self.root.replace(
                    name,
                    format!("{name} {note}\n").as_bytes(),
                    self.modes,
                    false,
                )?;
                changed = true;
            }
        }
        for (name, wanted) in [
            (OFFLINE_MARKER, want.offline),
            (READONLY_MARKER, want.read_only),
        ] {
            if !wanted && self.kind(name)?.is_some() {
                changed |= self.root.remove(name)?;
            }
        }
        Ok(changed)
    }

    /// The local override, if one stands. An unreadable one stands too
    /// (fail closed), and says why.
    pub fn local_override(&self) -> Result<Option<LocalOverride>> {
        match self.root.kind_and_size(OVERRIDE) {
            Ok(None) => return Ok(None),
            Ok(Some((FileType::RegularFile, _))) => {}
            Ok(Some(_)) => {
                return Err(Error::state(
                    self.root.join(OVERRIDE),
                    "is not a regular file: remove it, then set the override again with \
                     `offline on --local --force` if it is wanted",
                ));
            }
            Err(e) => {
                return Err(Error::io(
                    "inspect",
                    self.root.join(OVERRIDE),
                    std::io::Error::from(e),
                ));
            }
        }
        let Some(bytes) = self.root.read_small(OVERRIDE, MAX_OVERRIDE)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::state(
                self.root.join(OVERRIDE),
                format!(
                    "is corrupt ({e}): `{} offline off --local` removes it",
                    crate::identity::program_name()
                ),
            )
        })
    }

    /// Sets the local override (replacing one that stands).
    pub fn set_override(&self, o: &LocalOverride) -> Result<()> {
        let json = serde_json::to_vec_pretty(o).map_err(|e| Error::Invalid(e.to_string()))?;
        // Durable: it is what an operator set in an incident.
        self.root.replace(OVERRIDE, &json, self.modes, true)
    }

    /// Removes the local override; `false` when none stood.
    pub fn clear_override(&self) -> Result<bool> {
        if let Ok(Some((FileType::Directory, _))) = self.root.kind_and_size(OVERRIDE) {
            return Err(Error::state(
                self.root.join(OVERRIDE),
                "is a directory where the local override goes: remove it (`rmdir`)",
            ));
        }
        self.root.remove(OVERRIDE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(dir: &Path) -> HostDir {
        HostDir::open(&Config::with_state_dir(dir)).expect("open")
    }

    #[test]
    fn markers_are_written_and_removed_and_a_planted_symlink_is_replaced_not_followed() {
        let tmp = tempfile::tempdir().expect("tmp");
        let state = tmp.path().join("state");
        let h = host(&state);
        let outside = tmp.path().join("precious");
        std::fs::write(&outside, b"keep").expect("write");
        std::os::unix::fs::symlink(&outside, state.join(OFFLINE_MARKER)).expect("plant");
        assert_eq!(h.markers().expect("read"), Markers::default());
        assert!(h.set_markers(Markers::OVERRIDDEN, "test").expect("set"));
        assert!(
            std::fs::symlink_metadata(state.join(OFFLINE_MARKER))
                .expect("marker")
                .is_file()
        );
        assert_eq!(std::fs::read(&outside).expect("read"), b"keep");
        assert!(!h.set_markers(Markers::OVERRIDDEN, "test").expect("again"));
        assert!(h.set_markers(Markers::default(), "test").expect("clear"));
        assert!(!state.join(OFFLINE_MARKER).exists());
        assert_eq!(std::fs::read(&outside).expect("read"), b"keep");
    }

    #[test]
    fn a_directory_in_a_markers_place_is_refused_naming_it() {
        let tmp = tempfile::tempdir().expect("tmp");
        let h = host(tmp.path());
        std::fs::create_dir(tmp.path().join(OFFLINE_MARKER)).expect("plant");
        let e = h.set_markers(Markers::OVERRIDDEN, "test").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("OFFLINE") && text.contains("is a directory"),
            "{text}"
        );
    }

    #[test]
    fn the_override_is_read_back_and_cleared() {
        let tmp = tempfile::tempdir().expect("tmp");
        let h = host(tmp.path());
        assert_eq!(h.local_override().expect("none"), None);
        let o = LocalOverride::by_this_process(Some("db down".into()));
        h.set_override(&o).expect("set");
        assert_eq!(h.local_override().expect("read"), Some(o));
        assert!(h.clear_override().expect("clear"));
        assert!(!h.clear_override().expect("again"));
        std::fs::write(tmp.path().join(OVERRIDE), b"{").expect("corrupt");
        assert!(h.local_override().is_err());
    }
}
