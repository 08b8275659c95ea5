"""What `streamd detect` was asked to read: files, folders, globs and list files, made
into one ordered list of inputs, each with a name, its kind and the frames it will give.

A folder gives the videos and images in it (and its subfolders) by their extensions; a
file named on its own is read whatever its name. An input's name is its path as given (a
folder's files: their path inside the folder), kept relative and inside the output folder
(no `..`, no leading `/`; `-2` after a name already taken). It is the records'
`camera`, its best faces' folder under `crops/`, and with `.jsonl` its output file, so two
runs over the same arguments agree on names (`--resume` depends on it).
"""

from __future__ import annotations

import glob
import math
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePath

import av

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".mkv", ".mov", ".avi", ".ts", ".m2ts", ".mts", ".m4v", ".webm", ".flv", ".mpg", ".mpeg", ".wmv"}
    | {".3gp", ".h264", ".264", ".h265", ".265", ".hevc", ".mjpeg"}
)


class Kind(StrEnum):
    video = "video"
    image = "image"


@dataclass(frozen=True)
class Input:
    name: str
    """The records' `camera`: the path as given, made relative (see the module's doc)."""
    path: Path
    kind: Kind
    problem: str | None = None
    """Why it cannot be read (found while planning); None: it can be tried."""
    frames: int = 0
    """Frames it is expected to give (for progress; the real count may differ)."""

    @property
    def output(self) -> PurePath:
        """Its JSON Lines file, relative to the output folder."""
        return PurePath(self.name + ".jsonl")

    def identity(self) -> tuple[int, int]:
        """Size and modification time: a changed file is not the one a manifest finished."""
        stat = self.path.stat()
        return stat.st_size, stat.st_mtime_ns


def expand(arguments: list[str], list_files: list[str]) -> list[tuple[str, Path]]:
    """Names and paths of every input, in the order given (a folder's sorted), each once.
    Paths in a list file (one per line, `#` comments) are relative to the list file."""
    given: list[tuple[str, Path]] = []
    for list_file in list_files:
        base = Path(list_file).parent
        try:
            lines = Path(list_file).read_text().splitlines()
        except OSError as error:
            raise OSError(f"--list {list_file}: {error.strerror or error}") from error
        for line in lines:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                given.append((entry, base / entry))
    given += [(argument, Path(argument)) for argument in arguments]
    found: list[tuple[str, Path]] = []
    for name, path in given:
        found += _one_argument(name, path)
    seen: set[Path] = set()
    unique = []
    for name, path in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((name, path))
    return unique


def _one_argument(name: str, path: Path) -> list[tuple[str, Path]]:
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
        )
        return [(str(file.relative_to(path)), file) for file in files]
    if not path.exists() and glob.has_magic(name):
        matches = sorted(glob.glob(str(path), recursive=True))
        return [pair for match in matches for pair in _one_argument(match, Path(match))]
    return [(name, path)]  # a missing file is reported as that input's problem


def plan(named: list[tuple[str, Path]], fps: float | None) -> list[Input]:
    """Each input with its kind, its output name and the frames it should give at `fps`
    (None: every frame); one that cannot be opened carries the reason."""
    inputs = []
    taken: set[str] = set()
    for given, path in named:
        kind = Kind.image if path.suffix.lower() in IMAGE_SUFFIXES else Kind.video
        problem, frames = _probe(path, kind, fps)
        inputs.append(Input(_unique(_kept_inside(given), taken), path, kind, problem, frames))
    return inputs


def _kept_inside(given: str) -> str:
    parts = [part for part in PurePath(given).parts if part not in ("..", ".") and not PurePath(part).anchor]
    return str(PurePath(*parts)) if parts else "input"


def _unique(name: str, taken: set[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}-{number}", number + 1
    taken.add(candidate)
    return candidate


def _probe(path: Path, kind: Kind, fps: float | None) -> tuple[str | None, int]:
    if not path.exists():
        return "no such file", 0
    if not os.access(path, os.R_OK):
        return "not readable (permission denied)", 0
    if kind is Kind.image:
        return None, 1
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return "no video track", 0
            stream = container.streams.video[0]
            seconds = duration_s(container, stream)
            rate = float(stream.average_rate or stream.guessed_rate or 0)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as error:
        return f"cannot open: {error}", 0
    if stream.frames and fps is None:
        return None, int(stream.frames)
    if seconds is None or rate <= 0:
        return None, int(stream.frames or 0)
    return None, max(1, math.ceil(seconds * (rate if fps is None else min(rate, fps))))


def duration_s(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    """How long the file says its video lasts (None: it does not say)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None
