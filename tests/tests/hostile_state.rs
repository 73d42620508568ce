//! Hostile input and bad state, against real processes.
//!
//! I4: nothing is ever created, read or removed outside the state
//! directory, whatever the input — command names and join tokens with `/`,
//! `..`, NUL, 10 kB strings; symlinks planted inside `tasks/`, in place of
//! `tasks/`, `pending/` or `sessions/`, and in place of the state's own
//! files. "Read" is caught by bait: an outside file that would be parsed as
//! a live task (it holds a valid record and is locked as a live task's file
//! is), an outside mode record saying OFFLINE, and a FIFO whose bytes a
//! reader would consume.
//!
//! Bad state: a corrupt, truncated, binary, empty or oversized mode record, a
//! state directory that is a file, an unknown format version, and a state
//! directory the user cannot write or even open, whose lock files it
//! cannot open either (run as the unprivileged user `manage-test`), and a
//! full disk (a tiny tmpfs, mounted as root) under a
//! mode change. Each is a clear error naming the path — never a panic —
//! and a full disk never leaves the marker and the record disagreeing.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use manage_tests::{
    Holder, REFUSED, Report, Scratch, file_backend_only, lock_exclusive, mkfifo, names,
    on_postgres_backend, snapshot, unique, unprivileged_user,
};

const EXE: &str = env!("CARGO_BIN_EXE_task-holder");

/// What a state directory may hold at its top level.
const STATE_NAMES: &[&str] = &[
    "VERSION",
    "mode.json",
    "OFFLINE",
    "gate",
    "tasks",
    "pending",
    "sessions",
    "run.lock",
];

/// A scratch directory with an initialised state inside it and an outside
/// directory next to it.
fn site() -> (Scratch, Holder) {
    let scratch = Scratch::new();
    let h = Holder::new(EXE, scratch.state());
    let out = h.run(&["list"]);
    assert!(out.success(), "a fresh state must open: {out}");
    scratch.outside();
    (scratch, h)
}

fn json(s: &str) -> String {
    serde_json::to_string(s).expect("a JSON string")
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("a UTF-8 path").to_owned()
}

/// Everything outside the state directory, in the scratch directory.
fn outside_snapshot(scratch: &Scratch) -> BTreeMap<PathBuf, String> {
    snapshot(scratch.path(), &[&scratch.state()])
}

/// An outside file that a reader following a link would take for a live
/// task: a valid record (of a task named `name`, with id `id`), locked
/// exclusively as a live holder locks its task file. Keep the returned file
/// open for as long as the bait must look live.
fn live_bait(h: &Holder, at: &Path, id: &str, name: &str) -> File {
    let (holder, _) = h.hold(&["template"]);
    let mut record: serde_json::Value =
        serde_json::to_value(h.list().pop().expect("the template task")).expect("a record");
    assert!(holder.finish().success());
    record["id"] = id.into();
    record["name"] = name.into();
    fs::write(at, serde_json::to_vec(&record).expect("JSON")).expect("write the bait");
    let f = File::open(at).expect("open the bait");
    lock_exclusive(&f);
    f
}

/// An outside FIFO holding `sentinel`, and our read-write end of it: a
/// reader that opened the FIFO through a link would consume the bytes.
fn fifo_bait(at: &Path, sentinel: &[u8]) -> File {
    mkfifo(at);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(at)
        .expect("open the FIFO read-write");
    f.write_all(sentinel).expect("fill the FIFO");
    f
}

fn assert_fifo_untouched(mut f: File, sentinel: &[u8]) {
    let mut buf = vec![0u8; sentinel.len() + 16];
    let n = f.read(&mut buf).expect("read the FIFO back");
    assert_eq!(
        &buf[..n],
        sentinel,
        "someone read the outside FIFO through a planted link"
    );
}

