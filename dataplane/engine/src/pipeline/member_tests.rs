//! Per-member counting through the pipeline: rx by source MAC on ingress, tx by the
//! adjacency's destination MAC, drops by member and reason, unknown MACs in their own row.

use super::testing::*;
use super::*;
use crate::fib::{Adjacency, FibOp, Member, MAX_MEMBERS, UNKNOWN_MEMBER};
use crate::wire::ethernet::ethertype;
use crate::wire::ip_protocol;

const A: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];
const B: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 2];
const C: [u8; 6] = [0x02, 0xcc, 0, 0, 0, 3];
const STRANGER: [u8; 6] = [0x02, 0xee, 0, 0, 0, 9];

/// `frame` as sent by the station `src`.
fn from(src: [u8; 6], mut frame: Vec<u8>) -> Vec<u8> {
    frame[6..12].copy_from_slice(&src);
    frame
}

/// Applies `ops` and lets the rig's reader pass a quiescent point, so that the FIB's
/// writer, dropped at the end of a test, does not wait for it forever.
fn apply(rig: &mut Rig, ops: &[FibOp]) {
    rig._fib.apply(ops).unwrap();
    rig.reader.quiescent();
}

fn member(id: u32, port: u16, vlan: u16, mac: [u8; 6]) -> FibOp {
    FibOp::SetMember { id, member: Member { port, vlan, mac }, sources: None }
}

#[test]
fn counts_per_member_exactly() {
    let mut rig = rig();
    // A and B on port 0 untagged, C behind VLAN 100 of port 0; D is the router behind
    // adjacency 1 (port 1 untagged, nh_mac(1)), so traffic to 198.19.1.0/24 is D's tx.
    apply(&mut rig, &[member(0, 0, 0, A), member(1, 0, 0, B), member(2, 0, 100, C), member(3, 1, 0, nh_mac(1))]);
    let to = |dst: [u8; 4], ttl: u8, vlan: Option<u16>| {
        eth(MAC0, vlan, ethertype::IPV4, &ipv4(SRC4, dst, ttl, ip_protocol::UDP, &udp(1, 2, 26)))
    };
    let mut frames = Vec::new();
    for _ in 0..5 {
        frames.push((0u16, from(A, to([198, 19, 1, 5], 64, None))));
    }
    for _ in 0..3 {
        frames.push((0, from(B, to([198, 19, 66, 5], 64, None)))); // blackhole
    }
    for _ in 0..2 {
        frames.push((0, from(C, to([198, 19, 1, 5], 1, Some(100))))); // TTL expired, ICMP sent
    }
    frames.push((0, from(C, to([198, 19, 1, 5], 64, Some(100)))));
    for _ in 0..4 {
        frames.push((0, from(STRANGER, to([198, 19, 1, 5], 64, None))));
    }
    frames.push((0, from(A, to([198, 19, 1, 5], 64, Some(100))))); // A's MAC, but on C's VLAN
    frames.push((2, from(A, eth(MAC2, None, ethertype::IPV4, &ipv4(SRC4, [198, 19, 1, 5], 64, ip_protocol::UDP, &udp(1, 2, 26))))));
    frames.push((0, from(B, eth(MAC0, None, ethertype::ARP, &[0; 46])))); // not IP: B's drop
    let outs = rig.run(&frames);
    let len = frames[0].1.len() as u64;
    let s = rig.snap();
    let (a, b, c, d) = (s.member(0), s.member(1), s.member(2), s.member(3));
    assert_eq!((a.rx_packets, a.rx_bytes), (5, 5 * len));
    assert_eq!(a.tx_packets, 0);
    assert_eq!(a.drops.iter().sum::<u64>(), 0);
    assert_eq!(b.rx_packets, 4);
    assert_eq!(b.drop_count(DropReason::Blackhole), 3);
    assert_eq!(b.drop_count(DropReason::NotIp), 1);
    assert_eq!(c.rx_packets, 3);
    assert_eq!(c.drop_count(DropReason::TtlExpired), 2);
    assert_eq!(c.rx_bytes, 3 * (len + 4), "tagged frames are 4 octets longer");
    // D received nothing from its port but was sent everything forwarded to 198.19.1/24:
    // A's 5, C's 1, the stranger's 4, A-on-VLAN-100's 1, and port 2's 1 (no members there).
    let forwarded: Vec<_> = outs.iter().filter(|o| matches!(o.verdict, Verdict::Forward { port: 1, .. })).collect();
    assert_eq!(forwarded.len(), 12);
    assert_eq!(d.rx_packets, 0);
    assert_eq!(d.tx_packets, 12);
    assert_eq!(d.tx_bytes, forwarded.iter().map(|o| o.frame().len() as u64).sum::<u64>());
    let unknown = s.member(UNKNOWN_MEMBER);
    assert_eq!(unknown.rx_packets, 5, "the stranger's 4 and A's MAC on VLAN 100");
    // Port 2 has no members: its frame is nobody's. Every attributed rx is on port 0.
    let attributed: u64 = s.members.iter().map(|m| m.rx_packets).sum();
    assert_eq!(attributed, (frames.len() - 1) as u64);
    assert_eq!(s.sub_interfaces[0].rx_packets + s.sub_interfaces[1].rx_packets, attributed);
}

