//! Admission: the one rule that decides whether a task may start, or a
//! nested run may join a live task, in the mode in force (I1, I2). Every
//! backend's gate calls these functions, so the rule lives in one place.

use crate::error::Refusal;
use crate::mode::{Mode, ModeView};
use crate::policy::Maintenance;
use crate::records::{TaskRecord, TaskRequest};

/// Decides whether a nested run that proved it belongs to the live task
/// `parent` may join it in the mode in force. The parent's standing covers
/// maintenance `refused` and `allowed` (a job is not refused halfway
/// through); `required` is admitted only while OFFLINE, or while the window
/// its parent runs in is still open (`window_open`: an `offline run`'s
/// command is running) — a leftover of a window's command that joins after
/// the window closed is refused. While writes are refused (READONLY and
/// its drains), a run that may write is admitted only where its task's
/// standing covers writing: a window's command, an `allowed` parent, the
/// override, or a task started ONLINE while READONLY is still draining
/// (the run then holds off READONLY, as its task does); a `required` run
/// needs an OFFLINE window, unless it only reads and the site is READONLY.
/// Drain `block` is not decided here: the joined run's record carries its
/// policy, so an `offline on` refuses while it runs. Every backend calls
/// this one function.
pub fn admit_joined(
    request: &TaskRequest,
    parent: &TaskRecord,
    view: &ModeView,
    window_open: bool,
) -> Result<(), Refusal> {
    let in_window = window_open && (parent.in_window || request.in_window);
    match request.policy.maintenance {
        Maintenance::Required if view.mode == Mode::Offline => Ok(()),
        Maintenance::Required if view.writes_refused() => {
            if request.policy.is_read_only() && view.mode == Mode::ReadOnly {
                Ok(())
            } else {
                Err(Refusal::MaintenanceRequired {
                    command: request.name.clone(),
                    mode: view.mode,
                })
            }
        }
        Maintenance::Required if in_window => Ok(()),
        Maintenance::Required => Err(Refusal::MaintenanceRequired {
            command: request.name.clone(),
            mode: view.mode,
        }),
        Maintenance::Refused
            if view.writes_refused() && !covers_writing(request, parent, view, in_window) =>
        {
            Err(refusal(request, view))
        }
        Maintenance::Refused | Maintenance::Allowed => Ok(()),
    }
}

/// Whether a nested run of `request` may write while `view` refuses
/// writes: it only reads, runs in the open window, was given the override,
/// its parent is `allowed`, or its task started ONLINE and READONLY is
/// still draining (the run then holds off READONLY, as its task does).
fn covers_writing(
    request: &TaskRequest,
    parent: &TaskRecord,
    view: &ModeView,
    in_window: bool,
) -> bool {
    request.policy.is_read_only()
        || in_window
        || request.ignore_maintenance
        || parent.policy.maintenance == Maintenance::Allowed
        || (view.mode == Mode::ReadOnlyPending && parent.started_in == Mode::Online)
}

/// The refusal of `request` for maintenance in `view`.
fn refusal(request: &TaskRequest, view: &ModeView) -> Refusal {
    Refusal::Maintenance {
        command: request.name.clone(),
        mode: view.mode,
        since: view.record.since,
        by: view.record.by.clone(),
        message: view.record.message.clone(),
    }
}

