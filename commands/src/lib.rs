//! The built-in commands of `manage`, one file each, written with exactly
//! the API a user's crate uses. `manage` links this crate so their
//! registrations are seen.

pub mod offline;
