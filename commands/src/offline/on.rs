//! `manage offline on|activate`: goes PENDING, then OFFLINE once nobody is
//! in the middle of something (maintenance-core's `offline::activate`), or
//! at once with `--force`; with `--read-only`, READONLY_PENDING, then
//! READONLY once nothing that may write is live (`activate_read_only`).
//! What happens on a timeout is here: the library leaves the drain (the
//! site goes back where it came from unless another `on` still waits), and
//! [`not_offline`] names what held the site and exits 124. With `--at`
//! (and `--read-only` or not), it first waits in the foreground for that
//! time, holding the schedule ([`wait_for_time`]); `offline on` without it
//! ends a schedule. `offline run` waits with the same flags and reports
//! (run.rs).

use std::time::{Duration, SystemTime};

use maintenance_core::backend::{Backend, ModeChange, ScheduleLease, ScheduleRecord};
use maintenance_core::clock::Timestamp;
use maintenance_core::command::{Context, Exit};
use maintenance_core::hooks::Hooks;
use maintenance_core::mode::{Mode, RetryAfter};
use maintenance_core::schedule::{self, local_time};
use maintenance_core::task::{ENV_TASK, JoinToken, Membership};
use maintenance_core::transition::{self as offline, Activation, Notice, Outcome, Target};
use maintenance_core::{Refusal, anyhow, clap, exit};

use super::progress::Meter;
use super::status::{status_line, terminal_safe};

// The flags of a wait for OFFLINE, shared by `offline on` and `offline run`.
// (A plain comment: under the deferred verbs a doc comment on a
// struct of flags would replace the verb's own `--help` title.)
#[derive(Debug, clap::Args)]
pub(super) struct WaitArgs {
    // Negative numbers reach the value parsers, which say what is wrong
    // with them, instead of clap's "unexpected argument '-1'".
    /// Give up after this many seconds: the site goes back ONLINE (exit
    /// 124). Without it, wait until nothing is live, however long.
    #[arg(long, value_name = "SECS", allow_negative_numbers = true, value_parser = maintenance_core::config::parse_seconds)]
    pub(super) timeout: Option<Duration>,
    /// Go OFFLINE at once, whatever is live; go on (return, or run the
    /// command) after twice refresh_interval, once every web layer has
    /// seen it.
    #[arg(long)]
    pub(super) force: bool,
    /// Go READONLY instead of OFFLINE: the site stays readable, unsafe web
    /// requests get 503 at once, commands that may write are refused and
    /// drain; READONLY once nothing that may write is live (web sessions
    /// do not hold it off). From READONLY, `offline on` continues to
    /// OFFLINE.
    #[arg(long)]
    pub(super) read_only: bool,
}

impl WaitArgs {
    /// Where the wait takes the site.
    pub(super) fn target(&self) -> Target {
        if self.read_only {
            Target::ReadOnly
        } else {
            Target::Offline
        }
    }
}

// The flags of a scheduled window, shared by `offline on` and `offline
// run`.
// (A plain comment: under the deferred verbs a doc comment on a
// struct of flags would replace the verb's own `--help` title.)
#[derive(Debug, clap::Args)]
pub(super) struct ScheduleArgs {
    /// Start going offline (with --read-only, read-only) at TIME instead of
    /// now: `02:00` (the next 02:00, local time), `+30m` (from now), or an
    /// RFC 3339 time with its offset (2026-11-25T02:00:00+01:00). Waits in
    /// the foreground until then, as `shutdown +m` does: the schedule lasts
    /// as long as this process, and `offline off` cancels it. --timeout
    /// counts from TIME.
    #[arg(long, value_name = "TIME", value_parser = schedule::parse_at, conflicts_with = "force")]
    pub(super) at: Option<Timestamp>,
    /// Tell users this long before TIME (the web layer carries the
    /// schedule from then on): seconds or units (`15m`). Without it, all of
    /// the wait.
    #[arg(long, value_name = "DURATION", requires = "at", allow_negative_numbers = true, value_parser = maintenance_core::config::parse_seconds)]
    pub(super) notice: Option<Duration>,
}

