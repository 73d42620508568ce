//! `manage offline`: takes the site offline and back, shows its status and
//! what is live, and runs a command inside a maintenance window. This file
//! parses and presents; the state machine is maintenance-core's
//! `offline` module.

use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

use maintenance_core::backend::{Backend, ModeChange, WindowState};
use maintenance_core::clock::{Timestamp, format_age};
use maintenance_core::command::{CallOptions, Context, Exit, ManageCommand, register};
use maintenance_core::mode::{Mode, RetryAfter};
use maintenance_core::policy::{Policy, Tracking};
use maintenance_core::task::{ENV_TASK, JoinToken, Membership};
use maintenance_core::transition::{
    self as offline, Activation, Live, Outcome, Progress, RunOutcome, Status,
};
use maintenance_core::{Refusal, anyhow, clap, exit};

/// Take the site offline and back; show what is live.
#[derive(Debug, clap::Args)]
#[command(
    subcommand_required = true,
    after_help = "Exit codes: 0 done; 75 refused or cancelled; 124 timed out (the site went back \
                  ONLINE); 130 interrupted. `status --exit-code`: 0 ONLINE, 3 PENDING, 4 OFFLINE."
)]
pub struct Offline {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, clap::Subcommand)]
enum Verb {
    /// Print the status: `Status: <MODE> - Active sessions: <N>`.
    #[command(visible_alias = "check")]
    Status(StatusArgs),
    /// Go offline once nobody is in the middle of something.
    #[command(visible_alias = "activate")]
    On(OnArgs),
    /// Go back online, from any state.
    #[command(visible_alias = "deactivate")]
    Off(OffArgs),
    /// List live commands and web sessions.
    List(ListArgs),
    /// Go offline, run a command inside the window, restore the mode.
    Run(RunArgs),
    /// Check the state directory as this user sees it; say what to fix.
    Doctor,
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// One JSON object (documented in the README), for scripts.
    #[arg(long)]
    json: bool,
    /// Exit 0 when ONLINE, 3 when PENDING, 4 when OFFLINE.
    #[arg(long)]
    exit_code: bool,
}

#[derive(Debug, clap::Args)]
struct WaitArgs {
    /// Give up after this many seconds; the site goes back ONLINE (124).
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = maintenance_core::config::parse_seconds)]
    timeout: Duration,
    /// Go OFFLINE at once, whatever is live.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, clap::Args)]
struct OnArgs {
    #[command(flatten)]
    wait: WaitArgs,
    /// After this many seconds in PENDING, web sessions stop holding it off
    /// (running commands still do).
    #[arg(long, value_name = "SECS", value_parser = maintenance_core::config::parse_seconds)]
    grace: Option<Duration>,
    /// A message for users, shown by the web layer and `status -v`.
    #[arg(long, value_name = "TEXT")]
    message: Option<String>,
    /// When users should come back: seconds, or an RFC 3339 time with its
    /// offset (2026-11-25T06:00:00Z, 2026-11-25T07:00:00+01:00).
    #[arg(long, value_name = "SECS|TIME", value_parser = retry_after)]
    retry_after: Option<RetryAfter>,
    /// A secret that lets its holder browse during maintenance: visiting
    /// the bypass path with it sets a cookie. Without a value, one is
    /// generated and printed. Only its hash is stored.
    #[arg(long, value_name = "S", num_args = 0..=1, default_missing_value = "", value_parser = bypass_secret)]
    secret: Option<String>,
}

#[derive(Debug, clap::Args)]
struct OffArgs {
    /// Go ONLINE even while an `offline run` is running its command.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    /// As JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    wait: WaitArgs,
    /// The command to run inside the window, and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// `--retry-after`: seconds, or an RFC 3339 time with any offset (stored,
/// like every time, in UTC).
fn retry_after(text: &str) -> Result<RetryAfter, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(RetryAfter::Seconds(secs));
    }
    Timestamp::parse_rfc3339(text)
        .map(RetryAfter::At)
        .map_err(|e| format!("neither a number of seconds nor a time: {e}"))
}

/// `--secret`: empty (generate one), or a secret that fits in one segment
/// of the bypass path, so the printed link works.
fn bypass_secret(text: &str) -> Result<String, String> {
    match text
        .chars()
        .find(|&c| c == '/' || c == '\\' || c.is_control())
    {
        Some(c) => Err(format!(
            "{c:?} cannot be part of a bypass secret (it is one segment of a URL path); \
             choose one without `/`, `\\` or control characters, or give none to have one generated"
        )),
        None => Ok(text.to_owned()),
    }
}

