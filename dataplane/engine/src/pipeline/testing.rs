//! What the pipeline's tests share: a FIB and a configuration of three ports, a rig that
//! runs frames through a pipeline, frame builders and the checks on what comes out.
#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;
use crate::counters::CounterSnapshot;
use crate::fib::{Adjacency, Fib, FibConfig, FibOp, NextHop, Prefix, RouteTarget};
use crate::wire::ethernet::{self, ethertype};
use crate::wire::{icmpv4, icmpv6, ip_protocol, ipv4, ipv6};

pub const MAC0: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];

pub const MAC1: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];

pub const MAC2: [u8; 6] = [0x02, 0, 0, 0, 0, 0x12];

/// The station that sends us traffic.
pub const PEER: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];

pub const SRC4: [u8; 4] = [198, 18, 0, 100];

pub const HEADROOM: usize = 256;

pub const CHUNK: usize = 2048;

pub fn nh_mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 1, n]
}

pub fn v6(net: u16, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, net, 0, 0, 0, 0, host)
}

pub fn src6() -> Ipv6Addr {
    v6(0, 100)
}

pub fn sub(vlan: u16, v4: Option<[u8; 4]>, v6a: Option<Ipv6Addr>) -> SubInterfaceConfig {
    SubInterfaceConfig::new(vlan, v4.map(Ipv4Addr::from), v6a)
}

pub const UNLIMITED: IcmpRateLimit = IcmpRateLimit { per_second: 1_000_000, burst: 1_000_000 };

pub fn config(limit: IcmpRateLimit) -> PipelineConfig {
    PipelineConfig {
        ports: vec![
            PortConfig {
                mac: MAC0,
                mtu: 1500,
                sub_interfaces: vec![
                    sub(0, Some([198, 18, 0, 1]), Some(v6(0, 1))),
                    sub(100, Some([198, 18, 100, 1]), Some(v6(0x100, 1))),
                    sub(200, None, None),
                ],
                icmp_rate_limit: limit,
                directed_broadcast: false,
            },
            PortConfig {
                mac: MAC1,
                mtu: 1500,
                sub_interfaces: vec![sub(0, Some([198, 18, 1, 1]), Some(v6(0xf001, 1))), sub(300, None, None)],
                icmp_rate_limit: limit,
                directed_broadcast: false,
            },
            PortConfig {
                mac: MAC2,
                mtu: 1280,
                sub_interfaces: vec![sub(0, None, None)],
                icmp_rate_limit: limit,
                directed_broadcast: false,
            },
        ],
        hash_seed: 0x5eed,
        // Out of the way of the per-port tests; the per-source and per-worker ones set theirs.
        icmp_limits: IcmpLimits { per_source: UNLIMITED, sources: 64, per_worker: UNLIMITED },
    }
}

pub fn fib() -> Fib {
    let mut fib = Fib::new(FibConfig { v4_routes: 64, v6_routes: 64, v4_nodes: 8, v6_nodes: 64, groups: 64, adjacencies: 64 }).unwrap();
    let adj = |id, port, vlan, src_mac, n| FibOp::SetAdjacency { id, adjacency: Adjacency { port, vlan, src_mac, dst_mac: nh_mac(n) } };
    let group =
        |id, members: &[u32]| FibOp::SetGroup { id, members: members.iter().map(|&a| NextHop { adjacency: a, weight: 1 }).collect() };
    let mut ops = vec![
        adj(1, 1, 0, MAC1, 1),
        adj(2, 1, 300, MAC1, 2),
        adj(3, 0, 100, MAC0, 3),
        adj(4, 2, 0, MAC2, 4),
        adj(5, 1, 0, MAC1, 5),
        adj(6, 1, 0, MAC1, 6),
        adj(7, 1, 0, MAC1, 7),
        adj(8, 9, 0, MAC1, 8),
        adj(9, 1, 999, MAC1, 9),
        group(1, &[1]),
        group(2, &[2]),
        group(3, &[3]),
        group(4, &[4]),
        group(8, &[8]),
        group(9, &[9]),
        group(10, &[5, 6]),
        group(11, &[5, 6, 7]),
    ];
    for g in [1u8, 2, 3, 4, 8, 9, 10, 11] {
        ops.push(FibOp::AddRoute { prefix: Prefix::v4(u32::from_be_bytes([198, 19, g, 0]), 24), target: RouteTarget::Group(g as u32) });
        ops.push(FibOp::AddRoute { prefix: Prefix::v6(u128::from(v6(g as u16, 0)), 48), target: RouteTarget::Group(g as u32) });
    }
    for (n, target) in [(66u8, RouteTarget::Blackhole), (77, RouteTarget::Unreachable), (88, RouteTarget::Local), (55, RouteTarget::Glean)]
    {
        ops.push(FibOp::AddRoute { prefix: Prefix::v4(u32::from_be_bytes([198, 19, n, 0]), 24), target });
        ops.push(FibOp::AddRoute { prefix: Prefix::v6(u128::from(v6(n as u16, 0)), 48), target });
    }
    fib.apply(&ops).unwrap();
    fib
}

