//! The example site's web app, for `tests/web*.rs`: `mysite runserver`
//! and its operator CLI in a scratch site.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::http::{Reply, http_get, http_post, raw_get};
use crate::pid::send_signal;
use crate::process::{Outcome, Proc, isolated};
use crate::scratch::Scratch;
use crate::wait::HANG_GUARD;

/// (`MYSITE_SECRET_KEY`).
pub const MYSITE_KEY: &str = "web-tests-signing-key";

/// A deployment of the example site (`e2e-mysite`, run as `mysite`) for the
/// web tests: a scratch directory holding `manage.toml` (`state_dir =
/// "state"` — or `site = …` on PostgreSQL —, `refresh_interval = "50ms"`, plus whatever the test adds) that
/// is the working directory of every run. Every run has `argv[0]` `mysite`,
/// `MYSITE_SECRET_KEY` set, `MYSITE_HOLD_DIR` set to the site's `hold/`
/// (where a note sent with `hold=NAME` waits: [`MySite::release`]), and
/// neither `RUST_BACKTRACE`, a task token, `MANAGE_STATE_DIR` nor
/// `MANAGE_CONFIG` in its environment.
#[derive(Debug)]
pub struct MySite {
    scratch: Scratch,
    exe: PathBuf,
    /// The site's URL on the PostgreSQL test server, under
    /// `MANAGE_TEST_BACKEND=postgres` (given to every run as
    /// `MANAGE_DATABASE_URL`).
    database_url: Option<String>,
    /// The site's name on PostgreSQL (`site` in manage.toml).
    site: Option<String>,
}

impl MySite {
    /// A fresh site run with `exe` (`env!("CARGO_BIN_EXE_e2e-mysite")`).
    pub fn new(exe: impl Into<PathBuf>) -> MySite {
        MySite::with_config(exe, "")
    }

    /// A fresh site whose `manage.toml` also holds `toml`. With
    /// `MANAGE_TEST_BACKEND=postgres` its state is on the PostgreSQL test
    /// server instead, as a site of its own (`site` in manage.toml, every
    /// run given `MANAGE_DATABASE_URL`), as [`crate::CliSite`]'s is.
    pub fn with_config(exe: impl Into<PathBuf>, toml: &str) -> MySite {
        let (database_url, site) = match crate::cli_site::backend_url_from_env() {
            Some(url) => {
                let (url, name) = crate::cli_site::fresh_postgres_site(&url);
                (Some(url), Some(name))
            }
            None => (None, None),
        };
        MySite::build(exe.into(), database_url, site, toml)
    }

    /// A fresh site like [`with_config`](Self::with_config) whose state is
    /// on the PostgreSQL server `url` names, whatever `MANAGE_TEST_BACKEND`
    /// says: for a test of what only a shared state has.
    pub fn on_postgres(exe: impl Into<PathBuf>, url: &str, toml: &str) -> MySite {
        let (url, name) = crate::cli_site::fresh_postgres_site(url);
        MySite::build(exe.into(), Some(url), Some(name), toml)
    }

    fn build(
        exe: PathBuf,
        database_url: Option<String>,
        site: Option<String>,
        toml: &str,
    ) -> MySite {
        let scratch = Scratch::with_manage_toml("");
        std::fs::create_dir(scratch.path().join("hold")).expect("create hold/");
        let site = MySite {
            scratch,
            exe,
            database_url,
            site,
        };
        site.write_config(&format!("refresh_interval = \"50ms\"\n{toml}"));
        site
    }

    /// Rewrites `manage.toml` with `toml` after one line: `state_dir =
    /// "state"`, or on PostgreSQL the site's own `site` line in its place
    /// (so `toml`'s lines keep their numbers on either backend). No refresh
    /// interval unless `toml` sets one.
    pub fn write_config(&self, toml: &str) {
        let first = match &self.site {
            Some(name) => format!("site = \"{name}\""),
            None => "state_dir = \"state\"".to_owned(),
        };
        std::fs::write(self.dir().join("manage.toml"), format!("{first}\n{toml}\n"))
            .expect("write manage.toml");
    }

    /// The site's name on PostgreSQL (also every run's
    /// `application_name`); `None` on the file backend.
    pub fn postgres_site(&self) -> Option<&str> {
        self.site.as_deref()
    }

    /// The site's directory: every run's working directory.
    pub fn dir(&self) -> &Path {
        self.scratch.path()
    }

    /// The state directory.
    pub fn state(&self) -> PathBuf {
        self.scratch.state()
    }

    /// The site's state, opened in this process through the core API (with
    /// the default session timeout): its state directory, or its site on
    /// PostgreSQL.
    pub fn backend(&self) -> std::sync::Arc<dyn maintenance_core::Backend> {
        let mut config = maintenance_core::Config::with_state_dir(self.state());
        if let (Some(url), Some(site)) = (&self.database_url, &self.site) {
            config.backend = maintenance_core::config::BackendKind::Postgres;
            config.postgres.url = Some(
                maintenance_core::database_url::DatabaseUrl::parse(url)
                    .expect("the test server's URL"),
            );
            config.postgres.site = site.clone();
        }
        maintenance_core::backend::open(&config, maintenance_core::SystemClock::shared())
            .expect("open the site's state")
    }

    /// What the state holds of web sessions: on the file backend every
    /// entry under `sessions/` with its content (a stray file shows too),
    /// on PostgreSQL every session's key.
    pub fn sessions_written(&self) -> Vec<String> {
        if self.database_url.is_some() {
            let mut keys: Vec<String> = self
                .backend()
                .sessions()
                .expect("list the sessions")
                .into_iter()
                .map(|e| format!("{:?}", e.key))
                .collect();
            keys.sort();
            return keys;
        }
        crate::scratch::snapshot(&self.state().join("sessions"), &[])
            .into_iter()
            .map(|(path, content)| format!("{}={content}", path.display()))
            .collect()
    }

