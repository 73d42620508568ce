//! Binaries already deployed, which cannot be changed, against the state
//! this version writes for the read-only tier: they must read READONLY as
//! OFFLINE (their layers fail closed), never as ONLINE, never call the
//! record corrupt (their message would tell the operator to `offline off
//! --force` it), and agree with this version on the OFFLINE marker, so
//! that neither puts right what the other wrote.
//!
//! Two tests, because building the released binary is not cheap:
//!
//! - `the_released_parser_reads_every_tier_as_a_mode_it_knows_never_online`
//!   runs always: it feeds every record this version writes to the record
//!   parser of the released version (commit [`RELEASED`]), kept here
//!   verbatim ([`released`]);
//! - `the_released_binary_reads_the_read_only_tier_as_offline` is ignored
//!   by default: it builds `manage` from that commit (`git archive`, then
//!   `cargo build -p manage` with a target directory of its own under this
//!   test's target temp directory, kept between runs: the first run
//!   compiles every dependency, a few minutes on two cores; later ones
//!   reuse it) and runs it against a state this version wrote. Run it with
//!   `cargo nextest run -p manage-tests --test compat_released --run-ignored only`.
//!   It skips, saying so and how to fetch it, when cargo, git or tar is not
//!   on PATH or the commit is not in the clone (a shallow clone).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use maintenance_core::backend::{ModeChange, ReadOnlyStart};
use maintenance_core::{Backend, Mode};

/// The commit the read-only tier was built on: what is deployed today.
const RELEASED: &str = "1fd3ea288ba0083336a671f1854f82c0a47ee1e9";

/// The record parser of commit [`RELEASED`] (maintenance-core/src/mode.rs),
/// verbatim but for doc comments: three modes, unknown keys ignored.
mod released {
    use maintenance_core::Timestamp;
    use serde::Deserialize;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
    #[serde(rename_all = "UPPERCASE")]
    pub enum Mode {
        Online,
        Pending,
        Offline,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
    #[serde(untagged)]
    pub enum RetryAfter {
        Seconds(u64),
        At(Timestamp),
    }

    #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
    #[allow(dead_code)]
    pub struct ModeRecord {
        pub mode: Mode,
        pub since: Timestamp,
        pub by: String,
        pub pid: u32,
        #[serde(default)]
        pub message: Option<String>,
        #[serde(default)]
        pub retry_after: Option<RetryAfter>,
        #[serde(default)]
        pub bypass: Option<String>,
        #[serde(default)]
        pub generation: u64,
    }

