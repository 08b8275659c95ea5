"""The sink contract and the thread that keeps a slow sink off the inference path.

A sink only writes records. SinkRunner gives it a bounded queue and a thread: `offer`
never blocks (a full queue drops the record and counts it), and `stop` flushes what is
queued within the time it is given. The detector offers a batch's records at once
(`offer_many`): one lock and one wake-up of the sink thread per batch, not per record.

A failing sink (a full disk, a directory gone) fails every write for a while: that is
one failure episode, not thousands of errors. Its start is logged once (with the
traceback only when the error is not the operating system's), a summary follows every
`summary_every_s` while it lasts, and its end is logged with the total dropped. It ends
once writes have succeeded for `CALM_S` without a failure: a nearly full disk takes a
small write and refuses the next, and that is one episode, not one a second. Every
record of a failed write is counted as dropped (`write_error`), each exactly once.
While an episode lasts the sink is unhealthy: `problem()` says why, for `/readyz`.

What a failed write costs depends on the sink. A file sink (`retries = False`) drops the
group (counted, `write_error`): retrying a full disk only delays the next records. A
broker sink (`retries = True`) keeps the group and retries it with a growing pause while
new records wait in the bounded queue: an outage shorter than the queue loses nothing,
and beyond the queue's bound the newest records are dropped and counted (`queue_full`).
At stop, what a retrying sink has not written by the deadline is dropped and counted
(`shutdown`), so the stop stays bounded and the counts exact. A write can hang inside
the client library (a broker that takes the connection and never answers: Redis
stopped with SIGSTOP waits out the socket timeout on every retry), so the stop does not
wait for the thread: the last part of its time is kept in reserve, and at the write
deadline a group still in the broker's hands and everything queued behind it are
counted as `shutdown` at once. The thread is abandoned (whatever it does later counts
nothing), the final line is logged, and the stop is clean: the broker's failure is not
the daemon's. Every sink's final line therefore says written + dropped = offered.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from streamd.base.failures import Failures

log = logging.getLogger(__name__)

Record = dict[str, Any]
# Of the time a stop is given, the end kept to count what is left, close and log: a
# fifth, at most this long.
_STOP_RESERVE_MAX_S = 1.0


# Pauses between retries of a failed group (retrying sinks): from the first, doubling.
_RETRY_FIRST_S = 0.2
_RETRY_MAX_S = 5.0
# Records written at most per write (one flush each). A batch's records arrive together
# (`offer_many`), so a write already covers a batch: waiting for more records after a
# wake-up (5 ms, when records came one at a time) only added a second wake-up per batch.
_GROUP = 256
# A failure episode ends once writes have succeeded this long with no failure between.
CALM_S = 10.0


class Sink(Protocol):
    name: str
    retries: bool
    """True: a failed write is retried (the records kept); False: the records are dropped."""

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
        on_health: Callable[[bool], None] | None = None,
        summary_every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        kinds: frozenset[str] = frozenset({"frames", "events"}),
    ) -> None:
        """`kinds`: what the sink takes, `frames` (records of analysed frames), `events`
        (track events: records with an `event` key); `Outputs` offers it only those."""
        self.sink = sink
        self.kinds = kinds
        self.on_drop = on_drop
        self.on_written = on_written
        self.on_health = on_health or (lambda _up: None)
        self.on_health(True)
        self.episode = _Episode(sink.name, summary_every_s, clock, sink.retries, queue_size)
        self._pending = _Pending(queue_size)
        component = f"sink-{sink.name}"
        run = (failures or Failures()).guard(component, self._run)
        self._thread = threading.Thread(target=run, name=component, daemon=True)
        self._started = False
        self._stop_by: float | None = None  # the stop's write deadline, once stopping
        self._count_lock = threading.Lock()
        # Under `_count_lock`: the group the thread is writing, and whether the stop gave up
        # on the thread (from then on the thread counts nothing: the stop counted it all).
        self._in_flight: list[Record] = []
        self._abandoned = False
        self.written = self.dropped_queue_full = self.dropped_write_error = self.dropped_shutdown = 0

    def start(self) -> None:
        self._thread.start()
        self._started = True

    def offer(self, record: Record) -> bool:
        """Queue `record` for writing; False (and counted) when the sink is behind or stopped."""
        return self.offer_many([record]) == 1

    def offer_many(self, records: list[Record]) -> int:
        """Queue `records` for writing, in order, as many as there is room for; those that
        do not fit (the sink is behind) or come after the stop are dropped and counted.
        Returns how many were queued."""
        if not self._started:
            # Only when the engine drain overran its share of the stop deadline: a record
            # that comes after the sink's last write is counted, not silently queued.
            self._drop(records, "shutdown")
            return 0
        queued = self._pending.put(records)
        if queued < len(records):
            # Closed: the stop began after the check above; the thread may be gone.
            self._drop(records[queued:], "shutdown" if self._pending.closed else "queue_full")
        return queued

    def camera_states(self, states: dict[str, str]) -> None:
        """Every camera's state, for sinks that publish it (MQTT); others ignore it."""
        publish = getattr(self.sink, "camera_states", None)
        if publish is not None and self._started:
            publish(states)

    def problem(self) -> str | None:
        """Why the sink is not writing now, or None while it is."""
        return self.episode.describe()

    def stop(self, timeout: float = 10.0) -> bool:
        """Write what is queued and close the sink, returning within `timeout`; what could
        not be written by then is counted as dropped (`shutdown`). Always True: every
        record is accounted for, whatever the sink's broker does."""
        if not self._started:
            return True
        self._started = False
        reserve = min(_STOP_RESERVE_MAX_S, timeout / 5)
        deadline = self._stop_by = time.monotonic() + max(0.0, timeout - reserve)
        # The thread writes what is queued, then ends. A retrying sink that is failing
        # gives up at the deadline and drops what it holds (counted); one stuck inside a
        # write is abandoned there, its records counted here.
        self._pending.close()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            abandoned = self._abandon()
            log.warning(
                "sink %s: the last write did not return within %.1fs; %d record(s) it held or had queued "
                "are counted as dropped (shutdown)",
                self.sink.name,
                timeout,
                abandoned,
            )
        self.episode.close()
        dropped = self.dropped_queue_full + self.dropped_write_error + self.dropped_shutdown
        log.info(
            "sink %s stopped: %d record(s) written, %d dropped (%d queue_full, %d write_error, %d shutdown)",
            self.sink.name,
            self.written,
            dropped,
            self.dropped_queue_full,
            self.dropped_write_error,
            self.dropped_shutdown,
        )
        return True

    def _abandon(self) -> int:
        """Give up on a thread stuck in a write: count its group and the queue as `shutdown`."""
        with self._count_lock:
            self._abandoned = True
            left = self._in_flight + self._pending.take(len(self._pending))
            self._in_flight = []
            self._count_dropped(left, "shutdown")
        for _ in left:
            self.on_drop(self.sink.name, "shutdown")
        return len(left)

    def _run(self) -> None:
        try:
            while self._pending.wait():
                with self._count_lock:
                    if self._abandoned:
                        return
                    group = self._in_flight = self._pending.take(_GROUP)  # one flush per group
                self._write(group)
                with self._count_lock:
                    self._in_flight = []
        finally:
            try:
                self.sink.close()
            except Exception:
                log.exception("sink %s: close failed", self.sink.name)

    def _write(self, records: list[Record]) -> None:
        pause = _RETRY_FIRST_S
        while True:
            if self._past_stop_deadline():
                self._drop(records, "shutdown")
                return
            try:
                self.sink.write(records)
                break
            except Exception as error:  # noqa: BLE001 - counted and logged as an episode
                if not self.sink.retries:
                    self._drop(records, "write_error")
                    self._failed(error, dropped=len(records))
                    return
                self._failed(error, dropped=0)
            time.sleep(min(pause, self._until_stop_deadline()))
            pause = min(pause * 2, _RETRY_MAX_S)
        with self._count_lock:
            if self._abandoned:
                return  # the stop counted these as dropped already
            self.written += len(records)
        if self.on_written is not None:
            self.on_written(len(records))
        if self.episode.end():
            self.on_health(True)

    def _failed(self, error: Exception, dropped: int) -> None:
        if self.episode.failed(error, dropped):
            self.on_health(False)

    def _drop(self, records: list[Record], reason: str) -> None:
        with self._count_lock:  # `offer` (deliver thread) and `_write` (sink thread) both drop
            if self._abandoned and threading.current_thread() is self._thread:
                return  # the stop counted the abandoned thread's records already
            self._count_dropped(records, reason)
        for _ in records:
            self.on_drop(self.sink.name, reason)

    def _count_dropped(self, records: list[Record], reason: str) -> None:
        if reason == "queue_full":
            self.dropped_queue_full += len(records)
        elif reason == "write_error":
            self.dropped_write_error += len(records)
        else:
            self.dropped_shutdown += len(records)

    def _past_stop_deadline(self) -> bool:
        return self._stop_by is not None and time.monotonic() >= self._stop_by

    def _until_stop_deadline(self) -> float:
        return float("inf") if self._stop_by is None else max(0.0, self._stop_by - time.monotonic())