#[test]
fn hostile_command_names_are_just_names_and_create_nothing_outside_the_state() {
    let (scratch, h) = site();
    let token = unique("escape");
    let scratch_abs = path_str(scratch.path());
    let names_to_try: Vec<String> = vec![
        format!("../{token}"),
        format!("../../{token}"),
        format!("../../../{token}"),
        format!("../../../../../../../../tmp/{token}"),
        format!("{scratch_abs}/{token}-abs"),
        format!("{scratch_abs}/outside/{token}-abs"),
        format!("tasks/../../{token}"),
        format!("a/b/{token}"),
        "/".into(),
        "..".into(),
        ".".into(),
        "...".into(),
        ".instance".into(),
        "gate".into(),
        "../gate".into(),
        format!("a\0b{token}"),
        "\0".into(),
        format!("../{token}\0/../../x"),
        "x".repeat(10_000),
        format!("{}{token}", "../".repeat(3_000)),
        "a/".repeat(5_000),
        "new\nline".into(),
        "\u{202e}gnp.exe".into(),
        " ".into(),
        "-".into(),
    ];
    // Where a backend that used names as paths would have written, outside
    // the state directory, and that does not exist yet.
    let state = scratch.state();
    let naive_targets: Vec<PathBuf> = names_to_try
        .iter()
        .filter(|name| !name.contains('\0'))
        .flat_map(|name| {
            let tasks = state.join("tasks");
            [
                tasks.join(format!("{name}.instance")),
                tasks.join(format!("{name}.task")),
                tasks.join(name),
                state.join(name),
            ]
        })
        .filter(|p| fs::symlink_metadata(p).is_err())
        .filter(|p| {
            // Lexically outside the state directory.
            let mut parts: Vec<_> = Vec::new();
            for c in p.components() {
                match c {
                    std::path::Component::ParentDir => {
                        parts.pop();
                    }
                    std::path::Component::CurDir => {}
                    c => parts.push(c),
                }
            }
            !parts.iter().collect::<PathBuf>().starts_with(&state)
        })
        .collect();
    assert!(!naive_targets.is_empty());
    let before = outside_snapshot(&scratch);

    for name in &names_to_try {
        let name_arg = json(name);
        let (holder, id) = h.hold(&["--name-json", &name_arg]);
        // The record keeps the name exactly, NUL and all.
        let listed = h.list();
        assert_eq!(listed.len(), 1, "{name:?}: {listed:?}");
        assert_eq!((&listed[0].id, &listed[0].name), (&id, name));
        // A hashed name is still one single instance.
        let out = h.run(&["run", "--name-json", &name_arg]);
        assert_eq!(out.code(), Some(REFUSED), "{name:?}: {out}");
        assert!(matches!(out.report(), Report::Refused { .. }), "{out}");
        let out = holder.finish();
        assert!(out.success(), "{name:?}: {out}");
    }
    // Names that hash differently never share an instance.
    let (_a, _) = h.hold(&["--name-json", &json("../x")]);
    let (_b, _) = h.hold(&["--name-json", &json("../y")]);

    // An empty name is an error, not a file called ".instance".
    let out = h.run(&["run", "--name-json", "\"\""]);
    out.assert_clean_error(&["empty"]);

    assert_eq!(
        outside_snapshot(&scratch),
        before,
        "something changed outside"
    );
    for naive in naive_targets {
        assert!(
            fs::symlink_metadata(&naive).is_err(),
            "created outside the state: {}",
            naive.display()
        );
    }
    if on_postgres_backend() {
        // No state directory: the names were rows, and nothing above was made.
        return;
    }
    let strays: Vec<String> = names(Path::new("/tmp"))
        .into_iter()
        .filter(|n| n.contains(&token))
        .collect();
    assert!(strays.is_empty(), "created in /tmp: {strays:?}");
    // Inside, only what a state directory holds, and only files in tasks/.
    for n in names(&scratch.state()) {
        assert!(
            STATE_NAMES.contains(&n.as_str()),
            "stray {n:?} in the state"
        );
    }
    for n in names(&scratch.state().join("tasks")) {
        let p = scratch.state().join("tasks").join(&n);
        let meta = fs::symlink_metadata(&p).expect("stat");
        assert!(meta.is_file(), "{} is not a plain file", p.display());
    }
}

