//! The forwarding information base: IPv4 and IPv6 longest-prefix-match tables mapping a
//! prefix to a route target (a next-hop group, or blackhole / unreachable / local),
//! next-hop groups of weighted members, and adjacencies (egress port, VLAN, MACs).
//!
//! One writer (`Fib`) applies validated batches while any number of readers (`FibReader`,
//! one per worker) look up without locks. Routes point at groups, so re-pointing a group
//! moves every route that uses it with one pointer store. Removed groups, adjacencies and
//! trie nodes are reclaimed after a QSBR grace period (see `qsbr`).

pub mod blackholes;
mod dir;
pub mod members;
mod prefix;

use rustc_hash::FxHashMap as HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

pub use dir::TableStats;
pub use prefix::{Family, Prefix};

use crate::qsbr::{Qsbr, QsbrReader, RcuArray, RetireList};
pub use blackholes::{BlackholeTable, BLACKHOLE_SLOTS, UNCOUNTED_SLOT};
use dir::{DirShared, DirTable, VALID, VALUE_MASK};
pub use members::{MemberId, MemberTable, SourceFilter, MAX_MEMBERS, MAX_MEMBER_SOURCES, NO_MEMBER, UNKNOWN_MEMBER};

pub type GroupId = u32;
pub type AdjacencyId = u32;

/// Route target codes above the largest group id.
const CODE_BLACKHOLE: u32 = VALUE_MASK;
const CODE_UNREACHABLE: u32 = VALUE_MASK - 1;
const CODE_LOCAL: u32 = VALUE_MASK - 2;
const CODE_GLEAN: u32 = VALUE_MASK - 3;
/// Group ids must stay below the special codes.
pub const MAX_GROUPS: u32 = CODE_GLEAN;

/// What a route does with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteTarget {
    /// Forward through a member of this next-hop group.
    Group(GroupId),
    /// Drop silently (and count).
    Blackhole,
    /// Drop and answer with ICMP destination unreachable.
    Unreachable,
    /// Addressed to the router itself: hand to the kernel.
    Local,
    /// An attached subnet with no host route for this address yet: drop (counted as
    /// `glean`) and ask the agent to resolve the destination (see `pipeline::glean`).
    Glean,
}

impl RouteTarget {
    const fn code(self) -> u32 {
        match self {
            RouteTarget::Group(g) => g,
            RouteTarget::Blackhole => CODE_BLACKHOLE,
            RouteTarget::Unreachable => CODE_UNREACHABLE,
            RouteTarget::Local => CODE_LOCAL,
            RouteTarget::Glean => CODE_GLEAN,
        }
    }

    #[inline(always)]
    const fn from_code(code: u32) -> RouteTarget {
        match code {
            CODE_BLACKHOLE => RouteTarget::Blackhole,
            CODE_UNREACHABLE => RouteTarget::Unreachable,
            CODE_LOCAL => RouteTarget::Local,
            CODE_GLEAN => RouteTarget::Glean,
            g => RouteTarget::Group(g),
        }
    }

    /// The length of the prefix whose route answered, from a table entry as returned by
    /// the batch lookups (0 for the default route, and for no route).
    #[inline(always)]
    pub const fn entry_prefix_len(entry: u32) -> u8 {
        dir::entry_depth(entry) as u8
    }

    /// The group of a table entry as returned by the batch lookups, when its route is to
    /// one: `from_entry` for the common case, one sign test and one compare.
    #[inline(always)]
    pub const fn group_of_entry(entry: u32) -> Option<GroupId> {
        let code = entry & VALUE_MASK;
        if entry & VALID != 0 && code < CODE_GLEAN {
            Some(code)
        } else {
            None
        }
    }

    /// Decodes a table entry as returned by the batch lookups.
    #[inline(always)]
    pub const fn from_entry(entry: u32) -> Option<RouteTarget> {
        if entry & VALID == 0 {
            None
        } else {
            Some(RouteTarget::from_code(entry & VALUE_MASK))
        }
    }
}

impl fmt::Display for RouteTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteTarget::Group(g) => write!(f, "group {g}"),
            RouteTarget::Blackhole => f.write_str("blackhole"),
            RouteTarget::Unreachable => f.write_str("unreachable"),
            RouteTarget::Local => f.write_str("local"),
            RouteTarget::Glean => f.write_str("glean"),
        }
    }
}

/// Where and how a frame leaves: egress port, 802.1Q VLAN (0 = untagged), MACs. Laid out
/// as declared, the two MACs in an Ethernet header's order, so that the fast path copies
/// them as one run of 12 octets (`Adjacency::macs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct Adjacency {
    pub port: u16,
    pub vlan: u16,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
}

impl Adjacency {
    /// Destination and source MAC, the first 12 octets of the frame's link header, as the
    /// little-endian words of octets 0-7 and 8-11 (each one load from this layout).
    #[inline(always)]
    pub fn macs(&self) -> (u64, u32) {
        let (d, s) = (&self.dst_mac, &self.src_mac);
        (u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], s[0], s[1]]), u32::from_le_bytes([s[2], s[3], s[4], s[5]]))
    }
}

/// An exchange member's router as the engine knows it: its MAC on a sub-interface (port
/// index, VLAN 0 for untagged). Frames from the MAC count as the member's rx; frames to an
/// adjacency whose destination MAC it is count as its tx.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Member {
    pub port: u16,
    pub vlan: u16,
    pub mac: [u8; 6],
}

/// One member of a next-hop group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NextHop {
    pub adjacency: AdjacencyId,
    pub weight: u32,
}

pub const MAX_GROUP_MEMBERS: usize = 256;
pub const MAX_WEIGHT: u32 = 65_535;
/// Buckets a weighted group is spread over when its weights add up to more.
const MAX_BUCKETS: u32 = 1024;

/// A group as readers see it: members laid out in proportion to their weights, one picked
/// by the flow hash, so one flow always takes one path; and the sub-interfaces its members
/// leave by, for strict reverse-path checks (RFC 3704 section 2.2), worked out when the
/// group or one of its adjacencies changes, never per packet.
struct GroupBuckets {
    buckets: Box<[AdjacencyId]>,
    /// `egress_key(port, vlan)` of every member, sorted, each once: usually one or a few.
    egress: Box<[u32]>,
}

