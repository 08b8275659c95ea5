"""Why a camera is not streaming, in words an operator can act on.

Every failure of a connection ends as a CameraError with a short machine-readable
reason (a metric label) and a message (the log line, credentials redacted). Permanent
ones (no video in the stream, a codec we cannot decode, NVDEC demanded but missing) put
the camera in `failed`; everything else is retried with backoff, because cameras and
recorders come back by themselves.

One reason is not the camera's at all: `local_resources` means streamd itself ran out
of file descriptors (EMFILE, ENFILE), which FFmpeg reports like any failed connect.
`/readyz` names it and the health loop logs it once for the whole process.

FFmpeg answers several different situations with the same "Invalid data found when
processing input" at open: a server that accepts and closes at once (a camera at its
client limit), and a URL pointing at a web server. `explain_open_failure` asks the
server once itself and names which it was.
"""

from __future__ import annotations

import enum
import errno
import socket
from urllib.parse import urlsplit

import av.error

from streamd.base.errors import ErrorKind, StreamdError
from streamd.base.redact import redact_text


class Reason(enum.StrEnum):
    unauthorized = "unauthorized"
    forbidden = "forbidden"
    not_found = "not_found"
    connection_refused = "connection_refused"
    unreachable = "unreachable"
    timeout = "timeout"
    stalled = "stalled"
    frozen_timestamps = "frozen_timestamps"
    end_of_stream = "end_of_stream"
    invalid_data = "invalid_data"
    no_video = "no_video"
    unsupported_codec = "unsupported_codec"
    nvdec_unavailable = "nvdec_unavailable"
    transport_refused = "transport_refused"
    """The server refuses the RTSP transport asked for (461 Unsupported transport)."""
    closed_by_server = "closed_by_server"
    """The server closed the connection before answering (often: at its client limit)."""
    not_rtsp = "not_rtsp"
    """Something else answers at that address (a web server)."""
    local_resources = "local_resources"
    """streamd itself is out of file descriptors: not the camera's fault."""
    gpu_error = "gpu_error"
    """A GPU error while streaming on NVDEC (out of GPU memory, a CUDA error, a frame
    format the GPU letterbox cannot read): this camera's, retried."""
    error = "error"


PERMANENT = frozenset({Reason.no_video, Reason.unsupported_codec, Reason.nvdec_unavailable})


class CameraError(StreamdError):
    kind = ErrorKind.camera

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(redact_text(message))
        self.reason = reason

    @property
    def permanent(self) -> bool:
        return self.reason in PERMANENT


# Most specific first: PyAV's classes form a hierarchy (HTTPNotFoundError is an
# HTTPClientError is an FFmpegError) and some are also builtin OSErrors.
_CLASSIFICATION: tuple[tuple[type[BaseException], Reason], ...] = (
    (av.error.HTTPUnauthorizedError, Reason.unauthorized),
    (av.error.HTTPForbiddenError, Reason.forbidden),
    (av.error.HTTPNotFoundError, Reason.not_found),
    (av.error.FileNotFoundError, Reason.not_found),
    (ConnectionRefusedError, Reason.connection_refused),
    (ConnectionResetError, Reason.end_of_stream),
    (av.error.EOFError, Reason.end_of_stream),
    (TimeoutError, Reason.timeout),
    (av.error.ExitError, Reason.timeout),  # PyAV's own timeout interrupts the read
    (av.error.DecoderNotFoundError, Reason.unsupported_codec),
    (av.error.InvalidDataError, Reason.invalid_data),
    (OSError, Reason.unreachable),  # EHOSTUNREACH, ENETUNREACH, DNS failures...
)


# FFmpeg's errno-based errors that mean one thing whatever PyAV's class for them.
_BY_ERRNO = {
    errno.EMFILE: Reason.local_resources,
    errno.ENFILE: Reason.local_resources,
    # rtsp.c: SETUP answered 461 for every transport allowed -> AVERROR(EPROTONOSUPPORT).
    errno.EPROTONOSUPPORT: Reason.transport_refused,
}
_LOCAL_RESOURCES = (
    "streamd itself is out of file descriptors ({error}); the camera is not at fault: "
    "raise LimitNOFILE= in the unit, or find what holds them (ls /proc/PID/fd)"
)


def classify(exc: BaseException, streaming: bool) -> CameraError:
    """Turn what PyAV raised into a CameraError; `streaming` tells open from read."""
    if isinstance(exc, CameraError):
        return exc
    reason = _BY_ERRNO.get(getattr(exc, "errno", None) or 0)
    if reason is Reason.local_resources:
        return CameraError(reason, _LOCAL_RESOURCES.format(error=getattr(exc, "strerror", None) or exc))
    if reason is None:
        reason = next((r for kind, r in _CLASSIFICATION if isinstance(exc, kind)), Reason.error)
    if streaming and reason is Reason.timeout:
        reason = Reason.stalled
    return CameraError(reason, f"{type(exc).__name__}: {exc}")


def refused_transport(transport: str) -> CameraError:
    """The server answered SETUP with 461 for `transport` (tcp or udp)."""
    other = "udp" if transport == "tcp" else "tcp"
    return CameraError(
        Reason.transport_refused,
        f"the server refuses RTSP over {transport.upper()} (461 Unsupported transport): "
        f"set `transport: {other}` or `transport: auto` for this camera",
    )


def explain_open_failure(url: str, error: CameraError, timeout_s: float) -> CameraError:
    """Say what a vague open failure really was, asking the server when that tells."""
    if error.reason is Reason.unreachable:
        return explain_unreachable(url, error)
    if error.reason is Reason.invalid_data and urlsplit(url).scheme.lower() in ("rtsp", "rtsps"):
        return _explain_invalid_data(url, error, timeout_s)
    return error


def _explain_invalid_data(url: str, error: CameraError, timeout_s: float) -> CameraError:
    parts = urlsplit(url)
    if parts.hostname is None or parts.scheme.lower() != "rtsp":
        return error  # rtsps: the answer is behind TLS; nothing to learn cheaply
    try:
        with socket.create_connection((parts.hostname, parts.port or 554), timeout=timeout_s) as probe:
            probe.settimeout(timeout_s)
            # No credentials: the first line of any answer is all this needs.
            probe.sendall(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: streamd\r\n\r\n")
            first = probe.recv(64)
    except ConnectionResetError:
        first = b""
    except OSError:
        return error  # it did not even take a connection now: the failure said enough
    if not first:
        return CameraError(
            Reason.closed_by_server,
            "the server closed the connection before answering (a camera at its client limit does this)",
        )
    # A web server answers with a status line, or (Python's, to a version it does not
    # know) an HTTP/0.9-style bare HTML page.
    if first.lstrip().lower().startswith((b"http/", b"<!doctype html", b"<html")):
        return CameraError(
            Reason.not_rtsp, "not an RTSP server (it answered HTTP): check the port and the scheme of the URL"
        )
    return error


def explain_unreachable(url: str, error: CameraError) -> CameraError:
    """A DNS failure reaches PyAV as a bare "Input/output error" (FFmpeg logs the real
    reason, and PyAV silences FFmpeg's log): look the host up to say what went wrong."""
    if error.reason is not Reason.unreachable:
        return error
    host = urlsplit(url).hostname
    if not host:
        return error
    try:
        socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        return CameraError(Reason.unreachable, f"cannot resolve host {host!r}: {exc.strerror}")
    except (OSError, UnicodeError):
        return error
    return error
