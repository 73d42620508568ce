//! Tests of the schema's versions and migrations: the rule of `schema.rs`,
//! an additive migration under running binaries, `offline doctor`'s checks
//! of the schema (versions, privileges), and the advisory keys against an
//! application's own one-bigint locks on the same numbers. Against the
//! server `$MANAGE_TEST_DATABASE_URL` names, as `tests.rs`.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use super::super::connect::Conn;
use super::super::tests::{admin, fresh_schema, open, with_url};
use super::super::{PostgresBackend, doctor, keys, runtime, sql};
use super::{MIGRATIONS, Migration, SchemaState, VERSION, not_additive, rule_broken};
use crate::backend::{Backend, ModeChange, PendingStart};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::conformance::{postgres_available, postgres_test_config};
use crate::error::Result;
use crate::history::HistoryQuery;
use crate::mode::Mode;
use crate::session::SessionKey;
use crate::task::{CommandTask, TaskOptions};
use crate::transition;

/// An additive version 2 as a real one would be: a column with a default
/// on every table version 1 reads and writes, and a table of its own.
static ADDITIVE: &[Migration] = &[Migration {
    version: 2,
    readable_by: 1,
    sql: |s| {
        format!(
            "DO $m$ DECLARE t record; BEGIN \
             FOR t IN SELECT relname FROM pg_class WHERE relnamespace = '{s}'::regnamespace \
             AND relkind = 'r' AND relname <> 'schema_version' LOOP \
             EXECUTE format('ALTER TABLE {s}.%I ADD COLUMN added_in_2 text NOT NULL DEFAULT %L', \
             t.relname, 'later'); \
             END LOOP; END $m$; \
             CREATE TABLE {s}.added_in_2 (site text PRIMARY KEY, n integer NOT NULL DEFAULT 0)"
        )
    },
}];

#[test]
fn migrations_are_additive() {
    assert_eq!(rule_broken(MIGRATIONS, VERSION), Vec::<String>::new());
    assert_eq!(rule_broken(ADDITIVE, 2), Vec::<String>::new());
    for good in [
        "CREATE TABLE \"s\".t (a integer)",
        "ALTER TABLE \"s\".t ADD COLUMN b integer",
        "ALTER TABLE \"s\".t ADD COLUMN b integer NOT NULL DEFAULT 0, ADD COLUMN c text",
        "CREATE INDEX t_by_a ON \"s\".t (a)",
        "CREATE SEQUENCE \"s\".more_keys",
    ] {
        assert_eq!(not_additive(good), None, "{good}");
    }
    for bad in [
        "DROP TABLE \"s\".t",
        "ALTER TABLE \"s\".t DROP COLUMN a",
        "ALTER TABLE \"s\".t RENAME COLUMN a TO b",
        "alter table \"s\".t alter column a type bigint",
        "ALTER TABLE \"s\".t ALTER COLUMN a SET NOT NULL",
        "ALTER TABLE \"s\".t ADD COLUMN b integer NOT NULL",
        "ALTER TABLE \"s\".t ADD COLUMN b integer DEFAULT 0, ADD COLUMN c text NOT NULL",
        "ALTER TABLE \"s\".t ADD CONSTRAINT a_positive CHECK (a > 0)",
        "CREATE UNIQUE INDEX t_a ON \"s\".t (a)",
        "UPDATE \"s\".t SET a = 1",
        "DELETE FROM \"s\".t",
        "TRUNCATE \"s\".t",
    ] {
        assert!(not_additive(bad).is_some(), "{bad}");
    }
    // Versions in order from 2, readable by the binaries before them, and
    // VERSION the last.
    let step = |version, readable_by| Migration {
        version,
        readable_by,
        sql: |s| format!("CREATE TABLE {s}.t (a integer)"),
    };
    assert_eq!(rule_broken(&[step(2, 1), step(4, 1)], 4).len(), 1);
    assert_eq!(rule_broken(&[step(3, 1)], 3).len(), 1);
    assert_eq!(rule_broken(&[step(2, 2)], 2).len(), 1);
    assert_eq!(rule_broken(&[step(2, 1)], 1).len(), 1);
    assert_eq!(rule_broken(&[], 2).len(), 1);
    let dropping = [Migration {
        version: 2,
        readable_by: 1,
        sql: |s| format!("ALTER TABLE {s}.modes DROP COLUMN record"),
    }];
    assert!(rule_broken(&dropping, 2)[0].contains("DROP"));
}

