//! The small-batch pipeline case shared by the criterion bench (`benches/pipeline.rs`,
//! `process_64_mixed*`) and `pipeline_ir` (its instruction counts under callgrind): one
//! batch of 64 forged frames, half IPv4 and half IPv6, each its own flow, all forwarded,
//! with the edge checks each variant turns on.

use std::net::{Ipv4Addr, Ipv6Addr};

use corridor_engine::fib::{Adjacency, Fib, FibConfig, FibOp, Member, NextHop, Prefix, RouteTarget};
use corridor_engine::pipeline::{IcmpRateLimit, PipelineConfig, PortConfig, SubInterfaceConfig, UrpfMode, UrpfPolicy};
use corridor_engine::wire::ethernet::{self, ethertype};
use corridor_engine::wire::{ip_protocol, ipv4, ipv6};

pub const BATCH: usize = 64;
pub const CHUNK: usize = 2048;
pub const HEADROOM: usize = 256;
pub const MAC_IN: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
pub const MAC_OUT: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
pub const PEER: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];

pub fn port(mac: [u8; 6]) -> PortConfig {
    PortConfig {
        mac,
        mtu: 1500,
        sub_interfaces: vec![SubInterfaceConfig::new(0, None, None)],
        icmp_rate_limit: IcmpRateLimit::default(),
        directed_broadcast: false,
    }
}

/// What a variant turns on.
#[derive(Clone, Copy, PartialEq)]
pub enum Variant {
    Plain,
    Members,
    /// Strict uRPF on port 0 alone (the sources routed back out of it), no members.
    Urpf,
    /// Members, the sender's source filter and strict uRPF on port 0.
    Edge,
}

/// The sender's source filter: the /24 and /48 of its sources among 254 other prefixes.
pub fn edge_sources() -> Box<[Prefix]> {
    let mut p = vec![
        Prefix::v4(u32::from(Ipv4Addr::new(198, 18, 0, 0)), 24),
        Prefix::v6(u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0)), 48),
    ];
    // Apart from each other, so that none merge: 128 ranges per family to search.
    for i in 1..128u32 {
        p.push(Prefix::v4(u32::from(Ipv4Addr::new(198, 19, 2 * i as u8, 0)), 24));
        p.push(Prefix::v6(u128::from(Ipv6Addr::new(0x2001, 0xdb8, 2 * i as u16, 0, 0, 0, 0, 0)), 48));
    }
    p.into()
}

/// Eight /24s and eight /48s, each through a group of two next hops on port 1; with
/// members, the sender (on port 0) and both next hops are members; with the edge checks,
/// the sender's sources are routed back out of port 0 and it has a source filter.
pub fn fib(variant: Variant) -> Fib {
    let members = matches!(variant, Variant::Members | Variant::Edge);
    let mut fib = Fib::new(FibConfig { v4_routes: 64, v6_routes: 64, v4_nodes: 8, v6_nodes: 64, groups: 16, adjacencies: 16 }).unwrap();
    let mut ops = Vec::new();
    for a in 1..=2u32 {
        ops.push(FibOp::SetAdjacency {
            id: a,
            adjacency: Adjacency { port: 1, vlan: 0, src_mac: MAC_OUT, dst_mac: [0x02, 0, 0, 0, 1, a as u8] },
        });
    }
    ops.push(FibOp::SetGroup { id: 1, members: vec![NextHop { adjacency: 1, weight: 1 }, NextHop { adjacency: 2, weight: 1 }] });
    for n in 0..8u32 {
        ops.push(FibOp::AddRoute { prefix: Prefix::v4(u32::from(Ipv4Addr::new(198, 19, n as u8, 0)), 24), target: RouteTarget::Group(1) });
        let net = u128::from(Ipv6Addr::new(0x2001, 0xdb8, n as u16, 0, 0, 0, 0, 0));
        ops.push(FibOp::AddRoute { prefix: Prefix::v6(net, 48), target: RouteTarget::Group(1) });
    }
    if members {
        let sources = (variant == Variant::Edge).then(edge_sources);
        ops.push(FibOp::SetMember { id: 0, member: Member { port: 0, vlan: 0, mac: PEER }, sources });
        for a in 1..=2u32 {
            ops.push(FibOp::SetMember { id: a, member: Member { port: 1, vlan: 0, mac: [0x02, 0, 0, 0, 1, a as u8] }, sources: None });
        }
    }
    if matches!(variant, Variant::Urpf | Variant::Edge) {
        ops.push(FibOp::SetAdjacency { id: 3, adjacency: Adjacency { port: 0, vlan: 0, src_mac: MAC_IN, dst_mac: PEER } });
        ops.push(FibOp::SetGroup { id: 2, members: vec![NextHop { adjacency: 3, weight: 1 }] });
        ops.push(FibOp::AddRoute { prefix: Prefix::v4(u32::from(Ipv4Addr::new(198, 18, 0, 0)), 24), target: RouteTarget::Group(2) });
        let net = u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0));
        ops.push(FibOp::AddRoute { prefix: Prefix::v6(net, 48), target: RouteTarget::Group(2) });
    }
    fib.apply(&ops).unwrap();
    fib
}

