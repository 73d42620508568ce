//! The PostgreSQL floor: one bare connection to `$MANAGE_DATABASE_URL` and
//! one statement (the schema's version), through the postgres backend's own
//! connection path and runtime thread — what every process that uses the
//! backend pays before its own work, and what a tracked no-op and `offline
//! status` on PostgreSQL are measured against.

fn main() -> std::process::ExitCode {
    let config = match maintenance_core::Config::load(&Default::default()) {
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
    .and_then(|b| b.schema_state())
    {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-pg-floor: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
