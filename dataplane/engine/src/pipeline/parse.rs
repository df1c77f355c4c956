//! Parsing and validation of a received frame: the Ethernet header and its tag, then the
//! IPv4 (RFC 1812 section 5.2.2, 5.3.7) or IPv6 (RFC 8200, RFC 4291) header. Fills the
//! frame's `Meta` and returns the destination to look up, or the reason to drop it.

use super::hash::flow_hash;
use super::{Destination, Family, Meta, PacketBuf, Pipeline};
use crate::drop::DropReason;
use crate::wire::ethernet::{self, ethertype};
use crate::wire::{icmpv4, icmpv6, ip_protocol, ipv4, ipv6, ports};

impl Pipeline {
    /// Validates the link and IP headers; fills `m` and returns the destination to look up.
    pub(super) fn parse(&self, frame: &PacketBuf<'_>, m: &mut Meta) -> Result<Destination, DropReason> {
        let port = self.ports.get(frame.port as usize).ok_or(DropReason::UnknownVlan)?;
        let end = frame.start.checked_add(frame.len).ok_or(DropReason::Truncated)?;
        let data = frame.chunk.get(frame.start..end).ok_or(DropReason::Truncated)?;
        // The fixed headers are read through array views (`&[u8; N]`, checked once here):
        // their getters then index constant offsets with no bounds check each.
        let eth = ethernet::Frame::new_unchecked(data.first_chunk::<{ ethernet::HEADER_LEN }>().ok_or(DropReason::Truncated)?);

        let mut ether_type = eth.ethertype();
        let mut l2_len = ethernet::HEADER_LEN;
        let mut vlan = 0;
        if ethertype::is_vlan(ether_type) {
            if ether_type != ethertype::VLAN {
                return Err(DropReason::MultipleVlanTags);
            }
            let tag = data
                .get(ethernet::HEADER_LEN..)
                .and_then(<[u8]>::first_chunk::<{ ethernet::VLAN_TAG_LEN }>)
                .ok_or(DropReason::Truncated)?;
            let tag = ethernet::VlanTag::new_unchecked(tag);
            m.tagged = true;
            m.tci = tag.tci();
            m.priority = tag.priority();
            vlan = tag.vlan_id();
            ether_type = tag.ethertype();
            l2_len += ethernet::VLAN_TAG_LEN;
            if ethertype::is_vlan(ether_type) {
                return Err(DropReason::MultipleVlanTags);
            }
        }
        // A priority tag (VLAN 0) belongs to the untagged sub-interface (802.1Q 6.9.1).
        let sub = port.sub(vlan).ok_or(DropReason::UnknownVlan)?;
        m.sub = sub;
        m.l2_len = l2_len as u8;
        self.counters.count_rx(sub as usize, data.len());

        if ether_type != ethertype::IPV4 && ether_type != ethertype::IPV6 {
            return Err(DropReason::NotIp);
        }
        let dst_mac = eth.dst_addr();
        let link_multicast = ethernet::is_multicast(&dst_mac);
        if !link_multicast && dst_mac != port.mac {
            return Err(DropReason::OtherHost);
        }
        let ip = data.get(l2_len..).ok_or(DropReason::Truncated)?;
        if ether_type == ethertype::IPV4 {
            self.parse_v4(ip, link_multicast, m).map(|(dst, src)| Destination::V4(dst, src))
        } else {
            self.parse_v6(ip, link_multicast, m).map(|(dst, src)| Destination::V6(dst, src))
        }
    }

