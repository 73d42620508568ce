//! The runner's dispatch and what it says about its commands, end to end:
//! the real binaries — `e2e-manage` (the runner, the `hello` plug-in and
//! the test fixture), `e2e-mysite` (exactly the example site's
//! `main`) and `e2e-dupsite` (plug-ins whose names collide) — started as
//! `manage` / `mysite` in a scratch site with its own `manage.toml` and a
//! `bin/` of external `manage-<name>` scripts first on `PATH`.
//!
//! Covered: a plug-in command run through `mysite`, and mysite's exact
//! command set; `--help` (groups, exit codes), `help <cmd>` and
//! `<cmd> --help`, `--version`; `--list` and `--list --json` (origins and
//! policies); `completions bash|zsh|fish` under the binary's own name,
//! completing commands, their options and aliases (bash's completion run
//! for real); aliases, a shadowing alias, alias cycles of any length (at
//! the top level, through `ctx.call`, in `--list` and `help`); a typo's
//! suggestion for each kind of command; an unknown command; duplicate
//! names; global options before and after the command's name.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use maintenance_core::backend::ModeChange;
use manage_tests::{CliSite, Outcome, assert_exact, file_backend_only};
use serde_json::Value;

const MANAGE: &str = env!("CARGO_BIN_EXE_e2e-manage");
const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");
const DUPSITE: &str = env!("CARGO_BIN_EXE_e2e-dupsite");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An external command that says who it is and how it was called.
const PUBLISH: &str = "#!/bin/sh\necho \"publishing $*\"\n";

/// A site with an alias, a shadowing alias left out (it warns on every
/// run), and an external command.
fn site_with_every_kind(exe: &str) -> CliSite {
    let site = CliSite::with_config(
        exe,
        "[alias]\nhi = \"hello Ada\"\ngreet = [\"hello\", \"Bob Smith\"]\n",
    );
    site.external("publish", PUBLISH);
    site
}

/// `--list --json`, parsed, checked to exit 0 and to be version 1.
#[track_caller]
fn list_json(out: &Outcome) -> Vec<Value> {
    assert_eq!(out.code(), Some(0), "{out}");
    let doc: Value = serde_json::from_str(&out.stdout.join("\n"))
        .unwrap_or_else(|e| panic!("--list --json is not JSON ({e}): {out}"));
    assert_eq!(doc["version"], 1, "{doc:#}");
    doc["commands"]
        .as_array()
        .expect("a commands array")
        .clone()
}

/// The entry of `name` in a `--list --json` listing.
#[track_caller]
fn entry<'a>(commands: &'a [Value], name: &str) -> &'a Value {
    commands
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no `{name}` in {commands:#?}"))
}

/// A listed policy as `[tracking, instances, maintenance, drain]`.
fn policy(entry: &Value) -> [&str; 4] {
    let p = &entry["policy"];
    ["tracking", "instances", "maintenance", "drain"].map(|k| {
        p[k].as_str()
            .unwrap_or_else(|| panic!("no policy {k} in {entry:#}"))
    })
}

/// The registered commands of a listing (built-in, plug-in or duplicate:
/// what is linked into the binary, not what PATH or manage.toml add), by
/// name, with their kind and crate.
fn registered(commands: &[Value]) -> BTreeMap<String, (String, String)> {
    commands
        .iter()
        .filter(|c| {
            matches!(
                c["kind"].as_str(),
                Some("built-in" | "plugin" | "duplicate")
            )
        })
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                (
                    c["kind"].as_str().unwrap().to_owned(),
                    c["crate_name"].as_str().unwrap_or("").to_owned(),
                ),
            )
        })
        .collect()
}

// ---------------------------------------------------------------- mysite

#[test]
fn mysite_runs_the_hello_plug_in_it_links() {
    let site = CliSite::new(MYSITE);
    assert_exact(&site.run_mysite(&["hello"]), 0, &["Hello, world!"]);
    assert_exact(
        &site.run_mysite(&["hello", "Ada", "--times", "2"]),
        0,
        &["Hello, Ada!", "Hello, Ada!"],
    );
}

