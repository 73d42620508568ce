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

/// Asserts that what `T` builds from each line of plain words without clap
/// ([`ManageCommand::from_plain_words`]) is what clap parses the same
/// line into — `manage NAME WORDS…` read whole under the runner's top
/// command, compared by their `Debug` form — and that clap parses every
/// line `T` accepts. Lines `T` leaves to clap (`None`) pass; so that a
/// test also says which lines it means to be plain, it returns how many
/// `T` built.
///
/// ```
/// # use maintenance_core::{anyhow, clap};
/// # use maintenance_core::command::{Context, ManageCommand};
/// #[derive(Debug, clap::Args)]
/// struct Ping {}
/// impl ManageCommand for Ping {
///     const NAME: &'static str = "ping";
///     fn run(self, _ctx: &mut Context<'_>) -> anyhow::Result<()> {
///         Ok(())
///     }
///     fn from_plain_words(words: &[&str]) -> Option<Self> {
///         words.is_empty().then_some(Ping {})
///     }
/// }
/// let built = manage::testing::assert_plain_words_parse_as_clap::<Ping>(&[&[], &["x"]]);
/// assert_eq!(built, 1);
/// ```
///
/// [`ManageCommand::from_plain_words`]: maintenance_core::command::ManageCommand::from_plain_words
#[track_caller]
pub fn assert_plain_words_parse_as_clap<T>(lines: &[&[&str]]) -> usize
where
    T: maintenance_core::command::ManageCommand + std::fmt::Debug,
{
    let mut built = 0;
    for words in lines {
        assert!(
            words.iter().all(|w| !w.starts_with('-')),
            "{words:?}: only plain words (none starting with `-`) are built without clap"
        );
        let Some(plain) = T::from_plain_words(words) else {
            continue;
        };
        built += 1;
        let argv = std::iter::once("manage")
            .chain(std::iter::once(T::NAME))
            .chain(words.iter().copied());
        let top = crate::cli::top_command("manage")
            .subcommand(T::augment_args(clap::Command::new(T::NAME)))
            .try_get_matches_from(argv)
            .unwrap_or_else(|e| {
                panic!(
                    "{words:?}: built without clap, but clap refuses the line:\n{}",
                    e.render()
                )
            });
        let (_, matches) = top.subcommand().expect("the line names the command");
        let parsed = <T as clap::FromArgMatches>::from_arg_matches(matches)
            .unwrap_or_else(|e| panic!("{words:?}: clap's matches do not build the command: {e}"));
        assert_eq!(
            format!("{plain:?}"),
            format!("{parsed:?}"),
            "{words:?}: built without clap (left) is not what clap parses (right)"
        );
    }
    built
}
