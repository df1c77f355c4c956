//! Zero-copy views of the headers the forwarding path reads and writes, in the manner of
//! smoltcp's `wire`: one file per protocol, a `Packet<T: AsRef<[u8]>>` (or `Frame`) over a
//! byte buffer, bare-noun getters, `set_*` setters where the buffer is `AsMut`.
//!
//! The contract of every view: `new_unchecked` wraps any buffer; `check_len` (called by
//! `new_checked`) verifies the buffer holds the fixed header and every length the header
//! itself announces; once it has passed, no accessor panics. Views never allocate.

pub mod checksum;
pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod ports;

use std::fmt;

/// Why a buffer cannot be viewed as a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The buffer is shorter than the header, or than a length the header announces.
    Truncated,
    /// A length field is impossible (e.g. IPv4 IHL below 5).
    Malformed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "buffer too short for the header",
            Error::Malformed => "malformed header length",
        })
    }
}

impl std::error::Error for Error {}

pub type Result<T> = core::result::Result<T, Error>;

/// IP protocol numbers (IANA "Assigned Internet Protocol Numbers"; IPv6 next-header values).
pub mod ip_protocol {
    /// IPv6 Hop-by-Hop Options (RFC 8200 section 4.3).
    pub const HOP_BY_HOP: u8 = 0;
    /// ICMP (RFC 792).
    pub const ICMP: u8 = 1;
    /// TCP (RFC 9293).
    pub const TCP: u8 = 6;
    /// UDP (RFC 768).
    pub const UDP: u8 = 17;
    /// IPv6 Routing header (RFC 8200 section 4.4).
    pub const ROUTING: u8 = 43;
    /// IPv6 Fragment header (RFC 8200 section 4.5).
    pub const FRAGMENT: u8 = 44;
    /// IP Authentication Header (RFC 4302); its length counts 4-octet units.
    pub const AUTH: u8 = 51;
    /// ICMPv6 (RFC 4443).
    pub const ICMPV6: u8 = 58;
    /// No next header (RFC 8200 section 4.7).
    pub const NO_NEXT_HEADER: u8 = 59;
    /// IPv6 Destination Options (RFC 8200 section 4.6).
    pub const DEST_OPTIONS: u8 = 60;
    /// SCTP (RFC 9260): ports in the same place as TCP and UDP.
    pub const SCTP: u8 = 132;
}

/// Reads a big-endian u16 at `at`; the caller has checked the length. One range check
/// for the field (its octets are then read from a slice of known length), not one per octet.
#[inline(always)]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    let f = &b[at..at + 2];
    u16::from_be_bytes([f[0], f[1]])
}

#[inline(always)]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    let f = &b[at..at + 4];
    u32::from_be_bytes([f[0], f[1], f[2], f[3]])
}

#[inline(always)]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline(always)]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
