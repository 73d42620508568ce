//! Finding the command name in a command line without building any
//! command's arguments: global options (and their values) are skipped, the
//! first other word is the name. Start-up so does not grow with the number
//! of registered commands.

use std::ffi::OsString;

/// Global options that take a value.
const WITH_VALUE: &[&str] = &["--state-dir", "--config", "--lock-timeout"];

/// Where the command name stands in `argv` (the binary's name at 0), if
/// there is one.
pub(crate) fn command_index(argv: &[OsString]) -> Option<usize> {
    let mut i = 1;
    while i < argv.len() {
        let arg = argv[i].to_string_lossy();
        if arg == "--" {
            return (i + 1 < argv.len()).then_some(i + 1);
        }
        if !arg.starts_with('-') || arg == "-" {
            return Some(i);
        }
        if WITH_VALUE.contains(&arg.as_ref()) {
            i += 1;
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn skips_global_options_and_their_values() {
        assert_eq!(command_index(&argv(&["manage", "hello"])), Some(1));
        assert_eq!(
            command_index(&argv(&["manage", "-v", "--state-dir", "hello", "hi"])),
            Some(4)
        );
        assert_eq!(
            command_index(&argv(&["manage", "--state-dir=x", "-q", "hi"])),
            Some(3)
        );
        assert_eq!(command_index(&argv(&["manage", "--list"])), None);
        assert_eq!(command_index(&argv(&["manage", "--", "hi"])), Some(2));
    }
}
