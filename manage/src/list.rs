//! `--list [--json]`: every command of every kind — registered, alias,
//! external — with its origin and policy, and the listing `--help` groups.
//! It builds every command; dispatch builds only one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use clap::Command;
use maintenance_core::config::Config;
use maintenance_core::exit;
use maintenance_core::policy::Policy;
use serde::Serialize;

use crate::registry::{self, BUILTIN_CRATE, Found};
use crate::resolve::{self, EXTERNAL_PREFIX, Target};

/// Where a listed command comes from.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub(crate) enum Origin {
    BuiltIn {
        crate_name: String,
    },
    Plugin {
        crate_name: String,
    },
    Duplicate {
        crates: Vec<String>,
    },
    Alias {
        expands_to: Vec<String>,
        /// Why it cannot run (a cycle, an empty alias); absent when it can.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// The same in a few words, for the text listing.
        #[serde(skip)]
        reason: Option<&'static str>,
    },
    External {
        path: PathBuf,
    },
}

/// One line of `--list`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Listed {
    pub(crate) name: String,
    #[serde(flatten)]
    pub(crate) origin: Origin,
    pub(crate) about: String,
    pub(crate) policy: Option<Policy>,
    /// `descendants = "release"` from manage.toml (external commands only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) descendants: Option<maintenance_core::policy::Descendants>,
}

impl Origin {
    /// The origin's name, the same word as the JSON's `kind`.
    fn kind(&self) -> &'static str {
        match self {
            Origin::BuiltIn { .. } => "built-in",
            Origin::Plugin { .. } => "plugin",
            Origin::Duplicate { .. } => "duplicate",
            Origin::Alias { .. } => "alias",
            Origin::External { .. } => "external",
        }
    }

    /// Where it comes from: its crate (or crates), what the alias runs,
    /// the external command's path.
    fn from(&self) -> String {
        match self {
            Origin::BuiltIn { crate_name } | Origin::Plugin { crate_name } => crate_name.clone(),
            Origin::Duplicate { crates } => crates.join(", "),
            Origin::Alias { expands_to, .. } => expands_to.join(" "),
            Origin::External { path } => path.display().to_string(),
        }
    }
}

impl Listed {
    /// The columns of its `--list` line: name, kind, where it comes from,
    /// policy, and the about line (an alias's or an external command's
    /// would only repeat the origin: only why an alias cannot run).
    fn columns(&self) -> [String; 5] {
        let mut policy = match self.policy {
            Some(p) => format!("[{p}"),
            None => "-".to_owned(),
        };
        if let Some(d) = self.descendants {
            policy.push_str(&format!(", descendants {d}"));
        }
        if self.policy.is_some() {
            policy.push(']');
        }
        let about = match &self.origin {
            Origin::Alias { reason, .. } => reason
                .map(|r| format!("(unusable: {r})"))
                .unwrap_or_default(),
            Origin::External { .. } => String::new(),
            _ => self.about.clone(),
        };
        [
            self.name.clone(),
            self.origin.kind().to_owned(),
            self.origin.from(),
            policy,
            about,
        ]
    }
}

fn about_of(cmd: &Command) -> String {
    cmd.get_about().map(|a| a.to_string()).unwrap_or_default()
}

