"""Keep credentials out of everything streamd prints.

Camera URLs carry passwords (`rtsp://user:pass@host/...`, sometimes `?password=...`),
and FFmpeg repeats the URL in its error messages. Everything that leaves the process as
text (logs, status, errors) goes through `redact_text`; code that shows a URL on
purpose uses `redact_url`.

Two nets, because neither is enough alone:

- by value: every user name, password and secret query value read from a configuration
  (after `${ENV}` and `${credential:NAME}` expansion) is registered with
  `register_secrets` and masked wherever it appears, whatever characters it holds. A
  pattern cannot know where a password with a `'` or a `/` in it ends; the value can.
- by pattern: URL user-info and secret-looking query values in text that came from
  elsewhere (a URL typed on the command line, a server's redirect).

Values shorter than `MIN_SECRET_LENGTH` are only masked by pattern: masking every "ab"
in every line would make the logs unreadable and protect nothing a guess would not find.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s'\"]+@")
_SECRET_KEYS = r"(?:password|passwd|pwd|pass|token|secret|apikey|api_key|auth|key)="
_SECRET_PARAM = re.compile(rf"(?P<key>{_SECRET_KEYS})[^&\s'\"]+", re.IGNORECASE)
_SECRET_PARAM_VALUE = re.compile(rf"{_SECRET_KEYS}(?P<value>[^&#]+)", re.IGNORECASE)
_SCHEME_PREFIX = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*:")
MASK = "***"
MIN_SECRET_LENGTH = 3


class _SecretRegistry:
    """The secrets this process knows, and one compiled pattern over all of them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None

    def add(self, secrets: Iterable[str]) -> None:
        new = {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}
        with self._lock:
            if new <= self._secrets:
                return
            self._secrets = self._secrets | new
            # Longest first, so a password holding another secret is masked whole.
            alternatives = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(map(re.escape, alternatives)))

    def mask(self, text: str) -> str:
        pattern = self._pattern  # one read: the registry may grow from another thread
        return text if pattern is None else pattern.sub(MASK, text)


_registry = _SecretRegistry()


def register_secrets(secrets: Iterable[str]) -> None:
    """Mask these values in all text from now on (the registry only grows)."""
    _registry.add(secrets)


def url_secrets(text: str) -> set[str]:
    """User name, password and secret query values in `text` (a URL, or a mistyped one).

    Generous on purpose: the user-info is everything between the scheme and the last
    `@`, so `rtsp://admin:pa/ss@host` and `rtsp//admin:pw@host` give their passwords
    too. Each value comes raw, percent-decoded, and as Python's repr shows it (PyAV's
    error messages repr the URL, escaping quotes and backslashes).
    """
    found: set[str] = set()
    at = text.rfind("@")
    if at > 0:
        userinfo = text[:at]
        slashes = userinfo.find("//")
        userinfo = userinfo[slashes + 2 :] if slashes >= 0 else _SCHEME_PREFIX.sub("", userinfo)
        user, _, password = userinfo.partition(":")
        found.update(filter(None, (user, password)))
    found.update(match.group("value") for match in _SECRET_PARAM_VALUE.finditer(text))
    variants = found | {unquote(value) for value in found}
    return variants | {repr(value)[1:-1] for value in variants}


def redact_text(text: str) -> str:
    """Mask known secrets, URL user-info and secret-looking query values in `text`."""
    text = _registry.mask(text)
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m.group('key')}{MASK}", text)


def redact_data(value: Any) -> Any:
    """`value` (JSON-like data) with every string in it passed through redact_text."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {key: redact_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(item) for item in value]
    return value


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