/// Decides whether a task may start in the mode in force. Every backend's
/// gate calls this one function, so the rule lives in one place.
///
/// While READONLY_PENDING or READONLY, a command that only reads runs as if
/// ONLINE, and one that may write is refused as during PENDING (`allowed`,
/// the override and a window's command excepted); a `required` command
/// needs an OFFLINE window — a read-only window is none for a command that
/// may write — unless it only reads, which READONLY lets it do. A PENDING
/// begun from READONLY is a PENDING.
pub fn admit(request: &TaskRequest, view: &ModeView) -> Result<(), Refusal> {
    let read_only = request.policy.is_read_only();
    let reads_on = matches!(view.mode, Mode::ReadOnlyPending | Mode::ReadOnly);
    match (request.policy.maintenance, view.mode) {
        (Maintenance::Required, Mode::Offline) => Ok(()),
        (Maintenance::Required, Mode::ReadOnly) if read_only => Ok(()),
        (Maintenance::Required, mode) if view.writes_refused() => {
            Err(Refusal::MaintenanceRequired {
                command: request.name.clone(),
                mode,
            })
        }
        (Maintenance::Required, _) if request.in_window => Ok(()),
        (Maintenance::Required, mode) => Err(Refusal::MaintenanceRequired {
            command: request.name.clone(),
            mode,
        }),
        (_, Mode::Online) => Ok(()),
        (Maintenance::Allowed, _) => Ok(()),
        (Maintenance::Refused, _) if reads_on && read_only => Ok(()),
        (Maintenance::Refused, _) if request.ignore_maintenance || request.in_window => Ok(()),
        (Maintenance::Refused, _) => Err(refusal(request, view)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::Timestamp;
    use crate::mode::ModeRecord;
    use crate::policy::Policy;

    fn request(maintenance: Maintenance) -> TaskRequest {
        TaskRequest {
            name: "job".into(),
            argv: vec!["job".into()],
            policy: Policy::DEFAULT.maintenance(maintenance),
            ignore_maintenance: false,
            in_window: false,
            lock_timeout: Duration::ZERO,
        }
    }

    fn view(mode: Mode) -> ModeView {
        let mut r = ModeRecord::initial();
        r.mode = mode;
        ModeView::of(r)
    }

    fn reads(maintenance: Maintenance) -> TaskRequest {
        let mut r = request(maintenance);
        r.policy = r.policy.access(crate::policy::Access::ReadOnly);
        r
    }

    #[test]
    fn the_read_only_tier_admits_what_only_reads_and_refuses_what_may_write() {
        use Maintenance::*;
        use Mode::*;
        // (policy, only reads, mode, admitted)
        let cases = [
            (Refused, false, ReadOnlyPending, false),
            (Refused, false, ReadOnly, false),
            (Refused, true, ReadOnlyPending, true),
            (Refused, true, ReadOnly, true),
            (Refused, true, Pending, false),
            (Refused, true, Offline, false),
            (Allowed, false, ReadOnlyPending, true),
            (Allowed, false, ReadOnly, true),
            (Required, false, ReadOnly, false),
            (Required, true, ReadOnlyPending, false),
            (Required, true, ReadOnly, true),
            (Required, true, Online, false),
        ];
        for (policy, read_only, mode, ok) in cases {
            let r = if read_only {
                reads(policy)
            } else {
                request(policy)
            };
            assert_eq!(
                admit(&r, &view(mode)).is_ok(),
                ok,
                "{policy}, read-only {read_only}, in {mode}"
            );
        }
        // A PENDING begun from READONLY keeps writes refused, and is a
        // PENDING for everything else.
        let mut v = view(Pending);
        v.record.from = Some(ReadOnly);
        assert!(admit(&reads(Refused), &v).is_err());
        assert!(admit(&request(Allowed), &v).is_ok());
        assert!(admit(&reads(Required), &v).is_err());
    }

    #[test]
    fn a_read_only_window_is_no_window_for_a_required_command_that_may_write() {
        let mut migrate = request(Maintenance::Required);
        migrate.in_window = true;
        let err = admit(&migrate, &view(Mode::ReadOnly)).unwrap_err();
        assert!(
            err.to_string().contains("only while the site is OFFLINE"),
            "{err}"
        );
        // A refused command is the window's own command there, as in any window.
        let mut restore = request(Maintenance::Refused);
        restore.in_window = true;
        assert!(admit(&restore, &view(Mode::ReadOnly)).is_ok());
        let msg = admit(&request(Maintenance::Refused), &view(Mode::ReadOnly))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("the site is READONLY since"), "{msg}");
        assert!(msg.contains("declares access read-only"), "{msg}");
    }

    #[test]
    fn admission_follows_the_policy_table() {
        use Maintenance::*;
        use Mode::*;
        let cases = [
            (Refused, Online, true),
            (Refused, Pending, false),
            (Refused, Offline, false),
            (Allowed, Online, true),
            (Allowed, Pending, true),
            (Allowed, Offline, true),
            (Required, Online, false),
            (Required, Pending, false),
            (Required, Offline, true),
        ];
        for (policy, mode, ok) in cases {
            assert_eq!(
                admit(&request(policy), &view(mode)).is_ok(),
                ok,
                "{policy} in {mode}"
            );
        }
    }

    #[test]
    fn the_override_and_the_window_let_a_refused_command_in() {
        let mut r = request(Maintenance::Refused);
        r.ignore_maintenance = true;
        assert!(admit(&r, &view(Mode::Offline)).is_ok());
        let mut r = request(Maintenance::Refused);
        r.in_window = true;
        assert!(admit(&r, &view(Mode::Pending)).is_ok());
        let mut r = request(Maintenance::Required);
        r.in_window = true;
        assert!(admit(&r, &view(Mode::Offline)).is_ok());
    }

    #[test]
    fn a_joined_run_is_admitted_by_the_parent_standing_except_required() {
        use Maintenance::*;
        use Mode::*;
        let parent = |in_window| TaskRecord {
            id: "1-1-0".into(),
            name: "deploy".into(),
            argv: vec!["deploy".into()],
            pid: 1,
            user: "u".into(),
            host: "h".into(),
            started_at: Timestamp::at(std::time::UNIX_EPOCH),
            policy: Policy::DEFAULT,
            started_in: Online,
            in_window,
            joined: None,
            holders: Vec::new(),
            processes: None,
        };
        let cases = [
            (Refused, Pending, false, true),
            (Refused, Offline, false, true),
            (Allowed, Pending, false, true),
            (Required, Online, false, false),
            (Required, Pending, false, false),
            (Required, Online, true, true),
            (Required, Offline, false, true),
        ];
        for (policy, mode, in_window, ok) in cases {
            assert_eq!(
                admit_joined(&request(policy), &parent(in_window), &view(mode), true).is_ok(),
                ok,
                "{policy} in {mode}, parent in window: {in_window}"
            );
        }
        // A leftover of a window's command, joining after the window closed.
        assert!(
            admit_joined(&request(Required), &parent(true), &view(Online), false).is_err(),
            "the window is over"
        );
        // While writes are refused, a nested run that may write needs a
        // standing that covers writing.
        let reader = |started_in| {
            let mut p = parent(false);
            p.policy = p.policy.access(crate::policy::Access::ReadOnly);
            p.started_in = started_in;
            p
        };
        let cases = [
            // (parent started in, mode, admitted)
            (ReadOnly, ReadOnly, false),
            (Online, ReadOnly, false),
            (ReadOnlyPending, ReadOnlyPending, false),
            // Its task, started ONLINE, still holds off READONLY: so does it.
            (Online, ReadOnlyPending, true),
        ];
        for (started_in, mode, ok) in cases {
            assert_eq!(
                admit_joined(&request(Refused), &reader(started_in), &view(mode), false).is_ok(),
                ok,
                "a writer joining a reader started {started_in}, in {mode}"
            );
        }
        assert!(admit_joined(&reads(Refused), &reader(ReadOnly), &view(ReadOnly), false).is_ok());
        let mut allowed = reader(ReadOnly);
        allowed.policy = allowed.policy.maintenance(Allowed);
        assert!(admit_joined(&request(Refused), &allowed, &view(ReadOnly), false).is_ok());
        assert!(admit_joined(&request(Refused), &parent(true), &view(ReadOnly), true).is_ok());
        assert!(admit_joined(&request(Required), &parent(true), &view(ReadOnly), true).is_err());
        assert!(admit_joined(&reads(Required), &parent(false), &view(ReadOnly), false).is_ok());
    }

    #[test]
    fn refusals_say_why_and_name_the_way_out() {
        let mut v = view(Mode::Offline);
        v.record.by = "root@web1".into();
        let msg = admit(&request(Maintenance::Refused), &v)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("the site is OFFLINE since 1970-01-01T00:00:00.000Z (set by root@web1)"),
            "{msg}"
        );
        assert!(msg.contains("--ignore-maintenance"), "{msg}");
        let msg = admit(&request(Maintenance::Required), &view(Mode::Online))
            .unwrap_err()
            .to_string();
        // This process's own binary: `mysite offline run -- job` for mysite.
        let bin = crate::identity::program_name();
        assert!(msg.contains(&format!("{bin} offline run -- job")), "{msg}");
    }
}
