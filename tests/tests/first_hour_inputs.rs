//! What a new user meets in the first hour, end to end through the real
//! binaries: duration flags take the forms `manage.toml` takes and say what
//! is wrong with the rest; a state directory is created, its missing
//! parents are not (except the default per-user one's); a shared directory
//! such as /tmp is refused as one; a permission error says its cause once
//! and points to `offline doctor`; a refusal names the binary that runs.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

use manage_tests::{Proc, Site, file_backend_only, unprivileged_user};

const MANAGE: &str = env!("CARGO_BIN_EXE_e2e-manage");
const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");

#[test]
fn duration_flags_take_units_and_say_too_large_instead_of_not_a_number() {
    let site = Site::new(MANAGE);
    let out = site.run(&["offline", "on", "--timeout", "15m"]);
    assert_eq!(out.code(), Some(0), "15m, as manage.toml takes it: {out}");
    assert!(out.text().contains("Status: OFFLINE"), "{out}");
    let out = site.run(&["--lock-timeout", "1h30m", "offline", "off"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.text().contains("Status: ONLINE"), "{out}");

    let out = site.run(&["offline", "on", "--timeout", "99999999999999999999"]);
    assert_eq!(out.code(), Some(2), "a usage error: {out}");
    assert!(out.stderr.contains("is too large"), "{out}");
    assert!(!out.stderr.contains("not a number"), "{out}");
    let out = site.run(&["offline", "on", "--timeout", "soon"]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("\"soon\" is not a duration"), "{out}");
    assert!(out.stderr.contains("15m"), "says what to write: {out}");
    assert_eq!(site.mode().mode, maintenance_core::Mode::Online);
}

#[test]
fn a_state_dir_below_a_missing_parent_is_refused_naming_it_and_nothing_is_made() {
    if file_backend_only("how a state directory is made") {
        return;
    }
    let site = Site::new(MANAGE);
    let missing = site.dir().join("nonexistent");
    let state = missing.join("a/b");
    let out = site.run(&["--state-dir", state.to_str().unwrap(), "offline", "status"]);
    out.assert_clean_error(&[
        &format!("its parent {} does not exist", missing.join("a").display()),
        "mkdir -p",
    ]);
    assert!(
        !out.text().contains("ONLINE"),
        "no healthy site reported: {out}"
    );
    assert!(!missing.exists(), "a directory was made: {out}");

    // The state directory itself is made when its parent exists.
    let here = site.dir().join("state-here");
    let out = site.run(&["--state-dir", here.to_str().unwrap(), "offline", "status"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(here.join("VERSION").exists(), "{out}");
}

#[test]
fn the_default_per_user_state_dir_is_made_with_its_parents() {
    if file_backend_only("how the default state directory is made") {
        return;
    }
    let site = Site::new(MANAGE);
    let home = site.dir().join("home");
    std::fs::create_dir(&home).unwrap();
    let mut cmd = site.command(&["offline", "status"]);
    cmd.env_remove("MANAGE_STATE_DIR")
        .env_remove("XDG_STATE_HOME")
        .env_remove("XDG_DATA_HOME")
        .env("HOME", &home);
    let out = Proc::spawn(cmd).finish();
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.text().contains("Status: ONLINE"), "{out}");
    let made = ["/.local/state/manage", "/.local/share/manage"]
        .iter()
        .any(|d| home.join(&d[1..]).join("VERSION").exists());
    assert!(made, "no state below {}: {out}", home.display());
}

#[test]
fn a_shared_directory_is_refused_as_one_without_chmod_advice() {
    if file_backend_only("a state directory's own permissions") {
        return;
    }
    let site = Site::new(MANAGE);
    // As /tmp is: writable by every user, sticky.
    let shared = site.dir().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = site.run(&["--state-dir", shared.to_str().unwrap(), "offline", "status"]);
    out.assert_clean_error(&[
        &format!("{} is a shared directory", shared.display()),
        "cannot be a state directory",
        "make a directory of its own",
    ]);
    assert!(!out.text().contains("chmod"), "{out}");
    assert!(!shared.join("VERSION").exists(), "{out}");
}

#[test]
fn a_permission_error_says_its_cause_once_and_points_to_offline_doctor() {
    if file_backend_only("a state directory the user cannot create") {
        return;
    }
    let Some(user) =
        unprivileged_user("a_permission_error_says_its_cause_once_and_points_to_offline_doctor")
    else {
        return;
    };
    // The site's directory is root's, 0755: the user cannot make the state.
    let site = Site::new(MANAGE);
    let state = site.dir().join("state");
    let mut cmd = site.command(&["--state-dir", state.to_str().unwrap(), "offline", "status"]);
    cmd.uid(user.uid).gid(user.gid);
    let out = Proc::spawn(cmd).finish();
    out.assert_clean_error(&[
        &format!("cannot create state directory {}", state.display()),
        "run `manage offline doctor`",
    ]);
    let cause = std::io::Error::from_raw_os_error(libc::EACCES).to_string();
    assert_eq!(out.stderr.matches(&cause).count(), 1, "{out}");
    assert!(!out.stderr.contains("caused by"), "{out}");
}

#[test]
fn a_required_command_s_refusal_names_the_binary_that_runs() {
    let site = Site::with_config(MYSITE, "state_dir = \"state\"\n");
    let out = site.run_mysite(&["migrate"]);
    assert_eq!(out.code(), Some(75), "{out}");
    assert!(
        out.stderr.contains("mysite offline run -- migrate"),
        "{out}"
    );
    assert!(!out.stderr.contains("manage offline run"), "{out}");
}
