//! The baseline: an empty Rust binary, built with the same profile as
//! `bench-manage`.
fn main() {}
