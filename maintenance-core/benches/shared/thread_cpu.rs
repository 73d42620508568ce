//! Criterion's measurement of the benchmark thread's CPU time (user +
//! system, `CLOCK_THREAD_CPUTIME_ID`), for `BENCH_CLOCK=cpu`: what an
//! operation costs, without the time spent waiting for a core on a busy
//! machine. Included by the benches with `#[path]`.

use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};

/// The calling thread's CPU time, user and system.
#[allow(dead_code, reason = "core.rs measures through ThreadCpu alone")]
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The benchmark thread's CPU time (criterion calls `start` and `end` on
/// the thread that runs the routine).
pub struct ThreadCpu;

impl Measurement for ThreadCpu {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_time()
    }
    fn end(&self, started: Duration) -> Duration {
        thread_cpu_time().saturating_sub(started)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Nanoseconds, formatted as wall-clock times are.
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

/// Whether `BENCH_CLOCK=cpu` asks for CPU time.
pub fn wanted() -> bool {
    std::env::var_os("BENCH_CLOCK").is_some_and(|v| v == "cpu")
}
