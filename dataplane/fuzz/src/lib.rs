//! The properties the fuzz targets check, one function per target: each takes the fuzzer's
//! bytes and panics when a property fails. The targets in `fuzz_targets/` only call them,
//! and `tests/corpus.rs` runs every committed corpus and regression input through them as a
//! plain `cargo test`, so that what a fuzzer once found stays fixed without libFuzzer.
//!
//! Written by hand, not derived: the inputs are shaped (a frame list, a FIB batch) so that
//! libFuzzer's byte mutations reach the interesting paths, and the checks are the engine's
//! contracts (frame accounting, all-or-nothing batches, no accessor panics once checked).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use arbitrary::{Result, Unstructured};
use corridor_engine::counters::CounterSnapshot;
use corridor_engine::drop::{DropReason, IcmpOutcome};
use corridor_engine::fib::{Adjacency, Family, Fib, FibConfig, FibOp, FibReader, NextHop, Prefix, RouteTarget};
use corridor_engine::pipeline::{IcmpLimits, IcmpRateLimit, PacketBuf, Pipeline, PipelineConfig, PortConfig, SubInterfaceConfig, Verdict};
use corridor_engine::wire::ethernet::{self, ethertype};
use corridor_engine::wire::{checksum, icmpv4, icmpv6, ipv4, ipv6, ports};

// --- wire views -----------------------------------------------------------------------------

/// Every view over the same bytes: `new_checked` refuses or every accessor works; setters
/// and checksum helpers keep what they promise.
pub fn wire(data: &[u8]) {
    if let Ok(frame) = ethernet::Frame::new_checked(data) {
        let _ = (frame.dst_addr(), frame.src_addr(), frame.ethertype());
        assert_eq!(frame.payload().len() + 14, data.len());
        if let Ok(tag) = ethernet::VlanTag::new_checked(frame.payload()) {
            let _ = (tag.tci(), tag.priority(), tag.ethertype(), tag.payload());
            assert!(tag.vlan_id() < 4096);
        }
    }
    if let Ok(p) = ipv4::Packet::new_checked(data) {
        let _ = (p.version(), p.dscp_ecn(), p.ident(), p.dont_frag(), p.more_frags(), p.frag_offset());
        let _ = (p.ttl(), p.protocol(), p.checksum(), p.src_addr(), p.dst_addr(), p.verify_checksum());
        let header = usize::from(p.header_len());
        assert!(header >= 20 && header <= data.len());
        assert_eq!(p.options().len(), header - 20);
        assert!(p.payload().len() <= data.len() - header);
        // RFC 1624: decrementing the TTL with the incremental update keeps a good checksum good.
        let mut owned = data.to_vec();
        let mut q = ipv4::Packet::new_checked(&mut owned[..]).expect("the same bytes");
        q.fill_checksum();
        assert!(q.verify_checksum(), "fill_checksum then verify");
        if q.ttl() > 0 {
            let ttl = q.ttl();
            q.decrement_ttl();
            assert_eq!(q.ttl(), ttl - 1);
            assert!(q.verify_checksum(), "decrement_ttl keeps the checksum right");
        }
    }
    if let Ok(p) = ipv6::Packet::new_checked(data) {
        let _ = (p.version(), p.traffic_class(), p.flow_label(), p.payload_len(), p.hop_limit());
        let _ = (p.src_addr(), p.dst_addr(), p.total_len());
        let payload = p.payload();
        assert!(payload.len() + 40 <= data.len());
        if let Some(upper) = ipv6::upper_layer(p.next_header(), payload) {
            assert!(upper.offset <= payload.len(), "the upper layer starts inside the payload");
        }
    }
    if let Ok(p) = icmpv4::Packet::new_checked(data) {
        let _ = (p.msg_type(), p.msg_code(), p.checksum(), p.rest_of_header(), p.next_hop_mtu(), p.data());
        let mut owned = data.to_vec();
        let mut q = icmpv4::Packet::new_checked(&mut owned[..]).expect("the same bytes");
        q.fill_checksum();
        assert!(q.verify_checksum());
    }
    if let Ok(p) = icmpv6::Packet::new_checked(data) {
        let _ = (p.msg_type(), p.msg_code(), p.checksum(), p.mtu(), p.pointer(), p.data());
        let (src, dst) = (Ipv6Addr::from(0x2001_0db8_u128 << 96 | 1), Ipv6Addr::from(0x2001_0db8_u128 << 96 | 2));
        let mut owned = data.to_vec();
        let mut q = icmpv6::Packet::new_checked(&mut owned[..]).expect("the same bytes");
        q.fill_checksum(src, dst);
        assert!(q.verify_checksum(src, dst));
    }
    if let Ok(p) = ports::Ports::new_checked(data) {
        let _ = (p.src_port(), p.dst_port());
    }
    // RFC 1624 eqn. 3 against a full recomputation, for one 16-bit word changed.
    if data.len() >= 4 && data.len().is_multiple_of(2) {
        let (new, at) = (u16::from_be_bytes([data[0], data[1]]), 2 * (usize::from(data[2]) % (data.len() / 2)));
        let mut changed = data.to_vec();
        let old = u16::from_be_bytes([changed[at], changed[at + 1]]);
        changed[at..at + 2].copy_from_slice(&new.to_be_bytes());
        // A checksum field holds the complement of the sum (see wire::checksum).
        let incremental = checksum::update(!checksum::data(data), old, new);
        assert!(same_checksum(incremental, !checksum::data(&changed)), "{incremental:#x}");
    }
}

