//! The web-server rule of examples/mysite/nginx/mysite.conf, with a real
//! nginx (Debian's `/usr/sbin/nginx`; `scripts/test` installs it) started
//! by the test on a loopback port in front of a real `mysite runserver`: ONLINE
//! and PENDING the app answers; OFFLINE nginx answers 503 with its static
//! maintenance page without reaching the app — except for the bypass path,
//! bypass-cookie holders, the health and static prefixes and allow-listed
//! addresses, which it passes to the app, whose layer decides.
//!
//! nginx's workers run as an unprivileged user when the test runs as root,
//! as on a real server: the test checks they did drop root, and that
//! search permission on the directories is all they need to see the
//! marker.
//!
//! Clients bind their sockets to chosen loopback addresses (on Linux all of
//! 127.0.0.0/8 is local): 127.0.0.2 is a visitor, 127.0.0.3 is
//! allow-listed (in nginx's `geo` and the app's `--allow`); nginx reaches
//! the app from 127.0.0.1, the app's only trusted proxy.
//!
//! The read-only tier through the same nginx: its `READONLY` marker lets
//! nginx answer every unsafe request with a 503 and its static read-only
//! page from the moment the drain begins, while reads — a visitor's, a
//! logged-in user's — reach the app, whose page hides its forms; the app's
//! own layer refuses what reaches it directly; READONLY goes on to OFFLINE
//! and back ONLINE.
//!
//! No wall-clock assertion: every wait is a hang guard.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use maintenance_core::session::SessionKey;
use manage_tests::{MySite, Nginx, Reply, chmod, poll_until, uid_of};

const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");
/// The rule under test, as documented.
const SITE_CONF: &str = include_str!("../../examples/mysite/nginx/mysite.conf");
/// nginx's maintenance page.
const PAGE: &str = include_str!("../../examples/mysite/nginx/maintenance.html");
/// nginx's read-only page.
const READ_ONLY_PAGE: &str = include_str!("../../examples/mysite/nginx/read-only.html");

const VISITOR: &str = "127.0.0.2";
const ALLOWED: &str = "127.0.0.3";

/// The unprivileged user (and its group) nginx's workers run as when the
/// test runs as root: `www-data` (Debian's nginx user), else `nobody`.
fn worker_user() -> Option<(String, String, u32)> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    for user in ["www-data", "nobody"] {
        let id = |flag: &str| {
            Command::new("id")
                .args([flag, user])
                .stderr(Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        if let (Some(uid), Some(group)) = (id("-u"), id("-gn")) {
            return Some((user.to_owned(), group, uid.parse().unwrap()));
        }
    }
    panic!("neither www-data nor nobody exists to run nginx's workers as");
}

/// Starts nginx in `dir` (which must be reachable by the workers' user)
/// with mysite.conf, its placeholders filled in, in front of the app at
/// `upstream`.
fn start_nginx(
    dir: &Path,
    upstream: SocketAddr,
    state: &Path,
    user: Option<&(String, String, u32)>,
) -> Nginx {
    let root = dir.join("www");
    std::fs::create_dir_all(&root).unwrap();
    chmod(dir, 0o755);
    chmod(&root, 0o755);
    for (name, page) in [
        ("maintenance.html", PAGE),
        ("read-only.html", READ_ONLY_PAGE),
    ] {
        std::fs::write(root.join(name), page).unwrap();
        chmod(&root.join(name), 0o644);
    }
    Nginx::start(
        dir,
        user.map(|(u, g, _)| (u.as_str(), g.as_str())),
        |port| {
            let site = SITE_CONF
                .replace("__LISTEN_PORT__", &port.to_string())
                .replace("__UPSTREAM_PORT__", &upstream.port().to_string())
                .replace("__STATE_DIR__", state.to_str().unwrap())
                .replace("__ROOT__", root.to_str().unwrap())
                .replace("__ALLOWED__", ALLOWED);
            assert!(!site.contains("__"), "a placeholder left: {site}");
            format!(
                "types {{ text/html html; text/css css; }}\n\
             default_type application/octet-stream;\n{site}"
            )
        },
    )
}

/// nginx's own 503: the static maintenance page, marked as nginx's, not
/// cached — and nothing of the app's.
fn assert_nginx_maintenance(r: &Reply, context: &str) {
    assert_eq!(r.status, 503, "{context}: not nginx's 503: {r}");
    assert_eq!(r.header("x-maintenance"), Some("nginx"), "{context}: {r}");
    assert_eq!(r.all("cache-control"), ["no-store"], "{context}: {r}");
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/html")),
        "{context}: {r}"
    );
    assert!(
        r.body.contains("id=\"nginx-maintenance\""),
        "{context}: {r}"
    );
    assert!(!r.body.contains("<h1>mysite</h1>"), "{context}: {r}");
    assert!(r.set_cookie("sessionid").is_none(), "{context}: {r}");
}

