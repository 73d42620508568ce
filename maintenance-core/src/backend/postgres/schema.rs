//! The backend's own tables, in a schema of their own (`manage` by
//! default): created on first use, under an advisory lock so that hosts
//! starting at once create it once; changed later only by `offline
//! migrate-state`.
//!
//! **Versions.** `schema_version` holds one row per version applied, with
//! the oldest binary version that can still use the schema at that version
//! (`readable_by`). Version 1 is the whole first schema, each area's tables
//! from its own file (`tables` in `modes.rs`, `tasks.rs`, `sessions.rs`,
//! …). Later versions are [`MIGRATIONS`], so a binary of version N still
//! works on a schema at N−1 during a rolling deploy and a binary of N−1 on
//! one at N: an old binary never locks out a new one, nor the reverse. A
//! binary refuses, clearly, a schema whose newest version's `readable_by`
//! is above its own [`VERSION`] (as the file backend refuses an unknown
//! `VERSION`). A schema created by a binary that knows migrations is
//! created at its newest version, in the one transaction.
//!
//! **The rule for a migration** (`tests::migrations_are_additive`
//! enforces what a test can):
//! - *Additive only:* new tables, new sequences, new indexes (not unique),
//!   new columns that are nullable or have a `DEFAULT`. Never `DROP`,
//!   `RENAME`, `ALTER COLUMN` (a type, `NOT NULL`, a default), `TRUNCATE`,
//!   a new constraint or unique index on an existing table, or an `UPDATE`
//!   or `DELETE` of rows: binaries of the previous version still run
//!   against the schema, and each of those would break their statements.
//!   Every statement names its columns (`INSERT INTO t (a, b)`, no
//!   `SELECT *`), so a column added later is invisible to the code before
//!   it; `tests::an_additive_migration_keeps_every_operation_working`
//!   runs the binary's operations on a schema with a column added to
//!   every table.
//! - *`readable_by` stays below `version`*, normally at the previous
//!   migration's: binary N−1 reads schema N. Raising it refuses every
//!   older binary still running, which a rolling deploy cannot allow.
//! - *Binary N works on schema N−1:* the code of version N uses what
//!   migration N adds only once the schema is at N ([`state`] says), and
//!   deploys run `offline migrate-state` before the binaries of N+1 roll
//!   out.
//! - Versions run 2, 3, … with no gap, and [`VERSION`] is the last.
//!
//! `ALTER TABLE … ADD COLUMN` takes the table's exclusive lock for the
//! moment of the change: running binaries wait for it, they are not
//! refused (no statement of theirs holds a table lock for long).

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::keys;
use super::sql::{self, int};

#[cfg(test)]
#[path = "schema_tests.rs"]
mod tests;

/// The newest schema version this binary knows and writes.
pub(super) const VERSION: i64 = 1;

/// A change after version 1: applied by `offline migrate-state`, in
/// order, each in a transaction of its own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// The version it takes the schema to.
    pub version: i64,
    /// The oldest binary version that can use the schema at `version`.
    pub readable_by: i64,
    /// Its statements, given the quoted schema name.
    pub sql: fn(&str) -> String,
}

/// The migrations after version 1, oldest first; the rule they follow is
/// in the module docs.
pub(crate) const MIGRATIONS: &[Migration] = &[];

/// What is wrong with `migrations` by the rule of the module docs (in
/// order from 2, `readable_by` below `version`, [`VERSION`] the last, each
/// statement additive), given the newest version this binary knows; empty
/// when nothing is. A guard against the plain mistakes, not a parser of
/// SQL.
#[cfg(test)]
pub(super) fn rule_broken(migrations: &[Migration], known: i64) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut expected = 2;
    for m in migrations {
        if m.version != expected {
            wrong.push(format!("version {} follows {}", m.version, expected - 1));
        }
        if !(1..m.version).contains(&m.readable_by) {
            wrong.push(format!(
                "version {} is readable_by {}: binaries before it would be refused",
                m.version, m.readable_by
            ));
        }
        if let Some(why) = not_additive(&(m.sql)("\"s\"")) {
            wrong.push(format!("version {}: {why}", m.version));
        }
        expected = m.version + 1;
    }
    if known != expected - 1 {
        wrong.push(format!(
            "VERSION is {known}, the last migration {}",
            expected - 1
        ));
    }
    wrong
}

