//! The `alias` target: `[alias]` expansion, as the runner resolves a
//! command line (`manage/src/resolve`).
//!
//! Input: line 1 the command line's words; every further line one alias,
//! `name=words` (split at whitespace; no `=`: the line is its name and it
//! has no words). Nothing is on `PATH`, so no name is an external command.
//!
//! Holds: expansion ends (AFL++'s time limit sees a loop), through at most
//! `MAX_ALIAS_DEPTH` aliases, none twice; the line grows by exactly the
//! words of the aliases met, each replacing its name, so never without
//! bound; the arguments after the name given are kept, last; and a refusal
//! names the alias at fault.

use maintenance_core::Config;

/// How many aliases one name may expand through (`MAX_ALIAS_DEPTH`).
const MAX_ALIAS_DEPTH: usize = 16;

/// The check.
pub fn check(data: &[u8]) {
    let lines = crate::lines(data);
    let words: Vec<String> = lines
        .first()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let mut config = Config::with_state_dir("/nonexistent-state");
    for line in lines.iter().skip(1) {
        let (name, expansion) = line.split_once('=').unwrap_or((line, ""));
        config.aliases.insert(
            name.trim().to_owned(),
            expansion.split_whitespace().map(str::to_owned).collect(),
        );
    }
    match manage::expand_aliases_for_fuzzing(&words, &config) {
        Ok((line, met)) => {
            assert!(met.len() <= MAX_ALIAS_DEPTH, "{met:?}");
            for (i, a) in met.iter().enumerate() {
                assert!(!met[..i].contains(a), "alias {a:?} expanded twice: {met:?}");
            }
            let grown: usize = met.iter().map(|a| config.aliases[a].len()).sum();
            assert_eq!(line.len() + met.len(), words.len() + grown, "{met:?}");
            assert!(line.ends_with(&words[1..]), "{line:?} lost {words:?}");
            if let Some(first) = met.first() {
                assert_eq!(first, &words[0]);
            }
        }
        Err(message) => {
            assert!(!message.is_empty());
            if !words.is_empty() {
                assert!(
                    message.contains(&format!("`{}`", words[0])) || message.contains("alias `"),
                    "{message}"
                );
            }
        }
    }
}

/// Empties `PATH`, so that no name is found as an external command: call
/// first, before any thread starts.
pub fn no_external_commands() {
    // SAFETY: called at the start of `main`, before any other thread.
    unsafe { std::env::set_var("PATH", "") };
}
