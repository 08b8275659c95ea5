"""JSON Lines files, one record per line, rotated by size or by day.

The current file is `path`; on rotation it is renamed to `<stem>-<YYYYmmdd-HHMMSS><suffix>`
(the time the file was started) and a new `path` is opened, so a reader tailing `path`
follows `tail -F` conventions. Each group of records is flushed as one write.

What the sink does when the file system misbehaves:
- the file was deleted or renamed away by someone else (logrotate without
  `copytruncate`, an operator clearing a directory): the next write notices that `path`
  is no longer the open file and opens a new one, recreating the directory;
- a write fails half way (a full disk): the file is cut back to where the group
  started, so no torn line is left and the whole group counts as dropped, never half.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import io
import logging
import os
from collections.abc import Callable
from pathlib import Path

import orjson

from streamd.sinks.base import Record

log = logging.getLogger(__name__)


class JsonLinesSink:
    def __init__(
        self,
        path: Path,
        rotate_bytes: int | None,
        rotate_daily: bool,
        name: str = "jsonl",
        clock: Callable[[], dt.datetime] = dt.datetime.now,
    ) -> None:
        self.name = name
        self.retries = False  # a full disk is not fixed by trying again at once
        self.clock = clock
        self.path = path
        self.rotate_bytes = rotate_bytes
        self.rotate_daily = rotate_daily
        self._file: io.FileIO | None = None
        self._started: dt.datetime | None = None
        self._size = 0

    def write(self, records: list[Record]) -> None:
        data = b"".join(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE) for record in records)
        self._rotate_if_due(len(data))
        handle = self._open()
        start = os.fstat(handle.fileno()).st_size
        try:
            view = memoryview(data)
            while view:  # a raw write may write only part: go on until all or an error
                view = view[handle.write(view) or 0 :]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(handle.fileno(), start)
            raise
        self._size = start + len(data)

    def probe(self) -> None:
        """Raise OSError unless `path` can be opened for appending; leaves no new file behind."""
        existed = self.path.exists()
        blocking = next((p for p in self.path.parents if p.exists()), None)
        if blocking is not None and not blocking.is_dir():  # mkdir would only say "File exists"
            raise NotADirectoryError(errno.ENOTDIR, f"{blocking} is a file, not a directory")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8"):
            pass
        if not existed:
            self.path.unlink()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self) -> io.FileIO:
        if self._file is not None and not self._still_at_path(self._file):
            log.warning("sink %s: %s was removed or replaced; writing to a new file there", self.name, self.path)
            self.close()
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Unbuffered: what `write` returns is on its way to the disk, and a failure
            # is seen by the write that caused it, not by a later flush.
            self._file = io.FileIO(self.path, "a")
            self._size = os.fstat(self._file.fileno()).st_size
            self._started = self.clock()
        return self._file

    def _still_at_path(self, handle: io.FileIO) -> bool:
        try:
            at_path = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(handle.fileno())
        return (at_path.st_dev, at_path.st_ino) == (mine.st_dev, mine.st_ino)

    def _rotate_if_due(self, incoming: int) -> None:
        if self._file is None or self._started is None:
            return
        too_big = self.rotate_bytes is not None and self._size > 0 and self._size + incoming > self.rotate_bytes
        new_day = self.rotate_daily and self.clock().date() != self._started.date()
        if not (too_big or new_day):
            return
        self.close()
        stamp = self._started.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.stem}-{stamp}{self.path.suffix}")
        counter = 1
        while target.exists():  # several rotations within one second
            target = self.path.with_name(f"{self.path.stem}-{stamp}.{counter}{self.path.suffix}")
            counter += 1
        os.replace(self.path, target)
