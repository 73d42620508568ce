//! Hosts on this machine for the many-hosts tests: each a network namespace
//! joined to this one by a veth pair, with a host name, a directory and a
//! local state directory of its own, all sharing one site on the
//! PostgreSQL test server over TCP. Needs root; [`Hosts::new`] skips,
//! saying why, without it.
//!
//! Addresses are link-local only (169.254.0.0/16): host `i` of a run holds
//! a /30 of its own, `169.254.X.Y+1` on this side and `+2` inside its
//! namespace, and reaches the server at [`DB_ADDR`] (which
//! `scripts/pg-cluster` adds to `lo` and listens on as root) through its
//! veth. A /30 is taken by locking a slot file, so parallel tests never
//! share one; names derive from the slot, and a run killed before it could
//! clean up is cleaned up by the next run taking its slot.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cli_site::{fresh_postgres_site, test_database_url};
use crate::http::Reply;
use crate::nginx::Nginx;
use crate::process::{Outcome, Proc, isolated};
use crate::scratch::{Scratch, chmod};
use crate::web::MYSITE_KEY;

/// The server's address for the hosts: on `lo` of this (the root)
/// namespace, routed to from each host through its veth.
pub const DB_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);

/// The port `mysite runserver` listens on inside each host (on its own
/// loopback: each namespace has its own ports).
pub const MYSITE_PORT: u16 = 8000;

/// Slots of a /30 each, from 169.254.1.0 up, below 169.254.64.0: far from
/// [`DB_ADDR`]'s /24 and from 169.254.169.254 (cloud metadata services).
const SLOTS: u32 = 63 * 64;