/// nginx's own 503 for a write while READONLY: the static read-only page.
fn assert_nginx_read_only(r: &Reply, context: &str) {
    assert_eq!(r.status, 503, "{context}: not nginx's 503: {r}");
    assert_eq!(r.header("x-maintenance"), Some("nginx"), "{context}: {r}");
    assert_eq!(r.all("cache-control"), ["no-store"], "{context}: {r}");
    assert!(r.body.contains("id=\"nginx-read-only\""), "{context}: {r}");
    assert!(!r.body.contains("<h1>mysite</h1>"), "{context}: {r}");
}

/// The app's home page while writes are refused: the banner says so, and
/// no form is offered.
fn assert_read_only_page(r: &Reply, context: &str) {
    r.assert_home_page(context);
    assert_from_app(r, context);
    assert!(r.body.contains("read-only"), "{context}: no banner: {r}");
    for form in ["id=\"login\"", "id=\"logout\"", "id=\"note-form\""] {
        assert!(!r.body.contains(form), "{context}: {form} offered: {r}");
    }
}

/// A response from the app, passed through by nginx.
fn assert_from_app(r: &Reply, context: &str) {
    assert!(
        r.header("x-maintenance").is_none(),
        "{context}: nginx answered itself: {r}"
    );
    assert!(r.status != 503 && r.status != 502, "{context}: {r}");
}

