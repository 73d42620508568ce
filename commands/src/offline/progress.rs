//! The progress of a wait for OFFLINE, as `offline on` and `offline run`
//! draw it: the header line, then `<N> pending sessions. <*|-> (<S> sec)`
//! (`1 pending session.` for one),
//! both word for word as django-site-maintenance's `offline` command
//! prints them, and on a terminal one line between them on how to bound or
//! cancel the wait.

use std::io::Write;
use std::time::{Duration, Instant};

use maintenance_core::command::Context;
use maintenance_core::transition::{Progress, Target};

/// Draws the wait: the header once, then `<N> pending sessions. <*|->
/// (<S> sec)` — redrawn in place on a terminal, as plain lines (at most one
/// a second, only on a change) otherwise.
pub(super) struct Meter {
    terminal: bool,
    session_timeout: Duration,
    limit: Option<Duration>,
    header: bool,
    drawn: Option<(u64, usize)>,
    plain: Option<(Instant, usize)>,
    star: bool,
    asked: usize,
    target: Target,
}

impl Meter {
    /// A meter for a wait on `ctx`'s standard output that gives up after
    /// `limit` (`--timeout`), or never.
    pub(super) fn new(
        ctx: &Context<'_>,
        session_timeout: Duration,
        limit: Option<Duration>,
    ) -> Self {
        Self::drawing(ctx.is_terminal(), session_timeout, limit)
    }

    /// A meter that draws for a terminal, or for a log.
    fn drawing(terminal: bool, session_timeout: Duration, limit: Option<Duration>) -> Self {
        Meter {
            terminal,
            session_timeout,
            limit,
            header: false,
            drawn: None,
            plain: None,
            star: false,
            asked: 0,
            target: Target::Offline,
        }
    }

    /// Draws one look at the wait.
    pub(super) fn update(&mut self, out: &mut dyn Write, p: &Progress<'_>) {
        self.target = p.target;
        let n = p.holding.active();
        if n == 0 && p.asked_to_stop.is_empty() {
            // Nothing holds it off: no header, and no "0 pending" line.
            return;
        }
        if !self.header {
            self.header = true;
            let _ = match p.target {
                Target::Offline => writeln!(
                    out,
                    "Active sessions detected. Waiting for logout. (Session timeout set to {} secs)",
                    self.session_timeout.as_secs()
                ),
                // Sessions do not hold READONLY off: what may write does.
                Target::ReadOnly => writeln!(
                    out,
                    "Writes in progress detected. Waiting for them to end. (Web sessions read on)"
                ),
            };
            // An operator watching learns how to end the wait; a deploy
            // log, whose script chose its --timeout, gets exactly the lines
            // above.
            if self.terminal {
                let _ = writeln!(out, "{}", hint(self.limit));
            }
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
    /// `1 pending session.` for one; `<N> pending writers.` for a
    /// read-only drain, whose holders are what may write.
    fn line(&self, n: usize, secs: u64) -> String {
        let s = if n == 1 { "" } else { "s" };
        let what = match self.target {
            Target::Offline => "session",
            Target::ReadOnly => "writer",
        };
        format!("{n} pending {what}{s}. {} ({secs} sec)", self.mark())
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

/// The line a terminal shows under the header: how the wait ends, and how
/// to bound or cancel it.
fn hint(limit: Option<Duration>) -> String {
    match limit {
        None => "No time limit: Ctrl-C cancels (the site goes back ONLINE); \
                 --timeout SECS bounds the wait."
            .to_owned(),
        Some(t) => format!(
            "Giving up after {} s (--timeout); Ctrl-C cancels sooner. Either way the site goes \
             back ONLINE.",
            t.as_secs_f64()
        ),
    }
}

#[cfg(test)]
mod tests {
    use maintenance_core::clock::Timestamp;
    use maintenance_core::mode::ModeRecord;
    use maintenance_core::session::{SessionEntry, SessionKey};
    use maintenance_core::transition::Live;

    use super::*;

    fn meter(terminal: bool, limit: Option<Duration>) -> Meter {
        Meter::drawing(terminal, Duration::from_secs(900), limit)
    }

    fn live(sessions: usize) -> Live {
        Live {
            tasks: Vec::new(),
            writes: Vec::new(),
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
                target: Target::Offline,
                settle_from: std::time::SystemTime::now(),
            },
        );
        String::from_utf8(out).unwrap()
    }

    const HEADER: &str =
        "Active sessions detected. Waiting for logout. (Session timeout set to 900 secs)\n";

    #[test]
    fn one_pending_session_is_singular_and_other_counts_plural() {
        assert_eq!(
            draw(&mut meter(false, None), 1),
            format!("{HEADER}1 pending session. * (0 sec)\n")
        );
        assert_eq!(
            draw(&mut meter(false, None), 2),
            format!("{HEADER}2 pending sessions. * (0 sec)\n")
        );
    }

    #[test]
    fn a_terminal_is_told_under_the_header_how_to_bound_or_cancel_the_wait() {
        assert_eq!(
            draw(&mut meter(true, None), 3),
            format!(
                "{HEADER}No time limit: Ctrl-C cancels (the site goes back ONLINE); \
                 --timeout SECS bounds the wait.\n\r3 pending sessions. * (0 sec)\x1b[K"
            )
        );
        assert_eq!(
            draw(&mut meter(true, Some(Duration::from_millis(2500))), 1),
            format!(
                "{HEADER}Giving up after 2.5 s (--timeout); Ctrl-C cancels sooner. Either way \
                 the site goes back ONLINE.\n\r1 pending session. * (0 sec)\x1b[K"
            )
        );
        // A log gets the header alone: the script chose its timeout.
        assert!(
            !draw(&mut meter(false, None), 3).contains("Ctrl-C"),
            "no hint in a log"
        );
    }
}