/// A sub-interface as one word, the key of `GroupBuckets::egress`.
#[inline(always)]
const fn egress_key(port: u16, vlan: u16) -> u32 {
    (port as u32) << 16 | vlan as u32
}

/// One operation of a write batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FibOp {
    SetAdjacency {
        id: AdjacencyId,
        adjacency: Adjacency,
    },
    DeleteAdjacency {
        id: AdjacencyId,
    },
    SetGroup {
        id: GroupId,
        members: Vec<NextHop>,
    },
    DeleteGroup {
        id: GroupId,
    },
    AddRoute {
        prefix: Prefix,
        target: RouteTarget,
    },
    DeleteRoute {
        prefix: Prefix,
    },
    /// `sources`: the member's source filter (BCP 38), the only prefixes its frames may
    /// come from; None for no filter.
    SetMember {
        id: MemberId,
        member: Member,
        sources: Option<Box<[Prefix]>>,
    },
    DeleteMember {
        id: MemberId,
    },
}

/// Sizes for the preallocated tables. Writes beyond them are refused, never capped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FibConfig {
    pub v4_routes: usize,
    pub v6_routes: usize,
    /// 256-entry trie nodes for IPv4 routes longer than /24 (1 KiB each).
    pub v4_nodes: u32,
    /// 256-entry trie nodes for IPv6 routes longer than /16 (1 KiB each; the pool is
    /// reserved address space, and only nodes in use take memory).
    pub v6_nodes: u32,
    pub groups: u32,
    pub adjacencies: u32,
}

impl Default for FibConfig {
    fn default() -> Self {
        FibConfig { v4_routes: 2_000_000, v6_routes: 500_000, v4_nodes: 32_768, v6_nodes: 1 << 20, groups: 65_536, adjacencies: 65_536 }
    }
}

