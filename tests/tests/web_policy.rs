//! The maintenance layer's policy through a real `mysite runserver` on
//! 127.0.0.1 and a real HTTP client that follows no redirect, with the site
//! driven by the real operator CLI (`mysite offline …`) in other processes:
//! ONLINE, PENDING and OFFLINE, as redirects and as 503s, JSON for API
//! clients, the maintenance page without a loop, health checks, logout and
//! session expiry ending a wait, hostile cookies, and the snapshot seeing
//! what other processes change.
//!
//! No wall-clock assertion: every wait is a hang guard.

#![allow(clippy::unwrap_used)]

use manage_tests::{MySite, Reply, Server, TurnedAway, raw_exchange};

const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");

/// The `Cookie` header of a logged-in user.
fn session_cookie(login: &Reply) -> String {
    let id = login
        .cookie_value("sessionid")
        .unwrap_or_else(|| panic!("login set no session cookie: {login}"));
    assert!(!id.is_empty(), "empty session id: {login}");
    format!("sessionid={id}")
}

/// `POST /login`, checked: a 303 home with an HttpOnly session cookie.
fn login(server: &Server) -> String {
    let r = server.post("/login", &[]);
    assert_eq!(r.status, 303, "login: {r}");
    assert_eq!(r.header("location"), Some("/"), "login: {r}");
    let set = r.set_cookie("sessionid").unwrap();
    assert!(set.contains("HttpOnly"), "login cookie: {r}");
    session_cookie(&r)
}

/// Waits until the server turns an anonymous visitor away: it has seen the
/// mode change (PENDING or OFFLINE) that another process made.
fn wait_turned_away(server: &Server) {
    server.get_until("turning a new visitor away", "/", &[], |r| r.status != 200);
}

/// Waits until the server's snapshot says OFFLINE (its JSON answer to an
/// API client names the mode).
fn wait_offline(server: &Server) {
    server.get_until("OFFLINE at the server", "/api/status", &[], |r| {
        r.status == 503 && r.json()["mode"] == "OFFLINE"
    });
}

/// Checks what always passes, whatever the mode: the maintenance page
/// (with and without a query: no loop), the health check, the static
/// prefix.
fn assert_always_passes(server: &Server, cookie: &[(&str, &str)], context: &str) {
    for path in ["/maintenance.html", "/maintenance.html?next=/"] {
        let r = server.get(path, cookie);
        assert_eq!(r.status, 200, "{context}: {path}: {r}");
        assert!(
            r.body.contains("id=\"maintenance\""),
            "{context}: {path} is not the maintenance page: {r}"
        );
        assert!(r.header("location").is_none(), "{context}: {path}: {r}");
    }
    let r = server.get("/healthz", cookie);
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"), "{context}: {r}");
    // The app has no static files: its own 404 shows the request passed.
    let r = server.get("/static/site.css", cookie);
    assert_eq!(r.status, 404, "{context}: /static/ was not passed: {r}");
}

