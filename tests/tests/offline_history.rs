//! The history of mode changes end to end, with the real `manage` binary
//! (`e2e-manage`) in real processes: a sequence of `on` (waiting for a
//! command), `--force`, a timeout, `off`, `run` and a waiter killed, read
//! back with `offline history --json` and as a table, then rotated past
//! its bound; a lapsed PENDING and a run killed mid-command each recorded
//! exactly once while several readers race to notice them; a scheduled
//! window set, gone PENDING and OFFLINE at its time, and turned off; a
//! schedule cancelled, withdrawn and killed, each recorded once; and the
//! read-only tier's changes as the user sees them (READONLY_PENDING,
//! READONLY, on to OFFLINE, killed waiters of both drains, a read-only
//! schedule), each heard by a hook.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;

use maintenance_core::Mode;
use maintenance_core::history::{Cause, EventKind, HistoryEntry};
use manage_tests::{CliSite, Proc, Window, file_backend_only, poll_until, user_at_host};

const EXE: &str = env!("CARGO_BIN_EXE_e2e-manage");

/// `(cause, from, to, forced)` of each entry.
fn changes(entries: &[HistoryEntry]) -> Vec<(Cause, Mode, Mode, bool)> {
    entries
        .iter()
        .map(|e| (e.cause, e.from, e.to, e.forced))
        .collect()
}

/// Starts `offline on` while `sleeper` holds the site, and waits until it
/// is PENDING.
fn waiting_on(site: &CliSite, args: &[&str]) -> Proc {
    let mut argv = vec!["offline", "on"];
    argv.extend(args);
    let on = site.spawn(&argv);
    site.wait_for_mode(Mode::Pending);
    on
}

#[test]
fn the_history_of_on_force_timeout_off_run_and_a_killed_waiter_reads_back_then_rotates() {
    let site = CliSite::new(EXE);
    let me = user_at_host();

    // `on` waits for a command, which then ends.
    let (mut sleeper, _) = site.start(&["sleeper", "--secs", "60"]);
    let on = waiting_on(&site, &["--message", "Upgrading"]);
    sleeper.kill9();
    assert_eq!(on.finish().code(), Some(0));
    assert_eq!(site.run(&["offline", "off"]).code(), Some(0));
    // `--force`, then `off`.
    assert_eq!(site.run(&["offline", "on", "--force"]).code(), Some(0));
    assert_eq!(site.run(&["offline", "off"]).code(), Some(0));
    // A timeout.
    let (mut sleeper, _) = site.start(&["sleeper", "--secs", "60"]);
    let out = site.run(&["offline", "on", "--timeout", "0.2"]);
    assert_eq!(out.code(), Some(124), "{out}");
    sleeper.kill9();
    // The deploy one-liner.
    assert_eq!(site.run(&["offline", "run", "--", "hello"]).code(), Some(0));
    // A waiter killed: PENDING lapses, and the next look records it.
    let (mut sleeper, _) = site.start(&["sleeper", "--secs", "60"]);
    let mut on = waiting_on(&site, &[]);
    on.kill9();
    sleeper.kill9();
    site.lapsed_to(Mode::Online);
    assert_eq!(site.run(&["offline", "status"]).code(), Some(0));

    let entries = site.history(100);
    use Cause::*;
    use Mode::*;
    assert_eq!(
        changes(&entries),
        [
            (On, Online, Pending, false),
            (On, Pending, Offline, false),
            (Off, Offline, Online, false),
            (Force, Online, Offline, true),
            (Off, Offline, Online, false),
            (On, Online, Pending, false),
            (Timeout, Pending, Online, false),
            (Run, Online, Pending, false),
            (Run, Pending, Offline, false),
            (Run, Offline, Online, false),
            (On, Online, Pending, false),
            (Lapsed, Pending, Online, false),
        ],
        "{entries:#?}"
    );
    assert!(
        entries
            .iter()
            .all(|e| e.kind == EventKind::Mode && e.by == me)
    );
    assert!(entries.windows(2).all(|w| w[0].at <= w[1].at), "in order");
    // Who waited, how long, and for what; what was still live.
    let offline = &entries[1];
    assert_eq!(offline.message.as_deref(), Some("Upgrading"));
    let waited = offline.waited.as_ref().expect("how long it waited");
    assert!(waited.seconds > 0.0, "{waited:?}");
    assert_eq!(waited.held_by.tasks.len(), 1, "{waited:?}");
    assert_eq!(waited.held_by.tasks[0].name, "sleeper");
    let timeout = &entries[6];
    assert!(
        timeout
            .reason
            .starts_with("offline on: timed out after 0.2s; still live: command `sleeper`"),
        "{}",
        timeout.reason
    );
    assert_eq!(timeout.live.tasks[0].name, "sleeper");
    assert_eq!(timeout.pid, entries[5].pid, "the waiter that began it");
    assert!(
        entries[9].reason.contains("offline run -- hello"),
        "{}",
        entries[9].reason
    );
    let lapse = &entries[11];
    assert_eq!(lapse.pid, on.pid(), "the killed waiter's");
    assert!(lapse.noticed_by.is_some(), "{lapse:?}");

    // The table, newest last, readable at a glance.
    let out = site.run(&["offline", "history", "-n", "3"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stdout.len(), 4, "a header and three rows: {out}");
    let header: Vec<&str> = out.stdout[0].split_whitespace().collect();
    assert_eq!(header, ["TIME", "CHANGE", "BY", "TOOK", "WHY"]);
    assert!(
        out.stdout[1].contains("OFFLINE → ONLINE")
            && out.stdout[1].contains("offline run -- hello"),
        "{out}"
    );
    assert!(
        out.stdout[3].contains("PENDING → ONLINE") && out.stdout[3].contains("lapsed"),
        "{out}"
    );

    // Rotation: past a small bound, into history.jsonl.1, keeping the
    // newest entries, the mode of every state file, and nothing else.
    if file_backend_only("the rest: the rotation into history.jsonl.1 and its file modes") {
        return;
    }
    std::fs::write(
        site.dir().join("manage.toml"),
        "refresh_interval = \"50ms\"\n[history]\nmax_size = \"2KiB\"\n",
    )
    .unwrap();
    let state = site.state();
    let mut rounds = 0;
    while !state.join("history.jsonl.1").exists() || rounds < 8 {
        assert_eq!(site.run(&["offline", "on", "--force"]).code(), Some(0));
        assert_eq!(site.run(&["offline", "off"]).code(), Some(0));
        rounds += 1;
        assert!(rounds < 100, "never rotated");
    }
    for name in ["history.jsonl", "history.jsonl.1"] {
        let meta = std::fs::metadata(state.join(name)).unwrap();
        assert!(meta.len() <= 2048, "{name}: {} bytes", meta.len());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600, "{name}");
    }
    let kept = site.history(1000);
    assert!(kept.len() < entries.len() + 2 * rounds, "the oldest went");
    assert_eq!(
        changes(&kept[kept.len() - 2..]),
        [
            (Force, Online, Offline, true),
            (Off, Offline, Online, false)
        ],
        "the newest are kept"
    );
}

