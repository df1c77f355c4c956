//! Unicast reverse-path forwarding (RFC 3704) per sub-interface: a frame's source address
//! must have a route, and in strict mode that route must lead back out of the sub-interface
//! the frame came in on (any member of its next-hop group counts, so an ECMP back path is
//! valid). The source lookups ride in the batch lookup of the destinations; this file holds
//! the modes, the table the control plane changes while workers read it, and the check.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::drop::DropReason;
use crate::fib::{FibReader, RouteTarget};

/// How a sub-interface checks the source of what it receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum UrpfMode {
    /// No check (the default).
    #[default]
    Off,
    /// The source has a route that forwards (RFC 3704 section 2.4: feasible, not a
    /// blackhole, unreachable or local route).
    Loose,
    /// The source's route forwards out of the ingress sub-interface through one of its
    /// group's members (RFC 3704 section 2.2).
    Strict,
}

impl UrpfMode {
    pub const fn name(self) -> &'static str {
        match self {
            UrpfMode::Off => "off",
            UrpfMode::Loose => "loose",
            UrpfMode::Strict => "strict",
        }
    }

    pub fn from_name(name: &str) -> Option<UrpfMode> {
        [UrpfMode::Off, UrpfMode::Loose, UrpfMode::Strict].into_iter().find(|m| m.name() == name)
    }
}

impl fmt::Display for UrpfMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A sub-interface's reverse-path policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UrpfPolicy {
    pub mode: UrpfMode,
    /// A source covered only by the default route passes (in strict mode only when the
    /// default route leads back out of the ingress). Off: the default route is ignored, as
    /// RFC 3704 section 2.4 recommends for loose mode on a router that has one.
    pub allow_default: bool,
}

impl UrpfPolicy {
    pub const OFF: UrpfPolicy = UrpfPolicy { mode: UrpfMode::Off, allow_default: false };

    const ALLOW_DEFAULT: u8 = 0x80;

    /// One byte, the form workers read: the mode in the low bits, allow_default on top.
    const fn pack(self) -> u8 {
        let mode = match self.mode {
            UrpfMode::Off => 0,
            UrpfMode::Loose => 1,
            UrpfMode::Strict => 2,
        };
        mode | if self.allow_default { Self::ALLOW_DEFAULT } else { 0 }
    }

    const fn unpack(b: u8) -> UrpfPolicy {
        let mode = match b & 0x3 {
            1 => UrpfMode::Loose,
            2 => UrpfMode::Strict,
            _ => UrpfMode::Off,
        };
        UrpfPolicy { mode, allow_default: b & Self::ALLOW_DEFAULT != 0 }
    }
}

/// Every sub-interface's policy by dense index (`PipelineConfig::sub_interfaces`), shared by
/// the workers and changed by the control plane while they run: one byte each, so a change
/// takes effect at once with no lock and no generation to check.
///
/// Relaxed suffices: a policy orders nothing else; a worker sees each byte whole, the old
/// or the new, and a batch that straddles a change checks some frames each way, as it
/// would had the change come one batch earlier or later.
#[derive(Debug)]
pub struct UrpfTable {
    policies: Box<[AtomicU8]>,
}

