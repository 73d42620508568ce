//! The `layer` fuzz target under AFL++: see `src/layer.rs` for what it checks.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        manage_fuzz::layer::check(data);
    });
}
