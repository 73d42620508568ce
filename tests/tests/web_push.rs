//! The web layer on PostgreSQL, end to end: a real `mysite` hears mode
//! changes pushed over LISTEN (so a layer that polls once an hour still
//! follows `offline on` from the CLI, also after the server ended its LISTEN
//! connection), and when the database cannot be reached it keeps its last
//! snapshot for `max_stale`, then fails static or closed as configured,
//! queues the sessions it let in and writes them once the database answers.
//! The CLI refuses to start anything then, with exit 69.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use manage_tests::{CliSite, Link, MySite, Proc, host_port, poll_until, psql, test_database_url};

const EXE: &str = env!("CARGO_BIN_EXE_e2e-manage");
const MYSITE: &str = env!("CARGO_BIN_EXE_e2e-mysite");
/// A database nobody listens on.
const UNREACHABLE: &str = "postgres://manage:x@127.0.0.1:1/postgres?sslmode=disable";

/// The server processes LISTENing for `site`'s changes.
fn listeners(url: &str, site: &str) -> Vec<String> {
    let pids = psql(
        url,
        &format!(
            "SELECT pid FROM pg_stat_activity WHERE application_name = '{site}' \
             AND query LIKE 'LISTEN %' ORDER BY pid"
        ),
    );
    pids.lines().map(str::to_owned).collect()
}

/// `mysite ARGS…` run straight at the test server `url` (whatever the
/// site's own URL is).
fn direct(site: &MySite, url: &str, args: &[&str]) -> manage_tests::Outcome {
    let mut cmd = site.command(args);
    cmd.env("MANAGE_DATABASE_URL", url);
    Proc::spawn(cmd).finish()
}

/// The site's URL on the test server: `url` with its `application_name`.
fn site_url(url: &str, name: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name={name}")
}

#[test]
fn a_layer_that_polls_once_an_hour_follows_the_cli_through_the_push_and_after_its_listen_is_ended()
{
    let Some(url) = test_database_url() else {
        return;
    };
    let site = MySite::on_postgres(MYSITE, &url, "");
    let name = site.postgres_site().unwrap().to_owned();
    // The CLI's own file, with the usual short interval (its settle time
    // is twice it); the layer reads once at start, then once an hour: only
    // a push can tell it.
    let cli_toml = site.dir().join("cli.toml");
    std::fs::write(
        &cli_toml,
        format!("site = \"{name}\"\nrefresh_interval = \"50ms\"\n"),
    )
    .unwrap();
    site.write_config("refresh_interval = \"1h\"");
    let cli = |args: &[&str]| {
        let mut cmd = site.command(args);
        cmd.env("MANAGE_CONFIG", &cli_toml);
        Proc::spawn(cmd).finish()
    };
    let server = site.serve(&[]);
    server.get_until("served", "/api/status", &[], |r| r.status == 200);
    poll_until("the layer LISTENs", || {
        (!listeners(&url, &name).is_empty()).then_some(())
    });

    let out = cli(&["offline", "on", "--force"]);
    assert!(out.success(), "{out}");
    server.get_until("OFFLINE pushed to the layer", "/api/status", &[], |r| {
        r.status == 503 && r.json()["mode"] == "OFFLINE"
    });

    // The server ends the layer's LISTEN connection: it listens again, and
    // hears the next change too.
    let before = listeners(&url, &name);
    let ended = psql(
        &url,
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = '{name}' AND query LIKE 'LISTEN %'"
        ),
    );
    assert_eq!(ended, "1", "one LISTEN connection to end");
    poll_until("the layer LISTENs again", || {
        let now = listeners(&url, &name);
        (!now.is_empty() && now != before).then_some(())
    });
    let out = cli(&["offline", "off"]);
    assert!(out.success(), "{out}");
    server.get_until("ONLINE pushed to the layer", "/api/status", &[], |r| {
        r.status == 200
    });
}

