"""One error root: every error streamd raises on purpose derives from StreamdError with a
kind, the command line prints it and exits with its status, and anything else (a bug)
is a traceback, not "exit 1 with a message"."""

from __future__ import annotations

from pathlib import Path

import pytest

import streamd.model.prepare
from streamd.base.errors import ErrorKind, InputError, StreamdError
from streamd.camera.errors import CameraError
from streamd.cli.main import main
from streamd.config.loader import ConfigError
from streamd.engine.base import BackendUnavailable, EngineError
from streamd.model.canonical import ModelError
from streamd.monitor.web_config import WebConfigError


def test_every_error_of_streamds_has_the_root_and_a_kind() -> None:
    kinds = {
        ConfigError: ErrorKind.config,
        WebConfigError: ErrorKind.config,
        CameraError: ErrorKind.camera,
        EngineError: ErrorKind.engine,
        BackendUnavailable: ErrorKind.engine,
        ModelError: ErrorKind.model,
        InputError: ErrorKind.input,
    }
    for error, kind in kinds.items():
        assert issubclass(error, StreamdError) and error.kind is kind, error


def test_the_command_line_says_what_is_wrong_and_exits_with_its_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "streams.yaml"
    broken.write_text("cameras: [{id: Bad Id, url: 'rtsp://h/s'}]\nbogus: 1\n")
    assert main(["calibrate", "collect", "-c", str(broken), "-o", str(tmp_path / "f")]) == 2
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 2 and all(line.startswith(f"streamd calibrate collect: {broken}:") for line in said), said
    assert main(["detect", str(tmp_path / "absent.jpg"), "--model", str(tmp_path / "absent.onnx")]) == 1
    assert "streamd detect: " in capsys.readouterr().err


def test_a_bug_is_a_traceback_not_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug of ours")

    monkeypatch.setattr(streamd.model.prepare, "prepare_model", broken)
    with pytest.raises(KeyError, match="a bug of ours"):
        main(["model", "prepare", str(tmp_path / "in.onnx"), "-o", str(tmp_path / "out.onnx")])
