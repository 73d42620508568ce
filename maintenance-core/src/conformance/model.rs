//! A model-based test of the mode state machine: random sequences of
//! operations (activate, force, a waiter's timeout or death, deactivate,
//! read-only, a schedule, task starts and ends, session touches, logouts
//! and expiry) run on each backend through its public API and on a small
//! reference model written from the README and DESIGN.md, and compared
//! after every step: the mode and its tier, what `status` counts, which
//! task starts are admitted and which refusal refuses the others, and
//! whether an activation goes OFFLINE or waits.
//!
//! The waiting processes are this test itself, holding waiters'
//! registrations ([`WaiterLease`]) as the conformance suite's `pending`
//! does: after every step each waiter takes the look `offline on` takes
//! (the settle time aside, which this test does not wait out), a timeout
//! leaves the wait, and a killed waiter is a lease dropped without
//! leaving. `PROPTEST_CASES` sets how many sequences each backend runs
//! (256 by default); shrunk failures are kept in
//! `proptest-regressions/conformance/model.txt`.

// A test suite: a panic is how it reports a failed behaviour.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::{FreshState, change, never, window};
use crate::backend::{
    Backend, Completion, PendingStart, ReadOnlyStart, ScheduleLease, WaiterLease,
};
use crate::clock::ManualClock;
use crate::error::{Error, Refusal};
use crate::mode::Mode;
use crate::policy::{Access, Maintenance, Policy};
use crate::session::SessionKey;
use crate::task::{CommandTask, TaskOptions};
use crate::transition::{self, Activation, Outcome};

/// What a task's command declares, as far as the mode cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The default: may write, refused during maintenance.
    Writer,
    /// `access = read-only`: runs on through READONLY.
    Reader,
    /// `maintenance = allowed`: runs inside any window.
    Allowed,
}

/// One step of a sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `offline on`: this test becomes a waiter (or the site is OFFLINE
    /// already, or a read-only drain refuses it).
    Activate,
    /// `offline on --timeout 0`, through [`transition::activate`]: OFFLINE
    /// at once when nothing holds it off, else timed out.
    ActivateNow,
    /// `offline on --force`.
    Force,
    /// The oldest waiter's timeout: it leaves the wait.
    Timeout,
    /// The newest waiter's process dies: its lease goes without leaving.
    WaiterKilled,
    /// `offline off`.
    Deactivate,
    /// `offline on --read-only`: this test becomes a read-only waiter.
    ReadOnly,
    /// `offline on --read-only --force`.
    ReadOnlyForce,
    /// `offline on --at` an hour ahead: its process holds the schedule.
    Schedule,
    /// The schedule's process dies.
    ScheduleKilled,
    /// A tracked command `t<name>` starts (single instance).
    TaskStart(Kind, u8),
    /// The live task at this index (modulo how many) ends.
    TaskEnd(u8),
    /// Web session `s<id>` is active.
    Touch(u8),
    /// Web session `s<id>` logs out.
    Logout(u8),
    /// Time passes: six tenths of the session timeout.
    Expire,
}

/// The mode as the model keeps it (always the mode in force: a drain with
/// no waiter left has lapsed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum M {
    Online,
    Pending { from_read_only: bool },
    Offline,
    ReadOnlyPending,
    ReadOnly,
}

impl M {
    fn mode(self) -> Mode {
        match self {
            M::Online => Mode::Online,
            M::Pending { .. } => Mode::Pending,
            M::Offline => Mode::Offline,
            M::ReadOnlyPending => Mode::ReadOnlyPending,
            M::ReadOnly => Mode::ReadOnly,
        }
    }

    /// README "read-only": writes stay refused through a PENDING begun
    /// from READONLY.
    fn writes_refused(self) -> bool {
        matches!(
            self,
            M::ReadOnlyPending
                | M::ReadOnly
                | M::Pending {
                    from_read_only: true
                }
        )
    }

    /// I5: a drain whose last waiter is gone goes back where it came from.
    fn lapsed(self) -> M {
        match self {
            M::Pending {
                from_read_only: true,
            } => M::ReadOnly,
            M::Pending { .. } | M::ReadOnlyPending => M::Online,
            other => other,
        }
    }

    fn draining(self) -> bool {
        matches!(self, M::Pending { .. } | M::ReadOnlyPending)
    }
}

