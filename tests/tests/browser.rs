//! The operator's drill in a real browser: Debian's headless chromium,
//! driven through chromedriver with W3C WebDriver (JSON over HTTP), against
//! `mysite runserver` (the example site's binary, `e2e-mysite`) on a
//! loopback port, with the site's own `offline` commands run as separate
//! processes.
//!
//! The user logs in; a window scheduled an hour ahead (`offline on --at`)
//! shows on their page as "maintenance is scheduled at …" with the
//! operator's message, and goes once `offline off` cancels it; a
//! read-only window scheduled so (`--at --read-only`) shows as "the site
//! goes read-only for maintenance at …", its forms kept until then; `offline
//! on` waits for them (PENDING) and their page shows the "going offline
//! soon" banner; they log out, `offline on` ends
//! OFFLINE and the browser lands on the maintenance page; `offline on
//! --secret` gives a bypass secret, and visiting the path it prints lets the
//! browser browse the site normally while everyone else is still turned
//! away; `offline off` brings the site back ONLINE, without the banner.
//! Then the read-only tier: `offline on --read-only` makes the site
//! READONLY; a note sent from the page the browser loaded before gets the
//! layer's read-only 503, and the page, reloaded, says why its forms are
//! gone while the user (and any visitor) still reads it.
//!
//! Screenshots of the schedules' banners, the PENDING banner, the
//! maintenance page and the READONLY page and its refused form are saved
//! under the test's target temp directory, and their paths printed.
//!
//! chromium and chromium-driver are required: `scripts/test` installs them.
//! Without them this test fails, saying so; it never skips.
//!
//! As root, chromium needs `--no-sandbox`; it gets
//! `--disable-background-networking` and a fresh profile directory, and a
//! `HOME` inside that directory, so nothing is written elsewhere. Every
//! browser process is found by that directory in its command line and
//! killed on the way out, also when the test fails. The only durations are
//! hang guards.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use manage_tests::{HANG_GUARD, MySite, free_port};
use serde_json::{Value, json};

const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");

/// The bypass secret the operator chooses.
const SECRET: &str = "s3cret";

/// How long a page may take to show what a step expects (a hang guard).
const PAGE_GUARD: Duration = Duration::from_secs(30);

/// The W3C name of an element reference in a JSON answer.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// `name` in a directory of `PATH`, or in `/usr/bin`.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// chromium and chromedriver, or a failure saying how to get them.
fn browser_programs() -> (PathBuf, PathBuf) {
    let chromium = find_program("chromium");
    let driver = find_program("chromedriver");
    match (chromium, driver) {
        (Some(c), Some(d)) => (c, d),
        (c, d) => {
            let missing: Vec<&str> = [
                c.is_none().then_some("chromium"),
                d.is_none().then_some("chromedriver"),
            ]
            .into_iter()
            .flatten()
            .collect();
            panic!(
                "the browser test needs {}, which is not installed: `scripts/test` installs it \
                 (`apt-get install -y chromium chromium-driver`); install it the same way \
                 to run this test",
                missing.join(" and ")
            )
        }
    }
}

