//! An example plug-in crate: its `hello` command arrives with the command
//! API; for now it only links against maintenance-core.

pub use maintenance_core;
