//! A site run with the `manage` binary (`e2e-manage`), or with the example
//! site's (`e2e-mysite`) against the same directory, and the plain progress
//! lines of `offline on`.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{Outcome, Proc, isolated};
use crate::scratch::Scratch;
use crate::wait::HANG_GUARD;

/// A site for the end-to-end runs of a `manage` binary (`e2e-manage`): a
/// scratch directory that is the working directory of every run, holding a
/// `manage.toml` (with `refresh_interval = "50ms"`, so PENDING settles
/// quickly, plus whatever the test adds), the state directory (given as
/// `MANAGE_STATE_DIR`) and a `bin/` directory put first on `PATH` for
/// external `manage-<name>` commands. Every run has `argv[0]` `manage` and
/// neither `RUST_BACKTRACE` nor a task token in its environment. A site
/// made by [`CliSite::on_postgres`] keeps its state on a PostgreSQL server
/// instead (`MANAGE_DATABASE_URL` in every run's environment).
#[derive(Debug)]
pub struct CliSite {
    scratch: Scratch,
    exe: PathBuf,
    /// A site on PostgreSQL instead of the state directory
    /// ([`CliSite::on_postgres`]).
    postgres: Option<Postgres>,
}

/// Where a [`CliSite`] on PostgreSQL keeps its state.
#[derive(Debug, Clone)]
struct Postgres {
    /// The server's URL, with the site's `application_name`.
    url: String,
    /// The site's name, and its connections' `application_name`.
    site: String,
}

/// The variable choosing the backend of every [`CliSite::with_config`]
/// site: `postgres` (on the test server), or `file` (the default).
pub const ENV_TEST_BACKEND: &str = "MANAGE_TEST_BACKEND";

/// The variable naming the PostgreSQL server of the tests
/// (`postgres://…`), as maintenance-core's conformance suite reads it.
pub const ENV_TEST_DATABASE_URL: &str = "MANAGE_TEST_DATABASE_URL";

