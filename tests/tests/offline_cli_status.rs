//! `manage offline status|check`, `list`, `on --force`, `off` and usage
//! errors, end to end: the real `manage` binary (`e2e-manage`) against real
//! live tasks (fixture sleepers in child processes) and web sessions
//! (touched through the core API, as a web layer does). Every line the
//! issue documents is checked with its exact text and exit code.

#![allow(clippy::unwrap_used)]

use maintenance_core::session::SessionKey;
use maintenance_core::{Mode, Timestamp};
use manage_tests::{CliSite, Proc, assert_exact, file_backend_only, user_at_host};

const EXE: &str = env!("CARGO_BIN_EXE_e2e-manage");

const HEADER: &str =
    "Active sessions detected. Waiting for logout. (Session timeout set to 900 secs)";

/// The one line of `lines` that starts with `prefix`.
#[track_caller]
fn line_starting<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    let found: Vec<&String> = lines.iter().filter(|l| l.starts_with(prefix)).collect();
    assert_eq!(found.len(), 1, "one line starting {prefix:?} in {lines:#?}");
    found[0]
}

/// Starts `offline on ARGS…` and waits until it says it waits: the header
/// django-site-maintenance prints, kept word for word, then its first
/// progress line, which it returns.
fn waiting_on(site: &CliSite, args: &[&str]) -> (Proc, String) {
    let mut all = vec!["offline", "on"];
    all.extend_from_slice(args);
    let mut on = site.spawn(&all);
    assert_eq!(on.line(), HEADER);
    let progress = on.line();
    (on, progress)
}

/// The sessions' last expiry as the core reads it.
fn last_expiry(site: &CliSite) -> String {
    let sessions = site.backend().sessions().unwrap();
    sessions
        .iter()
        .map(|s| s.expires_at)
        .max()
        .expect("a live session")
        .to_string()
}

