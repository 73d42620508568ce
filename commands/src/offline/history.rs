//! `manage offline history`: the last mode changes, newest last — a table
//! (time, change, who, how long, why) or, with `--json`, one entry per line
//! as the history stores it. A change nobody lived to record (a lapsed
//! PENDING, a run killed mid-command) is recorded first, so it shows.

use std::time::{Duration, SystemTime};

use maintenance_core::clock::{Timestamp, format_age};
use maintenance_core::command::Context;
use maintenance_core::history::{EventKind, HistoryEntry, HistoryQuery};
use maintenance_core::hooks::Hooks;
use maintenance_core::{anyhow, clap};

use super::status::terminal_safe;

/// How many entries the table shows without `-n`.
const DEFAULT_LAST: usize = 20;

// The flags of `offline history`. (A plain comment: under the deferred
// verbs a doc comment here would replace the verb's own `--help` title.)
#[derive(Debug, clap::Args)]
pub(super) struct HistoryArgs {
    /// Show the last N changes (default 20).
    #[arg(short = 'n', long = "last", value_name = "N")]
    last: Option<usize>,
    /// Only changes since this time: an RFC 3339 time
    /// (2026-11-25T06:00:00Z) or a duration ago (2h, 7d, 90m).
    #[arg(long, value_name = "TIME|AGO", value_parser = since)]
    since: Option<Timestamp>,
    /// One JSON object per line, as stored (JSON Lines), for scripts.
    #[arg(long)]
    json: bool,
}

/// `--since`: an RFC 3339 time, or a duration ago.
fn since(text: &str) -> Result<Timestamp, String> {
    if let Ok(t) = Timestamp::parse_rfc3339(text) {
        return Ok(t);
    }
    match maintenance_core::config::parse_seconds(text) {
        Ok(ago) => Ok(Timestamp::at(
            SystemTime::now()
                .checked_sub(ago)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        )),
        Err(e) => Err(format!(
            "{text:?} is neither a time nor a duration ago: write an RFC 3339 time \
             (2026-11-25T06:00:00Z) or how long ago (\"2h\", \"7d\"); {e}"
        )),
    }
}

/// Runs `offline history`.
#[inline(never)]
pub(super) fn exec(ctx: &mut Context<'_>, args: &HistoryArgs) -> anyhow::Result<()> {
    let backend = ctx.backend()?;
    maintenance_core::recorder::catch_up(backend.as_ref(), &Hooks::from_config(ctx.config()));
    let query = HistoryQuery {
        last: Some(args.last.unwrap_or(DEFAULT_LAST)),
        since: args.since,
    };
    let read = backend.history(&query)?;
    for skipped in &read.skipped {
        writeln!(ctx.err(), "warning: {}", terminal_safe(skipped))?;
    }
    if args.json {
        for e in &read.entries {
            writeln!(ctx.out(), "{}", serde_json::to_string(e)?)?;
        }
        return Ok(());
    }
    if read.entries.is_empty() {
        writeln!(
            ctx.out(),
            "No mode changes recorded{} in the {}.",
            if args.since.is_some() {
                " since then"
            } else {
                ""
            },
            backend.location()
        )?;
        return Ok(());
    }
    for line in table(&read.entries) {
        writeln!(ctx.out(), "{}", line.trim_end())?;
    }
    Ok(())
}

/// The table: a header, then one row per entry, columns padded to their
/// widest cell.
fn table(entries: &[HistoryEntry]) -> Vec<String> {
    let mut rows = vec![[
        "TIME".to_owned(),
        "CHANGE".to_owned(),
        "BY".to_owned(),
        "TOOK".to_owned(),
        "WHY".to_owned(),
    ]];
    for e in entries {
        rows.push([
            // To the second, in UTC: `2026-11-25T04:51:21Z`.
            format!("{}Z", &e.at.to_string()[..19]),
            change(e),
            terminal_safe(&format!("{} ({})", e.by, e.pid)).into_owned(),
            e.waited
                .as_ref()
                .map(|w| took(w.seconds))
                .unwrap_or_else(|| "-".to_owned()),
            terminal_safe(&why(e)).into_owned(),
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i] - cell.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            line
        })
        .collect()
}

/// How long a change waited: `0.4s` under ten seconds, else `2m 5s`.
fn took(seconds: f64) -> String {
    if seconds < 10.0 {
        format!("{:.1}s", seconds.max(0.0))
    } else {
        format_age(Duration::try_from_secs_f64(seconds).unwrap_or_default())
    }
}

/// `ONLINE → OFFLINE (forced)`, `schedule set`, …
fn change(e: &HistoryEntry) -> String {
    let mut c = e.change();
    if e.forced {
        c.push_str(" (forced)");
    }
    c
}

/// The reason, with the message (of a mode change, or of the window a
/// schedule announces) and who noticed a change nobody lived to record.
fn why(e: &HistoryEntry) -> String {
    let mut why = e.reason.clone();
    if let Some(by) = &e.noticed_by {
        why.push_str(&format!(" [recorded by {by}]"));
    }
    if matches!(e.kind, EventKind::Mode | EventKind::ScheduleSet)
        && let Some(m) = &e.message
    {
        why.push_str(&format!(" — message: {m:?}"));
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;
    use maintenance_core::Mode;
    use maintenance_core::history::{Cause, Waited};

    #[test]
    fn the_table_lines_up_and_says_time_change_who_how_long_and_why() {
        let at = Timestamp::parse_rfc3339("2026-11-25T04:51:21.123Z").unwrap();
        let mut on = HistoryEntry::new(
            EventKind::Mode,
            Cause::On,
            Mode::Pending,
            Mode::Offline,
            at,
            "offline on: waited for command `reindex` (pid 7, root@web1)",
        );
        on.by = "root@web1".into();
        on.pid = 4242;
        on.waited = Some(Waited {
            seconds: 125.0,
            held_by: Default::default(),
        });
        let mut force = HistoryEntry::new(
            EventKind::Mode,
            Cause::Force,
            Mode::Online,
            Mode::Offline,
            at,
            "offline on --force: OFFLINE at once; still live: nothing live",
        );
        force.forced = true;
        force.by = "deploy@web2\u{1b}[2J".into();
        force.pid = 7;
        let lines = table(&[on, force]);
        assert_eq!(
            lines[0].trim_end(),
            "TIME                  CHANGE                     BY                        TOOK   WHY"
        );
        assert_eq!(
            lines[1].trim_end(),
            "2026-11-25T04:51:21Z  PENDING → OFFLINE          root@web1 (4242)          2m 5s  \
             offline on: waited for command `reindex` (pid 7, root@web1)"
        );
        assert!(
            lines[2].starts_with(
                "2026-11-25T04:51:21Z  ONLINE → OFFLINE (forced)  deploy@web2\\u{1b}[2J (7)  -      "
            ),
            "{:?}",
            lines[2]
        );
    }

    #[test]
    fn since_takes_a_time_or_a_duration_ago() {
        assert_eq!(
            since("2026-11-25T06:00:00+01:00").unwrap().to_string(),
            "2026-11-25T05:00:00.000Z"
        );
        let an_hour_ago = since("1h").unwrap();
        let now = Timestamp::at(SystemTime::now());
        assert!(an_hour_ago < now);
        let err = since("yesterday").unwrap_err();
        assert!(err.contains("neither a time nor a duration ago"), "{err}");
    }
}
