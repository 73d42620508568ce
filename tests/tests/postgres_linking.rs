//! The stock binary has the postgres backend built in, and links no
//! OpenSSL for it: TLS is rustls (merely linking `-lssl -lcrypto` made an
//! empty binary's start three times slower).

#[test]
fn the_manage_binary_links_no_openssl() {
    let exe = env!("CARGO_BIN_EXE_e2e-manage");
    let out = std::process::Command::new("ldd")
        .arg(exe)
        .output()
        .expect("ldd runs (Debian: libc-bin)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ldd {exe}: {text}");
    for lib in ["libssl", "libcrypto"] {
        assert!(!text.contains(lib), "{exe} links {lib}:\n{text}");
    }
    // And the backend is there: the binary knows the postgres backend's
    // own verb.
    let help = std::process::Command::new(exe)
        .args(["offline", "--help"])
        .output()
        .expect("the binary runs");
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("migrate-state"),
        "{}",
        String::from_utf8_lossy(&help.stdout)
    );
}
