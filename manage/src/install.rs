//! What a user installs beside the binary, generated from the whole
//! command tree under the binary's own name: `completions <shell>`.

use std::ffi::OsString;
use std::io::Write;

use clap::Command;
use maintenance_core::config::Config;
use maintenance_core::exit;

use crate::cli;
use crate::registry::{self, Found};
use crate::resolve;

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
