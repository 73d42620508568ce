//! Name lookup: from a command line to what runs. The dispatch order and
//! alias expansion, with its cycle detection, live here and only here: the
//! top-level dispatch, `ctx.call`, `offline run`'s check before the site
//! goes offline, `help` and `--list` all ask [`resolve_argv`].
//!
//! A name is looked up in this order:
//!
//! 1. the runner's own commands: `help`, `completions`, `man`;
//! 2. a registered command — built in (crate `commands`) or from a plug-in
//!    crate linked into the binary;
//! 3. an alias from `[alias]` in `manage.toml` (an alias named like one of
//!    the above is ignored with a warning);
//! 4. an external command: an executable `manage-<name>` on `PATH`;
//! 5. otherwise the name is unknown.
//!
//! An alias expands as Cargo's do: the alias's name is replaced by its
//! words, the arguments that followed it are kept after them, and what the
//! new first word names is looked up again. Words before the name (the
//! binary's name, global options) are left as they are. An alias met twice
//! on the way is a cycle — of any length: `a → a`, `a → b → a`,
//! `a → b → c → a` — reported naming the chain and never followed; a chain
//! longer than [`MAX_ALIAS_DEPTH`] is refused too. Either is a usage error
//! (exit 2).
//!
//! Beside the resolver: `path.rs` finds external commands on `PATH`, and
//! `suggest.rs` the closest name of any kind for an unknown one.
//!
//! A little over 500 lines with its unit tests, which are the specification
//! of the order and of alias expansion; the code is about 360.

mod path;
mod suggest;

use std::ffi::OsString;
use std::path::PathBuf;

use maintenance_core::command::Registration;
use maintenance_core::config::Config;
use maintenance_core::exit;

use crate::registry::{self, Found};

pub use path::EXTERNAL_PREFIX;
pub(crate) use path::externals;
pub(crate) use suggest::suggestion;

/// How many aliases one name may expand through.
pub(crate) const MAX_ALIAS_DEPTH: usize = 16;

/// What a name is, once aliases are expanded.
pub(crate) enum Target {
    /// The runner's `help`.
    Help,
    /// The runner's `completions`.
    Completions,
    /// The runner's `man`.
    Man,
    /// A registered command.
    Registered(&'static Registration),
    /// A name several crates register: the crates, sorted.
    Duplicate(Vec<&'static str>),
    /// An executable `manage-<name>` on `PATH`.
    External(PathBuf),
    /// Nothing of that name.
    Unknown,
}

/// A command line resolved: what runs, and the line it runs with.
pub(crate) struct Resolved {
    /// The command line with every alias expanded. What stands before
    /// [`index`](Self::index) is what stood before the name the caller
    /// gave (the binary's name, global options).
    pub argv: Vec<OsString>,
    /// Where the name of what runs stands in [`argv`](Self::argv).
    pub index: usize,
    /// What that name is.
    pub target: Target,
    /// The aliases expanded on the way, in order; empty when the name
    /// given was no alias.
    pub aliases: Vec<String>,
}

impl Resolved {
    /// The name of what runs.
    pub(crate) fn name(&self) -> String {
        self.argv[self.index].to_string_lossy().into_owned()
    }

    /// The arguments after the name.
    pub(crate) fn args(&self) -> &[OsString] {
        &self.argv[self.index + 1..]
    }

    /// The name and its arguments, as words.
    pub(crate) fn words(&self) -> Vec<String> {
        self.argv[self.index..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// For a name reached through aliases: ` (from alias `a`)`, to follow
    /// a message about the name; otherwise empty.
    pub(crate) fn via(&self) -> String {
        match self.aliases.first() {
            Some(first) => format!(" (from alias `{first}`)"),
            None => String::new(),
        }
    }
}

/// Why a command line resolves to nothing that can run. Every kind is a
/// usage error ([`exit_code`](Self::exit_code)).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolveError {
    /// There is no name to look up.
    #[error("nothing to run: the command line is empty")]
    Nothing,
    /// An alias leads back to itself; `chain` ends with the alias met
    /// twice.
    #[error(
        "alias `{}` is recursive: {}; in {file}, make one of them name a command",
        chain.last().map(String::as_str).unwrap_or_default(),
        arrows(chain)
    )]
    Recursive {
        /// The names expanded, the repeated one last.
        chain: Vec<String>,
        /// The configuration file that defines them.
        file: String,
    },
    /// Aliases expand into one another deeper than [`MAX_ALIAS_DEPTH`].
    #[error(
        "alias `{}` expands through more than {MAX_ALIAS_DEPTH} aliases: {}; \
         in {file}, make it name a command sooner",
        chain.first().map(String::as_str).unwrap_or_default(),
        arrows(chain)
    )]
    TooDeep {
        /// The names expanded.
        chain: Vec<String>,
        /// The configuration file that defines them.
        file: String,
    },
    /// An alias with no words.
    #[error(
        "alias `{alias}` in {file} is empty; give it a command, e.g. `{alias} = \"offline status\"`"
    )]
    Empty {
        /// The alias.
        alias: String,
        /// The configuration file that defines it.
        file: String,
    },
    /// An alias whose first word is an option, not a command's name.
    #[error(
        "alias `{alias}` in {file} starts with {word:?}, not a command's name; \
         put the command first and its options after it"
    )]
    NoName {
        /// The alias.
        alias: String,
        /// Its first word.
        word: String,
        /// The configuration file that defines it.
        file: String,
    },
}