pub struct Rig {
    pub _fib: Fib,
    pub reader: FibReader,
    pub pipeline: Pipeline,
}

pub struct Out {
    pub chunk: Vec<u8>,
    pub verdict: Verdict,
}

impl Out {
    pub fn frame(&self) -> &[u8] {
        match self.verdict {
            Verdict::Forward { start, len, .. } => &self.chunk[start..start + len],
            Verdict::Drop(r) => panic!("dropped: {r}"),
        }
    }
}

pub fn rig_with(limit: IcmpRateLimit) -> Rig {
    let fib = fib();
    Rig { reader: fib.reader(), _fib: fib, pipeline: Pipeline::new(&config(limit)).unwrap() }
}

pub fn rig_from(config: &PipelineConfig) -> Rig {
    let fib = fib();
    Rig { reader: fib.reader(), _fib: fib, pipeline: Pipeline::new(config).unwrap() }
}

pub fn rig() -> Rig {
    rig_with(IcmpRateLimit { per_second: 1_000_000, burst: 1_000_000 })
}

impl Rig {
    pub fn run_in(&mut self, frames: &[(u16, Vec<u8>)], headroom: usize, chunk_size: usize, now: u64) -> Vec<Out> {
        let mut chunks: Vec<Vec<u8>> = frames
            .iter()
            .map(|(_, f)| {
                let mut c = vec![0xee; chunk_size.max(headroom + f.len())];
                c[headroom..headroom + f.len()].copy_from_slice(f);
                c
            })
            .collect();
        let mut bufs: Vec<PacketBuf> = chunks
            .iter_mut()
            .zip(frames)
            .map(|(c, (port, f))| PacketBuf { chunk: c, start: headroom, len: f.len(), port: *port })
            .collect();
        let mut verdicts = vec![Verdict::Drop(DropReason::Truncated); frames.len()];
        self.pipeline.process(&self.reader, &mut bufs, &mut verdicts, now);
        self.reader.quiescent();
        drop(bufs);
        chunks.into_iter().zip(verdicts).map(|(chunk, verdict)| Out { chunk, verdict }).collect()
    }

    pub fn run(&mut self, frames: &[(u16, Vec<u8>)]) -> Vec<Out> {
        self.run_in(frames, HEADROOM, CHUNK, 0)
    }

    pub fn run1(&mut self, port: u16, frame: Vec<u8>) -> Out {
        self.run(&[(port, frame)]).pop().unwrap()
    }

    pub fn snap(&self) -> CounterSnapshot {
        self.pipeline.counters().snapshot()
    }
}

pub fn udp(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let mut u = vec![0u8; 8 + payload];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    for (i, b) in u[8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    u
}

pub fn ipv4(src: [u8; 4], dst: [u8; 4], ttl: u8, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 20 + payload.len()];
    {
        let mut p = ipv4::Packet::new_unchecked(&mut b[..]);
        p.set_version(4);
        p.set_header_len(20);
        p.set_total_len((20 + payload.len()) as u16);
        p.set_ident(0x4242);
        p.set_flags_and_offset(true, false, 0);
        p.set_ttl(ttl);
        p.set_protocol(protocol);
        p.set_src_addr(src.into());
        p.set_dst_addr(dst.into());
        p.payload_mut().copy_from_slice(payload);
        p.fill_checksum();
    }
    b
}

pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, next_header: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 40 + payload.len()];
    let mut p = ipv6::Packet::new_unchecked(&mut b[..]);
    p.set_version_class_flow(6, 0, 0x1234);
    p.set_payload_len(payload.len() as u16);
    p.set_next_header(next_header);
    p.set_hop_limit(hop_limit);
    p.set_src_addr(src);
    p.set_dst_addr(dst);
    p.payload_mut().copy_from_slice(payload);
    b
}

