"""What the listener answers: routes to replies, independent of how HTTP is spoken.

Routes (GET, and HEAD: the same headers, no body):

- `/metrics`: Prometheus exposition (OpenMetrics when asked for, gzip when accepted,
  `name[]` to select series, as prometheus_client's own exporter does);
- `/healthz`: 200 while the process serves (liveness);
- `/readyz`: 200 once the engine is loaded and enough cameras stream, else 503 and why;
- `/status`: JSON per camera, every string passed through the credential mask;
- `/`: the status page;
- `/cameras/<id>/latest.jpg`: the camera's last analysed frame with its faces drawn;
- `/cameras/<id>/best/<track>.jpg`: the best face of one of its last ended tracks.

With `metrics.pictures: false` no route shows a picture of anyone: the snapshots answer
404 and the status page has no images, while metrics and status stay.

Rendering takes the GIL for milliseconds (a scrape of hundreds of series, a JPEG), so
the server calls `answer` from its own small pool of threads, never on an event loop.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from streamd.analysis.snapshots import Snapshot
from streamd.base.redact import redact_data, redact_text
from streamd.monitor import status_page

METHODS = ("GET", "HEAD")


class HealthView(Protocol):
    """What the health routes read (from the listener's threads)."""

    def ready(self) -> tuple[bool, str]: ...

    def status(self) -> dict[str, Any]: ...

    def snapshot(self, camera_id: str) -> Snapshot | None:
        """The camera's last analysed frame as a JPEG, faces drawn; None when there is none."""
        ...

    def best_face(self, camera_id: str, track: int) -> bytes | None:
        """The best face of one of the camera's last ended tracks (JPEG); None otherwise."""
        ...


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    """Lower-case names; a repeated header keeps its last value."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def text(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, (message + "\n").encode(), headers=headers)


class Routes:
    def __init__(self, registry: CollectorRegistry, health: HealthView | None, pictures: bool = True) -> None:
        self.registry = registry
        self.health = health
        self.pictures = pictures

    def answer(self, request: Request) -> Reply:
        """The reply to a GET or HEAD (the server strips the body of a HEAD's)."""
        path, health = request.path, self.health
        if path == "/healthz":
            return text(200, "ok")
        if path == "/metrics" or (path == "/" and health is None):
            return self._metrics(request)
        if health is None:
            return text(404, "not found")
        if path == "/readyz":
            ready, why = health.ready()
            return text(200 if ready else 503, redact_text(why))
        if path == "/status":
            return Reply(200, json.dumps(redact_data(health.status()), indent=2).encode(), "application/json")
        if path == "/":
            page = status_page.render(redact_data(health.status()), pictures=self.pictures)
            return Reply(200, page, "text/html; charset=utf-8")
        if path.startswith("/cameras/") and path.endswith("/latest.jpg"):
            return self._snapshot(health, path[len("/cameras/") : -len("/latest.jpg")])
        camera_id, _, best = path[len("/cameras/") :].partition("/best/")
        if path.startswith("/cameras/") and best.endswith(".jpg") and best[: -len(".jpg")].isdigit():
            return self._best_face(health, camera_id, int(best[: -len(".jpg")]))
        return text(404, "not found")

    def _metrics(self, request: Request) -> Reply:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        names = parse_qs(request.query).get("name[]")
        registry: Any = self.registry.restricted_registry(names) if names else self.registry
        output: bytes = encoder(registry)
        if gzip_accepted(request.headers.get("accept-encoding", "")):
            return Reply(200, gzip.compress(output), content_type, (("Content-Encoding", "gzip"),))
        return Reply(200, output, content_type)

    def _snapshot(self, health: HealthView, camera_id: str) -> Reply:
        if not self.pictures:
            return text(404, "pictures are off on this listener (metrics.pictures: false)")
        snapshot = health.snapshot(camera_id)
        if snapshot is None:
            return text(404, "no analysed frame of that camera yet")
        return Reply(200, snapshot.jpeg, "image/jpeg", (("X-Frame-Seq", str(snapshot.seq)),))

    def _best_face(self, health: HealthView, camera_id: str, track: int) -> Reply:
        if not self.pictures:
            return text(404, "pictures are off on this listener (metrics.pictures: false)")
        jpeg = health.best_face(camera_id, track)
        if jpeg is None:
            return text(404, "no best face of that track here (not among the last ended, or removed)")
        return Reply(200, jpeg, "image/jpeg")


Answer = Callable[[Request], Reply]
