//! The longest-prefix-match table: a multibit trie with a wide directly indexed root and
//! 8-bit nodes below it, with leaf pushing (DIR-24-8 for IPv4, as in DPDK's rte_lpm;
//! 16 then 8-bit strides for IPv6). A lookup is one root load plus one load per level.
//!
//! Every entry is one `AtomicU32` and the writer changes the table only by storing whole
//! entries, so a concurrent lookup of an address sees the entry before or after a store,
//! never a mix. A node is filled before the entry that points to it is published (Release,
//! paired with the readers' Acquire loads) and reused only after a QSBR grace period.
//!
//! Written by hand: the FIB is the heart of the product, and no crate offers lock-free
//! readers with in-place updates and bounded, preallocated memory.

use std::collections::VecDeque;

// Fx hashing: the keys are prefixes the writer trusts (validated batches), and SipHash
// costs a third of a full-table load.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicU32, Ordering};

use super::FibDomain;
use crate::prefetch::prefetch_ref;
use crate::qsbr::Qsbr;

/// Entry layout: `VALID | EXT | depth(8) | value(22)`. Zero is "no route".
pub(crate) const VALID: u32 = 1 << 31;
pub(crate) const EXT: u32 = 1 << 30;
const DEPTH_SHIFT: u32 = 22;
pub(crate) const VALUE_MASK: u32 = (1 << DEPTH_SHIFT) - 1;
const STRIDE: u32 = 8;
const NODE: usize = 1 << STRIDE;
/// Roots of more bits than this are prefetched by batch lookups (see `lookup_batch`).
const PREFETCHED_ROOT_BITS: u32 = 16;
/// Keys a batch lookup resolves together; longer batches are split.
const LOOKUP_CHUNK: usize = 64;

/// A key of `BITS` bits, read most significant bit first.
pub(crate) trait Key: Copy + Eq + Hash + Ord + Debug + Send + Sync + 'static {
    const BITS: u32;
    /// `n` bits starting `off` bits from the most significant end (0 < n <= 24).
    fn chunk(self, off: u32, n: u32) -> usize;
    /// The `STRIDE` (8) bits starting `off` bits from the most significant end, where
    /// `off` is a multiple of 8 below `BITS`: `chunk(off, 8)` without a wide shift.
    fn byte(self, off: u32) -> usize;
    /// `chunk(0, n)` for a root of `n` bits (8 <= n <= 24): from the key's top 32 bits,
    /// a narrow shift where IPv6's is a wide one of a dozen instructions.
    fn top(self, n: u32) -> usize;
    /// The key with only its top `len` bits kept.
    fn masked(self, len: u32) -> Self;
}

impl Key for u32 {
    const BITS: u32 = 32;
    #[inline(always)]
    fn chunk(self, off: u32, n: u32) -> usize {
        ((self << off) >> (32 - n)) as usize
    }
    #[inline(always)]
    fn byte(self, off: u32) -> usize {
        self.to_be_bytes()[(off / 8) as usize & 3] as usize
    }
    #[inline(always)]
    fn top(self, n: u32) -> usize {
        self.chunk(0, n)
    }
    #[inline]
    fn masked(self, len: u32) -> Self {
        if len == 0 {
            0
        } else {
            self & (u32::MAX << (32 - len))
        }
    }
}

impl Key for u128 {
    const BITS: u32 = 128;
    #[inline(always)]
    fn chunk(self, off: u32, n: u32) -> usize {
        ((self << off) >> (128 - n)) as usize
    }
    #[inline(always)]
    fn byte(self, off: u32) -> usize {
        // A byte of the key's memory image, where a variable u128 shift is a dozen
        // instructions with branches: a fifth of an IPv6 lookup's work.
        self.to_be_bytes()[(off / 8) as usize & 15] as usize
    }
    #[inline(always)]
    fn top(self, n: u32) -> usize {
        ((self >> 96) as u32 >> (32 - n)) as usize
    }
    #[inline]
    fn masked(self, len: u32) -> Self {
        if len == 0 {
            0
        } else {
            self & (u128::MAX << (128 - len))
        }
    }
}

#[inline(always)]
pub(crate) const fn route_entry(value: u32, depth: u32) -> u32 {
    VALID | (depth << DEPTH_SHIFT) | value
}

#[inline(always)]
const fn depth(entry: u32) -> u32 {
    (entry >> DEPTH_SHIFT) & 0xFF
}

/// The prefix length of a route entry as a lookup returns it (never `EXT`).
#[inline(always)]
pub(crate) const fn entry_depth(entry: u32) -> u32 {
    depth(entry)
}

