import datetime

from corridor.v1 import common_pb2 as _common_pb2
from corridor.v1 import dataplane_pb2 as _dataplane_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SyncState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SYNC_STATE_UNSPECIFIED: _ClassVar[SyncState]
    SYNC_STATE_CONNECTING: _ClassVar[SyncState]
    SYNC_STATE_SYNCING: _ClassVar[SyncState]
    SYNC_STATE_IN_SYNC: _ClassVar[SyncState]
    SYNC_STATE_FAILING: _ClassVar[SyncState]

class RouteSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUTE_SOURCE_UNSPECIFIED: _ClassVar[RouteSource]
    ROUTE_SOURCE_STATIC: _ClassVar[RouteSource]
    ROUTE_SOURCE_BGP: _ClassVar[RouteSource]
SYNC_STATE_UNSPECIFIED: SyncState
SYNC_STATE_CONNECTING: SyncState
SYNC_STATE_SYNCING: SyncState
SYNC_STATE_IN_SYNC: SyncState
SYNC_STATE_FAILING: SyncState
ROUTE_SOURCE_UNSPECIFIED: RouteSource
ROUTE_SOURCE_STATIC: RouteSource
ROUTE_SOURCE_BGP: RouteSource

class SetPortPolicyRequest(_message.Message):
    __slots__ = ("node", "policy")
    NODE_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    node: str
    policy: _common_pb2.PortPolicy
    def __init__(self, node: _Optional[str] = ..., policy: _Optional[_Union[_common_pb2.PortPolicy, _Mapping]] = ...) -> None: ...

class SetPortPolicyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNodePortPoliciesRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: str
    def __init__(self, node: _Optional[str] = ...) -> None: ...

class NodePortPolicies(_message.Message):
    __slots__ = ("stored", "in_force", "refused_macs", "agent_error", "push_error")
    STORED_FIELD_NUMBER: _ClassVar[int]
    IN_FORCE_FIELD_NUMBER: _ClassVar[int]
    REFUSED_MACS_FIELD_NUMBER: _ClassVar[int]
    AGENT_ERROR_FIELD_NUMBER: _ClassVar[int]
    PUSH_ERROR_FIELD_NUMBER: _ClassVar[int]
    stored: _containers.RepeatedCompositeFieldContainer[_common_pb2.PortPolicy]
    in_force: _containers.RepeatedCompositeFieldContainer[_common_pb2.PortPolicy]
    refused_macs: _containers.RepeatedCompositeFieldContainer[_dataplane_pb2.RefusedSourceMac]
    agent_error: str
    push_error: str
    def __init__(self, stored: _Optional[_Iterable[_Union[_common_pb2.PortPolicy, _Mapping]]] = ..., in_force: _Optional[_Iterable[_Union[_common_pb2.PortPolicy, _Mapping]]] = ..., refused_macs: _Optional[_Iterable[_Union[_dataplane_pb2.RefusedSourceMac, _Mapping]]] = ..., agent_error: _Optional[str] = ..., push_error: _Optional[str] = ...) -> None: ...

class MemberIntent(_message.Message):
    __slots__ = ("name", "node", "port", "vlan", "mac", "id", "filter_sources", "allowed_sources", "from_bgp", "bgp_next_hops", "bgp_sources", "bgp_prefixes", "bgp_over_limit", "bgp_pending")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    VLAN_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    FILTER_SOURCES_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_SOURCES_FIELD_NUMBER: _ClassVar[int]
    FROM_BGP_FIELD_NUMBER: _ClassVar[int]
    BGP_NEXT_HOPS_FIELD_NUMBER: _ClassVar[int]
    BGP_SOURCES_FIELD_NUMBER: _ClassVar[int]
    BGP_PREFIXES_FIELD_NUMBER: _ClassVar[int]
    BGP_OVER_LIMIT_FIELD_NUMBER: _ClassVar[int]
    BGP_PENDING_FIELD_NUMBER: _ClassVar[int]
    name: str
    node: str
    port: str
    vlan: int
    mac: bytes
    id: int
    filter_sources: bool
    allowed_sources: _containers.RepeatedCompositeFieldContainer[_common_pb2.IpPrefix]
    from_bgp: bool
    bgp_next_hops: _containers.RepeatedScalarFieldContainer[bytes]
    bgp_sources: _containers.RepeatedCompositeFieldContainer[_common_pb2.IpPrefix]
    bgp_prefixes: int
    bgp_over_limit: bool
    bgp_pending: bool
    def __init__(self, name: _Optional[str] = ..., node: _Optional[str] = ..., port: _Optional[str] = ..., vlan: _Optional[int] = ..., mac: _Optional[bytes] = ..., id: _Optional[int] = ..., filter_sources: _Optional[bool] = ..., allowed_sources: _Optional[_Iterable[_Union[_common_pb2.IpPrefix, _Mapping]]] = ..., from_bgp: _Optional[bool] = ..., bgp_next_hops: _Optional[_Iterable[bytes]] = ..., bgp_sources: _Optional[_Iterable[_Union[_common_pb2.IpPrefix, _Mapping]]] = ..., bgp_prefixes: _Optional[int] = ..., bgp_over_limit: _Optional[bool] = ..., bgp_pending: _Optional[bool] = ...) -> None: ...

