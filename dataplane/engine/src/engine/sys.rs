//! The few system calls the engine makes outside the sockets: entering a network
//! namespace, pinning a thread, making it real-time, reading a port's flags. (Sleeping on
//! sockets and their kernel counters are `xsk`'s.) The engine's FFI fence: every `unsafe`
//! of the `engine` module is here.
// unsafe: each function is one libc call (setns, sched_*affinity, sched_setscheduler,
// socket, ioctl).
#![allow(unsafe_code)]

use std::{
    fs::File,
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

/// Moves the calling thread into the network namespace `/var/run/netns/{name}` (what
/// `ip netns add` creates). Other threads of the process stay where they are.
pub(super) fn enter_netns(name: &str) -> io::Result<()> {
    let path = format!("/var/run/netns/{name}");
    let file = File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("opening {path}: {e}")))?;
    // SAFETY: setns on a namespace descriptor we hold open; with CLONE_NEWNET it changes
    // only the calling thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("setns into {path}: {e}")));
    }
    Ok(())
}

/// The CPUs this process may run on, in order.
pub(super) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity writes at most
    // its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is live and of the size passed; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc < 0 {
        return Vec::new();
    }
    // SAFETY: CPU_ISSET reads the set within its bounds (i < CPU_SETSIZE).
    (0..libc::CPU_SETSIZE as usize).filter(|&i| unsafe { libc::CPU_ISSET(i, &set) }).collect()
}

/// Pins the calling thread to `cpu`.
pub(super) fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: as in `allowed_cpus`; CPU_SET writes within the set for cpu < CPU_SETSIZE.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("cpu {cpu} beyond CPU_SETSIZE")));
    }
    // SAFETY: cpu < CPU_SETSIZE, checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is live and of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the calling thread SCHED_FIFO at `priority` (1 to 99): it runs whenever it is
/// runnable, ahead of every SCHED_OTHER thread of its CPU, until it sleeps.
pub(super) fn make_realtime(priority: u8) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: libc::c_int::from(priority) };
    // SAFETY: `param` is a live sched_param; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An AF_INET datagram socket for interface ioctls, in the caller's network namespace.
pub(super) fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); checked before being owned.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Whether the interface `name` is administratively up and has its carrier (IFF_UP and
/// IFF_RUNNING), read with SIOCGIFFLAGS in the namespace `socket` was made in. sysfs is
/// not used: it shows the namespace it was mounted in, not the thread's.
pub(super) fn link_up(socket: BorrowedFd<'_>, name: &str) -> io::Result<bool> {
    // SAFETY: a zeroed ifreq is valid (empty name, zero flags).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("interface name {name:?} too long")));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: `req` is a live ifreq with a NUL-terminated name; SIOCGIFFLAGS writes only
    // its flags member.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags } as libc::c_int;
    Ok(flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0)
}