pub fn eth(dst: [u8; 6], vlan: Option<u16>, ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&PEER);
    if let Some(tci) = vlan {
        f.extend_from_slice(&ethertype::VLAN.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn v4_frame(dst: [u8; 4], ttl: u8) -> Vec<u8> {
    eth(MAC0, None, ethertype::IPV4, &ipv4(SRC4, dst, ttl, ip_protocol::UDP, &udp(1000, 2000, 26)))
}

pub fn v6_frame(dst: Ipv6Addr, hop_limit: u8) -> Vec<u8> {
    eth(MAC0, None, ethertype::IPV6, &ipv6(src6(), dst, hop_limit, ip_protocol::UDP, &udp(1000, 2000, 26)))
}

/// Rewrites an IPv4 frame's header with `edit` and recomputes its checksum.
pub fn edit_v4(mut frame: Vec<u8>, edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
    edit(&mut frame[14..]);
    ipv4::Packet::new_unchecked(&mut frame[14..34]).fill_checksum();
    frame
}

pub fn icmp_counts(s: &CounterSnapshot) -> Vec<u64> {
    s.icmp.to_vec()
}

/// Asserts the drop verdict, that exactly `reason`'s counter moved by one, and that no
/// ICMP counter moved.
pub fn assert_silent_drop(rig: &mut Rig, port: u16, frame: Vec<u8>, reason: DropReason, what: &str) {
    let before = rig.snap();
    let out = rig.run1(port, frame);
    assert_eq!(out.verdict, Verdict::Drop(reason), "{what}");
    let after = rig.snap();
    for r in DropReason::ALL {
        let expect = before.drop_count(*r) + (*r == reason) as u64;
        assert_eq!(after.drop_count(*r), expect, "{what}: counter {r}");
    }
    assert_on_port(&before, &after, port, reason, what);
    assert_eq!(icmp_counts(&before), icmp_counts(&after), "{what}: no ICMP activity");
}

/// The drop was counted on the ingress port's row (the spare row for a port index that is
/// none of the pipeline's).
pub fn assert_on_port(before: &CounterSnapshot, after: &CounterSnapshot, port: u16, reason: DropReason, what: &str) {
    let row = (port as usize).min(after.port_drops.len() - 1);
    assert_eq!(after.port_drop_count(row, reason), before.port_drop_count(row, reason) + 1, "{what}: counted on port {port}");
}

/// What an ICMP error frame says, checked for well-formedness on the way.
pub struct Icmp {
    pub vlan: Option<u16>,
    pub src: std::net::IpAddr,
    pub dst: std::net::IpAddr,
    pub ty: u8,
    pub code: u8,
    pub rest: u32,
    pub ip_len: usize,
    pub quote: Vec<u8>,
}

pub fn parse_icmp(frame: &[u8]) -> Icmp {
    let eth = ethernet::Frame::new_checked(frame).unwrap();
    assert_eq!(eth.dst_addr(), PEER, "back to the sender");
    assert_eq!(eth.src_addr(), MAC0, "from the ingress port");
    let (vlan, et, ip) = if eth.ethertype() == ethertype::VLAN {
        let t = ethernet::VlanTag::new_checked(eth.payload()).unwrap();
        (Some(t.tci()), t.ethertype(), &frame[18..])
    } else {
        (None, eth.ethertype(), &frame[14..])
    };
    if et == ethertype::IPV4 {
        let p = ipv4::Packet::new_checked(ip).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), ip_protocol::ICMP);
        assert!(p.total_len() as usize <= 576);
        assert_eq!(p.total_len() as usize + frame.len() - ip.len(), frame.len());
        let icmp = icmpv4::Packet::new_checked(p.payload()).unwrap();
        assert!(icmp.verify_checksum());
        Icmp {
            vlan,
            src: p.src_addr().into(),
            dst: p.dst_addr().into(),
            ty: icmp.msg_type(),
            code: icmp.msg_code(),
            rest: icmp.rest_of_header(),
            ip_len: p.total_len() as usize,
            quote: icmp.data().to_vec(),
        }
    } else {
        assert_eq!(et, ethertype::IPV6);
        let p = ipv6::Packet::new_checked(ip).unwrap();
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.next_header(), ip_protocol::ICMPV6);
        assert!(p.total_len() <= 1280);
        assert_eq!(p.total_len(), ip.len());
        let icmp = icmpv6::Packet::new_checked(p.payload()).unwrap();
        assert!(icmp.verify_checksum(p.src_addr(), p.dst_addr()));
        Icmp {
            vlan,
            src: p.src_addr().into(),
            dst: p.dst_addr().into(),
            ty: icmp.msg_type(),
            code: icmp.msg_code(),
            rest: icmp.mtu(),
            ip_len: p.total_len(),
            quote: icmp.data().to_vec(),
        }
    }
}