fn backend(config: &Config) -> PostgresBackend {
    PostgresBackend::open(config, SystemClock::shared()).unwrap()
}

/// Where the schema stands for a binary that knows `migrations`, creating
/// it first as such a binary would when `create`.
fn state_for(
    config: &Config,
    migrations: &'static [Migration],
    create: bool,
) -> Result<SchemaState> {
    let b = backend(config);
    let inner = Arc::clone(&b.inner);
    runtime::block_on(async move {
        let conn = inner.target.connect().await?;
        if create {
            super::ensure(&conn.client, &inner.schema, migrations).await
        } else {
            super::state(&conn.client, &inner.schema, migrations).await
        }
        .map_err(|e| inner.pg_error(e))
    })
}

/// The binary's operations, each area's tables: a task's start and end, a
/// mode change each way and its history, a drain begun and left (its
/// waiter), a session touched and ended, a write in flight.
fn exercise(b: &Arc<dyn Backend>, when: &str) {
    let change = ModeChange::by_this_process();
    let task = CommandTask::start("exercise", TaskOptions::new(Arc::clone(b)))
        .unwrap_or_else(|e| panic!("{when}: a task start: {e}"));
    assert!(
        b.tasks().unwrap().iter().any(|t| t.name == "exercise"),
        "{when}"
    );
    drop(task);
    assert!(
        !b.tasks().unwrap().iter().any(|t| t.name == "exercise"),
        "{when}: the task ended"
    );
    let recorded = b.history(&HistoryQuery::default()).unwrap().entries.len();
    transition::force(b.as_ref(), &change).unwrap_or_else(|e| panic!("{when}: force: {e}"));
    assert_eq!(b.mode().unwrap().mode, Mode::Offline, "{when}");
    transition::deactivate(b.as_ref(), &change, false).unwrap();
    assert_eq!(b.mode().unwrap().mode, Mode::Online, "{when}");
    assert_eq!(
        b.history(&HistoryQuery::default()).unwrap().entries.len(),
        recorded + 2,
        "{when}: both changes recorded"
    );
    let PendingStart::Waiting { waiter, .. } = b.begin_pending(&change).unwrap() else {
        panic!("{when}: the site was offline");
    };
    assert_eq!(b.mode().unwrap().mode, Mode::Pending, "{when}");
    b.leave_pending(waiter, &change).unwrap();
    assert_eq!(b.mode().unwrap().mode, Mode::Online, "{when}");
    let key = SessionKey::of(b"exercise-session");
    b.touch_session(&key).unwrap();
    assert!(b.session(&key).unwrap().is_some(), "{when}");
    b.end_session(&key).unwrap();
    assert!(b.session(&key).unwrap().is_none(), "{when}");
    let writes = b.begin_writes().unwrap();
    assert_eq!(b.writes_in_flight().unwrap().len(), 1, "{when}");
    drop(writes);
}