/// One bad entry of a batch: its position and what is wrong, or a batch-wide problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryError {
    pub index: Option<usize>,
    pub message: String,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(i) => write!(f, "entry {i}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// A refused batch: every problem found; nothing of the batch was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchError {
    pub errors: Vec<EntryError>,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for BatchError {}

/// A `FibConfig` asking for more than the tables can address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// More groups than route entries can name (`MAX_GROUPS`).
    TooManyGroups { groups: u32 },
    /// More trie nodes of one family (`field` is `v4_nodes` or `v6_nodes`) than an entry
    /// can index.
    TooManyNodes { field: &'static str, nodes: u32 },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::TooManyGroups { groups } => write!(f, "groups: {groups} exceeds the largest supported {MAX_GROUPS}"),
            ConfigError::TooManyNodes { field, nodes } => write!(f, "{field}: {nodes} exceeds the largest supported {}", VALUE_MASK + 1),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Sizes of the whole FIB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FibStats {
    pub v4: TableStats,
    pub v6: TableStats,
    pub groups: usize,
    pub group_capacity: usize,
    pub adjacencies: usize,
    pub adjacency_capacity: usize,
}

/// The FIB's QSBR domain. Private, so only the FIB's own readers exist: a `FibReader`
/// reads only what its grace periods protect, and nothing outside can hold them up.
struct FibDomain;

/// What readers share with the writer.
struct FibShared {
    qsbr: Qsbr<FibDomain>,
    v4: Arc<DirShared>,
    v6: Arc<DirShared>,
    groups: RcuArray<GroupBuckets, FibDomain>,
    adjacencies: RcuArray<Adjacency, FibDomain>,
    /// One slot: the member tables, rebuilt whole when members change.
    members: RcuArray<MemberTable, FibDomain>,
    /// By adjacency id: the member whose MAC the adjacency sends to, or NO_MEMBER. Set by
    /// the writer when adjacencies or members change, read per forwarded frame.
    adjacency_member: Box<[AtomicU32]>,
    /// By adjacency id: set when a frame left by it since the agent last took the bit
    /// (`Fib::take_adjacency_used`); the agent ages host adjacencies out by it, as a
    /// hardware router's hit bit. Written by a worker only when clear, so the line stays
    /// shared while traffic flows.
    adjacency_used: Box<[AtomicBool]>,
    /// One slot: every blackhole route's counter slot, rebuilt when they change.
    blackholes: RcuArray<BlackholeTable, FibDomain>,
}

/// The writer. Apply batches with `apply`; hand `reader()`s to forwarding threads.
pub struct Fib {
    shared: Arc<FibShared>,
    v4: DirTable<u32>,
    v6: DirTable<u128>,
    groups: HashMap<GroupId, Vec<NextHop>>,
    /// Routes using each group; a used group cannot be deleted.
    group_refs: HashMap<GroupId, usize>,
    adjacencies: HashMap<AdjacencyId, Adjacency>,
    /// Groups using each adjacency; a used adjacency cannot be deleted.
    adjacency_refs: HashMap<AdjacencyId, usize>,
    retired_groups: RetireList<GroupBuckets, FibDomain>,
    retired_adjacencies: RetireList<Adjacency, FibDomain>,
    members: HashMap<MemberId, Member>,
    /// The source filters of the members that have one.
    member_sources: HashMap<MemberId, Box<[Prefix]>>,
    /// The inverse of `members`: one member per (port, VLAN, MAC).
    member_ids: HashMap<Member, MemberId>,
    retired_member_tables: RetireList<MemberTable, FibDomain>,
    /// The counter slot of every counted blackhole route; slots are handed out after the
    /// last one given (wrapping), so a freed slot's count is not a new route's while slots
    /// remain. A blackhole route added while every slot was taken has no entry: it counts
    /// in UNCOUNTED_SLOT, and a table of a million blackholes costs no million entries here
    /// nor in the published `BlackholeTable`.
    blackhole_slots: HashMap<Prefix, u32>,
    /// By slot: held by a route (UNCOUNTED_SLOT, shared by the overflow, never is).
    blackhole_slot_used: Vec<bool>,
    last_blackhole_slot: u32,
    retired_blackhole_tables: RetireList<BlackholeTable, FibDomain>,
    /// The writer's copy of the published blackhole table (the counted routes), which the
    /// next batch's changes are merged into (`BlackholeTable::changed`).
    blackhole_table: BlackholeTable,
    config: FibConfig,
}

impl Fib {
    pub fn new(config: FibConfig) -> Result<Fib, ConfigError> {
        Fib::with_root_bits(config, 24, 16)
    }

    /// The same tables with other root strides: tests use a small IPv4 root so that
    /// thousands of cases with /0../8 routes (16 M root writes each at /24) stay fast,
    /// and so exercise more node levels with the same code. Public for the fuzz targets
    /// (dataplane/fuzz), which build a FIB per input.
    #[doc(hidden)]
    pub fn with_root_bits(config: FibConfig, v4_root: u32, v6_root: u32) -> Result<Fib, ConfigError> {
        if config.groups > MAX_GROUPS {
            return Err(ConfigError::TooManyGroups { groups: config.groups });
        }
        for (field, nodes) in [("v4_nodes", config.v4_nodes), ("v6_nodes", config.v6_nodes)] {
            if nodes > VALUE_MASK + 1 {
                return Err(ConfigError::TooManyNodes { field, nodes });
            }
        }
        let v4 = DirTable::new(v4_root, config.v4_routes, config.v4_nodes);
        let v6 = DirTable::new(v6_root, config.v6_routes, config.v6_nodes);
        let qsbr = Qsbr::domain();
        let shared = Arc::new(FibShared {
            v4: v4.shared.clone(),
            v6: v6.shared.clone(),
            groups: RcuArray::new(&qsbr, config.groups as usize),
            adjacencies: RcuArray::new(&qsbr, config.adjacencies as usize),
            members: RcuArray::new(&qsbr, 1),
            adjacency_member: (0..config.adjacencies).map(|_| AtomicU32::new(NO_MEMBER)).collect(),
            adjacency_used: (0..config.adjacencies).map(|_| AtomicBool::new(false)).collect(),
            blackholes: RcuArray::new(&qsbr, 1),
            qsbr,
        });
        Ok(Fib {
            shared,
            v4,
            v6,
            groups: HashMap::default(),
            group_refs: HashMap::default(),
            adjacencies: HashMap::default(),
            adjacency_refs: HashMap::default(),
            retired_groups: RetireList::default(),
            retired_adjacencies: RetireList::default(),
            members: HashMap::default(),
            member_sources: HashMap::default(),
            member_ids: HashMap::default(),
            retired_member_tables: RetireList::default(),
            blackhole_slots: HashMap::default(),
            blackhole_slot_used: vec![false; BLACKHOLE_SLOTS as usize],
            last_blackhole_slot: UNCOUNTED_SLOT - 1,
            retired_blackhole_tables: RetireList::default(),
            blackhole_table: BlackholeTable::default(),
            config,
        })
    }

    pub fn config(&self) -> FibConfig {
        self.config
    }

    /// Gives both roots their memory now, as a router's FIB does when it starts (the IPv4
    /// root is 64 MiB at 24 bits, and a full table writes all of it): the first table
    /// loaded then costs what later ones do. Unit tests, which make many FIBs, skip it.
    pub fn prefault(&self) {
        self.v4.prefault_root();
        self.v6.prefault_root();
    }

    /// A lock-free reader for one forwarding thread.
    pub fn reader(&self) -> FibReader {
        FibReader { shared: self.shared.clone(), qsbr: self.shared.qsbr.register() }
    }

    pub fn stats(&self) -> FibStats {
        FibStats {
            v4: self.v4.stats(),
            v6: self.v6.stats(),
            groups: self.groups.len(),
            group_capacity: self.config.groups as usize,
            adjacencies: self.adjacencies.len(),
            adjacency_capacity: self.config.adjacencies as usize,
        }
    }

    /// The installed target of exactly this prefix (not a longest-prefix lookup).
    pub fn route(&self, prefix: &Prefix) -> Option<RouteTarget> {
        let code = match prefix.family() {
            Family::V4 => self.v4.get(prefix.addr_v4(), prefix.len() as u32),
            Family::V6 => self.v6.get(prefix.addr_v6(), prefix.len() as u32),
        }?;
        Some(RouteTarget::from_code(code))
    }

    /// Every installed route of a family, shortest prefixes first.
    pub fn routes(&self, family: Family) -> Vec<(Prefix, RouteTarget)> {
        match family {
            Family::V4 => self.v4.rules().map(|(k, l, c)| (Prefix::v4(k, l as u8), RouteTarget::from_code(c))).collect(),
            Family::V6 => self.v6.rules().map(|(k, l, c)| (Prefix::v6(k, l as u8), RouteTarget::from_code(c))).collect(),
        }
    }

    pub fn group(&self, id: GroupId) -> Option<&[NextHop]> {
        self.groups.get(&id).map(|v| v.as_slice())
    }

    pub fn groups(&self) -> impl Iterator<Item = (GroupId, &[NextHop])> {
        self.groups.iter().map(|(k, v)| (*k, v.as_slice()))
    }

    pub fn adjacency(&self, id: AdjacencyId) -> Option<Adjacency> {
        self.adjacencies.get(&id).copied()
    }

    pub fn adjacencies(&self) -> impl Iterator<Item = (AdjacencyId, Adjacency)> + '_ {
        self.adjacencies.iter().map(|(k, v)| (*k, *v))
    }

    pub fn member(&self, id: MemberId) -> Option<Member> {
        self.members.get(&id).copied()
    }

    /// A member's source filter (BCP 38), if it has one.
    pub fn member_sources(&self, id: MemberId) -> Option<&[Prefix]> {
        self.member_sources.get(&id).map(|p| &p[..])
    }

    pub fn members(&self) -> impl Iterator<Item = (MemberId, Member)> + '_ {
        self.members.iter().map(|(k, v)| (*k, *v))
    }

    /// The counter slot of a blackhole route (`UNCOUNTED_SLOT` when every slot was taken).
    pub fn blackhole_slot(&self, prefix: &Prefix) -> Option<u32> {
        match self.blackhole_slots.get(prefix) {
            Some(slot) => Some(*slot),
            None => (self.route(prefix) == Some(RouteTarget::Blackhole)).then_some(UNCOUNTED_SLOT),
        }
    }

    /// The member an adjacency sends to (its destination MAC on its sub-interface), if any.
    pub fn adjacency_member(&self, id: AdjacencyId) -> Option<MemberId> {
        let m = self.shared.adjacency_member.get(id as usize)?.load(Ordering::Relaxed);
        (m != NO_MEMBER).then_some(m)
    }

    /// Whether a frame left by adjacency `id` since the last call (false for an unknown id);
    /// clears the bit.
    pub fn take_adjacency_used(&self, id: AdjacencyId) -> bool {
        // Relaxed: a hint for ageing; a frame marked just after the swap is seen next time.
        self.shared.adjacency_used.get(id as usize).is_some_and(|u| u.swap(false, Ordering::Relaxed))
    }

    /// Validates the whole batch, then applies it in order. On error nothing is applied
    /// and every bad entry is named.
    pub fn apply(&mut self, ops: &[FibOp]) -> Result<(), BatchError> {
        self.validate(ops)?;
        let mut members_changed = false;
        let blackholes = self.blackhole_slots.len();
        let mut blackholes_changed = false;
        let mut blackholes_touched: Vec<Prefix> = Vec::new();
        for op in ops {
            let old = self.apply_one(op);
            if self.track_blackhole(op, old) {
                blackholes_changed = true;
                if let FibOp::AddRoute { prefix, .. } | FibOp::DeleteRoute { prefix } = op {
                    blackholes_touched.push(*prefix);
                }
            }
            match op {
                FibOp::SetMember { .. } | FibOp::DeleteMember { .. } => members_changed = true,
                FibOp::SetAdjacency { id, adjacency } if !members_changed => self.map_adjacency(*id, Some(adjacency)),
                FibOp::DeleteAdjacency { id } if !members_changed => self.map_adjacency(*id, None),
                _ => {}
            }
        }
        if members_changed {
            // Off the packet path and rare: rebuild the tables whole and map every adjacency
            // again (a scan of at most `config.adjacencies`).
            let table = MemberTable::build_with_filters(
                self.members.iter().map(|(id, m)| (*id, m)),
                self.member_sources.iter().map(|(id, p)| (*id, &p[..])),
            );
            let old = self.shared.members.replace(0, Some(Box::new(table)));
            self.retired_member_tables.push(old);
            for id in 0..self.config.adjacencies {
                let a = self.adjacencies.get(&id).copied();
                self.map_adjacency(id, a.as_ref());
            }
        }
        if blackholes_changed || blackholes != self.blackhole_slots.len() {
            // Each touched prefix once, as the batch left it (a route may come and go in it).
            blackholes_touched.sort_unstable();
            blackholes_touched.dedup();
            let changes: Vec<(Prefix, Option<u32>)> =
                blackholes_touched.iter().map(|p| (*p, self.blackhole_slots.get(p).copied())).collect();
            self.blackhole_table = self.blackhole_table.changed(&changes);
            let old = self.shared.blackholes.replace(0, Some(Box::new(self.blackhole_table.clone())));
            self.retired_blackhole_tables.push(old);
        }
        self.reclaim(false);
        Ok(())
    }

    /// After `op` replaced route target `old` (None: no route): gives a blackhole route it
    /// added a counter slot, if one is free, and frees the slot of a counted one it removed
    /// or re-targeted; true when the counted routes changed (the published table's).
    fn track_blackhole(&mut self, op: &FibOp, old: Option<RouteTarget>) -> bool {
        let (prefix, blackhole) = match op {
            FibOp::AddRoute { prefix, target } => (prefix, *target == RouteTarget::Blackhole),
            FibOp::DeleteRoute { prefix } => (prefix, false),
            _ => return false,
        };
        let had = old == Some(RouteTarget::Blackhole);
        if blackhole && !had {
            let slot = self.next_blackhole_slot();
            if slot == UNCOUNTED_SLOT {
                return false; // counted by the overflow: nothing to record or publish
            }
            self.blackhole_slots.insert(*prefix, slot);
            return true;
        }
        if !blackhole && had {
            if let Some(slot) = self.blackhole_slots.remove(prefix) {
                if let Some(used) = self.blackhole_slot_used.get_mut(slot as usize) {
                    *used = false;
                }
                return true;
            }
        }
        false
    }

    /// The first slot after the last one handed out that no route holds, or UNCOUNTED_SLOT
    /// when all are taken.
    fn next_blackhole_slot(&mut self) -> u32 {
        if self.blackhole_slots.len() >= UNCOUNTED_SLOT as usize {
            return UNCOUNTED_SLOT;
        }
        let mut s = self.last_blackhole_slot;
        for _ in 0..UNCOUNTED_SLOT {
            s = (s + 1) % UNCOUNTED_SLOT;
            if let Some(used) = self.blackhole_slot_used.get_mut(s as usize) {
                if !*used {
                    *used = true;
                    self.last_blackhole_slot = s;
                    return s;
                }
            }
        }
        UNCOUNTED_SLOT
    }

    /// Points adjacency `id` at the member its destination MAC belongs to, or at none.
    fn map_adjacency(&self, id: AdjacencyId, adjacency: Option<&Adjacency>) {
        let member = adjacency
            .and_then(|a| self.member_ids.get(&Member { port: a.port, vlan: a.vlan, mac: a.dst_mac }))
            .copied()
            .unwrap_or(NO_MEMBER);
        if let Some(slot) = self.shared.adjacency_member.get(id as usize) {
            // Relaxed: a u32 on its own; a frame counted to the old member while a batch is
            // applied is as right as one forwarded by the old adjacency.
            slot.store(member, Ordering::Relaxed);
        }
    }

    /// Frees what readers can no longer see; with `wait`, waits out every grace period.
    pub fn reclaim(&mut self, wait: bool) {
        let q = self.shared.qsbr;
        self.v4.reclaim(&q, wait);
        self.v6.reclaim(&q, wait);
        self.retired_groups.reclaim(wait);
        self.retired_adjacencies.reclaim(wait);
        self.retired_member_tables.reclaim(wait);
        self.retired_blackhole_tables.reclaim(wait);
    }

    /// Checks a batch as `apply` would, without applying it.
    pub fn validate(&mut self, ops: &[FibOp]) -> Result<(), BatchError> {
        let mut errors = Vec::new();
        let mut err = |i: usize, m: String| errors.push(EntryError { index: Some(i), message: m });
        // The batch's view of objects it touches: Some(x) = present after the op, None = absent.
        let mut adj_after: HashMap<AdjacencyId, bool> = HashMap::default();
        let mut group_after: HashMap<GroupId, Option<&[NextHop]>> = HashMap::default();
        let mut group_ref_delta: HashMap<GroupId, isize> = HashMap::default();
        let mut adj_ref_delta: HashMap<AdjacencyId, isize> = HashMap::default();
        // Objects other than routes, by the entry that first changes each. Routes named
        // twice are found by sorting their prefixes instead: a map of every route missed the
        // cache on each insert (most of validate's fifth of a FIB-only agent's intake of a
        // table), and a table's batches come sorted, which the sort takes in one pass.
        let mut seen: HashMap<Object, usize> = HashMap::default();
        let mut routes: Vec<(Prefix, u32)> = ops
            .iter()
            .enumerate()
            .filter_map(|(i, op)| match op {
                FibOp::AddRoute { prefix, .. } | FibOp::DeleteRoute { prefix } => Some((*prefix, i as u32)),
                _ => None,
            })
            .collect();
        routes.sort_unstable();
        let mut repeated: HashMap<usize, usize> = HashMap::default(); // entry -> first entry
        for same in routes.chunk_by(|a, b| a.0 == b.0).filter(|same| same.len() > 1) {
            repeated.extend(same[1..].iter().map(|&(_, i)| (i as usize, same[0].1 as usize)));
        }
        drop(routes);
        // A route's old target matters to a DeleteGroup's reference count and to the room
        // left in its table, so it is looked up (a miss in a map of a million) only when the
        // batch deletes a group or could fill the table were every route it adds new.
        let family = |p: &Prefix| (p.family() == Family::V6) as usize; // index of the two below
        let mut adds = [0usize; 2];
        let mut deletes_group = false;
        for op in ops {
            match op {
                FibOp::AddRoute { prefix, .. } => adds[family(prefix)] += 1,
                FibOp::DeleteGroup { .. } => deletes_group = true,
                _ => {}
            }
        }
        let old_matters = [
            deletes_group || self.v4.routes() + adds[0] > self.v4.route_capacity(),
            deletes_group || self.v6.routes() + adds[1] > self.v6.route_capacity(),
        ];
        // Members the batch sets or deletes, and who holds each (port, VLAN, MAC) it sets.
        let mut member_after: HashMap<MemberId, Option<Member>> = HashMap::default();
        let mut key_setter: HashMap<Member, (MemberId, usize)> = HashMap::default();
        let (mut v4_routes, mut v6_routes) = (self.v4.routes() as isize, self.v6.routes() as isize);
        let (mut v4_adds, mut v4_dels, mut v6_adds, mut v6_dels) = (vec![], vec![], vec![], vec![]);

        for (i, op) in ops.iter().enumerate() {
            let key = Object::of(op);
            let first = match key {
                Object::Route(_) => repeated.get(&i).copied(),
                _ => seen.get(&key).copied(),
            };
            if let Some(first) = first {
                err(i, format!("{key}: already changed by entry {first} of this batch (one change per object)"));
                continue;
            }
            if !matches!(key, Object::Route(_)) {
                seen.insert(key, i);
            }
            match op {
                FibOp::SetAdjacency { id, .. } => {
                    if *id >= self.config.adjacencies {
                        err(i, format!("adjacency {id}: id exceeds the table's {} adjacencies", self.config.adjacencies));
                        continue;
                    }
                    adj_after.insert(*id, true);
                }
                FibOp::DeleteAdjacency { id } => {
                    adj_after.insert(*id, false);
                }
                FibOp::SetGroup { id, members } => {
                    if *id >= self.config.groups {
                        err(i, format!("group {id}: id exceeds the table's {} groups", self.config.groups));
                        continue;
                    }
                    if members.is_empty() {
                        err(i, format!("group {id}: no members (a group needs at least one next hop)"));
                        continue;
                    }
                    if members.len() > MAX_GROUP_MEMBERS {
                        err(i, format!("group {id}: {} members exceed the limit of {MAX_GROUP_MEMBERS}", members.len()));
                        continue;
                    }
                    let mut bad = false;
                    for m in members {
                        if m.weight == 0 || m.weight > MAX_WEIGHT {
                            err(
                                i,
                                format!(
                                    "group {id}: member adjacency {} has weight {}; weights are 1 to {MAX_WEIGHT}",
                                    m.adjacency, m.weight
                                ),
                            );
                            bad = true;
                        }
                        let present = adj_after.get(&m.adjacency).copied().unwrap_or_else(|| self.adjacencies.contains_key(&m.adjacency));
                        if !present {
                            err(i, format!("group {id}: member adjacency {} does not exist", m.adjacency));
                            bad = true;
                        }
                    }
                    let mut ids: Vec<_> = members.iter().map(|m| m.adjacency).collect();
                    ids.sort_unstable();
                    if ids.windows(2).any(|w| w[0] == w[1]) {
                        err(i, format!("group {id}: an adjacency is listed twice (give it a larger weight instead)"));
                        bad = true;
                    }
                    if bad {
                        continue;
                    }
                    if let Some(old) = group_after.get(id).copied().unwrap_or_else(|| self.groups.get(id).map(|v| v.as_slice())) {
                        for m in old {
                            *adj_ref_delta.entry(m.adjacency).or_default() -= 1;
                        }
                    }
                    for m in members {
                        *adj_ref_delta.entry(m.adjacency).or_default() += 1;
                    }
                    group_after.insert(*id, Some(members));
                }
                FibOp::DeleteGroup { id } => {
                    if let Some(old) = group_after.get(id).copied().unwrap_or_else(|| self.groups.get(id).map(|v| v.as_slice())) {
                        for m in old {
                            *adj_ref_delta.entry(m.adjacency).or_default() -= 1;
                        }
                    }
                    group_after.insert(*id, None);
                }
                FibOp::AddRoute { prefix, target } => {
                    if let Err(m) = prefix.check() {
                        err(i, m);
                        continue;
                    }
                    if let RouteTarget::Group(g) = target {
                        let present = group_after.get(g).map(|x| x.is_some()).unwrap_or_else(|| self.groups.contains_key(g));
                        if !present {
                            err(i, format!("route {prefix}: group {g} does not exist"));
                            continue;
                        }
                        *group_ref_delta.entry(*g).or_default() += 1;
                    }
                    // Not looked up, a route counts as new: the table has room even so.
                    let old = if old_matters[family(prefix)] { self.route(prefix) } else { None };
                    if let Some(RouteTarget::Group(g)) = old {
                        *group_ref_delta.entry(g).or_default() -= 1;
                    }
                    let k = (prefix.len() as u32, prefix.family());
                    match k.1 {
                        Family::V4 => {
                            v4_adds.push((prefix.addr_v4(), k.0));
                            v4_routes += old.is_none() as isize;
                        }
                        Family::V6 => {
                            v6_adds.push((prefix.addr_v6(), k.0));
                            v6_routes += old.is_none() as isize;
                        }
                    }
                    let (routes, cap) = match k.1 {
                        Family::V4 => (v4_routes, self.v4.route_capacity()),
                        Family::V6 => (v6_routes, self.v6.route_capacity()),
                    };
                    if routes as usize > cap {
                        err(i, format!("route {prefix}: {} table full ({cap} routes; raise the capacity)", k.1));
                    }
                }
                FibOp::SetMember { id, member, sources } => {
                    if let Err(m) = check_member(*id, member) {
                        err(i, m);
                        continue;
                    }
                    if let Some(sources) = sources {
                        if sources.len() > MAX_MEMBER_SOURCES {
                            err(i, format!("member {id}: {} source prefixes exceed the limit of {MAX_MEMBER_SOURCES}", sources.len()));
                            continue;
                        }
                        if let Some(m) = sources.iter().find_map(|p| p.check().err()) {
                            err(i, format!("member {id}: source filter: {m}"));
                            continue;
                        }
                    }
                    if let Some((other, first)) = key_setter.get(member) {
                        err(
                            i,
                            format!(
                                "member {id}: MAC {} on port {} VLAN {} is also member {other}'s (entry {first})",
                                mac_text(&member.mac),
                                member.port,
                                member.vlan
                            ),
                        );
                        continue;
                    }
                    key_setter.insert(*member, (*id, i));
                    member_after.insert(*id, Some(*member));
                }
                FibOp::DeleteMember { id } => {
                    member_after.insert(*id, None);
                }
                FibOp::DeleteRoute { prefix } => {
                    if let Err(m) = prefix.check() {
                        err(i, m);
                        continue;
                    }
                    if let Some(old) = self.route(prefix) {
                        if let RouteTarget::Group(g) = old {
                            *group_ref_delta.entry(g).or_default() -= 1;
                        }
                        match prefix.family() {
                            Family::V4 => {
                                v4_routes -= 1;
                                v4_dels.push((prefix.addr_v4(), prefix.len() as u32));
                            }
                            Family::V6 => {
                                v6_routes -= 1;
                                v6_dels.push((prefix.addr_v6(), prefix.len() as u32));
                            }
                        }
                    }
                }
            }
        }

        // A MAC set by the batch that a member the batch leaves alone still holds.
        for (member, (id, i)) in &key_setter {
            if let Some(&holder) = self.member_ids.get(member) {
                if holder != *id && !member_after.contains_key(&holder) {
                    err(
                        *i,
                        format!(
                            "member {id}: MAC {} on port {} VLAN {} is member {holder}'s",
                            mac_text(&member.mac),
                            member.port,
                            member.vlan
                        ),
                    );
                }
            }
        }

        // References still held after the whole batch.
        for (i, op) in ops.iter().enumerate() {
            match op {
                FibOp::DeleteGroup { id } if seen.get(&Object::Group(*id)) == Some(&i) => {
                    let refs = *self.group_refs.get(id).unwrap_or(&0) as isize + group_ref_delta.get(id).copied().unwrap_or(0);
                    if refs > 0 {
                        err(i, format!("group {id}: still used by {refs} route(s); delete or re-point them first"));
                    }
                }
                FibOp::DeleteAdjacency { id } if seen.get(&Object::Adjacency(*id)) == Some(&i) => {
                    let refs = *self.adjacency_refs.get(id).unwrap_or(&0) as isize + adj_ref_delta.get(id).copied().unwrap_or(0);
                    if refs > 0 {
                        err(i, format!("adjacency {id}: still used by {refs} group(s); remove it from them first"));
                    }
                }
                _ => {}
            }
        }

        if errors.is_empty() {
            let q = self.shared.qsbr;
            for (fam, table_needed, avail, name) in [
                (Family::V4, self.v4.nodes_needed(&v4_adds, &v4_dels), self.v4.nodes_available(), "v4_nodes"),
                (Family::V6, self.v6.nodes_needed(&v6_adds, &v6_dels), self.v6.nodes_available(), "v6_nodes"),
            ] {
                if table_needed <= avail.0 {
                    continue;
                }
                if table_needed <= avail.1 {
                    match fam {
                        Family::V4 => self.v4.reclaim(&q, true),
                        Family::V6 => self.v6.reclaim(&q, true),
                    }
                    continue;
                }
                errors.push(EntryError {
                    index: None,
                    message: format!(
                        "{fam} table full: the batch needs up to {table_needed} more trie nodes and {} are free (raise {name})",
                        avail.1
                    ),
                });
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(BatchError { errors })
        }
    }

    /// Applies one operation; for a route's, returns the target the prefix had before.
    fn apply_one(&mut self, op: &FibOp) -> Option<RouteTarget> {
        let q = self.shared.qsbr;
        match op {
            FibOp::SetAdjacency { id, adjacency } => {
                let before = self.adjacencies.insert(*id, *adjacency);
                let old = self.shared.adjacencies.replace(*id as usize, Some(Box::new(*adjacency)));
                self.retired_adjacencies.push(old);
                // A member that moved to another sub-interface changes its groups' egress
                // sets. Rare (a MAC update keeps port and VLAN), so the scan over every
                // group is fine; the agent's per-resolution writes never pay it.
                let moved = before.is_some_and(|b| (b.port, b.vlan) != (adjacency.port, adjacency.vlan));
                if moved && self.adjacency_refs.contains_key(id) {
                    let using: Vec<GroupId> =
                        self.groups.iter().filter(|(_, m)| m.iter().any(|n| n.adjacency == *id)).map(|(g, _)| *g).collect();
                    for g in using {
                        self.publish_group(g);
                    }
                }
            }
            FibOp::DeleteAdjacency { id } => {
                if self.adjacencies.remove(id).is_some() {
                    let old = self.shared.adjacencies.replace(*id as usize, None);
                    self.retired_adjacencies.push(old);
                }
            }
            FibOp::SetGroup { id, members } => {
                let old_members = self.groups.insert(*id, members.clone());
                for m in old_members.iter().flatten() {
                    dec(&mut self.adjacency_refs, m.adjacency);
                }
                for m in members {
                    *self.adjacency_refs.entry(m.adjacency).or_default() += 1;
                }
                self.publish_group(*id);
            }
            FibOp::DeleteGroup { id } => {
                if let Some(old_members) = self.groups.remove(id) {
                    for m in &old_members {
                        dec(&mut self.adjacency_refs, m.adjacency);
                    }
                    let old = self.shared.groups.replace(*id as usize, None);
                    self.retired_groups.push(old);
                }
            }
            FibOp::AddRoute { prefix, target } => {
                let len = prefix.len() as u32;
                let old = match prefix.family() {
                    Family::V4 => self.v4.insert(&q, prefix.addr_v4(), len, target.code()),
                    Family::V6 => self.v6.insert(&q, prefix.addr_v6(), len, target.code()),
                };
                let old = old.map(RouteTarget::from_code);
                if let Some(RouteTarget::Group(g)) = old {
                    dec(&mut self.group_refs, g);
                }
                if let RouteTarget::Group(g) = target {
                    *self.group_refs.entry(*g).or_default() += 1;
                }
                return old;
            }
            FibOp::DeleteRoute { prefix } => {
                let len = prefix.len() as u32;
                let old = match prefix.family() {
                    Family::V4 => self.v4.remove(&q, prefix.addr_v4(), len),
                    Family::V6 => self.v6.remove(&q, prefix.addr_v6(), len),
                };
                let old = old.map(RouteTarget::from_code);
                if let Some(RouteTarget::Group(g)) = old {
                    dec(&mut self.group_refs, g);
                }
                return old;
            }
            FibOp::SetMember { id, member, sources } => {
                if let Some(old) = self.members.insert(*id, *member) {
                    self.member_ids.remove(&old);
                }
                self.member_ids.insert(*member, *id);
                match sources {
                    Some(p) => self.member_sources.insert(*id, p.clone()),
                    None => self.member_sources.remove(id),
                };
            }
            FibOp::DeleteMember { id } => {
                if let Some(old) = self.members.remove(id) {
                    self.member_ids.remove(&old);
                }
                self.member_sources.remove(id);
            }
        }
        None
    }
}

impl Fib {
    /// Publishes group `id` as readers see it (buckets and egress set) from the writer's
    /// members and adjacencies; the old version is retired.
    fn publish_group(&mut self, id: GroupId) {
        let Some(members) = self.groups.get(&id) else { return };
        let mut egress: Vec<u32> =
            members.iter().filter_map(|m| self.adjacencies.get(&m.adjacency)).map(|a| egress_key(a.port, a.vlan)).collect();
        egress.sort_unstable();
        egress.dedup();
        let buckets = GroupBuckets { buckets: spread(members), egress: egress.into_boxed_slice() };
        let old = self.shared.groups.replace(id as usize, Some(Box::new(buckets)));
        self.retired_groups.push(old);
    }
}

impl Drop for Fib {
    fn drop(&mut self) {
        // Readers may outlive the writer; retired objects must outlive their grace period.
        self.reclaim(true);
    }
}

/// The object an operation changes, to refuse two changes of one object in a batch.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Object {
    Adjacency(AdjacencyId),
    Group(GroupId),
    Route(Prefix),
    Member(MemberId),
}

