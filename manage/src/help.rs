//! What the runner prints about its commands: `--help` (every command in
//! groups, the options, the exit codes) and `help <command>`.

use std::ffi::OsString;
use std::io::Write;

use maintenance_core::config::Config;
use maintenance_core::exit;

use crate::cli;
use crate::list::{Listed, Origin, everything, warn_all};
use crate::registry;
use crate::resolve::{self, Target};

/// A group of `--help`: its title and who belongs.
type Group = (&'static str, fn(&Origin) -> bool);

/// `--help`: the commands in groups, the runner's commands, the options and
/// the exit codes.
// Not inlined into dispatch: start-up maps only the code of the target
// it runs, and the stack holds only that target's frame.
#[inline(never)]
pub(crate) fn top_help(bin: &str, config: Option<&Config>, out: &mut dyn Write) -> u8 {
    let mut warnings = Vec::new();
    let all = everything(config, &mut warnings);
    let mut text = format!(
        "{bin} {} — {}\n\n\
         Usage: {bin} [OPTIONS] <COMMAND> [ARGS]...\n",
        env!("CARGO_PKG_VERSION"),
        cli::ABOUT
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
        "\nRunner commands:\n  {:width$}  Print a command's help\n  {:width$}  Print shell completions: bash, zsh or fish\n  {:width$}  Print the man page, or write one per command into DIR\n",
        "help <COMMAND>", "completions <SHELL>", "man [--dir DIR]"
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
    text.push_str(&format!(
        "  {:>3}  the command's output was closed under it (`| head -1`); nothing is printed\n",
        cli::BROKEN_PIPE
    ));
    text.push_str(
        "  external commands exit with their own code, or 128+N if signal N killed them\n",
    );
    text.push_str(&format!(
        "\nSee `{bin} help <COMMAND>` for a command's options.\n"
    ));
    let _ = out.write_all(text.as_bytes());
    exit::SUCCESS
}

/// `help <topic> [<verb>…]`: the help of the command, or of its verb
/// (`help offline on` is `offline on --help`; a verb it does not have is
/// a usage error, as from `offline bogus --help`).
// Not inlined into dispatch: start-up maps only the code of the target
// it runs, and the stack holds only that target's frame.
#[inline(never)]
pub(crate) fn help_for(
    bin: &str,
    topic: Option<&str>,
    verbs: &[OsString],
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
        Ok(r) => help_for_target(bin, topic, verbs, r.target, config, out, err),
    };
    warn_all(err, &warnings);
    code
}

/// `help <topic>` for what is no alias.
fn help_for_target(
    bin: &str,
    topic: &str,
    verbs: &[OsString],
    target: Target,
    config: Option<&Config>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    match target {
        Target::Registered(reg) => {
            let cmd = cli::top_command(bin).subcommand((reg.build)());
            let words = [OsString::from(bin), OsString::from(reg.name)]
                .into_iter()
                .chain(verbs.iter().cloned())
                .chain([OsString::from("--help")]);
            match cmd.try_get_matches_from(words) {
                Ok(_) => exit::SUCCESS,
                Err(e) => cli::clap_exit(e, out, err),
            }
        }
        Target::External(path) => {
            // What is known, then its own help: run untracked, so help is
            // never refused during maintenance, when an operator needs it.
            let settings = config.and_then(|c| c.commands.get(topic));
            let mut policy = settings
                .map(|o| o.for_external())
                .unwrap_or_default()
                .to_string();
            if let Some(d) = settings.and_then(|o| o.descendants) {
                policy.push_str(&format!(", descendants {d}"));
            }
            let _ = writeln!(
                out,
                "`{topic}` is an external command: {}\n  policy: {policy}\n  \
                 its own help, from `{}{} --help` (run untracked):",
                path.display(),
                path.display(),
                verbs
                    .iter()
                    .map(|v| format!(" {}", v.to_string_lossy()))
                    .collect::<String>()
            );
            let _ = out.flush();
            match std::process::Command::new(&path)
                .args(verbs)
                .arg("--help")
                .status()
            {
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
        Target::Man => {
            let _ = writeln!(
                out,
                "Usage: {bin} man [--dir DIR]\n\nPrints the man page of this binary ({bin}): its \
                 options, every command, the exit codes. With --dir, writes a page per command \
                 ({bin}.1, {bin}-offline.1, …) into DIR instead.\n\n\
                 Example: {bin} man --dir /usr/local/share/man/man1"
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