#[test]
fn hostile_join_tokens_are_refused_and_never_followed_to_a_planted_task() {
    let (scratch, h) = site();
    let outside = scratch.outside();
    let bait_id = "feedface-1-0";
    // The bait is a task file planted in tasks/, a file backend's: on
    // PostgreSQL the tokens are refused all the same, with no bait to follow.
    let _bait = (!on_postgres_backend()).then(|| {
        let bait = live_bait(&h, &outside.join("bait.task"), bait_id, "planted-outside");
        symlink(
            outside.join("bait.task"),
            scratch
                .state()
                .join("tasks")
                .join(format!("{bait_id}.task")),
        )
        .expect("plant a link");
        bait
    });
    let before = outside_snapshot(&scratch);

    for token in [
        bait_id.to_owned(),
        "../outside/bait".into(),
        format!("{}/bait", path_str(&outside)),
        "/etc/passwd".into(),
        "..".into(),
        "a\0b".into(),
        "f".repeat(10_000),
        "-".into(),
    ] {
        let out = h.run(&["run", "job", "--join-json", &json(&token)]);
        assert_eq!(out.code(), Some(REFUSED), "{token:?}: {out}");
        match out.report() {
            Report::Refused { message, .. } => {
                assert!(message.contains("cannot join"), "{token:?}: {message}")
            }
            other => panic!("{token:?} was not refused: {other:?}"),
        }
        assert!(!out.text().contains("panicked"), "{out}");
    }
    assert!(h.list().iter().all(|t| t.name != "planted-outside"));
    assert_eq!(outside_snapshot(&scratch), before);
}

#[test]
fn symlinks_planted_in_tasks_are_never_followed_read_or_removed_through() {
    if file_backend_only("plants symlinks in tasks/") {
        return;
    }
    let (scratch, h) = site();
    let outside = scratch.outside();
    let tasks = scratch.state().join("tasks");

    // Bait a reader would parse as a live task, reached by a task link.
    let _bait = live_bait(&h, &outside.join("bait.task"), "feedface-2-0", "planted");
    symlink(outside.join("bait.task"), tasks.join("feedface-2-0.task")).expect("link");
    // A FIFO outside whose bytes a reader would eat, reached by a task link.
    let sentinel = b"SENTINEL";
    let fifo = fifo_bait(&outside.join("fifo"), sentinel);
    symlink(outside.join("fifo"), tasks.join("fifo.task")).expect("link");
    // A FIFO planted inside, as a task file: must not hang a reader.
    mkfifo(&tasks.join("inner-fifo.task"));
    // A dangling task link: following it to create would make the target.
    symlink(outside.join("made-by-task"), tasks.join("dangling.task")).expect("link");
    // An instance lock linked to an outside file a holder has locked:
    // following it would report `hello` as already running.
    fs::write(outside.join("hello.lock"), b"precious").expect("write");
    let hello_lock = File::open(outside.join("hello.lock")).expect("open");
    lock_exclusive(&hello_lock);
    symlink(outside.join("hello.lock"), tasks.join("hello.instance")).expect("link");
    // A dangling instance link: O_CREAT through it would make the target.
    symlink(
        outside.join("made-by-instance"),
        tasks.join("fresh.instance"),
    )
    .expect("link");
    // A temporary-looking link, which the reaper considers.
    fs::write(outside.join("victim.tmp"), b"keep me").expect("write");
    symlink(outside.join("victim.tmp"), tasks.join(".victim.tmp")).expect("link");

    let before = outside_snapshot(&scratch);

    // Listing: no planted task is live, and nothing hangs on a FIFO (the
    // hang guard would fail the test).
    let listed = h.list();
    assert!(
        listed.is_empty(),
        "planted files listed as tasks: {listed:?}"
    );

    // Starting through a planted instance link: a clear error naming it.
    let hello = path_str(&tasks.join("hello.instance"));
    h.run(&["run", "hello"])
        .assert_clean_error(&[&hello, "symlink"]);
    let fresh = path_str(&tasks.join("fresh.instance"));
    h.run(&["run", "fresh"])
        .assert_clean_error(&[&fresh, "symlink"]);
    // A concurrent start takes no instance lock and still works.
    let out = h.run(&["run", "hello", "--concurrent"]);
    assert!(out.success(), "{out}");

    // Reaping removes planted links at most, never their targets.
    let out = h.run(&["reap"]);
    assert!(out.success(), "{out}");
    assert!(h.list().is_empty());

    assert_eq!(
        outside_snapshot(&scratch),
        before,
        "something changed outside"
    );
    assert!(!outside.join("made-by-task").exists());
    assert!(!outside.join("made-by-instance").exists());
    assert_fifo_untouched(fifo, sentinel);
}

