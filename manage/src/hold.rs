//! A task whose hold is lost for good (its lock's connection failed and it
//! could not enter again through the gate, `TaskLease::on_hold_lost`): the
//! run is told to stop — `ctx.stop_requested()` turns true, an external
//! command gets SIGTERM — and whatever still runs after
//! [`STOP_GRACE`] is killed: an external command and everything under its
//! keeper by SIGKILL, a registered command by ending this process with
//! [`exit::HOLD_LOST`]. So the command is gone before the server frees the
//! lock (I1 across a partition).

use maintenance_core::command::StopToken;
use maintenance_core::task::STOP_GRACE;
use maintenance_core::{CommandTask, exit};

use crate::signals;

/// Has `task`'s run stopped, saying so on stderr, should its hold be lost.
pub(crate) fn stop_when_lost(task: &mut CommandTask, stop: StopToken, bin: &str, name: &str) {
    let (bin, name) = (bin.to_owned(), name.to_owned());
    task.on_hold_lost(move |why| {
        eprintln!(
            "{bin}: `{name}` is stopped: {why}. It no longer holds off maintenance: asking it \
             to stop (SIGTERM), and killing it (SIGKILL) in {} s.",
            STOP_GRACE.as_secs()
        );
        stop.request();
        signals::terminate_child();
        let _ = std::thread::Builder::new()
            .name("manage-hold-lost".into())
            .spawn(move || {
                std::thread::sleep(STOP_GRACE);
                if signals::kill_child_tree() {
                    return;
                }
                // A registered command still running in this process.
                if crate::whole_process() {
                    eprintln!(
                        "{bin}: `{name}` did not stop within {} s: ended (exit {}).",
                        STOP_GRACE.as_secs(),
                        exit::HOLD_LOST
                    );
                    // SAFETY: _exit ends the process at once; nothing is
                    // left to run that must not be cut short.
                    unsafe { libc::_exit(i32::from(exit::HOLD_LOST)) };
                }
            });
    });
}
