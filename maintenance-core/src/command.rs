//! The command API: how any crate — ours or a user's plug-in — writes a
//! command. A clap-derive `Args` struct, `impl ManageCommand` with `NAME` and
//! `run`, and one `register!` line:
//!
//! ```
//! use std::io::Write;
//! use maintenance_core::clap;
//! use maintenance_core::command::{register, Context, ManageCommand};
//!
//! /// Rebuild the search index.
//! #[derive(Debug, clap::Args)]
//! pub struct Reindex {
//!     /// Only this model.
//!     #[arg(long)]
//!     model: Option<String>,
//! }
//!
//! impl ManageCommand for Reindex {
//!     const NAME: &'static str = "reindex";
//!     fn run(self, ctx: &mut Context<'_>) -> maintenance_core::anyhow::Result<()> {
//!         writeln!(ctx.out(), "reindexing {}", self.model.as_deref().unwrap_or("all"))?;
//!         Ok(())
//!     }
//! }
//! register!(Reindex);
//! ```
//!
//! `register!` submits a const [`Registration`] to the `inventory` registry
//! (re-exported, so a plug-in needs no dependency of its own). The runner
//! reads the registry sorted by name; see `manage::run`.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::backend::{self, Backend};
use crate::config::Config;
use crate::policy::Policy;
use crate::records::TaskRecord;

pub use crate::register;

/// A command. Implement it for a `clap::Args` struct and `register!` it.
pub trait ManageCommand: clap::Args + Sized + 'static {
    /// The command's name, as typed after `manage`.
    const NAME: &'static str;
    /// What the command declares about tracking, instances, maintenance and
    /// drain. Build it from [`Policy::DEFAULT`] with its `const fn` setters.
    const POLICY: Policy = Policy::DEFAULT;

    /// Runs the command.
    fn run(self, ctx: &mut Context<'_>) -> anyhow::Result<()>;

    /// The command as clap would parse `words` — what follows its name,
    /// every word valid UTF-8 and none starting with `-` — built without
    /// clap; `None` (the default) leaves them to clap. For the hot lines
    /// of a command run many times a day (`offline status`): its start-up
    /// then builds no clap command at all. It must return what clap's parse
    /// gives, or `None`; `manage::testing::assert_plain_words_parse_as_clap`
    /// checks that.
    fn from_plain_words(words: &[&str]) -> Option<Self> {
        let _ = words;
        None
    }
}