#[test]
fn mysite_has_exactly_its_expected_commands_so_a_dropped_plug_in_fails_the_suite() {
    let site = CliSite::new(MYSITE);
    // The built-ins, whatever they are now: every binary built on
    // `manage::run()` has them.
    let manage = CliSite::new(MANAGE);
    let builtins: BTreeMap<_, _> = registered(&list_json(&manage.run(&["--list", "--json"])))
        .into_iter()
        .filter(|(_, (kind, _))| kind == "built-in")
        .collect();
    assert!(
        builtins.values().all(|(_, krate)| krate == "commands"),
        "built-ins come from crate `commands`: {builtins:?}"
    );

    let mut expected = builtins.clone();
    let plugin = |krate: &str| ("plugin".to_owned(), krate.to_owned());
    // The plug-in crate mysite names (`use hello_plugin as _;`) …
    expected.insert("hello".into(), plugin("hello-plugin"));
    // … and mysite's own commands.
    for own in ["backup", "migrate", "report", "runserver", "worker"] {
        expected.insert(own.into(), plugin("mysite"));
    }
    let listed = registered(&list_json(&site.run_mysite(&["--list", "--json"])));
    assert_eq!(listed, expected);
}

#[test]
fn mysite_help_lists_hello_under_plug_ins_by_its_own_name() {
    let site = CliSite::new(MYSITE);
    let out = site.run_mysite(&["--help"]);
    assert_eq!(out.code(), Some(0), "{out}");
    let text = out.stdout.join("\n");
    assert!(
        text.starts_with(&format!("mysite {VERSION}")),
        "the binary's own name: {out}"
    );
    assert!(text.contains("Usage: mysite [OPTIONS] <COMMAND>"), "{out}");
    let plugins = section(&out.stdout, "Plug-in commands:");
    assert!(
        plugins
            .iter()
            .any(|l| l.trim_start().starts_with("hello ") && l.contains("[hello-plugin]")),
        "hello, naming its crate: {plugins:?}"
    );
}

#[test]
fn mysite_help_hello_shows_the_command_s_usage_under_mysite() {
    let site = CliSite::new(MYSITE);
    let out = site.run_mysite(&["help", "hello"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stdout
            .iter()
            .any(|l| l.starts_with("Usage: mysite hello")),
        "{out}"
    );
}

/// The lines of `section` (a `--help` heading) up to the next blank line.
fn section<'a>(lines: &'a [String], heading: &str) -> &'a [String] {
    let start = lines
        .iter()
        .position(|l| l == heading)
        .unwrap_or_else(|| panic!("no {heading:?} in {lines:#?}"))
        + 1;
    let len = lines[start..]
        .iter()
        .position(|l| l.is_empty())
        .unwrap_or(lines.len() - start);
    &lines[start..start + len]
}

// ----------------------------------------------------------- completions

/// `mysite completions SHELL` in a site with the alias `hi`.
fn completions(shell: &str) -> (CliSite, String) {
    let site = CliSite::with_config(MYSITE, "[alias]\nhi = \"hello Ada\"\n");
    let out = site.run_mysite(&["completions", shell]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stderr, "", "{out}");
    (site, out.stdout.join("\n"))
}

