"""The sink contract and the thread that keeps a slow sink off the inference path.

A sink only writes records. SinkRunner gives it a bounded queue and a thread: `offer`
never blocks (a full queue drops the record and counts it), a write error is logged and
counted and the sink goes on with the next record, and `stop` flushes what is queued.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from streamd.supervision import Failures

log = logging.getLogger(__name__)

Record = dict[str, Any]
_STOP = object()


class Sink(Protocol):
    name: str

    def write(self, records: list[Record]) -> None:
        """Write a group of records; raise on failure."""
        ...

    def close(self) -> None: ...


class SinkRunner:
    def __init__(
        self,
        sink: Sink,
        queue_size: int,
        on_drop: Callable[[str, str], None],
        on_written: Callable[[int], None] | None = None,
        failures: Failures | None = None,
    ) -> None:
        self.sink = sink
        self.on_drop = on_drop
        self.on_written = on_written
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        component = f"sink-{sink.name}"
        run = (failures or Failures()).guard(component, self._run)
        self._thread = threading.Thread(target=run, name=component, daemon=True)
        self._started = False

    def start(self) -> None:
        self._thread.start()
        self._started = True

    def offer(self, record: Record) -> bool:
        """Queue `record` for writing; False (and counted) when the sink is behind."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.on_drop(self.sink.name, "queue_full")
            return False
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, close the sink."""
        if not self._started:
            return
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning("sink %s: queue still full at shutdown", self.sink.name)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            log.warning("sink %s did not finish within %.0fs", self.sink.name, timeout)
        self._started = False

    def _run(self) -> None:
        try:
            while True:
                batch = [self._queue.get()]
                while len(batch) < 256:  # write in groups: one flush per group
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                done = batch[-1] is _STOP
                records: list[Record] = [r for r in batch if r is not _STOP]  # type: ignore[misc]
                if records:
                    self._write(records)
                if done:
                    return
        finally:
            try:
                self.sink.close()
            except Exception:
                log.exception("sink %s: close failed", self.sink.name)

    def _write(self, records: list[Record]) -> None:
        try:
            self.sink.write(records)
        except Exception:
            log.exception("sink %s: writing %d record(s) failed; they are lost", self.sink.name, len(records))
            for _ in records:
                self.on_drop(self.sink.name, "write_error")
            return
        if self.on_written is not None:
            self.on_written(len(records))