#[test]
fn members_change_under_the_pipeline() {
    let mut rig = rig();
    let f = || from(A, v4_frame([198, 19, 1, 5], 64));
    // No members anywhere: nothing attributed, not even as unknown.
    rig.run1(0, f());
    assert!(rig.snap().members.iter().all(|m| m.is_zero()));
    // The adjacency exists before its member: mapped when the member is set.
    apply(&mut rig, &[member(7, 0, 0, A), member(8, 1, 0, nh_mac(1))]);
    rig.run1(0, f());
    assert_eq!((rig.snap().member(7).rx_packets, rig.snap().member(8).tx_packets), (1, 1));
    // An adjacency re-pointed to another MAC leaves the member; pointed back, it returns.
    let adj = |mac| FibOp::SetAdjacency { id: 1, adjacency: Adjacency { port: 1, vlan: 0, src_mac: MAC1, dst_mac: mac } };
    apply(&mut rig, &[adj(nh_mac(42))]);
    assert_eq!(rig._fib.adjacency_member(1), None);
    rig.run1(0, f());
    assert_eq!(rig.snap().member(8).tx_packets, 1);
    apply(&mut rig, &[adj(nh_mac(1))]);
    assert_eq!(rig._fib.adjacency_member(1), Some(8));
    // A deleted member's frames are no longer its; its MAC may go to another id in one batch.
    apply(&mut rig, &[FibOp::DeleteMember { id: 7 }]);
    rig.run1(0, f());
    assert_eq!(rig.snap().member(7).rx_packets, 2, "its two frames before it was deleted");
    assert_eq!(rig.snap().member(UNKNOWN_MEMBER).rx_packets, 0, "port 0 has no member left: the frame is nobody's");
    apply(&mut rig, &[member(6, 0, 0, B)]);
    rig.run1(0, f());
    assert_eq!(rig.snap().member(UNKNOWN_MEMBER).rx_packets, 1, "with B on port 0, A's MAC is unknown there");
    apply(&mut rig, &[FibOp::DeleteMember { id: 8 }, member(9, 1, 0, nh_mac(1))]);
    assert_eq!(rig._fib.adjacency_member(1), Some(9));
    assert_eq!(rig._fib.members().count(), 2);
}

#[test]
fn bad_members_are_refused_whole() {
    let mut rig = rig();
    apply(&mut rig, &[member(1, 0, 0, A)]);
    let refused = |rig: &mut Rig, ops: &[FibOp], needle: &str| {
        let e = rig._fib.apply(ops).unwrap_err();
        assert!(e.to_string().contains(needle), "{e}");
    };
    refused(&mut rig, &[member(MAX_MEMBERS, 0, 0, B)], "exceeds the engine's 1024 members");
    refused(&mut rig, &[member(2, 0, 0, [0x03, 0, 0, 0, 0, 1])], "not a unicast station address");
    refused(&mut rig, &[member(2, 0, 0, [0; 6])], "not a unicast station address");
    refused(&mut rig, &[member(2, 0, 4095, B)], "VLAN 4095");
    refused(&mut rig, &[member(2, 0, 0, A)], "is member 1's");
    refused(&mut rig, &[member(2, 0, 0, B), member(3, 0, 0, B)], "also member 2's (entry 0)");
    refused(&mut rig, &[member(2, 0, 0, B), member(2, 0, 0, C)], "one change per object");
    // Nothing of a refused batch was applied.
    assert_eq!(rig._fib.members().collect::<Vec<_>>(), vec![(1, Member { port: 0, vlan: 0, mac: A })]);
    // The same MAC on another sub-interface is another member; a holder changed in the
    // batch frees its MAC.
    apply(&mut rig, &[member(2, 0, 100, A)]);
    apply(&mut rig, &[member(1, 0, 0, B), member(3, 0, 0, A)]);
    assert_eq!(rig._fib.member(3), Some(Member { port: 0, vlan: 0, mac: A }));
}