impl Object {
    fn of(op: &FibOp) -> Object {
        match op {
            FibOp::SetAdjacency { id, .. } | FibOp::DeleteAdjacency { id } => Object::Adjacency(*id),
            FibOp::SetGroup { id, .. } | FibOp::DeleteGroup { id } => Object::Group(*id),
            FibOp::AddRoute { prefix, .. } | FibOp::DeleteRoute { prefix } => Object::Route(*prefix),
            FibOp::SetMember { id, .. } | FibOp::DeleteMember { id } => Object::Member(*id),
        }
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Object::Adjacency(id) => write!(f, "adjacency {id}"),
            Object::Group(id) => write!(f, "group {id}"),
            Object::Route(p) => write!(f, "route {p}"),
            Object::Member(id) => write!(f, "member {id}"),
        }
    }
}

/// What a member's definition must be, whatever the tables hold.
fn check_member(id: MemberId, m: &Member) -> Result<(), String> {
    if id >= MAX_MEMBERS {
        return Err(format!("member {id}: id exceeds the engine's {MAX_MEMBERS} members (0 to {})", MAX_MEMBERS - 1));
    }
    if m.vlan > 4094 {
        return Err(format!("member {id}: VLAN {} is not between 0 (untagged) and 4094", m.vlan));
    }
    if m.mac == [0; 6] || m.mac[0] & 1 != 0 {
        return Err(format!("member {id}: MAC {} is not a unicast station address (a router's MAC is)", mac_text(&m.mac)));
    }
    Ok(())
}

fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn dec<K: std::hash::Hash + Eq>(m: &mut HashMap<K, usize>, k: K) {
    if let Some(n) = m.get_mut(&k) {
        *n -= 1;
        if *n == 0 {
            m.remove(&k);
        }
    }
}

/// Lays members out over buckets in proportion to their weights (exactly when the weights
/// add up to at most MAX_BUCKETS, else by largest remainder, every member keeping one).
fn spread(members: &[NextHop]) -> Box<[AdjacencyId]> {
    let total: u64 = members.iter().map(|m| m.weight as u64).sum();
    let n = if total <= MAX_BUCKETS as u64 { total } else { MAX_BUCKETS as u64 };
    let mut counts: Vec<u64> = members.iter().map(|m| (m.weight as u64 * n / total).max(1)).collect();
    let mut assigned: u64 = counts.iter().sum();
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse((members[i].weight as u64 * n) % total));
    let mut k = 0;
    while assigned < n {
        counts[order[k % order.len()]] += 1;
        assigned += 1;
        k += 1;
    }
    let mut out = Vec::with_capacity(assigned as usize);
    for (m, c) in members.iter().zip(counts) {
        out.extend(std::iter::repeat_n(m.adjacency, c as usize));
    }
    out.into_boxed_slice()
}

/// A forwarding thread's view of the FIB. Lookups never lock or wait; call `quiescent`
/// between batches (it ends every borrow handed out) so the writer can reclaim memory.
pub struct FibReader {
    shared: Arc<FibShared>,
    qsbr: QsbrReader<FibDomain>,
}

