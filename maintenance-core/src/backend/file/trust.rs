//! Who may write the state directory, and the check that refuses one that
//! others can write: world-writable, group-writable by a group other than
//! the configured one, or owned by someone other than root, the running
//! user or the configured `owner`. Used by `open` (refuse) and by `offline
//! doctor` (report), so both say the same thing.

use std::path::Path;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::identity::{group_id, group_name, user_id, user_in_group, user_name};

/// The users and group the configuration trusts.
#[derive(Debug, Clone)]
pub(crate) struct Trust {
    pub gid: Option<u32>,
    pub owner: Option<u32>,
    pub me: u32,
}

impl Trust {
    pub fn from_config(config: &Config) -> Result<Trust> {
        let file = || {
            config
                .file
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "manage.toml".into())
        };
        let gid = match &config.group {
            None => None,
            Some(name) => Some(group_id(name).ok_or_else(|| {
                Error::Invalid(format!(
                    "group {name:?} (`group` in {}) does not exist on this host: create it or fix the setting",
                    file()
                ))
            })?),
        };
        let owner = match &config.owner {
            None => None,
            Some(name) => Some(user_id(name).ok_or_else(|| {
                Error::Invalid(format!(
                    "user {name:?} (`owner` in {}) does not exist on this host: create it or fix the setting",
                    file()
                ))
            })?),
        };
        Ok(Trust {
            gid,
            owner,
            me: rustix::process::getuid().as_raw(),
        })
    }

    /// What is wrong with a directory of the state with this owner, group
    /// and mode, and the command that fixes it; `None` when it is safe.
    pub fn problem(&self, path: &Path, uid: u32, gid: u32, mode: u32) -> Option<String> {
        let p = path.display();
        if mode & 0o002 != 0 {
            return Some(format!(
                "{p} is writable by every user (mode {:04o}): anyone could corrupt the site's state; run: chmod o-w {p}",
                mode & 0o7777
            ));
        }
        if mode & 0o020 != 0 && Some(gid) != self.gid {
            let fix = match self.gid {
                Some(g) => format!("chgrp {} {p}", group_name(g)),
                None => format!(
                    "chmod g-w {p}  (or set `group = \"{}\"` in manage.toml)",
                    group_name(gid)
                ),
            };
            return Some(format!(
                "{p} is writable by group {}, which is not the configured group; run: {fix}",
                group_name(gid)
            ));
        }
        // A member of the configured group may own it: it can write the
        // state anyway, and whatever mode it sets is checked again here.
        let member = self.gid.is_some_and(|g| user_in_group(uid, g));
        if uid != 0 && uid != self.me && Some(uid) != self.owner && !member {
            return Some(format!(
                "{p} is owned by {}, who is neither root, you ({}) nor the configured owner; run: chown root {p}  \
                 (or set `owner = \"{}\"` in manage.toml)",
                user_name(uid),
                user_name(self.me),
                user_name(uid)
            ));
        }
        None
    }

    /// Refuses an unsafe directory of the state.
    pub fn check(&self, path: &Path, fd: impl std::os::fd::AsFd) -> Result<()> {
        let st = rustix::fs::fstat(fd).map_err(|e| Error::io("inspect", path, e.into()))?;
        self.refuse(path, &st)
    }

    /// Refuses an unsafe state directory this user cannot open (only
    /// search its way to), so that a member of the site shut out by a
    /// wrong group or owner is told that, and what fixes it, rather than
    /// only "permission denied". Nothing to say when it cannot even be
    /// inspected.
    pub fn check_unopened(&self, path: &Path) -> Result<()> {
        match rustix::fs::stat(path) {
            Ok(st) => self.refuse(path, &st),
            Err(_) => Ok(()),
        }
    }

    fn refuse(&self, path: &Path, st: &rustix::fs::Stat) -> Result<()> {
        match self.problem(path, st.st_uid, st.st_gid, st.st_mode) {
            None => Ok(()),
            Some(problem) => Err(Error::Invalid(format!(
                "refusing an unsafe state directory: {problem}"
            ))),
        }
    }
}