/// How a step was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// Maintenance under way for this command's policy.
    Maintenance,
    /// A single-instance command of that name runs.
    AlreadyRunning,
    /// A drain toward the other mode is under way.
    DrainUnderWay,
    /// A window is scheduled already.
    Scheduled,
}

fn refusal(e: &Error) -> Refused {
    match e {
        Error::Refused(Refusal::Maintenance { .. }) => Refused::Maintenance,
        Error::Refused(Refusal::AlreadyRunning { .. }) => Refused::AlreadyRunning,
        Error::Refused(Refusal::DrainUnderWay { .. }) => Refused::DrainUnderWay,
        Error::Refused(Refusal::Scheduled { .. }) => Refused::Scheduled,
        other => panic!("not a refusal the model knows: {other}"),
    }
}

#[derive(Debug, Clone)]
struct ModelTask {
    name: String,
    kind: Kind,
    started_in: M,
}

impl ModelTask {
    /// I1: started while the site was open to users (ONLINE, or the
    /// read-only tier): it holds off OFFLINE.
    fn holds_off_offline(&self) -> bool {
        matches!(
            self.started_in,
            M::Online | M::ReadOnlyPending | M::ReadOnly
        )
    }

    /// README "read-only": a command that may write, started ONLINE.
    fn holds_off_read_only(&self) -> bool {
        self.started_in == M::Online && self.kind != Kind::Reader
    }
}

/// The reference model.
#[derive(Debug)]
struct Model {
    mode: M,
    waiters: usize,
    tasks: Vec<ModelTask>,
    /// Session id → the model time of its last touch, in seconds.
    sessions: BTreeMap<u8, u64>,
    now: u64,
    timeout: u64,
    schedule: bool,
}

impl Model {
    fn live_sessions(&self) -> usize {
        self.sessions
            .values()
            .filter(|&&t| self.now - t < self.timeout)
            .count()
    }

    /// DESIGN "Policy" and README "read-only": who may start now.
    fn admit(&self, kind: Kind, name: &str) -> Result<(), Refused> {
        let refused = match self.mode {
            M::Online => false,
            M::Pending { .. } | M::Offline => kind != Kind::Allowed,
            M::ReadOnlyPending | M::ReadOnly => kind == Kind::Writer,
        };
        // The instance is taken first (a second run waits for it up to
        // the lock timeout), then the mode is judged under the gate.
        if self.tasks.iter().any(|t| t.name == name) {
            return Err(Refused::AlreadyRunning);
        }
        if refused {
            return Err(Refused::Maintenance);
        }
        Ok(())
    }

    /// Whether nothing holds off the drain under way any longer.
    fn drained(&self) -> bool {
        match self.mode {
            M::Pending { .. } => {
                self.live_sessions() == 0 && !self.tasks.iter().any(ModelTask::holds_off_offline)
            }
            M::ReadOnlyPending => !self.tasks.iter().any(ModelTask::holds_off_read_only),
            _ => false,
        }
    }

    /// The last waiter left: the drain lapses.
    fn waiter_gone(&mut self) {
        self.waiters -= 1;
        if self.waiters == 0 {
            self.mode = self.mode.lapsed();
        }
    }
}

/// The backend under test and what this test holds in it.
struct Real {
    b: Arc<dyn Backend>,
    clock: Arc<ManualClock>,
    /// Oldest first.
    waiters: Vec<Box<dyn WaiterLease>>,
    tasks: Vec<CommandTask>,
    schedule: Option<Box<dyn ScheduleLease>>,
}

impl Real {
    /// Every waiter leaves (the wait was cancelled, or ended elsewhere).
    fn release_waiters(&mut self) {
        for w in self.waiters.drain(..) {
            self.b.leave_pending(w, &change()).unwrap();
        }
    }
}

fn policy(kind: Kind) -> Policy {
    match kind {
        Kind::Writer => Policy::DEFAULT,
        Kind::Reader => Policy::DEFAULT.access(Access::ReadOnly),
        Kind::Allowed => Policy::DEFAULT.maintenance(Maintenance::Allowed),
    }
}

fn session(id: u8) -> SessionKey {
    SessionKey::of(format!("s{id}").as_bytes())
}

