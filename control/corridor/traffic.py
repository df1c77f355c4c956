"""Traffic tools for the lab: build test frames, send them from an interface with an
AF_PACKET raw socket, capture what arrives on another. Every loop is bounded in count and
time. Frames are built by hand (fast, prebuilt bytes); tests parse them with scapy, an
independent reader.

    python -m corridor.traffic send --netns cor-gen --iface gen0 --family 6 --proto tcp \\
        --size 60 --size 1514 --flows 64 --count 100000 --duration 10 [--rate 20000]
    python -m corridor.traffic capture --netns cor-sink --iface sink0 --duration 5 \\
        --count 1000 --out frames.jsonl      # one {"t": seconds, "hex": frame} a line

`--netns` enters the namespace itself; `ip netns exec NS python -m corridor.traffic ...`
works as well. Test frames carry MAGIC, a flow number and a sequence number at the start of
their L4 payload, so a capture can tell which frame it saw.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import errno
import ipaddress
import json
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_QDISC_BYPASS = 20
PACKET_OUTGOING = 4
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
CLONE_NEWNET = 0x40000000

MAGIC = b"CoR!"
# MAGIC, flow, sequence: the test header at the start of every L4 payload.
TEST_HEADER = struct.Struct("!4sII")

PROTO_NUMBERS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58}
_TEST_SPACE = (ipaddress.ip_network("198.18.0.0/15"), ipaddress.ip_network("2001:db8::/32"))


# -- namespaces and sockets --------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def netns(name: str | None) -> Iterator[None]:
    """Run the body with this thread in network namespace `name` (None: stay). Sockets
    made inside keep that namespace after the thread leaves it."""
    if name is None:
        yield
        return
    with open("/proc/thread-self/ns/net") as original, open(f"/var/run/netns/{name}") as target:
        _setns(target.fileno())
        try:
            yield
        finally:
            _setns(original.fileno())


def open_socket(iface: str, ns: str | None = None, *, rcvbuf: int = 32 << 20) -> socket.socket:
    """An AF_PACKET raw socket bound to `iface` in namespace `ns`, every EtherType, with
    VLAN auxdata on and a large receive buffer. Opened on a helper thread so the calling
    thread never changes namespace."""
    result: list[socket.socket | BaseException] = []

    def opener() -> None:
        try:
            with netns(ns):
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
                try:
                    s.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
                    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
                    s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
                    s.bind((iface, ETH_P_ALL))
                except BaseException:
                    s.close()
                    raise
                result.append(s)
        except BaseException as e:
            result.append(e)

    t = threading.Thread(target=opener)
    t.start()
    t.join()
    if isinstance(result[0], BaseException):
        raise OSError(f"raw socket on {iface} in netns {ns or '(current)'}: {result[0]}")
    return result[0]


# -- building frames ---------------------------------------------------------------------


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _check_test_address(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, what: str) -> None:
    if not any(addr in net for net in _TEST_SPACE if net.version == addr.version):
        raise ValueError(f"{what} {addr}: test frames use only 198.18.0.0/15 and 2001:db8::/32")


@dataclass(frozen=True)
class FrameSpec:
    """One family of test frames. `flows` frames per size differ in source port (and, with
    `vary_addresses`, in the low bits of the destination address)."""

    family: int = 4
    proto: str = "udp"  # udp, tcp, icmp (echo request; ICMPv6 for family 6)
    src: str = "198.18.0.2"
    dst: str = "198.19.1.1"
    src_mac: str = "02:c0:00:00:00:02"
    dst_mac: str = "02:c0:00:00:00:01"
    vlan: int | None = None
    ttl: int = 64  # or hop limit
    df: bool = False
    tos: int = 0
    sport: int = 10000
    dport: int = 20000
    vary_addresses: bool = False


def min_size(spec: FrameSpec) -> int:
    """The smallest frame `spec` can be: headers only, padded to 60 for IPv4."""
    l3 = 20 if spec.family == 4 else 40
    l4 = 20 if spec.proto == "tcp" else 8
    return max(60, 14 + (4 if spec.vlan is not None else 0) + l3 + l4)


def build_frame(spec: FrameSpec, size: int, flow: int = 0, seq: int = 0) -> bytes:
    """One Ethernet frame of exactly `size` octets (no FCS) from `spec`, with valid IP and
    L4 checksums and the test header (MAGIC, flow, seq) where the payload has room."""
    if not min_size(spec) <= size <= 1514 + (4 if spec.vlan is not None else 0) + 9000:
        raise ValueError(
            f"frame size {size}: {spec.proto}/IPv{spec.family} needs {min_size(spec)}.."
        )
    src = ipaddress.ip_address(spec.src)
    dst = ipaddress.ip_address(spec.dst)
    if src.version != spec.family or dst.version != spec.family:
        raise ValueError(f"addresses {src} -> {dst}: not IPv{spec.family}")
    if spec.vary_addresses:
        dst = dst + (flow % 256)
    _check_test_address(src, "source")
    _check_test_address(dst, "destination")
    eth = mac_bytes(spec.dst_mac) + mac_bytes(spec.src_mac)
    if spec.vlan is not None:
        eth += struct.pack("!HH", ETH_P_8021Q, spec.vlan & 0x0FFF)
    eth += struct.pack("!H", ETH_P_IP if spec.family == 4 else ETH_P_IPV6)
    l3_len = 20 if spec.family == 4 else 40
    l4_len = 20 if spec.proto == "tcp" else 8
    ip_len = size - len(eth)
    payload_len = ip_len - l3_len - l4_len
    if spec.family == 4 and payload_len < 0:
        payload_len = 0
    ip_len = l3_len + l4_len + payload_len
    header = TEST_HEADER.pack(MAGIC, flow, seq)
    fill = bytes((flow + seq + i) & 0xFF for i in range(max(0, payload_len - len(header))))
    payload = (header + fill)[:payload_len]
    sport = (spec.sport + flow) & 0xFFFF
    proto = spec.proto
    if proto == "icmp" and spec.family == 6:
        proto = "icmpv6"
    number = PROTO_NUMBERS[proto]
    l4_body_len = l4_len + payload_len
    if spec.family == 4:
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, number, l4_body_len)
    else:
        pseudo = src.packed + dst.packed + struct.pack("!IxxxB", l4_body_len, number)
    if proto == "udp":
        l4 = struct.pack("!HHHH", sport, spec.dport, l4_body_len, 0)
        csum = checksum(pseudo + l4 + payload) or 0xFFFF
        l4 = l4[:6] + struct.pack("!H", csum)
    elif proto == "tcp":
        l4 = struct.pack("!HHIIBBHHH", sport, spec.dport, seq, 0, 5 << 4, 0x02, 65535, 0, 0)
        l4 = l4[:16] + struct.pack("!H", checksum(pseudo + l4 + payload)) + l4[18:]
    elif proto == "icmp":
        l4 = struct.pack("!BBHHH", 8, 0, 0, sport, seq & 0xFFFF)
        l4 = l4[:2] + struct.pack("!H", checksum(l4 + payload)) + l4[4:]
    else:  # ICMPv6 echo request (RFC 4443 section 4.1), checksum over the pseudo-header
        l4 = struct.pack("!BBHHH", 128, 0, 0, sport, seq & 0xFFFF)
        l4 = l4[:2] + struct.pack("!H", checksum(pseudo + l4 + payload)) + l4[4:]
    if spec.family == 4:
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, spec.tos, ip_len, (flow + seq) & 0xFFFF,
            0x4000 if spec.df else 0, spec.ttl, number, 0, src.packed, dst.packed,
        )  # fmt: skip
        ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    else:
        ip = struct.pack(
            "!IHBB16s16s", (6 << 28) | (spec.tos << 20) | (flow & 0xFFFFF), l4_body_len,
            number, spec.ttl, src.packed, dst.packed,
        )  # fmt: skip
    frame = eth + ip + l4 + payload
    return frame + b"\0" * (size - len(frame))


def build_frames(
    spec: FrameSpec, sizes: Sequence[int] = (60,), flows: int = 1, *, seq_start: int = 0
) -> list[bytes]:
    """Every (size, flow) combination, sizes varying fastest; seq numbers consecutive."""
    frames: list[bytes] = []
    for flow in range(flows):
        for size in sizes:
            frames.append(build_frame(spec, size, flow, seq_start + len(frames)))
    return frames


def frame_tag(frame: bytes) -> tuple[int, int] | None:
    """(flow, seq) of a test frame found anywhere in `frame`, else None."""
    at = frame.find(MAGIC)
    if at < 0 or at + TEST_HEADER.size > len(frame):
        return None
    _, flow, seq = TEST_HEADER.unpack_from(frame, at)
    return flow, seq


def frame_key(frame: bytes) -> bytes | None:
    """What forwarding leaves unchanged: addresses and the L4 part of the IP packet (up to
    the IP length, so Ethernet padding does not count). None if not IPv4/IPv6."""
    at = 12
    ethertype = int.from_bytes(frame[at : at + 2], "big")
    if ethertype == ETH_P_8021Q:
        at += 4
        ethertype = int.from_bytes(frame[at : at + 2], "big")
    ip = at + 2
    if ethertype == ETH_P_IP and len(frame) >= ip + 20:
        ihl = (frame[ip] & 0x0F) * 4
        total = int.from_bytes(frame[ip + 2 : ip + 4], "big")
        return frame[ip + 12 : ip + 20] + frame[ip + ihl : ip + total]
    if ethertype == ETH_P_IPV6 and len(frame) >= ip + 40:
        payload = int.from_bytes(frame[ip + 4 : ip + 6], "big")
        return frame[ip + 8 : ip + 40] + frame[ip + 40 : ip + 40 + payload]
    return None


# -- sending -----------------------------------------------------------------------------


def send(
    sock: socket.socket,
    frames: Sequence[bytes],
    *,
    count: int | None = None,
    duration: float = 10.0,
    rate: float | None = None,
) -> int:
    """Send `frames` in turn (`count` in all, default one each) until the count is reached
    or `duration` seconds passed; at most `rate` frames per second. Returns frames sent."""
    if not frames:
        return 0
    total = len(frames) if count is None else count
    n = len(frames)
    start = time.monotonic()
    deadline = start + duration
    sent = 0
    chunk = 256 if rate is None else max(1, min(256, int(rate / 100)))
    do_send = sock.send
    while sent < total:
        now = time.monotonic()
        if now >= deadline:
            break
        if rate is not None:
            ahead = sent / rate - (now - start)
            if ahead > 0:
                time.sleep(min(ahead, deadline - now))
                continue
        for i in range(sent, min(total, sent + chunk)):
            try:
                do_send(frames[i % n])
            except OSError as e:
                if e.errno not in (errno.ENOBUFS, errno.EAGAIN):
                    raise  # e.g. EMSGSIZE: a frame larger than the link's MTU allows
                time.sleep(0.0005)  # the device queue is full
                break
            sent += 1
    return sent


# -- capturing ---------------------------------------------------------------------------


def _with_vlan(frame: bytes, ancdata: list[tuple[int, int, bytes]]) -> bytes:
    """Put back the 802.1Q tag the kernel moved into auxdata (as libpcap does)."""
    for level, kind, data in ancdata:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= 20:
            status, _, _, _, _, tci, tpid = struct.unpack_from("IIIHHHH", data)
            if status & TP_STATUS_VLAN_VALID:
                if not status & TP_STATUS_VLAN_TPID_VALID or tpid == 0:
                    tpid = ETH_P_8021Q
                return frame[:12] + struct.pack("!HH", tpid, tci) + frame[12:]
    return frame


class Capture:
    """Frames arriving on `iface` in `ns`, read on a background thread for at most
    `duration` seconds or until `count` frames matched `keep`. Outgoing frames (the
    interface's own transmissions) are left out unless `outgoing`.

        with Capture("sink0", "cor-sink", duration=3, count=100) as cap:
            ...send...
        cap.frames   # [(monotonic time, bytes)]
    """

    def __init__(
        self,
        iface: str,
        ns: str | None = None,
        *,
        duration: float = 5.0,
        count: int | None = None,
        keep: Callable[[bytes], bool] | None = None,
        outgoing: bool = False,
    ) -> None:
        self.iface, self.ns, self.duration, self.count = iface, ns, duration, count
        self.keep, self.outgoing = keep, outgoing
        self.frames: list[tuple[float, bytes]] = []
        self.seen = 0  # every frame read, matched or not
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Capture:
        self._sock = open_socket(self.iface, self.ns)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        sock = self._sock
        assert sock is not None
        deadline = time.monotonic() + self.duration
        space = socket.CMSG_SPACE(32)
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self.count is not None and len(self.frames) >= self.count:
                break
            ready, _, _ = select.select([sock], [], [], 0.02)
            if not ready:
                continue
            while True:
                try:
                    data, anc, _, addr = sock.recvmsg(65536, space, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                if addr[2] == PACKET_OUTGOING and not self.outgoing:
                    continue
                self.seen += 1
                frame = _with_vlan(data, anc)
                if self.keep is None or self.keep(frame):
                    self.frames.append((time.monotonic(), frame))

    def wait(self, timeout: float | None = None) -> list[bytes]:
        """Wait until the capture ends by itself (count or duration); return the frames."""
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else self.duration + 1)
        return self.stop()

    def stop(self) -> list[bytes]:
        """End the capture now; return the frames that matched."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        return [f for _, f in self.frames]

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        # Let frames in flight land: the body has just sent its last one.
        if exc[0] is None and (self.count is None or len(self.frames) < self.count):
            time.sleep(0.05)
        self.stop()


# -- separate processes ------------------------------------------------------------------


def sender_argv(
    ns: str, iface: str, spec: FrameSpec, sizes: Sequence[int], flows: int, count: int,
    duration: float, rate: float | None = None,
) -> list[str]:  # fmt: skip
    """The command line of a sender process for `spec` (see `main`)."""
    argv = [
        sys.executable, "-m", "corridor.traffic", "send", "--netns", ns, "--iface", iface,
        "--family", str(spec.family), "--proto", spec.proto, "--src", spec.src,
        "--dst", spec.dst, "--src-mac", spec.src_mac, "--dst-mac", spec.dst_mac,
        "--ttl", str(spec.ttl), "--flows", str(flows), "--count", str(count),
        "--duration", str(duration), "--sport", str(spec.sport),
    ]  # fmt: skip
    for size in sizes:
        argv += ["--size", str(size)]
    if spec.vlan is not None:
        argv += ["--vlan", str(spec.vlan)]
    if spec.df:
        argv.append("--df")
    if rate is not None:
        argv += ["--rate", str(rate)]
    return argv


def flood(
    ns: str, iface: str, spec: FrameSpec, *, count: int, processes: int = 2,
    sizes: Sequence[int] = (60,), flows: int = 64, duration: float = 60.0,
    rate: float | None = None,
) -> int:  # fmt: skip
    """Send `count` frames from `processes` sender processes at once (each its own flows,
    by source port), at most `rate` frames per second in all; return how many were sent."""
    per = [count // processes + (1 if i < count % processes else 0) for i in range(processes)]
    procs = []
    for i, n in enumerate(per):
        sub = dataclasses.replace(spec, sport=spec.sport + i * flows)
        each = None if rate is None else rate / processes
        argv = sender_argv(ns, iface, sub, sizes, flows, n, duration, each)
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, text=True))
    sent = 0
    for p in procs:
        out, _ = p.communicate(timeout=duration + 30)
        if p.returncode != 0:
            raise RuntimeError(f"sender exited {p.returncode}")
        sent += json.loads(out)["sent"]
    return sent


