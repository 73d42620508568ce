//! The stock `manage` binary has the PostgreSQL backend built in, and links
//! no OpenSSL for it: TLS is rustls (merely linking `-lssl -lcrypto` made an
//! empty binary's start three times slower).

use std::process::Command;

/// The stock binary, as cargo built it for this test.
const MANAGE: &str = env!("CARGO_BIN_EXE_manage");

#[test]
fn the_stock_manage_binary_links_no_openssl() {
    let out = Command::new("ldd")
        .arg(MANAGE)
        .output()
        .expect("ldd runs (Debian: libc-bin)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ldd {MANAGE}: {text}");
    assert!(text.contains("libc.so"), "ldd read the binary: {text}");
    for lib in ["libssl", "libcrypto"] {
        assert!(!text.contains(lib), "{MANAGE} links {lib}:\n{text}");
    }
}

#[test]
fn the_stock_manage_binary_has_the_postgres_backend_built_in() {
    // Port 1 on loopback refuses: a binary with the backend tries to connect
    // and says so; one without it says it was built without the backend.
    let dir = std::env::temp_dir();
    let out = Command::new(MANAGE)
        .args(["offline", "status"])
        .current_dir(&dir)
        .env_remove("MANAGE_CONFIG")
        .env_remove("MANAGE_STATE_DIR")
        .env(
            "MANAGE_DATABASE_URL",
            "postgres://nobody@127.0.0.1:1/none?connect_timeout=5",
        )
        .output()
        .expect("the binary runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "status cannot succeed: {err}");
    assert!(
        !err.contains("built without"),
        "the stock binary lacks the backend: {err}"
    );
    assert!(
        err.contains("127.0.0.1:1"),
        "the error names the server it tried: {err}"
    );
}
