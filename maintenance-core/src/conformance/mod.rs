//! The backend conformance suite: every behaviour a [`Backend`] promises,
//! written once and run against each backend. A new backend passes it before
//! it is used:
//!
//! ```ignore
//! maintenance_core::backend_conformance!(my_backend_state);
//! ```
//!
//! where `my_backend_state()` returns a [`FreshState`]: a fresh, empty state
//! that can be opened any number of times, as separate processes would open
//! it.
//!
//! The cases live by area, one file each under `conformance/`: `tasks`,
//! `joins`, `modes`, `sessions`, `activation`, `window`, `schedules`,
//! `readonly` and `history`. The list in [`backend_conformance!`] is the
//! only list of them, and forgetting a case there fails the build: the
//! area modules are private and deny dead code, and only the listed cases
//! are re-exported here (and so used), so an unlisted one is dead code.
//!
//! [`backend_conformance!`]: crate::backend_conformance

// A test suite: a panic is how it reports a failed behaviour.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::any::Any;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::backend::{Backend, ModeChange, PendingStart, ScheduleLease, WaiterLease};
use crate::clock::{ManualClock, SharedClock, SystemClock, Timestamp};
use crate::config::Config;
use crate::error::Error;
use crate::policy::Policy;
use crate::schedule::ScheduleRecord;
use crate::session::SessionKey;
use crate::task::{CommandTask, TaskOptions};
use crate::transition::{self, Activation, Outcome};

#[deny(dead_code)]
mod activation;
#[deny(dead_code)]
mod history;
#[deny(dead_code)]
mod joins;
#[cfg(test)]
mod model;
#[deny(dead_code)]
mod modes;
#[deny(dead_code)]
mod readonly;
mod schedules;
#[deny(dead_code)]
mod sessions;
#[deny(dead_code)]
mod tasks;
#[deny(dead_code)]
mod window;

// Every listed case, as `conformance::<case>`: what the tests call.
crate::backend_conformance!(@cases [@export]);

/// A fresh, empty state that can be opened many times.
pub struct FreshState {
    open: Box<dyn Fn(SharedClock) -> Arc<dyn Backend>>,
    marker: Option<PathBuf>,
    read_only_marker: Option<PathBuf>,
    small_history: Option<Box<dyn Fn() -> Arc<dyn Backend>>>,
    clock_tolerance: Duration,
    _keep: Box<dyn Any>,
}

impl FreshState {
    /// A site opened by `open`, keeping `keep` (a temporary directory, a
    /// database) alive as long as the site.
    pub fn new(open: impl Fn(SharedClock) -> Arc<dyn Backend> + 'static, keep: impl Any) -> Self {
        FreshState {
            open: Box::new(open),
            marker: None,
            read_only_marker: None,
            small_history: None,
            clock_tolerance: Duration::ZERO,
            _keep: Box::new(keep),
        }
    }

    /// The same site, which `open` also opens with a history bounded to a
    /// few dozen entries (the file backend: a `max_size` of a few KiB):
    /// the bound's case uses it.
    pub fn with_small_history(mut self, open: impl Fn() -> Arc<dyn Backend> + 'static) -> Self {
        self.small_history = Some(Box::new(open));
        self
    }

    /// The site opened with a small history bound; `None` for a backend
    /// that gave none.
    pub fn open_with_small_history(&self) -> Option<Arc<dyn Backend>> {
        self.small_history.as_ref().map(|open| open())
    }

    /// The same site, whose backend keeps the web-server marker at `path`
    /// on this host: the marker cases check it.
    pub fn with_marker(mut self, path: impl Into<PathBuf>) -> Self {
        self.marker = Some(path.into());
        self
    }

    /// The same site, whose backend keeps the READONLY web-server marker at
    /// `path` on this host: the read-only marker case checks it.
    pub fn with_read_only_marker(mut self, path: impl Into<PathBuf>) -> Self {
        self.read_only_marker = Some(path.into());
        self
    }

    /// Whether the web-server marker exists; `None` for a site without one.
    pub fn marker_exists(&self) -> Option<bool> {
        self.marker
            .as_ref()
            .map(|p| std::fs::symlink_metadata(p).is_ok())
    }

