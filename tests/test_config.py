from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from streamd.config.loader import ConfigError, load_config, parse_config
from streamd.config.schema import DecodeMode, Transport

PASSWORD = "Sup3rS3cret!"


def write(tmp_path: Path, text: str, name: str = "streams.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def errors_of(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env or {})
    return [str(error) for error in caught.value.errors]


def test_minimal_file_gets_documented_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "cameras:\n  - id: door\n    url: rtsp://10.0.0.5/stream1\n")
    config = load_config(path, env={})
    camera = config.cameras[0]
    assert config.metrics.listen == "127.0.0.1:9108"
    assert (camera.fps, camera.enabled, camera.transport, camera.decode) == (5.0, True, Transport.tcp, DecodeMode.auto)
    assert (camera.stall_timeout_s, camera.backoff.max_s) == (10.0, 30.0)


def test_an_empty_file_or_one_without_cameras_is_refused_and_cameras_empty_list_is_none(tmp_path: Path) -> None:
    # An interrupted save leaves such files; read as "no cameras" they would stop them all.
    empty = write(tmp_path, "# nothing yet\n")
    assert errors_of(empty) == [
        f"{empty}: the file is empty (an interrupted save?); write `cameras: []` to run no cameras"
    ]
    no_cameras = write(tmp_path, "metrics: {listen: 127.0.0.1:9108}\n")
    assert errors_of(no_cameras) == [
        f"{no_cameras}:1 cameras: is required (an interrupted save?); write `cameras: []` to run no cameras"
    ]
    assert load_config(write(tmp_path, "cameras: []\n"), env={}).cameras == []


def test_defaults_apply_and_cameras_override_key_by_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        defaults:
          fps: 2
          transport: udp
          backoff: {initial_s: 0.5, max_s: 4}
        cameras:
          - {id: a, url: rtsp://h/a}
          - {id: b, url: rtsp://h/b, fps: 10, backoff: {max_s: 8}}
        """,
    )
    a, b = load_config(path, env={}).cameras
    assert (a.fps, a.transport, a.backoff.initial_s, a.backoff.max_s) == (2, Transport.udp, 0.5, 4)
    assert (b.fps, b.transport, b.backoff.initial_s, b.backoff.max_s) == (10, Transport.udp, 0.5, 8)


def test_every_error_is_reported_at_once_with_file_line_and_key_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        cameras:
          - id: lobby
            url: rtsp://admin:{PASSWORD}@10.0.0.5/stream1
          - id: lobby
            url: rtsp://admin:{PASSWORD}@10.0.0.6/stream1
          - id: yard
            url: rtsp://10.0.0.7/stream1
            fps: -5
            colour: red
        """,
    )
    errors = errors_of(path)
    assert errors == [
        f"{path}:4 cameras[1].id: duplicate id 'lobby' (first used by cameras[0], line 2)",
        f"{path}:8 cameras[2].fps: must be > 0.0 (got -5)",
        f"{path}:9 cameras[2].colour: unknown key",
    ]
    assert all(PASSWORD not in error for error in errors)


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("fps: 0", "cameras[0].fps: must be > 0.0 (got 0)"),
        ("fps: 500", "cameras[0].fps: must be <= 120.0 (got 500)"),
        ("fps: fast", "cameras[0].fps: must be a number (got 'fast')"),
        ("transport: quic", "cameras[0].transport: must be one of 'tcp', 'udp' or 'auto' (got 'quic')"),
        ("decode: gpu", "cameras[0].decode: must be one of 'auto', 'nvdec' or 'cpu' (got 'gpu')"),
        ("enabled: maybe", "cameras[0].enabled: must be true or false (got 'maybe')"),
        ("stall_timeout_s: -1", "cameras[0].stall_timeout_s: must be > 0.0 (got -1)"),
        ("backoff: {initial_s: 60, max_s: 5}", "cameras[0].backoff: initial_s (60.0) must not exceed max_s (5.0)"),
        ("backoff: {jitter: full}", "cameras[0].backoff.jitter: unknown key"),
        ("backoff: 5", "cameras[0].backoff: must be a mapping of keys (got 5)"),
    ],
)
def test_bad_camera_values(tmp_path: Path, snippet: str, expected: str) -> None:
    path = write(tmp_path, f"cameras:\n  - id: a\n    url: rtsp://h/a\n    {snippet}\n")
    assert errors_of(path) == [f"{path}:4 {expected}"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://h/a", "unsupported scheme 'http': use rtsp://, rtsps:// or a local video file"),
        ("rtsp:///nohost", "rtsp:// URL has no host"),
        ("missing.mkv", "no such video file"),
        ("", "must not be empty"),
    ],
)
def test_bad_urls(tmp_path: Path, url: str, expected: str) -> None:
    path = write(tmp_path, f"cameras:\n  - id: a\n    url: '{url}'\n")
    [error] = errors_of(path)
    assert error.startswith(f"{path}:3 cameras[0].url: {expected}")


