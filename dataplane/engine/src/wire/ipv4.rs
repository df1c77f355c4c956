//! IPv4 headers (RFC 791 section 3.1).
//!
//! `check_len` verifies the fixed header, the IHL, and that the buffer holds `total_len`
//! octets; after it, no accessor panics. The fixed-header getters (everything but
//! `options` and `payload`) need only `HEADER_LEN` octets, so a validator may read them
//! to choose its drop reason before calling `check_len`.

use std::net::Ipv4Addr;

use super::{be16, checksum, put16, Error, Result};

mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// The header without options (RFC 791 section 3.1: IHL 5).
pub const HEADER_LEN: usize = 20;
/// Every host must accept a 576-octet datagram (RFC 791 section 3.1 "Total Length"); ICMP
/// errors stay within it (RFC 1812 section 4.3.2.3).
pub const MIN_MTU: usize = 576;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet.
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

    /// The buffer may be longer than `total_len` (link-layer padding); `payload` ends at
    /// `total_len`.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let ihl = self.header_len() as usize;
        if ihl < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if len < ihl {
            return Err(Error::Truncated);
        }
        let total = self.total_len() as usize;
        if total < ihl {
            return Err(Error::Malformed);
        }
        if len < total {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in octets (IHL * 4).
    #[inline(always)]
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Differentiated services (RFC 2474) and ECN (RFC 3168), as one octet.
    #[inline(always)]
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    #[inline(always)]
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    #[inline(always)]
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    #[inline(always)]
    pub fn dont_frag(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_DF != 0
    }

    #[inline(always)]
    pub fn more_frags(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_MF != 0
    }

    /// The fragment offset in octets.
    #[inline(always)]
    pub fn frag_offset(&self) -> u16 {
        (be16(self.buffer.as_ref(), field::FLG_OFF) & OFFSET_MASK) << 3
    }

    #[inline(always)]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    #[inline(always)]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    #[inline(always)]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline(always)]
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    #[inline(always)]
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Whether the header, options included, sums to 0xffff (RFC 1071). Needs the buffer
    /// to hold `header_len` octets; false when it does not.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        match self.buffer.as_ref().get(..self.header_len() as usize) {
            Some(h) => checksum::data(h) == 0xffff,
            None => false,
        }
    }

    #[inline(always)]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len() as usize]
    }

    /// The payload up to `total_len`, without link-layer padding.
    #[inline(always)]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len() as usize..self.total_len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    pub fn set_version(&mut self, v: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (v << 4);
    }

    /// Sets the IHL from a length in octets (a multiple of 4).
    #[inline]
    pub fn set_header_len(&mut self, len: u8) {
        debug_assert!(len.is_multiple_of(4));
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((len / 4) & 0x0f);
    }

    #[inline]
    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = v;
    }

    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }

    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::IDENT, v);
    }

    /// Sets DF, MF and the offset (in octets, a multiple of 8) at once.
    #[inline]
    pub fn set_flags_and_offset(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        debug_assert!(offset.is_multiple_of(8));
        let v = if dont_frag { FLAG_DF } else { 0 } | if more_frags { FLAG_MF } else { 0 } | ((offset >> 3) & OFFSET_MASK);
        put16(self.buffer.as_mut(), field::FLG_OFF, v);
    }

    #[inline]
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    #[inline]
    pub fn set_protocol(&mut self, v: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = v;
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }

    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }

    /// Computes the header checksum from scratch (over `header_len` octets).
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::data(&self.buffer.as_ref()[..self.header_len() as usize]);
        self.set_checksum(!sum);
    }

    /// Decrements the TTL and updates the checksum incrementally (RFC 1624 eqn. 3, as
    /// `checksum::ttl_decremented` computes it) over the 16-bit word that holds TTL and
    /// protocol. The caller has checked TTL > 0.
    #[inline]
    pub fn decrement_ttl(&mut self) {
        let ttl = self.ttl();
        debug_assert!(ttl > 0);
        self.set_ttl(ttl.wrapping_sub(1));
        let c = checksum::ttl_decremented(self.checksum());
        self.set_checksum(c);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (h, t) = (self.header_len() as usize, self.total_len() as usize);
        &mut self.buffer.as_mut()[h..t]
    }
}

/// Address classes a router must not forward (RFC 1812 section 5.3.7), checked on every
/// received packet, so integer tests rather than `Ipv4Addr`'s methods.
///
/// 0/8 "this network", 127/8 loopback, 224/4 multicast, 240/4 reserved (which holds
/// 255.255.255.255): never a source (RFC 1812 section 5.3.7, RFC 6890).
#[inline]
pub const fn is_martian_source(a: Ipv4Addr) -> bool {
    let a = a.to_bits();
    matches!(a >> 24, 0 | 127) || a >> 28 >= 0xe
}

/// 0/8, 127/8, 240/4: never a destination to forward to (RFC 1812 section 5.3.7).
#[inline]
pub const fn is_martian_destination(a: Ipv4Addr) -> bool {
    let a = a.to_bits();
    matches!(a >> 24, 0 | 127) || a >> 28 == 0xf
}

/// 224.0.0.0/4 (RFC 5771).
#[inline]
pub const fn is_multicast(a: Ipv4Addr) -> bool {
    a.to_bits() >> 28 == 0xe
}

