//! Who and where this process is (`user@host`, pid, the name it was run
//! by): what every mode record and task record names, looked up once per
//! process.

use std::ffi::CStr;
use std::fmt;
use std::sync::OnceLock;

/// The identity of this process, as records store it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user name (or the numeric uid when it has no name).
    pub user: String,
    /// The host name.
    pub host: String,
    /// The process id.
    pub pid: u32,
}

impl Identity {
    /// This process's identity, computed once.
    pub fn current() -> &'static Identity {
        static CURRENT: OnceLock<Identity> = OnceLock::new();
        // The pid is not cached across fork: callers in a forked child
        // without exec are not supported (a child execs a new binary).
        CURRENT.get_or_init(|| Identity {
            user: user_name(rustix::process::getuid().as_raw()),
            host: host_name(),
            pid: std::process::id(),
        })
    }

    /// `user@host`.
    pub fn user_at_host(&self) -> String {
        format!("{}@{}", self.user, self.host)
    }
}

/// The name this process was run by, for messages that name a command to
/// type: the file name of `argv[0]` (`mysite` for a site's own binary,
/// `manage` for the stock one), `manage` when there is none.
pub fn program_name() -> String {
    std::env::args_os()
        .next()
        .as_deref()
        .map(std::path::Path::new)
        .and_then(std::path::Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "manage".to_owned())
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.user, self.host)
    }
}

fn host_name() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy().into_owned();
    if name.is_empty() {
        "localhost".to_owned()
    } else {
        name
    }
}

/// The name of `uid` from the user database, or the number itself.
/// `/etc/passwd` is read first: the full lookup through NSS (nscd,
/// `nsswitch.conf`) costs a tracked command's start-up a tenth of a
/// millisecond; it is the fallback for users not in the file (LDAP).
pub fn user_name(uid: u32) -> String {
    if let Some(name) = passwd_name(uid) {
        return name;
    }
    nss_user_name(uid)
}

/// Line by line, stopping at the user's: one read for the usual file
/// (neither its size asked nor its end read when the user comes first).
fn passwd_name(uid: u32) -> Option<String> {
    use std::io::BufRead;
    let file = std::fs::File::open("/etc/passwd").ok()?;
    let mut lines = std::io::BufReader::with_capacity(8192, file);
    let want = uid.to_string();
    let mut line = Vec::new();
    loop {
        line.clear();
        if lines.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        let Ok(text) = std::str::from_utf8(&line) else {
            continue;
        };
        let mut fields = text.trim_end_matches('\n').split(':');
        let (Some(name), Some(_password), Some(id)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if id == want && !name.is_empty() {
            return Some(name.to_owned());
        }
    }
}

fn nss_user_name(uid: u32) -> String {
    passwd_of(uid)
        .map(|p| p.name)
        .unwrap_or_else(|| uid.to_string())
}

/// A user as the user database knows it.
struct PasswdEntry {
    name: String,
    gid: u32,
}

/// `getpwuid_r(uid)`.
fn passwd_of(uid: u32) -> Option<PasswdEntry> {
    let mut buf = vec![0u8; 16384];
    let mut pwd: libc::passwd = unsafe_zeroed_passwd();
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives the use of
    // the strings it backs, which are copied out before it is dropped.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded, so pw_name is a NUL-terminated string in `buf`.
    let name = unsafe { CStr::from_ptr(pwd.pw_name) }
        .to_string_lossy()
        .into_owned();
    Some(PasswdEntry {
        name,
        gid: pwd.pw_gid,
    })
}

/// A group as the group database knows it: its name and listed members.
struct GroupEntry {
    name: String,
    members: Vec<String>,
}

/// `getgrgid_r(gid)`.
fn group_of(gid: u32) -> Option<GroupEntry> {
    let mut buf = vec![0u8; 65536];
    // SAFETY: libc::group is plain old data; all-zero is a valid value.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call.
    let rc = unsafe {
        libc::getgrgid_r(
            gid,
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || grp.gr_name.is_null() {
        return None;
    }
    // SAFETY: getgrgid_r succeeded: gr_name is a NUL-terminated string and
    // gr_mem a NULL-terminated array of them, all in `buf`.
    unsafe {
        let name = CStr::from_ptr(grp.gr_name).to_string_lossy().into_owned();
        let mut members = Vec::new();
        let mut m = grp.gr_mem;
        while !m.is_null() && !(*m).is_null() {
            members.push(CStr::from_ptr(*m).to_string_lossy().into_owned());
            m = m.add(1);
        }
        Some(GroupEntry { name, members })
    }
}

/// The gid of group `name`, if the group database knows it.
pub fn group_id(name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Some(gid);
    }
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 16384];
    // SAFETY: libc::group is plain old data; all-zero is a valid value.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(grp.gr_gid)
}

/// The uid of user `name` (or of a number given as text), if the user
/// database knows it.
pub fn user_id(name: &str) -> Option<u32> {
    if let Ok(uid) = name.parse::<u32>() {
        return Some(uid);
    }
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 16384];
    let mut pwd: libc::passwd = unsafe_zeroed_passwd();
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(pwd.pw_uid)
}

/// The name of group `gid`, or the number itself.
pub fn group_name(gid: u32) -> String {
    group_of(gid)
        .map(|g| g.name)
        .unwrap_or_else(|| gid.to_string())
}

/// Whether user `uid` belongs to group `gid`: as its primary group, or as
/// a member the group database lists.
pub fn user_in_group(uid: u32, gid: u32) -> bool {
    let Some(user) = passwd_of(uid) else {
        return false;
    };
    user.gid == gid || group_of(gid).is_some_and(|g| g.members.contains(&user.name))
}

fn unsafe_zeroed_passwd() -> libc::passwd {
    // SAFETY: libc::passwd is plain old data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_this_process() {
        let me = Identity::current();
        assert_eq!(me.pid, std::process::id());
        assert!(!me.user.is_empty());
        assert!(!me.host.is_empty());
        assert_eq!(me.to_string(), format!("{}@{}", me.user, me.host));
    }

    #[test]
    fn root_is_named_root_and_unknown_uids_are_numbers() {
        assert_eq!(user_name(0), "root");
        assert_eq!(user_name(3_999_999_999), "3999999999");
        assert_eq!(group_id("0"), Some(0));
        assert_eq!(group_id("no-such-group-here"), None);
    }
}
