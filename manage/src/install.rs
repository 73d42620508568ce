//! What a user installs beside the binary, generated from the whole
//! command tree (registered commands, aliases, external commands and the
//! runner's own) under the binary's own name: `completions <shell>` and
//! `man [--dir DIR]`.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Arg, Command, value_parser};
use clap_mangen::roff::{Roff, roman};
use maintenance_core::config::Config;
use maintenance_core::exit;

use crate::cli;
use crate::registry::{self, Found};
use crate::resolve;

/// A runner command's call: the binary's name, the words after the
/// command's name, and the configuration, if it could be read.
pub(crate) struct Asked<'a> {
    /// The binary's own name (`manage`, `mysite`).
    pub bin: &'a str,
    /// The words after `completions` or `man`.
    pub args: &'a [OsString],
    /// The configuration, for its aliases; `None` when it is broken.
    pub config: Option<&'a Config>,
}

/// `completions <shell>`, under the binary's own name.
// Not inlined into dispatch: start-up maps only the code of the target
// it runs, and the stack holds only that target's frame.
#[inline(never)]
pub(crate) fn completions(asked: Asked<'_>, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let Asked { bin, args, config } = asked;
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
    let mut cmd = tree(bin, config);
    // Into memory first: clap_complete panics on a closed pipe.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, bin, &mut script);
    let _ = out.write_all(&script);
    exit::SUCCESS
}

/// Every command of every kind under the top command, as the user sees
/// them: registered commands (a duplicate name left out), aliases, external
/// commands and the runner's own.
fn tree(bin: &str, config: Option<&Config>) -> Command {
    // What is wrong here is said by --list; the tree leaves it out.
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
    cmd.subcommand(Command::new("help").about("Print a command's help"))
        .subcommand(
            Command::new("completions")
                .about("Print shell completions")
                .arg(Arg::new("shell").value_parser(["bash", "zsh", "fish"])),
        )
        .subcommand(man_command())
}

/// The runner's `man`, as clap parses it.
fn man_command() -> Command {
    Command::new("man")
        .about("Print the man page, or write a page per command into a directory")
        .arg(
            Arg::new("dir")
                .long("dir")
                .value_name("DIR")
                .value_parser(value_parser!(PathBuf))
                .help("Write NAME.1 for every command (e.g. /usr/local/share/man/man1)"),
        )
}

/// `man [--dir DIR]`: the page of the binary (its options, every command,
/// the exit codes) on stdout; with `--dir`, one page per command of the
/// tree (`manage.1`, `manage-offline.1`, `manage-offline-on.1`, …) written
/// into DIR, each path printed.
// Not inlined into dispatch: start-up maps only the code of the target
// it runs, and the stack holds only that target's frame.
#[inline(never)]
pub(crate) fn man(asked: Asked<'_>, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let Asked { bin, args, config } = asked;
    let words = std::iter::once(OsString::from("man")).chain(args.iter().cloned());
    let matches = match man_command()
        .bin_name(format!("{bin} man"))
        .try_get_matches_from(words)
    {
        Ok(m) => m,
        Err(e) => return cli::clap_exit(e, out, err),
    };
    let mut top = tree(bin, config)
        .about(cli::ABOUT)
        .subcommand_help_heading("COMMANDS");
    top.build();
    let Some(dir) = matches.get_one::<PathBuf>("dir") else {
        // Into memory first, as the completions: a closed pipe is no error.
        let mut page = Vec::new();
        if let Err(e) = render(&top, true, &mut page) {
            let _ = writeln!(err, "error: cannot render the man page: {e}");
            return exit::FAILURE;
        }
        let _ = out.write_all(&page);
        return exit::SUCCESS;
    };
    match write_pages(&top, true, dir, out) {
        Ok(()) => exit::SUCCESS,
        Err(e) => {
            let hint = if e.kind() == std::io::ErrorKind::NotFound && !dir.exists() {
                format!(" (create it first: mkdir -p '{}')", dir.display())
            } else {
                String::new()
            };
            let _ = writeln!(
                err,
                "error: cannot write the man pages into {}: {e}{hint}",
                dir.display()
            );
            exit::FAILURE
        }
    }
}

/// Writes the page of `cmd` and of each of its commands, depth first, into
/// `dir`, naming each file on `out`.
fn write_pages(cmd: &Command, top: bool, dir: &Path, out: &mut dyn Write) -> std::io::Result<()> {
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    render(cmd, top, &mut page)?;
    std::fs::write(&path, page)?;
    // Naming it is for people: a closed stdout stops no page.
    let _ = writeln!(out, "{}", path.display());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, false, dir, out)?;
    }
    Ok(())
}

/// One man page in roff: clap_mangen's sections, and for the binary's own
/// page the exit codes.
fn render(cmd: &Command, top: bool, w: &mut dyn Write) -> std::io::Result<()> {
    type Section = fn(&clap_mangen::Man, &mut dyn Write) -> std::io::Result<()>;
    let man = clap_mangen::Man::new(cmd.clone());
    let mut sections: Vec<Section> = vec![
        clap_mangen::Man::render_name_section,
        clap_mangen::Man::render_synopsis_section,
        clap_mangen::Man::render_description_section,
    ];
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        sections.push(clap_mangen::Man::render_options_section);
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        sections.push(clap_mangen::Man::render_subcommands_section);
    }
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    // Each section comes with roff's preamble: keep the title's only.
    let preamble = Roff::default().render();
    let mut add = |bytes: Vec<u8>| {
        page.extend_from_slice(bytes.strip_prefix(preamble.as_bytes()).unwrap_or(&bytes));
    };
    for section in sections {
        let mut bytes = Vec::new();
        section(&man, &mut bytes)?;
        add(bytes);
    }
    if top {
        add(exit_status().render().into_bytes());
    }
    // Only the binary has a version (clap_mangen panics without one).
    if cmd.get_version().is_some() {
        let mut bytes = Vec::new();
        man.render_version_section(&mut bytes)?;
        add(bytes);
    }
    w.write_all(&page)
}

/// The EXIT STATUS section: the table `--help` prints.
fn exit_status() -> Roff {
    let mut roff = Roff::default();
    roff.control("SH", ["EXIT STATUS"]);
    let rows = exit::TABLE
        .iter()
        .map(|(code, meaning)| (code.to_string(), (*meaning).to_owned()))
        .chain([
            (
                cli::BROKEN_PIPE.to_string(),
                "the command's output was closed under it; nothing is printed".to_owned(),
            ),
            (
                "128+N".to_owned(),
                "an external command killed by signal N (otherwise it exits with its own code)"
                    .to_owned(),
            ),
        ]);
    for (code, meaning) in rows {
        roff.control("TP", [])
            .text([roman(code)])
            .text([roman(meaning)]);
    }
    roff
}