    /// Whether the READONLY web-server marker exists; `None` for a site
    /// without one.
    pub fn read_only_marker_exists(&self) -> Option<bool> {
        self.read_only_marker
            .as_ref()
            .map(|p| std::fs::symlink_metadata(p).is_ok())
    }

    /// The same site, whose times come from a server's clock moved by the
    /// backend clock's offset (PostgreSQL's `now()`): a stored time is then
    /// the clock's time within `tolerance` (the round trip), not exactly.
    pub fn with_server_clock(mut self, tolerance: Duration) -> Self {
        self.clock_tolerance = tolerance;
        self
    }

    /// Asserts that `stored` is the time `clock` read when it was stored:
    /// exactly, or within the server clock's tolerance.
    #[track_caller]
    pub fn assert_time_is(&self, stored: SystemTime, clock: SystemTime) {
        let off = stored
            .duration_since(clock)
            .unwrap_or_else(|e| e.duration());
        assert!(
            off <= self.clock_tolerance,
            "stored {stored:?}, the clock said {clock:?} (off by {off:?})"
        );
    }

    /// Opens the state with the real clock, as a new process would.
    pub fn open(&self) -> Arc<dyn Backend> {
        (self.open)(SystemClock::shared())
    }

    /// Opens the state with a given clock.
    pub fn open_with(&self, clock: SharedClock) -> Arc<dyn Backend> {
        (self.open)(clock)
    }
}

/// A file-backend site in a fresh temporary directory.
pub fn file_state() -> FreshState {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let state = dir.path().join("state");
    let marker = state.join(crate::backend::file::MARKER);
    let read_only_marker = state.join(crate::backend::file::READONLY_MARKER);
    let small = state.clone();
    FreshState::new(
        move |clock| {
            let config = Config::with_state_dir(&state);
            Arc::new(
                crate::backend::FileBackend::open(&config, clock).expect("open the file backend"),
            )
        },
        dir,
    )
    .with_marker(marker)
    .with_read_only_marker(read_only_marker)
    .with_small_history(move || {
        let mut config = Config::with_state_dir(&small);
        config.history_max_size = 4096;
        Arc::new(
            crate::backend::FileBackend::open(&config, SystemClock::shared())
                .expect("open the file backend"),
        )
    })
}

/// The variable naming the PostgreSQL server the tests use
/// (`postgres://…`); `scripts/test` starts a throwaway cluster and sets it.
pub const ENV_TEST_DATABASE_URL: &str = "MANAGE_TEST_DATABASE_URL";

/// Set by `scripts/test` (and implied by `CI`): PostgreSQL is expected, so
/// a missing [`ENV_TEST_DATABASE_URL`] fails the tests that need it.
pub const ENV_EXPECT_POSTGRES: &str = "MANAGE_TEST_EXPECT_POSTGRES";

/// Whether the PostgreSQL tests can run: true when
/// `$MANAGE_TEST_DATABASE_URL` is set. Without it they are skipped, saying
/// so — unless PostgreSQL is expected (`$CI`, or
/// `$MANAGE_TEST_EXPECT_POSTGRES` as `scripts/test` sets it): then the test
/// fails.
pub fn postgres_available() -> bool {
    if std::env::var_os(ENV_TEST_DATABASE_URL).is_some_and(|v| !v.is_empty()) {
        return true;
    }
    let expected = std::env::var_os("CI").is_some_and(|v| !v.is_empty())
        || std::env::var_os(ENV_EXPECT_POSTGRES).is_some_and(|v| !v.is_empty());
    assert!(
        !expected,
        "PostgreSQL is expected here (CI or ${ENV_EXPECT_POSTGRES}) but ${ENV_TEST_DATABASE_URL} \
         is not set: run the suite through scripts/test, which starts a cluster, or set it to \
         postgres://USER:PASSWORD@HOST:PORT/DATABASE"
    );
    eprintln!(
        "skipped: this test needs PostgreSQL; set ${ENV_TEST_DATABASE_URL} \
         (scripts/test starts a throwaway cluster and sets it)"
    );
    false
}

