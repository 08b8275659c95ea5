"""TLS and basic auth for the listener, in the Prometheus exporters' web-config format.

The file is the one node_exporter and every exporter built on Prometheus' exporter-toolkit
read with `--web.config.file`, so an operator who has secured one exporter secures
streamd the same way:

    tls_server_config:
      cert_file: server.crt          # relative to this file's directory
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
      client_ca_file: clients.pem
      min_version: TLS12             # TLS12 (default) or TLS13
    basic_auth_users:
      prometheus: $2b$12$...        # bcrypt hashes only, never a clear password

The file is read again, with the certificate, key and CA files it names, when any of
them changes (checked at most once a second, as connections arrive), so a renewed
certificate is served without a restart; an edit that does not load is logged and the
last good configuration stays.

The part of the convention streamd does not implement (cipher suites, curve
preferences, allowed client SANs, HTTP/2, extra headers) is refused by name rather
than ignored: a file that asks for a restriction must not run without it.

Checking a password with bcrypt takes tens of milliseconds by design. A successful
check is remembered (keyed by a SHA-256 of the user and password, held only in memory),
so a scraper that sends the same credentials every 15 s pays for bcrypt once; failures
are never remembered, and an unknown user costs the same bcrypt as a known one, so the
time of an answer does not tell which user names exist.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ssl
import threading
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import bcrypt
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from streamd.base.errors import ErrorKind, StreamdError

# Successful checks remembered at most (one entry per distinct user and password).
_REMEMBERED_MAX = 64
# Compared against when the user is unknown: the same cost as a real check.
_DUMMY_HASH = bcrypt.hashpw(b"streamd: unknown user", bcrypt.gensalt(rounds=10))
_UNSUPPORTED = ("cipher_suites", "curve_preferences", "prefer_server_cipher_suites", "client_allowed_sans")


class WebConfigError(StreamdError, ValueError):
    """The web config file is missing, unreadable or invalid; the message names the file and key."""

    kind = ErrorKind.config


class ClientAuth(StrEnum):
    NoClientCert = "NoClientCert"
    VerifyClientCertIfGiven = "VerifyClientCertIfGiven"
    RequireAndVerifyClientCert = "RequireAndVerifyClientCert"


class TlsVersion(StrEnum):
    TLS12 = "TLS12"
    TLS13 = "TLS13"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsServerConfig(_Strict):
    cert_file: str
    """The server's certificate chain (PEM)."""
    key_file: str
    """Its private key (PEM)."""
    client_auth_type: ClientAuth = ClientAuth.NoClientCert
    """Whether clients must present a certificate signed by `client_ca_file`."""
    client_ca_file: str | None = None
    """The CAs that sign client certificates (PEM)."""
    min_version: TlsVersion = TlsVersion.TLS12
    """The oldest TLS version accepted."""
    max_version: TlsVersion = TlsVersion.TLS13
    """The newest TLS version accepted."""


class WebConfigFile(_Strict):
    tls_server_config: TlsServerConfig | None = None
    """Serve HTTPS with this certificate; absent: plain HTTP."""
    basic_auth_users: dict[str, str] = {}
    """User name to bcrypt hash; when any is given, every route needs one of them."""

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt_hashes(cls, users: dict[str, str]) -> dict[str, str]:
        for user, hashed in users.items():
            if not hashed.startswith(("$2a$", "$2b$", "$2y$")) or len(hashed) != 60:
                # The hash is not echoed: it is a secret too.
                raise ValueError(f"user {user!r}: not a bcrypt hash (make one with `htpasswd -nBC 12 USER`)")
        return users


@dataclass(frozen=True)
class WebConfig:
    """A loaded, checked web config: the TLS context to serve with and the users to admit."""

    path: Path
    ssl_context: ssl.SSLContext | None
    users: dict[str, bytes]
    files: tuple[Path, ...] = ()
    """The file and the certificate, key and CA files it names: what a renewal changes."""

    @property
    def auth_required(self) -> bool:
        return bool(self.users)


