//! Loads Corridor's XDP steering program (`steer.bpf.c`, compiled by `build.rs`), attaches it
//! to the ports and fills its maps: the XSKMAP of AF_XDP sockets, the router's own addresses
//! and each port's MAC. The program sends transit IPv4/IPv6 unicast to the engine and
//! everything else (ARP, ND, link-local, multicast, traffic for the router) to the kernel.
//!
//! Attachment prefers a bpf_link, which the kernel removes when the process dies; a program
//! left on a port by anything else through netlink is replaced on attach.
//!
//! Edge protection per sub-interface (`set_edge`): the program drops frames of a foreign
//! ethertype or from a source MAC not allowed, before the kernel or the engine sees them,
//! and counts them per port (`edge_counters`); refused MACs land in a bounded LRU table
//! (`refused_macs`).

mod netlink;

use std::{
    collections::{BTreeSet, HashMap as StdHashMap},
    fmt,
    net::IpAddr,
    os::fd::{AsRawFd, BorrowedFd},
    thread,
    time::Duration,
};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, XskMap},
    programs::{xdp::XdpLink, Xdp, XdpMode as AyaXdpMode},
    Ebpf,
};

pub use netlink::{ifindex, query as query_link, LinkXdp};

/// The compiled steering program, as embedded in the binary.
pub static STEER_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/steer.bpf.o"));

/// Name of the program's function in `steer.bpf.c`.
pub const PROGRAM_NAME: &str = "corridor_steer";
/// Queues per port addressable through the XSKMAP (`MAX_QUEUES` in `steer.bpf.c`).
pub const MAX_QUEUES: u32 = 256;
/// Ports one loaded program can serve (`MAX_PORTS` in `steer.bpf.c`).
pub const MAX_PORTS: u32 = 64;
/// Entries of the program's direct-mapped port cache (`PORT_CACHE` in `steer.bpf.c`).
const PORT_CACHE: u32 = 1024;
/// Bits of the router-address filter, as a power of two (`FILTER_LOG2` in `steer.bpf.c`).
const FILTER_LOG2: u32 = 13;
const FILTER_WORDS: usize = (1 << FILTER_LOG2) / 64;

/// The filter bit of a 32-bit word (`filter_bit` in `steer.bpf.c`): Fibonacci hashing.
fn filter_bit(x: u32) -> u32 {
    x.wrapping_mul(0x9E37_79B1) >> (32 - FILTER_LOG2)
}

/// The word the program hashes for an address: IPv4 as loaded from the header, IPv6 the
/// XOR of its four words as loaded.
fn filter_word(addr: IpAddr) -> u32 {
    match addr {
        IpAddr::V4(a) => u32::from_ne_bytes(a.octets()),
        IpAddr::V6(a) => {
            let o = a.octets();
            (0..4).map(|i| u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])).fold(0, |x, w| x ^ w)
        }
    }
}

/// The bit of the program's router-address filter that `addr` sets. Many addresses share
/// a bit; the program then asks the exact map (tests use this to build such a pair).
pub fn router_filter_bit(addr: IpAddr) -> u32 {
    filter_bit(filter_word(addr))
}

/// The filter the program reads, with a bit set for every address of `addrs`.
fn filter_of(addrs: impl IntoIterator<Item = IpAddr>) -> [u64; FILTER_WORDS] {
    let mut words = [0u64; FILTER_WORDS];
    for a in addrs {
        let bit = router_filter_bit(a) as usize;
        words[bit / 64] |= 1 << (bit % 64);
    }
    words
}

/// A port cache entry as the program reads it (`struct port_cached`): ifindex, MAC,
/// edge flag, padding, XSKMAP slot.
fn port_cache_entry(ifindex: u32, mac: [u8; 6], slot: u32, edge: bool) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..4].copy_from_slice(&ifindex.to_ne_bytes());
    v[4..10].copy_from_slice(&mac);
    v[10] = edge as u8;
    v[12..].copy_from_slice(&slot.to_ne_bytes());
    v
}

/// A `ports` map value (`struct port`): MAC, edge flag, padding, XSKMAP slot.
fn port_entry(mac: [u8; 6], slot: u32, edge: bool) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..6].copy_from_slice(&mac);
    v[6] = edge as u8;
    v[8..].copy_from_slice(&slot.to_ne_bytes());
    v
}

/// `struct edge_key`: ifindex, VLAN, padding.
fn edge_key(ifindex: u32, vlan: u16) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[..4].copy_from_slice(&ifindex.to_ne_bytes());
    k[4..6].copy_from_slice(&vlan.to_ne_bytes());
    k
}

