//! Packet sampling for sFlow (sFlow v5, sflow.org `sflow_version_5.txt`, section 3.1):
//! 1 frame in N per ingress port, picked by a random skip, its first 128 octets with the
//! ingress port and VLAN, the sending member and what became of it handed to the agent,
//! which encodes and sends the datagrams.
//!
//! The packet path neither allocates, locks nor logs: per port a countdown that one
//! decrement and one predictable branch serve for every frame that is not sampled; when it
//! reaches zero the next skip is drawn uniformly from [1, 2N - 1] (mean N, as the sFlow
//! specification asks: a fixed 1-in-N would lock onto periodic traffic) and the frame's
//! header is copied into the next free slot of a fixed single-producer single-consumer ring
//! of atomics (no `unsafe`: a slot is `SLOT_WORDS` `AtomicU64`s, published by the head's
//! Release store). Slots are reserved while the batch is parsed, before the frame is
//! rewritten, and published at the end of the batch once the verdicts are known. A full
//! ring drops the sample and counts it (sFlow's `drops`). Written by hand like the glean
//! ring beside it: a crate's generic ring would bring `unsafe` for a fixed payload.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{PacketBuf, Verdict, MAX_BATCH};
use crate::drop::DropReason;
use crate::fib::MemberId;

/// Octets of each sampled frame kept (sFlow's usual header length).
pub const HEADER_MAX: usize = 128;
/// Slots of each worker's ring (a power of two). The agent drains every few tens of ms.
pub const SAMPLE_SLOTS: usize = 1024;
/// Highest sampling rate (1 in N) a port takes; 0 turns sampling off.
pub const SAMPLE_RATE_MAX: u32 = 1 << 24;

const HEADER_WORDS: usize = HEADER_MAX / 8;
/// Three words of metadata, then the header.
const SLOT_WORDS: usize = 3 + HEADER_WORDS;
/// `out` word: the frame was dropped; the low bits hold the `DropReason`.
const OUT_DROPPED: u32 = 1 << 31;
/// `out` word: dropped and answered with an ICMP error (which went out of the ingress port).
const OUT_ICMP: u32 = 1 << 30;
/// `out` word of a forwarded frame: the egress port in the low 16 bits, the egress VLAN
/// (0 untagged) in bits 16 to 27 and its priority in bits 28 to 30.
const OUT_VLAN_SHIFT: u32 = 16;
const OUT_PRIORITY_SHIFT: u32 = 28;

/// What became of a sampled frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleOutcome {
    /// Forwarded out of `port` (index into the pipeline's ports), on `vlan` (0 untagged)
    /// with 802.1p `priority` as rewritten.
    Forwarded { port: u16, vlan: u16, priority: u8 },
    /// Dropped for this reason; `icmp_sent` when an ICMP error answered it.
    Dropped { reason: DropReason, icmp_sent: bool },
}

/// One sampled frame, as the agent takes it from the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Ingress port index.
    pub port: u16,
    /// Ingress VLAN as received (0: untagged or not parsed that far).
    pub vlan: u16,
    /// The sending member (`fib::UNKNOWN_MEMBER`, or `fib::NO_MEMBER` on a sub-interface
    /// without members).
    pub member: MemberId,
    /// Length of the whole frame as received.
    pub frame_len: u32,
    /// Frames this worker saw on the ingress port up to and including this one.
    pub pool: u64,
    pub outcome: SampleOutcome,
    /// The first `min(frame_len, HEADER_MAX)` octets of the frame as received.
    pub header: Vec<u8>,
}

/// Per port, what the sampler did (one worker's, or summed over workers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortSampleStats {
    /// 1 in `rate` frames is sampled; 0 is off.
    pub rate: u32,
    /// Frames the sampler saw on the port up to its last sample (sFlow's `sample_pool`).
    pub pool: u64,
    /// Samples put in the ring.
    pub sampled: u64,
    /// Samples lost because the ring was full (sFlow's `drops`).
    pub dropped: u64,
}

