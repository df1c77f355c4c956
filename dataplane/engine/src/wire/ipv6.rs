//! IPv6 headers (RFC 8200 section 3) and a bounded walk over the extension header chain
//! (RFC 8200 section 4) to find the upper-layer header and the fragment offset.
//!
//! `check_len` verifies the fixed header and that the buffer holds `payload_len` octets
//! after it; after it, no accessor panics. The fixed-header getters need only
//! `HEADER_LEN` octets.

use std::net::Ipv6Addr;

use super::{be16, be32, ip_protocol, put16, put32, Error, Result};

mod field {
    use core::ops::Range;
    pub const VER_TC_FLOW: usize = 0;
    pub const LENGTH: usize = 4;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

pub const HEADER_LEN: usize = 40;
/// The minimum link MTU (RFC 8200 section 5); ICMPv6 errors stay within it (RFC 4443
/// section 2.4 (c)).
pub const MIN_MTU: usize = 1280;
/// Extension headers walked before giving up. RFC 8200 defines at most six kinds in one
/// chain (plus Destination Options twice); more is an attack, not a packet.
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// A view of an IPv6 packet.
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

    /// The buffer may be longer than the packet (link-layer padding); `payload` ends at
    /// `payload_len`.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < HEADER_LEN + self.payload_len() as usize {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW] >> 4
    }

    #[inline(always)]
    pub fn traffic_class(&self) -> u8 {
        (be16(self.buffer.as_ref(), field::VER_TC_FLOW) >> 4) as u8
    }

    /// The 20-bit flow label (RFC 6437).
    #[inline(always)]
    pub fn flow_label(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VER_TC_FLOW) & 0x000f_ffff
    }

    #[inline(always)]
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// `HEADER_LEN + payload_len`.
    #[inline(always)]
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len() as usize
    }

    #[inline(always)]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    #[inline(always)]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    #[inline(always)]
    pub fn src_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        Ipv6Addr::from(a)
    }

    #[inline(always)]
    pub fn dst_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        Ipv6Addr::from(a)
    }

    /// The payload up to `payload_len`, without link-layer padding.
    #[inline(always)]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version, traffic class and flow label at once.
    #[inline]
    pub fn set_version_class_flow(&mut self, version: u8, traffic_class: u8, flow_label: u32) {
        let v = (version as u32) << 28 | (traffic_class as u32) << 20 | (flow_label & 0x000f_ffff);
        put32(self.buffer.as_mut(), field::VER_TC_FLOW, v);
    }

    #[inline]
    pub fn set_payload_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }

    #[inline]
    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = v;
    }

    #[inline]
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }

    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// Where the extension header chain ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpperLayer {
    /// The next-header value after the last extension header walked.
    pub protocol: u8,
    /// Where that header starts, from the start of the IPv6 payload.
    pub offset: usize,
    /// Offset (in octets) and M flag of a Fragment header, if there is one. When the
    /// offset is not 0, `protocol` names the header of the first fragment, which this
    /// packet does not hold.
    pub fragment: Option<(u16, bool)>,
}

/// Walks the extension headers of `payload` (an IPv6 payload whose first header is
/// `next_header`), at most `MAX_EXTENSION_HEADERS` of them. None when the chain is
/// truncated or too long: such a packet's upper layer is unknown.
pub fn upper_layer(next_header: u8, payload: &[u8]) -> Option<UpperLayer> {
    let mut protocol = next_header;
    let mut offset = 0usize;
    let mut fragment = None;
    for _ in 0..MAX_EXTENSION_HEADERS {
        match protocol {
            ip_protocol::HOP_BY_HOP | ip_protocol::ROUTING | ip_protocol::DEST_OPTIONS => {
                // RFC 8200 section 4.3: length in 8-octet units, not counting the first 8.
                let h = payload.get(offset..offset + 2)?;
                protocol = h[0];
                offset += (h[1] as usize + 1) * 8;
            }
            ip_protocol::AUTH => {
                // RFC 4302 section 2.2: length in 4-octet units, minus 2.
                let h = payload.get(offset..offset + 2)?;
                protocol = h[0];
                offset += (h[1] as usize + 2) * 4;
            }
            ip_protocol::FRAGMENT => {
                // RFC 8200 section 4.5: next header, reserved, offset (13 bits) | res | M.
                let h = payload.get(offset..offset + 8)?;
                protocol = h[0];
                offset += 8;
                let off_m = be16(h, 2);
                let frag_offset = off_m & 0xfff8;
                fragment = Some((frag_offset, off_m & 1 != 0));
                if frag_offset != 0 {
                    return Some(UpperLayer { protocol, offset, fragment });
                }
            }
            _ => return Some(UpperLayer { protocol, offset, fragment }),
        }
        if offset > payload.len() {
            return None;
        }
    }
    match protocol {
        ip_protocol::HOP_BY_HOP | ip_protocol::ROUTING | ip_protocol::DEST_OPTIONS | ip_protocol::AUTH | ip_protocol::FRAGMENT => None,
        _ => Some(UpperLayer { protocol, offset, fragment }),
    }
}

