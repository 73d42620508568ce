//! `task-holder`, the helper binary that holds tasks and locks on the
//! tests' command (its usage is at the top of `src/bin/task-holder.rs`),
//! and the one-line reports it prints.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use maintenance_core::TaskRecord;

use crate::cli_site::HelperState;
use crate::process::{Outcome, Proc};
use crate::users::{UNPRIVILEGED, User, assert_reachable};

/// Runs `task-holder` against one state directory.
#[derive(Debug, Clone)]
pub struct Holder {
    exe: PathBuf,
    /// The state directory, or under `MANAGE_TEST_BACKEND=postgres` a site
    /// on the test server, given to every run.
    state: HelperState,
    user: Option<User>,
}

impl Holder {
    /// `exe` is `env!("CARGO_BIN_EXE_task-holder")`; `state` the state
    /// directory every run is given. With `MANAGE_TEST_BACKEND=postgres`
    /// every run keeps its state on the PostgreSQL test server instead, as
    /// a site of this holder's own.
    pub fn new(exe: impl Into<PathBuf>, state: impl Into<PathBuf>) -> Holder {
        Holder {
            exe: exe.into(),
            state: HelperState::from_env(state),
            user: None,
        }
    }

    /// The same, with every run as `user`. Fails the test, saying what to
    /// do, when that user cannot reach the binary (a target directory under
    /// a private home): the test would otherwise fail for the wrong reason.
    pub fn as_user(&self, user: User) -> Holder {
        assert_reachable(&self.exe, UNPRIVILEGED);
        Holder {
            user: Some(user),
            ..self.clone()
        }
    }

    /// The state directory.
    pub fn state(&self) -> &Path {
        self.state.dir()
    }

    /// The command line `task-holder --state-dir STATE ARGS…`, stdio piped.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.args(self.state.args())
            .args(args)
            .env_remove(maintenance_core::task::ENV_TASK)
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(user) = self.user {
            cmd.uid(user.uid).gid(user.gid).current_dir("/");
        }
        cmd
    }

    /// Starts `task-holder ARGS…`.
    pub fn spawn(&self, args: &[&str]) -> Proc {
        Proc::spawn(self.command(args))
    }

    /// Runs `task-holder ARGS…` to its end, stdin closed at once.
    pub fn run(&self, args: &[&str]) -> Outcome {
        self.spawn(args).finish()
    }

    /// The live tasks, listed by a separate process.
    pub fn list(&self) -> Vec<TaskRecord> {
        let out = self.run(&["list"]);
        assert!(out.success(), "`list` failed: {out}");
        let line = out.stdout.first().unwrap_or_else(|| panic!("{out}"));
        serde_json::from_str(line).unwrap_or_else(|e| panic!("bad listing {line:?}: {e}"))
    }

    /// The ids of the live tasks, listed by a separate process.
    pub fn live_ids(&self) -> Vec<String> {
        self.list().into_iter().map(|t| t.id).collect()
    }

    /// Starts `hold ARGS…` and waits until it holds its task; returns the
    /// process and the task's id.
    pub fn hold(&self, args: &[&str]) -> (Proc, String) {
        let mut all = vec!["hold"];
        all.extend_from_slice(args);
        let mut p = self.spawn(&all);
        let line = p.line();
        match Report::parse(&line) {
            Report::Started { id, .. } => (p, id),
            other => panic!(
                "`hold {}` did not start: {other:?}; {}",
                args.join(" "),
                p.finish()
            ),
        }
    }
}

/// What a `task-holder` line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// `started <id> <pid> [refusals=<n>]`.
    Started {
        /// The task's id.
        id: String,
        /// The process that started it.
        pid: u32,
        /// How many refusals came before (with `--retry`).
        refusals: Option<u64>,
    },
    /// `refused <code> <message>`.
    Refused {
        /// The exit code.
        code: i32,
        /// Why.
        message: String,
    },
    /// `error <code> <message>`.
    Error {
        /// The exit code.
        code: i32,
        /// What went wrong.
        message: String,
    },
    /// Anything else.
    Other(String),
}

impl Report {
    /// Parses one line of `task-holder`'s output.
    pub fn parse(line: &str) -> Report {
        let mut words = line.splitn(3, ' ');
        let (kind, a, b) = (words.next(), words.next(), words.next());
        match (kind, a, b) {
            (Some("started"), Some(id), Some(rest)) => {
                let mut rest = rest.split(' ');
                let pid = rest.next().and_then(|p| p.parse().ok());
                let refusals = rest
                    .next()
                    .and_then(|r| r.strip_prefix("refusals="))
                    .and_then(|n| n.parse().ok());
                match pid {
                    Some(pid) => Report::Started {
                        id: id.to_owned(),
                        pid,
                        refusals,
                    },
                    None => Report::Other(line.to_owned()),
                }
            }
            (Some(kind @ ("refused" | "error")), Some(code), message) => {
                let Ok(code) = code.parse() else {
                    return Report::Other(line.to_owned());
                };
                let message = message.unwrap_or_default().to_owned();
                if kind == "refused" {
                    Report::Refused { code, message }
                } else {
                    Report::Error { code, message }
                }
            }
            _ => Report::Other(line.to_owned()),
        }
    }
}

impl Outcome {
    /// The first stdout line parsed as a `task-holder` report.
    pub fn report(&self) -> Report {
        Report::parse(self.stdout.first().map(String::as_str).unwrap_or(""))
    }
}
