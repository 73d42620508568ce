//! A deployment of the example site whose state its users share
//! (`tests/users_*.rs`): a scratch directory every user can reach, runs of
//! the site's binary as any of the users of [`crate::users`], and its web
//! app run as one of them.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::http::{Reply, http_get, http_post};
use crate::pid::send_signal;
use crate::process::{Outcome, Proc, isolated};
use crate::scratch::{Scratch, chmod, chown};
use crate::users::{DEPLOY, GROUP, Users, WEB, Who, assert_reachable};
use crate::wait::poll_until;
use crate::web::MYSITE_KEY;

/// A deployment of the example site in a scratch directory reachable by
/// every user: `manage.toml` (state in `var/state`, the group
/// [`GROUP`], `refresh_interval = "50ms"`, plus the test's own lines),
/// and `var/`, owned by root and group-writable by [`GROUP`], so that any
/// member may be the first to run and create the state. Every run has
/// the site's directory as its working directory, `MYSITE_SECRET_KEY`
/// set, and neither `RUST_BACKTRACE`, a task token, `MANAGE_STATE_DIR`
/// nor `MANAGE_CONFIG` in its environment.
#[derive(Debug)]
pub struct SharedSite {
    scratch: Scratch,
    exe: PathBuf,
}

impl SharedSite {
    /// A site run with `exe` (`env!("CARGO_BIN_EXE_e2e-mysite")`),
    /// sharing its state with [`GROUP`], with `extra` lines in
    /// `manage.toml`.
    pub fn new(exe: impl Into<PathBuf>, users: &Users, extra: &str) -> SharedSite {
        SharedSite::with_config(exe, users, &format!("group = \"{GROUP}\"\n{extra}"))
    }

    /// A site run with `exe` whose `manage.toml` holds `toml` after the
    /// state directory and refresh interval (no group unless `toml` names
    /// one). Fails the test, saying what to do, when the deployment's users
    /// cannot reach `exe`.
    pub fn with_config(exe: impl Into<PathBuf>, users: &Users, toml: &str) -> SharedSite {
        let exe = exe.into();
        assert_reachable(&exe, &format!("{DEPLOY} and {WEB}"));
        let site = SharedSite {
            scratch: Scratch::new(),
            exe,
        };
        let var = site.var();
        std::fs::create_dir(&var).expect("create var/");
        chown(&var, Some(0), Some(users.site_gid));
        chmod(&var, 0o775);
        site.write_config(toml);
        site
    }

    /// Rewrites `manage.toml` with `toml` after the state directory and
    /// refresh interval.
    pub fn write_config(&self, toml: &str) {
        let path = self.dir().join("manage.toml");
        std::fs::write(
            &path,
            format!("state_dir = \"var/state\"\nrefresh_interval = \"50ms\"\n{toml}\n"),
        )
        .expect("write manage.toml");
        chmod(&path, 0o644);
    }

    /// The site's directory.
    pub fn dir(&self) -> &Path {
        self.scratch.path()
    }

    /// The state directory's parent, `var/`.
    pub fn var(&self) -> PathBuf {
        self.dir().join("var")
    }

    /// The state directory.
    pub fn state(&self) -> PathBuf {
        self.var().join("state")
    }

    /// The state directory as manage names it in messages.
    pub fn state_text(&self) -> String {
        self.state().display().to_string()
    }

    /// A directory outside the state, owned by `uid` (created on first use).
    pub fn outside(&self, uid: u32) -> PathBuf {
        let p = self.dir().join("outside");
        if !p.exists() {
            std::fs::create_dir(&p).expect("create outside/");
        }
        chown(&p, Some(uid), None);
        chmod(&p, 0o755);
        p
    }

    /// The command line `mysite ARGS…` run by `who`, with `umask` when
    /// given (through `sh -c 'umask …; exec "$@"'`), stdio piped.
    pub fn command(&self, who: Who, umask: Option<u32>, args: &[&str]) -> Command {
        let shell = umask.map(|mask| format!("umask {mask:03o}; exec \"$@\""));
        self.mysite_through(who, shell, args)
    }

