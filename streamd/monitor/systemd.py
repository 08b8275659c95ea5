"""The systemd notify protocol: READY, WATCHDOG, STATUS and STOPPING datagrams.

A datagram of `KEY=value` lines to the unix socket in `$NOTIFY_SOCKET` (a leading `@`
means the abstract namespace). Without `$NOTIFY_SOCKET` (not under systemd) every call
does nothing. `$WATCHDOG_USEC` (set by `WatchdogSec=`) says how often systemd wants a
ping; we ping at half that, and only while the pipeline really makes progress.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        self.watchdog_interval_s = int(usec) / 2_000_000 if usec.isdigit() and int(usec) > 0 else None
        self._socket: socket.socket | None = None
        self._stopping = False
        if self._address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, **fields: str) -> None:
        if self._socket is None:
            return
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            self._socket.sendto(message, self._address)
        except OSError as error:
            # systemd gone or the socket full: nothing to do but say so once in a while.
            log.debug("sd_notify failed: %s", error)

    def ready(self, status: str) -> None:
        if not self._stopping:  # READY after STOPPING would tell systemd a stopping service is up
            self.send(READY="1", STATUS=status)

    def watchdog(self) -> None:
        self.send(WATCHDOG="1")

    def status(self, text: str) -> None:
        self.send(STATUS=text)

    def stopping(self) -> None:
        self._stopping = True
        self.send(STOPPING="1", STATUS="stopping")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
