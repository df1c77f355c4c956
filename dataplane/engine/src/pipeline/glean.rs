//! The glean queue: destinations on attached subnets that hit a `glean` route (no host
//! route yet, so no MAC), handed from a worker to the agent, which asks the kernel to
//! resolve them and installs host routes (VPP's glean adjacency, Linux's neighbour
//! discovery on a miss). The frame itself is dropped and counted as `glean`, never flooded.
//!
//! The packet path neither allocates nor locks: the worker is the only producer of a fixed
//! single-producer single-consumer ring of atomics (no `unsafe`: a slot is two `AtomicU64`
//! words, published by the head's Release store). In front of it, a direct-mapped table of
//! recently queued destinations de-duplicates (a flow to an unresolved host queues its
//! destination once per `GLEAN_DEDUP_NS`, not once per frame) and a token bucket bounds the
//! resolutions a worker asks for, so a flood to many unresolved addresses costs at most
//! `GLEAN_RATE` of them. What did not make it is counted in the queue's outcome counters.
//! The ring is written by hand: it is 60 lines, and a crate would bring a generic slot type
//! with `unsafe` we would have to justify for a fixed 128-bit payload.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{IcmpRateLimit, TokenBucket};

/// Slots of the ring (a power of two). The agent drains it every few tens of ms, and the
/// token bucket lets at most `GLEAN_RATE.burst` in at once, so it never fills in practice.
pub const GLEAN_SLOTS: usize = 64;
/// Resolutions a worker may ask for: per second, and at once.
pub const GLEAN_RATE: IcmpRateLimit = IcmpRateLimit { per_second: 100, burst: 32 };
/// A destination queued less than this ago is not queued again.
pub const GLEAN_DEDUP_NS: u64 = 1_000_000_000;
/// Entries of the de-duplication table (a power of two; a collision only re-queues early).
const RECENT: usize = 256;

/// The ring the worker fills and the agent drains. Addresses are IPv6; IPv4 as
/// IPv4-mapped (`::ffff:a.b.c.d`), so the families never collide.
#[derive(Debug)]
pub struct GleanQueue {
    slots: [[AtomicU64; 2]; GLEAN_SLOTS],
    /// Next slot the producer writes (only the producer stores it).
    head: AtomicUsize,
    /// Next slot the consumer reads (only the consumer stores it).
    tail: AtomicUsize,
    /// Serialises consumers (the agent's drain, never the packet path).
    consumer: Mutex<()>,
    queued: AtomicU64,
    deduplicated: AtomicU64,
    rate_limited: AtomicU64,
    full: AtomicU64,
}

/// What became of the destinations of frames dropped as `glean`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GleanStats {
    /// Put in the ring for the agent.
    pub queued: u64,
    /// Already queued less than `GLEAN_DEDUP_NS` ago.
    pub deduplicated: u64,
    /// The worker's glean token bucket was empty.
    pub rate_limited: u64,
    /// The ring was full (the agent is not draining).
    pub full: u64,
}

impl GleanQueue {
    pub fn new() -> GleanQueue {
        GleanQueue {
            slots: std::array::from_fn(|_| [AtomicU64::new(0), AtomicU64::new(0)]),
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
            consumer: Mutex::new(()),
            queued: AtomicU64::new(0),
            deduplicated: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            full: AtomicU64::new(0),
        }
    }

    /// Producer only (one thread). False when full.
    fn push(&self, addr: u128) -> bool {
        let head = self.head.load(Ordering::Relaxed);
        if head.wrapping_sub(self.tail.load(Ordering::Acquire)) >= GLEAN_SLOTS {
            return false;
        }
        let slot = &self.slots[head % GLEAN_SLOTS];
        slot[0].store((addr >> 64) as u64, Ordering::Relaxed);
        slot[1].store(addr as u64, Ordering::Relaxed);
        self.head.store(head.wrapping_add(1), Ordering::Release);
        true
    }

    /// Takes every queued address (IPv4 as IPv4-mapped IPv6) into `out`, oldest first, up
    /// to its room; returns how many. For the agent, never the packet path.
    pub fn drain(&self, out: &mut [u128]) -> usize {
        let _guard = self.consumer.lock().unwrap_or_else(|e| e.into_inner());
        let tail = self.tail.load(Ordering::Relaxed);
        let head = self.head.load(Ordering::Acquire);
        let n = head.wrapping_sub(tail).min(out.len());
        for (i, o) in out.iter_mut().take(n).enumerate() {
            let slot = &self.slots[tail.wrapping_add(i) % GLEAN_SLOTS];
            *o = (u128::from(slot[0].load(Ordering::Relaxed)) << 64) | u128::from(slot[1].load(Ordering::Relaxed));
        }
        self.tail.store(tail.wrapping_add(n), Ordering::Release);
        n
    }

    pub fn stats(&self) -> GleanStats {
        GleanStats {
            queued: self.queued.load(Ordering::Relaxed),
            deduplicated: self.deduplicated.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            full: self.full.load(Ordering::Relaxed),
        }
    }
}

impl Default for GleanQueue {
    fn default() -> Self {
        GleanQueue::new()
    }
}

/// Single writer: a plain add, no read-modify-write.
#[inline]
fn bump(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
}

#[derive(Clone, Copy, Default)]
struct Recent {
    addr: u128,
    at_ns: u64,
    in_use: bool,
}

/// The worker's side: de-duplication, rate limit, then the ring.
pub(super) struct GleanProducer {
    queue: std::sync::Arc<GleanQueue>,
    bucket: TokenBucket,
    recent: Box<[Recent; RECENT]>,
    seed: u64,
}

