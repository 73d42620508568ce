//! `[hooks] on_change` end to end, with the real `manage` binary
//! (`e2e-manage`) and real hook programs (shell scripts): each change in a
//! hook's environment and its history entry on stdin, with no secret of
//! the caller's environment; a failing hook reported and recorded while
//! the change stands; a slow hook never holding `offline run` up and a
//! hanging one killed, with what it started, after its timeout; a
//! schedule set, cancelled and lapsed, each heard with its time
//! (`MANAGE_SCHEDULED_AT`); and the hooks of a `manage.toml` a stranger
//! owns or others may write refused.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use maintenance_core::Mode;
use maintenance_core::history::{EventKind, HistoryEntry};
use manage_tests::{
    CliSite, chmod, chown, is_alive, kill9_pid, poll_until, unprivileged_user, user_at_host,
    wait_dead,
};

const EXE: &str = env!("CARGO_BIN_EXE_e2e-manage");

/// Writes an executable script `name` into the site's directory.
fn script(site: &CliSite, name: &str, body: &str) -> PathBuf {
    let path = site.dir().join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    chmod(&path, 0o755);
    path
}

/// A hook that records each call in `<dir>/calls/`: its environment, a
/// `---` line, then its stdin; the file appears whole.
fn recording_hook(site: &CliSite) -> PathBuf {
    let calls = site.dir().join("calls");
    std::fs::create_dir(&calls).unwrap();
    script(
        site,
        "record.sh",
        &format!(
            "f={}/call-$$\n{{ env; echo ---; cat; }} > \"$f.tmp\" && mv \"$f.tmp\" \"$f\"\n",
            calls.display()
        ),
    )
}

/// One recorded call: its environment and the entry it read on stdin.
fn calls(site: &CliSite) -> Vec<(BTreeMap<String, String>, HistoryEntry)> {
    let dir = site.dir().join("calls");
    let mut calls: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_none())
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let (env, stdin) = text.split_once("\n---\n").expect("a recorded call");
            let env = env
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            let entry: HistoryEntry = serde_json::from_str(stdin.trim())
                .unwrap_or_else(|e| panic!("stdin is no entry ({e}): {stdin:?}"));
            (env, entry)
        })
        .collect();
    calls.sort_by_key(|(_, e)| e.at);
    calls
}

