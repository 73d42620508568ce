//! `manage offline status|check`: the status line (and under it the line
//! of a scheduled window), the `-v` breakdown and the `--json` object
//! (maintenance-core's `offline::status`), and the status line every other
//! verb ends with.

use std::borrow::Cow;
use std::time::SystemTime;

use maintenance_core::backend::{Backend, ScheduleRecord, WindowState};
use maintenance_core::clock::format_age;
use maintenance_core::command::{Context, Exit};
use maintenance_core::hooks::Hooks;
use maintenance_core::mode::{Mode, RetryAfter};
use maintenance_core::transition::{self as offline, Status};
use maintenance_core::{anyhow, clap, exit};

// The flags of `offline status` (none given: the default). (A plain
// comment: under the deferred verbs a doc comment here would replace the
// verb's own `--help` title.)
#[derive(Debug, Default, clap::Args)]
pub(super) struct StatusArgs {
    /// One JSON object (documented in the README), for scripts.
    #[arg(long)]
    json: bool,
    /// Exit 0 when ONLINE, 3 when PENDING, 4 when OFFLINE, 5 when
    /// READONLY_PENDING, 6 when READONLY.
    #[arg(long)]
    exit_code: bool,
}

/// The status line, `Status: <MODE> - Active sessions: <N>`, word for word
/// as django-site-maintenance's `offline` command prints it.
pub(super) fn status_line(mode: Mode, active: usize) -> String {
    format!("Status: {mode} - Active sessions: {active}")
}

/// `text` as a terminal may show it: each control character but tab (an
/// ANSI escape starts with one) written as its Rust escape, `\u{1b}`, so
/// stored text can neither move the cursor nor recolour the screen. The
/// JSON output keeps the text exact.
pub(super) fn terminal_safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return Cow::Borrowed(text);
    }
    let mut safe = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            safe.extend(c.escape_default());
        } else {
            safe.push(c);
        }
    }
    Cow::Owned(safe)
}

/// Runs `offline status`.
pub(super) fn exec(ctx: &mut Context<'_>, args: &StatusArgs) -> anyhow::Result<()> {
    // This host's local override is read first: it stands (and is said)
    // even when the shared state cannot be read.
    let local = super::local::standing(ctx);
    let backend = match ctx.backend() {
        Ok(b) => b,
        Err(e) => {
            if let Some(l) = &local {
                writeln!(ctx.out(), "{}", local_line(l))?;
            }
            return Err(e.into());
        }
    };
    let backend = backend.as_ref();
    // A change nobody lived to record (a lapsed PENDING or schedule, a run
    // killed mid-command), noticed here: recorded once, by whoever notices
    // first. A backend that reads the status in one look says whether
    // there is anything to record; the others look cheaply each time.
    let catch_up =
        || maintenance_core::recorder::catch_up(backend, &Hooks::from_config(ctx.config()));
    let looked = (|| -> maintenance_core::Result<_> {
        Ok(match backend.status_look()? {
            Some(look) => {
                let st = Status {
                    view: look.view,
                    tasks: look.tasks,
                    sessions: look.sessions,
                    writes: look.writes,
                };
                if look.to_record {
                    catch_up();
                    (st, look.window, backend.schedule()?)
                } else {
                    (st, look.window, look.schedule)
                }
            }
            None => {
                let st = offline::status(backend)?;
                let window = backend.window()?;
                catch_up();
                (st, window, backend.schedule()?)
            }
        })
    })();
    let (st, window, schedule) = match looked {
        Ok(r) => r,
        Err(e) => {
            if let Some(l) = &local {
                writeln!(ctx.out(), "{}", local_line(l))?;
            }
            return Err(e.into());
        }
    };
    if args.json {
        let mut doc = status_json(&st, &window, schedule.as_ref(), backend, ctx);
        if let Some(map) = doc.as_object_mut() {
            let local = match &local {
                None => serde_json::Value::Null,
                Some(Ok(o)) => serde_json::to_value(o).unwrap_or_default(),
                Some(Err(e)) => serde_json::json!({ "unreadable": e }),
            };
            map.insert("local_override".into(), local);
        }
        writeln!(ctx.out(), "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        writeln!(
            ctx.out(),
            "{}",
            status_line(st.view.mode, st.active_sessions())
        )?;
        if let Some(s) = &schedule {
            writeln!(ctx.out(), "{}", terminal_safe(&s.line(SystemTime::now())))?;
        }
        if let Some(l) = &local {
            writeln!(ctx.out(), "{}", local_line(l))?;
        }
        if ctx.verbosity() > 0 {
            let mut lines = details(&st, &window, backend, ctx);
            if let Some(s) = &schedule {
                lines.push(schedule_details(s));
            }
            for l in lines {
                writeln!(ctx.out(), "  {l}")?;
            }
        }
    }
    if args.exit_code {
        // What this host serves: OFFLINE while its local override stands.
        let mode = if local.is_some() {
            Mode::Offline
        } else {
            st.view.mode
        };
        let code = exit::of_status(mode);
        if code != exit::SUCCESS {
            return Err(Exit(code).into());
        }
    }
    Ok(())
}