impl UrpfTable {
    pub fn new(policies: impl IntoIterator<Item = UrpfPolicy>) -> UrpfTable {
        UrpfTable { policies: policies.into_iter().map(|p| AtomicU8::new(p.pack())).collect() }
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Sets sub-interface `index`'s policy; false when there is no such index.
    pub fn set(&self, index: usize, policy: UrpfPolicy) -> bool {
        match self.policies.get(index) {
            Some(slot) => {
                slot.store(policy.pack(), Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    pub fn get(&self, index: usize) -> UrpfPolicy {
        UrpfPolicy::unpack(self.raw(index))
    }

    /// The packed policy, 0 (off) for an index out of range: the per-frame read.
    #[inline(always)]
    pub(super) fn raw(&self, index: usize) -> u8 {
        self.policies.get(index).map_or(0, |p| p.load(Ordering::Relaxed))
    }
}

/// Whether a packed policy checks anything.
#[inline(always)]
pub(super) const fn checks(raw: u8) -> bool {
    raw & 0x3 != 0
}

/// The reason to drop a frame whose source lookup gave `entry`, received on sub-interface
/// (`port`, `vlan`) with packed policy `raw`; None when the source passes. A source whose
/// route is local (one of the router's own addresses, arriving from outside) fails too. A
/// source on an attached subnet (its route is the subnet's glean route) passes loose, and
/// strict when `on_link(the route's length)` says the subnet is the ingress
/// sub-interface's: a member router's own address is a valid source before the engine ever
/// resolved it.
#[inline]
pub(super) fn check(fib: &FibReader, raw: u8, entry: u32, port: u16, vlan: u16, on_link: impl Fn(u8) -> bool) -> Option<DropReason> {
    let policy = UrpfPolicy::unpack(raw);
    let reason = match policy.mode {
        UrpfMode::Off => return None,
        UrpfMode::Loose => DropReason::UrpfLoose,
        UrpfMode::Strict => DropReason::UrpfStrict,
    };
    let group = match RouteTarget::from_entry(entry) {
        Some(RouteTarget::Group(group)) => group,
        Some(RouteTarget::Glean) => {
            let len = RouteTarget::entry_prefix_len(entry);
            return (policy.mode == UrpfMode::Strict && !on_link(len)).then_some(reason);
        }
        _ => return Some(reason),
    };
    if !policy.allow_default && RouteTarget::entry_prefix_len(entry) == 0 {
        return Some(reason);
    }
    match policy.mode {
        UrpfMode::Strict if !fib.group_egresses_by(group, port, vlan) => Some(reason),
        _ => None,
    }
}

/// Whether `a` and `b` (addresses left-aligned in 128 bits) share their first `len` bits.
#[inline(always)]
pub(super) const fn same_prefix(a: u128, b: u128, len: u8) -> bool {
    len == 0 || (len <= 128 && (a ^ b) >> (128 - len as u32) == 0)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::fib::{Adjacency, FibOp, NextHop, Prefix};
    use crate::pipeline::{PipelineConfig, Verdict};
    use crate::wire::ethernet::ethertype;
    use crate::wire::ip_protocol;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const STRICT: UrpfPolicy = UrpfPolicy { mode: UrpfMode::Strict, allow_default: false };
    const LOOSE: UrpfPolicy = UrpfPolicy { mode: UrpfMode::Loose, allow_default: false };

    /// Source networks (the spoofed-source test range, 198.18.0.0/15 and 2001:db8::/32):
    /// 64 by an ECMP group over port 0 untagged and port 1; 65 by port 1 only; 66 a
    /// blackhole; 67 unreachable; anything else only by the default route, out of port 0.
    fn source_routes(rig: &mut Rig) {
        let adj =
            |id, port, vlan| FibOp::SetAdjacency { id, adjacency: Adjacency { port, vlan, src_mac: MAC0, dst_mac: nh_mac(id as u8) } };
        let group =
            |id, members: &[u32]| FibOp::SetGroup { id, members: members.iter().map(|&a| NextHop { adjacency: a, weight: 1 }).collect() };
        let mut ops = vec![adj(30, 0, 0), adj(31, 1, 0), group(30, &[30, 31]), group(31, &[31]), group(32, &[30])];
        let targets =
            [(64u8, RouteTarget::Group(30)), (65, RouteTarget::Group(31)), (66, RouteTarget::Blackhole), (67, RouteTarget::Unreachable)];
        for (net, target) in targets {
            ops.push(FibOp::AddRoute { prefix: Prefix::v4(u32::from_be_bytes([198, 18, net, 0]), 24), target });
            ops.push(FibOp::AddRoute { prefix: Prefix::v6(u128::from(src_v6(net, 0)), 48), target });
        }
        ops.push(FibOp::AddRoute { prefix: Prefix::v4(0, 0), target: RouteTarget::Group(32) });
        ops.push(FibOp::AddRoute { prefix: Prefix::v6(0, 0), target: RouteTarget::Group(32) });
        rig._fib.apply(&ops).unwrap();
    }

    fn src_v6(net: u8, host: u16) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0xa000 | net as u16, 0, 0, 0, 0, host)
    }

    /// A frame from `src` (net.1 in 198.18/15, or its IPv6 twin) to a destination out of
    /// port 1, on `vlan` (None: untagged).
    fn from(net: u8, v6: bool, vlan: Option<u16>, ttl: u8) -> Vec<u8> {
        let udp = udp(1000, 2000, 26);
        if v6 {
            eth(MAC0, vlan, ethertype::IPV6, &ipv6(src_v6(net, 1), super::super::testing::v6(1, 5), ttl, ip_protocol::UDP, &udp))
        } else {
            eth(MAC0, vlan, ethertype::IPV4, &ipv4([198, 18, net, 1], [198, 19, 1, 5], ttl, ip_protocol::UDP, &udp))
        }
    }

    fn forwarded(rig: &mut Rig, frame: Vec<u8>) -> bool {
        matches!(rig.run1(0, frame).verdict, Verdict::Forward { port: 1, .. })
    }

    /// A source on an attached subnet (its route the subnet's glean route): valid strict on
    /// the sub-interface whose subnet it is, loose anywhere, before any host route exists.
    #[test]
    fn sources_on_attached_subnets() {
        for v6 in [false, true] {
            let mut c = config(UNLIMITED);
            c.ports[0].sub_interfaces[0].urpf = STRICT;
            c.ports[0].sub_interfaces[0].ipv4 = Some(Ipv4Addr::new(198, 18, 68, 254));
            c.ports[0].sub_interfaces[0].ipv4_prefix_len = 24;
            c.ports[0].sub_interfaces[0].ipv6 = Some(src_v6(68, 0xfe));
            c.ports[0].sub_interfaces[1].urpf = LOOSE;
            let mut rig = rig_from(&c);
            let mut ops = Vec::new();
            for net in [68u8, 69] {
                ops.push(FibOp::AddRoute { prefix: Prefix::v4(u32::from_be_bytes([198, 18, net, 0]), 24), target: RouteTarget::Glean });
                ops.push(FibOp::AddRoute { prefix: Prefix::v6(u128::from(src_v6(net, 0)), 48), target: RouteTarget::Glean });
            }
            rig._fib.apply(&ops).unwrap();
            let what = if v6 { "IPv6" } else { "IPv4" };
            assert!(forwarded(&mut rig, from(68, v6, None, 64)), "{what} strict: the ingress link's own subnet");
            assert_silent_drop(
                &mut rig,
                0,
                from(69, v6, None, 64),
                DropReason::UrpfStrict,
                &format!("{what} strict: another link's subnet"),
            );
            assert!(forwarded(&mut rig, from(69, v6, Some(100), 64)), "{what} loose: an attached subnet is a route");
            // In one batch: both subnets' glean routes are the same entry (glean, /24 or
            // /48), so the verdict of the first must not answer the second.
            let outs = rig.run(&[(0, from(68, v6, None, 64)), (0, from(69, v6, None, 64)), (0, from(68, v6, None, 64))]);
            let verdicts: Vec<_> = outs.iter().map(|o| o.verdict).collect();
            assert!(matches!(verdicts[0], Verdict::Forward { port: 1, .. }), "{what}: {verdicts:?}");
            assert_eq!(verdicts[1], Verdict::Drop(DropReason::UrpfStrict), "{what}: {verdicts:?}");
            assert!(matches!(verdicts[2], Verdict::Forward { port: 1, .. }), "{what}: {verdicts:?}");
        }
    }

    #[test]
    fn strict_loose_and_off() {
        for v6 in [false, true] {
            let mut c = config(UNLIMITED);
            c.ports[0].sub_interfaces[0].urpf = STRICT; // port 0 untagged
            c.ports[0].sub_interfaces[1].urpf = LOOSE; // port 0 VLAN 100
            let mut rig = rig_from(&c);
            source_routes(&mut rig);
            let what = if v6 { "IPv6" } else { "IPv4" };
            // Strict: the ECMP group has a member back out of port 0: valid.
            assert!(forwarded(&mut rig, from(64, v6, None, 64)), "{what}: ECMP back path");
            for (net, why) in [(65, "route out of another port"), (66, "blackhole"), (67, "unreachable"), (99, "default only")] {
                assert_silent_drop(&mut rig, 0, from(net, v6, None, 64), DropReason::UrpfStrict, &format!("{what} strict: {why}"));
            }
            // Never an ICMP error to a spoofed source, even for an expiring packet.
            assert_silent_drop(&mut rig, 0, from(65, v6, None, 1), DropReason::UrpfStrict, &format!("{what}: TTL 1"));
            // Loose: any forwarding route will do, wherever it leads.
            assert!(forwarded(&mut rig, from(65, v6, Some(100), 64)), "{what} loose: route out of another port");
            assert!(forwarded(&mut rig, from(64, v6, Some(100), 64)), "{what} loose");
            for (net, why) in [(66, "blackhole"), (67, "unreachable"), (99, "default only")] {
                assert_silent_drop(&mut rig, 0, from(net, v6, Some(100), 64), DropReason::UrpfLoose, &format!("{what} loose: {why}"));
            }
            // Off (port 0 VLAN 200): nothing is checked.
            for net in [64, 65, 66, 99] {
                let before = rig.snap();
                let out = rig.run1(0, from(net, v6, Some(200), 64));
                assert!(matches!(out.verdict, Verdict::Forward { port: 1, .. }), "{what} off: from net {net}");
                assert_eq!(rig.snap().total_drops(), before.total_drops());
            }
            // A source that is the router's own (a local route) fails loose too.
            let local = if v6 {
                eth(
                    MAC0,
                    Some(100),
                    ethertype::IPV6,
                    &ipv6(super::super::testing::v6(88, 1), super::super::testing::v6(1, 5), 64, ip_protocol::UDP, &udp(1, 2, 26)),
                )
            } else {
                eth(MAC0, Some(100), ethertype::IPV4, &ipv4([198, 19, 88, 1], [198, 19, 1, 5], 64, ip_protocol::UDP, &udp(1, 2, 26)))
            };
            assert_silent_drop(&mut rig, 0, local, DropReason::UrpfLoose, &format!("{what} loose: local source"));
        }
    }

    #[test]
    fn default_route_counts_only_when_allowed() {
        for v6 in [false, true] {
            let mut c = config(UNLIMITED);
            c.ports[0].sub_interfaces[0].urpf = UrpfPolicy { allow_default: true, ..STRICT };
            c.ports[0].sub_interfaces[1].urpf = UrpfPolicy { allow_default: true, ..LOOSE };
            c.ports[1].sub_interfaces[0].urpf = UrpfPolicy { allow_default: true, ..STRICT };
            let mut rig = rig_from(&c);
            source_routes(&mut rig);
            assert!(forwarded(&mut rig, from(99, v6, None, 64)), "strict: the default route leads back out of port 0");
            assert!(forwarded(&mut rig, from(99, v6, Some(100), 64)), "loose");
            // The default route does not lead back out of port 1.
            let f = from(99, v6, None, 64);
            let out = rig.run1(1, [&MAC1[..], &f[6..]].concat());
            assert_eq!(out.verdict, Verdict::Drop(DropReason::UrpfStrict));
            // A more specific blackhole still fails.
            assert_silent_drop(&mut rig, 0, from(66, v6, Some(100), 64), DropReason::UrpfLoose, "blackhole under a default");
        }
    }

    #[test]
    fn a_member_moving_to_another_sub_interface_changes_the_strict_answer() {
        let mut c = config(UNLIMITED);
        c.ports[0].sub_interfaces[1].urpf = STRICT; // port 0 VLAN 100
        let mut rig = rig_from(&c);
        source_routes(&mut rig);
        assert_silent_drop(&mut rig, 0, from(65, false, Some(100), 64), DropReason::UrpfStrict, "group 31 is on port 1");
        // Adjacency 31 (in groups 30 and 31) moves to port 0 VLAN 100: no group write.
        let moved = Adjacency { port: 0, vlan: 100, src_mac: MAC0, dst_mac: nh_mac(31) };
        rig._fib.apply(&[FibOp::SetAdjacency { id: 31, adjacency: moved }]).unwrap();
        assert!(forwarded(&mut rig, from(65, false, Some(100), 64)), "now back out of VLAN 100");
        assert!(forwarded(&mut rig, from(64, true, Some(100), 64)), "ECMP group 30 too");
        // Re-pointing the group away makes it fail again.
        rig._fib.apply(&[FibOp::SetGroup { id: 31, members: vec![NextHop { adjacency: 30, weight: 1 }] }]).unwrap();
        assert_silent_drop(&mut rig, 0, from(65, false, Some(100), 64), DropReason::UrpfStrict, "group 31 re-pointed to port 0 untagged");
    }

    #[test]
    fn policies_change_while_the_pipeline_runs() {
        let mut rig = rig_from(&config(UNLIMITED));
        source_routes(&mut rig);
        assert!(forwarded(&mut rig, from(66, false, None, 64)), "off by default");
        assert!(rig.pipeline.urpf().set(0, LOOSE));
        assert_silent_drop(&mut rig, 0, from(66, false, None, 64), DropReason::UrpfLoose, "loose now");
        assert!(rig.pipeline.urpf().set(0, UrpfPolicy::OFF));
        assert!(forwarded(&mut rig, from(66, false, None, 64)), "off again");
        // A shared table of the wrong size is refused and the old one kept.
        assert!(!rig.pipeline.share_urpf(std::sync::Arc::new(UrpfTable::new([STRICT]))));
        assert!(forwarded(&mut rig, from(66, false, None, 64)));
        let shared = std::sync::Arc::new(UrpfTable::new([STRICT; 6]));
        assert!(rig.pipeline.share_urpf(shared.clone()));
        assert_silent_drop(&mut rig, 0, from(66, false, None, 64), DropReason::UrpfStrict, "the shared table's policy");
    }

    fn mixed_config(modes: &[u8]) -> PipelineConfig {
        let mut c = config(UNLIMITED);
        let policy = |m: u8| UrpfPolicy::unpack((m % 3) | if m >= 3 { UrpfPolicy::ALLOW_DEFAULT } else { 0 });
        for (i, s) in c.ports[0].sub_interfaces.iter_mut().enumerate() {
            s.urpf = policy(modes[i]);
        }
        c
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// A batch decides each frame as that frame alone would be decided: the source
        /// keys appended to the destinations' never answer another frame.
        #[test]
        fn a_batch_decides_as_frames_one_by_one(
            modes in proptest::collection::vec(0u8..6, 3),
            frames in proptest::collection::vec((0u8..4, any::<bool>(), 0usize..3, 1u8..3), 1..100),
        ) {
            let nets = [64u8, 65, 66, 99];
            let vlans = [None, Some(100), Some(200)];
            let input: Vec<(u16, Vec<u8>)> =
                frames.iter().map(|&(n, v6, vl, ttl)| (0u16, from(nets[n as usize], v6, vlans[vl], ttl))).collect();
            let c = mixed_config(&modes);
            let mut batch = rig_from(&c);
            source_routes(&mut batch);
            let mut single = rig_from(&c);
            source_routes(&mut single);
            let together: Vec<Verdict> = batch.run(&input).iter().map(|o| o.verdict).collect();
            for (frame, verdict) in input.iter().zip(together) {
                let alone = single.run1(frame.0, frame.1.clone()).verdict;
                prop_assert_eq!(alone, verdict);
            }
            prop_assert_eq!(batch.snap().drops, single.snap().drops);
        }
    }

    #[test]
    fn policies_pack_and_unpack() {
        for mode in [UrpfMode::Off, UrpfMode::Loose, UrpfMode::Strict] {
            for allow_default in [false, true] {
                let p = UrpfPolicy { mode, allow_default };
                assert_eq!(UrpfPolicy::unpack(p.pack()), p);
                assert_eq!(checks(p.pack()), mode != UrpfMode::Off);
            }
            assert_eq!(UrpfMode::from_name(mode.name()), Some(mode));
        }
        assert_eq!(UrpfMode::from_name("Strict"), None);
        let t = UrpfTable::new([UrpfPolicy::OFF; 3]);
        let strict = UrpfPolicy { mode: UrpfMode::Strict, allow_default: true };
        assert!(t.set(2, strict));
        assert!(!t.set(3, strict));
        assert_eq!(t.get(2), strict);
        assert_eq!(t.get(0), UrpfPolicy::OFF);
        assert_eq!(t.raw(99), 0, "out of range reads as off");
    }
}