def load_web_config(path: Path) -> WebConfig:
    """Read and check `path`: the YAML, the keys, and that the certificate and key load."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WebConfigError(f"{path}: cannot read the web config: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise WebConfigError(f"{path}: not valid YAML: {exc}") from exc
    raw = raw if raw is not None else {}
    if not isinstance(raw, dict):
        raise WebConfigError(f"{path}: the web config must be a mapping")
    _refuse_unsupported(path, raw)
    try:
        parsed = WebConfigFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise WebConfigError(f"{path}: {problems}") from None
    tls = parsed.tls_server_config
    context = _ssl_context(path, tls) if tls else None
    users = {user: hashed.encode() for user, hashed in parsed.basic_auth_users.items()}
    named = [tls.cert_file, tls.key_file, tls.client_ca_file] if tls else []
    files = (path, *((path.parent / name).resolve() for name in named if name))
    return WebConfig(path, context, users, files)


def files_stamp(files: tuple[Path, ...]) -> tuple[tuple[int, int] | None, ...]:
    """What changes when any of `files` is written, replaced or removed."""
    stamps: list[tuple[int, int] | None] = []
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            stamps.append(None)
        else:
            stamps.append((stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)


def _refuse_unsupported(path: Path, raw: dict[str, Any]) -> None:
    tls = raw.get("tls_server_config")
    for key in _UNSUPPORTED:
        if isinstance(tls, dict) and key in tls:
            raise WebConfigError(f"{path}: tls_server_config.{key} is not supported by streamd; remove it")
    if "http_server_config" in raw:
        raise WebConfigError(f"{path}: http_server_config is not supported by streamd; remove it")


def _ssl_context(path: Path, tls: TlsServerConfig) -> ssl.SSLContext:
    base = path.parent

    def resolve(name: str) -> str:
        return str((base / name).resolve())

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3 if tls.min_version is TlsVersion.TLS13 else ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3 if tls.max_version is TlsVersion.TLS13 else ssl.TLSVersion.TLSv1_2
    if context.minimum_version > context.maximum_version:
        raise WebConfigError(f"{path}: tls_server_config.min_version is newer than max_version")
    try:
        context.load_cert_chain(resolve(tls.cert_file), resolve(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise WebConfigError(
            f"{path}: tls_server_config: cannot load cert_file {tls.cert_file!r} with key_file {tls.key_file!r}: {exc}"
        ) from exc
    if tls.client_auth_type is not ClientAuth.NoClientCert:
        if tls.client_ca_file is None:
            raise WebConfigError(f"{path}: tls_server_config.client_ca_file is needed by {tls.client_auth_type}")
        try:
            context.load_verify_locations(resolve(tls.client_ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(f"{path}: tls_server_config.client_ca_file {tls.client_ca_file!r}: {exc}") from exc
        required = tls.client_auth_type is ClientAuth.RequireAndVerifyClientCert
        context.verify_mode = ssl.CERT_REQUIRED if required else ssl.CERT_OPTIONAL
    return context


class BasicAuth:
    """Checks `Authorization: Basic` headers against the file's users (thread-safe)."""

    def __init__(self, users: dict[str, bytes]) -> None:
        self._users = users
        self._remembered: dict[bytes, None] = {}
        self._lock = threading.Lock()

    def remembered(self, header: bytes | None) -> bool:
        """True when these credentials were admitted before: no bcrypt needed."""
        credentials = _basic_credentials(header)
        return credentials is not None and self._known(_key(*credentials))

    def admits(self, header: bytes | None) -> bool:
        """True when the header carries a known user with the right password. Slow (bcrypt)
        the first time for each user and password: call it off the event loop."""
        credentials = _basic_credentials(header)
        if credentials is None:
            return False
        user, password = credentials
        key = _key(user, password)
        if self._known(key):
            return True
        hashed = self._users.get(user.decode("utf-8", "replace"))
        ok = bcrypt.checkpw(password, hashed if hashed is not None else _DUMMY_HASH) and hashed is not None
        if ok:
            with self._lock:
                if len(self._remembered) >= _REMEMBERED_MAX:
                    self._remembered.pop(next(iter(self._remembered)))
                self._remembered[key] = None
        return ok

    def _known(self, key: bytes) -> bool:
        with self._lock:
            return key in self._remembered


def _key(user: bytes, password: bytes) -> bytes:
    return hashlib.sha256(user + b"\0" + password).digest()


def _basic_credentials(header: bytes | None) -> tuple[bytes, bytes] | None:
    if header is None:
        return None
    scheme, _, encoded = header.strip().partition(b" ")
    if not hmac.compare_digest(scheme.lower(), b"basic"):
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None