/// A rolling deploy: binaries of version 1 run, a binary of version 2
/// migrates under them, and the binaries of version 1 — one running
/// throughout, with a task live across the change, and one started after —
/// go on working on the schema at 2.
#[test]
fn an_additive_migration_keeps_every_operation_working() {
    if !postgres_available() {
        return;
    }
    let schema = fresh_schema();
    let config = postgres_test_config(&schema);
    let running = open(&config);
    exercise(&running, "at version 1");
    let across = CommandTask::start(
        "across-the-migration",
        TaskOptions::new(Arc::clone(&running)),
    )
    .unwrap();
    // Version 2 reads the schema at 1 (not refused: pending).
    assert_eq!(
        state_for(&config, ADDITIVE, false).unwrap(),
        SchemaState::Usable {
            version: 1,
            pending: vec![2]
        }
    );
    assert_eq!(backend(&config).migrate_with(ADDITIVE).unwrap(), vec![2]);
    let added = admin(
        &config,
        &format!(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = '{schema}' \
             AND column_name = 'added_in_2'"
        ),
    );
    assert!(sql::int(&added[0][0], 0) >= 9, "{added:?}");
    // Version 1 uses the schema at 2, readable by 1.
    assert_eq!(
        backend(&config).schema_state().unwrap(),
        SchemaState::Usable {
            version: 2,
            pending: vec![]
        }
    );
    assert!(
        running
            .tasks()
            .unwrap()
            .iter()
            .any(|t| t.name == "across-the-migration"),
        "the task live across the migration"
    );
    exercise(&running, "at version 2, running throughout");
    exercise(&open(&config), "at version 2, started after");
    drop(across);
    assert!(running.tasks().unwrap().is_empty());
    // A schema version 1 cannot read is refused.
    admin(
        &config,
        &format!("INSERT INTO {schema}.schema_version (version, readable_by) VALUES (3, 3)"),
    );
    let err = open(&config).mode().unwrap_err().to_string();
    assert!(
        err.contains(&format!("schema {schema} is at version 3")) && err.contains("upgrade manage"),
        "{err}"
    );
    admin(&config, &format!("DROP SCHEMA {schema} CASCADE"));
}

/// A binary that knows migrations creates a new schema at its own version,
/// not at 1 (on which its code, written for N−1 and N, would not run).
#[test]
fn a_new_schema_is_created_at_the_binarys_own_version() {
    if !postgres_available() {
        return;
    }
    let schema = fresh_schema();
    let config = postgres_test_config(&schema);
    assert_eq!(
        state_for(&config, ADDITIVE, true).unwrap(),
        SchemaState::Usable {
            version: 2,
            pending: vec![]
        }
    );
    let rows = admin(
        &config,
        &format!(
            "SELECT string_agg(version::text, ',' ORDER BY version), \
             to_regclass('{schema}.added_in_2') IS NOT NULL FROM {schema}.schema_version"
        ),
    );
    assert_eq!(sql::text(&rows[0][0], 0), "1,2");
    assert!(sql::boolean(&rows[0][0], 1));
    assert_eq!(
        backend(&config).migrate_with(ADDITIVE).unwrap(),
        Vec::<i64>::new()
    );
    exercise(&open(&config), "created at version 2");
    admin(&config, &format!("DROP SCHEMA {schema} CASCADE"));
}

fn finding<'a>(findings: &'a [doctor::Finding], about: &str) -> &'a doctor::Finding {
    findings
        .iter()
        .find(|f| f.text.contains(about))
        .unwrap_or_else(|| panic!("no finding about {about:?}: {findings:?}"))
}

