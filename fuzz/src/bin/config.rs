//! The `config` fuzz target under AFL++: see `src/config.rs` for what it checks.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        manage_fuzz::config::check(data);
    });
}