/// A PostgreSQL site of its own on the server `$MANAGE_TEST_DATABASE_URL`
/// names: a fresh site name in the schema `manage_test`, so cases run in
/// parallel without seeing each other.
#[cfg(feature = "postgres")]
pub fn postgres_state() -> FreshState {
    let config = postgres_test_config("manage_test");
    let mut small = config.clone();
    small.history_max_size = 4096;
    FreshState::new(
        move |clock| {
            Arc::new(
                crate::backend::postgres::PostgresBackend::open(&config, clock)
                    .expect("open the postgres backend"),
            )
        },
        (),
    )
    .with_server_clock(Duration::from_secs(5))
    .with_small_history(move || {
        Arc::new(
            crate::backend::postgres::PostgresBackend::open(&small, SystemClock::shared())
                .expect("open the postgres backend"),
        )
    })
}

/// The configuration of a fresh PostgreSQL site in `schema` on the test
/// server (see [`postgres_state`]).
#[cfg(feature = "postgres")]
pub fn postgres_test_config(schema: &str) -> Config {
    let url = std::env::var(ENV_TEST_DATABASE_URL).unwrap_or_default();
    let mut config = Config::with_state_dir("/nonexistent/postgres-backend");
    config.backend = crate::config::BackendKind::Postgres;
    config.postgres.url = Some(
        crate::database_url::DatabaseUrl::parse(&url)
            .unwrap_or_else(|e| panic!("${ENV_TEST_DATABASE_URL}: {e}")),
    );
    config.postgres.site = format!("test-{}-{}", std::process::id(), crate::random::hex::<8>());
    config.postgres.schema = schema.to_owned();
    config
}

