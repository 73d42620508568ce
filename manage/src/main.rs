//! The `manage` binary: everything lives in the library.
#![cfg_attr(all(target_os = "linux", target_env = "gnu", not(test)), no_main)]
manage::main!();