/// `offline history --json`, parsed.
fn history(site: &CliSite) -> Vec<HistoryEntry> {
    let out = site.run(&["offline", "history", "--json", "-n", "1000"]);
    assert_eq!(out.code(), Some(0), "{out}");
    out.stdout
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until the history holds `n` entries of kind `hook_failed`, and
/// returns them.
fn hook_failures(site: &CliSite, n: usize) -> Vec<HistoryEntry> {
    let mut failed = poll_until(&format!("{n} failed hooks recorded"), || {
        let failed: Vec<HistoryEntry> = history(site)
            .into_iter()
            .filter(|e| e.kind == EventKind::HookFailed)
            .collect();
        (failed.len() >= n).then_some(failed)
    });
    // Each change's hooks run in a supervisor of their own: in the order
    // of the changes they ran for.
    failed.sort_by_key(|e| e.hook.as_ref().map(|h| h.change_at));
    failed
}

#[test]
fn a_hook_gets_each_change_in_its_environment_and_its_entry_on_stdin_and_no_secret() {
    let site = CliSite::with_config(EXE, "[hooks]\non_change = [\"record.sh\"]\n");
    recording_hook(&site);
    let secrets = [
        ("MANAGE_TASK", "t-1:not-for-hooks"),
        // (Not MANAGE_DATABASE_URL: it would select the postgres backend
        // for this file-backend site. Hooks get a cleared environment, so
        // it is gone as every variable here is.)
        ("DATABASE_URL", "postgres://site:hunter2@db/site"),
        ("PGPASSWORD", "hunter2"),
        ("AWS_SECRET_ACCESS_KEY", "hunter2"),
    ];
    let run = |args: &[&str]| {
        let mut cmd = site.command(args);
        cmd.envs(secrets);
        let out = manage_tests::Proc::spawn(cmd).finish();
        assert_eq!(out.code(), Some(0), "{out}");
        assert_eq!(out.stderr, "", "{out}");
    };
    run(&["offline", "on", "--force", "--message", "Back at 6"]);
    run(&["offline", "off"]);
    let got = poll_until("both changes reached the hook", || {
        let c = calls(&site);
        (c.len() >= 2).then_some(c)
    });
    assert_eq!(got.len(), 2, "one call a change");
    let me = user_at_host();
    let recorded = history(&site);
    for ((env, entry), (from, to, message)) in got.iter().zip([
        ("ONLINE", "OFFLINE", "Back at 6"),
        ("OFFLINE", "ONLINE", ""),
    ]) {
        let var = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(var("MANAGE_EVENT"), Some("mode"), "{env:?}");
        assert_eq!(var("MANAGE_PREVIOUS_MODE"), Some(from), "{env:?}");
        assert_eq!(var("MANAGE_MODE"), Some(to), "{env:?}");
        assert_eq!(var("MANAGE_BY"), Some(me.as_str()), "{env:?}");
        assert_eq!(var("MANAGE_MESSAGE"), Some(message), "{env:?}");
        assert_eq!(var("MANAGE_SCHEDULED_AT"), Some(""), "{env:?}");
        assert!(var("PATH").is_some(), "{env:?}");
        for (secret, value) in secrets {
            assert!(var(secret).is_none(), "{secret} reached the hook: {env:?}");
            assert!(!env.values().any(|v| v.contains(value)), "{env:?}");
        }
        let manage_vars: Vec<&String> = env.keys().filter(|k| k.starts_with("MANAGE_")).collect();
        assert_eq!(
            manage_vars.len(),
            6,
            "only the documented ones: {manage_vars:?}"
        );
        // Its stdin is the history's entry, word for word.
        assert!(recorded.contains(entry), "{entry:#?} not in {recorded:#?}");
    }
    assert!(got[0].1.forced);
}

#[test]
fn a_failing_hook_is_reported_while_the_runner_lives_and_recorded_and_the_change_stands() {
    let site = CliSite::with_config(EXE, "[hooks]\non_change = [[\"fail.sh\", \"--loudly\"]]\n");
    let fail = script(
        &site,
        "fail.sh",
        "echo \"cannot reach the chat server\" >&2\nexit 3\n",
    );
    let go = site.dir().join("go");
    // The window's command waits until the test lets it end, so the run is
    // alive when the failures of PENDING and OFFLINE are reported.
    site.external(
        "wait-for-go",
        &format!(
            "#!/bin/sh\nwhile [ ! -e {} ]; do sleep 0.05; done\n",
            go.display()
        ),
    );
    // Its stderr goes to a file, read while it runs.
    let said = site.dir().join("run.stderr");
    let mut cmd = site.command(&["offline", "run", "--", "wait-for-go"]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&said).unwrap());
    let mut run = cmd.spawn().unwrap();
    // Whatever happens below, the command is let go in the end.
    let release = Go(go);
    let program = format!("{} --loudly", fail.display());
    let stderr = poll_until("the run reported both failures on its stderr", || {
        let text = std::fs::read_to_string(&said).unwrap();
        let reported = |change: &str| {
            text.lines().any(|l| {
                l.starts_with(&format!("warning: hook `{program}` for {change} at "))
                    && l.ends_with(
                        "exited with 3: cannot reach the chat server (recorded in the history)",
                    )
            })
        };
        (reported("ONLINE → PENDING") && reported("PENDING → OFFLINE")).then_some(text)
    });
    let failed = hook_failures(&site, 2);
    drop(release);
    let status = poll_until("the run ended", || run.try_wait().unwrap());
    assert_eq!(
        status.code(),
        Some(0),
        "a hook's failure changes no outcome: {stderr}"
    );
    assert_eq!(site.mode().mode, Mode::Online, "the run restored the site");
    for e in &failed[..2] {
        let hook = e.hook.as_ref().expect("how it failed");
        assert_eq!(
            hook.program,
            [fail.to_string_lossy().into_owned(), "--loudly".into()]
        );
        assert_eq!(hook.failure, "exited with 3");
        assert_eq!(hook.stderr.as_deref(), Some("cannot reach the chat server"));
    }
    assert_eq!(
        (failed[0].from, failed[0].to, failed[1].from, failed[1].to),
        (Mode::Online, Mode::Pending, Mode::Pending, Mode::Offline)
    );
    // The restore's hook fails too, after the run; every change is in the
    // history as if no hook had failed.
    assert_eq!(hook_failures(&site, 3)[2].to, Mode::Online);
    let changes: Vec<(Mode, Mode)> = history(&site)
        .iter()
        .filter(|e| e.kind == EventKind::Mode)
        .map(|e| (e.from, e.to))
        .collect();
    assert_eq!(
        changes,
        [
            (Mode::Online, Mode::Pending),
            (Mode::Pending, Mode::Offline),
            (Mode::Offline, Mode::Online)
        ]
    );
}

/// Hook processes, killed (and waited for) when dropped, a failed test's
/// too.
struct Hooks(Vec<u32>);

impl Drop for Hooks {
    fn drop(&mut self) {
        for pid in &self.0 {
            kill9_pid(*pid);
        }
    }
}

