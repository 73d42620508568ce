//! Finding the command name in a command line without building any
//! command's arguments: global options (and their values) are skipped, the
//! first other word is the name. Start-up so does not grow with the number
//! of registered commands.
//!
//! [`leading`] reads the global options before the name by hand, so that
//! dispatch needs no clap parse of its own before the command's: it either
//! understands every word there exactly as clap would, or gives up and
//! leaves them to clap (an unknown option, a bad value, `--list`,
//! `--version`, `--`, anything unusual), so its answer never differs from
//! clap's.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::cli::Given;

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

/// What stands before the command name, read by hand.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Leading {
    /// Only global options: their values, as clap would give them.
    Globals(Given),
    /// Global options, then `-h` or `--help`, at which clap stops reading:
    /// the runner's own help.
    Help,
}

/// Reads the words of `argv` before `end` (the command name's index, or
/// the length when there is none) as the global options; `None` when any
/// of them is something else, or something clap would refuse, so that
/// clap reads them and says what is wrong.
pub(crate) fn leading(argv: &[OsString], end: usize) -> Option<Leading> {
    let mut globals = Given::default();
    let (mut verbose, mut quiet) = (0i32, 0i32);
    let mut i = 1;
    while i < end {
        let word = argv.get(i)?.to_str()?;
        i += 1;
        let (flag, inline) = match word.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v)),
            _ => (word, None),
        };
        let valued = matches!(flag, "--state-dir" | "--config" | "--lock-timeout");
        if inline.is_some() && !valued {
            return None;
        }
        if valued {
            let value = match inline {
                Some(v) => v,
                None => {
                    let v = argv.get(i).filter(|_| i < end)?.to_str()?;
                    i += 1;
                    v
                }
            };
            // Empty, or what clap would take for an option: clap says.
            if value.is_empty() || value.starts_with('-') {
                return None;
            }
            match flag {
                "--state-dir" if globals.state_dir.is_none() => {
                    globals.state_dir = Some(PathBuf::from(value))
                }
                "--config" if globals.config.is_none() => {
                    globals.config = Some(PathBuf::from(value))
                }
                "--lock-timeout" if globals.lock_timeout.is_none() => {
                    globals.lock_timeout =
                        Some(maintenance_core::config::parse_seconds(value).ok()?)
                }
                // Given twice: clap refuses it.
                _ => return None,
            }
            continue;
        }
        match flag {
            "-h" | "--help" => return Some(Leading::Help),
            "--verbose" => verbose += 1,
            "--quiet" => quiet += 1,
            "--ignore-maintenance" if !globals.ignore_maintenance => {
                globals.ignore_maintenance = true
            }
            _ => {
                let cluster = flag.strip_prefix('-').filter(|c| !c.is_empty())?;
                for c in cluster.chars() {
                    match c {
                        'v' => verbose += 1,
                        'q' => quiet += 1,
                        _ => return None,
                    }
                }
            }
        }
    }
    // Past i8's range clap's counts wrap in the subtraction: clap decides.
    globals.verbose = i8::try_from(verbose).ok()?;
    globals.quiet = i8::try_from(quiet).ok()?;
    Some(Leading::Globals(globals))
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

#[cfg(test)]
mod leading_tests {
    use super::*;
    use crate::cli::Globals;
    use clap::value_parser;

    /// What dispatch's clap parse makes of the words before the name.
    /// What was read, combined.
    #[derive(Debug, PartialEq)]
    enum Read {
        Globals(Globals),
        Help,
    }

    fn hand_reads(leading: Leading) -> Read {
        match leading {
            Leading::Globals(given) => Read::Globals(given.globals()),
            Leading::Help => Read::Help,
        }
    }

    fn clap_reads(argv: &[OsString]) -> Result<Read, clap::error::ErrorKind> {
        let top = crate::cli::top_command("manage")
            .allow_external_subcommands(true)
            .external_subcommand_value_parser(value_parser!(OsString))
            .try_get_matches_from(argv);
        match top {
            Ok(m) => Ok(Read::Globals(Globals::from_matches(&m))),
            Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => Ok(Read::Help),
            Err(e) => Err(e.kind()),
        }
    }

    #[test]
    fn what_it_reads_by_hand_is_what_clap_reads_and_the_rest_it_leaves_to_clap() {
        let lines: &[&[&str]] = &[
            &["noop"],
            &["-v", "noop"],
            &["-vvq", "--quiet", "noop", "-v"],
            &["--verbose", "--verbose", "noop"],
            &[
                "--state-dir",
                "/s",
                "--config",
                "c.toml",
                "offline",
                "status",
            ],
            &[
                "--state-dir=/s",
                "--config=c.toml",
                "--lock-timeout=1.5",
                "x",
            ],
            &["--lock-timeout", "15m", "--ignore-maintenance", "x"],
            &["--help"],
            &["-h", "offline"],
            &["-v", "--help", "--bogus"],
            &["--state-dir", "/a", "--state-dir", "/b", "x"],
            &["--ignore-maintenance", "--ignore-maintenance", "x"],
            &["--lock-timeout", "-1", "x"],
            &["--lock-timeout", "soon", "x"],
            &["--state-dir=", "x"],
            &["--state-dir", "--help"],
            &["--verbose=2", "x"],
            &["-vh", "x"],
            &["-x", "noop"],
            &["--list"],
            &["--list", "--json"],
            &["--version", "x"],
            &["--", "x"],
            &["-", "x"],
        ];
        let mut by_hand = 0;
        for words in lines {
            let argv: Vec<OsString> = std::iter::once("manage")
                .chain(words.iter().copied())
                .map(OsString::from)
                .collect();
            let index = command_index(&argv);
            let Some(read) = leading(&argv, index.unwrap_or(argv.len())) else {
                continue;
            };
            by_hand += 1;
            assert_eq!(Ok(hand_reads(read)), clap_reads(&argv), "{words:?}");
        }
        assert_eq!(by_hand, 11, "the usual lines are read by hand");
    }
}