class SetMemberFilterRequest(_message.Message):
    __slots__ = ("name", "filter_sources", "allowed_sources", "from_bgp", "bgp_next_hops")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FILTER_SOURCES_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_SOURCES_FIELD_NUMBER: _ClassVar[int]
    FROM_BGP_FIELD_NUMBER: _ClassVar[int]
    BGP_NEXT_HOPS_FIELD_NUMBER: _ClassVar[int]
    name: str
    filter_sources: bool
    allowed_sources: _containers.RepeatedCompositeFieldContainer[_common_pb2.IpPrefix]
    from_bgp: bool
    bgp_next_hops: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, name: _Optional[str] = ..., filter_sources: _Optional[bool] = ..., allowed_sources: _Optional[_Iterable[_Union[_common_pb2.IpPrefix, _Mapping]]] = ..., from_bgp: _Optional[bool] = ..., bgp_next_hops: _Optional[_Iterable[bytes]] = ...) -> None: ...

class AddMemberRequest(_message.Message):
    __slots__ = ("member",)
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    member: MemberIntent
    def __init__(self, member: _Optional[_Union[MemberIntent, _Mapping]] = ...) -> None: ...

class RemoveMemberRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListMembersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListMembersResponse(_message.Message):
    __slots__ = ("members",)
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[MemberIntent]
    def __init__(self, members: _Optional[_Iterable[_Union[MemberIntent, _Mapping]]] = ...) -> None: ...

class ListMemberSamplesRequest(_message.Message):
    __slots__ = ("name", "start", "end")
    NAME_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    name: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class MemberSample(_message.Message):
    __slots__ = ("time", "rx_bytes", "tx_bytes", "rx_packets", "tx_packets")
    TIME_FIELD_NUMBER: _ClassVar[int]
    RX_BYTES_FIELD_NUMBER: _ClassVar[int]
    TX_BYTES_FIELD_NUMBER: _ClassVar[int]
    RX_PACKETS_FIELD_NUMBER: _ClassVar[int]
    TX_PACKETS_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rx_bytes: _Optional[int] = ..., tx_bytes: _Optional[int] = ..., rx_packets: _Optional[int] = ..., tx_packets: _Optional[int] = ...) -> None: ...

class ListMemberSamplesResponse(_message.Message):
    __slots__ = ("samples",)
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[MemberSample]
    def __init__(self, samples: _Optional[_Iterable[_Union[MemberSample, _Mapping]]] = ...) -> None: ...

class NodeTls(_message.Message):
    __slots__ = ("ca", "cert", "key", "server_name")
    CA_FIELD_NUMBER: _ClassVar[int]
    CERT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SERVER_NAME_FIELD_NUMBER: _ClassVar[int]
    ca: str
    cert: str
    key: str
    server_name: str
    def __init__(self, ca: _Optional[str] = ..., cert: _Optional[str] = ..., key: _Optional[str] = ..., server_name: _Optional[str] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("name", "address", "tls")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    tls: NodeTls
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., tls: _Optional[_Union[NodeTls, _Mapping]] = ...) -> None: ...

class RegisterNodeRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: Node
    def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class RegisterNodeResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class DeregisterNodeRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeregisterNodeResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeStatus]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeStatus, _Mapping]]] = ...) -> None: ...

class GetNodeStatusRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class FibSizes(_message.Message):
    __slots__ = ("ipv4_routes", "ipv6_routes", "next_hop_groups", "adjacencies")
    IPV4_ROUTES_FIELD_NUMBER: _ClassVar[int]
    IPV6_ROUTES_FIELD_NUMBER: _ClassVar[int]
    NEXT_HOP_GROUPS_FIELD_NUMBER: _ClassVar[int]
    ADJACENCIES_FIELD_NUMBER: _ClassVar[int]
    ipv4_routes: int
    ipv6_routes: int
    next_hop_groups: int
    adjacencies: int
    def __init__(self, ipv4_routes: _Optional[int] = ..., ipv6_routes: _Optional[int] = ..., next_hop_groups: _Optional[int] = ..., adjacencies: _Optional[int] = ...) -> None: ...

class CountersSummary(_message.Message):
    __slots__ = ("rx_packets", "tx_packets", "dropped_packets")
    RX_PACKETS_FIELD_NUMBER: _ClassVar[int]
    TX_PACKETS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_PACKETS_FIELD_NUMBER: _ClassVar[int]
    rx_packets: int
    tx_packets: int
    dropped_packets: int
    def __init__(self, rx_packets: _Optional[int] = ..., tx_packets: _Optional[int] = ..., dropped_packets: _Optional[int] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("node", "state", "connected", "in_sync", "last_error", "last_error_time", "synced_revision", "lag_seconds", "intended", "installed", "agent_generation", "reconnects", "drift_detected", "drift_entries", "last_full_sync_seconds", "last_full_sync_operations", "counters", "retries", "cleared_error", "cleared_error_time", "bgp", "leadership")
    NODE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    IN_SYNC_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_TIME_FIELD_NUMBER: _ClassVar[int]
    SYNCED_REVISION_FIELD_NUMBER: _ClassVar[int]
    LAG_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INTENDED_FIELD_NUMBER: _ClassVar[int]
    INSTALLED_FIELD_NUMBER: _ClassVar[int]
    AGENT_GENERATION_FIELD_NUMBER: _ClassVar[int]
    RECONNECTS_FIELD_NUMBER: _ClassVar[int]
    DRIFT_DETECTED_FIELD_NUMBER: _ClassVar[int]
    DRIFT_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    LAST_FULL_SYNC_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LAST_FULL_SYNC_OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    CLEARED_ERROR_FIELD_NUMBER: _ClassVar[int]
    CLEARED_ERROR_TIME_FIELD_NUMBER: _ClassVar[int]
    BGP_FIELD_NUMBER: _ClassVar[int]
    LEADERSHIP_FIELD_NUMBER: _ClassVar[int]
    node: Node
    state: SyncState
    connected: bool
    in_sync: bool
    last_error: str
    last_error_time: _timestamp_pb2.Timestamp
    synced_revision: int
    lag_seconds: float
    intended: FibSizes
    installed: FibSizes
    agent_generation: int
    reconnects: int
    drift_detected: int
    drift_entries: int
    last_full_sync_seconds: float
    last_full_sync_operations: int
    counters: CountersSummary
    retries: int
    cleared_error: str
    cleared_error_time: _timestamp_pb2.Timestamp
    bgp: BgpStatus
    leadership: Leadership
    def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ..., state: _Optional[_Union[SyncState, str]] = ..., connected: _Optional[bool] = ..., in_sync: _Optional[bool] = ..., last_error: _Optional[str] = ..., last_error_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., synced_revision: _Optional[int] = ..., lag_seconds: _Optional[float] = ..., intended: _Optional[_Union[FibSizes, _Mapping]] = ..., installed: _Optional[_Union[FibSizes, _Mapping]] = ..., agent_generation: _Optional[int] = ..., reconnects: _Optional[int] = ..., drift_detected: _Optional[int] = ..., drift_entries: _Optional[int] = ..., last_full_sync_seconds: _Optional[float] = ..., last_full_sync_operations: _Optional[int] = ..., counters: _Optional[_Union[CountersSummary, _Mapping]] = ..., retries: _Optional[int] = ..., cleared_error: _Optional[str] = ..., cleared_error_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bgp: _Optional[_Union[BgpStatus, _Mapping]] = ..., leadership: _Optional[_Union[Leadership, _Mapping]] = ...) -> None: ...

