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

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::counters::WorkerCounters;
use crate::fib::{FibReader, RouteTarget};
use crate::wire::ethernet::{self, ethertype};
use crate::wire::{icmpv4, icmpv6, ip_protocol, ipv4, ipv6, ports};

/// Frames handled per batch; `process` splits longer slices.
pub const MAX_BATCH: usize = 64;
/// TTL / hop limit of generated ICMP errors.
const ICMP_TTL: u8 = 64;
/// IPv4 precedence 6, internetwork control, for ICMP errors (RFC 1812 section 4.3.2.5).
const ICMP_TOS: u8 = 0xc0;
const NO_SUB: u16 = u16::MAX;

macro_rules! reasons {
    ($(#[$meta:meta])* $ty:ident { $($(#[$doc:meta])* $variant:ident = $name:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $ty {
            $($(#[$doc])* $variant,)*
        }

        impl $ty {
            /// Every variant, in counter order (`variant as usize` is its index).
            pub const ALL: &'static [$ty] = &[$($ty::$variant,)*];
            pub const COUNT: usize = Self::ALL.len();

            /// The stable snake_case name, for metrics and logs.
            pub const fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)*
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

reasons! {
    /// Why a frame was not forwarded. The names are part of the metrics API: never rename.
    DropReason {
        /// Shorter than its Ethernet, VLAN or IP header (or the chunk cannot hold the frame).
        Truncated = "truncated",
        /// EtherType neither IPv4 nor IPv6.
        NotIp = "not_ip",
        /// Stacked tags: an 802.1ad / QinQ tag, or a second 802.1Q tag.
        MultipleVlanTags = "multiple_vlan_tags",
        /// No sub-interface for this (port, VLAN), or an unknown ingress port.
        UnknownVlan = "unknown_vlan",
        /// A unicast frame for another station's MAC address.
        OtherHost = "other_host",
        /// Unicast IP in a link-layer broadcast or multicast frame (RFC 1812 section 5.3.4).
        LinkBroadcast = "link_broadcast",
        Ipv4BadVersion = "ipv4_bad_version",
        /// IHL below 5 (RFC 1812 section 5.2.2).
        Ipv4BadHeaderLen = "ipv4_bad_header_len",
        Ipv4BadChecksum = "ipv4_bad_checksum",
        /// Total length below the header or beyond the frame (RFC 1812 section 5.2.2).
        Ipv4BadTotalLen = "ipv4_bad_total_len",
        Ipv6BadVersion = "ipv6_bad_version",
        /// Payload length beyond the frame.
        Ipv6BadPayloadLen = "ipv6_bad_payload_len",
        /// IPv4 0/8, 127/8, 224/4, 240/4 (RFC 1812 section 5.3.7); IPv6 unspecified,
        /// loopback or multicast (RFC 4291 section 2.5.2, 2.5.3, 2.7).
        MartianSource = "martian_source",
        /// IPv4 0/8, 127/8, 240/4; IPv6 unspecified or loopback.
        MartianDestination = "martian_destination",
        /// IPv4 169.254/16 (RFC 3927 section 7) or IPv6 fe80::/10 (RFC 4291 section 2.5.6)
        /// source or destination: never forwarded.
        LinkLocal = "link_local",
        /// 255.255.255.255 (RFC 1812 section 5.3.5.1).
        BroadcastDestination = "broadcast_destination",
        /// IPv4 224/4 or IPv6 ff00::/8: this engine forwards unicast only.
        MulticastDestination = "multicast_destination",
        /// TTL or hop limit would reach 0 (answered with Time Exceeded).
        TtlExpired = "ttl_expired",
        /// No route (answered with Destination Unreachable, net / no route).
        NoRoute = "no_route",
        /// An unreachable route (answered with host unreachable / reject route).
        Unreachable = "unreachable",
        /// A blackhole route: silent.
        Blackhole = "blackhole",
        /// A route to the router itself: the XDP program should have passed it to the kernel.
        Local = "local",
        /// The route's group or the member's adjacency is gone (a race with the writer).
        NoAdjacency = "no_adjacency",
        /// The adjacency names a port or (port, VLAN) this pipeline has no sub-interface for.
        UnknownEgress = "unknown_egress",
        /// Larger than the egress MTU, DF set or IPv6 (answered with Fragmentation Needed /
        /// Packet Too Big).
        MtuExceeded = "mtu_exceeded",
        /// IPv4 larger than the egress MTU without DF: this engine does not fragment.
        FragmentationNeeded = "fragmentation_needed",
        /// No room in the chunk to push the egress VLAN tag.
        NoHeadroom = "no_headroom",
    }
}

reasons! {
    /// What became of an ICMP error the pipeline wanted to send. The offending packet is
    /// counted by its `DropReason` whatever the outcome.
    IcmpOutcome {
        /// Built and returned as a `Forward` out of the ingress sub-interface.
        Sent = "icmp_sent",
        /// The ingress port's token bucket was empty.
        RateLimited = "icmp_rate_limited",
        /// The ingress sub-interface has no address of the packet's family.
        NoSource = "icmp_no_source",
        /// Never sent in reply to this packet: an ICMP error, a non-initial fragment, an
        /// unparseable IPv6 header chain, or a multicast, broadcast or martian packet.
        Suppressed = "icmp_suppressed",
        /// The chunk has no room to build the error.
        NoRoom = "icmp_no_room",
    }
}

/// A hint to load the cache line holding `buf[at]`; nothing when `at` is out of bounds
/// or the target has no prefetch instruction.
#[inline(always)]
fn prefetch(buf: &[u8], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(byte) = buf.get(at) {
        // SAFETY: PREFETCHT0 only hints the cache; it never faults and writes nothing, and
        // the address is of a live byte of `buf`.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((byte as *const u8).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (buf, at);
}

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

/// Token-bucket limit of the ICMP errors sent out of one port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpRateLimit {
    /// Sustained errors per second.
    pub per_second: u32,
    /// Errors that may go out at once after a quiet spell.
    pub burst: u32,
}

impl Default for IcmpRateLimit {
    fn default() -> Self {
        IcmpRateLimit { per_second: 1000, burst: 100 }
    }
}

/// A sub-interface of a port: untagged (VLAN 0) or an 802.1Q VLAN, with the router's
/// addresses on it (sources of ICMP errors sent out of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubInterfaceConfig {
    pub vlan: u16,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortConfig {
    /// The port's MAC: unicast frames for other MACs are dropped; ICMP errors come from it.
    pub mac: [u8; 6],
    /// IP MTU (largest IP packet sent out of the port), 1280 or more.
    pub mtu: u16,
    /// Frames on a VLAN (or untagged, VLAN 0) not listed here are dropped.
    pub sub_interfaces: Vec<SubInterfaceConfig>,
    pub icmp_rate_limit: IcmpRateLimit,
}

/// Everything a worker's pipeline needs to know about the ports, built once by the engine.
/// Port `i` is the one frames name with `PacketBuf::port == i`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipelineConfig {
    pub ports: Vec<PortConfig>,
    /// Mixed into the flow hash, so routers in a chain do not all split flows alike.
    pub hash_seed: u64,
}

impl PipelineConfig {
    /// Every sub-interface with its dense index (the counters' index): ports in order,
    /// each port's sub-interfaces in the order listed. Yields `(index, port, sub_interface)`.
    pub fn sub_interfaces(&self) -> impl Iterator<Item = (usize, u16, &SubInterfaceConfig)> + '_ {
        self.ports
            .iter()
            .enumerate()
            .flat_map(|(p, port)| port.sub_interfaces.iter().map(move |s| (p as u16, s)))
            .enumerate()
            .map(|(i, (p, s))| (i, p, s))
    }

    /// The dense index of sub-interface (port, vlan).
    pub fn sub_interface_index(&self, port: u16, vlan: u16) -> Option<usize> {
        self.sub_interfaces().find(|(_, p, s)| *p == port && s.vlan == vlan).map(|(i, _, _)| i)
    }

    /// Checks what `Pipeline::new` relies on; the message names the bad entry.
    pub fn check(&self) -> Result<(), String> {
        if self.ports.len() > u16::MAX as usize {
            return Err(format!("{} ports exceed the limit of {}", self.ports.len(), u16::MAX));
        }
        let total: usize = self.ports.iter().map(|p| p.sub_interfaces.len()).sum();
        if total >= NO_SUB as usize {
            return Err(format!("{total} sub-interfaces exceed the limit of {}", NO_SUB - 1));
        }
        for (i, port) in self.ports.iter().enumerate() {
            if (port.mtu as usize) < ipv6::MIN_MTU {
                return Err(format!("port {i}: mtu {} is below {}, the IPv6 minimum (RFC 8200 section 5)", port.mtu, ipv6::MIN_MTU));
            }
            if ethernet::is_multicast(&port.mac) {
                return Err(format!("port {i}: mac {:02x?} is a group address; a port needs a unicast MAC", port.mac));
            }
            let mut seen = [false; 4096];
            for s in &port.sub_interfaces {
                if s.vlan > ethernet::VLAN_MAX {
                    return Err(format!("port {i}: vlan {} out of range (0 for untagged, 1 to {})", s.vlan, ethernet::VLAN_MAX));
                }
                if std::mem::replace(&mut seen[s.vlan as usize], true) {
                    return Err(format!("port {i}: vlan {} listed twice", s.vlan));
                }
            }
        }
        Ok(())
    }
}

/// A token bucket over caller-supplied time, so tests are deterministic. Tokens are kept in
/// billionths so refill is exact integer arithmetic.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    nanotokens: u64,
    capacity: u64,
    per_second: u64,
    last_ns: u64,
}

const NANO: u64 = 1_000_000_000;

impl TokenBucket {
    /// Starts full.
    pub fn new(limit: IcmpRateLimit) -> TokenBucket {
        let capacity = limit.burst as u64 * NANO;
        TokenBucket { nanotokens: capacity, capacity, per_second: limit.per_second as u64, last_ns: 0 }
    }

    /// Takes a token if there is one. Time going backwards refills nothing.
    #[inline]
    pub fn take(&mut self, now_ns: u64) -> bool {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        self.nanotokens = self.nanotokens.saturating_add(elapsed.saturating_mul(self.per_second)).min(self.capacity);
        if self.nanotokens >= NANO {
            self.nanotokens -= NANO;
            true
        } else {
            false
        }
    }
}

struct PortState {
    mac: [u8; 6],
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
    /// The ingress tag's TCI (priority kept on egress, whole tag on ICMP errors).
    tci: u16,
    sub: u16,
    /// IP datagram length (frames are trimmed to it).
    ip_len: u16,
    dont_frag: bool,
    /// An ICMP error may be sent in reply (see `IcmpOutcome::Suppressed`).
    icmp_ok: bool,
    flow_hash: u32,
}

impl Meta {
    const EMPTY: Meta =
        Meta { family: Family::Done, slot: 0, l2_len: 0, tagged: false, tci: 0, sub: 0, ip_len: 0, dont_frag: false, icmp_ok: false, flow_hash: 0 };
}

/// The ICMP error to send in reply, mapped to a type and code per family.
#[derive(Clone, Copy, Debug)]
enum IcmpError {
    TimeExceeded,
    NoRoute,
    Unreachable,
    TooBig(u16),
}

impl IcmpError {
    fn v4(self) -> (u8, u8, u16) {
        match self {
            IcmpError::TimeExceeded => (icmpv4::msg_type::TIME_EXCEEDED, icmpv4::time_exceeded::TTL, 0),
            IcmpError::NoRoute => (icmpv4::msg_type::DEST_UNREACHABLE, icmpv4::unreachable::NET, 0),
            IcmpError::Unreachable => (icmpv4::msg_type::DEST_UNREACHABLE, icmpv4::unreachable::HOST, 0),
            IcmpError::TooBig(mtu) => (icmpv4::msg_type::DEST_UNREACHABLE, icmpv4::unreachable::FRAG_NEEDED, mtu),
        }
    }

    fn v6(self) -> (u8, u8, u32) {
        match self {
            IcmpError::TimeExceeded => (icmpv6::msg_type::TIME_EXCEEDED, icmpv6::time_exceeded::HOP_LIMIT, 0),
            IcmpError::NoRoute => (icmpv6::msg_type::DEST_UNREACHABLE, icmpv6::unreachable::NO_ROUTE, 0),
            IcmpError::Unreachable => (icmpv6::msg_type::DEST_UNREACHABLE, icmpv6::unreachable::REJECT_ROUTE, 0),
            IcmpError::TooBig(mtu) => (icmpv6::msg_type::PACKET_TOO_BIG, 0, mtu as u32),
        }
    }
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
}

impl Pipeline {
    pub fn new(config: &PipelineConfig) -> Result<Pipeline, String> {
        config.check()?;
        let mut ports = Vec::with_capacity(config.ports.len());
        let mut subs = Vec::new();
        for port in &config.ports {
            let mut sub_of_vlan = vec![NO_SUB; 4096].into_boxed_slice();
            for s in &port.sub_interfaces {
                sub_of_vlan[s.vlan as usize] = subs.len() as u16;
                subs.push(SubInterface { ipv4: s.ipv4, ipv6: s.ipv6 });
            }
            ports.push(PortState { mac: port.mac, mtu: port.mtu, sub_of_vlan, icmp_bucket: TokenBucket::new(port.icmp_rate_limit) });
        }
        let counters = Arc::new(WorkerCounters::new(subs.len()));
        Ok(Pipeline { ports: ports.into(), subs: subs.into(), counters, hash_seed: config.hash_seed, ident: 0 })
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
        let mut v4_keys = [0u32; MAX_BATCH];
        let mut v6_keys = [0u128; MAX_BATCH];
        let (mut n4, mut n6) = (0usize, 0usize);

        // Ask for every frame's headers before reading the first: in copy mode the kernel
        // wrote them a whole rx ring ago, out of this core's caches by now under load, and
        // the first read of each was half of this function's time (perf annotate at
        // overload). Issued together the misses overlap instead of queueing one by one.
        for frame in frames.iter() {
            prefetch(frame.chunk, frame.start);
        }

        // Parse and validate all; gather destinations.
        for ((frame, verdict), m) in frames.iter().zip(verdicts.iter_mut()).zip(meta.iter_mut()) {
            match self.parse(frame, m) {
                Ok(Destination::V4(d)) => {
                    if let Some(k) = v4_keys.get_mut(n4) {
                        *k = d;
                        m.slot = n4 as u8;
                        n4 += 1;
                    }
                }
                Ok(Destination::V6(d)) => {
                    if let Some(k) = v6_keys.get_mut(n6) {
                        *k = d;
                        m.slot = n6 as u8;
                        n6 += 1;
                    }
                }
                Err(reason) => {
                    m.family = Family::Done;
                    *verdict = self.drop(reason);
                }
            }
        }

        // Look up all, one call per family.
        let mut v4_entries = [0u32; MAX_BATCH];
        let mut v6_entries = [0u32; MAX_BATCH];
        if n4 > 0 {
            fib.lookup_v4_batch(&v4_keys[..n4], &mut v4_entries[..n4]);
        }
        if n6 > 0 {
            fib.lookup_v6_batch(&v6_keys[..n6], &mut v6_entries[..n6]);
        }

        // Resolve, check, rewrite.
        for ((frame, verdict), m) in frames.iter_mut().zip(verdicts.iter_mut()).zip(meta.iter()) {
            let entry = match m.family {
                Family::Done => continue,
                Family::V4 => v4_entries.get(m.slot as usize),
                Family::V6 => v6_entries.get(m.slot as usize),
            };
            *verdict = match entry {
                Some(&e) => self.forward(fib, frame, m, e, now_ns),
                None => self.drop(DropReason::Truncated),
            };
        }
    }

    #[inline]
    fn drop(&self, reason: DropReason) -> Verdict {
        self.counters.count_drop(reason);
        Verdict::Drop(reason)
    }

    /// Validates the link and IP headers; fills `m` and returns the destination to look up.
    fn parse(&self, frame: &PacketBuf<'_>, m: &mut Meta) -> Result<Destination, DropReason> {
        let port = self.ports.get(frame.port as usize).ok_or(DropReason::UnknownVlan)?;
        let end = frame.start.checked_add(frame.len).ok_or(DropReason::Truncated)?;
        let data = frame.chunk.get(frame.start..end).ok_or(DropReason::Truncated)?;
        let eth = ethernet::Frame::new_checked(data).map_err(|_| DropReason::Truncated)?;

        let mut ether_type = eth.ethertype();
        let mut l2_len = ethernet::HEADER_LEN;
        if ethertype::is_vlan(ether_type) {
            if ether_type != ethertype::VLAN {
                return Err(DropReason::MultipleVlanTags);
            }
            let tag = ethernet::VlanTag::new_checked(eth.payload()).map_err(|_| DropReason::Truncated)?;
            m.tagged = true;
            m.tci = tag.tci();
            ether_type = tag.ethertype();
            l2_len += ethernet::VLAN_TAG_LEN;
            if ethertype::is_vlan(ether_type) {
                return Err(DropReason::MultipleVlanTags);
            }
        }
        // A priority tag (VLAN 0) belongs to the untagged sub-interface (802.1Q 6.9.1).
        let sub = port.sub(m.tci & 0x0fff).ok_or(DropReason::UnknownVlan)?;
        m.sub = sub;
        m.l2_len = l2_len as u8;
        self.counters.count_rx(sub as usize, data.len());

        if ether_type != ethertype::IPV4 && ether_type != ethertype::IPV6 {
            return Err(DropReason::NotIp);
        }
        let dst_mac = eth.dst_addr();
        let link_multicast = ethernet::is_multicast(&dst_mac);
        if !link_multicast && dst_mac != port.mac {
            return Err(DropReason::OtherHost);
        }
        let ip = data.get(l2_len..).ok_or(DropReason::Truncated)?;
        if ether_type == ethertype::IPV4 {
            self.parse_v4(ip, link_multicast, m).map(Destination::V4)
        } else {
            self.parse_v6(ip, link_multicast, m).map(Destination::V6)
        }
    }

    /// RFC 1812 section 5.2.2 and 5.3.7.
    fn parse_v4(&self, ip: &[u8], link_multicast: bool, m: &mut Meta) -> Result<u32, DropReason> {
        if ip.len() < ipv4::HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        let p = ipv4::Packet::new_unchecked(ip);
        if p.version() != 4 {
            return Err(DropReason::Ipv4BadVersion);
        }
        let header_len = p.header_len() as usize;
        if header_len < ipv4::HEADER_LEN {
            return Err(DropReason::Ipv4BadHeaderLen);
        }
        if ip.len() < header_len {
            return Err(DropReason::Truncated);
        }
        if !p.verify_checksum() {
            return Err(DropReason::Ipv4BadChecksum);
        }
        let total = p.total_len() as usize;
        if total < header_len || total > ip.len() {
            return Err(DropReason::Ipv4BadTotalLen);
        }
        let p = ipv4::Packet::new_unchecked(ip.get(..total).ok_or(DropReason::Ipv4BadTotalLen)?);
        debug_assert!(p.check_len().is_ok());

        let (src, dst) = (u32::from(p.src_addr()), u32::from(p.dst_addr()));
        if v4_martian_source(src) {
            return Err(DropReason::MartianSource);
        }
        if dst == u32::MAX {
            return Err(DropReason::BroadcastDestination);
        }
        if v4_multicast(dst) {
            return Err(DropReason::MulticastDestination);
        }
        if v4_martian_destination(dst) {
            return Err(DropReason::MartianDestination);
        }
        if v4_link_local(src) || v4_link_local(dst) {
            return Err(DropReason::LinkLocal);
        }
        if link_multicast {
            return Err(DropReason::LinkBroadcast);
        }

        let protocol = p.protocol();
        let initial = p.frag_offset() == 0;
        let fragment = !initial || p.more_frags();
        let payload = p.payload();
        // RFC 1812 section 4.3.2.7: no error about an ICMP error or a non-initial fragment.
        m.icmp_ok = initial
            && (protocol != ip_protocol::ICMP || payload.first().is_some_and(|&t| !icmpv4::is_error(t)));
        // Fragments carry no ports after the first: hash every fragment without them so a
        // datagram's fragments stay on one path.
        let l4 = if !fragment && ports::has_ports(protocol) { l4_ports(payload) } else { 0 };
        m.flow_hash = flow_hash(self.hash_seed, &[(src as u64) << 32 | dst as u64, (protocol as u64) << 32 | l4 as u64]);
        m.dont_frag = p.dont_frag();
        m.ip_len = total as u16;
        m.family = Family::V4;
        Ok(dst)
    }

    /// RFC 8200 section 3, RFC 4291 section 2.
    fn parse_v6(&self, ip: &[u8], link_multicast: bool, m: &mut Meta) -> Result<u128, DropReason> {
        if ip.len() < ipv6::HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        let p = ipv6::Packet::new_unchecked(ip);
        if p.version() != 6 {
            return Err(DropReason::Ipv6BadVersion);
        }
        let total = p.total_len();
        let p = ipv6::Packet::new_unchecked(ip.get(..total).ok_or(DropReason::Ipv6BadPayloadLen)?);
        debug_assert!(p.check_len().is_ok());
        if total > u16::MAX as usize {
            // 40 + 65535 octets cannot be an Ethernet frame; the check above caught it.
            return Err(DropReason::Ipv6BadPayloadLen);
        }

        let (src, dst) = (u128::from(p.src_addr()), u128::from(p.dst_addr()));
        if v6_multicast(src) || src == 0 || src == 1 {
            return Err(DropReason::MartianSource);
        }
        if v6_multicast(dst) {
            return Err(DropReason::MulticastDestination);
        }
        if dst == 0 || dst == 1 {
            return Err(DropReason::MartianDestination);
        }
        if v6_link_local(src) || v6_link_local(dst) {
            return Err(DropReason::LinkLocal);
        }
        if link_multicast {
            return Err(DropReason::LinkBroadcast);
        }

        let payload = p.payload();
        let upper = ipv6::upper_layer(p.next_header(), payload);
        // RFC 4443 section 2.4 (e): no error about an error; nor about a non-initial
        // fragment or a header chain we could not walk (it might hide an error).
        m.icmp_ok = match upper {
            None => false,
            Some(u) if u.fragment.is_some_and(|(off, _)| off != 0) => false,
            Some(u) if u.protocol == ip_protocol::ICMPV6 => payload.get(u.offset).is_some_and(|&t| !icmpv6::is_error(t)),
            Some(_) => true,
        };
        let (protocol, l4) = match upper {
            Some(u) if u.fragment.is_none() && ports::has_ports(u.protocol) => (u.protocol, payload.get(u.offset..).map_or(0, l4_ports)),
            Some(u) => (u.protocol, 0),
            None => (p.next_header(), 0),
        };
        let rest = (p.flow_label() as u64) << 40 | (protocol as u64) << 32 | l4 as u64;
        m.flow_hash = flow_hash(self.hash_seed, &[(src >> 64) as u64, src as u64, (dst >> 64) as u64, dst as u64, rest]);
        m.ip_len = total as u16;
        m.family = Family::V6;
        Ok(dst)
    }

    /// Acts on the looked-up route: answers, drops or rewrites and forwards.
    fn forward(&mut self, fib: &FibReader, frame: &mut PacketBuf<'_>, m: &Meta, entry: u32, now_ns: u64) -> Verdict {
        let group = match RouteTarget::from_entry(entry) {
            None => return self.reject(frame, m, IcmpError::NoRoute, DropReason::NoRoute, now_ns),
            Some(RouteTarget::Unreachable) => return self.reject(frame, m, IcmpError::Unreachable, DropReason::Unreachable, now_ns),
            Some(RouteTarget::Blackhole) => return self.drop(DropReason::Blackhole),
            Some(RouteTarget::Local) => return self.drop(DropReason::Local),
            Some(RouteTarget::Group(g)) => g,
        };
        let ip_off = frame.start + m.l2_len as usize;
        let ip_end = ip_off + m.ip_len as usize;
        // TTL after the lookup, as Linux does: packets for Local and Blackhole routes are
        // not answered with Time Exceeded.
        let ttl_at = if m.family == Family::V4 { 8 } else { 7 };
        match frame.chunk.get(ip_off + ttl_at) {
            Some(&ttl) if ttl > 1 => {}
            Some(_) => return self.reject(frame, m, IcmpError::TimeExceeded, DropReason::TtlExpired, now_ns),
            None => return self.drop(DropReason::Truncated),
        }
        let adjacency = match fib.next_hop(group, m.flow_hash) {
            Some((_, a)) => *a,
            None => return self.drop(DropReason::NoAdjacency),
        };
        let Some(out) = self.ports.get(adjacency.port as usize) else {
            return self.drop(DropReason::UnknownEgress);
        };
        let Some(out_sub) = out.sub(adjacency.vlan) else {
            return self.drop(DropReason::UnknownEgress);
        };
        if m.ip_len > out.mtu {
            let mtu = out.mtu;
            return match m.family {
                Family::V4 if !m.dont_frag => self.drop(DropReason::FragmentationNeeded),
                _ => self.reject(frame, m, IcmpError::TooBig(mtu), DropReason::MtuExceeded, now_ns),
            };
        }

        let Some(ip) = frame.chunk.get_mut(ip_off..ip_end) else {
            return self.drop(DropReason::Truncated);
        };
        if m.family == Family::V4 {
            ipv4::Packet::new_unchecked(ip).decrement_ttl();
        } else {
            let mut p = ipv6::Packet::new_unchecked(ip);
            let hop_limit = p.hop_limit();
            p.set_hop_limit(hop_limit - 1);
        }
        let ether_type = if m.family == Family::V4 { ethertype::IPV4 } else { ethertype::IPV6 };
        // Keep the ingress priority on a rewritten tag; an untagged frame gets priority 0.
        let tci = (adjacency.vlan != 0).then_some((m.tci & 0xe000) | adjacency.vlan);
        match write_link(frame.chunk, ip_off, m.ip_len as usize, tci, adjacency.dst_mac, adjacency.src_mac, ether_type) {
            Some((start, len)) => {
                self.counters.count_tx(out_sub as usize, len);
                Verdict::Forward { port: adjacency.port, start, len }
            }
            None => self.drop(DropReason::NoHeadroom),
        }
    }

    /// Counts `reason` and answers with an ICMP error when allowed, possible and within
    /// the rate limit; otherwise drops.
    fn reject(&mut self, frame: &mut PacketBuf<'_>, m: &Meta, error: IcmpError, reason: DropReason, now_ns: u64) -> Verdict {
        self.counters.count_drop(reason);
        let outcome = self.build_icmp(frame, m, error, now_ns);
        match outcome {
            Ok((start, len)) => {
                self.counters.count_icmp(IcmpOutcome::Sent);
                self.counters.count_tx(m.sub as usize, len);
                Verdict::Forward { port: frame.port, start, len }
            }
            Err(o) => {
                self.counters.count_icmp(o);
                Verdict::Drop(reason)
            }
        }
    }

    /// Builds the error in the frame's chunk: Ethernet (+ the ingress tag) back to the
    /// sender's MAC, a new IP header, the ICMP header, and as much of the original
    /// datagram as fits in 576 (IPv4) / 1280 (IPv6) octets, which stays where it is.
    fn build_icmp(&mut self, frame: &mut PacketBuf<'_>, m: &Meta, error: IcmpError, now_ns: u64) -> Result<(usize, usize), IcmpOutcome> {
        if !m.icmp_ok {
            return Err(IcmpOutcome::Suppressed);
        }
        let sub = self.subs.get(m.sub as usize).ok_or(IcmpOutcome::NoSource)?;
        let v4 = m.family == Family::V4;
        let (src_v4, src_v6) = (sub.ipv4, sub.ipv6);
        if (v4 && src_v4.is_none()) || (!v4 && src_v6.is_none()) {
            return Err(IcmpOutcome::NoSource);
        }
        let port = self.ports.get_mut(frame.port as usize).ok_or(IcmpOutcome::NoSource)?;
        let (l2_len, ip_off) = (m.l2_len as usize, frame.start + m.l2_len as usize);
        let (headers, limit) = if v4 { (ipv4::HEADER_LEN + icmpv4::HEADER_LEN, ipv4::MIN_MTU) } else { (ipv6::HEADER_LEN + icmpv6::HEADER_LEN, ipv6::MIN_MTU) };
        let quote = (m.ip_len as usize).min(limit - headers);
        let sender_mac = ethernet::Frame::new_unchecked(frame.chunk.get(frame.start..ip_off).ok_or(IcmpOutcome::NoRoom)?).src_addr();
        let (orig_src4, orig_src6) = {
            let ip = frame.chunk.get(ip_off..ip_off + m.ip_len as usize).ok_or(IcmpOutcome::NoRoom)?;
            if v4 {
                (Some(ipv4::Packet::new_unchecked(ip).src_addr()), None)
            } else {
                (None, Some(ipv6::Packet::new_unchecked(ip).src_addr()))
            }
        };

        // Room: the new headers go into the headroom, the quote stays in place; without
        // enough headroom the quote moves toward the end of the chunk.
        let need_tail = ip_off + headers + quote;
        let shift_right = frame.start < headers;
        if shift_right && frame.chunk.len() < need_tail {
            return Err(IcmpOutcome::NoRoom);
        }
        if !port.icmp_bucket.take(now_ns) {
            return Err(IcmpOutcome::RateLimited);
        }
        let start = if shift_right {
            frame.chunk.copy_within(ip_off..ip_off + quote, ip_off + headers);
            frame.start
        } else {
            frame.start - headers
        };
        let ip_len = headers + quote;
        let len = l2_len + ip_len;
        let out = frame.chunk.get_mut(start..start + len).ok_or(IcmpOutcome::NoRoom)?;

        let (l2, ip) = out.split_at_mut(l2_len);
        let mut eth = ethernet::Frame::new_unchecked(&mut *l2);
        eth.set_dst_addr(sender_mac);
        eth.set_src_addr(port.mac);
        let ether_type = if v4 { ethertype::IPV4 } else { ethertype::IPV6 };
        if m.tagged {
            eth.set_ethertype(ethertype::VLAN);
            let mut tag = ethernet::VlanTag::new_unchecked(&mut l2[ethernet::HEADER_LEN..]);
            tag.set_tci(m.tci);
            tag.set_ethertype(ether_type);
        } else {
            eth.set_ethertype(ether_type);
        }

        match (src_v4, orig_src4, src_v6, orig_src6) {
            (Some(src), Some(dst), _, _) => {
                let (ty, code, mtu) = error.v4();
                let mut p = ipv4::Packet::new_unchecked(&mut *ip);
                p.set_version(4);
                p.set_header_len(ipv4::HEADER_LEN as u8);
                p.set_dscp_ecn(ICMP_TOS);
                p.set_total_len(ip_len as u16);
                p.set_ident(self.ident);
                p.set_flags_and_offset(false, false, 0);
                p.set_ttl(ICMP_TTL);
                p.set_protocol(ip_protocol::ICMP);
                p.set_src_addr(src);
                p.set_dst_addr(dst);
                p.fill_checksum();
                self.ident = self.ident.wrapping_add(1);
                let mut icmp = icmpv4::Packet::new_unchecked(&mut ip[ipv4::HEADER_LEN..]);
                icmp.set_msg_type(ty);
                icmp.set_msg_code(code);
                icmp.set_rest_of_header(0);
                icmp.set_next_hop_mtu(mtu);
                icmp.fill_checksum();
            }
            (_, _, Some(src), Some(dst)) => {
                let (ty, code, mtu) = error.v6();
                let mut p = ipv6::Packet::new_unchecked(&mut *ip);
                p.set_version_class_flow(6, 0, 0);
                p.set_payload_len((ip_len - ipv6::HEADER_LEN) as u16);
                p.set_next_header(ip_protocol::ICMPV6);
                p.set_hop_limit(ICMP_TTL);
                p.set_src_addr(src);
                p.set_dst_addr(dst);
                let mut icmp = icmpv6::Packet::new_unchecked(&mut ip[ipv6::HEADER_LEN..]);
                icmp.set_msg_type(ty);
                icmp.set_msg_code(code);
                icmp.set_mtu(mtu);
                icmp.fill_checksum(src, dst);
            }
            _ => return Err(IcmpOutcome::NoSource),
        }
        Ok((start, len))
    }
}

enum Destination {
    V4(u32),
    V6(u128),
}

/// Writes the egress Ethernet header (with a tag when `tci` is given) just before the IP
/// datagram at `ip_off`, moving the datagram toward the chunk's end only when the headroom
/// is too small; pads to the Ethernet minimum. Returns the frame's start and length.
#[inline]
fn write_link(chunk: &mut [u8], ip_off: usize, ip_len: usize, tci: Option<u16>, dst: [u8; 6], src: [u8; 6], ether_type: u16) -> Option<(usize, usize)> {
    let l2_len = ethernet::HEADER_LEN + if tci.is_some() { ethernet::VLAN_TAG_LEN } else { 0 };
    let ip_off = if ip_off >= l2_len {
        ip_off
    } else {
        let shift = l2_len - ip_off;
        if chunk.len() < ip_off + shift + ip_len {
            return None;
        }
        chunk.copy_within(ip_off..ip_off + ip_len, ip_off + shift);
        ip_off + shift
    };
    let start = ip_off - l2_len;
    let l2 = chunk.get_mut(start..ip_off)?;
    let mut eth = ethernet::Frame::new_unchecked(&mut *l2);
    eth.set_dst_addr(dst);
    eth.set_src_addr(src);
    match tci {
        Some(tci) => {
            eth.set_ethertype(ethertype::VLAN);
            let mut tag = ethernet::VlanTag::new_unchecked(&mut l2[ethernet::HEADER_LEN..]);
            tag.set_tci(tci);
            tag.set_ethertype(ether_type);
        }
        None => eth.set_ethertype(ether_type),
    }
    let mut len = l2_len + ip_len;
    if len < ethernet::MIN_FRAME_LEN {
        if let Some(pad) = chunk.get_mut(start + len..start + ethernet::MIN_FRAME_LEN) {
            pad.fill(0);
            len = ethernet::MIN_FRAME_LEN;
        }
    }
    Some((start, len))
}

/// Source and destination port as one word; 0 when the header is cut short.
#[inline]
fn l4_ports(l4: &[u8]) -> u32 {
    ports::Ports::new_checked(l4).map_or(0, |p| (p.src_port() as u32) << 16 | p.dst_port() as u32)
}

/// The flow hash: words folded by multiply-xor, then MurmurHash3's 64-bit finaliser so
/// the high bits (which pick the group member) depend on every input bit.
#[inline]
fn flow_hash(seed: u64, words: &[u64]) -> u32 {
    let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
    for &w in words {
        h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(31);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h >> 32) as u32
}

/// 0/8 "this network", 127/8 loopback, 224/4 multicast, 240/4 reserved (which holds
/// 255.255.255.255): never a source (RFC 1812 section 5.3.7, RFC 6890).
#[inline]
fn v4_martian_source(a: u32) -> bool {
    matches!(a >> 24, 0 | 127) || a >> 28 >= 0xe
}

/// 0/8, 127/8, 240/4: never a destination to forward to (RFC 1812 section 5.3.7).
#[inline]
fn v4_martian_destination(a: u32) -> bool {
    matches!(a >> 24, 0 | 127) || a >> 28 == 0xf
}

#[inline]
fn v4_multicast(a: u32) -> bool {
    a >> 28 == 0xe
}

/// 169.254.0.0/16 (RFC 3927 section 7: routers must not forward it).
#[inline]
fn v4_link_local(a: u32) -> bool {
    a >> 16 == 0xa9fe
}

/// ff00::/8 (RFC 4291 section 2.7).
#[inline]
fn v6_multicast(a: u128) -> bool {
    a >> 120 == 0xff
}

/// fe80::/10 (RFC 4291 section 2.5.6).
#[inline]
fn v6_link_local(a: u128) -> bool {
    a >> 118 == 0xfe80 >> 6
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::CounterSnapshot;
    use crate::fib::{Adjacency, Fib, FibConfig, FibOp, NextHop, Prefix};
    use crate::wire::checksum;
    use proptest::prelude::*;

    const MAC0: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
    const MAC1: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
    const MAC2: [u8; 6] = [0x02, 0, 0, 0, 0, 0x12];
    /// The station that sends us traffic.
    const PEER: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];
    const SRC4: [u8; 4] = [198, 18, 0, 100];
    const HEADROOM: usize = 256;
    const CHUNK: usize = 2048;

    fn nh_mac(n: u8) -> [u8; 6] {
        [0x02, 0, 0, 0, 1, n]
    }

    fn v6(net: u16, host: u16) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, net, 0, 0, 0, 0, host)
    }

    fn src6() -> Ipv6Addr {
        v6(0, 100)
    }

    fn sub(vlan: u16, v4: Option<[u8; 4]>, v6a: Option<Ipv6Addr>) -> SubInterfaceConfig {
        SubInterfaceConfig { vlan, ipv4: v4.map(Ipv4Addr::from), ipv6: v6a }
    }

    fn config(limit: IcmpRateLimit) -> PipelineConfig {
        PipelineConfig {
            ports: vec![
                PortConfig {
                    mac: MAC0,
                    mtu: 1500,
                    sub_interfaces: vec![
                        sub(0, Some([198, 18, 0, 1]), Some(v6(0, 1))),
                        sub(100, Some([198, 18, 100, 1]), Some(v6(0x100, 1))),
                        sub(200, None, None),
                    ],
                    icmp_rate_limit: limit,
                },
                PortConfig {
                    mac: MAC1,
                    mtu: 1500,
                    sub_interfaces: vec![sub(0, Some([198, 18, 1, 1]), Some(v6(0xf001, 1))), sub(300, None, None)],
                    icmp_rate_limit: limit,
                },
                PortConfig { mac: MAC2, mtu: 1280, sub_interfaces: vec![sub(0, None, None)], icmp_rate_limit: limit },
            ],
            hash_seed: 0x5eed,
        }
    }

    fn fib() -> Fib {
        let mut fib = Fib::new(FibConfig { v4_routes: 64, v6_routes: 64, v4_nodes: 8, v6_nodes: 64, groups: 64, adjacencies: 64 }).unwrap();
        let adj = |id, port, vlan, src_mac, n| FibOp::SetAdjacency { id, adjacency: Adjacency { port, vlan, src_mac, dst_mac: nh_mac(n) } };
        let group = |id, members: &[u32]| FibOp::SetGroup { id, members: members.iter().map(|&a| NextHop { adjacency: a, weight: 1 }).collect() };
        let mut ops = vec![
            adj(1, 1, 0, MAC1, 1),
            adj(2, 1, 300, MAC1, 2),
            adj(3, 0, 100, MAC0, 3),
            adj(4, 2, 0, MAC2, 4),
            adj(5, 1, 0, MAC1, 5),
            adj(6, 1, 0, MAC1, 6),
            adj(7, 1, 0, MAC1, 7),
            adj(8, 9, 0, MAC1, 8),
            adj(9, 1, 999, MAC1, 9),
            group(1, &[1]),
            group(2, &[2]),
            group(3, &[3]),
            group(4, &[4]),
            group(8, &[8]),
            group(9, &[9]),
            group(10, &[5, 6]),
            group(11, &[5, 6, 7]),
        ];
        for g in [1u8, 2, 3, 4, 8, 9, 10, 11] {
            ops.push(FibOp::AddRoute { prefix: Prefix::v4(u32::from_be_bytes([198, 19, g, 0]), 24), target: RouteTarget::Group(g as u32) });
            ops.push(FibOp::AddRoute { prefix: Prefix::v6(u128::from(v6(g as u16, 0)), 48), target: RouteTarget::Group(g as u32) });
        }
        for (n, target) in [(66u8, RouteTarget::Blackhole), (77, RouteTarget::Unreachable), (88, RouteTarget::Local)] {
            ops.push(FibOp::AddRoute { prefix: Prefix::v4(u32::from_be_bytes([198, 19, n, 0]), 24), target });
            ops.push(FibOp::AddRoute { prefix: Prefix::v6(u128::from(v6(n as u16, 0)), 48), target });
        }
        fib.apply(&ops).unwrap();
        fib
    }

    struct Rig {
        _fib: Fib,
        reader: FibReader,
        pipeline: Pipeline,
    }

    struct Out {
        chunk: Vec<u8>,
        verdict: Verdict,
    }

    impl Out {
        fn frame(&self) -> &[u8] {
            match self.verdict {
                Verdict::Forward { start, len, .. } => &self.chunk[start..start + len],
                Verdict::Drop(r) => panic!("dropped: {r}"),
            }
        }
    }

    fn rig_with(limit: IcmpRateLimit) -> Rig {
        let fib = fib();
        Rig { reader: fib.reader(), _fib: fib, pipeline: Pipeline::new(&config(limit)).unwrap() }
    }

    fn rig() -> Rig {
        rig_with(IcmpRateLimit { per_second: 1_000_000, burst: 1_000_000 })
    }

    impl Rig {
        fn run_in(&mut self, frames: &[(u16, Vec<u8>)], headroom: usize, chunk_size: usize, now: u64) -> Vec<Out> {
            let mut chunks: Vec<Vec<u8>> = frames
                .iter()
                .map(|(_, f)| {
                    let mut c = vec![0xee; chunk_size.max(headroom + f.len())];
                    c[headroom..headroom + f.len()].copy_from_slice(f);
                    c
                })
                .collect();
            let mut bufs: Vec<PacketBuf> = chunks
                .iter_mut()
                .zip(frames)
                .map(|(c, (port, f))| PacketBuf { chunk: c, start: headroom, len: f.len(), port: *port })
                .collect();
            let mut verdicts = vec![Verdict::Drop(DropReason::Truncated); frames.len()];
            self.pipeline.process(&self.reader, &mut bufs, &mut verdicts, now);
            self.reader.quiescent();
            drop(bufs);
            chunks.into_iter().zip(verdicts).map(|(chunk, verdict)| Out { chunk, verdict }).collect()
        }

        fn run(&mut self, frames: &[(u16, Vec<u8>)]) -> Vec<Out> {
            self.run_in(frames, HEADROOM, CHUNK, 0)
        }

        fn run1(&mut self, port: u16, frame: Vec<u8>) -> Out {
            self.run(&[(port, frame)]).pop().unwrap()
        }

        fn snap(&self) -> CounterSnapshot {
            self.pipeline.counters().snapshot()
        }
    }

    fn udp(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
        let mut u = vec![0u8; 8 + payload];
        u[0..2].copy_from_slice(&sport.to_be_bytes());
        u[2..4].copy_from_slice(&dport.to_be_bytes());
        u[4..6].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
        for (i, b) in u[8..].iter_mut().enumerate() {
            *b = i as u8;
        }
        u
    }

    fn ipv4(src: [u8; 4], dst: [u8; 4], ttl: u8, protocol: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 20 + payload.len()];
        {
            let mut p = ipv4::Packet::new_unchecked(&mut b[..]);
            p.set_version(4);
            p.set_header_len(20);
            p.set_total_len((20 + payload.len()) as u16);
            p.set_ident(0x4242);
            p.set_flags_and_offset(true, false, 0);
            p.set_ttl(ttl);
            p.set_protocol(protocol);
            p.set_src_addr(src.into());
            p.set_dst_addr(dst.into());
            p.payload_mut().copy_from_slice(payload);
            p.fill_checksum();
        }
        b
    }

    fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, next_header: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 40 + payload.len()];
        let mut p = ipv6::Packet::new_unchecked(&mut b[..]);
        p.set_version_class_flow(6, 0, 0x1234);
        p.set_payload_len(payload.len() as u16);
        p.set_next_header(next_header);
        p.set_hop_limit(hop_limit);
        p.set_src_addr(src);
        p.set_dst_addr(dst);
        p.payload_mut().copy_from_slice(payload);
        b
    }

    fn eth(dst: [u8; 6], vlan: Option<u16>, ether_type: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&PEER);
        if let Some(tci) = vlan {
            f.extend_from_slice(&ethertype::VLAN.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&ether_type.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn v4_frame(dst: [u8; 4], ttl: u8) -> Vec<u8> {
        eth(MAC0, None, ethertype::IPV4, &ipv4(SRC4, dst, ttl, ip_protocol::UDP, &udp(1000, 2000, 26)))
    }

    fn v6_frame(dst: Ipv6Addr, hop_limit: u8) -> Vec<u8> {
        eth(MAC0, None, ethertype::IPV6, &ipv6(src6(), dst, hop_limit, ip_protocol::UDP, &udp(1000, 2000, 26)))
    }

    /// Rewrites an IPv4 frame's header with `edit` and recomputes its checksum.
    fn edit_v4(mut frame: Vec<u8>, edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
        edit(&mut frame[14..]);
        ipv4::Packet::new_unchecked(&mut frame[14..34]).fill_checksum();
        frame
    }

    fn icmp_counts(s: &CounterSnapshot) -> Vec<u64> {
        s.icmp.to_vec()
    }

    /// Asserts the drop verdict, that exactly `reason`'s counter moved by one, and that no
    /// ICMP counter moved.
    fn assert_silent_drop(rig: &mut Rig, port: u16, frame: Vec<u8>, reason: DropReason, what: &str) {
        let before = rig.snap();
        let out = rig.run1(port, frame);
        assert_eq!(out.verdict, Verdict::Drop(reason), "{what}");
        let after = rig.snap();
        for r in DropReason::ALL {
            let expect = before.drop_count(*r) + (*r == reason) as u64;
            assert_eq!(after.drop_count(*r), expect, "{what}: counter {r}");
        }
        assert_eq!(icmp_counts(&before), icmp_counts(&after), "{what}: no ICMP activity");
    }

    #[test]
    fn drop_reason_names_are_unique_snake_case() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.extend(IcmpOutcome::ALL.iter().map(|o| o.name()));
        for n in &names {
            assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()), "{n}");
        }
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        assert_eq!(DropReason::NotIp.name(), "not_ip");
    }

    #[test]
    fn link_layer_drops() {
        let mut rig = rig();
        let good = v4_frame([198, 19, 1, 5], 64);
        assert_silent_drop(&mut rig, 0, good[..10].to_vec(), DropReason::Truncated, "runt");
        assert_silent_drop(&mut rig, 0, good[..14 + 19].to_vec(), DropReason::Truncated, "IPv4 header cut");
        let tagged = eth(MAC0, Some(100), ethertype::IPV4, &[]);
        assert_silent_drop(&mut rig, 0, tagged[..16].to_vec(), DropReason::Truncated, "tag cut");
        assert_silent_drop(&mut rig, 0, eth(MAC0, None, ethertype::ARP, &[0; 46]), DropReason::NotIp, "ARP");
        assert_silent_drop(&mut rig, 0, eth(MAC0, Some(100), ethertype::ARP, &[0; 46]), DropReason::NotIp, "tagged ARP");
        let mut double = eth(MAC0, Some(100), ethertype::VLAN, &[0x00, 0x05]);
        double.extend_from_slice(&good[12..]);
        assert_silent_drop(&mut rig, 0, double, DropReason::MultipleVlanTags, "two 802.1Q tags");
        let mut qinq = good.clone();
        qinq.splice(12..12, [0x88, 0xa8, 0x00, 0x64]);
        assert_silent_drop(&mut rig, 0, qinq, DropReason::MultipleVlanTags, "802.1ad");
        assert_silent_drop(&mut rig, 0, eth(MAC0, Some(555), ethertype::IPV4, &good[14..]), DropReason::UnknownVlan, "unknown VLAN");
        assert_silent_drop(&mut rig, 2, eth(MAC2, Some(100), ethertype::IPV4, &good[14..]), DropReason::UnknownVlan, "VLAN of another port");
        assert_silent_drop(&mut rig, 7, good.clone(), DropReason::UnknownVlan, "unknown port");
        assert_silent_drop(&mut rig, 0, eth([2, 0, 0, 0, 0, 0x99], None, ethertype::IPV4, &good[14..]), DropReason::OtherHost, "other MAC");
        assert_silent_drop(&mut rig, 0, eth(ethernet::BROADCAST, None, ethertype::IPV4, &good[14..]), DropReason::LinkBroadcast, "L2 broadcast");
        assert_silent_drop(&mut rig, 0, eth([0x01, 0, 0x5e, 0, 0, 1], None, ethertype::IPV4, &good[14..]), DropReason::LinkBroadcast, "L2 multicast");
        let v6 = v6_frame(v6(1, 5), 64);
        assert_silent_drop(&mut rig, 0, eth([0x33, 0x33, 0, 0, 0, 1], None, ethertype::IPV6, &v6[14..]), DropReason::LinkBroadcast, "v6 in L2 multicast");
        // A priority-tagged frame (VID 0) is the untagged sub-interface's.
        let out = rig.run1(0, eth(MAC0, Some(0xa000), ethertype::IPV4, &good[14..]));
        assert!(matches!(out.verdict, Verdict::Forward { port: 1, .. }));
    }

    #[test]
    fn ipv4_header_drops() {
        let mut rig = rig();
        let good = v4_frame([198, 19, 1, 5], 64);
        assert_silent_drop(&mut rig, 0, edit_v4(good.clone(), |ip| ip[0] = 0x55), DropReason::Ipv4BadVersion, "version 5");
        assert_silent_drop(&mut rig, 0, edit_v4(good.clone(), |ip| ip[0] = 0x44), DropReason::Ipv4BadHeaderLen, "IHL 4");
        let mut bad = good.clone();
        bad[14 + 10] ^= 0x01;
        assert_silent_drop(&mut rig, 0, bad, DropReason::Ipv4BadChecksum, "checksum");
        assert_silent_drop(&mut rig, 0, edit_v4(good.clone(), |ip| ip[2..4].copy_from_slice(&19u16.to_be_bytes())), DropReason::Ipv4BadTotalLen, "total < IHL*4");
        let too_long = (good.len() - 14 + 1) as u16;
        assert_silent_drop(&mut rig, 0, edit_v4(good.clone(), |ip| ip[2..4].copy_from_slice(&too_long.to_be_bytes())), DropReason::Ipv4BadTotalLen, "total > frame");
        // IHL 15 in a frame too short for 60 octets of header.
        assert_silent_drop(&mut rig, 0, good[..14 + 40].iter().copied().enumerate().map(|(i, b)| if i == 14 { 0x4f } else { b }).collect(), DropReason::Truncated, "options cut");
    }

    #[test]
    fn ipv4_address_drops() {
        let mut rig = rig();
        let with = |src: [u8; 4], dst: [u8; 4]| eth(MAC0, None, ethertype::IPV4, &ipv4(src, dst, 64, ip_protocol::UDP, &udp(1, 2, 26)));
        for src in [[0, 1, 2, 3], [127, 0, 0, 1], [224, 0, 0, 5], [239, 1, 1, 1], [240, 0, 0, 1], [255, 255, 255, 255]] {
            assert_silent_drop(&mut rig, 0, with(src, [198, 19, 1, 5]), DropReason::MartianSource, &format!("source {src:?}"));
        }
        for dst in [[0, 0, 0, 1], [127, 0, 0, 1], [240, 0, 0, 1], [254, 1, 2, 3]] {
            assert_silent_drop(&mut rig, 0, with(SRC4, dst), DropReason::MartianDestination, &format!("destination {dst:?}"));
        }
        assert_silent_drop(&mut rig, 0, with(SRC4, [255, 255, 255, 255]), DropReason::BroadcastDestination, "limited broadcast");
        let mut bcast = with(SRC4, [255, 255, 255, 255]);
        bcast[..6].copy_from_slice(&ethernet::BROADCAST);
        assert_silent_drop(&mut rig, 0, bcast, DropReason::BroadcastDestination, "limited broadcast in L2 broadcast");
        for dst in [[224, 0, 0, 5], [239, 255, 255, 250]] {
            assert_silent_drop(&mut rig, 0, with(SRC4, dst), DropReason::MulticastDestination, "multicast");
        }
        // Multicast with TTL 1: still not an ICMP case.
        let mc = eth(MAC0, None, ethertype::IPV4, &ipv4(SRC4, [224, 0, 0, 5], 1, ip_protocol::UDP, &udp(1, 2, 26)));
        assert_silent_drop(&mut rig, 0, mc, DropReason::MulticastDestination, "multicast TTL 1");
        assert_silent_drop(&mut rig, 0, with([169, 254, 1, 1], [198, 19, 1, 5]), DropReason::LinkLocal, "link-local source");
        assert_silent_drop(&mut rig, 0, with(SRC4, [169, 254, 1, 1]), DropReason::LinkLocal, "link-local destination");
    }

    #[test]
    fn ipv6_drops() {
        let mut rig = rig();
        let with = |src: Ipv6Addr, dst: Ipv6Addr| eth(MAC0, None, ethertype::IPV6, &ipv6(src, dst, 64, ip_protocol::UDP, &udp(1, 2, 26)));
        let mut bad = v6_frame(v6(1, 5), 64);
        bad[14] = 0x40;
        assert_silent_drop(&mut rig, 0, bad, DropReason::Ipv6BadVersion, "version 4 in IPv6");
        let mut bad = v6_frame(v6(1, 5), 64);
        bad[18..20].copy_from_slice(&100u16.to_be_bytes());
        assert_silent_drop(&mut rig, 0, bad, DropReason::Ipv6BadPayloadLen, "payload length > frame");
        assert_silent_drop(&mut rig, 0, v6_frame(v6(1, 5), 64)[..14 + 39].to_vec(), DropReason::Truncated, "header cut");
        let ll: Ipv6Addr = "fe80::1".parse().unwrap();
        for src in [Ipv6Addr::UNSPECIFIED, Ipv6Addr::LOCALHOST, "ff02::1".parse().unwrap(), "ff0e::1".parse().unwrap()] {
            assert_silent_drop(&mut rig, 0, with(src, v6(1, 5)), DropReason::MartianSource, &format!("source {src}"));
        }
        for dst in [Ipv6Addr::UNSPECIFIED, Ipv6Addr::LOCALHOST] {
            assert_silent_drop(&mut rig, 0, with(src6(), dst), DropReason::MartianDestination, &format!("destination {dst}"));
        }
        for dst in ["ff02::1", "ff05::2", "ff0e::1"] {
            assert_silent_drop(&mut rig, 0, with(src6(), dst.parse().unwrap()), DropReason::MulticastDestination, dst);
        }
        assert_silent_drop(&mut rig, 0, with(ll, v6(1, 5)), DropReason::LinkLocal, "link-local source");
        assert_silent_drop(&mut rig, 0, with(src6(), "febf::1".parse().unwrap()), DropReason::LinkLocal, "link-local destination");
        // fec0::/10 is not link-local: it is routed (here: no route).
        let out = rig.run1(0, with(src6(), "fec0::1".parse().unwrap()));
        assert!(matches!(out.verdict, Verdict::Forward { port: 0, .. }), "answered as no route");
    }

    #[test]
    fn route_target_drops() {
        let mut rig = rig();
        assert_silent_drop(&mut rig, 0, v4_frame([198, 19, 66, 1], 64), DropReason::Blackhole, "v4 blackhole");
        assert_silent_drop(&mut rig, 0, v6_frame(v6(66, 1), 64), DropReason::Blackhole, "v6 blackhole");
        assert_silent_drop(&mut rig, 0, v4_frame([198, 19, 66, 1], 1), DropReason::Blackhole, "blackhole beats TTL");
        assert_silent_drop(&mut rig, 0, v4_frame([198, 19, 88, 1], 64), DropReason::Local, "v4 local");
        assert_silent_drop(&mut rig, 0, v6_frame(v6(88, 1), 1), DropReason::Local, "v6 local, hop limit 1");
        assert_silent_drop(&mut rig, 0, v4_frame([198, 19, 8, 1], 64), DropReason::UnknownEgress, "adjacency on unknown port");
        assert_silent_drop(&mut rig, 0, v6_frame(v6(9, 1), 64), DropReason::UnknownEgress, "adjacency on unknown VLAN");
        // Larger than port 2's 1280 without DF: not fragmented, dropped.
        let big = edit_v4(eth(MAC0, None, ethertype::IPV4, &ipv4(SRC4, [198, 19, 4, 1], 64, ip_protocol::UDP, &udp(1, 2, 1400))), |ip| ip[6] = 0);
        assert_silent_drop(&mut rig, 0, big, DropReason::FragmentationNeeded, "no DF");
    }

    /// What an ICMP error frame says, checked for well-formedness on the way.
    struct Icmp {
        vlan: Option<u16>,
        src: std::net::IpAddr,
        dst: std::net::IpAddr,
        ty: u8,
        code: u8,
        rest: u32,
        ip_len: usize,
        quote: Vec<u8>,
    }

    fn parse_icmp(frame: &[u8]) -> Icmp {
        let eth = ethernet::Frame::new_checked(frame).unwrap();
        assert_eq!(eth.dst_addr(), PEER, "back to the sender");
        assert_eq!(eth.src_addr(), MAC0, "from the ingress port");
        let (vlan, et, ip) = if eth.ethertype() == ethertype::VLAN {
            let t = ethernet::VlanTag::new_checked(eth.payload()).unwrap();
            (Some(t.tci()), t.ethertype(), &frame[18..])
        } else {
            (None, eth.ethertype(), &frame[14..])
        };
        if et == ethertype::IPV4 {
            let p = ipv4::Packet::new_checked(ip).unwrap();
            assert!(p.verify_checksum());
            assert_eq!(p.ttl(), 64);
            assert_eq!(p.protocol(), ip_protocol::ICMP);
            assert!(p.total_len() as usize <= 576);
            assert_eq!(p.total_len() as usize + frame.len() - ip.len(), frame.len());
            let icmp = icmpv4::Packet::new_checked(p.payload()).unwrap();
            assert!(icmp.verify_checksum());
            Icmp {
                vlan,
                src: p.src_addr().into(),
                dst: p.dst_addr().into(),
                ty: icmp.msg_type(),
                code: icmp.msg_code(),
                rest: icmp.rest_of_header(),
                ip_len: p.total_len() as usize,
                quote: icmp.data().to_vec(),
            }
        } else {
            assert_eq!(et, ethertype::IPV6);
            let p = ipv6::Packet::new_checked(ip).unwrap();
            assert_eq!(p.hop_limit(), 64);
            assert_eq!(p.next_header(), ip_protocol::ICMPV6);
            assert!(p.total_len() <= 1280);
            assert_eq!(p.total_len(), ip.len());
            let icmp = icmpv6::Packet::new_checked(p.payload()).unwrap();
            assert!(icmp.verify_checksum(p.src_addr(), p.dst_addr()));
            Icmp {
                vlan,
                src: p.src_addr().into(),
                dst: p.dst_addr().into(),
                ty: icmp.msg_type(),
                code: icmp.msg_code(),
                rest: icmp.mtu(),
                ip_len: p.total_len(),
                quote: icmp.data().to_vec(),
            }
        }
    }

    /// Sends `frame`, expects an ICMP error back out of `port` and `reason` counted once.
    fn expect_icmp(rig: &mut Rig, port: u16, frame: Vec<u8>, reason: DropReason) -> Icmp {
        let l2 = if frame[12..14] == ethertype::VLAN.to_be_bytes() { 18 } else { 14 };
        let original_ip = frame[l2..].to_vec();
        let before = rig.snap();
        let out = rig.run1(port, frame);
        assert!(matches!(out.verdict, Verdict::Forward { port: p, .. } if p == port), "{:?}", out.verdict);
        let after = rig.snap();
        assert_eq!(after.drop_count(reason), before.drop_count(reason) + 1);
        assert_eq!(after.total_drops(), before.total_drops() + 1);
        assert_eq!(after.icmp_count(IcmpOutcome::Sent), before.icmp_count(IcmpOutcome::Sent) + 1);
        let icmp = parse_icmp(out.frame());
        assert_eq!(icmp.quote[..], original_ip[..icmp.quote.len()], "the quote is the original datagram, as received");
        icmp
    }

    #[test]
    fn icmpv4_errors() {
        let mut rig = rig();
        for ttl in [0, 1] {
            let e = expect_icmp(&mut rig, 0, v4_frame([198, 19, 1, 5], ttl), DropReason::TtlExpired);
            assert_eq!((e.ty, e.code, e.rest), (11, 0, 0));
            assert_eq!(e.src, Ipv4Addr::new(198, 18, 0, 1));
            assert_eq!(e.dst, Ipv4Addr::from(SRC4));
            assert_eq!(e.vlan, None);
            assert_eq!(e.quote.len(), 20 + 8 + 26, "a small datagram is quoted whole");
        }
        let e = expect_icmp(&mut rig, 0, v4_frame([198, 19, 200, 5], 64), DropReason::NoRoute);
        assert_eq!((e.ty, e.code), (3, 0));
        let e = expect_icmp(&mut rig, 0, v4_frame([198, 19, 77, 5], 64), DropReason::Unreachable);
        assert_eq!((e.ty, e.code), (3, 1));
        // DF and larger than port 2's MTU: fragmentation needed, with the MTU.
        let big = eth(MAC0, None, ethertype::IPV4, &ipv4(SRC4, [198, 19, 4, 1], 64, ip_protocol::UDP, &udp(1, 2, 1400)));
        let e = expect_icmp(&mut rig, 0, big, DropReason::MtuExceeded);
        assert_eq!((e.ty, e.code, e.rest), (3, 4, 1280));
        assert_eq!(e.ip_len, 576, "cut at 576 octets");
        assert_eq!(e.quote.len(), 576 - 28);
        // Exactly the MTU passes.
        let fits = eth(MAC0, None, ethertype::IPV4, &ipv4(SRC4, [198, 19, 4, 1], 64, ip_protocol::UDP, &udp(1, 2, 1280 - 28)));
        assert!(matches!(rig.run1(0, fits).verdict, Verdict::Forward { port: 2, .. }));
        // From a VLAN sub-interface: same tag back, that sub-interface's address.
        let tagged = eth(MAC0, Some(0x2000 | 100), ethertype::IPV4, &ipv4(SRC4, [198, 19, 1, 5], 1, ip_protocol::UDP, &udp(1, 2, 26)));
        let e = expect_icmp(&mut rig, 0, tagged, DropReason::TtlExpired);
        assert_eq!(e.vlan, Some(0x2000 | 100));
        assert_eq!(e.src, Ipv4Addr::new(198, 18, 100, 1));
        // A 1500-octet datagram is quoted up to the 576 limit.
        let e = expect_icmp(&mut rig, 0, eth(MAC0, None, ethertype::IPV4, &ipv4(SRC4, [198, 19, 1, 5], 1, ip_protocol::UDP, &udp(1, 2, 1472))), DropReason::TtlExpired);
        assert_eq!(e.ip_len, 576);
    }

    #[test]
    fn icmpv6_errors() {
        let mut rig = rig();
        let e = expect_icmp(&mut rig, 0, v6_frame(v6(1, 5), 1), DropReason::TtlExpired);
        assert_eq!((e.ty, e.code), (3, 0));
        assert_eq!(e.src, v6(0, 1));
        assert_eq!(e.dst, src6());
        let e = expect_icmp(&mut rig, 0, v6_frame(v6(0xdead, 5), 64), DropReason::NoRoute);
        assert_eq!((e.ty, e.code), (1, 0));
        let e = expect_icmp(&mut rig, 0, v6_frame(v6(77, 5), 64), DropReason::Unreachable);
        assert_eq!((e.ty, e.code), (1, 6), "reject route to destination (RFC 4443 section 3.1)");
        let big = eth(MAC0, None, ethertype::IPV6, &ipv6(src6(), v6(4, 1), 64, ip_protocol::UDP, &udp(1, 2, 1400)));
        let e = expect_icmp(&mut rig, 0, big, DropReason::MtuExceeded);
        assert_eq!((e.ty, e.code, e.rest), (2, 0, 1280));
        assert_eq!(e.ip_len, 1280, "cut at 1280 octets");
        assert_eq!(e.quote.len(), 1280 - 48);
        let tagged = eth(MAC0, Some(100), ethertype::IPV6, &ipv6(src6(), v6(1, 5), 1, ip_protocol::UDP, &udp(1, 2, 26)));
        let e = expect_icmp(&mut rig, 0, tagged, DropReason::TtlExpired);
        assert_eq!((e.vlan, e.src), (Some(100), v6(0x100, 1).into()));
    }

    /// The offending packet is counted by its reason, the error by `outcome`, and nothing
    /// is sent.
    fn expect_no_icmp(rig: &mut Rig, port: u16, frame: Vec<u8>, reason: DropReason, outcome: IcmpOutcome, what: &str) {
        let before = rig.snap();
        let out = rig.run1(port, frame);
        assert_eq!(out.verdict, Verdict::Drop(reason), "{what}");
        let after = rig.snap();
        assert_eq!(after.drop_count(reason), before.drop_count(reason) + 1, "{what}");
        assert_eq!(after.total_drops(), before.total_drops() + 1, "{what}");
        for o in IcmpOutcome::ALL {
            assert_eq!(after.icmp_count(*o), before.icmp_count(*o) + (*o == outcome) as u64, "{what}: {o}");
        }
    }

    #[test]
    fn icmp_never_in_reply_to() {
        let mut rig = rig();
        let v4_icmp = |ty: u8| eth(MAC0, None, ethertype::IPV4, &ipv4(SRC4, [198, 19, 1, 5], 1, ip_protocol::ICMP, &[ty, 0, 0, 0, 0, 0, 0, 0]));
        for ty in [3, 4, 5, 11, 12] {
            expect_no_icmp(&mut rig, 0, v4_icmp(ty), DropReason::TtlExpired, IcmpOutcome::Suppressed, &format!("ICMP type {ty}"));
        }
        expect_icmp(&mut rig, 0, v4_icmp(8), DropReason::TtlExpired); // echo request is answered
        let truncated_icmp = eth(MAC0, None, ethertype::IPV4, &ipv4(SRC4, [198, 19, 1, 5], 1, ip_protocol::ICMP, &[]));
        expect_no_icmp(&mut rig, 0, truncated_icmp, DropReason::TtlExpired, IcmpOutcome::Suppressed, "ICMP without a header");
        let frag = |mf: bool, off: u16| edit_v4(v4_frame([198, 19, 1, 5], 1), |ip| ipv4::Packet::new_unchecked(ip).set_flags_and_offset(false, mf, off));
        expect_no_icmp(&mut rig, 0, frag(false, 1480), DropReason::TtlExpired, IcmpOutcome::Suppressed, "last fragment");
        expect_no_icmp(&mut rig, 0, frag(true, 8), DropReason::TtlExpired, IcmpOutcome::Suppressed, "middle fragment");
        expect_icmp(&mut rig, 0, frag(true, 0), DropReason::TtlExpired); // the first fragment is answered

        let v6_icmp = |ty: u8| eth(MAC0, None, ethertype::IPV6, &ipv6(src6(), v6(1, 5), 1, ip_protocol::ICMPV6, &[ty, 0, 0, 0, 0, 0, 0, 0]));
        for ty in [1, 2, 3, 4, 127] {
            expect_no_icmp(&mut rig, 0, v6_icmp(ty), DropReason::TtlExpired, IcmpOutcome::Suppressed, &format!("ICMPv6 type {ty}"));
        }
        expect_icmp(&mut rig, 0, v6_icmp(128), DropReason::TtlExpired);
        // An ICMPv6 error behind a destination options header is still an error.
        let mut hidden = vec![ip_protocol::ICMPV6, 0, 1, 4, 0, 0, 0, 0];
        hidden.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        let f = eth(MAC0, None, ethertype::IPV6, &ipv6(src6(), v6(1, 5), 1, ip_protocol::DEST_OPTIONS, &hidden));
        expect_no_icmp(&mut rig, 0, f, DropReason::TtlExpired, IcmpOutcome::Suppressed, "ICMPv6 error after options");
        let frag6 = |off: u16| {
            let mut fh = vec![ip_protocol::UDP, 0, 0, 0, 0, 0, 0, 1];
            fh[2..4].copy_from_slice(&(off | 1).to_be_bytes());
            fh.extend_from_slice(&udp(1, 2, 16));
            eth(MAC0, None, ethertype::IPV6, &ipv6(src6(), v6(1, 5), 1, ip_protocol::FRAGMENT, &fh))
        };
        expect_no_icmp(&mut rig, 0, frag6(1448), DropReason::TtlExpired, IcmpOutcome::Suppressed, "IPv6 non-initial fragment");
        expect_icmp(&mut rig, 0, frag6(0), DropReason::TtlExpired);
        // A header chain cut short: its upper layer is unknown, so no error.
        let f = eth(MAC0, None, ethertype::IPV6, &ipv6(src6(), v6(1, 5), 1, ip_protocol::HOP_BY_HOP, &[ip_protocol::UDP, 3, 0, 0]));
        expect_no_icmp(&mut rig, 0, f, DropReason::TtlExpired, IcmpOutcome::Suppressed, "cut header chain");

        // No address of the family on the ingress sub-interface (VLAN 200).
        let f = eth(MAC0, Some(200), ethertype::IPV4, &ipv4(SRC4, [198, 19, 1, 5], 1, ip_protocol::UDP, &udp(1, 2, 26)));
        expect_no_icmp(&mut rig, 0, f, DropReason::TtlExpired, IcmpOutcome::NoSource, "no IPv4 address");
        let f = eth(MAC0, Some(200), ethertype::IPV6, &ipv6(src6(), v6(77, 5), 64, ip_protocol::UDP, &udp(1, 2, 26)));
        expect_no_icmp(&mut rig, 0, f, DropReason::Unreachable, IcmpOutcome::NoSource, "no IPv6 address");
    }

    #[test]
    fn icmp_rate_limit_under_flood() {
        let (rate, burst) = (100u64, 10u64);
        let mut rig = rig_with(IcmpRateLimit { per_second: rate as u32, burst: burst as u32 });
        let frame = v4_frame([198, 19, 1, 5], 1);
        let batch: Vec<(u16, Vec<u8>)> = (0..50).map(|_| (0, frame.clone())).collect();
        // 10 000 frames over 200 batches, 5 ms apart: 0.995 s from first to last.
        let (start, step) = (1_000_000_000u64, 5_000_000u64);
        let mut sent = 0u64;
        for i in 0..200 {
            let outs = rig.run_in(&batch, HEADROOM, CHUNK, start + i * step);
            sent += outs.iter().filter(|o| matches!(o.verdict, Verdict::Forward { .. })).count() as u64;
        }
        let elapsed_ns = 199 * step;
        let expected = burst + rate * elapsed_ns / 1_000_000_000;
        assert!(sent.abs_diff(expected) <= 1, "sent {sent}, expected {expected}");
        let s = rig.snap();
        assert_eq!(s.icmp_count(IcmpOutcome::Sent), sent);
        assert_eq!(s.icmp_count(IcmpOutcome::RateLimited), 10_000 - sent);
        assert_eq!(s.drop_count(DropReason::TtlExpired), 10_000, "every packet counts as dropped");
        // Another port has its own bucket.
        let other = eth(MAC1, None, ethertype::IPV4, &ipv4(SRC4, [198, 19, 3, 5], 1, ip_protocol::UDP, &udp(1, 2, 26)));
        let out = rig.run_in(&[(1, other)], HEADROOM, CHUNK, start + 200 * step);
        assert!(matches!(out[0].verdict, Verdict::Forward { port: 1, .. }));
    }

    #[test]
    fn token_bucket() {
        let mut b = TokenBucket::new(IcmpRateLimit { per_second: 2, burst: 3 });
        assert!((0..3).all(|_| b.take(0)));
        assert!(!b.take(0));
        assert!(!b.take(499_999_999));
        assert!(b.take(500_000_000));
        assert!(!b.take(400_000_000), "time going back refills nothing");
        assert!(!b.take(500_000_000));
        assert_eq!((0..10).filter(|_| b.take(u64::MAX)).count(), 3, "a long quiet spell refills only the burst");
        let mut none = TokenBucket::new(IcmpRateLimit { per_second: 0, burst: 0 });
        assert!(!none.take(u64::MAX));
    }

    #[test]
    fn icmp_without_headroom() {
        let mut rig = rig();
        // No headroom, room at the tail: the quote moves right, the error is still whole.
        let frame = v4_frame([198, 19, 1, 5], 1);
        let out = rig.run_in(&[(0, frame.clone())], 0, CHUNK, 0).pop().unwrap();
        let e = parse_icmp(out.frame());
        assert_eq!(e.quote[..], frame[14..]);
        let frame6 = v6_frame(v6(1, 5), 1);
        let out = rig.run_in(&[(0, frame6.clone())], 10, CHUNK, 0).pop().unwrap();
        assert_eq!(parse_icmp(out.frame()).quote[..], frame6[14..]);
        // No room anywhere: counted, not sent.
        let before = rig.snap();
        let out = rig.run_in(&[(0, frame.clone())], 0, 0, 0).pop().unwrap();
        assert_eq!(out.verdict, Verdict::Drop(DropReason::TtlExpired));
        assert_eq!(rig.snap().icmp_count(IcmpOutcome::NoRoom), before.icmp_count(IcmpOutcome::NoRoom) + 1);
    }

    fn check_forwarded_v4(out: &Out, original: &[u8], port: u16, vlan: Option<u16>, dst_mac: [u8; 6], src_mac: [u8; 6]) {
        let Verdict::Forward { port: p, .. } = out.verdict else { panic!("{:?}", out.verdict) };
        assert_eq!(p, port);
        let f = out.frame();
        assert_eq!(f[..6], dst_mac);
        assert_eq!(f[6..12], src_mac);
        let (l2, et) = match vlan {
            Some(tci) => {
                assert_eq!(f[12..14], ethertype::VLAN.to_be_bytes());
                assert_eq!(f[14..16], tci.to_be_bytes());
                (18, &f[16..18])
            }
            None => (14, &f[12..14]),
        };
        let ol2 = if original[12..14] == ethertype::VLAN.to_be_bytes() { 18 } else { 14 };
        let ip = &f[l2..];
        let oip = &original[ol2..];
        if et == ethertype::IPV4.to_be_bytes() {
            let p = ipv4::Packet::new_checked(ip).unwrap();
            let o = ipv4::Packet::new_checked(oip).unwrap();
            assert_eq!(p.ttl(), o.ttl() - 1);
            // Recompute from scratch: the incremental update must agree.
            let mut copy = ip[..20].to_vec();
            ipv4::Packet::new_unchecked(&mut copy[..]).fill_checksum();
            assert_eq!(p.checksum(), ipv4::Packet::new_unchecked(&copy[..]).checksum());
            assert!(p.verify_checksum());
            assert_eq!(ip[..8], oip[..8]);
            assert_eq!(ip[9], oip[9]);
            assert_eq!(ip[12..o.total_len() as usize], oip[12..o.total_len() as usize], "addresses and payload untouched");
            let want = (l2 + o.total_len() as usize).max(60);
            assert_eq!(f.len(), want, "trimmed to the datagram, padded to the minimum");
        } else {
            assert_eq!(et, ethertype::IPV6.to_be_bytes());
            let p = ipv6::Packet::new_checked(ip).unwrap();
            let o = ipv6::Packet::new_checked(oip).unwrap();
            assert_eq!(p.hop_limit(), o.hop_limit() - 1);
            assert_eq!(ip[..7], oip[..7]);
            assert_eq!(ip[8..o.total_len()], oip[8..o.total_len()], "addresses and payload untouched");
            assert_eq!(f.len(), (l2 + o.total_len()).max(60));
        }
    }

    #[test]
    fn forwards_ipv4_and_ipv6_of_every_size() {
        let mut rig = rig();
        for frame_len in [60usize, 61, 64, 65, 128, 512, 1000, 1499, 1514] {
            let payload = frame_len - 14 - 20 - 8;
            let f = eth(MAC0, None, ethertype::IPV4, &ipv4(SRC4, [198, 19, 1, 5], 64, ip_protocol::UDP, &udp(1, 2, payload)));
            assert_eq!(f.len(), frame_len);
            let out = rig.run1(0, f.clone());
            check_forwarded_v4(&out, &f, 1, None, nh_mac(1), MAC1);
            if frame_len >= 14 + 40 + 8 {
                let f = eth(MAC0, None, ethertype::IPV6, &ipv6(src6(), v6(1, 5), 64, ip_protocol::UDP, &udp(1, 2, frame_len - 62)));
                let out = rig.run1(0, f.clone());
                check_forwarded_v4(&out, &f, 1, None, nh_mac(1), MAC1);
            }
        }
        // A small datagram in a padded 60-octet frame: trimmed to it, then padded again
        // with zeros.
        let f = eth(MAC0, None, ethertype::IPV4, &ipv4(SRC4, [198, 19, 1, 5], 64, ip_protocol::UDP, &udp(1, 2, 0)));
        let mut padded = f.clone();
        padded.resize(60, 0xab);
        let out = rig.run1(0, padded.clone());
        check_forwarded_v4(&out, &padded, 1, None, nh_mac(1), MAC1);
        assert!(out.frame()[f.len()..].iter().all(|&b| b == 0));
        // A datagram in an overlong frame is trimmed.
        let mut long = f.clone();
        long.resize(400, 0xab);
        let out = rig.run1(0, long.clone());
        assert_eq!(out.frame().len(), 60);
        // Counters: rx on port 0 untagged (index 0), tx on port 1 untagged (index 3).
        let s = rig.snap();
        assert_eq!(s.sub_interfaces[0].rx_packets, s.sub_interfaces[3].tx_packets);
        assert_eq!(s.total_drops(), 0);
        assert!(s.sub_interfaces[3].tx_bytes > 0);
    }

    #[test]
    fn vlan_push_pop_rewrite() {
        let mut rig = rig();
        let ip4 = |dst: [u8; 4]| ipv4(SRC4, dst, 64, ip_protocol::UDP, &udp(7, 8, 100));
        // Push: untagged in, out on port 1 VLAN 300.
        let f = eth(MAC0, None, ethertype::IPV4, &ip4([198, 19, 2, 1]));
        check_forwarded_v4(&rig.run1(0, f.clone()), &f, 1, Some(300), nh_mac(2), MAC1);
        // Pop: VLAN 100 in, untagged out.
        let f = eth(MAC0, Some(100), ethertype::IPV4, &ip4([198, 19, 1, 1]));
        check_forwarded_v4(&rig.run1(0, f.clone()), &f, 1, None, nh_mac(1), MAC1);
        // Rewrite: VLAN 100 priority 5 in, VLAN 300 out, priority kept.
        let f = eth(MAC0, Some(0xa000 | 100), ethertype::IPV4, &ip4([198, 19, 2, 1]));
        check_forwarded_v4(&rig.run1(0, f.clone()), &f, 1, Some(0xa000 | 300), nh_mac(2), MAC1);
        // Tagged to tagged on another port, IPv6.
        let f = eth(MAC1, Some(300), ethertype::IPV6, &ipv6(src6(), v6(3, 1), 64, ip_protocol::TCP, &udp(7, 8, 100)));
        check_forwarded_v4(&rig.run1(1, f.clone()), &f, 0, Some(100), nh_mac(3), MAC0);
        // Push without headroom: the datagram moves right by 4 octets.
        let f = eth(MAC0, None, ethertype::IPV4, &ip4([198, 19, 2, 1]));
        let out = rig.run_in(&[(0, f.clone())], 0, CHUNK, 0).pop().unwrap();
        check_forwarded_v4(&out, &f, 1, Some(300), nh_mac(2), MAC1);
        // ... and no room at all.
        let out = rig.run_in(&[(0, f.clone())], 0, 0, 0).pop().unwrap();
        assert_eq!(out.verdict, Verdict::Drop(DropReason::NoHeadroom));
        let s = rig.snap();
        assert_eq!(s.sub_interfaces[4].tx_packets, 3, "port 1 VLAN 300: push, rewrite, push without headroom");
        assert_eq!(s.sub_interfaces[1].rx_packets, 2, "port 0 VLAN 100");
        assert_eq!(s.sub_interfaces[1].tx_packets, 1);
    }

    fn member_of(out: &Out) -> u8 {
        out.frame()[5]
    }

    fn spread(rig: &mut Rig, v6_flows: bool, group_net: u8, flows: usize) -> std::collections::HashMap<u8, usize> {
        let mut counts = std::collections::HashMap::new();
        let mk = |i: usize| {
            let (sport, dport) = ((i % 50_000) as u16 + 1024, (i / 50_000) as u16 + 80);
            if v6_flows {
                eth(MAC0, None, ethertype::IPV6, &ipv6(v6(0, (i % 7) as u16 + 1), v6(group_net as u16, 9), 64, ip_protocol::TCP, &udp(sport, dport, 20)))
            } else {
                let src = [198, 18, (i % 5) as u8, 100];
                eth(MAC0, None, ethertype::IPV4, &ipv4(src, [198, 19, group_net, 9], 64, ip_protocol::UDP, &udp(sport, dport, 20)))
            }
        };
        for chunk in (0..flows).collect::<Vec<_>>().chunks(MAX_BATCH) {
            let frames: Vec<_> = chunk.iter().map(|&i| (0, mk(i))).collect();
            let again = rig.run(&frames);
            let outs = rig.run(&frames);
            for (a, b) in again.iter().zip(&outs) {
                assert_eq!(member_of(a), member_of(b), "one flow, one member");
                *counts.entry(member_of(b)).or_insert(0) += 1;
            }
        }
        counts
    }

    #[test]
    fn ecmp_spreads_flows_fairly_and_keeps_each_flow_on_one_member() {
        let mut rig = rig();
        let flows = 12_000;
        for v6_flows in [false, true] {
            for (net, members) in [(10u8, &[5u8, 6][..]), (11, &[5, 6, 7][..])] {
                let counts = spread(&mut rig, v6_flows, net, flows);
                assert_eq!(counts.len(), members.len(), "{counts:?}");
                let fair = flows / members.len();
                for m in members {
                    let got = counts[m];
                    assert!(got.abs_diff(fair) * 100 <= fair * 5, "member {m}: {got} of {flows} flows, fair {fair} (v6 {v6_flows})");
                }
            }
        }
    }

    #[test]
    fn flow_hash_ignores_what_changes_within_a_flow_and_sees_the_rest() {
        let rig = rig();
        let mut m = Meta::EMPTY;
        let hash = |f: &[u8], m: &mut Meta| {
            rig.pipeline.parse_v4(&f[14..], false, m).unwrap();
            m.flow_hash
        };
        let a = v4_frame([198, 19, 1, 5], 64);
        let h = hash(&a, &mut m);
        let other_ttl = edit_v4(a.clone(), |ip| ip[8] = 9);
        assert_eq!(hash(&other_ttl, &mut m), h, "TTL and ident are not the flow");
        let mut other_port = a.clone();
        other_port[14 + 20] ^= 1;
        assert_ne!(hash(&other_port, &mut m), h);
        // Fragments of one datagram hash alike, ports or not.
        let first = edit_v4(a.clone(), |ip| ipv4::Packet::new_unchecked(ip).set_flags_and_offset(false, true, 0));
        let later = edit_v4(other_port, |ip| ipv4::Packet::new_unchecked(ip).set_flags_and_offset(false, false, 64));
        assert_eq!(hash(&first, &mut m), hash(&later, &mut m));
    }

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
    fn config_is_checked() {
        let mut c = config(IcmpRateLimit::default());
        assert!(Pipeline::new(&c).is_ok());
        assert_eq!(c.sub_interface_index(1, 300), Some(4));
        assert_eq!(c.sub_interface_index(1, 100), None);
        assert_eq!(c.sub_interfaces().count(), 6);
        c.ports[1].sub_interfaces.push(sub(300, None, None));
        assert_eq!(Pipeline::new(&c).err().unwrap(), "port 1: vlan 300 listed twice");
        let mut c = config(IcmpRateLimit::default());
        c.ports[0].sub_interfaces.push(sub(4095, None, None));
        assert!(Pipeline::new(&c).err().unwrap().contains("vlan 4095 out of range"));
        let mut c = config(IcmpRateLimit::default());
        c.ports[2].mtu = 1000;
        assert!(Pipeline::new(&c).err().unwrap().contains("mtu 1000 is below 1280"));
        let mut c = config(IcmpRateLimit::default());
        c.ports[2].mac = ethernet::BROADCAST;
        assert!(Pipeline::new(&c).is_err());
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

    #[test]
    fn checksum_of_forwarded_headers_with_options() {
        // IHL 6 (one option word): the incremental update covers it as well.
        let mut rig = rig();
        let mut ip = ipv4(SRC4, [198, 19, 1, 5], 64, ip_protocol::UDP, &udp(1, 2, 10));
        ip.splice(20..20, [1, 1, 1, 0]); // NOP NOP NOP EOL
        ip[0] = 0x46;
        let total = ip.len() as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ipv4::Packet::new_unchecked(&mut ip[..24]).fill_checksum();
        let f = eth(MAC0, None, ethertype::IPV4, &ip);
        let out = rig.run1(0, f);
        let p = ipv4::Packet::new_checked(&out.frame()[14..]).unwrap();
        assert_eq!(p.ttl(), 63);
        assert_eq!(checksum::data(&out.frame()[14..38]), 0xffff);
    }
}
