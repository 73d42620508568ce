//! Directory-relative file operations for the state directory: every file is
//! opened relative to a directory descriptor with `O_NOFOLLOW`, so no name
//! and no planted symlink can lead outside the state directory (I4). Every
//! system call on the state goes through here (with who holds a lock, from
//! `/proc/locks`), which makes the file long: one place to check for I4.
//!
//! Whoever can open a lock file can `flock` it — read access is enough —
//! and so hold off the site (the gate, a command's instance, a dead task's
//! file). So nothing here is created with any permission for others: only
//! the owner and the configured group open, lock or list anything, whatever
//! the umask ([`Modes`]); others keep only the search (`x`) permission on
//! the state directory itself, which nginx's workers need to `stat()` the
//! `OFFLINE` marker. A lock file an older manage left open to others is
//! narrowed by the next opener that may change its mode.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, FileType, Mode as FsMode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};

/// Permissions for everything created in the state directory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Modes {
    /// Mode of created files.
    pub file: u32,
    /// Mode of the state directory itself, when manage creates it.
    pub root: u32,
    /// Mode of the directories created inside it.
    pub dir: u32,
    /// The group sharing the state, if configured.
    pub gid: Option<u32>,
}

impl Modes {
    /// Without a shared group: the owner alone (root passes anyway). With
    /// one: the group too, and directories are setgid so everything inside
    /// inherits the group. Others get nothing but search (`x`) on the
    /// state directory, for nginx's workers to `stat()` the marker: they
    /// cannot list it, and cannot open — so cannot lock — anything in it.
    pub fn for_group(gid: Option<u32>) -> Self {
        match gid {
            None => Modes {
                file: 0o600,
                root: 0o711,
                dir: 0o700,
                gid: None,
            },
            Some(_) => Modes {
                file: 0o660,
                root: 0o2771,
                dir: 0o2770,
                gid,
            },
        }
    }
}

/// An open directory of the state, with its path for messages.
#[derive(Debug)]
pub(crate) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

fn io_err(e: Errno) -> io::Error {
    io::Error::from(e)
}

const READ_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NONBLOCK)
    .union(OFlags::NOCTTY);

