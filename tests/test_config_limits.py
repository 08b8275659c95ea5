"""Hostile files: every limit gives a located error, quickly and in little memory.

`check` must refuse what `run` cannot start, so each case here is one that used to pass
`check` and then fail at run time (or never finish being read).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from streamd.config.loader import ConfigError, load_config
from streamd.config.yaml_source import MAX_BYTES
from tests.support.streams import ALIAS_BOMB, deep_nesting


def errors_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "streams.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    return [str(error).removeprefix(str(path)) for error in caught.value.errors]


# Runs `check`'s reading of one file in a fresh interpreter, measuring only the reading:
# once for time, once under tracemalloc for the peak of what it allocated.
_MEASURE = """
import json, sys, time, tracemalloc
from streamd.config.loader import ConfigError, load_config

def read():
    try:
        load_config(sys.argv[1])
        return []
    except ConfigError as error:
        return [str(e) for e in error.errors]

start = time.perf_counter()
errors = read()
seconds = time.perf_counter() - start
tracemalloc.start()
read()
peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"seconds": seconds, "peak_mb": peak / 2**20, "errors": errors}))
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (ALIAS_BOMB, ":3: aliases (*a) are not allowed"),
        (deep_nesting(10_000), ":1: nested more than 32 levels deep"),
    ],
    ids=["alias-bomb", "10000-deep"],
)
def test_bombs_are_refused_by_check_at_once_in_little_memory(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    if "lol" in text:
        assert path.stat().st_size == 353, "the size reported in the issue"
    measured = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True, timeout=60)
    assert measured.returncode == 0, measured.stderr
    result = json.loads(measured.stdout)
    assert result["errors"][0].removeprefix(str(path)).startswith(expected)
    assert result["seconds"] < 1.0, result
    assert result["peak_mb"] < 50, result

    check = subprocess.run(
        [sys.executable, "-m", "streamd", "check", str(path)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 1
    assert "Traceback" not in check.stderr and expected in check.stderr


def test_anchors_alone_are_fine_aliases_are_refused_where_they_are(tmp_path: Path) -> None:
    text = """
        defaults: &shared {fps: 2}
        cameras:
          - {id: a, url: rtsp://h/a}
          - {id: b, url: rtsp://h/b, backoff: *shared}
        """
    assert errors_of(tmp_path, text)[0].startswith(":4: aliases (*shared) are not allowed")


def test_an_oversized_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "streams.yaml"
    with path.open("w") as file:
        file.write("cameras: []\n")
        file.write("#" * (MAX_BYTES + 10) + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert "larger than 4 MiB" in str(caught.value)


def test_camera_count_is_limited_and_the_limit_is_configurable(tmp_path: Path) -> None:
    cameras = "".join(f"  - {{id: c{i}, url: rtsp://h/{i}}}\n" for i in range(5))
    assert errors_of(tmp_path, "limits: {max_cameras: 4}\ncameras:\n" + cameras) == [
        ":2 cameras: 5 cameras, more than limits.max_cameras (4) allows"
    ]
    path = tmp_path / "streams.yaml"
    path.write_text("limits: {max_cameras: 5}\ncameras:\n" + cameras)
    assert len(load_config(path, env={}).cameras) == 5
    many = "".join(f"  - {{id: c{i}, url: rtsp://h/{i}}}\n" for i in range(257))
    assert errors_of(tmp_path, "cameras:\n" + many) == [
        ":1 cameras: 257 cameras, more than limits.max_cameras (256) allows"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("defaults: {fps: .nan}\ncameras: []\n", ":1 defaults.fps: must be a finite number (got nan)"),
        ("cameras:\n  - {id: a, url: rtsp://h/a, fps: .inf}\n", ":2 cameras[0].fps: must be a finite number (got inf)"),
        ("sinks: [{rotate_mb: .inf}]\ncameras: []\n", ":1 sinks[0].rotate_mb: must be a finite number (got inf)"),
        ("sinks: [{rotate_mb: 0.001}]\ncameras: []\n", ":1 sinks[0].rotate_mb: must be >= 1.0 (got 0.001)"),
        ("batcher: {max_batch: 256}\ncameras: []\n", ":1 batcher.max_batch: must be <= 64 (got 256)"),
        ("batcher: {max_delay_ms: .nan}\ncameras: []\n", ":1 batcher.max_delay_ms: must be a finite number (got nan)"),
        ("health: {ready_share: .nan}\ncameras: []\n", ":1 health.ready_share: must be a finite number (got nan)"),
        ("reload: {settle_s: 0}\ncameras: []\n", ":1 reload.settle_s: must be > 0.0 (got 0)"),
        ("defaults: {fps: 99999999999999999999999}\ncameras: []\n", ":1 defaults.fps: must be <= 120"),
        (
            "batcher: {max_batch: " + "9" * 5000 + "}\ncameras: []\n",
            ":1 batcher.max_batch: cannot read value: more than 4300 digits",
        ),
        (
            "cameras:\n  - {id: a, url: 'rtsp://u:p/w@h/a'}\n",
            ":2 cameras[0].url: rtsp:// URL has a port that is not a number",
        ),
        ("cameras:\n  - {id: a, url: 'rtsp//u:pw@h/a'}\n", ":2 cameras[0].url: looks like a mistyped rtsp:// URL"),
        (
            "cameras:\n  - {id: a, url: 'rtsp://u:1/w@h/a'}\n",
            ":2 cameras[0].url: rtsp:// URL has an '@' after the host",
        ),
    ],
)
def test_check_refuses_numbers_and_urls_run_could_not_use(tmp_path: Path, text: str, expected: str) -> None:
    errors = errors_of(tmp_path, text)
    assert errors[0].startswith(expected), errors


def test_engine_bounds(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"")
    errors = errors_of(tmp_path, "engine: {model: m.onnx, instances: 64, threads: 256}\ncameras: []\n")
    assert errors == [":1 engine.instances: must be <= 16 (got 64)", ":1 engine.threads: must be <= 64 (got 256)"]