pub fn udp(sport: u16, dport: u16) -> [u8; 26] {
    let mut u = [0u8; 26];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&26u16.to_be_bytes());
    u
}

pub fn eth(ether_type: u16, ip: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; ethernet::HEADER_LEN + ip.len()];
    let mut e = ethernet::Frame::new_unchecked(&mut f[..]);
    e.set_dst_addr(MAC_IN);
    e.set_src_addr(PEER);
    e.set_ethertype(ether_type);
    e.payload_mut().copy_from_slice(ip);
    f
}

/// Frame `i` of the batch: even ones IPv4, odd ones IPv6, each its own flow.
pub fn frame(i: usize) -> Vec<u8> {
    let dst = if i.is_multiple_of(2) {
        Dst::V4(Ipv4Addr::new(198, 19, (i % 8) as u8, i as u8))
    } else {
        Dst::V6(Ipv6Addr::new(0x2001, 0xdb8, (i % 8) as u16, 0, 0, 0, 0, i as u16))
    };
    frame_to(i, dst)
}

#[derive(Clone, Copy)]
pub enum Dst {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

/// A UDP frame of flow `i` to `dst` (64 bytes for IPv4, 84 for IPv6 before the FCS).
pub fn frame_to(i: usize, dst: Dst) -> Vec<u8> {
    let payload = udp(1024 + i as u16, 443);
    if let Dst::V4(dst) = dst {
        let mut b = vec![0u8; ipv4::HEADER_LEN + payload.len()];
        let total = b.len() as u16;
        let mut p = ipv4::Packet::new_unchecked(&mut b[..]);
        p.set_version(4);
        p.set_header_len(ipv4::HEADER_LEN as u8);
        p.set_total_len(total);
        p.set_flags_and_offset(true, false, 0);
        p.set_ttl(64);
        p.set_protocol(ip_protocol::UDP);
        p.set_src_addr(Ipv4Addr::new(198, 18, 0, i as u8));
        p.set_dst_addr(dst);
        p.payload_mut().copy_from_slice(&payload);
        p.fill_checksum();
        eth(ethertype::IPV4, &b)
    } else {
        let Dst::V6(dst) = dst else { unreachable!("IPv4 handled above") };
        let mut b = vec![0u8; ipv6::HEADER_LEN + payload.len()];
        let mut p = ipv6::Packet::new_unchecked(&mut b[..]);
        p.set_version_class_flow(6, 0, i as u32);
        p.set_payload_len(payload.len() as u16);
        p.set_next_header(ip_protocol::UDP);
        p.set_hop_limit(64);
        p.set_src_addr(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, i as u16));
        p.set_dst_addr(dst);
        p.payload_mut().copy_from_slice(&payload);
        eth(ethertype::IPV6, &b)
    }
}

/// The pipeline configuration of `variant`: two ports, strict uRPF on port 0 where asked.
pub fn config(variant: Variant) -> PipelineConfig {
    let mut ingress = port(MAC_IN);
    if matches!(variant, Variant::Urpf | Variant::Edge) {
        ingress.sub_interfaces[0].urpf = UrpfPolicy { mode: UrpfMode::Strict, allow_default: false };
    }
    PipelineConfig { ports: vec![ingress, port(MAC_OUT)], hash_seed: 0x5eed, ..PipelineConfig::default() }
}

/// The batch's frames laid out in chunks of `CHUNK` octets at `HEADROOM`, as a UMEM holds
/// them; restore a copy of it before each run.
pub fn pristine(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut pristine = vec![0u8; frames.len() * CHUNK];
    for (chunk, f) in pristine.chunks_mut(CHUNK).zip(frames) {
        chunk[HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
    }
    pristine
}
