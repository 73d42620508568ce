//! What each fuzz target checks, as plain functions: the targets in
//! `src/bin/` hand AFL++'s inputs to them, and `cargo test` here replays
//! the seed corpora through them. Each check asserts what must hold of the
//! parser's answer, not only that it returns: a panic is a finding.

pub mod alias;
pub mod config;
pub mod layer;
pub mod records;

/// Splits fuzz input into lines, lossily as UTF-8 (the parsers under test
/// take text).
pub fn lines(data: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(data)
        .split('\n')
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every seed of `corpus/<target>` passes its target's checks.
    fn replay(target: &str, check: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            check(&std::fs::read(&path).unwrap());
            n += 1;
        }
        assert!(n > 0, "no seeds in {}", dir.display());
    }

    #[test]
    fn config_seeds_pass() {
        replay("config", crate::config::check);
    }

    #[test]
    fn records_seeds_pass() {
        replay("records", crate::records::check);
    }

    #[test]
    fn layer_seeds_pass() {
        replay("layer", crate::layer::check);
    }

    #[test]
    fn alias_seeds_pass() {
        replay("alias", crate::alias::check);
    }
}
