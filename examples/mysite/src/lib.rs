//! The example site's library: its commands (`runserver`, `worker`,
//! `migrate`, `backup`, `report`) and the plug-ins it links, exported so
//! that the end-to-end tests build the very same binary (its `main` is
//! `manage::main!()`, in `main.rs` and in the tests' `e2e-mysite`).
//!
//! A site's binary names each plug-in crate it depends on: `inventory` only
//! sees crates that are linked, and a dependency that is never named is not
//! linked — its commands would vanish silently, in every profile.

pub mod jobs;
pub mod web;

// Named so that the plug-in is linked and its commands registered.
use hello_plugin as _;
