//! The `records` fuzz target under AFL++: see `src/records.rs` for what it checks.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        manage_fuzz::records::check(data);
    });
}
