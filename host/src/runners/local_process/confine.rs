//! What a `local-process` run gives up between `fork` and `exec`, so that
//! it cannot read the agent's memory or environment.
//!
//! The agent keeps its secrets in memory (their variables are out of its
//! environment block: [`crate::secret_env`]) and is not dumpable, which the
//! kernel reads as "only a process with `CAP_SYS_PTRACE` may trace it or
//! read its `/proc/<pid>/mem` and `/proc/<pid>/environ`". A run as the
//! agent's unprivileged user has no capabilities, so that is enough. A run
//! of an agent that is root would be root with every capability, so the
//! child first drops from its bounding and inheritable sets (and the
//! ambient set) the capabilities that reach another process's memory:
//!
//! | capability | what it would reach |
//! |---|---|
//! | `CAP_SYS_PTRACE` | ptrace, `/proc/<pid>/mem`, `process_vm_readv`, any process's `/proc` files |
//! | `CAP_SYS_ADMIN` | (among much else) BPF and perf on older kernels, other namespaces |
//! | `CAP_BPF`, `CAP_PERFMON` | BPF programs that read user memory; perf sampling |
//! | `CAP_SYS_RAWIO` | `/dev/mem`, `/proc/kcore` |
//! | `CAP_SYS_MODULE` | kernel modules |
//! | `CAP_CHECKPOINT_RESTORE` | other processes' `/proc/<pid>/map_files` |
//!
//! A root run keeps root's ownership of this machine's files, so it can
//! still take the machine over by other ways (rewrite a root cron job, say)
//! and reach the agent from there: this raises the bar, it is no sandbox.
//! The sandbox is `runners.local-process.user`: the child then also sets
//! its groups, group and user (`setgroups`, `setgid`, `setuid`, in that
//! order) and `PR_SET_NO_NEW_PRIVS`, so neither set-user-id programs nor
//! file capabilities give it back what it dropped. Yama's
//! `PR_SET_PTRACER` is not used: it only ever widens who may trace, and
//! Yama's default scope already keeps a child from tracing its parent.

use super::user::JobUser;
use std::io;

/// `_LINUX_CAPABILITY_VERSION_3`.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// The capabilities a run of a root agent gives up (see the module table).
const DROPPED: [u32; 7] = [
    19, // CAP_SYS_PTRACE
    21, // CAP_SYS_ADMIN
    39, // CAP_BPF
    38, // CAP_PERFMON
    17, // CAP_SYS_RAWIO
    16, // CAP_SYS_MODULE
    40, // CAP_CHECKPOINT_RESTORE
];

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// What the child of one run does before `exec`, prepared in the agent so
/// that the child allocates nothing.
#[derive(Clone, Debug)]
pub(super) struct Confinement {
    /// The user to become, as (uid, gid, groups).
    user: Option<(u32, u32, Vec<libc::gid_t>)>,
}

impl Confinement {
    /// For a run as `user` (`None`: as the agent's user).
    pub(super) fn new(user: Option<&JobUser>) -> Self {
        Confinement {
            user: user.map(|u| (u.uid, u.gid, u.groups.clone())),
        }
    }

    /// Applies it in the child, between `fork` and `exec`.
    ///
    /// # Safety
    ///
    /// Only in a forked child before `exec`: it changes the calling
    /// process's capabilities and credentials. It makes only
    /// async-signal-safe system calls and allocates nothing.
    pub(super) unsafe fn apply(&self) -> io::Result<()> {
        // SAFETY: the caller is the forked child; each call is a plain
        // system call on this process, with pointers to live locals.
        unsafe {
            if libc::geteuid() == 0 {
                drop_memory_capabilities()?;
            }
            if let Some((uid, gid, groups)) = &self.user {
                check(libc::setgroups(groups.len(), groups.as_ptr()))?;
                check(libc::setgid(*gid))?;
                check(libc::setuid(*uid))?;
                check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            }
        }
        Ok(())
    }
}

/// Drops [`DROPPED`] from the bounding, inheritable and ambient sets.
///
/// # Safety
///
/// As [`Confinement::apply`].
unsafe fn drop_memory_capabilities() -> io::Result<()> {
    // SAFETY: prctl and capget/capset on this process, with valid pointers.
    unsafe {
        for cap in DROPPED {
            let held = libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0);
            // 0: not in the set; -1 (EINVAL): this kernel does not know it.
            if held == 1 {
                check(libc::prctl(
                    libc::PR_CAPBSET_DROP,
                    cap as libc::c_ulong,
                    0,
                    0,
                    0,
                ))?;
            }
        }
        let mut header = CapHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        let mut data = [CapData::default(); 2];
        check(libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) as libc::c_int)?;
        for cap in DROPPED {
            let (word, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
            data[word].inheritable &= !bit;
        }
        check(libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) as libc::c_int)?;
        // Ambient capabilities need their inheritable bit, so they are gone
        // too; clearing them all is what an old kernel may not know.
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
    Ok(())
}

/// The last OS error when `code` is -1.
fn check(code: libc::c_int) -> io::Result<()> {
    if code == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
