//! A key held, as a session lock, on a connection of its holder's own, and
//! taken again on a new connection when the server ends that one (a
//! restart, a migration terminating every connection): an `offline run`'s
//! window (`window.rs`), a waiting schedule (`schedules.rs`) and a live
//! task (`tasks.rs`, which also checks the connection). The holder
//! says how the key is taken back (what it checks first, what it writes);
//! this keeps the connection, replaces it, and lets go: the holder's row
//! first, then the key.

use std::sync::{Arc, Mutex};

use super::Inner;
use super::connect::Conn;
use super::sql::{self, Rows, boolean};
use crate::error::Result;

/// Key `key` of the site, held on a connection of its own.
#[derive(Debug)]
pub(super) struct HeldKey {
    inner: Arc<Inner>,
    key: i32,
    /// The connection holding the key; `None` once let go.
    conn: Mutex<Option<Arc<Conn>>>,
}

impl HeldKey {
    /// `key`, which `conn` holds.
    pub(super) fn new(inner: Arc<Inner>, key: i32, conn: Conn) -> Self {
        HeldKey {
            inner,
            key,
            conn: Mutex::new(Some(Arc::new(conn))),
        }
    }

    /// The backend.
    pub(super) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// The key's number.
    pub(super) fn key(&self) -> i32 {
        self.key
    }

    /// The connection holding the key, unless the server ended it.
    pub(super) fn open(&self) -> Option<Arc<Conn>> {
        self.conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|c| !c.client.is_closed())
    }

    /// Lets go of the held connection without a word (a check of it went
    /// unanswered): from now on it counts as ended; returns it.
    pub(super) fn forget(&self) -> Option<Arc<Conn>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Takes the key again on a new connection: `take` is given it, takes
    /// the key there ([`try_lock`](Self::try_lock), after whatever it
    /// checks first) and writes what it must; when it did (true), that
    /// connection is the one held from now on, and returned.
    pub(super) async fn retake(
        &self,
        take: impl AsyncFnOnce(&Conn) -> Result<bool>,
    ) -> Result<Option<Arc<Conn>>> {
        let conn = self.inner.connect().await?;
        if !take(&conn).await? {
            return Ok(None);
        }
        let conn = Arc::new(conn);
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&conn));
        Ok(Some(conn))
    }

    /// `pg_try_advisory_lock` of the key on `conn`: whether it took it.
    pub(super) async fn try_lock(&self, conn: &Conn) -> Result<bool, tokio_postgres::Error> {
        let sql = format!(
            "SELECT pg_try_advisory_lock({}, {})",
            self.inner.class, self.key
        );
        let rows = sql::run(&conn.client, &sql).await?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .is_some_and(|r| boolean(r, 0)))
    }

    /// [`try_lock`](Self::try_lock), tried again for up to half a second
    /// while the key is busy: a reader's probe holds a free key shared for
    /// a moment.
    pub(super) async fn try_lock_patiently(
        &self,
        conn: &Conn,
    ) -> Result<bool, tokio_postgres::Error> {
        for _ in 0..50 {
            if self.try_lock(conn).await? {
                return Ok(true);
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Ok(false)
    }

    /// Runs `sql` on the held connection while it is open, else (or should
    /// it end under the statement) on a pooled one.
    pub(super) async fn run_here_or_pooled(&self, sql: &str) -> Result<Vec<Rows>> {
        let inner = &self.inner;
        match self.open() {
            Some(c) => match sql::run(&c.client, sql).await {
                Ok(rows) => Ok(rows),
                Err(e) if e.is_closed() => inner.exec(sql).await,
                Err(e) => Err(inner.pg_error(e)),
            },
            None => inner.exec(sql).await,
        }
    }

    /// Lets go: `last` (the holder's row deleted), then the key, in one
    /// message on the held connection (a closing connection frees its locks
    /// only a moment later); with that connection gone (the server freed the
    /// key already), `last` runs on a pooled one. Errors are dropped: the
    /// row left behind is one a dead holder would leave.
    pub(super) async fn release(&self, last: &str) {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner()).take();
        match conn {
            Some(c) if !c.client.is_closed() => {
                let sql = format!("{last}; SELECT pg_advisory_unlock_all()");
                if sql::run(&c.client, &sql).await.is_err() {
                    let _ = self.inner.exec(last).await;
                }
            }
            _ => {
                let _ = self.inner.exec(last).await;
            }
        }
    }
}
