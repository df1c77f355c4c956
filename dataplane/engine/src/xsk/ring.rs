//! The four AF_XDP rings (fill, completion, rx, tx) as mapped from the kernel, with
//! libxdp's cached-index scheme and its verbs as guards: a producer ring is written
//! through `reserve(n) → fill → submit`, a consumer ring read through
//! `peek(n) → read → release`. A guard dropped without committing rolls back, so the
//! entries are offered again by the next reserve or peek.
//!
//! Index protocol (linux/net/xdp/xsk_queue.h): producer and consumer are free-running
//! u32 counters; an entry lives at `index & mask`. User space is the only writer of its
//! own index (producer of fill/tx, consumer of rx/completion) and keeps a cached copy of
//! the kernel's, refreshed only when the cache says the ring is full (or empty).

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

/// A mapping of one ring; unmapped on drop.
struct Mapping {
    area: NonNull<u8>,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `area`/`len` are exactly what mmap returned; no reference into the
        // mapping outlives the ring that owns it (guards borrow the ring).
        unsafe { libc::munmap(self.area.as_ptr().cast(), self.len) };
    }
}

/// What both kinds of ring share: the mapping and pointers into it.
struct RingCore<T> {
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    entries: NonNull<T>,
    mask: u32,
    size: u32,
    _map: Mapping,
}

impl<T: Copy> RingCore<T> {
    /// Maps the ring at page offset `pgoff` of socket `fd`, laid out as `off` says.
    fn map(fd: BorrowedFd<'_>, off: &libc::xdp_ring_offset, size: u32, pgoff: libc::off_t) -> io::Result<Self> {
        debug_assert!(size.is_power_of_two());
        let len = off.desc as usize + size as usize * std::mem::size_of::<T>();
        // SAFETY: mmap of a kernel-provided ring on our own socket; the result is checked
        // and owned by `Mapping`, which unmaps it exactly once.
        let area = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                pgoff,
            )
        };
        if area == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = area.cast::<u8>();
        let at = |offset: u64| -> NonNull<u8> {
            // SAFETY: the kernel's offsets lie inside the `len` bytes just mapped.
            unsafe { NonNull::new_unchecked(base.add(offset as usize)) }
        };
        Ok(Self {
            producer: at(off.producer).cast(),
            consumer: at(off.consumer).cast(),
            flags: at(off.flags).cast(),
            entries: at(off.desc).cast(),
            mask: size - 1,
            size,
            // SAFETY: checked against MAP_FAILED above, so not null.
            _map: Mapping { area: unsafe { NonNull::new_unchecked(base) }, len },
        })
    }

    /// A ring over anonymous memory, laid out like the kernel's, for tests of the index
    /// logic: the test plays the kernel through `producer()`/`consumer()`.
    #[cfg(test)]
    fn anonymous(size: u32) -> Self {
        let off = libc::xdp_ring_offset { producer: 0, consumer: 64, flags: 128, desc: 192 };
        let len = off.desc as usize + size as usize * std::mem::size_of::<T>();
        // SAFETY: a private anonymous mapping, checked, owned by `Mapping`.
        let area = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        assert_ne!(area, libc::MAP_FAILED);
        let base = area.cast::<u8>();
        // SAFETY: offsets inside the mapping; base is not null.
        unsafe {
            Self {
                producer: NonNull::new_unchecked(base.add(off.producer as usize)).cast(),
                consumer: NonNull::new_unchecked(base.add(off.consumer as usize)).cast(),
                flags: NonNull::new_unchecked(base.add(off.flags as usize)).cast(),
                entries: NonNull::new_unchecked(base.add(off.desc as usize)).cast(),
                mask: size - 1,
                size,
                _map: Mapping { area: NonNull::new_unchecked(base), len },
            }
        }
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into our live mapping, 4-byte aligned (kernel ABI); the kernel
        // accesses it only atomically (READ_ONCE/smp_load_acquire/smp_store_release).
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `producer`.
        let flags = unsafe { self.flags.as_ref() };
        // Relaxed: the flag is a hint about whether the kernel will poll the ring by
        // itself; a stale read costs one useless syscall or one pass of delay, and the
        // worker checks again every pass.
        flags.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    fn slot(&self, index: u32) -> *mut T {
        // SAFETY: `index & mask` < size, and the entry array holds `size` entries.
        unsafe { self.entries.as_ptr().add((index & self.mask) as usize) }
    }
}

