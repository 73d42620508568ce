//! External commands: executables named `manage-<name>` on `PATH`, found
//! one name at a time for dispatch, or all at once for the listings.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The prefix of external commands' executables.
pub const EXTERNAL_PREFIX: &str = "manage-";

/// The executable `manage-<name>` on PATH, if any.
pub(super) fn find_external(name: &str) -> Option<PathBuf> {
    if name.is_empty() || name.contains('/') || name.contains('\0') {
        return None;
    }
    let file = format!("{EXTERNAL_PREFIX}{name}");
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(&file))
        .find(|p| is_executable(p))
}

/// Whether `p` is a file someone may execute.
fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Every `manage-*` executable on PATH, by name, the first on PATH winning.
///
/// Only names with the prefix are looked at (one `stat` each), and a
/// directory met twice — `/bin` and `/usr/bin` are one on a merged-`/usr`
/// system — is read once: a Debian server's default PATH holds about 2,600
/// names, and reading them is most of what `--help` costs.
pub(crate) fn externals() -> BTreeMap<String, PathBuf> {
    match std::env::var_os("PATH") {
        Some(path) => externals_in(&path, &mut Listing::default()),
        None => BTreeMap::new(),
    }
}

/// [`externals`] in the directories of `path` (a PATH value).
fn externals_in(path: &OsStr, listing: &mut Listing) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    for dir in std::env::split_paths(path) {
        listing.prefixed_names(&dir, |file| {
            let Some(name) = file.to_str().and_then(|f| f.strip_prefix(EXTERNAL_PREFIX)) else {
                return;
            };
            if name.is_empty() || found.contains_key(name) {
                return;
            }
            let p = dir.join(file);
            if is_executable(&p) {
                found.insert(name.to_owned(), p);
            }
        });
    }
    found
}

/// Reads directories for names with [`EXTERNAL_PREFIX`], each directory
/// once.
#[derive(Default)]
struct Listing {
    /// The directories read so far, by device and inode.
    seen: Vec<(u64, u64)>,
    /// The buffer `getdents64` fills (Linux).
    #[cfg(target_os = "linux")]
    buf: Vec<u8>,
}

impl Listing {
    /// Calls `each` with every name in `dir` that starts with the prefix,
    /// unless `dir` was read already. A directory that cannot be read is
    /// skipped, as the shell skips it.
    #[cfg(target_os = "linux")]
    fn prefixed_names(&mut self, dir: &Path, mut each: impl FnMut(&OsStr)) {
        use rustix::fs::{Mode, OFlags, RawDir};
        use std::os::unix::ffi::OsStrExt;
        /// Enough for a few hundred names per `getdents64`.
        const BUF: usize = 32 * 1024;
        if dir.as_os_str().is_empty() {
            return;
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let Ok(fd) = rustix::fs::open(dir, flags, Mode::empty()) else {
            return;
        };
        let Ok(st) = rustix::fs::fstat(&fd) else {
            return;
        };
        if !self.first_visit(st.st_dev, st.st_ino) {
            return;
        }
        if self.buf.capacity() < BUF {
            self.buf = Vec::with_capacity(BUF);
        }
        let mut entries = RawDir::new(&fd, self.buf.spare_capacity_mut());
        while let Some(Ok(entry)) = entries.next() {
            let name = entry.file_name().to_bytes();
            if name.starts_with(EXTERNAL_PREFIX.as_bytes()) {
                each(OsStr::from_bytes(name));
            }
        }
    }

    /// [`prefixed_names`](Self::prefixed_names) where there is no
    /// `getdents64`: std's directory reading.
    #[cfg(not(target_os = "linux"))]
    fn prefixed_names(&mut self, dir: &Path, mut each: impl FnMut(&OsStr)) {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(dir) else {
            return;
        };
        if !meta.is_dir() || !self.first_visit(meta.dev(), meta.ino()) {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if name.as_bytes().starts_with(EXTERNAL_PREFIX.as_bytes()) {
                each(&name);
            }
        }
    }

    /// Whether the directory `(dev, ino)` is met for the first time (and
    /// so is read).
    fn first_visit(&mut self, dev: u64, ino: u64) -> bool {
        if self.seen.contains(&(dev, ino)) {
            return false;
        }
        self.seen.push((dev, ino));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file(dir: &Path, name: &str, mode: u32) {
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn externals_are_the_executable_prefixed_names_first_on_path_each_directory_read_once() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        file(&a, "manage-deploy", 0o755);
        file(&a, "manage-notes", 0o644);
        file(&a, "manage-", 0o755);
        file(&a, "other-tool", 0o755);
        file(&b, "manage-deploy", 0o755);
        file(&b, "manage-backup", 0o755);
        // `a` again under another name, as /bin is /usr/bin on Debian.
        let again = tmp.path().join("again");
        std::os::unix::fs::symlink(&a, &again).unwrap();
        let missing = tmp.path().join("missing");
        let path = std::env::join_paths([&a, &missing, &again, &b, &a]).unwrap();
        let mut listing = Listing::default();
        let found = externals_in(&path, &mut listing);
        assert_eq!(
            found,
            BTreeMap::from([
                ("backup".to_owned(), b.join("manage-backup")),
                ("deploy".to_owned(), a.join("manage-deploy")),
            ])
        );
        assert_eq!(listing.seen.len(), 2, "a and b, each read once");
    }
}