/// What bash completes for `words` (the cursor in the last word) with
/// `script` loaded, as bash-completion would call it.
fn bash_complete(dir: &Path, script: &str, words: &[&str]) -> Vec<String> {
    let file = dir.join("mysite.bash");
    std::fs::write(&file, script).unwrap();
    let line = words.join(" ");
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let cword = words.len() - 1;
    let prev = words[cword.saturating_sub(1)];
    let program = format!(
        "source '{}'\n\
         COMP_WORDS=({})\nCOMP_CWORD={cword}\nCOMP_LINE='{line}'\nCOMP_POINT={}\n\
         _mysite mysite '{}' '{prev}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        file.display(),
        quoted.join(" "),
        line.len(),
        words[cword],
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .current_dir(dir)
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "bash failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completions_are_for_mysite_and_complete_hello_its_options_and_aliases() {
    let (site, script) = completions("bash");
    assert!(
        script.lines().any(|l| {
            let l = l.trim();
            l.starts_with("complete -F _mysite ") && l.ends_with(" mysite")
        }),
        "registered for the binary's own name: {script}"
    );
    assert!(!script.contains("_manage"), "not under `manage`");
    // Run bash's completion for real.
    let mut names = bash_complete(site.dir(), &script, &["mysite", "h"]);
    names.sort();
    assert_eq!(names, ["hello", "help", "hi"], "commands and the alias");
    assert_eq!(
        bash_complete(site.dir(), &script, &["mysite", "hello", "--ti"]),
        ["--times"],
        "hello's own option"
    );
    let all = bash_complete(site.dir(), &script, &["mysite", ""]);
    for name in ["hello", "hi", "offline", "worker", "completions"] {
        assert!(all.iter().any(|n| n == name), "{name} in {all:?}");
    }
}

#[test]
fn zsh_completions_are_for_mysite_and_complete_hello_its_options_and_aliases() {
    let (_site, script) = completions("zsh");
    assert!(script.starts_with("#compdef mysite\n"), "{script}");
    assert!(script.contains("'hello:Greet someone'"), "{script}");
    assert!(script.contains("'--times=[How many times]"), "{script}");
    assert!(script.contains("'hi:alias for"), "{script}");
}

#[test]
fn fish_completions_are_for_mysite_and_complete_hello_its_options_and_aliases() {
    let (_site, script) = completions("fish");
    let lines: Vec<&str> = script
        .lines()
        .filter(|l| l.starts_with("complete "))
        .collect();
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l.starts_with("complete -c mysite ")),
        "{script}"
    );
    let has = |needles: &[&str]| lines.iter().any(|l| needles.iter().all(|n| l.contains(n)));
    assert!(has(&["needs_command", "-a \"hello\""]), "{script}");
    assert!(has(&["needs_command", "-a \"hi\""]), "{script}");
    assert!(has(&["using_subcommand hello", "-l times"]), "{script}");
}

#[test]
fn completions_for_another_shell_or_none_is_a_usage_error() {
    let site = CliSite::new(MYSITE);
    for args in [&["completions"][..], &["completions", "powershell"]] {
        let out = site.run_mysite(args);
        assert_eq!(out.code(), Some(2), "{out}");
        assert!(out.stdout.is_empty(), "{out}");
        assert!(out.stderr.contains("bash, zsh or fish"), "{out}");
    }
}

// ------------------------------------------------------ help and version

#[test]
fn help_groups_every_kind_of_command_and_lists_the_exit_codes() {
    let site = site_with_every_kind(MANAGE);
    let out = site.run(&["--help"]);
    assert_eq!(out.code(), Some(0), "{out}");
    let lines = &out.stdout;
    let has = |group: &str, name: &str, about: &str| {
        let members = section(lines, group);
        assert!(
            members.iter().any(|l| {
                let l = l.trim_start();
                l.starts_with(&format!("{name} ")) && l.contains(about)
            }),
            "{name} ({about}) under {group:?}: {members:#?}"
        );
    };
    has("Built-in commands:", "offline", "");
    has("Plug-in commands:", "hello", "Greet someone");
    has("Plug-in commands:", "sleeper", "Sleeps until asked to stop");
    has("Aliases:", "hi", "hello Ada");
    has("Aliases:", "greet", "hello Bob Smith");
    has("External commands:", "publish", "manage-publish");

    let codes = section(lines, "Exit codes:");
    for code in [2, 75, 124, 130, 101, 1, 0] {
        assert!(
            codes
                .iter()
                .any(|l| l.trim_start().starts_with(&format!("{code}  "))),
            "exit code {code}: {codes:#?}"
        );
    }
    assert!(
        codes.iter().any(|l| l.contains("128+N")),
        "external commands' codes: {codes:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("--ignore-maintenance")),
        "the global options: {out}"
    );
}

