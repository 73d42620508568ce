//! Hooks: the programs `[hooks] on_change` in `manage.toml` names, run after
//! every mode change and schedule event on the host that made it, with the
//! change in their environment (`MANAGE_MODE`, `MANAGE_PREVIOUS_MODE`,
//! `MANAGE_BY`, `MANAGE_MESSAGE`, `MANAGE_SCHEDULED_AT`, `MANAGE_EVENT`) and
//! its history entry as one line of JSON on stdin.
//!
//! They never block or revert a change: [`Hooks::run_detached`]
//! (`hook_supervisor.rs`, which runs them) hands them
//! to a supervisor process of their own (the binary itself again, in a
//! session of its own, holding none of the caller's descriptors or
//! terminal), which runs each in its own process group with a clean
//! environment — an allow-list (`PATH`, `HOME`, `LANG`, `LC_*`, `TZ`, …)
//! plus the variables above: never `MANAGE_TASK` or a database URL —
//! kills the group once the timeout passes, and reports a failure on the
//! caller's stderr while the caller lives and in the history always. A
//! binary whose `main` is not [`manage::run`] has no supervisor: its hooks
//! are supervised by a thread, which ends with the process.
//!
//! Hooks are taken only from a `manage.toml` that you (the user running
//! manage) or root own and that nobody else may write, in a directory the
//! same holds for (or a sticky one): a file's own `owner` and `group`
//! settings cannot vouch for it, so a `manage.toml` a stranger left in
//! `/tmp` never makes root run the stranger's program. Each program must
//! pass the same test.
//!
//! [`manage::run`]: ../../manage/fn.run.html

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::history::HistoryEntry;

/// The argument that makes a binary built on [`manage::run`] the hooks'
/// supervisor instead of a runner
/// ([`supervise_if_asked`](crate::hook_supervisor::supervise_if_asked)).
///
/// [`manage::run`]: ../../manage/fn.run.html
pub const SUPERVISOR_ARG: &str = "--manage-hook-supervisor";

/// The hooks a configuration names, once checked for trust.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    pub(crate) job: Option<Box<JobBase>>,
    /// Why configured hooks are not run (the trust check failed).
    pub(crate) refused: Option<String>,
}

/// What every run of one configuration's hooks shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JobBase {
    pub(crate) programs: Vec<Vec<String>>,
    pub(crate) timeout_ms: u64,
    /// The directory hooks run in: the configuration file's.
    pub(crate) cwd: PathBuf,
    /// Where failures are recorded: the configuration file and the state
    /// directory, as the caller had them.
    pub(crate) config_file: Option<PathBuf>,
    pub(crate) state_dir: PathBuf,
    /// `$MANAGE_DATABASE_URL` when the caller's backend came from it: the
    /// supervisor runs with a clean environment, and without it would
    /// record failures in the state directory instead of on the caller's
    /// server.
    #[serde(default)]
    pub(crate) database_url: Option<String>,
}

/// What a supervisor is given on stdin.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Job {
    #[serde(flatten)]
    pub(crate) base: JobBase,
    pub(crate) entry: HistoryEntry,
}

impl Hooks {
    /// No hooks.
    pub fn none() -> Hooks {
        Hooks::default()
    }

    /// The hooks of `config` (`[hooks]` in its file), if that file passes
    /// the trust check (see the module's documentation); otherwise none,
    /// and [`run_detached`](Self::run_detached) says why on stderr each
    /// time a change would have run them. Costs nothing without hooks.
    pub fn from_config(config: &Config) -> Hooks {
        if config.hooks.on_change.is_empty() {
            return Hooks::none();
        }
        match trusted(config) {
            Err(problem) => Hooks {
                job: None,
                refused: Some(problem),
            },
            Ok(cwd) => Hooks {
                job: Some(Box::new(JobBase {
                    programs: config.hooks.on_change.clone(),
                    timeout_ms: u64::try_from(config.hooks.timeout.as_millis()).unwrap_or(u64::MAX),
                    cwd,
                    config_file: config.file.clone(),
                    state_dir: config.state_dir.clone(),
                    database_url: (config.postgres.url_source
                        == crate::config::Source::Env(crate::config::ENV_DATABASE_URL))
                    .then(|| std::env::var(crate::config::ENV_DATABASE_URL).ok())
                    .flatten(),
                })),
                refused: None,
            },
        }
    }

