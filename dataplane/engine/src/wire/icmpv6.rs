//! ICMPv6 (RFC 4443): the error messages a router sends and their checksum over the IPv6
//! pseudo-header.
//!
//! The view spans exactly one message: the buffer's length is the message's. After
//! `check_len`, no accessor panics.

use std::net::Ipv6Addr;

use super::{be16, be32, checksum, ip_protocol, put16, put32, Error, Result};

/// Message types (RFC 4443 section 2.1). Errors are below 128.
pub mod msg_type {
    pub const DEST_UNREACHABLE: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const PARAMETER_PROBLEM: u8 = 4;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
}

/// Destination Unreachable codes (RFC 4443 section 3.1).
pub mod unreachable {
    pub const NO_ROUTE: u8 = 0;
    pub const ADMIN_PROHIBITED: u8 = 1;
    pub const BEYOND_SCOPE: u8 = 2;
    pub const ADDRESS: u8 = 3;
    pub const PORT: u8 = 4;
    pub const POLICY: u8 = 5;
    pub const REJECT_ROUTE: u8 = 6;
}

/// Time Exceeded codes (RFC 4443 section 3.3).
pub mod time_exceeded {
    pub const HOP_LIMIT: u8 = 0;
    pub const REASSEMBLY: u8 = 1;
}

/// Whether a message type is an error (RFC 4443 section 2.1: high-order bit clear).
pub const fn is_error(t: u8) -> bool {
    t < 128
}

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST: usize = 4;
    pub const DATA: usize = 8;
}

pub const HEADER_LEN: usize = field::DATA;

/// A view of one ICMPv6 message.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Packet::new_unchecked(buffer);
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

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Packet Too Big: the MTU of the next-hop link (RFC 4443 section 3.2).
    #[inline]
    pub fn mtu(&self) -> u32 {
        be32(self.buffer.as_ref(), field::REST)
    }

    /// Parameter Problem: the offending octet (RFC 4443 section 3.4).
    #[inline]
    pub fn pointer(&self) -> u32 {
        be32(self.buffer.as_ref(), field::REST)
    }

    /// For errors: the quoted original packet.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..]
    }

    /// Whether the message and the pseudo-header of `src` and `dst` sum to 0xffff.
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let b = self.buffer.as_ref();
        let pseudo = checksum::pseudo_header_v6(src, dst, ip_protocol::ICMPV6, b.len() as u32);
        checksum::combine(&[pseudo, checksum::data(b)]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::TYPE] = v;
    }

    #[inline]
    pub fn set_msg_code(&mut self, v: u8) {
        self.buffer.as_mut()[field::CODE] = v;
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the four type-specific octets: the MTU, the pointer, or zero.
    #[inline]
    pub fn set_mtu(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::REST, v);
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA..]
    }

    /// Computes the checksum over the pseudo-header (RFC 8200 section 8.1) and the message.
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let pseudo = checksum::pseudo_header_v6(src, dst, ip_protocol::ICMPV6, b.len() as u32);
        let sum = checksum::combine(&[pseudo, checksum::data(b)]);
        self.set_checksum(!sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: [u8; 12] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x60, 0x00, 0x00, 0x00];

    fn addrs() -> (Ipv6Addr, Ipv6Addr) {
        ("2001:db8::ff".parse().unwrap(), "2001:db8::1".parse().unwrap())
    }

    #[test]
    fn parse_and_checksum() {
        let (src, dst) = addrs();
        let mut b = MESSAGE;
        Packet::new_unchecked(&mut b[..]).fill_checksum(src, dst);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.msg_type(), msg_type::PACKET_TOO_BIG);
        assert_eq!(p.msg_code(), 0);
        assert_eq!(p.mtu(), 1280);
        assert_eq!(p.data(), &[0x60, 0, 0, 0]);
        assert!(p.verify_checksum(src, dst));
        assert!(!p.verify_checksum(dst, "2001:db8::2".parse().unwrap()));
        // Independent sum: pseudo-header words written out by hand.
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src.octets());
        pseudo.extend_from_slice(&dst.octets());
        pseudo.extend_from_slice(&[0, 0, 0, 12, 0, 0, 0, 58]);
        pseudo.extend_from_slice(&MESSAGE);
        assert_eq!(p.checksum(), !checksum::data(&pseudo));
    }

    #[test]
    fn construct() {
        let mut b = [0u8; 12];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_msg_type(msg_type::PACKET_TOO_BIG);
        p.set_msg_code(0);
        p.set_mtu(1280);
        p.data_mut().copy_from_slice(&[0x60, 0, 0, 0]);
        assert_eq!(b, MESSAGE);
    }

    #[test]
    fn truncated() {
        assert_eq!(Packet::new_checked(&MESSAGE[..7]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn overlong() {
        let mut b = [0u8; 1232];
        b[..12].copy_from_slice(&MESSAGE);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.data().len(), 1224);
    }

    #[test]
    fn error_types() {
        assert!(is_error(msg_type::TIME_EXCEEDED));
        assert!(is_error(msg_type::PACKET_TOO_BIG));
        assert!(!is_error(msg_type::ECHO_REQUEST));
        assert!(!is_error(135)); // neighbour solicitation
    }
}
