//! FIB tests: edge cases, property tests against a linear-scan reference, concurrent
//! readers under churn, and the real Internet tables from ../shared/data.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}

fn v4(s: &str) -> u32 {
    s.parse::<std::net::Ipv4Addr>().unwrap().into()
}

fn v6(s: &str) -> u128 {
    s.parse::<std::net::Ipv6Addr>().unwrap().into()
}

fn small() -> FibConfig {
    FibConfig { v4_routes: 10_000, v6_routes: 10_000, v4_nodes: 4096, v6_nodes: 8192, groups: 1024, adjacencies: 1024 }
}

/// A FIB with adjacencies 0..n and single-member groups 0..n (group g → adjacency g).
fn fib_with_groups(n: u32) -> Fib {
    fib_with_groups_rooted(n, 24, 16)
}

fn fib_with_groups_rooted(n: u32, v4_root: u32, v6_root: u32) -> Fib {
    let mut fib = Fib::with_root_bits(small(), v4_root, v6_root).unwrap();
    let mut ops = vec![];
    for i in 0..n {
        ops.push(FibOp::SetAdjacency { id: i, adjacency: Adjacency { port: i as u16, ..Default::default() } });
        ops.push(FibOp::SetGroup { id: i, members: vec![NextHop { adjacency: i, weight: 1 }] });
    }
    fib.apply(&ops).unwrap();
    fib
}

fn add(prefix: &str, g: u32) -> FibOp {
    FibOp::AddRoute { prefix: p(prefix), target: RouteTarget::Group(g) }
}

fn del(prefix: &str) -> FibOp {
    FibOp::DeleteRoute { prefix: p(prefix) }
}

#[test]
fn empty_table_has_no_route() {
    let fib = Fib::new(small()).unwrap();
    let r = fib.reader();
    assert_eq!(r.lookup_v4(0), None);
    assert_eq!(r.lookup_v4(u32::MAX), None);
    assert_eq!(r.lookup_v6(0), None);
    assert_eq!(r.lookup_v6(u128::MAX), None);
    assert_eq!(fib.stats().v4.routes, 0);
}

#[test]
fn default_route_host_routes_and_nesting() {
    let mut fib = fib_with_groups(8);
    fib.apply(&[
        add("0.0.0.0/0", 0),
        add("198.18.0.0/15", 1),
        add("198.18.4.0/24", 2),
        add("198.18.4.128/25", 3),
        add("198.18.4.200/32", 4),
        add("255.255.255.255/32", 5),
        add("::/0", 0),
        add("2001:db8::/32", 1),
        add("2001:db8:1::/48", 2),
        add("2001:db8:1::1/128", 3),
        add("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", 4),
    ])
    .unwrap();
    let r = fib.reader();
    let g = |s: &str| r.lookup_v4(v4(s));
    assert_eq!(g("1.2.3.4"), Some(RouteTarget::Group(0)));
    assert_eq!(g("198.19.255.255"), Some(RouteTarget::Group(1)));
    assert_eq!(g("198.18.4.0"), Some(RouteTarget::Group(2)));
    assert_eq!(g("198.18.4.127"), Some(RouteTarget::Group(2)));
    assert_eq!(g("198.18.4.128"), Some(RouteTarget::Group(3)));
    assert_eq!(g("198.18.4.200"), Some(RouteTarget::Group(4)));
    assert_eq!(g("198.18.4.201"), Some(RouteTarget::Group(3)));
    assert_eq!(g("255.255.255.255"), Some(RouteTarget::Group(5)));
    assert_eq!(g("255.255.255.254"), Some(RouteTarget::Group(0)));
    let g6 = |s: &str| r.lookup_v6(v6(s));
    assert_eq!(g6("2001:db8::1"), Some(RouteTarget::Group(1)));
    assert_eq!(g6("2001:db8:1::1"), Some(RouteTarget::Group(3)));
    assert_eq!(g6("2001:db8:1::2"), Some(RouteTarget::Group(2)));
    assert_eq!(g6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), Some(RouteTarget::Group(4)));
    assert_eq!(g6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"), Some(RouteTarget::Group(0)));
    drop(r);

    // Deleting the middle of the nest restores the covering route, inside and out.
    fib.apply(&[del("198.18.4.128/25"), del("2001:db8:1::/48")]).unwrap();
    let r = fib.reader();
    assert_eq!(r.lookup_v4(v4("198.18.4.129")), Some(RouteTarget::Group(2)));
    assert_eq!(r.lookup_v4(v4("198.18.4.200")), Some(RouteTarget::Group(4)));
    assert_eq!(r.lookup_v6(v6("2001:db8:1::2")), Some(RouteTarget::Group(1)));
    assert_eq!(r.lookup_v6(v6("2001:db8:1::1")), Some(RouteTarget::Group(3)));
    drop(r);

    // Deleting the covering route leaves the more specifics and falls back to the default.
    fib.apply(&[del("198.18.0.0/15"), del("0.0.0.0/0")]).unwrap();
    let r = fib.reader();
    assert_eq!(r.lookup_v4(v4("198.18.5.1")), None);
    assert_eq!(r.lookup_v4(v4("198.18.4.1")), Some(RouteTarget::Group(2)));
    assert_eq!(r.lookup_v4(v4("198.18.4.200")), Some(RouteTarget::Group(4)));
}

