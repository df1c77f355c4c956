//! Acting on a looked-up route: directed broadcasts of attached subnets, the TTL / hop
//! limit check and decrement, the egress MTU, and the new link header (MACs, VLAN tag
//! pushed, popped or rewritten).

use super::icmp::IcmpError;
use super::{Family, Meta, PacketBuf, Pipeline, Verdict};
use crate::drop::DropReason;
use crate::fib::{FibReader, RouteTarget};
use crate::wire::ethernet::{self, ethertype};
use crate::wire::{ipv4, ipv6};

impl Pipeline {
    /// Acts on the looked-up route: answers, drops or rewrites and forwards.
    pub(super) fn forward(&mut self, fib: &FibReader, frame: &mut PacketBuf<'_>, m: &Meta, entry: u32, now_ns: u64) -> Verdict {
        // Before the route: a directed broadcast is never answered with ICMP.
        if m.maybe_broadcast {
            if let Some(v) = self.directed_broadcast(frame, m) {
                return v;
            }
        }
        let group = match RouteTarget::from_entry(entry) {
            None => return self.reject(frame, m, IcmpError::NoRoute, DropReason::NoRoute, now_ns),
            Some(RouteTarget::Unreachable) => return self.reject(frame, m, IcmpError::Unreachable, DropReason::Unreachable, now_ns),
            Some(RouteTarget::Blackhole) => {
                self.count_blackhole(fib, frame, m);
                return self.drop(frame.port, DropReason::Blackhole);
            }
            Some(RouteTarget::Local) => return self.drop(frame.port, DropReason::Local),
            Some(RouteTarget::Glean) => return self.glean(frame, m, now_ns),
            Some(RouteTarget::Group(g)) => g,
        };
        let ip_off = frame.start + m.l2_len as usize;
        let ip_end = ip_off + m.ip_len as usize;
        // TTL after the lookup, as Linux does: packets for Local and Blackhole routes are
        // not answered with Time Exceeded.
        // Parsing checked the datagram holds its header, so the views' getters cannot panic.
        let ttl = match frame.chunk.get(ip_off..ip_end) {
            Some(ip) if m.family == Family::V4 => ipv4::Packet::new_unchecked(ip).ttl(),
            Some(ip) => ipv6::Packet::new_unchecked(ip).hop_limit(),
            None => return self.drop(frame.port, DropReason::Truncated),
        };
        if ttl <= 1 {
            return self.reject(frame, m, IcmpError::TimeExceeded, DropReason::TtlExpired, now_ns);
        }
        let (adjacency_id, adjacency) = match fib.next_hop(group, m.flow_hash) {
            Some((id, a)) => (id, *a),
            None => return self.drop(frame.port, DropReason::NoAdjacency),
        };
        let Some(out) = self.ports.get(adjacency.port as usize) else {
            return self.drop(frame.port, DropReason::UnknownEgress);
        };
        let Some(out_sub) = out.sub(adjacency.vlan) else {
            return self.drop(frame.port, DropReason::UnknownEgress);
        };
        if m.ip_len > out.mtu {
            let mtu = out.mtu;
            return match m.family {
                Family::V4 if !m.dont_frag => self.drop(frame.port, DropReason::FragmentationNeeded),
                _ => self.reject(frame, m, IcmpError::TooBig(mtu), DropReason::MtuExceeded, now_ns),
            };
        }

        let verdict = self.send(frame, m, adjacency.port, adjacency.vlan, out_sub, adjacency.dst_mac, adjacency.src_mac);
        if let Verdict::Forward { len, .. } = verdict {
            self.counters.count_member_tx(fib.adjacency_member(adjacency_id), len);
            fib.mark_adjacency_used(adjacency_id);
        }
        verdict
    }

    /// Counts a frame a blackhole route dropped under that route's slot: a second lookup,
    /// for dropped frames only.
    fn count_blackhole(&self, fib: &FibReader, frame: &PacketBuf<'_>, m: &Meta) {
        let ip_off = frame.start + m.l2_len as usize;
        let Some(ip) = frame.chunk.get(ip_off..ip_off + m.ip_len as usize) else { return };
        let slot = if m.family == Family::V4 {
            fib.blackhole_slot_v4(ipv4::Packet::new_unchecked(ip).dst_addr().to_bits())
        } else {
            fib.blackhole_slot_v6(ipv6::Packet::new_unchecked(ip).dst_addr().to_bits())
        };
        if let Some(slot) = slot {
            self.counters.count_blackhole(slot);
        }
    }

