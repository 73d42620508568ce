//! The backend's own runtime: one current-thread tokio runtime on a thread
//! of its own (`manage-postgres`), built the first time a PostgreSQL
//! backend is opened and never before (the file backend builds none), and
//! [`block_on`], the one way the synchronous [`Backend`](crate::Backend)
//! calls reach it: the future runs on that thread and the caller waits on
//! a std channel. A std channel blocks in a caller's tokio task as it does
//! anywhere else, where the sync `postgres` client and tokio's own
//! `block_on` would panic: so `CommandTask::start` works from inside a
//! tokio runtime.

use std::cell::Cell;
use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Handle;

use crate::error::{Error, Result};

/// The runtime's handle, building it and its thread on first use.
fn handle() -> Result<&'static Handle> {
    static HANDLE: OnceLock<std::result::Result<Handle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .map_err(|e| format!("cannot build the PostgreSQL backend's runtime: {e}"))?;
            let handle = rt.handle().clone();
            std::thread::Builder::new()
                .name("manage-postgres".into())
                .spawn(move || {
                    ON_RUNTIME.with(|on| on.set(true));
                    rt.block_on(std::future::pending::<()>())
                })
                .map_err(|e| format!("cannot start the PostgreSQL backend's thread: {e}"))?;
            Ok(handle)
        })
        .as_ref()
        .map_err(|e| Error::Invalid(e.clone()))
}

thread_local! {
    /// Set on the runtime's own thread, where waiting for the runtime
    /// would wait forever.
    static ON_RUNTIME: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` on the backend's runtime thread and waits for its output, from
/// any thread, inside a tokio runtime or not.
pub(super) fn block_on<T, F>(f: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    if ON_RUNTIME.with(Cell::get) {
        return Err(Error::Invalid(
            "a PostgreSQL backend call was made on the backend's own runtime thread".into(),
        ));
    }
    // Under test, a caller counting its round trips counts this call's.
    #[cfg(test)]
    let f: std::pin::Pin<Box<dyn Future<Output = Result<T>> + Send>> = match trips::counter() {
        Some(c) => Box::pin(trips::TRIPS.scope(c, f)),
        None => Box::pin(f),
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle()?.spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv().unwrap_or_else(|_| {
        Err(Error::Invalid(
            "the PostgreSQL backend's runtime thread stopped in the middle of a call".into(),
        ))
    })
}

/// Under test: the messages (round trips) the calls made from one thread
/// send, counted in [`sql::run`](super::sql::run), the connections'
/// startups left out.
#[cfg(test)]
pub(super) mod trips {
    use std::cell::RefCell;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    thread_local! {
        static COUNTING: RefCell<Option<Arc<AtomicUsize>>> = const { RefCell::new(None) };
    }

    tokio::task_local! {
        /// The counter of the call running, on the runtime's thread.
        pub(in super::super) static TRIPS: Arc<AtomicUsize>;
    }

    /// The counter of this thread, while [`count`] runs.
    pub(super) fn counter() -> Option<Arc<AtomicUsize>> {
        COUNTING.with(|c| c.borrow().clone())
    }

    /// Counts one message sent.
    pub(in super::super) fn sent() {
        let _ = TRIPS.try_with(|c| c.fetch_add(1, Ordering::Relaxed));
    }

    /// Runs `f`, and the round trips the backend calls made in it.
    pub(in super::super) fn count<T>(f: impl FnOnce() -> T) -> (T, usize) {
        let counter = Arc::new(AtomicUsize::new(0));
        COUNTING.with(|c| *c.borrow_mut() = Some(Arc::clone(&counter)));
        let out = f();
        COUNTING.with(|c| *c.borrow_mut() = None);
        (out, counter.load(Ordering::Relaxed))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// The names of this process's threads.
    fn threads() -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|n| n.trim().to_owned())
            .collect()
    }

    /// The file path pays nothing for the feature: no runtime thread is
    /// built by the file backend, nor by merely opening a postgres one.
    #[test]
    fn no_runtime_is_built_until_postgres_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::Config::with_state_dir(dir.path().join("state"));
        let file = crate::backend::open(&config, crate::SystemClock::shared()).unwrap();
        let task =
            crate::CommandTask::start("job", crate::TaskOptions::new(std::sync::Arc::clone(&file)))
                .unwrap();
        file.mode().unwrap();
        drop(task);
        let mut pg = crate::Config::with_state_dir("/nonexistent");
        pg.backend = crate::config::BackendKind::Postgres;
        pg.postgres.url = Some(crate::DatabaseUrl::parse("postgres://127.0.0.1:1/x").unwrap());
        let _opened = crate::backend::open(&pg, crate::SystemClock::shared()).unwrap();
        assert!(
            !threads().iter().any(|t| t == "manage-postgres"),
            "{:?}",
            threads()
        );
    }
}