#[test]
fn nginx_rule_in_front_of_mysite() {
    if manage_tests::file_backend_only("nginx reads the OFFLINE marker in the state directory") {
        return;
    }
    let site = MySite::new(MYSITE);
    // The state exists before nginx looks for its marker.
    assert_eq!(site.status(), "Status: ONLINE - Active sessions: 0");
    let app = site.serve(&["--trust-proxy", "127.0.0.1", "--allow", ALLOWED]);
    let user = worker_user();
    let nginx = start_nginx(
        &site.dir().join("nginx"),
        app.addr(),
        &site.state(),
        user.as_ref(),
    );

    // As root, the workers dropped root: seeing the marker below is what a
    // real deployment's workers can do.
    match &user {
        Some((name, _, uid)) => {
            // Read once each worker has dropped to its user (forked as root,
            // it switches a moment later).
            for w in nginx.workers_as(*uid) {
                assert_eq!(
                    uid_of(w),
                    Some(*uid),
                    "nginx's worker {w} does not run as {name}"
                );
            }
        }
        None => eprintln!(
            "NOTE: not root: nginx's workers run as this user; the permission checks are skipped"
        ),
    }

    // ONLINE: the app answers through nginx.
    let r = nginx.get(VISITOR, "/", &[]);
    r.assert_home_page("ONLINE through nginx");
    assert_from_app(&r, "ONLINE");
    assert!(!r.has_banner(), "{r}");
    let r = nginx.get(VISITOR, "/healthz", &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"), "{r}");
    // The maintenance page is nginx's static file, in any mode.
    let r = nginx.get(VISITOR, "/maintenance.html", &[]);
    assert_eq!(r.status, 200, "{r}");
    assert!(r.body.contains("id=\"nginx-maintenance\""), "{r}");

    // PENDING has no marker: nginx passes everything, the app's layer
    // decides (the logged-in user works, a new visitor is redirected).
    let login = nginx.request(VISITOR, "POST", "/login", &[]);
    assert_eq!(login.status, 303, "login through nginx: {login}");
    let cookie = format!("sessionid={}", login.cookie_value("sessionid").unwrap());
    let logged_in = [("Cookie", cookie.as_str())];
    let waiter = site.go_pending(&["--secret", "s3cret"]);
    let r = poll_until("PENDING at the app", || {
        Some(nginx.get(VISITOR, "/", &[])).filter(|r| r.status != 200)
    });
    assert_from_app(&r, "PENDING, visitor");
    assert_eq!(r.status, 303, "the app's redirect: {r}");
    assert_eq!(r.header("location"), Some("/maintenance.html"), "{r}");
    let r = nginx.get(VISITOR, "/", &logged_in);
    r.assert_home_page("PENDING, logged in, through nginx");
    assert!(r.has_banner(), "{r}");

    // Logging out through nginx ends the wait: OFFLINE, the marker is
    // there, and nginx — which stats it on every request — answers at once.
    let r = nginx.request(VISITOR, "POST", "/logout", &logged_in);
    assert_eq!(r.status, 303, "logout through nginx: {r}");
    let out = waiter.finish();
    assert_eq!(out.code(), Some(0), "`offline on`: {out}");
    assert!(site.state().join("OFFLINE").exists(), "no marker");

    for (path, method) in [("/", "GET"), ("/api/status", "GET"), ("/login", "POST")] {
        let r = nginx.request(VISITOR, method, path, &[]);
        assert_nginx_maintenance(&r, &format!("OFFLINE, {method} {path}"));
    }
    assert_nginx_maintenance(&nginx.get(VISITOR, "/", &logged_in), "OFFLINE, former user");
    // The app's own layer would have redirected (303), not answered 503
    // with nginx's page: the 503 above is nginx's alone. (The app sees
    // OFFLINE within its refresh interval; nginx saw the marker at once.)
    app.get_until("OFFLINE at the app", "/api/status", &[], |r| {
        r.status == 503 && r.json()["mode"] == "OFFLINE"
    });
    let direct = app.get("/", &[]);
    assert_eq!(direct.status, 303, "the app's own answer: {direct}");
    assert!(direct.header("x-maintenance").is_none(), "{direct}");
    // A claimed address is not an address: geo uses the peer's.
    for h in ["X-Forwarded-For", "X-Real-IP"] {
        assert_nginx_maintenance(
            &nginx.get(VISITOR, "/", &[(h, ALLOWED)]),
            &format!("spoofed {h}"),
        );
    }

    // What nginx passes while OFFLINE.
    let r = nginx.get(VISITOR, "/healthz", &[]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "ok\n"),
        "health check: {r}"
    );
    let r = nginx.get(VISITOR, "/static/site.css", &[]);
    assert_from_app(&r, "static prefix");
    assert_eq!(
        r.status, 404,
        "the app's answer for a missing static file: {r}"
    );
    let r = nginx.get(VISITOR, "/maintenance.html?from=/", &[]);
    assert_eq!(r.status, 200, "{r}");
    assert!(r.body.contains("id=\"nginx-maintenance\""), "{r}");

    // The allow-listed address reaches the app, which sees it through
    // X-Forwarded-For from nginx and lets it through too.
    let r = nginx.get(ALLOWED, "/", &[]);
    r.assert_home_page("allow-listed, OFFLINE, through nginx");
    assert!(
        r.body.contains("You are browsing during maintenance"),
        "{r}"
    );
    let r = nginx.get(ALLOWED, "/api/status", &[]);
    assert_eq!(
        (r.status, r.json()["mode"].as_str()),
        (200, Some("OFFLINE")),
        "{r}"
    );

    // The bypass path reaches the app, which sets the cookie; its holder
    // browses through nginx.
    let r = nginx.get(VISITOR, "/_maintenance/bypass/s3cret", &[]);
    assert_from_app(&r, "bypass path");
    assert_eq!(r.status, 303, "{r}");
    let bypass = format!("manage_bypass={}", r.cookie_value("manage_bypass").unwrap());
    let r = nginx.get(VISITOR, "/", &[("Cookie", bypass.as_str())]);
    r.assert_home_page("bypass cookie, OFFLINE, through nginx");
    assert!(
        r.body.contains("You are browsing during maintenance"),
        "{r}"
    );
    // nginx cannot check a bypass cookie and passes any: the app's layer
    // turns a forged one away — also with a claimed allowed address, since
    // the app believes only the hop nginx added.
    let forged = "manage_bypass=99999999999.00";
    for headers in [
        vec![("Cookie", forged)],
        vec![("Cookie", forged), ("X-Forwarded-For", ALLOWED)],
    ] {
        let r = nginx.get(VISITOR, "/", &headers);
        assert_from_app(&r, "forged bypass cookie");
        assert_eq!(r.status, 303, "the app's layer turns it away: {r}");
        assert!(!r.body.contains("<h1>mysite</h1>"), "{r}");
    }

    // Permissions: the workers only stat the marker. Search (x) on the
    // directories is enough, read on the marker is not needed; without
    // search on the state directory they cannot see it and pass the
    // request to the app, whose layer still turns it away.
    if user.is_some() {
        let state = site.state();
        let marker = state.join("OFFLINE");
        chmod(&state, 0o711);
        chmod(&marker, 0o000);
        assert_nginx_maintenance(&nginx.get(VISITOR, "/", &[]), "state 0711, marker 0000");
        chmod(&state, 0o700);
        let r = nginx.get(VISITOR, "/", &[]);
        assert_from_app(&r, "state 0700");
        assert_eq!(r.status, 303, "the app's layer, when nginx cannot see: {r}");
        assert!(
            nginx.error_log().contains("Permission denied"),
            "nginx says why: {}",
            nginx.error_log()
        );
        chmod(&state, 0o711);
        chmod(&marker, 0o600);
        assert_nginx_maintenance(&nginx.get(VISITOR, "/", &[]), "permissions restored");
    }

    // Back ONLINE: the marker is gone, nginx passes at once, and the app
    // serves once its snapshot has the change.
    site.run_ok(&["offline", "off"]);
    assert!(!site.state().join("OFFLINE").exists(), "the marker stayed");
    assert_from_app(&nginx.get(VISITOR, "/", &[]), "right after `offline off`");
    let r = poll_until("ONLINE through nginx", || {
        Some(nginx.get(VISITOR, "/", &[])).filter(Reply::is_home_page)
    });
    assert!(!r.has_banner(), "{r}");

    // The proof that nginx answers OFFLINE alone: with the app gone, its
    // maintenance page is still served, while what it passes fails (502).
    site.run_ok(&["offline", "on", "--force"]);
    drop(app);
    assert_nginx_maintenance(&nginx.get(VISITOR, "/", &[]), "OFFLINE, the app stopped");
    let r = nginx.get(VISITOR, "/healthz", &[]);
    assert_eq!(r.status, 502, "the health check needs the app: {r}");
}