    /// A host on an attached subnet with no host route yet: the frame drops (never
    /// flooded) and its destination is queued for the agent to resolve.
    #[cold]
    fn glean(&mut self, frame: &mut PacketBuf<'_>, m: &Meta, now_ns: u64) -> Verdict {
        let ip_off = frame.start + m.l2_len as usize;
        let addr = match frame.chunk.get(ip_off..ip_off + m.ip_len as usize) {
            Some(ip) if m.family == Family::V4 => super::glean::mapped_v4(ipv4::Packet::new_unchecked(ip).dst_addr().to_bits()),
            Some(ip) => ipv6::Packet::new_unchecked(ip).dst_addr().to_bits(),
            None => return self.drop(frame.port, DropReason::Truncated),
        };
        self.glean.ask(addr, now_ns);
        self.drop(frame.port, DropReason::Glean)
    }

    /// The frame's verdict when its destination is the broadcast address of an attached
    /// subnet (RFC 1812 section 5.3.5.2): dropped and counted unless the subnet's port
    /// forwards them, then sent there as a link broadcast. Never an ICMP error.
    fn directed_broadcast(&mut self, frame: &mut PacketBuf<'_>, m: &Meta) -> Option<Verdict> {
        let ip_off = frame.start + m.l2_len as usize;
        let (dst, ttl) = match frame.chunk.get(ip_off..ip_off + m.ip_len as usize) {
            Some(ip) => {
                let p = ipv4::Packet::new_unchecked(ip);
                (p.dst_addr().to_bits(), p.ttl())
            }
            None => return Some(self.drop(frame.port, DropReason::Truncated)),
        };
        let i = self.broadcasts.binary_search_by_key(&dst, |b| b.addr).ok()?;
        let b = *self.broadcasts.get(i)?;
        if !b.forward {
            return Some(self.drop(frame.port, DropReason::DirectedBroadcast));
        }
        if ttl <= 1 {
            return Some(self.drop(frame.port, DropReason::TtlExpired));
        }
        let Some(out) = self.ports.get(b.port as usize) else {
            return Some(self.drop(frame.port, DropReason::UnknownEgress));
        };
        let Some(out_sub) = out.sub(b.vlan) else {
            return Some(self.drop(frame.port, DropReason::UnknownEgress));
        };
        if m.ip_len > out.mtu {
            let reason = if m.dont_frag { DropReason::MtuExceeded } else { DropReason::FragmentationNeeded };
            return Some(self.drop(frame.port, reason));
        }
        let mac = out.mac;
        Some(self.send(frame, m, b.port, b.vlan, out_sub, ethernet::BROADCAST, mac))
    }

    /// Decrements the TTL / hop limit, writes the link header and counts the frame out.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn send(
        &mut self,
        frame: &mut PacketBuf<'_>,
        m: &Meta,
        port: u16,
        vlan: u16,
        out_sub: u16,
        dst_mac: [u8; 6],
        src_mac: [u8; 6],
    ) -> Verdict {
        let ip_off = frame.start + m.l2_len as usize;
        let ip_end = ip_off + m.ip_len as usize;
        let Some(ip) = frame.chunk.get_mut(ip_off..ip_end) else {
            return self.drop(frame.port, DropReason::Truncated);
        };
        // Through the fixed header as an array (parsing checked the datagram holds it):
        // constant offsets, no bounds check per field.
        if m.family == Family::V4 {
            let Some(h) = ip.first_chunk_mut::<{ ipv4::HEADER_LEN }>() else {
                return self.drop(frame.port, DropReason::Truncated);
            };
            ipv4::Packet::new_unchecked(h).decrement_ttl();
        } else {
            let Some(h) = ip.first_chunk_mut::<{ ipv6::HEADER_LEN }>() else {
                return self.drop(frame.port, DropReason::Truncated);
            };
            let mut p = ipv6::Packet::new_unchecked(h);
            let hop_limit = p.hop_limit();
            p.set_hop_limit(hop_limit - 1);
        }
        let ether_type = if m.family == Family::V4 { ethertype::IPV4 } else { ethertype::IPV6 };
        // Keep the ingress priority on a rewritten tag; an untagged frame gets priority 0.
        let tci = (vlan != 0).then_some(ethernet::tci(m.priority, vlan));
        match write_link(frame.chunk, ip_off, m.ip_len as usize, tci, dst_mac, src_mac, ether_type) {
            Some((start, len)) => {
                self.counters.count_tx(out_sub as usize, len);
                Verdict::Forward { port, start, len }
            }
            None => self.drop(frame.port, DropReason::NoHeadroom),
        }
    }
}