/// One's complement has two zeros: 0x0000 and 0xffff are the same sum.
fn same_checksum(a: u16, b: u16) -> bool {
    a == b || (a == 0 || a == 0xffff) && (b == 0 || b == 0xffff)
}

// --- the pipeline -----------------------------------------------------------------------------

pub const MAC: [[u8; 6]; 3] = [[2, 0, 0, 0, 0, 0x10], [2, 0, 0, 0, 0, 0x11], [2, 0, 0, 0, 0, 0x12]];
const PORTS: usize = 3;

fn v6(net: u16, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, net, 0, 0, 0, 0, host)
}

/// Three ports as the engine's own tests have them: VLANs, addresses of both families, one
/// port without addresses, one that forwards directed broadcasts; ICMP buckets that run dry.
pub fn pipeline_config(icmp_per_second: u32) -> PipelineConfig {
    let sub = |vlan, a4: Option<[u8; 4]>, a6: Option<Ipv6Addr>| {
        let mut s = SubInterfaceConfig::new(vlan, a4.map(Ipv4Addr::from), a6);
        s.ipv4_prefix_len = 24;
        s
    };
    let limit = IcmpRateLimit { per_second: icmp_per_second, burst: 4 };
    PipelineConfig {
        ports: vec![
            PortConfig {
                mac: MAC[0],
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
                mac: MAC[1],
                mtu: 1500,
                sub_interfaces: vec![sub(0, Some([198, 18, 1, 1]), Some(v6(0xf001, 1))), sub(300, None, None)],
                icmp_rate_limit: limit,
                directed_broadcast: true,
            },
            PortConfig {
                mac: MAC[2],
                mtu: 1280,
                sub_interfaces: vec![sub(0, None, None)],
                icmp_rate_limit: limit,
                directed_broadcast: false,
            },
        ],
        hash_seed: 0x5eed,
        icmp_limits: IcmpLimits { per_source: limit, sources: 8, per_worker: limit },
    }
}

