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
//! # What the compiler enforces, and what is checked at run time
//!
//! A domain is a type: `Qsbr<D>` for a tag type `D` (the FIB's is private to `fib`). Every
//! reader, array and retire list of tag `D` in the process shares one epoch and one reader
//! registry, made on first use and never freed. So "the domain a reader registered with" is
//! part of the reader's type, and the compiler enforces:
//!
//! - a reader reads only arrays of its own domain: `RcuArray<T, D>::get` takes a
//!   `&QsbrReader<D>`, and a reader of another tag does not type-check, not even through
//!   subtyping (the tag is invariant);
//! - no borrow survives a quiescent state: `get` returns a reference that lives no longer
//!   than the shared borrow of the reader, and `quiescent` takes the reader mutably;
//! - an offline reader reads nothing: the only way offline is `offline_while(f)`, which
//!   holds the reader mutably while `f` runs, so `f` cannot use it;
//! - a retired object waits for its own domain: `Retired<T, D>` goes only into a
//!   `RetireList<T, D>`, and both stamp and check epochs of `D`'s registry;
//! - no public function hands out the writer's objects except through a reader.
//!
//! Nothing is checked at run time on a reader's path: `get` is a bounds check, one load and
//! a null test. What remains at run time is the grace period itself (the writer compares
//! each reader's announced epoch with the one it waits for) and the registry's lookup by
//! `TypeId`, done once when a domain handle is made. Domains per instance would need one of
//! two things this module does without: a run-time check of the array's domain on every
//! read (the previous design), or a lifetime brand, which a worker thread that outlives
//! every scope (`std::thread::spawn` needs `'static`) cannot carry.
//!
//! The price of a domain per type: FIBs in one process share grace periods, so a writer
//! may also wait for another FIB's readers (one FIB per process in production; tests with
//! many only wait a little longer). As with one FIB, a thread must not hold an online
//! reader while it waits out a grace period of the same tag (`synchronize`,
//! `RetireList::reclaim(true)`, dropping a FIB): it would wait for itself.
// unsafe: RcuArray hands out references through raw pointers whose lifetime the grace
// periods guarantee, which is the point of this module.
#![allow(unsafe_code)]

use std::any::TypeId;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A slot value meaning "this reader holds no references and is not counted".
const OFFLINE: u64 = 0;

/// One reader's announcement, on its own cache line so readers never share a written line.
#[repr(align(64))]
struct Slot {
    seen: AtomicU64,
}

/// The state of one domain: a global epoch and the registered readers.
struct Registry {
    epoch: AtomicU64,
    // Taken only to register/unregister a reader and by the writer's scan, never on a
    // reader's hot path.
    slots: Mutex<Vec<Arc<Slot>>>,
}

impl Registry {
    fn slots(&self) -> MutexGuard<'_, Vec<Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The registry of tag `D`: the same one for every call in the process, which is what makes
/// the tag a domain. Looked up when a handle is made, never on a reader's path.
fn registry<D: 'static>() -> &'static Registry {
    // A few tags per process: a list beats a map.
    static REGISTRIES: Mutex<Vec<(TypeId, &'static Registry)>> = Mutex::new(Vec::new());
    let mut all = REGISTRIES.lock().unwrap_or_else(|p| p.into_inner());
    let tag = TypeId::of::<D>();
    if let Some(&(_, r)) = all.iter().find(|(t, _)| *t == tag) {
        return r;
    }
    // Leaked on purpose: readers and retired objects of any age may refer to it.
    let r: &'static Registry = Box::leak(Box::new(Registry { epoch: AtomicU64::new(1), slots: Mutex::new(Vec::new()) }));
    all.push((tag, r));
    r
}

/// A handle on the QSBR domain named by the tag type `D`. Every handle of one tag is the
/// same domain; copies are free.
pub struct Qsbr<D> {
    registry: &'static Registry,
    // fn(D) -> D: the handle holds no D, so it is Send, Sync and Copy whatever D is; and
    // D is invariant. Covariance would let a `Qsbr<for<'a> fn(&'a ())>` pass for a
    // `Qsbr<fn(&'static ())>`: a subtype, yet another `TypeId` and so another domain.
    _tag: PhantomData<fn(D) -> D>,
}

impl<D> Clone for Qsbr<D> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<D> Copy for Qsbr<D> {}

impl<D: 'static> Qsbr<D> {
    /// The domain of tag `D`.
    pub fn domain() -> Qsbr<D> {
        Qsbr { registry: registry::<D>(), _tag: PhantomData }
    }
}

impl<D> Qsbr<D> {
    /// Registers a reader, online from the start.
    pub fn register(&self) -> QsbrReader<D> {
        let mut slots = self.registry.slots();
        // Under the lock, so the writer's scan sees either this slot or, after it, an epoch
        // it had already published (see `online` for the same argument).
        let slot = Arc::new(Slot { seen: AtomicU64::new(self.registry.epoch.load(Ordering::SeqCst)) });
        slots.push(slot.clone());
        QsbrReader { registry: self.registry, slot, _tag: PhantomData }
    }