impl ManageCommand for Offline {
    const NAME: &'static str = "offline";
    const POLICY: Policy = Policy::DEFAULT.tracking(Tracking::Untracked);

    fn run(self, ctx: &mut Context<'_>) -> anyhow::Result<()> {
        if let Verb::Doctor = self.verb {
            // Before opening the backend, which refuses an unsafe state.
            return doctor(ctx);
        }
        let backend = ctx.backend()?;
        match self.verb {
            Verb::Status(a) => status(ctx, backend.as_ref(), &a),
            Verb::On(a) => on(ctx, backend.as_ref(), a),
            Verb::Off(a) => off(ctx, backend.as_ref(), &a),
            Verb::List(a) => list(ctx, backend.as_ref(), &a),
            Verb::Run(a) => run_window(ctx, backend.as_ref(), a),
            Verb::Doctor => doctor(ctx),
        }
    }
}
register!(Offline);

/// `offline doctor`: one line a finding; exit 0 when healthy, 1 otherwise.
fn doctor(ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let config = ctx.config().clone();
    let findings = maintenance_core::backend::file::doctor(&config);
    let problems = findings.iter().filter(|f| f.problem).count();
    let out = ctx.out();
    for f in &findings {
        writeln!(
            out,
            "{}: {}",
            if f.problem { "problem" } else { "note" },
            f.text
        )?;
    }
    if problems == 0 {
        writeln!(out, "healthy: {}", config.state_dir.display())?;
        Ok(())
    } else {
        writeln!(
            out,
            "{problems} problem{} in {}",
            if problems == 1 { "" } else { "s" },
            config.state_dir.display()
        )?;
        Err(Exit(exit::FAILURE).into())
    }
}

/// The seed's status line.
fn status_line(mode: Mode, active: usize) -> String {
    format!("Status: {mode} - Active sessions: {active}")
}

fn status(ctx: &mut Context<'_>, backend: &dyn Backend, args: &StatusArgs) -> anyhow::Result<()> {
    let st = offline::status(backend)?;
    let window = backend.window()?;
    if args.json {
        let doc = status_json(&st, &window, backend, ctx);
        writeln!(ctx.out(), "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        writeln!(
            ctx.out(),
            "{}",
            status_line(st.view.mode, st.active_sessions())
        )?;
        if ctx.verbosity() > 0 {
            let lines = details(&st, &window, backend, ctx);
            for l in lines {
                writeln!(ctx.out(), "  {l}")?;
            }
        }
    }
    if args.exit_code {
        let code = match st.view.mode {
            Mode::Online => exit::SUCCESS,
            Mode::Pending => exit::STATUS_PENDING,
            Mode::Offline => exit::STATUS_OFFLINE,
        };
        if code != exit::SUCCESS {
            return Err(Exit(code).into());
        }
    }
    Ok(())
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
        lines.push(format!("message: {m}"));
    }
    if let Some(ra) = &r.retry_after {
        lines.push(match ra {
            RetryAfter::Seconds(s) => format!("retry after: {s} s"),
            RetryAfter::At(t) => format!("retry after: {t}"),
        });
    }
    lines.push(format!(
        "state: {} (from {})",
        backend.location(),
        ctx.config().state_dir_source
    ));
    lines.push(format!(
        "users: {} live web session(s)",
        st.live.sessions.len()
    ));
    lines.push(format!("commands: {} live", st.live.tasks.len()));
    for l in st.live.describe(now) {
        lines.push(format!("  - {l}"));
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
            run.argv.join(" "),
            run.started_at
        )),
        WindowState::Waiting(run) => lines.push(format!(
            "window: `offline run` (pid {}, {}) is waiting to go offline to run `{}`",
            run.pid,
            run.by,
            run.argv.join(" ")
        )),
        WindowState::Abandoned(run) if st.view.mode == Mode::Offline => lines.push(format!(
            "window: left OFFLINE by `offline run -- {}` (pid {}, {}), which was killed while its \
             command ran; check the command's work, then `offline off`",
            run.argv.join(" "),
            run.pid,
            run.by
        )),
        _ => {}
    }
    lines
}

