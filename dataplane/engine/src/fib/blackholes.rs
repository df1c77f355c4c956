//! Blackhole routes (RTBH) as the workers count them: a blackhole route added while a
//! counter slot is free has one, and a frame dropped by a blackhole route is counted in the
//! slot of the route its lookup matched (found here by that route's length), or in
//! `UNCOUNTED_SLOT` for a route that came when every slot was taken. The table holds the
//! counted routes only, so a table of a million blackholes (a FIB-only node) costs at most
//! `BLACKHOLE_SLOTS` entries here.
//!
//! The second lookup runs only for frames already dropped, so it costs forwarding nothing.
//! The FIB's writer merges each batch's changes to the counted routes into the table
//! (sorted arrays per prefix length, longest first: RTBH tables are mostly /32s and
//! /128s, so most lookups are one binary search) and publishes it like the FIB's other
//! read-mostly objects.

use super::{Family, Prefix};

/// Blackhole routes counted one by one; the rest count in `UNCOUNTED_SLOT` (and the
/// engine's `blackhole` drop reason counts them all). Each worker preallocates a 64-bit
/// counter per slot: 512 KiB.
pub const BLACKHOLE_SLOTS: u32 = 65_536;
/// The slot of the blackhole routes beyond `BLACKHOLE_SLOTS - 1`.
pub const UNCOUNTED_SLOT: u32 = BLACKHOLE_SLOTS - 1;

/// The blackhole routes of one prefix length: (length, (network, slot) sorted by network).
type Length<K> = (u32, Box<[(K, u32)]>);

/// Every blackhole route's slot, by family and prefix length.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BlackholeTable {
    /// Longest first.
    v4: Vec<Length<u32>>,
    v6: Vec<Length<u128>>,
}

impl BlackholeTable {
    pub fn build<'a>(routes: impl IntoIterator<Item = (&'a Prefix, u32)>) -> BlackholeTable {
        let mut v4: Vec<(u32, u32, u32)> = Vec::new();
        let mut v6: Vec<(u32, u128, u32)> = Vec::new();
        for (p, slot) in routes {
            match p.family() {
                Family::V4 => v4.push((p.len() as u32, p.addr_v4(), slot)),
                Family::V6 => v6.push((p.len() as u32, p.addr_v6(), slot)),
            }
        }
        v4.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        v6.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        BlackholeTable {
            v4: v4.chunk_by(|a, b| a.0 == b.0).map(|g| (g[0].0, g.iter().map(|&(_, k, s)| (k, s)).collect())).collect(),
            v6: v6.chunk_by(|a, b| a.0 == b.0).map(|g| (g[0].0, g.iter().map(|&(_, k, s)| (k, s)).collect())).collect(),
        }
    }

    /// This table with `changes` made ((prefix, Some(slot)): set; (prefix, None): gone; a
    /// prefix at most once), by merging them into the sorted arrays: a batch costs its own
    /// sort and one pass over the table, not a sort of every blackhole route (a table of
    /// them comes in as many batches). Equal to `build` of the resulting routes.
    pub fn changed(&self, changes: &[(Prefix, Option<u32>)]) -> BlackholeTable {
        let mut v4: Vec<(u32, u32, Option<u32>)> = Vec::new();
        let mut v6: Vec<(u32, u128, Option<u32>)> = Vec::new();
        for (p, slot) in changes {
            match p.family() {
                Family::V4 => v4.push((p.len() as u32, p.addr_v4(), *slot)),
                Family::V6 => v6.push((p.len() as u32, p.addr_v6(), *slot)),
            }
        }
        BlackholeTable { v4: merged(&self.v4, v4), v6: merged(&self.v6, v6) }
    }

    /// The slot of the longest blackhole prefix holding `dst`.
    #[inline]
    pub fn slot_v4(&self, dst: u32) -> Option<u32> {
        self.v4.iter().find_map(|(len, nets)| {
            let key = if *len == 0 { 0 } else { dst & (u32::MAX << (32 - len)) };
            nets.binary_search_by_key(&key, |e| e.0).ok().and_then(|i| nets.get(i)).map(|e| e.1)
        })
    }

    /// The slot of the blackhole route `len` bits long that holds `dst`, if the table has
    /// it (the FIB's readers ask for the route their lookup matched).
    #[inline]
    pub fn slot_at_v4(&self, dst: u32, len: u32) -> Option<u32> {
        let key = if len == 0 { 0 } else { dst & (u32::MAX << (32 - len.min(32))) };
        slot_at(&self.v4, key, len)
    }

    #[inline]
    pub fn slot_at_v6(&self, dst: u128, len: u32) -> Option<u32> {
        let key = if len == 0 { 0 } else { dst & (u128::MAX << (128 - len.min(128))) };
        slot_at(&self.v6, key, len)
    }

    #[inline]
    pub fn slot_v6(&self, dst: u128) -> Option<u32> {
        self.v6.iter().find_map(|(len, nets)| {
            let key = if *len == 0 { 0 } else { dst & (u128::MAX << (128 - len)) };
            nets.binary_search_by_key(&key, |e| e.0).ok().and_then(|i| nets.get(i)).map(|e| e.1)
        })
    }
}

/// The slot of network `key` among the routes `len` bits long (lengths longest first).
#[inline]
fn slot_at<K: Copy + Ord>(table: &[Length<K>], key: K, len: u32) -> Option<u32> {
    let (_, nets) = table.iter().find(|(l, _)| *l == len)?;
    nets.binary_search_by_key(&key, |e| e.0).ok().and_then(|i| nets.get(i)).map(|e| e.1)
}

