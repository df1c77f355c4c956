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
//! Readers never wait for the writer. The writer polls (`poll`) or waits (`synchronize`).

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
        QsbrReader { domain: self.clone(), slot }
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

/// A registered reader. Announce `quiescent` whenever no reference obtained from the
/// protected structures is held; go `offline` before sleeping so the writer need not wait.
pub struct QsbrReader {
    domain: Arc<Qsbr>,
    slot: Arc<Slot>,
}

impl QsbrReader {
    #[inline]
    pub fn quiescent(&mut self) {
        // Acquire load: reading epoch E synchronises with the writer's increment, so every
        // later read here sees what the writer unlinked before E. Release store: every read
        // this reader made before now is ordered before the writer's scan that sees E.
        // Both are plain moves on x86.
        let e = self.domain.epoch.load(Ordering::Acquire);
        self.slot.seen.store(e, Ordering::Release);
    }

    pub fn offline(&mut self) {
        self.slot.seen.store(OFFLINE, Ordering::Release);
    }

    pub fn online(&mut self) {
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

/// A fixed array of optional objects that readers borrow without locks and the writer
/// replaces whole, freeing the old object only after a grace period. The borrow a reader
/// gets lives no longer than its `&QsbrReader`, and `quiescent` takes `&mut QsbrReader`,
/// so the compiler enforces that no reference survives a quiescent announcement.
pub struct RcuArray<T> {
    slots: Box<[AtomicPtr<T>]>,
}

// SAFETY: the array hands out `&T` to many threads (needs T: Sync) and the writer drops
// objects on its own thread (needs T: Send).
unsafe impl<T: Send + Sync> Sync for RcuArray<T> {}
// SAFETY: as above; the raw pointers are owned boxes.
unsafe impl<T: Send + Sync> Send for RcuArray<T> {}

impl<T> RcuArray<T> {
    pub fn new(len: usize) -> Self {
        RcuArray { slots: (0..len).map(|_| AtomicPtr::new(std::ptr::null_mut())).collect() }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The object at `i`, valid until the reader's next quiescent state.
    #[inline(always)]
    pub fn get<'r>(&'r self, i: usize, _reader: &'r QsbrReader) -> Option<&'r T> {
        // Acquire pairs with the writer's Release swap: the object was fully built first.
        let p = self.slots.get(i)?.load(Ordering::Acquire);
        // SAFETY: a non-null pointer came from Box::into_raw in `replace`; the writer frees
        // it only after a grace period that this reader's next `quiescent` (which needs
        // `&mut` and so ends this borrow) must precede.
        unsafe { p.as_ref() }
    }

    /// The object at `i` as the writer sees it. Only the writer may call this.
    pub fn get_writer(&self, i: usize) -> Option<&T> {
        let p = self.slots.get(i)?.load(Ordering::Acquire);
        // SAFETY: only the writer frees objects, and it cannot while this borrow lives.
        unsafe { p.as_ref() }
    }

    /// Publishes `new` at `i` and hands back the old object for deferred freeing.
    pub fn replace(&self, i: usize, new: Option<Box<T>>) -> Retired<T> {
        let p = new.map_or(std::ptr::null_mut(), Box::into_raw);
        // AcqRel: Release publishes the new object; Acquire makes the old one ours to free.
        let old = self.slots[i].swap(p, Ordering::AcqRel);
        Retired { ptr: old, epoch: 0 }
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

/// An object unlinked from an `RcuArray`, waiting for its grace period.
pub struct Retired<T> {
    ptr: *mut T,
    epoch: u64,
}

// SAFETY: a retired object is owned by the writer alone; readers only still read it.
unsafe impl<T: Send + Sync> Send for Retired<T> {}

impl<T> Retired<T> {
    pub fn is_null(&self) -> bool {
        self.ptr.is_null()
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
    pub fn push(&mut self, mut r: Retired<T>, epoch: u64) {
        if !r.ptr.is_null() {
            r.epoch = epoch;
            self.pending.push_back(r);
        }
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Frees what every reader has stopped seeing; with `wait`, waits for all of it.
    pub fn reclaim(&mut self, qsbr: &Qsbr, wait: bool) {
        if wait {
            if let Some(last) = self.pending.back() {
                qsbr.synchronize(last.epoch);
            }
        }
        while let Some(r) = self.pending.front() {
            if !qsbr.passed(r.epoch) {
                break;
            }
            let r = self.pending.pop_front().expect("front exists");
            // SAFETY: the pointer came from Box::into_raw and its grace period is over, so
            // no reader holds it.
            drop(unsafe { Box::from_raw(r.ptr) });
        }
    }
}

impl<T> Drop for RetireList<T> {
    fn drop(&mut self) {
        for r in self.pending.drain(..) {
            // SAFETY: the list is dropped with the FIB writer, after the readers' shared
            // tables are gone or no reader can reach these unlinked objects any more. The
            // Fib drops its RetireLists only after waiting for every grace period.
            drop(unsafe { Box::from_raw(r.ptr) });
        }
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
}