/// Lets a waiting `wait-for-go` command end when dropped: creates its file.
struct Go(PathBuf);

impl Drop for Go {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, "");
    }
}

/// Waits until `dir/<prefix>-*` pid files exist, and returns the pids.
fn pids(dir: &Path, prefix: &str, n: usize) -> Vec<u32> {
    poll_until(&format!("{n} {prefix} pid files"), || {
        let found: Vec<u32> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_prefix(&format!("{prefix}-"))?.parse().ok()
            })
            .collect();
        (found.len() >= n).then_some(found)
    })
}

#[test]
fn a_slow_hook_never_holds_up_offline_run_or_its_exit() {
    let site = CliSite::with_config(
        EXE,
        "[hooks]\non_change = [\"slow.sh\"]\ntimeout = \"1h\"\n",
    );
    let marks = site.dir().join("marks");
    std::fs::create_dir(&marks).unwrap();
    // It never ends by itself; it holds no pipe of the runner's.
    script(
        &site,
        "slow.sh",
        &format!("touch {}/slow-$$\nexec sleep 3600\n", marks.display()),
    );
    // `finish` reads the run's stdout and stderr to their end: a hook that
    // kept either open would hold it up here.
    let out = site.run(&["offline", "run", "--", "hello"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stdout, ["Hello, world!"], "{out}");
    // The run has exited while each of its three changes' hooks still runs.
    let slow = Hooks(pids(&marks, "slow", 3));
    for pid in &slow.0 {
        assert!(
            is_alive(*pid),
            "hook {pid} ended before the run: it waited for it"
        );
    }
    assert_eq!(site.mode().mode, Mode::Online);
    // Ended by hand, each is reported by its supervisor, which then ends.
    drop(slow);
    for e in hook_failures(&site, 3) {
        assert_eq!(e.hook.unwrap().failure, "was killed by signal 9");
    }
}

#[test]
fn a_hanging_hook_is_killed_with_what_it_started_after_its_timeout() {
    let site = CliSite::with_config(
        EXE,
        "[hooks]\non_change = [\"hang.sh\"]\ntimeout = \"1s\"\n",
    );
    let marks = site.dir().join("marks");
    std::fs::create_dir(&marks).unwrap();
    // The hook and a child of its own, both hanging.
    script(
        &site,
        "hang.sh",
        &format!(
            "touch {m}/hook-$$\nsleep 3600 &\ntouch {m}/child-$!\nwait\n",
            m = marks.display()
        ),
    );
    let out = site.run(&["offline", "run", "--", "hello"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stdout, ["Hello, world!"], "{out}");
    // PENDING, OFFLINE and the restore each ran it.
    for pid in pids(&marks, "hook", 3)
        .into_iter()
        .chain(pids(&marks, "child", 3))
    {
        wait_dead(pid);
    }
    for e in hook_failures(&site, 3) {
        assert_eq!(e.hook.unwrap().failure, "timed out after 1s and was killed");
    }
    assert_eq!(site.mode().mode, Mode::Online, "every change stands");
}

#[test]
fn hooks_of_a_manage_toml_a_stranger_owns_or_others_may_write_are_refused() {
    let Some(stranger) =
        unprivileged_user("hooks_of_a_manage_toml_a_stranger_owns_or_others_may_write_are_refused")
    else {
        return;
    };
    let site = CliSite::with_config(EXE, "[hooks]\non_change = [\"record.sh\"]\n");
    recording_hook(&site);
    let toml = site.dir().join("manage.toml");
    // Found by walking up from a directory below it, as from /tmp/x/a/b.
    let below = site.dir().join("a/b");
    std::fs::create_dir_all(&below).unwrap();
    assert!(
        toml.starts_with(std::env::temp_dir()),
        "the scratch site lives in the shared temporary directory"
    );
    let run = |args: &[&str]| {
        let mut cmd = site.command(args);
        cmd.current_dir(&below);
        manage_tests::Proc::spawn(cmd).finish()
    };
    let me = maintenance_core::identity::user_name(rustix::process::geteuid().as_raw());
    // A stranger's file.
    chown(&toml, Some(stranger.uid), None);
    let out = run(&["offline", "on", "--force"]);
    assert_eq!(
        out.code(),
        Some(0),
        "the change is made all the same: {out}"
    );
    assert!(
        out.stderr.contains(&format!(
            "warning: the hooks of {} are not run: {} is owned by manage-test, who is neither \
             root nor you ({me})",
            toml.display(),
            toml.display()
        )),
        "{out}"
    );
    // Ours, but writable by others.
    chown(&toml, Some(0), None);
    chmod(&toml, 0o666);
    let out = run(&["offline", "off"]);
    assert!(
        out.stderr.contains(&format!(
            "{} is writable by every user (mode 0666); run: chmod go-w",
            toml.display()
        )),
        "{out}"
    );
    let out = run(&["offline", "doctor"]);
    assert!(
        out.text().contains("is writable by every user (mode 0666)"),
        "doctor says it: {out}"
    );
    // A hook program a stranger may replace.
    chmod(&toml, 0o644);
    let hook = site.dir().join("record.sh");
    chown(&hook, Some(stranger.uid), None);
    let out = run(&["offline", "on", "--force"]);
    assert!(
        out.stderr.contains(&format!(
            "are not run: its hook {} is owned by manage-test",
            hook.display()
        )),
        "{out}"
    );
    // Made safe, the hook runs: for that change alone.
    chown(&hook, Some(0), None);
    let out = run(&["offline", "off"]);
    assert_eq!((out.code(), out.stderr.as_str()), (Some(0), ""), "{out}");
    let got = poll_until("the trusted change reached the hook", || {
        let c = calls(&site);
        (!c.is_empty()).then_some(c)
    });
    assert_eq!(got.len(), 1, "the refused changes never ran it: {got:?}");
    assert_eq!(got[0].1.to, Mode::Online);
    assert_eq!(
        history(&site)
            .iter()
            .filter(|e| e.kind == EventKind::Mode)
            .count(),
        4
    );
}

#[test]
fn a_hook_hears_a_schedule_set_cancelled_and_lapsed_with_its_time() {
    let site = CliSite::with_config(EXE, "[hooks]\non_change = [\"record.sh\"]\n");
    recording_hook(&site);
    let me = user_at_host();
    let scheduled = |args: &[&str]| {
        let mut p = site.spawn(args);
        let line = p.line();
        assert!(line.starts_with("Offline scheduled at "), "{line:?}");
        p
    };
    // Set, then cancelled by `off` (an ONLINE site: no mode change).
    let on = scheduled(&["offline", "on", "--at", "+1h", "--message", "Upgrading"]);
    let at = site.status_json()["schedule"]["at"]
        .as_str()
        .expect("the schedule's time")
        .to_owned();
    assert_eq!(site.run(&["offline", "off"]).code(), Some(0));
    assert_eq!(on.finish().code(), Some(manage_tests::REFUSED));
    // Set, then its holder killed: the next look records the lapse, and
    // runs the hooks for it.
    let mut killed = scheduled(&["offline", "on", "--at", "+2h"]);
    killed.kill9();
    site.schedule_released();
    assert_eq!(site.run(&["offline", "status"]).code(), Some(0));

    let got = poll_until("four schedule events reached the hook", || {
        let c = calls(&site);
        (c.len() >= 4).then_some(c)
    });
    assert_eq!(got.len(), 4, "one call an event: {got:#?}");
    let recorded = history(&site);
    let seen: Vec<(String, String, String)> = got
        .iter()
        .map(|(env, entry)| {
            let var = |k: &str| env.get(k).cloned().unwrap_or_default();
            assert_eq!(var("MANAGE_MODE"), "ONLINE", "{env:?}");
            assert_eq!(var("MANAGE_PREVIOUS_MODE"), "ONLINE", "{env:?}");
            assert!(recorded.contains(entry), "{entry:#?} not in {recorded:#?}");
            // The time the hook is told is the entry's schedule's.
            let s = entry.schedule.as_ref().expect("the entry carries it");
            assert_eq!(var("MANAGE_SCHEDULED_AT"), s.at.to_string(), "{env:?}");
            (var("MANAGE_EVENT"), var("MANAGE_BY"), var("MANAGE_MESSAGE"))
        })
        .collect();
    let ev = |e: &str, m: &str| (e.to_owned(), me.clone(), m.to_owned());
    assert_eq!(
        seen,
        [
            ev("schedule_set", "Upgrading"),
            ev("schedule_cancelled", "Upgrading"),
            ev("schedule_set", ""),
            ev("schedule_lapsed", ""),
        ]
    );
    let told = |i: usize| {
        maintenance_core::clock::Timestamp::parse_rfc3339(&got[i].0["MANAGE_SCHEDULED_AT"]).unwrap()
    };
    assert_eq!(
        told(0),
        maintenance_core::clock::Timestamp::parse_rfc3339(&at).unwrap(),
        "the time status showed"
    );
    assert_eq!(told(0), told(1));
    assert_eq!(told(2), told(3));
    assert!(told(2) > told(0), "+2h after +1h");
    assert_eq!(got[3].1.pid, killed.pid(), "the killed holder's");
}