/// Why `statements` are not additive, if they are not.
#[cfg(test)]
pub(super) fn not_additive(statements: &str) -> Option<String> {
    let upper = statements.to_uppercase();
    let words: Vec<&str> = upper
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    for (i, w) in words.iter().enumerate() {
        let next = words.get(i + 1).copied().unwrap_or("");
        let bad = match *w {
            "DROP" | "RENAME" | "TRUNCATE" | "DELETE" | "UPDATE" => Some(w.to_string()),
            "ALTER" if next == "COLUMN" => Some("ALTER COLUMN".into()),
            "ADD" if next == "CONSTRAINT" => Some("ADD CONSTRAINT".into()),
            "UNIQUE" if next == "INDEX" => Some("CREATE UNIQUE INDEX".into()),
            _ => None,
        };
        if let Some(bad) = bad {
            return Some(format!(
                "{bad} is not additive: binaries of the previous version still use the schema"
            ));
        }
    }
    // A column added NOT NULL needs a default, or the older binaries'
    // inserts (which do not name it) fail.
    for clause in upper.split("ADD COLUMN").skip(1) {
        let clause = clause.split([',', ';']).next().unwrap_or("");
        if clause.contains("NOT NULL") && !clause.contains("DEFAULT") {
            return Some(format!(
                "ADD COLUMN{clause} is NOT NULL without a DEFAULT: the older binaries' inserts \
                 would fail"
            ));
        }
    }
    None
}

/// Where a database's schema stands for this binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaState {
    /// No schema yet: the first use creates it.
    Missing,
    /// At `version`, usable; `pending` migrations this binary knows would
    /// take it further (`offline migrate-state`).
    Usable {
        /// The newest version applied.
        version: i64,
        /// Versions this binary could apply.
        pending: Vec<i64>,
    },
    /// At a version this binary cannot use.
    Unreadable {
        /// The newest version applied.
        version: i64,
        /// The oldest binary version that can use it.
        readable_by: i64,
    },
}

/// The schema name as SQL writes it.
pub(super) fn quoted(schema: &str) -> String {
    format!("\"{schema}\"")
}

/// Version 1: every area's tables.
fn initial(s: &str) -> String {
    format!(
        "CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE {s}.schema_version (
             version integer PRIMARY KEY,
             readable_by integer NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now(),
             applied_by text NOT NULL DEFAULT current_user
         );
         {modes}
         {tasks}
         {sessions}
         {schedules}
         {window}
         {history}
         {readonly}
         INSERT INTO {s}.schema_version (version, readable_by) VALUES (1, 1);",
        modes = super::modes::tables(s),
        tasks = super::tasks::tables(s),
        sessions = super::sessions::tables(s),
        schedules = super::schedules::tables(s),
        window = super::window::tables(s),
        history = super::history::tables(s),
        readonly = super::readonly::tables(s),
    )
}

/// The statement reading the newest version applied, whose rows
/// [`state_of`] judges: sent alone, or as the first statement of a
/// process's first message (a task's start, a status), so that the check
/// costs no round trip of its own.
pub(super) fn version_sql(schema: &str) -> String {
    format!(
        "SELECT version, readable_by FROM {}.schema_version ORDER BY version DESC LIMIT 1",
        quoted(schema)
    )
}

/// The SQL condition that the schema is one this binary can use (no
/// version applied needs a newer binary): a write batched with the
/// schema's check ([`version_sql`]) is made only when it holds.
pub(super) fn readable_sql(schema: &str, migrations: &[Migration]) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM {}.schema_version WHERE readable_by > {})",
        quoted(schema),
        known(migrations)
    )
}

/// Whether `e` says that the schema, or its version table, is absent.
pub(super) fn is_missing(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNDEFINED_TABLE) || e.code() == Some(&SqlState::INVALID_SCHEMA_NAME)
}

/// The newest version this binary knows, with `migrations`.
fn known(migrations: &[Migration]) -> i64 {
    migrations
        .last()
        .map_or(VERSION, |m| m.version.max(VERSION))
}