#[test]
fn a_layer_that_polls_once_an_hour_reads_a_change_made_while_its_listen_was_cut_once_it_listens_again()
 {
    let Some(url) = test_database_url() else {
        return;
    };
    let link = Link::to(host_port(&url));
    let site = MySite::on_postgres(MYSITE, &link.url(&url), "");
    let name = site.postgres_site().unwrap().to_owned();
    // The layer reads once at start, then once an hour; max_stale is then
    // two hours (its default: twice the interval), so the layer keeps its
    // snapshot through the cut and only the re-read on listening again
    // can tell it of the change it missed.
    site.write_config("refresh_interval = \"1h\"");
    // The CLI, straight at the server, with a short settle time.
    let cli_toml = site.dir().join("cli.toml");
    std::fs::write(
        &cli_toml,
        format!("site = \"{name}\"\nrefresh_interval = \"50ms\"\n"),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let mut cmd = site.command(args);
        cmd.env("MANAGE_CONFIG", &cli_toml);
        cmd.env("MANAGE_DATABASE_URL", site_url(&url, "direct"));
        Proc::spawn(cmd).finish()
    };
    let server = site.serve(&[]);
    server.get_until("served", "/api/status", &[], |r| r.status == 200);
    poll_until("the layer LISTENs", || {
        (!listeners(&url, &name).is_empty()).then_some(())
    });

    // The layer's link cut: the change is made while nobody of it listens,
    // so its NOTIFY reaches nobody.
    link.cut();
    poll_until("the layer's LISTEN gone from the server", || {
        listeners(&url, &name).is_empty().then_some(())
    });
    let out = cli(&["offline", "on", "--force"]);
    assert!(out.success(), "{out}");
    let r = server.get("/api/status", &[]);
    assert_eq!(r.status, 200, "the layer cannot have read it yet: {r}");
    assert_eq!(r.json()["mode"], "ONLINE", "{r}");

    link.restore();
    server.get_until(
        "the missed OFFLINE read once the layer listens again",
        "/api/status",
        &[],
        |r| r.status == 503 && r.json()["mode"] == "OFFLINE",
    );
    assert!(!listeners(&url, &name).is_empty(), "listening again");
    let out = server.stop();
    assert_eq!(
        out.stderr
            .matches("the maintenance layer reads the mode again")
            .count(),
        1,
        "{out}"
    );
}

/// Starts `site`'s server (its database through `link`), waits until it
/// serves, then cuts the link.
fn serve_then_cut(site: &MySite, link: &Link) -> manage_tests::Server {
    let server = site.serve(&[]);
    server.get_until("served", "/api/status", &[], |r| r.status == 200);
    link.cut();
    server
}

#[test]
fn fail_closed_turns_users_away_as_offline_after_max_stale_and_serves_again_when_the_database_returns()
 {
    let Some(url) = test_database_url() else {
        return;
    };
    let link = Link::to(host_port(&url));
    let site = MySite::on_postgres(
        MYSITE,
        &link.url(&url),
        "max_stale = \"1s\"\non_stale = \"closed\"",
    );
    let server = serve_then_cut(&site, &link);
    let r = server.get_until("OFFLINE once stale", "/api/status", &[], |r| {
        r.status == 503
    });
    assert_eq!(r.json()["mode"], "OFFLINE", "{r}");
    let page = server.get("/", &[("Accept", "text/html")]);
    assert_eq!(page.status, 303, "sent to the maintenance page: {page}");
    let page = server.get("/maintenance.html", &[]);
    assert!(page.body.contains("maintenance"), "{page}");
    // The site itself never went OFFLINE.
    let out = direct(&site, &site_url(&url, "direct"), &["offline", "status"]);
    assert!(out.stdout[0].starts_with("Status: ONLINE"), "{out}");

    link.restore();
    server.get_until("served again", "/api/status", &[], |r| r.status == 200);
    let out = server.stop();
    let said = |needle: &str| out.stderr.matches(needle).count();
    assert_eq!(said("cannot read the mode"), 1, "{out}");
    assert_eq!(said("on_stale = \"closed\") until"), 1, "{out}");
    assert_eq!(
        said("the maintenance layer reads the mode again"),
        1,
        "{out}"
    );
}