/// Replaces `state/<name>` (a directory) with a symlink to a directory
/// outside, and checks every action refuses naming it, touching nothing.
fn planted_directory_link_is_refused(name: &str) {
    if file_backend_only("plants a symlink in place of a state directory's subdirectory") {
        return;
    }
    let (scratch, h) = site();
    let outside = scratch.outside();
    let target = outside.join(format!("{name}-target"));
    fs::create_dir(&target).expect("mkdir");
    let _bait = live_bait(
        &h,
        &target.join("feedface-3-0.task"),
        "feedface-3-0",
        "bait",
    );
    fs::write(target.join("job.instance"), b"").expect("write");
    fs::write(target.join(".old.tmp"), b"keep me").expect("write");
    let planted = scratch.state().join(name);
    fs::remove_dir_all(&planted).expect("remove the real directory");
    symlink(&target, &planted).expect("plant the link");
    let before = outside_snapshot(&scratch);

    let planted_str = path_str(&planted);
    for args in [
        &["list"][..],
        &["reap"],
        &["run", "job"],
        &["run", "job", "--concurrent"],
        &["hold", "job"],
        &["mode"],
        &["set-mode", "offline"],
    ] {
        let out = h.run(args);
        out.assert_clean_error(&[&planted_str, "symlink"]);
        assert!(
            !out.text().contains("bait"),
            "{args:?} read the outside directory: {out}"
        );
    }
    assert_eq!(
        outside_snapshot(&scratch),
        before,
        "something changed outside"
    );
    assert!(
        fs::symlink_metadata(&planted)
            .expect("the link")
            .file_type()
            .is_symlink(),
        "the planted link itself may stay: nothing may follow it"
    );
}

#[test]
fn a_symlink_in_place_of_tasks_is_refused_naming_it_and_nothing_outside_changes() {
    planted_directory_link_is_refused("tasks");
}

#[test]
fn a_symlink_in_place_of_pending_is_refused_naming_it_and_nothing_outside_changes() {
    planted_directory_link_is_refused("pending");
}

#[test]
fn a_symlink_in_place_of_sessions_is_refused_naming_it_and_nothing_outside_changes() {
    planted_directory_link_is_refused("sessions");
}

#[test]
fn a_file_in_place_of_tasks_is_refused_naming_it() {
    if file_backend_only("plants a file in place of tasks/") {
        return;
    }
    let (scratch, h) = site();
    let tasks = scratch.state().join("tasks");
    fs::remove_dir_all(&tasks).expect("rmdir");
    fs::write(&tasks, b"not a directory").expect("write");
    let tasks_str = path_str(&tasks);
    for args in [&["list"][..], &["run", "job"]] {
        h.run(args)
            .assert_clean_error(&[&tasks_str, "not a directory"]);
    }
    assert_eq!(fs::read(&tasks).expect("read"), b"not a directory");
}

#[test]
fn a_mode_record_planted_as_a_symlink_is_never_read_and_writers_replace_only_the_link() {
    if file_backend_only("plants a symlink as mode.json") {
        return;
    }
    let (scratch, h) = site();
    let outside = scratch.outside();
    // A genuine OFFLINE record, made by the backend in another state.
    let other = Holder::new(EXE, scratch.path().join("other-state"));
    assert!(other.run(&["set-mode", "offline"]).success());
    fs::copy(
        scratch.path().join("other-state").join("mode.json"),
        outside.join("mode.json"),
    )
    .expect("copy the record");
    fs::remove_dir_all(scratch.path().join("other-state")).expect("clean up");
    let mode_json = scratch.state().join("mode.json");
    let _ = fs::remove_file(&mode_json);
    symlink(outside.join("mode.json"), &mode_json).expect("plant");
    let before = outside_snapshot(&scratch);

    let mode_str = path_str(&mode_json);
    for args in [&["mode"][..], &["run", "job"]] {
        let out = h.run(args);
        out.assert_clean_error(&[&mode_str, "symlink"]);
        assert!(
            !out.text().contains("OFFLINE since"),
            "the outside record was read: {out}"
        );
    }
    // A writer replaces the link itself, never its target.
    let out = h.run(&["set-mode", "online"]);
    assert!(!out.text().contains("panicked"), "{out}");
    assert_eq!(
        outside_snapshot(&scratch),
        before,
        "something changed outside"
    );
}