impl Dir {
    /// Opens the state directory itself (its own path may pass through
    /// symlinks an administrator chose; nothing inside it may).
    pub fn open_root(path: &Path) -> io::Result<Dir> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            FsMode::empty(),
        )
        .map_err(io_err)?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The directory's descriptor.
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` inside this directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Opens (creating when missing) the subdirectory `name`, refusing a
    /// symlink or anything that is not a directory in its place.
    pub fn subdir(&self, name: &str, modes: Modes) -> Result<Dir> {
        // Usually there already: one open, no failed mkdir.
        match self.open_subdir(name) {
            Err(Error::Io { cause, .. }) if cause.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        match rustix::fs::mkdirat(&self.fd, name, FsMode::from_raw_mode(modes.dir)) {
            Ok(()) => {
                let d = self.open_subdir(name)?;
                d.apply_modes(modes.dir, modes.gid)?;
                Ok(d)
            }
            Err(Errno::EXIST) => self.open_subdir(name),
            Err(e) => Err(Error::io("create directory", self.join(name), io_err(e))),
        }
    }

    /// Another handle on this same directory (a duplicated descriptor), for
    /// a lease that outlives the backend's borrow.
    pub fn try_clone(&self) -> Result<Dir> {
        let fd = rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)
            .map_err(|e| Error::io("duplicate the descriptor of", self.path.clone(), io_err(e)))?;
        Ok(Dir {
            fd,
            path: self.path.clone(),
        })
    }

    /// Opens the existing subdirectory `name` (never following a link).
    pub fn open_existing_subdir(&self, name: &str) -> Result<Dir> {
        self.open_subdir(name)
    }

    /// Removes the empty subdirectory `name`; gone already is fine.
    pub fn remove_dir(&self, name: &str) -> Result<()> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(Error::io("remove directory", self.join(name), io_err(e))),
        }
    }

    /// Creates the empty file `name` if it does not exist; `true` when this
    /// call created it. Only its name matters, so its mode is left to the
    /// directory's group and umask, within the state's file mode (never
    /// open to others).
    pub fn create_empty(&self, name: &str, modes: Modes) -> std::result::Result<bool, Errno> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(
            &self.fd,
            name,
            flags,
            FsMode::from_raw_mode(modes.file & 0o666),
        ) {
            Ok(_fd) => Ok(true),
            Err(Errno::EXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Moves `name` into the directory `to`, keeping its name, unless `to`
    /// holds that name already (`EEXIST`: nothing moves). One rename, so
    /// the file is in exactly one of the two at every moment, and no new
    /// file is made. `ENOENT` when `name` is gone; where the system cannot
    /// refuse to replace, `EINVAL` or `ENOSYS`, and nothing moves.
    pub fn move_to(&self, name: &str, to: &Dir) -> std::result::Result<(), Errno> {
        #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
        {
            rustix::fs::renameat_with(
                &self.fd,
                name,
                &to.fd,
                name,
                rustix::fs::RenameFlags::NOREPLACE,
            )
        }
        #[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
        {
            let _ = (name, to);
            Err(Errno::NOSYS)
        }
    }

    /// Opens `name` for appending (`O_APPEND`: every write lands at the
    /// end, whole, whoever else appends), creating it with the state's
    /// modes when `create` says so; `None` when it does not exist and
    /// `create` does not. Never follows a link and never blocks on a
    /// planted FIFO.
    pub fn open_append(
        &self,
        name: &str,
        modes: Modes,
        create: bool,
    ) -> std::result::Result<Option<File>, Errno> {
        let flags = OFlags::WRONLY
            | OFlags::APPEND
            | OFlags::NOFOLLOW
            | OFlags::NONBLOCK
            | OFlags::NOCTTY
            | OFlags::CLOEXEC;
        match rustix::fs::openat(&self.fd, name, flags, FsMode::empty()) {
            Ok(fd) => return Ok(Some(File::from(fd))),
            Err(Errno::NOENT) if create => {}
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e),
        }
        let created = rustix::fs::openat(
            &self.fd,
            name,
            flags | OFlags::CREATE | OFlags::EXCL,
            FsMode::from_raw_mode(modes.file),
        );
        match created {
            Ok(fd) => {
                // Every writer of the site appends to it, whatever this
                // creator's umask.
                Self::apply_modes_to(&fd, modes.file, modes.gid)
                    .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::ACCESS))?;
                Ok(Some(File::from(fd)))
            }
            // Another writer created it a moment ago.
            Err(Errno::EXIST) => rustix::fs::openat(&self.fd, name, flags, FsMode::empty())
                .map(|fd| Some(File::from(fd))),
            Err(e) => Err(e),
        }
    }

    /// What `name` is (never following a link) and its size; `None` when
    /// it does not exist.
    pub fn kind_and_size(&self, name: &str) -> std::result::Result<Option<(FileType, u64)>, Errno> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some((
                FileType::from_raw_mode(st.st_mode),
                u64::try_from(st.st_size).unwrap_or(0),
            ))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn open_subdir(&self, name: &str) -> Result<Dir> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(&self.fd, name, flags, FsMode::empty()) {
            Ok(fd) => Ok(Dir {
                fd,
                path: self.join(name),
            }),
            Err(Errno::LOOP) | Err(Errno::NOTDIR) => Err(Error::state(
                self.join(name),
                "is a symlink or not a directory; manage never follows links inside the \
                 state directory: remove it and run again",
            )),
            Err(e) => Err(Error::io("open directory", self.join(name), io_err(e))),
        }
    }

    /// Sets a created file's or directory's mode (whatever the umask) and
    /// group.
    pub fn apply_modes_to(fd: impl AsFd, mode: u32, gid: Option<u32>) -> io::Result<()> {
        if let Some(gid) = gid {
            // Best effort: a user outside the group cannot give files to it;
            // a setgid directory already did.
            let _ = rustix::fs::fchown(&fd, None, Some(rustix::fs::Gid::from_raw(gid)));
        }
        rustix::fs::fchmod(&fd, FsMode::from_raw_mode(mode)).map_err(io_err)
    }

    fn apply_modes(&self, mode: u32, gid: Option<u32>) -> Result<()> {
        Self::apply_modes_to(&self.fd, mode, gid)
            .map_err(|e| Error::io("set permissions of", self.path.clone(), e))
    }

    /// Opens `name` for reading; `None` when it does not exist. Never
    /// follows a symlink and never blocks on a planted FIFO.
    pub fn open_read(&self, name: &str) -> Result<Option<File>> {
        match rustix::fs::openat(&self.fd, name, READ_FLAGS, FsMode::empty()) {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(Errno::NOENT) => Ok(None),
            Err(Errno::LOOP) => Err(Error::state(
                self.join(name),
                "is a symlink; manage never follows links inside the state directory: remove it",
            )),
            Err(e) => Err(Error::io("open", self.join(name), io_err(e))),
        }
    }

    /// Opens (creating when missing) a lock file that is never removed.
    pub fn open_lock(&self, name: &str, modes: Modes) -> Result<File> {
        self.open_lock_with(name, modes, OFlags::RDONLY)
    }

    /// Opens (creating when missing) a lock file that is never removed,
    /// for reading and writing its content.
    pub fn open_lock_rw(&self, name: &str, modes: Modes) -> Result<File> {
        self.open_lock_with(name, modes, OFlags::RDWR)
    }

    fn open_lock_with(&self, name: &str, modes: Modes, access: OFlags) -> Result<File> {
        let flags = access | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let mode = FsMode::from_raw_mode(modes.file & 0o777);
        let opened = match rustix::fs::openat(&self.fd, name, flags, mode) {
            // First use: create it with the state's modes, whatever the
            // umask, so every user of the state can open it.
            Err(Errno::NOENT) => match rustix::fs::openat(
                &self.fd,
                name,
                flags | OFlags::CREATE | OFlags::EXCL,
                mode,
            ) {
                Ok(fd) => {
                    let _ = Self::apply_modes_to(&fd, modes.file, modes.gid);
                    Ok(fd)
                }
                Err(Errno::EXIST) => rustix::fs::openat(&self.fd, name, flags, mode),
                Err(e) => Err(e),
            },
            other => other,
        };
        let fd = opened.map_err(|e| match e {
            Errno::LOOP => Error::state(
                self.join(name),
                "is a symlink; manage never follows links inside the state directory: remove it",
            ),
            e => Error::io("open lock file", self.join(name), io_err(e)),
        })?;
        let file = File::from(fd);
        let meta = file
            .metadata()
            .map_err(|e| Error::io("inspect", self.join(name), e))?;
        if !meta.is_file() {
            return Err(Error::state(
                self.join(name),
                "is not a regular file: remove it",
            ));
        }
        narrow_to(&file, meta.mode(), meta.uid(), modes.file);
        Ok(file)
    }

    /// Opens `name` for appending, creating it when missing with `modes`
    /// (whatever the umask) through [`Dir::open_append`]; refuses a
    /// symlink, and anything that is not a regular file, in its place, with
    /// an error naming it. Never blocks on a planted FIFO.
    pub fn open_append_regular(&self, name: &str, modes: Modes) -> Result<File> {
        let file = match self.open_append(name, modes, true) {
            Ok(Some(file)) => file,
            // Created, then removed by someone else before it was opened.
            Ok(None) => {
                return Err(Error::state(
                    self.join(name),
                    "was removed while it was being created: try again",
                ));
            }
            Err(Errno::LOOP) => {
                return Err(Error::state(
                    self.join(name),
                    "is a symlink; manage never follows links inside the state directory: remove it",
                ));
            }
            Err(e) => return Err(Error::io("open", self.join(name), io_err(e))),
        };
        let meta = file
            .metadata()
            .map_err(|e| Error::io("inspect", self.join(name), e))?;
        if !meta.is_file() {
            return Err(Error::state(
                self.join(name),
                "is not a regular file: remove it",
            ));
        }
        narrow_to(&file, meta.mode(), meta.uid(), modes.file);
        Ok(file)
    }

    /// The inode of `name` (not following a link); `None` when it does not
    /// exist.
    pub fn inode_of(&self, name: &str) -> Result<Option<u64>> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st.st_ino)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::io("inspect", self.join(name), io_err(e))),
        }
    }

    /// Creates `name`, which must not exist, for writing.
    pub fn create_new(&self, name: &str, modes: Modes) -> Result<File> {
        let flags =
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            flags,
            FsMode::from_raw_mode(modes.file & 0o777),
        )
        .map_err(|e| Error::io("create", self.join(name), io_err(e)))?;
        Self::apply_modes_to(&fd, modes.file, modes.gid)
            .map_err(|e| Error::io("set permissions of", self.join(name), e))?;
        Ok(File::from(fd))
    }

    /// Reads `name` whole, up to `max` bytes; `None` when it does not exist.
    /// A larger file or one that is not a regular file is an error.
    pub fn read_small(&self, name: &str, max: usize) -> Result<Option<Vec<u8>>> {
        let Some(file) = self.open_read(name)? else {
            return Ok(None);
        };
        read_regular(file, max, &self.join(name)).map(Some)
    }

    /// Replaces `name` atomically with `bytes` (temporary file, rename):
    /// readers see the old content or the new, never a mix. Keeps the
    /// existing file's mode and group. With `durable`, the data and the
    /// rename reach the disk before this returns.
    pub fn replace(&self, name: &str, bytes: &[u8], modes: Modes, durable: bool) -> Result<()> {
        let (mode, gid) = match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            // Keep what an administrator chose, but never a bit another
            // user of the state could have planted to widen access, nor
            // one an older manage gave (others' read): nothing beyond the
            // state's file mode; and the configured group when there is
            // one.
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                (st.st_mode & modes.file, modes.gid.or(Some(st.st_gid)))
            }
            _ => (modes.file, modes.gid),
        };
        let tmp = temp_name(name);
        let keep = Modes {
            file: mode,
            gid,
            ..modes
        };
        // Errors name the file replaced, not the temporary one: that is the
        // file an operator knows (`cannot write …/mode.json: No space left
        // on device`), and the temporary one is gone again.
        let mut file = match self.create_new(&tmp, keep) {
            Ok(f) => f,
            Err(Error::Io { cause, .. }) => {
                let _ = rustix::fs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty());
                return Err(Error::io("write", self.join(name), cause));
            }
            Err(e) => return Err(e),
        };
        let written = file
            .write_all(bytes)
            .and_then(|()| if durable { file.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            let _ = rustix::fs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty());
            return Err(Error::io("write", self.join(name), e));
        }
        drop(file);
        if let Err(e) = rustix::fs::renameat(&self.fd, tmp.as_str(), &self.fd, name) {
            let _ = rustix::fs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty());
            return Err(Error::io("replace", self.join(name), io_err(e)));
        }
        if durable {
            let _ = rustix::fs::fsync(&self.fd);
        }
        Ok(())
    }

    /// Renames `from` to `to` inside this directory.
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        rustix::fs::renameat(&self.fd, from, &self.fd, to)
            .map_err(|e| Error::io("rename", self.join(from), io_err(e)))
    }

    /// Opens the existing file `name` for reading and writing, never
    /// through a symlink and never blocking on a FIFO (a slot file of
    /// `tasks/`); the error as the system gives it (`NOENT`: no such name).
    #[cfg(target_os = "linux")]
    pub fn open_slot(&self, name: &str) -> std::result::Result<File, Errno> {
        let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        rustix::fs::openat(&self.fd, name, flags, FsMode::empty()).map(File::from)
    }

    /// Whether `name` names the file with this device and inode now.
    #[cfg(target_os = "linux")]
    pub fn still_names(&self, name: &str, dev: u64, ino: u64) -> bool {
        rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| (st.st_dev, st.st_ino) == (dev, ino))
    }

    /// Renames `from` to `to` unless `to` exists; the error as the system
    /// gives it (`EXIST`: `to` is taken).
    #[cfg(target_os = "linux")]
    pub fn rename_noreplace(&self, from: &str, to: &str) -> std::result::Result<(), Errno> {
        rustix::fs::renameat_with(
            &self.fd,
            from,
            &self.fd,
            to,
            rustix::fs::RenameFlags::NOREPLACE,
        )
    }

    /// Reads the open `file`, opened as `name`, whole (up to `max` bytes,
    /// as [`read_regular`]) — or `Ok(None)` when, once read, `name` no
    /// longer names that file: it was renamed or removed meanwhile, so
    /// what was read may belong to whoever uses the file now.
    pub fn read_still_named(&self, name: &str, file: File, max: usize) -> Result<Option<Vec<u8>>> {
        let path = self.join(name);
        let st = rustix::fs::fstat(&file).map_err(|e| Error::io("inspect", &path, io_err(e)))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(Error::state(path, "is not a regular file: remove it"));
        }
        // Read first, then look at the name: a read that failed (the file
        // grew past `max` or changed under it) is also only this task's
        // when the name still leads to the file — a slot rewritten for the
        // next task while we read is not an unreadable task.
        let read = read_open(file, st.st_size as usize, max, &path);
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(now) if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino) => read.map(Some),
            Ok(_) | Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::io("inspect", path, io_err(e))),
        }
    }

    /// Removes `name`; `false` when it was already gone.
    pub fn remove(&self, name: &str) -> Result<bool> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(Error::io("remove", self.join(name), io_err(e))),
        }
    }

    /// What identifies the current content of `name` without reading it:
    /// inode, size, change and modification times (a file replaced by
    /// rename always differs). `None` when it does not exist.
    pub fn version_of(&self, name: &str) -> Result<Option<[i64; 6]>> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some([
                st.st_ino as i64,
                st.st_size,
                st.st_mtime,
                st.st_mtime_nsec as i64,
                st.st_ctime,
                st.st_ctime_nsec as i64,
            ])),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::io("inspect", self.join(name), io_err(e))),
        }
    }

    /// Whether `name` exists (as anything, links included).
    pub fn exists(&self, name: &str) -> Result<bool> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(Error::io("inspect", self.join(name), io_err(e))),
        }
    }

    /// Calls `f` with each name in this directory (`.` and `..` left out)
    /// as raw bytes, allocating nothing per entry.
    pub fn each_name(&self, mut f: impl FnMut(&[u8])) -> Result<()> {
        let fd = rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            FsMode::empty(),
        )
        .map_err(|e| Error::io("read directory", self.path.clone(), io_err(e)))?;
        // The descriptor just opened is the listing's own: `Dir::new` reads
        // from it (`read_from` would open `.` once more and ask its flags).
        let dir = rustix::fs::Dir::new(fd)
            .map_err(|e| Error::io("read directory", self.path.clone(), io_err(e)))?;
        for entry in dir {
            let entry =
                entry.map_err(|e| Error::io("read directory", self.path.clone(), io_err(e)))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                f(name);
            }
        }
        Ok(())
    }

    /// The names in this directory, `.` and `..` left out.
    pub fn names(&self) -> Result<Vec<OsString>> {
        let mut names = Vec::new();
        self.each_name(|n| names.push(OsString::from_vec(n.to_vec())))?;
        Ok(names)
    }
}