    /// Starts a grace period after the writer has unlinked something; returns its epoch.
    /// Whatever was unlinked before this call may be reclaimed once `passed(epoch)`.
    pub fn retire_epoch(&self) -> u64 {
        // SeqCst: the unlinking stores that precede this increment must be visible to any
        // reader that later observes the new epoch.
        self.registry.epoch.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// True when every online reader has announced a quiescent state at or after `epoch`.
    pub fn passed(&self, epoch: u64) -> bool {
        self.registry.slots().iter().all(|s| {
            // SeqCst pairs with the reader's SeqCst store on coming back online.
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
        self.registry.slots().len()
    }
}

/// A registered reader of domain `D`. Announce `quiescent` whenever no reference obtained
/// from the protected structures is held; sleep inside `offline_while` so the writer need
/// not wait.
///
/// The tag is invariant, so a reader cannot pass for one of another domain by subtyping:
///
/// ```compile_fail,E0308
/// use corridor_engine::qsbr::{Qsbr, QsbrReader};
/// let reader = Qsbr::<for<'a> fn(&'a ())>::domain().register();
/// let _: QsbrReader<fn(&'static ())> = reader;
/// ```
pub struct QsbrReader<D> {
    registry: &'static Registry,
    slot: Arc<Slot>,
    _tag: PhantomData<fn(D) -> D>,
}

impl<D> QsbrReader<D> {
    /// Announces that no reference from this reader is held; taking `self` mutably ends
    /// every borrow `RcuArray::get` handed out.
    #[inline]
    pub fn quiescent(&mut self) {
        // Acquire load: reading epoch E synchronises with the writer's increment, so every
        // later read here sees what the writer unlinked before E. Release store: every read
        // this reader made before now is ordered before the writer's scan that sees E.
        // Both are plain moves on x86.
        let e = self.registry.epoch.load(Ordering::Acquire);
        self.slot.seen.store(e, Ordering::Release);
    }

    /// Runs `f` (a sleep, a poll) with the reader offline, so the writer does not wait for
    /// it, and brings it back online afterwards, even when `f` panics. The reader is
    /// borrowed mutably throughout, so `f` cannot read through it.
    pub fn offline_while<R>(&mut self, f: impl FnOnce() -> R) -> R {
        /// Brings the reader back online when dropped, on return or unwind.
        struct Back<'a> {
            registry: &'static Registry,
            slot: &'a Slot,
        }
        impl Drop for Back<'_> {
            fn drop(&mut self) {
                // SeqCst store, then every later read: if the writer's scan missed this
                // store it happened after the scan, so the reads that follow see the
                // writer's unlinks.
                let e = self.registry.epoch.load(Ordering::SeqCst);
                self.slot.seen.store(e, Ordering::SeqCst);
                std::sync::atomic::fence(Ordering::SeqCst);
            }
        }
        // Release: the reads before going offline are ordered before a scan that sees it.
        self.slot.seen.store(OFFLINE, Ordering::Release);
        let _back = Back { registry: self.registry, slot: &self.slot };
        f()
    }
}

impl<D> Drop for QsbrReader<D> {
    fn drop(&mut self) {
        self.registry.slots().retain(|s| !Arc::ptr_eq(s, &self.slot));
    }
}

/// A fixed array of optional objects that readers of domain `D` borrow without locks and
/// the writer replaces whole, freeing the old object only after a grace period of `D`.
///
/// A borrow lives no longer than the reader's shared borrow, so it cannot be kept past
/// `quiescent`:
///
/// ```compile_fail,E0502
/// use corridor_engine::qsbr::{Qsbr, RcuArray};
/// struct Fib;
/// let q = Qsbr::<Fib>::domain();
/// let array: RcuArray<u32, Fib> = RcuArray::new(&q, 1);
/// let mut reader = q.register();
/// let kept = array.get(0, &reader);
/// reader.quiescent();
/// println!("{kept:?}");
/// ```
///
/// A reader of another domain does not type-check:
///
/// ```compile_fail,E0308
/// use corridor_engine::qsbr::{Qsbr, RcuArray};
/// struct Fib;
/// struct Other;
/// let array: RcuArray<u32, Fib> = RcuArray::new(&Qsbr::<Fib>::domain(), 1);
/// let stranger = Qsbr::<Other>::domain().register();
/// array.get(0, &stranger);
/// ```
///
/// An offline reader cannot read:
///
/// ```compile_fail,E0502
/// use corridor_engine::qsbr::{Qsbr, RcuArray};
/// struct Fib;
/// let q = Qsbr::<Fib>::domain();
/// let array: RcuArray<u32, Fib> = RcuArray::new(&q, 1);
/// let mut reader = q.register();
/// reader.offline_while(|| array.get(0, &reader).copied());
/// ```
pub struct RcuArray<T, D> {
    domain: Qsbr<D>,
    slots: Box<[AtomicPtr<T>]>,
}

// SAFETY: the array hands out `&T` to many threads (needs T: Sync) and the writer drops
// objects on its own thread (needs T: Send); the domain handle is a shared reference to a
// registry of atomics and a mutex.
unsafe impl<T: Send + Sync, D> Sync for RcuArray<T, D> {}
// SAFETY: as above; the raw pointers are owned boxes.
unsafe impl<T: Send + Sync, D> Send for RcuArray<T, D> {}

impl<T, D> RcuArray<T, D> {
    /// An array of `len` empty slots whose objects are reclaimed in `domain`'s grace periods.
    pub fn new(domain: &Qsbr<D>, len: usize) -> Self {
        RcuArray { domain: *domain, slots: (0..len).map(|_| AtomicPtr::new(std::ptr::null_mut())).collect() }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The object at `i`, valid until the reader's next quiescent state.
    #[inline(always)]
    pub fn get<'r>(&'r self, i: usize, _reader: &'r QsbrReader<D>) -> Option<&'r T> {
        // Acquire pairs with the writer's Release swap: the object was fully built first.
        let p = self.slots.get(i)?.load(Ordering::Acquire);
        // SAFETY: a non-null pointer came from Box::into_raw in `replace`. Once replaced, it
        // is freed only after a grace period of domain D has passed (`RetireList::reclaim`;
        // a `Retired` dropped unpushed leaks). `_reader` is a reader of D (its type says so,
        // and D has one registry per process), and it is online: it can go offline only
        // inside `offline_while`, which borrows it mutably. The grace period needs it to
        // announce `quiescent`, drop, or go offline, each of which takes it mutably or by
        // value and so ends this borrow first.
        unsafe { p.as_ref() }
    }

    /// Publishes `new` at `i` and hands back the old object, stamped with the grace period
    /// that must pass before it is freed. Panics when `i` is out of bounds (a writer bug).
    pub fn replace(&self, i: usize, new: Option<Box<T>>) -> Retired<T, D> {
        let p = new.map_or(std::ptr::null_mut(), Box::into_raw);
        // AcqRel: Release publishes the new object; Acquire makes the old one ours to free.
        let old = self.slots[i].swap(p, Ordering::AcqRel);
        // The epoch is taken after the unlinking swap (see `Qsbr::retire_epoch`).
        Retired { ptr: old, epoch: self.domain.retire_epoch(), _tag: PhantomData }
    }
}

impl<T, D> Drop for RcuArray<T, D> {
    fn drop(&mut self) {
        for s in self.slots.iter() {
            let p = s.swap(std::ptr::null_mut(), Ordering::AcqRel);
            if !p.is_null() {
                // SAFETY: dropping the array means no reader holds a borrow of it any more.
                drop(unsafe { Box::from_raw(p) });
            }
        }
    }
}

/// An object unlinked from an `RcuArray` of domain `D`, waiting for `D`'s grace period.
/// Dropped without being pushed to a `RetireList`, it is leaked, never freed early.
pub struct Retired<T, D> {
    ptr: *mut T,
    epoch: u64,
    _tag: PhantomData<fn(D) -> D>,
}

// SAFETY: a retired object is owned by the writer alone; readers only still read it.
unsafe impl<T: Send + Sync, D> Send for Retired<T, D> {}

impl<T, D> Retired<T, D> {
    pub fn is_null(&self) -> bool {
        self.ptr.is_null()
    }
}

/// The writer's list of objects unlinked in domain `D`, freed in order as grace periods end.
pub struct RetireList<T, D> {
    domain: Qsbr<D>,
    pending: VecDeque<Retired<T, D>>,
}

impl<T, D: 'static> Default for RetireList<T, D> {
    fn default() -> Self {
        RetireList { domain: Qsbr::domain(), pending: VecDeque::new() }
    }
}

impl<T, D> RetireList<T, D> {
    pub fn push(&mut self, r: Retired<T, D>) {
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
            // One domain, whose epochs only grow: the last is the longest wait.
            if let Some(last) = self.pending.back() {
                self.domain.synchronize(last.epoch);
            }
        }
        while self.pending.front().is_some_and(|r| self.domain.passed(r.epoch)) {
            let Some(r) = self.pending.pop_front() else { break };
            // SAFETY: the pointer came from Box::into_raw in `RcuArray::replace` and the
            // grace period of its domain, which this list's type names, is over, so no
            // reader holds it.
            drop(unsafe { Box::from_raw(r.ptr) });
        }
    }
}

impl<T, D> Drop for RetireList<T, D> {
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
    use std::sync::atomic::AtomicUsize;