    /// The released policy's shape (maintenance-core/src/policy.rs: four
    /// keys, unknown ones ignored), its values read as text.
    #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
    #[allow(dead_code)]
    pub struct Policy {
        #[serde(default)]
        pub tracking: Option<String>,
        #[serde(default)]
        pub instances: Option<String>,
        #[serde(default)]
        pub maintenance: Option<String>,
        #[serde(default)]
        pub drain: Option<String>,
    }
}

fn open(state: &Path) -> std::sync::Arc<dyn Backend> {
    maintenance_core::backend::open(
        &maintenance_core::Config::with_state_dir(state),
        maintenance_core::SystemClock::shared(),
    )
    .unwrap()
}

fn change() -> ModeChange {
    ModeChange::by_this_process().message(Some("Upgrading the database".into()))
}

/// What the released parser makes of the stored record, and whether the
/// OFFLINE marker exists.
fn as_released(state: &Path) -> (released::ModeRecord, bool) {
    let json = std::fs::read(state.join("mode.json")).unwrap();
    let record = serde_json::from_slice(&json).unwrap_or_else(|e| {
        panic!(
            "the released binary would call this record corrupt ({e}) and tell its operator to \
             `offline off --force` it: {}",
            String::from_utf8_lossy(&json)
        )
    });
    (record, state.join("OFFLINE").exists())
}

/// Takes a fresh state in `state` through each mode of the read-only tier,
/// calling `look` with the mode in force at each: READONLY_PENDING (held by
/// a waiter), READONLY, PENDING from READONLY (held), its lapse back to
/// READONLY, then OFFLINE.
fn through_the_tier(state: &Path, mut look: impl FnMut(Mode, &str)) {
    let b = open(state);
    let waiter = match b.begin_read_only(&change()).unwrap() {
        ReadOnlyStart::Waiting { waiter, .. } => waiter,
        ReadOnlyStart::Already(r) => panic!("already {}", r.mode),
    };
    look(Mode::ReadOnlyPending, "READONLY_PENDING");
    b.complete_read_only(waiter.as_ref(), None).unwrap();
    drop(waiter);
    look(Mode::ReadOnly, "READONLY");
    let pending = match b.begin_pending(&change()).unwrap() {
        maintenance_core::backend::PendingStart::Waiting { waiter, .. } => waiter,
        other => panic!("PENDING from READONLY, got {other:?}"),
    };
    look(Mode::Pending, "PENDING from READONLY");
    drop(pending);
    look(Mode::ReadOnly, "a lapsed PENDING from READONLY");
    let pending = match b.begin_pending(&change()).unwrap() {
        maintenance_core::backend::PendingStart::Waiting { waiter, .. } => waiter,
        other => panic!("PENDING from READONLY, got {other:?}"),
    };
    b.complete_offline(pending.as_ref(), None).unwrap();
    drop(pending);
    look(Mode::Offline, "OFFLINE from READONLY");
}

#[test]
fn the_released_parser_reads_every_tier_as_a_mode_it_knows_never_online() {
    if manage_tests::file_backend_only(
        "the released version knows only the state directory: this is about its files",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let mut seen = Vec::new();
    through_the_tier(&state, |mode, what| {
        let view = open(&state).mode().unwrap();
        assert_eq!(view.mode, mode, "{what}");
        let (old, marker) = as_released(&state);
        assert_eq!(
            old.mode == released::Mode::Offline,
            marker,
            "{what}: the released binary's marker rule (present exactly while OFFLINE) \
             disagrees with the marker this version left, so each would put the other's right"
        );
        assert_ne!(old.mode, released::Mode::Online, "{what}: read as ONLINE");
        assert_eq!(
            old.message.as_deref(),
            Some("Upgrading the database"),
            "{what}"
        );
        seen.push((what.to_owned(), old.mode));
    });
    let expected = [
        // A drain that lapses to ONLINE with its waiter, as the released
        // binary's PENDING does: it may read it so.
        ("READONLY_PENDING", released::Mode::Pending),
        ("READONLY", released::Mode::Offline),
        // Its PENDING lapses to ONLINE; this one lapses to READONLY.
        ("PENDING from READONLY", released::Mode::Offline),
        ("a lapsed PENDING from READONLY", released::Mode::Offline),
        ("OFFLINE from READONLY", released::Mode::Offline),
    ];
    assert_eq!(
        seen,
        expected.map(|(w, m)| (w.to_owned(), m)),
        "what the released binary reads in each mode"
    );
    // A task's policy with the new access axis still parses; a task started
    // during READONLY names a mode it does not know: it cannot read that
    // record and counts the held task as live, holding off OFFLINE (fail
    // closed).
    let p: released::Policy = serde_json::to_value(
        maintenance_core::Policy::DEFAULT.access(maintenance_core::policy::Access::ReadOnly),
    )
    .and_then(serde_json::from_value)
    .unwrap();
    assert_eq!(p.maintenance.as_deref(), Some("refused"));
    assert!(serde_json::from_value::<released::Mode>(serde_json::json!(Mode::ReadOnly)).is_err());
}

/// `git` and `cargo`, or why not.
fn tools() -> Result<(), String> {
    for tool in ["cargo", "git", "tar"] {
        let found = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(format!("`{tool}` is not on PATH"));
        }
    }
    Ok(())
}

/// Whether this clone has [`RELEASED`] (a shallow clone has not), or why
/// not.
fn released_commit_present() -> Result<(), String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let has = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["cat-file", "-e", &format!("{RELEASED}^{{commit}}")])
        .status()
        .is_ok_and(|s| s.success());
    if has {
        Ok(())
    } else {
        Err(format!(
            "commit {RELEASED} (the released version) is not in this clone (a shallow clone?): \
             fetch the history (`git fetch --unshallow`) to run it"
        ))
    }
}

