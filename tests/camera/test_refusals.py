"""Servers that refuse in their own ways, against a daemon in-process: each camera says
what happened in words that name the fix, and `transport: auto` streams where `tcp` is
refused."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import http.server
import logging
import os
import resource
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.testing.ports import free_port
from tests.support.environment import StartRtspServer
from tests.support.ingest import make_config, running, silent_tcp_listener, sources
from tests.support.listener import scrape
from tests.support.waiting import run, wait_for

pytestmark = pytest.mark.rtsp


@contextlib.contextmanager
def web_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_server_that_refuses_tcp_is_named_and_transport_auto_streams_over_udp(
    rtsp_servers: StartRtspServer, test_video: Path
) -> None:
    server = rtsp_servers({"cam": test_video}, transports="udp")

    async def scenario() -> None:
        cameras: list[dict[str, Any]] = [
            {"id": "tcp-only", "url": server.url("cam"), "transport": "tcp"},
            {"id": "auto", "url": server.url("cam"), "transport": "auto"},
        ]
        async with running(make_config(cameras, fps=5)) as daemon:
            cams = sources(daemon)
            await wait_for(lambda: cams["auto"].state == "streaming", 30, "the auto camera to stream")
            await wait_for(lambda: cams["tcp-only"].reason is not None, 20, "the tcp camera's reason")
            refused = cams["tcp-only"]
            assert refused.reason == "transport_refused"
            assert refused.message is not None
            assert "refuses RTSP over TCP" in refused.message and "transport: auto" in refused.message
            status = {c["id"]: c for c in daemon.health.status()["cameras"]}
            assert status["auto"]["transport"] == "udp" and status["tcp-only"]["transport"] == "tcp"
            assert 'reason="transport_refused"' in scrape(daemon.http.port)
            sampled = cams["auto"].metrics.sampled
            await wait_for(lambda: cams["auto"].metrics.sampled >= sampled + 10, 10, "frames over UDP")
            assert cams["auto"].metrics.reconnects == 0, "the switch to UDP is not a reconnect"

    run(scenario())


def test_a_server_that_closes_at_once_and_a_web_server_are_told_apart_from_bad_data() -> None:
    async def scenario(closing_port: int, web_port: int) -> None:
        cameras: list[dict[str, Any]] = [
            {"id": "full", "url": f"rtsp://127.0.0.1:{closing_port}/stream"},
            {"id": "web", "url": f"rtsp://127.0.0.1:{web_port}/stream"},
        ]
        async with running(make_config(cameras, fps=5)) as daemon:
            cams = sources(daemon)
            await wait_for(lambda: all(c.reason is not None for c in cams.values()), 20, "both reasons")
            assert cams["full"].reason == "closed_by_server", cams["full"].message
            assert "closed the connection before answering" in str(cams["full"].message)
            assert cams["web"].reason == "not_rtsp", cams["web"].message
            assert "it answered HTTP" in str(cams["web"].message)

    with silent_tcp_listener(close_at_once=True) as closing_port, web_server() as web_port:
        run(scenario(closing_port, web_port))


@contextlib.contextmanager
def descriptors_exhausted() -> Iterator[None]:
    """This process out of file descriptors (EMFILE), as a leak or a flood leaves a daemon:
    whatever descriptor is freed is taken again at once. All returned after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16, hard))
    held: list[int] = []
    done = threading.Event()

    def take_every_free_one() -> None:
        while not done.is_set():
            try:
                held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError as error:
                assert error.errno == errno.EMFILE
                time.sleep(0.002)

    taker = threading.Thread(target=take_every_free_one, daemon=True)
    taker.start()
    try:
        yield
    finally:
        done.set()
        taker.join()
        for descriptor in held:
            os.close(descriptor)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_running_out_of_descriptors_is_streamds_problem_not_the_cameras(
    rtsp_servers: StartRtspServer, test_video: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = rtsp_servers({"cam": test_video}, port=free_port())

    async def scenario() -> None:
        async with running(make_config([{"id": "cam", "url": server.url("cam")}], fps=5)) as daemon:
            cam = sources(daemon)["cam"]
            await wait_for(lambda: cam.state == "streaming", 20, "the camera to stream")
            server.kill()  # the camera reconnects, again and again
            with descriptors_exhausted():
                await wait_for(lambda: cam.reason == "local_resources", 20, "the reason")
                await asyncio.sleep(2.5)  # several attempts, and the health loop's ticks
                ready, why = daemon.health.ready()
                message = str(cam.message)
            assert not ready and "out of file descriptors" in why and "cam" in why, why
            assert "camera is not at fault" in message and "LimitNOFILE" in message, message
            server.start()
            await wait_for(lambda: cam.state == "streaming", 30, "the camera to come back")
            await wait_for(lambda: daemon.health.ready()[0], 10, "ready again")
            await asyncio.sleep(1.5)  # a tick of the health loop, which says it is over

    with caplog.at_level(logging.INFO):
        run(scenario())
    said = [r for r in caplog.records if "streamd is out of file descriptors" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.ERROR, [r.getMessage() for r in said]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "local_resources" in r.getMessage()]
    assert any("file descriptors available again" in r.getMessage() for r in caplog.records)
