//! The `manage` binary as the end-to-end tests run it: `manage::run()`, the
//! example plug-in, and the test-only commands of `manage_tests::fixture`.
//! Tests start it with `argv[0]` set to `manage`.
#![cfg_attr(all(target_os = "linux", target_env = "gnu", not(test)), no_main)]

use hello_plugin as _;
use manage_tests as _;

manage::main!();
