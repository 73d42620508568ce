//! Who passes while the site is OFFLINE, through a real `mysite runserver`
//! on 127.0.0.1: the holder of the bypass secret (and of the cookie it
//! sets — not a forged one), allow-listed addresses and CIDR ranges (the
//! client binds its socket to 127.0.0.2, 127.0.0.9, …: on Linux all of
//! 127.0.0.0/8 is local), and `X-Forwarded-For` only from a trusted proxy.
//!
//! No wall-clock assertion: every wait is a hang guard.

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use manage_tests::{MySite, Reply, Server, TurnedAway};

const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Waits until the server's snapshot says OFFLINE: it turns away an API
/// client from 127.0.0.254 (on no test's allow-list) with JSON naming the
/// mode.
fn wait_offline(server: &Server) {
    manage_tests::poll_until("OFFLINE at the server", || {
        let r = server.get_from(ip("127.0.0.254"), "/api/status", &[]);
        (r.status == 503 && r.json()["mode"] == "OFFLINE").then_some(())
    });
}

/// Asserts `r` is the app's page, let through during maintenance: the
/// banner says so.
fn assert_let_through(r: &Reply, context: &str) {
    r.assert_home_page(context);
    assert!(
        r.body.contains("You are browsing during maintenance"),
        "{context}: no OFFLINE banner: {r}"
    );
}

/// Visits the bypass path with `secret`; returns the `Cookie` header the
/// answer sets, after checking the answer: 303 home, the cookie HttpOnly,
/// SameSite=Lax, expiring, and the answer not cached.
fn visit_bypass(server: &Server, secret: &str) -> String {
    let r = server.get(&format!("/_maintenance/bypass/{secret}"), &[]);
    assert_eq!(r.status, 303, "the bypass path: {r}");
    assert_eq!(r.header("location"), Some("/"), "{r}");
    assert_eq!(r.header("cache-control"), Some("no-store"), "{r}");
    let set = r
        .set_cookie("manage_bypass")
        .unwrap_or_else(|| panic!("no bypass cookie: {r}"));
    let attrs: Vec<&str> = set.split(';').map(str::trim).collect();
    for want in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(attrs.contains(&want), "bypass cookie lacks {want}: {set}");
    }
    assert!(
        attrs.iter().any(|a| a
            .strip_prefix("Max-Age=")
            .is_some_and(|n| n.parse::<u64>().is_ok_and(|n| n > 0))),
        "the bypass cookie must expire: {set}"
    );
    format!("manage_bypass={}", r.cookie_value("manage_bypass").unwrap())
}

