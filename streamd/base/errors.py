"""One root for every error streamd raises on purpose.

Each says what is wrong and where, and has a kind (what it is about) and the exit status
a command ends with. The command line has one handler for them; anything else that
reaches it is a bug of ours and ends as a traceback.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class ErrorKind(StrEnum):
    config = "config"
    """streams.yaml or a file it names (web config, credentials)."""
    camera = "camera"
    engine = "engine"
    model = "model"
    input = "input"
    """A file or argument a command was given that it cannot use."""


class StreamdError(Exception):
    kind: ClassVar[ErrorKind]
    exit_code: ClassVar[int] = 1

    def lines(self) -> list[str]:
        """The message, a line per problem."""
        return [str(self)]


class InputError(StreamdError, ValueError):
    """A file or argument a command was given that it cannot use (a manifest with frames
    missing, a photo without faces, a picture FFmpeg cannot read)."""

    kind = ErrorKind.input
