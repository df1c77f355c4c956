//! corridor.v1.ApplyRequest read whole: every route's prefix as its key (`table::Key`) and
//! store sort key, its node and its intent (kind and next hops) as an index into the
//! distinct ones. What is wrong with a route here makes the batch `Invalid`; the caller then
//! reads it the slow way to name every fault (that path is the authority on messages).
//!
//! A full table is read here about 100 000 routes at a time, so a route's cost counts: its
//! next hops are read only when their bytes differ from the route before's (nearly every
//! route repeats them), its prefix is never text (the controller's tables take its key;
//! writing the text of each was about a tenth of the reader), its sort key is inline, and
//! the duplicate check is a compare while keys ascend (as a table is sent), then hashes a
//! fixed-size key with foldhash (seeded per process, so a client cannot aim collisions at
//! it). Reading every hop again, SipHash over
//! slices and two allocations a route took the reader from about 400 to 520 ns a route.

use crate::table::{self, Key as PrefixKey};
use crate::wire::{Malformed, Reader, Value};
use foldhash::quality::RandomState;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

pub const MAX_ROUTES: usize = 100_000;
pub const MAX_NEXT_HOPS: usize = 256;
const FORWARD: i32 = 1;
const LOCAL: i32 = 4; // the largest RouteKind

/// A next hop as sent: checked by the caller once per distinct intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NextHop<'a> {
    pub gateway: &'a [u8],
    pub port: &'a str,
    pub vlan: u32,
    pub weight: u32,
}

/// A route kind with its next hops in the order sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Intent<'a> {
    pub kind: i32,
    pub next_hops: Vec<NextHop<'a>>,
}

/// The longest sort key: family, 16 address bytes, length.
const KEY_MAX: usize = 18;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Index into `Batch::nodes`.
    pub node: usize,
    /// Index into `Batch::intents`.
    pub intent: usize,
    /// The store's key (`sort_key`): family (4 or 16), address bytes, length.
    key: [u8; KEY_MAX],
    key_len: u8,
}

impl Route {
    /// The store's key: family (4 or 16), address bytes, length.
    pub fn sort_key(&self) -> &[u8] {
        &self.key[..usize::from(self.key_len)]
    }

    /// Its identity in the batch (`route_key`).
    fn identity(&self) -> Key {
        // The sort key is family, address, length: route_key of its middle and its end.
        let key = self.sort_key();
        route_key(self.node, &key[1..key.len() - 1], u32::from(key[key.len() - 1]))
    }

    /// The prefix's key in the controller's tables.
    pub fn prefix_key(&self) -> PrefixKey {
        // `sort_key` undone: family, address, length from octet 0.
        let head = u128::from_be_bytes(self.key[..16].try_into().unwrap_or_default());
        if self.key[0] == 4 {
            PrefixKey::V4((head >> 88) as u32, self.key[5])
        } else {
            PrefixKey::V6(head << 8 | u128::from(self.key[16]), self.key[17])
        }
    }
}

#[derive(Debug, Default)]
pub struct Batch<'a> {
    pub nodes: Vec<&'a str>,
    pub intents: Vec<Intent<'a>>,
    pub routes: Vec<Route>,
}

