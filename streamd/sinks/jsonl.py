"""JSON Lines files, one record per line, rotated by size or by day.

The current file is `path`; on rotation it is renamed to `<stem>-<YYYYmmdd-HHMMSS><suffix>`
(the time the file was started) and a new `path` is opened, so a reader tailing `path`
follows `tail -F` conventions. Each group of records is flushed as one write.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

from streamd.sinks.base import Record


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
        self.clock = clock
        self.path = path
        self.rotate_bytes = rotate_bytes
        self.rotate_daily = rotate_daily
        self._file: IO[str] | None = None
        self._started: dt.datetime | None = None
        self._size = 0

    def write(self, records: list[Record]) -> None:
        text = "".join(json.dumps(record, separators=(",", ":")) + "\n" for record in records)
        self._rotate_if_due(len(text))
        handle = self._open()
        handle.write(text)
        handle.flush()
        self._size += len(text)

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

    def _open(self) -> IO[str]:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
            self._size = self.path.stat().st_size
            self._started = self.clock()
        return self._file

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
