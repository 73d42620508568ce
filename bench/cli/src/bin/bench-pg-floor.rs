//! The PostgreSQL floor: one bare connection to `$MANAGE_DATABASE_URL` and
//! `SELECT 1` (the floor), through the postgres backend's own
//! connection path and runtime thread — the same socket options, TLS,
//! authentication and startup options as every command — what every
//! process that uses the backend pays before its own work, and what a
//! tracked no-op and `offline status` on PostgreSQL are measured against.
//! `bench-pg-floor schema` reads the schema's version instead (the first
//! table a command touches), for comparison. `--config FILE` names the
//! `manage.toml` (else the one found from the working directory), so one
//! run can time the floor of two servers, or of a server and a pooler.

fn main() -> std::process::ExitCode {
    let mut schema = false;
    let mut overrides = maintenance_core::config::Overrides::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let file = if arg == "--config" { args.next() } else { None };
        match (arg.as_str(), file) {
            ("schema", _) => schema = true,
            (_, Some(file)) => overrides.config_file = Some(file.into()),
            _ => {
                eprintln!("usage: bench-pg-floor [--config FILE] [schema]");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let config = match maintenance_core::Config::load(&overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench-pg-floor: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match maintenance_core::backend::postgres::PostgresBackend::open(
        &config,
        maintenance_core::SystemClock::shared(),
    )
    .and_then(|b| {
        if schema {
            b.schema_state().map(drop)
        } else {
            b.ping()
        }
    }) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-pg-floor: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
