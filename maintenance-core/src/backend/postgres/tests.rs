//! The postgres backend's own tests, against the server
//! `$MANAGE_TEST_DATABASE_URL` names (skipped without it, failing under CI
//! or `scripts/test`): connection errors, the schema's creation, versions
//! and migrations, the descriptor a child inherits, calls from inside a
//! tokio runtime.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::schema::{Migration, SchemaState};
use super::{PostgresBackend, sql};
use crate::backend::{Backend, ModeChange, PendingStart};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::conformance::{postgres_available, postgres_test_config};
use crate::database_url::DatabaseUrl;
use crate::error::Error;
use crate::policy::Policy;
use crate::records::TaskRecord;
use crate::task::{CommandTask, TaskOptions};

pub(super) fn open(config: &Config) -> Arc<dyn Backend> {
    Arc::new(PostgresBackend::open(config, SystemClock::shared()).unwrap())
}

/// A schema of its own, so its creation and versions are this test's.
pub(super) fn fresh_schema() -> String {
    format!("manage_t{}", crate::random::hex::<6>())
}

pub(super) fn with_url(config: &Config, edit: impl FnOnce(&str) -> String) -> Config {
    let url = config.postgres.url.as_ref().unwrap();
    let text = format!(
        "postgres://{}:{}@{}/postgres?sslmode=disable",
        url.user.as_deref().unwrap_or("manage"),
        url.password().unwrap_or(""),
        url.endpoint()
    );
    let mut c = config.clone();
    c.postgres.url = Some(DatabaseUrl::parse(&edit(&text)).unwrap());
    c
}

/// Runs SQL as the test server's user, for what the backend never does
/// (planting a newer schema version, making roles).
pub(super) fn admin(config: &Config, statements: &str) -> Vec<sql::Rows> {
    let b = PostgresBackend::open(config, SystemClock::shared()).unwrap();
    let inner = Arc::clone(&b.inner);
    let statements = statements.to_owned();
    super::runtime::block_on(async move {
        let conn = inner.target.connect().await?;
        sql::run(&conn.client, &statements)
            .await
            .map_err(|e| inner.pg_error(e))
    })
    .unwrap()
}

#[test]
fn connection_errors_name_the_server_and_what_to_check_never_the_password() {
    if !postgres_available() {
        return;
    }
    let config = postgres_test_config("manage_test");
    let secret = "pw-that-must-never-show-7f3a";
    let mut errors = Vec::new();
    // A wrong password.
    let c = with_url(&config, |u| {
        let (head, rest) = u.split_once('@').unwrap();
        let user = head.rsplit_once(':').unwrap().0;
        format!("{user}:{secret}@{rest}")
    });
    let err = open(&c).mode().unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("password authentication failed"), "{msg}");
    assert!(
        msg.contains(&c.postgres.url.as_ref().unwrap().endpoint()),
        "{msg}"
    );
    errors.push(msg);
    // Nobody listening: refused.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let mut c = config.clone();
    c.postgres.url = Some(
        DatabaseUrl::parse(&format!("postgres://manage:{secret}@127.0.0.1:{port}/x")).unwrap(),
    );
    let msg = open(&c).mode().unwrap_err().to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(msg.contains("connection refused"), "{msg}");
    errors.push(msg);
    // A listener that never answers: no server within connect_timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let mut c = config.clone();
    c.postgres.url = Some(
        DatabaseUrl::parse(&format!("postgres://manage:{secret}@127.0.0.1:{port}/x")).unwrap(),
    );
    c.postgres.connect_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let msg = open(&c).mode().unwrap_err().to_string();
    assert!(
        msg.contains("no answer within 300ms (connect_timeout)"),
        "{msg}"
    );
    assert!(started.elapsed() < Duration::from_secs(60), "{msg}");
    errors.push(msg);
    drop(silent);
    // A database that does not exist.
    let c = with_url(&config, |u| u.replace("/postgres?", "/no_such_db?"));
    let msg = open(&c).mode().unwrap_err().to_string();
    assert!(
        msg.contains("no_such_db") && msg.contains("createdb"),
        "{msg}"
    );
    errors.push(msg);
    for msg in &errors {
        assert!(!msg.contains(secret), "{msg}");
        let real = config.postgres.url.as_ref().unwrap().password().unwrap();
        assert!(!msg.contains(real), "{msg}");
    }
}

