//! The Unix users the permission tests run processes as, created when
//! missing: the unprivileged `manage-test` of the single-user tests, and the
//! users of a real deployment that share one state (`tests/users_*.rs`):
//!
//! - root, the operator: runs `offline on`/`off`;
//! - `manage-deploy`, the deploy user: runs the site's tracked commands;
//! - `manage-web`, the web app's user: runs `mysite runserver`;
//! - both of the latter are members of the group `manage-site`, the group
//!   `manage.toml` names (`group = "manage-site"`);
//! - `manage-other` (with its own group `manage-other`) belongs to nobody's
//!   group: a stranger, a wrong group, and nginx's workers.
//!
//! A deployment's process runs as its user through `setpriv --reuid
//! --regid --init-groups` (util-linux), which sets the supplementary groups
//! the way a login or systemd's `User=` does (`CommandExt::groups` is not
//! stable; without it std clears them). Only root can do this: when not
//! root, each test prints a `SKIPPED` line and returns.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::wait::HANG_GUARD;

/// An unprivileged user to run processes as.
#[derive(Debug, Clone, Copy)]
pub struct User {
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

/// The name of the unprivileged user the permission tests run as.
pub const UNPRIVILEGED: &str = "manage-test";

/// The group that shares a deployment's state.
pub const GROUP: &str = "manage-site";
/// The deploy user (a member of [`GROUP`]).
pub const DEPLOY: &str = "manage-deploy";
/// The web app's user (a member of [`GROUP`]).
pub const WEB: &str = "manage-web";
/// A user outside [`GROUP`], with its own group of the same name.
pub const OTHER: &str = "manage-other";

/// Where `setpriv` lives (util-linux, on every Debian).
const SETPRIV: &str = "/usr/bin/setpriv";

/// `id FLAG NAME`'s answer, `None` when there is no such user.
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

/// `id FLAG NAME`'s answer as a number.
fn id_number(flag: &str, name: &str) -> Option<u32> {
    id(flag, name)?.parse().ok()
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

/// The options of `useradd` for a system user that cannot log in.
const NOLOGIN: [&str; 4] = [
    "--system",
    "--no-create-home",
    "--shell",
    "/usr/sbin/nologin",
];

/// The user `manage-test`, created when missing. Only root can run a
/// process as another user, and a permission test run as root would prove
/// nothing; when not root, this says so on stderr (visible in the test's
/// output) and returns `None`, and the test skips.
pub fn unprivileged_user(test: &str) -> Option<User> {
    if !rustix::process::geteuid().is_root() {
        eprintln!(
            "SKIPPED {test}: it runs a process as the unprivileged user {UNPRIVILEGED}, \
             which needs root (as root without dropping privileges it would prove nothing)"
        );
        return None;
    }
    let mut args = vec!["useradd"];
    args.extend(NOLOGIN);
    args.push(UNPRIVILEGED);
    account_tool(&args, || id("-u", UNPRIVILEGED).is_some());
    let uid = id_number("-u", UNPRIVILEGED).expect("the uid of manage-test");
    let gid = id_number("-g", UNPRIVILEGED).expect("the gid of manage-test");
    assert_ne!(uid, 0, "{UNPRIVILEGED} must not be root");
    Some(User { uid, gid })
}

/// Fails the test, saying what to do, when `who` (a user other than root)
/// cannot reach the binary `exe` because a directory above it is not
/// searchable by others (a target directory under a private home): the
/// test would otherwise fail for the wrong reason.
pub fn assert_reachable(exe: &Path, who: &str) {
    for dir in exe.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        assert!(
            meta.permissions().mode() & 0o001 != 0,
            "{who} cannot reach {}: {} is not searchable by others; \
             chmod o+x it or build elsewhere (CARGO_TARGET_DIR), as scripts/test does",
            exe.display(),
            dir.display()
        );
    }
}

/// Who runs a process of a deployment.
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

    /// The start of a command line that runs the rest as this user:
    /// `setpriv --reuid=USER --regid=GID --init-groups --`, or nothing for
    /// root.
    pub(crate) fn argv_prefix(self) -> Vec<OsString> {
        if self == Who::Root {
            return Vec::new();
        }
        let name = self.name();
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
    account_tool(&["groupadd", "--system", GROUP], || {
        gid_of_group(GROUP).is_some()
    });
    for user in [DEPLOY, WEB] {
        let mut args = vec!["useradd"];
        args.extend(NOLOGIN);
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
    args.extend(NOLOGIN);
    args.extend(["--gid", OTHER, OTHER]);
    account_tool(&args, || id("-u", OTHER).is_some());
    assert!(
        !member_of(OTHER, GROUP),
        "{OTHER} must not be a member of {GROUP}: remove it (gpasswd -d {OTHER} {GROUP})"
    );
    drop(lock);
    let uid = |name: &str| -> u32 {
        id_number("-u", name).unwrap_or_else(|| panic!("the uid of {name}"))
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
    Some(users)
}
