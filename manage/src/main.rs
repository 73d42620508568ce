//! The `manage` binary: everything lives in the library.
fn main() -> std::process::ExitCode {
    manage::run()
}