/// Where the schema stands against `migrations`, from [`version_sql`]'s
/// rows.
pub(super) fn state_of(rows: &sql::Rows, migrations: &[Migration]) -> SchemaState {
    let Some(row) = rows.first() else {
        return SchemaState::Missing;
    };
    let (version, readable_by) = (int(row, 0), int(row, 1));
    if readable_by > known(migrations) {
        return SchemaState::Unreadable {
            version,
            readable_by,
        };
    }
    SchemaState::Usable {
        version,
        pending: migrations
            .iter()
            .filter(|m| m.version > version)
            .map(|m| m.version)
            .collect(),
    }
}

/// Reads where the schema stands against `migrations`.
pub(super) async fn state(
    client: &Client,
    schema: &str,
    migrations: &[Migration],
) -> Result<SchemaState, tokio_postgres::Error> {
    match sql::run(client, &version_sql(schema)).await {
        Ok(rows) => Ok(state_of(rows.first().unwrap_or(&Vec::new()), migrations)),
        Err(e) if is_missing(&e) => Ok(SchemaState::Missing),
        Err(e) => Err(e),
    }
}

/// Creates the schema if it is absent, under the creation lock: version 1
/// and then `migrations`, in one transaction, so a new binary on a new
/// database starts at its own version; returns where it stands
/// afterwards.
pub(super) async fn ensure(
    client: &Client,
    schema: &str,
    migrations: &[Migration],
) -> Result<SchemaState, tokio_postgres::Error> {
    match state(client, schema, migrations).await? {
        SchemaState::Missing => {}
        other => return Ok(other),
    }
    let lock = format!(
        "SELECT pg_advisory_xact_lock({}, {})",
        keys::schema_class(schema),
        keys::SCHEMA_CREATION
    );
    sql::run(client, &format!("BEGIN; {lock}")).await?;
    let created = async {
        // Another host may have created it while this one waited (asked
        // without an error, which would end the transaction).
        let rows = sql::run(
            client,
            &format!(
                "SELECT to_regclass({}) IS NULL",
                sql::lit(&format!("{}.schema_version", quoted(schema)))
            ),
        )
        .await?;
        if rows
            .first()
            .and_then(|r| r.first())
            .is_some_and(|r| sql::boolean(r, 0))
        {
            let s = quoted(schema);
            let mut all = initial(&s);
            for m in migrations {
                all.push_str(&format!(
                    "\n{};\nINSERT INTO {s}.schema_version (version, readable_by) VALUES ({}, {});",
                    (m.sql)(&s),
                    m.version,
                    m.readable_by
                ));
            }
            sql::run(client, &all).await?;
        }
        sql::run(client, "COMMIT").await
    }
    .await;
    if let Err(e) = created {
        let _ = sql::run(client, "ROLLBACK").await;
        return Err(e);
    }
    state(client, schema, migrations).await
}

/// Applies the pending `migrations`, each in its own transaction under the
/// creation lock; returns the versions applied.
pub(super) async fn migrate(
    client: &Client,
    schema: &str,
    migrations: &[Migration],
) -> Result<Vec<i64>, tokio_postgres::Error> {
    ensure(client, schema, migrations).await?;
    let s = quoted(schema);
    let lock = format!(
        "SELECT pg_advisory_xact_lock({}, {})",
        keys::schema_class(schema),
        keys::SCHEMA_CREATION
    );
    let mut applied = Vec::new();
    for m in migrations {
        sql::run(client, &format!("BEGIN; {lock}")).await?;
        let step = async {
            let rows = sql::run(
                client,
                &format!(
                    "SELECT 1 FROM {s}.schema_version WHERE version = {}",
                    m.version
                ),
            )
            .await?;
            let done = rows.first().is_some_and(|r| !r.is_empty());
            if !done {
                sql::run(
                    client,
                    &format!(
                        "{}; INSERT INTO {s}.schema_version (version, readable_by) VALUES ({}, {})",
                        (m.sql)(&s),
                        m.version,
                        m.readable_by
                    ),
                )
                .await?;
            }
            sql::run(client, "COMMIT").await?;
            Ok::<bool, tokio_postgres::Error>(!done)
        }
        .await;
        match step {
            Ok(true) => applied.push(m.version),
            Ok(false) => {}
            Err(e) => {
                let _ = sql::run(client, "ROLLBACK").await;
                return Err(e);
            }
        }
    }
    Ok(applied)
}
