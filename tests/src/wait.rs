//! The hang guard every wait of the tests is bounded by, and polling for a
//! state another process brings about.

use std::time::{Duration, Instant};

/// How long a test waits for a process to say or do something before it
/// declares it hung. A hang guard, never an assertion about speed.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

/// Calls `probe` until it returns something, and returns that; fails the
/// test, naming `what`, after the hang guard. For changes another process
/// makes that a server sees within its refresh interval: a hang guard, not
/// a measure of that interval.
pub fn poll_until<T>(what: &str, probe: impl FnMut() -> Option<T>) -> T {
    poll_until_else(what, probe, String::new)
}

/// [`poll_until`], whose failure also says what `why` returns then: what
/// the processes involved said, what a server logged.
pub fn poll_until_else<T>(
    what: &str,
    probe: impl FnMut() -> Option<T>,
    why: impl FnOnce() -> String,
) -> T {
    poll_until_within(HANG_GUARD, what, probe, why)
}

/// [`poll_until_else`] with a hang guard of `guard`: for a process whose
/// own bounds add up past [`HANG_GUARD`] on a loaded machine (a request
/// guard after a lock wait's allowance, say).
pub fn poll_until_within<T>(
    guard: Duration,
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
    why: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + guard;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("still not {what} after {guard:?}\n{}", why());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What `probe` returns once a killed (and reaped) process's hold is seen
/// gone. In a state directory at the first call, since the kernel frees a
/// dead process's locks before its parent can reap it, so a `None` then
/// fails the test; on PostgreSQL (`postgres`) within the hang guard, since
/// the server frees them only once it has read the closed connection (a
/// few milliseconds after the death; longer on a loaded machine).
pub fn once_released<T>(postgres: bool, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    if postgres {
        return poll_until(what, probe);
    }
    probe().unwrap_or_else(|| panic!("not {what} at once, with the process reaped"))
}
