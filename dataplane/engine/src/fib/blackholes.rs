//! Blackhole routes (RTBH) as the workers count them: each blackhole route has a counter
//! slot, and a frame dropped by a blackhole route is counted in the slot of the longest
//! blackhole prefix that holds its destination, which is the route that dropped it (any
//! longer blackhole prefix holding it would have been the longest match instead).
//!
//! The second lookup runs only for frames already dropped, so it costs forwarding nothing.
//! The table is rebuilt whole by the FIB's writer when a batch adds or removes blackhole
//! routes (sorted arrays per prefix length, longest first: RTBH tables are mostly /32s and
//! /128s, so most lookups are one binary search) and published like the FIB's other
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
#[derive(Debug, Default)]
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

    /// The slot of the longest blackhole prefix holding `dst`.
    #[inline]
    pub fn slot_v4(&self, dst: u32) -> Option<u32> {
        self.v4.iter().find_map(|(len, nets)| {
            let key = if *len == 0 { 0 } else { dst & (u32::MAX << (32 - len)) };
            nets.binary_search_by_key(&key, |e| e.0).ok().and_then(|i| nets.get(i)).map(|e| e.1)
        })
    }

    #[inline]
    pub fn slot_v6(&self, dst: u128) -> Option<u32> {
        self.v6.iter().find_map(|(len, nets)| {
            let key = if *len == 0 { 0 } else { dst & (u128::MAX << (128 - len)) };
            nets.binary_search_by_key(&key, |e| e.0).ok().and_then(|i| nets.get(i)).map(|e| e.1)
        })
    }
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
