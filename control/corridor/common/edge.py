"""Edge protection of a sub-interface (a port's untagged traffic, or one VLAN): uRPF
(RFC 3704), the ethertype filter, the source MAC filter and port security (the members'
MACs), as the agent's configuration,
its API and the controller's store all name them. One checked value type, one way to read it
from text and from protobuf, so that the three agree.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from corridor.common.errors import FieldError
from corridor.v1 import common_pb2

# Allowed source MACs per sub-interface: bounds the XDP map (and a typo's damage).
MACS_MAX = 1024


class UrpfMode(enum.Enum):
    OFF = "off"
    LOOSE = "loose"
    STRICT = "strict"


URPF_TO_PB = {
    UrpfMode.OFF: common_pb2.URPF_MODE_OFF,
    UrpfMode.LOOSE: common_pb2.URPF_MODE_LOOSE,
    UrpfMode.STRICT: common_pb2.URPF_MODE_STRICT,
}
_URPF_FROM_PB = {v: k for k, v in URPF_TO_PB.items()} | {
    common_pb2.URPF_MODE_UNSPECIFIED: UrpfMode.OFF
}


@dataclass(frozen=True, slots=True)
class EdgePolicy:
    urpf: UrpfMode = UrpfMode.OFF
    # The default route counts as a source's route.
    urpf_allow_default: bool = False
    # Only IPv4, IPv6 and ARP (behind at most one 802.1Q tag).
    ethertype_filter: bool = False
    # Only frames from `allowed_macs` (canonical "02:00:00:00:00:01" text) as source.
    mac_filter: bool = False
    allowed_macs: tuple[str, ...] = ()
    # Port security: the ethertype filter, and the MAC filter with the members registered
    # on the sub-interface (and `allowed_macs`) as the allowed sources.
    port_security: bool = False

    def xdp_filter(self, member_macs: tuple[str, ...] = ()) -> tuple[bool, bool, tuple[str, ...]]:
        """What the XDP program must check, given the MACs of the sub-interface's members:
        (ethertype filter, MAC filter, allowed MACs)."""
        if self.port_security:
            return True, True, tuple(sorted(set(self.allowed_macs) | set(member_macs)))
        return self.ethertype_filter, self.mac_filter, self.allowed_macs if self.mac_filter else ()

    def describe(self) -> str:
        """One line for an operator: "urpf=strict(+default) ethertypes mac(2)"."""
        parts = [f"urpf={self.urpf.value}" + ("+default" if self.urpf_allow_default else "")]
        if self.ethertype_filter:
            parts.append("ethertypes=ip,arp")
        if self.mac_filter:
            parts.append(f"macs={len(self.allowed_macs)}")
        if self.port_security:
            parts.append(
                "port-security=members"
                + (f"+{len(self.allowed_macs)}" if self.allowed_macs else "")
            )
        return " ".join(parts)


OFF = EdgePolicy()


def urpf_mode(text: object, field: str) -> UrpfMode:
    """A mode from its name; FieldError naming `field` otherwise."""
    for mode in UrpfMode:
        if text == mode.value:
            return mode
    raise FieldError(field, f'{text!r} is not a uRPF mode; use "strict", "loose" or "off"')


def source_mac(text: object, field: str) -> str:
    """A station's MAC address as text ("02:00:5e:00:00:01", '-' also taken), canonical
    lower-case with colons; FieldError naming `field` for anything else, or a group
    (multicast, broadcast) or all-zero address, which no station sends from."""
    if not isinstance(text, str):
        raise FieldError(field, f'{text!r} is not a MAC address such as "02:00:00:00:00:01"')
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise FieldError(field, f'{text!r} is not a MAC address such as "02:00:00:00:00:01"')
    try:
        raw = bytes(int(p, 16) for p in parts)
    except ValueError:
        raise FieldError(
            field, f'{text!r} is not a MAC address such as "02:00:00:00:00:01"'
        ) from None
    return mac_from_bytes(raw, field)


def mac_from_bytes(raw: bytes, field: str) -> str:
    if len(raw) != 6:
        raise FieldError(field, f"is {len(raw)} bytes; a MAC address is 6")
    text = raw.hex(":")
    if raw[0] & 1:
        raise FieldError(field, f"{text} is a group address; a source MAC is a station's, unicast")
    if not any(raw):
        raise FieldError(field, f"{text} is all zero; no station sends from it")
    return text


def checked_macs(macs: list[str], field: str) -> tuple[str, ...]:
    """Sorted, each once; at most MACS_MAX."""
    if len(macs) > MACS_MAX:
        raise FieldError(
            field, f"{len(macs)} MACs exceed the limit of {MACS_MAX} per sub-interface"
        )
    return tuple(sorted(set(macs)))


def policy_to_pb(policy: EdgePolicy) -> common_pb2.EdgePolicy:
    return common_pb2.EdgePolicy(
        urpf=URPF_TO_PB[policy.urpf],
        urpf_allow_default=policy.urpf_allow_default,
        ethertype_filter=policy.ethertype_filter,
        mac_filter=policy.mac_filter,
        allowed_macs=[bytes.fromhex(m.replace(":", "")) for m in policy.allowed_macs],
        port_security=policy.port_security,
    )


def policy_from_pb(pb: common_pb2.EdgePolicy, field: str) -> EdgePolicy:
    """Raises FieldError naming the bad field under `field`."""
    urpf = _URPF_FROM_PB.get(pb.urpf)
    if urpf is None:
        raise FieldError(f"{field}.urpf", f"{pb.urpf} is not a uRPF mode; use OFF, LOOSE or STRICT")
    macs = [mac_from_bytes(m, f"{field}.allowed_macs[{i}]") for i, m in enumerate(pb.allowed_macs)]
    if pb.mac_filter and not macs and not pb.port_security:
        raise FieldError(
            f"{field}.allowed_macs",
            "is empty with mac_filter set: every frame would be dropped; list the stations' MACs",
        )
    return EdgePolicy(
        urpf=urpf,
        urpf_allow_default=pb.urpf_allow_default,
        ethertype_filter=pb.ethertype_filter,
        mac_filter=pb.mac_filter,
        allowed_macs=checked_macs(macs, f"{field}.allowed_macs"),
        port_security=pb.port_security,
    )


def policy_to_json(policy: EdgePolicy) -> str:
    """The stored form: a small JSON object, stable across releases."""
    return json.dumps(
        {
            "urpf": policy.urpf.value,
            "urpf_allow_default": policy.urpf_allow_default,
            "ethertype_filter": policy.ethertype_filter,
            "mac_filter": policy.mac_filter,
            "allowed_macs": list(policy.allowed_macs),
            "port_security": policy.port_security,
        },
        sort_keys=True,
    )


def policy_from_json(text: str | bytes) -> EdgePolicy:
    """Raises ValueError (FieldError) for a stored policy that is not one."""
    d = json.loads(text)
    if not isinstance(d, dict):
        raise FieldError("policy", f"{text!r} is not a JSON object")
    macs = d.get("allowed_macs", [])
    if not isinstance(macs, list):
        raise FieldError("allowed_macs", f"{macs!r} is not a list")
    flags = {}
    for key in ("urpf_allow_default", "ethertype_filter", "mac_filter", "port_security"):
        value = d.get(key, False)
        if not isinstance(value, bool):
            raise FieldError(key, f"{value!r} is not true or false")
        flags[key] = value
    return EdgePolicy(
        urpf=urpf_mode(d.get("urpf", "off"), "urpf"),
        allowed_macs=checked_macs(
            [source_mac(m, f"allowed_macs[{i}]") for i, m in enumerate(macs)], "allowed_macs"
        ),
        **flags,
    )
