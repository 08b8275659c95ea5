"""Records of recorded inputs, one JSON Lines file per input, written atomically.

The detector hands its records here instead of to the daemon's sinks (the same
`offer_many`, from the engine's deliver thread and the crop store's): each goes to its
input's file by `camera`, nothing is queued or dropped. A file is written as
`NAME.jsonl.partial` and renamed to `NAME.jsonl` once its input is complete, so a
`.jsonl` is always whole; one interrupted or failed stays `.partial`. Without a folder
the records go to stdout input by input, in the order the inputs were given: each is
kept in a temporary file until the inputs before it are out.

An image's record keeps the still-image format of earlier releases: `image`, `width`,
`height`, `faces`.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from streamd.recorded.inputs import Input, Kind

log = logging.getLogger(__name__)

Record = dict[str, Any]
PARTIAL = ".partial"


@dataclass
class Tally:
    """What an input's records held so far."""

    frames: int = 0
    faces: int = 0
    tracks_started: int = 0
    tracks_ended: int = 0


class RecordFiles:
    def __init__(self, folder: Path | None, on_frames: Callable[[str, int], None] = lambda name, count: None) -> None:
        """`folder` None: records to stdout. `on_frames(name, count)`: frames written."""
        self.folder = folder
        self.on_frames = on_frames
        self._lock = threading.Lock()
        self._open: dict[str, tuple[Input, IO[bytes]]] = {}
        self._tallies: dict[str, Tally] = {}
        self._strays = 0
        # Without a folder: the inputs opened, in order, with their temporary files; each
        # goes to stdout once it and those before it are closed.
        self._queued: list[tuple[str, IO[bytes], bool]] = []

    def path_of(self, source: Input) -> Path:
        assert self.folder is not None
        return self.folder / source.output

    def open(self, source: Input) -> None:
        """Start `source`'s file afresh (a `.partial` left by an earlier run is replaced)."""
        stream: IO[bytes]
        if self.folder is None:
            stream = tempfile.TemporaryFile()  # noqa: SIM115 - closed once copied to stdout
        else:
            path = self.path_of(source)
            path.parent.mkdir(parents=True, exist_ok=True)
            stream = open(path.with_name(path.name + PARTIAL), "wb")  # noqa: SIM115 - closed by finish or leave
        with self._lock:
            self._open[source.name] = (source, stream)
            self._tallies[source.name] = Tally()
            if self.folder is None:
                self._queued.append((source.name, stream, False))

    def tally(self, name: str) -> Tally:
        with self._lock:
            return self._tallies.get(name, Tally())

    def offer_many(self, records: list[Record]) -> None:
        by_input: dict[str, list[bytes]] = {}
        frames: dict[str, int] = {}
        with self._lock:
            for record in records:
                name = record["camera"]
                opened = self._open.get(name)
                if opened is None:
                    self._strays += 1  # cannot happen while inputs finish only when their records are in
                    continue
                source, _ = opened
                tally = self._tallies[name]
                event = record.get("event")
                if event is None:
                    tally.frames += 1
                    tally.faces += len(record["faces"])
                    frames[name] = frames.get(name, 0) + 1
                    if source.kind is Kind.image:
                        record = _image_record(record, str(source.path))
                elif event == "track_started":
                    tally.tracks_started += 1
                elif event == "track_ended":
                    tally.tracks_ended += 1
                by_input.setdefault(name, []).append(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
            for name, lines in by_input.items():
                self._open[name][1].write(b"".join(lines))
        for name, count in frames.items():
            self.on_frames(name, count)

    def finish(self, name: str) -> Path | None:
        """`name` is complete: its file is made whole (synced, renamed to `.jsonl`)."""
        stream = self._close(name)
        if stream is None or self.folder is None:
            return None
        partial = Path(stream.name)
        final = partial.with_name(partial.name.removesuffix(PARTIAL))
        os.replace(partial, final)
        return final

    def leave_partial(self, name: str) -> Path | None:
        """`name` did not complete: its records so far stay in its `.partial` file."""
        stream = self._close(name)
        return Path(stream.name) if stream is not None and self.folder is not None else None

    def _close(self, name: str) -> IO[bytes] | None:
        with self._lock:
            opened = self._open.pop(name, None)
        if opened is None:
            return None
        stream = opened[1]
        stream.flush()
        if self.folder is None:
            self._to_stdout(name)
            return None
        os.fsync(stream.fileno())
        stream.close()
        return stream

    def _to_stdout(self, closed: str) -> None:
        """Copy out the closed inputs at the head of the queue (the loop's thread only)."""
        self._queued = [(name, stream, done or name == closed) for name, stream, done in self._queued]
        while self._queued and self._queued[0][2]:
            _, stream, _ = self._queued.pop(0)
            stream.seek(0)
            shutil.copyfileobj(stream, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            stream.close()

    def close(self) -> None:
        """After the last input: what is still open goes out as it is (stdout)."""
        for name in [name for name, _, _ in self._queued]:
            self._close(name)
        if self._strays:
            log.warning("%d record(s) came for inputs already closed and were not written", self._strays)


def _image_record(record: Record, path: str) -> Record:
    faces = [{key: value for key, value in face.items() if key != "track"} for face in record["faces"]]
    return {"image": path, "width": record["width"], "height": record["height"], "faces": faces}
