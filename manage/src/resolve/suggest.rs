//! "Did you mean": the closest known name of any kind (registered, the
//! runner's own, alias, external) by edit distance, computed here because
//! clap stops suggesting once external subcommands are allowed.

use maintenance_core::config::Config;

use crate::registry::{self, RUNNER_NAMES};

/// The closest known name of any kind to `typed`.
pub(crate) fn suggestion(typed: &str, config: Option<&Config>) -> Option<String> {
    let mut warnings = Vec::new();
    let mut names: Vec<String> = registry::all(&mut warnings)
        .keys()
        .map(|n| n.to_string())
        .collect();
    names.extend(RUNNER_NAMES.iter().map(|n| n.to_string()));
    if let Some(c) = config {
        names.extend(c.aliases.keys().cloned());
    }
    names.extend(super::path::externals().into_keys());
    closest(typed, names.iter().map(String::as_str)).map(str::to_owned)
}

/// The candidate closest to `typed`, if within an edit distance of 3.
fn closest<'a>(typed: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (distance(typed, c), c))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, c)| c)
}

/// Levenshtein distance between two strings, by characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(cur)
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_nearest_within_three_edits() {
        assert_eq!(closest("helo", ["hello", "offline"]), Some("hello"));
        assert_eq!(closest("ofline", ["hello", "offline"]), Some("offline"));
        assert_eq!(closest("zzzzzzzz", ["hello", "offline"]), None);
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