/// `old` (longest first, networks sorted) with `changes` (length, network, slot or None).
fn merged<K: Copy + Ord>(old: &[Length<K>], mut changes: Vec<(u32, K, Option<u32>)>) -> Vec<Length<K>> {
    changes.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut out: Vec<Length<K>> = Vec::with_capacity(old.len() + 1);
    let (mut o, mut c) = (0, 0);
    while o < old.len() || c < changes.len() {
        // The next length, longest first, from either side.
        let len = match (old.get(o), changes.get(c)) {
            (Some(a), Some(b)) => a.0.max(b.0),
            (Some(a), None) => a.0,
            (None, Some(b)) => b.0,
            (None, None) => break,
        };
        let nets: &[(K, u32)] = match old.get(o) {
            Some(a) if a.0 == len => {
                o += 1;
                &a.1
            }
            _ => &[],
        };
        let first = c;
        while changes.get(c).is_some_and(|x| x.0 == len) {
            c += 1;
        }
        let batch = &changes[first..c];
        let mut next: Vec<(K, u32)> = Vec::with_capacity(nets.len() + batch.len());
        let (mut i, mut j) = (0, 0);
        while i < nets.len() || j < batch.len() {
            match (nets.get(i), batch.get(j)) {
                (Some(n), Some(b)) if n.0 < b.1 => {
                    next.push(*n);
                    i += 1;
                }
                (Some(n), Some(b)) if n.0 == b.1 => {
                    i += 1; // replaced or removed by the change
                }
                (Some(n), None) => {
                    next.push(*n);
                    i += 1;
                }
                (_, Some(b)) => {
                    if let Some(slot) = b.2 {
                        next.push((b.1, slot));
                    }
                    j += 1;
                }
                (None, None) => break,
            }
        }
        if !next.is_empty() {
            out.push((len, next.into_boxed_slice()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a linear scan for the longest blackhole prefix holding the address.
        #[test]
        fn agrees_with_a_linear_scan(
            routes in proptest::collection::vec((any::<u32>(), 0u8..=32), 0..60),
            asks in proptest::collection::vec(any::<u32>(), 1..100),
        ) {
            let mut prefixes: Vec<Prefix> = routes.iter().map(|&(a, l)| Prefix::v4(a, l).network()).collect();
            prefixes.sort_by_key(|p| (p.len(), p.addr_v4()));
            prefixes.dedup();
            let t = BlackholeTable::build(prefixes.iter().enumerate().map(|(i, p)| (p, i as u32)));
            let holds = |p: &Prefix, a: u32| p.is_empty() || (a ^ p.addr_v4()) >> (32 - p.len() as u32) == 0;
            // Half the questions inside a route.
            for (j, a) in asks.into_iter().enumerate() {
                let a = match prefixes.get(j % (prefixes.len() * 2 + 1)) { Some(p) => p.addr_v4() | (a >> p.len().min(31)), None => a };
                let want = prefixes.iter().enumerate().filter(|(_, p)| holds(p, a)).max_by_key(|(_, p)| p.len()).map(|(i, _)| i as u32);
                prop_assert_eq!(t.slot_v4(a), want);
            }
        }
    }

    proptest! {
        /// A table changed batch by batch equals the table built whole from what is left.
        #[test]
        fn changed_equals_built(
            batches in proptest::collection::vec(
                proptest::collection::vec((any::<u32>(), 0u8..=32, any::<bool>(), 0u32..1000), 0..40), 1..6),
            v6 in proptest::collection::vec((any::<u128>(), 0u8..=128), 0..20),
        ) {
            let mut routes: std::collections::HashMap<Prefix, u32> = std::collections::HashMap::new();
            let mut table = BlackholeTable::default();
            for batch in &batches {
                let mut changes: std::collections::HashMap<Prefix, Option<u32>> = std::collections::HashMap::new();
                for &(a, l, set, slot) in batch {
                    let p = Prefix::v4(a, l).network();
                    let now = if set { routes.insert(p, slot); Some(slot) } else { routes.remove(&p); None };
                    changes.insert(p, now);
                }
                let changes: Vec<_> = changes.into_iter().collect();
                table = table.changed(&changes);
                prop_assert_eq!(&table, &BlackholeTable::build(routes.iter().map(|(p, s)| (p, *s))));
            }
            let added: Vec<_> = v6.iter().map(|&(a, l)| (Prefix::v6(a, l).network(), Some(7))).collect();
            let mut added: Vec<_> = added.into_iter().collect::<std::collections::HashMap<_, _>>().into_iter().collect();
            added.sort();
            for (p, _) in &added {
                routes.insert(*p, 7);
            }
            table = table.changed(&added);
            prop_assert_eq!(&table, &BlackholeTable::build(routes.iter().map(|(p, s)| (p, *s))));
        }
    }

    #[test]
    fn v6_and_nested() {
        let outer = Prefix::v6(0x2001_0db8 << 96, 32);
        let inner = Prefix::v6(0x2001_0db8_0000_0001 << 64, 64);
        let t = BlackholeTable::build([(&outer, 1), (&inner, 2)]);
        assert_eq!(t.slot_v6(0x2001_0db8_0000_0001 << 64 | 5), Some(2));
        assert_eq!(t.slot_v6(0x2001_0db8_0000_0002 << 64), Some(1));
        assert_eq!(t.slot_v6(0x2001_0db9 << 96), None);
        assert_eq!(t.slot_v4(0), None);
    }
}