impl FibReader {
    #[inline]
    pub fn lookup_v4(&self, dst: u32) -> Option<RouteTarget> {
        RouteTarget::from_entry(self.shared.v4.lookup(dst))
    }

    #[inline]
    pub fn lookup_v6(&self, dst: u128) -> Option<RouteTarget> {
        RouteTarget::from_entry(self.shared.v6.lookup(dst))
    }

    /// Batch lookup: `out[i]` is the raw entry for `dsts[i]`; decode with
    /// `RouteTarget::from_entry`.
    #[inline]
    pub fn lookup_v4_batch(&self, dsts: &[u32], out: &mut [u32]) {
        self.shared.v4.lookup_batch::<u32, false>(dsts, out)
    }

    /// `lookup_v4_batch` for keys whose root entries were asked for (`prefetch_v4`) as
    /// they were gathered: the batch does not ask for them again.
    #[inline]
    pub fn lookup_v4_batch_prefetched(&self, dsts: &[u32], out: &mut [u32]) {
        self.shared.v4.lookup_batch::<u32, true>(dsts, out)
    }

    #[inline]
    pub fn lookup_v6_batch(&self, dsts: &[u128], out: &mut [u32]) {
        self.shared.v6.lookup_batch::<u128, false>(dsts, out)
    }

