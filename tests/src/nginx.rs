//! A real nginx (Debian's `/usr/sbin/nginx`) started by a test in a
//! directory of its own, on a free loopback port, with its workers as an
//! unprivileged user when the test runs as root.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::http::{Reply, raw_form, raw_request};
use crate::pid::{children_of, uid_of};
use crate::process::Proc;
use crate::scratch::chmod;
use crate::wait::{HANG_GUARD, poll_until};

/// Where the tests find nginx (Debian's package; `scripts/test` installs
/// it).
pub const NGINX: &str = "/usr/sbin/nginx";

/// A running nginx, master and workers. Dropping it stops it: SIGTERM to
/// the master, which stops its workers, then SIGKILL for anything left,
/// a worker of a killed master too.
#[derive(Debug)]
pub struct Nginx {
    proc: Proc,
    addr: SocketAddr,
    dir: PathBuf,
    workers: Vec<u32>,
}

impl Nginx {
    /// Starts nginx with its prefix, pid file, logs and temporary files in
    /// `dir` (created, mode 0755: the workers' user must reach it), its
    /// workers as `user` (user and group, nginx's `user` directive) when
    /// given, and `http(port)` inside its `http {}` block after the common
    /// lines: what listens on `127.0.0.1:port`. Another free port is tried
    /// when one is taken meanwhile. Returns once the master listens and
    /// has started its workers. Fails the test, saying how to get nginx,
    /// when it is missing.
    pub fn start(dir: &Path, user: Option<(&str, &str)>, http: impl Fn(u16) -> String) -> Nginx {
        Nginx::start_with(dir, user, &|cmd| cmd, http)
    }

    /// [`start`](Self::start), its command line first passed through
    /// `wrap` (which runs it elsewhere: on a host of [`crate::hosts`], in
    /// its own network namespace, where `addr` is the host's loopback).
    pub fn start_with(
        dir: &Path,
        user: Option<(&str, &str)>,
        wrap: &dyn Fn(Command) -> Command,
        http: impl Fn(u16) -> String,
    ) -> Nginx {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing: this test runs a real nginx. `scripts/test` installs it; \
             or run `apt-get install -y nginx`"
        );
        let tmp = dir.join("tmp");
        for d in [dir, &tmp] {
            std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
            chmod(d, 0o755);
        }
        let error_log = dir.join("error.log");
        let d = dir.display();
        let user_line = user
            .map(|(u, g)| format!("user {u} {g};"))
            .unwrap_or_default();
        for attempt in 1..=20 {
            let port = free_port();
            let conf = format!(
                "daemon off;\nmaster_process on;\nworker_processes 1;\n{user_line}\n\
                 pid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n\
                 \x20   access_log {d}/access.log;\n\
                 \x20   client_body_temp_path {d}/tmp/client_body;\n\
                 \x20   proxy_temp_path {d}/tmp/proxy;\n\
                 \x20   fastcgi_temp_path {d}/tmp/fastcgi;\n\
                 \x20   uwsgi_temp_path {d}/tmp/uwsgi;\n\
                 \x20   scgi_temp_path {d}/tmp/scgi;\n\
                 {}\n}}\n",
                http(port)
            );
            std::fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
            let Some(proc) = start_nginx_with(NGINX, dir, &error_log, attempt, wrap) else {
                continue;
            };
            let master = proc.pid();
            let workers = poll_until("nginx's workers", || {
                let w = children_of(master);
                (!w.is_empty()).then_some(w)
            });
            return Nginx {
                proc,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                dir: dir.to_path_buf(),
                workers,
            };
        }
        unreachable!("start_nginx fails the test on the last attempt")
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its workers, as they were when it started.
    pub fn workers(&self) -> &[u32] {
        &self.workers
    }

    /// Its workers' pids, once each has switched to `uid`: a worker is
    /// forked as root and drops to its user a moment later, so its uid is
    /// read only once that has happened.
    pub fn workers_as(&self, uid: u32) -> Vec<u32> {
        let master = self.proc.pid();
        poll_until(&format!("nginx's workers running as uid {uid}"), || {
            let w = children_of(master);
            (!w.is_empty() && w.iter().all(|&p| uid_of(p) == Some(uid))).then_some(w)
        })
    }

    /// `METHOD PATH` with `headers` through nginx, from the local address
    /// `from` (`"127.0.0.2"`: on Linux all of 127.0.0.0/8 is local), over a
    /// plain socket.
    pub fn request(&self, from: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let from: IpAddr = from
            .parse()
            .unwrap_or_else(|e| panic!("{from:?} is not an address: {e}"));
        raw_request(self.addr, Some(from), method, path, headers)
    }

    /// `METHOD PATH` with `headers` and the form `form` as its body through
    /// nginx, from the local address `from`.
    pub fn send_form(
        &self,
        from: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        form: &str,
    ) -> Reply {
        let from: IpAddr = from
            .parse()
            .unwrap_or_else(|e| panic!("{from:?} is not an address: {e}"));
        raw_form(self.addr, Some(from), method, path, headers, form)
    }

    /// `GET PATH` with `headers` through nginx, from the local address
    /// `from`.
    pub fn get(&self, from: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.request(from, "GET", path, headers)
    }

    /// Its error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

/// `kill -SIGNAL PID`, for a process that may be gone already.
fn signal_if_alive(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if self.proc.is_running() {
            signal_if_alive(self.proc.pid(), rustix::process::Signal::TERM);
            let deadline = Instant::now() + HANG_GUARD;
            while self.proc.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            self.proc.kill9();
        }
        // A worker left behind by a killed master.
        for &w in &self.workers {
            let cmdline = std::fs::read(format!("/proc/{w}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("nginx: worker") {
                signal_if_alive(w, rustix::process::Signal::KILL);
            }
        }
    }
}

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
    start_nginx_with(exe, dir, error_log, attempt, &|cmd| cmd)
}

/// [`start_nginx`], its command line first passed through `wrap`.
pub fn start_nginx_with(
    exe: &str,
    dir: &Path,
    error_log: &Path,
    attempt: usize,
    wrap: &dyn Fn(Command) -> Command,
) -> Option<Proc> {
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
    let mut proc = Proc::spawn(wrap(cmd));
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