/// The line of this host's local override, under the status line.
fn local_line(local: &Result<maintenance_core::host::LocalOverride, String>) -> String {
    match local {
        Ok(o) => format!(
            "This host: OFFLINE by a local override since {} by {} (pid {}): its nginx and web              layer turn everyone away whatever the shared mode says; `offline off --local`              takes it back",
            o.since,
            terminal_safe(&o.by),
            o.pid
        ),
        Err(e) => format!(
            "This host: OFFLINE by a local override that cannot be read ({}): it stands until              `offline off --local`",
            terminal_safe(e)
        ),
    }
}

/// The `-v` breakdown: since / by / message, the state in use, users and
/// commands, and anything odd.
fn details(
    st: &Status,
    window: &WindowState,
    backend: &dyn Backend,
    ctx: &Context<'_>,
) -> Vec<String> {
    let now = SystemTime::now();
    let r = &st.view.record;
    let mut lines = Vec::new();
    if r.pid != 0 && st.view.lapsed.is_none() {
        lines.push(format!(
            "since: {} ({} ago), by {} (pid {})",
            r.since,
            format_age(r.since.age(now)),
            r.by,
            r.pid
        ));
    }
    if let Some(m) = &r.message {
        lines.push(format!("message: {}", terminal_safe(m)));
    }
    if let Some(ra) = &r.retry_after {
        lines.push(match ra {
            RetryAfter::Seconds(s) => format!("retry after: {s} s"),
            RetryAfter::At(t) => format!("retry after: {t}"),
        });
    }
    if st.view.writes_refused() {
        lines.push(
            "writes: refused (the web layer answers unsafe requests 503; only read-only and \
             allowed commands start)"
                .to_owned(),
        );
    }
    if st.view.mode == Mode::Pending && r.from == Some(Mode::ReadOnly) {
        lines.push(
            "from: READONLY (going on to OFFLINE; if its waiters go, it lapses back to READONLY)"
                .to_owned(),
        );
    }
    let config = ctx.config();
    lines.push(format!(
        "state: {} (from {})",
        backend.location(),
        match config.backend {
            maintenance_core::config::BackendKind::Postgres => &config.postgres.url_source,
            _ => &config.state_dir_source,
        }
    ));
    // Each holder under its own heading.
    let holders = st.holders(now);
    let bullets = |lines: &mut Vec<String>, of: Vec<String>| {
        lines.extend(of.into_iter().map(|l| format!("  - {l}")));
    };
    lines.push(format!("users: {} live web session(s)", st.sessions.count));
    bullets(&mut lines, holders.sessions.into_iter().collect());
    lines.push(format!("commands: {} live", st.tasks.len()));
    bullets(&mut lines, holders.tasks);
    if !st.writes.is_empty() {
        lines.push(format!(
            "writes: {} web layer(s) with unsafe requests in flight",
            st.writes.len()
        ));
        bullets(&mut lines, holders.writes);
    }
    if let Some(lapse) = &st.view.lapsed {
        lines.push(format!("note: {}", lapse.reason));
    }
    if let Some(stray) = &st.view.stray_marker {
        lines.push(format!("warning: {stray}"));
    }
    match window {
        WindowState::Running(run) => lines.push(format!(
            "window: `offline run` (pid {}, {}) is running `{}` since {}",
            run.pid,
            run.by,
            terminal_safe(&run.argv.join(" ")),
            run.started_at
        )),
        WindowState::Waiting(run) => lines.push(format!(
            "window: `offline run` (pid {}, {}) is waiting to go offline to run `{}`",
            run.pid,
            run.by,
            terminal_safe(&run.argv.join(" "))
        )),
        WindowState::Abandoned(run) if matches!(st.view.mode, Mode::Offline | Mode::ReadOnly) => {
            lines.push(format!(
                "window: left {} by `offline run -- {}` (pid {}, {}), which was killed while its \
             command ran; check the command's work, then `offline off`",
                st.view.mode,
                terminal_safe(&run.argv.join(" ")),
                run.pid,
                run.by
            ))
        }
        _ => {}
    }
    lines
}