#[test]
fn replace_and_idempotent_delete() {
    let mut fib = fib_with_groups(4);
    fib.apply(&[add("198.18.0.0/16", 1), add("198.18.1.0/24", 2)]).unwrap();
    fib.apply(&[add("198.18.0.0/16", 3)]).unwrap();
    let r = fib.reader();
    assert_eq!(r.lookup_v4(v4("198.18.0.1")), Some(RouteTarget::Group(3)));
    assert_eq!(r.lookup_v4(v4("198.18.1.1")), Some(RouteTarget::Group(2)), "more specific kept");
    drop(r);
    assert_eq!(fib.stats().v4.routes, 2);
    fib.apply(&[del("198.18.7.0/24")]).unwrap();
    fib.apply(&[del("198.18.7.0/24")]).unwrap();
    assert_eq!(fib.stats().v4.routes, 2);
    // Replaying the same batch gives the same state.
    let batch = [add("198.18.9.0/24", 1), FibOp::AddRoute { prefix: p("2001:db8::/48"), target: RouteTarget::Blackhole }];
    fib.apply(&batch).unwrap();
    let before = (fib.routes(Family::V4), fib.routes(Family::V6));
    fib.apply(&batch).unwrap();
    assert_eq!(before, (fib.routes(Family::V4), fib.routes(Family::V6)));
}

/// Blackhole routes beyond the counter slots count in UNCOUNTED_SLOT and take no entry in
/// the slot map or the published table; a frame is counted under the route its lookup
/// matched, even an uncounted one nested in a counted one.
#[test]
fn blackholes_beyond_the_slots_count_uncounted_without_entries() {
    let config = FibConfig { v4_routes: 100_000, v4_nodes: 1024, ..small() };
    let mut fib = Fib::new(config).unwrap();
    let bh = |prefix: Prefix| FibOp::AddRoute { prefix, target: RouteTarget::Blackhole };
    fib.apply(&[bh(p("198.19.0.0/16"))]).unwrap();
    let outer = fib.blackhole_slot(&p("198.19.0.0/16")).unwrap();
    // Every other slot taken by host routes in 198.18.0.0/16.
    let hosts: Vec<FibOp> = (0..UNCOUNTED_SLOT - 1).map(|i| bh(Prefix::v4(v4("198.18.0.0") + i, 32))).collect();
    fib.apply(&hosts).unwrap();
    fib.apply(&[bh(p("198.19.5.0/24")), bh(p("2001:db8::/32"))]).unwrap();
    assert_eq!(fib.blackhole_slots.len(), UNCOUNTED_SLOT as usize, "only the counted routes have entries");
    assert_eq!(fib.blackhole_slot(&p("198.19.5.0/24")), Some(UNCOUNTED_SLOT));
    assert_eq!(fib.blackhole_slot(&p("2001:db8::/32")), Some(UNCOUNTED_SLOT));
    let r = fib.reader();
    assert_eq!(r.blackhole_slot_v4(v4("198.19.5.7")), Some(UNCOUNTED_SLOT), "the /24 matched, not the /16");
    assert_eq!(r.blackhole_slot_v4(v4("198.19.6.1")), Some(outer));
    assert_eq!(r.blackhole_slot_v6(v6("2001:db8::1")), Some(UNCOUNTED_SLOT));
    let host = Prefix::v4(v4("198.18.0.0") + 77, 32);
    let slot = fib.blackhole_slot(&host).unwrap();
    assert_ne!(slot, UNCOUNTED_SLOT);
    assert_eq!(r.blackhole_slot_v4(v4("198.18.0.77")), Some(slot));
    // A freed slot goes to the next new blackhole; one already there stays uncounted.
    fib.apply(&[FibOp::DeleteRoute { prefix: host }]).unwrap();
    assert_eq!(fib.blackhole_slot(&host), None);
    assert_eq!(r.blackhole_slot_v4(v4("198.18.0.77")), None, "no route holds it now");
    fib.apply(&[bh(p("198.19.5.0/24"))]).unwrap();
    assert_eq!(fib.blackhole_slot(&p("198.19.5.0/24")), Some(UNCOUNTED_SLOT));
    fib.apply(&[bh(p("198.19.7.0/24"))]).unwrap();
    assert_eq!(fib.blackhole_slot(&p("198.19.7.0/24")), Some(slot));
    assert_eq!(r.blackhole_slot_v4(v4("198.19.7.1")), Some(slot));
    // Re-targeted, an uncounted route leaves nothing behind.
    fib.apply(&[FibOp::AddRoute { prefix: p("198.19.5.0/24"), target: RouteTarget::Unreachable }]).unwrap();
    assert_eq!(fib.blackhole_slot(&p("198.19.5.0/24")), None);
    assert_eq!(r.blackhole_slot_v4(v4("198.19.5.7")), None);
    assert_eq!(fib.blackhole_slots.len(), UNCOUNTED_SLOT as usize);
}

