//! Exchange members as the workers see them: one table per sub-interface (port, VLAN) that
//! has members, mapping a source MAC to the member's index. Built whole by the FIB's writer
//! off the packet path whenever a batch changes members, then published in one pointer
//! store like the FIB's other read-mostly objects; readers look up without locks.
//!
//! A sub-interface's table is a small power-of-two open-addressing array (linear probing,
//! at most half full), so a lookup is one binary search among the sub-interfaces with
//! members (a handful) and usually one probe. Later edge checks (port security: only
//! members' MACs) use the same lookup: `UNKNOWN_MEMBER` is "a MAC no member has here".
//!
//! A member may have a source filter (BCP 38): the prefixes its frames may come from. It
//! is built with the tables, as merged address ranges per family sorted by start, so a check
//! is one branch-free binary search; and it is published with them, so a frame sees a
//! member's old filter or its new one whole, never a mix.

use super::{Family, Member, Prefix};

/// Index of a member (0 to `MAX_MEMBERS - 1`); the counters have a row per index.
pub type MemberId = u32;

/// Members an engine counts at most. Every worker preallocates a counter row per index
/// (rx, tx and a drop counter per reason: 256 octets), so this bounds its memory to
/// about 256 KiB; an exchange's largest member lists are around a thousand routers.
pub const MAX_MEMBERS: u32 = 1024;
/// A frame from a source MAC that no member has on a sub-interface with members: counted
/// in its own row, the last.
pub const UNKNOWN_MEMBER: MemberId = MAX_MEMBERS;
/// A frame not attributed to any member: its sub-interface has no members (or it has no
/// sub-interface at all). Not counted per member.
pub const NO_MEMBER: MemberId = u32::MAX;

/// Source prefixes one member may have in its filter (BCP 38). A member's announced space
/// is rarely more than a few hundred prefixes; merged ranges take 48 octets per prefix at
/// worst.
pub const MAX_MEMBER_SOURCES: usize = 4096;

/// Marks a slot in use; a MAC has 48 bits, so a used slot is never 0.
const USED: u64 = 1 << 63;

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// `USED | mac`, or 0 when empty.
    key: u64,
    member: MemberId,
}

/// One sub-interface's MACs.
#[derive(Debug)]
struct MacTable {
    slots: Box<[Slot]>,
}

impl MacTable {
    fn new(entries: &[(u64, MemberId)]) -> MacTable {
        // At most half full: a miss (an unknown MAC) ends within a probe or two.
        let size = (entries.len() * 2).next_power_of_two().max(8);
        let mut slots = vec![Slot::default(); size].into_boxed_slice();
        let mask = size - 1;
        for &(mac, member) in entries {
            let mut i = slot_of(mac, mask);
            while slots[i].key != 0 {
                i = (i + 1) & mask;
            }
            slots[i] = Slot { key: USED | mac, member };
        }
        MacTable { slots }
    }

    #[inline(always)]
    fn get(&self, mac: u64) -> MemberId {
        let mask = self.slots.len() - 1;
        let key = USED | mac;
        let mut i = slot_of(mac, mask);
        // Never full (at most half), so an empty slot ends every probe sequence; the bound
        // keeps the loop finite all the same.
        for _ in 0..self.slots.len() {
            let Some(s) = self.slots.get(i) else { break };
            if s.key == key {
                return s.member;
            }
            if s.key == 0 {
                break;
            }
            i = (i + 1) & mask;
        }
        UNKNOWN_MEMBER
    }
}

#[inline(always)]
fn slot_of(mac: u64, mask: usize) -> usize {
    // Fibonacci hashing: the low bits of MACs of one vendor are all that differ.
    (mac.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as usize & mask
}

/// A MAC as the tables key it.
#[inline(always)]
pub fn mac_key(mac: &[u8; 6]) -> u64 {
    u64::from_be_bytes([0, 0, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]])
}

#[inline(always)]
fn sub_key(port: u16, vlan: u16) -> u32 {
    (port as u32) << 16 | vlan as u32
}

/// A member's allowed sources (BCP 38): each family's prefixes as merged, sorted, disjoint
/// inclusive ranges, searched without branches (`Ranges`). IPv6 filters whose ranges all
/// fall on /64 boundaries (every prefix /64 or shorter: the usual case) are searched on the
/// top 64 bits alone, half the work of 128-bit compares.
#[derive(Debug, Default)]
pub struct SourceFilter {
    v4: Ranges<u32>,
    v6: Ranges<u128>,
    /// `v6` on the top 64 bits, when that is exact.
    v6_top: Option<Ranges<u64>>,
}

