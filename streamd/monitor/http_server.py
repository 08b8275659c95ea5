"""The listener: metrics, health, status and snapshots over HTTP/1.1, at a bounded cost.

Anyone who can reach the port can open connections (a remote Prometheus puts it on a
routable address), so nothing a client does may cost the daemon more than a fixed
amount, and above all never the descriptors and threads the cameras need:

- one thread runs an asyncio loop for every connection (no thread per connection);
  replies are rendered on `RENDER_THREADS` threads, bcrypt checks on one more;
- at most `MAX_CONNECTIONS` are open, and never more than a sixteenth of the process's
  descriptor limit (64 of systemd's default 1024). Connections beyond that close the ones
  that have waited longest without sending a byte, so a flood of idle connections can
  neither lock a scrape or a health check out nor take the descriptors cameras reconnect
  with. A connection that has sent something (a request not yet read, a TLS hello) is
  not chosen while a silent one is left: a flood arrives in waves (the kernel's SYN
  retries), and a wave must not push out a health check. Which ones to close is decided
  a moment (`_SHED_AFTER_S`) after a wave is accepted, so a health check accepted in the
  same wave has had its request arrive (meanwhile at most a backlog more are open).
  When every open connection is busy, the newest is closed. Should the process run out
  of descriptors all the same, the listener says so (once every five minutes while it
  lasts) and retries accepting each second (asyncio's own back-off), instead of logging
  a traceback every second;
- a request head (and its TLS handshake) must arrive within `REQUEST_TIMEOUT_S` of the
  connection or of the previous reply; a reply must be taken within `WRITE_TIMEOUT_S`;
  heads are limited to `MAX_HEAD_BYTES` and bodies (which no route reads) to
  `MAX_BODY_BYTES`;
- GET and HEAD only (HEAD: the headers of GET, no body); anything else is 405. Every
  reply says `X-Content-Type-Options: nosniff` and `Cache-Control: no-store`.

HTTP itself is parsed by h11 (the HTTP/1.1 state machine under uvicorn and httpx);
TLS and basic auth come from a web config file (`streamd.monitor.web_config`). What each route
answers is `streamd.monitor.http_routes`.

Each connection is first held by a small protocol that pauses reading the moment it is
accepted: it is counted (and may evict another) before a single byte is read or a TLS
handshake begins, and no byte can be read before TLS takes over the socket.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import http
import ipaddress
import logging
import resource
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
from prometheus_client import CollectorRegistry

from streamd.monitor.http_routes import METHODS, HealthView, Reply, Request, Routes, text
from streamd.monitor.web_config import BasicAuth, WebConfig, WebConfigError, files_stamp, load_web_config

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64
REQUEST_TIMEOUT_S = 10.0
WRITE_TIMEOUT_S = 30.0
MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
RENDER_THREADS = 2
# Connections the kernel completes before the loop accepts them: they hold no descriptor
# of ours until accepted, and asyncio accepts at most this many in one go.
_BACKLOG = 64
# Connections beyond the limit are closed this long after they were accepted, so one
# accepted in a flood's wave has had its request's first bytes arrive (see `_admit`).
_SHED_AFTER_S = 0.05
_READ_CHUNK = 64 * 1024
_STARVED_SAY_EVERY_S = 300.0
# How often, at most, the web config's files are looked at for a change.
_WEB_CONFIG_CHECK_S = 1.0
_COMMON_HEADERS = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"))


def describe(exc: OSError) -> str:
    """An OSError's reason without the errno noise; name lookups say that is what failed."""
    if isinstance(exc, socket.gaierror):
        return f"the host name does not resolve ({exc.strerror})"
    return exc.strerror or str(exc)


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (socket.create_server would reword bind's error)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
        0
    ]
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
        listener.bind(address)
        listener.listen(_BACKLOG)
    except OSError:
        listener.close()
        raise
    return listener


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass(eq=False)
class _Connection:
    transport: asyncio.Transport
    fileno: int
    idle_since: float
    idle: bool = True
    """Waiting for a request (or its first byte): what a flood's connections do."""
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def close(self) -> None:
        self.transport.abort()  # the descriptor is freed now, not after a goodbye
        if self.task is not None:
            self.task.cancel()


class _Accepted(asyncio.Protocol):
    """Holds a fresh connection, not reading, until the server has admitted it."""

    def __init__(self, server: MetricsServer) -> None:
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()
        self.server._admit(transport)


