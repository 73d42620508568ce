//! `manage offline run` on the PostgreSQL backend, end to end: the real
//! `manage` binary (`e2e-manage`) against a real server. The state store
//! may be the app's own database, and a migration may restart every
//! connection to it: a command that ends every connection of the site
//! (`pg_terminate_backend`) does not end the run — it takes its window
//! again on a new connection, the site stays OFFLINE meanwhile, and
//! afterwards the run restores the mode and exits with the command's code,
//! as on files. And a run killed mid-command leaves the site OFFLINE with
//! status naming it, as on files.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use maintenance_core::Mode;
use manage_tests::{
    CliSite, Proc, assert_exact, poll_until, psql, psql_path, test_database_url, user_at_host,
};

const EXE: &str = env!("CARGO_BIN_EXE_e2e-manage");

/// The server process holding the site's window (advisory key object 2,
/// two-int form, on a connection of the site), if any.
fn window_holder(url: &str, site: &str) -> Option<i64> {
    psql(
        url,
        &format!(
            "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.objid = 2 AND l.granted \
             AND l.mode = 'ExclusiveLock' AND a.application_name = '{site}'"
        ),
    )
    .parse()
    .ok()
}

/// `offline status --json` of `site`, once it satisfies `done`.
fn status_once(site: &CliSite, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
    poll_until(what, || {
        let j = site.status_json();
        done(&j).then_some(())
    });
}

fn wait_for_file(path: &Path) -> String {
    poll_until(&format!("{} written", path.display()), || {
        std::fs::read_to_string(path).ok()
    })
}

#[test]
fn a_run_whose_command_ends_every_connection_of_the_site_goes_on_and_restores_the_mode() {
    let Some(url) = test_database_url() else {
        return;
    };
    let site = CliSite::on_postgres(EXE, &url, "");
    let name = site.postgres_site().unwrap().to_owned();
    let dir = site.dir().to_owned();
    // What a migration that restarts the app's database connections does to
    // the site's: every one of them ended by the server, at once.
    site.external(
        "restart-db",
        &format!(
            "#!/bin/sh\n\
             while [ ! -e '{d}/terminate' ]; do sleep 0.02; done\n\
             '{psql}' -X -At -d \"$RESTART_DB_URL\" -c \"SELECT count(pg_terminate_backend(pid)) \
             FROM pg_stat_activity WHERE application_name = '{name}' AND pid <> pg_backend_pid()\" \
             > '{d}/terminated.tmp' && mv '{d}/terminated.tmp' '{d}/terminated'\n\
             while [ ! -e '{d}/go' ]; do sleep 0.02; done\n\
             exit 7\n",
            d = dir.display(),
            psql = psql_path().display(),
        ),
    );
    let mut cmd = site.command(&["offline", "run", "--", "restart-db"]);
    cmd.env("RESTART_DB_URL", &url);
    let run = Proc::spawn(cmd);
    let pid = run.pid();
    status_once(&site, "the command running inside the window", |j| {
        j["window"]["state"] == "running" && j["window"]["run"]["pid"] == pid
    });
    let before = window_holder(&url, &name).expect("the window is held");

    std::fs::write(dir.join("terminate"), "").unwrap();
    let ended: usize = wait_for_file(&dir.join("terminated"))
        .trim()
        .parse()
        .unwrap();
    assert!(
        ended >= 2,
        "the window's and the command's task's connections at least: {ended}"
    );
    // Taken again, by the same run, on a new connection; the site stayed
    // OFFLINE.
    poll_until("the window taken again on a new connection", || {
        window_holder(&url, &name).filter(|p| *p != before)
    });
    let j = site.status_json();
    assert_eq!(j["mode"], "OFFLINE", "{j:#}");
    assert_eq!(j["window"]["state"], "running", "{j:#}");
    assert_eq!(j["window"]["run"]["pid"], pid, "{j:#}");
    // The window still keeps the site closed mid-command.
    let off = site.run(&["offline", "off"]);
    assert_eq!(off.code(), Some(75), "{off}");
    assert_eq!(site.mode().mode, Mode::Offline);

    std::fs::write(dir.join("go"), "").unwrap();
    let out = run.finish();
    assert_eq!(out.code(), Some(7), "the command's own code: {out}");
    assert!(!out.stderr.contains("error"), "{out}");
    assert_exact(
        &site.run(&["offline", "status", "--exit-code"]),
        0,
        &["Status: ONLINE - Active sessions: 0"],
    );
    let j = site.status_json();
    assert!(j["window"].is_null(), "{j:#}");
    assert_eq!(window_holder(&url, &name), None);
}

#[test]
fn a_run_killed_mid_command_leaves_the_site_offline_and_status_names_it() {
    let Some(url) = test_database_url() else {
        return;
    };
    let site = CliSite::on_postgres(EXE, &url, "");
    let me = user_at_host();
    let (mut run, _) = site.start(&["offline", "run", "--", "sleeper", "--secs", "30"]);
    assert_eq!(site.mode().mode, Mode::Offline);
    let pid = run.pid();
    run.kill9();
    // The server sees the connection end at once; the record stays.
    status_once(&site, "the window abandoned", |j| {
        j["window"]["state"] == "abandoned"
    });
    let j = site.status_json();
    assert_eq!(j["mode"], "OFFLINE", "{j:#}");
    assert_eq!(j["window"]["run"]["pid"], pid, "{j:#}");
    let v = site.run(&["offline", "status", "-v"]);
    let want = format!(
        "  window: left OFFLINE by `offline run -- sleeper --secs 30` (pid {pid}, {me}), which \
         was killed while its command ran; check the command's work, then `offline off`"
    );
    assert!(v.stdout.contains(&want), "{v}");
    assert_eq!(site.run(&["hello"]).code(), Some(75), "nobody new gets in");
    // `off` needs no --force for a dead run, and clears the record.
    let off = site.run(&["offline", "off"]);
    assert_eq!(off.code(), Some(0), "{off}");
    let j = site.status_json();
    assert_eq!(j["mode"], "ONLINE", "{j:#}");
    assert!(j["window"].is_null(), "{j:#}");
}