#[test]
fn special_targets() {
    let mut fib = fib_with_groups(1);
    fib.apply(&[
        FibOp::AddRoute { prefix: p("198.18.0.0/24"), target: RouteTarget::Blackhole },
        FibOp::AddRoute { prefix: p("198.18.1.0/24"), target: RouteTarget::Unreachable },
        FibOp::AddRoute { prefix: p("198.18.2.1/32"), target: RouteTarget::Local },
    ])
    .unwrap();
    let r = fib.reader();
    assert_eq!(r.lookup_v4(v4("198.18.0.9")), Some(RouteTarget::Blackhole));
    assert_eq!(r.lookup_v4(v4("198.18.1.9")), Some(RouteTarget::Unreachable));
    assert_eq!(r.lookup_v4(v4("198.18.2.1")), Some(RouteTarget::Local));
    assert_eq!(r.lookup_v4(v4("198.18.2.2")), None);
}

#[test]
fn repointing_a_group_moves_every_route_at_once() {
    let mut fib = fib_with_groups(3);
    // Every /24 of 198.18.0.0/15 plus host routes: 2,560 routes on one group.
    let mut ops: Vec<_> =
        (0..512u32).map(|i| FibOp::AddRoute { prefix: Prefix::v4(0xC612_0000 | (i << 8), 24), target: RouteTarget::Group(0) }).collect();
    ops.extend((0..2048u32).map(|i| FibOp::AddRoute { prefix: Prefix::v4(0xC612_0000 | (i << 6) | 9, 32), target: RouteTarget::Group(0) }));
    fib.apply(&ops).unwrap();
    let r = fib.reader();
    assert_eq!(r.next_hop(0, 0).map(|(a, _)| a), Some(0));
    drop(r);
    fib.apply(&[FibOp::SetGroup { id: 0, members: vec![NextHop { adjacency: 2, weight: 1 }] }]).unwrap();
    let r = fib.reader();
    for o in &ops {
        let FibOp::AddRoute { prefix, .. } = o else { unreachable!() };
        let t = r.lookup_v4(prefix.addr_v4()).unwrap();
        let RouteTarget::Group(g) = t else { panic!("{t}") };
        assert_eq!(r.next_hop(g, 12345).unwrap().0, 2);
    }
}

#[test]
fn weighted_members_and_flow_stickiness() {
    let mut fib = fib_with_groups(3);
    fib.apply(&[FibOp::SetGroup { id: 7, members: vec![NextHop { adjacency: 0, weight: 1 }, NextHop { adjacency: 1, weight: 3 }] }])
        .unwrap();
    let r = fib.reader();
    let mut counts = [0usize; 2];
    for f in 0..40_000u32 {
        let h = f.wrapping_mul(0x9E37_79B9);
        let (a, _) = r.next_hop(7, h).unwrap();
        assert_eq!(r.next_hop(7, h).unwrap().0, a, "one flow, one path");
        counts[a as usize] += 1;
    }
    let share = counts[1] as f64 / 40_000.0;
    assert!((0.72..0.78).contains(&share), "weight 3 of 4 took {share}");
    assert!(r.next_hop(99, 1).is_none(), "absent group");
}

#[test]
fn spread_is_proportional() {
    let m = |w: &[u32]| w.iter().enumerate().map(|(i, &w)| NextHop { adjacency: i as u32, weight: w }).collect::<Vec<_>>();
    assert_eq!(&*spread(&m(&[1, 2])), &[0, 1, 1]);
    let b = spread(&m(&[65_535, 1, 30_000]));
    assert_eq!(b.len(), MAX_BUCKETS as usize);
    assert!(b.contains(&1), "every member keeps a bucket");
    let b = spread(&m(&[1; 256]));
    assert_eq!(b.len(), 256);
}

