//! The runner on the postgres backend, end to end: an external command's
//! child keeps its task — its lock connection's socket, inherited — after
//! the runner is killed with SIGKILL (I3), and `offline on` goes OFFLINE
//! the moment that child dies. Needs `$MANAGE_TEST_DATABASE_URL` (skipped
//! without it, failing under CI or scripts/test).

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use maintenance_core::{Backend, Mode};
use manage_tests::{CliSite, HANG_GUARD, kill9_pid};

const EXE: &str = env!("CARGO_BIN_EXE_e2e-manage");

/// A site of its own on the test server, or `None` (the test is skipped,
/// saying so) when there is none and none is expected.
fn postgres_site() -> Option<(CliSite, Arc<dyn Backend>)> {
    let url = std::env::var("MANAGE_TEST_DATABASE_URL").unwrap_or_default();
    if url.is_empty() {
        let expected = ["CI", "MANAGE_TEST_EXPECT_POSTGRES"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
        assert!(
            !expected,
            "PostgreSQL is expected here but $MANAGE_TEST_DATABASE_URL is not set: run scripts/test"
        );
        eprintln!("skipped: this test needs PostgreSQL; set $MANAGE_TEST_DATABASE_URL");
        return None;
    }
    let site_name = format!(
        "e2e-{}-{}",
        std::process::id(),
        maintenance_core::random::hex::<6>()
    );
    let site = CliSite::in_state_dir(
        EXE,
        &format!(
            "backend = \"postgres\"\ndatabase_url = \"{url}\"\nsite = \"{site_name}\"\n\
             [postgres]\nschema = \"manage_test\"\n"
        ),
    );
    let config = maintenance_core::Config::from_file(site.dir().join("manage.toml")).unwrap();
    let backend =
        maintenance_core::backend::open(&config, maintenance_core::SystemClock::shared()).unwrap();
    Some((site, backend))
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG_GUARD;
    while !f() {
        assert!(Instant::now() < deadline, "not {what} after {HANG_GUARD:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn an_external_commands_child_keeps_its_task_after_the_runner_is_killed() {
    let Some((site, backend)) = postgres_site() else {
        return;
    };
    site.external("worker", "#!/bin/sh\necho \"started $$\"\nexec sleep 600\n");
    let (mut runner, command) = site.start(&["worker"]);
    let command: u32 = command.parse().unwrap();
    runner.kill9();
    let tasks = backend.tasks().unwrap();
    assert_eq!(
        tasks.len(),
        1,
        "the command still holds its task: {tasks:?}"
    );
    assert_eq!(tasks[0].name, "worker");
    // Its instance lock went along: a second run is refused.
    let again = site.run(&["worker"]);
    assert_eq!(again.code(), Some(75), "{again}");
    // `offline on` waits for it, and goes OFFLINE once it is killed too.
    let on = site.spawn(&["offline", "on", "--timeout", "120"]);
    wait_until("PENDING", || backend.mode().unwrap().mode == Mode::Pending);
    kill9_pid(command);
    let out = on.finish();
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(backend.mode().unwrap().mode, Mode::Offline);
    assert!(backend.tasks().unwrap().is_empty());
    let off = site.run(&["offline", "off"]);
    assert_eq!(off.code(), Some(0), "{off}");
    assert_eq!(backend.mode().unwrap().mode, Mode::Online);
}

#[test]
fn doctor_status_and_migrate_state_speak_of_the_server_never_its_password() {
    let Some((site, _backend)) = postgres_site() else {
        return;
    };
    let password = std::env::var("MANAGE_TEST_DATABASE_URL")
        .ok()
        .and_then(|u| {
            Some(
                u.split_once("://")?
                    .1
                    .split_once('@')?
                    .0
                    .split_once(':')?
                    .1
                    .to_owned(),
            )
        })
        .unwrap_or_default();
    let doctor = site.run(&["offline", "doctor"]);
    assert_eq!(doctor.code(), Some(0), "{doctor}");
    let text = doctor.stdout.join("\n");
    assert!(
        text.contains("schema manage_test is at version 1"),
        "{doctor}"
    );
    assert!(text.contains("no pooler in transaction mode"), "{doctor}");
    assert!(
        text.contains("healthy: PostgreSQL at 127.0.0.1:"),
        "{doctor}"
    );
    let status = site.run(&["-v", "offline", "status"]);
    assert_eq!(status.code(), Some(0), "{status}");
    let manage_toml = site.dir().join("manage.toml");
    assert!(
        status
            .stdout
            .iter()
            .any(|l| l.trim_start().starts_with("state: PostgreSQL at ")
                && l.ends_with(&format!("(from {})", manage_toml.display()))),
        "{status}"
    );
    let migrate = site.run(&["offline", "migrate-state"]);
    assert_eq!(migrate.code(), Some(0), "{migrate}");
    assert!(
        migrate.stdout.join("\n").contains("nothing to migrate"),
        "{migrate}"
    );
    for out in [&doctor, &status, &migrate] {
        assert!(
            password.is_empty() || !out.to_string().contains(&password),
            "{out}"
        );
    }
}

#[test]
fn a_nested_run_joins_its_task_by_its_secret_wherever_it_runs() {
    let Some((site, backend)) = postgres_site() else {
        return;
    };
    // The nested run starts far from manage.toml: it finds the site's
    // database through MANAGE_CONFIG, and its task through MANAGE_TASK.
    site.external(
        "outer",
        "#!/bin/sh\ncd /\n\"$MANAGE\" task-info\necho \"outer done $?\"\n",
    );
    let out = site.run(&["outer"]);
    assert_eq!(out.code(), Some(0), "{out}");
    let info = out
        .stdout
        .iter()
        .find(|l| l.starts_with("task "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(info.contains("task-info in ONLINE, joined "), "{out}");
    assert!(out.stdout.iter().any(|l| l == "outer done 0"), "{out}");
    assert!(backend.tasks().unwrap().is_empty(), "both runs ended");
}
