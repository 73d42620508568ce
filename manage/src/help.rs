//! What the runner prints about its commands: `--help` (every command in
//! groups, the options, the exit codes), `help <command>`, `--list
//! [--json]`, `completions <shell>` and the "did you mean" suggestion. These
//! build every command; dispatch builds only one.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use clap::Command;
use maintenance_core::config::Config;
use maintenance_core::exit;
use maintenance_core::policy::Policy;
use serde::Serialize;

use crate::cli;
use crate::registry::{self, BUILTIN_CRATE, Found};
use crate::resolve::{self, EXTERNAL_PREFIX, Target};

/// Where a listed command comes from.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
enum Origin {
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
    },
    External {
        path: PathBuf,
    },
}

/// One line of `--list`.
#[derive(Debug, Clone, Serialize)]
struct Listed {
    name: String,
    #[serde(flatten)]
    origin: Origin,
    about: String,
    policy: Option<Policy>,
    /// `descendants = "release"` from manage.toml (external commands only).
    #[serde(skip_serializing_if = "Option::is_none")]
    descendants: Option<maintenance_core::policy::Descendants>,
}

fn about_of(cmd: &Command) -> String {
    cmd.get_about().map(|a| a.to_string()).unwrap_or_default()
}

/// Every command of every kind, in dispatch order per name, sorted.
fn everything(config: Option<&Config>, warnings: &mut Vec<String>) -> Vec<Listed> {
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
            let mut about = format!("alias for `{}`", alias.words.join(" "));
            if let Some(e) = error {
                about.push_str(&format!(" (unusable: {})", e.reason()));
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
fn warn_all(err: &mut dyn Write, warnings: &[String]) -> Vec<String> {
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

/// A group of `--help`: its title and who belongs.
type Group = (&'static str, fn(&Origin) -> bool);

/// `--help`: the commands in groups, the runner's commands, the options and
/// the exit codes.
pub(crate) fn top_help(bin: &str, config: Option<&Config>, out: &mut dyn Write) -> u8 {
    let mut warnings = Vec::new();
    let all = everything(config, &mut warnings);
    let mut text = format!(
        "{bin} {} — run this site's commands, each tracked so maintenance waits for it\n\n\
         Usage: {bin} [OPTIONS] <COMMAND> [ARGS]...\n",
        env!("CARGO_PKG_VERSION")
    );
    let groups: [Group; 4] = [
        ("Built-in commands", |o| matches!(o, Origin::BuiltIn { .. })),
        ("Plug-in commands", |o| {
            matches!(o, Origin::Plugin { .. } | Origin::Duplicate { .. })
        }),
        ("Aliases", |o| matches!(o, Origin::Alias { .. })),
        ("External commands", |o| {
            matches!(o, Origin::External { .. })
        }),
    ];
    let width = all.iter().map(|l| l.name.len()).max().unwrap_or(0).max(19);
    for (title, wanted) in groups {
        let members: Vec<&Listed> = all.iter().filter(|l| wanted(&l.origin)).collect();
        if members.is_empty() {
            continue;
        }
        text.push_str(&format!("\n{title}:\n"));
        for l in members {
            let about = match &l.origin {
                Origin::Plugin { crate_name } => format!("{} [{crate_name}]", l.about),
                _ => l.about.clone(),
            };
            text.push_str(&format!("  {:width$}  {about}\n", l.name));
        }
    }
    text.push_str(&format!(
        "\nRunner commands:\n  {:width$}  Print a command's help\n  {:width$}  Print shell completions: bash, zsh or fish\n",
        "help <COMMAND>", "completions <SHELL>"
    ));
    text.push_str("\nOptions:\n");
    let top = cli::top_command(bin);
    for arg in top
        .get_arguments()
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
    {
        let mut flag = String::new();
        if let Some(s) = arg.get_short() {
            flag.push_str(&format!("-{s}, "));
        }
        if let Some(l) = arg.get_long() {
            flag.push_str(&format!("--{l}"));
        }
        if let Some(v) = arg.get_value_names().and_then(|v| v.first()) {
            flag.push_str(&format!(" <{v}>"));
        }
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        text.push_str(&format!("  {flag:28}  {help}\n"));
    }
    text.push_str(&format!("  {:28}  Print this help\n", "-h, --help"));
    text.push_str(&format!("  {:28}  Print version\n", "-V, --version"));
    text.push_str("\nExit codes:\n");
    for (code, meaning) in exit::TABLE {
        text.push_str(&format!("  {code:>3}  {meaning}\n"));
    }
    text.push_str(
        "  external commands exit with their own code, or 128+N if signal N killed them\n",
    );
    text.push_str(&format!(
        "\nSee `{bin} help <COMMAND>` for a command's options.\n"
    ));
    let _ = out.write_all(text.as_bytes());
    exit::SUCCESS
}

/// `help <topic>`.
pub(crate) fn help_for(
    bin: &str,
    topic: Option<&str>,
    config: Option<&Config>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let Some(topic) = topic else {
        return top_help(bin, config, out);
    };
    let mut warnings = Vec::new();
    let resolved = resolve::resolve_argv(vec![OsString::from(topic)], 0, config, &mut warnings);
    let alias = config.and_then(|c| c.aliases.get(topic));
    let code = match resolved {
        // An alias: what it expands to, and why that cannot run if it
        // cannot.
        Err(e) => {
            if let Some(words) = alias {
                let _ = writeln!(out, "`{topic}` is an alias for `{}`", words.join(" "));
            }
            let _ = writeln!(err, "error: {e}");
            e.exit_code()
        }
        Ok(r) if !r.aliases.is_empty() => {
            let words = alias.map(|w| w.join(" ")).unwrap_or_default();
            let _ = writeln!(out, "`{topic}` is an alias for `{words}`");
            exit::SUCCESS
        }
        Ok(r) => help_for_target(bin, topic, r.target, config, out, err),
    };
    warn_all(err, &warnings);
    code
}

/// `help <topic>` for what is no alias.
fn help_for_target(
    bin: &str,
    topic: &str,
    target: Target,
    config: Option<&Config>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    match target {
        Target::Registered(reg) => {
            let cmd = cli::top_command(bin).subcommand((reg.build)());
            match cmd.try_get_matches_from([bin, reg.name, "--help"]) {
                Ok(_) => exit::SUCCESS,
                Err(e) => cli::clap_exit(e, out, err),
            }
        }
        Target::External(path) => {
            let _ = writeln!(out, "`{topic}` is an external command: {}", path.display());
            let _ = out.flush();
            match std::process::Command::new(&path).arg("--help").status() {
                Ok(s) => s.code().unwrap_or(1).clamp(0, 255) as u8,
                Err(e) => {
                    let _ = writeln!(err, "error: cannot run {}: {e}", path.display());
                    exit::FAILURE
                }
            }
        }
        Target::Help => {
            let _ = writeln!(
                out,
                "Usage: {bin} help <COMMAND>\n\nPrints a command's help."
            );
            exit::SUCCESS
        }
        Target::Completions => {
            let _ = writeln!(
                out,
                "Usage: {bin} completions <SHELL>\n\nPrints completions for bash, zsh or fish, \
                 for this binary ({bin}): commands, their options and aliases.\n\n\
                 Example: {bin} completions bash > /etc/bash_completion.d/{bin}"
            );
            exit::SUCCESS
        }
        Target::Duplicate(origins) => {
            let _ = writeln!(
                err,
                "error: {}",
                registry::duplicate_message(topic, &origins)
            );
            exit::USAGE
        }
        Target::Unknown => {
            let _ = writeln!(err, "error: no command named `{topic}`");
            if let Some(s) = resolve::suggestion(topic, config) {
                let _ = writeln!(err, "\n  tip: a similar command exists: `{s}`");
            }
            exit::USAGE
        }
    }
}

/// `--list [--json]`.
pub(crate) fn list(
    config: Option<&Config>,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let mut warnings = Vec::new();
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
    let width = all.iter().map(|l| l.name.len()).max().unwrap_or(0);
    for l in &all {
        let origin = match &l.origin {
            Origin::BuiltIn { .. } => "built-in".to_owned(),
            Origin::Plugin { crate_name } => format!("crate {crate_name}"),
            Origin::Duplicate { crates } => format!("crates {}", crates.join(", ")),
            Origin::Alias { expands_to, .. } => format!("alias: {}", expands_to.join(" ")),
            Origin::External { path } => format!("path {}", path.display()),
        };
        let mut policy = l
            .policy
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into());
        if let Some(d) = l.descendants {
            policy.push_str(&format!(", descendants {d}"));
        }
        let _ = writeln!(out, "{:width$}  {origin}  [{policy}]  {}", l.name, l.about);
    }
    exit::SUCCESS
}

/// `completions <shell>`, under the binary's own name.
pub(crate) fn completions(
    bin: &str,
    args: &[OsString],
    config: Option<&Config>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let shell = args.first().map(|a| a.to_string_lossy().into_owned());
    let Some(shell) = shell
        .as_deref()
        .and_then(|s| s.parse::<clap_complete::Shell>().ok())
        .filter(|s| {
            matches!(
                s,
                clap_complete::Shell::Bash | clap_complete::Shell::Zsh | clap_complete::Shell::Fish
            )
        })
    else {
        let _ = writeln!(
            err,
            "error: `{bin} completions` needs a shell: bash, zsh or fish (got {})",
            shell
                .as_deref()
                .map(|s| format!("{s:?}"))
                .unwrap_or_else(|| "nothing".into())
        );
        return exit::USAGE;
    };
    let mut warnings = Vec::new();
    let mut cmd = cli::top_command(bin);
    for (_, found) in registry::all(&mut warnings) {
        if let Found::One(r) = found {
            cmd = cmd.subcommand((r.build)());
        }
    }
    if let Some(config) = config {
        for alias in resolve::aliases(config, &mut warnings) {
            cmd = cmd.subcommand(
                Command::new(alias.name.to_owned())
                    .about(format!("alias for `{}`", alias.words.join(" "))),
            );
        }
    }
    for (name, path) in resolve::externals() {
        if cmd.find_subcommand(&name).is_none() {
            cmd = cmd.subcommand(Command::new(name).about(format!("external: {}", path.display())));
        }
    }
    cmd = cmd
        .subcommand(Command::new("help").about("Print a command's help"))
        .subcommand(
            Command::new("completions")
                .about("Print shell completions")
                .arg(clap::Arg::new("shell").value_parser(["bash", "zsh", "fish"])),
        );
    // Into memory first: clap_complete panics on a closed pipe.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, bin, &mut script);
    let _ = out.write_all(&script);
    exit::SUCCESS
}