/// Routes to 198.19.g.0/24 and 2001:db8:g::/48 through groups of one to three adjacencies
/// (untagged, tagged, on a port or VLAN the pipeline lacks), and the special targets.
pub fn pipeline_fib() -> Fib {
    let mut fib =
        Fib::new(FibConfig { v4_routes: 64, v6_routes: 64, v4_nodes: 8, v6_nodes: 64, groups: 64, adjacencies: 64 }).expect("a small FIB");
    let adj = |id: u32, port: u16, vlan: u16| FibOp::SetAdjacency {
        id,
        adjacency: Adjacency { port, vlan, src_mac: MAC[usize::from(port) % PORTS], dst_mac: [2, 0, 0, 0, 1, id as u8] },
    };
    let group =
        |id: u32, members: &[u32]| FibOp::SetGroup { id, members: members.iter().map(|&a| NextHop { adjacency: a, weight: a }).collect() };
    let mut ops = vec![
        adj(1, 1, 0),
        adj(2, 1, 300),
        adj(3, 0, 100),
        adj(4, 2, 0),
        adj(5, 1, 0),
        adj(6, 0, 0),
        adj(8, 9, 0),
        adj(9, 1, 999),
        group(1, &[1]),
        group(2, &[2]),
        group(3, &[3]),
        group(4, &[4]),
        group(8, &[8]),
        group(9, &[9]),
        group(10, &[5, 6, 1]),
    ];
    for g in [1u8, 2, 3, 4, 8, 9, 10] {
        let target = RouteTarget::Group(u32::from(g));
        ops.push(FibOp::AddRoute { prefix: Prefix::v4(u32::from_be_bytes([198, 19, g, 0]), 24), target });
        ops.push(FibOp::AddRoute { prefix: Prefix::v6(u128::from(v6(u16::from(g), 0)), 48), target });
    }
    for (n, target) in [(66u8, RouteTarget::Blackhole), (77, RouteTarget::Unreachable), (88, RouteTarget::Local)] {
        ops.push(FibOp::AddRoute { prefix: Prefix::v4(u32::from_be_bytes([198, 19, n, 0]), 24), target });
        ops.push(FibOp::AddRoute { prefix: Prefix::v6(u128::from(v6(u16::from(n), 0)), 48), target });
    }
    // The attached subnets, so that their broadcast addresses are routed.
    ops.push(FibOp::AddRoute { prefix: Prefix::v4(u32::from_be_bytes([198, 18, 1, 0]), 24), target: RouteTarget::Group(1) });
    fib.apply(&ops).expect("the FIB of the pipeline target");
    fib
}

/// One frame of the pipeline target's input.
#[derive(Debug)]
pub struct FrameIn {
    pub port: u16,
    pub headroom: usize,
    pub tailroom: usize,
    pub bytes: Vec<u8>,
}

/// The pipeline target's input: a clock, an ICMP rate, then frames, each as port (1 byte),
/// headroom and tailroom (1 byte each), length (2 bytes, little-endian) and the bytes.
pub fn frames_from(data: &[u8]) -> Result<(u64, u32, Vec<FrameIn>)> {
    let mut u = Unstructured::new(data);
    let now = u64::from(u.arbitrary::<u32>()?) * 1_000;
    let rate = u32::from(u.arbitrary::<u8>()?);
    let mut frames = Vec::new();
    while !u.is_empty() && frames.len() < 160 {
        let port = u16::from(u.arbitrary::<u8>()? % 4);
        let headroom = usize::from(u.arbitrary::<u8>()?);
        let tailroom = usize::from(u.arbitrary::<u8>()?);
        let len = usize::from(u.arbitrary::<u16>()? % 2048);
        let bytes = u.bytes(len.min(u.len()))?.to_vec();
        frames.push(FrameIn { port, headroom, tailroom, bytes });
    }
    Ok((now, rate, frames))
}

/// The inverse of `frames_from`, for seeds and regression inputs.
pub fn frames_to(now_us: u32, rate: u8, frames: &[FrameIn]) -> Vec<u8> {
    let mut out = now_us.to_le_bytes().to_vec();
    out.push(rate);
    for f in frames {
        out.extend([f.port as u8, f.headroom as u8, f.tailroom as u8]);
        out.extend((f.bytes.len() as u16).to_le_bytes());
        out.extend(&f.bytes);
    }
    out
}

