//! The built-in commands of `manage`, one file each, written with exactly
//! the API a user's crate uses. The `offline` command arrives with the
//! runner; this crate is linked by `manage` so their registrations are seen.

pub use maintenance_core;
