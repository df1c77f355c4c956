//! The worker pipeline: a batch of received frames in, one verdict per frame out, with
//! forwarded frames rewritten in place (TTL / hop limit, checksum, MACs, VLAN tag) and
//! ICMP errors built in place in the received frame's chunk. A pure function over buffers:
//! no sockets, no allocation, lock, syscall or logging, so it is tested on byte arrays.
//!
//! Per batch (DPDK l3fwd, VPP ip4-input / ip4-lookup / ip4-rewrite): parse and validate
//! every frame; look up every IPv4 destination with one batch call and every IPv6
//! destination with another; resolve the next hop by flow hash; rewrite. Validation
//! follows RFC 1812 (IPv4 routers), RFC 8200 and RFC 4291 (IPv6); every frame not
//! forwarded is a counted `DropReason`.
//!
//! Frames live in chunks (UMEM frames) with headroom before the packet. Rewriting moves
//! only the Ethernet header: pushing a VLAN tag needs 4 octets of headroom, an ICMP error
//! needs 28 (IPv4) or 48 (IPv6). With less, the packet is moved toward the chunk's end when
//! the chunk has room there, else the frame is dropped (`no_headroom`) or the ICMP error
//! skipped (`icmp_no_room`). 256 octets of headroom (XDP's default) never hits either.
//!
//! The common frame (untagged, no IPv4 options or IPv6 extension headers, ordinary
//! addresses, routed to a group with a TTL to spare) takes a fast path, `fast`, for its
//! parsing and forwarding (its sender, source filter and sample are taken as for any
//! frame); every other frame, and any the fast path declines, is decided by the full path
//! below, which holds every rule.
//!
//! One file per concern: `config` (what the pipeline is told and its checks), `parse`,
//! `forward` (TTL, MTU, link rewrite), `icmp`, `ratelimit`, `hash` (the flow hash); the
//! drop reasons are `crate::drop`'s, the address classes `wire`'s, the prefetch hint
//! `crate::prefetch`'s.

mod config;
mod edge;
mod fast;
mod forward;
pub mod glean;
mod hash;
mod icmp;
#[cfg(test)]
mod member_tests;
mod parse;
mod ratelimit;
pub mod sample;
#[cfg(test)]
mod testing;
mod urpf;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use self::config::NO_SUB;
pub use self::config::{ConfigError, IcmpLimits, IcmpRateLimit, PipelineConfig, PortConfig, SubInterfaceConfig};
use self::glean::GleanProducer;
pub use self::glean::{GleanQueue, GleanStats};
pub use self::ratelimit::{SourceBuckets, TokenBucket};
use self::sample::Sampler;
pub use self::sample::{PortSampleStats, Sample, SampleOutcome, SampleRing};
pub use self::urpf::{UrpfMode, UrpfPolicy, UrpfTable};
use crate::counters::WorkerCounters;
pub use crate::drop::{DropReason, IcmpOutcome};
use crate::fib::{Adjacency, AdjacencyId, FibReader, MemberId, NO_MEMBER};

/// Frames handled per batch; `process` splits longer slices.
pub const MAX_BATCH: usize = 64;

/// One received frame: the packet is `chunk[start..start + len]`, and the chunk may hold
/// headroom before it and tailroom after it.
#[derive(Debug)]
pub struct PacketBuf<'a> {
    pub chunk: &'a mut [u8],
    pub start: usize,
    pub len: usize,
    /// Ingress port index (into `PipelineConfig::ports`).
    pub port: u16,
}

/// What to do with a frame. An ICMP error is a `Forward` out of the ingress port, with the
/// frame's chunk rewritten to hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit `chunk[start..start + len]` on `port`.
    Forward { port: u16, start: usize, len: usize },
    /// Return the chunk to the fill ring.
    Drop(DropReason),
}
struct PortState {
    mac: [u8; 6],
    /// `mac` as the fast path compares it: the six octets little-endian in a u64.
    mac_key: u64,
    /// The untagged sub-interface (VLAN 0), `NO_SUB` when absent.
    untagged: u16,
    mtu: u16,
    /// VLAN id → dense sub-interface index, `NO_SUB` when absent. 8 KiB per port.
    sub_of_vlan: Box<[u16]>,
    icmp_bucket: TokenBucket,
}