#[test]
fn fail_static_keeps_serving_by_the_last_snapshot_and_still_refuses_writes() {
    let Some(url) = test_database_url() else {
        return;
    };
    let link = Link::to(host_port(&url));
    let site = MySite::on_postgres(MYSITE, &link.url(&url), "max_stale = \"1s\"");
    let server = serve_then_cut(&site, &link);
    // Writes go once the snapshot is older than the settle time.
    let r = server.get_until("a write refused on the stale snapshot", "/", &[], |_| {
        server.post("/login", &[]).status == 503
    });
    assert_eq!(r.status, 200, "reads still served: {r}");
    // Past max_stale, and well past it, reads pass and writes do not.
    let cut = Instant::now();
    while cut.elapsed() < Duration::from_secs(3) {
        let r = server.get("/api/status", &[]);
        assert_eq!(r.status, 200, "fail static turned a reader away: {r}");
        assert_eq!(r.json()["mode"], "ONLINE", "{r}");
        let w = server.post("/login", &[]);
        assert_eq!(w.status, 503, "fail static let a write in: {w}");
    }
    link.restore();
    poll_until("writes pass again", || {
        (server.post("/login", &[]).status == 303).then_some(())
    });
    let out = server.stop();
    assert_eq!(
        out.stderr.matches("cannot read the mode").count(),
        1,
        "{out}"
    );
    assert_eq!(
        out.stderr.matches("on_stale = \"static\"), unsafe").count(),
        1,
        "{out}"
    );
}

#[test]
fn a_session_let_in_while_the_database_is_unreachable_is_counted_once_it_returns() {
    let Some(url) = test_database_url() else {
        return;
    };
    let link = Link::to(host_port(&url));
    // A snapshot fresh for a minute: the login is let in though its
    // session cannot be written.
    let site = MySite::on_postgres(MYSITE, &link.url(&url), "");
    site.write_config("refresh_interval = \"30s\"");
    let server = serve_then_cut(&site, &link);
    let login = server.post("/login", &[]);
    assert_eq!(login.status, 303, "{login}");
    assert!(login.cookie_value("sessionid").is_some(), "{login}");
    let direct_url = site_url(&url, "direct");
    let out = direct(&site, &direct_url, &["offline", "status"]);
    assert!(
        out.stdout[0].starts_with("Status: ONLINE - Active sessions: 0"),
        "{out}"
    );

    link.restore();
    poll_until("the queued session written", || {
        let out = direct(&site, &direct_url, &["offline", "status"]);
        out.stdout[0]
            .starts_with("Status: ONLINE - Active sessions: 1")
            .then_some(())
    });
    let out = server.stop();
    assert_eq!(
        out.stderr
            .matches("wrote the 1 new sessions it let in")
            .count(),
        1,
        "{out}"
    );
}

#[test]
fn tasks_and_offline_on_are_refused_with_exit_69_while_the_database_is_unreachable() {
    let Some(url) = test_database_url() else {
        return;
    };
    let link = Link::to(host_port(&url));
    let site = CliSite::on_postgres(EXE, &link.url(&url), "");
    let out = site.run(&["offline", "status"]);
    assert!(out.success(), "{out}");
    link.cut();
    let out = site.run(&["hello"]);
    assert_eq!(out.code(), Some(69), "{out}");
    assert!(out.text().contains(&link.addr().to_string()), "{out}");
    assert!(out.text().contains("check"), "{out}");
    let out = site.run(&["offline", "on", "--force"]);
    assert_eq!(out.code(), Some(69), "{out}");
    link.restore();
    let out = site.run(&["offline", "status"]);
    assert!(out.stdout[0].starts_with("Status: ONLINE"), "{out}");

    let out = CliSite::on_postgres(EXE, UNREACHABLE, "").run(&["hello"]);
    assert_eq!(out.code(), Some(69), "{out}");
    assert!(out.text().contains("127.0.0.1:1"), "{out}");
    assert!(out.text().contains("connection refused"), "{out}");
}
