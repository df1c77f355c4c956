//! Ethernet II frames (IEEE 802.3 clause 3, without preamble and FCS) and the IEEE 802.1Q
//! VLAN tag that may follow the source address.
//!
//! After `check_len`, no accessor of `Frame` or `VlanTag` panics.

use super::{be16, put16, Error, Result};

/// EtherType values (IEEE Registration Authority).
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    /// IEEE 802.1Q customer VLAN tag (C-tag).
    pub const VLAN: u16 = 0x8100;
    pub const IPV6: u16 = 0x86dd;
    /// IEEE 802.1ad service VLAN tag (S-tag, "QinQ").
    pub const QINQ: u16 = 0x88a8;
    /// Pre-standard QinQ tag some switches still emit.
    pub const QINQ_LEGACY: u16 = 0x9100;

    /// Whether an EtherType announces a VLAN tag rather than a payload.
    pub const fn is_vlan(t: u16) -> bool {
        matches!(t, VLAN | QINQ | QINQ_LEGACY)
    }
}

pub type Address = [u8; 6];

pub const BROADCAST: Address = [0xff; 6];

/// Group (multicast or broadcast) addresses have the I/G bit, the least significant bit of
/// the first octet, set (IEEE 802-2014 section 8.2).
#[inline]
pub const fn is_multicast(addr: &Address) -> bool {
    addr[0] & 0x01 != 0
}

mod field {
    use core::ops::Range;
    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
    pub const PAYLOAD: usize = 14;
}

/// Destination, source and EtherType.
pub const HEADER_LEN: usize = field::PAYLOAD;
/// The smallest frame on the wire without its FCS (IEEE 802.3 clause 4.4.2: 64 octets with it).
pub const MIN_FRAME_LEN: usize = 60;

/// A view of an Ethernet II frame.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Frame<T>> {
        let f = Frame::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
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
    pub fn dst_addr(&self) -> Address {
        let mut a = [0; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::DESTINATION]);
        a
    }

    #[inline]
    pub fn src_addr(&self) -> Address {
        let mut a = [0; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::SOURCE]);
        a
    }

    #[inline]
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    #[inline]
    pub fn set_dst_addr(&mut self, a: Address) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&a);
    }

    #[inline]
    pub fn set_src_addr(&mut self, a: Address) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&a);
    }

    #[inline]
    pub fn set_ethertype(&mut self, t: u16) {
        put16(self.buffer.as_mut(), field::ETHERTYPE, t);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

mod vlan_field {
    pub const TCI: usize = 0;
    pub const ETHERTYPE: usize = 2;
    pub const PAYLOAD: usize = 4;
}

/// The 802.1Q tag after its TPID: tag control information and the inner EtherType.
pub const VLAN_TAG_LEN: usize = vlan_field::PAYLOAD;
/// VLAN ids 0 (priority tag, no VLAN) and 4095 are reserved (IEEE 802.1Q table 9-2).
pub const VLAN_MAX: u16 = 4094;

/// The tag control information of a tag for `vlan_id` with `priority` (PCP), drop
/// eligibility clear (IEEE 802.1Q section 6.9.3).
#[inline]
pub const fn tci(priority: u8, vlan_id: u16) -> u16 {
    ((priority as u16 & 0x7) << 13) | (vlan_id & 0x0fff)
}

/// A view of an 802.1Q tag, over the payload of a frame whose EtherType is `VLAN`.
#[derive(Debug, Clone)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    pub const fn new_unchecked(buffer: T) -> VlanTag<T> {
        VlanTag { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<VlanTag<T>> {
        let t = VlanTag::new_unchecked(buffer);
        t.check_len()?;
        Ok(t)
    }

    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < VLAN_TAG_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Tag control information: priority (3 bits), drop eligible (1), VLAN id (12).
    #[inline]
    pub fn tci(&self) -> u16 {
        be16(self.buffer.as_ref(), vlan_field::TCI)
    }

    #[inline]
    pub fn vlan_id(&self) -> u16 {
        self.tci() & 0x0fff
    }

    #[inline]
    pub fn priority(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    #[inline]
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), vlan_field::ETHERTYPE)
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[vlan_field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    #[inline]
    pub fn set_tci(&mut self, tci: u16) {
        put16(self.buffer.as_mut(), vlan_field::TCI, tci);
    }

    #[inline]
    pub fn set_ethertype(&mut self, t: u16) {
        put16(self.buffer.as_mut(), vlan_field::ETHERTYPE, t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An untagged IPv4 frame header followed by two payload octets.
    const FRAME: [u8; 16] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // dst
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // src
        0x08, 0x00, // IPv4
        0xaa, 0xbb,
    ];

    // A tagged frame: TPID 8100, PCP 5, VID 100, inner IPv6.
    const TAGGED: [u8; 18] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, //
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, //
        0x81, 0x00, 0xa0, 0x64, 0x86, 0xdd,
    ];

    #[test]
    fn parse() {
        let f = Frame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(f.dst_addr(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(f.src_addr(), [2, 0, 0, 0, 0, 2]);
        assert_eq!(f.ethertype(), ethertype::IPV4);
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
        assert!(!is_multicast(&f.dst_addr()));
    }

    #[test]
    fn parse_tagged() {
        let f = Frame::new_checked(&TAGGED[..]).unwrap();
        assert!(is_multicast(&f.dst_addr()));
        assert!(ethertype::is_vlan(f.ethertype()));
        let t = VlanTag::new_checked(f.payload()).unwrap();
        assert_eq!(t.vlan_id(), 100);
        assert_eq!(t.priority(), 5);
        assert_eq!(t.ethertype(), ethertype::IPV6);
        assert!(t.payload().is_empty());
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 18];
        let mut f = Frame::new_unchecked(&mut buf[..]);
        f.set_dst_addr([2, 0, 0, 0, 0, 1]);
        f.set_src_addr([2, 0, 0, 0, 0, 2]);
        f.set_ethertype(ethertype::VLAN);
        let mut t = VlanTag::new_unchecked(f.payload_mut());
        t.set_tci(0xa064);
        t.set_ethertype(ethertype::IPV6);
        assert_eq!(buf[..12], FRAME[..12]);
        assert_eq!(buf[12..], TAGGED[12..]);
    }

    #[test]
    fn truncated() {
        assert_eq!(Frame::new_checked(&FRAME[..13]).unwrap_err(), Error::Truncated);
        assert_eq!(VlanTag::new_checked(&TAGGED[14..17]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn overlong() {
        let mut long = [0u8; 1600];
        long[..16].copy_from_slice(&FRAME);
        let f = Frame::new_checked(&long[..]).unwrap();
        assert_eq!(f.ethertype(), ethertype::IPV4);
        assert_eq!(f.payload().len(), 1600 - HEADER_LEN);
    }

    #[test]
    fn tci_round_trips_through_the_tag_view() {
        let mut b = [0u8; VLAN_TAG_LEN];
        VlanTag::new_unchecked(&mut b[..]).set_tci(tci(5, 300));
        let t = VlanTag::new_checked(&b[..]).unwrap();
        assert_eq!((t.priority(), t.vlan_id(), t.tci()), (5, 300, 0xa000 | 300));
        assert_eq!(tci(7, 0xffff), 0xefff, "out-of-range bits masked, DEI clear");
    }
}