#[test]
fn batch_errors_name_every_bad_entry_and_apply_nothing() {
    let mut fib = fib_with_groups(2);
    fib.apply(&[add("198.18.0.0/16", 0)]).unwrap();
    let bad = [
        add("198.19.0.0/16", 1),
        FibOp::AddRoute { prefix: Prefix::v4(0xC612_0000, 33), target: RouteTarget::Group(0) },
        add("198.18.0.1/15", 0),
        add("198.18.1.0/24", 42),
        FibOp::AddRoute { prefix: Prefix::v6(0, 129), target: RouteTarget::Blackhole },
        FibOp::DeleteGroup { id: 0 },
        add("198.19.0.0/16", 0),
        FibOp::SetGroup { id: 5, members: vec![] },
        FibOp::SetGroup { id: 6, members: vec![NextHop { adjacency: 77, weight: 1 }] },
        FibOp::SetGroup { id: 8, members: vec![NextHop { adjacency: 0, weight: 0 }] },
        FibOp::SetGroup { id: 5000, members: vec![NextHop { adjacency: 0, weight: 1 }] },
        FibOp::DeleteAdjacency { id: 1 },
    ];
    let e = fib.apply(&bad).unwrap_err();
    let msgs: Vec<String> = e.errors.iter().map(|e| e.to_string()).collect();
    let expect = [
        "entry 1: 198.18.0.0/33: prefix length 33 exceeds 32",
        "entry 2: 198.18.0.1/15: host bits set (the network is 198.18.0.0/15)",
        "entry 3: route 198.18.1.0/24: group 42 does not exist",
        "entry 4: ::/129: prefix length 129 exceeds 128",
        "entry 6: route 198.19.0.0/16: already changed by entry 0 of this batch (one change per object)",
        "entry 7: group 5: no members (a group needs at least one next hop)",
        "entry 8: group 6: member adjacency 77 does not exist",
        "entry 9: group 8: member adjacency 0 has weight 0; weights are 1 to 65535",
        "entry 10: group 5000: id exceeds the table's 1024 groups",
        "entry 5: group 0: still used by 1 route(s); delete or re-point them first",
        "entry 11: adjacency 1: still used by 1 group(s); remove it from them first",
    ];
    assert_eq!(msgs, expect);
    assert_eq!(fib.stats().v4.routes, 1, "nothing applied");
    assert_eq!(fib.reader().lookup_v4(v4("198.19.0.1")), None);
    // In order: deleting the routes first lets the group go in the same batch.
    fib.apply(&[del("198.18.0.0/16"), FibOp::DeleteGroup { id: 0 }]).unwrap();
    assert!(fib.group(0).is_none());
}

#[test]
fn a_route_named_again_is_refused_wherever_it_is_in_the_batch() {
    let mut fib = fib_with_groups(2);
    // Out of order, three times, and once as a delete: each repeat names the first entry.
    let batch = [
        add("198.18.9.0/24", 0),
        add("198.18.1.0/24", 0),
        add("2001:db8::/32", 0),
        del("198.18.1.0/24"),
        add("198.18.0.0/24", 1),
        add("198.18.1.0/24", 1),
        FibOp::AddRoute { prefix: p("2001:db8::/32"), target: RouteTarget::Blackhole },
    ];
    let e = fib.apply(&batch).unwrap_err();
    let msgs: Vec<String> = e.errors.iter().map(|e| e.to_string()).collect();
    let expect = [
        "entry 3: route 198.18.1.0/24: already changed by entry 1 of this batch (one change per object)",
        "entry 5: route 198.18.1.0/24: already changed by entry 1 of this batch (one change per object)",
        "entry 6: route 2001:db8::/32: already changed by entry 2 of this batch (one change per object)",
    ];
    assert_eq!(msgs, expect);
    assert_eq!(fib.stats().v4.routes + fib.stats().v6.routes, 0, "nothing applied");
}

#[test]
fn routes_re_pointed_let_their_old_group_go_in_the_same_batch() {
    // A table load skips each route's old target unless the batch deletes a group: one that
    // does must still see the routes it re-points leave the group.
    let mut fib = fib_with_groups(2);
    fib.apply(&[add("198.18.0.0/24", 0), add("198.18.1.0/24", 0), add("2001:db8::/32", 0)]).unwrap();
    let partly = [add("198.18.0.0/24", 1), add("198.18.1.0/24", 1), FibOp::DeleteGroup { id: 0 }];
    let e = fib.apply(&partly).unwrap_err();
    assert_eq!(e.to_string(), "entry 2: group 0: still used by 1 route(s); delete or re-point them first");
    let all = [
        add("198.18.0.0/24", 1),
        add("198.18.1.0/24", 1),
        FibOp::AddRoute { prefix: p("2001:db8::/32"), target: RouteTarget::Unreachable },
        FibOp::DeleteGroup { id: 0 },
    ];
    fib.apply(&all).unwrap();
    assert!(fib.group(0).is_none());
    assert_eq!(fib.route(&p("198.18.1.0/24")), Some(RouteTarget::Group(1)));
}