impl Batch<'_> {
    /// The canonical text of `route`'s prefix, "198.18.0.0/15" (made when asked).
    pub fn prefix(&self, route: &Route) -> String {
        let mut out = Vec::with_capacity(48);
        table::write_key(&mut out, &route.prefix_key());
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A route's identity in the batch, fixed-size for a cheap hash: the address (IPv4 in the
/// low 32 bits) and node << 9 | IPv6 << 8 | length.
type Key = (u128, u32);

fn route_key(node: usize, address: &[u8], length: u32) -> Key {
    let v6 = u32::from(address.len() == 16);
    (address_bits(address), (node as u32) << 9 | v6 << 8 | length)
}

/// A 4- or 16-byte address as a number (0 for any other length: `is_prefix` refused it).
/// Copied by a constant size: a copy of `address.len()` octets into a buffer was a call to
/// memcpy, and reading the buffer back whole a store-forwarding stall.
#[inline(always)]
fn address_bits(address: &[u8]) -> u128 {
    if let Ok(a) = <[u8; 4]>::try_from(address) {
        u128::from(u32::from_be_bytes(a))
    } else if let Ok(a) = <[u8; 16]>::try_from(address) {
        u128::from_be_bytes(a)
    } else {
        0
    }
}

/// The store's sort key of a prefix (`sort_key`): family, address bytes, length. Made as
/// two numbers and written whole, for the reason `address_bits` gives.
#[inline(always)]
fn sort_key(address: &[u8], length: u32) -> ([u8; KEY_MAX], u8) {
    let bits = address_bits(address);
    let mut key = [0u8; KEY_MAX];
    let (head, tail): (u128, u16) = if address.len() == 4 {
        (4 << 120 | bits << 88 | u128::from(length as u8) << 80, 0)
    } else {
        (16 << 120 | bits >> 8, (bits as u16) << 8 | u16::from(length as u8))
    };
    key[..16].copy_from_slice(&head.to_be_bytes());
    key[16..].copy_from_slice(&tail.to_be_bytes());
    (key, address.len() as u8 + 2)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Not an ApplyRequest at all.
    Malformed(Malformed),
    /// A well-formed request with something wrong in it.
    Invalid,
}

impl From<Malformed> for Refused {
    fn from(m: Malformed) -> Self {
        Refused::Malformed(m)
    }
}

#[derive(Default)]
struct RouteIn<'a> {
    node: &'a str,
    address: &'a [u8],
    length: u32,
    kind: i32,
    /// The next hops' fields as sent, read only when they differ from the route before's.
    raw_hops: Vec<&'a [u8]>,
    /// The next hops' fields whole, tags and lengths included, when nothing else lies
    /// between them (as every encoder writes them): equal bytes are equal next hops, found
    /// with one compare instead of one per hop.
    hops_span: Option<&'a [u8]>,
}

fn string(bytes: &[u8]) -> Result<&str, Malformed> {
    std::str::from_utf8(bytes).map_err(|_| Malformed("a string field is not UTF-8"))
}

/// Protobuf's uint32 from a varint: its low 32 bits; an enum: the same as int32.
fn uint32(v: u64) -> u32 {
    v as u32
}

fn read_prefix<'a>(bytes: &'a [u8], route: &mut RouteIn<'a>) -> Result<(), Malformed> {
    let mut r = Reader::new(bytes);
    while let Some((field, value)) = r.next()? {
        match (field, value) {
            (1, Value::Len(b)) => route.address = b,
            (2, Value::Varint(v)) => route.length = uint32(v),
            _ => {} // unknown, or a known number with another wire type: unknown to protobuf too
        }
    }
    Ok(())
}

fn read_next_hop(bytes: &[u8]) -> Result<NextHop<'_>, Malformed> {
    let mut hop = NextHop { gateway: b"", port: "", vlan: 0, weight: 0 };
    let mut r = Reader::new(bytes);
    while let Some((field, value)) = r.next()? {
        match (field, value) {
            (1, Value::Len(b)) => hop.gateway = b,
            (2, Value::Len(b)) => hop.port = string(b)?,
            (3, Value::Varint(v)) => hop.vlan = uint32(v),
            (4, Value::Varint(v)) => hop.weight = uint32(v),
            _ => {}
        }
    }
    Ok(hop)
}

/// Reads one route into `route`, whose next-hop list is reused from route to route; the
/// next hops are kept as bytes (`next_hops` reads them).
fn read_route<'a>(bytes: &'a [u8], route: &mut RouteIn<'a>) -> Result<(), Malformed> {
    route.node = "";
    route.address = b"";
    route.length = 0;
    route.kind = 0;
    route.raw_hops.clear();
    let mut r = Reader::new(bytes);
    // Where the next hops' fields start and end, and whether another field came between.
    let (mut first, mut end, mut apart) = (None, 0, false);
    loop {
        let at = bytes.len() - r.rest().len();
        let Some((field, value)) = r.next()? else { break };
        match (field, value) {
            (1, Value::Len(b)) => route.node = string(b)?,
            (2, Value::Len(b)) => read_prefix(b, route)?, // merged, as protobuf does
            (3, Value::Varint(v)) => route.kind = uint32(v) as i32,
            (4, Value::Len(b)) => {
                route.raw_hops.push(b);
                apart |= first.is_some() && end != at;
                first.get_or_insert(at);
                end = bytes.len() - r.rest().len();
            }
            _ => {}
        }
    }
    route.hops_span = match first {
        Some(start) if !apart => bytes.get(start..end),
        _ => None,
    };
    Ok(())
}