/// Polls `probe` until it returns something; fails the test, with the
/// last thing `probe` saw, after `guard`.
#[track_caller]
fn eventually<T>(guard: Duration, what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + guard;
    loop {
        match probe() {
            Ok(t) => return t,
            Err(last) => assert!(
                Instant::now() < deadline,
                "{what}: not within {guard:?} (a hang guard); last seen: {last}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A JSON-over-HTTP client of chromedriver.
struct Driver {
    agent: ureq::Agent,
    base: String,
}

impl Driver {
    fn new(port: u16) -> Driver {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(HANG_GUARD))
            .build();
        Driver {
            agent: ureq::Agent::new_with_config(config),
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// `METHOD PATH` with `body`; the answer's `value`, or the error
    /// chromedriver answered (or the transport's).
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let sent = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            ("POST", body) => self
                .agent
                .post(&url)
                .content_type("application/json")
                .send(body.unwrap_or(&json!({})).to_string()),
            _ => unreachable!("no WebDriver call uses {method}"),
        };
        let mut response = sent.map_err(|e| format!("{method} {path}: {e}"))?;
        let status = response.status();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| format!("{method} {path}: reading the answer: {e}"))?;
        let doc: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{method} {path}: {status}, not JSON ({e}): {text:?}"))?;
        let value = doc.get("value").cloned().unwrap_or(Value::Null);
        if status.is_success() {
            Ok(value)
        } else {
            Err(format!("{method} {path}: {status}: {value}"))
        }
    }
}

/// A child process killed and reaped when dropped (a std `Child` is not).
struct KillOnDrop(Child);

impl KillOnDrop {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// chromedriver and the chromium it starts. Dropping it ends the session
/// and kills every process of the browser: chromedriver by its pid, and
/// each process whose command line names this browser's own directory
/// (chromium's `--user-data-dir`, its crash handler's database under
/// `HOME`); then the directory goes.
struct Browser {
    driver: Driver,
    chromedriver: KillOnDrop,
    session: Option<String>,
    /// The profile (`profile/`), `HOME` (`home/`) and chromedriver's log.
    dir: tempfile::TempDir,
}

impl Browser {
    fn start(chromium: &Path, chromedriver: &Path) -> Browser {
        let dir = tempfile::Builder::new()
            .prefix("manage-browser-")
            .tempdir()
            .expect("a directory for the browser");
        let home = dir.path().join("home");
        let profile = dir.path().join("profile");
        std::fs::create_dir(&home).expect("create the browser's HOME");
        std::fs::create_dir(&profile).expect("create the browser's profile");
        let log = dir.path().join("chromedriver.log");
        // The port is chosen before chromedriver binds it: if another
        // process takes it first, chromedriver exits, and we try another.
        let mut attempts = 0;
        let (child, driver) = loop {
            attempts += 1;
            let port = free_port();
            let out = std::fs::File::create(dir.path().join("chromedriver.out"))
                .expect("create chromedriver's output file");
            let mut child = KillOnDrop(
                Command::new(chromedriver)
                    .arg(format!("--port={port}"))
                    .arg(format!("--log-path={}", log.display()))
                    .env("HOME", &home)
                    .env("XDG_CONFIG_HOME", home.join(".config"))
                    .env("XDG_CACHE_HOME", home.join(".cache"))
                    .stdin(Stdio::null())
                    .stdout(out.try_clone().expect("dup a file"))
                    .stderr(out)
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot run {}: {e}", chromedriver.display())),
            );
            let driver = Driver::new(port);
            let ready = eventually(HANG_GUARD, "chromedriver ready", || {
                if let Some(status) = child.0.try_wait().expect("try_wait on chromedriver") {
                    return Ok(Err(status));
                }
                match driver.call("GET", "/status", None) {
                    Ok(v) if v["ready"] == json!(true) => Ok(Ok(())),
                    Ok(v) => Err(format!("not ready: {v}")),
                    Err(e) => Err(e),
                }
            });
            match ready {
                Ok(()) => break (child, driver),
                Err(status) => {
                    let said = std::fs::read_to_string(dir.path().join("chromedriver.out"))
                        .unwrap_or_default();
                    assert!(
                        attempts < 5,
                        "chromedriver ended ({status}) before it was ready, {attempts} times; \
                         it said: {said}"
                    );
                }
            }
        };
        let mut browser = Browser {
            driver,
            chromedriver: child,
            session: None,
            dir,
        };
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "goog:chromeOptions": {
                        "binary": chromium,
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--disable-background-networking",
                            "--disable-component-update",
                            "--disable-sync",
                            "--disable-default-apps",
                            "--disable-extensions",
                            "--no-first-run",
                            "--no-default-browser-check",
                            "--no-proxy-server",
                            "--window-size=1024,768",
                            format!("--user-data-dir={}", profile.display()),
                        ],
                    },
                },
            },
        });
        let created = browser
            .driver
            .call("POST", "/session", Some(&caps))
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver could not start chromium: {e}\nchromedriver's log:\n{}",
                    browser.log_tail()
                )
            });
        let id = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("a new session without an id: {created}"))
            .to_owned();
        browser.session = Some(id);
        browser
    }

    /// The end of chromedriver's log, for a failure message.
    fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn session_path(&self, tail: &str) -> String {
        let id = self.session.as_deref().expect("a live session");
        format!("/session/{id}{tail}")
    }

    /// A WebDriver command of this session; fails the test on an error.
    #[track_caller]
    fn cmd(&self, method: &str, tail: &str, body: Option<&Value>) -> Value {
        self.try_cmd(method, tail, body)
            .unwrap_or_else(|e| panic!("WebDriver: {e}"))
    }

    fn try_cmd(&self, method: &str, tail: &str, body: Option<&Value>) -> Result<Value, String> {
        self.driver.call(method, &self.session_path(tail), body)
    }

    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(&json!({ "url": url })));
    }

    fn refresh(&self) {
        self.cmd("POST", "/refresh", None);
    }

    fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn source(&self) -> String {
        self.cmd("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The element matching `css`, if there is one.
    fn find(&self, css: &str) -> Option<String> {
        let found = self.try_cmd(
            "POST",
            "/element",
            Some(&json!({ "using": "css selector", "value": css })),
        );
        match found {
            Ok(v) => v[ELEMENT].as_str().map(str::to_owned),
            Err(e) if e.contains("no such element") => None,
            Err(e) => panic!("WebDriver: {e}"),
        }
    }

    /// The text of the element matching `css`, if there is one.
    fn text(&self, css: &str) -> Option<String> {
        let id = self.find(css)?;
        // The page may change between the two calls: a stale element is
        // as good as none.
        match self.try_cmd("GET", &format!("/element/{id}/text"), None) {
            Ok(v) => v.as_str().map(str::to_owned),
            Err(e) if e.contains("stale element") => None,
            Err(e) => panic!("WebDriver: {e}"),
        }
    }

    /// Types `text` into the field matching `css`.
    #[track_caller]
    fn type_into(&self, css: &str, text: &str) {
        let id = self
            .find(css)
            .unwrap_or_else(|| panic!("no {css} on the page: {}", self.source()));
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            Some(&json!({ "text": text })),
        );
    }

    #[track_caller]
    fn click(&self, css: &str) {
        let id = self
            .find(css)
            .unwrap_or_else(|| panic!("no {css} on the page: {}", self.source()));
        self.cmd("POST", &format!("/element/{id}/click"), None);
    }

    /// What the page shows, for failure messages: its URL and source.
    fn describe(&self) -> String {
        format!("{} showing {:?}", self.url(), self.source())
    }

    /// Waits until the page at `url` shows `text` in `css` (reloading it
    /// with `reload` between looks, if given).
    #[track_caller]
    fn wait_for(&self, url: &str, css: &str, text: &str, reload: bool) {
        eventually(
            PAGE_GUARD,
            &format!("{url} showing {text:?} in {css}"),
            || {
                if self.url() == url && self.text(css).is_some_and(|t| t.contains(text)) {
                    return Ok(());
                }
                let seen = self.describe();
                if reload {
                    self.refresh();
                }
                Err(seen)
            },
        );
    }

    /// A screenshot of the page, saved as `name` in a scratch directory of
    /// the target dir, and prints its path.
    fn screenshot(&self, name: &str) {
        let b64 = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("a base64 screenshot"))
            .expect("a screenshot in base64");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "not a PNG screenshot"
        );
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
        std::fs::create_dir_all(&dir).expect("create the screenshot directory");
        let path = dir.join(name);
        std::fs::write(&path, png).expect("save a screenshot");
        eprintln!("screenshot: {}", path.display());
    }

    /// Ends the session: chromedriver closes chromium.
    fn quit(&mut self) -> Result<(), String> {
        match self.session.take() {
            Some(id) => self
                .driver
                .call("DELETE", &format!("/session/{id}"), None)
                .map(drop),
            None => Ok(()),
        }
    }

    /// The processes whose command line names this browser's directory,
    /// chromedriver aside.
    fn processes(&self) -> Vec<i32> {
        let driver = i32::try_from(self.chromedriver.0.id()).unwrap_or(-1);
        let needle = self.dir.path().as_os_str().as_encoded_bytes();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| pid != driver)
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmd| cmd.windows(needle.len()).any(|w| w == needle))
            })
            .filter(|pid| manage_tests::is_alive(pid.unsigned_abs()))
            .collect()
    }

    /// Kills chromedriver and every browser process left; waits (within
    /// the hang guard, without failing) until they are gone.
    fn kill_all(&mut self) {
        self.chromedriver.kill();
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            let left = self.processes();
            if left.is_empty() || Instant::now() >= deadline {
                return;
            }
            for pid in left {
                if let Some(p) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.session.is_some() {
            let _ = self.quit();
        }
        self.kill_all();
    }
}