#[test]
fn full_tables_are_refused_with_the_reason() {
    let cfg = FibConfig { v4_routes: 3, v6_routes: 1, v4_nodes: 2, v6_nodes: 3, groups: 4, adjacencies: 4 };
    let mut fib = Fib::new(cfg).unwrap();
    fib.apply(&[
        FibOp::SetAdjacency { id: 0, adjacency: Adjacency::default() },
        FibOp::SetGroup { id: 0, members: vec![NextHop { adjacency: 0, weight: 1 }] },
    ])
    .unwrap();
    fib.apply(&[add("198.18.0.0/24", 0), add("198.18.1.0/24", 0), add("198.18.2.0/24", 0)]).unwrap();
    let e = fib.apply(&[add("198.18.3.0/24", 0)]).unwrap_err();
    assert_eq!(e.to_string(), "entry 0: route 198.18.3.0/24: IPv4 table full (3 routes; raise the capacity)");
    // Replacing an existing route needs no room.
    fib.apply(&[add("198.18.0.0/24", 0)]).unwrap();
    // Node pool: each /25 in a new /24 needs one node.
    let mut fib = Fib::new(cfg).unwrap();
    fib.apply(&[
        FibOp::SetAdjacency { id: 0, adjacency: Adjacency::default() },
        FibOp::SetGroup { id: 0, members: vec![NextHop { adjacency: 0, weight: 1 }] },
    ])
    .unwrap();
    let e = fib.apply(&[add("198.18.0.0/25", 0), add("198.18.1.0/25", 0), add("198.18.2.0/25", 0)]).unwrap_err();
    assert!(e.to_string().contains("IPv4 table full: the batch needs up to 3 more trie nodes and 2 are free (raise v4_nodes)"), "{e}");
    assert_eq!(fib.stats().v4.routes, 0);
    // Two fit; deleting one frees its node after a grace period, so a third fits then.
    fib.apply(&[add("198.18.0.0/25", 0), add("198.18.1.0/25", 0)]).unwrap();
    fib.apply(&[del("198.18.0.0/25")]).unwrap();
    fib.apply(&[add("198.18.2.0/25", 0)]).unwrap();
    assert_eq!(fib.stats().v4.nodes_used, 2);
    // IPv6: a /48 needs nodes at /16, /24, /32, /40 (4) with 3 in the pool.
    let e = fib.apply(&[FibOp::AddRoute { prefix: p("2001:db8:1::/48"), target: RouteTarget::Blackhole }]).unwrap_err();
    assert!(e.to_string().contains("IPv6 table full"), "{e}");
    let e = Fib::new(FibConfig { groups: MAX_GROUPS + 1, ..cfg }).err().unwrap();
    assert_eq!(e, ConfigError::TooManyGroups { groups: MAX_GROUPS + 1 });
    assert_eq!(e.to_string(), format!("groups: {} exceeds the largest supported {MAX_GROUPS}", MAX_GROUPS + 1));
    let e = Fib::new(FibConfig { v6_nodes: u32::MAX, ..cfg }).err().unwrap();
    assert_eq!(e.to_string(), format!("v6_nodes: {} exceeds the largest supported {}", u32::MAX, VALUE_MASK + 1));
}

#[test]
fn node_pool_returns_to_empty_after_deletes() {
    let mut fib = fib_with_groups(2);
    let routes = ["2001:db8:1:2::/64", "2001:db8:1:2:3::/80", "2001:db8:ffff::1/128", "198.18.0.1/32", "198.18.0.128/25"];
    fib.apply(&routes.iter().map(|r| add(r, 1)).collect::<Vec<_>>()).unwrap();
    assert!(fib.stats().v6.nodes_used > 0 && fib.stats().v4.nodes_used == 1);
    fib.apply(&routes.iter().map(|r| del(r)).collect::<Vec<_>>()).unwrap();
    fib.reclaim(true);
    assert_eq!((fib.stats().v4.nodes_used, fib.stats().v6.nodes_used), (0, 0));
    let r = fib.reader();
    assert_eq!(r.lookup_v6(v6("2001:db8:1:2::1")), None);
}

// ---- property tests against a naive reference ----

/// The `n` low bits set (n may be 128).
fn low(n: u32) -> u128 {
    if n >= 128 {
        u128::MAX
    } else {
        (1u128 << n) - 1
    }
}

/// The reference: a linear scan over installed prefixes for the longest match.
#[derive(Default)]
struct Naive {
    routes: BTreeMap<(u8, u128), u32>,
}

impl Naive {
    fn lookup(&self, bits: u32, addr: u128) -> Option<u32> {
        let mut best: Option<(u8, u32)> = None;
        for (&(len, net), &g) in &self.routes {
            let mask = low(bits) & !low(bits - len as u32);
            if addr & mask == net && best.is_none_or(|(l, _)| len > l) {
                best = Some((len, g));
            }
        }
        best.map(|(_, g)| g)
    }
}

#[derive(Debug, Clone)]
enum Step {
    Add(u128, u8, u32),
    Del(u128, u8),
}

/// Prefixes drawn from a small space so that overlaps are the rule, with short and long
/// lengths mixed.
fn steps(bits: u32) -> impl Strategy<Value = Vec<Step>> {
    let len = prop_oneof![0u8..=(bits as u8), Just(bits as u8), 0u8..=8, (bits as u8 - 8)..=(bits as u8)];
    let addr = prop_oneof![
        any::<u128>(),
        (0u128..16).prop_map(move |x| x << (bits - 4)),
        any::<u8>().prop_map(move |x| (0xC6u128 << (bits - 8)) | ((x as u128) << (bits - 16)))
    ];
    let step = prop_oneof![
        3 => (addr.clone(), len.clone(), 0u32..4).prop_map(|(a, l, g)| Step::Add(a, l, g)),
        1 => (addr, len).prop_map(|(a, l)| Step::Del(a, l)),
    ];
    prop::collection::vec(step, 1..60)
}