/// Frames of any bytes through a pipeline with a real FIB: every frame gets exactly one
/// verdict and is counted exactly once; what is forwarded lies in its chunk, leaves by a
/// configured port with that port's MAC, and is IP with a good header (checksum, TTL).
pub fn pipeline(data: &[u8]) {
    let Ok((now, rate, frames)) = frames_from(data) else { return };
    if frames.is_empty() {
        return;
    }
    // One FIB per thread: the target never writes it, and building it is most of the time.
    thread_local! {
        static FIB: (Fib, std::cell::RefCell<FibReader>) = {
            let fib = pipeline_fib();
            let reader = std::cell::RefCell::new(fib.reader());
            (fib, reader)
        };
    }
    FIB.with(|(_, reader)| pipeline_with(&mut reader.borrow_mut(), now, rate, &frames));
}

fn pipeline_with(reader: &mut FibReader, now: u64, rate: u32, frames: &[FrameIn]) {
    let mut pipeline = Pipeline::new(&pipeline_config(rate)).expect("the target's configuration");
    let mut chunks: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| {
            let mut c = vec![0xee; f.headroom + f.bytes.len() + f.tailroom];
            c[f.headroom..f.headroom + f.bytes.len()].copy_from_slice(&f.bytes);
            c
        })
        .collect();
    let before = pipeline.counters().snapshot();
    let mut bufs: Vec<PacketBuf> =
        chunks.iter_mut().zip(frames).map(|(c, f)| PacketBuf { chunk: c, start: f.headroom, len: f.bytes.len(), port: f.port }).collect();
    let mut verdicts = vec![Verdict::Drop(DropReason::Local); bufs.len()];
    pipeline.process(reader, &mut bufs, &mut verdicts, now);
    reader.quiescent();
    drop(bufs);
    let after = pipeline.counters().snapshot();

    let mut dropped = [0u64; DropReason::COUNT];
    let mut forwarded = 0u64;
    for (verdict, chunk) in verdicts.iter().zip(&chunks) {
        match *verdict {
            Verdict::Drop(reason) => dropped[reason as usize] += 1,
            Verdict::Forward { port, start, len } => {
                forwarded += 1;
                assert!(usize::from(port) < PORTS, "forwarded to port {port}");
                assert!(start.checked_add(len).is_some_and(|end| end <= chunk.len()), "outside its chunk");
                check_forwarded(&chunk[start..start + len], port);
            }
        }
    }
    let sent = delta_icmp(&after, &before, IcmpOutcome::Sent);
    for reason in DropReason::ALL {
        let counted = after.drop_count(*reason) - before.drop_count(*reason);
        assert!(dropped[*reason as usize] <= counted, "{reason}: {} dropped, {counted} counted", dropped[*reason as usize]);
    }
    assert!(sent <= forwarded, "{sent} ICMP errors sent, {forwarded} frames forwarded");
    assert_eq!(after.total_drops() - before.total_drops() + forwarded - sent, frames.len() as u64, "every frame counted once");
}

fn delta_icmp(after: &CounterSnapshot, before: &CounterSnapshot, outcome: IcmpOutcome) -> u64 {
    after.icmp_count(outcome) - before.icmp_count(outcome)
}

