//! `manage` as a site builds it — `manage::run()` and the built-in commands
//! — plus the benchmarks' tracked `noop` command.
use bench_cli as _;

fn main() -> std::process::ExitCode {
    manage::run()
}
