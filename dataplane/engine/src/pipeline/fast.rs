//! The common frame in straight-line code (DPDK l3fwd's and VPP's split of a fast path
//! from the full one): an untagged IPv4 datagram without options or an IPv6 one whose next
//! header is not an extension header, unicast to the port's MAC on a port with an untagged
//! sub-interface, with ordinary addresses; then a route to a group, a TTL to spare, an
//! adjacency and an MTU that fits.
//!
//! Each step here either handles the frame exactly as the full path (`parse`, `forward`)
//! would, writing the same `Meta`, bytes, counters and verdict, or declines it having
//! changed nothing, and the full path then decides the frame from the start. So every rule
//! (RFC 1812, RFC 8200, the drops and ICMP errors) lives in the full path alone; this file
//! only recognises frames that none of the rules but forwarding applies to. The
//! `fast_path_matches_the_full_path` property test runs both on the same frames.
//!
//! Why: the full path reads every field through views, `Result`s and bounds-checked
//! slices, about 730 instructions a frame; the common frame needs a fraction of them.

use super::forward::write_link;
use super::hash::flow_hash;
use super::{Destination, Family, Meta, PacketBuf, Pipeline, Verdict};
use crate::fib::{Adjacency, AdjacencyId, FibReader, RouteTarget};
use crate::wire::ethernet::{self, ethertype};
use crate::wire::{checksum, icmpv4, icmpv6, ip_protocol, ipv4, ipv6, ports};

/// Ethernet and IPv4 headers, no tag, no options.
const V4_HEADERS: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN;
/// Ethernet and IPv6 headers, no tag.
const V6_HEADERS: usize = ethernet::HEADER_LEN + ipv6::HEADER_LEN;

/// Big-endian fields at constant offsets of a fixed-size header.
#[inline(always)]
fn be16<const N: usize>(h: &[u8; N], at: usize) -> u16 {
    u16::from_be_bytes([h[at], h[at + 1]])
}

#[inline(always)]
fn be32<const N: usize>(h: &[u8; N], at: usize) -> u32 {
    u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]])
}

#[inline(always)]
fn be128<const N: usize>(h: &[u8; N], at: usize) -> u128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[at..at + 16]);
    u128::from_be_bytes(b)
}

/// First octets of IPv4 addresses `parse_v4` never forwards between: 0/8 and 127/8, and
/// 224/3 (multicast, 240/4, the limited broadcast); 169 for a closer look (169.254/16 is
/// link-local). One octet per first octet, so that a frame's two addresses take two loads
/// and an `or` when neither is one of them, as nearly every frame's.
const V4_UNUSUAL_FIRST: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut o = 0;
    while o < 256 {
        if o == 0 || o == 127 || o == 169 || o >= 224 {
            t[o] = 1;
        }
        o += 1;
    }
    t
};

/// What `parse_v4` drops as a martian, multicast, broadcast or link-local source or
/// destination, for either of `src` and `dst`.
#[inline(always)]
fn v4_unusual(src: u32, dst: u32) -> bool {
    V4_UNUSUAL_FIRST[(src >> 24) as usize] | V4_UNUSUAL_FIRST[(dst >> 24) as usize] != 0 && v4_unusual_one_of(src, dst)
}

/// `v4_unusual` for a frame whose source or destination has an unusual first octet: only
/// 169 is unusual for some addresses (169.254/16) and not others.
#[cold]
#[inline(never)]
fn v4_unusual_one_of(src: u32, dst: u32) -> bool {
    let one = |a: u32| a >> 24 != 169 && V4_UNUSUAL_FIRST[(a >> 24) as usize] != 0 || ipv4::is_link_local(std::net::Ipv4Addr::from_bits(a));
    one(src) || one(dst)
}

