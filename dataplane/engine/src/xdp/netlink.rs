//! The rtnetlink calls the loader needs and aya does not offer: see which XDP program an
//! interface carries (and in which mode), remove one that a dead process left attached,
//! and read a port's MAC. Each `unsafe` block here is one plain syscall on buffers owned by
//! the calling function.
// unsafe: raw netlink socket calls (socket, bind, send, recv) on buffers owned here.
#![allow(unsafe_code)]

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

// linux/rtnetlink.h, linux/if_link.h: values are kernel ABI and never change.
const IFLA_ADDRESS: u16 = 1;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_HW_PROG_ID: u16 = 7;
const NLA_F_NESTED: u16 = 1 << 15;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | (1 << 14));
const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;

/// `XDP_FLAGS_*` from linux/if_link.h.
pub(crate) const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub(crate) const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
pub(crate) const XDP_FLAGS_HW_MODE: u32 = 1 << 3;

/// What rtnetlink reports about one interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkXdp {
    /// The link-layer address (`IFLA_ADDRESS`); empty for interfaces without one.
    pub mac: Vec<u8>,
    /// Id of the program attached in native (driver) mode, if any.
    pub drv_prog_id: Option<u32>,
    /// Id of the program attached in generic (skb) mode, if any.
    pub skb_prog_id: Option<u32>,
    /// Id of the program offloaded to the NIC, if any.
    pub hw_prog_id: Option<u32>,
}

impl LinkXdp {
    /// True when any XDP program is attached, in any mode.
    pub fn attached(&self) -> bool {
        self.drv_prog_id.is_some() || self.skb_prog_id.is_some() || self.hw_prog_id.is_some()
    }
}

struct Route {
    fd: OwnedFd,
    seq: u32,
}

impl Route {
    fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the returned descriptor is checked before being owned.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd, seq: 1 })
    }

    /// Sends one request and returns the payload of the matching answer: the first
    /// RTM_NEWLINK message, or the (acknowledged) error code of an NLMSG_ERROR.
    fn call(&mut self, msg_type: u16, flags: u16, body: &[u8]) -> io::Result<Vec<u8>> {
        self.seq = self.seq.wrapping_add(1);
        let mut msg = Vec::with_capacity(NLMSG_HDRLEN + body.len());
        msg.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&msg_type.to_ne_bytes());
        msg.extend_from_slice(&(flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);

        // SAFETY: a zeroed sockaddr_nl is the kernel as destination (nl_pid 0).
        let mut dst: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        dst.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: `msg` and `dst` outlive the call; lengths are theirs.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&dst as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }

        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: `buf` is writable for its whole length for the duration of the call.
            let got = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if got < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            let mut rest = &buf[..got as usize];
            while rest.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap_or_default()) as usize;
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                let seq = u32::from_ne_bytes(rest[8..12].try_into().unwrap_or_default());
                if len < NLMSG_HDRLEN || len > rest.len() {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated netlink message"));
                }
                let payload = &rest[NLMSG_HDRLEN..len];
                if seq == self.seq {
                    if kind == libc::NLMSG_ERROR as u16 {
                        let code = i32::from_ne_bytes(payload.get(0..4).and_then(|b| b.try_into().ok()).unwrap_or([0; 4]));
                        return if code == 0 { Ok(Vec::new()) } else { Err(io::Error::from_raw_os_error(-code)) };
                    }
                    if kind == libc::RTM_NEWLINK {
                        return Ok(payload.to_vec());
                    }
                }
                rest = &rest[align4(len).min(rest.len())..];
            }
        }
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn ifinfomsg(ifindex: u32) -> Vec<u8> {
    let mut body = vec![0u8; IFINFOMSG_LEN];
    body[0] = libc::AF_UNSPEC as u8;
    body[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    body
}

fn push_attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(align4(buf.len()), 0);
}

/// Iterates the (type, value) pairs of a run of netlink attributes.
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return None;
        }
        let value = &buf[4..len];
        buf = &buf[align4(len).min(buf.len())..];
        Some((kind, value))
    })
}

