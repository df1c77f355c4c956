//! ICMP and ICMPv6 errors (Time Exceeded, Destination Unreachable, Fragmentation Needed /
//! Packet Too Big), built in place in the offending frame's chunk, from the ingress
//! sub-interface's address, within the rate limits of the offending packet's source, the
//! ingress port and the worker.

use super::{Family, Meta, PacketBuf, Pipeline, Verdict};
use crate::drop::{DropReason, IcmpOutcome};
use crate::wire::ethernet::{self, ethertype};
use crate::wire::{icmpv4, icmpv6, ip_protocol, ipv4, ipv6};

/// TTL / hop limit of generated ICMP errors.
const ICMP_TTL: u8 = 64;
/// IPv4 precedence 6, internetwork control, for ICMP errors (RFC 1812 section 4.3.2.5).
const ICMP_TOS: u8 = 0xc0;

/// The ICMP error to send in reply, mapped to a type and code per family.
#[derive(Clone, Copy, Debug)]
pub(super) enum IcmpError {
    TimeExceeded,
    NoRoute,
    Unreachable,
    TooBig(u16),
}

impl IcmpError {
    fn v4(self) -> (u8, u8, u16) {
        match self {
            IcmpError::TimeExceeded => (icmpv4::msg_type::TIME_EXCEEDED, icmpv4::time_exceeded::TTL, 0),
            IcmpError::NoRoute => (icmpv4::msg_type::DEST_UNREACHABLE, icmpv4::unreachable::NET, 0),
            IcmpError::Unreachable => (icmpv4::msg_type::DEST_UNREACHABLE, icmpv4::unreachable::HOST, 0),
            IcmpError::TooBig(mtu) => (icmpv4::msg_type::DEST_UNREACHABLE, icmpv4::unreachable::FRAG_NEEDED, mtu),
        }
    }

    fn v6(self) -> (u8, u8, u32) {
        match self {
            IcmpError::TimeExceeded => (icmpv6::msg_type::TIME_EXCEEDED, icmpv6::time_exceeded::HOP_LIMIT, 0),
            IcmpError::NoRoute => (icmpv6::msg_type::DEST_UNREACHABLE, icmpv6::unreachable::NO_ROUTE, 0),
            IcmpError::Unreachable => (icmpv6::msg_type::DEST_UNREACHABLE, icmpv6::unreachable::REJECT_ROUTE, 0),
            IcmpError::TooBig(mtu) => (icmpv6::msg_type::PACKET_TOO_BIG, 0, mtu as u32),
        }
    }
}

impl Pipeline {
    /// Counts `reason` and answers with an ICMP error when allowed, possible and within
    /// the rate limit; otherwise drops.
    pub(super) fn reject(&mut self, frame: &mut PacketBuf<'_>, m: &Meta, error: IcmpError, reason: DropReason, now_ns: u64) -> Verdict {
        self.counters.count_drop(frame.port, reason);
        self.counters.count_member_drop(m.member, reason);
        let outcome = self.build_icmp(frame, m, error, now_ns);
        match outcome {
            Ok((start, len)) => {
                self.counters.count_icmp(IcmpOutcome::Sent);
                self.counters.count_tx(m.sub as usize, len);
                Verdict::Forward { port: frame.port, start, len }
            }
            Err(o) => {
                self.counters.count_icmp(o);
                Verdict::Drop(reason)
            }
        }
    }

