//! Start-up costs one at a time, to explain what `bench-manage noop` spends
//! beyond `bench-empty`. Names `manage` as `bench-manage` does, then does
//! only what its argument names; with LTO only the code a probe reaches is
//! linked in, so the whole binary's own cost shows in `bench-manage
//! --version` instead:
//!
//! - nothing: the registry's constructors and what `manage` links anyway;
//! - `thread`: spawns a thread that blocks, as the runner's signal thread
//!   did before it became a handler alone (the relay a waiter starts costs
//!   the same);
//! - `user`: looks up this process's `user@host`, as every task records;
//! - `config`: loads the configuration (searches for `manage.toml` upwards);
//! - `open DIR`: opens the file backend in DIR.
use bench_cli as _;
use maintenance_core::identity::Identity;
use maintenance_core::{Config, FileBackend, SystemClock};
use manage as _;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ok = match args.first().map(String::as_str) {
        None => true,
        Some("thread") => {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            std::thread::spawn(move || rx.recv());
            // Still blocked when the process exits, as the relay is.
            std::mem::forget(tx);
            true
        }
        Some("user") => !Identity::current().user_at_host().is_empty(),
        Some("config") => Config::load(&Default::default()).is_ok(),
        Some("open") => args.get(1).is_some_and(|dir| {
            FileBackend::open(&Config::with_state_dir(dir), SystemClock::shared()).is_ok()
        }),
        Some(_) => false,
    };
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