class MetricsServer:
    """The listener on `host:port`, served from its own thread (`start`, `stop`)."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        health: HealthView | None = None,
        web_config: Path | None = None,
        pictures: bool = True,
    ) -> None:
        """`web_config`: the TLS and basic-auth file, read by `start`."""
        self.host = host
        self.port = port
        self.routes = Routes(registry, health, pictures)
        self.web_config = web_config
        self._auth: BasicAuth | None = None
        self._ssl: ssl.SSLContext | None = None
        self._web_files: tuple[Path, ...] = ()
        self._web_stamp: tuple[tuple[int, int] | None, ...] = ()
        self._web_checked = 0.0
        self._open: dict[_Connection, None] = {}
        self._shedding: asyncio.TimerHandle | None = None
        self.max_connections = min(MAX_CONNECTIONS, max(4, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 16))
        self._starved_said = -_STARVED_SAY_EVERY_S  # when accept() failing for want of descriptors was said
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self._render = concurrent.futures.ThreadPoolExecutor(RENDER_THREADS, thread_name_prefix="http-render")
        self._bcrypt = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="http-auth")

    @property
    def scheme(self) -> str:
        return "https" if self._ssl is not None else "http"

    def start(self) -> None:
        """Bind and serve; raises OSError naming the address when it is taken or invalid,
        WebConfigError naming the file and key when the web config is wrong."""
        if self.web_config is not None:
            self._use(load_web_config(self.web_config))
        where = f"{self.host}:{self.port}"
        try:
            listener = _listen(self.host, self.port)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {where} (metrics.listen): {describe(exc)}") from exc
        self.port = listener.getsockname()[1]  # the real one when 0 was asked for
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(listener, ready), name="metrics-http", daemon=True)
        self._thread.start()
        ready.wait()
        log.info("metrics on %s://%s:%d/metrics", self.scheme, self.host, self.port)
        if self.routes.pictures and self._auth is None and not _loopback(self.host):
            log.warning(
                "metrics.listen %s:%d is reachable from other machines and shows camera pictures (faces) to anyone: "
                "set metrics.web_config (TLS and basic auth) or metrics.pictures: false",
                self.host,
                self.port,
            )

    def _use(self, loaded: WebConfig) -> None:
        self._ssl = loaded.ssl_context
        self._auth = BasicAuth(loaded.users) if loaded.auth_required else None
        self._web_files, self._web_stamp = loaded.files, files_stamp(loaded.files)

    def _refresh_web_config(self, now: float) -> None:
        """Read the web config again when it or a file it names changed (a renewed
        certificate); a change that does not load is said once and the last good stays."""
        if self.web_config is None or now - self._web_checked < _WEB_CONFIG_CHECK_S:
            return
        self._web_checked = now
        stamp = files_stamp(self._web_files)
        if stamp == self._web_stamp:
            return
        self._web_stamp = stamp  # a bad state is tried once, not every second
        try:
            loaded = load_web_config(self.web_config)
        except WebConfigError as error:
            log.error("metrics.web_config changed but cannot be used, so the last good one stays: %s", error)
            return
        self._use(loaded)
        log.info("metrics.web_config read again: %s", self.web_config)

    def stop(self) -> None:
        """Close the listener and every connection; idempotent."""
        loop, stopped, thread = self._loop, self._stopped, self._thread
        if loop is None or stopped is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already ended
            loop.call_soon_threadsafe(stopped.set)
        thread.join(timeout=5)
        self._render.shutdown(wait=False, cancel_futures=True)
        self._bcrypt.shutdown(wait=False, cancel_futures=True)
        self._loop = self._thread = self._stopped = None

    # -- the listener's thread -------------------------------------------------------------

    def _serve(self, listener: socket.socket, ready: threading.Event) -> None:
        loop = self._loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._loop_error)
        self._stopped = asyncio.Event()
        try:
            loop.run_until_complete(self._main(listener, ready))
        finally:
            loop.close()

    async def _main(self, listener: socket.socket, ready: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Accepted(self), sock=listener)
        ready.set()
        assert self._stopped is not None
        await self._stopped.wait()
        server.close()
        for connection in list(self._open):
            connection.close()
        tasks = [c.task for c in self._open if c.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        await server.wait_closed()

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if isinstance(error, OSError) and error.errno in (errno.EMFILE, errno.ENFILE):
            now = time.monotonic()
            if now - self._starved_said >= _STARVED_SAY_EVERY_S:
                self._starved_said = now
                log.error(
                    "the metrics listener cannot accept connections: %s (the process is out of file descriptors; "
                    "raise LimitNOFILE=)",
                    error.strerror,
                )
            return
        loop.default_exception_handler(context)

    def _admit(self, transport: asyncio.Transport) -> None:
        now = time.monotonic()
        self._refresh_web_config(now)
        connection = _Connection(transport, transport.get_extra_info("socket").fileno(), now)
        self._open[connection] = None
        connection.task = asyncio.get_running_loop().create_task(self._run(connection))
        if len(self._open) >= self.max_connections + _BACKLOG:
            self._shed()  # the bound on descriptors holds whatever the waves
        elif len(self._open) > self.max_connections and self._shedding is None:
            # Not at once: a wave of a flood is accepted in one go, and a health check
            # accepted with it has not had the moment its request takes to arrive, so
            # it would look as silent as the flood and, older than the wave, be closed
            # for it (measured: /healthz dropped under a flood of 1100 idle connections).
            self._shedding = asyncio.get_running_loop().call_later(_SHED_AFTER_S, self._shed)

    def _shed(self) -> None:
        """Close connections down to `max_connections`: idle ones as `_victim` chooses,
        else (every one is being served) the newest."""
        if self._shedding is not None:
            self._shedding.cancel()
            self._shedding = None
        while len(self._open) > self.max_connections:
            victim = self._victim() or max(self._open, key=lambda c: c.idle_since)
            self._open.pop(victim, None)
            victim.close()

    def _victim(self) -> _Connection | None:
        """The idle connection to close for a new one: the oldest that has sent nothing,
        else the oldest; None when none is idle."""
        idle = [c for c in self._open if c.idle]
        if not idle:
            return None
        poller = select.poll()
        for connection in idle:
            poller.register(connection.fileno, select.POLLIN)
        sent = {fileno for fileno, _ in poller.poll(0)}
        silent = [c for c in idle if c.fileno not in sent]
        return min(silent or idle, key=lambda c: c.idle_since)

    async def _run(self, connection: _Connection) -> None:
        try:
            reader, writer = await asyncio.wait_for(self._streams(connection), REQUEST_TIMEOUT_S)
            await self._converse(connection, reader, writer)
        except (OSError, TimeoutError, ssl.SSLError, h11.ProtocolError, asyncio.IncompleteReadError):
            pass  # the client's problem (gone, too slow, not speaking HTTP or TLS): just close
        except asyncio.CancelledError:
            pass  # evicted or stopping
        except Exception:
            log.exception("http: serving a connection failed")
        finally:
            self._open.pop(connection, None)
            connection.transport.abort()

    async def _streams(self, connection: _Connection) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_READ_CHUNK)
        protocol = asyncio.StreamReaderProtocol(reader)
        transport = connection.transport
        if self._ssl is not None:
            secure = await loop.start_tls(
                transport, protocol, self._ssl, server_side=True, ssl_handshake_timeout=REQUEST_TIMEOUT_S
            )
            assert isinstance(secure, asyncio.Transport)
            connection.transport = transport = secure
        else:
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
            transport.resume_reading()
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    async def _converse(
        self, connection: _Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        while True:
            connection.idle, connection.idle_since = True, time.monotonic()
            try:
                request = await asyncio.wait_for(self._next_request(conn, reader, connection), REQUEST_TIMEOUT_S)
                if request is None:
                    return
                too_large = await asyncio.wait_for(self._skip_body(conn, reader), REQUEST_TIMEOUT_S)
            except h11.RemoteProtocolError as exc:
                await self._send(conn, writer, "GET", text(exc.error_status_hint, "bad request"), close=True)
                return
            method = request.method.decode("ascii", "replace")
            reply = text(413, "request body too large") if too_large else await self._reply(method, request)
            await self._send(conn, writer, method, reply, close=too_large)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return  # h11 says this connection cannot carry another request
            conn.start_next_cycle()

    @staticmethod
    async def _next_request(
        conn: h11.Connection, reader: asyncio.StreamReader, connection: _Connection
    ) -> h11.Request | None:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(_READ_CHUNK)
                connection.idle = not data  # a request has begun: no longer a candidate to close
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                return event
            else:
                return None  # closed by the client

    @staticmethod
    async def _skip_body(conn: h11.Connection, reader: asyncio.StreamReader) -> bool:
        """Read the request to its end; True when its body is larger than any route takes."""
        size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(_READ_CHUNK))
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY_BYTES:
                    return True
            elif isinstance(event, h11.EndOfMessage):
                return False
            else:
                raise h11.RemoteProtocolError("the connection ended inside a request", error_status_hint=400)

    async def _reply(self, method: str, request: h11.Request) -> Reply:
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in request.headers}
        loop = asyncio.get_running_loop()
        if self._auth is not None and not await self._admitted(headers.get("authorization")):
            return text(401, "authentication required", (("WWW-Authenticate", 'Basic realm="streamd"'),))
        if method not in METHODS:
            return text(405, "method not allowed", (("Allow", ", ".join(METHODS)),))
        path, _, query = request.target.decode("latin-1").partition("?")
        try:
            return await loop.run_in_executor(self._render, self.routes.answer, Request(method, path, query, headers))
        except Exception:
            log.exception("http: rendering %s failed", path)
            return text(500, "internal error (logged)")

    async def _admitted(self, header: str | None) -> bool:
        assert self._auth is not None
        raw = header.encode("latin-1") if header is not None else None
        if self._auth.remembered(raw):
            return True
        return await asyncio.get_running_loop().run_in_executor(self._bcrypt, self._auth.admits, raw)

    @staticmethod
    async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, method: str, reply: Reply, close: bool) -> None:
        headers: list[tuple[str, str]] = [
            ("Content-Type", reply.content_type),
            ("Content-Length", str(len(reply.body))),
            *_COMMON_HEADERS,
            *reply.headers,
        ]
        if close:
            headers.append(("Connection", "close"))
        try:
            phrase = http.HTTPStatus(reply.status).phrase
            chunks = [conn.send(h11.Response(status_code=reply.status, headers=headers, reason=phrase))]
            if method != "HEAD" and reply.body:
                # Passed through, not joined: sixty replies of one 4K snapshot share its bytes.
                chunks += conn.send_with_data_passthrough(h11.Data(data=reply.body)) or []
            chunks.append(conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:
            return  # h11 will not let this connection answer (the request broke it): close
        for chunk in chunks:
            if chunk:
                writer.write(chunk)
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
