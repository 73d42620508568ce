//! Scratch directories for one test, reachable by every user; snapshots of
//! a directory tree, to prove nothing outside the state directory was
//! touched; a tiny tmpfs, a disk that fills up; and the modes and owners of
//! what is in them.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A scratch directory for one test, reachable by every user (a plain
/// temporary directory is 0700, which would stop the unprivileged user at
/// the door and prove nothing). Removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Scratch {
    /// A fresh scratch directory, mode 0755.
    pub fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("manage-tests-")
            .tempdir()
            .expect("a temporary directory");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod the temporary directory");
        Scratch { dir }
    }

    /// A fresh scratch directory holding a `manage.toml` of `text`, the
    /// configuration of a site whose runs start there.
    pub fn with_manage_toml(text: &str) -> Scratch {
        let scratch = Scratch::new();
        std::fs::write(scratch.path().join("manage.toml"), text).expect("write manage.toml");
        scratch
    }

    /// The scratch directory itself: the state directory's parent.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Where the state directory goes (not created).
    pub fn state(&self) -> PathBuf {
        self.path().join("state")
    }

    /// A directory outside the state, for planted links to point at
    /// (created on first use).
    pub fn outside(&self) -> PathBuf {
        let p = self.path().join("outside");
        if !p.exists() {
            std::fs::create_dir(&p).expect("create the outside directory");
        }
        p
    }
}

/// Every entry under `root` (not following links), with what it is and
/// holds: `dir 755`, `file 644 <len> <content>`, `link -> target`,
/// `fifo 644`, … — so comparing two snapshots shows anything created,
/// removed, written or re-targeted. Paths under any of `skip` are left out.
pub fn snapshot(root: &Path, skip: &[&Path]) -> BTreeMap<PathBuf, String> {
    fn walk(p: &Path, skip: &[&Path], out: &mut BTreeMap<PathBuf, String>) {
        if skip.iter().any(|s| p.starts_with(s)) {
            return;
        }
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            return;
        };
        let ft = meta.file_type();
        let mode = meta.permissions().mode() & 0o7777;
        let what = if ft.is_symlink() {
            let target = std::fs::read_link(p).unwrap_or_default();
            format!("link -> {}", target.display())
        } else if ft.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(p)
                .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            names.sort();
            for child in names {
                walk(&child, skip, out);
            }
            format!("dir {mode:o}")
        } else if ft.is_file() {
            let content = std::fs::read(p).unwrap_or_default();
            format!(
                "file {mode:o} {} {:?}",
                content.len(),
                String::from_utf8_lossy(&content)
            )
        } else if ft.is_fifo() {
            format!("fifo {mode:o}")
        } else {
            format!("other {mode:o}")
        };
        out.insert(p.to_path_buf(), what);
    }
    let mut out = BTreeMap::new();
    walk(root, skip, &mut out);
    out
}

/// The names in directory `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// A string unique to this test run, for names nobody else uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

/// A tiny tmpfs for one test — a disk that fills up — mounted by root and
/// unmounted when dropped.
#[derive(Debug)]
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `pages` memory pages (16: 64 KiB on most machines,
    /// `mount -t tmpfs -o nr_blocks=16`) at `path`, created, mode 0755. When not root, or when the
    /// mount is refused (a container without `CAP_SYS_ADMIN`), says so on
    /// stderr (visible in the test's output) and returns `None`, and the
    /// test skips.
    pub fn mount(test: &str, path: &Path, pages: u64) -> Option<Tmpfs> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIPPED {test}: it mounts a tiny tmpfs to fill it up, which needs root");
            return None;
        }
        std::fs::create_dir_all(path).expect("create the mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("nr_blocks={pages},mode=0755"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .expect("run mount");
        if !out.status.success() {
            eprintln!(
                "SKIPPED {test}: root cannot mount a tmpfs here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its free pages (`statvfs`: tmpfs counts in pages).
    pub fn free_pages(&self) -> u64 {
        rustix::fs::statvfs(&self.path)
            .expect("statvfs the tmpfs")
            .f_bavail
    }

    /// The size of its pages, the unit it allocates in.
    pub fn page_size(&self) -> u64 {
        rustix::fs::statvfs(&self.path)
            .expect("statvfs the tmpfs")
            .f_bsize
    }

    /// Fills it with the file `name` until no page is left (asserted);
    /// returns the file's path.
    pub fn fill(&self, name: &str) -> PathBuf {
        let path = self.path.join(name);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("create the filler");
        let chunk = vec![0xa5u8; self.page_size() as usize];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("fill {}: {e}", path.display()),
            }
        }
        assert_eq!(self.free_pages(), 0, "{} is full", self.path.display());
        path
    }

    /// Frees exactly `pages` pages of the filler at `path` (asserted).
    pub fn free(&self, path: &Path, pages: u64) {
        let before = self.free_pages();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open the filler");
        let len = f.metadata().expect("stat the filler").len();
        let page = self.page_size();
        f.set_len((len - len % page).saturating_sub(pages * page))
            .expect("truncate the filler");
        assert_eq!(self.free_pages(), before + pages, "freed {pages} page(s)");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still has a file open there: detach it now, the
            // kernel frees it when the last user goes.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// `chown uid:gid path` (not following a link).
pub fn chown(path: &Path, uid: Option<u32>, gid: Option<u32>) {
    std::os::unix::fs::lchown(path, uid, gid)
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

/// `chmod mode path`.
pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Mode (the low 12 bits), owner and group of `path` (not following a link).
pub fn meta(path: &Path) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("inspect {}: {e}", path.display()));
    (m.mode() & 0o7777, m.uid(), m.gid())
}