/// Each `offline` verb's own help opens with the line `offline --help`
/// lists it with (the verbs' arguments are built only when asked for, and
/// a description of their flags once took that line's place).
#[test]
fn each_offline_verb_s_help_opens_with_its_own_description() {
    let site = CliSite::new(MANAGE);
    let top = site.run(&["offline", "--help"]);
    assert_eq!(top.code(), Some(0), "{top}");
    // Every code `offline` exits with is in its help.
    let text = top.stdout.join(" ");
    for code in [
        "0 done",
        "2 usage",
        "75 refused",
        "124 timed out",
        "76 `run`",
        "69 the state",
        "130",
        "1 any other",
        "3 PENDING",
        "6 READONLY",
    ] {
        assert!(
            text.contains(code),
            "{code:?} is not in `offline --help`: {top}"
        );
    }
    let verbs = [
        "status", "on", "off", "list", "run", "history", "mirror", "doctor",
    ];
    for verb in verbs {
        let listed = top
            .stdout
            .iter()
            .find_map(|l| {
                l.trim_start()
                    .strip_prefix(verb)
                    .filter(|r| r.starts_with(' '))
            })
            .unwrap_or_else(|| panic!("`{verb}` is not listed: {top}"))
            .trim();
        let about = listed
            .split(" [alias")
            .next()
            .unwrap_or(listed)
            .trim_end_matches('.');
        let own = site.run(&["offline", verb, "--help"]);
        assert_eq!(own.code(), Some(0), "{own}");
        let first = own.stdout.first().map(String::as_str).unwrap_or_default();
        assert_eq!(
            first.trim_end_matches('.'),
            about,
            "`offline {verb} --help`: {own}"
        );
    }
}

/// `help offline on` is `offline on --help`, and a verb the command does
/// not have is a usage error, not the command's help with exit 0.
#[test]
fn help_with_a_verb_prints_the_verb_s_help_and_an_unknown_verb_is_a_usage_error() {
    let site = CliSite::new(MANAGE);
    let help = site.run(&["help", "offline", "on"]);
    let own = site.run(&["offline", "on", "--help"]);
    assert_eq!(help.code(), Some(0), "{help}");
    assert_eq!(help.stdout, own.stdout, "{help}");
    let bogus = site.run(&["help", "offline", "bogus"]);
    assert_eq!(bogus.code(), Some(2), "{bogus}");
    assert!(
        bogus.stderr.contains("unrecognized subcommand 'bogus'"),
        "{bogus}"
    );
}

#[test]
fn help_hello_and_hello_dash_dash_help_print_the_same_command_help() {
    let site = CliSite::new(MANAGE);
    let a = site.run(&["help", "hello"]);
    let b = site.run(&["hello", "--help"]);
    for out in [&a, &b] {
        assert_eq!(out.code(), Some(0), "{out}");
        assert_eq!(out.stderr, "", "{out}");
        assert_eq!(
            out.stdout.first().map(String::as_str),
            Some("Greet someone"),
            "{out}"
        );
        assert!(
            out.stdout
                .iter()
                .any(|l| l.starts_with("Usage: manage hello [OPTIONS] [NAME]")),
            "{out}"
        );
        assert!(
            out.stdout.iter().any(|l| l.contains("--times <TIMES>")),
            "{out}"
        );
    }
    assert_eq!(a.stdout, b.stdout);
    // Nothing ran: no greeting.
    assert!(!a.text().contains("Hello,"), "{a}");
}

#[test]
fn version_prints_the_binary_s_name_and_version() {
    let site = CliSite::new(MANAGE);
    assert_exact(
        &site.run(&["--version"]),
        0,
        &[&format!("manage {VERSION}")],
    );
    assert_exact(&site.run(&["-V"]), 0, &[&format!("manage {VERSION}")]);
}

// ------------------------------------------------------------------ list

