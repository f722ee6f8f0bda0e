//! PostgreSQL refuses to run as root. When aide runs as root, the managed cluster runs as an
//! unprivileged system user instead (`postgres`, which the server packages create).

use std::ffi::{CStr, CString};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// The account the cluster's processes run as, when it is not the current one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The user to run PostgreSQL as: None to stay the current user, or the `postgres` account when
/// running as root.
pub fn cluster_user() -> Result<Option<OsUser>, String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    lookup("postgres").map(Some).ok_or_else(|| {
        "aide is running as root, and PostgreSQL refuses to run as root, so the managed cluster runs as the \
         `postgres` system user, which does not exist here. Install the PostgreSQL server package (it creates \
         that user), run aide as a normal user, or set DATABASE_URL"
            .to_string()
    })
}

fn lookup(name: &str) -> Option<OsUser> {
    let c_name = CString::new(name).ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: an all-zero passwd (null pointers, zero ids) is a valid value for getpwnam_r to fill.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the duration of the call and buf's length is passed.
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points into buf, NUL-terminated.
    let found = unsafe { CStr::from_ptr(pwd.pw_name) }
        .to_string_lossy()
        .into_owned();
    Some(OsUser {
        name: found,
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

/// Hands `path` to `user`.
pub fn chown(path: &Path, user: &OsUser) -> Result<(), String> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(|e| {
        format!(
            "could not hand {} to user {}: {e}",
            path.display(),
            user.name
        )
    })
}

/// Checks that `user` can reach `dir` (search permission on every folder above it), so the
/// cluster's processes can open their data folder.
pub fn check_reachable(dir: &Path, user: &OsUser) -> Result<(), String> {
    for ancestor in dir.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(ancestor) else {
            continue;
        };
        let mode = meta.permissions().mode();
        let can_search = if meta.uid() == user.uid {
            mode & 0o100 != 0
        } else if meta.gid() == user.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !can_search {
            return Err(format!(
                "the managed PostgreSQL cluster runs as the system user `{}` (PostgreSQL refuses to run as root), \
                 and that user cannot enter {} (mode {:o}). Set AIDE_DATA_DIR to a folder it can reach, such as \
                 /var/lib/aide, or run aide as a normal user",
                user.name,
                ancestor.display(),
                mode & 0o777
            ));
        }
    }
    Ok(())
}
