from __future__ import annotations

import logging

import pytest

from streamd.logs import RedactingFormatter
from streamd.redact import redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/stream1", "rtsp://***@10.0.0.5:554/stream1"),
        ("rtsp://admin@10.0.0.5/s", "rtsp://***@10.0.0.5/s"),
        ("rtsp://10.0.0.5/s?user=a&password=hunter2", "rtsp://10.0.0.5/s?user=a&password=***"),
        ("rtsps://cam.example/live?token=abc123", "rtsps://cam.example/live?token=***"),
        ("rtsp://10.0.0.5/stream1", "rtsp://10.0.0.5/stream1"),
        ("/var/video/clip.mkv", "/var/video/clip.mkv"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_finds_urls_inside_messages() -> None:
    message = "Server returned 401 Unauthorized: 'rtsp://u:p@ss@h/x' and rtsp://v:w@g/y"
    assert redact_text(message) == "Server returned 401 Unauthorized: 'rtsp://***@h/x' and rtsp://***@g/y"


def test_formatter_masks_arguments_and_tracebacks() -> None:
    formatter = RedactingFormatter("%(message)s")
    try:
        raise ConnectionError("cannot open rtsp://admin:hunter2@h/x")
    except ConnectionError:
        import sys

        record = logging.LogRecord(
            "t", logging.ERROR, __file__, 1, "opening %s", ("rtsp://a:hunter2@h/x",), sys.exc_info()
        )
    text = formatter.format(record)
    assert "hunter2" not in text
    assert "rtsp://***@h/x" in text and "ConnectionError" in text
