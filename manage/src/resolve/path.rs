//! External commands: executables named `manage-<name>` on `PATH`, found
//! one name at a time for dispatch, or all at once for the listings.

use std::collections::BTreeMap;
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
pub(crate) fn externals() -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let Some(path) = std::env::var_os("PATH") else {
        return found;
    };
    for dir in std::env::split_paths(&path) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let file = e.file_name();
            use std::os::unix::ffi::OsStrExt;
            if !file.as_bytes().starts_with(EXTERNAL_PREFIX.as_bytes()) {
                continue;
            }
            let Some(name) = file.to_str().and_then(|f| f.strip_prefix(EXTERNAL_PREFIX)) else {
                continue;
            };
            if name.is_empty() || found.contains_key(name) {
                continue;
            }
            let p = e.path();
            if is_executable(&p) {
                found.insert(name.to_owned(), p);
            }
        }
    }
    found
}
