"""Type stubs for the Rust extension `corridor._dataplane` (dataplane/python)."""

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, TypedDict, overload

Target = int | Literal["blackhole", "unreachable", "local", "glean"]

class FibError(ValueError):
    """A refused write batch. Nothing of the batch was applied."""

    errors: list[tuple[int | None, str]]
    """(entry index, or None for a batch-wide problem such as a full table; message)."""

class Batch:
    """An ordered write batch; entry i is the i-th call (one per line for add_routes_text)."""

    def __init__(self) -> None: ...
    def __len__(self) -> int: ...
    def set_adjacency(self, id: int, port: int, vlan: int, src_mac: str, dst_mac: str) -> None: ...
    def delete_adjacency(self, id: int) -> None: ...
    def set_member(
        self, id: int, port: int, vlan: int, mac: str, sources: list[str] | None = None
    ) -> None:
        """An exchange member's router: its MAC on (port index, VLAN); ids 0 to MAX_MEMBERS - 1.
        sources: its source filter (BCP 38), the only prefixes its frames may come from."""
    def delete_member(self, id: int) -> None: ...
    def set_group(self, id: int, members: list[tuple[int, int]]) -> None:
        """members: (adjacency id, weight) pairs; weights 1 to 65535."""
    def delete_group(self, id: int) -> None: ...
    def add_route(self, prefix: str, target: Target) -> None: ...
    def delete_route(self, prefix: str) -> None: ...
    def add_routes_text(self, text: str, target: Target) -> int:
        """One route per non-empty line of `prefix [anything]`; returns the entries added."""
    def touches(self, prefixes: list[str]) -> bool:
        """Whether a route entry (added or deleted) of the batch is for one of `prefixes`."""

def read_route_write(data: bytes, first_group: int) -> tuple[int, int, Batch] | None:
    """A serialized corridor.v1.WriteRequest whose operations are all routes, read in Rust
    (GIL released) into a Batch, entry i for operation i: (election id, batch id, batch).
    None for any other request, or one with a FORWARD route to a group from `first_group`
    up: read it with the generated code, which names every fault."""

class FibStats(TypedDict):
    v4_routes: int
    v6_routes: int
    v4_capacity: int
    v6_capacity: int
    groups: int
    group_capacity: int
    adjacencies: int
    adjacency_capacity: int
    v4_nodes_used: int
    v6_nodes_used: int
    v4_bytes: int
    v6_bytes: int

class Fib:
    def __init__(
        self,
        *,
        v4_routes: int | None = None,
        v6_routes: int | None = None,
        v4_nodes: int | None = None,
        v6_nodes: int | None = None,
        groups: int | None = None,
        adjacencies: int | None = None,
    ) -> None: ...
    def apply(self, batch: Batch) -> None:
        """Validate the whole batch, then apply it (GIL released). Raises FibError."""
    def lookup(self, address: str) -> Target | None: ...
    def next_hop(self, group: int, flow_hash: int) -> int | None: ...
    def route(self, prefix: str) -> Target | None: ...
    def routes(self) -> list[tuple[str, Target]]: ...
    def groups(self) -> list[tuple[int, list[tuple[int, int]]]]: ...
    def adjacencies(self) -> list[tuple[int, int, int, str, str]]: ...
    def members(self) -> list[tuple[int, int, int, str]]:
        """(id, port index, VLAN, MAC) of every member, by id."""
    def member_sources(self, id: int) -> list[str] | None:
        """A member's source filter (BCP 38) as prefix texts; None when it has none."""
    def adjacency_member(self, id: int) -> int | None: ...
    def blackhole_slot(self, prefix: str) -> int | None:
        """The counter slot of the blackhole route of exactly `prefix`: Engine.blackhole_dropped."""
    def take_adjacency_used(self, ids: list[int]) -> list[bool]:
        """For each adjacency id: whether a frame left by it since the last call (the hit
        bit, cleared by this call); False for an unknown id."""
    def prefault(self) -> None: ...
    def stats(self) -> FibStats: ...