#[test]
fn blackhole_drops_counted_per_route() {
    use crate::fib::{Prefix, RouteTarget};
    let mut rig = rig();
    // 198.19.66.0/24 is a blackhole of the rig's FIB; add a /32 inside it and an IPv6 /128.
    let host = Prefix::v4(u32::from_be_bytes([198, 19, 66, 7]), 32);
    let host6 = Prefix::v6(u128::from(v6(66, 9)), 128);
    apply(
        &mut rig,
        &[
            FibOp::AddRoute { prefix: host, target: RouteTarget::Blackhole },
            FibOp::AddRoute { prefix: host6, target: RouteTarget::Blackhole },
        ],
    );
    let net = Prefix::v4(u32::from_be_bytes([198, 19, 66, 0]), 24);
    let slot = |rig: &Rig, p: &Prefix| rig._fib.blackhole_slot(p).unwrap();
    let (s_net, s_host, s_host6) = (slot(&rig, &net), slot(&rig, &host), slot(&rig, &host6));
    assert!(s_net != s_host && s_host != s_host6);
    let mut frames = Vec::new();
    for _ in 0..3 {
        frames.push((0u16, v4_frame([198, 19, 66, 7], 64)));
    }
    for _ in 0..2 {
        frames.push((0, v4_frame([198, 19, 66, 8], 64)));
    }
    frames.push((0, v6_frame(v6(66, 9), 64)));
    frames.push((0, v6_frame(v6(66, 10), 64))); // the /48 of the rig
    let outs = rig.run(&frames);
    assert!(outs.iter().all(|o| o.verdict == Verdict::Drop(DropReason::Blackhole)));
    let c = rig.pipeline.counters();
    assert_eq!((c.blackhole(s_host), c.blackhole(s_net), c.blackhole(s_host6)), (3, 2, 1));
    // Deleted, the /32's frames count under the /24; re-added, it has a fresh slot.
    apply(&mut rig, &[FibOp::DeleteRoute { prefix: host }]);
    assert_eq!(rig._fib.blackhole_slot(&host), None);
    rig.run(&frames[..1]);
    assert_eq!(rig.pipeline.counters().blackhole(s_net), 3);
    apply(&mut rig, &[FibOp::AddRoute { prefix: host, target: RouteTarget::Blackhole }]);
    let again = slot(&rig, &host);
    assert_ne!(again, s_host, "a freed slot is not handed out again at once");
    assert_eq!(rig.pipeline.counters().blackhole(again), 0);
    // Re-pointed to a group, the route leaves the blackhole table.
    apply(&mut rig, &[FibOp::AddRoute { prefix: host, target: RouteTarget::Group(1) }]);
    assert_eq!(rig._fib.blackhole_slot(&host), None);
}

#[test]
fn a_forwarded_frame_marks_its_adjacency_used_until_taken() {
    let mut rig = rig();
    assert!(!rig._fib.take_adjacency_used(1), "nothing sent yet");
    rig.run1(0, v4_frame([198, 19, 1, 5], 1)); // TTL expired: not sent by the adjacency
    assert!(!rig._fib.take_adjacency_used(1));
    rig.run1(0, v4_frame([198, 19, 1, 5], 64));
    rig.run1(0, v4_frame([198, 19, 1, 6], 64));
    assert!(rig._fib.take_adjacency_used(1));
    assert!(!rig._fib.take_adjacency_used(1), "taking the bit clears it");
    assert!(!rig._fib.take_adjacency_used(u32::MAX), "an id past the table is never used");
}