/// The released `manage`, built once from [`RELEASED`] under this test's
/// target temp directory (its sources and its target directory are kept,
/// so a second run only checks that nothing changed).
fn released_manage() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("released-{}", &RELEASED[..7]));
    let src = base.join("src");
    if !src.join("Cargo.toml").exists() {
        let has = Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["cat-file", "-e", &format!("{RELEASED}^{{commit}}")])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            has,
            "commit {RELEASED} (the released version) is not in this clone: fetch the history \
             (`git fetch --unshallow`) to run this test"
        );
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&src).unwrap();
        let archive = Command::new("sh")
            .arg("-c")
            .arg("git -C \"$1\" archive \"$2\" | tar -x -C \"$3\"")
            .args([
                "sh",
                repo.to_str().unwrap(),
                RELEASED,
                src.to_str().unwrap(),
            ])
            .status()
            .unwrap();
        assert!(archive.success(), "git archive {RELEASED} failed");
    }
    let target = base.join("target");
    let build = |offline: bool| {
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&src)
            .args(["build", "--locked", "-p", "manage", "--bin", "manage"])
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS");
        if offline {
            cmd.arg("--offline");
        }
        cmd.output().unwrap()
    };
    let mut out = build(true);
    if !out.status.success() {
        out = build(false);
    }
    assert!(
        out.status.success(),
        "building the released manage failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target.join("debug").join("manage")
}

/// The released binary against `state`: (exit code, stdout and stderr).
fn released_run(exe: &Path, state: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(exe)
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("MANAGE_TASK")
        .env_remove("MANAGE_CONFIG")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
#[ignore = "builds the released manage from git (minutes the first time): \
            cargo nextest run -p manage-tests --test compat_released --run-ignored only"]
fn the_released_binary_reads_the_read_only_tier_as_offline() {
    if manage_tests::file_backend_only(
        "the released version knows only the state directory: this is about its files",
    ) {
        return;
    }
    if let Err(why) = tools().and_then(|()| released_commit_present()) {
        eprintln!("SKIPPED: {why}: this test builds the released manage with cargo from git");
        return;
    }
    let old = released_manage();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    through_the_tier(&state, |mode, what| {
        let (code, text) = released_run(&old, &state, &["offline", "status", "--exit-code"]);
        assert!(
            !text.contains("corrupt") && !text.contains("--force"),
            "{what}: the released binary: {text}"
        );
        let expected = if mode == Mode::ReadOnlyPending {
            (3, "Status: PENDING")
        } else {
            (4, "Status: OFFLINE")
        };
        assert_eq!(code, expected.0, "{what}: {text}");
        assert!(text.starts_with(expected.1), "{what}: {text}");
        // Its look at the state puts nothing "right": the markers stay as
        // this version left them.
        let view = open(&state).mode().unwrap();
        assert!(
            view.stray_marker.is_none(),
            "{what}: {:?}",
            view.stray_marker
        );
    });
    // While READONLY, its `offline on` finds the site OFFLINE, its `offline
    // off` turns it ONLINE; the READONLY marker it does not know is
    // removed by this version's next look.
    let b = open(&state);
    b.go_read_only(&change()).unwrap();
    let (code, text) = released_run(&old, &state, &["offline", "on"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("Status: OFFLINE"), "{text}");
    assert_eq!(b.mode().unwrap().mode, Mode::ReadOnly, "it changed nothing");
    let (code, text) = released_run(&old, &state, &["offline", "off"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("Status: ONLINE"), "{text}");
    assert!(
        state.join("READONLY").exists(),
        "the released binary knows no READONLY marker"
    );
    assert_eq!(open(&state).mode().unwrap().mode, Mode::Online);
    assert!(
        !state.join("READONLY").exists(),
        "this version's next look removed it"
    );
}