/// The bypass secret: visiting its path once sets a cookie signed with the
/// app's key; that cookie browses normally; a forged, altered or
/// foreign-key cookie does not; the state holds only the secret's hash; a
/// new secret retires the old cookies.
#[test]
fn bypass_secret() {
    let site = MySite::new(MYSITE);
    let server = site.serve(&[]);
    let out = site.run_ok(&["offline", "on", "--force", "--secret", "s3cret"]);
    assert!(
        out.stdout
            .iter()
            .any(|l| l.starts_with("Bypass: visit /_maintenance/bypass/s3cret once")),
        "{out}"
    );
    // Reading the state gives the secret away nowhere.
    for (path, what) in manage_tests::snapshot(&site.state(), &[]) {
        assert!(
            !what.contains("s3cret"),
            "{} holds the secret",
            path.display()
        );
    }
    wait_offline(&server);
    server
        .get("/", &[])
        .assert_turned_away(TurnedAway::Redirect, None, "no cookie");

    // A wrong secret is turned away like any request, and sets nothing.
    for wrong in ["s3cre", "s3crett", "S3CRET", "", "s3cret/"] {
        let r = server.get(&format!("/_maintenance/bypass/{wrong}"), &[]);
        r.assert_turned_away(TurnedAway::Redirect, None, &format!("secret {wrong:?}"));
        assert!(r.set_cookie("manage_bypass").is_none(), "{r}");
    }

    let cookie = visit_bypass(&server, "s3cret");
    let holder = [("Cookie", cookie.as_str())];
    assert_let_through(&server.get("/", &holder), "bypass cookie");
    let r = server.get("/api/status", &holder);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json()["mode"], "OFFLINE", "{r}");
    // With other cookies around it too.
    let mixed = format!("theme=dark; {cookie}; sessionid=abc");
    assert_let_through(
        &server.get("/", &[("Cookie", mixed.as_str())]),
        "bypass cookie among others",
    );

    // Forgeries: an altered signature, an altered expiry, no signature, a
    // stranger's guess.
    let value = cookie.strip_prefix("manage_bypass=").unwrap();
    let (expiry, sig) = value.split_once('.').unwrap();
    let flipped_sig = {
        let mut s = sig.to_owned();
        let last = s.pop().unwrap();
        s.push(if last == '0' { '1' } else { '0' });
        s
    };
    let later = expiry.parse::<u64>().unwrap() + 3600;
    let forged = [
        format!("{expiry}.{flipped_sig}"),
        format!("{later}.{sig}"),
        format!("{expiry}."),
        expiry.to_owned(),
        format!("{later}.{}", "0".repeat(64)),
        "s3cret".to_owned(),
        String::new(),
    ];
    for f in &forged {
        let c = format!("manage_bypass={f}");
        server
            .get("/", &[("Cookie", c.as_str())])
            .assert_turned_away(TurnedAway::Redirect, None, &format!("forged {c:?}"));
    }

    // Signed with the app's own key: another worker with the same key
    // honours it, an app with another key does not.
    let same_key = site.serve(&[]);
    let other_key = site.serve_with_key("another-key", &[]);
    wait_offline(&same_key);
    wait_offline(&other_key);
    assert_let_through(&same_key.get("/", &holder), "same key");
    other_key
        .get("/", &holder)
        .assert_turned_away(TurnedAway::Redirect, None, "another key");

    // A generated secret is printed and works; the old cookie is bound to
    // the old secret and stops working.
    site.run_ok(&["offline", "off"]);
    server.get_until("ONLINE at the server", "/", &[], |r| r.status == 200);
    let out = site.run_ok(&["offline", "on", "--force", "--secret"]);
    let url = out
        .stdout
        .iter()
        .find_map(|l| l.strip_prefix("Bypass: visit "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no bypass URL printed: {out}"))
        .to_owned();
    let secret = url.strip_prefix("/_maintenance/bypass/").unwrap();
    assert!(secret.len() >= 16, "a guessable generated secret: {url}");
    wait_offline(&server);
    server
        .get("/", &holder)
        .assert_turned_away(TurnedAway::Redirect, None, "old secret's cookie");
    let fresh = visit_bypass(&server, secret);
    assert_let_through(
        &server.get("/", &[("Cookie", fresh.as_str())]),
        "new secret",
    );
}

/// Allow-listed addresses and CIDR ranges pass while OFFLINE, by the
/// peer's address; anyone else is turned away.
#[test]
fn allow_list_addresses_and_ranges() {
    let site = MySite::new(MYSITE);
    site.run_ok(&["offline", "on", "--force"]);
    let listed = site.serve(&["--allow", "127.0.0.2", "--allow", "127.0.0.8/29"]);
    let localhost = site.serve(&["--allow", "127.0.0.1"]);
    let nobody = site.serve(&[]);
    for s in [&listed, &localhost, &nobody] {
        wait_offline(s);
    }

    for from in ["127.0.0.2", "127.0.0.8", "127.0.0.9", "127.0.0.15"] {
        assert_let_through(&listed.get_from(ip(from), "/", &[]), from);
    }
    for from in ["127.0.0.1", "127.0.0.3", "127.0.0.7", "127.0.0.16"] {
        listed.get_from(ip(from), "/", &[]).assert_turned_away(
            TurnedAway::Redirect,
            None,
            &format!("{from}, not listed"),
        );
    }
    // The plain client (from 127.0.0.1).
    assert_let_through(&localhost.get("/", &[]), "--allow 127.0.0.1");
    nobody
        .get("/", &[])
        .assert_turned_away(TurnedAway::Redirect, None, "no allow-list");
    // An allow-listed client asking for JSON gets the app's JSON.
    let r = listed.get_from(ip("127.0.0.2"), "/api/status", &[]);
    assert_eq!(
        (r.status, r.json()["mode"].as_str()),
        (200, Some("OFFLINE")),
        "{r}"
    );
}

/// `X-Forwarded-For` is believed only from a configured proxy, and then
/// only its nearest untrusted hop: a client cannot claim an allowed
/// address.
#[test]
fn forwarded_for_only_from_trusted_proxies() {
    let site = MySite::new(MYSITE);
    site.run_ok(&["offline", "on", "--force"]);
    let direct = site.serve(&["--allow", "10.9.9.9"]);
    let proxied = site.serve(&["--allow", "10.9.9.9", "--trust-proxy", "127.0.0.1"]);
    wait_offline(&direct);
    wait_offline(&proxied);
    let xff = |v: &'static str| [("X-Forwarded-For", v)];

    // No trusted proxy: the header is the client's word, ignored.
    for spoof in ["10.9.9.9", "6.6.6.6, 10.9.9.9"] {
        direct.get("/", &xff(spoof)).assert_turned_away(
            TurnedAway::Redirect,
            None,
            &format!("spoofed {spoof:?} without --trust-proxy"),
        );
    }
    let r = direct.get("/", &[("X-Real-IP", "10.9.9.9")]);
    r.assert_turned_away(TurnedAway::Redirect, None, "X-Real-IP is not trusted");

    // From the trusted proxy (127.0.0.1): the hop it added decides.
    assert_let_through(&proxied.get("/", &xff("10.9.9.9")), "proxy says 10.9.9.9");
    assert_let_through(
        &proxied.get("/", &xff("6.6.6.6, 10.9.9.9")),
        "client 10.9.9.9 behind a forged first hop",
    );
    assert_let_through(
        &proxied.get(
            "/",
            &[
                ("X-Forwarded-For", "6.6.6.6"),
                ("X-Forwarded-For", "10.9.9.9"),
            ],
        ),
        "the last of several headers",
    );
    for (spoof, why) in [
        ("10.9.9.9, 6.6.6.6", "the client 6.6.6.6 claimed 10.9.9.9"),
        ("6.6.6.6", "a client not listed"),
        ("not-an-address", "garbage"),
        ("10.9.9.9, garbage", "garbage in the chain"),
    ] {
        proxied.get("/", &xff(spoof)).assert_turned_away(
            TurnedAway::Redirect,
            None,
            &format!("via the proxy, {spoof:?}: {why}"),
        );
    }
    // The proxy itself without a header is not on the allow-list.
    proxied
        .get("/", &[])
        .assert_turned_away(TurnedAway::Redirect, None, "the proxy, no header");
    // Only the configured proxy is trusted: the same header from
    // 127.0.0.2 is the client's own word.
    proxied
        .get_from(ip("127.0.0.2"), "/", &xff("10.9.9.9"))
        .assert_turned_away(TurnedAway::Redirect, None, "XFF from an untrusted peer");
}

/// A login by someone the layer lets through anyway (here an allow-listed
/// address) while PENDING must not hold the wait off: the layer never
/// records exempt users' sessions while PENDING, and they keep browsing
/// OFFLINE, so waiting for them only delays the operator.
#[test]
fn exempt_login_while_pending_does_not_hold_it_off() {
    let site = MySite::new(MYSITE);
    let server = site.serve(&["--allow", "127.0.0.3"]);
    let login = server.post("/login", &[]);
    let user = format!("sessionid={}", login.cookie_value("sessionid").unwrap());
    let waiter = site.go_pending(&[]);
    server.get_until("PENDING at the server", "/", &[], |r| r.status != 200);

    let r = manage_tests::raw_request(server.addr(), Some(ip("127.0.0.3")), "POST", "/login", &[]);
    assert_eq!(r.status, 303, "the allow-listed login passes: {r}");
    assert_eq!(
        site.status(),
        "Status: PENDING - Active sessions: 1",
        "an allow-listed login while PENDING was counted as a user mid-work"
    );

    // The only user mid-work logs out: the wait ends.
    let r = server.post("/logout", &[("Cookie", user.as_str())]);
    assert_eq!(r.status, 303, "{r}");
    let out = waiter.finish();
    assert_eq!(out.code(), Some(0), "`offline on`: {out}");
}
