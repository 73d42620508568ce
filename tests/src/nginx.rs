//! A real nginx started by a test, on a loopback port.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::poll_until;
use crate::process::Proc;

/// A TCP port on 127.0.0.1 that was free a moment ago (for a server that
/// cannot be told to pick its own, such as nginx: retry when it is taken).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Starts `nginx` (the binary at `exe`) with `dir/nginx.conf`, its prefix
/// `dir` and its error log at `error_log`, and waits until its master has
/// written its pid file (it listens). `None` when the port was taken (try
/// another while `attempt` < 20); any other failure fails the test with
/// the error log.
pub fn start_nginx(exe: &str, dir: &Path, error_log: &Path, attempt: usize) -> Option<Proc> {
    let _ = std::fs::remove_file(dir.join("nginx.pid"));
    let mut cmd = Command::new(exe);
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(error_log)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut proc = Proc::spawn(cmd);
    // The master writes its pid file once it listens; it exits when it
    // cannot bind.
    let started = poll_until("nginx listening or exited", || {
        let pid = std::fs::read_to_string(dir.join("nginx.pid")).ok();
        if pid.is_some_and(|p| p.trim() == proc.pid().to_string()) {
            Some(true)
        } else if !proc.is_running() {
            Some(false)
        } else {
            None
        }
    });
    if started {
        return Some(proc);
    }
    let out = proc.finish();
    let log = std::fs::read_to_string(error_log).unwrap_or_default();
    assert!(
        log.contains("Address already in use") && attempt < 20,
        "nginx did not start: {out}\nerror.log:\n{log}"
    );
    None
}