// The flags of `offline on`. (A plain comment: under the deferred verbs a
// doc comment here would replace the verb's own `--help` title.)
#[derive(Debug, clap::Args)]
pub(super) struct OnArgs {
    #[command(flatten)]
    wait: WaitArgs,
    #[command(flatten)]
    schedule: ScheduleArgs,
    /// After this many seconds in PENDING, web sessions stop holding it off
    /// (running commands still do).
    #[arg(long, value_name = "SECS", allow_negative_numbers = true, value_parser = maintenance_core::config::parse_seconds)]
    grace: Option<Duration>,
    /// A message for users, shown by the web layer and `status -v`: one
    /// line, no control characters (a tab is fine).
    #[arg(long, value_name = "TEXT", value_parser = message)]
    message: Option<String>,
    /// When users should come back: seconds, or an RFC 3339 time with its
    /// offset (2026-11-25T06:00:00Z, 2026-11-25T07:00:00+01:00).
    #[arg(long, value_name = "SECS|TIME", allow_negative_numbers = true, value_parser = retry_after)]
    retry_after: Option<RetryAfter>,
    /// A secret that lets its holder browse during maintenance: visiting
    /// the bypass path with it sets a cookie. Without a value, one is
    /// generated and printed. Only its hash is stored.
    #[arg(long, value_name = "S", num_args = 0..=1, default_missing_value = "", value_parser = bypass_secret)]
    secret: Option<String>,
    /// This host only, without the shared state (needs --force): for when
    /// the state database itself is what is broken. Writes this host's
    /// OFFLINE marker and makes its web layer answer OFFLINE;
    /// `offline off --local` takes it back.
    #[arg(long, conflicts_with_all = ["at", "read_only", "timeout", "grace", "secret", "retry_after"])]
    local: bool,
}

/// `--retry-after`: seconds, or an RFC 3339 time with any offset (stored,
/// like every time, in UTC) that is still to come.
fn retry_after(text: &str) -> Result<RetryAfter, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(RetryAfter::Seconds(secs));
    }
    if text.parse::<i64>().is_ok_and(|n| n < 0) {
        return Err(format!(
            "{text:?} is negative: give seconds from now (600) or a time still to come"
        ));
    }
    let at = Timestamp::parse_rfc3339(text)
        .map_err(|e| format!("neither a number of seconds nor a time: {e}"))?;
    let now = Timestamp::at(SystemTime::now());
    if at <= now {
        return Err(format!(
            "{text:?} is not in the future (it is {at}; now is {now}): give a later time, or \
             seconds from now (600)"
        ));
    }
    Ok(RetryAfter::At(at))
}

