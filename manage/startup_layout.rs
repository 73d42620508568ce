// The build script of every package whose binaries run `manage::run()`
// (manage, bench-cli, mysite), included by its `build.rs` after
// `const STARTUP_LD: &str = "<path of manage/startup.ld from the
// package>";`: a release build on Linux links with that script, which lays
// out the code start-up runs at the front of `.text`, so that a start-up
// maps a few windows of code instead of one for each function it calls
// (`bench/cli/startup-layout.sh` makes the script and says why). Debug
// builds and other systems link as usual, and so does a build with
// `MANAGE_STARTUP_LAYOUT=off` in its environment: valgrind names no
// function outside `.text`, so that script traces such a build (and so
// should whoever profiles start-up with callgrind); and a linker that
// reads no `SECTIONS … INSERT` script (mold) needs it. rust-lld (Rust's
// default on x86_64 Linux) and GNU ld read it.

fn main() {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let script = std::path::Path::new(&dir).join(STARTUP_LD);
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-env-changed=MANAGE_STARTUP_LAYOUT");
    let off = std::env::var_os("MANAGE_STARTUP_LAYOUT").is_some_and(|v| v == "off");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if release && linux && !off && script.is_file() {
        // `INSERT BEFORE .text` keeps the linker's own layout for the rest.
        println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
    }
}