MAX_MEMBERS: int
UNKNOWN_MEMBER: int
"""The member id under which frames from MACs no member has (on a port with members) count."""

# -- Engine ---------------------------------------------------------------------------------

class SampleDict(TypedDict):
    port: int
    vlan: int
    member: int | None
    frame_len: int
    pool: int
    out_port: int | None
    out_vlan: int | None
    out_priority: int | None
    dropped: str | None
    icmp_sent: bool
    header: bytes

class SampleStats(TypedDict):
    rate: int
    pool: int
    sampled: int
    dropped: int

class EngineError(RuntimeError):
    """The engine could not start (a port, the XDP program, a socket, a namespace), or
    failed while running or stopping. Configuration mistakes raise ValueError instead."""

class PortDict(TypedDict, total=False):
    name: str
    """Interface name, in the engine's network namespace (required)."""
    queues: int
    """Receive queues served (default 1); worker i serves queue i of every port."""
    mtu: int
    """IP MTU, 1280 to 9216 (default 1500); must fit the UMEM frame."""
    addresses: dict[int, list[str]]
    """VLAN (0 = untagged, 1 to 4094 = 802.1Q) -> the router's addresses there, at most one
    IPv4 and one IPv6 (default {0: []}), optionally with the prefix length
    ("198.18.0.1/24"), which makes the subnet's directed broadcast known."""
    directed_broadcast: bool
    """Forward directed broadcasts to this port's IPv4 subnets as link broadcasts (default
    False: dropped and counted as directed_broadcast, RFC 2644)."""
    urpf: dict[int, UrpfDict]
    """VLAN (one of `addresses`', 0 = untagged) -> its uRPF check at start (default: off)."""
    edge: dict[int, EdgeDict]
    """VLAN (one of `addresses`') -> the XDP program's edge filter from the start."""

class EdgeDict(TypedDict, total=False):
    ethertype_filter: bool
    """Only IPv4, IPv6 and ARP (behind at most one 802.1Q tag); others dropped in XDP."""
    mac_filter: bool
    """Only frames from `allowed_macs` as source; others dropped in XDP."""
    allowed_macs: list[str]

class EdgeState(TypedDict):
    port: str
    vlan: int
    ethertype_filter: bool
    mac_filter: bool
    allowed_macs: list[str]

class RefusedMacDict(TypedDict):
    port: str
    vlan: int
    mac: str
    packets: int
    age_seconds: float

class UrpfDict(TypedDict, total=False):
    mode: Literal["strict", "loose", "off"]
    """strict: the source's route leads back out of the ingress sub-interface (any member
    of its group); loose: the source has a forwarding route; off (required)."""
    allow_default: bool
    """The default route counts as the source's route (default False)."""

class UrpfState(TypedDict):
    port: str
    vlan: int
    mode: str
    allow_default: bool

class IcmpRateKeywords(TypedDict, total=False):
    """The ICMP rates and bursts: Engine.set_icmp_limits's keywords."""

    icmp_rate: int
    icmp_burst: int
    icmp_source_rate: int
    icmp_source_burst: int
    icmp_worker_rate: int
    icmp_worker_burst: int

class IcmpKeywords(IcmpRateKeywords, total=False):
    """The ICMP limits among Engine's keywords (docs/engine.md has the defaults)."""

    icmp_sources: int

class PortStatus(TypedDict):
    name: str
    ifindex: int
    mac: str
    queues: int
    mode: Literal["copy", "zero-copy"]
    xdp_mode: Literal["native", "generic"]
    mtu: int
    link_up: bool
    recoveries: int
    """Times the link came back up and the port was recovered."""

class SubInterfaceCounters(TypedDict):
    port: int
    name: str
    vlan: int
    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int

class WorkerCounters(TypedDict):
    worker: int
    drops: dict[str, int]
    port_drops: dict[str, dict[str, int]]
    """The same drops by ingress port name, then reason (zeros included); "" for frames of
    no known port, present only when there were any."""
    icmp: dict[str, int]
    rx_packets: int
    tx_packets: int
    tx_ring_full: int
    passes: int

