//! The routes of a FIB as the controller keeps them for a node: what it should hold and
//! what it is known to hold (domain.NodeFib), a million prefixes each with a full table.
//!
//! In Python they were dicts of prefix text to `Route` tuples, and a table coming in
//! crossed four of them per route (a lookup or an insert each, a cache miss each, about
//! 250-400 ns on this VM) and made a tuple per route: refreshing what a node should hold,
//! diffing it against what the node holds, recording what the node acknowledged. Here a
//! prefix is a number and its length, a route two numbers, so a batch's refresh, diff and
//! record are one pass each over the batch in Rust, and what the diff finds is written
//! into WriteRequests from the keys (`write_ops`) with no object per route.
//!
//! Written here rather than taken from a crate: it is std's BTreeMap with the bookkeeping
//! the controller needs around it, the dirty prefixes and the routes each group gains and
//! loses. Ordered, not hashed: tables arrive in prefix order (a full table's batches are
//! its sorted slices), so a batch's inserts fall in a few leaves a batch apart instead of a
//! cache miss each at random in a table of a million. With hash maps a batch's refresh
//! took 259-265 ns a route on this VM, with B-trees 123-160 (`benches.controller_costs`,
//! in turns); the diff's lookups in what a node holds cost more (59-88 ns against 38-39),
//! and one node's fan-out took 2.29-2.30 s against 2.44-2.52, the controller's RSS
//! with eight nodes 310-318 MiB against 322-328.
//!
//! Prefixes changed since the last diff are kept in order with the entry each was last set
//! to (`Dirty`), as the Python dict of them was: the diff then reads what to write from
//! there instead of looking each prefix up.

use crate::text::{parse_prefix_packed, write_prefix};
use crate::write::Writer;
use foldhash::fast::RandomState;
use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BTreeMap, HashMap};

/// A prefix: its address as a number and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    V4(u32, u8),
    V6(u128, u8),
}

/// A route: its kind (corridor.v1.RouteKind) and its group (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry {
    pub kind: u8,
    pub group: u32,
}

/// The key of an address of 4 or 16 octets and a length (at most 255); None for another
/// size.
pub fn key_of(address: &[u8], length: u32) -> Option<Key> {
    let length = u8::try_from(length).ok()?;
    if let Ok(a) = <[u8; 4]>::try_from(address) {
        Some(Key::V4(u32::from_be_bytes(a), length))
    } else if let Ok(a) = <[u8; 16]>::try_from(address) {
        Some(Key::V6(u128::from_be_bytes(a), length))
    } else {
        None
    }
}

/// The key of "address/length" text; None when it is not a prefix.
pub fn key_of_text(text: &str) -> Option<Key> {
    let (address, size, length) = parse_prefix_packed(text)?;
    key_of(&address[..size], length)
}

/// Appends the canonical text of a key's prefix ("198.18.0.0/15").
pub fn write_key(out: &mut Vec<u8>, key: &Key) {
    match *key {
        Key::V4(a, length) => write_prefix(out, &a.to_be_bytes(), u32::from(length)),
        Key::V6(a, length) => write_prefix(out, &a.to_be_bytes(), u32::from(length)),
    }
}

/// Route operations: a set with its entry, or a delete (None).
pub type RouteOp = (Key, Option<Entry>);

/// Prefixes changed since the last diff, in the order first changed, each with what it was
/// last set to (None: removed).
///
/// A prefix changed twice is kept once, found through `at`; but while every change noted
/// was of a prefix the table did not hold (a table coming in), none can have been noted
/// before, and `at` is made only when a change of a prefix held comes: a table's batches
/// then cost one push per route here, not a map insert as well.
#[derive(Debug, Clone, Default)]
pub struct Dirty {
    order: Vec<RouteOp>,
    at: HashMap<Key, usize, RandomState>,
    indexed: bool,
}

