"""The hand-written decoder of route messages (`_fast_route`) gives exactly what the pyroute2
path gives: on every form zebra sends, and on damaged messages (cut at every length, each
byte changed), where it must either agree or leave the message to the pyroute2 path."""

from __future__ import annotations

import random
import struct
import time
from typing import Any

import pytest

from corridor.fpm.netlink import (
    RTM_NEWROUTE,
    DecodeError,
    _fast_route,
    decode_message,
    decode_slow,
    message_type,
)
from fpm_support import route_message, with_attribute

RTA_PREFSRC, RTA_ENCAP, RTA_METRICS = 7, 22, 8

# Every form of route message zebra's dplane_fpm_nl writes, and some it may.
FORMS: dict[str, bytes] = {
    "v4 via gateway": route_message("198.18.10.0/24", gateway="198.18.0.1", oif=3),
    "v6 via gateway": route_message("2001:db8:10::/48", gateway="2001:db8::1", oif=4),
    "v6 via link-local": route_message("2001:db8:11::/48", gateway="fe80::1", oif=4),
    "on-link": route_message("198.18.20.0/24", oif=7),
    "gateway only": route_message("198.18.21.0/24", gateway="198.18.0.1"),
    "default v4": route_message("0.0.0.0/0", gateway="198.18.0.1", oif=3),
    "default v6": route_message("::/0", gateway="2001:db8::1", oif=3),
    "host v4": route_message("198.18.22.1/32", gateway="198.18.0.1", oif=3),
    "host v6": route_message("2001:db8::5/128", gateway="2001:db8::1", oif=3),
    "multipath weights": route_message(
        "198.18.30.0/24",
        multipath=[
            {"gateway": "198.18.0.1", "oif": 3, "weight": 1},
            {"gateway": "198.18.1.1", "oif": 4, "weight": 7},
            {"gateway": "198.18.2.1", "oif": 5, "weight": 256},
        ],
    ),
    "multipath v6": route_message(
        "2001:db8:30::/48",
        multipath=[{"gateway": "fe80::1", "oif": 3}, {"gateway": "fe80::2", "oif": 4}],
    ),
    "rfc8950 via": route_message("198.18.40.0/24", via="2001:db8:1::2", oif=4),
    "rfc8950 multipath via": route_message(
        "198.18.41.0/24",
        multipath=[{"via": "fe80::1", "oif": 3}, {"via": "fe80::2", "oif": 4, "weight": 2}],
    ),
    "blackhole": route_message("198.18.50.0/24", rtype=6),
    "unreachable": route_message("198.18.51.0/24", rtype=7),
    "prohibit": route_message("2001:db8:52::/48", rtype=8),
    "next-hop id": route_message("198.18.60.0/24", nh_id=17),
    "next-hop id v6": route_message("2001:db8:60::/48", nh_id=18),
    "table above 255": route_message("198.18.70.0/24", gateway="198.18.0.1", oif=3, table=1000),
    "connected": route_message("198.18.0.0/24", oif=3, proto=2),
    "delete": route_message("198.18.10.0/24", delete=True, gateway="198.18.0.1", oif=3),
    "delete unspec": route_message("198.18.10.0/24", delete=True, rtype=0),
    "delete with id": route_message("198.18.60.0/24", delete=True, nh_id=17),
    "delete blackhole": route_message("198.18.50.0/24", delete=True, rtype=6),
}
FORMS["with metric"] = with_attribute(FORMS["v4 via gateway"], 6, struct.pack("=I", 20))
FORMS["with prefsrc"] = with_attribute(FORMS["v4 via gateway"], RTA_PREFSRC, bytes([198, 18, 0, 2]))


def _family(message: bytes, family: int) -> bytes:
    return message[:16] + bytes([family]) + message[17:]


# Forms the fast path leaves to pyroute2 (which refuses or decodes them).
OTHER: dict[str, bytes] = {
    "encap": with_attribute(FORMS["v4 via gateway"], RTA_ENCAP, b"\x00" * 8),
    "metrics": with_attribute(
        FORMS["v4 via gateway"], RTA_METRICS, b"\x08\x00\x02\x00\xdc\x05\x00\x00"
    ),
    "host bits": route_message("198.18.10.1/24", gateway="198.18.0.1", oif=3),
    "local type": route_message("198.18.0.1/32", rtype=2, oif=3),
    "no next hop": route_message("198.18.10.0/24"),
    "mpls family": _family(route_message("198.18.10.0/24", gateway="198.18.0.1", oif=3), 28),
    "513 next hops": route_message(
        "198.18.90.0/24",
        multipath=[{"gateway": f"198.18.{i // 250}.{i % 250 + 1}", "oif": 3} for i in range(513)],
    ),
}


def outcome(decode: Any, message: bytes) -> object:
    try:
        return decode(message)
    except DecodeError as error:
        return ("refused", error.reason)


@pytest.mark.parametrize("name", sorted(FORMS))
def test_every_form_takes_the_fast_path_and_equals_pyroute2(name: str) -> None:
    message = FORMS[name]
    fast = _fast_route(message, message_type(message))
    assert fast is not None, f"{name}: the common case must not fall back"
    assert fast == decode_slow(message)


@pytest.mark.parametrize("name", sorted(OTHER))
def test_other_forms_are_left_to_pyroute2(name: str) -> None:
    message = OTHER[name]
    assert _fast_route(message, message_type(message)) is None
    assert outcome(decode_message, message) == outcome(decode_slow, message)


def _with_length(message: bytes) -> bytes:
    """As the listener hands messages over: nlmsg_len equal to the bytes given."""
    out = bytearray(message)
    struct.pack_into("=I", out, 0, len(out))
    return bytes(out)


def test_damaged_messages_decode_alike_on_both_paths() -> None:
    rng = random.Random(13)
    checked = 0
    for name, message in sorted(FORMS.items()):
        variants = [_with_length(message[:cut]) for cut in range(16, len(message))]
        for position in range(4, len(message)):  # not the length: the listener checks it
            for value in (0x00, 0xFF, rng.randrange(256)):
                damaged = bytearray(message)
                damaged[position] = value
                variants.append(bytes(damaged))
        for variant in variants:
            if message_type(variant) not in (24, 25):
                continue
            assert outcome(decode_message, variant) == outcome(decode_slow, variant), (
                name,
                variant.hex(),
            )
            checked += 1
    assert checked > 5000


def test_the_fast_path_is_fast() -> None:
    # Not a benchmark: a guard that the common case does not silently fall back to pyroute2
    # (about 170 us a route there; the fast path takes a few).
    message = FORMS["multipath weights"]
    assert _fast_route(message, RTM_NEWROUTE) is not None
    count = 20_000
    started = time.process_time()
    for _ in range(count):
        decode_message(message)
    per_route = (time.process_time() - started) / count
    assert per_route < 60e-6, f"{per_route * 1e6:.0f} us per route"