#[test]
fn status_and_check_print_the_status_line_and_exit_codes_in_every_mode() {
    let site = CliSite::new(EXE);
    let me = user_at_host();
    let state = site.state();
    let (single, _) = site.start(&["sleeper", "--secs", "60"]);
    let (many, _) = site.start(&["sleeper-many", "--secs", "60"]);
    site.touch_session("alice");

    // ONLINE, two commands and one user live.
    for verb in ["status", "check"] {
        assert_exact(
            &site.run(&["offline", verb]),
            0,
            &["Status: ONLINE - Active sessions: 3"],
        );
    }
    assert_exact(
        &site.run(&["offline", "status", "--exit-code"]),
        0,
        &["Status: ONLINE - Active sessions: 3"],
    );
    let v = site.run(&["offline", "status", "-v"]);
    assert_eq!(v.code(), Some(0), "{v}");
    assert_eq!(v.stdout[0], "Status: ONLINE - Active sessions: 3");
    assert!(
        !v.stdout.iter().any(|l| l.starts_with("  since: ")),
        "never changed: no since line: {v}"
    );
    let state_line = match site.postgres_site() {
        Some(name) => format!(
            "  state: PostgreSQL at {}, schema manage, site \"{name}\" (from $MANAGE_DATABASE_URL)",
            postgres_host_port()
        ),
        None => format!(
            "  state: state directory {} (from $MANAGE_STATE_DIR)",
            state.display()
        ),
    };
    assert!(v.stdout.contains(&state_line), "{v}");
    assert!(
        v.stdout
            .contains(&"  users: 1 live web session(s)".to_owned()),
        "{v}"
    );
    assert!(v.stdout.contains(&"  commands: 2 live".to_owned()), "{v}");
    for (name, p) in [("sleeper", &single), ("sleeper-many", &many)] {
        let l = line_starting(
            &v.stdout,
            &format!(
                "    - command `{name}` (pid {}, {me}, running for ",
                p.pid()
            ),
        );
        assert!(l.ends_with("s)"), "{l}");
    }
    let l = line_starting(&v.stdout, "    - 1 web session (the last expires in ");
    assert!(l.ends_with(&format!(", at {})", last_expiry(&site))), "{l}");
    // Each holder sits under its own heading: the sessions under `users:`,
    // the commands under `commands:`.
    let at = |prefix: &str| {
        v.stdout
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?}: {v}"))
    };
    assert_eq!(at("    - 1 web session"), at("  users: ") + 1, "{v}");
    assert_eq!(at("    - command `"), at("  commands: ") + 1, "{v}");
    assert!(!v.stdout.iter().any(|l| l.contains("note:")), "{v}");

    let j = site.status_json();
    assert_eq!(j["version"], 1);
    assert_eq!(j["mode"], "ONLINE");
    assert_eq!(j["active_sessions"], 3);
    assert_eq!(j["sessions"]["count"], 1);
    assert_eq!(j["sessions"]["last_expires_at"], last_expiry(&site));
    for field in [
        "since",
        "by",
        "pid",
        "message",
        "retry_after",
        "lapsed",
        "window",
    ] {
        assert!(j[field].is_null(), "{field} before any change: {j:#}");
    }
    assert_eq!(j["state_dir"], state.to_str().unwrap());
    let tasks = j["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2, "{j:#}");
    for (t, (name, p, instances)) in tasks.iter().zip([
        ("sleeper", &single, "single"),
        ("sleeper-many", &many, "concurrent"),
    ]) {
        assert_eq!(t["name"], name, "{t:#}");
        assert_eq!(t["pid"], p.pid(), "{t:#}");
        assert_eq!(
            format!(
                "{}@{}",
                t["user"].as_str().unwrap(),
                t["host"].as_str().unwrap()
            ),
            me
        );
        assert_eq!(t["argv"], serde_json::json!([name, "--secs", "60"]));
        assert_eq!(t["policy"]["tracking"], "tracked");
        assert_eq!(t["policy"]["instances"], instances);
        assert_eq!(t["policy"]["maintenance"], "refused");
        assert_eq!(t["started_in"], "ONLINE");
        assert_eq!(t["in_window"], false);
    }

    // PENDING, held by an `offline on` waiting for all three.
    let (on, progress) = waiting_on(
        &site,
        &[
            "--message",
            "Upgrading the database",
            "--retry-after",
            "600",
        ],
    );
    assert_eq!(progress, "3 pending sessions. * (0 sec)");
    let since = site.mode().record.since;
    assert_exact(
        &site.run(&["offline", "check"]),
        0,
        &["Status: PENDING - Active sessions: 3"],
    );
    assert_exact(
        &site.run(&["offline", "status", "--exit-code"]),
        3,
        &["Status: PENDING - Active sessions: 3"],
    );
    let v = site.run(&["offline", "status", "-v"]);
    assert_eq!(v.code(), Some(0), "{v}");
    let l = line_starting(&v.stdout, &format!("  since: {since} ("));
    assert!(
        l.ends_with(&format!(" ago), by {me} (pid {})", on.pid())),
        "{l}"
    );
    assert!(
        v.stdout
            .contains(&"  message: Upgrading the database".to_owned()),
        "{v}"
    );
    assert!(v.stdout.contains(&"  retry after: 600 s".to_owned()), "{v}");
    let j = site.status_json();
    assert_eq!(j["mode"], "PENDING");
    assert_eq!(j["since"], since.to_string());
    assert_eq!(j["by"], me);
    assert_eq!(j["pid"], on.pid());
    assert_eq!(j["message"], "Upgrading the database");
    assert_eq!(j["retry_after"], 600);
    assert_eq!(j["active_sessions"], 3);

    // OFFLINE, forced while all three are live; the waiter sees it.
    assert_exact(
        &site.run(&["offline", "on", "--force"]),
        0,
        &["Status: OFFLINE - Active sessions: 3"],
    );
    let out = on.finish();
    assert_exact(&out, 0, &["Status: OFFLINE - Active sessions: 3"]);
    assert_exact(
        &site.run(&["offline", "status"]),
        0,
        &["Status: OFFLINE - Active sessions: 3"],
    );
    assert_exact(
        &site.run(&["offline", "status", "--exit-code"]),
        4,
        &["Status: OFFLINE - Active sessions: 3"],
    );
    let j = site.status_json();
    assert_eq!(j["mode"], "OFFLINE");
    assert_eq!(j["by"], me);
    assert_eq!(j["message"], "Upgrading the database", "kept by --force");
    assert_eq!(j["active_sessions"], 3);

    // And back ONLINE.
    assert_exact(
        &site.run(&["offline", "off"]),
        0,
        &["Status: ONLINE - Active sessions: 3"],
    );
    assert_exact(
        &site.run(&["offline", "status", "--exit-code"]),
        0,
        &["Status: ONLINE - Active sessions: 3"],
    );
    let j = site.status_json();
    assert_eq!(j["mode"], "ONLINE");
    assert!(j["message"].is_null(), "{j:#}");
    assert_eq!(site.mode().mode, Mode::Online);
    drop((single, many));
}

#[test]
fn force_goes_offline_at_once_naming_what_is_still_live() {
    let site = CliSite::new(EXE);
    let me = user_at_host();
    let (mut sleeper, _) = site.start(&["sleeper", "--secs", "60"]);

    assert_exact(
        &site.run(&["offline", "activate", "--force"]),
        0,
        &["Status: OFFLINE - Active sessions: 1"],
    );
    assert_eq!(site.mode().mode, Mode::Offline);
    // With -v, what is still live; again while OFFLINE it stays so.
    let out = site.run(&["offline", "on", "--force", "-v"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stdout.len(), 2, "{out}");
    assert_eq!(out.stdout[0], "Status: OFFLINE - Active sessions: 1");
    assert!(
        out.stdout[1].starts_with(&format!(
            "  - command `sleeper` (pid {}, {me}, running for ",
            sleeper.pid()
        )),
        "{out}"
    );
    assert!(sleeper.is_running(), "--force stops nobody");
    // Nobody new gets in.
    let hello = site.run(&["hello"]);
    assert_eq!(hello.code(), Some(75), "{hello}");
    assert!(
        hello
            .stderr
            .contains("refusing to run `hello`: the site is OFFLINE"),
        "{hello}"
    );
    assert!(hello.stdout.is_empty(), "{hello}");

    // While OFFLINE, --force updates the message and retry-after (a time).
    assert_exact(
        &site.run(&[
            "offline",
            "on",
            "--force",
            "--message",
            "Back at six",
            "--retry-after",
            "2030-01-02T06:00:00Z",
        ]),
        0,
        &["Status: OFFLINE - Active sessions: 1"],
    );
    let v = site.run(&["offline", "status", "-v"]);
    assert!(
        v.stdout.contains(&"  message: Back at six".to_owned()),
        "{v}"
    );
    assert!(
        v.stdout
            .contains(&"  retry after: 2030-01-02T06:00:00.000Z".to_owned()),
        "{v}"
    );
    let j = site.status_json();
    assert_eq!(j["retry_after"], "2030-01-02T06:00:00.000Z");
    assert_eq!(j["message"], "Back at six");

    assert_exact(
        &site.run(&["offline", "deactivate"]),
        0,
        &["Status: ONLINE - Active sessions: 1"],
    );
    assert_exact(&site.run(&["hello"]), 0, &["Hello, world!"]);
}

/// `--retry-after` takes RFC 3339 with any UTC offset, as its help says,
/// and keeps the instant in UTC (what the record, status and JSON show);
/// a time without an offset, or with an impossible one, is a usage error
/// (exit 2) that says how to write it, and changes nothing.
#[test]
fn retry_after_takes_a_time_with_any_offset_and_keeps_it_in_utc() {
    let site = CliSite::new(EXE);
    for (given, utc) in [
        ("2099-01-01T00:00:00+14:00", "2098-12-31T10:00:00.000Z"),
        ("2099-01-01T00:00:00-05:30", "2099-01-01T05:30:00.000Z"),
        ("2099-01-01T00:00:00.5Z", "2099-01-01T00:00:00.500Z"),
        ("2099-01-01t00:00:00z", "2099-01-01T00:00:00.000Z"),
    ] {
        assert_exact(
            &site.run(&["offline", "on", "--force", "--retry-after", given]),
            0,
            &["Status: OFFLINE - Active sessions: 0"],
        );
        let v = site.run(&["offline", "status", "-v"]);
        assert!(
            v.stdout.contains(&format!("  retry after: {utc}")),
            "{given}: {v}"
        );
        assert_eq!(site.status_json()["retry_after"], utc, "{given}");
        assert_eq!(
            site.mode().record.retry_after,
            Some(maintenance_core::mode::RetryAfter::At(
                Timestamp::parse_rfc3339(utc).unwrap()
            )),
            "{given}"
        );
    }
    for (given, why) in [
        ("2099-01-01T00:00:00", "it has no UTC offset"),
        ("2099-01-01T00:00:00+24:00", "its offset is out of range"),
        ("2099-01-01T00:00:00+1400", "it has no UTC offset"),
        ("soon", "it has no UTC offset"),
    ] {
        let out = site.run(&["offline", "on", "--force", "--retry-after", given]);
        assert_eq!(out.code(), Some(2), "{given}: {out}");
        out.assert_clean_error(&[
            "--retry-after",
            &format!("{given:?} is not a time: {why}"),
            "2026-11-25T07:00:00+01:00",
        ]);
        assert_eq!(
            site.status_json()["retry_after"],
            "2099-01-01T00:00:00.000Z",
            "{given} changed nothing"
        );
    }
}

/// A `list` table row, split into its cells: the fixed columns, then the
/// rest (which may hold spaces) as the last cell.
fn cells(row: &str, fixed: usize) -> Vec<String> {
    let mut words = row.split_whitespace();
    let mut out: Vec<String> = (&mut words).take(fixed).map(str::to_owned).collect();
    out.push(words.collect::<Vec<_>>().join(" "));
    out
}

#[test]
fn list_shows_live_commands_and_sessions_as_a_table_and_as_json() {
    let site = CliSite::new(EXE);
    let me = user_at_host();

    assert_exact(
        &site.run(&["offline", "list"]),
        0,
        &["No live commands.", "", "No live sessions."],
    );
    let out = site.run(&["offline", "list", "--json"]);
    assert_eq!(out.code(), Some(0), "{out}");
    let j: serde_json::Value = serde_json::from_str(&out.stdout.join("\n")).unwrap();
    assert_eq!(
        j,
        serde_json::json!({"version": 1, "tasks": [], "sessions": []})
    );

    let (single, _) = site.start(&["sleeper", "--secs", "60"]);
    let (many, _) = site.start(&["sleeper-many", "--secs", "60"]);
    let alice = site.touch_session("alice");
    let bob = site.touch_session("bob");

    let out = site.run(&["offline", "list"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stderr, "");
    let lines = &out.stdout;
    assert_eq!(lines.len(), 7, "2 tables, a blank line between: {out}");
    let head = &lines[0];
    assert_eq!(
        head.split_whitespace().collect::<Vec<_>>(),
        ["COMMAND", "PID", "USER@HOST", "RUNNING", "FOR", "POLICY"],
        "{out}"
    );
    for (row, (name, p, policy)) in lines[1..3].iter().zip([
        (
            "sleeper",
            &single,
            "tracked, single, maintenance refused, drain wait",
        ),
        (
            "sleeper-many",
            &many,
            "tracked, concurrent, maintenance refused, drain wait",
        ),
    ]) {
        let c = cells(row, 4);
        assert_eq!(c[0], name, "{row}");
        assert_eq!(c[1], p.pid().to_string(), "{row}");
        assert_eq!(c[2], me, "{row}");
        assert!(c[3].ends_with('s'), "an age: {row}");
        assert_eq!(c[4], policy, "{row}");
        // Aligned under the header.
        assert_eq!(row.find(&c[1]), head.find("PID"), "{out}");
        assert_eq!(row.find(&c[4]), head.find("POLICY"), "{out}");
    }
    assert_eq!(lines[3], "");
    let head = &lines[4];
    assert_eq!(
        head.split_whitespace().collect::<Vec<_>>(),
        ["SESSION", "IDLE", "FOR", "EXPIRES", "IN"],
        "{out}"
    );
    let mut shorts: Vec<String> = lines[5..7].iter().map(|r| cells(r, 1)[0].clone()).collect();
    shorts.sort();
    let mut want = vec![alice.short().to_owned(), bob.short().to_owned()];
    want.sort();
    assert_eq!(shorts, want, "{out}");
    for row in &lines[5..7] {
        let c = cells(row, 2);
        assert!(c[1].ends_with('s'), "idle for: {row}");
        assert!(
            c[2].starts_with("15m ") || c[2].starts_with("14m "),
            "expires in: {row}"
        );
        assert_eq!(row.find(&c[2]), head.find("EXPIRES"), "{out}");
    }
    let text = out.stdout.join("\n");
    for key in [&alice, &bob] {
        assert!(!text.contains(key.as_str()), "only a short hash: {out}");
    }
    assert!(
        !text.contains("alice") && !text.contains("bob"),
        "never the id"
    );

    let out = site.run(&["offline", "list", "--json"]);
    assert_eq!(out.code(), Some(0), "{out}");
    let j: serde_json::Value = serde_json::from_str(&out.stdout.join("\n")).unwrap();
    assert_eq!(j["version"], 1);
    let tasks = j["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2, "{j:#}");
    for (t, (name, p, instances)) in tasks.iter().zip([
        ("sleeper", &single, "single"),
        ("sleeper-many", &many, "concurrent"),
    ]) {
        assert_eq!(t["name"], name);
        assert_eq!(t["pid"], p.pid());
        assert_eq!(t["policy"]["instances"], instances);
        assert_eq!(t["policy"]["drain"], "wait");
        assert_eq!(t["started_in"], "ONLINE");
    }
    let sessions = j["sessions"].as_array().unwrap();
    let mut shorts: Vec<&str> = sessions
        .iter()
        .map(|s| s["session"].as_str().unwrap())
        .collect();
    shorts.sort();
    assert_eq!(shorts, want);
    let now = std::time::SystemTime::now();
    for s in sessions {
        let t = |f: &str| -> std::time::SystemTime {
            serde_json::from_value::<Timestamp>(s[f].clone())
                .unwrap()
                .system_time()
        };
        // Shown on the wall clock through the boot's start rounded to the
        // second (the same for every reader): up to half a second either
        // way of the moment the bucket began.
        assert!(
            t("last_seen") <= now + std::time::Duration::from_secs(1),
            "{s}"
        );
        assert!(
            t("expires_at") > now + std::time::Duration::from_secs(800),
            "live for the session timeout: {s}"
        );
        assert_eq!(s.as_object().unwrap().len(), 3, "{s}");
    }
    assert!(
        SessionKey::parse(&format!("{:0<32}", shorts[0])).is_some(),
        "a hex hash"
    );
    drop((single, many));
}

/// The words of `text` (runs of letters and digits).
fn words(text: &str) -> Vec<&str> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect()
}

#[test]
fn a_wrong_verb_or_flag_is_clap_s_usage_error_with_exit_2() {
    let site = CliSite::new(EXE);
    for (args, needle) in [
        (
            &["offline", "bogus"][..],
            "error: unrecognized subcommand 'bogus'",
        ),
        (
            &["offline", "stauts"],
            "tip: a similar subcommand exists: 'status'",
        ),
        (
            &["offline", "on", "--bogus"],
            "error: unexpected argument '--bogus' found",
        ),
        (
            &["offline", "on", "--timeout", "soon"],
            "error: invalid value 'soon' for '--timeout <SECS>'",
        ),
        (
            &["offline", "status", "--json", "extra"],
            "error: unexpected argument 'extra' found",
        ),
        (
            &["offline", "run"],
            "error: the following required arguments were not provided",
        ),
    ] {
        let out = site.run(args);
        assert_eq!(out.code(), Some(2), "{args:?}: {out}");
        assert!(out.stderr.contains(needle), "{args:?}: {out}");
        assert!(
            out.stderr.contains("For more information, try '--help'."),
            "{args:?}: {out}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: {out}");
    }
    // No verb at all: the list of verbs, and 2.
    let out = site.run(&["offline"]);
    assert_eq!(out.code(), Some(2), "{out}");
    let text = out.text();
    for verb in [
        "status",
        "check",
        "on",
        "activate",
        "off",
        "deactivate",
        "list",
        "run",
    ] {
        assert!(words(&text).contains(&verb), "{verb} listed: {out}");
    }
    assert_eq!(site.mode().mode, Mode::Online, "nothing happened");
    assert_eq!(site.mode().record.generation, 0, "not even a write");
}

#[test]
fn a_wrong_verb_lists_the_verbs() {
    let site = CliSite::new(EXE);
    let out = site.run(&["offline", "bogus"]);
    assert_eq!(out.code(), Some(2), "{out}");
    for verb in ["status", "on", "off", "list", "run"] {
        assert!(
            words(&out.stderr).contains(&verb),
            "`{verb}` is not listed: {out}"
        );
    }
}

/// `status` counts sessions from the backend's summary, not from a listing:
/// for sessions spread over ten minutes of buckets, written by two
/// processes (one of them recorded twice), with a logout, its line, `-v`
/// lines and JSON keep their format, never count fewer than `list` lists,
/// and after a listing count exactly what it lists, with its last expiry.
#[test]
fn status_counts_sessions_over_many_buckets_as_list_lists_them_in_the_same_format() {
    if file_backend_only("writes sessions through FileBackend with a moved clock, into its buckets")
    {
        return;
    }
    let site = CliSite::new(EXE);
    let config = maintenance_core::Config::with_state_dir(site.state());
    let clock = maintenance_core::ManualClock::ago(std::time::Duration::from_secs(600));
    let earlier = maintenance_core::FileBackend::open(&config, clock.clone()).unwrap();
    let (_task, _) = site.start(&["sleeper", "--secs", "60"]);
    use maintenance_core::Backend as _;
    for i in 0..60 {
        earlier
            .touch_session(&SessionKey::of(format!("user-{i}").as_bytes()))
            .unwrap();
        clock.advance(std::time::Duration::from_secs(10));
    }
    site.end_session("user-7");
    // Another process records user-0 again, now: a second entry.
    site.touch_session("user-0");

    let before = site.status_json();
    let listed = site.run(&["offline", "list", "--json"]);
    assert_eq!(listed.code(), Some(0), "{listed}");
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout.join("\n")).unwrap();
    let n = listed["sessions"].as_array().unwrap().len();
    assert_eq!(n, 59);
    assert!(
        before["sessions"]["count"].as_u64().unwrap() >= n as u64,
        "never fewer than listed: {before:#}"
    );

    let j = site.status_json();
    assert_eq!(j["sessions"]["count"], n, "{j:#}");
    assert_eq!(j["sessions"]["last_expires_at"], last_expiry(&site));
    assert_eq!(j["active_sessions"], n + 1);
    assert_exact(
        &site.run(&["offline", "status"]),
        0,
        &[&format!("Status: ONLINE - Active sessions: {}", n + 1)],
    );
    let v = site.run(&["offline", "status", "-v"]);
    assert!(
        v.stdout
            .contains(&format!("  users: {n} live web session(s)")),
        "{v}"
    );
    let l = line_starting(
        &v.stdout,
        &format!("    - {n} web sessions (the last expires in "),
    );
    assert!(l.ends_with(&format!(", at {})", last_expiry(&site))), "{l}");
}

/// `HOST:PORT` of the PostgreSQL test server, as `status -v` names it.
fn postgres_host_port() -> String {
    let url = manage_tests::test_database_url().expect("the test server");
    let url = maintenance_core::database_url::DatabaseUrl::parse(&url).expect("its URL");
    url.endpoint()
}
