//! Quiescent-state-based reclamation (QSBR), the scheme of the Linux kernel's RCU and
//! DPDK's `rte_rcu_qsbr`. Forwarding workers read the FIB without locks; the single writer
//! unlinks structures and may reuse or free them only after every registered reader has
//! announced a quiescent state (a point where it holds no reference into the FIB, which for
//! a worker is the end of each batch).
//!
//! Written here rather than taken from a crate: epoch crates (crossbeam-epoch, seize) pin
//! per access and may run deferred destructors on reader threads; QSBR costs a reader one
//! relaxed load and one release store per batch and never runs writer work on it.
//!
//! Readers never wait for the writer. The writer polls (`passed`) or waits (`synchronize`).
//!
//! The rules are enforced, not only documented: a borrow from an `RcuArray` needs an online
//! reader of the array's own domain (`get` answers `None` to any other) and lives no
//! longer than that reader's shared borrow, while `quiescent` and `offline` take it
//! mutably; a replaced object is freed only once its domain's grace period has passed.
// unsafe: RcuArray hands out references through raw pointers whose lifetime the grace
// periods guarantee, which is the point of this module.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A slot value meaning "this reader holds no references and is not counted".
const OFFLINE: u64 = 0;

/// One reader's announcement, on its own cache line so readers never share a written line.
#[repr(align(64))]
struct Slot {
    seen: AtomicU64,
}

/// The shared QSBR domain: a global epoch and the registered readers.
pub struct Qsbr {
    epoch: AtomicU64,
    // Taken only to register/unregister a reader and by the writer's scan, never on a
    // reader's hot path.
    slots: Mutex<Vec<Arc<Slot>>>,
}

impl Default for Qsbr {
    fn default() -> Self {
        Qsbr { epoch: AtomicU64::new(1), slots: Mutex::new(Vec::new()) }
    }
}

impl Qsbr {
    pub fn new() -> Arc<Qsbr> {
        Arc::new(Qsbr::default())
    }

