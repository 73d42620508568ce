//! End-to-end tests of manage, in `tests/`: they run real binaries as real
//! processes. This library is what the tests share, one module a job; every
//! helper is re-exported here, so a test says `use manage_tests::{…}`.
//!
//! - [`scratch`]: scratch directories another user can reach, snapshots of
//!   a tree (to prove nothing outside the state directory was touched), a
//!   tiny tmpfs that fills up;
//! - [`holder`]: the helper binary `task-holder`, which holds tasks and
//!   locks (its usage is at the top of `src/bin/task-holder.rs`), and its
//!   one-line reports;
//! - [`process`]: spawning a process and reading its lines with a hang
//!   guard (a hung process fails its test with a message instead of hanging
//!   the suite), how it ended, a shifted wall clock;
//! - [`pid`]: any process by its pid, a grandchild too: waiting for its
//!   death through a pidfd, signals, what `/proc` says of it;
//! - [`race`]: FIFOs and a start barrier for racing processes;
//! - [`cli_site`]: a site run with the `manage` binary (in a state
//!   directory, or on the PostgreSQL test server: `CliSite::on_postgres`,
//!   or every site of a test binary with `MANAGE_TEST_BACKEND=postgres`),
//!   and `offline on`'s progress lines; [`history`]: the history it reads
//!   back, and readers racing to notice; [`schedule`]: a window scheduled
//!   ahead, as its waiting process says it;
//! - [`crash`]: an operation killed at a seeded random moment, and the
//!   checks after every kill;
//! - [`web`] and [`http`]: the example site's web app and the HTTP clients
//!   that talk to it;
//! - [`nginx`]: a real nginx in front of it; [`link`]: a forwarder to the
//!   PostgreSQL test server that a test cuts or stalls (the database gone,
//!   loudly or silently);
//! - [`hosts`]: hosts on this machine, each a network namespace with a
//!   host name and a state directory of its own, sharing a site on the
//!   PostgreSQL test server (root only);
//! - [`users`]: the Unix users the permission tests run processes as, and
//!   [`shared_site`]: a deployment whose state those users share.
//!
//! Nothing here measures time: the only durations are hang guards, far
//! beyond anything a passing run needs ([`wait`]). The modules import one
//! another downwards only: [`wait`] and [`scratch`] at the bottom, the
//! sites at the top.

pub mod cli_site;
pub mod crash;
pub mod fixture;
pub mod history;
pub mod holder;
pub mod hosts;
pub mod http;
pub mod link;
pub mod nginx;
pub mod pid;
pub mod process;
pub mod race;
pub mod schedule;
pub mod scratch;
pub mod shared_site;
pub mod users;
pub mod wait;
pub mod web;

pub use cli_site::*;
pub use holder::*;
pub use http::*;
pub use link::*;
pub use nginx::*;
pub use pid::*;
pub use process::*;
pub use race::*;
pub use schedule::*;
pub use scratch::*;
pub use shared_site::*;
pub use users::*;
pub use wait::*;
pub use web::*;

/// The exit code of a refusal (`EX_TEMPFAIL`), as maintenance-core defines it.
pub const REFUSED: i32 = maintenance_core::exit::REFUSED as i32;

/// The `user@host` every process of these tests runs as, as records and
/// messages name it.
pub fn user_at_host() -> String {
    maintenance_core::identity::Identity::current().user_at_host()
}

/// The README's Rust snippets, compiled by `cargo test --doc` (and run,
/// unless marked `no_run`), so that the README cannot drift from the API:
/// this crate depends on every crate they use.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeSnippets;