class Leadership(_message.Message):
    __slots__ = ("backend", "leading", "leader", "leader_since", "election_id", "name", "leader_changes")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    LEADING_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    LEADER_SINCE_FIELD_NUMBER: _ClassVar[int]
    ELECTION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LEADER_CHANGES_FIELD_NUMBER: _ClassVar[int]
    backend: str
    leading: bool
    leader: str
    leader_since: _timestamp_pb2.Timestamp
    election_id: int
    name: str
    leader_changes: int
    def __init__(self, backend: _Optional[str] = ..., leading: _Optional[bool] = ..., leader: _Optional[str] = ..., leader_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., election_id: _Optional[int] = ..., name: _Optional[str] = ..., leader_changes: _Optional[int] = ...) -> None: ...

class BgpStatus(_message.Message):
    __slots__ = ("listen", "connected", "sessions", "routes", "active_routes", "stale_routes", "received", "filtered", "swept", "not_installed", "not_installed_total", "fpm_errors", "fpm_messages")
    class NotInstalledEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class NotInstalledTotalEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class FpmErrorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    LISTEN_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_ROUTES_FIELD_NUMBER: _ClassVar[int]
    STALE_ROUTES_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    FILTERED_FIELD_NUMBER: _ClassVar[int]
    SWEPT_FIELD_NUMBER: _ClassVar[int]
    NOT_INSTALLED_FIELD_NUMBER: _ClassVar[int]
    NOT_INSTALLED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    FPM_ERRORS_FIELD_NUMBER: _ClassVar[int]
    FPM_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    listen: str
    connected: bool
    sessions: int
    routes: int
    active_routes: int
    stale_routes: int
    received: int
    filtered: int
    swept: int
    not_installed: _containers.ScalarMap[str, int]
    not_installed_total: _containers.ScalarMap[str, int]
    fpm_errors: _containers.ScalarMap[str, int]
    fpm_messages: int
    def __init__(self, listen: _Optional[str] = ..., connected: _Optional[bool] = ..., sessions: _Optional[int] = ..., routes: _Optional[int] = ..., active_routes: _Optional[int] = ..., stale_routes: _Optional[int] = ..., received: _Optional[int] = ..., filtered: _Optional[int] = ..., swept: _Optional[int] = ..., not_installed: _Optional[_Mapping[str, int]] = ..., not_installed_total: _Optional[_Mapping[str, int]] = ..., fpm_errors: _Optional[_Mapping[str, int]] = ..., fpm_messages: _Optional[int] = ...) -> None: ...

class NextHop(_message.Message):
    __slots__ = ("gateway", "port", "vlan", "weight")
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    VLAN_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    gateway: bytes
    port: str
    vlan: int
    weight: int
    def __init__(self, gateway: _Optional[bytes] = ..., port: _Optional[str] = ..., vlan: _Optional[int] = ..., weight: _Optional[int] = ...) -> None: ...

class RouteIntent(_message.Message):
    __slots__ = ("node", "prefix", "kind", "next_hops")
    NODE_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NEXT_HOPS_FIELD_NUMBER: _ClassVar[int]
    node: str
    prefix: _common_pb2.IpPrefix
    kind: _dataplane_pb2.RouteKind
    next_hops: _containers.RepeatedCompositeFieldContainer[NextHop]
    def __init__(self, node: _Optional[str] = ..., prefix: _Optional[_Union[_common_pb2.IpPrefix, _Mapping]] = ..., kind: _Optional[_Union[_dataplane_pb2.RouteKind, str]] = ..., next_hops: _Optional[_Iterable[_Union[NextHop, _Mapping]]] = ...) -> None: ...

class RouteKey(_message.Message):
    __slots__ = ("node", "prefix")
    NODE_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    node: str
    prefix: _common_pb2.IpPrefix
    def __init__(self, node: _Optional[str] = ..., prefix: _Optional[_Union[_common_pb2.IpPrefix, _Mapping]] = ...) -> None: ...

class ApplyRequest(_message.Message):
    __slots__ = ("routes",)
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    routes: _containers.RepeatedCompositeFieldContainer[RouteIntent]
    def __init__(self, routes: _Optional[_Iterable[_Union[RouteIntent, _Mapping]]] = ...) -> None: ...