    // Each test names its own domains, so tests running in parallel never share a grace
    // period and the counts below are exact.

    #[test]
    fn grace_period_waits_for_online_readers_only() {
        struct Tag;
        let q = Qsbr::<Tag>::domain();
        let mut a = q.register();
        let mut b = q.register();
        let e = q.retire_epoch();
        assert!(!q.passed(e));
        a.quiescent();
        assert!(!q.passed(e), "b has not announced yet");
        b.offline_while(|| assert!(q.passed(e), "an offline reader is not waited for"));
        assert!(!q.passed(q.retire_epoch()), "b is back online, from the current epoch");
        let e2 = q.retire_epoch();
        a.quiescent();
        b.quiescent();
        assert!(q.passed(e2));
        drop(a);
        drop(b);
        assert_eq!(q.readers(), 0);
        assert!(q.passed(q.retire_epoch()), "no readers: every grace period is over");
    }

    #[test]
    fn one_tag_is_one_domain_and_two_tags_are_two() {
        struct Tag;
        struct Other;
        let (q1, q2, other) = (Qsbr::<Tag>::domain(), Qsbr::<Tag>::domain(), Qsbr::<Other>::domain());
        let r = q1.register();
        assert_eq!(q2.readers(), 1, "a reader registered through one handle counts in every handle of the tag");
        assert_eq!(other.readers(), 0);
        let e = q2.retire_epoch();
        assert!(!q1.passed(e), "an epoch started through one handle waits for the tag's readers");
        assert!(other.passed(other.retire_epoch()), "another tag waits for nobody");
        drop(r);
        assert!(q1.passed(e));
    }