impl PortState {
    #[inline]
    fn sub(&self, vlan: u16) -> Option<u16> {
        self.sub_of_vlan.get(vlan as usize).copied().filter(|&s| s != NO_SUB)
    }
}

struct SubInterface {
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<Ipv6Addr>,
    /// Where it is, as adjacencies name it: for the strict reverse-path check.
    port: u16,
    vlan: u16,
}

/// The directed broadcast address of an attached IPv4 subnet, and what to do with it.
#[derive(Clone, Copy)]
struct DirectedBroadcast {
    addr: u32,
    /// Where the subnet is: the sub-interface (port, VLAN) it is attached to.
    port: u16,
    vlan: u16,
    /// The port forwards directed broadcasts (as a link broadcast); else they drop.
    forward: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    /// Verdict already decided during parsing.
    Done,
    V4,
    V6,
}

/// What parsing learnt of a frame that goes on to the lookup.
#[derive(Clone, Copy)]
struct Meta {
    family: Family,
    /// Index into this batch's lookup keys of its family.
    slot: u8,
    /// Ethernet header length as received: 14, or 18 with a tag.
    l2_len: u8,
    tagged: bool,
    /// The ingress tag's TCI, sent back whole on ICMP errors.
    tci: u16,
    /// The ingress tag's priority, kept on egress.
    priority: u8,
    sub: u16,
    /// IP datagram length (frames are trimmed to it).
    ip_len: u16,
    dont_frag: bool,
    /// An ICMP error may be sent in reply (see `IcmpOutcome::Suppressed`).
    icmp_ok: bool,
    /// IPv4 with every host bit of the longest attached subnet set: may be a directed
    /// broadcast, to look up in `Pipeline::broadcasts`.
    maybe_broadcast: bool,
    flow_hash: u32,
    /// The ingress sub-interface's packed uRPF policy (0: off) and, when it checks, the
    /// index of the source among this batch's source keys of its family.
    urpf: u8,
    src_slot: u8,
    /// The exchange member that sent the frame (by source MAC on its sub-interface),
    /// `UNKNOWN_MEMBER`, or `NO_MEMBER` when its sub-interface has no members.
    member: MemberId,
    /// The sampler reserved a slot for this frame (see `sample`).
    sampled: bool,
    /// Parsed by `parse_fast`: `forward_fast` may take it.
    fast: bool,
}

impl Meta {
    const EMPTY: Meta = Meta {
        family: Family::Done,
        slot: 0,
        l2_len: 0,
        tagged: false,
        tci: 0,
        priority: 0,
        sub: 0,
        ip_len: 0,
        dont_frag: false,
        icmp_ok: false,
        maybe_broadcast: false,
        flow_hash: 0,
        urpf: 0,
        src_slot: 0,
        member: NO_MEMBER,
        sampled: false,
        fast: false,
    };
}
/// One worker's pipeline: configuration, ICMP token buckets and counters. Allocates only
/// in `new`.
#[repr(align(64))]
pub struct Pipeline {
    ports: Box<[PortState]>,
    subs: Box<[SubInterface]>,
    counters: Arc<WorkerCounters>,
    hash_seed: u64,
    /// Identification of the next IPv4 ICMP error.
    ident: u16,
    /// Per source of the offending packet, and for all of this worker's ICMP errors.
    icmp_sources: SourceBuckets,
    icmp_worker: TokenBucket,
    /// Sorted by address; usually a handful, empty when no subnet has a broadcast.
    broadcasts: Box<[DirectedBroadcast]>,
    /// The host bits of the longest attached subnet (0xff for /24s): every broadcast
    /// address has them all set, so one AND rules out most destinations while parsing.
    /// u32::MAX with no broadcast (then only 255.255.255.255 would pass, dropped before).
    broadcast_host_bits: u32,
    /// Each sub-interface's reverse-path policy, shared with the other workers.
    urpf: Arc<UrpfTable>,
    /// Destinations of `glean` drops, for the agent to resolve.
    glean: GleanProducer,
    /// The member of the frame being decided, for `drop` to count it by: set by
    /// `process_batch` before each frame's parse and forward, NO_MEMBER between batches.
    member: MemberId,
    /// The batch being decided has exchange members in its FIB (`EdgeBatch::plain` is
    /// false): without any, no adjacency leads to one, and the fast path counts no member's
    /// tx without looking its adjacency's member up.
    members: bool,
    /// 1-in-N sampling of received frames for sFlow, per ingress port.
    sampler: Sampler,
    /// Set by `reject` when it answered a frame with an ICMP error (read for sampled
    /// frames only, whose verdict is then a Forward out of the ingress port).
    answered: Option<DropReason>,
    /// The batch's lookup keys and entries, kept from batch to batch: made afresh on the
    /// stack, their 4.75 KiB were zeroed for every batch. Each batch writes every key and
    /// entry it reads; `process_batch` holds them while it runs (None then).
    scratch: Option<Box<Scratch>>,
    /// Common frames take the fast path (`fast`); off, every frame takes the full one
    /// (for tests and benchmarks to compare the two).
    fast_path: bool,
    /// Frames `forward_fast` forwarded, for the tests to see the fast path taken.
    #[cfg(test)]
    fast_forwarded: u64,
}

