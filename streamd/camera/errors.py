"""Why a camera is not streaming, in words an operator can act on.

Every failure of a connection ends as a CameraError with a short machine-readable
reason (a metric label) and a message (the log line, credentials redacted). Permanent
ones (no video in the stream, a codec we cannot decode, NVDEC demanded but missing) put
the camera in `failed`; everything else is retried with backoff, because cameras and
recorders come back by themselves.
"""

from __future__ import annotations

import enum
import socket
from urllib.parse import urlsplit

import av.error

from streamd.redact import redact_text


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
    error = "error"


PERMANENT = frozenset({Reason.no_video, Reason.unsupported_codec, Reason.nvdec_unavailable})


class CameraError(Exception):
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


def classify(exc: BaseException, streaming: bool) -> CameraError:
    """Turn what PyAV raised into a CameraError; `streaming` tells open from read."""
    if isinstance(exc, CameraError):
        return exc
    reason = next((r for kind, r in _CLASSIFICATION if isinstance(exc, kind)), Reason.error)
    if streaming and reason is Reason.timeout:
        reason = Reason.stalled
    return CameraError(reason, f"{type(exc).__name__}: {exc}")


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