/// The whole drill in one mode: `how` is how a visitor's page request is
/// turned away (`--unavailable` or not); `retry` is the `--retry-after`
/// given to `offline on`, if any.
fn drill(unavailable: bool, retry: Option<&str>) {
    let site = MySite::new(MYSITE);
    let server = site.serve(if unavailable { &["--unavailable"] } else { &[] });
    let page_away = if unavailable {
        TurnedAway::Unavailable
    } else {
        TurnedAway::Redirect
    };

    // ONLINE: everyone passes, with no status (nothing to tell) and no banner.
    let r = server.get("/", &[]);
    r.assert_home_page("ONLINE");
    assert!(!r.has_banner(), "ONLINE shows no banner: {r}");
    assert!(r.body.contains("You are not logged in"), "{r}");
    let r = server.get("/api/status", &[]);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json()["mode"], "ONLINE", "{r}");
    assert_always_passes(&server, &[], "ONLINE");
    assert_eq!(site.status(), "Status: ONLINE - Active sessions: 0");

    // Logging in makes the session live at once: the response comes after
    // the write, so a waiter started now counts it.
    let cookie = login(&server);
    assert_eq!(site.status(), "Status: ONLINE - Active sessions: 1");
    let user = [("Cookie", cookie.as_str())];
    let r = server.get("/", &user);
    r.assert_home_page("logged in, ONLINE");
    assert!(r.body.contains("You are logged in"), "{r}");

    // PENDING, held by a waiting `offline on`.
    let mut args = vec!["--message", "Back at six <b>soon</b>"];
    if let Some(secs) = retry {
        args.extend(["--retry-after", secs]);
    }
    let mut waiter = site.go_pending(&args);
    wait_turned_away(&server);
    assert!(
        site.status().starts_with("Status: PENDING"),
        "{}",
        site.status()
    );

    // The logged-in user keeps working, and sees the banner with the
    // operator's message (escaped).
    let r = server.get("/", &user);
    r.assert_home_page("logged in, PENDING");
    assert!(r.has_banner(), "PENDING shows the banner: {r}");
    assert!(
        r.body.contains("Back at six &lt;b&gt;soon&lt;/b&gt;"),
        "the banner shows the message, escaped: {r}"
    );
    let r = server.get("/api/status", &user);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json()["mode"], "PENDING", "{r}");

    // Everyone else is turned away: a page as configured, JSON for API
    // paths and for clients asking for JSON; nobody new logs in.
    let r = server.get("/", &[]);
    r.assert_turned_away(page_away, retry, "new visitor, PENDING");
    if unavailable {
        assert!(
            r.body.contains("Back at six &lt;b&gt;soon&lt;/b&gt;"),
            "the 503 page shows the message, escaped: {r}"
        );
    }
    let r = server.post("/login", &[]);
    r.assert_turned_away(page_away, retry, "login, PENDING");
    let r = server.get("/api/status", &[]);
    r.assert_turned_away(TurnedAway::Json, retry, "API, PENDING");
    let doc = r.json();
    assert_eq!(doc["mode"], "PENDING", "{r}");
    assert_eq!(doc["message"], "Back at six <b>soon</b>", "{r}");
    match retry {
        Some(secs) => assert_eq!(doc["retry_after"].to_string(), secs, "{r}"),
        None => assert!(doc["retry_after"].is_null(), "{r}"),
    }
    let r = server.get("/", &[("Accept", "application/json")]);
    r.assert_turned_away(TurnedAway::Json, retry, "Accept: application/json, PENDING");
    // A session nobody knows is no session.
    let r = server.get("/", &[("Cookie", "sessionid=0123456789abcdef")]);
    r.assert_turned_away(page_away, retry, "unknown session, PENDING");
    assert_always_passes(&server, &[], "PENDING");
    assert!(waiter.is_running(), "`offline on` must wait for the user");

    // Logging out ends the wait: OFFLINE.
    let r = server.post("/logout", &user);
    assert_eq!(r.status, 303, "logout: {r}");
    assert!(
        r.set_cookie("sessionid")
            .is_some_and(|c| c.contains("Max-Age=0")),
        "logout clears the cookie: {r}"
    );
    let out = waiter.finish();
    assert_eq!(out.code(), Some(0), "`offline on` after the logout: {out}");
    assert!(
        out.stdout
            .iter()
            .any(|l| l == "Status: OFFLINE - Active sessions: 0"),
        "{out}"
    );

    // OFFLINE: everyone is turned away, the former user too.
    wait_offline(&server);
    for (who, headers) in [("visitor", &[][..]), ("former user", &user[..])] {
        let r = server.get("/", headers);
        r.assert_turned_away(page_away, retry, &format!("{who}, OFFLINE"));
        let r = server.get("/api/status", headers);
        r.assert_turned_away(TurnedAway::Json, retry, &format!("{who}, API, OFFLINE"));
        let r = server.get("/", &[headers, &[("Accept", "application/json")]].concat());
        r.assert_turned_away(TurnedAway::Json, retry, &format!("{who}, JSON, OFFLINE"));
        assert_always_passes(&server, headers, &format!("{who}, OFFLINE"));
    }
    let r = server.post("/login", &[]);
    r.assert_turned_away(page_away, retry, "login, OFFLINE");
    if !unavailable {
        // Following the redirect ends at the page: no loop.
        let r = server.get("/", &[]);
        let to = r.header("location").unwrap();
        let r = server.get(to, &[]);
        assert_eq!(r.status, 200, "the maintenance page: {r}");
    }

    // Back ONLINE.
    site.run_ok(&["offline", "off"]);
    let r = server.get_until("ONLINE at the server", "/", &[], |r| r.status == 200);
    r.assert_home_page("back ONLINE");
    assert!(!r.has_banner(), "{r}");
}