/// Sends `frame`, expects an ICMP error back out of `port` and `reason` counted once.
pub fn expect_icmp(rig: &mut Rig, port: u16, frame: Vec<u8>, reason: DropReason) -> Icmp {
    let l2 = if frame[12..14] == ethertype::VLAN.to_be_bytes() { 18 } else { 14 };
    let original_ip = frame[l2..].to_vec();
    let before = rig.snap();
    let out = rig.run1(port, frame);
    assert!(matches!(out.verdict, Verdict::Forward { port: p, .. } if p == port), "{:?}", out.verdict);
    let after = rig.snap();
    assert_eq!(after.drop_count(reason), before.drop_count(reason) + 1);
    assert_eq!(after.total_drops(), before.total_drops() + 1);
    assert_on_port(&before, &after, port, reason, "an ICMP error");
    assert_eq!(after.icmp_count(IcmpOutcome::Sent), before.icmp_count(IcmpOutcome::Sent) + 1);
    let icmp = parse_icmp(out.frame());
    assert_eq!(icmp.quote[..], original_ip[..icmp.quote.len()], "the quote is the original datagram, as received");
    icmp
}

/// The offending packet is counted by its reason, the error by `outcome`, and nothing
/// is sent.
pub fn expect_no_icmp(rig: &mut Rig, port: u16, frame: Vec<u8>, reason: DropReason, outcome: IcmpOutcome, what: &str) {
    let before = rig.snap();
    let out = rig.run1(port, frame);
    assert_eq!(out.verdict, Verdict::Drop(reason), "{what}");
    let after = rig.snap();
    assert_eq!(after.drop_count(reason), before.drop_count(reason) + 1, "{what}");
    assert_eq!(after.total_drops(), before.total_drops() + 1, "{what}");
    assert_on_port(&before, &after, port, reason, what);
    for o in IcmpOutcome::ALL {
        assert_eq!(after.icmp_count(*o), before.icmp_count(*o) + (*o == outcome) as u64, "{what}: {o}");
    }
}

pub fn check_forwarded_v4(out: &Out, original: &[u8], port: u16, vlan: Option<u16>, dst_mac: [u8; 6], src_mac: [u8; 6]) {
    let Verdict::Forward { port: p, .. } = out.verdict else { panic!("{:?}", out.verdict) };
    assert_eq!(p, port);
    let f = out.frame();
    assert_eq!(f[..6], dst_mac);
    assert_eq!(f[6..12], src_mac);
    let (l2, et) = match vlan {
        Some(tci) => {
            assert_eq!(f[12..14], ethertype::VLAN.to_be_bytes());
            assert_eq!(f[14..16], tci.to_be_bytes());
            (18, &f[16..18])
        }
        None => (14, &f[12..14]),
    };
    let ol2 = if original[12..14] == ethertype::VLAN.to_be_bytes() { 18 } else { 14 };
    let ip = &f[l2..];
    let oip = &original[ol2..];
    if et == ethertype::IPV4.to_be_bytes() {
        let p = ipv4::Packet::new_checked(ip).unwrap();
        let o = ipv4::Packet::new_checked(oip).unwrap();
        assert_eq!(p.ttl(), o.ttl() - 1);
        // Recompute from scratch: the incremental update must agree.
        let mut copy = ip[..20].to_vec();
        ipv4::Packet::new_unchecked(&mut copy[..]).fill_checksum();
        assert_eq!(p.checksum(), ipv4::Packet::new_unchecked(&copy[..]).checksum());
        assert!(p.verify_checksum());
        assert_eq!(ip[..8], oip[..8]);
        assert_eq!(ip[9], oip[9]);
        assert_eq!(ip[12..o.total_len() as usize], oip[12..o.total_len() as usize], "addresses and payload untouched");
        let want = (l2 + o.total_len() as usize).max(60);
        assert_eq!(f.len(), want, "trimmed to the datagram, padded to the minimum");
    } else {
        assert_eq!(et, ethertype::IPV6.to_be_bytes());
        let p = ipv6::Packet::new_checked(ip).unwrap();
        let o = ipv6::Packet::new_checked(oip).unwrap();
        assert_eq!(p.hop_limit(), o.hop_limit() - 1);
        assert_eq!(ip[..7], oip[..7]);
        assert_eq!(ip[8..o.total_len()], oip[8..o.total_len()], "addresses and payload untouched");
        assert_eq!(f.len(), (l2 + o.total_len()).max(60));
    }
}
