//! Shared set-up for the AF_XDP integration tests: a lab of network namespaces
//! (`cor-xt-<pid>-<tag>-{r,a,b}`) joined by veth pairs, entered with setns(2) on the test
//! thread, removed on drop even when the test fails. Addresses come only from
//! 198.18.0.0/15 and 2001:db8::/32. Frames are sent and captured with AF_PACKET sockets
//! in the peer namespaces. Missing privileges or tools fail the test with their name.
#![allow(dead_code)]
// unsafe: setns(2) and the AF_PACKET sockets that send and capture test frames are raw
// libc calls.
#![allow(unsafe_code)]

use std::{
    fs::File,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    process::Command,
    time::{Duration, Instant},
};

/// Fails the test unless it can do what the lab needs.
pub fn require_root_and_tools() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "these tests need root (CAP_NET_ADMIN, CAP_BPF, CAP_SYS_ADMIN for setns): run them as root");
    for tool in ["ip", "ping"] {
        let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().map(|o| o.status.success());
        assert!(matches!(found, Ok(true)), "these tests need `{tool}` (Debian: iproute2, iputils-ping)");
    }
}

/// Runs `ip` with `args`; panics with its stderr on failure.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The router namespace R with ports r0 (to peer A) and r1 (to peer B).
///
/// R: r0 198.18.1.1/24 2001:db8:1::1/64, r1 198.18.2.1/24 2001:db8:2::1/64
/// A: a0 198.18.1.2/24 2001:db8:1::2/64, B: b0 198.18.2.2/24 2001:db8:2::2/64
pub struct Lab {
    pub r: String,
    pub a: String,
    pub b: String,
}