    /// A hint that `dst` will be looked up soon: asks for the cache line of its root
    /// entry, so that a batch lookup issued after other work finds it there.
    #[inline(always)]
    pub fn prefetch_v4(&self, dst: u32) {
        self.shared.v4.prefetch_root(dst)
    }

    #[inline(always)]
    pub fn prefetch_v6(&self, dst: u128) {
        self.shared.v6.prefetch_root(dst)
    }

    /// The member of `group` that the flow with `flow_hash` takes, or None when the group
    /// does not exist or its adjacency is gone.
    #[inline]
    pub fn next_hop(&self, group: GroupId, flow_hash: u32) -> Option<(AdjacencyId, &Adjacency)> {
        let g = self.shared.groups.get(group as usize, &self.qsbr)?;
        let n = g.buckets.len() as u64;
        // Multiply-shift maps the hash onto the buckets without a division.
        let b = *g.buckets.get(((flow_hash as u64 * n) >> 32) as usize)?;
        self.shared.adjacencies.get(b as usize, &self.qsbr).map(|a| (b, a))
    }

    #[inline]
    pub fn adjacency(&self, id: AdjacencyId) -> Option<&Adjacency> {
        self.shared.adjacencies.get(id as usize, &self.qsbr)
    }

    /// True when some member of `group` leaves by sub-interface (`port`, `vlan`): the
    /// strict reverse-path check, any ECMP member counting. False for a group that does not
    /// exist. A search of a short sorted list made when the group last changed.
    #[inline]
    pub fn group_egresses_by(&self, group: GroupId, port: u16, vlan: u16) -> bool {
        let key = egress_key(port, vlan);
        self.shared.groups.get(group as usize, &self.qsbr).is_some_and(|g| match g.egress.len() {
            0..=4 => g.egress.contains(&key),
            _ => g.egress.binary_search(&key).is_ok(),
        })
    }