/// The `-v` line of a scheduled window: who holds it, since when, from
/// when users are told, what it runs.
fn schedule_details(s: &ScheduleRecord) -> String {
    format!(
        "schedule: held by pid {} ({}), set at {}; users are told from {}{}; `offline off` \
         cancels it",
        s.pid,
        s.by,
        s.set_at,
        s.notice_from,
        s.argv
            .as_ref()
            .map(|a| format!("; then runs `{}`", terminal_safe(&a.join(" "))))
            .unwrap_or_default()
    )
}

/// The `status --json` object, version 1.
fn status_json(
    st: &Status,
    window: &WindowState,
    schedule: Option<&ScheduleRecord>,
    backend: &dyn Backend,
    ctx: &Context<'_>,
) -> serde_json::Value {
    let now = SystemTime::now();
    let schedule = schedule.map(|s| {
        let mut doc = serde_json::to_value(s).unwrap_or_default();
        if let Some(map) = doc.as_object_mut() {
            map.insert("in_notice".into(), s.in_notice(now).into());
            map.insert("seconds_left".into(), s.left(now).as_secs().into());
        }
        doc
    });
    let r = &st.view.record;
    let window = match window {
        WindowState::Free => serde_json::Value::Null,
        WindowState::Running(run) => serde_json::json!({ "state": "running", "run": run }),
        WindowState::Waiting(run) => serde_json::json!({ "state": "waiting", "run": run }),
        WindowState::Abandoned(run) => serde_json::json!({ "state": "abandoned", "run": run }),
    };
    serde_json::json!({
        "version": 1,
        "mode": st.view.mode,
        "writes_refused": st.view.writes_refused(),
        "from": r.from.filter(|_| st.view.mode.is_draining()),
        "since": (r.pid != 0).then_some(r.since),
        "by": (!r.by.is_empty()).then_some(&r.by),
        "pid": (r.pid != 0).then_some(r.pid),
        "message": r.message,
        "retry_after": r.retry_after,
        "active_sessions": st.active_sessions(),
        "sessions": {
            "count": st.sessions.count,
            "last_expires_at": st.sessions.last_expires_at,
        },
        "tasks": st.tasks,
        "writes_in_flight": st.writes,
        "lapsed": st.view.lapsed.as_ref().map(|l| &l.reason),
        "stray_marker": st.view.stray_marker,
        "window": window,
        "schedule": schedule,
        "state": backend.location(),
        "state_dir": ctx.config().state_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::terminal_safe;

    #[test]
    fn control_characters_but_tab_are_escaped_for_a_terminal() {
        assert_eq!(terminal_safe("Back at 6\tsharp"), "Back at 6\tsharp");
        assert_eq!(
            terminal_safe("\x1b[2Jgone\r\nnext\u{9b}31m\x07"),
            "\\u{1b}[2Jgone\\r\\nnext\\u{9b}31m\\u{7}"
        );
    }
}