/// 169.254.0.0/16 (RFC 3927 section 7: routers must not forward it).
#[inline]
pub const fn is_link_local(a: Ipv4Addr) -> bool {
    a.to_bits() >> 16 == 0xa9fe
}

/// 255.255.255.255, the limited broadcast (RFC 1812 section 5.3.5.1).
#[inline]
pub const fn is_limited_broadcast(a: Ipv4Addr) -> bool {
    a.to_bits() == u32::MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    // 198.18.0.1 -> 198.19.0.2, UDP, TTL 64, DF, total length 24 (4 payload octets).
    const PACKET: [u8; 24] = [
        0x45, 0x00, 0x00, 0x18, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, // checksum filled below
        198, 18, 0, 1, 198, 19, 0, 2, //
        0xde, 0xad, 0xbe, 0xef,
    ];

    fn packet() -> [u8; 24] {
        let mut b = PACKET;
        Packet::new_unchecked(&mut b[..]).fill_checksum();
        b
    }

    #[test]
    fn parse() {
        let b = packet();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 24);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), 17);
        assert_eq!(p.src_addr(), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(198, 19, 0, 2));
        assert!(p.verify_checksum());
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert!(p.options().is_empty());
    }

    #[test]
    fn construct() {
        let mut b = [0u8; 24];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_version(4);
        p.set_header_len(20);
        p.set_total_len(24);
        p.set_ident(0x1234);
        p.set_flags_and_offset(true, false, 0);
        p.set_ttl(64);
        p.set_protocol(17);
        p.set_src_addr(Ipv4Addr::new(198, 18, 0, 1));
        p.set_dst_addr(Ipv4Addr::new(198, 19, 0, 2));
        p.payload_mut().copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        p.fill_checksum();
        assert_eq!(b, packet());
    }

    #[test]
    fn fragment_fields() {
        let mut b = packet();
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_flags_and_offset(false, true, 1480);
        assert!(!p.dont_frag());
        assert!(p.more_frags());
        assert_eq!(p.frag_offset(), 1480);
    }

    #[test]
    fn decrement_ttl_keeps_checksum_valid() {
        let mut b = packet();
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.decrement_ttl();
        assert_eq!(p.ttl(), 63);
        assert!(p.verify_checksum());
    }

    #[test]
    fn truncated() {
        let b = packet();
        assert_eq!(Packet::new_checked(&b[..19]).unwrap_err(), Error::Truncated);
        // The header announces 24 octets; 22 are present.
        assert_eq!(Packet::new_checked(&b[..22]).unwrap_err(), Error::Truncated);
        let mut opts = packet();
        opts[0] = 0x46; // IHL 6: 24 octets of header
        assert_eq!(Packet::new_checked(&opts[..21]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn malformed() {
        let mut b = packet();
        b[0] = 0x44; // IHL 4
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        let mut b = packet();
        b[3] = 19; // total length below the header
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Malformed);
    }

    #[test]
    fn overlong() {
        let mut long = [0u8; 60];
        long[..24].copy_from_slice(&packet());
        let p = Packet::new_checked(&long[..]).unwrap();
        assert_eq!(p.payload().len(), 4, "padding is not payload");
    }

    #[test]
    fn bad_checksum() {
        let mut b = packet();
        b[15] ^= 1;
        assert!(!Packet::new_unchecked(&b[..]).verify_checksum());
    }

    proptest::proptest! {
        /// RFC 1624: the incremental update equals a recomputation from scratch, for any
        /// header (options included) and any TTL above 0.
        #[test]
        fn incremental_checksum_equals_recomputation(
            mut header in proptest::collection::vec(proptest::prelude::any::<u8>(), 60),
            ihl in 5u8..=15,
            ttl in 1u8..=255,
        ) {
            header[0] = 0x40 | ihl;
            header[8] = ttl;
            let len = ihl as usize * 4;
            let mut p = Packet::new_unchecked(&mut header[..len]);
            p.fill_checksum();
            p.decrement_ttl();
            let incremental = p.checksum();
            p.fill_checksum();
            proptest::prop_assert_eq!(incremental, p.checksum());
            proptest::prop_assert!(p.verify_checksum());
        }
    }

    #[test]
    fn address_classes() {
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        for s in ["0.1.2.3", "127.0.0.1", "224.0.0.5", "239.1.1.1", "240.0.0.1", "255.255.255.255"] {
            assert!(is_martian_source(a(s)), "{s}");
        }
        for s in ["0.0.0.1", "127.0.0.1", "240.0.0.1", "254.1.2.3", "255.255.255.255"] {
            assert!(is_martian_destination(a(s)), "{s}");
        }
        for s in ["198.18.0.1", "1.1.1.1", "223.255.255.255", "169.254.1.1"] {
            assert!(!is_martian_source(a(s)) && !is_martian_destination(a(s)), "{s}");
        }
        assert!(!is_martian_destination(a("224.0.0.5")), "multicast is its own class");
        assert!(is_multicast(a("224.0.0.0")) && is_multicast(a("239.255.255.255")));
        assert!(!is_multicast(a("223.255.255.255")) && !is_multicast(a("240.0.0.0")));
        assert!(is_link_local(a("169.254.0.0")) && is_link_local(a("169.254.255.255")));
        assert!(!is_link_local(a("169.253.255.255")) && !is_link_local(a("169.255.0.0")));
        assert!(is_limited_broadcast(a("255.255.255.255")) && !is_limited_broadcast(a("255.255.255.254")));
    }
}
