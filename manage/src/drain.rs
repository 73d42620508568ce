//! The drain `stop` policy, kept by every tracked run itself: a helper
//! thread watches the mode, and when a drain that this run holds off begins
//! (PENDING or OFFLINE; READONLY_PENDING too for a run that may write) it
//! sets the run's stop request and sends SIGTERM to its external child, if
//! any. Nobody signals a pid from outside: pids get reused.
//!
//! After the command has exited, what it left behind is asked to stop by
//! its keeper (`keeper.rs`); on a backend other than the file backend, by
//! way of the [`watcher`] it starts.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use maintenance_core::Backend;
use maintenance_core::command::StopToken;
use maintenance_core::task::TaskRecord;

use crate::signals;

/// How often the mode is looked at: a stop is asked within this (≤ 100 ms).
const LOOK: Duration = Duration::from_millis(20);

/// The watching thread; dropping this ends it.
pub(crate) struct DrainWatch {
    done: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Starts watching, on behalf of the run of `task`, for a drain that asks
/// it to stop ([`TaskRecord::drained_in`]).
pub(crate) fn watch(backend: Arc<dyn Backend>, stop: StopToken, task: TaskRecord) -> DrainWatch {
    let (tx, rx) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("manage-drain".into())
        .spawn(move || {
            loop {
                if let Ok(view) = backend.mode()
                    && task.drained_in(&view)
                {
                    stop.request();
                    signals::terminate_child();
                    return;
                }
                match rx.recv_timeout(LOOK) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            }
        })
        .ok();
    DrainWatch {
        done: Some(tx),
        thread,
    }
}

impl Drop for DrainWatch {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How long the watcher waits before it looks again after the backend
/// failed (a server restarting, say).
#[cfg(target_os = "linux")]
const WATCHER_RETRY: Duration = Duration::from_secs(1);

/// The drain watcher an external command's keeper starts (this binary with
/// [`DRAIN_WATCH_ARG`](maintenance_core::process::DRAIN_WATCH_ARG), then
/// `offline` or `read-only` — which drains the task holds off — and the
/// configuration file the runner read, if any): opens the configured
/// backend, untracked and holding no lock of any task, and returns 0 once
/// the site has left ONLINE for a drain the task holds off, as
/// [`TaskRecord::drained_in`] decides. A backend that fails is tried again
/// every second; it never ends otherwise but killed (with its keeper,
/// whose death kills it). 2 when its arguments or configuration are wrong:
/// the keeper then starts it again, a few times.
#[cfg(target_os = "linux")]
#[cold]
#[inline(never)]
pub(crate) fn watcher(args: &[std::ffi::OsString]) -> u8 {
    use maintenance_core::Mode;
    use maintenance_core::config::{Config, Overrides};
    use maintenance_core::exit;
    let read_only = match args.first().and_then(|a| a.to_str()) {
        Some("offline") => false,
        Some("read-only") => true,
        _ => {
            eprintln!(
                "error: the drain watcher is started by an external command's keeper, never                  by hand"
            );
            return exit::USAGE;
        }
    };
    let overrides = Overrides {
        config_file: args.get(1).map(std::path::PathBuf::from),
        ..Overrides::default()
    };
    let config = match Config::load(&overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: the drain watcher cannot read its configuration: {e}");
            return exit::USAGE;
        }
    };
    // As `TaskRecord::drained_in` for a task that holds off OFFLINE.
    let drained = |mode: Mode| {
        (read_only && mode != Mode::Online) || matches!(mode, Mode::Pending | Mode::Offline)
    };
    let mut backend = None;
    loop {
        let b = match &backend {
            Some(b) => b,
            None => match maintenance_core::backend::open(
                &config,
                maintenance_core::clock::SystemClock::shared(),
            ) {
                Ok(b) => backend.insert(b),
                Err(_) => {
                    std::thread::sleep(WATCHER_RETRY);
                    continue;
                }
            },
        };
        let generation = match b.mode() {
            Ok(view) if drained(view.mode) => return exit::SUCCESS,
            Ok(view) => view.record.generation,
            Err(_) => {
                std::thread::sleep(WATCHER_RETRY);
                continue;
            }
        };
        if b.wait_for_change(generation, &[], Duration::from_secs(60))
            .is_err()
        {
            std::thread::sleep(WATCHER_RETRY);
        }
    }
}