/// Writes the egress Ethernet header (with a tag when `tci` is given) just before the IP
/// datagram at `ip_off`, moving the datagram toward the chunk's end only when the headroom
/// is too small; pads to the Ethernet minimum. Returns the frame's start and length.
#[inline]
pub(super) fn write_link(
    chunk: &mut [u8],
    ip_off: usize,
    ip_len: usize,
    tci: Option<u16>,
    dst: [u8; 6],
    src: [u8; 6],
    ether_type: u16,
) -> Option<(usize, usize)> {
    let l2_len = ethernet::HEADER_LEN + if tci.is_some() { ethernet::VLAN_TAG_LEN } else { 0 };
    let ip_off = if ip_off >= l2_len {
        ip_off
    } else {
        let shift = l2_len - ip_off;
        if chunk.len() < ip_off + shift + ip_len {
            return None;
        }
        chunk.copy_within(ip_off..ip_off + ip_len, ip_off + shift);
        ip_off + shift
    };
    let start = ip_off - l2_len;
    let l2 = chunk.get_mut(start..ip_off)?;
    let mut eth = ethernet::Frame::new_unchecked(&mut *l2);
    eth.set_dst_addr(dst);
    eth.set_src_addr(src);
    match tci {
        Some(tci) => {
            eth.set_ethertype(ethertype::VLAN);
            let mut tag = ethernet::VlanTag::new_unchecked(&mut l2[ethernet::HEADER_LEN..]);
            tag.set_tci(tci);
            tag.set_ethertype(ether_type);
        }
        None => eth.set_ethertype(ether_type),
    }
    let mut len = l2_len + ip_len;
    if len < ethernet::MIN_FRAME_LEN {
        if let Some(pad) = chunk.get_mut(start + len..start + ethernet::MIN_FRAME_LEN) {
            pad.fill(0);
            len = ethernet::MIN_FRAME_LEN;
        }
    }
    Some((start, len))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::drop::DropReason;
    use crate::pipeline::Verdict;
    use crate::wire::checksum;
    use crate::wire::ethernet::{self, ethertype};
    use crate::wire::{ip_protocol, ipv4};

    #[test]
    fn glean_drops_silently_and_queues_the_destination_once() {
        let mut rig = rig();
        // TTL 1 too: a glean drop is never answered (the host is on our link).
        assert_silent_drop(&mut rig, 0, v4_frame([198, 19, 55, 7], 64), DropReason::Glean, "v4 glean");
        assert_silent_drop(&mut rig, 0, v4_frame([198, 19, 55, 7], 1), DropReason::Glean, "v4 glean, TTL 1");
        assert_silent_drop(&mut rig, 0, v6_frame(v6(55, 9), 64), DropReason::Glean, "v6 glean");
        let mut tagged = v4_frame([198, 19, 55, 8], 64);
        tagged.splice(12..12, [0x81, 0x00, 0x00, 100]);
        assert_silent_drop(&mut rig, 0, tagged, DropReason::Glean, "v4 glean from a VLAN");
        let mut out = [0u128; 8];
        let n = rig.pipeline.glean_queue().drain(&mut out);
        let want = [
            super::super::glean::mapped_v4(u32::from_be_bytes([198, 19, 55, 7])),
            u128::from(v6(55, 9)),
            super::super::glean::mapped_v4(u32::from_be_bytes([198, 19, 55, 8])),
        ];
        assert_eq!(&out[..n], &want, "each destination once, in order");
        let s = rig.pipeline.glean_queue().stats();
        assert_eq!((s.queued, s.deduplicated), (3, 1));
    }

    #[test]
    fn a_more_specific_route_beats_glean() {
        // An operator's /32 inside the glean subnet forwards; the rest of it gleans.
        let mut rig = rig();
        rig._fib
            .apply(&[crate::fib::FibOp::AddRoute {
                prefix: crate::fib::Prefix::v4(u32::from_be_bytes([198, 19, 55, 20]), 32),
                target: crate::fib::RouteTarget::Group(1),
            }])
            .unwrap();
        rig.reader.quiescent();
        let out = rig.run1(0, v4_frame([198, 19, 55, 20], 64));
        assert!(matches!(out.verdict, Verdict::Forward { port: 1, .. }), "{:?}", out.verdict);
        assert_eq!(rig.run1(0, v4_frame([198, 19, 55, 21], 64)).verdict, Verdict::Drop(DropReason::Glean));
    }

    #[test]
    fn route_target_drops() {
        let mut rig = rig();
        assert_silent_drop(&mut rig, 0, v4_frame([198, 19, 66, 1], 64), DropReason::Blackhole, "v4 blackhole");
        assert_silent_drop(&mut rig, 0, v6_frame(v6(66, 1), 64), DropReason::Blackhole, "v6 blackhole");
        assert_silent_drop(&mut rig, 0, v4_frame([198, 19, 66, 1], 1), DropReason::Blackhole, "blackhole beats TTL");
        assert_silent_drop(&mut rig, 0, v4_frame([198, 19, 88, 1], 64), DropReason::Local, "v4 local");
        assert_silent_drop(&mut rig, 0, v6_frame(v6(88, 1), 1), DropReason::Local, "v6 local, hop limit 1");
        assert_silent_drop(&mut rig, 0, v4_frame([198, 19, 8, 1], 64), DropReason::UnknownEgress, "adjacency on unknown port");
        assert_silent_drop(&mut rig, 0, v6_frame(v6(9, 1), 64), DropReason::UnknownEgress, "adjacency on unknown VLAN");
        // Larger than port 2's 1280 without DF: not fragmented, dropped.
        let big =
            edit_v4(eth(MAC0, None, ethertype::IPV4, &ipv4(SRC4, [198, 19, 4, 1], 64, ip_protocol::UDP, &udp(1, 2, 1400))), |ip| ip[6] = 0);
        assert_silent_drop(&mut rig, 0, big, DropReason::FragmentationNeeded, "no DF");
    }

    #[test]
    fn forwards_ipv4_and_ipv6_of_every_size() {
        let mut rig = rig();
        for frame_len in [60usize, 61, 64, 65, 128, 512, 1000, 1499, 1514] {
            let payload = frame_len - 14 - 20 - 8;
            let f = eth(MAC0, None, ethertype::IPV4, &ipv4(SRC4, [198, 19, 1, 5], 64, ip_protocol::UDP, &udp(1, 2, payload)));
            assert_eq!(f.len(), frame_len);
            let out = rig.run1(0, f.clone());
            check_forwarded_v4(&out, &f, 1, None, nh_mac(1), MAC1);
            if frame_len >= 14 + 40 + 8 {
                let f = eth(MAC0, None, ethertype::IPV6, &ipv6(src6(), v6(1, 5), 64, ip_protocol::UDP, &udp(1, 2, frame_len - 62)));
                let out = rig.run1(0, f.clone());
                check_forwarded_v4(&out, &f, 1, None, nh_mac(1), MAC1);
            }
        }
        // A small datagram in a padded 60-octet frame: trimmed to it, then padded again
        // with zeros.
        let f = eth(MAC0, None, ethertype::IPV4, &ipv4(SRC4, [198, 19, 1, 5], 64, ip_protocol::UDP, &udp(1, 2, 0)));
        let mut padded = f.clone();
        padded.resize(60, 0xab);
        let out = rig.run1(0, padded.clone());
        check_forwarded_v4(&out, &padded, 1, None, nh_mac(1), MAC1);
        assert!(out.frame()[f.len()..].iter().all(|&b| b == 0));
        // A datagram in an overlong frame is trimmed.
        let mut long = f.clone();
        long.resize(400, 0xab);
        let out = rig.run1(0, long.clone());
        assert_eq!(out.frame().len(), 60);
        // Counters: rx on port 0 untagged (index 0), tx on port 1 untagged (index 3).
        let s = rig.snap();
        assert_eq!(s.sub_interfaces[0].rx_packets, s.sub_interfaces[3].tx_packets);
        assert_eq!(s.total_drops(), 0);
        assert!(s.sub_interfaces[3].tx_bytes > 0);
    }

    #[test]
    fn vlan_push_pop_rewrite() {
        let mut rig = rig();
        let ip4 = |dst: [u8; 4]| ipv4(SRC4, dst, 64, ip_protocol::UDP, &udp(7, 8, 100));
        // Push: untagged in, out on port 1 VLAN 300.
        let f = eth(MAC0, None, ethertype::IPV4, &ip4([198, 19, 2, 1]));
        check_forwarded_v4(&rig.run1(0, f.clone()), &f, 1, Some(300), nh_mac(2), MAC1);
        // Pop: VLAN 100 in, untagged out.
        let f = eth(MAC0, Some(100), ethertype::IPV4, &ip4([198, 19, 1, 1]));
        check_forwarded_v4(&rig.run1(0, f.clone()), &f, 1, None, nh_mac(1), MAC1);
        // Rewrite: VLAN 100 priority 5 in, VLAN 300 out, priority kept.
        let f = eth(MAC0, Some(0xa000 | 100), ethertype::IPV4, &ip4([198, 19, 2, 1]));
        check_forwarded_v4(&rig.run1(0, f.clone()), &f, 1, Some(0xa000 | 300), nh_mac(2), MAC1);
        // Tagged to tagged on another port, IPv6.
        let f = eth(MAC1, Some(300), ethertype::IPV6, &ipv6(src6(), v6(3, 1), 64, ip_protocol::TCP, &udp(7, 8, 100)));
        check_forwarded_v4(&rig.run1(1, f.clone()), &f, 0, Some(100), nh_mac(3), MAC0);
        // Push without headroom: the datagram moves right by 4 octets.
        let f = eth(MAC0, None, ethertype::IPV4, &ip4([198, 19, 2, 1]));
        let out = rig.run_in(&[(0, f.clone())], 0, CHUNK, 0).pop().unwrap();
        check_forwarded_v4(&out, &f, 1, Some(300), nh_mac(2), MAC1);
        // ... and no room at all.
        let out = rig.run_in(&[(0, f.clone())], 0, 0, 0).pop().unwrap();
        assert_eq!(out.verdict, Verdict::Drop(DropReason::NoHeadroom));
        let s = rig.snap();
        assert_eq!(s.sub_interfaces[4].tx_packets, 3, "port 1 VLAN 300: push, rewrite, push without headroom");
        assert_eq!(s.sub_interfaces[1].rx_packets, 2, "port 0 VLAN 100");
        assert_eq!(s.sub_interfaces[1].tx_packets, 1);
    }

    #[test]
    fn checksum_of_forwarded_headers_with_options() {
        // IHL 6 (one option word): the incremental update covers it as well.
        let mut rig = rig();
        let mut ip = ipv4(SRC4, [198, 19, 1, 5], 64, ip_protocol::UDP, &udp(1, 2, 10));
        ip.splice(20..20, [1, 1, 1, 0]); // NOP NOP NOP EOL
        ip[0] = 0x46;
        let total = ip.len() as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ipv4::Packet::new_unchecked(&mut ip[..24]).fill_checksum();
        let f = eth(MAC0, None, ethertype::IPV4, &ip);
        let out = rig.run1(0, f);
        let p = ipv4::Packet::new_checked(&out.frame()[14..]).unwrap();
        assert_eq!(p.ttl(), 63);
        assert_eq!(checksum::data(&out.frame()[14..38]), 0xffff);
    }

    #[test]
    fn directed_broadcasts() {
        let mut c = config(UNLIMITED);
        c.ports[1].sub_interfaces[0].ipv4_prefix_len = 24; // 198.18.1.1/24 on port 1
        c.ports[0].sub_interfaces[1].ipv4_prefix_len = 24; // 198.18.100.1/24 on port 0 VLAN 100
        let to = |dst: [u8; 4], ttl: u8| eth(MAC0, None, ethertype::IPV4, &ipv4(SRC4, dst, ttl, ip_protocol::UDP, &udp(1, 2, 26)));
        let mut rig = rig_from(&c);
        // Off by default: dropped and counted as their own reason, no ICMP (not even for TTL 1).
        assert_silent_drop(&mut rig, 0, to([198, 18, 1, 255], 64), DropReason::DirectedBroadcast, "to port 1's subnet");
        assert_silent_drop(&mut rig, 0, to([198, 18, 1, 255], 1), DropReason::DirectedBroadcast, "TTL 1");
        assert_silent_drop(&mut rig, 0, to([198, 18, 100, 255], 64), DropReason::DirectedBroadcast, "to the ingress port's VLAN");
        // Other hosts of the subnet and other subnets are not broadcasts (no route here).
        assert!(matches!(rig.run1(0, to([198, 18, 1, 254], 64)).verdict, Verdict::Forward { port: 0, .. }), "net unreachable");
        // A host address (/32) has no broadcast.
        assert!(matches!(rig.run1(0, to([198, 18, 0, 255], 64)).verdict, Verdict::Forward { port: 0, .. }));

        // Enabled on port 1: sent there as a link broadcast, TTL decremented.
        c.ports[1].directed_broadcast = true;
        let mut rig = rig_from(&c);
        let f = to([198, 18, 1, 255], 64);
        let out = rig.run1(0, f.clone());
        check_forwarded_v4(&out, &f, 1, None, ethernet::BROADCAST, MAC1);
        assert_silent_drop(&mut rig, 0, to([198, 18, 1, 255], 1), DropReason::TtlExpired, "expiring: no ICMP either");
        assert_silent_drop(&mut rig, 0, to([198, 18, 100, 255], 64), DropReason::DirectedBroadcast, "port 0 still drops");
        let s = rig.snap();
        assert_eq!(s.icmp_count(crate::drop::IcmpOutcome::Sent), 0);
        assert_eq!(s.sub_interfaces[3].tx_packets, 1);
    }
}