#[test]
fn a_lapsed_pending_is_recorded_once_however_many_processes_notice_it_at_once() {
    let site = CliSite::new(EXE);
    let (mut sleeper, _) = site.start(&["sleeper", "--secs", "60"]);
    let mut on = waiting_on(&site, &[]);
    on.kill9();
    site.lapsed_to(Mode::Online);
    // Readers of both kinds race to notice it.
    site.notice_at_once(8);
    let lapses: Vec<HistoryEntry> = site
        .history(100)
        .into_iter()
        .filter(|e| e.cause == Cause::Lapsed)
        .collect();
    assert_eq!(lapses.len(), 1, "{lapses:#?}");
    assert_eq!(lapses[0].pid, on.pid());
    // The writer that follows records no second one.
    assert_eq!(site.run(&["offline", "on", "--force"]).code(), Some(0));
    let all = site.history(100);
    assert_eq!(all.iter().filter(|e| e.cause == Cause::Lapsed).count(), 1);
    assert_eq!(all.last().unwrap().cause, Cause::Force);
    sleeper.kill9();
}

#[test]
fn a_run_killed_mid_command_is_recorded_once_before_the_off_that_follows() {
    let site = CliSite::new(EXE);
    let (mut run, _) = site.start(&["offline", "run", "--", "sleeper", "--secs", "60"]);
    assert_eq!(site.mode().mode, Mode::Offline);
    run.kill9();
    site.window_abandoned();
    let readers: Vec<Proc> = (0..6).map(|_| site.spawn(&["offline", "status"])).collect();
    for r in readers {
        assert_eq!(r.finish().code(), Some(0));
    }
    assert_eq!(site.run(&["offline", "off"]).code(), Some(0));
    let entries = site.history(100);
    use Cause::*;
    use Mode::*;
    assert_eq!(
        changes(&entries),
        [
            (Run, Online, Pending, false),
            (Run, Pending, Offline, false),
            (Abandoned, Offline, Offline, false),
            (Off, Offline, Online, false),
        ],
        "{entries:#?}"
    );
    let abandoned = &entries[2];
    assert_eq!(abandoned.kind, EventKind::RunAbandoned);
    assert_eq!(abandoned.pid, run.pid());
    assert!(
        abandoned
            .reason
            .contains("`offline run -- sleeper --secs 60`")
            && abandoned
                .reason
                .contains("was killed while its command ran"),
        "{}",
        abandoned.reason
    );
    // Nothing more is noticed later.
    assert_eq!(site.run(&["offline", "status"]).code(), Some(0));
    assert_eq!(site.history(100), entries);
}