/// An IPv4 header without options verifies: its 16-bit words sum to 0xffff. Summed as
/// native-endian 32-bit words: the one's complement sum does not depend on byte order
/// (RFC 1071 section 2 (B)), and 0xffff is the same either way round.
#[inline(always)]
fn v4_header_verifies(h: &[u8; ipv4::HEADER_LEN]) -> bool {
    let w = |i: usize| u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]) as u64;
    // Not zero: the first octet is 0x45.
    checksum::sums_to_ffff(w(0) + w(4) + w(8) + w(12) + w(16))
}

/// ::, ::1, ff00::/8 and fe80::/10: what `parse_v6` drops as a martian, multicast or
/// link-local source or destination. Every one of them has 0x00, 0xfe or 0xff as its first
/// octet, so one compare on that octet clears the ordinary address (2000::/3 and the rest).
#[inline(always)]
fn v6_unusual(a: u128) -> bool {
    let first = (a >> 120) as u8;
    first.wrapping_sub(1) >= 0xfd && (a <= 1 || first == 0xff || a >> 118 == 0xfe80 >> 6)
}

/// The next headers `ipv6::upper_layer` walks past: a datagram with one goes the full way.
#[inline(always)]
fn v6_extension(next_header: u8) -> bool {
    matches!(
        next_header,
        ip_protocol::HOP_BY_HOP | ip_protocol::ROUTING | ip_protocol::DEST_OPTIONS | ip_protocol::AUTH | ip_protocol::FRAGMENT
    )
}

/// The TTL / hop limit decremented (`ttl`, read by the caller, above 1), and the IPv4
/// checksum updated as `ipv4::Packet::decrement_ttl` does (RFC 1624), in place on the
/// fixed header. None, nothing written, when the header is not there (parsing checked it
/// is).
#[inline(always)]
fn decrement(ip: &mut [u8], v4: bool, ttl: u8) -> Option<()> {
    if v4 {
        let h = ip.first_chunk_mut::<{ ipv4::HEADER_LEN }>()?;
        let sum = checksum::ttl_decremented(u16::from_be_bytes([h[10], h[11]]));
        h[8] = ttl - 1;
        h[10..12].copy_from_slice(&sum.to_be_bytes());
    } else {
        *ip.get_mut(7)? = ttl - 1;
    }
    Some(())
}

/// Frames and octets on one sub-interface, added to its counters once per run of frames
/// on it (a batch seldom spans more than one) instead of once per frame.
pub(super) struct Tally {
    sub: usize,
    packets: u64,
    bytes: u64,
}

impl Tally {
    pub(super) const fn new() -> Tally {
        Tally { sub: usize::MAX, packets: 0, bytes: 0 }
    }

    /// Adds a frame of `bytes` octets on `sub`; `flush` gets the run before, when `sub`
    /// starts a new one.
    #[inline(always)]
    fn add(&mut self, sub: usize, bytes: usize, flush: impl FnOnce(usize, u64, u64)) {
        if sub != self.sub {
            if self.packets != 0 {
                flush(self.sub, self.packets, self.bytes);
            }
            *self = Tally { sub, packets: 0, bytes: 0 };
        }
        self.packets += 1;
        self.bytes += bytes as u64;
    }

    /// Hands the run over to `flush` and starts afresh.
    #[inline(always)]
    pub(super) fn take(&mut self, flush: impl FnOnce(usize, u64, u64)) {
        if self.packets != 0 {
            flush(self.sub, self.packets, self.bytes);
        }
        *self = Tally::new();
    }
}

/// The next hop of a frame whose lookup gave `entry`, when that is a route to a group:
/// the adjacency its flow hash picks (`forward_fast` then takes the frame or declines it).
#[inline(always)]
pub(super) fn next_hop(fib: &FibReader, entry: u32, flow_hash: u32) -> Option<(AdjacencyId, &Adjacency)> {
    let group = RouteTarget::group_of_entry(entry)?;
    fib.next_hop(group, flow_hash)
}

