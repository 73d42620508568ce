//! `offline doctor` on PostgreSQL: the connection, the schema version and
//! pending migrations, the privileges on the schema, and whether a pooler
//! in transaction mode sits in between (a session advisory lock taken in
//! one transaction must still be held after it: PgBouncer in transaction
//! mode hands the next statement another server connection, and breaks
//! every lock this backend holds).

use super::schema::{self, SchemaState};
use super::sql::{self, boolean, text};
use super::{PostgresBackend, keys, runtime};
use crate::error::Result;

/// One finding, as the file backend's doctor gives them.
pub use crate::backend::file::Finding;

/// Checks the backend's server and schema, one finding each; a server that
/// cannot be reached is one problem saying why.
pub fn doctor(backend: &PostgresBackend) -> Vec<Finding> {
    match checks(backend) {
        Ok(findings) => findings,
        Err(e) => vec![Finding {
            problem: true,
            text: e.to_string(),
        }],
    }
}

fn checks(backend: &PostgresBackend) -> Result<Vec<Finding>> {
    let inner = std::sync::Arc::clone(&backend.inner);
    runtime::block_on(async move {
        let conn = inner.target.connect().await?;
        let mut out = Vec::new();
        let rows = sql::run(
            &conn.client,
            "SELECT current_user, current_database(), version()",
        )
        .await
        .map_err(|e| inner.pg_error(e))?;
        let row = rows
            .first()
            .and_then(|r| r.first())
            .cloned()
            .unwrap_or_default();
        out.push(Finding {
            problem: false,
            text: format!(
                "connected to {} as {:?}, database {:?} ({})",
                inner.target.url,
                text(&row, 0),
                text(&row, 1),
                text(&row, 2).split(" on ").next().unwrap_or("")
            ),
        });
        let s = schema::quoted(&inner.schema);
        let state = schema::state(&conn.client, &inner.schema, schema::MIGRATIONS)
            .await
            .map_err(|e| inner.pg_error(e))?;
        let usable = matches!(state, SchemaState::Usable { .. });
        match state {
            SchemaState::Missing => out.push(Finding {
                problem: false,
                text: format!(
                    "schema {} does not exist yet: the first command that uses the state creates it \
                     (the user needs CREATE on the database)",
                    inner.schema
                ),
            }),
            SchemaState::Usable { version, pending } if pending.is_empty() => out.push(Finding {
                problem: false,
                text: format!("schema {} is at version {version}, the newest this binary knows", inner.schema),
            }),
            SchemaState::Usable { version, pending } => out.push(Finding {
                problem: true,
                text: format!(
                    "schema {} is at version {version}; migrations {} are pending: run `{} offline \
                     migrate-state` (additive: binaries of the previous version keep working)",
                    inner.schema,
                    pending.iter().map(i64::to_string).collect::<Vec<_>>().join(", "),
                    crate::identity::program_name()
                ),
            }),
            SchemaState::Unreadable { version, readable_by } => out.push(Finding {
                problem: true,
                text: format!(
                    "schema {} is at version {version}, which needs a binary that knows version \
                     {readable_by} or later (this one knows {}): upgrade manage on this host",
                    inner.schema,
                    schema::VERSION
                ),
            }),
        }
        // The site's mode record, which someone with write access may have
        // damaged: as the file backend's doctor reads mode.json.
        if usable {
            let rows = sql::run(&conn.client, &inner.view_sql())
                .await
                .map_err(|e| inner.pg_error(e))?;
            if let Err(e) = inner.view_of_rows(rows.first().unwrap_or(&Vec::new())) {
                out.push(Finding {
                    problem: true,
                    text: e.to_string(),
                });
            }
        }
        let rows = sql::run(
            &conn.client,
            &format!(
                "SELECT has_schema_privilege(n.oid, 'USAGE'), \
                 coalesce(bool_and(has_table_privilege(c.oid, 'SELECT,INSERT,UPDATE,DELETE')), true) \
                 FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind = 'r' \
                 WHERE n.nspname = {} GROUP BY n.oid",
                sql::lit(&inner.schema)
            ),
        )
        .await
        .map_err(|e| inner.pg_error(e))?;
        if let Some(row) = rows.first().and_then(|r| r.first()) {
            let ok = boolean(row, 0) && boolean(row, 1);
            out.push(Finding {
                problem: !ok,
                text: if ok {
                    format!("this user may read and write every table of schema {}", inner.schema)
                } else {
                    format!(
                        "this user lacks privileges on schema {s}: GRANT USAGE ON SCHEMA {s} TO <user>; \
                         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO <user>; \
                         GRANT USAGE ON ALL SEQUENCES IN SCHEMA {s} TO <user>"
                    )
                },
            });
        }
        // A session lock taken in a transaction must stay with this
        // client, and only with it: through a pooler in transaction mode
        // the server connection (and the lock on it) goes back to the
        // pool at COMMIT, and the next client to come — a second client
        // of ours — gets it, lock and all. Each message is sent alone, so
        // a pooler can switch servers between them.
        let class = keys::schema_class(&inner.schema);
        let probe = keys::POOLING_PROBE;
        let mine = format!(
            "SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' \
             AND classid::bigint = ({class}::bigint & 4294967295) \
             AND objid::bigint = ({probe}::bigint & 4294967295) AND objsubid = 2 \
             AND pid = pg_backend_pid() AND granted"
        );
        let other = inner.target.connect().await?;
        let held = |rows: Vec<sql::Rows>| {
            rows.first()
                .and_then(|r| r.first())
                .is_some_and(|r| boolean(r, 0))
        };
        let checked = async {
            sql::run(
                &conn.client,
                &format!("BEGIN; SELECT pg_advisory_lock({class}, {probe}); COMMIT"),
            )
            .await?;
            let stranger_has_it = held(sql::run(&other.client, &mine).await?);
            let kept = held(sql::run(&conn.client, &mine).await?);
            Ok::<bool, tokio_postgres::Error>(kept && !stranger_has_it)
        }
        .await;
        // Whichever server holds it now lets it go.
        for c in [&conn, &other] {
            let _ = sql::run(
                &c.client,
                &format!("SELECT pg_advisory_unlock({class}, {probe})"),
            )
            .await;
        }
        let kept = checked.map_err(|e| inner.pg_error(e))?;
        out.push(Finding {
            problem: !kept,
            text: if kept {
                "session advisory locks survive a transaction: no pooler in transaction mode in \
                 between"
                    .into()
            } else {
                "a session advisory lock did not survive its transaction: a pooler in transaction \
                 mode (PgBouncer pool_mode=transaction) sits in between, which breaks every task's \
                 lock; connect directly, or use pool_mode=session"
                    .into()
            },
        });
        Ok(out)
    })
}
