"""Signals from the first line of `streamd run` on, before the event loop can take them.

Python starts with SIGHUP and SIGTERM at their defaults, which kill the process: a
reload sent while streamd is still importing, or a stop sent while it loads the model,
would end it with a signal instead of an orderly exit. `EarlySignals` is installed
first thing: until the daemon's loop takes over, a stop signal is remembered (the
daemon stops as soon as it can, exit 0) and SIGHUP is ignored (the configuration is
being read for the first time anyway).

When the daemon has stopped, `ignore_from_now_on` keeps a late signal (systemd's
SIGTERM to the whole control group, a second Ctrl-C) from turning a clean exit into a
killed one.
"""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class EarlySignals:
    def __init__(self) -> None:
        self.stop_requested = False

    def install(self) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def _on_stop(self, _signum: int, _frame: FrameType | None) -> None:
        self.stop_requested = True


def ignore_from_now_on() -> None:
    for signum in (*STOP_SIGNALS, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