    /// The command line `mysite ARGS…`, signing with `key`, stdio piped.
    pub fn command_with_key(&self, key: &str, args: &[&str]) -> Command {
        let mut cmd = isolated(Command::new(&self.exe));
        cmd.arg0("mysite")
            .args(args)
            .current_dir(self.dir())
            .env("MYSITE_SECRET_KEY", key)
            .env("MYSITE_HOLD_DIR", self.dir().join("hold"));
        if let Some(url) = &self.database_url {
            cmd.env("MANAGE_DATABASE_URL", url);
        }
        cmd
    }

    /// Waits until a note sent with `hold=NAME` is held in the app's
    /// handler: from then on that write is in flight.
    pub fn wait_held(&self, name: &str) {
        let held = self.dir().join("hold").join(format!("{name}.held"));
        crate::wait::poll_until(&format!("the write {name} held in the app"), || {
            held.exists().then_some(())
        });
    }

    /// Lets the note held as `NAME` be saved.
    pub fn release(&self, name: &str) {
        std::fs::write(self.dir().join("hold").join(name), "").expect("release a held write");
    }

    /// The command line `mysite ARGS…`, stdio piped.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_with_key(MYSITE_KEY, args)
    }

    /// Starts `mysite ARGS…`.
    pub fn spawn(&self, args: &[&str]) -> Proc {
        Proc::spawn(self.command(args))
    }

    /// Runs `mysite ARGS…` to its end (within the hang guard).
    pub fn run(&self, args: &[&str]) -> Outcome {
        self.spawn(args).finish()
    }

    /// Runs `mysite ARGS…` to its end and checks that it exited 0.
    pub fn run_ok(&self, args: &[&str]) -> Outcome {
        let out = self.run(args);
        assert_eq!(out.code(), Some(0), "`mysite {}`: {out}", args.join(" "));
        out
    }

    /// `mysite offline status`'s line: `Status: <MODE> - Active sessions: <N>`.
    pub fn status(&self) -> String {
        let out = self.run_ok(&["offline", "status"]);
        out.stdout.first().cloned().unwrap_or_default()
    }

    /// Starts `mysite runserver --addr 127.0.0.1:0 ARGS…` and waits until it
    /// says where it serves.
    pub fn serve(&self, args: &[&str]) -> Server {
        self.serve_with_key(MYSITE_KEY, args)
    }

    /// The same, signing bypass cookies with `key`.
    pub fn serve_with_key(&self, key: &str, args: &[&str]) -> Server {
        let mut all = vec!["runserver", "--addr", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut proc = Proc::spawn(self.command_with_key(key, &all));
        let line = proc.line();
        let addr = line
            .strip_prefix("serving http://")
            .and_then(|rest| rest.strip_suffix('/'))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("`mysite {}` said {line:?}", all.join(" ")));
        Server { proc, addr }
    }

    /// Starts `mysite offline on --timeout 300 ARGS…` and waits until it
    /// says it waits for a live session: from then on the site is PENDING,
    /// held by that process (dropping it kills it).
    pub fn go_pending(&self, args: &[&str]) -> Proc {
        let mut all = vec!["offline", "on", "--timeout", "300"];
        all.extend_from_slice(args);
        let mut p = self.spawn(&all);
        loop {
            let line = p.line();
            if line.starts_with("Active sessions detected") {
                return p;
            }
            assert!(
                !line.starts_with("Status:"),
                "`mysite {}` did not wait for a session: {line:?}",
                all.join(" ")
            );
        }
    }
}

/// A running `mysite runserver`; killed when dropped.
#[derive(Debug)]
pub struct Server {
    proc: Proc,
    addr: std::net::SocketAddr,
}

impl Server {
    /// Where it listens.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Stops it as an operator would (SIGTERM: a graceful shutdown) and
    /// returns how it ended (within the hang guard).
    pub fn stop(self) -> Outcome {
        send_signal(self.proc.pid(), rustix::process::Signal::TERM);
        self.proc.finish()
    }

    /// What it has logged on stderr so far.
    pub fn stderr_so_far(&self) -> String {
        self.proc.stderr_so_far()
    }

    /// `GET path` with `headers`, from 127.0.0.1 (no redirect followed).
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        http_get(self.addr, path, headers)
    }

    /// `POST path` with `headers` and no body.
    pub fn post(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        http_post(self.addr, path, headers)
    }

    /// `POST path` of the form `form` (`text=hi&hold=w1`) with `headers`,
    /// over a plain socket.
    pub fn post_form(&self, path: &str, headers: &[(&str, &str)], form: &str) -> Reply {
        crate::http::raw_form(self.addr, None, "POST", path, headers, form)
    }

    /// `GET path` with `headers` from the local address `from` (say
    /// 127.0.0.2), over a plain socket.
    pub fn get_from(&self, from: std::net::IpAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
        raw_get(self.addr, Some(from), path, headers)
    }

    /// Polls `GET path` until `done` holds for the reply, and returns it;
    /// fails the test after the hang guard.
    pub fn get_until(
        &self,
        what: &str,
        path: &str,
        headers: &[(&str, &str)],
        done: impl Fn(&Reply) -> bool,
    ) -> Reply {
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            let r = self.get(path, headers);
            if done(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "still not {what} after {HANG_GUARD:?}; GET {path} answers {r}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