/// What identifies an open file to the kernel's lock table: its device
/// (major, minor) and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    major: u32,
    minor: u32,
    inode: u64,
}

impl FileId {
    /// The id of `file`; `None` when it cannot be inspected.
    pub fn of(file: &File) -> Option<FileId> {
        let st = rustix::fs::fstat(file).ok()?;
        Some(FileId {
            major: rustix::fs::major(st.st_dev),
            minor: rustix::fs::minor(st.st_dev),
            inode: st.st_ino,
        })
    }
}

/// The processes that hold an `flock` on the file `id` (not those waiting
/// for one), each with its real uid when known: on Linux from
/// `/proc/locks`, which names the process that took the lock (a child
/// that inherited it holds it too). Empty where the system does not tell.
///
/// `/proc/locks` is not one snapshot: each `read(2)` of it returns at most
/// a page, taken under the kernel's lock-table lock, and the next read
/// resumes at an index, so a lock another process releases in between
/// shifts the table and the entry at the seam is skipped. So it is read in
/// reads of a page or more (never a small first probe: a table of up to a
/// page is then one consistent read), and a larger table is read again
/// until two passes agree, at most [`LOCK_TABLE_PASSES`] times, taking
/// every holder any pass saw.
pub(crate) fn flock_holders(id: FileId) -> Vec<(u32, Option<u32>)> {
    let mut holders: Vec<(u32, Option<u32>)> = Vec::new();
    let mut last: Option<Vec<u8>> = None;
    for _ in 0..LOCK_TABLE_PASSES {
        let Some((table, reads)) = read_lock_table() else {
            break;
        };
        for pid in holders_in(&table, id) {
            if !holders.iter().any(|(p, _)| *p == pid) {
                holders.push((pid, crate::process::uid_of(pid)));
            }
        }
        if reads <= 1 || last.as_deref() == Some(table.as_slice()) {
            break;
        }
        last = Some(table);
    }
    holders
}