/// Starts `manage ARGS…` (an `offline on --at …`) and waits until it says
/// its window is scheduled: from then on the schedule is live.
fn scheduled(site: &CliSite, args: &[&str]) -> Proc {
    manage_tests::scheduled(site.spawn(args), Window::Offline, args).0
}

/// `(kind, cause, from, to)` of each entry.
fn events(entries: &[HistoryEntry]) -> Vec<(EventKind, Cause, Mode, Mode)> {
    entries
        .iter()
        .map(|e| (e.kind, e.cause, e.from, e.to))
        .collect()
}

#[test]
fn a_scheduled_window_reads_back_as_set_then_its_pending_and_offline_then_the_off() {
    let site = CliSite::new(EXE);
    let me = user_at_host();
    let on = scheduled(
        &site,
        &["offline", "on", "--at", "+2s", "--message", "Upgrading"],
    );
    let holder = on.pid();
    let out = on.finish();
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(site.run(&["offline", "off"]).code(), Some(0));

    let entries = site.history(100);
    use Cause::*;
    use Mode::*;
    assert_eq!(
        events(&entries),
        [
            (EventKind::ScheduleSet, Scheduled, Online, Online),
            (EventKind::Mode, Scheduled, Online, Pending),
            (EventKind::Mode, Scheduled, Pending, Offline),
            (EventKind::Mode, Off, Offline, Online),
        ],
        "{entries:#?}"
    );
    let at = entries[0].schedule.as_ref().expect("the schedule set").at;
    for e in &entries[..3] {
        let s = e.schedule.as_ref().unwrap_or_else(|| panic!("{e:#?}"));
        assert_eq!((s.at, s.pid, s.by.as_str()), (at, holder, me.as_str()));
        assert_eq!(s.message.as_deref(), Some("Upgrading"));
        assert_eq!(e.pid, holder, "the waiting process made each");
        assert_eq!(e.message.as_deref(), Some("Upgrading"));
    }
    assert!(
        entries[3].schedule.is_none(),
        "the off is not the schedule's"
    );
    assert!(entries[1].at >= at, "PENDING at its time, never before");
    assert!(
        entries[0].reason.starts_with("offline on --at "),
        "{}",
        entries[0].reason
    );

    // The table says it at a glance.
    let out = site.run(&["offline", "history"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stdout.len(), 5, "{out}");
    assert!(out.stdout[1].contains("schedule set"), "{out}");
    assert!(out.stdout[2].contains("ONLINE → PENDING"), "{out}");
}

#[test]
fn a_cancelled_a_withdrawn_and_a_killed_schedule_are_each_recorded_once() {
    let site = CliSite::new(EXE);
    // Cancelled by `off`.
    let cancelled = scheduled(&site, &["offline", "on", "--at", "+1h"]);
    let off = site.spawn(&["offline", "off"]);
    let off_pid = off.pid();
    assert_eq!(off.finish().code(), Some(0));
    assert_eq!(cancelled.finish().code(), Some(manage_tests::REFUSED));
    // Withdrawn by its own process, on SIGTERM.
    let withdrawn = scheduled(&site, &["offline", "on", "--at", "+1h"]);
    let withdrawn_pid = withdrawn.pid();
    manage_tests::send_signal(withdrawn_pid, rustix::process::Signal::TERM);
    assert_eq!(
        withdrawn.finish().code(),
        Some(i32::from(maintenance_core::exit::INTERRUPTED))
    );
    // Killed: nobody lived to record it; readers of both kinds race to.
    let mut killed = scheduled(&site, &["offline", "on", "--at", "+1h"]);
    killed.kill9();
    site.schedule_released();
    site.notice_at_once(8);
    // A writer after them records no second one.
    assert_eq!(site.run(&["offline", "on", "--force"]).code(), Some(0));

    let entries = site.history(100);
    use Cause::*;
    use Mode::*;
    assert_eq!(
        events(&entries),
        [
            (EventKind::ScheduleSet, Scheduled, Online, Online),
            (EventKind::ScheduleCancelled, Off, Online, Online),
            (EventKind::ScheduleSet, Scheduled, Online, Online),
            (EventKind::ScheduleCancelled, Interrupted, Online, Online),
            (EventKind::ScheduleSet, Scheduled, Online, Online),
            (EventKind::ScheduleLapsed, Lapsed, Online, Online),
            (EventKind::Mode, Force, Online, Offline),
        ],
        "{entries:#?}"
    );
    let holders: Vec<u32> = entries[..6]
        .iter()
        .map(|e| e.schedule.as_ref().expect("each carries it").pid)
        .collect();
    assert_eq!(
        holders,
        [
            entries[0].pid,
            entries[0].pid,
            withdrawn_pid,
            withdrawn_pid,
            killed.pid(),
            killed.pid()
        ]
    );
    assert_eq!(entries[1].pid, off_pid, "cancelled by the off");
    assert_eq!(entries[3].pid, withdrawn_pid, "withdrawn by its holder");
    assert_eq!(entries[5].pid, killed.pid(), "the killed holder's");
    assert!(entries[5].noticed_by.is_some(), "{:#?}", entries[5]);
    assert!(
        entries[5].reason.contains("lapsed"),
        "{}",
        entries[5].reason
    );
}

/// An external command that says `started`, then holds its task until the
/// file named by its first argument exists (no sleep is relied on).
const HOLD: &str = "#!/bin/sh\necho started\nwhile [ ! -e \"$1\" ]; do sleep 0.02; done\n";

/// Starts `manage NAME <release file>` once it has said `started`, and
/// returns it with the file whose creation lets it end.
fn hold(site: &CliSite, name: &str, n: usize) -> (Proc, std::path::PathBuf) {
    let release = site.dir().join(format!("release-{name}-{n}"));
    let mut p = site.spawn(&[name, release.to_str().unwrap()]);
    assert_eq!(p.line(), "started", "`manage {name}` did not start");
    (p, release)
}

/// Waits until `waiter` has recorded the drain it began and every change
/// recorded so far reached the hook (one line each in `heard`): a waiter
/// killed in the instant between its entry and its hook's start would
/// take that hook with it, and the entry, kept, is not recorded again.
fn all_heard_with(site: &CliSite, heard: &std::path::Path, waiter: &Proc) {
    poll_until("the waiter's entry recorded and every change heard", || {
        let entries = site.history(100);
        let lines = std::fs::read_to_string(heard).unwrap_or_default();
        (entries
            .iter()
            .any(|e| e.pid == waiter.pid() && e.to.is_draining())
            && lines.lines().count() >= entries.len())
        .then_some(())
    });
}

#[test]
fn the_read_only_tier_reads_back_as_the_user_sees_it_and_its_hooks_hear_each_change() {
    let site = CliSite::with_config(
        EXE,
        "[commands.scan]\naccess = \"read-only\"\n[hooks]\non_change = [\"hear.sh\"]\n",
    );
    site.external("import", HOLD);
    site.external("scan", HOLD);
    let heard = site.dir().join("heard");
    let hook = site.dir().join("hear.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$MANAGE_EVENT $MANAGE_PREVIOUS_MODE $MANAGE_MODE\" >> {}\n",
            heard.display()
        ),
    )
    .unwrap();
    manage_tests::chmod(&hook, 0o755);
    let ok = |args: &[&str]| {
        let out = site.run(args);
        assert_eq!(out.code(), Some(0), "manage {}: {out}", args.join(" "));
    };

    // A read-only drain held by a command that may write, then on to
    // OFFLINE, and off.
    let (import, release) = hold(&site, "import", 1);
    let on = site.spawn(&["offline", "on", "--read-only", "--message", "Re-indexing"]);
    site.wait_for_mode(Mode::ReadOnlyPending);
    std::fs::write(&release, "").unwrap();
    assert_eq!(on.finish().code(), Some(0));
    assert_eq!(import.finish().code(), Some(0));
    ok(&["offline", "on"]);
    ok(&["offline", "off"]);
    // At once, and off; a read-only window for a command.
    ok(&["offline", "on", "--read-only", "--force"]);
    ok(&["offline", "off"]);
    ok(&["offline", "run", "--read-only", "--", "hello"]);
    // A read-only waiter killed: its drain lapses to ONLINE.
    let (import, release) = hold(&site, "import", 2);
    let mut on = site.spawn(&["offline", "on", "--read-only"]);
    site.wait_for_mode(Mode::ReadOnlyPending);
    all_heard_with(&site, &heard, &on);
    on.kill9();
    site.lapsed_to(Mode::Online);
    ok(&["offline", "status"]);
    std::fs::write(&release, "").unwrap();
    assert_eq!(import.finish().code(), Some(0));
    // From READONLY, a waiter for OFFLINE killed (a read-only command
    // started during READONLY holds it off): back to READONLY.
    ok(&["offline", "on", "--read-only", "--force"]);
    let (scan, release) = hold(&site, "scan", 1);
    let mut on_from_read_only = site.spawn(&["offline", "on"]);
    site.wait_for_mode(Mode::Pending);
    all_heard_with(&site, &heard, &on_from_read_only);
    on_from_read_only.kill9();
    site.lapsed_to(Mode::ReadOnly);
    ok(&["offline", "status"]);
    std::fs::write(&release, "").unwrap();
    assert_eq!(scan.finish().code(), Some(0));
    ok(&["offline", "off"]);
    // A read-only window scheduled ahead.
    let mut at = site.spawn(&["offline", "on", "--read-only", "--at", "+1s"]);
    let line = at.line();
    assert!(line.starts_with("Read-only scheduled at "), "{line:?}");
    assert_eq!(at.finish().code(), Some(0));
    ok(&["offline", "off"]);

    let entries = site.history(100);
    use Cause::*;
    use Mode::*;
    let modes: Vec<HistoryEntry> = entries
        .iter()
        .filter(|e| e.kind == EventKind::Mode)
        .cloned()
        .collect();
    assert_eq!(
        changes(&modes),
        [
            (On, Online, ReadOnlyPending, false),
            (On, ReadOnlyPending, ReadOnly, false),
            (On, ReadOnly, Pending, false),
            (On, Pending, Offline, false),
            (Off, Offline, Online, false),
            (Force, Online, ReadOnly, true),
            (Off, ReadOnly, Online, false),
            (Run, Online, ReadOnlyPending, false),
            (Run, ReadOnlyPending, ReadOnly, false),
            (Run, ReadOnly, Online, false),
            (On, Online, ReadOnlyPending, false),
            (Lapsed, ReadOnlyPending, Online, false),
            (Force, Online, ReadOnly, true),
            (On, ReadOnly, Pending, false),
            (Lapsed, Pending, ReadOnly, false),
            (Off, ReadOnly, Online, false),
            (Scheduled, Online, ReadOnlyPending, false),
            (Scheduled, ReadOnlyPending, ReadOnly, false),
            (Off, ReadOnly, Online, false),
        ],
        "{entries:#?}"
    );
    let read_only = &modes[1];
    assert_eq!(read_only.message.as_deref(), Some("Re-indexing"));
    let waited = read_only.waited.as_ref().expect("how long it waited");
    assert_eq!(waited.held_by.tasks[0].name, "import", "{waited:?}");
    assert_eq!(modes[11].pid, on.pid(), "the killed waiter's");
    assert_eq!(
        modes[14].pid,
        on_from_read_only.pid(),
        "the killed waiter's"
    );
    assert!(modes[11].noticed_by.is_some() && modes[14].noticed_by.is_some());
    assert!(
        modes[7]
            .reason
            .starts_with("offline run --read-only -- hello"),
        "{}",
        modes[7].reason
    );
    // The schedule's events, and the changes it caused, say read_only.
    let scheduled: Vec<&HistoryEntry> = entries.iter().filter(|e| e.schedule.is_some()).collect();
    assert_eq!(scheduled.len(), 3, "set, READONLY_PENDING, READONLY");
    assert_eq!(scheduled[0].kind, EventKind::ScheduleSet);
    assert!(
        scheduled
            .iter()
            .all(|e| e.schedule.as_ref().unwrap().read_only),
        "{scheduled:#?}"
    );

    // The hooks heard every entry, READONLY and READONLY_PENDING by name.
    let mut want: Vec<String> = entries
        .iter()
        .map(|e| format!("{} {} {}", e.kind, e.from, e.to))
        .collect();
    want.sort();
    let got = poll_until("every change reached the hook", || {
        let text = std::fs::read_to_string(&heard).unwrap_or_default();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.sort();
        (lines.len() >= want.len()).then_some(lines)
    });
    assert_eq!(got, want);
    assert!(got.contains(&"mode READONLY_PENDING READONLY".to_owned()));
    assert!(got.contains(&"mode PENDING READONLY".to_owned()));
}