impl SourceFilter {
    fn new(prefixes: &[Prefix]) -> SourceFilter {
        let mut v4: Vec<(u128, u128)> = Vec::new();
        let mut v6: Vec<(u128, u128)> = Vec::new();
        for p in prefixes {
            let p = p.network();
            let (max, out) = match p.family() {
                Family::V4 => (32u32, &mut v4),
                Family::V6 => (128u32, &mut v6),
            };
            let host = (max - (p.len() as u32).min(max)) as usize;
            let span = if host >= 128 { u128::MAX } else { (1u128 << host) - 1 };
            out.push((p.addr_v6(), p.addr_v6() | span));
        }
        let v4: Vec<(u32, u32)> = merge(v4).into_iter().map(|(a, b)| (a as u32, b as u32)).collect();
        let v6 = merge(v6);
        let low = u128::from(u64::MAX);
        let v6_top = v6
            .iter()
            .all(|&(start, end)| start & low == 0 && end & low == low)
            .then(|| Ranges::new(&v6.iter().map(|&(a, b)| ((a >> 64) as u64, (b >> 64) as u64)).collect::<Vec<_>>()));
        SourceFilter { v4: Ranges::new(&v4), v6: Ranges::new(&v6), v6_top }
    }

    /// The filter holds IPv4 source `src`.
    #[inline(always)]
    pub fn allows_v4(&self, src: u32) -> bool {
        self.v4.contains(src)
    }

    /// The filter holds IPv6 source `src`.
    #[inline(always)]
    pub fn allows_v6(&self, src: u128) -> bool {
        match &self.v6_top {
            Some(top) => top.contains((src >> 64) as u64),
            None => self.v6.contains(src),
        }
    }
}

/// Disjoint inclusive ranges sorted by start, the starts in an array of their own (a
/// search reads only them: twice as many per cache line as pairs) padded to a power of two
/// by repeating the last range, so that a search is exactly log2(n) halvings of a load and
/// a conditional move, then one test of the range found.
#[derive(Debug, Default)]
struct Ranges<K> {
    starts: Box<[K]>,
    ends: Box<[K]>,
}

impl<K: Copy + Ord> Ranges<K> {
    fn new(ranges: &[(K, K)]) -> Ranges<K> {
        let Some(&last) = ranges.last() else { return Ranges { starts: Box::default(), ends: Box::default() } };
        let n = ranges.len().next_power_of_two();
        let padded = || ranges.iter().copied().chain(std::iter::repeat(last)).take(n);
        Ranges { starts: padded().map(|r| r.0).collect(), ends: padded().map(|r| r.1).collect() }
    }

    #[inline(always)]
    fn contains(&self, key: K) -> bool {
        // The last range starting at or before `key` (the first one when none does, which
        // the final test then fails).
        let mut base = 0;
        let mut len = self.starts.len();
        while len > 1 {
            let half = len / 2;
            let step = self.starts.get(base + half).is_some_and(|&s| s <= key);
            base = std::hint::select_unpredictable(step, base + half, base);
            len -= half;
        }
        self.starts.get(base).is_some_and(|&s| s <= key) && self.ends.get(base).is_some_and(|&e| key <= e)
    }
}