/// A ring user space produces into: fill (frame addresses) or tx (descriptors).
pub(crate) struct ProdRing<T> {
    core: RingCore<T>,
    /// Next index we will publish (ours: only we write the producer).
    cached_prod: u32,
    /// The kernel's consumer plus `size`: `cached_cons - cached_prod` is the free space.
    cached_cons: u32,
}

/// A ring user space consumes from: rx (descriptors) or completion (frame addresses).
pub(crate) struct ConsRing<T> {
    core: RingCore<T>,
    /// Next index we will read (ours: only we write the consumer).
    cached_cons: u32,
    /// The kernel's producer as last seen.
    cached_prod: u32,
}

// SAFETY: the rings point into mappings owned by the ring itself; moving the owner to
// another thread moves the only user-space accessor with it.
unsafe impl<T: Send> Send for ProdRing<T> {}
// SAFETY: as for ProdRing.
unsafe impl<T: Send> Send for ConsRing<T> {}

impl<T: Copy> ProdRing<T> {
    pub(crate) fn map(fd: BorrowedFd<'_>, off: &libc::xdp_ring_offset, size: u32, pgoff: libc::off_t) -> io::Result<Self> {
        let core = RingCore::map(fd, off, size, pgoff)?;
        // Relaxed: nothing has been exchanged through the ring yet.
        let cached_prod = core.producer().load(Ordering::Relaxed);
        let cached_cons = core.consumer().load(Ordering::Relaxed).wrapping_add(size);
        Ok(Self { core, cached_prod, cached_cons })
    }

    /// Free entries, refreshing the kernel's consumer only if fewer than `wanted` look free.
    fn free_entries(&mut self, wanted: u32) -> u32 {
        let free = self.cached_cons.wrapping_sub(self.cached_prod);
        if free >= wanted {
            return free;
        }
        // Acquire: pairs with the kernel's release of the consumer index, so its reads of
        // the entries it consumed are complete before we overwrite those slots.
        self.cached_cons = self.core.consumer().load(Ordering::Acquire).wrapping_add(self.core.size);
        self.cached_cons.wrapping_sub(self.cached_prod)
    }

    /// Reserves up to `n` entries (fewer if the ring has less room; possibly none).
    pub(crate) fn reserve(&mut self, n: u32) -> Reserved<'_, T> {
        let n = n.min(self.free_entries(n));
        let first = self.cached_prod;
        self.cached_prod = self.cached_prod.wrapping_add(n);
        Reserved { ring: self, first, reserved: n, written: 0 }
    }

    /// Entries published and not yet consumed by the kernel, as of the last refresh.
    pub(crate) fn published(&self) -> u32 {
        // Relaxed on our own index: we are its only writer.
        self.core.producer().load(Ordering::Relaxed)
    }

    pub(crate) fn needs_wakeup(&self) -> bool {
        self.core.needs_wakeup()
    }

    pub(crate) fn size(&self) -> u32 {
        self.core.size
    }

    /// Entries the kernel has not consumed yet (fresh read).
    pub(crate) fn pending(&self) -> u32 {
        // Acquire for symmetry with `free_entries`; this is a diagnostic read.
        self.published().wrapping_sub(self.core.consumer().load(Ordering::Acquire))
    }
}

/// Entries reserved in a producer ring. Write them with `fill`, publish with `submit`;
/// dropped without `submit`, the reservation is rolled back.
pub(crate) struct Reserved<'r, T: Copy> {
    ring: &'r mut ProdRing<T>,
    first: u32,
    reserved: u32,
    written: u32,
}