/// A forwarded frame (or an ICMP error built in its chunk) as it leaves.
fn check_forwarded(frame: &[u8], port: u16) {
    let eth = ethernet::Frame::new_checked(frame).expect("a forwarded frame has an Ethernet header");
    assert_eq!(eth.src_addr(), MAC[usize::from(port)], "leaves with its port's MAC");
    let (kind, payload) = match eth.ethertype() {
        ethertype::VLAN => {
            let tag = ethernet::VlanTag::new_checked(eth.payload()).expect("a whole tag");
            (tag.ethertype(), &eth.payload()[4..]) // the tag's payload, from the frame's bytes
        }
        other => (other, eth.payload()),
    };
    match kind {
        ethertype::IPV4 => {
            let ip = ipv4::Packet::new_checked(payload).expect("forwarded IPv4 is whole");
            assert!(ip.verify_checksum(), "forwarded IPv4 has a good header checksum");
            assert!(ip.ttl() > 0, "forwarded IPv4 has TTL left");
            let datagram = usize::from(ip.total_len());
            assert!(
                datagram == payload.len() || datagram < payload.len() && frame.len() <= 64,
                "trimmed to its datagram, or padded to 60 bytes"
            );
        }
        ethertype::IPV6 => {
            let ip = ipv6::Packet::new_checked(payload).expect("forwarded IPv6 is whole");
            assert!(ip.hop_limit() > 0, "forwarded IPv6 has hops left");
            let datagram = ip.total_len();
            assert!(
                datagram == payload.len() || datagram < payload.len() && frame.len() <= 64,
                "trimmed to its datagram, or padded to 60 bytes"
            );
        }
        other => panic!("forwarded ethertype {other:#06x}"),
    }
}

// --- FIB batches ----------------------------------------------------------------------------

const ADJACENCIES: u32 = 8;
const GROUPS: u32 = 6;

fn fib_config() -> FibConfig {
    FibConfig { v4_routes: 12, v6_routes: 12, v4_nodes: 64, v6_nodes: 256, groups: GROUPS, adjacencies: ADJACENCIES }
}

fn prefix(u: &mut Unstructured) -> Result<Prefix> {
    // Mostly a handful of nested prefixes, so that batches meet; sometimes anything.
    const NETS: [(u32, u8); 5] = [(0xc612_0000, 16), (0xc612_0000, 24), (0xc612_0100, 24), (0, 0), (0xc612_0080, 25)];
    Ok(match u.int_in_range(0..=7)? {
        0..=3 => {
            let (a, l) = NETS[usize::from(u.arbitrary::<u8>()?) % NETS.len()];
            Prefix::v4(a, l)
        }
        4 => Prefix::v6(0x2001_0db8_u128 << 96 | u128::from(u.arbitrary::<u8>()? & 1) << 80, 48),
        5 => Prefix::v4(u.arbitrary()?, u.arbitrary::<u8>()? % 40),
        6 => Prefix::v6(u.arbitrary()?, u.arbitrary::<u8>()?),
        _ => Prefix::v6(0, 0),
    })
}

fn fib_op(u: &mut Unstructured) -> Result<FibOp> {
    let adjacency_id = |u: &mut Unstructured| -> Result<u32> { Ok(u32::from(u.arbitrary::<u8>()?) % (ADJACENCIES + 2)) };
    let group_id = |u: &mut Unstructured| -> Result<u32> { Ok(u32::from(u.arbitrary::<u8>()?) % (GROUPS + 2)) };
    Ok(match u.int_in_range(0..=5)? {
        0 => FibOp::SetAdjacency {
            id: adjacency_id(u)?,
            adjacency: Adjacency {
                port: u16::from(u.arbitrary::<u8>()? % 4),
                vlan: u.arbitrary()?,
                src_mac: [2; 6],
                dst_mac: u.arbitrary()?,
            },
        },
        1 => FibOp::DeleteAdjacency { id: adjacency_id(u)? },
        2 => {
            let n = u.int_in_range(0..=4)?;
            let mut members = Vec::with_capacity(n);
            for _ in 0..n {
                let weight = match u.int_in_range(0..=5)? {
                    0 => 0,
                    1 => 65_535,
                    2 => 65_536,
                    _ => u32::from(u.arbitrary::<u8>()?),
                };
                members.push(NextHop { adjacency: adjacency_id(u)?, weight });
            }
            FibOp::SetGroup { id: group_id(u)?, members }
        }
        3 => FibOp::DeleteGroup { id: group_id(u)? },
        4 => {
            let target = match u.int_in_range(0..=6)? {
                0 => RouteTarget::Blackhole,
                1 => RouteTarget::Unreachable,
                2 => RouteTarget::Local,
                3 => RouteTarget::Glean,
                _ => RouteTarget::Group(group_id(u)?),
            };
            FibOp::AddRoute { prefix: prefix(u)?, target }
        }
        _ => FibOp::DeleteRoute { prefix: prefix(u)? },
    })
}