    /// RFC 1812 section 5.2.2 and 5.3.7. Returns (destination, source).
    pub(super) fn parse_v4(&self, ip: &[u8], link_multicast: bool, m: &mut Meta) -> Result<(u32, u32), DropReason> {
        // The fixed header as an array: its fields are read at constant offsets unchecked.
        let h = ipv4::Packet::new_unchecked(ip.first_chunk::<{ ipv4::HEADER_LEN }>().ok_or(DropReason::Truncated)?);
        if h.version() != 4 {
            return Err(DropReason::Ipv4BadVersion);
        }
        let header_len = h.header_len() as usize;
        if header_len < ipv4::HEADER_LEN {
            return Err(DropReason::Ipv4BadHeaderLen);
        }
        if ip.len() < header_len {
            return Err(DropReason::Truncated);
        }
        // Without options (nearly always) the sum runs over a constant 20 octets.
        let sum_ok = if header_len == ipv4::HEADER_LEN { h.verify_checksum() } else { ipv4::Packet::new_unchecked(ip).verify_checksum() };
        if !sum_ok {
            return Err(DropReason::Ipv4BadChecksum);
        }
        let total = h.total_len() as usize;
        if total < header_len || total > ip.len() {
            return Err(DropReason::Ipv4BadTotalLen);
        }
        let p = ipv4::Packet::new_unchecked(ip.get(..total).ok_or(DropReason::Ipv4BadTotalLen)?);
        debug_assert!(p.check_len().is_ok());

        let (src, dst) = (h.src_addr(), h.dst_addr());
        if ipv4::is_martian_source(src) {
            return Err(DropReason::MartianSource);
        }
        if ipv4::is_limited_broadcast(dst) {
            return Err(DropReason::BroadcastDestination);
        }
        if ipv4::is_multicast(dst) {
            return Err(DropReason::MulticastDestination);
        }
        if ipv4::is_martian_destination(dst) {
            return Err(DropReason::MartianDestination);
        }
        if ipv4::is_link_local(src) || ipv4::is_link_local(dst) {
            return Err(DropReason::LinkLocal);
        }
        if link_multicast {
            return Err(DropReason::LinkBroadcast);
        }

        let protocol = h.protocol();
        let initial = h.frag_offset() == 0;
        let fragment = !initial || h.more_frags();
        let payload = p.payload();
        // RFC 1812 section 4.3.2.7: no error about an ICMP error or a non-initial fragment.
        m.icmp_ok = initial && (protocol != ip_protocol::ICMP || payload.first().is_some_and(|&t| !icmpv4::is_error(t)));
        // Fragments carry no ports after the first: hash every fragment without them so a
        // datagram's fragments stay on one path.
        let l4 = if !fragment && ports::has_ports(protocol) { l4_ports(payload) } else { 0 };
        let (src, dst) = (src.to_bits(), dst.to_bits());
        m.maybe_broadcast = dst & self.broadcast_host_bits == self.broadcast_host_bits;
        m.flow_hash = flow_hash(self.hash_seed, &[(src as u64) << 32 | dst as u64, (protocol as u64) << 32 | l4 as u64]);
        m.dont_frag = h.dont_frag();
        m.ip_len = total as u16;
        m.family = Family::V4;
        Ok((dst, src))
    }