/// The `status --json` object, version 1.
fn status_json(
    st: &Status,
    window: &WindowState,
    backend: &dyn Backend,
    ctx: &Context<'_>,
) -> serde_json::Value {
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
        "since": (r.pid != 0).then_some(r.since),
        "by": (!r.by.is_empty()).then_some(&r.by),
        "pid": (r.pid != 0).then_some(r.pid),
        "message": r.message,
        "retry_after": r.retry_after,
        "active_sessions": st.active_sessions(),
        "sessions": {
            "count": st.live.sessions.len(),
            "last_expires_at": st.live.last_session_expiry(),
        },
        "tasks": st.live.tasks,
        "lapsed": st.view.lapsed.as_ref().map(|l| &l.reason),
        "stray_marker": st.view.stray_marker,
        "window": window,
        "state": backend.location(),
        "state_dir": ctx.config().state_dir,
    })
}

/// Refuses a wait for OFFLINE from inside a running task: it would wait
/// for itself.
fn refuse_inside_task(ctx: &Context<'_>, backend: &dyn Backend) -> anyhow::Result<()> {
    if let Some(task) = ctx.task() {
        return Err(maintenance_core::Error::Refused(Refusal::InsideTask {
            command: task.name.clone(),
            token: task.id.clone(),
        })
        .into());
    }
    // Only a process that proves it belongs to the task would wait for
    // itself; a stranger that merely names a task is not inside it.
    if let Some(token) = std::env::var_os(ENV_TASK)
        && let Ok(Membership::Member(task)) =
            backend.membership(&JoinToken::parse(&token.to_string_lossy()))
    {
        return Err(maintenance_core::Error::Refused(Refusal::InsideTask {
            command: task.name,
            token: task.id,
        })
        .into());
    }
    Ok(())
}

/// Draws the wait: the seed's header once, then `<N> pending sessions.
/// <*|-> (<S> sec)` — redrawn in place on a terminal, as plain lines (at
/// most one a second, only on a change) otherwise.
struct Meter {
    terminal: bool,
    session_timeout: Duration,
    header: bool,
    drawn: Option<(u64, usize)>,
    plain: Option<(Instant, usize)>,
    star: bool,
    asked: usize,
}

impl Meter {
    fn new(ctx: &Context<'_>, session_timeout: Duration) -> Self {
        Meter {
            terminal: ctx.is_terminal(),
            session_timeout,
            header: false,
            drawn: None,
            plain: None,
            star: false,
            asked: 0,
        }
    }

    fn update(&mut self, out: &mut dyn Write, p: &Progress<'_>) {
        let n = p.holding.active();
        if n == 0 && p.asked_to_stop.is_empty() {
            // Nothing holds it off: no header, and no "0 pending" line.
            return;
        }
        if !self.header {
            self.header = true;
            let _ = writeln!(
                out,
                "Active sessions detected. Waiting for logout. (Session timeout set to {} secs)",
                self.session_timeout.as_secs()
            );
        }
        // Drain `stop` commands were asked to stop when PENDING began; say so
        // once for each new one, above the progress line.
        let asked = p.asked_to_stop.len();
        if asked > self.asked {
            self.finish(out);
            let _ = writeln!(
                out,
                "Asked {asked} command{} to stop; waiting for {}.",
                if asked == 1 { "" } else { "s" },
                if asked == 1 { "it" } else { "them" }
            );
            self.asked = asked;
        }
        if n == 0 {
            return;
        }
        let secs = p.waited.as_secs();
        if self.terminal {
            if self.drawn == Some((secs, n)) {
                return;
            }
            if self.drawn.is_none_or(|(s, _)| s != secs) {
                self.star = !self.star;
            }
            self.drawn = Some((secs, n));
            let _ = write!(
                out,
                "\r{n} pending sessions. {} ({secs} sec)\x1b[K",
                self.mark()
            );
        } else {
            let due = self
                .plain
                .is_none_or(|(at, last)| last != n && at.elapsed() >= Duration::from_secs(1));
            if !due {
                return;
            }
            self.star = !self.star;
            self.plain = Some((Instant::now(), n));
            let _ = writeln!(out, "{n} pending sessions. {} ({secs} sec)", self.mark());
        }
        let _ = out.flush();
    }

    fn mark(&self) -> char {
        if self.star { '*' } else { '-' }
    }

    /// Ends a line redrawn in place.
    fn finish(&mut self, out: &mut dyn Write) {
        if self.terminal && self.drawn.take().is_some() {
            let _ = writeln!(out);
        }
    }
}