/// Whether two short byte strings are equal, compared eight octets at a time in line: the
/// next hops of nearly every route are compared with the route before's, and a call to
/// memcmp per compare was a fifth of the reader's time (and iterators zipped over chunks,
/// whose constructor stayed a call, a tenth).
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let word = |c: &[u8], i: usize| c.get(i..i + 8).and_then(|w| w.try_into().ok()).map(u64::from_ne_bytes);
    let mut i = 0;
    while i + 8 <= a.len() {
        if word(a, i) != word(b, i) {
            return false;
        }
        i += 8;
    }
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether `route`'s kind and next hops are those of the route before (`last`).
#[inline(always)]
fn same_intent(last: &LastIntent<'_>, route: &RouteIn<'_>) -> bool {
    if last.kind != route.kind {
        return false;
    }
    match (last.span, route.hops_span) {
        (Some(a), Some(b)) => same_bytes(a, b),
        _ => last.raw.len() == route.raw_hops.len() && last.raw.iter().zip(&route.raw_hops).all(|(a, b)| same_bytes(a, b)),
    }
}

/// The kind and next hops of the route before, as sent, and its intent's index.
struct LastIntent<'a> {
    kind: i32,
    raw: Vec<&'a [u8]>,
    span: Option<&'a [u8]>,
    index: usize,
}

/// The next hops of `route`, read.
fn next_hops<'a>(route: &RouteIn<'a>) -> Result<Vec<NextHop<'a>>, Malformed> {
    route.raw_hops.iter().map(|b| read_next_hop(b)).collect()
}

/// True when `address`/`length` is a prefix: 4 or 16 bytes, length within, no host bits.
pub fn is_prefix(address: &[u8], length: u32) -> bool {
    let bits = address.len() * 8;
    if !(bits == 32 || bits == 128) || length as usize > bits {
        return false;
    }
    let length = length as usize;
    address.iter().enumerate().all(|(i, &byte)| {
        let first = i * 8; // bit index of this byte's first bit
        if first + 8 <= length {
            true
        } else if first >= length {
            byte == 0
        } else {
            byte & (0xffu8 >> (length - first)) == 0
        }
    })
}