#[test]
fn nginx_refuses_writes_while_read_only_and_passes_reads_to_mysite() {
    if manage_tests::file_backend_only("nginx reads the OFFLINE marker in the state directory") {
        return;
    }
    let site = MySite::new(MYSITE);
    assert_eq!(site.status(), "Status: ONLINE - Active sessions: 0");
    let app = site.serve(&["--trust-proxy", "127.0.0.1", "--allow", ALLOWED]);
    let user = worker_user();
    let nginx = start_nginx(
        &site.dir().join("nginx"),
        app.addr(),
        &site.state(),
        user.as_ref(),
    );
    let login = nginx.request(VISITOR, "POST", "/login", &[]);
    assert_eq!(login.status, 303, "login through nginx: {login}");
    let id = login.cookie_value("sessionid").unwrap();
    let cookie = format!("sessionid={id}");
    let logged_in = [("Cookie", cookie.as_str())];

    // A note sent while ONLINE, still being saved when the drain begins:
    // the app's layer counts it, and the drain waits for it.
    let addr = nginx.addr();
    let held = std::thread::spawn(move || {
        manage_tests::raw_form(
            addr,
            Some(VISITOR.parse().unwrap()),
            "POST",
            "/notes",
            &[],
            "text=written+before&hold=w1",
        )
    });
    site.wait_held("w1");
    let mut on = site.spawn(&[
        "offline",
        "on",
        "--read-only",
        "--timeout",
        "300",
        "--message",
        "Upgrading the database",
    ]);
    let line = on.line();
    assert!(
        line.starts_with("Writes in progress detected"),
        "`offline on --read-only` does not wait for the write in flight: {line:?}"
    );
    let json = site.run(&["offline", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&json.stdout.join("\n")).unwrap();
    assert_eq!(status["mode"], "READONLY_PENDING", "{json}");
    assert_eq!(
        status["writes_in_flight"].as_array().map(Vec::len),
        Some(1),
        "{json}"
    );
    assert_eq!(
        site.run(&["offline", "status", "--exit-code"]).code(),
        Some(5)
    );
    // The marker is there from the start of the drain: nginx refuses new
    // writes itself, for everyone; reads reach the app.
    assert!(site.state().join("READONLY").exists(), "no READONLY marker");
    assert!(
        !site.state().join("OFFLINE").exists(),
        "an OFFLINE marker while draining"
    );
    let check_read_only = |phase: &str| {
        for (from, headers) in [
            (VISITOR, &[][..]),
            (VISITOR, &logged_in[..]),
            (ALLOWED, &[][..]),
        ] {
            let what = format!("{phase}: POST /notes from {from} {headers:?}");
            let r = nginx.send_form(from, "POST", "/notes", headers, "text=refused");
            assert_nginx_read_only(&r, &what);
        }
        for method in ["PUT", "PATCH", "DELETE"] {
            let r = nginx.send_form(VISITOR, method, "/notes", &[], "");
            assert_nginx_read_only(&r, &format!("{phase}: {method}"));
        }
        assert_nginx_read_only(
            &nginx.send_form(VISITOR, "POST", "/logout", &logged_in, ""),
            &format!("{phase}: logout"),
        );
        let r = nginx.get(VISITOR, "/healthz", &[]);
        assert_eq!((r.status, r.body.as_str()), (200, "ok\n"), "{phase}: {r}");
    };
    let r = poll_until("the app's page read-only", || {
        Some(nginx.get(VISITOR, "/", &[])).filter(|r| r.body.contains("read-only"))
    });
    assert_read_only_page(&r, "READONLY_PENDING, visitor");
    let r = nginx.get(VISITOR, "/", &logged_in);
    assert_read_only_page(&r, "READONLY_PENDING, logged in");
    assert!(r.body.contains("You are logged in."), "{r}");
    check_read_only("READONLY_PENDING");
    assert!(
        on.is_running(),
        "READONLY before the write in flight ended: {}",
        on.finish()
    );

    // The held note is saved; then the site is READONLY.
    site.release("w1");
    let saved = held.join().unwrap();
    assert_eq!(
        saved.status, 303,
        "the write let in before the drain: {saved}"
    );
    let out = on.finish();
    assert_eq!(out.code(), Some(0), "`offline on --read-only`: {out}");
    assert_eq!(
        out.stdout.last().map(String::as_str),
        Some("Status: READONLY - Active sessions: 1"),
        "the logged-in session reads on: {out}"
    );
    assert_eq!(
        site.run(&["offline", "status", "--exit-code"]).code(),
        Some(6)
    );
    assert!(site.state().join("READONLY").exists() && site.state().join("OFFLINE").exists());
    let r = nginx.get(VISITOR, "/", &logged_in);
    assert_read_only_page(&r, "READONLY, logged in");
    assert!(
        r.body.contains("written before"),
        "the held note was saved: {r}"
    );
    assert!(
        r.body.contains("Upgrading the database"),
        "the banner's message: {r}"
    );
    assert_read_only_page(&nginx.get(VISITOR, "/", &[]), "READONLY, visitor");
    check_read_only("READONLY");
    // What reaches the app directly meets its own layer: a 503 too.
    let direct = app.post_form("/notes", &[], "text=direct");
    assert_eq!(direct.status, 503, "the app's own answer: {direct}");
    assert!(direct.header("x-maintenance").is_none(), "{direct}");
    assert_eq!(
        direct.header("retry-after"),
        None,
        "no retry-after was given: {direct}"
    );
    assert!(direct.body.contains("Upgrading the database"), "{direct}");
    let api = app.post_form("/api/notes", &[("Accept", "application/json")], "");
    assert_eq!(
        (api.status, api.json()["error"].as_str()),
        (503, Some("read_only")),
        "{api}"
    );

    // On to OFFLINE: PENDING from READONLY, held by the logged-in session,
    // with writes still refused.
    let waiter = site.go_pending(&[]);
    let r = poll_until("PENDING at the app", || {
        Some(nginx.get(VISITOR, "/", &[])).filter(|r| r.status == 303)
    });
    assert_from_app(&r, "PENDING from READONLY, visitor");
    let r = nginx.get(VISITOR, "/", &logged_in);
    assert_read_only_page(&r, "PENDING from READONLY, logged in");
    assert!(r.body.contains("going offline soon"), "{r}");
    check_read_only("PENDING from READONLY");
    // Its form is refused, so the user cannot log out: the operator ends
    // the session (or gives `--grace`).
    let b = maintenance_core::backend::open(
        &maintenance_core::Config::with_state_dir(site.state()),
        maintenance_core::SystemClock::shared(),
    )
    .unwrap();
    b.end_session(&SessionKey::of(id.as_bytes())).unwrap();
    let out = waiter.finish();
    assert_eq!(out.code(), Some(0), "`offline on` from READONLY: {out}");
    assert!(
        !site.state().join("READONLY").exists(),
        "READONLY's marker stayed"
    );
    for (method, path) in [("GET", "/"), ("POST", "/notes")] {
        let r = nginx.request(VISITOR, method, path, &[]);
        assert_nginx_maintenance(&r, &format!("OFFLINE, {method} {path}"));
    }

    // ONLINE: everything passes again.
    site.run_ok(&["offline", "off"]);
    assert!(!site.state().join("OFFLINE").exists());
    let r = poll_until("ONLINE at the app", || {
        // Saved: a 303 home (the layer's OFFLINE 303 leads to the
        // maintenance page instead).
        Some(nginx.send_form(VISITOR, "POST", "/notes", &[], "text=back"))
            .filter(|r| r.status == 303 && r.header("location") == Some("/"))
    });
    assert_from_app(&r, "ONLINE, a note");
    let r = nginx.get(VISITOR, "/", &[]);
    assert!(
        r.body.contains("back") && r.body.contains("id=\"note-form\""),
        "{r}"
    );
}

/// On a site whose state is shared (PostgreSQL), the same rule, unchanged,
/// in front of a host whose markers `offline mirror` keeps in its local
/// state directory: nginx answers OFFLINE itself once another process
/// takes the site offline, and passes to the app again once it is back;
/// `offline on --local --force` without the database makes it answer
/// OFFLINE too, and `off --local` takes that back.
#[test]
fn nginx_rule_on_a_shared_site_follows_the_mirror_and_the_local_override() {
    let Some(url) = manage_tests::test_database_url() else {
        return;
    };
    let site = MySite::on_postgres(MYSITE, &url, "state_dir = \"state\"");
    let app = site.serve(&["--trust-proxy", "127.0.0.1", "--allow", ALLOWED]);
    let mut mirror = manage_tests::Proc::spawn(site.command(&["offline", "mirror"]));
    assert!(mirror.line().contains("keeping the web-server markers"));
    let user = worker_user();
    let nginx = start_nginx(
        &site.dir().join("nginx"),
        app.addr(),
        &site.state(),
        user.as_ref(),
    );
    let through_app = |what: &str| {
        poll_until(what, || {
            let r = nginx.get(VISITOR, "/", &[]);
            (r.header("x-maintenance").is_none() && r.status == 200).then_some(())
        })
    };
    let by_nginx = |what: &str| {
        let r = poll_until(what, || {
            let r = nginx.get(VISITOR, "/", &[]);
            (r.header("x-maintenance") == Some("nginx")).then_some(r)
        });
        assert_nginx_maintenance(&r, what);
    };
    through_app("ONLINE through nginx");
    assert!(site.run(&["offline", "on", "--force"]).success());
    by_nginx("OFFLINE answered by nginx");
    assert!(site.run(&["offline", "off"]).success());
    through_app("ONLINE again through nginx");

    let local = |args: &[&str]| {
        let mut cmd = site.command(args);
        cmd.env(
            "MANAGE_DATABASE_URL",
            "postgres://manage:x@127.0.0.1:1/postgres?sslmode=disable",
        );
        manage_tests::Proc::spawn(cmd).finish()
    };
    let out = local(&["offline", "on", "--local", "--force"]);
    assert!(out.success(), "{out}");
    by_nginx("a local override answered by nginx");
    let out = local(&["offline", "off", "--local"]);
    assert!(out.success(), "{out}");
    through_app("the override taken back");
}