/// A batch's lookup keys, destinations first and then the sources that a uRPF check
/// needs (one batch lookup per family answers both), and the entries found for them.
struct Scratch {
    v4_keys: [u32; 2 * MAX_BATCH],
    v6_keys: [u128; 2 * MAX_BATCH],
    v4_srcs: [u32; MAX_BATCH],
    v6_srcs: [u128; MAX_BATCH],
    v4_entries: [u32; 2 * MAX_BATCH],
    v6_entries: [u32; 2 * MAX_BATCH],
}

impl Scratch {
    fn boxed() -> Box<Scratch> {
        Box::new(Scratch {
            v4_keys: [0; 2 * MAX_BATCH],
            v6_keys: [0; 2 * MAX_BATCH],
            v4_srcs: [0; MAX_BATCH],
            v6_srcs: [0; MAX_BATCH],
            v4_entries: [0; 2 * MAX_BATCH],
            v6_entries: [0; 2 * MAX_BATCH],
        })
    }
}

impl Pipeline {
    pub fn new(config: &PipelineConfig) -> Result<Pipeline, ConfigError> {
        config.check()?;
        let mut ports = Vec::with_capacity(config.ports.len());
        let mut subs = Vec::new();
        let mut broadcasts = Vec::new();
        for (index, port) in config.ports.iter().enumerate() {
            let mut sub_of_vlan = vec![NO_SUB; 4096].into_boxed_slice();
            for s in &port.sub_interfaces {
                sub_of_vlan[s.vlan as usize] = subs.len() as u16;
                subs.push(SubInterface { ipv4: s.ipv4, ipv6: s.ipv6, port: index as u16, vlan: s.vlan });
                if let Some(b) = s.directed_broadcast() {
                    broadcasts.push(DirectedBroadcast {
                        addr: b.to_bits(),
                        port: index as u16,
                        vlan: s.vlan,
                        forward: port.directed_broadcast,
                    });
                }
            }
            let m = port.mac;
            let mac_key = u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0]);
            let untagged = sub_of_vlan[0];
            ports.push(PortState {
                mac: port.mac,
                mac_key,
                untagged,
                mtu: port.mtu,
                sub_of_vlan,
                icmp_bucket: TokenBucket::new(port.icmp_rate_limit),
            });
        }
        let counters = Arc::new(WorkerCounters::new(subs.len(), config.ports.len()));
        let longest = config
            .ports
            .iter()
            .flat_map(|p| &p.sub_interfaces)
            .filter(|s| s.directed_broadcast().is_some())
            .map(|s| s.ipv4_prefix_len)
            .max();
        let broadcast_host_bits = longest.map_or(u32::MAX, |len| u32::MAX >> len);
        // The same subnet on two sub-interfaces: the first listed wins.
        broadcasts.sort_by_key(|b| b.addr);
        broadcasts.dedup_by_key(|b| b.addr);
        let limits = config.icmp_limits;
        let urpf = Arc::new(UrpfTable::new(config.sub_interfaces().map(|(_, _, s)| s.urpf)));
        Ok(Pipeline {
            ports: ports.into(),
            subs: subs.into(),
            counters,
            hash_seed: config.hash_seed,
            ident: 0,
            icmp_sources: SourceBuckets::new(limits.per_source, limits.sources, config.hash_seed.rotate_left(17) ^ 0x6963_6d70),
            icmp_worker: TokenBucket::new(limits.per_worker),
            broadcasts: broadcasts.into(),
            broadcast_host_bits,
            urpf,
            glean: GleanProducer::new(config.hash_seed.rotate_left(29) ^ 0x676c_6561),
            member: NO_MEMBER,
            members: false,
            scratch: Some(Scratch::boxed()),
            sampler: Sampler::new(config.ports.len(), config.hash_seed.rotate_left(41) ^ next_sampler_seed()),
            answered: None,
            fast_path: true,
            #[cfg(test)]
            fast_forwarded: 0,
        })
    }

    /// Turns the fast path for common frames on (the default) or off. Both decide every
    /// frame alike; off is for comparing them.
    pub fn set_fast_path(&mut self, on: bool) {
        self.fast_path = on;
    }

    /// The sub-interfaces' reverse-path policies, by dense index: set one and this worker
    /// checks by it from its next frame on.
    pub fn urpf(&self) -> &Arc<UrpfTable> {
        &self.urpf
    }

    /// Reads the policies from `table` from now on (the engine gives every worker one
    /// table); refused, false, when it is not of this pipeline's sub-interfaces' size.
    pub fn share_urpf(&mut self, table: Arc<UrpfTable>) -> bool {
        if table.len() != self.subs.len() {
            return false;
        }
        self.urpf = table;
        true
    }

    /// New ICMP error limits from the next batch on: per ingress port, per source, per
    /// worker. The port and worker buckets first take what they earned at the old rate up
    /// to `now_ns` (the clock of `process`), then keep their tokens up to the new burst; the
    /// sources' buckets refill lazily, as always, at the new rate. The per-source table
    /// keeps its size (`IcmpLimits::sources` is for `new` only). No allocation.
    pub fn set_icmp_limits(&mut self, per_port: IcmpRateLimit, per_source: IcmpRateLimit, per_worker: IcmpRateLimit, now_ns: u64) {
        for port in self.ports.iter_mut() {
            port.icmp_bucket.ready(now_ns);
            port.icmp_bucket.set_limit(per_port);
        }
        self.icmp_sources.set_limit(per_source);
        self.icmp_worker.ready(now_ns);
        self.icmp_worker.set_limit(per_worker);
    }

    /// This worker's glean queue, for the agent to drain on another thread.
    pub fn glean_queue(&self) -> &Arc<GleanQueue> {
        self.glean.queue()
    }

    /// This worker's sample ring (sFlow), for the agent to set rates and drain samples.
    pub fn sample_ring(&self) -> &Arc<SampleRing> {
        self.sampler.ring()
    }

    /// This worker's counters, for readers on other threads.
    pub fn counters(&self) -> &Arc<WorkerCounters> {
        &self.counters
    }

    /// Decides every frame of `frames` into the same position of `verdicts` (which must be
    /// at least as long), rewriting forwarded frames and ICMP errors in their chunks.
    /// `now_ns` is any monotonic clock, read once per batch by the caller; it drives the
    /// ICMP token buckets. Call `fib.quiescent()` afterwards.
    pub fn process(&mut self, fib: &FibReader, frames: &mut [PacketBuf<'_>], verdicts: &mut [Verdict], now_ns: u64) {
        debug_assert!(verdicts.len() >= frames.len(), "one verdict per frame");
        for (f, v) in frames.chunks_mut(MAX_BATCH).zip(verdicts.chunks_mut(MAX_BATCH)) {
            self.process_batch(fib, f, v, now_ns);
        }
    }

    fn process_batch(&mut self, fib: &FibReader, frames: &mut [PacketBuf<'_>], verdicts: &mut [Verdict], now_ns: u64) {
        debug_assert!(frames.len() <= MAX_BATCH);
        let mut meta = [Meta::EMPTY; MAX_BATCH];
        // Destinations first, then the sources that a uRPF check needs: one batch lookup
        // per family answers both, and a batch with uRPF off everywhere looks up as before.
        // Held for the batch and put back at its end; only a batch that panicked leaves
        // none, and the next one makes them afresh.
        let mut scratch = self.scratch.take().unwrap_or_else(Scratch::boxed);
        let Scratch { v4_keys, v6_keys, v4_srcs, v6_srcs, v4_entries, v6_entries } = &mut *scratch;
        let (mut n4, mut n6, mut s4, mut s6) = (0usize, 0usize, 0usize, 0usize);

        // Ask for every frame's headers before reading the first: in copy mode the kernel
        // wrote them a whole rx ring ago, out of this core's caches by now under load, and
        // the first read of each was half of this function's time (perf annotate at
        // overload). Issued together the misses overlap instead of queueing one by one.
        for frame in frames.iter() {
            crate::prefetch::prefetch(frame.chunk, frame.start);
        }

        // Parse and validate all; gather destinations and the sources to check. A frame
        // that parsing placed on a sub-interface (it sets `l2_len` then) is its source MAC's
        // member's, and passes that member's source filter (`edge`).
        let mut edge = edge::EdgeBatch::new(fib);
        self.sampler.refresh();
        let sampling = self.sampler.active();
        // Each destination (and the source, when its sub-interface checks the reverse path)
        // goes to its family's keys; the root entry's prefetch lets its miss overlap the
        // parsing of the frames after this one instead of stalling the batch lookup (which
        // asks again: a second prefetch of a line on its way costs a few instructions, and
        // leaving it out measured no fewer).
        macro_rules! gather {
            ($m:expr, $dest:expr) => {
                $m.urpf = self.urpf.raw($m.sub as usize);
                match $dest {
                    Destination::V4(d, src) => {
                        fib.prefetch_v4(d);
                        if let Some(k) = v4_keys.get_mut(n4) {
                            *k = d;
                            $m.slot = n4 as u8;
                            n4 += 1;
                        }
                        if urpf::checks($m.urpf) {
                            fib.prefetch_v4(src);
                            if let Some(k) = v4_srcs.get_mut(s4) {
                                *k = src;
                                $m.src_slot = s4 as u8;
                                s4 += 1;
                            }
                        }
                    }
                    Destination::V6(d, src) => {
                        fib.prefetch_v6(d);
                        if let Some(k) = v6_keys.get_mut(n6) {
                            *k = d;
                            $m.slot = n6 as u8;
                            n6 += 1;
                        }
                        if urpf::checks($m.urpf) {
                            if let Some(k) = v6_srcs.get_mut(s6) {
                                *k = src;
                                $m.src_slot = s6 as u8;
                                s6 += 1;
                            }
                        }
                    }
                }
            };
        }
        // A frame the fast path parses still has its sender found, its source filtered and
        // its sample taken, as below; a frame it declines goes the full way.
        let members = !edge.plain();
        self.members = members;
        let mut rx = fast::Tally::new();
        for (i, ((frame, verdict), m)) in frames.iter().zip(verdicts.iter_mut()).zip(meta.iter_mut()).enumerate() {
            if self.fast_path {
                if let Some(dest) = self.parse_fast(frame, m, &mut rx) {
                    let filter = if members {
                        let (member, filter) = edge.sender(&self.counters, frame, m);
                        self.member = member;
                        m.member = member;
                        filter
                    } else {
                        None
                    };
                    // Untagged: the sampler's VLAN is 0.
                    m.sampled = sampling && self.sampler.consider(i, frame, 0, m.member);
                    if filter.is_some_and(|f| !edge::source_allowed(f, &dest)) {
                        m.family = Family::Done;
                        *verdict = self.drop(frame.port, DropReason::MemberSource);
                        continue;
                    }
                    gather!(m, dest);
                    continue;
                }
            }
            let parsed = self.parse(frame, m);
            let (member, filter) = if m.l2_len != 0 { edge.sender(&self.counters, frame, m) } else { (NO_MEMBER, None) };
            self.member = member;
            m.member = member;
            // As received, before any rewrite; whatever becomes of the frame.
            m.sampled = sampling && self.sampler.consider(i, frame, if m.tagged { m.tci & 0x0fff } else { 0 }, m.member);
            if let (Ok(dst), Some(filter)) = (&parsed, filter) {
                if !edge::source_allowed(filter, dst) {
                    m.family = Family::Done;
                    *verdict = self.drop(frame.port, DropReason::MemberSource);
                    continue;
                }
            }
            match parsed {
                Ok(dest) => {
                    gather!(m, dest);
                }
                Err(reason) => {
                    m.family = Family::Done;
                    *verdict = self.drop(frame.port, reason);
                }
            }
        }
        self.member = NO_MEMBER;
        edge.flush(&self.counters);
        rx.take(|s, p, b| self.counters.count_rx_run(s, p, b));

        // Look up all, one call per family.
        if let (Some(to), Some(from)) = (v4_keys.get_mut(n4..n4 + s4), v4_srcs.get(..s4)) {
            to.copy_from_slice(from);
        }
        if let (Some(to), Some(from)) = (v6_keys.get_mut(n6..n6 + s6), v6_srcs.get(..s6)) {
            to.copy_from_slice(from);
        }
        if n4 + s4 > 0 {
            fib.lookup_v4_batch_prefetched(&v4_keys[..n4 + s4], &mut v4_entries[..n4 + s4]);
        }
        if n6 + s6 > 0 {
            fib.lookup_v6_batch(&v6_keys[..n6 + s6], &mut v6_entries[..n6 + s6]);
        }

        // The fast frames' next hops, in a pass of their own: each is a chain of loads
        // (group, bucket, adjacency) that a short loop lets the core run for many frames
        // at once, where the rewrite's long body between them kept it to one or two.
        let mut hops: [Option<(AdjacencyId, &Adjacency)>; MAX_BATCH] = [None; MAX_BATCH];
        // This loop and the rewrite's index up to a length no longer than any of their
        // arrays: no bounds checks, and one counter where zipped iterators kept one per
        // array (the parse loop above stays zipped: indexed, it counted more).
        let n = frames.len().min(verdicts.len()).min(MAX_BATCH);
        for i in 0..n {
            let (m, hop) = (&meta[i], &mut hops[i]);
            let entries = match m.family {
                Family::Done => continue,
                Family::V4 => &v4_entries,
                Family::V6 => &v6_entries,
            };
            if m.fast && !urpf::checks(m.urpf) {
                if let Some(&entry) = entries.get(m.slot as usize) {
                    *hop = fast::next_hop(fib, entry, m.flow_hash);
                }
            }
        }

        // Check sources, resolve, check, rewrite.
        let mut tx = fast::Tally::new();
        for i in 0..n {
            let (frame, verdict, m, hop) = (&mut frames[i], &mut verdicts[i], &meta[i], hops[i]);
            // A frame decided already has no next hop: the pass above left it out.
            if let Some(hop) = hop {
                if self.forward_fast(fib, frame, m, hop, &mut tx, verdict).is_some() {
                    continue;
                }
            }
            let (entries, sources) = match m.family {
                Family::Done => continue,
                Family::V4 => (&v4_entries, n4),
                Family::V6 => (&v6_entries, n6),
            };
            self.member = m.member;
            if m.sampled {
                self.answered = None;
            }
            if urpf::checks(m.urpf) {
                let at = sources + m.src_slot as usize;
                let source = entries.get(at).copied().unwrap_or(0);
                let src = || match m.family {
                    Family::V4 => v4_keys.get(at).map_or(0, |&s| u128::from(s) << 96),
                    _ => v6_keys.get(at).copied().unwrap_or(0),
                };
                if let Some(reason) = self.reverse_path_drop(fib, &mut edge, m, source, src) {
                    *verdict = self.drop(frame.port, reason);
                    continue;
                }
            }
            *verdict = match entries.get(m.slot as usize) {
                Some(&e) => self.forward(fib, frame, m, e, now_ns),
                None => self.drop(frame.port, DropReason::Truncated),
            };
            if m.sampled {
                if let Some(reason) = self.answered.take() {
                    self.sampler.note_icmp(i, reason);
                }
            }
        }
        self.member = NO_MEMBER;
        tx.take(|s, p, b| self.counters.count_tx_run(s, p, b));
        self.sampler.publish(frames, verdicts);
        self.scratch = Some(scratch);
    }

    #[inline]
    fn drop(&self, port: u16, reason: DropReason) -> Verdict {
        self.counters.count_drop(port, reason);
        self.counters.count_member_drop(self.member, reason);
        Verdict::Drop(reason)
    }
}

/// A different sampler seed for each pipeline (each worker), so the workers' skips do not
/// run in step. Start-up only.
fn next_sampler_seed() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0x5eed);
    // Relaxed: any distinct value will do.
    NEXT.fetch_add(0x9e37_79b9_7f4a_7c15, std::sync::atomic::Ordering::Relaxed)
}