class ApplyResponse(_message.Message):
    __slots__ = ("revision", "routes")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    revision: int
    routes: int
    def __init__(self, revision: _Optional[int] = ..., routes: _Optional[int] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("routes",)
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    routes: _containers.RepeatedCompositeFieldContainer[RouteKey]
    def __init__(self, routes: _Optional[_Iterable[_Union[RouteKey, _Mapping]]] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("revision", "deleted")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    revision: int
    deleted: int
    def __init__(self, revision: _Optional[int] = ..., deleted: _Optional[int] = ...) -> None: ...

class SetNextHopStateRequest(_message.Message):
    __slots__ = ("node", "gateway", "port", "vlan", "drained")
    NODE_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    VLAN_FIELD_NUMBER: _ClassVar[int]
    DRAINED_FIELD_NUMBER: _ClassVar[int]
    node: str
    gateway: bytes
    port: str
    vlan: int
    drained: bool
    def __init__(self, node: _Optional[str] = ..., gateway: _Optional[bytes] = ..., port: _Optional[str] = ..., vlan: _Optional[int] = ..., drained: _Optional[bool] = ...) -> None: ...

class SetNextHopStateResponse(_message.Message):
    __slots__ = ("revision", "groups")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    revision: int
    groups: int
    def __init__(self, revision: _Optional[int] = ..., groups: _Optional[int] = ...) -> None: ...

class ListRoutesRequest(_message.Message):
    __slots__ = ("node", "within", "kind", "page_size", "page_token", "source")
    NODE_FIELD_NUMBER: _ClassVar[int]
    WITHIN_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    node: str
    within: _common_pb2.IpPrefix
    kind: _dataplane_pb2.RouteKind
    page_size: int
    page_token: str
    source: RouteSource
    def __init__(self, node: _Optional[str] = ..., within: _Optional[_Union[_common_pb2.IpPrefix, _Mapping]] = ..., kind: _Optional[_Union[_dataplane_pb2.RouteKind, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., source: _Optional[_Union[RouteSource, str]] = ...) -> None: ...

class ListRoutesResponse(_message.Message):
    __slots__ = ("routes", "next_page_token", "sources", "active")
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    routes: _containers.RepeatedCompositeFieldContainer[RouteIntent]
    next_page_token: str
    sources: _containers.RepeatedScalarFieldContainer[RouteSource]
    active: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, routes: _Optional[_Iterable[_Union[RouteIntent, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., sources: _Optional[_Iterable[_Union[RouteSource, str]]] = ..., active: _Optional[_Iterable[bool]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: str
    def __init__(self, node: _Optional[str] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("revision", "snapshot", "snapshot_end", "set", "deleted")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_END_FIELD_NUMBER: _ClassVar[int]
    SET_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    revision: int
    snapshot: bool
    snapshot_end: bool
    set: _containers.RepeatedCompositeFieldContainer[RouteIntent]
    deleted: _containers.RepeatedCompositeFieldContainer[RouteKey]
    def __init__(self, revision: _Optional[int] = ..., snapshot: _Optional[bool] = ..., snapshot_end: _Optional[bool] = ..., set: _Optional[_Iterable[_Union[RouteIntent, _Mapping]]] = ..., deleted: _Optional[_Iterable[_Union[RouteKey, _Mapping]]] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Stats(_message.Message):
    __slots__ = ("revision", "intent", "nodes", "node_status", "bgp", "leadership")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    INTENT_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    NODE_STATUS_FIELD_NUMBER: _ClassVar[int]
    BGP_FIELD_NUMBER: _ClassVar[int]
    LEADERSHIP_FIELD_NUMBER: _ClassVar[int]
    revision: int
    intent: FibSizes
    nodes: int
    node_status: _containers.RepeatedCompositeFieldContainer[NodeStatus]
    bgp: FibSizes
    leadership: Leadership
    def __init__(self, revision: _Optional[int] = ..., intent: _Optional[_Union[FibSizes, _Mapping]] = ..., nodes: _Optional[int] = ..., node_status: _Optional[_Iterable[_Union[NodeStatus, _Mapping]]] = ..., bgp: _Optional[_Union[FibSizes, _Mapping]] = ..., leadership: _Optional[_Union[Leadership, _Mapping]] = ...) -> None: ...

class GetNodeCountersRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: str
    def __init__(self, node: _Optional[str] = ...) -> None: ...

class ListNodePortsRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: str
    def __init__(self, node: _Optional[str] = ...) -> None: ...

class LookupRouteRequest(_message.Message):
    __slots__ = ("node", "address")
    NODE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node: str
    address: bytes
    def __init__(self, node: _Optional[str] = ..., address: _Optional[bytes] = ...) -> None: ...