/// `--message`: any text without control characters (a tab is fine).
/// Users see it in a page, operators in `status -v`, where a newline or an
/// ANSI escape sequence (which starts with one) would do harm.
fn message(text: &str) -> Result<String, String> {
    match text.chars().find(|&c| c.is_control() && c != '\t') {
        Some(c) => Err(format!(
            "{c:?} is a control character, which a message for users cannot hold (a newline, \
             or the start of a terminal escape sequence); write it on one line without control \
             characters (a tab is fine)"
        )),
        None => Ok(text.to_owned()),
    }
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

/// Refuses a wait for OFFLINE from inside a running task: it would wait
/// for itself.
pub(super) fn refuse_inside_task(ctx: &Context<'_>, backend: &dyn Backend) -> anyhow::Result<()> {
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

/// The activation a wait's flags ask for.
pub(super) fn activation(
    ctx: &Context<'_>,
    wait: &WaitArgs,
    change: ModeChange,
    grace: Option<Duration>,
) -> Activation {
    Activation {
        change,
        timeout: wait.timeout.unwrap_or(Duration::MAX),
        grace,
        // Twice the layers' refresh interval: one for the age of a layer's
        // snapshot, one of margin for the write of the session it let in.
        settle: ctx.config().refresh_interval * 2,
    }
}

/// Reports an activation that did not end OFFLINE and returns its code.
pub(super) fn not_offline(
    ctx: &mut Context<'_>,
    outcome: &Outcome,
    timeout: Duration,
) -> anyhow::Result<u8> {
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
        Outcome::Cancelled { by, record } => {
            writeln!(err, "error: cancelled by {by}: the site is {}", record.mode)?;
            return Ok(exit::REFUSED);
        }
        Outcome::Offline { .. } | Outcome::ReadOnly { .. } => return Ok(exit::SUCCESS),
    };
    writeln!(err, "error: {what}")?;
    for l in live.describe(now) {
        writeln!(err, "  - {l}")?;
    }
    if record.mode.is_draining() {
        writeln!(
            err,
            "The site stays {}: another `offline on` is still waiting.",
            record.mode
        )?;
    } else {
        writeln!(err, "The site is back {}.", record.mode)?;
    }
    Ok(code)
}

/// Runs `offline on`.
#[inline(never)]
pub(super) fn exec(ctx: &mut Context<'_>, args: OnArgs) -> anyhow::Result<()> {
    if args.local {
        return super::local::on(ctx, args.wait.force, args.message);
    }
    let backend = ctx.backend()?;
    let backend: &dyn Backend = backend.as_ref();
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
        .bypass(secret.as_deref().map(maintenance_core::mode::hash_secret))
        .hooks(Hooks::from_config(ctx.config()));
    if let Some(secret) = &secret {
        let url = ctx.config().bypass_prefix.join(secret);
        writeln!(
            ctx.out(),
            "Bypass: visit {url} once to browse the site during maintenance"
        )?;
    }
    let a = activation(ctx, &args.wait, change, args.grace);
    let target = args.wait.target();
    let mut scheduled = match args.schedule.at {
        Some(at) => {
            let mut lease =
                schedule_window(ctx, backend, &args.schedule, at, &a.change, target, None)?;
            wait_for_time(ctx, backend, &a.change, lease.as_mut())?;
            Some(lease)
        }
        None => {
            if let Some(ended) = offline::supersede_schedule_toward(backend, &a.change, target)? {
                let s = ended.schedule;
                writeln!(
                    ctx.out(),
                    "Ended the {} window scheduled at {} by {} (pid {}): going {} now.",
                    window_kind(&s),
                    local_time(s.at),
                    s.by,
                    s.pid,
                    match target {
                        Target::Offline => "offline",
                        Target::ReadOnly => "read-only",
                    }
                )?;
            }
            None
        }
    };
    if args.wait.force {
        let was = backend.mode()?.mode;
        let (record, live) = match target {
            Target::Offline => offline::force(backend, &a.change)?,
            Target::ReadOnly => offline::force_read_only(backend, &a.change)?,
        };
        // Layers that still let users in (or writes through) see it first.
        let closed = match target {
            Target::Offline => was != Mode::Offline,
            Target::ReadOnly => matches!(was, Mode::Online | Mode::Pending),
        };
        let_layers_see(ctx, &a, closed, secret.is_some());
        stricter_already(ctx, target, &record)?;
        writeln!(ctx.out(), "{}", status_line(record.mode, live.active()))?;
        if ctx.verbosity() > 0 {
            for l in live.describe(SystemTime::now()) {
                writeln!(ctx.out(), "  - {l}")?;
            }
        }
        return Ok(());
    }
    let lease = scheduled
        .as_mut()
        .map(|l| &mut **l as &mut dyn ScheduleLease);
    let outcome = wait_offline(ctx, backend, &a, target, args.wait.timeout, lease)?;
    if let Outcome::Offline { already, live, .. } = &outcome {
        // Sessions let go by --grace still pass on a PENDING snapshot; a
        // new secret is seen within PENDING's settle time, unless the site
        // was OFFLINE already.
        let closed = !already && !live.sessions.is_empty() && target == Target::Offline;
        let_layers_see(ctx, &a, closed, secret.is_some() && *already);
    }
    if let Outcome::ReadOnly { already, .. } = &outcome {
        // Every layer saw READONLY_PENDING, which refuses what READONLY
        // refuses; a new secret only needs one interval.
        let_layers_see(ctx, &a, false, secret.is_some() && *already);
    }
    if let Outcome::Offline { record, .. } = &outcome {
        stricter_already(ctx, target, record)?;
    }
    finish_wait(ctx, &outcome, a.timeout)
}

/// Says, on stderr, that `--read-only` found the site OFFLINE, which stops
/// writes too, and left it so.
fn stricter_already(
    ctx: &mut Context<'_>,
    target: Target,
    record: &maintenance_core::ModeRecord,
) -> anyhow::Result<()> {
    if target == Target::ReadOnly && record.mode == Mode::Offline {
        writeln!(
            ctx.err(),
            "note: the site is OFFLINE, which stops writes too: it stays OFFLINE (`offline off` \
             reopens it)"
        )?;
    }
    Ok(())
}

/// Waits, before `on` returns, until every web layer has seen what it
/// wrote: a layer serves on a snapshot up to one refresh interval old. When
/// OFFLINE `closed` a mode that still let users in (ONLINE before
/// `--force`, or sessions let go by `--grace`), it waits the settle time,
/// so a deploy script's next step finds every layer turning users away;
/// for a new bypass `secret` alone, one interval, so the printed link
/// works. A Ctrl-C cuts the wait short (the mode is written already).
fn let_layers_see(ctx: &Context<'_>, a: &Activation, closed: bool, secret: bool) {
    let wait = if closed {
        a.settle
    } else if secret {
        ctx.config().refresh_interval
    } else {
        return;
    };
    ctx.stop_token().wait_timeout(wait);
}

/// Runs the activation toward `target`, drawing its progress; `limit` is
/// `--timeout`. With `scheduled`, the schedule whose time has come: the
/// draining mode begins as its time, and ends the schedule.
fn wait_offline(
    ctx: &mut Context<'_>,
    backend: &dyn Backend,
    a: &Activation,
    target: Target,
    limit: Option<Duration>,
    scheduled: Option<&mut dyn ScheduleLease>,
) -> anyhow::Result<Outcome> {
    let mut meter = Meter::new(ctx, backend.session_timeout(), limit);
    let stop = ctx.stop_token().clone();
    let activate = match target {
        Target::Offline => offline::activate,
        Target::ReadOnly => offline::activate_read_only,
    };
    let outcome = {
        let out = ctx.out();
        let stop = || stop.requested();
        let mut progress = |p: offline::Progress<'_>| meter.update(out, &p);
        // A schedule's own record says where it goes (`target` agrees:
        // both come from the same flags).
        let result = match scheduled {
            Some(lease) => offline::activate_scheduled(backend, lease, a, &stop, &mut progress),
            None => activate(backend, a, &stop, &mut progress),
        };
        meter.finish(out);
        result?
    };
    Ok(outcome)
}

/// Schedules the window `args` ask for at `at`, toward `target` (READONLY
/// for `--read-only`; for `offline run`, to run `argv`), and says so with
/// the line `offline status` prints for it.
pub(super) fn schedule_window(
    ctx: &mut Context<'_>,
    backend: &dyn Backend,
    args: &ScheduleArgs,
    at: Timestamp,
    change: &ModeChange,
    target: Target,
    argv: Option<&[String]>,
) -> anyhow::Result<Box<dyn ScheduleLease>> {
    let now = backend.clock().now();
    let mut record =
        ScheduleRecord::by_this_process(at, schedule::notice_from(at, args.notice, now));
    record.by = change.by.clone();
    record.pid = change.pid;
    record.message = change.message.clone();
    record.argv = argv.map(<[String]>::to_vec);
    record.read_only = target == Target::ReadOnly;
    let lease = offline::schedule(backend, change, &record)?;
    writeln!(
        ctx.out(),
        "{}",
        terminal_safe(&lease.record().line(backend.clock().now()))
    )?;
    if ctx.is_terminal() {
        writeln!(
            ctx.out(),
            "Waiting until then: the schedule lasts as long as this process; Ctrl-C or `offline \
             off` cancels it."
        )?;
    }
    ctx.out().flush()?;
    Ok(lease)
}

/// Waits in the foreground for the schedule's time. Someone ending the
/// schedule is an error that says who (exit 75); a stop (Ctrl-C, SIGTERM)
/// withdraws it and exits 130, the site as it was. `change` is the
/// operator's, whose hooks run when the schedule is withdrawn.
pub(super) fn wait_for_time(
    ctx: &mut Context<'_>,
    backend: &dyn Backend,
    change: &ModeChange,
    lease: &mut dyn ScheduleLease,
) -> anyhow::Result<()> {
    let stop = ctx.stop_token().clone();
    match offline::wait_for_schedule(backend, change, lease, &|| stop.requested())? {
        Notice::Due => Ok(()),
        Notice::Interrupted => {
            writeln!(
                ctx.err(),
                "error: interrupted: the {} window scheduled at {} is withdrawn; the site \
                 stays {}",
                window_kind(lease.record()),
                local_time(lease.record().at),
                backend.mode()?.mode
            )?;
            Err(Exit(exit::INTERRUPTED).into())
        }
    }
}

/// `offline` or `read-only`: the kind of window `schedule` is, as the
/// lines that name it say.
pub(super) fn window_kind(schedule: &ScheduleRecord) -> &'static str {
    schedule.kind()
}

fn finish_wait(ctx: &mut Context<'_>, outcome: &Outcome, timeout: Duration) -> anyhow::Result<()> {
    if let Outcome::Offline { record, live, .. } | Outcome::ReadOnly { record, live, .. } = outcome
    {
        writeln!(ctx.out(), "{}", status_line(record.mode, live.active()))?;
        return Ok(());
    }
    let code = not_offline(ctx, outcome, timeout)?;
    Err(Exit(code).into())
}
