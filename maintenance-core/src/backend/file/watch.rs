//! Waiting for a change without spinning: one helper thread per watched
//! task blocks on the task's lock (granted by the kernel the instant the
//! task's last process dies, by any signal — a killed task sends no
//! message), and the mode record's generation is re-read every few tens of
//! milliseconds (a read costs microseconds), as is whether each watched
//! task's file still has its name. The caller's wait stays interruptible:
//! it never blocks longer than one short tick.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::FileBackend;
use super::dir::Dir;
use crate::error::Result;
use crate::records::TaskRecord;

/// How often the mode record is re-read while waiting.
const TICK: Duration = Duration::from_millis(20);

/// The helper threads of one backend, and what they have seen end.
#[derive(Debug, Default)]
pub(super) struct Watchers {
    state: Mutex<State>,
    ended: Condvar,
}

#[derive(Debug, Default)]
struct State {
    watching: HashSet<String>,
    ended: u64,
}

impl Watchers {
    fn watch(self: &Arc<Self>, dir: &Arc<Dir>, task: &TaskRecord) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.watching.insert(task.id.clone()) {
            return;
        }
        drop(state);
        let me = Arc::clone(self);
        let dir = Arc::clone(dir);
        let id = task.id.clone();
        let spawned = std::thread::Builder::new()
            .name("manage-task-watch".into())
            .spawn(move || {
                let name = task_file(&id);
                if let Ok(Some(file)) = dir.open_read(&name) {
                    // Blocks until every process holding the task is gone.
                    let _ = fs2::FileExt::lock_shared(&file);
                }
                let mut state = me.state.lock().unwrap_or_else(|e| e.into_inner());
                state.watching.remove(&id);
                state.ended += 1;
                me.ended.notify_all();
            });
        if spawned.is_err() {
            // No thread: the caller's tick still notices the end.
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.watching.remove(&task.id);
        }
    }

    fn ended(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).ended
    }

    /// Waits up to `d` for a watched task to end after `seen` ends.
    fn wait_ended(&self, seen: u64, d: Duration) -> bool {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (state, _) = self
            .ended
            .wait_timeout_while(state, d, |s| s.ended == seen)
            .unwrap_or_else(|e| e.into_inner());
        state.ended != seen
    }
}

/// The name of task `id`'s file.
fn task_file(id: &str) -> String {
    format!("{id}{}", super::tasks::TASK_SUFFIX)
}

/// The file backend's `wait_for_change`.
pub(super) fn wait(
    backend: &FileBackend,
    generation: u64,
    tasks: &[TaskRecord],
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let seen = backend.watchers.ended();
    for t in tasks {
        backend.watchers.watch(&backend.tasks, t);
    }
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(());
        }
        if backend.watchers.wait_ended(seen, TICK.min(deadline - now)) {
            return Ok(());
        }
        // A task whose name is gone has ended, even if its helper thread
        // still blocks: its slot may have been locked by the next task
        // before the thread took the lock the end freed.
        if tasks
            .iter()
            .any(|t| matches!(backend.tasks.exists(&task_file(&t.id)), Ok(false)))
        {
            return Ok(());
        }
        let record_generation = backend
            .read_record()
            .map(|r| r.generation)
            .unwrap_or(generation);
        if record_generation != generation {
            return Ok(());
        }
    }
}