impl Lab {
    pub fn new(tag: &str, queues: u32) -> Self {
        require_root_and_tools();
        let base = format!("cor-xt-{}-{tag}", std::process::id());
        let lab = Self { r: format!("{base}-r"), a: format!("{base}-a"), b: format!("{base}-b") };
        for ns in [&lab.r, &lab.a, &lab.b] {
            // A leftover from a crashed run with the same pid would make `add` fail.
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            ip(&["netns", "add", ns]);
        }
        let q = queues.to_string();
        for (port, peer, ns) in [("r0", "a0", &lab.a), ("r1", "b0", &lab.b)] {
            ip(&[
                "-n",
                &lab.r,
                "link",
                "add",
                port,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
                "type",
                "veth",
                "peer",
                "name",
                peer,
                "netns",
                ns,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
            ]);
        }
        let cfg = |ns: &str, dev: &str, v4: &str, v6: &str| {
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "addr", "add", v4, "dev", dev]);
            ip(&["-n", ns, "-6", "addr", "add", v6, "dev", dev, "nodad"]);
        };
        ip(&["-n", &lab.r, "link", "set", "lo", "up"]);
        cfg(&lab.r, "r0", "198.18.1.1/24", "2001:db8:1::1/64");
        cfg(&lab.r, "r1", "198.18.2.1/24", "2001:db8:2::1/64");
        cfg(&lab.a, "a0", "198.18.1.2/24", "2001:db8:1::2/64");
        cfg(&lab.b, "b0", "198.18.2.2/24", "2001:db8:2::2/64");
        lab
    }

    pub fn mac(&self, ns: &str, dev: &str) -> [u8; 6] {
        let out = ip(&["-n", ns, "-o", "link", "show", dev]);
        let text = out.split("link/ether ").nth(1).expect("link/ether in ip output");
        let mut mac = [0u8; 6];
        for (i, byte) in text.split_whitespace().next().unwrap().split(':').enumerate() {
            mac[i] = u8::from_str_radix(byte, 16).unwrap();
        }
        mac
    }

    /// True if `ip link show dev` in `ns` mentions an XDP program.
    pub fn has_xdp(&self, ns: &str, dev: &str) -> bool {
        ip(&["-n", ns, "link", "show", dev]).contains("xdp")
    }

    /// `ip netns exec ns cmd...`, returning success and combined output.
    pub fn exec(&self, ns: &str, cmd: &[&str]) -> (bool, String) {
        let out = Command::new("ip").args(["netns", "exec", ns]).args(cmd).output().expect("ip netns exec");
        (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.r, &self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// While alive, the current thread is in network namespace `name`; restores on drop.
pub struct InNetns {
    original: File,
}

impl InNetns {
    pub fn enter(name: &str) -> Self {
        let original = File::open("/proc/thread-self/ns/net").expect("opening this thread's network namespace");
        let target = File::open(format!("/var/run/netns/{name}")).unwrap_or_else(|e| panic!("opening netns {name}: {e}"));
        setns(&target).unwrap_or_else(|e| panic!("setns into {name}: {e}"));
        Self { original }
    }
}

impl Drop for InNetns {
    fn drop(&mut self) {
        let _ = setns(&self.original);
    }
}

fn setns(file: &File) -> io::Result<()> {
    // SAFETY: setns on a namespace file we hold open; affects only the calling thread
    // for CLONE_NEWNET.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// An AF_PACKET socket bound to one interface, receiving every protocol.
pub struct RawSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl RawSocket {
    /// Opens the socket in the namespace `ns` (on a helper thread), bound to `dev`.
    pub fn open_in(ns: &str, dev: &str) -> Self {
        let ns = ns.to_owned();
        let dev = dev.to_owned();
        std::thread::spawn(move || {
            let _inside = InNetns::enter(&ns);
            Self::open(&dev)
        })
        .join()
        .expect("opening the capture socket")
    }

    fn open(dev: &str) -> Self {
        let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
        // SAFETY: plain socket(2), checked before being owned.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        assert!(raw >= 0, "socket(AF_PACKET): {}", io::Error::last_os_error());
        // SAFETY: fresh descriptor, owned from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let name = std::ffi::CString::new(dev).unwrap();
        // SAFETY: valid NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        assert!(ifindex > 0, "no interface {dev}");
        // SAFETY: zeroed sockaddr_ll is a valid starting point.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto as u16;
        sll.sll_ifindex = ifindex;
        // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(fd.as_raw_fd(), (&sll as *const libc::sockaddr_ll).cast(), std::mem::size_of::<libc::sockaddr_ll>() as u32)
        };
        assert!(rc == 0, "bind(AF_PACKET {dev}): {}", io::Error::last_os_error());
        // Large receive buffer: thousands of frames may arrive in a burst.
        let size: libc::c_int = 8 << 20;
        // SAFETY: option value is a live c_int of the size passed.
        unsafe {
            libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, (&size as *const libc::c_int).cast(), 4);
        }
        Self { fd, ifindex }
    }

    pub fn send(&self, frame: &[u8]) {
        // SAFETY: `frame` is a live buffer of the length passed.
        let rc = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert!(rc == frame.len() as isize, "send(AF_PACKET): {}", io::Error::last_os_error());
    }

    /// Receives frames until `count` matched `keep`, or `timeout` passed.
    pub fn recv_matching(&self, count: usize, timeout: Duration, keep: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        while got.len() < count && Instant::now() < deadline {
            let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one live pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, 50) };
            if rc <= 0 {
                continue;
            }
            // SAFETY: `buf` is writable for its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n > 0 && keep(&buf[..n as usize]) {
                got.push(buf[..n as usize].to_vec());
            }
        }
        got
    }
}

/// An Ethernet + IPv4 + UDP frame from A toward a transit destination behind B.
/// `seq` goes into the payload so frames can be told apart.
pub fn udp4_frame(dst_mac: [u8; 6], src_mac: [u8; 6], dst: [u8; 4], seq: u32, payload_len: usize) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = 20 + 8 + payload_len;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[198, 18, 1, 2]);
    ip[16..20].copy_from_slice(&dst);
    let mut sum: u32 = ip.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&4000u16.to_be_bytes());
    f.extend_from_slice(&4001u16.to_be_bytes());
    f.extend_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    let mut payload = vec![0u8; payload_len];
    payload[..4].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in payload.iter_mut().enumerate().skip(4) {
        *b = (i * 7 + seq as usize) as u8;
    }
    f.extend_from_slice(&payload);
    f
}

/// True for an IPv4 UDP frame made by `udp4_frame`.
pub fn is_test_udp4(frame: &[u8]) -> bool {
    frame.len() > 42 && frame[12..14] == [0x08, 0x00] && frame[23] == 17 && frame[34..36] == 4000u16.to_be_bytes()
}

/// Number of open descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}