fn u32_of(value: &[u8]) -> Option<u32> {
    value.get(0..4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes)
}

/// Reads the MAC and the attached XDP programs of `ifindex` in the caller's network namespace.
pub fn query(ifindex: u32) -> io::Result<LinkXdp> {
    let mut route = Route::open()?;
    let payload = route.call(libc::RTM_GETLINK, 0, &ifinfomsg(ifindex))?;
    let mut link = LinkXdp::default();
    for (kind, value) in attrs(payload.get(IFINFOMSG_LEN..).unwrap_or_default()) {
        match kind {
            IFLA_ADDRESS => link.mac = value.to_vec(),
            IFLA_XDP => {
                let mut single = None;
                let mut attached = 0u8;
                for (kind, value) in attrs(value) {
                    match kind {
                        IFLA_XDP_ATTACHED => attached = value.first().copied().unwrap_or(0),
                        IFLA_XDP_PROG_ID => single = u32_of(value),
                        IFLA_XDP_DRV_PROG_ID => link.drv_prog_id = u32_of(value),
                        IFLA_XDP_SKB_PROG_ID => link.skb_prog_id = u32_of(value),
                        IFLA_XDP_HW_PROG_ID => link.hw_prog_id = u32_of(value),
                        _ => {}
                    }
                }
                // XDP_ATTACHED_{DRV,SKB,HW} = 1, 2, 3 report only IFLA_XDP_PROG_ID; MULTI (4)
                // reports the per-mode ids parsed above.
                match attached {
                    1 => link.drv_prog_id = link.drv_prog_id.or(single),
                    2 => link.skb_prog_id = link.skb_prog_id.or(single),
                    3 => link.hw_prog_id = link.hw_prog_id.or(single),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    Ok(link)
}

/// Removes the program attached to `ifindex` in the mode named by `mode_flags`
/// (`XDP_FLAGS_*_MODE`) by setting IFLA_XDP_FD to -1. The kernel refuses (EBUSY) when the
/// program is held by a live bpf_link: that one belongs to a running process.
pub fn detach(ifindex: u32, mode_flags: u32) -> io::Result<()> {
    let mut route = Route::open()?;
    let mut nested = Vec::new();
    push_attr(&mut nested, IFLA_XDP_FD, &(-1i32).to_ne_bytes());
    push_attr(&mut nested, IFLA_XDP_FLAGS, &mode_flags.to_ne_bytes());
    let mut body = ifinfomsg(ifindex);
    push_attr(&mut body, IFLA_XDP | NLA_F_NESTED, &nested);
    route.call(libc::RTM_SETLINK, libc::NLM_F_ACK as u16, &body).map(|_| ())
}

/// The index of the interface called `name` in the caller's network namespace.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c_name = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("interface name {name:?} contains NUL")))?;
    // SAFETY: `c_name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("no interface named {name:?} in this network namespace")));
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip() {
        let mut buf = Vec::new();
        push_attr(&mut buf, IFLA_XDP_FD, &(-1i32).to_ne_bytes());
        push_attr(&mut buf, IFLA_ADDRESS, &[1, 2, 3, 4, 5, 6]);
        let got: Vec<_> = attrs(&buf).collect();
        assert_eq!(got, vec![(IFLA_XDP_FD, &(-1i32).to_ne_bytes()[..]), (IFLA_ADDRESS, &[1u8, 2, 3, 4, 5, 6][..])]);
    }

    #[test]
    fn truncated_attributes_stop() {
        let mut buf = Vec::new();
        push_attr(&mut buf, IFLA_ADDRESS, &[1, 2, 3, 4, 5, 6]);
        buf.truncate(7);
        assert_eq!(attrs(&buf).count(), 0);
    }

    #[test]
    fn loopback_is_readable() {
        // Reading the link table needs no privilege; lo has a six-byte all-zero address.
        let lo = ifindex("lo").unwrap();
        assert_eq!(query(lo).unwrap().mac, vec![0u8; 6]);
        assert!(ifindex("cor-no-such-port").is_err());
    }
}