/// `ip ARGS…`, whose failure fails the test (with its stderr).
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip {}`: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ip ARGS…` for a clean-up: errors (nothing there to delete) ignored.
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Why the hosts cannot be made here, or `None` when they can: root, a
/// working `ip netns`.
fn unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("the hosts are network namespaces, which need root".into());
    }
    let probe = format!("manage-probe-{}", std::process::id());
    let out = Command::new("ip")
        .args(["netns", "add", &probe])
        .stdin(Stdio::null())
        .output();
    ip_quiet(&["netns", "del", &probe]);
    match out {
        Err(e) => Some(format!(
            "`ip` cannot run ({e}): install iproute2 (scripts/test does)"
        )),
        Ok(o) if !o.status.success() => Some(format!(
            "`ip netns add` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => None,
    }
}

/// The test server's URL as the hosts reach it: its host replaced by
/// [`DB_ADDR`], and its port. `None`, after saying why, when the server is not the
/// loopback one `scripts/pg-cluster` starts, or does not listen there.
fn hosts_database_url(url: &str) -> Option<(String, u16)> {
    let expected = ["CI", "MANAGE_TEST_EXPECT_POSTGRES"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
    let Some((head, rest)) = url.split_once("@127.0.0.1:") else {
        eprintln!(
            "skipped: the hosts reach the server at {DB_ADDR}, which only a cluster of \
             scripts/pg-cluster started as root listens on; $MANAGE_TEST_DATABASE_URL names \
             another server"
        );
        return None;
    };
    let port: u16 = rest
        .split(['/', '?'])
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in the test server's URL {url:?}"));
    let addr = SocketAddr::from((DB_ADDR, port));
    if let Err(e) = std::net::TcpStream::connect_timeout(&addr, crate::wait::HANG_GUARD) {
        let why = format!(
            "the test server does not listen on {addr} ({e}): start it with scripts/pg-cluster \
             as root, which adds that address"
        );
        assert!(!expected, "{why}");
        eprintln!("skipped: {why}");
        return None;
    }
    Some((format!("{head}@{DB_ADDR}:{rest}"), port))
}

/// The binaries a host runs: `env!("CARGO_BIN_EXE_e2e-manage")` and
/// `env!("CARGO_BIN_EXE_e2e-mysite")` of the test.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The `manage` binary, run as `manage`.
    pub manage: PathBuf,
    /// The example site's binary, run as `mysite`.
    pub mysite: PathBuf,
}

/// Hosts sharing one site; every host is removed when this is dropped
/// (drop the processes run in them first, as a test's later locals are).
#[derive(Debug)]
pub struct Hosts {
    hosts: Vec<Host>,
    site: String,
}

impl Hosts {
    /// `n` hosts named `a`, `b`, `c`… sharing a fresh site on the test
    /// server, each with `toml` in its manage.toml (after the site's line,
    /// its state directory and `refresh_interval = "100ms"`: a layer lets a
    /// write in on a snapshot read under 200 ms ago, which a loaded machine
    /// keeps up, where 50 ms turned a login away now and then). `None`,
    /// after printing why, when this machine cannot make them: not root, no
    /// working `ip netns`, no test server (which fails instead where
    /// PostgreSQL is expected: see [`test_database_url`]).
    pub fn new(n: usize, bins: &Binaries, toml: &str) -> Option<Hosts> {
        if let Some(why) = unavailable() {
            eprintln!("skipped: {why}");
            return None;
        }
        let (url, port) = hosts_database_url(&test_database_url()?)?;
        let (url, site) = fresh_postgres_site(&url);
        let hosts = (0..n)
            .map(|i| {
                let name = char::from(b'a' + u8::try_from(i).expect("a few hosts"));
                Host::new(name, bins, &url, port, &site, toml)
            })
            .collect();
        Some(Hosts { hosts, site })
    }

    /// Host `i` (0 is `a`).
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Every host.
    pub fn all(&self) -> &[Host] {
        &self.hosts
    }

    /// The site's name on the server.
    pub fn site(&self) -> &str {
        &self.site
    }
}

/// One host: a network namespace, a veth pair, a host name, a directory
/// (every run's working directory, holding manage.toml) and a local state
/// directory (the markers, the local override).
#[derive(Debug)]
pub struct Host {
    name: char,
    hostname: String,
    netns: String,
    veth: String,
    inside: Ipv4Addr,
    scratch: Scratch,
    bins: Binaries,
    url: String,
    /// The server's port at [`DB_ADDR`].
    db_port: u16,
    /// The slot's lock, held while the host lives.
    _slot: File,
}

/// Takes a free slot: its number and its lock (released when the file is
/// closed, by a killed test too).
fn take_slot() -> (u32, File) {
    let dir = std::env::temp_dir().join("manage-tests-hosts");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let start = u32::from_ne_bytes(maintenance_core::random::bytes::<4>()) % SLOTS;
    for k in 0..SLOTS {
        let slot = (start + k) % SLOTS;
        let path = dir.join(format!("{slot}.lock"));
        let file = File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return (slot, file);
        }
    }
    panic!("every host slot in {} is taken", dir.display());
}

