//! A look at the mode that a forked child may make between `fork` and
//! `exec`, or without ever exec'ing: plain system calls on a directory
//! descriptor opened beforehand, a buffer on the stack, no allocation and
//! no lock. An external command's keeper uses it to ask what the command
//! left behind to stop (drain `stop`) once the site leaves ONLINE.
//!
//! It reads the stored record's `mode` only: a PENDING whose waiter died
//! (which [`Backend::mode`](crate::Backend::mode) reads as ONLINE) still
//! counts as leaving ONLINE, so a drain-`stop` leftover may be asked to stop
//! by an `offline on` that was then killed.

use std::os::fd::{AsRawFd, OwnedFd};
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
}

impl ModeProbe {
    /// Opens the state directory `state_dir` (never through a symlink).
    pub fn open(state_dir: &Path) -> std::io::Result<ModeProbe> {
        let dir = rustix::fs::open(
            state_dir,
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
            Mode::empty(),
        )?;
        Ok(ModeProbe { dir })
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
        // SAFETY: plain system calls on our own descriptor and buffer; the
        // name is a NUL-terminated constant.
        let n = unsafe {
            let name = c"mode.json";
            debug_assert_eq!(name.to_bytes(), MODE.as_bytes());
            let fd = libc::openat(
                self.dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
            );
            if fd < 0 {
                return (std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT))
                    .then_some(true);
            }
            let mut got = 0usize;
            while got < MAX {
                let r = libc::read(fd, buf.as_mut_ptr().add(got).cast(), MAX - got);
                if r <= 0 {
                    break;
                }
                got += r as usize;
            }
            libc::close(fd);
            got
        };
        mode_of(&buf[..n]).map(|m| m == b"ONLINE")
    }
}

/// The value of the record's top-level `"mode"` key, scanned without
/// parsing (the record is written by serde_json; the key appears once).
fn mode_of(json: &[u8]) -> Option<&[u8]> {
    let key = b"\"mode\"";
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
        assert_eq!(
            mode_of(br#"{"mode": "PENDING", "by": "x"}"#),
            Some(&b"PENDING"[..])
        );
        assert_eq!(
            mode_of(b"{\n  \"mode\":\"ONLINE\"\n}"),
            Some(&b"ONLINE"[..])
        );
        assert_eq!(mode_of(b"garbage"), None);
        assert_eq!(mode_of(br#"{"mode": 3}"#), None);
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
}