impl ResolveError {
    /// The exit code: usage, whatever the kind.
    pub(crate) fn exit_code(&self) -> u8 {
        exit::USAGE
    }

    /// A few words for a listing: `recursive`, `empty`, ….
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            ResolveError::Nothing => "nothing to run",
            ResolveError::Recursive { .. } => "recursive",
            ResolveError::TooDeep { .. } => "too many aliases deep",
            ResolveError::Empty { .. } => "empty",
            ResolveError::NoName { .. } => "does not start with a command",
        }
    }
}

/// `a` → `b` → `a`.
fn arrows(chain: &[String]) -> String {
    chain
        .iter()
        .map(|a| format!("`{a}`"))
        .collect::<Vec<_>>()
        .join(" → ")
}

/// The configuration file, for messages.
pub(crate) fn file_of(config: Option<&Config>) -> String {
    config
        .and_then(|c| c.file.as_deref())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| maintenance_core::config::FILE_NAME.to_owned())
}

/// One step of the lookup: what `name` itself is.
enum Step<'c> {
    /// Not an alias: the lookup ends here.
    Is(Target),
    /// An alias: its words.
    Alias(&'c [String]),
}

/// What `name` itself is, in the dispatch order, without expanding
/// anything. An alias named like a command is ignored with a warning.
fn lookup<'c>(name: &str, config: Option<&'c Config>, warnings: &mut Vec<String>) -> Step<'c> {
    let alias = config.and_then(|c| c.aliases.get(name));
    let shadowed = |warnings: &mut Vec<String>| {
        if alias.is_some() {
            warnings.push(format!(
                "alias `{name}` in {} is ignored: a command of that name exists",
                file_of(config)
            ));
        }
    };
    match name {
        "help" => {
            shadowed(warnings);
            return Step::Is(Target::Help);
        }
        "completions" => {
            shadowed(warnings);
            return Step::Is(Target::Completions);
        }
        "man" => {
            shadowed(warnings);
            return Step::Is(Target::Man);
        }
        _ => {}
    }
    if let Some(found) = registry::find(name, warnings) {
        shadowed(warnings);
        return Step::Is(match found {
            Found::One(r) => Target::Registered(r),
            Found::Duplicate(origins) => Target::Duplicate(origins),
        });
    }
    if let Some(words) = alias {
        return Step::Alias(words);
    }
    Step::Is(match path::find_external(name) {
        Some(path) => Target::External(path),
        None => Target::Unknown,
    })
}