/// The ring a worker fills and the agent drains, with the per-port rates the agent sets
/// and the per-port statistics the worker keeps.
#[derive(Debug)]
pub struct SampleRing {
    slots: Box<[[AtomicU64; SLOT_WORDS]]>,
    /// Next slot the producer publishes (only the producer stores it).
    head: AtomicUsize,
    /// Next slot the consumer reads (only the consumer stores it).
    tail: AtomicUsize,
    /// Serialises consumers (the agent's drain, never the packet path).
    consumer: Mutex<()>,
    /// Per port: the rate the agent asked for, taken by the worker once `generation` moves.
    rates: Box<[AtomicU32]>,
    generation: AtomicU64,
    /// Per port: pool, sampled, dropped (single writer: the worker).
    stats: Box<[[AtomicU64; 3]]>,
}

impl SampleRing {
    pub fn new(ports: usize) -> SampleRing {
        SampleRing {
            slots: (0..SAMPLE_SLOTS).map(|_| std::array::from_fn(|_| AtomicU64::new(0))).collect(),
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
            consumer: Mutex::new(()),
            rates: (0..ports).map(|_| AtomicU32::new(0)).collect(),
            generation: AtomicU64::new(0),
            stats: (0..ports).map(|_| std::array::from_fn(|_| AtomicU64::new(0))).collect(),
        }
    }

    /// Sets every port's rate (1 in N; 0 off), taken by the worker at its next batch. The
    /// caller checked `rates` (one per port, each at most `SAMPLE_RATE_MAX`).
    pub fn set_rates(&self, rates: &[u32]) {
        for (slot, &r) in self.rates.iter().zip(rates) {
            // Relaxed: published by the Release increment below.
            slot.store(r.min(SAMPLE_RATE_MAX), Ordering::Relaxed);
        }
        // Release: a worker that sees the new generation (Acquire) sees the rates above.
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Takes the published samples into `out`, oldest first, at most `max`; returns how
    /// many. For the agent, never the packet path.
    pub fn drain(&self, out: &mut Vec<Sample>, max: usize) -> usize {
        let _guard = self.consumer.lock().unwrap_or_else(|e| e.into_inner());
        let tail = self.tail.load(Ordering::Relaxed);
        // Acquire: the slots up to head were written before the producer's Release store.
        let head = self.head.load(Ordering::Acquire);
        let n = head.wrapping_sub(tail).min(max);
        for i in 0..n {
            out.push(read_slot(&self.slots[tail.wrapping_add(i) % SAMPLE_SLOTS]));
        }
        // Release: the producer that sees the new tail (Acquire) may reuse the slots.
        self.tail.store(tail.wrapping_add(n), Ordering::Release);
        n
    }

    /// Per port: rate, pool, sampled and dropped.
    pub fn stats(&self) -> Vec<PortSampleStats> {
        self.rates
            .iter()
            .zip(self.stats.iter())
            .map(|(r, s)| PortSampleStats {
                // Relaxed: independent counters, read for reports.
                rate: r.load(Ordering::Relaxed),
                pool: s[0].load(Ordering::Relaxed),
                sampled: s[1].load(Ordering::Relaxed),
                dropped: s[2].load(Ordering::Relaxed),
            })
            .collect()
    }
}

fn read_slot(slot: &[AtomicU64; SLOT_WORDS]) -> Sample {
    // Relaxed: ordered by the Acquire load of head in `drain`.
    let w0 = slot[0].load(Ordering::Relaxed);
    let w1 = slot[1].load(Ordering::Relaxed);
    let frame_len = (w0 >> 32) as u32;
    let out = w1 as u32;
    let outcome = if out & OUT_DROPPED != 0 {
        let index = (out & 0xffff) as usize;
        let reason = DropReason::ALL.get(index).copied().unwrap_or(DropReason::Truncated);
        SampleOutcome::Dropped { reason, icmp_sent: out & OUT_ICMP != 0 }
    } else {
        SampleOutcome::Forwarded {
            port: out as u16,
            vlan: ((out >> OUT_VLAN_SHIFT) & 0x0fff) as u16,
            priority: ((out >> OUT_PRIORITY_SHIFT) & 7) as u8,
        }
    };
    let len = (frame_len as usize).min(HEADER_MAX);
    let mut header = Vec::with_capacity(len);
    for w in &slot[3..3 + len.div_ceil(8)] {
        header.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
    }
    header.truncate(len);
    Sample {
        port: (w0 >> 16) as u16,
        vlan: w0 as u16,
        member: (w1 >> 32) as u32,
        frame_len,
        pool: slot[2].load(Ordering::Relaxed),
        outcome,
        header,
    }
}

/// The 802.1Q tag of the frame at `chunk[start..]` in the `out` word's VLAN and priority
/// bits; 0 untagged.
fn egress_tag(chunk: &[u8], start: usize) -> u32 {
    match chunk.get(start + 12..start + 16) {
        Some(&[0x81, 0x00, hi, lo]) => {
            let tci = u32::from(u16::from_be_bytes([hi, lo]));
            (tci & 0x0fff) << OUT_VLAN_SHIFT | (tci >> 13) << OUT_PRIORITY_SHIFT
        }
        _ => 0,
    }
}

/// Single writer: a plain add, no read-modify-write.
#[inline]
fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// A slot reserved for a frame of this batch, published with its outcome at the batch's end.
#[derive(Clone, Copy, Default)]
struct Pending {
    /// Index of the frame in the batch.
    frame: u8,
    /// Set by `note_icmp`: the frame was dropped for this reason and answered.
    icmp_reason: Option<u8>,
}

/// The worker's side: countdowns, the random skip, reservations.
pub(super) struct Sampler {
    ring: std::sync::Arc<SampleRing>,
    /// Per port: frames left until the next sample; 0 when sampling is off.
    countdown: Box<[u32]>,
    /// Per port: the skip being counted down, and the frames seen up to the last sample.
    skip: Box<[u32]>,
    pool: Box<[u64]>,
    rate: Box<[u32]>,
    /// Some port samples (some countdown is non-zero): else `process` skips `consider`
    /// for the whole batch, one branch instead of one per frame.
    active: bool,
    generation: u64,
    rng: u64,
    pending: [Pending; MAX_BATCH],
    reserved: usize,
}

impl Sampler {
    pub(super) fn new(ports: usize, seed: u64) -> Sampler {
        Sampler {
            ring: std::sync::Arc::new(SampleRing::new(ports)),
            countdown: vec![0; ports].into(),
            skip: vec![0; ports].into(),
            pool: vec![0; ports].into(),
            rate: vec![0; ports].into(),
            active: false,
            generation: 0,
            // xorshift needs a non-zero state.
            rng: seed | 1,
            pending: [Pending::default(); MAX_BATCH],
            reserved: 0,
        }
    }