#[test]
fn drill_with_redirects() {
    drill(false, None);
}

#[test]
fn drill_with_503_and_retry_after() {
    drill(true, Some("600"));
}

#[test]
fn drill_with_503_without_retry_after() {
    drill(true, None);
}

/// `Retry-After` as the operator set it on a forced OFFLINE, absent when
/// not set — on pages and JSON alike.
#[test]
fn retry_after_only_when_set() {
    let site = MySite::new(MYSITE);
    let server = site.serve(&["--unavailable"]);
    site.run_ok(&["offline", "on", "--force", "--retry-after", "600"]);
    wait_turned_away(&server);
    server
        .get("/", &[])
        .assert_turned_away(TurnedAway::Unavailable, Some("600"), "retry 600");
    server.get("/api/status", &[]).assert_turned_away(
        TurnedAway::Json,
        Some("600"),
        "retry 600, API",
    );

    site.run_ok(&["offline", "off"]);
    server.get_until("ONLINE at the server", "/", &[], |r| r.status == 200);
    site.run_ok(&["offline", "on", "--force"]);
    wait_turned_away(&server);
    let r = server.get("/", &[]);
    r.assert_turned_away(TurnedAway::Unavailable, None, "no retry");
    assert!(r.header("retry-after").is_none(), "{r}");
    let r = server.get("/api/status", &[]);
    r.assert_turned_away(TurnedAway::Json, None, "no retry, API");
    assert!(r.json()["retry_after"].is_null(), "{r}");
}

/// A session that times out while PENDING stops holding it off: the
/// waiting `offline on` finishes OFFLINE without anyone logging out.
#[test]
fn session_expiring_while_pending_ends_the_wait() {
    // The registry rounds a session's expiry up to its 5 s bucket: the
    // session lasts 4 to 9 s after the login, and the wait ends then.
    let site = MySite::with_config(MYSITE, "session_timeout = \"4s\"");
    let server = site.serve(&[]);
    let cookie = login(&server);
    // The waiter counts the session (it says so before waiting)…
    let waiter = site.go_pending(&[]);
    wait_turned_away(&server);
    // …and, with no request from the user, it expires: `offline on` ends
    // OFFLINE (the hang guard of `finish` bounds the wait).
    let out = waiter.finish();
    assert_eq!(out.code(), Some(0), "`offline on`: {out}");
    assert!(
        out.stdout
            .iter()
            .any(|l| l == "Status: OFFLINE - Active sessions: 0"),
        "{out}"
    );
    wait_offline(&server);
    server
        .get("/", &[("Cookie", cookie.as_str())])
        .assert_turned_away(TurnedAway::Redirect, None, "expired user, OFFLINE");
}