    /// The member tables now (empty before any member is set), valid until `quiescent`.
    #[inline]
    pub fn members(&self) -> Option<&MemberTable> {
        self.shared.members.get(0, &self.qsbr)
    }

    /// The counter slot of the blackhole route that holds `dst` (call for a frame the
    /// lookup dropped as blackhole): the route the lookup matches, at the length it
    /// matched, found among the counted ones, else UNCOUNTED_SLOT; None when the lookup
    /// no longer ends at a blackhole route (a batch changed it since).
    #[inline]
    pub fn blackhole_slot_v4(&self, dst: u32) -> Option<u32> {
        let entry = self.shared.v4.lookup(dst);
        if RouteTarget::from_entry(entry) != Some(RouteTarget::Blackhole) {
            return None;
        }
        let table = self.shared.blackholes.get(0, &self.qsbr);
        Some(table.and_then(|t| t.slot_at_v4(dst, dir::entry_depth(entry))).unwrap_or(UNCOUNTED_SLOT))
    }

    #[inline]
    pub fn blackhole_slot_v6(&self, dst: u128) -> Option<u32> {
        let entry = self.shared.v6.lookup(dst);
        if RouteTarget::from_entry(entry) != Some(RouteTarget::Blackhole) {
            return None;
        }
        let table = self.shared.blackholes.get(0, &self.qsbr);
        Some(table.and_then(|t| t.slot_at_v6(dst, dir::entry_depth(entry))).unwrap_or(UNCOUNTED_SLOT))
    }

    /// The member adjacency `id` sends to, or NO_MEMBER.
    #[inline(always)]
    pub fn adjacency_member(&self, id: AdjacencyId) -> MemberId {
        // Relaxed: see `Fib::map_adjacency`.
        self.shared.adjacency_member.get(id as usize).map_or(NO_MEMBER, |m| m.load(Ordering::Relaxed))
    }

    /// Notes that a frame left by adjacency `id` (see `Fib::take_adjacency_used`).
    #[inline(always)]
    pub fn mark_adjacency_used(&self, id: AdjacencyId) {
        if let Some(u) = self.shared.adjacency_used.get(id as usize) {
            // Relaxed: a hint; the load first keeps the cache line shared between workers
            // while the bit is already set.
            if !u.load(Ordering::Relaxed) {
                u.store(true, Ordering::Relaxed);
            }
        }
    }

    /// No reference from this reader survives this call.
    #[inline]
    pub fn quiescent(&mut self) {
        self.qsbr.quiescent();
    }

    /// Runs `f` (a sleep, a poll) with the reader offline: the writer does not wait for
    /// it, and it cannot look anything up until `f` returns.
    pub fn offline_while<R>(&mut self, f: impl FnOnce() -> R) -> R {
        self.qsbr.offline_while(f)
    }
}

#[cfg(test)]
mod tests;