    pub(super) fn ring(&self) -> &std::sync::Arc<SampleRing> {
        &self.ring
    }

    /// Once per batch: takes new rates if the agent set some. One Acquire load otherwise.
    #[inline]
    pub(super) fn refresh(&mut self) {
        let g = self.ring.generation.load(Ordering::Acquire);
        if g == self.generation {
            return;
        }
        self.generation = g;
        for port in 0..self.rate.len() {
            // Relaxed: ordered by the Acquire load of the generation above.
            let rate = self.ring.rates[port].load(Ordering::Relaxed);
            if rate == self.rate[port] {
                continue;
            }
            // The frames of the interrupted skip were seen: they stay in the pool.
            if self.countdown[port] != 0 {
                self.pool[port] += u64::from(self.skip[port] - self.countdown[port]);
            }
            self.rate[port] = rate;
            let skip = if rate == 0 { 0 } else { self.draw(rate) };
            self.skip[port] = skip;
            self.countdown[port] = skip;
        }
        // A port's countdown is 0 exactly when its rate is 0: `hit` draws a new skip of at
        // least 1 whenever one runs out.
        self.active = self.countdown.iter().any(|&c| c != 0);
    }

    /// Whether any port samples this batch (after `refresh`).
    #[inline]
    pub(super) fn active(&self) -> bool {
        self.active
    }

    /// A skip uniform in [1, 2 * rate - 1]: mean `rate`. xorshift64* (Vigna 2016): a
    /// sampler needs no cryptographic strength, only no lock-step with the traffic.
    #[inline]
    fn draw(&mut self, rate: u32) -> u32 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let span = 2 * u64::from(rate) - 1;
        (1 + (r >> 32) % span) as u32
    }

    /// Counts `frame` (the `index`th of the batch) down on its port; when it is the one to
    /// sample, copies its header into a reserved slot. True when reserved.
    #[inline]
    pub(super) fn consider(&mut self, index: usize, frame: &PacketBuf<'_>, vlan: u16, member: MemberId) -> bool {
        let port = frame.port as usize;
        let Some(c) = self.countdown.get_mut(port) else { return false };
        if *c == 0 {
            return false;
        }
        *c -= 1;
        if *c != 0 {
            return false;
        }
        self.hit(index, frame, vlan, member)
    }