    /// Whether there is nothing to run (none configured, or refused).
    pub fn is_empty(&self) -> bool {
        self.job.is_none()
    }

    /// Why the configured hooks are not run, if they are not.
    pub fn refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }
}

/// Whether the hooks of `config` may run: its file and that file's
/// directory, and each program and its directory, are owned by root or
/// this user and writable by nobody else (a sticky directory aside).
/// Returns the directory hooks run in, or why not, with the fix.
fn trusted(config: &Config) -> Result<PathBuf, String> {
    let Some(file) = &config.file else {
        return Err("hooks are configured without a manage.toml to vouch for them".into());
    };
    let refused = |what: String| {
        format!(
            "the hooks of {} are not run: {what}. Hooks run programs as you, so they are taken \
             only from a manage.toml that you or root own and nobody else can write, in a \
             directory the same holds for (a file's own `owner` and `group` settings cannot \
             vouch for it)",
            file.display()
        )
    };
    let me = rustix::process::geteuid().as_raw();
    let Some(stat) = config.file_stat else {
        return Err(refused("its owner is not known".into()));
    };
    owned_safely(file, stat.uid, stat.mode, me, false).map_err(refused)?;
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    check_path(&dir, me, true).map_err(refused)?;
    for argv in &config.hooks.on_change {
        let program = Path::new(&argv[0]);
        check_path(program, me, false).map_err(|what| refused(format!("its hook {what}")))?;
        if let Some(parent) = program.parent() {
            check_path(parent, me, true).map_err(|what| refused(format!("its hook's {what}")))?;
        }
    }
    Ok(dir)
}

fn check_path(path: &Path, me: u32, is_dir: bool) -> Result<(), String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("{} cannot be inspected: {e}", path.display()))?;
    if is_dir != meta.is_dir() || (!is_dir && !meta.is_file()) {
        return Err(format!(
            "{} is not a {}",
            path.display(),
            if is_dir { "directory" } else { "regular file" }
        ));
    }
    owned_safely(path, meta.uid(), meta.mode(), me, is_dir)
}

/// Whether a file (or directory) with this owner and mode is safe to take
/// programs from: owned by root or `me`, and writable by nobody else — a
/// sticky directory excepted, whose files only their owners may replace.
fn owned_safely(path: &Path, uid: u32, mode: u32, me: u32, is_dir: bool) -> Result<(), String> {
    let p = path.display();
    if uid != 0 && uid != me {
        return Err(format!(
            "{p} is owned by {}, who is neither root nor you ({}); run: chown {} {p}",
            crate::identity::user_name(uid),
            crate::identity::user_name(me),
            crate::identity::user_name(me),
        ));
    }
    let sticky = is_dir && mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky {
        return Err(format!(
            "{p} is writable by {} (mode {:04o}); run: chmod go-w {p}",
            if mode & 0o002 != 0 {
                "every user"
            } else {
                "its group"
            },
            mode & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_a_stranger_or_open_to_others_is_refused_naming_the_fix() {
        let p = Path::new("/tmp/site/manage.toml");
        let me = 1000;
        assert!(owned_safely(p, 0, 0o100644, me, false).is_ok());
        assert!(owned_safely(p, me, 0o100600, me, false).is_ok());
        let said = owned_safely(p, 4242, 0o100644, me, false).unwrap_err();
        assert!(said.contains("neither root nor you"), "{said}");
        assert!(said.contains("chown"), "{said}");
        let said = owned_safely(p, 0, 0o100666, me, false).unwrap_err();
        assert!(
            said.contains("writable by every user (mode 0666)"),
            "{said}"
        );
        assert!(said.contains("chmod go-w /tmp/site/manage.toml"), "{said}");
        let said = owned_safely(p, me, 0o100664, me, false).unwrap_err();
        assert!(said.contains("writable by its group"), "{said}");
        // A sticky directory (as /tmp) lets only a file's owner replace it.
        assert!(owned_safely(Path::new("/tmp"), 0, 0o41777, me, true).is_ok());
        assert!(owned_safely(Path::new("/tmp"), 0, 0o40777, me, true).is_err());
    }
}