/// Instantiates the conformance tests for the backend whose fresh state
/// `$state` makes: one `#[test]` per case, named as the case.
///
/// - `backend_conformance!(state)`: every case.
/// - `backend_conformance!(state; if ready; areas: modes, tasks)`: only the
///   cases of the areas listed (a backend being built lists what it has
///   done), each test returning early, having said why, when `ready()` is
///   false (no server to test against).
///
/// The lists of cases below, one per area of a backend, are the only ones:
/// each area module's cases are re-exported from them, and a case left out
/// is dead code, which the area modules deny, so it cannot be forgotten.
/// A case sits in the area it needs from a backend (the session cases of
/// `activation.rs` sit under `sessions`; a read-only window's schedule,
/// which needs both, under `read_only_schedules`).
#[macro_export]
macro_rules! backend_conformance {
    ($state:path) => {
        $crate::backend_conformance!(@cases [@tests $state]);
    };
    ($state:path; if $ready:path; areas: $($area:ident),+ $(,)?) => {
        $($crate::backend_conformance!(@area $area [@tests_if $ready, $state]);)+
    };
    // Every case, area by area; hands each area's list to the arm named
    // in brackets.
    (@cases [$($then:tt)*]) => {
        $crate::backend_conformance!(@area modes [$($then)*]);
        $crate::backend_conformance!(@area tasks [$($then)*]);
        $crate::backend_conformance!(@area joins [$($then)*]);
        $crate::backend_conformance!(@area sessions [$($then)*]);
        $crate::backend_conformance!(@area activation [$($then)*]);
        $crate::backend_conformance!(@area window [$($then)*]);
        $crate::backend_conformance!(@area schedules [$($then)*]);
        $crate::backend_conformance!(@area readonly [$($then)*]);
        $crate::backend_conformance!(@area read_only_schedules [$($then)*]);
        $crate::backend_conformance!(@area history [$($then)*]);
    };
    (@area modes [$($then:tt)*]) => {
        $crate::backend_conformance!($($then)*;
            modes::fresh_site_is_online,
            modes::pending_lapses_when_its_waiter_goes,
            modes::a_second_waiter_keeps_pending_and_the_last_one_out_turns_online,
            modes::completing_takes_the_site_offline,
            modes::going_online_cancels_a_wait,
            modes::offline_again_only_updates_the_message,
            modes::a_task_started_before_pending_is_seen_by_the_waiter,
            modes::mode_times_come_from_the_clock,
            modes::every_write_moves_the_generation,
            modes::the_marker_agrees_with_the_record_after_every_change,
            modes::a_stray_marker_is_put_right_by_the_next_look_or_task,
        );
    };
    (@area tasks [$($then:tt)*]) => {
        $crate::backend_conformance!($($then)*;
            tasks::a_task_is_live_until_dropped,
            tasks::a_task_taken_back_from_its_child_ends_with_its_guard,
            tasks::a_task_records_who_what_and_how,
            tasks::a_second_single_instance_is_refused_naming_the_first,
            tasks::concurrent_instances_all_run,
            tasks::instances_are_per_name,
            tasks::tasks_are_refused_while_pending_and_offline,
            tasks::allowed_tasks_run_inside_the_window_and_do_not_hold_it_off,
            tasks::the_override_lets_a_refused_task_in,
            tasks::required_tasks_run_only_offline_or_in_the_window,
            tasks::holders_are_the_processes_recorded_at_spawn,
            tasks::the_secret_is_in_no_record,
            tasks::hostile_names_are_just_names,
            tasks::reaping_never_removes_a_live_task,
        );
    };
    (@area joins [$($then:tt)*]) => {
        $crate::backend_conformance!($($then)*;
            joins::a_nested_run_with_the_secret_joins_as_a_run_of_its_own,
            joins::a_joined_run_keeps_its_own_commands_single_instance,
            joins::joining_without_proof_is_refused_naming_the_task,
            joins::joining_an_ended_task_is_refused,
            joins::a_joined_run_keeps_the_task_live_after_its_root_ended,
            joins::a_joined_block_run_refuses_activation,
            joins::a_block_run_joining_during_pending_ends_the_wait_refused,
            joins::completing_is_held_while_a_task_that_holds_off_is_live,
        );
    };
    (@area sessions [$($then:tt)*]) => {
        $crate::backend_conformance!($($then)*;
            sessions::a_touched_session_is_live_until_it_expires,
            sessions::a_batch_of_touches_records_each_session_once,
            sessions::logout_ends_a_session_at_once,
            sessions::pruning_removes_only_what_every_process_judges_expired,
            sessions::touches_are_never_refused,
            sessions::hostile_session_ids_are_only_hashed,
            sessions::many_sessions_are_counted_once_each,
            sessions::a_wall_clock_step_neither_expires_nor_removes_sessions,
            sessions::a_reboot_cuts_no_one_off_and_ends_the_earlier_boots_sessions_within_a_timeout,
            sessions::the_summary_counts_what_the_listing_lists,
            sessions::the_summary_never_counts_an_expired_session,
            sessions::a_session_two_processes_recorded_counts_once_after_the_next_listing,
            sessions::sessions_on_the_move_are_never_missed,
            activation::activate_waits_for_a_session_until_logout,
            activation::a_timeout_goes_back_online_and_names_what_was_live,
            activation::force_goes_offline_with_what_is_live,
            activation::grace_lets_sessions_go_but_not_commands,
            activation::a_session_touched_during_the_settle_time_is_counted,
            activation::status_counts_sessions_and_tasks,
        );
    };
    (@area activation [$($then:tt)*]) => {
        $crate::backend_conformance!($($then)*;
            activation::activate_with_nothing_live_goes_offline_after_the_settle_time,
            activation::activate_waits_for_a_task_and_goes_offline_when_it_ends,
            activation::an_interruption_goes_back_online,
            activation::deactivate_cancels_a_waiting_activation,
            activation::a_second_activation_joins_the_first,
            activation::a_blocking_task_refuses_activation_and_the_site_stays_online,
        );
    };
    (@area window [$($then:tt)*]) => {
        $crate::backend_conformance!($($then)*;
            joins::a_joined_required_run_needs_a_window,
            window::tasks_started_inside_the_window_do_not_hold_it_off,
            window::an_offline_run_holds_the_window_alone_and_says_when_its_command_runs,
        );
    };
    (@area schedules [$($then:tt)*]) => {
        $crate::backend_conformance!($($then)*;
            schedules::a_schedule_lives_exactly_as_long_as_its_holder,
            schedules::a_second_schedule_is_refused_naming_the_first,
            schedules::ending_a_schedule_tells_its_holder_and_every_reader,
            schedules::a_schedule_goes_pending_once_and_only_if_nobody_ended_it,
            schedules::a_schedule_waits_for_its_time_and_its_timeout_counts_from_it,
            schedules::a_stopped_wait_withdraws_the_schedule,
            schedules::deactivating_cancels_a_schedule_and_activating_now_supersedes_it,
        );
    };
    // Schedules of read-only windows: they need both the schedules and the
    // read-only tier of a backend.
    (@area read_only_schedules [$($then:tt)*]) => {
        $crate::backend_conformance!($($then)*;
            schedules::a_read_only_schedule_goes_read_only_pending_once_and_only_if_nobody_ended_it,
            schedules::a_read_only_schedule_goes_read_only_at_its_time,
            schedules::a_read_only_scheduled_run_runs_inside_read_only_and_restores_online,
        );
    };
    (@area readonly [$($then:tt)*]) => {
        $crate::backend_conformance!($($then)*;
            readonly::a_read_only_drain_refuses_writers_and_admits_readers,
            readonly::a_read_only_drain_lapses_to_online_when_its_waiter_goes,
            readonly::completing_read_only_is_held_by_a_writer_started_online_not_by_a_reader,
            readonly::a_task_started_during_read_only_holds_off_offline,
            readonly::pending_from_read_only_lapses_back_to_read_only,
            readonly::a_drain_toward_another_mode_is_refused,
            readonly::the_markers_follow_the_read_only_tier,
            readonly::writes_in_flight_count_while_held,
            readonly::activate_read_only_waits_for_writes_and_writers_not_sessions,
            readonly::a_writer_joining_a_reader_is_refused_while_read_only,
            readonly::a_window_restores_the_mode_it_found,
        );
    };
    (@area history [$($then:tt)*]) => {
        $crate::backend_conformance!($($then)*;
            history::the_history_reads_back_newest_last,
            history::an_entry_is_kept_once_per_id,
            history::every_mode_change_appends_one_entry,
            history::a_change_is_recorded_whatever_the_backends_clock_says,
            history::a_lapsed_pending_is_recorded_exactly_once_however_many_notice_it,
            history::a_writer_records_the_lapse_it_replaces,
            history::the_history_is_bounded_and_keeps_the_newest,
            history::setting_and_ending_a_schedule_is_recorded_once_each_with_the_schedule,
            history::a_lapsed_schedule_is_recorded_exactly_once_however_many_notice_it,
            history::a_writer_records_the_lapsed_schedule_it_finds,
            history::a_scheduled_window_records_its_mode_changes_with_the_schedule,
            history::a_schedule_its_own_process_ends_is_recorded_saying_why,
            history::every_read_only_mode_change_appends_one_entry,
            history::a_lapsed_read_only_drain_is_recorded_exactly_once_going_back_where_it_came_from,
            history::a_read_only_schedules_events_carry_read_only,
        );
    };
    (@tests $state:path; $($area:ident::$case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::$case(&$state);
            }
        )*
    };
    (@tests_if $ready:path, $state:path; $($area:ident::$case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                if $ready() {
                    $crate::conformance::$case(&$state);
                }
            }
        )*
    };
    (@export; $($area:ident::$case:ident),* $(,)?) => {
        $(pub use self::$area::$case;)*
    };
}