/// How many times [`flock_holders`] reads a lock table that takes more
/// than one read.
const LOCK_TABLE_PASSES: usize = 4;

/// `/proc/locks` whole, read in reads of 64 KiB (the kernel fills at most
/// a page each), and how many reads returned something.
fn read_lock_table() -> Option<(Vec<u8>, usize)> {
    let mut f = File::open("/proc/locks").ok()?;
    let mut table = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut reads = 0;
    loop {
        match f.read(&mut chunk) {
            Ok(0) => return Some((table, reads)),
            Ok(n) => {
                reads += 1;
                table.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// The pids a `/proc/locks` table shows holding an `flock` on `id`.
fn holders_in(table: &[u8], id: FileId) -> Vec<u32> {
    let mut pids = Vec::new();
    for line in String::from_utf8_lossy(table).lines() {
        // `3: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF`; a waiter's
        // line has `->` after the number.
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, "FLOCK", _, _, pid, file, ..] = fields.as_slice() else {
            continue;
        };
        let mut parts = file.split(':');
        let (Some(major), Some(minor), Some(inode), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let same = u32::from_str_radix(major, 16).ok() == Some(id.major)
            && u32::from_str_radix(minor, 16).ok() == Some(id.minor)
            && inode.parse::<u64>().ok() == Some(id.inode);
        match pid.parse::<u32>() {
            // 0: a process outside this pid namespace.
            Ok(pid) if same && pid != 0 && !pids.contains(&pid) => pids.push(pid),
            _ => {}
        }
    }
    pids
}

/// Takes from an open lock file every permission beyond `allowed` (the
/// state's file mode) — an older manage created lock files readable, and
/// so lockable, by every user — when this user may: its owner, or root.
/// Never widens anything. Best effort: a file of another member of the
/// group stays as it is, and `offline doctor` names it with the `chmod`
/// that fixes it.
fn narrow_to(file: &File, mode: u32, owner: u32, allowed: u32) {
    let mode = mode & 0o7777;
    if mode & !allowed == 0 {
        return;
    }
    let me = rustix::process::geteuid();
    if me.is_root() || me.as_raw() == owner {
        let _ = rustix::fs::fchmod(file, FsMode::from_raw_mode(mode & allowed));
    }
}

/// Reads an open file whole, up to `max` bytes, checking it is a regular
/// file.
pub(crate) fn read_regular(file: File, max: usize, path: &Path) -> Result<Vec<u8>> {
    let meta = file.metadata().map_err(|e| Error::io("inspect", path, e))?;
    if !meta.is_file() {
        return Err(Error::state(path, "is not a regular file: remove it"));
    }
    read_open(file, meta.len() as usize, max, path)
}

/// Reads an open regular file of about `size` bytes whole, up to `max`:
/// one `read` when it still has `size` bytes (the byte asked for beyond
/// them says it ends there), more when it changed since.
fn read_open(mut file: File, size: usize, max: usize, path: &Path) -> Result<Vec<u8>> {
    let want = size.min(max) + 1;
    let mut buf = vec![0; want];
    let n = loop {
        match file.read(&mut buf) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", path, e)),
        }
    };
    buf.truncate(n);
    if n != size || size >= want {
        (&mut file)
            .take((max as u64 + 1).saturating_sub(n as u64))
            .read_to_end(&mut buf)
            .map_err(|e| Error::io("read", path, e))?;
    }
    if buf.len() > max {
        return Err(Error::state(
            path,
            format!(
                "is larger than {max} bytes, which no state file of manage is: it is not ours or it is corrupt"
            ),
        ));
    }
    Ok(buf)
}

/// A fresh temporary name next to `name`: hidden, unique in this process
/// and across processes (pid).
pub(crate) fn temp_name(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(".{name}.{}.{n}.tmp", std::process::id())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    fn me_gid() -> u32 {
        rustix::process::getegid().as_raw()
    }

    #[test]
    fn nothing_is_created_open_to_others_but_search_on_the_state_directory() {
        for gid in [None, Some(me_gid())] {
            let m = Modes::for_group(gid);
            assert_eq!(m.file & 0o007, 0, "{m:?}");
            assert_eq!(m.dir & 0o007, 0, "{m:?}");
            assert_eq!(
                m.root & 0o007,
                0o001,
                "nginx needs o+x, nothing more: {m:?}"
            );
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = Dir::open_root(tmp.path()).unwrap();
        let modes = Modes::for_group(None);
        drop(root.open_lock("gate", modes).unwrap());
        drop(root.create_new("x.task", modes).unwrap());
        root.replace("mode.json", b"{}", modes, false).unwrap();
        let sub = root.subdir("tasks", modes).unwrap();
        sub.create_empty("entry", modes).unwrap();
        for (name, want) in [
            ("gate", 0o600),
            ("x.task", 0o600),
            ("mode.json", 0o600),
            ("tasks", 0o700),
        ] {
            assert_eq!(mode_of(&tmp.path().join(name)), want, "{name}");
        }
        assert_eq!(
            mode_of(&tmp.path().join("tasks/entry")) & 0o077,
            0,
            "a session entry's mode is the umask's, within 0600"
        );
    }

    #[test]
    fn a_lock_file_an_older_manage_left_open_to_others_is_narrowed_by_its_next_opener() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Dir::open_root(tmp.path()).unwrap();
        let (gate, instance) = (tmp.path().join("gate"), tmp.path().join("a.instance"));
        for (path, old) in [(&gate, 0o644), (&instance, 0o664)] {
            std::fs::write(path, "").unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(old)).unwrap();
        }
        drop(root.open_lock("gate", Modes::for_group(None)).unwrap());
        assert_eq!(mode_of(&gate), 0o600);
        drop(
            root.open_lock_rw("a.instance", Modes::for_group(Some(me_gid())))
                .unwrap(),
        );
        assert_eq!(mode_of(&instance), 0o660, "the group keeps what it had");
        // Never widened: a mode narrower than the state's stays.
        std::fs::set_permissions(&instance, std::fs::Permissions::from_mode(0o640)).unwrap();
        drop(
            root.open_lock("a.instance", Modes::for_group(Some(me_gid())))
                .unwrap(),
        );
        assert_eq!(mode_of(&instance), 0o640);
        // The record an older manage wrote 0644 is replaced closed.
        let record = tmp.path().join("mode.json");
        std::fs::write(&record, "{}").unwrap();
        std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o644)).unwrap();
        root.replace("mode.json", b"{}", Modes::for_group(None), false)
            .unwrap();
        assert_eq!(mode_of(&record), 0o600);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_holder_of_an_flock_is_named_and_a_free_file_has_none() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Dir::open_root(tmp.path()).unwrap();
        let held = root.open_lock("gate", Modes::for_group(None)).unwrap();
        let id = FileId::of(&held).unwrap();
        assert!(flock_holders(id).is_empty());
        fs2::FileExt::try_lock_shared(&held).unwrap();
        let me = std::process::id();
        let uid = rustix::process::getuid().as_raw();
        assert_eq!(flock_holders(id), [(me, Some(uid))]);
        drop(held);
        assert!(flock_holders(id).is_empty(), "released with its descriptor");
    }

    /// The kernel's lock table changes while it is read, as other
    /// processes take and release locks: the holder of a lock is named all
    /// the same, every time (a consistent read of the table, not luck).
    #[cfg(target_os = "linux")]
    #[test]
    fn the_holder_of_a_lock_is_named_while_other_locks_come_and_go() {
        let tmp = tempfile::tempdir().unwrap();
        let held = File::create(tmp.path().join("held")).unwrap();
        fs2::FileExt::try_lock_shared(&held).unwrap();
        let id = FileId::of(&held).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn = {
            let stop = std::sync::Arc::clone(&stop);
            let files: Vec<File> = (0..30)
                .map(|i| File::create(tmp.path().join(format!("churn-{i}"))).unwrap())
                .collect();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for f in &files {
                        fs2::FileExt::try_lock_exclusive(f).unwrap();
                    }
                    for f in &files {
                        fs2::FileExt::unlock(f).unwrap();
                    }
                }
            })
        };
        let me = std::process::id();
        let missed = (0..500)
            .filter(|_| !flock_holders(id).iter().any(|(pid, _)| *pid == me))
            .count();
        stop.store(true, Ordering::Relaxed);
        churn.join().unwrap();
        assert_eq!(missed, 0, "the holder was missed in {missed} of 500 reads");
    }
}