class FrameAccounting(TypedDict):
    """Where every UMEM frame of a worker is; free+fill+rx+tx+completion+held == total."""

    total: int
    free: int
    fill: int
    rx: int
    tx: int
    completion: int
    held: int

class XskCounters(TypedDict):
    worker: int
    port: int
    queue: int
    mode: Literal["copy", "zero-copy"]
    statistics: dict[str, int]
    """XDP_STATISTICS: rx_dropped, rx_invalid_descs, tx_invalid_descs, rx_ring_full,
    rx_fill_ring_empty_descs, tx_ring_empty_descs."""

class MemberCounters(TypedDict):
    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int
    drops: dict[str, int]
    """Only the reasons counted."""

class EngineCounters(TypedDict):
    ports: list[SubInterfaceCounters]
    """One entry per sub-interface, summed over workers."""
    drops: dict[str, int]
    """Every drop reason, zeros included, summed over workers."""
    icmp: dict[str, int]
    workers: list[WorkerCounters]
    accounting: list[FrameAccounting]
    xsk: list[XskCounters]
    steering: dict[str, int]
    """The XDP program's counters: steered, passed, no_socket."""
    edge: dict[str, dict[str, int]]
    """The XDP program's edge drops by port name: foreign_ethertype, unknown_source_mac."""
    tx_ring_full: int
    """Forwarded frames dropped because an egress tx ring stayed full."""
    members: dict[int, MemberCounters]
    """By member id (UNKNOWN_MEMBER: unknown source MACs), only those with something counted."""