impl Pipeline {
    /// `parse` for the common frame: the destination and source, with `m` filled and the
    /// frame counted as received, as `parse` would; or None, nothing written or counted,
    /// for `parse` to decide the frame.
    #[inline(always)]
    pub(super) fn parse_fast(&self, frame: &PacketBuf<'_>, m: &mut Meta, rx: &mut Tally) -> Option<Destination> {
        let port = self.ports.get(frame.port as usize)?;
        let data = frame.chunk.get(frame.start..frame.start.checked_add(frame.len)?)?;
        let h = data.first_chunk::<V4_HEADERS>()?;
        let dst_mac = u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], 0, 0]);
        if dst_mac != port.mac_key || port.untagged == super::config::NO_SUB {
            return None;
        }
        let ip = data.get(ethernet::HEADER_LEN..)?;
        match be16(h, 12) {
            ethertype::IPV4 => self.parse_fast_v4(h, ip, port.untagged, data.len(), m, rx),
            ethertype::IPV6 => self.parse_fast_v6(data, ip, port.untagged, m, rx),
            _ => None,
        }
    }

    #[inline(always)]
    fn parse_fast_v4(
        &self,
        h: &[u8; V4_HEADERS],
        ip: &[u8],
        sub: u16,
        frame_len: usize,
        m: &mut Meta,
        rx: &mut Tally,
    ) -> Option<Destination> {
        const IP: usize = ethernet::HEADER_LEN;
        // Version 4, 20 octets of header: no options.
        if h[IP] != 0x45 {
            return None;
        }
        let header: &[u8; ipv4::HEADER_LEN] = h.last_chunk()?;
        if !v4_header_verifies(header) {
            return None;
        }
        let total = be16(h, IP + 2) as usize;
        if total < ipv4::HEADER_LEN || total > ip.len() {
            return None;
        }
        let (src, dst) = (be32(h, IP + 12), be32(h, IP + 16));
        if v4_unusual(src, dst) {
            return None;
        }
        // A possible directed broadcast goes the full way.
        if dst & self.broadcast_host_bits == self.broadcast_host_bits {
            return None;
        }
        let protocol = h[IP + 9];
        let flags_offset = be16(h, IP + 6);
        let initial = flags_offset & 0x1fff == 0;
        let fragment = !initial || flags_offset & 0x2000 != 0;
        let payload = ip.get(ipv4::HEADER_LEN..total)?;
        m.icmp_ok = initial && (protocol != ip_protocol::ICMP || payload.first().is_some_and(|&t| !icmpv4::is_error(t)));
        let l4 = if !fragment && ports::has_ports(protocol) { super::parse::l4_ports(payload) } else { 0 };
        m.flow_hash = flow_hash(self.hash_seed, &[(src as u64) << 32 | dst as u64, (protocol as u64) << 32 | l4 as u64]);
        m.dont_frag = flags_offset & 0x4000 != 0;
        m.ip_len = total as u16;
        m.family = Family::V4;
        m.sub = sub;
        m.l2_len = ethernet::HEADER_LEN as u8;
        m.fast = true;
        rx.add(sub as usize, frame_len, |s, p, b| self.counters.count_rx_run(s, p, b));
        Some(Destination::V4(dst, src))
    }

    #[inline(always)]
    fn parse_fast_v6(&self, data: &[u8], ip: &[u8], sub: u16, m: &mut Meta, rx: &mut Tally) -> Option<Destination> {
        const IP: usize = ethernet::HEADER_LEN;
        let h = data.first_chunk::<V6_HEADERS>()?;
        if h[IP] >> 4 != 6 {
            return None;
        }
        let total = ipv6::HEADER_LEN + be16(h, IP + 4) as usize;
        if total > ip.len() || total > u16::MAX as usize {
            return None;
        }
        let next_header = h[IP + 6];
        if v6_extension(next_header) {
            return None;
        }
        let (src, dst) = (be128(h, IP + 8), be128(h, IP + 24));
        if v6_unusual(src) || v6_unusual(dst) {
            return None;
        }
        let payload = ip.get(ipv6::HEADER_LEN..total)?;
        m.icmp_ok = next_header != ip_protocol::ICMPV6 || payload.first().is_some_and(|&t| !icmpv6::is_error(t));
        let l4 = if ports::has_ports(next_header) { super::parse::l4_ports(payload) } else { 0 };
        let flow_label = be32(h, IP) & 0x000f_ffff;
        let rest = (flow_label as u64) << 40 | (next_header as u64) << 32 | l4 as u64;
        m.flow_hash = flow_hash(self.hash_seed, &[(src >> 64) as u64, src as u64, (dst >> 64) as u64, dst as u64, rest]);
        m.ip_len = total as u16;
        m.family = Family::V6;
        m.sub = sub;
        m.l2_len = ethernet::HEADER_LEN as u8;
        m.fast = true;
        rx.add(sub as usize, data.len(), |s, p, b| self.counters.count_rx_run(s, p, b));
        Some(Destination::V6(dst, src))
    }

    /// `forward` for a route to a group with a TTL to spare, an adjacency, and an egress
    /// MTU that fits: the frame rewritten, counted out and its verdict written as `forward`
    /// would; or None, nothing written or counted, for `forward` to decide. For frames
    /// `parse_fast` took.
    #[inline(always)]
    pub(super) fn forward_fast(
        &mut self,
        fib: &FibReader,
        frame: &mut PacketBuf<'_>,
        m: &Meta,
        (adjacency_id, adjacency): (AdjacencyId, &Adjacency),
        tx: &mut Tally,
        verdict: &mut Verdict,
    ) -> Option<()> {
        debug_assert!(m.fast && !m.maybe_broadcast && !m.tagged);
        let ip_len = m.ip_len as usize;
        let v4 = m.family == Family::V4;
        let (start, len) = (frame.start, ethernet::HEADER_LEN + ip_len);
        // The link header and the datagram, which parsing found whole; the TTL / hop
        // limit is octet 8 of IPv4's header, 7 of IPv6's.
        let bytes = frame.chunk.get_mut(start..start + len)?;
        let (l2, ip) = bytes.split_first_chunk_mut::<{ ethernet::HEADER_LEN }>()?;
        let ttl = *ip.get(if v4 { 8 } else { 7 })?;
        if ttl <= 1 {
            return None;
        }
        let out = self.ports.get(adjacency.port as usize)?;
        let out_sub = out.sub(adjacency.vlan)?;
        if m.ip_len > out.mtu {
            return None;
        }
        let (port, vlan) = (adjacency.port, adjacency.vlan);
        if vlan == 0 {
            // Untagged out as in: the new link header where the old one was. A frame under
            // the Ethernet minimum would need padding: `forward` pads.
            if len < ethernet::MIN_FRAME_LEN {
                return None;
            }
            decrement(ip, v4, ttl)?;
            let (macs_lo, macs_hi) = adjacency.macs();
            l2[..8].copy_from_slice(&macs_lo.to_le_bytes());
            l2[8..12].copy_from_slice(&macs_hi.to_le_bytes());
            // The EtherType stays: IPv4 in, IPv4 out.
            *verdict = self.sent(fib, adjacency_id, out_sub, port, start, len, tx);
            return Some(());
        }
        // A tag to push: 4 octets before the frame, and `write_link` to move things.
        if start < ethernet::VLAN_TAG_LEN {
            return None;
        }
        decrement(ip, v4, ttl)?;
        let tci = ethernet::tci(m.priority, vlan);
        let ether_type = if v4 { ethertype::IPV4 } else { ethertype::IPV6 };
        let (start, len) =
            write_link(frame.chunk, start + ethernet::HEADER_LEN, ip_len, Some(tci), adjacency.dst_mac, adjacency.src_mac, ether_type)?;
        *verdict = self.sent(fib, adjacency_id, out_sub, port, start, len, tx);
        Some(())
    }

    /// Counts a forwarded frame out and returns its verdict.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn sent(&mut self, fib: &FibReader, adjacency_id: u32, out_sub: u16, port: u16, start: usize, len: usize, tx: &mut Tally) -> Verdict {
        tx.add(out_sub as usize, len, |s, p, b| self.counters.count_tx_run(s, p, b));
        if self.members {
            self.counters.count_member_tx(fib.adjacency_member(adjacency_id), len);
        }
        fib.mark_adjacency_used(adjacency_id);
        #[cfg(test)]
        {
            self.fast_forwarded += 1;
        }
        Verdict::Forward { port, start, len }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;
    use crate::counters::CounterSnapshot;
    use crate::pipeline::sample::Sample;
    use crate::wire::ethernet::{self, ethertype};
    use crate::wire::{ip_protocol, ipv4};
    use proptest::prelude::*;

    /// The tests' configuration with directed broadcasts on port 1's /24, a /24 on port 0
    /// too, and strict uRPF on port 0's VLAN 100: frames the fast path must leave alone.
    fn edge_config() -> PipelineConfig {
        let mut c = config(UNLIMITED);
        c.ports[0].sub_interfaces[0].ipv4_prefix_len = 24;
        c.ports[1].sub_interfaces[0].ipv4_prefix_len = 24;
        c.ports[1].directed_broadcast = true;
        c.ports[0].sub_interfaces[1].urpf = UrpfPolicy { mode: UrpfMode::Strict, allow_default: false };
        c
    }

    /// Everything a batch leaves behind: verdicts, chunks, counters, glean queue, samples.
    type Outcome = (Vec<Verdict>, Vec<Vec<u8>>, CounterSnapshot, Vec<u128>, Vec<Sample>);

    /// Chunks of `chunk` octets, or just the frame's size when that is larger.
    fn outcome(rig: &mut Rig, frames: &[(u16, Vec<u8>)], headroom: usize, chunk: usize) -> Outcome {
        let outs = rig.run_in(frames, headroom, chunk, 0);
        let mut glean = [0u128; 256];
        let n = rig.pipeline.glean_queue().drain(&mut glean);
        let mut samples = Vec::new();
        rig.pipeline.sample_ring().drain(&mut samples, usize::MAX);
        let (verdicts, chunks) = outs.into_iter().map(|o| (o.verdict, o.chunk)).unzip();
        (verdicts, chunks, rig.snap(), glean[..n].to_vec(), samples)
    }

    /// Exchange members: the sender on port 0 (untagged, allowed 198.18.0.0/24 and
    /// 2001:db8::/48 as sources), one on VLAN 100, and adjacency 1's router on port 1.
    fn add_members(rig: &mut Rig) {
        use crate::fib::{FibOp, Member, Prefix};
        let sources: Box<[Prefix]> = vec![Prefix::v4(u32::from_be_bytes([198, 18, 0, 0]), 24), Prefix::v6(u128::from(v6(0, 0)), 48)].into();
        rig._fib
            .apply(&[
                FibOp::SetMember { id: 0, member: Member { port: 0, vlan: 0, mac: PEER }, sources: Some(sources) },
                FibOp::SetMember { id: 1, member: Member { port: 0, vlan: 100, mac: PEER }, sources: None },
                FibOp::SetMember { id: 2, member: Member { port: 1, vlan: 0, mac: nh_mac(1) }, sources: None },
            ])
            .unwrap();
    }

    fn both(config: &PipelineConfig) -> (Rig, Rig) {
        let fast = rig_from(config);
        let mut full = rig_from(config);
        full.pipeline.set_fast_path(false);
        (fast, full)
    }

    #[test]
    fn ordinary_frames_take_the_fast_path_and_the_rest_do_not() {
        let (mut fast, mut full) = both(&config(UNLIMITED));
        let ordinary = vec![(0, v4_frame([198, 19, 1, 5], 64)), (0, v6_frame(v6(1, 5), 64)), (0, v4_frame([198, 19, 10, 9], 2))];
        let (v, _, snap, _, _) = outcome(&mut fast, &ordinary, HEADROOM, CHUNK);
        assert_eq!(fast.pipeline.fast_forwarded, 3, "{v:?}");
        assert_eq!((v, snap), {
            let (v, _, snap, _, _) = outcome(&mut full, &ordinary, HEADROOM, CHUNK);
            (v, snap)
        });
        assert_eq!(full.pipeline.fast_forwarded, 0);
        // TTL 1, no route, blackhole, tagged, out by a tag, options: all the full path's.
        let mut options = ipv4(SRC4, [198, 19, 1, 5], 64, ip_protocol::UDP, &udp(1, 2, 30));
        options[0] = 0x46;
        options.splice(20..20, [1, 1, 1, 0]);
        let len = options.len() as u16;
        options[2..4].copy_from_slice(&len.to_be_bytes());
        ipv4::Packet::new_unchecked(&mut options[..]).fill_checksum();
        let others = vec![
            (0, v4_frame([198, 19, 1, 5], 1)),
            (0, v4_frame([198, 19, 200, 5], 64)),
            (0, v4_frame([198, 19, 66, 5], 64)),
            (0, eth(MAC0, Some(100), ethertype::IPV4, &v4_frame([198, 19, 1, 5], 64)[14..])),
            (0, eth(MAC0, None, ethertype::IPV4, &options)),
        ];
        let before = fast.pipeline.fast_forwarded;
        outcome(&mut fast, &others, HEADROOM, CHUNK);
        assert_eq!(fast.pipeline.fast_forwarded, before, "none of these is ordinary");
    }

    #[test]
    fn members_and_samples_are_taken_on_the_fast_path_too() {
        let mut rig = rig();
        add_members(&mut rig);
        rig.pipeline.sample_ring().set_rates(&[1, 1, 1]);
        let outs = rig.run(&[(0, v4_frame([198, 19, 1, 5], 64)), (0, v6_frame(v6(1, 5), 64))]);
        assert!(outs.iter().all(|o| matches!(o.verdict, Verdict::Forward { port: 1, .. })));
        assert_eq!(rig.pipeline.fast_forwarded, 2);
        let s = rig.snap();
        assert_eq!(s.member(0).rx_packets, 2, "the sender, found on the fast path");
        assert_eq!(s.member(2).tx_packets, 2, "adjacency 1's router (both frames' group 1)");
        let mut samples = Vec::new();
        rig.pipeline.sample_ring().drain(&mut samples, usize::MAX);
        assert_eq!(samples.len(), 2);
        // A source outside the sender's filter: dropped, counted as the member's.
        let out =
            rig.run1(0, eth(MAC0, None, ethertype::IPV4, &ipv4([198, 18, 7, 7], [198, 19, 1, 5], 64, ip_protocol::UDP, &udp(1, 2, 30))));
        assert_eq!(out.verdict, Verdict::Drop(DropReason::MemberSource));
        assert_eq!(rig.snap().member(0).drops[DropReason::MemberSource as usize], 1);
    }

    /// A frame near the fast path's edges: ordinary, or one field made unusual.
    fn frame() -> impl Strategy<Value = (u16, Vec<u8>)> {
        let v4_dst = prop_oneof![
            (prop::sample::select(vec![1u8, 2, 3, 4, 8, 9, 10, 11, 55, 66, 77, 88, 200]), any::<u8>()).prop_map(|(g, h)| [198, 19, g, h]),
            prop::sample::select(vec![
                [198, 18, 1, 255],
                [198, 18, 0, 255],
                [255, 255, 255, 255],
                [224, 0, 0, 5],
                [240, 0, 0, 1],
                [127, 0, 0, 1],
                [0, 1, 2, 3],
                [169, 254, 1, 1],
                [169, 253, 1, 1],
                [168, 254, 1, 1]
            ]),
        ];
        let v4_src = prop::sample::select(vec![
            SRC4,
            [198, 18, 100, 7],
            [169, 254, 0, 1],
            [0, 0, 0, 0],
            [224, 1, 1, 1],
            [255, 255, 255, 255],
            [223, 1, 1, 1],
        ]);
        let v6_dst = prop_oneof![
            (prop::sample::select(vec![1u16, 2, 3, 4, 8, 9, 10, 11, 55, 66, 77, 88, 200]), any::<u16>()).prop_map(|(g, h)| v6(g, h)),
            prop::sample::select(vec![
                "::".parse().unwrap(),
                "::1".parse().unwrap(),
                "ff02::1".parse().unwrap(),
                "fe80::1".parse().unwrap(),
                "febf::1".parse().unwrap(),
                "fec0::1".parse().unwrap()
            ]),
        ];
        let v6_src = prop::sample::select(vec![
            src6(),
            v6(0x100, 7),
            "fe80::2".parse().unwrap(),
            "ff02::2".parse().unwrap(),
            "::1".parse().unwrap(),
        ]);
        let protocol =
            prop::sample::select(vec![ip_protocol::UDP, ip_protocol::TCP, ip_protocol::ICMP, ip_protocol::ICMPV6, 0, 43, 44, 60, 51, 47]);
        let ttl = prop::sample::select(vec![0u8, 1, 2, 64, 255]);
        let vlan = prop::sample::select(vec![None, Some(0u16), Some(100), Some(300), Some(555)]);
        let mac = prop::sample::select(vec![0usize, 0, 0, 1, 2]);
        (
            (any::<bool>(), v4_dst, v4_src, v6_dst, v6_src),
            (protocol, ttl, prop_oneof![4 => 0usize..80, 1 => 1240usize..1300], vlan, mac, prop::sample::select(vec![0u16, 0, 1, 2, 3])),
            (any::<u8>(), any::<u16>(), prop::collection::vec((0usize..120, any::<u8>()), 0..3)),
        )
            .prop_map(|((is_v4, d4, s4, d6, s6), (protocol, ttl, payload, vlan, mac, port), (icmp_type, flags, flips))| {
                let mut body = udp(1000, 53, payload);
                body[0] = icmp_type;
                let ip = if is_v4 {
                    let mut ip = ipv4(s4, d4, ttl, protocol, &body);
                    // Flags and fragment offset: mostly none, sometimes DF, MF, an offset.
                    ip[6..8].copy_from_slice(&(flags & 0x7fff & if flags % 3 == 0 { 0xffff } else { 0x4000 }).to_be_bytes());
                    ipv4::Packet::new_unchecked(&mut ip[..]).fill_checksum();
                    ip
                } else {
                    ipv6(s6, d6, ttl, protocol, &body)
                };
                let dst = [MAC0, MAC1, MAC2, ethernet::BROADCAST, [0x02, 0, 0, 0, 0, 0x99]][(port as usize + mac) % 5];
                let dst = if mac == 0 { [MAC0, MAC1, MAC2, MAC0][port as usize] } else { dst };
                let mut f = eth(dst, vlan, if is_v4 { ethertype::IPV4 } else { ethertype::IPV6 }, &ip);
                for (at, b) in flips {
                    let n = f.len();
                    f[at % n] = b;
                }
                (port, f)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// The fast path decides every frame as the full path does: the same verdicts,
        /// the same bytes in every chunk, the same counters, glean queue and samples,
        /// batch after batch (ICMP identifications and token buckets carry over), with
        /// members and sampling on or off.
        #[test]
        fn fast_path_matches_the_full_path(
            batches in prop::collection::vec(prop::collection::vec(frame(), 1..70), 1..3),
            headroom in prop::sample::select(vec![0usize, 2, 4, 20, 256]),
            chunk in prop::sample::select(vec![0usize, CHUNK]),
            edge in any::<bool>(),
            members in any::<bool>(),
            sampling in any::<bool>(),
        ) {
            let config = if edge { edge_config() } else { config(UNLIMITED) };
            let (mut fast, mut full) = both(&config);
            for rig in [&mut fast, &mut full] {
                if members {
                    add_members(rig);
                }
                if sampling {
                    // Every frame: both take the same samples whatever their seeds.
                    rig.pipeline.sample_ring().set_rates(&[1, 1, 1]);
                }
            }
            for batch in &batches {
                let a = outcome(&mut fast, batch, headroom, chunk);
                let b = outcome(&mut full, batch, headroom, chunk);
                prop_assert_eq!(a, b);
            }
        }
    }
}
