from google.protobuf import any_pb2 as _any_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UrpfMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    URPF_MODE_UNSPECIFIED: _ClassVar[UrpfMode]
    URPF_MODE_OFF: _ClassVar[UrpfMode]
    URPF_MODE_LOOSE: _ClassVar[UrpfMode]
    URPF_MODE_STRICT: _ClassVar[UrpfMode]
URPF_MODE_UNSPECIFIED: UrpfMode
URPF_MODE_OFF: UrpfMode
URPF_MODE_LOOSE: UrpfMode
URPF_MODE_STRICT: UrpfMode

class IpPrefix(_message.Message):
    __slots__ = ("address", "length")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    address: bytes
    length: int
    def __init__(self, address: _Optional[bytes] = ..., length: _Optional[int] = ...) -> None: ...

class InterfaceAddress(_message.Message):
    __slots__ = ("address", "prefix_length")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PREFIX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    address: bytes
    prefix_length: int
    def __init__(self, address: _Optional[bytes] = ..., prefix_length: _Optional[int] = ...) -> None: ...

class ElectionId(_message.Message):
    __slots__ = ("high", "low")
    HIGH_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    high: int
    low: int
    def __init__(self, high: _Optional[int] = ..., low: _Optional[int] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("code", "message", "details")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    details: _containers.RepeatedCompositeFieldContainer[_any_pb2.Any]
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., details: _Optional[_Iterable[_Union[_any_pb2.Any, _Mapping]]] = ...) -> None: ...

class EdgePolicy(_message.Message):
    __slots__ = ("urpf", "urpf_allow_default", "ethertype_filter", "mac_filter", "allowed_macs", "port_security")
    URPF_FIELD_NUMBER: _ClassVar[int]
    URPF_ALLOW_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    ETHERTYPE_FILTER_FIELD_NUMBER: _ClassVar[int]
    MAC_FILTER_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MACS_FIELD_NUMBER: _ClassVar[int]
    PORT_SECURITY_FIELD_NUMBER: _ClassVar[int]
    urpf: UrpfMode
    urpf_allow_default: bool
    ethertype_filter: bool
    mac_filter: bool
    allowed_macs: _containers.RepeatedScalarFieldContainer[bytes]
    port_security: bool
    def __init__(self, urpf: _Optional[_Union[UrpfMode, str]] = ..., urpf_allow_default: _Optional[bool] = ..., ethertype_filter: _Optional[bool] = ..., mac_filter: _Optional[bool] = ..., allowed_macs: _Optional[_Iterable[bytes]] = ..., port_security: _Optional[bool] = ...) -> None: ...

class PortPolicy(_message.Message):
    __slots__ = ("port", "vlan", "policy")
    PORT_FIELD_NUMBER: _ClassVar[int]
    VLAN_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    port: str
    vlan: int
    policy: EdgePolicy
    def __init__(self, port: _Optional[str] = ..., vlan: _Optional[int] = ..., policy: _Optional[_Union[EdgePolicy, _Mapping]] = ...) -> None: ...
