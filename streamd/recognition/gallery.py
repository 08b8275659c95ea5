"""The gallery: the people streamd knows, as embeddings of their enrolled photos.

One JSON file (`recognition.gallery`), biometric data: written atomically (a new file
beside it, fsynced, renamed over it) with mode 0600 whatever the umask, and read again
when it changes, so `streamd faces enroll` applies to a running daemon without a
restart. Nothing in it is ever logged, shown in `/status` or exported as a metric: the
CLI prints names and counts, never vectors.

A face matches the person with the nearest enrolled embedding (Euclidean distance),
when that distance is under the embedder's threshold.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamd.base.errors import ErrorKind, StreamdError

FORMAT = 1
_MODE = 0o600


class GalleryError(StreamdError):
    kind = ErrorKind.input


@dataclass(frozen=True)
class Match:
    name: str | None
    """The nearest person when under the threshold, else None."""
    distance: float
    """To the nearest enrolled embedding (of anyone); inf in an empty gallery."""


class Gallery:
    def __init__(self, path: Path, embedder: str) -> None:
        """The gallery in `path` for embeddings of `embedder` (empty until enrolled)."""
        self.path = path
        self.embedder = embedder
        self._lock = threading.Lock()
        self._people: dict[str, np.ndarray] = {}
        self._stamp: tuple[int, int] | None = None
        self.reload()

    def people(self) -> dict[str, int]:
        """Each enrolled name with its number of embeddings."""
        with self._lock:
            return {name: len(vectors) for name, vectors in sorted(self._people.items())}

    def add(self, name: str, embeddings: np.ndarray) -> None:
        _check_name(name)
        with self._lock:
            known = self._people.get(name)
            self._people[name] = embeddings if known is None else np.vstack([known, embeddings])
            self._save()

    def remove(self, name: str) -> bool:
        with self._lock:
            if self._people.pop(name, None) is None:
                return False
            self._save()
            return True

    def match(self, embedding: np.ndarray, threshold: float) -> Match:
        with self._lock:
            people = self._people
        best_name, best = None, float("inf")
        for name, vectors in people.items():
            distance = float(np.min(np.linalg.norm(vectors - embedding, axis=1)))
            if distance < best:
                best_name, best = name, distance
        return Match(best_name if best < threshold else None, best)

    def reload(self) -> bool:
        """Read the file again if it changed since it was read; True when it did."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            changed = self._stamp is not None
            with self._lock:
                self._people, self._stamp = {}, None
            return changed
        stamp = (stat.st_ino, stat.st_mtime_ns)
        if stamp == self._stamp:
            return False
        people = self._read()
        with self._lock:
            self._people, self._stamp = people, stamp
        return True

    def _read(self) -> dict[str, np.ndarray]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as error:
            raise GalleryError(f"{self.path}: cannot read the gallery: {error}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("people"), dict):
            raise GalleryError(f"{self.path}: not a streamd gallery (format {FORMAT})")
        if data.get("embedder") != self.embedder:
            raise GalleryError(
                f"{self.path}: made with the {data.get('embedder')} embedder, not {self.embedder}: "
                "enroll the people again for this one"
            )
        return {name: np.asarray(vectors, dtype=np.float32) for name, vectors in data["people"].items()}

    def _save(self) -> None:
        data = {
            "format": FORMAT,
            "embedder": self.embedder,
            "people": {name: np.round(v, 6).tolist() for name, v in self._people.items()},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.part")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _MODE)
        try:
            os.fchmod(descriptor, _MODE)  # whatever the umask, and an old partial's mode
            with os.fdopen(descriptor, "w") as file:
                json.dump(data, file)
                file.flush()
                os.fsync(file.fileno())
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, self.path)
        stat = self.path.stat()
        self._stamp = (stat.st_ino, stat.st_mtime_ns)


def _check_name(name: str) -> None:
    if not name or len(name) > 64 or not name.isprintable() or name != name.strip():
        raise GalleryError(f"{name!r}: a name is 1 to 64 printable characters, without spaces at its ends")
    if name.startswith("unknown-"):
        raise GalleryError(f"{name!r}: names starting with unknown- are streamd's labels for strangers")