/// What a FIB holds, comparable: adjacencies, groups, and both route tables.
#[derive(Debug, Default, PartialEq, Eq, Clone)]
pub struct Tables {
    pub adjacencies: BTreeMap<u32, Adjacency>,
    pub groups: BTreeMap<u32, Vec<NextHop>>,
    pub routes: BTreeMap<(bool, u128, u8), RouteTarget>,
}

fn route_key(p: &Prefix) -> (bool, u128, u8) {
    match p.family() {
        Family::V4 => (false, u128::from(p.addr_v4()), p.len()),
        Family::V6 => (true, p.addr_v6(), p.len()),
    }
}

fn tables(fib: &Fib) -> Tables {
    let mut t = Tables {
        adjacencies: fib.adjacencies().collect(),
        groups: fib.groups().map(|(id, members)| (id, members.to_vec())).collect(),
        ..Tables::default()
    };
    for family in [Family::V4, Family::V6] {
        for (prefix, target) in fib.routes(family) {
            t.routes.insert(route_key(&prefix), target);
        }
    }
    t
}

fn applied(before: &Tables, ops: &[FibOp]) -> Tables {
    let mut t = before.clone();
    for op in ops {
        match op {
            FibOp::SetAdjacency { id, adjacency } => {
                t.adjacencies.insert(*id, *adjacency);
            }
            FibOp::DeleteAdjacency { id } => {
                t.adjacencies.remove(id);
            }
            FibOp::SetGroup { id, members } => {
                t.groups.insert(*id, members.clone());
            }
            FibOp::DeleteGroup { id } => {
                t.groups.remove(id);
            }
            FibOp::AddRoute { prefix, target } => {
                t.routes.insert(route_key(prefix), *target);
            }
            FibOp::DeleteRoute { prefix } => {
                t.routes.remove(&route_key(prefix));
            }
            // The targets generate no member operations.
            FibOp::SetMember { .. } | FibOp::DeleteMember { .. } => {}
        }
    }
    t
}

/// The longest match among `routes` of the family, by a scan.
fn reference_lookup(t: &Tables, v6: bool, addr: u128) -> Option<RouteTarget> {
    let bits = if v6 { 128 } else { 32 };
    t.routes
        .iter()
        .filter(|((family, net, len), _)| *family == v6 && (*len == 0 || (addr ^ net) >> (bits - u32::from(*len)) == 0))
        .max_by_key(|((_, _, len), _)| *len)
        .map(|(_, target)| *target)
}

