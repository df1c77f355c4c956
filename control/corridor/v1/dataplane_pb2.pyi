import datetime

from corridor.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AdjacencyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ADJACENCY_STATE_UNSPECIFIED: _ClassVar[AdjacencyState]
    ADJACENCY_STATE_USABLE: _ClassVar[AdjacencyState]
    ADJACENCY_STATE_UNRESOLVED: _ClassVar[AdjacencyState]
    ADJACENCY_STATE_LINK_DOWN: _ClassVar[AdjacencyState]

class RouteKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUTE_KIND_UNSPECIFIED: _ClassVar[RouteKind]
    ROUTE_KIND_FORWARD: _ClassVar[RouteKind]
    ROUTE_KIND_BLACKHOLE: _ClassVar[RouteKind]
    ROUTE_KIND_UNREACHABLE: _ClassVar[RouteKind]
    ROUTE_KIND_LOCAL: _ClassVar[RouteKind]

class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_UNSPECIFIED: _ClassVar[Action]
    ACTION_SET: _ClassVar[Action]
    ACTION_DELETE: _ClassVar[Action]

class LinkState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LINK_STATE_UNSPECIFIED: _ClassVar[LinkState]
    LINK_STATE_UP: _ClassVar[LinkState]
    LINK_STATE_DOWN: _ClassVar[LinkState]
    LINK_STATE_NOT_PRESENT: _ClassVar[LinkState]

class PortMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PORT_MODE_UNSPECIFIED: _ClassVar[PortMode]
    PORT_MODE_ZERO_COPY: _ClassVar[PortMode]
    PORT_MODE_COPY: _ClassVar[PortMode]

class XdpMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    XDP_MODE_UNSPECIFIED: _ClassVar[XdpMode]
    XDP_MODE_NATIVE: _ClassVar[XdpMode]
    XDP_MODE_GENERIC: _ClassVar[XdpMode]
ADJACENCY_STATE_UNSPECIFIED: AdjacencyState
ADJACENCY_STATE_USABLE: AdjacencyState
ADJACENCY_STATE_UNRESOLVED: AdjacencyState
ADJACENCY_STATE_LINK_DOWN: AdjacencyState
ROUTE_KIND_UNSPECIFIED: RouteKind
ROUTE_KIND_FORWARD: RouteKind
ROUTE_KIND_BLACKHOLE: RouteKind
ROUTE_KIND_UNREACHABLE: RouteKind
ROUTE_KIND_LOCAL: RouteKind
ACTION_UNSPECIFIED: Action
ACTION_SET: Action
ACTION_DELETE: Action
LINK_STATE_UNSPECIFIED: LinkState
LINK_STATE_UP: LinkState
LINK_STATE_DOWN: LinkState
LINK_STATE_NOT_PRESENT: LinkState
PORT_MODE_UNSPECIFIED: PortMode
PORT_MODE_ZERO_COPY: PortMode
PORT_MODE_COPY: PortMode
XDP_MODE_UNSPECIFIED: XdpMode
XDP_MODE_NATIVE: XdpMode
XDP_MODE_GENERIC: XdpMode

class SetPortPoliciesRequest(_message.Message):
    __slots__ = ("election_id", "policies")
    ELECTION_ID_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    election_id: _common_pb2.ElectionId
    policies: _containers.RepeatedCompositeFieldContainer[_common_pb2.PortPolicy]
    def __init__(self, election_id: _Optional[_Union[_common_pb2.ElectionId, _Mapping]] = ..., policies: _Optional[_Iterable[_Union[_common_pb2.PortPolicy, _Mapping]]] = ...) -> None: ...

class SetPortPoliciesResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPortPoliciesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RefusedSourceMac(_message.Message):
    __slots__ = ("port", "vlan", "mac", "packets", "last_seen")
    PORT_FIELD_NUMBER: _ClassVar[int]
    VLAN_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    PACKETS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    port: str
    vlan: int
    mac: bytes
    packets: int
    last_seen: _timestamp_pb2.Timestamp
    def __init__(self, port: _Optional[str] = ..., vlan: _Optional[int] = ..., mac: _Optional[bytes] = ..., packets: _Optional[int] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListPortPoliciesResponse(_message.Message):
    __slots__ = ("policies", "refused_macs")
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    REFUSED_MACS_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[_common_pb2.PortPolicy]
    refused_macs: _containers.RepeatedCompositeFieldContainer[RefusedSourceMac]
    def __init__(self, policies: _Optional[_Iterable[_Union[_common_pb2.PortPolicy, _Mapping]]] = ..., refused_macs: _Optional[_Iterable[_Union[RefusedSourceMac, _Mapping]]] = ...) -> None: ...

class ResetElectionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResetElectionResponse(_message.Message):
    __slots__ = ("previous",)
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    previous: _common_pb2.ElectionId
    def __init__(self, previous: _Optional[_Union[_common_pb2.ElectionId, _Mapping]] = ...) -> None: ...

class Adjacency(_message.Message):
    __slots__ = ("id", "port", "vlan", "src_mac", "dst_mac", "gateway", "state", "neighbour_mac")
    ID_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    VLAN_FIELD_NUMBER: _ClassVar[int]
    SRC_MAC_FIELD_NUMBER: _ClassVar[int]
    DST_MAC_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOUR_MAC_FIELD_NUMBER: _ClassVar[int]
    id: int
    port: str
    vlan: int
    src_mac: bytes
    dst_mac: bytes
    gateway: bytes
    state: AdjacencyState
    neighbour_mac: bytes
    def __init__(self, id: _Optional[int] = ..., port: _Optional[str] = ..., vlan: _Optional[int] = ..., src_mac: _Optional[bytes] = ..., dst_mac: _Optional[bytes] = ..., gateway: _Optional[bytes] = ..., state: _Optional[_Union[AdjacencyState, str]] = ..., neighbour_mac: _Optional[bytes] = ...) -> None: ...

class NextHopGroup(_message.Message):
    __slots__ = ("id", "members")
    class Member(_message.Message):
        __slots__ = ("adjacency_id", "weight")
        ADJACENCY_ID_FIELD_NUMBER: _ClassVar[int]
        WEIGHT_FIELD_NUMBER: _ClassVar[int]
        adjacency_id: int
        weight: int
        def __init__(self, adjacency_id: _Optional[int] = ..., weight: _Optional[int] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    id: int
    members: _containers.RepeatedCompositeFieldContainer[NextHopGroup.Member]
    def __init__(self, id: _Optional[int] = ..., members: _Optional[_Iterable[_Union[NextHopGroup.Member, _Mapping]]] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("prefix", "kind", "next_hop_group_id")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NEXT_HOP_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    prefix: _common_pb2.IpPrefix
    kind: RouteKind
    next_hop_group_id: int
    def __init__(self, prefix: _Optional[_Union[_common_pb2.IpPrefix, _Mapping]] = ..., kind: _Optional[_Union[RouteKind, str]] = ..., next_hop_group_id: _Optional[int] = ...) -> None: ...

class Member(_message.Message):
    __slots__ = ("id", "port", "vlan", "mac", "name", "filter_sources", "allowed_sources")
    ID_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    VLAN_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FILTER_SOURCES_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_SOURCES_FIELD_NUMBER: _ClassVar[int]
    id: int
    port: str
    vlan: int
    mac: bytes
    name: str
    filter_sources: bool
    allowed_sources: _containers.RepeatedCompositeFieldContainer[_common_pb2.IpPrefix]
    def __init__(self, id: _Optional[int] = ..., port: _Optional[str] = ..., vlan: _Optional[int] = ..., mac: _Optional[bytes] = ..., name: _Optional[str] = ..., filter_sources: _Optional[bool] = ..., allowed_sources: _Optional[_Iterable[_Union[_common_pb2.IpPrefix, _Mapping]]] = ...) -> None: ...

class Operation(_message.Message):
    __slots__ = ("action", "adjacency", "next_hop_group", "route", "member")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ADJACENCY_FIELD_NUMBER: _ClassVar[int]
    NEXT_HOP_GROUP_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    action: Action
    adjacency: Adjacency
    next_hop_group: NextHopGroup
    route: Route
    member: Member
    def __init__(self, action: _Optional[_Union[Action, str]] = ..., adjacency: _Optional[_Union[Adjacency, _Mapping]] = ..., next_hop_group: _Optional[_Union[NextHopGroup, _Mapping]] = ..., route: _Optional[_Union[Route, _Mapping]] = ..., member: _Optional[_Union[Member, _Mapping]] = ...) -> None: ...

class WriteRequest(_message.Message):
    __slots__ = ("election_id", "operations", "batch_id")
    ELECTION_ID_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    election_id: _common_pb2.ElectionId
    operations: _containers.RepeatedCompositeFieldContainer[Operation]
    batch_id: int
    def __init__(self, election_id: _Optional[_Union[_common_pb2.ElectionId, _Mapping]] = ..., operations: _Optional[_Iterable[_Union[Operation, _Mapping]]] = ..., batch_id: _Optional[int] = ...) -> None: ...

class WriteResponse(_message.Message):
    __slots__ = ("batch_id", "operations", "generation")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    batch_id: int
    operations: int
    generation: int
    def __init__(self, batch_id: _Optional[int] = ..., operations: _Optional[int] = ..., generation: _Optional[int] = ...) -> None: ...

class WriteError(_message.Message):
    __slots__ = ("batch_id", "violations")
    class Violation(_message.Message):
        __slots__ = ("operation", "field", "description")
        OPERATION_FIELD_NUMBER: _ClassVar[int]
        FIELD_FIELD_NUMBER: _ClassVar[int]
        DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
        operation: int
        field: str
        description: str
        def __init__(self, operation: _Optional[int] = ..., field: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    batch_id: int
    violations: _containers.RepeatedCompositeFieldContainer[WriteError.Violation]
    def __init__(self, batch_id: _Optional[int] = ..., violations: _Optional[_Iterable[_Union[WriteError.Violation, _Mapping]]] = ...) -> None: ...

class ReadRequest(_message.Message):
    __slots__ = ("head_only",)
    HEAD_ONLY_FIELD_NUMBER: _ClassVar[int]
    head_only: bool
    def __init__(self, head_only: _Optional[bool] = ...) -> None: ...

class ReadResponse(_message.Message):
    __slots__ = ("generation", "ports", "adjacencies", "next_hop_groups", "routes", "members")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    ADJACENCIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_HOP_GROUPS_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    generation: int
    ports: _containers.RepeatedCompositeFieldContainer[Port]
    adjacencies: _containers.RepeatedCompositeFieldContainer[Adjacency]
    next_hop_groups: _containers.RepeatedCompositeFieldContainer[NextHopGroup]
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    members: _containers.RepeatedCompositeFieldContainer[Member]
    def __init__(self, generation: _Optional[int] = ..., ports: _Optional[_Iterable[_Union[Port, _Mapping]]] = ..., adjacencies: _Optional[_Iterable[_Union[Adjacency, _Mapping]]] = ..., next_hop_groups: _Optional[_Iterable[_Union[NextHopGroup, _Mapping]]] = ..., routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ...) -> None: ...

class SubInterface(_message.Message):
    __slots__ = ("vlan", "addresses", "ifindex")
    VLAN_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    IFINDEX_FIELD_NUMBER: _ClassVar[int]
    vlan: int
    addresses: _containers.RepeatedCompositeFieldContainer[_common_pb2.InterfaceAddress]
    ifindex: int
    def __init__(self, vlan: _Optional[int] = ..., addresses: _Optional[_Iterable[_Union[_common_pb2.InterfaceAddress, _Mapping]]] = ..., ifindex: _Optional[int] = ...) -> None: ...

class Port(_message.Message):
    __slots__ = ("name", "link_state", "mode", "queues", "mtu", "addresses", "sub_interfaces", "xdp_mode", "mac", "link_recoveries", "ifindex")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LINK_STATE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    SUB_INTERFACES_FIELD_NUMBER: _ClassVar[int]
    XDP_MODE_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    LINK_RECOVERIES_FIELD_NUMBER: _ClassVar[int]
    IFINDEX_FIELD_NUMBER: _ClassVar[int]
    name: str
    link_state: LinkState
    mode: PortMode
    queues: int
    mtu: int
    addresses: _containers.RepeatedCompositeFieldContainer[_common_pb2.InterfaceAddress]
    sub_interfaces: _containers.RepeatedCompositeFieldContainer[SubInterface]
    xdp_mode: XdpMode
    mac: bytes
    link_recoveries: int
    ifindex: int
    def __init__(self, name: _Optional[str] = ..., link_state: _Optional[_Union[LinkState, str]] = ..., mode: _Optional[_Union[PortMode, str]] = ..., queues: _Optional[int] = ..., mtu: _Optional[int] = ..., addresses: _Optional[_Iterable[_Union[_common_pb2.InterfaceAddress, _Mapping]]] = ..., sub_interfaces: _Optional[_Iterable[_Union[SubInterface, _Mapping]]] = ..., xdp_mode: _Optional[_Union[XdpMode, str]] = ..., mac: _Optional[bytes] = ..., link_recoveries: _Optional[int] = ..., ifindex: _Optional[int] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("address",)
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    address: bytes
    def __init__(self, address: _Optional[bytes] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("route", "group", "adjacencies", "blackhole_dropped_packets")
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    ADJACENCIES_FIELD_NUMBER: _ClassVar[int]
    BLACKHOLE_DROPPED_PACKETS_FIELD_NUMBER: _ClassVar[int]
    route: Route
    group: NextHopGroup
    adjacencies: _containers.RepeatedCompositeFieldContainer[Adjacency]
    blackhole_dropped_packets: int
    def __init__(self, route: _Optional[_Union[Route, _Mapping]] = ..., group: _Optional[_Union[NextHopGroup, _Mapping]] = ..., adjacencies: _Optional[_Iterable[_Union[Adjacency, _Mapping]]] = ..., blackhole_dropped_packets: _Optional[int] = ...) -> None: ...

class ListPortsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPortsResponse(_message.Message):
    __slots__ = ("ports",)
    PORTS_FIELD_NUMBER: _ClassVar[int]
    ports: _containers.RepeatedCompositeFieldContainer[Port]
    def __init__(self, ports: _Optional[_Iterable[_Union[Port, _Mapping]]] = ...) -> None: ...

class GetCountersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StreamCountersRequest(_message.Message):
    __slots__ = ("interval_ms",)
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    interval_ms: int
    def __init__(self, interval_ms: _Optional[int] = ...) -> None: ...

class InterfaceCounters(_message.Message):
    __slots__ = ("port", "vlan", "rx_packets", "rx_bytes", "tx_packets", "tx_bytes")
    PORT_FIELD_NUMBER: _ClassVar[int]
    VLAN_FIELD_NUMBER: _ClassVar[int]
    RX_PACKETS_FIELD_NUMBER: _ClassVar[int]
    RX_BYTES_FIELD_NUMBER: _ClassVar[int]
    TX_PACKETS_FIELD_NUMBER: _ClassVar[int]
    TX_BYTES_FIELD_NUMBER: _ClassVar[int]
    port: str
    vlan: int
    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int
    def __init__(self, port: _Optional[str] = ..., vlan: _Optional[int] = ..., rx_packets: _Optional[int] = ..., rx_bytes: _Optional[int] = ..., tx_packets: _Optional[int] = ..., tx_bytes: _Optional[int] = ...) -> None: ...

class WorkerCounters(_message.Message):
    __slots__ = ("worker", "rx_packets", "tx_packets", "dropped_packets", "rx_ring_dropped")
    WORKER_FIELD_NUMBER: _ClassVar[int]
    RX_PACKETS_FIELD_NUMBER: _ClassVar[int]
    TX_PACKETS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_PACKETS_FIELD_NUMBER: _ClassVar[int]
    RX_RING_DROPPED_FIELD_NUMBER: _ClassVar[int]
    worker: int
    rx_packets: int
    tx_packets: int
    dropped_packets: int
    rx_ring_dropped: int
    def __init__(self, worker: _Optional[int] = ..., rx_packets: _Optional[int] = ..., tx_packets: _Optional[int] = ..., dropped_packets: _Optional[int] = ..., rx_ring_dropped: _Optional[int] = ...) -> None: ...

class DropCounters(_message.Message):
    __slots__ = ("reason", "worker", "packets", "port")
    REASON_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    PACKETS_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    reason: str
    worker: int
    packets: int
    port: str
    def __init__(self, reason: _Optional[str] = ..., worker: _Optional[int] = ..., packets: _Optional[int] = ..., port: _Optional[str] = ...) -> None: ...

class NextHopState(_message.Message):
    __slots__ = ("adjacencies", "unresolved", "link_down", "empty_groups")
    ADJACENCIES_FIELD_NUMBER: _ClassVar[int]
    UNRESOLVED_FIELD_NUMBER: _ClassVar[int]
    LINK_DOWN_FIELD_NUMBER: _ClassVar[int]
    EMPTY_GROUPS_FIELD_NUMBER: _ClassVar[int]
    adjacencies: int
    unresolved: int
    link_down: int
    empty_groups: int
    def __init__(self, adjacencies: _Optional[int] = ..., unresolved: _Optional[int] = ..., link_down: _Optional[int] = ..., empty_groups: _Optional[int] = ...) -> None: ...

class MemberCounters(_message.Message):
    __slots__ = ("id", "name", "port", "vlan", "mac", "unknown", "rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "drops")
    class Drop(_message.Message):
        __slots__ = ("reason", "packets")
        REASON_FIELD_NUMBER: _ClassVar[int]
        PACKETS_FIELD_NUMBER: _ClassVar[int]
        reason: str
        packets: int
        def __init__(self, reason: _Optional[str] = ..., packets: _Optional[int] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    VLAN_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    RX_PACKETS_FIELD_NUMBER: _ClassVar[int]
    RX_BYTES_FIELD_NUMBER: _ClassVar[int]
    TX_PACKETS_FIELD_NUMBER: _ClassVar[int]
    TX_BYTES_FIELD_NUMBER: _ClassVar[int]
    DROPS_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    port: str
    vlan: int
    mac: bytes
    unknown: bool
    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int
    drops: _containers.RepeatedCompositeFieldContainer[MemberCounters.Drop]
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., port: _Optional[str] = ..., vlan: _Optional[int] = ..., mac: _Optional[bytes] = ..., unknown: _Optional[bool] = ..., rx_packets: _Optional[int] = ..., rx_bytes: _Optional[int] = ..., tx_packets: _Optional[int] = ..., tx_bytes: _Optional[int] = ..., drops: _Optional[_Iterable[_Union[MemberCounters.Drop, _Mapping]]] = ...) -> None: ...

class GleanState(_message.Message):
    __slots__ = ("hosts", "pending", "queued", "deduplicated", "engine_rate_limited", "full", "resolving", "resolved", "failed", "aged", "lost", "mac_changes", "rate_limited", "table_full", "ignored", "asked", "taken_over")
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    DEDUPLICATED_FIELD_NUMBER: _ClassVar[int]
    ENGINE_RATE_LIMITED_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    RESOLVING_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    AGED_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    MAC_CHANGES_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITED_FIELD_NUMBER: _ClassVar[int]
    TABLE_FULL_FIELD_NUMBER: _ClassVar[int]
    IGNORED_FIELD_NUMBER: _ClassVar[int]
    ASKED_FIELD_NUMBER: _ClassVar[int]
    TAKEN_OVER_FIELD_NUMBER: _ClassVar[int]
    hosts: int
    pending: int
    queued: int
    deduplicated: int
    engine_rate_limited: int
    full: int
    resolving: int
    resolved: int
    failed: int
    aged: int
    lost: int
    mac_changes: int
    rate_limited: int
    table_full: int
    ignored: int
    asked: int
    taken_over: int
    def __init__(self, hosts: _Optional[int] = ..., pending: _Optional[int] = ..., queued: _Optional[int] = ..., deduplicated: _Optional[int] = ..., engine_rate_limited: _Optional[int] = ..., full: _Optional[int] = ..., resolving: _Optional[int] = ..., resolved: _Optional[int] = ..., failed: _Optional[int] = ..., aged: _Optional[int] = ..., lost: _Optional[int] = ..., mac_changes: _Optional[int] = ..., rate_limited: _Optional[int] = ..., table_full: _Optional[int] = ..., ignored: _Optional[int] = ..., asked: _Optional[int] = ..., taken_over: _Optional[int] = ...) -> None: ...

class Counters(_message.Message):
    __slots__ = ("time", "interfaces", "workers", "drops", "next_hops", "members", "glean")
    TIME_FIELD_NUMBER: _ClassVar[int]
    INTERFACES_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    DROPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_HOPS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    GLEAN_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    interfaces: _containers.RepeatedCompositeFieldContainer[InterfaceCounters]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerCounters]
    drops: _containers.RepeatedCompositeFieldContainer[DropCounters]
    next_hops: NextHopState
    members: _containers.RepeatedCompositeFieldContainer[MemberCounters]
    glean: GleanState
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., interfaces: _Optional[_Iterable[_Union[InterfaceCounters, _Mapping]]] = ..., workers: _Optional[_Iterable[_Union[WorkerCounters, _Mapping]]] = ..., drops: _Optional[_Iterable[_Union[DropCounters, _Mapping]]] = ..., next_hops: _Optional[_Union[NextHopState, _Mapping]] = ..., members: _Optional[_Iterable[_Union[MemberCounters, _Mapping]]] = ..., glean: _Optional[_Union[GleanState, _Mapping]] = ...) -> None: ...