/// Hostile session cookies are no session: nothing is written for them,
/// no session counts, nothing panics — ONLINE (where a real session would
/// be written) and PENDING (where they are turned away like anyone).
#[test]
fn hostile_cookies_are_no_session() {
    let site = MySite::new(MYSITE);
    let server = site.serve(&[]);
    let before = site.sessions_written();
    assert_eq!(site.status(), "Status: ONLINE - Active sessions: 0");

    let big = "a".repeat(10 * 1024);
    let hostile: Vec<Vec<u8>> = vec![
        b"sessionid=../../../etc/passwd".to_vec(),
        b"sessionid=..".to_vec(),
        b"sessionid=.".to_vec(),
        b"sessionid=/tmp/x".to_vec(),
        b"sessionid=a/b".to_vec(),
        b"sessionid=..%2F..%2Fx".to_vec(),
        b"sessionid=a%00b".to_vec(),
        b"sessionid=\"../x\"".to_vec(),
        b"sessionid=a\\0b".to_vec(),
        b"sessionid=\xff\xfe..".to_vec(),
        b"sessionid=a\x00b".to_vec(),
        format!("sessionid={big}").into_bytes(),
        format!("{}other=1", "sessionid=z/..; ".repeat(50)).into_bytes(),
    ];
    let send = |cookie: &[u8]| {
        let mut req = format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nCookie: ",
            server.addr()
        )
        .into_bytes();
        req.extend_from_slice(cookie);
        req.extend_from_slice(b"\r\n\r\n");
        raw_exchange(server.addr(), None, &req)
    };

    // ONLINE: they pass as anonymous visitors (a literal NUL is refused by
    // the HTTP parser before the layer), and nothing is recorded.
    for cookie in &hostile {
        let shown = String::from_utf8_lossy(&cookie[..cookie.len().min(60)]).into_owned();
        match send(cookie) {
            Ok(r) if cookie.contains(&0) => assert_ne!(r.status, 500, "{shown:?}: {r}"),
            Ok(r) => r.assert_home_page(&format!("ONLINE, cookie {shown:?}")),
            // A parser may also just close the connection on a NUL.
            Err(e) => assert!(cookie.contains(&0), "{shown:?}: {e}"),
        }
    }
    assert_eq!(server.get("/healthz", &[]).status, 200, "the server died");
    assert_eq!(
        site.sessions_written(),
        before,
        "a hostile cookie was written as a session"
    );
    assert_eq!(site.status(), "Status: ONLINE - Active sessions: 0");

    // The control: a real login is recorded at once, so the check above
    // would have seen one.
    let control = login(&server);
    let r = send(control.as_bytes()).unwrap();
    r.assert_home_page("control");
    assert_eq!(site.status(), "Status: ONLINE - Active sessions: 1");
    let with_control = site.sessions_written();
    assert_ne!(with_control, before, "the control session was not written");

    // PENDING (held by the control session): hostile cookies are turned
    // away like anonymous visitors, and still nothing is written.
    let _waiter = site.go_pending(&[]);
    wait_turned_away(&server);
    for cookie in &hostile {
        let shown = String::from_utf8_lossy(&cookie[..cookie.len().min(60)]).into_owned();
        match send(cookie) {
            Ok(r) if cookie.contains(&0) => assert_ne!(r.status, 500, "{shown:?}: {r}"),
            Ok(r) => r.assert_turned_away(
                TurnedAway::Redirect,
                None,
                &format!("PENDING, cookie {shown:?}"),
            ),
            Err(e) => assert!(cookie.contains(&0), "{shown:?}: {e}"),
        }
    }
    assert_eq!(
        site.sessions_written(),
        with_control,
        "a hostile cookie was written as a session while PENDING"
    );
    assert_eq!(site.status(), "Status: PENDING - Active sessions: 1");
    // (After the comparison: the control's request may touch its session.)
    let r = send(control.as_bytes()).unwrap();
    r.assert_home_page("the control session, PENDING");
    assert!(r.has_banner(), "{r}");
}

/// The sessions in the state: on the file backend one file per session in
/// its bucket (bucket directories and their counts aside), on PostgreSQL
/// one row each.
fn session_entries(site: &MySite) -> usize {
    if manage_tests::on_postgres_backend() {
        return site.sessions_written().len();
    }
    let sessions = site.state().join("sessions");
    manage_tests::names(&sessions)
        .iter()
        .filter(|bucket| sessions.join(bucket).is_dir())
        .map(|bucket| manage_tests::names(&sessions.join(bucket)).len())
        .sum()
}

/// A flood of distinct forged session ids — cookies of the right shape
/// that the app never issued — writes nothing, holds nothing off, and gets
/// nobody in while PENDING, even the ids first seen while ONLINE; the
/// layer's cap (here 2 new ids per refresh interval) bounds the validator
/// calls and says so in the log. The one real user still holds `offline
/// on` off, and logging out ends the wait.
#[test]
fn a_flood_of_forged_session_ids_writes_nothing_and_does_not_hold_off_offline() {
    const FLOOD: usize = 4_000;
    const THREADS: usize = 8;
    let site = MySite::new(MYSITE);
    let server = site.serve(&["--session-cap", "2"]);
    let user = login(&server);
    assert_eq!(session_entries(&site), 1, "the real login");
    let forged = |i: usize| format!("sessionid=forged{i:05}");

    let addr = server.addr();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            s.spawn(move || {
                for i in (t..FLOOD).step_by(THREADS) {
                    let cookie = forged(i);
                    let r = manage_tests::http_get(addr, "/", &[("Cookie", cookie.as_str())]);
                    r.assert_home_page(&format!("ONLINE, {cookie}"));
                    assert!(r.body.contains("You are not logged in"), "{cookie}: {r}");
                }
            });
        }
    });
    assert_eq!(session_entries(&site), 1, "the flood wrote session entries");
    assert_eq!(site.status(), "Status: ONLINE - Active sessions: 1");

    // `offline on` waits for the real user alone…
    let waiter = site.go_pending(&[]);
    wait_turned_away(&server);
    assert_eq!(site.status(), "Status: PENDING - Active sessions: 1");
    // …the forged ids, though seen while ONLINE, are turned away…
    for i in [0, 1, FLOOD / 2, FLOOD - 1] {
        let cookie = forged(i);
        server
            .get("/", &[("Cookie", cookie.as_str())])
            .assert_turned_away(TurnedAway::Redirect, None, &format!("PENDING, {cookie}"));
    }
    // …and the real user keeps working.
    let r = server.get("/", &[("Cookie", user.as_str())]);
    r.assert_home_page("the real user, PENDING");
    assert!(r.body.contains("You are logged in"), "{r}");
    let r = server.post("/logout", &[("Cookie", user.as_str())]);
    assert_eq!(r.status, 303, "logout: {r}");
    let out = waiter.finish();
    assert_eq!(out.code(), Some(0), "`offline on`: {out}");
    assert!(
        out.stdout
            .iter()
            .any(|l| l == "Status: OFFLINE - Active sessions: 0"),
        "{out}"
    );
    let out = server.stop();
    assert!(
        out.stderr
            .contains("new session ids within one refresh interval")
            && out.stderr.contains("its session cap"),
        "the cap was reached without a word: {out}"
    );
}