#[test]
fn a_marker_planted_as_a_symlink_is_replaced_or_removed_without_touching_its_target() {
    if file_backend_only("plants a symlink as the OFFLINE marker") {
        return;
    }
    let (scratch, h) = site();
    let outside = scratch.outside();
    let marker = scratch.state().join("OFFLINE");
    fs::write(outside.join("precious"), b"precious data\n").expect("write");
    let before = outside_snapshot(&scratch);

    for to in ["online", "offline", "online"] {
        let _ = fs::remove_file(&marker);
        symlink(outside.join("precious"), &marker).expect("plant");
        let out = h.run(&["set-mode", to]);
        assert!(out.success(), "set-mode {to}: {out}");
        assert_eq!(outside_snapshot(&scratch), before, "after set-mode {to}");
        let meta = fs::symlink_metadata(&marker);
        match to {
            "online" => assert!(meta.is_err(), "an ONLINE site keeps no marker"),
            _ => assert!(
                meta.expect("the marker").is_file(),
                "the marker is a file of the state's own"
            ),
        }
    }
}

#[test]
fn a_gate_planted_as_a_dangling_symlink_is_refused_and_its_target_never_created() {
    if file_backend_only("plants a symlink as the gate file") {
        return;
    }
    let (scratch, h) = site();
    let outside = scratch.outside();
    let gate = scratch.state().join("gate");
    let _ = fs::remove_file(&gate);
    symlink(outside.join("made-by-gate"), &gate).expect("plant");
    let before = outside_snapshot(&scratch);
    let gate_str = path_str(&gate);
    for args in [&["run", "job"][..], &["set-mode", "offline"]] {
        h.run(args).assert_clean_error(&[&gate_str, "symlink"]);
    }
    assert!(!outside.join("made-by-gate").exists());
    assert_eq!(outside_snapshot(&scratch), before);
}

#[test]
fn a_version_planted_as_a_symlink_is_refused_naming_it() {
    if file_backend_only("plants a symlink as VERSION") {
        return;
    }
    let (scratch, h) = site();
    let outside = scratch.outside();
    let version = scratch.state().join("VERSION");
    fs::copy(&version, outside.join("VERSION")).expect("copy");
    fs::remove_file(&version).expect("rm");
    symlink(outside.join("VERSION"), &version).expect("plant");
    let before = outside_snapshot(&scratch);
    let version_str = path_str(&version);
    for args in [&["list"][..], &["run", "job"], &["set-mode", "offline"]] {
        h.run(args).assert_clean_error(&[&version_str, "symlink"]);
    }
    assert_eq!(outside_snapshot(&scratch), before);
}

// --- Bad state ------------------------------------------------------------

fn a_genuine_record(scratch: &Scratch) -> Vec<u8> {
    let state = scratch.path().join("genuine");
    let h = Holder::new(EXE, &state);
    assert!(h.run(&["set-mode", "offline"]).success());
    assert!(h.run(&["set-mode", "online"]).success());
    let bytes = fs::read(state.join("mode.json")).expect("the record");
    fs::remove_dir_all(&state).expect("clean up");
    bytes
}

#[test]
fn a_corrupt_truncated_binary_empty_or_huge_mode_record_is_a_clear_error_naming_it() {
    if file_backend_only("writes mode.json by hand") {
        return;
    }
    let scratch = Scratch::new();
    let genuine = a_genuine_record(&scratch);
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("garbage", b"{this is not json".to_vec(), "corrupt"),
        (
            "truncated",
            genuine[..genuine.len() / 2].to_vec(),
            "corrupt",
        ),
        ("binary", binary, "corrupt"),
        ("empty", Vec::new(), "corrupt"),
        ("wrong shape", b"[1, 2, 3]".to_vec(), "corrupt"),
        (
            "huge",
            format!(
                "{{\"mode\": \"ONLINE\", \"x\": \"{}\"}}",
                "y".repeat(100_000)
            )
            .into_bytes(),
            "larger than",
        ),
    ];
    for (what, bytes, says) in cases {
        let state = scratch.path().join(what.replace(' ', "-"));
        let h = Holder::new(EXE, &state);
        assert!(h.run(&["list"]).success());
        let mode_json = state.join("mode.json");
        fs::write(&mode_json, &bytes).expect("write the bad record");
        let mode_str = path_str(&mode_json);
        for args in [&["mode"][..], &["run", "job"]] {
            let out = h.run(args);
            out.assert_clean_error(&[&mode_str, says]);
            assert!(
                !matches!(out.report(), Report::Started { .. }),
                "{what}: a task started on a {what} record: {out}"
            );
        }
        // Reading never rewrites it: the operator decides.
        assert_eq!(fs::read(&mode_json).expect("read"), bytes, "{what}");
    }
}