/// Sorted, overlapping or adjacent ranges merged into disjoint ones.
fn merge(mut ranges: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    ranges.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

/// No source filter: the index in `MemberTable::filter_of`.
const NO_FILTER: u32 = u32::MAX;

/// Every sub-interface's member table, as published to the workers.
#[derive(Debug, Default)]
pub struct MemberTable {
    /// `port << 16 | vlan` of each sub-interface with members, sorted; `tables[i]` is its.
    subs: Box<[u32]>,
    tables: Box<[MacTable]>,
    /// By member id: the index of its filter in `filters`, or `NO_FILTER`. Empty when no
    /// member has a filter (the check then costs one length test).
    filter_of: Box<[u32]>,
    filters: Box<[SourceFilter]>,
}

impl MemberTable {
    /// The tables of `members` (ids and definitions; one MAC per sub-interface, which the
    /// FIB's validation ensures).
    pub fn build<'a>(members: impl IntoIterator<Item = (MemberId, &'a Member)>) -> MemberTable {
        let mut all: Vec<(u32, u64, MemberId)> =
            members.into_iter().map(|(id, m)| (sub_key(m.port, m.vlan), mac_key(&m.mac), id)).collect();
        all.sort_unstable();
        let mut subs = Vec::new();
        let mut tables = Vec::new();
        for group in all.chunk_by(|a, b| a.0 == b.0) {
            subs.push(group[0].0);
            let entries: Vec<(u64, MemberId)> = group.iter().map(|&(_, mac, id)| (mac, id)).collect();
            tables.push(MacTable::new(&entries));
        }
        MemberTable { subs: subs.into(), tables: tables.into(), filter_of: Box::default(), filters: Box::default() }
    }

    /// The tables of `members`, with the source filters of those that have one (member
    /// id, its allowed prefixes, already checked).
    pub fn build_with_filters<'a>(
        members: impl IntoIterator<Item = (MemberId, &'a Member)>,
        filters: impl IntoIterator<Item = (MemberId, &'a [Prefix])>,
    ) -> MemberTable {
        let mut table = MemberTable::build(members);
        let mut filter_of = Vec::new();
        let mut ranges = Vec::new();
        for (id, prefixes) in filters {
            if filter_of.is_empty() {
                filter_of = vec![NO_FILTER; MAX_MEMBERS as usize];
            }
            if let Some(slot) = filter_of.get_mut(id as usize) {
                *slot = ranges.len() as u32;
                ranges.push(SourceFilter::new(prefixes));
            }
        }
        table.filter_of = filter_of.into();
        table.filters = ranges.into();
        table
    }

    /// Some member has a source filter.
    #[inline(always)]
    pub fn has_filters(&self) -> bool {
        !self.filter_of.is_empty()
    }

    /// The source filter of `member` (an id, `UNKNOWN_MEMBER` or `NO_MEMBER`), if it has
    /// one.
    #[inline(always)]
    pub fn filter(&self, member: MemberId) -> Option<&SourceFilter> {
        let i = *self.filter_of.get(member as usize)?;
        self.filters.get(i as usize)
    }

    /// Whether `member` (an id, `UNKNOWN_MEMBER` or `NO_MEMBER`) may send from `src`: true
    /// unless it is a member with a source filter that does not hold `src`.
    #[inline]
    pub fn source_allowed_v4(&self, member: MemberId, src: u32) -> bool {
        self.filter(member).is_none_or(|f| f.allows_v4(src))
    }

    #[inline]
    pub fn source_allowed_v6(&self, member: MemberId, src: u128) -> bool {
        self.filter(member).is_none_or(|f| f.allows_v6(src))
    }

    /// No sub-interface has members.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// The member whose MAC `mac` is on (port, VLAN), and its source filter if it has one:
    /// `lookup` and `filter` in one call, for the pipeline.
    #[inline]
    pub fn sender(&self, port: u16, vlan: u16, mac: &[u8; 6]) -> (MemberId, Option<&SourceFilter>) {
        let member = self.lookup(port, vlan, mac);
        (member, self.filter(member))
    }

    /// The member whose MAC `mac` is on (port, VLAN): its id, `UNKNOWN_MEMBER` when the
    /// sub-interface has members but not this MAC, `NO_MEMBER` when it has none.
    #[inline]
    pub fn lookup(&self, port: u16, vlan: u16, mac: &[u8; 6]) -> MemberId {
        if self.subs.is_empty() {
            return NO_MEMBER;
        }
        match self.subs.binary_search(&sub_key(port, vlan)) {
            Ok(i) => self.tables.get(i).map_or(NO_MEMBER, |t| t.get(mac_key(mac))),
            Err(_) => NO_MEMBER,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member(port: u16, vlan: u16, last: u8) -> Member {
        Member { port, vlan, mac: [0x02, 0, 0, 0, port as u8, last] }
    }

    #[test]
    fn lookups() {
        let a = member(0, 0, 1);
        let b = member(0, 0, 2);
        let c = member(1, 100, 1);
        let t = MemberTable::build([(5, &a), (7, &b), (9, &c)]);
        assert_eq!(t.lookup(0, 0, &a.mac), 5);
        assert_eq!(t.lookup(0, 0, &b.mac), 7);
        assert_eq!(t.lookup(1, 100, &c.mac), 9);
        assert_eq!(t.lookup(0, 0, &c.mac), UNKNOWN_MEMBER, "a member's MAC on another sub-interface is unknown here");
        assert_eq!(t.lookup(1, 100, &a.mac), UNKNOWN_MEMBER);
        assert_eq!(t.lookup(1, 0, &c.mac), NO_MEMBER, "port 1 untagged has no members");
        assert_eq!(t.lookup(2, 0, &a.mac), NO_MEMBER);
        let empty = MemberTable::default();
        assert!(empty.is_empty());
        assert_eq!(empty.lookup(0, 0, &a.mac), NO_MEMBER);
    }

    #[test]
    fn source_filters() {
        let a = member(0, 0, 1);
        let b = member(0, 0, 2);
        let allowed = [
            Prefix::v4(u32::from_be_bytes([198, 18, 0, 0]), 24),
            Prefix::v4(u32::from_be_bytes([198, 18, 1, 0]), 24),
            Prefix::v4(u32::from_be_bytes([198, 18, 4, 7]), 32),
            Prefix::v6(0x2001_0db8_0001_u128 << 80, 48),
        ];
        let t = MemberTable::build_with_filters([(5, &a), (7, &b)], [(5, &allowed[..])]);
        assert!(t.has_filters());
        let v4 = |o: [u8; 4]| u32::from_be_bytes(o);
        assert!(t.source_allowed_v4(5, v4([198, 18, 0, 0])));
        assert!(t.source_allowed_v4(5, v4([198, 18, 1, 255])), "two /24s merged");
        assert!(!t.source_allowed_v4(5, v4([198, 18, 2, 0])));
        assert!(t.source_allowed_v4(5, v4([198, 18, 4, 7])));
        assert!(!t.source_allowed_v4(5, v4([198, 18, 4, 8])));
        assert!(!t.source_allowed_v4(5, v4([198, 17, 255, 255])));
        assert!(t.source_allowed_v6(5, (0x2001_0db8_0001_u128 << 80) | 77));
        assert!(!t.source_allowed_v6(5, 0x2001_0db8_0002_u128 << 80));
        assert!(t.source_allowed_v4(7, v4([203, 0, 113, 1])), "member 7 has no filter");
        assert!(t.source_allowed_v4(UNKNOWN_MEMBER, v4([203, 0, 113, 1])));
        assert!(t.source_allowed_v4(NO_MEMBER, v4([203, 0, 113, 1])));
        let none = MemberTable::build_with_filters([(5, &a)], [(5, &[][..])]);
        assert!(!none.source_allowed_v4(5, 0) && !none.source_allowed_v6(5, 0), "an empty filter allows nothing");
        let all = MemberTable::build_with_filters([(5, &a)], [(5, &[Prefix::v4(0, 0), Prefix::v6(0, 0)][..])]);
        assert!(all.source_allowed_v4(5, u32::MAX) && all.source_allowed_v6(5, u128::MAX));
        assert!(!MemberTable::build([(5, &a)]).has_filters());
        assert_eq!(t.sender(0, 0, &a.mac).0, 5);
        assert!(t.sender(0, 0, &a.mac).1.is_some_and(|f| f.allows_v4(v4([198, 18, 1, 9])) && !f.allows_v4(v4([198, 18, 2, 0]))));
        assert!(t.sender(0, 0, &b.mac).1.is_none(), "member 7 has no filter");
        assert!(matches!(t.sender(0, 0, &[2, 0, 0, 0, 9, 9]), (UNKNOWN_MEMBER, None)));
        let top = MemberTable::build_with_filters([(5, &a)], [(5, &[Prefix::v6(u128::MAX << 64, 64)][..])]);
        assert!(top.source_allowed_v6(5, u128::MAX), "the last address of the space");
        assert!(!top.source_allowed_v6(5, (u128::MAX << 64) - 1));
    }

    proptest! {
        /// Filters against a scan of the prefixes: any prefixes, any sources.
        #[test]
        fn filters_agree_with_a_scan(
            prefixes in proptest::collection::vec((any::<u32>(), 0u8..=32), 0..40),
            asks in proptest::collection::vec(any::<u32>(), 1..200),
        ) {
            let ps: Vec<Prefix> = prefixes.iter().map(|&(a, l)| Prefix::v4(a, l).network()).collect();
            let a = member(0, 0, 1);
            let t = MemberTable::build_with_filters([(1, &a)], [(1, &ps[..])]);
            let mask = |l: u8| if l == 0 { 0 } else { u32::MAX << (32 - l as u32) };
            // Half the questions inside a prefix.
            let asks = asks.iter().enumerate().map(|(i, &x)| match ps.get(i % (ps.len().max(1) * 2)) {
                Some(p) => p.addr_v4() | (x & !mask(p.len())),
                None => x,
            });
            for src in asks {
                let want = ps.iter().any(|p| src & mask(p.len()) == p.addr_v4());
                prop_assert_eq!(t.source_allowed_v4(1, src), want);
            }
        }

        /// IPv6 filters against a scan, with prefixes of any length: the top-64-bit search
        /// when every prefix is /64 or shorter, the full one otherwise.
        #[test]
        fn v6_filters_agree_with_a_scan(
            prefixes in proptest::collection::vec((any::<u128>(), 0u8..=128), 0..40),
            short in any::<bool>(),
            asks in proptest::collection::vec(any::<u128>(), 1..200),
        ) {
            let ps: Vec<Prefix> =
                prefixes.iter().map(|&(a, l)| Prefix::v6(a, if short { l % 65 } else { l }).network()).collect();
            let a = member(0, 0, 1);
            let t = MemberTable::build_with_filters([(1, &a)], [(1, &ps[..])]);
            let filter = t.filter(1).unwrap();
            // Always for /64 and shorter; longer ones may merge into aligned ranges too.
            let all_short = ps.iter().all(|p| p.len() <= 64);
            prop_assert!(!all_short || filter.v6_top.is_some(), "the top-64-bit search for /64 and shorter");
            let mask = |l: u8| if l == 0 { 0 } else { u128::MAX << (128 - l as u32) };
            let asks = asks.iter().enumerate().map(|(i, &x)| match ps.get(i % (ps.len().max(1) * 2)) {
                Some(p) => p.addr_v6() | (x & !mask(p.len())),
                None => x,
            });
            for src in asks {
                let want = ps.iter().any(|p| src & mask(p.len()) == p.addr_v6());
                prop_assert_eq!(t.source_allowed_v6(1, src), want);
                prop_assert_eq!(filter.v6.contains(src), want, "the full search too");
            }
        }

        /// The padded search against a scan, at every length around the powers of two and
        /// at the ends of the key space.
        #[test]
        fn ranges_agree_with_a_scan(points in proptest::collection::btree_set(any::<u32>(), 0..70), asks in proptest::collection::vec(any::<u32>(), 0..100)) {
            // Disjoint ranges from sorted distinct points: [p0, p1], [p2, p3], ...
            let p: Vec<u32> = points.into_iter().collect();
            let ranges: Vec<(u32, u32)> = p.chunks_exact(2).map(|c| (c[0], c[1])).collect();
            let r = Ranges::new(&ranges);
            let extremes = [0, 1, u32::MAX - 1, u32::MAX];
            for key in asks.into_iter().chain(p.iter().copied()).chain(extremes) {
                let want = ranges.iter().any(|&(s, e)| s <= key && key <= e);
                prop_assert_eq!(r.contains(key), want, "key {} in {:?}", key, ranges);
            }
        }

        /// Against a linear scan: any members on a few sub-interfaces, any MACs asked.
        #[test]
        fn agrees_with_a_linear_scan(
            defs in proptest::collection::vec((0u16..3, 0u16..3, any::<[u8; 6]>()), 0..200),
            asks in proptest::collection::vec((0u16..4, 0u16..4, any::<[u8; 6]>(), any::<proptest::sample::Index>()), 1..200),
        ) {
            // One MAC per sub-interface, as the FIB's validation ensures.
            let mut members: Vec<(MemberId, Member)> = Vec::new();
            for (i, (port, vlan, mac)) in defs.into_iter().enumerate() {
                let m = Member { port, vlan, mac };
                if !members.iter().any(|(_, x)| *x == m) {
                    members.push((i as MemberId, m));
                }
            }
            let t = MemberTable::build(members.iter().map(|(id, m)| (*id, m)));
            for (port, vlan, mac, pick) in asks {
                // Half the questions ask for a defined member's MAC.
                let (port, vlan, mac) = match members.get(pick.index(members.len().max(1) * 2)) {
                    Some((_, m)) => (m.port, m.vlan, m.mac),
                    None => (port, vlan, mac),
                };
                let on_sub = members.iter().any(|(_, m)| m.port == port && m.vlan == vlan);
                let want = members
                    .iter()
                    .find(|(_, m)| m.port == port && m.vlan == vlan && m.mac == mac)
                    .map_or(if on_sub { UNKNOWN_MEMBER } else { NO_MEMBER }, |(id, _)| *id);
                prop_assert_eq!(t.lookup(port, vlan, &mac), want);
            }
        }
    }
}