    #[test]
    fn a_reader_back_from_offline_reads_the_current_object() {
        struct Tag;
        let q = Qsbr::<Tag>::domain();
        let array = RcuArray::new(&q, 2);
        let mut list = RetireList::default();
        list.push(array.replace(0, Some(Box::new(7u32))));
        let mut reader = q.register();
        assert_eq!(array.get(0, &reader), Some(&7));
        reader.offline_while(|| list.push(array.replace(0, Some(Box::new(8)))));
        list.reclaim(false);
        assert!(list.is_empty(), "7 was retired while the only reader was offline");
        assert_eq!(array.get(0, &reader), Some(&8));
        assert_eq!(array.get(2, &reader), None, "out of bounds reads nothing");
    }

    #[test]
    fn offline_while_brings_the_reader_back_when_f_panics() {
        struct Tag;
        let q = Qsbr::<Tag>::domain();
        let mut reader = q.register();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.offline_while(|| panic!("in f"))));
        assert!(caught.is_err());
        assert!(!q.passed(q.retire_epoch()), "the reader is online again and waited for");
        reader.quiescent();
        assert!(q.passed(q.retire_epoch() - 1));
    }

    /// Counts drops, to see exactly when the list frees.
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn retired_objects_wait_for_their_grace_period() {
        struct Tag;
        let q = Qsbr::<Tag>::domain();
        let freed = Arc::new(AtomicUsize::new(0));
        let array = RcuArray::new(&q, 1);
        let mut reader = q.register();
        let mut list = RetireList::default();
        list.push(array.replace(0, Some(Box::new(Counted(freed.clone())))));
        assert!(list.is_empty(), "an empty slot retires nothing");
        list.push(array.replace(0, Some(Box::new(Counted(freed.clone())))));
        list.push(array.replace(0, Some(Box::new(Counted(freed.clone())))));
        list.reclaim(false);
        assert_eq!((list.len(), freed.load(Ordering::SeqCst)), (2, 0), "the reader has not passed a quiescent state");
        reader.quiescent();
        list.reclaim(false);
        assert_eq!((list.len(), freed.load(Ordering::SeqCst)), (0, 2));
        assert!(array.get(0, &reader).is_some());
        drop(reader);
        drop(array);
        assert_eq!(freed.load(Ordering::SeqCst), 3, "the array frees what it still holds");
    }

    #[test]
    fn a_dropped_list_leaks_what_is_still_read_and_frees_the_rest() {
        struct Tag;
        let q = Qsbr::<Tag>::domain();
        let freed = Arc::new(AtomicUsize::new(0));
        let array = RcuArray::new(&q, 2);
        let mut list = RetireList::default();
        array.replace(0, Some(Box::new(Counted(freed.clone()))));
        list.push(array.replace(0, None));
        let reader = q.register();
        array.replace(1, Some(Box::new(Counted(freed.clone()))));
        list.push(array.replace(1, None));
        drop(list);
        assert_eq!(freed.load(Ordering::SeqCst), 1, "the first was retired before the reader came; the second it may hold");
        drop(reader);
    }

    #[test]
    fn reclaim_with_wait_returns_once_a_reader_on_another_thread_passes() {
        struct Tag;
        let q = Qsbr::<Tag>::domain();
        let array = RcuArray::new(&q, 1);
        let mut list = RetireList::default();
        array.replace(0, Some(Box::new(1u64)));
        let mut reader = q.register();
        list.push(array.replace(0, Some(Box::new(2))));
        std::thread::scope(|s| {
            s.spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                reader.quiescent();
            });
            list.reclaim(true);
            assert!(list.is_empty());
        });
    }
}
