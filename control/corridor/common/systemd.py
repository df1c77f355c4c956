"""systemd's readiness protocol (sd_notify(3)) for the daemons: one datagram of KEY=VALUE
lines to the socket NOTIFY_SOCKET names, so that with Type=notify `systemctl start` returns
once the daemon serves, `systemctl reload` once a reload is done, and systemd hears when a
stop begins. Written here in a few lines: the protocol is one sendto, and python-systemd
would add a C build against libsystemd for it. Without NOTIFY_SOCKET it does nothing."""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("corridor.systemd")


def notify(*states: str) -> None:
    """Sends `states` ("READY=1", "STATUS=...") to systemd, if it listens; never blocks
    (a full queue drops the message, as sd_notify's own would fail)."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        address = "\0" + address[1:]  # the abstract namespace
    elif not address.startswith("/"):
        return  # unset, or a kind of socket (vsock) this does not speak
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.setblocking(False)
        try:
            s.sendto("\n".join(states).encode(), address)
        except OSError as e:
            log.warning("cannot tell systemd %s: %s", ", ".join(states), e)


def ready(status: str) -> None:
    notify("READY=1", f"STATUS={status}")


def reloading() -> None:
    # MONOTONIC_USEC: what Type=notify-reload (systemd 253) asks beside RELOADING=1.
    notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")


def stopping() -> None:
    notify("STOPPING=1")
