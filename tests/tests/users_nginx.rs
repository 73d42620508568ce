//! nginx's workers — an unprivileged user, not root and not in the site's
//! group — see the web-server marker `<state>/OFFLINE` through the state
//! directory's modes (issue 14): a real nginx (`/usr/sbin/nginx`, which
//! `.ci/run` installs), started as root with `user manage-other;`, answers
//! 503 when `-f <state>/OFFLINE` holds and 200 otherwise. 200 while ONLINE,
//! 503 after root's `offline on --force`, 200 after `off` — and 200 even
//! while OFFLINE once a directory on the way loses its `o+x`, which is what
//! `offline doctor` then reports: so it is the modes manage gives the state
//! (2775) that let the workers in, and nothing else.
//!
//! Runs as root (it creates the users and switches to them); otherwise it
//! prints `SKIPPED …` and passes. No wall-clock assertion: nginx stats the
//! marker on every request, so each answer follows the command before it.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use manage_tests::{
    HANG_GUARD, OTHER, Proc, Reply, SharedSite, Who, chmod, free_port, poll_until, raw_request,
    users,
};

/// The example site's binary.
const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");

const NGINX: &str = "/usr/sbin/nginx";

/// A running nginx, stopped when dropped.
struct Nginx {
    proc: Proc,
    addr: SocketAddr,
    dir: PathBuf,
}

/// The children of process `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The real uid of process `pid`.
fn uid_of(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Nginx {
    /// Starts nginx in `dir` with its workers as `user`, answering 503
    /// while `state`/OFFLINE exists and 200 otherwise, on a free loopback
    /// port (another is tried when one is taken meanwhile).
    fn start(dir: &Path, state: &Path, user: &str) -> Nginx {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing: this test runs a real nginx. `.ci/run` installs it; \
             locally run `apt-get install -y nginx`"
        );
        let tmp = dir.join("tmp");
        for d in [dir, &tmp] {
            std::fs::create_dir_all(d).unwrap();
            chmod(d, 0o755);
        }
        let error_log = dir.join("error.log");
        let d = dir.display();
        let marker = state.join("OFFLINE");
        let marker = marker.display();
        for attempt in 1..=20 {
            let port = free_port();
            let conf = format!(
                "daemon off;\nmaster_process on;\nworker_processes 1;\nuser {user} {user};\n\
                 pid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
                 events {{ worker_connections 16; }}\n\
                 http {{\n\
                 \x20   default_type text/plain;\n\
                 \x20   access_log {d}/access.log;\n\
                 \x20   client_body_temp_path {d}/tmp/client_body;\n\
                 \x20   proxy_temp_path {d}/tmp/proxy;\n\
                 \x20   fastcgi_temp_path {d}/tmp/fastcgi;\n\
                 \x20   uwsgi_temp_path {d}/tmp/uwsgi;\n\
                 \x20   scgi_temp_path {d}/tmp/scgi;\n\
                 \x20   server {{\n\
                 \x20       listen 127.0.0.1:{port};\n\
                 \x20       location / {{\n\
                 \x20           if (-f {marker}) {{ return 503 \"OFFLINE\\n\"; }}\n\
                 \x20           return 200 \"ONLINE\\n\";\n\
                 \x20       }}\n\
                 \x20   }}\n\
                 }}\n"
            );
            std::fs::write(dir.join("nginx.conf"), conf).unwrap();
            let Some(proc) = manage_tests::start_nginx(NGINX, dir, &error_log, attempt) else {
                continue;
            };
            return Nginx {
                proc,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                dir: dir.to_path_buf(),
            };
        }
        unreachable!("the loop returns or fails")
    }

    /// Its workers' pids, once it has started them and each has switched
    /// to `uid`: a worker is forked as root and drops to its user a moment
    /// later, so its uid is read only once that has happened.
    fn workers_as(&self, uid: u32) -> Vec<u32> {
        let master = self.proc.pid();
        poll_until(&format!("nginx's workers running as uid {uid}"), || {
            let w = children_of(master);
            (!w.is_empty() && w.iter().all(|&p| uid_of(p) == Some(uid))).then_some(w)
        })
    }

    fn get(&self) -> Reply {
        raw_request(self.addr, None, "GET", "/", &[])
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// Asserts nginx answers `status` with `body`.
    fn assert_answers(&self, status: u16, body: &str, context: &str) {
        let r = self.get();
        assert_eq!(
            (r.status, r.body.as_str()),
            (status, body),
            "{context}: {r}\nerror.log:\n{}",
            self.error_log()
        );
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers and waits for them.
        if self.proc.is_running() {
            manage_tests::send_signal(self.proc.pid(), rustix::process::Signal::TERM);
            let deadline = std::time::Instant::now() + HANG_GUARD;
            while self.proc.is_running() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

#[test]
fn nginx_workers_who_are_not_root_see_the_marker_through_the_state_modes() {
    let Some(users) =
        users("nginx_workers_who_are_not_root_see_the_marker_through_the_state_modes")
    else {
        return;
    };
    let site = SharedSite::new(MYSITE, &users, "");
    // Root creates the state, umask 077.
    site.run_ok(Who::Root, &["offline", "status"]);
    let nginx = Nginx::start(&site.dir().join("nginx"), &site.state(), OTHER);
    let workers = nginx.workers_as(users.other);
    for w in &workers {
        assert_eq!(
            uid_of(*w),
            Some(users.other),
            "nginx's worker {w} does not run as {OTHER}"
        );
    }

    nginx.assert_answers(200, "ONLINE\n", "ONLINE");
    site.run_ok(Who::Root, &["offline", "on", "--force"]);
    nginx.assert_answers(503, "OFFLINE\n", "after root's `offline on --force`");
    site.run_ok(Who::Root, &["offline", "off"]);
    nginx.assert_answers(200, "ONLINE\n", "after root's `offline off`");

    // The deploy user's marker is seen as well.
    site.run_ok(Who::Deploy, &["offline", "on", "--force"]);
    nginx.assert_answers(503, "OFFLINE\n", "after the deploy user's `offline on`");

    // Without search permission for others on the way, the workers cannot
    // see the marker — and doctor says what to run.
    for (dir, broken, fixed, fix) in [
        (site.var(), 0o770, 0o775, "chmod o+x"),
        (site.state(), 0o2770, 0o2775, "chmod o+x"),
    ] {
        let shown = dir.display().to_string();
        chmod(&dir, broken);
        nginx.assert_answers(200, "ONLINE\n", &format!("{shown} without o+x"));
        let doctor = site.run(Who::Root, &["offline", "doctor"]);
        assert_eq!(doctor.code(), Some(1), "{doctor}");
        assert!(
            doctor
                .stdout
                .iter()
                .any(|l| l.starts_with("problem: ") && l.contains(&format!("run: {fix} {shown}"))),
            "{doctor}"
        );
        chmod(&dir, fixed);
        nginx.assert_answers(503, "OFFLINE\n", &format!("{shown} fixed"));
    }
    site.run_ok(Who::Root, &["offline", "off"]);
    nginx.assert_answers(200, "ONLINE\n", "back ONLINE");
}
