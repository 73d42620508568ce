//! The example site's binary.
fn main() -> std::process::ExitCode {
    mysite::main()
}