fn task(backend: &Arc<dyn Backend>, name: &str, policy: Policy) -> Result<CommandTask, Error> {
    CommandTask::start(
        name,
        TaskOptions::new(Arc::clone(backend))
            .policy(policy)
            .lock_timeout(Duration::ZERO),
    )
}

fn change() -> ModeChange {
    ModeChange::by_this_process()
}

fn pending(backend: &Arc<dyn Backend>) -> Box<dyn WaiterLease> {
    match backend.begin_pending(&change()).expect("begin pending") {
        PendingStart::Waiting { waiter, .. } => waiter,
        PendingStart::AlreadyOffline(_) => panic!("the site was already offline"),
    }
}

/// Polls `check` until it holds (a hang guard of a minute, never a
/// measure of speed).
#[track_caller]
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "not {what} within a minute"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn names(backend: &Arc<dyn Backend>) -> Vec<String> {
    backend
        .tasks()
        .expect("list tasks")
        .into_iter()
        .map(|t| t.name)
        .collect()
}

fn join(
    backend: &Arc<dyn Backend>,
    name: &str,
    policy: Policy,
    token: &str,
) -> Result<CommandTask, Error> {
    CommandTask::start(
        name,
        TaskOptions::new(Arc::clone(backend))
            .policy(policy)
            .argv([name, "--nested"])
            .join(Some(token.to_owned())),
    )
}

