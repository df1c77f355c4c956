//! Per-worker forwarding counters: per sub-interface rx/tx packets and octets, drops by
//! ingress port and reason, ICMP error outcomes. Each worker owns one `WorkerCounters` and is its only
//! writer; any thread reads it at any time through `snapshot`, and `CounterSnapshot::sum`
//! adds the workers up.
//!
//! Sub-interfaces are indexed densely in `PipelineConfig` order: ports in order, each
//! port's sub-interfaces in the order they are listed (see `PipelineConfig::sub_interfaces`).
//! Members (`fib::members`) have a row per index, `UNKNOWN_MEMBER` last.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::drop::{DropReason, IcmpOutcome};
use crate::fib::{MemberId, BLACKHOLE_SLOTS, UNKNOWN_MEMBER};

/// A 64-bit monotonic counter with a single writer.
///
/// Relaxed suffices: a counter orders nothing else, readers only need each value to be
/// whole (a 64-bit atomic load never tears) and to move forward. Because only the owning
/// worker writes, an increment is a relaxed load and a relaxed store, which compile to
/// plain moves, instead of a locked read-modify-write; no increment can be lost since no
/// one else stores. A snapshot may see one counter of a batch updated and the next not
/// yet: consistent enough for rates and totals, which is all counters are for.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker may call this (see the type's comment).
    #[inline(always)]
    pub(crate) fn add(&self, n: u64) {
        self.0.store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Traffic of one sub-interface, as seen by one worker.
#[derive(Debug, Default)]
pub struct SubInterfaceCounters {
    /// Frames attributed to this sub-interface on receive, whatever became of them.
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    /// Frames sent out of this sub-interface: forwarded frames and ICMP errors.
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
}

/// Traffic of one exchange member, as seen by one worker.
#[derive(Debug)]
pub struct MemberCounters {
    /// Frames from the member's MAC on its sub-interface, whatever became of them.
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    /// Frames forwarded through an adjacency to the member's MAC.
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
    /// The member's frames not forwarded, by reason.
    pub drops: [Counter; DropReason::COUNT],
}

impl Default for MemberCounters {
    fn default() -> Self {
        MemberCounters {
            rx_packets: Counter::default(),
            rx_bytes: Counter::default(),
            tx_packets: Counter::default(),
            tx_bytes: Counter::default(),
            drops: std::array::from_fn(|_| Counter::default()),
        }
    }
}

/// One worker's counters, on cache lines of their own: only this worker writes them.
/// Frames that cannot be attributed to a sub-interface (too short for Ethernet, an unknown
/// VLAN, stacked tags) count only by their drop reason and ingress port.
#[derive(Debug)]
#[repr(align(64))]
pub struct WorkerCounters {
    /// By ingress port, then reason; one row more than the ports, for a frame whose port
    /// index is none of them (none should be: receive knows the port of every frame).
    drops: Box<[[Counter; DropReason::COUNT]]>,
    icmp: [Counter; IcmpOutcome::COUNT],
    sub_interfaces: Box<[SubInterfaceCounters]>,
    /// By member id, `UNKNOWN_MEMBER` last: every row allocated up front.
    members: Box<[MemberCounters]>,
    /// Frames dropped by each blackhole route, by its slot (`fib::blackholes`). Not in
    /// `snapshot` (512 KiB): read one slot at a time with `blackhole`.
    blackholes: Box<[Counter]>,
}

impl WorkerCounters {
    pub fn new(sub_interfaces: usize, ports: usize) -> WorkerCounters {
        WorkerCounters {
            drops: (0..=ports).map(|_| std::array::from_fn(|_| Counter::default())).collect(),
            icmp: std::array::from_fn(|_| Counter::default()),
            sub_interfaces: (0..sub_interfaces).map(|_| SubInterfaceCounters::default()).collect(),
            members: (0..=UNKNOWN_MEMBER).map(|_| MemberCounters::default()).collect(),
            blackholes: (0..BLACKHOLE_SLOTS).map(|_| Counter::default()).collect(),
        }
    }

    /// Frames this worker dropped by the blackhole route of `slot`.
    pub fn blackhole(&self, slot: u32) -> u64 {
        self.blackholes.get(slot as usize).map_or(0, Counter::get)
    }

    #[inline(always)]
    pub(crate) fn count_blackhole(&self, slot: u32) {
        if let Some(c) = self.blackholes.get(slot as usize) {
            c.add(1);
        }
    }

    /// Drops of `reason`, over every port.
    #[inline]
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops.iter().map(|row| row[reason as usize].get()).sum()
    }

    #[inline]
    pub fn icmp(&self, outcome: IcmpOutcome) -> u64 {
        self.icmp[outcome as usize].get()
    }

    /// The counters of sub-interface `index`, if it exists.
    #[inline]
    pub fn sub_interface(&self, index: usize) -> Option<&SubInterfaceCounters> {
        self.sub_interfaces.get(index)
    }

    /// Counts a frame received on `port` dropped for `reason`.
    #[inline(always)]
    pub(crate) fn count_drop(&self, port: u16, reason: DropReason) {
        // `drops` has the ports' rows and the spare one (never empty): an index out of range
        // lands in the spare row, and the `min` lets the compiler drop the bounds check.
        let last = self.drops.len() - 1;
        let row = &self.drops[(port as usize).min(last)];
        row[reason as usize].add(1);
    }

    #[inline(always)]
    pub(crate) fn count_icmp(&self, outcome: IcmpOutcome) {
        self.icmp[outcome as usize].add(1);
    }

    #[inline(always)]
    pub(crate) fn count_rx(&self, sub_interface: usize, bytes: usize) {
        if let Some(c) = self.sub_interfaces.get(sub_interface) {
            c.rx_packets.add(1);
            c.rx_bytes.add(bytes as u64);
        }
    }

    /// `packets` frames of `bytes` octets in all received on `sub_interface`.
    #[inline(always)]
    pub(crate) fn count_rx_run(&self, sub_interface: usize, packets: u64, bytes: u64) {
        if let Some(c) = self.sub_interfaces.get(sub_interface) {
            c.rx_packets.add(packets);
            c.rx_bytes.add(bytes);
        }
    }

    /// `packets` frames of `bytes` octets in all sent out of `sub_interface`.
    #[inline(always)]
    pub(crate) fn count_tx_run(&self, sub_interface: usize, packets: u64, bytes: u64) {
        if let Some(c) = self.sub_interfaces.get(sub_interface) {
            c.tx_packets.add(packets);
            c.tx_bytes.add(bytes);
        }
    }

    #[inline(always)]
    pub(crate) fn count_tx(&self, sub_interface: usize, bytes: usize) {
        if let Some(c) = self.sub_interfaces.get(sub_interface) {
            c.tx_packets.add(1);
            c.tx_bytes.add(bytes as u64);
        }
    }

    /// Counts `packets` frames of `bytes` octets in all from `member` (NO_MEMBER, or any id
    /// out of range, is not counted): the pipeline adds up a run of frames from one sender
    /// and counts them at once.
    #[inline(always)]
    pub(crate) fn count_member_rx(&self, member: MemberId, packets: u64, bytes: u64) {
        if let Some(c) = self.members.get(member as usize) {
            c.rx_packets.add(packets);
            c.rx_bytes.add(bytes);
        }
    }

    #[inline(always)]
    pub(crate) fn count_member_tx(&self, member: MemberId, bytes: usize) {
        if let Some(c) = self.members.get(member as usize) {
            c.tx_packets.add(1);
            c.tx_bytes.add(bytes as u64);
        }
    }

    #[inline(always)]
    pub(crate) fn count_member_drop(&self, member: MemberId, reason: DropReason) {
        if let Some(c) = self.members.get(member as usize) {
            c.drops[reason as usize].add(1);
        }
    }

    /// Reads every counter once, without stopping the worker.
    pub fn snapshot(&self) -> CounterSnapshot {
        let port_drops: Vec<[u64; DropReason::COUNT]> = self.drops.iter().map(|row| std::array::from_fn(|i| row[i].get())).collect();
        CounterSnapshot {
            drops: std::array::from_fn(|i| port_drops.iter().map(|row| row[i]).sum()),
            port_drops,
            icmp: std::array::from_fn(|i| self.icmp[i].get()),
            sub_interfaces: self
                .sub_interfaces
                .iter()
                .map(|c| SubInterfaceSnapshot {
                    rx_packets: c.rx_packets.get(),
                    rx_bytes: c.rx_bytes.get(),
                    tx_packets: c.tx_packets.get(),
                    tx_bytes: c.tx_bytes.get(),
                })
                .collect(),
            members: self
                .members
                .iter()
                .map(|c| MemberSnapshot {
                    rx_packets: c.rx_packets.get(),
                    rx_bytes: c.rx_bytes.get(),
                    tx_packets: c.tx_packets.get(),
                    tx_bytes: c.tx_bytes.get(),
                    drops: std::array::from_fn(|i| c.drops[i].get()),
                })
                .collect(),
        }
    }
}

