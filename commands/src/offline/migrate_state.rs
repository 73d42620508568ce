//! `manage offline migrate-state`: applies the pending additive changes to
//! the postgres backend's schema (created on first use anyway). The file
//! backend upgrades its state directory when it opens it: nothing to do.

use maintenance_core::anyhow;
use maintenance_core::command::Context;
use maintenance_core::config::BackendKind;

/// Runs `offline migrate-state`.
pub(super) fn exec(ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let config = ctx.config().clone();
    match config.backend {
        BackendKind::File => {
            writeln!(
                ctx.out(),
                "nothing to migrate: the file backend upgrades {} when it opens it",
                config.state_dir.display()
            )?;
            Ok(())
        }
        #[cfg(feature = "postgres")]
        BackendKind::Postgres => {
            let b = maintenance_core::backend::postgres::PostgresBackend::open(
                &config,
                maintenance_core::SystemClock::shared(),
            )?;
            let applied = b.migrate()?;
            let place = maintenance_core::Backend::location(&b);
            if applied.is_empty() {
                writeln!(ctx.out(), "nothing to migrate: {place} is up to date")?;
            } else {
                let list: Vec<String> = applied.iter().map(i64::to_string).collect();
                writeln!(
                    ctx.out(),
                    "migrated {place}: applied version {}",
                    list.join(", ")
                )?;
            }
            Ok(())
        }
        #[cfg(not(feature = "postgres"))]
        _ => Err(anyhow::anyhow!(
            "the configuration selects the postgres backend, and this binary was built without it"
        )),
    }
}