/// `offline doctor` finds each privilege the backend needs missing — the
/// sequences task and instance keys come from included — and a schema
/// behind, ahead of or beyond this binary.
#[test]
fn doctor_checks_every_privilege_and_the_schemas_version() {
    if !postgres_available() {
        return;
    }
    let schema = fresh_schema();
    let config = postgres_test_config(&schema);
    open(&config).mode().unwrap();
    let role = format!("lacking_{}", crate::random::hex::<4>());
    admin(
        &config,
        &format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'pw'; GRANT USAGE ON SCHEMA {schema} TO {role}; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}"
        ),
    );
    let as_role = with_url(&config, |u| {
        let rest = u.split_once('@').unwrap().1;
        format!("postgres://{role}:pw@{rest}")
    });
    let privileges = |c: &Config| {
        let findings = doctor::doctor(&backend(c));
        findings
            .iter()
            .find(|f| f.text.contains("this user"))
            .cloned()
            .unwrap_or_else(|| panic!("{findings:?}"))
    };
    // Every table, no sequence: a task start fails on nextval.
    let f = privileges(&as_role);
    assert!(
        f.problem
            && f.text
                .contains("USAGE on sequences instance_keys, lock_keys")
            && f.text.contains("GRANT USAGE ON ALL SEQUENCES"),
        "{f:?}"
    );
    let err = CommandTask::start("needs-a-key", TaskOptions::new(open(&as_role)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("permission denied for sequence"), "{err}");
    admin(
        &config,
        &format!("GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}"),
    );
    let f = privileges(&as_role);
    assert!(!f.problem, "{f:?}");
    drop(CommandTask::start("needs-a-key", TaskOptions::new(open(&as_role))).unwrap());
    // Reading alone is not enough (each privilege is checked, not any one).
    admin(
        &config,
        &format!("REVOKE INSERT ON {schema}.tasks, {schema}.sessions FROM {role}"),
    );
    let f = privileges(&as_role);
    assert!(
        f.problem && f.text.contains("on tables sessions, tasks"),
        "{f:?}"
    );
    admin(&config, &format!("DROP OWNED BY {role}; DROP ROLE {role}"));
    // Versions: pending for a binary that knows 2, then the newest it
    // knows; newer but readable for this one; beyond it.
    let b = backend(&config);
    let pending = doctor::doctor_with(&b, ADDITIVE);
    let f = finding(&pending, "is at version 1");
    assert!(
        f.problem
            && f.text.contains("migrations 2 are pending")
            && f.text.contains("migrate-state"),
        "{f:?}"
    );
    assert!(!finding(&doctor::doctor(&b), "is at version 1").problem);
    b.migrate_with(ADDITIVE).unwrap();
    let f = finding(&doctor::doctor_with(&b, ADDITIVE), "is at version 2").clone();
    assert!(
        !f.problem && f.text.contains("the newest this binary knows"),
        "{f:?}"
    );
    let f = finding(&doctor::doctor(&b), "is at version 2").clone();
    assert!(
        !f.problem
            && f.text
                .contains("newer than this binary's 1 and readable by it"),
        "{f:?}"
    );
    admin(
        &config,
        &format!("INSERT INTO {schema}.schema_version (version, readable_by) VALUES (3, 3)"),
    );
    let f = finding(&doctor::doctor(&b), "is at version 3").clone();
    assert!(f.problem && f.text.contains("upgrade manage"), "{f:?}");
    admin(&config, &format!("DROP SCHEMA {schema} CASCADE"));
}

/// A connection of the test's own, as an application's would be.
struct Stranger {
    conn: Arc<Conn>,
    backend: PostgresBackend,
}

impl Stranger {
    fn new(config: &Config) -> Self {
        let backend = backend(config);
        let inner = Arc::clone(&backend.inner);
        let conn = runtime::block_on(async move { inner.target.connect().await }).unwrap();
        Stranger {
            conn: Arc::new(conn),
            backend,
        }
    }

    fn run(&self, statements: &str) -> Vec<sql::Rows> {
        let (conn, inner) = (Arc::clone(&self.conn), Arc::clone(&self.backend.inner));
        let statements = statements.to_owned();
        runtime::block_on(async move {
            sql::run(&conn.client, &statements)
                .await
                .map_err(|e| inner.pg_error(e))
        })
        .unwrap()
    }

    fn count(&self, statements: &str) -> i64 {
        sql::int(&self.run(statements)[0][0], 0)
    }
}

/// The one-bigint key with the bits of the two-int key `(class, object)`.
fn same_bits(class: i32, object: &str) -> String {
    format!("(({class}::bigint << 32) | (({object})::bigint & 4294967295))")
}

