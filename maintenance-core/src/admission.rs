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
/// the window closed is refused. Drain `block` is not decided here: the joined
/// run's record carries its policy, so an `offline on` refuses while it
/// runs. Every backend calls this one function.
pub fn admit_joined(
    request: &TaskRequest,
    parent: &TaskRecord,
    view: &ModeView,
    window_open: bool,
) -> Result<(), Refusal> {
    match request.policy.maintenance {
        Maintenance::Required
            if view.mode == Mode::Offline
                || (window_open && (parent.in_window || request.in_window)) =>
        {
            Ok(())
        }
        Maintenance::Required => Err(Refusal::MaintenanceRequired {
            command: request.name.clone(),
            mode: view.mode,
        }),
        Maintenance::Refused | Maintenance::Allowed => Ok(()),
    }
}

/// Decides whether a task may start in the mode in force. Every backend's
/// gate calls this one function, so the rule lives in one place.
pub fn admit(request: &TaskRequest, view: &ModeView) -> Result<(), Refusal> {
    let refuse_maintenance = || Refusal::Maintenance {
        command: request.name.clone(),
        mode: view.mode,
        since: view.record.since,
        by: view.record.by.clone(),
        message: view.record.message.clone(),
    };
    match (request.policy.maintenance, view.mode) {
        (Maintenance::Required, Mode::Offline) => Ok(()),
        (Maintenance::Required, _) if request.in_window => Ok(()),
        (Maintenance::Required, mode) => Err(Refusal::MaintenanceRequired {
            command: request.name.clone(),
            mode,
        }),
        (_, Mode::Online) => Ok(()),
        (Maintenance::Allowed, _) => Ok(()),
        (Maintenance::Refused, _) if request.ignore_maintenance || request.in_window => Ok(()),
        (Maintenance::Refused, _) => Err(refuse_maintenance()),
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
