//! What a new user meets in the runner's first hour, end to end with the
//! real `e2e-manage` and `e2e-mysite` binaries in a scratch site (the
//! README's "Quick start", "Installing" and "How a name is found"). Each
//! section below opens with what it covers.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::{Command, ExitStatus};

use maintenance_core::backend::ModeChange;
use manage_tests::{Outcome, Proc, Site, assert_exact};
use serde_json::Value;

const MANAGE: &str = env!("CARGO_BIN_EXE_e2e-manage");
const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");

/// A `manage.toml` (after the site's own first lines) whose first line is
/// wrong, and an alias after it that the error must not hide silently.
const BROKEN: &str = "session_timeout = \"soon\"\n[alias]\nhi = \"hello Ada\"\n";

/// What the configuration error names: the file and the line.
fn broken_at(site: &Site) -> String {
    format!(
        "{}:{}:",
        site.dir().join("manage.toml").display(),
        site.toml_line(1)
    )
}

/// Runs `cmd` to its end (within the hang guard).
fn finish(cmd: Command) -> Outcome {
    Proc::spawn(cmd).finish()
}

/// `manage ARGS…` with `RUST_BACKTRACE=1`, as many shells export it.
fn run_with_backtrace(site: &Site, args: &[&str]) -> Outcome {
    let mut cmd = site.command(args);
    cmd.env("RUST_BACKTRACE", "1");
    finish(cmd)
}

/// Asserts every line on stderr is the error or one of its causes.
#[track_caller]
fn assert_only_the_chain(out: &Outcome) {
    assert!(!out.stderr.is_empty(), "{out}");
    for line in out.stderr.lines() {
        assert!(
            line.starts_with("error: ") || line.starts_with("  caused by: "),
            "a line that is neither the error nor a cause: {line:?} in {out}"
        );
    }
}

// ------------------------------------------------------------------ errors
// Errors print their chain, not a backtrace, even under `RUST_BACKTRACE=1`
// (backtraces stay for panics, and for `-vv`: runner_processes.rs); a
// closed stdout ends a run quietly.