impl GleanProducer {
    pub(super) fn new(seed: u64) -> GleanProducer {
        GleanProducer {
            queue: std::sync::Arc::new(GleanQueue::new()),
            bucket: TokenBucket::new(GLEAN_RATE),
            recent: Box::new([Recent::default(); RECENT]),
            seed,
        }
    }

    pub(super) fn queue(&self) -> &std::sync::Arc<GleanQueue> {
        &self.queue
    }

    /// Asks for `addr` to be resolved, at most once per `GLEAN_DEDUP_NS` and within the rate.
    #[inline]
    pub(super) fn ask(&mut self, addr: u128, now_ns: u64) {
        let h = ((addr as u64) ^ ((addr >> 64) as u64) ^ self.seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let i = (h >> 56) as usize % RECENT;
        let r = self.recent[i];
        if r.in_use && r.addr == addr && now_ns.saturating_sub(r.at_ns) < GLEAN_DEDUP_NS {
            bump(&self.queue.deduplicated);
            return;
        }
        if !self.bucket.take(now_ns) {
            bump(&self.queue.rate_limited);
            return;
        }
        if !self.queue.push(addr) {
            bump(&self.queue.full);
            return;
        }
        bump(&self.queue.queued);
        self.recent[i] = Recent { addr, at_ns: now_ns, in_use: true };
    }
}

/// IPv4 as an IPv4-mapped IPv6 address, as the queue holds it.
#[inline]
pub fn mapped_v4(addr: u32) -> u128 {
    0xffff_0000_0000 | u128::from(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn drain_all(q: &GleanQueue) -> Vec<u128> {
        let mut out = [0u128; GLEAN_SLOTS];
        let n = q.drain(&mut out);
        out[..n].to_vec()
    }

    #[test]
    fn queues_once_per_destination_within_the_dedup_window() {
        let mut p = GleanProducer::new(7);
        let a = mapped_v4(0xc612_0005);
        for t in 0..10 {
            p.ask(a, 1 + t * 1_000_000);
        }
        assert_eq!(drain_all(p.queue()), vec![a]);
        assert_eq!(p.queue().stats(), GleanStats { queued: 1, deduplicated: 9, rate_limited: 0, full: 0 });
        // After the window it is asked again.
        p.ask(a, 1 + GLEAN_DEDUP_NS + 10_000_000);
        assert_eq!(drain_all(p.queue()), vec![a]);
        assert_eq!(p.queue().stats().queued, 2);
    }

    #[test]
    fn a_flood_to_many_addresses_is_bounded_by_the_rate() {
        let mut p = GleanProducer::new(7);
        let mut got = Vec::new();
        // 10 000 distinct addresses over one second, drained as the agent would.
        for i in 0..10_000u64 {
            p.ask(u128::from(0x2001_0db8_0000_0000u64) << 64 | u128::from(i), i * (SECOND / 10_000));
            if i % 16 == 0 {
                got.extend(drain_all(p.queue()));
            }
        }
        got.extend(drain_all(p.queue()));
        let s = p.queue().stats();
        let most = u64::from(GLEAN_RATE.burst) + u64::from(GLEAN_RATE.per_second);
        assert!(s.queued <= most, "{s:?}");
        assert!(s.queued >= u64::from(GLEAN_RATE.burst), "{s:?}");
        assert_eq!(got.len() as u64, s.queued);
        assert_eq!(s.queued + s.rate_limited + s.deduplicated + s.full, 10_000);
        let mut unique = got.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), got.len(), "each queued once");
    }

    #[test]
    fn the_ring_holds_its_slots_and_counts_what_overflows() {
        let q = GleanQueue::new();
        for i in 0..GLEAN_SLOTS as u128 {
            assert!(q.push(i));
        }
        assert!(!q.push(999), "full");
        let mut small = [0u128; 10];
        assert_eq!(q.drain(&mut small), 10);
        assert_eq!(small.to_vec(), (0..10).collect::<Vec<u128>>());
        assert!(q.push(1000));
        let rest = drain_all(&q);
        assert_eq!(rest.len(), GLEAN_SLOTS - 10 + 1);
        assert_eq!(rest.last(), Some(&1000));
        assert_eq!(drain_all(&q), Vec::<u128>::new());

        // Through the producer: a stopped agent fills the ring, the rest is counted as full.
        let mut p = GleanProducer::new(1);
        p.bucket = TokenBucket::new(IcmpRateLimit { per_second: 1_000_000, burst: 1_000_000 });
        for i in 0..(GLEAN_SLOTS as u128 + 5) {
            p.ask(i, 1);
        }
        assert_eq!(p.queue().stats().queued, GLEAN_SLOTS as u64);
        assert_eq!(p.queue().stats().full, 5);
    }

    #[test]
    fn a_consumer_on_another_thread_sees_every_address_in_order() {
        let q = std::sync::Arc::new(GleanQueue::new());
        let reader = {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut out = [0u128; 7];
                while seen.len() < 5000 {
                    let n = q.drain(&mut out);
                    seen.extend_from_slice(&out[..n]);
                    if n == 0 {
                        std::thread::yield_now();
                    }
                }
                seen
            })
        };
        let mut i = 0u128;
        while i < 5000 {
            if q.push(i << 64 | i) {
                i += 1;
            } else {
                std::thread::yield_now();
            }
        }
        let seen = reader.join().unwrap();
        assert_eq!(seen, (0..5000u128).map(|i| i << 64 | i).collect::<Vec<_>>());
    }
}
