"""Reading `streams.yaml` again while running: on SIGHUP, on request, or when the file
changes and then stands still.

Watching (the directory, not the file: editors save by renaming a new file over the
old), settling (a save caught half-written is never read), reading off the event loop,
and applying under one lock (one reload at a time; a bug in one never stops the next)
are this component's. What applying means (cameras as a diff, postprocess, the NVDEC
budget) is the daemon's, handed in as `apply`. Sections a running daemon cannot swap
(`RESTART_SECTIONS`) keep their running values, and the result says a restart is
needed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

from streamd.base.failures import Failures
from streamd.base.tasks import cancel_and_wait
from streamd.base.threads import run_in_thread
from streamd.config.loader import ConfigError, LoadedConfig, config_sha256, read_config
from streamd.config.schema import Overrides
from streamd.metrics.registry import Metrics

log = logging.getLogger(__name__)

RESTART_SECTIONS = ("metrics", "engine", "batcher", "sinks", "recognition")
"""Sections a running daemon cannot swap safely: they take a restart."""
_REWATCH_S = 5.0
"""Pause before watching again after the watch itself failed."""
WATCH_IDLE_S = 5.0
"""The watcher's idle pass: its first one is when a save made while it was not watching is caught."""

Apply = Callable[[LoadedConfig], Awaitable[str]]
"""Applies a configuration read from the file; returns a summary for the log."""


def _fingerprint(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is written or replaced: inode, size, modification time."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


class ConfigReload:
    def __init__(
        self,
        path: Path,
        running: Callable[[], LoadedConfig],
        apply: Apply,
        overrides: Overrides,
        metrics: Metrics,
        failures: Failures,
    ) -> None:
        """`running`: the configuration in force."""
        self.path = path
        self.running = running
        self.apply = apply
        self.overrides = overrides
        self.metrics = metrics
        self.failures = failures
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Task[str]] = set()
        self._watch: asyncio.Task[None] | None = None

    async def reload(self, trigger: str) -> str:
        """Read the file again and apply it; returns the result (the metric's label)."""
        async with self._lock:
            try:
                return await self._reload_locked(trigger)
            except Exception:
                # A bug, not a bad file; whatever it was, the next edit must still apply.
                log.exception("reload (%s) failed; /status shows what runs now", trigger)
                return self._result("rejected")

    def spawn(self, trigger: str) -> None:
        """A reload in the background (a signal handler cannot wait for one)."""
        task = asyncio.create_task(self.reload(trigger), name="reload")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def start_watching(self) -> None:
        if self._watch is None:
            self._watch = self.failures.watch(
                asyncio.create_task(self._watch_loop(), name="config-watch"), "config-watch"
            )

    async def stop(self, _timeout: float = 0.0) -> bool:
        """Stop watching and abandon reloads under way (a stop outranks them)."""
        await cancel_and_wait(self._watch)
        self._watch = None
        for task in list(self._pending):
            await cancel_and_wait(task)
        return True

    async def _reload_locked(self, trigger: str) -> str:
        try:
            read = await run_in_thread(lambda: read_config(self.path), name="config-read")
        except ConfigError as error:
            log.error("reload (%s) rejected; the running configuration stays:", trigger)
            for problem in error.errors:
                log.error("  %s", problem)
            return self._result("rejected")
        running = self.running()
        if read.sha256 == running.sha256:
            return self._result("unchanged")
        config, new = running.config, self.overrides.apply(read.config)
        kept = {name: getattr(config, name) for name in RESTART_SECTIONS if getattr(new, name) != getattr(config, name)}
        summary = await self.apply(replace(read, config=new.model_copy(update=kept)))
        log.info("reload (%s): %s", trigger, summary)
        if kept:
            log.warning("reload: changes to %s need a restart and were not applied", ", ".join(kept))
            return self._result("restart_needed")
        return self._result("applied")

    def _result(self, result: str) -> str:
        self.metrics.config_reloads.labels(result).inc()
        return result

    async def _watch_loop(self) -> None:
        import watchfiles

        directory, name = self.path.parent, self.path.name
        # The directory, not the file: editors save by writing a new file and renaming
        # it over the old one, which a watch on the old file's inode would miss. The
        # watch itself is restarted if it ever fails: edits must never stop applying.
        while True:
            in_place = False
            try:
                # The first pass (a change, or the watcher's first idle timeout) comes once
                # the watch is in place: a save made before that (while the engine loaded,
                # or during a re-watch) raised no event, so the file is compared then.
                async for changes in watchfiles.awatch(
                    directory,
                    watch_filter=lambda _change, changed: Path(changed).name == name,
                    debounce=300,
                    recursive=False,
                    yield_on_timeout=True,
                    rust_timeout=int(WATCH_IDLE_S * 1000),
                ):
                    if changes or (not in_place and await self._edited_since_read()):
                        await self._wait_until_settled()
                        await self.reload("file changed")
                    in_place = True
            except Exception:
                log.exception("watching %s failed; watching again in %.0fs", self.path, _REWATCH_S)
            await asyncio.sleep(_REWATCH_S)

    async def _edited_since_read(self) -> bool:
        """Whether the file differs from the one running (a missing file does: the reload says why)."""
        try:
            return await run_in_thread(lambda: config_sha256(self.path), name="config-read") != self.running().sha256
        except OSError:
            return True

    async def _wait_until_settled(self) -> None:
        """Return once the file has not changed for `reload.settle_s`.

        A writer that pauses mid-save leaves a file that may even validate (the first
        camera of two, a URL cut short); reading only a file that has stood still for the
        settle window keeps such a save from ever being applied.
        """
        previous = _fingerprint(self.path)
        while True:
            await asyncio.sleep(self.running().config.reload.settle_s)
            current = _fingerprint(self.path)
            if current == previous:
                return
            previous = current