fn run_steps(bits: u32, root: u32, steps: &[Step], probes: &[u128]) -> Result<(), TestCaseError> {
    let mut fib = if bits == 32 { fib_with_groups_rooted(4, root, 16) } else { fib_with_groups_rooted(4, 24, root) };
    let mut naive = Naive::default();
    let width = if bits == 32 { u32::MAX as u128 } else { u128::MAX };
    let mk = |a: u128, l: u8| {
        let a = a & width;
        let net = a & width & !low(bits - l as u32);
        (net, if bits == 32 { Prefix::v4(net as u32, l) } else { Prefix::v6(net, l) })
    };
    for chunk in steps.chunks(7) {
        let mut ops = vec![];
        let mut touched = std::collections::HashSet::new();
        for s in chunk {
            match *s {
                Step::Add(a, l, g) => {
                    let (net, pfx) = mk(a, l);
                    if touched.insert(pfx) {
                        ops.push(FibOp::AddRoute { prefix: pfx, target: RouteTarget::Group(g) });
                        naive.routes.insert((l, net), g);
                    }
                }
                Step::Del(a, l) => {
                    let (net, pfx) = mk(a, l);
                    if touched.insert(pfx) {
                        ops.push(FibOp::DeleteRoute { prefix: pfx });
                        naive.routes.remove(&(l, net));
                    }
                }
            }
        }
        fib.apply(&ops).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    let r = fib.reader();
    let check = |addr: u128| -> Result<(), TestCaseError> {
        let addr = addr & width;
        let want = naive.lookup(bits, addr).map(RouteTarget::Group);
        let got = if bits == 32 { r.lookup_v4(addr as u32) } else { r.lookup_v6(addr) };
        prop_assert_eq!(got, want, "address {:#x}", addr);
        Ok(())
    };
    for &a in probes {
        check(a)?;
    }
    // Every prefix's first and last address and their neighbours.
    let mut edges = vec![];
    for &(len, net) in naive.routes.keys() {
        let last = net | low(bits - len as u32);
        for a in [net, last, net.wrapping_sub(1), last.wrapping_add(1)] {
            check(a)?;
            edges.push(a);
        }
    }
    // Batch lookups agree with single ones, on the probes and on the edges (which reach
    // the nodes below the root that random probes seldom do).
    let keys: Vec<u128> = probes.iter().chain(&edges).map(|a| a & width).collect();
    let mut out = vec![0u32; keys.len()];
    if bits == 32 {
        let k4: Vec<u32> = keys.iter().map(|&a| a as u32).collect();
        r.lookup_v4_batch(&k4, &mut out);
        for (k, e) in k4.iter().zip(&out) {
            prop_assert_eq!(RouteTarget::from_entry(*e), r.lookup_v4(*k));
        }
    } else {
        r.lookup_v6_batch(&keys, &mut out);
        for (k, e) in keys.iter().zip(&out) {
            prop_assert_eq!(RouteTarget::from_entry(*e), r.lookup_v6(*k));
        }
    }
    drop(r);
    // Deleting everything leaves an empty table and an empty node pool.
    let all: Vec<_> = naive.routes.keys().map(|&(l, net)| FibOp::DeleteRoute { prefix: mk(net, l).1 }).collect();
    fib.apply(&all).map_err(|e| TestCaseError::fail(e.to_string()))?;
    fib.reclaim(true);
    let s = fib.stats();
    prop_assert_eq!((s.v4.routes, s.v6.routes, s.v4.nodes_used, s.v6.nodes_used), (0, 0, 0, 0));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// IPv4 on a 16-bit root (two node levels below it): the same code as production with
    /// cheap short prefixes, so thousands of cases run in seconds.
    #[test]
    fn ipv4_matches_linear_scan(steps in steps(32), probes in prop::collection::vec(any::<u32>().prop_map(|x| x as u128), 64)) {
        run_steps(32, 16, &steps, &probes)?;
    }

    #[test]
    fn ipv6_matches_linear_scan(steps in steps(128), probes in prop::collection::vec(any::<u128>(), 64)) {
        run_steps(128, 16, &steps, &probes)?;
    }

    /// IPv6 on an 8-bit root: one more node level on every path.
    #[test]
    fn ipv6_matches_linear_scan_narrow_root(steps in steps(128), probes in prop::collection::vec(any::<u128>(), 64)) {
        run_steps(128, 8, &steps, &probes)?;
    }
}

proptest! {
    // The production IPv4 layout (24-bit root), fewer cases: a /0 there is 16 M writes.
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn ipv4_production_layout_matches_linear_scan(steps in steps(32), probes in prop::collection::vec(any::<u32>().prop_map(|x| x as u128), 64)) {
        run_steps(32, 24, &steps, &probes)?;
    }
}

// ---- concurrency ----

/// Readers look up continuously while a writer churns routes and re-points groups. Every
/// probe address has a fixed set of answers that were ever installed for the prefixes
/// covering it; a reader must never see anything else.
#[test]
fn readers_never_see_an_answer_that_was_never_installed() {
    let mut fib = Fib::new(FibConfig::default()).unwrap();
    let mut ops = vec![];
    for i in 0..8u32 {
        ops.push(FibOp::SetAdjacency { id: i, adjacency: Adjacency { port: i as u16, ..Default::default() } });
    }
    // Groups 0..4 only ever hold adjacencies {0,1}; groups 4..8 only {4,5}.
    for g in 0..8u32 {
        let a = if g < 4 { 0 } else { 4 };
        ops.push(FibOp::SetGroup { id: g, members: vec![NextHop { adjacency: a, weight: 1 }] });
    }
    // Stable covering routes: 198.18.0.0/15 → group 0..4 family, 2001:db8::/32 likewise.
    ops.push(add("198.18.0.0/15", 0));
    ops.push(FibOp::AddRoute { prefix: p("2001:db8::/32"), target: RouteTarget::Group(0) });
    fib.apply(&ops).unwrap();

    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let lookups = std::sync::Arc::new(AtomicU64::new(0));
    let mut readers = vec![];
    for t in 0..2u32 {
        let mut r = fib.reader();
        let stop = stop.clone();
        let lookups = lookups.clone();
        readers.push(std::thread::spawn(move || -> Result<(), String> {
            let mut x = 0x1234_5678u32.wrapping_add(t);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    let a4 = 0xC612_0000 | (x & 0x1_FFFF);
                    // Inside 198.18.0.0/15 the answer is group 0..4 (churned more specifics
                    // use groups 0..4 too) and resolves to adjacency 0 or 1.
                    match r.lookup_v4(a4) {
                        Some(RouteTarget::Group(g)) if g < 4 => match r.next_hop(g, x) {
                            Some((a, adj)) if a < 2 && adj.port == a as u16 => {}
                            other => return Err(format!("{a4:#x}: group {g} gave {other:?}")),
                        },
                        other => return Err(format!("{a4:#x}: {other:?}")),
                    }
                    // Outside: 198.20.0.0/16 holds only churned routes to groups 4..8, or nothing.
                    match r.lookup_v4(0xC614_0000 | (x & 0xFFFF)) {
                        None => {}
                        Some(RouteTarget::Group(g)) if (4..8).contains(&g) => {
                            if let Some((a, _)) = r.next_hop(g, x) {
                                if !(4..6).contains(&a) {
                                    return Err(format!("group {g} → adjacency {a}"));
                                }
                            }
                        }
                        other => return Err(format!("198.20/16: {other:?}")),
                    }
                    let a6 = (0x2001_0db8u128 << 96) | ((x as u128) << 40) | x as u128;
                    match r.lookup_v6(a6) {
                        Some(RouteTarget::Group(g)) if g < 4 => {}
                        other => return Err(format!("{a6:#x}: {other:?}")),
                    }
                    n += 3;
                }
                r.quiescent();
            }
            lookups.fetch_add(n, Ordering::Relaxed);
            Ok(())
        }));
    }

    let started = std::time::Instant::now();
    let mut rng = 0x9E37_79B9u32;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        rng
    };
    let mut batches = 0u64;
    let mut installed: Vec<Prefix> = vec![];
    while started.elapsed() < std::time::Duration::from_secs(4) {
        let mut ops = vec![];
        let mut touched = std::collections::HashSet::new();
        for _ in 0..32 {
            let r = next();
            let len = 16 + (r % 17) as u8;
            let inside = r & 1 == 0;
            let base: u32 = if inside { 0xC612_0000 | (next() & 0x1_FFFF) } else { 0xC614_0000 | (next() & 0xFFFF) };
            let len = if inside { len.max(15) } else { len.max(16) };
            let pfx = Prefix::v4(base & (u32::MAX << (32 - len as u32)), len);
            if pfx == p("198.18.0.0/15") || !touched.insert(pfx) {
                continue;
            }
            let g = if inside { next() % 4 } else { 4 + next() % 4 };
            if next() % 3 == 0 {
                ops.push(FibOp::DeleteRoute { prefix: pfx });
            } else {
                ops.push(FibOp::AddRoute { prefix: pfx, target: RouteTarget::Group(g) });
                installed.push(pfx);
            }
            // IPv6 churn inside 2001:db8::/32 over a bounded space, so the node pool stays
            // bounded too.
            let p6 = Prefix::v6((0x2001_0db8u128 << 96) | (((next() % 64) as u128) << 80), 33 + (next() % 32) as u8).network();
            if touched.insert(p6) {
                if next() % 3 == 0 {
                    ops.push(FibOp::DeleteRoute { prefix: p6 });
                } else {
                    ops.push(FibOp::AddRoute { prefix: p6, target: RouteTarget::Group(next() % 4) });
                }
            }
        }
        // Re-point groups, keeping each within its family of adjacencies.
        let g = next() % 8;
        let base = if g < 4 { 0 } else { 4 };
        if touched.insert(Prefix::v4(g, 32)) {
            ops.push(FibOp::SetGroup { id: g, members: vec![NextHop { adjacency: base + next() % 2, weight: 1 + next() % 3 }] });
        }
        fib.apply(&ops).unwrap();
        // Adjacency MACs change too (a neighbour update), same ports.
        let a = next() % 2;
        fib.apply(&[FibOp::SetAdjacency {
            id: a,
            adjacency: Adjacency { port: a as u16, dst_mac: [2, 0, 0, 0, 0, next() as u8], ..Default::default() },
        }])
        .unwrap();
        batches += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap().unwrap();
    }
    let n = lookups.load(Ordering::Relaxed);
    assert!(batches > 100 && n > 100_000, "churn {batches} batches, {n} lookups");
    eprintln!("concurrency: {batches} write batches, {n} lookups, {} routes", installed.len());
}