/// A command built by [`ManageCommand::from_plain_words`], ready to run.
pub type PlainRun = Box<dyn FnOnce(&mut Context<'_>) -> anyhow::Result<()>>;

/// One registered command: what `register!` submits. Built in a const
/// context; read through [`registrations`].
#[derive(Clone, Copy)]
pub struct Registration {
    /// The command's name.
    pub name: &'static str,
    /// The crate that registered it (`CARGO_PKG_NAME`).
    pub origin: &'static str,
    /// Its declared policy.
    pub policy: Policy,
    /// Builds its clap command (name, about, arguments).
    pub build: fn() -> clap::Command,
    /// Parses `matches` into the command and runs it.
    pub run: fn(&clap::ArgMatches, &mut Context<'_>) -> anyhow::Result<()>,
    /// Builds the command from plain words without clap, when it can
    /// ([`ManageCommand::from_plain_words`]).
    pub plain: fn(&[&str]) -> Option<PlainRun>,
}

impl Registration {
    /// The registration of `T`, made by crate `origin`.
    pub const fn of<T: ManageCommand>(origin: &'static str) -> Self {
        Registration {
            name: T::NAME,
            origin,
            policy: T::POLICY,
            build: build::<T>,
            run: run::<T>,
            plain: plain::<T>,
        }
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .field("policy", &self.policy)
            .finish()
    }
}

fn build<T: ManageCommand>() -> clap::Command {
    T::augment_args(clap::Command::new(T::NAME))
}

fn run<T: ManageCommand>(matches: &clap::ArgMatches, ctx: &mut Context<'_>) -> anyhow::Result<()> {
    let args = <T as clap::FromArgMatches>::from_arg_matches(matches)?;
    args.run(ctx)
}

fn plain<T: ManageCommand>(words: &[&str]) -> Option<PlainRun> {
    let command = T::from_plain_words(words)?;
    Some(Box::new(move |ctx: &mut Context<'_>| command.run(ctx)))
}

inventory::collect!(Registration);

/// Registers a command type. The only public way into the registry.
#[macro_export]
macro_rules! register {
    ($command:ty) => {
        $crate::inventory::submit! {
            $crate::command::Registration::of::<$command>(env!("CARGO_PKG_NAME"))
        }
    };
}

/// Every registration linked into this binary, in no particular order.
/// The runner sorts them and detects duplicates.
pub fn registrations() -> impl Iterator<Item = &'static Registration> {
    inventory::iter::<Registration>.into_iter()
}

/// The stop request of a run: set by the first Ctrl-C or SIGTERM, or by a
/// drain asking the command to stop. Poll it, or block on it.
#[derive(Debug, Clone, Default)]
pub struct StopToken {
    inner: Arc<StopInner>,
}

#[derive(Debug, Default)]
struct StopInner {
    requested: AtomicBool,
    lock: Mutex<Vec<std::task::Waker>>,
    wake: Condvar,
    /// For a token a signal handler raises: what starts the relay that
    /// wakes the waiters, run once, before anyone first blocks or awaits.
    relay: Option<fn(&StopToken)>,
    relay_started: AtomicBool,
}

impl StopToken {
    /// A token nobody has set yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A token a signal handler sets with [`raise`](Self::raise), which
    /// wakes nobody. `relay` is called once, by the first caller that is
    /// about to block on the token or await it (never by a handler): it
    /// must start whatever calls [`request`](Self::request) once the
    /// handler has raised the token — and call it at once if the token was
    /// raised already. A process that never waits so never starts it: the
    /// runner's `offline status` spawns no thread.
    pub fn relayed(relay: fn(&StopToken)) -> Self {
        StopToken {
            inner: Arc::new(StopInner {
                relay: Some(relay),
                ..StopInner::default()
            }),
        }
    }

    /// Whether a stop was requested.
    pub fn requested(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
    }

    /// Sets the request without waking anyone: one atomic store, safe in a
    /// signal handler, where [`request`](Self::request) (which takes a
    /// lock) is not. Pollers see it at once; blocked and async waiters are
    /// woken by the relay of a [`relayed`](Self::relayed) token.
    pub fn raise(&self) {
        self.inner.requested.store(true, Ordering::SeqCst);
    }

    /// Starts the relay of a [`relayed`](Self::relayed) token, once.
    fn before_waiting(&self) {
        if let Some(relay) = self.inner.relay
            && !self.inner.relay_started.swap(true, Ordering::SeqCst)
        {
            relay(self);
        }
    }

    /// Requests a stop and wakes every waiter, blocking or async.
    pub fn request(&self) {
        self.inner.requested.store(true, Ordering::SeqCst);
        let mut wakers = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.inner.wake.notify_all();
        for w in wakers.drain(..) {
            w.wake();
        }
    }

    /// Blocks until a stop is requested.
    pub fn wait(&self) {
        while !self.wait_timeout(Duration::from_secs(3600)) {}
    }

    /// A future that completes when a stop is requested, for async code.
    pub fn stopped(&self) -> Stopped {
        Stopped {
            token: self.clone(),
        }
    }

    /// Blocks until a stop is requested or `timeout` passes; returns whether
    /// one was requested.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        if self.requested() {
            return true;
        }
        self.before_waiting();
        let guard = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        let _unused = self
            .inner
            .wake
            .wait_timeout_while(guard, timeout, |_| !self.requested())
            .unwrap_or_else(|e| e.into_inner());
        self.requested()
    }
}

/// The future of [`StopToken::stopped`].
#[derive(Debug)]
pub struct Stopped {
    token: StopToken,
}

impl std::future::Future for Stopped {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.token.requested() {
            return std::task::Poll::Ready(());
        }
        self.token.before_waiting();
        let mut wakers = self
            .token
            .inner
            .lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Checked again under the lock `request` takes: no wake-up is lost.
        if self.token.requested() {
            return std::task::Poll::Ready(());
        }
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        std::task::Poll::Pending
    }
}

