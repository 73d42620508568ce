//! Testing commands in-process, through the same path as the runner
//! (dispatch, policy, `CommandTask`, exit codes), against a temporary state
//! directory, with the output captured. Installs no signal handlers.
//!
//! ```
//! let out = manage::testing::run(["--version"]);
//! assert_eq!(out.code, 0);
//! assert!(out.stdout.starts_with("manage "));
//! ```

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use maintenance_core::command::StopToken;
use maintenance_core::{Backend, Config, SystemClock, backend};

use crate::{Invocation, run_with};

/// What a run printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The exit code.
    pub code: u8,
    /// Everything written to standard output.
    pub stdout: String,
    /// Everything written to standard error.
    pub stderr: String,
}

/// A temporary site: a state directory and a `manage.toml` of its own
/// (empty unless given), removed when dropped. Runs never read the
/// `manage.toml` of the directory the tests run in.
#[derive(Debug)]
pub struct TempSite {
    dir: tempfile::TempDir,
}

impl TempSite {
    /// A fresh site with an empty configuration.
    pub fn new() -> Self {
        Self::with_config("")
    }

    /// A fresh site whose `manage.toml` holds `toml` (aliases,
    /// `[commands.NAME]` policies, timeouts).
    pub fn with_config(toml: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("manage-test-")
            .tempdir()
            .expect("a temporary directory for the test site");
        std::fs::create_dir(dir.path().join("state")).expect("the test site's state directory");
        std::fs::write(dir.path().join("manage.toml"), toml).expect("the test site's manage.toml");
        TempSite { dir }
    }

    /// Its state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Its backend, to set up or inspect the state.
    pub fn backend(&self) -> Arc<dyn Backend> {
        backend::open(
            &Config::with_state_dir(self.state_dir()),
            SystemClock::shared(),
        )
        .expect("open the test site's state")
    }

    /// Runs `manage ARGS…` against this site.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut argv: Vec<OsString> = vec![
            "manage".into(),
            "--config".into(),
            self.dir.path().join("manage.toml").into(),
        ];
        argv.extend(args.into_iter().map(Into::into));
        let mut out = Vec::new();
        let mut err = Vec::new();
        let code = run_with(Invocation {
            argv,
            out: &mut out,
            err: &mut err,
            stop: StopToken::new(),
            state_dir: Some(self.state_dir()),
            terminal: false,
        });
        Output {
            code,
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
        }
    }
}

/// The former name of [`TempSite`].
#[deprecated(
    since = "0.1.0",
    note = "renamed `TempSite`: a temporary site of its own"
)]
pub type Site = TempSite;

impl Default for TempSite {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `manage ARGS…` against a fresh temporary site.
pub fn run<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    TempSite::new().run(args)
}