#[test]
fn a_state_dir_that_is_a_regular_file_is_a_clear_error_naming_it() {
    if file_backend_only("a state directory that is a file") {
        return;
    }
    let scratch = Scratch::new();
    let file = scratch.path().join("state");
    fs::write(&file, b"I am a file").expect("write");
    let h = Holder::new(EXE, &file);
    let file_str = path_str(&file);
    for args in [
        &["list"][..],
        &["run", "job"],
        &["mode"],
        &["set-mode", "offline"],
    ] {
        h.run(args)
            .assert_clean_error(&[&file_str, "not a directory"]);
    }
    // Beneath a file: the path named, nothing created.
    let below = Holder::new(EXE, file.join("state"));
    let below_str = path_str(&file.join("state"));
    below.run(&["list"]).assert_clean_error(&[&below_str]);
    assert_eq!(fs::read(&file).expect("read"), b"I am a file");
}

#[test]
fn an_unknown_or_corrupt_format_version_is_refused_naming_it_and_nothing_is_touched() {
    if file_backend_only("writes VERSION by hand") {
        return;
    }
    for (content, says) in [
        ("99\n", "99"),
        ("banana\n", "banana"),
        ("\u{0}\u{1}", "corrupt"),
    ] {
        let (scratch, h) = site();
        let version = scratch.state().join("VERSION");
        fs::write(&version, content).expect("write");
        let tasks = scratch.state().join("tasks");
        fs::remove_dir_all(&tasks).expect("rmdir");
        let before = snapshot(scratch.path(), &[]);
        let version_str = path_str(&version);
        for args in [
            &["list"][..],
            &["run", "job"],
            &["mode"],
            &["set-mode", "offline"],
        ] {
            h.run(args).assert_clean_error(&[&version_str, says]);
        }
        assert_eq!(
            snapshot(scratch.path(), &[]),
            before,
            "a state of an unknown version was changed ({content:?})"
        );
    }
}

#[test]
fn a_state_dir_the_user_cannot_write_is_a_clear_error_for_that_user() {
    if file_backend_only("a state directory's permissions") {
        return;
    }
    let Some(user) =
        unprivileged_user("a_state_dir_the_user_cannot_write_is_a_clear_error_for_that_user")
    else {
        return;
    };
    let (scratch, h) = site();
    // Root made and owns it, 0711: the unprivileged user may not even
    // list it.
    let (_live, _) = h.hold(&["job"]);
    let them = h.as_user(user);
    let state_str = path_str(&scratch.state());
    for args in [
        &["run", "other"][..],
        &["run", "other", "--concurrent"],
        &["set-mode", "offline"],
    ] {
        let out = them.run(args);
        out.assert_clean_error(&[&state_str, "ermission denied"]);
        assert!(
            !matches!(out.report(), Report::Started { .. }),
            "{args:?}: {out}"
        );
    }
    // Nothing of theirs landed in the state.
    let mode = h.run(&["mode"]);
    assert_eq!(mode.stdout, ["mode ONLINE"], "{mode}");

    // A state directory they would have to create, under root's directory.
    let fresh = scratch.path().join("root-only").join("state");
    fs::create_dir(scratch.path().join("root-only")).expect("mkdir");
    let fresh_str = path_str(&fresh);
    Holder::new(EXE, &fresh)
        .as_user(user)
        .run(&["list"])
        .assert_clean_error(&[&fresh_str, "ermission denied"]);
    assert!(!fresh.exists());

    // A state directory they cannot even enter.
    let closed = scratch.path().join("closed");
    let closed_h = Holder::new(EXE, &closed);
    assert!(closed_h.run(&["list"]).success());
    fs::set_permissions(&closed, fs::Permissions::from_mode(0o700)).expect("chmod");
    let closed_str = path_str(&closed);
    closed_h
        .as_user(user)
        .run(&["run", "job"])
        .assert_clean_error(&[&closed_str, "ermission denied"]);
}

