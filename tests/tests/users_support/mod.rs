//! What the `users_*` tests share: the Unix users of a real deployment,
//! created when missing, a site whose state every one of them uses, and
//! runs of the example site's binary as any of them.
//!
//! - root, the operator: runs `offline on`/`off`;
//! - `manage-deploy`, the deploy user: runs the site's tracked commands;
//! - `manage-web`, the web app's user: runs `mysite runserver`;
//! - both of the latter are members of the group `manage-site`, the group
//!   `manage.toml` names (`group = "manage-site"`);
//! - `manage-other` (with its own group `manage-other`) belongs to nobody's
//!   group: a stranger, a wrong group, and nginx's workers.
//!
//! A process runs as a user through `setpriv --reuid --regid
//! --init-groups` (util-linux), which sets the supplementary groups the
//! way a login or systemd's `User=` does (`CommandExt::groups` is not
//! stable; without it std clears them). Only root can do this: when not
//! root, each test prints a `SKIPPED` line and returns.

#![allow(dead_code)]

use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use manage_tests::{HANG_GUARD, MYSITE_KEY, Outcome, Proc, Reply, Scratch, http_get, http_post};

/// The example site's binary.
pub const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");
/// The group that shares the state.
pub const GROUP: &str = "manage-site";
/// The deploy user (a member of [`GROUP`]).
pub const DEPLOY: &str = "manage-deploy";
/// The web app's user (a member of [`GROUP`]).
pub const WEB: &str = "manage-web";
/// A user outside [`GROUP`], with its own group of the same name.
pub const OTHER: &str = "manage-other";

/// Where `setpriv` lives (util-linux, on every Debian).
const SETPRIV: &str = "/usr/bin/setpriv";

/// Who runs a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// root, the operator.
    Root,
    /// The deploy user.
    Deploy,
    /// The web app's user.
    Web,
    /// A user outside the group.
    Other,
}

impl Who {
    /// The user's name.
    pub fn name(self) -> &'static str {
        match self {
            Who::Root => "root",
            Who::Deploy => DEPLOY,
            Who::Web => WEB,
            Who::Other => OTHER,
        }
    }
}

/// The ids of the deployment's users and groups.
#[derive(Debug, Clone, Copy)]
pub struct Users {
    /// The deploy user's uid.
    pub deploy: u32,
    /// The web user's uid.
    pub web: u32,
    /// The outsider's uid.
    pub other: u32,
    /// [`GROUP`]'s gid.
    pub site_gid: u32,
    /// The outsider's own group's gid.
    pub other_gid: u32,
}

impl Users {
    /// The uid of `who`.
    pub fn uid(&self, who: Who) -> u32 {
        match who {
            Who::Root => 0,
            Who::Deploy => self.deploy,
            Who::Web => self.web,
            Who::Other => self.other,
        }
    }
}

fn id(flag: &str, name: &str) -> Option<String> {
    let out = Command::new("id")
        .args([flag, name])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn gid_of_group(name: &str) -> Option<u32> {
    let out = Command::new("getent")
        .args(["group", name])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .nth(2)?
        .trim()
        .parse()
        .ok()
}

/// Runs an account tool (`groupadd`, `useradd`, `usermod`) until `done`
/// holds: another test process may hold the account files' lock for a
/// moment, or create the same account first.
fn account_tool(args: &[&str], done: impl Fn() -> bool) {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        if done() {
            return;
        }
        let out = Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", args[0]));
        if done() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn member_of(user: &str, group: &str) -> bool {
    id("-Gn", user).is_some_and(|groups| groups.split_whitespace().any(|g| g == group))
}

/// The deployment's users and groups, created when missing (as root,
/// serialised between test processes by a lock file). When not root,
/// prints `SKIPPED <test>: …` and returns `None`.
pub fn users(test: &str) -> Option<Users> {
    if !rustix::process::geteuid().is_root() {
        eprintln!(
            "SKIPPED {test}: needs root — it runs processes as the users {DEPLOY} and {WEB} \
             (group {GROUP}) and {OTHER}, which only root can create and switch to"
        );
        return None;
    }
    assert!(
        Path::new(SETPRIV).exists(),
        "{SETPRIV} is missing: these tests run processes as other users with it \
         (apt-get install util-linux)"
    );
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("manage-tests-users.lock"))
        .expect("open the users' lock file");
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .expect("lock the users' lock file");
    let nologin = [
        "--system",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
    ];
    account_tool(&["groupadd", "--system", GROUP], || {
        gid_of_group(GROUP).is_some()
    });
    for user in [DEPLOY, WEB] {
        let mut args = vec!["useradd"];
        args.extend(nologin);
        // Its own group, as useradd makes by default on Debian (or the one
        // of that name a previous run left).
        if gid_of_group(user).is_some() {
            args.extend(["--gid", user]);
        } else {
            args.push("--user-group");
        }
        args.extend(["--groups", GROUP, user]);
        account_tool(&args, || id("-u", user).is_some());
        account_tool(&["usermod", "--append", "--groups", GROUP, user], || {
            member_of(user, GROUP)
        });
    }
    account_tool(&["groupadd", "--system", OTHER], || {
        gid_of_group(OTHER).is_some()
    });
    let mut args = vec!["useradd"];
    args.extend(nologin);
    args.extend(["--gid", OTHER, OTHER]);
    account_tool(&args, || id("-u", OTHER).is_some());
    assert!(
        !member_of(OTHER, GROUP),
        "{OTHER} must not be a member of {GROUP}: remove it (gpasswd -d {OTHER} {GROUP})"
    );
    drop(lock);
    let uid = |name: &str| -> u32 {
        id("-u", name)
            .and_then(|u| u.parse().ok())
            .unwrap_or_else(|| panic!("the uid of {name}"))
    };
    let users = Users {
        deploy: uid(DEPLOY),
        web: uid(WEB),
        other: uid(OTHER),
        site_gid: gid_of_group(GROUP).expect("the site's group"),
        other_gid: gid_of_group(OTHER).expect("the other group"),
    };
    for who in [Who::Deploy, Who::Web, Who::Other] {
        assert_ne!(users.uid(who), 0, "{} must not be root", who.name());
    }
    // Every directory above the binary must let them reach it.
    for dir in Path::new(MYSITE).ancestors().skip(1) {
        if let Ok(meta) = std::fs::metadata(dir) {
            assert!(
                meta.permissions().mode() & 0o001 != 0,
                "{DEPLOY} and {WEB} cannot reach {MYSITE}: {} is not searchable by others; \
                 chmod o+x it or build elsewhere (CARGO_TARGET_DIR), as .ci/run does",
                dir.display()
            );
        }
    }
    Some(users)
}

/// `chown uid:gid path` (not following a link).
pub fn chown(path: &Path, uid: Option<u32>, gid: Option<u32>) {
    std::os::unix::fs::lchown(path, uid, gid)
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

/// `chmod mode path`.
pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Mode (the low 12 bits), owner and group of `path` (not following a link).
pub fn meta(path: &Path) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("inspect {}: {e}", path.display()));
    (m.mode() & 0o7777, m.uid(), m.gid())
}

