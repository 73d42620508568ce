//! What operators and clients write that the site must read right, through
//! a real `mysite runserver` on 127.0.0.1 driven by the real operator CLI:
//! request paths that try to slip past a pass prefix while OFFLINE (sent
//! byte for byte over a plain socket, so no client library tidies them),
//! unusable paths in manage.toml, the bypass link of an odd secret, a
//! `--retry-after` time with a UTC offset, and more notes than the page
//! keeps.
//!
//! No wall-clock assertion: every wait is a hang guard.

#![allow(clippy::unwrap_used)]

use std::time::{SystemTime, UNIX_EPOCH};

use manage_tests::{MySite, Reply, Server, TurnedAway, raw_get};

const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");

/// Waits until the server's snapshot says OFFLINE (its JSON answer to an
/// API client names the mode).
fn wait_offline(server: &Server) {
    server.get_until("OFFLINE at the server", "/api/status", &[], |r| {
        r.status == 503 && r.json()["mode"] == "OFFLINE"
    });
}

/// `GET path` exactly as written.
fn get_raw(server: &Server, path: &str) -> Reply {
    raw_get(server.addr(), None, path, &[])
}

/// mysite passes `/healthz` and `/static/`. While OFFLINE, each of these
/// would have passed a raw `starts_with`; each is turned away by the layer
/// (a 303 to the maintenance page, never the app's answer), while the real
/// health check and the maintenance page still pass.
#[test]
fn paths_that_would_slip_past_a_pass_prefix_are_turned_away_while_offline() {
    let site = MySite::new(MYSITE);
    let server = site.serve(&[]);
    site.run_ok(&["offline", "on", "--force"]);
    wait_offline(&server);

    for path in [
        "/healthzX",
        "/healthz.php",
        "/healthz/../",
        "/healthz/../api/status",
        "/healthz/%2e%2e/api/status",
        "/healthz/%2E%2e/api/status",
        "/healthz/.%2E/api/status",
        "/healthz/..;/api/status",
        "/healthz/%2e%2e;/api/status",
        "/healthz%2F..%2Fapi%2Fstatus",
        "/healthz/..%2fapi/status",
        "/healthz/..%5capi/status",
        "/healthz%00",
        "/healthz/%00/x",
        "/healthz/%0d%0aX-Injected:%201",
        "/healthz/%zz",
        "/healthz/%C0%AE%C0%AE/api/status",
        "/%2e%2e/healthz",
        "/static/../",
        "/static/./../api/status",
        "/staticfiles/x.css",
        "/maintenance.htmlX",
        "/maintenance.html/../",
        "/maintenance.html/%2e%2e/api/status",
    ] {
        get_raw(&server, path).assert_turned_away(TurnedAway::Redirect, None, path);
    }

    let r = get_raw(&server, "/healthz");
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"), "{r}");
    let r = get_raw(&server, "/health%7A");
    assert_ne!(r.status, 303, "an escaped letter is the same path: {r}");
    for path in ["/maintenance.html", "/maintenance.html?next=%2F"] {
        let r = get_raw(&server, path);
        assert_eq!(r.status, 200, "{path}: {r}");
        assert!(r.body.contains("id=\"maintenance\""), "{path}: {r}");
    }
}

/// A `maintenance_url` or `bypass_prefix` that would pass everything or
/// mean two things stops the app and the CLI alike, naming the file, the
/// line, the key and what a valid value looks like; nothing panics.
#[test]
fn unusable_paths_in_manage_toml_stop_the_app_and_the_cli_naming_file_and_key() {
    for (setting, key, problem) in [
        (
            "maintenance_url = \"/\"",
            "maintenance_url",
            "`/` alone would match every request",
        ),
        ("maintenance_url = \"\"", "maintenance_url", "it is empty"),
        (
            "maintenance_url = \"/down?from=app\"",
            "maintenance_url",
            "query or fragment",
        ),
        (
            "bypass_prefix = \"/_maintenance/../bypass/\"",
            "bypass_prefix",
            "`.` or `..` segment",
        ),
        (
            "bypass_prefix = \"_bypass/\"",
            "bypass_prefix",
            "does not start with `/`",
        ),
    ] {
        let site = MySite::with_config(MYSITE, setting);
        let file = site.dir().join("manage.toml");
        let at = format!("{}:3: key `{key}`", file.display());
        let fix = "write an absolute path such as \"/maintenance.html\"";
        let out = site.spawn(&["runserver", "--addr", "127.0.0.1:0"]).finish();
        out.assert_clean_error(&[&at, problem, fix]);
        assert!(
            !out.text().contains("serving"),
            "{setting}: the app served: {out}"
        );
        site.spawn(&["offline", "status"])
            .finish()
            .assert_clean_error(&[&at, problem, fix]);
    }
}