impl Dirty {
    /// Notes `key` set to `entry`; `fresh` when the table did not hold it before.
    fn note(&mut self, key: Key, entry: Option<Entry>, fresh: bool) {
        if !self.indexed {
            if fresh {
                self.order.push((key, entry));
                return;
            }
            self.index();
        }
        match self.at.entry(key) {
            MapEntry::Occupied(e) => self.order[*e.get()].1 = entry,
            MapEntry::Vacant(e) => {
                e.insert(self.order.len());
                self.order.push((key, entry));
            }
        }
    }

    fn index(&mut self) {
        self.at = self.order.iter().enumerate().map(|(i, &(k, _))| (k, i)).collect();
        self.indexed = true;
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn ops(&self) -> &[RouteOp] {
        &self.order
    }
}

/// Routes per group that a change took (`added`) and let go (`dropped`), group 0 left out:
/// a batch's routes share few groups, so a short list.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Refs {
    pub added: Vec<(u32, u64)>,
    pub dropped: Vec<(u32, u64)>,
}

/// Counts a route's change from `old` to `entry` in `refs`.
fn counted(old: Option<Entry>, entry: Option<Entry>, refs: &mut Refs) {
    if let Some(e) = entry {
        count(&mut refs.added, e.group);
    }
    if let Some(o) = old {
        count(&mut refs.dropped, o.group);
    }
}

fn count(counts: &mut Vec<(u32, u64)>, group: u32) {
    if group == 0 {
        return;
    }
    // The group of the route before, nearly always.
    if let Some(last) = counts.last_mut().filter(|(g, _)| *g == group) {
        last.1 += 1;
    } else if let Some(c) = counts.iter_mut().find(|(g, _)| *g == group) {
        c.1 += 1;
    } else {
        counts.push((group, 1));
    }
}

/// The routes, one map per family: an IPv4 route (six of seven in a full table) has its
/// address and length as one number for key, in address order then length.
#[derive(Debug, Clone, Default)]
pub struct Table {
    v4: BTreeMap<u64, Entry>,
    v6: BTreeMap<(u128, u8), Entry>,
    dirty: Dirty,
}

/// The least and the greatest of some keys, per family, as the maps order them: a table
/// that holds nothing between them holds none of the keys (one range lookup instead of
/// one lookup a key, for a table coming in in order).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub v4: Option<(u64, u64)>,
    pub v6: Option<((u128, u8), (u128, u8))>,
}

impl Span {
    pub fn of<'a>(keys: impl IntoIterator<Item = &'a Key>) -> Span {
        fn widen<T: Ord + Copy>(span: &mut Option<(T, T)>, k: T) {
            *span = Some(span.map_or((k, k), |(lo, hi)| (lo.min(k), hi.max(k))));
        }
        let mut span = Span::default();
        for key in keys {
            match *key {
                Key::V4(a, l) => widen(&mut span.v4, v4_key(a, l)),
                Key::V6(a, l) => widen(&mut span.v6, (a, l)),
            }
        }
        span
    }

    /// Whether maps keyed as a `Table`'s (IPv4 by `v4_key`, IPv6 by address and length)
    /// hold a key within the span: one range lookup a family.
    pub fn meets<A, B>(&self, v4: &BTreeMap<u64, A>, v6: &BTreeMap<(u128, u8), B>) -> bool {
        self.v4.is_some_and(|(lo, hi)| v4.range(lo..=hi).next().is_some())
            || self.v6.is_some_and(|(lo, hi)| v6.range(lo..=hi).next().is_some())
    }
}

/// An IPv4 prefix as one number: its address, then its length (the order of both).
pub fn v4_key(address: u32, length: u8) -> u64 {
    u64::from(address) << 8 | u64::from(length)
}

impl PartialEq for Table {
    /// The same routes (what is dirty aside).
    fn eq(&self, other: &Self) -> bool {
        self.v4 == other.v4 && self.v6 == other.v6
    }
}

