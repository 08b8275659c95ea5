"""The metrics listener: Prometheus exposition and health over HTTP, in its own thread.

A scrape renders every metric, which takes the GIL for milliseconds; serving it from a
thread keeps that work off the event loop's critical path. Routes:

- `/metrics`: Prometheus exposition;
- `/healthz`: 200 while the process serves (liveness);
- `/readyz`: 200 once the engine is loaded and enough cameras stream, else 503 and why;
- `/status`: JSON per camera (state, reason, rates, last frame age, decoder), every
  string in it passed through the credential mask.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from streamd import status_page
from streamd.redact import redact_data, redact_text
from streamd.snapshots import Snapshot

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class HealthView(Protocol):
    """What the health routes read (from this server's thread)."""

    def ready(self) -> tuple[bool, str]: ...

    def status(self) -> dict[str, Any]: ...

    def snapshot(self, camera_id: str) -> Snapshot | None:
        """The camera's last analysed frame as a JPEG, faces drawn; None when there is none."""
        ...


def _respond(
    start_response: Callable[..., Any], code: str, body: bytes, kind: str, extra: list[tuple[str, str]] | None = None
) -> Iterable[bytes]:
    headers = [("Content-Type", kind), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
    start_response(code, headers + (extra or []))
    return [body]


def make_app(registry: CollectorRegistry, health: HealthView | None) -> WsgiApp:
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            return _respond(start_response, "200 OK", b"ok\n", "text/plain")
        if path == "/readyz" and health is not None:
            ready, why = health.ready()
            code = "200 OK" if ready else "503 Service Unavailable"
            return _respond(start_response, code, (redact_text(why) + "\n").encode(), "text/plain")
        if path == "/status" and health is not None:
            body = json.dumps(redact_data(health.status()), indent=2).encode()
            return _respond(start_response, "200 OK", body, "application/json")
        if path == "/" and health is not None:
            page = status_page.render(redact_data(health.status()))
            return _respond(start_response, "200 OK", page, "text/html; charset=utf-8")
        if path.startswith("/cameras/") and path.endswith("/latest.jpg") and health is not None:
            snapshot = health.snapshot(path[len("/cameras/") : -len("/latest.jpg")])
            if snapshot is not None:
                return _respond(
                    start_response, "200 OK", snapshot.jpeg, "image/jpeg", [("X-Frame-Seq", str(snapshot.seq))]
                )
            return _respond(start_response, "404 Not Found", b"no analysed frame of that camera yet\n", "text/plain")
        if path in ("/", "/metrics"):
            exposition: Iterable[bytes] = metrics_app(environ, start_response)
            return exposition
        return _respond(start_response, "404 Not Found", b"not found\n", "text/plain")

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        log.debug("http: " + format, *args)


def describe(exc: OSError) -> str:
    """An OSError's reason without the errno noise; name lookups say that is what failed."""
    if isinstance(exc, socket.gaierror):
        return f"the host name does not resolve ({exc.strerror})"
    return exc.strerror or str(exc)


class MetricsServer:
    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: HealthView | None = None) -> None:
        self.host = host
        self.port = port
        self._app: WsgiApp = make_app(registry, health)
        self._server: ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve; raises OSError naming the address when it is taken or invalid."""
        try:
            self._server = make_server(
                self.host, self.port, self._app, ThreadingWSGIServer, handler_class=_QuietHandler
            )
        except OSError as exc:
            where = f"{self.host}:{self.port}"
            raise OSError(exc.errno, f"cannot listen on {where} (metrics.listen): {describe(exc)}") from exc
        self.port = self._server.server_port  # the real one when 0 was asked for
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None