/// The token a child of `t` gets, `<id>:<secret>`.
fn token_of(t: &CommandTask) -> String {
    t.token().env_value()
}

fn key(id: &str) -> SessionKey {
    SessionKey::of(id.as_bytes())
}

fn activation(timeout: Duration) -> Activation {
    Activation {
        change: change(),
        timeout,
        grace: None,
        settle: Duration::from_millis(20),
    }
}

fn never() -> bool {
    false
}

/// A schedule `ahead` from `b`'s clock's now, told from now, by this
/// process, with `message`.
fn window(b: &Arc<dyn Backend>, ahead: Duration, message: &str) -> ScheduleRecord {
    let now = b.clock().now();
    let mut r = ScheduleRecord::by_this_process(Timestamp::at(now + ahead), Timestamp::at(now));
    r.message = Some(message.into());
    r
}

/// The process of `offline on --at`, in a thread: waits on `lease` for its
/// time (which must come, not be cancelled), then activates as `a` says.
fn activate_when_due(
    b: &Arc<dyn Backend>,
    mut lease: Box<dyn ScheduleLease>,
    a: Activation,
) -> std::thread::JoinHandle<crate::error::Result<Outcome>> {
    let b = Arc::clone(b);
    std::thread::spawn(move || {
        let notice = transition::wait_for_schedule(b.as_ref(), &a.change, lease.as_mut(), &never)?;
        assert_eq!(notice, transition::Notice::Due);
        transition::activate_scheduled(b.as_ref(), lease.as_mut(), &a, &never, &mut |_| {})
    })
}

/// Starts an activation of `b` in a thread; the receiver gets the number
/// of live sessions at its first look (by then it is PENDING).
fn activate_in_thread(
    b: Arc<dyn Backend>,
    timeout: Duration,
) -> (
    std::sync::mpsc::Receiver<usize>,
    std::thread::JoinHandle<crate::error::Result<Outcome>>,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let mut sent = false;
        transition::activate(b.as_ref(), &activation(timeout), &never, &mut |p| {
            if !sent {
                sent = true;
                let _ = tx.send(p.holding.sessions.len());
            }
        })
    });
    (rx, h)
}

/// Activates `b`, which must refuse at once because of drain-`block` tasks;
/// returns them and the error.
fn activate_blocked(b: &Arc<dyn Backend>) -> (Vec<crate::records::TaskRecord>, Error) {
    let err = transition::activate(
        b.as_ref(),
        &activation(Duration::from_secs(30)),
        &never,
        &mut |_| {},
    )
    .expect_err("blocked");
    let crate::error::Error::Refused(crate::error::Refusal::Blocked { tasks }) = &err else {
        panic!("blocked, got {err}");
    };
    (tasks.clone(), err)
}

fn run_activate(b: &Arc<dyn Backend>, a: &Activation) -> Outcome {
    transition::activate(b.as_ref(), a, &never, &mut |_| {}).expect("activate")
}

impl ManualClock {
    /// The clock's time (the trait method, without importing the trait).
    pub fn now_for_tests(&self) -> SystemTime {
        crate::clock::Clock::now(self)
    }
}

#[cfg(test)]
mod file_backend {
    crate::backend_conformance!(crate::conformance::file_state);
}

/// The PostgreSQL backend, area by area as they are done: add an area to
/// the list once its cases pass.
#[cfg(all(test, feature = "postgres"))]
mod postgres_backend {
    crate::backend_conformance!(
        crate::conformance::postgres_state;
        if crate::conformance::postgres_available;
        areas: modes, tasks, joins, sessions, activation, window, schedules, read_only_schedules,
            readonly, history
    );
}
