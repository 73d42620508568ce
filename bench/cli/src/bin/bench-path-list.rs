//! The baseline of `manage --help`: prints the `manage-*` names in the PATH
//! directories and does nothing else — the floor of any listing of external
//! commands. Reads as cheaply as it can (getdents64 into one buffer, only
//! the names with the prefix looked at, a directory met twice read once),
//! so `--help` is set against the work itself, not against a slow
//! reference. Built with the same profile as `bench-manage`.
use std::io::Write;

const PREFIX: &[u8] = b"manage-";

fn main() {
    let mut out = std::io::stdout().lock();
    let Some(path) = std::env::var_os("PATH") else {
        return;
    };
    let mut seen: Vec<(u64, u64)> = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(32 * 1024);
    for dir in std::env::split_paths(&path) {
        list(&dir, &mut seen, &mut buf, &mut |name| {
            let _ = out.write_all(name);
            let _ = out.write_all(b"\n");
        });
    }
    let _ = out.flush();
}

#[cfg(target_os = "linux")]
fn list(
    dir: &std::path::Path,
    seen: &mut Vec<(u64, u64)>,
    buf: &mut Vec<u8>,
    each: &mut dyn FnMut(&[u8]),
) {
    use rustix::fs::{Mode, OFlags, RawDir};
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
    if seen.contains(&(st.st_dev, st.st_ino)) {
        return;
    }
    seen.push((st.st_dev, st.st_ino));
    let mut entries = RawDir::new(&fd, buf.spare_capacity_mut());
    while let Some(Ok(entry)) = entries.next() {
        let name = entry.file_name().to_bytes();
        if name.starts_with(PREFIX) {
            each(name);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn list(
    dir: &std::path::Path,
    seen: &mut Vec<(u64, u64)>,
    _buf: &mut Vec<u8>,
    each: &mut dyn FnMut(&[u8]),
) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    if seen.contains(&(meta.dev(), meta.ino())) {
        return;
    }
    seen.push((meta.dev(), meta.ino()));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if name.as_bytes().starts_with(PREFIX) {
            each(name.as_bytes());
        }
    }
}