/// `struct mac_key`: ifindex, VLAN, source MAC.
fn mac_key(ifindex: u32, vlan: u16, mac: [u8; 6]) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&ifindex.to_ne_bytes());
    k[4..6].copy_from_slice(&vlan.to_ne_bytes());
    k[6..].copy_from_slice(&mac);
    k
}

/// Policy flags (`EDGE_ETHERTYPES`, `EDGE_MACS` in `steer.bpf.c`).
const EDGE_ETHERTYPES: u32 = 1;
const EDGE_MACS: u32 = 2;
/// Entries of the program's edge maps (`EDGE_POLICIES`, `EDGE_MACS_MAX`).
pub const EDGE_POLICIES: usize = 16384;
pub const EDGE_MACS_MAX: usize = 65536;

/// What the program checks on one sub-interface before anything else.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EdgeFilter {
    /// Only IPv4, IPv6 and ARP, untagged or behind one 802.1Q tag.
    pub ethertypes: bool,
    /// Only frames from these source MACs (None: any).
    pub macs: Option<BTreeSet<[u8; 6]>>,
}

impl EdgeFilter {
    fn flags(&self) -> u32 {
        (if self.ethertypes { EDGE_ETHERTYPES } else { 0 }) | (if self.macs.is_some() { EDGE_MACS } else { 0 })
    }
}

/// Frames the program dropped on one port by its edge policies (summed over CPUs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EdgeCounters {
    /// Not IPv4, IPv6 or ARP on a sub-interface with the ethertype filter.
    pub foreign_ethertype: u64,
    /// From a source MAC not allowed on a sub-interface with the MAC filter.
    pub unknown_source_mac: u64,
}

/// A source MAC the MAC filter refused on (ifindex, VLAN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusedMac {
    pub ifindex: u32,
    pub vlan: u16,
    pub mac: [u8; 6],
    /// Frames since it entered the table.
    pub packets: u64,
    /// CLOCK_MONOTONIC nanoseconds of the last one.
    pub last_ns: u64,
    /// How long ago that was, when read.
    pub age_ns: u64,
}

/// CLOCK_MONOTONIC in nanoseconds: the program's clock (bpf_ktime_get_ns).
// unsafe: clock_gettime(2), to read the program's clock.
#[allow(unsafe_code)]
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: FFI; `ts` is a valid timespec the call writes, and CLOCK_MONOTONIC always
    // exists (on failure `ts` stays zero and every age reads as 0).
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

/// The ifindex a port cache entry serves (0: empty).
fn cached_ifindex(entry: &[u8; 16]) -> u32 {
    u32::from_ne_bytes([entry[0], entry[1], entry[2], entry[3]])
}

/// Indices of the program's per-CPU `counters` array (`enum counter` in `steer.bpf.c`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Counter {
    /// Redirected to an AF_XDP socket.
    Steered = 0,
    /// Classified as the kernel's (ARP, ND, to the router, multicast, other MAC, short).
    Passed = 1,
    /// Transit traffic on a queue without a socket: passed to the kernel.
    NoSocket = 2,
}

/// The program's counters summed over CPUs. Monotonic while the program stays loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SteeringCounters {
    pub steered: u64,
    pub passed: u64,
    pub no_socket: u64,
}

/// How to attach to a port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic (skb) mode if the driver refuses.
    #[default]
    Auto,
    /// Native mode only.
    Native,
    /// Generic mode only (slow; for drivers without XDP).
    Generic,
}

/// The mode a port's program runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver, before an skb exists.
    Native,
    /// In the core network stack, on an skb.
    Generic,
}

/// How the attachment is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedVia {
    /// A bpf_link: the kernel detaches the program when the last descriptor closes, so a
    /// killed process leaves nothing behind.
    Link,
    /// Legacy netlink (kernels before 5.9): stays attached until removed.
    Netlink,
}

/// What `Steering::attach` did to a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortAttachment {
    pub ifname: String,
    pub ifindex: u32,
    /// The port's position in the XSKMAP: its sockets live at `slot * MAX_QUEUES + queue`.
    pub slot: u32,
    pub mac: [u8; 6],
    pub mode: XdpMode,
    pub via: AttachedVia,
    /// Why native mode was refused, when `AttachMode::Auto` fell back to generic.
    pub native_error: Option<String>,
    /// Ids of programs found attached (through netlink, by someone else) and removed.
    pub replaced: Vec<u32>,
}