/// Batches of any operations on small tables: `validate` and `apply` agree; a refused batch
/// changes nothing; an applied one leaves exactly its ops applied in order, every reference
/// whole, and lookups equal to a linear scan.
pub fn fib_batch(data: &[u8]) {
    let mut u = Unstructured::new(data);
    // Small roots: a /0 writes 64 K root entries, not 16 M, and paths have more levels.
    let Ok(mut fib) = Fib::with_root_bits(fib_config(), 16, 8) else { panic!("the target's FIB") };
    let mut batches = 0;
    while !u.is_empty() && batches < 8 {
        batches += 1;
        let Ok(n) = u.int_in_range(0..=12) else { return };
        let mut ops = Vec::with_capacity(n);
        for _ in 0..n {
            let Ok(op) = fib_op(&mut u) else { return };
            ops.push(op);
        }
        let before = tables(&fib);
        let valid = fib.validate(&ops);
        assert_eq!(tables(&fib), before, "validate changed the tables");
        let result = fib.apply(&ops);
        assert_eq!(valid.is_ok(), result.is_ok(), "validate and apply disagree: {valid:?} / {result:?}");
        let after = tables(&fib);
        match result {
            Err(e) => {
                assert_eq!(after, before, "a refused batch changed the tables: {e:?}");
                assert!(!e.to_string().is_empty());
            }
            Ok(()) => {
                assert_eq!(after, applied(&before, &ops), "an applied batch is its ops in order");
                for (id, members) in &after.groups {
                    assert!(!members.is_empty() && members.len() <= 256, "group {id}");
                    for m in members {
                        assert!(after.adjacencies.contains_key(&m.adjacency), "group {id} names a missing adjacency");
                        assert!((1..=65_535).contains(&m.weight), "group {id} has weight {}", m.weight);
                    }
                }
                for target in after.routes.values() {
                    if let RouteTarget::Group(g) = target {
                        assert!(after.groups.contains_key(g), "a route names missing group {g}");
                    }
                }
            }
        }
        let reader = fib.reader();
        for probe in 0..8u32 {
            let Ok(a) = u.arbitrary::<u32>() else { break };
            let a = if probe % 2 == 0 { 0xc612_0000 | (a & 0x1ff) } else { a };
            assert_eq!(reader.lookup_v4(a), reference_lookup(&after, false, u128::from(a)), "lookup of {}", Ipv4Addr::from(a));
            let a6 = 0x2001_0db8_u128 << 96 | u128::from(a & 0x1_0000) << 64;
            assert_eq!(reader.lookup_v6(a6), reference_lookup(&after, true, a6), "lookup of {}", Ipv6Addr::from(a6));
        }
    }
}

// --- the controller's ApplyRequest reader --------------------------------------------------------

/// Any bytes as an ApplyRequest: malformed, invalid, or a batch whose every route has a
/// canonical prefix, a sort key that says the same, indexes in bounds and a key of its own.
pub fn apply_request(data: &[u8]) {
    use corridor_intent::apply::{is_prefix, read_apply, MAX_NEXT_HOPS, MAX_ROUTES};
    use corridor_intent::text::{parse_address, parse_prefix, prefix_text, push_address};

    for size in [4usize, 16] {
        if let Some(address) = data.get(..size) {
            let mut text = String::new();
            push_address(&mut text, address);
            assert_eq!(parse_address(&text).as_deref(), Some(address), "{text}");
        }
    }
    let Ok(batch) = read_apply(data) else { return };
    assert!(batch.routes.len() <= MAX_ROUTES);
    let mut keys = std::collections::HashSet::new();
    for route in &batch.routes {
        assert!(route.node < batch.nodes.len() && route.intent < batch.intents.len());
        let prefix = batch.prefix(route);
        let (address, length) = parse_prefix(&prefix).expect("canonical prefix text");
        assert!(is_prefix(&address, length), "{prefix}");
        assert_eq!(prefix_text(&address, length), prefix);
        let mut key = vec![address.len() as u8];
        key.extend(&address);
        key.push(length as u8);
        assert_eq!(route.sort_key(), key);
        assert_eq!(Some(route.prefix_key()), corridor_intent::table::key_of(&address, length), "{prefix}");
        assert!(keys.insert((route.node, prefix.to_owned())), "{prefix} twice");
    }
    for intent in &batch.intents {
        assert!((1..=4).contains(&intent.kind));
        assert_eq!(intent.kind == 1, !intent.next_hops.is_empty());
        assert!(intent.next_hops.len() <= MAX_NEXT_HOPS);
    }
}

// --- the agent's route-write intake -------------------------------------------------------------

