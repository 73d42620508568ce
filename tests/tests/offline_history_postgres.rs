//! The history and the read-only tier end to end on PostgreSQL, with the
//! real `manage` binary (`e2e-manage`) in real processes against a real
//! server (`$MANAGE_TEST_DATABASE_URL`, which `scripts/test` sets): `on`
//! waiting for a command killed by SIGKILL, `--force`, `off`, the
//! read-only tier at once and through its drain, and a waiter killed by
//! SIGKILL whose lapse several processes notice at once — read back with
//! `offline history --json` and as a table, each change once, in order.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use maintenance_core::Mode;
use maintenance_core::history::{Cause, EventKind};
use manage_tests::{CliSite, Proc, poll_until, test_database_url, user_at_host};

const EXE: &str = env!("CARGO_BIN_EXE_e2e-manage");

/// A fresh site of its own on the test server, and its state opened in
/// this process.
fn postgres_site(url: &str) -> (CliSite, Arc<dyn maintenance_core::Backend>) {
    let site = CliSite::on_postgres(EXE, url, "");
    let backend = site.backend();
    (site, backend)
}

fn wait_for_mode(backend: &Arc<dyn maintenance_core::Backend>, mode: Mode) {
    poll_until(&format!("the site {mode}"), || {
        (backend.mode().unwrap().mode == mode).then_some(())
    });
}

#[test]
fn the_history_of_every_change_reads_back_once_each_on_postgres() {
    let Some(url) = test_database_url() else {
        return;
    };
    let (site, backend) = postgres_site(&url);
    let me = user_at_host();

    // `on` waits for a command, which is then killed.
    let (mut sleeper, _) = site.start(&["sleeper", "--secs", "60"]);
    let on = site.spawn(&["offline", "on", "--message", "Upgrading"]);
    wait_for_mode(&backend, Mode::Pending);
    sleeper.kill9();
    assert_eq!(on.finish().code(), Some(0));
    assert_eq!(site.run(&["offline", "off"]).code(), Some(0));
    // `--force`, then `off`.
    assert_eq!(site.run(&["offline", "on", "--force"]).code(), Some(0));
    assert_eq!(site.run(&["offline", "off"]).code(), Some(0));
    // The read-only tier: at once, then through its drain.
    let out = site.run(&["offline", "on", "--read-only", "--force"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(site.run(&["offline", "off"]).code(), Some(0));
    let out = site.run(&["offline", "on", "--read-only"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(backend.mode().unwrap().mode, Mode::ReadOnly);
    assert_eq!(site.run(&["offline", "off"]).code(), Some(0));
    // A waiter killed by SIGKILL: PENDING lapses, and of several processes
    // that look at once, one records it.
    let (mut sleeper, _) = site.start(&["sleeper", "--secs", "60"]);
    let mut on = site.spawn(&["offline", "on"]);
    wait_for_mode(&backend, Mode::Pending);
    on.kill9();
    sleeper.kill9();
    site.lapsed_to(Mode::Online);
    let lookers: Vec<Proc> = (0..4).map(|_| site.spawn(&["offline", "status"])).collect();
    for p in lookers {
        assert_eq!(p.finish().code(), Some(0));
    }

    let entries = site.history(100);
    use Cause::*;
    use Mode::*;
    assert_eq!(
        entries
            .iter()
            .map(|e| (e.cause, e.from, e.to, e.forced))
            .collect::<Vec<_>>(),
        [
            (On, Online, Pending, false),
            (On, Pending, Offline, false),
            (Off, Offline, Online, false),
            (Force, Online, Offline, true),
            (Off, Offline, Online, false),
            (Force, Online, ReadOnly, true),
            (Off, ReadOnly, Online, false),
            (On, Online, ReadOnlyPending, false),
            (On, ReadOnlyPending, ReadOnly, false),
            (Off, ReadOnly, Online, false),
            (On, Online, Pending, false),
            (Lapsed, Pending, Online, false),
        ],
        "{entries:#?}"
    );
    assert!(
        entries
            .iter()
            .all(|e| e.kind == EventKind::Mode && e.by == me)
    );
    assert!(entries.windows(2).all(|w| w[0].at <= w[1].at), "in order");
    let offline = &entries[1];
    assert_eq!(offline.message.as_deref(), Some("Upgrading"));
    let waited = offline.waited.as_ref().expect("how long it waited");
    assert_eq!(waited.held_by.tasks.len(), 1, "{waited:?}");
    assert_eq!(waited.held_by.tasks[0].name, "sleeper");
    let lapse = &entries[11];
    assert!(lapse.noticed_by.is_some(), "{lapse:#?}");
    // Later looks record nothing more.
    assert_eq!(site.run(&["offline", "status"]).code(), Some(0));
    assert_eq!(site.history(100), entries);
    // The last few, and the table.
    assert_eq!(site.history(2), entries[10..]);
    let out = site.run(&["offline", "history", "-n", "3"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(out.stdout.len(), 4, "a header and three rows: {out}");
    assert!(out.stdout[0].starts_with("TIME"), "{out}");
    assert!(out.stdout[3].contains("PENDING → ONLINE"), "{out}");
}