impl<T: Copy> Reserved<'_, T> {
    /// Entries reserved.
    pub(crate) fn capacity(&self) -> u32 {
        self.reserved
    }

    /// Writes entries from `values` into the reserved slots in order, until either runs
    /// out; returns how many were written by this call.
    pub(crate) fn fill(&mut self, values: impl IntoIterator<Item = T>) -> u32 {
        let start = self.written;
        for value in values.into_iter().take((self.reserved - self.written) as usize) {
            let slot = self.ring.core.slot(self.first.wrapping_add(self.written));
            // SAFETY: the slot is reserved: the kernel does not read it before we publish
            // the producer index past it, and no other reservation covers it.
            unsafe { slot.write(value) };
            self.written += 1;
        }
        self.written - start
    }

    /// Publishes the written entries to the kernel; unwritten reservations are returned.
    pub(crate) fn submit(self) -> u32 {
        let written = self.written;
        let ring = &mut *self.ring;
        ring.cached_prod = self.first.wrapping_add(written);
        // Release: our writes of the entries happen-before the kernel's acquire of the
        // producer index that covers them.
        ring.core.producer().store(ring.cached_prod, Ordering::Release);
        std::mem::forget(self);
        written
    }
}

impl<T: Copy> Drop for Reserved<'_, T> {
    fn drop(&mut self) {
        // Rollback: nothing was published, so the cached producer simply steps back.
        self.ring.cached_prod = self.first;
    }
}

impl<T: Copy> ConsRing<T> {
    pub(crate) fn map(fd: BorrowedFd<'_>, off: &libc::xdp_ring_offset, size: u32, pgoff: libc::off_t) -> io::Result<Self> {
        let core = RingCore::map(fd, off, size, pgoff)?;
        // Relaxed: nothing has been exchanged through the ring yet.
        let cached_cons = core.consumer().load(Ordering::Relaxed);
        let cached_prod = core.producer().load(Ordering::Relaxed);
        Ok(Self { core, cached_cons, cached_prod })
    }

    fn available(&mut self, wanted: u32) -> u32 {
        let mut entries = self.cached_prod.wrapping_sub(self.cached_cons);
        if entries < wanted {
            // Acquire: pairs with the kernel's release of the producer index, so the
            // entries it covers are fully written before we read them.
            self.cached_prod = self.core.producer().load(Ordering::Acquire);
            entries = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        entries
    }

    /// Takes up to `n` entries for reading (possibly none).
    pub(crate) fn peek(&mut self, n: u32) -> Peeked<'_, T> {
        let n = n.min(self.available(n));
        let first = self.cached_cons;
        self.cached_cons = self.cached_cons.wrapping_add(n);
        Peeked { ring: self, first, len: n }
    }

    /// Our consumer index: entries released so far (wrapping).
    pub(crate) fn released(&self) -> u32 {
        // Relaxed on our own index: we are its only writer.
        self.core.consumer().load(Ordering::Relaxed)
    }

    /// Entries produced by the kernel and not yet released (fresh read).
    pub(crate) fn ready(&self) -> u32 {
        // Acquire: a snapshot for accounting; pairs with the kernel's producer release.
        self.core.producer().load(Ordering::Acquire).wrapping_sub(self.released())
    }
}

/// Entries peeked from a consumer ring: `read` them, then `release` the slots to the
/// kernel. Dropped without `release`, the entries stay in the ring for the next peek.
pub(crate) struct Peeked<'r, T: Copy> {
    ring: &'r mut ConsRing<T>,
    first: u32,
    len: u32,
}

impl<T: Copy> Peeked<'_, T> {
    pub(crate) fn len(&self) -> u32 {
        self.len
    }

    /// Entry `i` of the batch (`i < len`).
    pub(crate) fn read(&self, i: u32) -> T {
        debug_assert!(i < self.len);
        let slot = self.ring.core.slot(self.first.wrapping_add(i.min(self.len.saturating_sub(1))));
        // SAFETY: the kernel published this slot (acquire in `available`) and will not
        // touch it until we release the consumer index past it.
        unsafe { slot.read() }
    }

    /// Hands the slots back to the kernel.
    pub(crate) fn release(self) -> u32 {
        let len = self.len;
        let end = self.first.wrapping_add(len);
        // Release: our reads of the entries happen-before the kernel reuses the slots.
        self.ring.core.consumer().store(end, Ordering::Release);
        std::mem::forget(self);
        len
    }
}

