//! Scheduled windows in the file backend, beside the PENDING waiters in
//! `pending/`: `<id>.schedule`, locked by the waiting process for as long
//! as it lives, the record inside; `<id>.ended`, written once by whoever
//! ends it. A schedule is live while its file is locked and it has no end:
//! killed, the kernel drops the lock and every reader sees no schedule at
//! once (as a waiter's PENDING lapses, I5). Ends and new schedules are
//! written under the exclusive gate, so a cancel and the schedule's time
//! coming are ordered; the next mode change removes what dead schedules
//! left, as it removes dead waiters.
//!
//! Older binaries look only at `*.waiter` in `pending/`: they see no
//! schedule, and never count one as a waiter.

use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dir::{Dir, Modes};
use super::{FileBackend, MAX_MODE_RECORD, tasks};
use crate::backend::{ModeChange, ScheduleLease};
use crate::clock::{SharedClock, Timestamp};
use crate::error::{Error, Refusal, Result};
use crate::schedule::{EndedSchedule, ScheduleEnd, ScheduleEndReason, ScheduleRecord};

const SCHEDULE_SUFFIX: &str = ".schedule";
const ENDED_SUFFIX: &str = ".ended";
/// How often a waiting schedule looks for its end.
const POLL: Duration = Duration::from_millis(20);

/// A schedule's waiting process's hold on `pending/<id>.schedule`.
#[derive(Debug)]
pub(super) struct FileScheduleLease {
    file: Option<File>,
    record: ScheduleRecord,
    dir: Arc<Dir>,
    modes: Modes,
    clock: SharedClock,
}

impl ScheduleLease for FileScheduleLease {
    fn record(&self) -> &ScheduleRecord {
        &self.record
    }

    fn wait_ended(&self, timeout: Duration) -> Result<Option<ScheduleEnd>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = read_end(&self.dir, &self.record.id)? {
                return Ok(Some(end));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            std::thread::sleep(left.min(POLL));
        }
    }

    fn end(&mut self, end: &ScheduleEnd) -> Result<()> {
        write_end(&self.dir, &self.record.id, end, self.modes, &self.clock).map(drop)
    }
}

impl Drop for FileScheduleLease {
    fn drop(&mut self) {
        // Unlock first: from here on no reader counts it, whatever is left.
        drop(self.file.take());
        // An ended schedule's files go now; a schedule dropped without an
        // end lapsed, and the next mode change removes it (and can say so).
        if matches!(self.dir.exists(&ended_name(&self.record.id)), Ok(true)) {
            let _ = self.dir.remove(&schedule_name(&self.record.id));
            let _ = self.dir.remove(&ended_name(&self.record.id));
        }
    }
}

fn schedule_name(id: &str) -> String {
    format!("{id}{SCHEDULE_SUFFIX}")
}

fn ended_name(id: &str) -> String {
    format!("{id}{ENDED_SUFFIX}")
}

/// The end written for schedule `id`, if any; one that is not a regular
/// file we wrote (unreadable, a planted link) counts as an end by nobody
/// known: the schedule is over either way.
fn read_end(dir: &Dir, id: &str) -> Result<Option<ScheduleEnd>> {
    let unknown = || ScheduleEnd::new(ScheduleEndReason::Withdrawn, "an unknown process", 0);
    match dir.read_small(&ended_name(id), MAX_MODE_RECORD) {
        Ok(None) => Ok(None),
        Ok(Some(bytes)) => Ok(Some(
            serde_json::from_slice(&bytes).unwrap_or_else(|_| unknown()),
        )),
        Err(Error::State { .. }) => Ok(Some(unknown())),
        Err(e) => Err(e),
    }
}

/// Writes the end of schedule `id` (atomically: readers see it whole or
/// not at all), timed by `clock`; returns it as written.
fn write_end(
    dir: &Dir,
    id: &str,
    end: &ScheduleEnd,
    modes: Modes,
    clock: &SharedClock,
) -> Result<ScheduleEnd> {
    let end = ScheduleEnd {
        at: Timestamp::at(clock.now()),
        ..end.clone()
    };
    let json = serde_json::to_vec(&end).map_err(|e| Error::Invalid(e.to_string()))?;
    dir.replace(&ended_name(id), &json, modes, false)?;
    Ok(end)
}

/// What one `*.schedule` file stands for.
enum Found {
    /// Held, and nobody ended it.
    Live(ScheduleRecord),
    /// Held, and ended: its process is about to let go.
    Ended,
    /// Not a file we wrote (a planted link, a directory): never a
    /// schedule; the next mode change removes it.
    Stranger,
    /// Nobody holds it: its process is gone.
    Dead {
        /// Its record, when readable.
        record: Option<ScheduleRecord>,
        /// Whether an end was written before it died.
        ended: bool,
    },
}