# -- command line ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="corridor.traffic",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("send", help="send test frames")
    c = sub.add_parser("capture", help="capture frames as JSON lines")
    for p in (s, c):
        p.add_argument("--iface", required=True)
        p.add_argument("--netns", help="namespace to enter (default: the current one)")
        p.add_argument("--duration", type=float, default=10.0, help="seconds, at most")
        p.add_argument("--count", type=int, help="frames, at most")
    s.add_argument("--family", type=int, choices=(4, 6), default=4)
    s.add_argument("--proto", choices=("udp", "tcp", "icmp"), default="udp")
    s.add_argument("--size", type=int, action="append", help="frame size, repeatable")
    s.add_argument("--flows", type=int, default=1)
    s.add_argument("--src")
    s.add_argument("--dst")
    s.add_argument("--src-mac", default=FrameSpec.src_mac)
    s.add_argument("--dst-mac", default=FrameSpec.dst_mac)
    s.add_argument("--vlan", type=int)
    s.add_argument("--ttl", type=int, default=64)
    s.add_argument("--df", action="store_true")
    s.add_argument("--sport", type=int, default=FrameSpec.sport)
    s.add_argument("--vary-addresses", action="store_true")
    s.add_argument("--rate", type=float, help="frames per second, at most")
    c.add_argument("--out", help="JSON lines file (default: stdout)")
    args = parser.parse_args(argv)

    if args.command == "send":
        spec = FrameSpec(
            family=args.family, proto=args.proto,
            src=args.src or ("198.18.0.2" if args.family == 4 else "2001:db8::2"),
            dst=args.dst or ("198.19.1.1" if args.family == 4 else "2001:db8:100::1"),
            src_mac=args.src_mac, dst_mac=args.dst_mac, vlan=args.vlan, ttl=args.ttl,
            df=args.df, sport=args.sport, vary_addresses=args.vary_addresses,
        )  # fmt: skip
        frames = build_frames(spec, args.size or [60], args.flows)
        sock = open_socket(args.iface, args.netns)
        t0 = time.monotonic()
        sent = send(sock, frames, count=args.count, duration=args.duration, rate=args.rate)
        seconds = time.monotonic() - t0
        print(json.dumps({"sent": sent, "seconds": round(seconds, 3)}), flush=True)
        return 0

    out = open(args.out, "w") if args.out else sys.stdout
    cap = Capture(args.iface, args.netns, duration=args.duration, count=args.count).start()
    print(json.dumps({"ready": True}), file=sys.stderr, flush=True)
    cap.wait()
    for t, frame in cap.frames:
        out.write(json.dumps({"t": round(t, 6), "hex": frame.hex()}) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
