"""The /metrics endpoint of a process, on its own thread (prometheus-client's WSGI server): a
scrape reads values the process already holds, so it never touches the event loop.

Names follow one scheme: `corridor_<component>_<what>[_<unit>]`, the component being `agent`
(its FIB, writes, election, next hops), `engine` (the forwarding counters the agent hosts) or
`controller`; counters end in `_total`, and label values name things (a node, a port, a
reason), never a value that changes (an election id is a gauge)."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, disable_created_metrics, start_http_server

from corridor.common.config import HostPort

# prometheus-client adds a `<name>_created` sample (the time the series was made) beside every
# counter and histogram of its own; in Prometheus's text format each becomes a gauge series of
# its own that nobody graphs. Off for the whole process, which holds only our registries.
disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream


def new_registry() -> CollectorRegistry:
    """A registry of its own for one agent or controller (several can live in one process)."""
    return CollectorRegistry()


class MetricsServer:
    def __init__(self, registry: CollectorRegistry, address: HostPort) -> None:
        self._server: WSGIServer
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(
            address.port, address.host, registry=registry
        )
        self.port: int = self._server.server_port

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