/// One member's counters as plain values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberSnapshot {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Indexed by `DropReason as usize`.
    pub drops: [u64; DropReason::COUNT],
}

impl Default for MemberSnapshot {
    fn default() -> Self {
        MemberSnapshot { rx_packets: 0, rx_bytes: 0, tx_packets: 0, tx_bytes: 0, drops: [0; DropReason::COUNT] }
    }
}

impl MemberSnapshot {
    pub fn drop_count(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Nothing counted yet.
    pub fn is_zero(&self) -> bool {
        self.rx_packets == 0 && self.tx_packets == 0 && self.drops.iter().all(|&d| d == 0)
    }

    fn add(&mut self, b: &MemberSnapshot) {
        self.rx_packets = self.rx_packets.wrapping_add(b.rx_packets);
        self.rx_bytes = self.rx_bytes.wrapping_add(b.rx_bytes);
        self.tx_packets = self.tx_packets.wrapping_add(b.tx_packets);
        self.tx_bytes = self.tx_bytes.wrapping_add(b.tx_bytes);
        for (x, y) in self.drops.iter_mut().zip(b.drops) {
            *x = x.wrapping_add(y);
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubInterfaceSnapshot {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

/// Plain values read from one worker, or summed over several.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Indexed by `DropReason as usize`; `DropReason::ALL` names them. Over every port.
    pub drops: [u64; DropReason::COUNT],
    /// The same by ingress port index, then reason; a last row for frames of no known port.
    pub port_drops: Vec<[u64; DropReason::COUNT]>,
    /// Indexed by `IcmpOutcome as usize`; `IcmpOutcome::ALL` names them.
    pub icmp: [u64; IcmpOutcome::COUNT],
    /// Indexed by dense sub-interface index.
    pub sub_interfaces: Vec<SubInterfaceSnapshot>,
    /// Indexed by member id, `UNKNOWN_MEMBER` last (empty in a `zero` total until added to).
    pub members: Vec<MemberSnapshot>,
}

impl CounterSnapshot {
    pub fn zero(sub_interfaces: usize) -> CounterSnapshot {
        CounterSnapshot {
            drops: [0; DropReason::COUNT],
            port_drops: Vec::new(),
            icmp: [0; IcmpOutcome::COUNT],
            sub_interfaces: vec![SubInterfaceSnapshot::default(); sub_interfaces],
            members: Vec::new(),
        }
    }

    pub fn drop_count(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    pub fn icmp_count(&self, outcome: IcmpOutcome) -> u64 {
        self.icmp[outcome as usize]
    }

    /// Drops of `reason` among the frames received on port index `port`.
    pub fn port_drop_count(&self, port: usize, reason: DropReason) -> u64 {
        self.port_drops.get(port).map_or(0, |row| row[reason as usize])
    }

    /// All drops, whatever the reason.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// `(name, value)` for every drop reason and ICMP outcome, in a stable order.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|r| (r.name(), self.drop_count(*r)))
            .chain(IcmpOutcome::ALL.iter().map(|o| (o.name(), self.icmp_count(*o))))
    }

    /// Adds another snapshot in (wrapping, like the counters themselves).
    pub fn add(&mut self, other: &CounterSnapshot) {
        for (a, b) in self.drops.iter_mut().zip(other.drops) {
            *a = a.wrapping_add(b);
        }
        for (a, b) in self.icmp.iter_mut().zip(other.icmp) {
            *a = a.wrapping_add(b);
        }
        if self.port_drops.len() < other.port_drops.len() {
            self.port_drops.resize(other.port_drops.len(), [0; DropReason::COUNT]);
        }
        for (a, b) in self.port_drops.iter_mut().zip(&other.port_drops) {
            for (x, y) in a.iter_mut().zip(b) {
                *x = x.wrapping_add(*y);
            }
        }
        if self.sub_interfaces.len() < other.sub_interfaces.len() {
            self.sub_interfaces.resize(other.sub_interfaces.len(), SubInterfaceSnapshot::default());
        }
        for (a, b) in self.sub_interfaces.iter_mut().zip(&other.sub_interfaces) {
            a.rx_packets = a.rx_packets.wrapping_add(b.rx_packets);
            a.rx_bytes = a.rx_bytes.wrapping_add(b.rx_bytes);
            a.tx_packets = a.tx_packets.wrapping_add(b.tx_packets);
            a.tx_bytes = a.tx_bytes.wrapping_add(b.tx_bytes);
        }
        if self.members.len() < other.members.len() {
            self.members.resize(other.members.len(), MemberSnapshot::default());
        }
        for (a, b) in self.members.iter_mut().zip(&other.members) {
            a.add(b);
        }
    }

    /// The counters of member `id` (`UNKNOWN_MEMBER` for unknown source MACs).
    pub fn member(&self, id: MemberId) -> MemberSnapshot {
        self.members.get(id as usize).copied().unwrap_or_default()
    }

    /// The totals over workers.
    pub fn sum<'a>(workers: impl IntoIterator<Item = &'a WorkerCounters>) -> CounterSnapshot {
        let mut total = CounterSnapshot::zero(0);
        for w in workers {
            total.add(&w.snapshot());
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_and_snapshots() {
        let c = WorkerCounters::new(2, 2);
        c.count_drop(1, DropReason::NoRoute);
        c.count_drop(0, DropReason::NoRoute);
        c.count_drop(9, DropReason::Blackhole); // no such port: the spare row
        c.count_icmp(IcmpOutcome::Sent);
        c.count_rx(1, 100);
        c.count_tx(0, 60);
        c.count_rx(7, 1); // no such sub-interface: ignored, not a panic
        c.count_member_rx(3, 1, 64);
        c.count_member_tx(3, 70);
        c.count_member_drop(3, DropReason::NoRoute);
        c.count_member_rx(UNKNOWN_MEMBER, 1, 60);
        c.count_member_rx(crate::fib::NO_MEMBER, 1, 60); // not attributed: not counted
        c.count_member_drop(crate::fib::NO_MEMBER, DropReason::NoRoute);
        let s = c.snapshot();
        assert_eq!(s.drop_count(DropReason::NoRoute), 2);
        assert_eq!(s.total_drops(), 3);
        assert_eq!(c.drops(DropReason::NoRoute), 2);
        assert_eq!(s.port_drop_count(0, DropReason::NoRoute), 1);
        assert_eq!(s.port_drop_count(1, DropReason::NoRoute), 1);
        assert_eq!(s.port_drop_count(2, DropReason::Blackhole), 1);
        assert_eq!(s.port_drop_count(1, DropReason::Blackhole), 0);
        assert_eq!(s.port_drop_count(3, DropReason::NoRoute), 0);
        assert_eq!(s.icmp_count(IcmpOutcome::Sent), 1);
        assert_eq!(s.sub_interfaces[1], SubInterfaceSnapshot { rx_packets: 1, rx_bytes: 100, tx_packets: 0, tx_bytes: 0 });
        assert_eq!(s.sub_interfaces[0].tx_bytes, 60);
        assert!(s.named().any(|(n, v)| n == "no_route" && v == 2));
        assert!(s.named().any(|(n, v)| n == "icmp_sent" && v == 1));
        let m = s.member(3);
        assert_eq!((m.rx_packets, m.rx_bytes, m.tx_packets, m.tx_bytes), (1, 64, 1, 70));
        assert_eq!(m.drop_count(DropReason::NoRoute), 1);
        assert_eq!(s.member(UNKNOWN_MEMBER).rx_packets, 1);
        assert_eq!(s.members.iter().map(|m| m.rx_packets).sum::<u64>(), 2);
        assert_eq!(s.members.iter().map(|m| m.drops.iter().sum::<u64>()).sum::<u64>(), 1);
        assert!(s.member(4).is_zero());
    }

    #[test]
    fn sum_over_workers() {
        let a = WorkerCounters::new(1, 1);
        let b = WorkerCounters::new(1, 1);
        a.count_rx(0, 10);
        b.count_rx(0, 20);
        b.count_drop(0, DropReason::Blackhole);
        a.count_drop(0, DropReason::Blackhole);
        a.count_member_rx(2, 1, 100);
        b.count_member_rx(2, 1, 50);
        let s = CounterSnapshot::sum([&a, &b]);
        assert_eq!((s.member(2).rx_packets, s.member(2).rx_bytes), (2, 150));
        assert_eq!(s.sub_interfaces[0].rx_packets, 2);
        assert_eq!(s.sub_interfaces[0].rx_bytes, 30);
        assert_eq!(s.drop_count(DropReason::Blackhole), 2);
        assert_eq!(s.port_drop_count(0, DropReason::Blackhole), 2);
    }

    #[test]
    fn read_while_written() {
        let c = Arc::new(WorkerCounters::new(1, 1));
        let writer = {
            let c = c.clone();
            std::thread::spawn(move || {
                for _ in 0..100_000 {
                    c.count_rx(0, 64);
                }
            })
        };
        let mut last = 0;
        while !writer.is_finished() {
            let now = c.snapshot().sub_interfaces[0].rx_packets;
            assert!(now >= last, "counters only move forward");
            last = now;
        }
        writer.join().unwrap();
        let s = c.snapshot();
        assert_eq!(s.sub_interfaces[0].rx_packets, 100_000);
        assert_eq!(s.sub_interfaces[0].rx_bytes, 6_400_000);
    }
}