impl Host {
    fn new(name: char, bins: &Binaries, url: &str, db_port: u16, site: &str, toml: &str) -> Host {
        let (slot, lock) = take_slot();
        let netns = format!("manage-host-{slot}");
        let veth = format!("mgh{slot}");
        // What a killed run left in this slot.
        ip_quiet(&["netns", "del", &netns]);
        ip_quiet(&["link", "del", &veth]);
        let base = 256 + slot * 4;
        let addr = |k: u32| Ipv4Addr::from(u32::from(Ipv4Addr::new(169, 254, 0, 0)) + base + k);
        let (outside, inside) = (addr(1), addr(2));
        let scratch = Scratch::new();
        chmod(scratch.path(), 0o755);
        let state = scratch.state();
        std::fs::create_dir_all(&state).expect("create the host's state directory");
        chmod(&state, 0o755);
        std::fs::write(
            scratch.path().join("manage.toml"),
            format!(
                "site = \"{site}\"\nstate_dir = \"{}\"\nrefresh_interval = \"100ms\"\n{toml}\n",
                state.display()
            ),
        )
        .expect("write manage.toml");
        let host = Host {
            name,
            hostname: format!("host-{name}-{slot}"),
            netns,
            veth,
            inside,
            scratch,
            bins: bins.clone(),
            url: url.to_owned(),
            db_port,
            _slot: lock,
        };
        let (ns, veth) = (host.netns.as_str(), host.veth.as_str());
        ip(&["netns", "add", ns]);
        ip(&[
            "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ]);
        ip(&["addr", "add", &format!("{outside}/30"), "dev", veth]);
        ip(&["link", "set", veth, "up"]);
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{inside}/30"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        // The server, and nothing else, through the veth.
        ip(&[
            "-n",
            ns,
            "route",
            "add",
            &format!("{DB_ADDR}/32"),
            "via",
            &outside.to_string(),
        ]);
        host
    }

    /// Its letter: `a`, `b`, `c`.
    pub fn name(&self) -> char {
        self.name
    }

    /// The host name its processes see (`uname -n`), which the records
    /// they write name.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// `root@<hostname>`, as records and messages name its processes.
    pub fn user_at_host(&self) -> String {
        format!(
            "{}@{}",
            maintenance_core::identity::Identity::current().user,
            self.hostname
        )
    }

    /// Its network namespace's name.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Its address inside its namespace.
    pub fn address(&self) -> Ipv4Addr {
        self.inside
    }

    /// Its directory: every run's working directory, holding manage.toml.
    pub fn dir(&self) -> &Path {
        self.scratch.path()
    }

    /// Its local state directory: the markers, the local override.
    pub fn state(&self) -> PathBuf {
        self.scratch.state()
    }

    /// Whether its `OFFLINE` marker is there.
    pub fn has_offline_marker(&self) -> bool {
        self.state().join("OFFLINE").is_file()
    }

    /// `cmd` run on this host: `ip netns exec <netns> unshare --uts`, its
    /// host name set, then `cmd`'s program exec'd as `arg0` (so the pid of
    /// the returned command's process is the program's own), with `cmd`'s
    /// arguments, environment changes and working directory (this host's
    /// directory when it has none).
    pub fn wrap(&self, cmd: &Command, arg0: &str) -> Command {
        let mut out = Command::new("ip");
        out.args(["netns", "exec", &self.netns, "unshare", "--uts", "--"])
            .args(["bash", "-c", "hostname \"$0\" && exec -a \"$1\" \"${@:2}\""])
            .arg(&self.hostname)
            .arg(arg0)
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => out.env(k, v),
                None => out.env_remove(k),
            };
        }
        out.current_dir(cmd.get_current_dir().unwrap_or(self.dir()));
        out.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        out
    }

    /// `BINARY ARGS…` as its site's processes run: in its directory, the
    /// shared site's URL as `MANAGE_DATABASE_URL`, the example site's key.
    fn site_command(&self, exe: &Path, args: &[&str]) -> Command {
        let mut cmd = isolated(Command::new(exe));
        cmd.args(args)
            .current_dir(self.dir())
            .env("MANAGE_DATABASE_URL", &self.url)
            .env("MYSITE_SECRET_KEY", MYSITE_KEY)
            .env("MYSITE_HOLD_DIR", self.dir().join("hold"));
        cmd
    }

    /// Starts `manage ARGS…` on this host.
    pub fn spawn(&self, args: &[&str]) -> Proc {
        let cmd = self.site_command(&self.bins.manage, args);
        Proc::spawn(self.wrap(&cmd, "manage"))
    }

    /// Runs `manage ARGS…` on this host to its end (within the hang guard).
    pub fn run(&self, args: &[&str]) -> Outcome {
        self.spawn(args).finish()
    }