/// Errors of the loader. Each names the port or map involved and the kernel's answer.
#[derive(Debug)]
pub enum XdpError {
    /// The object did not load or the verifier refused it.
    Load(String),
    /// A port name that does not exist, or port data that cannot be read.
    Port { ifname: String, error: String },
    /// Another process holds the port's program through a live bpf_link.
    HeldByLink { ifname: String, prog_id: u32 },
    /// The kernel refused the attachment in every allowed mode.
    Attach { ifname: String, error: String },
    /// Every XSKMAP slot (`MAX_PORTS`) is taken.
    TooManyPorts,
    /// A port that is not attached through this loader.
    NotAttached(String),
    /// A queue index at or beyond `MAX_QUEUES`.
    QueueOutOfRange { queue: u32 },
    /// A map update or read failed.
    Map { map: &'static str, error: String },
}

impl fmt::Display for XdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Load(e) => write!(f, "loading the XDP steering program: {e}"),
            Self::Port { ifname, error } => write!(f, "port {ifname}: {error}"),
            Self::HeldByLink { ifname, prog_id } => write!(
                f,
                "port {ifname}: XDP program id {prog_id} is held by a running process through a bpf_link; stop that process first"
            ),
            Self::Attach { ifname, error } => write!(f, "attaching XDP to {ifname}: {error}"),
            Self::TooManyPorts => write!(f, "all {MAX_PORTS} port slots of the steering program are taken"),
            Self::NotAttached(ifname) => write!(f, "port {ifname} has no steering program attached by this loader"),
            Self::QueueOutOfRange { queue } => write!(f, "queue {queue} out of range: the XSKMAP holds queues 0..{MAX_QUEUES}"),
            Self::Map { map, error } => write!(f, "XDP map {map}: {error}"),
        }
    }
}

impl std::error::Error for XdpError {}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> XdpError {
    move |e| XdpError::Map { map, error: e.to_string() }
}

struct Port {
    info: PortAttachment,
    /// Dropping the link detaches the program from the port.
    link: Option<XdpLink>,
}

/// The loaded steering program and its maps; one per engine. Dropping it detaches the
/// program from every port it was attached to.
pub struct Steering {
    // Field order is drop order: links go before the program and maps they refer to.
    ports: StdHashMap<u32, Port>,
    xsks: XskMap<MapData>,
    router_v4: HashMap<MapData, u32, u8>,
    router_v6: HashMap<MapData, [u8; 16], u8>,
    port_map: HashMap<MapData, u32, [u8; 12]>,
    port_cache: Array<MapData, [u8; 16]>,
    router_filter: Array<MapData, [u64; FILTER_WORDS]>,
    counters: PerCpuArray<MapData, u64>,
    edge_policies: HashMap<MapData, [u8; 8], [u8; 8]>,
    allowed_macs: HashMap<MapData, [u8; 12], u8>,
    refused: HashMap<MapData, [u8; 12], [u8; 16]>,
    edge_drops: PerCpuArray<MapData, u64>,
    /// The edge filters in the maps, by (ifindex, VLAN): the truth the maps are kept to.
    edge: StdHashMap<(u32, u16), EdgeFilter>,
    ebpf: Ebpf,
}

impl fmt::Debug for Steering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Steering").field("ports", &self.attachments()).finish_non_exhaustive()
    }
}

impl Steering {
    /// Loads the program and its maps into the kernel (verifier included); attaches nothing.
    pub fn load() -> Result<Self, XdpError> {
        let mut ebpf = Ebpf::load(STEER_OBJECT).map_err(|e| XdpError::Load(e.to_string()))?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| XdpError::Load(format!("object has no program {PROGRAM_NAME}")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| XdpError::Load(e.to_string()))?;
        load_waiting_out_signals(program)?;

        let mut take = |name: &'static str| ebpf.take_map(name).ok_or_else(|| XdpError::Load(format!("object has no map {name}")));
        let xsks = XskMap::try_from(take("xsks")?).map_err(map_err("xsks"))?;
        let router_v4 = HashMap::try_from(take("router_v4")?).map_err(map_err("router_v4"))?;
        let router_v6 = HashMap::try_from(take("router_v6")?).map_err(map_err("router_v6"))?;
        let port_map = HashMap::try_from(take("ports")?).map_err(map_err("ports"))?;
        let port_cache = Array::try_from(take("port_cache")?).map_err(map_err("port_cache"))?;
        let router_filter = Array::try_from(take("router_filter")?).map_err(map_err("router_filter"))?;
        let counters = PerCpuArray::try_from(take("counters")?).map_err(map_err("counters"))?;
        let edge_policies = HashMap::try_from(take("edge_policies")?).map_err(map_err("edge_policies"))?;
        let allowed_macs = HashMap::try_from(take("allowed_macs")?).map_err(map_err("allowed_macs"))?;
        let refused = HashMap::try_from(take("refused_macs")?).map_err(map_err("refused_macs"))?;
        let edge_drops = PerCpuArray::try_from(take("edge_drops")?).map_err(map_err("edge_drops"))?;
        Ok(Self {
            ports: StdHashMap::new(),
            xsks,
            router_v4,
            router_v6,
            port_map,
            port_cache,
            router_filter,
            counters,
            edge_policies,
            allowed_macs,
            refused,
            edge_drops,
            edge: StdHashMap::new(),
            ebpf,
        })
    }

