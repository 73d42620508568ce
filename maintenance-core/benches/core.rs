//! Benchmarks of maintenance-core.
fn main() {}
