"""The /metrics endpoint of a process, on its own thread (prometheus-client's WSGI server): a
scrape reads values the process already holds, so it never touches the event loop."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from corridor.common.config import HostPort


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
