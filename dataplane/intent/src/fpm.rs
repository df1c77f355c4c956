//! zebra's FPM stream (`dplane_fpm_nl`), the common case read in one pass. A full table
//! reaches the controller as a million FPM frames, each one netlink route message; read
//! in Python (`corridor.fpm.netlink._fast_route`) that was half of the controller's time
//! while zebra announced or withdrew a table.
//!
//! This reads only what it is sure of: a run of whole frames, each FPM version 1, type
//! netlink, holding exactly one RTM_NEWROUTE or RTM_DELROUTE that the Python fast path
//! would decode (the same attribute rules, the same refusals). At the first frame that is
//! anything else (a partial frame, a next-hop object, a damaged or unusual message) it
//! stops and says where, and the Python decoder takes that frame with its full checks,
//! counters and error reasons. So the two can only differ in speed; the property tests
//! hold them to the same output.

use crate::text::prefix_text;

const FPM_HEADER: usize = 4;
const FPM_VERSION: u8 = 1;
const FPM_TYPE_NETLINK: u8 = 1;
const NLMSG_HEADER: usize = 16;
const RTMSG: usize = 12;
const BODY: usize = NLMSG_HEADER + RTMSG;
const RTNEXTHOP: usize = 8;

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
const RTA_VIA: u16 = 18;
const RTA_NH_ID: u16 = 30;
const NLA_TYPE_MASK: u16 = 0x3FFF;

const RTN_UNSPEC: u8 = 0;
const RTN_UNICAST: u8 = 1;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// The most next hops one route may carry (`corridor.fpm.routes.MAX_NEXT_HOPS`).
pub const MAX_NEXT_HOPS: usize = 512;

/// One route as the Python fast path returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub add: bool,
    /// Canonical text, as `corridor.common.addresses.prefix_text` writes it.
    pub prefix: String,
    /// rtm_type: 1 unicast, 6 blackhole, 7 unreachable, 8 prohibit (a delete sent with
    /// RTN_UNSPEC is unicast).
    pub rtype: u8,
    pub table: u32,
    pub proto: u8,
    /// Index into `Scan::hop_sets`; None when the route has no next hops.
    pub hops: Option<usize>,
    pub nexthop_id: Option<u32>,
}

/// What `scan` read: the routes of a run of frames, the distinct next-hop sets they name
/// (a full table names a few sets a million times), and where it stopped.
#[derive(Debug, Default)]
pub struct Scan {
    pub routes: Vec<Route>,
    /// Each set encoded: per hop a size byte (0, 4 or 16), the gateway's bytes, the
    /// ifindex (u32, little-endian) and the weight (u16, little-endian).
    pub hop_sets: Vec<Vec<u8>>,
    /// Bytes of `data` consumed: every frame before this offset is in `routes`.
    pub consumed: usize,
}

/// Reads whole frames from the start of `data` until the first one that is not a route the
/// fast path takes; see the module header.
pub fn scan(data: &[u8]) -> Scan {
    let mut out = Scan::default();
    let mut sets: Vec<(Vec<u8>, usize)> = Vec::new(); // few distinct sets: a scan beats hashing
    let mut hops = Vec::new();
    let mut offset = 0;
    while data.len() - offset >= FPM_HEADER {
        let frame = &data[offset..];
        let length = usize::from(u16::from_be_bytes([frame[2], frame[3]]));
        if frame[0] != FPM_VERSION || frame[1] != FPM_TYPE_NETLINK || length < FPM_HEADER || frame.len() < length {
            break;
        }
        let message = &frame[FPM_HEADER..length];
        hops.clear();
        let Some(mut route) = route(message, &mut hops) else { break };
        if !hops.is_empty() {
            let index = match sets.iter().find(|(s, _)| *s == hops) {
                Some(&(_, i)) => i,
                None => {
                    let i = out.hop_sets.len();
                    out.hop_sets.push(hops.clone());
                    sets.push((hops.clone(), i));
                    i
                }
            };
            route.hops = Some(index);
        }
        out.routes.push(route);
        offset += length;
    }
    out.consumed = offset;
    out
}