/// Resolves the command line `argv` whose command name stands at `index`:
/// looks the name up in the dispatch order, expanding aliases until it
/// names something that is not one. `warnings` collects what was ignored
/// on the way (an alias shadowed by a command, a reserved name a plug-in
/// registers).
pub(crate) fn resolve_argv(
    mut argv: Vec<OsString>,
    index: usize,
    config: Option<&Config>,
    warnings: &mut Vec<String>,
) -> Result<Resolved, ResolveError> {
    let mut chain: Vec<String> = Vec::new();
    loop {
        let Some(name) = argv.get(index).map(|a| a.to_string_lossy().into_owned()) else {
            return Err(ResolveError::Nothing);
        };
        let words = match lookup(&name, config, warnings) {
            Step::Is(target) => {
                return Ok(Resolved {
                    argv,
                    index,
                    target,
                    aliases: chain,
                });
            }
            Step::Alias(words) => words,
        };
        let seen = chain.contains(&name);
        chain.push(name);
        if seen {
            return Err(ResolveError::Recursive {
                chain,
                file: file_of(config),
            });
        }
        if chain.len() > MAX_ALIAS_DEPTH {
            return Err(ResolveError::TooDeep {
                chain,
                file: file_of(config),
            });
        }
        let alias = chain.last().cloned().unwrap_or_default();
        match words.first() {
            None => {
                return Err(ResolveError::Empty {
                    alias,
                    file: file_of(config),
                });
            }
            Some(word) if word.is_empty() || word.starts_with('-') => {
                return Err(ResolveError::NoName {
                    alias,
                    word: word.clone(),
                    file: file_of(config),
                });
            }
            Some(_) => {}
        }
        argv.splice(index..=index, words.iter().map(OsString::from));
    }
}

/// Resolves `argv`, a command name and its arguments (as `ctx.call` and
/// `offline run` give them).
pub(crate) fn resolve_words(
    argv: &[String],
    config: Option<&Config>,
    warnings: &mut Vec<String>,
) -> Result<Resolved, ResolveError> {
    resolve_argv(
        argv.iter().map(OsString::from).collect(),
        0,
        config,
        warnings,
    )
}

/// Alias expansion for the fuzz targets (`fuzz/`): `words` resolved as
/// `ctx.call` resolves them with `config`'s aliases — the expanded line and
/// the aliases met on the way, or the error's message. Not part of the API.
#[doc(hidden)]
pub fn expand_aliases_for_fuzzing(
    words: &[String],
    config: &Config,
) -> Result<(Vec<String>, Vec<String>), String> {
    let mut warnings = Vec::new();
    match resolve_words(words, Some(config), &mut warnings) {
        Ok(r) => Ok((r.words(), r.aliases)),
        Err(e) => Err(e.to_string()),
    }
}

/// An alias `--list`, `--help` and completions show: one no command
/// shadows, with its words and where it leads.
pub(crate) struct ListedAlias<'c> {
    /// Its name.
    pub name: &'c str,
    /// The words it expands to.
    pub words: &'c [String],
    /// Where it leads: what runs, or why nothing can.
    pub resolved: Result<Resolved, ResolveError>,
}