impl FileBackend {
    /// The ids of the `*.schedule` files in `pending/`, of the shape we
    /// issue (anything else is not ours and is left alone).
    fn schedule_ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for name in self.pending.names()? {
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = name.strip_suffix(SCHEDULE_SUFFIX)
                && tasks::is_id(id)
            {
                ids.push(id.to_owned());
            }
        }
        Ok(ids)
    }

    fn look_at_schedule(&self, id: &str) -> Result<Option<Found>> {
        let name = schedule_name(id);
        let file = match self.pending.open_read(&name) {
            Ok(Some(file)) => file,
            Ok(None) => return Ok(None),
            Err(Error::State { .. }) => return Ok(Some(Found::Stranger)),
            Err(e) => return Err(e),
        };
        let held =
            tasks::held(&file).map_err(|e| Error::io("probe", self.pending.join(&name), e))?;
        let ended = self.pending.exists(&ended_name(id))?;
        let record = || -> Option<ScheduleRecord> {
            let bytes =
                super::dir::read_regular(file, MAX_MODE_RECORD, &self.pending.join(&name)).ok()?;
            serde_json::from_slice(&bytes).ok()
        };
        Ok(Some(match (held, ended) {
            (true, false) => match record() {
                Some(r) => Found::Live(r),
                // Held but unreadable: not a schedule we wrote.
                None => return Ok(None),
            },
            (true, true) => Found::Ended,
            (false, ended) => Found::Dead {
                record: record(),
                ended,
            },
        }))
    }

    /// The live schedule: held by its process, and not ended.
    pub(super) fn live_schedule(&self) -> Result<Option<ScheduleRecord>> {
        for id in self.schedule_ids()? {
            if let Some(Found::Live(r)) = self.look_at_schedule(&id)? {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// Whether a schedule lapsed that nobody has noticed yet: its process
    /// died (killed) before anyone ended it. A look without the gate, so a
    /// reader takes the gate only when there is something to record.
    pub(super) fn any_schedule_lapsed(&self) -> Result<bool> {
        for id in self.schedule_ids()? {
            if let Some(Found::Dead {
                record: Some(_),
                ended: false,
            }) = self.look_at_schedule(&id)?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Removes what dead schedules left, for a holder of the exclusive gate
    /// (so each is removed once), and returns those that lapsed — their
    /// process died without an end (killed) — for the record of what
    /// happened.
    pub(super) fn reap_schedules(&self) -> Result<Vec<ScheduleRecord>> {
        let mut lapsed = Vec::new();
        for name in self.pending.names()? {
            let Some(name) = name.to_str() else { continue };
            // An end whose schedule is gone (its process removed one file
            // of the two).
            if let Some(id) = name.strip_suffix(ENDED_SUFFIX)
                && tasks::is_id(id)
                && !self.pending.exists(&schedule_name(id))?
            {
                let _ = self.pending.remove(name);
            }
        }
        for id in self.schedule_ids()? {
            match self.look_at_schedule(&id)? {
                // Best effort, as what cannot be removed (a planted
                // directory) never counts anyway; a lapse is told by the one
                // writer that removed it.
                Some(Found::Dead { record, ended }) => {
                    let removed = matches!(self.pending.remove(&schedule_name(&id)), Ok(true));
                    let _ = self.pending.remove(&ended_name(&id));
                    if let (true, Some(record), false) = (removed, record, ended) {
                        lapsed.push(record);
                    }
                }
                Some(Found::Stranger) => {
                    // Unlinks the link itself, never what it names (I4).
                    let _ = self.pending.remove(&schedule_name(&id));
                }
                _ => {}
            }
        }
        Ok(lapsed)
    }

    /// [`Backend::begin_schedule`](crate::Backend::begin_schedule): under
    /// the exclusive gate, refused while one is live; else a new locked
    /// file, written under a temporary name and renamed into place, so a
    /// reader never sees it unlocked or half-written.
    pub(super) fn schedule_window(
        &self,
        schedule: &ScheduleRecord,
    ) -> Result<Box<dyn ScheduleLease>> {
        let _gate = self.gate(true)?;
        let lapsed = self.reap_schedules()?;
        self.notice_lapsed_schedules(lapsed);
        if let Some(live) = self.live_schedule()? {
            return Err(Error::Refused(Refusal::Scheduled {
                schedule: Box::new(live),
            }));
        }
        let id = tasks::new_id();
        let record = ScheduleRecord {
            id: id.clone(),
            set_at: Timestamp::at(self.clock.now()),
            ..schedule.clone()
        };
        let tmp = format!(".{id}.tmp");
        let file = self.pending.create_new(&tmp, self.modes)?;
        let written = fs2::FileExt::try_lock_exclusive(&file)
            .map_err(|e| Error::io("lock", self.pending.join(&tmp), e))
            .and_then(|()| {
                let json =
                    serde_json::to_vec(&record).map_err(|e| Error::Invalid(e.to_string()))?;
                (&file)
                    .write_all(&json)
                    .map_err(|e| Error::io("write", self.pending.join(&tmp), e))
            })
            .and_then(|()| self.pending.rename(&tmp, &schedule_name(&id)));
        if let Err(e) = written {
            let _ = self.pending.remove(&tmp);
            return Err(e);
        }
        Ok(Box::new(FileScheduleLease {
            file: Some(file),
            record,
            dir: Arc::clone(&self.pending),
            modes: self.modes,
            clock: Arc::clone(&self.clock),
        }))
    }

    /// [`Backend::end_schedule`](crate::Backend::end_schedule).
    pub(super) fn end_live_schedule(&self, end: &ScheduleEnd) -> Result<Option<EndedSchedule>> {
        let _gate = self.gate(true)?;
        let Some(schedule) = self.live_schedule()? else {
            return Ok(None);
        };
        let end = write_end(&self.pending, &schedule.id, end, self.modes, &self.clock)?;
        Ok(Some(EndedSchedule { schedule, end }))
    }

    /// [`Backend::begin_scheduled_pending`](crate::Backend::begin_scheduled_pending)
    /// and [`Backend::begin_scheduled_read_only`](crate::Backend::begin_scheduled_read_only):
    /// under the exclusive gate, the schedule's end (`due`), then `begin`,
    /// the draining mode's start for a holder of the gate.
    pub(super) fn begin_as_scheduled<T>(
        &self,
        schedule: &dyn ScheduleLease,
        change: &ModeChange,
        begin: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let _gate = self.gate(true)?;
        let record = schedule.record();
        if let Some(end) = read_end(&self.pending, &record.id)? {
            return Err(Error::Refused(Refusal::ScheduleEnded {
                schedule: Box::new(record.clone()),
                end,
            }));
        }
        // The end first, then the draining mode: no reader sees both.
        // Should it fail to begin, the schedule stands again, as it was.
        write_end(
            &self.pending,
            &record.id,
            &ScheduleEnd::new(ScheduleEndReason::Due, change.by.clone(), change.pid),
            self.modes,
            &self.clock,
        )?;
        let start = begin();
        if start.is_err() {
            let _ = self.pending.remove(&ended_name(&record.id));
        }
        start
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::backend::{Backend, FileBackend, ModeChange};
    use crate::clock::{SystemClock, Timestamp};
    use crate::config::Config;
    use crate::schedule::ScheduleRecord;

    fn open(state: &std::path::Path) -> FileBackend {
        FileBackend::open(&Config::with_state_dir(state), SystemClock::shared()).unwrap()
    }

    #[test]
    fn what_is_planted_in_place_of_a_schedule_is_no_schedule_and_stops_no_mode_change() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("s");
        let b = open(&state);
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, r#"{"not":"a schedule"}"#).unwrap();
        let pending = state.join(super::super::PENDING);
        std::os::unix::fs::symlink(&outside, pending.join("aa-1.schedule")).unwrap();
        std::fs::create_dir(pending.join("bb-2.schedule")).unwrap();
        std::fs::write(pending.join("cc-3.schedule"), "garbage").unwrap();
        assert_eq!(b.schedule().unwrap(), None);
        b.go_online(&ModeChange::by_this_process()).unwrap();
        assert_eq!(b.schedule().unwrap(), None);
        // A real one is still taken, and seen.
        let now = std::time::SystemTime::now();
        let lease = b
            .begin_schedule(&ScheduleRecord::by_this_process(
                Timestamp::at(now + Duration::from_secs(60)),
                Timestamp::at(now),
            ))
            .unwrap();
        assert_eq!(b.schedule().unwrap().as_ref(), Some(lease.record()));
        assert_eq!(
            std::fs::read_to_string(&outside).unwrap(),
            r#"{"not":"a schedule"}"#,
            "nothing outside was touched"
        );
        assert!(!pending.join("aa-1.schedule").exists(), "the link went");
        assert!(!pending.join("cc-3.schedule").exists(), "the garbage went");
    }
}
