//! The progress of a wait for OFFLINE, as `offline on` and `offline run`
//! draw it: the header line, then `<N> pending sessions. <*|-> (<S> sec)`,
//! both word for word as django-site-maintenance's `offline` command
//! prints them.

use std::io::Write;
use std::time::{Duration, Instant};

use maintenance_core::command::Context;
use maintenance_core::offline::Progress;

/// Draws the wait: the header once, then `<N> pending sessions. <*|->
/// (<S> sec)` — redrawn in place on a terminal, as plain lines (at most one
/// a second, only on a change) otherwise.
pub(super) struct Meter {
    terminal: bool,
    session_timeout: Duration,
    header: bool,
    drawn: Option<(u64, usize)>,
    plain: Option<(Instant, usize)>,
    star: bool,
    asked: usize,
}

impl Meter {
    /// A meter for a wait on `ctx`'s standard output.
    pub(super) fn new(ctx: &Context<'_>, session_timeout: Duration) -> Self {
        Meter {
            terminal: ctx.is_terminal(),
            session_timeout,
            header: false,
            drawn: None,
            plain: None,
            star: false,
            asked: 0,
        }
    }

    /// Draws one look at the wait.
    pub(super) fn update(&mut self, out: &mut dyn Write, p: &Progress<'_>) {
        let n = p.holding.active();
        if n == 0 && p.asked_to_stop.is_empty() {
            // Nothing holds it off: no header, and no "0 pending" line.
            return;
        }
        if !self.header {
            self.header = true;
            let _ = writeln!(
                out,
                "Active sessions detected. Waiting for logout. (Session timeout set to {} secs)",
                self.session_timeout.as_secs()
            );
        }
        // Drain `stop` commands were asked to stop when PENDING began; say so
        // once for each new one, above the progress line.
        let asked = p.asked_to_stop.len();
        if asked > self.asked {
            self.finish(out);
            let _ = writeln!(
                out,
                "Asked {asked} command{} to stop; waiting for {}.",
                if asked == 1 { "" } else { "s" },
                if asked == 1 { "it" } else { "them" }
            );
            self.asked = asked;
        }
        if n == 0 {
            return;
        }
        let secs = p.waited.as_secs();
        if self.terminal {
            if self.drawn == Some((secs, n)) {
                return;
            }
            if self.drawn.is_none_or(|(s, _)| s != secs) {
                self.star = !self.star;
            }
            self.drawn = Some((secs, n));
            let _ = write!(
                out,
                "\r{n} pending sessions. {} ({secs} sec)\x1b[K",
                self.mark()
            );
        } else {
            let due = self
                .plain
                .is_none_or(|(at, last)| last != n && at.elapsed() >= Duration::from_secs(1));
            if !due {
                return;
            }
            self.star = !self.star;
            self.plain = Some((Instant::now(), n));
            let _ = writeln!(out, "{n} pending sessions. {} ({secs} sec)", self.mark());
        }
        let _ = out.flush();
    }

    fn mark(&self) -> char {
        if self.star { '*' } else { '-' }
    }

    /// Ends a line redrawn in place.
    pub(super) fn finish(&mut self, out: &mut dyn Write) {
        if self.terminal && self.drawn.take().is_some() {
            let _ = writeln!(out);
        }
    }
}