/// Every command of every kind, in dispatch order per name, sorted.
pub(crate) fn everything(config: Option<&Config>, warnings: &mut Vec<String>) -> Vec<Listed> {
    let mut listed: BTreeMap<String, Listed> = BTreeMap::new();
    for (name, found) in registry::all(warnings) {
        let (origin, about, policy) = match found {
            Found::One(r) => {
                let origin = if r.origin == BUILTIN_CRATE {
                    Origin::BuiltIn {
                        crate_name: r.origin.to_owned(),
                    }
                } else {
                    Origin::Plugin {
                        crate_name: r.origin.to_owned(),
                    }
                };
                let policy = match config.and_then(|c| c.commands.get(name)) {
                    None => r.policy,
                    Some(o) => o.for_registered(name, r.policy).unwrap_or_else(|msg| {
                        warnings.push(format!(
                            "{msg}; running `{name}` is refused until this is fixed"
                        ));
                        r.policy
                    }),
                };
                (origin, about_of(&(r.build)()), Some(policy))
            }
            Found::Duplicate(crates) => (
                Origin::Duplicate {
                    crates: crates.iter().map(|c| c.to_string()).collect(),
                },
                "(unusable: registered by more than one crate)".to_owned(),
                None,
            ),
        };
        listed.insert(
            name.to_owned(),
            Listed {
                name: name.to_owned(),
                origin,
                about,
                policy,
                descendants: None,
            },
        );
    }
    if let Some(config) = config {
        for alias in resolve::aliases(config, warnings) {
            let error = match &alias.resolved {
                Ok(r) => {
                    if matches!(r.target, Target::Unknown) {
                        warnings.push(format!(
                            "alias `{}` in {} leads to `{name}`, which is not a command \
                             (neither registered nor `{EXTERNAL_PREFIX}{name}` on PATH)",
                            alias.name,
                            resolve::file_of(Some(config)),
                            name = r.name()
                        ));
                    }
                    None
                }
                Err(e) => {
                    warnings.push(e.to_string());
                    Some(e)
                }
            };
            let reason = error.map(|e| e.reason());
            let mut about = format!("alias for `{}`", alias.words.join(" "));
            if let Some(reason) = reason {
                about.push_str(&format!(" (unusable: {reason})"));
            }
            let error = error.map(ToString::to_string);
            listed.insert(
                alias.name.to_owned(),
                Listed {
                    name: alias.name.to_owned(),
                    about,
                    origin: Origin::Alias {
                        expands_to: alias.words.to_vec(),
                        error,
                        reason,
                    },
                    policy: None,
                    descendants: None,
                },
            );
        }
    }
    for (name, path) in resolve::externals() {
        let policy = config
            .and_then(|c| c.commands.get(&name))
            .map(|o| o.for_external())
            .unwrap_or_default();
        let descendants = config
            .and_then(|c| c.commands.get(&name))
            .and_then(|o| o.descendants);
        listed.entry(name.clone()).or_insert(Listed {
            name,
            about: format!("external: {}", path.display()),
            origin: Origin::External { path },
            policy: Some(policy),
            descendants,
        });
    }
    listed.into_values().collect()
}

/// Prints each warning once, in the order first given; returns them.
pub(crate) fn warn_all(err: &mut dyn Write, warnings: &[String]) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut once = Vec::new();
    for w in warnings {
        if seen.insert(w) {
            let _ = writeln!(err, "warning: {w}");
            once.push(w.clone());
        }
    }
    once
}

/// `--list [--json]`; `broken` says why `manage.toml` is left out, if it
/// is, first among the warnings.
// Not inlined into dispatch: start-up maps only the code of the target
// it runs, and the stack holds only that target's frame.
#[inline(never)]
pub(crate) fn list(
    config: Option<&Config>,
    broken: Option<String>,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let mut warnings: Vec<String> = broken.into_iter().collect();
    let all = everything(config, &mut warnings);
    let warnings = warn_all(err, &warnings);
    if json {
        let doc = serde_json::json!({ "version": 1, "commands": all, "warnings": warnings });
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        );
        return exit::SUCCESS;
    }
    let rows: Vec<[String; 5]> = all.iter().map(Listed::columns).collect();
    let mut widths = [0; 4];
    for row in &rows {
        for (w, col) in widths.iter_mut().zip(row) {
            *w = (*w).max(col.chars().count());
        }
    }
    for [name, kind, from, policy, about] in &rows {
        let [wn, wk, wf, wp] = widths;
        let line = format!("{name:wn$}  {kind:wk$}  {from:wf$}  {policy:wp$}  {about}");
        let _ = writeln!(out, "{}", line.trim_end());
    }
    exit::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_listing_names_each_origin_as_the_json_kind_does() {
        let origins = [
            Origin::BuiltIn {
                crate_name: "commands".into(),
            },
            Origin::Plugin {
                crate_name: "p".into(),
            },
            Origin::Duplicate {
                crates: vec!["a".into(), "b".into()],
            },
            Origin::Alias {
                expands_to: vec!["x".into()],
                error: None,
                reason: None,
            },
            Origin::External {
                path: PathBuf::from("/bin/manage-x"),
            },
        ];
        for origin in origins {
            let json = serde_json::to_value(&origin).expect("an origin serializes");
            assert_eq!(json["kind"], origin.kind(), "{json}");
        }
    }
}
