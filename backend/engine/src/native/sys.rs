//! The engine's only `unsafe` code: thin wrappers over the few system calls that have no safe
//! binding (fork, poll on raw fds, signal dispositions, adopting received fds, installing a
//! seccomp filter). Each wrapper states the condition that makes it sound.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Opens the directory `path` resolved as if `root` were `/` (`openat2` with
/// `RESOLVE_IN_ROOT`): `..` and symlinks, even absolute ones, can never leave `root`.
pub fn open_dir_in_root(root: std::os::fd::BorrowedFd<'_>, path: &str) -> std::io::Result<OwnedFd> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    use std::os::fd::AsRawFd;
    let how = OpenHow::new()
        .flags(OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = nix::fcntl::openat2(root.as_raw_fd(), path, how).map_err(std::io::Error::from)?;
    // SAFETY: openat2 just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Result of [`fork`].
pub enum Forked {
    Parent,
    Child,
}

/// Forks the calling process.
///
/// Only sound while the process is single-threaded (the shim calls it first thing, before it
/// creates any thread or takes any lock), so the child cannot inherit a lock held elsewhere.
pub fn fork() -> std::io::Result<Forked> {
    // SAFETY: see the function's contract; the caller is single-threaded.
    match unsafe { nix::unistd::fork() }.map_err(std::io::Error::from)? {
        nix::unistd::ForkResult::Parent { .. } => Ok(Forked::Parent),
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
    }
}

/// The kernel's `struct sigaction` (x86_64 and arm64 share this layout).
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Restores default dispositions for every catchable signal and empties the signal mask.
///
/// Rust ignores SIGPIPE and the shim blocks the signals it reads from its signalfd; ignored
/// dispositions and the mask would otherwise survive `execve` into the container's process.
/// The raw system call is used because glibc refuses to touch its reserved signals (32, 33),
/// which the runtime's helper processes leave ignored. Called in the container's process just
/// before exec.
pub fn reset_signals_for_exec() {
    let default = KernelSigaction { handler: 0 /* SIG_DFL */, flags: 0, restorer: 0, mask: 0 };
    for signal in 1..=64 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads a properly laid out struct from a valid pointer; the old
        // action is not requested; invalid numbers fail with EINVAL and change nothing.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                &default as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            );
        }
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
}

/// Installs a classic BPF seccomp filter in the calling thread, with `seccomp(2)`
/// (`SECCOMP_SET_MODE_FILTER`) and the given `SECCOMP_FILTER_FLAG_*` flags. The filter is
/// inherited across fork and exec and cannot be removed. Called in the container's process
/// just before exec.
///
/// Installing a filter without CAP_SYS_ADMIN requires no_new_privs, so this sets it first.
/// libcontainer sets it from `process.noNewPrivileges` too, but ignores a failure there; the
/// engine's specs always ask for it, so setting it here changes nothing but the guarantee.
pub fn install_seccomp_filter(program: &[libc::sock_filter], flags: libc::c_ulong) -> std::io::Result<()> {
    let len = u16::try_from(program.len())
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    nix::sys::prctl::set_no_new_privs()?;
    let fprog = libc::sock_fprog { len, filter: program.as_ptr().cast_mut() };
    // SAFETY: `fprog` points at `len` initialised instructions of `program`, which outlives the
    // call; the kernel only reads (copies) them and `fprog`, and validates the program itself.
    let rc = unsafe {
        libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, flags, &fprog as *const libc::sock_fprog)
    };
    match rc {
        0 => Ok(()),
        // With SECCOMP_FILTER_FLAG_TSYNC: the id of a thread that could not be synchronised.
        tid if tid > 0 => Err(std::io::Error::other(format!("thread {tid} cannot take the seccomp filter"))),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// `ppoll(2)` over raw descriptors, waiting at most `timeout` (for ever if `None`). Returns the
/// number of ready entries (0 on timeout); EINTR is reported as 0 ready entries.
pub fn poll(fds: &mut [libc::pollfd], timeout: Option<std::time::Duration>) -> std::io::Result<usize> {
    // ppoll rather than poll: the shim's deadlines are finer than a millisecond.
    let timespec = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let timeout_ptr = timespec.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: the pointer and length come from a valid mutable slice of pollfd structs; the
    // timeout is null or points to a timespec that outlives the call; no signal mask is given.
    let n = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ptr, std::ptr::null()) };
    if n < 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINTR) {
            return Ok(0);
        }
        return Err(err);
    }
    Ok(n as usize)
}

/// Takes ownership of a descriptor that the kernel just handed us (SCM_RIGHTS).
///
/// Sound because a descriptor received with `recvmsg` is new in this process and owned by no
/// other object.
pub fn adopt_received_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: see above.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Sets the window size of a terminal.
pub fn set_window_size(fd: RawFd, rows: u16, cols: u16) -> std::io::Result<()> {
    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads a winsize struct from a valid pointer; a bad fd fails with EBADF.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &size) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Borrows a descriptor that the caller keeps open for the duration of the borrow.
pub fn borrow_fd(fd: RawFd) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: callers only pass descriptors owned by a live `OwnedFd` in the shim, used for a
    // single write call while that owner is alive.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

/// `lgetxattr(2)`: the attribute's length, or `None` when it is absent or unreadable.
pub fn lgetxattr(path: &std::ffi::CStr, name: &std::ffi::CStr, value: &mut [u8]) -> Option<usize> {
    // SAFETY: both strings are NUL-terminated and the buffer pointer/length describe `value`.
    let n = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
    (n >= 0).then_some(n as usize)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_empty_seccomp_program_is_refused_before_anything_changes() {
        let before = nix::sys::prctl::get_no_new_privs().unwrap();
        let err = super::install_seccomp_filter(&[], 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        assert_eq!(nix::sys::prctl::get_no_new_privs().unwrap(), before, "no_new_privs was left alone");
    }
}