/// An error that ends a run with a given exit code and prints nothing more
/// (`offline status --exit-code` returns 3 or 4 this way). Whatever the
/// command wanted to say, it wrote to [`Context::err`] already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit(pub u8);

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit with code {}", self.0)
    }
}

impl std::error::Error for Exit {}

/// Options of a nested run through [`Context::call`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOptions {
    /// Run inside the maintenance window on the window holder's behalf
    /// (`offline run`): admitted while OFFLINE whatever its policy.
    pub in_window: bool,
}

/// What a command calls to run another command: implemented by the runner
/// (`manage`), so a command in any crate can run any other without an
/// arrow pointing back up.
pub trait Runner {
    /// Runs `argv` (a command name and its arguments) as the runner would,
    /// joining the caller's task if it has one, and returns its exit code.
    fn call(
        &self,
        ctx: &mut Context<'_>,
        argv: &[String],
        options: CallOptions,
    ) -> anyhow::Result<u8>;

    /// Checks, without running anything, that `argv` names a command the
    /// runner can run and that its arguments parse; the error says what is
    /// wrong (and suggests a name for a typo). `offline run` asks before it
    /// takes the site offline.
    fn check(&self, argv: &[String]) -> Result<(), String>;
}

/// Everything a running command may use. Commands write through
/// [`out`](Self::out) and [`err`](Self::err), never `println!`, so their
/// output can be captured and tested.
pub struct Context<'a> {
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
    terminal: bool,
    verbosity: i8,
    config: &'a Config,
    backend: &'a backend::BackendSlot,
    task: Option<TaskRecord>,
    stop: StopToken,
    runner: &'a dyn Runner,
}

/// The parts a runner assembles a [`Context`] from.
pub struct ContextParts<'a> {
    /// Standard output.
    pub out: &'a mut dyn Write,
    /// Standard error.
    pub err: &'a mut dyn Write,
    /// Whether standard output is a terminal (progress is redrawn in place).
    pub terminal: bool,
    /// `-v` count minus `-q` count.
    pub verbosity: i8,
    /// The configuration in force.
    pub config: &'a Config,
    /// The backend, opened on first use.
    pub backend: &'a backend::BackendSlot,
    /// The task this run belongs to, if tracked.
    pub task: Option<TaskRecord>,
    /// The stop request.
    pub stop: StopToken,
    /// The runner, for nested calls.
    pub runner: &'a dyn Runner,
}

impl<'a> Context<'a> {
    /// A context from its parts (for runners).
    pub fn new(parts: ContextParts<'a>) -> Self {
        Context {
            out: parts.out,
            err: parts.err,
            terminal: parts.terminal,
            verbosity: parts.verbosity,
            config: parts.config,
            backend: parts.backend,
            task: parts.task,
            stop: parts.stop,
            runner: parts.runner,
        }
    }

    /// Standard output.
    pub fn out(&mut self) -> &mut dyn Write {
        self.out
    }

    /// Standard error.
    pub fn err(&mut self) -> &mut dyn Write {
        self.err
    }

    /// Standard output and standard error at once.
    pub fn streams(&mut self) -> (&mut dyn Write, &mut dyn Write) {
        (&mut *self.out, &mut *self.err)
    }

    /// Whether standard output is a terminal: progress may be redrawn in
    /// place; otherwise (a deploy log) it is written as plain lines.
    pub fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// `-v` count minus `-q` count: 0 normal, above chattier, below quieter.
    pub fn verbosity(&self) -> i8 {
        self.verbosity
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        self.config
    }

    /// The backend holding mode, tasks and sessions, opened on first use.
    pub fn backend(&self) -> crate::Result<Arc<dyn Backend>> {
        backend::open_once(self.backend, self.config)
    }

    /// This run's task record; for a run that joined a task, its own
    /// record, whose [`joined`](TaskRecord::joined) names that task. `None`
    /// for an untracked command.
    pub fn task(&self) -> Option<&TaskRecord> {
        self.task.as_ref()
    }

    /// Whether a stop was requested: the first Ctrl-C or SIGTERM, or a
    /// drain asking this command to stop. A command that stops cleanly when
    /// asked by a drain exits 0.
    pub fn stop_requested(&self) -> bool {
        self.stop.requested()
    }