// unsafe: the zeroed allocation is taken as initialised without writing 64 MiB of zeros.
#[allow(unsafe_code)]
fn zeroed(n: usize) -> Box<[AtomicU32]> {
    // Zero is a valid AtomicU32 (the "no route" entry). Large zeroed allocations come from
    // calloc/mmap, so pages of an unused node pool cost no memory until written.
    let b = Box::<[AtomicU32]>::new_zeroed_slice(n);
    // SAFETY: every bit pattern, and so all-zero, is a valid AtomicU32.
    let b = unsafe { b.assume_init() };
    huge_pages(&b);
    b
}

/// Touches every page of a table, so that the kernel gives it memory (zeroed) now, as
/// rte_fib and rte_lpm zero their tables when created. The root is what any full table
/// writes all of: left to the first load, zeroing its pages was a large share of a
/// FIB-only agent's intake of the full tables (docs/benchmarks.md), and a machine short of
/// memory is better told so at start than in the middle of a load.
fn prefault(table: &[AtomicU32]) {
    const ENTRIES_PER_PAGE: usize = 4096 / std::mem::size_of::<AtomicU32>();
    for entry in table.iter().step_by(ENTRIES_PER_PAGE) {
        // A write, not a load (a read of an untouched page maps the shared zero page), that
        // leaves the entry as it is: called on a table in use, it changes no route. Not
        // `fetch_or(0)`: LLVM turns an RMW that changes nothing into a fenced load.
        let _ = entry.compare_exchange(0, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Asks for transparent huge pages under a large table: random lookups over the 64 MiB
/// IPv4 root otherwise take a TLB miss on top of nearly every cache miss.
// unsafe: madvise(2) on the table's own pages.
#[allow(unsafe_code)]
fn huge_pages(table: &[AtomicU32]) {
    const HUGE: usize = 2 << 20;
    let start = table.as_ptr() as usize;
    let end = start + std::mem::size_of_val(table);
    let aligned = (start + HUGE - 1) & !(HUGE - 1);
    if end > aligned + HUGE {
        // SAFETY: FFI. The range lies inside memory this allocation owns; MADV_HUGEPAGE is
        // advice that never changes contents, and its failure (THP off) is harmless.
        unsafe {
            libc::madvise(aligned as *mut libc::c_void, (end - aligned) & !(HUGE - 1), libc::MADV_HUGEPAGE);
        }
    }
}

/// The part of a table that readers touch.
pub(crate) struct DirShared {
    root_bits: u32,
    root: Box<[AtomicU32]>,
    nodes: Box<[AtomicU32]>,
}

impl DirShared {
    /// The entry that answers `key`: 0 when no route covers it, else a route entry.
    #[inline(always)]
    pub(crate) fn lookup<K: Key>(&self, key: K) -> u32 {
        self.below_root(self.root[key.top(self.root_bits)].load(Ordering::Acquire), key)
    }

    /// The entry that answers `key` given its root entry `e`: `e` itself, or the walk
    /// down the nodes it points to.
    #[inline(always)]
    fn below_root<K: Key>(&self, mut e: u32, key: K) -> u32 {
        let mut off = self.root_bits;
        while e & EXT != 0 {
            let node = (e & VALUE_MASK) as usize;
            e = self.nodes[node * NODE + key.byte(off)].load(Ordering::Acquire);
            off += STRIDE;
        }
        e
    }

    /// Looks up a batch so that the cache misses of different keys overlap instead of
    /// forming one chain per key. A prefetch leaves the core at once, where a load that
    /// misses holds back every later instruction from retiring, so with loads alone the
    /// out-of-order window, not the memory, caps the misses in flight (rte_fib's scalar
    /// lookup prefetches too).
    ///
    /// A root larger than the caches hold (IPv4's 64 MiB): every key's root entry is
    /// asked for first, then each key is resolved in turn, its rare deeper levels
    /// (prefixes longer than the root's) walked at once. A small root (IPv6's 256 KiB,
    /// which stays in L2, where asking costs more than it gains) and deep tries: level by
    /// level, the next level of every entry that needs one, each level two passes over
    /// the keys still unresolved (kept packed, so that a level costs nothing for keys that
    /// ended above it): the first asks for their entries, the second loads them.
    ///
    /// `ASKED`: the caller has asked for every key's root entry (`prefetch_root`) already,
    /// as the pipeline does while it parses: the batch does not ask again.
    #[inline]
    pub(crate) fn lookup_batch<K: Key, const ASKED: bool>(&self, keys: &[K], out: &mut [u32]) {
        debug_assert!(out.len() >= keys.len());
        for (keys, out) in keys.chunks(LOOKUP_CHUNK).zip(out.chunks_mut(LOOKUP_CHUNK)) {
            self.lookup_chunk::<K, ASKED>(keys, out);
        }
    }

    #[inline(always)]
    fn lookup_chunk<K: Key, const ASKED: bool>(&self, keys: &[K], out: &mut [u32]) {
        if self.root_bits > PREFETCHED_ROOT_BITS {
            // No packed list of the keys that go deeper here (few do): kept per key, it
            // waited on each key's miss and filled the core's window, so fewer misses
            // were in flight. Resolving each key at once is 1.1x-1.3x as fast on the full
            // IPv4 table (docs/benchmarks.md, "Why random IPv4 keys lag rte_fib").
            if !ASKED {
                for k in keys {
                    self.prefetch_root(*k);
                }
            }
            for (k, o) in keys.iter().zip(out.iter_mut()) {
                let e = self.root[k.top(self.root_bits)].load(Ordering::Acquire);
                *o = if e & EXT != 0 { self.below_root(e, *k) } else { e };
            }
            return;
        }
        // Positions whose entry points at a node, packed: n <= i, so in bounds.
        let mut deeper = [0u8; LOOKUP_CHUNK];
        let mut n = 0;
        for (i, (k, o)) in keys.iter().zip(out.iter_mut()).enumerate() {
            *o = self.root[k.top(self.root_bits)].load(Ordering::Acquire);
            deeper[n] = i as u8;
            n += (*o & EXT != 0) as usize;
        }
        if n == 0 {
            return;
        }
        let mut off = self.root_bits;
        // The node entry each of them reads next, worked out once for both passes.
        let mut slot = [0usize; LOOKUP_CHUNK];
        while n > 0 {
            for (&i, s) in deeper[..n].iter().zip(slot.iter_mut()) {
                let (e, k) = (out[i as usize], keys[i as usize]);
                *s = (e & VALUE_MASK) as usize * NODE + k.byte(off);
                if let Some(entry) = self.nodes.get(*s) {
                    prefetch_ref(entry);
                }
            }
            let mut still = 0;
            for j in 0..n {
                let i = deeper[j] as usize;
                out[i] = self.nodes[slot[j]].load(Ordering::Acquire);
                deeper[still] = i as u8;
                still += (out[i] & EXT != 0) as usize;
            }
            n = still;
            off += STRIDE;
        }
    }

    /// Asks for the root entry of `key`: the first load of its lookup.
    #[inline(always)]
    pub(crate) fn prefetch_root<K: Key>(&self, key: K) {
        if let Some(e) = self.root.get(key.top(self.root_bits)) {
            prefetch_ref(e);
        }
    }

    fn slots(&self, node: Option<u32>) -> &[AtomicU32] {
        match node {
            None => &self.root,
            Some(n) => &self.nodes[n as usize * NODE..(n as usize + 1) * NODE],
        }
    }
}

/// Sizes of one table, for operators and capacity planning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    pub routes: usize,
    pub route_capacity: usize,
    pub nodes_used: usize,
    pub node_capacity: usize,
    /// Bytes of entry memory in use: the root plus the nodes in use.
    pub entry_bytes: usize,
}

/// The writer's side of a table: the shared entries plus the rule set they are computed
/// from, the node allocator, and nodes waiting out a grace period.
pub(crate) struct DirTable<K: Key> {
    pub(crate) shared: std::sync::Arc<DirShared>,
    /// Installed routes by length: prefix → value.
    rules: Vec<HashMap<K, u32>>,
    routes: usize,
    route_capacity: usize,
    free: Vec<u32>,
    retired: VecDeque<(u64, u32)>,
    fresh: u32,
    node_capacity: u32,
}

impl<K: Key> DirTable<K> {
    pub(crate) fn new(root_bits: u32, route_capacity: usize, node_capacity: u32) -> Self {
        assert!((STRIDE..=24).contains(&root_bits) && (K::BITS - root_bits).is_multiple_of(STRIDE));
        assert!(node_capacity <= VALUE_MASK + 1);
        DirTable {
            shared: std::sync::Arc::new(DirShared {
                root_bits,
                root: zeroed(1 << root_bits),
                nodes: zeroed(node_capacity as usize * NODE),
            }),
            rules: (0..=K::BITS).map(|_| HashMap::default()).collect(),
            routes: 0,
            route_capacity,
            free: Vec::new(),
            retired: VecDeque::new(),
            fresh: 0,
            node_capacity,
        }
    }

    /// Gives the root its memory now (see `prefault`); the nodes are taken as routes need
    /// them, and their pages are left to the kernel.
    pub(crate) fn prefault_root(&self) {
        prefault(&self.shared.root);
    }

    pub(crate) fn routes(&self) -> usize {
        self.routes
    }

    pub(crate) fn route_capacity(&self) -> usize {
        self.route_capacity
    }

    pub(crate) fn get(&self, prefix: K, len: u32) -> Option<u32> {
        self.rules[len as usize].get(&prefix).copied()
    }

    pub(crate) fn stats(&self) -> TableStats {
        let used = self.fresh as usize - self.free.len();
        TableStats {
            routes: self.routes,
            route_capacity: self.route_capacity,
            nodes_used: used,
            node_capacity: self.node_capacity as usize,
            entry_bytes: (self.shared.root.len() + used * NODE) * 4,
        }
    }

    /// Every installed route, shortest first.
    pub(crate) fn rules(&self) -> impl Iterator<Item = (K, u32, u32)> + '_ {
        self.rules.iter().enumerate().flat_map(|(len, m)| m.iter().map(move |(k, v)| (*k, len as u32, *v)))
    }

    /// Nodes this batch may need beyond those that exist: every node on an added route's
    /// path that is missing now, plus every existing one a delete in the batch might
    /// collapse. An upper bound, so that apply never runs out halfway.
    pub(crate) fn nodes_needed(&self, adds: &[(K, u32)], deletes: &[(K, u32)]) -> usize {
        let root_bits = self.shared.root_bits;
        let mut on_delete_paths = HashSet::default();
        for &(k, len) in deletes {
            let mut off = root_bits;
            while off < len {
                on_delete_paths.insert((k.masked(off), off));
                off += STRIDE;
            }
        }
        let mut needed = HashSet::default();
        for &(k, len) in adds {
            let mut off = root_bits;
            let mut node: Option<u32> = None;
            let mut exists = true;
            while off < len {
                let id = (k.masked(off), off);
                if exists {
                    let stride = if node.is_none() { root_bits } else { STRIDE };
                    let e = self.shared.slots(node)[k.chunk(off - stride, stride)].load(Ordering::Relaxed);
                    if e & EXT != 0 {
                        node = Some(e & VALUE_MASK);
                    } else {
                        exists = false;
                    }
                }
                if !exists || on_delete_paths.contains(&id) {
                    needed.insert(id);
                }
                off += STRIDE;
            }
        }
        needed.len()
    }

    /// Nodes available now, and after the writer waits out pending grace periods.
    pub(crate) fn nodes_available(&self) -> (usize, usize) {
        let now = self.free.len() + (self.node_capacity - self.fresh) as usize;
        (now, now + self.retired.len())
    }

    /// Moves nodes whose grace period is over back to the free list.
    pub(crate) fn reclaim(&mut self, qsbr: &Qsbr<FibDomain>, wait: bool) {
        if wait {
            if let Some(&(e, _)) = self.retired.back() {
                qsbr.synchronize(e);
            }
        }
        while let Some(&(e, n)) = self.retired.front() {
            if !qsbr.passed(e) {
                break;
            }
            self.retired.pop_front();
            self.free.push(n);
        }
    }

    fn alloc_node(&mut self) -> u32 {
        if let Some(n) = self.free.pop() {
            return n;
        }
        // Validation counted the nodes a batch needs; running out here is a bug.
        assert!(self.fresh < self.node_capacity, "FIB node pool exhausted after validation");
        self.fresh += 1;
        self.fresh - 1
    }

    /// Adds or replaces a route. Capacity was checked by the caller's validation.
    pub(crate) fn insert(&mut self, qsbr: &Qsbr<FibDomain>, prefix: K, len: u32, value: u32) -> Option<u32> {
        let old = self.rules[len as usize].insert(prefix, value);
        if old.is_none() {
            self.routes += 1;
        }
        if old != Some(value) {
            self.add_at(qsbr, None, 0, prefix, len, route_entry(value, len));
        }
        old
    }

    /// Deletes a route; the covering route, if any, takes its place. Absent is not an error.
    pub(crate) fn remove(&mut self, qsbr: &Qsbr<FibDomain>, prefix: K, len: u32) -> Option<u32> {
        let old = self.rules[len as usize].remove(&prefix)?;
        self.routes -= 1;
        let replacement =
            (0..len).rev().find_map(|l| self.rules[l as usize].get(&prefix.masked(l)).map(|v| route_entry(*v, l))).unwrap_or(0);
        self.delete_at(qsbr, None, 0, prefix, len, replacement);
        Some(old)
    }

    fn span(&self, node: Option<u32>, off: u32, prefix: K, len: u32) -> (u32, usize, usize) {
        let stride = if node.is_none() { self.shared.root_bits } else { STRIDE };
        let end = off + stride;
        let count = 1usize << (end - len.max(off));
        (end, prefix.chunk(off, stride) & !(count - 1), count)
    }

    fn add_at(&mut self, qsbr: &Qsbr<FibDomain>, node: Option<u32>, off: u32, prefix: K, len: u32, new: u32) {
        let stride = if node.is_none() { self.shared.root_bits } else { STRIDE };
        let end = off + stride;
        if len <= end {
            let (_, first, count) = self.span(node, off, prefix, len);
            for i in first..first + count {
                let e = self.shared.slots(node)[i].load(Ordering::Relaxed);
                if e & EXT != 0 {
                    self.add_at(qsbr, Some(e & VALUE_MASK), end, prefix, len, new);
                    self.try_collapse(qsbr, node, i, end);
                } else if e & VALID == 0 || depth(e) <= len {
                    self.shared.slots(node)[i].store(new, Ordering::Release);
                }
            }
        } else {
            let i = prefix.chunk(off, stride);
            let e = self.shared.slots(node)[i].load(Ordering::Relaxed);
            let child = if e & EXT != 0 {
                e & VALUE_MASK
            } else {
                let c = self.alloc_node();
                // Push the entry down into every slot of the new node before readers can
                // reach it; the Release store below publishes the filled node.
                for s in self.shared.slots(Some(c)) {
                    s.store(e, Ordering::Relaxed);
                }
                self.shared.slots(node)[i].store(VALID | EXT | c, Ordering::Release);
                c
            };
            self.add_at(qsbr, Some(child), end, prefix, len, new);
        }
    }

    fn delete_at(&mut self, qsbr: &Qsbr<FibDomain>, node: Option<u32>, off: u32, prefix: K, len: u32, repl: u32) {
        let stride = if node.is_none() { self.shared.root_bits } else { STRIDE };
        let end = off + stride;
        if len <= end {
            let (_, first, count) = self.span(node, off, prefix, len);
            for i in first..first + count {
                let e = self.shared.slots(node)[i].load(Ordering::Relaxed);
                if e & EXT != 0 {
                    self.delete_at(qsbr, Some(e & VALUE_MASK), end, prefix, len, repl);
                    self.try_collapse(qsbr, node, i, end);
                } else if e & VALID != 0 && depth(e) == len {
                    self.shared.slots(node)[i].store(repl, Ordering::Release);
                }
            }
        } else {
            let i = prefix.chunk(off, stride);
            let e = self.shared.slots(node)[i].load(Ordering::Relaxed);
            if e & EXT != 0 {
                self.delete_at(qsbr, Some(e & VALUE_MASK), end, prefix, len, repl);
                self.try_collapse(qsbr, node, i, end);
            }
        }
    }

    /// Folds the node under `parent[i]` back into one entry when all its slots hold the
    /// same route from `child_off` bits or shorter (or no route), and retires it.
    fn try_collapse(&mut self, qsbr: &Qsbr<FibDomain>, parent: Option<u32>, i: usize, child_off: u32) {
        let e = self.shared.slots(parent)[i].load(Ordering::Relaxed);
        if e & EXT == 0 {
            return;
        }
        let child = e & VALUE_MASK;
        let slots = self.shared.slots(Some(child));
        let first = slots[0].load(Ordering::Relaxed);
        if first & EXT != 0 || (first & VALID != 0 && depth(first) > child_off) {
            return;
        }
        if slots.iter().any(|s| s.load(Ordering::Relaxed) != first) {
            return;
        }
        self.shared.slots(parent)[i].store(first, Ordering::Release);
        let epoch = qsbr.retire_epoch();
        self.retired.push_back((epoch, child));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The lookups' shortcuts read the bits that the general `chunk` reads.
        #[test]
        fn top_and_byte_are_chunks(k4 in any::<u32>(), k6 in any::<u128>(), n in STRIDE..=24, at in 0u32..16) {
            prop_assert_eq!(k4.top(n), k4.chunk(0, n));
            prop_assert_eq!(k6.top(n), k6.chunk(0, n));
            prop_assert_eq!(k4.byte(at % 4 * 8), k4.chunk(at % 4 * 8, STRIDE));
            prop_assert_eq!(k6.byte(at * 8), k6.chunk(at * 8, STRIDE));
        }
    }
}