#[test]
fn a_task_beyond_the_servers_connections_is_refused_clearly() {
    if !postgres_available() {
        return;
    }
    let config = postgres_test_config("manage_test");
    // A role allowed one connection stands for a server out of them.
    let role = format!("limited_{}", crate::random::hex::<4>());
    admin(
        &config,
        &format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'pw' CONNECTION LIMIT 1; \
             GRANT ALL ON SCHEMA manage_test TO {role}; \
             GRANT ALL ON ALL TABLES IN SCHEMA manage_test TO {role}; \
             GRANT ALL ON ALL SEQUENCES IN SCHEMA manage_test TO {role}"
        ),
    );
    // The schema exists (admin's open created nothing: make sure).
    drop(open(&config).mode().unwrap());
    let c = with_url(&config, |u| {
        let rest = u.split_once('@').unwrap().1;
        format!("postgres://{role}:pw@{rest}")
    });
    let b = open(&c);
    let held = CommandTask::start("first", TaskOptions::new(Arc::clone(&b))).unwrap();
    let err = CommandTask::start(
        "second",
        TaskOptions::new(Arc::clone(&b)).policy(Policy::DEFAULT),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::Refused(crate::error::Refusal::NoConnection { .. })
        ) && msg.contains("refusing to run `second`")
            && msg.contains("no connection left")
            && msg.contains("max_connections"),
        "{msg}"
    );
    assert_eq!(err.exit_code(), crate::exit::REFUSED);
    drop(held);
    drop(b);
    admin(&config, &format!("DROP OWNED BY {role}; DROP ROLE {role}"));
}

#[test]
fn hosts_starting_at_once_create_the_schema_once() {
    if !postgres_available() {
        return;
    }
    let schema = fresh_schema();
    let config = postgres_test_config(&schema);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let mut c = config.clone();
            c.postgres.site = format!("site-{}", crate::random::hex::<4>());
            std::thread::spawn(move || open(&c).mode().map(|v| v.mode))
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap().unwrap(), crate::mode::Mode::Online);
    }
    let rows = admin(
        &config,
        &format!("SELECT count(*) FROM {schema}.schema_version"),
    );
    assert_eq!(sql::int(&rows[0][0], 0), 1);
    admin(&config, &format!("DROP SCHEMA {schema} CASCADE"));
}

#[test]
fn a_schema_this_binary_cannot_read_is_refused_and_migrations_apply_once() {
    if !postgres_available() {
        return;
    }
    let schema = fresh_schema();
    let config = postgres_test_config(&schema);
    let b = PostgresBackend::open(&config, SystemClock::shared()).unwrap();
    assert_eq!(b.schema_state().unwrap(), SchemaState::Missing);
    b.mode().unwrap();
    assert_eq!(
        b.schema_state().unwrap(),
        SchemaState::Usable {
            version: 1,
            pending: vec![]
        }
    );
    // An additive change: pending until migrate-state applies it, once.
    static ADD: &[Migration] = &[Migration {
        version: 2,
        readable_by: 1,
        sql: |s| format!("CREATE TABLE {s}.added_later (x integer)"),
    }];
    assert_eq!(b.migrate_with(ADD).unwrap(), vec![2]);
    assert_eq!(b.migrate_with(ADD).unwrap(), Vec::<i64>::new());
    // This binary (version 1) still uses a schema at 2 readable by 1.
    assert!(
        PostgresBackend::open(&config, SystemClock::shared())
            .unwrap()
            .mode()
            .is_ok()
    );
    // A newer binary's change that version 1 cannot read.
    admin(
        &config,
        &format!("INSERT INTO {schema}.schema_version (version, readable_by) VALUES (3, 3)"),
    );
    let err = PostgresBackend::open(&config, SystemClock::shared())
        .unwrap()
        .mode()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("schema {schema} is at version 3")) && err.contains("upgrade manage"),
        "{err}"
    );
    admin(&config, &format!("DROP SCHEMA {schema} CASCADE"));
}

