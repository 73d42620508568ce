//! The drain `stop` policy, kept by every tracked run itself: a helper
//! thread watches the mode, and when a drain that this run holds off begins
//! (PENDING or OFFLINE; READONLY_PENDING too for a run that may write) it
//! sets the run's stop request and sends SIGTERM to its external child, if
//! any. Nobody signals a pid from outside: pids get reused.

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