fn activation(
    ctx: &Context<'_>,
    wait: &WaitArgs,
    change: ModeChange,
    grace: Option<Duration>,
) -> Activation {
    Activation {
        change,
        timeout: wait.timeout,
        grace,
        // Twice the layers' refresh interval: one for the age of a layer's
        // snapshot, one of margin for the write of the session it let in.
        settle: ctx.config().refresh_interval * 2,
    }
}

/// Reports an activation that did not end OFFLINE and returns its code.
fn not_offline(ctx: &mut Context<'_>, outcome: &Outcome, timeout: Duration) -> anyhow::Result<u8> {
    let now = SystemTime::now();
    let err = ctx.err();
    let (live, record, code, what) = match outcome {
        Outcome::TimedOut { live, record } => (
            live,
            record,
            exit::TIMED_OUT,
            format!("timed out after {} s; still live:", timeout.as_secs_f64()),
        ),
        Outcome::Interrupted { live, record } => (
            live,
            record,
            exit::INTERRUPTED,
            "interrupted; still live:".into(),
        ),
        Outcome::Cancelled { by, .. } => {
            writeln!(err, "error: cancelled by {by}: the site is ONLINE")?;
            return Ok(exit::REFUSED);
        }
        Outcome::Offline { .. } => return Ok(exit::SUCCESS),
    };
    writeln!(err, "error: {what}")?;
    for l in live.describe(now) {
        writeln!(err, "  - {l}")?;
    }
    if record.mode == Mode::Pending {
        writeln!(
            err,
            "The site stays PENDING: another `offline on` is still waiting."
        )?;
    } else {
        writeln!(err, "The site is back ONLINE.")?;
    }
    Ok(code)
}

fn on(ctx: &mut Context<'_>, backend: &dyn Backend, args: OnArgs) -> anyhow::Result<()> {
    refuse_inside_task(ctx, backend)?;
    let secret = args.secret.map(|s| {
        if s.is_empty() {
            maintenance_core::mode::new_secret()
        } else {
            s
        }
    });
    let change = ModeChange::by_this_process()
        .message(args.message)
        .retry_after(args.retry_after)
        .bypass(secret.as_deref().map(maintenance_core::mode::hash_secret));
    if let Some(secret) = &secret {
        let url = ctx.config().bypass_prefix.join(secret);
        writeln!(
            ctx.out(),
            "Bypass: visit {url} once to browse the site during maintenance"
        )?;
    }
    // The web layers see a new secret within one refresh interval: wait
    // that long where nothing else did, so the printed link works at once.
    let settle_secret = |ctx: &Context<'_>| {
        if secret.is_some() {
            std::thread::sleep(ctx.config().refresh_interval);
        }
    };
    if args.wait.force {
        let (record, live) = offline::force(backend, &change)?;
        settle_secret(ctx);
        writeln!(ctx.out(), "{}", status_line(record.mode, live.active()))?;
        if ctx.verbosity() > 0 {
            for l in live.describe(SystemTime::now()) {
                writeln!(ctx.out(), "  - {l}")?;
            }
        }
        return Ok(());
    }
    let a = activation(ctx, &args.wait, change, args.grace);
    let outcome = wait_offline(ctx, backend, &a)?;
    if let Outcome::Offline { already: true, .. } = outcome {
        settle_secret(ctx);
    }
    finish_wait(ctx, &outcome, a.timeout)
}

/// Runs the activation, drawing its progress.
fn wait_offline(
    ctx: &mut Context<'_>,
    backend: &dyn Backend,
    a: &Activation,
) -> anyhow::Result<Outcome> {
    let mut meter = Meter::new(ctx, backend.session_timeout());
    let stop = ctx.stop_token().clone();
    let outcome = {
        let out = ctx.out();
        let result = offline::activate(backend, a, &|| stop.requested(), &mut |p| {
            meter.update(out, &p)
        });
        meter.finish(out);
        result?
    };
    Ok(outcome)
}

fn finish_wait(ctx: &mut Context<'_>, outcome: &Outcome, timeout: Duration) -> anyhow::Result<()> {
    if let Outcome::Offline { record, live, .. } = outcome {
        writeln!(ctx.out(), "{}", status_line(record.mode, live.active()))?;
        return Ok(());
    }
    let code = not_offline(ctx, outcome, timeout)?;
    Err(Exit(code).into())
}