#[test]
fn an_outsider_can_neither_list_the_live_tasks_nor_open_their_lock_files() {
    if file_backend_only("the state directory's permissions and lock files") {
        return;
    }
    let Some(user) =
        unprivileged_user("an_outsider_can_neither_list_the_live_tasks_nor_open_their_lock_files")
    else {
        return;
    };
    let (scratch, h) = site();
    let (_live, id) = h.hold(&["job"]);
    let state_str = path_str(&scratch.state());
    // Whoever can open a lock file can flock it: an outsider who could
    // would hold the task live after it died, or the command's name.
    let tasks = scratch.state().join("tasks");
    let files = names(&tasks);
    assert!(files.contains(&format!("{id}.task")), "{files:?}");
    assert!(files.iter().any(|n| n.ends_with(".instance")), "{files:?}");
    for name in files.iter().map(String::as_str).chain(["../gate"]) {
        let path = tasks.join(name);
        let out = manage_tests::Proc::spawn({
            let mut cmd = std::process::Command::new("flock");
            cmd.args(["-s", "-n"])
                .arg(&path)
                .arg("true")
                .uid(user.uid)
                .gid(user.gid)
                .current_dir("/")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd
        })
        .finish();
        assert!(
            out.code() != Some(0) && out.stderr.contains("Permission denied"),
            "the outsider opened {}: {out}",
            path.display()
        );
    }
    // Nor can it list them, or take the name: a clear error, not a refusal.
    for args in [&["list"][..], &["run", "job"]] {
        let out = h.as_user(user).run(args);
        out.assert_clean_error(&[&state_str, "ermission denied", "join the group"]);
        assert_ne!(out.code(), Some(REFUSED), "{out}");
    }
    assert_eq!(h.live_ids(), [id], "root still sees its task");
}

/// `manage …` against the state directory `state` of `site` (on a disk of
/// the test's own), stdio piped.
fn manage_on(site: &manage_tests::CliSite, state: &Path, args: &[&str]) -> manage_tests::Proc {
    let mut cmd = site.command(args);
    cmd.env("MANAGE_STATE_DIR", state);
    manage_tests::Proc::spawn(cmd)
}

#[test]
fn a_full_disk_never_leaves_the_marker_and_the_record_disagreeing() {
    if file_backend_only("the OFFLINE marker and mode.json on a full disk") {
        return;
    }
    let test = "a_full_disk_never_leaves_the_marker_and_the_record_disagreeing";
    let site = manage_tests::CliSite::new(env!("CARGO_BIN_EXE_e2e-manage"));
    let Some(disk) = manage_tests::Tmpfs::mount(test, &site.dir().join("disk"), 16) else {
        return;
    };
    let state = disk.path().join("state");
    let marker = state.join("OFFLINE");
    let record = path_str(&state.join("mode.json"));
    let run = |args: &[&str]| manage_on(&site, &state, args).finish();
    let status = |expected: &str| {
        let out = run(&["offline", "status", "--json"]);
        assert_eq!(out.code(), Some(0), "{out}");
        let j: serde_json::Value = serde_json::from_str(&out.stdout.join("\n")).expect("JSON");
        assert_eq!(j["mode"], expected, "{j:#}");
        assert!(j["stray_marker"].is_null(), "{j:#}");
    };

    // PENDING, held by a live task.
    let mut task = manage_on(&site, &state, &["sleeper", "--secs", "600"]);
    let line = task.line();
    assert!(line.starts_with("started "), "{line}");
    let mut on = manage_on(&site, &state, &["offline", "on", "--timeout", "300"]);
    let line = on.line();
    assert!(line.starts_with("Active sessions detected"), "{line}");
    // The disk fills up, all but the two pages the change's history intent
    // and the marker take; then the task ends (killed: its file stays,
    // freeing nothing), so `on` writes its intent and the marker and then
    // fails to write the OFFLINE record.
    let filler = disk.fill("filler");
    disk.free(&filler, 2);
    task.kill9();
    let out = on.finish();
    assert!(
        !marker.exists(),
        "the marker outlived the failed write: {out}"
    );
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains(&record) && out.stderr.contains("No space left on device"),
        "the error names the record and the cause: {out}"
    );
    status("ONLINE");

    // Room again: the next commands keep them agreeing.
    fs::remove_file(&filler).expect("remove the filler");
    status("ONLINE");
    let out = run(&["offline", "on", "--force"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(marker.exists(), "OFFLINE has its marker");

    // Full again while OFFLINE, all but the page the history intent takes:
    // a failed ONLINE write keeps the marker, since OFFLINE stays in force.
    let filler = disk.fill("filler");
    disk.free(&filler, 1);
    let out = run(&["offline", "off"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains(&record) && out.stderr.contains("No space left on device"),
        "{out}"
    );
    assert!(marker.exists(), "OFFLINE lost its marker");
    status("OFFLINE");
    fs::remove_file(&filler).expect("remove the filler");
    let out = run(&["offline", "off"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(!marker.exists());
    status("ONLINE");
}
