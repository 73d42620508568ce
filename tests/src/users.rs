//! The Unix users the permission tests run processes as.

use std::process::{Command, Stdio};

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

fn id_of(flag: &str) -> Option<u32> {
    let out = Command::new("id")
        .args([flag, UNPRIVILEGED])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

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
    if id_of("-u").is_none() {
        // Tests run in parallel processes: another may create it first.
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                UNPRIVILEGED,
            ])
            .output()
            .expect("run useradd");
        if id_of("-u").is_none() {
            panic!(
                "cannot create the user {UNPRIVILEGED}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let uid = id_of("-u").expect("the uid of manage-test");
    let gid = id_of("-g").expect("the gid of manage-test");
    assert_ne!(uid, 0, "{UNPRIVILEGED} must not be root");
    Some(User { uid, gid })
}
