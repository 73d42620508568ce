//! A look at the mode that a forked child may make between `fork` and
//! `exec`, or without ever exec'ing: plain system calls on a directory
//! descriptor opened beforehand, a buffer on the stack, no allocation and
//! no lock. An external command's keeper uses it to ask what the command
//! left behind to stop (drain `stop`) once the site leaves ONLINE.
//!
//! It reads the stored record's `mode` (and `tier`) only: a PENDING whose
//! waiter died (which [`Backend::mode`](crate::Backend::mode) reads as
//! ONLINE) still counts as leaving ONLINE, so a drain-`stop` leftover may be
//! asked to stop by an `offline on` that was then killed. A task that does
//! not hold off READONLY (a read-only command) reads on through
//! READONLY_PENDING and READONLY ([`for_task`](ModeProbe::for_task)).

use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use super::MODE;

/// The largest record looked at; a longer one is not ours.
const MAX: usize = 64 * 1024;

/// Opened on the state directory before a fork; [`online`](Self::online)
/// is async-signal-safe.
#[derive(Debug)]
pub struct ModeProbe {
    dir: OwnedFd,
    reads_on: bool,
}

impl ModeProbe {
    /// Opens the state directory `state_dir` (never through a symlink).
    pub fn open(state_dir: &Path) -> std::io::Result<ModeProbe> {
        let dir = rustix::fs::open(
            state_dir,
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
            Mode::empty(),
        )?;
        Ok(ModeProbe {
            dir,
            reads_on: false,
        })
    }

    /// This probe for the leftovers of `task`: one that does not hold off
    /// READONLY keeps running through the read-only tier.
    pub fn for_task(mut self, task: &crate::records::TaskRecord) -> Self {
        self.reads_on = !task.holds_off_read_only();
        self
    }

    /// Whether the task this probe is for may keep running in the stored
    /// mode: ONLINE, or for a task that does not hold off READONLY, also
    /// READONLY_PENDING and READONLY; `None` when the record cannot be
    /// read. Async-signal-safe, as [`online`](Self::online).
    pub fn keeps_running(&self) -> Option<bool> {
        let mut buf = [0u8; MAX];
        let json = self.read(&mut buf)?;
        let online = mode_of(json, b"\"mode\"").map(|m| m == b"ONLINE");
        if self.reads_on && online == Some(false) {
            let tier = mode_of(json, b"\"tier\"");
            return Some(matches!(
                tier,
                Some(b"READONLY_PENDING") | Some(b"READONLY")
            ));
        }
        online
    }

    /// The descriptor a forked child must keep open.
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.dir.as_raw_fd()
    }

    /// Whether the stored record says ONLINE (no record: ONLINE); `None`
    /// when it cannot be read. Async-signal-safe: `openat`, `read`, `close`
    /// and a scan of a stack buffer.
    pub fn online(&self) -> Option<bool> {
        let mut buf = [0u8; MAX];
        mode_of(self.read(&mut buf)?, b"\"mode\"").map(|m| m == b"ONLINE")
    }

    /// The stored record in `buf` (an empty one, which reads as ONLINE,
    /// when there is none); `None` when it cannot be read.
    fn read<'b>(&self, buf: &'b mut [u8; MAX]) -> Option<&'b [u8]> {
        // rustix's own system calls (its raw backend on Linux): no C
        // library wrapper, so no `errno` written and no thread's control
        // block read. A keeper sharing the runner's memory calls this.
        let name = c"mode.json";
        debug_assert_eq!(name.to_bytes(), MODE.as_bytes());
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&self.dir, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Some(&NO_RECORD[..]),
            Err(_) => return None,
        };
        let mut got = 0usize;
        while got < MAX {
            match rustix::io::read(&fd, &mut buf[got..]) {
                Ok(0) | Err(_) => break,
                Ok(r) => got += r,
            }
        }
        // SAFETY: the descriptor is taken out of its `OwnedFd` (whose drop
        // would close it through the C library) and closed once, here.
        unsafe { rustix::io::close(fd.into_raw_fd()) };
        Some(&buf[..got])
    }
}

