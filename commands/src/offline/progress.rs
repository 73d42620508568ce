//! The progress of a wait for OFFLINE, as `offline on` and `offline run`
//! draw it: the header line, then `<N> pending sessions. <*|-> (<S> sec)`
//! (`1 pending session.` for one),
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
            let _ = write!(out, "\r{}\x1b[K", self.line(n, secs));
        } else {
            let due = self
                .plain
                .is_none_or(|(at, last)| last != n && at.elapsed() >= Duration::from_secs(1));
            if !due {
                return;
            }
            self.star = !self.star;
            self.plain = Some((Instant::now(), n));
            let _ = writeln!(out, "{}", self.line(n, secs));
        }
        let _ = out.flush();
    }

    /// The progress line: `<N> pending sessions. <*|-> (<S> sec)`, and
    /// `1 pending session.` for one.
    fn line(&self, n: usize, secs: u64) -> String {
        let s = if n == 1 { "" } else { "s" };
        format!("{n} pending session{s}. {} ({secs} sec)", self.mark())
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

#[cfg(test)]
mod tests {
    use maintenance_core::clock::Timestamp;
    use maintenance_core::mode::ModeRecord;
    use maintenance_core::offline::Live;
    use maintenance_core::session::{SessionEntry, SessionKey};

    use super::*;

    fn meter(terminal: bool) -> Meter {
        Meter {
            terminal,
            session_timeout: Duration::from_secs(900),
            header: false,
            drawn: None,
            plain: None,
            star: false,
            asked: 0,
        }
    }

    fn live(sessions: usize) -> Live {
        Live {
            tasks: Vec::new(),
            sessions: (0..sessions)
                .map(|i| SessionEntry {
                    key: SessionKey::of(format!("user{i}").as_bytes()),
                    last_seen: Timestamp::EPOCH,
                    expires_at: Timestamp::EPOCH,
                })
                .collect(),
        }
    }

    /// What `meter` draws for one look with `sessions` live.
    fn draw(meter: &mut Meter, sessions: usize) -> String {
        let record = ModeRecord::initial();
        let holding = live(sessions);
        let mut out = Vec::new();
        meter.update(
            &mut out,
            &Progress {
                holding: &holding,
                waited: Duration::ZERO,
                sessions_released: false,
                record: &record,
                asked_to_stop: &[],
            },
        );
        String::from_utf8(out).unwrap()
    }

    const HEADER: &str =
        "Active sessions detected. Waiting for logout. (Session timeout set to 900 secs)\n";

    #[test]
    fn one_pending_session_is_singular_and_other_counts_plural() {
        assert_eq!(
            draw(&mut meter(false), 1),
            format!("{HEADER}1 pending session. * (0 sec)\n")
        );
        assert_eq!(
            draw(&mut meter(false), 2),
            format!("{HEADER}2 pending sessions. * (0 sec)\n")
        );
    }
}