fn off(ctx: &mut Context<'_>, backend: &dyn Backend, args: &OffArgs) -> anyhow::Result<()> {
    let record = offline::deactivate(backend, &ModeChange::by_this_process(), args.force)?;
    let live = Live::read(backend)?;
    writeln!(ctx.out(), "{}", status_line(record.mode, live.active()))?;
    Ok(())
}

fn list(ctx: &mut Context<'_>, backend: &dyn Backend, args: &ListArgs) -> anyhow::Result<()> {
    let live = Live::read(backend)?;
    let now = SystemTime::now();
    if args.json {
        let sessions: Vec<serde_json::Value> = live
            .sessions
            .iter()
            .map(|s| {
                serde_json::json!({
                    "session": s.key.short(),
                    "last_seen": s.last_seen,
                    "expires_at": s.expires_at,
                })
            })
            .collect();
        let doc = serde_json::json!({ "version": 1, "tasks": live.tasks, "sessions": sessions });
        writeln!(ctx.out(), "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
    let out = ctx.out();
    if live.tasks.is_empty() {
        writeln!(out, "No live commands.")?;
    } else {
        let rows: Vec<[String; 5]> = live
            .tasks
            .iter()
            .map(|t| {
                [
                    t.name.clone(),
                    t.pids()
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                    t.user_at_host(),
                    format_age(t.started_at.age(now)),
                    format!(
                        "{}{}{}",
                        t.policy,
                        t.joined
                            .as_deref()
                            .map(|id| format!(" (joined task {id})"))
                            .unwrap_or_default(),
                        if t.holds_off_offline() {
                            ""
                        } else {
                            " (inside the window)"
                        }
                    ),
                ]
            })
            .collect();
        table(
            out,
            ["COMMAND", "PID", "USER@HOST", "RUNNING FOR", "POLICY"],
            &rows,
        )?;
    }
    writeln!(out)?;
    if live.sessions.is_empty() {
        writeln!(out, "No live sessions.")?;
    } else {
        let rows: Vec<[String; 3]> = live
            .sessions
            .iter()
            .map(|s| {
                let expires = s
                    .expires_at
                    .system_time()
                    .duration_since(now)
                    .unwrap_or_default();
                [
                    s.key.short().to_owned(),
                    format_age(s.last_seen.age(now)),
                    format_age(expires),
                ]
            })
            .collect();
        table(out, ["SESSION", "IDLE FOR", "EXPIRES IN"], &rows)?;
    }
    Ok(())
}

/// Writes an aligned table.
fn table<const N: usize>(
    out: &mut dyn Write,
    head: [&str; N],
    rows: &[[String; N]],
) -> anyhow::Result<()> {
    let mut widths = head.map(str::len);
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == N {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:w$}  ", w = widths[i]));
            }
        }
        s
    };
    writeln!(out, "{}", line(head.to_vec()))?;
    for r in rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

fn run_window(ctx: &mut Context<'_>, backend: &dyn Backend, args: RunArgs) -> anyhow::Result<()> {
    refuse_inside_task(ctx, backend)?;
    // A typo in a deploy script must not take the site offline first.
    if let Err(problem) = ctx.check_call(&args.command) {
        writeln!(
            ctx.err(),
            "error: {problem}\nThe site was not taken offline."
        )?;
        return Err(Exit(exit::USAGE).into());
    }
    let a = activation(ctx, &args.wait, ModeChange::by_this_process(), None);
    let stop = ctx.stop_token().clone();
    let meter = std::cell::RefCell::new(Meter::new(ctx, backend.session_timeout()));
    let argv = args.command.clone();
    let outcome = {
        // The wait draws on stdout; the command then writes through the
        // same context.
        let ctx_cell = std::cell::RefCell::new(&mut *ctx);
        offline::run_in_window(
            backend,
            &a,
            args.wait.force,
            &argv,
            &|| stop.requested(),
            &mut |p| meter.borrow_mut().update(ctx_cell.borrow_mut().out(), &p),
            &mut || {
                let mut c = ctx_cell.borrow_mut();
                meter.borrow_mut().finish(c.out());
                c.call(&argv, CallOptions { in_window: true })
            },
        )?
    };
    match outcome {
        RunOutcome::Ran { code, .. } => {
            if code == exit::SUCCESS {
                Ok(())
            } else {
                Err(Exit(code).into())
            }
        }
        RunOutcome::NotRun(outcome) => {
            meter.borrow_mut().finish(ctx.out());
            let code = not_offline(ctx, &outcome, a.timeout)?;
            Err(Exit(code).into())
        }
    }
}
