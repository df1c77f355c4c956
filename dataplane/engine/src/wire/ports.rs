//! The port pair at the start of TCP (RFC 9293 section 3.1), UDP (RFC 768) and SCTP
//! (RFC 9260 section 3.1) headers: all the forwarding path reads of them, for the flow hash.
//!
//! After `check_len`, no accessor panics.

use super::{be16, ip_protocol, put16, Error, Result};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
}

/// Source and destination port.
pub const HEADER_LEN: usize = 4;

/// Whether the protocol starts with a source and a destination port.
pub const fn has_ports(protocol: u8) -> bool {
    matches!(protocol, ip_protocol::TCP | ip_protocol::UDP | ip_protocol::SCTP)
}

/// A view of the ports of a TCP, UDP or SCTP header.
#[derive(Debug, Clone)]
pub struct Ports<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ports<T> {
    pub const fn new_unchecked(buffer: T) -> Ports<T> {
        Ports { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Ports<T>> {
        let p = Ports::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ports<T> {
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, v);
    }

    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A UDP header: 53 -> 40000, length 8, checksum 0.
    const UDP: [u8; 8] = [0x00, 0x35, 0x9c, 0x40, 0x00, 0x08, 0x00, 0x00];

    #[test]
    fn parse() {
        let p = Ports::new_checked(&UDP[..]).unwrap();
        assert_eq!(p.src_port(), 53);
        assert_eq!(p.dst_port(), 40000);
        assert!(has_ports(ip_protocol::UDP) && has_ports(ip_protocol::TCP) && has_ports(ip_protocol::SCTP));
        assert!(!has_ports(ip_protocol::ICMP));
    }

    #[test]
    fn construct() {
        let mut b = [0u8; 4];
        let mut p = Ports::new_unchecked(&mut b[..]);
        p.set_src_port(53);
        p.set_dst_port(40000);
        assert_eq!(b, UDP[..4]);
    }

    #[test]
    fn truncated() {
        assert_eq!(Ports::new_checked(&UDP[..3]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn overlong() {
        assert_eq!(Ports::new_checked(&UDP[..]).unwrap().dst_port(), 40000);
    }
}
