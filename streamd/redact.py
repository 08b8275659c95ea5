"""Keep credentials out of everything streamd prints.

Camera URLs carry passwords (`rtsp://user:pass@host/...`, sometimes `?password=...`),
and FFmpeg repeats the URL in its error messages. Everything that leaves the process as
text (logs, status, errors) goes through `redact_text`; code that shows a URL on
purpose uses `redact_url`.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s'\"]+@")
_SECRET_PARAM = re.compile(
    r"(?P<key>(?:password|passwd|pwd|pass|token|secret|apikey|api_key|auth|key)=)"
    r"[^&\s'\"]+",
    re.IGNORECASE,
)
MASK = "***"


def redact_text(text: str) -> str:
    """Mask URL user-info and secret-looking query values anywhere in `text`."""
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m.group('key')}{MASK}", text)


def redact_url(url: str) -> str:
    """`url` with user name, password and secret query values masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if parts.username is None and parts.password is None:
        return redact_text(url)
    host = parts.netloc.rpartition("@")[2]
    return redact_text(urlunsplit(parts._replace(netloc=f"{MASK}@{host}")))