fn filtered(id: u32, mac: [u8; 6], sources: &[crate::fib::Prefix]) -> FibOp {
    FibOp::SetMember { id, member: Member { port: 0, vlan: 0, mac }, sources: Some(sources.into()) }
}

/// BCP 38: a member with a source filter sends only from its prefixes; other sources are
/// dropped as `member_source` and counted as its drops; members without a filter, unknown
/// MACs and ports without members are not checked. A filter changed between batches is
/// in force whole from the next.
#[test]
fn member_source_filters() {
    use crate::fib::Prefix;
    let mut rig = rig();
    let own4 = Prefix::v4(u32::from_be_bytes([198, 18, 0, 0]), 24);
    let own6 = Prefix::v6(u128::from(v6(0, 0)), 64);
    apply(&mut rig, &[filtered(0, A, &[own4, own6]), member(1, 0, 0, B)]);
    let v4 = |src: [u8; 4]| eth(MAC0, None, ethertype::IPV4, &ipv4(src, [198, 19, 1, 5], 64, ip_protocol::UDP, &udp(1, 2, 26)));
    let v6f = |src: Ipv6Addr| eth(MAC0, None, ethertype::IPV6, &ipv6(src, v6(1, 5), 64, ip_protocol::UDP, &udp(1, 2, 26)));
    let frames = vec![
        (0u16, from(A, v4([198, 18, 0, 7]))),      // A, its own source: forwarded
        (0, from(A, v4([198, 18, 77, 7]))),        // A, spoofed: dropped
        (0, from(A, v6f(v6(0, 9)))),               // A, its own IPv6 source
        (0, from(A, v6f(v6(77, 9)))),              // A, spoofed IPv6
        (0, from(B, v4([198, 18, 77, 7]))),        // B has no filter
        (0, from(STRANGER, v4([198, 18, 77, 7]))), // unknown MAC: not a member's filter
        (2, from(A, eth(MAC2, None, ethertype::IPV4, &ipv4([198, 18, 77, 7], [198, 19, 1, 5], 64, ip_protocol::UDP, &udp(1, 2, 26))))), // port 2 has no members
    ];
    let outs = rig.run(&frames);
    let verdicts: Vec<bool> = outs.iter().map(|o| matches!(o.verdict, Verdict::Forward { .. })).collect();
    assert_eq!(verdicts, [true, false, true, false, true, true, true]);
    assert!(matches!(outs[1].verdict, Verdict::Drop(DropReason::MemberSource)));
    assert!(matches!(outs[3].verdict, Verdict::Drop(DropReason::MemberSource)));
    let s = rig.snap();
    assert_eq!(s.member(0).drop_count(DropReason::MemberSource), 2);
    assert_eq!(s.member(0).rx_packets, 4, "every frame of A on port 0 counts as rx, dropped or not");
    assert_eq!(s.member(1).drop_count(DropReason::MemberSource), 0);
    // The filter changed: 198.18.77.0/24 allowed, the /24 it had no more, IPv6 none at all.
    apply(&mut rig, &[filtered(0, A, &[Prefix::v4(u32::from_be_bytes([198, 18, 77, 0]), 24)])]);
    let outs = rig.run(&frames[..4]);
    let verdicts: Vec<bool> = outs.iter().map(|o| matches!(o.verdict, Verdict::Forward { .. })).collect();
    assert_eq!(verdicts, [false, true, false, false]);
    // Set again without a filter: nothing is checked.
    apply(&mut rig, &[member(0, 0, 0, A)]);
    let outs = rig.run(&frames[..4]);
    assert!(outs.iter().all(|o| matches!(o.verdict, Verdict::Forward { .. })));
    // A bad filter is refused whole.
    let host_bits = Prefix::v4(u32::from_be_bytes([198, 18, 0, 1]), 24);
    let e = rig._fib.apply(&[filtered(0, A, &[host_bits]), member(5, 0, 0, C)]).unwrap_err();
    assert!(e.to_string().contains("source filter") && e.to_string().contains("host bits"), "{e}");
    assert_eq!(rig._fib.member_sources(0), None);
    assert_eq!(rig._fib.member(5), None);
    let many = vec![own4; crate::fib::MAX_MEMBER_SOURCES + 1];
    let e = rig._fib.apply(&[filtered(0, A, &many)]).unwrap_err();
    assert!(e.to_string().contains("exceed the limit"), "{e}");
}