    /// The stop request itself, to block on or hand to another thread.
    pub fn stop_token(&self) -> &StopToken {
        &self.stop
    }

    /// Runs another command through the runner — `["migrate", "--plan"]` —
    /// joining this run's task, and returns its exit code.
    pub fn call<S: AsRef<str>>(&mut self, argv: &[S], options: CallOptions) -> anyhow::Result<u8> {
        let argv: Vec<String> = argv.iter().map(|s| s.as_ref().to_owned()).collect();
        let runner = self.runner;
        runner.call(self, &argv, options)
    }

    /// Checks that `argv` would run (the command exists, its arguments
    /// parse) without running it.
    pub fn check_call<S: AsRef<str>>(&self, argv: &[S]) -> Result<(), String> {
        let argv: Vec<String> = argv.iter().map(|s| s.as_ref().to_owned()).collect();
        self.runner.check(&argv)
    }

    /// A context for a nested run: the same streams, configuration, backend,
    /// stop request and runner, with the nested run's task.
    pub fn nested(&mut self, task: Option<TaskRecord>) -> Context<'_> {
        Context {
            out: &mut *self.out,
            err: &mut *self.err,
            terminal: self.terminal,
            verbosity: self.verbosity,
            config: self.config,
            backend: self.backend,
            task,
            stop: self.stop.clone(),
            runner: self.runner,
        }
    }
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("verbosity", &self.verbosity)
            .field("task", &self.task)
            .field("stop_requested", &self.stop.requested())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    #[test]
    fn a_stop_wakes_an_async_waiter() {
        use std::sync::Arc as StdArc;
        use std::task::{Wake, Waker};
        struct Flag(AtomicBool);
        impl Wake for Flag {
            fn wake(self: StdArc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = StdArc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(StdArc::clone(&flag));
        let mut cx = std::task::Context::from_waker(&waker);
        let stop = StopToken::new();
        let mut fut = Box::pin(stop.stopped());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        stop.request();
        assert!(flag.0.load(Ordering::SeqCst), "woken");
        assert!(fut.as_mut().poll(&mut cx).is_ready());
    }

    use std::sync::atomic::AtomicUsize;

    /// A relay that counts its starts in `count` and wakes the waiters at
    /// once if the token was raised (as the runner's does after a signal).
    fn relay_counting(count: &AtomicUsize, token: &StopToken) {
        count.fetch_add(1, Ordering::SeqCst);
        if token.requested() {
            token.request();
        }
    }

    #[test]
    fn a_relayed_token_starts_its_relay_once_at_the_first_wait_and_never_for_pollers() {
        static STARTS: AtomicUsize = AtomicUsize::new(0);
        let stop = StopToken::relayed(|t| relay_counting(&STARTS, t));
        assert!(!stop.requested());
        assert_eq!(STARTS.load(Ordering::SeqCst), 0, "polling starts nothing");
        assert!(!stop.wait_timeout(Duration::from_millis(1)));
        assert!(!stop.clone().wait_timeout(Duration::from_millis(1)));
        assert_eq!(STARTS.load(Ordering::SeqCst), 1, "started once");
        // Raised as a handler does: pollers see it at once, and a waiter
        // returns without waiting.
        stop.raise();
        assert!(stop.requested());
        assert!(stop.wait_timeout(Duration::from_secs(60)));
    }

    #[test]
    fn a_raise_before_the_first_wait_is_seen_by_the_waiter_without_a_relay_start() {
        static STARTS: AtomicUsize = AtomicUsize::new(0);
        let stop = StopToken::relayed(|t| relay_counting(&STARTS, t));
        stop.raise();
        assert!(stop.wait_timeout(Duration::from_secs(60)));
        assert_eq!(STARTS.load(Ordering::SeqCst), 0, "nothing to relay");
    }

    #[test]
    fn a_stop_wakes_a_blocked_waiter() {
        let stop = StopToken::new();
        assert!(!stop.wait_timeout(Duration::from_millis(1)));
        let other = stop.clone();
        let h = std::thread::spawn(move || other.wait_timeout(Duration::from_secs(60)));
        stop.request();
        assert!(h.join().unwrap());
        assert!(stop.requested());
    }
}
