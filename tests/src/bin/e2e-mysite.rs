//! The example site's binary, built from `mysite::main` exactly as
//! `examples/mysite` builds it. Tests start it with `argv[0]` set to
//! `mysite`.

fn main() -> std::process::ExitCode {
    mysite::main()
}