/// The bypass link the CLI prints is percent-encoded, so a secret with a
/// space or `?` still works when visited; a secret that cannot be one path
/// segment is refused before anything changes.
#[test]
fn the_printed_bypass_link_works_for_any_secret_it_accepts() {
    let site = MySite::new(MYSITE);
    let server = site.serve(&[]);
    let refused = site
        .spawn(&["offline", "on", "--force", "--secret", "a/b"])
        .finish();
    assert_eq!(refused.code(), Some(2), "{refused}");
    refused.assert_clean_error(&["'/' cannot be part of a bypass secret"]);
    assert_eq!(site.status(), "Status: ONLINE - Active sessions: 0");

    let out = site.run_ok(&["offline", "on", "--force", "--secret", "open sesame?"]);
    let link = out
        .stdout
        .iter()
        .find_map(|l| l.strip_prefix("Bypass: visit "))
        .and_then(|l| l.strip_suffix(" once to browse the site during maintenance"))
        .unwrap_or_else(|| panic!("no bypass link: {out}"))
        .to_owned();
    assert_eq!(link, "/_maintenance/bypass/open%20sesame%3F");
    wait_offline(&server);
    let r = get_raw(&server, &link);
    assert_eq!(r.status, 303, "{r}");
    assert_eq!(r.header("location"), Some("/"), "{r}");
    assert!(r.set_cookie("manage_bypass").is_some(), "{r}");
    let r = get_raw(&server, &format!("{link}/"));
    r.assert_turned_away(TurnedAway::Redirect, None, "the link with a trailing /");
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `--retry-after 2099-01-01T00:00:00+14:00` is 2098-12-31T10:00:00Z
/// (Unix 4070858400): the 503 says `Retry-After` in seconds until then —
/// between what was left just before the request and just after it.
#[test]
fn retry_after_with_an_offset_is_sent_as_the_seconds_until_that_instant() {
    const AT: u64 = 4_070_858_400;
    let site = MySite::new(MYSITE);
    let server = site.serve(&["--unavailable"]);
    site.run_ok(&[
        "offline",
        "on",
        "--force",
        "--retry-after",
        "2099-01-01T00:00:00+14:00",
    ]);
    server.get_until("OFFLINE at the server", "/", &[], |r| r.status == 503);
    let most = AT - unix_now();
    let r = server.get("/", &[]);
    let least = AT - unix_now() - 1;
    let secs: u64 = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {r}"))
        .parse()
        .unwrap_or_else(|e| panic!("Retry-After is not seconds ({e}): {r}"));
    assert!(
        (least..=most).contains(&secs),
        "{secs} not in {least}..={most}: {r}"
    );
    let retry = secs.to_string();
    r.assert_turned_away(TurnedAway::Unavailable, Some(&retry), "retry at a time");
    let j = server.get("/api/status", &[]).json();
    assert_eq!(j["retry_after"], "2098-12-31T10:00:00.000Z", "{j}");
}

/// Found by the soak (bench/soak.sh): every note posted was kept and shown,
/// so a site under a steady stream of posts grew without bound — memory,
/// and each page, which listed all of them. The page keeps the newest 20.
#[test]
fn the_home_page_keeps_only_the_newest_notes_however_many_are_posted() {
    let site = MySite::new(MYSITE);
    let server = site.serve(&[]);
    for n in 1..=30 {
        let r = server.post_form("/notes", &[], &format!("text=note-{n}"));
        assert_eq!(r.status, 303, "note {n}: {r}");
    }
    let page = server.get("/", &[]);
    page.assert_home_page("after 30 notes");
    let shown: Vec<&str> = page
        .body
        .split("<li class=\"note\">")
        .skip(1)
        .filter_map(|li| li.split_once("</li>").map(|(note, _)| note))
        .collect();
    let newest: Vec<String> = (11..=30).map(|n| format!("note-{n}")).collect();
    assert_eq!(shown, newest, "{page}");
}