/// One step on both sides, and the waiters' looks after it.
fn step(real: &mut Real, model: &mut Model, op: &Op) {
    let b = Arc::clone(&real.b);
    match op {
        Op::Activate => {
            let got = b.begin_pending(&change());
            let want = match model.mode {
                M::Online | M::ReadOnly => Ok(false),
                M::Pending { .. } => Ok(true),
                M::Offline => Err(None),
                M::ReadOnlyPending => Err(Some(Refused::DrainUnderWay)),
            };
            match (got, want) {
                (Ok(PendingStart::Waiting { waiter, joined, .. }), Ok(joins)) => {
                    assert_eq!(joined, joins, "joined a drain under way");
                    real.waiters.push(waiter);
                    if !joins {
                        model.mode = M::Pending {
                            from_read_only: model.mode == M::ReadOnly,
                        };
                    }
                    model.waiters += 1;
                }
                (Ok(PendingStart::AlreadyOffline(r)), Err(None)) => {
                    assert_eq!(r.mode, Mode::Offline)
                }
                (Err(e), Err(Some(r))) => assert_eq!(refusal(&e), r),
                (got, want) => panic!("activate: got {got:?}, the model says {want:?}"),
            }
        }
        Op::ActivateNow => {
            let a = Activation {
                change: change(),
                timeout: Duration::ZERO,
                grace: None,
                settle: Duration::ZERO,
            };
            let got = transition::activate(b.as_ref(), &a, &never, &mut |_| {});
            match model.mode {
                M::ReadOnlyPending => {
                    assert_eq!(refusal(&got.unwrap_err()), Refused::DrainUnderWay)
                }
                M::Offline => {
                    let out = got.unwrap();
                    assert!(
                        matches!(out, Outcome::Offline { already: true, .. }),
                        "{out:?}"
                    );
                }
                from => {
                    if !from.draining() {
                        model.mode = M::Pending {
                            from_read_only: from == M::ReadOnly,
                        };
                    }
                    model.waiters += 1;
                    let out = got.unwrap();
                    if model.drained() {
                        assert!(matches!(out, Outcome::Offline { .. }), "{out:?}");
                        model.mode = M::Offline;
                        model.waiters = 0;
                        real.waiters.clear();
                    } else {
                        assert!(matches!(out, Outcome::TimedOut { .. }), "{out:?}");
                        model.waiter_gone();
                    }
                }
            }
        }
        Op::Force => {
            let (r, _) = transition::force(b.as_ref(), &change()).unwrap();
            assert_eq!(r.mode, Mode::Offline);
            // Every waiter sees OFFLINE and is done.
            real.waiters.clear();
            model.waiters = 0;
            model.mode = M::Offline;
        }
        Op::Timeout => {
            if !real.waiters.is_empty() {
                let w = real.waiters.remove(0);
                let after = b.leave_pending(w, &change()).unwrap();
                model.waiter_gone();
                assert_eq!(after.mode, model.mode.mode(), "the record after leaving");
            }
        }
        Op::WaiterKilled => {
            if real.waiters.pop().is_some() {
                model.waiter_gone();
            }
        }
        Op::Deactivate => {
            let r = transition::deactivate(b.as_ref(), &change(), false).unwrap();
            assert_eq!(r.mode, Mode::Online);
            real.release_waiters();
            // The schedule's process learns it was cancelled, and exits.
            real.schedule = None;
            model.waiters = 0;
            model.mode = M::Online;
            model.schedule = false;
        }
        Op::ReadOnly => {
            let got = b.begin_read_only(&change());
            let want = match model.mode {
                M::Online => Ok(false),
                M::ReadOnlyPending => Ok(true),
                M::ReadOnly | M::Offline => Err(None),
                M::Pending { .. } => Err(Some(Refused::DrainUnderWay)),
            };
            match (got, want) {
                (Ok(ReadOnlyStart::Waiting { waiter, joined, .. }), Ok(joins)) => {
                    assert_eq!(joined, joins, "joined a drain under way");
                    real.waiters.push(waiter);
                    model.mode = M::ReadOnlyPending;
                    model.waiters += 1;
                }
                (Ok(ReadOnlyStart::Already(r)), Err(None)) => {
                    assert_eq!(r.mode, model.mode.mode())
                }
                (Err(e), Err(Some(r))) => assert_eq!(refusal(&e), r),
                (got, want) => panic!("read-only: got {got:?}, the model says {want:?}"),
            }
        }
        Op::ReadOnlyForce => {
            let (r, _) = transition::force_read_only(b.as_ref(), &change()).unwrap();
            if model.mode != M::Offline {
                model.mode = M::ReadOnly;
            }
            assert_eq!(r.mode, model.mode.mode());
            // A read-only waiter sees its target reached; an offline one
            // sees its drain ended by another: both leave.
            real.release_waiters();
            model.waiters = 0;
        }
        Op::Schedule => {
            let got = b.begin_schedule(&window(&b, Duration::from_secs(3600), "later"));
            if model.schedule {
                assert_eq!(refusal(&got.unwrap_err()), Refused::Scheduled);
            } else {
                real.schedule = Some(got.unwrap());
                model.schedule = true;
            }
        }
        Op::ScheduleKilled => {
            real.schedule = None;
            model.schedule = false;
        }
        Op::TaskStart(kind, n) => {
            let name = format!("t{n}");
            let got = CommandTask::start(
                &name,
                TaskOptions::new(Arc::clone(&b))
                    .policy(policy(*kind))
                    .lock_timeout(Duration::ZERO),
            );
            match (got, model.admit(*kind, &name)) {
                (Ok(t), Ok(())) => {
                    assert_eq!(t.record().started_in, model.mode.mode(), "started in");
                    real.tasks.push(t);
                    model.tasks.push(ModelTask {
                        name,
                        kind: *kind,
                        started_in: model.mode,
                    });
                }
                (Err(e), Err(r)) => assert_eq!(refusal(&e), r, "{e}"),
                (got, want) => panic!(
                    "start `{name}` ({kind:?}) in {:?}: got {:?}, the model says {want:?}",
                    model.mode,
                    got.map(|t| t.record().clone())
                ),
            }
        }
        Op::TaskEnd(i) => {
            if !real.tasks.is_empty() {
                let i = usize::from(*i) % real.tasks.len();
                drop(real.tasks.remove(i));
                model.tasks.remove(i);
            }
        }
        Op::Touch(id) => {
            b.touch_session(&session(*id)).unwrap();
            model.sessions.insert(*id, model.now);
        }
        Op::Logout(id) => {
            b.end_session(&session(*id)).unwrap();
            model.sessions.remove(id);
        }
        Op::Expire => {
            let by = model.timeout * 6 / 10;
            real.clock.advance(Duration::from_secs(by));
            model.now += by;
        }
    }
    look(real, model);
}