/// The test server's URL, from `$MANAGE_TEST_DATABASE_URL`. Without it a
/// test on PostgreSQL is skipped, saying so — unless PostgreSQL is expected
/// (`$CI`, or `$MANAGE_TEST_EXPECT_POSTGRES` as `scripts/test` sets it):
/// then the test fails.
pub fn test_database_url() -> Option<String> {
    if let Some(url) = std::env::var(ENV_TEST_DATABASE_URL)
        .ok()
        .filter(|u| !u.is_empty())
    {
        return Some(url);
    }
    let expected = ["CI", "MANAGE_TEST_EXPECT_POSTGRES"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
    assert!(
        !expected,
        "PostgreSQL is expected here but ${ENV_TEST_DATABASE_URL} is not set: run the suite \
         through scripts/test, or set it to postgres://USER:PASSWORD@HOST:PORT/DATABASE"
    );
    eprintln!("skipped: this test needs PostgreSQL; set ${ENV_TEST_DATABASE_URL}");
    None
}

/// The psql client of the test machine's PostgreSQL (`$PG_BIN/psql`, as
/// `scripts/pg-cluster` reads `PG_BIN`, else Debian's): the tests that
/// plant rows or end server connections by hand run it.
pub fn psql_path() -> PathBuf {
    let bin = std::env::var_os("PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    [bin.join("psql"), PathBuf::from("/usr/bin/psql")]
        .into_iter()
        .find(|p| p.exists())
        .expect("psql (Debian's postgresql-client): the test runs SQL on the server with it")
}

/// Runs `sql` with psql on `url`, stopping at the first error; returns its
/// unaligned, tuples-only output, trimmed. Fails the test, with psql's
/// error, when it does not succeed.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new(psql_path())
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Whether this test binary runs its sites on PostgreSQL
/// (`MANAGE_TEST_BACKEND=postgres`).
pub fn on_postgres_backend() -> bool {
    std::env::var(ENV_TEST_BACKEND).as_deref() == Ok("postgres")
}

/// For a test that inspects the file backend's state directly (its files,
/// their modes, a hostile entry put there by hand, nginx's marker): `true`
/// under `MANAGE_TEST_BACKEND=postgres`, after printing `why` — the test
/// then returns at once (`if file_backend_only("…") { return; }`), so a
/// pass on PostgreSQL says what it left to the file backend, never silently.
pub fn file_backend_only(why: &str) -> bool {
    if !on_postgres_backend() {
        return false;
    }
    eprintln!("file backend only, skipped on PostgreSQL: {why}");
    true
}

/// The test server's URL when this test binary runs its sites on
/// PostgreSQL: `None` for the file backend. Fails the test when
/// `MANAGE_TEST_BACKEND` is neither `file` nor `postgres`, or is
/// `postgres` without a server.
pub(crate) fn backend_url_from_env() -> Option<String> {
    match std::env::var(ENV_TEST_BACKEND).as_deref() {
        Ok("postgres") => Some(test_database_url().unwrap_or_else(|| {
            panic!("${ENV_TEST_BACKEND}=postgres needs ${ENV_TEST_DATABASE_URL}")
        })),
        Ok("") | Ok("file") | Err(_) => None,
        Ok(other) => panic!("${ENV_TEST_BACKEND}={other:?}: use `file` or `postgres`"),
    }
}

/// A site of its own on the PostgreSQL server `url`: a fresh name (for
/// `site` in manage.toml), and the URL carrying it as `application_name`,
/// so a test can tell its connections from everyone else's.
pub(crate) fn fresh_postgres_site(url: &str) -> (String, String) {
    let name = format!(
        "e2e-{}-{}",
        std::process::id(),
        maintenance_core::random::hex::<6>()
    );
    let sep = if url.contains('?') { '&' } else { '?' };
    (format!("{url}{sep}application_name={name}"), name)
}

/// The configuration a helper binary (`task-holder`, `race-actor`) opens
/// from its options `--state-dir DIR [--database-url URL [--site NAME]]`:
/// the state directory `dir`, or the site `site` (else the default site)
/// on the PostgreSQL server `url`. Fails with what is wrong with `url`.
pub fn helper_config(
    dir: &Path,
    url: Option<&str>,
    site: Option<&str>,
) -> Result<maintenance_core::Config, String> {
    let mut config = maintenance_core::Config::with_state_dir(dir);
    if let Some(url) = url {
        config.backend = maintenance_core::config::BackendKind::Postgres;
        config.postgres.url = Some(
            maintenance_core::database_url::DatabaseUrl::parse(url)
                .map_err(|e| format!("bad --database-url: {e}"))?,
        );
        if let Some(site) = site {
            config.postgres.site = site.to_owned();
        }
        // Races start dozens of helpers at one instant, each with its own
        // connections (and password exchanges), on a loaded machine: the
        // tests' hang guard, not a production bound.
        config.postgres.connect_timeout = Duration::from_secs(60);
    }
    Ok(config)
}

/// The state the helper binaries of a multi-process test share
/// (`task-holder`, `race-actor`, given [`args`](Self::args)) and the test
/// opens itself ([`backend`](Self::backend)): a state directory, or under
/// `MANAGE_TEST_BACKEND=postgres` a fresh site of its own on the test
/// server instead, as [`CliSite::with_config`] chooses.
#[derive(Debug, Clone)]
pub struct HelperState {
    dir: PathBuf,
    postgres: Option<Postgres>,
}

impl HelperState {
    /// The state directory `dir`, or a fresh site on the test server under
    /// `MANAGE_TEST_BACKEND=postgres`.
    pub fn from_env(dir: impl Into<PathBuf>) -> HelperState {
        HelperState {
            dir: dir.into(),
            postgres: backend_url_from_env().map(|url| {
                let (url, site) = fresh_postgres_site(&url);
                Postgres { url, site }
            }),
        }
    }

    /// The state directory (given on PostgreSQL too, where nothing is
    /// kept in it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The site's name on PostgreSQL; `None` for a state directory.
    pub fn postgres_site(&self) -> Option<&str> {
        self.postgres.as_ref().map(|p| p.site.as_str())
    }

    /// The options naming this state to a helper binary: `--state-dir DIR`,
    /// and on PostgreSQL `--database-url URL --site NAME`.
    pub fn args(&self) -> Vec<std::ffi::OsString> {
        let mut args = vec!["--state-dir".into(), self.dir.clone().into_os_string()];
        if let Some(pg) = &self.postgres {
            args.extend(["--database-url", &pg.url, "--site", &pg.site].map(Into::into));
        }
        args
    }

    /// The configuration the helpers open: [`helper_config`] of
    /// [`args`](Self::args).
    pub fn config(&self) -> maintenance_core::Config {
        let pg = self.postgres.as_ref();
        helper_config(
            &self.dir,
            pg.map(|p| p.url.as_str()),
            pg.map(|p| p.site.as_str()),
        )
        .expect("the test server's URL")
    }

    /// The state, opened in this process through the core API.
    pub fn backend(&self) -> std::sync::Arc<dyn maintenance_core::Backend> {
        maintenance_core::backend::open(&self.config(), maintenance_core::SystemClock::shared())
            .expect("open the test's state")
    }
}

impl CliSite {
    /// A fresh site run with `exe` (`env!("CARGO_BIN_EXE_e2e-manage")`).
    pub fn new(exe: impl Into<PathBuf>) -> CliSite {
        CliSite::with_config(exe, "")
    }

    /// A fresh site whose `manage.toml` also holds `toml` (lines of
    /// settings, e.g. `session_timeout = "10m"`). With
    /// `MANAGE_TEST_BACKEND=postgres` in the environment, the site is
    /// [on PostgreSQL](Self::on_postgres) instead, on the test server: so a
    /// test file whose tests read the state only through `manage` and the
    /// core API runs against either backend unchanged.
    pub fn with_config(exe: impl Into<PathBuf>, toml: &str) -> CliSite {
        match backend_url_from_env() {
            Some(url) => CliSite::on_postgres(exe, &url, toml),
            None => CliSite::in_state_dir(exe, toml),
        }
    }

    /// A fresh site whose `manage.toml` holds `toml`, in a state
    /// directory unless `toml` says otherwise, whatever
    /// `MANAGE_TEST_BACKEND` says: for a test of what manage.toml itself
    /// selects.
    pub fn in_state_dir(exe: impl Into<PathBuf>, toml: &str) -> CliSite {
        let scratch = Scratch::with_manage_toml(&format!("refresh_interval = \"50ms\"\n{toml}\n"));
        std::fs::create_dir(scratch.path().join("bin")).expect("create bin/");
        CliSite {
            scratch,
            exe: exe.into(),
            postgres: None,
        }
    }

    /// A fresh site like [`with_config`](Self::with_config) whose state is
    /// on the PostgreSQL server `url` names: every run gets
    /// `MANAGE_DATABASE_URL` (which selects the backend by itself, as an
    /// operator's would), the site a name of its own (`site` in
    /// manage.toml), and its connections that name as `application_name`,
    /// so a test can tell them from everyone else's on the server.
    pub fn on_postgres(exe: impl Into<PathBuf>, url: &str, toml: &str) -> CliSite {
        let (url, name) = fresh_postgres_site(url);
        let mut site = CliSite::in_state_dir(exe, &format!("site = \"{name}\"\n{toml}"));
        site.postgres = Some(Postgres { url, site: name });
        site
    }

    /// The site's name on PostgreSQL, which its connections carry as
    /// `application_name`; `None` for a site in a state directory.
    pub fn postgres_site(&self) -> Option<&str> {
        self.postgres.as_ref().map(|p| p.site.as_str())
    }

    /// The site's state as the helper binaries (`task-holder`,
    /// `race-actor`) are given it: its state directory, or its site on
    /// PostgreSQL.
    pub fn helper_state(&self) -> HelperState {
        HelperState {
            dir: self.state(),
            postgres: self.postgres.clone(),
        }
    }

    /// The number, in `manage.toml`, of line `n` (from 1) of the test's
    /// own lines: after the site's first line, and on PostgreSQL its `site`
    /// line.
    pub fn toml_line(&self, n: usize) -> usize {
        n + if self.postgres.is_some() { 2 } else { 1 }
    }

    /// The start of `offline status -v`'s line naming where the state is:
    /// the state directory, or the site on PostgreSQL.
    pub fn state_line(&self) -> String {
        match &self.postgres {
            Some(_) => "  state: PostgreSQL at ".to_owned(),
            None => format!("  state: state directory {}", self.state().display()),
        }
    }

    /// The site's directory: every run's working directory.
    pub fn dir(&self) -> &Path {
        self.scratch.path()
    }

    /// The state directory.
    pub fn state(&self) -> PathBuf {
        self.scratch.state()
    }

    /// Writes an executable `bin/manage-<name>` with `script` (a whole
    /// file, `#!/bin/sh` first). Write these before starting any process:
    /// a file open for writing while another thread forks can make the
    /// exec fail with ETXTBSY.
    pub fn external(&self, name: &str, script: &str) -> PathBuf {
        let path = self.dir().join("bin").join(format!("manage-{name}"));
        std::fs::write(&path, script).expect("write an external command");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod an external command");
        path
    }

    /// The command line `manage ARGS…` against this site, stdio piped.
    pub fn command(&self, args: &[&str]) -> Command {
        let path = match std::env::var_os("PATH") {
            Some(p) => {
                let mut dirs = vec![self.dir().join("bin")];
                dirs.extend(std::env::split_paths(&p));
                std::env::join_paths(dirs).expect("a PATH")
            }
            None => self.dir().join("bin").into_os_string(),
        };
        let mut cmd = isolated(Command::new(&self.exe));
        cmd.arg0("manage")
            .args(args)
            .current_dir(self.dir())
            .env("MANAGE_STATE_DIR", self.state())
            .env("PATH", path);
        if let Some(pg) = &self.postgres {
            cmd.env("MANAGE_DATABASE_URL", &pg.url);
        }
        cmd
    }

    /// Starts `manage ARGS…`.
    pub fn spawn(&self, args: &[&str]) -> Proc {
        Proc::spawn(self.command(args))
    }

    /// Runs `manage ARGS…` to its end (within the hang guard).
    pub fn run(&self, args: &[&str]) -> Outcome {
        self.spawn(args).finish()
    }

    /// Starts a command of the test fixture that says `started <task-id>`
    /// (`sleeper`, `sleeper-many`, or `offline run -- sleeper …`) and waits
    /// until it has said so: from then on its task is live. Returns the
    /// process and the id.
    pub fn start(&self, args: &[&str]) -> (Proc, String) {
        let mut p = self.spawn(args);
        let line = p.line();
        match line.strip_prefix("started ") {
            Some(id) => (p, id.to_owned()),
            None => panic!(
                "`manage {}` did not start: {line:?}; {}",
                args.join(" "),
                p.finish()
            ),
        }
    }

    /// The site's state, opened in this process through the core API (with
    /// the default session timeout).
    pub fn backend(&self) -> std::sync::Arc<dyn maintenance_core::Backend> {
        let mut config = maintenance_core::Config::with_state_dir(self.state());
        if let Some(pg) = &self.postgres {
            config.backend = maintenance_core::config::BackendKind::Postgres;
            config.postgres.url = Some(
                maintenance_core::database_url::DatabaseUrl::parse(&pg.url)
                    .expect("the test server's URL"),
            );
            config.postgres.site = pg.site.clone();
        }
        maintenance_core::backend::open(&config, maintenance_core::SystemClock::shared())
            .expect("open the site's state")
    }

    /// Records activity of web session `id` now, as a web layer would;
    /// returns its key.
    pub fn touch_session(&self, id: &str) -> maintenance_core::session::SessionKey {
        let key = maintenance_core::session::SessionKey::of(id.as_bytes());
        self.backend().touch_session(&key).expect("touch a session");
        key
    }

    /// Ends web session `id` (a logout).
    pub fn end_session(&self, id: &str) {
        let key = maintenance_core::session::SessionKey::of(id.as_bytes());
        self.backend().end_session(&key).expect("end a session");
    }

    /// The mode view, read through the core API.
    pub fn mode(&self) -> maintenance_core::ModeView {
        self.backend().mode().expect("read the mode")
    }

    /// Polls the mode until it is `mode`; fails the test after the hang
    /// guard.
    pub fn wait_for_mode(&self, mode: maintenance_core::Mode) {
        let deadline = Instant::now() + HANG_GUARD;
        let backend = self.backend();
        loop {
            let view = backend.mode().expect("read the mode");
            if view.mode == mode {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the site is still {} after {HANG_GUARD:?}, not {mode}: {view:?}",
                view.mode
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What `probe` returns once a killed process's hold is seen gone:
    /// [`once_released`](crate::once_released) on this site's backend.
    pub fn once_released<T>(&self, what: &str, probe: impl FnMut() -> Option<T>) -> T {
        crate::once_released(self.postgres.is_some(), what, probe)
    }

    /// Once a killed schedule's holder is seen gone: no schedule, read
    /// through the core API (which records nothing, so a race of readers
    /// to record what they find is left whole).
    pub fn schedule_released(&self) {
        let backend = self.backend();
        self.once_released("the killed schedule gone", || {
            backend
                .schedule()
                .expect("read the schedule")
                .is_none()
                .then_some(())
        });
    }

    /// Once a killed `offline run`'s window is seen abandoned, read through
    /// the core API (which records nothing).
    pub fn window_abandoned(&self) {
        let backend = self.backend();
        self.once_released("the killed run's window abandoned", || {
            matches!(
                backend.window().expect("read the window"),
                maintenance_core::backend::WindowState::Abandoned(_)
            )
            .then_some(())
        });
    }

    /// The mode view once a killed process's window has lapsed and left
    /// the site `mode`: [`once_released`](Self::once_released) of
    /// [`mode`](Self::mode), failing with the last view read.
    pub fn lapsed_to(&self, mode: maintenance_core::Mode) -> maintenance_core::ModeView {
        let backend = self.backend();
        let last = std::cell::RefCell::new(None);
        if self.postgres.is_some() {
            crate::poll_until_else(
                &format!("lapsed to {mode}"),
                || {
                    let view = backend.mode().expect("read the mode");
                    let done = view.mode == mode && view.lapsed.is_some();
                    *last.borrow_mut() = Some(view.clone());
                    done.then_some(view)
                },
                || format!("{:?}", last.borrow()),
            )
        } else {
            let view = backend.mode().expect("read the mode");
            assert!(
                view.mode == mode && view.lapsed.is_some(),
                "not lapsed to {mode} at once, with the process reaped: {view:?}"
            );
            view
        }
    }

    /// `manage offline status --json`, parsed (and checked to exit 0).
    pub fn status_json(&self) -> serde_json::Value {
        let out = self.run(&["offline", "status", "--json"]);
        assert_eq!(out.code(), Some(0), "status --json: {out}");
        serde_json::from_str(&out.stdout.join("\n"))
            .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {out}"))
    }
}

/// The former name of [`CliSite`], kept while test files written under it
/// are merged; remove it once no test names it.
#[doc(hidden)]
pub type Site = CliSite;

/// One plain progress line of `offline on` — `<N> pending sessions. <*|->
/// (<S> sec)`, `1 pending session.` for one — parsed into N, the mark and S.
pub fn parse_progress(line: &str) -> Option<(usize, char, u64)> {
    let (n, rest) = line.split_once(" pending session")?;
    let rest = rest.strip_prefix(if n == "1" { ". " } else { "s. " })?;
    let mut chars = rest.chars();
    let mark = chars.next().filter(|c| matches!(c, '*' | '-'))?;
    let secs = chars
        .as_str()
        .strip_prefix(" (")?
        .strip_suffix(" sec)")?
        .parse()
        .ok()?;
    Some((n.parse().ok()?, mark, secs))
}

/// Checks the plain progress lines at the start of `lines`, which follow
/// `prev` (the last progress line already read, if any): each is a line
/// only because the count changed, the mark alternates, and the seconds
/// never go back. Returns how many of `lines` are progress lines.
pub fn plain_progress(prev: Option<&str>, lines: &[String]) -> usize {
    let mut last = prev.map(|p| parse_progress(p).unwrap_or_else(|| panic!("{p:?}")));
    let mut n = 0;
    for line in lines {
        let Some(now) = parse_progress(line) else {
            break;
        };
        if let Some((count, mark, secs)) = last {
            assert_ne!(now.0, count, "a line without a change: {lines:?}");
            assert_ne!(now.1, mark, "the mark alternates: {lines:?}");
            assert!(now.2 >= secs, "the seconds go back: {lines:?}");
        }
        last = Some(now);
        n += 1;
    }
    n
}

/// The example site's binary against a [`CliSite`] made with it
/// (`CliSite::new(env!("CARGO_BIN_EXE_e2e-mysite"))`): the same runs as
/// [`CliSite::command`], with `argv[0]` `mysite`.
impl CliSite {
    /// The command line `mysite ARGS…` against this site, stdio piped.
    pub fn mysite_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.command(args);
        cmd.arg0("mysite");
        cmd
    }

    /// Starts `mysite ARGS…`.
    pub fn spawn_mysite(&self, args: &[&str]) -> Proc {
        Proc::spawn(self.mysite_command(args))
    }

    /// Runs `mysite ARGS…` to its end (within the hang guard).
    pub fn run_mysite(&self, args: &[&str]) -> Outcome {
        self.spawn_mysite(args).finish()
    }
}