impl Table {
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// IPv6 routes.
    pub fn v6(&self) -> usize {
        self.v6.len()
    }

    pub fn get(&self, key: &Key) -> Option<Entry> {
        match *key {
            Key::V4(a, l) => self.v4.get(&v4_key(a, l)).copied(),
            Key::V6(a, l) => self.v6.get(&(a, l)).copied(),
        }
    }

    /// Whether a route lies within `span` (a batch's keys: see `Span`).
    pub fn holds_within(&self, span: &Span) -> bool {
        span.meets(&self.v4, &self.v6)
    }

    pub fn iter(&self) -> impl Iterator<Item = (Key, Entry)> + '_ {
        let v4 = self.v4.iter().map(|(&k, &e)| (Key::V4((k >> 8) as u32, k as u8), e));
        v4.chain(self.v6.iter().map(|(&(a, l), &e)| (Key::V6(a, l), e)))
    }

    /// Sets (Some) or removes (None) the route to `key`; returns what it was.
    fn put(&mut self, key: Key, entry: Option<Entry>) -> Option<Entry> {
        match (key, entry) {
            (Key::V4(a, l), Some(e)) => self.v4.insert(v4_key(a, l), e),
            (Key::V4(a, l), None) => self.v4.remove(&v4_key(a, l)),
            (Key::V6(a, l), Some(e)) => self.v6.insert((a, l), e),
            (Key::V6(a, l), None) => self.v6.remove(&(a, l)),
        }
    }

    /// Sets the route to `key` (None: removes it), noting it dirty and counting what it
    /// takes and lets go in `refs`, when that changes anything.
    pub fn set(&mut self, key: Key, entry: Option<Entry>, refs: &mut Refs) {
        let old = self.put(key, entry);
        if old == entry {
            return;
        }
        self.dirty.note(key, entry, old.is_none());
        counted(old, entry, refs);
    }

    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    pub fn take_dirty(&mut self) -> Dirty {
        std::mem::take(&mut self.dirty)
    }

    /// Marks again what `take_dirty` gave and was not written; what was marked since is
    /// newer and wins.
    pub fn mark_dirty(&mut self, older: Dirty) {
        let newer = std::mem::replace(&mut self.dirty, older);
        self.dirty.index();
        for (key, entry) in newer.order {
            self.dirty.note(key, entry, false);
        }
    }

    /// Room for `n` more changes before a diff (a batch's routes).
    pub fn reserve(&mut self, n: usize) {
        self.dirty.order.reserve(n);
    }

    /// Records operations a node acknowledged (this is what it holds): nothing dirty.
    pub fn apply(&mut self, ops: &[RouteOp], refs: &mut Refs) {
        for &(key, entry) in ops {
            let old = self.put(key, entry);
            if old != entry {
                counted(old, entry, refs);
            }
        }
    }

    /// The route operations that take `have` to `self` for the prefixes of `dirty` (what
    /// `self.take_dirty()` gave: each one's entry is read from there), or for every prefix
    /// of both (None): sets first, then deletes, each in order.
    pub fn diff(&self, have: &Table, dirty: Option<&Dirty>) -> Vec<RouteOp> {
        let (mut sets, mut deletes) = (Vec::new(), Vec::new());
        match dirty {
            // A table coming in: none of the keys is held, which one range lookup of
            // what they span shows, so there is nothing to look up key by key.
            Some(dirty) if !have.holds_within(&Span::of(dirty.order.iter().map(|(k, _)| k))) => {
                sets.extend(dirty.order.iter().filter(|(_, want)| want.is_some()));
            }
            Some(dirty) => {
                for &(key, want) in &dirty.order {
                    let held = have.get(&key);
                    match want {
                        Some(_) if held != want => sets.push((key, want)),
                        None if held.is_some() => deletes.push((key, None)),
                        _ => {}
                    }
                }
            }
            None => {
                for (key, want) in self.iter() {
                    if have.get(&key) != Some(want) {
                        sets.push((key, Some(want)));
                    }
                }
                for (key, _) in have.iter() {
                    if self.get(&key).is_none() {
                        deletes.push((key, None));
                    }
                }
            }
        }
        sets.append(&mut deletes);
        sets
    }
}