/// Each waiter's look, as `offline on` takes it: when nothing holds off
/// its drain, the first completes it and every waiter is done.
fn look(real: &mut Real, model: &mut Model) {
    if model.waiters == 0 || !model.drained() {
        return;
    }
    let w = real.waiters.first().expect("a waiter");
    let done = match model.mode {
        M::Pending { .. } => {
            model.mode = M::Offline;
            real.b.complete_offline(w.as_ref(), None).unwrap()
        }
        M::ReadOnlyPending => {
            model.mode = M::ReadOnly;
            real.b.complete_read_only(w.as_ref(), None).unwrap()
        }
        other => panic!("waiters while {other:?}"),
    };
    match (&done, model.mode) {
        (Completion::Offline(r), M::Offline) | (Completion::ReadOnly(r), M::ReadOnly) => {
            assert_eq!(r.mode, model.mode.mode());
        }
        _ => panic!("completing: got {done:?}, the model says {:?}", model.mode),
    }
    real.waiters.clear();
    model.waiters = 0;
}

/// What the backend reports, against the model.
fn compare(real: &Real, model: &Model, after: &Op) {
    let b = real.b.as_ref();
    let status = transition::status(b).unwrap();
    let view = &status.view;
    assert_eq!(view.mode, model.mode.mode(), "the mode after {after:?}");
    assert_eq!(
        view.writes_refused(),
        model.mode.writes_refused(),
        "writes refused after {after:?}"
    );
    if let M::Pending { from_read_only } = model.mode {
        assert_eq!(
            view.record.from == Some(Mode::ReadOnly),
            from_read_only,
            "the PENDING's tier after {after:?}"
        );
    }
    let mut live: Vec<(String, Mode)> = status
        .tasks
        .iter()
        .map(|t| (t.name.clone(), t.started_in))
        .collect();
    live.sort_by_key(|(n, m)| (n.clone(), m.as_str()));
    let mut want: Vec<(String, Mode)> = model
        .tasks
        .iter()
        .map(|t| (t.name.clone(), t.started_in.mode()))
        .collect();
    want.sort_by_key(|(n, m)| (n.clone(), m.as_str()));
    assert_eq!(live, want, "the live tasks after {after:?}");
    assert_eq!(
        status.sessions.count,
        model.live_sessions(),
        "status's session count after {after:?}"
    );
    assert_eq!(
        b.sessions().unwrap().len(),
        model.live_sessions(),
        "the sessions listed after {after:?}"
    );
    assert_eq!(
        b.schedule().unwrap().is_some(),
        model.schedule,
        "the schedule after {after:?}"
    );
}