class Engine:
    """The AF_XDP engine over `fib`: worker i owns queue i of every port. Adjacency.port in
    the FIB is the index of the port in `ports`. Worker threads never touch Python."""

    def __init__(
        self,
        fib: Fib,
        *,
        ports: list[PortDict],
        workers: int | None = None,
        netns: str | None = None,
        busy_poll: bool = False,
        bind_mode: Literal["auto", "copy", "zero-copy"] = "auto",
        attach_mode: Literal["auto", "native", "generic"] = "auto",
        icmp_rate: int = 1000,
        icmp_burst: int = 100,
        icmp_source_rate: int = 1,
        icmp_source_burst: int = 6,
        icmp_sources: int = 4096,
        icmp_worker_rate: int = 1000,
        icmp_worker_burst: int = 50,
        pin_cpus: bool = False,
        frames_per_worker: int | None = None,
        frame_size: Literal[2048, 4096] = 2048,
        realtime_priority: int | None = None,
    ) -> None:
        """Checks the configuration; raises ValueError naming the field
        (e.g. `ports[0].mtu: 70000 is not between 1280 ... and 9216`). Starts nothing.

        `realtime_priority` (1 to 99): the workers run SCHED_FIFO at that priority, ahead
        of the kernel thread that receives their frames on the same core, which then runs
        only while they sleep (no receive livelock at overload); not with `busy_poll`.
        Needs CAP_SYS_NICE or an RLIMIT_RTPRIO of at least that priority; `start` raises
        EngineError without either."""
    def start(self) -> None:
        """Attaches the steering program, opens the sockets, starts the workers; returns
        once they forward (GIL released). Raises EngineError; nothing is left behind."""
    def stop(self) -> None:
        """Stops and joins the workers, closes the sockets, detaches (GIL released).
        Idempotent; counters and ports stay readable afterwards."""
    def set_icmp_limits(
        self,
        *,
        icmp_rate: int = 1000,
        icmp_burst: int = 100,
        icmp_source_rate: int = 1,
        icmp_source_burst: int = 6,
        icmp_worker_rate: int = 1000,
        icmp_worker_burst: int = 50,
    ) -> None:
        """New ICMP error limits for the running workers, in force within milliseconds;
        each bucket keeps its tokens up to its new burst. icmp_sources is fixed at start.
        Raises EngineError when the engine is not running."""
    def set_sample_rates(self, rates: list[int]) -> None:
        """Per port, in order: sFlow sampling 1 in N received frames (0 off, at most
        2**24). ValueError (nothing changed) for a wrong count or range; EngineError when
        not running."""
    def drain_samples(self, max: int = 4096) -> list[SampleDict]:
        """Frames sampled since the last call, at most max; [] when stopped."""
    def sample_stats(self) -> list[SampleStats]:
        """Per port: rate, pool, sampled, dropped (lost to a full ring), over workers."""
    def set_urpf(
        self,
        port: str,
        vlan: int,
        mode: Literal["strict", "loose", "off"],
        *,
        allow_default: bool = False,
    ) -> None:
        """Sets the uRPF check of sub-interface (port name, VLAN); the workers check by it
        from their next frame on. ValueError for an unknown port, VLAN or mode; EngineError
        when the engine is not running."""
    def urpf(self) -> list[UrpfState]:
        """Every sub-interface's uRPF policy in force (as configured when not running)."""
    def set_edge(
        self,
        port: str,
        vlan: int,
        *,
        ethertype_filter: bool = False,
        mac_filter: bool = False,
        allowed_macs: list[str] = ...,
    ) -> None:
        """Sets the XDP edge filter of sub-interface (port name, VLAN), in force for the next
        frame (the kernel's too). ValueError for an unknown port, VLAN or a bad MAC;
        EngineError when not running or the program's maps are full (the old one stays)."""
    def edge(self) -> list[EdgeState]:
        """The edge filters in force (sub-interfaces that have one); empty when stopped."""
    def refused_macs(self) -> list[RefusedMacDict]:
        """Source MACs the edge filters refused lately, most recent first (at most 256)."""
    def drain_glean(self, max: int = 256) -> list[str]:
        """Destinations dropped as glean and queued (de-duplicated, rate-limited per
        worker) since the last call, at most max, as address strings; [] when stopped."""
    def glean_stats(self) -> dict[str, int]:
        """queued, deduplicated, rate_limited, full: summed over workers."""
    @property
    def running(self) -> bool:
        """True between start() and stop()."""
    def ports(self) -> list[PortStatus]: ...
    def counters(self) -> EngineCounters: ...
    def blackhole_dropped(self, slot: int) -> int:
        """Frames the blackhole route of `slot` dropped; 0 when not running."""

# -- The controller's bulk codec (dataplane/intent) -----------------------------------------

ApplyIntent = tuple[int, list[tuple[bytes, str, int, int]]]
"""(kind, next hops as sent: (gateway bytes, port, vlan, weight)), one per distinct intent."""

class Prefixes(Sequence[str]):
    """A batch's prefixes as packed keys, in order: what the route tables and the store
    take whole; to the rest a read-only sequence of canonical prefix texts, made as read."""

    def __init__(self, texts: Iterable[str]) -> None:
        """From prefix texts; ValueError at the first that is no prefix."""
    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __iter__(self) -> Iterator[str]: ...
    @property
    def v6(self) -> int:
        """The IPv6 prefixes among them."""
    def texts(self) -> list[str]: ...
    def sort_keys(self) -> list[bytes]:
        """The store's sort key of each (controller.store.prefix_sort_key)."""
    def parts(self, index: list[int]) -> list[tuple[int, int, bytes]]:
        """(intent, key size, sort keys end to end) per intent and key size, prefix i being
        intent index[i]'s, in the order each part's first prefix comes."""

_Prefixes = Sequence[str] | Prefixes

def read_apply_request(
    data: bytes,
) -> tuple[list[ApplyIntent], list[str], Prefixes, list[int]] | None:
    """Reads a serialized corridor.v1.ApplyRequest whole (GIL released): the distinct
    intents, then per route its node, its prefix (packed, as one `Prefixes`) and its intent
    index. None when a route has a fault (read it with the generated code to name every fault);
    ValueError when the bytes are not an ApplyRequest. Node names and next hops are left to
    the caller to check, once per distinct value."""

