//! The flow hash that picks a next-hop group's member, so that one flow keeps one path.

/// the high bits (which pick the group member) depend on every input bit.
#[inline]
pub(super) fn flow_hash(seed: u64, words: &[u64]) -> u32 {
    let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
    for &w in words {
        h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(31);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::*;
    use crate::wire::ethernet::ethertype;
    use crate::wire::{ip_protocol, ipv4};

    fn member_of(out: &Out) -> u8 {
        out.frame()[5]
    }

    fn spread(rig: &mut Rig, v6_flows: bool, group_net: u8, flows: usize) -> std::collections::HashMap<u8, usize> {
        let mut counts = std::collections::HashMap::new();
        let mk = |i: usize| {
            let (sport, dport) = ((i % 50_000) as u16 + 1024, (i / 50_000) as u16 + 80);
            if v6_flows {
                eth(
                    MAC0,
                    None,
                    ethertype::IPV6,
                    &ipv6(v6(0, (i % 7) as u16 + 1), v6(group_net as u16, 9), 64, ip_protocol::TCP, &udp(sport, dport, 20)),
                )
            } else {
                let src = [198, 18, (i % 5) as u8, 100];
                eth(MAC0, None, ethertype::IPV4, &ipv4(src, [198, 19, group_net, 9], 64, ip_protocol::UDP, &udp(sport, dport, 20)))
            }
        };
        for chunk in (0..flows).collect::<Vec<_>>().chunks(MAX_BATCH) {
            let frames: Vec<_> = chunk.iter().map(|&i| (0, mk(i))).collect();
            let again = rig.run(&frames);
            let outs = rig.run(&frames);
            for (a, b) in again.iter().zip(&outs) {
                assert_eq!(member_of(a), member_of(b), "one flow, one member");
                *counts.entry(member_of(b)).or_insert(0) += 1;
            }
        }
        counts
    }

    #[test]
    fn ecmp_spreads_flows_fairly_and_keeps_each_flow_on_one_member() {
        let mut rig = rig();
        let flows = 12_000;
        for v6_flows in [false, true] {
            for (net, members) in [(10u8, &[5u8, 6][..]), (11, &[5, 6, 7][..])] {
                let counts = spread(&mut rig, v6_flows, net, flows);
                assert_eq!(counts.len(), members.len(), "{counts:?}");
                let fair = flows / members.len();
                for m in members {
                    let got = counts[m];
                    assert!(got.abs_diff(fair) * 100 <= fair * 5, "member {m}: {got} of {flows} flows, fair {fair} (v6 {v6_flows})");
                }
            }
        }
    }

    #[test]
    fn flow_hash_ignores_what_changes_within_a_flow_and_sees_the_rest() {
        let rig = rig();
        let mut m = Meta::EMPTY;
        let hash = |f: &[u8], m: &mut Meta| {
            rig.pipeline.parse_v4(&f[14..], false, m).unwrap();
            m.flow_hash
        };
        let a = v4_frame([198, 19, 1, 5], 64);
        let h = hash(&a, &mut m);
        let other_ttl = edit_v4(a.clone(), |ip| ip[8] = 9);
        assert_eq!(hash(&other_ttl, &mut m), h, "TTL and ident are not the flow");
        let mut other_port = a.clone();
        other_port[14 + 20] ^= 1;
        assert_ne!(hash(&other_port, &mut m), h);
        // Fragments of one datagram hash alike, ports or not.
        let first = edit_v4(a.clone(), |ip| ipv4::Packet::new_unchecked(ip).set_flags_and_offset(false, true, 0));
        let later = edit_v4(other_port, |ip| ipv4::Packet::new_unchecked(ip).set_flags_and_offset(false, false, 64));
        assert_eq!(hash(&first, &mut m), hash(&later, &mut m));
    }
}