// ---- the real tables ----

fn data_dir() -> std::path::PathBuf {
    std::env::var_os("CORRIDOR_DATA")
        .map(Into::into)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
}

fn read_table(name: &str) -> Vec<Prefix> {
    use std::io::Read;
    let path = data_dir().join(name);
    let f = std::fs::File::open(&path).unwrap_or_else(|e| {
        panic!("{}: {e}; the real tables live in ../shared/data beside the repository (or set CORRIDOR_DATA)", path.display())
    });
    let mut s = String::new();
    flate2::read::GzDecoder::new(f).read_to_string(&mut s).unwrap();
    s.lines().filter_map(|l| l.split_whitespace().next()).map(|t| t.parse().unwrap()).collect()
}

#[test]
fn the_real_tables_load_and_look_up() {
    for (name, expect) in
        [("ipv4-routeviews-2024-04-06.txt.gz", 998_042), ("ipv6-ris-2022-05-27.txt.gz", 158_212), ("ipv6-tier1-router.txt.gz", 160_147)]
    {
        let table = read_table(name);
        assert_eq!(table.len(), expect, "{name}");
        let mut fib = Fib::new(FibConfig::default()).unwrap();
        let groups = 64u32;
        let mut ops: Vec<FibOp> = (0..groups)
            .flat_map(|g| {
                [
                    FibOp::SetAdjacency { id: g, adjacency: Adjacency { port: g as u16, ..Default::default() } },
                    FibOp::SetGroup { id: g, members: vec![NextHop { adjacency: g, weight: 1 }] },
                ]
            })
            .collect();
        // The group of a prefix is a function of the prefix, so the expected answer is known.
        let group_of = |p: &Prefix| (p.addr_v6().wrapping_add(p.addr_v4() as u128).wrapping_mul(0x9E37_79B9) >> 7) as u32 % groups;
        ops.extend(table.iter().map(|p| FibOp::AddRoute { prefix: *p, target: RouteTarget::Group(group_of(p)) }));
        let t = std::time::Instant::now();
        fib.apply(&ops).unwrap();
        let elapsed = t.elapsed();
        let s = fib.stats();
        eprintln!(
            "{name}: {} routes in {elapsed:?}, {} nodes, {} MiB of entries",
            table.len(),
            s.v4.nodes_used + s.v6.nodes_used,
            (s.v4.entry_bytes + s.v6.entry_bytes) >> 20
        );
        let r = fib.reader();
        // Sample: a prefix's own first address answers with its group unless a more specific
        // route starts at the same address; its last address likewise.
        let set: std::collections::HashSet<Prefix> = table.iter().copied().collect();
        for p in table.iter().step_by(97) {
            let first = if p.family() == Family::V4 { r.lookup_v4(p.addr_v4()) } else { r.lookup_v6(p.addr_v6()) };
            let more_specific_at_start = (p.len() + 1..=p.family().max_len()).any(|l| set.contains(&Prefix::from_ip(p.ip(), l)));
            if !more_specific_at_start {
                assert_eq!(first, Some(RouteTarget::Group(group_of(p))), "{p}");
            } else {
                assert!(first.is_some(), "{p}");
            }
        }
    }
}

proptest! {
    /// The fast path's group decode reads an entry as `from_entry` does: every special
    /// code, every group, valid or not, at any depth and with the node bit.
    #[test]
    fn group_of_entry_is_from_entry(entry in prop_oneof![any::<u32>(), (0u32..8, any::<u32>()).prop_map(|(d, hi)| (hi & !VALUE_MASK) | (VALUE_MASK - d))]) {
        let expected = match RouteTarget::from_entry(entry) {
            Some(RouteTarget::Group(g)) => Some(g),
            _ => None,
        };
        prop_assert_eq!(RouteTarget::group_of_entry(entry), expected);
    }
}