class _Pending:
    """The records waiting for the sink thread: bounded, put in batches, taken in groups."""

    def __init__(self, capacity: int) -> None:
        self._records: deque[Record] = deque()
        self._capacity = capacity
        self._changed = threading.Condition()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, records: list[Record]) -> int:
        """Queue as many of `records` as there is room for, in order; how many (none once
        closed). Never blocks."""
        with self._changed:
            if self._closed:
                return 0
            fitting = max(0, min(len(records), self._capacity - len(self._records)))
            if fitting:
                self._records.extend(itertools.islice(records, fitting))
                self._changed.notify()
        return fitting

    def close(self) -> None:
        """No more records: the taker empties the queue and stops."""
        with self._changed:
            self._closed = True
            self._changed.notify()

    def wait(self) -> bool:
        """Until a record waits (True), or the queue is closed and empty (False)."""
        with self._changed:
            while not self._records and not self._closed:
                self._changed.wait()
            return bool(self._records)

    def __len__(self) -> int:
        with self._changed:
            return len(self._records)

    def take(self, most: int) -> list[Record]:
        with self._changed:
            return [self._records.popleft() for _ in range(min(most, len(self._records)))]


class _Episode:
    """A run of failed writes: logged when it starts, summarised while it lasts, closed once."""

    def __init__(
        self, sink: str, summary_every_s: float, clock: Callable[[], float], retries: bool, queue_size: int
    ) -> None:
        self.sink = sink
        self.consequence = (
            f"the records are kept and retried, up to {queue_size} waiting; beyond, the newest are dropped and counted"
            if retries
            else "records are dropped and counted until it works again"
        )
        self.summary_every_s = summary_every_s
        self.clock = clock
        self._lock = threading.Lock()  # `describe` is read from other threads
        self._error: str | None = None
        self._since = self._last_summary = 0.0
        self._writing_since: float | None = None  # the first success since the last failure
        self._dropped = self._dropped_since_summary = 0

    def failed(self, error: Exception, records: int) -> bool:
        """A write of `records` failed with `error`; True when this starts an episode."""
        now = self.clock()
        text = f"{type(error).__name__}: {error}"
        with self._lock:
            starts = self._error is None
            if starts:
                self._since = self._last_summary = now
                self._dropped = self._dropped_since_summary = 0
            self._error = text
            self._writing_since = None
            self._dropped += records
            self._dropped_since_summary += records
        if starts:
            # An OSError is the machine's (a full disk, a missing directory); anything
            # else is a bug in the sink and the traceback is what fixes it.
            log.error(
                "sink %s: writing failed (%s); %s; summarised every %.0fs",
                self.sink,
                text,
                self.consequence,
                self.summary_every_s,
                exc_info=None if isinstance(error, OSError) else error,
            )
        elif now - self._last_summary >= self.summary_every_s:
            log.warning(
                "sink %s: still failing (%s): %d record(s) dropped in the last %.0fs, %d since it started %.0fs ago",
                self.sink,
                text,
                self._dropped_since_summary,
                now - self._last_summary,
                self._dropped,
                now - self._since,
            )
            with self._lock:
                self._last_summary, self._dropped_since_summary = now, 0
        return starts

    def end(self) -> bool:
        """A write succeeded; True when that ends an episode (writes have succeeded for `CALM_S`)."""
        now = self.clock()
        with self._lock:
            if self._error is None:
                return False
            if self._writing_since is None:
                self._writing_since = now
            if now - self._writing_since < CALM_S:
                return False
            self._error = self._writing_since = None
        log.warning(
            "sink %s: writing again after %.0fs; %d record(s) were dropped meanwhile",
            self.sink,
            self.clock() - self._since,
            self._dropped,
        )
        return True

    def close(self) -> None:
        """The sink stopped; an episode still open is summed up."""
        with self._lock:
            if self._error is None:
                return
        log.warning("%s when it stopped; %d record(s) dropped in all", self.describe(), self._dropped)

    def describe(self) -> str | None:
        with self._lock:
            if self._error is None:
                return None
            return f"sink {self.sink} failing for {self.clock() - self._since:.0f}s ({self._error})"
