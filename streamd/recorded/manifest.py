"""`manifest.json` beside the outputs: what a run over recorded inputs has finished.

Rewritten atomically after every input, so an interrupted run leaves an exact account:
`done` inputs (their `.jsonl` complete), `failed` ones (the error), `partial` ones
(stopped midway). `--resume` skips the done inputs whose file is unchanged (size and
modification time) and whose output is still there, and refuses settings that would make
different records from those already written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from streamd.base.errors import InputError
from streamd.recorded.inputs import Input

NAME = "manifest.json"
_VERSION = 1


class Manifest:
    def __init__(self, folder: Path, settings: dict[str, Any], entries: dict[str, dict[str, Any]] | None = None):
        self.path = folder / NAME
        self.settings = settings
        self.entries = entries or {}

    @classmethod
    def resume(cls, folder: Path, settings: dict[str, Any]) -> Manifest:
        """The manifest an earlier run left in `folder`, to go on under `settings`."""
        path = folder / NAME
        try:
            written = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(folder, settings)  # nothing done yet: resuming is starting
        except (OSError, ValueError) as error:
            raise InputError(f"--resume: cannot read {path}: {error}") from error
        if not isinstance(written, dict) or written.get("version") != _VERSION:
            raise InputError(f"--resume: {path} was not written by this version of streamd detect")
        earlier = written.get("settings", {})
        changed = sorted(key for key in settings.keys() | earlier.keys() if settings.get(key) != earlier.get(key))
        if changed:
            differences = ", ".join(f"{key} {earlier.get(key)!r} -> {settings.get(key)!r}" for key in changed)
            raise InputError(
                f"--resume: the settings differ from the run that wrote {path} ({differences}); "
                "its records would not match: run without --resume, or into another folder"
            )
        return cls(folder, settings, written.get("inputs", {}))

    def finished(self, source: Input, output: Path) -> bool:
        """Whether an earlier run completed `source`, as it is now, into `output`."""
        entry = self.entries.get(source.name)
        if entry is None or entry.get("status") != "done" or not output.exists():
            return False
        try:
            return list(source.identity()) == [entry.get("size"), entry.get("mtime_ns")]
        except OSError:
            return False

    def record(self, source: Input, entry: dict[str, Any]) -> None:
        """`source`'s outcome, written at once."""
        try:
            size, mtime_ns = source.identity()
        except OSError:  # gone meanwhile: never taken for done
            size, mtime_ns = -1, -1
        self.entries[source.name] = {"path": str(source.path), "size": size, "mtime_ns": mtime_ns, **entry}
        self.save()

    def save(self) -> None:
        written = {"version": _VERSION, "settings": self.settings, "inputs": self.entries}
        write_atomically(self.path, json.dumps(written, indent=1, sort_keys=True) + "\n")


def write_atomically(path: Path, text: str) -> None:
    """`path` holds the old text or the new, never a mix (a crash leaves the old)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)
