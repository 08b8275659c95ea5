"""Logging set-up: one format for the whole process, credentials masked on every line.

Plain text on a terminal; JSON lines for journald (`--log-format json`, or `auto` when
systemd connected stderr to the journal, which it announces in `$JOURNAL_STREAM`). The
camera id is in the text of every camera line and, in JSON, also a field of its own.
The mask is applied to the finished text (message, arguments and traceback), so a URL
that reaches a log through an exception text from FFmpeg is caught as well.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from typing import Any

from streamd.base.redact import redact_text


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        camera = getattr(record, "camera", None)
        if camera is not None:
            entry["camera"] = camera
        if record.exc_info:
            entry["exception"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(entry)


def _log_thread_crash(args: threading.ExceptHookArgs) -> None:
    """A thread's uncaught exception goes through this log (masked), not raw to stderr.
    streamd's own threads are supervised; this catches the ones libraries start."""
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("streamd").error(
        "thread %s crashed", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
    )


def setup_logging(level: str = "INFO", fmt: str = "auto") -> None:
    if fmt == "auto":
        fmt = "json" if os.environ.get("JOURNAL_STREAM") else "text"
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    threading.excepthook = _log_thread_crash
