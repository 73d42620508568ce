//! `manage` as a site builds it — `manage::run()` and the built-in commands
//! — plus the benchmarks' tracked `noop` command.
#![cfg_attr(all(target_os = "linux", target_env = "gnu", not(test)), no_main)]
use bench_cli as _;

manage::main!();