def test_local_file_url_resolves_against_the_config_directory(tmp_path: Path) -> None:
    (tmp_path / "clip.mkv").write_bytes(b"not checked here")
    config = load_config(write(tmp_path, "cameras:\n  - {id: a, url: clip.mkv}\n"), env={})
    assert config.cameras[0].url == str(tmp_path / "clip.mkv")
    assert config.cameras[0].is_file


def test_missing_required_keys_and_bad_ids(tmp_path: Path) -> None:
    path = write(tmp_path, "cameras:\n  - url: rtsp://h/a\n  - id: Front Door\n    url: rtsp://h/b\n")
    assert errors_of(path) == [
        f"{path}:2 cameras[0].id: is required",
        f"{path}:3 cameras[1].id: must match ^[a-z0-9_-]+$ (got 'Front Door')",
    ]


def test_bad_defaults_are_reported_once_at_the_defaults_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        defaults:
          fps: -1
        cameras:
          - {id: a, url: rtsp://h/a}
          - {id: b, url: rtsp://h/b}
        """,
    )
    assert errors_of(path) == [f"{path}:2 defaults.fps: must be > 0.0 (got -1)"]


def test_unknown_top_level_section_and_bad_listen(tmp_path: Path) -> None:
    path = write(tmp_path, "metrics:\n  listen: localhost\nengines: {}\ncameras: []\n")
    assert errors_of(path) == [
        f"{path}:2 metrics.listen: must be host:port with a port from 1 to 65535",
        f"{path}:3 engines: unknown key",
    ]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "cameras:\n  - id: a\n    url: [unclosed\n")
    [error] = errors_of(path)
    assert error.startswith(f"{path}:") and "invalid YAML" in error


def test_duplicate_yaml_keys_are_errors_not_silently_overwritten(tmp_path: Path) -> None:
    path = write(tmp_path, "cameras:\n  - id: a\n    url: rtsp://h/a\n    fps: 5\n    fps: 50\n")
    assert errors_of(path) == [f"{path}:5 cameras[0].fps: duplicate key (first at line 4)"]


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- id: a\n")
    assert errors_of(path) == [f"{path}:1: the top level must be a mapping of sections"]


def test_environment_and_credential_expansion(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "door_pw").write_text(PASSWORD + "\n")
    path = write(
        tmp_path,
        """
        cameras:
          - id: a
            url: rtsp://${CAM_USER}:${credential:door_pw}@h/a?x=$$1
        """,
    )
    env = {"CAM_USER": "viewer", "CREDENTIALS_DIRECTORY": str(creds)}
    assert load_config(path, env=env).cameras[0].url == f"rtsp://viewer:{PASSWORD}@h/a?x=$1"


def test_missing_environment_variable_and_credential(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "cameras:\n  - id: a\n    url: rtsp://u:${CAM_PW}@h/a\n  - id: b\n    url: rtsp://u:${credential:pw}@h/b\n",
    )
    assert errors_of(path) == [
        f"{path}:3 cameras[0].url: environment variable CAM_PW is not set",
        f"{path}:5 cameras[1].url: credential 'pw': $CREDENTIALS_DIRECTORY is not set",
    ]


def test_unreadable_file(tmp_path: Path) -> None:
    [error] = errors_of(tmp_path / "absent.yaml")
    assert "absent.yaml: cannot read" in error


def test_parse_config_accepts_text_directly() -> None:
    config = parse_config("cameras: [{id: a, url: rtsp://h/a, enabled: false}]", "inline", env={})
    assert config.cameras[0].enabled is False and config.enabled_cameras == []


def run_check(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamd", "check", *map(str, files)], capture_output=True, text=True, timeout=60
    )


def test_streamd_check_cli_lists_errors_and_exits_nonzero(tmp_path: Path) -> None:
    bad = write(
        tmp_path,
        f"""
        cameras:
          - id: a
            url: rtsp://admin:{PASSWORD}@h/a
            fps: -1
          - id: a
            url: rtsp://h/b
            shiny: true
        """,
    )
    result = run_check(bad)
    assert result.returncode == 1
    assert f"{bad}:4 cameras[0].fps: must be > 0.0 (got -1)" in result.stderr
    assert f"{bad}:5 cameras[1].id: duplicate id 'a'" in result.stderr
    assert f"{bad}:7 cameras[1].shiny: unknown key" in result.stderr
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_streamd_check_cli_accepts_the_shipped_file(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parents[1] / "streams.yaml"
    copy = tmp_path / "streams.yaml"
    copy.write_text(shipped.read_text())
    missing = run_check(copy)
    assert missing.returncode == 1
    assert f"engine.model: no such model file: {tmp_path / 'engines' / 'yolov5n-0.5.onnx'}" in missing.stderr
    (tmp_path / "engines").mkdir()
    (tmp_path / "engines" / "yolov5n-0.5.onnx").write_bytes(b"prepared by make run")
    result = run_check(copy)
    assert result.returncode == 0, result.stderr
    assert "OK, 3 camera(s)" in result.stdout