#[test]
fn two_sites_on_one_server_never_see_each_other() {
    if !postgres_available() {
        return;
    }
    let a = open(&postgres_test_config("manage_test"));
    let b = open(&postgres_test_config("manage_test"));
    let _t = CommandTask::start("job", TaskOptions::new(Arc::clone(&a))).unwrap();
    a.force_offline(&crate::backend::ModeChange::by_this_process())
        .unwrap();
    assert_eq!(a.tasks().unwrap().len(), 1);
    assert!(b.tasks().unwrap().is_empty());
    assert_eq!(b.mode().unwrap().mode, crate::mode::Mode::Online);
}

/// I3: a child that inherited the lock connection's socket keeps the task
/// live after the lease is dropped as handed over; it ends when the child
/// dies.
#[test]
fn a_child_holding_the_inherited_socket_keeps_the_task_live() {
    if !postgres_available() {
        return;
    }
    let config = postgres_test_config("manage_test");
    let (runner, probe) = (open(&config), open(&config));
    let mut lease = runner
        .start_task(&request("migrate", &["migrate"]), &"0".repeat(64))
        .unwrap();
    let fds: Vec<i32> = lease
        .inheritable_fds()
        .iter()
        .map(|f| f.as_raw_fd())
        .collect();
    assert_eq!(fds.len(), 1, "the lock connection's socket");
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg("600");
    let inherit = fds.clone();
    // SAFETY: only async-signal-safe calls (fcntl) between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            for &fd in &inherit {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    lease.mark_handed_to_child();
    drop(lease);
    let live = probe.tasks().unwrap();
    assert_eq!(live.len(), 1, "the child keeps the task");
    // A second instance is still refused: the instance lock went along.
    let again = CommandTask::start("migrate", TaskOptions::new(Arc::clone(&probe)));
    assert!(again.is_err(), "the instance lock is still held");
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !probe.tasks().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the task outlived its child");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The sync facade works where the sync `postgres` client panics: inside
/// a tokio runtime, on its worker thread.
#[tokio::test]
async fn command_task_start_works_inside_a_tokio_task() {
    if !postgres_available() {
        return;
    }
    let b = open(&postgres_test_config("manage_test"));
    let t = CommandTask::start("inside-tokio", TaskOptions::new(Arc::clone(&b))).unwrap();
    assert_eq!(b.tasks().unwrap()[0].name, "inside-tokio");
    drop(t);
    assert!(b.tasks().unwrap().is_empty());
    // And from a task spawned on the runtime.
    let b2 = Arc::clone(&b);
    tokio::spawn(async move {
        let t = CommandTask::start("spawned", TaskOptions::new(Arc::clone(&b2))).unwrap();
        assert_eq!(b2.tasks().unwrap().len(), 1);
        drop(t);
    })
    .await
    .unwrap();
}

/// Whether the connection `config` makes is encrypted, as the server says.
fn encrypted(config: &Config) -> Result<bool, Error> {
    let b = PostgresBackend::open(config, SystemClock::shared()).unwrap();
    let inner = Arc::clone(&b.inner);
    super::runtime::block_on(async move {
        let conn = inner.target.connect().await?;
        let rows = sql::run(
            &conn.client,
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .await
        .map_err(|e| inner.pg_error(e))?;
        Ok(sql::boolean(&rows[0][0], 0))
    })
}

#[test]
fn tls_follows_sslmode_against_a_certificate_of_our_own() {
    if !postgres_available() {
        return;
    }
    let Some(ca) = std::env::var_os("MANAGE_TEST_DATABASE_CA") else {
        assert!(
            std::env::var_os(crate::conformance::ENV_EXPECT_POSTGRES).is_none_or(|v| v.is_empty()),
            "${} is set (scripts/test, CI) but $MANAGE_TEST_DATABASE_CA is not: the cluster \
             was started without TLS (is openssl installed?)",
            crate::conformance::ENV_EXPECT_POSTGRES
        );
        eprintln!(
            "skipped: set $MANAGE_TEST_DATABASE_CA to the test server's CA (scripts/test does, \
             for the cluster it starts)"
        );
        return;
    };
    let ca = std::path::PathBuf::from(ca);
    let config = postgres_test_config("manage_test");
    let mode = |host: &str, tail: &str| {
        with_url(&config, |u| {
            u.replace("127.0.0.1", host)
                .replace("sslmode=disable", tail)
        })
    };
    let root = format!("sslrootcert={}", ca.display());
    assert!(!encrypted(&config).unwrap(), "sslmode=disable is plain");
    assert!(encrypted(&mode("127.0.0.1", "sslmode=require")).unwrap());
    assert!(encrypted(&mode("127.0.0.1", "sslmode=prefer")).unwrap());
    assert!(
        encrypted(&mode("127.0.0.1", &format!("sslmode=verify-full&{root}"))).unwrap(),
        "the certificate names 127.0.0.1"
    );
    // `localhost` is not the name on the certificate: verify-full refuses,
    // verify-ca (the chain only) passes.
    let err = encrypted(&mode("localhost", &format!("sslmode=verify-full&{root}")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("TLS") && err.contains("sslrootcert"), "{err}");
    assert!(encrypted(&mode("localhost", &format!("sslmode=verify-ca&{root}"))).unwrap());
    // A root file that is not there is named.
    let err = encrypted(&mode(
        "127.0.0.1",
        "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    // The server's own certificate is no CA: the chain does not verify.
    let not_ca = ca.with_file_name("server.crt");
    let err = encrypted(&mode(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={}", not_ca.display()),
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("TLS"), "{err}");
}

/// The wait of `offline on` ends when the last process holding a task is
/// killed with SIGKILL (which sends nothing: the server frees the key as
/// the connection drops), long before its timeout.
#[test]
fn a_wait_ends_when_the_tasks_last_process_is_killed() {
    if !postgres_available() {
        return;
    }
    let config = postgres_test_config("manage_test");
    wait_ends_when_killed(&config, &config);
}

/// The same through PgBouncer in session mode, the pooling this backend
/// works with: the task's locks go through the pooler to the server, and
/// the pooler's reset (`DISCARD ALL`) as the killed client's connection
/// drops frees them, for a waiter behind the pooler and for one connected
/// to the server directly.
#[test]
fn a_wait_ends_when_the_tasks_last_process_is_killed_behind_a_session_pooler() {
    if !postgres_available() {
        return;
    }
    let config = postgres_test_config("manage_test");
    open(&config).mode().unwrap();
    let Some(pooler) = pgbouncer(&config, "session") else {
        return;
    };
    let pooled = through(&config, &pooler);
    wait_ends_when_killed(&pooled, &config);
    wait_ends_when_killed(&pooled, &pooled);
}

/// `config` with its URL pointed at `pooler`.
fn through(config: &Config, pooler: &Pooler) -> Config {
    with_url(config, |u| {
        let rest = u.split_once('@').unwrap().1;
        let (_, tail) = rest.split_once('/').unwrap();
        format!("postgres://manage:any@127.0.0.1:{}/{tail}", pooler.port)
    })
}

/// A task started on `runner`, handed to a child that is then killed with
/// SIGKILL, ends the wait of a waiter on `waiter`.
fn wait_ends_when_killed(runner: &Config, waiter: &Config) {
    let (runner, waiter) = (open(runner), open(waiter));
    let mut lease = runner
        .start_task(&request("job", &["job"]), &"0".repeat(64))
        .unwrap();
    let fd = lease.inheritable_fds()[0].as_raw_fd();
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg("600");
    // SAFETY: only async-signal-safe calls (fcntl) between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    lease.mark_handed_to_child();
    drop(lease);
    let tasks = waiter.tasks().unwrap();
    assert_eq!(tasks.len(), 1);
    let generation = waiter.mode().unwrap().record.generation;
    let (tx, rx) = std::sync::mpsc::channel();
    let w = Arc::clone(&waiter);
    std::thread::spawn(move || {
        let _ = tx.send(w.wait_for_change(generation, &tasks, Duration::from_secs(600)));
    });
    child.kill().unwrap();
    child.wait().unwrap();
    rx.recv_timeout(Duration::from_secs(120))
        .expect("the wait ended with the killed task, not its 600 s timeout")
        .unwrap();
    assert!(waiter.tasks().unwrap().is_empty());
}

/// A PgBouncer of the test's own in front of the test server.
struct Pooler {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Pooler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts PgBouncer with `pool_mode`, or `None` (skipped, saying so) when
/// it is not installed and not expected.
fn pgbouncer(config: &Config, pool_mode: &str) -> Option<Pooler> {
    use std::os::unix::fs::PermissionsExt;
    let bin = std::path::Path::new("/usr/sbin/pgbouncer");
    if !bin.exists() {
        assert!(
            std::env::var_os(crate::conformance::ENV_EXPECT_POSTGRES).is_none(),
            "pgbouncer is missing: scripts/test installs Debian's pgbouncer package"
        );
        eprintln!("skipped: this test needs /usr/sbin/pgbouncer (Debian's pgbouncer package)");
        return None;
    }
    let url = config.postgres.url.as_ref().unwrap();
    let (host, server_port) = url
        .endpoint()
        .rsplit_once(':')
        .map(|(h, p)| (h.to_owned(), p.to_owned()))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let ini = dir.path().join("pgbouncer.ini");
    std::fs::write(
        &ini,
        format!(
            "[databases]\npostgres = host={host} port={server_port} user={user} password={pw} dbname=postgres\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = any\npool_mode = {pool_mode}\nignore_startup_parameters = options\n\
             logfile = {log}\nmax_client_conn = 50\ndefault_pool_size = 10\n",
            user = url.user.as_deref().unwrap_or("manage"),
            pw = url.password().unwrap_or(""),
            log = dir.path().join("pgbouncer.log").display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ini, std::fs::Permissions::from_mode(0o644)).unwrap();
    // PgBouncer refuses to run as root.
    let mut cmd = if rustix::process::getuid().is_root() {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        std::process::Command::new(bin)
    };
    let child = cmd
        .arg(&ini)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pooler = Pooler {
        child,
        _dir: dir,
        port,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "pgbouncer did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(pooler)
}

#[test]
fn doctor_finds_a_pooler_in_transaction_mode_and_passes_session_mode() {
    if !postgres_available() {
        return;
    }
    let config = postgres_test_config("manage_test");
    open(&config).mode().unwrap();
    for (mode, pooled) in [("transaction", true), ("session", false)] {
        let Some(pooler) = pgbouncer(&config, mode) else {
            return;
        };
        let c = through(&config, &pooler);
        let findings =
            super::doctor::doctor(&PostgresBackend::open(&c, SystemClock::shared()).unwrap());
        let pooling = findings
            .iter()
            .find(|f| f.text.contains("transaction"))
            .unwrap_or_else(|| panic!("{mode}: {findings:?}"));
        assert_eq!(pooling.problem, pooled, "{mode}: {findings:?}");
        if pooled {
            assert!(pooling.text.contains("pool_mode=session"), "{findings:?}");
        }
    }
}

fn request(name: &str, argv: &[&str]) -> crate::records::TaskRequest {
    crate::records::TaskRequest {
        name: name.into(),
        argv: argv.iter().map(|a| (*a).to_owned()).collect(),
        policy: Policy::DEFAULT,
        ignore_maintenance: false,
        in_window: false,
        lock_timeout: Duration::ZERO,
    }
}

/// Every stored string goes in quoted: SQL, quotes, backslashes, dollar
/// quotes, NUL (JSON escapes it), unicode and 100 kB of text come back as
/// they went in, and the tables are still there.
#[test]
fn hostile_strings_round_trip_exactly_and_inject_nothing() {
    if !postgres_available() {
        return;
    }
    let mut config = postgres_test_config("manage_test");
    config.postgres.site = format!(
        "{}'; DROP TABLE manage_test.modes; --\\",
        config.postgres.site
    );
    let b = open(&config);
    let evil = "x'); DROP TABLE manage_test.tasks; -- \\' $$ $x$ \0 é 🚀 \u{FFFD}";
    let long = "'\\".repeat(50_000);
    let name = format!("job{evil}");
    let argv = [name.as_str(), evil, "\0", long.as_str(), "--message=it's"];
    let _lease = b
        .start_task(&request(&name, &argv), &"0".repeat(64))
        .unwrap();
    let tasks = b.tasks().unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].name, name);
    assert_eq!(tasks[0].argv, argv);
    let mut change = crate::backend::ModeChange::by_this_process();
    change.by = format!("o'hara\\{evil}@host");
    change.message = Some(format!("back soon{evil}{long}"));
    b.force_offline(&change).unwrap();
    let record = b.mode().unwrap().record;
    assert_eq!(record.message, change.message);
    assert_eq!(record.by, change.by);
    // A second site on the server is untouched, and so are the tables.
    let other = open(&postgres_test_config("manage_test"));
    assert_eq!(other.mode().unwrap().mode, crate::mode::Mode::Online);
    assert!(other.tasks().unwrap().is_empty());
}

/// Site names are values, not identifiers: two names that differ only
/// after PostgreSQL's 63-byte identifier limit are two sites.
#[test]
fn sites_differing_after_63_bytes_never_share_state() {
    if !postgres_available() {
        return;
    }
    let mut a = postgres_test_config("manage_test");
    let mut b = a.clone();
    let stem = format!("{}-{}", a.postgres.site, "é".repeat(40));
    assert!(stem.len() > 63);
    a.postgres.site = format!("{stem}a");
    b.postgres.site = format!("{stem}b");
    let (a, b) = (open(&a), open(&b));
    let _t = CommandTask::start("job", TaskOptions::new(Arc::clone(&a))).unwrap();
    a.force_offline(&crate::backend::ModeChange::by_this_process())
        .unwrap();
    assert_eq!(a.tasks().unwrap().len(), 1);
    assert!(b.tasks().unwrap().is_empty());
    assert_eq!(b.mode().unwrap().mode, crate::mode::Mode::Online);
    assert_eq!(a.mode().unwrap().mode, crate::mode::Mode::Offline);
}

/// A mode row planted or damaged by someone with write access (an unknown
/// mode, not JSON, a generation gone backwards) is a clear error naming
/// the table and the way out, and `offline off --force` (`go_online`) and
/// `offline on --force` rewrite it: the site is never stuck (I4).
#[test]
fn a_damaged_mode_row_is_a_clear_error_and_a_forced_change_rewrites_it() {
    if !postgres_available() {
        return;
    }
    let config = postgres_test_config("manage_test");
    let site = sql::lit(&config.postgres.site);
    let b = open(&config);
    let change = crate::backend::ModeChange::by_this_process();
    let before = b.force_offline(&change).unwrap().generation;
    for (record, forced_on) in [
        (r#"{"mode":"BANANA"}"#, false),
        ("not json at all", true),
        ("", false),
        ("null", true),
    ] {
        admin(
            &config,
            &format!(
                "UPDATE manage_test.modes SET record = {} WHERE site = {site}",
                sql::lit(record)
            ),
        );
        let msg = b.mode().unwrap_err().to_string();
        assert!(
            msg.contains("is corrupt") && msg.contains("manage_test.modes"),
            "{msg}"
        );
        assert!(msg.contains("offline off --force"), "{msg}");
        let written = if forced_on {
            b.force_offline(&change).unwrap()
        } else {
            b.go_online(&change).unwrap()
        };
        let now = b.mode().unwrap().record;
        assert_eq!(now.mode, written.mode, "{record}");
        assert!(now.generation > before, "the generation moved on");
    }
    // A generation planted backwards (and negative) is read, and moves on.
    admin(
        &config,
        &format!("UPDATE manage_test.modes SET generation = -5 WHERE site = {site}"),
    );
    b.mode().unwrap();
    b.go_online(&change).unwrap();
    assert_eq!(b.mode().unwrap().mode, crate::mode::Mode::Online);
}

/// I1: a live task whose row's record was damaged (or written by a binary
/// this one cannot read) still counts: `offline on` waits for it, as the
/// file backend does for an unreadable task file.
#[test]
fn a_live_task_with_a_damaged_row_still_holds_off_offline() {
    if !postgres_available() {
        return;
    }
    let config = postgres_test_config("manage_test");
    let b = open(&config);
    let lease = b
        .start_task(&request("migrate", &["migrate"]), &"0".repeat(64))
        .unwrap();
    admin(
        &config,
        &format!(
            "UPDATE manage_test.tasks SET record = 'garbage' WHERE site = {}",
            sql::lit(&config.postgres.site)
        ),
    );
    let tasks = b.tasks().unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert!(tasks[0].name.contains("unreadable task row"), "{tasks:?}");
    assert!(tasks[0].name.contains("migrate"), "{tasks:?}");
    assert!(tasks[0].holds_off_offline());
    let crate::backend::PendingStart::Waiting { waiter, .. } = b
        .begin_pending(&crate::backend::ModeChange::by_this_process())
        .unwrap()
    else {
        panic!("not PENDING");
    };
    match b.complete_offline(&*waiter, None).unwrap() {
        crate::backend::Completion::Held(held) => assert_eq!(held.len(), 1),
        other => panic!("went on with a live task: {other:?}"),
    }
    drop(lease);
    match b.complete_offline(&*waiter, None).unwrap() {
        crate::backend::Completion::Offline(_) => {}
        other => panic!("{other:?}"),
    }
}

/// A backend whose waits re-read the mode only every hour while its
/// listener listens: a wait it ends early was ended through LISTEN.
fn deaf_to_fallback(config: &Config) -> Arc<PostgresBackend> {
    let mut b = PostgresBackend::open(config, SystemClock::shared()).unwrap();
    Arc::get_mut(&mut b.inner).unwrap().watch_fallback = Duration::from_secs(3600);
    Arc::new(b)
}

/// A task held by `runner`, and the tasks as a waiter reads them.
fn hold_task(runner: &dyn Backend) -> (Box<dyn crate::backend::TaskLease>, Vec<TaskRecord>) {
    let lease = runner
        .start_task(&request("job", &["job"]), &"0".repeat(64))
        .unwrap();
    let tasks = runner.tasks().unwrap();
    assert_eq!(tasks.len(), 1);
    (lease, tasks)
}

/// Polls `what` until it holds, for up to two minutes.
fn eventually(why: &str, mut what: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !what() {
        assert!(Instant::now() < deadline, "never: {why}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a connection of the server waits on `task`'s key, shared.
fn blocked_on_key(config: &Config, waiter: &PostgresBackend, task: &TaskRecord) -> bool {
    let key = task.id.split_once('-').unwrap().0;
    let rows = admin(
        config,
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
             AND query LIKE '%pg_advisory_xact_lock_shared({}, {key})%'",
            waiter.inner.class
        ),
    );
    sql::int(&rows[0][0], 0) > 0
}

/// The server pids of the connections LISTENing on `waiter`'s channel.
fn listeners(config: &Config, waiter: &PostgresBackend) -> Vec<i64> {
    let rows = admin(
        config,
        &format!(
            "SELECT pid FROM pg_stat_activity WHERE query = {} ORDER BY pid",
            sql::lit(&format!(
                "LISTEN {}",
                sql::ident(waiter.inner.listener.channel())
            ))
        ),
    );
    rows[0].iter().map(|r| sql::int(r, 0)).collect()
}

/// Starts `waiter`'s wait at the mode's current generation in a thread;
/// the receiver gets its result.
fn wait_in_thread(
    waiter: &Arc<PostgresBackend>,
    tasks: &[TaskRecord],
) -> std::sync::mpsc::Receiver<crate::error::Result<()>> {
    let generation = waiter.mode().unwrap().record.generation;
    let (tx, rx) = std::sync::mpsc::channel();
    let (w, tasks) = (Arc::clone(waiter), tasks.to_vec());
    std::thread::spawn(move || {
        let _ = tx.send(w.wait_for_change(generation, &tasks, Duration::from_secs(600)));
    });
    rx
}

/// `off` by another client of the server (another process's backend:
/// its own connections, its own listener) ends a wait blocked on a live
/// task's key at once, through the waiter's LISTEN connection: the
/// waiter's fallback re-read is an hour away and its lock wait as long.
#[test]
fn off_from_another_client_ends_a_wait_through_listen() {
    if !postgres_available() {
        return;
    }
    off_ends_a_wait_through_listen(&postgres_test_config("manage_test"));
}

/// The same over TLS: the listener's connection is encrypted as the
/// waiter's own connections are.
#[test]
fn off_ends_a_wait_through_listen_over_tls() {
    if !postgres_available() {
        return;
    }
    let config = with_url(&postgres_test_config("manage_test"), |u| {
        u.replace("sslmode=disable", "sslmode=require")
    });
    assert!(encrypted(&config).unwrap());
    off_ends_a_wait_through_listen(&config);
}

fn off_ends_a_wait_through_listen(config: &Config) {
    let config = config.clone();
    let (runner, other) = (open(&config), open(&config));
    let waiter = deaf_to_fallback(&config);
    let (_task, tasks) = hold_task(runner.as_ref());
    let PendingStart::Waiting { waiter: _lease, .. } = waiter
        .begin_pending(&ModeChange::by_this_process())
        .unwrap()
    else {
        panic!("not PENDING");
    };
    let ended = wait_in_thread(&waiter, &tasks);
    eventually("the wait blocks on the task's key", || {
        blocked_on_key(&config, &waiter, &tasks[0])
    });
    assert!(waiter.inner.listener.heard().listening);
    other.go_online(&ModeChange::by_this_process()).unwrap();
    ended
        .recv_timeout(Duration::from_secs(120))
        .expect("off ended the wait through LISTEN, not its hour-long re-read")
        .unwrap();
    assert_eq!(waiter.mode().unwrap().mode, crate::mode::Mode::Online);
    assert!(waiter.inner.listener.heard().notifications >= 1);
    // The cancelled lock wait left its connection clean, in the pool.
    assert!(!blocked_on_key(&config, &waiter, &tasks[0]));
    assert!(waiter.tasks().unwrap().len() == 1);
}

/// A LISTEN connection the server ends (pg_terminate_backend) neither
/// strands a wait nor stays lost: the wait, told of the loss, falls back
/// to re-reading and ends with `off`; the listener connects again, and the
/// next wait is ended through it.
#[test]
fn a_lost_listen_connection_falls_back_and_connects_again() {
    if !postgres_available() {
        return;
    }
    let config = postgres_test_config("manage_test");
    let (runner, other) = (open(&config), open(&config));
    let waiter = deaf_to_fallback(&config);
    let (_task, tasks) = hold_task(runner.as_ref());
    let ended = wait_in_thread(&waiter, &tasks);
    eventually("the wait blocks on the task's key", || {
        blocked_on_key(&config, &waiter, &tasks[0])
    });
    let first = listeners(&config, &waiter);
    assert_eq!(first.len(), 1, "{first:?}");
    admin(
        &config,
        &format!("SELECT pg_terminate_backend({})", first[0]),
    );
    eventually("the listener sees its connection lost", || {
        waiter.inner.listener.heard().losses >= 1
    });
    other.go_online(&ModeChange::by_this_process()).unwrap();
    ended
        .recv_timeout(Duration::from_secs(120))
        .expect("the wait ended with its listener lost")
        .unwrap();
    eventually("the listener connects again", || {
        let now = listeners(&config, &waiter);
        now.len() == 1 && now != first && waiter.inner.listener.heard().listening
    });
    let ended = wait_in_thread(&waiter, &tasks);
    eventually("the next wait blocks on the task's key", || {
        blocked_on_key(&config, &waiter, &tasks[0])
    });
    let heard = waiter.inner.listener.heard().notifications;
    other.go_online(&ModeChange::by_this_process()).unwrap();
    ended
        .recv_timeout(Duration::from_secs(120))
        .expect("off ended the next wait through the listener made again")
        .unwrap();
    assert!(waiter.inner.listener.heard().notifications > heard);
}