    /// RFC 8200 section 3, RFC 4291 section 2. Returns (destination, source).
    fn parse_v6(&self, ip: &[u8], link_multicast: bool, m: &mut Meta) -> Result<(u128, u128), DropReason> {
        // The fixed header as an array: its fields are read at constant offsets unchecked.
        let h = ipv6::Packet::new_unchecked(ip.first_chunk::<{ ipv6::HEADER_LEN }>().ok_or(DropReason::Truncated)?);
        if h.version() != 6 {
            return Err(DropReason::Ipv6BadVersion);
        }
        let total = h.total_len();
        let p = ipv6::Packet::new_unchecked(ip.get(..total).ok_or(DropReason::Ipv6BadPayloadLen)?);
        debug_assert!(p.check_len().is_ok());
        if total > u16::MAX as usize {
            // 40 + 65535 octets cannot be an Ethernet frame; the check above caught it.
            return Err(DropReason::Ipv6BadPayloadLen);
        }

        let (src, dst) = (h.src_addr(), h.dst_addr());
        if ipv6::is_martian_source(src) {
            return Err(DropReason::MartianSource);
        }
        if ipv6::is_multicast(dst) {
            return Err(DropReason::MulticastDestination);
        }
        if ipv6::is_martian_destination(dst) {
            return Err(DropReason::MartianDestination);
        }
        if ipv6::is_link_local(src) || ipv6::is_link_local(dst) {
            return Err(DropReason::LinkLocal);
        }
        if link_multicast {
            return Err(DropReason::LinkBroadcast);
        }

        let payload = p.payload();
        let upper = ipv6::upper_layer(h.next_header(), payload);
        // RFC 4443 section 2.4 (e): no error about an error; nor about a non-initial
        // fragment or a header chain we could not walk (it might hide an error).
        m.icmp_ok = match upper {
            None => false,
            Some(u) if u.fragment.is_some_and(|(off, _)| off != 0) => false,
            Some(u) if u.protocol == ip_protocol::ICMPV6 => payload.get(u.offset).is_some_and(|&t| !icmpv6::is_error(t)),
            Some(_) => true,
        };
        let (protocol, l4) = match upper {
            Some(u) if u.fragment.is_none() && ports::has_ports(u.protocol) => (u.protocol, payload.get(u.offset..).map_or(0, l4_ports)),
            Some(u) => (u.protocol, 0),
            None => (h.next_header(), 0),
        };
        let rest = (h.flow_label() as u64) << 40 | (protocol as u64) << 32 | l4 as u64;
        let (src, dst) = (src.to_bits(), dst.to_bits());
        m.flow_hash = flow_hash(self.hash_seed, &[(src >> 64) as u64, src as u64, (dst >> 64) as u64, dst as u64, rest]);
        m.ip_len = total as u16;
        m.family = Family::V6;
        Ok((dst, src))
    }
}

