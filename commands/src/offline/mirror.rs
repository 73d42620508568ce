//! `manage offline mirror`: keeps this host's web-server markers (`OFFLINE`,
//! `READONLY` in its local `state_dir`) in step with the shared mode of a
//! site on PostgreSQL, so every host's nginx answers from its own disk.
//! Long-running and untracked, as `offline` is.
//!
//! A thread of its own follows the mode through
//! [`Backend::wait_for_change`] and reads it again at least every
//! `--check-every`; it writes the markers (maintenance-core's `host`
//! module: temp file and rename) whenever they disagree with the mode, or
//! with a local override, which always wins (`offline on --local`). When
//! the mode cannot be read it keeps the markers as they are (fail static),
//! says so once per outage, retries with backoff, and writes them again
//! once the state answers. The command's own thread writes the thread's
//! lines and waits for SIGTERM or Ctrl-C: then it stops the thread between
//! two writes (never in the middle of one) and exits 0.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use maintenance_core::backend::Backend;
use maintenance_core::command::{Context, Exit};
use maintenance_core::config::BackendKind;
use maintenance_core::host::{HostDir, Markers};
use maintenance_core::{anyhow, clap, exit};

/// The first wait before reading an unreachable state again; it doubles
/// up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two tries while the state cannot be read.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

// The flags of `offline mirror`. (A plain comment: under the deferred
// verbs a doc comment here would replace the verb's own `--help` title.)
#[derive(Debug, clap::Args)]
pub(super) struct MirrorArgs {
    /// Read the shared mode at least this often, whatever the pushes of
    /// mode changes say: seconds or units (`2`, `500ms` is not accepted:
    /// give `0.5`).
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = maintenance_core::config::parse_seconds)]
    check_every: Duration,
}

/// Runs `offline mirror` until SIGTERM or Ctrl-C.
#[inline(never)]
pub(super) fn exec(ctx: &mut Context<'_>, args: &MirrorArgs) -> anyhow::Result<()> {
    let config = ctx.config().clone();
    if config.backend == BackendKind::File {
        writeln!(
            ctx.out(),
            "offline mirror: nothing to mirror: this site's state is the state directory {}, \
             and every mode change writes its web-server markers there itself; the mirror is \
             for sites whose state is shared (backend = \"postgres\")",
            config.state_dir.display()
        )?;
        return Ok(());
    }
    let host = HostDir::open(&config)?;
    let backend = ctx.backend()?;
    let check_every = args.check_every.max(Duration::from_millis(10));
    writeln!(
        ctx.out(),
        "offline mirror: keeping the web-server markers in {} in step with the mode in {} \
         (read at least every {:?})",
        host.path().display(),
        backend.location(),
        check_every
    )?;
    let verbose = ctx.verbosity() > 0;
    let stopped = Arc::new(Mutex::new(false));
    let (lines, rx) = mpsc::channel();
    let watcher = {
        let stopped = Arc::clone(&stopped);
        std::thread::Builder::new()
            .name("manage-mirror".into())
            .spawn(move || {
                Mirror {
                    host,
                    backend,
                    stopped,
                    lines,
                    check_every,
                    verbose,
                }
                .run()
            })?
    };
    let stop = ctx.stop_token().clone();
    loop {
        if stop.requested() {
            // Between two writes: a marker half-written never stays.
            *stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
            writeln!(
                ctx.out(),
                "offline mirror: stopped; the markers stay as they are"
            )?;
            return Err(Exit(exit::SUCCESS).into());
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => writeln!(ctx.out(), "offline mirror: {line}")?,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let why = match watcher.join() {
                    Ok(()) => "its thread ended".to_owned(),
                    Err(_) => "its thread panicked".to_owned(),
                };
                anyhow::bail!("offline mirror stopped: {why}");
            }
        }
    }
}

/// The thread that follows the mode.
struct Mirror {
    host: HostDir,
    backend: std::sync::Arc<dyn Backend>,
    stopped: Arc<Mutex<bool>>,
    lines: mpsc::Sender<String>,
    check_every: Duration,
    /// `-v`: a line for every read of the mode.
    verbose: bool,
}

impl Mirror {
    fn say(&self, line: String) {
        let _ = self.lines.send(line);
    }

    fn run(self) {
        let mut outage: Option<Instant> = None;
        let mut backoff = FIRST_BACKOFF;
        // The last failure to write the markers, said once until it changes.
        let mut failed: Option<String> = None;
        loop {
            match self.backend.mode() {
                Ok(view) => {
                    if let Some(since) = outage.take() {
                        self.say(format!(
                            "the mode can be read again (after {:.1} s): the markers follow it",
                            since.elapsed().as_secs_f64()
                        ));
                    }
                    backoff = FIRST_BACKOFF;
                    let want = Markers::of(&view);
                    let note = format!(
                        "since {} by {} (the site is {}; written by offline mirror)",
                        view.record.since, view.record.by, view.mode
                    );
                    if !self.write(want, &note, &mut failed) {
                        return;
                    }
                    if self.verbose {
                        self.say(format!(
                            "read the mode: {} (generation {})",
                            view.mode, view.record.generation
                        ));
                    }
                    // A wait that fails is an outage: the next read says so.
                    let _ =
                        self.backend
                            .wait_for_change(view.record.generation, &[], self.check_every);
                }
                Err(e) => {
                    if outage.is_none() {
                        self.say(format!(
                            "cannot read the mode, keeping the markers as they are until it can \
                             be read again (retrying every {:?} at most): {e}",
                            MAX_BACKOFF
                        ));
                        outage = Some(Instant::now());
                    }
                    // The local override needs no database: it still wins.
                    if !self.write_override_only(&mut failed) {
                        return;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Makes the markers be `want`, or what a standing local override
    /// calls for; `false` once the command stops.
    fn write(&self, want: Markers, note: &str, failed: &mut Option<String>) -> bool {
        let stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        if *stopped {
            return false;
        }
        // Read last, just before writing: an override set meanwhile wins.
        let (want, note) = match self.host.local_override() {
            Ok(None) => (want, note.to_owned()),
            Ok(Some(o)) => (
                Markers::OVERRIDDEN,
                format!("since {} by {} (a local override)", o.since, o.by),
            ),
            Err(e) => {
                self.failed(failed, format!("{e}; it counts as standing"));
                (Markers::OVERRIDDEN, "(a local override)".to_owned())
            }
        };
        match self.host.set_markers(want, &note) {
            Ok(changed) => {
                if changed {
                    self.say(format!(
                        "markers now: OFFLINE {}, READONLY {} {}",
                        if want.offline { "present" } else { "absent" },
                        if want.read_only { "present" } else { "absent" },
                        note
                    ));
                }
                *failed = None;
            }
            Err(e) => self.failed(failed, format!("cannot write the markers: {e}")),
        }
        true
    }

    /// While the mode cannot be read: markers change only for a standing
    /// local override.
    fn write_override_only(&self, failed: &mut Option<String>) -> bool {
        match self.host.local_override() {
            Ok(None) => !*self.stopped.lock().unwrap_or_else(|e| e.into_inner()),
            _ => self.write(Markers::OVERRIDDEN, "(a local override)", failed),
        }
    }

    fn failed(&self, failed: &mut Option<String>, line: String) {
        if failed.as_deref() != Some(line.as_str()) {
            self.say(line.clone());
            *failed = Some(line);
        }
    }
}
