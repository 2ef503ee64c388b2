//! `runners.local-process.user`: the user a queue's `local-process` jobs
//! run as, looked up once at start-up (`name`, `uid` or `uid:gid`, or
//! `name:gid`).

use std::ffi::{CStr, CString};
use std::path::PathBuf;

/// A user jobs run as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobUser {
    /// As the config writes it.
    pub written: String,
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// Every group the process gets: the primary one, and the user's
    /// supplementary groups when the user is in the user database.
    pub groups: Vec<u32>,
    /// The user's name, when the user database knows the uid.
    pub name: Option<String>,
    /// The user's home directory, when the user database knows it.
    pub home: Option<PathBuf>,
}

impl JobUser {
    /// Looks `written` up on this machine; the error says what is wrong.
    pub fn resolve(written: &str) -> Result<JobUser, String> {
        let written = written.trim();
        let (user, group) = match written.split_once(':') {
            Some((user, group)) => (user, Some(group)),
            None => (written, None),
        };
        let gid = group
            .map(|g| {
                g.parse::<u32>()
                    .map_err(|_| format!("`{written}`: the group {g} must be a number (gid)"))
            })
            .transpose()?;
        let entry = match user.parse::<u32>() {
            Ok(uid) => Passwd::by_uid(uid)?,
            Err(_) => Some(
                Passwd::by_name(user)?
                    .ok_or_else(|| format!("there is no user named {user} on this machine"))?,
            ),
        };
        let uid = match (&entry, user.parse::<u32>()) {
            (Some(entry), _) => entry.uid,
            (None, Ok(uid)) => uid,
            (None, Err(_)) => unreachable!("a name without an entry was refused above"),
        };
        let gid = match (gid, &entry) {
            (Some(gid), _) => gid,
            (None, Some(entry)) => entry.gid,
            (None, None) => {
                return Err(format!(
                    "uid {uid} is not in this machine's user database, so it has no group: write {uid}:GID"
                ));
            }
        };
        let mut groups = vec![gid];
        if let Some(entry) = &entry {
            for group in entry.groups(gid) {
                if !groups.contains(&group) {
                    groups.push(group);
                }
            }
        }
        Ok(JobUser {
            written: written.to_string(),
            uid,
            gid,
            groups,
            name: entry.as_ref().map(|e| e.name.clone()),
            home: entry.map(|e| e.home),
        })
    }

    /// "launch-jobs (uid 1500)", or "uid 1500".
    pub fn describe(&self) -> String {
        match &self.name {
            Some(name) => format!("{name} (uid {})", self.uid),
            None => format!("uid {}", self.uid),
        }
    }
}

/// An entry of the user database.
struct Passwd {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

impl Passwd {
    fn by_name(name: &str) -> Result<Option<Passwd>, String> {
        let c_name = CString::new(name)
            .map_err(|_| format!("`{name}` is not a user name (it holds NUL)"))?;
        lookup(|pwd, buf, len, result| {
            // SAFETY: every pointer is valid for the call; `buf` has `len` bytes.
            unsafe { libc::getpwnam_r(c_name.as_ptr(), pwd, buf, len, result) }
        })
        .map_err(|e| format!("looking up user {name}: {e}"))
    }

    fn by_uid(uid: u32) -> Result<Option<Passwd>, String> {
        lookup(|pwd, buf, len, result| {
            // SAFETY: as above.
            unsafe { libc::getpwuid_r(uid, pwd, buf, len, result) }
        })
        .map_err(|e| format!("looking up uid {uid}: {e}"))
    }

    /// The user's groups (with `gid`), from the group database.
    fn groups(&self, gid: u32) -> Vec<u32> {
        let Ok(name) = CString::new(self.name.clone()) else {
            return Vec::new();
        };
        let mut count: libc::c_int = 64;
        loop {
            let mut groups = vec![0 as libc::gid_t; count as usize];
            let mut n = count;
            // SAFETY: `groups` has room for `n` ids; getgrouplist writes at
            // most that many and sets `n` to how many there are.
            let found =
                unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
            if found >= 0 {
                groups.truncate(n.max(0) as usize);
                return groups;
            }
            if n <= count || n > 65_536 {
                return Vec::new();
            }
            count = n;
        }
    }
}

/// Calls a `getpw*_r` function with a growing buffer.
fn lookup(
    call: impl Fn(
        *mut libc::passwd,
        *mut libc::c_char,
        libc::size_t,
        *mut *mut libc::passwd,
    ) -> libc::c_int,
) -> Result<Option<Passwd>, std::io::Error> {
    let mut size = 1024;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: a zeroed passwd is a valid value to be overwritten.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let code = call(&mut pwd, buf.as_mut_ptr(), size, &mut result);
        if code == libc::ERANGE && size < 1 << 20 {
            size *= 4;
            continue;
        }
        if code != 0 {
            return Err(std::io::Error::from_raw_os_error(code));
        }
        if result.is_null() {
            return Ok(None);
        }
        // SAFETY: on success the strings point into `buf`, NUL-terminated.
        let (name, home) = unsafe {
            (
                CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned(),
                CStr::from_ptr(pwd.pw_dir).to_string_lossy().into_owned(),
            )
        };
        return Ok(Some(Passwd {
            name,
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            home: PathBuf::from(home),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_uids_and_groups_resolve() {
        let root = JobUser::resolve("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(root.name.as_deref(), Some("root"));
        assert_eq!(JobUser::resolve("0").unwrap().name.as_deref(), Some("root"));
        let numeric = JobUser::resolve("4242:4343").unwrap();
        assert_eq!((numeric.uid, numeric.gid), (4242, 4343));
        assert_eq!(numeric.groups, vec![4343]);
        assert_eq!(numeric.describe(), "uid 4242");
    }

    #[test]
    fn what_cannot_be_used_is_said() {
        assert!(
            JobUser::resolve("no-such-user-here")
                .unwrap_err()
                .contains("no user named no-such-user-here")
        );
        assert!(JobUser::resolve("4242").unwrap_err().contains("4242:GID"));
        assert!(
            JobUser::resolve("root:wheel")
                .unwrap_err()
                .contains("number")
        );
    }
}
