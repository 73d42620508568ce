//! Whole-process benchmarks of `manage`: the binaries hyperfine times, the
//! helper that prepares a state directory, and the reaction-time measurer.
//! `run.sh` builds and runs them all.
//!
//! - `bench-empty`: `fn main() {}`, the baseline every figure is set against;
//! - `bench-manage`: `manage::run()` plus this crate's [`Noop`] command;
//! - `bench-manage-fat`: the same plus 50 extra registered commands (feature
//!   `extra-commands`);
//! - `bench-state`: fills a state directory with sessions, or holds tasks
//!   live while a benchmark runs;
//! - `reaction`: the time from the last task's end (dropped, or its process
//!   killed) to OFFLINE, and from another process's `deactivate` to the
//!   waiter's return.

use maintenance_core::command::{Context, ManageCommand, register};
use maintenance_core::policy::Instances;
use maintenance_core::{Policy, anyhow, clap};

/// Does nothing, tracked: what a command costs beyond its own work.
#[derive(Debug, clap::Args)]
pub struct Noop {}

impl ManageCommand for Noop {
    const NAME: &'static str = "noop";
    // Concurrent: consecutive runs never wait for an instance lock.
    const POLICY: Policy = Policy::DEFAULT.instances(Instances::Concurrent);

    fn run(self, _ctx: &mut Context<'_>) -> anyhow::Result<()> {
        Ok(())
    }
}
register!(Noop);

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on this
/// host, so a time taken in one process can be compared with another's.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always
    // exists on Linux and macOS.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The median, 90th percentile, minimum and maximum of `samples`
/// (sorted in place), as a line: `median 1.23 ms  p90 …`.
pub fn summary_ms(samples: &mut [f64]) -> Summary {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i]
    };
    Summary {
        n: samples.len(),
        median: at(0.5),
        p90: at(0.9),
        min: samples[0],
        max: samples[samples.len() - 1],
    }
}

/// Order statistics of a set of timings, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// How many samples.
    pub n: usize,
    /// The median.
    pub median: f64,
    /// The 90th percentile.
    pub p90: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n={} median {:.2} ms  p90 {:.2} ms  min {:.2} ms  max {:.2} ms",
            self.n, self.median, self.p90, self.min, self.max
        )
    }
}