/// Every alias of the configuration that no command shadows, sorted by
/// name, each resolved. Shadowed ones are left out with a warning.
pub(crate) fn aliases<'c>(config: &'c Config, warnings: &mut Vec<String>) -> Vec<ListedAlias<'c>> {
    config
        .aliases
        .iter()
        .filter_map(|(name, words)| {
            let resolved = resolve_argv(vec![OsString::from(name)], 0, Some(config), warnings);
            // An alias that is no alias: a command of that name won.
            if resolved.as_ref().is_ok_and(|r| r.aliases.is_empty()) {
                return None;
            }
            Some(ListedAlias {
                name,
                words,
                resolved,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration with these aliases (name, line).
    fn config(aliases: &[(&str, &str)]) -> Config {
        let mut c = Config::with_state_dir("/nonexistent-state");
        c.file = Some(PathBuf::from("/site/manage.toml"));
        c.aliases = aliases
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    v.split_whitespace().map(str::to_owned).collect(),
                )
            })
            .collect();
        c
    }

    fn line(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[track_caller]
    fn recursive_chain(c: &Config, name: &str) -> Vec<String> {
        match resolve_argv(line(&["manage", name]), 1, Some(c), &mut Vec::new()) {
            Err(ResolveError::Recursive { chain, .. }) => chain,
            Err(e) => panic!("{name}: another error: {e}"),
            Ok(r) => panic!("{name}: resolved to `{}`", r.name()),
        }
    }

    #[test]
    fn cycles_of_every_length_are_caught_naming_the_chain() {
        let c = config(&[
            ("me", "me --again"),
            ("a", "b"),
            ("b", "a"),
            ("x", "y 1"),
            ("y", "z"),
            ("z", "x 2"),
            ("in", "a"),
        ]);
        assert_eq!(recursive_chain(&c, "me"), ["me", "me"]);
        assert_eq!(recursive_chain(&c, "a"), ["a", "b", "a"]);
        assert_eq!(recursive_chain(&c, "y"), ["y", "z", "x", "y"]);
        // Led into a cycle from outside it: the repeated alias is named.
        assert_eq!(recursive_chain(&c, "in"), ["in", "a", "b", "a"]);
        let mut warnings = Vec::new();
        let e = resolve_words(&["x".into()], Some(&c), &mut warnings)
            .err()
            .expect("a cycle");
        assert_eq!(
            e.to_string(),
            "alias `x` is recursive: `x` → `y` → `z` → `x`; in /site/manage.toml, \
             make one of them name a command"
        );
        assert_eq!(e.exit_code(), exit::USAGE);
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn a_long_chain_without_a_cycle_is_refused_past_the_depth_bound() {
        let names: Vec<String> = (0..=MAX_ALIAS_DEPTH).map(|i| format!("a{i}")).collect();
        let mut pairs: Vec<(String, String)> = names
            .windows(2)
            .map(|w| (w[0].clone(), w[1].clone()))
            .collect();
        pairs.push((names[MAX_ALIAS_DEPTH].clone(), "offline status".into()));
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let c = config(&pairs);
        match resolve_words(&["a0".into()], Some(&c), &mut Vec::new()) {
            Err(ResolveError::TooDeep { chain, .. }) => {
                assert_eq!(chain.len(), MAX_ALIAS_DEPTH + 1)
            }
            Err(e) => panic!("another error: {e}"),
            Ok(r) => panic!("resolved to `{}`", r.name()),
        }
        // Exactly as deep as allowed still resolves.
        let r = resolve_words(&["a1".into()], Some(&c), &mut Vec::new()).expect("resolves");
        assert!(matches!(r.target, Target::Registered(reg) if reg.name == "offline"));
        assert_eq!(r.aliases.len(), MAX_ALIAS_DEPTH);
    }

    #[test]
    fn an_alias_expands_in_place_keeping_what_precedes_and_follows_it() {
        let c = config(&[("deploy", "st --json"), ("st", "offline status")]);
        let r = resolve_argv(
            line(&["manage", "-v", "--state-dir", "d", "deploy", "--exit-code"]),
            4,
            Some(&c),
            &mut Vec::new(),
        )
        .expect("resolves");
        assert_eq!(
            r.argv,
            line(&[
                "manage",
                "-v",
                "--state-dir",
                "d",
                "offline",
                "status",
                "--json",
                "--exit-code"
            ])
        );
        assert_eq!((r.index, r.name()), (4, "offline".to_owned()));
        assert_eq!(r.aliases, ["deploy", "st"]);
        assert_eq!(r.words(), ["offline", "status", "--json", "--exit-code"]);
        assert_eq!(r.via(), " (from alias `deploy`)");
    }

    #[test]
    fn an_alias_named_like_a_command_is_ignored_with_a_warning() {
        let c = config(&[("offline", "nothing"), ("help", "nothing")]);
        let mut warnings = Vec::new();
        let r = resolve_words(&["offline".into()], Some(&c), &mut warnings).expect("resolves");
        assert!(matches!(r.target, Target::Registered(_)) && r.aliases.is_empty());
        let r = resolve_words(&["help".into()], Some(&c), &mut warnings).expect("resolves");
        assert!(matches!(r.target, Target::Help));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0]
                == "alias `offline` in /site/manage.toml is ignored: a command of that name exists",
            "{warnings:?}"
        );
        assert!(aliases(&c, &mut warnings).is_empty(), "neither is listed");
    }

    #[test]
    fn an_empty_alias_or_one_starting_with_an_option_is_an_error_naming_it() {
        let mut c = config(&[("dash", "-v offline")]);
        c.aliases.insert("empty".into(), Vec::new());
        c.aliases.insert("blank".into(), vec![String::new()]);
        for (name, needle) in [
            ("empty", "alias `empty` in /site/manage.toml is empty"),
            (
                "dash",
                "alias `dash` in /site/manage.toml starts with \"-v\"",
            ),
            (
                "blank",
                "alias `blank` in /site/manage.toml starts with \"\"",
            ),
        ] {
            let e = resolve_words(&[name.into()], Some(&c), &mut Vec::new())
                .err()
                .unwrap_or_else(|| panic!("{name} resolved"));
            assert!(e.to_string().starts_with(needle), "{name}: {e}");
        }
        assert!(matches!(
            resolve_words(&[], Some(&c), &mut Vec::new()),
            Err(ResolveError::Nothing)
        ));
    }
}