    /// The command line `mysite ARGS…` run by `who`, through `sh -c SHELL`
    /// when given (a script that ends with `exec "$@"`), stdio piped.
    fn mysite_through(&self, who: Who, shell: Option<String>, args: &[&str]) -> Command {
        let mut argv = who.argv_prefix();
        if let Some(script) = shell {
            argv.extend(
                ["sh".to_owned(), "-c".to_owned(), script, "sh".to_owned()].map(OsString::from),
            );
        }
        argv.push(self.exe.clone().into());
        argv.extend(args.iter().map(OsString::from));
        let mut cmd = isolated(Command::new(&argv[0]));
        cmd.args(&argv[1..])
            .current_dir(self.dir())
            .env("MYSITE_SECRET_KEY", MYSITE_KEY);
        cmd
    }

    /// The command line `sh -c SCRIPT` run by `who` in the site's
    /// directory (umask 022), stdio piped: what a user could do by hand.
    pub fn shell_command(&self, who: Who, script: &str) -> Command {
        let mut argv = who.argv_prefix();
        argv.extend(["sh", "-c", &format!("umask 022; {script}")].map(OsString::from));
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .current_dir(self.dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs `sh -c SCRIPT` as `who` in the site's directory (umask 022)
    /// and checks that it exited 0: what a user could do by hand.
    pub fn shell(&self, who: Who, script: &str) -> Outcome {
        let out = Proc::spawn(self.shell_command(who, script)).finish();
        assert_eq!(out.code(), Some(0), "`{script}` as {}: {out}", who.name());
        out
    }

    /// Starts `mysite ARGS…` as `who`, umask 077.
    pub fn spawn(&self, who: Who, args: &[&str]) -> Proc {
        Proc::spawn(self.command(who, Some(0o077), args))
    }

    /// Starts `mysite ARGS…` as `who`, umask 077, with its standard error
    /// on its standard output, so that a test reads every line it says as
    /// it says it.
    pub fn spawn_merged(&self, who: Who, args: &[&str]) -> Proc {
        let shell = "umask 077; exec \"$@\" 2>&1".to_owned();
        Proc::spawn(self.mysite_through(who, Some(shell), args))
    }

    /// Runs `mysite ARGS…` as `who` to its end, umask 077: whatever a
    /// process creates must not depend on its umask.
    pub fn run(&self, who: Who, args: &[&str]) -> Outcome {
        self.spawn(who, args).finish()
    }

    /// Runs `mysite ARGS…` as `who` and checks that it exited 0.
    pub fn run_ok(&self, who: Who, args: &[&str]) -> Outcome {
        let out = self.run(who, args);
        assert_eq!(
            out.code(),
            Some(0),
            "`mysite {}` as {}: {out}",
            args.join(" "),
            who.name()
        );
        out
    }

    /// `mysite offline status`'s line, as `who` sees it.
    pub fn status_line(&self, who: Who) -> String {
        let out = self.run_ok(who, &["offline", "status"]);
        out.stdout.first().cloned().unwrap_or_default()
    }

    /// `mysite offline status --json`, as `who` sees it.
    pub fn status_json(&self, who: Who) -> serde_json::Value {
        let out = self.run_ok(who, &["offline", "status", "--json"]);
        serde_json::from_str(&out.stdout.join("\n"))
            .unwrap_or_else(|e| panic!("status --json as {} is not JSON ({e}): {out}", who.name()))
    }

    /// Starts `mysite runserver --addr 127.0.0.1:0` as `who` (umask 077)
    /// and waits until it says where it serves.
    pub fn serve(&self, who: Who) -> WebApp {
        let mut proc = self.spawn(who, &["runserver", "--addr", "127.0.0.1:0"]);
        let line = proc.line();
        let addr = line
            .strip_prefix("serving http://")
            .and_then(|rest| rest.strip_suffix('/'))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("`mysite runserver` as {} said {line:?}", who.name()));
        WebApp { proc, addr }
    }

    /// Every entry of the state directory, its path relative to the state,
    /// with mode, owner and group.
    pub fn tree(&self) -> Vec<(PathBuf, std::fs::FileType, u32, u32, u32)> {
        fn walk(root: &Path, p: &Path, out: &mut Vec<(PathBuf, std::fs::FileType, u32, u32, u32)>) {
            let m = std::fs::symlink_metadata(p)
                .unwrap_or_else(|e| panic!("inspect {}: {e}", p.display()));
            let rel = p
                .strip_prefix(root)
                .expect("inside the state")
                .to_path_buf();
            out.push((rel, m.file_type(), m.mode() & 0o7777, m.uid(), m.gid()));
            if m.file_type().is_dir() {
                let mut names: Vec<PathBuf> = std::fs::read_dir(p)
                    .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
                    .map(|e| e.expect("a directory entry").path())
                    .collect();
                names.sort();
                for child in names {
                    walk(root, &child, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.state(), &self.state(), &mut out);
        out
    }

    /// Asserts the modes a shared state must have, whoever created what
    /// and whatever their umask: the state directory 2771 (setgid, and
    /// only search for others, which nginx's workers need), every
    /// directory inside 2770, every file 0660, everything in [`GROUP`]:
    /// nothing others can list or open, and so lock. Session entries are
    /// empty files whose names are all that matters (their mode is left to
    /// the umask): only their group and that others have no permission are
    /// checked. Returns the owners seen, by uid.
    pub fn assert_shared_modes(&self, users: &Users, context: &str) -> Vec<u32> {
        let mut owners = Vec::new();
        for (rel, ft, mode, uid, gid) in self.tree() {
            let shown = self.state().join(&rel);
            let shown = shown.display();
            assert!(
                !ft.is_symlink(),
                "{context}: {shown} is a symlink in a state nobody tampered with"
            );
            assert_eq!(
                gid, users.site_gid,
                "{context}: {shown} (mode {mode:04o}, uid {uid}) is not in group {GROUP}"
            );
            if rel.as_os_str().is_empty() {
                assert_eq!(
                    mode, 0o2771,
                    "{context}: the state directory {shown} has mode {mode:04o}"
                );
            } else if ft.is_dir() {
                assert_eq!(
                    mode, 0o2770,
                    "{context}: directory {shown} has mode {mode:04o}"
                );
            } else if !rel.starts_with("sessions") {
                assert_eq!(mode, 0o660, "{context}: file {shown} has mode {mode:04o}");
            } else {
                assert_eq!(
                    mode & 0o007,
                    0,
                    "{context}: session entry {shown} has mode {mode:04o}"
                );
            }
            if !owners.contains(&uid) {
                owners.push(uid);
            }
        }
        owners
    }
}

/// A running `mysite runserver`; killed when dropped.
#[derive(Debug)]
pub struct WebApp {
    proc: Proc,
    addr: std::net::SocketAddr,
}

impl WebApp {
    /// The process.
    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// Where it listens.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Stops it with SIGTERM, as systemd does, and returns what it said.
    pub fn stop(mut self) -> Outcome {
        send_signal(self.proc.pid(), rustix::process::Signal::TERM);
        self.proc.wait_exit();
        self.proc.finish()
    }

    /// `GET path`, with the session cookie when given.
    pub fn get(&self, path: &str, session: Option<&str>) -> Reply {
        let cookie = session.map(|s| format!("sessionid={s}"));
        let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("Cookie", c.as_str())).collect();
        http_get(self.addr, path, &headers)
    }

    /// `POST /login`: a new session; returns its id (from the cookie).
    pub fn login(&self) -> String {
        let r = http_post(self.addr, "/login", &[]);
        assert_eq!(r.status, 303, "login: {r}");
        r.cookie_value("sessionid")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| panic!("login set no session: {r}"))
    }

    /// `POST /logout` for `session`.
    pub fn logout(&self, session: &str) {
        let cookie = format!("sessionid={session}");
        let r = http_post(self.addr, "/logout", &[("Cookie", &cookie)]);
        assert_eq!(r.status, 303, "logout: {r}");
    }

    /// Polls `GET /` (with `session`) until `done` holds; returns that
    /// reply. A hang guard, not a measure of the refresh interval.
    pub fn home_until(
        &self,
        what: &str,
        session: Option<&str>,
        done: impl Fn(&Reply) -> bool,
    ) -> Reply {
        poll_until(what, || {
            let r = self.get("/", session);
            done(&r).then_some(r)
        })
    }
}