/// Writes route operations into a WriteRequest being made.
pub fn write_ops(w: &mut Writer, ops: &[RouteOp]) {
    for (key, entry) in ops {
        let (v4, v6);
        let (address, length): (&[u8], u8) = match *key {
            Key::V4(a, l) => {
                v4 = a.to_be_bytes();
                (&v4, l)
            }
            Key::V6(a, l) => {
                v6 = a.to_be_bytes();
                (&v6, l)
            }
        };
        match entry {
            Some(e) => w.set_route(address, u32::from(length), u32::from(e.kind), e.group),
            None => w.delete_route(address, u32::from(length)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> Key {
        key_of_text(text).unwrap()
    }

    fn text(key: &Key) -> String {
        let mut out = Vec::new();
        write_key(&mut out, key);
        String::from_utf8(out).unwrap()
    }

    const FWD: u8 = 1;

    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// One step of what the reconciler does with a pair of tables.
    #[derive(Debug, Clone)]
    enum Step {
        /// Set (Some) or remove (None) prefix `.0` in what the node should hold.
        Set(usize, Option<Entry>),
        /// Diff and record the diff in what the node holds, in slices of `.0` (0: whole).
        Write(usize),
        /// Diff, and the write fails: the dirty prefixes are marked again.
        Fail,
    }

    fn prefixes() -> Vec<Key> {
        let v4 = (0..8u8).map(|i| key_of(&[198, 18, i, 0], 24).unwrap());
        let v6 = (0..8u8).map(|i| key_of(&[0x20, 1, 0x0d, 0xb8, i, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 40).unwrap());
        v4.chain(v6).chain([key_of(&[0; 4], 0).unwrap(), key_of(&[0; 16], 0).unwrap()]).collect()
    }

    fn step() -> impl Strategy<Value = Step> {
        let entry = prop_oneof![Just(None), (1u8..5, 0u32..4).prop_map(|(kind, group)| Some(Entry { kind, group }))];
        prop_oneof![
            6 => (0usize..18, entry).prop_map(|(p, e)| Step::Set(p, e)),
            2 => (0usize..4).prop_map(Step::Write),
            1 => Just(Step::Fail),
        ]
    }

    /// Routes per group of a table, counted afresh.
    fn groups(t: &Table) -> BTreeMap<u32, i64> {
        let mut g = BTreeMap::new();
        for (_, e) in t.iter().filter(|(_, e)| e.group != 0) {
            *g.entry(e.group).or_default() += 1;
        }
        g
    }

    fn add(counts: &mut BTreeMap<u32, i64>, refs: &Refs) {
        for &(g, n) in &refs.added {
            *counts.entry(g).or_default() += n as i64;
        }
        for &(g, n) in &refs.dropped {
            *counts.entry(g).or_default() -= n as i64;
        }
        counts.retain(|_, n| *n != 0);
    }

    proptest! {
        /// Against a model (a map of what should be held): the table holds what was set,
        /// the references it reports add up to a count made afresh, and what the diffs
        /// write, recorded whole or in slices, with failed writes marked again, leaves the
        /// record equal to the table with nothing more to write.
        #[test]
        fn a_table_and_its_record_follow_a_model(steps in prop::collection::vec(step(), 1..60)) {
            let keys = prefixes();
            let (mut want, mut have) = (Table::default(), Table::default());
            let mut model: BTreeMap<usize, Entry> = BTreeMap::new();
            let (mut want_refs, mut have_refs) = (BTreeMap::new(), BTreeMap::new());
            for s in steps {
                match s {
                    Step::Set(p, e) => {
                        let mut refs = Refs::default();
                        want.set(keys[p], e, &mut refs);
                        add(&mut want_refs, &refs);
                        match e {
                            Some(e) => { model.insert(p, e); }
                            None => { model.remove(&p); }
                        }
                    }
                    Step::Write(size) => {
                        let dirty = want.take_dirty();
                        let ops = want.diff(&have, Some(&dirty));
                        let size = if size == 0 { ops.len().max(1) } else { size };
                        for part in ops.chunks(size) {
                            let mut refs = Refs::default();
                            have.apply(part, &mut refs);
                            add(&mut have_refs, &refs);
                        }
                        prop_assert!(want == have);
                    }
                    Step::Fail => {
                        let dirty = want.take_dirty();
                        let _ = want.diff(&have, Some(&dirty));
                        want.mark_dirty(dirty);
                    }
                }
                prop_assert_eq!(want.len(), model.len());
                for (p, e) in &model {
                    prop_assert_eq!(want.get(&keys[*p]), Some(*e));
                }
                prop_assert_eq!(want.v6(), model.keys().filter(|&&p| matches!(keys[p], Key::V6(..))).count());
                prop_assert_eq!(&want_refs, &groups(&want));
                prop_assert_eq!(&have_refs, &groups(&have));
            }
            // Whatever is still dirty, written, leaves nothing to write.
            let dirty = want.take_dirty();
            let ops = want.diff(&have, Some(&dirty));
            have.apply(&ops, &mut Refs::default());
            prop_assert!(want == have);
            prop_assert!(want.diff(&have, None).is_empty());
        }
    }

    proptest! {
        /// A table holds something within a span of keys exactly when one of its keys lies
        /// between the span's ends in its family; and a diff that takes the range lookup
        /// (nothing held within) writes what the lookup a key would.
        #[test]
        fn spans_answer_as_a_scan_would(
            held in prop::collection::vec(0usize..18, 0..10),
            asked in prop::collection::vec(0usize..18, 0..10),
        ) {
            let keys = prefixes();
            let (mut have, mut want) = (Table::default(), Table::default());
            let entry = Some(Entry { kind: 1, group: 0 });
            for &p in &held {
                have.set(keys[p], entry, &mut Refs::default());
            }
            let span = Span::of(asked.iter().map(|&p| &keys[p]));
            let within = |k: &Key| match *k {
                Key::V4(a, l) => span.v4.is_some_and(|(lo, hi)| (lo..=hi).contains(&v4_key(a, l))),
                Key::V6(a, l) => span.v6.is_some_and(|(lo, hi)| (lo..=hi).contains(&(a, l))),
            };
            prop_assert_eq!(have.holds_within(&span), held.iter().any(|&p| within(&keys[p])));
            for &p in &asked {
                want.set(keys[p], entry, &mut Refs::default());
            }
            let dirty = want.take_dirty();
            let by_key: Vec<RouteOp> = dirty.order.iter().filter(|(k, w)| have.get(k) != *w && w.is_some()).copied().collect();
            prop_assert_eq!(want.diff(&have, Some(&dirty)), by_key);
        }
    }

    #[test]
    fn keys_and_text_both_ways() {
        for t in ["198.18.0.0/15", "0.0.0.0/0", "2001:db8::/32", "::/0", "2001:db8::1/128", "198.19.255.255/32"] {
            assert_eq!(text(&key(t)), t);
        }
        assert_ne!(key("198.18.0.0/15"), key("198.18.0.0/16"));
        assert_ne!(key("0.0.0.0/0"), key("::/0"));
        assert_eq!(key_of_text("198.18.0.1/15"), key_of_text("198.18.0.1/15"));
        assert_eq!(key_of_text("nonsense"), None);
    }

    #[test]
    fn sets_count_groups_and_families_and_note_dirty() {
        let mut t = Table::default();
        let mut refs = Refs::default();
        let (a, b, c) = (key("198.18.0.0/24"), key("198.18.1.0/24"), key("2001:db8::/48"));
        t.set(a, Some(Entry { kind: FWD, group: 1 }), &mut refs);
        t.set(b, Some(Entry { kind: FWD, group: 1 }), &mut refs);
        t.set(c, Some(Entry { kind: 2, group: 0 }), &mut refs);
        assert_eq!(refs, Refs { added: vec![(1, 2)], dropped: vec![] });
        assert_eq!((t.len(), t.v6()), (3, 1));
        // The same again changes nothing; a re-point counts both; a removal.
        let mut refs = Refs::default();
        t.set(a, Some(Entry { kind: FWD, group: 1 }), &mut refs);
        t.set(b, Some(Entry { kind: FWD, group: 2 }), &mut refs);
        t.set(c, None, &mut refs);
        t.set(key("198.18.9.0/24"), None, &mut refs);
        assert_eq!(refs, Refs { added: vec![(2, 1)], dropped: vec![(1, 1)] });
        assert_eq!((t.len(), t.v6()), (2, 0));
        let dirty = t.take_dirty();
        let order: Vec<_> = dirty.ops().iter().map(|(k, e)| (text(k), e.map(|e| e.group))).collect();
        assert_eq!(order, [("198.18.0.0/24".into(), Some(1)), ("198.18.1.0/24".into(), Some(2)), ("2001:db8::/48".into(), None)]);
        assert!(!t.has_dirty());
        // A prefix added, removed and added again before a diff is noted once, last entry.
        let mut refs = Refs::default();
        let d = key("198.18.50.0/24");
        for entry in [Some(Entry { kind: FWD, group: 4 }), None, Some(Entry { kind: FWD, group: 5 })] {
            t.set(d, entry, &mut refs);
        }
        let dirty = t.take_dirty();
        assert_eq!(dirty.ops(), [(d, Some(Entry { kind: FWD, group: 5 }))]);
    }

    #[test]
    fn a_diff_written_and_recorded_leaves_nothing_to_write() {
        let (mut want, mut have) = (Table::default(), Table::default());
        let mut refs = Refs::default();
        for i in 0..50u8 {
            want.set(key_of(&[198, 18, i, 0], 24).unwrap(), Some(Entry { kind: FWD, group: u32::from(i % 3) }), &mut refs);
        }
        let dirty = want.take_dirty();
        let ops = want.diff(&have, Some(&dirty));
        assert_eq!(ops.len(), 50);
        have.apply(&ops[..20], &mut Refs::default());
        have.apply(&ops[20..], &mut Refs::default());
        assert!(want == have);
        assert!(want.diff(&have, None).is_empty());
        // Changes since: one removed, one re-pointed; marked again after a failed write,
        // then changed once more: the newest entry wins.
        want.set(key_of(&[198, 18, 0, 0], 24).unwrap(), None, &mut refs);
        want.set(key_of(&[198, 18, 1, 0], 24).unwrap(), Some(Entry { kind: FWD, group: 9 }), &mut refs);
        let failed = want.take_dirty();
        want.set(key_of(&[198, 18, 1, 0], 24).unwrap(), Some(Entry { kind: FWD, group: 7 }), &mut refs);
        want.mark_dirty(failed);
        let dirty = want.take_dirty();
        let ops = want.diff(&have, Some(&dirty));
        let got: Vec<_> = ops.iter().map(|(k, e)| (text(k), e.map(|e| e.group))).collect();
        assert_eq!(got, [("198.18.1.0/24".into(), Some(7)), ("198.18.0.0/24".into(), None)]);
        assert_eq!(want.diff(&have, None).len(), 2);
        let mut refs = Refs::default();
        have.apply(&ops, &mut refs);
        assert_eq!(refs, Refs { added: vec![(7, 1)], dropped: vec![(1, 1)] });
        assert!(want == have && want.diff(&have, None).is_empty());
        assert_eq!(have.len(), 49);
    }
}