    /// Starts a fixture command that says `started <task-id>` (`sleeper`)
    /// on this host and waits until it has: from then on its task is live.
    pub fn start(&self, args: &[&str]) -> (Proc, String) {
        let mut p = self.spawn(args);
        let line = p.line();
        match line.strip_prefix("started ") {
            Some(id) => (p, id.to_owned()),
            None => panic!(
                "`manage {}` on host {} did not start: {line:?}; {}",
                args.join(" "),
                self.name,
                p.finish()
            ),
        }
    }

    /// Starts `manage offline mirror ARGS…` on this host and waits until
    /// it says what it keeps.
    pub fn mirror(&self, args: &[&str]) -> Proc {
        let mut all = vec!["offline", "mirror"];
        all.extend_from_slice(args);
        let mut p = self.spawn(&all);
        crate::process::lines_until(&mut p, |l| l.contains("keeping the web-server markers"));
        p
    }

    /// Starts `mysite runserver` on this host, on its loopback at
    /// [`MYSITE_PORT`], and waits until it says it serves.
    pub fn serve(&self, args: &[&str]) -> Proc {
        let addr = format!("127.0.0.1:{MYSITE_PORT}");
        let mut all = vec!["runserver", "--addr", &addr];
        all.extend_from_slice(args);
        let cmd = self.site_command(&self.bins.mysite, &all);
        let mut p = Proc::spawn(self.wrap(&cmd, "mysite"));
        let line = p.line();
        assert!(
            line.starts_with("serving http://"),
            "mysite on host {} said {line:?}",
            self.name
        );
        p
    }

    /// Runs `f` on a thread of this process that has entered this host's
    /// network namespace: its sockets are the host's (its loopback, its
    /// servers), whatever the veth's state.
    pub fn inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.netns);
        let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on a descriptor held open for the call; it
                // moves this thread only, which ends after `f`.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// How many TCP connections of this host's processes to the server
    /// are established (its `/proc/net/tcp`, read from inside): proof that
    /// they reach it over the veth.
    pub fn database_connections(&self) -> usize {
        let remote = format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(DB_ADDR.octets()),
            self.db_port
        );
        let table = self.inside(|| {
            std::fs::read_to_string("/proc/thread-self/net/tcp").expect("read /proc/net/tcp")
        });
        table
            .lines()
            .skip(1)
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                // Remote address, and state 01: ESTABLISHED.
                f.get(2) == Some(&remote.as_str()) && f.get(3) == Some(&"01")
            })
            .count()
    }

    /// `METHOD PATH` with `headers` to this host's `port` on its loopback,
    /// from inside the host.
    pub fn request(&self, port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.inside(|| {
            crate::http::raw_request(
                SocketAddr::from(([127, 0, 0, 1], port)),
                None,
                method,
                path,
                headers,
            )
        })
    }

    /// `GET PATH` to this host's mysite.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.request(MYSITE_PORT, "GET", path, headers)
    }

    /// Starts nginx on this host with `http(port)` in its `http {}` block
    /// (see [`Nginx::start`]), its workers as `user`.
    pub fn nginx(
        &self,
        dir: &Path,
        user: Option<(&str, &str)>,
        http: impl Fn(u16) -> String,
    ) -> Nginx {
        Nginx::start_with(dir, user, &|cmd: Command| self.wrap(&cmd, "nginx"), http)
    }

    /// Cuts this host off: its link, on this side, down. Nothing passes
    /// either way; its processes see their connections stall (no reset).
    pub fn cut(&self) {
        ip(&["link", "set", &self.veth, "down"]);
    }

    /// Brings its link back up (the namespace keeps its addresses and its
    /// route).
    pub fn restore(&self) {
        ip(&["link", "set", &self.veth, "up"]);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Whatever still runs in it (a grandchild the test never knew).
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.netns])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Some(pid) = pid.parse().ok().and_then(rustix::process::Pid::from_raw) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
        ip_quiet(&["netns", "del", &self.netns]);
        ip_quiet(&["link", "del", &self.veth]);
    }
}