/// The server sees mode changes made by other processes through its
/// background snapshot: a forced OFFLINE, an `offline off`, and a PENDING
/// that lapsed because its waiter was killed.
#[test]
fn snapshot_follows_other_processes() {
    let site = MySite::new(MYSITE);
    let server = site.serve(&[]);
    server.get("/", &[]).assert_home_page("ONLINE");

    site.run_ok(&["offline", "on", "--force"]);
    wait_offline(&server);
    server
        .get("/", &[])
        .assert_turned_away(TurnedAway::Redirect, None, "OFFLINE");

    site.run_ok(&["offline", "off"]);
    server
        .get_until("ONLINE at the server", "/", &[], |r| r.status == 200)
        .assert_home_page("ONLINE again");

    // A PENDING whose waiter dies lapses: the server serves again without
    // anyone running `offline off`.
    let cookie = login(&server);
    let mut waiter = site.go_pending(&[]);
    wait_turned_away(&server);
    let user = [("Cookie", cookie.as_str())];
    assert!(server.get("/", &user).has_banner(), "PENDING for the user");
    waiter.kill9();
    let r = server.get_until("ONLINE after the waiter died", "/", &[], |r| {
        r.status == 200
    });
    r.assert_home_page("lapsed PENDING");
    let r = server.get("/", &user);
    r.assert_home_page("the user after the lapse");
    assert!(!r.has_banner(), "no banner once ONLINE: {r}");
    assert!(
        site.status().starts_with("Status: ONLINE"),
        "{}",
        site.status()
    );
}

/// `runserver --without-maintenance` serves the same app without the
/// layer: OFFLINE changes nothing for it, while a server with the layer on
/// the same site turns the same request away.
#[test]
fn without_maintenance_serves_while_offline() {
    let site = MySite::new(MYSITE);
    site.run_ok(&["offline", "on", "--force"]);
    let with_layer = site.serve(&[]);
    let without = site.serve(&["--without-maintenance"]);
    with_layer
        .get("/", &[])
        .assert_turned_away(TurnedAway::Redirect, None, "with the layer");
    let r = without.get("/", &[]);
    r.assert_home_page("without the layer, OFFLINE");
    assert!(!r.has_banner(), "{r}");
    let r = without.get("/api/status", &[]);
    assert_eq!(r.status, 200, "{r}");
    let r = without.post("/login", &[]);
    assert_eq!(r.status, 303, "{r}");
    assert!(r.cookie_value("sessionid").is_some(), "{r}");
    // It does not track sessions either.
    assert_eq!(site.status(), "Status: OFFLINE - Active sessions: 0");
}

/// `runserver` stops gracefully on SIGTERM, saying so, with the runner's
/// code for an interrupted command (130, even when it returned cleanly).
#[test]
fn runserver_stops_on_sigterm() {
    let site = MySite::new(MYSITE);
    let server = site.serve(&[]);
    let addr = server.addr();
    server.get("/", &[]).assert_home_page("serving");
    let out = server.stop();
    assert_eq!(out.code(), Some(130), "{out}");
    assert!(
        out.stdout
            .iter()
            .any(|l| *l == format!("stopped serving {addr}")),
        "{out}"
    );
}
