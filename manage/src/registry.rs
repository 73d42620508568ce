//! The registry as the runner sees it: every registration linked in, by
//! name. Names of built-ins (crate `commands`) and of the runner's own
//! commands are reserved; two plug-ins claiming one name make that name —
//! and only that name — fail with an error naming both crates.

use std::collections::BTreeMap;

use maintenance_core::command::{Registration, registrations};

/// The crate whose commands are built in.
pub(crate) const BUILTIN_CRATE: &str = "commands";
/// Names the runner answers itself.
pub(crate) const RUNNER_NAMES: &[&str] = &["help", "completions", "man"];

/// What a name resolves to among the registrations.
#[derive(Debug, Clone)]
pub(crate) enum Found {
    /// Exactly one command.
    One(&'static Registration),
    /// Several crates claim it: the crates, sorted.
    Duplicate(Vec<&'static str>),
}

/// Resolves a group of registrations of one name; says what it ignored.
fn resolve(
    name: &str,
    mut regs: Vec<&'static Registration>,
    warnings: &mut Vec<String>,
) -> Option<Found> {
    if RUNNER_NAMES.contains(&name) {
        for r in &regs {
            warnings.push(format!(
                "crate {} registers `{name}`, a name the runner reserves; it is ignored",
                r.origin
            ));
        }
        return None;
    }
    if regs.iter().any(|r| r.origin == BUILTIN_CRATE) {
        for r in regs.iter().filter(|r| r.origin != BUILTIN_CRATE) {
            warnings.push(format!(
                "crate {} registers `{name}`, the name of a built-in command; it is ignored",
                r.origin
            ));
        }
        regs.retain(|r| r.origin == BUILTIN_CRATE);
    }
    match regs.len() {
        0 => None,
        1 => Some(Found::One(regs[0])),
        _ => {
            let mut origins: Vec<&str> = regs.iter().map(|r| r.origin).collect();
            origins.sort_unstable();
            Some(Found::Duplicate(origins))
        }
    }
}

/// The registration(s) of `name`, without sorting or building anything
/// else: dispatch stays as cheap with 50 commands as with one.
pub(crate) fn find(name: &str, warnings: &mut Vec<String>) -> Option<Found> {
    let regs: Vec<&'static Registration> = registrations().filter(|r| r.name == name).collect();
    if regs.is_empty() {
        return None;
    }
    resolve(name, regs, warnings)
}

/// Every command, sorted by name (inventory's order is unspecified).
pub(crate) fn all(warnings: &mut Vec<String>) -> BTreeMap<&'static str, Found> {
    let mut by_name: BTreeMap<&'static str, Vec<&'static Registration>> = BTreeMap::new();
    for r in registrations() {
        by_name.entry(r.name).or_default().push(r);
    }
    by_name
        .into_iter()
        .filter_map(|(name, regs)| resolve(name, regs, warnings).map(|f| (name, f)))
        .collect()
}

/// The error for a name two crates claim.
pub(crate) fn duplicate_message(name: &str, origins: &[&str]) -> String {
    format!(
        "the command name `{name}` is registered by more than one crate: {}; \
         rename the command in one of them (every other command still works)",
        origins.join(" and ")
    )
}
