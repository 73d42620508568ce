//! `manage offline on --local --force` and `offline off --local`: this
//! host alone answers OFFLINE, without the shared state — for when the
//! state database itself is what is broken. The override and the markers
//! live in this host's `state_dir` (maintenance-core's `host` module); the
//! web layer looks at the override at each refresh, `offline mirror` never
//! removes the marker while it stands.

use maintenance_core::command::{Context, Exit};
use maintenance_core::config::BackendKind;
use maintenance_core::host::{HostDir, LocalOverride, Markers};
use maintenance_core::{anyhow, exit};

/// Refuses `--local` where it means nothing, or would act blindly.
fn usage(ctx: &mut Context<'_>, verb: &str, force: Option<bool>) -> anyhow::Result<()> {
    if ctx.config().backend == BackendKind::File {
        writeln!(
            ctx.err(),
            "error: `offline {verb} --local` is for a site whose state is shared (backend = \
             \"postgres\"): on the file backend this host's state directory is the site's \
             state; use `offline {verb}{}` instead",
            if verb == "on" { " --force" } else { "" }
        )?;
        return Err(Exit(exit::USAGE).into());
    }
    if force == Some(false) {
        writeln!(
            ctx.err(),
            "error: `offline on --local` needs --force: it acts without the shared state, so \
             it cannot wait for running commands or logged-in users to finish; add --force to \
             turn this host's visitors away at once, knowing that what is live elsewhere goes on"
        )?;
        return Err(Exit(exit::USAGE).into());
    }
    Ok(())
}

/// `offline on --local --force`: sets the override, then writes the marker.
pub(super) fn on(
    ctx: &mut Context<'_>,
    force: bool,
    message: Option<String>,
) -> anyhow::Result<()> {
    usage(ctx, "on", Some(force))?;
    let host = HostDir::open(ctx.config())?;
    let o = LocalOverride::by_this_process(message);
    host.set_override(&o)?;
    host.set_markers(
        Markers::OVERRIDDEN,
        &format!("since {} by {} (a local override)", o.since, o.by),
    )?;
    let refresh = ctx.config().refresh_interval;
    writeln!(
        ctx.out(),
        "This host is OFFLINE by a local override: its nginx answers from {}, its web layer \
         within {} ms; the shared mode is untouched. `offline off --local` takes it back.",
        host.path()
            .join(maintenance_core::host::OFFLINE_MARKER)
            .display(),
        refresh.as_millis()
    )?;
    Ok(())
}

/// `offline off --local`: removes the override, then makes the markers
/// follow the shared mode when it can be read, and removes them when not.
pub(super) fn off(ctx: &mut Context<'_>) -> anyhow::Result<()> {
    usage(ctx, "off", None)?;
    let host = HostDir::open(ctx.config())?;
    let had = host.clear_override()?;
    let shared = ctx.backend().and_then(|b| b.mode());
    match shared {
        Ok(view) => {
            host.set_markers(
                Markers::of(&view),
                &format!(
                    "since {} by {} (the site is {})",
                    view.record.since, view.record.by, view.mode
                ),
            )?;
            writeln!(
                ctx.out(),
                "{} this host follows the shared mode again: the site is {}.",
                if had {
                    "Took back the local override:"
                } else {
                    "No local override stood:"
                },
                view.mode
            )?;
        }
        Err(e) => {
            host.set_markers(Markers::default(), "")?;
            writeln!(
                ctx.out(),
                "{} the markers are removed, since the shared mode cannot be read ({e}); the \
                 web layer answers by its last snapshot, and `offline mirror`, where it runs, \
                 writes the markers again once the mode can be read.",
                if had {
                    "Took back the local override:"
                } else {
                    "No local override stood:"
                }
            )?;
        }
    }
    Ok(())
}

/// The local override standing on this host, for `offline status`: never
/// creates the directory, and an unreadable override stands.
pub(super) fn standing(ctx: &Context<'_>) -> Option<Result<LocalOverride, String>> {
    let config = ctx.config();
    if config.backend == BackendKind::File || !config.state_dir.exists() {
        return None;
    }
    let host = match HostDir::open(config) {
        Ok(h) => h,
        Err(e) => return Some(Err(e.to_string())),
    };
    match host.local_override() {
        Ok(o) => o.map(Ok),
        Err(e) => Some(Err(e.to_string())),
    }
}