#[test]
fn list_json_gives_every_command_s_origin_and_policy() {
    let site = site_with_every_kind(MANAGE);
    let all = list_json(&site.run(&["--list", "--json"]));

    let offline = entry(&all, "offline");
    assert_eq!(offline["kind"], "built-in", "{offline:#}");
    assert_eq!(offline["crate_name"], "commands", "{offline:#}");
    assert_eq!(policy(offline)[0], "untracked", "{offline:#}");

    let hello = entry(&all, "hello");
    assert_eq!(hello["kind"], "plugin", "{hello:#}");
    assert_eq!(hello["crate_name"], "hello-plugin", "{hello:#}");
    assert_eq!(hello["about"], "Greet someone", "{hello:#}");
    assert_eq!(policy(hello), ["tracked", "single", "refused", "wait"]);

    let fixture = |name: &str| {
        let e = entry(&all, name);
        assert_eq!(e["kind"], "plugin", "{e:#}");
        assert_eq!(e["crate_name"], "manage-tests", "{e:#}");
        policy(e)
    };
    assert_eq!(fixture("sleeper"), ["tracked", "single", "refused", "wait"]);
    assert_eq!(
        fixture("sleeper-many"),
        ["tracked", "concurrent", "refused", "wait"]
    );
    assert_eq!(fixture("idler"), ["untracked", "single", "refused", "wait"]);
    assert_eq!(
        fixture("backup-ok"),
        ["tracked", "single", "allowed", "wait"]
    );

    let hi = entry(&all, "hi");
    assert_eq!(hi["kind"], "alias", "{hi:#}");
    assert_eq!(
        hi["expands_to"],
        serde_json::json!(["hello", "Ada"]),
        "{hi:#}"
    );
    let greet = entry(&all, "greet");
    assert_eq!(
        greet["expands_to"],
        serde_json::json!(["hello", "Bob Smith"]),
        "{greet:#}"
    );

    let publish = entry(&all, "publish");
    assert_eq!(publish["kind"], "external", "{publish:#}");
    assert_eq!(
        Path::new(publish["path"].as_str().unwrap()),
        site.dir().join("bin").join("manage-publish"),
        "{publish:#}"
    );
    assert_eq!(
        policy(publish),
        ["tracked", "single", "refused", "wait"],
        "an external command's default policy"
    );

    let mut names: Vec<&str> = all.iter().map(|c| c["name"].as_str().unwrap()).collect();
    let sorted = {
        let mut s = names.clone();
        s.sort_unstable();
        s
    };
    assert_eq!(names, sorted, "sorted by name");
    names.dedup();
    assert_eq!(names.len(), all.len(), "each name once");
}