def write_request_bytes(
    election: int, batch_id: int, ops: list[Any], types: tuple[type, ...]
) -> bytes:
    """A serialized corridor.v1.WriteRequest: the 128-bit election id, the batch id and FIB
    operations in order, corridor.common.fib values or `RouteOps`; `types` are
    corridor.common.fib's (Adjacency, NextHopGroup, Route, DeleteAdjacency, DeleteGroup,
    DeleteRoute)."""

_Refs = tuple[list[tuple[int, int]], list[tuple[int, int]]]

class IntentRoutes:
    """A node's routes as the operator intends them: prefix text -> Intent (a dict's
    interface over B-trees of prefix keys)."""

    def __init__(self) -> None: ...
    def __len__(self) -> int: ...
    @property
    def v6(self) -> int: ...
    def __contains__(self, prefix: object) -> bool: ...
    def get(self, prefix: str, default: Any = None) -> Any: ...
    def __getitem__(self, prefix: str) -> Any: ...
    def __setitem__(self, prefix: str, intent: Any) -> None: ...
    def __delitem__(self, prefix: str) -> None: ...
    def pop(self, prefix: str, *default: Any) -> Any: ...
    def keys(self) -> list[str]: ...
    def values(self) -> list[Any]: ...
    def items(self) -> Iterator[tuple[str, Any]]: ...
    def __iter__(self) -> Iterator[str]: ...
    def copy(self) -> IntentRoutes: ...
    def any_in(self, prefixes: _Prefixes) -> bool: ...
    def get_many(self, prefixes: _Prefixes) -> list[Any]: ...
    def set_many(self, prefixes: _Prefixes, index: list[int], intents: list[Any]) -> None: ...

class RouteTable:
    """A node's routes for the controller: prefix -> (kind, group), and the prefixes changed
    since the last take_dirty. Setters return the routes each group took and let go."""

    v6: int
    def __len__(self) -> int: ...
    def __contains__(self, prefix: str) -> bool: ...
    def get(self, prefix: str) -> tuple[int, int] | None: ...
    def items(self) -> list[tuple[str, int, int]]: ...
    def copy(self) -> RouteTable: ...
    def set_uniform(self, prefixes: _Prefixes, kind: int, group: int) -> _Refs: ...
    def set_indexed(
        self, prefixes: _Prefixes, index: list[int], made: list[tuple[int, int] | None]
    ) -> _Refs: ...
    def set_entries(self, prefixes: _Prefixes, entries: list[Any]) -> _Refs: ...
    def has_dirty(self) -> bool: ...
    def take_dirty(self) -> DirtyRoutes: ...
    def mark_dirty(self, older: DirtyRoutes) -> None: ...
    def diff(self, have: RouteTable, dirty: DirtyRoutes | None = None) -> RouteOps: ...
    def apply(self, ops: RouteOps) -> _Refs: ...
    def apply_tuples(self, ops: list[Any]) -> _Refs: ...

class DirtyRoutes:
    def __len__(self) -> int: ...
    def items(self) -> list[tuple[str, tuple[int, int] | None]]: ...

class RouteOps:
    """Route operations from a diff: sets, then deletes."""

    def __len__(self) -> int: ...
    def __getitem__(self, part: slice) -> RouteOps: ...
    def tuples(self) -> list[tuple[str, int, int] | tuple[str]]: ...

def fpm_scan(
    data: bytes, offset: int
) -> tuple[
    int,
    list[tuple[bool, str, int, int, int, int | None, int | None]],
    list[list[tuple[bytes | None, int, int]]],
]:
    """The routes of the whole FPM frames at the start of data[offset:] that the fast path
    takes (dataplane/intent/src/fpm.rs), read with the GIL released: where it stopped (the
    frame there is the Python decoder's), each route as (add, canonical prefix, rtm_type,
    table, protocol, index of its next-hop set or None, RTA_NH_ID or None), and the distinct
    next-hop sets as (gateway bytes or None, ifindex, weight)."""
