//! The edge checks' work in a batch (issue 18): who sent each frame (the member, by source
//! MAC on its sub-interface, counted as its rx), whether that member may send from the
//! frame's source (BCP 38), and the reverse-path verdict (uRPF) once the source is looked
//! up with the destinations.
//!
//! An exchange port carries one member or a few, and a member's sources mostly lead back
//! through one next-hop group; so `EdgeBatch` keeps the last answer to each question and
//! asks the tables again only when the question changes. A run of frames from one sender
//! costs a compare each instead of a hash probe, its rx counters are written once per run
//! instead of per frame, and a run of sources routed alike one compare instead of the
//! group's egress search. Every answer is the tables' own, given earlier in the same batch
//! to the same question (member tables are fetched once per batch; a group the writer
//! re-points during the batch is seen by the questions not yet answered, and by all from
//! the next batch on, as if the change had come a batch later).

use super::urpf;
use super::{Destination, Family, Meta, PacketBuf, Pipeline, SubInterface};
use crate::counters::WorkerCounters;
use crate::drop::DropReason;
use crate::fib::members::mac_key;
use crate::fib::{FibReader, MemberId, MemberTable, RouteTarget, SourceFilter, NO_MEMBER};

/// One batch's edge state. It borrows the member tables from the FIB reader, valid until
/// the reader's next `quiescent`, which comes after the batch.
pub(super) struct EdgeBatch<'a> {
    /// None when no sub-interface has members: then nothing is looked up or counted.
    members: Option<&'a MemberTable>,
    /// The last sender looked up: `port << 16 | vlan`, its MAC as the tables key it
    /// (48 bits, so the initial u64::MAX matches no frame), and what the tables said.
    sub_key: u32,
    mac: u64,
    member: MemberId,
    filter: Option<&'a SourceFilter>,
    /// Frames and octets from `member` not yet added to its counters.
    rx_packets: u64,
    rx_bytes: u64,
    /// The last reverse-path verdict of each family (IPv4, IPv6: a batch mixes them).
    urpf: [UrpfMemo; 2],
}

/// A reverse-path verdict: for a source whose lookup gave `entry`, received on
/// sub-interface `sub` with packed policy `raw` (0, the initial value, is "off", which is
/// never checked, so it matches no frame).
#[derive(Clone, Copy)]
struct UrpfMemo {
    entry: u32,
    sub: u16,
    raw: u8,
    verdict: Option<DropReason>,
}

impl<'a> EdgeBatch<'a> {
    #[inline]
    pub(super) fn new(fib: &'a FibReader) -> EdgeBatch<'a> {
        EdgeBatch {
            members: fib.members().filter(|t| !t.is_empty()),
            sub_key: u32::MAX,
            mac: u64::MAX,
            member: NO_MEMBER,
            filter: None,
            rx_packets: 0,
            rx_bytes: 0,
            urpf: [UrpfMemo { entry: 0, sub: 0, raw: 0, verdict: None }; 2],
        }
    }

    /// No sub-interface has members: no frame of the batch has a sender to find.
    #[inline(always)]
    pub(super) fn plain(&self) -> bool {
        self.members.is_none()
    }

    /// The member that sent `frame` (parsed onto a sub-interface) and its source filter:
    /// the id, `UNKNOWN_MEMBER` for a MAC no member has there, or `NO_MEMBER` when the
    /// sub-interface has none. The frame is counted as the member's rx (at `flush`).
    #[inline]
    pub(super) fn sender(&mut self, counters: &WorkerCounters, frame: &PacketBuf<'_>, m: &Meta) -> (MemberId, Option<&'a SourceFilter>) {
        let Some(members) = self.members else { return (NO_MEMBER, None) };
        // Parsing checked the Ethernet header is there; the source MAC is octets 6 to 11.
        let Some(src) = frame.chunk.get(frame.start + 6..frame.start + 12).and_then(|s| <&[u8; 6]>::try_from(s).ok()) else {
            return (NO_MEMBER, None);
        };
        let vlan = if m.tagged { m.tci & 0x0fff } else { 0 };
        let sub_key = (frame.port as u32) << 16 | vlan as u32;
        let mac = mac_key(src);
        if sub_key != self.sub_key || mac != self.mac {
            self.flush(counters);
            let (member, filter) = members.sender(frame.port, vlan, src);
            (self.sub_key, self.mac, self.member, self.filter) = (sub_key, mac, member, filter);
        }
        self.rx_packets += 1;
        self.rx_bytes += frame.len as u64;
        (self.member, self.filter)
    }

    /// Counts the frames of the current run: call once the batch's senders are all known.
    #[inline]
    pub(super) fn flush(&mut self, counters: &WorkerCounters) {
        if self.rx_packets != 0 {
            counters.count_member_rx(self.member, self.rx_packets, self.rx_bytes);
            (self.rx_packets, self.rx_bytes) = (0, 0);
        }
    }
}

/// A member with source filter `filter` may send from the source of `dst` (BCP 38).
#[inline(always)]
pub(super) fn source_allowed(filter: &SourceFilter, dst: &Destination) -> bool {
    match *dst {
        Destination::V4(_, src) => filter.allows_v4(src),
        Destination::V6(_, src) => filter.allows_v6(src),
    }
}

impl Pipeline {
    /// The reason to drop frame `m` by its sub-interface's reverse-path policy (which
    /// checks: `urpf::checks(m.urpf)`), its source's lookup having given `entry`; None
    /// when it passes. `src` gives the source address, left-aligned in 128 bits: it is
    /// read only for a source on an attached subnet.
    #[inline]
    pub(super) fn reverse_path_drop(
        &self,
        fib: &FibReader,
        edge: &mut EdgeBatch<'_>,
        m: &Meta,
        entry: u32,
        src: impl Fn() -> u128,
    ) -> Option<DropReason> {
        let slot = usize::from(m.family == Family::V6);
        if let Some(memo) = edge.urpf.get(slot).filter(|memo| memo.entry == entry && memo.sub == m.sub && memo.raw == m.urpf) {
            return memo.verdict;
        }
        let sub = self.subs.get(m.sub as usize);
        let (port, vlan) = sub.map_or((u16::MAX, 0), |s| (s.port, s.vlan));
        // A source on an attached subnet matches its glean route: it is on the link of the
        // ingress sub-interface when that one's own address is in the route.
        let on_link = |len: u8| match (m.family, sub) {
            (Family::V4, Some(SubInterface { ipv4: Some(own), .. })) => urpf::same_prefix(src(), u128::from(own.to_bits()) << 96, len),
            (Family::V6, Some(SubInterface { ipv6: Some(own), .. })) => urpf::same_prefix(src(), own.to_bits(), len),
            _ => false,
        };
        let verdict = urpf::check(fib, m.urpf, entry, port, vlan, on_link);
        // A glean route's verdict depends on the source address, not only on the route.
        if let Some(memo) = edge.urpf.get_mut(slot).filter(|_| RouteTarget::from_entry(entry) != Some(RouteTarget::Glean)) {
            *memo = UrpfMemo { entry, sub: m.sub, raw: m.urpf, verdict };
        }
        verdict
    }
}
