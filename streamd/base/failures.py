"""Every background task and thread is watched: no crash is silent.

A crashed component is logged once with its traceback through the normal (redacting)
log, counted in `streamd_component_failures_total{component}`, and remembered: a
remembered failure turns `/readyz` to 503 and stops the systemd watchdog pings, so
systemd restarts the service (`Restart=on-failure`, `WatchdogSec=`). Restarting the
process is the recovery: a component that died of a bug would only die again.

Components are named by their job (`batcher`, `engine-assemble`, `sink-jsonl`,
`camera-lobby`...), the same names the log and the metric use.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Failures:
    def __init__(self, count: Callable[[str], None] | None = None) -> None:
        self._count = count or (lambda _component: None)
        self._lock = threading.Lock()
        self._failed: dict[str, str] = {}

    def report(self, component: str, error: BaseException) -> None:
        """Record that `component` crashed with `error` (any thread)."""
        with self._lock:
            first = component not in self._failed
            self._failed.setdefault(component, f"{type(error).__name__}: {error}")
        self._count(component)
        if first:
            log.error("%s crashed; streamd is not ready and stops the watchdog pings", component, exc_info=error)

    @property
    def failed(self) -> dict[str, str]:
        """Crashed components and why (a copy)."""
        with self._lock:
            return dict(self._failed)

    def describe(self) -> str:
        return ", ".join(f"{component} crashed ({why})" for component, why in self.failed.items())

    def watch(self, task: asyncio.Task[None], component: str) -> asyncio.Task[None]:
        """Report `task` if it ends with an exception (cancellation is a normal end)."""

        def done(finished: asyncio.Task[None]) -> None:
            if not finished.cancelled() and finished.exception() is not None:
                self.report(component, finished.exception())  # type: ignore[arg-type]

        task.add_done_callback(done)
        return task

    def guard(
        self, component: str, target: Callable[[], None], after_crash: Callable[[], None] | None = None
    ) -> Callable[[], None]:
        """`target` for a thread: a crash is reported, then `after_crash` lets the
        component's neighbours finish (e.g. pass a stop marker downstream)."""

        def run() -> None:
            try:
                target()
            except Exception as error:  # noqa: BLE001 - that is the point: no crash unreported
                self.report(component, error)
                if after_crash is not None:
                    after_crash()

        return run