    #[cold]
    fn hit(&mut self, index: usize, frame: &PacketBuf<'_>, vlan: u16, member: MemberId) -> bool {
        let port = frame.port as usize;
        self.pool[port] += u64::from(self.skip[port]);
        let next = self.draw(self.rate[port]);
        self.skip[port] = next;
        self.countdown[port] = next;
        let stats = &self.ring.stats[port];
        // Relaxed: a statistic, read for reports.
        stats[0].store(self.pool[port], Ordering::Relaxed);
        let head = self.ring.head.load(Ordering::Relaxed);
        // Acquire: the consumer read the slots before its Release store of tail.
        let tail = self.ring.tail.load(Ordering::Acquire);
        if head.wrapping_add(self.reserved).wrapping_sub(tail) >= SAMPLE_SLOTS || self.reserved >= MAX_BATCH {
            add(&stats[2], 1);
            return false;
        }
        let slot = &self.ring.slots[head.wrapping_add(self.reserved) % SAMPLE_SLOTS];
        let bytes = frame.chunk.get(frame.start..frame.start + frame.len).unwrap_or(&[]);
        let len = bytes.len().min(HEADER_MAX);
        // Relaxed: published by the Release store of head in `publish`.
        slot[0].store((bytes.len() as u64) << 32 | u64::from(frame.port) << 16 | u64::from(vlan), Ordering::Relaxed);
        slot[1].store(u64::from(member) << 32, Ordering::Relaxed);
        slot[2].store(self.pool[port], Ordering::Relaxed);
        for (w, chunk) in slot[3..].iter().zip(bytes[..len].chunks(8)) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            w.store(u64::from_le_bytes(word), Ordering::Relaxed);
        }
        self.pending[self.reserved] = Pending { frame: index as u8, icmp_reason: None };
        self.reserved += 1;
        add(&stats[1], 1);
        true
    }

    /// The sampled frame `index` was dropped for `reason` and answered with an ICMP error
    /// (its verdict is a Forward out of the ingress port).
    #[cold]
    pub(super) fn note_icmp(&mut self, index: usize, reason: DropReason) {
        if let Some(p) = self.pending[..self.reserved].iter_mut().find(|p| p.frame as usize == index) {
            p.icmp_reason = Some(reason as u8);
        }
    }

    /// At the batch's end: writes each reserved slot's outcome (for a forwarded frame its
    /// egress port and the tag it left with, read from `frames`) and publishes them.
    #[inline]
    pub(super) fn publish(&mut self, frames: &[PacketBuf<'_>], verdicts: &[Verdict]) {
        if self.reserved == 0 {
            return;
        }
        let head = self.ring.head.load(Ordering::Relaxed);
        for (i, p) in self.pending[..self.reserved].iter().enumerate() {
            let out = match (p.icmp_reason, verdicts.get(p.frame as usize)) {
                (Some(reason), _) => OUT_DROPPED | OUT_ICMP | u32::from(reason),
                (None, Some(&Verdict::Forward { port, start, .. })) => {
                    let chunk = frames.get(p.frame as usize).map_or(&[][..], |f| &*f.chunk);
                    u32::from(port) | egress_tag(chunk, start)
                }
                (None, Some(Verdict::Drop(reason))) => OUT_DROPPED | *reason as u32,
                (None, None) => OUT_DROPPED | DropReason::Truncated as u32,
            };
            let slot = &self.ring.slots[head.wrapping_add(i) % SAMPLE_SLOTS];
            // Relaxed: published by the Release store of head below.
            let w1 = slot[1].load(Ordering::Relaxed);
            slot[1].store(w1 & !0xffff_ffff | u64::from(out), Ordering::Relaxed);
        }
        // Release: a consumer that sees the new head sees every slot written before it.
        self.ring.head.store(head.wrapping_add(self.reserved), Ordering::Release);
        self.reserved = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fib::NO_MEMBER;

    fn frame(chunk: &mut [u8], port: u16) -> PacketBuf<'_> {
        let len = chunk.len();
        PacketBuf { chunk, start: 0, len, port }
    }

    fn drain_all(r: &SampleRing) -> Vec<Sample> {
        let mut out = Vec::new();
        r.drain(&mut out, usize::MAX);
        out
    }

    #[test]
    fn off_by_default_and_per_port() {
        let mut s = Sampler::new(2, 7);
        let mut bytes = [1u8; 200];
        for i in 0..1000 {
            assert!(!s.consider(i % 64, &frame(&mut bytes, 0), 0, NO_MEMBER));
        }
        s.ring.set_rates(&[0, 1]);
        s.refresh();
        for i in 0..10 {
            assert!(!s.consider(i, &frame(&mut bytes, 0), 0, NO_MEMBER), "port 0 stays off");
            assert!(s.consider(10 + i, &frame(&mut bytes, 1), 0, NO_MEMBER), "1 in 1 on port 1");
        }
        // A port the sampler does not know (a bad frame's) is never sampled.
        assert!(!s.consider(0, &frame(&mut bytes, 9), 0, NO_MEMBER));
        s.publish(&[], &[Verdict::Drop(DropReason::NoRoute); MAX_BATCH]);
        let got = drain_all(&s.ring);
        assert_eq!(got.len(), 10);
        assert!(got.iter().all(|g| g.port == 1 && g.header == vec![1u8; HEADER_MAX] && g.frame_len == 200));
        assert_eq!(got.iter().map(|g| g.pool).collect::<Vec<_>>(), (1..=10).collect::<Vec<u64>>());
        let st = s.ring.stats();
        assert_eq!(st[0], PortSampleStats::default());
        assert_eq!(st[1], PortSampleStats { rate: 1, pool: 10, sampled: 10, dropped: 0 });
    }

    #[test]
    fn the_slot_carries_header_metadata_and_outcome() {
        let mut s = Sampler::new(3, 1);
        s.ring.set_rates(&[1, 1, 1]);
        s.refresh();
        let mut short: Vec<u8> = (0..61).collect();
        let mut long: Vec<u8> = (0..=255).collect();
        let mut third = [9u8; 64];
        assert!(s.consider(0, &frame(&mut short, 2), 10, 5));
        assert!(s.consider(1, &frame(&mut long, 0), 0, NO_MEMBER));
        assert!(s.consider(2, &frame(&mut third, 1), 0, 3));
        s.note_icmp(2, DropReason::TtlExpired);
        // The first left tagged (VLAN 300, priority 5), as the rewrite made it.
        let mut egress = vec![0u8; 64];
        egress[12..16].copy_from_slice(&[0x81, 0x00, 0xa1, 0x2c]);
        let bufs = [frame(&mut egress, 1)];
        s.publish(
            &bufs,
            &[
                Verdict::Forward { port: 1, start: 0, len: 61 },
                Verdict::Drop(DropReason::Blackhole),
                Verdict::Forward { port: 1, start: 0, len: 64 },
            ],
        );
        let got = drain_all(&s.ring);
        assert_eq!(got[0].header, short);
        assert_eq!((got[0].port, got[0].vlan, got[0].member, got[0].frame_len), (2, 10, 5, 61));
        assert_eq!(got[0].outcome, SampleOutcome::Forwarded { port: 1, vlan: 300, priority: 5 });
        assert_eq!(got[1].header, long[..HEADER_MAX].to_vec());
        assert_eq!(got[1].frame_len, 256);
        assert_eq!(got[1].outcome, SampleOutcome::Dropped { reason: DropReason::Blackhole, icmp_sent: false });
        assert_eq!(got[2].outcome, SampleOutcome::Dropped { reason: DropReason::TtlExpired, icmp_sent: true });
        assert!(drain_all(&s.ring).is_empty());
    }

    #[test]
    fn skips_average_the_rate_and_the_pool_counts_every_frame() {
        let mut s = Sampler::new(1, 99);
        let rate = 100u32;
        s.ring.set_rates(&[rate]);
        s.refresh();
        let mut bytes = [0u8; 64];
        let frames = 1_000_000u64;
        let mut hits = 0u64;
        let mut min_gap = u64::MAX;
        let mut max_gap = 0;
        let mut last = 0u64;
        for i in 1..=frames {
            if s.consider(0, &frame(&mut bytes, 0), 0, NO_MEMBER) {
                hits += 1;
                min_gap = min_gap.min(i - last);
                max_gap = max_gap.max(i - last);
                last = i;
                s.publish(&[], &[Verdict::Drop(DropReason::NoRoute)]);
                let got = drain_all(&s.ring);
                assert_eq!(got[0].pool, i, "the pool is every frame seen");
            }
        }
        // Gaps within [1, 2N - 1], and the count within 5 sigma of frames / N (the skip's
        // variance is below the binomial's, so this bound is loose for it).
        assert!(min_gap >= 1 && max_gap < 2 * u64::from(rate), "{min_gap} {max_gap}");
        let mean = frames as f64 / f64::from(rate);
        let sigma = (mean * (1.0 - 1.0 / f64::from(rate))).sqrt();
        assert!((hits as f64 - mean).abs() < 5.0 * sigma, "{hits} vs {mean}");
        assert!(max_gap > u64::from(rate) && min_gap < u64::from(rate), "the skip is random, not fixed");
    }

    #[test]
    fn a_full_ring_drops_and_counts() {
        let mut s = Sampler::new(1, 3);
        s.ring.set_rates(&[1]);
        s.refresh();
        let mut bytes = [0u8; 64];
        let verdicts = [Verdict::Drop(DropReason::NoRoute); MAX_BATCH];
        let mut taken = 0;
        for _ in 0..(SAMPLE_SLOTS / MAX_BATCH + 2) {
            for i in 0..MAX_BATCH {
                taken += usize::from(s.consider(i, &frame(&mut bytes, 0), 0, NO_MEMBER));
            }
            s.publish(&[], &verdicts);
        }
        assert_eq!(taken, SAMPLE_SLOTS);
        let st = s.ring.stats()[0];
        assert_eq!((st.sampled, st.dropped), (SAMPLE_SLOTS as u64, 2 * MAX_BATCH as u64));
        let mut out = Vec::new();
        assert_eq!(s.ring.drain(&mut out, 10), 10);
        assert_eq!(drain_all(&s.ring).len(), SAMPLE_SLOTS - 10);
        // Room again.
        assert!(s.consider(0, &frame(&mut bytes, 0), 0, NO_MEMBER));
    }

    #[test]
    fn a_rate_change_keeps_the_pool_and_switching_off_stops() {
        let mut s = Sampler::new(1, 5);
        s.ring.set_rates(&[1000]);
        s.refresh();
        let mut bytes = [0u8; 64];
        let before = (0..10).filter(|&i| s.consider(i, &frame(&mut bytes, 0), 0, NO_MEMBER)).count();
        s.publish(&[], &[Verdict::Drop(DropReason::NoRoute); MAX_BATCH]);
        s.ring.set_rates(&[1]);
        s.refresh();
        assert!(s.consider(0, &frame(&mut bytes, 0), 0, NO_MEMBER));
        s.publish(&[], &[Verdict::Drop(DropReason::NoRoute)]);
        let got = drain_all(&s.ring);
        assert_eq!(got.last().map(|g| g.pool), Some(11), "{before} sampled before; 10 frames, then 1");
        s.ring.set_rates(&[0]);
        s.refresh();
        assert!((0..100).all(|i| !s.consider(i % 64, &frame(&mut bytes, 0), 0, NO_MEMBER)));
    }

    #[test]
    fn a_consumer_on_another_thread_sees_every_sample_in_order() {
        let mut s = Sampler::new(1, 11);
        s.ring.set_rates(&[1]);
        s.refresh();
        let ring = s.ring.clone();
        let reader = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while seen.len() < 20_000 {
                if ring.drain(&mut seen, 100) == 0 {
                    std::thread::yield_now();
                }
            }
            seen
        });
        let mut sent = 0u32;
        while sent < 20_000 {
            let mut bytes = sent.to_le_bytes().repeat(4);
            if s.consider(0, &frame(&mut bytes, 0), 0, NO_MEMBER) {
                sent += 1;
            } else {
                std::thread::yield_now();
            }
            s.publish(&[], &[Verdict::Forward { port: 0, start: 0, len: 16 }]);
        }
        let seen = reader.join().unwrap();
        for (i, g) in seen.iter().enumerate() {
            assert_eq!(g.header, (i as u32).to_le_bytes().repeat(4));
        }
    }
}