/// Runs `ops` on a fresh site of `site` and on the model, comparing after
/// every step.
pub fn run(site: &FreshState, ops: &[Op]) {
    let clock = ManualClock::starting_now();
    let b = site.open_with(clock.clone());
    let mut model = Model {
        mode: M::Online,
        waiters: 0,
        tasks: Vec::new(),
        sessions: BTreeMap::new(),
        now: 0,
        timeout: b.session_timeout().as_secs(),
        schedule: false,
    };
    let mut real = Real {
        b,
        clock,
        waiters: Vec::new(),
        tasks: Vec::new(),
        schedule: None,
    };
    for op in ops {
        step(&mut real, &mut model, op);
        compare(&real, &model, op);
    }
}

fn op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![Just(Kind::Writer), Just(Kind::Reader), Just(Kind::Allowed)];
    prop_oneof![
        3 => Just(Op::Activate),
        1 => Just(Op::ActivateNow),
        1 => Just(Op::Force),
        1 => Just(Op::Timeout),
        1 => Just(Op::WaiterKilled),
        1 => Just(Op::Deactivate),
        2 => Just(Op::ReadOnly),
        1 => Just(Op::ReadOnlyForce),
        1 => Just(Op::Schedule),
        1 => Just(Op::ScheduleKilled),
        4 => (kind, 0u8..3).prop_map(|(k, n)| Op::TaskStart(k, n)),
        3 => any::<u8>().prop_map(Op::TaskEnd),
        3 => (0u8..4).prop_map(Op::Touch),
        1 => (0u8..4).prop_map(Op::Logout),
        2 => Just(Op::Expire),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..16)
}

/// How many sequences each backend runs: `$PROPTEST_CASES`, 256 by
/// default.
fn cases() -> u32 {
    ProptestConfig::default().cases
}

/// A quarter of [`cases`], at least one: PostgreSQL runs its sequences in
/// four tests side by side, as each step that takes a lease opens a
/// connection of its own (tens of milliseconds on a loaded machine).
#[cfg(feature = "postgres")]
fn quarter() -> ProptestConfig {
    ProptestConfig::with_cases(cases().div_ceil(4).max(1))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn the_file_backend_follows_the_model(ops in ops()) {
        run(&super::file_state(), &ops);
    }
}

/// The PostgreSQL backend's sequences, in four tests (see [`quarter`]).
#[cfg(feature = "postgres")]
macro_rules! postgres_quarters {
    ($($name:ident),*) => {
        proptest! {
            #![proptest_config(quarter())]
            $(
                #[test]
                fn $name(ops in ops()) {
                    if super::postgres_available() {
                        run(&super::postgres_state(), &ops);
                    }
                }
            )*
        }
    };
}

#[cfg(feature = "postgres")]
postgres_quarters!(
    the_postgres_backend_follows_the_model_1,
    the_postgres_backend_follows_the_model_2,
    the_postgres_backend_follows_the_model_3,
    the_postgres_backend_follows_the_model_4
);

/// Sequences the model found failing, shrunk, one test each.
mod regressions {
    use super::{Op, run};

    /// Both backends: `offline on --read-only` while a PENDING begun from
    /// READONLY had lapsed (its waiter killed) returned, and on a message
    /// wrote back, the lapsed PENDING record instead of the READONLY in
    /// force.
    const LAPSED_PENDING_FROM_READ_ONLY: &[Op] = &[
        Op::Touch(0),
        Op::ReadOnly,
        Op::Activate,
        Op::WaiterKilled,
        Op::ReadOnly,
    ];

    #[test]
    fn read_only_after_a_lapsed_pending_from_read_only_finds_read_only_file() {
        run(
            &crate::conformance::file_state(),
            LAPSED_PENDING_FROM_READ_ONLY,
        );
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn read_only_after_a_lapsed_pending_from_read_only_finds_read_only_postgres() {
        if crate::conformance::postgres_available() {
            run(
                &crate::conformance::postgres_state(),
                LAPSED_PENDING_FROM_READ_ONLY,
            );
        }
    }
}
