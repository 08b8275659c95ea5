"""Logging set-up: one format for the whole process, credentials masked on every line.

The mask is applied to the finished line (message, arguments and traceback), so a URL
that reaches a log through an exception text from FFmpeg is caught as well.
"""

from __future__ import annotations

import logging
import sys

from streamd.redact import redact_text


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