/// keys.rs: every key is of the two-int form, which PostgreSQL keeps apart
/// from the one-bigint form, so an application's own
/// `pg_advisory_lock(bigint)` with the very same bits blocks no mode
/// change, task start or drain of ours, and ours block none of its.
#[test]
fn an_applications_own_advisory_locks_on_the_same_numbers_block_nothing() {
    if !postgres_available() {
        return;
    }
    // A schema of its own: nobody else draws from its sequences.
    let schema = fresh_schema();
    let config = postgres_test_config(&schema);
    let b = open(&config);
    b.mode().unwrap();
    let class = keys::site_class(&schema, &config.postgres.site);
    let app = Stranger::new(&config);
    // The reserved keys, the next task and waiter keys, and the instance
    // keys of the next names, held exclusively.
    let next = |seq: &str| app.count(&format!("SELECT last_value FROM {schema}.{seq}"));
    let (lock_keys, instance_keys) = (next("lock_keys"), next("instance_keys"));
    let span = 16;
    let reserved = [keys::GATE, keys::WINDOW, keys::SCHEDULE, keys::HISTORY];
    let taken = app.count(&format!(
        "SELECT count(pg_advisory_lock({})) FROM (SELECT unnest(ARRAY{reserved:?}) AS k \
         UNION ALL SELECT generate_series({lock_keys}, {lock_keys} + {span}) \
         UNION ALL SELECT -generate_series({instance_keys}, {instance_keys} + {span})) keys",
        same_bits(class, "k")
    ));
    assert_eq!(taken, 4 + 2 * (span + 1));
    // Held, on the very numbers of ours (classid, objid), one-bigint.
    let gate = app.count(&format!(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND pid = pg_backend_pid() AND objsubid = 1 \
         AND classid::bigint = ({class}::bigint & 4294967295) AND objid::bigint = {}",
        keys::GATE
    ));
    assert_eq!(gate, 1);
    let (tx, rx) = std::sync::mpsc::channel();
    let ours = Arc::clone(&b);
    std::thread::spawn(move || {
        let change = ModeChange::by_this_process();
        transition::force(ours.as_ref(), &change).unwrap();
        transition::deactivate(ours.as_ref(), &change, false).unwrap();
        let PendingStart::Waiting { waiter, .. } = ours.begin_pending(&change).unwrap() else {
            panic!("the site was offline");
        };
        ours.leave_pending(waiter, &change).unwrap();
        let task = CommandTask::start("beside-the-app", TaskOptions::new(Arc::clone(&ours)));
        let _ = tx.send((ours.mode().map(|v| v.mode), task));
    });
    let (mode, task) = rx
        .recv_timeout(Duration::from_secs(300))
        .expect("a mode change, a drain and a task start beside the application's locks");
    assert_eq!(mode.unwrap(), Mode::Online);
    let task = task.unwrap();
    // The task's key and its instance key were among the numbers held.
    let site = sql::lit(&config.postgres.site);
    let key = app.count(&format!(
        "SELECT key FROM {schema}.tasks WHERE site = {site} AND name = 'beside-the-app'"
    ));
    let instance = app.count(&format!(
        "SELECT key FROM {schema}.instances WHERE site = {site} AND name = 'beside-the-app'"
    ));
    assert!(
        (lock_keys..=lock_keys + span).contains(&key),
        "task key {key} outside {lock_keys}..={}",
        lock_keys + span
    );
    assert!(
        (instance_keys..=instance_keys + span).contains(&instance),
        "instance {instance} outside {instance_keys}..={}",
        instance_keys + span
    );
    // The reverse: with our task's keys held, the application takes the
    // same numbers for itself.
    app.run("SELECT pg_advisory_unlock_all()");
    let got = app.count(&format!(
        "SELECT count(*) FILTER (WHERE pg_try_advisory_lock(k)) FROM (VALUES ({}), ({})) v(k)",
        same_bits(class, &key.to_string()),
        same_bits(class, &keys::instance_key(instance as i32).to_string())
    ));
    assert_eq!(got, 2, "the application's locks on our task's numbers");
    assert_eq!(b.tasks().unwrap().len(), 1, "our task is still live");
    drop(task);
    assert!(b.tasks().unwrap().is_empty());
    drop(app);
    admin(&config, &format!("DROP SCHEMA {schema} CASCADE"));
}

/// A fresh site in a schema of the tests' own at version 2 ([`ADDITIVE`]):
/// the areas whose tables [`exercise`] does not touch run on it below.
fn migrated_state() -> crate::conformance::FreshState {
    let config = postgres_test_config("manage_test_v2");
    backend(&config).migrate_with(ADDITIVE).unwrap();
    crate::conformance::FreshState::new(
        move |clock| Arc::new(PostgresBackend::open(&config, clock).unwrap()),
        (),
    )
    .with_server_clock(Duration::from_secs(5))
}

/// The window's and the schedules' cases, by a binary of version 1 on a
/// schema at 2.
mod on_a_migrated_schema {
    crate::backend_conformance!(
        super::migrated_state;
        if crate::conformance::postgres_available;
        areas: window, schedules
    );
}