/// The start of a command line that runs the rest as `who`: `setpriv
/// --reuid=USER --regid=GID --init-groups --`, or nothing for root.
fn as_user(who: Who) -> Vec<OsString> {
    if who == Who::Root {
        return Vec::new();
    }
    let name = who.name();
    let gid = id("-g", name).unwrap_or_else(|| panic!("the gid of {name}"));
    [
        SETPRIV.to_owned(),
        format!("--reuid={name}"),
        format!("--regid={gid}"),
        "--init-groups".to_owned(),
        "--".to_owned(),
    ]
    .map(OsString::from)
    .to_vec()
}

/// A deployment of the example site in a scratch directory reachable by
/// every user: `manage.toml` (state in `var/state`, the group
/// [`GROUP`], `refresh_interval = "50ms"`, plus the test's own lines),
/// and `var/`, owned by root and group-writable by [`GROUP`], so that any
/// member may be the first to run and create the state. Every run has
/// the site's directory as its working directory, `MYSITE_SECRET_KEY`
/// set, and neither `RUST_BACKTRACE`, a task token, `MANAGE_STATE_DIR`
/// nor `MANAGE_CONFIG` in its environment.
#[derive(Debug)]
pub struct Site {
    scratch: Scratch,
}

impl Site {
    /// A site sharing its state with [`GROUP`], with `extra` lines in
    /// `manage.toml`.
    pub fn new(users: &Users, extra: &str) -> Site {
        Site::with_config(users, &format!("group = \"{GROUP}\"\n{extra}"))
    }

    /// A site whose `manage.toml` holds `toml` after the state directory
    /// and refresh interval (no group unless `toml` names one).
    pub fn with_config(users: &Users, toml: &str) -> Site {
        let site = Site {
            scratch: Scratch::new(),
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
        let mut argv = as_user(who);
        if let Some(mask) = umask {
            argv.extend(
                [
                    "sh".to_owned(),
                    "-c".to_owned(),
                    format!("umask {mask:03o}; exec \"$@\""),
                    "sh".to_owned(),
                ]
                .map(OsString::from),
            );
        }
        argv.push(MYSITE.into());
        argv.extend(args.iter().map(OsString::from));
        let mut cmd = manage_tests::isolated(Command::new(&argv[0]));
        cmd.args(&argv[1..])
            .current_dir(self.dir())
            .env("MYSITE_SECRET_KEY", MYSITE_KEY);
        cmd
    }

    /// The command line `sh -c SCRIPT` run by `who` in the site's
    /// directory (umask 022), stdio piped: what a user could do by hand.
    pub fn shell_command(&self, who: Who, script: &str) -> Command {
        let mut argv = as_user(who);
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
        let mut argv = as_user(who);
        argv.extend(["sh", "-c", "umask 077; exec \"$@\" 2>&1", "sh", MYSITE].map(OsString::from));
        argv.extend(args.iter().map(OsString::from));
        let mut cmd = manage_tests::isolated(Command::new(&argv[0]));
        cmd.args(&argv[1..])
            .current_dir(self.dir())
            .env("MYSITE_SECRET_KEY", MYSITE_KEY);
        Proc::spawn(cmd)
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
        manage_tests::send_signal(self.proc.pid(), rustix::process::Signal::TERM);
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
        manage_tests::poll_until(what, || {
            let r = self.get("/", session);
            done(&r).then_some(r)
        })
    }
}