impl<T: Copy> Drop for Peeked<'_, T> {
    fn drop(&mut self) {
        // Rollback: the consumer index was not published, so the entries stay.
        self.ring.cached_cons = self.first;
    }
}

/// Keeps the element type nameable for the typed aliases below.
pub(crate) type FillRing = ProdRing<u64>;
pub(crate) type CompRing = ConsRing<u64>;
pub(crate) type RxRing = ConsRing<libc::xdp_desc>;
pub(crate) type TxRing = ProdRing<libc::xdp_desc>;

#[cfg(test)]
mod tests {
    use super::*;

    fn prod(size: u32) -> ProdRing<u64> {
        let core = RingCore::anonymous(size);
        ProdRing { core, cached_prod: 0, cached_cons: size }
    }

    fn cons(size: u32) -> ConsRing<u64> {
        ConsRing { core: RingCore::anonymous(size), cached_cons: 0, cached_prod: 0 }
    }

    #[test]
    fn reserve_fill_submit_publishes_only_written() {
        let mut ring = prod(8);
        let mut r = ring.reserve(5);
        assert_eq!(r.capacity(), 5);
        assert_eq!(r.fill([10, 11, 12]), 3);
        assert_eq!(r.submit(), 3);
        assert_eq!(ring.published(), 3);
        assert_eq!(ring.cached_prod, 3);
        assert_eq!(ring.core.consumer().load(Ordering::Relaxed), 0);
        // SAFETY: slots 0..3 were written by `fill` and lie inside the test mapping.
        let slots: Vec<u64> = (0..3).map(|i| unsafe { ring.core.slot(i).read() }).collect();
        assert_eq!(slots, vec![10, 11, 12]);
    }

    #[test]
    fn dropped_reservation_rolls_back() {
        let mut ring = prod(8);
        {
            let mut r = ring.reserve(4);
            r.fill([1, 2]);
        }
        assert_eq!(ring.cached_prod, 0);
        assert_eq!(ring.published(), 0);
        assert_eq!(ring.reserve(8).capacity(), 8);
    }

    #[test]
    fn full_ring_reserves_nothing_until_kernel_consumes() {
        let mut ring = prod(4);
        let mut r = ring.reserve(10);
        assert_eq!(r.capacity(), 4);
        r.fill([1, 2, 3, 4]);
        r.submit();
        assert_eq!(ring.reserve(1).capacity(), 0);
        ring.core.consumer().store(3, Ordering::Release); // the kernel took three
        assert_eq!(ring.reserve(4).capacity(), 3);
    }

    #[test]
    fn peek_read_release_and_rollback() {
        let mut ring = cons(4);
        for i in 0..3u32 {
            // SAFETY: playing the kernel: slot i lies inside the test mapping, unpublished.
            unsafe { ring.core.slot(i).write(100 + u64::from(i)) };
        }
        ring.core.producer().store(3, Ordering::Release);
        {
            let p = ring.peek(2);
            assert_eq!(p.len(), 2);
            assert_eq!(p.read(0), 100);
        } // dropped: rolled back
        assert_eq!(ring.released(), 0);
        let p = ring.peek(8);
        assert_eq!(p.len(), 3);
        assert_eq!((p.read(0), p.read(2)), (100, 102));
        assert_eq!(p.release(), 3);
        assert_eq!(ring.released(), 3);
        assert_eq!(ring.peek(1).len(), 0);
    }

    #[test]
    fn indices_wrap() {
        let mut ring = prod(4);
        ring.cached_prod = u32::MAX - 1;
        ring.cached_cons = (u32::MAX - 1).wrapping_add(4);
        ring.core.consumer().store(u32::MAX - 1, Ordering::Relaxed);
        let mut r = ring.reserve(4);
        assert_eq!(r.fill([1, 2, 3, 4]), 4);
        r.submit();
        assert_eq!(ring.published(), 2);
    }
}
