from __future__ import annotations

import logging

import pytest

from streamd.base.logs import RedactingFormatter
from streamd.base.redact import redact_text, redact_url, register_secrets, url_secrets


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


@pytest.mark.parametrize(
    ("url", "secrets"),
    [
        ("rtsp://admin:pa'ss@h/x", {"admin", "pa'ss"}),
        ("rtsp://admin:pa/ss@h/x", {"admin", "pa/ss"}),  # what check refuses is still masked
        ("rtsp//admin:typo-pw@h/x", {"admin", "typo-pw"}),
        ("rtsp://u:enc%40ded@h/x", {"enc%40ded", "enc@ded"}),
        ("rtsp://h/x?user=a&password=q'uery&x=1", {"q'uery"}),
        ("/var/video/clip.mkv", set()),
    ],
)
def test_url_secrets_finds_user_and_password_whatever_they_hold(url: str, secrets: set[str]) -> None:
    assert secrets <= url_secrets(url)
    assert "h/x" not in url_secrets(url)


def test_registered_secrets_are_masked_anywhere_even_where_no_pattern_would_find_them() -> None:
    password = "n0-pattern/'finds\"this"
    text = f"error: {password!r} and {password} in FFmpeg's words"
    assert password in redact_text(text)
    register_secrets(url_secrets(f"rtsp://someone:{password}@h/x"))
    masked = redact_text(text)
    assert password not in masked and repr(password)[1:-1] not in masked
    assert masked.startswith("error: ") and masked.endswith(" in FFmpeg's words")


def test_short_values_are_left_to_the_patterns() -> None:
    register_secrets(["ab"])
    assert redact_text("tab ab") == "tab ab"
    assert redact_text("rtsp://ab:cd@h/x") == "rtsp://***@h/x"
