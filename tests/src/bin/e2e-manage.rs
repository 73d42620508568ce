//! The `manage` binary as the end-to-end tests run it: `manage::run()`, the
//! example plug-in, and the test-only commands of `manage_tests::fixture`.
//! Tests start it with `argv[0]` set to `manage`.

use hello_plugin as _;
use manage_tests as _;

fn main() -> std::process::ExitCode {
    manage::run()
}
