//! `manage offline doctor`: checks the state directory as the running user
//! sees it (maintenance-core's file-backend doctor), or the PostgreSQL
//! server, schema, privileges and pooling mode (the postgres backend's),
//! and prints one line a finding. It never opens the file backend, which
//! refuses an unsafe state: that refusal is what doctor explains.

use maintenance_core::command::{Context, Exit};
use maintenance_core::{anyhow, exit};

/// Runs `offline doctor`: one line a finding; exit 0 when healthy, 1
/// otherwise.
#[inline(never)]
pub(super) fn exec(ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let config = ctx.config().clone();
    let (findings, place) = findings(&config);
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
        writeln!(out, "healthy: {place}")?;
        Ok(())
    } else {
        writeln!(
            out,
            "{problems} problem{} in {place}",
            if problems == 1 { "" } else { "s" },
        )?;
        Err(Exit(exit::FAILURE).into())
    }
}

/// What the configured backend's doctor finds, and where it looked.
fn findings(
    config: &maintenance_core::Config,
) -> (Vec<maintenance_core::backend::file::Finding>, String) {
    use maintenance_core::config::BackendKind;
    match config.backend {
        BackendKind::File => (
            maintenance_core::backend::file::doctor(config),
            config.state_dir.display().to_string(),
        ),
        #[cfg(feature = "postgres")]
        BackendKind::Postgres => {
            use maintenance_core::backend::postgres::{PostgresBackend, doctor};
            match PostgresBackend::open(config, maintenance_core::SystemClock::shared()) {
                Ok(b) => {
                    let place = maintenance_core::Backend::location(&b);
                    // The hooks' trust check is the configuration's, not the
                    // state's: the file doctor makes it first, and so does
                    // this one.
                    let mut found: Vec<_> = maintenance_core::hooks::Hooks::from_config(config)
                        .refused()
                        .map(|refused| maintenance_core::backend::file::Finding {
                            problem: true,
                            text: refused.to_owned(),
                        })
                        .into_iter()
                        .collect();
                    found.extend(doctor::doctor(&b));
                    (found, place)
                }
                Err(e) => (
                    vec![maintenance_core::backend::file::Finding {
                        problem: true,
                        text: e.to_string(),
                    }],
                    "the postgres backend's settings".into(),
                ),
            }
        }
        #[cfg(not(feature = "postgres"))]
        _ => (
            vec![maintenance_core::backend::file::Finding {
                problem: true,
                text: "the configuration selects the postgres backend, and this binary was \
                       built without it"
                    .into(),
            }],
            "the configuration".into(),
        ),
    }
}