/// Address classes a router must not forward (RFC 4291 section 2), checked on every
/// received packet, so integer tests rather than `Ipv6Addr`'s methods.
///
/// ff00::/8 (RFC 4291 section 2.7).
#[inline]
pub const fn is_multicast(a: Ipv6Addr) -> bool {
    a.to_bits() >> 120 == 0xff
}

/// fe80::/10 (RFC 4291 section 2.5.6).
#[inline]
pub const fn is_link_local(a: Ipv6Addr) -> bool {
    a.to_bits() >> 118 == 0xfe80 >> 6
}

/// The unspecified address :: or the loopback ::1 (RFC 4291 section 2.5.2, 2.5.3): never
/// a destination to forward to.
#[inline]
pub const fn is_martian_destination(a: Ipv6Addr) -> bool {
    a.to_bits() <= 1
}

/// Unspecified, loopback or multicast: never the source of a packet to forward.
#[inline]
pub const fn is_martian_source(a: Ipv6Addr) -> bool {
    is_multicast(a) || is_martian_destination(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2001:db8::1 -> 2001:db8:1::2, UDP, hop limit 64, flow label 0x12345, TC 0xb8, 4 octets.
    const PACKET: [u8; 44] = [
        0x6b, 0x81, 0x23, 0x45, 0x00, 0x04, 17, 64, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, //
        0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, //
        0xde, 0xad, 0xbe, 0xef,
    ];

    #[test]
    fn parse() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 4);
        assert_eq!(p.next_header(), 17);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "2001:db8:1::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn construct() {
        let mut b = [0u8; 44];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_version_class_flow(6, 0xb8, 0x12345);
        p.set_payload_len(4);
        p.set_next_header(17);
        p.set_hop_limit(64);
        p.set_src_addr("2001:db8::1".parse().unwrap());
        p.set_dst_addr("2001:db8:1::2".parse().unwrap());
        p.payload_mut().copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(b, PACKET);
    }

    #[test]
    fn truncated() {
        assert_eq!(Packet::new_checked(&PACKET[..39]).unwrap_err(), Error::Truncated);
        assert_eq!(Packet::new_checked(&PACKET[..43]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn overlong() {
        let mut long = [0u8; 80];
        long[..44].copy_from_slice(&PACKET);
        let p = Packet::new_checked(&long[..]).unwrap();
        assert_eq!(p.payload().len(), 4);
        assert_eq!(p.total_len(), 44);
    }

    #[test]
    fn walk_plain() {
        assert_eq!(upper_layer(17, &[0; 8]), Some(UpperLayer { protocol: 17, offset: 0, fragment: None }));
    }

    #[test]
    fn walk_extension_chain() {
        // Hop-by-hop (8) -> destination options (16) -> fragment (offset 0, M) -> TCP.
        let mut p = vec![0u8; 40];
        p[0] = ip_protocol::DEST_OPTIONS;
        p[8] = ip_protocol::FRAGMENT;
        p[9] = 1;
        p[24] = ip_protocol::TCP;
        p[27] = 1;
        let u = upper_layer(ip_protocol::HOP_BY_HOP, &p).unwrap();
        assert_eq!(u, UpperLayer { protocol: ip_protocol::TCP, offset: 32, fragment: Some((0, true)) });
    }

    #[test]
    fn walk_non_initial_fragment_stops() {
        let mut p = [0u8; 16];
        p[0] = ip_protocol::UDP;
        p[2..4].copy_from_slice(&(1448u16).to_be_bytes());
        let u = upper_layer(ip_protocol::FRAGMENT, &p).unwrap();
        assert_eq!(u.fragment, Some((1448, false)));
        assert_eq!(u.protocol, ip_protocol::UDP);
    }

    #[test]
    fn walk_truncated_or_endless() {
        assert_eq!(upper_layer(ip_protocol::HOP_BY_HOP, &[17]), None);
        assert_eq!(upper_layer(ip_protocol::FRAGMENT, &[17, 0, 0, 0]), None);
        // A header that claims to be longer than the payload.
        assert_eq!(upper_layer(ip_protocol::ROUTING, &[17, 4, 0, 0, 0, 0, 0, 0]), None);
        // Nine destination options headers in a row.
        let mut p = [0u8; 72];
        for h in p.chunks_mut(8) {
            h[0] = ip_protocol::DEST_OPTIONS;
        }
        assert_eq!(upper_layer(ip_protocol::DEST_OPTIONS, &p), None);
    }

    #[test]
    fn address_classes() {
        let a = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        for s in ["::", "::1", "ff02::1", "ff0e::1"] {
            assert!(is_martian_source(a(s)), "{s}");
        }
        assert!(is_martian_destination(a("::")) && is_martian_destination(a("::1")));
        assert!(!is_martian_destination(a("::2")) && !is_martian_destination(a("ff02::1")));
        assert!(!is_martian_source(a("2001:db8::1")));
        assert!(is_multicast(a("ff00::")) && !is_multicast(a("fe00::")));
        assert!(is_link_local(a("fe80::1")) && is_link_local(a("febf::1")));
        assert!(!is_link_local(a("fec0::1")), "fec0::/10 is not link-local");
    }
}