    fn program(&mut self) -> Result<&mut Xdp, XdpError> {
        self.ebpf
            .program_mut(PROGRAM_NAME)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| XdpError::Load(format!("program {PROGRAM_NAME} vanished")))
    }

    /// Attaches the program to the port `ifname` (in the caller's network namespace),
    /// first removing any program someone else left attached through netlink.
    pub fn attach(&mut self, ifname: &str, mode: AttachMode) -> Result<PortAttachment, XdpError> {
        let port_err = |error: String| XdpError::Port { ifname: ifname.to_owned(), error };
        let ifindex = netlink::ifindex(ifname).map_err(|e| port_err(e.to_string()))?;
        if self.ports.contains_key(&ifindex) {
            self.detach(ifname)?;
        }
        let link = netlink::query(ifindex).map_err(|e| port_err(format!("reading link: {e}")))?;
        let mac: [u8; 6] =
            link.mac.as_slice().try_into().map_err(|_| port_err(format!("not an Ethernet port (link address {:02x?})", link.mac)))?;

        let mut replaced = Vec::new();
        for (prog_id, flags) in [
            (link.drv_prog_id, netlink::XDP_FLAGS_DRV_MODE),
            (link.skb_prog_id, netlink::XDP_FLAGS_SKB_MODE),
            (link.hw_prog_id, netlink::XDP_FLAGS_HW_MODE),
        ] {
            let Some(prog_id) = prog_id else { continue };
            match netlink::detach(ifindex, flags) {
                Ok(()) => replaced.push(prog_id),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Err(XdpError::HeldByLink { ifname: ifname.to_owned(), prog_id }),
                Err(e) => return Err(port_err(format!("removing XDP program id {prog_id}: {e}"))),
            }
        }

        let used: Vec<u32> = self.ports.values().map(|p| p.info.slot).collect();
        let slot = (0..MAX_PORTS).find(|s| !used.contains(s)).ok_or(XdpError::TooManyPorts)?;
        let edge = self.has_edge(ifindex);
        self.port_map.insert(ifindex, port_entry(mac, slot, edge), 0).map_err(map_err("ports"))?;
        // The cache slot goes to the first port that hashes there; a later one on the same
        // slot is served by the hash.
        let cache_key = ifindex % PORT_CACHE;
        let cached = self.port_cache.get(&cache_key, 0).map_err(map_err("port_cache"))?;
        let holder = cached_ifindex(&cached);
        if holder == 0 || !self.ports.contains_key(&holder) {
            self.port_cache.set(cache_key, port_cache_entry(ifindex, mac, slot, edge), 0).map_err(map_err("port_cache"))?;
        }

        let attached = self.attach_in_mode(ifindex, mode);
        let (link_id, xdp_mode, native_error) = match attached {
            Ok(v) => v,
            Err(error) => {
                let _ = self.port_map.remove(&ifindex);
                let _ = self.uncache_port(ifindex);
                return Err(XdpError::Attach { ifname: ifname.to_owned(), error });
            }
        };
        let program = self.program()?;
        let link = program.take_link(link_id).map_err(|e| XdpError::Attach { ifname: ifname.to_owned(), error: e.to_string() })?;
        // aya does not name the kind of link it made; its Debug form does (`Fd` or `NlLink`).
        let via = if format!("{link:?}").contains("NlLink") { AttachedVia::Netlink } else { AttachedVia::Link };
        let info = PortAttachment { ifname: ifname.to_owned(), ifindex, slot, mac, mode: xdp_mode, via, native_error, replaced };
        self.ports.insert(ifindex, Port { info: info.clone(), link: Some(link) });
        Ok(info)
    }

    #[allow(clippy::type_complexity)]
    fn attach_in_mode(
        &mut self,
        ifindex: u32,
        mode: AttachMode,
    ) -> Result<(aya::programs::xdp::XdpLinkId, XdpMode, Option<String>), String> {
        let program = self.program().map_err(|e| e.to_string())?;
        match mode {
            AttachMode::Native => program
                .attach_to_if_index(ifindex, AyaXdpMode::Driver)
                .map(|id| (id, XdpMode::Native, None))
                .map_err(|e| format!("native mode: {}", error_chain(&e))),
            AttachMode::Generic => program
                .attach_to_if_index(ifindex, AyaXdpMode::Skb)
                .map(|id| (id, XdpMode::Generic, None))
                .map_err(|e| format!("generic mode: {}", error_chain(&e))),
            AttachMode::Auto => match program.attach_to_if_index(ifindex, AyaXdpMode::Driver) {
                Ok(id) => Ok((id, XdpMode::Native, None)),
                Err(native) => {
                    let native = error_chain(&native);
                    program
                        .attach_to_if_index(ifindex, AyaXdpMode::Skb)
                        .map(|id| (id, XdpMode::Generic, Some(native.clone())))
                        .map_err(|e| format!("native mode: {native}; generic mode: {}", error_chain(&e)))
                }
            },
        }
    }

    /// Detaches the program from `ifname` and forgets the port's sockets.
    pub fn detach(&mut self, ifname: &str) -> Result<(), XdpError> {
        let ifindex = self
            .ports
            .iter()
            .find(|(_, p)| p.info.ifname == ifname)
            .map(|(i, _)| *i)
            .ok_or_else(|| XdpError::NotAttached(ifname.to_owned()))?;
        self.detach_index(ifindex)
    }

    fn detach_index(&mut self, ifindex: u32) -> Result<(), XdpError> {
        let Some(mut port) = self.ports.remove(&ifindex) else { return Ok(()) };
        let base = port.info.slot * MAX_QUEUES;
        for queue in 0..MAX_QUEUES {
            // Unset entries answer ENOENT; nothing to undo there.
            let _ = self.xsks.unset(base + queue);
        }
        let _ = self.port_map.remove(&ifindex);
        let _ = self.uncache_port(ifindex);
        if let Some(link) = port.link.take() {
            use aya::programs::links::Link as _;
            link.detach().map_err(|e| XdpError::Attach { ifname: port.info.ifname.clone(), error: format!("detach: {e}") })?;
        }
        Ok(())
    }

    /// Clears `ifindex`'s port cache entry if it holds one, handing the slot to another
    /// attached port of the same slot (served by the hash until then).
    ///
    /// The program may read an entry while it is rewritten (array updates are plain
    /// copies). Every mix of the old and the new entry sends the frame to the kernel:
    /// a mixed ifindex matches no port, a mixed MAC no frame, and a mixed slot is the
    /// leaving port's, whose sockets are out of the XSKMAP before this runs.
    fn uncache_port(&mut self, ifindex: u32) -> Result<(), XdpError> {
        let cache_key = ifindex % PORT_CACHE;
        let cached = self.port_cache.get(&cache_key, 0).map_err(map_err("port_cache"))?;
        if cached_ifindex(&cached) != ifindex {
            return Ok(());
        }
        let heir = self.ports.values().map(|p| &p.info).find(|p| p.ifindex != ifindex && p.ifindex % PORT_CACHE == cache_key);
        let entry = heir.map_or([0u8; 16], |p| port_cache_entry(p.ifindex, p.mac, p.slot, self.has_edge(p.ifindex)));
        self.port_cache.set(cache_key, entry, 0).map_err(map_err("port_cache"))
    }

    /// Rewrites the router-address filter from the exact maps. A frame read during the
    /// copy sees each bit old or new: an address in both sets keeps its bit set
    /// throughout, and one coming or going costs at most an exact lookup.
    fn refresh_filter(&mut self) -> Result<(), XdpError> {
        let words = filter_of(self.router_addresses());
        self.router_filter.set(0, words, 0).map_err(map_err("router_filter"))
    }

    /// The ports this loader has attached to.
    pub fn attachments(&self) -> Vec<PortAttachment> {
        let mut all: Vec<_> = self.ports.values().map(|p| p.info.clone()).collect();
        all.sort_by_key(|p| p.slot);
        all
    }

    fn slot_of(&self, ifindex: u32, queue: u32) -> Result<u32, XdpError> {
        if queue >= MAX_QUEUES {
            return Err(XdpError::QueueOutOfRange { queue });
        }
        let port = self.ports.get(&ifindex).ok_or_else(|| XdpError::NotAttached(format!("ifindex {ifindex}")))?;
        Ok(port.info.slot * MAX_QUEUES + queue)
    }

    /// Steers transit traffic arriving on (`ifindex`, `queue`) to the AF_XDP socket `fd`,
    /// which must be bound to that very port and queue (the kernel drops frames otherwise).
    pub fn insert_socket(&mut self, ifindex: u32, queue: u32, fd: BorrowedFd<'_>) -> Result<(), XdpError> {
        let key = self.slot_of(ifindex, queue)?;
        self.xsks.set(key, fd.as_raw_fd(), 0).map_err(map_err("xsks"))
    }

    /// Declares `addr` one of the router's own: traffic to it goes to the kernel.
    pub fn add_router_address(&mut self, addr: IpAddr) -> Result<(), XdpError> {
        match addr {
            IpAddr::V4(a) => self.router_v4.insert(u32::from_ne_bytes(a.octets()), 1, 0).map_err(map_err("router_v4"))?,
            IpAddr::V6(a) => self.router_v6.insert(a.octets(), 1, 0).map_err(map_err("router_v6"))?,
        }
        // Exact entry first, then its filter bit: until the bit is set the address is
        // still treated as transit, as before the call.
        self.refresh_filter()
    }

    /// Forgets a router address; removing one that is not there is not an error.
    pub fn remove_router_address(&mut self, addr: IpAddr) -> Result<(), XdpError> {
        let result = match addr {
            IpAddr::V4(a) => self.router_v4.remove(&u32::from_ne_bytes(a.octets())).map_err(map_err("router_v4")),
            IpAddr::V6(a) => self.router_v6.remove(&a.octets()).map_err(map_err("router_v6")),
        };
        match result {
            Err(XdpError::Map { error, .. }) if error.contains("No such file") || error.contains("ENOENT") => {}
            other => other?,
        }
        self.refresh_filter()
    }

    /// The router addresses currently in the program's maps.
    pub fn router_addresses(&self) -> Vec<IpAddr> {
        let v4 = self.router_v4.keys().filter_map(Result::ok).map(|k| IpAddr::from(k.to_ne_bytes()));
        let v6 = self.router_v6.keys().filter_map(Result::ok).map(IpAddr::from);
        v4.chain(v6).collect()
    }

    fn has_edge(&self, ifindex: u32) -> bool {
        self.edge.keys().any(|&(i, _)| i == ifindex)
    }

    /// Sets the edge filter of sub-interface (`ifindex`, `vlan`) of an attached port; an
    /// empty filter removes it. Frames see the old filter or the new one, never a mix that
    /// refuses a MAC both allow: new MACs go in before the flags change, old ones leave
    /// after. Refused (map full, too many MACs) with the old filter kept.
    pub fn set_edge(&mut self, ifindex: u32, vlan: u16, filter: EdgeFilter) -> Result<(), XdpError> {
        let port = self.ports.get(&ifindex).map(|p| p.info.clone()).ok_or_else(|| XdpError::NotAttached(format!("ifindex {ifindex}")))?;
        let old = self.edge.get(&(ifindex, vlan)).cloned().unwrap_or_default();
        let empty = BTreeSet::new();
        let old_macs = old.macs.as_ref().unwrap_or(&empty);
        let new_macs = filter.macs.as_ref().unwrap_or(&empty);
        let in_use: usize =
            self.edge.iter().filter(|(k, _)| **k != (ifindex, vlan)).map(|(_, f)| f.macs.as_ref().map_or(0, |m| m.len())).sum();
        if in_use + new_macs.len() > EDGE_MACS_MAX {
            return Err(XdpError::Map {
                map: "allowed_macs",
                error: format!("{} MACs would exceed the program's {EDGE_MACS_MAX} over all sub-interfaces", in_use + new_macs.len()),
            });
        }
        if filter.flags() != 0 && old.flags() == 0 && self.edge.len() >= EDGE_POLICIES {
            return Err(XdpError::Map { map: "edge_policies", error: format!("all {EDGE_POLICIES} sub-interface policies are taken") });
        }
        for mac in new_macs.difference(old_macs) {
            if let Err(e) = self.allowed_macs.insert(mac_key(ifindex, vlan, *mac), 1, 0) {
                for m in new_macs.difference(old_macs) {
                    let _ = self.allowed_macs.remove(&mac_key(ifindex, vlan, *m));
                }
                return Err(map_err("allowed_macs")(e));
            }
        }
        let key = edge_key(ifindex, vlan);
        if filter.flags() == 0 {
            if self.edge.remove(&(ifindex, vlan)).is_some() {
                self.edge_policies.remove(&key).map_err(map_err("edge_policies"))?;
            }
        } else {
            let mut value = [0u8; 8];
            value[..4].copy_from_slice(&filter.flags().to_ne_bytes());
            value[4..].copy_from_slice(&port.slot.to_ne_bytes());
            self.edge_policies.insert(key, value, 0).map_err(map_err("edge_policies"))?;
            self.edge.insert((ifindex, vlan), filter.clone());
        }
        for mac in old_macs.difference(new_macs) {
            let _ = self.allowed_macs.remove(&mac_key(ifindex, vlan, *mac));
        }
        // The port's flag last when turning on (the policy is there to be found), and when
        // turning off the policy went first, so a stale flag costs a lookup, nothing else.
        let edge = self.has_edge(ifindex);
        self.port_map.insert(ifindex, port_entry(port.mac, port.slot, edge), 0).map_err(map_err("ports"))?;
        let cache_key = ifindex % PORT_CACHE;
        let cached = self.port_cache.get(&cache_key, 0).map_err(map_err("port_cache"))?;
        if cached_ifindex(&cached) == ifindex {
            self.port_cache.set(cache_key, port_cache_entry(ifindex, port.mac, port.slot, edge), 0).map_err(map_err("port_cache"))?;
        }
        Ok(())
    }

    /// The edge filters in force, by (ifindex, VLAN).
    pub fn edge_filters(&self) -> &StdHashMap<(u32, u16), EdgeFilter> {
        &self.edge
    }

    /// The edge drops of every attached port, by ifindex.
    pub fn edge_counters(&self) -> Result<Vec<(u32, EdgeCounters)>, XdpError> {
        let sum = |key: u32| -> Result<u64, XdpError> {
            let values = self.edge_drops.get(&key, 0).map_err(map_err("edge_drops"))?;
            Ok(values.iter().copied().fold(0u64, u64::wrapping_add))
        };
        let mut out = Vec::with_capacity(self.ports.len());
        for (ifindex, p) in &self.ports {
            let base = p.info.slot * 2;
            out.push((*ifindex, EdgeCounters { foreign_ethertype: sum(base)?, unknown_source_mac: sum(base + 1)? }));
        }
        out.sort_by_key(|(i, _)| *i);
        Ok(out)
    }

    /// The refused source MACs the program remembers (at most its table's 256), most
    /// recent first.
    pub fn refused_macs(&self) -> Vec<RefusedMac> {
        let now = monotonic_ns();
        let mut out: Vec<RefusedMac> = self
            .refused
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| RefusedMac {
                ifindex: u32::from_ne_bytes([k[0], k[1], k[2], k[3]]),
                vlan: u16::from_ne_bytes([k[4], k[5]]),
                mac: [k[6], k[7], k[8], k[9], k[10], k[11]],
                packets: u64::from_ne_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]),
                last_ns: u64::from_ne_bytes([v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]]),
                age_ns: 0,
            })
            .map(|r| RefusedMac { age_ns: now.saturating_sub(r.last_ns), ..r })
            .collect();
        out.sort_by_key(|r| std::cmp::Reverse(r.last_ns));
        out
    }

    /// Reads the per-CPU counters and sums them.
    pub fn counters(&self) -> Result<SteeringCounters, XdpError> {
        let sum = |c: Counter| -> Result<u64, XdpError> {
            let values = self.counters.get(&(c as u32), 0).map_err(map_err("counters"))?;
            Ok(values.iter().copied().fold(0u64, u64::wrapping_add))
        };
        Ok(SteeringCounters { steered: sum(Counter::Steered)?, passed: sum(Counter::Passed)?, no_socket: sum(Counter::NoSocket)? })
    }
}