/// What to look up for a frame: (destination, source).
enum Destination {
    V4(u32, u32),
    V6(u128, u128),
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::wire::ethernet::ethertype;
    use crate::wire::{icmpv4, icmpv6, ip_protocol};
    use proptest::prelude::*;

    #[test]
    fn mixed_batch_gets_a_verdict_per_frame() {
        let mut rig = rig();
        let mut bad_sum = v4_frame([198, 19, 1, 5], 64);
        bad_sum[24] ^= 0xff;
        let frames = vec![
            (0, v4_frame([198, 19, 1, 5], 64)),
            (0, v6_frame(v6(2, 5), 64)),
            (0, bad_sum),
            (0, v6_frame(v6(1, 5), 1)),
            (0, v4_frame([198, 19, 66, 5], 64)),
            (0, eth(MAC0, None, ethertype::ARP, &[0; 46])),
            (1, eth(MAC1, None, ethertype::IPV4, &ipv4(SRC4, [198, 19, 3, 1], 64, ip_protocol::UDP, &udp(1, 2, 3)))),
            (0, v4_frame([198, 19, 200, 5], 64)),
            (0, v6_frame(v6(11, 5), 64)),
        ];
        let outs = rig.run(&frames);
        let v: Vec<_> = outs.iter().map(|o| o.verdict).collect();
        assert!(matches!(v[0], Verdict::Forward { port: 1, .. }));
        assert!(matches!(v[1], Verdict::Forward { port: 1, .. }));
        assert_eq!(v[2], Verdict::Drop(DropReason::Ipv4BadChecksum));
        assert!(matches!(v[3], Verdict::Forward { port: 0, .. }), "time exceeded back out of port 0");
        assert_eq!(v[4], Verdict::Drop(DropReason::Blackhole));
        assert_eq!(v[5], Verdict::Drop(DropReason::NotIp));
        assert!(matches!(v[6], Verdict::Forward { port: 0, .. }));
        assert!(matches!(v[7], Verdict::Forward { port: 0, .. }), "net unreachable");
        assert!(matches!(v[8], Verdict::Forward { port: 1, .. }));
        check_forwarded_v4(&outs[0], &frames[0].1, 1, None, nh_mac(1), MAC1);
        check_forwarded_v4(&outs[1], &frames[1].1, 1, Some(300), nh_mac(2), MAC1);
        check_forwarded_v4(&outs[6], &frames[6].1, 0, Some(100), nh_mac(3), MAC0);
        assert_eq!(parse_icmp(outs[3].frame()).ty, icmpv6::msg_type::TIME_EXCEEDED);
        assert_eq!(parse_icmp(outs[7].frame()).ty, icmpv4::msg_type::DEST_UNREACHABLE);
        let s = rig.snap();
        assert_eq!(s.total_drops(), 5);
        assert_eq!(s.icmp_count(IcmpOutcome::Sent), 2);
        // More than one batch in one call.
        let many: Vec<_> = (0..150).map(|i| (0u16, v4_frame([198, 19, 1, i as u8], 64))).collect();
        assert!(rig.run(&many).iter().all(|o| matches!(o.verdict, Verdict::Forward { port: 1, .. })));
    }

