//! The `alias` fuzz target under AFL++: see `src/alias.rs` for what it checks.

fn main() {
    manage_fuzz::alias::no_external_commands();
    afl::fuzz!(|data: &[u8]| {
        manage_fuzz::alias::check(data);
    });
}
