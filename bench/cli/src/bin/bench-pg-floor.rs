//! The PostgreSQL floor: one bare connection to `$MANAGE_DATABASE_URL` and
//! `SELECT 1` (the floor), through the postgres backend's own
//! connection path and runtime thread — the same socket options, TLS,
//! authentication and startup options as every command — what every
//! process that uses the backend pays before its own work, and what a
//! tracked no-op and `offline status` on PostgreSQL are measured against.
//! `bench-pg-floor schema` reads the schema's version instead (the first
//! table a command touches), for comparison.

fn main() -> std::process::ExitCode {
    let config = match maintenance_core::Config::load(&Default::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench-pg-floor: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let schema = std::env::args().nth(1).as_deref() == Some("schema");
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