/// Any bytes as a WriteRequest through the agent's Rust intake: what it takes is only plain
/// route operations under an election above 0, 1 to `MAX_OPERATIONS` of them, each a prefix
/// without host bits (4 or 16 bytes, the rest of the address zero) and a known kind with a
/// group exactly when FORWARD; and the controller's encoder writing it back reads the same.
/// Operations read as laid out answer as read field by field, whatever the bytes.
/// (That it accepts only what the generated-code path accepts is tests/test_agent_intake.py's.)
pub fn write_request(data: &[u8]) {
    use corridor_intent::apply::is_prefix;
    use corridor_intent::intake::{read_route_write, read_route_write_field_by_field, Change, MAX_OPERATIONS};
    use corridor_intent::write::{write_request, Op};

    let read = read_route_write(data);
    assert_eq!(read, read_route_write_field_by_field(data), "laid out and field by field disagree");
    let Some(w) = read else { return };
    assert_ne!(w.election, (0, 0));
    assert!(!w.routes.is_empty() && w.routes.len() <= MAX_OPERATIONS);
    let ops: Vec<Op> = w
        .routes
        .iter()
        .map(|r| {
            let (address, length) = (r.address().to_vec(), u32::from(r.length));
            assert!(is_prefix(&address, length), "{address:?}/{length}");
            assert!(r.address[address.len()..].iter().all(|&b| b == 0));
            match r.change {
                Change::Set { kind, group } => {
                    assert!((1..=4).contains(&kind) && (kind == 1) == (group != 0), "kind {kind}, group {group}");
                    Op::SetRoute { address, length, kind, group }
                }
                Change::Delete => Op::DeleteRoute { address, length },
            }
        })
        .collect();
    let again = read_route_write(&write_request(w.election, w.batch_id, &ops)).expect("its own encoding reads");
    assert_eq!((again.election, again.batch_id), (w.election, w.batch_id));
    assert_eq!(again.routes, w.routes);
}

// --- the controller's FPM scan -------------------------------------------------------------------

/// Any bytes as zebra's FPM stream through the Rust scan: it stops on a frame boundary
/// after exactly one frame per route, stops again at once where it stopped (that frame is
/// the Python decoder's), and every route it gives is whole: a canonical prefix without
/// host bits, a known type, next hops only for unicast, and a unicast add with next hops
/// or an object id.
pub fn fpm_scan(data: &[u8]) {
    use corridor_intent::apply::is_prefix;
    use corridor_intent::fpm::{scan, MAX_NEXT_HOPS};
    use corridor_intent::text::{parse_prefix, prefix_text};

    let found = scan(data);
    assert!(found.consumed <= data.len());
    let mut offset = 0;
    for _ in &found.routes {
        let length = usize::from(u16::from_be_bytes([data[offset + 2], data[offset + 3]]));
        assert!(length >= 4 + 28, "a route frame holds a netlink header and an rtmsg");
        offset += length;
    }
    assert_eq!(offset, found.consumed, "one frame per route");
    assert!(scan(&data[found.consumed..]).routes.is_empty(), "stops where it stopped");
    for route in &found.routes {
        let (address, length) = parse_prefix(&route.prefix).expect("canonical prefix text");
        assert!(is_prefix(&address, length), "{}", route.prefix);
        assert_eq!(prefix_text(&address, length), route.prefix);
        assert!(matches!(route.rtype, 1 | 6..=8), "type {}", route.rtype);
        match route.hops {
            Some(set) => {
                assert_eq!(route.rtype, 1, "next hops on a {} route", route.rtype);
                let blob = &found.hop_sets[set];
                let (mut at, mut count) = (0, 0);
                while at < blob.len() {
                    assert!(matches!(blob[at], 0 | 4 | 16));
                    at += 1 + usize::from(blob[at]) + 4;
                    let weight = u16::from_le_bytes([blob[at], blob[at + 1]]);
                    assert!((1..=256).contains(&weight));
                    at += 2;
                    count += 1;
                }
                assert!((1..=MAX_NEXT_HOPS).contains(&count));
            }
            None => assert!(!(route.add && route.rtype == 1 && route.nexthop_id.is_none()), "{} has no next hop", route.prefix),
        }
    }
    assert!(found.hop_sets.iter().enumerate().all(|(i, s)| found.hop_sets[..i].iter().all(|o| o != s)), "sets deduplicated");
}