/// Reads and checks a whole ApplyRequest.
pub fn read_apply(bytes: &[u8]) -> Result<Batch<'_>, Refused> {
    // A route with a next hop is 20 bytes or more on the wire: room for most batches without
    // growing, never more than MAX_ROUTES' worth.
    let expect = (bytes.len() / 20).min(MAX_ROUTES);
    let mut batch = Batch { routes: Vec::with_capacity(expect), ..Batch::default() };
    let mut nodes: HashMap<&str, usize, RandomState> = HashMap::default();
    let mut intents: HashMap<Intent<'_>, usize, RandomState> = HashMap::default();
    // Keys twice: a batch whose keys only ascend (a table sent in order, as tables are)
    // cannot hold one twice, so keys are hashed into `seen` only from the first that does
    // not (and every key before it then). Hashing every key was a seventh of the reader.
    let mut seen: HashSet<Key, RandomState> = HashSet::default();
    let mut last_key: Option<Key> = None;
    let mut ascending = true;
    let mut r = Reader::new(bytes);
    let mut invalid = false;
    let mut route = RouteIn::default();
    // The node and intent of the route before: most routes share both with it, and
    // comparing is cheaper than hashing (a node name, every next hop) route by route. The
    // next hops are compared as the bytes sent, and read only when they differ: the same
    // bytes read the same, and reading them was most of a route's cost.
    let mut last_node: Option<(&str, usize)> = None;
    let mut last_intent: Option<LastIntent<'_>> = None;
    while let Some((field, value)) = r.next()? {
        let Value::Len(b) = value else { continue };
        if field != 1 {
            continue;
        }
        read_route(b, &mut route)?;
        let same = last_intent.as_ref().filter(|last| same_intent(last, &route)).map(|l| l.index);
        if batch.routes.len() == MAX_ROUTES || invalid {
            invalid = true; // still read on: a malformed message is reported as that
            if same.is_none() {
                next_hops(&route)?;
            }
            continue;
        }
        let hops = route.raw_hops.len();
        let kind_ok = match route.kind {
            FORWARD => (1..=MAX_NEXT_HOPS).contains(&hops),
            k => (FORWARD + 1..=LOCAL).contains(&k) && hops == 0,
        };
        if !kind_ok || !is_prefix(route.address, route.length) {
            invalid = true;
            if same.is_none() {
                next_hops(&route)?;
            }
            continue;
        }
        let node = match last_node {
            Some((name, index)) if same_bytes(name.as_bytes(), route.node.as_bytes()) => index,
            _ => {
                let index = *nodes.entry(route.node).or_insert_with(|| {
                    batch.nodes.push(route.node);
                    batch.nodes.len() - 1
                });
                last_node = Some((route.node, index));
                index
            }
        };
        let key = route_key(node, route.address, route.length);
        if ascending && last_key.is_none_or(|last| key > last) {
            last_key = Some(key);
        } else {
            if ascending {
                ascending = false;
                seen.reserve(expect);
                seen.extend(batch.routes.iter().map(Route::identity));
            }
            if !seen.insert(key) {
                invalid = true; // the same key twice
                continue;
            }
        }
        let intent = match same {
            Some(i) => i,
            None => {
                let intent = Intent { kind: route.kind, next_hops: next_hops(&route)? };
                let i = match intents.entry(intent) {
                    Entry::Occupied(e) => *e.get(),
                    Entry::Vacant(e) => {
                        batch.intents.push(e.key().clone());
                        *e.insert(batch.intents.len() - 1)
                    }
                };
                last_intent = Some(LastIntent { kind: route.kind, raw: route.raw_hops.clone(), span: route.hops_span, index: i });
                i
            }
        };
        let (key, key_len) = sort_key(route.address, route.length);
        batch.routes.push(Route { node, intent, key, key_len });
    }
    if invalid || batch.routes.is_empty() {
        return Err(Refused::Invalid);
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{put_bytes, put_len, put_uint};

    fn hop(gateway: &[u8], port: &str, vlan: u64, weight: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_bytes(&mut out, 1, gateway);
        put_bytes(&mut out, 2, port.as_bytes());
        put_uint(&mut out, 3, vlan);
        put_uint(&mut out, 4, weight);
        out
    }

    fn route(node: &str, address: &[u8], length: u64, kind: u64, hops: &[Vec<u8>]) -> Vec<u8> {
        let mut prefix = Vec::new();
        put_bytes(&mut prefix, 1, address);
        put_uint(&mut prefix, 2, length);
        let mut out = Vec::new();
        put_bytes(&mut out, 1, node.as_bytes());
        put_len(&mut out, 2, &prefix);
        put_uint(&mut out, 3, kind);
        for h in hops {
            put_len(&mut out, 4, h);
        }
        out
    }

    fn request(routes: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in routes {
            put_len(&mut out, 1, r);
        }
        out
    }

    /// The sort key made as two numbers is the family, the address bytes and the length
    /// laid end to end, for addresses of both families and every length.
    #[test]
    fn sort_keys_are_family_address_length() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..2000u32 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let bytes = (u128::from(seed) << 64 | u128::from(seed.rotate_left(17))).to_be_bytes();
            let address = if i % 2 == 0 { &bytes[..4] } else { &bytes[..] };
            let length = i % (address.len() as u32 * 8 + 1);
            let mut want = vec![address.len() as u8];
            want.extend_from_slice(address);
            want.push(length as u8);
            let (key, len) = sort_key(address, length);
            assert_eq!(&key[..usize::from(len)], &want[..], "{address:?}/{length}");
            let route = Route { node: 0, intent: 0, key, key_len: len };
            assert_eq!(Some(route.prefix_key()), table::key_of(address, length), "{address:?}/{length}");
            assert_eq!(route_key(0, address, length).0.to_be_bytes()[16 - address.len()..], *address);
        }
    }

    #[test]
    fn routes_share_nodes_and_intents() {
        let a = hop(&[198, 18, 0, 2], "p0", 0, 1);
        let b = hop(&[198, 18, 0, 3], "p0", 7, 2);
        let bytes = request(&[
            route("", &[198, 18, 0, 0], 15, 1, &[a.clone(), b.clone()]),
            route("", &[0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 32, 1, &[a.clone(), b]),
            route("n1", &[198, 18, 0, 0], 15, 2, &[]),
            route("", &[10, 0, 0, 0], 8, 1, &[a]),
        ]);
        let batch = read_apply(&bytes).unwrap();
        assert_eq!(batch.nodes, ["", "n1"]);
        assert_eq!(batch.intents.len(), 3);
        assert_eq!(batch.intents[0].next_hops[1].vlan, 7);
        assert_eq!(batch.intents[1], Intent { kind: 2, next_hops: vec![] });
        let r: Vec<_> = batch.routes.iter().map(|r| (r.node, batch.prefix(r), r.intent)).collect();
        let r: Vec<_> = r.iter().map(|(n, p, i)| (*n, p.as_str(), *i)).collect();
        assert_eq!(r, [(0, "198.18.0.0/15", 0), (0, "2001:db8::/32", 0), (1, "198.18.0.0/15", 1), (0, "10.0.0.0/8", 2)]);
        assert_eq!(batch.routes[0].sort_key(), [4, 198, 18, 0, 0, 15]);
        assert_eq!(batch.routes[1].sort_key(), [16, 0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32]);
    }

    /// Next hops compared with the route before's as one span of bytes: the same hops
    /// sent with a field between them, or with a length written in two octets, are the
    /// same intent; hops that differ in one octet, or in how the octets split between two
    /// hops, are not.
    #[test]
    fn next_hops_are_the_same_whatever_their_bytes() {
        let a = hop(&[198, 18, 0, 2], "p0", 0, 1);
        let b = hop(&[198, 18, 0, 3], "p0", 7, 2);
        let (ab, ab_apart) = (route("", &[198, 18, 0, 0], 24, 1, &[a.clone(), b.clone()]), {
            // The kind (field 3) sent between the two hops.
            let mut prefix = Vec::new();
            put_bytes(&mut prefix, 1, &[198, 18, 1, 0]);
            put_uint(&mut prefix, 2, 24);
            let mut r = Vec::new();
            put_len(&mut r, 2, &prefix);
            put_len(&mut r, 4, &a);
            put_uint(&mut r, 3, 1);
            put_len(&mut r, 4, &b);
            r
        });
        let mut long_length = vec![0x22, 0x80 | a.len() as u8, 0x00]; // field 4, length in two octets
        long_length.extend(&a);
        let mut ab_long = route("", &[198, 18, 2, 0], 24, 1, &[]);
        ab_long.extend(&long_length);
        put_len(&mut ab_long, 4, &b);
        let other = hop(&[198, 18, 0, 4], "p0", 7, 2);
        // "p0" and "p01" against "p00" and "p1": the same octets split otherwise.
        let (p0, p01) = (hop(&[198, 18, 0, 2], "p0", 0, 1), hop(&[198, 18, 0, 2], "p01", 0, 1));
        let (p00, p1) = (hop(&[198, 18, 0, 2], "p00", 0, 1), hop(&[198, 18, 0, 2], "p1", 0, 1));
        let bytes = request(&[
            ab.clone(),
            ab_apart,
            ab_long,
            route("", &[198, 18, 3, 0], 24, 1, &[a.clone(), other]),
            route("", &[198, 18, 4, 0], 24, 1, &[a.clone(), b.clone()]),
            route("", &[198, 18, 5, 0], 24, 1, &[p0, p01]),
            route("", &[198, 18, 6, 0], 24, 1, &[p00, p1]),
        ]);
        let batch = read_apply(&bytes).unwrap();
        let intents: Vec<_> = batch.routes.iter().map(|r| r.intent).collect();
        assert_eq!(intents, [0, 0, 0, 1, 0, 2, 3]);
        assert_eq!(batch.intents.len(), 4);
    }

    #[test]
    fn anything_wrong_is_invalid() {
        let a = hop(&[198, 18, 0, 2], "p0", 0, 1);
        for bad in [
            vec![],                                                             // no routes
            vec![route("", &[198, 18, 0, 1], 24, 1, std::slice::from_ref(&a))], // host bits
            vec![route("", &[198, 18, 0, 0], 33, 1, std::slice::from_ref(&a))], // too long
            vec![route("", &[198, 18, 0], 24, 1, std::slice::from_ref(&a))],    // 3 bytes
            vec![route("", &[198, 18, 0, 0], 24, 0, std::slice::from_ref(&a))], // kind unset
            vec![route("", &[198, 18, 0, 0], 24, 5, &[])],                      // no such kind
            vec![route("", &[198, 18, 0, 0], 24, 1, &[])],                      // FORWARD, no hops
            vec![route("", &[198, 18, 0, 0], 24, 2, std::slice::from_ref(&a))], // BLACKHOLE with hops
            vec![route("", &[198, 18, 0, 0], 24, 1, std::slice::from_ref(&a)), route("", &[198, 18, 0, 0], 24, 2, &[])],
            vec![route("", &[198, 18, 0, 0], 24, 1, &vec![a.clone(); 257])],
        ] {
            assert_eq!(read_apply(&request(&bad)).err(), Some(Refused::Invalid), "{bad:?}");
        }
        let too_many: Vec<_> = (0..=MAX_ROUTES as u32).map(|i| route("", &(i << 8).to_be_bytes(), 24, 2, &[])).collect();
        assert_eq!(read_apply(&request(&too_many)).err(), Some(Refused::Invalid));
        assert!(read_apply(&request(&too_many[..MAX_ROUTES])).is_ok());
    }

    proptest::proptest! {
        /// Whatever the order (ascending, as tables come, descending, shuffled), a batch
        /// is refused exactly when a node has a prefix twice: the check that compares
        /// while keys ascend and hashes from the first that does not misses none.
        #[test]
        fn a_key_twice_is_invalid_in_any_order(
            keys in proptest::collection::vec((0usize..2, 0u32..6, 0u32..3, proptest::bool::ANY), 1..40),
            order in 0u8..3,
            seed in proptest::prelude::any::<u64>(),
        ) {
            let mut keys = keys;
            match order {
                0 => keys.sort(),
                1 => keys.sort_by(|a, b| b.cmp(a)),
                _ => {
                    let mut x = seed | 1;
                    for i in (1..keys.len()).rev() {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        keys.swap(i, (x % (i as u64 + 1)) as usize);
                    }
                }
            }
            let routes: Vec<_> = keys
                .iter()
                .map(|&(node, a, length, v6)| {
                    let length = 8 * (length + 1); // /8, /16, /24: no host bits
                    let address = if v6 {
                        (u128::from(a) << 120).to_be_bytes().to_vec()
                    } else {
                        (a << 24).to_be_bytes().to_vec()
                    };
                    route(["", "n1"][node], &address, u64::from(length), 2, &[])
                })
                .collect();
            let distinct: std::collections::HashSet<_> = keys.iter().collect();
            let bytes = request(&routes);
            let read = read_apply(&bytes);
            proptest::prop_assert_eq!(read.is_ok(), distinct.len() == keys.len(), "{:?}", keys);
            if let Ok(batch) = read {
                proptest::prop_assert_eq!(batch.routes.len(), keys.len());
            }
        }
    }

    #[test]
    fn next_hops_alike_in_meaning_share_an_intent_whatever_their_bytes() {
        let a = hop(&[198, 18, 0, 2], "p0", 0, 1);
        // The same next hop with its fields in another order: other bytes, same meaning.
        let mut reordered = Vec::new();
        put_uint(&mut reordered, 4, 1);
        put_bytes(&mut reordered, 2, b"p0");
        put_bytes(&mut reordered, 1, &[198, 18, 0, 2]);
        assert_ne!(a, reordered);
        let other = hop(&[198, 18, 0, 3], "p0", 0, 1);
        let bytes = request(&[
            route("", &[10, 0, 0, 0], 8, 1, std::slice::from_ref(&a)),
            route("", &[10, 1, 0, 0], 16, 1, std::slice::from_ref(&a)),
            route("", &[10, 2, 0, 0], 16, 1, std::slice::from_ref(&reordered)),
            route("", &[10, 3, 0, 0], 16, 1, std::slice::from_ref(&other)),
            route("", &[10, 4, 0, 0], 16, 1, std::slice::from_ref(&a)),
            route("", &[10, 5, 0, 0], 16, 3, &[]),
        ]);
        let batch = read_apply(&bytes).unwrap();
        let intents: Vec<_> = batch.routes.iter().map(|r| r.intent).collect();
        assert_eq!(intents, [0, 0, 0, 1, 0, 2]);
        assert_eq!(batch.intents[1].next_hops[0].gateway, [198, 18, 0, 3]);
    }

    #[test]
    fn a_damaged_next_hop_is_malformed_wherever_it_is() {
        let a = hop(&[198, 18, 0, 2], "p0", 0, 1);
        let damaged = vec![0x18]; // field 3, a varint with no bytes
        let good = route("", &[10, 0, 0, 0], 8, 1, std::slice::from_ref(&a));
        for routes in [
            vec![good.clone(), route("", &[10, 1, 0, 0], 16, 1, std::slice::from_ref(&damaged))],
            // after a route that makes the batch invalid, and in an invalid route itself
            vec![
                route("", &[10, 0, 0, 1], 8, 1, std::slice::from_ref(&a)),
                route("", &[10, 1, 0, 0], 16, 1, std::slice::from_ref(&damaged)),
            ],
            vec![good.clone(), route("", &[10, 1, 0, 1], 16, 1, &[a.clone(), damaged.clone()])],
            vec![good, route("", &[10, 1, 0, 0], 16, 2, std::slice::from_ref(&damaged))],
        ] {
            assert!(matches!(read_apply(&request(&routes)), Err(Refused::Malformed(_))), "{routes:?}");
        }
    }

    #[test]
    fn not_protobuf_is_malformed() {
        let mut bytes = request(&[route("", &[10, 0, 0, 0], 8, 2, &[])]);
        bytes.pop();
        assert!(matches!(read_apply(&bytes), Err(Refused::Malformed(_))));
        let bad_utf8 = request(&[route("\u{e9}", &[10, 0, 0, 0], 8, 2, &[])]);
        let mut bad_utf8 = bad_utf8.clone();
        let at = bad_utf8.iter().position(|&b| b == 0xc3).unwrap();
        bad_utf8[at] = 0xff;
        assert!(matches!(read_apply(&bad_utf8), Err(Refused::Malformed(_))));
    }

    #[test]
    fn is_prefix_against_a_bit_by_bit_reference() {
        let reference = |address: &[u8], length: u32| {
            let bits = address.len() as u32 * 8;
            (bits == 32 || bits == 128) && length <= bits && (length..bits).all(|b| address[(b / 8) as usize] & (0x80 >> (b % 8)) == 0)
        };
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = if seed & 1 == 0 { 4 } else { 16 };
            let mut address = vec![0u8; len];
            let keep = (seed >> 8) as usize % (len * 8 + 1);
            for (i, byte) in address.iter_mut().enumerate() {
                *byte = (seed >> (i % 8 * 8)) as u8;
                if i * 8 >= keep {
                    *byte = if seed & 2 == 0 { 0 } else { *byte };
                }
            }
            let length = (seed >> 20) as u32 % (len as u32 * 8 + 2);
            assert_eq!(is_prefix(&address, length), reference(&address, length), "{address:?}/{length}");
        }
        assert!(!is_prefix(&[1, 2, 3], 0));
    }
}