    #[test]
    fn sampling_one_in_one_reports_every_frame_as_received_with_its_outcome() {
        let mut rig = rig();
        rig.pipeline.sample_ring().set_rates(&[1, 0]);
        let frames = vec![
            (0, v4_frame([198, 19, 1, 5], 64)),
            (0, v6_frame(v6(2, 5), 64)),
            (0, v6_frame(v6(1, 5), 1)),
            (0, v4_frame([198, 19, 66, 5], 64)),
            (1, eth(MAC1, None, ethertype::IPV4, &ipv4(SRC4, [198, 19, 3, 1], 64, ip_protocol::UDP, &udp(1, 2, 3)))),
        ];
        let outs = rig.run(&frames);
        let mut got = Vec::new();
        rig.pipeline.sample_ring().drain(&mut got, usize::MAX);
        assert_eq!(got.len(), 4, "port 0 only: {got:?}");
        for (g, (_, f)) in got.iter().zip(&frames) {
            assert_eq!(g.header, f[..f.len().min(sample::HEADER_MAX)].to_vec(), "as received, before the rewrite");
            assert_eq!(g.frame_len as usize, f.len());
        }
        assert_eq!(got[0].outcome, SampleOutcome::Forwarded { port: 1, vlan: 0, priority: 0 });
        assert_eq!(got[1].outcome, SampleOutcome::Forwarded { port: 1, vlan: 300, priority: 0 }, "{:?}", outs[1].verdict);
        assert_eq!(got[2].outcome, SampleOutcome::Dropped { reason: DropReason::TtlExpired, icmp_sent: true });
        assert_eq!(got[3].outcome, SampleOutcome::Dropped { reason: DropReason::Blackhole, icmp_sent: false });
        assert_eq!(got.iter().map(|g| g.pool).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        // A later forwarded frame does not inherit the ICMP mark of an earlier unsampled one.
        rig.pipeline.sample_ring().set_rates(&[2, 0]);
        let many: Vec<_> =
            (0..64).map(|i| (0u16, if i % 2 == 0 { v6_frame(v6(1, 5), 1) } else { v4_frame([198, 19, 1, 5], 64) })).collect();
        let outs = rig.run(&many);
        got.clear();
        rig.pipeline.sample_ring().drain(&mut got, usize::MAX);
        assert!(!got.is_empty());
        for g in &got {
            let index = outs.iter().zip(&many).position(|(_, (_, f))| f[..f.len().min(sample::HEADER_MAX)] == g.header[..]).unwrap();
            match outs[index].verdict {
                Verdict::Forward { port: 1, .. } => assert_eq!(g.outcome, SampleOutcome::Forwarded { port: 1, vlan: 0, priority: 0 }),
                _ => assert_eq!(g.outcome, SampleOutcome::Dropped { reason: DropReason::TtlExpired, icmp_sent: true }),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Hostile input: any bytes, any port, any headroom and chunk size, never a panic,
        /// always a verdict, and a forwarded frame always lies inside its chunk.
        #[test]
        fn random_frames_never_panic(
            frames in proptest::collection::vec((0u16..4, proptest::collection::vec(any::<u8>(), 0..200), 0usize..64, 0usize..300), 1..80),
            now in any::<u64>(),
        ) {
            let mut rig = rig();
            let mut chunks: Vec<Vec<u8>> = frames.iter().map(|(_, f, head, tail)| {
                let mut c = vec![0u8; head + f.len() + tail];
                c[*head..head + f.len()].copy_from_slice(f);
                c
            }).collect();
            let mut bufs: Vec<PacketBuf> = chunks.iter_mut().zip(&frames).map(|(c, (port, f, head, _))| PacketBuf { chunk: c, start: *head, len: f.len(), port: *port }).collect();
            let mut verdicts = vec![Verdict::Drop(DropReason::Local); bufs.len()];
            rig.pipeline.process(&rig.reader, &mut bufs, &mut verdicts, now);
            for (v, b) in verdicts.iter().zip(&bufs) {
                if let Verdict::Forward { start, len, .. } = v {
                    prop_assert!(start + len <= b.chunk.len());
                }
            }
            let s = rig.snap();
            let sent = s.icmp_count(IcmpOutcome::Sent);
            let forwarded = verdicts.iter().filter(|v| matches!(v, Verdict::Forward { .. })).count() as u64;
            prop_assert_eq!(s.total_drops() + forwarded - sent, frames.len() as u64, "every frame counted once");
        }

        /// Valid frames with random bytes flipped: gets past the first checks far more
        /// often than random bytes do.
        #[test]
        fn mutated_frames_never_panic(flips in proptest::collection::vec((0usize..120, any::<u8>()), 1..6), v6_frame_sel in any::<bool>(), head in 0usize..64) {
            let mut rig = rig();
            let mut f = if v6_frame_sel { v6_frame(v6(1, 5), 2) } else { v4_frame([198, 19, 2, 5], 2) };
            for (at, b) in flips {
                let n = f.len();
                f[at % n] = b;
            }
            let out = rig.run_in(&[(0, f)], head, 0, 0).pop().unwrap();
            if let Verdict::Forward { start, len, .. } = out.verdict {
                prop_assert!(start + len <= out.chunk.len());
            }
        }
    }
}
