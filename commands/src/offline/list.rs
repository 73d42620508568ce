//! `manage offline list`: every live command and web session, as two
//! aligned tables or as JSON (maintenance-core's `offline::Live`).

use std::io::Write;
use std::time::SystemTime;

use maintenance_core::clock::format_age;
use maintenance_core::command::Context;
use maintenance_core::transition::Live;
use maintenance_core::{anyhow, clap};

// The flags of `offline list`. (A plain comment: under the deferred
// verbs a doc comment here would replace the verb's own `--help` title.)
#[derive(Debug, clap::Args)]
pub(super) struct ListArgs {
    /// As JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `offline list`.
#[inline(never)]
pub(super) fn exec(ctx: &mut Context<'_>, args: &ListArgs) -> anyhow::Result<()> {
    let live = Live::read(ctx.backend()?.as_ref())?;
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
                        "{}{}",
                        t.policy,
                        t.notes()
                            .iter()
                            .map(|n| format!(" ({n})"))
                            .collect::<String>(),
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