#[test]
fn a_manage_toml_error_under_rust_backtrace_prints_its_chain_and_no_backtrace() {
    let site = Site::with_config(MANAGE, BROKEN);
    let out = run_with_backtrace(&site, &["hello"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains(&broken_at(&site)), "{out}");
    assert!(out.stderr.contains("session_timeout"), "{out}");
    assert_only_the_chain(&out);
}

#[test]
fn a_command_s_error_under_rust_backtrace_prints_its_chain_and_no_backtrace() {
    let site = Site::new(MANAGE);
    let out = run_with_backtrace(&site, &["fail"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert_eq!(
        out.stderr, "error: cannot write the report\n  caused by: disk full\n",
        "{out}"
    );
}

#[test]
fn a_panic_under_rust_backtrace_still_prints_its_backtrace() {
    let site = Site::new(MANAGE);
    let out = run_with_backtrace(&site, &["boom"]);
    assert_eq!(out.code(), Some(101), "{out}");
    assert!(out.stderr.contains("boom goes the command"), "{out}");
    assert!(out.stderr.contains("stack backtrace"), "{out}");
}

/// Runs `manage ARGS…` with its stdout a pipe whose reader has already
/// gone, as in `manage … | head -1` once `head` has exited: every write
/// fails with EPIPE.
fn run_into_a_closed_pipe(site: &Site, args: &[&str]) -> (ExitStatus, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = site.command(args);
    cmd.env("RUST_BACKTRACE", "1").stdout(writer);
    let out = cmd.output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_ends_a_command_quietly_as_sigpipe_would() {
    let site = Site::new(MANAGE);
    for args in [
        &["offline", "status", "--json"][..],
        &["offline", "status"],
        &["hello"],
    ] {
        let (status, stderr) = run_into_a_closed_pipe(&site, args);
        assert_eq!(stderr, "", "{args:?}: nothing on stderr");
        assert_eq!(status.code(), Some(141), "{args:?}: 128 + SIGPIPE");
    }
    // What the runner prints itself ends quietly too.
    for args in [&["--list"][..], &["--help"], &["completions", "bash"]] {
        let (status, stderr) = run_into_a_closed_pipe(&site, args);
        assert_eq!(stderr, "", "{args:?}: nothing on stderr");
        assert!(status.code().is_some(), "{args:?}: {status}");
    }
}

// ------------------------------------------------- a broken manage.toml
// `--help`, `--list`, `help`, `completions` and `man` name a broken
// `manage.toml`, file and line, instead of silently leaving its aliases out.

#[test]
fn a_broken_manage_toml_is_named_by_help_list_and_completions_not_ignored() {
    let site = Site::with_config(MANAGE, BROKEN);
    let warning = format!("warning: {}", broken_at(&site));
    for args in [
        &["--help"][..],
        &["--list"],
        &["--list", "--json"],
        &["help"],
        &["help", "hello"],
        &["completions", "bash"],
        &["man"],
    ] {
        let out = site.run(args);
        assert_eq!(out.code(), Some(0), "{args:?}: {out}");
        assert!(
            out.stderr.lines().any(|l| l.starts_with(&warning)
                && l.contains("session_timeout")
                && l.contains("aliases")),
            "{args:?} warns, naming the file, the line and what is left out: {out}"
        );
        assert!(
            !out.stderr.contains("   0: "),
            "{args:?}: no backtrace: {out}"
        );
    }
    // In the JSON too, among the listing's warnings.
    let out = site.run(&["--list", "--json"]);
    let doc: Value = serde_json::from_str(&out.stdout.join("\n")).unwrap();
    assert!(
        doc["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.starts_with(&broken_at(&site)))),
        "{doc:#}"
    );
    // `manage` alone: the usage, and the same warning.
    let out = site.run(&[]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains(&warning), "{out}");
}

// ------------------------------------------------------------- listings
// `--list` is aligned and names origins in the words of its JSON; `help
// <external>` says what is known and runs `manage-<name> --help`
// untracked; help of every kind works while the site is OFFLINE.

/// The columns of a `--list` line: each run of text between gaps of two
/// spaces or more, with where it starts.
fn columns(line: &str) -> Vec<(usize, String)> {
    let mut cols = Vec::new();
    let mut start = None;
    let mut spaces = 0;
    for (i, c) in line.char_indices() {
        if c == ' ' {
            spaces += 1;
            continue;
        }
        if start.is_none() || spaces >= 2 {
            if let Some(s) = start {
                cols.push((s, line[s..i - spaces].to_owned()));
            }
            start = Some(i);
        }
        spaces = 0;
    }
    if let Some(s) = start {
        cols.push((s, line[s..].trim_end().to_owned()));
    }
    cols
}

#[test]
fn list_is_aligned_and_names_each_origin_as_its_json_kind_does() {
    let site = Site::with_config(MANAGE, "[alias]\nhi = \"hello Ada\"\n");
    let publish = site.external("publish", "#!/bin/sh\necho publishing\n");
    let text = site.run(&["--list"]);
    assert_eq!(text.code(), Some(0), "{text}");
    let json = site.run(&["--list", "--json"]);
    let doc: Value = serde_json::from_str(&json.stdout.join("\n")).unwrap();
    let kinds: BTreeMap<String, String> = doc["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(text.stdout.len(), kinds.len(), "a line each: {text}");

    let rows: BTreeMap<String, Vec<(usize, String)>> = text
        .stdout
        .iter()
        .map(|l| {
            let cols = columns(l);
            (cols[0].1.clone(), cols)
        })
        .collect();
    for (name, kind) in &kinds {
        let row = &rows[name];
        assert_eq!(
            &row[1].1, kind,
            "{name}'s kind, in the JSON's words: {row:?}"
        );
    }
    // The name, kind, origin and policy columns start at the same place on
    // every line.
    let hello = &rows["hello"];
    for (name, row) in &rows {
        for col in 0..4 {
            assert_eq!(
                row[col].0, hello[col].0,
                "column {col} of {name} is not aligned with hello's: {text}"
            );
        }
    }
    assert_eq!(hello[2].1, "hello-plugin", "{hello:?}");
    assert_eq!(
        hello[3].1, "[tracked, single, maintenance refused, drain wait]",
        "{hello:?}"
    );
    assert_eq!(hello[4].1, "Greet someone", "{hello:?}");
    assert_eq!(rows["offline"][2].1, "commands", "its crate");
    assert_eq!(rows["hi"][2].1, "hello Ada", "what the alias runs");
    assert_eq!(
        rows["publish"][2].1,
        publish.display().to_string(),
        "where the external command is"
    );
}

/// An external command that says how it was called and whether it runs
/// inside a task.
const SAY_HOW: &str = "#!/bin/sh\necho \"args: $*\"\necho \"task: ${MANAGE_TASK:-none}\"\n";

#[test]
fn help_for_an_external_command_says_what_is_known_and_runs_it_with_help_untracked() {
    let site = Site::with_config(MANAGE, "[commands.publish]\nmaintenance = \"allowed\"\n");
    let path = site.external("publish", SAY_HOW);
    let out = site.run(&["help", "publish"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(
        out.stdout,
        [
            format!("`publish` is an external command: {}", path.display()),
            "  policy: tracked, single, maintenance allowed, drain wait".to_owned(),
            format!(
                "  its own help, from `{} --help` (run untracked):",
                path.display()
            ),
            "args: --help".to_owned(),
            "task: none".to_owned(),
        ],
        "{out}"
    );
}

#[test]
fn help_of_every_kind_is_never_refused_while_the_site_is_offline() {
    let site = Site::with_config(MANAGE, "[alias]\nhi = \"hello Ada\"\n");
    site.external("publish", SAY_HOW);
    site.backend()
        .force_offline(&ModeChange::by_this_process())
        .unwrap();
    // Offline indeed: the command itself is refused.
    assert_eq!(site.run(&["hello"]).code(), Some(75));
    for args in [
        &["--help"][..],
        &["help"],
        &["help", "hello"],
        &["hello", "--help"],
        &["help", "hi"],
        &["help", "publish"],
        &["help", "offline"],
        &["offline", "on", "--help"],
        &["--list"],
        &["completions", "zsh"],
        &["man"],
    ] {
        let out = site.run(args);
        assert_eq!(out.code(), Some(0), "{args:?} while OFFLINE: {out}");
        assert!(!out.stdout.is_empty(), "{args:?}: {out}");
    }
    let out = site.run(&["help", "publish"]);
    assert!(out.stdout.iter().any(|l| l == "args: --help"), "{out}");
}

// ------------------------------------------------------------------ man
// `man` prints the page of the whole command tree under the binary's own
// name, or writes a page per command.

#[test]
fn man_prints_a_page_for_the_binary_s_own_name_listing_every_command() {
    let site = Site::with_config(MYSITE, "[alias]\nhi = \"hello Ada\"\n");
    site.external("publish", "#!/bin/sh\n");
    let out = site.run_mysite(&["man"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stderr, "", "{out}");
    let page = out.stdout.join("\n");
    assert!(page.starts_with(".ie \\n(.g .ds Aq"), "roff: {page}");
    assert!(
        page.contains("\n.TH mysite 1 "),
        "titled for mysite: {page}"
    );
    assert!(!page.contains("e2e"), "never under another name: {page}");
    for needle in [
        "mysite\\-hello(1)",
        "mysite\\-offline(1)",
        "mysite\\-migrate(1)",
        "mysite\\-hi(1)",
        "mysite\\-publish(1)",
        "mysite\\-completions(1)",
        "mysite\\-man(1)",
        "\\-\\-ignore\\-maintenance",
        ".SH \"EXIT STATUS\"",
        "128+N",
    ] {
        assert!(page.contains(needle), "{needle} in the page: {page}");
    }
}

#[test]
fn man_dir_writes_a_page_for_every_command_of_the_tree() {
    let site = Site::new(MYSITE);
    let dir = site.dir().join("man1");
    std::fs::create_dir(&dir).unwrap();
    let out = site.run_mysite(&["man", "--dir", dir.to_str().unwrap()]);
    assert_eq!(out.code(), Some(0), "{out}");
    let on = dir.join("mysite-offline-on.1");
    for page in ["mysite.1", "mysite-hello.1", "mysite-offline.1"] {
        assert!(dir.join(page).is_file(), "{page}: {out}");
    }
    let text = std::fs::read_to_string(&on).unwrap();
    assert!(
        text.contains("\\-\\-timeout"),
        "offline on's options: {text}"
    );
    assert!(
        out.stdout.iter().any(|l| l == &on.display().to_string()),
        "names each page it wrote: {out}"
    );

    let missing = site.dir().join("no-such-dir");
    let out = site.run_mysite(&["man", "--dir", missing.to_str().unwrap()]);
    out.assert_clean_error(&[
        &missing.display().to_string(),
        &format!("mkdir -p '{}'", missing.display()),
    ]);
    assert_eq!(out.code(), Some(1), "{out}");
}

// ------------------------------------------------------------ durations
// `--lock-timeout -1` reaches its parser, which says what is wrong with it.

#[test]
fn a_negative_lock_timeout_reaches_its_parser_before_or_after_the_name() {
    let site = Site::new(MANAGE);
    for args in [
        &["--lock-timeout", "-1", "hello"][..],
        &["hello", "--lock-timeout", "-1"],
    ] {
        let out = site.run(args);
        assert_eq!(out.code(), Some(2), "{args:?}: {out}");
        assert!(
            !out.stderr.contains("unexpected argument"),
            "{args:?}: {out}"
        );
        assert!(
            out.stderr
                .contains("invalid value '-1' for '--lock-timeout <SECS>'"),
            "{args:?}: the parser's own word on -1: {out}"
        );
    }
    assert_exact(
        &site.run(&["--lock-timeout", "1", "hello"]),
        0,
        &["Hello, world!"],
    );
}