    /// Builds the error in the frame's chunk: Ethernet (+ the ingress tag) back to the
    /// sender's MAC, a new IP header, the ICMP header, and as much of the original
    /// datagram as fits in 576 (IPv4) / 1280 (IPv6) octets, which stays where it is.
    fn build_icmp(&mut self, frame: &mut PacketBuf<'_>, m: &Meta, error: IcmpError, now_ns: u64) -> Result<(usize, usize), IcmpOutcome> {
        if !m.icmp_ok {
            return Err(IcmpOutcome::Suppressed);
        }
        let sub = self.subs.get(m.sub as usize).ok_or(IcmpOutcome::NoSource)?;
        let v4 = m.family == Family::V4;
        let (src_v4, src_v6) = (sub.ipv4, sub.ipv6);
        if (v4 && src_v4.is_none()) || (!v4 && src_v6.is_none()) {
            return Err(IcmpOutcome::NoSource);
        }
        let port = self.ports.get_mut(frame.port as usize).ok_or(IcmpOutcome::NoSource)?;
        let (l2_len, ip_off) = (m.l2_len as usize, frame.start + m.l2_len as usize);
        let (headers, limit) = if v4 {
            (ipv4::HEADER_LEN + icmpv4::HEADER_LEN, ipv4::MIN_MTU)
        } else {
            (ipv6::HEADER_LEN + icmpv6::HEADER_LEN, ipv6::MIN_MTU)
        };
        let quote = (m.ip_len as usize).min(limit - headers);
        let sender_mac = ethernet::Frame::new_unchecked(frame.chunk.get(frame.start..ip_off).ok_or(IcmpOutcome::NoRoom)?).src_addr();
        let (orig_src4, orig_src6) = {
            let ip = frame.chunk.get(ip_off..ip_off + m.ip_len as usize).ok_or(IcmpOutcome::NoRoom)?;
            if v4 {
                (Some(ipv4::Packet::new_unchecked(ip).src_addr()), None)
            } else {
                (None, Some(ipv6::Packet::new_unchecked(ip).src_addr()))
            }
        };

        // Room: the new headers go into the headroom, the quote stays in place; without
        // enough headroom the quote moves toward the end of the chunk.
        let need_tail = ip_off + headers + quote;
        let shift_right = frame.start < headers;
        if shift_right && frame.chunk.len() < need_tail {
            return Err(IcmpOutcome::NoRoom);
        }
        // A token is spent only when every bucket has one, so a source held back by its own
        // limit costs the port and the worker nothing.
        let source = match (orig_src4, orig_src6) {
            (Some(a), _) => a.to_ipv6_mapped().to_bits(),
            (_, Some(a)) => a.to_bits(),
            _ => return Err(IcmpOutcome::NoSource),
        };
        let per_source = !matches!(error, IcmpError::TooBig(_));
        if per_source && !self.icmp_sources.bucket(source, now_ns).ready(now_ns) {
            return Err(IcmpOutcome::SourceRateLimited);
        }
        if !port.icmp_bucket.ready(now_ns) {
            return Err(IcmpOutcome::RateLimited);
        }
        if !self.icmp_worker.ready(now_ns) {
            return Err(IcmpOutcome::WorkerRateLimited);
        }
        if per_source {
            self.icmp_sources.bucket(source, now_ns).spend();
        }
        port.icmp_bucket.spend();
        self.icmp_worker.spend();
        let start = if shift_right {
            frame.chunk.copy_within(ip_off..ip_off + quote, ip_off + headers);
            frame.start
        } else {
            frame.start - headers
        };
        let ip_len = headers + quote;
        let len = l2_len + ip_len;
        let out = frame.chunk.get_mut(start..start + len).ok_or(IcmpOutcome::NoRoom)?;

        let (l2, ip) = out.split_at_mut(l2_len);
        let mut eth = ethernet::Frame::new_unchecked(&mut *l2);
        eth.set_dst_addr(sender_mac);
        eth.set_src_addr(port.mac);
        let ether_type = if v4 { ethertype::IPV4 } else { ethertype::IPV6 };
        if m.tagged {
            eth.set_ethertype(ethertype::VLAN);
            let mut tag = ethernet::VlanTag::new_unchecked(&mut l2[ethernet::HEADER_LEN..]);
            tag.set_tci(m.tci);
            tag.set_ethertype(ether_type);
        } else {
            eth.set_ethertype(ether_type);
        }

        match (src_v4, orig_src4, src_v6, orig_src6) {
            (Some(src), Some(dst), _, _) => {
                let (ty, code, mtu) = error.v4();
                let mut p = ipv4::Packet::new_unchecked(&mut *ip);
                p.set_version(4);
                p.set_header_len(ipv4::HEADER_LEN as u8);
                p.set_dscp_ecn(ICMP_TOS);
                p.set_total_len(ip_len as u16);
                p.set_ident(self.ident);
                p.set_flags_and_offset(false, false, 0);
                p.set_ttl(ICMP_TTL);
                p.set_protocol(ip_protocol::ICMP);
                p.set_src_addr(src);
                p.set_dst_addr(dst);
                p.fill_checksum();
                self.ident = self.ident.wrapping_add(1);
                let mut icmp = icmpv4::Packet::new_unchecked(&mut ip[ipv4::HEADER_LEN..]);
                icmp.set_msg_type(ty);
                icmp.set_msg_code(code);
                icmp.set_rest_of_header(0);
                icmp.set_next_hop_mtu(mtu);
                icmp.fill_checksum();
            }
            (_, _, Some(src), Some(dst)) => {
                let (ty, code, mtu) = error.v6();
                let mut p = ipv6::Packet::new_unchecked(&mut *ip);
                p.set_version_class_flow(6, 0, 0);
                p.set_payload_len((ip_len - ipv6::HEADER_LEN) as u16);
                p.set_next_header(ip_protocol::ICMPV6);
                p.set_hop_limit(ICMP_TTL);
                p.set_src_addr(src);
                p.set_dst_addr(dst);
                let mut icmp = icmpv6::Packet::new_unchecked(&mut ip[ipv6::HEADER_LEN..]);
                icmp.set_msg_type(ty);
                icmp.set_msg_code(code);
                icmp.set_mtu(mtu);
                icmp.fill_checksum(src, dst);
            }
            _ => return Err(IcmpOutcome::NoSource),
        }
        Ok((start, len))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::drop::{DropReason, IcmpOutcome};
    use crate::pipeline::{IcmpLimits, IcmpRateLimit, Verdict};
    use crate::wire::ethernet::ethertype;
    use crate::wire::{ip_protocol, ipv4};
    use std::net::Ipv4Addr;

    #[test]
    fn icmpv4_errors() {
        let mut rig = rig();
        for ttl in [0, 1] {
            let e = expect_icmp(&mut rig, 0, v4_frame([198, 19, 1, 5], ttl), DropReason::TtlExpired);
            assert_eq!((e.ty, e.code, e.rest), (11, 0, 0));
            assert_eq!(e.src, Ipv4Addr::new(198, 18, 0, 1));
            assert_eq!(e.dst, Ipv4Addr::from(SRC4));
            assert_eq!(e.vlan, None);
            assert_eq!(e.quote.len(), 20 + 8 + 26, "a small datagram is quoted whole");
        }
        let e = expect_icmp(&mut rig, 0, v4_frame([198, 19, 200, 5], 64), DropReason::NoRoute);
        assert_eq!((e.ty, e.code), (3, 0));
        let e = expect_icmp(&mut rig, 0, v4_frame([198, 19, 77, 5], 64), DropReason::Unreachable);
        assert_eq!((e.ty, e.code), (3, 1));
        // DF and larger than port 2's MTU: fragmentation needed, with the MTU.
        let big = eth(MAC0, None, ethertype::IPV4, &ipv4(SRC4, [198, 19, 4, 1], 64, ip_protocol::UDP, &udp(1, 2, 1400)));
        let e = expect_icmp(&mut rig, 0, big, DropReason::MtuExceeded);
        assert_eq!((e.ty, e.code, e.rest), (3, 4, 1280));
        assert_eq!(e.ip_len, 576, "cut at 576 octets");
        assert_eq!(e.quote.len(), 576 - 28);
        // Exactly the MTU passes.
        let fits = eth(MAC0, None, ethertype::IPV4, &ipv4(SRC4, [198, 19, 4, 1], 64, ip_protocol::UDP, &udp(1, 2, 1280 - 28)));
        assert!(matches!(rig.run1(0, fits).verdict, Verdict::Forward { port: 2, .. }));
        // From a VLAN sub-interface: same tag back, that sub-interface's address.
        let tagged = eth(MAC0, Some(0x2000 | 100), ethertype::IPV4, &ipv4(SRC4, [198, 19, 1, 5], 1, ip_protocol::UDP, &udp(1, 2, 26)));
        let e = expect_icmp(&mut rig, 0, tagged, DropReason::TtlExpired);
        assert_eq!(e.vlan, Some(0x2000 | 100));
        assert_eq!(e.src, Ipv4Addr::new(198, 18, 100, 1));
        // A 1500-octet datagram is quoted up to the 576 limit.
        let e = expect_icmp(
            &mut rig,
            0,
            eth(MAC0, None, ethertype::IPV4, &ipv4(SRC4, [198, 19, 1, 5], 1, ip_protocol::UDP, &udp(1, 2, 1472))),
            DropReason::TtlExpired,
        );
        assert_eq!(e.ip_len, 576);
    }

    #[test]
    fn icmpv6_errors() {
        let mut rig = rig();
        let e = expect_icmp(&mut rig, 0, v6_frame(v6(1, 5), 1), DropReason::TtlExpired);
        assert_eq!((e.ty, e.code), (3, 0));
        assert_eq!(e.src, v6(0, 1));
        assert_eq!(e.dst, src6());
        let e = expect_icmp(&mut rig, 0, v6_frame(v6(0xdead, 5), 64), DropReason::NoRoute);
        assert_eq!((e.ty, e.code), (1, 0));
        let e = expect_icmp(&mut rig, 0, v6_frame(v6(77, 5), 64), DropReason::Unreachable);
        assert_eq!((e.ty, e.code), (1, 6), "reject route to destination (RFC 4443 section 3.1)");
        let big = eth(MAC0, None, ethertype::IPV6, &ipv6(src6(), v6(4, 1), 64, ip_protocol::UDP, &udp(1, 2, 1400)));
        let e = expect_icmp(&mut rig, 0, big, DropReason::MtuExceeded);
        assert_eq!((e.ty, e.code, e.rest), (2, 0, 1280));
        assert_eq!(e.ip_len, 1280, "cut at 1280 octets");
        assert_eq!(e.quote.len(), 1280 - 48);
        let tagged = eth(MAC0, Some(100), ethertype::IPV6, &ipv6(src6(), v6(1, 5), 1, ip_protocol::UDP, &udp(1, 2, 26)));
        let e = expect_icmp(&mut rig, 0, tagged, DropReason::TtlExpired);
        assert_eq!((e.vlan, e.src), (Some(100), v6(0x100, 1).into()));
    }

    #[test]
    fn icmp_never_in_reply_to() {
        let mut rig = rig();
        let v4_icmp =
            |ty: u8| eth(MAC0, None, ethertype::IPV4, &ipv4(SRC4, [198, 19, 1, 5], 1, ip_protocol::ICMP, &[ty, 0, 0, 0, 0, 0, 0, 0]));
        for ty in [3, 4, 5, 11, 12] {
            expect_no_icmp(&mut rig, 0, v4_icmp(ty), DropReason::TtlExpired, IcmpOutcome::Suppressed, &format!("ICMP type {ty}"));
        }
        expect_icmp(&mut rig, 0, v4_icmp(8), DropReason::TtlExpired); // echo request is answered
        let truncated_icmp = eth(MAC0, None, ethertype::IPV4, &ipv4(SRC4, [198, 19, 1, 5], 1, ip_protocol::ICMP, &[]));
        expect_no_icmp(&mut rig, 0, truncated_icmp, DropReason::TtlExpired, IcmpOutcome::Suppressed, "ICMP without a header");
        let frag = |mf: bool, off: u16| {
            edit_v4(v4_frame([198, 19, 1, 5], 1), |ip| ipv4::Packet::new_unchecked(ip).set_flags_and_offset(false, mf, off))
        };
        expect_no_icmp(&mut rig, 0, frag(false, 1480), DropReason::TtlExpired, IcmpOutcome::Suppressed, "last fragment");
        expect_no_icmp(&mut rig, 0, frag(true, 8), DropReason::TtlExpired, IcmpOutcome::Suppressed, "middle fragment");
        expect_icmp(&mut rig, 0, frag(true, 0), DropReason::TtlExpired); // the first fragment is answered

        let v6_icmp =
            |ty: u8| eth(MAC0, None, ethertype::IPV6, &ipv6(src6(), v6(1, 5), 1, ip_protocol::ICMPV6, &[ty, 0, 0, 0, 0, 0, 0, 0]));
        for ty in [1, 2, 3, 4, 127] {
            expect_no_icmp(&mut rig, 0, v6_icmp(ty), DropReason::TtlExpired, IcmpOutcome::Suppressed, &format!("ICMPv6 type {ty}"));
        }
        expect_icmp(&mut rig, 0, v6_icmp(128), DropReason::TtlExpired);
        // An ICMPv6 error behind a destination options header is still an error.
        let mut hidden = vec![ip_protocol::ICMPV6, 0, 1, 4, 0, 0, 0, 0];
        hidden.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        let f = eth(MAC0, None, ethertype::IPV6, &ipv6(src6(), v6(1, 5), 1, ip_protocol::DEST_OPTIONS, &hidden));
        expect_no_icmp(&mut rig, 0, f, DropReason::TtlExpired, IcmpOutcome::Suppressed, "ICMPv6 error after options");
        let frag6 = |off: u16| {
            let mut fh = vec![ip_protocol::UDP, 0, 0, 0, 0, 0, 0, 1];
            fh[2..4].copy_from_slice(&(off | 1).to_be_bytes());
            fh.extend_from_slice(&udp(1, 2, 16));
            eth(MAC0, None, ethertype::IPV6, &ipv6(src6(), v6(1, 5), 1, ip_protocol::FRAGMENT, &fh))
        };
        expect_no_icmp(&mut rig, 0, frag6(1448), DropReason::TtlExpired, IcmpOutcome::Suppressed, "IPv6 non-initial fragment");
        expect_icmp(&mut rig, 0, frag6(0), DropReason::TtlExpired);
        // A header chain cut short: its upper layer is unknown, so no error.
        let f = eth(MAC0, None, ethertype::IPV6, &ipv6(src6(), v6(1, 5), 1, ip_protocol::HOP_BY_HOP, &[ip_protocol::UDP, 3, 0, 0]));
        expect_no_icmp(&mut rig, 0, f, DropReason::TtlExpired, IcmpOutcome::Suppressed, "cut header chain");

        // No address of the family on the ingress sub-interface (VLAN 200).
        let f = eth(MAC0, Some(200), ethertype::IPV4, &ipv4(SRC4, [198, 19, 1, 5], 1, ip_protocol::UDP, &udp(1, 2, 26)));
        expect_no_icmp(&mut rig, 0, f, DropReason::TtlExpired, IcmpOutcome::NoSource, "no IPv4 address");
        let f = eth(MAC0, Some(200), ethertype::IPV6, &ipv6(src6(), v6(77, 5), 64, ip_protocol::UDP, &udp(1, 2, 26)));
        expect_no_icmp(&mut rig, 0, f, DropReason::Unreachable, IcmpOutcome::NoSource, "no IPv6 address");
    }

    #[test]
    fn icmp_rate_limit_under_flood() {
        let (rate, burst) = (100u64, 10u64);
        let mut rig = rig_with(IcmpRateLimit { per_second: rate as u32, burst: burst as u32 });
        let frame = v4_frame([198, 19, 1, 5], 1);
        let batch: Vec<(u16, Vec<u8>)> = (0..50).map(|_| (0, frame.clone())).collect();
        // 10 000 frames over 200 batches, 5 ms apart: 0.995 s from first to last.
        let (start, step) = (1_000_000_000u64, 5_000_000u64);
        let mut sent = 0u64;
        for i in 0..200 {
            let outs = rig.run_in(&batch, HEADROOM, CHUNK, start + i * step);
            sent += outs.iter().filter(|o| matches!(o.verdict, Verdict::Forward { .. })).count() as u64;
        }
        let elapsed_ns = 199 * step;
        let expected = burst + rate * elapsed_ns / 1_000_000_000;
        assert!(sent.abs_diff(expected) <= 1, "sent {sent}, expected {expected}");
        let s = rig.snap();
        assert_eq!(s.icmp_count(IcmpOutcome::Sent), sent);
        assert_eq!(s.icmp_count(IcmpOutcome::RateLimited), 10_000 - sent);
        assert_eq!(s.drop_count(DropReason::TtlExpired), 10_000, "every packet counts as dropped");
        // Another port has its own bucket.
        let other = eth(MAC1, None, ethertype::IPV4, &ipv4(SRC4, [198, 19, 3, 5], 1, ip_protocol::UDP, &udp(1, 2, 26)));
        let out = rig.run_in(&[(1, other)], HEADROOM, CHUNK, start + 200 * step);
        assert!(matches!(out[0].verdict, Verdict::Forward { port: 1, .. }));
    }

    #[test]
    fn new_limits_apply_from_the_next_batch_without_a_fresh_burst() {
        let mut rig = rig_with(IcmpRateLimit { per_second: 1000, burst: 100 });
        let frame = v4_frame([198, 19, 1, 5], 1);
        let batch: Vec<(u16, Vec<u8>)> = (0..50).map(|_| (0, frame.clone())).collect();
        let t0 = 1_000_000_000u64;
        assert_eq!(flood(&mut rig, &batch, t0), 50, "within the burst of 100");
        // 2 ms later, burst 5 and no refill: the 52 tokens (2 earned at the old rate) are
        // cut to 5.
        rig.pipeline.set_icmp_limits(IcmpRateLimit { per_second: 0, burst: 5 }, UNLIMITED, UNLIMITED, t0 + 2_000_000);
        assert_eq!(flood(&mut rig, &batch, t0 + 2_000_000), 5);
        assert_eq!(flood(&mut rig, &batch, t0 + 10_000_000_000), 0, "rate 0 refills nothing");
        // Back to 1000/s: no new burst; 10 ms of refill after the change.
        rig.pipeline.set_icmp_limits(IcmpRateLimit { per_second: 1000, burst: 100 }, UNLIMITED, UNLIMITED, t0 + 10_010_000_000);
        assert_eq!(flood(&mut rig, &batch, t0 + 10_020_000_000), 10);
        // The per-worker bucket bounds all ports together.
        let t1 = t0 + 20_000_000_000;
        rig.pipeline.set_icmp_limits(UNLIMITED, UNLIMITED, IcmpRateLimit { per_second: 0, burst: 3 }, t1);
        assert_eq!(flood(&mut rig, &batch, t1), 3);
        let s = rig.snap();
        assert_eq!(s.icmp_count(IcmpOutcome::WorkerRateLimited), 47);
    }

    #[test]
    fn icmp_without_headroom() {
        let mut rig = rig();
        // No headroom, room at the tail: the quote moves right, the error is still whole.
        let frame = v4_frame([198, 19, 1, 5], 1);
        let out = rig.run_in(&[(0, frame.clone())], 0, CHUNK, 0).pop().unwrap();
        let e = parse_icmp(out.frame());
        assert_eq!(e.quote[..], frame[14..]);
        let frame6 = v6_frame(v6(1, 5), 1);
        let out = rig.run_in(&[(0, frame6.clone())], 10, CHUNK, 0).pop().unwrap();
        assert_eq!(parse_icmp(out.frame()).quote[..], frame6[14..]);
        // No room anywhere: counted, not sent.
        let before = rig.snap();
        let out = rig.run_in(&[(0, frame.clone())], 0, 0, 0).pop().unwrap();
        assert_eq!(out.verdict, Verdict::Drop(DropReason::TtlExpired));
        assert_eq!(rig.snap().icmp_count(IcmpOutcome::NoRoom), before.icmp_count(IcmpOutcome::NoRoom) + 1);
    }

    fn flood(rig: &mut Rig, frames: &[(u16, Vec<u8>)], at: u64) -> u64 {
        let outs = rig.run_in(frames, HEADROOM, CHUNK, at);
        outs.iter().filter(|o| matches!(o.verdict, Verdict::Forward { .. })).count() as u64
    }

    #[test]
    fn one_flooding_source_does_not_starve_the_others() {
        let mut c = config(UNLIMITED);
        c.icmp_limits = IcmpLimits::default();
        let mut rig = rig_from(&c);
        // 2000 TTL-1 packets from one source over 1 s: 40 batches of 50, 25 ms apart.
        let flood_frame = v4_frame([198, 19, 1, 5], 1);
        let batch: Vec<(u16, Vec<u8>)> = (0..50).map(|_| (0, flood_frame.clone())).collect();
        let start = 5_000_000_000u64;
        let sent: u64 = (0..40).map(|i| flood(&mut rig, &batch, start + i * 25_000_000)).sum();
        assert_eq!(sent, 6, "the per-source burst, nothing refilled within the second");
        let s = rig.snap();
        assert_eq!(s.icmp_count(IcmpOutcome::SourceRateLimited), 2000 - 6);
        assert_eq!(s.icmp_count(IcmpOutcome::RateLimited) + s.icmp_count(IcmpOutcome::WorkerRateLimited), 0);
        // A second source, in the middle of the flood, still gets its Time Exceeded, IPv4 and IPv6.
        let other = eth(MAC0, None, ethertype::IPV4, &ipv4([198, 18, 0, 77], [198, 19, 1, 5], 1, ip_protocol::UDP, &udp(1, 2, 26)));
        assert_eq!(flood(&mut rig, &[(0, other)], start + 999_000_000), 1);
        assert_eq!(flood(&mut rig, &[(0, v6_frame(v6(1, 5), 1))], start + 999_000_000), 1);
        // Then one a second: two seconds after the flood began, two more.
        assert_eq!(flood(&mut rig, &batch, start + 2_000_000_000), 2);
        // Packet Too Big is not limited per source: path MTU discovery keeps working.
        let big = eth(MAC0, None, ethertype::IPV4, &ipv4(SRC4, [198, 19, 4, 1], 64, ip_protocol::UDP, &udp(1, 2, 1400)));
        let bigs: Vec<(u16, Vec<u8>)> = (0..20).map(|_| (0, big.clone())).collect();
        assert_eq!(flood(&mut rig, &bigs, start + 2_000_000_000), 20);
    }

    #[test]
    fn the_worker_bucket_bounds_many_sources() {
        let mut c = config(UNLIMITED);
        // One error per source, ever; a worker burst of 50.
        c.icmp_limits = IcmpLimits {
            per_source: IcmpRateLimit { per_second: 0, burst: 1 },
            sources: 4096,
            per_worker: IcmpRateLimit { per_second: 1000, burst: 50 },
        };
        let mut rig = rig_from(&c);
        // 200 different sources at once: the worker's burst of 50.
        let frames: Vec<(u16, Vec<u8>)> = (0..200u32)
            .map(|i| {
                let src = (0xc612_1000 + i).to_be_bytes();
                (0, eth(MAC0, None, ethertype::IPV4, &ipv4(src, [198, 19, 1, 5], 1, ip_protocol::UDP, &udp(1, 2, 26))))
            })
            .collect();
        assert_eq!(flood(&mut rig, &frames, 1_000_000_000), 50);
        let s = rig.snap();
        assert_eq!(s.icmp_count(IcmpOutcome::WorkerRateLimited), 150);
        // A source held back by the worker bucket spent no token of its own; one that got
        // its error did.
        assert_eq!(flood(&mut rig, &frames[199..], 1_100_000_000), 1);
        assert_eq!(flood(&mut rig, &frames[..1], 1_100_000_000), 0);
        assert_eq!(rig.snap().icmp_count(IcmpOutcome::SourceRateLimited), 1);
        assert!(rig.pipeline.icmp_sources.len() <= rig.pipeline.icmp_sources.capacity());
    }
}
