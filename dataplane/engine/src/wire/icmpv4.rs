//! ICMP for IPv4 (RFC 792), the error messages a router sends (RFC 1812 section 4.3) and
//! the Fragmentation Needed next-hop MTU (RFC 1191 section 4).
//!
//! The view spans exactly one message: the buffer's length is the message's. After
//! `check_len`, no accessor panics.

use super::{be16, be32, checksum, put16, put32, Error, Result};

/// Message types (RFC 792; IANA "ICMP Parameters").
pub mod msg_type {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const SOURCE_QUENCH: u8 = 4;
    pub const REDIRECT: u8 = 5;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAMETER_PROBLEM: u8 = 12;
}

/// Destination Unreachable codes (RFC 792, RFC 1812 section 5.2.7.1).
pub mod unreachable {
    pub const NET: u8 = 0;
    pub const HOST: u8 = 1;
    pub const PROTOCOL: u8 = 2;
    pub const PORT: u8 = 3;
    /// Fragmentation needed and DF set; carries the next-hop MTU (RFC 1191 section 4).
    pub const FRAG_NEEDED: u8 = 4;
    pub const NET_PROHIBITED: u8 = 9;
}

/// Time Exceeded codes (RFC 792).
pub mod time_exceeded {
    pub const TTL: u8 = 0;
    pub const REASSEMBLY: u8 = 1;
}

/// Whether a message type is an error, to which no error may be sent (RFC 1812 section
/// 4.3.2.7): Destination Unreachable, Source Quench, Redirect, Time Exceeded, Parameter
/// Problem.
pub const fn is_error(t: u8) -> bool {
    matches!(
        t,
        msg_type::DEST_UNREACHABLE | msg_type::SOURCE_QUENCH | msg_type::REDIRECT | msg_type::TIME_EXCEEDED | msg_type::PARAMETER_PROBLEM
    )
}

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST: usize = 4;
    pub const NEXT_HOP_MTU: usize = 6;
    pub const DATA: usize = 8;
}

/// Type, code, checksum and the four octets whose meaning depends on the type.
pub const HEADER_LEN: usize = field::DATA;

/// A view of one ICMP message.
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

    /// The four type-specific octets after the checksum.
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        be32(self.buffer.as_ref(), field::REST)
    }

    /// Fragmentation Needed: the MTU of the next hop (RFC 1191 section 4).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        be16(self.buffer.as_ref(), field::NEXT_HOP_MTU)
    }

    /// For errors: the quoted original datagram.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..]
    }

    /// Whether the message sums to 0xffff.
    pub fn verify_checksum(&self) -> bool {
        checksum::data(self.buffer.as_ref()) == 0xffff
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

    #[inline]
    pub fn set_rest_of_header(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::REST, v);
    }

    #[inline]
    pub fn set_next_hop_mtu(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::NEXT_HOP_MTU, v);
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA..]
    }

    /// Computes the checksum over the whole message.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::data(self.buffer.as_ref());
        self.set_checksum(!sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Fragmentation needed, next-hop MTU 1400, quoting four octets.
    const MESSAGE: [u8; 12] = [0x03, 0x04, 0x00, 0x00, 0x00, 0x00, 0x05, 0x78, 0x45, 0x00, 0x05, 0xdc];

    fn message() -> [u8; 12] {
        let mut b = MESSAGE;
        Packet::new_unchecked(&mut b[..]).fill_checksum();
        b
    }

    #[test]
    fn parse() {
        let b = message();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.msg_type(), msg_type::DEST_UNREACHABLE);
        assert_eq!(p.msg_code(), unreachable::FRAG_NEEDED);
        assert_eq!(p.next_hop_mtu(), 1400);
        assert_eq!(p.rest_of_header(), 1400);
        assert_eq!(p.data(), &[0x45, 0x00, 0x05, 0xdc]);
        assert!(p.verify_checksum());
        assert_eq!(p.checksum(), !checksum::data(&MESSAGE));
    }

    #[test]
    fn construct() {
        let mut b = [0u8; 12];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_msg_type(msg_type::DEST_UNREACHABLE);
        p.set_msg_code(unreachable::FRAG_NEEDED);
        p.set_rest_of_header(0);
        p.set_next_hop_mtu(1400);
        p.data_mut().copy_from_slice(&[0x45, 0x00, 0x05, 0xdc]);
        p.fill_checksum();
        assert_eq!(b, message());
    }

    #[test]
    fn truncated() {
        assert_eq!(Packet::new_checked(&MESSAGE[..7]).unwrap_err(), Error::Truncated);
        assert!(Packet::new_checked(&MESSAGE[..8]).unwrap().data().is_empty());
    }

    #[test]
    fn overlong() {
        // The view is the message: trailing octets are quoted data and are summed.
        let mut b = [0u8; 600];
        b[..12].copy_from_slice(&message());
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.data().len(), 592);
        assert!(p.verify_checksum(), "zero octets do not change the sum");
    }

    #[test]
    fn error_types() {
        for t in [3, 4, 5, 11, 12] {
            assert!(is_error(t));
        }
        for t in [0, 8, 13, 14] {
            assert!(!is_error(t));
        }
    }
}