    /// Registers a reader, online from the start.
    pub fn register(self: &Arc<Self>) -> QsbrReader {
        let slot = Arc::new(Slot { seen: AtomicU64::new(self.epoch.load(Ordering::SeqCst)) });
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).push(slot.clone());
        QsbrReader { domain: self.clone(), slot, online: true }
    }

    /// Starts a grace period after the writer has unlinked something; returns its epoch.
    /// Whatever was unlinked before this call may be reclaimed once `passed(epoch)`.
    pub fn retire_epoch(&self) -> u64 {
        // SeqCst: the unlinking stores that precede this increment must be visible to any
        // reader that later observes the new epoch.
        self.epoch.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// True when every online reader has announced a quiescent state at or after `epoch`.
    pub fn passed(&self, epoch: u64) -> bool {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.iter().all(|s| {
            // SeqCst pairs with the reader's SeqCst online store (see `QsbrReader::online`).
            let seen = s.seen.load(Ordering::SeqCst);
            seen == OFFLINE || seen >= epoch
        })
    }

    /// Waits until every online reader has passed `epoch`. Writer-side only.
    pub fn synchronize(&self, epoch: u64) {
        let mut spins = 0u32;
        while !self.passed(epoch) {
            spins += 1;
            if spins < 64 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    pub fn readers(&self) -> usize {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A registered reader of one domain. Announce `quiescent` whenever no reference obtained
/// from the protected structures is held; go `offline` before sleeping so the writer need
/// not wait. An offline reader reads nothing until it comes back `online`.
pub struct QsbrReader {
    domain: Arc<Qsbr>,
    slot: Arc<Slot>,
    /// Mirrors whether `slot` holds OFFLINE; only this reader writes either.
    online: bool,
}

impl QsbrReader {
    /// Whether `self` may read the structures of `domain` now.
    #[inline(always)]
    fn reads(&self, domain: &Arc<Qsbr>) -> bool {
        self.online && Arc::ptr_eq(&self.domain, domain)
    }

    /// Announces that no reference from this reader is held. Does nothing offline: coming
    /// back takes `online`, whose stronger ordering the writer's scan relies on.
    #[inline]
    pub fn quiescent(&mut self) {
        if !self.online {
            return;
        }
        // Acquire load: reading epoch E synchronises with the writer's increment, so every
        // later read here sees what the writer unlinked before E. Release store: every read
        // this reader made before now is ordered before the writer's scan that sees E.
        // Both are plain moves on x86.
        let e = self.domain.epoch.load(Ordering::Acquire);
        self.slot.seen.store(e, Ordering::Release);
    }

    pub fn offline(&mut self) {
        self.online = false;
        self.slot.seen.store(OFFLINE, Ordering::Release);
    }

    pub fn online(&mut self) {
        self.online = true;
        // SeqCst store, then every later read: if the writer's scan missed this store it
        // happened after the scan, so the reads that follow see the writer's unlinks.
        let e = self.domain.epoch.load(Ordering::SeqCst);
        self.slot.seen.store(e, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
    }
}

impl Drop for QsbrReader {
    fn drop(&mut self) {
        let mut slots = self.domain.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|s| !Arc::ptr_eq(s, &self.slot));
    }
}

/// A fixed array of optional objects that readers of one domain borrow without locks and
/// the writer replaces whole, freeing the old object only after a grace period. The borrow
/// a reader gets lives no longer than its `&QsbrReader`, and `quiescent` and `offline` take
/// `&mut QsbrReader`, so the compiler enforces that no reference survives a quiescent
/// announcement.
pub struct RcuArray<T> {
    domain: Arc<Qsbr>,
    slots: Box<[AtomicPtr<T>]>,
}

// SAFETY: the array hands out `&T` to many threads (needs T: Sync) and the writer drops
// objects on its own thread (needs T: Send).
unsafe impl<T: Send + Sync> Sync for RcuArray<T> {}
// SAFETY: as above; the raw pointers are owned boxes.
unsafe impl<T: Send + Sync> Send for RcuArray<T> {}

impl<T> RcuArray<T> {
    /// An array of `len` empty slots whose objects are reclaimed in `domain`'s grace periods.
    pub fn new(domain: &Arc<Qsbr>, len: usize) -> Self {
        RcuArray { domain: domain.clone(), slots: (0..len).map(|_| AtomicPtr::new(std::ptr::null_mut())).collect() }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The object at `i`, valid until the reader's next quiescent state; `None` as well
    /// when `reader` is offline or registered with another domain than this array's.
    #[inline(always)]
    pub fn get<'r>(&'r self, i: usize, reader: &'r QsbrReader) -> Option<&'r T> {
        if !reader.reads(&self.domain) {
            return None;
        }
        // Acquire pairs with the writer's Release swap: the object was fully built first.
        let p = self.slots.get(i)?.load(Ordering::Acquire);
        // SAFETY: a non-null pointer came from Box::into_raw in `replace`. Once replaced, it
        // is freed only after a grace period of this array's domain has passed (see
        // `RetireList::reclaim`), and `reader` is an online reader of that domain: the grace
        // period needs it to announce `quiescent` or go `offline`, both of which take it
        // mutably and so end this borrow first.
        unsafe { p.as_ref() }
    }

    /// Publishes `new` at `i` and hands back the old object, stamped with the grace period
    /// that must pass before it is freed. Panics when `i` is out of bounds (a writer bug).
    pub fn replace(&self, i: usize, new: Option<Box<T>>) -> Retired<T> {
        let p = new.map_or(std::ptr::null_mut(), Box::into_raw);
        // AcqRel: Release publishes the new object; Acquire makes the old one ours to free.
        let old = self.slots[i].swap(p, Ordering::AcqRel);
        // The epoch is taken after the unlinking swap (see `Qsbr::retire_epoch`).
        Retired { ptr: old, epoch: self.domain.retire_epoch(), domain: self.domain.clone() }
    }
}

impl<T> Drop for RcuArray<T> {
    fn drop(&mut self) {
        for s in self.slots.iter() {
            let p = s.swap(std::ptr::null_mut(), Ordering::AcqRel);
            if !p.is_null() {
                // SAFETY: dropping the array means no reader holds it any more.
                drop(unsafe { Box::from_raw(p) });
            }
        }
    }
}

/// An object unlinked from an `RcuArray`, waiting for its domain's grace period. Dropped
/// without being pushed to a `RetireList`, it is leaked, never freed early.
pub struct Retired<T> {
    ptr: *mut T,
    epoch: u64,
    domain: Arc<Qsbr>,
}

// SAFETY: a retired object is owned by the writer alone; readers only still read it.
unsafe impl<T: Send + Sync> Send for Retired<T> {}

impl<T> Retired<T> {
    pub fn is_null(&self) -> bool {
        self.ptr.is_null()
    }

    fn grace_period_over(&self) -> bool {
        self.domain.passed(self.epoch)
    }
}

/// The writer's list of unlinked objects, freed in order as grace periods end.
pub struct RetireList<T> {
    pending: VecDeque<Retired<T>>,
}

impl<T> Default for RetireList<T> {
    fn default() -> Self {
        RetireList { pending: VecDeque::new() }
    }
}

impl<T> RetireList<T> {
    pub fn push(&mut self, r: Retired<T>) {
        if !r.ptr.is_null() {
            self.pending.push_back(r);
        }
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Frees what every reader has stopped seeing; with `wait`, first waits for every
    /// grace period of the list to pass.
    pub fn reclaim(&mut self, wait: bool) {
        if wait {
            for r in &self.pending {
                r.domain.synchronize(r.epoch);
            }
        }
        // Objects of one domain retire in epoch order, so the first one still waiting
        // ends the scan; objects of another domain wait for the next call.
        while self.pending.front().is_some_and(Retired::grace_period_over) {
            let Some(r) = self.pending.pop_front() else { break };
            // SAFETY: the pointer came from Box::into_raw in `RcuArray::replace` and its
            // domain's grace period is over, so no reader holds it.
            drop(unsafe { Box::from_raw(r.ptr) });
        }
    }
}

impl<T> Drop for RetireList<T> {
    /// Frees what is safe to free now and leaks the rest: blocking here could wait forever
    /// on a reader that never goes quiescent, and freeing early could pull memory from
    /// under it. The Fib reclaims with `wait` before it drops its lists, so nothing leaks.
    fn drop(&mut self) {
        self.reclaim(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_period_waits_for_online_readers_only() {
        let q = Qsbr::new();
        let mut a = q.register();
        let mut b = q.register();
        let e = q.retire_epoch();
        assert!(!q.passed(e));
        a.quiescent();
        assert!(!q.passed(e), "b has not announced yet");
        b.offline();
        assert!(q.passed(e));
        b.online();
        let e2 = q.retire_epoch();
        assert!(!q.passed(e2));
        a.quiescent();
        b.quiescent();
        assert!(q.passed(e2));
        drop(a);
        drop(b);
        assert_eq!(q.readers(), 0);
        assert!(q.passed(q.retire_epoch()), "no readers: every grace period is over");
    }

    #[test]
    fn a_reader_reads_only_its_own_domain_and_only_online() {
        let (qa, qb) = (Qsbr::new(), Qsbr::new());
        let array = RcuArray::new(&qa, 2);
        let mut list = RetireList::default();
        list.push(array.replace(0, Some(Box::new(7u32))));
        let mut a = qa.register();
        let b = qb.register();
        assert_eq!(array.get(0, &a), Some(&7));
        assert_eq!(array.get(0, &b), None, "a reader of another domain reads nothing");
        a.offline();
        assert_eq!(array.get(0, &a), None, "an offline reader reads nothing");
        a.quiescent();
        assert_eq!(array.get(0, &a), None, "quiescent does not bring a reader back");
        a.online();
        assert_eq!(array.get(0, &a), Some(&7));
        assert_eq!(array.get(2, &a), None);
    }

    #[test]
    fn retired_objects_wait_for_their_grace_period() {
        let q = Qsbr::new();
        let array = RcuArray::new(&q, 1);
        let mut reader = q.register();
        let mut list = RetireList::default();
        list.push(array.replace(0, Some(Box::new(String::from("old")))));
        assert!(list.is_empty(), "an empty slot retires nothing");
        list.push(array.replace(0, Some(Box::new(String::from("new")))));
        list.reclaim(false);
        assert_eq!(list.len(), 1, "the reader has not passed a quiescent state");
        reader.quiescent();
        list.reclaim(false);
        assert!(list.is_empty());
        assert_eq!(array.get(0, &reader).map(String::as_str), Some("new"));
    }
}