#[test]
fn list_prints_one_line_per_command_with_its_origin_and_policy() {
    let site = site_with_every_kind(MANAGE);
    let out = site.run(&["--list"]);
    assert_eq!(out.code(), Some(0), "{out}");
    // Its words, the columns' padding folded.
    let line = |name: &str| {
        out.stdout
            .iter()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no line for {name}: {out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(line("offline").contains("built-in"), "{out}");
    // Never a task: no instance lock, no refusal, no drain to list.
    assert!(
        line("offline").starts_with("offline built-in commands [untracked] "),
        "{out}"
    );
    let hello = line("hello");
    assert!(
        hello.starts_with("hello plugin hello-plugin [")
            && hello.contains("tracked, single, maintenance refused, drain wait"),
        "{hello}"
    );
    assert!(line("sleeper-many").contains("concurrent"), "{out}");
    assert!(line("hi").starts_with("hi alias hello Ada -"), "{out}");
    let publish = line("publish");
    assert!(
        publish.contains(&format!(
            "publish external {} [",
            site.dir().join("bin/manage-publish").display()
        )),
        "{publish}"
    );
}

// --------------------------------------------------------------- aliases

#[test]
fn an_alias_expands_to_its_command_with_the_arguments_that_follow() {
    let site = site_with_every_kind(MANAGE);
    assert_exact(&site.run(&["hi"]), 0, &["Hello, Ada!"]);
    assert_exact(
        &site.run(&["hi", "--times", "2"]),
        0,
        &["Hello, Ada!", "Hello, Ada!"],
    );
    // An array keeps a word with a space whole.
    assert_exact(&site.run(&["greet"]), 0, &["Hello, Bob Smith!"]);
}

#[test]
fn an_alias_shadowing_a_command_is_ignored_with_a_warning_and_the_command_runs() {
    let site = CliSite::with_config(MANAGE, "[alias]\nhello = \"offline status\"\n");
    let out = site.run(&["hello", "Ada"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(
        out.stdout,
        ["Hello, Ada!"],
        "the command ran, not the alias"
    );
    assert!(
        out.stderr.starts_with("warning: alias `hello`")
            && out.stderr.contains("ignored")
            && out.stderr.contains("manage.toml"),
        "{out}"
    );
}

#[test]
fn a_recursive_alias_is_a_usage_error_naming_the_chain() {
    let site = CliSite::with_config(MANAGE, "[alias]\na = \"b\"\nb = \"a --x\"\n");
    let out = site.run(&["a"]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stdout.is_empty(), "{out}");
    assert!(
        out.stderr.contains("recursive") && out.stderr.contains("`a` → `b` → `a`"),
        "{out}"
    );
}

/// A site whose aliases go round in circles — of one (`me`), two (`a`,
/// `b`) and three (`x`, `y`, `z`) — beside a chain that ends (`deploy` →
/// `greet` → `hello`) and an alias reached through `ctx.call`'s
/// `relay`/`call` commands.
fn site_with_cycles() -> CliSite {
    CliSite::with_config(
        MANAGE,
        "[alias]
         me = \"me --again\"\n\
         a = \"b\"\nb = \"a --x\"\n\
         x = \"y\"\ny = \"z 1\"\nz = \"x 2\"\n\
         deploy = \"greet --times 2\"\ngreet = \"hello Ann\"\n",
    )
}

/// Asserts a cycle was reported as a usage error (2, never a crash: a
/// stack overflow aborts with SIGABRT, "exit 134") naming `chain`.
#[track_caller]
fn assert_recursive(out: &Outcome, chain: &str) {
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(!out.text().contains("overflow"), "{out}");
    assert!(
        out.stderr.contains(&format!("is recursive: {chain}")),
        "names the chain {chain}: {out}"
    );
}

#[test]
fn alias_cycles_of_any_length_are_usage_errors_naming_the_chain() {
    let site = site_with_cycles();
    assert_recursive(&site.run(&["me"]), "`me` → `me`");
    assert_recursive(&site.run(&["b"]), "`b` → `a` → `b`");
    assert_recursive(&site.run(&["x"]), "`x` → `y` → `z` → `x`");
    assert_recursive(&site.run(&["-q", "z", "--more"]), "`z` → `x` → `y` → `z`");
    let out = site.run(&["y"]);
    assert!(
        out.stderr.starts_with("error: alias `y` is recursive")
            && out.stderr.contains("manage.toml"),
        "names the alias and the file: {out}"
    );
    // A chain that ends runs, with global options before its name.
    assert_exact(&site.run(&["deploy"]), 0, &["Hello, Ann!", "Hello, Ann!"]);
    assert_exact(
        &site.run(&["-q", "deploy"]),
        0,
        &["Hello, Ann!", "Hello, Ann!"],
    );
}

#[test]
fn a_cyclic_alias_run_through_ctx_call_is_a_usage_error_not_a_crash() {
    let site = site_with_cycles();
    // `relay` passes the code of what it called on.
    assert_recursive(&site.run(&["relay", "a"]), "`a` → `b` → `a`");
    assert_recursive(&site.run(&["relay", "x", "--y"]), "`x` → `y` → `z` → `x`");
    // `call` prints it and carries on.
    let out = site.run(&["call", "me"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stdout, ["exit 2"], "{out}");
    assert!(out.stderr.contains("is recursive: `me` → `me`"), "{out}");
    // The chain that ends runs through ctx.call as at the top level.
    assert_exact(
        &site.run(&["relay", "deploy"]),
        0,
        &["Hello, Ann!", "Hello, Ann!"],
    );
}

#[test]
fn list_warns_about_each_cyclic_alias_naming_the_chain() {
    let site = site_with_cycles();
    let out = site.run(&["--list"]);
    assert_eq!(out.code(), Some(0), "{out}");
    for chain in [
        "alias `me` is recursive: `me` → `me`",
        "alias `a` is recursive: `a` → `b` → `a`",
        "alias `b` is recursive: `b` → `a` → `b`",
        "alias `x` is recursive: `x` → `y` → `z` → `x`",
    ] {
        assert!(
            out.stderr
                .lines()
                .any(|l| l.starts_with(&format!("warning: {chain}"))),
            "warns {chain:?}: {out}"
        );
    }
    assert!(
        !out.stderr.contains("`deploy`"),
        "a chain that ends is fine: {out}"
    );
    let line = out
        .stdout
        .iter()
        .find(|l| l.split_whitespace().next() == Some("a"))
        .unwrap_or_else(|| panic!("no line for a: {out}"));
    assert!(
        line.split_whitespace().take(3).eq(["a", "alias", "b"])
            && line.contains("(unusable: recursive)"),
        "{line}"
    );
    let help = site.run(&["--help"]);
    assert!(
        help.stdout
            .iter()
            .any(|l| l.trim_start().starts_with("a ") && l.ends_with("(unusable: recursive)")),
        "--help says so too: {help}"
    );

    let out = site.run(&["--list", "--json"]);
    let doc: Value = serde_json::from_str(&out.stdout.join("\n"))
        .unwrap_or_else(|e| panic!("--list --json is not JSON ({e}): {out}"));
    let all = list_json(&out);
    let a = entry(&all, "a");
    assert_eq!(a["kind"], "alias", "{a:#}");
    assert!(
        a["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("alias `a` is recursive: `a` → `b` → `a`")),
        "{a:#}"
    );
    assert!(entry(&all, "deploy").get("error").is_none(), "{all:#?}");
    let warnings = doc["warnings"].as_array().expect("a warnings array");
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .is_some_and(|w| w.starts_with("alias `z` is recursive: `z` → `x` → `y` → `z`"))),
        "{doc:#}"
    );
}

#[test]
fn help_for_a_cyclic_alias_says_what_it_expands_to_and_that_it_is_recursive() {
    let site = site_with_cycles();
    let out = site.run(&["help", "a"]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert_eq!(out.stdout, ["`a` is an alias for `b`"], "{out}");
    assert!(
        out.stderr.contains("is recursive: `a` → `b` → `a`"),
        "{out}"
    );
    assert_exact(
        &site.run(&["help", "deploy"]),
        0,
        &["`deploy` is an alias for `greet --times 2`"],
    );
}

#[test]
fn an_alias_in_a_bad_manage_toml_reports_the_file_not_an_unknown_command() {
    let site = CliSite::with_config(MANAGE, "[alias]\nhi = \"hello Ada\"\nnot_a_key = 3\n");
    // A registered command reports the file …
    let out = site.run(&["hello"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains("manage.toml") && out.stderr.contains("not_a_key"),
        "{out}"
    );
    // … and so must the alias the file defines.
    let out = site.run(&["hi"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(!out.stderr.contains("unrecognized command"), "{out}");
    assert!(
        out.stderr.contains("manage.toml") && out.stderr.contains("not_a_key"),
        "names the file and the key: {out}"
    );
}

// --------------------------------------------------- typos, unknown names

/// Asserts typing `typed` is a usage error suggesting `name`.
#[track_caller]
fn assert_suggests(site: &CliSite, typed: &str, name: &str) {
    let out = site.run(&[typed]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stdout.is_empty(), "{out}");
    assert!(
        out.stderr
            .contains(&format!("unrecognized command `{typed}`")),
        "{out}"
    );
    assert!(
        out.stderr
            .contains(&format!("tip: a similar command exists: `{name}`")),
        "{out}"
    );
}

#[test]
fn a_typo_of_a_registered_command_suggests_it() {
    assert_suggests(&site_with_every_kind(MANAGE), "helo", "hello");
}

#[test]
fn a_typo_of_an_alias_suggests_it() {
    assert_suggests(&site_with_every_kind(MANAGE), "gret", "greet");
}

#[test]
fn a_typo_of_an_external_command_suggests_it() {
    assert_suggests(&site_with_every_kind(MANAGE), "publsh", "publish");
}

#[test]
fn an_unknown_command_is_a_usage_error_without_a_far_fetched_tip() {
    let site = site_with_every_kind(MANAGE);
    let out = site.run(&["xyzzyqqq"]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stdout.is_empty(), "{out}");
    assert!(
        out.stderr.contains("unrecognized command `xyzzyqqq`"),
        "{out}"
    );
    assert!(!out.stderr.contains("tip:"), "{out}");
}

// ------------------------------------------------------- duplicate names

#[test]
fn a_name_two_plug_ins_register_fails_naming_both_crates() {
    let site = CliSite::new(DUPSITE);
    let out = site.run(&["hello"]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stdout.is_empty(), "neither ran: {out}");
    assert!(
        out.stderr.contains("`hello`")
            && out.stderr.contains("hello-plugin")
            && out.stderr.contains("manage-tests"),
        "{out}"
    );
    // `help hello` says the same.
    let out = site.run(&["help", "hello"]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stderr.contains("hello-plugin") && out.stderr.contains("manage-tests"),
        "{out}"
    );
}

#[test]
fn with_a_duplicate_name_every_other_command_still_works() {
    let site = CliSite::new(DUPSITE);
    let all = list_json(&site.run(&["--list", "--json"]));
    let hello = entry(&all, "hello");
    assert_eq!(hello["kind"], "duplicate", "{hello:#}");
    assert_eq!(
        hello["crates"],
        serde_json::json!(["hello-plugin", "manage-tests"]),
        "{hello:#}"
    );
    let out = site.run(&["--list"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stdout
            .iter()
            .any(|l| l.starts_with("hello ") && l.contains("hello-plugin, manage-tests")),
        "{out}"
    );
    let out = site.run(&["--help"]);
    assert_eq!(out.code(), Some(0), "{out}");

    // The runner's own `help` is not the squatter's.
    let out = site.run(&["help"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(!out.text().contains("squatter ran"), "{out}");

    // `offline` is built in: the built-in runs, the squatter is ignored
    // with a warning.
    let builtins = registered(&list_json(&CliSite::new(MANAGE).run(&["--list", "--json"])));
    if builtins
        .get("offline")
        .is_some_and(|(k, _)| k == "built-in")
    {
        let offline = entry(&all, "offline");
        assert_eq!(offline["kind"], "built-in", "{offline:#}");
        let out = site.run(&["offline", "status"]);
        assert_eq!(out.code(), Some(0), "{out}");
        assert_eq!(out.stdout, ["Status: ONLINE - Active sessions: 0"], "{out}");
        assert!(!out.text().contains("squatter ran"), "{out}");
        assert!(
            out.stderr
                .contains("crate manage-tests registers `offline`"),
            "{out}"
        );
    }
}

// ------------------------------------------------------- global options

#[test]
fn dash_v_is_accepted_before_and_after_the_command_name() {
    let site = CliSite::new(MANAGE);
    let quiet = site.run(&["offline", "status"]);
    assert_exact(&quiet, 0, &["Status: ONLINE - Active sessions: 0"]);
    let state = site.state_line();
    for args in [
        &["-v", "offline", "status"][..],
        &["offline", "status", "-v"],
        &["offline", "-v", "status"],
        &["--verbose", "offline", "status"],
    ] {
        let out = site.run(args);
        assert_eq!(out.code(), Some(0), "{args:?}: {out}");
        assert!(
            out.stdout.len() > 1 && out.stdout.iter().any(|l| l.starts_with(&state)),
            "{args:?} says more: {out}"
        );
    }
    // And a plain command accepts it on either side.
    for args in [
        &["-v", "hello"][..],
        &["hello", "-v"],
        &["-q", "hello", "-q"],
    ] {
        assert_exact(&site.run(args), 0, &["Hello, world!"]);
    }
}

#[test]
fn state_dir_is_accepted_before_and_after_the_command_name() {
    if file_backend_only("--state-dir names a state directory; $MANAGE_DATABASE_URL wins over it") {
        return;
    }
    let site = CliSite::new(MANAGE);
    // Another site, OFFLINE: a run against it is refused, against ours not.
    let other = site.dir().join("other-state");
    let backend = maintenance_core::backend::open(
        &maintenance_core::Config::with_state_dir(&other),
        maintenance_core::SystemClock::shared(),
    )
    .unwrap();
    backend
        .force_offline(&ModeChange::by_this_process())
        .unwrap();
    let other = other.to_str().unwrap();

    assert_exact(&site.run(&["hello"]), 0, &["Hello, world!"]);
    for args in [
        &["--state-dir", other, "hello"][..],
        &["hello", "--state-dir", other],
    ] {
        let out = site.run(args);
        assert_eq!(out.code(), Some(75), "{args:?}: {out}");
        assert!(out.stderr.contains("OFFLINE"), "{args:?}: {out}");
    }
}
