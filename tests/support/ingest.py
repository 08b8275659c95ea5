"""In-process daemons on RTSP cameras: configs, running, scraping, and a silent host."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from streamd.camera.source import CameraSource
from streamd.config.loader import LoadedConfig
from streamd.config.schema import StreamsConfig
from streamd.service.daemon import Daemon, DaemonOptions

FAST_BACKOFF = {"initial_s": 0.2, "max_s": 1.0, "reset_after_s": 5}


def make_config(cameras: list[dict[str, Any]], **defaults: Any) -> StreamsConfig:
    return StreamsConfig.model_validate(
        {"defaults": {"backoff": FAST_BACKOFF, "open_timeout_s": 5, **defaults}, "cameras": cameras}
    )


@contextlib.asynccontextmanager
async def running(config: StreamsConfig) -> AsyncIterator[Daemon]:
    daemon = Daemon(LoadedConfig(config), DaemonOptions(metrics_port=0, rate_log_interval_s=3600))
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


def sources(daemon: Daemon) -> dict[str, CameraSource]:
    return {source.camera_id: source for source in daemon.sources()}


@contextlib.contextmanager
def silent_tcp_listener(close_at_once: bool = False) -> Iterator[int]:
    """A host that accepts connections and never says a word; with `close_at_once` it
    closes each one as soon as it took it (a camera at its client limit)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(listener.accept()[0])
                if close_at_once:
                    accepted.pop().close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()