fn u16_at(data: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([data[at], data[at + 1]])
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

/// Where an attribute's payload is: (offset, length).
type Span = (usize, usize);

/// One netlink message that fills the frame, as `_fast_route` reads it; None where that
/// returns None, and also where `_frame` would not hand the frame to it whole (more than
/// one message, or a length that does not match).
fn route(data: &[u8], hops: &mut Vec<u8>) -> Option<Route> {
    let end = data.len();
    if end < BODY || u32_at(data, 0) as usize != end {
        return None;
    }
    let kind = u16_at(data, 4);
    if kind != RTM_NEWROUTE && kind != RTM_DELROUTE {
        return None;
    }
    let add = kind == RTM_NEWROUTE;
    let (family, dst_len) = (data[NLMSG_HEADER], u32::from(data[NLMSG_HEADER + 1]));
    let (mut table, proto, rtype) = (u32::from(data[NLMSG_HEADER + 4]), data[NLMSG_HEADER + 5], data[NLMSG_HEADER + 7]);
    let size = match u16::from(family) {
        AF_INET => 4,
        AF_INET6 => 16,
        _ => return None,
    };
    if dst_len > size as u32 * 8 {
        return None;
    }
    let rtype = match rtype {
        1 | 6..=8 => rtype,
        RTN_UNSPEC if !add => RTN_UNICAST,
        _ => return None,
    };
    let unicast = rtype == RTN_UNICAST;
    let (mut dst, mut gateway, mut oif, mut table_attr, mut nh_id, mut via, mut multipath) =
        (None::<Span>, None::<Span>, None::<Span>, None::<Span>, None::<Span>, None::<Span>, None::<Span>);
    let mut offset = BODY;
    while offset + 4 <= end {
        let length = usize::from(u16_at(data, offset));
        if length < 4 || offset + length > end {
            return None;
        }
        let attribute = u16_at(data, offset + 2) & NLA_TYPE_MASK;
        let payload = length - 4;
        let span = Some((offset + 4, payload));
        match attribute {
            RTA_DST | RTA_GATEWAY | RTA_PREFSRC => {
                if payload != size {
                    return None;
                }
                match attribute {
                    RTA_DST => dst = dst.or(span),
                    RTA_GATEWAY => gateway = gateway.or(span),
                    _ => {}
                }
            }
            RTA_OIF | RTA_PRIORITY | RTA_TABLE | RTA_NH_ID => {
                if payload != 4 {
                    return None;
                }
                match attribute {
                    RTA_OIF => oif = oif.or(span),
                    RTA_TABLE => table_attr = table_attr.or(span),
                    RTA_NH_ID => nh_id = nh_id.or(span),
                    _ => {}
                }
            }
            RTA_VIA | RTA_MULTIPATH => {
                let slot = if attribute == RTA_VIA { &mut via } else { &mut multipath };
                if slot.is_some() || !unicast {
                    return None; // only the first is read, and only for unicast (see Python)
                }
                *slot = span;
            }
            _ => return None, // RTA_ENCAP, metrics, anything rarer: pyroute2 decides
        }
        offset += (length + 3) & !3;
    }
    if offset < end {
        return None;
    }
    let zero = [0u8; 16];
    let address = dst.map_or(&zero[..size], |(at, _)| &data[at..at + size]);
    let host_bits = (dst_len as usize..size * 8).any(|bit| address[bit / 8] & (0x80 >> (bit % 8)) != 0);
    if host_bits {
        return None;
    }
    if let Some((at, _)) = table_attr {
        table = u32_at(data, at);
    }
    let nexthop_id = nh_id.map(|(at, _)| u32_at(data, at));
    if unicast {
        if let Some((start, length)) = multipath {
            if !multipath_hops(data, start, start + length, size, hops) {
                return None;
            }
        } else if gateway.is_some() || via.is_some() || oif.is_some() {
            let ifindex = oif.map_or(0, |(at, _)| u32_at(data, at));
            if !push_hop(data, gateway, via, ifindex, 1, hops) {
                return None;
            }
        }
        if add && hops.is_empty() && nexthop_id.is_none() {
            return None;
        }
    }
    Some(Route { add, prefix: prefix_text(address, dst_len), rtype, table, proto, hops: None, nexthop_id })
}

/// `_fast_hop`: the hop appended to `out`; false where that returns None.
fn push_hop(data: &[u8], gateway: Option<Span>, via: Option<Span>, ifindex: u32, weight: u16, out: &mut Vec<u8>) -> bool {
    let address = if let Some((start, length)) = via {
        if length < 2 {
            return false;
        }
        let via_size = match u16_at(data, start) {
            AF_INET => 4,
            AF_INET6 => 16,
            _ => return false,
        };
        if length != 2 + via_size {
            return false;
        }
        &data[start + 2..start + length]
    } else if let Some((start, length)) = gateway {
        &data[start..start + length]
    } else {
        &[][..]
    };
    out.push(address.len() as u8);
    out.extend_from_slice(address);
    out.extend_from_slice(&ifindex.to_le_bytes());
    out.extend_from_slice(&weight.to_le_bytes());
    true
}

/// `_fast_multipath`: false where that returns None (or an empty set).
fn multipath_hops(data: &[u8], start: usize, end: usize, size: usize, out: &mut Vec<u8>) -> bool {
    let mut count = 0;
    let mut offset = start;
    while offset + RTNEXTHOP <= end {
        let length = usize::from(u16_at(data, offset));
        let weight = u16::from(data[offset + 3]) + 1;
        let ifindex = u32_at(data, offset + 4);
        if length < RTNEXTHOP || offset + length > end || count >= MAX_NEXT_HOPS {
            return false;
        }
        if i32::from_ne_bytes(ifindex.to_ne_bytes()) < 0 {
            return false; // Python reads rtnh_ifindex signed; leave the odd case to it
        }
        let (mut gateway, mut via) = (None::<Span>, None::<Span>);
        let stop = offset + length;
        let mut nested = offset + RTNEXTHOP;
        while nested + 4 <= stop {
            let nested_length = usize::from(u16_at(data, nested));
            if nested_length < 4 || nested + nested_length > stop {
                return false;
            }
            match u16_at(data, nested + 2) & NLA_TYPE_MASK {
                RTA_GATEWAY => {
                    if nested_length - 4 != size {
                        return false;
                    }
                    gateway = gateway.or(Some((nested + 4, size)));
                }
                RTA_VIA => via = via.or(Some((nested + 4, nested_length - 4))),
                _ => return false,
            }
            nested += (nested_length + 3) & !3;
        }
        if nested < stop || !push_hop(data, gateway, via, ifindex, weight, out) {
            return false;
        }
        count += 1;
        offset += (length + 3) & !3;
    }
    offset >= end && count > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(payload);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out
    }

    fn message(kind: u16, family: u8, dst_len: u8, rtype: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = attrs.concat();
        let len = (BODY + body.len()) as u32;
        let mut out = len.to_ne_bytes().to_vec();
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&[0; 10]); // flags, seq, pid
        out.extend_from_slice(&[family, dst_len, 0, 0, 254, 186, 0, rtype, 0, 0, 0, 0]);
        out.extend_from_slice(&body);
        out
    }

    fn frame(message: &[u8]) -> Vec<u8> {
        let mut out = vec![FPM_VERSION, FPM_TYPE_NETLINK];
        out.extend_from_slice(&((message.len() + FPM_HEADER) as u16).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    #[test]
    fn reads_a_run_of_routes_and_shares_their_next_hops() {
        let add = |dst: [u8; 4]| {
            frame(&message(
                RTM_NEWROUTE,
                2,
                24,
                1,
                &[nla(RTA_DST, &dst), nla(RTA_GATEWAY, &[198, 18, 0, 1]), nla(RTA_OIF, &5u32.to_ne_bytes())],
            ))
        };
        let mut data = [add([198, 18, 1, 0]), add([198, 18, 2, 0])].concat();
        data.extend_from_slice(&frame(&message(
            RTM_DELROUTE,
            10,
            32,
            0,
            &[nla(RTA_DST, &[0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])],
        )));
        let whole = data.len();
        data.extend_from_slice(&[1, 1, 0]); // the start of the next frame
        let scan = scan(&data);
        assert_eq!(scan.consumed, whole);
        assert_eq!(scan.routes.len(), 3);
        assert_eq!(scan.routes[0].prefix, "198.18.1.0/24");
        assert_eq!((scan.routes[0].hops, scan.routes[1].hops, scan.routes[2].hops), (Some(0), Some(0), None));
        assert_eq!(scan.hop_sets, vec![[vec![4, 198, 18, 0, 1], 5u32.to_le_bytes().to_vec(), 1u16.to_le_bytes().to_vec()].concat()]);
        assert_eq!((scan.routes[2].add, scan.routes[2].rtype, scan.routes[2].prefix.as_str()), (false, 1, "2001:db8::/32"));
    }

    #[test]
    fn stops_at_what_the_python_decoder_must_judge() {
        let good = frame(&message(RTM_DELROUTE, 2, 24, 0, &[nla(RTA_DST, &[198, 18, 1, 0])]));
        let cases = [
            frame(&message(RTM_DELROUTE, 2, 24, 0, &[nla(RTA_DST, &[198, 18, 1, 1])])), // host bits
            frame(&message(RTM_NEWROUTE, 2, 24, 1, &[nla(RTA_DST, &[198, 18, 1, 0])])), // no next hop
            frame(&message(RTM_NEWROUTE, 2, 24, 9, &[nla(RTA_DST, &[198, 18, 1, 0])])), // type
            frame(&message(RTM_DELROUTE, 2, 33, 0, &[])),                               // length
            frame(&message(RTM_DELROUTE, 7, 24, 0, &[])),                               // family
            frame(&message(RTM_DELROUTE, 2, 24, 0, &[nla(22, &[0; 4])])),               // RTA_ENCAP
            frame(&message(104, 2, 24, 0, &[])),                                        // next-hop object
            good[..good.len() - 3].to_vec(),                                            // partial frame
        ];
        for (i, case) in cases.iter().enumerate() {
            let data = [good.clone(), case.clone()].concat();
            let scan = scan(&data);
            assert_eq!((scan.routes.len(), scan.consumed), (1, good.len()), "case {i}");
        }
        // a frame with a version or a type other than 1
        for byte in [0, 1] {
            let mut other = good.clone();
            other[byte] = 2;
            assert_eq!(scan(&[good.clone(), other].concat()).consumed, good.len());
        }
    }
}