/// Source and destination port as one word; 0 when the header is cut short. Through an
/// array view, as the IP headers: `new_checked`'s `Result::map_or` stayed an out-of-line
/// call per frame.
#[inline(always)]
pub(super) fn l4_ports(l4: &[u8]) -> u32 {
    match l4.first_chunk::<{ ports::HEADER_LEN }>() {
        Some(h) => {
            let p = ports::Ports::new_unchecked(h);
            (p.src_port() as u32) << 16 | p.dst_port() as u32
        }
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::drop::DropReason;
    use crate::pipeline::Verdict;
    use crate::wire::ethernet::{self, ethertype};
    use crate::wire::ip_protocol;
    use std::net::Ipv6Addr;

    #[test]
    fn link_layer_drops() {
        let mut rig = rig();
        let good = v4_frame([198, 19, 1, 5], 64);
        assert_silent_drop(&mut rig, 0, good[..10].to_vec(), DropReason::Truncated, "runt");
        assert_silent_drop(&mut rig, 0, good[..14 + 19].to_vec(), DropReason::Truncated, "IPv4 header cut");
        let tagged = eth(MAC0, Some(100), ethertype::IPV4, &[]);
        assert_silent_drop(&mut rig, 0, tagged[..16].to_vec(), DropReason::Truncated, "tag cut");
        assert_silent_drop(&mut rig, 0, eth(MAC0, None, ethertype::ARP, &[0; 46]), DropReason::NotIp, "ARP");
        assert_silent_drop(&mut rig, 0, eth(MAC0, Some(100), ethertype::ARP, &[0; 46]), DropReason::NotIp, "tagged ARP");
        let mut double = eth(MAC0, Some(100), ethertype::VLAN, &[0x00, 0x05]);
        double.extend_from_slice(&good[12..]);
        assert_silent_drop(&mut rig, 0, double, DropReason::MultipleVlanTags, "two 802.1Q tags");
        let mut qinq = good.clone();
        qinq.splice(12..12, [0x88, 0xa8, 0x00, 0x64]);
        assert_silent_drop(&mut rig, 0, qinq, DropReason::MultipleVlanTags, "802.1ad");
        assert_silent_drop(&mut rig, 0, eth(MAC0, Some(555), ethertype::IPV4, &good[14..]), DropReason::UnknownVlan, "unknown VLAN");
        assert_silent_drop(
            &mut rig,
            2,
            eth(MAC2, Some(100), ethertype::IPV4, &good[14..]),
            DropReason::UnknownVlan,
            "VLAN of another port",
        );
        assert_silent_drop(&mut rig, 7, good.clone(), DropReason::UnknownVlan, "unknown port");
        assert_silent_drop(&mut rig, 0, eth([2, 0, 0, 0, 0, 0x99], None, ethertype::IPV4, &good[14..]), DropReason::OtherHost, "other MAC");
        assert_silent_drop(
            &mut rig,
            0,
            eth(ethernet::BROADCAST, None, ethertype::IPV4, &good[14..]),
            DropReason::LinkBroadcast,
            "L2 broadcast",
        );
        assert_silent_drop(
            &mut rig,
            0,
            eth([0x01, 0, 0x5e, 0, 0, 1], None, ethertype::IPV4, &good[14..]),
            DropReason::LinkBroadcast,
            "L2 multicast",
        );
        let v6 = v6_frame(v6(1, 5), 64);
        assert_silent_drop(
            &mut rig,
            0,
            eth([0x33, 0x33, 0, 0, 0, 1], None, ethertype::IPV6, &v6[14..]),
            DropReason::LinkBroadcast,
            "v6 in L2 multicast",
        );
        // A priority-tagged frame (VID 0) is the untagged sub-interface's.
        let out = rig.run1(0, eth(MAC0, Some(0xa000), ethertype::IPV4, &good[14..]));
        assert!(matches!(out.verdict, Verdict::Forward { port: 1, .. }));
    }

    #[test]
    fn ipv4_header_drops() {
        let mut rig = rig();
        let good = v4_frame([198, 19, 1, 5], 64);
        assert_silent_drop(&mut rig, 0, edit_v4(good.clone(), |ip| ip[0] = 0x55), DropReason::Ipv4BadVersion, "version 5");
        assert_silent_drop(&mut rig, 0, edit_v4(good.clone(), |ip| ip[0] = 0x44), DropReason::Ipv4BadHeaderLen, "IHL 4");
        let mut bad = good.clone();
        bad[14 + 10] ^= 0x01;
        assert_silent_drop(&mut rig, 0, bad, DropReason::Ipv4BadChecksum, "checksum");
        assert_silent_drop(
            &mut rig,
            0,
            edit_v4(good.clone(), |ip| ip[2..4].copy_from_slice(&19u16.to_be_bytes())),
            DropReason::Ipv4BadTotalLen,
            "total < IHL*4",
        );
        let too_long = (good.len() - 14 + 1) as u16;
        assert_silent_drop(
            &mut rig,
            0,
            edit_v4(good.clone(), |ip| ip[2..4].copy_from_slice(&too_long.to_be_bytes())),
            DropReason::Ipv4BadTotalLen,
            "total > frame",
        );
        // IHL 15 in a frame too short for 60 octets of header.
        assert_silent_drop(
            &mut rig,
            0,
            good[..14 + 40].iter().copied().enumerate().map(|(i, b)| if i == 14 { 0x4f } else { b }).collect(),
            DropReason::Truncated,
            "options cut",
        );
    }

    #[test]
    fn ipv4_address_drops() {
        let mut rig = rig();
        let with = |src: [u8; 4], dst: [u8; 4]| eth(MAC0, None, ethertype::IPV4, &ipv4(src, dst, 64, ip_protocol::UDP, &udp(1, 2, 26)));
        for src in [[0, 1, 2, 3], [127, 0, 0, 1], [224, 0, 0, 5], [239, 1, 1, 1], [240, 0, 0, 1], [255, 255, 255, 255]] {
            assert_silent_drop(&mut rig, 0, with(src, [198, 19, 1, 5]), DropReason::MartianSource, &format!("source {src:?}"));
        }
        for dst in [[0, 0, 0, 1], [127, 0, 0, 1], [240, 0, 0, 1], [254, 1, 2, 3]] {
            assert_silent_drop(&mut rig, 0, with(SRC4, dst), DropReason::MartianDestination, &format!("destination {dst:?}"));
        }
        assert_silent_drop(&mut rig, 0, with(SRC4, [255, 255, 255, 255]), DropReason::BroadcastDestination, "limited broadcast");
        let mut bcast = with(SRC4, [255, 255, 255, 255]);
        bcast[..6].copy_from_slice(&ethernet::BROADCAST);
        assert_silent_drop(&mut rig, 0, bcast, DropReason::BroadcastDestination, "limited broadcast in L2 broadcast");
        for dst in [[224, 0, 0, 5], [239, 255, 255, 250]] {
            assert_silent_drop(&mut rig, 0, with(SRC4, dst), DropReason::MulticastDestination, "multicast");
        }
        // Multicast with TTL 1: still not an ICMP case.
        let mc = eth(MAC0, None, ethertype::IPV4, &ipv4(SRC4, [224, 0, 0, 5], 1, ip_protocol::UDP, &udp(1, 2, 26)));
        assert_silent_drop(&mut rig, 0, mc, DropReason::MulticastDestination, "multicast TTL 1");
        assert_silent_drop(&mut rig, 0, with([169, 254, 1, 1], [198, 19, 1, 5]), DropReason::LinkLocal, "link-local source");
        assert_silent_drop(&mut rig, 0, with(SRC4, [169, 254, 1, 1]), DropReason::LinkLocal, "link-local destination");
    }

    #[test]
    fn ipv6_drops() {
        let mut rig = rig();
        let with = |src: Ipv6Addr, dst: Ipv6Addr| eth(MAC0, None, ethertype::IPV6, &ipv6(src, dst, 64, ip_protocol::UDP, &udp(1, 2, 26)));
        let mut bad = v6_frame(v6(1, 5), 64);
        bad[14] = 0x40;
        assert_silent_drop(&mut rig, 0, bad, DropReason::Ipv6BadVersion, "version 4 in IPv6");
        let mut bad = v6_frame(v6(1, 5), 64);
        bad[18..20].copy_from_slice(&100u16.to_be_bytes());
        assert_silent_drop(&mut rig, 0, bad, DropReason::Ipv6BadPayloadLen, "payload length > frame");
        assert_silent_drop(&mut rig, 0, v6_frame(v6(1, 5), 64)[..14 + 39].to_vec(), DropReason::Truncated, "header cut");
        let ll: Ipv6Addr = "fe80::1".parse().unwrap();
        for src in [Ipv6Addr::UNSPECIFIED, Ipv6Addr::LOCALHOST, "ff02::1".parse().unwrap(), "ff0e::1".parse().unwrap()] {
            assert_silent_drop(&mut rig, 0, with(src, v6(1, 5)), DropReason::MartianSource, &format!("source {src}"));
        }
        for dst in [Ipv6Addr::UNSPECIFIED, Ipv6Addr::LOCALHOST] {
            assert_silent_drop(&mut rig, 0, with(src6(), dst), DropReason::MartianDestination, &format!("destination {dst}"));
        }
        for dst in ["ff02::1", "ff05::2", "ff0e::1"] {
            assert_silent_drop(&mut rig, 0, with(src6(), dst.parse().unwrap()), DropReason::MulticastDestination, dst);
        }
        assert_silent_drop(&mut rig, 0, with(ll, v6(1, 5)), DropReason::LinkLocal, "link-local source");
        assert_silent_drop(&mut rig, 0, with(src6(), "febf::1".parse().unwrap()), DropReason::LinkLocal, "link-local destination");
        // fec0::/10 is not link-local: it is routed (here: no route).
        let out = rig.run1(0, with(src6(), "fec0::1".parse().unwrap()));
        assert!(matches!(out.verdict, Verdict::Forward { port: 0, .. }), "answered as no route");
    }
}