/// A plain HTTP client without cookies or redirects: what a visitor who
/// is not the test's browser sees.
fn visitor_sees(url: &str) -> (u16, Option<String>) {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .timeout_global(Some(HANG_GUARD))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let response = agent
        .get(url)
        .header("Accept", "text/html")
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (response.status().as_u16(), location)
}

#[test]
fn the_drill_in_a_real_browser() {
    let (chromium, chromedriver) = browser_programs();
    let site = MySite::new(MYSITE);
    let server = site.serve(&[]);
    let base = format!("http://{}", server.addr());
    let home = format!("{base}/");
    let maintenance = format!("{base}/maintenance.html");
    let mut browser = Browser::start(&chromium, &chromedriver);

    // ONLINE: a visitor, then a logged-in user, without a banner.
    browser.goto(&home);
    browser.wait_for(&home, "h1", "mysite", false);
    assert_eq!(
        browser.text("#who").as_deref(),
        Some("You are not logged in."),
        "{}",
        browser.describe()
    );
    browser.click("#login");
    browser.wait_for(&home, "#who", "You are logged in.", false);
    assert!(browser.find("#banner").is_none(), "{}", browser.describe());

    // A window scheduled an hour ahead: the page says when, and why, from
    // its notice on (all of the wait); `offline off` cancels it, and the
    // banner goes.
    let mut scheduled = site.spawn(&[
        "offline",
        "on",
        "--at",
        "+1h",
        "--message",
        "Upgrading the database",
    ]);
    let line = scheduled.line();
    let when = line
        .strip_prefix("Offline scheduled at ")
        .and_then(|rest| rest.split_once(" (in "))
        .map(|(when, _)| when.to_owned())
        .unwrap_or_else(|| panic!("`offline on --at` did not schedule: {line:?}"));
    browser.refresh();
    browser.wait_for(
        &home,
        "#banner",
        &format!("Maintenance is scheduled at {when} (in "),
        true,
    );
    let banner = browser.text("#banner").unwrap_or_default();
    assert!(
        banner.ends_with("Upgrading the database"),
        "{}",
        browser.describe()
    );
    browser.screenshot("scheduled.png");
    let off = site.run(&["offline", "off"]);
    assert!(off.success(), "offline off: {off}");
    let cancelled = scheduled.finish();
    assert_eq!(
        cancelled.code(),
        Some(maintenance_core::exit::REFUSED.into()),
        "the waiter, cancelled: {cancelled}"
    );
    eventually(PAGE_GUARD, "the page without the schedule's banner", || {
        browser.refresh();
        if browser.url() == home && browser.find("#banner").is_none() {
            Ok(())
        } else {
            Err(browser.describe())
        }
    });

    // A read-only window scheduled ahead says so, and why; the forms stay
    // until its time (writes still pass). `offline off` cancels it.
    let mut scheduled = site.spawn(&[
        "offline",
        "on",
        "--at",
        "+1h",
        "--read-only",
        "--message",
        "Re-indexing",
    ]);
    let line = scheduled.line();
    let when = line
        .strip_prefix("Read-only scheduled at ")
        .and_then(|rest| rest.split_once(" (in "))
        .map(|(when, _)| when.to_owned())
        .unwrap_or_else(|| panic!("`offline on --at --read-only` did not schedule: {line:?}"));
    browser.refresh();
    browser.wait_for(
        &home,
        "#banner",
        &format!("The site goes read-only for maintenance at {when} (in "),
        true,
    );
    let banner = browser.text("#banner").unwrap_or_default();
    assert!(banner.ends_with("Re-indexing"), "{}", browser.describe());
    assert!(
        browser.find("#note-form").is_some(),
        "the forms stay until its time: {}",
        browser.describe()
    );
    browser.screenshot("scheduled-read-only.png");
    let off = site.run(&["offline", "off"]);
    assert!(off.success(), "offline off: {off}");
    let cancelled = scheduled.finish();
    assert_eq!(
        cancelled.code(),
        Some(maintenance_core::exit::REFUSED.into()),
        "the waiter, cancelled: {cancelled}"
    );
    eventually(PAGE_GUARD, "the page without the schedule's banner", || {
        browser.refresh();
        if browser.url() == home && browser.find("#banner").is_none() {
            Ok(())
        } else {
            Err(browser.describe())
        }
    });

    // PENDING: `offline on` waits for the browser's session, whose page
    // shows the banner.
    let mut on = site.spawn(&["offline", "on", "--timeout", "60"]);
    let waiting = on.line();
    assert!(
        waiting.starts_with("Active sessions detected"),
        "`offline on` does not wait for the logged-in browser: {waiting:?}"
    );
    browser.refresh();
    browser.wait_for(&home, "#banner", "going offline soon", true);
    assert_eq!(
        browser.text("#who").as_deref(),
        Some("You are logged in."),
        "{}",
        browser.describe()
    );
    browser.screenshot("pending.png");
    assert!(
        on.is_running(),
        "`offline on` stopped waiting: {}",
        on.finish()
    );
    // Anyone else is turned away already.
    assert_eq!(
        visitor_sees(&home),
        (303, Some("/maintenance.html".to_owned())),
        "a visitor without a session during PENDING"
    );

    // The user logs out: the last session is gone, `offline on` ends
    // OFFLINE, and the browser is shown the maintenance page.
    browser.click("#logout");
    let went = on.finish();
    assert!(went.success(), "`offline on` after the logout: {went}");
    assert!(
        went.stdout.iter().any(|l| l.starts_with("Status: OFFLINE")),
        "{went}"
    );
    browser.goto(&home);
    browser.wait_for(&maintenance, "#maintenance", "Down for maintenance", false);
    browser.screenshot("maintenance.png");
    browser.goto(&home);
    browser.wait_for(&maintenance, "#maintenance", "Down for maintenance", false);

    // Already OFFLINE, `offline on --secret` only sets the secret, and says
    // where to use it.
    let secret = site.run(&["offline", "on", "--secret", SECRET]);
    assert!(secret.success(), "offline on --secret: {secret}");
    let bypass = secret
        .stdout
        .iter()
        .find_map(|l| l.strip_prefix("Bypass: visit "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no Bypass line: {secret}"))
        .to_owned();
    assert_eq!(bypass, format!("/_maintenance/bypass/{SECRET}"), "{secret}");

    // The bypass: the browser browses the site normally, logs in too,
    // while a visitor is still turned away. The layer sees the new secret
    // within its refresh interval; until then the bypass path is turned
    // away like any other page, so the browser visits it until it leads in.
    eventually(PAGE_GUARD, "the bypass path leading to the site", || {
        browser.goto(&format!("{base}{bypass}"));
        if browser.url() == home && browser.text("h1").as_deref() == Some("mysite") {
            Ok(())
        } else {
            Err(browser.describe())
        }
    });
    browser.wait_for(&home, "#banner", "browsing during maintenance", false);
    browser.click("#login");
    browser.wait_for(&home, "#who", "You are logged in.", false);
    browser.goto(&home);
    browser.wait_for(&home, "#who", "You are logged in.", false);
    assert_eq!(
        visitor_sees(&home),
        (303, Some("/maintenance.html".to_owned())),
        "a visitor without the bypass cookie during OFFLINE"
    );

    // ONLINE again: the page shows without any banner.
    let off = site.run(&["offline", "off"]);
    assert!(off.success(), "offline off: {off}");
    assert!(
        off.stdout.iter().any(|l| l.starts_with("Status: ONLINE")),
        "{off}"
    );
    eventually(PAGE_GUARD, "the page without the banner", || {
        browser.refresh();
        if browser.url() == home
            && browser.find("#banner").is_none()
            && browser.text("h1").as_deref() == Some("mysite")
        {
            Ok(())
        } else {
            Err(browser.describe())
        }
    });
    assert_eq!(
        browser.text("#who").as_deref(),
        Some("You are logged in."),
        "{}",
        browser.describe()
    );
    assert_eq!(visitor_sees(&home).0, 200, "a visitor, ONLINE again");

    // READONLY: the page loaded while ONLINE still offers the note form;
    // what it sends once the site is read-only gets the layer's 503, with
    // the operator's message.
    browser.type_into("#note-text", "left while online");
    browser.click("#note");
    browser.wait_for(&home, "li.note", "left while online", false);
    browser.type_into("#note-text", "sent too late");
    let ro = site.run(&[
        "offline",
        "on",
        "--read-only",
        "--message",
        "Moving to a new database",
    ]);
    assert!(ro.success(), "offline on --read-only: {ro}");
    assert!(
        ro.stdout.iter().any(|l| l.starts_with("Status: READONLY")),
        "{ro}"
    );
    browser.click("#note");
    let notes = format!("{base}/notes");
    browser.wait_for(&notes, "h1", "Read-only for maintenance", false);
    assert!(
        browser.source().contains("Moving to a new database"),
        "{}",
        browser.describe()
    );
    browser.screenshot("read-only-refused.png");
    // Reloaded, the page reads on: the user is still logged in, the banner
    // says why, and no form is offered.
    browser.goto(&home);
    browser.wait_for(&home, "#banner", "read-only for maintenance", true);
    assert_eq!(
        browser.text("#who").as_deref(),
        Some("You are logged in."),
        "{}",
        browser.describe()
    );
    for form in ["#logout", "#note-form", "#login"] {
        assert!(
            browser.find(form).is_none(),
            "{form}: {}",
            browser.describe()
        );
    }
    assert!(
        browser
            .text("#notes")
            .is_some_and(|t| t.contains("left while online") && !t.contains("sent too late")),
        "{}",
        browser.describe()
    );
    browser.screenshot("read-only.png");
    assert_eq!(
        visitor_sees(&home).0,
        200,
        "a visitor reads during READONLY"
    );
    let off = site.run(&["offline", "off"]);
    assert!(off.success(), "offline off after READONLY: {off}");
    eventually(PAGE_GUARD, "the forms back", || {
        browser.refresh();
        if browser.find("#note-form").is_some() && browser.find("#banner").is_none() {
            Ok(())
        } else {
            Err(browser.describe())
        }
    });

    // The session ends: chromedriver closes chromium, all of it.
    browser.quit().expect("end the WebDriver session");
    eventually(
        HANG_GUARD,
        "chromium gone after the session ended",
        || match browser.processes() {
            left if left.is_empty() => Ok(()),
            left => Err(format!("still running: {left:?}")),
        },
    );
    drop(browser);

    // The server stops gracefully on SIGTERM, with the runner's code for
    // an interrupted command.
    let stopped = server.stop();
    assert_eq!(
        stopped.code(),
        Some(i32::from(maintenance_core::exit::INTERRUPTED)),
        "runserver after SIGTERM: {stopped}"
    );
    assert!(
        stopped
            .stdout
            .iter()
            .any(|l| l.starts_with("stopped serving")),
        "{stopped}"
    );
}