/// What a missing record reads as: ONLINE.
const NO_RECORD: [u8; 17] = *b"{\"mode\":\"ONLINE\"}";

/// The value of the record's top-level `key` (`"mode"`, `"tier"`), scanned
/// without parsing (the record is written by serde_json; each key appears
/// once, and a quote inside a string value is escaped).
fn mode_of<'j>(json: &'j [u8], key: &[u8]) -> Option<&'j [u8]> {
    let at = json.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &json[at..];
    let rest = &rest[rest.iter().position(|b| !b.is_ascii_whitespace())?..];
    let rest = rest.strip_prefix(b":")?;
    let rest = &rest[rest.iter().position(|b| !b.is_ascii_whitespace())?..];
    let rest = rest.strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_is_read_from_a_written_record() {
        let mode = |json: &'static [u8]| mode_of(json, b"\"mode\"");
        assert_eq!(
            mode(br#"{"mode": "PENDING", "by": "x"}"#),
            Some(&b"PENDING"[..])
        );
        assert_eq!(mode(b"{\n  \"mode\":\"ONLINE\"\n}"), Some(&b"ONLINE"[..]));
        assert_eq!(mode(b"garbage"), None);
        assert_eq!(mode(br#"{"mode": 3}"#), None);
        assert_eq!(
            mode_of(br#"{"mode": "OFFLINE", "tier": "READONLY"}"#, b"\"tier\""),
            Some(&b"READONLY"[..])
        );
    }

    #[test]
    fn a_probe_follows_the_backend() {
        use crate::backend::{Backend, FileBackend, ModeChange};
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("s");
        let b = FileBackend::open(
            &crate::Config::with_state_dir(&state),
            crate::SystemClock::shared(),
        )
        .unwrap();
        let probe = ModeProbe::open(&state).unwrap();
        assert_eq!(probe.online(), Some(true), "no record yet");
        b.force_offline(&ModeChange::by_this_process()).unwrap();
        assert_eq!(probe.online(), Some(false));
        b.go_online(&ModeChange::by_this_process()).unwrap();
        assert_eq!(probe.online(), Some(true));
    }

    #[test]
    fn a_read_only_task_keeps_running_through_the_read_only_tier_and_a_writer_does_not() {
        use crate::backend::{Backend, FileBackend, ModeChange};
        use crate::policy::{Access, Policy};
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("s");
        let b = FileBackend::open(
            &crate::Config::with_state_dir(&state),
            crate::SystemClock::shared(),
        )
        .unwrap();
        let task = |policy: Policy| crate::records::TaskRecord {
            id: "1-1-0".into(),
            name: "report".into(),
            argv: vec!["report".into()],
            pid: 1,
            user: "u".into(),
            host: "h".into(),
            started_at: crate::clock::Timestamp::EPOCH,
            policy,
            started_in: crate::mode::Mode::Online,
            in_window: false,
            holders: Vec::new(),
            processes: None,
            joined: None,
        };
        let reader = ModeProbe::open(&state)
            .unwrap()
            .for_task(&task(Policy::DEFAULT.access(Access::ReadOnly)));
        let writer = ModeProbe::open(&state)
            .unwrap()
            .for_task(&task(Policy::DEFAULT));
        assert_eq!(
            (reader.keeps_running(), writer.keeps_running()),
            (Some(true), Some(true))
        );
        b.go_read_only(&ModeChange::by_this_process()).unwrap();
        assert_eq!(
            (reader.keeps_running(), writer.keeps_running()),
            (Some(true), Some(false))
        );
        b.force_offline(&ModeChange::by_this_process()).unwrap();
        assert_eq!(
            (reader.keeps_running(), writer.keeps_running()),
            (Some(false), Some(false))
        );
    }
}