impl Drop for Steering {
    fn drop(&mut self) {
        let ports: Vec<u32> = self.ports.keys().copied().collect();
        for ifindex in ports {
            let _ = self.detach_index(ifindex);
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Pauses between attempts at loading the program while the verifier gives up because a
/// signal is pending (about 1 s in all).
const LOAD_RETRY_PAUSES_MS: [u64; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

/// Loads the program through the verifier. The verifier stops with EAGAIN whenever a signal
/// is pending for the loading thread (kernel/bpf/verifier.c checks `signal_pending` as it
/// walks the program): a SIGHUP sent as the agent starts, or a profiler (py-spy, perf)
/// interrupting the thread to sample it, made the agent exit. libbpf retries such a load;
/// aya does not, so it is retried here, with a growing pause, before the error stands.
fn load_waiting_out_signals(program: &mut Xdp) -> Result<(), XdpError> {
    let mut pauses = LOAD_RETRY_PAUSES_MS.iter();
    loop {
        match program.load() {
            Ok(()) => return Ok(()),
            Err(e) if interrupted(&e) => match pauses.next() {
                Some(&ms) => thread::sleep(Duration::from_millis(ms)),
                None => {
                    let attempts = LOAD_RETRY_PAUSES_MS.len() + 1;
                    return Err(XdpError::Load(format!(
                        "{e} (the verifier was interrupted by a signal in each of {attempts} attempts): {}",
                        verifier_log(&e)
                    )));
                }
            },
            Err(e) => return Err(XdpError::Load(format!("{e}: {}", verifier_log(&e)))),
        }
    }
}

/// Whether the load failed only because a signal interrupted the verifier.
fn interrupted(e: &aya::programs::ProgramError) -> bool {
    matches!(e, aya::programs::ProgramError::LoadError { io_error, .. }
        if io_error.raw_os_error() == Some(libc::EAGAIN))
}

fn verifier_log(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError { verifier_log, .. } => verifier_log.to_string(),
        other => error_chain(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_is_embedded_bpf_elf() {
        assert_eq!(&STEER_OBJECT[..4], b"\x7fELF");
        // e_machine EM_BPF (247), little endian.
        assert_eq!(u16::from_le_bytes([STEER_OBJECT[18], STEER_OBJECT[19]]), 247);
    }

    #[test]
    fn router_filter_sets_one_bit_per_address_and_spreads_them() {
        let addrs: Vec<IpAddr> =
            ["198.18.1.1", "198.18.2.1", "2001:db8:1::1", "2001:db8:2::1"].iter().map(|a| a.parse().unwrap()).collect();
        let words = filter_of(addrs.iter().copied());
        let set: u32 = words.iter().map(|w| w.count_ones()).sum();
        let distinct: std::collections::HashSet<u32> = addrs.iter().map(|a| router_filter_bit(*a)).collect();
        assert_eq!(set as usize, distinct.len());
        for a in &addrs {
            let bit = router_filter_bit(*a) as usize;
            assert!(bit < 1 << FILTER_LOG2);
            assert_ne!(words[bit / 64] & (1 << (bit % 64)), 0, "{a}");
        }
        assert_eq!(filter_of([]), [0u64; FILTER_WORDS]);
        // Consecutive addresses (a /24 of transit destinations) land on many bits, so
        // a router address costs the exact lookup to few of them.
        let bits: std::collections::HashSet<u32> = (0..=255u8).map(|i| router_filter_bit(IpAddr::from([198, 19, 7, i]))).collect();
        assert!(bits.len() > 240, "{} distinct bits of 256", bits.len());
        // The IPv6 word is the XOR of the address's four words as loaded.
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let o = match v6 {
            IpAddr::V6(a) => a.octets(),
            IpAddr::V4(_) => unreachable!(),
        };
        let w = |i: usize| u32::from_ne_bytes(o[4 * i..4 * i + 4].try_into().unwrap());
        assert_eq!(filter_word(v6), w(0) ^ w(1) ^ w(2) ^ w(3));
    }

    #[test]
    fn port_cache_entry_matches_the_program_layout() {
        let e = port_cache_entry(7, [2, 0, 0, 0, 0, 9], 3, false);
        assert_eq!(&e[..4], &7u32.to_ne_bytes());
        assert_eq!(&e[4..10], &[2, 0, 0, 0, 0, 9]);
        assert_eq!(&e[10..12], &[0, 0]);
        assert_eq!(&e[12..], &3u32.to_ne_bytes());
        assert_eq!(cached_ifindex(&e), 7);
        assert_eq!(port_cache_entry(7, [2, 0, 0, 0, 0, 9], 3, true)[10], 1);
    }

    #[test]
    fn edge_keys_match_the_program_layout() {
        let p = port_entry([2, 0, 0, 0, 0, 9], 5, true);
        assert_eq!((&p[..6], p[6], p[7], &p[8..]), (&[2u8, 0, 0, 0, 0, 9][..], 1, 0, &5u32.to_ne_bytes()[..]));
        let k = edge_key(9, 100);
        assert_eq!((&k[..4], &k[4..6], &k[6..]), (&9u32.to_ne_bytes()[..], &100u16.to_ne_bytes()[..], &[0u8, 0][..]));
        let m = mac_key(9, 4094, [2, 1, 2, 3, 4, 5]);
        assert_eq!((&m[..4], &m[4..6], &m[6..]), (&9u32.to_ne_bytes()[..], &4094u16.to_ne_bytes()[..], &[2u8, 1, 2, 3, 4, 5][..]));
        let f = EdgeFilter { ethertypes: true, macs: Some(BTreeSet::new()) };
        assert_eq!(f.flags(), EDGE_ETHERTYPES | EDGE_MACS);
        assert_eq!(EdgeFilter::default().flags(), 0);
    }
}
